"""The far side's own checks at import: every revision an import is about to publish is scanned
(`mirror.validate.scan`, the same engine as `mirror sync` and `mirror scan`) from its verified content (the
staged copy, or the target's own for content it keeps in place), and judged by the import's policy: the
default policy unless `mirror import --policy FILE`. The far side never takes the near side's word: the
only findings taken from the bundle are those that cannot be re-derived offline (`carried_findings`).

A bundle (or the volumes given of a set) is one unit: when the policy denies any revision, nothing of it is
published and the target is left as it was (`PolicyRefused`, exit 4), the error naming every repo, commit,
file, finding and rule.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import BinaryIO

from mirror.bundle import IndexedCommit, IndexedRepo
from mirror.errors import IntegrityError
from mirror.layouts.layout import Layout
from mirror.repo import RepoKey
from mirror.report import ImportReport
from mirror.scanning import Scanned, judged, open_file
from mirror.validate.findings import Finding
from mirror.validate.policy import Policy, ruling_words
from mirror.validate.scan import ScannedRevision, scan_blobs

log = logging.getLogger(__name__)


class PolicyRefused(IntegrityError):
    """The import's policy denies a revision of the bundle, so nothing of it was published; `report` holds
    each revision's verdict (`ImportReport.revisions`) and no repo."""

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report


def carried_findings(commit: IndexedCommit) -> tuple[Finding, ...]:
    """The findings the bundle carries for `commit` that cannot be re-derived offline: those of kind
    `hub_flagged` (the hub's own scan, asked at sync; behind the gap there is no hub to ask). Every other
    finding is the far side's own scan. A bundle of format 1.2 carries the connected side's scan of each
    commit (`IndexedCommit.scan`); older bundles carry none, and then there is nothing to take."""
    if commit.scan is None:
        return ()
    return tuple(f for f in commit.scan.findings if f.kind == "hub_flagged")


def scan_to_publish(
    repos: Sequence[IndexedRepo],
    content: Mapping[str, Path],
    writer: Layout,
    policy: Policy,
    scratch: Mapping[RepoKey, Path],
) -> tuple[ScannedRevision, ...]:
    """Scan each commit of `repos` (the repos about to be published) from `content` (sha256 -> verified
    file in staging) or, for content the target keeps in place, the layout's own copy; with what the bundle
    carries (`carried_findings`), judged by `policy`. A pickle that needs a seekable copy is spooled in the
    repo's `scratch` (its staging folder). The warnings are logged."""
    found = []
    for repo in repos:
        for commit in repo.commits:
            scan = scan_blobs(partial(_open, content, writer), commit.files, scratch[repo.key])
            scan = scan.with_findings(carried_findings(commit))
            found.append(Scanned(repo.key, commit.commit, scan, ()))
    revisions = tuple(judged(str(writer.where), found, policy).revisions)
    for revision in revisions:
        for ruling in revision.verdict.warned:
            log.warning("%s@%s: %s", revision.repo, revision.commit, ruling_words(ruling))
    return revisions


def _open(content: Mapping[str, Path], writer: Layout, sha256: str) -> BinaryIO:
    """The verified content `sha256`: its staged copy, or the target's own (kept in place)."""
    staged = content.get(sha256)
    return open_file(staged) if staged is not None else writer.open_in_place(sha256)


def refusal(label: str, report: ImportReport) -> PolicyRefused:
    """The error refusing the unit `label` whose report has revisions the policy denies."""
    denied = [
        f"{r.repo}@{r.commit}: {ruling_words(ruling)}"
        for r in report.revisions
        for ruling in r.verdict.denied
    ]
    return PolicyRefused(
        f"{label} is refused by the import's policy, so nothing of it was imported ({report.target} is "
        f"unchanged); {len(denied)} finding(s) denied: " + "; ".join(denied) + ". Review the bundle with "
        "`mirror scan BUNDLE --policy FILE`; import it only under a policy that allows what it holds",
        report,
    )
