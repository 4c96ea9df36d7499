"""Small file-system helpers: atomic writes (temp beside, fsync, rename), unique temp names, hardlinks or
copies, an atomic exchange of two names, listing folders without following links, and small JSON records."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from mirror.bounded import RECORD, read_json_bounded
from mirror.clock import Clock
from mirror.errors import LockedError, MirrorError

LOCK_POLL = 0.2  # seconds between two tries of a lock another process holds


def flock_wait(
    fd: int,
    wait: float,
    busy: Callable[[], LockedError],
    *,
    clock: Clock | None,
    stop: threading.Event | None = None,
    stopped: Callable[[], MirrorError] | None = None,
) -> None:
    """Take an exclusive flock on fd, waiting up to `wait` seconds of `clock` for its holder; then raise
    `busy()`. Once `stop` is set while waiting, raise `stopped()` at once. Only a wait needs a clock: with
    `clock=None`, `wait` must be 0 (one try)."""
    if clock is None and wait > 0:
        raise ValueError("flock_wait: waiting for a lock needs a clock")
    deadline = clock.monotonic() + wait if clock is not None else None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if clock is None or deadline is None or clock.monotonic() >= deadline:
                raise busy() from None
            if clock.sleep(LOCK_POLL, stop) and stopped is not None:
                raise stopped() from None


def remove_path(path: Path) -> None:
    """Remove a file, a link (never what it points at) or a whole folder, whichever path is; absent is fine."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)  # rmtree never follows links inside the folder


def temp_sibling(path: Path) -> Path:
    """A unique hidden name beside `path`, on the same file system so a rename is atomic."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def json_bytes(data: Any) -> bytes:
    """How mirror writes its JSON records: sorted keys, one space of indent, a final newline."""
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json_bytes(data))


def read_json_record(path: Path) -> dict[str, Any]:
    """A small JSON object mirror keeps beside what it wrote; empty when absent or unreadable."""
    try:
        data = read_json_bounded(path, RECORD, MirrorError)
    except MirrorError:
        return {}
    return data if isinstance(data, dict) else {}


def is_file_of_size(path: Path, size: int) -> bool:
    """Whether path is (or links to) a file of this size."""
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


def entries(folder: Path) -> list[Path]:
    """The entries of a folder, sorted; none if it is absent or unreadable."""
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def regular_files(folder: Path, *, recursive: bool = True) -> Iterator[Path]:
    """The regular files in folder (and its subfolders), sorted; symlinks are neither yielded nor followed."""
    for entry in entries(folder):
        if entry.is_symlink():
            continue
        if entry.is_dir():
            if recursive:
                yield from regular_files(entry)
        elif entry.is_file():
            yield entry


def remove_empty(*folders: Path) -> None:
    """Remove each folder if it is empty, in order (children first)."""
    for folder in folders:
        with suppress(OSError):
            folder.rmdir()


def link_or_copy(src: Path, dest: Path) -> bool:
    """dest as a hardlink of src, or a copy where the file system cannot link; whether it is a link."""
    try:
        os.link(src, dest)
        return True
    except OSError:
        shutil.copyfile(src, dest)
        return False


def link_if_private(src: Path, dest: Path, *, shared: bool) -> bool:
    """dest with src's content, for a published tree; whether it is a hardlink.

    A hardlink only while src is nothing but a staging name (its first use: no published file shares its
    inode yet), or with `shared` (--link-shared); else a copy. So, by default, a content staged once serves
    many repos (or --no-symlinks revisions) and each gets its own file, as the hub clients keep them:
    editing one in place never changes another, and deleting one frees its space.
    """
    if shared or os.stat(src).st_nlink == 1:
        return link_or_copy(src, dest)
    shutil.copyfile(src, dest)
    return False


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Swap two names atomically (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


# Large writes that bypass the page cache (O_DIRECT): the data goes from our buffer to the disk, with no copy
# into the cache (for a bulk import, that copy is as costly as decompressing) and without pushing what
# the machine has cached out for files nobody reads now. A piece qualifies when it is at least
# _DIRECT_LEAST bytes, a whole number of _ALIGN-byte blocks, at an offset of the file and an address in
# memory that are multiples of _ALIGN; every other piece, and any file system that refuses O_DIRECT, goes
# through the cache as usual.
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_ALIGN = 4096
_DIRECT_LEAST = 1 << 20


def _address(view: memoryview) -> int | None:
    """Where a writable buffer's bytes start in memory; None for one that is read-only."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError):
        return None


class BulkWriter:
    """Writes bytes in order into a file from `offset` (the file is created if need be, and emptied first
    with `truncate`), large aligned pieces directly to the disk (see above). Use as a context manager;
    `write` takes any buffer (a view of a page-aligned one, such as an mmap, for the direct path)."""

    def __init__(self, path: Path, offset: int = 0, *, truncate: bool = True) -> None:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        self._fd = os.open(path, flags, 0o666)  # the umask decides, as with open()
        self._pos = os.lseek(self._fd, offset, os.SEEK_SET)
        self._can_direct = bool(_O_DIRECT)
        self._direct = False

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        direct = (
            self._can_direct
            and len(view) >= _DIRECT_LEAST
            and not len(view) % _ALIGN
            and not self._pos % _ALIGN
            and (_address(view) or 1) % _ALIGN == 0
        )
        try:
            self._write(view, direct)
        except OSError as e:
            if not direct or e.errno != errno.EINVAL:
                raise
            self._can_direct = False  # the file system does not take O_DIRECT: through the cache from now on
            self._write(view, False)
        return len(view)

    def _write(self, view: memoryview, direct: bool) -> None:
        if direct != self._direct:
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | _O_DIRECT if direct else flags & ~_O_DIRECT)
            self._direct = direct
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], self._pos + done)
        self._pos += done

    def sync(self) -> None:
        """fsync: what went through the cache, and the file's size and times, reach the disk too."""
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> BulkWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
