"""The Hugging Face routes of `mirror serve` in process (fast tier): the pure answers (git tree ids, pages,
refs, times) and the ASGI application called directly, as the server would call it: resolve with Range and
If-Range, encoded revisions and paths, the Hub's not-found answers, tree pages, paths-info, no Xet. The
real clients against the running server are in tests/test_serve_hf.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from mirror.cards import card_data
from mirror.clock import SYSTEM
from mirror.serve import hf
from mirror.serve.hf import answers
from mirror.serve.view import StoreView
from mirror.snapshot import FileRecord
from mirror.store import Store
from tests.asgi import Answer, call
from tests.conftest import TINY_MAIN, TINY_V1, SyntheticRepo, lfs_pointer, put_repo
from tests.storages import make_storage

# --- the pure answers -----------------------------------------------------------------------------


def record(path: str, oid: str) -> FileRecord:
    return FileRecord(path, 1, "0" * 64, oid, False)


# `git ls-tree -r -t HEAD` of a repo with these four files (one folder named like a file's prefix)
GIT_FILES = [
    record("a.txt", "975fbec8256d3e8a3797e7a3611380f27c49f4ac"),
    record("a/b", "b68025345d5301abad4d9ec9166f455243a0d746"),
    record("sub-x", "ea0c8a85cb7293feae2c9e151d1d395be59b61fa"),
    record("sub/dir/f", "587be6b4c3f93f93c489c0111bba5596147a26cb"),
]
GIT_TREES = {
    "": "84bc5f524f972b1d7a2a93cda88791a71f736505",
    "a": "f2961a0bc2b982157d8387a936708200f94ac04f",
    "sub": "56894139f288897151d1ddc660b81227b382c54f",
    "sub/dir": "a1dffc7a64c0b2d395484bf452e9aeb1da3a18f2",
}


def test_folder_oids_are_gits_tree_ids() -> None:
    assert answers.folder_oids(GIT_FILES) == GIT_TREES


def test_tree_lists_a_folder_or_everything_below_it() -> None:
    top = answers.tree(GIT_FILES, "", recursive=False)
    assert top is not None
    assert [(e.path, type(e).__name__) for e in top] == [
        ("a", "Folder"),
        ("a.txt", "FileRecord"),
        ("sub", "Folder"),
        ("sub-x", "FileRecord"),
    ]
    below = answers.tree(GIT_FILES, "sub", recursive=True)
    assert below is not None
    assert [e.path for e in below] == ["sub/dir", "sub/dir/f"]
    assert answers.tree(GIT_FILES, "nope", recursive=True) is None
    assert answers.tree(GIT_FILES, "a.txt", recursive=True) is None  # a file is no folder


def test_entries_at_answers_the_asked_paths_that_exist() -> None:
    found = answers.entries_at(GIT_FILES, ["sub/dir/", "nope", "a.txt", "a.txt"])
    assert [answers.entry_json(e) for e in found] == [
        {"type": "directory", "oid": GIT_TREES["sub/dir"], "size": 0, "path": "sub/dir"},
        {"type": "file", "oid": GIT_FILES[0].oid, "size": 1, "path": "a.txt"},
    ]


@pytest.mark.parametrize(
    ("count", "cursor", "size", "expected"),
    [
        (5, None, 2, (0, 2, "2")),
        (5, "2", 2, (2, 4, "4")),
        (5, "4", 2, (4, 5, None)),
        (4, "2", 2, (2, 4, None)),
        (0, None, 2, (0, 0, None)),
        (3, None, 1000, (0, 3, None)),
    ],
)
def test_page_slices_and_names_the_next_cursor(
    count: int, cursor: str | None, size: int, expected: tuple[int, int, str | None]
) -> None:
    assert answers.page(count, cursor, size) == expected


@pytest.mark.parametrize("cursor", ["-1", "6", "x", "", "02", " 2"])
def test_page_refuses_a_cursor_it_did_not_give(cursor: str) -> None:
    with pytest.raises(ValueError, match="invalid cursor"):
        answers.page(5, cursor, 2)


def test_hub_time_has_the_hubs_milliseconds() -> None:
    assert answers.hub_time("2026-11-20T10:00:00Z") == "2026-11-20T10:00:00.000Z"
    assert answers.hub_time("") is None
    assert answers.hub_time("yesterday") is None


CARD = b"""---
license: apache-2.0
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags:
- sentence-transformers
- 42
released: 2024-01-02
---
# A model
"""


def test_card_data_is_the_readmes_front_matter() -> None:
    assert card_data(CARD) == {
        "license": "apache-2.0",
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity",
        "tags": ["sentence-transformers", 42],
        "released": "2024-01-02",
    }
    assert card_data(b"# no metadata\n---\na: 1\n---\n") is None
    assert card_data(b"---\na: 1\n") is None  # never closed
    assert card_data(b"---\n- a list\n---\n") is None
    assert card_data(b"---\n? [a, b]\n: complex key\n---\n") is None


def test_card_data_refuses_a_billion_laughs() -> None:
    laughs = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in "bcdefgh":
        prev = chr(ord(level) - 1)
        laughs.append(f"{level}: &{level} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]")
    assert card_data(("---\n" + "\n".join(laughs) + "\n---\n").encode()) is None


# --- the application, called in process ------------------------------------------------------------


class Client:
    """The application, called in process (tests/asgi.py)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def __call__(
        self, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Answer:
        return call(self.app, method, target, headers, body)

    def get(self, target: str, **headers: str) -> Answer:
        return self("GET", target, {k.replace("_", "-"): v for k, v in headers.items()})


@dataclass(frozen=True)
class Served:
    store: Store
    client: Client
    tiny: SyntheticRepo
    data: SyntheticRepo


@pytest.fixture(params=["local", "opaque"])  # "s3": as "opaque" for the routes, a second a test slower
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Served:
    """The routes over a store in a folder, and over one that does not say it is (`tests.storages`): a
    local blob goes out by path, any other through the storage's ranged reads, with the same answers."""
    store = Store(make_storage(request.param, tmp_path / "store", request, SYSTEM), clock=SYSTEM)
    tiny = put_repo(store, "org/tiny", {"main": TINY_MAIN, "v1.0": TINY_V1, "refs/pr/1": TINY_V1})
    data = put_repo(store, "org/data", {"main": {"data/train.csv": b"a,b\n1,2\n"}}, repo_type="dataset")
    put_repo(store, "org/ms-only", {"master": {"config.json": b"{}"}}, source="modelscope")
    put_repo(store, "org/carded", {"main": {"README.md": CARD, "config.json": b"{}"}})
    put_repo(store, "org/space", {"main": {"app.py": b"print()"}}, repo_type="space")
    app = Starlette(routes=hf.routes(StoreView(store), page_size=3))
    return Served(store, Client(app), tiny, data)


XET = ("x-xet-hash", "x-xet-refresh-route", "x-xet-cas-url", "x-xet-access-token")


def assert_no_xet(answer: Answer) -> None:
    assert not [h for h in answer.headers if h in XET]
    assert "xet" not in answer.headers.get("link", "")
    assert b"xetHash" not in answer.body


def test_resolve_sends_the_file_with_the_headers_clients_read(served: Served) -> None:
    main = served.tiny.commits["main"]
    got = served.client.get("/org/tiny/resolve/main/config.json")
    assert got.status == 200
    assert got.body == TINY_MAIN["config.json"]
    rec = served.store.read_snapshot(served.tiny.key, main)
    assert rec is not None
    config = next(f for f in rec.files if f.path == "config.json")
    assert got.headers["etag"] == f'"{config.oid}"'
    assert got.headers["x-repo-commit"] == main
    assert got.headers["content-length"] == str(len(TINY_MAIN["config.json"]))
    assert got.headers["accept-ranges"] == "bytes"
    assert "x-linked-etag" not in got.headers
    assert_no_xet(got)


def test_resolve_of_an_lfs_file_links_its_sha256_and_size(served: Served) -> None:
    data = TINY_MAIN["model.safetensors"]
    head = served.client("HEAD", "/org/tiny/resolve/main/model.safetensors")
    assert (head.status, head.body) == (200, b"")
    sha = sha256(data).hexdigest()
    assert head.headers["etag"] == head.headers["x-linked-etag"] == f'"{sha}"'
    assert head.headers["x-linked-size"] == head.headers["content-length"] == str(len(data))
    assert_no_xet(head)


def test_resolve_by_tag_commit_encoded_pr_and_nested_paths(served: Served) -> None:
    v1 = served.tiny.commits["v1.0"]
    for target in (
        "/org/tiny/resolve/v1.0/config.json",
        f"/org/tiny/resolve/{v1}/config.json",
        "/org/tiny/resolve/refs%2Fpr%2F1/config.json",
        "/org/tiny/resolve/refs/pr/1/config.json",
    ):
        got = served.client.get(target)
        assert (got.status, got.body, got.headers["x-repo-commit"]) == (200, TINY_V1["config.json"], v1), (
            target
        )
    for target in (
        "/org/tiny/resolve/main/sub/dir/weights.bin",
        "/org/tiny/resolve/main/sub%2Fdir/weights.bin",
    ):
        assert served.client.get(target).body == TINY_MAIN["sub/dir/weights.bin"]
    got = served.client.get("/datasets/org/data/resolve/main/data/train.csv")
    assert (got.status, got.body) == (200, b"a,b\n1,2\n")
    assert served.client.get("/spaces/org/space/resolve/main/app.py").body == b"print()"
    assert served.client.get("/api/spaces/org/space").json()["siblings"] == [{"rfilename": "app.py"}]
    assert error(served.client.get("/org/space/resolve/main/app.py"))[1] == "RepoNotFound"  # not a model


def test_range_requests_get_206_and_exactly_those_bytes(served: Served) -> None:
    data = TINY_MAIN["sub/dir/weights.bin"]
    url = "/org/tiny/resolve/main/sub/dir/weights.bin"
    size = len(data)
    pieces = []
    for start in range(0, size, 4000):  # a download resumed twice, byte for byte
        got = served.client.get(url, range=f"bytes={start}-")
        assert got.status == 206
        assert got.headers["content-range"] == f"bytes {start}-{size - 1}/{size}"
        assert got.headers["content-length"] == str(size - start)
        pieces.append(got.body[:4000])
    assert b"".join(pieces) == data
    closed = served.client.get(url, range="bytes=10-19")
    assert (closed.status, closed.body, closed.headers["content-range"]) == (
        206,
        data[10:20],
        f"bytes 10-19/{size}",
    )
    suffix = served.client.get(url, range="bytes=-5")
    assert (suffix.status, suffix.body) == (206, data[-5:])
    past = served.client.get(url, range=f"bytes={size}-")
    assert past.status == 416
    assert past.headers["content-range"] == f"bytes */{size}"


def test_if_range_serves_the_range_only_for_the_same_etag(served: Served) -> None:
    url = "/org/tiny/resolve/main/config.json"
    etag = served.client.get(url).headers["etag"]
    same = served.client.get(url, range="bytes=5-", if_range=etag)
    assert (same.status, same.body) == (206, TINY_MAIN["config.json"][5:])
    other = served.client.get(url, range="bytes=5-", if_range='"0000000000000000000000000000000000000000"')
    assert (other.status, other.body) == (200, TINY_MAIN["config.json"])


def error(answer: Answer) -> tuple[int, str | None, str]:
    return answer.status, answer.headers.get("x-error-code"), answer.json()["error"]


def test_not_found_answers_carry_the_hubs_error_codes(served: Served) -> None:
    main = served.tiny.commits["main"]
    get = served.client.get
    assert error(get("/org/nope/resolve/main/config.json")) == (404, "RepoNotFound", "Repository not found")
    assert error(get("/nope/resolve/main/config.json"))[1] == "RepoNotFound"
    assert error(get("/org/tiny/resolve/nope/config.json")) == (
        404,
        "RevisionNotFound",
        "Invalid rev id: nope",
    )
    missing = get("/org/tiny/resolve/main/nope.json")
    assert error(missing) == (404, "EntryNotFound", "Entry not found")
    assert missing.headers["x-repo-commit"] == main  # the client caches the miss under the commit
    assert error(get("/org/tiny/resolve/v1.0/extra/notes.txt"))[1] == "EntryNotFound"
    assert error(get("/api/models/org/nope"))[1] == "RepoNotFound"
    assert error(get("/api/models/org/tiny/revision/nope")) == (
        404,
        "RevisionNotFound",
        "Invalid rev id: nope",
    )
    assert error(get("/api/models/org/tiny/tree/main/nope"))[1] == "EntryNotFound"
    assert error(get("/api/datasets/org/tiny"))[1] == "RepoNotFound"  # a model, not a dataset
    assert error(get("/api/spaces/org/tiny"))[1] == "RepoNotFound"
    assert error(get("/api/models/org/ms-only/revision/master"))[1] == "RepoNotFound"  # ModelScope's own


def test_a_revision_name_of_any_bytes_is_answered_not_found(served: Served) -> None:
    for name, shown in (("caf%C3%A9", "caf%C3%A9"), ("%FF", "%EF%BF%BD"), ("a%09b", "a%09b")):
        got = served.client.get(f"/org/tiny/resolve/{name}/config.json")
        assert error(got) == (404, "RevisionNotFound", f"Invalid rev id: {shown}")
    split = served.client.get("/org/tiny/resolve/a%0D%0AX-Evil:%201/config.json")
    assert split.status == 404
    assert "x-evil" not in split.headers


def test_xet_read_token_and_unknown_routes_are_the_hubs_404(served: Served) -> None:
    for target in ("/api/models/org/tiny/xet-read-token/main", "/api/models/org/tiny/commits/main"):
        assert error(served.client.get(target)) == (404, None, "Not Found")


def test_a_file_whose_blob_is_gone_is_not_served_nor_listed(served: Served) -> None:
    sha = sha256(TINY_MAIN["tokenizer.json"]).hexdigest()
    served.store.storage.delete(Store.blob_key(sha))
    assert error(served.client.get("/org/tiny/resolve/main/tokenizer.json"))[1] == "EntryNotFound"
    siblings = served.client.get("/api/models/org/tiny").json()["siblings"]
    assert "tokenizer.json" not in [s["rfilename"] for s in siblings]


def test_repo_info_names_the_commit_and_its_files(served: Served) -> None:
    info = served.client.get("/api/models/org/tiny/revision/v1.0?blobs=true").json()
    assert info["id"] == info["modelId"] == "org/tiny"
    assert info["sha"] == served.tiny.commits["v1.0"]
    assert info["lastModified"] == "2026-11-20T10:00:00.000Z"
    assert (info["private"], info["gated"], info["disabled"]) == (False, False, False)
    by_name = {s["rfilename"]: s for s in info["siblings"]}
    assert sorted(by_name) == sorted(TINY_V1)
    weights = by_name["model.safetensors"]
    data = TINY_V1["model.safetensors"]
    pointer = len(lfs_pointer(data))
    assert weights["lfs"] == {"sha256": sha256(data).hexdigest(), "size": len(data), "pointerSize": pointer}
    assert "lfs" not in by_name["config.json"]
    plain = served.client.get("/api/models/org/tiny").json()
    assert plain["sha"] == served.tiny.commits["main"]
    assert plain["siblings"][0] == {"rfilename": "README.md"}
    assert_no_xet(served.client.get("/api/models/org/tiny?blobs=true"))
    carded = served.client.get("/api/models/org/carded").json()
    assert carded["cardData"] == card_data(CARD)
    assert carded["tags"] == ["sentence-transformers"]
    assert (carded["pipeline_tag"], carded["library_name"]) == (
        "sentence-similarity",
        "sentence-transformers",
    )
    assert "cardData" not in plain  # a README without metadata
    dataset = served.client.get("/api/datasets/org/data/revision/main").json()
    assert (dataset["id"], "modelId" in dataset) == ("org/data", False)


def test_tree_pages_link_absolute_urls_from_the_host(served: Served) -> None:
    paths: list[str] = []
    target = "/api/models/org/tiny/tree/main?recursive=True&expand=False"
    pages = 0
    while target:
        got = served.client.get(target)
        assert got.status == 200
        assert got.headers["x-repo-commit"] == served.tiny.commits["main"]
        assert_no_xet(got)
        paths += [e["path"] for e in got.json()]
        link = got.headers.get("link")
        pages += 1
        if link is None:
            break
        url, _, rel = link.partition(">; ")
        assert rel == 'rel="next"'
        assert url.startswith("<http://hub.test:8088/api/models/org/tiny/tree/main?")
        target = url.removeprefix("<http://hub.test:8088")
        assert "recursive=True" in target
    expected_files = sorted(TINY_MAIN)
    assert pages == 3  # 9 entries, 3 a page
    assert sorted(paths) == sorted([*expected_files, "extra", "sub", "sub/dir"])
    first = "/api/models/org/tiny/tree/main?recursive=True"
    behind = served.client.get(first, x_forwarded_proto="https").headers["link"]  # a TLS proxy in front
    assert behind.startswith("<https://hub.test:8088/api/models/org/tiny/tree/main?")
    for cursor in ("zz", "%E4%B8%AD"):
        assert error(served.client.get(f"/api/models/org/tiny/tree/main?cursor={cursor}")) == (
            400,
            None,
            "Invalid cursor",
        )


def test_tree_of_a_folder_named_in_one_encoded_segment(served: Served) -> None:
    for target in ("/api/models/org/tiny/tree/main/sub%2Fdir", "/api/models/org/tiny/tree/main/sub/dir"):
        entries = served.client.get(target).json()
        assert [e["path"] for e in entries] == ["sub/dir/weights.bin"]
        assert entries[0]["lfs"]["oid"] == sha256(TINY_MAIN["sub/dir/weights.bin"]).hexdigest()
    pr = served.client.get("/api/models/org/tiny/tree/refs%2Fpr%2F1")
    assert pr.headers["x-repo-commit"] == served.tiny.commits["refs/pr/1"]


def test_paths_info_takes_a_form_or_json(served: Served) -> None:
    form = served.client(
        "POST",
        "/api/models/org/tiny/paths-info/main",
        {"content-type": "application/x-www-form-urlencoded"},
        b"paths=config.json&paths=sub&paths=nope&expand=False",
    )
    assert [(e["type"], e["path"]) for e in form.json()] == [("file", "config.json"), ("directory", "sub")]
    body = json.dumps({"paths": ["model.safetensors"]}).encode()
    as_json = served.client(
        "POST", "/api/models/org/tiny/paths-info/v1.0", {"content-type": "application/json"}, body
    )
    assert [e["path"] for e in as_json.json()] == ["model.safetensors"]
    assert served.client.get("/api/models/org/tiny/paths-info/main").status == 404  # POST only


def test_refs_list_every_name_as_a_branch_and_prs_apart(served: Served) -> None:
    refs = served.client.get("/api/models/org/tiny/refs").json()
    assert [b["name"] for b in refs["branches"]] == ["main", "v1.0"]
    assert refs["branches"][1] == {
        "name": "v1.0",
        "ref": "refs/heads/v1.0",
        "targetCommit": served.tiny.commits["v1.0"],
    }
    assert refs["pullRequests"] == [
        {"name": "refs/pr/1", "ref": "refs/pr/1", "targetCommit": served.tiny.commits["refs/pr/1"]}
    ]
    assert (refs["tags"], refs["converts"]) == ([], [])


def test_a_repo_written_while_serving_is_answered_next(served: Served) -> None:
    assert served.client.get("/api/models/org/late").status == 404
    late = put_repo(served.store, "org/late", {"main": {"config.json": b"{}"}})
    assert served.client.get("/api/models/org/late").json()["sha"] == late.commits["main"]
    put_repo(served.store, "org/late", {"v2": {"config.json": b'{"v": 2}'}})
    assert served.client.get("/org/late/resolve/v2/config.json").body == b'{"v": 2}'


def test_the_access_log_is_told_repo_revision_and_path(served: Served) -> None:
    def noted(target: str) -> tuple[Any, ...]:
        state = served.client.get(target).state
        return state.get("repo"), state.get("revision"), state.get("path")

    assert noted("/org/tiny/resolve/refs%2Fpr%2F1/sub/dir/weights.bin") == (
        "huggingface:org/tiny",
        "refs/pr/1",
        "sub/dir/weights.bin",
    )
    assert noted("/datasets/org/data/resolve/main/data/train.csv") == (
        "huggingface:dataset:org/data",
        "main",
        "data/train.csv",
    )
    assert noted("/api/models/org/tiny/tree/v1.0/sub") == ("huggingface:org/tiny", "v1.0", "sub")
    assert noted("/api/models/org/tiny/revision/nope") == ("huggingface:org/tiny", "nope", None)
    assert noted("/org/nope/resolve/main/config.json") == ("org/nope", None, None)
