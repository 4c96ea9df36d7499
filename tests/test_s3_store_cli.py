"""`mirror sync` into a store in a bucket, as a process (end-to-end): killed with SIGKILL at any moment, it
leaves no object under a final key that is not verified, and the rerun completes once the killed run's
lease has expired (a live lease gives the rerun exit 75, as a second sync running at once gets it); `gc`
removes the temporary uploads and incomplete multipart uploads killed runs abandoned; a missing bucket,
refused credentials and an unreachable endpoint are exit 1 naming the bucket and the endpoint, never a
credential."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.core.authorization import enable_iam_authentication

from mirror.clock import SYSTEM, Clock
from mirror.gc import ABANDONED, collect_garbage
from mirror.storage import open_storage
from mirror.store import Store
from tests.hub import LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.roundtrip import CLOSED_PORT_ENDPOINT, fresh_env, mirror_command
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Bucket
from tests.test_resources import peak_rss_mb, put_big_model
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

FILES = {
    f"shard-{i}.safetensors": safetensors_sized(os.urandom(3 << 20)) for i in range(3)
}  # 9 MiB in three LFS files
MANIFEST = "version: 1\nmodels:\n  - repo: org/big\n"
FAILSAFE = 60.0


@pytest.fixture
def hub() -> Iterator[LoopbackHub]:
    with LoopbackHub() as hub:
        hub.add_commit("org/big", {"config.json": b"{}\n", **FILES})
        yield hub


def arranged(s3: S3Bucket, hub: LoopbackHub, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The manifest, and the environment of `mirror` with the hub and the bucket."""
    manifest = tmp_path / "m.yml"
    manifest.write_text(MANIFEST)
    return manifest, fresh_env(tmp_path / "home", HF_ENDPOINT=hub.url, **s3.env)


def sync_args(manifest: Path, store: str) -> list[str]:
    return [*mirror_command(), "sync", str(manifest), "--store", store, "--no-progress"]


def blobs_verified(s3: S3Bucket, prefix: str) -> list[str]:
    """The blobs under their final keys, each checked to hash to its name."""
    names = []
    for key in s3.keys(f"{prefix}/blobs/sha256/"):
        name = key.rsplit("/", 1)[1]
        assert hashlib.sha256(s3.read(key)).hexdigest() == name, f"{key} is not its content's hash"
        names.append(name)
    return names


def expire_lease(s3: S3Bucket, prefix: str) -> None:
    """What a minute does to a killed run's lease: its expiry passes (the lease itself is the killed run's)."""
    key = f"{prefix}/lock"
    lease = json.loads(s3.read(key))
    lease["expires"] = time.time() - 1
    s3.server.client().put_object(Bucket=s3.name, Key=key, Body=json.dumps(lease).encode())


MOMENTS = {
    "body started": lambda s3, hub: any(r.bytes_sent > 0 for r in hub.downloads() if "shard-" in r.path),
    "first blob up": lambda s3, hub: bool(s3.keys("near/blobs/")),
    "an upload in flight, or a second blob up": lambda s3, hub: (
        bool(s3.keys("near/tmp/uploads/")) or len(s3.keys("near/blobs/")) > 1
    ),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_sync_killed_at_any_moment_leaves_only_verified_blobs_and_a_rerun_completes(
    s3: S3Bucket, hub: LoopbackHub, tmp_path: Path, moment: str
) -> None:
    manifest, env = arranged(s3, hub, tmp_path)
    store = s3.url("near")
    hub.rate_limit_per_connection = 4 << 20  # bytes/s: the sync lasts a few seconds
    proc = subprocess.Popen(
        sync_args(manifest, store), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        eventually(lambda: MOMENTS[moment](s3, hub), moment, proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(FAILSAFE)
    finally:
        if proc.poll() is None:
            proc.kill()
    blobs_verified(s3, "near")
    assert "near/lock" in s3.keys("near/")  # the killed run's lease is left behind ...
    hub.rate_limit_per_connection = None
    blocked = subprocess.run(sync_args(manifest, store), env=env, capture_output=True, text=True, timeout=600)
    assert blocked.returncode == 75, blocked.stderr  # ... live for its minute
    assert "s3://" in blocked.stderr and SECRET_KEY not in blocked.stderr
    expire_lease(s3, "near")
    done = subprocess.run(sync_args(manifest, store), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    expected = {hashlib.sha256(d).hexdigest() for d in [b"{}\n", *FILES.values()]}
    assert set(blobs_verified(s3, "near")) == expected
    assert "near/lock" not in s3.keys("near/")
    verify = subprocess.run(
        [*mirror_command(), "verify", "--store", store], env=env, capture_output=True, text=True, timeout=600
    )
    assert verify.returncode == 0, verify.stderr


def test_two_syncs_into_one_bucket_at_once_one_gets_75(
    s3: S3Bucket, hub: LoopbackHub, tmp_path: Path
) -> None:
    manifest, env = arranged(s3, hub, tmp_path)
    store = s3.url("near")
    hub.rate_limit_per_connection = 4 << 20
    first = subprocess.Popen(
        sync_args(manifest, store), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        eventually(lambda: "near/lock" in s3.keys("near/"), "the first sync holds the lease", proc=first)
        second = subprocess.run(
            sync_args(manifest, store), env=env, capture_output=True, text=True, timeout=600
        )
        assert second.returncode == 75, second.stderr
        hub.rate_limit_per_connection = None
        _, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert "near/lock" not in s3.keys("near/")


def test_gc_removes_what_killed_runs_left_in_the_bucket(s3: S3Bucket, tmp_path: Path) -> None:
    """A temporary upload and an incomplete multipart upload, as a run killed mid-upload leaves them: gc
    keeps them while they may still be a live run's, and removes them once abandoned (a day on)."""
    client = s3.server.client()
    client.put_object(Bucket=s3.name, Key="near/tmp/uploads/0123abcd", Body=b"half a blob")
    upload = client.create_multipart_upload(Bucket=s3.name, Key="near/tmp/uploads/4567ef01")["UploadId"]
    client.upload_part(
        Bucket=s3.name, Key="near/tmp/uploads/4567ef01", UploadId=upload, PartNumber=1, Body=b"x" * (5 << 20)
    )

    def uploads() -> list[str]:
        return [u["Key"] for u in client.list_multipart_uploads(Bucket=s3.name).get("Uploads", [])]

    later = Clock(time=lambda: time.time() + ABANDONED + 3600, wait=SYSTEM.wait)
    for clock, gone in ((SYSTEM, False), (later, True)):
        store = Store(open_storage(s3.url("near"), clock=clock), clock=clock)
        with store.lock():
            report = collect_garbage(store, {}, dry_run=False)
        left = s3.keys("near/tmp/")
        if gone:
            assert left == [] and uploads() == []
            assert any("0123abcd" in name for name in report.abandoned)
        else:
            assert left == ["near/tmp/uploads/0123abcd"]  # young: perhaps a live run's


@pytest.mark.parametrize("trouble", ["missing bucket", "refused credentials", "unreachable endpoint"])
def test_a_store_in_a_bucket_that_cannot_be_reached_is_exit_1_naming_bucket_and_endpoint(
    s3: S3Bucket, hub: LoopbackHub, tmp_path: Path, trouble: str
) -> None:
    manifest, env = arranged(s3, hub, tmp_path)
    bucket, endpoint = s3.name, s3.env["AWS_ENDPOINT_URL"]
    if trouble == "missing bucket":
        bucket = "no-such-bucket"
    elif trouble == "unreachable endpoint":
        endpoint = env["AWS_ENDPOINT_URL"] = CLOSED_PORT_ENDPOINT
        env["AWS_MAX_ATTEMPTS"] = "1"
    checking = enable_iam_authentication() if trouble == "refused credentials" else contextlib.nullcontext()
    with checking:  # moto knows no key when it checks them: ours is refused
        for command in (["sync", str(manifest)], ["status"], ["verify"], ["gc", str(manifest)]):
            done = subprocess.run(
                [*mirror_command(), *command, "--store", f"s3://{bucket}/near", "--no-progress"],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            said = done.stdout + done.stderr
            assert done.returncode == 1, (command, said)
            assert bucket in said and endpoint in said, (command, said)
            assert ACCESS_KEY not in said and SECRET_KEY not in said


def test_memory_stays_flat_exporting_from_and_importing_into_a_store_in_a_bucket(
    s3: S3Bucket, tmp_path: Path
) -> None:
    """The installed `mirror`, in a child process: the peak memory of an export from a store in the bucket
    and of an import into one does not grow with the weights, four times larger here, many times the
    storage's part size."""
    peaks: dict[int, tuple[float, float]] = {}
    env = {**fresh_env(tmp_path / "home"), **s3.env}
    for size in (96 << 20, 384 << 20):
        near, far = s3.url(f"near{size}"), s3.url(f"far{size}")
        put_big_model(Store(open_storage(near, clock=SYSTEM), clock=SYSTEM), size, incompressible=True)
        bundle = tmp_path / f"big{size}.tar.zst"
        export_mb = peak_rss_mb([*mirror_command(), "export", "--store", near, "-o", str(bundle)], env)
        import_cmd = [*mirror_command(), "import", str(bundle), "--layout", "store", "--target", far]
        import_mb = peak_rss_mb(import_cmd, env)
        held = [
            k
            for k in s3.keys(f"far{size}/blobs/")
            if s3.server.client().head_object(Bucket=s3.name, Key=k)["ContentLength"] == size
        ]
        assert len(held) == 1
        peaks[size] = (export_mb, import_mb)
        bundle.unlink()
    print(f"peak RSS (export, import) by weights size: {peaks}")
    (small_export, small_import), (big_export, big_import) = peaks.values()
    assert big_export < small_export + 24, peaks  # the weights grew by 288 MiB
    assert big_import < small_import + 24, peaks
