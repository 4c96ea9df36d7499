"""The `bytegroup` codec (`export --codec bytegroup`): a safetensors file's 16-bit tensors (BF16, F16) packed
as their high bytes, then their low bytes, so that zstd finds the exponents together (they compress well;
the mantissas barely do), as the ZipNN paper does. Bundle format 1.3.

A member so packed holds a permutation of its file's bytes, of the same size. The file is cut into blocks
of BLOCK bytes at offsets 0, BLOCK, 2 BLOCK, ...; in each block, every part of a grouped range (the index
records the ranges: `Codec.ranges`, [begin, end) file offsets of whole 16-bit values) holds its values'
high bytes (the odd offsets from the range's start, little-endian), then their low bytes; a value cut by a
block boundary stays as it is, as does every byte outside the ranges. So a block is grouped and restored
on its own, in flat memory, and a member streams forward. The byte shuffles are numpy's (whole arrays at a
time, outside the GIL: about 4 GB/s a core, where Python's slice assignment does 0.5 to 1).

The ranges come from the safetensors header at export (`mirror.bundle.selection`). The header is data: a lying one
only makes grouping pointless, never wrong, since restoring is the exact inverse of grouping for any
ranges; and import checks the restored bytes against the file's sha256 as for any member, so a member
whose ranges or bytes were altered is refused.
"""

from __future__ import annotations

import mmap
import threading
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import numpy
import zstandard

from mirror.bundle.frames import FRAME

NAME = "bytegroup"
CODECS = (NAME,)  # the values of `export --codec` besides the default, "zstd"
BLOCK = FRAME  # grouped and restored on its own: the writer's blocks, one frame each
SIXTEEN_BIT = frozenset({"BF16", "F16"})
LITTLE_16 = numpy.dtype("<u2")  # a 16-bit value as safetensors stores it: little-endian
SUFFIX = ".safetensors"
MAX_RANGES = 1 << 16  # per file: of a header naming more (by lying), the longest are grouped, never refused
Ranges = tuple[tuple[int, int], ...]
# How a grouped block is compressed (unless `export --level` says otherwise): zstd's fast strategy with a tiny
# hash table and matches of 7 bytes or more. The high bytes take few symbols, so level 1 finds a match almost
# everywhere, each short: 0.366 of their size at ~200 MB/s a core. These settings leave them to the entropy
# coder: 0.335 at ~500 MB/s (the low bytes stay incompressible, stored at ~3 GB/s); a grouped bf16 block of
# random normals comes to 0.668 of its size at 1.2 times the speed of level 1 on the plain block (0.777),
# and decompresses 3 times as fast.
GROUPED_LEVEL = zstandard.ZstdCompressionParameters(
    strategy=zstandard.STRATEGY_FAST,
    window_log=17,
    hash_log=6,
    chain_log=6,
    search_log=1,
    min_match=7,
    target_length=0,
    write_checksum=True,
)


@dataclass(frozen=True)
class Codec:
    """How a content is packed when not as is: `name` (bytegroup) and the ranges it groups."""

    name: str
    ranges: Ranges

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ranges": [list(r) for r in self.ranges]}


def ranges_problem(ranges: Ranges, size: int) -> str | None:
    """What makes `ranges` unusable on a file of `size` bytes, if anything: they must be sorted, apart,
    within the file, and each of whole 16-bit values (an even length of at least 2). Their count is the
    parser's to bound (at most MAX_RANGES), before it builds them."""
    reached = 0
    for begin, end in ranges:
        if begin < reached or end > size or end - begin < 2 or (end - begin) % 2:
            return f"the range [{begin}, {end}) is out of order, outside the file's {size} bytes or not of 16-bit values"
        reached = end
    return None


def merged(spans: Iterable[tuple[int, int]], size: int) -> Ranges:
    """Sorted [begin, end) spans (as a header gives them: perhaps overlapping) as ranges `ranges_problem`
    accepts: overlaps dropped, each cut to whole values and to the file, ranges that touch joined, at
    most MAX_RANGES (the longest)."""
    out: list[list[int]] = []
    for begin, end in sorted(spans):
        if out and begin < out[-1][1]:
            begin = out[-1][1]  # an overlap: the part already grouped is not grouped twice
        end = min(end, size)
        end -= (end - begin) % 2
        if end - begin < 2:
            continue
        if out and begin == out[-1][1]:  # the range before is of whole values: this one goes on from it
            out[-1][1] = end
        else:
            out.append([begin, end])
    if len(out) > MAX_RANGES:  # only a lying header gets here: the longest are grouped, the rest not
        out = sorted(sorted(out, key=lambda r: r[0] - r[1])[:MAX_RANGES])
    return tuple((b, e) for b, e in out)


def parts(ranges: Ranges, start: int, length: int) -> Iterator[tuple[int, int]]:
    """The grouped parts of the block [start, start + length) of a file: [a, b) offsets in the block, each of
    whole values of its range (a value cut by the block's edge is left out)."""
    stop = start + length
    i = max(0, bisect_right(ranges, (start, stop)) - 1)
    for begin, end in ranges[i:]:
        if begin >= stop:
            break
        a, b = max(begin, start), min(end, stop)
        a += (a - begin) % 2
        b -= (b - begin) % 2
        if b - a >= 2:
            yield a - start, b - start


def group(src: bytes | bytearray, dst: bytearray, ranges: Ranges, start: int, length: int) -> None:
    """Write into `dst` the block of `length` bytes `src` holds (the file's bytes from `start`), grouped."""
    grouping = list(parts(ranges, start, length))
    _copy_between(src, dst, grouping, length)
    source, out = _bytes(src), _bytes(dst)
    for a, b in grouping:
        half = (b - a) // 2
        values = source[a:b].view(LITTLE_16)
        numpy.right_shift(values, 8, out=out[a : a + half], casting="unsafe")  # the high bytes
        numpy.bitwise_and(values, 0xFF, out=out[a + half : b], casting="unsafe")  # the low bytes


_scratch = threading.local()  # each thread's buffer for `grouped`


def grouped(ranges: Ranges, start: int, block: memoryview) -> memoryview:
    """The file's block `block` (its bytes from `start`, a view from the start of a bytearray), grouped into
    a buffer of this thread's own: use it before this thread's next call."""
    out: bytearray | None = getattr(_scratch, "buffer", None)
    if out is None:
        out = _scratch.buffer = bytearray(BLOCK)
    group(cast(bytearray, block.obj), out, ranges, start, len(block))
    return memoryview(out)[: len(block)]


def restore(
    src: bytearray | mmap.mmap, dst: bytearray | mmap.mmap, ranges: Ranges, start: int, length: int
) -> None:
    """The inverse of `group`: write into `dst` the file's bytes of the grouped block `src` holds."""
    grouping = list(parts(ranges, start, length))
    _copy_between(src, dst, grouping, length)
    source, out = _bytes(src), _bytes(dst)
    for a, b in grouping:
        half = (b - a) // 2
        values = out[a:b].view(LITTLE_16)
        numpy.left_shift(source[a : a + half], 8, out=values, dtype=LITTLE_16)  # the high bytes back
        numpy.bitwise_or(values, source[a + half : b], out=values)  # and the low ones


def _copy_between(
    src: bytes | bytearray | mmap.mmap,
    dst: bytearray | mmap.mmap,
    grouping: list[tuple[int, int]],
    length: int,
) -> None:
    """Copy the bytes of the block outside its grouped parts as they are (the shuffles write every byte of
    the parts: copying the whole block first would write most of it twice)."""
    view, done = memoryview(src), 0
    for a, b in (*grouping, (length, length)):
        dst[done:a] = view[done:a]
        done = b


def _bytes(buffer: bytes | bytearray | mmap.mmap) -> numpy.ndarray[Any, numpy.dtype[numpy.uint8]]:
    """`buffer` as an array of bytes, without a copy (writable when the buffer is)."""
    return numpy.frombuffer(buffer, dtype=numpy.uint8)


class Restored(NamedTuple):
    """A piece of a restored member: `own` when it is in `restored`'s own buffers (it stays as it is while
    the next piece is made), else a view of the caller's input (use it before taking the next)."""

    data: memoryview
    own: bool


def restored(views: Iterable[memoryview], codec: Codec) -> Iterator[Restored]:
    """A grouped member's bytes (`views`, in order, from the file's first byte) restored, in pieces. A block
    with nothing grouped passes through as it comes; the others are restored into two BLOCK buffers used
    in turn, so a restored block stays whole while the next one is made (and no longer). They start on a
    page (anonymous mmaps), at file offsets that are multiples of BLOCK, so they take the direct path to
    disk (fsutil.BulkWriter)."""
    ranges = codec.ranges
    held = mmap.mmap(-1, BLOCK)  # the block being gathered
    outs = (mmap.mmap(-1, BLOCK), mmap.mmap(-1, BLOCK))
    made = 0  # blocks restored: the next goes into outs[made % 2]
    pos = filled = 0  # file offset of the block being gathered, and bytes gathered
    for view in views:
        while view:
            start = pos + filled
            block = start - start % BLOCK
            take = min(len(view), block + BLOCK - start)
            if not filled and next(parts(ranges, block, BLOCK), None) is None:
                yield Restored(view[:take], False)  # nothing grouped here (parts look at its own bytes only)
                pos = start + take
            else:
                pos = block
                held[filled : filled + take] = view[:take]
                filled += take
                if filled == BLOCK:
                    out = outs[made % 2]
                    restore(held, out, ranges, block, BLOCK)
                    made += 1
                    yield Restored(memoryview(out), True)
                    pos, filled = block + BLOCK, 0
            view = view[take:]
    if filled:  # the file's last block (or where the member was cut off: its sha256 then fails)
        out = outs[made % 2]
        restore(held, out, ranges, pos, filled)
        yield Restored(memoryview(out)[:filled], True)


__all__ = [
    "BLOCK",
    "CODECS",
    "GROUPED_LEVEL",
    "NAME",
    "SIXTEEN_BIT",
    "SUFFIX",
    "Codec",
    "Restored",
    "group",
    "grouped",
    "merged",
    "parts",
    "ranges_problem",
    "restore",
    "restored",
]
