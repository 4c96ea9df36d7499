"""`mirror gc`: remove the snapshots and blobs that nothing the operator names still references, and what
killed runs left in the store's storage (`Storage.clean_abandoned`: partial downloads, staged imports,
temporary and incomplete multipart uploads) untouched for `ABANDONED` seconds."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mirror.lockfile import LockedRevision
from mirror.paths import is_commit
from mirror.records import FieldsJson
from mirror.repo import RepoKey, RevisionRequest
from mirror.store import Store

# A partial download is kept for the next sync to resume; one untouched for a day is taken as abandoned
# (gc holds the writer lock, so no run of this store is writing it now).
ABANDONED = 24 * 3600.0


@dataclass
class GcReport(FieldsJson):
    dry_run: bool
    refs: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    bytes: int = 0
    abandoned: list[str] = field(default_factory=list)


def plan_keep(
    store: Store, requests: Iterable[RevisionRequest] | None, locks: Iterable[LockedRevision] = ()
) -> dict[RepoKey, dict[str, str]]:
    """repo -> {revision name: commit} to keep. With no requests (None) and no locks, every ref the store
    holds."""
    keep: dict[RepoKey, dict[str, str]] = {}
    if requests is None:
        for key in store.repos():
            keep[key] = {name: ref.commit for name, ref in store.read_refs(key).items()}
        return keep
    for request in requests:
        key, revision = request.key, request.revision
        refs = store.read_refs(key)
        if revision in refs:
            keep.setdefault(key, {})[revision] = refs[revision].commit
        elif is_commit(revision):
            keep.setdefault(key, {})[revision] = revision
    for locked in locks:
        keep.setdefault(locked.key, {})[locked.revision] = locked.commit
    return keep


def _no_step() -> None:
    pass


def collect_garbage(
    store: Store,
    keep: dict[RepoKey, dict[str, str]],
    *,
    dry_run: bool,
    step: Callable[[], None] = _no_step,
) -> GcReport:
    """Drop refs, snapshots and blobs outside `keep`; with dry_run, only report them. Hold the store lock.

    Everything is planned first, then removed in the order that keeps the store whole at every moment,
    so a gc killed anywhere leaves a store that `verify` and `export` accept (and a rerun finishes the
    job): the refs first, then the snapshot records no kept ref points at, then the blobs no kept record
    uses; last what killed runs abandoned (`ABANDONED`). `step` is called before each removal (a test
    kills the process there).
    """
    report = GcReport(dry_run=dry_run)
    live_blobs: set[str] = set()
    gone_refs: dict[RepoKey, list[str]] = {}
    gone_snapshots: list[tuple[RepoKey, str]] = []
    for key in store.repos():
        kept = keep.get(key, {})
        names = [name for name, ref in store.read_refs(key).items() if kept.get(name) != ref.commit]
        if names:
            gone_refs[key] = names
        report.refs += [f"{key}@{name}" for name in names]
        for snap in store.snapshots(key):
            if snap.commit in kept.values():
                live_blobs.update(f.sha256 for f in snap.files)
            else:
                gone_snapshots.append((key, snap.commit))
                report.snapshots.append(f"{key}@{snap.commit}")
    gone_blobs: list[str] = []
    for sha256, blob in store.iter_blobs():
        if sha256 not in live_blobs:
            st = store.storage.stat(blob)
            gone_blobs.append(blob)
            report.blobs.append(sha256)
            report.bytes += st.size if st is not None else 0
    if dry_run:
        return report
    for key, names in gone_refs.items():
        step()
        store.drop_refs(key, names)
    for key, commit in gone_snapshots:
        step()
        store.drop_snapshot(key, commit)
    for blob in gone_blobs:
        step()
        store.drop_blob(blob)
    report.abandoned = store.storage.clean_abandoned(ABANDONED)
    return report
