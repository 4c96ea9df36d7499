"""The layout interface an import writes through, and the atomic moves every layout publishes with.

Every write an import makes into a target goes through the helpers here, so they all keep the same rules:
- content waits in a staging folder (`.mirror/tmp/<id>`, on the target's file system; see
  `mirror.importing.staging`) until the whole bundle is verified; temp names live there too, never beside
  a real name;
- each visible name appears by one `os.replace` (or an atomic exchange, for a folder), so a SIGKILL at any
  moment leaves every name old or new.

Each write is a step of the import: the layout calls its `checkpoint` (given by the importer; nothing by
default) after each, so the tests can kill an import at any of them.
"""

from __future__ import annotations

import os
import stat
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal

from mirror.bundle import BundleIndex, IndexedRepo
from mirror.clock import Clock
from mirror.errors import IntegrityError, MirrorError
from mirror.fsutil import exchange, link_if_private, remove_path
from mirror.hashing import HashCache
from mirror.paths import name_problem
from mirror.receipt import Receipt
from mirror.repo import RepoKey
from mirror.report import HeldRepo, RepoReport
from mirror.signing import SequenceState
from mirror.validate.scan import RevisionScan


def no_checkpoint() -> None:
    """The default step callback: nothing happens between the steps of an import."""


@dataclass(frozen=True)
class ExpectedFile:
    """A file an import wrote, as its receipt records it (for `mirror verify --target`), and which repo
    revision's file it is (`repo`, `commit`, `name`: its path in the repo; for `mirror scan --target`)."""

    path: Path
    size: int
    sha256: str
    repo: RepoKey | None = None
    commit: str = ""
    name: str = ""


@dataclass(frozen=True)
class Stamp:
    """Which bundle a publish comes from; a newer `created` wins over an older one whatever the order."""

    created: str
    bundle_id: str  # the sha256 of its index (of a volume set: the set's id)

    def older_than(self, record: Any) -> bool:
        """Whether a record (a dict with `bundle_created`) was written by a strictly newer bundle."""
        created = record.get("bundle_created") if isinstance(record, dict) else None
        return isinstance(created, str) and created > self.created


@dataclass
class Publication:
    """What `Layout.publish` gets for one repo whose every file verified."""

    repo: IndexedRepo
    content: Mapping[str, Path]  # sha256 -> verified file in staging (none for content `Layout.in_place`)
    scratch: Path  # the repo's staging folder: temp names for atomic writes, on the target's file system
    receipt: Receipt
    stamp: Stamp
    hashes: HashCache = field(default_factory=HashCache)
    scans: Mapping[str, RevisionScan] = field(default_factory=dict)  # commit -> the import's scan of it


@dataclass(frozen=True)
class Use:
    """A path an import creates, writes, renames or deletes in the target (`Layout.uses`), and what it
    must be if it exists: `dir` a real folder; `file` a regular file (a record, a blob, a ref); `entry` a
    file or a symlink, which the import replaces by a rename and never follows; `staged` a name the import
    makes in staging (only its length is checked). Below `named` the names come from the bundle, so a file
    where the bundle needs a folder there (or the reverse) means the bundle cannot be published into this
    target (exit 4); anywhere else it is something in the way of the import's own folders (exit 1)."""

    path: Path
    kind: Literal["dir", "file", "entry", "staged"]
    named: Path | None = None


def check_uses(target: Path, uses: Iterable[Use]) -> None:
    """Refuse, before anything is written, a target where something the import uses is a symlink (it would
    act outside the target) or is not what it must be, or a name too long for the file system."""
    target = Path(target)
    checked: set[Path] = set()
    for use in uses:
        problem = name_problem(str(use.path))
        if problem is not None:
            raise IntegrityError(
                f"{use.path} cannot be written: {problem}; nothing was imported (import into a shorter "
                "--target, or another --layout)"
            )
        if use.kind == "staged":
            continue
        parts = use.path.relative_to(target).parts
        probe = target
        for i, part in enumerate(parts):
            probe = probe / part
            last = i == len(parts) - 1
            if probe in checked and not last:
                continue
            try:
                st = os.lstat(probe)
            except FileNotFoundError:
                break  # nothing below it exists either
            checked.add(probe)
            named = use.named is not None and use.named in probe.parents
            if stat.S_ISLNK(st.st_mode):
                if last and use.kind == "entry":
                    continue
                raise MirrorError(
                    f"{probe} is a symlink (to {os.readlink(probe)}) where mirror import writes "
                    f"{use.path.relative_to(target)}; it could lead outside {target}, so nothing was "
                    "imported: move it away and import again"
                )
            is_dir = stat.S_ISDIR(st.st_mode)
            if (not last or use.kind == "dir") and not is_dir:
                what = "a file" if stat.S_ISREG(st.st_mode) else "not a folder"
                if named:
                    raise IntegrityError(
                        f"the bundle cannot be published into {target}: {probe} is {what}, and the bundle "
                        f"needs a folder there (for {use.path.relative_to(target)}); nothing was imported"
                    )
                raise MirrorError(
                    f"{probe} is {what} where mirror import needs a folder; nothing was imported: move it "
                    "away and import again"
                )
            if last and use.kind != "dir" and is_dir:
                if named:
                    raise IntegrityError(
                        f"the bundle cannot be published into {target}: {probe} is a folder, and the bundle "
                        "has a file there; nothing was imported"
                    )
                raise MirrorError(
                    f"{probe} is a folder where mirror import writes a file; nothing was imported: move it "
                    "away and import again"
                )


class Layout(ABC):
    """A tree the hub clients load offline, written one repo at a time.

    The importer streams a bundle once. Verified content waits in each repo's staging folder (on the
    target's file system, where the layout's own tools ignore it), named by its sha256. Only once the whole
    bundle is verified does `publish` make each repo visible, name by name, every name by an atomic rename.
    """

    name: ClassVar[str]

    def __init__(
        self,
        target: Path,
        *,
        symlinks: bool = True,
        link_shared: bool = False,
        checkpoint: Callable[[], None] = no_checkpoint,
    ) -> None:
        self.target = Path(target)
        self.symlinks = symlinks
        # --link-shared: published files of equal content may share one inode across repos (and, in
        # --no-symlinks trees, across revisions); by default they never do (see `link_if_private`).
        self.link_shared = link_shared
        self.checkpoint = checkpoint  # called after each write (the tests kill an import there)

    @property
    def where(self) -> Path | str:
        """The target as the user named it, for reports and messages (the folder; a store layout's s3:// URL)."""
        return self.target

    @property
    @abstractmethod
    def sequences(self) -> SequenceState:
        """Where the target keeps the highest sequence accepted per signing key (mirror.signing), out of
        the layout's tools' sight."""

    @contextmanager
    def writing(self, wait: float, clock: Clock | None) -> Iterator[None]:
        """Held for the whole import, once it holds its own lock on the target: the lock the target's own
        writers take, where it has one (the store's writer lock); nothing by default."""
        yield

    def check(self, index: BundleIndex) -> None:  # noqa: B027 - optional hook, most layouts need none
        """Refuse, before anything is written, a bundle this layout cannot hold (raise MirrorError)."""

    @abstractmethod
    def staging_root(self, repo: IndexedRepo) -> Path:
        """The folder (`.../.mirror/tmp`) the repo's staging folder goes in, on its file system."""

    def staging_parents(self, repo: IndexedRepo) -> list[Path]:
        """Folders to create before staging, so the layout's tools accept a repo while it is imported."""
        return []

    @abstractmethod
    def uses(self, repo: IndexedRepo) -> Iterator[Use]:
        """Every path publishing the repo may create, write, rename or delete (`check_uses`)."""

    @abstractmethod
    def candidates(self, repo: IndexedRepo) -> Iterator[tuple[str, int, Path]]:
        """(sha256, size, path) of files already in the target that may hold content the repo needs.

        Only the repo's own folders are looked at (models the bundle does not name are never touched); the
        importer hashes a candidate before it uses it, instead of writing the bundle's copy again.
        """

    @abstractmethod
    def copies(self, repo: IndexedRepo) -> Iterator[tuple[str, int, Path]]:
        """(sha256, size, path) of each file of the published repo that holds a copy of its own (for the
        space check): one per content where the layout shares it within the repo, else one per file."""

    @abstractmethod
    def publish(self, pub: Publication) -> RepoReport:
        """Make the repo visible, from `pub.content` (each sha256's verified, staged file)."""

    @abstractmethod
    def expected_files(self) -> tuple[list[ExpectedFile], list[str]]:
        """Every file the receipts in the target say an import wrote, and the receipts that are unreadable."""

    def removed_revisions(self) -> list[str]:
        """The imported revisions the user removed with the layout's own tools (not damage: `mirror verify
        --target` reports them and checks them no more); none unless the layout's tools can remove one."""
        return []

    @abstractmethod
    def content_files(self) -> Iterator[tuple[Path, str | None]]:
        """Every regular file in the target that may hold a repo file's content (`mirror inventory`, and
        content a delta expects the target to hold, in any of its repos), with the sha256 its name gives
        (an LFS blob of the hf layout), if any. Symlinks are not followed."""

    def in_place(self, sha256: str, size: int) -> bool:
        """Whether the target already keeps this content where publishing puts it, so an import needs neither
        to stage nor to write it (content a delta leaves to a store in a bucket). False by default: other
        layouts stage what they publish."""
        return False

    def open_in_place(self, sha256: str) -> BinaryIO:
        """A stream of content the target keeps `in_place` (an import scans it before publishing). Only a
        layout whose `in_place` holds some content opens any."""
        raise NotImplementedError(f"the {self.name} layout keeps no content in place")

    def named_content(self) -> Iterator[tuple[str, int]]:
        """Content the target holds that is no file to hash or stage from (the blobs of a store in a bucket),
        as (sha256, size): `mirror inventory` lists it beside `content_files`. None by default."""
        return iter(())

    @abstractmethod
    def held_repos(self) -> list[HeldRepo]:
        """The repos the target holds, their revisions and commits (`mirror inventory`)."""

    # -- helpers for publish: every write into the target goes through these ------------------------------

    def place(self, src: Path, dest: Path, scratch: Path) -> bool:
        """Put src's content at dest atomically (a temp name in scratch, then rename); whether hardlinked."""
        with self.replacing(dest, scratch) as tmp:
            linked = link_if_private(src, tmp, shared=self.link_shared)
        return linked

    def write_if_changed(
        self, path: Path, data: bytes, scratch: Path, *, only_if_absent: bool = False
    ) -> bool:
        """Write path atomically unless it already holds exactly data (or, with only_if_absent, anything);
        whether it was written."""
        try:
            if path.is_file() and not path.is_symlink() and (only_if_absent or path.read_bytes() == data):
                return False
        except OSError:
            pass
        with self.replacing(path, scratch) as tmp, open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True

    def place_symlink(self, link_to: str, dest: Path, scratch: Path) -> None:
        """Make dest a symlink to link_to atomically (whatever file or link was there goes)."""
        with self.replacing(dest, scratch) as tmp:
            os.symlink(link_to, tmp)

    @contextmanager
    def replacing(self, dest: Path, scratch: Path) -> Iterator[Path]:
        """A temporary name in scratch for the caller to fill; then renamed over dest in one step (whatever
        was there goes), a step before and after the rename."""
        self.check_inside(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = scratch / uuid.uuid4().hex
        try:
            yield tmp
            self.checkpoint()
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        self.checkpoint()

    def swap_in(self, built: Path, dest: Path, scratch: Path) -> None:
        """Make the folder `built` (in scratch) appear at dest in one step; whatever was there goes."""
        self.check_inside(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not (dest.exists() or dest.is_symlink()):
            os.rename(built, dest)
        elif exchange(built, dest):
            remove_path(built)  # now the old folder
        else:
            # No atomic exchange here: move the old one aside first. A kill in between leaves dest absent
            # (never half-written); the next import builds it again.
            old = scratch / f"{uuid.uuid4().hex}.old"
            os.rename(dest, old)
            self.checkpoint()
            try:
                os.rename(built, dest)
            except OSError:
                os.rename(old, dest)
                raise
            remove_path(old)
        self.checkpoint()

    def check_inside(self, path: Path) -> None:
        """Refuse a write whose folder resolves outside the target (a symlink planted in the tree)."""
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        real, root = os.path.realpath(parent), os.path.realpath(self.target)
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            raise MirrorError(
                f"{path} would be written outside {self.target} (through {parent}); refusing it"
            )


def claim_folder(owners: dict[Path, RepoKey], folder: Path, key: RepoKey, layout: str, remedy: str) -> None:
    """Refuse, before writing, two repos of one bundle in one folder, or a folder that is not a folder."""
    if folder in owners:
        raise MirrorError(f"{owners[folder]} and {key} would share {folder} in the {layout} layout; {remedy}")
    owners[folder] = key
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise MirrorError(f"{folder} exists and is not a folder; move it away and import again")
