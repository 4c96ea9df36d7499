"""A store's objects in a local folder: each key a file under the root (today's layout and speed).

Small objects are replaced by an atomic rename of a synced temporary file; blobs are staged under
`tmp/` of the same folder and renamed into place read-only. The lock is a flock on `lock`, which also
says who holds it. A conditional write compares the object's stamp (inode, modification time, size)
with the tag read: writers of one store are serialised by the lock, so the check guards against a
writer that skipped it, not against a race.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import stat
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

from mirror.bounded import Bound, read_bounded
from mirror.clock import Clock
from mirror.errors import IntegrityError, Interrupted, LockedError
from mirror.fsutil import atomic_write_bytes, flock_wait, remove_path
from mirror.storage.base import ABSENT, MISSING, ConflictError, Expect, Kind, ObjectStat, Versioned

STAGING = "tmp"  # under the root: downloads and imports in progress, never under a real key
# Under STAGING: a volume set's verified content waiting for its next volumes (mirror.layouts.kept), which
# the imports of the set sweep themselves; never taken for abandoned, however long the next disc takes.
KEPT = "kept"


class LocalStorage:
    """A folder; created on first write."""

    def __init__(self, root: Path, *, clock: Clock) -> None:
        self.root = Path(root)
        self.clock = clock
        self._root = os.fspath(self.root)

    def __str__(self) -> str:
        return self._root

    @property
    def local_root(self) -> Path:
        return self.root

    def path(self, key: str) -> Path:
        return Path(self._file(key))

    def _file(self, key: str) -> str:
        return f"{self._root}/{key}"  # a string: a server stats every file of a commit per request

    def problem(self) -> str | None:
        try:
            names = {p.name for p in self.root.iterdir()}
        except FileNotFoundError:
            return MISSING
        except NotADirectoryError:
            return "it is not a folder"
        except OSError as e:
            return f"it cannot be read ({e.strerror or e})"
        if names and not names & {"blobs", "repos"}:
            return "it holds neither blobs/ nor repos/: it is not a mirror store"
        return None

    # any object ---------------------------------------------------------------------------------------
    def stat(self, key: str) -> ObjectStat | None:
        try:
            st = os.lstat(self._file(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISREG(st.st_mode):  # first: a served commit looks at every file per request
            return ObjectStat(st.st_size)
        kind: Kind = "link" if stat.S_ISLNK(st.st_mode) else "folder" if stat.S_ISDIR(st.st_mode) else "other"
        return ObjectStat(st.st_size, kind)

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        fd = os.open(self._file(key), os.O_RDONLY | os.O_NOFOLLOW)
        f = os.fdopen(fd, "rb", buffering=0)
        if start:
            f.seek(start)
        if end is None:
            return f
        return cast(BinaryIO, _Limited(f, end - start))

    def keys(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix
        if base.is_dir():
            yield from _walk(os.fspath(base), prefix.rstrip("/"))

    def delete(self, key: str) -> None:
        with contextlib.suppress(NotADirectoryError):  # a file where a folder of the key should be: absent
            remove_path(self.path(key))

    # small objects ------------------------------------------------------------------------------------
    def read(self, key: str, limit: int) -> Versioned | None:
        path = self.path(key)
        data = read_bounded(path, Bound(key.rsplit("/", 1)[-1], limit), IntegrityError, missing_ok=True)
        if data is None:
            return None
        return Versioned(data, self._tag(path) or "")

    def write(self, key: str, data: bytes, *, expect: Expect = None) -> None:
        path = self.path(key)
        if expect is not None:
            current = self._tag(path)
            if (current is not None) if expect is ABSENT else (current != expect):
                raise ConflictError(f"{path} changed since it was read: another writer? (run again)")
        atomic_write_bytes(path, data)

    @staticmethod
    def _tag(path: Path) -> str | None:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"

    # blobs --------------------------------------------------------------------------------------------
    def staging(self) -> Path:
        folder = self.root / STAGING
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def put_file(self, path: Path, key: str) -> None:
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(path, 0o444)
        if dest.is_dir() and not dest.is_symlink():
            remove_path(dest)  # os.replace cannot put a file over a folder
        os.replace(path, dest)

    def presign(self, key: str, seconds: int, *, disposition: str | None = None) -> str | None:
        return None

    def clean_abandoned(self, older_than: float) -> list[str]:
        folder = self.root / STAGING
        if not folder.is_dir():
            return []
        return remove_older(folder, self.clock.time() - older_than, STAGING, keep={KEPT})

    # the writer's lock --------------------------------------------------------------------------------
    @contextmanager
    def lock(self, wait: float = 0.0, stop: threading.Event | None = None) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:

            def busy() -> LockedError:
                holder = path.read_text(errors="replace").strip() or "unknown holder"
                return LockedError(
                    f"another mirror run holds the store lock {path} ({holder}); "
                    "try again later or pass --wait SECONDS"
                )

            def stopped() -> Interrupted:
                return Interrupted(f"interrupted while waiting for the store lock {path}")

            flock_wait(fd, wait, busy, clock=self.clock, stop=stop, stopped=stopped)
            os.ftruncate(fd, 0)
            os.write(
                fd, f"pid {os.getpid()} on {socket.gethostname()} since {self.clock.now_iso()}\n".encode()
            )
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock


def _walk(folder: str, rel: str) -> Iterator[str]:
    """The files under `folder` (named `rel`), recursively, in the order of their names as strings (an
    object store's order: "a/b.txt" before "a/b/c"). A link is a file, unless it points at a folder: then
    it is skipped, never followed (as os.walk does)."""
    with os.scandir(folder) as it:
        entries = sorted((e.name + "/" if e.is_dir() else e.name, e) for e in it)
    for sort_name, entry in entries:
        name = f"{rel}/{entry.name}" if rel else entry.name
        if not sort_name.endswith("/"):
            yield name
        elif not entry.is_symlink():
            yield from _walk(entry.path, name)


def remove_older(folder: Path, before: float, label: str, keep: Collection[str] = ()) -> list[str]:
    """Remove what `folder` holds that was last modified before `before` (a POSIX time), but the names in
    `keep`; the names removed, as `label/name`."""
    removed = []
    for entry in sorted(folder.iterdir()):
        with contextlib.suppress(FileNotFoundError):
            if entry.name not in keep and entry.lstat().st_mtime < before:
                remove_path(entry)
                removed.append(f"{label}/{entry.name}")
    return removed


class _Limited(io.RawIOBase):
    """The first `left` bytes of a file, as a read-only stream."""

    def __init__(self, f: BinaryIO, left: int) -> None:
        super().__init__()
        self._f = f
        self._left = left

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")[: max(self._left, 0)]
        n = self._f.readinto(view) if view.nbytes else 0  # type: ignore[attr-defined]
        self._left -= n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()
