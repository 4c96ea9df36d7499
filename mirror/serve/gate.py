"""What every request to `mirror serve` passes before any route: the token check (`--token-file`), the path
check (no URL path leaves the store), and the access log line once it is answered (`--access-log`).

The path check reads the path as the client sent it (the raw path, still percent-encoded) and refuses,
with 400 in the shape of the API the path belongs to: a `.` or `..` segment, also percent-encoded
(`%2e%2e`, `..%2f`, twice encoded `%252e%252e`), an empty segment inside the path (`//`: an absolute path
after a route's prefix), a NUL (`%00`) and a backslash (`\\`, `%5c`). Query values get the same check
(a ModelScope file is named by `FilePath=`). The routes then look files up in the commit's records, never
by joining a name to a folder, so a name the check lets through can only be found or not found.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_to_bytes

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mirror.clock import Clock, iso
from mirror.serve.audit import NOTED, AccessLog, Entry
from mirror.serve.replies import error_for
from mirror.serve.tokens import Tokens, cookie_token

# The Hub's answers to a request without a token and with a token it does not know; huggingface_hub reads
# the first as "repo not found" on its API paths (the Hub answers private repos so) and shows the second.
NO_TOKEN = "Invalid username or password."
BAD_TOKEN = "Invalid credentials in Authorization header"
_ESCAPE = re.compile(rb"%[0-9A-Fa-f]{2}")


def _why_not(decoded: bytes, *, is_path: bool) -> str | None:
    if b"\x00" in decoded:
        return "a NUL"
    if b"\\" in decoded:
        return "a backslash"
    segments = decoded.split(b"/")
    if any(s in (b".", b"..") for s in segments):
        return "a . or .. segment"
    if is_path and b"" in segments[1:-1]:
        return "an empty segment"
    return None


def refusal(raw_path: bytes, query: bytes) -> str | None:
    """Why a request's path or query may not be served (a phrase), None when it may. The path is checked
    as sent, decoded once and decoded twice."""
    if not raw_path.startswith(b"/"):
        return "not absolute"
    once = unquote_to_bytes(raw_path)
    for form in (raw_path, once, unquote_to_bytes(once) if _ESCAPE.search(once) else once):
        why = _why_not(form, is_path=True)
        if why is not None:
            return why
    for _, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True, encoding="latin-1"):
        raw = value.encode("latin-1")
        for form in (raw, unquote_to_bytes(raw)):
            why = _why_not(form, is_path=False)
            if why is not None:
                return why
    return None


@dataclass
class Answer:
    """What the gate saw of a request's answer: its status and the body bytes handed to the server."""

    status: int = 0
    bytes: int = 0


class Gate:
    """ASGI middleware: the token check, the path check and the access log around the application."""

    def __init__(
        self, app: ASGIApp, *, clock: Clock, tokens: Tokens | None = None, access_log: AccessLog | None = None
    ) -> None:
        self.app = app
        self.clock = clock
        self.tokens = tokens
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived, start = self.clock.time(), self.clock.monotonic()
        # The routes' request.state, for this request only: they say there what the request is about.
        state = scope["state"] = dict(scope.get("state") or {})
        answer = Answer()

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
            elif message["type"] == "http.response.body":
                answer.bytes += len(message.get("body", b""))
            elif message["type"] == "http.response.pathsend":
                answer.bytes += _size(message["path"])
            await send(message)

        name = None
        try:
            path = scope["path"]
            headers = Headers(scope=scope)
            if self.tokens is not None:
                name = self.tokens.identify(headers.get("authorization"), headers.get("cookie"))
                if name is None:
                    given = "authorization" in headers or cookie_token(headers.get("cookie")) is not None
                    reply = error_for(
                        path, 401, *((BAD_TOKEN, None) if given else (NO_TOKEN, "RepoNotFound"))
                    )
                    await reply(scope, receive, counted)
                    return
            why = refusal(scope.get("raw_path") or path.encode(), scope.get("query_string", b""))
            if why is not None:
                await error_for(path, 400, f"Invalid path ({why})")(scope, receive, counted)
                return
            await self.app(scope, receive, counted)
        finally:
            if self.access_log is not None:
                self.access_log.write(
                    Entry(
                        time=iso(arrived),
                        client=(scope.get("client") or (None,))[0],
                        token=name,
                        method=scope["method"],
                        target=_target(scope),
                        status=answer.status or 500,
                        bytes=0 if scope["method"] == "HEAD" else answer.bytes,  # granian sends no body
                        duration=max(0.0, self.clock.monotonic() - start),
                        noted={key: _text(state.get(key)) for key in NOTED},
                    )
                )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _target(scope: Scope) -> str:
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return (raw + (b"?" + query if query else b"")).decode("latin-1")
