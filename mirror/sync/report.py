"""What a sync did: each revision's outcome (`ItemResult`), the run's (`SyncReport`) with its JSON and exit
code, and what a lock file records of it (`locked_revisions`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mirror.errors import Interrupted, MirrorError
from mirror.exits import ExitCode, combine
from mirror.lockfile import LockedFile, LockedRevision
from mirror.snapshot import FileRecord
from mirror.sync.plan import Target
from mirror.sync.scan import Checked, missing_words
from mirror.validate.policy import ruling_words

log = logging.getLogger(__name__)


@dataclass
class ItemResult:
    target: Target
    commit: str | None = None
    records: tuple[FileRecord, ...] = ()
    downloaded: int = 0
    bytes_downloaded: int = 0
    error: MirrorError | None = None
    recorded: bool = False  # its snapshot and ref are in the store
    checked: Checked | None = None  # what the checks said of it, once its files were in

    @property
    def warnings(self) -> list[str]:
        """What a report says besides the outcome: each finding the policy warned about, each repo the
        revision's auto_map refers to that the sync does not hold."""
        if self.checked is None:
            return []
        return [
            *(ruling_words(r) for r in self.checked.verdict.warned),
            *missing_words(self.target, self.checked.missing_repos),
        ]

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
            "warnings": self.warnings,
            "scan": self.checked.to_json() if self.checked else None,
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


def failure(error: Exception, where: str) -> MirrorError:
    """An error while fetching one revision, as the MirrorError that fails it: ours as they are, anything
    else (a library's surprise, a bug) named by its type."""
    if not isinstance(error, MirrorError):
        log.debug("%s: unexpected error", where, exc_info=error)
        error = MirrorError(f"{where}: unexpected {type(error).__name__}: {error}")
    if not isinstance(error, Interrupted):
        log.error("%s", error)
    return error
