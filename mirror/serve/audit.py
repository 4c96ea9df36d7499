"""The access log of `mirror serve` (`--access-log FILE`): one JSON line per request, for audit.

A route tells the log what a request was about by setting `request.state.repo`, `.revision` and `.path`
(strings; see mirror.serve.app); the gate (mirror.serve.gate) adds who asked, the answer's status and
size and how long it took, and appends the line with one write to a file opened with O_APPEND, so the
lines of several worker processes never mix. A token is never written, only the name it is given in the
token file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mirror.errors import UsageError

log = logging.getLogger(__name__)

NOTED = ("repo", "revision", "path")  # what a route sets on `request.state` for the log


@dataclass(frozen=True)
class Entry:
    """One line of the access log."""

    time: str  # ISO 8601, UTC, when the request arrived
    client: str | None  # the client's address
    token: str | None  # the NAME of the token the request presented, None without --token-file
    method: str
    target: str  # the request's path and query, as sent
    status: int
    bytes: int  # body bytes handed to the server to send (a whole file sent by path; none for HEAD)
    duration: float  # seconds from the request's arrival to the end of its answer
    noted: dict[str, str | None]  # repo, revision, path: what the route said the request was about

    def to_json(self) -> str:
        return json.dumps(
            {
                "time": self.time,
                "client": self.client,
                "token": self.token,
                "method": self.method,
                "target": self.target,
                **{key: self.noted.get(key) for key in NOTED},
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
