"""`mirror serve`'s own machinery: the token file, the gate (401 in the clients' shapes, the path check, the
access log), and the server as a subprocess (tokens, traversal over raw sockets, SIGTERM mid-download,
two workers, the address in use, what it refuses to serve)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from mirror.cli import cli, main
from mirror.clock import SYSTEM, iso
from mirror.errors import UsageError
from mirror.serve.audit import AccessLog
from mirror.serve.gate import BAD_TOKEN, NO_TOKEN, Gate, refusal
from mirror.serve.tokens import parse_tokens, read_tokens
from mirror.store import Store
from tests.asgi import call
from tests.clocks import FakeClock
from tests.conftest import put_repo
from tests.serving import Served, served
from tests.waiting import wait_until

ALICE, BOB = "alice-Secret-1f3a9c", "bob.Secret_77e0"
TOKEN_FILE = f"# who may read\n\nalice:{ALICE}\n  bob : {BOB}  \n"


# the token file ---------------------------------------------------------------------------------------------
def test_a_token_file_names_each_token() -> None:
    tokens = parse_tokens(TOKEN_FILE, "tokens.txt")
    assert [name for name, _ in tokens.entries] == ["alice", "bob"]
    assert tokens.name_of(ALICE) == "alice"
    assert tokens.name_of(BOB) == "bob"
    assert tokens.name_of(ALICE + "x") is None
    assert ALICE.encode() not in repr(tokens).encode()  # only digests are held


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("alice:a1\nno colon here\n", 2, "not a NAME:TOKEN line"),
        (":a1\n", 1, "not a NAME:TOKEN line"),
        ("al ice:a1\n", 1, "not a NAME:TOKEN line"),
        ("-alice:a1\n", 1, "not a NAME:TOKEN line"),
        ("alice:\n", 1, "is empty"),
        ("alice:   \n", 1, "is empty"),
        ("alice:two words\n", 1, "not a token a client can send"),
        ("alice:semi;colon\n", 1, "not a token a client can send"),
        ("alice:a1\n# c\nalice:b2\n", 3, "given already on line 1"),
        ("alice:a1\nbob:a1\n", 2, "the token of line 1"),
    ],
)
def test_a_bad_token_file_line_is_named_never_quoted(text: str, line: int, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_tokens(text, "/etc/mirror/tokens")
    message = str(caught.value)
    assert message.startswith(f"/etc/mirror/tokens:{line}: ")
    assert says in message
    for secret in ("a1", "b2", "two words", "semi;colon"):
        assert secret not in message


def test_a_token_file_without_tokens_or_unreadable_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no NAME:TOKEN line"):
        parse_tokens("# nobody\n\n", "t")
    with pytest.raises(UsageError, match=r"cannot read the token file .*missing"):
        read_tokens(tmp_path / "missing")
    (tmp_path / "latin").write_bytes(b"alice:\xff\xfe\n")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_tokens(tmp_path / "latin")


def test_a_request_presents_its_token_as_bearer_or_as_modelscope_cookie() -> None:
    tokens = parse_tokens(TOKEN_FILE, "t")
    assert tokens.identify(f"Bearer {ALICE}", None) == "alice"
    assert tokens.identify(f"bearer  {BOB}", None) == "bob"
    assert tokens.identify(None, f"other=1; m_session_id={BOB}") == "bob"
    assert tokens.identify("Bearer wrong", f"m_session_id={ALICE}") == "alice"
    assert tokens.identify(f"Basic {ALICE}", None) is None
    assert tokens.identify(None, f"session={ALICE}") is None
    assert tokens.identify(None, None) is None


# the path check ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        b"/org/name/resolve/main/../../../etc/passwd",
        b"/org/name/resolve/main/./config.json",
        b"/org/name/resolve/main/%2e%2e/%2E%2E/etc/passwd",
        b"/org/name/resolve/main/..%2f..%2fetc%2fpasswd",
        b"/org/name/resolve/main%2F..%2F..%2Fsecret",
        b"/org/name/resolve/main/%252e%252e/x",
        b"/org/name/resolve/main//etc/passwd",
        b"//etc/passwd",
        b"/org/name/resolve/main/%2Fetc%2Fpasswd",
        b"/org/name/resolve/main/a%00.json",
        b"/org/name/resolve/main/a\\..\\b",
        b"/org/name/resolve/main/a%5c..%5Cb",
        b"*",
    ],
)
def test_paths_that_could_leave_the_store_are_refused(raw: bytes) -> None:
    assert refusal(raw, b"") is not None


@pytest.mark.parametrize(
    "query", [b"FilePath=../../etc/passwd", b"FilePath=%2e%2e%2Fx", b"Revision=a%00b", b"FilePath=a%5Cb"]
)
def test_query_values_that_could_leave_the_store_are_refused(query: bytes) -> None:
    assert refusal(b"/api/v1/models/org/name/repo", query) is not None


@pytest.mark.parametrize(
    ("raw", "query"),
    [
        (b"/", b""),
        (b"/api/models/org/name/revision/refs%2Fpr%2F1", b""),
        (b"/org/name/resolve/main/sub/dir/weights.bin", b""),
        (b"/api/models/org/name/tree/main/", b"recursive=true&cursor=abc%3D%3D"),
        (b"/org/name/resolve/v1.0/a..b/..c/d..", b""),
        (b"/org/name/resolve/main/100%25.txt", b""),
        (b"/org/name/resolve/main/caf%C3%A9%20menu.json", b""),
        (b"/api/v1/models/org/name/repo", b"Revision=master&FilePath=sub%2Fdir%2Fweights.bin"),
    ],
)
def test_the_paths_clients_send_pass(raw: bytes, query: bytes) -> None:
    assert refusal(raw, query) is None


# the gate, in process ---------------------------------------------------------------------------------------
@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(b"0123456789" * 1000)
    return path


def gated(blob: Path, clock: FakeClock, log: Path | None = None) -> Gate:
    """A gate in front of two routes: a file sent by path (taking 2.5 s) and a text."""

    async def file(request: Request) -> Response:
        request.state.repo, request.state.revision = "huggingface:org/tiny", "main"
        request.state.path = "sub/weights.bin"
        clock.now += 2.5
        return FileResponse(blob)

    async def text(request: Request) -> Response:
        return PlainTextResponse("hello")

    app = Starlette(
        routes=[Route("/org/tiny/resolve/main/sub/weights.bin", file), Route("/{rest:path}", text)]
    )
    tokens = parse_tokens(TOKEN_FILE, "t")
    return Gate(app, clock=clock.clock, tokens=tokens, access_log=AccessLog(log) if log else None)


def test_without_a_token_the_gate_answers_401_as_the_hub(blob: Path) -> None:
    gate = gated(blob, FakeClock())
    answer = call(gate, "GET", "/api/models/org/tiny")
    head = answer.headers
    assert (answer.status, head["x-error-code"], head["x-error-message"]) == (401, "RepoNotFound", NO_TOKEN)
    assert answer.json() == {"error": NO_TOKEN}
    answer = call(gate, "GET", "/api/models/org/tiny", {"Authorization": "Bearer nope"})
    head = answer.headers
    assert (answer.status, head["x-error-message"], "x-error-code" in head) == (401, BAD_TOKEN, False)
    assert answer.json() == {"error": BAD_TOKEN}
    assert call(gate, "GET", "/api/models/org/tiny", {"Authorization": f"Bearer {ALICE}"}).status == 200
    assert call(gate, "GET", "/api/models/org/tiny", {"Cookie": f"m_session_id={BOB}"}).status == 200


def test_on_modelscope_paths_the_gate_answers_in_modelscope_envelope(blob: Path) -> None:
    gate = gated(blob, FakeClock())
    answer = call(gate, "GET", "/api/v1/models/org/tiny/revisions", {"Cookie": "m_session_id=nope"})
    data = answer.json()
    assert (answer.status, data["Code"], data["Success"], data["Data"]) == (401, 401, False, None)
    answer = call(
        gate, "GET", "/api/v1/models/org/tiny/repo?FilePath=../x", {"Cookie": f"m_session_id={BOB}"}
    )
    assert (answer.status, answer.json()["Success"]) == (400, False)


def test_an_unsafe_path_gets_400_before_any_route(blob: Path) -> None:
    gate = gated(blob, FakeClock())
    answer = call(gate, "GET", "/org/tiny/resolve/main/%2e%2e/x", {"Authorization": f"Bearer {ALICE}"})
    assert answer.status == 400
    assert "error" in answer.json() and answer.headers["x-error-message"].startswith("Invalid path")


def test_the_access_log_has_a_line_per_request_with_the_token_name(blob: Path, tmp_path: Path) -> None:
    log, clock = tmp_path / "access.jsonl", FakeClock()
    start = clock.now
    gate = gated(blob, clock, log)
    weights = "/org/tiny/resolve/main/sub/weights.bin"
    call(gate, "GET", weights, {"Authorization": f"Bearer {ALICE}"}, pathsend=True)
    call(gate, "GET", "/api/models/org/tiny?expand=sha", {"Authorization": f"Bearer {BOB}x"})
    call(gate, "HEAD", weights, {"Cookie": f"m_session_id={BOB}"}, pathsend=True)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0] == {
        "time": iso(start),
        "client": "127.0.0.1",
        "token": "alice",
        "method": "GET",
        "target": "/org/tiny/resolve/main/sub/weights.bin",
        "repo": "huggingface:org/tiny",
        "revision": "main",
        "path": "sub/weights.bin",
        "status": 200,
        "bytes": 10_000,  # sent by path: the file's size
        "duration": 2.5,
    }
    assert lines[1] | {"bytes": 0} == {
        "time": iso(start + 2.5),
        "client": "127.0.0.1",
        "token": None,
        "method": "GET",
        "target": "/api/models/org/tiny?expand=sha",
        "repo": None,
        "revision": None,
        "path": None,
        "status": 401,
        "bytes": 0,
        "duration": 0.0,
    }
    assert lines[1]["bytes"] == len(json.dumps({"error": BAD_TOKEN}, separators=(",", ":")))
    assert (lines[2]["method"], lines[2]["token"], lines[2]["status"], lines[2]["bytes"]) == (
        "HEAD",
        "bob",
        200,
        0,
    )
    assert ALICE not in log.read_text() and BOB not in log.read_text()


def test_an_access_log_that_cannot_be_opened_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot open the access log"):
        AccessLog(tmp_path / "no" / "such" / "folder" / "access.jsonl")


# the command, in process (each fails before anything listens; the port given is taken besides) -----------
@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_help_names_every_option() -> None:
    text = CliRunner().invoke(cli, ["serve", "--help"]).output
    for option in ("--store", "--host", "--port", "--workers", "--token-file", "--access-log", "--grace"):
        assert option in text
    assert "HF_ENDPOINT" in text and "MODELSCOPE_ENDPOINT" in text


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as caught:
        main(args)
    return int(caught.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "file", "foreign"])
def test_a_folder_that_is_not_a_store_exits_2(
    case: str, tmp_path: Path, taken_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    if case == "file":
        root.write_text("x")
    elif case == "foreign":
        (root / "models--org--name").mkdir(parents=True)
    code, err = run_main(["serve", "--store", str(root), "--port", str(taken_port)], capsys)
    assert code == 2
    assert str(root) in err
    assert ("is a file" if case == "file" else f"cannot serve the store {root}") in err


def test_a_bad_token_file_exits_2_naming_file_and_line(
    tmp_path: Path, taken_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "store").mkdir()
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{ALICE}\nbob {BOB}\n")
    args = [
        "serve",
        "--store",
        str(tmp_path / "store"),
        "--port",
        str(taken_port),
        "--token-file",
        str(tokens),
    ]
    code, err = run_main(args, capsys)
    assert code == 2
    assert f"{tokens}:2: not a NAME:TOKEN line" in err
    assert ALICE not in err and BOB not in err


def test_the_address_in_use_exits_1_naming_it(
    tmp_path: Path, taken_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "store").mkdir()  # an empty folder: a new store, served empty
    code, err = run_main(["serve", "--store", str(tmp_path / "store"), "--port", str(taken_port)], capsys)
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{taken_port}" in err


# the server, as a subprocess --------------------------------------------------------------------------------
BIG = 48 * 1024 * 1024  # larger than what socket buffers hold: a download of it is in flight for a while


def big_content() -> bytes:
    return hashlib.sha256(b"seed").digest() * (BIG // 32)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served") / "store"
    store = Store.at(root, clock=SYSTEM)
    put_repo(
        store, "org/tiny", {"main": {"config.json": b'{"model_type": "bert"}\n', "big.bin": big_content()}}
    )
    return root


@pytest.fixture(scope="module")
def guarded(store_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the module: a token file and an access log."""
    folder = tmp_path_factory.mktemp("guarded")
    (folder / "tokens").write_text(TOKEN_FILE)
    args = ("--token-file", str(folder / "tokens"), "--access-log", str(folder / "access.jsonl"))
    with served(store_root, *args) as server:
        yield server


def raw_request(
    port: int, target: bytes, headers: dict[str, str] | None = None, method: bytes = b"GET"
) -> tuple[int, bytes]:
    """One request written byte for byte on a socket (no client normalises the target): status, body."""
    head = b"".join(f"{k}: {v}\r\n".encode() for k, v in (headers or {}).items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            method + b" " + target + b" HTTP/1.1\r\nHost: mirror\r\nConnection: close\r\n" + head + b"\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.e2e
def test_the_server_answers_only_requests_with_a_token(guarded: Served) -> None:
    target = b"/org/tiny/resolve/main/config.json"
    assert raw_request(guarded.port, target)[0] == 401
    assert raw_request(guarded.port, target, {"Authorization": "Bearer not-a-token"})[0] == 401
    assert raw_request(guarded.port, target, {"Authorization": f"Bearer {ALICE}"}) == (
        200,
        b'{"model_type": "bert"}\n',
    )
    assert raw_request(guarded.port, target, {"Cookie": f"m_session_id={BOB}"})[0] == 200
    status, body = raw_request(guarded.port, b"/api/v1/models/org/tiny/revisions")
    assert (status, json.loads(body)["Success"]) == (401, False)


TRAVERSALS = [
    b"/org/tiny/resolve/main/../../../../etc/passwd",
    b"/org/tiny/resolve/main/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    b"/org/tiny/resolve/main/..%2F..%2F..%2Fetc%2Fpasswd",
    b"/org/tiny/resolve/main/%252e%252e/%252e%252e/etc/passwd",
    b"/org/tiny/resolve/main//etc/passwd",
    b"/org/tiny/resolve/main/%2Fetc%2Fpasswd",
    b"/org/tiny/resolve/main/config.json%00.txt",
    b"/org/tiny/resolve/main/..\\..\\etc\\passwd",
    b"/org/tiny/resolve/main/%5C..%5C..%5Cetc%5Cpasswd",
    b"/api/v1/models/org/tiny/repo?Revision=master&FilePath=../../../etc/passwd",
]


@pytest.mark.e2e
def test_traversal_urls_are_refused(guarded: Served) -> None:
    auth = {"Authorization": f"Bearer {ALICE}"}
    for target in TRAVERSALS:
        status, body = raw_request(guarded.port, target, auth)
        assert status == 400, target
        assert b"root:" not in body
    status, _ = raw_request(guarded.port, b"/org/tiny/resolve/main/con\x00fig.json", auth)
    assert status == 400  # a raw NUL: granian's parser refuses it before the application
    assert raw_request(guarded.port, b"/org/tiny/resolve/main/config.json", auth)[0] == 200


@pytest.mark.e2e
def test_the_access_log_names_tokens_never_quotes_them(guarded: Served) -> None:
    assert guarded.access_log is not None
    before = len(guarded.access_log.read_text().splitlines()) if guarded.access_log.exists() else 0
    auth = {"Authorization": f"Bearer {BOB}"}
    raw_request(guarded.port, b"/org/tiny/resolve/main/config.json", auth)
    raw_request(guarded.port, b"/org/tiny/resolve/main/config.json", auth, method=b"HEAD")
    raw_request(guarded.port, b"/org/tiny/resolve/main/config.json", {"Authorization": f"Bearer {ALICE}-0"})
    expected = [("GET", "bob", 200), ("HEAD", "bob", 200), ("GET", None, 401)]

    def ours() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in guarded.access_log.read_text().splitlines()[before:]]  # type: ignore[union-attr]
        return [line for line in lines if line["target"] == "/org/tiny/resolve/main/config.json"][-3:]

    # each line is written once its answer is sent: the last one may be a moment behind the client, and
    # an earlier test's last line may come after `before` was counted
    wait_until(lambda: [(g["method"], g["token"], g["status"]) for g in ours()] == expected)
    text = guarded.access_log.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    fields = {
        "time",
        "client",
        "token",
        "method",
        "target",
        "repo",
        "revision",
        "path",
        "status",
        "bytes",
        "duration",
    }
    assert all(set(line) == fields for line in lines)
    got = ours()
    assert [(g["method"], g["token"], g["status"]) for g in got] == expected
    assert (got[0]["revision"], got[0]["path"], got[0]["bytes"], got[0]["client"]) == (
        "main",
        "config.json",
        23,
        "127.0.0.1",
    )
    assert "org/tiny" in got[0]["repo"]
    assert all(isinstance(g["duration"], float) and g["duration"] >= 0 for g in got)
    assert all(g["time"].endswith("Z") for g in got)
    for secret in (ALICE, BOB):
        assert secret not in text and secret not in guarded.stderr()


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (granian's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    """The process has exited and been reaped (no zombie left)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state == "X"


def serving_process(port: int, pids: list[int]) -> dict[int, int]:
    """For each client port connected to the server's `port`, the pid of the process holding its socket."""
    inodes: dict[int, int] = {}  # socket inode -> client port
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if int(local.split(":")[1], 16) == port and fields[3] == "01":  # ESTABLISHED
            inodes[inode] = int(remote.split(":")[1], 16)
    owner: dict[int, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                owner[inodes[int(link[8:-1])]] = pid
    return owner


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.e2e
def test_two_workers_share_the_port_stay_light_and_stop_on_sigint(store_root: Path) -> None:
    with served(store_root, "--workers", "2") as server:
        workers = children(server.proc.pid)
        assert len(workers) == 2
        answered: set[int] = set()
        for _ in range(20):  # rounds of 8 connections, until both workers have answered one
            connections = []
            for _ in range(8):
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                conn.request("GET", "/org/tiny/resolve/main/config.json")
                assert conn.getresponse().read() == b'{"model_type": "bert"}\n'
                connections.append(conn)
            owners = serving_process(server.port, workers)
            ours = [owners.get(conn.sock.getsockname()[1]) for conn in connections]
            assert set(ours) <= set(workers)  # each connection held by a worker
            answered |= set(ours)
            for conn in connections:
                conn.close()
            if answered == set(workers):
                break
        assert answered == set(workers)  # both workers answered
        for pid in [server.proc.pid, *workers]:
            assert rss_mb(pid) < 200, f"RSS of {pid}: {rss_mb(pid):.0f} MB"
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(30) == 0
    for pid in workers:
        assert wait_until(lambda pid=pid: gone(pid)), f"worker {pid} left behind"


def start_download(port: int) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/org/tiny/resolve/main/big.bin")
    response = conn.getresponse()
    assert response.status == 200 and int(response.headers["Content-Length"]) == BIG
    return response, response.read(1024 * 1024)


def read_rest(response: http.client.HTTPResponse, got: bytes) -> bytes:
    """The body read to its end, or to where the server cut it (then shorter than its Content-Length)."""
    try:
        while chunk := response.read1(1 << 20):
            got += chunk
    except (ConnectionResetError, http.client.IncompleteRead) as e:
        got += getattr(e, "partial", b"")
    return got


@pytest.mark.e2e
def test_sigterm_mid_download_finishes_or_cuts_cleanly(store_root: Path) -> None:
    content = big_content()
    with served(store_root, "--workers", "2", "--grace", "2") as server:
        workers = children(server.proc.pid)
        steady, steady_got = start_download(server.port)
        stalled, stalled_got = start_download(server.port)
        server.proc.send_signal(signal.SIGTERM)
        finished: list[bytes] = []
        reader = threading.Thread(target=lambda: finished.append(read_rest(steady, steady_got)))
        reader.start()
        # the stalled client reads nothing more: after the grace, its download is cut and the server exits
        assert server.proc.wait(30) == 0
        reader.join(30)
        assert finished == [content]  # the download in flight finished whole
        cut = read_rest(stalled, stalled_got)
        assert len(cut) < BIG and cut == content[: len(cut)]  # a clean cut: fewer bytes, none wrong
    for pid in workers:
        assert wait_until(lambda pid=pid: gone(pid)), f"worker {pid} left behind"


@pytest.mark.e2e
def test_the_serve_package_imports_no_hub_client() -> None:
    code = (
        "import sys, mirror.cli, mirror.serve.server\n"
        "heavy = ('huggingface_hub', 'modelscope', 'modelscope_hub', 'torch', 'requests', 'httpx')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in heavy or m == 'mirror.http'"
        " or m.startswith('mirror.sources')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.e2e
def test_the_address_in_use_stops_a_second_server(store_root: Path) -> None:
    with served(store_root) as first:
        run = subprocess.run(
            [sys.executable, "-m", "mirror", "serve", "--store", str(store_root), "--port", str(first.port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 1
    assert f"127.0.0.1:{first.port}" in run.stderr
