"""The content-addressed store: blobs by sha256, a snapshot record per repo commit, revision names -> commits.

Layout under the store root (guidance, not a contract):

    blobs/sha256/ab/<sha256>                           each content once, whatever repo it came from
    repos/<source>/<type>/<org--name>/snapshots/<commit>.json   path -> sha256, size, hub oid, lfs flag
    repos/<source>/<type>/<org--name>/refs.json        revision name -> commit, when synced
    tmp/                                               downloads in progress, never under a real name
    lock                                               one writer at a time
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mirror.errors import IntegrityError, Interrupted, LockedError
from mirror.fsutil import atomic_write_json, read_json
from mirror.paths import check_commit, check_repo_id, is_sha256
from mirror.snapshot import Snapshot


@dataclass(frozen=True, order=True)
class RepoKey:
    source: str
    repo_type: str
    repo_id: str

    def __str__(self) -> str:
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}:"
        return f"{self.source}:{prefix}{self.repo_id}"


@dataclass(frozen=True)
class Ref:
    commit: str
    synced_at: str


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """A store rooted at a folder; created on first write."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # blobs -----------------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise IntegrityError(f"not a sha256: {sha256!r}")
        return self.root / "blobs" / "sha256" / sha256[:2] / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        try:
            st = self.blob_path(sha256).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def temp_path(self, name: str) -> Path:
        """A path under tmp/ for a download in progress; callers pick stable names so a later run can resume."""
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / name

    def add_blob(self, temp: Path, sha256: str) -> Path:
        """Move a verified temp file into place under its sha256 (a no-op if that content is already held)."""
        dest = self.blob_path(sha256)
        if dest.exists():
            temp.unlink(missing_ok=True)
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(temp, 0o444)
        os.replace(temp, dest)
        return dest

    def iter_blobs(self) -> Iterator[tuple[str, Path]]:
        base = self.root / "blobs" / "sha256"
        if not base.is_dir():
            return
        for sub in sorted(base.iterdir()):
            for blob in sorted(sub.iterdir()):
                yield blob.name, blob

    # snapshots and refs ----------------------------------------------------------------------------
    def _repo_dir(self, key: RepoKey) -> Path:
        # org/name -> org--name, as the HF cache does: `--` cannot occur in a repo id, so a short id can
        # never collide with a folder of another repo's records.
        return (
            self.root / "repos" / key.source / key.repo_type / check_repo_id(key.repo_id).replace("/", "--")
        )

    def write_snapshot(self, snap: Snapshot) -> Snapshot:
        """Record a commit's files, merged with what earlier syncs of the same commit recorded."""
        key = RepoKey(snap.source, snap.repo_type, snap.repo_id)
        old = self.read_snapshot(key, snap.commit)
        merged = old.merged(snap) if old is not None else snap
        if old is not None and (old.files, old.complete) == (merged.files, merged.complete):
            return old  # nothing new: an unchanged manifest rewrites no record
        atomic_write_json(
            self._repo_dir(key) / "snapshots" / f"{check_commit(snap.commit)}.json", merged.to_json()
        )
        return merged

    def read_snapshot(self, key: RepoKey, commit: str) -> Snapshot | None:
        path = self._repo_dir(key) / "snapshots" / f"{check_commit(commit)}.json"
        try:
            return Snapshot.from_json(read_json(path))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as e:
            raise IntegrityError(f"corrupt snapshot record {path}: {e}") from None

    def snapshots(self, key: RepoKey) -> list[Snapshot]:
        folder = self._repo_dir(key) / "snapshots"
        if not folder.is_dir():
            return []
        found = (self.read_snapshot(key, p.stem) for p in sorted(folder.glob("*.json")))
        return [s for s in found if s is not None]

    def read_refs(self, key: RepoKey) -> dict[str, Ref]:
        try:
            data = read_json(self._repo_dir(key) / "refs.json")
        except FileNotFoundError:
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
        atomic_write_json(self._repo_dir(key) / "refs.json", data)

    def drop_refs(self, key: RepoKey, names: Iterable[str]) -> None:
        """Forget revision names; a repo left with none loses its folder of records."""
        current = self.read_refs(key)
        for name in names:
            current.pop(name, None)
        if current:
            data = {
                name: {"commit": r.commit, "synced_at": r.synced_at} for name, r in sorted(current.items())
            }
            atomic_write_json(self._repo_dir(key) / "refs.json", data)
        else:
            (self._repo_dir(key) / "refs.json").unlink(missing_ok=True)

    def drop_snapshot(self, key: RepoKey, commit: str) -> None:
        (self._repo_dir(key) / "snapshots" / f"{check_commit(commit)}.json").unlink(missing_ok=True)

    def drop_blob(self, sha256: str) -> None:
        self.blob_path(sha256).unlink(missing_ok=True)

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
                            RepoKey(source_dir.name, type_dir.name, repo_dir.name.replace("--", "/"))
                        )
        return found

    # lock ------------------------------------------------------------------------------------------
    @contextmanager
    def lock(self, wait: float = 0.0, stop: threading.Event | None = None) -> Iterator[None]:
        """Hold the store's writer lock; another holder makes this raise LockedError (after `wait` seconds,
        or Interrupted as soon as `stop` is set)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        holder = path.read_text(errors="replace").strip() or "unknown holder"
                        raise LockedError(
                            f"another mirror run holds the store lock {path} ({holder}); "
                            "try again later or pass --wait SECONDS"
                        ) from None
                    if (stop or threading.Event()).wait(0.2):
                        raise Interrupted(f"interrupted while waiting for the store lock {path}") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {utc_now()}\n".encode())
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock
