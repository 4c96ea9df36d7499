"""What a served store holds, read fresh on each request.

A request reads the repo's refs and the commit's record again (parsed records are kept while their file
is unchanged), so a bundle imported into the store while it serves is visible to the next request, and
nothing is served that the store has not published: an import writes blobs first, then the commit's
record, then the refs, each by an atomic rename.

Only what the store holds is served: a file whose blob is missing (or not a regular file of its size) is
left out of listings and is not found on resolve. What the policy refuses is still listed, and refused on
download (`mirror.serve.policing`).

The view reads through the store's storage: a local folder or a bucket alike.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mirror.errors import MirrorError
from mirror.paths import is_commit
from mirror.repo import HUBS, RepoKey, is_repo_id
from mirror.serve.policing import Policing
from mirror.snapshot import FileRecord, Snapshot
from mirror.store import Ref, Store
from mirror.validate.policy import DEFAULT_POLICY, Policy

RECORD_TTL = 5.0  # seconds a record read from a bucket is served before it is read again (every replica
# thus serves a bundle imported through any host within 10 s); what a look at a blob found, likewise
BLOBS_KEPT = 1 << 16  # looks at blobs remembered over a bucket (forgotten all at once past this)


@dataclass(frozen=True)
class ServedCommit:
    """One commit of a repo, with the files the store holds of it (sorted by path)."""

    key: RepoKey
    commit: str
    files: tuple[FileRecord, ...]
    synced_at: str

    def file(self, path: str) -> FileRecord | None:
        for f in self.files:
            if f.path == path:
                return f
        return None


class ServedRepo:
    """One repo of the store: its revision names, and its commits on demand."""

    def __init__(self, view: StoreView, key: RepoKey, refs: dict[str, Ref]) -> None:
        self.view = view
        self.key = key
        self.refs = refs

    @property
    def default_branch(self) -> str:
        """The hub's default branch for this repo's source (`main`, ModelScope's `master`)."""
        return HUBS[self.key.source].default_revision

    def commit_of(self, revision: str) -> str | None:
        """The commit a revision names: a ref, or a full commit the store has a record of."""
        ref = self.refs.get(revision)
        if ref is not None:
            return ref.commit
        if is_commit(revision) and self.view.snapshot(self.key, revision) is not None:
            return revision
        return None

    def at(self, revision: str) -> ServedCommit | None:
        """The commit a revision names, with the files the store holds of it; None if unknown."""
        commit = self.commit_of(revision)
        if commit is None:
            return None
        snap = self.view.snapshot(self.key, commit)
        if snap is None:
            return None
        held = tuple(f for f in snap.files if self.view.holds(f))
        return ServedCommit(self.key, commit, held, snap.synced_at)

    def last_update(self) -> str:
        """When the newest revision arrived (ISO), "" if none."""
        return max((r.synced_at for r in self.refs.values()), default="")


class StoreView:
    """A read-only view of a store for serving, judged by `policy` (`policing`); safe to share between the
    threads of one process."""

    def __init__(self, store: Store, policy: Policy = DEFAULT_POLICY) -> None:
        self.store = store
        self.policing = Policing(self, policy)  # what the policy refuses to serve, and why
        self._lock = threading.Lock()
        self._records: dict[str, tuple[tuple[float, ...], Any]] = {}  # a record's name -> (stamp, parsed)
        self._blobs: dict[tuple[str, int], tuple[float, bool]] = {}  # over a bucket: (period, held)

    def repos(self) -> list[ServedRepo]:
        return [ServedRepo(self, key, self.store.read_refs(key)) for key in self.store.repos()]

    def repo(self, source: str, repo_type: str, repo_id: str) -> ServedRepo | None:
        """The repo, if the store has refs for it; None for an id that is not a repo id."""
        if source not in HUBS or not is_repo_id(repo_id):
            return None
        key = RepoKey(source, repo_type, repo_id)
        try:
            refs = self.store.read_refs(key)
        except MirrorError:
            return None
        if not refs and not self.store.snapshots(key):
            return None
        return ServedRepo(self, key, refs)

    def snapshot(self, key: RepoKey, commit: str) -> Snapshot | None:
        """The commit's record, parsed once per version of its file (over a bucket: read again after
        `RECORD_TTL` seconds)."""
        if not is_commit(commit):
            return None
        snap: Snapshot | None = self._read(
            self.store.snapshot_key(key, commit), self.store.read_snapshot, key, commit
        )
        return snap

    def scan_record(self, key: RepoKey, commit: str) -> Any:
        """The commit's scan record (`Store.read_scan`), read once per version of its file as `snapshot`
        is; None when absent or unreadable. The same object is returned while the file is unchanged."""
        if not is_commit(commit):
            return None
        return self._read(self.store.scan_key(key, commit), self.store.read_scan, key, commit)

    def _read(self, name: str, read: Callable[[RepoKey, str], Any], key: RepoKey, commit: str) -> Any:
        """`read(key, commit)` of the record stored as `name`, kept while its `_stamp` is unchanged."""
        stamp = self._stamp(name)
        if stamp is None:
            return None
        with self._lock:
            cached = self._records.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            found = read(key, commit)
        except MirrorError:
            found = None
        with self._lock:
            self._records[name] = (stamp, found)
        return found

    def holds(self, record: FileRecord) -> bool:
        """Whether the store holds the file's blob (`Store.has_blob`: one lstat on a local store). Over a
        bucket, where a look is a request, what a look found is kept for the `RECORD_TTL` period."""
        if self.store.local_root is not None:
            return self.store.has_blob(record.sha256, record.size)
        stamp = self._period()
        with self._lock:
            cached = self._blobs.get((record.sha256, record.size))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        held = self.store.has_blob(record.sha256, record.size)
        with self._lock:
            if len(self._blobs) >= BLOBS_KEPT:
                self._blobs.clear()
            self._blobs[record.sha256, record.size] = (stamp, held)
        return held

    def _period(self) -> float:
        return self.store.clock.monotonic() // RECORD_TTL

    def _stamp(self, record: str) -> tuple[float, ...] | None:
        """What changes when a record may have: its file's identity on a local store (None when absent), the
        current `RECORD_TTL` period over a bucket (a look there costs as much as a read)."""
        root = self.store.local_root
        if root is None:
            return (self._period(),)
        try:
            st = os.stat(f"{root}/{record}")
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def record(self, key: RepoKey, commit: str, path: str) -> FileRecord | None:
        """The commit's record of one file, its blob not checked (the file's answer checks it)."""
        snap = self.snapshot(key, commit)
        return next((f for f in snap.files if f.path == path), None) if snap is not None else None
