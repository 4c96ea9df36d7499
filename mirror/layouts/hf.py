"""The `hf` layout: an import into the Hugging Face hub cache, exactly as huggingface_hub writes it (what the
cache holds is read back by `mirror.layouts.hf_cache`).

CACHEDIR.TAG
models--org--name/
    blobs/<etag>                    sha256 for LFS files, the git blob sha1 otherwise
    snapshots/<commit>/<path>       relative symlinks to ../../blobs/<etag>
    trees/<commit>.json             the commit's complete listing (for a filtered commit, when the bundle has it)
    refs/<revision>                 the commit, no newline; written last
    .mirror/receipts/<bundle sha256>.json   what mirror imported (scan_cache_dir never looks here)
    .mirror/refs.json               which bundle (and how new) last set each ref
    .mirror/implied-main.json       the commits mirror pointed refs/main at for a repo without a main
    .mirror/tmp/<id>/               staging during an import (and temp names for every atomic write)

With `symlinks=False` (`--no-symlinks`, what huggingface_hub does under HF_HUB_DISABLE_SYMLINKS or on a
file system without symlinks), snapshots/<commit>/<path> are real files, each its own copy, and nothing
goes in blobs/: what huggingface_hub's `_create_symlink` leaves then (it moves each new blob into the
snapshot, and copies one already there), so `delete_revisions` frees what it reports. huggingface_hub
finds a snapshot file by its path and never follows it to blobs/, so the repo loads offline by repo id the
same way. (`--link-shared` hardlinks equal files instead, across revisions and repos.)

Publishing order, so a SIGKILL at any moment leaves no snapshot pointing at a missing or unverified
blob: a commit's blobs first (each renamed in whole), then its snapshot folder (built in staging and
renamed in whole; an existing one is mended link by link), then trees/, the receipt, and refs/ last. A
ref is moved only by a bundle at least as new (by creation time) as the one that last set it, so several
bundles give the same tree in any order.

A cache used both ways: huggingface_hub moves refs/<name> itself when it downloads online. A ref whose
commit is not the one `.mirror/refs.json` says mirror wrote there (or that has no record) was moved by
something else, and is taken as at least as new as any bundle: it is kept (reported as kept), unless its
commit is one the bundle itself lists for the repo (under this or another revision name), which the
bundle's sync saw and still pointed this name away from; then the bundle moves it. A newer bundle thus
does not move a ref huggingface_hub moved to a commit the bundle does not know: remove that ref (or
`hf cache rm` the revision) to take the bundle's.

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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mirror.bundle import BundleIndex, IndexedCommit, IndexedRepo
from mirror.errors import IntegrityError, MirrorError
from mirror.fsutil import entries, json_bytes, link_if_private, read_json_record
from mirror.layouts.hf_cache import HfCacheReader, read_ref
from mirror.layouts.layout import Layout, Publication, Stamp, Use, claim_folder
from mirror.paths import is_commit, join_inside, name_problem
from mirror.repo import RepoKey, cache_folder_name
from mirror.report import RepoReport
from mirror.signing import FolderSequences
from mirror.snapshot import ListedFile

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


def snapshot_link(path: str, etag: str) -> str:
    """The relative symlink target from snapshots/<commit>/<path> to blobs/<etag>."""
    return "../" * (path.count("/") + 2) + f"blobs/{etag}"


def tree_json(listing: Iterable[ListedFile]) -> bytes:
    """trees/<commit>.json byte for byte as huggingface_hub's write_tree_cache writes it."""
    files: dict[str, dict[str, Any]] = {}
    for f in sorted(listing, key=lambda f: f.path):
        entry: dict[str, Any] = {"size": f.size, "blob_id": f.oid}
        if f.lfs_sha256 is not None:
            entry["lfs_sha256"] = f.lfs_sha256
            entry["lfs_size"] = f.size
        files[f.path] = entry
    return json.dumps({"format_version": TREE_FORMAT_VERSION, "files": files}, indent=1).encode("utf-8")


class HfLayout(HfCacheReader, Layout):
    name = "hf"

    def repo_dir(self, repo: IndexedRepo) -> Path:
        return self.target / cache_folder_name(repo.repo_type, repo.hf_id or repo.repo_id)

    @property
    def sequences(self) -> FolderSequences:
        return FolderSequences(self.target / ".locks" / "mirror-trust")

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

    def uses(self, repo: IndexedRepo) -> Iterator[Use]:
        repo_dir = self.repo_dir(repo)
        yield Use(self.target / "CACHEDIR.TAG", "entry")
        yield Use(repo_dir, "dir")
        for folder in (".mirror", ".mirror/tmp", ".mirror/receipts", "blobs", "snapshots", "refs", "trees"):
            yield Use(repo_dir / folder, "dir")
        for record in ("refs.json", "implied-main.json"):
            yield Use(repo_dir / ".mirror" / record, "file")
        yield from (Use(r, "file") for r in entries(repo_dir / ".mirror" / "receipts"))
        staged = self.staging_root(repo) / ("0" * 32)
        for commit in repo.commits:
            snapshot = repo_dir / "snapshots" / commit.commit
            yield Use(snapshot, "dir")
            yield Use(repo_dir / "trees" / f"{commit.commit}.json", "file")
            for f in commit.files:
                yield Use(repo_dir / "blobs" / f.etag, "file")
                yield Use(join_inside(snapshot, f.path), "entry", named=snapshot)
                yield Use(join_inside(staged / f"snapshot-{commit.commit}", f.path), "staged")
                if self.symlinks and (problem := name_problem(snapshot_link(f.path, f.etag))) is not None:
                    raise IntegrityError(
                        f"{repo.key}: {f.path} cannot be linked to its blob in the hf layout ({problem}); "
                        "nothing was imported (import it with --no-symlinks or --layout dir)"
                    )
        names = [name for name, _ in repo.revisions if not is_commit(name)]
        for name in names + (["main"] if implied_main(repo) is not None else []):
            yield Use(join_inside(repo_dir / "refs", name), "file", named=repo_dir / "refs")

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

    def copies(self, repo: IndexedRepo) -> Iterator[tuple[str, int, Path]]:
        repo_dir = self.repo_dir(repo)
        blobs: set[str] = set()
        for commit in repo.commits:
            for f in commit.files:
                if not self.symlinks:
                    yield f.sha256, f.size, join_inside(repo_dir / "snapshots" / commit.commit, f.path)
                elif f.etag not in blobs:
                    blobs.add(f.etag)
                    yield f.sha256, f.size, repo_dir / "blobs" / f.etag

    def publish(self, pub: Publication) -> RepoReport:
        repo, scratch = pub.repo, pub.scratch
        repo_dir = self.repo_dir(repo)
        self.write_if_changed(
            self.target / "CACHEDIR.TAG", CACHEDIR_TAG.encode(), scratch, only_if_absent=True
        )
        changed = False
        files_written = bytes_written = 0
        placed: set[str] = set()
        for commit in repo.commits:
            if self.symlinks:
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
                    files_written += len(written)
                    bytes_written += sum(f.size for f in written)
            # The commit's complete listing, also for a filtered one (as snapshot_download(allow_patterns=)
            # writes it); none when the bundle lacks it. One already there is as true as ours: keep it.
            listing = [ListedFile.of(f) for f in commit.files] if commit.complete else commit.listing
            if listing is not None:
                changed |= self.write_if_changed(
                    repo_dir / "trees" / f"{commit.commit}.json",
                    tree_json(listing),
                    scratch,
                    only_if_absent=True,
                )
        self.write_if_changed(
            repo_dir / ".mirror" / "receipts" / f"{pub.receipt.bundle_id}.json",
            pub.receipt.to_bytes(),
            scratch,
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

    # -- the steps of publish -------------------------------------------------------------------------------

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
        """snapshots/<commit>/ as real files, each its own copy (`link_if_private`); the files written."""
        folder = repo_dir / "snapshots" / commit.commit
        if not (folder.exists() or folder.is_symlink()):
            built = pub.scratch / f"snapshot-{commit.commit}"
            built.mkdir()
            for f in commit.files:
                dest = join_inside(built, f.path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                link_if_private(pub.content[f.sha256], dest, shared=self.link_shared)
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
        self.checkpoint()
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
        described = {c.commit for c in repo.commits}
        implied = read_json_record(repo_dir / ".mirror" / "implied-main.json").get("commits")
        implied_main_commits = {str(c) for c in implied} if isinstance(implied, list) else set()
        for name, commit in repo.revisions:
            if is_commit(name):
                continue
            previous = record.get(name)
            current = read_ref(join_inside(repo_dir / "refs", name))
            mine = (
                current is None
                or (isinstance(previous, dict) and previous.get("commit") == current)
                or (name == "main" and current in implied_main_commits)  # mirror pointed it there
            )
            if not mine and current != commit and current not in described:
                # Moved by huggingface_hub (or anything but mirror) to a commit this bundle knows nothing
                # of: taken as at least as new as the bundle, whatever its age.
                kept.append(f"refs/{name}")
                continue
            if stamp.older_than(previous) and mine:
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
        changed = False
        for name, commit in writes:
            changed |= self.write_if_changed(join_inside(repo_dir / "refs", name), commit.encode(), scratch)
        # Recorded after the refs: a kill in between leaves refs at this bundle's commits that the record does
        # not claim yet, which an older bundle keeps (they are not its commits) and the rerun records.
        if updated != record:
            self.write_if_changed(record_path, json_bytes(updated), scratch)
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
        current = read_ref(ref)
        if current is not None and current not in ours:
            return False  # another commit, or something else is there: leave it alone
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


def _refuse_folder(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        raise MirrorError(f"{path} is a folder where the bundle has a file; remove it and import again")
