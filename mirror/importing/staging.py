"""The staging of one import: the folders verified content waits in until it is published, and the
import's lock on its target.

Content waits in a staging folder (`.mirror/tmp/<id>`, on the target's file system, locked while the
import runs) until the whole bundle is verified; what a killed import left there is swept by the next one.
An import that publishes nothing leaves the target as it found it: staging and every folder it created
are removed, and the modification times of the folders it touched are put back.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from mirror.clock import Clock
from mirror.errors import LockedError
from mirror.fsutil import flock_wait, remove_empty


class Staging:
    """The staging folders of one import, and the trace it leaves until it publishes.

    Each folder is `<root>/<random id>`, locked (flock) while the import runs, so the next import can tell
    a killed import's leftovers (unlocked) from a running one's and sweep them. Every folder created on the
    way is recorded, with the modification time of the folders it was created in: when the import ends
    without publishing, staging and those folders go and the times are put back, so the target (and the
    folder around it) look exactly as before. Folders a publish left empty go too.
    """

    def __init__(self) -> None:
        self._created: list[Path] = []
        self._touched: dict[Path, tuple[int, int, frozenset[str]]] = {}
        self._folders: list[tuple[Path, int]] = []
        self._roots: list[Path] = []
        self.publishing = False  # set once publishing starts: the target may change from then on
        self.changed = True  # after publishing: whether anything in the target changed
        self._lock: int | None = None
        self.kept: list[Path] = []  # folders left in place (a volume set's kept staging, see kept.py)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def make_dirs(self, path: Path) -> None:
        """mkdir -p, recording what it creates and the state of the folder it creates it in."""
        missing = []
        probe = path
        while not probe.exists():
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
        if not missing:
            return
        if probe not in self._touched and probe.is_dir():
            st = probe.stat()
            self._touched[probe] = (st.st_atime_ns, st.st_mtime_ns, _names(probe))
        for folder in reversed(missing):
            folder.mkdir()
            self._created.append(folder)

    def lock(
        self, folder: Path, wait: float, busy: Callable[[], LockedError], clock: Clock | None = None
    ) -> None:
        """Hold folder (made if absent, and removed again on close like every folder staging made) locked
        until close, waiting up to `wait` seconds of `clock` for another holder (then `busy()` is raised)."""
        while True:
            with suppress(FileExistsError):  # another import made it meanwhile
                self.make_dirs(folder)
            try:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue  # another import removed the folder it had made: make it again
            try:
                flock_wait(fd, wait, busy, clock=clock)
                held = os.fstat(fd)
                with suppress(FileNotFoundError):
                    st = os.stat(folder)
                    if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino):
                        self._lock = fd
                        return
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # its holder removed the folder it had made meanwhile: lock the new one

    def folder(self, root: Path) -> Path:
        """A new, locked staging folder under root."""
        self.make_dirs(root)
        if root not in self._touched:
            st = root.stat()
            self._touched[root] = (st.st_atime_ns, st.st_mtime_ns, _names(root))
        self._roots.append(root)
        path = root / uuid.uuid4().hex
        path.mkdir()
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._folders.append((path, fd))
        return path

    def sweep(self, root: Path) -> None:
        """Remove what killed imports left in root (entries no running import holds locked)."""
        ours = {p for p, _ in self._folders}
        try:
            entries = list(root.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry in ours:
                continue
            if entry.is_dir() and not entry.is_symlink():
                try:
                    fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                except OSError:
                    continue  # gone, or replaced by a link meanwhile
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a running import's
                else:
                    shutil.rmtree(entry, ignore_errors=True)
                finally:
                    os.close(fd)
            else:
                entry.unlink(missing_ok=True)

    def close(self) -> None:
        for path, fd in self._folders:
            shutil.rmtree(path, ignore_errors=True)
            os.close(fd)
        self._folders.clear()
        created = [f for f in reversed(self._created) if not any(f == k or f in k.parents for k in self.kept)]
        if self.publishing:
            # Folders publishing left empty go, and staging roots a killed import left behind.
            remove_empty(*created, *self._roots)
        else:
            for folder in created:
                with suppress(OSError):
                    shutil.rmtree(folder) if _only_folders(folder) else folder.rmdir()
        if not (self.publishing and self.changed):
            # Put back the times of folders that hold again exactly what they held: no trace of staging.
            for folder, (atime, mtime, names) in self._touched.items():
                with suppress(OSError):
                    if _names(folder) == names:
                        os.utime(folder, ns=(atime, mtime))
        self._created.clear()
        self._touched.clear()
        self._roots.clear()
        if self._lock is not None:
            os.close(self._lock)  # last: the next import finds the target as this one leaves it
            self._lock = None


def _names(folder: Path) -> frozenset[str]:
    try:
        return frozenset(os.listdir(folder))
    except OSError:
        return frozenset()


def _only_folders(folder: Path) -> bool:
    """Whether folder holds nothing but (empty) folders: what staging created, and nothing else."""
    return all(not names for _, _, names in os.walk(folder))
