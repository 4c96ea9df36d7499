"""`mirror scan` and its engine (`mirror.validate.scan`, `mirror.scanning`): the same findings and verdicts
from a store (a folder or a bucket), a bundle exported from it and the tree an import wrote; exit 0 when
the policy denies nothing, 4 when it denies anything; a damaged bundle is exit 4."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import threading
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from mirror import scanning
from mirror.bundle import select_all, write_bundle
from mirror.clock import SYSTEM
from mirror.export import far_side_holds
from mirror.s3 import parse_s3_url
from mirror.scanning import scan_bundles
from mirror.storage.s3 import S3Storage
from mirror.store import Store
from mirror.validate.findings import Finding
from mirror.validate.policy import DEFAULT_POLICY
from mirror.validate.scan import MemberPipe, ScanFile, checks_for, scan_file, scan_revision
from tests.conftest import put_repo
from tests.s3server import S3Bucket
from tests.test_exits import run
from tests.test_validate_headers import safetensors_file, tensor
from tests.test_validate_pickles import SYSTEM as IMPORTS_SYSTEM
from tests.test_validate_pickles import Evil

GOOD = safetensors_file({"w": tensor("F32", [2], 0, 8)}, bytes(8))
BROKEN = safetensors_file({"w": tensor("F32", [4], 0, 16)}, bytes(8))  # the data holds 8 bytes, not 16
EVIL = pickle.dumps(Evil(), protocol=2)
FAILSAFE = 60.0  # seconds a thread of a test may take before it is called stuck
AUTO_MAP = json.dumps({"auto_map": {"AutoModel": "org/other--modeling.Model"}}).encode()


def card(license: str) -> bytes:
    return f"---\nlicense: {license}\n---\n# a model\n".encode()


REPOS: dict[str, dict[str, bytes]] = {
    "org/good": {"model.safetensors": GOOD, "config.json": b"{}", "README.md": card("mit")},
    "org/evil": {"pytorch_model.bin": EVIL, "README.md": card("apache-2.0")},
    "org/remote": {"config.json": AUTO_MAP, "model.safetensors": GOOD, "README.md": card("other")},
}


def fill(store: Store, repos: dict[str, dict[str, bytes]] = REPOS) -> Store:
    for repo_id, files in repos.items():
        put_repo(store, repo_id, {"main": files})
    return store


@pytest.fixture
def store(tmp_path: Path, isolated_home: Path) -> Store:
    return fill(Store.at(tmp_path / "store", clock=SYSTEM))


def scan(*args: str | Path, code: int) -> str:
    result = run("scan", *args)
    assert result.exit_code == code, result.output
    return result.stdout


def scan_json(*args: str | Path, code: int) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(scan(*args, "--json", code=code))
    assert report["ok"] is (code == 0)
    return report


def policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(text)
    return path


def by_repo(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["repo_id"]: r for r in report["revisions"]}


def comparable(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The revisions as scanned, whatever they were read from."""
    return sorted(report["revisions"], key=lambda r: (r["repo_id"], r["commit"]))


# --- the command ----------------------------------------------------------------------------------------------


def test_the_default_policy_warns_about_pickles_and_remote_code_and_names_the_missing_repo(
    store: Store,
) -> None:
    out = scan("--store", store.local_root, code=0)
    assert f"warned  pytorch_model.bin: {IMPORTS_SYSTEM} [policy pickle: warn]" in out
    assert "auto_map refers to org/other, which is not here: the model will not load offline" in out
    assert "from another repo, org/other [policy remote_code: warn]" in out
    assert "huggingface:org/good@" in out and "(licence mit; 0 denied, 0 warned, 0 allowed)" in out
    assert out.splitlines()[-1].startswith(f"ok  {store}: 3 revision(s) scanned")


def test_a_policy_that_denies_pickles_exits_4_and_one_that_allows_them_0(
    store: Store, tmp_path: Path
) -> None:
    out = scan("--store", store.local_root, "--policy", policy(tmp_path, "pickle: deny\n"), code=4)
    assert f"denied  pytorch_model.bin: {IMPORTS_SYSTEM} [policy pickle: deny]" in out
    assert out.splitlines()[-1].startswith("DENIED  ") and "1 revision(s) denied" in out
    good = by_repo(
        scan_json("--store", store.local_root, "--policy", policy(tmp_path, "pickle: allow\n"), code=0)
    )
    assert good["org/evil"]["verdict"]["allowed"][0]["rule"] == "policy pickle: allow"


def test_an_invalid_header_is_denied_whatever_the_policy(store: Store, tmp_path: Path) -> None:
    fill(store, {"org/broken": {"model.safetensors": BROKEN}})
    lenient = policy(tmp_path, "pickle: allow\nremote_code: allow\nhub_flagged: allow\n")
    report = by_repo(scan_json("--store", store.local_root, "--policy", lenient, code=4))
    (denied,) = report["org/broken"]["verdict"]["denied"]
    assert denied["path"] == "model.safetensors" and denied["kind"] == "invalid"
    assert denied["rule"] == "invalid: always refused"
    assert report["org/good"]["verdict"]["ok"]


def test_a_licence_outside_the_allowlist_is_denied(store: Store, tmp_path: Path) -> None:
    report = by_repo(
        scan_json("--store", store.local_root, "--policy", policy(tmp_path, "licenses: [mit]\n"), code=4)
    )
    assert report["org/good"]["licenses"] == ["mit"] and report["org/good"]["verdict"]["ok"]
    (denied,) = report["org/remote"]["verdict"]["denied"]
    assert denied["kind"] == "license" and "'other' is not allowed" in denied["detail"]
    assert not report["org/evil"]["verdict"]["ok"]


def test_the_json_shape(store: Store) -> None:
    report = scan_json("--store", store.local_root, code=0)
    assert report["scanned"] == str(store) and report["problems"] == []
    assert report["summary"] == {"revisions": 3, "denied": 0, "findings": 2}
    remote = by_repo(report)["org/remote"]
    assert set(remote) == {
        "source", "repo_type", "repo_id", "commit", "findings", "repos", "licenses", "size", "verdict",
        "missing_repos", "unscanned",
    }  # fmt: skip
    assert remote["repos"] == ["org/other"] and remote["missing_repos"] == ["org/other"]
    assert remote["size"] == sum(len(d) for d in REPOS["org/remote"].values())
    (warned,) = remote["verdict"]["warned"]
    assert remote["findings"] == [{k: v for k, v in warned.items() if k != "rule"}]
    assert warned["kind"] == "remote_code" and warned["rule"] == "policy remote_code: warn"
    assert set(remote["verdict"]) == {"ok", "denied", "warned", "allowed"}


def test_a_referenced_repo_in_the_scanned_set_is_not_missing(store: Store) -> None:
    fill(store, {"org/other": {"modeling.py": b"class Model: ...\n"}})
    report = by_repo(scan_json("--store", store.local_root, code=0))
    assert report["org/remote"]["missing_repos"] == []
    assert report["org/other"]["findings"][0]["path"] == "modeling.py"


def test_a_bundle_gives_the_same_findings_and_a_damaged_one_exits_4(store: Store, tmp_path: Path) -> None:
    fill(store, {"org/broken": {"model.safetensors": BROKEN}, "org/twin": {"weights.pt": EVIL}})
    bundle = tmp_path / "b.tar.zst"
    assert run("export", "--store", store.local_root, "-o", bundle).exit_code == 3  # export refuses it
    write_bundle(store, select_all(store), bundle)  # as a bundle from elsewhere may hold it
    from_store = scan_json("--store", store.local_root, code=4)
    from_bundle = scan_json(bundle, code=4)
    assert from_bundle["scanned"] == str(bundle)
    assert comparable(from_bundle) == comparable(from_store)
    # the same content under two names (a hardlink member) is judged under each
    assert by_repo(from_bundle)["org/twin"]["findings"][0]["path"] == "weights.pt"
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bundle.write_bytes(bytes(data))
    assert run("scan", bundle).exit_code == 4


@pytest.mark.parametrize("layout", ["hf", "dir", "store"])
def test_an_imported_tree_gives_the_same_findings(store: Store, tmp_path: Path, layout: str) -> None:
    bundle, target = tmp_path / "b.tar.zst", tmp_path / "target"
    assert run("export", "--store", store.local_root, "-o", bundle).exit_code == 0
    imported = run("import", bundle, "--layout", layout, "--target", target)
    assert imported.exit_code == 0, imported.output
    from_target = scan_json("--layout", layout, "--target", target, code=0)
    assert comparable(from_target) == comparable(scan_json("--store", store.local_root, code=0))


def test_a_file_missing_from_the_target_is_named_as_not_read(store: Store, tmp_path: Path) -> None:
    bundle, target = tmp_path / "b.tar.zst", tmp_path / "target"
    assert run("export", "--store", store.local_root, "-o", bundle).exit_code == 0
    assert run("import", bundle, "--layout", "dir", "--target", target).exit_code == 0
    (weights,) = target.rglob("pytorch_model.bin")
    weights.unlink()
    evil = by_repo(scan_json("--layout", "dir", "--target", target, code=0))["org/evil"]
    assert evil["unscanned"] == ["pytorch_model.bin: missing from the target"] and evil["findings"] == []


def test_a_store_in_a_bucket(s3: S3Bucket, tmp_path: Path, isolated_home: Path) -> None:
    storage = S3Storage(parse_s3_url(s3.url("store")), clock=SYSTEM, staging=tmp_path / "staging")
    fill(Store(storage, clock=SYSTEM))
    local = fill(Store.at(tmp_path / "local", clock=SYSTEM))
    from_bucket = scan_json("--store", s3.url("store"), code=0)
    assert comparable(from_bucket) == comparable(scan_json("--store", local.local_root, code=0))


def test_usage_errors_exit_2(store: Store, tmp_path: Path) -> None:
    assert run("scan", "--store", store.local_root, "--target", tmp_path).exit_code == 2
    assert (
        run("scan", "--store", store.local_root, "--policy", policy(tmp_path, "pickle: maybe\n")).exit_code
        == 2
    )


def test_a_store_that_does_not_exist_exits_1(tmp_path: Path) -> None:
    assert run("scan", "--store", tmp_path / "nowhere").exit_code == 1


def test_a_blob_missing_from_the_store_is_named_as_not_read(store: Store) -> None:
    blob = store.local_blob(hashlib.sha256(EVIL).hexdigest())
    assert blob is not None
    blob.unlink()
    evil = by_repo(scan_json("--store", store.local_root, code=0))["org/evil"]
    assert evil["unscanned"] == ["pytorch_model.bin: missing from the store"] and evil["findings"] == []


def test_what_a_delta_bundle_leaves_in_the_target_is_named_as_not_read(store: Store, tmp_path: Path) -> None:
    first, delta = tmp_path / "first.tar.zst", tmp_path / "delta.tar.zst"
    assert run("export", "--store", store.local_root, "-o", first).exit_code == 0
    fill(store, {"org/new": {"model.safetensors": BROKEN}})
    write_bundle(store, select_all(store), delta, have=far_side_holds([], [first]))  # export would refuse it
    report = by_repo(scan_json(delta, code=4))
    assert report["org/new"]["verdict"]["denied"][0]["kind"] == "invalid"
    left = "left in the target by this delta bundle"
    assert report["org/evil"]["unscanned"] == [f"README.md: {left}", f"pytorch_model.bin: {left}"]
    assert report["org/evil"]["findings"] == []


# --- the engine -----------------------------------------------------------------------------------------------


class Stream(io.BytesIO):
    """A stream that may refuse to seek, and remembers being closed."""

    def __init__(self, data: bytes, *, seekable: bool) -> None:
        super().__init__(data)
        self.can_seek = seekable
        self.read_to = 0  # where the stream was when closed
        OPENED.append(self)

    def close(self) -> None:
        if not self.closed:
            self.read_to = self.tell()
        super().close()

    def seekable(self) -> bool:
        return self.can_seek

    def seek(self, offset: int, whence: int = 0) -> int:
        if not self.can_seek:
            raise io.UnsupportedOperation("seek")
        return super().seek(offset, whence)


OPENED: list[Stream] = []  # every Stream made, in order


def opener(data: bytes, *, seekable: bool = True) -> Any:
    def open_() -> BinaryIO:
        return Stream(data, seekable=seekable)

    return open_


def test_one_table_says_which_checks_read_a_path() -> None:
    assert [c.__name__ for c in checks_for("a/model.SAFETENSORS")] == ["check_safetensors"]
    assert [c.__name__ for c in checks_for("pytorch_model.bin")] == ["check_pickled"]
    assert checks_for("config.json") == () and checks_for("tokenizer.json") == ()


def test_a_stream_that_cannot_seek_is_spooled_for_the_pickle_check(tmp_path: Path) -> None:
    OPENED.clear()
    spool = tmp_path / "spool"
    spool.mkdir()
    found = scan_file(ScanFile("model.bin", len(EVIL), opener(EVIL, seekable=False)), spool)
    assert found == scan_file(ScanFile("model.bin", len(EVIL), opener(EVIL)))
    assert found == [Finding("model.bin", "pickle", IMPORTS_SYSTEM)]
    assert all(s.closed for s in OPENED) and list(spool.iterdir()) == []


def test_a_bundle_scan_leaves_nothing_in_its_temporary_folder(store: Store, tmp_path: Path) -> None:
    bundle, spool = tmp_path / "b.tar.zst", tmp_path / "spool"
    assert run("export", "--store", store.local_root, "-o", bundle).exit_code == 0
    spool.mkdir()
    report = scan_bundles([bundle], DEFAULT_POLICY, spool)
    assert report.ok and len(report.revisions) == 3 and list(spool.iterdir()) == []


def test_a_header_is_checked_as_the_bundle_streams_and_pickles_are_spooled(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = safetensors_file({"w": tensor("U8", [3 << 20], 0, 3 << 20)}, os.urandom(3 << 20))
    fill(store, {"org/big": {"model.safetensors": big}})
    bundle = tmp_path / "b.tar.zst"
    assert run("export", "--store", store.local_root, "-o", bundle).exit_code == 0
    streamed: list[str] = []
    original = scanning._scan_streaming

    def spy(member: Any, path: str, spool_dir: Path) -> list[Finding]:
        streamed.append(path)
        return original(member, path, spool_dir)

    monkeypatch.setattr(scanning, "_scan_streaming", spy)
    report = by_repo(scan_bundles([bundle], DEFAULT_POLICY).to_json())
    # org/big's alone; org/good's and org/remote's are one content under two names: spooled, checked twice
    assert streamed == ["model.safetensors"]
    assert report["org/big"]["findings"] == [] and report["org/evil"]["findings"][0]["kind"] == "pickle"


def test_a_pipe_closed_early_never_blocks_its_feeder() -> None:
    pipe = MemberPipe(depth=1)
    blocks = [bytes([i]) * 1000 for i in range(50)]

    def feed() -> None:
        for block in blocks:
            pipe.feed(memoryview(block))
        pipe.end()

    feeder = threading.Thread(target=feed)
    feeder.start()
    with io.BufferedReader(pipe) as stream:
        assert stream.read(1500) == blocks[0] + blocks[1][:500]
    feeder.join(FAILSAFE)
    assert not feeder.is_alive()


def test_a_pipe_read_to_its_end_gives_every_byte() -> None:
    pipe = MemberPipe(depth=2)
    data = os.urandom(100_000)

    def feed() -> None:
        for start in range(0, len(data), 7000):
            pipe.feed(data[start : start + 7000])
        pipe.end()

    feeder = threading.Thread(target=feed)
    feeder.start()
    with io.BufferedReader(pipe) as stream:
        assert stream.read() == data
    feeder.join(FAILSAFE)


def test_files_no_check_reads_are_never_opened() -> None:
    def refuse() -> BinaryIO:
        raise AssertionError("opened")

    scan = scan_revision(
        [ScanFile("tokenizer.json", 10**12, refuse), ScanFile("model.safetensors", len(GOOD), opener(GOOD))]
    )
    assert scan.findings == () and scan.size == 10**12 + len(GOOD) and scan.licenses == ()


def test_an_overlong_readme_and_config_are_not_read_whole() -> None:
    OPENED.clear()
    big = b"---\nlicense: mit\n---\n" + b"x" * (2 << 20)
    scan = scan_revision([ScanFile("README.md", len(big), opener(big))])
    assert scan.licenses == () and OPENED == []  # over the card's bound: not opened at all
    lying = ScanFile("config.json", 10, opener(b"{" + b" " * (17 << 20)))  # longer than it says
    (finding,) = scan_revision([lying]).findings
    assert "over the" in finding.detail and all(s.read_to <= (16 << 20) + 1 for s in OPENED)
