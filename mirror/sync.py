"""`mirror sync`: plan what the manifests want against what the store holds, then fetch only what is missing.

Each model revision succeeds or fails on its own: any error while fetching it (of the hub, of the network or
an unexpected one) keeps the revision's last good snapshot and does not stop the others. Each revision is
recorded as soon as its files are in, so a run that is stopped (Ctrl-C, SIGTERM) keeps every revision it
completed, and its partial downloads for the next run.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mirror.errors import IntegrityError, Interrupted, MirrorError, NotFoundError, UsageError
from mirror.exits import ExitCode, combine
from mirror.hashing import file_git_sha1, lfs_pointer_oid
from mirror.lockfile import LockedFile, LockedRevision
from mirror.paths import check_commit, is_commit, is_sha256
from mirror.progress import VERBOSE, NullProgress, ProgressSink
from mirror.repo import RepoKey, RevisionRequest
from mirror.retry import RetryPolicy, with_retries
from mirror.settings import Settings
from mirror.snapshot import FileRecord, ListedFile, Snapshot
from mirror.sources import RemoteFile, RemoteSnapshot, Source, check_listing, open_source
from mirror.store import Store
from mirror.transfer import SEGMENTS, Expected, Fetched, download

log = logging.getLogger(__name__)

SourceFactory = Callable[[RevisionRequest], Source]
K = TypeVar("K")

POLL = 0.2  # seconds between the main thread's looks at the stop flag
GRACE = 1.0  # seconds a stopped run still gives the transfers in flight to end and save their state


@dataclass(frozen=True)
class Target:
    """One revision of one repo, with every request for it (their filters are united; the first says where
    to ask).

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
    recorded: bool = False  # its snapshot and ref are in the store

    def to_json(self) -> dict[str, Any]:
        return {
            **self.target.key.to_json(),
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
    def exit_code(self) -> ExitCode:
        return combine(ExitCode.OK if i.error is None else i.error.exit_code for i in self.items)

    @property
    def error(self) -> str | None:
        """One line on what went wrong, for a monitor; None when nothing did."""
        failed = self.failed
        if not failed:
            return None
        if len(failed) == 1:
            return str(failed[0].error)
        return f"{len(failed)} of {len(self.items)} model revisions failed; the first: {failed[0].error}"

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": not self.failed,
            "exit_code": self.exit_code,
            "error": self.error,
            "items": [i.to_json() for i in self.items],
        }


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


def locked_revisions(report: SyncReport) -> list[LockedRevision]:
    """What a lock file records of a sync: each successful revision's commit and files."""
    return [
        LockedRevision(
            key=item.target.key,
            revision=item.target.revision,
            commit=item.commit,
            files=tuple(LockedFile(f.path, f.size, f.sha256) for f in item.records),
            endpoint=item.target.requests[0].endpoint,
            token_env=item.target.requests[0].token_env,
        )
        for item in report.items
        if item.error is None and item.commit is not None
    ]


def default_source_factory(settings: Settings) -> SourceFactory:
    cache: dict[tuple[str, str | None, str | None], Source] = {}

    def factory(request: RevisionRequest) -> Source:
        cache_key = (request.key.source, request.endpoint, request.token_env)
        if cache_key not in cache:
            cache[cache_key] = open_source(
                request.key.source, settings, endpoint=request.endpoint, token_env=request.token_env
            )
        return cache[cache_key]

    return factory


def sync(
    store: Store,
    targets: Sequence[Target],
    sources: SourceFactory,
    *,
    policy: RetryPolicy,
    workers: int = 8,
    progress: ProgressSink | None = None,
    wait: float = 0.0,
    segments: int = SEGMENTS,
) -> SyncReport:
    """Bring the store up to date with the targets; never raises for one item's failure.

    Once `policy.stop` is set (Ctrl-C), the run ends within about a second, whatever is in flight: the
    revisions complete by then are recorded, partial downloads stay in the store's tmp/ for the next run to
    resume, and every other revision fails with Interrupted (exit 130). The time of the run (retries, that
    second, when a revision was synced) is `policy.clock`'s.
    """
    progress = progress or NullProgress()
    report = SyncReport([ItemResult(t) for t in targets])
    for target in targets:
        try:
            # Make each hub's client once, here: its imports are slow under threads.
            sources(target.requests[0])
        except UsageError:
            raise  # a malformed endpoint is the user's to fix, before the store is touched (exit 2)
        except Exception:  # noqa: BLE001 - a source that cannot be made fails its revisions in _resolve
            continue
    with store.lock(wait, policy.stop):
        pool = ThreadPoolExecutor(max_workers=max(1, workers))
        try:
            _run(store, report, sources, pool, policy, progress, segments)
        except KeyboardInterrupt:
            policy.stop.set()  # the caller's own Ctrl-C: the transfers stop too
            raise
        finally:
            # A stopped run does not wait for a transfer blocked in a read: its bytes so far are on disk.
            pool.shutdown(wait=not policy.stop.is_set(), cancel_futures=True)
    if policy.stop.is_set():
        for item in report.items:
            if not item.recorded and (item.error is None or isinstance(item.error, Interrupted)):
                item.error = Interrupted(
                    f"{item.target}: interrupted before it was complete; its partial downloads are kept for "
                    "the next run"
                )
    return report


def _run(
    store: Store,
    report: SyncReport,
    sources: SourceFactory,
    pool: ThreadPoolExecutor,
    policy: RetryPolicy,
    progress: ProgressSink,
    segments: int,
) -> None:
    """Resolve every target, plan what is missing, fetch it, and record each revision once its files are in."""
    budget = threading.Semaphore(segments)  # ranged connections shared by the large files in flight
    resolving = {
        pool.submit(_resolve, store, i.target, sources, policy): n for n, i in enumerate(report.items)
    }
    resolved = {n: future.result() for future, n in _completed(resolving, policy)}
    known = Known(store)
    judged: dict[str, bool] = {}  # sha256 -> whether the store's copy can be used
    fetches: dict[str, Fetch] = {}
    wanted: dict[int, list[RemoteFile]] = {}
    needs: dict[int, set[str]] = {}  # each revision's downloads still to come, by key
    for index, answer in sorted(resolved.items()):
        item = report.items[index]
        if isinstance(answer, MirrorError):
            item.error = answer
            continue
        try:
            wanted[index], needs[index] = _plan(store, item, answer, known, fetches, judged)
        except Exception as e:  # noqa: BLE001 - a revision that cannot be planned (an odd store record) fails alone
            item.error = _failed(e, str(item.target))
    total = sum(fetch.file.size for fetch in fetches.values())
    check_free_space(store, total)
    if fetches:
        log.info("downloading %d files, %d bytes", len(fetches), total)
    results: dict[str, Fetched | MirrorError] = {}

    def record_when_complete(index: int) -> None:
        if not needs[index]:
            item = report.items[index]
            try:
                now = policy.clock.now_iso()
                _record(store, item, resolved[index], wanted[index], fetches, results, known, now)
            except Exception as e:  # noqa: BLE001 - a revision that cannot be recorded fails alone
                item.error = _failed(e, str(item.target))

    for index in wanted:
        record_when_complete(index)
    progress.start(total, "sync")
    try:
        running = {
            pool.submit(_fetch, store, sources, fetch, policy, progress, segments, budget): key
            for key, fetch in fetches.items()
        }
        for future, key in _completed(running, policy):
            results[key] = future.result()
            for index, keys in needs.items():
                if key in keys:
                    keys.discard(key)
                    record_when_complete(index)
    finally:
        progress.close()


def _plan(
    store: Store,
    item: ItemResult,
    answer: Resolved,
    known: Known,
    fetches: dict[str, Fetch],
    judged: dict[str, bool],
) -> tuple[list[RemoteFile], set[str]]:
    """A revision's wanted files and the keys of those to download (added to `fetches`, one per content)."""
    remote, prior = answer.remote, answer.prior
    item.commit = remote.commit
    if prior is not None:
        known.add(prior)
    wanted = [f for f in remote.files if item.target.wants(f.path)]
    needs = set()
    for f in wanted:
        sha = item.target.pinned_sha256(f.path) or f.sha256 or known.sha256_of(f.oid)
        if sha is None or not _held(store, item.target, f, sha, judged):
            fetch = Fetch(item.target, remote.commit, f)
            fetches.setdefault(fetch.expected.key, fetch)
            needs.add(fetch.expected.key)
    _log_plan(item, remote, wanted, needs, fetches)
    return wanted, needs


def _completed(futures: dict[Future[Any], K], policy: RetryPolicy) -> Iterator[tuple[Future[Any], K]]:
    """(future, tag) as each future completes. Once `policy.stop` is set, only those that complete within
    GRACE seconds more (on the policy's clock): a transfer blocked in a read is not waited for."""
    pending = set(futures)
    deadline: float | None = None
    clock = policy.clock
    while pending:
        if deadline is None and policy.stop.is_set():
            deadline = clock.monotonic() + GRACE
        timeout = POLL if deadline is None else max(0.0, deadline - clock.monotonic())
        done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            yield future, futures[future]
        if deadline is not None and clock.monotonic() >= deadline:
            return


def _log_plan(
    item: ItemResult,
    remote: RemoteSnapshot,
    files: list[RemoteFile],
    keys: set[str],
    fetches: dict[str, Fetch],
) -> None:
    """-v: what a revision will fetch and what the store already holds of it."""
    if not log.isEnabledFor(VERBOSE):
        return
    fetched = sum(fetches[k].file.size for k in keys)
    held = [f for f in files if Fetch(item.target, remote.commit, f).expected.key not in keys]
    log.log(
        VERBOSE,
        "%s: commit %s: %d of %d files wanted; %d to fetch (%d bytes), %d already in the store (%d bytes)",
        item.target,
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
    try:
        source = sources(target.requests[0])
        resolved = with_retries(lambda: _listing(store, target, source), policy, str(target))
        check_listing(resolved.remote, str(target))
        if target.pinned_commit is not None:
            _check_pins(target, resolved.remote)
        return resolved
    except Exception as e:  # noqa: BLE001 - whatever it is, it fails this revision alone
        return _failed(e, str(target))


def _failed(error: Exception, where: str) -> MirrorError:
    """An error while fetching one revision, as the MirrorError that fails it: ours as they are, anything
    else (a library's surprise, a bug) named by its type."""
    if not isinstance(error, MirrorError):
        log.debug("%s: unexpected error", where, exc_info=error)
        error = MirrorError(f"{where}: unexpected {type(error).__name__}: {error}")
    if not isinstance(error, Interrupted):
        log.error("%s", error)
    return error


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
        request = sources(fetch.target.requests[0]).file_request(
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
    except Exception as e:  # noqa: BLE001 - whatever it is, it fails the revisions that want this file alone
        return _failed(e, fetch.expected.label)


def _record(
    store: Store,
    item: ItemResult,
    resolved: Resolved | MirrorError,
    files: list[RemoteFile],
    fetches: dict[str, Fetch],
    results: dict[str, Fetched | MirrorError],
    known: Known,
    synced_at: str,
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
        log.log(VERBOSE, "%s: not recorded: %s", item.target, item.error)
        return
    snap = Snapshot(
        source=item.target.key.source,
        repo_type=item.target.key.repo_type,
        repo_id=item.target.key.repo_id,
        commit=remote.commit,
        files=tuple(records),
        complete=len(files) == len(remote.files),
        synced_at=synced_at,
        listing=remote_listing(remote) if len(files) != len(remote.files) else None,
    )
    store.write_snapshot(snap)
    store.set_refs(item.target.key, {item.target.revision: remote.commit}, snap.synced_at)
    item.recorded = True
    log.log(
        VERBOSE,
        "%s: recorded commit %s (%d files, %d downloaded, %d bytes)",
        item.target,
        remote.commit,
        len(records),
        item.downloaded,
        item.bytes_downloaded,
    )


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
