"""Ctrl-C (SIGINT) and SIGTERM stop a sync promptly whatever is in flight: a slow body, a segmented download,
a retry's backoff, a stalled hub, the wait for the store lock. Revisions already complete are recorded;
partial downloads stay for the next run, which resumes them with Range. Events, never wall time, decide
when the stop comes; timeouts are only failsafes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from mirror.clock import SYSTEM
from mirror.errors import Interrupted
from mirror.manifest import parse_manifest
from mirror.repo import RepoKey
from mirror.retry import RetryPolicy
from mirror.settings import Settings
from mirror.store import Store
from mirror.sync import SyncReport, default_source_factory, plan_targets, sync
from mirror.transfer import PIECE_SIZE
from mirror.verify import verify_store
from tests.clocks import NO_WAIT
from tests.hub import Fault, HubFile, LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.roundtrip import fresh_env, mirror_command, run_mirror
from tests.waiting import eventually

BIG = safetensors_sized(os.urandom(1 << 20) * 3)  # 3 MiB, one stream
MANIFEST = "version: 1\nmodels:\n  - repo: org/small\n  - repo: org/big\n"
SMALL = RepoKey("huggingface", "model", "org/small")
BIG_KEY = RepoKey("huggingface", "model", "org/big")
FAILSAFE = 60.0


def serve(hub: LoopbackHub, big: bytes = BIG) -> None:
    hub.add_commit("org/small", {"config.json": b"{}"})
    hub.add_commit("org/big", [HubFile("model.safetensors", data=big), HubFile("config.json", data=b"{}")])


def big_gets(hub: LoopbackHub) -> list[str]:
    return [
        r.headers.get("range", "") for r in hub.downloads() if "/org/big/" in r.path and "model" in r.path
    ]


def body_started(hub: LoopbackHub) -> bool:
    return any(r.bytes_sent > 0 for r in hub.downloads() if "model.safetensors" in r.path)


def sync_in_thread(
    store: Store, hub: LoopbackHub, policy: RetryPolicy
) -> tuple[threading.Thread, list[SyncReport]]:
    settings = Settings.from_env(store.local_root, {"HF_ENDPOINT": hub.url})
    targets = plan_targets(parse_manifest(MANIFEST).requests())
    out: list[SyncReport] = []
    thread = threading.Thread(
        target=lambda: out.append(sync(store, targets, default_source_factory(settings), policy=policy)),
        daemon=True,
    )
    thread.start()
    return thread, out


def workers() -> set[threading.Thread]:
    names = ("ThreadPoolExecutor", "mirror-sync", "mirror-fetch-segment")  # the sync's pools and the rest
    return {t for t in threading.enumerate() if t.name.startswith(names) and t.is_alive()}


def stop_and_join(
    policy: RetryPolicy, thread: threading.Thread, out: list[SyncReport], *, stuck: bool = False
) -> SyncReport:
    """Stop the sync; it returns, and unless a transfer is `stuck` in a read, every worker of it ends too
    (the stop reached whatever they were doing: nothing is left running behind the caller's back)."""
    before = workers()
    policy.stop.set()
    thread.join(FAILSAFE)
    assert not thread.is_alive(), "the sync did not stop"
    if not stuck:
        eventually(lambda: not workers() & before, "the sync's workers end")
    (report,) = out
    return report


def assert_stopped_keeping_what_was_complete(store: Store, report: SyncReport) -> None:
    small, big = report.items
    assert report.exit_code == 130
    assert small.error is None and small.recorded and SMALL in store.repos()
    assert isinstance(big.error, Interrupted) and "partial downloads are kept" in str(big.error)
    assert store.read_refs(BIG_KEY) == {}
    assert verify_store(store).ok


def resume(store: Store, hub: LoopbackHub) -> None:
    """The next run completes the big file, asking only for the bytes it lacks."""
    hub.rate_limit_per_connection = None
    hub.faults.clear()
    before = len(big_gets(hub))
    settings = Settings.from_env(None, {"HF_ENDPOINT": hub.url})  # the store is given below
    targets = plan_targets(parse_manifest(MANIFEST).requests())
    assert (
        sync(store, targets, default_source_factory(settings), policy=RetryPolicy(clock=NO_WAIT)).exit_code
        == 0
    )
    ranges = big_gets(hub)[before:]
    assert ranges and all(r.startswith("bytes=") and not r.startswith("bytes=0-") for r in ranges), ranges
    assert verify_store(store).ok


def test_a_stop_during_a_slow_body_records_what_is_complete_and_keeps_the_partial_file(
    hub: LoopbackHub, storage_store: Store
) -> None:
    """Over every storage (tests/storages.py): the partial file is kept in its local staging."""
    store = storage_store
    serve(hub)
    hub.rate_limit_per_connection = 256 << 10  # 12 s for the big file
    policy = RetryPolicy(clock=SYSTEM)
    thread, out = sync_in_thread(store, hub, policy)
    eventually(
        lambda: SMALL in store.repos() and body_started(hub), "org/small recorded and the big body started"
    )
    report = stop_and_join(policy, thread, out)
    assert_stopped_keeping_what_was_complete(store, report)
    (part,) = store.storage.staging().glob("*.part")
    assert 0 < part.stat().st_size < len(BIG)
    resume(store, hub)


def test_a_stop_during_a_segmented_download_keeps_every_segment(
    hub: LoopbackHub, storage_store: Store
) -> None:
    store = storage_store
    serve(hub, big := safetensors_sized(os.urandom(1 << 20) * (3 * PIECE_SIZE >> 20)))
    hub.rate_limit_per_connection = 4 << 20
    policy = RetryPolicy(clock=SYSTEM)
    thread, out = sync_in_thread(store, hub, policy)
    eventually(
        lambda: len([r for r in hub.downloads() if r.bytes_sent > 0 and "model" in r.path]) >= 3, "3 pieces"
    )
    report = stop_and_join(policy, thread, out)
    assert_stopped_keeping_what_was_complete(store, report)
    (state,) = store.storage.staging().glob("*.seg.json")
    assert 0 < sum(json.loads(state.read_text())["done"]) < len(big)
    resume(store, hub)
    assert store.has_blob(hashlib.sha256(big).hexdigest(), len(big))


def test_a_stop_during_a_retry_backoff_does_not_sleep_it_out(hub: LoopbackHub, tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    serve(hub)
    hub.add_fault(Fault("status", match="model.safetensors", status=503, retry_after=3600, times=None))
    policy = RetryPolicy(clock=SYSTEM, total=7200)
    thread, out = sync_in_thread(store, hub, policy)
    eventually(lambda: SMALL in store.repos() and any(r.status == 503 for r in hub.downloads()), "the 503")
    assert_stopped_keeping_what_was_complete(store, stop_and_join(policy, thread, out))


STALL = Fault(
    "stall", match="model.safetensors", delay=2 * FAILSAFE, times=None
)  # then nothing, past the failsafe


def test_a_stop_while_the_hub_stalls_is_not_held_up(hub: LoopbackHub, tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    serve(hub)
    hub.add_fault(STALL)
    policy = RetryPolicy(clock=SYSTEM)
    thread, out = sync_in_thread(store, hub, policy)
    eventually(lambda: SMALL in store.repos() and body_started(hub), "org/small recorded, the body stalled")
    assert_stopped_keeping_what_was_complete(store, stop_and_join(policy, thread, out, stuck=True))


def test_a_stop_while_waiting_for_the_store_lock(hub: LoopbackHub, tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    serve(hub)
    policy = RetryPolicy(clock=SYSTEM)
    with store.lock():
        settings = Settings.from_env(store.local_root, {"HF_ENDPOINT": hub.url})
        targets = plan_targets(parse_manifest(MANIFEST).requests())
        threading.Timer(0.3, policy.stop.set).start()
        with pytest.raises(Interrupted, match="store lock"):
            sync(store, targets, default_source_factory(settings), policy=policy, wait=3600)
    assert hub.downloads() == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.e2e
def test_ctrl_c_stops_a_real_sync_and_the_next_run_resumes(tmp_path: Path, signum: int) -> None:
    manifest = tmp_path / "m.yml"
    manifest.write_text(MANIFEST)
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    report = tmp_path / "report.json"
    with LoopbackHub() as hub:
        serve(hub)
        hub.rate_limit_per_connection = 256 << 10
        env = fresh_env(tmp_path / "home", HF_ENDPOINT=hub.url)
        args = ["sync", str(manifest), "--store", str(store.local_root), "--report", str(report)]
        proc = subprocess.Popen(
            [*mirror_command(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            eventually(
                lambda: SMALL in store.repos() and body_started(hub), "org/small recorded, the body started"
            )
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=FAILSAFE)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, err
        data = json.loads(report.read_text())
        assert data["exit_code"] == 130 and [i["status"] for i in data["items"]] == ["ok", "failed"]
        assert "interrupted" in data["items"][1]["error"]
        assert b"FAILED  huggingface:org/big@main" in out
        assert store.read_refs(BIG_KEY) == {} and SMALL in store.repos()
        (part,) = (store.local_root / "tmp").glob("*.part")
        assert 0 < part.stat().st_size < len(BIG)
        hub.rate_limit_per_connection = None
        run_mirror(*args, env=env)
        ranges = big_gets(hub)
    assert ranges[-1].startswith("bytes=") and int(ranges[-1][6:].rstrip("-")) > 0
    assert json.loads(report.read_text())["ok"] is True


@pytest.mark.e2e
def test_ctrl_c_ends_a_real_sync_even_while_the_hub_stalls(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yml"
    manifest.write_text(MANIFEST)
    with LoopbackHub() as hub:
        serve(hub)
        hub.add_fault(STALL)
        env = fresh_env(tmp_path / "home", HF_ENDPOINT=hub.url)
        proc = subprocess.Popen(
            [*mirror_command(), "sync", str(manifest), "--store", str(tmp_path / "store"), "-q"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            eventually(
                lambda: SMALL in Store.at(tmp_path / "store", clock=SYSTEM).repos() and body_started(hub),
                "the stall",
            )
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=FAILSAFE)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130
    assert SMALL in Store.at(tmp_path / "store", clock=SYSTEM).repos()
