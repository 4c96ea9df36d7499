"""`mirror serve --policy FILE` refuses what the policy denies (issue 15): a file with a denied finding gets
403 with the reason (file, finding, rule) on the Hub's resolve (GET and HEAD), on ModelScope's download and
under `--redirect` (no presigned URL); a revision-level denial (a licence outside the allowlist) refuses
every file of it; a file only warned about is served; the metadata routes still list everything; the
catalogue says what is refused and why; the access log records the 403.

The stores are made by syncing fixture repos from the loopback hub under the default policy (pickle: warn),
so they hold the scan records a sync writes; without them (deleted) the server scans the commit itself, once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import pytest
from starlette.types import ASGIApp

import mirror.serve.policing
from mirror.clock import SYSTEM
from mirror.exits import ExitCode
from mirror.serve.app import create_app
from mirror.serve.audit import AccessLog
from mirror.serve.hf.answers import POLICY_DENIED
from mirror.settings import StoreName
from mirror.snapshot import FileRecord
from mirror.store import Store
from mirror.validate.policy import Policy
from mirror.validate.scan import RevisionScan
from tests.asgi import Answer, call
from tests.hub import LoopbackHub
from tests.s3server import S3Bucket
from tests.serving import Served, served
from tests.test_serve_core import run_main, taken_port  # noqa: F401 - a fixture
from tests.test_serve_hf import hf_env, run_code
from tests.test_serve_s3 import bucket_store
from tests.test_sync import run
from tests.test_sync_scan import BENIGN, CONFIG, EVIL, key, manifest
from tests.waiting import eventually

EVIL_PATH = "pytorch_model.bin"
REPO = "org/evil"
FILES = {"config.json": CONFIG, "model.safetensors": BENIGN, EVIL_PATH: EVIL}
NO_PICKLES = Policy(pickle="deny")
REASON = ("refused by the policy of this server", EVIL_PATH, "posix.system", "policy pickle: deny")


def card(licence: str) -> bytes:
    return f"---\nlicense: {licence}\n---\n# A model\n".encode()


def synced(hub: LoopbackHub, store: Store, repos: dict[str, dict[str, bytes]]) -> dict[str, str]:
    """Serve `repos` from the hub and sync them into `store` under the default policy: their commits."""
    commits = {repo: hub.add_commit(repo, files) for repo, files in repos.items()}
    report = run(store, hub, manifest(*repos))
    assert report.exit_code == ExitCode.OK, report.to_json()
    return commits


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.at(tmp_path / "store", clock=SYSTEM)


@pytest.fixture
def evil(hub: LoopbackHub, store: Store) -> str:
    """org/evil synced (a malicious pickle, warned about by the sync's default policy): its commit."""
    return synced(hub, store, {REPO: FILES})[REPO]


def app_over(store: Store | str, policy: Policy | None = None, **options: Any) -> ASGIApp:
    """The application of `mirror serve [--policy]` over a store (a folder's Store, or an s3:// URL)."""
    where: StoreName | None = store if isinstance(store, str) else store.local_root
    assert where is not None
    extra = {"policy": policy} if policy is not None else {}
    return create_app(where, clock=SYSTEM, **extra, **options)


def resolve(repo: str, path: str, revision: str = "main") -> str:
    return f"/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"


def ms_download(repo: str, path: str, revision: str = "master") -> str:
    return f"/api/v1/models/{repo}/repo?Revision={revision}&FilePath={quote(path)}"


def assert_refused(answer: Answer, *says: str) -> None:
    """A 403 in the Hub's shape whose message (header, and JSON body but for HEAD) says each of `says`."""
    assert answer.status == 403
    assert answer.headers["x-error-code"] == POLICY_DENIED
    assert "location" not in answer.headers
    message = answer.headers["x-error-message"]
    for words in says:
        assert words in message, message
    if answer.body:
        assert answer.json() == {"error": message}


def assert_ms_refused(answer: Answer, *says: str) -> None:
    assert answer.status == 403 and "location" not in answer.headers
    body = answer.json()
    assert body["Code"] == 403 and body["Success"] is False
    for words in says:
        assert words in body["Message"], body["Message"]


# --- in process --------------------------------------------------------------------------------------


def test_a_denied_pickle_is_refused_with_the_reason_and_the_safe_files_are_served(
    store: Store, evil: str
) -> None:
    app = app_over(store, NO_PICKLES)
    for method in ("GET", "HEAD"):
        refused = call(app, method, resolve(REPO, EVIL_PATH))
        assert_refused(refused, *REASON)
        assert refused.headers["x-repo-commit"] == evil
        assert_refused(call(app, method, resolve(REPO, EVIL_PATH, evil)), *REASON)  # by commit too
    assert_ms_refused(call(app, "GET", ms_download(REPO, EVIL_PATH)), *REASON)
    for path in ("config.json", "model.safetensors"):
        assert call(app, "GET", resolve(REPO, path)).body == FILES[path]
        assert call(app, "HEAD", resolve(REPO, path)).status == 200
        assert call(app, "GET", ms_download(REPO, path)).body == FILES[path]


def test_the_metadata_routes_still_list_a_refused_file(store: Store, evil: str) -> None:
    app = app_over(store, NO_PICKLES)
    info = call(app, "GET", f"/api/models/{REPO}/revision/main")
    assert info.status == 200 and EVIL_PATH in [s["rfilename"] for s in info.json()["siblings"]]
    tree = call(app, "GET", f"/api/models/{REPO}/tree/main?recursive=true")
    assert EVIL_PATH in [e["path"] for e in tree.json()]
    files = call(app, "GET", f"/api/v1/models/{REPO}/repo/files?Revision=master&Recursive=True")
    assert EVIL_PATH in [f["Path"] for f in files.json()["Data"]["Files"]]


def test_under_the_default_policy_a_pickle_only_warned_about_is_served(store: Store, evil: str) -> None:
    app = app_over(store)
    assert call(app, "GET", resolve(REPO, EVIL_PATH)).body == EVIL
    assert call(app, "HEAD", resolve(REPO, EVIL_PATH)).status == 200
    assert call(app, "GET", ms_download(REPO, EVIL_PATH)).body == EVIL
    assert (
        call(app_over(store, Policy(pickle="warn", licenses=None)), "GET", resolve(REPO, EVIL_PATH)).body
        == EVIL
    )


def test_a_licence_outside_the_allowlist_refuses_every_file_of_the_revision(
    hub: LoopbackHub, store: Store
) -> None:
    synced(
        hub,
        store,
        {
            "org/other": {"README.md": card("other"), "config.json": CONFIG, "model.safetensors": BENIGN},
            "org/mit": {"README.md": card("mit"), "config.json": CONFIG},
        },
    )
    app = app_over(store, Policy(licenses=frozenset({"mit", "apache-2.0"})))
    for path in ("README.md", "config.json", "model.safetensors"):
        for method in ("GET", "HEAD"):
            assert_refused(
                call(app, method, resolve("org/other", path)),
                "the revision: licence 'other' is not allowed; allowed: apache-2.0, mit",
                "policy licenses: apache-2.0, mit",
            )
        assert_ms_refused(call(app, "GET", ms_download("org/other", path)), "licence 'other' is not allowed")
    assert call(app, "GET", resolve("org/mit", "config.json")).body == CONFIG


def test_the_catalogue_says_what_is_refused_and_why_escaped(hub: LoopbackHub, store: Store) -> None:
    evil = {**FILES, "README.md": card("mit")}
    synced(hub, store, {REPO: evil, "org/other": {"README.md": card("other"), "config.json": CONFIG}})
    page = call(app_over(store, Policy(pickle="deny", licenses=frozenset({"mit"}))), "GET", "/")
    html = page.body.decode()
    assert page.status == 200
    assert "refused: pytorch_model.bin: imports posix.system (policy pickle: deny)" in html
    assert (
        'every file <span class="refused">refused: the revision: licence &#x27;other&#x27; is not allowed'
        in html
    )
    assert "licence 'other'" not in html  # every name on the page is escaped
    assert html.count("refused:") == 2  # the safe files of org/evil are not marked
    assert (
        "refused:" not in call(app_over(store), "GET", "/").body.decode()
    )  # the default policy refuses none


def test_the_access_log_records_the_403(store: Store, evil: str, tmp_path: Path) -> None:
    path = tmp_path / "access.jsonl"
    log = AccessLog(path)
    try:
        app = app_over(store, NO_PICKLES, access_log=log)
        call(app, "GET", resolve(REPO, EVIL_PATH))
        call(app, "GET", resolve(REPO, "config.json"))
        call(app, "GET", ms_download(REPO, EVIL_PATH))
    finally:
        log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["method"], e["path"], e["status"]) for e in lines] == [
        ("GET", EVIL_PATH, 403),
        ("GET", "config.json", 200),
        ("GET", EVIL_PATH, 403),
    ]


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the revisions the server scanned itself, one list per scan (`scan_blobs` counted)."""
    made: list[str] = []
    real = mirror.serve.policing.scan_blobs

    def counted(
        open_blob: Callable[[str], BinaryIO], files: list[FileRecord], temp_dir: Path | None = None
    ) -> RevisionScan:
        made.append(",".join(sorted(f.path for f in files)))
        return real(open_blob, files, temp_dir)

    monkeypatch.setattr(mirror.serve.policing, "scan_blobs", counted)
    return made


def delete_scan_records(store: Store) -> None:
    for name in store.storage.keys("repos/"):
        if "/scans/" in name:
            store.storage.delete(name)


def test_a_recorded_scan_is_used_and_the_server_scans_nothing(
    store: Store, evil: str, scans: list[str]
) -> None:
    app = app_over(store, NO_PICKLES)
    assert_refused(call(app, "GET", resolve(REPO, EVIL_PATH)), *REASON)
    assert call(app, "GET", "/").status == 200
    assert scans == []


def test_without_a_scan_record_the_server_scans_the_commit_once_and_still_refuses(
    store: Store, evil: str, scans: list[str]
) -> None:
    delete_scan_records(store)
    app = app_over(store, NO_PICKLES)
    for method in ("GET", "HEAD"):
        assert_refused(call(app, method, resolve(REPO, EVIL_PATH)), *REASON)
    assert_ms_refused(call(app, "GET", ms_download(REPO, EVIL_PATH)), *REASON)
    assert call(app, "GET", resolve(REPO, "config.json")).body == CONFIG
    assert "refused: pytorch_model.bin" in call(app, "GET", "/").body.decode()
    assert scans == [",".join(sorted(FILES))]  # once, for every request
    assert store.read_scan(key(REPO), evil) is None  # the server writes nothing into the store


def test_the_hubs_own_scan_in_the_record_is_judged(hub: LoopbackHub, store: Store) -> None:
    # the hub flags a file: sync (default policy: hub_flagged deny) refuses the revision but keeps its
    # record and its scan; the server, asked by commit, refuses the file from the record's hub finding
    commit = hub.add_commit("org/flagged", {"config.json": CONFIG, "model.safetensors": BENIGN})
    hub.set_security("org/flagged", "model.safetensors", status="unsafe", virus="Eicar-Test-Signature")
    assert run(store, hub, manifest("org/flagged")).exit_code == ExitCode.PARTIAL
    app = app_over(store)
    assert_refused(
        call(app, "GET", resolve("org/flagged", "model.safetensors", commit)), "policy hub_flagged: deny"
    )
    assert call(app, "GET", resolve("org/flagged", "config.json", commit)).body == CONFIG


def test_over_a_bucket_redirect_refuses_without_a_location_even_unscanned(
    hub: LoopbackHub, s3: S3Bucket, tmp_path: Path, scans: list[str]
) -> None:
    store = bucket_store(s3, tmp_path / "staging")
    synced(hub, store, {REPO: FILES})
    url = s3.url("store")
    app = app_over(url, NO_PICKLES, redirect=True)
    for method in ("GET", "HEAD"):
        assert_refused(call(app, method, resolve(REPO, EVIL_PATH)), *REASON)
        assert call(app, method, resolve(REPO, "model.safetensors")).status == 302  # an LFS file: redirected
    assert_ms_refused(call(app, "GET", ms_download(REPO, EVIL_PATH)), *REASON)
    assert scans == []  # the record in the bucket was used
    delete_scan_records(store)
    app = app_over(url, NO_PICKLES, redirect=True)
    for method in ("GET", "HEAD"):
        assert_refused(call(app, method, resolve(REPO, EVIL_PATH)), *REASON)
    assert call(app, "GET", resolve(REPO, "config.json")).body == CONFIG
    assert len(scans) == 1  # scanned once (the pickle spooled from the bucket), kept over the record's TTL


def test_a_bad_policy_file_exits_2_naming_the_file_line_and_key(
    tmp_path: Path,
    taken_port: int,  # noqa: F811 - the fixture imported
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "store").mkdir()
    policy = tmp_path / "policy.yml"
    policy.write_text("remote_code: warn\npickle: block\n")
    args = ["serve", "--store", str(tmp_path / "store"), "--port", str(taken_port), "--policy", str(policy)]
    code, err = run_main(args, capsys)
    assert code == ExitCode.USAGE  # before the port (taken: exit 1) is bound
    assert f"{policy}:2: pickle: 'block' is not one of deny, warn, allow" in err


# --- end to end ----------------------------------------------------------------------------------------

DOWNLOAD = """
import json, sys
from huggingface_hub import hf_hub_download
try:
    hf_hub_download("org/evil", sys.argv[1])
    print(json.dumps({"ok": True}))
except Exception as e:
    print(json.dumps({"ok": False, "type": type(e).__name__, "message": str(e)}))
"""


@pytest.fixture
def served_evil(store: Store, evil: str, tmp_path: Path) -> Iterator[Served]:
    policy = tmp_path / "policy.yml"
    policy.write_text("pickle: deny\n")
    assert store.local_root is not None
    with served(
        store.local_root, "--policy", str(policy), "--access-log", str(tmp_path / "access.jsonl")
    ) as server:
        yield server


@pytest.mark.e2e
def test_huggingface_hub_raises_with_the_reason_in_its_message(served_evil: Served, tmp_path: Path) -> None:
    env = hf_env(served_evil.url, tmp_path)
    refused = run_code(env, DOWNLOAD, EVIL_PATH)
    assert refused["ok"] is False and refused["type"] == "GatedRepoError", refused
    for words in REASON:
        assert words in refused["message"], refused["message"]
    assert run_code(env, DOWNLOAD, "config.json") == {"ok": True}
    log = served_evil.access_log
    assert log is not None

    def refusal_logged() -> bool:
        logged = [json.loads(line) for line in log.read_text().splitlines()]
        return ("HEAD", EVIL_PATH, 403) in [(e["method"], e["path"], e["status"]) for e in logged]

    eventually(refusal_logged, "the access log's line of the 403")
