"""The import's planning step, in memory: from an index (built here, no bundle on disk), the volumes given,
what the target holds and what earlier imports of a set kept, what is carried, taken from the target,
missing (and why), staged, and the space needed."""

from __future__ import annotations

from pathlib import Path

from mirror.bundle import BundleIndex, Chunk, IndexedCommit, IndexedRepo, Placement, VolumeSet
from mirror.importing import Kept, TargetView, plan_import
from mirror.importing.plan import BLOCK, OVERHEAD, Gathered
from mirror.snapshot import FileRecord
from tests.conftest import fake_commit, file_record

SHARED = file_record("model.safetensors", b"w" * 1000, lfs=True)
CONFIG = file_record("config.json", b'{"a": 1}', lfs=False)
TOKENS = file_record("tokenizer.json", b"t" * 300, lfs=False)
BIG = file_record("big.bin", b"b" * 5000, lfs=True)

NAMES = ("m.001.tar.zst", "m.002.tar.zst", "m.003.tar.zst")
SET_ID = "5" * 64


def repo(repo_id: str, *files: FileRecord) -> IndexedRepo:
    commit = fake_commit(repo_id)
    return IndexedRepo(
        source="huggingface",
        repo_type="model",
        repo_id=repo_id,
        revisions=(("main", commit),),
        commits=(IndexedCommit(commit, True, tuple(sorted(files, key=lambda f: f.path))),),
    )


A = repo("org/a", SHARED, CONFIG)
B = repo("org/b", SHARED, TOKENS)


def index(
    *repos: IndexedRepo, placements: dict[str, Placement] | None = None, volume: int = 0
) -> BundleIndex:
    return BundleIndex(
        created="2026-12-01T00:00:00Z",
        repos=repos,
        placements=placements or {},
        volume_set=VolumeSet(SET_ID, volume, NAMES) if volume else None,
    )


def cost(files: int, records: int, size: int) -> int:
    return size + BLOCK * (files + records) + OVERHEAD


def test_a_plain_bundle_carries_everything_and_counts_each_content_once_when_shared() -> None:
    plan = plan_import(index(A, B), {0}, TargetView())
    assert plan.carried == {SHARED.sha256, CONFIG.sha256, TOKENS.sha256}
    assert plan.from_target == () and plan.kept == frozenset()
    assert list(plan.files) == [CONFIG.sha256, SHARED.sha256, TOKENS.sha256]  # first met, in index order
    assert (plan.space.bytes, plan.space.files) == (cost(3, 4, SHARED.size + CONFIG.size + TOKENS.size), 3)
    assert plan.to_stage(set()) == set(plan.carried)
    assert plan.complete(plan.carried) == [A, B]
    assert plan.missing(Gathered(at_hand=plan.carried)) == ()


def test_what_the_target_holds_is_not_counted_again() -> None:
    held = {SHARED.sha256: (Path("/t/blobs/x"),)}
    plan = plan_import(index(A, B), {0}, TargetView(held=held))
    assert plan.held == held
    assert (plan.space.bytes, plan.space.files) == (cost(2, 4, CONFIG.size + TOKENS.size), 2)


def test_each_copy_the_layout_keeps_apart_counts() -> None:
    # The layout lacks a copy of the weights for each repo, and the config of A.
    lacking = (SHARED.size, CONFIG.size, SHARED.size)
    plan = plan_import(index(A, B), {0}, TargetView(lacking=lacking))
    assert (plan.space.bytes, plan.space.files) == (cost(3, 4, sum(lacking)), 3)
    assert plan_import(index(A, B), {0}, TargetView(lacking=())).space.files == 0


def test_a_delta_takes_what_it_leaves_out_from_the_target() -> None:
    plan = plan_import(index(A, B, placements={SHARED.sha256: Placement(in_target=True)}), {0}, TargetView())
    assert plan.carried == {CONFIG.sha256, TOKENS.sha256}
    assert plan.from_target == (SHARED.sha256,)
    assert (plan.space.bytes, plan.space.files) == (cost(2, 2, CONFIG.size + TOKENS.size), 2)
    # Nothing in the target: no repo can be completed, so nothing is staged, and both are missing.
    assert plan.possible(set()) == [] and plan.to_stage(set()) == set()
    missing = plan.missing(Gathered(at_hand=frozenset()))
    assert [m.repo for m in missing] == [A.key, B.key]
    assert [(f.path, f.why) for f in missing[0].files] == [
        ("model.safetensors", "not in the target, which this delta expects to hold it")
    ]
    assert missing[0].volumes == ()
    # Found in the target: both are completed.
    found = {SHARED.sha256}
    assert plan.to_stage(found) == {CONFIG.sha256, TOKENS.sha256}
    assert plan.complete(found | plan.carried) == [A, B]


def test_a_damaged_copy_in_the_target_is_why_a_delta_repo_is_missing() -> None:
    plan = plan_import(index(A, placements={SHARED.sha256: Placement(in_target=True)}), {0}, TargetView())
    (missing,) = plan.missing(Gathered(at_hand={CONFIG.sha256}, corrupt={SHARED.sha256: ["/t/blobs/x"]}))
    assert [f.why for f in missing.files] == ["the target's copy is damaged (/t/blobs/x)"]


def volume_index(volume: int) -> BundleIndex:
    """Three volumes: A's weights and config in 1, B's tokenizer in 2, C's big file cut across 2 and 3."""
    c = repo("org/c", BIG)
    chunks = (Chunk(2, 2000, "1" * 64), Chunk(3, 3000, "2" * 64))
    placements = {
        SHARED.sha256: Placement(volume=1),
        CONFIG.sha256: Placement(volume=1),
        TOKENS.sha256: Placement(volume=2),
        BIG.sha256: Placement(chunks=chunks),
    }
    return index(A, B, c, placements=placements, volume=volume)


def test_volumes_partially_given() -> None:
    plan = plan_import(volume_index(1), {1}, TargetView())
    assert plan.carried == {SHARED.sha256, CONFIG.sha256}
    assert plan.from_target == (TOKENS.sha256, BIG.sha256)
    assert (plan.space.bytes, plan.space.files) == (
        cost(2, 3, SHARED.size + CONFIG.size),
        2,
    )  # B's weights too
    # Of a set, everything not at hand is staged (kept for the next volumes), whatever can be completed.
    assert plan.to_stage(set()) == set(plan.files)
    missing = plan.missing(Gathered(at_hand=plan.carried))
    assert [m.repo.repo_id for m in missing] == ["org/b", "org/c"]
    assert [(f.path, f.why) for f in missing[0].files] == [("tokenizer.json", f"in {NAMES[1]} (not given)")]
    assert missing[0].volumes == (NAMES[1],)
    assert missing[1].volumes == (NAMES[1], NAMES[2])


def test_a_damaged_volume_is_named_as_damaged() -> None:
    plan = plan_import(volume_index(1), {1, 2}, TargetView())
    assert TOKENS.sha256 in plan.carried
    missing = plan.missing(Gathered(at_hand={SHARED.sha256, CONFIG.sha256}, damaged={2}))
    assert [m.repo.repo_id for m in missing] == ["org/b", "org/c"]
    assert missing[0].files[0].why == f"in {NAMES[1]} (damaged)"
    assert missing[1].files[0].why == f"in {NAMES[1]} (damaged), {NAMES[2]} (not given)"


def test_chunks_kept_by_an_earlier_import_count_as_carried() -> None:
    # Volume 2 was imported before: the first chunk of the big file is kept, the tokenizer kept whole.
    kept = Kept(whole=frozenset({TOKENS.sha256}), chunks={BIG.sha256: frozenset({0})})
    plan = plan_import(volume_index(3), {3}, TargetView(), kept)
    assert plan.carried == {BIG.sha256}
    assert plan.kept == {TOKENS.sha256}
    assert plan.from_target == (CONFIG.sha256, SHARED.sha256)
    assert (plan.space.bytes, plan.space.files) == (cost(1, 1, BIG.size), 1)
    # The big file's last chunk arrives; what is still missing is volume 1's.
    gathered = Gathered(at_hand={TOKENS.sha256, BIG.sha256}, chunks={BIG.sha256: {0, 1}})
    missing = plan.missing(gathered)
    assert [(m.repo.repo_id, m.volumes) for m in missing] == [("org/a", NAMES[:1]), ("org/b", NAMES[:1])]
    assert [r.repo_id for r in plan.complete(gathered.at_hand)] == ["org/c"]


def test_chunks_that_do_not_join_are_named() -> None:
    plan = plan_import(volume_index(2), {2, 3}, TargetView())
    assert BIG.sha256 in plan.carried
    gathered = Gathered(at_hand={TOKENS.sha256}, chunks={BIG.sha256: {0, 1}}, unjoined={BIG.sha256})
    a, b, c = plan.missing(gathered)
    assert (a.repo.repo_id, b.repo.repo_id) == ("org/a", "org/b") and a.volumes == b.volumes == (NAMES[0],)
    assert c.repo.repo_id == "org/c" and c.volumes == ()
    assert [f.why for f in c.files] == ["its verified chunks do not join to its sha256"]


def test_the_plan_is_the_same_whatever_order_the_volumes_are_given() -> None:
    given = volume_index(2)
    assert plan_import(given, [3, 2], TargetView()) == plan_import(given, (2, 3), TargetView())


def test_a_receipt_reads_back_as_written() -> None:
    """The typed receipt the layouts write (one module builds it and reads it back)."""
    import json
    from dataclasses import replace

    from mirror.receipt import Receipt

    c = repo("org/c", BIG, CONFIG)
    receipt = Receipt.of(
        Path("/x/m.tar.zst"), "f" * 64, index(c), c, layout="dir", symlinks=False, volumes=NAMES[:2]
    )
    folder = replace(receipt, folder="org/c", revision="main", commit=c.revisions[0][1])
    for written in (receipt, folder):
        data = json.loads(written.to_bytes())
        assert Receipt.from_json(data) == written
        assert written.to_bytes() == (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
    assert sorted(receipt.to_json()) == sorted(
        [
            "layout", "symlinks", "bundle", "volumes", "bundle_id", "bundle_created", "bundle_tool_version",
            "source", "repo_type", "repo_id", "revisions", "commits",
        ]
    )  # fmt: skip
    assert folder.files() == [(c.commits[0].commit, f.path, f.size, f.sha256) for f in (BIG, CONFIG)]
