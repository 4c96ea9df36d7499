"""`mirror sync`: plan what the manifests want against what the store holds, then fetch only what is missing.

Each model revision succeeds or fails on its own: a failure keeps the revision's last good snapshot and does
not stop the others.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mirror.errors import IntegrityError, MirrorError, NotFoundError
from mirror.hashing import file_git_sha1, lfs_pointer_oid
from mirror.lockfile import LockedFile, LockedRevision
from mirror.manifest import ModelSpec
from mirror.paths import check_commit, check_relpath, is_commit, is_sha256
from mirror.progress import NullProgress, ProgressSink
from mirror.retry import RetryPolicy, with_retries
from mirror.settings import Settings
from mirror.snapshot import FileRecord, ListedFile, Snapshot
from mirror.sources import RemoteFile, RemoteSnapshot, Source, open_source
from mirror.store import RepoKey, Store, utc_now
from mirror.transfer import SEGMENTS, Expected, Fetched, download

log = logging.getLogger("mirror")

SourceFactory = Callable[[ModelSpec], Source]


@dataclass(frozen=True)
class Target:
    """One revision of one repo, with every manifest entry that asks for it (their filters are united).

    A target from a lock file is pinned: exactly that commit, exactly those files with those sha256.
    """

    key: RepoKey
    revision: str
    specs: tuple[ModelSpec, ...]
    pinned_commit: str | None = None
    pinned: tuple[LockedFile, ...] = ()

    def wants(self, path: str) -> bool:
        if self.pinned_commit is not None:
            return any(f.path == path for f in self.pinned)
        return any(spec.wants(path) for spec in self.specs)

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


@dataclass
class ItemResult:
    target: Target
    commit: str | None = None
    records: tuple[FileRecord, ...] = ()
    downloaded: int = 0
    bytes_downloaded: int = 0
    error: MirrorError | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.target.key.source,
            "type": self.target.key.repo_type,
            "repo": self.target.key.repo_id,
            "revision": self.target.revision,
            "commit": self.commit,
            "status": "failed" if self.error else "ok",
            "files": len(self.records),
            "downloaded": self.downloaded,
            "bytes_downloaded": self.bytes_downloaded,
            "error": str(self.error) if self.error else None,
        }


@dataclass
class SyncReport:
    items: list[ItemResult] = field(default_factory=list)

    @property
    def failed(self) -> list[ItemResult]:
        return [i for i in self.items if i.error is not None]

    @property
    def exit_code(self) -> int:
        failed = self.failed
        if not failed:
            return 0
        if len(failed) < len(self.items):
            return 3
        if any(isinstance(i.error, IntegrityError) for i in failed):
            return IntegrityError.exit_code
        return max(i.error.exit_code for i in failed if i.error is not None)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": not self.failed,
            "exit_code": self.exit_code,
            "items": [i.to_json() for i in self.items],
        }


def plan_targets(specs: Iterable[ModelSpec]) -> list[Target]:
    """Every (repo, revision) the specs name, once, in the order first named."""
    grouped: dict[tuple[RepoKey, str], list[ModelSpec]] = {}
    for spec in specs:
        key = RepoKey(spec.source, spec.repo_type, spec.repo)
        for revision in spec.revisions:
            grouped.setdefault((key, revision), []).append(spec)
    return [Target(key, revision, tuple(group)) for (key, revision), group in grouped.items()]


def plan_locked(locked: Iterable[LockedRevision]) -> list[Target]:
    """Targets that fetch exactly what a lock file recorded."""
    targets = []
    for rev in locked:
        spec = ModelSpec(
            repo=rev.repo,
            source=rev.source,
            revisions=(rev.commit,),
            repo_type=rev.repo_type,
            token_env=rev.token_env,
            endpoint=rev.endpoint,
        )
        key = RepoKey(rev.source, rev.repo_type, rev.repo)
        targets.append(Target(key, rev.revision, (spec,), pinned_commit=rev.commit, pinned=rev.files))
    return targets


def locked_revisions(report: SyncReport) -> list[LockedRevision]:
    """What a lock file records of a sync: each successful revision's commit and files."""
    return [
        LockedRevision(
            source=item.target.key.source,
            repo_type=item.target.key.repo_type,
            repo=item.target.key.repo_id,
            revision=item.target.revision,
            commit=item.commit,
            files=tuple(LockedFile(f.path, f.size, f.sha256) for f in item.records),
            endpoint=item.target.specs[0].endpoint,
            token_env=item.target.specs[0].token_env,
        )
        for item in report.items
        if item.error is None and item.commit is not None
    ]


def default_source_factory(settings: Settings) -> SourceFactory:
    cache: dict[tuple[str, str | None, str | None], Source] = {}

    def factory(spec: ModelSpec) -> Source:
        cache_key = (spec.source, spec.endpoint, spec.token_env)
        if cache_key not in cache:
            cache[cache_key] = open_source(
                spec.source, settings, endpoint=spec.endpoint, token_env=spec.token_env
            )
        return cache[cache_key]

    return factory


def sync(
    store: Store,
    targets: Sequence[Target],
    sources: SourceFactory,
    *,
    workers: int = 8,
    policy: RetryPolicy | None = None,
    progress: ProgressSink | None = None,
    wait: float = 0.0,
    segments: int = SEGMENTS,
) -> SyncReport:
    """Bring the store up to date with the targets; never raises for one item's failure."""
    policy = policy or RetryPolicy()
    progress = progress or NullProgress()
    report = SyncReport([ItemResult(t) for t in targets])
    budget = threading.Semaphore(segments)  # ranged connections shared by the large files in flight
    for target in targets:
        sources(target.specs[0])  # make each hub's client once, here: its imports are slow under threads
    with store.lock(wait), ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        resolved = list(pool.map(lambda t: _resolve(store, t, sources, policy), targets))
        known = Known(store)
        judged: dict[str, bool] = {}  # sha256 -> whether the store's copy can be used
        fetches: dict[str, Fetch] = {}
        wanted: dict[int, list[RemoteFile]] = {}
        for index, (item, answer) in enumerate(zip(report.items, resolved, strict=True)):
            if isinstance(answer, MirrorError):
                item.error = answer
                continue
            remote, prior = answer.remote, answer.prior
            item.commit = remote.commit
            if prior is not None:
                known.add(prior)
            wanted[index] = [f for f in remote.files if item.target.wants(f.path)]
            for f in wanted[index]:
                sha = item.target.pinned_sha256(f.path) or f.sha256 or known.sha256_of(f.oid)
                if sha is None or not _held(store, item.target, f, sha, judged):
                    fetch = Fetch(item.target, remote.commit, f)
                    fetches.setdefault(fetch.expected.key, fetch)
        total = sum(fetch.file.size for fetch in fetches.values())
        check_free_space(store, total)
        if fetches:
            log.info("downloading %d files, %d bytes", len(fetches), total)
        progress.start(total, "sync")
        try:
            results = dict(
                zip(
                    fetches,
                    pool.map(
                        lambda fetch: _fetch(store, sources, fetch, policy, progress, segments, budget),
                        fetches.values(),
                    ),
                    strict=True,
                )
            )
        finally:
            progress.close()
        for index, files in wanted.items():
            _record(store, report.items[index], resolved[index], files, fetches, results, known)
    return report


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
                store.blob_path(sha256),
                damage,
            )
        judged[sha256] = damage is None
    return judged[sha256]


def check_free_space(store: Store, needed: int) -> None:
    """Refuse to start downloads that cannot fit (the partial files would only fill the disk)."""
    free = shutil.disk_usage(store.root).free
    if needed > free:
        raise MirrorError(
            f"the planned downloads need {needed} bytes but only {free} are free on the file system of the store "
            f"{store.root}; free some space (mirror gc) or use another --store"
        )


@dataclass(frozen=True)
class Resolved:
    """A target's revision as the hub has it now, with what the store recorded of it (read once)."""

    remote: RemoteSnapshot
    prior: Snapshot | None  # the store's record of remote.commit


def _resolve(
    store: Store, target: Target, sources: SourceFactory, policy: RetryPolicy
) -> Resolved | MirrorError:
    source = sources(target.specs[0])
    try:
        resolved = with_retries(lambda: _listing(store, target, source), policy, str(target))
        if target.pinned_commit is not None:
            _check_pins(target, resolved.remote)
        return resolved
    except MirrorError as e:
        log.error("%s", e)
        return e


def _listing(store: Store, target: Target, source: Source) -> Resolved:
    """The listing of the target's revision, checked, and the store's records of it.

    A revision synced before mostly names the same commit still: one light request says which, and a
    complete record of that commit in the store is its listing (a commit's files never change), so an
    unchanged revision costs that one request. Otherwise (first sync, a moved revision, a record of only
    some files) the hub's full listing is asked for.
    """
    key, revision = target.key, target.pinned_commit or target.revision
    if target.revision in store.read_refs(key):
        commit = source.commit_of(key.repo_id, key.repo_type, revision)
        if commit is not None:
            check_commit(commit)
            prior = store.read_snapshot(key, commit)
            if prior is not None and prior.complete:
                files = tuple(RemoteFile(f.path, f.size, f.oid, f.lfs, f.sha256) for f in prior.files)
                return Resolved(RemoteSnapshot(commit, files), prior)
    remote = source.resolve(key.repo_id, key.repo_type, revision)
    check_commit(remote.commit)
    for f in remote.files:
        check_relpath(f.path, f"file path from {target}")
    return Resolved(remote, store.read_snapshot(key, remote.commit))


def _check_pins(target: Target, remote: RemoteSnapshot) -> None:
    if remote.commit != target.pinned_commit:
        raise NotFoundError(
            f"{target}: the hub resolved the locked commit {target.pinned_commit} to {remote.commit}"
        )
    listed = {f.path: f for f in remote.files}
    missing = [f.path for f in target.pinned if f.path not in listed]
    if missing:
        raise NotFoundError(
            f"{target}: upstream commit {remote.commit} no longer has {', '.join(missing)} named by the lock file"
        )
    for f in target.pinned:
        upstream = listed[f.path].sha256
        if upstream is not None and upstream != f.sha256:
            raise IntegrityError(
                f"{target}: {f.path} upstream has sha256 {upstream}, the lock file says {f.sha256}"
            )


def _fetch(
    store: Store,
    sources: SourceFactory,
    fetch: Fetch,
    policy: RetryPolicy,
    progress: ProgressSink,
    segments: int,
    budget: threading.Semaphore,
) -> Fetched | MirrorError:
    key = fetch.target.key
    try:
        request = sources(fetch.target.specs[0]).file_request(
            key.repo_id, key.repo_type, fetch.commit, fetch.file.path
        )
        return download(
            store,
            request,
            fetch.expected,
            policy=policy,
            progress=progress.update,
            segments=segments,
            budget=budget,
        )
    except MirrorError as e:
        log.error("%s", e)
        return e


def _record(
    store: Store,
    item: ItemResult,
    resolved: Resolved | MirrorError,
    files: list[RemoteFile],
    fetches: dict[str, Fetch],
    results: dict[str, Fetched | MirrorError],
    known: Known,
) -> None:
    assert isinstance(resolved, Resolved)
    remote = resolved.remote
    records: list[FileRecord] = []
    for f in files:
        key = Fetch(item.target, remote.commit, f).expected.key
        outcome = results.get(key)
        if isinstance(outcome, MirrorError):
            item.error = outcome
            continue
        if outcome is not None:
            sha: str | None = outcome.sha256
        else:
            sha = item.target.pinned_sha256(f.path) or f.sha256 or known.sha256_of(f.oid)
        assert sha is not None  # not fetched means planned as held, so known
        if outcome is not None and fetches[key].target is item.target:  # count each download once
            item.downloaded += 1
            item.bytes_downloaded += f.size
        oid = f.oid or known.oid_of(f, sha, outcome)
        records.append(FileRecord(path=f.path, size=f.size, sha256=sha, oid=oid, lfs=f.lfs))
    item.records = tuple(records)
    if item.error is not None:
        return
    snap = Snapshot(
        source=item.target.key.source,
        repo_type=item.target.key.repo_type,
        repo_id=item.target.key.repo_id,
        commit=remote.commit,
        files=tuple(records),
        complete=len(files) == len(remote.files),
        synced_at=utc_now(),
        listing=remote_listing(remote) if len(files) != len(remote.files) else None,
    )
    store.write_snapshot(snap)
    store.set_refs(item.target.key, {item.target.revision: remote.commit}, snap.synced_at)


def remote_listing(remote: RemoteSnapshot) -> tuple[ListedFile, ...] | None:
    """The complete listing a filtered sync keeps beside its files, for the HF cache's trees/<commit>.json;
    None when the hub does not give every file's git id (ModelScope), which that listing needs."""
    if not all(is_commit(f.oid or "") and (not f.lfs or is_sha256(f.sha256 or "")) for f in remote.files):
        return None
    return tuple(
        sorted(
            (ListedFile(f.path, f.size, str(f.oid), f.sha256 if f.lfs else None) for f in remote.files),
            key=lambda e: e.path,
        )
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
            self._oid[sha256] = file_git_sha1(self._store.blob_path(sha256))  # small: not LFS
        return self._oid[sha256]
