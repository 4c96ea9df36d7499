"""A sync's plan: the revisions wanted (`Target`, from manifest requests or a lock file), what the store
already holds of them (`Known`, judged blobs), and the files still to fetch (`Fetch`, one per content)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

from mirror.errors import MirrorError
from mirror.hashing import lfs_pointer_oid, stream_git_sha1
from mirror.lockfile import LockedFile, LockedRevision
from mirror.progress import VERBOSE
from mirror.repo import RepoKey, RevisionRequest
from mirror.snapshot import Snapshot
from mirror.sources import RemoteFile, RemoteSnapshot
from mirror.store import Store
from mirror.transfer import Expected, Fetched
from mirror.validate.policy import Policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """One revision of one repo, with every request for it (their filters are united; the first says where
    to ask, and which policy judges it).

    A target from a lock file is pinned: exactly that commit, exactly those files with those sha256.
    """

    key: RepoKey
    revision: str
    requests: tuple[RevisionRequest, ...]
    pinned_commit: str | None = None
    pinned: tuple[LockedFile, ...] = ()

    def wants(self, path: str) -> bool:
        if self.pinned_commit is not None:
            return any(f.path == path for f in self.pinned)
        return any(request.wants(path) for request in self.requests)

    @property
    def policy(self) -> Policy:
        """The policy a sync judges the revision by: its first request's."""
        return self.requests[0].policy

    def pinned_sha256(self, path: str) -> str | None:
        return next((f.sha256 for f in self.pinned if f.path == path), None)

    def __str__(self) -> str:
        return f"{self.key}@{self.revision}"


@dataclass(frozen=True)
class Fetch:
    """A file to download, for the first target that wants it."""

    target: Target
    commit: str
    file: RemoteFile

    @property
    def expected(self) -> Expected:
        sha256 = self.target.pinned_sha256(self.file.path) or self.file.sha256
        return Expected(
            label=f"{self.target}:{self.file.path}",
            size=self.file.size,
            sha256=sha256,
            git_sha1=None if sha256 else self.file.oid,
            source=self.target.key.source,
            want_git_sha1=not self.file.lfs and self.file.oid is None,
        )


@dataclass(frozen=True)
class Resolved:
    """A target's revision as the hub has it now, with what the store recorded of it (read once)."""

    remote: RemoteSnapshot
    prior: Snapshot | None  # the store's record of remote.commit


def plan_targets(requests: Iterable[RevisionRequest]) -> list[Target]:
    """Every (repo, revision) the requests name, once, in the order first named."""
    grouped: dict[tuple[RepoKey, str], list[RevisionRequest]] = {}
    for request in requests:
        grouped.setdefault((request.key, request.revision), []).append(request)
    return [Target(key, revision, tuple(group)) for (key, revision), group in grouped.items()]


def plan_locked(locked: Iterable[LockedRevision]) -> list[Target]:
    """Targets that fetch exactly what a lock file recorded."""
    return [
        Target(rev.key, rev.revision, (rev.request,), pinned_commit=rev.commit, pinned=rev.files)
        for rev in locked
    ]


def plan_revision(
    store: Store,
    target: Target,
    answer: Resolved,
    known: Known,
    fetches: dict[str, Fetch],
    judged: dict[str, bool],
) -> tuple[list[RemoteFile], set[str]]:
    """A revision's wanted files and the keys of those to download (added to `fetches`, one per content)."""
    remote, prior = answer.remote, answer.prior
    if prior is not None:
        known.add(prior)
    wanted = [f for f in remote.files if target.wants(f.path)]
    needs = set()
    for f in wanted:
        sha = target.pinned_sha256(f.path) or f.sha256 or known.sha256_of(f.oid)
        if sha is None or not _held(store, target, f, sha, judged):
            fetch = Fetch(target, remote.commit, f)
            fetches.setdefault(fetch.expected.key, fetch)
            needs.add(fetch.expected.key)
    _log_plan(target, remote, wanted, needs, fetches)
    return wanted, needs


def _log_plan(
    target: Target,
    remote: RemoteSnapshot,
    files: list[RemoteFile],
    keys: set[str],
    fetches: dict[str, Fetch],
) -> None:
    """-v: what a revision will fetch and what the store already holds of it."""
    if not log.isEnabledFor(VERBOSE):
        return
    fetched = sum(fetches[k].file.size for k in keys)
    held = [f for f in files if Fetch(target, remote.commit, f).expected.key not in keys]
    log.log(
        VERBOSE,
        "%s: commit %s: %d of %d files wanted; %d to fetch (%d bytes), %d already in the store (%d bytes)",
        target,
        remote.commit,
        len(files),
        len(remote.files),
        len(keys),
        fetched,
        len(held),
        sum(f.size for f in held),
    )


def _held(store: Store, target: Target, f: RemoteFile, sha256: str, judged: dict[str, bool]) -> bool:
    """Whether the store's copy of a file can be used, judged once per sync; a damaged one is said and
    fetched again (see the store's docstring for how cheaply it is judged)."""
    if sha256 not in judged:
        damage = store.blob_damage(sha256, f.size)
        if damage is not None and damage != "missing":
            log.warning(
                "%s: %s: the store's blob %s is damaged (%s); fetching it again",
                target,
                f.path,
                store.where(store.blob_key(sha256)),
                damage,
            )
        judged[sha256] = damage is None
    return judged[sha256]


def check_free_space(store: Store, needed: int) -> None:
    """Refuse to start downloads that cannot fit (the partial files would only fill the disk)."""
    staging = store.storage.staging()  # downloads are written there, then published
    free = shutil.disk_usage(staging).free
    if needed > free:
        raise MirrorError(
            f"the planned downloads need {needed} bytes but only {free} are free on the file system of "
            f"{staging}; free some space (mirror gc) or use another --store"
        )


class Known:
    """The non-LFS content the store already holds, by git oid and by sha256: unchanged content is found
    by hash and never fetched again, whichever hub lists it and however it names it.

    The records of the commit being synced are looked at first; every other snapshot record is read only
    when a file is not found there (an unchanged manifest reads one record per revision)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._sha256: dict[str, str] = {}
        self._oid: dict[str, str] = {}
        self._complete = False

    def add(self, snap: Snapshot) -> None:
        for f in snap.files:
            if not f.lfs and f.oid:
                self._sha256[f.oid] = f.sha256
                self._oid[f.sha256] = f.oid

    def _load_all(self) -> None:
        if not self._complete:
            self._complete = True
            for key in self._store.repos():
                for snap in self._store.snapshots(key):
                    self.add(snap)

    def sha256_of(self, oid: str | None) -> str | None:
        if oid is None:
            return None
        if oid not in self._sha256:
            self._load_all()
        return self._sha256.get(oid)

    def oid_of(self, f: RemoteFile, sha256: str, fetched: Fetched | None) -> str:
        """The git blob id the HF cache names a file by, for hubs that list only sha256 (ModelScope)."""
        if f.lfs:
            return lfs_pointer_oid(sha256, f.size)
        if fetched is not None and fetched.git_sha1:
            return fetched.git_sha1
        if sha256 not in self._oid:
            self._load_all()
        if sha256 not in self._oid:
            with self._store.open_blob(sha256) as blob:  # small: not LFS
                self._oid[sha256] = stream_git_sha1(blob, f.size)
        return self._oid[sha256]
