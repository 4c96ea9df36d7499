"""The interface a store keeps its objects through, whatever holds them: a local folder (`LocalStorage`)
or an S3-compatible bucket (`S3Storage`). The store (`mirror.store`) is written against it alone.

An object is named by a key: a relative, `/`-separated name ("blobs/sha256/ab/<hex>",
"repos/huggingface/model/org--name/refs.json"). Keys are made by the store, never from user input.

- Blobs are large and written once: a verified local file is put under its final key atomically
  (`put_file`): a reader sees the whole object or none. They are read streaming, by range.
- Records, refs and markers are small: read whole (`read`) and written whole with a condition
  (`write(..., expect=...)`): the write happens only if the object is still what the writer read (its
  `tag`), or still absent (`ABSENT`), else `ConflictError`. Two writers never silently overwrite each other.
- One writer at a time holds the store's lock (`lock`): a flock on a local folder, a lease object with
  an expiry on a bucket (the holder renews it; a crashed holder's lease expires).
- Work in progress (a download being written at offsets, an import being staged) is local: `staging()`
  is a local folder for it, on the same file system as the storage when it is local, so `put_file` is a
  rename.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from mirror.errors import MirrorError


class ConflictError(MirrorError):
    """A conditional write found the object changed (or present) since the writer read it."""


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()  # `write(..., expect=ABSENT)`: only if the object does not exist
Expect = str | _Absent | None  # a tag from `read`, ABSENT, or None (no condition)

Kind = Literal["file", "link", "folder", "other"]

MISSING = "it does not exist"  # what `Storage.problem` says of a storage with no folder (or bucket) at all


@dataclass(frozen=True)
class ObjectStat:
    """What a look at an object finds (no content read). On a bucket every object is a "file"."""

    size: int
    kind: Kind = "file"


@dataclass(frozen=True)
class Versioned:
    """An object's content with the tag a conditional write names it by (an ETag, or a local stamp)."""

    data: bytes
    tag: str


class Storage(Protocol):
    """Where a store keeps its objects. Thread-safe: a sync reads and writes from several threads."""

    def __str__(self) -> str:
        """The location for messages: "/srv/mirror", "s3://bucket/prefix"."""
        ...

    @property
    def local_root(self) -> Path | None:
        """The folder, for a local storage (fast paths: a server sends a blob by path); None on a bucket."""
        ...

    def problem(self) -> str | None:
        """Why this is not a store to read (a phrase; `MISSING` when the folder or bucket does not exist),
        None when it is one: it holds `blobs/` or `repos/`, or nothing (a new store)."""
        ...

    # any object ---------------------------------------------------------------------------------------
    def stat(self, key: str) -> ObjectStat | None:
        """The object's size and kind; None when absent."""
        ...

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """A stream of the object's bytes [start, end) (to its end when `end` is None), read as consumed
        (memory flat in the object's size). FileNotFoundError when absent; never follows a local link."""
        ...

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under `prefix` (a folder: "repos/" or "blobs/sha256/"), recursively, sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object (a local folder with what it holds); absent is fine."""
        ...

    # small objects ------------------------------------------------------------------------------------
    def read(self, key: str, limit: int) -> Versioned | None:
        """The whole object and its tag; None when absent; an IntegrityError naming it when it is larger
        than `limit` bytes or not a regular file."""
        ...

    def write(self, key: str, data: bytes, *, expect: Expect = None) -> None:
        """Replace the object whole, atomically; with `expect`, only if it is still that tag (or still
        absent: ABSENT), else ConflictError."""
        ...

    # blobs --------------------------------------------------------------------------------------------
    def staging(self) -> Path:
        """A local folder for work in progress (created on demand); what is left there by a killed run
        is found again by the next one (callers choose stable names)."""
        ...

    def put_file(self, path: Path, key: str) -> None:
        """Publish a complete, verified local file (under `staging()`) as the object `key`, atomically;
        the local file is gone afterwards (moved, or uploaded then removed). An existing object under
        the key is replaced."""
        ...

    def presign(self, key: str, seconds: int, *, disposition: str | None = None) -> str | None:
        """A URL any HTTP client can GET the object from for `seconds`, without credentials; None for a
        local storage. `disposition`: the Content-Disposition the GET through it answers with (a name to
        save the object under)."""
        ...

    def clean_abandoned(self, older_than: float) -> list[str]:
        """Remove what killed runs left behind (temporary uploads, incomplete multipart uploads, staging
        files) older than `older_than` seconds; the names removed."""
        ...

    # the writer's lock --------------------------------------------------------------------------------
    def lock(self, wait: float = 0.0, stop: threading.Event | None = None) -> AbstractContextManager[None]:
        """Hold the store's writer lock: LockedError (exit 75) when another holds it after `wait`
        seconds; Interrupted as soon as `stop` is set while waiting."""
        ...
