"""Per-thread CPU time of this process, for the benchmark (`MIRROR_THREAD_STATS=FILE`, read by mirror/cli).

`install(path)` makes every `threading.Thread` note its own CPU time (`time.thread_time()`) as it ends, and
writes at exit a JSON of every thread's CPU seconds: the ended ones as noted, the ones still alive from
`/proc/self/task/*/stat` (utime + stime), beside the process's total from `/proc/self/stat` (which counts
every thread that ever ran). `unaccounted` is the total less the threads listed: threads not started by
`threading` that ended before the exit (none of mirror's), and rounding to clock ticks.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_ended: list[dict[str, Any]] = []
_lock = threading.Lock()
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu(stat: str) -> float:
    """utime + stime in seconds, from a /proc .../stat line (fields after the command's closing paren)."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of proc(5)


def _noting(run: Callable[[threading.Thread], None]) -> Callable[[threading.Thread], None]:
    def noted(self: threading.Thread) -> None:
        try:
            run(self)
        finally:
            with _lock:
                _ended.append({"name": self.name, "cpu": time.thread_time(), "ended": True})

    return noted


def note_ended_threads() -> None:
    """From now on every thread started by `threading` (that keeps Thread.run) notes its CPU as it ends."""
    if not getattr(threading.Thread.run, "_mirror_noted", False):
        noted = _noting(threading.Thread.run)
        noted._mirror_noted = True  # type: ignore[attr-defined]
        threading.Thread.run = noted  # type: ignore[method-assign,assignment]


def stats() -> dict[str, Any]:
    """{"total": CPU seconds of the process, "threads": [{"name", "cpu", "ended"}], "unaccounted": ...}."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    alive = []
    for task in Path("/proc/self/task").iterdir():
        try:
            line = (task / "stat").read_text()
        except OSError:  # it ended meanwhile: noted as ended
            continue
        tid = int(task.name)
        name = names.get(tid) or "(not threading's) " + line[line.index("(") + 1 : line.rindex(")")]
        alive.append({"name": name, "cpu": _cpu(line), "ended": False})
    total = _cpu(Path("/proc/self/stat").read_text())
    with _lock:
        threads = sorted([*_ended, *alive], key=lambda t: -float(t["cpu"]))
    return {
        "total": total,
        "threads": threads,
        "unaccounted": total - sum(float(t["cpu"]) for t in threads),
    }


def install(path: str) -> None:
    """Note threads' CPU from now on and write `stats()` to `path` as JSON at exit."""
    note_ended_threads()
    atexit.register(lambda: Path(path).write_text(json.dumps(stats(), indent=1) + "\n"))
