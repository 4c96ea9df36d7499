"""`mirror serve` over a store in a bucket, with and without `--redirect`.

In process (fast tier, the moto server of tests/s3server.py): with `redirect`, the resolve of an LFS file
(HF GET and HEAD, ModelScope's download route but for a request with a cookie) is a 302 to a presigned URL
of the blob carrying every header the 200 carries, a git file is answered directly, a missing blob is a 404 as without it, the
access log records the 302 and never the URL; over a folder `--redirect` is a usage error; over a bucket
the Hub's routes read the store off the event loop.

End to end (`mirror serve` in subprocesses over one bucket): huggingface_hub (with hf_xet and with
HF_HUB_DISABLE_XET) and modelscope download byte-identical trees through `--redirect` and through the
streaming server; a Range through the redirect is answered 206 by the object store.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from mirror import s3 as mirror_s3
from mirror.cli import main
from mirror.clock import SYSTEM
from mirror.s3 import parse_s3_url
from mirror.serve import hf, modelscope
from mirror.serve.app import create_app
from mirror.serve.audit import AccessLog
from mirror.serve.files import PRESIGNED_FOR, disposition
from mirror.serve.tokens import read_tokens
from mirror.serve.view import StoreView
from mirror.storage.base import ObjectStat, Versioned
from mirror.storage.s3 import S3Storage
from mirror.store import Store
from tests.asgi import Answer, call
from tests.conftest import TINY_MAIN, TINY_V1, SyntheticRepo, put_repo
from tests.roundtrip import fresh_env
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Bucket, S3Server
from tests.serving import Served, served
from tests.storages import OpaqueStorage
from tests.test_hub_modelscope import hexed, ms_env
from tests.test_hub_modelscope import run_client as run_ms_client
from tests.test_serve_hf import folder_files, hf_env, run_code
from tests.waiting import wait_until

WEIGHTS = "model.safetensors"  # an LFS file of TINY_MAIN
CONFIG = "config.json"  # a git file of it
BIG = bytes(range(256)) * (48 * 1024)  # 12 MiB: above huggingface_hub's 10 MiB download chunk
MS_FILES = {"configuration.json": b'{"framework": "pytorch"}\n', "pytorch_model.bin": bytes(range(256)) * 512}
SIGNED = ("X-Amz-Signature", "X-Amz-Credential", ACCESS_KEY, SECRET_KEY)  # what no log may hold


def bucket_store(bucket: S3Bucket, staging: Path) -> Store:
    """The store at s3://BUCKET/store, its staging (for put_repo's uploads) in `staging`."""
    where = parse_s3_url(bucket.url("store"))
    return Store(S3Storage(where, clock=SYSTEM, staging=staging), clock=SYSTEM)


@dataclass(frozen=True)
class Bucketed:
    store: Store
    url: str
    tiny: SyntheticRepo


@pytest.fixture
def bucketed(s3: S3Bucket, tmp_path: Path) -> Bucketed:
    store = bucket_store(s3, tmp_path / "staging")
    tiny = put_repo(store, "org/tiny", {"main": TINY_MAIN, "v1.0": TINY_V1})
    put_repo(store, "owner/ms", {"master": MS_FILES}, source="modelscope")
    return Bucketed(store, s3.url("store"), tiny)


def hub_app(store: Store, redirect: bool) -> Starlette:
    return Starlette(routes=hf.routes(StoreView(store), redirect=redirect))


def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as answer:
        return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()


def linked_headers(answer: Answer) -> dict[str, str]:
    """What a client reads of a resolve besides the body (the 302's own Location and body length aside)."""
    return {
        k: v
        for k, v in answer.headers.items()
        if k in ("etag", "x-repo-commit", "x-linked-etag", "x-linked-size", "accept-ranges")
    }


# --- in process --------------------------------------------------------------------------------------


def test_redirect_answers_an_lfs_file_with_a_302_carrying_the_200s_headers(bucketed: Bucketed) -> None:
    target = f"/org/tiny/resolve/main/{WEIGHTS}"
    streamed = call(hub_app(bucketed.store, redirect=False), "GET", target)
    assert streamed.status == 200 and streamed.body == TINY_MAIN[WEIGHTS]
    app = hub_app(bucketed.store, redirect=True)
    for method in ("GET", "HEAD"):
        moved = call(app, method, target)
        assert moved.status == 302, method
        # huggingface_hub reads X-Repo-Commit, X-Linked-Etag and X-Linked-Size from the 302 itself
        assert linked_headers(moved) == linked_headers(streamed)
        assert moved.headers["x-linked-size"] == str(len(TINY_MAIN[WEIGHTS]))
        assert moved.headers["x-linked-etag"] == f'"{sha256(TINY_MAIN[WEIGHTS]).hexdigest()}"'
        location = moved.headers["location"]
        assert location.startswith(f"{mirror_s3.endpoint()}/")
        assert f"X-Amz-Expires={PRESIGNED_FOR}" in location and SECRET_KEY not in location
        # the Hub's 302: a short text body, its own length (the file's size is X-Linked-Size)
        assert moved.headers["content-type"] == "text/plain; charset=utf-8"
        assert moved.headers["content-length"] == str(len(f"Found. Redirecting to {location}"))


def test_the_redirects_url_serves_the_blob_and_a_range_from_the_object_store(bucketed: Bucketed) -> None:
    moved = call(hub_app(bucketed.store, redirect=True), "GET", "/org/tiny/resolve/v1.0/sub/dir/weights.bin")
    location = moved.headers["location"]
    data = TINY_V1["sub/dir/weights.bin"]
    status, headers, body = fetch(location)
    assert (status, body) == (200, data)
    assert headers["content-disposition"] == 'inline; filename="weights.bin"'  # not the blob's sha256
    status, headers, body = fetch(location, Range="bytes=100-199")
    assert (status, headers["content-range"], body) == (206, f"bytes 100-199/{len(data)}", data[100:200])


def test_redirect_answers_a_git_file_directly(bucketed: Bucketed) -> None:
    app = hub_app(bucketed.store, redirect=True)
    got = call(app, "GET", f"/org/tiny/resolve/main/{CONFIG}")
    assert (got.status, got.body) == (200, TINY_MAIN[CONFIG])
    assert "location" not in got.headers and "x-linked-etag" not in got.headers
    head = call(app, "HEAD", f"/org/tiny/resolve/main/{CONFIG}", {"Range": "bytes=0-3"})
    assert (head.status, head.headers["content-length"]) == (206, "4")


def test_redirect_of_a_missing_blob_is_not_found_as_without_it(bucketed: Bucketed) -> None:
    bucketed.store.storage.delete(Store.blob_key(sha256(TINY_MAIN[WEIGHTS]).hexdigest()))
    for redirect in (True, False):
        got = call(hub_app(bucketed.store, redirect), "HEAD", f"/org/tiny/resolve/main/{WEIGHTS}")
        assert (got.status, got.headers["x-error-code"]) == (404, "EntryNotFound"), redirect
        assert "location" not in got.headers


def test_modelscope_downloads_redirect_lfs_files_but_send_git_files_and_a_cookies_bearer_its_file(
    bucketed: Bucketed,
) -> None:
    app = Starlette(routes=modelscope.routes(StoreView(bucketed.store), redirect=True))
    base = "/api/v1/models/owner/ms/repo?Revision=master&FilePath="
    moved = call(app, "GET", base + "pytorch_model.bin")
    assert moved.status == 302
    assert moved.headers["x-linked-etag"] == f'"{sha256(MS_FILES["pytorch_model.bin"]).hexdigest()}"'
    _, headers, body = fetch(moved.headers["location"])
    assert body == MS_FILES["pytorch_model.bin"]
    assert headers["content-disposition"] == 'attachment; filename="pytorch_model.bin"'  # as the 200's
    sent = call(app, "GET", base + "configuration.json")
    assert (sent.status, sent.body) == (200, MS_FILES["configuration.json"])
    # the client would carry its cookie (a token) to the object store: such a request is answered here
    kept = call(app, "GET", base + "pytorch_model.bin", {"Cookie": "m_session_id=TOKEN"})
    assert (kept.status, kept.body) == (200, MS_FILES["pytorch_model.bin"])


def test_the_access_log_records_the_302_and_never_the_presigned_url(
    bucketed: Bucketed, tmp_path: Path
) -> None:
    path = tmp_path / "access.jsonl"
    log = AccessLog(path)
    try:
        app = create_app(bucketed.url, clock=SYSTEM, access_log=log, redirect=True)
        locations = [
            call(app, m, f"/org/tiny/resolve/main/{WEIGHTS}").headers["location"] for m in ("GET", "HEAD")
        ]
    finally:
        log.close()
    text = path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(e["method"], e["path"], e["status"]) for e in lines] == [
        ("GET", WEIGHTS, 302),
        ("HEAD", WEIGHTS, 302),
    ]
    for secret in (*SIGNED, *locations, "X-Amz"):
        assert secret not in text


def test_with_tokens_the_redirect_is_only_given_to_a_tokens_bearer(
    bucketed: Bucketed, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("team:s3cr3t-token\n")
    app = create_app(bucketed.url, clock=SYSTEM, tokens=read_tokens(tokens), redirect=True)
    target = f"/org/tiny/resolve/main/{WEIGHTS}"
    assert call(app, "HEAD", target).status == 401
    moved = call(app, "HEAD", target, {"Authorization": "Bearer s3cr3t-token"})
    assert moved.status == 302 and "s3cr3t-token" not in moved.headers["location"]


def test_redirect_over_a_folder_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "store"
    put_repo(Store.at(folder, clock=SYSTEM), "org/tiny", {"main": TINY_V1})
    with pytest.raises(SystemExit) as done:
        main(["serve", "--store", str(folder), "--redirect", "--port", "1"])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert "--redirect needs a store in a bucket" in err and "s3://" in err and str(folder) in err


def test_a_redirects_disposition_names_the_file_whatever_its_characters() -> None:
    assert disposition("inline", "sub/dir/w.bin") == 'inline; filename="w.bin"'
    assert disposition("attachment", 'a "b";c.txt') == "attachment; filename*=UTF-8''a%20%22b%22%3Bc.txt"
    assert disposition("inline", "modèle.bin") == "inline; filename*=UTF-8''mod%C3%A8le.bin"


class Watched(OpaqueStorage):
    """A folder that does not say it is one (as a bucket), noting the threads that look into it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, clock=SYSTEM)
        self.threads: set[int] = set()

    def stat(self, key: str) -> ObjectStat | None:
        self.threads.add(threading.get_ident())
        return super().stat(key)

    def read(self, key: str, limit: int) -> Versioned | None:
        self.threads.add(threading.get_ident())
        return super().read(key, limit)


def test_over_a_bucket_the_hubs_routes_read_the_store_off_the_event_loop(tmp_path: Path) -> None:
    """Over a bucket a look is a request: answered in a worker thread, it holds up no other answer."""
    storage = Watched(tmp_path / "store")
    store = Store(storage, clock=SYSTEM)
    put_repo(store, "org/tiny", {"main": TINY_MAIN})
    app = hub_app(store, redirect=False)
    storage.threads.clear()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for method, target, body in (
        ("HEAD", f"/org/tiny/resolve/main/{CONFIG}", b""),
        ("GET", "/api/models/org/tiny", b""),
        ("GET", "/api/models/org/tiny/tree/main/sub", b""),
        ("POST", "/api/models/org/tiny/paths-info/main", b"paths=config.json&paths=sub"),
    ):
        answer = call(app, method, target, form if body else {}, body)
        assert answer.status == 200, (target, answer.body)
    assert storage.threads and threading.get_ident() not in storage.threads  # the loop runs in this one
    assert [e["path"] for e in answer.json()] == ["config.json", "sub"]


# --- end to end: real clients through `mirror serve` over a bucket -----------------------------------


@dataclass(frozen=True)
class Pair:
    """One bucket store served twice: `redirect` with --redirect, `streamed` without."""

    redirect: Served
    streamed: Served
    tiny: SyntheticRepo


def server_env(server: S3Server, home: Path) -> dict[str, str]:
    """A `mirror` subprocess's environment: the bucket's AWS_* settings, a HOME of its own."""
    return fresh_env(home, **server.env)


@contextmanager
def filled_bucket(server: S3Server, staging: Path) -> Iterator[tuple[str, Store, SyntheticRepo]]:
    """A new bucket of `server` with a store at s3://BUCKET/store holding org/tiny and the ModelScope repo
    owner/ms: its URL, the store and org/tiny. In the block, this process's AWS_* settings point at
    `server` (the `s3` fixture does that for one test; this is for a module's fixture)."""
    bucket = server.new_bucket()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in server.env.items():
            patch.setenv(name, value)
        mirror_s3.client.cache_clear()
        try:
            store = bucket_store(bucket, staging)
            tiny = put_repo(store, "org/tiny", {"main": TINY_MAIN, "v1.0": TINY_V1, "refs/pr/1": TINY_V1})
            put_repo(store, "owner/ms", {"master": MS_FILES}, source="modelscope")
            yield bucket.url("store"), store, tiny
        finally:
            mirror_s3.client.cache_clear()


@pytest.fixture(scope="module")
def pair(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("serve-s3")
    with filled_bucket(s3_server, root / "staging") as (url, store, tiny):
        put_repo(store, "org/big", {"main": {"big.bin": BIG, "README.md": b"# big\n"}})
    env = server_env(s3_server, root / "home")
    with (
        served(url, "--redirect", "--access-log", str(root / "redirect.jsonl"), env=env) as redirect,
        served(url, "--access-log", str(root / "streamed.jsonl"), env=env) as streamed,
    ):
        yield Pair(redirect, streamed, tiny)
    for server in (redirect, streamed):
        assert server.access_log is not None
        for secret in (*SIGNED, "X-Amz"):
            assert secret not in server.access_log.read_text() + server.stderr()


def logged(server: Served) -> list[dict[str, Any]]:
    assert server.access_log is not None
    return [json.loads(line) for line in server.access_log.read_text().splitlines()]


DOWNLOADS = """
import json
from huggingface_hub import snapshot_download, hf_hub_download
from huggingface_hub.utils._runtime import is_xet_available
print(json.dumps({
    "tiny": snapshot_download("org/tiny"),
    "pr": snapshot_download("org/tiny", revision="refs/pr/1"),
    "big": hf_hub_download("org/big", "big.bin"),
    "readme": hf_hub_download("org/big", "README.md"),
    "xet": is_xet_available(),
}))
"""


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["redirect", "streamed"])
@pytest.mark.parametrize("disable_xet", [False, True], ids=["hf_xet", "HF_HUB_DISABLE_XET"])
def test_huggingface_hub_downloads_byte_identical_files_through_the_redirect_or_the_stream(
    pair: Pair, tmp_path: Path, mode: str, disable_xet: bool
) -> None:
    server: Served = getattr(pair, mode)
    seen = len(logged(server))
    extra = {"HF_HUB_DISABLE_XET": "1"} if disable_xet else {}
    got = run_code(hf_env(server.url, tmp_path, **extra), DOWNLOADS)
    assert got["xet"] is not disable_xet
    tiny = Path(got["tiny"])
    assert tiny.name == pair.tiny.commits["main"]
    assert folder_files(tiny) == TINY_MAIN
    assert folder_files(Path(got["pr"])) == TINY_V1
    assert Path(got["big"]).read_bytes() == BIG
    assert Path(got["readme"]).read_bytes() == b"# big\n"

    def asked() -> list[tuple[str, str, int]]:
        return [(e["method"], e["path"], e["status"]) for e in logged(server)[seen:]]

    # a line is written once its answer is sent: wait for the last ones the clients' calls make
    last = ("GET", "README.md", 200) if mode == "redirect" else ("GET", "big.bin", 200)
    assert wait_until(lambda: last in asked())
    if mode == "redirect":  # the LFS file's bytes came from the object store, the git file's from here
        assert ("HEAD", "big.bin", 302) in asked() and ("GET", "big.bin", 200) not in asked()


@pytest.mark.e2e
def test_a_range_through_the_redirect_gets_206_from_the_object_store(pair: Pair, s3_server: S3Server) -> None:
    request = urllib.request.Request(
        pair.redirect.url + "/org/big/resolve/main/big.bin", headers={"Range": "bytes=5000000-5000099"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # urllib follows the 302 with the Range
        assert answer.status == 206
        assert answer.url.startswith(s3_server.endpoint + "/")
        assert answer.headers["Content-Range"] == f"bytes 5000000-5000099/{len(BIG)}"
        assert answer.read() == BIG[5000000:5000100]


MS_DOWNLOAD = """
out({"tree": tree(snapshot_download("owner/ms")), "one": open(model_file_download("owner/ms", "pytorch_model.bin"), "rb").read().hex()})
"""


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["redirect", "streamed"])
def test_modelscope_downloads_the_same_tree_through_the_redirect_or_the_stream(
    pair: Pair, tmp_path: Path, mode: str
) -> None:
    server: Served = getattr(pair, mode)
    seen = len(logged(server))
    run = run_ms_client(MS_DOWNLOAD, ms_env(server.url, tmp_path), timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.result == {"tree": hexed(MS_FILES), "one": MS_FILES["pytorch_model.bin"].hex()}
    statuses = {e["status"] for e in logged(server)[seen:] if e["path"] == "pytorch_model.bin"}
    assert statuses == ({302} if mode == "redirect" else {200})
