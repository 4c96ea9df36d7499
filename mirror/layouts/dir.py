"""The `dir` layout: plain folders that `from_pretrained("DIR/org/name")` loads.

    DIR/<repo_id>/                         the first revision the bundle lists
    DIR/<repo_id>@<revision>/              each other revision
    DIR/.mirror/receipts/<folder>.json     what mirror imported into each folder (kept out of the folders)
    DIR/.mirror/tmp/<id>/                  staging during an import

Revision names are percent-encoded in folder names (`urllib.parse.quote(name, safe="")`): `v1.0` and
`main` stay as they are, `refs/pr/1` becomes `refs%2Fpr%2F1`. Unlike replacing `/` with `--`, this cannot
make two revisions share a folder, and no name can leave DIR or nest inside another folder.

`DirLayout` is also the base of every layout made of one plain folder per revision (the `modelscope`
layout): a subclass says where each revision's folder goes (`placements`), where its receipt and staging
live, and inherits the checks, the verified reuse of a folder that already holds the files, and the
build-aside-then-swap that never shows a half-written folder: a folder is built in staging and exchanged
with the old one in one atomic step (Linux renameat2; elsewhere two renames, where a kill in between
leaves the folder absent until the next import builds it). A folder is replaced only by a bundle at least
as new (by creation time) as the one that wrote it, so several bundles give the same tree in any order.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mirror.bundle import BundleIndex, IndexedRepo
from mirror.errors import MirrorError
from mirror.fsutil import link_if_private, link_or_copy, read_json_record, regular_files
from mirror.hashing import HashCache
from mirror.layouts.layout import ExpectedFile, Layout, Publication, Use
from mirror.paths import check_relpath, is_commit, join_inside
from mirror.receipt import read_receipt
from mirror.repo import RepoKey
from mirror.report import HeldRepo, RepoReport
from mirror.signing import FolderSequences
from mirror.snapshot import FileRecord


@dataclass(frozen=True)
class Placement:
    """Where one revision of a repo goes: the folder `name` (a relative path) under `root`."""

    root: Path  # the folder revision folders are named in (DIR; <cache>/models/<owner>--<name>/snapshots)
    name: str
    revision: str
    commit: str
    # An alias the layout adds (modelscope's `master`): never written over a folder mirror did not write.
    implied: bool = False

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

    def receipt_paths(self) -> Iterator[Path]:
        """Every receipt in the target."""
        yield from sorted((self.target / ".mirror" / "receipts").glob("*.json"))

    def staging_root(self, repo: IndexedRepo) -> Path:
        return self.target / ".mirror" / "tmp"

    @property
    def sequences(self) -> FolderSequences:
        return FolderSequences(self.target / ".mirror" / "trust")

    def repo_path(self, repo: IndexedRepo) -> Path:
        """The folder a report names for the repo."""
        return join_inside(self.target, repo.repo_id)

    def uses(self, repo: IndexedRepo) -> Iterator[Use]:
        root = self.staging_root(repo)
        yield Use(root.parent, "dir")
        yield Use(root, "dir")
        built = root / ("0" * 32) / ("0" * 39)  # folder-<uuid> in a staging folder
        for p in self.placements(repo):
            receipt = self.receipt_path(p.root, p.name)
            yield Use(receipt.parent, "dir")
            yield Use(receipt, "file")
            yield Use(p.path, "dir", named=p.root)
            for f in repo.commit(p.commit).files:
                yield Use(join_inside(p.path, f.path), "staged")
                yield Use(join_inside(built, f.path), "staged")

    # -- shared by every plain-folder layout --------------------------------------------------------------

    def check(self, index: BundleIndex) -> None:
        owners: dict[tuple[Path, str], RepoKey] = {}
        implied: dict[tuple[Path, str], bool] = {}
        for repo in index.repos:
            for p in self.placements(repo):
                implied[p.root, p.name] = p.implied
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
            if self._foreign(root, name) and not implied[root, name]:
                # Replacing it would delete what someone else put there (or another model nested in it).
                raise MirrorError(
                    f"{path} exists but was not written by mirror import; move it away and import again"
                )

    def _foreign(self, root: Path, name: str) -> bool:
        """Whether the folder `name` under root holds something mirror did not write."""
        path = join_inside(root, name)
        return (
            (path.exists() or path.is_symlink())
            and not self.receipt_path(root, name).exists()
            and not _empty_dir(path)
        )

    def _show(self, path: Path) -> str:
        try:
            return path.relative_to(self.target).as_posix()
        except ValueError:
            return str(path)

    def candidates(self, repo: IndexedRepo) -> Iterator[tuple[str, int, Path]]:
        for p in self.placements(repo):
            folder = p.path
            if folder.is_symlink() or not folder.is_dir():
                continue
            for f in repo.commit(p.commit).files:
                path = join_inside(folder, f.path)
                if not path.is_symlink():
                    yield f.sha256, f.size, path

    def copies(self, repo: IndexedRepo) -> Iterator[tuple[str, int, Path]]:
        # A repo's revisions share a content (hardlinks, as the hf cache's share a blob); repos never do.
        seen: set[str] = set()
        for p in self.placements(repo):
            for f in repo.commit(p.commit).files:
                if f.sha256 not in seen:
                    seen.add(f.sha256)
                    yield f.sha256, f.size, join_inside(p.path, f.path)

    def publish(self, pub: Publication) -> RepoReport:
        repo, scratch = pub.repo, pub.scratch
        changed = False
        files_written = bytes_written = 0
        kept: list[str] = []
        # sha256 -> a file this publish wrote for the repo, that its other revisions share
        ours: dict[str, Path] = {}
        for p in self.placements(repo):
            if p.implied and self._foreign(p.root, p.name):
                continue  # the layout's own tools wrote that one (modelscope's real `master`): keep it
            receipt_path = self.receipt_path(p.root, p.name)
            previous = read_json_record(receipt_path)
            newer = pub.stamp.older_than(previous)
            if newer and previous.get("commit") != p.commit:
                kept.append(self._show(p.path))  # a newer bundle put another commit there
                continue
            files = repo.commit(p.commit).files
            if not newer:
                # The receipt first: it is what marks the folder as mirror's, so a kill right after the
                # swap below still leaves a folder the next import may replace.
                receipt = replace(
                    pub.receipt, folder=self._show(p.path), revision=p.revision, commit=p.commit
                )
                self.write_if_changed(receipt_path, receipt.to_bytes(), scratch)
            if not _holds(p.path, files, pub.hashes):
                built = scratch / f"folder-{uuid.uuid4().hex}"
                built.mkdir()
                for f in files:
                    dest = join_inside(built, f.path)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    # One copy of a content shared by the repo's revisions, by hardlink; never with other
                    # repos, unless --link-shared (link_if_private).
                    if f.sha256 in ours:
                        link_or_copy(ours[f.sha256], dest)
                    else:
                        link_if_private(pub.content[f.sha256], dest, shared=self.link_shared)
                self.swap_in(built, p.path, scratch)
                for f in files:
                    ours.setdefault(f.sha256, join_inside(p.path, f.path))
                files_written += len(files)
                bytes_written += sum(f.size for f in files)
                changed = True
        return RepoReport(
            repo=repo.key,
            path=self.repo_path(repo),
            revisions=repo.revisions,
            files_written=files_written,
            bytes_written=bytes_written,
            already_present=not changed,
            kept=tuple(kept),
        )

    def expected_files(self) -> tuple[list[ExpectedFile], list[str]]:
        files: list[ExpectedFile] = []
        problems: list[str] = []
        for receipt in self.receipt_paths():
            try:
                record = read_receipt(receipt)
                if record.folder is None or record.commit is None:
                    raise ValueError("malformed: no folder or commit")
                folder = join_inside(self.target, check_relpath(record.folder))
                key = RepoKey(record.source, record.repo_type, record.repo_id)
                files += [
                    ExpectedFile(join_inside(folder, path), size, sha256, key, c, path)
                    for c, path, size, sha256 in record.files()
                    if c == record.commit
                ]
            except (OSError, ValueError, MirrorError) as e:
                problems.append(f"{receipt}: unreadable receipt ({e})")
        return files, problems

    def _receipts(self) -> Iterator[dict[str, Any]]:
        for receipt in self.receipt_paths():
            data = read_json_record(receipt)
            if data:
                yield data

    def content_files(self) -> Iterator[tuple[Path, str | None]]:
        # Only the folders mirror wrote (a dir target may hold anything else besides).
        folders = set()
        for data in self._receipts():
            try:
                folders.add(join_inside(self.target, check_relpath(str(data.get("folder")))))
            except MirrorError:
                continue
        for folder in sorted(folders):
            yield from ((f, None) for f in regular_files(folder))

    def held_repos(self) -> list[HeldRepo]:
        revisions: dict[tuple[str, str], dict[str, str | None]] = {}
        for data in self._receipts():
            repo_type, repo_id = data.get("repo_type"), data.get("repo_id")
            revision, commit = data.get("revision"), data.get("commit")
            if isinstance(repo_type, str) and isinstance(repo_id, str) and isinstance(revision, str):
                revisions.setdefault((repo_type, repo_id), {})[revision] = (
                    commit if isinstance(commit, str) and is_commit(commit) else None
                )
        self._add_unrecorded(revisions)
        return [
            HeldRepo(
                repo_type,
                repo_id,
                tuple(sorted(revs.items())),
                tuple(sorted({c for c in revs.values() if c is not None})),
            )
            for (repo_type, repo_id), revs in sorted(revisions.items())
        ]

    def _add_unrecorded(self, revisions: dict[tuple[str, str], dict[str, str | None]]) -> None:
        """Revision folders the layout's own tools wrote, without a receipt (none in a dir target)."""


def _holds(folder: Path, files: tuple[FileRecord, ...], hashes: HashCache) -> bool:
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
    return all(hashes.holds(join_inside(folder, f.path), f.size, f.sha256) for f in files)


def _empty_dir(path: Path) -> bool:
    try:
        return not path.is_symlink() and path.is_dir() and not any(path.iterdir())
    except OSError:
        return False
