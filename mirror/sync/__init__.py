"""`mirror sync`: plan what the manifests want against what the store holds, then fetch only what is missing.

Each model revision succeeds or fails on its own: any error while fetching it (of the hub, of the network or
an unexpected one) keeps the revision's last good snapshot and does not stop the others. Each revision is
recorded as soon as its files are in, so a run that is stopped (Ctrl-C, SIGTERM) keeps every revision it
completed, and its partial downloads for the next run.

The modules: `plan` the targets (from manifest requests or a lock file), what the store already holds and
what to fetch; `resolve` asks the hubs what each revision is now; `run` is the worker pool that resolves,
fetches and records (`sync`); `report` what the run did, its JSON, exit code and lock-file records.
"""

from mirror.sync.plan import Target, plan_locked, plan_targets
from mirror.sync.report import ItemResult, SyncReport, locked_revisions
from mirror.sync.resolve import SourceFactory, default_source_factory
from mirror.sync.run import remote_listing, sync

__all__ = [
    "ItemResult",
    "SourceFactory",
    "SyncReport",
    "Target",
    "default_source_factory",
    "locked_revisions",
    "plan_locked",
    "plan_targets",
    "remote_listing",
    "sync",
]
