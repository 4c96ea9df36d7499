"""Run one command as a child process and measure it: wall time, CPU time and peak RSS.

The command runs under `bench/childrss.py`, which forks it and reads its own `ru_maxrss` from `wait4`
(covering the children it waited for too, e.g. both sides of a shell pipeline). Started straight from
here, a child's figure would include this process's RSS (see childrss.py), and
`getrusage(RUSAGE_CHILDREN)` is a maximum over every child ever reaped, so one big run would mask a
later small one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMEOUT = 1800.0  # seconds: a hung child must not hang `make bench`
CHILDRSS = Path(__file__).resolve().parent / "childrss.py"


class BenchError(Exception):
    """A measured command failed; the message names it and shows the end of its log."""


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu: float  # user + system seconds of the command (and the children it waited for)
    peak_rss: int  # bytes
    threads: dict[str, Any] | None = None  # mirror's per-thread CPU (mirror/threadstats.py), when asked

    def busiest(self) -> tuple[str, float]:
        """The thread that used the most CPU, and its share of the process's CPU (threads asked for)."""
        assert self.threads is not None
        top = self.threads["threads"][0]
        return str(top["name"]), float(top["cpu"]) / max(float(self.threads["total"]), 1e-9)


def run(
    label: str,
    cmd: Sequence[str],
    *,
    env: dict[str, str],
    log: Path,
    cwd: Path | None = None,
    timeout: float = TIMEOUT,
    thread_stats: bool = False,
) -> Run:
    """Run `cmd` with stdout and stderr appended to `log`; raise BenchError unless it exits 0.

    `thread_stats`: `cmd` is mirror, which writes each thread's CPU at its exit (MIRROR_THREAD_STATS)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    figures = log.with_suffix(".rusage")
    figures.unlink(missing_ok=True)
    per_thread = log.with_suffix(".threads.json")
    per_thread.unlink(missing_ok=True)
    if thread_stats:
        env = {**env, "MIRROR_THREAD_STATS": str(per_thread)}
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        wrapped = [sys.executable, "-I", "-S", str(CHILDRSS), str(figures), *cmd]
        proc = subprocess.Popen(
            wrapped, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise BenchError(
                f"{label}: `{' '.join(cmd)}` still running after {timeout:.0f} s; killed"
            ) from None
    if code != 0 or not figures.exists():
        tail = log.read_text(errors="replace")[-3000:]
        raise BenchError(f"{label}: `{' '.join(cmd)}` exited {code}; log {log}:\n{tail}")
    seconds, cpu, rss = figures.read_text().split()
    threads = None
    if thread_stats:
        if not per_thread.exists():
            raise BenchError(f"{label}: `{' '.join(cmd)}` wrote no {per_thread.name} (MIRROR_THREAD_STATS)")
        threads = json.loads(per_thread.read_text())
    return Run(seconds=float(seconds), cpu=float(cpu), peak_rss=int(rss), threads=threads)
