"""`mirror sync`: plan what the manifests want against what the store holds, then fetch only what is missing.

Each model revision succeeds or fails on its own: a failure keeps the revision's last good snapshot and does
not stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mirror.errors import IntegrityError, MirrorError
from mirror.manifest import ModelSpec
from mirror.paths import check_commit, check_relpath
from mirror.progress import NullProgress, ProgressSink
from mirror.retry import RetryPolicy, with_retries
from mirror.settings import Settings
from mirror.snapshot import FileRecord, Snapshot
from mirror.sources import RemoteFile, RemoteSnapshot, Source, open_source
from mirror.store import RepoKey, Store, utc_now
from mirror.transfer import Expected, download

log = logging.getLogger("mirror")

SourceFactory = Callable[[ModelSpec], Source]


@dataclass(frozen=True)
class Target:
    """One revision of one repo, with every manifest entry that asks for it (their filters are united)."""

    key: RepoKey
    revision: str
    specs: tuple[ModelSpec, ...]

    def wants(self, path: str) -> bool:
        return any(spec.wants(path) for spec in self.specs)

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
        return Expected(
            label=f"{self.target}:{self.file.path}",
            size=self.file.size,
            sha256=self.file.sha256,
            git_sha1=None if self.file.sha256 else self.file.oid,
        )


@dataclass
class ItemResult:
    target: Target
    commit: str | None = None
    files: int = 0
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
            "files": self.files,
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
    specs: Sequence[ModelSpec],
    sources: SourceFactory,
    *,
    workers: int = 8,
    policy: RetryPolicy | None = None,
    progress: ProgressSink | None = None,
    wait: float = 0.0,
) -> SyncReport:
    """Bring the store up to date with the specs; never raises for one item's failure."""
    policy = policy or RetryPolicy()
    progress = progress or NullProgress()
    targets = plan_targets(specs)
    report = SyncReport([ItemResult(t) for t in targets])
    with store.lock(wait), ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        remotes = list(pool.map(lambda t: _resolve(t, sources, policy), targets))
        known = _known_sha256(store)
        fetches: dict[str, Fetch] = {}
        wanted: dict[int, list[RemoteFile]] = {}
        for index, (item, remote) in enumerate(zip(report.items, remotes, strict=True)):
            if isinstance(remote, MirrorError):
                item.error = remote
                continue
            item.commit = remote.commit
            wanted[index] = [f for f in remote.files if item.target.wants(f.path)]
            for f in wanted[index]:
                sha = f.sha256 or (known.get(f.oid) if f.oid else None)
                if sha is None or not store.has_blob(sha, f.size):
                    fetch = Fetch(item.target, remote.commit, f)
                    fetches.setdefault(fetch.expected.key, fetch)
        total = sum(fetch.file.size for fetch in fetches.values())
        if fetches:
            log.info("downloading %d files, %d bytes", len(fetches), total)
        progress.start(total, "sync")
        try:
            results = dict(
                zip(
                    fetches,
                    pool.map(lambda fetch: _fetch(store, sources, fetch, policy, progress), fetches.values()),
                    strict=True,
                )
            )
        finally:
            progress.close()
        for index, files in wanted.items():
            _record(store, report.items[index], remotes[index], files, fetches, results, known)
    return report


def _resolve(target: Target, sources: SourceFactory, policy: RetryPolicy) -> RemoteSnapshot | MirrorError:
    source = sources(target.specs[0])
    try:
        remote = with_retries(
            lambda: source.resolve(target.key.repo_id, target.key.repo_type, target.revision),
            policy,
            str(target),
        )
        check_commit(remote.commit)
        for f in remote.files:
            check_relpath(f.path, f"file path from {target}")
        return remote
    except MirrorError as e:
        log.error("%s", e)
        return e


def _fetch(
    store: Store, sources: SourceFactory, fetch: Fetch, policy: RetryPolicy, progress: ProgressSink
) -> str | MirrorError:
    key = fetch.target.key
    try:
        request = sources(fetch.target.specs[0]).file_request(
            key.repo_id, key.repo_type, fetch.commit, fetch.file.path
        )
        return download(store, request, fetch.expected, policy=policy, progress=progress.update)
    except MirrorError as e:
        log.error("%s", e)
        return e


def _record(
    store: Store,
    item: ItemResult,
    remote: RemoteSnapshot | MirrorError,
    files: list[RemoteFile],
    fetches: dict[str, Fetch],
    results: dict[str, str | MirrorError],
    known: dict[str, str],
) -> None:
    assert isinstance(remote, RemoteSnapshot)
    records: list[FileRecord] = []
    for f in files:
        key = Fetch(item.target, remote.commit, f).expected.key
        outcome = results.get(key)
        if isinstance(outcome, MirrorError):
            item.error = outcome
            continue
        sha = outcome or f.sha256 or known[f.oid or ""]
        if outcome is not None and fetches[key].target is item.target:  # count each download once
            item.downloaded += 1
            item.bytes_downloaded += f.size
        records.append(FileRecord(path=f.path, size=f.size, sha256=sha, oid=f.oid or "", lfs=f.lfs))
    item.files = len(records)
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
    )
    store.write_snapshot(snap)
    store.set_refs(item.target.key, {item.target.revision: remote.commit}, snap.synced_at)


def _known_sha256(store: Store) -> dict[str, str]:
    """git oid -> sha256 of every non-LFS file the store already holds, so unchanged content is not fetched."""
    known: dict[str, str] = {}
    for key in store.repos():
        for snap in store.snapshots(key):
            for f in snap.files:
                if not f.lfs and f.oid:
                    known[f.oid] = f.sha256
    return known
