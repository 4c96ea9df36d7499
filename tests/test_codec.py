"""`export --codec bytegroup`: 16-bit safetensors tensors grouped by byte (bundle format 1.3), every byte
restored and checked against its sha256 on import; the bundle still a tar.zst that `tar --zstd` reads."""

from __future__ import annotations

import io
import json
import random
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from mirror.bundle import INDEX_NAME, SUMS_NAME, BundleIndex, bytegroup, read_index, verify_bundle
from mirror.bundle.index import README_NAME
from mirror.clock import SYSTEM
from mirror.errors import IntegrityError
from mirror.store import Store
from mirror.validate.safetensors import DTYPE_BITS
from tests.conftest import put_repo
from tests.modelfiles import safetensors_of
from tests.roundtrip import fresh_env, mirror_command
from tests.test_bundle import tar_members
from tests.test_exits import run
from tests.test_resources import GIB, peak_rss_mb, put_big_model

REPO = "org/coded"


def every_dtype(rng: random.Random) -> bytes:
    """A safetensors file with a tensor of every dtype the header can name, in a shuffled order: odd element
    counts, empty tensors, a 16-bit tensor crossing a codec block at an odd file offset, an unpadded
    header (the data starts at an odd offset) and an odd total size."""
    tensors = []
    for dtype, bits in DTYPE_BITS.items():
        for n in (0, 1, 3, rng.randrange(1, 3000) | 1):
            size = n * bits if bits < 8 else n * bits // 8  # sub-byte dtypes: 8n elements fill whole bytes
            tensors.append((f"{dtype}.{n}", dtype, rng.randbytes(size)))
    tensors.append(("big", "BF16", rng.randbytes(bytegroup.BLOCK + 4002)))
    tensors.append(("half", "F16", rng.randbytes(2 * 7777)))
    rng.shuffle(tensors)
    tensors.append(("tail", "U8", rng.randbytes(7)))
    data = safetensors_of(tensors, metadata={"format": "pt"})
    if len(data) % 2 == 0:
        data = safetensors_of([*tensors, ("odd", "U8", b"x")], metadata={"format": "pt"})
    assert int.from_bytes(data[:8], "little") % 2 == 1 or len(data) % 2 == 1
    return data


def coded_store(root: Path, files: dict[str, bytes]) -> Store:
    store = Store.at(root / "store", clock=SYSTEM)
    put_repo(store, REPO, {"main": {"config.json": b'{"model_type": "bert"}\n', **files}})
    return store


def export(store: Store, out: Path, *extra: str) -> Path:
    result = run("export", "--store", store.local_root, "-o", out, *extra)
    assert result.exit_code == 0, result.stderr
    return out


def import_dir(bundle: Path, target: Path) -> Any:
    return run("import", bundle, "--layout", "dir", "--target", target)


def test_every_dtype_round_trips_byte_for_byte(tmp_path: Path, isolated_home: Path) -> None:
    rng = random.Random(15)
    files = {"model.safetensors": every_dtype(rng), "sub/b.safetensors": every_dtype(rng)}
    store = coded_store(tmp_path, files)
    bundle = export(store, tmp_path / "b.tar.zst", "--codec", "bytegroup")
    index = read_index(bundle)
    assert index.format_version == "1.3"
    assert len(index.codecs) == 2
    imported = import_dir(bundle, tmp_path / "out")
    assert imported.exit_code == 0, imported.stderr
    for path, data in files.items():
        assert (tmp_path / "out" / REPO / path).read_bytes() == data
    # the members hold other bytes than the files: the codec did group them
    assert grouped_member(bundle, "model.safetensors") != files["model.safetensors"]


def grouped_member(bundle: Path, path: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(bundle))) as tar:
        name = next(n for n in tar.getnames() if n.endswith("/" + path))
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


def tar_bytes(bundle: Path) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(bundle.read_bytes()).read()


def test_group_and_restore_are_inverse_for_any_ranges_and_cuts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bytegroup, "BLOCK", 64)
    rng = random.Random(4)
    for _ in range(500):
        size = rng.randrange(0, 500)
        data = rng.randbytes(size)
        spans = [(a, a + rng.randrange(0, 90)) for a in sorted(rng.randrange(0, size + 1) for _ in range(4))]
        ranges = bytegroup.merged(spans, size)  # overlapping, odd, past the end: made usable
        assert bytegroup.ranges_problem(ranges, size) is None
        grouped = bytearray()
        for start in range(0, size, 64):
            out = bytearray(64)
            length = min(64, size - start)
            bytegroup.group(data[start : start + length], out, ranges, start, length)
            grouped += out[:length]
        assert sorted(grouped) == sorted(data)
        cuts = sorted(rng.sample(range(1, size), min(5, size - 1))) if size > 1 else []
        views = [memoryview(bytes(grouped[a:b])) for a, b in zip([0, *cuts], [*cuts, size], strict=True)]
        codec = bytegroup.Codec(bytegroup.NAME, ranges)
        assert b"".join(bytes(v.data) for v in bytegroup.restored(views, codec)) == data


@pytest.mark.e2e  # GNU tar and sha256sum
def test_the_bundle_is_smaller_a_tar_zst_with_a_readme_and_inspect_names_the_codec(
    tmp_path: Path, isolated_home: Path
) -> None:
    import numpy as np

    weights = np.random.default_rng(1).standard_normal(3 << 20, dtype=np.float32).view(np.uint16)[1::2]
    data = safetensors_of([("w", "BF16", weights.tobytes())])
    store = coded_store(tmp_path, {"model.safetensors": data})
    plain = export(store, tmp_path / "plain.tar.zst")
    coded = export(store, tmp_path / "coded.tar.zst", "--codec", "bytegroup")
    assert coded.stat().st_size < 0.70 * len(data) < plain.stat().st_size
    listed = subprocess.run(["tar", "--zstd", "-tf", coded], capture_output=True, text=True, check=True)
    names = listed.stdout.split()
    assert names[:3] == [INDEX_NAME, SUMS_NAME, README_NAME]
    member = next(n for n in names if n.endswith("/model.safetensors"))
    # GNU tar extracts it; sha256sum -c checks the plain members, README.txt names the one needing import
    out = tmp_path / "tar"
    out.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", coded, "-C", out], check=True)
    subprocess.run(["sha256sum", "--quiet", "-c", SUMS_NAME], cwd=out, check=True)
    assert member not in (out / SUMS_NAME).read_text()
    readme = (out / README_NAME).read_text()
    assert f"bytegroup  {member}" in readme and "mirror import" in readme
    text = run("inspect", coded)
    assert text.exit_code == 0, text.stderr
    assert f"codec bytegroup  {member}" in text.stdout
    described = json.loads(run("inspect", coded, "--json").stdout)
    assert described["format_version"] == "1.3"
    assert described["codecs"] == [{"member": member, "codec": "bytegroup", "bytes": len(data)}]
    # verify and scan restore the members before hashing and scanning them
    assert run("verify", coded).exit_code == 0
    scanned = run("scan", coded, "--json")
    assert scanned.exit_code == 0, scanned.stderr


def test_a_plain_export_is_unchanged_and_nothing_16_bit_leaves_the_bundle_plain(
    tmp_path: Path, isolated_home: Path
) -> None:
    store = coded_store(tmp_path, {"model.safetensors": safetensors_of([("w", "F32", bytes(4000))])})
    plain = export(store, tmp_path / "plain.tar.zst")
    coded = export(store, tmp_path / "coded.tar.zst", "--codec", "bytegroup")
    assert plain.read_bytes() == coded.read_bytes()
    assert read_index(plain).format_version == "1.2"
    assert README_NAME not in [m.name for m in tar_members(plain)]
    assert "codecs" not in json.loads(run("inspect", plain, "--json").stdout)


def test_a_header_lying_about_dtypes_only_makes_grouping_pointless(
    tmp_path: Path, isolated_home: Path
) -> None:
    rng = random.Random(3)
    f32 = rng.randbytes(4 * 3001)
    lying = safetensors_of([("w", "BF16", f32), ("b", "F16", rng.randbytes(5 * 2))])  # F32 bytes called BF16
    store = coded_store(tmp_path, {"model.safetensors": lying})
    bundle = export(store, tmp_path / "b.tar.zst", "--codec", "bytegroup")
    assert read_index(bundle).codecs
    assert import_dir(bundle, tmp_path / "out").exit_code == 0
    assert (tmp_path / "out" / REPO / "model.safetensors").read_bytes() == lying


def rewritten(bundle: Path, out: Path, change: Any) -> Path:
    """The bundle with its members changed by `change(name, data) -> data`, written again (one frame)."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(bundle))) as tar, io.BytesIO() as buf:
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as new:
            for info in tar.getmembers():
                source = tar.extractfile(info) if info.isfile() else None
                data = change(info.name, source.read()) if source is not None else b""
                info.size = len(data)
                new.addfile(info, io.BytesIO(data) if info.isfile() else None)
        out.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(buf.getvalue()))
    return out


@pytest.mark.parametrize("lie", ["index ranges", "header in the member"])
def test_a_lie_about_the_ranges_is_caught_by_the_sha256_and_refused(
    lie: str, tmp_path: Path, isolated_home: Path
) -> None:
    rng = random.Random(5)
    data = safetensors_of([("a", "BF16", rng.randbytes(2 * 5000)), ("b", "F32", rng.randbytes(4 * 100))])
    store = coded_store(tmp_path, {"model.safetensors": data})
    bundle = export(store, tmp_path / "b.tar.zst", "--codec", "bytegroup")

    def change(name: str, content: bytes) -> bytes:
        if lie == "index ranges" and name == INDEX_NAME:
            index = json.loads(content)
            for commit in index["repos"][0]["commits"]:
                for f in commit["files"]:
                    if "codec" in f:
                        f["codec"]["ranges"] = [[b + 2, e] for b, e in f["codec"]["ranges"]]
            return (json.dumps(index, indent=1) + "\n").encode()
        if lie == "header in the member" and name.endswith("/model.safetensors"):
            return content.replace(b'"BF16"', b'"F16" ').replace(b"[0, 10000]", b"[2, 10000]")
        return content

    crafted = rewritten(bundle, tmp_path / "crafted.tar.zst", change)
    with pytest.raises(IntegrityError, match="does not match the index"):
        verify_bundle(crafted)
    target = tmp_path / "out"
    result = import_dir(crafted, target)
    assert result.exit_code == 4, result.stderr
    assert "model.safetensors" in result.stderr and "sha256" in result.stderr
    assert not (target / REPO).exists()


def test_the_index_is_checked_for_its_codecs(tmp_path: Path, isolated_home: Path) -> None:
    rng = random.Random(6)
    store = coded_store(tmp_path, {"model.safetensors": safetensors_of([("a", "BF16", rng.randbytes(64))])})
    good = read_index(export(store, tmp_path / "b.tar.zst", "--codec", "bytegroup")).to_json()
    entry = next(f for f in good["repos"][0]["commits"][0]["files"] if "codec" in f)
    size = entry["size"]
    for codec, words in [
        ({"name": "zipnn", "ranges": []}, "does not know"),
        ({"name": "bytegroup", "ranges": [[10, 13]]}, "16-bit"),
        ({"name": "bytegroup", "ranges": [[10, size + 2]]}, "outside"),
        ({"name": "bytegroup", "ranges": [[20, 30], [10, 14]]}, "out of order"),
        ({"name": "bytegroup", "ranges": [[1.5, 3]]}, "two integers"),
    ]:
        entry["codec"] = codec
        with pytest.raises(IntegrityError, match=words):
            BundleIndex.from_json(good)
    with pytest.raises(IntegrityError, match=r"format 1\.2 cannot"):
        BundleIndex.from_json({**good, "format_version": "1.2"})


def test_codec_with_split_is_a_usage_error(tmp_path: Path, isolated_home: Path) -> None:
    store = coded_store(tmp_path, {"model.safetensors": safetensors_of([("a", "BF16", bytes(64))])})
    result = run(
        "export",
        "--store",
        store.local_root,
        "-o",
        tmp_path / "b.tar.zst",
        "--codec",
        "bytegroup",
        "--split",
        "1M",
    )
    assert result.exit_code == 2
    assert "--split" in result.stderr and not (tmp_path / "b.tar.zst").exists()


def test_a_delta_packs_what_it_carries_with_the_codec(tmp_path: Path, isolated_home: Path) -> None:
    rng = random.Random(8)
    first = {"model.safetensors": safetensors_of([("a", "BF16", rng.randbytes(2 * 999))])}
    store = coded_store(tmp_path, first)
    full = export(store, tmp_path / "full.tar.zst", "--codec", "bytegroup")
    target = tmp_path / "out"
    assert import_dir(full, target).exit_code == 0
    second = {**first, "extra.safetensors": safetensors_of([("b", "F16", rng.randbytes(2 * 501))])}
    put_repo(store, REPO, {"main": {"config.json": b'{"model_type": "bert"}\n', **second}})
    delta = export(store, tmp_path / "delta.tar.zst", "--codec", "bytegroup", "--since", full)
    index = read_index(delta)
    assert len(index.codecs) == 1 and index.left_in_target()
    assert import_dir(delta, target).exit_code == 0
    for path, data in second.items():
        assert (target / REPO / path).read_bytes() == data


@pytest.mark.e2e
def test_memory_stays_flat_grouping_and_restoring_a_large_file(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_big_model(store, GIB, dtype="BF16")
    env = fresh_env(tmp_path / "home")
    bundle = tmp_path / "big.tar.zst"
    export_mb = peak_rss_mb(
        [
            *mirror_command(),
            "export",
            "--store",
            str(store.local_root),
            "-o",
            str(bundle),
            "--codec",
            "bytegroup",
        ],
        env,
    )
    assert read_index(bundle).codecs
    target = tmp_path / "out"
    import_mb = peak_rss_mb(
        [*mirror_command(), "import", str(bundle), "--layout", "dir", "--target", str(target)], env
    )
    assert (target / "org" / "big" / "model.safetensors").stat().st_size == GIB
    print(f"peak RSS with bytegroup: export {export_mb:.0f} MB, import {import_mb:.0f} MB")
    assert export_mb < 200, export_mb
    assert import_mb < 200, import_mb


def test_a_readme_that_disagrees_with_the_index_is_refused(tmp_path: Path, isolated_home: Path) -> None:
    store = coded_store(tmp_path, {"model.safetensors": safetensors_of([("a", "BF16", bytes(range(64)))])})
    bundle = export(store, tmp_path / "b.tar.zst", "--codec", "bytegroup")

    def change(name: str, content: bytes) -> bytes:
        return content.replace(b"mirror import", b"mirror IMPORT") if name == README_NAME else content

    crafted = rewritten(bundle, tmp_path / "crafted.tar.zst", change)
    with pytest.raises(IntegrityError, match=r"README\.txt disagrees with the bundle index"):
        verify_bundle(crafted)
