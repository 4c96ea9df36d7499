"""Segmented downloads: several ranged connections per large file, each resumable, the whole verified."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mirror.clock import SYSTEM
from mirror.manifest import parse_manifest
from mirror.settings import Settings
from mirror.store import Store
from mirror.sync import default_source_factory, plan_targets, sync
from mirror.transfer import PIECE_SIZE, SAVE_EVERY, _Segments
from mirror.verify import verify_store
from tests.clocks import FakeClock
from tests.hub import Fault, HubFile, LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.roundtrip import fresh_env, mirror_command, run_mirror
from tests.test_sync import FAST

SIZE = 4 * PIECE_SIZE  # four pieces
WEIGHTS = safetensors_sized(os.urandom(1 << 20) * (SIZE >> 20))
MANIFEST = "version: 1\nmodels:\n  - repo: org/big\n"


def serve(hub: LoopbackHub) -> None:
    hub.add_commit(
        "org/big", [HubFile("model.safetensors", data=WEIGHTS), HubFile("config.json", data=b"{}")]
    )


def sync_big(store: Store, hub: LoopbackHub):  # type: ignore[no-untyped-def]
    settings = Settings.from_env(store.local_root, {"HF_ENDPOINT": hub.url})
    return sync(
        store,
        plan_targets(parse_manifest(MANIFEST).requests()),
        default_source_factory(settings),
        policy=FAST,
    )


def weight_gets(hub: LoopbackHub) -> list[tuple[str, int, int]]:
    return [
        (r.headers.get("range", ""), r.status, r.bytes_sent)
        for r in hub.downloads()
        if "model.safetensors" in r.path
    ]


def test_the_pieces_progress_is_recorded_at_most_once_a_second_on_the_clock(tmp_path: Path) -> None:
    fake = FakeClock()
    state = tmp_path / "f.seg.json"
    segs = _Segments(tmp_path / "f.seg", state, 2 * PIECE_SIZE, fake.clock)

    def progress(done: list[int]) -> list[int]:
        segs.done = done
        segs.save()
        return list(json.loads(state.read_text())["done"])

    assert progress([10, 0]) == [10, 0]
    fake.now += SAVE_EVERY / 2
    assert progress([20, 0]) == [10, 0]  # too soon: the record waits
    fake.now += SAVE_EVERY / 2
    assert progress([30, 5]) == [30, 5]
    segs.done = [40, 5]
    segs.save(force=True)  # a connection ending records at once
    assert json.loads(state.read_text())["done"] == [40, 5]


def test_large_file_comes_over_several_ranged_connections(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    with LoopbackHub() as hub:
        serve(hub)
        assert sync_big(store, hub).exit_code == 0
        gets = weight_gets(hub)
    assert sorted(r for r, _, _ in gets) == sorted(
        f"bytes={i * PIECE_SIZE}-{(i + 1) * PIECE_SIZE - 1}" for i in range(4)
    )
    assert {status for _, status, _ in gets} == {206}
    assert store.local_blob(hashlib.sha256(WEIGHTS).hexdigest()).read_bytes() == WEIGHTS
    assert not list((store.local_root / "tmp").iterdir())


def test_a_cut_segment_resumes_alone(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    with LoopbackHub() as hub:
        serve(hub)
        hub.add_fault(Fault("cut", match="model.safetensors", at_byte=PIECE_SIZE // 2, times=1, method="GET"))
        assert sync_big(store, hub).exit_code == 0
        gets = weight_gets(hub)
    assert len(gets) == 5  # four segments, one of them cut and asked again
    # the hub logs a request once answered, so the retry need not be last: it is the one starting inside
    # its segment (where the cut segment's bytes ended), the segments all starting at a piece boundary
    starts = [int(rng[6:].split("-")[0]) for rng, _, _ in gets]
    assert len([s for s in starts if s % PIECE_SIZE != 0]) == 1
    assert sum(sent for _, _, sent in gets) < 1.2 * SIZE
    assert verify_store(store).ok


def test_a_corrupted_segment_is_never_stored(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    with LoopbackHub() as hub:
        serve(hub)
        hub.add_fault(Fault("corrupt", match="model.safetensors", times=1, method="GET"))
        assert sync_big(store, hub).exit_code == 0  # caught by the whole-file hash, fetched again
    assert verify_store(store).ok
    assert store.has_blob(hashlib.sha256(WEIGHTS).hexdigest(), SIZE)


def test_server_ignoring_range_gets_one_stream(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    with LoopbackHub() as hub:
        serve(hub)
        hub.ignore_range = True
        assert sync_big(store, hub).exit_code == 0
        gets = weight_gets(hub)
    assert gets[-1][0] == "" and gets[-1][1] == 200
    assert store.local_blob(hashlib.sha256(WEIGHTS).hexdigest()).read_bytes() == WEIGHTS
    assert not list((store.local_root / "tmp").iterdir())


@pytest.mark.e2e  # the installed `mirror`, killed in a subprocess
def test_killed_segmented_download_resumes_each_segment(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yml"
    manifest.write_text(MANIFEST)
    state_file = tmp_path / "store" / "tmp"
    with LoopbackHub() as hub:
        serve(hub)
        hub.rate_limit_per_connection = 8 << 20  # 2 s per segment
        env = fresh_env(tmp_path / "home", HF_ENDPOINT=hub.url)
        proc = subprocess.Popen(
            [*mirror_command(), "sync", str(manifest), "--store", str(tmp_path / "store")], env=env
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = list(state_file.glob("*.seg.json")) if state_file.exists() else []
            if states and sum(json.loads(states[0].read_text())["done"]) > SIZE // 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        hub.rate_limit_per_connection = None
        done_before = json.loads(states[0].read_text())["done"]
        run_mirror("sync", str(manifest), "--store", str(tmp_path / "store"), env=env)
        gets = weight_gets(hub)
    resumed = gets[4:]
    starts = sorted(int(r[6:].split("-")[0]) for r, _, _ in resumed)
    expected = sorted(i * PIECE_SIZE + d for i, d in enumerate(done_before) if d < PIECE_SIZE)
    assert starts == expected
    assert sum(1 for s in starts if s % PIECE_SIZE) >= 2  # at least two segments resumed mid-way
    assert sum(sent for _, _, sent in gets) < 1.2 * SIZE
    assert run_mirror("verify", "--store", str(tmp_path / "store"), env=env).returncode == 0


def test_fewer_connections_than_pieces_take_the_pieces_in_file_order(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    with LoopbackHub() as hub:
        serve(hub)
        settings = Settings.from_env(store.local_root, {"HF_ENDPOINT": hub.url})
        targets = plan_targets(parse_manifest(MANIFEST).requests())
        assert sync(store, targets, default_source_factory(settings), policy=FAST, segments=2).exit_code == 0
        gets = weight_gets(hub)
    starts = [int(r[6:].split("-")[0]) // PIECE_SIZE for r, _, _ in gets]
    assert sorted(starts[:2]) == [0, 1] and sorted(starts[2:]) == [2, 3]  # handed out front to back
    assert store.local_blob(hashlib.sha256(WEIGHTS).hexdigest()).read_bytes() == WEIGHTS
