"""One request to an ASGI application, in process, made as granian makes it (the raw path kept, ASGI spec
2.4, the `Host` header): for the fast tests of `mirror serve`'s routes, with no server and no socket
(`scope` alone for a `Request`)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes  # the body messages' bytes (not a file sent by path)
    state: dict[str, Any]  # the request's state: what the routes told the access log
    pathsend: str | None = None  # the file handed to the server by path, if any

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    app: ASGIApp,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    host: str = "hub.test:8088",
    pathsend: bool = False,
) -> Answer:
    """`method target` (a raw path, percent-encoded as sent, and its query) with `headers` and `body`;
    `pathsend` offers the server's zero-copy extension."""
    return asyncio.run(_call(app, method, target, headers or {}, body, host, pathsend))


def scope(
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    *,
    host: str = "hub.test:8088",
    pathsend: bool = False,
) -> dict[str, Any]:
    """The HTTP scope granian gives the application for `method target`."""
    raw_path, _, query = target.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [(b"host", host.encode())]
        + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8088),
        "extensions": {"http.response.pathsend": {}} if pathsend else {},
        "state": {},
    }


async def _call(
    app: ASGIApp, method: str, target: str, headers: dict[str, str], body: bytes, host: str, pathsend: bool
) -> Answer:
    asked = scope(method, target, headers, host=host, pathsend=pathsend)
    sent: list[dict[str, Any]] = []
    request = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if request:
            return request.pop()
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(asked, receive, send)
    start = sent[0]
    assert start["type"] == "http.response.start"
    return Answer(
        start["status"],
        {k.decode().lower(): v.decode() for k, v in start["headers"]},
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        asked["state"],
        next((m["path"] for m in sent if m["type"] == "http.response.pathsend"), None),
    )
