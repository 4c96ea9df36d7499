"""The content-addressed store: blobs by sha256, a snapshot record per repo commit, revision names -> commits.

Layout under the store root (guidance, not a contract):

    blobs/sha256/ab/<sha256>                           each content once, whatever repo it came from
    repos/<source>/<type>/<org--name>/snapshots/<commit>.json   path -> sha256, size, hub oid, lfs flag
    repos/<source>/<type>/<org--name>/refs.json        revision name -> commit, when synced
    tmp/                                               downloads in progress, never under a real name
    doubt/<sha256>                                     blobs that hashing (verify, export) found damaged
    lock                                               one writer at a time

How a sync judges a blob it already holds: cheaply, by one lstat (a regular file of the recorded size;
a link, a folder, a truncated or emptied file is damaged and fetched again). Bytes flipped in place keep
the size, so only hashing finds them: `mirror verify` and `mirror export` hash every blob they read and
mark the damaged ones under doubt/, and a sync re-hashes a marked blob before it trusts it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mirror.bounded import RECORD, read_json_bounded
from mirror.clock import Clock
from mirror.errors import DamagedBlobError, IntegrityError, Interrupted, LockedError
from mirror.fsutil import atomic_write_json, flock_wait, remove_path
from mirror.hashing import file_sha256
from mirror.paths import check_commit, is_sha256
from mirror.repo import RepoKey as RepoKey  # its home is mirror.repo; kept here for code not yet moved
from mirror.repo import RevisionRequest, folder_name, repo_id_of_folder
from mirror.snapshot import Snapshot


@dataclass(frozen=True)
class Ref:
    commit: str
    synced_at: str


class Store:
    """A store rooted at a folder; created on first write. `clock` stamps the lock and what a sync records,
    and times the wait for the lock."""

    def __init__(self, root: Path, *, clock: Clock) -> None:
        self.root = Path(root)
        self.clock = clock
        self._blobs = os.path.join(self.root, "blobs", "sha256")

    # blobs -----------------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return Path(self._blob_file(sha256))

    def _blob_file(self, sha256: str) -> str:
        """The blob's path as a string (a server checks every file of a commit per request: no pathlib)."""
        if not is_sha256(sha256):
            raise IntegrityError(f"not a sha256: {sha256!r}")
        return f"{self._blobs}/{sha256[:2]}/{sha256}"

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        """Held as the store writes it: a regular file (of `size` bytes when given). One lstat, no hashing."""
        return self.blob_problem(sha256, size) is None

    def blob_problem(self, sha256: str, size: int | None = None) -> str | None:
        """What a look at a blob (no hashing) finds wrong with it: "missing", a link, a folder, a wrong size;
        None when it is a regular file of `size` bytes."""
        try:
            st = os.lstat(self._blob_file(sha256))
        except (FileNotFoundError, NotADirectoryError):
            return "missing"
        if stat.S_ISLNK(st.st_mode):
            return "a symbolic link, not a file"
        if stat.S_ISDIR(st.st_mode):
            return "a folder, not a file"
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        if size is not None and st.st_size != size:
            return f"{st.st_size} bytes, not {size}"
        return None

    def blob_damage(self, sha256: str, size: int) -> str | None:
        """What is wrong with a blob a sync is about to rely on: `blob_problem`, and for a blob in doubt its
        content re-hashed (a doubt the hash disproves is lifted). None when it can be used as it is."""
        problem = self.blob_problem(sha256, size)
        if problem is not None or not self.in_doubt(sha256):
            return problem
        actual = file_sha256(self.blob_path(sha256))
        if actual != sha256:
            return f"its content hashes to {actual}"
        self.lift_doubt(sha256)
        return None

    def damaged(
        self, sha256: str, found: str, uses: dict[str, list[tuple[str, str, int]]] | None = None
    ) -> DamagedBlobError:
        """The error for a blob found damaged (`found`: what it is instead), naming the files that use it
        (from `uses`, else from `blob_uses`); the blob is put in doubt, so the next sync that needs it hashes
        it and fetches it again."""
        try:
            self.doubt_blob(sha256)
            unmarked = None
        except OSError as e:  # a store this user may only read: still name the damage
            unmarked = e.strerror or str(e)
        users = (self.blob_uses() if uses is None else uses).get(sha256, [])
        sizes = sorted({size for _, _, size in users})
        expected = f"sha256 {sha256}" + "".join(f", {size} bytes" for size in sizes)
        where = "; ".join(f"{revision} {path}" for revision, path, _ in users) or "no snapshot"
        return DamagedBlobError(
            f"store blob {self.blob_path(sha256)} is damaged: expected {expected}, found {found} (used by {where})",
            tuple(sorted({revision for revision, _, _ in users})),
            unmarked=unmarked,
        )

    def blob_uses(self) -> dict[str, list[tuple[str, str, int]]]:
        """sha256 -> (repo@revision, path, size) of every file a snapshot record lists; a commit no
        revision names stands for itself."""
        uses: dict[str, list[tuple[str, str, int]]] = {}
        for key in self.repos():
            names: dict[str, list[str]] = {}
            for name, ref in sorted(self.read_refs(key).items()):
                names.setdefault(ref.commit, []).append(name)
            for snap in self.snapshots(key):
                for name in names.get(snap.commit, [snap.commit]):
                    for f in snap.files:
                        uses.setdefault(f.sha256, []).append((f"{key}@{name}", f.path, f.size))
        return uses

    def _doubt_path(self, sha256: str) -> Path:
        return self.root / "doubt" / self.blob_path(sha256).name  # blob_path checks the name

    def doubt_blob(self, sha256: str) -> None:
        """Mark a blob that hashing found damaged: the next sync that needs it re-hashes it and fetches it
        again."""
        path = self._doubt_path(sha256)
        path.parent.mkdir(exist_ok=True)
        path.touch()

    def in_doubt(self, sha256: str) -> bool:
        return self._doubt_path(sha256).exists()

    def lift_doubt(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            self._doubt_path(sha256).unlink()

    def temp_path(self, name: str) -> Path:
        """A path under tmp/ for a download in progress; callers pick stable names so a later run can resume."""
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / name

    def add_blob(self, temp: Path, sha256: str) -> Path:
        """Move a verified temp file into place under its sha256 (a no-op if that content is already held,
        intact as far as a look tells and not in doubt); a damaged blob under that name is replaced."""
        dest = self.blob_path(sha256)
        if self.has_blob(sha256, temp.stat().st_size) and not self.in_doubt(sha256):
            temp.unlink(missing_ok=True)
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(temp, 0o444)
        if dest.is_dir() and not dest.is_symlink():
            remove_path(dest)  # os.replace cannot put a file over a folder
        os.replace(temp, dest)
        self.lift_doubt(sha256)
        return dest

    def iter_blobs(self) -> Iterator[tuple[str, Path]]:
        base = self.root / "blobs" / "sha256"
        if not base.is_dir():
            return
        for sub in sorted(p for p in base.iterdir() if p.is_dir()):
            for blob in sorted(sub.iterdir()):
                yield blob.name, blob

    # snapshots and refs ----------------------------------------------------------------------------
    def _repo_dir(self, key: RepoKey) -> Path:
        # A short id can never collide with the folder of another repo's records (see folder_name).
        return self.root / "repos" / key.source / key.repo_type / folder_name(key.repo_id)

    def write_snapshot(self, snap: Snapshot) -> Snapshot:
        """Record a commit's files, merged with what earlier syncs of the same commit recorded."""
        key = snap.key
        old = self.read_snapshot(key, snap.commit)
        merged = old.merged(snap) if old is not None else snap
        if old is not None and (old.files, old.complete, old.listing) == (
            merged.files,
            merged.complete,
            merged.listing,
        ):
            return old  # nothing new: an unchanged manifest rewrites no record
        atomic_write_json(self.snapshot_path(key, snap.commit), merged.to_json())
        return merged

    def snapshot_path(self, key: RepoKey, commit: str) -> Path:
        """Where the record of a repo commit is kept."""
        return self._repo_dir(key) / "snapshots" / f"{check_commit(commit)}.json"

    def read_snapshot(self, key: RepoKey, commit: str) -> Snapshot | None:
        path = self.snapshot_path(key, commit)
        data = read_json_bounded(path, RECORD, IntegrityError, missing_ok=True)
        return None if data is None else Snapshot.from_json(data)

    def snapshots(self, key: RepoKey) -> list[Snapshot]:
        folder = self._repo_dir(key) / "snapshots"
        if not folder.is_dir():
            return []
        found = (self.read_snapshot(key, p.stem) for p in sorted(folder.glob("*.json")))
        return [s for s in found if s is not None]

    def refs_path(self, key: RepoKey) -> Path:
        """Where a repo's revision names are kept."""
        return self._repo_dir(key) / "refs.json"

    def read_refs(self, key: RepoKey) -> dict[str, Ref]:
        data = read_json_bounded(self.refs_path(key), RECORD, IntegrityError, missing_ok=True)
        if data is None:
            return {}
        return {name: Ref(commit=v["commit"], synced_at=v["synced_at"]) for name, v in data.items()}

    def set_refs(self, key: RepoKey, refs: dict[str, str], synced_at: str) -> None:
        """Point revision names at commits (the other names of the repo are kept). A name already at its
        commit keeps the time it got there."""
        current = self.read_refs(key)
        if all(name in current and current[name].commit == commit for name, commit in refs.items()):
            return
        current.update(
            {
                name: Ref(check_commit(commit), synced_at)
                for name, commit in refs.items()
                if name not in current or current[name].commit != commit
            }
        )
        data = {name: {"commit": r.commit, "synced_at": r.synced_at} for name, r in sorted(current.items())}
        atomic_write_json(self.refs_path(key), data)

    def drop_refs(self, key: RepoKey, names: Iterable[str]) -> None:
        """Forget revision names; a repo left with none loses its folder of records."""
        current = self.read_refs(key)
        for name in names:
            current.pop(name, None)
        if current:
            data = {
                name: {"commit": r.commit, "synced_at": r.synced_at} for name, r in sorted(current.items())
            }
            atomic_write_json(self.refs_path(key), data)
        else:
            self.refs_path(key).unlink(missing_ok=True)

    def drop_snapshot(self, key: RepoKey, commit: str) -> None:
        self.snapshot_path(key, commit).unlink(missing_ok=True)

    def drop_blob(self, sha256: str) -> None:
        remove_path(self.blob_path(sha256))
        self.lift_doubt(sha256)

    def problem(self) -> str | None:
        """Why the root is not a store to read (a phrase), None when it is one: a folder holding a store's
        entries, or an empty folder (a new store)."""
        try:
            names = {p.name for p in self.root.iterdir()}
        except FileNotFoundError:
            return "it does not exist"
        except NotADirectoryError:
            return "it is not a folder"
        except OSError as e:
            return f"it cannot be read ({e.strerror or e})"
        if names and not names & {"blobs", "repos"}:
            return "it holds neither blobs/ nor repos/: it is not a mirror store"
        return None

    def repos(self) -> list[RepoKey]:
        """Every repo the store has a record of, sorted."""
        base = self.root / "repos"
        found: list[RepoKey] = []
        if not base.is_dir():
            return found
        for source_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            for type_dir in sorted(p for p in source_dir.iterdir() if p.is_dir()):
                for repo_dir in sorted(p for p in type_dir.iterdir() if p.is_dir()):
                    if (repo_dir / "refs.json").exists() or any((repo_dir / "snapshots").glob("*.json")):
                        found.append(
                            RepoKey(source_dir.name, type_dir.name, repo_id_of_folder(repo_dir.name))
                        )
        return found

    def requests(self) -> list[RevisionRequest]:
        """Every revision name the store holds, as a request for its whole repo (the hub's own endpoint and
        token), sorted."""
        return [RevisionRequest(key, name) for key in self.repos() for name in sorted(self.read_refs(key))]

    # lock ------------------------------------------------------------------------------------------
    @contextmanager
    def lock(self, wait: float = 0.0, stop: threading.Event | None = None) -> Iterator[None]:
        """Hold the store's writer lock; another holder makes this raise LockedError (after `wait` seconds,
        or Interrupted as soon as `stop` is set)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:

            def busy() -> LockedError:
                holder = path.read_text(errors="replace").strip() or "unknown holder"
                return LockedError(
                    f"another mirror run holds the store lock {path} ({holder}); "
                    "try again later or pass --wait SECONDS"
                )

            def stopped() -> Interrupted:
                return Interrupted(f"interrupted while waiting for the store lock {path}")

            flock_wait(fd, wait, busy, clock=self.clock, stop=stop, stopped=stopped)
            os.ftruncate(fd, 0)
            os.write(
                fd, f"pid {os.getpid()} on {socket.gethostname()} since {self.clock.now_iso()}\n".encode()
            )
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock
