"""Restore a bundle into a layout: verify the whole bundle while streaming it once, then publish repo by repo.

A bundle is one unit: if any of its members is damaged or hostile, nothing of it is published, and the
target is left exactly as it was (see `Staging`). An operator then knows that exit 4 means "nothing
changed", and a set of models meant to be used together never arrives half updated. Once the whole bundle
is verified, each repo is published name by name with atomic renames (refs last), so a SIGKILL at any
moment leaves each repo in its old state or its new one, and running the import again completes it.

Content the target already holds (in the repos the bundle names) is hashed and hardlinked into staging
instead of written again, so importing the same bundle twice writes nothing, and a damaged copy in the
target is found and replaced by the bundle's. Before anything is written, the bytes the import will add
are checked against the free space of the target's file system.

Adding a layout is one module with a `Layout` subclass, and one line in `LAYOUTS`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mirror.bundle import BundleFile, BundleIndex, IndexedRepo, Progress, iter_members, open_bundle
from mirror.errors import IntegrityError, MirrorError, UsageError
from mirror.importers.dir import DirLayout
from mirror.importers.hf import HfLayout
from mirror.importers.layout import (
    HashCache,
    ImportReport,
    Layout,
    Publication,
    RepoReport,
    Staging,
    Stamp,
    checkpoint,
    human_bytes,
    link_or_copy,
)
from mirror.importers.modelscope import ModelScopeLayout
from mirror.signing import TrustPolicy, check_trust  # signed bundles (issue 5 item 7)
from mirror.snapshot import FileRecord
from mirror.store import RepoKey

LAYOUTS: dict[str, Callable[..., Layout]] = {
    "hf": HfLayout,
    "modelscope": ModelScopeLayout,
    "dir": DirLayout,
}

# What the space check adds per file and per import for what is not file content: file system blocks,
# symlinks, folders, receipts.
BLOCK = 4096
OVERHEAD = 1 << 20


class BundleImportError(IntegrityError):
    """Members of a bundle failed verification, so nothing of it was published; `report.repos` is empty."""

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report


def make_layout(layout: str, target: Path, *, symlinks: bool = True) -> Layout:
    try:
        factory = LAYOUTS[layout]
    except KeyError:
        raise UsageError(f"unknown layout {layout!r}; choose one of {', '.join(sorted(LAYOUTS))}") from None
    return factory(Path(target), symlinks=symlinks)


def receipt_for(
    bundle: Path, sha256: str, index: BundleIndex, repo: IndexedRepo, layout: Layout
) -> dict[str, Any]:
    """What an import records about a repo: which bundle, which revisions, which files with their hashes
    (what `mirror verify --target` checks the tree against)."""
    return {
        "layout": layout.name,
        "symlinks": layout.symlinks,
        "bundle": bundle.name,
        "bundle_sha256": sha256,
        "bundle_created": index.created,
        "bundle_tool_version": index.tool_version,
        "source": repo.source,
        "repo_type": repo.repo_type,
        "repo_id": repo.repo_id,
        **({"hf_id": repo.hf_id} if repo.hf_id is not None else {}),
        "revisions": [{"name": n, "commit": c} for n, c in repo.revisions],
        "commits": [
            {
                "commit": c.commit,
                "complete": c.complete,
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in c.files],
            }
            for c in repo.commits
        ],
    }


def import_bundle(
    bundle: Path,
    layout: str,
    target: Path,
    *,
    progress: Progress | None = None,
    trust: TrustPolicy | None = None,
    symlinks: bool = True,
) -> ImportReport:
    """Verify all of `bundle` while streaming it once; only then publish its repos into `target`.

    A damaged or hostile bundle publishes nothing and leaves the target as it was (IntegrityError, or
    BundleImportError naming every member whose content did not match). Repos in the target the bundle
    does not name are never touched. `progress` gets the compressed bytes read (the bundle's size is the
    total). `symlinks=False` (`--no-symlinks`) makes the hf layout write real files in snapshots/.
    """
    bundle = Path(bundle)
    target = Path(target)
    writer = make_layout(layout, target, symlinks=symlinks)
    hashes = HashCache()
    try:
        with open_bundle(bundle, progress) as reader:
            index = reader.index
            # Signed bundles (mirror.signing): refuse an unsigned, untrusted, altered, expired or rolled-back
            # bundle before anything is written.
            accepted = check_trust(trust, bundle, index, writer.name, target)
            writer.check(index)
            candidates: dict[str, list[Path]] = {}
            for repo in index.repos:
                for sha, size, path in writer.candidates(repo):
                    if _is_file_of_size(path, size):
                        candidates.setdefault(sha, []).append(path)
            check_space(bundle, target, index, candidates)
            with Staging() as staging:
                folders = {}
                for repo in index.repos:
                    for parent in writer.staging_parents(repo):
                        staging.make_dirs(parent)
                    folders[repo.key] = staging.folder(writer.staging_root(repo))
                content: dict[RepoKey, dict[str, Path]] = {key: {} for key in folders}
                verified: dict[str, Path] = {}  # member name -> its staged content
                failed: dict[str, str] = {}  # member name -> why
                for file in reader.files():
                    key = file.member.repo.key
                    try:
                        _receive(file, folders[key], content[key], verified, candidates, hashes)
                    except IntegrityError as e:
                        failed[file.member.name] = str(e)
                    checkpoint()
                sha256 = reader.sha256 or ""
                if failed:
                    reasons = list(failed.values())
                    more = f"; and {len(reasons) - 5} more" if len(reasons) > 5 else ""
                    raise BundleImportError(
                        f"{bundle.name}: {len(failed)} member(s) failed verification, so nothing of the bundle "
                        f"was imported ({target} is unchanged): " + "; ".join(reasons[:5]) + more,
                        ImportReport(bundle, sha256, writer.name, target, ()),
                    )
                stamp = Stamp(index.created, sha256)
                staging.publishing = True  # from here on the target changes
                reports = []
                for repo in index.repos:
                    pub = Publication(
                        repo=repo,
                        content=content[repo.key],
                        scratch=folders[repo.key],
                        receipt=receipt_for(bundle, sha256, index, repo, writer),
                        stamp=stamp,
                        hashes=hashes,
                    )
                    reports.append(writer.publish(pub))
                    staging.sweep(writer.staging_root(repo))
                staging.changed = not all(r.already_present for r in reports)
    except OSError as e:
        raise MirrorError(f"importing {bundle.name} into {target} failed: {e}") from e
    report = ImportReport(
        bundle=bundle, sha256=sha256, layout=writer.name, target=target, repos=tuple(reports)
    )
    if accepted is not None and reports:  # mirror.signing: remember the sequence of what was published
        accepted.record()
    return report


def _is_file_of_size(path: Path, size: int) -> bool:
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


def free_space(target: Path) -> tuple[Path, int]:
    """The free bytes of the file system target is (or will be) on, and the folder asked."""
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free


def bytes_to_add(index: BundleIndex, candidates: dict[str, list[Path]]) -> tuple[int, int]:
    """(bytes, files) of content the target does not hold yet: each new content is written once (repos and
    revisions share it by hardlink). A file already there with the right size counts as held; if its
    content turns out wrong, the import writes the bundle's copy instead."""
    new: dict[str, int] = {}
    records = 0
    for m in iter_members(index):
        records += 1
        if m.file.sha256 not in candidates:
            new[m.file.sha256] = m.file.size
    return sum(new.values()) + BLOCK * (len(new) + records) + OVERHEAD, len(new)


def check_space(bundle: Path, target: Path, index: BundleIndex, candidates: dict[str, list[Path]]) -> None:
    """MirrorError (exit 1), before anything is written, when the target's file system is too full."""
    need, files = bytes_to_add(index, candidates)
    where, free = free_space(target)
    if need > free:
        raise MirrorError(
            f"not enough space to import {bundle.name} into {target}: it adds about {human_bytes(need)} "
            f"({files} new files) and {where} has {human_bytes(free)} free; nothing was written. Free some "
            "space, or import into another --target"
        )


def _receive(
    file: BundleFile,
    staging: Path,
    content: dict[str, Path],
    verified: dict[str, Path],
    candidates: dict[str, list[Path]],
    hashes: HashCache,
) -> None:
    """Verify one member into the repo's staging folder (content named by sha256, each once per repo)."""
    record = file.member.file
    sha = record.sha256
    if file.link_to is not None:
        file.read()  # raises if the linked member failed
        if sha not in content:
            dest = staging / sha
            link_or_copy(verified[file.link_to], dest)
            content[sha] = dest
    elif sha in content:
        file.read()  # the same content again in this repo: verify it, keep the first copy
    else:
        dest = staging / sha
        if _adopt(candidates.get(sha, ()), dest, record, hashes):
            file.read()  # the target already holds it: the bundle's bytes are checked all the same
        else:
            part = staging / f"{sha}.part"
            try:
                with open(part, "wb") as out:
                    file.read(out.write)
                checkpoint()
                os.replace(part, dest)
            finally:
                part.unlink(missing_ok=True)
            hashes.remember(dest, sha)
        content[sha] = dest
    verified[file.member.name] = content[sha]


def _adopt(paths: Iterable[Path], dest: Path, record: FileRecord, hashes: HashCache) -> bool:
    """Hardlink into dest a file the target already holds with this content; False if none does (or the file
    system cannot link), and the bundle's bytes are written instead."""
    for path in paths:
        try:
            os.link(path, dest)
        except FileNotFoundError:
            continue
        except OSError:
            return False
        if hashes.holds(dest, record.size, record.sha256):
            return True
        dest.unlink()
    return False


__all__ = [
    "LAYOUTS",
    "BundleImportError",
    "ImportReport",
    "Layout",
    "RepoReport",
    "import_bundle",
    "make_layout",
    "receipt_for",
]
