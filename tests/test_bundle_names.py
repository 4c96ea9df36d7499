"""Bundle member names (format 1.1: the repo type in each name), bundles of format 1 still read, and the
bytes a fixed store gives."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import zstandard

from mirror.bundle import (
    INDEX_NAME,
    SUMS_NAME,
    BundleIndex,
    build_index,
    describe_index,
    iter_members,
    read_index,
    select_all,
    verify_bundle,
    write_archive,
    write_bundle,
)
from mirror.clock import SYSTEM
from mirror.errors import IntegrityError
from mirror.importing import import_bundle
from mirror.repo import RepoKey
from mirror.snapshot import Snapshot
from mirror.store import Store
from tests.conftest import SampleStore, fake_commit, file_record, put_repo
from tests.modelfiles import safetensors_sized

MODEL_FILES = {
    "README.md": b"# a model\n",
    "config.json": b'{"shared": true}\n',
    "model.safetensors": safetensors_sized(b"w" * 999),
}
DATASET_FILES = {
    "README.md": b"# a dataset\n",
    "config.json": b'{"shared": true}\n',
    "data/train.csv": b"a\n1\n",
}


def put_at_commit(store: Store, repo_type: str, files: dict[str, bytes], commit: str) -> None:
    """huggingface `org/x` of `repo_type` at `commit`, whatever its type (as hubs allow: a commit id is the
    repo's own)."""
    records = []
    for path, data in files.items():
        record = file_record(path, data, path.endswith(".safetensors"))
        records.append(record)
        if not store.has_blob(record.sha256):
            tmp = store.temp_path(f"put-{record.sha256}")
            tmp.write_bytes(data)
            store.add_blob(tmp, record.sha256)
    when = "2026-11-20T10:00:00Z"
    store.write_snapshot(
        Snapshot("huggingface", repo_type, "org/x", commit, tuple(records), complete=True, synced_at=when)
    )
    store.set_refs(RepoKey("huggingface", repo_type, "org/x"), {"main": commit}, when)


def tar_of(bundle: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with open(bundle, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as raw:
        data = raw.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar.getmembers()]  # type: ignore[union-attr]


def test_a_model_and_a_dataset_with_one_id_and_commit_travel_apart(
    tmp_path: Path, isolated_home: Path
) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    commit = fake_commit("one commit for both")
    put_at_commit(store, "model", MODEL_FILES, commit)
    put_at_commit(store, "dataset", DATASET_FILES, commit)
    bundle = write_bundle(store, select_all(store), tmp_path / "b.tar.zst").path

    members = tar_of(bundle)
    names = [info.name for info, _ in members]
    assert names[:2] == [INDEX_NAME, SUMS_NAME]
    assert names[2:] == [
        *(f"repos/huggingface/dataset/org/x/{commit}/{p}" for p in sorted(DATASET_FILES)),
        *(f"repos/huggingface/model/org/x/{commit}/{p}" for p in sorted(MODEL_FILES)),
    ]
    data = {info.name: content for info, content in members}
    assert data[f"repos/huggingface/model/org/x/{commit}/README.md"] == MODEL_FILES["README.md"]
    assert data[f"repos/huggingface/dataset/org/x/{commit}/README.md"] == DATASET_FILES["README.md"]
    # The content both share is packed once: the model's config is a hardlink to the dataset's.
    link = next(info for info, _ in members if info.name.endswith("model/org/x/" + commit + "/config.json"))
    assert link.islnk() and link.linkname == f"repos/huggingface/dataset/org/x/{commit}/config.json"
    assert json.loads(data[INDEX_NAME])["format_version"] == "1.2"
    assert verify_bundle(bundle).index.format_version == "1.2"

    cache = tmp_path / "hub"
    import_bundle(bundle, "hf", cache)
    for folder, files in (("models--org--x", MODEL_FILES), ("datasets--org--x", DATASET_FILES)):
        snapshot = cache / folder / "snapshots" / commit
        assert {
            p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()
        } == files
        assert (cache / folder / "refs" / "main").read_text() == commit


def old_index(store: Store, version: int | str, created: int) -> dict[str, Any]:
    """The index of the whole store as a mirror of format `version` (before 1.2) wrote it: no commit carries
    a scan."""
    index = build_index(store, select_all(store), created=created).to_json()
    index["format_version"] = version
    for repo in index["repos"]:
        for commit in repo["commits"]:
            del commit["scan"]
    return index


def write_format_1(store: Store, out: Path, created: int) -> list[str]:
    """What mirror wrote before member names carried the repo type: format_version 1, members named
    `repos/<source>/<repo_id>/<commit>/<path>`, sorted, repeats as hardlinks; the member names, in order.
    Built here by hand, so that it does not depend on the code under test."""
    index = old_index(store, 1, created)
    index_bytes = (json.dumps(index, indent=1) + "\n").encode()
    files = sorted(
        (f"repos/{r['source']}/{r['repo_id']}/{c['commit']}/{f['path']}", f["sha256"])
        for r in index["repos"]
        for c in r["commits"]
        for f in c["files"]
    )
    sums = "".join(f"{sha}  {name}\n" for name, sha in files).encode()
    buf = io.BytesIO()
    first: dict[str, str] = {}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, sha, data in [(INDEX_NAME, "", index_bytes), (SUMS_NAME, "", sums)] + [
            (name, sha, b"") for name, sha in files
        ]:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = created, 0o644
            if sha and sha in first:
                info.type, info.linkname = tarfile.LNKTYPE, first[sha]
                tar.addfile(info)
                continue
            if sha:
                first[sha] = name
                data = store.local_blob(sha).read_bytes()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(buf.getvalue()))
    return [name for name, _ in files]


def test_a_bundle_of_format_1_still_reads_verifies_and_imports(
    sample_store: SampleStore, tmp_path: Path
) -> None:
    old = tmp_path / "old.tar.zst"
    names = write_format_1(sample_store.store, old, created=1700000000)
    assert "repos/huggingface/org/tiny/" + sample_store.tiny.commits["v1.0"] + "/config.json" in names

    index = read_index(old)
    assert index.format_version == 1
    assert [m.name for m in iter_members(index)] == names  # read with the names it was written with
    assert describe_index(index)["format_version"] == 1  # described as it was written
    assert BundleIndex.from_json(index.to_json()) == index
    assert verify_bundle(old).index == index

    cache = tmp_path / "hub"
    import_bundle(old, "hf", cache)
    tiny = sample_store.tiny
    for commit, files in tiny.files.items():
        snapshot = cache / "models--org--tiny" / "snapshots" / commit
        assert {
            p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()
        } == files
    data_snapshot = cache / "datasets--org--data" / "snapshots" / sample_store.data.commits["main"]
    assert (data_snapshot / "data" / "train.csv").read_bytes() == b"a,b\n1,2\n"


@pytest.mark.parametrize("version", [2, "1.4", "2.0"])
def test_a_newer_format_asks_for_a_newer_mirror(sample_store: SampleStore, version: object) -> None:
    data = build_index(sample_store.store, select_all(sample_store.store)).to_json()
    data["format_version"] = version
    with pytest.raises(
        IntegrityError, match=r"not supported \(this mirror reads 1, 1\.1, 1\.2 and 1\.3\); upgrade mirror"
    ):
        BundleIndex.from_json(data)


@pytest.mark.parametrize("version", [True, 1.0, "1", "1.0", 0, None])
def test_a_format_version_no_mirror_wrote_is_refused(sample_store: SampleStore, version: object) -> None:
    data = build_index(sample_store.store, select_all(sample_store.store)).to_json()
    data["format_version"] = version
    with pytest.raises(IntegrityError, match="invalid format_version"):
        BundleIndex.from_json(data)


# The bundle of GOLDEN_STORE, created at SOURCE_DATE_EPOCH=1700000000 by tool version "golden": the sha256
# of its tar stream (mirror's own bytes) and of the file (also zstd's: checked with the libzstd it was made
# with). A change here changes every bundle: it must be a documented format change (the last: format 1.2, each
# commit carries its scan).
GOLDEN_TAR_SHA256 = "6c9072368c4c8f8e2bfd275783f0862ae90537ad00bf72708d0d1e246d7392a5"
GOLDEN_SHA256 = "00a219462d9574848a8ea12ae74638376fc56ea909bd174f2a89539860cafe07"
GOLDEN_ZSTD = (1, 5, 7)


def golden_store(root: Path) -> Store:
    store = Store.at(root, clock=SYSTEM)
    put_repo(
        store,
        "org/tiny",
        {
            "main": {
                "config.json": b'{"a": 1}\n',
                "model.safetensors": bytes(range(256)) * 40,  # exported only: never imported
                "x" * 120: b"long",
            },
            "v1": {"config.json": b'{"a": 0}\n', "model.safetensors": bytes(range(256)) * 40},
        },
    )
    put_repo(
        store,
        "org/tiny",
        {"main": {"data.csv": b"a\n"}},
        repo_type="dataset",
        synced_at="2026-11-19T00:00:00Z",
    )
    put_repo(store, "iic/tiny", {"master": {"config.json": b'{"a": 1}\n'}}, source="modelscope")
    return store


def test_a_fixed_store_gives_the_golden_bundle(tmp_path: Path, isolated_home: Path) -> None:
    store = golden_store(tmp_path / "store")
    index = replace(build_index(store, select_all(store), created=1700000000), tool_version="golden")
    summary = write_archive(store, index, tmp_path / "golden.tar.zst", threads=2)
    with open(summary.path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as raw:
        tar_sha256 = hashlib.sha256(raw.read()).hexdigest()
    assert tar_sha256 == GOLDEN_TAR_SHA256
    if zstandard.ZSTD_VERSION == GOLDEN_ZSTD:
        assert summary.sha256 == GOLDEN_SHA256
