"""Where a store keeps its objects: the interface (`base`), a local folder (`local`), an S3-compatible
bucket (`s3`). `open_storage` picks one from what the user named (a folder, or `s3://bucket/prefix`)."""

from __future__ import annotations

from pathlib import Path

from mirror.clock import Clock
from mirror.errors import UsageError
from mirror.s3 import is_s3_url, parse_s3_url
from mirror.storage.base import Storage
from mirror.storage.local import LocalStorage


def open_storage(name: str | Path, *, clock: Clock) -> Storage:
    """The storage a store name designates: `s3://bucket/prefix` an S3Storage (UsageError for a bad URL),
    anything else a local folder."""
    if isinstance(name, str) and is_s3_url(name):
        from mirror.storage.s3 import S3Storage  # loaded only for a bucket: a local command never pays for it

        return S3Storage(parse_s3_url(name), clock=clock)
    if isinstance(name, str) and "://" in name:
        raise UsageError(f"{name!r}: a store is a folder or an s3://BUCKET/PREFIX URL")
    return LocalStorage(Path(name), clock=clock)
