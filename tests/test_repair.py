"""A damaged store repairs itself: sync fetches a damaged blob again, verify names it, export's advice
works; and gc, killed at any step, leaves a store that verify and export accept."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from mirror.cli import main
from mirror.clock import SYSTEM
from mirror.export import export
from mirror.gc import collect_garbage, plan_keep
from mirror.manifest import parse_manifest
from mirror.repo import RepoKey
from mirror.store import Store
from mirror.verify import verify_store
from tests.conftest import killed_in_child, put_repo
from tests.hub import HubFile, LoopbackHub
from tests.test_sync import WEIGHTS, run

CONFIG = b'{"model_type": "bert", "hidden_size": 8}\n'
MANIFEST = "version: 1\nmodels:\n  - repo: org/a\n  - repo: org/b\n"
SHA_WEIGHTS = hashlib.sha256(WEIGHTS).hexdigest()
SHA_CONFIG = hashlib.sha256(CONFIG).hexdigest()


def add_repos(hub: LoopbackHub) -> None:
    """org/a and org/b share the weights (an LFS file) and the config (a small git file)."""
    for repo, extra in (("org/a", b"a"), ("org/b", b"b")):
        hub.add_commit(
            repo,
            [
                HubFile("model.safetensors", data=WEIGHTS),
                HubFile("config.json", data=CONFIG, lfs=False),
                HubFile("own.txt", data=extra, lfs=False),
            ],
        )


def _writable(path: Path) -> Path:
    path.chmod(0o644)
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    _writable(path).write_bytes(data[: len(data) // 2])


def empty(path: Path) -> None:
    _writable(path).write_bytes(b"")


def grow(path: Path) -> None:
    with open(_writable(path), "ab") as f:
        f.write(b"tail")


def outside(blob: Path) -> Path:
    """A folder beside the store (blobs/sha256/ab/<sha> -> the store's parent)."""
    folder = blob.parents[4] / "outside"
    folder.mkdir(exist_ok=True)
    return folder


def link_to_a_good_copy(path: Path) -> None:
    good = outside(path) / "good-copy"
    good.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(good)


def link_to_a_folder_outside(path: Path) -> None:
    (outside(path) / "keep.txt").write_bytes(b"not the store's")
    path.unlink()
    path.symlink_to(outside(path))


def dangling_link(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.with_name("nowhere"))


def folder(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside").write_bytes(b"x")


def fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    _writable(path).write_bytes(bytes(data))


CHEAP = [truncate, empty, grow, link_to_a_good_copy, link_to_a_folder_outside, dangling_link, folder, fifo]


def fetched(hub: LoopbackHub, name: str) -> int:
    return len([r for r in hub.downloads() if name in r.path])


def intact(store: Store, sha: str, data: bytes) -> bool:
    path = store.local_blob(sha)
    return path.is_file() and not path.is_symlink() and path.read_bytes() == data


@pytest.mark.parametrize("damage", CHEAP, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("name", "sha", "data"),
    [("model.safetensors", SHA_WEIGHTS, WEIGHTS), ("config.json", SHA_CONFIG, CONFIG)],
    ids=["lfs", "git"],
)
def test_a_sync_fetches_again_a_blob_a_look_shows_damaged(
    hub: LoopbackHub, tmp_path: Path, damage: Callable[[Path], None], name: str, sha: str, data: bytes
) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    add_repos(hub)
    assert run(store, hub, MANIFEST).exit_code == 0
    damage(store.local_blob(sha))
    beside = {p: p.read_bytes() for p in tmp_path.glob("outside/*")}
    assert not verify_store(store).ok
    hub.clear_requests()
    report = run(store, hub, MANIFEST)
    assert report.exit_code == 0, report.to_json()
    assert fetched(hub, name) == 1  # once, for both repos that use it
    assert intact(store, sha, data)
    assert verify_store(store).ok
    hub.clear_requests()
    assert run(store, hub, MANIFEST).exit_code == 0
    assert hub.downloads() == []  # repaired for good: the next sync fetches nothing
    assert {p: p.read_bytes() for p in tmp_path.glob("outside/*")} == beside  # a link is never followed


def test_flipped_bytes_are_found_by_verify_and_fetched_by_the_next_sync(
    hub: LoopbackHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    add_repos(hub)
    assert run(store, hub, MANIFEST).exit_code == 0
    flip(store.local_blob(SHA_WEIGHTS))
    flip(store.local_blob(SHA_CONFIG))
    hub.clear_requests()
    assert run(store, hub, MANIFEST).exit_code == 0
    assert hub.downloads() == []  # the documented choice: a sync only looks (type and size), never hashes...
    check = verify_store(store)
    assert not check.ok and len(check.problems) == 2
    text = "\n".join(check.problems)
    for sha in (SHA_WEIGHTS, SHA_CONFIG):
        assert str(store.local_blob(sha)) in text
    weights = next(p for p in check.problems if SHA_WEIGHTS in p)
    assert f"expected sha256 {SHA_WEIGHTS}, {len(WEIGHTS)} bytes" in weights
    assert f"found {len(WEIGHTS)} bytes hashing to " in weights
    assert "huggingface:org/a@main model.safetensors" in weights
    assert "huggingface:org/b@main model.safetensors" in weights
    assert "mirror sync" in weights and "huggingface:org/a@main, huggingface:org/b@main" in weights
    # ...except the blobs verify found damaged: those it hashes (once each, however many repos use them),
    # and fetches again
    hashed: list[str] = []
    real = Store.blob_sha256
    monkeypatch.setattr(Store, "blob_sha256", lambda self, sha: hashed.append(sha) or real(self, sha))
    assert run(store, hub, MANIFEST).exit_code == 0
    assert sorted(hashed) == sorted([SHA_WEIGHTS, SHA_CONFIG])
    assert fetched(hub, "model.safetensors") == 1 and fetched(hub, "config.json") == 1
    assert intact(store, SHA_WEIGHTS, WEIGHTS) and intact(store, SHA_CONFIG, CONFIG)
    assert verify_store(store).ok
    assert not (store.local_root / "doubt").exists() or not any((store.local_root / "doubt").iterdir())


def test_a_doubt_the_hash_disproves_is_lifted_without_a_download(hub: LoopbackHub, tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    add_repos(hub)
    assert run(store, hub, MANIFEST).exit_code == 0
    path = store.local_blob(SHA_WEIGHTS)
    flip(path)
    assert not verify_store(store).ok
    flip(path)  # put right by hand before the next sync
    hub.clear_requests()
    assert run(store, hub, MANIFEST).exit_code == 0
    assert hub.downloads() == []
    assert not store.in_doubt(SHA_WEIGHTS)


def test_verify_names_a_damaged_blob_no_snapshot_uses(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(store, "org/a", {"main": {"a.json": b"a"}})  # a store that holds something besides the orphan
    orphan = store.temp_path("orphan")
    orphan.write_bytes(b"orphan")
    sha = hashlib.sha256(b"orphan").hexdigest()
    store.add_blob(orphan, sha)
    folder(store.local_blob(sha))
    check = verify_store(store)
    assert check.problems == [
        f"store blob {store.local_blob(sha)} is damaged: expected sha256 {sha}, found a folder, not a file "
        "(used by no snapshot); it is marked for a fresh download: no snapshot uses it: `mirror gc` removes it"
    ]
    report = collect_garbage(store, plan_keep(store, None), dry_run=False)
    assert report.blobs == [sha] and not store.local_blob(sha).exists() and verify_store(store).ok


def test_a_store_where_no_mark_can_be_made_still_names_the_damage(hub: LoopbackHub, tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    add_repos(hub)
    assert run(store, hub, MANIFEST).exit_code == 0
    (store.local_root / "doubt").write_bytes(b"not a folder")
    flip(store.local_blob(SHA_WEIGHTS))
    (problem,) = verify_store(store).problems
    assert str(store.local_blob(SHA_WEIGHTS)) in problem
    assert "could not be marked for a fresh download" in problem and "delete it first" in problem
    store.local_blob(SHA_WEIGHTS).unlink()  # as told
    assert run(store, hub, MANIFEST).exit_code == 0 and intact(store, SHA_WEIGHTS, WEIGHTS)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit.value.code or 0), out, err


@pytest.mark.parametrize("damage", [flip, truncate, folder, link_to_a_good_copy], ids=lambda f: f.__name__)
@pytest.mark.parametrize("split", [[], ["--split", "700K"]], ids=["bundle", "volumes"])
def test_the_repair_advice_export_prints_works(
    hub: LoopbackHub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    damage: Callable[[Path], None],
    split: list[str],
) -> None:
    add_repos(hub)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.chdir(tmp_path)
    Path("m.yml").write_text(MANIFEST)
    store = str(tmp_path / "the store")
    assert cli(capsys, "sync", "m.yml", "--store", store)[0] == 0
    damage(Store.at(Path(store), clock=SYSTEM).local_blob(SHA_WEIGHTS))
    code, _, err = cli(capsys, "export", "m.yml", "--store", store, "-o", "out.tar.zst", *split)
    assert code == 4, err
    assert SHA_WEIGHTS in err and "huggingface:org/a@main model.safetensors" in err
    advice = re.findall(r"run `([^`]+)`", err)
    assert advice == [shlex.join(["mirror", "sync", "m.yml", "--store", store])]
    argv = shlex.split(advice[0])
    assert argv[0] == "mirror"
    code, _, err = cli(capsys, *argv[1:])
    assert code == 0, err
    code, _, err = cli(capsys, "export", "m.yml", "--store", store, "-o", "out.tar.zst", *split)
    assert code == 0, err
    assert cli(capsys, "verify", *sorted(str(p) for p in tmp_path.glob("out*.tar.zst")))[0] == 0


def test_export_of_the_whole_store_names_the_revisions_to_sync(
    hub: LoopbackHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    add_repos(hub)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    (tmp_path / "m.yml").write_text(MANIFEST)
    store = str(tmp_path / "store")
    assert cli(capsys, "sync", str(tmp_path / "m.yml"), "--store", store)[0] == 0
    flip(Store.at(Path(store), clock=SYSTEM).local_blob(SHA_CONFIG))
    code, _, err = cli(capsys, "export", "--store", store, "-o", str(tmp_path / "out.tar.zst"))
    assert code == 4
    assert "a manifest that names huggingface:org/a@main, huggingface:org/b@main" in err
    assert cli(capsys, "sync", str(tmp_path / "m.yml"), "--store", store)[0] == 0
    assert cli(capsys, "export", "--store", store, "-o", str(tmp_path / "out.tar.zst"))[0] == 0


# gc killed at every step --------------------------------------------------------------------------------


def gc_store(root: Path) -> Store:
    """Three repos, two revisions of one, shared content: a gc keeping org/a@main drops some of each."""
    store = Store.at(root, clock=SYSTEM)
    shared = b"shared weights" * 100
    put_repo(
        store, "org/a", {"main": {"w.bin": shared, "c.json": b"a2"}, "v1": {"w.bin": shared, "c.json": b"a1"}}
    )
    put_repo(store, "org/b", {"main": {"w.bin": shared, "c.json": b"b"}, "dev": {"x.bin": b"x" * 50}})
    put_repo(store, "org/c", {"main": {"c.json": b"c"}})
    return store


def state(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != "lock" and not p.name.endswith(".tmp")
    }


def gc_killed_at(step: int, store: Store) -> bool:
    """Run the gc in a child process that SIGKILLs itself before its step-th removal; whether it was."""
    steps = 0

    def kill_at_step() -> None:
        nonlocal steps
        steps += 1
        if steps == step:
            os.kill(os.getpid(), signal.SIGKILL)

    def child() -> None:
        keep = plan_keep(store, parse_manifest("version: 1\nmodels:\n  - repo: org/a\n").requests())
        with store.lock():
            collect_garbage(store, keep, dry_run=False, step=kill_at_step)

    return killed_in_child(child, "the gc")


@pytest.mark.e2e
def test_gc_killed_at_every_step_leaves_a_store_verify_and_export_accept(tmp_path: Path) -> None:
    keep_a = parse_manifest("version: 1\nmodels:\n  - repo: org/a\n").requests()
    reference = gc_store(tmp_path / "reference")
    steps: list[str] = []
    done = collect_garbage(
        reference, plan_keep(reference, keep_a), dry_run=False, step=lambda: steps.append("step")
    )
    assert done.refs and done.snapshots and done.blobs
    assert len(steps) == len(done.blobs) + len(done.snapshots) + 3  # refs: one write per repo touched
    for step in range(1, len(steps) + 1):
        store = gc_store(tmp_path / f"s{step}")
        assert gc_killed_at(step, store), step
        check = verify_store(store)
        assert check.ok, (step, check.problems)
        export(store, None, tmp_path / f"all{step}.tar.zst")  # every revision the store still names
        export(store, keep_a, tmp_path / f"a{step}.tar.zst")
        collect_garbage(store, plan_keep(store, keep_a), dry_run=False)  # the rerun finishes the job
        assert state(store.local_root) == state(reference.local_root), (
            f"killed at step {step} of {len(steps)}"
        )
        shutil.rmtree(store.local_root)


def test_gc_removes_refs_before_records_and_records_before_blobs(tmp_path: Path) -> None:
    store = gc_store(tmp_path / "store")
    order: list[str] = []
    before = state(store.local_root)

    def record_removal() -> None:
        now = state(store.local_root)
        gone = sorted(set(before) - set(now) - {p for p in order})
        changed = sorted(p for p in now if p in before and now[p] != before[p] and p not in order)
        order.extend(gone + changed)

    keep = plan_keep(store, parse_manifest("version: 1\nmodels:\n  - repo: org/a\n").requests())
    collect_garbage(store, keep, dry_run=False, step=record_removal)
    record_removal()
    kinds = [
        "refs" if p.endswith("refs.json") else "snapshot" if "/snapshots/" in p else "blob" for p in order
    ]
    assert kinds == sorted(kinds, key=["refs", "snapshot", "blob"].index), order
    assert RepoKey("huggingface", "model", "org/b") not in store.repos()
