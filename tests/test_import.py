"""Import: the hf layout loads offline with the real huggingface_hub; the dir layout; damaged bundles."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard
from huggingface_hub import scan_cache_dir

from mirror.bundle import open_bundle, read_index, select_all, select_requests, write_bundle
from mirror.clock import SYSTEM
from mirror.errors import IntegrityError, MirrorError, UsageError
from mirror.importing import BundleImportError, import_bundle
from mirror.manifest import ModelSpec
from mirror.store import Store
from tests.conftest import TINY_MAIN, TINY_V1, SampleStore, env_for_subprocess, put_repo
from tests.modelfiles import safetensors_sized
from tests.roundtrip import SCRIPT_HEAD, run_mirror

OFFLINE_CHECK = (
    SCRIPT_HEAD
    + r"""
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download

result = {"config": open(hf_hub_download("org/tiny", "config.json"), "rb").read().decode()}
result["config_v1"] = open(hf_hub_download("org/tiny", "config.json", revision="v1.0"), "rb").read().decode()
result["v1.0"] = tree(snapshot_download("org/tiny", revision="v1.0"))
result["main"] = tree(snapshot_download("org/tiny", revision="main"))
result["gpt2"] = tree(snapshot_download("gpt2"))
result["data"] = tree(snapshot_download("org/data", repo_type="dataset"))
info = scan_cache_dir()
result["warnings"] = [str(w) for w in info.warnings]
result["repos"] = {
    f"{r.repo_type}/{r.repo_id}": {rev.commit_hash: sorted(rev.refs) for rev in r.revisions}
    for r in info.repos
}
print(json.dumps(result))
"""
)


def sha_tree(files: dict[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}


def run_offline(script: str, cache: Path, home: Path) -> dict[str, Any]:
    env = env_for_subprocess(
        home,
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(cache),
        HF_HOME=str(home / "hf-home"),
        HF_ENDPOINT="http://127.0.0.1:9",  # a closed port: any network use fails loudly
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def state(root: Path, *, receipts: bool = True) -> dict[str, tuple[str, int, str]]:
    """Every entry under root: kind, mtime, content or link target.

    The `.mirror` bookkeeping folders' own mtimes are left out (staging comes and goes there), and with
    receipts=False everything inside them.
    """
    found: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirs, names in os.walk(root):
        if not receipts and ".mirror" in dirs:
            dirs.remove(".mirror")
        for n in dirs + names:
            p = Path(dirpath) / n
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            if p.is_symlink():
                found[rel] = ("link", st.st_mtime_ns, os.readlink(p))
            elif p.is_dir():
                if n != ".mirror":
                    found[rel] = ("dir", st.st_mtime_ns, "")
            else:
                found[rel] = ("file", st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return found


def leftovers(root: Path) -> list[str]:
    """Temp and staging names an import must never leave behind."""
    return [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.name.endswith((".tmp", ".part", ".old")) or p.parent.name == "tmp" or p.name == "tmp"
    ]


def corrupt_member(bundle: Path, out: Path, suffix: str) -> Path:
    """A copy of the bundle whose first regular member ending in `suffix` has one byte flipped."""
    with open(bundle, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as raw:
        data = bytearray(raw.read())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        victim = next(m for m in tar.getmembers() if m.name.endswith(suffix) and m.isreg())
    data[victim.offset_data] ^= 0xFF
    out.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(bytes(data)))
    return out


@pytest.fixture
def bundle(sample_store: SampleStore, tmp_path: Path) -> Path:
    return write_bundle(sample_store.store, select_all(sample_store.store), tmp_path / "b.tar.zst").path


# -- hf layout -------------------------------------------------------------------------------------


@pytest.mark.e2e  # the installed `mirror` in subprocesses
def test_import_threads_restore_the_same_files_and_damage_is_caught_at_any_count(
    bundle: Path, tmp_path: Path
) -> None:
    env = env_for_subprocess(tmp_path / "home")
    trees = {}
    for threads in ("1", "16"):
        target = tmp_path / f"dir-{threads}"
        run_mirror(
            "import", str(bundle), "--layout", "dir", "--target", str(target), "--threads", threads, env=env
        )
        trees[threads] = {
            p.relative_to(target).as_posix(): p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()
        }
    assert trees["1"] == trees["16"] and any(name.endswith("model.safetensors") for name in trees["1"])
    damaged = corrupt_member(bundle, tmp_path / "damaged.tar.zst", "model.safetensors")
    target = tmp_path / "dir-damaged"
    proc = run_mirror(
        "import",
        str(damaged),
        "--layout",
        "dir",
        "--target",
        str(target),
        "--threads",
        "16",
        env=env,
        check=False,
    )
    assert proc.returncode == 4 and "model.safetensors" in proc.stderr and not target.exists()
    help_text = run_mirror("import", "--help", env=env).stdout
    assert "--threads" in help_text and "decompress" in help_text


@pytest.mark.e2e
def test_hf_layout_loads_offline_with_huggingface_hub(
    bundle: Path, tmp_path: Path, isolated_home: Path, sample_store: SampleStore
) -> None:
    cache = tmp_path / "hub"
    report = import_bundle(bundle, "hf", cache)
    assert not any(r.already_present for r in report.repos)
    result = run_offline(OFFLINE_CHECK, cache, isolated_home)
    assert result["config"].encode() == TINY_MAIN["config.json"]
    assert result["config_v1"].encode() == TINY_V1["config.json"]
    assert result["v1.0"] == sha_tree(TINY_V1)
    assert result["main"] == sha_tree(TINY_MAIN)
    assert result["warnings"] == []
    tiny = sample_store.tiny
    assert result["repos"]["model/org/tiny"] == {
        tiny.commits["main"]: ["main"],
        tiny.commits["v1.0"]: ["v1.0"],
    }
    assert result["repos"]["model/gpt2"] == {sample_store.gpt2.commits["main"]: ["main"]}
    assert result["repos"]["dataset/org/data"] == {sample_store.data.commits["main"]: ["main"]}


def test_hf_layout_files(bundle: Path, tmp_path: Path, sample_store: SampleStore) -> None:
    cache = tmp_path / "hub"
    import_bundle(bundle, "hf", cache)
    assert (cache / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55\n")
    assert sorted(p.name for p in cache.iterdir()) == [
        "CACHEDIR.TAG",
        "datasets--org--data",
        "models--gpt2",
        "models--org--tiny",
    ]
    repo = cache / "models--org--tiny"
    tiny = sample_store.tiny
    assert (repo / "refs" / "main").read_bytes() == tiny.commits["main"].encode()
    assert (repo / "refs" / "v1.0").read_bytes() == tiny.commits["v1.0"].encode()
    index = read_index(bundle)
    by_commit = {(c.commit, f.path): f for c in index.repos[-1].commits for f in c.files}
    records = {path: f for (commit, path), f in by_commit.items() if commit == tiny.commits["v1.0"]}
    for link in (repo / "snapshots").rglob("*"):
        if link.is_dir():
            continue
        assert link.is_symlink()
        target = os.readlink(link)
        assert not target.startswith("/")
        commit, rel = link.relative_to(repo / "snapshots").as_posix().split("/", 1)
        assert target == "../" * (rel.count("/") + 2) + "blobs/" + by_commit[commit, rel].etag
        assert link.resolve().parent == (repo / "blobs").resolve()
    # LFS files are named by sha256, the others by their git blob sha1, as the hub's etags are.
    weights = repo / "blobs" / hashlib.sha256(TINY_V1["model.safetensors"]).hexdigest()
    assert weights.read_bytes() == TINY_V1["model.safetensors"]
    assert (repo / "blobs" / records["config.json"].oid).exists()
    tree = json.loads((repo / "trees" / f"{tiny.commits['v1.0']}.json").read_text())
    assert tree["format_version"] == 1
    assert tree["files"]["model.safetensors"] == {
        "size": len(TINY_V1["model.safetensors"]),
        "blob_id": records["model.safetensors"].oid,
        "lfs_sha256": records["model.safetensors"].sha256,
        "lfs_size": len(TINY_V1["model.safetensors"]),
    }
    assert tree["files"]["config.json"] == {
        "size": len(TINY_V1["config.json"]),
        "blob_id": records["config.json"].oid,
    }
    # The receipt sits inside the repo folder, where scan_cache_dir never looks.
    (receipt,) = (repo / ".mirror" / "receipts").iterdir()
    data = json.loads(receipt.read_text())
    assert data["bundle"] == bundle.name
    with open_bundle(bundle) as reader:  # the bundle's id: the sha256 of its index
        assert data["bundle_id"] == hashlib.sha256(reader.index_bytes).hexdigest()
    assert [r["name"] for r in data["revisions"]] == ["main", "v1.0"]
    assert scan_cache_dir(cache).warnings == []
    assert leftovers(cache) == []


@pytest.mark.e2e
def test_hf_filtered_commit_has_its_complete_tree_listing(
    sample_store: SampleStore, tmp_path: Path, isolated_home: Path
) -> None:
    spec = ModelSpec(repo="org/tiny", source="huggingface", revisions=("main",), include=("*.json",))
    out = write_bundle(
        sample_store.store, select_requests(sample_store.store, spec.requests()), tmp_path / "f.tar.zst"
    )
    cache = tmp_path / "hub"
    import_bundle(out.path, "hf", cache)
    repo = cache / "models--org--tiny"
    assert len(list((repo / "trees").iterdir())) == 1  # as snapshot_download(allow_patterns=...) leaves it
    script = (
        "import json, os\nfrom huggingface_hub import snapshot_download, errors\n"
        "try:\n    snapshot_download('org/tiny', revision='main')\n"
        "except errors.IncompleteSnapshotError:\n    pass\nelse:\n    raise SystemExit('complete?')\n"
        "p = snapshot_download('org/tiny', revision='main', allow_patterns=['*.json'])\n"
        "print(json.dumps(sorted(os.listdir(p))))\n"
    )
    env = env_for_subprocess(
        isolated_home, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_ENDPOINT="http://127.0.0.1:9"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["config.json", "tokenizer.json"]


def test_scan_cache_dir_tolerates_an_import_in_progress(tmp_path: Path, isolated_home: Path) -> None:
    st = Store.at(tmp_path / "store", clock=SYSTEM)
    # Incompressible, so the bundle is read in many pieces and progress fires while files are staged.
    put_repo(
        st,
        "org/big",
        {"main": {"config.json": b"{}", "model.safetensors": safetensors_sized(os.urandom(2 << 20))}},
    )
    bundle = write_bundle(st, select_all(st), tmp_path / "big.tar.zst").path
    for cache in (tmp_path / "fresh", tmp_path / "again", tmp_path / "again"):
        seen: list[list[Any]] = []

        def scan(n: int, cache: Path = cache, seen: list[list[Any]] = seen) -> None:
            if (cache / "models--org--big" / ".mirror" / "tmp").exists():
                seen.append(scan_cache_dir(cache).warnings)

        import_bundle(bundle, "hf", cache, progress=scan)
        assert seen and all(w == [] for w in seen)
        assert scan_cache_dir(cache).warnings == []


def test_reimport_changes_nothing(bundle: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    import_bundle(bundle, "hf", cache)
    before = state(cache)
    report = import_bundle(bundle, "hf", cache)
    assert all(r.already_present and r.files_written == 0 for r in report.repos)
    assert state(cache) == before
    assert leftovers(cache) == []


def test_other_repos_in_the_target_are_untouched(bundle: Path, tmp_path: Path, isolated_home: Path) -> None:
    other_store = Store.at(tmp_path / "other-store", clock=SYSTEM)
    put_repo(
        other_store,
        "org/other",
        {"main": {"config.json": b"{}", "w.safetensors": safetensors_sized(b"w" * 200)}},
    )
    cache = tmp_path / "hub"
    import_bundle(
        write_bundle(other_store, select_all(other_store), tmp_path / "o.tar.zst").path, "hf", cache
    )
    before = state(cache / "models--org--other")
    import_bundle(bundle, "hf", cache)
    assert state(cache / "models--org--other") == before
    assert {r.repo_id for r in scan_cache_dir(cache).repos} == {"org/other", "org/tiny", "gpt2", "org/data"}


def test_damaged_file_publishes_nothing_of_the_bundle(bundle: Path, tmp_path: Path) -> None:
    # A bundle is one unit: the intact repos (gpt2, org/data) are not published either.
    damaged = corrupt_member(bundle, tmp_path / "damaged.tar.zst", "model.safetensors")
    cache = tmp_path / "hub"
    with pytest.raises(
        BundleImportError, match=r"repos/huggingface/model/org/tiny/.*model\.safetensors"
    ) as err:
        import_bundle(damaged, "hf", cache)
    assert isinstance(err.value, IntegrityError) and err.value.exit_code == 4
    assert "nothing of the bundle was imported" in str(err.value)
    assert err.value.report.repos == ()
    assert not cache.exists()


def test_damaged_file_leaves_an_existing_copy_as_it_was(bundle: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    import_bundle(bundle, "hf", cache)
    before = state(cache)
    # tokenizer.json is shared: gpt2 carries it, org/tiny links to it, so both are named.
    damaged = corrupt_member(bundle, tmp_path / "damaged.tar.zst", "tokenizer.json")
    with pytest.raises(BundleImportError) as err:
        import_bundle(damaged, "hf", cache)
    assert "gpt2" in str(err.value) and "org/tiny" in str(err.value)
    assert err.value.report.repos == ()
    assert state(cache) == before
    assert leftovers(cache) == []


def test_truncated_bundle_publishes_nothing(bundle: Path, tmp_path: Path) -> None:
    data = bundle.read_bytes()
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(data[: len(data) - 30])
    cache = tmp_path / "hub"
    with pytest.raises(IntegrityError, match="truncated"):
        import_bundle(cut, "hf", cache)
    assert not cache.exists() or list(cache.iterdir()) == []
    for layout in ("hf", "dir"):
        target = tmp_path / f"t-{layout}"
        with pytest.raises(IntegrityError):
            import_bundle(cut, layout, target)
        assert not target.exists() or [p for p in target.rglob("*") if not p.is_dir()] == []


@pytest.mark.parametrize("layout", ["hf", "modelscope", "dir"])
def test_bundle_cut_mid_stream_publishes_nothing(tmp_path: Path, isolated_home: Path, layout: str) -> None:
    st = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(
        st,
        "org/a",
        {"main": {"config.json": b"{}", "model.safetensors": safetensors_sized(os.urandom(1 << 20))}},
    )
    put_repo(
        st,
        "org/b",
        {"main": {"config.json": b"[]", "model.safetensors": safetensors_sized(os.urandom(1 << 20))}},
    )
    data = write_bundle(st, select_all(st), tmp_path / "ab.tar.zst").path.read_bytes()
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(data[: len(data) * 3 // 4])  # org/a is whole in what is left, org/b is not
    target = tmp_path / "target"
    with pytest.raises(IntegrityError, match="truncated"):
        import_bundle(cut, layout, target)
    assert [p for p in target.rglob("*") if not p.is_dir()] == []
    assert leftovers(target) == []


def test_unknown_layout(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="hf"):
        import_bundle(bundle, "nope", tmp_path / "x")


# -- dir layout ------------------------------------------------------------------------------------


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_dir_layout(bundle: Path, tmp_path: Path) -> None:
    target = tmp_path / "models"
    report = import_bundle(bundle, "dir", target)
    assert folder_files(target / "org" / "tiny") == TINY_MAIN
    assert folder_files(target / "org" / "tiny@v1.0") == TINY_V1
    assert set(folder_files(target / "gpt2")) == {"config.json", "tokenizer.json"}
    assert folder_files(target / "org" / "data") == {"data/train.csv": b"a,b\n1,2\n"}
    # One copy of each content: revisions share it by hardlink.
    a = (target / "org" / "tiny" / "model.safetensors").stat()
    b = (target / "org" / "tiny@v1.0" / "model.safetensors").stat()
    assert (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)
    # Receipts live apart from the model folders, which hold only the model's files.
    receipts = sorted(p.name for p in (target / ".mirror" / "receipts").iterdir())
    assert receipts == ["gpt2.json", "org%2Fdata.json", "org%2Ftiny%40v1.0.json", "org%2Ftiny.json"]
    assert sorted(p.name for p in target.iterdir()) == [".mirror", "gpt2", "org"]
    paths = {r.repo.repo_id: r.path for r in report.repos}
    assert paths["org/tiny"] == target / "org" / "tiny"
    assert leftovers(target) == []

    before = state(target)
    again = import_bundle(bundle, "dir", target)
    assert all(r.already_present for r in again.repos)
    assert state(target) == before


def test_dir_layout_replaces_a_changed_folder_whole(bundle: Path, tmp_path: Path) -> None:
    target = tmp_path / "models"
    import_bundle(bundle, "dir", target)
    (target / "org" / "tiny" / "stray.txt").write_text("left over")
    (target / "org" / "tiny" / "config.json").unlink()
    report = import_bundle(bundle, "dir", target)
    tiny = next(r for r in report.repos if r.repo.repo_id == "org/tiny")
    assert not tiny.already_present
    assert folder_files(target / "org" / "tiny") == TINY_MAIN
    assert leftovers(target) == []


def test_dir_layout_refuses_a_folder_it_did_not_write(bundle: Path, tmp_path: Path) -> None:
    target = tmp_path / "models"
    (target / "gpt2").mkdir(parents=True)
    (target / "gpt2" / "mine.txt").write_text("keep me")
    with pytest.raises(MirrorError, match="not written by mirror"):
        import_bundle(bundle, "dir", target)
    assert folder_files(target / "gpt2") == {"mine.txt": b"keep me"}
    assert not (target / "org").exists()


def test_dir_layout_revision_names_stay_inside(sample_store: SampleStore, tmp_path: Path) -> None:
    st = sample_store.store
    put_repo(st, "org/pr", {"main": {"a.txt": b"main"}, "refs/pr/1": {"a.txt": b"pr"}})
    out = write_bundle(st, [s for s in select_all(st) if s.key.repo_id == "org/pr"], tmp_path / "pr.tar.zst")
    target = tmp_path / "models"
    import_bundle(out.path, "dir", target)
    assert folder_files(target / "org" / "pr") == {"a.txt": b"main"}
    assert folder_files(target / "org" / "pr@refs%2Fpr%2F1") == {"a.txt": b"pr"}
    cache = tmp_path / "hub"
    import_bundle(out.path, "hf", cache)
    assert (cache / "models--org--pr" / "refs" / "refs" / "pr" / "1").read_text() == put_repo(
        st, "org/pr", {"refs/pr/1": {"a.txt": b"pr"}}
    ).commits["refs/pr/1"]
    assert scan_cache_dir(cache).warnings == []
