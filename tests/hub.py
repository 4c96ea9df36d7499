"""A loopback Hugging Face Hub for tests (standard library only).

`LoopbackHub` runs an HTTP/1.1 keep-alive server on 127.0.0.1 in a background thread and speaks
enough of the Hub API for the real `huggingface_hub` client (snapshot_download, hf_hub_download,
HfApi.model_info / list_repo_tree / list_repo_refs / get_paths_info) and for our own mirror tool.

Routes (`{t}` is `models`, `datasets` or `spaces`; file urls use no prefix, `datasets/` or `spaces/`):

    GET  /api/{t}/{repo}[/revision/{rev}][?blobs=true]   repo info (siblings, sha)
    GET  /api/{t}/{repo}/tree/{rev}[/{path}]              tree listing, `Link: rel="next"` pagination
    GET  /api/{t}/{repo}/refs                             branches, tags, pull requests
    POST /api/{t}/{repo}/paths-info/{rev}                 entries for `paths` (form or JSON body)
    HEAD|GET /[datasets/|spaces/]{repo}/resolve/{rev}/{path}   file content, Range support

The hub's own scan, as the Hub reports it, only when asked: `set_security` gives a file a status;
`securityStatus=true` (or `expand=securityRepoStatus`; any `expand` returns only the properties it names)
adds `securityRepoStatus` {scansDone, filesWithIssues: [{path, level}]} to the repo info, and `expand=true`
on the tree listing and paths-info adds each file's `securityFileStatus` {status, avScan, pickleImportScan}.
`reports_security = False` is a hub that reports no scan (an older hub, a mirror).

The same repos are also served through the ModelScope HTTP API (`MODELSCOPE_ENDPOINT=hub.modelscope_url`,
`{t}` is `models` or `datasets`, `{repo}` must be `owner/name`):

    GET  /api/v1/{t}/{repo}[?Revision=R]                    model info
    GET  /api/v1/{t}/{repo}/revisions                        branches and tags (RevisionMap)
    GET  /api/v1/{t}/{repo}/repo/files?Revision=R&Recursive=True[&Root=D][&PageNumber=N&PageSize=M]
    GET  /api/v1/{t}/{repo}/repo/tree?...                    same listing (what datasets use)
    HEAD|GET /api/v1/{t}/{repo}/repo?Revision=R&FilePath=P   file content, Range support
    GET  /api/v1/repos/internalAccelerationInfo              region probe: "not inside Alibaba Cloud"
    *    /openapi/v1/...                                     404 ResourceNotFound (client falls back)

ModelScope's default branch is `master`. A repo gets one with `add_commit(..., branch="master")`; when a
repo has no `master` branch, `master` on the ModelScope routes (and a missing `Revision`) is an alias of
the HF default branch (`main`), and `/revisions` lists that alias as a branch. Answers use the ModelScope
envelope `{"Code", "Success", "Message", "RequestId", "Data"}`; errors carry the HTTP status as `Code`
(404 unknown repo/revision/file, 401 missing or wrong token: the client sends the token both as
`Authorization: Bearer` and as the cookie `m_session_id`, either is accepted). Faults, `ignore_range`,
`rate_limit_per_connection` and the request log work the same as on the HF routes, and `downloads()`
counts the `/repo?FilePath=` GETs too.

Usage:

    with LoopbackHub() as hub:
        sha = hub.add_commit("org/name", {"config.json": b"{}"}, tags=["v1.0"])
        ...  # HF_ENDPOINT=hub.url

CLI (for demos): `python -m tests.hub FOLDER REPO_ID [--port N] [--repo-type T] [--token TOK]`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import re
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import parse_qs, quote, quote_plus, unquote, urlencode

CHUNK_SIZE = 1 << 20
LFS_SIZE_THRESHOLD = 10 * (1 << 20)
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".h5", ".msgpack", ".onnx", ".gguf")
DEFAULT_BRANCH = "main"
MS_DEFAULT_BRANCH = "master"  # ModelScope's default branch

_API_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_MS_PLURAL = {"models": "model", "datasets": "dataset"}
_MS_FILE_RE = re.compile(r"^/api/v1/(?:models|datasets)/[^/]+/[^/]+/repo$")


def git_blob_sha1(data: bytes) -> str:
    """`git hash-object` of `data`: sha1(b"blob <size>\\0" + data)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer text stored in git for an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


# --------------------------------------------------------------------------------------------------
# Repository content
# --------------------------------------------------------------------------------------------------


@dataclass
class HubFile:
    """A file to put in a commit: content from `data` or from the file `source` on disk.

    `lfs=None` means automatic: LFS when the size is >= 10 MiB or the name ends with a weights suffix.
    """

    path: str
    data: bytes | None = None
    source: Path | None = None
    lfs: bool | None = None


@dataclass(frozen=True)
class FileInfo:
    """A file as stored in the hub, with its precomputed hashes."""

    path: str
    size: int
    sha256: str
    git_sha1: str  # git blob sha1 of the content
    lfs: bool
    data: bytes | None = field(default=None, repr=False)
    source: Path | None = None

    @property
    def pointer(self) -> bytes:
        """The LFS pointer text (meaningful for LFS files)."""
        return lfs_pointer(self.sha256, self.size)

    @property
    def oid(self) -> str:
        """Git object id in the tree: sha1 of the pointer for LFS files, else of the content."""
        return git_blob_sha1(self.pointer) if self.lfs else self.git_sha1

    @property
    def etag(self) -> str:
        """What the client names the cached blob by: sha256 for LFS files, git sha1 otherwise."""
        return self.sha256 if self.lfs else self.git_sha1

    def iter_bytes(
        self, start: int = 0, end: int | None = None, chunk_size: int = CHUNK_SIZE
    ) -> Iterator[bytes]:
        """Content bytes [start, end) in chunks of at most `chunk_size`; streams `source` from disk."""
        stop = self.size if end is None else min(end, self.size)
        if self.data is not None:
            for pos in range(start, stop, chunk_size):
                yield self.data[pos : min(pos + chunk_size, stop)]
            return
        assert self.source is not None
        with open(self.source, "rb") as f:
            f.seek(start)
            pos = start
            while pos < stop:
                block = f.read(min(chunk_size, stop - pos))
                if not block:
                    raise OSError(f"{self.source} shrank while being served")
                pos += len(block)
                yield block

    @classmethod
    def from_hub_file(cls, hf: HubFile) -> FileInfo:
        path = _normalize_repo_path(hf.path)
        if (hf.data is None) == (hf.source is None):
            raise ValueError(f"HubFile {hf.path!r}: give exactly one of data= or source=")
        if hf.data is not None:
            data = bytes(hf.data)
            size, sha256, sha1 = len(data), hashlib.sha256(data).hexdigest(), git_blob_sha1(data)
            source = None
        else:
            source = Path(cast(Path, hf.source)).resolve()
            size = source.stat().st_size
            h256, h1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
            seen = 0
            with open(source, "rb") as f:
                while block := f.read(CHUNK_SIZE):
                    h256.update(block)
                    h1.update(block)
                    seen += len(block)
            if seen != size:
                raise OSError(f"{source} changed size while being hashed")
            sha256, sha1, data = h256.hexdigest(), h1.hexdigest(), None
        lfs = hf.lfs
        if lfs is None:
            lfs = size >= LFS_SIZE_THRESHOLD or path.lower().endswith(LFS_SUFFIXES)
        return cls(path=path, size=size, sha256=sha256, git_sha1=sha1, lfs=lfs, data=data, source=source)


def _query_list(raw_query: str, name: str) -> list[str]:
    """Every value of `name` in a query string (`expand=a&expand=b`, `expand[]=a`, or `expand=a,b`)."""
    values = parse_qs(raw_query).get(name, []) + parse_qs(raw_query).get(f"{name}[]", [])
    return [v for value in values for v in value.split(",") if v]


def _normalize_repo_path(path: str) -> str:
    p = path.replace("\\", "/").strip("/")
    parts = p.split("/")
    if not p or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid path in repo: {path!r}")
    return p


def _parent_dir(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


@dataclass
class _Commit:
    sha: str
    parent: str | None
    files: dict[str, FileInfo]
    message: str
    date: datetime
    dirs: dict[str, str] = field(default_factory=dict)  # directory path -> fake tree oid ("" = root)

    def __post_init__(self) -> None:
        children: dict[str, list[str]] = {"": []}
        for path in self.files:
            parts = path.split("/")
            for i in range(1, len(parts)):
                children.setdefault("/".join(parts[:i]), [])
        for path in list(self.files) + [d for d in children if d]:
            children[_parent_dir(path)].append(path)
        # Deepest directories first so a parent's oid can use its children's.
        for d in sorted(children, key=lambda x: -x.count("/") - (1 if x else 0)):
            h = hashlib.sha1(b"tree\0")
            for child in sorted(children[d]):
                oid = self.files[child].oid if child in self.files else self.dirs[child]
                h.update(f"{child}\0{oid}\n".encode())
            self.dirs[d] = h.hexdigest()

    def entry_oid(self, path: str) -> str | None:
        if path in self.files:
            return self.files[path].oid
        return self.dirs.get(path)


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))

    def resolve(self, rev: str) -> _Commit | None:
        for name in (rev, rev.removeprefix("refs/heads/"), rev.removeprefix("refs/tags/")):
            if name in self.branches:
                return self.commits[self.branches[name]]
            if name in self.tags:
                return self.commits[self.tags[name]]
        return self.commits.get(rev) if _COMMIT_RE.match(rev) else None

    def default_revision(self) -> str:
        if DEFAULT_BRANCH in self.branches or not self.branches:
            return DEFAULT_BRANCH
        return next(iter(self.branches))

    def last_commit_for(self, commit: _Commit, path: str) -> _Commit:
        """The oldest ancestor of `commit` reachable without `path` changing its oid."""
        oid = commit.entry_oid(path)
        current = commit
        while current.parent is not None:
            parent = self.commits[current.parent]
            if parent.entry_oid(path) != oid:
                break
            current = parent
        return current


# --------------------------------------------------------------------------------------------------
# Request log and faults
# --------------------------------------------------------------------------------------------------


class Headers(dict[str, str]):
    """A dict of request headers with case-insensitive lookup (keys stored lower-case)."""

    def __init__(self, items: Mapping[str, str] | Sequence[tuple[str, str]] = ()) -> None:
        super().__init__()
        pairs = items.items() if isinstance(items, Mapping) else items
        for k, v in pairs:
            super().__setitem__(k.lower(), v)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass
class RecordedRequest:
    method: str
    path: str  # raw request target, with the query string
    headers: Headers
    status: int
    connection: int = 0  # sequence number of the TCP connection that carried the request
    bytes_sent: int = 0  # body bytes actually written


FaultKind = Literal["status", "cut", "corrupt", "delay", "redirect", "encoding", "body", "garbage", "stall"]


@dataclass
class Fault:
    """An injected failure.

    kind: "status" answers `status` (with `Retry-After: retry_after` if set; a 3xx redirects to the same
    target) instead of the real answer;
    "cut" sends the real headers (full Content-Length) but closes the connection after `at_byte` body
    bytes (default: half); "corrupt" flips one body byte at `at_byte` (default: the middle) keeping
    length and headers; "delay" sleeps `delay` seconds before answering (or until the event `until` is set,
    if sooner: a test holds a request for as long as it needs, with `delay` as its failsafe).
    match: substring of the request target (path + query), or a callable on it. `method`: only
    requests with this method (cut/corrupt only ever apply to 200/206 GET answers with a body).
    times: how many matching requests it applies to (None = unlimited). `hits` counts uses.
    Protocol faults (see `_wire_fault`): "redirect" answers 302 to `location` (default: the request's own
    target, a redirect loop); "encoding" sends the real answer labelled `Content-Encoding: encoding`
    although it is not encoded; "body" replaces the body of a non-file answer with `body` (bytes, or a
    function of the real body: non-UTF-8, the wrong shape, a hostile listing, a truncated one); "garbage"
    writes `body` (default: bytes that are not HTTP) instead of an answer and closes the connection;
    "stall" sends the headers and the body's first chunk reaching `at_byte` (default: the first), then
    sends nothing for `delay` seconds (a hub that hangs mid-body).
    """

    kind: FaultKind
    match: str | Callable[[str], bool] = ""
    times: int | None = 1
    status: int = 503
    retry_after: int | float | str | None = None
    at_byte: int | None = None
    delay: float = 0.0
    method: str | None = None
    hits: int = 0
    location: str | None = None
    encoding: str = "gzip"
    body: bytes | Callable[[bytes], bytes] = b""
    until: threading.Event | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("status", "cut", "corrupt", "delay", *WIRE_FAULTS):
            raise ValueError(f"unknown fault kind {self.kind!r}")

    @property
    def used_up(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, method: str, target: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        if callable(self.match):
            return bool(self.match(target))
        return self.match in target


# ---- protocol faults: a hub (or a proxy) that breaks HTTP rather than the content -----------------------

WIRE_FAULTS = ("redirect", "encoding", "body", "garbage", "stall")
GARBAGE = b"\x00\xff this is neither HTTP nor TLS \xfe\r\n\r\n"


def _wire_fault(faults: FaultPlan, method: str, target: str, resp: _Response) -> _Response:
    """The answer as the "redirect", "encoding" and "body" faults that match this request change it."""
    for f in faults.take(method, target, ("redirect", "encoding", "body")):
        if f.kind == "redirect":
            resp = _Response(302, [("Location", f.location or target)])
        elif f.kind == "encoding":
            resp.headers.append(("Content-Encoding", f.encoding))
        elif resp.file is None:
            resp.body = f.body(resp.body) if callable(f.body) else f.body
    return resp


def _speak_garbage(handler: BaseHTTPRequestHandler, faults: FaultPlan, method: str, target: str) -> bool:
    """A "garbage" fault: bytes that are not HTTP instead of the answer, then the connection closes."""
    taken = faults.take(method, target, ("garbage",))
    if not taken:
        return False
    body = taken[0].body
    handler.wfile.write(body if isinstance(body, bytes) and body else GARBAGE)
    handler.wfile.flush()
    handler.close_connection = True
    return True


class GarbageServer:
    """A port that answers every connection with bytes that are neither HTTP nor TLS, then closes it: as an
    `http://` endpoint a server that speaks garbage, as an `https://` one a TLS handshake that fails."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="garbage-server", daemon=True)

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.sendall(GARBAGE)
                conn.shutdown(socket.SHUT_RDWR)

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> GarbageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._sock.close()


class FaultPlan:
    """Thread-safe list of faults; `take` consumes matching ones."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, target: str, kinds: Sequence[str]) -> list[Fault]:
        taken: list[Fault] = []
        with self._lock:
            for f in self._faults:
                if f.kind in kinds and not f.used_up and f.matches(method, target):
                    f.hits += 1
                    taken.append(f)
        return taken

    @property
    def pending(self) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if not f.used_up]

    def __iter__(self) -> Iterator[Fault]:
        with self._lock:
            return iter(list(self._faults))

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)


# --------------------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------------------


@dataclass
class _Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    file: FileInfo | None = None
    start: int = 0
    length: int = 0  # body length when streaming `file`

    @property
    def body_length(self) -> int:
        return self.length if self.file is not None else len(self.body)

    def iter_body(self, chunk_size: int) -> Iterator[bytes]:
        if self.file is not None:
            yield from self.file.iter_bytes(self.start, self.start + self.length, chunk_size)
        else:
            for pos in range(0, len(self.body), chunk_size):
                yield self.body[pos : pos + chunk_size]


def _json_response(status: int, obj: Any, headers: Sequence[tuple[str, str]] = ()) -> _Response:
    body = json.dumps(obj).encode()
    return _Response(status, [("Content-Type", "application/json; charset=utf-8"), *headers], body)


def _error(status: int, code: str | None, message: str, extra: Sequence[tuple[str, str]] = ()) -> _Response:
    headers = [("X-Error-Message", message), *extra]
    if code is not None:
        headers.insert(0, ("X-Error-Code", code))
    return _json_response(status, {"error": message}, headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    hub: LoopbackHub

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (socket.getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "LoopbackHub/1.0"

    def setup(self) -> None:
        super().setup()
        self.hub = cast(_Server, self.server).hub
        self.conn_id = self.hub._open_connection(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.hub._close_connection(self.conn_id)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        hub = self.hub
        method = self.command.upper()
        target = self.path
        headers = Headers(list(self.headers.items()))
        record = RecordedRequest(method, target, headers, 0, self.conn_id)
        recorded = False
        try:
            body = self._read_body()
            for f in hub.faults.take(method, target, ("delay",)):
                if f.until is None:
                    time.sleep(f.delay)
                else:
                    f.until.wait(f.delay)
            if _speak_garbage(self, hub.faults, method, target):
                return
            status_faults = hub.faults.take(method, target, ("status",))
            if status_faults:
                f = status_faults[0]
                extra = [] if f.retry_after is None else [("Retry-After", str(f.retry_after))]
                if 300 <= f.status < 400:  # a redirect to the same target (once used up, it is served)
                    extra.append(("Location", target))
                resp = _error(f.status, None, f"injected fault: HTTP {f.status}", extra)
            else:
                try:
                    resp = hub._route(method, target, headers, body)
                except Exception as e:  # noqa: BLE001 - a hub bug must answer 500, not hang the client
                    resp = _error(500, None, f"loopback hub error: {type(e).__name__}: {e}")
            resp = _wire_fault(hub.faults, method, target, resp)
            body_faults: list[Fault] = []
            if method == "GET" and resp.status in (200, 206) and resp.body_length > 0:
                body_faults = hub.faults.take(method, target, ("cut", "corrupt", "stall"))
            record.status = resp.status
            # Logged before the body goes out, so whoever got the answer also sees the record.
            hub._record(record)
            recorded = True
            self._send(resp, method, body_faults, record)
        except OSError:  # client went away, timeout, or a source file vanished mid-stream
            self.close_connection = True
        finally:
            if not recorded:
                hub._record(record)

    def _send(self, resp: _Response, method: str, faults: list[Fault], record: RecordedRequest) -> None:
        self.send_response(resp.status)
        for k, v in resp.headers:
            self.send_header(k, v)
        length = resp.body_length
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if method == "HEAD" or length == 0:
            return
        cut_at: int | None = None
        corrupt_at: list[int] = []
        for f in faults:
            if f.kind == "cut":
                at = length // 2 if f.at_byte is None else f.at_byte
                cut_at = at if cut_at is None else min(cut_at, at)
            elif f.kind == "corrupt":
                corrupt_at.append(length // 2 if f.at_byte is None else min(max(f.at_byte, 0), length - 1))
        stalls = [(f.at_byte or 0, f.delay) for f in faults if f.kind == "stall"]
        rate = self.hub.rate_limit_per_connection
        chunk_size = CHUNK_SIZE if not rate else max(1024, min(CHUNK_SIZE, int(rate / 20)))
        t0 = time.monotonic()
        sent = 0
        for chunk in resp.iter_body(chunk_size):
            hits = [i - sent for i in corrupt_at if sent <= i < sent + len(chunk)]
            if hits:
                buf = bytearray(chunk)
                for i in hits:
                    buf[i] ^= 0xFF
                chunk = bytes(buf)
            if cut_at is not None and sent + len(chunk) >= cut_at:
                record.bytes_sent = cut_at
                self.wfile.write(chunk[: cut_at - sent])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_WR)
                return
            record.bytes_sent = sent + len(chunk)  # updated before the client can see the bytes
            self.wfile.write(chunk)
            sent += len(chunk)
            for at, delay in [s for s in stalls if sent >= s[0]]:
                self.wfile.flush()
                stalls.remove((at, delay))
                time.sleep(delay)
            if rate:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)


class LoopbackHub:
    """A Hugging Face Hub on 127.0.0.1 for tests. See the module docstring."""

    def __init__(self, *, port: int = 0) -> None:
        self.requests: list[RecordedRequest] = []
        self.faults = FaultPlan()
        self.required_token: str | None = None
        self.ignore_range = False
        self.tree_page_size = 1000
        self.rate_limit_per_connection: float | None = None
        self.reports_security = True  # False: a hub that answers no securityRepoStatus/securityFileStatus
        self.scans_done = True  # securityRepoStatus.scansDone
        self._security: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._port = port
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conn_ids = itertools.count(1)
        self._conns: dict[int, socket.socket] = {}

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> LoopbackHub:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.hub = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="loopback-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._lock:
            conns = list(self._conns.values())
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("LoopbackHub is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def modelscope_url(self) -> str:
        """What to put in MODELSCOPE_ENDPOINT (the same server: the ModelScope routes live under /api/v1)."""
        return self.url

    # ---- content ------------------------------------------------------------------------------

    def add_commit(
        self,
        repo_id: str,
        files: Sequence[HubFile] | Mapping[str, bytes],
        *,
        branch: str = DEFAULT_BRANCH,
        tags: Sequence[str] = (),
        repo_type: str = "model",
        message: str = "",
        inherit: bool = False,
    ) -> str:
        """Create a commit whose tree is exactly `files` (or the parent's tree updated with `files`
        when `inherit=True`), move `branch` to it, point `tags` at it, return its sha.

        The parent is the head of `branch`, or of `main` when `branch` is new.
        """
        _check_repo(repo_id, repo_type)
        items = [HubFile(p, data=d) for p, d in files.items()] if isinstance(files, Mapping) else list(files)
        infos = [FileInfo.from_hub_file(f) for f in items]  # hashing happens outside the lock
        with self._lock:
            repo = self._repos.setdefault((repo_type, repo_id), _Repo(repo_type, repo_id))
            parent = repo.branches.get(branch) or repo.branches.get(DEFAULT_BRANCH)
            tree: dict[str, FileInfo] = dict(repo.commits[parent].files) if inherit and parent else {}
            for info in infos:
                tree[info.path] = info
            h = hashlib.sha1(repo_id.encode())
            for path in sorted(tree):
                h.update(f"\n{path}\0{tree[path].oid}".encode())
            h.update(f"\nparent {parent or ''}".encode())
            sha = h.hexdigest()
            if sha not in repo.commits:
                date = datetime.now(UTC)
                repo.commits[sha] = _Commit(
                    sha, parent, tree, message or f"commit {len(repo.commits) + 1}", date
                )
            repo.branches[branch] = sha
            for tag in tags:
                repo.tags[tag] = sha
            return sha

    def add_folder(self, repo_id: str, folder: Path, **kw: Any) -> str:
        """Commit every file under `folder` (recursive, `.git` skipped) as HubFile(source=...)."""
        folder = Path(folder)
        files: list[HubFile] = []
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d != ".git")
            for name in sorted(names):
                full = Path(root) / name
                if full.is_file():
                    files.append(HubFile(full.relative_to(folder).as_posix(), source=full))
        return self.add_commit(repo_id, files, **kw)

    def add_tag(
        self, repo_id: str, tag: str, revision: str = DEFAULT_BRANCH, *, repo_type: str = "model"
    ) -> str:
        with self._lock:
            repo = self._get_repo(repo_id, repo_type)
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(f"unknown revision {revision!r} of {repo_id}")
            repo.tags[tag] = commit.sha
            return commit.sha

    def resolve(self, repo_id: str, revision: str = DEFAULT_BRANCH, *, repo_type: str = "model") -> str:
        """The commit sha a revision points to (KeyError if unknown)."""
        with self._lock:
            commit = self._get_repo(repo_id, repo_type).resolve(revision)
        if commit is None:
            raise KeyError(f"unknown revision {revision!r} of {repo_id}")
        return commit.sha

    def file_info(
        self, repo_id: str, path: str, revision: str = DEFAULT_BRANCH, *, repo_type: str = "model"
    ) -> FileInfo:
        """Size, sha256, git sha1, oid, etag, lfs flag of a file at a revision."""
        with self._lock:
            commit = self._get_repo(repo_id, repo_type).resolve(revision)
        if commit is None:
            raise KeyError(f"unknown revision {revision!r} of {repo_id}")
        return commit.files[path]

    def list_files(
        self, repo_id: str, revision: str = DEFAULT_BRANCH, *, repo_type: str = "model"
    ) -> list[str]:
        with self._lock:
            commit = self._get_repo(repo_id, repo_type).resolve(revision)
        if commit is None:
            raise KeyError(f"unknown revision {revision!r} of {repo_id}")
        return sorted(commit.files)

    def set_security(
        self,
        repo_id: str,
        path: str,
        *,
        status: str | None = "unsafe",
        pickle_imports: Sequence[tuple[str, str, str]] = (),
        virus: str | None = None,
        legacy: bool = False,
        repo_type: str = "model",
    ) -> None:
        """Give `path` (at every commit that has it) the hub's scan `status` ("safe", "unsafe", "caution",
        "suspicious", "queued", "unscanned", "error"; None: as never scanned), the globals its pickle imports
        as (module, name, safety: "innocuous" | "suspicious" | "dangerous") and the virus its antivirus found.
        The file's `securityFileStatus` takes the Hub's current shape (avScan/pickleImportScan with a `status`,
        a `message`, `pickleImports`), or with `legacy` the older one huggingface_hub documents
        (avScan {virusFound, virusNames}, pickleImportScan {highestSafetyLevel, imports})."""
        key = (repo_type, repo_id, path)
        with self._lock:
            if status is None:
                self._security.pop(key, None)
                return
            imports = [{"module": m, "name": n, "safety": f} for m, n, f in pickle_imports]
            order = ("innocuous", "suspicious", "dangerous")
            highest = max((i["safety"] for i in imports), key=order.index, default=None)
            if legacy:
                av: dict[str, Any] = {
                    "virusFound": virus is not None,
                    "virusNames": [virus] if virus else None,
                }
                pickle: dict[str, Any] | None = (
                    {"highestSafetyLevel": highest, "imports": imports} if imports else None
                )
            else:
                av = {"status": "unsafe", "message": virus} if virus else {"status": "safe"}
                level = {"innocuous": "safe", "suspicious": "suspicious", "dangerous": "unsafe"}
                pickle = (
                    {"status": level[highest or "innocuous"], "pickleImports": imports}
                    if imports
                    else {"status": "unscanned"}
                )
            self._security[key] = {"status": status, "avScan": av, "pickleImportScan": pickle}

    def _security_json(self, repo: _Repo, path: str) -> dict[str, Any]:
        """A file's `securityFileStatus`: what `set_security` gave it, else never scanned."""
        with self._lock:
            found = self._security.get((repo.repo_type, repo.repo_id, path))
        unscanned = {"status": "unscanned"}
        return found or {"status": "unscanned", "avScan": unscanned, "pickleImportScan": unscanned}

    def _repo_security_json(self, repo: _Repo, commit: _Commit) -> dict[str, Any]:
        """`securityRepoStatus`: the files of `commit` whose scan found an issue, with its level."""
        issues = []
        for path in sorted(commit.files):
            level = self._security_json(repo, path)["status"]
            if level not in ("safe", "unscanned", "queued", "error"):
                issues.append({"path": path, "level": level})
        return {"scansDone": self.scans_done, "filesWithIssues": issues}

    def _get_repo(self, repo_id: str, repo_type: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"unknown {repo_type} repo {repo_id!r}")
        return repo

    def file_url(
        self, repo_id: str, path: str, revision: str = DEFAULT_BRANCH, *, repo_type: str = "model"
    ) -> str:
        """The resolve url the client would use."""
        return (
            f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"
        )

    def modelscope_file_url(
        self, repo_id: str, path: str, revision: str = MS_DEFAULT_BRANCH, *, repo_type: str = "model"
    ) -> str:
        """The file url the modelscope client builds (`get_download_url`)."""
        return (
            f"{self.url}/api/v1/{repo_type}s/{repo_id}/repo"
            f"?Revision={quote_plus(revision)}&FilePath={quote_plus(path)}"
        )

    # ---- request log --------------------------------------------------------------------------

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(rec)

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def downloads(self) -> list[RecordedRequest]:
        """GET requests on file routes: HF `/resolve/` and ModelScope `/api/v1/{t}/{repo}/repo?...`."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and _is_file_route(r.path)]

    def modelscope_downloads(self) -> list[RecordedRequest]:
        """GET requests on the ModelScope file route only."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and _MS_FILE_RE.match(r.path.split("?")[0])]

    def add_fault(self, fault: Fault) -> Fault:
        return self.faults.add(fault)

    def _open_connection(self, sock: socket.socket) -> int:
        with self._lock:
            conn_id = next(self._conn_ids)
            self._conns[conn_id] = sock
            return conn_id

    def _close_connection(self, conn_id: int) -> None:
        with self._lock:
            self._conns.pop(conn_id, None)

    # ---- routing ------------------------------------------------------------------------------

    def _route(self, method: str, target: str, headers: Headers, body: bytes) -> _Response:
        first = target.partition("?")[0].lstrip("/").split("/", 2)
        if len(first) >= 2 and first[0] in ("api", "openapi") and first[1] == "v1":
            return self._route_modelscope(method, target, headers)
        if self.required_token is not None:
            auth = headers.get("authorization")
            if auth != f"Bearer {self.required_token}":
                msg = (
                    "Invalid username or password."
                    if auth is None
                    else "Invalid credentials in Authorization header"
                )
                return _error(401, "RepoNotFound" if auth is None else None, msg)
        raw_path, _, query_string = target.partition("?")
        query = {k: v[-1] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
        segs = raw_path.lstrip("/").split("/")
        if len(segs) >= 3 and segs[0] == "api" and segs[1] in _API_PLURAL:
            return self._route_api(
                method, _API_PLURAL[segs[1]], segs[1], segs[2:], raw_path, query, body, query_string
            )
        repo_type = "model"
        if segs[0] in ("datasets", "spaces") and len(segs) > 1:
            repo_type, segs = _API_PLURAL[segs[0]], segs[1:]
        found = self._split_repo(repo_type, segs, ("resolve",))
        if found is None or method not in ("GET", "HEAD"):
            return _error(404, None, "Not Found")
        repo, repo_id, _, tail = found
        if repo is None:
            return _error(404, "RepoNotFound", f"Repository {repo_id} not found")
        if len(tail) < 2:
            return _error(404, "EntryNotFound", "Entry not found")
        resolved = self._resolve_tail(repo, tail)
        if resolved is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {unquote(tail[0])}")
        commit, rest = resolved
        path = unquote("/".join(rest))
        info = commit.files.get(path)
        if info is None:
            return _error(404, "EntryNotFound", f"Entry not found: {path}", [("X-Repo-Commit", commit.sha)])
        return self._file_response(commit, info, headers)

    def _split_repo(
        self, repo_type: str, segs: list[str], keywords: Sequence[str]
    ) -> tuple[_Repo | None, str, str | None, list[str]] | None:
        """Split `org/name/<kw>/...` or `name/<kw>/...` (or a bare repo id when `None` is allowed)."""
        candidates: list[tuple[str, str | None, list[str]]] = []
        for n in (2, 1):
            if len(segs) > n and segs[n] and segs[n] in keywords:
                candidates.append(("/".join(unquote(s) for s in segs[:n]), segs[n], segs[n + 1 :]))
        if "" in keywords and len(segs) in (1, 2):
            candidates.append(("/".join(unquote(s) for s in segs), None, []))
        with self._lock:
            for repo_id, kw, tail in candidates:
                repo = self._repos.get((repo_type, repo_id))
                if repo is not None:
                    return repo, repo_id, kw, tail
        if not candidates:
            return None
        repo_id, kw, tail = candidates[0]
        return None, repo_id, kw, tail

    def _resolve_tail(self, repo: _Repo, tail: list[str]) -> tuple[_Commit, list[str]] | None:
        """Read the revision at the start of `tail` (url-quoted in one segment, or spanning several
        segments like refs/pr/1); return the commit and the remaining segments."""
        with self._lock:
            for k in range(1, len(tail) + 1):
                commit = repo.resolve("/".join(unquote(s) for s in tail[:k]))
                if commit is not None:
                    return commit, tail[k:]
        return None

    def _route_api(
        self,
        method: str,
        repo_type: str,
        plural: str,
        segs: list[str],
        raw_path: str,
        query: dict[str, str],
        body: bytes,
        raw_query: str = "",
    ) -> _Response:
        found = self._split_repo(repo_type, segs, ("revision", "tree", "refs", "paths-info", ""))
        if found is None:
            return _error(404, None, "Not Found")
        repo, repo_id, kw, tail = found
        if repo is None:
            return _error(404, "RepoNotFound", f"Repository {repo_id} not found")
        wanted = "POST" if kw == "paths-info" else "GET"
        if method not in (wanted, "HEAD") or (kw == "refs" and tail):
            return _error(404, None, "Not Found")
        if kw == "refs":
            return _json_response(200, self._refs_json(repo))
        if kw is None:
            tail = [quote(repo.default_revision(), safe="")]
        if not tail:
            return _error(404, "RevisionNotFound", "Invalid rev id: ")
        resolved = self._resolve_tail(repo, tail)
        if resolved is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {unquote('/'.join(tail))}")
        commit, rest = resolved
        if kw in (None, "revision"):
            if rest:
                return _error(404, None, "Not Found")
            blobs = query.get("blobs", "").lower() in ("1", "true")
            info = self._info_json(repo, commit, blobs)
            wanted_props = _query_list(raw_query, "expand")
            if self.reports_security and (
                query.get("securityStatus", "").lower() in ("1", "true")
                or "securityRepoStatus" in wanted_props
            ):
                info["securityRepoStatus"] = self._repo_security_json(repo, commit)
            if wanted_props:  # as the Hub: only the properties named (and the ids)
                info = {k: v for k, v in info.items() if k in ("_id", "id", *wanted_props)}
            return _json_response(200, info)
        expand = query.get("expand", "").lower() in ("1", "true")
        if kw == "paths-info":
            return self._paths_info(repo, commit, rest, body, expand)
        sub = unquote("/".join(rest)).strip("/")
        return self._tree(repo, commit, sub, raw_path, query, expand)

    # ---- JSON bodies --------------------------------------------------------------------------

    def _info_json(self, repo: _Repo, commit: _Commit, blobs: bool) -> dict[str, Any]:
        siblings: list[dict[str, Any]] = []
        for path in sorted(commit.files):
            info = commit.files[path]
            sib: dict[str, Any] = {"rfilename": path}
            if blobs:
                sib["size"] = info.size
                sib["blobId"] = info.oid
                if info.lfs:
                    sib["lfs"] = {"size": info.size, "sha256": info.sha256, "pointerSize": len(info.pointer)}
            siblings.append(sib)
        out: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
        }
        if repo.repo_type == "model":
            out["modelId"] = repo.repo_id
        if "/" in repo.repo_id:
            out["author"] = repo.repo_id.split("/", 1)[0]
        out.update(
            {
                "sha": commit.sha,
                "lastModified": _iso(commit.date),
                "createdAt": _iso(repo.created),
                "private": False,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "usedStorage": sum(f.size for f in commit.files.values()),
            }
        )
        return out

    def _refs_json(self, repo: _Repo) -> dict[str, Any]:
        with self._lock:
            branches = dict(repo.branches)
            tags = dict(repo.tags)
        out: dict[str, Any] = {"branches": [], "tags": [], "converts": [], "pullRequests": []}
        for name, sha in branches.items():
            if name.startswith("refs/pr/"):
                out["pullRequests"].append({"name": name, "ref": name, "targetCommit": sha})
            else:
                out["branches"].append({"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha})
        for name, sha in tags.items():
            out["tags"].append({"name": name, "ref": f"refs/tags/{name}", "targetCommit": sha})
        return out

    def _entry_json(self, repo: _Repo, commit: _Commit, path: str, expand: bool) -> dict[str, Any]:
        info = commit.files.get(path)
        entry: dict[str, Any]
        if info is not None:
            entry = {"type": "file", "oid": info.oid, "size": info.size, "path": path}
            if info.lfs:
                entry["lfs"] = {"oid": info.sha256, "size": info.size, "pointerSize": len(info.pointer)}
        else:
            entry = {"type": "directory", "oid": commit.dirs[path], "size": 0, "path": path}
        if expand:
            with self._lock:
                last = repo.last_commit_for(commit, path)
            entry["lastCommit"] = {"id": last.sha, "title": last.message, "date": _iso(last.date)}
            if info is not None and self.reports_security:
                entry["securityFileStatus"] = self._security_json(repo, path)
        return entry

    def _tree(
        self, repo: _Repo, commit: _Commit, sub: str, raw_path: str, query: dict[str, str], expand: bool
    ) -> _Response:
        if sub not in commit.dirs:
            return _error(404, "EntryNotFound", f"Entry not found: {sub}", [("X-Repo-Commit", commit.sha)])
        recursive = query.get("recursive", "").lower() in ("1", "true")
        prefix = f"{sub}/" if sub else ""
        paths = [p for p in list(commit.files) + list(commit.dirs) if p and p.startswith(prefix)]
        if not recursive:
            paths = [p for p in paths if _parent_dir(p) == sub]
        paths.sort()
        try:
            start = max(0, int(query.get("cursor") or 0))
        except ValueError:
            return _error(400, None, "Invalid cursor")
        size = max(1, int(self.tree_page_size))
        page = paths[start : start + size]
        headers: list[tuple[str, str]] = [("X-Repo-Commit", commit.sha)]
        if start + size < len(paths):
            next_query = {k: v for k, v in query.items() if k != "cursor"}
            next_query["cursor"] = str(start + size)
            headers.append(("Link", f'<{self.url}{raw_path}?{urlencode(next_query)}>; rel="next"'))
        return _json_response(200, [self._entry_json(repo, commit, p, expand) for p in page], headers)

    def _paths_info(
        self, repo: _Repo, commit: _Commit, rest: list[str], body: bytes, expand: bool
    ) -> _Response:
        if rest:
            return _error(404, None, "Not Found")
        paths: list[str] = []
        try:
            parsed = json.loads(body or b"{}")
            paths = list(parsed.get("paths", []))
            expand = expand or bool(parsed.get("expand"))
        except (ValueError, AttributeError):
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = expand or form.get("expand", ["false"])[-1].lower() in ("1", "true")
        out = []
        for p in paths:
            p = str(p).strip("/")
            if p and (p in commit.files or p in commit.dirs):
                out.append(self._entry_json(repo, commit, p, expand))
        return _json_response(200, out)

    def _file_response(
        self, commit: _Commit, info: FileInfo, headers: Headers, *, modelscope: bool = False
    ) -> _Response:
        resp_headers: list[tuple[str, str]] = [
            ("Content-Type", "application/octet-stream"),
            ("Accept-Ranges", "bytes"),
        ]
        if modelscope:
            name = info.path.rsplit("/", 1)[-1]
            resp_headers.append(("Content-Disposition", f"attachment; filename*=UTF-8''{quote(name)}"))
        else:
            resp_headers += [("X-Repo-Commit", commit.sha), ("ETag", f'"{info.etag}"')]
            if info.lfs:
                resp_headers += [("X-Linked-Etag", f'"{info.sha256}"'), ("X-Linked-Size", str(info.size))]
        size = info.size
        range_header = headers.get("range")
        if range_header and not self.ignore_range:
            m = _RANGE_RE.match(range_header.strip().replace(" ", ""))
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:  # suffix range: the last N bytes
                    start, end = max(0, size - int(m.group(2))), size - 1
                if start >= size or end < start:
                    return _Response(416, [*resp_headers, ("Content-Range", f"bytes */{size}")])
                resp_headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
                return _Response(206, resp_headers, file=info, start=start, length=end - start + 1)
        return _Response(200, resp_headers, file=info, start=0, length=size)

    # ---- ModelScope API ----------------------------------------------------------------------

    def _ms_authorized(self, headers: Headers) -> bool:
        """`Authorization: Bearer <token>` or the cookie `m_session_id=<token>` (modelscope sends both)."""
        token = self.required_token
        if token is None or headers.get("authorization") == f"Bearer {token}":
            return True
        jar: SimpleCookie = SimpleCookie()
        with contextlib.suppress(CookieError):
            jar.load(headers.get("cookie") or "")
        morsel = jar.get("m_session_id")
        return morsel is not None and morsel.value == token

    def _ms_resolve(self, repo: _Repo, revision: str) -> _Commit | None:
        """A revision as ModelScope sees it: `master` falls back to the HF default branch."""
        with self._lock:
            commit = repo.resolve(revision)
            if commit is None and revision == MS_DEFAULT_BRANCH and MS_DEFAULT_BRANCH not in repo.branches:
                commit = repo.resolve(repo.default_revision())
        return commit

    def _route_modelscope(self, method: str, target: str, headers: Headers) -> _Response:
        raw_path, _, query_string = target.partition("?")
        query = {k: v[-1] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
        segs = [unquote(s) for s in raw_path.strip("/").split("/")]
        if method not in ("GET", "HEAD"):
            return _ms_error(405, f"Method {method} not supported by the loopback hub")
        if segs[0] == "openapi":
            # The client falls back to the /api/v1 routes on a 404 ResourceNotFound.
            return _json_response(404, {"success": False, "code": "ResourceNotFound", "message": "Not Found"})
        if segs[2:] == ["repos", "internalAccelerationInfo"]:
            return _ms_json({"InternalRegionQueryAddress": ""})  # not inside Alibaba Cloud: no region
        if len(segs) < 5 or segs[2] not in _MS_PLURAL:
            return _ms_error(404, "Not Found")
        if not self._ms_authorized(headers):
            return _ms_error(401, "Unauthorized: missing or invalid token")
        repo_type, repo_id, rest = _MS_PLURAL[segs[2]], f"{segs[3]}/{segs[4]}", segs[5:]
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            return _ms_error(404, f"{repo_type.capitalize()} {repo_id} does not exist")
        if rest == ["revisions"]:
            return _ms_json({"RevisionMap": self._ms_revisions(repo)})
        if rest not in ([], ["repo"], ["repo", "files"], ["repo", "tree"]):
            return _ms_error(404, "Not Found")
        revision = query.get("Revision") or MS_DEFAULT_BRANCH
        commit = self._ms_resolve(repo, revision)
        if commit is None:
            return _ms_error(404, f"Revision {revision} of {repo_id} does not exist")
        if not rest:
            return _ms_json(self._ms_info(repo, commit, revision))
        if rest != ["repo"]:
            return self._ms_files(repo, commit, query)
        path = query.get("FilePath", "").strip("/")
        if not path:
            return _ms_error(400, "FilePath is required")
        info = commit.files.get(path)
        if info is None:
            return _ms_error(404, f"File {path} does not exist at revision {revision}")
        return self._file_response(commit, info, headers, modelscope=True)

    def _ms_revisions(self, repo: _Repo) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            branches = {k: v for k, v in repo.branches.items() if not k.startswith("refs/pr/")}
            tags = dict(repo.tags)
            if MS_DEFAULT_BRANCH not in branches and branches:
                alias = repo.resolve(repo.default_revision())
                if alias is not None:
                    branches = {MS_DEFAULT_BRANCH: alias.sha, **branches}
            commits = dict(repo.commits)

        def item(name: str, sha: str) -> dict[str, Any]:
            commit = commits[sha]
            return {
                "Revision": name,
                "CommitId": sha,
                "CreatedAt": int(commit.date.timestamp()),
                "CreatedBy": "loopback",
                "Description": commit.message,
            }

        return {
            "Branches": [item(n, sha) for n, sha in branches.items()],
            "Tags": [item(n, sha) for n, sha in tags.items()],
        }

    def _ms_info(self, repo: _Repo, commit: _Commit, revision: str) -> dict[str, Any]:
        owner, name = repo.repo_id.split("/", 1)
        return {
            "Id": int(hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:8], 16),
            "Name": name,
            "Path": owner,
            "ChineseName": "",
            "Description": "",
            "Visibility": 5,  # public
            "License": "",
            "Revision": revision,
            "CommitId": commit.sha,
            "CreatedTime": int(repo.created.timestamp()),
            "LastUpdatedTime": int(commit.date.timestamp()),
            "Downloads": 0,
            "Stars": 0,
            "Tags": [],
            "StorageSize": sum(f.size for f in commit.files.values()),
        }

    def _ms_files(self, repo: _Repo, commit: _Commit, query: dict[str, str]) -> _Response:
        root = query.get("Root", "").strip("/")
        if root and root not in commit.dirs:
            return _ms_error(404, f"Path {root} does not exist")
        recursive = query.get("Recursive", "").lower() in ("1", "true")
        prefix = f"{root}/" if root else ""
        paths = sorted(p for p in [*commit.files, *commit.dirs] if p and p.startswith(prefix))
        if not recursive:
            paths = [p for p in paths if _parent_dir(p) == root]
        if "PageNumber" in query or "PageSize" in query:
            try:
                number = max(1, int(query.get("PageNumber") or 1))
                size = max(1, int(query.get("PageSize") or 100))
            except ValueError:
                return _ms_error(400, "Invalid PageNumber or PageSize")
            paths = paths[(number - 1) * size : number * size]
        files: list[dict[str, Any]] = []
        for path in paths:
            with self._lock:
                last = repo.last_commit_for(commit, path)
            info = commit.files.get(path)
            entry: dict[str, Any] = {
                "Name": path.rsplit("/", 1)[-1],
                "Path": path,
                "Type": "blob" if info is not None else "tree",
                "Size": info.size if info is not None else 0,
                "Sha256": info.sha256 if info is not None else "",
                "IsLFS": bool(info is not None and info.lfs),
                "Mode": "100644" if info is not None else "040000",
                "Id": commit.entry_oid(path),
                "Revision": commit.sha,
                "CommitId": last.sha,
                "CommitMessage": last.message,
                "CommittedDate": int(last.date.timestamp()),
                "CommitterName": "loopback",
            }
            files.append(entry)
        return _ms_json({"Files": files})


def _ms_json(data: Any) -> _Response:
    body = {"Code": 200, "Success": True, "Message": "success", "RequestId": uuid.uuid4().hex, "Data": data}
    return _json_response(200, body)


def _ms_error(status: int, message: str) -> _Response:
    body = {"Code": status, "Success": False, "Message": message, "RequestId": uuid.uuid4().hex, "Data": None}
    return _json_response(status, body)


def _is_file_route(target: str) -> bool:
    raw = target.split("?")[0]
    return "/resolve/" in raw or bool(_MS_FILE_RE.match(raw))


def _check_repo(repo_id: str, repo_type: str) -> None:
    if repo_type not in _URL_PREFIX:
        raise ValueError(f"repo_type must be one of {sorted(_URL_PREFIX)}, not {repo_type!r}")
    parts = repo_id.split("/")
    if not 1 <= len(parts) <= 2 or any(not p or p in (".", "..") for p in parts):
        raise ValueError(f"invalid repo id {repo_id!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hub", description="Serve a folder as a Hub repo.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("repo_id")
    parser.add_argument("--repo-type", default="model", choices=sorted(_URL_PREFIX))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=None, help="require this bearer token")
    parser.add_argument("--tag", action="append", default=[], help="tag the commit (repeatable)")
    args = parser.parse_args(argv)
    hub = LoopbackHub(port=args.port)
    hub.required_token = args.token
    sha = hub.add_folder(args.repo_id, args.folder, repo_type=args.repo_type, tags=args.tag)
    hub.start()
    print(hub.url, flush=True)
    print(f"serving {args.folder} as {args.repo_type} {args.repo_id} @ {sha}; Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
