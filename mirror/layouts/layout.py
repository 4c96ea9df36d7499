"""The layout interface an import writes through, its reports, and the file moves layouts share.

Every write an import makes into a target goes through the helpers here, so they all keep the same rules:
- content waits in a staging folder (`.mirror/tmp/<id>`, on the target's file system, locked while the
  import runs) until the whole bundle is verified; temp names live there too, never beside a real name;
- each visible name appears by one `os.replace` (or an atomic exchange, for a folder), so a SIGKILL at any
  moment leaves every name old or new; what a killed import left in staging is swept by the next one;
- an import that publishes nothing leaves the target as it found it: staging and every folder it created
  are removed, and the modification times of the folders it touched are put back.

`MIRROR_TEST_KILL_AFTER=N` is a hook for the tests only: the import SIGKILLs itself at its N-th step (a
file staged, a name published), so the tests can prove that a killed import never leaves a broken tree.
Unset (always, outside the tests) it does nothing.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import signal
import stat
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from mirror.bounded import RECORD, read_json_bounded
from mirror.bundle import BundleIndex, IndexedRepo
from mirror.clock import Clock
from mirror.errors import IntegrityError, LockedError, MirrorError
from mirror.exits import ExitCode, combine
from mirror.fsutil import flock_wait, remove_path
from mirror.hashing import file_sha256
from mirror.paths import check_commit, check_relpath, is_sha256, name_problem
from mirror.repo import RepoKey

KILL_AFTER_ENV = "MIRROR_TEST_KILL_AFTER"
_steps = 0


def checkpoint() -> None:
    """One step of an import; the test hook (see the module docstring) kills the process at the N-th."""
    global _steps
    limit = os.environ.get(KILL_AFTER_ENV)
    if not limit:
        return
    _steps += 1
    if _steps >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class RepoReport:
    """What an import did to one repo. `already_present`: nothing in the target changed.

    `kept` names the refs or folders left as they were because they are newer than this bundle (a newer
    bundle wrote them, or huggingface_hub moved a ref online).
    """

    repo: RepoKey
    path: Path
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

    def line(self) -> str:
        revs = ", ".join(f"{n} -> {c[:12]}" for n, c in self.revisions)
        kept = f"; kept {', '.join(self.kept)} as newer than this bundle" if self.kept else ""
        if self.already_present:
            return f"present   {self.repo} ({revs}) at {self.path}{kept}"
        return (
            f"imported  {self.repo} ({revs}) at {self.path}: "
            f"{self.files_written} files, {self.bytes_written} bytes written{kept}"
        )


@dataclass(frozen=True)
class MissingFile:
    """A file of a repo an import could not complete: where its content was to come from, and why it did not."""

    commit: str
    path: str
    size: int
    sha256: str
    why: str

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "why": self.why,
        }


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

    def lines(self, most: int = 20) -> list[str]:
        revs = ", ".join(f"{n} -> {c[:12]}" for n, c in self.revisions)
        needs = f"; needs {', '.join(self.volumes)}" if self.volumes else ""
        count = f"{len(self.files)} file{'' if len(self.files) == 1 else 's'}"
        out = [f"MISSING   {self.repo} ({revs}): not imported, {count} not at hand{needs}"]
        out += [f"            {f.commit[:12]} {f.path}: {f.why}" for f in self.files[:most]]
        if len(self.files) > most:
            out.append(f"            and {len(self.files) - most} more (--json lists them all)")
        return out


@dataclass(frozen=True)
class ImportReport:
    """What one import did (one bundle, or the volumes given of one set): its digest (a set's id) and, per
    repo, what was published; the repos left out for want of content, damaged volumes, and content the
    target should have held but holds damaged."""

    bundle: Path
    bundle_id: str  # the sha256 of its index (of a volume set: the set's id)
    layout: str
    target: Path
    repos: tuple[RepoReport, ...]
    missing: tuple[MissingRepo, ...] = ()
    damaged: tuple[str, ...] = ()  # one message per damaged volume, naming it
    corrupt: tuple[str, ...] = ()  # one message per file of the target whose content is not what it should be
    volumes: tuple[str, ...] = ()  # the volumes imported (a volume set)
    kept: tuple[str, ...] = ()  # what of a volume set is kept in the target for its next volumes (kept.py)

    @property
    def exit_code(self) -> ExitCode:
        """4 if anything was damaged, 3 if repos were left out for want of content, else 0."""
        if self.damaged or self.corrupt:
            return ExitCode.INTEGRITY
        return ExitCode.PARTIAL if self.missing else ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "bundle": str(self.bundle),
            "bundle_id": self.bundle_id,
            "layout": self.layout,
            "target": str(self.target),
            "repos": [r.to_json() for r in self.repos],
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

    def lines(self) -> list[str]:
        if self.volumes:
            head = f"{self.bundle.name}: volumes {', '.join(self.volumes)} (set {self.bundle_id[:16]})"
        else:
            head = f"{self.bundle.name} (bundle id {self.bundle_id[:16]})"
        out = [head] + [f"  {r.line()}" for r in self.repos]
        out += [f"  DAMAGED   {d}" for d in self.damaged]
        out += [f"  CORRUPT   {c}" for c in self.corrupt]
        out += [f"  {line}" for m in self.missing for line in m.lines()]
        out += [f"  KEPT      {k}" for k in self.kept]
        return out


@dataclass(frozen=True)
class ImportRun:
    """One `mirror import` of several bundles (or sets), each imported on its own: the report of each one
    imported, and the error of each one refused."""

    target: Path
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


@dataclass(frozen=True)
class ExpectedFile:
    """A file an import wrote, as its receipt records it (for `mirror verify --target`)."""

    path: Path
    size: int
    sha256: str


class HashCache:
    """sha256 of files by inode, so content hashed once (staged, adopted, checked) is not read again.

    An entry holds while the inode keeps its size and modification time.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[int, int], tuple[int, int, str]] = {}

    def remember(self, path: Path, sha256: str) -> None:
        st = path.stat()
        self._known[st.st_dev, st.st_ino] = (st.st_size, st.st_mtime_ns, sha256)

    def sha256(self, path: Path) -> str:
        st = path.stat()
        known = self._known.get((st.st_dev, st.st_ino))
        if known is not None and known[:2] == (st.st_size, st.st_mtime_ns):
            return known[2]
        digest = file_sha256(path)
        self.remember(path, digest)
        return digest

    def holds(self, path: Path, size: int, sha256: str) -> bool:
        """Whether path is a file with this content (following symlinks)."""
        try:
            return path.is_file() and path.stat().st_size == size and self.sha256(path) == sha256
        except OSError:
            return False


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
    content: Mapping[str, Path]  # sha256 -> verified file in staging
    scratch: Path  # the repo's staging folder: temp names for atomic writes, on the target's file system
    receipt: dict[str, Any]
    stamp: Stamp
    hashes: HashCache = field(default_factory=HashCache)


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

    def __init__(self, target: Path, *, symlinks: bool = True, link_shared: bool = False) -> None:
        self.target = Path(target)
        self.symlinks = symlinks
        # --link-shared: published files of equal content may share one inode across repos (and, in
        # --no-symlinks trees, across revisions); by default they never do (see `link_if_private`).
        self.link_shared = link_shared

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

    @abstractmethod
    def held_repos(self) -> list[HeldRepo]:
        """The repos the target holds, their revisions and commits (`mirror inventory`)."""

    # -- helpers for publish: every write into the target goes through these ------------------------------

    def place(self, src: Path, dest: Path, scratch: Path) -> bool:
        """Put src's content at dest atomically (a temp name in scratch, then rename); whether hardlinked."""
        self.check_inside(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = scratch / uuid.uuid4().hex
        try:
            linked = link_if_private(src, tmp, shared=self.link_shared)
            checkpoint()
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        checkpoint()
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
        self.check_inside(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = scratch / uuid.uuid4().hex
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            checkpoint()
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        checkpoint()
        return True

    def place_symlink(self, link_to: str, dest: Path, scratch: Path) -> None:
        """Make dest a symlink to link_to atomically (whatever file or link was there goes)."""
        self.check_inside(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = scratch / uuid.uuid4().hex
        try:
            os.symlink(link_to, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        checkpoint()

    def swap_in(self, built: Path, dest: Path, scratch: Path) -> None:
        """Make the folder `built` (in scratch) appear at dest in one step; whatever was there goes."""
        self.check_inside(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not (dest.exists() or dest.is_symlink()):
            os.rename(built, dest)
        elif _exchange(built, dest):
            remove_path(built)  # now the old folder
        else:
            # No atomic exchange here: move the old one aside first. A kill in between leaves dest absent
            # (never half-written); the next import builds it again.
            old = scratch / f"{uuid.uuid4().hex}.old"
            os.rename(dest, old)
            checkpoint()
            try:
                os.rename(built, dest)
            except OSError:
                os.rename(old, dest)
                raise
            remove_path(old)
        checkpoint()

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


def entries(folder: Path) -> list[Path]:
    """The entries of a folder, sorted; none if it is absent or unreadable."""
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def regular_files(folder: Path, *, recursive: bool = True) -> Iterator[Path]:
    """The regular files in folder (and its subfolders), sorted; symlinks are neither yielded nor followed."""
    for entry in entries(folder):
        if entry.is_symlink():
            continue
        if entry.is_dir():
            if recursive:
                yield from regular_files(entry)
        elif entry.is_file():
            yield entry


def repo_json(repo: RepoKey, revisions: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """How every import report names a repo and its revisions."""
    return {
        "repo": str(repo),
        **repo.to_json(),
        "revisions": [{"name": n, "commit": c} for n, c in revisions],
    }


def claim_folder(owners: dict[Path, RepoKey], folder: Path, key: RepoKey, layout: str, remedy: str) -> None:
    """Refuse, before writing, two repos of one bundle in one folder, or a folder that is not a folder."""
    if folder in owners:
        raise MirrorError(f"{owners[folder]} and {key} would share {folder} in the {layout} layout; {remedy}")
    owners[folder] = key
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise MirrorError(f"{folder} exists and is not a folder; move it away and import again")


def link_or_copy(src: Path, dest: Path) -> bool:
    """dest as a hardlink of src, or a copy where the file system cannot link; whether it is a link."""
    try:
        os.link(src, dest)
        return True
    except OSError:
        shutil.copyfile(src, dest)
        return False


def link_if_private(src: Path, dest: Path, *, shared: bool) -> bool:
    """dest with src's content, for a published tree; whether it is a hardlink.

    A hardlink only while src is nothing but a staging name (its first use: no published file shares its
    inode yet), or with `shared` (--link-shared); else a copy. So, by default, a content staged once serves
    many repos (or --no-symlinks revisions) and each gets its own file, as the hub clients keep them:
    editing one in place never changes another, and deleting one frees its space.
    """
    if shared or os.stat(src).st_nlink == 1:
        return link_or_copy(src, dest)
    shutil.copyfile(src, dest)
    return False


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two names atomically (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def receipt_files(receipt: Path) -> list[tuple[str, str, int, str]]:
    """(commit, path, size, sha256) of every file a receipt lists; ValueError if it is malformed."""
    try:
        data = read_json_bounded(receipt, RECORD, MirrorError)
    except MirrorError as e:
        raise ValueError(str(e)) from None
    found = []
    try:
        for c in data["commits"]:
            commit = check_commit(c["commit"])
            for f in c["files"]:
                path, size, sha256 = check_relpath(f["path"]), f["size"], f["sha256"]
                if not isinstance(size, int) or not isinstance(sha256, str) or not is_sha256(sha256):
                    raise ValueError(f"bad file record {f!r}")
                found.append((commit, path, size, sha256))
    except (KeyError, TypeError, IntegrityError) as e:
        raise ValueError(f"malformed: {e}") from None
    return found


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def read_json_record(path: Path) -> dict[str, Any]:
    """A small JSON object mirror keeps beside what it wrote; empty when absent or unreadable."""
    try:
        data = read_json_bounded(path, RECORD, MirrorError)
    except MirrorError:
        return {}
    return data if isinstance(data, dict) else {}


def remove_empty(*folders: Path) -> None:
    """Remove each folder if it is empty, in order (children first)."""
    for folder in folders:
        with suppress(OSError):
            folder.rmdir()


class Staging:
    """The staging folders of one import, and the trace it leaves until it publishes.

    Each folder is `<root>/<random id>`, locked (flock) while the import runs, so the next import can tell
    a killed import's leftovers (unlocked) from a running one's and sweep them. Every folder created on the
    way is recorded, with the modification time of the folders it was created in: when the import ends
    without publishing, staging and those folders go and the times are put back, so the target (and the
    folder around it) look exactly as before. Folders a publish left empty go too.
    """

    def __init__(self) -> None:
        self._created: list[Path] = []
        self._touched: dict[Path, tuple[int, int, frozenset[str]]] = {}
        self._folders: list[tuple[Path, int]] = []
        self._roots: list[Path] = []
        self.publishing = False  # set once publishing starts: the target may change from then on
        self.changed = True  # after publishing: whether anything in the target changed
        self._lock: int | None = None
        self.kept: list[Path] = []  # folders left in place (a volume set's kept staging, see kept.py)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def make_dirs(self, path: Path) -> None:
        """mkdir -p, recording what it creates and the state of the folder it creates it in."""
        missing = []
        probe = path
        while not probe.exists():
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
        if not missing:
            return
        if probe not in self._touched and probe.is_dir():
            st = probe.stat()
            self._touched[probe] = (st.st_atime_ns, st.st_mtime_ns, _names(probe))
        for folder in reversed(missing):
            folder.mkdir()
            self._created.append(folder)

    def lock(
        self, folder: Path, wait: float, busy: Callable[[], LockedError], clock: Clock | None = None
    ) -> None:
        """Hold folder (made if absent, and removed again on close like every folder staging made) locked
        until close, waiting up to `wait` seconds of `clock` for another holder (then `busy()` is raised)."""
        while True:
            with suppress(FileExistsError):  # another import made it meanwhile
                self.make_dirs(folder)
            try:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue  # another import removed the folder it had made: make it again
            try:
                flock_wait(fd, wait, busy, clock=clock)
                held = os.fstat(fd)
                with suppress(FileNotFoundError):
                    st = os.stat(folder)
                    if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino):
                        self._lock = fd
                        return
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # its holder removed the folder it had made meanwhile: lock the new one

    def folder(self, root: Path) -> Path:
        """A new, locked staging folder under root."""
        self.make_dirs(root)
        if root not in self._touched:
            st = root.stat()
            self._touched[root] = (st.st_atime_ns, st.st_mtime_ns, _names(root))
        self._roots.append(root)
        path = root / uuid.uuid4().hex
        path.mkdir()
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._folders.append((path, fd))
        return path

    def sweep(self, root: Path) -> None:
        """Remove what killed imports left in root (entries no running import holds locked)."""
        ours = {p for p, _ in self._folders}
        try:
            entries = list(root.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry in ours:
                continue
            if entry.is_dir() and not entry.is_symlink():
                try:
                    fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                except OSError:
                    continue  # gone, or replaced by a link meanwhile
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a running import's
                else:
                    shutil.rmtree(entry, ignore_errors=True)
                finally:
                    os.close(fd)
            else:
                entry.unlink(missing_ok=True)

    def close(self) -> None:
        for path, fd in self._folders:
            shutil.rmtree(path, ignore_errors=True)
            os.close(fd)
        self._folders.clear()
        created = [f for f in reversed(self._created) if not any(f == k or f in k.parents for k in self.kept)]
        if self.publishing:
            # Folders publishing left empty go, and staging roots a killed import left behind.
            remove_empty(*created, *self._roots)
        else:
            for folder in created:
                with suppress(OSError):
                    shutil.rmtree(folder) if _only_folders(folder) else folder.rmdir()
        if not (self.publishing and self.changed):
            # Put back the times of folders that hold again exactly what they held: no trace of staging.
            for folder, (atime, mtime, names) in self._touched.items():
                with suppress(OSError):
                    if _names(folder) == names:
                        os.utime(folder, ns=(atime, mtime))
        self._created.clear()
        self._touched.clear()
        self._roots.clear()
        if self._lock is not None:
            os.close(self._lock)  # last: the next import finds the target as this one leaves it
            self._lock = None


def _names(folder: Path) -> frozenset[str]:
    try:
        return frozenset(os.listdir(folder))
    except OSError:
        return frozenset()


def _only_folders(folder: Path) -> bool:
    """Whether folder holds nothing but (empty) folders: what staging created, and nothing else."""
    return all(not names for _, _, names in os.walk(folder))


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
