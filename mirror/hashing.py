"""Streaming hashes: sha256 for every file, and the git blob sha1 the hubs use as oid for small files;
`HashCache` remembers the sha256 of files already hashed."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mirror.records import FieldsJson

CHUNK = 1 << 20


class HashLanes:
    """sha256 of several byte streams at once, off the caller's thread: each stream (`stream()`) is hashed in
    order on one thread, and consecutive streams on different threads (the lanes, taken in turn).

    One stream's sha256 is sequential; what spreads is the streams: when the caller goes on to the next file
    without waiting (export's blob reader), files are hashed on as many threads as there are lanes, none of
    which hashes them all (a file of its own still takes its whole hash on one thread: the floor); a caller
    that waits for each piece (the bundle reader) only moves the hashing off its own thread. A lane can also
    read what it hashes (`HashStream.fill`), so the reading spreads too (export's blob reader). The caller
    keeps each piece's memory until its update is done (`HashStream.update` gives a Future). Use as a context
    manager: leaving it stops the threads.
    """

    def __init__(self, lanes: int, name: str) -> None:
        self._lanes = [ThreadPoolExecutor(1, thread_name_prefix=f"{name}-{i}") for i in range(max(1, lanes))]
        self._turn = 0

    def stream(self) -> HashStream:
        """A new stream, on the next lane."""
        lane = self._lanes[self._turn % len(self._lanes)]
        self._turn += 1
        return HashStream(lane)

    def close(self) -> None:
        for lane in self._lanes:
            lane.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> HashLanes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HashStream:
    """One stream's sha256, updated in order on its lane's thread."""

    def __init__(self, lane: ThreadPoolExecutor) -> None:
        self._lane = lane
        self._sha256 = hashlib.sha256()

    def update(self, data: bytes | memoryview) -> Future[None]:
        """Hash `data` after the pieces given before; keep its memory until the Future is done."""
        return self._lane.submit(self._sha256.update, data)

    def fill(self, read: Callable[[], memoryview]) -> Future[memoryview]:
        """Run `read` on the lane, after the pieces given before, and hash the bytes it gives (the Future's
        result, once hashed): the reading spreads over the lanes with the hashing."""
        return self._lane.submit(self._fill, read)

    def then(self, step: Callable[[], object]) -> None:
        """Run `step` on the lane once the pieces given before are hashed (closing what `fill` read from)."""
        self._lane.submit(step)

    def hexdigest(self) -> Future[str]:
        """The sha256 of every piece given, once they are hashed."""
        return self._lane.submit(self._sha256.hexdigest)

    def _fill(self, read: Callable[[], memoryview]) -> memoryview:
        data = read()
        self._sha256.update(data)
        return data


@dataclass(frozen=True)
class FileSum(FieldsJson):
    """A file as its content is pinned: its path in the repo, its size and sha256 (a lock file's pinned
    files, a receipt's files)."""

    path: str
    size: int
    sha256: str


class Hasher:
    """Hashes a byte stream as it passes: sha256 always, git blob sha1 when the size is known up front."""

    def __init__(self, git_size: int | None = None) -> None:
        self._sha256 = hashlib.sha256()
        self._sha1 = None
        if git_size is not None:
            self._sha1 = hashlib.sha1(b"blob %d\0" % git_size, usedforsecurity=False)
        self.size = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self._sha256.update(chunk)
        if self._sha1 is not None:
            self._sha1.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def git_sha1(self) -> str | None:
        return self._sha1.hexdigest() if self._sha1 is not None else None


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, as `git hash-object` prints it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def hash_chunks(chunks: Iterable[bytes]) -> Hasher:
    hasher = Hasher()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher


def read_chunks(path: Path, size: int = CHUNK) -> Iterable[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in large chunks (memory stays flat)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def stream_sha256(stream: BinaryIO) -> str:
    """sha256 of what a binary stream holds from where it is, read in large chunks (memory stays flat)."""
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def range_sha256(path: Path, offset: int, size: int) -> str | None:
    """sha256 of `size` bytes of a file from `offset`; None if the file is shorter or cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            left = size
            while left:
                data = f.read(min(CHUNK, left))
                if not data:
                    return None
                digest.update(data)
                left -= len(data)
    except OSError:
        return None
    return digest.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The LFS pointer git stores in place of a large file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def lfs_pointer_oid(sha256: str, size: int) -> str:
    """The git blob id of the LFS pointer git stores for a large file (what hub trees list as its oid)."""
    return git_blob_sha1(lfs_pointer(sha256, size))


def file_git_sha1(path: Path) -> str:
    """The git blob id of a file's content, read in chunks."""
    with open(path, "rb") as f:
        return stream_git_sha1(f, os.fstat(f.fileno()).st_size)


def stream_git_sha1(stream: BinaryIO, size: int) -> str:
    """The git blob id of the `size` bytes a stream holds, read in chunks."""
    hasher = Hasher(git_size=size)
    while chunk := stream.read(CHUNK):
        hasher.update(chunk)
    assert hasher.git_sha1 is not None
    return hasher.git_sha1


class HashCache:
    """sha256 of files by inode, so content hashed once (staged, adopted, checked) is not read again.

    An entry holds while the inode keeps its size and modification time.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[int, int], tuple[int, int, str]] = {}

    def remember(self, path: Path, sha256: str) -> None:
        st = path.stat()
        self._known[st.st_dev, st.st_ino] = (st.st_size, st.st_mtime_ns, sha256)

    def sha256(self, path: Path) -> str:
        st = path.stat()
        known = self._known.get((st.st_dev, st.st_ino))
        if known is not None and known[:2] == (st.st_size, st.st_mtime_ns):
            return known[2]
        digest = file_sha256(path)
        self.remember(path, digest)
        return digest

    def holds(self, path: Path, size: int, sha256: str) -> bool:
        """Whether path is a file with this content (following symlinks)."""
        try:
            return path.is_file() and path.stat().st_size == size and self.sha256(path) == sha256
        except OSError:
            return False
