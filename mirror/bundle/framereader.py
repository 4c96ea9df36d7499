"""Reading zstd frames back: `FrameReader` turns any zstd stream into its decompressed blocks, in order.

Frames up to MAX_WHOLE are decompressed whole on worker threads; longer ones (a bundle made by another
tool, or by an earlier mirror) and damaged ones are streamed on the reading thread, in blocks that start
small (whatever precedes a fault still comes out). The frame boundaries come from a `FrameWalker` fed by
whoever reads the file.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, NamedTuple, cast

import zstandard

from mirror.bundle.frames import FRAME, Buffer, FrameError, FrameWalker, spare_buffer
from mirror.errors import IntegrityError

MAX_WHOLE = 2 * FRAME  # a frame this long at most (compressed, and decompressed) is decompressed whole
_READ = 4 << 20  # the compressed stream is read in pieces of this
_FIRST_INFLATE = 16 << 10  # a streamed frame comes out in blocks of this, doubling up to FRAME


def _content_size(frame: bytes | memoryview) -> int | None:
    """What a frame's header says it holds, if it says (and the header is readable)."""
    try:
        size = zstandard.get_frame_parameters(frame).content_size
    except zstandard.ZstdError:
        return None
    return None if size == zstandard.CONTENTSIZE_UNKNOWN else size


class Block(NamedTuple):
    """A piece of the decompressed stream, and how far the compressed stream had been read for it."""

    data: memoryview
    read_to: int
    buffer: Buffer | None  # for `FrameReader.recycle` once data is used


class _Whole(NamedTuple):
    data: bytes | memoryview  # a whole frame
    end: int


class _Part(NamedTuple):
    data: bytes | memoryview  # a piece of a long frame (or of one cut off by the end of the stream)
    end: int
    last: bool


def _join(pieces: list[memoryview]) -> bytes | memoryview:
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class FrameReader:
    """The decompressed stream of `read` (a file's read), as `Block`s in order, from `blocks()`.

    `read` is called from the thread that runs `blocks()`; `walker` must be fed every byte `read` returns
    (the caller's reader does it, so that whatever reads the file keeps one account of it). Up to `workers`
    frames are decompressed at once. Give each block's buffer back through `recycle` once its data is used;
    `close` (or `stop` set) ends the work.
    """

    def __init__(
        self, read: Callable[[int], bytes], walker: FrameWalker, workers: int, stop: threading.Event
    ) -> None:
        self._read = read
        self._walker = walker
        self._stop = stop
        self._workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="mirror-bundle-unzstd")
        self._local = threading.local()
        self._spare: queue.SimpleQueue[Buffer] = queue.SimpleQueue()
        self._emitted = 0  # decompressed bytes given out so far: where the next frame's content starts

    def recycle(self, buffer: Buffer) -> None:
        self._spare.put(buffer)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def blocks(self) -> Iterator[Block]:
        pending: deque[tuple[Future[Block], _Whole]] = deque()
        pieces = self._pieces()
        try:
            for piece in pieces:
                if isinstance(piece, _Whole) and (size := self._whole_size(piece)) is not None:
                    pending.append((self._pool.submit(self._decompress, piece, size), piece))
                    while len(pending) > self._workers:
                        yield from self._finish(*pending.popleft())
                    continue
                while pending:  # a fault reading on comes after the frames read before it
                    yield from self._finish(*pending.popleft())
                if isinstance(piece, IntegrityError) and self._walker.frame_start:
                    # A damaged frame header met by the walker (the first one's: not a zstd stream at all).
                    raise FrameError(str(piece), self._walker.frame_start, self._emitted, None) from None
                if isinstance(piece, BaseException):
                    raise piece
                if isinstance(piece, _Whole):
                    yield from self._stream(iter([piece.data]), piece)
                elif piece.data:  # a long frame: streamed, its next pieces taken as the decompressor asks
                    yield from self._stream(self._rest_of_frame(piece, pieces), piece)
            while pending:
                yield from self._finish(*pending.popleft())
        finally:
            for future, _ in pending:
                future.cancel()

    @staticmethod
    def _rest_of_frame(
        first: _Part, pieces: Iterator[_Whole | _Part | BaseException]
    ) -> Iterator[bytes | memoryview]:
        yield first.data
        last = first.last
        while not last:
            piece = next(pieces, None)
            if piece is None:
                return  # cut off
            if isinstance(piece, BaseException):
                raise piece
            assert isinstance(piece, _Part)
            yield piece.data
            last = piece.last

    def _pieces(self) -> Iterator[_Whole | _Part | BaseException]:
        """The compressed stream cut at frame boundaries: whole frames up to MAX_WHOLE, longer ones (or a
        last one cut off) in parts. Skippable frames are left out. A fault reading comes as the last item."""
        try:
            yield from self._cut()
        except (IntegrityError, OSError) as e:
            yield e

    def _cut(self) -> Iterator[_Whole | _Part]:
        walker = self._walker
        frame: list[memoryview] = []
        size = 0  # bytes in frame
        parted = False  # the current frame goes out in parts
        while not self._stop.is_set() and (data := self._read(_READ)):
            view, at = memoryview(data), walker.pos - len(data)
            ends, walker.ends = walker.ends, []
            for end, skippable in ends:
                frame.append(view[: end - at])
                view, at = view[end - at :], end
                if parted:
                    yield _Part(_join(frame), end, True)
                elif not skippable:
                    yield _Whole(_join(frame), end)
                frame, size, parted = [], 0, False
            if view:
                frame.append(view)
                size += len(view)
                if parted or size > MAX_WHOLE:
                    yield _Part(_join(frame), at + len(view), False)
                    frame, size, parted = [], 0, True
            if walker.fault is not None:
                raise walker.fault
        if frame:  # cut off inside a frame: what it holds so far is decompressed, the caller judges the end
            yield _Part(_join(frame), walker.pos, True)

    @staticmethod
    def _whole_size(piece: _Whole) -> int | None:
        """The frame's decompressed size when it says and it is small enough to decompress whole."""
        try:
            size = zstandard.get_frame_parameters(piece.data).content_size
        except zstandard.ZstdError:
            return None  # streamed, which reports the fault
        return size if size <= MAX_WHOLE else None  # CONTENTSIZE_UNKNOWN is 2**64 - 1

    def _decompress(self, piece: _Whole, size: int) -> Block:
        """The whole frame, which says it holds `size` bytes."""
        dctx = self._local.__dict__.get("dctx")
        if dctx is None:
            dctx = self._local.dctx = zstandard.ZstdDecompressor()
        out = spare_buffer(self._spare, size)
        view, n = memoryview(out)[:size], 0
        reader = dctx.stream_reader(piece.data, read_across_frames=False)
        while n < size and (k := reader.readinto(view[n:])):
            n += k
        if n != size or reader.read(1):  # the read also checks the frame's checksum
            raise zstandard.ZstdError("the frame's content does not have the size its header gives")
        return Block(view, piece.end, out)

    def _finish(self, future: Future[Block], piece: _Whole) -> Iterator[Block]:
        try:
            block = future.result()
        except zstandard.ZstdError:
            # Stream the damaged frame instead: the bytes before the fault come out, then the fault.
            start = self._emitted
            yield from self._stream(iter([piece.data]), piece)
            raise FrameError(
                "it decompressed differently twice", _start(piece), start, _content_size(piece.data)
            ) from None
        self._emitted += len(block.data)
        yield block

    def _stream(self, parts: Iterator[bytes | memoryview], first: _Whole | _Part) -> Iterator[Block]:
        """Decompress one frame (`first`, its first part) from its parts on this thread, in blocks that grow
        from small to FRAME; FrameError if it does not decompress."""
        stream = zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], _Parts(parts)), read_size=_READ, read_across_frames=False, closefd=False
        )
        start, size = self._emitted, _FIRST_INFLATE
        try:
            while not self._stop.is_set() and (data := stream.read(size)):
                self._emitted += len(data)
                yield Block(memoryview(data), self._walker.pos, None)
                size = min(2 * size, FRAME)
        except zstandard.ZstdError as e:
            raise FrameError(str(e), _start(first), start, _content_size(first.data)) from None


def _start(piece: _Whole | _Part) -> int:
    """Where a frame starts in the compressed stream, from its first piece."""
    return piece.end - len(piece.data)


class _Parts:
    """A file reading the parts of one frame, in turn."""

    def __init__(self, parts: Iterator[bytes | memoryview]) -> None:
        self._parts = parts

    def read(self, n: int = -1) -> bytes | memoryview:
        return next(self._parts, b"")


__all__ = ["MAX_WHOLE", "Block", "FrameReader"]
