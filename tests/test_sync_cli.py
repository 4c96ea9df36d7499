"""`mirror sync` as cron runs it: `--report` is always written (a monitor never reads a stale success), and the
verbosity levels: `-q` prints nothing at all on success, the default the results, `-v` each revision's plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mirror.cli import cli, main
from mirror.clock import SYSTEM
from mirror.store import Store
from tests.hub import Fault, LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.roundtrip import fresh_env, run_mirror

STALE = {"ok": True, "exit_code": 0, "error": None, "items": [{"status": "ok"}]}
MANIFEST = "version: 1\nmodels:\n  - repo: org/a\n"


def serve(hub: LoopbackHub) -> None:
    hub.add_commit("org/a", {"config.json": b"{}", "model.safetensors": safetensors_sized(b"w" * 5000)})
    hub.add_commit("org/b", {"config.json": b"{}"})


def sync_main(args: list[str], hub: LoopbackHub, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    with pytest.raises(SystemExit) as done:
        main(["sync", *args])
    return int(done.value.code or 0)


@pytest.fixture
def report(tmp_path: Path) -> Path:
    path = tmp_path / "last-sync.json"
    path.write_text(json.dumps(STALE))  # an earlier run's success
    return path


def read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    assert set(data) >= {"ok", "exit_code", "error", "items"}
    return data


@pytest.mark.parametrize(
    ("manifest", "says"),
    [
        ("version: 1\nmodels:\n  - repo: org/a\n    colour: blue\n", "colour"),
        ("version: 1\nmodels:\n  - repo: ../../etc\n", "repo"),
        ("version: 1\nmodels: [\n", "m.yml"),
        (None, "cannot read the manifest"),  # no such file
        (b"\xff\xfe not utf-8", "UTF-8"),
    ],
)
def test_a_bad_manifest_is_reported_with_exit_2(
    hub: LoopbackHub,
    tmp_path: Path,
    report: Path,
    monkeypatch: pytest.MonkeyPatch,
    manifest: str | bytes | None,
    says: str,
) -> None:
    serve(hub)
    path = tmp_path / "m.yml"
    if isinstance(manifest, str):
        path.write_text(manifest)
    elif isinstance(manifest, bytes):
        path.write_bytes(manifest)
    args = [str(path), "--store", str(tmp_path / "s"), "--report", str(report)]
    assert sync_main(args, hub, monkeypatch) == 2
    data = read(report)
    assert data["ok"] is False and data["exit_code"] == 2 and says in data["error"]
    assert hub.requests == []


@pytest.mark.parametrize(
    "content", ["not json", '{"version": 99}', '{"version": 1, "revisions": [{"repo": 1}]}']
)
def test_a_bad_lock_file_is_reported_with_exit_2(
    hub: LoopbackHub, tmp_path: Path, report: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    lock = tmp_path / "m.lock"
    lock.write_text(content)
    args = ["--locked", str(lock), "--store", str(tmp_path / "s"), "--report", str(report)]
    assert sync_main(args, hub, monkeypatch) == 2
    data = read(report)
    assert data["exit_code"] == 2 and "m.lock" in data["error"]


def test_no_manifest_at_all_is_reported_with_exit_2(
    hub: LoopbackHub, tmp_path: Path, report: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sync_main(["--store", str(tmp_path / "s"), "--report", str(report)], hub, monkeypatch) == 2
    data = read(report)
    assert data["exit_code"] == 2 and "MANIFEST" in data["error"]


def test_the_store_lock_held_is_reported_with_exit_75(
    hub: LoopbackHub, tmp_path: Path, report: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve(hub)
    (tmp_path / "m.yml").write_text(MANIFEST)
    store = Store.at(tmp_path / "s", clock=SYSTEM)
    with store.lock():
        code = sync_main(
            [str(tmp_path / "m.yml"), "--store", str(store.local_root), "--report", str(report)],
            hub,
            monkeypatch,
        )
    assert code == 75
    data = read(report)
    assert data["exit_code"] == 75 and "lock" in data["error"]


def test_an_unexpected_error_is_reported_with_exit_1(
    hub: LoopbackHub, tmp_path: Path, report: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve(hub)
    (tmp_path / "m.yml").write_text(MANIFEST)

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("mirror.sync.sync", explode)
    code = sync_main(
        [str(tmp_path / "m.yml"), "--store", str(tmp_path / "s"), "--report", str(report)], hub, monkeypatch
    )
    assert code == 1
    assert read(report) == {
        "ok": False,
        "exit_code": 1,
        "error": "unexpected error: RuntimeError: a bug",
        "items": [],
    }


def test_every_finished_run_reports_its_exit_code_and_error(
    hub: LoopbackHub, tmp_path: Path, report: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve(hub)
    manifest = tmp_path / "m.yml"
    manifest.write_text("version: 1\nmodels:\n  - repo: org/a\n  - repo: org/gone\n")
    args = [str(manifest), "--store", str(tmp_path / "s"), "--report", str(report)]
    assert sync_main(args, hub, monkeypatch) == 3
    data = read(report)
    assert data["exit_code"] == 3 and "org/gone" in data["error"] and "not found" in data["error"]
    manifest.write_text(MANIFEST)
    assert sync_main(args, hub, monkeypatch) == 0
    data = read(report)
    assert data["ok"] is True and data["exit_code"] == 0 and data["error"] is None
    assert [i["status"] for i in data["items"]] == ["ok"]
    (item,) = data["items"]  # the repo named as every JSON output names one
    assert (item["source"], item["repo_type"], item["repo_id"]) == ("huggingface", "model", "org/a")
    assert "repo" not in item and "type" not in item
    assert not [p for p in report.parent.iterdir() if p.name.startswith(".")]  # no temp file left


# ---- verbosity ----------------------------------------------------------------------------------------


def invoke(hub: LoopbackHub, tmp_path: Path, manifest: str, *flags: str) -> Any:
    (tmp_path / "m.yml").write_text(manifest)
    args = ["sync", str(tmp_path / "m.yml"), "--store", str(tmp_path / "s"), *flags]
    return CliRunner().invoke(cli, args, env={"HF_ENDPOINT": hub.url})


def test_default_prints_results_and_verbose_adds_each_revisions_plan_and_outcome(
    hub: LoopbackHub, tmp_path: Path
) -> None:
    serve(hub)
    default = invoke(hub, tmp_path, MANIFEST)
    assert default.exit_code == 0, default.output
    assert "ok      huggingface:org/a@main" in default.stdout
    assert "to fetch" not in default.stderr and "recorded commit" not in default.stderr
    hub.add_commit("org/a", {"config.json": b'{"v": 2}'}, inherit=True)
    verbose = invoke(hub, tmp_path, MANIFEST + "  - repo: org/gone\n", "-v")
    assert verbose.exit_code == 3
    commit = hub.resolve("org/a")
    assert (
        f"huggingface:org/a@main: commit {commit}: 2 of 2 files wanted; 1 to fetch (8 bytes), 1 already"
        in (verbose.stderr)
    )
    assert (
        f"huggingface:org/a@main: recorded commit {commit} (2 files, 1 downloaded, 8 bytes)" in verbose.stderr
    )
    assert "org/gone" in verbose.stderr
    assert len(verbose.stderr.splitlines()) > len(default.stderr.splitlines())


def test_quiet_prints_only_failures(hub: LoopbackHub, tmp_path: Path) -> None:
    serve(hub)
    failed = invoke(hub, tmp_path, MANIFEST + "  - repo: org/gone\n", "-q")
    assert failed.exit_code == 3
    assert failed.stdout.splitlines() == [line for line in failed.stdout.splitlines() if "FAILED" in line]
    assert "FAILED  huggingface:org/gone@main" in failed.stdout and "org/a" not in failed.stdout
    assert "org/gone" in failed.stderr


@pytest.mark.e2e
def test_quiet_under_cron_prints_nothing_at_all_on_success(tmp_path: Path) -> None:
    """The README's cron line, in a real process: cron mails whatever it prints, so it must print nothing."""
    manifest = tmp_path / "m.yml"
    manifest.write_text("version: 1\nmodels:\n  - repo: org/a\n  - repo: org/b\n")
    with LoopbackHub() as hub:
        serve(hub)
        hub.add_fault(Fault("status", match="model.safetensors", status=503, times=1))  # a retry, logged
        env = fresh_env(tmp_path / "home", HF_ENDPOINT=hub.url)
        args = ["sync", str(manifest), "--store", str(tmp_path / "s"), "--wait", "60"]
        quiet = run_mirror(*args, "--report", str(tmp_path / "r.json"), "-q", env=env)
        assert (quiet.stdout, quiet.stderr) == ("", "")
        assert read(tmp_path / "r.json")["ok"] is True
        again = run_mirror(*args, "-q", env=env)  # nothing to do: still silent
        assert (again.stdout, again.stderr) == ("", "")
        loud = run_mirror(*args, env=env)
        assert "ok      huggingface:org/a@main" in loud.stdout
