"""Writing a bundle: `write_archive` packs the members an index names into a zstd-compressed POSIX tar,
reading and re-hashing the store's blobs as it goes (a damaged store fails the export, not the import),
and writes `OUT.sha256` beside it; `write_bundle` indexes a selection and writes it in one call.
"""

from __future__ import annotations

import io
import mmap
import queue
import tarfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import BinaryIO, TypedDict, cast

from mirror.bundle import bytegroup, location
from mirror.bundle.bytegroup import Codec
from mirror.bundle.frames import FRAME, FrameWriter, Level, stream_bound, workers_for
from mirror.bundle.index import INDEX_NAME, README_NAME, SUMS_NAME, BundleIndex, Progress
from mirror.bundle.members import BundleMember, chunk_offset, iter_members, readme_text, sums_text
from mirror.bundle.selection import RepoSelection, build_index
from mirror.clock import parse_iso
from mirror.errors import IntegrityError, MirrorError
from mirror.hashing import HashLanes, HashStream
from mirror.records import NOT_IN_JSON, FieldsJson
from mirror.store import Store


@dataclass(frozen=True)
class BundleSummary(FieldsJson):
    """What `write_bundle` wrote. `files` counts file members; `unique_bytes` the content stored once;
    `index_bytes` the exact `MIRROR-BUNDLE.json` written (what a signature pins)."""

    path: location.BundlePath
    sha256: str
    size: int
    files: int
    unique_bytes: int
    repos: int
    index_bytes: bytes = field(repr=False, metadata=NOT_IN_JSON)


# The blobs are read in blocks of one zstd frame (`_BlobReader`), which `FrameWriter`'s workers compress
# straight from the reader's buffers. Each blob is read and hashed on a lane of its own (`HashLanes`:
# consecutive blobs on different threads), the bundle's own sha256 on another, while the main thread writes
# the frames in order: no thread does the bulk of the work, so the export spreads over as many cores as there
# are workers (the bundle's sha256, one sequential hash of the whole bundle, is the one stage that cannot). hashlib, zstd and file I/O release the GIL. A few buffers are used in
# turn: memory stays flat whatever the bundle holds (see frames.MAX_WORKERS for the budget).
_BLOCK = FRAME
# The level of the data of a model's weights, unless `--level` says otherwise: their bytes are near random,
# so zstd finds few matches, and level 1 gives the smallest output as well as the fastest (bf16 safetensors:
# 0.7769 of the size at level 1, 0.7771 at level 3, at 1.4 times the speed). Other data keeps DEFAULT_LEVEL.
DEFAULT_LEVEL = 3
WEIGHTS_LEVEL = 1
WEIGHTS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".onnx",
    ".gguf",
    ".npy",
)
# The bundle's bytes are written in aligned pieces of this (a local one past the page cache: fsutil.BulkWriter).
_STAGE = 4 << 20


class _HashingWriter:
    """Takes the compressed bytes in order, hashing (on a thread of its own, `digest`) and counting them, and
    writes them in aligned pieces of _STAGE bytes (to a file: past the page cache); `close` writes the last,
    shorter one."""

    def __init__(self, out: location.Sink, digest: HashStream) -> None:
        self._out = out
        self.digest = digest
        self.size = 0
        self._stage = memoryview(mmap.mmap(-1, _STAGE))  # page-aligned
        self._used = 0

    def write(self, data: bytes | memoryview) -> int:
        hashed = self.digest.update(data)  # while this thread copies and writes it
        self._stage_write(data)
        hashed.result()  # the caller may reuse data's memory once this returns
        return len(data)

    def _stage_write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        view = memoryview(data).cast("B")
        while view:
            n = min(len(view), _STAGE - self._used)
            self._stage[self._used : self._used + n] = view[:n]
            self._used += n
            view = view[n:]
            if self._used == _STAGE:
                self._out.write(self._stage)
                self._used = 0

    def close(self) -> None:
        if self._used:
            self._out.write(self._stage[: self._used])
            self._used = 0


class _BlobReader:
    """Reads the data members' store blobs in archive order, in large blocks, and checks each member's bytes
    against its hash (a damaged store fails the export, not the import): each member is read and hashed on
    a lane of `lanes`, block after block (`HashStream.fill`; consecutive members on different lanes), and
    `check()` (once every block is taken) raises for the first member whose bytes did not match. A thread of
    its own (`mirror-bundle-read`) only plans: it opens each blob and hands each block a free buffer, in
    archive order, so the earliest block not taken always has one (no lane waits on another).

    `blocks()` gives the next member's bytes: its blocks must be taken in order, whole. The blocks are views
    of `buffers` buffers used in turn (no allocation, so no page faults, per block): give each back with
    `release` once it is used. Use as a context manager: leaving it stops the thread.
    """

    def __init__(
        self,
        store: Store,
        index: BundleIndex,
        members: Iterable[BundleMember],
        buffers: int,
        lanes: HashLanes,
    ) -> None:
        self._store = store
        self._index = index
        self._members = [m for m in members if m.link_to is None]
        self._lanes = lanes
        self._digests: list[tuple[BundleMember, Future[str]]] = []
        self._checked = 0  # how many of them hashed to their sha256
        self._full: queue.Queue[Future[memoryview] | BaseException | None] = queue.Queue()
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(buffers):
            self._free.put(bytearray(_BLOCK))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_all, name="mirror-bundle-read", daemon=True)
        self._thread.start()

    def blocks(self) -> Iterator[memoryview]:
        """The next member's bytes."""
        while (item := self._full.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item.result()

    def release(self, block: memoryview) -> None:
        """Give a block's buffer back for the blocks to come (its hash is done: `fill` gave it once hashed)."""
        self._free.put(cast(bytearray, block.obj))

    def check(self) -> None:
        """Once every block is taken: IntegrityError (the store's) for the first member whose bytes did not
        hash to its sha256."""
        if (damage := self._damaged(wait=True)) is not None:
            raise damage

    def _damaged(self, *, wait: bool) -> IntegrityError | None:
        """The store's error for the first member read whose bytes did not hash to its sha256; members whose
        hash is not done yet are waited for (`wait`) or left for later. Members found sound are not looked
        at again."""
        while self._checked < len(self._digests):
            m, digest = self._digests[self._checked]
            if not wait and not digest.done():
                return None
            if (found := digest.result()) != m.sha256:
                what = f"content hashing to {found}"
                if m.chunk is not None:
                    what = f"chunk {m.chunk + 1} hashing to {found}, not {m.sha256}"
                return self._store.damaged(m.file.sha256, what)
            self._checked += 1
        return None

    def __enter__(self) -> _BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _buffer(self) -> bytearray | None:
        """A free buffer, once there is one; None once stopped."""
        while not self._stop.is_set():
            try:
                return self._free.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def _read_all(self) -> None:
        for m in self._members:
            failure: BaseException | None
            try:  # a damaged blob already hashed stops the packing here, not at its end
                if (failure := self._damaged(wait=False)) is None:
                    self._read(m)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
                failure = e
            self._full.put(failure)
            if failure is not None:
                return

    def _read(self, m: BundleMember) -> None:
        """Put `m`'s blocks on the queue, each read and hashed on its lane (a block that comes short raises
        there, for the main thread; a wrong hash is found by `check`)."""
        sha256 = self._lanes.stream()
        left = m.size
        start = chunk_offset(self._index, m) if m.chunk is not None else 0
        blob = self._store.open_blob(m.file.sha256, start)
        try:
            while left and (buf := self._buffer()) is not None:
                view = memoryview(buf)[: min(_BLOCK, left)]
                self._full.put(sha256.fill(partial(self._read_block, m, blob, view)))
                left -= len(view)
        finally:
            sha256.then(blob.close)  # after its last block (or now, the lanes once stopped)
        self._digests.append((m, sha256.hexdigest()))

    def _read_block(self, m: BundleMember, blob: BinaryIO, view: memoryview) -> memoryview:
        """Fill `view` from the blob, whole (a codec groups the file's blocks of BLOCK), on a lane."""
        if _read_full(blob, view) < len(view):
            raise self._store.damaged(m.file.sha256, "fewer bytes than recorded (it shrank while packing)")
        return view


def _read_full(stream: BinaryIO, view: memoryview) -> int:
    """Fill `view` from the stream; fewer bytes only where the stream ends."""
    n = 0
    while n < len(view) and (k := _read_into(stream, view[n:])):
        n += k
    return n


def _read_into(stream: BinaryIO, view: memoryview) -> int:
    """`readinto` where the stream has it (a local file: no copy), else a read copied in."""
    if isinstance(stream, io.RawIOBase | io.BufferedIOBase):
        return stream.readinto(view) or 0
    data = stream.read(len(view))
    view[: len(data)] = data
    return len(data)


class _TarWriter:
    """Writes a tar stream byte for byte as `tarfile.open(mode="w|", format=PAX_FORMAT)` would, as zstd frames:
    headers, padding and small files gathered, each large file's data in frames of its own."""

    def __init__(self, frames: FrameWriter) -> None:
        self._frames = frames

    def member(
        self,
        info: tarfile.TarInfo,
        data: bytes = b"",
        blobs: _BlobReader | None = None,
        level: Level = DEFAULT_LEVEL,
        progress: Progress | None = None,
        codec: Codec | None = None,
    ) -> None:
        """Add a member: its header, then its data (`data`, or `info.size` bytes from `blobs`, packed by
        `codec` when given), padded to a tar block. Data of a frame's size or more goes in frames of its
        own, at `level`."""
        frames = self._frames
        frames.write(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))
        frames.write(data)
        size = len(data)
        for block in blobs.blocks() if blobs is not None else ():
            assert blobs is not None
            n = len(block)
            release = partial(blobs.release, block)
            # a codec's member: each block of the file grouped (on the worker that compresses it)
            transform = (
                partial(bytegroup.grouped, codec.ranges, size - len(data)) if codec is not None else None
            )
            size += n
            if info.size >= _BLOCK:
                frames.frame(block, level, release, transform)
            else:
                frames.write(transform(block) if transform is not None else block)
                release()
            if progress is not None:
                progress(n)
        if size != info.size:  # a bug, never the store: the reader gives each member's size
            raise MirrorError(f"{info.name}: {size} bytes packed for {info.size}")
        if size % tarfile.BLOCKSIZE:
            frames.write(tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def close(self) -> None:
        """End the archive (two zero blocks, zero-filled to a whole record) and the last frame."""
        self._frames.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        if self._frames.offset % tarfile.RECORDSIZE:
            self._frames.write(tarfile.NUL * (tarfile.RECORDSIZE - self._frames.offset % tarfile.RECORDSIZE))
        self._frames.close()


def data_level(path: str, level: int | None) -> int:
    """The zstd level of a file's data: `level` when given, else by what the file holds."""
    if level is not None:
        return level
    return WEIGHTS_LEVEL if path.lower().endswith(WEIGHTS_SUFFIXES) else DEFAULT_LEVEL


def _tarinfo(name: str, mtime: int, size: int = 0, link_to: str | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if link_to is not None:
        info.type = tarfile.LNKTYPE
        info.linkname = link_to
    return info


def _size_bound(members: Iterable[BundleMember], head: int) -> int:
    """The most bytes a bundle of `members` (after `head` bytes of index and SHA256SUMS) can take: every
    member's header (with a pax header for a long name) and padded data, compressed at worst."""
    tar = head + 8 * tarfile.BLOCKSIZE + tarfile.RECORDSIZE
    for m in members:
        names = len(m.name.encode()) + len((m.link_to or "").encode())
        tar += 4 * tarfile.BLOCKSIZE + 2 * names + (0 if m.link_to is not None else m.size)
    return stream_bound(tar)


def write_bundle(
    store: Store,
    selection: list[RepoSelection],
    out: location.BundlePath,
    *,
    level: int | None = None,
    threads: int = -1,
    created: int | None = None,
    have: Mapping[str, int] | None = None,
    progress: Progress | None = None,
) -> BundleSummary:
    """Pack `selection` into `out` (a `.tar.zst`) and write `out.sha256` beside it.

    With `have` (see `build_index`), content the far side holds is described but not packed (a delta).
    `progress` gets the bytes of each file member as it is packed (hardlinked ones at once).
    """
    index = build_index(store, selection, created=created, have=have)
    return write_archive(store, index, out, level=level, threads=threads, progress=progress)


class Packing(TypedDict, total=False):
    """How `write_archive` compresses and reports (for the writers that pass them on)."""

    level: int | None
    threads: int
    progress: Progress | None


def write_archive(
    store: Store,
    index: BundleIndex,
    out: location.BundlePath,
    *,
    level: int | None = None,
    threads: int = -1,
    progress: Progress | None = None,
    limit: int | None = None,
) -> BundleSummary:
    """Write the bundle (or volume) `index` describes to `out`, and `out.sha256` beside it.

    The bundle is written under a temp name and renamed into place (into a bucket: a multipart upload,
    completed at the end), so `out` is a whole bundle or absent.
    Every blob is re-hashed as it is packed: a damaged store fails the export instead of the import.
    `limit` (a volume's size) is checked against the result before it takes `out`'s name.
    """
    mtime = parse_iso(index.created) or 0
    members = list(iter_members(index))
    for m in members:
        if m.link_to is None and not store.has_blob(m.file.sha256, m.file.size):
            if (found := store.blob_problem(m.file.sha256, m.file.size)) not in (None, "missing"):
                raise store.damaged(m.file.sha256, found)
            raise MirrorError(
                f"{m.repo.key}@{m.commit.commit}: the store lacks {m.file.path} ({m.file.sha256}); "
                "run `mirror sync` again or `mirror verify` to check the store"
            )
    index_bytes = index.to_bytes()
    sums = sums_text(index)
    readme = readme_text(index)
    workers = workers_for(threads)
    side = out.with_name(out.name + ".sha256")
    head = len(index_bytes) + len(sums) + len(readme or b"")
    with (
        location.creating(out, _size_bound(members, head)) as raw,
        HashLanes(workers, "mirror-bundle-sha256") as lanes,
        HashLanes(1, "mirror-bundle-digest") as digest_lane,
    ):
        sink = _HashingWriter(raw, digest_lane.stream())
        with (
            # a buffer per frame in flight (see FrameWriter), one being read, one ready
            _BlobReader(store, index, members, workers + 4, lanes) as blobs,
            FrameWriter(sink.write, DEFAULT_LEVEL if level is None else level, workers) as frames,
        ):
            tar = _TarWriter(frames)
            tar.member(_tarinfo(INDEX_NAME, mtime, len(index_bytes)), index_bytes)
            tar.member(_tarinfo(SUMS_NAME, mtime, len(sums)), sums)
            if readme is not None:
                tar.member(_tarinfo(README_NAME, mtime, len(readme)), readme)
            for m in members:
                if m.link_to is not None:
                    tar.member(_tarinfo(m.name, mtime, link_to=m.link_to))
                    if progress is not None and m.size:
                        progress(m.size)
                    continue
                codec = index.codec(m.sha256)
                level_here = (
                    bytegroup.GROUPED_LEVEL if codec and level is None else data_level(m.file.path, level)
                )
                tar.member(
                    _tarinfo(m.name, mtime, m.size),
                    blobs=blobs,
                    level=level_here,
                    progress=progress,
                    codec=codec,
                )
            tar.close()
            blobs.check()
        sink.close()
        digest = sink.digest.hexdigest().result()
        if limit is not None and sink.size > limit:
            raise MirrorError(
                f"{out.name} came out at {sink.size} bytes, over the volume size {limit}; this is a bug in "
                "mirror's volume planning, please report it (export with a smaller --split meanwhile)"
            )
        location.remove(side)  # a stale digest must not sit beside the new bundle
    try:
        location.write_side(side, f"{digest}  {out.name}\n".encode())
    except OSError as e:
        raise MirrorError(f"writing {side} failed: {e}") from e
    return BundleSummary(
        path=out,
        sha256=digest,
        size=sink.size,
        files=len(members),
        unique_bytes=sum(m.size for m in members if m.link_to is None),
        repos=len(index.repos),
        index_bytes=index_bytes,
    )
