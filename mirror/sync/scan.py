"""The checks a sync runs on a revision once its files are in the store and verified, before its refs move:
the validation scan of its blobs (`mirror.validate.scan`) with the hub's own scan beside it, recorded in the
store (`Store.write_scan`, one record per commit), then judged by the revision's policy.

A commit's files never change, so its recorded scan is used again while it covers the same files: an
unchanged revision is neither read nor asked about again (a no-op re-sync costs no hub request more),
only judged again, by the policy of this run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.errors import PolicyDenied
from mirror.snapshot import FileRecord
from mirror.sources.hub_scan import HubScan
from mirror.store import Store
from mirror.sync.plan import Target
from mirror.validate.policy import Verdict, ruling_words
from mirror.validate.scan import RevisionScan, ScannedRevision, recorded_scan, scan_blobs, scan_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checked:
    """What the checks said of a revision: its scan (recorded, or made now), the verdict of its policy, the
    repos its auto_map refers to that this sync does not hold, and notes on the hub's scan."""

    scan: RevisionScan
    verdict: Verdict
    missing_repos: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    scanned: bool = True  # False: the scan recorded by an earlier sync was used

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.to_json(),
            "repos": list(self.scan.repos),
            "licenses": list(self.scan.licenses),
            "missing_repos": list(self.missing_repos),
            "scan_notes": list(self.notes),
            "scanned": self.scanned,
        }


def check_revision(
    store: Store,
    target: Target,
    commit: str,
    files: Sequence[FileRecord],
    hub_scan: Callable[[], HubScan],
    synced: Collection[str],
    temp_dir: Path | None = None,
) -> Checked:
    """Scan (or take the recorded scan of) the revision's `files` at `commit`, and judge it by the target's
    policy. `hub_scan` asks the hub for its own scan (only when the revision is scanned now); `synced` are
    the repo ids this sync holds (an auto_map naming another repo is said)."""
    key = target.key
    recorded = recorded_scan(store.read_scan(key, commit), files)
    if recorded is not None:
        scan, notes = recorded
        scanned = False
    else:
        scan = scan_blobs(store.open_blob, files, temp_dir)
        hub = hub_scan()
        scan = scan.with_findings(hub.findings)
        notes = hub.notes
        store.write_scan(key, commit, scan_record(files, scan, notes))
        scanned = True
    judged = ScannedRevision.judge(key, commit, scan, target.policy, synced)
    checked = Checked(scan, judged.verdict, judged.missing_repos, notes, scanned)
    _log(target, checked)
    return checked


def _log(target: Target, checked: Checked) -> None:
    for ruling in checked.verdict.warned:
        log.warning("%s: %s", target, ruling_words(ruling))
    for line in missing_words(target, checked.missing_repos):
        log.warning("%s", line)
    for note in checked.notes:
        log.info("%s", note)


def missing_words(target: Target, repos: Sequence[str]) -> list[str]:
    """What a report says of each repo the auto_map refers to that the sync does not hold."""
    return [
        f"auto_map of {target.key.repo_id} refers to {repo}, which this manifest does not sync: the model will "
        "not load offline"
        for repo in repos
    ]


def denial(target: Target, commit: str, verdict: Verdict) -> PolicyDenied:
    """The error that fails a revision its policy denies, naming each file, finding and rule."""
    return PolicyDenied(
        f"{target}: commit {commit} is refused by the policy, its refs are not moved: "
        + verdict.denied_words()
    )
