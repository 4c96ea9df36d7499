"""Fidelity with the clients' own trees (issue 11, section 4): where the caches are, what an import writes
under HF_HUB_DISABLE_SYMLINKS, HF repos in the ModelScope cache, and repos kept as independent as the
clients keep them (no hardlink across repos by default; none across revisions in --no-symlinks trees).

The real huggingface_hub and modelscope answer in subprocesses, with the environment under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from click.testing import CliRunner
from huggingface_hub import scan_cache_dir

from mirror.bundle import read_index, select_all, write_bundle
from mirror.cli import cli
from mirror.clock import SYSTEM
from mirror.errors import MirrorError
from mirror.importing import bytes_to_add, import_bundle, survey
from mirror.layouts import make_layout
from mirror.manifest import parse_manifest
from mirror.settings import Settings, hf_cache_dir, modelscope_cache_dir
from mirror.store import Store
from mirror.sync import default_source_factory, plan_targets, sync
from tests.conftest import put_repo
from tests.hub import HubFile, LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.test_sync import FAST

# -- where the caches are ---------------------------------------------------------------------------------

# Each row: the variables set (HOME comes from the test unless the row sets or removes it; None removes).
HF_ENVS: list[dict[str, str | None]] = [
    {},
    {"HF_HUB_CACHE": "/abs/hub"},
    {"HF_HUB_CACHE": ""},  # set but empty: the current folder, as huggingface_hub takes it
    {"HUGGINGFACE_HUB_CACHE": "/legacy/hub"},
    {"HUGGINGFACE_HUB_CACHE": "/legacy/hub", "HF_HUB_CACHE": "/new/hub", "HF_HOME": "/home-hf"},
    {"HUGGINGFACE_HUB_CACHE": "~/legacy", "HF_HOME": "/ignored"},
    {"HUGGINGFACE_HUB_CACHE": "", "HF_HOME": "/ignored"},
    {"HF_HOME": "$BASE/hf", "BASE": "/from-var"},
    {"HF_HOME": ""},
    {"HF_HOME": "~/hf-home", "XDG_CACHE_HOME": "/ignored"},
    {"XDG_CACHE_HOME": "/xdg"},
    {"XDG_CACHE_HOME": ""},
    {"XDG_CACHE_HOME": "~/xdg"},
    {"HF_HUB_CACHE": "rel/hub"},
    {"HF_HUB_CACHE": "${HOME}/braces/$UNSET_VARIABLE_X/hub"},
    {"HF_HUB_CACHE": "$TILDE/hub", "TILDE": "~"},  # ~ is expanded before $VAR: it stays literal
    {"HF_HUB_CACHE": "~root/hub"},
    {"HF_HUB_CACHE": "~no-such-user-x/hub"},
    {"HOME": None},  # the password database's home
    {"HOME": ""},
]

MS_ENVS: list[dict[str, str | None]] = [
    {},
    {"MODELSCOPE_CACHE": "/abs/ms"},
    {"MODELSCOPE_CACHE": ""},  # empty: the default
    {"MODELSCOPE_CACHE": "~/ms"},
    {"MODELSCOPE_CACHE": "rel/ms"},
    {"MODELSCOPE_CACHE": "$HOME/ms"},  # no $VAR expansion: a folder named `$HOME` in the current one
    {"MODELSCOPE_CACHE": "/new/ms", "MS_CACHE_HOME": "/legacy/ms"},
    {"HOME": None},
    {"XDG_CACHE_HOME": "/xdg", "HF_HOME": "/hf"},  # neither moves the ModelScope cache
]

HF_PROBE = r"""
import importlib, json, os, sys
import huggingface_hub.constants as constants
out = []
for env in json.loads(sys.argv[1]):
    os.environ.clear()
    os.environ.update(env)
    out.append(importlib.reload(constants).HF_HUB_CACHE)
print(json.dumps(out))
"""

MS_PROBE = r"""
import json, os, sys
import modelscope.hub as ms_hub
import modelscope_hub.config
from modelscope import snapshot_download
from modelscope_hub.errors import CacheNotFound
keep = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
out = []
for env in json.loads(sys.argv[1]):
    os.environ.clear()
    os.environ.update(keep, **env)
    modelscope_hub.config.set_default_config(None)
    ms_hub._sync_config()  # what `import modelscope.hub` runs: MS_CACHE_HOME
    try:
        snapshot_download("o/n", revision="master", local_files_only=True)
        out.append(None)
    except CacheNotFound as e:  # names the folder it looked for
        out.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(e.cache_dir)))))
print(json.dumps(out))
"""


def _env(row: dict[str, str | None], home: Path) -> dict[str, str]:
    env = {"HOME": str(home)}
    for key, value in row.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _probe(script: str, envs: list[dict[str, str]], cwd: Path) -> list[str | None]:
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(envs)],
        cwd=cwd,
        env={**os.environ, "TQDM_DISABLE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.e2e
def test_hf_cache_dir_is_where_huggingface_hub_looks(tmp_path: Path) -> None:
    envs = [_env(row, tmp_path / "home") for row in HF_ENVS]
    theirs = _probe(HF_PROBE, envs, tmp_path)
    ours = [str(hf_cache_dir(env)) for env in envs]
    # Path() drops a trailing "/." or "" the same way for both; the strings are compared, not resolved.
    assert [str(Path(str(p))) for p in theirs] == ours


@pytest.mark.e2e
def test_modelscope_cache_dir_is_where_modelscope_looks(tmp_path: Path) -> None:
    envs = [_env(row, tmp_path / "home") for row in MS_ENVS]
    theirs = _probe(MS_PROBE, envs, tmp_path)
    # modelscope resolves its cache (relative to the current folder, through symlinks); so does this check.
    ours = [os.path.realpath(tmp_path / modelscope_cache_dir(env)) for env in envs]
    assert theirs == ours


def test_modelscope_legacy_ms_cache_home_is_honoured_though_modelscope_fails_on_it(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "MS_CACHE_HOME": "~/legacy"}
    assert modelscope_cache_dir(env) == tmp_path / "legacy"
    assert modelscope_cache_dir({**env, "MODELSCOPE_CACHE": "/ms"}) == Path("/ms")
    assert modelscope_cache_dir({**env, "MODELSCOPE_CACHE": ""}) == tmp_path / "legacy"


@pytest.mark.parametrize(
    ("layout", "env", "where"),
    [
        ("hf", {"HUGGINGFACE_HUB_CACHE": "~/legacy-hub", "HF_HUB_CACHE": None}, "legacy-hub"),
        ("hf", {"HF_HUB_CACHE": None, "HF_HOME": None, "XDG_CACHE_HOME": "~/xdg"}, "xdg/huggingface/hub"),
        ("modelscope", {"MODELSCOPE_CACHE": "~/ms"}, "ms"),
    ],
)
def test_inventory_and_verify_default_to_the_clients_cache(
    layout: str, env: dict[str, str | None], where: str, isolated_home: Path, tmp_path: Path
) -> None:
    target = isolated_home / where
    sample = target / ("models--org--x" if layout == "hf" else "models/org--x") / "snapshots" / "c"
    sample.mkdir(parents=True)
    (sample / "f.txt").write_text("x")
    runner = CliRunner()
    got = runner.invoke(
        cli, ["inventory", "--layout", layout, "-o", str(tmp_path / "have.json"), "--json"], env=env
    )
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["target"] == str(target)
    assert json.loads(got.stdout)["repos"] == 1
    got = runner.invoke(cli, ["verify", "--layout", layout, "--json"], env=env)
    assert f"{target} holds no receipt" in str(got.exception)  # that tree was read, and found not imported


# -- HF_HUB_DISABLE_SYMLINKS: what huggingface_hub writes ------------------------------------------------

WEIGHTS = safetensors_sized(
    bytes(range(256)) * 1024
)  # 256 KiB, an LFS file shared by both repos and both revisions
TWIN_OLD = {
    "config.json": b'{"v": 1}',
    "model.safetensors": WEIGHTS,
    "same/a.txt": b"twice\n",
    "b.txt": b"twice\n",
}
TWIN_NEW = {**TWIN_OLD, "config.json": b'{"v": 2}', "extra/c.txt": b"new\n"}
OTHER = {"config.json": b'{"v": 1}', "weights/model.safetensors": WEIGHTS}

HF_DOWNLOAD = r"""
import json, sys
from huggingface_hub import snapshot_download
for repo_id, revision in json.loads(sys.argv[1]):
    # One worker: with symlinks disabled, huggingface_hub's threads race on content a commit holds twice (one
    # moves the blob into the snapshot while another copies it from blobs/), and the reference would flake.
    snapshot_download(repo_id, revision=revision, max_workers=1)
"""


def _hub_files(files: dict[str, bytes]) -> list[HubFile]:
    return [HubFile(path, data=data, lfs=path.endswith(".safetensors")) for path, data in files.items()]


@pytest.fixture
def twins(hub: LoopbackHub, tmp_path: Path) -> Path:
    """Two repos on the loopback hub sharing content across repos, revisions and paths; synced and exported."""
    hub.add_commit("org/twin", _hub_files(TWIN_OLD), tags=["v1.0"])
    hub.add_commit("org/twin", _hub_files(TWIN_NEW))
    hub.add_commit("org/other", _hub_files(OTHER))
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    manifest = "version: 1\nmodels:\n  - repo: org/twin\n    revisions: [main, v1.0]\n  - repo: org/other\n"
    settings = Settings.from_env(store.local_root, {"HF_ENDPOINT": hub.url})
    result = sync(
        store,
        plan_targets(parse_manifest(manifest, "m.yml").requests()),
        default_source_factory(settings),
        policy=FAST,
    )
    assert result.exit_code == 0
    return write_bundle(store, select_all(store), tmp_path / "twins.tar.zst").path


def describe(cache: Path) -> dict[str, Any]:
    """What the clients see of an HF cache: every entry of every repo folder (a symlink's target, a file's
    content and link count), mirror's own `.mirror/` and the cache's `.locks/` left out."""
    tree: dict[str, Any] = {}
    for repo in sorted(p for p in cache.iterdir() if p.name.startswith("models--")):
        for path in sorted(repo.rglob("*")):
            rel = path.relative_to(cache).as_posix()
            if "/.mirror" in rel:
                continue
            if path.is_symlink():
                tree[rel] = f"-> {os.readlink(path)}"
            elif path.is_file():
                tree[rel] = (hashlib.sha256(path.read_bytes()).hexdigest()[:12], path.stat().st_nlink)
            elif not any(path.iterdir()):
                tree[rel] = "empty folder"
    return tree


@pytest.mark.parametrize("value", ["1", "yes", "TRUE", "On"])
def test_hf_hub_disable_symlinks_writes_what_huggingface_hub_writes(
    twins: Path, hub: LoopbackHub, tmp_path: Path, isolated_home: Path, value: str
) -> None:
    theirs = tmp_path / "theirs"
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_CACHE": str(theirs),
        "HF_HUB_DISABLE_SYMLINKS": value,
        "HF_HUB_DISABLE_SYMLINKS_WARNING": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    asks = [["org/twin", "v1.0"], ["org/twin", "main"], ["org/other", "main"]]
    proc = subprocess.run(
        [sys.executable, "-c", HF_DOWNLOAD, json.dumps(asks)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = tmp_path / "ours"
    got = CliRunner().invoke(
        cli, ["import", str(twins), "--target", str(ours), "-q"], env={"HF_HUB_DISABLE_SYMLINKS": value}
    )
    assert got.exit_code == 0, got.output
    mine, real = describe(ours), describe(theirs)
    # mirror leaves no empty blobs/ folder where huggingface_hub moved every blob out into snapshots/.
    assert {k: v for k, v in real.items() if v != "empty folder" or not k.endswith("/blobs")} == mine
    assert all(v[1] == 1 for v in mine.values() if isinstance(v, tuple))  # no file shares an inode


# -- repos as independent as the clients keep them ---------------------------------------------------------

REPO_FOLDERS = {
    "hf": ("models--org--twin", "models--org--other"),
    "dir": ("org/twin", "org/other"),
    "modelscope": ("models/org--twin", "models/org--other"),
}


def inodes(target: Path, layout: str) -> dict[tuple[int, int], set[str]]:
    """(dev, inode) -> the published paths holding it (mirror's .mirror/ left out), relative to target."""
    found: dict[tuple[int, int], set[str]] = {}
    for path in target.rglob("*"):
        rel = path.relative_to(target).as_posix()
        if "/.mirror" in f"/{rel}" or path.is_symlink() or not path.is_file():
            continue
        st = path.stat()
        found.setdefault((st.st_dev, st.st_ino), set()).add(rel)
    return found


def repo_of(rel: str, layout: str) -> str:
    for folder in REPO_FOLDERS[layout]:
        if rel == folder or rel.startswith(folder + "/") or rel.startswith(folder + "@"):
            return folder
    return rel  # a file of the target's own (CACHEDIR.TAG)


LAYOUTS = [("hf", True), ("hf", False), ("dir", True), ("modelscope", True)]


@pytest.mark.parametrize(("layout", "symlinks"), LAYOUTS, ids=["hf", "hf-no-symlinks", "dir", "modelscope"])
@pytest.mark.parametrize("how", ["fresh", "twice", "one-repo-first"])
def test_no_published_file_is_shared_across_repos(
    twins: Path, tmp_path: Path, layout: str, symlinks: bool, how: str
) -> None:
    target = tmp_path / "t"
    if how == "one-repo-first":
        only = write_bundle(
            Store.at(tmp_path / "store", clock=SYSTEM),
            [
                s
                for s in select_all(Store.at(tmp_path / "store", clock=SYSTEM))
                if s.key.repo_id == "org/other"
            ],
            tmp_path / "other.tar.zst",
        ).path
        import_bundle(only, layout, target, symlinks=symlinks)
    import_bundle(twins, layout, target, symlinks=symlinks)
    if how == "twice":
        import_bundle(twins, layout, target, symlinks=symlinks)
    found = inodes(target, layout)
    shared = {k: v for k, v in found.items() if len({repo_of(r, layout) for r in v}) > 1}
    assert shared == {}
    if layout == "hf" and not symlinks:
        assert all(len(v) == 1 for v in found.values()), found  # no link between revisions either
    # Editing one repo's copy in place (through its snapshot link, for hf) leaves the other repo's alone.
    twin_w = next((target / REPO_FOLDERS[layout][0]).rglob("model.safetensors")).resolve()
    os.chmod(twin_w, 0o644)
    with open(twin_w, "r+b") as f:
        f.write(b"EDITED")
    assert next((target / REPO_FOLDERS[layout][1]).rglob("model.safetensors")).read_bytes() == WEIGHTS


def _inode_sizes(root: Path, *, content: bool = False) -> dict[tuple[int, int], int]:
    """(dev, inode) -> size of every file under root; with content, only what snapshots/ hold (the files
    scan_cache_dir counts)."""
    sizes = {}
    for path in root.rglob("*"):
        if content and "/snapshots/" not in path.as_posix():
            continue
        if path.is_file() and (content or not path.is_symlink()):
            st = path.stat()
            sizes[st.st_dev, st.st_ino] = st.st_size
    return sizes


@pytest.mark.parametrize("symlinks", [True, False], ids=["hf", "hf-no-symlinks"])
@pytest.mark.parametrize("victim", ["org/other@main", "org/twin@v1.0", "org/twin@main"])
def test_delete_revisions_frees_what_it_reports(
    twins: Path, tmp_path: Path, symlinks: bool, victim: str
) -> None:
    cache = tmp_path / "hub"
    import_bundle(twins, "hf", cache, symlinks=symlinks)
    repo_id, revision = victim.split("@")
    commit = (cache / f"models--{repo_id.replace('/', '--')}" / "refs" / revision).read_text()
    info = scan_cache_dir(cache)
    assert info.warnings == []
    strategy = info.delete_revisions(commit)
    before = _inode_sizes(cache, content=True)
    strategy.execute()
    after = _inode_sizes(cache)
    freed = sum(size for key, size in before.items() if key not in after)
    assert strategy.expected_freed_size > 0 and freed == strategy.expected_freed_size


def test_link_shared_shares_content_across_repos_and_revisions(twins: Path, tmp_path: Path) -> None:
    for layout, symlinks in LAYOUTS:
        target = tmp_path / f"{layout}-{symlinks}"
        got = CliRunner().invoke(
            cli,
            ["import", str(twins), "--target", str(target), "--layout", layout, "--link-shared", "-q"]
            + ([] if symlinks else ["--no-symlinks"]),
        )
        assert got.exit_code == 0, got.output
        weights = {
            k for k, v in inodes(target, layout).items() if (target / min(v)).stat().st_size == len(WEIGHTS)
        }
        assert len(weights) == 1, (layout, symlinks)  # one inode for both repos (and every revision)


class Usage(NamedTuple):
    total: int
    used: int
    free: int


@pytest.mark.parametrize(("layout", "symlinks"), LAYOUTS, ids=["hf", "hf-no-symlinks", "dir", "modelscope"])
def test_space_check_counts_each_repos_copy(
    twins: Path, tmp_path: Path, layout: str, symlinks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = read_index(twins)
    writer = make_layout(layout, tmp_path / "t", symlinks=symlinks)
    need = bytes_to_add(index, survey(writer, index)).bytes
    shared_writer = make_layout(layout, tmp_path / "t", link_shared=True)
    shared = bytes_to_add(index, survey(shared_writer, index)).bytes
    # The weights: one copy per repo (and, --no-symlinks, per revision); once with --link-shared.
    copies = 3 if not symlinks else 2
    assert need - shared >= (copies - 1) * len(WEIGHTS)
    # Room for one copy of the weights but not for each repo's: refused, nothing written; fits when shared.
    free = shared + len(WEIGHTS) // 2
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(1 << 40, 0, free))
    with pytest.raises(MirrorError, match="not enough space"):
        import_bundle(twins, layout, tmp_path / "t", symlinks=symlinks)
    assert not (tmp_path / "t").exists()
    import_bundle(twins, layout, tmp_path / "t", symlinks=symlinks, link_shared=True)
    # Everything is held now: a re-import needs nothing new, even with each repo its own copy.
    assert bytes_to_add(index, survey(writer, index)).files == 0


# -- Hugging Face repos in the ModelScope cache, as modelscope would have downloaded them ------------------

MS_OWN = """
snapshot_download("org/tiny-bert", revision="master")
out("done")
"""

MS_OFFLINE = """
import torch
from modelscope import AutoModel
ids = torch.tensor([[1, 5, 9, 2]])
def run(model):
    with torch.no_grad():
        return model.eval()(ids).last_hidden_state.flatten().tolist()
out({
    "master": snapshot_download("org/tiny-bert", revision="master", local_files_only=True),
    "default": snapshot_download("org/tiny-bert", local_files_only=True),
    "main": snapshot_download("org/tiny-bert", revision="main", local_files_only=True),
    "tree": tree(snapshot_download("org/tiny-bert", revision="master", local_files_only=True)),
    "auto": run(AutoModel.from_pretrained("org/tiny-bert", local_files_only=True)),
    "original": run(AutoModel.from_pretrained(sys.argv[1])),
})
"""


@pytest.mark.e2e
def test_hf_repo_in_modelscope_layout_is_what_modelscope_downloads_and_loads(
    hub: LoopbackHub, tmp_path: Path, isolated_home: Path
) -> None:
    from tests.test_hub_modelscope import ms_env, run_client
    from tests.test_import_safety import TINY_BERT

    folder = tmp_path / "tiny-bert"
    subprocess.run([sys.executable, "-c", TINY_BERT, str(folder)], check=True, timeout=300)
    hub.add_commit("org/tiny-bert", _hub_files({p.name: p.read_bytes() for p in folder.iterdir()}))
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    settings = Settings.from_env(store.local_root, {"HF_ENDPOINT": hub.url})
    manifest = "version: 1\nmodels:\n  - repo: org/tiny-bert\n"
    assert (
        sync(
            store,
            plan_targets(parse_manifest(manifest, "m.yml").requests()),
            default_source_factory(settings),
            policy=FAST,
        ).exit_code
        == 0
    )
    bundle = write_bundle(store, select_all(store), tmp_path / "bert.tar.zst").path
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    import_bundle(bundle, "modelscope", ours)

    # modelscope's own download of the same repo, from the loopback hub's ModelScope API.
    own = run_client(MS_OWN, ms_env(hub.modelscope_url, tmp_path, MODELSCOPE_CACHE=str(theirs)))
    assert own.returncode == 0, own.stderr[-3000:]
    hub.clear_requests()
    code = MS_OFFLINE.replace("sys.argv[1]", repr(str(folder)))
    offline = run_client(
        code, ms_env("http://127.0.0.1:9", tmp_path, MODELSCOPE_CACHE=str(ours)), timeout=300
    )
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert hub.requests == []
    res = offline.result
    snapshots = ours / "models" / "org--tiny-bert" / "snapshots"
    assert res["master"] == res["default"] == str(snapshots / "master")
    assert res["main"] == str(snapshots / "main")
    assert res["auto"] == res["original"]
    # The same folder names and files as modelscope's own tree: snapshots/master with the plain files, and
    # nothing else in the repo folder but mirror's receipts (no .mdl, .msc or ._____temp).
    theirs_master = theirs / "models" / "org--tiny-bert" / "snapshots" / "master"
    assert res["tree"] == {p.name: p.read_bytes().hex() for p in theirs_master.iterdir()}
    assert sorted(os.listdir(theirs / "models" / "org--tiny-bert")) == ["snapshots"]
    assert sorted(os.listdir(ours / "models" / "org--tiny-bert")) == [".mirror", "snapshots"]
    assert not [p for p in ours.rglob("*") if p.name.startswith((".mdl", ".msc", "._____temp"))]

    # Into the cache modelscope filled itself: its own master is kept as it is, main is added beside it.
    before = {p.name: p.stat().st_ino for p in theirs_master.iterdir()}
    report = import_bundle(bundle, "modelscope", theirs)
    assert report.exit_code == 0
    assert {p.name: p.stat().st_ino for p in theirs_master.iterdir()} == before
    assert (theirs / "models" / "org--tiny-bert" / "snapshots" / "main" / "config.json").is_file()


def _ms_snapshots(
    tmp_path: Path, revisions: dict[str, dict[str, bytes]], source: str = "huggingface"
) -> Path:
    store = Store.at(tmp_path / "s", clock=SYSTEM)
    put_repo(store, "org/m", revisions, source=source)
    cache = tmp_path / "ms"
    import_bundle(write_bundle(store, select_all(store), tmp_path / "m.tar.zst").path, "modelscope", cache)
    return cache / "models" / "org--m" / "snapshots"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_implied_master_is_main_else_the_first_revision_and_never_a_real_master(tmp_path: Path) -> None:
    main, v1, real = {"a.txt": b"main"}, {"a.txt": b"v1"}, {"a.txt": b"real master"}
    snaps = _ms_snapshots(tmp_path / "1", {"v1.0": v1, "main": main})  # main, though listed second
    assert _files(snaps / "master") == main and _files(snaps / "v1.0") == v1
    snaps = _ms_snapshots(tmp_path / "2", {"v1.0": v1})  # no main: the first revision
    assert _files(snaps / "master") == v1
    snaps = _ms_snapshots(tmp_path / "3", {"main": main, "master": real})  # a branch named master: its own
    assert _files(snaps / "master") == real and _files(snaps / "main") == main
    snaps = _ms_snapshots(tmp_path / "4", {"main": main}, source="modelscope")  # ModelScope's own repo
    assert sorted(p.name for p in snaps.iterdir()) == ["main"]


def test_import_inventory_and_verify_share_the_default_hf_cache(tmp_path: Path, isolated_home: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(store, "org/m", {"main": {"config.json": b"{}", "w.bin": b"w" * 1000}})
    bundle = write_bundle(store, select_all(store), tmp_path / "m.tar.zst").path
    env: dict[str, str | None] = {
        "HF_HUB_CACHE": None,
        "HUGGINGFACE_HUB_CACHE": "~/legacy/$SUB",
        "SUB": "hub",
    }
    runner = CliRunner()
    got = runner.invoke(cli, ["import", str(bundle), "--json"], env=env)
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["target"] == str(isolated_home / "legacy" / "hub")
    assert (isolated_home / "legacy" / "hub" / "models--org--m" / "refs" / "main").is_file()
    got = runner.invoke(cli, ["verify", "--layout", "hf", "--json"], env=env)
    assert got.exit_code == 0, got.output
    got = runner.invoke(cli, ["inventory", "-o", str(tmp_path / "have.json"), "--json"], env=env)
    assert got.exit_code == 0 and json.loads(got.stdout)["repos"] == 1
