"""Stream the volumes of one import into staging: every member verified against the index, each content
the plan wants written once under its sha256 (or hardlinked from the target, which already holds it),
chunks at their offsets and joined once all are there. What a damaged volume contributed is taken back."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from mirror.bundle import BundleFile, BundleIndex, Progress, chunk_offset, open_bundle
from mirror.errors import IntegrityError
from mirror.fsutil import BulkWriter
from mirror.hashing import HashCache
from mirror.importing.unit import Volume
from mirror.layouts.kept import KeptSet
from mirror.snapshot import FileRecord


class VolumeStream:
    """Streams the bundles of one import unit into staging, content by content: each content once, named by
    its sha256, in the staging folder `home` gives for it. `pool` (sha256 -> verified file) grows as
    contents arrive; `checkpoint` is called after each file written."""

    def __init__(
        self,
        index: BundleIndex,
        pool: dict[str, Path],
        home: dict[str, Path],
        wanted: set[str],
        held: Mapping[str, tuple[Path, ...]],
        hashes: HashCache,
        kept: KeptSet | None,
        checkpoint: Callable[[], None],
        threads: int = -1,
    ) -> None:
        self.index = index
        self.pool = pool
        self.home = home
        self.wanted = wanted
        self.held = held  # sha256 -> files of the target that may hold it (hashed before use)
        self.hashes = hashes
        self.kept = kept  # a volume set's: chunks are recorded there as they arrive, and were loaded from it
        self.checkpoint = checkpoint
        self.threads = threads  # --threads: the workers decompressing each volume's frames
        self.parts: dict[str, Path] = kept.parts if kept else {}  # sha256 -> the file its chunks are in
        self.received: dict[str, set[int]] = kept.received if kept else {}  # sha256 -> its verified chunks
        self.unjoined: set[str] = set()  # contents whose verified chunks do not join to their sha256

    def volume(self, volume: Volume, progress: Progress | None) -> dict[str, str]:
        """Stream one bundle or volume; the members that failed (name -> why; "" for the archive itself).

        A structural fault of a plain bundle is raised (it is refused whole). What a volume with any failure
        contributed is taken back: a damaged volume is not used at all.
        """
        contributed: list[tuple[str, int | None]] = []
        failed: dict[str, str] = {}
        try:
            # The archive's own digest is not computed: every byte of every file is checked against the
            # index, and zstd's frame checksums cover the rest (the `.sha256` is for the transfer).
            with open_bundle(volume.path, progress, archive_digest=False, threads=self.threads) as reader:
                if reader.index_bytes != volume.index_bytes:
                    raise IntegrityError(f"{volume.path}: changed while it was being read; copy it again")
                for file in reader.files():
                    try:
                        self._receive(file, contributed)
                    except IntegrityError as e:
                        failed[file.member.name] = str(e)
                    self.checkpoint()
        except IntegrityError as e:
            if volume.index.volume_set is None:
                raise
            failed[""] = str(e)
        if failed:
            for sha, chunk in contributed:
                if chunk is None:
                    staged = self.pool.pop(sha, None)
                    if staged is not None:
                        staged.unlink(missing_ok=True)
                else:
                    self.received[sha].discard(chunk)
                    if self.kept is not None:
                        self.kept.record(sha, self.received[sha])
        return failed

    def _receive(self, file: BundleFile, contributed: list[tuple[str, int | None]]) -> None:
        """Verify one member into staging: a whole content under its sha256 (once), a chunk at its offset."""
        member = file.member
        sha = member.file.sha256
        if sha not in self.wanted or sha in self.pool or file.link_to is not None:
            # No repo that can be completed needs it, or a repeat of verified content (a hardlink raises if
            # the member it links to failed): verify only.
            file.read()
            return
        if member.chunk is not None:
            if member.chunk in self.received.get(sha, ()):
                file.read()  # kept from an earlier volume given (or import): its bytes stay as verified
                return
            part = self.parts.get(sha)
            if part is None:
                part = self.parts[sha] = self.home[sha] / f"{sha}.chunks"
                part.touch()
            with BulkWriter(part, chunk_offset(self.index, member), truncate=False) as out:
                file.read(out.write)
            self.checkpoint()
            self.received.setdefault(sha, set()).add(member.chunk)
            if self.kept is not None:  # recorded only once written whole and verified
                self.kept.record(sha, self.received[sha])
            contributed.append((sha, member.chunk))
            return
        dest = self.home[sha] / sha
        if _adopt(self.held.get(sha, ()), dest, member.file, self.hashes):
            file.read()  # the target already holds it: the bundle's bytes are checked all the same
        else:
            part = dest.with_name(f"{sha}.{uuid.uuid4().hex[:12]}.part")  # unique: staging may be kept
            try:
                with BulkWriter(part) as out:
                    file.read(out.write)
                self.checkpoint()
                os.replace(part, dest)
            finally:
                part.unlink(missing_ok=True)
            self.hashes.remember(dest, sha)
        self.pool[sha] = dest
        contributed.append((sha, None))

    def join_chunks(self) -> list[str]:
        """Put in the pool each content whose every chunk arrived, once it is checked whole against its
        sha256; a message for each that does not match (volumes of different exports, or crafted ones)."""
        problems = []
        for sha, part in sorted(self.parts.items()):
            count = len(self.index.placement(sha).chunks)
            if self.received.get(sha) != set(range(count)):
                continue
            if self.hashes.sha256(part) != sha:
                self.unjoined.add(sha)
                if self.kept is not None:  # asked for again
                    self.kept.drop_chunks(sha)
                problems.append(
                    f"content {sha}, joined from its {count} verified chunks, does not match its sha256; export "
                    "the volumes again"
                )
                continue
            dest = self.home[sha] / sha
            os.replace(part, dest)
            self.hashes.remember(dest, sha)
            self.pool[sha] = dest
            if self.kept is not None:
                self.kept.drop_chunks(sha)  # its record goes: the whole content is kept from now on
            self.checkpoint()
        return problems


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
