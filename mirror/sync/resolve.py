"""Asking the hubs: which source answers a request (`default_source_factory`, one client per hub, endpoint
and token) and what a target's revision is there now (`resolve`), checked against a lock file's pins."""

from __future__ import annotations

import logging
from collections.abc import Callable

from mirror.errors import IntegrityError, MirrorError, NotFoundError
from mirror.paths import check_commit
from mirror.repo import RevisionRequest
from mirror.retry import RetryPolicy, with_retries
from mirror.settings import Settings
from mirror.sources import RemoteFile, RemoteSnapshot, Source, check_listing, open_source
from mirror.store import Store
from mirror.sync.plan import Resolved, Target
from mirror.sync.report import failure

log = logging.getLogger(__name__)

SourceFactory = Callable[[RevisionRequest], Source]


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


def resolve(
    store: Store, target: Target, sources: SourceFactory, policy: RetryPolicy
) -> Resolved | MirrorError:
    """The target's revision as the hub has it now, or the error that fails it (never raises)."""
    try:
        source = sources(target.requests[0])
        resolved = with_retries(lambda: _listing(store, target, source), policy, str(target))
        check_listing(resolved.remote, str(target))
        if target.pinned_commit is not None:
            _check_pins(target, resolved.remote)
        return resolved
    except Exception as e:  # noqa: BLE001 - whatever it is, it fails this revision alone
        return failure(e, str(target))


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
