"""The layout interface an import writes through, its reports, and the file moves layouts share."""

from __future__ import annotations

import json
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mirror.bundle import BundleIndex, IndexedRepo
from mirror.fsutil import atomic_write_bytes, temp_sibling
from mirror.store import RepoKey


@dataclass(frozen=True)
class RepoReport:
    """What an import did to one repo. `already_present`: nothing in the target changed."""

    repo: RepoKey
    path: Path
    revisions: tuple[tuple[str, str], ...]
    files_written: int
    bytes_written: int
    already_present: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "repo": str(self.repo),
            "source": self.repo.source,
            "repo_type": self.repo.repo_type,
            "repo_id": self.repo.repo_id,
            "path": str(self.path),
            "revisions": [{"name": n, "commit": c} for n, c in self.revisions],
            "files_written": self.files_written,
            "bytes_written": self.bytes_written,
            "already_present": self.already_present,
        }

    def line(self) -> str:
        revs = ", ".join(f"{n} -> {c[:12]}" for n, c in self.revisions)
        if self.already_present:
            return f"present   {self.repo} ({revs}) at {self.path}"
        return (
            f"imported  {self.repo} ({revs}) at {self.path}: "
            f"{self.files_written} files, {self.bytes_written} bytes written"
        )


@dataclass(frozen=True)
class ImportReport:
    """What one bundle's import did: its digest and, per repo, what was published."""

    bundle: Path
    sha256: str
    layout: str
    target: Path
    repos: tuple[RepoReport, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle),
            "sha256": self.sha256,
            "layout": self.layout,
            "target": str(self.target),
            "repos": [r.to_json() for r in self.repos],
        }

    def lines(self) -> list[str]:
        return [f"{self.bundle.name} (sha256 {self.sha256})"] + [f"  {r.line()}" for r in self.repos]


class Layout(ABC):
    """A tree the hub clients load offline, written one repo at a time.

    The importer streams a bundle once. Verified content waits in the repo's staging folder (on the target's
    file system, where the layout's own tools ignore it), named by its sha256. Once every file of a repo is
    verified, `publish` makes the repo visible; a repo that fails is never published, and its staging
    folder is removed either way.
    """

    name: ClassVar[str]

    def __init__(self, target: Path) -> None:
        self.target = Path(target)

    def check(self, index: BundleIndex) -> None:  # noqa: B027 - optional hook, most layouts need none
        """Refuse, before anything is written, a bundle this layout cannot hold (raise MirrorError)."""

    @abstractmethod
    def stage(self, repo: IndexedRepo) -> AbstractContextManager[Path]:
        """A fresh staging folder for the repo's verified content, removed on exit."""

    @abstractmethod
    def publish(self, repo: IndexedRepo, content: Mapping[str, Path], receipt: dict[str, Any]) -> RepoReport:
        """Make the repo visible; `content` maps each sha256 to its verified, staged file."""


def link_or_copy(src: Path, dest: Path) -> None:
    """dest as a hardlink of src, or a copy where the file system cannot link."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def place_file(src: Path, dest: Path) -> None:
    """Put src's content at dest atomically (a temp name beside dest, then rename)."""
    tmp = temp_sibling(dest)
    try:
        link_or_copy(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write path atomically unless it already holds exactly data; whether it was written."""
    try:
        if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write_bytes(path, data)
    return True


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def remove_empty(*folders: Path) -> None:
    """Remove each folder if it is empty, in order (children first)."""
    for folder in folders:
        with suppress(OSError):
            folder.rmdir()
