"""Bundle v1: member order, dedup by hardlink, determinism, GNU tar, hostile and damaged input."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import random
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest
import zstandard

import mirror.bundle.frames as frames_module
import mirror.bundle.writer as writer_module
from mirror.bundle import (
    INDEX_NAME,
    SUMS_NAME,
    BundleIndex,
    describe_index,
    iter_members,
    read_index,
    select_all,
    select_requests,
    sums_text,
    verify_bundle,
    write_bundle,
)
from mirror.bundle.frames import FrameWalker
from mirror.bundle.writer import _tarinfo
from mirror.clock import SYSTEM
from mirror.errors import IntegrityError, MirrorError
from mirror.manifest import ModelSpec
from mirror.store import Store
from tests.conftest import TINY_MAIN, TINY_V1, SampleStore, put_repo


def tar_members(bundle: Path) -> list[tarfile.TarInfo]:
    with (
        open(bundle, "rb") as f,
        zstandard.ZstdDecompressor().stream_reader(f) as raw,
        tarfile.open(fileobj=raw, mode="r|") as tar,
    ):
        return list(tar)


def tar_bytes(bundle: Path) -> bytes:
    with open(bundle, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as raw:
        return raw.read()


def write_zst_tar(path: Path, data: bytes) -> Path:
    path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(data))
    return path


def hand_made_bundle(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return write_zst_tar(path, buf.getvalue())


def regular(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def index_json(bundle: Path) -> dict[str, Any]:
    return read_index(bundle).to_json()


@pytest.fixture
def bundle(sample_store: SampleStore, tmp_path: Path) -> Path:
    return write_bundle(
        sample_store.store, select_all(sample_store.store), tmp_path / "out" / "b.tar.zst"
    ).path


# -- layout of the archive -------------------------------------------------------------------------


def test_members_are_index_then_sums_then_sorted_files(bundle: Path) -> None:
    names = [m.name for m in tar_members(bundle)]
    assert names[:2] == [INDEX_NAME, SUMS_NAME]
    files = names[2:]
    assert files == sorted(files)
    assert files == [m.name for m in iter_members(read_index(bundle))]
    assert (
        "repos/huggingface/model/org/tiny/"
        + read_index(bundle).repos[-1].revisions[0][1]
        + "/sub/dir/weights.bin"
        in files
    )


def test_members_have_fixed_owner_mode_and_mtime(sample_store: SampleStore, tmp_path: Path) -> None:
    out = write_bundle(
        sample_store.store, select_all(sample_store.store), tmp_path / "b.tar.zst", created=1234567890
    )
    for info in tar_members(out.path):
        assert (info.uid, info.gid, info.uname, info.gname, info.mode, info.mtime) == (
            0,
            0,
            "",
            "",
            0o644,
            1234567890,
        )
        assert info.isreg() or info.islnk()


def test_repeated_content_is_stored_once_as_hardlinks(bundle: Path) -> None:
    members = tar_members(bundle)
    files = members[2:]
    index = read_index(bundle)
    by_name = {m.name: m for m in iter_members(index)}
    regular_members = [m for m in files if m.isreg()]
    # tokenizer.json is in gpt2 and in both org/tiny commits; the weights in both org/tiny commits.
    assert len(regular_members) == len({m.file.sha256 for m in by_name.values()})
    assert len(regular_members) < len(files)
    first_with: dict[str, str] = {}
    for m in files:
        sha = by_name[m.name].file.sha256
        if m.islnk():
            assert m.linkname == first_with[sha]
            assert m.size == 0
        else:
            assert sha not in first_with
            first_with[sha] = m.name
    links = [m for m in files if m.islnk()]
    assert any(m.name.startswith("repos/huggingface/model/org/tiny/") and "gpt2" in m.linkname for m in links)
    summary = describe_index(index)
    assert summary["unique_bytes"] == sum(m.size for m in regular_members)
    assert summary["total_bytes"] > summary["unique_bytes"]


def test_sha256sums_lists_every_file_member_in_order(bundle: Path) -> None:
    data = tar_bytes(bundle)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        sums = tar.extractfile(SUMS_NAME).read().decode()  # type: ignore[union-attr]
        names = [m.name for m in tar.getmembers()[2:]]
    lines = sums.splitlines()
    assert [line.split("  ", 1)[1] for line in lines] == names
    index = read_index(bundle)
    assert [line.split("  ", 1)[0] for line in lines] == [m.file.sha256 for m in iter_members(index)]


@pytest.mark.e2e
def test_gnu_tar_extracts_and_sha256sum_checks(
    bundle: Path, tmp_path: Path, sample_store: SampleStore
) -> None:
    dest = tmp_path / "extract"
    dest.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(bundle)], cwd=dest, check=True)
    result = subprocess.run(
        ["sha256sum", "-c", "--strict", SUMS_NAME], cwd=dest, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": OK") == len(list(iter_members(read_index(bundle))))
    tiny = sample_store.tiny
    v1 = dest / "repos" / "huggingface" / "model" / "org" / "tiny" / tiny.commits["v1.0"]
    assert {p.relative_to(v1).as_posix(): p.read_bytes() for p in v1.rglob("*") if p.is_file()} == TINY_V1
    index = json.loads((dest / INDEX_NAME).read_text())
    assert index["format"] == "mirror-bundle" and index["format_version"] == "1.2"


@pytest.mark.e2e
def test_side_file_matches_sha256sum(sample_store: SampleStore, tmp_path: Path) -> None:
    out = write_bundle(sample_store.store, select_all(sample_store.store), tmp_path / "b.tar.zst")
    side = tmp_path / "b.tar.zst.sha256"
    assert side.read_text() == f"{out.sha256}  b.tar.zst\n"
    assert out.sha256 == hashlib.sha256(out.path.read_bytes()).hexdigest()
    assert out.size == out.path.stat().st_size
    subprocess.run(["sha256sum", "-c", "--strict", side.name], cwd=tmp_path, check=True, capture_output=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "store" and p.name != "home") == [
        "b.tar.zst",
        "b.tar.zst.sha256",
    ]


# -- determinism -----------------------------------------------------------------------------------


def test_same_store_gives_byte_identical_bundles(sample_store: SampleStore, tmp_path: Path) -> None:
    st = sample_store.store
    done: list[int] = []
    a = write_bundle(st, select_all(st), tmp_path / "a.tar.zst", progress=done.append)
    # Progress counts every file member's bytes, the hardlinked ones too: the sum of the selected sizes.
    assert sum(done) == describe_index(read_index(a.path))["total_bytes"]
    b = write_bundle(st, select_all(st), tmp_path / "b.tar.zst")
    assert a.path.read_bytes() == b.path.read_bytes()
    # Creation time: the newest sync of what is packed, never the clock.
    assert read_index(a.path).created == "2026-11-21T08:30:00Z"
    c = write_bundle(st, select_all(st), tmp_path / "c.tar.zst", created=1700000000)
    d = write_bundle(st, select_all(st), tmp_path / "d.tar.zst", created=1700000000)
    assert c.path.read_bytes() == d.path.read_bytes() != a.path.read_bytes()
    assert read_index(c.path).created == "2023-11-14T22:13:20Z"
    only_data = [s for s in select_all(st) if s.key.repo_type == "dataset"]
    assert (
        read_index(write_bundle(st, only_data, tmp_path / "e.tar.zst").path).created == "2026-11-19T00:00:00Z"
    )


def test_zstd_threads_do_not_change_the_bytes(tmp_path: Path, isolated_home: Path) -> None:
    # Enough data for several zstd jobs, so worker threads really split it.
    rng = random.Random(7)
    words = [rng.randbytes(rng.randint(2, 8)).hex().encode() for _ in range(2000)]
    text = b" ".join(rng.choice(words) for _ in range(1_600_000))
    st = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(
        st, "org/big", {"main": {"model.safetensors": rng.randbytes(8 << 20) + text, "config.json": b"{}"}}
    )
    digests = {
        threads: write_bundle(st, select_all(st), tmp_path / f"t{threads}.tar.zst", threads=threads).sha256
        for threads in (1, 2, -1, 0, 16)  # 16: more than the workers' memory budget allows (MAX_WORKERS)
    }
    assert len(set(digests.values())) == 1, digests


# -- selection -------------------------------------------------------------------------------------


def test_select_all_orders_default_branch_first(sample_store: SampleStore) -> None:
    st = sample_store.store
    put_repo(st, "org/multi", {"v2": {"a": b"2"}, "dev": {"a": b"d"}, "main": {"a": b"m"}})
    sel = {s.key.repo_id: s for s in select_all(st)}
    assert [name for name, _ in sel["org/multi"].revisions] == ["main", "dev", "v2"]
    assert all(s.complete for s in sel["org/tiny"].snapshots)


def test_select_requests_filters_and_marks_incomplete(sample_store: SampleStore) -> None:
    st = sample_store.store
    tiny = sample_store.tiny
    specs = [
        ModelSpec(repo="org/tiny", source="huggingface", revisions=("main",), include=("*.json",)),
        ModelSpec(repo="org/tiny", source="huggingface", revisions=("v1.0", "main")),
        ModelSpec(repo="gpt2", source="huggingface", revisions=(sample_store.gpt2.commits["main"],)),
    ]
    sel = {s.key.repo_id: s for s in select_requests(st, [r for s in specs for r in s.requests()])}
    assert sel["org/tiny"].revisions == (("main", tiny.commits["main"]), ("v1.0", tiny.commits["v1.0"]))
    snaps = {s.commit: s for s in sel["org/tiny"].snapshots}
    # main is named by a filtered spec and an unfiltered one: merged, it keeps every file.
    assert snaps[tiny.commits["main"]].complete
    assert len(snaps[tiny.commits["main"]].files) == len(TINY_MAIN)
    # A 40-hex revision selects that commit directly.
    assert sel["gpt2"].revisions == ((sample_store.gpt2.commits["main"],) * 2,)

    filtered = select_requests(
        st,
        ModelSpec(
            repo="org/tiny", source="huggingface", revisions=("main",), exclude=("*.safetensors", "sub/*")
        ).requests(),
    )
    (snap,) = filtered[0].snapshots
    assert not snap.complete
    assert sorted(f.path for f in snap.files) == [
        "README.md",
        "config.json",
        "extra/notes.txt",
        "tokenizer.json",
    ]


def test_filtered_bundle_index_says_incomplete(sample_store: SampleStore, tmp_path: Path) -> None:
    spec = ModelSpec(repo="org/tiny", source="huggingface", revisions=("main",), include=("*.json",))
    out = write_bundle(
        sample_store.store, select_requests(sample_store.store, spec.requests()), tmp_path / "f.tar.zst"
    )
    (repo,) = read_index(out.path).repos
    (commit,) = repo.commits
    assert not commit.complete
    assert [f.path for f in commit.files] == ["config.json", "tokenizer.json"]
    verify_bundle(out.path)


def test_unsynced_revision_is_an_error(sample_store: SampleStore) -> None:
    spec = ModelSpec(repo="org/tiny", source="huggingface", revisions=("v9.9",))
    with pytest.raises(MirrorError, match=r"org/tiny.*v9\.9.*mirror sync"):
        select_requests(sample_store.store, spec.requests())
    never = ModelSpec(repo="org/never", source="huggingface", revisions=("main",))
    with pytest.raises(MirrorError, match=r"org/never.*main.*mirror sync"):
        select_requests(sample_store.store, never.requests())


def test_damaged_store_never_leaves_a_bundle(sample_store: SampleStore, tmp_path: Path) -> None:
    st = sample_store.store
    sha = hashlib.sha256(TINY_V1["model.safetensors"]).hexdigest()
    blob = st.local_blob(sha)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[100] ^= 1
    blob.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(IntegrityError, match=sha):
        write_bundle(st, select_all(st), out / "b.tar.zst")
    blob.unlink()
    with pytest.raises(MirrorError, match="lacks"):
        write_bundle(st, select_all(st), out / "b.tar.zst")
    assert not out.exists() or list(out.iterdir()) == []


def tarfile_stream(store: Store, index: BundleIndex, mtime: int) -> bytes:
    """The bundle's tar stream as the first writer made it, with tarfile: the reference bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        index_bytes = index.to_bytes()
        tar.addfile(_tarinfo(INDEX_NAME, mtime, len(index_bytes)), io.BytesIO(index_bytes))
        sums = sums_text(index)
        tar.addfile(_tarinfo(SUMS_NAME, mtime, len(sums)), io.BytesIO(sums))
        for m in iter_members(index):
            if m.link_to is not None:
                tar.addfile(_tarinfo(m.name, mtime, link_to=m.link_to))
            else:
                tar.addfile(
                    _tarinfo(m.name, mtime, m.size), io.BytesIO(store.local_blob(m.sha256).read_bytes())
                )
    return out.getvalue()


def zstd_frames(data: bytes) -> list[bytes]:
    """A zstd stream cut into its frames."""
    walker = FrameWalker()
    walker.feed(data)
    starts = [0, *(end for end, _ in walker.ends)]
    assert walker.complete and starts[-1] == len(data)
    return [data[a:b] for a, b in itertools.pairwise(starts)]


@pytest.mark.parametrize("frame", [4096, 1 << 20])
def test_writer_gives_the_tar_stream_tarfile_gave(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch, frame: int
) -> None:
    # Blobs of several frames, odd sizes, many small files (gathered into frames), a long name (pax header)
    # and repeated content (hardlinks): byte for byte the tar stream the tarfile writer made, in frames.
    monkeypatch.setattr(frames_module, "FRAME", frame)
    monkeypatch.setattr(writer_module, "_BLOCK", frame)
    monkeypatch.setattr(writer_module, "_STAGE", frame)  # the output staged and written in many pieces
    rng = random.Random(3)
    files = {f"small/{i:03d}.txt": rng.randbytes(rng.randint(0, 700)) for i in range(60)}
    files |= {"model.safetensors": rng.randbytes(50_001), "x" * 120 + "/long.bin": rng.randbytes(9_999)}
    files["copy.safetensors"] = files["model.safetensors"]
    st = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(st, "org/mixed", {"main": files})
    summary = write_bundle(st, select_all(st), tmp_path / "b.tar.zst", created=1700000000)
    compressed = summary.path.read_bytes()
    index = read_index(summary.path)
    frames = zstd_frames(compressed)
    tar = b"".join(zstandard.ZstdDecompressor().decompress(f) for f in frames)
    assert tar == tarfile_stream(st, index, 1700000000)
    assert len(frames) > 1 if frame == 4096 else len(frames) == 1
    assert all(len(zstandard.ZstdDecompressor().decompress(f)) <= frame for f in frames)
    assert summary.sha256 == hashlib.sha256(compressed).hexdigest()


def test_a_blob_that_shrank_fails_the_export(
    sample_store: SampleStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = sample_store.store
    monkeypatch.setattr(Store, "has_blob", lambda *_: True)  # it shrinks after the export checked the store
    sha = hashlib.sha256(TINY_V1["model.safetensors"]).hexdigest()
    blob = st.local_blob(sha)
    blob.chmod(0o644)
    blob.write_bytes(TINY_V1["model.safetensors"][:-10])
    with pytest.raises(IntegrityError, match="shrank"):
        write_bundle(st, select_all(st), tmp_path / "out" / "b.tar.zst")
    assert list((tmp_path / "out").iterdir()) == []
    assert [t.name for t in threading.enumerate() if t.name.startswith("mirror-bundle")] == []


def test_a_failing_output_fails_the_export_and_stops_every_thread(
    sample_store: SampleStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Frames of a few bytes, so the reader is mid-blob and workers are busy when the output fails.
    monkeypatch.setattr(frames_module, "FRAME", 64)
    monkeypatch.setattr(writer_module, "_BLOCK", 64)
    real = writer_module._HashingWriter.write

    def full_disk(self: Any, data: bytes) -> int:
        if self.size > 4096:  # past the index and SHA256SUMS: a file member is being packed
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(writer_module._HashingWriter, "write", full_disk)
    st = sample_store.store
    with pytest.raises(MirrorError, match="No space left"):
        write_bundle(st, select_all(st), tmp_path / "out" / "b.tar.zst")
    assert list((tmp_path / "out").iterdir()) == []
    assert [t.name for t in threading.enumerate() if t.name.startswith("mirror-bundle")] == []


# -- verification ----------------------------------------------------------------------------------


def test_verify_accepts_a_good_bundle(bundle: Path) -> None:
    seen: list[int] = []
    index = verify_bundle(bundle, progress=seen.append).index
    assert [r.repo_id for r in index.repos] == ["org/data", "gpt2", "org/tiny"]  # by (source, type, id)
    assert sum(seen) == bundle.stat().st_size


@pytest.mark.parametrize("with_side_file", [True, False])
def test_verify_catches_a_flipped_byte(bundle: Path, with_side_file: bool) -> None:
    if not with_side_file:
        bundle.with_name(bundle.name + ".sha256").unlink()
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    bundle.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        verify_bundle(bundle)


@pytest.mark.parametrize("cut", [0.5, 0.9, -1, -4, -20])
def test_verify_catches_truncation(bundle: Path, cut: float) -> None:
    bundle.with_name(bundle.name + ".sha256").unlink()  # the stream itself must tell
    data = bundle.read_bytes()
    keep = int(len(data) * cut) if cut > 0 else len(data) + int(cut)
    bundle.write_bytes(data[:keep])
    with pytest.raises(IntegrityError):
        verify_bundle(bundle)


def test_verify_catches_a_stale_side_file(bundle: Path) -> None:
    bundle.with_name(bundle.name + ".sha256").write_text("0" * 64 + "  b.tar.zst\n")
    with pytest.raises(IntegrityError, match="changed in transfer"):
        verify_bundle(bundle)


def test_verify_names_the_damaged_member(bundle: Path, tmp_path: Path) -> None:
    data = bytearray(tar_bytes(bundle))
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        victim = next(m for m in tar.getmembers() if m.name.endswith("model.safetensors") and m.isreg())
    data[victim.offset_data + 10] ^= 0xFF
    damaged = write_zst_tar(tmp_path / "damaged.tar.zst", bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.safetensors.*sha256"):
        verify_bundle(damaged)


# -- hostile input ---------------------------------------------------------------------------------


def good_index(bundle: Path) -> dict[str, Any]:
    return index_json(bundle)


def test_read_index_rejects_dotdot_paths(bundle: Path, tmp_path: Path) -> None:
    index = good_index(bundle)
    index["repos"][0]["commits"][0]["files"][0]["path"] = "../../etc/passwd"
    evil = hand_made_bundle(tmp_path / "evil.tar.zst", [(regular(INDEX_NAME), json.dumps(index).encode())])
    with pytest.raises(IntegrityError, match="unsafe"):
        read_index(evil)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda ix: ix["repos"][0].update(repo_id="../escape"),
        lambda ix: ix["repos"][0].update(source="../x"),
        lambda ix: ix["repos"][0]["revisions"][0].update(name="../../main"),
        lambda ix: ix["repos"][0]["revisions"][0].update(commit="abc"),
        lambda ix: ix["repos"][0]["commits"][0]["files"][0].update(sha256="nothex"),
        lambda ix: ix["repos"][0]["commits"][0]["files"][0].update(oid="../../blobs/x"),
        lambda ix: ix["repos"][0]["commits"][0]["files"][0].update(path="/etc/passwd"),
        lambda ix: ix["repos"][0]["commits"][0]["files"][0].update(path="a\nb"),
        lambda ix: ix["repos"][0]["commits"][0]["files"][0].update(path="a\ud800b"),
        lambda ix: ix["repos"][0]["commits"][0]["files"].append(ix["repos"][0]["commits"][0]["files"][0]),
        lambda ix: ix["repos"][0].update(repo_type="weird"),
        # org/data (first by type) holds data/train.csv: a file "data" cannot also exist.
        lambda ix: ix["repos"][0]["commits"][0]["files"].append(
            {**ix["repos"][0]["commits"][0]["files"][0], "path": "data"}
        ),
        lambda ix: ix["repos"].append(ix["repos"][0]),
        lambda ix: ix["repos"][0]["commits"][0]["files"][0].update(size=-1),
        lambda ix: ix.update(format_version=2),
        lambda ix: ix.update(repos="nope"),
    ],
)
def test_read_index_rejects_anything_odd(bundle: Path, tmp_path: Path, mutate: Any) -> None:
    index = good_index(bundle)
    mutate(index)
    evil = hand_made_bundle(tmp_path / "evil.tar.zst", [(regular(INDEX_NAME), json.dumps(index).encode())])
    with pytest.raises(IntegrityError):
        read_index(evil)
    with pytest.raises(IntegrityError):
        BundleIndex.from_json(index)


def test_read_index_rejects_a_tar_without_index(tmp_path: Path) -> None:
    evil = hand_made_bundle(tmp_path / "evil.tar.zst", [(regular("README"), b"hi")])
    with pytest.raises(IntegrityError, match="not a mirror bundle"):
        read_index(evil)
    (tmp_path / "plain.tar.zst").write_bytes(b"not zstd at all")
    with pytest.raises(IntegrityError):
        read_index(tmp_path / "plain.tar.zst")


def rebuilt(bundle: Path, path: Path, edit: Any) -> Path:
    """The bundle's tar members passed through `edit(list of (TarInfo, bytes))`, recompressed."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(bundle))) as tar:
        members = []
        for m in tar.getmembers():
            data = tar.extractfile(m) if m.isreg() else None
            members.append((m, data.read() if data is not None else b""))
    return hand_made_bundle(path, edit(members))


def test_verify_rejects_extra_missing_duplicate_and_special_members(bundle: Path, tmp_path: Path) -> None:
    def extra(ms: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
        return [*ms, (regular(ms[-1][0].name.rsplit("/", 1)[0] + "/evil.py"), b"import os")]

    def missing(ms: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
        return ms[:-1]

    def duplicate(ms: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
        return [*ms, ms[2]]

    def symlink(ms: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
        info, _ = ms[2]
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        return ms

    def forward_link(ms: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
        info, _ = ms[2]
        info.type, info.linkname = tarfile.LNKTYPE, ms[-1][0].name
        return ms

    def sums_first(ms: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
        return [ms[1], ms[0], *ms[2:]]

    cases = {"extra": extra, "missing": missing, "duplicate": duplicate, "symlink": symlink}
    cases |= {"forward_link": forward_link, "sums_first": sums_first}
    for name, edit in cases.items():
        evil = rebuilt(bundle, tmp_path / f"{name}.tar.zst", edit)
        with pytest.raises(IntegrityError):
            verify_bundle(evil)


def test_describe_index(bundle: Path, sample_store: SampleStore) -> None:
    data = describe_index(read_index(bundle))
    json.dumps(data)
    repos = {r["repo_id"]: r for r in data["repos"]}
    tiny = repos["org/tiny"]
    assert [r["name"] for r in tiny["revisions"]] == ["main", "v1.0"]
    assert tiny["files"] == len(TINY_MAIN) + len(TINY_V1)
    assert tiny["bytes"] == sum(map(len, TINY_MAIN.values())) + sum(map(len, TINY_V1.values()))
    assert repos["org/data"]["repo_type"] == "dataset"
    assert data["files"] == sum(r["files"] for r in data["repos"])
    assert data["total_bytes"] == sum(r["bytes"] for r in data["repos"])
