"""The `dir` layout: plain folders that `from_pretrained("DIR/org/name")` loads.

    DIR/<repo_id>/                         the first revision the bundle lists
    DIR/<repo_id>@<revision>/              each other revision
    DIR/.mirror/receipts/<folder>.json     what mirror imported into each folder (kept out of the folders)
    DIR/.mirror/tmp/                       staging during an import

Revision names are percent-encoded in folder names (`urllib.parse.quote(name, safe="")`): `v1.0` and
`main` stay as they are, `refs/pr/1` becomes `refs%2Fpr%2F1`. Unlike replacing `/` with `--`, this cannot
make two revisions share a folder, and no name can leave DIR or nest inside another folder.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mirror.bundle import BundleIndex, IndexedRepo
from mirror.errors import MirrorError
from mirror.fsutil import temp_sibling
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


def revision_folders(repo: IndexedRepo) -> list[tuple[str, str, str]]:
    """(folder relative to DIR, revision name, commit) for each revision, the first at DIR/<repo_id>."""
    return [
        (repo.repo_id if i == 0 else f"{repo.repo_id}@{quote(name, safe='')}", name, commit)
        for i, (name, commit) in enumerate(repo.revisions)
    ]


class DirLayout(Layout):
    name = "dir"

    @property
    def _meta(self) -> Path:
        return self.target / ".mirror"

    def receipt_path(self, folder: str) -> Path:
        return self._meta / "receipts" / f"{quote(folder, safe='')}.json"

    def check(self, index: BundleIndex) -> None:
        owners: dict[str, RepoKey] = {}
        for repo in index.repos:
            for folder, _, _ in revision_folders(repo):
                if folder in owners:
                    raise MirrorError(
                        f"{owners[folder]} and {repo.key} would share the folder {folder}; import them into "
                        "different --target folders"
                    )
                owners[folder] = repo.key
        for folder, key in owners.items():
            parts = folder.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent in owners or self.receipt_path(parent).exists():
                    raise MirrorError(
                        f"{key} would go to {folder}, inside the model folder {parent}; "
                        "import it into another --target"
                    )
            path = join_inside(self.target, folder)
            if (path.exists() or path.is_symlink()) and not self.receipt_path(folder).exists():
                # Replacing it would delete what someone else put there (or another model nested in it).
                raise MirrorError(
                    f"{path} exists but was not written by mirror import; move it away and import again"
                )

    @contextmanager
    def stage(self, repo: IndexedRepo) -> Iterator[Path]:
        staging = self._meta / "tmp" / uuid.uuid4().hex
        try:
            staging.mkdir(parents=True)
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            remove_empty(staging.parent, self._meta)

    def publish(self, repo: IndexedRepo, content: Mapping[str, Path], receipt: dict[str, Any]) -> RepoReport:
        changed = False
        files_written = bytes_written = 0
        for folder, name, commit_id in revision_folders(repo):
            path = join_inside(self.target, folder)
            files = repo.commit(commit_id).files
            if not _holds(path, files):
                _build(path, files, content)
                files_written += len(files)
                bytes_written += sum(f.size for f in files)
                changed = True
            data = {**receipt, "folder": folder, "revision": name, "commit": commit_id}
            write_if_changed(self.receipt_path(folder), json_bytes(data))
        return RepoReport(
            repo=repo.key,
            path=join_inside(self.target, repo.repo_id),
            revisions=repo.revisions,
            files_written=files_written,
            bytes_written=bytes_written,
            already_present=not changed,
        )


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


def _build(path: Path, files: tuple[FileRecord, ...], content: Mapping[str, Path]) -> None:
    """Build the folder beside its place under a hidden name, then swap it in whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        tmp.mkdir()
        for f in files:
            dest = join_inside(tmp, f.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            # Hardlinks share one copy of a file between revisions (and with other repos of the bundle).
            link_or_copy(content[f.sha256], dest)
        if path.exists() or path.is_symlink():
            old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.old")
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


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
