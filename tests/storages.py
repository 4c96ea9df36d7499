"""The storages a store is tested over, for tests that must hold whatever keeps the objects.

- "local": `LocalStorage`, a folder (the fast paths: a blob sent or hashed by its path).
- "opaque": a folder that does not say it is one (`local_root` None), so every engine path that a bucket
  takes (blobs read as streams, served through `open_read`) runs without a server.
- "s3": `S3Storage` over a fresh bucket of the moto server (the `s3` fixture), staging in the test's folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.clock import Clock
from mirror.s3 import parse_s3_url
from mirror.storage.base import Storage
from mirror.storage.local import LocalStorage
from mirror.storage.s3 import S3Storage

STORAGES = ("local", "opaque", "s3")


class OpaqueStorage(LocalStorage):
    """A folder that hides that it is one: the engine must treat it as it treats a bucket."""

    @property
    def local_root(self) -> None:  # type: ignore[override]
        return None

    def __str__(self) -> str:
        return f"opaque:{self.root}"


def make_storage(kind: str, folder: Path, request: pytest.FixtureRequest, clock: Clock) -> Storage:
    """A new, empty storage of `kind` (see the module docstring); `folder` for the local ones."""
    if kind == "local":
        return LocalStorage(folder, clock=clock)
    if kind == "opaque":
        return OpaqueStorage(folder, clock=clock)
    if kind == "s3":
        where = parse_s3_url(request.getfixturevalue("s3").url(folder.name))
        return S3Storage(where, clock=clock, staging=folder.with_name(f"{folder.name}-staging"))
    raise ValueError(kind)
