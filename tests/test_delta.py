"""Deltas: `mirror inventory` on the far side, `export --have`/`--since` packing only what it lacks, and
imports that take the rest from the target (any repo of it, hashed first) or name exactly what is missing."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mirror.bundle import IN_TARGET, build_index, iter_members, read_index, select_all, write_bundle
from mirror.clock import SYSTEM
from mirror.errors import UsageError
from mirror.importing import import_bundle
from mirror.inventory import had_by_bundles, read_have, take_inventory
from mirror.store import Store
from tests.conftest import put_repo
from tests.hub import HubFile, LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.roundtrip import (
    MINILM,
    embeddings,
    fresh_env,
    minilm_folder,
    offline_env,
    python_offline,
    run_mirror,
    tree_contents,
)
from tests.test_roundtrip import tar_members

# -- the done-when: a branch moves upstream, the far side gets only what changed --------------------------


@dataclass
class Moved:
    store: Path
    manifest: Path
    first: Path  # the full bundle of the first sync
    air_cache: Path  # the air-gapped host, which imported `first`
    air: dict[str, str]
    old: str
    new: str
    env: dict[str, str]
    work: Path


CHANGED = {"README.md": b"# all-MiniLM-L6-v2, as mirrored\n", "notes/changes.txt": b"a new file\n"}


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moved]:
    work = tmp_path_factory.mktemp("delta")
    manifest = work / "m.yml"
    manifest.write_text(f"version: 1\nmodels:\n  - repo: {MINILM}\n")
    store, first = work / "store", work / "first.tar.zst"
    with LoopbackHub() as hub:
        old = hub.add_folder(MINILM, minilm_folder())
        env = fresh_env(work / "home", HF_ENDPOINT=hub.url)
        run_mirror("sync", str(manifest), "--store", str(store), env=env)
        run_mirror("export", str(manifest), "--store", str(store), "-o", str(first), env=env)
        # The far side imports the first bundle.
        air_cache = work / "air" / "hub"
        air = offline_env(work / "air", HF_HUB_CACHE=str(air_cache))
        run_mirror("import", str(first), env=air)
        # Upstream, main moves: one file changes, one is added, the rest is inherited.
        new = hub.add_commit(MINILM, CHANGED, inherit=True)
        run_mirror("sync", str(manifest), "--store", str(store), env=env)
    yield Moved(store, manifest, first, air_cache, air, old, new, env, work)


def test_a_delta_from_the_far_side_inventory_done_when(moved: Moved, tmp_path: Path) -> None:
    """The issue's done-when: inventory on the host that imported the first bundle, export --have, the delta
    holds only the changed files; it imports there into the new revision, loadable offline and identical to
    a full import; on an empty host it fails naming the missing files, publishing nothing (exit 3)."""
    have = tmp_path / "have.json"
    run_mirror("inventory", "-o", str(have), env=moved.air)
    delta = tmp_path / "delta.tar.zst"
    args = ["export", str(moved.manifest), "--store", str(moved.store)]
    run_mirror(*args, "-o", str(delta), "--have", str(have), env=moved.env)
    members = [m.name for m in tar_members(delta)]
    assert members == [
        "MIRROR-BUNDLE.json",
        "SHA256SUMS",
        *(f"repos/huggingface/model/{MINILM}/{moved.new}/{path}" for path in sorted(CHANGED)),
    ]
    # The index still describes every file of the new revision, marking the ones the target must hold.
    index = read_index(delta)
    (repo,) = index.repos
    assert repo.revisions == (("main", moved.new),)
    files = {f.path for f in repo.commit(moved.new).files}
    originals = {p.relative_to(minilm_folder()).as_posix() for p in minilm_folder().rglob("*") if p.is_file()}
    assert files == originals | set(CHANGED)
    in_target = {f.path for f in repo.commit(moved.new).files if index.placement(f.sha256).in_target}
    assert in_target == files - set(CHANGED)

    # On the host that has the rest: the new revision, complete, loadable offline.
    run_mirror("import", str(delta), env=moved.air)
    refs_main = moved.air_cache / f"models--{MINILM.replace('/', '--')}" / "refs" / "main"
    assert refs_main.read_text() == moved.new
    assert embeddings(MINILM, moved.air) == embeddings(str(minilm_folder()), moved.air)
    readme = python_offline(
        f"from huggingface_hub import hf_hub_download\nprint(open(hf_hub_download({MINILM!r}, 'README.md')).read())",
        moved.air,
    )
    assert readme.strip() == CHANGED["README.md"].decode().strip()
    # Byte-identical to a full import of the same revision.
    full = tmp_path / "full.tar.zst"
    run_mirror(*args, "-o", str(full), env=moved.env)
    reference = tmp_path / "reference"
    run_mirror("import", str(full), "--target", str(reference), env=moved.env)
    folder = f"models--{MINILM.replace('/', '--')}"
    got, want = tree_contents(moved.air_cache / folder), tree_contents(reference / folder)
    assert {k: got.get(k) for k in want} == want
    # Beside it, only the old revision the first bundle brought (its snapshot and the blobs it alone uses).
    old_blobs = {
        "blobs/" + v[1].rsplit("/", 1)[1] for k, v in got.items() if moved.old in k and v[0] == "link"
    }
    assert all(moved.old in k or k in old_blobs for k in set(got) - set(want))
    run_mirror("verify", "--target", str(moved.air_cache), env=moved.air)

    # On an empty host: exit 3, every missing file named, nothing published.
    empty = tmp_path / "empty" / "hub"
    empty.parent.mkdir()
    proc = run_mirror("import", str(delta), "--target", str(empty), env=moved.env, check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"MISSING   huggingface:{MINILM}" in proc.stdout
    for path in in_target:
        assert f" {path}: not in the target" in proc.stdout
    assert not any(f" {path}:" in proc.stdout for path in CHANGED)  # they were in the delta
    assert list(empty.parent.iterdir()) == []
    data = json.loads(
        run_mirror("import", str(delta), "--target", str(empty), "--json", env=moved.env, check=False).stdout
    )
    (missing,) = data["bundles"][0]["missing"]
    assert {f["path"] for f in missing["missing_files"]} == in_target
    assert data["bundles"][0]["repos"] == [] and list(empty.parent.iterdir()) == []


def test_since_an_earlier_bundle_gives_the_same_delta(moved: Moved, tmp_path: Path) -> None:
    args = ["export", str(moved.manifest), "--store", str(moved.store)]
    cache, have = tmp_path / "cache", tmp_path / "have.json"
    run_mirror("import", str(moved.first), "--target", str(cache), env=moved.env)
    run_mirror("inventory", "-o", str(have), "--target", str(cache), env=moved.env)
    by_have, by_since = tmp_path / "have.tar.zst", tmp_path / "since.tar.zst"
    run_mirror(*args, "-o", str(by_have), "--have", str(have), env=moved.env)
    proc = run_mirror(*args, "-o", str(by_since), "--since", str(moved.first), "--json", env=moved.env)
    assert by_have.read_bytes() == by_since.read_bytes()
    assert (
        json.loads(proc.stdout)["in_target"]["files"]
        == len(read_index(by_since).repos[0].commits[0].files) - 2
    )


# -- inventory ----------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_inventory_of_a_cache_huggingface_hub_filled_itself(tmp_path: Path) -> None:
    """No receipts: LFS blobs are taken by name, ordinary blobs hashed; a delta against it packs nothing, and
    its import takes every file from the blobs huggingface_hub wrote."""
    weights = safetensors_sized(os.urandom(200_000))
    files = {"config.json": b'{"model_type": "bert"}\n', "model.safetensors": weights}
    manifest = tmp_path / "m.yml"
    manifest.write_text("version: 1\nmodels:\n  - repo: org/hubbed\n")
    cache = tmp_path / "cache"
    with LoopbackHub() as hub:
        commit = hub.add_commit("org/hubbed", [HubFile(p, data=d) for p, d in files.items()])
        env = fresh_env(tmp_path / "home", HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(cache))
        python_offline("from huggingface_hub import snapshot_download\nsnapshot_download('org/hubbed')", env)
        store = tmp_path / "store"
        run_mirror("sync", str(manifest), "--store", str(store), env=env)
    have = tmp_path / "have.json"
    out = json.loads(run_mirror("inventory", "-o", str(have), "--json", env=env).stdout)
    assert out["hashed_files"] == 1 and out["hashed_bytes"] == len(files["config.json"])  # not the weights
    data = json.loads(have.read_text())
    assert data["repos"] == [
        {"repo_type": "model", "repo_id": "org/hubbed", "revisions": {"main": commit}, "commits": [commit]}
    ]
    assert {b["sha256"]: b["size"] for b in data["blobs"]} == {
        hashlib.sha256(d).hexdigest(): len(d) for d in files.values()
    }
    # Deterministic, one blob per line, and read back as written.
    run_mirror("inventory", "-o", str(tmp_path / "again.json"), env=env)
    assert (tmp_path / "again.json").read_bytes() == have.read_bytes()
    assert len(have.read_text().splitlines()) == 13  # 7 lines of frame, a repo, two blobs
    assert read_have(have) == {hashlib.sha256(d).hexdigest(): len(d) for d in files.values()}

    delta = tmp_path / "delta.tar.zst"
    run_mirror("export", "--store", str(store), "-o", str(delta), "--have", str(have), env=env)
    assert [m.name for m in tar_members(delta)] == ["MIRROR-BUNDLE.json", "SHA256SUMS"]
    proc = run_mirror("import", str(delta), "--json", env=env)
    (report,) = json.loads(proc.stdout)["bundles"][0]["repos"]
    assert report["files_written"] == 0  # huggingface_hub's own blobs, hashed and kept
    assert (cache / "models--org--hubbed" / "refs" / "main").read_text() == commit


def test_inventory_of_the_other_layouts(tmp_path: Path, isolated_home: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(store, "org/a", {"main": {"w.bin": b"weights" * 100, "c.json": b"{}"}, "v1": {"c.json": b"{}"}})
    bundle = write_bundle(store, select_all(store), tmp_path / "b.tar.zst").path
    want = {hashlib.sha256(d).hexdigest(): len(d) for d in (b"weights" * 100, b"{}")}
    for layout in ("dir", "modelscope"):
        target = tmp_path / layout
        import_bundle(bundle, layout, target)
        held, stats = take_inventory(layout, target)
        assert dict(held.blobs) == want and stats.hashed == 0  # receipts say it all
        (repo,) = held.repos
        # modelscope: also the HF repo's `master`, main's alias (what modelscope reads by default).
        names = {"main", "v1"} | ({"master"} if layout == "modelscope" else set())
        assert repo.repo_id == "org/a" and {n for n, _ in repo.revisions} == names
    # What modelscope downloads itself (no receipt) is hashed, its revision listed without a commit.
    own = tmp_path / "modelscope" / "models" / "org--own" / "snapshots" / "master"
    own.mkdir(parents=True)
    (own / "x.txt").write_bytes(b"own")
    held, stats = take_inventory("modelscope", tmp_path / "modelscope")
    assert held.blobs[hashlib.sha256(b"own").hexdigest()] == 3 and stats.hashed == 1
    assert ("master", None) in next(r for r in held.repos if r.repo_id == "org/own").revisions
    # A target that does not exist holds nothing.
    assert take_inventory("hf", tmp_path / "nowhere")[0].blobs == {}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{", "not a `mirror inventory` file"),
        ('{"format": "other"}', "not a `mirror inventory` file"),
        ('{"format": "mirror-inventory", "format_version": 9, "blobs": []}', "version 9"),
        (
            '{"format": "mirror-inventory", "format_version": 1, "blobs": [{"sha256": "x", "size": 1}]}',
            "blobs",
        ),
    ],
)
def test_a_bad_have_file_is_a_usage_error(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "have.json"
    path.write_text(text)
    with pytest.raises(UsageError, match=match):
        read_have(path)


# -- content from any repo of the target, hashed first -------------------------------------------------------


@dataclass(frozen=True)
class Family:
    store: Store
    root: Path
    base_bundle: Path
    weights: bytes


@pytest.fixture
def family(tmp_path: Path, isolated_home: Path) -> Family:
    """A base model, imported on the far side; a fine-tune that shares its weights, synced later."""
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    weights = safetensors_sized(os.urandom(300_000))
    put_repo(store, "org/base", {"main": {"model.safetensors": weights, "config.json": b'{"v": 1}'}})
    base_bundle = write_bundle(store, select_all(store), tmp_path / "base.tar.zst").path
    put_repo(store, "org/tune", {"main": {"model.safetensors": weights, "config.json": b'{"v": 2}'}})
    return Family(store, tmp_path, base_bundle, weights)


@pytest.mark.parametrize("link_shared", [False, True])
def test_a_delta_takes_content_from_another_repo_of_the_target(
    family: Family, tmp_path: Path, link_shared: bool
) -> None:
    for layout in ("hf", "dir", "modelscope"):
        target = tmp_path / f"{layout}-{link_shared}"
        import_bundle(family.base_bundle, layout, target)
        have, _ = take_inventory(layout, target)
        delta = write_bundle(
            family.store, select_all(family.store), tmp_path / f"{layout}.tar.zst", have=have.blobs
        )
        packed = {m.file.path for m in iter_members(read_index(delta.path))}
        assert packed == {"config.json"}  # the fine-tune's config; the weights and org/base stay
        report = import_bundle(delta.path, layout, target, link_shared=link_shared)
        assert report.exit_code == 0 and len(report.repos) == 2
        folder = {
            "hf": "models--org--{}/snapshots",
            "dir": "org/{}",
            "modelscope": "models/org--{}/snapshots",
        }
        base, tune = (
            next((target / folder[layout].format(r)).rglob("model.safetensors")) for r in ("base", "tune")
        )
        assert tune.read_bytes() == family.weights
        # org/base's copy, hashed, then copied (each repo its own file), or hardlinked with --link-shared
        assert tune.samefile(base) == link_shared


@pytest.mark.e2e
def test_content_damaged_in_the_target_is_named_and_the_repo_not_published(
    family: Family, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    import_bundle(family.base_bundle, "hf", cache)
    have, _ = take_inventory("hf", cache)
    delta = write_bundle(family.store, select_all(family.store), tmp_path / "delta.tar.zst", have=have.blobs)
    blob = cache / "models--org--base" / "blobs" / hashlib.sha256(family.weights).hexdigest()
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[1000] ^= 1  # bit rot, same size
    blob.write_bytes(bytes(data))
    report = import_bundle(delta.path, "hf", cache)
    assert report.exit_code == 4
    assert report.corrupt and str(blob) in report.corrupt[0]
    assert [m.repo.repo_id for m in report.missing] == ["org/base", "org/tune"]  # both need the weights
    assert all("damaged" in m.files[0].why and len(m.files) == 1 for m in report.missing)
    assert not (cache / "models--org--tune").exists()
    # CLI: the same, as exit 4 with the file named.
    env = fresh_env(tmp_path / "home")
    proc = run_mirror("import", str(delta.path), "--target", str(cache), env=env, check=False)
    assert proc.returncode == 4 and f"CORRUPT   {blob}" in proc.stdout


def test_have_needs_the_same_size_and_in_target_is_optional_in_the_index(
    family: Family, tmp_path: Path
) -> None:
    sha = hashlib.sha256(family.weights).hexdigest()
    index = build_index(family.store, select_all(family.store), have={sha: 1})  # a wrong size: not held
    assert index.placements == {}
    index = build_index(family.store, select_all(family.store), have={sha: len(family.weights)})
    assert index.placements == {sha: IN_TARGET}
    entry = next(
        f for r in index.to_json()["repos"] for c in r["commits"] for f in c["files"] if f["sha256"] == sha
    )
    assert entry["in_target"] is True
    plain = build_index(family.store, select_all(family.store))
    assert "in_target" not in plain.to_bytes().decode()
    assert had_by_bundles([family.base_bundle]) == {
        sha: len(family.weights),
        hashlib.sha256(b'{"v": 1}').hexdigest(): 8,
    }


@pytest.mark.e2e
def test_a_delta_written_as_volumes(family: Family, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    import_bundle(family.base_bundle, "hf", cache)
    env = fresh_env(tmp_path / "home")
    have = tmp_path / "have.json"
    run_mirror("inventory", "--target", str(cache), "-o", str(have), env=env)
    put_repo(family.store, "org/new", {"main": {"model.safetensors": safetensors_sized(os.urandom(150_000))}})
    out = tmp_path / "out" / "d.tar.zst"
    run_mirror(
        "export",
        "--store",
        str(family.store.local_root),
        "-o",
        str(out),
        "--have",
        str(have),
        "--split",
        "64K",
        env=env,
    )
    volumes = sorted(out.parent.glob("d.*.tar.zst"))
    assert len(volumes) >= 3
    proc = run_mirror("import", *map(str, reversed(volumes)), "--target", str(cache), env=env)
    assert "imported  huggingface:org/new" in proc.stdout and "imported  huggingface:org/tune" in proc.stdout


def test_a_delta_on_a_file_system_without_hardlinks_copies_from_the_target(
    family: Family, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(*args: Any, **kwargs: Any) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)  # exFAT and the like
    cache = tmp_path / "cache"
    import_bundle(family.base_bundle, "hf", cache, symlinks=False)
    have, _ = take_inventory("hf", cache)
    assert hashlib.sha256(family.weights).hexdigest() in have.blobs
    delta = write_bundle(family.store, select_all(family.store), tmp_path / "delta.tar.zst", have=have.blobs)
    report = import_bundle(delta.path, "hf", cache, symlinks=False)
    assert report.exit_code == 0
    weights = next((cache / "models--org--tune" / "snapshots").rglob("model.safetensors"))
    assert weights.read_bytes() == family.weights and not weights.is_symlink()
