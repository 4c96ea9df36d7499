"""The whole main job as a user runs it: the installed `mirror` in subprocesses, fresh HOMEs, the real
all-MiniLM-L6-v2 files over the loopback hub, and the real clients loading the result offline."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from tests.hub import Fault, HubFile, LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.roundtrip import (
    MINILM,
    embeddings,
    fresh_env,
    minilm_folder,
    offline_env,
    python_offline,
    run_mirror,
)

pytestmark = pytest.mark.e2e  # the loopback hub, the installed `mirror` and torch in subprocesses


def tar_members(bundle: Path) -> list[tarfile.TarInfo]:
    """The members as plain tarfile reads them, in archive order."""
    with (
        bundle.open("rb") as f,
        zstandard.ZstdDecompressor().stream_reader(f) as raw,
        tarfile.open(fileobj=raw, mode="r|") as tar,
    ):
        return list(tar)


MINILM_MANIFEST = f"version: 1\nmodels:\n  - repo: {MINILM}\n"


@dataclass
class Synced:
    hub: LoopbackHub
    store: Path
    manifest: Path
    bundle: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synced]:
    """Sync and export the real model once for this module; the hub stays up for the tests."""
    work = tmp_path_factory.mktemp("minilm")
    manifest = work / "minilm.yml"
    manifest.write_text(MINILM_MANIFEST)
    with LoopbackHub() as hub:
        hub.add_folder(MINILM, minilm_folder())
        env = fresh_env(work / "home", HF_ENDPOINT=hub.url)
        store, bundle = work / "store", work / "out" / "minilm.tar.zst"
        run_mirror("sync", str(manifest), "--store", str(store), env=env)
        run_mirror("export", str(manifest), "--store", str(store), "-o", str(bundle), env=env)
        yield Synced(hub, store, manifest, bundle, env)


@pytest.fixture(scope="module")
def original_embeddings(tmp_path_factory: pytest.TempPathFactory) -> list[list[float]]:
    return embeddings(str(minilm_folder()), offline_env(tmp_path_factory.mktemp("orig-home")))


def test_hf_layout_loads_offline_by_repo_id(
    minilm: Synced, original_embeddings: list[list[float]], tmp_path: Path
) -> None:
    cache = tmp_path / "air" / "hf-cache"
    air = offline_env(tmp_path / "air", HF_HUB_CACHE=str(cache))
    proc = run_mirror("import", str(minilm.bundle), env=air)
    assert MINILM in proc.stdout
    assert embeddings(MINILM, air) == original_embeddings
    assert embeddings(MINILM, air, sentence_transformers=True)  # sentence-transformers loads it by id too
    report = json.loads(
        python_offline(
            "import json\n"
            "from huggingface_hub import scan_cache_dir, snapshot_download, hf_hub_download\n"
            "info = scan_cache_dir()\n"
            f"snap = snapshot_download({MINILM!r}, local_files_only=True)\n"
            f"cfg = hf_hub_download({MINILM!r}, 'config.json')\n"
            "print(json.dumps({'warnings': [str(w) for w in info.warnings],\n"
            "  'repos': {r.repo_id: sorted(ref for rev in r.revisions for ref in rev.refs) for r in info.repos},\n"
            "  'snap': snap, 'cfg': cfg}))\n",
            air,
        )
    )
    assert report["warnings"] == []
    assert report["repos"] == {MINILM: ["main"]}
    snap = Path(report["snap"])
    for original in minilm_folder().rglob("*"):
        if original.is_file():
            rel = original.relative_to(minilm_folder())
            assert (snap / rel).read_bytes() == original.read_bytes(), rel
    assert Path(report["cfg"]).read_bytes() == (minilm_folder() / "config.json").read_bytes()


def test_dir_layout_loads_by_path(
    minilm: Synced, original_embeddings: list[list[float]], tmp_path: Path
) -> None:
    air = offline_env(tmp_path / "air")
    target = tmp_path / "models"
    run_mirror("import", str(minilm.bundle), "--layout", "dir", "--target", str(target), env=air)
    assert embeddings(str(target / MINILM), air) == original_embeddings


def test_bundle_opens_with_tar_and_sha256sum(minilm: Synced, tmp_path: Path) -> None:
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(minilm.bundle)], cwd=out, check=True)
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(": OK") == sum(1 for p in minilm_folder().rglob("*") if p.is_file())
    side = subprocess.run(
        ["sha256sum", "-c", minilm.bundle.name + ".sha256"],
        cwd=minilm.bundle.parent,
        capture_output=True,
        text=True,
    )
    assert side.returncode == 0, side.stdout + side.stderr
    names = [m.name for m in tar_members(minilm.bundle)]
    assert names[:2] == ["MIRROR-BUNDLE.json", "SHA256SUMS"]


def test_unchanged_manifest_downloads_nothing(minilm: Synced) -> None:
    minilm.hub.clear_requests()
    proc = run_mirror("sync", str(minilm.manifest), "--store", str(minilm.store), "--json", env=minilm.env)
    assert json.loads(proc.stdout)["items"][0]["downloaded"] == 0
    assert minilm.hub.downloads() == []
    assert len(minilm.hub.requests) == 1  # one metadata request for the one revision


def test_verify_store_and_bundle(minilm: Synced) -> None:
    assert run_mirror("verify", "--store", str(minilm.store), env=minilm.env).returncode == 0
    assert run_mirror("verify", str(minilm.bundle), env=minilm.env).returncode == 0
    inspect = json.loads(run_mirror("inspect", str(minilm.bundle), "--json", env=minilm.env).stdout)
    assert [r["repo_id"] for r in inspect["repos"]] == [MINILM]


# small repos: nested folders, two revisions, a short id ------------------------------------------------
SHARED = {
    "config.json": b'{"model_type": "gpt2"}',
    "tokenizer/vocab.json": b'{"a": 0}',
    "tokenizer/nested/merges.txt": b"#version: 0.2\na b\n",
    "model.safetensors": safetensors_sized(b"\x00" * 300_000),
    "onnx/model.onnx": b"onnx" * 1000,
    "flax_model.msgpack": b"msgpack" * 100,
}


def test_revisions_short_ids_and_filters_round_trip(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yml"
    manifest.write_text(
        "version: 1\n"
        "defaults:\n  exclude: ['*.msgpack', 'onnx/*']\n"
        "models:\n"
        "  - repo: org/nested\n    revisions: [main, v1.0]\n"
        "  - repo: gpt2\n    include: ['*.json', 'tokenizer/*']\n"
    )
    with LoopbackHub() as hub:
        v1 = hub.add_commit("org/nested", [HubFile(p, data=d) for p, d in SHARED.items()], tags=["v1.0"])
        main = hub.add_commit("org/nested", {"README.md": b"second"}, inherit=True)
        short = hub.add_commit("gpt2", SHARED)
        env = fresh_env(tmp_path / "home", HF_ENDPOINT=hub.url)
        store, bundle = tmp_path / "store", tmp_path / "small.tar.zst"
        run_mirror("sync", str(manifest), "--store", str(store), env=env)
        fetched = [r.path for r in hub.downloads()]
        assert not any("onnx" in p or "msgpack" in p for p in fetched)
        assert not any(p.startswith("/gpt2/") and "safetensors" in p for p in fetched)
        run_mirror("export", str(manifest), "--store", str(store), "-o", str(bundle), env=env)

    members = tar_members(bundle)
    regular = [m for m in members[2:] if m.isfile()]
    links = [m for m in members[2:] if m.islnk()]
    # org/nested has two commits sharing 4 files, gpt2 shares 3 of them: each content packed once
    assert len(regular) == len({*SHARED} - {"onnx/model.onnx", "flax_model.msgpack"}) + 1
    assert len(links) == 4 + 3

    cache = tmp_path / "air" / "cache"
    air = offline_env(tmp_path / "air", HF_HUB_CACHE=str(cache))
    run_mirror("import", str(bundle), env=air)
    out = json.loads(
        python_offline(
            "import json, os\n"
            "from huggingface_hub import snapshot_download, hf_hub_download, scan_cache_dir, errors\n"
            "skip = ['*.msgpack', 'onnx/*']  # the manifest's filter: as on a cache snapshot_download filtered\n"
            "res = {rev: snapshot_download('org/nested', revision=rev, local_files_only=True, ignore_patterns=skip)\n"
            "       for rev in ('main', 'v1.0')}\n"
            "try:\n    snapshot_download('org/nested', local_files_only=True)\n"
            "except errors.IncompleteSnapshotError:\n    res['incomplete'] = True\n"
            "res['gpt2'] = hf_hub_download('gpt2', 'tokenizer/nested/merges.txt')\n"
            "res['warnings'] = [str(w) for w in scan_cache_dir().warnings]\n"
            "print(json.dumps(res))\n",
            air,
        )
    )
    assert out["warnings"] == [] and out["incomplete"]  # trees/ has each commit's complete listing
    assert Path(out["main"]).name == main and Path(out["v1.0"]).name == v1
    assert (Path(out["main"]) / "README.md").read_bytes() == b"second"
    assert not (Path(out["v1.0"]) / "README.md").exists()
    assert (Path(out["v1.0"]) / "tokenizer/nested/merges.txt").read_bytes() == SHARED[
        "tokenizer/nested/merges.txt"
    ]
    assert not (Path(out["main"]) / "onnx").exists()
    assert Path(out["gpt2"]).read_bytes() == SHARED["tokenizer/nested/merges.txt"]
    assert (cache / "models--gpt2" / "snapshots" / short).is_dir()
    assert (cache / "models--org--nested" / "refs" / "v1.0").read_text() == v1


def test_corrupted_body_is_never_stored(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yml"
    manifest.write_text("version: 1\nmodels:\n  - repo: org/bad\n")
    with LoopbackHub() as hub:
        hub.add_commit("org/bad", {"config.json": b'{"x": 1}', "weights.bin": b"w" * 50_000})
        hub.add_fault(Fault("corrupt", match="weights.bin", times=None))
        env = fresh_env(tmp_path / "home", HF_ENDPOINT=hub.url)
        store = tmp_path / "store"
        proc = run_mirror("sync", str(manifest), "--store", str(store), env=env, check=False)
    assert proc.returncode == 4, proc.stderr
    assert "weights.bin" in proc.stderr and "mismatch" in proc.stderr
    assert run_mirror("verify", "--store", str(store), env=env).returncode == 0
    blobs = [p for p in (store / "blobs").rglob("*") if p.is_file()]
    assert all(p.read_bytes() != b"w" * 50_000 for p in blobs)
    assert len(blobs) == 1  # only config.json made it


BAD_MANIFESTS = [
    ("version: 1\nmodels:\n  - repo: org/a\n    colour: blue\n", 4, "models[0].colour"),
    ("version: 1\nmodels:\n  - revisions: [main]\n", 3, "models[0]"),
    ("version: 1\nmodels:\n  - repo: org/a/b\n", 3, "models[0].repo"),
    ("version: 1\nmodels:\n  - repo: org/a\n    include: ['[abc']\n", 4, "models[0].include[0]"),
    ("version: 1\nmodels:\n  - repo: org/a\n    revisions: main\n", 4, "models[0].revisions"),
    ("version: 1\nmodels:\n  - repo: org/a\n  - repo: org/a\n", 4, "models[1]"),
    ("version: 1\nmodels:\n  - repo: org/a\n   bad: [\n", 4, None),
]


@pytest.mark.parametrize(("text", "line", "key"), BAD_MANIFESTS)
def test_bad_manifest_exits_2_before_any_request(
    tmp_path: Path, text: str, line: int, key: str | None
) -> None:
    manifest = tmp_path / "bad.yml"
    manifest.write_text(text)
    with LoopbackHub() as hub:
        env = fresh_env(tmp_path / "home", HF_ENDPOINT=hub.url)
        proc = run_mirror("sync", str(manifest), "--store", str(tmp_path / "store"), env=env, check=False)
        assert hub.requests == []
    assert proc.returncode == 2, proc.stderr
    assert f"{manifest}:{line}" in proc.stderr
    if key:
        assert key in proc.stderr
