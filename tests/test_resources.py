"""Bounded resources and reproducibility of the installed `mirror`, on data the tests make."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mirror.clock import SYSTEM
from mirror.hashing import lfs_pointer_oid
from mirror.repo import RepoKey
from mirror.snapshot import FileRecord, Snapshot
from mirror.store import Store
from tests.modelfiles import safetensors_head
from tests.roundtrip import fresh_env, mirror_command, run_mirror

GIB = 1 << 30


def put_big_model(store: Store, size: int, *, incompressible: bool = False, dtype: str = "U8") -> str:
    """A model whose weights are one sparse `size`-byte safetensors file (zeros after its header), or random
    bytes (whole MiBs) that compress to their own size, put straight into the store; its one tensor is of
    `dtype`."""
    temp = store.temp_path("big.part")
    head = safetensors_head(size, dtype)  # a valid header (an export refuses an invalid one), then the data
    with open(temp, "wb") as f:
        f.write(head)
        if incompressible:
            f.write(os.urandom((1 << 20) - len(head)))
            for _ in range((size >> 20) - 1):
                f.write(os.urandom(1 << 20))
        else:
            f.truncate(size)
    with open(temp, "rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    store.add_blob(temp, sha256)
    config = store.temp_path("config.part")
    config.write_bytes(b'{"model_type": "bert"}')
    config_sha = hashlib.sha256(config.read_bytes()).hexdigest()
    store.add_blob(config, config_sha)
    commit = hashlib.sha1(f"big{size}".encode(), usedforsecurity=False).hexdigest()
    files = (
        FileRecord("model.safetensors", size, sha256, lfs_pointer_oid(sha256, size), True),
        FileRecord("config.json", 22, config_sha, "0" * 40, False),
    )
    snap = Snapshot("huggingface", "model", "org/big", commit, files, True, "2026-11-20T10:00:00Z")
    store.write_snapshot(snap)
    store.set_refs(RepoKey("huggingface", "model", "org/big"), {"main": commit}, snap.synced_at)
    return commit


def peak_rss_mb(args: list[str], env: dict[str, str]) -> float:
    """Peak RSS of one child process, measured by a wrapper whose only child it is."""
    code = (
        "import resource, subprocess, sys, json\n"
        "rc = subprocess.run(json.loads(sys.argv[1]), stdout=subprocess.DEVNULL).returncode\n"
        "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], env=env, capture_output=True, text=True, check=True
    )
    rc, kib = out.stdout.split()
    assert rc == "0", out.stderr
    return int(kib) / 1024


@pytest.mark.e2e
def test_export_and_import_memory_stays_flat_for_a_multi_gb_model(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_big_model(store, 3 * GIB)
    env = fresh_env(tmp_path / "home")
    bundle = tmp_path / "big.tar.zst"
    export_mb = peak_rss_mb(
        [*mirror_command(), "export", "--store", str(store.local_root), "-o", str(bundle)], env
    )
    target = tmp_path / "cache"
    import_mb = peak_rss_mb([*mirror_command(), "import", str(bundle), "--target", str(target)], env)
    assert (target / "models--org--big" / "blobs").is_dir()
    print(f"peak RSS: export {export_mb:.0f} MB, import {import_mb:.0f} MB")
    assert export_mb < 200, export_mb
    assert import_mb < 200, import_mb


@pytest.mark.e2e
def test_two_exports_of_the_same_content_are_byte_identical(tmp_path: Path) -> None:
    first_store = Store.at(tmp_path / "a" / "store", clock=SYSTEM)
    put_big_model(first_store, 8 << 20)
    second_root = tmp_path / "b" / "elsewhere" / "store"
    shutil.copytree(first_store.local_root, second_root)
    env = fresh_env(tmp_path / "home")
    one = tmp_path / "a" / "out.tar.zst"
    run_mirror("export", "--store", str(first_store.local_root), "-o", str(one), env=env)
    time.sleep(1.1)  # a different second on the clock: the bundle must not depend on it
    other = tmp_path / "b" / "other-name.tar.zst"
    proc = subprocess.run(
        [*mirror_command(), "export", "--store", str(second_root), "-o", str(other), "--threads", "1"],
        env={**env, "TZ": "Asia/Tokyo"},
        cwd=tmp_path / "b",
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert hashlib.sha256(one.read_bytes()).digest() == hashlib.sha256(other.read_bytes()).digest()
    assert os.path.getsize(one) == os.path.getsize(other)
