"""What `mirror serve` refuses to serve (`--policy FILE`, else the default policy), and why: the policy's
verdict on the scan of each commit.

The scan of a commit is the one the store records (`mirror sync` writes it, and `mirror import --layout
store`), used when it covers exactly the commit's files (`recorded_scan`); else the server scans the blobs
it holds of the commit itself (`scan_revision`: headers and pickles, the config files and the README),
once per process: what it found is kept while the commit's files are the same, even when the view reads the
record again (over a bucket, every `RECORD_TTL` seconds). A scan of its own cannot know the hub's scan
(`hub_flagged`), which only a recorded scan carries.

A file the policy denies a finding of is refused; a finding of the revision as a whole (path "": a licence
outside the allowlist, a size over max_size) refuses every file of the commit. A file only warned about is
served. A commit whose blobs cannot be read to be scanned is refused as a whole, and scanned again at the
next request: only what is known to be safe is served.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mirror.errors import MirrorError
from mirror.repo import RepoKey
from mirror.snapshot import Snapshot
from mirror.validate.findings import Finding
from mirror.validate.policy import Policy, Ruling, Verdict, ruling_words
from mirror.validate.scan import RevisionScan, recorded_scan, scan_blobs

if TYPE_CHECKING:
    from mirror.serve.view import StoreView

KEPT = 4096  # commits whose verdict is kept (forgotten all at once past this)
UNSCANNABLE = "what cannot be scanned is refused"  # the rule of a commit whose blobs could not be read


class Judged:
    """The policy's verdict on one commit, and the rulings that refuse each file."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self._by_path: dict[str, tuple[Ruling, ...]] = {}
        for ruling in verdict.denied:
            path = ruling.finding.path
            self._by_path[path] = (*self._by_path.get(path, ()), ruling)

    @property
    def whole(self) -> tuple[Ruling, ...]:
        """What refuses the revision as a whole (every file of it)."""
        return self._by_path.get("", ())

    def refusing(self, path: str) -> tuple[Ruling, ...]:
        """What refuses the file `path`: its own denied findings and the revision's; () when it is served."""
        return (*self._by_path.get(path, ()), *self.whole) if path else ()

    def reason(self, path: str) -> str | None:
        """Why the file is refused, as the 403 says it; None when it is served."""
        rulings = self.refusing(path)
        if not rulings:
            return None
        return "refused by the policy of this server: " + "; ".join(ruling_words(r) for r in rulings)


class Policing:
    """The policy's verdicts on the commits of a store view; safe to share between threads."""

    def __init__(self, view: StoreView, policy: Policy) -> None:
        self.view = view
        self.policy = policy
        self._lock = threading.Lock()
        # (key, commit) -> (the snapshot and scan record judged, by identity; the verdict)
        self._judged: dict[tuple[RepoKey, str], tuple[Snapshot, Any, Judged]] = {}
        # (key, commit) -> (the files scanned, path -> sha256; the server's own scan of them)
        self._scans: dict[tuple[RepoKey, str], tuple[dict[str, str], RevisionScan]] = {}
        self._scanning: dict[tuple[RepoKey, str], threading.Lock] = {}  # one scan of a commit at a time

    def judged(self, key: RepoKey, commit: str, *, scan: bool = True) -> Judged | None:
        """The verdict on the commit (None when the store has no record of it). When the server must scan
        the commit itself and `scan` is False, `Unscanned` is raised instead (the caller, on the event loop,
        asks again in a worker thread)."""
        snap = self.view.snapshot(key, commit)
        if snap is None:
            return None
        record = self.view.scan_record(key, commit)  # the same object while its file is unchanged
        with self._lock:
            cached = self._judged.get((key, commit))
        if cached is not None and cached[0] is snap and cached[1] is record:
            return cached[2]
        covered = {f.path: f.sha256 for f in snap.files}
        found = recorded_scan(record, snap.files)
        revision = found[0] if found is not None else self._kept(key, commit, covered)
        if revision is None:
            if not scan:
                raise Unscanned(key, commit)
            try:
                revision = self._own_scan(key, commit, snap, covered)
            except (OSError, MirrorError) as e:
                return Judged(Verdict(denied=(_unscannable(e),)))  # not kept: tried again
        judged = Judged(revision.verdict(self.policy))
        with self._lock:
            if len(self._judged) >= KEPT:
                self._judged.clear()
            self._judged[key, commit] = (snap, record, judged)
        return judged

    def reason(self, key: RepoKey, commit: str, path: str, *, scan: bool = True) -> str | None:
        """Why the file `path` of the commit is refused; None when it may be served (`judged`)."""
        judged = self.judged(key, commit, scan=scan)
        return judged.reason(path) if judged is not None else None

    def _kept(self, key: RepoKey, commit: str, covered: dict[str, str]) -> RevisionScan | None:
        """The server's own scan of the commit, when it was made of these files."""
        with self._lock:
            kept = self._scans.get((key, commit))
        return kept[1] if kept is not None and kept[0] == covered else None

    def _own_scan(self, key: RepoKey, commit: str, snap: Snapshot, covered: dict[str, str]) -> RevisionScan:
        """The server's scan of the blobs it holds of the commit, made once for these files."""
        with self._lock:
            guard = self._scanning.setdefault((key, commit), threading.Lock())
        with guard:
            kept = self._kept(key, commit, covered)  # made while this thread waited
            if kept is not None:
                return kept
            try:
                return self._scan(key, commit, snap, covered)
            finally:
                with self._lock:
                    self._scanning.pop((key, commit), None)  # a thread still waiting holds its own reference

    def _scan(self, key: RepoKey, commit: str, snap: Snapshot, covered: dict[str, str]) -> RevisionScan:
        store = self.view.store
        # a pickle in a bucket is spooled to disk to be read (it seeks): into the storage's local
        # staging folder, never into the served folder (a server may not write there)
        temp_dir: Path | None = store.storage.staging() if store.local_root is None else None
        revision = scan_blobs(store.open_blob, [f for f in snap.files if self.view.holds(f)], temp_dir)
        with self._lock:
            if len(self._scans) >= KEPT:
                self._scans.clear()
            self._scans[key, commit] = (covered, revision)
        return revision


class Unscanned(Exception):
    """The commit has no scan the server may use yet: it must scan it (`Policing.judged(scan=True)`)."""

    def __init__(self, key: RepoKey, commit: str) -> None:
        super().__init__(f"{key}@{commit} is not scanned yet")
        self.key, self.commit = key, commit


def _unscannable(error: Exception) -> Ruling:
    finding = Finding("", "invalid", f"the server could not read its files to scan them ({error})")
    return Ruling(finding, UNSCANNABLE)
