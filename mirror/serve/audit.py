"""The access log of `mirror serve` (`--access-log FILE`): one JSON line per request, for audit.

A route tells the log what a request was about with `note(request, repo=..., revision=..., path=...)`; the
gate (mirror.serve.gate) adds who asked, the answer's status and size and how long it took, and appends
the line with one write to a file opened with O_APPEND, so the lines of several worker processes never
mix. A token is never written, only the name it is given in the token file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import HTTPConnection

from mirror.errors import UsageError

log = logging.getLogger(__name__)

NOTE_KEY = "mirror.serve.noted"  # the ASGI scope key of a request's Noted, set by the gate


@dataclass
class Noted:
    """What a route says a request was about: the repo (its id, `datasets/` before a dataset's, as in the
    Hub's URLs), the revision as asked, and the path of the file or folder in the repo."""

    repo: str | None = None
    revision: str | None = None
    path: str | None = None


def note(
    request: HTTPConnection, *, repo: str | None = None, revision: str | None = None, path: str | None = None
) -> None:
    """Tell the access log what this request is about (fields left None stay as they are). Does nothing
    for a request that did not pass the gate (a route tested on its own)."""
    noted = request.scope.get(NOTE_KEY)
    if not isinstance(noted, Noted):
        return
    if repo is not None:
        noted.repo = repo
    if revision is not None:
        noted.revision = revision
    if path is not None:
        noted.path = path


@dataclass(frozen=True)
class Entry:
    """One line of the access log."""

    time: str  # ISO 8601, UTC, when the request arrived
    client: str | None  # the client's address
    token: str | None  # the NAME of the token the request presented, None without --token-file
    method: str
    target: str  # the request's path and query, as sent
    status: int
    bytes: int  # body bytes handed to the server to send (a whole file for a file sent by path)
    duration: float  # seconds from the request's arrival to the end of its answer
    noted: Noted

    def to_json(self) -> str:
        return json.dumps(
            {
                "time": self.time,
                "client": self.client,
                "token": self.token,
                "method": self.method,
                "target": self.target,
                "repo": self.noted.repo,
                "revision": self.noted.revision,
                "path": self.noted.path,
                "status": self.status,
                "bytes": self.bytes,
                "duration": round(self.duration, 6),
            },
            ensure_ascii=True,
        )


class AccessLog:
    """An access log file, open for appending; shared by the worker processes (each line is one write)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as e:
            raise UsageError(f"cannot open the access log {path}: {e.strerror or e}") from None

    def write(self, entry: Entry) -> None:
        line = (entry.to_json() + "\n").encode()
        try:
            written = os.write(self.fd, line)
        except OSError as e:
            log.error("cannot write to the access log %s: %s", self.path, e.strerror or e)
            return
        if written != len(line):
            log.error("the access log %s is full: a line was cut", self.path)

    def close(self) -> None:
        os.close(self.fd)
