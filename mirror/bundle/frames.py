"""zstd frames: a stream compressed as independent frames on worker threads (`FrameWriter`), and the
frame boundaries followed through the compressed bytes (`FrameWalker`); `framereader` reads them back.

A bundle's tar stream is cut into zstd frames of at most FRAME bytes each (RFC 8878). Any zstd reader takes
a sequence of frames as one stream (`zstd -d`, `tar --zstd`, python's zstandard), and independent frames let
both sides use every core: zstd's own worker threads only help compression, while one frame always
decompresses on one core. Frames are compressed and decompressed in pools of threads (zstd releases the
GIL), with buffers used in turn, and come out in order; memory stays flat whatever the stream holds.
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import cast

import zstandard

from mirror.errors import IntegrityError

FRAME = 4 << 20  # the most stream bytes one frame holds
ZSTD_MAGIC = 0xFD2FB528
Buffer = mmap.mmap  # what frames are compressed and decompressed into
Level = int | zstandard.ZstdCompressionParameters  # a zstd level, or parameters of its own (with a checksum)
# What a frame holds made from the caller's bytes, on the worker: as long, in a buffer of the worker's own.
Transform = Callable[[memoryview], bytes | memoryview]


class FrameError(IntegrityError):
    """A zstd frame that does not decompress (or whose header is damaged): where it starts in the compressed
    stream (`offset`), where its content starts in the decompressed one (`stream_offset`), and how much its
    header says it holds (`stream_size`, None when it cannot tell), so a reader can name what it covers."""

    def __init__(self, why: str, offset: int, stream_offset: int, stream_size: int | None) -> None:
        super().__init__(f"the zstd frame at byte {offset} is damaged ({why})")
        self.why = why
        self.offset = offset
        self.stream_offset = stream_offset
        self.stream_size = stream_size


def compressed_bound(n: int) -> int:
    """The most zstd turns n bytes into (ZSTD_COMPRESSBOUND), plus a frame header and checksum."""
    small = ((128 << 10) - n) >> 11 if n < (128 << 10) else 0
    return n + (n >> 8) + small + 64


def stream_bound(n: int) -> int:
    """The most n bytes of stream compress to as `FrameWriter` frames them, each frame with the overhead
    `compressed_bound` allows for: full frames of gathered bytes, a large piece's frames (at most two per
    FRAME bytes it holds), and the gathered bytes cut short before each large piece and at the end."""
    frames = 4 * -(-n // FRAME) + 2
    return n + (n >> 8) + frames * (64 + 64)


# The memory budget of the frames in flight: each worker's frame holds up to a frame of input and one of output
# (2 x FRAME, and the frames queued behind), so the workers are capped here whatever `--threads` or the core
# count says: 8 of them (about 9 MB each), and export and import stay well under 200 MB with `--threads 16`
# or 64 (issue 16; 12 workers measured 196 MB at import). More workers could not help without more memory:
# the frame size is part of the bundle's bytes.
MAX_WORKERS = 8


def workers_for(threads: int) -> int:
    """Worker threads for a `--threads` value: -1 (or 0) is one per core; at most MAX_WORKERS (memory)."""
    return min(threads if threads > 0 else max(1, os.cpu_count() or 1), MAX_WORKERS)


def spare_buffer(spare: queue.SimpleQueue[Buffer], size: int) -> Buffer:
    """A buffer given back earlier, if one holds size bytes, else a new one (of at least a frame): an
    anonymous mmap, so its bytes start on a page (see fsutil.BulkWriter)."""
    try:
        buffer = spare.get_nowait()
    except queue.Empty:
        return mmap.mmap(-1, max(size, FRAME))
    return buffer if len(buffer) >= size else mmap.mmap(-1, max(size, FRAME))


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


class FrameWriter:
    """Compresses a stream into zstd frames on `workers` threads; gives the frames to `sink` in order.

    `write` gathers small pieces at the default level, cut into frames of FRAME bytes. `frame` makes frames
    of a large piece directly from the caller's buffer (no copy), at a level of its own, after whatever was
    gathered: `release` is called once the buffer is no longer needed. The frames depend only on the data,
    the levels and where `frame` was called, never on the number of workers: the stream is reproducible.
    Use as a context manager: `close` ends the stream; leaving on an error stops the workers.
    """

    def __init__(self, sink: Callable[[memoryview], object], level: int, workers: int) -> None:
        self._sink = sink
        self._level = level
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="mirror-bundle-zstd")
        self._limit = max(1, workers) + 2  # frames in flight: each worker busy, the next ones queued
        self._pending: deque[Future[tuple[Buffer, int]]] = deque()
        self._gathered = bytearray()
        self._local = threading.local()
        self._spare: queue.SimpleQueue[Buffer] = queue.SimpleQueue()
        for _ in range(self._limit + 1):  # one per frame in flight, one being written: memory is set here
            self._spare.put(mmap.mmap(-1, compressed_bound(FRAME)))
        self.offset = 0  # stream bytes taken so far

    def write(self, data: bytes | memoryview) -> None:
        self.offset += len(data)
        self._gathered += data
        while len(self._gathered) >= FRAME:
            self._submit(bytes(self._gathered[:FRAME]), self._level, None)
            del self._gathered[:FRAME]

    def frame(
        self,
        data: memoryview,
        level: Level,
        release: Callable[[], None] | None = None,
        transform: Transform | None = None,
    ) -> None:
        """`data` (at most FRAME bytes) as a frame of its own, at `level`; with `transform`, the frame holds
        what it makes of `data` (as long, made on the worker, which compresses it before its next call)."""
        if len(data) > FRAME:
            raise ValueError(f"a frame holds at most {FRAME} bytes")
        self._flush()
        self.offset += len(data)
        self._submit(data, level, release, transform)

    def close(self) -> None:
        """Compress what is gathered, give every frame to the sink, stop the workers."""
        self._flush()
        while self._pending:
            self._write_oldest()
        self._pool.shutdown()

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)

    def _flush(self) -> None:
        if self._gathered:
            self._submit(bytes(self._gathered), self._level, None)
            self._gathered.clear()

    def _submit(
        self,
        data: bytes | memoryview,
        level: Level,
        release: Callable[[], None] | None,
        transform: Transform | None = None,
    ) -> None:
        self._pending.append(self._pool.submit(self._compress, data, level, release, transform))
        while len(self._pending) > self._limit:
            self._write_oldest()

    def _write_oldest(self) -> None:
        out, n = self._pending.popleft().result()
        self._sink(memoryview(out)[:n])
        self._spare.put(out)

    def _compress(
        self,
        data: bytes | memoryview,
        level: Level,
        release: Callable[[], None] | None,
        transform: Transform | None = None,
    ) -> tuple[Buffer, int]:
        try:
            if transform is not None:
                data = transform(cast(memoryview, data))
                done, release = release, None
                if done is not None:
                    done()  # the caller's buffer is no longer needed
            contexts: dict[Level, zstandard.ZstdCompressor] = self._local.__dict__.setdefault("contexts", {})
            cctx = contexts.get(level)
            if cctx is None:
                cctx = contexts[level] = (
                    zstandard.ZstdCompressor(level=level, write_checksum=True)
                    if isinstance(level, int)
                    else zstandard.ZstdCompressor(compression_params=level)
                )
            out = spare_buffer(self._spare, compressed_bound(FRAME))  # a frame always fits
            view, n = memoryview(out), 0
            reader = cctx.stream_reader(data, size=len(data))
            while k := reader.readinto(view[n:]):
                n += k
            if reader.read(1):  # never: compressed_bound is the most a frame can take
                raise RuntimeError("a zstd frame outgrew compressed_bound")
            return out, n
        finally:
            if release is not None:
                release()


# --------------------------------------------------------------------------------------------------
# Walking the frame headers (for reading; see framereader)
# --------------------------------------------------------------------------------------------------


class FrameWalker:
    """Follows zstd frame boundaries through the compressed bytes (RFC 8878, headers only).

    `ends` collects (offset just past the frame, skippable) for each frame completed, for the reader to
    take. The decompressor reports a stream cut off mid-frame as a normal end of data, so `complete` is
    how a truncated stream is told apart from a whole one.
    """

    def __init__(self) -> None:
        self._state = "magic"
        self._need = 4
        self._buf = bytearray()
        self._skip = 0
        self._checksum = False
        self._skippable = False
        self.pos = 0
        self.frames = 0
        self.frame_start = 0  # where the frame being walked starts
        self.ends: list[tuple[int, bool]] = []
        self.fault: IntegrityError | None = None  # a damaged header met: nothing after it is walked

    @property
    def complete(self) -> bool:
        return (
            self.frames > 0 and self._state == "magic" and not self._buf and not self._skip and not self.fault
        )

    def feed(self, data: bytes | memoryview) -> None:
        """Walk the next bytes; a damaged header is kept in `fault` (the frames ended before it stay in
        `ends`, for the reader to take before it raises the fault)."""
        if self.fault is None:
            try:
                self._feed(data)
            except IntegrityError as e:
                self.fault = e
        self.pos += len(data)

    def _feed(self, data: bytes | memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                if not self._skip and self._state == "end":
                    self._end(self.pos + pos)
                continue
            step = min(self._need - len(self._buf), end - pos)
            self._buf += data[pos : pos + step]
            pos += step
            if len(self._buf) == self._need:
                header = bytes(self._buf)
                self._buf.clear()
                self._advance(header)
                if self._state == "end" and not self._skip:
                    self._end(self.pos + pos)

    def _end(self, offset: int) -> None:
        self.frames += 1
        self.ends.append((offset, self._skippable))
        self._state, self._need = "magic", 4
        self.frame_start = offset

    def _advance(self, header: bytes) -> None:
        if self._state == "magic":
            magic = int.from_bytes(header, "little")
            self._skippable = magic & 0xFFFFFFF0 == 0x184D2A50
            if magic == ZSTD_MAGIC:
                self._state, self._need = "descriptor", 1
            elif self._skippable:
                self._state, self._need = "skippable", 4
            else:
                raise IntegrityError("not a zstd stream (bad frame magic)")
        elif self._state == "skippable":
            self._skip = int.from_bytes(header, "little")
            self._state = "end"
        elif self._state == "descriptor":
            d = header[0]
            if d & 0x08:
                raise IntegrityError("corrupt zstd frame header")
            single_segment = bool(d & 0x20)
            fcs = (1 if single_segment else 0, 2, 4, 8)[d >> 6]
            self._skip = (0 if single_segment else 1) + (0, 1, 2, 4)[d & 3] + fcs
            self._checksum = bool(d & 0x04)
            self._state, self._need = "block", 3
        else:  # block header
            value = int.from_bytes(header, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise IntegrityError("corrupt zstd block header")
            self._skip = 1 if kind == 1 else size
            if last:
                self._skip += 4 if self._checksum else 0
                self._state = "end"


__all__ = [
    "FRAME",
    "Buffer",
    "FrameError",
    "FrameWalker",
    "FrameWriter",
    "Level",
    "Transform",
    "compressed_bound",
    "spare_buffer",
    "stream_bound",
    "workers_for",
]
