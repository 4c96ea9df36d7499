"""Self-contained volumes (`export --split`): sizes, packing, each volume a bundle of its own, and imports of
any subset of volumes in any order, with missing and damaged volumes named."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard

from mirror.bundle import (
    BundleIndex,
    build_index,
    iter_members,
    read_index,
    select_all,
    verify_bundle,
    write_bundle,
)
from mirror.bundle import frames as frames_module
from mirror.bundle.frames import FrameWriter, compressed_bound, stream_bound
from mirror.bundle.volumes import tar_capacity, volume_names, write_volumes
from mirror.cli.output import import_report_lines
from mirror.clock import SYSTEM
from mirror.errors import IntegrityError
from mirror.importing import group_bundles, import_bundle, import_unit
from mirror.store import Store
from mirror.units import format_size, parse_size
from tests.conftest import put_repo
from tests.modelfiles import safetensors_sized
from tests.roundtrip import fresh_env, run_mirror, tree_contents

SPLIT = "100K"
LIMIT = 100 << 10


# -- sizes (a CLI contract: GNU split's units) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("25G", 25 << 30),
        ("25GB", 25 * 10**9),
        ("100K", 100 << 10),
        ("100KB", 100_000),
        ("4700MB", 4_700_000_000),
        ("64M", 64 << 20),
        ("1T", 1 << 40),
        ("1TB", 10**12),
        ("1048576", 1 << 20),
        ("25g", 25 << 30),
        ("25GiB", 25 << 30),
    ],
)
def test_sizes_read_as_gnu_split_does(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize("text", ["", "G", "25X", "-1G", "1.5G", "25 G B", "0x10"])
def test_bad_sizes_are_refused_with_the_units(text: str) -> None:
    with pytest.raises(ValueError, match="powers of 1024"):
        parse_size(text)


@pytest.mark.parametrize("n", [0, 1, 1000, 100_000, 1 << 20, 3 << 20])
def test_the_compressed_bound_holds_for_incompressible_data(n: int) -> None:
    data = random.Random(n).randbytes(n)
    for level in (1, 3, 19):
        compressed = zstandard.ZstdCompressor(level=level, write_checksum=True).compress(data)
        assert len(compressed) <= compressed_bound(n)


@pytest.mark.parametrize("seed", range(4))
def test_the_stream_bound_holds_for_frames_of_incompressible_data(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small frames, so the stream is many frames: pieces gathered and large pieces framed on their own, mixed.
    monkeypatch.setattr(frames_module, "FRAME", 4096)
    rng = random.Random(seed)
    out = bytearray()
    total = 0
    with FrameWriter(out.extend, 3, 2) as writer:
        for _ in range(200):
            piece = rng.randbytes(rng.choice([0, 1, 100, 511, 4095, 4096]))
            total += len(piece)
            if len(piece) >= 4096 and rng.random() < 0.7:
                writer.frame(memoryview(piece), rng.choice([1, 3]))
            else:
                writer.write(piece)
        writer.close()
    assert len(out) <= stream_bound(total)
    assert zstandard.ZstdDecompressor().stream_reader(bytes(out), read_across_frames=True).read() is not None
    assert stream_bound(tar_capacity(LIMIT)) <= LIMIT < stream_bound(tar_capacity(LIMIT) + 10240)


def test_volume_names() -> None:
    assert volume_names(Path("x/models.tar.zst"), 2) == ["models.001.tar.zst", "models.002.tar.zst"]
    assert volume_names(Path("models"), 1000)[-1] == "models.1000.tar.zst"
    assert volume_names(Path("models"), 1000)[0] == "models.0001.tar.zst"


# -- a store whose export needs several volumes and a chunked file ----------------------------------------


@dataclass(frozen=True)
class SplitStore:
    store: Store
    root: Path
    repos: list[str]


@pytest.fixture
def split_store(tmp_path: Path, isolated_home: Path) -> SplitStore:
    rng = random.Random(6)
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(  # a weights file over two volumes large: cut into chunks
        store,
        "org/big",
        {"main": {"model.safetensors": safetensors_sized(rng.randbytes(260_000)), "config.json": b"{}\n"}},
    )
    shared = rng.randbytes(30_000)
    put_repo(
        store,
        "org/mid",
        {"main": {"model.safetensors": safetensors_sized(rng.randbytes(50_000)), "vocab.txt": shared}},
    )
    put_repo(  # shares a file with org/mid (one content, packed once); two revisions
        store,
        "org/tune",
        {
            "main": {"vocab.txt": shared, "model.safetensors": safetensors_sized(rng.randbytes(45_000))},
            "v1": {"vocab.txt": shared, "notes.md": b"# v1\n" * 100},
        },
    )
    put_repo(
        store, "gpt2", {"main": {"config.json": b'{"model_type": "gpt2"}\n', "merges.txt": b"a b\n" * 5000}}
    )
    return SplitStore(store, tmp_path, ["org/big", "org/mid", "org/tune", "gpt2"])


def export_split(fx: SplitStore, out: Path, *extra: str, split: str = SPLIT) -> list[Path]:
    env = fresh_env(fx.root / "home")
    run_mirror(
        "export", "--store", str(fx.store.local_root), "-o", str(out), "--split", split, *extra, env=env
    )
    return sorted(out.parent.glob(out.name.replace(".tar.zst", ".[0-9][0-9][0-9].tar.zst")))


def needs(index: BundleIndex, repo_id: str) -> set[int]:
    repo = next(r for r in index.repos if r.repo_id == repo_id)
    return {v for c in repo.commits for f in c.files for v in index.placement(f.sha256).volumes()}


def published(cache: Path) -> set[str]:
    return {
        p.name.split("--", 1)[1].replace("--", "/") for p in cache.glob("models--*") if (p / "refs").exists()
    }


@pytest.fixture
def volumes(split_store: SplitStore) -> Iterator[list[Path]]:
    yield export_split(split_store, split_store.root / "out" / "models.tar.zst")


@pytest.mark.e2e
def test_split_export_done_when(split_store: SplitStore, volumes: list[Path], tmp_path: Path) -> None:
    """The issue's done-when: several volumes and a chunked file; each volume passes `tar --zstd -t` and its
    own `sha256sum -c`; reverse order imports; all but one publishes the complete repos and names the
    missing volume (exit 3); a flipped byte names the volume and the others import."""
    env = fresh_env(tmp_path / "home")
    assert [v.name for v in volumes] == [f"models.{i:03d}.tar.zst" for i in range(1, len(volumes) + 1)]
    assert len(volumes) >= 4
    index = read_index(volumes[0])
    chunked = {sha for sha, p in index.placements.items() if p.chunks}
    assert chunked and all(len(index.placements[sha].chunks) >= 2 for sha in chunked)
    for volume in volumes:
        assert volume.stat().st_size <= LIMIT
        listed = subprocess.run(["tar", "--zstd", "-tf", str(volume)], capture_output=True, text=True)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines()[:2] == ["MIRROR-BUNDLE.json", "SHA256SUMS"]
        out = tmp_path / "x" / volume.name
        out.mkdir(parents=True)
        subprocess.run(["tar", "--zstd", "-xf", str(volume)], cwd=out, check=True)
        check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
        assert check.returncode == 0 and ": OK" in check.stdout, check.stdout + check.stderr
        side = subprocess.run(
            ["sha256sum", "-c", volume.name + ".sha256"], cwd=volume.parent, capture_output=True, text=True
        )
        assert side.returncode == 0, side.stdout + side.stderr
        # Each volume's index describes the whole set, and names this volume.
        own = read_index(volume)
        assert own.volume_set is not None and own.volume_set.id == index.volume_set.id  # type: ignore[union-attr]
        assert own.volume_set.names == tuple(v.name for v in volumes)
    assert any(m.chunk is not None for v in volumes for m in iter_members(read_index(v)))
    # Joining the chunks of an extracted volume set gives the file back (no mirror needed).
    for sha in chunked:
        joined = b"".join(p.read_bytes() for p in sorted((tmp_path / "x").glob(f"*/chunks/{sha}/*")))
        assert hashlib.sha256(joined).hexdigest() == sha

    # The reference: the same store as one plain bundle.
    plain = tmp_path / "plain.tar.zst"
    run_mirror("export", "--store", str(split_store.store.local_root), "-o", str(plain), env=env)
    reference = tmp_path / "reference"
    run_mirror("import", str(plain), "--target", str(reference), env=env)

    whole = tmp_path / "whole"
    proc = run_mirror("import", *map(str, reversed(volumes)), "--target", str(whole), env=env)
    assert tree_contents(whole) == tree_contents(reference)
    assert "models.tar.zst" in proc.stdout

    # All but one volume: the repos that do not need it are published, the others named with it.
    missing = next(
        v for v in range(1, len(volumes) + 1) if any(v not in needs(index, r) for r in split_store.repos)
    )
    partial = tmp_path / "partial"
    given = [str(p) for i, p in enumerate(volumes, 1) if i != missing]
    proc = run_mirror("import", *given, "--target", str(partial), "--json", env=env, check=False)
    assert proc.returncode == 3, proc.stderr
    complete = {r for r in split_store.repos if missing not in needs(index, r)}
    assert published(partial) == complete and complete != set(split_store.repos)
    report = json.loads(proc.stdout)["bundles"][0]
    assert {m["repo_id"] for m in report["missing"]} == set(split_store.repos) - complete
    assert all(m["needs_volumes"] == [volumes[missing - 1].name] for m in report["missing"])
    human = run_mirror("import", *given, "--target", str(tmp_path / "partial2"), env=env, check=False)
    assert f"needs {volumes[missing - 1].name}" in human.stdout and "(not given)" in human.stdout
    for repo_id in complete:
        folder = "models--" + repo_id.replace("/", "--")
        assert tree_contents(partial / folder) == tree_contents(reference / folder)
    # The missing volume later, with the ones its repos need: now everything is there.
    run_mirror("import", *map(str, volumes), "--target", str(partial), env=env)
    assert tree_contents(partial) == tree_contents(reference)

    # A flipped byte in one volume: it is named, and every repo that does not need it still imports.
    damaged_dir = tmp_path / "damaged"
    shutil.copytree(volumes[0].parent, damaged_dir)
    victim = damaged_dir / volumes[missing - 1].name
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x10
    victim.write_bytes(bytes(data))
    target = tmp_path / "after-damage"
    proc = run_mirror(
        "import",
        *map(str, sorted(damaged_dir.glob("*.tar.zst"))),
        "--target",
        str(target),
        env=env,
        check=False,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert f"DAMAGED   {victim.name}" in proc.stdout and f"({victim.name} (damaged)" not in proc.stdout
    assert published(target) == complete
    assert f"in {victim.name} (damaged)" in proc.stdout


@pytest.mark.e2e
def test_volumes_are_reproducible_and_independent_of_threads(split_store: SplitStore, tmp_path: Path) -> None:
    first = export_split(split_store, tmp_path / "a" / "m.tar.zst", "--threads", "1")
    second = export_split(split_store, tmp_path / "b" / "m.tar.zst", "--threads", "4")
    assert [p.name for p in first] == [p.name for p in second]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    # Another level gives other bytes, and still volumes that fit.
    strong = export_split(split_store, tmp_path / "c" / "m.tar.zst", "--level", "19")
    assert [p.read_bytes() for p in strong] != [p.read_bytes() for p in first]
    assert all(p.stat().st_size <= LIMIT for p in strong)


@pytest.mark.parametrize("split", ["64K", "150K", "1000KB", "1M"])
@pytest.mark.e2e
def test_every_volume_fits_and_the_set_imports(split_store: SplitStore, tmp_path: Path, split: str) -> None:
    volumes = export_split(split_store, tmp_path / "out" / "m.tar.zst", split=split)
    for volume in volumes:
        assert volume.stat().st_size <= parse_size(split)
        verify_bundle(volume)
    (unit,) = group_bundles(volumes)
    report = import_unit(unit, "hf", tmp_path / "cache")
    assert report.exit_code == 0 and len(report.repos) == len(split_store.repos)


@pytest.mark.e2e
def test_a_split_too_small_for_the_index_is_a_usage_error(split_store: SplitStore, tmp_path: Path) -> None:
    env = fresh_env(tmp_path / "home")
    out = tmp_path / "out" / "m.tar.zst"
    for split, why in [("8K", "--split 8K is too small"), ("25Q", "powers of 1024")]:
        proc = run_mirror(
            "export",
            "--store",
            str(split_store.store.local_root),
            "-o",
            str(out),
            "--split",
            split,
            env=env,
            check=False,
        )
        assert proc.returncode == 2 and why in proc.stderr, (split, proc.stderr)
    assert not out.parent.exists() or not list(out.parent.iterdir())


@pytest.mark.e2e
def test_a_new_export_removes_the_volumes_of_an_older_set(split_store: SplitStore, tmp_path: Path) -> None:
    out = tmp_path / "out" / "m.tar.zst"
    many = export_split(split_store, out)
    keep = out.with_name("m.2026.tar.zst")  # not a volume: a bundle someone named by year
    keep.write_bytes(b"not mirror's")
    one = export_split(split_store, out, split="10M")
    assert len(many) > 1 and [p.name for p in one] == ["m.001.tar.zst"]
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "m.001.tar.zst",
        "m.001.tar.zst.sha256",
        keep.name,
    ]


@pytest.mark.e2e
def test_volumes_are_signed_each_and_imported_with_trust(split_store: SplitStore, tmp_path: Path) -> None:
    env = fresh_env(tmp_path / "home")
    run_mirror("keygen", "-o", str(tmp_path / "site"), env=env)
    volumes = export_split(split_store, tmp_path / "out" / "m.tar.zst", "--sign", str(tmp_path / "site.key"))
    sigs = [json.loads(Path(f"{v}.sig").read_text())["statement"] for v in volumes]
    assert len({s["sequence"] for s in sigs}) == 1 and len({s["index_sha256"] for s in sigs}) == len(volumes)
    cache = tmp_path / "cache"
    run_mirror(
        "import", *map(str, volumes), "--target", str(cache), "--trust", str(tmp_path / "site.pub"), env=env
    )
    assert published(cache) == set(split_store.repos)
    Path(f"{volumes[-1]}.sig").unlink()
    refused = run_mirror(
        "import", *map(str, volumes), "--target", str(tmp_path / "c2"), "--trust", str(tmp_path / "site.pub"),
        env=env, check=False,
    )  # fmt: skip
    assert refused.returncode == 4 and "is not signed" in refused.stderr
    assert not (tmp_path / "c2").exists()


@pytest.mark.e2e
def test_inspect_and_verify_a_volume(volumes: list[Path], tmp_path: Path) -> None:
    env = fresh_env(tmp_path / "home")
    data = json.loads(run_mirror("inspect", str(volumes[1]), "--json", env=env).stdout)
    assert data["volume_set"]["volume"] == 2 and data["volume_set"]["names"] == [v.name for v in volumes]
    assert "volume 2 of" in run_mirror("inspect", str(volumes[1]), env=env).stdout
    run_mirror("verify", *map(str, volumes), env=env)


@pytest.mark.e2e
def test_the_dir_layout_takes_volumes_and_a_volume_given_twice_counts_once(
    volumes: list[Path], tmp_path: Path
) -> None:
    (unit,) = group_bundles([*volumes, volumes[0], Path(str(volumes[1]))])
    assert [p.name for p in unit.paths] == [v.name for v in volumes]
    report = import_unit(unit, "dir", tmp_path / "dir")
    assert report.exit_code == 0 and len(report.repos) == 4
    assert (tmp_path / "dir" / "org" / "big" / "model.safetensors").stat().st_size == 260_000
    assert (tmp_path / "dir" / "org" / "tune@v1" / "notes.md").read_bytes() == b"# v1\n" * 100


# -- the index: what a volume says must hold together -----------------------------------------------------


def _edit(index: BundleIndex, edit: Any) -> dict[str, Any]:
    data = index.to_json()
    edit(data)
    return data


def test_inconsistent_volume_indexes_are_refused(split_store: SplitStore, tmp_path: Path) -> None:
    base = build_index(split_store.store, select_all(split_store.store))
    (summary, *_) = write_volumes(split_store.store, base, tmp_path / "m.tar.zst", LIMIT)
    index = read_index(summary.path)
    big = next(r for r in index.to_json()["repos"] if r["repo_id"] == "org/big")
    weights = next(f for f in big["commits"][0]["files"] if "chunks" in f)

    def find(data: dict[str, Any]) -> dict[str, Any]:
        repo = next(r for r in data["repos"] if r["repo_id"] == "org/big")
        return next(f for f in repo["commits"][0]["files"] if f["path"] == weights["path"])  # type: ignore[no-any-return]

    cases = {
        "chunks that do not add up": lambda d: find(d)["chunks"][0].update(
            size=find(d)["chunks"][0]["size"] + 1
        ),
        "a volume out of range": lambda d: find(d)["chunks"][0].update(volume=99),
        "two placements": lambda d: find(d).update(volume=1),
        "no placement in a set": lambda d: find(d).pop("chunks"),
        "another set's id": lambda d: d["volume_set"].update(id="0" * 64),
        "this volume out of range": lambda d: d["volume_set"].update(volume=0),
        "in_target false": lambda d: (find(d).pop("chunks"), find(d).update(in_target=False)),
    }
    for what, edit in cases.items():
        with pytest.raises(IntegrityError):
            BundleIndex.from_json(_edit(index, edit))
            pytest.fail(what)
    plain = _edit(index, lambda d: d.pop("volume_set"))
    with pytest.raises(IntegrityError, match="not a volume of a set"):
        BundleIndex.from_json(plain)


@pytest.mark.e2e
def test_a_volume_of_one_set_never_completes_another(split_store: SplitStore, tmp_path: Path) -> None:
    first = export_split(split_store, tmp_path / "a" / "m.tar.zst")
    put_repo(split_store.store, "org/late", {"main": {"x.bin": b"late" * 100}})
    second = export_split(split_store, tmp_path / "b" / "m.tar.zst")
    units = group_bundles([first[0], *second[1:]])
    assert len(units) == 2  # two sets: never mixed
    report = import_unit(units[1], "hf", tmp_path / "cache")
    assert report.exit_code == 3 and report.missing
    assert all(second[0].name in m.volumes for m in report.missing)


@pytest.mark.e2e
def test_an_unreadable_volume_is_named_and_the_rest_import(volumes: list[Path], tmp_path: Path) -> None:
    env = fresh_env(tmp_path / "home")
    copy = tmp_path / "copy"
    shutil.copytree(volumes[0].parent, copy)
    broken = copy / volumes[0].name
    broken.write_bytes(broken.read_bytes()[:100])  # its index is gone
    proc = run_mirror(
        "import",
        *map(str, sorted(copy.glob("*.tar.zst"))),
        "--target",
        str(tmp_path / "cache"),
        env=env,
        check=False,
    )
    assert proc.returncode == 4
    assert volumes[0].name in proc.stderr and f"needs {volumes[0].name}" in proc.stdout


@pytest.mark.e2e
def test_import_bundle_takes_one_volume(volumes: list[Path], tmp_path: Path) -> None:
    report = import_bundle(volumes[-1], "hf", tmp_path / "cache")
    assert report.exit_code == 3 and report.volumes == (volumes[-1].name,)


@pytest.mark.e2e
def test_a_volume_import_killed_at_any_step_leaves_old_or_new_and_a_rerun_completes(
    volumes: list[Path], tmp_path: Path
) -> None:

    from tests.test_import_safety import Steps, check_hf_tree, import_killed_at

    index = read_index(volumes[0])
    reference = tmp_path / "reference"
    counted = Steps()
    import_unit(group_bundles(volumes)[0], "hf", reference, checkpoint=counted)
    total = counted.count
    assert total > 20
    for step in range(1, total + 1, 3):
        target = tmp_path / f"t{step}"
        assert import_killed_at(
            step,
            lambda steps, target=target: import_unit(
                group_bundles(list(reversed(volumes)))[0], "hf", target, checkpoint=steps
            ),
        ), step
        check_hf_tree(target, index)
        import_unit(group_bundles(volumes)[0], "hf", target)  # the rerun
        assert tree_contents(target) == tree_contents(reference), f"killed at step {step} of {total}"
        assert not list(target.rglob(".mirror/tmp/*")), "a rerun sweeps what the killed import left"


# -- volumes of one set imported in separate runs (one disc at a time) ------------------------------------


def _reference(split_store: SplitStore, tmp_path: Path, layout: str) -> Path:
    reference = tmp_path / f"reference-{layout}"
    plain = write_bundle(split_store.store, select_all(split_store.store), tmp_path / "plain.tar.zst").path
    import_bundle(plain, layout, reference)
    return reference


@pytest.mark.e2e
def test_the_modelscope_layout_takes_a_set_one_volume_per_run(
    split_store: SplitStore, tmp_path: Path
) -> None:
    """The modelscope layout keeps per repo too; a repo not complete yet has no snapshots/ it could load."""
    manifest = tmp_path / "org.yml"
    manifest.write_text(
        "version: 1\nmodels:\n  - repo: org/big\n  - repo: org/mid\n  - repo: org/tune\n"
        "    revisions: [main, v1]\n"
    )
    volumes = export_split(split_store, tmp_path / "out" / "org.tar.zst", str(manifest))
    assert len(volumes) >= 3
    reference = tmp_path / "reference"
    import_unit(group_bundles(volumes)[0], "modelscope", reference)
    target = tmp_path / "target"
    for number, volume in enumerate(volumes, 1):
        report = import_bundle(volume, "modelscope", target)
        assert bool(report.kept) == (number < len(volumes))
        for m in report.missing:
            folder = target / "models" / m.repo.repo_id.replace("/", "--")
            assert not (folder / "snapshots").exists() or any((folder / "snapshots").iterdir())
    assert report.exit_code == 0
    assert tree_contents(target) == tree_contents(reference) and _kept(target) == []


def _kept(target: Path) -> list[Path]:
    return sorted(p for p in target.rglob("*") if ".mirror/kept" in p.as_posix() and p.is_file())


def _chunk_volumes(index: BundleIndex) -> tuple[str, list[int]]:
    (sha,) = [sha for sha, p in index.placements.items() if p.chunks]
    return sha, [c.volume for c in index.placements[sha].chunks]


@pytest.mark.parametrize("layout", ["hf", "dir"])  # per repo, and one for the whole target
@pytest.mark.parametrize("order", ["forward", "backward"])
@pytest.mark.e2e
def test_volumes_imported_one_run_at_a_time_complete_the_repos(
    split_store: SplitStore, volumes: list[Path], tmp_path: Path, layout: str, order: str
) -> None:
    from huggingface_hub import scan_cache_dir

    reference = _reference(split_store, tmp_path, layout)
    target = tmp_path / "target"
    index = read_index(volumes[0])
    runs = volumes if order == "forward" else list(reversed(volumes))
    done: set[str] = set()
    for number, volume in enumerate(runs, 1):
        report = import_bundle(volume, layout, target)
        done |= {r.repo.repo_id for r in report.repos}
        if layout == "hf":
            assert scan_cache_dir(target).warnings == []  # the kept area is hidden from the clients' tools
        if number < len(runs):
            assert report.exit_code == 3 and report.kept, import_report_lines(report)
            still = {v for m in report.missing for v in m.volumes}
            assert still <= {v.name for v in runs[number:]}  # never an earlier volume again
            assert any(f"still needed: {', '.join(sorted(still))}" in k for k in report.kept)
            assert any(line.startswith("  KEPT      ") for line in import_report_lines(report))
            assert "kept" in report.to_json()
            # Swept once used: only what a repo not published yet needs stays.
            published_now = {r.repo.repo_id for r in report.repos}
            needed = {
                f.sha256
                for r in index.repos
                if r.repo_id not in published_now
                for c in r.commits
                for f in c.files
            }
            assert {p.name.split(".")[0] for p in _kept(target)} <= needed
    assert report.exit_code == 0 and not report.kept and "kept" not in report.to_json()
    assert done == set(split_store.repos)
    assert tree_contents(target) == tree_contents(reference)
    assert _kept(target) == [] and not list(target.rglob("kept")), "the set is complete: its kept area goes"
    _, chunk_volumes = _chunk_volumes(index)
    assert len(set(chunk_volumes)) >= 2  # the chunked content came from separate runs


@pytest.mark.e2e
def test_a_volume_given_twice_across_runs_is_harmless(volumes: list[Path], tmp_path: Path) -> None:
    target = tmp_path / "target"
    first = import_bundle(volumes[0], "hf", target)
    kept = {p: p.read_bytes() for p in _kept(target)}
    again = import_bundle(volumes[0], "hf", target)
    assert again.exit_code == first.exit_code == 3
    assert {p: p.read_bytes() for p in _kept(target)} == kept
    assert [m.to_json() for m in again.missing] == [m.to_json() for m in first.missing]
    for volume in volumes[1:]:
        report = import_bundle(volume, "hf", target)
    assert report.exit_code == 0 and _kept(target) == []


def _kept_after(volume: Path, target: Path) -> list[Path]:
    import_bundle(volume, "hf", target)
    return _kept(target)


def _offset_of(index: BundleIndex, sha: str, number: int) -> int:
    return index.placements[sha].offsets[number]


@pytest.mark.parametrize("what", ["chunk", "whole", "record"])
@pytest.mark.e2e
def test_damaged_kept_state_is_found_and_asked_for_again(
    volumes: list[Path], tmp_path: Path, what: str
) -> None:
    index = read_index(volumes[0])
    sha, chunk_volumes = _chunk_volumes(index)
    first = chunk_volumes[0]
    if what == "whole":  # a volume that leaves a whole content kept (its repo needs other volumes)
        first = next(
            i
            for i, v in enumerate(volumes, 1)
            if any(len(p.name) == 64 for p in _kept_after(v, tmp_path / f"probe{i}"))
        )
    target = tmp_path / "target"
    report = import_bundle(volumes[first - 1], "hf", target)
    assert report.exit_code == 3
    if what == "chunk":
        (part,) = [p for p in _kept(target) if p.name == f"{sha}.chunks"]
        data = bytearray(part.read_bytes())
        data[_offset_of(index, sha, 0) + 10] ^= 0x40
        part.write_bytes(bytes(data))
        victim = first
    elif what == "record":  # a record naming a chunk never written whole (as no import writes it)
        (record,) = [p for p in _kept(target) if p.name == f"{sha}.received.json"]
        missing_chunk = next(i for i, v in enumerate(chunk_volumes) if v != first)
        record.write_text(json.dumps([0, missing_chunk, 99, "x"]))
        victim = chunk_volumes[missing_chunk]
    else:
        whole = next(p for p in _kept(target) if len(p.name) == 64)
        data = bytearray(whole.read_bytes())
        data[0] ^= 0x01
        whole.write_bytes(bytes(data))
        victim = first
    for number, volume in enumerate(volumes, 1):
        if number != victim:
            report = import_bundle(volume, "hf", target)
    if victim != first or what != "record":
        # The damaged piece was not trusted: the volume that carries it is asked for again.
        assert report.exit_code == 3
        assert {v for m in report.missing for v in m.volumes} == {volumes[victim - 1].name}
        report = import_bundle(volumes[victim - 1], "hf", target)
    assert report.exit_code == 0, import_report_lines(report)
    assert _kept(target) == []


@pytest.mark.e2e
def test_a_killed_run_leaves_kept_state_usable_or_swept(volumes: list[Path], tmp_path: Path) -> None:
    """One volume per run, SIGKILLed at any step of any run: the tree is valid, and going on from the
    volume the killed run was importing (never an earlier one) completes every repo."""

    from tests.test_import_safety import Steps, check_hf_tree, import_killed_at

    index = read_index(volumes[0])
    reference = tmp_path / "reference"
    import_unit(group_bundles(volumes)[0], "hf", reference)
    counted = Steps()
    for volume in volumes:
        import_bundle(volume, "hf", tmp_path / "probe", checkpoint=counted)
    total = counted.count
    assert total > 20
    for step in range(1, total + 1, 3):
        target = tmp_path / f"t{step}"
        at = tmp_path / f"at{step}"

        def one_volume_per_run(steps: Steps, target: Path = target, at: Path = at) -> None:
            for number, volume in enumerate(volumes):
                at.write_text(str(number))
                import_bundle(volume, "hf", target, checkpoint=steps)

        assert import_killed_at(step, one_volume_per_run), step
        check_hf_tree(target, index)
        for volume in volumes[int(at.read_text()) :]:
            report = import_bundle(volume, "hf", target)
        assert report.exit_code == 0, f"killed at step {step} of {total}: {import_report_lines(report)}"
        assert tree_contents(target) == tree_contents(reference), f"killed at step {step} of {total}"
        assert _kept(target) == []


@pytest.mark.parametrize("where", [".mirror/kept", "kept-set", ".mirror"])
@pytest.mark.e2e
def test_a_link_planted_where_a_set_is_kept_is_refused(
    volumes: list[Path], tmp_path: Path, where: str
) -> None:
    from mirror.errors import MirrorError

    index = read_index(volumes[0])
    assert index.volume_set is not None
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    target = tmp_path / "target"
    repo_dir = target / "models--org--big"
    (repo_dir / "snapshots").mkdir(parents=True)
    link = {
        ".mirror/kept": repo_dir / ".mirror" / "kept",
        "kept-set": repo_dir / ".mirror" / "kept" / index.volume_set.id,
        ".mirror": repo_dir / ".mirror",
    }[where]
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    # `.mirror` itself is one of the paths every import checks (check_uses); the kept folders, the set's own.
    with pytest.raises(MirrorError, match=r"link or a file|is a symlink"):
        import_bundle(volumes[0], "hf", target)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
