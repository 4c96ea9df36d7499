"""`mirror import --layout store` and `mirror inventory --layout store`: a store that came across the gap in
bundles is the store `mirror sync` wrote (records and refs byte for byte, the same blobs), with the import's
guarantees: idempotent, deltas, volume sets, signatures, killed at any step old-or-new, the writer lock,
hostile bundles refused with the store untouched."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mirror.bundle import read_index
from mirror.cli import main
from mirror.clock import SYSTEM, Clock
from mirror.errors import IntegrityError, LockedError
from mirror.export import Signer, export
from mirror.importing import group_bundles, import_bundle, import_unit
from mirror.inventory import read_have, take_inventory
from mirror.manifest import parse_manifest
from mirror.repo import RepoKey
from mirror.retry import RetryPolicy
from mirror.settings import Settings
from mirror.signing import FolderSequences, TrustedKey, TrustPolicy, key_id, read_sequence
from mirror.store import Store
from mirror.sync import default_source_factory, plan_targets, sync
from mirror.verify import verify_store, verify_target
from tests.clocks import NO_WAIT, FakeClock
from tests.hub import HubFile, LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.test_hostile import CASES, Fixture, fx, good_parts, tree_state  # noqa: F401 - fx: a fixture
from tests.test_import_safety import Steps, import_killed_at

T0 = 1_764_936_000.0  # the first sync (2025-12-05T12:00:00Z)
T1 = T0 + 86_400.0  # the second, once main moved upstream
WEIGHTS = safetensors_sized(
    random.Random(13).randbytes(230_000)
)  # LFS weights, chunked across 100 KB volumes
MANIFEST = """version: 1
models:
  - repo: org/tiny
    revisions: [main, v1.0]
  - repo: org/data
    type: dataset
  - repo: org/filtered
    include: ["*.json"]
"""


class Time:
    """The sync's clock: wall time that moves only when the test says (every record of one sync gets the
    same `synced_at`), waits that return at once."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.clock = Clock(time=lambda: self.now, wait=NO_WAIT.wait)


@dataclass(frozen=True)
class World:
    first: Path  # the store after the first sync
    later: Path  # the same store after main of org/tiny moved and a second sync
    bundle: Path  # the full export of `first`
    bundle_later: Path  # the full export of `later`
    clock: Clock
    work: Path


def sync_into(root: Path, hub: LoopbackHub, time: Time) -> None:
    store = Store.at(root, clock=time.clock)
    settings = Settings.from_env(root, {"HF_ENDPOINT": hub.url})
    targets = plan_targets(parse_manifest(MANIFEST, "m.yml").requests())
    policy = RetryPolicy(clock=time.clock, attempts=2, base=0.01, cap=0.05, total=30)
    report = sync(store, targets, default_source_factory(settings), policy=policy)
    assert report.exit_code == 0, report


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("store-layout")
    time = Time(T0)
    first, later = work / "first", work / "later"
    with LoopbackHub() as hub:
        hub.add_commit(
            "org/tiny",
            [
                HubFile("config.json", data=b'{"model_type": "bert"}\n'),
                HubFile("model.safetensors", data=WEIGHTS),
                HubFile("tokenizer/vocab.txt", data=b"[PAD]\nhello\n" * 50),
                HubFile("copy/vocab.txt", data=b"[PAD]\nhello\n" * 50),  # one content, two paths
            ],
            tags=["v1.0"],
        )
        hub.add_commit("org/data", {"train.csv": b"a,b\n1,2\n"}, repo_type="dataset")
        hub.add_commit("org/filtered", {"config.json": b"{}\n", "weights.bin": b"\x01" * 5000})
        sync_into(first, hub, time)
        shutil.copytree(first, later)
        hub.add_commit("org/tiny", {"config.json": b'{"model_type": "bert", "v": 2}\n'}, inherit=True)
        time.now = T1
        sync_into(later, hub, time)
    bundle = export(Store.at(first, clock=time.clock), None, work / "first.tar.zst").index
    assert bundle.created == "2025-12-05T12:00:00Z"
    export(Store.at(later, clock=time.clock), None, work / "later.tar.zst")
    yield World(first, later, work / "first.tar.zst", work / "later.tar.zst", time.clock, work)


def records(root: Path) -> dict[str, bytes]:
    """The store's records (commit records and refs), by path, byte for byte. The scans (scans/<commit>.json)
    are left out: a sync's holds its notes on the hub's scan, which a bundle does not carry yet, and an
    import records its own (tests/test_import_policy.py)."""
    found = sorted((root / "repos").rglob("*.json"))
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in found if p.parent.name != "scans"}


def blobs(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "blobs").rglob("*")) if p.is_file()}


def same_store(a: Path, b: Path) -> None:
    assert records(b) == records(a)
    assert blobs(b) == blobs(a)


def state(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything in a store with times (tests/test_hostile.tree_state), but the lock file, whose stamp
    every writer rewrites."""
    return {k: v for k, v in tree_state(root).items() if k != "lock"}


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The CLI in process: its exit code, stdout and stderr."""
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_imported_store_is_the_synced_store(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Into an empty store named by $MIRROR_STORE (the default target): the same records and refs byte for
    byte, the same blobs, the same `mirror status`; verify passes (the store's and --target's); the store
    exports the very same bundle again; a second import changes nothing."""
    target = tmp_path / "far" / "store"
    monkeypatch.setenv("MIRROR_STORE", str(target))
    code, out, err = run_cli(["import", str(world.bundle), "--layout", "store", "--json", "-q"], capsys)
    assert code == 0, err
    report = json.loads(out)["bundles"][0]
    assert {r["repo_id"] for r in report["repos"]} == {"org/tiny", "org/data", "org/filtered"}
    same_store(world.first, target)
    snap = Store.at(target, clock=world.clock).read_snapshot(
        RepoKey("huggingface", "model", "org/filtered"),
        read_index(world.bundle).repos[1].commits[0].commit,
    )
    assert snap is not None and not snap.complete and snap.listing is not None  # a filtered sync's record
    assert not (target / "tmp").exists()
    statuses = [run_cli(["status", "--store", str(s), "--json", "-q"], capsys) for s in (world.first, target)]
    assert statuses[0][:2] == statuses[1][:2] and statuses[0][0] == 0
    assert verify_store(Store.at(target, clock=world.clock)).ok
    assert run_cli(["verify", "--store", str(target), "-q"], capsys)[0] == 0
    checked = verify_target("store", target)
    assert checked.ok and checked.files == len(blobs(target))
    # A store that came across exports again: the same bundle, byte for byte.
    again = tmp_path / "again.tar.zst"
    export(Store.at(target, clock=world.clock), None, again)
    assert again.read_bytes() == world.bundle.read_bytes()
    # Idempotent: nothing written, not even a time.
    before = state(target)
    again_report = import_bundle(world.bundle, "store", target, clock=world.clock)
    assert all(r.already_present and r.files_written == 0 for r in again_report.repos)
    assert state(target) == before
    # verify --target names a damaged blob.
    victim = next(p for p in (target / "blobs").rglob("*") if p.is_file())
    victim.chmod(0o644)
    victim.write_bytes(b"x" * victim.stat().st_size)
    assert run_cli(["verify", "--target", str(target), "--layout", "store", "-q"], capsys)[0] == 4


def test_a_delta_against_the_store_inventory(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """inventory --layout store lists every blob by its name (nothing hashed); export --have packs only
    the changed file; the delta imports into the store, which is then the later synced store."""
    target = tmp_path / "store"
    import_bundle(world.bundle, "store", target, clock=world.clock)
    have = tmp_path / "have.json"
    code, _, _ = run_cli(
        ["inventory", "--layout", "store", "--target", str(target), "-o", str(have), "-q"], capsys
    )
    assert code == 0
    assert read_have(have) == {sha: len(data) for sha, data in blobs(world.first).items()}
    inventory, stats = take_inventory("store", target)
    assert stats.hashed == 0 and {r.repo_id for r in inventory.repos} == {
        "org/tiny",
        "org/data",
        "org/filtered",
    }
    delta = tmp_path / "delta.tar.zst"
    result = export(Store.at(world.later, clock=world.clock), None, delta, have=read_have(have))
    assert [f.path for f in result.index.files() if not result.index.placement(f.sha256).in_target] == [
        "config.json"
    ]
    report = import_bundle(delta, "store", target, clock=world.clock)
    assert report.exit_code == 0 and not report.missing
    same_store(world.later, target)
    assert verify_store(Store.at(target, clock=world.clock)).ok


def test_a_damaged_or_linked_blob_is_replaced_by_the_bundles_copy(world: World, tmp_path: Path) -> None:
    target = tmp_path / "store"
    import_bundle(world.bundle, "store", target, clock=world.clock)
    rotten, linked = sorted(p for p in (target / "blobs").rglob("*") if p.is_file())[:2]
    rotten.chmod(0o644)
    rotten.write_bytes(b"\0" * rotten.stat().st_size)  # the same size: only hashing tells
    outside = tmp_path / "elsewhere"
    shutil.copyfile(linked, outside)
    linked.unlink()
    linked.symlink_to(outside)
    report = import_bundle(world.bundle, "store", target, clock=world.clock)
    assert sum(r.files_written for r in report.repos) == 2
    same_store(world.first, target)
    assert not linked.is_symlink() and verify_store(Store.at(target, clock=world.clock)).ok


def test_bundles_in_either_order_give_the_same_store(world: World, tmp_path: Path) -> None:
    """An older bundle imported after a newer one keeps the newer refs (reported as kept): the same refs and
    records as the other way round, but for their times (each the creation of the bundle that brought it)."""
    target = tmp_path / "store"
    import_bundle(world.bundle_later, "store", target, clock=world.clock)
    report = import_bundle(world.bundle, "store", target, clock=world.clock)
    tiny = next(r for r in report.repos if r.repo.repo_id == "org/tiny")
    assert tiny.kept == ("main",)
    assert timeless(records(target)) == timeless(records(world.later))
    assert blobs(target) == blobs(world.later)


def timeless(found: dict[str, bytes]) -> dict[str, Any]:
    """Records without their `synced_at`."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "synced_at"}
        return value

    return {path: strip(json.loads(data)) for path, data in found.items()}


def test_a_volume_set_one_volume_at_a_time(world: World, tmp_path: Path) -> None:
    """Volumes given one per run: the repos complete so far are published, what others still need waits in
    the store's tmp/kept/, and the last volume leaves the synced store and nothing in tmp/."""
    out = tmp_path / "vol" / "first.tar.zst"
    out.parent.mkdir()
    result = export(Store.at(world.first, clock=world.clock), None, out, split=100_000)
    volumes = [b.summary.path for b in result.bundles]
    assert len(volumes) >= 3 and any(p.chunks for p in read_index(volumes[0]).placements.values())
    target = tmp_path / "store"
    for i, volume in enumerate(volumes):
        (unit,) = group_bundles([volume])
        report = import_unit(unit, "store", target, clock=world.clock)
        if report.repos:
            assert verify_store(Store.at(target, clock=world.clock)).ok
        if i < len(volumes) - 1:
            assert report.missing and list((target / "tmp" / "kept").iterdir())
    assert not report.missing
    same_store(world.first, target)
    assert not [p for p in (target / "tmp").rglob("*") if not p.is_dir()]  # tmp/ is the store's own


def test_signed_bundles_and_the_trust_kept_in_the_store(world: World, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    trusted = TrustedKey(key_id(key.public_key()), key.public_key(), tmp_path / "k.pub")
    trust = TrustPolicy((trusted,), clock=world.clock)
    signed = tmp_path / "signed.tar.zst"
    export(Store.at(world.first, clock=world.clock), None, signed, signer=Signer(key, 7, clock=world.clock))
    target = tmp_path / "store"
    import_bundle(world.bundle, "store", target, clock=world.clock)  # a store holding the first sync
    before = state(target)
    with pytest.raises(IntegrityError, match="is not signed"):  # unsigned, while a key is trusted
        import_bundle(world.bundle_later, "store", target, clock=world.clock, trust=trust)
    assert state(target) == before
    import_bundle(signed, "store", target, clock=world.clock, trust=trust)
    assert read_sequence(FolderSequences(target / "trust"), trusted.key_id) == 7  # the folder's own file
    same_store(world.first, target)


def test_a_local_stores_existing_trust_file_is_read_and_raised_in_place(world: World, tmp_path: Path) -> None:
    """A store's `trust/<key id>.json` as earlier versions wrote it keeps refusing an older bundle, and a
    newer one raises that same file, in the same format."""
    key = Ed25519PrivateKey.generate()
    trusted = TrustedKey(key_id(key.public_key()), key.public_key(), tmp_path / "k.pub")
    trust = TrustPolicy((trusted,), clock=world.clock)
    target = tmp_path / "store"
    import_bundle(world.bundle, "store", target, clock=world.clock)
    recorded = target / "trust" / f"{trusted.key_id}.json"
    recorded.parent.mkdir()
    earlier = {
        "accepted": "2026-01-01T00:00:00Z",
        "bundle": "old.tar.zst",
        "index_sha256": "0" * 64,
        "key_id": trusted.key_id,
        "sequence": 8,
    }
    recorded.write_text(json.dumps(earlier, indent=1, sort_keys=True) + "\n")
    for sequence in (7, 9):
        signed = tmp_path / f"signed-{sequence}.tar.zst"
        signer = Signer(key, sequence, clock=world.clock)
        export(Store.at(world.later, clock=world.clock), None, signed, signer=signer)
        if sequence == 7:
            before = state(target)
            with pytest.raises(IntegrityError, match=f"sequence 7 is older than sequence 8 .*{recorded}"):
                import_bundle(signed, "store", target, clock=world.clock, trust=trust)
            assert state(target) == before
        else:
            import_bundle(signed, "store", target, clock=world.clock, trust=trust)
    now = json.loads(recorded.read_text())
    assert (now["sequence"], now["bundle"], now["key_id"]) == (9, "signed-9.tar.zst", trusted.key_id)
    assert recorded.read_text() == json.dumps(now, indent=1, sort_keys=True) + "\n"
    assert sorted(p.name for p in recorded.parent.iterdir()) == [recorded.name]


def test_a_store_locked_by_another_run_exits_75(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "store"
    import_bundle(world.bundle, "store", target, clock=world.clock)
    before = state(target)
    with Store.at(target, clock=world.clock).lock():  # a sync or gc running
        args = ["import", str(world.bundle_later), "--layout", "store", "--target", str(target), "-q"]
        code, _, err = run_cli(args, capsys)
        fake = FakeClock()
        with pytest.raises(LockedError):  # --wait: the lock is waited for, on the clock given
            import_bundle(world.bundle_later, "store", target, wait=3, clock=fake.clock)
    assert code == 75
    assert "holds the store lock" in err
    assert 3 <= sum(fake.waits) < 4
    assert state(target) == before


@pytest.mark.parametrize("case", ["dotdot path", "bit flip in a file", "member not in the index"])
def test_a_hostile_bundle_leaves_the_store_untouched(
    fx: Fixture,  # noqa: F811 - tests/test_hostile's bundles
    case: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    build, names = CASES[case]
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(build(good_parts(fx)))
    target = tmp_path / "store"
    import_bundle(fx.older, "store", target, clock=SYSTEM)
    before = state(target)
    code, _, err = run_cli(["import", str(bad), "--layout", "store", "--target", str(target), "-q"], capsys)
    assert code == 4 and names in err
    assert state(target) == before


@pytest.mark.e2e
def test_killed_at_every_step_the_store_is_old_or_new_and_a_rerun_completes(
    world: World, tmp_path: Path
) -> None:
    """Killed (SIGKILL, in a child) after each write of an import of the later bundle into a store holding
    the first: every record and refs.json is the old one or the new one, no record names a missing blob,
    no ref a missing record (verify passes); the rerun gives the store an uninterrupted import gives."""
    base = tmp_path / "base"
    import_bundle(world.bundle, "store", base, clock=world.clock)
    reference = tmp_path / "reference"
    shutil.copytree(base, reference)
    steps = Steps()
    import_bundle(world.bundle_later, "store", reference, clock=world.clock, checkpoint=steps)
    same_store(world.later, reference)
    old, new = records(base), records(reference)
    assert steps.count > 5
    for step in range(1, steps.count + 1):
        target = tmp_path / f"t{step}"
        shutil.copytree(base, target)
        assert import_killed_at(
            step,
            lambda steps, target=target: import_bundle(
                world.bundle_later, "store", target, clock=world.clock, checkpoint=steps
            ),
        ), step
        for path, data in records(target).items():
            assert data in (old.get(path), new.get(path)), f"step {step}: {path} is neither old nor new"
        assert verify_store(Store.at(target, clock=world.clock)).ok, step
        import_bundle(world.bundle_later, "store", target, clock=world.clock)  # the rerun
        assert records(target) == new, step
        assert blobs(target) == blobs(reference), step
        assert not [p for p in (target / "tmp").rglob("*") if not p.is_dir()], "the rerun sweeps staging"
        shutil.rmtree(target)
