"""Objects in a bucket used as files: `ObjectPath` (`s3://bucket/key`, named like a file), `ObjectReader`
(the object read forward, in ranged GETs fetched ahead in parallel) and `ObjectWriter` (bytes written in
order, streamed as a multipart upload that appears whole under its key on `commit`, or never). Memory stays
flat in the object's size: a few ranges, or a few parts, are held at a time.

Every failure of the service becomes a MirrorError naming the bucket and the endpoint (`mirror.s3`).
"""

from __future__ import annotations

import logging
import queue
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mirror.errors import MirrorError, UsageError
from mirror.s3 import ABSENT_CODES, SCHEME, S3Location, client, endpoint, error_code, parse_s3_url, translated

log = logging.getLogger(__name__)

# A write goes up in parts of PART bytes (more for an object that would need more than MAX_PARTS of them),
# IN_FLIGHT at a time; a read comes down in ranges of RANGE bytes, AHEAD of them fetched at once. Both are
# sized for throughput on a fast link while keeping memory flat: at most (IN_FLIGHT + 1) parts, or AHEAD + 1
# ranges, are held.
PART = 16 << 20
MAX_PARTS = 10_000  # the service's limit
IN_FLIGHT = 4
RANGE = 8 << 20
AHEAD = 4
_ATTEMPTS = 3  # a range whose body is cut off is asked again (the client retries the requests themselves)


@dataclass(frozen=True)
class ObjectPath:
    """An object's key in a bucket, named like a file: `name` and `with_name` act as a Path's."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str) -> ObjectPath:
        """`s3://bucket/dir/name` as an object; a UsageError saying why for anything else."""
        location = parse_s3_url(url)
        if not location.prefix or url.endswith("/"):
            raise UsageError(f"{url!r} names no object: give s3://BUCKET/KEY (a key such as models.tar.zst)")
        return cls(location.bucket, location.prefix)

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        return self.key.rpartition("/")[2]

    @property
    def folder(self) -> str:
        """The key's prefix up to its name ("" or ending in "/")."""
        return self.key[: len(self.key) - len(self.name)]

    def with_name(self, name: str) -> ObjectPath:
        return ObjectPath(self.bucket, self.folder + name)

    @property
    def location(self) -> S3Location:
        return S3Location(self.bucket, self.key)


@contextmanager
def _service(path: ObjectPath, doing: str) -> Iterator[None]:
    with translated(path.location, f"{doing} {path}"):
        yield


def _absent(e: BaseException) -> bool:
    return error_code(e) in ABSENT_CODES


def _no_object(path: ObjectPath) -> MirrorError:
    """What to say of an object that is not there: its bucket may be missing (a HEAD's bare 404 does not
    tell; a listing's answer does)."""
    with _service(path, "reading"):
        client().list_objects_v2(Bucket=path.bucket, Prefix=path.key, MaxKeys=1)
    return MirrorError(
        f"reading {path}: bucket {path.bucket!r} at {endpoint()}: there is no object {path.key!r}"
    )


def size(path: ObjectPath) -> int | None:
    """The object's size; None when there is none under the key."""
    with _service(path, "reading"):
        try:
            answer = client().head_object(Bucket=path.bucket, Key=path.key)
        except Exception as e:
            if _absent(e):
                return None
            raise
    return int(answer["ContentLength"])


def read_head(path: ObjectPath, limit: int) -> bytes | None:
    """The object's first `limit` + 1 bytes at most (so a caller can tell one longer than `limit`); None
    when there is none under the key."""
    with _service(path, "reading"):
        try:
            answer = client().get_object(Bucket=path.bucket, Key=path.key, Range=f"bytes=0-{limit}")
        except Exception as e:
            if _absent(e):
                return None
            if error_code(e) == "InvalidRange":  # an empty object has no byte 0
                return b""
            raise
        data: bytes = answer["Body"].read()
    return data


def put(path: ObjectPath, data: bytes) -> None:
    """Write a small object whole (it replaces the one under the key, at once)."""
    with _service(path, "writing"):
        client().put_object(Bucket=path.bucket, Key=path.key, Body=data)


def delete(path: ObjectPath) -> None:
    """Remove the object (none under the key is fine)."""
    with _service(path, "removing"):
        client().delete_object(Bucket=path.bucket, Key=path.key)


def names_beside(path: ObjectPath) -> list[str]:
    """The names of the objects beside `path` (under its folder, not deeper), sorted."""
    names = []
    with _service(path, "listing beside"):
        pages = (
            client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=path.bucket, Prefix=path.folder, Delimiter="/")
        )
        for page in pages:
            names += [o["Key"][len(path.folder) :] for o in page.get("Contents", [])]
    return sorted(names)


class ObjectReader:
    """The object read forward, as a file opened without buffering: `read(n)` gives up to n bytes, b"" at
    the end. Ranges of RANGE bytes are fetched AHEAD at a time on threads of their own, each pinned to the
    object's ETag: an object replaced while it is read fails the read instead of mixing two objects.
    Use as a context manager, or `close` it."""

    def __init__(self, path: ObjectPath) -> None:
        self.path = path
        with _service(path, "reading"):
            try:
                answer = client().head_object(Bucket=path.bucket, Key=path.key)
            except Exception as e:
                if _absent(e):
                    raise _no_object(path) from None
                raise
        self.size = int(answer["ContentLength"])
        self._etag = str(answer["ETag"])
        self._pool = ThreadPoolExecutor(AHEAD, thread_name_prefix="mirror-s3-read")
        self._ranges = iter(range(0, self.size, RANGE))
        self._ahead: deque[Future[bytes]] = deque()
        self._piece = memoryview(b"")
        for _ in range(AHEAD):
            self._fetch_next()

    def _fetch_next(self) -> None:
        start = next(self._ranges, None)
        if start is not None:
            self._ahead.append(self._pool.submit(self._fetch, start, min(start + RANGE, self.size)))

    def _fetch(self, start: int, end: int) -> bytes:
        from botocore.exceptions import BotoCoreError

        for attempt in range(_ATTEMPTS):
            answer = client().get_object(
                Bucket=self.path.bucket,
                Key=self.path.key,
                Range=f"bytes={start}-{end - 1}",
                IfMatch=self._etag,
            )
            try:
                data: bytes = answer["Body"].read()
            except BotoCoreError:  # the body was cut off: ask for the range again
                if attempt + 1 == _ATTEMPTS:
                    raise
                continue
            if len(data) == end - start:
                return data
        raise MirrorError(f"{self.path}: the service gave too few bytes of {start}-{end - 1}; read it again")

    def read(self, n: int = -1) -> bytes:
        if not self._piece:
            if not self._ahead:
                return b""
            future = self._ahead.popleft()
            with self._errors():
                self._piece = memoryview(future.result())
            self._fetch_next()
        if n < 0 or n >= len(self._piece):
            data, self._piece = self._piece, memoryview(b"")
        else:
            data, self._piece = self._piece[:n], self._piece[n:]
        return bytes(data)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            with _service(self.path, "reading"):
                try:
                    yield
                except Exception as e:
                    if error_code(e) == "PreconditionFailed":
                        raise MirrorError(
                            f"{self.path} was replaced while it was being read; read it again"
                        ) from None
                    raise
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._ahead.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def part_size(size_hint: int | None) -> int:
    """The part size for an object of about `size_hint` bytes at most: PART, or larger (in whole MiB) when
    PART would need more parts than the service allows."""
    least = -(-(size_hint or 0) // (MAX_PARTS - 1))
    return max(PART, -(-least // (1 << 20)) << 20)


class ObjectWriter:
    """Bytes written in order into an object: gathered into parts uploaded IN_FLIGHT at a time (an object
    smaller than a part goes up in one request). Nothing is visible under the key until `commit`, which
    makes the whole object appear at once (replacing any before it); `abort` drops what was uploaded.
    `size_hint`, an upper bound of the object's size, makes the parts large enough for the service's limit
    on their number.

    The parts are gathered in IN_FLIGHT + 1 buffers used in turn (allocated once: no memory grows or
    fragments with the object's size); a buffer is filled again once its part is up."""

    def __init__(self, path: ObjectPath, size_hint: int | None = None) -> None:
        self.path = path
        self._part_size = part_size(size_hint)
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._buffers = 0
        self._upload_id: str | None = None
        self._done: list[dict[str, Any]] = []
        self._pending: deque[Future[dict[str, Any]]] = deque()
        self._part = self._buffer()
        self._used = 0
        self._pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="mirror-s3-upload")

    def _buffer(self) -> bytearray:
        """A free buffer: one whose part is up, else a new one while there are fewer than IN_FLIGHT + 1,
        else the one of the oldest part, once it is up. A part that failed is raised as soon as it is seen."""
        while self._pending and self._pending[0].done():
            self._done.append(self._pending.popleft().result())
        if self._free.empty() and self._buffers <= IN_FLIGHT:
            self._buffers += 1
            return bytearray(self._part_size)
        while self._free.empty():
            self._done.append(self._pending.popleft().result())
        return self._free.get()

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        while view:
            n = min(len(view), self._part_size - self._used)
            self._part[self._used : self._used + n] = view[:n]
            self._used += n
            view = view[n:]
            if self._used == self._part_size:
                self._send(self._part)
                with _service(self.path, "writing"):
                    self._part = self._buffer()
                self._used = 0
        return len(data)

    def _send(self, body: bytes | bytearray) -> None:
        with _service(self.path, "writing"):
            if self._upload_id is None:
                answer = client().create_multipart_upload(Bucket=self.path.bucket, Key=self.path.key)
                self._upload_id = str(answer["UploadId"])
        number = len(self._done) + len(self._pending) + 1
        self._pending.append(self._pool.submit(self._upload, number, body, self._upload_id))

    def _upload(self, number: int, body: bytes | bytearray, upload_id: str) -> dict[str, Any]:
        try:
            answer = client().upload_part(
                Bucket=self.path.bucket, Key=self.path.key, UploadId=upload_id, PartNumber=number, Body=body
            )
        finally:
            if isinstance(body, bytearray):  # a whole part's buffer (the last part is bytes)
                self._free.put(body)
        return {"ETag": answer["ETag"], "PartNumber": number}

    def commit(self) -> None:
        """Make the object appear, whole, under its key."""
        last = bytes(memoryview(self._part)[: self._used])
        with _service(self.path, "writing"):
            if self._upload_id is None:
                client().put_object(Bucket=self.path.bucket, Key=self.path.key, Body=last)
            else:
                if last:
                    self._send(last)
                while self._pending:
                    self._done.append(self._pending.popleft().result())
                client().complete_multipart_upload(
                    Bucket=self.path.bucket,
                    Key=self.path.key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": sorted(self._done, key=lambda p: int(p["PartNumber"]))},
                )
        self._pool.shutdown()

    def abort(self) -> None:
        """Drop what was uploaded: nothing appears under the key, and no incomplete upload is left (unless
        the service cannot be reached to say so: then the bucket's lifecycle rule for incomplete multipart
        uploads removes it)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        if self._upload_id is None:
            return
        try:
            with _service(self.path, "abandoning the upload of"):
                client().abort_multipart_upload(
                    Bucket=self.path.bucket, Key=self.path.key, UploadId=self._upload_id
                )
        except MirrorError as e:
            log.warning("%s", e)


__all__ = [
    "ObjectPath",
    "ObjectReader",
    "ObjectWriter",
    "delete",
    "names_beside",
    "part_size",
    "put",
    "read_head",
    "size",
]
