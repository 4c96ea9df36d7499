"""Every hub into every layout: ModelScope repos into the HF cache, HF repos into the ModelScope cache,
datasets, `hf_id`, and the clashes refused before anything is written.

The caches are read back by the real clients (modelscope, huggingface_hub, transformers) in new processes
whose endpoints point at a closed port, so any network use fails loudly.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import scan_cache_dir

from mirror.bundle import BundleIndex, read_index, select_all, select_requests, write_bundle
from mirror.clock import SYSTEM
from mirror.errors import IntegrityError, MirrorError
from mirror.importing import BundleImportError, import_bundle
from mirror.manifest import ModelSpec
from mirror.store import Store
from tests.conftest import TINY_MAIN, TINY_V1, SampleStore, SyntheticRepo, env_for_subprocess, put_repo
from tests.modelfiles import safetensors_sized
from tests.roundtrip import SCRIPT_HEAD
from tests.test_import import corrupt_member, leftovers, state

CLOSED_PORT = "http://127.0.0.1:9"
MS_ID = "owner/ms-model"
MS_MASTER = {
    "config.json": b'{"model_type": "bert", "hidden_size": 32}\n',
    "configuration.json": b'{"framework": "pytorch", "task": "feature-extraction"}\n',
    "model.safetensors": safetensors_sized(bytes(range(256)) * 128),  # the one LFS file
    "tokenizer/vocab.txt": b"[PAD]\n[UNK]\nhello\nworld\n",
    "sub/dir/notes.txt": b"nested two deep\n",
    "README.md": b"# ms-model\n",
}
MS_V1 = {
    **{k: v for k, v in MS_MASTER.items() if k != "README.md"},
    "config.json": b'{"model_type": "bert", "hidden_size": 16}\n',
}

MS_READ = (
    SCRIPT_HEAD
    + r"""
from modelscope import snapshot_download

results = []
for repo_id, kwargs in json.loads(sys.argv[1]):
    try:
        path = snapshot_download(repo_id, local_files_only=True, **kwargs)
        results.append({"path": str(path), "tree": tree(path)})
    except Exception as e:
        results.append({"error": f"{type(e).__name__}: {e}"})
print(json.dumps(results))
"""
)

HF_READ = (
    SCRIPT_HEAD
    + r"""
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download

ask = json.loads(sys.argv[1])
result = {"snapshots": [], "files": []}
for repo_id, kwargs in ask.get("snapshots", []):
    result["snapshots"].append(tree(snapshot_download(repo_id, local_files_only=True, **kwargs)))
for repo_id, filename, kwargs in ask.get("files", []):
    path = hf_hub_download(repo_id, filename, local_files_only=True, **kwargs)
    result["files"].append(hashlib.sha256(open(path, "rb").read()).hexdigest())
if ask.get("autoconfig"):
    from transformers import AutoConfig
    result["hidden_size"] = AutoConfig.from_pretrained(ask["autoconfig"]).hidden_size
info = scan_cache_dir()
result["warnings"] = [str(w) for w in info.warnings]
result["repos"] = {
    f"{r.repo_type}/{r.repo_id}": {rev.commit_hash: sorted(rev.refs) for rev in r.revisions} for r in info.repos
}
print(json.dumps(result))
"""
)


def sha_tree(files: dict[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def run_modelscope(cache: Path | None, home: Path, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """modelscope.snapshot_download(..., local_files_only=True) for each call, in a new process."""
    env = env_for_subprocess(home, MODELSCOPE_ENDPOINT=CLOSED_PORT, MODELSCOPE_DOWNLOAD_INTRA_CLOUD="false")
    env.pop("MODELSCOPE_CACHE", None)
    if cache is not None:
        env["MODELSCOPE_CACHE"] = str(cache)
    proc = subprocess.run(
        [sys.executable, "-c", MS_READ, json.dumps(calls)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run_hf(cache: Path, home: Path, ask: dict[str, Any]) -> dict[str, Any]:
    env = env_for_subprocess(
        home,
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(cache),
        HF_HOME=str(home / "hf-home"),
        HF_ENDPOINT=CLOSED_PORT,
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    proc = subprocess.run(
        [sys.executable, "-c", HF_READ, json.dumps(ask)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@dataclass(frozen=True)
class MsBundle:
    store: Store
    repo: SyntheticRepo
    bundle: Path

    @property
    def master(self) -> str:
        return self.repo.commits["master"]

    @property
    def v1(self) -> str:
        return self.repo.commits["v1.0"]


def ms_store(tmp_path: Path) -> tuple[Store, SyntheticRepo]:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    repo = put_repo(store, MS_ID, {"master": MS_MASTER, "v1.0": MS_V1}, source="modelscope")
    return store, repo


@pytest.fixture
def ms(tmp_path: Path, isolated_home: Path) -> MsBundle:
    """A ModelScope-sourced repo: master, the tag v1.0, and v1.0's commit named by itself."""
    store, repo = ms_store(tmp_path)
    spec = ModelSpec(repo=MS_ID, source="modelscope", revisions=("master", "v1.0", repo.commits["v1.0"]))
    bundle = write_bundle(store, select_requests(store, spec.requests()), tmp_path / "ms.tar.zst").path
    return MsBundle(store, repo, bundle)


# -- ModelScope repos into the ModelScope cache ----------------------------------------------------


@pytest.mark.e2e
def test_modelscope_repo_into_modelscope_layout_loads_offline(
    ms: MsBundle, tmp_path: Path, isolated_home: Path
) -> None:
    cache = tmp_path / "ms-cache"
    report = import_bundle(ms.bundle, "modelscope", cache)
    (repo_report,) = report.repos
    assert repo_report.path == cache / "models" / "owner--ms-model"
    assert report.layout == "modelscope"
    results = run_modelscope(
        cache,
        isolated_home,
        [
            (MS_ID, {"revision": "master"}),
            (MS_ID, {"revision": "v1.0"}),
            (MS_ID, {}),
            (MS_ID, {"revision": ms.v1}),
        ],
    )
    assert all("error" not in r for r in results), results
    snapshots = cache / "models" / "owner--ms-model" / "snapshots"
    assert [Path(r["path"]) for r in results] == [
        snapshots / "master",
        snapshots / "v1.0",
        snapshots / "master",
        snapshots / ms.v1,
    ]
    assert results[0]["tree"] == sha_tree(MS_MASTER)
    assert results[1]["tree"] == sha_tree(MS_V1)
    assert results[3]["tree"] == sha_tree(MS_V1)


def test_modelscope_layout_files(ms: MsBundle, tmp_path: Path) -> None:
    cache = tmp_path / "ms-cache"
    import_bundle(ms.bundle, "modelscope", cache)
    assert sorted(p.name for p in cache.iterdir()) == ["models"]
    repo = cache / "models" / "owner--ms-model"
    assert sorted(p.name for p in repo.iterdir()) == [".mirror", "snapshots"]
    snapshots = repo / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == sorted(["master", "v1.0", ms.v1])
    assert files_of(snapshots / "master") == MS_MASTER
    assert files_of(snapshots / "v1.0") == MS_V1
    # Plain files, no links; the same content is one file shared by hardlink.
    assert not any(p.is_symlink() for p in repo.rglob("*"))
    a = (snapshots / "master" / "model.safetensors").stat()
    b = (snapshots / "v1.0" / "model.safetensors").stat()
    assert (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)
    receipts = sorted(p.name for p in (repo / ".mirror" / "receipts").iterdir())
    assert receipts == sorted(["master.json", "v1.0.json", f"{ms.v1}.json"])
    receipt = json.loads((repo / ".mirror" / "receipts" / "v1.0.json").read_text())
    assert (receipt["source"], receipt["revision"], receipt["commit"]) == ("modelscope", "v1.0", ms.v1)
    assert receipt["folder"] == "models/owner--ms-model/snapshots/v1.0"
    assert leftovers(cache) == []

    before = state(cache)
    again = import_bundle(ms.bundle, "modelscope", cache)
    assert all(r.already_present and r.files_written == 0 for r in again.repos)
    assert state(cache) == before

    # A damaged revision folder is rebuilt whole.
    (snapshots / "master" / "config.json").write_bytes(b"{}")
    (snapshots / "master" / "stray.txt").write_text("x")
    again = import_bundle(ms.bundle, "modelscope", cache)
    assert not again.repos[0].already_present
    assert files_of(snapshots / "master") == MS_MASTER
    assert leftovers(cache) == []


def test_modelscope_scan_cache_sees_one_repo(ms: MsBundle, tmp_path: Path) -> None:
    from modelscope_hub._cache_manager import scan_cache

    cache = tmp_path / "ms-cache"
    import_bundle(ms.bundle, "modelscope", cache)
    info = scan_cache(cache)
    assert [(r.repo_id, r.repo_type) for r in info.repos] == [(MS_ID, "model")]


@pytest.mark.e2e
def test_modelscope_default_cache_is_home_dot_cache_modelscope(
    ms: MsBundle, tmp_path: Path, isolated_home: Path
) -> None:
    """Without MODELSCOPE_CACHE, modelscope 1.40 reads ~/.cache/modelscope, not ~/.cache/modelscope/hub
    (modelscope_hub's config default); `mirror import --layout modelscope` must write there."""
    import_bundle(ms.bundle, "modelscope", isolated_home / ".cache" / "modelscope")
    import_bundle(ms.bundle, "modelscope", isolated_home / "elsewhere")
    (found,) = run_modelscope(None, isolated_home, [(MS_ID, {"revision": "v1.0"})])
    assert "error" not in found, found
    assert (
        Path(found["path"])
        == isolated_home / ".cache" / "modelscope" / "models" / "owner--ms-model" / "snapshots" / "v1.0"
    )


def test_damaged_bundle_leaves_no_modelscope_repo_folder(ms: MsBundle, tmp_path: Path) -> None:
    damaged = corrupt_member(ms.bundle, tmp_path / "damaged.tar.zst", "model.safetensors")
    cache = tmp_path / "ms-cache"
    with pytest.raises(BundleImportError):
        import_bundle(damaged, "modelscope", cache)
    assert not cache.exists() or [p for p in cache.rglob("*")] == []


def test_modelscope_layout_refuses_a_shadowing_older_cache(ms: MsBundle, tmp_path: Path) -> None:
    cache = tmp_path / "ms-cache"
    # modelscope_hub reads the pre-1.38 layout first, and dots were masked as ___ there.
    legacy = cache / "hub" / "models" / "owner" / "ms-model"
    legacy.mkdir(parents=True)
    (legacy / "config.json").write_text("{}")
    with pytest.raises(MirrorError, match=r"older cache folder .*hub/models/owner/ms-model"):
        import_bundle(ms.bundle, "modelscope", cache)
    assert not (cache / "models").exists()
    # An empty one hides nothing.
    (legacy / "config.json").unlink()
    import_bundle(ms.bundle, "modelscope", cache)


def test_modelscope_layout_refuses_a_folder_it_did_not_write(ms: MsBundle, tmp_path: Path) -> None:
    cache = tmp_path / "ms-cache"
    master = cache / "models" / "owner--ms-model" / "snapshots" / "master"
    master.mkdir(parents=True)
    (master / "mine.bin").write_bytes(b"keep me")
    with pytest.raises(MirrorError, match="not written by mirror"):
        import_bundle(ms.bundle, "modelscope", cache)
    assert files_of(master) == {"mine.bin": b"keep me"}
    assert not (cache / "models" / "owner--ms-model" / ".mirror").exists()
    # An empty one (a download that never started) holds nothing to lose.
    (master / "mine.bin").unlink()
    import_bundle(ms.bundle, "modelscope", cache)
    assert files_of(master) == MS_MASTER


# -- ModelScope repos into the HF cache ------------------------------------------------------------


@pytest.mark.e2e
def test_modelscope_repo_into_hf_layout_loads_offline(
    ms: MsBundle, tmp_path: Path, isolated_home: Path
) -> None:
    cache = tmp_path / "hub"
    import_bundle(ms.bundle, "hf", cache)
    result = run_hf(
        cache,
        isolated_home,
        {
            "snapshots": [(MS_ID, {}), (MS_ID, {"revision": "v1.0"}), (MS_ID, {"revision": ms.v1})],
            "files": [(MS_ID, "config.json", {"revision": "master"}), (MS_ID, "config.json", {})],
            "autoconfig": MS_ID,  # from_pretrained("owner/name") asks for main
        },
    )
    # The default revision (main) is master's commit: the repo has no main of its own.
    assert result["snapshots"] == [sha_tree(MS_MASTER), sha_tree(MS_V1), sha_tree(MS_V1)]
    config = hashlib.sha256(MS_MASTER["config.json"]).hexdigest()
    assert result["files"] == [config, config]
    assert result["hidden_size"] == 32
    assert result["warnings"] == []
    assert result["repos"] == {f"model/{MS_ID}": {ms.master: ["main", "master"], ms.v1: ["v1.0"]}}

    repo = cache / "models--owner--ms-model"
    assert (repo / "refs" / "master").read_text() == ms.master
    assert (repo / "refs" / "main").read_text() == ms.master
    assert not (repo / "refs" / ms.v1).exists()
    # Blobs named as the HF cache names them: sha256 for the LFS file, git blob sha1 for the others.
    small = [d for files in (MS_MASTER, MS_V1) for p, d in files.items() if p != "model.safetensors"]
    expected = {git_sha1(d) for d in small} | {hashlib.sha256(MS_MASTER["model.safetensors"]).hexdigest()}
    assert {p.name for p in (repo / "blobs").iterdir()} == expected
    assert sorted(p.name for p in (repo / "trees").iterdir()) == sorted(
        f"{c}.json" for c in (ms.master, ms.v1)
    )
    assert scan_cache_dir(cache).warnings == []
    assert leftovers(cache) == []


@pytest.mark.e2e
def test_hf_id_names_the_repo_in_the_hf_cache(tmp_path: Path, isolated_home: Path) -> None:
    store, repo = ms_store(tmp_path)
    spec = ModelSpec(repo=MS_ID, source="modelscope", revisions=("master",), hf_id="hf-org/hf-name")
    bundle = write_bundle(store, select_requests(store, spec.requests()), tmp_path / "b.tar.zst").path
    (indexed,) = read_index(bundle).repos
    assert indexed.hf_id == "hf-org/hf-name"
    cache = tmp_path / "hub"
    import_bundle(bundle, "hf", cache)
    assert sorted(p.name for p in cache.iterdir()) == ["CACHEDIR.TAG", "models--hf-org--hf-name"]
    result = run_hf(cache, isolated_home, {"snapshots": [("hf-org/hf-name", {})]})
    assert result["snapshots"] == [sha_tree(MS_MASTER)]
    assert result["repos"] == {"model/hf-org/hf-name": {repo.commits["master"]: ["main", "master"]}}
    # The other layouts keep the repo's own id.
    ms_cache = tmp_path / "ms-cache"
    import_bundle(bundle, "modelscope", ms_cache)
    assert files_of(ms_cache / "models" / "owner--ms-model" / "snapshots" / "master") == MS_MASTER
    target = tmp_path / "dir"
    import_bundle(bundle, "dir", target)
    assert files_of(target / "owner" / "ms-model") == MS_MASTER


def test_implied_main_never_moves_a_real_main(tmp_path: Path, isolated_home: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    hf = put_repo(store, "org/same", {"main": {"config.json": b'{"from": "hf"}'}})
    ms = put_repo(
        store,
        "org/same",
        {"master": {"config.json": b'{"from": "ms"}'}, "v2": {"config.json": b'{"from": "ms v2"}'}},
        source="modelscope",
    )
    hf_bundle = write_bundle(
        store, [s for s in select_all(store) if s.key.source == "huggingface"], tmp_path / "hf.tar.zst"
    ).path
    ms_bundle = write_bundle(
        store, [s for s in select_all(store) if s.key.source == "modelscope"], tmp_path / "ms.tar.zst"
    ).path
    v2_first = write_bundle(
        store,
        select_requests(
            store, ModelSpec(repo="org/same", source="modelscope", revisions=("v2", "master")).requests()
        ),
        tmp_path / "v2.tar.zst",
    ).path

    def refs(cache: Path) -> dict[str, str]:
        return {p.name: p.read_text() for p in (cache / "models--org--same" / "refs").iterdir()}

    # A real main first: the ModelScope import adds its refs and leaves main alone.
    cache = tmp_path / "a"
    import_bundle(hf_bundle, "hf", cache)
    import_bundle(ms_bundle, "hf", cache)
    assert refs(cache) == {"main": hf.commits["main"], "master": ms.commits["master"], "v2": ms.commits["v2"]}
    assert scan_cache_dir(cache).warnings == []

    # ModelScope first: main follows the first revision of each ModelScope import, until a real main comes.
    cache = tmp_path / "b"
    import_bundle(ms_bundle, "hf", cache)
    assert refs(cache)["main"] == ms.commits["master"]
    again = import_bundle(ms_bundle, "hf", cache)
    assert again.repos[0].already_present
    import_bundle(v2_first, "hf", cache)
    assert refs(cache)["main"] == ms.commits["v2"]
    import_bundle(hf_bundle, "hf", cache)
    assert refs(cache)["main"] == hf.commits["main"]
    import_bundle(ms_bundle, "hf", cache)
    assert refs(cache)["main"] == hf.commits["main"]


def test_a_modelscope_repo_with_its_own_main_gets_no_alias(tmp_path: Path, isolated_home: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    ms = put_repo(
        store, "org/m", {"master": {"a.txt": b"master"}, "main": {"a.txt": b"main"}}, source="modelscope"
    )
    cache = tmp_path / "hub"
    import_bundle(write_bundle(store, select_all(store), tmp_path / "b.tar.zst").path, "hf", cache)
    repo = cache / "models--org--m"
    assert (repo / "refs" / "main").read_text() == ms.commits["main"]
    assert (repo / "refs" / "master").read_text() == ms.commits["master"]
    assert not (repo / ".mirror" / "implied-main.json").exists()


# -- Hugging Face repos into the ModelScope cache --------------------------------------------------


@pytest.mark.e2e
def test_hf_repos_into_modelscope_layout_load_offline(
    sample_store: SampleStore, tmp_path: Path, isolated_home: Path
) -> None:
    st = sample_store.store
    bundle = write_bundle(
        st, [s for s in select_all(st) if s.key.repo_id != "gpt2"], tmp_path / "b.tar.zst"
    ).path
    cache = tmp_path / "ms-cache"
    import_bundle(bundle, "modelscope", cache)
    assert sorted(p.name for p in cache.iterdir()) == ["datasets", "models"]
    results = run_modelscope(
        cache,
        isolated_home,
        [
            ("org/tiny", {}),  # no revision: modelscope tries master, then main
            ("org/tiny", {"revision": "v1.0"}),
            ("org/tiny", {"revision": "main"}),
            ("org/data", {"repo_type": "dataset"}),
        ],
    )
    assert all("error" not in r for r in results), results
    assert [r["tree"] for r in results] == [
        sha_tree(TINY_MAIN),
        sha_tree(TINY_V1),
        sha_tree(TINY_MAIN),
        sha_tree({"data/train.csv": b"a,b\n1,2\n"}),
    ]
    # An HF repo's main is also ModelScope's default revision, master: the folder modelscope reads first.
    assert Path(results[3]["path"]) == cache / "datasets" / "org--data" / "snapshots" / "master"


def test_modelscope_layout_refuses_a_short_id_before_writing(
    sample_store: SampleStore, tmp_path: Path
) -> None:
    st = sample_store.store
    bundle = write_bundle(st, select_all(st), tmp_path / "b.tar.zst").path
    cache = tmp_path / "ms-cache"
    with pytest.raises(MirrorError, match=r"'gpt2' has no owner") as err:
        import_bundle(bundle, "modelscope", cache)
    assert err.value.exit_code in (1, 2)
    assert not isinstance(err.value, IntegrityError)
    assert not cache.exists()


def test_modelscope_layout_refuses_spaces(tmp_path: Path, isolated_home: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(store, "org/app", {"main": {"app.py": b"print()"}}, repo_type="space")
    bundle = write_bundle(store, select_all(store), tmp_path / "b.tar.zst").path
    with pytest.raises(MirrorError, match="not spaces"):
        import_bundle(bundle, "modelscope", tmp_path / "ms-cache")
    assert not (tmp_path / "ms-cache").exists()


# -- datasets and clashes --------------------------------------------------------------------------


@pytest.mark.e2e
def test_hf_dataset_into_hf_layout_loads_offline(
    sample_store: SampleStore, tmp_path: Path, isolated_home: Path
) -> None:
    st = sample_store.store
    bundle = write_bundle(
        st, [s for s in select_all(st) if s.key.repo_type == "dataset"], tmp_path / "d.tar.zst"
    ).path
    cache = tmp_path / "hub"
    import_bundle(bundle, "hf", cache)
    assert sorted(p.name for p in cache.iterdir()) == ["CACHEDIR.TAG", "datasets--org--data"]
    result = run_hf(cache, isolated_home, {"snapshots": [("org/data", {"repo_type": "dataset"})]})
    assert result["snapshots"] == [sha_tree({"data/train.csv": b"a,b\n1,2\n"})]
    assert result["warnings"] == []
    assert result["repos"] == {"dataset/org/data": {sample_store.data.commits["main"]: ["main"]}}


@pytest.fixture
def both_hubs(tmp_path: Path, isolated_home: Path) -> tuple[Store, Path]:
    """One bundle holding org/same from the Hugging Face Hub and org/same from ModelScope."""
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(store, "org/same", {"main": {"config.json": b'{"from": "hf"}'}})
    put_repo(store, "org/same", {"master": {"config.json": b'{"from": "ms"}'}}, source="modelscope")
    return store, write_bundle(store, select_all(store), tmp_path / "both.tar.zst").path


@pytest.mark.parametrize("layout", ["hf", "modelscope", "dir"])
def test_same_id_from_both_hubs_is_refused_before_writing(
    both_hubs: tuple[Store, Path], tmp_path: Path, layout: str
) -> None:
    _, bundle = both_hubs
    target = tmp_path / f"target-{layout}"
    with pytest.raises(MirrorError, match=r"huggingface:org/same and modelscope:org/same would share") as err:
        import_bundle(bundle, layout, target)
    assert not isinstance(err.value, IntegrityError)
    assert not target.exists()


@pytest.mark.e2e
def test_hf_id_resolves_the_clash(both_hubs: tuple[Store, Path], tmp_path: Path, isolated_home: Path) -> None:
    store, _ = both_hubs
    specs = [
        ModelSpec(repo="org/same", source="huggingface", revisions=("main",)),
        ModelSpec(repo="org/same", source="modelscope", revisions=("master",), hf_id="org/same-ms"),
    ]
    bundle = write_bundle(
        store, select_requests(store, [r for s in specs for r in s.requests()]), tmp_path / "b.tar.zst"
    ).path
    cache = tmp_path / "hub"
    import_bundle(bundle, "hf", cache)
    result = run_hf(
        cache,
        isolated_home,
        {"files": [("org/same", "config.json", {}), ("org/same-ms", "config.json", {"revision": "master"})]},
    )
    assert result["files"] == [
        hashlib.sha256(b'{"from": "hf"}').hexdigest(),
        hashlib.sha256(b'{"from": "ms"}').hexdigest(),
    ]
    assert result["warnings"] == []


def test_hf_id_in_the_index(both_hubs: tuple[Store, Path], tmp_path: Path) -> None:
    store, plain = both_hubs
    # Written only when set: a bundle without any hf_id has no such key.
    assert "hf_id" not in json.dumps(read_index(plain).to_json())
    with pytest.raises(MirrorError, match="two hf_id values"):
        select_requests(
            store,
            [
                *ModelSpec(
                    repo="org/same", source="modelscope", revisions=("master",), hf_id="a/b"
                ).requests(),
                *ModelSpec(
                    repo="org/same", source="modelscope", revisions=("master",), hf_id="a/c"
                ).requests(),
            ],
        )
    assert all(s.hf_id is None for s in select_all(store))
    data = read_index(plain).to_json()
    data["repos"][1]["hf_id"] = "a/b/c"
    with pytest.raises(IntegrityError, match="invalid hf_id"):
        BundleIndex.from_json(data)
    data["repos"][1]["hf_id"] = 7
    with pytest.raises(IntegrityError, match="hf_id"):
        BundleIndex.from_json(data)
