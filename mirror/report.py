"""What an import did to a target (`ImportReport`, per repo `RepoReport` or `MissingRepo`), and the repos a
target holds (`HeldRepo`): typed records with their JSON and the import's exit code. Their human lines are
written by `mirror.cli.output`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mirror.errors import MirrorError
from mirror.exits import ExitCode, combine
from mirror.records import FieldsJson
from mirror.repo import RepoKey, revisions_json

if TYPE_CHECKING:
    from mirror.bundle.location import BundlePath
    from mirror.validate.scan import ScannedRevision


def repo_json(repo: RepoKey, revisions: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """How every import report names a repo and its revisions."""
    return {
        "repo": str(repo),
        **repo.to_json(),
        "revisions": revisions_json(revisions),
    }


@dataclass(frozen=True)
class RepoReport:
    """What an import did to one repo. `already_present`: nothing in the target changed.

    `kept` names the refs or folders left as they were because they are newer than this bundle (a newer
    bundle wrote them, or huggingface_hub moved a ref online).
    """

    repo: RepoKey
    path: Path | str  # str: an s3:// URL (a store in a bucket)
    revisions: tuple[tuple[str, str], ...]
    files_written: int
    bytes_written: int
    already_present: bool
    kept: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            **repo_json(self.repo, self.revisions),
            "path": str(self.path),
            "files_written": self.files_written,
            "bytes_written": self.bytes_written,
            "already_present": self.already_present,
            "kept_from_newer_bundle": list(self.kept),
        }


@dataclass(frozen=True)
class MissingFile(FieldsJson):
    """A file of a repo an import could not complete: where its content was to come from, and why it did not."""

    commit: str
    path: str
    size: int
    sha256: str
    why: str


@dataclass(frozen=True)
class MissingRepo:
    """A repo left unpublished (as it was in the target) because some of its content is not at hand."""

    repo: RepoKey
    revisions: tuple[tuple[str, str], ...]
    files: tuple[MissingFile, ...]
    volumes: tuple[str, ...]  # the volumes of the set still needed (not given, or damaged)

    def to_json(self) -> dict[str, Any]:
        return {
            **repo_json(self.repo, self.revisions),
            "needs_volumes": list(self.volumes),
            "missing_files": [f.to_json() for f in self.files],
        }


@dataclass(frozen=True)
class ImportReport:
    """What one import did (one bundle, or the volumes given of one set): its digest (a set's id) and, per
    repo, what was published; the repos left out for want of content, damaged volumes, and content the
    target should have held but holds damaged."""

    bundle: BundlePath
    bundle_id: str  # the sha256 of its index (of a volume set: the set's id)
    layout: str
    target: Path | str  # str: an s3:// URL (a store in a bucket)
    repos: tuple[RepoReport, ...]
    missing: tuple[MissingRepo, ...] = ()
    damaged: tuple[str, ...] = ()  # one message per damaged volume, naming it
    corrupt: tuple[str, ...] = ()  # one message per file of the target whose content is not what it should be
    volumes: tuple[str, ...] = ()  # the volumes imported (a volume set)
    kept: tuple[str, ...] = ()  # what of a volume set is kept in the target for its next volumes (kept.py)
    revisions: tuple[ScannedRevision, ...] = ()  # each revision to publish: its scan and the policy's verdict

    @property
    def refused(self) -> bool:
        """Whether the import's policy denied a revision, so that nothing of the bundle was published."""
        return any(not r.verdict.ok for r in self.revisions)

    @property
    def exit_code(self) -> ExitCode:
        """4 if anything was damaged or the policy refused the bundle, 3 if repos were left out for want of
        content, else 0."""
        if self.damaged or self.corrupt or self.refused:
            return ExitCode.INTEGRITY
        return ExitCode.PARTIAL if self.missing else ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "bundle": str(self.bundle),
            "bundle_id": self.bundle_id,
            "layout": self.layout,
            "target": str(self.target),
            "repos": [r.to_json() for r in self.repos],
            "refused_by_policy": self.refused,
            "revisions": [r.to_json() for r in self.revisions],
        }
        if self.volumes:
            data["volumes"] = list(self.volumes)
        if self.missing or self.damaged or self.corrupt:
            data["missing"] = [m.to_json() for m in self.missing]
            data["damaged"] = list(self.damaged)
            data["corrupt"] = list(self.corrupt)
        if self.kept:
            data["kept"] = list(self.kept)
        return data


@dataclass(frozen=True)
class ImportRun:
    """One `mirror import` of several bundles (or sets), each imported on its own: the report of each one
    imported, and the error of each one refused."""

    target: Path | str  # str: an s3:// URL (a store in a bucket)
    layout: str
    reports: tuple[ImportReport, ...]
    errors: tuple[MirrorError, ...] = ()

    @property
    def exit_code(self) -> ExitCode:
        return combine([*(r.exit_code for r in self.reports), *(e.exit_code for e in self.errors)])

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "target": str(self.target),
            "layout": self.layout,
            "bundles": [r.to_json() for r in self.reports],
        }
        if self.errors:
            data["errors"] = [str(error) for error in self.errors]
        return data


@dataclass(frozen=True)
class HeldRepo:
    """A repo a target holds, as far as its layout says: revision names -> commits (None where the layout
    does not record the commit) and the commits it has snapshots of."""

    repo_type: str
    repo_id: str
    revisions: tuple[tuple[str, str | None], ...]
    commits: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "repo_type": self.repo_type,
            "repo_id": self.repo_id,
            "revisions": dict(self.revisions),
            "commits": list(self.commits),
        }
