"""The kept staging of a volume set between imports (one disc drive, the discs inserted one at a time).

What an import of some volumes of a set verified but could not publish yet (content of repos that still
lack other volumes, chunks of a content cut across volumes) stays in the target, beside the layout's
staging, in `.mirror/kept/<set id>/` (per repo in the hf and modelscope layouts, where their tools never
look; the hf layout keeps the repo's `snapshots/` folder so that `scan_cache_dir()` accepts the repo):

    <sha256>                   a whole content, verified when written
    <sha256>.chunks            a content cut into chunks, each written at its offset
    <sha256>.received.json     the numbers of the chunks written whole and verified (atomically replaced)

Nothing kept is trusted as it is: every later import re-hashes each whole content and each chunk the record
names (a kill, bit rot or a hand that changed it makes it wanted again, and what does not match is
removed), so a kill at any moment leaves kept state usable or swept. What the published repos used, and
the whole set's area once every repo of the set is published, is swept.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

from mirror.bounded import RECORD, read_json_bounded
from mirror.bundle import BundleIndex, IndexedRepo
from mirror.errors import MirrorError
from mirror.fsutil import atomic_write_bytes, entries, remove_empty, remove_path
from mirror.hashing import HashCache, range_sha256
from mirror.layouts.layout import Layout
from mirror.units import human_size

CHUNKS = ".chunks"
RECEIVED = ".received.json"


class KeptSet:
    """The kept area of one volume set in one target: what earlier imports left, checked again."""

    def __init__(self, writer: Layout, index: BundleIndex, hashes: HashCache) -> None:
        assert index.volume_set is not None
        self.writer = writer
        self.index = index
        self.hashes = hashes
        self.set_id = index.volume_set.id
        self.sizes = {f.sha256: f.size for f in index.files()}
        self.whole: dict[str, Path] = {}  # sha256 -> kept content, verified
        self.parts: dict[str, Path] = {}  # sha256 -> its .chunks file
        self.received: dict[str, set[int]] = {}  # sha256 -> the chunks verified in it

    def folder(self, repo: IndexedRepo) -> Path:
        return self.writer.staging_root(repo).parent / "kept" / self.set_id

    def folders(self) -> list[Path]:
        return sorted({self.folder(r) for r in self.index.repos})

    def load(self) -> None:
        """Take in what earlier imports kept, each content and chunk re-hashed; remove the rest.

        MirrorError (before anything is written) when a kept folder, or a folder on the way to it from the
        layout's `.mirror/`, is a link or not a folder: nothing is ever kept or swept through a link."""
        for folder in self.folders():
            for step in (folder.parent.parent, folder.parent, folder):
                if step.is_symlink() or (step.exists() and not step.is_dir()):
                    raise MirrorError(
                        f"{step} is a link or a file where mirror keeps a volume set's verified content; "
                        "remove it and import again"
                    )
            if not folder.is_dir():
                continue
            self.writer.check_inside(folder / "kept")  # the folders above it in the target, too
            for entry in entries(folder):
                name = entry.name
                sha = name.removesuffix(CHUNKS).removesuffix(RECEIVED)
                placement = self.index.placement(sha) if sha in self.sizes else None
                if placement is None or entry.is_symlink() or not entry.is_file():
                    remove_path(entry)
                elif name == sha and self.hashes.holds(entry, self.sizes.get(sha, -1), sha):
                    self.whole.setdefault(sha, entry)
                elif name == sha + CHUNKS and placement.chunks:
                    self.parts.setdefault(sha, entry)
                elif name != sha + RECEIVED:
                    entry.unlink()
        for sha, part in list(self.parts.items()):
            if sha in self.whole:
                self.drop_chunks(sha)
                continue
            verified = {i for i in _record(part) if self._chunk_holds(sha, part, i)}
            if verified:
                self.received[sha] = verified
                self.record(sha, verified)
            else:
                self.drop_chunks(sha)
        for folder in self.folders():  # records whose chunks file is gone
            for entry in entries(folder):
                if entry.name.endswith(RECEIVED) and entry.name.removesuffix(RECEIVED) not in self.parts:
                    entry.unlink(missing_ok=True)

    def _chunk_holds(self, sha: str, part: Path, number: int) -> bool:
        placement = self.index.placement(sha)
        if not 0 <= number < len(placement.chunks):
            return False
        chunk, offset = placement.chunks[number], placement.offsets[number]
        return range_sha256(part, offset, chunk.size) == chunk.sha256

    def record(self, sha: str, received: Iterable[int]) -> None:
        """Say (atomically) which chunks of a content are written whole and verified."""
        part = self.parts[sha]
        atomic_write_bytes(part.with_name(sha + RECEIVED), json.dumps(sorted(received)).encode())

    def drop_chunks(self, sha: str) -> None:
        part = self.parts.pop(sha, None)
        self.received.pop(sha, None)
        if part is not None:
            part.with_name(sha + RECEIVED).unlink(missing_ok=True)
            part.unlink(missing_ok=True)

    def sweep(self, needed: set[str]) -> list[Path]:
        """Remove what no repo still missing needs (all of the set's area once none is missing); the
        folders that still hold something."""
        left = []
        for folder in self.folders():
            if folder.is_symlink() or not folder.is_dir():
                continue
            if not needed:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                for entry in entries(folder):
                    sha = entry.name.removesuffix(CHUNKS).removesuffix(RECEIVED)
                    if sha not in needed:
                        remove_path(entry)
            if entries(folder):
                left.append(folder)
            else:
                remove_empty(folder, folder.parent)
        return left

    def held(self) -> frozenset[Path]:
        """Every entry of the set's kept folders now (before an import streams into them: `put_back`)."""
        return frozenset(
            entry
            for folder in self.folders()
            if not folder.is_symlink() and folder.is_dir()
            for entry in entries(folder)
        )

    def put_back(self, held: frozenset[Path]) -> list[Path]:
        """Remove what this import added to the kept area (entries not `held` before it streamed), for an
        import that publishes nothing and keeps nothing of its own (a bundle its policy refused): what
        earlier imports kept stays, and a chunk file they started keeps the chunks this one verified. The
        folders that still hold something."""
        left = []
        for folder in self.folders():
            if folder.is_symlink() or not folder.is_dir():
                continue
            for entry in entries(folder):
                if entry not in held:
                    remove_path(entry)
            if entries(folder):
                left.append(folder)
        return left

    def protected(self, folders: list[Path]) -> list[Path]:
        """What the import must not remove on its way out: the folders still holding kept content, and the
        staging parents of their repos (the hf layout's `snapshots/`, without which scan_cache_dir takes
        the repo for a corrupt one)."""
        keep = list(folders)
        for repo in self.index.repos:
            if self.folder(repo) in folders:
                keep += self.writer.staging_parents(repo)
        return keep

    def describe(self, folders: list[Path], needs: Iterable[str]) -> list[str]:
        """One line per folder still holding kept content, for the import's report."""
        lines = []
        for folder in folders:
            files = [e for e in entries(folder) if not e.name.endswith(RECEIVED)]
            size = sum(e.stat().st_blocks * 512 for e in files if e.is_file())
            still = ", ".join(sorted(set(needs))) or "none"
            lines.append(
                f"{folder}: {len(files)} verified contents or chunk files ({human_size(size)}) kept for the "
                f"next import of this set (still needed: {still})"
            )
        return lines


def _record(part: Path) -> list[int]:
    path = part.with_name(part.name.removesuffix(CHUNKS) + RECEIVED)
    try:
        data = read_json_bounded(path, RECORD, MirrorError)
    except MirrorError:
        return []  # absent, unreadable or not ours: nothing of it is trusted
    return (
        [n for n in data if isinstance(n, int) and not isinstance(n, bool)] if isinstance(data, list) else []
    )
