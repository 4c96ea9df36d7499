"""Tokens and endpoints: what a hub's 401/403 tells the user to do with the token (on metadata and file
requests alike), endpoints without a scheme refused before any request, and no token in any output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import zstandard

from mirror.cli import main
from mirror.clock import SYSTEM
from mirror.manifest import parse_manifest
from mirror.settings import Settings
from mirror.store import Store
from mirror.sync import SyncReport, default_source_factory, plan_targets, sync
from tests.hub import Fault, HubFile, LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.roundtrip import fresh_env, mirror_command
from tests.test_sync import FAST

FILES = [
    HubFile("config.json", data=b'{"model_type": "bert"}'),
    HubFile("model.safetensors", data=safetensors_sized(b"w" * 5000)),
]
HF = "version: 1\nmodels:\n  - repo: org/a\n"
MS = "version: 1\nmodels:\n  - repo: org/a\n    source: modelscope\n"


def run(tmp_path: Path, hub: LoopbackHub, manifest: str, **env: str) -> SyncReport:
    settings = Settings.from_env(
        tmp_path / "store", {"HF_ENDPOINT": hub.url, "MODELSCOPE_ENDPOINT": hub.modelscope_url, **env}
    )
    targets = plan_targets(parse_manifest(manifest).requests())
    return sync(
        Store.at(tmp_path / "store", clock=SYSTEM), targets, default_source_factory(settings), policy=FAST
    )


def error_of(report: SyncReport) -> str:
    assert report.exit_code == 1, report.to_json()
    return str(report.items[0].error)


def advice(message: str) -> str:
    """The part of an access-denied message that says what to do (the same for every request)."""
    return message.split("access denied", 1)[1]


@pytest.mark.parametrize(
    ("manifest", "env", "says"),
    [
        (HF, {}, "no token was sent: set HF_TOKEN (or name another variable with the manifest's token_env:)"),
        (HF, {"HF_TOKEN": "tok-wrong-1"}, "the token from HF_TOKEN was sent and refused: set HF_TOKEN to"),
        (
            HF + "    token_env: MY_TOKEN\n",
            {"HF_TOKEN": "tok-right-2"},
            "no token was sent: set MY_TOKEN to a token",
        ),
        (
            HF + "    token_env: MY_TOKEN\n",
            {"MY_TOKEN": "tok-wrong-1"},
            "the token from MY_TOKEN was sent and refused",
        ),
        (MS, {}, "no token was sent: set MODELSCOPE_API_TOKEN (or name another variable"),
        (
            MS,
            {"MODELSCOPE_API_TOKEN": "tok-wrong-1"},
            "the token from MODELSCOPE_API_TOKEN was sent and refused",
        ),
        (MS + "    token_env: MS_KEY\n", {}, "no token was sent: set MS_KEY to a token"),
    ],
    ids=[
        "hf-none",
        "hf-wrong",
        "hf-token-env-unset",
        "hf-token-env-wrong",
        "ms-none",
        "ms-wrong",
        "ms-token-env",
    ],
)
def test_a_401_on_the_listing_says_what_to_do_with_the_token(
    hub: LoopbackHub, tmp_path: Path, manifest: str, env: dict[str, str], says: str
) -> None:
    hub.add_commit("org/a", FILES)
    hub.required_token = "tok-right-2"
    message = error_of(run(tmp_path, hub, manifest, **env))
    assert "access denied (HTTP 401)" in message and says in message
    assert "tok-wrong-1" not in message and "tok-right-2" not in message
    assert hub.downloads() == []  # it failed on the metadata request


@pytest.mark.parametrize(
    ("env", "says"),
    [({}, "no token was sent: set HF_TOKEN"), ({"HF_TOKEN": "t"}, "the token from HF_TOKEN was sent")],
)
def test_a_404_repo_not_found_says_the_same_about_the_token(
    hub: LoopbackHub, tmp_path: Path, env: dict[str, str], says: str
) -> None:
    message = error_of(run(tmp_path, hub, "version: 1\nmodels:\n  - repo: org/private-or-missing\n", **env))
    assert "repo not found (check the repo id; if it is private or gated: " in message and says in message


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize(
    ("manifest", "metadata"), [(HF, "/api/models/org/a/revision/"), (MS, "/repo/files")], ids=["hf", "ms"]
)
def test_metadata_and_file_requests_refused_say_the_same(
    hub: LoopbackHub, tmp_path: Path, manifest: str, metadata: str, status: int
) -> None:
    hub.add_commit("org/a", FILES)
    hub.add_fault(Fault("status", match=metadata, status=status, times=None))
    on_metadata = error_of(run(tmp_path, hub, manifest, HF_TOKEN="t", MODELSCOPE_API_TOKEN="t"))
    hub.faults.clear()
    hub.add_fault(Fault("status", match="config.json", status=status, times=None, method="GET"))
    on_file = error_of(run(tmp_path, hub, manifest, HF_TOKEN="t", MODELSCOPE_API_TOKEN="t"))
    assert f"access denied (HTTP {status})" in on_metadata and "was sent and refused" in on_metadata
    assert advice(on_metadata) == advice(on_file)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit:
        main(list(args))
    return int(exit.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("HF_ENDPOINT", "127.0.0.1:{port}", "write https://127.0.0.1:{port} (or http://127.0.0.1:{port})"),
        ("HF_ENDPOINT", "localhost:{port}", "write https://localhost:{port}"),
        ("HF_ENDPOINT", "ftp://127.0.0.1:{port}", "must be an http:// or https:// URL"),
        ("HF_ENDPOINT", "http://", "must be an http:// or https:// URL with a host"),
        ("MODELSCOPE_ENDPOINT", "localhost:{port}", "write https://localhost:{port}"),
        ("MODELSCOPE_ENDPOINT", "127.0.0.1:{port}/", "write https://127.0.0.1:{port} (or"),
    ],
)
def test_an_endpoint_without_a_scheme_is_a_usage_error_before_any_request(
    hub: LoopbackHub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    says: str,
) -> None:
    hub.add_commit("org/a", FILES)
    other = "MODELSCOPE_ENDPOINT" if variable == "HF_ENDPOINT" else "HF_ENDPOINT"
    monkeypatch.setenv(other, hub.url)
    monkeypatch.setenv(variable, value.format(port=hub.port))
    manifest = tmp_path / "m.yml"
    manifest.write_text(HF if variable == "HF_ENDPOINT" else MS)
    store = tmp_path / "store"
    code, err = cli(capsys, "sync", str(manifest), "--store", str(store))
    assert code == 2, err
    assert variable in err and says.format(port=hub.port) in err
    code, err = cli(capsys, "status", str(manifest), "--store", str(store), "--check-upstream")
    assert code == 2 and variable in err
    assert hub.requests == [] and not store.exists()


@pytest.mark.parametrize("endpoint", ["127.0.0.1:{port}", "localhost:{port}", "ftp://127.0.0.1:{port}"])
def test_a_manifest_or_lock_file_endpoint_without_a_scheme_is_a_usage_error(
    hub: LoopbackHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], endpoint: str
) -> None:
    value = endpoint.format(port=hub.port)
    manifest = tmp_path / "m.yml"
    manifest.write_text(f"{HF}    endpoint: '{value}'\n")
    code, err = cli(capsys, "sync", str(manifest), "--store", str(tmp_path / "store"))
    assert code == 2 and "m.yml:4" in err and "endpoint" in err and "http:// or https://" in err
    assert "://" in value or f"write https://{value}" in err
    lock = tmp_path / "m.lock"
    commit = hub.add_commit("org/a", FILES)
    lock.write_text(
        json.dumps(
            {
                "version": 1,
                "revisions": [
                    {
                        "source": "huggingface",
                        "type": "model",
                        "repo": "org/a",
                        "revision": "main",
                        "commit": commit,
                        "endpoint": value,
                        "files": [],
                    }
                ],
            }
        )
    )
    code, err = cli(capsys, "sync", "--locked", str(lock), "--store", str(tmp_path / "store"))
    assert code == 2 and "m.lock" in err and "revisions[0].endpoint" in err and value in err, err
    assert hub.requests == []


# no token in any output ----------------------------------------------------------------------------------

TOKEN = "tok_LEAK_CANARY_7f3a9c1e5b"


def unpacked(bundle: Path) -> bytes:
    with open(bundle, "rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()


@pytest.mark.e2e
def test_no_token_in_any_output_even_with_hf_debug(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yml"
    manifest.write_text(
        "version: 1\nmodels:\n"
        "  - repo: org/a\n"
        "  - repo: org/b\n"  # 500s, then served
        "  - repo: org/locked\n"  # 401 with the token: fails
        "  - repo: owner/ms\n    source: modelscope\n"
        "  - repo: owner/ms-b\n    source: modelscope\n"  # 500s and a redirect
    )
    store, report = tmp_path / "store", tmp_path / "report.json"
    with LoopbackHub() as hub:
        for repo in ("org/a", "org/b", "org/locked", "owner/ms", "owner/ms-b"):
            hub.add_commit(repo, [*FILES, HubFile(f"{repo}.txt", data=repo.encode())])
        hub.required_token = TOKEN
        hub.add_fault(Fault("status", match="/api/models/org/b/revision", status=500, times=2))
        hub.add_fault(Fault("status", match="/org/b/resolve/", status=502, times=2, method="GET"))
        hub.add_fault(Fault("status", match="/org/a/resolve/", status=302, times=2, method="GET"))
        hub.add_fault(Fault("status", match="/api/models/org/a/revision", status=307, times=1))
        hub.add_fault(Fault("status", match="/api/models/org/locked/", status=401, times=None))
        hub.add_fault(Fault("status", match="owner/ms-b/repo/files", status=503, times=2))
        hub.add_fault(Fault("status", match="owner/ms-b/repo?", status=302, times=2, method="GET"))
        hub.add_fault(Fault("status", match="owner/ms/repo?", status=500, times=1, method="GET"))
        env = fresh_env(
            tmp_path / "home",
            HF_ENDPOINT=hub.url,
            MODELSCOPE_ENDPOINT=hub.modelscope_url,
            HF_TOKEN=TOKEN,
            MODELSCOPE_API_TOKEN=TOKEN,
            HF_DEBUG="1",
        )
        sync_cmd = [*mirror_command(), "sync", str(manifest), "--store", str(store), "--report", str(report)]
        proc = subprocess.run([*sync_cmd, "-vv"], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 3, proc.stderr
        exported = subprocess.run(
            [*mirror_command(), "export", "--store", str(store), "-o", str(tmp_path / "b.tar.zst"), "-vv"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert exported.returncode == 0, exported.stderr
        sent = [r for r in hub.requests if r.headers.get("authorization") == f"Bearer {TOKEN}"]
        redirected = [r for r in hub.requests if 300 <= r.status < 400]
    for route in (
        "/api/models/",
        "/resolve/",
        "/api/v1/models/",
        "FilePath=",
    ):  # metadata and files, both hubs
        assert any(route in r.path for r in sent), route
    assert len(redirected) == 5
    assert "Send: curl" in proc.stderr and "<TOKEN>" in proc.stderr  # huggingface_hub's HF_DEBUG log is on
    assert "access denied (HTTP 401)" in proc.stderr and "giving up" not in proc.stderr
    outputs = {
        "sync stdout": proc.stdout,
        "sync stderr": proc.stderr,
        "export stdout": exported.stdout,
        "export stderr": exported.stderr,
        "report": report.read_text(),
    }
    for name, text in outputs.items():
        assert TOKEN not in text, name
    for path in store.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    bundle = unpacked(tmp_path / "b.tar.zst")
    assert b"org/b.txt" in bundle and TOKEN.encode() not in bundle
