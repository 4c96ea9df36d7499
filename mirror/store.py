"""The content-addressed store: blobs by sha256, a snapshot record per repo commit, revision names -> commits,
kept through a `Storage` (a local folder, an S3 bucket): nothing here knows which.

Keys under the storage (guidance, not a contract):

    blobs/sha256/ab/<sha256>                           each content once, whatever repo it came from
    repos/<source>/<type>/<org--name>/snapshots/<commit>.json   path -> sha256, size, hub oid, lfs flag
    repos/<source>/<type>/<org--name>/refs.json        revision name -> commit, when synced
    repos/<source>/<type>/<org--name>/scans/<commit>.json   the validation scan a sync or an import made of
                                                       the commit's files (mirror.validate.scan owns
                                                       the record)
    tmp/                                               downloads in progress: `Storage.staging`, a local
                                                       folder (this one in a local store)
    doubt/<sha256>                                     blobs that hashing (verify, export) found damaged
    trust/<key id>.json                                the highest signature sequence an import accepted
                                                       from a key (mirror.signing owns the record)
    lock                                               one writer at a time (`Storage.lock`)

How a sync judges a blob it already holds: cheaply, by one look (`Storage.stat`: one lstat of a string path
on a local folder): a regular file of the recorded size; a link, a folder, a truncated or emptied file is
damaged and fetched again. Bytes flipped in place keep the size, so only hashing finds them: `mirror verify`
and `mirror export` hash every blob they read and mark the damaged ones under doubt/, and a sync re-hashes a
marked blob before it trusts it.

Records, scans and refs are written with conditional writes (the tag read, or ABSENT): a writer that finds the
object changed since it read it re-reads it and applies its change again (a record merges, refs move only
the names this writer moves), up to `ATTEMPTS` times, then gives up with ConflictError. Two writers thus
never silently overwrite each other's names or files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from mirror.bounded import RECORD, parse_json
from mirror.clock import Clock
from mirror.errors import DamagedBlobError, IntegrityError
from mirror.fsutil import json_bytes
from mirror.hashing import stream_sha256
from mirror.paths import check_commit, is_sha256
from mirror.repo import RepoKey, RevisionRequest, folder_name, repo_id_of_folder
from mirror.snapshot import Snapshot
from mirror.storage.base import ABSENT, ConflictError, ObjectStat, Storage
from mirror.storage.local import LocalStorage

BLOBS = "blobs/sha256/"
_NOT_A_FILE = {"link": "a symbolic link, not a file", "folder": "a folder, not a file"}
ATTEMPTS = 5  # conditional writes of one record before a writer gives up (another keeps changing it)


@dataclass(frozen=True)
class Ref:
    commit: str
    synced_at: str


class Store:
    """A store over a storage; created on first write. `clock` stamps what a sync records."""

    def __init__(self, storage: Storage, *, clock: Clock) -> None:
        self.storage = storage
        self.clock = clock

    @classmethod
    def at(cls, folder: Path | str, *, clock: Clock) -> Store:
        """The store in a local folder."""
        return cls(LocalStorage(Path(folder), clock=clock), clock=clock)

    def __str__(self) -> str:
        return str(self.storage)

    @property
    def local_root(self) -> Path | None:
        """The store's folder when it is local (fast paths: send or hash a blob by path); None on a bucket."""
        return self.storage.local_root

    def where(self, key: str) -> str:
        """An object's name for messages: its path, or its s3:// URL."""
        return f"{self.storage}/{key}"

    # blobs -----------------------------------------------------------------------------------------
    @staticmethod
    def blob_key(sha256: str) -> str:
        if not is_sha256(sha256):
            raise IntegrityError(f"not a sha256: {sha256!r}")
        return f"{BLOBS}{sha256[:2]}/{sha256}"

    def local_blob(self, sha256: str) -> Path | None:
        """The blob's file on a local storage (whether or not it is there); None on a bucket."""
        root = self.storage.local_root
        return None if root is None else root / self.blob_key(sha256)

    def open_blob(self, sha256: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """A stream of the blob's bytes [start, end); FileNotFoundError when absent."""
        return self.storage.open_read(self.blob_key(sha256), start, end)

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        """Held as the store writes it: a regular file (of `size` bytes when given). One look, no hashing."""
        return self.blob_problem(sha256, size) is None

    def blob_problem(self, sha256: str, size: int | None = None) -> str | None:
        """What a look at a blob (no hashing) finds wrong with it (`problem_of`)."""
        return self.problem_of(self.storage.stat(self.blob_key(sha256)), size)

    @staticmethod
    def problem_of(st: ObjectStat | None, size: int | None = None) -> str | None:
        """A look at a blob (`Storage.stat`) in words: "missing", a link, a wrong size; None when whole."""
        if st is None:
            return "missing"
        if st.kind != "file":
            return _NOT_A_FILE.get(st.kind, "not a regular file")
        if size is not None and st.size != size:
            return f"{st.size} bytes, not {size}"
        return None

    def blob_sha256(self, sha256: str) -> str:
        """What the blob's content hashes to (read streaming)."""
        with self.open_blob(sha256) as f:
            return stream_sha256(f)

    def blob_damage(self, sha256: str, size: int) -> str | None:
        """What is wrong with a blob a sync is about to rely on: `blob_problem`, and for a blob in doubt its
        content re-hashed (a doubt the hash disproves is lifted). None when it can be used as it is."""
        problem = self.blob_problem(sha256, size)
        if problem is not None or not self.in_doubt(sha256):
            return problem
        actual = self.blob_sha256(sha256)
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
            f"store blob {self.where(self.blob_key(sha256))} is damaged: expected {expected}, found {found} "
            f"(used by {where})",
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

    def _doubt_key(self, sha256: str) -> str:
        return f"doubt/{self.blob_key(sha256).rsplit('/', 1)[1]}"  # blob_key checks the name

    def doubt_blob(self, sha256: str) -> None:
        """Mark a blob that hashing found damaged: the next sync that needs it re-hashes it and fetches it
        again."""
        self.storage.write(self._doubt_key(sha256), b"")

    def in_doubt(self, sha256: str) -> bool:
        return self.storage.stat(self._doubt_key(sha256)) is not None

    def lift_doubt(self, sha256: str) -> None:
        self.storage.delete(self._doubt_key(sha256))

    def temp_path(self, name: str) -> Path:
        """A local path for a download in progress (under `Storage.staging`); callers pick stable names so a
        later run can resume."""
        return self.storage.staging() / name

    def add_blob(self, temp: Path, sha256: str) -> None:
        """Publish a verified local file (under `temp_path`) under its sha256 (a no-op if that content is
        already held, intact as far as a look tells and not in doubt); a damaged blob there is replaced."""
        if self.has_blob(sha256, temp.stat().st_size) and not self.in_doubt(sha256):
            temp.unlink(missing_ok=True)
            return
        self.put_blob(temp, sha256)

    def put_blob(self, temp: Path, sha256: str) -> None:
        """Publish a verified local file under its sha256, replacing what is there; lift a doubt on it."""
        self.storage.put_file(temp, self.blob_key(sha256))
        self.lift_doubt(sha256)

    def iter_blobs(self) -> Iterator[tuple[str, str]]:
        """(name, key) of every entry of blobs/sha256/<ab>/, sorted: the name is a sha256 unless something
        else put it there (a folder there is one entry, whatever it holds)."""
        last = None
        for found in self.storage.keys(BLOBS):
            key = "/".join(found.split("/", 4)[:4])
            if key != last:
                last = key
                yield key.rsplit("/", 1)[-1], key

    def drop_blob(self, key: str) -> None:
        """Remove an object `iter_blobs` listed (its doubt marker with it)."""
        self.storage.delete(key)
        name = key.rsplit("/", 1)[-1]
        if is_sha256(name):
            self.lift_doubt(name)

    # snapshots and refs ----------------------------------------------------------------------------
    def repo_key(self, key: RepoKey) -> str:
        """The folder of a repo's records (a key prefix, ending in "/")."""
        # A short id can never collide with the folder of another repo's records (see folder_name).
        return f"repos/{key.source}/{key.repo_type}/{folder_name(key.repo_id)}/"

    def snapshot_key(self, key: RepoKey, commit: str) -> str:
        """Where the record of a repo commit is kept."""
        return f"{self.repo_key(key)}snapshots/{check_commit(commit)}.json"

    def refs_key(self, key: RepoKey) -> str:
        """Where a repo's revision names are kept."""
        return f"{self.repo_key(key)}refs.json"

    def _read_json(self, key: str) -> tuple[Any, str] | None:
        """A record's JSON and its tag; None when absent; IntegrityError naming it when unreadable."""
        found = self.storage.read(key, RECORD.size)
        if found is None:
            return None
        try:
            return parse_json(found.data, RECORD), found.tag
        except ValueError as e:
            raise IntegrityError(f"{self.where(key)}: the {RECORD.what} is not valid JSON: {e}") from None

    def _update(self, key: str, change: Callable[[Any], Any | None]) -> Any:
        """Apply `change` to a record's JSON (None when absent) and write what it returns with the tag read
        (None: write nothing); on a conflict, read again and apply it again (see the module docstring).
        What was written (or the record as read, when nothing was)."""
        for _ in range(ATTEMPTS):
            found = self._read_json(key)
            current, tag = (None, None) if found is None else found
            new = change(current)
            if new is None:
                return current
            try:
                self.storage.write(key, json_bytes(new), expect=ABSENT if tag is None else tag)
            except ConflictError:
                continue
            return new
        raise ConflictError(
            f"{self.where(key)} kept changing while this run wrote it ({ATTEMPTS} attempts): another writer "
            "is at work on it; run again"
        )

    def write_snapshot(self, snap: Snapshot) -> Snapshot:
        """Record a commit's files, merged with what earlier syncs of the same commit recorded."""

        def merge(data: Any) -> Any | None:
            old = None if data is None else Snapshot.from_json(data)
            merged = old.merged(snap) if old is not None else snap
            if old is not None and (old.files, old.complete, old.listing) == (
                merged.files,
                merged.complete,
                merged.listing,
            ):
                return None  # nothing new: an unchanged manifest rewrites no record
            return merged.to_json()

        return Snapshot.from_json(self._update(self.snapshot_key(snap.key, snap.commit), merge))

    def read_snapshot(self, key: RepoKey, commit: str) -> Snapshot | None:
        found = self._read_json(self.snapshot_key(key, commit))
        return None if found is None else Snapshot.from_json(found[0])

    def snapshots(self, key: RepoKey) -> list[Snapshot]:
        prefix = f"{self.repo_key(key)}snapshots/"
        commits = [k[len(prefix) : -5] for k in self.storage.keys(prefix) if k.endswith(".json")]
        found = (self.read_snapshot(key, c) for c in commits if "/" not in c)
        return [s for s in found if s is not None]

    def read_refs(self, key: RepoKey) -> dict[str, Ref]:
        found = self._read_json(self.refs_key(key))
        return {} if found is None else _refs(found[0])

    def set_refs(self, key: RepoKey, refs: dict[str, str], synced_at: str) -> None:
        """Point revision names at commits (the other names of the repo are kept). A name already at its
        commit keeps the time it got there."""
        moves = {name: check_commit(commit) for name, commit in refs.items()}

        def move(data: Any) -> Any | None:
            current = {} if data is None else _refs(data)
            if all(name in current and current[name].commit == commit for name, commit in moves.items()):
                return None
            current.update(
                {
                    name: Ref(commit, synced_at)
                    for name, commit in moves.items()
                    if name not in current or current[name].commit != commit
                }
            )
            return _refs_json(current)

        self._update(self.refs_key(key), move)

    def drop_refs(self, key: RepoKey, names: Iterable[str]) -> None:
        """Forget revision names; a repo left with none loses its refs.json (that removal is unconditional:
        the runs that drop names, gc, hold the store's writer lock)."""
        names = set(names)
        found = self._update(
            self.refs_key(key),
            lambda data: (
                None  # nothing to write: no record, none of the names, or every name goes (deleted below)
                if data is None or not names & set(data) or set(data) <= names
                else {name: v for name, v in data.items() if name not in names}
            ),
        )
        if found is not None and set(found) <= names:
            self.storage.delete(self.refs_key(key))

    def drop_snapshot(self, key: RepoKey, commit: str) -> None:
        """Forget a commit's record and its scan."""
        self.storage.delete(self.snapshot_key(key, commit))
        self.storage.delete(self.scan_key(key, commit))

    # scans -----------------------------------------------------------------------------------------
    def scan_key(self, key: RepoKey, commit: str) -> str:
        """Where the validation scan of a repo commit is kept, beside its record."""
        return f"{self.repo_key(key)}scans/{check_commit(commit)}.json"

    def read_scan(self, key: RepoKey, commit: str) -> Any:
        """The commit's scan record (mirror.sync.scan reads it), None when absent."""
        found = self._read_json(self.scan_key(key, commit))
        return None if found is None else found[0]

    def write_scan(self, key: RepoKey, commit: str, record: Any) -> None:
        """Record the commit's scan (a conditional write: written only when it differs from what is there)."""
        self._update(self.scan_key(key, commit), lambda data: None if data == record else record)

    # the importer's trust state ----------------------------------------------------------------------
    @staticmethod
    def trust_key(key_id: str) -> str:
        """Where the record of the sequences an import accepted from a signing key is kept."""
        return f"trust/{key_id}.json"

    def read_trust(self, key_id: str) -> Any:
        """The key's record (mirror.signing reads it), None when absent."""
        found = self._read_json(self.trust_key(key_id))
        return None if found is None else found[0]

    def update_trust(self, key_id: str, change: Callable[[Any], Any | None]) -> None:
        """Write `change(the key's record)` with a conditional write, applied again to what another writer
        wrote meanwhile (see the module docstring)."""
        self._update(self.trust_key(key_id), change)

    def problem(self) -> str | None:
        """Why this is not a store to read (a phrase), None when it is one: it holds a store's entries, or
        nothing (a new store)."""
        return self.storage.problem()

    def repos(self) -> list[RepoKey]:
        """Every repo the store has a record of, sorted."""
        found: set[tuple[str, ...]] = set()
        for k in self.storage.keys("repos/"):
            parts = k.split("/")
            if (len(parts) == 5 and parts[4] == "refs.json") or (
                len(parts) == 6 and parts[4] == "snapshots" and parts[5].endswith(".json")
            ):
                found.add(tuple(parts[1:4]))
        return [RepoKey(source, kind, repo_id_of_folder(folder)) for source, kind, folder in sorted(found)]

    def requests(self) -> list[RevisionRequest]:
        """Every revision name the store holds, as a request for its whole repo (the hub's own endpoint and
        token), sorted."""
        return [RevisionRequest(key, name) for key in self.repos() for name in sorted(self.read_refs(key))]

    # lock ------------------------------------------------------------------------------------------
    def lock(self, wait: float = 0.0, stop: threading.Event | None = None) -> AbstractContextManager[None]:
        """Hold the store's writer lock; another holder makes this raise LockedError (after `wait` seconds,
        or Interrupted as soon as `stop` is set)."""
        return self.storage.lock(wait, stop)


def _refs(data: Any) -> dict[str, Ref]:
    return {name: Ref(commit=v["commit"], synced_at=v["synced_at"]) for name, v in data.items()}


def _refs_json(refs: dict[str, Ref]) -> dict[str, Any]:
    return {name: {"commit": r.commit, "synced_at": r.synced_at} for name, r in sorted(refs.items())}
