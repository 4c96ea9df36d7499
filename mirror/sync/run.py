"""A sync's run: resolve and plan every target on a worker pool, fetch what is missing, record each revision
as soon as its files are in, and, once stopped, give the transfers in flight a short grace and no more."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from mirror.errors import Interrupted, MirrorError, UsageError
from mirror.paths import is_commit, is_sha256
from mirror.progress import VERBOSE, NullProgress, ProgressSink
from mirror.retry import RetryPolicy
from mirror.snapshot import FileRecord, ListedFile, Snapshot
from mirror.sources import RemoteFile, RemoteSnapshot, Source
from mirror.store import Store
from mirror.sync.plan import Fetch, Known, Resolved, Target, check_free_space, plan_revision
from mirror.sync.report import ItemResult, SyncReport, failure
from mirror.sync.resolve import SourceFactory, resolve
from mirror.sync.scan import check_revision, denial
from mirror.transfer import SEGMENTS, Fetched, download

log = logging.getLogger(__name__)

K = TypeVar("K")

POLL = 0.2  # seconds between the main thread's looks at the stop flag
GRACE = 1.0  # seconds a stopped run still gives the transfers in flight to end and save their state


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
        except Exception:  # noqa: BLE001 - a source that cannot be made fails its revisions in resolve
            continue
    with store.lock(wait, policy.stop):
        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mirror-sync")
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
        pool.submit(resolve, store, i.target, sources, policy): n for n, i in enumerate(report.items)
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
        item.commit = answer.remote.commit
        try:
            wanted[index], needs[index] = plan_revision(store, item.target, answer, known, fetches, judged)
        except Exception as e:  # noqa: BLE001 - a revision that cannot be planned (an odd store record) fails alone
            item.error = failure(e, str(item.target))
    total = sum(fetch.file.size for fetch in fetches.values())
    check_free_space(store, total)
    if fetches:
        log.info("downloading %d files, %d bytes", len(fetches), total)
    results: dict[str, Fetched | MirrorError] = {}
    synced = {i.target.key.repo_id for i in report.items}

    def record_when_complete(index: int) -> None:
        if not needs[index]:
            item = report.items[index]
            try:
                now = policy.clock.now_iso()
                source = sources(item.target.requests[0])
                _record(store, item, resolved[index], wanted[index], fetches, results, known, now)
                _check(store, item, source, synced, now)
            except Exception as e:  # noqa: BLE001 - a revision that cannot be recorded fails alone
                item.error = failure(e, str(item.target))

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
        return failure(e, fetch.expected.label)


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
    log.log(
        VERBOSE,
        "%s: recorded commit %s (%d files, %d downloaded, %d bytes)",
        item.target,
        remote.commit,
        len(records),
        item.downloaded,
        item.bytes_downloaded,
    )


def _check(store: Store, item: ItemResult, source: Source, synced: set[str], synced_at: str) -> None:
    """Run the checks on a recorded revision (`mirror.sync.scan`) and move its refs unless its policy
    denies it (then it fails alone, PolicyDenied)."""
    if item.error is not None:
        return
    commit, key = item.commit, item.target.key
    assert commit is not None
    item.checked = check_revision(
        store,
        item.target,
        commit,
        item.records,
        lambda: source.hub_scan(key.repo_id, key.repo_type, commit, (f.path for f in item.records)),
        synced,
        store.storage.staging(),
    )
    if not item.checked.verdict.ok:
        item.error = failure(denial(item.target, commit, item.checked.verdict), str(item.target))
        return
    store.set_refs(key, {item.target.revision: commit}, synced_at)
    item.recorded = True


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
