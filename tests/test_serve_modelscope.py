"""`mirror serve`'s ModelScope API (mirror/serve/modelscope.py), driven by the real modelscope client.

One store for the module, synced from the loopback hub (a ModelScope repo over its ModelScope routes, a
Hugging Face model and dataset over its HF routes, and one id held from both sources), and one server over
it. The client reads MODELSCOPE_* at import time, so it runs in subprocesses (tests/test_hub_modelscope.py).
The pure helpers are tested in-process at the end, without a server.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from mirror.clock import SYSTEM
from mirror.serve import modelscope as ms
from mirror.serve.view import StoreView
from mirror.store import Store
from tests.asgi import call
from tests.conftest import TINY_MAIN, TINY_V1, put_repo
from tests.hub import LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.serving import Served, served
from tests.test_hub_modelscope import hexed, ms_env, ms_get, run_client
from tests.test_modelscope import sync_text

MS_REPO = "owner/msmodel"
HF_REPO = "org/hfmodel"
HF_DATA = "org/hfdata"
BOTH = "org/both"

MS_V1 = {
    "configuration.json": b'{"framework": "pytorch"}\n',
    "sub/dir/nested.txt": b"nested file\n",
    "odd name+plus.txt": b"quote_plus in FilePath\n",
    "weights/model.safetensors": safetensors_sized(random.Random(1).randbytes(3 << 20)),  # 3 MiB, LFS
}
MS_MASTER = {**MS_V1, "configuration.json": b'{"framework": "pytorch", "v": 2}\n'}
HF_FILES = {"config.json": b'{"model_type": "bert"}\n', "tokenizer/vocab.txt": b"[PAD]\n[UNK]\n"}
HF_DATA_FILES = {f"part{i // 3}/rows{i}.jsonl": b'{"i": %d}\n' % i for i in range(7)}

MANIFEST = f"""version: 1
models:
  - repo: {MS_REPO}
    source: modelscope
    revisions: [master, v1.0]
  - repo: {HF_REPO}
  - repo: {HF_DATA}
    type: dataset
  - repo: {BOTH}
    source: modelscope
  - repo: {BOTH}
"""


@dataclass(frozen=True)
class World:
    server: Served
    hub: LoopbackHub  # the store's origin, still up: its answers are the reference
    root: Path
    commits: dict[str, str]  # name -> commit on the hub


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("serve-ms") / "store"
    store = Store.at(root, clock=SYSTEM)
    with LoopbackHub() as hub:
        commits = {
            "ms-v1": hub.add_commit(MS_REPO, MS_V1, branch="master", tags=["v1.0"]),
            "ms-master": hub.add_commit(MS_REPO, MS_MASTER, branch="master"),
            "hf-main": hub.add_commit(HF_REPO, HF_FILES),
            "data-main": hub.add_commit(HF_DATA, HF_DATA_FILES, repo_type="dataset"),
            "both-main": hub.add_commit(BOTH, {"which.txt": b"huggingface"}),
            "both-master": hub.add_commit(BOTH, {"which.txt": b"modelscope"}, branch="master"),
        }
        report = sync_text(store, hub, MANIFEST)
        assert report.exit_code == 0, report.to_json()
        log = root.parent / "access.jsonl"
        with served(root, "--access-log", str(log)) as server:
            yield World(server, hub, root, commits)


def client_env(world: World, tmp_path: Path) -> dict[str, str]:
    return ms_env(world.server.url, tmp_path)


@pytest.mark.e2e
def test_snapshot_download_of_both_sources(world: World, tmp_path: Path) -> None:
    run = run_client(
        f"""
        from modelscope.hub.api import HubApi
        from modelscope.hub.snapshot_download import dataset_snapshot_download
        out({{
            "ms_master": tree(snapshot_download({MS_REPO!r})),
            "ms_v1": tree(snapshot_download({MS_REPO!r}, revision="v1.0")),
            "hf_master": tree(snapshot_download({HF_REPO!r})),
            "hf_main": snapshot_download({HF_REPO!r}, revision="main"),
            "data": tree(dataset_snapshot_download({HF_DATA!r})),
            "both": tree(snapshot_download({BOTH!r})),
            "one_ms": model_file_download({MS_REPO!r}, "sub/dir/nested.txt"),
            "one_hf": model_file_download({HF_REPO!r}, "tokenizer/vocab.txt"),
            "commit": tree(snapshot_download({MS_REPO!r}, revision={world.commits["ms-v1"]!r})),
            "info": json.loads(json.dumps(HubApi().get_model({MS_REPO!r}), default=str)),
        }})
        """,
        client_env(world, tmp_path),
    )
    assert run.returncode == 0, run.stderr
    res = run.result
    assert res["ms_master"] == hexed(MS_MASTER)
    assert res["ms_v1"] == hexed(MS_V1)
    assert res["commit"] == hexed(MS_V1)
    assert res["hf_master"] == hexed(HF_FILES)  # `master` of a Hugging Face repo is its `main`
    assert res["hf_main"].endswith("models/org--hfmodel/snapshots/main")
    assert res["data"] == hexed(HF_DATA_FILES)
    assert res["both"] == {"which.txt": b"modelscope".hex()}  # the ModelScope repo of an id answers first
    cache = tmp_path / "ms-cache" / "models"
    assert res["one_ms"] == str(
        cache / "owner--msmodel" / "snapshots" / "master" / "sub" / "dir" / "nested.txt"
    )
    assert Path(res["one_hf"]).read_bytes() == HF_FILES["tokenizer/vocab.txt"]
    # HubApi.get_model: /openapi's 404 sends it to /api/v1, whose info it reads as ModelScope's
    info = res["info"]
    assert (info["Owner"], info["Name"], info["Visibility"]) == ("owner", "msmodel", 5)
    assert info["UpdatedAt"] == info["CreatedAt"] != "None"  # one sync: arrived together


@pytest.mark.e2e
def test_not_found_answers_make_the_client_raise(world: World, tmp_path: Path) -> None:
    run = run_client(
        f"""
        out({{
            "no_model": attempt(snapshot_download, "org/nope"),
            "no_revision": attempt(snapshot_download, {MS_REPO!r}, revision="v9"),
            "no_file": attempt(model_file_download, {MS_REPO!r}, "nope.txt", revision="master"),
            "no_file_hf": attempt(model_file_download, {HF_REPO!r}, "nope.txt", revision="master"),
        }})
        """,
        client_env(world, tmp_path),
        timeout=60,  # a client that retried or hung would fail here
    )
    assert run.returncode == 0, run.stderr
    for key, value in run.result.items():
        assert value.get("error") == "requests.exceptions.HTTPError", (key, value)
        assert "404" in value["message"], (key, value)


@pytest.mark.e2e
def test_a_cut_download_resumes_with_range(world: World, tmp_path: Path) -> None:
    """The client finds a partial file from an earlier run and asks only for the rest."""
    weights = MS_MASTER["weights/model.safetensors"]
    target = tmp_path / "ms-cache" / "models" / "owner--msmodel" / "snapshots" / "master" / "weights"
    target.mkdir(parents=True)
    cut = 1_000_000
    (target / "model.safetensors.incomplete").write_bytes(weights[:cut])
    before = _log_lines(world)
    run = run_client(
        f"""
        out(model_file_download({MS_REPO!r}, "weights/model.safetensors", revision="master"))
        """,
        client_env(world, tmp_path),
    )
    assert run.returncode == 0, run.stderr
    assert Path(run.result).read_bytes() == weights
    gets = [
        e
        for e in _log_lines(world, len(before) + 1)[len(before) :]
        if e["path"] == "weights/model.safetensors"
    ]
    assert [(e["method"], e["status"], e["bytes"]) for e in gets] == [("GET", 206, len(weights) - cut)]


def _log_lines(world: World, at_least: int = 0) -> list[dict[str, Any]]:
    """The access log's lines, once it has `at_least` (the server writes a line just after the answer)."""
    assert world.server.access_log is not None
    for _ in range(100):
        lines = [json.loads(line) for line in world.server.access_log.read_text().splitlines()]
        if len(lines) >= at_least:
            break
        time.sleep(0.05)
    return lines


@pytest.mark.e2e
def test_file_route_range_head_and_headers(world: World) -> None:
    data = MS_MASTER["weights/model.safetensors"]
    url = f"{world.server.url}/api/v1/models/{MS_REPO}/repo?Revision=master&FilePath=weights%2Fmodel.safetensors"
    status, headers, body = ms_get(url, {"Range": "bytes=10-19"})
    assert (status, headers["content-range"], body) == (206, f"bytes 10-19/{len(data)}", data[10:20])
    assert headers["x-linked-etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert (ms_get(url, {"Range": "bytes=-5"})[0], ms_get(url, {"Range": "bytes=-5"})[2]) == (206, data[-5:])
    status, headers, _ = ms_get(url, {"Range": f"bytes={len(data)}-"})
    assert (status, headers["content-range"]) == (416, f"bytes */{len(data)}")
    status, headers, body = ms_get(url, method="HEAD")
    assert (status, headers["content-length"], body) == (200, str(len(data)), b"")
    assert headers["accept-ranges"] == "bytes"
    status, _, body = ms_get(url)
    assert (status, body) == (200, data)
    plus = f"{world.server.url}/api/v1/models/{MS_REPO}/repo?Revision=v1.0&FilePath=odd+name%2Bplus.txt"
    assert ms_get(plus)[2] == MS_V1["odd name+plus.txt"]


# What a client reads of a listing entry (the hub's CommitId is the last commit touching the path, which
# a store does not know: the served entry names the listed commit).
LISTED = ("Name", "Path", "Type", "Size", "Sha256", "IsLFS", "Revision")


def listed(base: str, route: str) -> tuple[int, list[tuple[Any, ...]] | None]:
    status, _, body = ms_get(f"{base}/api/v1/{route}")
    doc = json.loads(body)
    assert (doc["Code"], doc["Success"]) == (status, status == 200)
    return status, [tuple(e[k] for k in LISTED) for e in doc["Data"]["Files"]] if status == 200 else None


@pytest.mark.parametrize(
    "route",
    [
        f"models/{MS_REPO}/repo/files?Revision=master&Recursive=True",
        f"models/{MS_REPO}/repo/files?Revision=v1.0&Recursive=True",
        f"models/{MS_REPO}/repo/files?Revision=master&Root=sub&Recursive=False",
        f"models/{MS_REPO}/repo/files?Revision=master&Root=sub&Recursive=True",
        f"models/{MS_REPO}/repo/files?Revision=master",
        f"models/{MS_REPO}/repo/tree?Revision=master&Recursive=True&PageNumber=2&PageSize=3",
        f"models/{MS_REPO}/repo/files?Revision=master&Root=nodir",
        f"models/{MS_REPO}/repo/files?Revision=v9",
        f"models/{HF_REPO}/repo/files?Revision=master&Recursive=True",
        f"models/{HF_REPO}/repo/files?Recursive=True",
        f"datasets/{HF_DATA}/repo/tree?Revision=master&Recursive=True&PageNumber=1&PageSize=4",
        f"datasets/{HF_DATA}/repo/tree?Revision=master&Recursive=True&PageNumber=2&PageSize=4",
        "models/org/nope/repo/files?Revision=master",
    ],
)
@pytest.mark.e2e
def test_listings_are_the_hubs(world: World, route: str) -> None:
    """The served listing is the one the hub the store was synced from gives, entry for entry."""
    assert listed(world.server.url, route) == listed(world.hub.url, route)


@pytest.mark.e2e
def test_revisions_info_and_errors(world: World) -> None:
    base = f"{world.server.url}/api/v1"
    api = f"{base}/models/{MS_REPO}"
    rmap = json.loads(ms_get(f"{api}/revisions")[2])["Data"]["RevisionMap"]
    assert [(b["Revision"], b["CommitId"]) for b in rmap["Branches"]] == [
        ("master", world.commits["ms-master"]),
        ("v1.0", world.commits["ms-v1"]),
    ]
    assert rmap["Tags"] == []
    rmap = json.loads(ms_get(f"{base}/models/{HF_REPO}/revisions")[2])["Data"]["RevisionMap"]
    assert [(b["Revision"], b["CommitId"]) for b in rmap["Branches"]] == [
        ("master", world.commits["hf-main"]),
        ("main", world.commits["hf-main"]),
    ]
    info = json.loads(ms_get(f"{api}?Revision=v1.0")[2])["Data"]
    assert (info["Path"], info["Name"], info["Revision"], info["CommitId"]) == (
        "owner",
        "msmodel",
        "v1.0",
        world.commits["ms-v1"],
    )
    status, _, body = ms_get(f"{base}/repos/internalAccelerationInfo")
    assert (status, json.loads(body)["Data"]) == (200, {"InternalRegionQueryAddress": ""})

    for url, code in [
        (f"{base}/models/org/nope/repo/files?Revision=master", 404),
        (f"{base}/spaces/{MS_REPO}/repo/files", 404),
        (f"{api}/repo/files?Revision=v9", 404),
        (f"{api}/repo/files?Revision=master&Root=nodir", 404),
        (f"{api}/repo?Revision=master&FilePath=nope.txt", 404),
        (f"{api}/repo?Revision=master&FilePath=..%2F..%2Fetc%2Fpasswd", 400),  # the gate's refusal
        (f"{api}/repo?Revision=master", 400),
        (f"{api}/repo/files?PageNumber=x", 400),
        (f"{base}/models/{MS_REPO}/elsewhere", 404),
    ]:
        status, _, body = ms_get(url)
        doc = json.loads(body)
        assert (status, doc["Code"], doc["Success"], doc["Data"]) == (code, code, False, None), url
    status, _, body = ms_get(f"{world.server.url}/openapi/v1/models/{MS_REPO}")
    assert (status, json.loads(body)["code"]) == (404, "ResourceNotFound")


@pytest.mark.e2e
def test_access_log_names_repo_revision_and_path(world: World) -> None:
    before = len(_log_lines(world))
    ms_get(f"{world.server.url}/api/v1/models/{MS_REPO}/repo?Revision=v1.0&FilePath=sub%2Fdir%2Fnested.txt")
    ms_get(f"{world.server.url}/api/v1/datasets/{HF_DATA}/revisions")
    ms_get(f"{world.server.url}/api/v1/models/org/nope/repo/files?Revision=v2")
    named = [(e["repo"], e["revision"], e["path"], e["status"]) for e in _log_lines(world, before + 3)[-3:]]
    assert named == [
        (f"modelscope:{MS_REPO}", "v1.0", "sub/dir/nested.txt", 200),
        (f"huggingface:dataset:{HF_DATA}", None, None, 200),
        ("org/nope", None, None, 404),
    ]


# --------------------------------------------------------------------------------------------------
# The pure helpers, in-process
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def view(tmp_path: Path) -> StoreView:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(store, "org/tiny", {"main": TINY_MAIN, "v1.0": TINY_V1})
    put_repo(store, "org/tiny", {"master": {"ms.txt": b"ms"}}, source="modelscope")
    put_repo(store, "org/hf", {"main": {"a.txt": b"a"}, "master": {"b.txt": b"b"}})
    return StoreView(store)


def test_find_repo_takes_modelscope_first_and_master_aliases_main(view: StoreView) -> None:
    tiny = ms.find_repo(view, "models", "org", "tiny")
    assert tiny is not None and tiny.key.source == "modelscope"
    assert ms.find_repo(view, "datasets", "org", "tiny") is None
    assert ms.find_repo(view, "spaces", "org", "tiny") is None
    hf = view.repo("huggingface", "model", "org/tiny")
    assert hf is not None
    assert ms.commit_of(hf, "master") == hf.refs["main"].commit
    has_master = ms.find_repo(view, "models", "org", "hf")
    assert has_master is not None
    assert ms.commit_of(has_master, "master") == has_master.refs["master"].commit  # its own, no alias
    assert has_master.refs["master"].commit != has_master.refs["main"].commit
    assert ms.commit_of(has_master, "v9") is None


def test_list_entries_roots_recursion_and_pages(view: StoreView) -> None:
    repo = view.repo("huggingface", "model", "org/tiny")
    assert repo is not None
    commit = repo.at("main")
    assert commit is not None
    every = ms.list_entries(commit, "", recursive=True)
    assert every is not None
    paths = [e["Path"] for e in every]
    assert paths == sorted([*TINY_MAIN, "sub", "sub/dir", "extra"])
    top = ms.list_entries(commit, "", recursive=False)
    assert top is not None and [e["Path"] for e in top] == sorted(p for p in paths if "/" not in p)
    sub = ms.list_entries(commit, "sub", recursive=False)
    assert sub is not None and [(e["Path"], e["Type"]) for e in sub] == [("sub/dir", "tree")]
    assert ms.list_entries(commit, "nowhere", recursive=True) is None
    assert ms.list_entries(commit, "config.json", recursive=True) is None  # a file is not a folder
    assert ms.page(every, "2", "3") == every[3:6]
    assert ms.page(every, None, None) == every
    assert ms.page(every, "x", "3") is None
    assert ms.page(every, "99", "3") == []


def test_revision_map_lists_every_ref_as_a_branch(view: StoreView) -> None:
    repo = view.repo("huggingface", "model", "org/tiny")
    assert repo is not None
    rmap = ms.revision_map(repo)
    assert [b["Revision"] for b in rmap["Branches"]] == ["master", "main", "v1.0"]
    assert rmap["Branches"][0]["CommitId"] == repo.refs["main"].commit
    assert rmap["Branches"][0]["CreatedAt"] == 1795168800  # 2026-11-20T10:00:00Z
    assert rmap["Tags"] == []


def test_envelope_shape() -> None:
    body = json.loads(bytes(ms.not_found("Model a/b does not exist").body))
    assert body["Code"] == 404 and body["Success"] is False and body["Data"] is None
    assert body["Message"] == "Model a/b does not exist" and len(body["RequestId"]) == 32


def test_a_whole_file_goes_by_path_and_a_range_as_body(view: StoreView) -> None:
    url = "/api/v1/models/org/tiny/repo?Revision=master&FilePath=ms.txt"  # the ModelScope repo's file
    app = Starlette(routes=ms.routes(view))
    whole = call(app, "GET", url, pathsend=True)
    assert (whole.status, whole.body) == (200, b"") and whole.pathsend is not None
    assert Path(whole.pathsend).read_bytes() == b"ms"  # the blob itself: the server sends it, not Python
    ranged = call(app, "GET", url, {"Range": "bytes=1-"}, pathsend=True)
    assert (ranged.status, ranged.body, ranged.pathsend) == (206, b"s", None)
    missing = call(app, "GET", "/api/v1/models/org/tiny/repo?Revision=master&FilePath=nope", pathsend=True)
    assert missing.status == 404
