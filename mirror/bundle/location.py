"""Where a bundle and the files beside it (`.sha256`, `.sig`, the other volumes) are: a local file (a Path)
or an object in a bucket (an `ObjectPath`, from an `s3://bucket/key` URL). The one place that tells the two
apart: a bundle is opened for one streamed read, written so that it appears whole or not at all, and its
small side files are read, written and removed here, whichever it is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from mirror import objects
from mirror.bounded import Bound, open_regular, read_bounded
from mirror.errors import IntegrityError, MirrorError
from mirror.fsutil import BulkWriter, atomic_write_bytes, temp_sibling
from mirror.objects import ObjectPath
from mirror.s3 import is_s3_url

BundlePath = Path | ObjectPath


def bundle_path(text: str | os.PathLike[str] | ObjectPath) -> BundlePath:
    """A bundle named by a string (the command line): an `s3://bucket/key` URL, else a local path."""
    if isinstance(text, ObjectPath):
        return text
    return ObjectPath.parse(str(text)) if is_s3_url(text) else Path(text)


class Reader(Protocol):
    def read(self, n: int = -1) -> bytes: ...


class Sink(Protocol):
    def write(self, data: bytes | memoryview) -> int: ...


@contextmanager
def reading(bundle: BundlePath) -> Iterator[Reader]:
    """The bundle opened for one forward read (a local one must be a regular file: never a FIFO or a
    device). MirrorError naming it when it cannot be opened."""
    if isinstance(bundle, ObjectPath):
        with objects.ObjectReader(bundle) as reader:
            yield reader
        return
    try:
        fd = open_regular(bundle, IntegrityError, "bundle")
    except OSError as e:
        raise MirrorError(f"cannot open bundle {bundle}: {e.strerror or e}") from None
    with open(fd, "rb", buffering=0) as f:
        yield f


def size(bundle: BundlePath) -> int:
    """The bundle's size in bytes (for progress: 0 when it cannot be told)."""
    if isinstance(bundle, ObjectPath):
        return objects.size(bundle) or 0
    try:
        return bundle.stat().st_size
    except OSError:
        return 0


def exists(path: BundlePath) -> bool:
    if isinstance(path, ObjectPath):
        return objects.size(path) is not None
    return path.exists()


def read_side(path: BundlePath, bound: Bound, error: type[MirrorError]) -> bytes | None:
    """A small file beside a bundle (at most `bound.size` bytes, else `error` naming it); None when absent."""
    if not isinstance(path, ObjectPath):
        return read_bounded(path, bound, error, missing_ok=True)
    data = objects.read_head(path, bound.size)
    if data is not None and len(data) > bound.size:
        raise error(f"{path}: the {bound.what} is larger than {bound.size} bytes; refusing it")
    return data


def write_side(path: BundlePath, data: bytes) -> None:
    """Write a small file beside a bundle at once, whole (replacing any before it)."""
    if isinstance(path, ObjectPath):
        objects.put(path, data)
    else:
        atomic_write_bytes(path, data)


def remove(path: BundlePath) -> None:
    """Remove a bundle or a side file; absent is fine."""
    if isinstance(path, ObjectPath):
        objects.delete(path)
    else:
        path.unlink(missing_ok=True)


def beside(path: BundlePath) -> Sequence[BundlePath]:
    """What sits beside `path` (in its folder, or under its key's prefix), sorted by name."""
    if isinstance(path, ObjectPath):
        return [path.with_name(name) for name in objects.names_beside(path)]
    return sorted(path.parent.iterdir())


@contextmanager
def creating(bundle: BundlePath, size_hint: int) -> Iterator[Sink]:
    """A sink for the bundle's bytes, in order, that become `bundle` only when the block ends without an
    exception: a local bundle is written under a temp name, synced and renamed into place; an object is
    streamed as a multipart upload, completed at the end. Otherwise nothing appears (the temp file is
    removed, the upload abandoned), and whatever was under the name before stays. `size_hint` bounds the
    bundle's size from above (an object's part size depends on it)."""
    if isinstance(bundle, ObjectPath):
        upload = objects.ObjectWriter(bundle, size_hint)
        try:
            yield upload
            upload.commit()
        except BaseException:
            upload.abort()
            raise
        return
    tmp = temp_sibling(bundle)
    try:
        bundle.parent.mkdir(parents=True, exist_ok=True)
        with BulkWriter(tmp) as out:
            yield out
            out.sync()
        os.replace(tmp, bundle)
    except OSError as e:
        raise MirrorError(f"writing the bundle {bundle} failed: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)


__all__ = [
    "BundlePath",
    "Reader",
    "Sink",
    "beside",
    "bundle_path",
    "creating",
    "exists",
    "read_side",
    "reading",
    "remove",
    "size",
    "write_side",
]
