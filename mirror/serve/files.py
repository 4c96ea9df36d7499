"""A held file as an HTTP response, for both APIs of `mirror serve`.

Starlette's `FileResponse` does the sending: a whole-file GET goes out by the server's zero-copy path when
it offers one (ASGI `http.response.pathsend`, which granian implements), a `Range` gets 206 (or 416 with
`Content-Range: bytes */SIZE`), `If-Range` is compared with the ETag given here, and HEAD sends the
headers alone. Memory stays flat whatever the file's size: nothing is read into memory whole.

A blob of a local store goes out by its path; over a bucket the same response streams the object
(`Storage.open_read`, from the range's start), so Range, If-Range and HEAD behave the same.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from mirror.serve.view import StoreView
from mirror.snapshot import FileRecord
from mirror.store import Store

PATHSEND = "http.response.pathsend"


def file_response(
    view: StoreView, record: FileRecord, headers: Mapping[str, str], *, filename: str | None = None
) -> FileResponse | None:
    """The blob of `record` with `headers` (which should name the ETag the API uses); None when the store
    no longer holds it (removed or replaced since the listing was read), which the caller answers as not
    found. `filename` adds `Content-Disposition: attachment`."""
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
    return _ObjectResponse(
        store,
        record.sha256,
        headers=dict(headers),
        media_type="application/octet-stream",
        filename=filename,
        stat_result=os.stat_result((stat.S_IFREG | 0o444, 0, 0, 1, 0, 0, record.size, 0, 0, 0)),
    )


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
