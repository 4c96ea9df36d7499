"""The `hf` layout: the Hugging Face hub cache exactly as huggingface_hub writes it (HUB-PROTOCOL.md).

CACHEDIR.TAG
models--org--name/
    blobs/<etag>                    sha256 for LFS files, the git blob sha1 otherwise
    snapshots/<commit>/<path>       relative symlinks to ../../blobs/<etag>
    trees/<commit>.json             only for a commit whose every file is in the bundle
    refs/<revision>                 the commit, no newline; written last
    .mirror/receipts/<bundle sha256>.json   what mirror imported (scan_cache_dir never looks here)
    .mirror/refs.json               which bundle (and how new) last set each ref
    .mirror/implied-main.json       the commits mirror pointed refs/main at for a repo without a main
    .mirror/tmp/<id>/               staging during an import (and temp names for every atomic write)

With `symlinks=False` (`--no-symlinks`, what huggingface_hub does under HF_HUB_DISABLE_SYMLINKS or on a
file system without symlinks), snapshots/<commit>/<path> are real files: hardlinks of blobs/<etag> where
the file system has hardlinks, else copies (and then, as huggingface_hub does, no blobs/ at all, so the
content is held once). huggingface_hub finds a snapshot file by its path and never follows it to blobs/,
so the repo loads offline by repo id the same way.

Publishing order, so a SIGKILL at any moment leaves no snapshot pointing at a missing or unverified
blob: a commit's blobs first (each renamed in whole), then its snapshot folder (built in staging and
renamed in whole; an existing one is mended link by link), then trees/, the receipt, and refs/ last. A
ref is moved only by a bundle at least as new (by creation time) as the one that last set it, so several
bundles give the same tree in any order.

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
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mirror.bounded import REF, read_bounded
from mirror.bundle import BundleIndex, IndexedCommit, IndexedRepo
from mirror.errors import MirrorError
from mirror.importers.layout import (
    ExpectedFile,
    HeldRepo,
    Layout,
    Publication,
    RepoReport,
    Stamp,
    checkpoint,
    claim_folder,
    entries,
    json_bytes,
    link_or_copy,
    read_json_record,
    receipt_files,
    regular_files,
)
from mirror.paths import is_commit, is_sha256, join_inside
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

    def __init__(self, target: Path, *, symlinks: bool = True) -> None:
        super().__init__(target, symlinks=symlinks)
        self._hardlinks: bool | None = None

    def repo_dir(self, repo: IndexedRepo) -> Path:
        return self.target / repo_folder_name(repo.repo_type, repo.hf_id or repo.repo_id)

    def check(self, index: BundleIndex) -> None:
        owners: dict[Path, RepoKey] = {}
        for repo in index.repos:
            claim_folder(
                owners,
                self.repo_dir(repo),
                repo.key,
                "hf",
                "give one of them another id with `hf_id:` in the manifest, or import one of them with "
                "--layout dir",
            )

    def staging_root(self, repo: IndexedRepo) -> Path:
        # Inside the repo folder, where scan_cache_dir only reads snapshots/ and refs/.
        return self.repo_dir(repo) / ".mirror" / "tmp"

    def staging_parents(self, repo: IndexedRepo) -> list[Path]:
        # An empty snapshots/ keeps a new repo folder valid for scan_cache_dir while the import runs.
        return [self.repo_dir(repo) / "snapshots"]

    def candidates(self, repo: IndexedRepo) -> Iterator[tuple[str, int, Path]]:
        repo_dir = self.repo_dir(repo)
        for commit in repo.commits:
            for f in commit.files:
                yield f.sha256, f.size, repo_dir / "blobs" / f.etag
                snap = join_inside(repo_dir / "snapshots" / commit.commit, f.path)
                if not snap.is_symlink():  # a real file: a --no-symlinks import, or such a download
                    yield f.sha256, f.size, snap

    def publish(self, pub: Publication) -> RepoReport:
        repo, scratch = pub.repo, pub.scratch
        repo_dir = self.repo_dir(repo)
        self.write_if_changed(
            self.target / "CACHEDIR.TAG", CACHEDIR_TAG.encode(), scratch, only_if_absent=True
        )
        changed = False
        files_written = bytes_written = 0
        keep_blobs = self.symlinks or self._can_hardlink(scratch)
        placed: set[str] = set()
        for commit in repo.commits:
            if keep_blobs:
                for f in commit.files:
                    if f.etag in placed:
                        continue
                    placed.add(f.etag)
                    blob = repo_dir / "blobs" / f.etag
                    if blob.is_symlink() or not pub.hashes.holds(blob, f.size, f.sha256):
                        self.place(pub.content[f.sha256], blob, scratch)
                        files_written += 1
                        bytes_written += f.size
                        changed = True
            if self.symlinks:
                changed |= self._link_snapshot(repo_dir, commit, scratch)
            else:
                written = self._file_snapshot(repo_dir, commit, pub)
                if written:
                    changed = True
                    if not keep_blobs:
                        files_written += len(written)
                        bytes_written += sum(f.size for f in written)
            if commit.complete:
                # A listing already there is as true as ours (a commit never changes): keep it.
                changed |= self.write_if_changed(
                    repo_dir / "trees" / f"{commit.commit}.json",
                    tree_json(commit),
                    scratch,
                    only_if_absent=True,
                )
        bundle_id = str(pub.receipt.get("bundle_id", "unknown"))
        self.write_if_changed(
            repo_dir / ".mirror" / "receipts" / f"{bundle_id}.json", json_bytes(pub.receipt), scratch
        )
        # Refs last: a branch or tag name resolves only once everything it points at is in place.
        ref_changes, kept = self._write_refs(repo_dir, repo, pub.stamp, scratch)
        changed |= ref_changes
        main = implied_main(repo)
        if main is not None:
            changed |= self._point_implied_main(repo_dir, main, pub.stamp, scratch, kept)
        return RepoReport(
            repo=repo.key,
            path=repo_dir,
            revisions=repo.revisions,
            files_written=files_written,
            bytes_written=bytes_written,
            already_present=not changed,
            kept=tuple(kept),
        )

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
            kind, _, rest = repo_dir.name.partition("--")
            repo_type = REPO_FOLDER_TYPES.get(kind)
            if repo_type is None:
                continue
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
            found.append(
                HeldRepo(repo_type, rest.replace("--", "/"), tuple(sorted(revisions)), tuple(commits))
            )
        return found

    def expected_files(self) -> tuple[list[ExpectedFile], list[str]]:
        files: list[ExpectedFile] = []
        problems: list[str] = []
        for repo_dir in self._repo_dirs():
            for receipt in sorted((repo_dir / ".mirror" / "receipts").glob("*.json")):
                try:
                    for commit, path, size, sha256 in receipt_files(receipt):
                        snap = join_inside(repo_dir / "snapshots" / commit, path)
                        files.append(ExpectedFile(snap, size, sha256))
                except (OSError, ValueError) as e:
                    problems.append(f"{receipt}: unreadable receipt ({e})")
        return files, problems

    # -- the steps of publish -------------------------------------------------------------------------------

    def _can_hardlink(self, scratch: Path) -> bool:
        if self._hardlinks is None:
            probe = scratch / f"probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            try:
                os.link(probe, probe.with_suffix(".link"))
                self._hardlinks = True
            except OSError:
                self._hardlinks = False
            finally:
                probe.with_suffix(".link").unlink(missing_ok=True)
                probe.unlink()
        return self._hardlinks

    def _link_snapshot(self, repo_dir: Path, commit: IndexedCommit, scratch: Path) -> bool:
        """Point snapshots/<commit>/ at the blobs; whether anything changed.

        A new commit folder is built in staging and renamed in whole; an existing one (another import or a
        hub download of the same commit) gets its missing or wrong links replaced one by one.
        """
        folder = repo_dir / "snapshots" / commit.commit
        if not (folder.exists() or folder.is_symlink()):
            built = scratch / f"snapshot-{commit.commit}"
            built.mkdir()
            for f in commit.files:
                link = join_inside(built, f.path)
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(snapshot_link(f.path, f.etag), link)
            if self._rename_new(built, folder):
                return True
        changed = False
        for f in commit.files:
            link = join_inside(folder, f.path)
            want = snapshot_link(f.path, f.etag)
            if link.is_symlink() and os.readlink(link) == want:
                continue
            _refuse_folder(link)
            self.place_symlink(want, link, scratch)
            changed = True
        return changed

    def _file_snapshot(self, repo_dir: Path, commit: IndexedCommit, pub: Publication) -> list[Any]:
        """snapshots/<commit>/ as real files (hardlinks of the blobs where possible); the files written."""
        folder = repo_dir / "snapshots" / commit.commit
        if not (folder.exists() or folder.is_symlink()):
            built = pub.scratch / f"snapshot-{commit.commit}"
            built.mkdir()
            for f in commit.files:
                dest = join_inside(built, f.path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(pub.content[f.sha256], dest)
            if self._rename_new(built, folder):
                return list(commit.files)
        written = []
        for f in commit.files:
            dest = join_inside(folder, f.path)
            if not dest.is_symlink() and pub.hashes.holds(dest, f.size, f.sha256):
                continue
            _refuse_folder(dest)
            self.place(pub.content[f.sha256], dest, pub.scratch)
            written.append(f)
        return written

    def _rename_new(self, built: Path, folder: Path) -> bool:
        """Rename a snapshot folder built in staging into place; False if one appeared there meanwhile."""
        self.check_inside(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(built, folder)
        except OSError:
            if not folder.exists():
                raise
            return False  # someone created it meanwhile: mend it name by name
        checkpoint()
        return True

    def _write_refs(
        self, repo_dir: Path, repo: IndexedRepo, stamp: Stamp, scratch: Path
    ) -> tuple[bool, list[str]]:
        """Write refs/<name> for each named revision, unless a newer bundle set it to another commit."""
        record_path = repo_dir / ".mirror" / "refs.json"
        record = read_json_record(record_path)
        updated = dict(record)
        kept: list[str] = []
        writes: list[tuple[str, str]] = []
        for name, commit in repo.revisions:
            if is_commit(name):
                continue
            previous = record.get(name)
            if stamp.older_than(previous):
                if isinstance(previous, dict) and previous.get("commit") != commit:
                    kept.append(f"refs/{name}")
                    continue
            else:
                updated[name] = {
                    "commit": commit,
                    "bundle_created": stamp.created,
                    "bundle_id": stamp.bundle_id,
                }
            writes.append((name, commit))
        # Recorded before the refs are written: a kill in between leaves a record the rerun makes true.
        if updated != record:
            self.write_if_changed(record_path, json_bytes(updated), scratch)
        changed = False
        for name, commit in writes:
            changed |= self.write_if_changed(join_inside(repo_dir / "refs", name), commit.encode(), scratch)
        return changed, kept

    def _point_implied_main(
        self, repo_dir: Path, commit: str, stamp: Stamp, scratch: Path, kept: list[str]
    ) -> bool:
        """Point refs/main at commit unless it holds a main of its own, or a newer bundle pointed it
        elsewhere; whether anything changed."""
        ref = repo_dir / "refs" / "main"
        record_path = repo_dir / ".mirror" / "implied-main.json"
        record = read_json_record(record_path)
        commits = record.get("commits")
        ours = {str(c) for c in commits} if isinstance(commits, list) else set()
        try:
            raw = read_bounded(ref, REF, MirrorError, missing_ok=True)
            current = None if raw is None else raw.decode("utf-8").strip()
        except (MirrorError, UnicodeDecodeError):
            return False  # something else is there: leave it alone
        if current is not None and current not in ours:
            return False
        newer = stamp.older_than(record)
        created = str(record.get("bundle_created", "")) if newer else stamp.created
        # Recorded before the ref is written, so a crash in between still leaves the ref known as ours.
        self.write_if_changed(
            record_path, json_bytes({"bundle_created": created, "commits": sorted(ours | {commit})}), scratch
        )
        if newer and current is not None and current != commit:
            kept.append("refs/main")
            return False
        return self.write_if_changed(ref, commit.encode(), scratch)


REPO_FOLDER_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def _refuse_folder(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        raise MirrorError(f"{path} is a folder where the bundle has a file; remove it and import again")
