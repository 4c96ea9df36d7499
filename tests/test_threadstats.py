"""`MIRROR_THREAD_STATS=FILE`: each thread's CPU, the ended ones too, against the process's total."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from mirror import threadstats
from mirror.hashing import HashLanes
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
    assert "MainThread" in names
    cpus = [t["cpu"] for t in got["threads"]]
    assert cpus == sorted(cpus, reverse=True)  # the busiest first
    # the process's total counts the ended thread too
    assert got["total"] >= burner["cpu"] - 0.02


@pytest.mark.e2e  # the installed `mirror` in a subprocess
def test_mirror_writes_its_threads_cpu_at_exit_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "threads.json"
    run_mirror("--help", env=fresh_env(tmp_path / "home", MIRROR_THREAD_STATS=str(out)))
    got = json.loads(out.read_text())
    assert got["total"] > 0 and got["threads"][0]["name"] == "MainThread"
    assert set(got) == {"total", "threads", "unaccounted"}


def test_hash_lanes_hash_consecutive_streams_on_threads_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threading.Thread, "run", threading.Thread.run)
    monkeypatch.setattr(threadstats, "_ended", [])
    threadstats.note_ended_threads()
    pieces = [bytes([k]) * (8 << 20) for k in range(4)]
    with HashLanes(4, "test-lane") as lanes:
        streams = [lanes.stream() for _ in pieces]
        for stream, piece in zip(streams, pieces, strict=True):
            for _ in range(4):
                stream.update(piece)
        digests = [s.hexdigest().result() for s in streams]
    assert digests == [hashlib.sha256(p * 4).hexdigest() for p in pieces]
    lanes_cpu = {
        t["name"]: t["cpu"] for t in threadstats.stats()["threads"] if t["name"].startswith("test-lane")
    }
    assert sorted(lanes_cpu) == [f"test-lane-{i}_0" for i in range(4)]  # each stream hashed on its own thread
    assert all(cpu > 0 for cpu in lanes_cpu.values())
