"""The real Hugging Face clients against `mirror serve` (end-to-end): huggingface_hub with and without Xet,
the `hf` CLI (download, cache verify), transformers, sentence-transformers and datasets, each in a
subprocess with a fresh HF_HOME and `HF_ENDPOINT` at one server shared by the module; a client killed
mid-download that resumes with Range, and huggingface_hub resuming with Range when its connection is cut
(through a loopback proxy); a repo written while serving; not-found answers the clients turn into their
own errors; and the headers compared with the loopback test hub's for the same repo."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mirror.clock import SYSTEM
from mirror.store import Store
from tests.conftest import TINY_MAIN, TINY_V1, SyntheticRepo, put_repo
from tests.hub import HubFile, LoopbackHub
from tests.roundtrip import minilm_folder
from tests.serving import Served, served

pytestmark = pytest.mark.e2e

CLIENT_TIMEOUT = 600  # seconds: a client that hangs fails the test instead of hanging it
BIG = bytes(range(256)) * (32 * 1024)  # 8 MiB, for the download killed and resumed
HUGE = bytes(range(255, -1, -1)) * (48 * 1024)  # 12 MiB: above huggingface_hub's 10 MiB download chunk
CUT_AFTER = 11 << 20  # bytes of its answer before huggingface_hub's connection is cut
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MANY = 1001  # files in org/many: its tree takes two pages

MAKE_MODELS = r'''
import sys
from pathlib import Path
import torch
from transformers import BertConfig, BertModel

out = Path(sys.argv[1])
torch.manual_seed(0)
config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=32)
BertModel(config).save_pretrained(out / "bert")

code = out / "code"
code.mkdir()
(code / "configuration_echo.py").write_text("""
from transformers import PretrainedConfig

class EchoConfig(PretrainedConfig):
    model_type = "echo"

    def __init__(self, width=4, **kwargs):
        self.width = width
        super().__init__(**kwargs)
""")
(code / "modeling_echo.py").write_text("""
import torch
from transformers import PreTrainedModel
from .configuration_echo import EchoConfig

class EchoModel(PreTrainedModel):
    config_class = EchoConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.width, config.width)
        self.post_init()

    def forward(self, x):
        return self.proj(x)
""")
(code / "__init__.py").write_text("")
sys.path.insert(0, str(out))
from code.configuration_echo import EchoConfig
from code.modeling_echo import EchoModel
EchoConfig.register_for_auto_class()
EchoModel.register_for_auto_class("AutoModel")
EchoModel(EchoConfig(width=4)).save_pretrained(out / "remote")
'''


def folder_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def parquet_bytes(rows: Mapping[str, list[Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.table(dict(rows)), out)
    return out.getvalue()


@dataclass(frozen=True)
class Fleet:
    store: Store
    server: Served
    made: Path  # the models made for the test: bert/, remote/
    tiny: SyntheticRepo
    bert: SyntheticRepo
    big: SyntheticRepo

    def logged(self) -> list[dict[str, Any]]:
        """The server's access log so far."""
        assert self.server.access_log is not None
        text = self.server.access_log.read_text() if self.server.access_log.exists() else ""
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    made = root / "made"
    subprocess.run([sys.executable, "-c", MAKE_MODELS, str(made)], check=True, timeout=CLIENT_TIMEOUT)
    store = Store.at(root / "store", clock=SYSTEM)
    tiny = put_repo(store, "org/tiny", {"main": TINY_MAIN, "v1.0": TINY_V1, "refs/pr/1": TINY_V1})
    bert_files = folder_files(made / "bert")
    tagged = {
        **bert_files,
        "config.json": bert_files["config.json"].replace(b"{", b'{"mirror_revision": "v1",', 1),
    }
    bert = put_repo(store, "org/bert-tiny", {"main": bert_files, "v1": tagged})
    put_repo(store, "org/remote-echo", {"main": folder_files(made / "remote")})
    put_repo(store, MINILM, {"main": folder_files(minilm_folder())})
    big = put_repo(store, "org/big", {"main": {"big.bin": BIG, "README.md": b"# big\n"}})
    put_repo(store, "org/huge", {"main": {"huge.bin": HUGE}})
    put_repo(store, "org/many", {"main": {f"f/{i:04}.txt": b"%d" % i for i in range(MANY)}})
    rows = {"text": ["a", "b", "c"], "label": [0, 1, 0]}
    csv = b"text,label\na,0\nb,1\nc,0\n"
    jsonl = b"".join(
        json.dumps({"text": t, "label": n}).encode() + b"\n" for t, n in zip(*rows.values(), strict=True)
    )
    for name, files in {
        "org/ds-parquet": {"data/train-00000-of-00001.parquet": parquet_bytes(rows)},
        "org/ds-csv": {"data/train.csv": csv, "README.md": b"# csv\n"},
        "org/ds-json": {"data/train.jsonl": jsonl},
    }.items():
        put_repo(store, name, {"main": files}, repo_type="dataset")
    with served(store.local_root, "--access-log", str(root / "access.log")) as server:
        yield Fleet(store, server, made, tiny, bert, big)


_runs = itertools.count()


def client_env(fleet: Fleet, tmp_path: Path, **extra: str) -> dict[str, str]:
    return hf_env(fleet.server.url, tmp_path, **extra)


def hf_env(endpoint: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of one client run: a fresh HOME and HF_HOME, `endpoint` as HF_ENDPOINT, online."""
    home = tmp_path / f"client-{next(_runs)}"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HOME=str(home),
        HF_HOME=str(home / "hf"),
        HF_ENDPOINT=endpoint,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
    )
    env.update(extra)
    return env


def run_client(fleet: Fleet, tmp_path: Path, code: str, *args: str, **extra: str) -> Any:
    """Run `code` (with `args` in sys.argv) in a fresh Python with a fresh HF_HOME and the environment
    `extra`; what it prints last, as JSON."""
    return run_code(client_env(fleet, tmp_path, **extra), code, *args)


def run_code(env: dict[str, str], code: str, *args: str) -> Any:
    """Run `code` (with `args` in sys.argv) in a fresh Python with the environment `env`; what it prints
    last, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT
    )
    assert done.returncode == 0, f"client failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def hf_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "huggingface_hub.cli.hf", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)


DOWNLOADS = """
import json
from huggingface_hub import HfApi, snapshot_download, hf_hub_download
from huggingface_hub.utils._runtime import is_xet_available
tiny = snapshot_download("org/tiny")
pr = snapshot_download("org/tiny", revision="refs/pr/1")
big = hf_hub_download("org/big", "big.bin")
many = [e.path for e in HfApi().list_repo_tree("org/many", recursive=True)]
print(json.dumps({"tiny": tiny, "pr": pr, "big": big, "many": many, "xet": is_xet_available()}))
"""


@pytest.mark.parametrize("disable_xet", [False, True], ids=["hf_xet", "HF_HUB_DISABLE_XET"])
def test_snapshot_and_file_downloads_land_byte_identical_over_plain_http(
    fleet: Fleet, tmp_path: Path, disable_xet: bool
) -> None:
    extra = {"HF_HUB_DISABLE_XET": "1"} if disable_xet else {}
    seen = fleet.logged()
    got = run_client(fleet, tmp_path, DOWNLOADS, **extra)
    logged = fleet.logged()[len(seen) :]
    assert got["xet"] is not disable_xet  # hf_xet is installed: the client would use it if told to
    tiny = Path(got["tiny"])
    assert tiny.name == fleet.tiny.commits["main"]
    assert folder_files(tiny) == TINY_MAIN
    assert folder_files(Path(got["pr"])) == TINY_V1
    assert Path(got["big"]).read_bytes() == BIG
    assert not [line for line in logged if "xet" in line["target"]]
    noted = [
        (line["method"], line["repo"], line["revision"], line["path"], line["status"]) for line in logged
    ]
    assert ("GET", "huggingface:org/big", "main", "big.bin", 200) in noted
    assert ("GET", "huggingface:org/tiny", "refs/pr/1", None, 200) in noted  # the revision, as one segment
    tree = f"/api/models/org/tiny/tree/{fleet.tiny.commits['main']}"
    assert [line["status"] for line in logged if line["target"].startswith(tree)] == [200]
    assert sorted(got["many"]) == ["f", *(f"f/{i:04}.txt" for i in range(MANY))]
    pages = [line["target"] for line in logged if line["target"].startswith("/api/models/org/many/tree/main")]
    assert len(pages) == 2 and "cursor=" in pages[1]  # the second page by its Link


def test_hf_download_and_cache_verify_pass_then_catch_a_corrupted_file(fleet: Fleet, tmp_path: Path) -> None:
    env = client_env(fleet, tmp_path)
    done = hf_cli(env, "download", "org/tiny", "--revision", "v1.0", "--quiet")
    assert done.returncode == 0, done.stderr
    snapshot = Path(done.stdout.strip().splitlines()[-1])
    assert folder_files(snapshot) == TINY_V1
    verified = hf_cli(env, "cache", "verify", "org/tiny", "--revision", "v1.0")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    config = (snapshot / "config.json").resolve()  # the blob in the cache
    data = bytearray(config.read_bytes())
    data[0] ^= 0xFF
    config.write_bytes(bytes(data))
    caught = hf_cli(env, "cache", "verify", "org/tiny", "--revision", "v1.0")
    assert caught.returncode != 0
    assert "config.json" in caught.stdout + caught.stderr


TRANSFORMERS = """
import json, sys, torch
from transformers import AutoModel
local = AutoModel.from_pretrained(sys.argv[1] + "/bert")
main = AutoModel.from_pretrained("org/bert-tiny")
tag = AutoModel.from_pretrained("org/bert-tiny", revision="v1")
pinned = AutoModel.from_pretrained("org/bert-tiny", revision=sys.argv[2])
remote = AutoModel.from_pretrained("org/remote-echo", trust_remote_code=True)
same = all(
    torch.equal(a, b)
    for m in (main, tag, pinned)
    for a, b in zip(local.state_dict().values(), m.state_dict().values(), strict=True)
)
print(json.dumps({
    "same": same,
    "tag": getattr(tag.config, "mirror_revision", None),
    "main": getattr(main.config, "mirror_revision", None),
    "pinned": getattr(pinned.config, "mirror_revision", None),
    "remote": type(remote).__name__,
    "remote_out": list(remote(torch.ones(1, 4)).shape),
}))
"""


def test_transformers_loads_by_name_tag_commit_and_remote_code(fleet: Fleet, tmp_path: Path) -> None:
    got = run_client(fleet, tmp_path, TRANSFORMERS, str(fleet.made), fleet.bert.commits["v1"])
    assert got["same"] is True
    assert (got["main"], got["tag"], got["pinned"]) == (None, "v1", "v1")
    assert got["remote"] == "EchoModel"
    assert got["remote_out"] == [1, 4]


SENTENCE_TRANSFORMERS = """
import json, sys
from sentence_transformers import SentenceTransformer
served = SentenceTransformer(sys.argv[2], device="cpu").encode(["a mirror behind the air gap"])
local = SentenceTransformer(sys.argv[1], device="cpu").encode(["a mirror behind the air gap"])
print(json.dumps({"shape": list(served.shape), "diff": float(abs(served - local).max())}))
"""


def test_sentence_transformers_loads_by_name(fleet: Fleet, tmp_path: Path) -> None:
    got = run_client(fleet, tmp_path, SENTENCE_TRANSFORMERS, str(minilm_folder()), MINILM)
    assert got["shape"] == [1, 384]
    assert got["diff"] == 0.0


DATASETS = """
import json
import datasets
out = {}
for name in ("org/ds-parquet", "org/ds-csv", "org/ds-json"):
    train = datasets.load_dataset(name, split="train")
    out[name] = [list(train["text"]), list(train["label"])]
print(json.dumps(out))
"""


def test_datasets_loads_parquet_csv_and_json_repos(fleet: Fleet, tmp_path: Path) -> None:
    got = run_client(fleet, tmp_path, DATASETS)
    expected = [["a", "b", "c"], [0, 1, 0]]
    assert got == {"org/ds-parquet": expected, "org/ds-csv": expected, "org/ds-json": expected}


SLOW_DOWNLOAD = """
import sys, time, urllib.request
with urllib.request.urlopen(sys.argv[1]) as answer, open(sys.argv[2], "wb") as out:
    while chunk := answer.read(64 * 1024):
        out.write(chunk)
        out.flush()
        time.sleep(0.02)
"""


def test_a_download_killed_midway_resumes_with_range(fleet: Fleet, tmp_path: Path) -> None:
    """A slow download is killed partway through a file; `curl -C -` asks for the rest with Range, gets 206
    and exactly the missing bytes, and the file is whole."""
    part = tmp_path / "big.bin"
    url = f"{fleet.server.url}/org/big/resolve/main/big.bin"
    slow = subprocess.Popen([sys.executable, "-c", SLOW_DOWNLOAD, url, str(part)])
    try:
        deadline = time.monotonic() + 60
        while (not part.exists() or part.stat().st_size < 1 << 20) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.wait()
    have = part.stat().st_size
    assert 0 < have < len(BIG)
    resumed = subprocess.run(
        ["curl", "-sS", "-C", "-", "-o", str(part), "-w", "%{http_code} %{size_download}", url],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        check=True,
    )
    assert resumed.stdout.split() == ["206", str(len(BIG) - have)]
    assert part.read_bytes() == BIG


class CuttingProxy:
    """A loopback TCP proxy in front of the server that cuts the first connection carrying a GET of a
    /resolve/ URL once `cut_after` bytes of its answer have passed (both sockets closed, as a network
    failure would), and forwards everything else; it keeps the head of every request it forwards."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.upstream_port, self.cut_after = upstream_port, cut_after
        self.heads: list[bytes] = []
        self.armed_once = False
        self.cut = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            armed = threading.Event()
            threading.Thread(target=self.requests, args=(client, server, armed), daemon=True).start()
            threading.Thread(target=self.answers, args=(server, client, armed), daemon=True).start()

    def requests(self, client: socket.socket, server: socket.socket, armed: threading.Event) -> None:
        data = b""
        while chunk := received(client):
            data += chunk
            *heads, data = data.split(b"\r\n\r\n")  # the clients' requests here have no body
            with self.lock:
                self.heads += heads
                if not self.armed_once and any(h.startswith(b"GET ") and b"/resolve/" in h for h in heads):
                    self.armed_once = True
                    armed.set()  # before the request goes on: its answer is counted from its first byte
            server.sendall(chunk)
        closed(client, server)

    def answers(self, server: socket.socket, client: socket.socket, armed: threading.Event) -> None:
        passed = 0
        while chunk := received(server):
            passed += len(chunk) if armed.is_set() else 0
            if passed > self.cut_after:
                self.cut.set()
                break
            client.sendall(chunk)
        closed(client, server)


def received(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except OSError:
        return b""


def closed(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


RESUMING = """
import hashlib, json
from huggingface_hub import hf_hub_download
print(json.dumps(hashlib.sha256(open(hf_hub_download("org/huge", "huge.bin"), "rb").read()).hexdigest()))
"""


@pytest.mark.parametrize("disable_xet", [False, True], ids=["hf_xet", "HF_HUB_DISABLE_XET"])
def test_huggingface_hub_cut_off_midway_resumes_with_range(
    fleet: Fleet, tmp_path: Path, disable_xet: bool
) -> None:
    """huggingface_hub's `http_get` asks for the rest with `Range: bytes=N-` when the connection breaks
    during the body; the server answers 206 with the missing bytes and the file lands whole. The client
    counts what it has in whole chunks of 10 MiB (`DOWNLOAD_CHUNK_SIZE`), so a cut before the first
    chunk would start the file again without Range: the file is 12 MiB, cut after 11."""
    proxy = CuttingProxy(fleet.server.port, CUT_AFTER)
    seen = fleet.logged()
    try:
        extra = {"HF_HUB_DISABLE_XET": "1"} if disable_xet else {}
        got = run_client(fleet, tmp_path, RESUMING, HF_ENDPOINT=proxy.url, **extra)
    finally:
        proxy.close()
    assert got == hashlib.sha256(HUGE).hexdigest() and proxy.cut.is_set()
    gets = [h.decode().lower() for h in proxy.heads if h.startswith(b"GET ") and b"/huge.bin" in h]
    assert len(gets) == 2 and "range:" not in gets[0]
    (asked,) = [line for line in gets[1].split("\r\n") if line.startswith("range:")]
    have = int(asked.removeprefix("range: bytes=").removesuffix("-"))
    assert 0 < have <= CUT_AFTER
    logged = [
        (e["path"], e["status"], e["bytes"]) for e in fleet.logged()[len(seen) :] if e["method"] == "GET"
    ]
    assert logged[-1] == ("huge.bin", 206, len(HUGE) - have)


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_a_repo_written_while_serving_appears_on_the_next_request(fleet: Fleet, tmp_path: Path) -> None:
    url = fleet.server.url
    assert get(f"{url}/api/models/org/late")[0] == 404
    late = put_repo(fleet.store, "org/late", {"main": {"config.json": b'{"late": true}'}})
    status, _, body = get(f"{url}/api/models/org/late")
    assert (status, json.loads(body)["sha"]) == (200, late.commits["main"])
    code = "import json; from huggingface_hub import hf_hub_download as d; print(json.dumps(d('org/late', 'config.json')))"
    assert Path(run_client(fleet, tmp_path, code)).read_bytes() == b'{"late": true}'


NOT_FOUND = """
import json
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
calls = {
    "file of a missing repo": lambda: hf_hub_download("org/nope", "config.json"),
    "snapshot of a missing repo": lambda: snapshot_download("org/nope"),
    "info of a missing dataset": lambda: HfApi().dataset_info("org/tiny"),
    "missing revision": lambda: hf_hub_download("org/tiny", "config.json", revision="v9"),
    "snapshot of a missing revision": lambda: snapshot_download("org/tiny", revision="v9"),
    "missing file": lambda: hf_hub_download("org/tiny", "nope.json"),
    "missing folder": lambda: list(HfApi().list_repo_tree("org/tiny", path_in_repo="nope")),
}
out = {}
for name, call in calls.items():
    try:
        call()
        out[name] = None
    except Exception as e:
        out[name] = [c.__name__ for c in type(e).__mro__]
print(json.dumps(out))
"""


def test_not_found_answers_become_the_clients_own_errors(fleet: Fleet, tmp_path: Path) -> None:
    got = run_client(fleet, tmp_path, NOT_FOUND)
    expected = {
        "file of a missing repo": "RepositoryNotFoundError",
        "snapshot of a missing repo": "RepositoryNotFoundError",
        "info of a missing dataset": "RepositoryNotFoundError",
        "missing revision": "RevisionNotFoundError",
        "snapshot of a missing revision": "RevisionNotFoundError",
        "missing file": "EntryNotFoundError",
        "missing folder": "EntryNotFoundError",
    }
    for name, error in expected.items():
        assert got[name] is not None and error in got[name], (name, got[name])


CLIENT_HEADERS = ("etag", "x-linked-etag", "x-linked-size", "content-length", "accept-ranges")


def test_answers_match_the_loopback_hubs_for_the_same_repo(fleet: Fleet) -> None:
    """tests/hub.py speaks the Hub's protocol to the same clients: for the same files, the mirror sends the
    same headers clients read, the same tree entries and siblings, and the same not-found codes."""
    with LoopbackHub() as hub:
        hub.add_commit("org/tiny", [HubFile(p, data=d) for p, d in TINY_MAIN.items()])
        ours, theirs = fleet.server.url, hub.url
        for path in TINY_MAIN:
            for method in ("HEAD", "GET"):
                a, b = (
                    get(f"{ours}/org/tiny/resolve/main/{path}", method),
                    get(f"{theirs}/org/tiny/resolve/main/{path}", method),
                )
                assert a[0] == b[0] == 200
                assert {h: a[1].get(h) for h in CLIENT_HEADERS} == {h: b[1].get(h) for h in CLIENT_HEADERS}, (
                    path
                )
                assert "x-repo-commit" in a[1]
                assert a[2] == b[2]
        tree = "/api/models/org/tiny/tree/main?recursive=true"
        mine, hubs = json.loads(get(ours + tree)[2]), json.loads(get(theirs + tree)[2])
        files = [e for e in mine if e["type"] == "file"]
        assert files == [e for e in hubs if e["type"] == "file"]
        assert sorted(e["path"] for e in mine) == sorted(e["path"] for e in hubs)
        info = "/api/models/org/tiny/revision/main?blobs=true"
        assert json.loads(get(ours + info)[2])["siblings"] == json.loads(get(theirs + info)[2])["siblings"]
        for target in (
            "/org/nope/resolve/main/config.json",
            "/org/tiny/resolve/nope/config.json",
            "/org/tiny/resolve/main/nope.json",
            "/api/models/org/nope",
            "/api/models/org/tiny/revision/nope",
        ):
            a, b = get(ours + target), get(theirs + target)
            assert (a[0], a[1].get("x-error-code")) == (b[0], b[1].get("x-error-code")), target
            assert "error" in json.loads(a[2])
