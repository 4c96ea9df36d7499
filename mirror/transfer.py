"""Downloads shared by every source: stream to a temp file in the store, hash while streaming, check the
hub's own hash, retry what is worth retrying, and move the file into place only when it is verified."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mirror.errors import IntegrityError, RetryableError
from mirror.hashing import CHUNK, Hasher
from mirror.retry import RetryPolicy, check_status, with_retries
from mirror.sources import FileRequest
from mirror.store import Store

log = logging.getLogger("mirror")


@dataclass(frozen=True)
class Expected:
    """What the hub says a file is: its size and its sha256 or git blob sha1 (at least one).

    `want_git_sha1` asks for the content's git blob id to be computed while streaming even when the hub
    gave a sha256 (ModelScope), because the HF cache names small files by it.
    """

    label: str
    size: int
    sha256: str | None
    git_sha1: str | None
    source: str = ""
    want_git_sha1: bool = False

    @property
    def key(self) -> str:
        """A stable name for the download in progress, so a later run finds its partial bytes. Per source:
        the same content listed by two hubs is fetched and checked from each."""
        return f"{self.source}-{self.sha256 or self.git_sha1}.part"

    def hasher(self) -> Hasher:
        return Hasher(git_size=self.size if self.git_sha1 or self.want_git_sha1 else None)


@dataclass(frozen=True)
class Fetched:
    sha256: str
    git_sha1: str | None


def download(
    store: Store,
    request: FileRequest,
    expected: Expected,
    *,
    policy: RetryPolicy | None = None,
    progress: Callable[[int], None] | None = None,
) -> Fetched:
    """Fetch a file into the store and return its hashes; a mismatch is never stored."""
    return with_retries(
        lambda: _download_once(store, request, expected, progress), policy or RetryPolicy(), expected.label
    )


def _download_once(
    store: Store, request: FileRequest, expected: Expected, progress: Callable[[int], None] | None
) -> Fetched:
    import httpx2
    from huggingface_hub import get_session

    temp = store.temp_path(expected.key)
    hasher = expected.hasher()
    have = _resume_point(temp, expected.size, hasher)
    headers = {**request.headers, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with get_session().stream("GET", request.url, headers=headers) as response:
            if response.status_code != 206:
                check_status(
                    response.status_code,
                    response.headers.get("Retry-After"),
                    expected.label,
                    request.token_hint,
                )
            if have and response.status_code != 206:
                # the server ignored Range: start over from the first byte
                hasher = expected.hasher()
                have = 0
            with open(temp, "ab" if have else "wb", buffering=CHUNK) as out:
                for chunk in response.iter_bytes():
                    if hasher.size + len(chunk) > expected.size:
                        raise IntegrityError(
                            f"{expected.label}: the hub sent more than {expected.size} bytes"
                        )
                    out.write(chunk)
                    hasher.update(chunk)
                    if progress is not None:
                        progress(len(chunk))
    except httpx2.TransportError as e:
        raise RetryableError(
            f"{expected.label}: connection failed after {hasher.size} bytes: {type(e).__name__}"
        ) from None
    if hasher.size < expected.size:
        raise RetryableError(f"{expected.label}: body cut off at {hasher.size} of {expected.size} bytes")
    try:
        _check_hash(hasher, expected)
    except IntegrityError:
        temp.unlink(missing_ok=True)
        raise
    store.add_blob(temp, hasher.sha256)
    return Fetched(hasher.sha256, hasher.git_sha1)


def _resume_point(path: Path, size: int, hasher: Hasher) -> int:
    """Feed the partial bytes an earlier attempt left into the hasher; return how many there are."""
    try:
        have = path.stat().st_size
    except FileNotFoundError:
        return 0
    if have == 0 or have >= size:
        path.unlink()
        return 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return have


def _check_hash(hasher: Hasher, expected: Expected) -> None:
    if expected.sha256 is not None and hasher.sha256 != expected.sha256:
        raise IntegrityError(
            f"{expected.label}: sha256 mismatch (hub says {expected.sha256}, got {hasher.sha256}); not stored"
        )
    if expected.sha256 is None and hasher.git_sha1 != expected.git_sha1:
        raise IntegrityError(
            f"{expected.label}: git blob sha1 mismatch (hub says {expected.git_sha1}, got {hasher.git_sha1}); "
            "not stored"
        )
