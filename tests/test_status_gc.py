"""`status` and `gc` in process, on a store the tests fill (no hub): what each revision holds, what upstream
says through a fake source, and what gc keeps and removes; the CLI's exit codes for both."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from mirror.cli import main
from mirror.errors import NotFoundError
from mirror.gc import collect_garbage, plan_keep
from mirror.manifest import parse_manifest
from mirror.repo import RepoKey, RevisionRequest
from mirror.retry import RetryPolicy
from mirror.status import revision_status, store_targets
from mirror.store import Store
from mirror.sync import plan_targets
from mirror.verify import verify_store
from tests.clocks import NO_WAIT
from tests.conftest import TINY_MAIN, TINY_V1, SampleStore


def blob(data: bytes, store: Store) -> Path:
    return store.local_blob(hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class Resolved:
    commit: str


@dataclass(frozen=True)
class Upstream:
    """A source that resolves from a table of (repo id, revision) -> commit; anything else is not found."""

    commits: Mapping[tuple[str, str], str]

    def resolve(self, repo_id: str, repo_type: str, revision: str) -> Resolved:
        if (repo_id, revision) not in self.commits:
            raise NotFoundError(f"{repo_id}@{revision}: not found")
        return Resolved(self.commits[repo_id, revision])


def test_status_lists_what_the_store_holds(sample_store: SampleStore) -> None:
    rows = revision_status(sample_store.store, store_targets(sample_store.store))
    by_name = {(r.key.repo_id, r.revision): r for r in rows}
    assert set(by_name) == {
        ("org/tiny", "main"),
        ("org/tiny", "v1.0"),
        ("gpt2", "main"),
        ("org/data", "main"),
    }
    main_row, v1_row = by_name["org/tiny", "main"], by_name["org/tiny", "v1.0"]
    assert (
        main_row.commit == sample_store.tiny.commits["main"] and main_row.synced_at == "2026-11-20T10:00:00Z"
    )
    assert (main_row.files, main_row.size) == (len(TINY_MAIN), sum(map(len, TINY_MAIN.values())))
    assert (v1_row.files, v1_row.size) == (len(TINY_V1), sum(map(len, TINY_V1.values())))
    assert by_name["org/data", "main"].key.repo_type == "dataset"
    assert {r.state for r in rows} == {"held"}


def test_status_of_a_manifest_names_what_is_not_synced(sample_store: SampleStore) -> None:
    specs = parse_manifest("version: 1\nmodels:\n  - repo: org/tiny\n  - repo: org/absent\n").requests()
    rows = revision_status(sample_store.store, plan_targets(specs))
    assert [(r.key.repo_id, r.state, r.commit, r.files) for r in rows] == [
        ("org/tiny", "held", sample_store.tiny.commits["main"], len(TINY_MAIN)),
        ("org/absent", "not synced", None, 0),
    ]


def test_status_against_upstream_says_up_to_date_moved_or_the_error(sample_store: SampleStore) -> None:
    tiny = sample_store.tiny.commits
    upstream = Upstream({("org/tiny", "main"): tiny["main"], ("org/tiny", "v1.0"): "f" * 40})

    def source_for(request: RevisionRequest) -> Upstream:
        return upstream

    specs = parse_manifest(
        "version: 1\nmodels:\n  - repo: org/tiny\n    revisions: [main, v1.0]\n  - repo: gpt2\n"
    )
    rows = revision_status(
        sample_store.store,
        plan_targets(specs.requests()),
        upstream=(source_for, RetryPolicy(clock=NO_WAIT, attempts=1)),
    )
    states = {(r.key.repo_id, r.revision): (r.state, r.upstream) for r in rows}
    assert states == {
        ("org/tiny", "main"): ("up to date", tiny["main"]),
        ("org/tiny", "v1.0"): ("upstream moved", "f" * 40),
        ("gpt2", "main"): ("error", None),
    }
    assert "gpt2@main: not found" in str(next(r.error for r in rows if r.key.repo_id == "gpt2"))


def test_gc_keeps_what_the_manifest_names_and_a_dry_run_removes_nothing(sample_store: SampleStore) -> None:
    store = sample_store.store
    keep = plan_keep(store, parse_manifest("version: 1\nmodels:\n  - repo: org/tiny\n").requests())
    only_theirs = [  # content no kept revision uses: org/tiny v1.0's config, gpt2's config, the dataset's csv
        blob(TINY_V1["config.json"], store),
        blob(b'{"model_type": "gpt2"}\n', store),
        blob(b"a,b\n1,2\n", store),
    ]
    dry = collect_garbage(store, keep, dry_run=True)
    assert (len(dry.refs), len(dry.snapshots)) == (3, 3)
    assert sorted(dry.blobs) == sorted(p.name for p in only_theirs)
    assert dry.bytes == sum(p.stat().st_size for p in only_theirs)
    assert all(p.exists() for p in only_theirs)
    assert len(revision_status(store, store_targets(store))) == 4

    done = collect_garbage(store, keep, dry_run=False)
    assert (done.refs, done.snapshots, done.blobs) == (dry.refs, dry.snapshots, dry.blobs)
    assert not any(p.exists() for p in only_theirs)
    assert blob(TINY_V1["tokenizer.json"], store).exists()  # gpt2 shared it with org/tiny main
    assert [(r.key.repo_id, r.revision) for r in revision_status(store, store_targets(store))] == [
        ("org/tiny", "main")
    ]
    assert store.read_refs(RepoKey("huggingface", "model", "gpt2")) == {}
    assert verify_store(store).ok


def test_gc_without_a_manifest_keeps_every_revision_and_drops_orphans(sample_store: SampleStore) -> None:
    store = sample_store.store
    orphan = store.temp_path("orphan")
    orphan.write_bytes(b"orphan")
    store.add_blob(orphan, hashlib.sha256(b"orphan").hexdigest())
    report = collect_garbage(store, plan_keep(store, None), dry_run=False)
    assert (report.refs, report.snapshots, report.blobs) == ([], [], [hashlib.sha256(b"orphan").hexdigest()])
    assert len(revision_status(store, store_targets(store))) == 4
    assert verify_store(store).ok


def exit_code(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def test_the_cli_exit_codes_of_status_and_gc(
    sample_store: SampleStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(sample_store.store.local_root)
    manifest = tmp_path / "m.yml"
    manifest.write_text("version: 1\nmodels:\n  - repo: org/tiny\n")
    assert exit_code(["status", "--store", root]) == 0
    out = capsys.readouterr().out
    assert "held" in out and sample_store.tiny.commits["main"] in out
    assert exit_code(["status", str(tmp_path / "missing.yml"), "--store", root]) == 2
    assert exit_code(["gc", str(manifest), "--store", root, "--dry-run"]) == 0
    assert "would remove 3 blobs" in capsys.readouterr().out
    assert exit_code(["gc", str(manifest), "--store", root]) == 0
    assert "removed 3 blobs" in capsys.readouterr().out
    assert exit_code(["gc", str(manifest), "--store", root, "--dry-run"]) == 0
    assert "would remove 0 blobs" in capsys.readouterr().out
