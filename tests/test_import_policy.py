"""`mirror import --policy FILE` (issue 15): the far side scans what it is about to publish and judges it by
its own policy, never the near side's. A denied revision refuses the whole bundle: exit 4, the target
byte for byte as it was (also one that already held an earlier import; a store's refs and records
unmoved), the error and the report naming every repo, commit, file, finding and rule. Without --policy the
default policy applies (pickles warned about); an import into a store records each commit's scan there."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mirror.bundle import IndexedCommit
from mirror.clock import SYSTEM
from mirror.export import export
from mirror.importing import PolicyRefused, group_bundles, import_bundle, import_unit
from mirror.importing.judge import carried_findings
from mirror.manifest import parse_manifest, parse_policy
from mirror.repo import RepoKey
from mirror.storage import open_storage
from mirror.store import Store
from mirror.validate.findings import Finding
from mirror.validate.policy import Policy
from mirror.validate.scan import RevisionScan, recorded_scan
from tests.conftest import env_for_subprocess, put_repo
from tests.hub import LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.roundtrip import mirror_command
from tests.s3server import S3Bucket
from tests.test_exits import run
from tests.test_hostile import tree_state
from tests.test_scan import card
from tests.test_sync import run as sync_run
from tests.test_sync_scan import BENIGN, CONFIG, EVIL
from tests.test_validate_pickles import SYSTEM as IMPORTS_SYSTEM

REPOS: dict[str, dict[str, bytes]] = {
    "org/evil": {"config.json": CONFIG, "pytorch_model.bin": EVIL, "README.md": card("apache-2.0")},
    "org/nc": {"config.json": CONFIG, "model.safetensors": BENIGN, "README.md": card("cc-by-nc-4.0")},
    "org/good": {"config.json": CONFIG, "model.safetensors": BENIGN, "README.md": card("apache-2.0")},
}
# The near side lets the pickle through: only the far side's policy stands between it and the target.
NEAR = "version: 1\ndefaults:\n  policy: {pickle: allow}\nmodels:\n" + "".join(
    f"  - repo: {r}\n" for r in REPOS
)
LAYOUTS = ("hf", "dir", "store")


@dataclass(frozen=True)
class World:
    commits: dict[str, str]  # repo -> its commit
    bundles: dict[str, Path]  # repo -> a bundle of it alone
    store: Path  # the near side's store, synced under NEAR (its scans recorded by the sync)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("import-policy")
    store = Store.at(work / "store", clock=SYSTEM)
    commits = {}
    with LoopbackHub() as hub:
        for repo, files in REPOS.items():
            commits[repo] = hub.add_commit(repo, files)
        report = sync_run(store, hub, NEAR)
        assert report.exit_code == 0, report.to_json()
    bundles = {}
    for repo in REPOS:
        requests = parse_manifest(f"version: 1\nmodels:\n  - repo: {repo}\n", "m.yml").requests()
        bundles[repo] = work / f"{repo.replace('/', '-')}.tar.zst"
        export(store, requests, bundles[repo])
    yield World(commits, bundles, work / "store")


def key(repo: str) -> RepoKey:
    return RepoKey("huggingface", "model", repo)


def policy(text: str) -> Policy:
    return parse_policy(text, "policy.yml")


def unlocked_state(target: Path) -> dict[str, tuple[Any, ...]]:
    """The tree, but for a store's writer lock file (each run stamps it: `mirror.layouts.store`)."""
    found = tree_state(target)
    if set(found) == {".", "lock"}:
        return {}  # a store that did not exist: the folder of its lock file is all a refused import leaves
    found.pop("lock", None)
    return found


def refused_by(bundle: Path, layout: str, target: Path | str, rules: Policy) -> PolicyRefused:
    """Import `bundle` under `rules`, expecting a refusal that publishes nothing."""
    with pytest.raises(PolicyRefused) as caught:
        import_bundle(bundle, layout, target, policy=rules, clock=SYSTEM)
    error = caught.value
    assert error.exit_code == 4 and error.report.exit_code == 4 and error.report.refused
    assert error.report.repos == () and "nothing of it was imported" in str(error)
    return error


def refused(world: World, repo: str, layout: str, target: Path, rules: Policy) -> PolicyRefused:
    """Import `repo`'s bundle under `rules`, expecting a refusal that leaves `target` byte for byte as it was."""
    before = unlocked_state(target)
    error = refused_by(world.bundles[repo], layout, target, rules)
    assert unlocked_state(target) == before
    assert f"{key(repo)}@{world.commits[repo]}" in str(error)
    return error


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_far_side_policy_denying_pickles_refuses_the_bundle_the_near_side_allowed(
    world: World, tmp_path: Path, layout: str
) -> None:
    target = tmp_path / "target"
    earlier = import_bundle(world.bundles["org/good"], layout, target, clock=SYSTEM)  # an earlier import
    assert earlier.exit_code == 0 and not earlier.refused
    if layout == "store":
        store = Store.at(target, clock=SYSTEM)
        refs = store.read_refs(key("org/good"))
    error = refused(world, "org/evil", layout, target, policy("pickle: deny\n"))
    message = str(error)
    assert f"pytorch_model.bin: {IMPORTS_SYSTEM} (policy pickle: deny)" in message
    (revision,) = error.report.revisions
    assert revision.repo == key("org/evil") and revision.commit == world.commits["org/evil"]
    assert [(r.finding.path, r.finding.kind, r.rule) for r in revision.verdict.denied] == [
        ("pytorch_model.bin", "pickle", "policy pickle: deny")
    ]
    assert not (target / ".mirror" / "tmp").exists() or not any((target / ".mirror" / "tmp").iterdir())
    if layout == "store":  # the refs and records of the store are as they were; the evil repo never came
        assert store.read_refs(key("org/good")) == refs
        assert store.read_refs(key("org/evil")) == {}
        assert store.read_snapshot(key("org/evil"), world.commits["org/evil"]) is None
        assert store.read_scan(key("org/evil"), world.commits["org/evil"]) is None


@pytest.mark.parametrize("layout", ("hf", "dir"))
def test_the_same_bundle_imports_under_the_default_policy_with_a_warning(
    world: World, tmp_path: Path, layout: str, caplog: pytest.LogCaptureFixture
) -> None:
    report = import_bundle(world.bundles["org/evil"], layout, tmp_path / "target", clock=SYSTEM)
    assert report.exit_code == 0 and [r.repo.repo_id for r in report.repos] == ["org/evil"]
    (revision,) = report.revisions
    assert revision.verdict.ok and [r.rule for r in revision.verdict.warned] == ["policy pickle: warn"]
    assert f"pytorch_model.bin: {IMPORTS_SYSTEM} (policy pickle: warn)" in caplog.text
    data = report.to_json()
    assert data["refused_by_policy"] is False
    assert data["revisions"][0]["verdict"]["warned"][0]["path"] == "pytorch_model.bin"


def test_a_policy_allowing_pickles_imports_it_with_the_finding_allowed(world: World, tmp_path: Path) -> None:
    report = import_bundle(
        world.bundles["org/evil"], "dir", tmp_path / "t", policy=policy("pickle: allow\n"), clock=SYSTEM
    )
    assert report.exit_code == 0
    (revision,) = report.revisions
    assert [r.rule for r in revision.verdict.allowed] == [
        "policy pickle: allow"
    ] and not revision.verdict.warned
    assert (tmp_path / "t" / "org" / "evil" / "pytorch_model.bin").read_bytes() == EVIL


@pytest.mark.parametrize("layout", ("hf", "store"))
def test_a_licence_outside_the_far_sides_allowlist_is_refused(
    world: World, tmp_path: Path, layout: str
) -> None:
    rules = policy("licenses: [apache-2.0]\n")
    error = refused(world, "org/nc", layout, tmp_path / "target", rules)
    assert "the revision: licence 'cc-by-nc-4.0' is not allowed" in str(error)
    assert "(policy licenses: apache-2.0)" in str(error)
    report = import_bundle(world.bundles["org/good"], layout, tmp_path / "target", policy=rules, clock=SYSTEM)
    assert report.exit_code == 0 and report.revisions[0].scan.licenses == ("apache-2.0",)


def test_a_revision_over_max_size_is_refused(world: World, tmp_path: Path) -> None:
    size = sum(len(d) for d in REPOS["org/good"].values())
    error = refused(world, "org/good", "dir", tmp_path / "target", policy(f"max_size: {size - 1}\n"))
    assert f"over max_size {size - 1}" in str(error) and f"(policy max_size: {size - 1})" in str(error)
    report = import_bundle(
        world.bundles["org/good"],
        "dir",
        tmp_path / "target",
        policy=policy(f"max_size: {size}\n"),
        clock=SYSTEM,
    )
    assert report.exit_code == 0


def test_an_import_into_a_store_records_each_commits_scan_as_a_sync_does(
    world: World, tmp_path: Path
) -> None:
    report = import_bundle(world.bundles["org/evil"], "store", tmp_path / "store", clock=SYSTEM)
    assert report.exit_code == 0
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    commit = world.commits["org/evil"]
    snap = store.read_snapshot(key("org/evil"), commit)
    assert snap is not None
    recorded = recorded_scan(store.read_scan(key("org/evil"), commit), snap.files)
    assert recorded is not None
    scan, _ = recorded
    assert scan == report.revisions[0].scan
    assert [(f.path, f.kind) for f in scan.findings] == [("pytorch_model.bin", "pickle")]
    # the same import again writes nothing
    again = import_bundle(world.bundles["org/evil"], "store", tmp_path / "store", clock=SYSTEM)
    assert again.repos[0].already_present


def test_a_scan_a_sync_recorded_of_the_same_files_and_findings_is_kept(world: World, tmp_path: Path) -> None:
    shutil.copytree(world.store, tmp_path / "synced")
    store = Store.at(tmp_path / "synced", clock=SYSTEM)
    commit = world.commits["org/evil"]
    record = store.read_scan(key("org/evil"), commit)
    record["notes"] = ["a note of the sync's on the hub's scan"]
    store.write_scan(key("org/evil"), commit, record)
    report = import_bundle(world.bundles["org/evil"], "store", tmp_path / "synced", clock=SYSTEM)
    assert report.exit_code == 0 and report.repos[0].already_present
    assert store.read_scan(key("org/evil"), commit) == record


def test_a_denied_repo_refuses_the_whole_import_of_a_volume_set(tmp_path: Path, isolated_home: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(store, "org/evil", {"main": REPOS["org/evil"]})
    put_repo(
        store,
        "org/big",
        {"main": {"model.safetensors": safetensors_sized(random.Random(3).randbytes(250_000))}},
    )
    result = export(store, None, tmp_path / "vol" / "set.tar.zst", split=100_000)
    volumes = [b.summary.path for b in result.bundles]
    assert len(volumes) >= 3
    (unit,) = group_bundles(volumes)
    target = tmp_path / "target"
    before = tree_state(target)
    with pytest.raises(PolicyRefused) as caught:
        import_unit(unit, "dir", target, policy=policy("pickle: deny\n"), clock=SYSTEM)
    assert tree_state(target) == before  # org/big is complete and allowed, yet not published either
    assert {r.repo.repo_id: r.verdict.ok for r in caught.value.report.revisions} == {
        "org/big": True,
        "org/evil": False,
    }
    assert caught.value.report.volumes == tuple(v.name for v in volumes)
    report = import_unit(unit, "dir", target, clock=SYSTEM)  # the default policy: warned, imported
    assert report.exit_code == 0 and {r.repo.repo_id for r in report.repos} == {"org/big", "org/evil"}


def test_content_a_store_in_a_bucket_keeps_in_place_is_scanned_from_there(
    s3: S3Bucket, tmp_path: Path, isolated_home: Path
) -> None:
    near = Store.at(tmp_path / "near", clock=SYSTEM)
    put_repo(near, "org/evil", {"main": REPOS["org/evil"]})
    first = export(near, None, tmp_path / "first.tar.zst").index
    target = s3.url("far")
    assert import_bundle(tmp_path / "first.tar.zst", "store", target, clock=SYSTEM).exit_code == 0
    later = put_repo(near, "org/evil", {"main": {**REPOS["org/evil"], "config.json": b'{"v": 2}'}})
    have = {f.sha256: f.size for f in first.files()}
    delta = export(near, None, tmp_path / "delta.tar.zst", have=have).index
    evil = next(f for f in first.files() if f.path == "pytorch_model.bin")
    assert delta.placement(evil.sha256).in_target  # the pickle is not in the delta: the bucket keeps it
    before = s3.keys()
    error = refused_by(tmp_path / "delta.tar.zst", "store", target, policy("pickle: deny\n"))
    assert f"pytorch_model.bin: {IMPORTS_SYSTEM} (policy pickle: deny)" in str(error)
    assert s3.keys() == before
    report = import_bundle(tmp_path / "delta.tar.zst", "store", target, clock=SYSTEM)
    assert report.exit_code == 0
    scan = Store(open_storage(target, clock=SYSTEM), clock=SYSTEM).read_scan(
        key("org/evil"), later.commits["main"]
    )
    assert [(f["path"], f["kind"]) for f in scan["scan"]["findings"]] == [("pytorch_model.bin", "pickle")]


def test_the_findings_a_bundle_carries_are_taken_only_when_no_offline_scan_can_make_them() -> None:
    flagged = Finding("model.safetensors", "hub_flagged", "the hub's scan: unsafe")
    pickle = Finding("model.bin", "pickle", "imports posix.system")
    carried = RevisionScan((flagged, pickle), (), (), 10)
    assert carried_findings(IndexedCommit("c" * 40, True, (), scan=carried)) == (flagged,)
    assert carried_findings(IndexedCommit("c" * 40, True, ())) == ()  # a bundle before format 1.2


# --- the command ----------------------------------------------------------------------------------------------


def write_policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(text)
    return path


def test_a_bad_policy_file_is_a_usage_error_naming_it(world: World, tmp_path: Path) -> None:
    bad = write_policy(tmp_path, "pickle: forbid\n")
    result = run(
        "import", world.bundles["org/good"], "--layout", "dir", "--target", tmp_path / "t", "--policy", bad
    )
    assert result.exit_code == 2 and str(bad) in result.stderr and "'forbid'" in result.stderr
    assert not (tmp_path / "t").exists()


def test_the_cli_json_report_of_a_refused_bundle(world: World, tmp_path: Path) -> None:
    rules = write_policy(tmp_path, "pickle: deny\n")
    args = (
        "import",
        world.bundles["org/evil"],
        "--layout",
        "dir",
        "--target",
        tmp_path / "t",
        "--policy",
        rules,
    )
    result = run(*args, "--json")
    assert result.exit_code == 4, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    (bundle,) = data["bundles"]
    assert bundle["refused_by_policy"] is True and bundle["repos"] == []
    (revision,) = bundle["revisions"]
    assert revision["repo_id"] == "org/evil" and revision["commit"] == world.commits["org/evil"]
    assert [(d["path"], d["kind"], d["rule"]) for d in revision["verdict"]["denied"]] == [
        ("pytorch_model.bin", "pickle", "policy pickle: deny")
    ]
    assert "refused by the import's policy" in data["errors"][0]
    human = run(*args)
    assert human.exit_code == 4
    assert "REFUSED   by the import's policy" in human.stdout
    assert f"denied  pytorch_model.bin: {IMPORTS_SYSTEM} [policy pickle: deny]" in human.stdout
    assert "policy pickle: deny" in human.stderr


@pytest.mark.e2e
def test_the_installed_command_refuses_under_the_far_sides_policy_and_imports_under_the_default(
    world: World, tmp_path: Path, isolated_home: Path
) -> None:
    target = tmp_path / "hub"
    env = env_for_subprocess(isolated_home, HF_HUB_CACHE=str(target))
    rules = write_policy(tmp_path, "pickle: deny\nlicenses: [apache-2.0]\n")
    for repo in ("org/good", "org/evil"):
        command = [
            *mirror_command(),
            "import",
            str(world.bundles[repo]),
            "--layout",
            "hf",
            "--target",
            str(target),
        ]
        if repo == "org/evil":
            before = tree_state(target)
            denied = subprocess.run(
                [*command, "--policy", str(rules)], env=env, capture_output=True, text=True
            )
            assert denied.returncode == 4, denied.stderr
            assert f"pytorch_model.bin: {IMPORTS_SYSTEM} (policy pickle: deny)" in denied.stderr
            assert tree_state(target) == before
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert "policy pickle: warn" in done.stdout + done.stderr
