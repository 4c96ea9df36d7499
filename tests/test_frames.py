"""zstd frames (mirror/bundle/frames.py, framereader.py) and the direct writes of bulk data (fsutil.BulkWriter): the bytes come out
as they went in, in order, whatever the frames look like, whoever made them."""

from __future__ import annotations

import errno
import fcntl
import io
import mmap
import os
import random
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

import mirror.bundle.framereader as framereader_module
import mirror.bundle.frames as frames_module
from mirror import fsutil
from mirror.bundle.framereader import FrameReader
from mirror.bundle.frames import FrameError, FrameWalker, FrameWriter
from mirror.errors import IntegrityError
from mirror.fsutil import BulkWriter


def read_all(data: bytes, workers: int = 2) -> bytes:
    """Everything FrameReader gives for `data`, giving each block's buffer back once it is copied."""
    walker = FrameWalker()
    source = io.BytesIO(data)

    def read(n: int) -> bytes:
        piece = source.read(n)
        walker.feed(piece)
        return piece

    reader = FrameReader(read, walker, workers, threading.Event())
    out = bytearray()
    try:
        for block in reader.blocks():
            out += block.data
            if block.buffer is not None:
                reader.recycle(block.buffer)
    finally:
        reader.close()
    assert walker.complete
    return bytes(out)


def written(pieces: list[tuple[str, bytes]], workers: int) -> bytes:
    """A stream made by FrameWriter: ("gather", bytes) pieces through write, ("frame", bytes) through frame."""
    out = bytearray()
    with FrameWriter(out.extend, 3, workers) as writer:
        for how, piece in pieces:
            if how == "frame":
                writer.frame(memoryview(piece), 1)
            else:
                writer.write(piece)
        writer.close()
    return bytes(out)


@pytest.fixture
def small_frames(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(frames_module, "FRAME", 4096)
    return 4096


def random_pieces(seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    pieces: list[tuple[str, bytes]] = []
    for _ in range(120):
        size = rng.choice([0, 1, 77, 512, 4000, 4096])
        data = rng.randbytes(size) if rng.random() < 0.5 else bytes([rng.randrange(4)]) * size
        pieces.append(("frame" if size and rng.random() < 0.4 else "gather", data))
    return pieces


@pytest.mark.parametrize("seed", range(3))
def test_frames_come_back_in_order_and_do_not_depend_on_the_workers(small_frames: int, seed: int) -> None:
    pieces = random_pieces(seed)
    one, three = written(pieces, 1), written(pieces, 3)
    assert one == three  # reproducible: the frames depend on the data and the calls, not on the threads
    walker = FrameWalker()
    walker.feed(one)
    assert walker.frames > 10
    expected = b"".join(p for _, p in pieces)
    assert zstandard.ZstdDecompressor().stream_reader(one, read_across_frames=True).read() == expected
    assert read_all(one, workers=2) == read_all(one, workers=1) == expected


def test_a_frame_holds_at_most_a_frame(small_frames: int) -> None:
    with pytest.raises(ValueError, match="at most"), FrameWriter(bytearray().extend, 3, 1) as writer:
        writer.frame(memoryview(bytes(small_frames + 1)), 1)


def test_long_frames_and_frames_of_unknown_size_are_streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    # What another tool (or mirror before frames) makes: one long frame; a frame that does not give its
    # size; a skippable frame between them. The long one is read in parts, never held whole.
    monkeypatch.setattr(framereader_module, "MAX_WHOLE", 64 << 10)
    rng = random.Random(5)
    long_data, unsized_data = rng.randbytes(1 << 20), b"text " * 50_000
    long_frame = zstandard.ZstdCompressor(level=1, threads=2).compress(long_data)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(write_content_size=False).stream_writer(out, closefd=False) as w:
        w.write(unsized_data)
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"hello"
    stream = long_frame + skippable + out.getvalue()
    assert zstandard.get_frame_parameters(out.getvalue()).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert read_all(stream) == long_data + unsized_data


def test_a_damaged_frame_gives_the_bytes_before_it_then_the_fault(small_frames: int) -> None:
    pieces = [("gather", bytes([i % 7]) * 1000) for i in range(40)]
    stream = bytearray(written(pieces, 2))
    walker = FrameWalker()
    walker.feed(bytes(stream))
    ends = [end for end, _ in walker.ends]
    stream[ends[4] - 2] ^= 0x10  # the checksum of the fifth frame
    got = bytearray()
    w = FrameWalker()
    source = io.BytesIO(bytes(stream))

    def read(n: int) -> bytes:
        piece = source.read(n)
        w.feed(piece)
        return piece

    reader = FrameReader(read, w, 2, threading.Event())
    with pytest.raises(FrameError) as info:
        for block in reader.blocks():
            got += block.data
    reader.close()
    expected = b"".join(p for _, p in pieces)
    assert len(got) >= 4 * small_frames and expected.startswith(bytes(got[: 4 * small_frames]))
    # The fault says which frame: where it starts in the file, and where and how much of the stream it holds.
    assert (info.value.offset, info.value.stream_offset) == (ends[3], 4 * small_frames)
    assert info.value.stream_size == small_frames


def test_a_stream_cut_inside_a_frame_ends_there(small_frames: int) -> None:
    pieces = [("gather", bytes([i % 7]) * 1000) for i in range(20)]
    stream = written(pieces, 2)
    walker = FrameWalker()
    source = io.BytesIO(stream[: len(stream) - 100])

    def read(n: int) -> bytes:
        piece = source.read(n)
        walker.feed(piece)
        return piece

    reader = FrameReader(read, walker, 2, threading.Event())
    got = b"".join(bytes(b.data) for b in reader.blocks())
    reader.close()
    assert not walker.complete
    assert b"".join(p for _, p in pieces).startswith(got)


def test_bad_magic_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError, match="not a zstd stream"):
        read_all(b"PK\x03\x04 this is a zip file, not a bundle")


# -- BulkWriter -----------------------------------------------------------------------------------------


def page_aligned(data: bytes) -> memoryview:
    buffer = mmap.mmap(-1, len(data))
    buffer.write(data)
    return memoryview(buffer)


def spy_on_direct(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """(size, whether the fd had O_DIRECT) of every pwrite, read from the kernel's own account of the fd."""
    seen: list[tuple[int, bool]] = []
    real = os.pwrite

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        flags = int(Path(f"/proc/self/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)
        seen.append((len(data), bool(flags & os.O_DIRECT)))
        return real(fd, data, offset)

    monkeypatch.setattr(fsutil.os, "pwrite", pwrite)
    return seen


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="O_DIRECT and /proc are Linux's")
def test_large_aligned_pieces_bypass_the_cache_the_rest_goes_through_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = spy_on_direct(monkeypatch)
    rng = random.Random(1)
    big, tail, odd = rng.randbytes(2 << 20), rng.randbytes(1000), rng.randbytes(3 << 20)
    path = tmp_path / "f.bin"
    with BulkWriter(path) as out:
        out.write(page_aligned(big))  # aligned in memory, in length, at offset 0: direct
        out.write(tail)  # short: through the cache
        out.write(page_aligned(odd))  # at an unaligned offset now: through the cache
    assert path.read_bytes() == big + tail + odd
    direct_taken = any(d for _, d in seen)
    if not direct_taken:  # the file system refused O_DIRECT (tmpfs on an older kernel): all went through
        pytest.skip(f"{tmp_path} takes no O_DIRECT")
    assert seen == [(len(big), True), (len(tail), False), (len(odd), False)]


def test_unaligned_memory_goes_through_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = spy_on_direct(monkeypatch) if sys.platform.startswith("linux") else []
    data = random.Random(2).randbytes((2 << 20) + 1)
    path = tmp_path / "f.bin"
    with BulkWriter(path) as out:
        out.write(page_aligned(data)[1:])  # a whole number of blocks, but one byte into a page
        out.write(data[: 4096 * 256])  # bytes: read-only, its address is not looked at
    assert path.read_bytes() == data[1:] + data[: 4096 * 256]
    assert not any(direct for _, direct in seen)


def test_a_file_system_without_o_direct_gets_every_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real: Callable[..., int] = fcntl.fcntl
    refused = []

    def no_direct(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL and arg & getattr(os, "O_DIRECT", 0):
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, cmd, arg)

    monkeypatch.setattr(fsutil.fcntl, "fcntl", no_direct)
    data = random.Random(3).randbytes(4 << 20)
    path = tmp_path / "f.bin"
    with BulkWriter(path) as out:
        out.write(page_aligned(data[: 2 << 20]))
        out.write(page_aligned(data[2 << 20 :]))
    assert path.read_bytes() == data
    assert len(refused) == (1 if getattr(os, "O_DIRECT", 0) else 0)  # asked once, then never again


def test_writing_at_an_offset_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "chunks"
    path.write_bytes(b"a" * 8192 + b"c" * 100)
    with BulkWriter(path, 4096, truncate=False) as out:
        out.write(b"b" * 4096)
    assert path.read_bytes() == b"a" * 4096 + b"b" * 4096 + b"c" * 100
    with BulkWriter(path) as out:
        out.write(b"new")
    assert path.read_bytes() == b"new"
