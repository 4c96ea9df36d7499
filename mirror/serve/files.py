"""A held file as an HTTP response, for both APIs of `mirror serve`.

Starlette's `FileResponse` does the sending: a whole-file GET goes out by the server's zero-copy path when
it offers one (ASGI `http.response.pathsend`, which granian implements), a `Range` gets 206 (or 416 with
`Content-Range: bytes */SIZE`), `If-Range` is compared with the ETag given here, and HEAD sends the
headers alone. Memory stays flat whatever the file's size: nothing is read into memory whole.

A blob of a local store goes out by its path; over a bucket the same response streams the object
(`Storage.open_read`, from the range's start), so Range, If-Range and HEAD behave the same. With
`redirect` (`mirror serve --redirect`), an LFS file of a store in a bucket is answered, as the Hub answers
it, by a 302 to a short-lived presigned URL of its blob carrying every header the 200 would (the client
reads them from the 302 and sends its Range to the object store); a git file is still sent directly.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, BinaryIO
from urllib.parse import quote

import anyio
import anyio.to_thread
from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

from mirror.serve.view import StoreView
from mirror.snapshot import FileRecord
from mirror.store import Store

PATHSEND = "http.response.pathsend"
PRESIGNED_FOR = 300  # seconds a redirect's URL stays valid: a client follows it at once (a download begun
# in time runs to its end); a URL copied from a log or a proxy opens nothing five minutes later


def file_response(
    view: StoreView,
    record: FileRecord,
    headers: Mapping[str, str],
    *,
    filename: str | None = None,
    redirect: bool = False,
) -> Response | None:
    """The blob of `record` with `headers` (which should name the ETag the API uses); None when the store
    no longer holds it (removed or replaced since the listing was read), which the caller answers as not
    found. `filename` adds `Content-Disposition: attachment`. With `redirect`, an LFS file of a storage
    that presigns (a bucket) is a 302 to its blob (`redirect_response`)."""
    store = view.store
    path = store.local_blob(record.sha256)
    if path is not None:
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size != record.size:
            return None
        return FileResponse(
            path,
            headers=dict(headers),
            media_type="application/octet-stream",
            filename=filename,
            stat_result=st,
        )
    if store.blob_problem(record.sha256, record.size) is not None:
        return None
    if redirect and record.lfs:
        # the object's name is its sha256: the URL says the file's, as the Hub's do (`inline` but for
        # a `filename` asked as an attachment)
        shown = disposition("attachment", filename) if filename else disposition("inline", record.path)
        url = store.storage.presign(store.blob_key(record.sha256), PRESIGNED_FOR, disposition=shown)
        if url is not None:
            return redirect_response(url, headers)
    return _ObjectResponse(
        store,
        record.sha256,
        headers=dict(headers),
        media_type="application/octet-stream",
        filename=filename,
        stat_result=os.stat_result((stat.S_IFREG | 0o444, 0, 0, 1, 0, 0, record.size, 0, 0, 0)),
    )


def disposition(kind: str, path: str) -> str:
    """A Content-Disposition naming the last part of `path` (RFC 6266; percent-encoded UTF-8 when it is not
    plain ASCII a quoted string holds)."""
    name = path.rsplit("/", 1)[-1]
    quoted = quote(name)
    return f'{kind}; filename="{name}"' if quoted == name else f"{kind}; filename*=UTF-8''{quoted}"


def redirect_response(url: str, headers: Mapping[str, str]) -> Response:
    """A 302 to `url` as the Hub answers the resolve of an LFS file: the file's headers (ETag, X-Repo-Commit,
    X-Linked-Etag, X-Linked-Size, which huggingface_hub reads from the 302 itself), `Accept-Ranges`, and
    a short text body whose length is the `Content-Length` (the file's size is X-Linked-Size)."""
    head = {**headers, "Location": url, "Accept-Ranges": "bytes"}
    return Response(f"Found. Redirecting to {url}", status_code=302, headers=head, media_type="text/plain")


class _ObjectResponse(FileResponse):
    """`FileResponse` reading a blob through the store's storage instead of a local path (never sent by
    pathsend: there is no path)."""

    def __init__(self, store: Store, sha256: str, **options: Any) -> None:
        super().__init__(store.where(store.blob_key(sha256)), **options)
        self._store, self._sha256 = store, sha256

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = {k: v for k, v in scope.get("extensions", {}).items() if k != PATHSEND}
        await super().__call__({**scope, "extensions": extensions}, receive, send)

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[Any]:
        reader = _ObjectReader(self._store, self._sha256)
        try:
            yield reader
        finally:
            with anyio.CancelScope(shield=True):  # closing must finish even when the transfer is cancelled
                await reader.aclose()


class _ObjectReader:
    """What `FileResponse` reads a file through (`seek`, `read`): a ranged stream of the blob, opened at
    the first read from where the last seek put it."""

    def __init__(self, store: Store, sha256: str) -> None:
        self._store, self._sha256 = store, sha256
        self._stream: BinaryIO | None = None
        self._at = 0

    async def seek(self, offset: int) -> None:
        await self.aclose()
        self._at = offset

    async def read(self, size: int) -> bytes:
        if self._stream is None:
            self._stream = await anyio.to_thread.run_sync(self._store.open_blob, self._sha256, self._at)
        data: bytes = await anyio.to_thread.run_sync(self._stream.read, size)
        return data

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await anyio.to_thread.run_sync(stream.close)
