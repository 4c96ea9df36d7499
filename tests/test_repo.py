"""Repo identity (mirror.repo): the id grammar, folder names and their parse-back, RepoKey's one string form
and JSON fields, the revision request that manifests, lock files and the store all make, and the clock the
store's lock runs on. Fast: no hub, no subprocess."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from mirror.cli import main
from mirror.errors import IntegrityError, Interrupted, LockedError, ManifestError
from mirror.fsutil import LOCK_POLL, flock_wait
from mirror.gc import plan_keep
from mirror.lockfile import LockedFile, LockedRevision, read_lock, write_lock
from mirror.manifest import parse_manifest
from mirror.repo import (
    REPO_TYPES,
    SOURCES,
    SYNC_REPO_TYPES,
    RepoKey,
    RevisionRequest,
    cache_folder_name,
    check_repo_id,
    folder_name,
    is_repo_id,
    parse_cache_folder_name,
    repo_id_of_folder,
    repo_id_problem,
)
from mirror.status import RevisionStatus, store_targets
from mirror.store import Store
from mirror.sync import ItemResult, Target, plan_locked, plan_targets
from tests.clocks import FakeClock
from tests.conftest import put_repo

COMMIT = "c" * 40
SHA = "5" * 64


# --- the grammar and folder names ------------------------------------------------------------------

ODD_IDS = ["gpt2", "org/name", "Org.Name/model_v1.5", "a/b", "a-b/c_d", "x" * 96, "o/" + "n" * 96, "1/2.0"]


@pytest.mark.parametrize("repo_id", ODD_IDS)
def test_folder_name_round_trip(repo_id: str) -> None:
    name = folder_name(repo_id)
    assert "/" not in name
    assert repo_id_of_folder(name) == repo_id
    assert parse_cache_folder_name(cache_folder_name("model", repo_id)) == ("model", repo_id)
    assert parse_cache_folder_name(cache_folder_name("dataset", repo_id)) == ("dataset", repo_id)


def test_cache_folder_names_are_huggingface_hubs() -> None:
    assert cache_folder_name("model", "org/name") == "models--org--name"
    assert cache_folder_name("dataset", "org/name") == "datasets--org--name"
    assert cache_folder_name("model", "gpt2") == "models--gpt2"
    assert parse_cache_folder_name("spaces--org--app") == ("space", "org/app")
    # Not a repo folder of any kind: the layouts skip these.
    for other in ("models", "model--org--name", "widgets--org--name", ".locks", "tmp--x"):
        assert parse_cache_folder_name(other) is None, other


@pytest.mark.parametrize(
    ("repo_id", "why"),
    [
        ("org--x/name", "'--'"),
        ("org/na--me", "'--'"),
        ("org/na..me", "'..'"),
        ("a/b/c", "more than one '/'"),
        ("/name", "empty part"),
        ("org/", "empty part"),
        ("-org/name", "start or end"),
        ("org/name.", "start or end"),
        ("org/name.git", ".git"),
        ("org/na me", "may only contain"),
        ("org/name\n", "may only contain"),  # a trailing newline is no part of an id
        ("o/" + "n" * 97, "at most 96"),
    ],
)
def test_the_grammar_refuses(repo_id: str, why: str) -> None:
    problem = repo_id_problem(repo_id)
    assert problem is not None and why in problem
    assert not is_repo_id(repo_id)
    with pytest.raises(IntegrityError, match="invalid repo id"):
        check_repo_id(repo_id)
    with pytest.raises(IntegrityError):
        folder_name(repo_id)  # `--` cannot be in an id, so `org--name` parses back one way only


def test_a_manifest_says_the_grammars_reason(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"models\[0\]\.repo.*cannot contain '--'"):
        parse_manifest("version: 1\nmodels:\n  - repo: org/na--me\n")
    with pytest.raises(ManifestError, match="looks like a URL"):
        parse_manifest("version: 1\nmodels:\n  - repo: huggingface.co/gpt2\n")


def test_kinds_and_hubs() -> None:
    assert SOURCES == ("huggingface", "modelscope")
    assert set(SYNC_REPO_TYPES) < set(REPO_TYPES)  # a bundle may hold a space; a manifest cannot ask for one
    with pytest.raises(ManifestError, match="unknown type 'space'"):
        parse_manifest("version: 1\nmodels:\n  - {repo: org/app, type: space}\n")


# --- RepoKey -----------------------------------------------------------------------------------------

KEYS = [
    (RepoKey("huggingface", "model", "org/name"), "huggingface:org/name"),
    (RepoKey("huggingface", "dataset", "org/name"), "huggingface:dataset:org/name"),
    (RepoKey("modelscope", "model", "iic/x"), "modelscope:iic/x"),
    (RepoKey("huggingface", "space", "gpt2"), "huggingface:space:gpt2"),
]


@pytest.mark.parametrize(("key", "text"), KEYS)
def test_repo_key_string_form_and_json_fields(key: RepoKey, text: str) -> None:
    assert str(key) == text
    assert key.to_json() == {"source": key.source, "repo_type": key.repo_type, "repo_id": key.repo_id}


def test_a_duplicate_dataset_is_named_by_the_key() -> None:
    with pytest.raises(ManifestError, match=r"huggingface:dataset:org/d is already listed at line 3"):
        parse_manifest(
            "version: 1\nmodels:\n  - {repo: org/d, type: dataset}\n  - {repo: org/d, type: dataset}\n"
        )


# --- one request type from a manifest, a lock file and the store --------------------------------------

KEY = RepoKey("huggingface", "model", "org/a")


def test_a_manifest_entry_makes_one_request_per_revision() -> None:
    manifest = parse_manifest(
        "version: 1\nmodels:\n  - repo: org/a\n    revisions: [main, v1]\n    include: ['*.json']\n"
        "    endpoint: https://hub.example\n    token_env: MY_TOKEN\n  - {repo: org/b, type: dataset}\n"
    )
    first = RevisionRequest(KEY, "main", ("*.json",), endpoint="https://hub.example", token_env="MY_TOKEN")
    assert manifest.requests() == [
        first,
        replace(first, revision="v1"),
        RevisionRequest(RepoKey("huggingface", "dataset", "org/b"), "main"),
    ]
    assert manifest.requests()[0].wants("config.json") and not manifest.requests()[0].wants("w.bin")


def test_a_manifest_a_lock_file_and_the_store_make_the_same_request(tmp_path: Path) -> None:
    (from_manifest,) = parse_manifest("version: 1\nmodels:\n  - repo: org/a\n").requests()
    lock = tmp_path / "m.lock"
    write_lock(lock, [LockedRevision(KEY, "main", COMMIT, (LockedFile("config.json", 2, SHA),))])
    (locked,) = read_lock(lock)
    store = Store.at(tmp_path / "store", clock=FakeClock().clock)
    put_repo(store, "org/a", {"main": {"config.json": b"{}"}})
    assert from_manifest == locked.request == store.requests()[0] == RevisionRequest(KEY, "main")
    # ... and the engines take it alike: the same sync target, the same revision kept by gc.
    assert plan_targets([from_manifest]) == store_targets(store)
    assert plan_locked([locked])[0].requests == (from_manifest,)
    commit = store.read_refs(KEY)["main"].commit
    assert plan_keep(store, [from_manifest]) == plan_keep(store, store.requests()) == {KEY: {"main": commit}}


def test_requests_for_one_revision_unite_their_filters() -> None:
    (target,) = plan_targets(
        [RevisionRequest(KEY, "main", include=("*.json",)), RevisionRequest(KEY, "main", include=("*.txt",))]
    )
    assert target.wants("a.json") and target.wants("b.txt") and not target.wants("c.bin")


# --- the JSON vocabulary --------------------------------------------------------------------------------


def test_lock_files_say_repo_id_and_still_read_repo(tmp_path: Path) -> None:
    files = (LockedFile("config.json", 2, SHA),)
    revision = LockedRevision(
        RepoKey("huggingface", "dataset", "org/d"), "main", COMMIT, files, "https://hub.example", "TOK"
    )
    new = tmp_path / "new.lock"
    write_lock(new, [revision])
    (entry,) = json.loads(new.read_text())["revisions"]
    assert entry == {
        "source": "huggingface",
        "repo_type": "dataset",
        "repo_id": "org/d",
        "revision": "main",
        "commit": COMMIT,
        "endpoint": "https://hub.example",
        "token_env": "TOK",
        "files": [{"path": "config.json", "size": 2, "sha256": SHA}],
    }
    assert read_lock(new) == [revision]
    old = tmp_path / "old.lock"  # as mirror wrote them before: `type` and `repo`
    old_entry = {k: v for k, v in entry.items() if k not in ("repo_type", "repo_id")}
    old.write_text(
        json.dumps({"version": 1, "revisions": [{**old_entry, "type": "dataset", "repo": "org/d"}]})
    )
    assert read_lock(old) == [revision]
    del old_entry["source"]
    old.write_text(
        json.dumps({"version": 1, "revisions": [{**old_entry, "source": "huggingface", "repo": "org/d"}]})
    )
    assert read_lock(old)[0].key == RepoKey("huggingface", "model", "org/d")  # no type: a model, as before
    old.write_text(
        json.dumps({"version": 1, "revisions": [{**old_entry, "source": "huggingface", "repo_id": "a--b"}]})
    )
    with pytest.raises(ManifestError, match="bad repo id"):
        read_lock(old)


def test_sync_and_status_items_name_the_repo_by_its_json_fields() -> None:
    key = RepoKey("huggingface", "dataset", "org/d")
    item = ItemResult(Target(key, "main", (RevisionRequest(key, "main"),)), commit=COMMIT).to_json()
    row = RevisionStatus(key, "main", COMMIT, "2026-11-20T10:00:00Z", 1, 2).to_json()
    for data in (item, row):
        assert {k: data[k] for k in ("source", "repo_type", "repo_id", "revision")} == {
            **key.to_json(),
            "revision": "main",
        }
        assert "repo" not in data and "type" not in data


# --- the store's clock ------------------------------------------------------------------------------------


def test_flock_wait_waits_on_the_clock_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = os.open(path, os.O_RDWR | os.O_CREAT)
    waiter = os.open(path, os.O_RDWR)
    try:
        flock_wait(holder, 0, lambda: LockedError("held"), clock=None)
        fake = FakeClock()
        with pytest.raises(LockedError, match="held"):
            flock_wait(waiter, 1.0, lambda: LockedError("held"), clock=fake.clock)
        assert fake.waits == [LOCK_POLL] * 5  # a second of fake time, no real sleeping
        with pytest.raises(LockedError):
            flock_wait(waiter, 0, lambda: LockedError("held"), clock=None)  # no wait needs no clock
        with pytest.raises(ValueError, match="needs a clock"):
            flock_wait(waiter, 1.0, lambda: LockedError("held"), clock=None)
        stop = threading.Event()
        stop.set()
        stopped = FakeClock()
        with pytest.raises(Interrupted):
            flock_wait(
                waiter,
                3600,
                lambda: LockedError("held"),
                clock=stopped.clock,
                stop=stop,
                stopped=lambda: Interrupted("stopped"),
            )
        assert stopped.waits == []  # stopped at the first wait
    finally:
        os.close(waiter)
        os.close(holder)


def test_the_store_lock_is_stamped_and_waited_for_by_the_stores_clock(tmp_path: Path) -> None:
    fake = FakeClock(1_795_046_400.0)  # 2026-11-19T00:00:00Z
    store = Store.at(tmp_path / "store", clock=fake.clock)
    with store.lock():
        assert "since 2026-11-19T00:00:00Z" in (store.local_root / "lock").read_text()
        with (
            pytest.raises(LockedError, match="holds the store lock"),
            Store.at(store.local_root, clock=fake.clock).lock(0.5),
        ):
            pass
    assert sum(fake.waits) == pytest.approx(0.6)  # three polls of fake time


def test_status_json_names_each_repo_by_its_json_fields(
    tmp_path: Path, isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store.at(tmp_path / "store", clock=FakeClock().clock)
    put_repo(store, "org/d", {"main": {"a.csv": b"1"}}, repo_type="dataset")
    with pytest.raises(SystemExit) as info:
        main(["status", "--store", str(store.local_root), "--json"])
    assert info.value.code in (0, None)
    (row,) = json.loads(capsys.readouterr().out)
    assert {k: row[k] for k in ("source", "repo_type", "repo_id", "revision")} == {
        "source": "huggingface",
        "repo_type": "dataset",
        "repo_id": "org/d",
        "revision": "main",
    }
