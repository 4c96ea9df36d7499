"""A store's objects in an S3-compatible bucket, under `s3://bucket/prefix` (each key an object).

Blobs are uploaded under a temporary key (`tmp/uploads/<uuid>`, multipart above `part_size`, several
parts at once) and made visible by a server-side copy to their final key, so a reader sees the whole
object or none; small objects are written with conditional puts (`If-None-Match: *`, `If-Match: ETag`),
so two writers never silently overwrite each other. The writer's lock is a lease object (`lock`) with an
expiry that its holder renews from a thread; a crashed holder's lease expires and is taken over with
`If-Match` its ETag. Expiry is read against the wall clock of each host (keep them in time: NTP).
Work in progress is staged in a local folder, stable per endpoint and location (see `staging`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

from mirror import s3
from mirror.clock import Clock
from mirror.errors import IntegrityError, Interrupted, LockedError, MirrorError
from mirror.fsutil import LOCK_POLL
from mirror.s3 import S3Location, translated
from mirror.storage.base import ABSENT, ConflictError, Expect, ObjectStat, Versioned
from mirror.storage.local import remove_older

UPLOADS = "tmp/uploads/"  # temporary keys of uploads in progress, under the prefix
LEASE = "lock"
LEASE_SIZE = 64 << 10
PART_SIZE = 64 << 20  # multipart upload part (and threshold): 10,000 parts make 640 GB
COPY_LIMIT = 5 * 1000**3  # one CopyObject up to here (an engine may copy it without moving bytes)
COPY_PART = 512 << 20
THREADS = 8
_CONFLICT = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}


class S3Storage:
    """A bucket and a prefix; the bucket must exist (`problem` says when it does not)."""

    def __init__(
        self,
        location: S3Location,
        *,
        clock: Clock,
        lease: float = 60.0,
        part_size: int = PART_SIZE,
        staging: Path | None = None,
    ) -> None:
        self.location = location
        self.clock = clock
        self.lease = lease
        self.part_size = part_size
        self._staging = staging

    def __str__(self) -> str:
        return str(self.location)

    @property
    def local_root(self) -> None:
        return None

    def _key(self, key: str) -> str:
        return self.location.key(key)

    def _doing(self, what: str, key: str = "") -> Any:
        return translated(self.location, f"{what} {self}/{key}" if key else f"{what} {self}")

    def problem(self) -> str | None:
        """None for a bucket whose prefix is empty or holds blobs/ or repos/; a phrase when it holds
        something else; a MirrorError naming the bucket and the endpoint when the bucket cannot be read
        (missing, credentials refused, endpoint unreachable)."""
        with self._doing("opening"):
            answer = s3.client().list_objects_v2(
                Bucket=self.location.bucket, Prefix=self._key(""), Delimiter="/", MaxKeys=1000
            )
        start = len(self._key(""))
        names = {p["Prefix"][start:] for p in answer.get("CommonPrefixes", [])}
        names |= {o["Key"][start:] for o in answer.get("Contents", [])}
        if names and not names & {"blobs/", "repos/"}:
            return "it holds neither blobs/ nor repos/: it is not a mirror store"
        return None

    # any object ---------------------------------------------------------------------------------------
    def stat(self, key: str) -> ObjectStat | None:
        try:
            with self._doing("looking at", key):
                answer = _missing_as_none(
                    lambda: s3.client().head_object(Bucket=self.location.bucket, Key=self._key(key))
                )
        except _Missing:
            return None
        return ObjectStat(int(answer["ContentLength"]))

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        if end is not None and end <= start:
            return io.BytesIO()
        ask: dict[str, str] = {}
        if start or end is not None:
            ask["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            with self._doing("reading", key):
                answer = _missing_as_none(
                    lambda: s3.client().get_object(Bucket=self.location.bucket, Key=self._key(key), **ask)
                )
        except _Missing:
            raise FileNotFoundError(f"{self}/{key}") from None
        except _Beyond:
            return io.BytesIO()  # a range starting at or past the end: nothing, as a file gives
        return cast(BinaryIO, io.BufferedReader(_Body(answer["Body"], self, key), 1 << 20))

    def keys(self, prefix: str) -> Iterator[str]:
        start = len(self._key(""))
        pages = s3.client().get_paginator("list_objects_v2")
        with self._doing("listing", prefix):
            for page in pages.paginate(Bucket=self.location.bucket, Prefix=self._key(prefix)):
                for item in page.get("Contents", []):  # S3 lists keys in UTF-8 binary order: sorted
                    yield item["Key"][start:]

    def delete(self, key: str) -> None:
        with self._doing("deleting", key):
            s3.client().delete_object(Bucket=self.location.bucket, Key=self._key(key))

    # small objects ------------------------------------------------------------------------------------
    def read(self, key: str, limit: int) -> Versioned | None:
        try:
            with self._doing("reading", key):
                answer = _missing_as_none(
                    lambda: s3.client().get_object(Bucket=self.location.bucket, Key=self._key(key))
                )
                with contextlib.closing(answer["Body"]) as body:
                    if int(answer["ContentLength"]) > limit:
                        raise IntegrityError(f"{self}/{key}: larger than {limit} bytes, refused")
                    data = body.read(limit + 1)
        except _Missing:
            return None
        if len(data) > limit:
            raise IntegrityError(f"{self}/{key}: larger than {limit} bytes, refused")
        return Versioned(data, answer["ETag"])

    def write(self, key: str, data: bytes, *, expect: Expect = None) -> None:
        self._put(key, data, expect)

    def _put(self, key: str, data: bytes, expect: Expect) -> str:
        """Put the object with the condition; its new ETag."""
        condition = (
            {} if expect is None else {"IfNoneMatch": "*"} if expect is ABSENT else {"IfMatch": expect}
        )
        try:
            with self._doing("writing", key):
                answer = _conflict_as_error(
                    lambda: s3.client().put_object(
                        Bucket=self.location.bucket, Key=self._key(key), Body=data, **condition
                    )
                )
        except _Conflict:
            raise ConflictError(
                f"{self}/{key} changed since it was read: another writer? (run again)"
            ) from None
        return str(answer["ETag"])

    # blobs --------------------------------------------------------------------------------------------
    def staging(self) -> Path:
        """`~/.cache/mirror/s3-staging/<digest>` unless the constructor names a folder: one per endpoint
        and location, so a rerun on this host finds what a killed run left."""
        if self._staging is None:
            digest = hashlib.sha256(f"{s3.endpoint()} {self.location}".encode()).hexdigest()[:16]
            self._staging = Path.home() / ".cache" / "mirror" / "s3-staging" / digest
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging

    def put_file(self, path: Path, key: str) -> None:
        temporary = self._upload(path)
        self._publish(temporary, key)
        path.unlink()  # only now: a run killed before this finds the verified file again

    def _upload(self, path: Path) -> str:
        """Upload the file under a fresh temporary key (multipart when large); the key."""
        from boto3.s3.transfer import TransferConfig

        temporary = f"{UPLOADS}{uuid.uuid4().hex}"
        config = TransferConfig(
            multipart_threshold=self.part_size, multipart_chunksize=self.part_size, max_concurrency=THREADS
        )
        with self._doing("uploading to", temporary):
            s3.client().upload_file(
                os.fspath(path), self.location.bucket, self._key(temporary), Config=config
            )
        return temporary

    def _publish(self, temporary: str, key: str) -> None:
        """Copy the uploaded object to its final key on the server (whole or not at all), then drop it."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=COPY_LIMIT, multipart_chunksize=COPY_PART, max_concurrency=THREADS
        )
        source = {"Bucket": self.location.bucket, "Key": self._key(temporary)}
        with self._doing("publishing", key):
            s3.client().copy(source, self.location.bucket, self._key(key), Config=config)
        self.delete(temporary)

    def presign(self, key: str, seconds: int, *, disposition: str | None = None) -> str | None:
        params = {"Bucket": self.location.bucket, "Key": self._key(key)}
        if disposition is not None:
            params["ResponseContentDisposition"] = disposition
        with self._doing("signing a URL for", key):
            url = s3.client().generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)
        return str(url)

    def clean_abandoned(self, older_than: float) -> list[str]:
        """Temporary uploads and incomplete multipart uploads under the prefix begun more than
        `older_than` seconds ago (by the service's time against the clock), and staging leftovers."""
        before = self.clock.time() - older_than
        removed = []
        for name, modified in self._temporary_keys():
            if modified < before:
                self.delete(name)
                removed.append(name)
        start = len(self._key(""))
        pages = s3.client().get_paginator("list_multipart_uploads")
        with self._doing("cleaning"):
            for page in pages.paginate(Bucket=self.location.bucket, Prefix=self._key("")):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() < before:
                        s3.client().abort_multipart_upload(
                            Bucket=self.location.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed.append(f"{upload['Key'][start:]} (incomplete multipart upload)")
        folder = self.staging()
        return removed + remove_older(folder, before, str(folder))

    def _temporary_keys(self) -> list[tuple[str, float]]:
        start = len(self._key(""))
        pages = s3.client().get_paginator("list_objects_v2")
        with self._doing("listing", UPLOADS):
            return [
                (item["Key"][start:], item["LastModified"].timestamp())
                for page in pages.paginate(Bucket=self.location.bucket, Prefix=self._key(UPLOADS))
                for item in page.get("Contents", [])
            ]

    # the writer's lock --------------------------------------------------------------------------------
    @contextmanager
    def lock(self, wait: float = 0.0, stop: threading.Event | None = None) -> Iterator[None]:
        holder = f"pid {os.getpid()} on {socket.gethostname()} ({uuid.uuid4().hex[:12]})"
        tag = self._take_lease(holder, wait, stop)
        held = _Held(tag)
        done = threading.Event()
        renewer = threading.Thread(
            target=self._renew, args=(holder, held, done), name=f"lease {self}", daemon=True
        )
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join()
            lost = held.lost or not self._release(held.tag)
        if lost:
            raise LockedError(
                f"the store lock {self}/{LEASE} expired while this run held it (renewals failed) and "
                "another run took it over: run again"
            )

    def _lease(self, holder: str) -> bytes:
        return json.dumps({"holder": holder, "expires": self.clock.time() + self.lease}).encode()

    def _take_lease(self, holder: str, wait: float, stop: threading.Event | None) -> str:
        """Write a lease for `holder` where there is none or an expired one; its ETag."""
        deadline = self.clock.monotonic() + wait
        while True:
            with contextlib.suppress(ConflictError):
                return self._put(LEASE, self._lease(holder), ABSENT)
            current = self.read(LEASE, LEASE_SIZE)
            if current is None:
                continue  # released meanwhile: try again at once
            other, expires = _parse_lease(current.data)
            if expires < self.clock.time():
                with contextlib.suppress(ConflictError):
                    return self._put(LEASE, self._lease(holder), current.tag)
                continue  # another run took it over first: look again
            if self.clock.monotonic() >= deadline:
                raise LockedError(
                    f"another mirror run holds the store lock {self}/{LEASE} ({other}); "
                    "try again later or pass --wait SECONDS"
                )
            if self.clock.sleep(LOCK_POLL, stop):
                raise Interrupted(f"interrupted while waiting for the store lock {self}/{LEASE}")

    def _renew(self, holder: str, held: _Held, done: threading.Event) -> None:
        """Every third of the lease, write it again with a new expiry (If-Match the last ETag), until
        `done`; a renewal that finds the lease changed means it was lost."""
        while not self.clock.sleep(self.lease / 3, done):
            try:
                held.tag = self._put(LEASE, self._lease(holder), held.tag)
            except ConflictError:
                held.lost = True
                return
            except MirrorError:
                continue  # the service is unreachable for now: the lease holds for two more tries

    def _release(self, tag: str) -> bool:
        """Delete the lease if it is still ours; False when another holder had taken it over."""
        try:
            with self._doing("releasing the lock of"):
                _conflict_as_error(
                    lambda: s3.client().delete_object(
                        Bucket=self.location.bucket, Key=self._key(LEASE), IfMatch=tag
                    )
                )
        except _Conflict:
            return False
        return True


class _Held:
    """The lease as its holder knows it: the last ETag written, and whether a renewal found it lost."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.lost = False


def _parse_lease(data: bytes) -> tuple[str, float]:
    """The holder and expiry of a lease; a lease that cannot be read has expired."""
    try:
        lease = json.loads(data)
        return str(lease["holder"]), float(lease["expires"])
    except (ValueError, TypeError, KeyError):
        return "an unreadable lease", 0.0


class _Missing(Exception):
    pass


class _Beyond(Exception):
    pass


class _Conflict(Exception):
    pass


def _missing_as_none(call: Any) -> Any:
    """The call's answer; _Missing when the object is absent, _Beyond when the range starts past its end."""
    try:
        return call()
    except Exception as e:
        code = s3.error_code(e)
        if code in s3.ABSENT_CODES:
            raise _Missing from None
        if code in ("416", "InvalidRange"):
            raise _Beyond from None
        raise


def _conflict_as_error(call: Any) -> Any:
    """The call's answer; _Conflict when its condition failed (a changed, present or absent object)."""
    try:
        return call()
    except Exception as e:
        if s3.error_code(e) in _CONFLICT | s3.ABSENT_CODES:
            raise _Conflict from None
        raise


class _Body(io.RawIOBase):
    """An object's body as a raw stream, read from the connection as consumed."""

    def __init__(self, body: Any, storage: S3Storage, key: str) -> None:
        super().__init__()
        self._body = body
        self._storage = storage
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        with self._storage._doing("reading", self._key):
            data = self._body.read(view.nbytes)
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()
