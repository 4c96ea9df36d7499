"""`served(store_root, *extra_args)`: the installed `mirror serve` over a store (a folder, or an s3:// URL
with `env` giving the AWS settings), in a subprocess, for the tests of the server and of the clients that
use it (mark them `pytest.mark.e2e`).

    with served(store_root) as server:
        urlopen(server.url + "/api/models/org/name")

It starts `python -m mirror serve --store ROOT --host 127.0.0.1 --port FREE ...` (the running venv's
`mirror`), waits until `GET /` answers 200 (failing with the server's stderr if it exits first or is not
ready in time), and on exit sends SIGTERM and waits for the server to stop (SIGKILL after a bound, and the
test fails). `extra_args` go to `mirror serve` as given (`--workers 2`, `--token-file F`, `--access-log F`);
with `--token-file`, the readiness check sends the file's first token; `access_log` is the path given after
`--access-log`, if any. `env` replaces the environment of the server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

READY_WITHIN = 30.0  # seconds for the server to answer GET / (a loaded CI machine starts slowly)
STOP_WITHIN = 30.0  # seconds for the server to exit after SIGTERM


@dataclass
class Served:
    url: str  # http://127.0.0.1:PORT, no trailing slash
    port: int
    proc: subprocess.Popen[bytes]
    stderr_path: Path  # the server's stderr, while it runs
    access_log: Path | None = None
    final_stderr: str | None = None  # the whole of it, once stopped

    def stderr(self) -> str:
        """The server's stderr so far (all of it after the `served` block)."""
        if self.final_stderr is not None:
            return self.final_stderr
        return self.stderr_path.read_text(errors="replace")


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ready(url: str, token: str | None) -> bool:
    request = urllib.request.Request(url + "/", headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            status: int = response.status
            return status == 200
    except (urllib.error.URLError, OSError):
        return False


def _option(args: tuple[str, ...], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.partition("=")[2]
    return None


def first_token(token_file: str | None) -> str | None:
    """The first token of a token file (the fixture asks `GET /` with it)."""
    if token_file is None:
        return None
    for line in Path(token_file).read_text().splitlines():
        if line.strip() and not line.strip().startswith("#") and ":" in line:
            return line.partition(":")[2].strip()
    return None


def start(store_root: Path | str, *extra_args: str, env: Mapping[str, str] | None = None) -> Served:
    """Start `mirror serve` and wait until it is ready; `stop` it (or use `served`). A port taken by
    someone else between the choice and the bind is given up for another one."""
    for attempt in range(3):
        server = _launch(store_root, extra_args, env)
        deadline = time.monotonic() + READY_WITHIN
        token = first_token(_option(extra_args, "--token-file"))
        while not _ready(server.url, token):
            if server.proc.poll() is not None or time.monotonic() > deadline:
                exited = server.proc.poll() is not None
                stop(server)
                text = server.stderr()
                server.stderr_path.unlink(missing_ok=True)
                if exited and "cannot listen on" in text and attempt < 2:
                    break  # the port was taken meanwhile: another one
                why = f"exited with {server.proc.returncode}" if exited else "not ready in time"
                raise AssertionError(f"mirror serve {why}; its stderr:\n{text}")
            time.sleep(0.05)
        else:
            return server
    raise AssertionError("unreachable")


def _launch(store_root: Path | str, extra_args: tuple[str, ...], env: Mapping[str, str] | None) -> Served:
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="mirror-serve-", suffix=".stderr", delete=False)  # noqa: SIM115
    cmd = [sys.executable, "-m", "mirror", "serve", "--store", str(store_root), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), *extra_args]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=dict(env) if env is not None else None,
        start_new_session=True,  # its own process group: a server that hangs is killed with its workers
    )
    log.close()
    access_log = _option(extra_args, "--access-log")
    return Served(
        f"http://127.0.0.1:{port}", port, proc, Path(log.name), Path(access_log) if access_log else None
    )


def stop(server: Served) -> int:
    """SIGTERM, then wait for the exit (SIGKILL and fail past STOP_WITHIN); the exit code."""
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_WITHIN)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the server and its workers
            proc.wait()
            raise AssertionError(
                f"mirror serve did not stop on SIGTERM; its stderr:\n{server.stderr()}"
            ) from None
    return proc.returncode


@contextmanager
def served(
    store_root: Path | str, *extra_args: str, env: Mapping[str, str] | None = None
) -> Iterator[Served]:
    """`mirror serve` over `store_root` for the time of the block (see the module's docstring)."""
    server = start(store_root, *extra_args, env=env)
    try:
        yield server
    finally:
        try:
            stop(server)
        finally:
            server.final_stderr = server.stderr()
            server.stderr_path.unlink(missing_ok=True)
