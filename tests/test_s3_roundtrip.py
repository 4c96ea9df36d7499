"""The whole journey with object storage on both sides of the gap (end-to-end, real clients): `mirror sync`
from the loopback hub into a store in a bucket, `export -o s3://...` from it, `import s3://... --layout store
--target s3://...` into the far side's store (another prefix of the bucket), and `mirror serve --store
s3://...`, from which huggingface_hub, datasets and modelscope download. The same journey over local
folders gives the clients the very same trees and rows."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.hub import LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.roundtrip import SCRIPT_HEAD, fresh_env, mirror_command
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Bucket
from tests.serving import served
from tests.test_serve_hf import hf_env, parquet_bytes, run_code

pytestmark = pytest.mark.e2e

CLIENT_TIMEOUT = 600
MODEL = "org/tiny"
MS_MODEL = "owner/msmodel"
DATA = "org/rows"
MANIFEST = f"""version: 1
models:
  - repo: {MODEL}
    revisions: [main, v1.0]
  - repo: {DATA}
    type: dataset
  - repo: {MS_MODEL}
    source: modelscope
"""
WEIGHTS = safetensors_sized(random.Random(14).randbytes(3 << 20))  # an LFS file
ROWS = {"text": ["a", "b", "c"], "label": [0, 1, 0]}

CLIENTS = (
    SCRIPT_HEAD
    + """
from huggingface_hub import snapshot_download
import datasets
from modelscope import snapshot_download as ms_snapshot_download

got = {
    "model": tree(snapshot_download(sys.argv[1])),
    "model_v1": tree(snapshot_download(sys.argv[1], revision="v1.0")),
    "dataset": datasets.load_dataset(sys.argv[2], split="train").to_dict(),
    "modelscope": tree(ms_snapshot_download(sys.argv[3])),
}
print(json.dumps(got))
"""
)


@dataclass(frozen=True)
class Journey:
    """Where one journey's store, bundle and far store are: folders, or s3:// URLs."""

    near: str
    bundle: str
    far: str


def run_mirror(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*mirror_command(), *args, "--no-progress"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"mirror {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}"
    for secret in (ACCESS_KEY, SECRET_KEY):
        assert secret not in done.stdout + done.stderr
    return done


def travel(journey: Journey, manifest: Path, env: dict[str, str]) -> None:
    """sync -> export -> (the gap) -> import into a store."""
    run_mirror(env, "sync", str(manifest), "--store", journey.near)
    run_mirror(env, "export", str(manifest), "--store", journey.near, "-o", journey.bundle)
    run_mirror(env, "verify", journey.bundle)
    run_mirror(env, "import", journey.bundle, "--layout", "store", "--target", journey.far)


def clients(server_url: str, tmp_path: Path) -> Any:
    """What the real clients get from the server (a fresh HF_HOME and ModelScope cache, online; the
    object store out of their reach)."""
    env = hf_env(
        server_url, tmp_path, MODELSCOPE_ENDPOINT=server_url, MODELSCOPE_DOWNLOAD_INTRA_CLOUD="false"
    )
    env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    env.update(MODELSCOPE_CACHE=os.path.join(env["HOME"], "ms"), TQDM_DISABLE="1")
    return run_code(env, CLIENTS, MODEL, DATA, MS_MODEL)


@pytest.fixture
def hub() -> Iterator[LoopbackHub]:
    with LoopbackHub() as hub:
        hub.add_commit(
            MODEL,
            {
                "config.json": b'{"model_type": "bert"}\n',
                "model.safetensors": WEIGHTS,
                "vocab.txt": b"[PAD]\n",
            },
            tags=["v1.0"],
        )
        hub.add_commit(MODEL, {"config.json": b'{"model_type": "bert", "v": 2}\n'}, inherit=True)
        hub.add_commit(DATA, {"data/train.parquet": parquet_bytes(ROWS)}, repo_type="dataset")
        hub.add_commit(MS_MODEL, {"configuration.json": b'{"framework": "pytorch"}\n'}, branch="master")
        yield hub


def test_sync_export_import_serve_through_a_bucket_gives_the_clients_what_folders_give(
    s3: S3Bucket, hub: LoopbackHub, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.yml"
    manifest.write_text(MANIFEST)
    env = fresh_env(tmp_path / "home", HF_ENDPOINT=hub.url, MODELSCOPE_ENDPOINT=hub.url, **s3.env)
    local = Journey(str(tmp_path / "near"), str(tmp_path / "models.tar.zst"), str(tmp_path / "far"))
    bucket = Journey(s3.url("near"), s3.url("transfer/models.tar.zst"), s3.url("far"))
    travel(local, manifest, env)
    travel(bucket, manifest, env)

    # both stores and the bundle live in the bucket, and nothing is left under a temporary key
    keys = s3.keys()
    assert "transfer/models.tar.zst" in keys and "transfer/models.tar.zst.sha256" in keys
    for store in ("near", "far"):
        assert any(k.startswith(f"{store}/blobs/sha256/") for k in keys)
        assert any(k.startswith(f"{store}/repos/") for k in keys)
        assert not any(k.startswith(f"{store}/tmp/") for k in keys)
    assert not any(k.endswith("/lock") for k in keys)  # every lease released

    server_env = {**fresh_env(tmp_path / "server-home"), **s3.env}
    with served(Path(local.far), env=server_env) as server:
        from_folders = clients(server.url, tmp_path)
    with served(bucket.far, env=server_env) as server:  # type: ignore[arg-type]
        from_bucket = clients(server.url, tmp_path)
    assert from_bucket == from_folders
    assert from_bucket["dataset"] == ROWS
    assert set(from_bucket["model"]) == {"config.json", "model.safetensors", "vocab.txt"}
    assert from_bucket["model"] != from_bucket["model_v1"]  # main moved after v1.0
    assert set(from_bucket["modelscope"]) >= {"configuration.json"}
