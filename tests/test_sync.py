"""`mirror sync` against the loopback hub: what is fetched, verified, recorded, retried and refused."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from mirror.clock import SYSTEM
from mirror.errors import IntegrityError, LockedError, MirrorError
from mirror.lockfile import read_lock, write_lock
from mirror.manifest import parse_manifest
from mirror.repo import RepoKey
from mirror.retry import RetryPolicy
from mirror.settings import Settings
from mirror.store import Store
from mirror.sync import default_source_factory, locked_revisions, plan_locked, plan_targets, sync
from mirror.verify import verify_store
from tests.clocks import NO_WAIT, FakeClock
from tests.hub import Fault, HubFile, LoopbackHub
from tests.modelfiles import ONNX_MODEL, safetensors_sized

FAST = RetryPolicy(clock=NO_WAIT, attempts=4, base=0.01, cap=0.05, total=30)
WEIGHTS = safetensors_sized(bytes(range(256)) * 4096)  # 1 MiB, served as an LFS file
NESTED = {
    "config.json": b'{"model_type": "bert"}',
    "tokenizer/vocab.txt": b"[PAD]\n[UNK]\nhello\n",
    "tokenizer/deep/merges.txt": b"a b\n",
    "onnx/model.onnx": ONNX_MODEL,
}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.at(tmp_path / "store", clock=SYSTEM)


def run(  # type: ignore[no-untyped-def]
    store: Store,
    hub: LoopbackHub,
    manifest: str,
    env: dict[str, str] | None = None,
    policy: RetryPolicy = FAST,
):
    settings = Settings.from_env(store.local_root, {"HF_ENDPOINT": hub.url, **(env or {})})
    specs = parse_manifest(manifest, "test.yml").requests()
    return sync(store, plan_targets(specs), default_source_factory(settings), policy=policy)


def add_nested(hub: LoopbackHub, repo: str = "org/nested") -> str:
    files = [HubFile(p, data=d, lfs=False) for p, d in NESTED.items()] + [
        HubFile("model.safetensors", data=WEIGHTS)
    ]
    return hub.add_commit(repo, files)


def test_sync_verifies_and_records_every_file(hub: LoopbackHub, store: Store) -> None:
    commit = add_nested(hub)
    report = run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n")
    assert report.exit_code == 0, report.to_json()
    snap = store.read_snapshot(RepoKey("huggingface", "model", "org/nested"), commit)
    assert snap is not None and snap.complete
    by_path = {f.path: f for f in snap.files}
    assert set(by_path) == {*NESTED, "model.safetensors"}
    weights = by_path["model.safetensors"]
    assert weights.lfs and weights.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert weights.oid == hub.file_info("org/nested", "model.safetensors").oid  # the pointer's git oid
    for path, data in NESTED.items():
        f = by_path[path]
        assert not f.lfs and f.oid == hub.file_info("org/nested", path).git_sha1
        assert store.local_blob(f.sha256).read_bytes() == data
    assert store.read_refs(RepoKey("huggingface", "model", "org/nested"))["main"].commit == commit
    assert verify_store(store).ok


def test_a_sync_records_the_time_of_its_clock(hub: LoopbackHub, store: Store) -> None:
    commit = add_nested(hub)
    policy = RetryPolicy(clock=FakeClock(1_795_046_400.0).clock)
    assert run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n", policy=policy).exit_code == 0
    key = RepoKey("huggingface", "model", "org/nested")
    snap = store.read_snapshot(key, commit)
    assert snap is not None and snap.synced_at == "2026-11-19T00:00:00Z"
    assert store.read_refs(key)["main"].synced_at == "2026-11-19T00:00:00Z"


def test_revisions_share_content_and_filters_apply(hub: LoopbackHub, store: Store) -> None:
    v1 = hub.add_commit("gpt2", {**NESTED, "README.md": b"v1"}, tags=["v1.0"])
    main = hub.add_commit("gpt2", {**NESTED, "README.md": b"v2"})
    manifest = (
        "version: 1\nmodels:\n  - repo: gpt2\n    revisions: [main, v1.0]\n"
        "    exclude: ['onnx/*']\n    include: ['*.json', '*.txt', '*.md']\n"
    )
    report = run(store, hub, manifest)
    assert report.exit_code == 0
    fetched = sorted(r.path.split("/resolve/")[1].split("/", 1)[1] for r in hub.downloads())
    # the shared files are fetched once, the README twice (its two versions); onnx never
    assert fetched == sorted(
        ["README.md", "README.md", "config.json", "tokenizer/deep/merges.txt", "tokenizer/vocab.txt"]
    )
    key = RepoKey("huggingface", "model", "gpt2")
    refs = store.read_refs(key)
    assert refs["main"].commit == main and refs["v1.0"].commit == v1
    for commit in (main, v1):
        snap = store.read_snapshot(key, commit)
        assert snap is not None and not snap.complete  # filtered: not every upstream file
        assert {f.path for f in snap.files} == {
            "config.json",
            "tokenizer/vocab.txt",
            "tokenizer/deep/merges.txt",
            "README.md",
        }
    assert len(list(store.iter_blobs())) == 5


def test_unchanged_manifest_costs_one_request_per_revision(hub: LoopbackHub, store: Store) -> None:
    add_nested(hub)
    hub.add_tag("org/nested", "v1.0")
    manifest = "version: 1\nmodels:\n  - repo: org/nested\n    revisions: [main, v1.0]\n"
    assert run(store, hub, manifest).exit_code == 0
    records = sorted((store.local_root / "repos").rglob("*.json"))
    written = {p: p.stat().st_mtime_ns for p in records}
    hub.clear_requests()
    report = run(store, hub, manifest)
    assert report.exit_code == 0
    assert hub.downloads() == []
    assert len(hub.requests) == 2
    # the light request snapshot_download makes (the commit only): the store has that commit's listing
    assert all("/revision/" in r.path and "blobs" not in r.path for r in hub.requests)
    assert all(i.downloaded == 0 for i in report.items)
    assert {p: p.stat().st_mtime_ns for p in records} == written  # nothing rewritten either


def test_first_sync_asks_for_the_full_listing_at_once(hub: LoopbackHub, store: Store) -> None:
    add_nested(hub)
    assert run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n").exit_code == 0
    metadata = [r.path for r in hub.requests if r.path.startswith("/api/")]
    assert len(metadata) == 2 and "blobs=true" in metadata[0].lower()
    assert "securitystatus=true" in metadata[1].lower()  # then the hub's own scan of the new commit


def test_a_partial_record_is_not_taken_for_the_listing(hub: LoopbackHub, store: Store) -> None:
    # The first sync took only config.json: the store's record of the commit is not the whole listing, so
    # widening the filter must ask the hub for every file again.
    add_nested(hub)
    narrow = "version: 1\nmodels:\n  - repo: org/nested\n    include: [config.json]\n"
    assert run(store, hub, narrow).exit_code == 0
    hub.clear_requests()
    assert run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n").exit_code == 0
    assert "model.safetensors" in {r.path.rsplit("/", 1)[1] for r in hub.downloads()}
    assert any("blobs=true" in r.path.lower() for r in hub.requests)


def test_moved_branch_fetches_only_changed_files(hub: LoopbackHub, store: Store) -> None:
    add_nested(hub)
    manifest = "version: 1\nmodels:\n  - repo: org/nested\n"
    run(store, hub, manifest)
    hub.add_commit("org/nested", {"config.json": b'{"model_type": "bert", "v": 2}'}, inherit=True)
    hub.clear_requests()
    assert run(store, hub, manifest).exit_code == 0
    assert [r.path.rsplit("/", 1)[1] for r in hub.downloads()] == ["config.json"]
    metadata = [r.path for r in hub.requests if r.path.startswith("/api/")]
    assert len(metadata) == 3 and "blobs=true" in metadata[1].lower()  # the commit moved: then the listing
    assert "securitystatus=true" in metadata[2].lower()  # and the hub's own scan of the new commit


def test_corrupted_body_is_retried_and_never_stored(hub: LoopbackHub, store: Store) -> None:
    add_nested(hub)
    hub.add_fault(Fault("corrupt", match="model.safetensors", times=1))
    hub.add_fault(Fault("corrupt", match="vocab.txt", times=1))
    report = run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n")
    assert report.exit_code == 0
    assert len([r for r in hub.downloads() if "model.safetensors" in r.path]) == 2
    assert verify_store(store).ok
    assert store.has_blob(hashlib.sha256(WEIGHTS).hexdigest())


def test_persistently_corrupted_file_fails_with_integrity(hub: LoopbackHub, store: Store) -> None:
    add_nested(hub)
    hub.add_fault(Fault("corrupt", match="tokenizer/vocab.txt", times=None))
    report = run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n")
    assert report.exit_code == IntegrityError.exit_code == 4
    (item,) = report.items
    assert isinstance(item.error, IntegrityError) and "tokenizer/vocab.txt" in str(item.error)
    good = hashlib.sha256(NESTED["tokenizer/vocab.txt"]).hexdigest()
    assert not store.has_blob(good)
    assert not list((store.local_root / "tmp").iterdir())  # the bad bytes are gone
    assert store.read_refs(RepoKey("huggingface", "model", "org/nested")) == {}  # no snapshot published
    assert verify_store(store).ok


def test_server_errors_and_rate_limits_are_retried(hub: LoopbackHub, store: Store) -> None:
    add_nested(hub)
    hub.add_fault(Fault("status", match="config.json", status=503, times=1))
    hub.add_fault(Fault("status", match="merges.txt", status=429, retry_after=0, times=1))
    hub.add_fault(Fault("status", match="/api/models/", status=500, times=1))
    assert run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n").exit_code == 0
    assert verify_store(store).ok


def test_cut_off_body_resumes_with_range(hub: LoopbackHub, store: Store) -> None:
    add_nested(hub)
    hub.add_fault(Fault("cut", match="model.safetensors", at_byte=300_000, times=1))
    assert run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n").exit_code == 0
    gets = [r for r in hub.downloads() if "model.safetensors" in r.path]
    assert len(gets) == 2
    assert gets[1].headers.get("range", "").startswith("bytes=")
    assert int(gets[1].headers["range"][6:-1]) > 0
    assert store.has_blob(hashlib.sha256(WEIGHTS).hexdigest(), len(WEIGHTS))


def test_server_that_ignores_range_restarts_cleanly(hub: LoopbackHub, store: Store) -> None:
    add_nested(hub)
    hub.ignore_range = True
    hub.add_fault(Fault("cut", match="model.safetensors", at_byte=300_000, times=1))
    assert run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n").exit_code == 0
    assert verify_store(store).ok


def test_one_failing_model_does_not_stop_the_others(hub: LoopbackHub, store: Store) -> None:
    add_nested(hub)
    report = run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n  - repo: org/missing\n")
    assert report.exit_code == 3
    ok, failed = report.items
    assert ok.error is None and len(ok.records) == 5
    assert failed.error is not None and "not found" in str(failed.error)
    alone = run(store, hub, "version: 1\nmodels:\n  - repo: org/missing\n")
    assert alone.exit_code == 1


def test_private_repo_needs_a_token(hub: LoopbackHub, store: Store) -> None:
    add_nested(hub)
    hub.required_token = "hf_secret_token"
    denied = run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n")
    assert denied.exit_code == 1 and "HF_TOKEN" in str(denied.items[0].error)
    allowed = run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n", {"HF_TOKEN": "hf_secret_token"})
    assert allowed.exit_code == 0
    named = run(
        store,
        hub,
        "version: 1\nmodels:\n  - repo: org/nested\n    token_env: MY_TOKEN\n",
        {"MY_TOKEN": "hf_secret_token"},
    )
    assert named.exit_code == 0
    assert "hf_secret_token" not in str(denied.to_json()) + str(allowed.to_json())


def test_second_writer_is_refused(hub: LoopbackHub, store: Store) -> None:
    add_nested(hub)
    with store.lock(), pytest.raises(LockedError, match="pid"):
        run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n")


def test_lock_file_reproduces_exact_commits_after_upstream_moved(
    hub: LoopbackHub, store: Store, tmp_path: Path
) -> None:
    old = add_nested(hub)
    first = run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n    exclude: ['onnx/*']\n")
    lock = tmp_path / "m.lock"
    write_lock(lock, locked_revisions(first))
    hub.add_commit("org/nested", {"config.json": b'{"moved": true}'}, inherit=True)
    fresh = Store.at(tmp_path / "other-store", clock=SYSTEM)
    settings = Settings.from_env(fresh.local_root, {"HF_ENDPOINT": hub.url})
    report = sync(fresh, plan_locked(read_lock(lock)), default_source_factory(settings), policy=FAST)
    assert report.exit_code == 0, report.to_json()
    key = RepoKey("huggingface", "model", "org/nested")
    assert fresh.read_refs(key)["main"].commit == old
    snap = fresh.read_snapshot(key, old)
    assert snap is not None
    assert {f.path: f.sha256 for f in snap.files} == {f.path: f.sha256 for f in first.items[0].records}
    assert "onnx/model.onnx" not in {f.path for f in snap.files}


def test_lock_naming_a_vanished_commit_fails_clearly(hub: LoopbackHub, store: Store, tmp_path: Path) -> None:
    add_nested(hub)
    first = run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n")
    lock = tmp_path / "m.lock"
    write_lock(lock, locked_revisions(first))
    lock.write_text(lock.read_text().replace(first.items[0].commit or "", "ab" * 20))
    settings = Settings.from_env(store.local_root, {"HF_ENDPOINT": hub.url})
    report = sync(store, plan_locked(read_lock(lock)), default_source_factory(settings), policy=FAST)
    assert report.exit_code == 1
    assert "revision not found" in str(report.items[0].error)
    assert "ab" * 20 in str(report.items[0].error)


def test_not_enough_disk_space_is_refused_before_downloading(
    hub: LoopbackHub, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_nested(hub)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(MirrorError, match="free"):
        run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n")
    assert hub.downloads() == []


def test_retry_after_is_waited_out(hub: LoopbackHub, store: Store) -> None:
    add_nested(hub)
    hub.add_fault(Fault("status", match="config.json", status=429, retry_after=1, times=1, method="GET"))
    fake = FakeClock()
    report = run(
        store, hub, "version: 1\nmodels:\n  - repo: org/nested\n", policy=RetryPolicy(clock=fake.clock)
    )
    assert report.exit_code == 0
    assert fake.waits == [1.0]  # the hub's Retry-After, not the backoff (0.5 s at most)
    assert [r.status for r in hub.downloads() if "config.json" in r.path] == [429, 200]


def test_server_error_twice_then_ok(hub: LoopbackHub, store: Store) -> None:
    add_nested(hub)
    hub.add_fault(Fault("status", match="vocab.txt", status=500, times=2, method="GET"))
    assert run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n").exit_code == 0
    assert [r.status for r in hub.downloads() if "vocab.txt" in r.path] == [500, 500, 200]


def test_failures_are_isolated_and_not_found_is_not_retried(hub: LoopbackHub, store: Store) -> None:
    add_nested(hub)
    hub.add_commit("org/flaky", {"config.json": b"{}"})
    hub.add_fault(Fault("status", match="/org/flaky/", status=500, times=None))
    report = run(
        store, hub, "version: 1\nmodels:\n  - repo: org/nested\n  - repo: org/flaky\n  - repo: org/gone\n"
    )
    assert report.exit_code == 3
    ok, flaky, gone = report.items
    assert ok.error is None and len(ok.records) == 5
    assert flaky.error is not None and "giving up after 4 attempts" in str(flaky.error)
    assert gone.error is not None and "check the repo id" in str(gone.error)
    assert len([r for r in hub.requests if "/org/gone" in r.path]) == 1  # 404: asked once
    assert len([r for r in hub.requests if "/org/flaky" in r.path]) == FAST.attempts
    assert store.read_refs(RepoKey("huggingface", "model", "org/nested"))["main"]


def test_unauthorized_is_not_retried(hub: LoopbackHub, store: Store) -> None:
    add_nested(hub)
    hub.add_commit("org/other", {"config.json": b"{}"})
    hub.required_token = "hf_needed"
    report = run(store, hub, "version: 1\nmodels:\n  - repo: org/nested\n")
    assert report.exit_code == 1
    assert "HF_TOKEN" in str(report.items[0].error)
    assert len(hub.requests) == 1


def test_a_failing_revision_keeps_its_last_good_snapshot(hub: LoopbackHub, store: Store) -> None:
    first = add_nested(hub)
    manifest = "version: 1\nmodels:\n  - repo: org/nested\n"
    assert run(store, hub, manifest).exit_code == 0
    hub.add_commit("org/nested", {"config.json": b'{"v": 2}'}, inherit=True)
    hub.add_fault(Fault("corrupt", match="config.json", times=None, method="GET"))
    assert run(store, hub, manifest).exit_code == 4
    key = RepoKey("huggingface", "model", "org/nested")
    assert store.read_refs(key)["main"].commit == first
    assert verify_store(store).ok
