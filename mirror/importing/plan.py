"""Plan an import before anything is written: from the index of what was given, the volumes given, what
earlier imports of a set kept, and what the layout sees in the target, which contents the given volumes
carry, which must come from the target, which the target holds already, and the space the import needs.
Once the volumes are streamed, the plan says which repos are complete and, for the others, what is missing
and why. Nothing here reads or writes a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path

from mirror.bundle import BundleIndex, IndexedRepo
from mirror.report import MissingFile, MissingRepo
from mirror.snapshot import FileRecord

# What the space check adds per file and per import for what is not file content: file system blocks,
# symlinks, folders, receipts.
BLOCK = 4096
OVERHEAD = 1 << 20


@dataclass(frozen=True)
class Kept:
    """What earlier imports of a volume set kept in the target, verified again (`kept.KeptSet.load`)."""

    whole: frozenset[str] = frozenset()  # contents kept whole
    chunks: Mapping[str, frozenset[int]] = field(default_factory=dict)  # sha256 -> its chunks kept


@dataclass(frozen=True)
class TargetView:
    """What the layout sees in the target before the import (`execute.survey` reads it).

    `held`: for each content, the files in the bundle's repos' own folders that have its size (the import
    hashes one before it uses it). `lacking`: the size of each copy the layout keeps (one per repo, and per
    file in --no-symlinks trees; `Layout.copies`) that the target does not hold yet; None when equal
    contents share one file (--link-shared), and then each new content counts once.
    """

    held: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)
    lacking: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Space:
    """About how many bytes an import adds to the target, and in how many new files."""

    bytes: int
    files: int


def bytes_to_add(index: BundleIndex, view: TargetView, wanted: Set[str] | None = None) -> Space:
    """What the target does not hold yet. A file already there with the right size counts as held; if its
    content turns out wrong, the import writes the bundle's copy instead.

    Where the layout keeps repos apart (`view.lacking` set), each copy it lacks counts, wherever its content
    comes from. Otherwise each new content counts once, and `wanted` limits it to the contents that will be
    written (default: everything the index describes)."""
    if view.lacking is not None:
        records = sum(1 for _ in index.files())
        sizes = view.lacking
        return Space(sum(sizes) + BLOCK * (len(sizes) + records) + OVERHEAD, len(sizes))
    new: dict[str, int] = {}
    records = 0
    for f in index.files():
        if wanted is not None and f.sha256 not in wanted:
            continue
        records += 1
        if f.sha256 not in view.held:
            new[f.sha256] = f.size
    return Space(sum(new.values()) + BLOCK * (len(new) + records) + OVERHEAD, len(new))


@dataclass(frozen=True)
class Gathered:
    """What an import has at hand once every volume given was streamed (and the target searched)."""

    at_hand: Set[str]  # contents verified and staged (or kept whole)
    chunks: Mapping[str, Set[int]] = field(default_factory=dict)  # sha256 -> its chunks verified
    damaged: Set[int] = frozenset()  # volumes given that were damaged (none of them was used)
    corrupt: Mapping[str, Sequence[str]] = field(default_factory=dict)  # sha256 -> target files damaged
    unjoined: Set[str] = frozenset()  # contents whose verified chunks do not join to their sha256


@dataclass(frozen=True)
class ImportPlan:
    """What an import of `given` (volume numbers; 0 for a plain bundle) does with the contents `index`
    describes."""

    index: BundleIndex
    given: frozenset[int]
    files: Mapping[str, FileRecord]  # every content -> its first file record
    carried: frozenset[str]  # what the volumes given carry (with the chunks kept earlier)
    kept: frozenset[str]  # what earlier imports of the set kept whole
    from_target: tuple[str, ...]  # neither carried nor kept: looked for in the whole target
    held: Mapping[str, tuple[Path, ...]]  # what the repos' own folders may hold already (`TargetView.held`)
    space: Space  # at most what the volumes given carry is written

    def possible(self, at_hand: Set[str]) -> list[IndexedRepo]:
        """The repos that can be completed once `at_hand` (kept or found in the target) is in staging."""
        return [
            r
            for r in self.index.repos
            if all(f.sha256 in at_hand or f.sha256 in self.carried for f in r.files())
        ]

    def to_stage(self, at_hand: Set[str]) -> set[str]:
        """The contents the stream stages: what the repos that can be completed need; of a volume set,
        everything (kept for the next volumes)."""
        if self.index.volume_set is not None:
            return set(self.files) - set(at_hand)
        return {f.sha256 for repo in self.possible(at_hand) for f in repo.files()} - set(at_hand)

    def complete(self, at_hand: Set[str]) -> list[IndexedRepo]:
        """The repos whose every file is at hand: these are published."""
        return [r for r in self.index.repos if all(f.sha256 in at_hand for f in r.files())]

    def missing(self, gathered: Gathered) -> tuple[MissingRepo, ...]:
        """Each repo not complete: which of its files are not at hand and why, and the volumes still needed.
        (Files the bundles carry and verified, but that were not staged because the repo lacks others, are
        at hand.)"""
        complete = self.complete(gathered.at_hand)
        return tuple(_missing(repo, self, gathered) for repo in self.index.repos if repo not in complete)


def plan_import(
    index: BundleIndex, given: Iterable[int], view: TargetView, kept: Kept | None = None
) -> ImportPlan:
    """The plan of importing the volumes `given` (0 for a plain bundle) of what `index` describes into a
    target the layout sees as `view`, where earlier imports of the set left `kept`."""
    kept = kept or Kept()
    volumes = frozenset(given)
    files: dict[str, FileRecord] = {}
    for f in index.files():
        files.setdefault(f.sha256, f)

    def is_carried(sha: str) -> bool:
        placement = index.placement(sha)
        if placement.chunks:
            got = kept.chunks.get(sha, frozenset())
            return all(c.volume in volumes or i in got for i, c in enumerate(placement.chunks))
        return not placement.in_target and all(v in volumes for v in placement.volumes())

    carried = frozenset(sha for sha in files if is_carried(sha))
    return ImportPlan(
        index=index,
        given=volumes,
        files=files,
        carried=carried,
        kept=kept.whole,
        from_target=tuple(sha for sha in files if sha not in carried and sha not in kept.whole),
        held=view.held,
        space=bytes_to_add(index, view, {sha for sha in files if sha in carried and sha not in kept.whole}),
    )


def _missing(repo: IndexedRepo, plan: ImportPlan, gathered: Gathered) -> MissingRepo:
    index = plan.index
    volume_set = index.volume_set
    streamed = plan.given - set(gathered.damaged)
    files = []
    needed: set[int] = set()
    for c in repo.commits:
        for f in c.files:
            if f.sha256 in gathered.at_hand:
                continue
            placement = index.placement(f.sha256)
            got = gathered.chunks.get(f.sha256, set())  # chunks at hand: this import's and those kept before
            needs = sorted({c.volume for i, c in enumerate(placement.chunks) if i not in got})
            lacking = [v for v in (needs if placement.chunks else placement.volumes()) if v not in streamed]
            if volume_set is not None and lacking:
                needed.update(lacking)
                why = "in " + ", ".join(
                    f"{volume_set.name(v)} ({'damaged' if v in gathered.damaged else 'not given'})"
                    for v in lacking
                )
            elif f.sha256 in gathered.unjoined:
                why = "its verified chunks do not join to its sha256"
            elif f.sha256 in gathered.corrupt:
                why = f"the target's copy is damaged ({', '.join(gathered.corrupt[f.sha256])})"
            elif placement.in_target:
                why = "not in the target, which this delta expects to hold it"
            else:
                continue  # carried and verified
            files.append(MissingFile(c.commit, f.path, f.size, f.sha256, why))
    names = tuple(volume_set.name(v) for v in sorted(needed)) if volume_set is not None else ()
    return MissingRepo(repo.key, repo.revisions, tuple(files), names)
