"""`mirror scan`, offline: the validation checks (`mirror.validate.scan`) run on every repo revision of a
store (every commit it records), of bundles (streamed once, verified as read) or of a tree an import wrote
(every revision its receipts list), each judged by a policy.

A bundle is read once, in archive order. A member one header check reads is checked as it streams by
(`MemberPipe`); a member some other check reads (a pickle: it seeks; a config file, the README; content
held under several names) is spooled to a temporary file (at most its size: disk, never memory) and
checked for every revision file that holds it (config files and the README kept on disk until the
revisions are assembled); the other members are only verified. What a bundle does not pack itself
(content a delta leaves in the target, pieces of a file split across volumes, files of another volume)
is reported as not scanned.
"""

from __future__ import annotations

import io
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from mirror.bundle import location, open_bundle
from mirror.bundle.reader import BundleFile
from mirror.errors import MirrorError
from mirror.repo import RepoKey
from mirror.snapshot import FileRecord
from mirror.storage.base import MISSING
from mirror.store import Store
from mirror.validate.findings import Finding
from mirror.validate.policy import Policy
from mirror.validate.scan import (
    SEEKS,
    MemberPipe,
    RevisionScan,
    ScanFile,
    ScannedRevision,
    checks_for,
    is_small_read,
    read_bound,
    read_small,
    revision_scan,
    scan_blobs,
    scan_file,
    scan_revision,
)


@dataclass
class ScanReport:
    """Every revision scanned from `scanned` (a store, bundles or a target), and the problems of the
    source itself (an unreadable receipt)."""

    scanned: str
    revisions: list[ScannedRevision] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the policy denies nothing and nothing is wrong with the source."""
        return not self.problems and all(r.verdict.ok for r in self.revisions)

    def to_json(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "ok": self.ok,
            "revisions": [r.to_json() for r in self.revisions],
            "problems": list(self.problems),
            "summary": {
                "revisions": len(self.revisions),
                "denied": sum(1 for r in self.revisions if not r.verdict.ok),
                "findings": sum(len(r.scan.findings) for r in self.revisions),
            },
        }


@dataclass(frozen=True)
class Scanned:
    """A repo revision's scan, not yet judged (`judged`), and what of it could not be read."""

    repo: RepoKey
    commit: str
    scan: RevisionScan
    unscanned: tuple[str, ...]


def judged(
    scanned: str, found: Sequence[Scanned], policy: Policy, problems: Sequence[str] = ()
) -> ScanReport:
    """The report of the revisions `found` (a store's, bundles', a tree's, or what an import is about to
    publish): each one's verdict by `policy`, and the referenced repos the scanned set does not hold."""
    held = {s.repo.repo_id for s in found}
    revisions = [
        ScannedRevision.judge(s.repo, s.commit, s.scan, policy, held, s.unscanned)
        for s in sorted(found, key=lambda s: (s.repo, s.commit))
    ]
    return ScanReport(scanned, revisions, list(problems))


def scan_store(store: Store, policy: Policy, temp_dir: Path | None = None) -> ScanReport:
    """Every commit the store records, of every repo (not only those a ref names), read blob by blob.
    MirrorError (exit 1) when the store does not exist."""
    if store.problem() == MISSING:
        raise MirrorError(
            f"the store {store} does not exist: nothing to scan (is --store or $MIRROR_STORE right?)"
        )
    found = []
    for key in store.repos():
        for snap in store.snapshots(key):
            held: list[FileRecord] = []
            missing: list[FileRecord] = []
            for f in snap.files:
                (held if store.has_blob(f.sha256, f.size) else missing).append(f)
            unscanned = tuple(f"{f.path}: missing from the store" for f in missing)
            scan = scan_blobs(store.open_blob, held, temp_dir or store.storage.staging())
            found.append(Scanned(key, snap.commit, scan, unscanned))
    return judged(str(store), found, policy)


def scan_target(layout: str, target: Path, policy: Policy, temp_dir: Path | None = None) -> ScanReport:
    """Every revision the receipts in `target` say an import wrote (the layouts' `expected_files`).
    MirrorError (exit 1) when the target holds no receipt at all."""
    from mirror.layouts import make_layout

    expected, problems = make_layout(layout, target).expected_files()
    if not expected and not problems:
        raise MirrorError(
            f"{target} holds no receipt of `mirror import --layout {layout}`: nothing to scan "
            "(is it the right --target and --layout?)"
        )
    revisions: dict[tuple[RepoKey, str], dict[str, ScanFile]] = defaultdict(dict)
    unscanned: dict[tuple[RepoKey, str], list[str]] = defaultdict(list)
    for f in expected:
        if f.repo is None:
            continue
        where = (f.repo, f.commit)
        if f.path.is_file():
            revisions[where][f.name] = ScanFile(f.name, f.size, partial(open_file, f.path))
        else:
            unscanned[where].append(f"{f.name}: missing from the target")
    found = [
        Scanned(key, commit, scan_revision(list(files.values()), temp_dir), tuple(unscanned[(key, commit)]))
        for (key, commit), files in revisions.items()
    ]
    found += [
        Scanned(key, commit, revision_scan({}, [], lambda _: None), tuple(paths))
        for (key, commit), paths in unscanned.items()
        if (key, commit) not in revisions
    ]
    return judged(str(target), found, policy, problems)


def open_file(path: Path) -> BinaryIO:
    """A `ScanFile.open` of a local file."""
    return path.open("rb")


Where = tuple[RepoKey, str]  # a repo revision: the repo and its commit


def scan_bundles(
    bundles: Sequence[location.BundlePath], policy: Policy, temp_dir: Path | None = None
) -> ScanReport:
    """Every repo commit of each bundle, streamed once and verified as read: IntegrityError (exit 4) when a
    bundle is damaged. Bundles are scanned one by one; a repo revision of several is reported for each."""
    found: list[Scanned] = []
    for bundle in bundles:
        found += _scan_bundle(bundle, temp_dir)
    return judged(", ".join(str(b) for b in bundles), found, policy)


def _scan_bundle(bundle: location.BundlePath, temp_dir: Path | None) -> list[Scanned]:
    with tempfile.TemporaryDirectory(dir=temp_dir, prefix="mirror-scan-") as kept:
        return _scan_bundle_in(bundle, Path(kept))


def _scan_bundle_in(bundle: location.BundlePath, spool_dir: Path) -> list[Scanned]:
    """One bundle, its members spooled in `spool_dir`: each deleted once checked, except the small files
    (config files, the README) kept there until their revisions are assembled, so memory stays flat."""
    with open_bundle(bundle) as reader:
        index = reader.index
        this = index.volume_set.volume if index.volume_set is not None else None
        sizes: dict[Where, dict[str, int]] = defaultdict(dict)
        unscanned: dict[Where, list[str]] = defaultdict(list)
        users: dict[str, list[tuple[Where, str]]] = defaultdict(list)  # content -> the files holding it
        for repo in index.repos:
            for c in repo.commits:
                where = (repo.key, c.commit)
                sizes.setdefault(where, {})  # every commit is reported, even one without files
                for f in c.files:
                    sizes[where][f.path] = f.size
                    placement = index.placement(f.sha256)
                    if placement.in_target:
                        unscanned[where].append(f"{f.path}: left in the target by this delta bundle")
                    elif placement.chunks:
                        unscanned[where].append(f"{f.path}: split into pieces across volumes")
                    elif placement.volume != this:
                        unscanned[where].append(f"{f.path}: packed in volume {placement.volume}")
                    else:
                        users[f.sha256].append((where, f.path))
        content: dict[Where, list[Finding]] = defaultdict(list)
        small: dict[tuple[Where, str], ScanFile] = {}
        for number, member in enumerate(reader.files()):
            holders = users.get(member.member.sha256, [])
            wanted = member.member.chunk is None and member.link_to is None
            if not wanted or not any(checks_for(p) or is_small_read(p) for _, p in holders):
                member.read()
                continue
            streamed = _streamable(holders)
            if streamed is not None:
                where, path = streamed
                content[where] += _scan_streaming(member, path, spool_dir)
                continue
            spool = spool_dir / str(number)
            with spool.open("wb") as sink:
                member.read(sink.write)
            kept = False
            for where, path in holders:
                file = ScanFile(path, member.member.size, partial(open_file, spool))
                content[where] += scan_file(file, spool_dir)
                if is_small_read(path) and file.size <= read_bound(path):
                    small[(where, path)] = file
                    kept = True
            if not kept:
                spool.unlink()
        return [
            Scanned(
                where[0],
                where[1],
                revision_scan(files, content[where], partial(_small, small, where)),
                tuple(unscanned[where]),
            )
            for where, files in sizes.items()
        ]


def _streamable(holders: Sequence[tuple[Where, str]]) -> tuple[Where, str] | None:
    """The one file a member's content is checked as, when that check reads forward only (a header) and no
    small file needs its bytes: then the member is checked as it streams, never spooled."""
    read = [(where, path) for where, path in holders if checks_for(path) or is_small_read(path)]
    if len(read) != 1 or is_small_read(read[0][1]) or any(c in SEEKS for c in checks_for(read[0][1])):
        return None
    return read[0]


def _scan_streaming(member: BundleFile, path: str, spool_dir: Path) -> list[Finding]:
    """Check a member as the bundle reader verifies it: the check reads a pipe on a thread of its own, fed
    by the reader (a few blocks at a time); what it leaves unread is only verified."""
    pipe = MemberPipe()
    file = ScanFile(path, member.member.size, lambda: io.BufferedReader(pipe))
    with ThreadPoolExecutor(1, thread_name_prefix="mirror-scan") as pool:
        checked = pool.submit(scan_file, file, spool_dir)
        try:
            member.read(pipe.feed)
        finally:
            pipe.end()
        return checked.result()


def _small(small: dict[tuple[Where, str], ScanFile], where: Where, path: str) -> bytes | None:
    file = small.get((where, path))
    return read_small(file) if file is not None else None
