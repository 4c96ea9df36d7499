"""Operator commands and cron behaviour: status, gc, the store lock between processes, reports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mirror.clock import SYSTEM
from mirror.gc import collect_garbage, plan_keep
from mirror.manifest import parse_manifest
from mirror.repo import RepoKey
from mirror.settings import Settings
from mirror.status import revision_status, store_targets
from mirror.store import Store
from mirror.sync import default_source_factory, plan_targets, sync
from mirror.verify import verify_store
from tests.hub import Fault, HubFile, LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.roundtrip import fresh_env, mirror_command, run_mirror
from tests.test_sync import FAST

pytestmark = pytest.mark.e2e  # the loopback hub, and the installed `mirror` in subprocesses

BIG = safetensors_sized(os.urandom(1 << 20) * 24)  # 24 MiB, an LFS file


def sync_text(store: Store, hub: LoopbackHub, text: str):  # type: ignore[no-untyped-def]
    settings = Settings.from_env(store.local_root, {"HF_ENDPOINT": hub.url})
    return sync(
        store, plan_targets(parse_manifest(text).requests()), default_source_factory(settings), policy=FAST
    )


def test_status_and_gc(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    both = "version: 1\nmodels:\n  - repo: org/a\n  - repo: org/b\n"
    with LoopbackHub() as hub:
        a1 = hub.add_commit("org/a", {"config.json": b"a1", "shared.txt": b"shared"})
        hub.add_commit("org/b", {"config.json": b"b1", "shared.txt": b"shared"})
        assert sync_text(store, hub, both).exit_code == 0
        a2 = hub.add_commit("org/a", {"config.json": b"a2", "shared.txt": b"shared"})
        settings = Settings.from_env(store.local_root, {"HF_ENDPOINT": hub.url})
        rows = revision_status(store, store_targets(store), upstream=(default_source_factory(settings), FAST))
        by_repo = {r.key.repo_id: r for r in rows}
        assert by_repo["org/a"].state == "upstream moved" and by_repo["org/a"].upstream == a2
        assert by_repo["org/a"].commit == a1 and by_repo["org/a"].files == 2
        assert by_repo["org/b"].state == "up to date"
        assert sync_text(store, hub, both).exit_code == 0

    blob_a1 = store.local_blob(__import__("hashlib").sha256(b"a1").hexdigest())
    keep = plan_keep(store, parse_manifest("version: 1\nmodels:\n  - repo: org/a\n").requests())
    dry = collect_garbage(store, keep, dry_run=True)
    # org/b goes (its ref and snapshot, and its config blob); org/a's old commit and config blob go too
    assert sorted(dry.refs) == ["huggingface:org/b@main"]
    assert len(dry.snapshots) == 2
    assert len(dry.blobs) == 2 and blob_a1.name in dry.blobs
    assert blob_a1.exists()
    done = collect_garbage(store, keep, dry_run=False)
    assert done.blobs == dry.blobs
    assert not blob_a1.exists()
    assert store.read_refs(RepoKey("huggingface", "model", "org/b")) == {}
    assert verify_store(store).ok
    assert {r.key.repo_id for r in revision_status(store, store_targets(store))} == {"org/a"}


def test_gc_without_arguments_keeps_every_revision(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    with LoopbackHub() as hub:
        hub.add_commit("org/a", {"config.json": b"a1"})
        sync_text(store, hub, "version: 1\nmodels:\n  - repo: org/a\n")
    orphan = store.temp_path("orphan")
    orphan.write_bytes(b"orphan")
    store.add_blob(orphan, __import__("hashlib").sha256(b"orphan").hexdigest())
    report = collect_garbage(store, plan_keep(store, None), dry_run=False)
    assert report.refs == [] and report.snapshots == []
    assert len(report.blobs) == 1
    assert verify_store(store).ok


def test_second_sync_exits_75_and_wait_succeeds(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yml"
    manifest.write_text("version: 1\nmodels:\n  - repo: org/slow\n")
    release = threading.Event()  # the holder's download is held until the test sets it
    with LoopbackHub() as hub:
        hub.add_commit("org/slow", {"config.json": b"{}", "weights.bin": b"w" * 1000})
        hub.add_fault(Fault("delay", match="weights.bin", delay=60.0, method="GET", until=release))
        env = fresh_env(tmp_path / "home", HF_ENDPOINT=hub.url)
        store = str(tmp_path / "store")
        first = subprocess.Popen([*mirror_command(), "sync", str(manifest), "--store", store], env=env)
        waited: subprocess.Popen[str] | None = None
        try:
            lock = tmp_path / "store" / "lock"
            deadline = time.monotonic() + 30
            while not (lock.exists() and "pid" in lock.read_text()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert first.poll() is None  # holding the lock: its download is held
            second = run_mirror("sync", str(manifest), "--store", store, env=env, check=False)
            assert second.returncode == 75, second.stderr
            assert first.poll() is None  # at once: the holder has not finished
            assert "pid" in second.stderr and "--wait" in second.stderr
            waited = subprocess.Popen(
                [*mirror_command(), "sync", str(manifest), "--store", store, "--wait", "30"],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 30  # a failsafe: until it waits on the lock the holder holds
            while not has_open(waited.pid, lock) and waited.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert has_open(waited.pid, lock) and waited.poll() is None and first.poll() is None
            release.set()
            _, err = waited.communicate(timeout=60)
            assert waited.returncode == 0, err
        finally:
            release.set()
            first.wait(timeout=60)
            if waited is not None and waited.poll() is None:
                waited.kill()
                waited.communicate()
        assert first.returncode == 0


def has_open(pid: int, path: Path) -> bool:
    """Whether process pid has path open (Linux's /proc)."""
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        return any(os.readlink(fd) == str(path) for fd in fds.iterdir())
    return False


def test_killed_sync_resumes_with_range(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yml"
    manifest.write_text("version: 1\nmodels:\n  - repo: org/big\n")
    with LoopbackHub() as hub:
        hub.add_commit(
            "org/big", [HubFile("model.safetensors", data=BIG), HubFile("config.json", data=b"{}")]
        )
        hub.rate_limit_per_connection = 8 * (1 << 20)  # about 3 s for the whole file
        env = fresh_env(tmp_path / "home", HF_ENDPOINT=hub.url)
        store = str(tmp_path / "store")
        proc = subprocess.Popen([*mirror_command(), "sync", str(manifest), "--store", store], env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            partial = list((tmp_path / "store" / "tmp").glob("*.part"))
            if partial and partial[0].stat().st_size > len(BIG) // 3:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert not (tmp_path / "store" / "blobs").exists() or not any(
            p.stat().st_size == len(BIG) for p in (tmp_path / "store" / "blobs").rglob("*") if p.is_file()
        )
        hub.rate_limit_per_connection = None
        done = run_mirror("sync", str(manifest), "--store", store, "--json", env=env)
        assert json.loads(done.stdout)["ok"] is True
        gets = [r for r in hub.downloads() if "model.safetensors" in r.path]
    resumed = gets[-1].headers.get("range", "")
    assert resumed.startswith("bytes=") and int(resumed[6:].rstrip("-")) > 0
    assert sum(r.bytes_sent for r in gets) < 1.2 * len(BIG)
    assert run_mirror("verify", "--store", store, env=env).returncode == 0


def test_cron_output_has_no_progress_bar_and_report_file(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yml"
    manifest.write_text("version: 1\nmodels:\n  - repo: org/a\n  - repo: org/missing\n")
    with LoopbackHub() as hub:
        hub.add_commit("org/a", {"config.json": b"{}"})
        env = fresh_env(tmp_path / "home", HF_ENDPOINT=hub.url)
        report = tmp_path / "report.json"
        proc = run_mirror(
            "sync",
            str(manifest),
            "--store",
            str(tmp_path / "s"),
            "--json",
            "--report",
            str(report),
            env=env,
            check=False,
        )
    assert proc.returncode == 3
    summary = json.loads(proc.stdout)
    assert json.loads(report.read_text()) == summary
    assert [i["status"] for i in summary["items"]] == ["ok", "failed"]
    assert "not found" in summary["items"][1]["error"]
    assert "\r" not in proc.stderr and "it/s" not in proc.stderr and "%|" not in proc.stderr


def test_retries_option_bounds_attempts(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yml"
    manifest.write_text("version: 1\nmodels:\n  - repo: org/a\n")
    with LoopbackHub() as hub:
        hub.add_commit("org/a", {"config.json": b"{}"})
        hub.add_fault(Fault("status", match="config.json", status=503, times=None, method="GET"))
        env = fresh_env(tmp_path / "home", HF_ENDPOINT=hub.url)
        proc = run_mirror(
            "sync", str(manifest), "--store", str(tmp_path / "s"), "--retries", "2", env=env, check=False
        )
        assert proc.returncode == 1
        assert "giving up after 2 attempts" in proc.stderr
        assert len([r for r in hub.downloads() if "config.json" in r.path]) == 2
