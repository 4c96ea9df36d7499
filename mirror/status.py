"""`mirror status`: what the store holds per model revision, and optionally whether upstream has moved."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mirror.errors import MirrorError
from mirror.repo import RepoKey
from mirror.retry import RetryPolicy, with_retries
from mirror.store import Store
from mirror.sync import SourceFactory, Target, plan_targets


@dataclass
class RevisionStatus:
    key: RepoKey
    revision: str
    commit: str | None
    synced_at: str | None
    files: int
    size: int
    upstream: str | None = None
    error: str | None = None

    @property
    def state(self) -> str:
        if self.error:
            return "error"
        if self.commit is None:
            return "not synced"
        if self.upstream is None:
            return "held"
        return "up to date" if self.upstream == self.commit else "upstream moved"

    def to_json(self) -> dict[str, Any]:
        return {
            **self.key.to_json(),
            "revision": self.revision,
            "commit": self.commit,
            "synced_at": self.synced_at,
            "files": self.files,
            "bytes": self.size,
            "upstream": self.upstream,
            "state": self.state,
            "error": self.error,
        }


def store_targets(store: Store) -> list[Target]:
    """Every revision the store holds, as targets (with the hubs' default endpoints and tokens)."""
    return plan_targets(store.requests())


def revision_status(
    store: Store,
    targets: Sequence[Target],
    *,
    upstream: tuple[SourceFactory, RetryPolicy] | None = None,
) -> list[RevisionStatus]:
    """One row per target: the commit held and its size; with `upstream` (the hubs, and the policy to retry
    them under), the commit upstream has now."""
    rows = []
    for target in targets:
        key, revision = target.key, target.revision
        ref = store.read_refs(key).get(revision)
        snap = store.read_snapshot(key, ref.commit) if ref else None
        rows.append(
            RevisionStatus(
                key=key,
                revision=revision,
                commit=ref.commit if ref else None,
                synced_at=ref.synced_at if ref else None,
                files=len(snap.files) if snap else 0,
                size=snap.size if snap else 0,
            )
        )
    if upstream is not None:
        source_for, policy = upstream

        def check(row: RevisionStatus, target: Target) -> None:
            source = source_for(target.requests[0])
            try:
                remote = with_retries(
                    lambda: source.resolve(row.key.repo_id, row.key.repo_type, row.revision),
                    policy,
                    str(target),
                )
                row.upstream = remote.commit
            except MirrorError as e:
                row.error = str(e)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(check, rows, targets))
    return rows
