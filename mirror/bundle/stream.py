"""The inflating stream: a bundle file read once, forward, and decompressed ahead on threads of its own.

`RawReader` reads the file (feeding a `FrameWalker`, and hashing it on a thread when asked); the
`InflatingStream` decompresses it through a `FrameReader` and gives the tar stream to one consumer, as a
forward-only file for tarfile's headers and as views of the decompressed blocks for the members' data.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from mirror.bundle.framereader import Block, FrameReader
from mirror.bundle.frames import Buffer, FrameWalker, workers_for
from mirror.bundle.index import Progress
from mirror.bundle.location import Reader
from mirror.hashing import CHUNK

# Reading is several threads: one reads the bundle file and hands its zstd frames to a pool that decompresses
# them (see FrameReader), one hashes the compressed bytes, and the caller's parses the tar stream and hashes
# and writes the members' data. zstd, hashlib and file I/O release the GIL, so on two cores they overlap.
# The decompressed stream moves in blocks of up to a frame, at most _AHEAD of them waiting: memory stays flat
# whatever the bundle holds.
_AHEAD = 4


def _put(q: queue.Queue[Any], item: object, stop: threading.Event) -> bool:
    """Put item on a bounded queue unless stop is set first (the reader went away); whether it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class RawReader:
    """Reads the bundle (a file, or an object in a bucket) for the decompressor, following its frames; with
    `digest`, a thread of its own hashes it."""

    def __init__(self, raw: Reader, stop: threading.Event, digest: bool) -> None:
        self._raw = raw
        self._stop = stop
        self._sha256 = hashlib.sha256()
        self._pending: queue.Queue[bytes | None] = queue.Queue(_AHEAD)
        self._hasher: threading.Thread | None = None
        if digest:
            self._hasher = threading.Thread(target=self._hash, name="mirror-bundle-hash", daemon=True)
            self._hasher.start()
        self.walker = FrameWalker()
        self.size = 0
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        if self._stop.is_set():
            return b""  # the reader went away: end the decompressor's pass
        data = self._raw.read(n)
        self.eof = not data and n != 0
        if data:
            if self._hasher is not None:
                _put(self._pending, data, self._stop)
            self.walker.feed(data)
            self.size += len(data)
        return data

    def _hash(self) -> None:
        while (data := self._pending.get()) is not None:
            self._sha256.update(data)

    def close(self) -> None:
        """Stop the hashing thread (once it has hashed what it was given)."""
        if self._hasher is not None and self._hasher.is_alive():
            self._pending.put(None)  # never blocks for long: the hasher only ever takes
            self._hasher.join()

    def hexdigest(self) -> str | None:
        """The sha256 of every byte read (None without `digest`); only once nothing more will be read."""
        if self._hasher is None:
            return None
        self.close()
        return self._sha256.hexdigest()


def copied(views: Iterable[memoryview]) -> bytes:
    """The bytes of views of the decompressed stream, each copied before the next is taken (taking a
    block gives the one before back for reuse)."""
    out = bytearray()
    for view in views:
        out += view
    return bytes(out)


class InflatingStream:
    """The decompressed tar stream, produced ahead by a thread of its own, for one consumer.

    For tarfile (which parses the headers) it is a file that only moves forward: `read`, `tell` and `seek`
    ahead. `take` hands out a member's data as views of the decompressed blocks, without copying them.
    `progress` gets the compressed bytes as the blocks they became are taken.
    """

    def __init__(
        self, raw: RawReader, stop: threading.Event, progress: Progress | None, threads: int = -1
    ) -> None:
        self._raw = raw
        self._stop = stop
        self._progress = progress
        self._blocks: queue.Queue[Block | BaseException] = queue.Queue(_AHEAD)
        self._frames = FrameReader(raw.read, raw.walker, workers_for(threads), stop)
        self._view = memoryview(b"")  # what is left of the current block
        self._buffer: Buffer | None = None  # the current block's, to recycle once it is used
        self._pos = 0
        self._reported = 0
        self._end: BaseException | None = None  # what ended the stream, once it has
        self._ended = False
        self._thread = threading.Thread(target=self._inflate, name="mirror-bundle-inflate", daemon=True)
        self._thread.start()

    def _inflate(self) -> None:
        raw = self._raw
        item: Block | BaseException
        try:
            for block in self._frames.blocks():
                if not _put(self._blocks, block, self._stop):
                    return
            while raw.read(CHUNK):  # whatever follows the last frame still counts in the bundle's sha256
                pass
            item = Block(memoryview(b""), raw.size, None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            item = e
        finally:
            self._frames.close()
        _put(self._blocks, item, self._stop)

    def close(self) -> None:
        """Stop the thread; the stream is unusable after."""
        self._stop.set()
        while True:  # free the thread if it waits for room, and the blocks' memory
            try:
                self._blocks.get_nowait()
            except queue.Empty:
                break
        self._thread.join()

    def _next_block(self) -> bool:
        if self._ended:
            if self._end is not None:
                raise self._end
            return False
        item = self._blocks.get()
        if isinstance(item, BaseException):
            self._ended, self._end = True, item
            raise item
        if self._buffer is not None:  # the block before is used: the frame reader may fill its buffer again
            self._frames.recycle(self._buffer)
        data, raw_size, self._buffer = item
        if self._progress is not None and raw_size > self._reported:
            self._progress(raw_size - self._reported)
            self._reported = raw_size
        self._view = data
        self._ended = not data
        return bool(data)

    def take(self, n: int) -> Iterator[memoryview]:
        """The next n bytes, as views of the blocks in order; fewer only where the stream ends."""
        while n > 0:
            if not self._view and not self._next_block():
                return
            view = self._view[:n]
            self._view = self._view[len(view) :]
            self._pos += len(view)
            n -= len(view)
            yield view

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            raise ValueError("the bundle stream is read in bounded pieces")
        return copied(self.take(n))

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self._pos:
            raise ValueError("the bundle stream only moves forward")
        for _ in self.take(pos - self._pos):
            pass
        return self._pos
