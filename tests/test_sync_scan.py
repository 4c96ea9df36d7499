"""`mirror sync` runs the checks (issue 15): each revision is scanned once its files are in, the scan is
recorded in the store, and the manifest's policy judges it before its refs move. A denied revision fails
alone (exit 3) with each file, finding and rule named; warnings and auto_map repos the manifest does not
sync are said; an unchanged revision is not scanned or asked about again."""

from __future__ import annotations

import json
import pickle
import posix
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from mirror.cli.output import describe_items
from mirror.clock import SYSTEM
from mirror.errors import PolicyDenied
from mirror.exits import ExitCode
from mirror.repo import RepoKey
from mirror.store import Store
from mirror.sync import SyncReport
from tests.hub import LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.test_sync import run

BENIGN = save({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, metadata={"format": "pt"})
CONFIG = b'{"model_type": "bert"}'


class Evil:
    def __reduce__(self) -> tuple[object, ...]:
        return (posix.system, ("echo x",))


EVIL = pickle.dumps(Evil(), protocol=2)


def key(repo: str) -> RepoKey:
    return RepoKey("huggingface", "model", repo)


def manifest(*entries: str) -> str:
    return "version: 1\nmodels:\n" + "".join(f"  - repo: {e}\n" for e in entries)


def item(report: SyncReport, repo: str):  # type: ignore[no-untyped-def]
    return next(i for i in report.items if i.target.key.repo_id == repo)


def sync_ok(hub: LoopbackHub, store: Store, repo: str, files: dict[str, bytes]):  # type: ignore[no-untyped-def]
    """Serve `files` as `repo`, sync it (expected to succeed) and check its ref moved: its commit and result."""
    commit = hub.add_commit(repo, files)
    report = run(store, hub, manifest(repo))
    assert report.exit_code == ExitCode.OK, report.to_json()
    assert store.read_refs(key(repo))["main"].commit == commit
    return commit, report, item(report, repo)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.at(tmp_path / "store", clock=SYSTEM)


def test_a_benign_safetensors_model_syncs_with_no_findings_and_its_scan_recorded(
    hub: LoopbackHub, store: Store
) -> None:
    commit, _, good = sync_ok(hub, store, "org/good", {"config.json": CONFIG, "model.safetensors": BENIGN})
    assert good.checked is not None and good.checked.scanned
    assert good.checked.scan.findings == () and good.warnings == []
    record = store.read_scan(key("org/good"), commit)
    assert set(record["files"]) == {"config.json", "model.safetensors"}
    assert record["scan"]["findings"] == [] and record["scan"]["size"] == len(CONFIG) + len(BENIGN)
    assert (store.local_root / store.scan_key(key("org/good"), commit)).is_file()
    data = good.to_json()
    assert data["status"] == "ok" and data["scan"]["verdict"] == {
        "ok": True,
        "denied": [],
        "warned": [],
        "allowed": [],
    }


def test_a_malicious_pickle_under_the_default_policy_syncs_with_a_warning(
    hub: LoopbackHub, store: Store
) -> None:
    _, report, evil = sync_ok(hub, store, "org/evil", {"config.json": CONFIG, "pytorch_model.bin": EVIL})
    assert any(
        "pytorch_model.bin" in w and "posix.system" in w and "policy pickle: warn" in w for w in evil.warnings
    )
    warned = evil.to_json()["scan"]["verdict"]["warned"]
    assert [(w["path"], w["kind"], w["rule"]) for w in warned] == [
        ("pytorch_model.bin", "pickle", "policy pickle: warn")
    ]
    lines = list(describe_items(report.items))
    assert lines[0].startswith("ok ") and lines[1].startswith("  warning: pytorch_model.bin:")


def test_a_denied_pickle_fails_its_revision_alone_with_exit_3_and_its_refs_unmoved(
    hub: LoopbackHub, store: Store
) -> None:
    good = hub.add_commit("org/good", {"config.json": CONFIG, "model.safetensors": BENIGN})
    evil = hub.add_commit("org/evil", {"config.json": CONFIG, "pytorch_model.bin": EVIL})
    text = manifest("org/good") + "  - repo: org/evil\n    policy: {pickle: deny}\n"
    report = run(store, hub, text)
    assert report.exit_code == ExitCode.PARTIAL
    failed = item(report, "org/evil")
    assert isinstance(failed.error, PolicyDenied) and not failed.recorded
    message = str(failed.error)
    assert "pytorch_model.bin" in message and "posix.system" in message and "policy pickle: deny" in message
    assert store.read_refs(key("org/evil")) == {}  # its refs are not moved
    assert store.read_snapshot(key("org/evil"), evil) is not None  # its files are kept, recorded, scanned
    assert store.read_scan(key("org/evil"), evil) is not None
    assert store.read_refs(key("org/good"))["main"].commit == good and item(report, "org/good").error is None
    denied = failed.to_json()["scan"]["verdict"]["denied"]
    assert [(d["path"], d["rule"]) for d in denied] == [("pytorch_model.bin", "policy pickle: deny")]
    assert failed.to_json()["status"] == "failed"


def test_a_denied_revision_keeps_the_refs_it_had(hub: LoopbackHub, store: Store) -> None:
    first = hub.add_commit("org/evil", {"config.json": CONFIG})
    text = "version: 1\nmodels:\n  - repo: org/evil\n    policy: {pickle: deny}\n"
    assert run(store, hub, text).exit_code == ExitCode.OK
    hub.add_commit("org/evil", {"pytorch_model.bin": EVIL}, inherit=True)
    assert run(store, hub, text).exit_code == ExitCode.PARTIAL
    assert store.read_refs(key("org/evil"))["main"].commit == first


def test_an_invalid_safetensors_header_always_fails(hub: LoopbackHub, store: Store) -> None:
    broken = BENIGN[:-4]  # the data is 4 bytes short of what the header says
    hub.add_commit("org/broken", {"config.json": CONFIG, "model.safetensors": broken})
    text = "version: 1\nmodels:\n  - repo: org/broken\n    policy: {pickle: allow, remote_code: allow, hub_flagged: allow}\n"
    report = run(store, hub, text)
    assert report.exit_code == ExitCode.PARTIAL
    failed = item(report, "org/broken")
    assert isinstance(failed.error, PolicyDenied)
    assert "model.safetensors" in str(failed.error) and "invalid: always refused" in str(failed.error)
    assert store.read_refs(key("org/broken")) == {}


def test_a_file_the_hub_flagged_fails_under_the_default_policy(hub: LoopbackHub, store: Store) -> None:
    weights = safetensors_sized(bytes(range(256)) * 4)
    hub.add_commit("org/flagged", {"config.json": CONFIG, "model.safetensors": weights})
    hub.set_security("org/flagged", "model.safetensors", status="unsafe", virus="Eicar-Test-Signature")
    report = run(store, hub, manifest("org/flagged"))
    assert report.exit_code == ExitCode.PARTIAL
    failed = item(report, "org/flagged")
    message = str(failed.error)
    assert "model.safetensors" in message and "Eicar-Test-Signature" in message
    assert "policy hub_flagged: deny" in message
    assert store.read_refs(key("org/flagged")) == {}


def test_an_auto_map_to_a_repo_the_manifest_does_not_sync_is_said(
    hub: LoopbackHub, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    config = json.dumps({"model_type": "x", "auto_map": {"AutoModel": "org/other--modeling.Model"}}).encode()
    hub.add_commit("org/x", {"config.json": config, "model.safetensors": BENIGN})
    report = run(store, hub, manifest("org/x"))
    assert report.exit_code == ExitCode.OK, report.to_json()
    said = "auto_map of org/x refers to org/other, which this manifest does not sync: the model will not load offline"
    assert said in item(report, "org/x").warnings and said in caplog.text
    assert item(report, "org/x").to_json()["scan"]["missing_repos"] == ["org/other"]
    # a repo the same manifest syncs is not said
    hub.add_commit("org/other", {"config.json": CONFIG})
    report = run(store, hub, manifest("org/x", "org/other"))
    assert item(report, "org/x").to_json()["scan"]["missing_repos"] == []


def test_a_no_op_re_sync_asks_the_hub_nothing_more_and_does_not_rescan(
    hub: LoopbackHub, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_commit("org/good", {"config.json": CONFIG, "model.safetensors": BENIGN})
    hub.add_commit("org/evil", {"config.json": CONFIG, "pytorch_model.bin": EVIL})
    text = manifest("org/good", "org/evil")
    assert run(store, hub, text).exit_code == ExitCode.OK
    hub.clear_requests()
    assert run(store, hub, text).exit_code == ExitCode.OK
    baseline = len(hub.requests)  # the light commit request per revision
    assert baseline == 2

    def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unchanged revision was scanned again")

    monkeypatch.setattr("mirror.sync.scan.scan_blobs", no_scan)
    hub.clear_requests()
    report = run(store, hub, text)
    assert report.exit_code == ExitCode.OK and len(hub.requests) == baseline
    assert not any("securityStatus" in r.path for r in hub.requests)
    assert all(i.checked is not None and not i.checked.scanned for i in report.items)
    # the recorded scan is judged again by this run's policy
    strict = "version: 1\nmodels:\n  - repo: org/good\n  - repo: org/evil\n    policy: {pickle: deny}\n"
    hub.clear_requests()
    report = run(store, hub, strict)
    assert report.exit_code == ExitCode.PARTIAL and len(hub.requests) == baseline
    assert isinstance(item(report, "org/evil").error, PolicyDenied)


def test_a_new_revision_costs_one_hub_request_more(hub: LoopbackHub, store: Store) -> None:
    hub.add_commit("org/good", {"config.json": CONFIG, "model.safetensors": BENIGN})
    assert run(store, hub, manifest("org/good")).exit_code == ExitCode.OK
    api = [r.path for r in hub.requests if r.path.startswith("/api/")]
    assert len(api) == 2 and "securityStatus=true" in api[1]
    hub.add_commit("org/good", {"config.json": CONFIG + b" "}, inherit=True)  # main moves: a new commit
    hub.clear_requests()
    assert run(store, hub, manifest("org/good")).exit_code == ExitCode.OK
    api = [r.path for r in hub.requests if r.path.startswith("/api/")]
    # the light check that finds the new commit, its listing, then its scan: the one request more
    assert ["securityStatus=true" in p for p in api] == [False, False, True]


def test_a_damaged_scan_record_is_scanned_again(hub: LoopbackHub, store: Store) -> None:
    commit = hub.add_commit("org/good", {"config.json": CONFIG, "model.safetensors": BENIGN})
    assert run(store, hub, manifest("org/good")).exit_code == ExitCode.OK
    store.write_scan(key("org/good"), commit, {"files": "not files"})
    report = run(store, hub, manifest("org/good"))
    assert report.exit_code == ExitCode.OK
    checked = item(report, "org/good").checked
    assert checked is not None and checked.scanned
    assert store.read_scan(key("org/good"), commit)["scan"]["findings"] == []
