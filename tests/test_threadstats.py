"""`MIRROR_THREAD_STATS=FILE`: each thread's CPU, the ended ones too, against the process's total."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from mirror import threadstats
from tests.roundtrip import fresh_env, run_mirror


def _burn() -> None:
    data = bytes(1 << 20)
    for _ in range(300):  # some tens of ms of CPU
        hashlib.sha256(data).digest()


def test_a_thread_that_ended_before_the_stats_counts_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threading.Thread, "run", threading.Thread.run)  # put back after the test
    monkeypatch.setattr(threadstats, "_ended", [])
    threadstats.note_ended_threads()
    threadstats.note_ended_threads()  # once is enough: not wrapped twice
    worker = threading.Thread(target=_burn, name="test-burner")
    worker.start()
    worker.join()
    got = threadstats.stats()
    (burner,) = [t for t in got["threads"] if t["name"] == "test-burner"]
    assert burner["ended"] is True and burner["cpu"] > 0
    names = [t["name"] for t in got["threads"]]
    assert "MainThread" in names and len([t for t in got["threads"] if t["name"] == "test-burner"]) == 1
    cpus = [t["cpu"] for t in got["threads"]]
    assert cpus == sorted(cpus, reverse=True)  # the busiest first
    # the process's total counts the ended thread too: what is listed is (to clock ticks) all of it
    assert got["total"] >= burner["cpu"] - 0.02
    assert got["unaccounted"] == pytest.approx(got["total"] - sum(cpus))


@pytest.mark.e2e  # the installed `mirror` in a subprocess
def test_mirror_writes_its_threads_cpu_at_exit_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "threads.json"
    run_mirror("--help", env=fresh_env(tmp_path / "home", MIRROR_THREAD_STATS=str(out)))
    got = json.loads(out.read_text())
    assert got["total"] > 0 and got["threads"][0]["name"] == "MainThread"
    assert set(got) == {"total", "threads", "unaccounted"}
