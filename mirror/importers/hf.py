"""The `hf` layout: the Hugging Face hub cache exactly as huggingface_hub writes it (HUB-PROTOCOL.md).

CACHEDIR.TAG
models--org--name/
    blobs/<etag>                    sha256 for LFS files, the git blob sha1 otherwise
    snapshots/<commit>/<path>       relative symlinks to ../../blobs/<etag>
    trees/<commit>.json             only for a commit whose every file is in the bundle
    refs/<revision>                 the commit, no newline; written last
    .mirror/receipts/<bundle sha256>.json   what mirror imported (scan_cache_dir never looks here)
    .mirror/implied-main.json       the commits mirror pointed refs/main at for a repo without a main
    .mirror/tmp/                    staging during an import

Repos from another hub (ModelScope) go in the same way, under their repo id or the bundle's `hf_id` for
them: their commit names the snapshot, each revision name gets its ref (`refs/master`), blobs are named
by the same etags (the git sha1 of ordinary files, the sha256 of LFS ones).

transformers and huggingface_hub ask for revision `main` when none is given, and offline they find it only
through `refs/main`. A ModelScope repo's default branch is `master`, so when a repo from another hub has no
revision named `main`, `refs/main` is also pointed at its first revision (the one the manifest lists
first): `from_pretrained("owner/name")` then loads what `--layout dir` puts at `DIR/owner/name`. That ref
is only ever written where there is none, or where mirror wrote it this way before (the commits are kept in
`.mirror/implied-main.json`): a real `main` (from the Hugging Face Hub, or an import of the Hugging Face
repo of the same id) is never moved.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mirror.bundle import BundleIndex, IndexedCommit, IndexedRepo
from mirror.errors import MirrorError
from mirror.fsutil import temp_sibling
from mirror.hashing import file_sha256
from mirror.importers.layout import Layout, RepoReport, json_bytes, place_file, remove_empty, write_if_changed
from mirror.paths import is_commit, join_inside
from mirror.store import RepoKey

# What huggingface_hub (_local_folder.CACHEDIR_TAG_CONTENT) writes, with our name in the comment.
CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by mirror.\n"
    "# For information about cache directory tags, see:\n"
    "#\thttps://bford.info/cachedir/\n"
)
TREE_FORMAT_VERSION = 1  # huggingface_hub/_tree_cache.py TREE_CACHE_FORMAT_VERSION


def implied_main(repo: IndexedRepo) -> str | None:
    """The commit refs/main stands for when a repo from another hub has no `main`: its first revision's."""
    if repo.source == "huggingface" or any(name == "main" for name, _ in repo.revisions):
        return None
    return repo.revisions[0][1]


def repo_folder_name(repo_type: str, repo_id: str) -> str:
    """`models--org--name`, `datasets--org--name`, `models--gpt2` (huggingface_hub's repo_folder_name)."""
    return "--".join([f"{repo_type}s", *repo_id.split("/")])


def snapshot_link(path: str, etag: str) -> str:
    """The relative symlink target from snapshots/<commit>/<path> to blobs/<etag>."""
    return "../" * (path.count("/") + 2) + f"blobs/{etag}"


def tree_json(commit: IndexedCommit) -> bytes:
    """trees/<commit>.json byte for byte as huggingface_hub's write_tree_cache writes it."""
    files: dict[str, dict[str, Any]] = {}
    for f in sorted(commit.files, key=lambda f: f.path):
        entry: dict[str, Any] = {"size": f.size, "blob_id": f.oid}
        if f.lfs:
            entry["lfs_sha256"] = f.sha256
            entry["lfs_size"] = f.size
        files[f.path] = entry
    return json.dumps({"format_version": TREE_FORMAT_VERSION, "files": files}, indent=1).encode("utf-8")


class HfLayout(Layout):
    name = "hf"

    def __init__(self, target: Path) -> None:
        super().__init__(target)
        self._published: set[RepoKey] = set()

    def repo_dir(self, repo: IndexedRepo) -> Path:
        return self.target / repo_folder_name(repo.repo_type, repo.hf_id or repo.repo_id)

    def check(self, index: BundleIndex) -> None:
        owners: dict[Path, RepoKey] = {}
        for repo in index.repos:
            folder = self.repo_dir(repo)
            if folder in owners:
                raise MirrorError(
                    f"{owners[folder]} and {repo.key} would share {folder} in the hf layout; give one of "
                    "them another id with `hf_id:` in the manifest, or import one of them with --layout dir"
                )
            owners[folder] = repo.key
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise MirrorError(f"{folder} exists and is not a folder; move it away and import again")

    @contextmanager
    def stage(self, repo: IndexedRepo) -> Iterator[Path]:
        # Staging inside the repo folder: scan_cache_dir only reads snapshots/ and refs/ there, and an empty
        # snapshots/ keeps a new repo folder valid for it while the import runs.
        repo_dir = self.repo_dir(repo)
        existed = repo_dir.exists()
        meta = repo_dir / ".mirror"
        staging = meta / "tmp" / uuid.uuid4().hex
        try:
            (repo_dir / "snapshots").mkdir(parents=True, exist_ok=True)
            staging.mkdir(parents=True)
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            remove_empty(staging.parent, meta)
            if not existed and repo.key not in self._published:
                shutil.rmtree(repo_dir, ignore_errors=True)

    def publish(self, repo: IndexedRepo, content: Mapping[str, Path], receipt: dict[str, Any]) -> RepoReport:
        repo_dir = self.repo_dir(repo)
        if not (self.target / "CACHEDIR.TAG").exists():
            write_if_changed(self.target / "CACHEDIR.TAG", CACHEDIR_TAG.encode())
        changed = False
        files_written = bytes_written = 0
        checked: set[str] = set()
        blobs = repo_dir / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        for commit in repo.commits:
            for f in commit.files:
                if f.etag in checked:
                    continue
                checked.add(f.etag)
                blob = blobs / f.etag
                if not _holds(blob, f.size, f.sha256):
                    place_file(content[f.sha256], blob)
                    files_written += 1
                    bytes_written += f.size
                    changed = True
            changed |= _link_snapshot(repo_dir / "snapshots", commit)
            if commit.complete:
                tree = repo_dir / "trees" / f"{commit.commit}.json"
                # A listing already there is as true as ours (a commit never changes): keep it.
                if not tree.exists():
                    write_if_changed(tree, tree_json(commit))
                    changed = True
        sha = str(receipt.get("bundle_sha256", "unknown"))
        write_if_changed(repo_dir / ".mirror" / "receipts" / f"{sha}.json", json_bytes(receipt))
        # Refs last: a branch or tag name resolves only once everything it points at is in place.
        for name, commit_id in repo.revisions:
            if is_commit(name):
                continue
            changed |= write_if_changed(join_inside(repo_dir / "refs", name), commit_id.encode())
        main = implied_main(repo)
        if main is not None:
            changed |= _point_implied_main(repo_dir, main)
        self._published.add(repo.key)
        return RepoReport(
            repo=repo.key,
            path=repo_dir,
            revisions=repo.revisions,
            files_written=files_written,
            bytes_written=bytes_written,
            already_present=not changed,
        )


def _holds(blob: Path, size: int, sha256: str) -> bool:
    """Whether blob already has this content (re-hashed: an import also repairs a damaged blob)."""
    try:
        return blob.is_file() and blob.stat().st_size == size and file_sha256(blob) == sha256
    except OSError:
        return False


def _point_implied_main(repo_dir: Path, commit: str) -> bool:
    """Point refs/main at commit unless it holds a main of its own; whether anything changed."""
    ref = repo_dir / "refs" / "main"
    record = repo_dir / ".mirror" / "implied-main.json"
    try:
        ours = {str(c) for c in json.loads(record.read_text(encoding="utf-8"))["commits"]}
    except (OSError, ValueError, KeyError, TypeError):
        ours = set()
    try:
        current: str | None = ref.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        current = None
    except (OSError, UnicodeDecodeError):
        return False  # something else is there: leave it alone
    if current is not None and current not in ours:
        return False
    # Recorded before the ref is written, so a crash in between still leaves the ref known as ours.
    write_if_changed(record, json_bytes({"commits": sorted(ours | {commit})}))
    return write_if_changed(ref, commit.encode())


def _link_snapshot(snapshots: Path, commit: IndexedCommit) -> bool:
    """Point snapshots/<commit>/ at the blobs; whether anything changed.

    A new commit folder is built under a temp name and renamed in whole; an existing one (another import or
    a hub download of the same commit) gets its missing or wrong links replaced one by one.
    """
    folder = snapshots / commit.commit
    if not folder.exists():
        tmp = temp_sibling(folder)  # same depth as the real folder, so the relative links hold after rename
        try:
            tmp.mkdir(parents=True)
            for f in commit.files:
                link = join_inside(tmp, f.path)
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(snapshot_link(f.path, f.etag), link)
            os.rename(tmp, folder)
            return True
        except OSError:
            if not folder.exists():
                raise
            # Someone created it meanwhile: fall through and fix it link by link.
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    changed = False
    for f in commit.files:
        link = join_inside(folder, f.path)
        want = snapshot_link(f.path, f.etag)
        if link.is_symlink() and os.readlink(link) == want:
            continue
        if link.is_dir() and not link.is_symlink():
            raise MirrorError(f"{link} is a folder where the bundle has a file; remove it and import again")
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(link)
        try:
            os.symlink(want, tmp)
            os.replace(tmp, link)
        finally:
            tmp.unlink(missing_ok=True)
        changed = True
    return changed
