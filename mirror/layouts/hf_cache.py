"""What an hf cache holds, read back (`mirror inventory`, `mirror verify --target`, the content a delta
leaves to the target): its repo folders, their refs and snapshots, the content files, the files the
receipts say an import wrote, and the imported revisions huggingface_hub's cache tools removed since.
Reads only; `mirror.layouts.hf` writes (and its docstring draws the cache).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from mirror.bounded import REF, read_bounded
from mirror.errors import MirrorError
from mirror.fsutil import entries, regular_files
from mirror.layouts.layout import ExpectedFile
from mirror.paths import is_commit, is_sha256, join_inside
from mirror.receipt import read_receipt
from mirror.repo import RepoKey, parse_cache_folder_name
from mirror.report import HeldRepo


class HfCacheReader:
    """The reading half of `HfLayout`: what the cache under `target` holds."""

    target: Path

    def _repo_dirs(self) -> list[Path]:
        try:
            return sorted(
                p for p in self.target.iterdir() if "--" in p.name and p.is_dir() and not p.is_symlink()
            )
        except OSError:
            return []

    def content_files(self) -> Iterator[tuple[Path, str | None]]:
        for repo_dir in self._repo_dirs():
            # blobs/<etag>: an LFS blob is named by its sha256; an ordinary one by its git sha1, which says
            # nothing of its sha256. Partial downloads (<etag>.incomplete) are not content.
            for blob in regular_files(repo_dir / "blobs", recursive=False):
                if is_sha256(blob.name):
                    yield blob, blob.name
                elif is_commit(blob.name):  # 40 hex digits, as a git sha1
                    yield blob, None
            # Real files in snapshots/: a --no-symlinks import, or huggingface_hub without symlinks.
            yield from ((f, None) for f in regular_files(repo_dir / "snapshots", recursive=True))

    def held_repos(self) -> list[HeldRepo]:
        found = []
        for repo_dir in self._repo_dirs():
            parsed = parse_cache_folder_name(repo_dir.name)
            if parsed is None:
                continue
            repo_type, repo_id = parsed
            refs_dir = repo_dir / "refs"
            revisions = []
            for ref in regular_files(refs_dir, recursive=True):
                try:
                    commit = read_bounded(ref, REF, MirrorError).decode("utf-8").strip()
                except (MirrorError, UnicodeDecodeError):
                    continue
                if is_commit(commit):
                    revisions.append((ref.relative_to(refs_dir).as_posix(), commit))
            snaps = repo_dir / "snapshots"
            commits = sorted(p.name for p in entries(snaps) if is_commit(p.name) and p.is_dir())
            found.append(HeldRepo(repo_type, repo_id, tuple(sorted(revisions)), tuple(commits)))
        return found

    def expected_files(self) -> tuple[list[ExpectedFile], list[str]]:
        files: list[ExpectedFile] = []
        problems: list[str] = []
        for repo_dir in self._repo_dirs():
            removed = _removed_commits(repo_dir)
            for receipt in sorted((repo_dir / ".mirror" / "receipts").glob("*.json")):
                try:
                    record = read_receipt(receipt)
                    key = RepoKey(record.source, record.repo_type, record.repo_id)
                    for commit, path, size, sha256 in record.files():
                        if commit in removed:
                            continue
                        snap = join_inside(repo_dir / "snapshots" / commit, path)
                        files.append(ExpectedFile(snap, size, sha256, key, commit, path))
                except (OSError, ValueError) as e:
                    problems.append(f"{receipt}: unreadable receipt ({e})")
        return files, problems

    def removed_revisions(self) -> list[str]:
        return [
            f"{repo_dir.name}: revision {commit} was removed from the cache (as `hf cache rm` or "
            "scan_cache_dir().delete_revisions() do); not checked"
            for repo_dir in self._repo_dirs()
            for commit in sorted(_removed_commits(repo_dir))
        ]


def read_ref(ref: Path) -> str | None:
    """The commit a ref file names (None if there is none; its text as it is if it is no commit, "" if it
    is no small regular file)."""
    try:
        raw = read_bounded(ref, REF, MirrorError, missing_ok=True)
    except MirrorError:
        return ""
    return None if raw is None else raw.decode("utf-8", errors="replace").strip()


def _removed_commits(repo_dir: Path) -> set[str]:
    """The commits the receipts list that huggingface_hub's cache tools removed: `delete_revisions` (which
    `hf cache rm` runs) deletes a revision's whole snapshots/<commit>/ and every ref naming it (and the blobs
    nothing else uses). A commit that lost its folder but that a ref still names was damaged, not removed."""
    receipted: set[str] = set()
    for receipt in (repo_dir / ".mirror" / "receipts").glob("*.json"):
        try:
            receipted.update(commit for commit, *_ in read_receipt(receipt).files())
        except (OSError, ValueError):
            continue  # expected_files reports it
    gone = {c for c in receipted if not os.path.lexists(repo_dir / "snapshots" / c)}
    if gone:
        for ref in regular_files(repo_dir / "refs", recursive=True):
            gone.discard(read_ref(ref) or "")
    return gone
