"""Tests for the loopback hub (tests/hub.py), driven by the real huggingface_hub client.

The client reads its environment at import time, so every client call runs in a subprocess.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.hub import Fault, FileInfo, HubFile, LoopbackHub, git_blob_sha1, lfs_pointer

ROOT = Path(__file__).resolve().parent.parent
RESULT_MARK = "@@RESULT@@"

CLIENT_PRELUDE = f"""
import json, os, sys
from huggingface_hub import HfApi, hf_hub_download, scan_cache_dir, snapshot_download
from huggingface_hub import errors
api = HfApi()

def out(obj):
    print({RESULT_MARK!r} + json.dumps(obj), flush=True)
"""


def _bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


REPO_FILES: dict[str, bytes] = {
    "config.json": b'{"model_type": "bert", "hidden_size": 8}\n',
    "README.md": b"# tiny\n",
    "sub/dir/nested.txt": b"nested file\n",
    "sub/other.json": b'{"x": 1}',
    "model.safetensors": _bytes(300_000, 1),  # LFS by suffix
    "tokenizer/vocab.txt": b"\n".join(b"tok%d" % i for i in range(500)),
}


@dataclass
class ClientRun:
    returncode: int
    result: Any
    stderr: str


def client_env(hub: LoopbackHub, tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE_")) and "proxy" not in k.lower()
    }
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HUB_CACHE=str(tmp_path / "cache"),
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HOME=str(tmp_path),
        NO_PROXY="127.0.0.1,localhost",
        PYTHONPATH=str(ROOT),
    )
    return env


def run_client(hub: LoopbackHub, tmp_path: Path, code: str, *, check: bool = True) -> ClientRun:
    """Run `code` with the real huggingface_hub in a fresh interpreter; `out(obj)` returns obj."""
    script = CLIENT_PRELUDE + textwrap.dedent(code)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=client_env(hub, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    results = [line[len(RESULT_MARK) :] for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    result = json.loads(results[-1]) if results else None
    if check and proc.returncode != 0:
        raise AssertionError(f"client failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return ClientRun(proc.returncode, result, proc.stderr)


def repo_cache(tmp_path: Path, folder: str) -> Path:
    return tmp_path / "cache" / folder


def fetch(
    hub: LoopbackHub, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(hub.url + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()


# --------------------------------------------------------------------------------------------------
# snapshot_download and the cache layout
# --------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_snapshot_download_layout_and_requests(hub: LoopbackHub, tmp_path: Path) -> None:
    src = tmp_path / "on-disk.bin"
    src.write_bytes(_bytes(70_000, 2))
    files = [HubFile(p, data=d) for p, d in REPO_FILES.items()]
    files += [HubFile("weights/extra.bin", source=src), HubFile("forced-lfs.txt", data=b"lfs text", lfs=True)]
    sha = hub.add_commit("org/tiny", files)
    expected = {**REPO_FILES, "weights/extra.bin": src.read_bytes(), "forced-lfs.txt": b"lfs text"}

    run = run_client(
        hub,
        tmp_path,
        """
        path = snapshot_download("org/tiny")
        info = scan_cache_dir()
        out({"path": path, "warnings": [str(w) for w in info.warnings],
             "repos": [[r.repo_id, r.repo_type, r.nb_files] for r in info.repos]})
        """,
    )
    snap = Path(run.result["path"])
    root = repo_cache(tmp_path, "models--org--tiny")
    assert snap == root / "snapshots" / sha
    assert run.result["warnings"] == []
    assert run.result["repos"] == [["org/tiny", "model", len(expected)]]
    assert (root / "refs" / "main").read_bytes() == sha.encode()  # no trailing newline

    for rel, data in expected.items():
        link = snap / rel
        assert link.read_bytes() == data, rel
        target = os.readlink(link)
        assert not os.path.isabs(target), target
        info = hub.file_info("org/tiny", rel)
        # blobs are named by etag: sha256 for LFS, git blob sha1 otherwise
        want = hashlib.sha256(data).hexdigest() if info.lfs else git_blob_sha1(data)
        assert info.etag == want
        assert target == "../" * (rel.count("/") + 2) + f"blobs/{want}"
    assert hub.file_info("org/tiny", "model.safetensors").lfs
    assert hub.file_info("org/tiny", "weights/extra.bin").lfs
    assert hub.file_info("org/tiny", "forced-lfs.txt").lfs
    assert not hub.file_info("org/tiny", "config.json").lfs
    assert sorted(p.name for p in (root / "blobs").iterdir()) == sorted(
        hub.file_info("org/tiny", rel).etag for rel in expected
    )

    paths = [(r.method, r.path, r.status) for r in hub.requests]
    assert ("GET", "/api/models/org/tiny/revision/main", 200) in paths
    assert ("GET", f"/api/models/org/tiny/tree/{sha}?recursive=true&expand=false", 200) in paths
    for rel in expected:
        url = f"/org/tiny/resolve/{sha}/{rel}"
        assert ("HEAD", url, 200) in paths
        assert ("GET", url, 200) in paths
    assert {r.path for r in hub.downloads()} == {f"/org/tiny/resolve/{sha}/{rel}" for rel in expected}
    # keep-alive: connections are reused
    assert len({r.connection for r in hub.requests}) < len(hub.requests)
    # the client never saw any xet header, so everything went over plain HTTP
    assert all(r.bytes_sent == len(expected[r.path.split(f"{sha}/", 1)[1]]) for r in hub.downloads())


@pytest.mark.e2e
def test_hf_hub_download_by_tag_commit_branch_short_id(hub: LoopbackHub, tmp_path: Path) -> None:
    sha1 = hub.add_commit("gpt2", {"config.json": b"v1", "model.safetensors": b"w1" * 100}, tags=["v1.0"])
    sha2 = hub.add_commit("gpt2", {"config.json": b"v2", "model.safetensors": b"w2" * 100})
    sha_pr = hub.add_commit("gpt2", {"config.json": b"pr"}, branch="refs/pr/1")
    assert len({sha1, sha2, sha_pr}) == 3
    assert hub.resolve("gpt2") == sha2 and hub.resolve("gpt2", "v1.0") == sha1

    run = run_client(
        hub,
        tmp_path,
        f"""
        def read(**kw):
            with open(hf_hub_download("gpt2", "config.json", **kw), "rb") as f:
                return f.read().decode()
        out({{
            "commit": read(revision="{sha1}"),  # first: afterwards it would be served from the cache
            "tag": read(revision="v1.0"),
            "main": read(),
            "pr": read(revision="refs/pr/1"),
            "weights_v1": len(open(hf_hub_download("gpt2", "model.safetensors", revision="v1.0"), "rb").read()),
        }})
        """,
    )
    assert run.result == {"commit": "v1", "tag": "v1", "main": "v2", "pr": "pr", "weights_v1": 200}
    root = repo_cache(tmp_path, "models--gpt2")
    assert (root / "refs" / "v1.0").read_text() == sha1
    assert (root / "refs" / "main").read_text() == sha2
    assert (root / "refs" / "refs" / "pr" / "1").read_text() == sha_pr
    heads = [r.path for r in hub.requests if r.method == "HEAD"]
    assert "/gpt2/resolve/v1.0/config.json" in heads
    assert f"/gpt2/resolve/{sha1}/config.json" in heads
    assert "/gpt2/resolve/refs%2Fpr%2F1/config.json" in heads
    for r in hub.requests:
        assert r.status == 200, (r.method, r.path, r.status)


@pytest.mark.e2e
def test_refs_model_info_tree_and_paths_info(hub: LoopbackHub, tmp_path: Path) -> None:
    sha1 = hub.add_commit("org/tiny", REPO_FILES, tags=["v1.0"], message="first")
    sha2 = hub.add_commit("org/tiny", {"config.json": b"{}"}, inherit=True, message="second")
    hub.add_commit("org/tiny", {"x": b"x"}, branch="dev")
    run = run_client(
        hub,
        tmp_path,
        f"""
        refs = api.list_repo_refs("org/tiny", include_pull_requests=True)
        info = api.model_info("org/tiny", files_metadata=True)
        plain = api.model_info("org/tiny", revision="v1.0")
        tree = api.list_repo_tree("org/tiny", path_in_repo="sub", revision="{sha1}")
        expanded = api.list_repo_tree("org/tiny", recursive=True, expand=True)
        paths = api.get_paths_info("org/tiny", ["config.json", "sub", "missing"], revision="v1.0")
        out({{
            "branches": sorted([b.name, b.ref, b.target_commit] for b in refs.branches),
            "tags": [[t.name, t.ref, t.target_commit] for t in refs.tags],
            "sha": info.sha,
            "siblings": {{s.rfilename: [s.size, s.blob_id, s.lfs and [s.lfs.sha256, s.lfs.size, s.lfs.pointer_size]]
                         for s in info.siblings}},
            "plain": [plain.sha, plain.id, [[s.rfilename, s.size, s.blob_id] for s in plain.siblings][:1]],
            "tree": [[type(e).__name__, e.path] for e in tree],
            "last": {{e.path: e.last_commit.title for e in expanded}},
            "paths": [[type(e).__name__, e.path] for e in paths],
        }})
        """,
    )
    res = run.result
    assert res["branches"] == sorted(
        [["main", "refs/heads/main", sha2], ["dev", "refs/heads/dev", hub.resolve("org/tiny", "dev")]]
    )
    assert res["tags"] == [["v1.0", "refs/tags/v1.0", sha1]]
    assert res["sha"] == sha2
    weights = REPO_FILES["model.safetensors"]
    sha256 = hashlib.sha256(weights).hexdigest()
    pointer = lfs_pointer(sha256, len(weights))
    assert res["siblings"]["model.safetensors"] == [
        len(weights),
        git_blob_sha1(pointer),
        [sha256, len(weights), len(pointer)],
    ]
    assert res["siblings"]["config.json"] == [2, git_blob_sha1(b"{}"), None]
    assert res["plain"] == [sha1, "org/tiny", [["README.md", None, None]]]
    assert res["tree"] == [["RepoFolder", "sub/dir"], ["RepoFile", "sub/other.json"]]
    assert res["last"]["config.json"] == "second"
    assert res["last"]["sub/dir/nested.txt"] == "first"
    assert res["last"]["sub"] == "first"
    assert res["paths"] == [["RepoFile", "config.json"], ["RepoFolder", "sub"]]


@pytest.mark.e2e
def test_dataset_repo(hub: LoopbackHub, tmp_path: Path) -> None:
    sha = hub.add_commit(
        "org/data", {"data/train.csv": b"a,b\n1,2\n", "README.md": b"ds"}, repo_type="dataset"
    )
    run = run_client(
        hub,
        tmp_path,
        """
        path = snapshot_download("org/data", repo_type="dataset")
        try:
            api.model_info("org/data")
            err = None
        except errors.RepositoryNotFoundError as e:
            err = type(e).__name__
        out({"path": path, "info": api.dataset_info("org/data").sha, "model_err": err})
        """,
    )
    assert run.result["path"] == str(repo_cache(tmp_path, "datasets--org--data") / "snapshots" / sha)
    assert (Path(run.result["path"]) / "data" / "train.csv").read_bytes() == b"a,b\n1,2\n"
    assert run.result["info"] == sha
    assert run.result["model_err"] == "RepositoryNotFoundError"
    assert any(r.path == "/api/datasets/org/data/revision/main" for r in hub.requests)
    assert {r.path for r in hub.downloads()} == {
        f"/datasets/org/data/resolve/{sha}/data/train.csv",
        f"/datasets/org/data/resolve/{sha}/README.md",
    }


@pytest.mark.e2e
def test_error_codes_map_to_client_errors(hub: LoopbackHub, tmp_path: Path) -> None:
    hub.add_commit("org/tiny", {"config.json": b"{}"})
    run = run_client(
        hub,
        tmp_path,
        """
        def err(fn):
            try:
                fn()
            except Exception as e:
                return type(e).__name__
        out({
            "repo": err(lambda: hf_hub_download("org/nope", "config.json")),
            "rev": err(lambda: hf_hub_download("org/tiny", "config.json", revision="nope")),
            "entry": err(lambda: hf_hub_download("org/tiny", "missing.txt")),
            "snap_rev": err(lambda: snapshot_download("org/tiny", revision="nope")),
        })
        """,
    )
    assert run.result == {
        "repo": "RepositoryNotFoundError",
        "rev": "RevisionNotFoundError",
        "entry": "RemoteEntryNotFoundError",
        "snap_rev": "RevisionNotFoundError",
    }


# --------------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------------


def test_cut_and_corrupt_faults_on_the_wire(hub: LoopbackHub) -> None:
    """What mirror's resume and integrity tests rely on: a cut declares the whole length and stops after
    `at_byte` bytes; a corruption flips the one byte at `at_byte` and keeps the length."""
    data = _bytes(100_000, 4)
    hub.add_commit("org/tiny", {"model.safetensors": data})
    url = "/org/tiny/resolve/main/model.safetensors"
    cut = hub.add_fault(Fault("cut", match="model.safetensors", at_byte=30_000))
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    try:
        conn.request("GET", url)
        resp = conn.getresponse()
        assert resp.getheader("Content-Length") == str(len(data))
        with pytest.raises(http.client.IncompleteRead) as got:
            resp.read()
        assert got.value.partial == data[:30_000]
    finally:
        conn.close()
    assert cut.used_up and hub.downloads()[-1].bytes_sent == 30_000

    hub.add_fault(Fault("corrupt", match="model.safetensors", at_byte=1234))
    status, headers, body = fetch(hub, "GET", url)
    assert (status, headers["Content-Length"], len(body)) == (200, str(len(data)), len(data))
    assert [i for i in range(len(data)) if body[i] != data[i]] == [1234]
    assert fetch(hub, "GET", url, {"Range": "bytes=1000-1999"})[2] == data[1000:2000]  # used up: served right


@pytest.mark.e2e
def test_required_token(hub: LoopbackHub, tmp_path: Path) -> None:
    hub.add_commit("org/private", {"config.json": b"{}"})
    hub.required_token = "hf_secret"
    run = run_client(
        hub,
        tmp_path,
        """
        try:
            snapshot_download("org/private")
            anon = None
        except Exception as e:
            anon = type(e).__name__
        path = snapshot_download("org/private", token="hf_secret")
        out([anon, open(os.path.join(path, "config.json")).read()])
        """,
    )
    assert run.result == ["RepositoryNotFoundError", "{}"]
    statuses = [(r.status, r.headers.get("authorization")) for r in hub.requests]
    assert statuses[0] == (401, None)
    assert all(s == 200 and auth == "Bearer hf_secret" for s, auth in statuses[1:])
    status, headers, _ = fetch(hub, "GET", "/api/models/org/private", {"Authorization": "Bearer wrong"})
    assert status == 401 and headers["X-Error-Message"] == "Invalid credentials in Authorization header"


@pytest.mark.e2e
def test_tree_pagination_with_real_client(hub: LoopbackHub, tmp_path: Path) -> None:
    sha = hub.add_commit("org/tiny", REPO_FILES)
    hub.tree_page_size = 2
    run = run_client(
        hub,
        tmp_path,
        """
        entries = [e.path for e in api.list_repo_tree("org/tiny", recursive=True)]
        out([entries, snapshot_download("org/tiny")])
        """,
    )
    entries, path = run.result
    dirs = ["sub", "sub/dir", "tokenizer"]
    assert sorted(entries) == sorted([*REPO_FILES, *dirs])
    assert sorted(str(p.relative_to(path)) for p in Path(path).rglob("*") if p.is_symlink()) == sorted(
        REPO_FILES
    )
    tree_requests = [r for r in hub.requests if f"/tree/{sha}" in r.path]
    assert len(tree_requests) == 5  # 9 entries, 2 per page, for snapshot_download
    assert "cursor=" in tree_requests[-1].path


# --------------------------------------------------------------------------------------------------
# HTTP details without the client
# --------------------------------------------------------------------------------------------------


def test_resolve_headers_and_ranges(hub: LoopbackHub) -> None:
    data = _bytes(1000, 6)
    sha = hub.add_commit("org/tiny", {"model.safetensors": data, "a b/c.txt": b"0123456789"})
    url = "/org/tiny/resolve/main/a%20b/c.txt"

    status, headers, body = fetch(hub, "HEAD", url)
    assert (status, body) == (200, b"")
    assert headers["X-Repo-Commit"] == sha
    assert headers["ETag"] == f'"{git_blob_sha1(b"0123456789")}"'
    assert headers["Content-Length"] == "10"
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Type"] == "application/octet-stream"
    assert "X-Linked-Etag" not in headers
    assert not any(k.lower().startswith("x-xet") for k in headers)

    status, headers, body = fetch(hub, "HEAD", "/org/tiny/resolve/main/model.safetensors")
    sha256 = hashlib.sha256(data).hexdigest()
    assert headers["X-Linked-Etag"] == headers["ETag"] == f'"{sha256}"'
    assert headers["X-Linked-Size"] == headers["Content-Length"] == "1000"

    cases = {"bytes=2-5": (b"2345", "bytes 2-5/10"), "bytes=7-": (b"789", "bytes 7-9/10")}
    cases["bytes=-3"] = (b"789", "bytes 7-9/10")
    cases["bytes=8-100"] = (b"89", "bytes 8-9/10")
    for rng, (want, content_range) in cases.items():
        status, headers, body = fetch(hub, "GET", url, {"Range": rng})
        assert (status, body, headers["Content-Range"]) == (206, want, content_range), rng
    status, headers, _ = fetch(hub, "GET", url, {"Range": "bytes=10-"})
    assert (status, headers["Content-Range"]) == (416, "bytes */10")

    hub.ignore_range = True
    status, headers, body = fetch(hub, "GET", url, {"Range": "bytes=2-5"})
    assert (status, body) == (200, b"0123456789")
    assert "Content-Range" not in headers


def test_errors_and_unknown_routes(hub: LoopbackHub) -> None:
    sha = hub.add_commit("org/tiny", {"config.json": b"{}"})
    cases = {
        "/api/models/org/nope/revision/main": "RepoNotFound",
        "/api/models/org/tiny/revision/nope": "RevisionNotFound",
        "/org/tiny/resolve/nope/config.json": "RevisionNotFound",
        "/org/tiny/resolve/main/nope.json": "EntryNotFound",
        "/org/nope/resolve/main/config.json": "RepoNotFound",
        "/api/models/org/tiny/tree/main/nope": "EntryNotFound",
    }
    for path, code in cases.items():
        status, headers, body = fetch(hub, "GET", path)
        assert (status, headers.get("X-Error-Code")) == (404, code), path
        assert "error" in json.loads(body)
    _, headers, _ = fetch(hub, "GET", "/org/tiny/resolve/main/nope.json")
    assert headers["X-Repo-Commit"] == sha
    for path in ("/", "/api/whoami-v2", "/api/models", "/favicon.ico"):
        status, _, _ = fetch(hub, "GET", path)
        assert status == 404, path
    status, _, _ = fetch(hub, "DELETE", "/org/tiny/resolve/main/config.json")
    assert status == 404
    assert [r.status for r in hub.requests][-1] == 404
    hub.clear_requests()
    assert hub.requests == []


def test_keep_alive_and_recording(hub: LoopbackHub) -> None:
    hub.add_commit("org/tiny", {"config.json": b"{}"})
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/org/tiny/resolve/main/config.json", headers={"X-Test": "1"})
            resp = conn.getresponse()
            assert resp.version == 11 and resp.read() == b"{}"
        conn.request("GET", "/api/models/org/tiny/nope")
        resp = conn.getresponse()
        assert resp.status == 404 and json.loads(resp.read())
    finally:
        conn.close()
    assert len({r.connection for r in hub.requests}) == 1
    assert hub.requests[0].headers["x-test"] == hub.requests[0].headers["X-Test"] == "1"
    assert len(hub.downloads()) == 3


class HubClock:
    """Stands for the `time` module in tests/hub.py: a sleep is recorded and passes at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def fetch_whole(hub: LoopbackHub, path: str) -> bytes:
    """GET path, then HEAD it on the same connection: the HEAD's answer comes once the GET's handler is
    done, its pacing after the last byte included."""
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    try:
        conn.request("GET", path)
        body = conn.getresponse().read()
        conn.request("HEAD", path)
        conn.getresponse().read()
    finally:
        conn.close()
    return body


def test_delay_and_rate_limit(hub: LoopbackHub, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = HubClock()
    monkeypatch.setattr("tests.hub.time", clock)
    hub.add_commit("org/tiny", {"config.json": b"{}", "blob.bin": _bytes(150_000, 7)})
    fault = hub.add_fault(Fault("delay", match=lambda p: p.endswith("config.json"), delay=0.3, times=None))
    assert fetch(hub, "GET", "/org/tiny/resolve/main/config.json")[2] == b"{}"
    assert clock.sleeps == [0.3]
    assert fault.hits == 1 and not fault.used_up and fault in hub.faults.pending
    hub.faults.clear()
    clock.sleeps.clear()

    hub.rate_limit_per_connection = 500_000
    assert fetch_whole(hub, "/org/tiny/resolve/main/blob.bin") == _bytes(150_000, 7)
    assert len(clock.sleeps) > 1  # paced through the body, not one pause
    assert sum(clock.sleeps) == pytest.approx(150_000 / 500_000)


def test_fault_times_and_status_with_retry_after(hub: LoopbackHub) -> None:
    hub.add_commit("org/tiny", {"config.json": b"{}"})
    hub.add_fault(Fault("status", match="config", times=2, status=500, retry_after=7))
    got = [fetch(hub, "GET", "/org/tiny/resolve/main/config.json") for _ in range(3)]
    assert [g[0] for g in got] == [500, 500, 200]
    assert got[0][1]["Retry-After"] == "7"
    assert [r.status for r in hub.requests] == [500, 500, 200]


def test_add_folder_streams_from_disk_and_auto_lfs(hub: LoopbackHub, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "nested" / "deeper").mkdir(parents=True)
    (folder / "nested" / "deeper" / "file.txt").write_bytes(b"deep")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_bytes(b"ref")
    big = folder / "big.dat"
    with open(big, "wb") as f:  # sparse 10 MiB: LFS by size
        f.truncate(10 * 1024 * 1024)
    (folder / "small.dat").write_bytes(b"small")
    sha = hub.add_folder("org/folder", folder, tags=["v1"])
    assert hub.list_files("org/folder", "v1") == ["big.dat", "nested/deeper/file.txt", "small.dat"]
    info = hub.file_info("org/folder", "big.dat")
    assert isinstance(info, FileInfo) and info.lfs and info.data is None
    assert info.sha256 == hashlib.sha256(b"\0" * (10 * 1024 * 1024)).hexdigest()
    assert not hub.file_info("org/folder", "small.dat").lfs
    status, headers, body = fetch(hub, "GET", f"/org/folder/resolve/{sha}/big.dat", {"Range": "bytes=5-9"})
    assert (status, body, headers["X-Linked-Size"]) == (206, b"\0" * 5, str(10 * 1024 * 1024))
    assert fetch(hub, "GET", "/org/folder/resolve/v1/nested/deeper/file.txt")[2] == b"deep"


def test_commit_sha_is_deterministic() -> None:
    a, b = LoopbackHub(), LoopbackHub()
    files = {"x.txt": b"x", "y/z.bin": b"z"}
    assert a.add_commit("org/r", files) == b.add_commit("org/r", dict(reversed(files.items())))
    first = a.add_commit("org/r", {"x.txt": b"changed"})
    assert first != b.add_commit("org/r", {"x.txt": b"other"})
    assert len(a.resolve("org/r")) == 40
    with pytest.raises(ValueError):
        a.add_commit("org/r", [HubFile("../escape", data=b"")])
    with pytest.raises(ValueError):
        a.add_commit("org/r", [HubFile("x", data=b"", source=Path("x"))])


@pytest.mark.e2e
def test_cli_serves_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_bytes(b'{"cli": true}')
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.hub", str(folder), "org/cli"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/org/cli/resolve/main/config.json", timeout=10) as resp:
            assert resp.read() == b'{"cli": true}'
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0
