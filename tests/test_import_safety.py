"""Import safety (issue 5 items 1, 3-6): a killed import never leaves a broken tree and a rerun completes
it; re-imports write nothing; bundles in any order give one tree; --no-symlinks; the space check; and
`mirror verify --target` naming what changed in an imported tree."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from huggingface_hub import scan_cache_dir, snapshot_download, try_to_load_from_cache

import mirror.layouts.layout as layout_module
from mirror.bundle import BundleIndex, read_index, select_all, write_bundle
from mirror.cli import main
from mirror.cli.output import repo_report_line
from mirror.clock import SYSTEM
from mirror.errors import MirrorError
from mirror.importing import bytes_to_add, import_bundle
from mirror.importing.plan import TargetView
from mirror.store import Store
from tests.conftest import killed_in_child, put_repo
from tests.modelfiles import safetensors_sized
from tests.roundtrip import fresh_env, offline_env, run_mirror

OLD = {"config.json": b'{"v": "old"}\n', "model.safetensors": safetensors_sized(b"old weights" * 300)}
NEW = {
    "config.json": b'{"v": "new"}\n',
    "model.safetensors": safetensors_sized(bytes(range(256)) * 64),
    "tokenizer.json": b'{"vocab": ["a", "b"]}\n' * 40,
    "sub/dir/w.bin": b"\x00\x01weights" * 500,
}
V1 = {**NEW, "config.json": b'{"v": "v1"}\n'}


class Bundles(NamedTuple):
    old: Path  # org/tiny main -> old commit, org/keep (created 2026-11-01)
    new: Path  # org/tiny main -> new commit and v1.0, gpt2 sharing a file (created 2026-11-20)
    index_old: BundleIndex
    index_new: BundleIndex


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    work = tmp_path_factory.mktemp("safety")
    old_store = Store.at(work / "old-store", clock=SYSTEM)
    put_repo(old_store, "org/tiny", {"main": OLD}, synced_at="2026-11-01T00:00:00Z")
    put_repo(old_store, "org/keep", {"main": {"config.json": b"{}"}}, synced_at="2026-11-01T00:00:00Z")
    old = write_bundle(old_store, select_all(old_store), work / "old.tar.zst").path
    new_store = Store.at(work / "new-store", clock=SYSTEM)
    put_repo(new_store, "org/tiny", {"main": NEW, "v1.0": V1}, synced_at="2026-11-20T00:00:00Z")
    put_repo(
        new_store,
        "gpt2",
        {"main": {"config.json": b'{"model_type": "gpt2"}', "tokenizer.json": NEW["tokenizer.json"]}},
        synced_at="2026-11-20T00:00:00Z",
    )
    new = write_bundle(new_store, select_all(new_store), work / "new.tar.zst").path
    return Bundles(old, new, read_index(old), read_index(new))


def files_state(root: Path) -> dict[str, Any]:
    """Every entry under root by kind and content (links by target), without times: what two imports
    that should agree must agree on."""
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_file():
            out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[rel] = ("dir",)
    return out


def mtimes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.lstat().st_mtime_ns for p in root.rglob("*") if not p.is_dir()}


def expected_files(*indexes: BundleIndex) -> dict[tuple[str, str], dict[str, str]]:
    """(repo id, commit) -> {path: sha256}, from the bundles' indexes."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for index in indexes:
        for repo in index.repos:
            for c in repo.commits:
                out.setdefault((repo.repo_id, c.commit), {}).update({f.path: f.sha256 for f in c.files})
    return out


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def check_hf_tree(cache: Path, *indexes: BundleIndex) -> None:
    """The invariants of item 1 for an hf cache in any state an import can leave."""
    wanted = expected_files(*indexes)
    if cache.exists():
        assert scan_cache_dir(cache).warnings == []
    for repo_dir in cache.glob("*--*"):
        repo_id = "/".join(repo_dir.name.split("--")[1:])
        # Every snapshot link resolves, to verified content (what the bundle says for that path).
        for snap in (repo_dir / "snapshots").glob("*"):
            for p in snap.rglob("*"):
                if p.is_dir() and not p.is_symlink():
                    continue
                assert p.exists(), f"{p} does not resolve"
                rel = p.relative_to(snap).as_posix()
                assert sha(p) == wanted[repo_id, snap.name][rel], f"{p} holds unverified content"
        # Every ref points at a complete snapshot, which huggingface_hub loads offline.
        refs = repo_dir / "refs"
        for ref in refs.rglob("*") if refs.exists() else ():
            if ref.is_dir():
                continue
            commit = ref.read_text()
            name = ref.relative_to(refs).as_posix()
            folder = Path(
                snapshot_download(repo_id, revision=name, cache_dir=cache, local_files_only=True)  # type: ignore[arg-type]
            )
            assert folder.name == commit
            for path, digest in wanted[repo_id, commit].items():
                assert sha(folder / path) == digest, f"refs/{name} of {repo_id}: {path} missing or wrong"


def check_dir_tree(target: Path, *indexes: BundleIndex) -> None:
    """Every revision folder of the dir layout holds exactly one commit's files (old or new), or is absent."""
    wanted = expected_files(*indexes)
    for folder in [
        target / "org" / "tiny",
        target / "org" / "tiny@v1.0",
        target / "gpt2",
        target / "org" / "keep",
    ]:
        if not folder.exists():
            continue
        found = {p.relative_to(folder).as_posix(): sha(p) for p in folder.rglob("*") if p.is_file()}
        repo_id = folder.relative_to(target).as_posix().split("@")[0]
        assert found in [files for (rid, _), files in wanted.items() if rid == repo_id], (
            f"{folder} is half written"
        )


class Steps:
    """The step callback the tests give an import (`checkpoint=`): counts its steps (a file staged, a name
    published), and SIGKILLs the process at the `kill_at`-th."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.count = 0
        self.kill_at = kill_at

    def __call__(self) -> None:
        self.count += 1
        if self.kill_at is not None and self.count >= self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def import_killed_at(step: int, action: Callable[[Steps], object]) -> bool:
    """Run imports (given the step callback) in a child process that SIGKILLs itself at its step-th step;
    whether it was killed."""
    return killed_in_child(lambda: action(Steps(step)), "the import")


def killed_at(step: int, bundle: Path, layout: str, target: Path, *, symlinks: bool = True) -> bool:
    """Run the import in a child process that SIGKILLs itself at its step-th step; whether it was killed."""
    return import_killed_at(
        step, lambda steps: import_bundle(bundle, layout, target, symlinks=symlinks, checkpoint=steps)
    )


def count_steps(bundle: Path, layout: str, target: Path, **kw: Any) -> int:
    steps = Steps()
    import_bundle(bundle, layout, target, checkpoint=steps, **kw)
    return steps.count


@pytest.mark.parametrize(
    ("layout", "symlinks", "exchange"),
    [("hf", True, True), ("hf", False, True), ("dir", True, True), ("dir", True, False)],
    ids=["hf", "hf-no-symlinks", "dir", "dir-without-renameat2"],
)
@pytest.mark.e2e
def test_sigkill_at_every_step_leaves_old_or_new_and_a_rerun_completes(
    bundles: Bundles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    layout: str,
    symlinks: bool,
    exchange: bool,
) -> None:
    if not exchange:  # where there is no atomic exchange, a folder is swapped by two renames
        monkeypatch.setattr(layout_module, "exchange", lambda a, b: False)
    # The reference: an old import, then the new one, uninterrupted.
    reference = tmp_path / "reference"
    import_bundle(bundles.old, layout, reference, symlinks=symlinks)
    total = count_steps(bundles.new, layout, reference, symlinks=symlinks)
    assert total > 20  # files staged, then every name published
    check = check_hf_tree if layout == "hf" else check_dir_tree
    for step in range(1, total + 1):
        target = tmp_path / f"t{step}"
        import_bundle(bundles.old, layout, target, symlinks=symlinks)
        assert killed_at(step, bundles.new, layout, target, symlinks=symlinks), step
        check(target, bundles.index_old, bundles.index_new)
        import_bundle(bundles.new, layout, target, symlinks=symlinks)  # the rerun
        check(target, bundles.index_old, bundles.index_new)
        assert files_state(target) == files_state(reference), f"killed at step {step} of {total}"
        assert not list(target.rglob(".mirror/tmp")), "a rerun sweeps what the killed import left"
        shutil.rmtree(target)


@pytest.mark.e2e
def test_installed_mirror_killed_mid_import_then_rerun(bundles: Bundles, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    env = fresh_env(tmp_path / "home")
    run_mirror("import", str(bundles.old), "--target", str(cache), env=env)
    killed = run_mirror(
        "import",
        str(bundles.new),
        "--target",
        str(cache),
        env={**env, "MIRROR_TEST_KILL_AFTER": "14"},
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL
    assert list(cache.glob("*/.mirror/tmp/*")), "the kill came while files were staged"
    check_hf_tree(cache, bundles.index_old, bundles.index_new)
    assert (cache / "models--org--tiny" / "refs" / "main").read_text() == bundles.index_old.repos[
        -1
    ].revisions[0][1]
    run_mirror("import", str(bundles.new), "--target", str(cache), env=env)
    check_hf_tree(cache, bundles.index_old, bundles.index_new)
    assert (cache / "models--org--tiny" / "refs" / "main").read_text() == bundles.index_new.repos[
        -1
    ].revisions[0][1]


# -- idempotent and cumulative (item 3) -------------------------------------------------------------------


@pytest.mark.parametrize("args", [[], ["--no-symlinks"], ["--layout", "dir"], ["--layout", "modelscope"]])
@pytest.mark.e2e
def test_same_bundle_twice_changes_nothing(bundles: Bundles, tmp_path: Path, args: list[str]) -> None:
    target = tmp_path / "t"
    env = fresh_env(tmp_path / "home")
    # gpt2 has no owner: the modelscope layout cannot name it
    bundle = bundles.old if "modelscope" in args else bundles.new
    run_mirror("import", str(bundle), "--target", str(target), *args, env=env)
    before, times = files_state(target), mtimes(target)
    again = run_mirror("import", str(bundle), "--target", str(target), *args, "--json", env=env)
    report = json.loads(again.stdout)
    assert all(r["already_present"] and r["files_written"] == 0 for r in report["bundles"][0]["repos"])
    assert files_state(target) == before
    assert mtimes(target) == times


def test_two_bundles_in_either_order_give_the_same_tree(bundles: Bundles, tmp_path: Path) -> None:
    for layout in ("hf", "dir"):
        one, two = tmp_path / f"{layout}-old-new", tmp_path / f"{layout}-new-old"
        import_bundle(bundles.old, layout, one)
        import_bundle(bundles.new, layout, one)
        import_bundle(bundles.new, layout, two)
        report = import_bundle(bundles.old, layout, two)
        assert files_state(one) == files_state(two)
        # The older bundle did not move what the newer one set, and said so.
        tiny = next(r for r in report.repos if r.repo.repo_id == "org/tiny")
        assert tiny.kept and "as newer than this bundle" in repo_report_line(tiny)
    main_ref = tmp_path / "hf-new-old" / "models--org--tiny" / "refs" / "main"
    assert main_ref.read_text() == bundles.index_new.repos[-1].revisions[0][1]
    # The models only the old bundle has are there either way.
    assert (tmp_path / "hf-new-old" / "models--org--keep" / "refs" / "main").exists()


def test_a_damaged_file_in_the_target_is_found_and_replaced(bundles: Bundles, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    import_bundle(bundles.new, "hf", cache)
    blob = next(p for p in (cache / "models--org--tiny" / "blobs").iterdir() if p.stat().st_size == 16384)
    good = blob.read_bytes()
    blob.write_bytes(b"X" + good[1:])  # same size: only the hash tells
    report = import_bundle(bundles.new, "hf", cache)
    tiny = next(r for r in report.repos if r.repo.repo_id == "org/tiny")
    assert not tiny.already_present and tiny.files_written == 1 and tiny.bytes_written == len(good)
    assert blob.read_bytes() == good
    check_hf_tree(cache, bundles.index_new)


# -- --no-symlinks (item 4) -------------------------------------------------------------------------------


def test_no_symlinks_writes_real_files_each_its_own_copy(bundles: Bundles, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    import_bundle(bundles.new, "hf", cache, symlinks=False)
    repo = cache / "models--org--tiny"
    snap = repo / "snapshots" / (repo / "refs" / "main").read_text()
    files = [p for p in snap.rglob("*") if not p.is_dir()]
    assert files and not any(p.is_symlink() for p in files)
    for p in files:  # as huggingface_hub leaves it under HF_HUB_DISABLE_SYMLINKS: no blob, no link
        assert p.stat().st_nlink == 1
    assert not list(cache.glob("*/blobs/*"))
    assert scan_cache_dir(cache).warnings == []
    assert try_to_load_from_cache("org/tiny", "sub/dir/w.bin", cache_dir=cache) == str(snap / "sub/dir/w.bin")
    check_hf_tree(cache, bundles.index_new)


def test_no_symlinks_without_hardlinks_copies_and_keeps_no_blobs(
    bundles: Bundles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(*args: Any, **kwargs: Any) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)  # a file system with neither symlinks nor hardlinks (exFAT)
    cache = tmp_path / "hub"
    import_bundle(bundles.new, "hf", cache, symlinks=False)
    assert not list(cache.glob("*/blobs/*"))  # as huggingface_hub does: each content once, in snapshots/
    check_hf_tree(cache, bundles.index_new)
    report = import_bundle(bundles.new, "hf", cache, symlinks=False)
    assert all(r.already_present for r in report.repos)


TINY_BERT = r"""
import sys, torch
from transformers import BertConfig, BertModel
torch.manual_seed(0)
config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=32)
BertModel(config).save_pretrained(sys.argv[1])
"""

LOAD_BOTH = r"""
import json, sys, torch
from transformers import AutoModel
from tests.modelfiles import safetensors_sized
ids = torch.tensor([[1, 5, 9, 2]])
out = {}
for name, ref in (("original", sys.argv[1]), ("imported", sys.argv[2])):
    model = AutoModel.from_pretrained(ref).eval()
    with torch.no_grad():
        out[name] = model(ids).last_hidden_state.flatten().tolist()
print(json.dumps(out))
"""


@pytest.mark.e2e
def test_no_symlinks_import_loads_offline_by_repo_id_with_transformers(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-bert"
    env = fresh_env(tmp_path / "home")
    subprocess.run([sys.executable, "-c", TINY_BERT, str(folder)], env=env, check=True, timeout=300)
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(store, "org/tiny-bert", {"main": {p.name: p.read_bytes() for p in folder.iterdir()}})
    bundle = write_bundle(store, select_all(store), tmp_path / "bert.tar.zst").path
    cache = tmp_path / "home" / ".cache" / "huggingface" / "hub"
    run_mirror("import", str(bundle), "--no-symlinks", env=env)  # into the default cache of that HOME
    assert not any(p.is_symlink() for p in cache.rglob("*"))
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_BOTH, str(folder), "org/tiny-bert"],
        env=offline_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["imported"] == out["original"]


# -- space check (item 5) ---------------------------------------------------------------------------------


class Usage(NamedTuple):
    total: int
    used: int
    free: int


def test_too_little_space_is_a_clear_error_and_nothing_is_written(
    bundles: Bundles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    asked: list[Path] = []

    def tiny_disk(path: Any) -> Usage:
        asked.append(Path(path))
        return Usage(10 << 20, (10 << 20) - (1 << 20), 1 << 20)

    monkeypatch.setattr(shutil, "disk_usage", tiny_disk)
    with pytest.raises(SystemExit) as exit_info:
        main(["import", str(bundles.new), "--target", str(parent / "hub"), "-q"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "not enough space" in err and "1.0 MiB free" in err and "nothing was written" in err
    assert list(parent.iterdir()) == []  # the target the import lock made is gone again
    assert asked == [parent / "hub"]  # the file system the target is on (made for the import lock)


def test_space_check_counts_only_what_the_target_lacks(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(
        store,
        "org/big",
        {"main": {"model.safetensors": safetensors_sized(os.urandom(3 << 20)), "config.json": b"{}"}},
    )
    bundle = write_bundle(store, select_all(store), tmp_path / "big.tar.zst").path
    index = read_index(bundle)
    space = bytes_to_add(index, TargetView())
    need, files = space.bytes, space.files
    assert files == 2 and (3 << 20) < need < (3 << 20) + (2 << 20)
    cache = tmp_path / "hub"
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(1 << 40, 0, 2 << 20))
    with pytest.raises(MirrorError, match="not enough space"):
        import_bundle(bundle, "hf", cache)
    monkeypatch.undo()
    import_bundle(bundle, "hf", cache)
    # Everything is held now: a re-import fits in the same 2 MiB.
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(1 << 40, 0, 2 << 20))
    assert all(r.already_present for r in import_bundle(bundle, "hf", cache).repos)


# -- verify --target (item 6) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Victims:
    changed: Path
    deleted: Path


def victims(target: Path, layout: str) -> Victims:
    if layout == "hf":
        snap = target / "models--org--tiny" / "snapshots"
        main_commit = (target / "models--org--tiny" / "refs" / "main").read_text()
        return Victims(snap / main_commit / "config.json", snap / main_commit / "sub" / "dir" / "w.bin")
    if layout == "dir":
        return Victims(
            target / "org" / "tiny" / "config.json", target / "org" / "tiny" / "sub" / "dir" / "w.bin"
        )
    master = target / "models" / "org--tiny" / "snapshots" / "main"
    return Victims(master / "config.json", master / "sub" / "dir" / "w.bin")


def verify_target(target: Path, layout: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", "--target", str(target), "--layout", layout, "-q"])
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.mark.parametrize("layout", ["hf", "dir", "modelscope"])
def test_verify_target_names_a_changed_byte_and_a_deleted_file(
    bundles: Bundles, tmp_path: Path, layout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "t"
    if layout == "modelscope":
        store = Store.at(tmp_path / "ms-store", clock=SYSTEM)
        put_repo(store, "org/tiny", {"main": NEW})
        import_bundle(write_bundle(store, select_all(store), tmp_path / "ms.tar.zst").path, layout, target)
    else:
        import_bundle(bundles.old, layout, target)
        import_bundle(bundles.new, layout, target)
    code, out, _ = verify_target(target, layout, capsys)
    assert code == 0 and out.startswith(f"ok  {target}")
    v = victims(target, layout)
    data = bytearray(v.changed.read_bytes())
    data[3] ^= 0x01
    os.chmod(v.changed, 0o644)
    v.changed.resolve().write_bytes(bytes(data))  # through the link in hf: the blob changes
    v.deleted.unlink()
    code, out, _ = verify_target(target, layout, capsys)
    assert code == 4
    lines = out.splitlines()
    assert any(line.endswith(")") and "config.json: changed" in line for line in lines), out
    assert any("w.bin: missing" in line for line in lines), out
    # Nothing else is reported (in modelscope, main's config.json is also master's: one file, two names).
    assert len(lines) == (3 if layout == "modelscope" else 2), out


@pytest.mark.e2e
def test_verify_target_with_the_installed_mirror(bundles: Bundles, tmp_path: Path) -> None:
    env = fresh_env(tmp_path / "home")
    cache = tmp_path / "home" / ".cache" / "huggingface" / "hub"
    run_mirror("import", str(bundles.new), env=env)
    assert run_mirror("verify", "--layout", "hf", env=env).stdout.startswith(f"ok  {cache}")
    (cache / "models--gpt2" / "snapshots").joinpath(
        bundles.index_new.repos[0].commits[0].commit, "config.json"
    ).unlink()
    proc = run_mirror("verify", "--target", str(cache), "--json", env=env, check=False)
    assert proc.returncode == 4
    (result,) = json.loads(proc.stdout)
    assert (
        not result["ok"] and len(result["problems"]) == 1 and "config.json: missing" in result["problems"][0]
    )


def test_verify_target_without_receipts_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = verify_target(tmp_path / "empty", "hf", capsys)
    assert code == 1 and "no receipt" in err
