"""A held file as an HTTP response, for both APIs of `mirror serve`.

Starlette's `FileResponse` does the sending: a whole-file GET goes out by the server's zero-copy path when
it offers one (ASGI `http.response.pathsend`, which granian implements), a `Range` gets 206 (or 416 with
`Content-Range: bytes */SIZE`), `If-Range` is compared with the ETag given here, and HEAD sends the
headers alone. Memory stays flat whatever the file's size: nothing is read into memory whole.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from starlette.responses import FileResponse

from mirror.serve.view import StoreView
from mirror.snapshot import FileRecord


def file_response(
    view: StoreView, record: FileRecord, headers: Mapping[str, str], *, filename: str | None = None
) -> FileResponse | None:
    """The blob of `record` with `headers` (which should name the ETag the API uses); None when the store
    no longer holds it (removed or replaced since the listing was read), which the caller answers as not
    found. `filename` adds `Content-Disposition: attachment`."""
    path = view.blob_path(record)
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
