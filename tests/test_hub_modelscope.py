"""The loopback hub's ModelScope routes (tests/hub.py), driven by the real modelscope client.

The client reads MODELSCOPE_* at import time, so every client call runs in a subprocess; a subprocess
runs several steps when they can share one `import modelscope` (about 1.2 s: it imports torch).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.hub import Fault, LoopbackHub
from tests.test_hub import HubClock, fetch_whole

pytestmark = pytest.mark.e2e  # the loopback hub and the real modelscope client in subprocesses

ROOT = Path(__file__).resolve().parent.parent
RESULT_MARK = "@@RESULT@@"
REPO = "org/tiny"

CLIENT_PRELUDE = f"""
import json, os, sys, time
import modelscope
from modelscope import snapshot_download
from modelscope.hub.file_download import model_file_download

def out(obj):
    print({RESULT_MARK!r} + json.dumps(obj), flush=True)

def tree(root):
    found = {{}}
    for dirpath, _, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                found[os.path.relpath(full, root)] = f.read().hex()
    return found

def attempt(fn, *args, **kwargs):
    try:
        return {{"ok": str(fn(*args, **kwargs))}}
    except Exception as e:
        return {{"error": type(e).__module__ + "." + type(e).__name__, "message": str(e)}}
"""


def _bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


REPO_FILES: dict[str, bytes] = {
    "config.json": b'{"model_type": "bert", "hidden_size": 8}\n',
    "README.md": b"# tiny\n",
    "sub/dir/nested.txt": b"nested file\n",
    "sub/other.json": b'{"x": 1}',
    "weights/model.safetensors": _bytes(2 << 20, 1),  # 2 MiB
    "odd name+plus.txt": b"quote_plus in FilePath\n",
}


@dataclass
class ClientRun:
    returncode: int
    result: Any
    stderr: str


def ms_env(endpoint: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MODELSCOPE", "HF_", "HUGGINGFACE_")) and "proxy" not in k.lower()
    }
    env.update(
        MODELSCOPE_ENDPOINT=endpoint,
        MODELSCOPE_CACHE=str(tmp_path / "ms-cache"),
        MODELSCOPE_DOWNLOAD_INTRA_CLOUD="false",  # no internalAccelerationInfo region probe
        HOME=str(tmp_path / "home"),  # credentials (~/.modelscope) and any default cache stay in tmp
        TQDM_DISABLE="1",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def run_client(code: str, env: dict[str, str], timeout: float = 60) -> ClientRun:
    script = CLIENT_PRELUDE + textwrap.dedent(code)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK) :])
    return ClientRun(proc.returncode, result, proc.stderr)


def hexed(files: dict[str, bytes]) -> dict[str, str]:
    return {k: v.hex() for k, v in files.items()}


def ms_get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# --------------------------------------------------------------------------------------------------
# The real client
# --------------------------------------------------------------------------------------------------


def test_snapshot_download_master_and_tag(hub: LoopbackHub, tmp_path: Path) -> None:
    hub.add_commit(REPO, REPO_FILES, tags=["v1.0"])  # HF branch `main` only: `master` is its alias
    later = dict(REPO_FILES, **{"config.json": b'{"model_type": "bert", "hidden_size": 16}\n'})
    hub.add_commit(REPO, later)
    cache_dir = tmp_path / "explicit"
    run = run_client(
        f"""
        first = snapshot_download({REPO!r}, revision="master", cache_dir={str(cache_dir)!r})
        tagged = snapshot_download({REPO!r}, revision="v1.0")  # default cache: $MODELSCOPE_CACHE
        again = snapshot_download({REPO!r}, revision="master", cache_dir={str(cache_dir)!r})
        one = model_file_download({REPO!r}, "sub/dir/nested.txt")  # revision=None
        out({{"first": first, "tagged": tagged, "again": again, "one": one,
             "first_tree": tree(first), "tagged_tree": tree(tagged)}})
        """,
        ms_env(hub.modelscope_url, tmp_path),
    )
    assert run.returncode == 0, run.stderr
    res = run.result
    # Layout: <cache>/models/<owner>--<name>/snapshots/<revision as requested>/<plain files>.
    assert res["first"] == str(cache_dir / "models" / "org--tiny" / "snapshots" / "master")
    assert res["tagged"] == str(tmp_path / "ms-cache" / "models" / "org--tiny" / "snapshots" / "v1.0")
    assert res["again"] == res["first"]
    assert res["one"] == str(tmp_path / "ms-cache/models/org--tiny/snapshots/master/sub/dir/nested.txt")
    assert res["first_tree"] == hexed(later)
    assert res["tagged_tree"] == hexed(REPO_FILES)
    # Plain files only: no symlinks, blobs or marker files; the only extra is <cache>/.lock/.
    for base in (cache_dir, tmp_path / "ms-cache"):
        entries = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
        assert not any(p.is_symlink() for p in base.rglob("*"))
        assert {e.split("/")[0] for e in entries} == {".lock", "models"}
    assert sorted(os.listdir(cache_dir)) == [".lock", "models"]
    assert sorted(os.listdir(cache_dir / "models" / "org--tiny")) == ["snapshots"]

    # What the client requested, in order for each call (files within a call are parallel).
    listing = [r.path for r in hub.requests if "/repo/files" in r.path]
    assert listing == [
        "/api/v1/models/org/tiny/repo/files?Revision=master&Recursive=True",
        "/api/v1/models/org/tiny/repo/files?Revision=v1.0&Recursive=True",
        "/api/v1/models/org/tiny/repo/files?Revision=master&Recursive=True",
    ]
    got = [r.path for r in hub.downloads()]
    assert got == [r.path for r in hub.modelscope_downloads()]
    per_rev = {
        rev: sorted(p for p in got if f"Revision={rev}&" in p and "nested.txt" not in p)
        for rev in ("master", "v1.0")
    }
    expected = sorted(
        hub.modelscope_file_url(REPO, p, "master").removeprefix(hub.url)
        for p in REPO_FILES
        if "nested" not in p
    )
    assert per_rev["master"] == expected  # the third call re-listed, hashed the cache, fetched nothing
    assert "/api/v1/models/org/tiny/repo?Revision=master&FilePath=odd+name%2Bplus.txt" in got
    # model_file_download(revision=None) asks /revisions first (release-date tag selection), then the file.
    tail = [r.path for r in hub.requests[-2:]]
    assert tail == [
        "/api/v1/models/org/tiny/revisions",
        "/api/v1/models/org/tiny/repo?Revision=master&FilePath=sub%2Fdir%2Fnested.txt",
    ]
    assert all(r.status == 200 for r in hub.requests)
    assert all(r.headers.get("accept-encoding") == "identity" for r in hub.downloads())
    assert not any("internalAccelerationInfo" in r.path for r in hub.requests)


def test_master_branch_tokens_and_errors(hub: LoopbackHub, tmp_path: Path) -> None:
    hub.add_commit("org/both", {"which.txt": b"main"})
    hub.add_commit("org/both", {"which.txt": b"master"}, branch="master")
    hub.add_commit(REPO, REPO_FILES)
    dataset = {f"part{i // 100}/row{i}.txt": b"%d" % i for i in range(230)}  # 230 files + 3 dirs
    hub.add_commit("org/data", dataset, repo_type="dataset")
    hub.required_token = "ms-secret"
    run = run_client(
        f"""
        from modelscope.hub.snapshot_download import dataset_snapshot_download
        out({{
            "dataset": tree(dataset_snapshot_download("org/data")),
            "default": tree(snapshot_download("org/both")),  # revision=None -> master
            "main": tree(snapshot_download("org/both", revision="main")),
            "wrong_token": attempt(snapshot_download, {REPO!r}, token="not-it"),
            "no_model": attempt(snapshot_download, "org/nope"),
            "no_revision": attempt(snapshot_download, {REPO!r}, revision="v9"),
            "no_file": attempt(model_file_download, {REPO!r}, "nope.txt", revision="master"),
        }})
        """,
        ms_env(hub.modelscope_url, tmp_path, MODELSCOPE_API_TOKEN="ms-secret"),
    )
    assert run.returncode == 0, run.stderr
    res = run.result
    assert res["default"] == {"which.txt": b"master".hex()}
    assert res["main"] == {"which.txt": b"main".hex()}
    assert res["dataset"] == hexed(dataset)
    pages = [r.path for r in hub.requests if "/repo/tree" in r.path]
    assert pages == [
        f"/api/v1/datasets/org/data/repo/tree?Revision=master&Recursive=True&PageNumber={n}&PageSize=200"
        for n in (1, 2)
    ]
    assert len([r for r in hub.downloads() if r.path.startswith("/api/v1/datasets/org/data/repo?")]) == 230
    # NotExistError / AuthenticationError come out of the compat layer as requests' HTTPError.
    for key in ("wrong_token", "no_model", "no_revision", "no_file"):
        assert res[key]["error"] == "requests.exceptions.HTTPError", (key, res[key])
    statuses = {r.path.split("?")[0]: r.status for r in hub.requests}
    assert statuses["/api/v1/models/org/nope/repo/files"] == 404
    assert statuses["/api/v1/models/org/tiny/repo"] == 404
    assert [r.status for r in hub.requests if "Revision=v9" in r.path] == [404]
    # The token goes out both as a bearer header and as the m_session_id cookie.
    good = [r for r in hub.requests if r.status != 401]
    assert all(r.headers.get("authorization") == "Bearer ms-secret" for r in good)
    assert all(r.headers.get("cookie") == "m_session_id=ms-secret" for r in good)
    bad = [r for r in hub.requests if r.status == 401]
    assert len(bad) == 1 and bad[0].headers.get("authorization") == "Bearer not-it"


# --------------------------------------------------------------------------------------------------
# The routes directly
# --------------------------------------------------------------------------------------------------


def test_range_head_and_headers(hub: LoopbackHub) -> None:
    hub.add_commit(REPO, REPO_FILES)
    data = REPO_FILES["weights/model.safetensors"]
    url = hub.modelscope_file_url(REPO, "weights/model.safetensors")
    assert (
        url == f"{hub.url}/api/v1/models/org/tiny/repo?Revision=master&FilePath=weights%2Fmodel.safetensors"
    )
    status, headers, body = ms_get(url, {"Range": "bytes=10-19"})
    assert (status, headers["Content-Range"], body) == (206, f"bytes 10-19/{len(data)}", data[10:20])
    assert headers["Accept-Ranges"] == "bytes" and "X-Repo-Commit" not in headers
    status, headers, body = ms_get(url, {"Range": "bytes=-5"})
    assert (status, body) == (206, data[-5:])
    status, headers, _ = ms_get(url, {"Range": f"bytes={len(data)}-"})
    assert (status, headers["Content-Range"]) == (416, f"bytes */{len(data)}")
    status, headers, body = ms_get(url, method="HEAD")
    assert (status, headers["Content-Length"], body) == (200, str(len(data)), b"")
    hub.ignore_range = True
    status, _, body = ms_get(url, {"Range": "bytes=10-19"})
    assert (status, body) == (200, data)
    status, _, body = ms_get(hub.modelscope_file_url(REPO, "odd name+plus.txt"))
    assert (status, body) == (200, REPO_FILES["odd name+plus.txt"])
    assert [r.status for r in hub.downloads()] == [206, 206, 416, 200, 200]


def test_listing_revisions_info_and_errors(hub: LoopbackHub) -> None:
    v1 = hub.add_commit(REPO, REPO_FILES, tags=["v1.0"])
    v2 = hub.add_commit(REPO, {"config.json": b"{}"}, inherit=True)
    api = f"{hub.url}/api/v1/models/{REPO}"

    status, _, body = ms_get(f"{api}/repo/files?Revision=master&Recursive=True")
    doc = json.loads(body)
    assert (status, doc["Code"], doc["Success"]) == (200, 200, True)
    entries = {e["Path"]: e for e in doc["Data"]["Files"]}
    assert set(entries) == set(REPO_FILES) | {"sub", "sub/dir", "weights"}
    w = entries["weights/model.safetensors"]
    data = REPO_FILES["weights/model.safetensors"]
    assert (w["Name"], w["Type"], w["Size"], w["IsLFS"]) == ("model.safetensors", "blob", len(data), True)
    assert w["Sha256"] == hashlib.sha256(data).hexdigest()
    assert (w["Revision"], w["CommitId"]) == (v2, v1)  # commit listed / last commit touching the path
    assert entries["config.json"]["CommitId"] == v2 and entries["config.json"]["IsLFS"] is False
    assert (entries["sub"]["Type"], entries["sub"]["Size"], entries["sub"]["Sha256"]) == ("tree", 0, "")

    _, _, body = ms_get(f"{api}/repo/files?Revision=v1.0&Root=sub&Recursive=False")
    assert [e["Path"] for e in json.loads(body)["Data"]["Files"]] == ["sub/dir", "sub/other.json"]
    _, _, body = ms_get(f"{api}/repo/files?Revision={v1}&Recursive=True&PageNumber=2&PageSize=4")
    page = [e["Path"] for e in json.loads(body)["Data"]["Files"]]
    assert page == sorted([*REPO_FILES, "sub", "sub/dir", "weights"])[4:8]
    _, _, body = ms_get(f"{api}/repo/tree?Revision=master&Recursive=True&PageNumber=1&PageSize=100")
    assert len(json.loads(body)["Data"]["Files"]) == len(entries)

    _, _, body = ms_get(f"{api}/revisions")
    rmap = json.loads(body)["Data"]["RevisionMap"]
    assert [(b["Revision"], b["CommitId"]) for b in rmap["Branches"]] == [("master", v2), ("main", v2)]
    assert [(t["Revision"], t["CommitId"]) for t in rmap["Tags"]] == [("v1.0", v1)]
    assert isinstance(rmap["Tags"][0]["CreatedAt"], int)

    ms_only = hub.add_commit("org/ms-only", {"a.txt": b"a"}, branch="master")  # no HF `main` at all
    rmap = json.loads(ms_get(f"{hub.url}/api/v1/models/org/ms-only/revisions")[2])["Data"]["RevisionMap"]
    assert [b["Revision"] for b in rmap["Branches"]] == ["master"]
    assert json.loads(ms_get(f"{hub.url}/api/models/org/ms-only")[2])["sha"] == ms_only  # HF side: master
    assert ms_get(hub.modelscope_file_url("org/ms-only", "a.txt", "main"))[0] == 404

    _, _, body = ms_get(f"{api}?Revision=v1.0")
    info = json.loads(body)["Data"]
    assert (info["Path"], info["Name"], info["Revision"], info["CommitId"]) == ("org", "tiny", "v1.0", v1)

    status, _, body = ms_get(f"{hub.url}/api/v1/repos/internalAccelerationInfo")
    assert (status, json.loads(body)["Data"]) == (200, {"InternalRegionQueryAddress": ""})

    for url, code in [
        (f"{hub.url}/api/v1/models/org/nope/repo/files?Revision=master", 404),
        (f"{api}/repo/files?Revision=v9", 404),
        (f"{api}/repo/files?Revision=master&Root=nodir", 404),
        (f"{api}/repo?Revision=master&FilePath=nope.txt", 404),
        (f"{api}/repo?Revision=master", 400),
        (f"{hub.url}/openapi/v1/models/org/tiny", 404),
    ]:
        status, _, body = ms_get(url)
        doc = json.loads(body)
        assert status == code, url
        assert doc.get("Success", doc.get("success")) is False
    assert json.loads(ms_get(f"{api}/repo/files?Revision=v9")[2])["Code"] == 404


def test_token_faults_and_rate_limit(hub: LoopbackHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_commit(REPO, {"a.bin": _bytes(200_000, 2)})
    url = hub.modelscope_file_url(REPO, "a.bin")
    hub.required_token = "ms-secret"
    assert ms_get(url)[0] == 401
    assert ms_get(url, {"Authorization": "Bearer nope"})[0] == 401
    assert ms_get(url, {"Authorization": "Bearer ms-secret"})[0] == 200
    assert ms_get(url, {"Cookie": "other=1; m_session_id=ms-secret"})[0] == 200
    assert ms_get(f"{hub.url}/api/v1/repos/internalAccelerationInfo")[0] == 200  # the probe sends no token
    hub.required_token = None

    hub.add_fault(Fault("status", match="FilePath=a.bin", status=429, retry_after=3))
    status, headers, _ = ms_get(url)
    assert (status, headers["Retry-After"]) == (429, "3")
    hub.add_fault(Fault("corrupt", match="FilePath=a.bin", at_byte=5))
    body = ms_get(url)[2]
    assert body[5] != _bytes(200_000, 2)[5] and body[6:] == _bytes(200_000, 2)[6:]
    clock = HubClock()
    monkeypatch.setattr("tests.hub.time", clock)
    hub.rate_limit_per_connection = 1_000_000
    assert fetch_whole(hub, url.removeprefix(hub.url)) == _bytes(200_000, 2)
    assert sum(clock.sleeps) == pytest.approx(200_000 / 1_000_000)
    assert [r.status for r in hub.downloads()] == [401, 401, 200, 200, 429, 200, 200]
    assert hub.downloads()[-1].bytes_sent == 200_000
