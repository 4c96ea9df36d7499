"""Where a store keeps its objects: the interface (`base`), a local folder (`local`), an S3-compatible
bucket (`s3`). `open_storage` picks one from what the user named (a folder, or `s3://bucket/prefix`)."""

from __future__ import annotations

from pathlib import Path

from mirror.clock import Clock
from mirror.s3 import parse_s3_url
from mirror.settings import store_name
from mirror.storage.base import Storage
from mirror.storage.local import LocalStorage


def open_storage(name: str | Path, *, clock: Clock) -> Storage:
    """The storage a store name designates (`mirror.settings.store_name` reads it): `s3://bucket/prefix` an
    S3Storage (UsageError for a bad URL), anything else a local folder."""
    named = store_name(name)
    if isinstance(named, str):
        from mirror.storage.s3 import S3Storage  # loaded only for a bucket: a local command never pays for it

        return S3Storage(parse_s3_url(named), clock=clock)
    return LocalStorage(named, clock=clock)
