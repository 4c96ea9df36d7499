"""The servers of the serve figures, started by the bench as child processes on 127.0.0.1: `mirror serve`,
Debian's nginx (with a config generated into a temp folder) and the project's loopback hub; and what is
measured of them while they serve: the peak RSS and the CPU time of the whole process tree, sampled from
/proc (a server's workers are its children, and it runs until the bench stops it, so `wait4` cannot
report it the way childrss.py does for a command).

Every server is started in its own session and, whatever happens, killed with its process group when
its `with` block ends.
"""

from __future__ import annotations

import contextlib
import grp
import http.client
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.measure import BenchError

NGINX = Path("/usr/sbin/nginx")
NGINX_MISSING = "nginx not installed (make system-deps)"
READY_TIMEOUT = 120.0  # seconds for a server to answer its first request (the loopback hub hashes its files)
SAMPLE_EVERY = 0.1  # seconds between two samples of a server's process tree
NGINX_TEMPS = (
    "client_body",
    "proxy",
    "fastcgi",
    "uwsgi",
    "scgi",
)  # nginx's temp folders, all under its prefix


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_config(prefix: Path, root: Path, port: int, workers: int, *, euid: int | None = None) -> str:
    """An nginx.conf serving `root` as static files on 127.0.0.1:`port` with sendfile, keeping its pid,
    logs and temp files under `prefix`. Run as root, its workers run as the bench's own user (nginx's
    default, nobody, may not read the bench's files); run as anyone else, nginx keeps the user it has and
    the `user` directive would only warn, so it is left out."""
    euid = os.geteuid() if euid is None else euid
    user = ""
    if euid == 0:
        user = f"user {pwd.getpwuid(euid).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"
    temps = "".join(f"    {name}_temp_path {prefix / 'temp' / name};\n" for name in NGINX_TEMPS)
    return (
        f"{user}"
        "daemon off;\n"
        "master_process on;\n"
        f"worker_processes {workers};\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} warn;\n"
        "events {\n    worker_connections 1024;\n}\n"
        "http {\n"
        "    access_log off;\n"
        f"{temps}"
        "    default_type application/octet-stream;\n"
        "    sendfile on;\n"
        "    tcp_nopush on;\n"
        "    keepalive_timeout 65;\n"
        "    keepalive_requests 10000;\n"
        "    server {\n"
        f"        listen 127.0.0.1:{port};\n"
        f"        root {root};\n"
        "    }\n"
        "}\n"
    )


# ---- process trees -------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """`pid` and every descendant alive now."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def _memory_and_cpu(pid: int) -> tuple[int, int, float]:
    """Resident bytes, proportional bytes (shared pages divided among the processes sharing them) and CPU
    seconds (user + system, with the children it reaped) of one process."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime (fields 14-17 of stat)
    return rss, pss, ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class TreeSample:
    rss: int  # the sum of the tree's resident memory (pages shared by its processes counted in each)
    pss: int  # the sum of their proportional set sizes: what the tree really holds
    largest: int  # the RSS of its largest process
    cpu: float  # CPU seconds of the tree so far
    processes: int


def sample_tree(pid: int) -> TreeSample:
    total = pss = largest = 0
    cpu = 0.0
    pids = _tree(pid)
    for p in pids:
        try:
            rss, proportional, seconds = _memory_and_cpu(p)
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone between the listing and the read
        total += rss
        pss += proportional
        largest = max(largest, rss)
        cpu += seconds
    return TreeSample(total, pss, largest, cpu, len(pids))


class TreeWatch:
    """Samples a process tree in a thread, keeping the peaks (for the span of its `with` block)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.first = sample_tree(pid)
        self.peak_rss = self.first.rss
        self.peak_pss = self.first.pss
        self.peak_largest = self.first.largest
        self.last = self.first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-watch", daemon=True)

    def _take(self) -> None:
        s = sample_tree(self.pid)
        self.peak_rss = max(self.peak_rss, s.rss)
        self.peak_pss = max(self.peak_pss, s.pss)
        self.peak_largest = max(self.peak_largest, s.largest)
        self.last = s

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self._take()

    def __enter__(self) -> TreeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take()

    @property
    def cpu(self) -> float:
        """CPU seconds the tree used while watched."""
        return self.last.cpu - self.first.cpu


# ---- running servers -----------------------------------------------------------------------------


@dataclass
class Server:
    """A server the bench started: its URL, its process (the root of its tree) and its log."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def watch(self) -> TreeWatch:
        return TreeWatch(self.proc.pid)


def _answers(url: str, path: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL if it is still there after 10 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers left behind by a master that died first
    proc.wait()


@contextlib.contextmanager
def serving(
    name: str, cmd: Sequence[str], port: int, ready_path: str, *, env: dict[str, str], log: Path
) -> Iterator[Server]:
    """Start `cmd` (listening on `port`), wait until GET `ready_path` answers 200, yield it, stop it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(cmd),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not _answers(url, ready_path):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise BenchError(f"{name}: `{' '.join(cmd)}` exited {proc.returncode}; log {log}:\n{tail}")
            if time.monotonic() > deadline:
                raise BenchError(f"{name}: no answer on {url}{ready_path} after {READY_TIMEOUT:.0f} s")
            time.sleep(0.05)
        yield Server(name, url, proc, log)
    finally:
        _stop(proc)


@contextlib.contextmanager
def nginx(
    root: Path, workers: int, ready_path: str, *, temp: Path, env: dict[str, str], log: Path
) -> Iterator[Server]:
    """Debian's nginx serving `root` (raises BenchError(NGINX_MISSING) when it is not installed)."""
    if not os.access(NGINX, os.X_OK):
        raise BenchError(NGINX_MISSING)
    prefix = temp / "nginx"
    shutil.rmtree(prefix, ignore_errors=True)
    for name in NGINX_TEMPS:
        (prefix / "temp" / name).mkdir(parents=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, root, port, workers))
    cmd = [str(NGINX), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    try:
        with serving("nginx", cmd, port, ready_path, env=env, log=log) as server:
            yield server
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
