"""Carry out an import: check the target and the signatures, plan, then verify every volume given while
streaming it once into staging, and only then publish, repo by repo, through the layout.

Content the target already holds (in the repos the bundle names) is hashed and hardlinked into staging
instead of written again, so importing the same bundle twice writes nothing, and a damaged copy in the
target is found and replaced by the bundle's. Content that nothing given carries (a delta's, a volume's not
given) is taken from anywhere in the target (`held.TargetContent`), hashed first. Before anything is
written, the bytes the import will add are checked against the free space of the target's file system.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import replace
from pathlib import Path
from typing import TypedDict, Unpack

from mirror.bundle import BundleIndex, IndexedRepo, Progress
from mirror.bundle.location import BundlePath
from mirror.clock import Clock
from mirror.errors import IntegrityError, LockedError, MirrorError
from mirror.fsutil import is_file_of_size, link_or_copy
from mirror.hashing import HashCache
from mirror.importing.judge import refusal, scan_to_publish
from mirror.importing.plan import Gathered, ImportPlan, Kept, Space, TargetView, plan_import
from mirror.importing.staging import Staging
from mirror.importing.stream import VolumeStream
from mirror.importing.unit import ImportUnit, group_bundles
from mirror.layouts import make_layout
from mirror.layouts.held import TargetContent
from mirror.layouts.kept import KeptSet
from mirror.layouts.layout import Layout, Publication, Stamp, check_uses, no_checkpoint
from mirror.receipt import Receipt
from mirror.repo import RepoKey
from mirror.report import ImportReport, RepoReport
from mirror.signing import Acceptance, TrustPolicy, check_trust
from mirror.snapshot import FileRecord
from mirror.units import human_size
from mirror.validate.policy import DEFAULT_POLICY, Policy
from mirror.validate.scan import RevisionScan


class BundleImportError(IntegrityError):
    """Members of a bundle failed verification, so nothing of it was published; `report.repos` is empty."""

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report


class ImportOptions(TypedDict, total=False):
    """The keyword options of `import_unit`, for `import_bundle` to pass on."""

    progress: Progress | None
    trust: TrustPolicy | None
    symlinks: bool
    link_shared: bool
    wait: float
    clock: Clock | None
    checkpoint: Callable[[], None]
    policy: Policy
    threads: int


def import_bundle(
    bundle: BundlePath, layout: str, target: Path | str, **options: Unpack[ImportOptions]
) -> ImportReport:
    """Import one bundle (a plain bundle, a delta, or one volume of a set); see `import_unit`."""
    (unit,) = group_bundles([bundle])
    return import_unit(unit, layout, target, **options)


def import_unit(
    unit: ImportUnit,
    layout: str,
    target: Path | str,
    *,
    progress: Progress | None = None,
    trust: TrustPolicy | None = None,
    symlinks: bool = True,
    link_shared: bool = False,
    wait: float = 0.0,
    clock: Clock | None = None,
    checkpoint: Callable[[], None] = no_checkpoint,
    policy: Policy = DEFAULT_POLICY,
    threads: int = -1,
) -> ImportReport:
    """Verify everything given while streaming it once; only then publish, repo by repo, into `target`.

    A plain bundle or a delta is one unit: if any member is damaged or hostile, nothing of it is published
    and the target is left as it was (IntegrityError, or BundleImportError naming every member whose
    content did not match). Of a volume set, a damaged volume is dropped whole and named in the report,
    and the others still count. Each repo whose every file is at hand (verified from what was given, or,
    for content a delta or a volume not given leaves out, found anywhere in the target and hashed) is
    published; the others are left as they were and reported missing, with their files and the volumes
    still needed (`ImportReport.exit_code`: 3, or 4 when a volume or a file of the target was damaged).
    Repos in the target the bundle does not name are never touched. `progress` gets the compressed bytes
    read (the volumes' sizes are the total). `symlinks=False` (`--no-symlinks`) makes the hf layout write
    real files in snapshots/. Each repo gets its own copy of every file (revisions of one repo share a
    content, as the layout's own tools share it); `link_shared=True` (`--link-shared`) hardlinks equal files
    across repos (and --no-symlinks revisions) instead.

    One import at a time per target: another one into it makes this wait up to `wait` seconds of `clock`
    (needed when `wait` is not 0), then raise LockedError (exit 75); so does a store (`--layout store`)
    whose writer lock another mirror run holds (then `clock` is always needed: it stamps the lock).
    Before anything is written, every path the import will use in the target is checked (`check_uses`): a
    symlink or a file in the way of it is refused, and nothing is written.
    `checkpoint` is called after each step (a file staged, a name published): the tests kill the import
    there, to show that a killed import never leaves a broken tree.

    Before the first repo is published, every revision about to be published is scanned from its verified
    content and judged by `policy` (the far side's; `mirror.importing.judge`): if it denies any, nothing is
    published and the target is left as it was (PolicyRefused, exit 4, its report naming every finding and
    rule). The report carries each revision's verdict; warnings are logged. An import into a store records
    each published commit's scan there, as a sync does.

    `threads` (`--threads`): the worker threads that decompress the frames (-1: one per core).
    """
    if unit.error is not None:
        raise unit.error
    writer = make_layout(layout, target, symlinks=symlinks, link_shared=link_shared, checkpoint=checkpoint)

    def busy() -> LockedError:
        return LockedError(
            f"another mirror import is writing into {writer.where}; try again later or pass --wait SECONDS"
        )

    with Staging() as guard:
        guard.lock(writer.target, wait, busy, clock)
        with writer.writing(wait, clock):
            return _import_locked(unit, writer, progress, trust, checkpoint, policy, threads)


def _import_locked(
    unit: ImportUnit,
    writer: Layout,
    progress: Progress | None,
    trust: TrustPolicy | None,
    checkpoint: Callable[[], None],
    policy: Policy,
    threads: int,
) -> ImportReport:
    """`import_unit`, once it holds the target's lock."""
    index, target = unit.index, writer.target
    volume_set = index.volume_set
    hashes = HashCache()
    try:
        accepted = _check_trust(unit, writer, trust)
        writer.check(index)
        check_uses(target, (use for repo in index.repos for use in writer.uses(repo)))
        kept = KeptSet(writer, index, hashes) if volume_set is not None else None
        if kept is not None:  # what earlier imports of this set verified, checked again
            kept.load()
        plan = plan_import(index, unit.given, survey(writer, index), _kept_state(kept))
        check_space(unit.label, target, plan.space)
        with Staging() as staging:
            folders, home = _make_staging(staging, writer, index, kept)
            held = kept.held() if kept is not None else frozenset()
            pool: dict[str, Path] = dict(kept.whole) if kept else {}  # sha256 -> verified content
            in_place = {sha for sha in plan.from_target if writer.in_place(sha, plan.files[sha].size)}
            corrupt = _take_from_target(plan, writer, pool, home, hashes, checkpoint, in_place)
            stream = VolumeStream(
                index,
                pool,
                home,
                plan.to_stage(set(pool) | in_place),
                plan.held,
                hashes,
                kept,
                checkpoint,
                threads,
            )
            damaged, bad_volumes = _stream(unit, stream, writer, progress)
            damaged += stream.join_chunks()
            at_hand = frozenset(pool) | in_place
            gathered = Gathered(at_hand, stream.received, bad_volumes, corrupt, stream.unjoined)
            complete = plan.complete(gathered.at_hand)
            missing = plan.missing(gathered)
            bundle_id = volume_set.id if volume_set is not None else unit.volumes[0].index_sha256
            bundle = unit.volumes[0].path.with_name(unit.label)
            names = tuple(v.path.name for v in unit.volumes) if volume_set is not None else ()
            revisions = scan_to_publish(complete, pool, writer, policy, folders)
            judged = ImportReport(
                bundle=bundle,
                bundle_id=bundle_id,
                layout=writer.name,
                target=writer.where,
                repos=(),
                missing=missing,
                damaged=tuple(damaged),
                corrupt=_corrupt_lines(plan, corrupt),
                volumes=names,
                revisions=revisions,
            )  # nothing published yet
            if judged.refused:
                if kept is not None:  # keeps nothing of its own either: staging goes, as for a plain bundle
                    staging.kept = kept.protected(kept.put_back(held))
                raise refusal(unit.label, judged)
            scans = {(r.repo, r.commit): r.scan for r in revisions}
            reports = _publish(
                writer,
                staging,
                complete,
                pool,
                folders,
                hashes,
                Stamp(index.created, bundle_id),
                scans,
                lambda repo: Receipt.of(
                    bundle,
                    bundle_id,
                    index,
                    repo,
                    layout=writer.name,
                    symlinks=writer.symlinks,
                    volumes=names,
                ),
            )
            kept_lines: list[str] = []
            if kept is not None:  # swept of what the published repos used; all of it once the set is done
                left = kept.sweep({f.sha256 for r in index.repos if r not in complete for f in r.files()})
                staging.kept = kept.protected(left)
                kept_lines = kept.describe(left, (v for m in missing for v in m.volumes))
    except OSError as e:
        raise MirrorError(f"importing {unit.label} into {writer.where} failed: {e}") from e
    report = replace(judged, repos=tuple(reports), kept=tuple(kept_lines))
    if reports:  # mirror.signing: remember the sequence of what was published
        for acceptance in accepted:
            if acceptance is not None:
                acceptance.record()
    return report


def _corrupt_lines(plan: ImportPlan, corrupt: dict[str, list[str]]) -> tuple[str, ...]:
    """One line per file of the target that does not hold the content it should."""
    return tuple(
        f"{path} does not hold the content {sha} its name or receipt says (wanted for "
        f"{plan.files[sha].path}); `mirror verify --target` checks the whole target"
        for sha, paths in sorted(corrupt.items())
        for path in paths
    )


def _publish(
    writer: Layout,
    staging: Staging,
    repos: list[IndexedRepo],
    pool: dict[str, Path],
    folders: dict[RepoKey, Path],
    hashes: HashCache,
    stamp: Stamp,
    scans: Mapping[tuple[RepoKey, str], RevisionScan],
    receipt: Callable[[IndexedRepo], Receipt],
) -> list[RepoReport]:
    """Publish each complete repo through the layout, from its verified content in staging; from the
    first one on, the target changes."""
    if repos:
        staging.publishing = True
    reports = []
    for repo in repos:
        content = {f.sha256: pool[f.sha256] for f in repo.files() if f.sha256 in pool}  # not: in place
        own = {c.commit: scans[(repo.key, c.commit)] for c in repo.commits}
        reports.append(
            writer.publish(Publication(repo, content, folders[repo.key], receipt(repo), stamp, hashes, own))
        )
        staging.sweep(writer.staging_root(repo))
    staging.changed = not all(r.already_present for r in reports)
    return reports


def _check_trust(unit: ImportUnit, writer: Layout, trust: TrustPolicy | None) -> list[Acceptance | None]:
    """Signed bundles (mirror.signing): refuse an unsigned, untrusted, altered, expired or rolled-back
    bundle (any volume of a set) before anything is written; the index checked is the one read for the
    import, and the sequences accepted are kept where the layout says."""
    return [
        check_trust(trust, v.path, v.index_bytes, state=writer.sequences, target=writer.where)
        for v in unit.volumes
    ]


def _kept_state(kept: KeptSet | None) -> Kept:
    if kept is None:
        return Kept()
    return Kept(frozenset(kept.whole), {sha: frozenset(chunks) for sha, chunks in kept.received.items()})


def survey(layout: Layout, index: BundleIndex) -> TargetView:
    """What the layout sees of the bundle's repos in the target (file sizes only; nothing is hashed)."""
    held: dict[str, list[Path]] = {}
    for repo in index.repos:
        for sha, size, path in layout.candidates(repo):
            if is_file_of_size(path, size):
                held.setdefault(sha, []).append(path)
    lacking = None
    if not layout.link_shared:
        lacking = tuple(
            size
            for repo in index.repos
            for _, size, path in layout.copies(repo)
            if not is_file_of_size(path, size)
        )
    return TargetView({sha: tuple(paths) for sha, paths in held.items()}, lacking)


def free_space(target: Path) -> tuple[Path, int]:
    """The free bytes of the file system target is (or will be) on, and the folder asked."""
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free


def check_space(bundle: str, target: Path, space: Space) -> None:
    """MirrorError (exit 1), before anything is written, when the target's file system is too full."""
    where, free = free_space(target)
    if space.bytes > free:
        raise MirrorError(
            f"not enough space to import {bundle} into {target}: it adds about {human_size(space.bytes)} "
            f"({space.files} new files) and {where} has {human_size(free)} free; nothing was written. Free "
            "some space, or import into another --target"
        )


def _make_staging(
    staging: Staging, writer: Layout, index: BundleIndex, kept: KeptSet | None
) -> tuple[dict[RepoKey, Path], dict[str, Path]]:
    """Each repo's staging folder (its scratch for atomic writes), and the folder each content is staged
    in: the first repo's that has it, or, of a volume set, its kept area (it waits there for later
    imports too)."""
    folders: dict[RepoKey, Path] = {}
    home: dict[str, Path] = {}
    for repo in index.repos:
        for parent in writer.staging_parents(repo):
            staging.make_dirs(parent)
        folders[repo.key] = staging.folder(writer.staging_root(repo))
        if kept is not None:
            staging.make_dirs(kept.folder(repo))
        for f in repo.files():
            home.setdefault(f.sha256, kept.folder(repo) if kept else folders[repo.key])
    if kept is not None:
        staging.kept = kept.protected(kept.folders())
    return folders, home


def _take_from_target(
    plan: ImportPlan,
    writer: Layout,
    pool: dict[str, Path],
    home: dict[str, Path],
    hashes: HashCache,
    checkpoint: Callable[[], None],
    in_place: Set[str],
) -> dict[str, list[str]]:
    """Stage, from anywhere in the target, the content nothing given carries (a delta's `in_target`, a
    volume's not given) but what the target keeps `in_place`; the files that say they hold a content but
    do not, by content."""
    corrupt: dict[str, list[str]] = {}
    wanted = [sha for sha in plan.from_target if sha not in in_place]
    if not wanted:
        return corrupt
    finder = TargetContent(writer)
    for sha in wanted:
        f = plan.files[sha]
        found = [*plan.held.get(sha, ()), *finder.candidates(sha, f.size, f.etag)]
        if _link_verified(dict.fromkeys(found), home[sha] / sha, f, hashes):
            pool[sha] = home[sha] / sha
            checkpoint()
        elif bad := finder.damaged(sha, f.size, f.etag, hashes):
            corrupt[sha] = bad
    return corrupt


def _stream(
    unit: ImportUnit, stream: VolumeStream, writer: Layout, progress: Progress | None
) -> tuple[list[str], frozenset[int]]:
    """Stream every volume given; one message per damaged volume, and their numbers. A plain bundle with
    any member that failed is refused whole (BundleImportError)."""
    damaged: list[str] = []
    bad_volumes: set[int] = set()
    for volume in unit.volumes:
        failed = stream.volume(volume, progress)
        if failed and volume.index.volume_set is None:
            raise BundleImportError(
                f"{volume.path.name}: {len(failed)} member(s) failed verification, so nothing of the bundle "
                f"was imported ({writer.where} is unchanged): " + _reasons(failed, 5),
                ImportReport(volume.path, volume.index_sha256, writer.name, writer.where, ()),
            )
        if failed:
            bad_volumes.add(volume.number)
            damaged.append(
                f"{volume.path.name} is damaged and none of it was used (copy it again): "
                + _reasons(failed, 3)
            )
    return damaged, frozenset(bad_volumes)


def _reasons(failed: dict[str, str], most: int) -> str:
    """The first `most` distinct reasons members failed (a broken stream is named once), and how many more."""
    reasons = list(dict.fromkeys(failed.values()))
    more = f"; and {len(reasons) - most} more" if len(reasons) > most else ""
    return "; ".join(reasons[:most]) + more


def _link_verified(paths: Iterable[Path], dest: Path, record: FileRecord, hashes: HashCache) -> bool:
    """Put into dest, for content no bundle given carries, the first of paths that holds it: checked by
    hashing in place (so a wrong candidate is never copied), then hardlinked (else copied) and checked again
    (free for a hardlink: the same inode)."""
    for path in paths:
        if not hashes.holds(path, record.size, record.sha256):
            continue
        try:
            link_or_copy(path, dest)
        except OSError:
            dest.unlink(missing_ok=True)
            continue
        if hashes.holds(dest, record.size, record.sha256):
            return True
        dest.unlink()
    return False
