"""The `dir` layout: plain folders that `from_pretrained("DIR/org/name")` loads.

    DIR/<repo_id>/                         the first revision the bundle lists
    DIR/<repo_id>@<revision>/              each other revision
    DIR/.mirror/receipts/<folder>.json     what mirror imported into each folder (kept out of the folders)
    DIR/.mirror/tmp/                       staging during an import

Revision names are percent-encoded in folder names (`urllib.parse.quote(name, safe="")`): `v1.0` and
`main` stay as they are, `refs/pr/1` becomes `refs%2Fpr%2F1`. Unlike replacing `/` with `--`, this cannot
make two revisions share a folder, and no name can leave DIR or nest inside another folder.

`DirLayout` is also the base of every layout made of one plain folder per revision (the `modelscope`
layout): a subclass says where each revision's folder goes (`placements`), where its receipt and scratch
space live, and inherits the checks, the verified reuse of a folder that already holds the files, and the
build-aside-then-swap that never shows a half-written folder.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mirror.bundle import BundleIndex, IndexedRepo
from mirror.errors import MirrorError
from mirror.hashing import file_sha256
from mirror.importers.layout import (
    Layout,
    RepoReport,
    json_bytes,
    link_or_copy,
    remove_empty,
    write_if_changed,
)
from mirror.paths import join_inside
from mirror.snapshot import FileRecord
from mirror.store import RepoKey


@dataclass(frozen=True)
class Placement:
    """Where one revision of a repo goes: the folder `name` (a relative path) under `root`."""

    root: Path  # the folder revision folders are named in (DIR; <cache>/models/<owner>--<name>/snapshots)
    name: str
    revision: str
    commit: str

    @property
    def path(self) -> Path:
        return join_inside(self.root, self.name)


def revision_folders(repo: IndexedRepo) -> list[tuple[str, str, str]]:
    """(folder relative to DIR, revision name, commit) for each revision, the first at DIR/<repo_id>."""
    return [
        (repo.repo_id if i == 0 else f"{repo.repo_id}@{quote(name, safe='')}", name, commit)
        for i, (name, commit) in enumerate(repo.revisions)
    ]


class DirLayout(Layout):
    name = "dir"

    # -- what a subclass overrides: where things go -----------------------------------------------------

    def placements(self, repo: IndexedRepo) -> list[Placement]:
        """One folder per revision of the repo."""
        return [
            Placement(self.target, folder, name, commit) for folder, name, commit in revision_folders(repo)
        ]

    def receipt_path(self, root: Path, name: str) -> Path:
        """Where the receipt of the folder `name` under `root` goes (outside every model folder)."""
        return self.target / ".mirror" / "receipts" / f"{quote(name, safe='')}.json"

    def scratch_dir(self, repo: IndexedRepo) -> Path:
        """Where the repo's staging folder goes during an import (removed when empty)."""
        return self.target / ".mirror" / "tmp"

    def scratch_name(self, placement: Placement, kind: str) -> Path:
        """A unique name, on the folder's file system, to build it aside (`tmp`) or move the old one (`old`)."""
        path = placement.path
        return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.{kind}")

    def new_folders(self, repo: IndexedRepo) -> list[Path]:
        """Folders an import creates for the repo and removes again, children first, if it publishes nothing."""
        return []

    def repo_path(self, repo: IndexedRepo) -> Path:
        """The folder a report names for the repo."""
        return join_inside(self.target, repo.repo_id)

    # -- shared by every plain-folder layout --------------------------------------------------------------

    def check(self, index: BundleIndex) -> None:
        owners: dict[tuple[Path, str], RepoKey] = {}
        for repo in index.repos:
            for p in self.placements(repo):
                if (p.root, p.name) in owners:
                    raise MirrorError(
                        f"{owners[p.root, p.name]} and {repo.key} would share the folder {self._show(p.path)}; "
                        "import them into different --target folders"
                    )
                owners[p.root, p.name] = repo.key
        for (root, name), key in owners.items():
            parts = name.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if (root, parent) in owners or self.receipt_path(root, parent).exists():
                    raise MirrorError(
                        f"{key} would go to {self._show(join_inside(root, name))}, inside the model folder "
                        f"{self._show(join_inside(root, parent))}; import it into another --target"
                    )
            path = join_inside(root, name)
            if (
                (path.exists() or path.is_symlink())
                and not self.receipt_path(root, name).exists()
                and not _empty_dir(path)
            ):
                # Replacing it would delete what someone else put there (or another model nested in it).
                raise MirrorError(
                    f"{path} exists but was not written by mirror import; move it away and import again"
                )

    def _show(self, path: Path) -> str:
        try:
            return path.relative_to(self.target).as_posix()
        except ValueError:
            return str(path)

    @contextmanager
    def stage(self, repo: IndexedRepo) -> Iterator[Path]:
        scratch = self.scratch_dir(repo)
        staging = scratch / uuid.uuid4().hex
        # The bookkeeping folders go whenever they are empty; the repo's own only if this import made them.
        cleanup = [scratch, scratch.parent, *(d for d in self.new_folders(repo) if not d.exists())]
        try:
            staging.mkdir(parents=True)
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            remove_empty(*cleanup)

    def publish(self, repo: IndexedRepo, content: Mapping[str, Path], receipt: dict[str, Any]) -> RepoReport:
        changed = False
        files_written = bytes_written = 0
        for p in self.placements(repo):
            files = repo.commit(p.commit).files
            if not _holds(p.path, files):
                self._build(p, files, content)
                files_written += len(files)
                bytes_written += sum(f.size for f in files)
                changed = True
            data = {**receipt, "folder": self._show(p.path), "revision": p.revision, "commit": p.commit}
            write_if_changed(self.receipt_path(p.root, p.name), json_bytes(data))
        return RepoReport(
            repo=repo.key,
            path=self.repo_path(repo),
            revisions=repo.revisions,
            files_written=files_written,
            bytes_written=bytes_written,
            already_present=not changed,
        )

    def _build(
        self, placement: Placement, files: tuple[FileRecord, ...], content: Mapping[str, Path]
    ) -> None:
        """Build the folder aside under a scratch name, then swap it in whole."""
        path = placement.path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.scratch_name(placement, "tmp")
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            for f in files:
                dest = join_inside(tmp, f.path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                # Hardlinks share one copy of a file between revisions (and with other repos of the bundle).
                link_or_copy(content[f.sha256], dest)
            if path.exists() or path.is_symlink():
                old = self.scratch_name(placement, "old")
                os.rename(path, old)
                try:
                    os.rename(tmp, path)
                except OSError:
                    os.rename(old, path)
                    raise
                _remove(old)
            else:
                os.rename(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _holds(folder: Path, files: tuple[FileRecord, ...]) -> bool:
    """Whether folder holds exactly these files (same paths, sizes and sha256), and nothing else."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    found: set[str] = set()
    for root, dirs, names in os.walk(folder):
        base = Path(root)
        if any((base / d).is_symlink() for d in dirs):
            return False
        for n in names:
            p = base / n
            if p.is_symlink() or not p.is_file():
                return False
            found.add(p.relative_to(folder).as_posix())
    if found != {f.path for f in files}:
        return False
    for f in files:
        p = join_inside(folder, f.path)
        if p.stat().st_size != f.size or file_sha256(p) != f.sha256:
            return False
    return True


def _empty_dir(path: Path) -> bool:
    try:
        return not path.is_symlink() and path.is_dir() and not any(path.iterdir())
    except OSError:
        return False


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
