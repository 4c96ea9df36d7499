"""Two `mirror serve` replicas over one store in a bucket (end to end, the moto server of tests/s3server.py):
they give identical answers (status, headers but Date and Server, bodies) on both APIs, and a bundle
imported into the bucket by a third process, as another host would, is served by both within 10 s (the
view trusts a record it read for RECORD_TTL, 5 s; refs are read at each request)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mirror.clock import SYSTEM
from mirror.export import export
from mirror.store import Store
from tests.conftest import TINY_MAIN, SyntheticRepo, put_repo
from tests.s3server import S3Server
from tests.serving import Served, served
from tests.test_serve_s3 import filled_bucket, server_env

pytestmark = pytest.mark.e2e

WITHIN = 10.0  # seconds after an import ends by which every replica serves it (issue 14)
POLL, GIVE_UP = 0.2, 15.0  # seconds between two asks; seconds asked at most
IGNORED = ("date", "server")  # headers of a replica's own
LATE = {"weights.bin": bytes(range(256)) * 300, "config.json": b'{"late": true}\n'}
TINY_V2 = {**TINY_MAIN, "config.json": b'{"model_type": "bert", "hidden_size": 32}\n'}


@dataclass(frozen=True)
class Replicas:
    a: Served
    b: Served
    url: str  # the bucket store both serve
    env: dict[str, str]  # a `mirror` subprocess's environment for that bucket
    tiny: SyntheticRepo


@pytest.fixture(scope="module")
def replicas(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("replicas")
    with filled_bucket(s3_server, root / "staging") as (url, _, tiny):
        pass
    env = server_env(s3_server, root / "home")
    with served(url, env=env) as a, served(url, env=env) as b:
        yield Replicas(a, b, url, env, tiny)


def ask(base: str, method: str, target: str, body: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    """Status, headers (lower-case names, but Date and Server) and body (JSON without ModelScope's
    per-request RequestId, else bytes) of one request."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
    request = urllib.request.Request(base + target, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            status, head, data = answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as e:
        status, head, data = e.code, e.headers, e.read()
    kept = {k.lower(): v for k, v in head.items() if k.lower() not in IGNORED}
    if "json" not in kept.get("content-type", "") or not data:  # a HEAD has no body
        return status, kept, data
    parsed = json.loads(data)
    if isinstance(parsed, dict) and "RequestId" in parsed:
        del parsed["RequestId"]
        kept.pop("content-length")  # another RequestId may have another length
    return status, kept, parsed


def test_two_replicas_over_one_bucket_give_identical_answers(replicas: Replicas) -> None:
    main = replicas.tiny.commits["main"]
    asked: list[tuple[str, str, bytes | None]] = [
        ("GET", "/api/models/org/tiny", None),
        ("GET", "/api/models/org/tiny/revision/v1.0?blobs=true", None),
        ("GET", f"/api/models/org/tiny/revision/{main}", None),
        ("GET", "/api/models/org/tiny/tree/main?recursive=true", None),
        ("GET", "/api/models/org/tiny/tree/main/sub", None),
        ("POST", "/api/models/org/tiny/paths-info/main", b"paths=config.json&paths=sub&paths=none"),
        ("GET", "/api/models/org/tiny/refs", None),
        ("HEAD", "/org/tiny/resolve/main/model.safetensors", None),
        ("HEAD", "/org/tiny/resolve/refs%2Fpr%2F1/config.json", None),
        ("GET", "/org/tiny/resolve/main/config.json", None),
        ("HEAD", "/org/tiny/resolve/main/absent.txt", None),
        ("GET", "/api/models/org/none", None),
        ("GET", "/api/v1/models/owner/ms/repo/files?Revision=master&Recursive=True", None),
        ("GET", "/api/v1/models/owner/ms/revisions", None),
    ]
    for method, target, body in asked:
        one, other = (ask(r.url, method, target, body) for r in (replicas.a, replicas.b))
        assert one == other, (method, target)
        absent = "absent.txt" in target or target.endswith("/org/none")
        assert one[0] == (404 if absent else 200), (method, target, one)


def served_now(base: str, late_commit: str) -> bool:
    """Whether a replica serves what the bundle brought: the new repo's file and the new commit of org/tiny."""
    got = ask(base, "GET", "/late/model/resolve/main/weights.bin")
    info = ask(base, "GET", f"/api/models/org/tiny/revision/{late_commit}")
    return (got[0], got[2]) == (200, LATE["weights.bin"]) and info[0] == 200


def test_a_bundle_imported_by_another_host_is_served_by_both_replicas_within_10_s(
    replicas: Replicas, tmp_path: Path
) -> None:
    source = Store.at(tmp_path / "source", clock=SYSTEM)
    put_repo(source, "late/model", {"main": LATE})
    v2 = put_repo(source, "org/tiny", {"v2": TINY_V2}).commits["v2"]
    bundle = tmp_path / "late.tar.zst"
    export(source, None, bundle)
    for replica in (replicas.a, replicas.b):  # each has read (and keeps) that the commit is not there
        assert not served_now(replica.url, v2)
        assert ask(replica.url, "GET", f"/api/models/org/tiny/revision/{v2}")[0] == 404
    cmd = [
        sys.executable,
        "-m",
        "mirror",
        "import",
        str(bundle),
        "--layout",
        "store",
        "--target",
        replicas.url,
    ]
    done = subprocess.run(cmd, env=replicas.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    finished = time.monotonic()
    waiting = {"a": replicas.a, "b": replicas.b}
    seen: dict[str, float] = {}
    while waiting and time.monotonic() < finished + GIVE_UP:
        for name, replica in list(waiting.items()):
            if served_now(replica.url, v2):
                seen[name] = time.monotonic() - finished
                del waiting[name]
        time.sleep(POLL)
    assert not waiting, f"not served after {GIVE_UP} s: {sorted(waiting)}"
    assert max(seen.values()) <= WITHIN, seen
