"""Downloads shared by every source: stream to a temp file in the store, hash while streaming, check the
hub's own hash, retry what is worth retrying, and move the file into place only when it is verified.

A large file is fetched over several ranged connections at once (CDNs and long links cap each
connection), each segment written at its offset and resumable on its own; the file is hashed in order as
its contiguous prefix grows, so hashing overlaps the transfer. A server that ignores Range gets one stream.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mirror.bounded import RECORD, read_json_bounded
from mirror.clock import Clock
from mirror.errors import IntegrityError, MirrorError, RetryableError
from mirror.hashing import CHUNK, Hasher
from mirror.http import FileRequest, get_range
from mirror.retry import RetryPolicy, with_retries
from mirror.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Expected:
    """What the hub says a file is: its size and its sha256 or git blob sha1 (at least one).

    `want_git_sha1` asks for the content's git blob id to be computed while streaming even when the hub
    gave a sha256 (ModelScope), because the HF cache names small files by it.
    """

    label: str
    size: int
    sha256: str | None
    git_sha1: str | None
    source: str = ""
    want_git_sha1: bool = False

    @property
    def key(self) -> str:
        """A stable name for the download in progress, so a later run finds its partial bytes. Per source:
        the same content listed by two hubs is fetched and checked from each."""
        return f"{self.source}-{self.sha256 or self.git_sha1}.part"

    def hasher(self) -> Hasher:
        return Hasher(git_size=self.size if self.git_sha1 or self.want_git_sha1 else None)


@dataclass(frozen=True)
class Fetched:
    sha256: str
    git_sha1: str | None


PIECE_SIZE = 16 << 20  # a large file is fetched in pieces of this size, handed out in file order...
SEGMENTS = 8  # ...to at most this many connections at once
SAVE_EVERY = 1.0  # seconds between records of the pieces' progress, for a later run


WRITEBACK_EVERY = 32 << 20


class Writeback:
    """Start writing a download's bytes to disk as they come, so the fsync before a blob is renamed into
    the store has little left to wait for; the pages also leave the page cache instead of crowding it."""

    def __init__(self, fd: int, start: int) -> None:
        self._fd = fd
        self._done = start

    def due(self, position: int) -> bool:
        return position - self._done >= WRITEBACK_EVERY

    def start(self, position: int) -> None:
        # POSIX_FADV_DONTNEED starts the writeback of dirty pages without waiting for it (Linux).
        with contextlib.suppress(OSError, AttributeError):
            os.posix_fadvise(self._fd, self._done, position - self._done, os.POSIX_FADV_DONTNEED)
        self._done = position


class RangeIgnored(Exception):
    """The server answered a ranged request with the whole file: segments are of no use there."""


def download(
    store: Store,
    request: FileRequest,
    expected: Expected,
    *,
    policy: RetryPolicy,
    progress: Callable[[int], None] | None = None,
    segments: int = SEGMENTS,
    budget: threading.Semaphore | None = None,
) -> Fetched:
    """Fetch a file into the store and return its hashes; a mismatch is never stored.

    `budget` bounds the ranged connections of all the large files fetched at once (one shared by a sync):
    a lone large file gets them all, several share them, so the machine is not drowned in connections.
    """
    count = min(segments, expected.size // PIECE_SIZE)
    if count > 1:
        try:
            return with_retries(
                lambda: _download_segmented(
                    store, request, expected, count, policy, progress, budget or threading.Semaphore(count)
                ),
                policy,
                expected.label,
            )
        except RangeIgnored:
            log.info("%s: the server ignores Range; fetching it over one connection", expected.label)
            _segment_files(store, expected)[0].unlink(missing_ok=True)
            _segment_files(store, expected)[1].unlink(missing_ok=True)
    return with_retries(
        lambda: _download_once(store, request, expected, progress, policy), policy, expected.label
    )


def _download_once(
    store: Store,
    request: FileRequest,
    expected: Expected,
    progress: Callable[[int], None] | None,
    policy: RetryPolicy,
) -> Fetched:
    temp = store.temp_path(expected.key)
    hasher = expected.hasher()
    have = _resume_point(temp, expected.size, hasher)
    with get_range(request, expected.label, have) as answer:
        if answer.start != have:  # the server ignored Range: start over from the first byte
            hasher = expected.hasher()
            have = 0
        with open(temp, "ab" if have else "wb", buffering=CHUNK) as out:
            writeback = Writeback(out.fileno(), have)
            for chunk in answer.chunks():
                policy.check()  # a stop keeps the bytes so far: the next run resumes them
                if hasher.size + len(chunk) > expected.size:
                    raise IntegrityError(f"{expected.label}: the hub sent more than {expected.size} bytes")
                out.write(chunk)
                hasher.update(chunk)
                if progress is not None:
                    progress(len(chunk))
                if writeback.due(hasher.size):
                    out.flush()
                    writeback.start(hasher.size)
    if hasher.size < expected.size:
        raise RetryableError(f"{expected.label}: body cut off at {hasher.size} of {expected.size} bytes")
    try:
        _check_hash(hasher, expected)
    except IntegrityError:
        temp.unlink(missing_ok=True)
        raise
    store.add_blob(temp, hasher.sha256)
    return Fetched(hasher.sha256, hasher.git_sha1)


def _resume_point(path: Path, size: int, hasher: Hasher) -> int:
    """Feed the partial bytes an earlier attempt left into the hasher; return how many there are."""
    try:
        have = path.stat().st_size
    except FileNotFoundError:
        return 0
    if have == 0 or have >= size:
        path.unlink()
        return 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return have


def _check_hash(hasher: Hasher, expected: Expected) -> None:
    if expected.sha256 is not None and hasher.sha256 != expected.sha256:
        raise IntegrityError(
            f"{expected.label}: sha256 mismatch (hub says {expected.sha256}, got {hasher.sha256}); not stored"
        )
    if expected.sha256 is None and hasher.git_sha1 != expected.git_sha1:
        raise IntegrityError(
            f"{expected.label}: git blob sha1 mismatch (hub says {expected.git_sha1}, got {hasher.git_sha1}); "
            "not stored"
        )


def _segment_files(store: Store, expected: Expected) -> tuple[Path, Path]:
    """The sparse data file and the progress record of a segmented download in progress."""
    data = store.temp_path(expected.key.removesuffix(".part") + ".seg")
    return data, data.with_name(data.name + ".json")


def _pieces(size: int) -> list[tuple[int, int]]:
    return [(start, min(start + PIECE_SIZE, size)) for start in range(0, size, PIECE_SIZE)]


class _Segments:
    """Progress of a segmented download, shared by the connection threads and the hashing thread.

    The file is cut in fixed pieces; each connection takes the next piece not yet done, in file order, so
    the contiguous prefix (what can be hashed) grows as fast as the pieces arrive.
    """

    def __init__(self, data: Path, state: Path, size: int, clock: Clock) -> None:
        self.data, self.state, self.size, self.clock = data, state, size, clock
        self.bounds = _pieces(size)
        self.done = [0] * len(self.bounds)
        self.cond = threading.Condition()
        self._saving = threading.Lock()
        self._saved_at = 0.0
        self.failed: BaseException | None = None
        self.finished = 0
        self._next = 0
        try:
            saved = read_json_bounded(state, RECORD, MirrorError)
            same_plan = saved["size"] == size and [tuple(b) for b in saved["bounds"]] == self.bounds
            if same_plan and data.stat().st_size == size:
                pairs = zip(saved["done"], self.bounds, strict=True)
                self.done = [min(int(d), end - start) for d, (start, end) in pairs]
        except (MirrorError, OSError, ValueError, KeyError, TypeError):
            pass
        if not any(self.done):
            with open(data, "wb") as f:
                f.truncate(size)

    def take(self) -> int | None:
        """The next piece that still misses bytes, or None when every piece is taken."""
        with self.cond:
            while self._next < len(self.bounds):
                index = self._next
                self._next += 1
                start, end = self.bounds[index]
                if start + self.done[index] < end:
                    return index
            return None

    def frontier(self) -> int:
        """How many bytes from the start are all present."""
        for (start, end), done in zip(self.bounds, self.done, strict=True):
            if start + done < end:
                return start + done
        return self.size

    def save(self, *, force: bool = False) -> None:
        """Record the progress for a later run, at most once a second unless forced."""
        with self._saving:  # connection threads save in turn: one temp name, one record
            now = self.clock.monotonic()
            if not force and now - self._saved_at < SAVE_EVERY:
                return
            self._saved_at = now
            with self.cond:
                record = {"size": self.size, "bounds": self.bounds, "done": list(self.done)}
            tmp = self.state.with_name(self.state.name + ".tmp")
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.state)


def _download_segmented(
    store: Store,
    request: FileRequest,
    expected: Expected,
    count: int,
    policy: RetryPolicy,
    progress: Callable[[int], None] | None,
    budget: threading.Semaphore,
) -> Fetched:
    data, state = _segment_files(store, expected)
    segs = _Segments(data, state, expected.size, policy.clock)
    fd = os.open(data, os.O_RDWR)
    try:
        with ThreadPoolExecutor(max_workers=count, thread_name_prefix="mirror-fetch-segment") as pool:
            for _ in range(count):
                pool.submit(_run_connection, segs, fd, request, expected, policy, progress, budget)
            hasher = _hash_in_order(segs, fd, expected, count)
    finally:
        os.close(fd)
        if segs.failed is None:
            state.unlink(missing_ok=True)
    try:
        _check_hash(hasher, expected)
    except IntegrityError:
        data.unlink(missing_ok=True)
        state.unlink(missing_ok=True)
        raise
    store.add_blob(data, hasher.sha256)
    return Fetched(hasher.sha256, hasher.git_sha1)


def _hash_in_order(segs: _Segments, fd: int, expected: Expected, connections: int) -> Hasher:
    """Hash the file front to back as its contiguous prefix grows (the bytes are still in the page cache)."""
    hasher = expected.hasher()
    writeback = Writeback(fd, 0)
    while hasher.size < segs.size:
        with segs.cond:
            while segs.frontier() <= hasher.size and segs.failed is None and segs.finished < connections:
                segs.cond.wait()
            if segs.failed is not None:
                raise segs.failed
            frontier = segs.frontier()
            if frontier <= hasher.size:
                raise RetryableError(f"{expected.label}: the connections ended before the file was complete")
        while hasher.size < frontier:
            hasher.update(os.pread(fd, min(CHUNK, frontier - hasher.size), hasher.size))
            if writeback.due(hasher.size):
                writeback.start(hasher.size)  # hashed: the pages can go to disk and leave the cache
    return hasher


def _run_connection(
    segs: _Segments,
    fd: int,
    request: FileRequest,
    expected: Expected,
    policy: RetryPolicy,
    progress: Callable[[int], None] | None,
    budget: threading.Semaphore,
) -> None:
    """One connection: fetch pieces in file order until none is left (or another connection failed)."""
    try:
        while segs.failed is None:
            with budget:  # take a piece only once a connection is free: pieces stay in file order
                index = segs.take()
                if index is None:
                    break
                label = f"{expected.label} (piece {index + 1}/{len(segs.bounds)})"
                fetch = functools.partial(_fetch_piece, segs, index, fd, request, label, progress, policy)
                with_retries(fetch, policy, label)
    except BaseException as e:  # noqa: BLE001 - handed to the hashing thread, which raises it
        with segs.cond:
            segs.failed = segs.failed or e
            segs.cond.notify_all()
    finally:
        segs.save(force=True)
        with segs.cond:
            segs.finished += 1
            segs.cond.notify_all()


def _fetch_piece(
    segs: _Segments,
    index: int,
    fd: int,
    request: FileRequest,
    label: str,
    progress: Callable[[int], None] | None,
    policy: RetryPolicy,
) -> None:
    start, end = segs.bounds[index]
    pos = start + segs.done[index]
    if pos >= end:
        return
    with get_range(request, label, pos, end) as answer:
        if not answer.partial or answer.start != pos:
            raise RangeIgnored(label)
        for chunk in answer.chunks():
            if segs.failed is not None:
                return  # another connection failed for good: stop early, keep what we have
            policy.check()
            if pos + len(chunk) > end:
                raise RetryableError(f"{label}: the server sent more than the range asked")
            os.pwrite(fd, chunk, pos)
            pos += len(chunk)
            with segs.cond:
                segs.done[index] = pos - start
                segs.cond.notify_all()
            if progress is not None:
                progress(len(chunk))
            segs.save()
    if pos < end:
        raise RetryableError(f"{label}: cut off at byte {pos} of {end}")
