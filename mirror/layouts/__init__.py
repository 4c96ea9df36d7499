"""Restore a bundle into a layout: verify the whole bundle while streaming it once, then publish repo by repo.

A bundle is one unit: if any of its members is damaged or hostile, nothing of it is published, and the
target is left exactly as it was (see `Staging`). An operator then knows that exit 4 means "nothing
changed", and a set of models meant to be used together never arrives half updated. Once the whole bundle
is verified, each repo is published name by name with atomic renames (refs last), so a SIGKILL at any
moment leaves each repo in its old state or its new one, and running the import again completes it.

Content the target already holds (in the repos the bundle names) is hashed and hardlinked into staging
instead of written again, so importing the same bundle twice writes nothing, and a damaged copy in the
target is found and replaced by the bundle's. What is published never shares an inode across repos (nor
across revisions in --no-symlinks trees) unless `link_shared`: content staged once is copied for each
further repo (`layout.link_if_private`). Before anything is written, the bytes the import will add
are checked against the free space of the target's file system.

Deltas and volume sets (DESIGN: bundle index `in_target`, `volume`, `chunks`): an import unit is one
bundle or the volumes given of one set (`group_bundles`). Content that nothing given carries is taken from
anywhere in the target (`held.TargetContent`), hashed first. A repo is published only when every one of
its files is at hand; the others are reported (`MissingRepo`) and left as they were. Of a set, a damaged
volume is dropped whole, and the rest still count; what a set's import verified for repos it could not
complete is kept in the target for the next volumes, given in later runs (`kept.KeptSet`).

Adding a layout is one module with a `Layout` subclass, and one line in `LAYOUTS`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.bundle import (
    BundleFile,
    BundleIndex,
    IndexedRepo,
    Progress,
    chunk_offset,
    open_bundle,
    read_index,
)
from mirror.clock import Clock
from mirror.errors import IntegrityError, LockedError, MirrorError, UsageError
from mirror.fsutil import BulkWriter
from mirror.layouts.dir import DirLayout
from mirror.layouts.held import TargetContent
from mirror.layouts.hf import HfLayout
from mirror.layouts.kept import KeptSet
from mirror.layouts.layout import (
    HashCache,
    ImportReport,
    Layout,
    MissingFile,
    MissingRepo,
    Publication,
    RepoReport,
    Staging,
    Stamp,
    check_uses,
    checkpoint,
    human_bytes,
    link_or_copy,
)
from mirror.layouts.modelscope import ModelScopeLayout
from mirror.signing import TrustPolicy, check_trust  # signed bundles (issue 5 item 7)
from mirror.snapshot import FileRecord

LAYOUTS: dict[str, Callable[..., Layout]] = {
    "hf": HfLayout,
    "modelscope": ModelScopeLayout,
    "dir": DirLayout,
}

# What the space check adds per file and per import for what is not file content: file system blocks,
# symlinks, folders, receipts.
BLOCK = 4096
OVERHEAD = 1 << 20


class BundleImportError(IntegrityError):
    """Members of a bundle failed verification, so nothing of it was published; `report.repos` is empty."""

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report


def make_layout(layout: str, target: Path, *, symlinks: bool = True, link_shared: bool = False) -> Layout:
    try:
        factory = LAYOUTS[layout]
    except KeyError:
        raise UsageError(f"unknown layout {layout!r}; choose one of {', '.join(sorted(LAYOUTS))}") from None
    return factory(Path(target), symlinks=symlinks, link_shared=link_shared)


def receipt_for(
    bundle: Path,
    bundle_id: str,
    index: BundleIndex,
    repo: IndexedRepo,
    layout: Layout,
    volumes: Sequence[str] = (),
) -> dict[str, Any]:
    """What an import records about a repo: which bundle (or volumes of a set) with its id (the sha256 of
    its index; a set's id), which revisions, which files with their hashes (what `mirror verify --target` checks the
    tree against)."""
    return {
        "layout": layout.name,
        "symlinks": layout.symlinks,
        "bundle": bundle.name,
        **({"volumes": list(volumes)} if volumes else {}),
        "bundle_id": bundle_id,
        "bundle_created": index.created,
        "bundle_tool_version": index.tool_version,
        **repo.key.to_json(),
        **({"hf_id": repo.hf_id} if repo.hf_id is not None else {}),
        "revisions": [{"name": n, "commit": c} for n, c in repo.revisions],
        "commits": [
            {
                "commit": c.commit,
                "complete": c.complete,
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in c.files],
            }
            for c in repo.commits
        ],
    }


@dataclass(frozen=True)
class ImportUnit:
    """What one import takes as a whole: a bundle, or the volumes given of one set (in volume order).

    `error` is set for a bundle whose index cannot be read (it is refused, and named, when imported).
    """

    volumes: tuple[tuple[Path, BundleIndex], ...]
    error: MirrorError | None = None
    path: Path | None = None

    @property
    def index(self) -> BundleIndex:
        return self.volumes[0][1]

    @property
    def label(self) -> str:
        """The bundle's name; for a set, its name without the volume number (`models.tar.zst`)."""
        if not self.volumes:
            return self.path.name if self.path is not None else "?"
        path, index = self.volumes[0]
        if index.volume_set is None:
            return path.name
        return set_label(index.volume_set.names[0])

    @property
    def paths(self) -> list[Path]:
        return [p for p, _ in self.volumes] or ([self.path] if self.path is not None else [])


def set_label(first_volume: str) -> str:
    """`models.001.tar.zst` -> `models.tar.zst`."""
    head, suffix, _ = first_volume.rpartition(".tar.zst")
    base, dot, number = head.rpartition(".")
    return f"{base}{suffix}" if dot and number.isdigit() else first_volume


def _volume_number(volume: tuple[Path, BundleIndex]) -> int:
    return volume[1].volume_set.volume if volume[1].volume_set is not None else 0


def group_bundles(bundles: Iterable[Path]) -> list[ImportUnit]:
    """The import units of the bundles given (in the order first met): each plain bundle alone, the volumes
    of one set together whatever their order (a volume given twice counts once). Only indexes are read."""
    units: list[ImportUnit] = []
    sets: dict[str, int] = {}
    for path in map(Path, bundles):
        try:
            index = read_index(path)
        except MirrorError as e:
            units.append(ImportUnit((), error=e, path=path))
            continue
        if index.volume_set is None:
            units.append(ImportUnit(((path, index),)))
            continue
        at = sets.setdefault(index.volume_set.id, len(units))
        if at == len(units):
            units.append(ImportUnit(((path, index),)))
        elif all(_volume_number(v) != index.volume_set.volume for v in units[at].volumes):
            units[at] = ImportUnit(tuple(sorted((*units[at].volumes, (path, index)), key=_volume_number)))
    return units


def import_bundle(
    bundle: Path,
    layout: str,
    target: Path,
    *,
    progress: Progress | None = None,
    trust: TrustPolicy | None = None,
    symlinks: bool = True,
    link_shared: bool = False,
    wait: float = 0.0,
    clock: Clock | None = None,
) -> ImportReport:
    """Import one bundle (a plain bundle, a delta, or one volume of a set); see `import_unit`."""
    (unit,) = group_bundles([bundle])
    return import_unit(
        unit,
        layout,
        target,
        progress=progress,
        trust=trust,
        symlinks=symlinks,
        link_shared=link_shared,
        wait=wait,
        clock=clock,
    )


def import_unit(
    unit: ImportUnit,
    layout: str,
    target: Path,
    *,
    progress: Progress | None = None,
    trust: TrustPolicy | None = None,
    symlinks: bool = True,
    link_shared: bool = False,
    wait: float = 0.0,
    clock: Clock | None = None,
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
    (needed when `wait` is not 0), then raise LockedError (exit 75). Before anything is written, every path
    the import will use in the target is checked (`check_uses`): a symlink or a file in the way of it is
    refused, and nothing is written.
    """
    if unit.error is not None:
        raise unit.error
    target = Path(target)

    def busy() -> LockedError:
        return LockedError(
            f"another mirror import is writing into {target}; try again later or pass --wait SECONDS"
        )

    with Staging() as guard:
        guard.lock(target, wait, busy, clock)
        return _import_locked(unit, layout, target, progress, trust, symlinks, link_shared)


def _import_locked(
    unit: ImportUnit,
    layout: str,
    target: Path,
    progress: Progress | None,
    trust: TrustPolicy | None,
    symlinks: bool,
    link_shared: bool,
) -> ImportReport:
    """`import_unit`, once it holds the target's lock."""
    writer = make_layout(layout, target, symlinks=symlinks, link_shared=link_shared)
    index = unit.index
    volume_set = index.volume_set
    given = {_volume_number(v) for v in unit.volumes}
    hashes = HashCache()
    files_of: dict[str, FileRecord] = {}
    for repo in index.repos:
        for f in _files(repo):
            files_of.setdefault(f.sha256, f)

    kept_chunks: dict[str, set[int]] = {}  # of a volume set: the chunks earlier imports kept (kept.py)

    def carried(sha: str) -> bool:
        """Whether what was given carries this content (else it must come from the target)."""
        placement = index.placement(sha)
        if placement.chunks:
            got = kept_chunks.get(sha, set())
            return all(c.volume in given or i in got for i, c in enumerate(placement.chunks))
        return not placement.in_target and all(v in given for v in placement.volumes())

    try:
        # Signed bundles (mirror.signing): refuse an unsigned, untrusted, altered, expired or rolled-back
        # bundle (any volume of a set) before anything is written.
        # Where each layout keeps its trust state, out of its tools' sight (until the layouts name it).
        trust_dir = {"hf": ".locks/mirror-trust", "modelscope": ".mirror-trust"}.get(
            writer.name, ".mirror/trust"
        )
        accepted = [
            check_trust(trust, path, _index_bytes(path, ix), state_dir=target / trust_dir, target=target)
            for path, ix in unit.volumes
        ]
        writer.check(index)
        check_uses(target, (use for repo in index.repos for use in writer.uses(repo)))
        kept = KeptSet(writer, index, hashes) if volume_set is not None else None
        if kept is not None:  # what earlier imports of this set verified, checked again
            kept.load()
            kept_chunks.update(kept.received)
        candidates: dict[str, list[Path]] = {}
        for repo in index.repos:
            for sha, size, path in writer.candidates(repo):
                if _is_file_of_size(path, size):
                    candidates.setdefault(sha, []).append(path)
        # At most what the given bundles carry is written (less if some repos turn out incomplete), and
        # each repo's own copy of what several repos share (unless --link-shared).
        check_space(
            Path(unit.label),
            target,
            index,
            candidates,
            {sha for sha in files_of if carried(sha) and not (kept and sha in kept.whole)},
            writer,
        )
        with Staging() as staging:
            folders = {}
            home: dict[str, Path] = {}  # sha256 -> the staging folder its content goes in
            for repo in index.repos:
                for parent in writer.staging_parents(repo):
                    staging.make_dirs(parent)
                folders[repo.key] = staging.folder(writer.staging_root(repo))
                if kept is not None:  # a set's content waits in its kept area, for later imports too
                    staging.make_dirs(kept.folder(repo))
                for f in _files(repo):
                    home.setdefault(f.sha256, kept.folder(repo) if kept else folders[repo.key])
            if kept is not None:
                staging.kept = kept.protected(kept.folders())
            pool: dict[str, Path] = dict(kept.whole) if kept else {}  # sha256 -> verified content
            corrupt: dict[str, list[str]] = {}
            outside = [sha for sha in files_of if not carried(sha) and sha not in pool]
            if outside:
                # Content nothing given carries (a delta's `in_target`, a volume not given), from the target.
                finder = TargetContent(writer)
                for sha in outside:
                    f = files_of[sha]
                    found = candidates.get(sha, []) + finder.candidates(sha, f.size, f.etag)
                    if _take_from_target(dict.fromkeys(found), home[sha] / sha, f, hashes):
                        pool[sha] = home[sha] / sha
                        checkpoint()
                    elif bad := finder.damaged(sha, f.size, f.etag, hashes):
                        corrupt[sha] = bad
            possible = [
                r for r in index.repos if all(f.sha256 in pool or carried(f.sha256) for f in _files(r))
            ]
            wanted = {f.sha256 for repo in possible for f in _files(repo)} - set(pool)
            if kept is not None:  # what repos not complete yet need is kept for the next volumes
                wanted = set(files_of) - set(pool)
            stream = _Stream(index, pool, home, wanted, candidates, hashes, kept)
            damaged: list[str] = []
            bad_volumes: set[int] = set()
            for path, volume in unit.volumes:
                failed = stream.volume(path, volume, progress)
                if failed and volume_set is None:
                    reasons = list(dict.fromkeys(failed.values()))
                    more = f"; and {len(reasons) - 5} more" if len(reasons) > 5 else ""
                    raise BundleImportError(
                        f"{path.name}: {len(failed)} member(s) failed verification, so nothing of the bundle "
                        f"was imported ({target} is unchanged): " + "; ".join(reasons[:5]) + more,
                        ImportReport(path, stream.bundle_id, writer.name, target, ()),
                    )
                if failed:
                    bad_volumes.add(_volume_number((path, volume)))
                    reasons = list(dict.fromkeys(failed.values()))  # a broken stream is named once
                    more = f"; and {len(reasons) - 3} more" if len(reasons) > 3 else ""
                    damaged.append(
                        f"{path.name} is damaged and none of it was used (copy it again): "
                        + "; ".join(reasons[:3])
                        + more
                    )
            damaged += stream.join_chunks()
            bundle_id = volume_set.id if volume_set is not None else stream.bundle_id
            complete = [r for r in index.repos if all(f.sha256 in pool for f in _files(r))]
            missing = tuple(
                _missing(
                    repo,
                    index,
                    pool,
                    corrupt,
                    stream.unjoined,
                    given - bad_volumes,
                    bad_volumes,
                    stream.received,
                )
                for repo in index.repos
                if repo not in complete
            )
            bundle = unit.volumes[0][0].with_name(unit.label)
            names = tuple(p.name for p, _ in unit.volumes) if volume_set is not None else ()
            stamp = Stamp(index.created, bundle_id)
            reports = []
            if complete:
                staging.publishing = True  # from here on the target changes
            for repo in complete:
                pub = Publication(
                    repo=repo,
                    content={f.sha256: pool[f.sha256] for f in _files(repo)},
                    scratch=folders[repo.key],
                    receipt=receipt_for(bundle, bundle_id, index, repo, writer, names),
                    stamp=stamp,
                    hashes=hashes,
                )
                reports.append(writer.publish(pub))
                staging.sweep(writer.staging_root(repo))
            staging.changed = not all(r.already_present for r in reports)
            kept_lines: list[str] = []
            if kept is not None:  # swept of what the published repos used; all of it once the set is done
                left = kept.sweep({f.sha256 for r in index.repos if r not in complete for f in _files(r)})
                staging.kept = kept.protected(left)
                kept_lines = kept.describe(left, (v for m in missing for v in m.volumes))
    except OSError as e:
        raise MirrorError(f"importing {unit.label} into {target} failed: {e}") from e
    report = ImportReport(
        bundle=bundle,
        bundle_id=bundle_id,
        layout=writer.name,
        target=target,
        repos=tuple(reports),
        missing=missing,
        damaged=tuple(damaged),
        corrupt=tuple(
            f"{path} does not hold the content {sha} its name or receipt says (wanted for "
            f"{files_of[sha].path}); `mirror verify --target` checks the whole target"
            for sha, paths in sorted(corrupt.items())
            for path in paths
        ),
        volumes=names,
        kept=tuple(kept_lines),
    )
    if reports:  # mirror.signing: remember the sequence of what was published
        for acceptance in accepted:
            if acceptance is not None:
                acceptance.record()
    return report


def _index_bytes(bundle: Path, index: BundleIndex) -> bytes:
    """The bytes of the bundle's index (what a signature pins), read again: they must still be `index`, the
    one the import streams against."""
    with open_bundle(bundle) as reader:
        if reader.index != index:
            raise IntegrityError(f"{bundle.name} changed while it was being read; copy it again")
        return reader.index_bytes


def _files(repo: IndexedRepo) -> Iterator[FileRecord]:
    return (f for c in repo.commits for f in c.files)


class _Stream:
    """Streams the bundles of one import unit into staging, content by content (see `import_unit`): each
    content once, named by its sha256, in the staging folder of the first repo that has it."""

    def __init__(
        self,
        index: BundleIndex,
        pool: dict[str, Path],
        home: dict[str, Path],
        wanted: set[str],
        candidates: dict[str, list[Path]],
        hashes: HashCache,
        kept: KeptSet | None = None,
    ) -> None:
        self.index = index
        self.pool = pool
        self.home = home
        self.wanted = wanted
        self.candidates = candidates
        self.hashes = hashes
        self.kept = kept  # a volume set's: chunks are recorded there as they arrive, and were loaded from it
        self.parts: dict[str, Path] = kept.parts if kept else {}  # sha256 -> the file its chunks are in
        self.received: dict[str, set[int]] = kept.received if kept else {}  # sha256 -> its verified chunks
        self.unjoined: set[str] = set()  # contents whose verified chunks do not join to their sha256
        self.bundle_id = ""  # the last bundle's id: the sha256 of its index

    def volume(self, path: Path, index: BundleIndex, progress: Progress | None) -> dict[str, str]:
        """Stream one bundle or volume; the members that failed (name -> why; "" for the archive itself).

        A structural fault of a plain bundle is raised (it is refused whole). What a volume with any failure
        contributed is taken back: a damaged volume is not used at all.
        """
        contributed: list[tuple[str, int | None]] = []
        failed: dict[str, str] = {}
        self.bundle_id = ""
        try:
            # The archive's own digest is not computed: every byte of every file is checked against the
            # index, and zstd's frame checksums cover the rest (the `.sha256` is for the transfer).
            with open_bundle(path, progress, archive_digest=False) as reader:
                if reader.index != index:
                    raise IntegrityError(f"{path}: changed while it was being read; copy it again")
                for file in reader.files():
                    try:
                        self._receive(file, contributed)
                    except IntegrityError as e:
                        failed[file.member.name] = str(e)
                    checkpoint()
                self.bundle_id = reader.index_sha256
        except IntegrityError as e:
            if index.volume_set is None:
                raise
            failed[""] = str(e)
        if failed:
            for sha, chunk in contributed:
                if chunk is None:
                    staged = self.pool.pop(sha, None)
                    if staged is not None:
                        staged.unlink(missing_ok=True)
                else:
                    self.received[sha].discard(chunk)
                    if self.kept is not None:
                        self.kept.record(sha, self.received[sha])
        return failed

    def _receive(self, file: BundleFile, contributed: list[tuple[str, int | None]]) -> None:
        """Verify one member into staging: a whole content under its sha256 (once), a chunk at its offset."""
        member = file.member
        sha = member.file.sha256
        if sha not in self.wanted or sha in self.pool or file.link_to is not None:
            # No repo that can be completed needs it, or a repeat of verified content (a hardlink raises if
            # the member it links to failed): verify only.
            file.read()
            return
        if member.chunk is not None:
            if member.chunk in self.received.get(sha, ()):
                file.read()  # kept from an earlier volume given (or import): its bytes stay as verified
                return
            part = self.parts.get(sha)
            if part is None:
                part = self.parts[sha] = self.home[sha] / f"{sha}.chunks"
                part.touch()
            with BulkWriter(part, chunk_offset(self.index, member), truncate=False) as out:
                file.read(out.write)
            checkpoint()
            self.received.setdefault(sha, set()).add(member.chunk)
            if self.kept is not None:  # recorded only once written whole and verified
                self.kept.record(sha, self.received[sha])
            contributed.append((sha, member.chunk))
            return
        dest = self.home[sha] / sha
        if _adopt(self.candidates.get(sha, ()), dest, member.file, self.hashes):
            file.read()  # the target already holds it: the bundle's bytes are checked all the same
        else:
            part = dest.with_name(f"{sha}.{uuid.uuid4().hex[:12]}.part")  # unique: staging may be kept
            try:
                with BulkWriter(part) as out:
                    file.read(out.write)
                checkpoint()
                os.replace(part, dest)
            finally:
                part.unlink(missing_ok=True)
            self.hashes.remember(dest, sha)
        self.pool[sha] = dest
        contributed.append((sha, None))

    def join_chunks(self) -> list[str]:
        """Put in the pool each content whose every chunk arrived, once it is checked whole against its
        sha256; a message for each that does not match (volumes of different exports, or crafted ones)."""
        problems = []
        for sha, part in sorted(self.parts.items()):
            count = len(self.index.placement(sha).chunks)
            if self.received.get(sha) != set(range(count)):
                continue
            if self.hashes.sha256(part) != sha:
                self.unjoined.add(sha)
                if self.kept is not None:  # asked for again
                    self.kept.drop_chunks(sha)
                problems.append(
                    f"content {sha}, joined from its {count} verified chunks, does not match its sha256; export "
                    "the volumes again"
                )
                continue
            dest = self.home[sha] / sha
            os.replace(part, dest)
            self.hashes.remember(dest, sha)
            self.pool[sha] = dest
            if self.kept is not None:
                self.kept.drop_chunks(sha)  # its record goes: the whole content is kept from now on
            checkpoint()
        return problems


def _missing(
    repo: IndexedRepo,
    index: BundleIndex,
    pool: dict[str, Path],
    corrupt: dict[str, list[str]],
    unjoined: set[str],
    streamed: set[int],
    bad_volumes: set[int],
    received: dict[str, set[int]],
) -> MissingRepo:
    """Which files of a repo are not at hand, and why; the volumes still needed. (Files the bundles carry
    and verified, but that were not staged because the repo lacks others, are at hand.)"""
    volume_set = index.volume_set
    files = []
    needed: set[int] = set()
    for c in repo.commits:
        for f in c.files:
            if f.sha256 in pool:
                continue
            placement = index.placement(f.sha256)
            got = received.get(f.sha256, set())  # chunks at hand: this import's and those kept before
            needs = sorted({c.volume for i, c in enumerate(placement.chunks) if i not in got})
            lacking = [v for v in (needs if placement.chunks else placement.volumes()) if v not in streamed]
            if volume_set is not None and lacking:
                needed.update(lacking)
                why = "in " + ", ".join(
                    f"{volume_set.name(v)} ({'damaged' if v in bad_volumes else 'not given'})"
                    for v in lacking
                )
            elif f.sha256 in unjoined:
                why = "its verified chunks do not join to its sha256"
            elif f.sha256 in corrupt:
                why = f"the target's copy is damaged ({', '.join(corrupt[f.sha256])})"
            elif placement.in_target:
                why = "not in the target, which this delta expects to hold it"
            else:
                continue  # carried and verified
            files.append(MissingFile(c.commit, f.path, f.size, f.sha256, why))
    names = tuple(volume_set.name(v) for v in sorted(needed)) if volume_set is not None else ()
    return MissingRepo(repo.key, repo.revisions, tuple(files), names)


def _is_file_of_size(path: Path, size: int) -> bool:
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


def free_space(target: Path) -> tuple[Path, int]:
    """The free bytes of the file system target is (or will be) on, and the folder asked."""
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free


def bytes_to_add(
    index: BundleIndex,
    candidates: dict[str, list[Path]],
    wanted: set[str] | None = None,
    writer: Layout | None = None,
) -> tuple[int, int]:
    """(bytes, files) of content the target does not hold yet. A file already there with the right size
    counts as held; if its content turns out wrong, the import writes the bundle's copy instead.

    With a `writer` that keeps repos apart (the default), each copy the layout keeps of a content
    (`Layout.copies`: per repo, and per file in --no-symlinks trees) counts, wherever its content comes
    from. Otherwise (`--link-shared`, or no writer) each new content is written once, repos and revisions
    sharing it by hardlink, and `wanted` limits it to the content that will be written (default: everything
    the index describes)."""
    if writer is not None and not writer.link_shared:
        sizes = [
            size
            for repo in index.repos
            for _, size, path in writer.copies(repo)
            if not _is_file_of_size(path, size)
        ]
        records = sum(1 for repo in index.repos for _ in _files(repo))
        return sum(sizes) + BLOCK * (len(sizes) + records) + OVERHEAD, len(sizes)
    new: dict[str, int] = {}
    records = 0
    for repo in index.repos:
        for f in _files(repo):
            if wanted is not None and f.sha256 not in wanted:
                continue
            records += 1
            if f.sha256 not in candidates:
                new[f.sha256] = f.size
    return sum(new.values()) + BLOCK * (len(new) + records) + OVERHEAD, len(new)


def check_space(
    bundle: Path,
    target: Path,
    index: BundleIndex,
    candidates: dict[str, list[Path]],
    wanted: set[str] | None = None,
    writer: Layout | None = None,
) -> None:
    """MirrorError (exit 1), before anything is written, when the target's file system is too full."""
    need, files = bytes_to_add(index, candidates, wanted, writer)
    where, free = free_space(target)
    if need > free:
        raise MirrorError(
            f"not enough space to import {bundle.name} into {target}: it adds about {human_bytes(need)} "
            f"({files} new files) and {where} has {human_bytes(free)} free; nothing was written. Free some "
            "space, or import into another --target"
        )


def _adopt(paths: Iterable[Path], dest: Path, record: FileRecord, hashes: HashCache) -> bool:
    """Hardlink into dest a file the target already holds with this content; False if none does (or the file
    system cannot link), and the bundle's bytes are written instead."""
    for path in paths:
        try:
            os.link(path, dest)
        except FileNotFoundError:
            continue
        except OSError:
            return False
        if hashes.holds(dest, record.size, record.sha256):
            return True
        dest.unlink()
    return False


def _take_from_target(paths: Iterable[Path], dest: Path, record: FileRecord, hashes: HashCache) -> bool:
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


__all__ = [
    "LAYOUTS",
    "BundleImportError",
    "ImportReport",
    "ImportUnit",
    "Layout",
    "MissingRepo",
    "RepoReport",
    "group_bundles",
    "import_bundle",
    "import_unit",
    "make_layout",
    "receipt_for",
]
