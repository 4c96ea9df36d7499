"""ModelScope as a source: listed and fetched over its own API, every file checked against its sha256,
and content shared with Hugging Face stored once."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from mirror.bundle import select_all, write_bundle
from mirror.clock import SYSTEM
from mirror.errors import IntegrityError
from mirror.hashing import lfs_pointer_oid
from mirror.manifest import parse_manifest
from mirror.repo import RepoKey
from mirror.settings import Settings
from mirror.store import Store
from mirror.sync import default_source_factory, plan_targets, sync
from mirror.verify import verify_store
from tests.hub import Fault, HubFile, LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.roundtrip import (
    CLOSED_PORT_ENDPOINT,
    MINILM,
    embeddings,
    fresh_env,
    minilm_folder,
    offline_env,
    python_offline,
    run_mirror,
)
from tests.test_roundtrip import tar_members
from tests.test_sync import FAST

pytestmark = pytest.mark.e2e  # the loopback hub, and the installed `mirror` in subprocesses

SHARED = safetensors_sized(b"the same weights on both hubs" * 1000)
FILES = [
    HubFile("config.json", data=b'{"model_type": "bert"}'),
    HubFile("tokenizer/vocab.txt", data=b"[PAD]\n[UNK]\n"),
    HubFile("model.safetensors", data=SHARED),
]


def sync_text(store: Store, hub: LoopbackHub, text: str, **env: str):  # type: ignore[no-untyped-def]
    settings = Settings.from_env(
        store.local_root, {"HF_ENDPOINT": hub.url, "MODELSCOPE_ENDPOINT": hub.url, **env}
    )
    return sync(
        store, plan_targets(parse_manifest(text).requests()), default_source_factory(settings), policy=FAST
    )


def test_modelscope_repo_is_listed_verified_and_recorded(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    with LoopbackHub() as hub:
        commit = hub.add_commit("owner/model", FILES, branch="master", tags=["v1.0"])
        report = sync_text(
            store,
            hub,
            "version: 1\nmodels:\n  - repo: owner/model\n    source: modelscope\n    revisions: [master, v1.0]\n",
        )
        assert report.exit_code == 0, report.to_json()
        assert all("/api/v1/models/owner/model/" in r.path for r in hub.requests)
        assert len(hub.downloads()) == 3  # shared by both revisions: fetched once
    key = RepoKey("modelscope", "model", "owner/model")
    refs = store.read_refs(key)
    assert refs["master"].commit == refs["v1.0"].commit == commit
    snap = store.read_snapshot(key, commit)
    assert snap is not None and snap.complete
    for f in snap.files:
        info = hub.file_info("owner/model", f.path, "master")
        assert f.sha256 == info.sha256
        # the git blob ids the HF cache names blobs by, though ModelScope lists only sha256
        assert f.oid == (lfs_pointer_oid(info.sha256, info.size) if info.lfs else info.git_sha1)
        assert f.lfs == info.lfs
    assert verify_store(store).ok


def test_corrupted_modelscope_download_is_caught_by_mirror(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    with LoopbackHub() as hub:
        hub.add_commit("owner/model", FILES, branch="master")
        hub.add_fault(Fault("corrupt", match="FilePath=tokenizer%2Fvocab.txt", times=None, method="GET"))
        report = sync_text(store, hub, "version: 1\nmodels:\n  - repo: owner/model\n    source: modelscope\n")
    assert report.exit_code == 4
    assert isinstance(report.items[0].error, IntegrityError)
    assert "tokenizer/vocab.txt" in str(report.items[0].error)
    assert not store.has_blob(hashlib.sha256(b"[PAD]\n[UNK]\n").hexdigest())
    assert store.read_refs(RepoKey("modelscope", "model", "owner/model")) == {}
    assert verify_store(store).ok


def test_same_content_on_both_hubs_is_checked_from_each_and_stored_once(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    with LoopbackHub() as hub:
        hub.add_commit("org/hf-model", [HubFile("model.safetensors", data=SHARED), FILES[0]])
        hub.add_commit("owner/ms-model", [HubFile("weights/model.safetensors", data=SHARED)], branch="master")
        report = sync_text(
            store,
            hub,
            "version: 1\nmodels:\n  - repo: org/hf-model\n  - repo: owner/ms-model\n    source: modelscope\n",
        )
        assert report.exit_code == 0, report.to_json()
        shared_gets = [r for r in hub.downloads() if "model.safetensors" in r.path]
    assert len(shared_gets) == 2  # one from each hub, each verified against that hub's hash
    assert {"/api/v1/" in r.path for r in shared_gets} == {True, False}
    blobs = list(store.iter_blobs())
    assert len(blobs) == 2  # the shared weights once, and config.json
    assert hashlib.sha256(SHARED).hexdigest() in {name for name, _ in blobs}
    bundle = tmp_path / "both.tar.zst"
    write_bundle(store, select_all(store), bundle)
    members = tar_members(bundle)[2:]
    weights = [m for m in members if m.name.endswith("model.safetensors")]
    assert sorted(m.type for m in weights) == sorted([tarfile.REGTYPE, tarfile.LNKTYPE])  # packed once
    assert {m.name.split("/")[1] for m in weights} == {"huggingface", "modelscope"}


def test_modelscope_token_is_sent_and_never_reported(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    with LoopbackHub() as hub:
        hub.add_commit("owner/private", FILES, branch="master")
        hub.required_token = "ms-secret"
        text = "version: 1\nmodels:\n  - repo: owner/private\n    source: modelscope\n"
        denied = sync_text(store, hub, text)
        assert denied.exit_code == 1 and "MODELSCOPE_API_TOKEN" in str(denied.items[0].error)
        allowed = sync_text(store, hub, text, MODELSCOPE_API_TOKEN="ms-secret")
        assert allowed.exit_code == 0
    assert "ms-secret" not in json.dumps(allowed.to_json()) + json.dumps(denied.to_json())


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "from mirror.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "for cmd in ('sync', 'export', 'import', 'inspect', 'verify', 'status', 'gc'):\n"
        "    try:\n        main([cmd, '--help'])\n    except SystemExit:\n        pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'modelscope',\n"
        "    'modelscope_hub', 'huggingface_hub', 'sentence_transformers'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in proc.stderr, proc.stderr[-2000:]


# end to end, as a user runs it -------------------------------------------------------------------------
def test_modelscope_minilm_round_trip_into_both_caches(tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2 files over the ModelScope API -> modelscope cache and HF cache, offline."""
    manifest = tmp_path / "ms.yml"
    manifest.write_text(f"version: 1\nmodels:\n  - repo: {MINILM}\n    source: modelscope\n")
    with LoopbackHub() as hub:
        hub.add_folder(MINILM, minilm_folder(), branch="master")
        env = fresh_env(tmp_path / "home", MODELSCOPE_ENDPOINT=hub.url)
        store, bundle = tmp_path / "store", tmp_path / "ms.tar.zst"
        run_mirror("sync", str(manifest), "--store", str(store), env=env)
        assert not any("/resolve/" in r.path for r in hub.requests)  # only the ModelScope API was used
        run_mirror("export", str(manifest), "--store", str(store), "-o", str(bundle), env=env)

    ms_cache = tmp_path / "air" / "ms-cache"
    air = offline_env(
        tmp_path / "air",
        MODELSCOPE_CACHE=str(ms_cache),
        MODELSCOPE_ENDPOINT=CLOSED_PORT_ENDPOINT,
        HF_HUB_CACHE=str(tmp_path / "air" / "hf-cache"),
    )
    run_mirror("import", str(bundle), "--layout", "modelscope", env=air)
    folder = (
        python_offline(
            "from modelscope import snapshot_download\n"
            f"print(snapshot_download({MINILM!r}, revision='master', local_files_only=True))\n",
            air,
        )
        .strip()
        .splitlines()[-1]
    )
    for original in minilm_folder().rglob("*"):
        if original.is_file():
            assert (
                Path(folder) / original.relative_to(minilm_folder())
            ).read_bytes() == original.read_bytes()

    run_mirror("import", str(bundle), "--layout", "hf", env=air)
    assert embeddings(MINILM, air) == embeddings(str(minilm_folder()), air)
    warnings = python_offline(
        "from huggingface_hub import scan_cache_dir\nprint([str(w) for w in scan_cache_dir().warnings])\n",
        air,
    )
    assert warnings.strip() == "[]"


def test_hf_dataset_round_trip(tmp_path: Path) -> None:
    manifest = tmp_path / "ds.yml"
    manifest.write_text("version: 1\nmodels:\n  - repo: org/corpus\n    type: dataset\n")
    with LoopbackHub() as hub:
        commit = hub.add_commit(
            "org/corpus",
            {"data/train.jsonl": b'{"text": "hello"}\n', "README.md": b"# corpus"},
            repo_type="dataset",
        )
        env = fresh_env(tmp_path / "home", HF_ENDPOINT=hub.url)
        store, bundle = tmp_path / "store", tmp_path / "ds.tar.zst"
        run_mirror("sync", str(manifest), "--store", str(store), env=env)
        assert all("/datasets/" in r.path for r in hub.requests)
        run_mirror("export", "--store", str(store), "-o", str(bundle), env=env)
    air = offline_env(tmp_path / "air", HF_HUB_CACHE=str(tmp_path / "air" / "cache"))
    run_mirror("import", str(bundle), env=air)
    folder = python_offline(
        "from huggingface_hub import snapshot_download\n"
        "print(snapshot_download('org/corpus', repo_type='dataset', local_files_only=True))\n",
        air,
    ).strip()
    assert Path(folder).name == commit
    assert (Path(folder) / "data" / "train.jsonl").read_bytes() == b'{"text": "hello"}\n'
    assert (tmp_path / "air" / "cache" / "datasets--org--corpus" / "refs" / "main").read_text() == commit
