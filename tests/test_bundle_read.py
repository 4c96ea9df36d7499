"""The bundle reader's pipeline: decompression in a thread of its own, member data handed out as views of
large blocks, and the threads gone whenever the reader is left (hostile input is tests/test_hostile.py's)."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import pytest

from mirror.bundle import open_bundle, read_index, select_all, verify_bundle, write_bundle
from mirror.bundle.frames import FRAME
from mirror.clock import SYSTEM
from mirror.errors import IntegrityError
from mirror.store import Store
from tests.conftest import put_repo


def reader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("mirror-bundle")]


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """A bundle whose large file spans several decompressed blocks, between small files."""
    rng = random.Random(7)
    files = {
        "a.json": b"{}",
        "model.safetensors": rng.randbytes(3 * FRAME + 12_345),
        "z/small.bin": rng.randbytes(777),
        "z/copy.bin": rng.randbytes(777 * 2),
    }
    work = tmp_path_factory.mktemp("read")
    store = Store.at(work / "store", clock=SYSTEM)
    put_repo(store, "org/big", {"main": files})
    return write_bundle(store, select_all(store), work / "big.tar.zst").path, files


def test_members_arrive_whole_and_in_order(big: tuple[Path, dict[str, bytes]]) -> None:
    bundle, files = big
    got: dict[str, bytes] = {}
    with open_bundle(bundle) as reader:
        for file in reader.files():
            content = bytearray()
            file.read(content.extend)
            got[file.member.file.path] = bytes(content)
        assert reader.sha256 == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert got == files
    assert reader_threads() == []


def test_progress_counts_the_compressed_bytes(big: tuple[Path, dict[str, bytes]]) -> None:
    bundle, _ = big
    seen: list[int] = []
    verify_bundle(bundle, progress=seen.append)
    assert sum(seen) == bundle.stat().st_size and len(seen) > 1


def test_threads_stop_when_the_reader_is_left_early(big: tuple[Path, dict[str, bytes]]) -> None:
    bundle, _ = big
    assert read_index(bundle).repos[0].repo_id == "org/big"
    assert reader_threads() == []
    with pytest.raises(KeyError), open_bundle(bundle) as reader:
        for file in reader.files():
            file.read()
            raise KeyError("the caller fails mid-stream")
    assert reader_threads() == []


def test_index_is_read_from_a_bundle_damaged_further_on(tmp_path: Path) -> None:
    # Smaller than one full block: the fault must not take the index down with it.
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(store, "org/small", {"main": {"model.safetensors": random.Random(8).randbytes(200_000)}})
    bundle = write_bundle(store, select_all(store), tmp_path / "small.tar.zst").path
    data = bytearray(bundle.read_bytes())
    data[-2] ^= 0x10  # the zstd frame checksum, checked only once the whole frame is decompressed
    damaged = tmp_path / "damaged.tar.zst"
    damaged.write_bytes(bytes(data))
    assert read_index(damaged) == read_index(bundle)
    with pytest.raises(IntegrityError, match=r"damaged\.tar\.zst"):
        verify_bundle(damaged)
    assert reader_threads() == []


def test_a_damaged_frame_is_named_with_the_members_it_holds(
    big: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    """A byte flipped inside each zstd frame in turn: the refusal names the frame's offset in the file and
    every member whose bytes (header, data, padding) it holds, as the archive itself places them."""
    import io
    import tarfile

    import zstandard

    from mirror.bundle.frames import FrameWalker

    bundle, _ = big
    data = bundle.read_bytes()
    walker = FrameWalker()
    walker.feed(data)
    ends = [end for end, _ in walker.ends]
    starts = [0, *ends[:-1]]
    sizes = [
        zstandard.get_frame_parameters(data[s:e]).content_size for s, e in zip(starts, ends, strict=True)
    ]
    stream = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        spans = [(m.offset, m.offset_data + m.size + -m.size % 512, m.name) for m in tar.getmembers()]
    assert len(starts) >= 3
    at = 0
    for n, (start, end, size) in enumerate(zip(starts, ends, sizes, strict=True)):
        holds = [name for first, last, name in spans if first < at + size and last > at]
        damaged = bytearray(data)
        damaged[(start + end) // 2] ^= 0x01
        bad = tmp_path / f"bad{n}.tar.zst"
        bad.write_bytes(bytes(damaged))
        with pytest.raises(IntegrityError) as info:
            verify_bundle(bad)
        message = str(info.value)
        assert f"the zstd frame at byte {start} is damaged" in message, message
        assert f"stream bytes {at}-{at + size}" in message, message
        if n:  # the first frame holds the index: what it names cannot be trusted before it is read
            assert holds and all(repr(name) in message for name in holds[:5]), (holds, message)
        at += size
