"""S3-compatible object storage: `s3://bucket/prefix` locations, the client, and its errors.

The client is boto3's: it reads the standard AWS configuration (environment, the shared config and
credentials files, profiles, instance roles; `AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_S3` for a service
that is not AWS), so a site configures `mirror` as it configures every other S3 tool. It is set up for
any S3-compatible engine: path-style addressing (Ceph RGW, MinIO and appliances rarely have a DNS name
per bucket) and checksums only where an operation requires them (many engines reject the newer default
ones).

Every failure of the service becomes a MirrorError naming the bucket, the endpoint and what to check;
no message ever carries a credential (only the error's code from the service is used, never its text
or the request).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mirror.errors import MirrorError, UsageError

S3Client = Any  # boto3's client (untyped); boto3 is imported on first use: local commands never pay for it

SCHEME = "s3://"

# the service's error codes, and what the user should check
_CHECK = {
    "NoSuchBucket": "the bucket does not exist: create it, or check the bucket name and AWS_ENDPOINT_URL",
    "AccessDenied": "access denied: check the credentials' permissions on the bucket (AWS_PROFILE, "
    "AWS_ACCESS_KEY_ID)",
    "403": "access denied: check the credentials and their permissions on the bucket (AWS_PROFILE, "
    "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",  # a HEAD's answer has no body, so no finer code
    "AllAccessDisabled": "access to the bucket is disabled: check the bucket's policy",
    "InvalidAccessKeyId": "the access key is not known to the service: check AWS_ACCESS_KEY_ID or AWS_PROFILE",
    "SignatureDoesNotMatch": "the secret key does not match the access key: check AWS_SECRET_ACCESS_KEY or "
    "AWS_PROFILE",
    "ExpiredToken": "the session token has expired: renew the credentials",
    "InvalidToken": "the session token is not valid: check AWS_SESSION_TOKEN",
    "PermanentRedirect": "the bucket is in another region: set AWS_REGION",
    "AuthorizationHeaderMalformed": "the region does not match the bucket's: set AWS_REGION",
}


@dataclass(frozen=True)
class S3Location:
    """`s3://bucket/prefix`: a bucket and a key prefix in it ("" for the whole bucket; no slash at
    either end)."""

    bucket: str
    prefix: str = ""

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"

    def key(self, name: str) -> str:
        """The object key of `name` under the prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name


def is_s3_url(text: str | os.PathLike[str]) -> bool:
    return str(text).startswith(SCHEME)


def parse_s3_url(text: str) -> S3Location:
    """`s3://bucket[/prefix]` as a location; a UsageError saying what is wrong for anything else."""
    if not is_s3_url(text):
        raise UsageError(f"{text!r} is not an s3:// URL (s3://BUCKET/PREFIX)")
    rest = text[len(SCHEME) :]
    bucket, _, prefix = rest.partition("/")
    if not _is_bucket_name(bucket):
        raise UsageError(
            f"{text!r}: {bucket!r} is not a bucket name (3 to 63 lowercase letters, digits, dots and hyphens)"
        )
    prefix = prefix.strip("/")
    parts = prefix.split("/") if prefix else []
    if any(p in ("", ".", "..") or "\x00" in p or "\\" in p for p in parts):
        raise UsageError(f"{text!r}: the prefix may hold no empty, '.' or '..' part, NUL or backslash")
    return S3Location(bucket, prefix)


def _is_bucket_name(name: str) -> bool:
    return (
        3 <= len(name) <= 63
        and all(c.islower() or c.isdigit() or c in ".-" for c in name)
        and name[0].isalnum()
        and name[-1].isalnum()
        and name.isascii()
    )


@functools.cache
def client() -> S3Client:
    """The process's S3 client, from the standard AWS configuration (one per process: boto3 clients are
    thread-safe, and building one costs tens of milliseconds)."""
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"},
        signature_version="s3v4",  # presigned URLs too (botocore presigns with SigV2 unless told)
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=32,
    )
    return boto3.session.Session().client("s3", config=config)


def endpoint() -> str:
    """The endpoint the client talks to (for messages)."""
    return str(client().meta.endpoint_url)


@contextmanager
def translated(location: S3Location, doing: str) -> Iterator[None]:
    """Turn the client's failures while `doing` (a phrase: "reading s3://b/k") into MirrorErrors that name
    the bucket and the endpoint and say what to check, never a credential."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    try:
        yield
    except ClientError as e:
        raise MirrorError(_message(location, doing, _code(e))) from None
    except (NoCredentialsError, PartialCredentialsError):
        raise MirrorError(
            _message(
                location,
                doing,
                None,
                "no credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or run on a machine with an instance role",
            )
        ) from None
    except EndpointConnectionError:
        raise MirrorError(
            _message(
                location,
                doing,
                None,
                "the endpoint cannot be reached: check AWS_ENDPOINT_URL and the network",
            )
        ) from None
    except BotoCoreError as e:
        raise MirrorError(_message(location, doing, None, type(e).__name__)) from None


ABSENT_CODES = frozenset({"404", "NoSuchKey", "NotFound"})  # what the service answers for no such object


def error_code(e: BaseException) -> str | None:
    """The service's error code of a client error ("NoSuchKey", "PreconditionFailed", "404"), else None."""
    from botocore.exceptions import ClientError

    return _code(e) if isinstance(e, ClientError) else None


def _code(e: Any) -> str:
    return str(
        e.response.get("Error", {}).get("Code", "")
        or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "unknown")
    )


def _message(location: S3Location, doing: str, code: str | None, what: str | None = None) -> str:
    check = what or _CHECK.get(code or "", f"the service answered {code}")
    return f"{doing}: bucket {location.bucket!r} at {endpoint()}: {check}"
