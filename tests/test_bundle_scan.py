"""Bundles carry their scans (format 1.2): each commit of the index holds the validation scan the store
recorded at sync (else the one export makes), covered by the index's digest and signature; export judges
each revision by its policy before it writes anything (exit 3); `mirror inspect` shows the findings table
and the verdict of the default policy or of `--policy FILE` (exit 4 when it denies), "not scanned" for an
older bundle."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

from mirror.bundle import BundleIndex, build_index, read_index, select_all, write_archive
from mirror.bundle.selection import EXPORT_SCANNED
from mirror.clock import SYSTEM
from mirror.errors import IntegrityError, PolicyDenied
from mirror.exits import ExitCode
from mirror.export import export
from mirror.repo import RepoKey
from mirror.signing import read_index_bytes, signature_path
from mirror.store import Store
from tests.conftest import put_repo
from tests.hub import LoopbackHub
from tests.test_bundle_names import old_index
from tests.test_exits import run
from tests.test_scan import BROKEN, GOOD
from tests.test_signing import make_keys, with_index
from tests.test_sync import run as sync
from tests.test_validate_pickles import SYSTEM as IMPORTS_SYSTEM
from tests.test_validate_pickles import Evil

EVIL = pickle.dumps(Evil(), protocol=2)
CONFIG = b'{"model_type": "bert"}'
EVIL_FILES = {"config.json": CONFIG, "pytorch_model.bin": EVIL}
GOOD_FILES = {"config.json": CONFIG, "model.safetensors": GOOD}
WARNED = f"pytorch_model.bin: {IMPORTS_SYSTEM} [policy pickle: warn]"


def key(repo_id: str) -> RepoKey:
    return RepoKey("huggingface", "model", repo_id)


def manifest(tmp_path: Path, *entries: str, name: str = "m.yml") -> Path:
    """A manifest of `entries` (each a model's YAML lines after `- repo: `)."""
    path = tmp_path / name
    path.write_text("version: 1\nmodels:\n" + "".join(f"  - repo: {e}\n" for e in entries))
    return path


@pytest.fixture
def store(tmp_path: Path, isolated_home: Path) -> Store:
    return Store.at(tmp_path / "store", clock=SYSTEM)


@pytest.fixture
def synced(hub: LoopbackHub, store: Store, tmp_path: Path) -> Path:
    """org/evil (a malicious pickle) and org/good synced from the hub, org/evil under `pickle: warn`: the
    manifest, whose store records their scans."""
    hub.add_commit("org/evil", EVIL_FILES)
    hub.add_commit("org/good", GOOD_FILES)
    path = manifest(tmp_path, "org/evil\n    policy: {pickle: warn}", "org/good")
    report = sync(store, hub, path.read_text())
    assert report.exit_code == ExitCode.OK, report.to_json()
    return path


def export_cli(store: Store, out: Path, *args: str | Path, code: int = 0) -> Any:
    result = run("export", *args, "--store", store.local_root, "-o", out, "--json")
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def commit_of(index: BundleIndex, repo_id: str) -> Any:
    (repo,) = [r for r in index.repos if r.repo_id == repo_id]
    (commit,) = repo.commits
    return commit


# --- the index carries the scan ----------------------------------------------------------------------------


def test_a_synced_malicious_pickle_under_pickle_warn_travels_with_its_finding(
    synced: Path, store: Store, tmp_path: Path
) -> None:
    bundle = tmp_path / "b.tar.zst"
    result = export_cli(store, bundle, synced)
    index = read_index(bundle)
    assert index.format_version == "1.2"
    evil = commit_of(index, "org/evil")
    assert evil.scan is not None
    assert [(f.path, f.kind, f.detail) for f in evil.scan.findings] == [
        ("pytorch_model.bin", "pickle", IMPORTS_SYSTEM)
    ]
    # the very scan the sync recorded (the hub's part merged), not one made again at export
    record = store.read_scan(key("org/evil"), evil.commit)
    assert evil.scan.to_json() == record["scan"] and list(evil.scan_notes) == record["notes"]
    assert EXPORT_SCANNED not in evil.scan_notes
    good = commit_of(index, "org/good")
    assert (
        good.scan is not None
        and good.scan.findings == ()
        and good.scan.size == sum(map(len, GOOD_FILES.values()))
    )
    raw = json.loads(read_index_bytes(bundle))
    (evil_entry,) = [r for r in raw["repos"] if r["repo_id"] == "org/evil"]
    assert evil_entry["commits"][0]["scan"]["findings"][0]["kind"] == "pickle"  # in MIRROR-BUNDLE.json itself
    # --json: each revision's verdict
    verdicts = {r["repo_id"]: r for r in result["revisions"]}
    assert verdicts["org/evil"]["revision"] == "main" and verdicts["org/evil"]["commit"] == evil.commit
    assert [(w["path"], w["rule"]) for w in verdicts["org/evil"]["verdict"]["warned"]] == [
        ("pytorch_model.bin", "policy pickle: warn")
    ]
    assert verdicts["org/good"]["verdict"] == {"ok": True, "denied": [], "warned": [], "allowed": []}


def test_the_scan_is_covered_by_the_digest_and_the_signature(
    synced: Path, store: Store, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "keys", "k")
    bundle = tmp_path / "out" / "b.tar.zst"
    export_cli(store, bundle, synced, "--sign", keys.key_file)
    # A hand at the gap takes the finding out of the index (the bundle otherwise whole and valid) ...
    data = json.loads(read_index_bytes(bundle))
    for repo in data["repos"]:
        for commit in repo["commits"]:
            commit["scan"]["findings"] = []
    tampered = with_index(
        bundle, tmp_path / "out" / "t.tar.zst", (json.dumps(data, indent=1) + "\n").encode()
    )
    assert commit_of(read_index(tampered), "org/evil").scan.findings == ()
    shutil.copy(bundle.with_name(bundle.name + ".sha256"), tampered.with_name(tampered.name + ".sha256"))
    shutil.copy(signature_path(bundle), signature_path(tampered))
    # ... verify sees the archive is not the one exported (its digest), import --trust that the index is
    # not the one signed.
    verified = run("verify", tampered)
    assert verified.exit_code == ExitCode.INTEGRITY, verified.output
    target = tmp_path / "hub"
    imported = run("import", tampered, "--target", target, "--trust", keys.pub_file)
    assert imported.exit_code == ExitCode.INTEGRITY, imported.output
    assert "is not the one" in imported.stderr and not target.exists()
    # the untouched bundle passes both
    assert run("verify", bundle).exit_code == 0
    assert run("import", bundle, "--target", target, "--trust", keys.pub_file).exit_code == 0


def test_export_scans_a_store_that_recorded_no_scan_itself_and_writes_nothing_to_it(
    store: Store, tmp_path: Path
) -> None:
    put_repo(store, "org/evil", {"main": EVIL_FILES})  # as a store synced before mirror scanned
    before = sorted(p.relative_to(store.local_root) for p in store.local_root.rglob("*"))
    out = tmp_path / "b.tar.zst"
    result = export(store, None, out)
    evil = commit_of(read_index(out), "org/evil")
    assert [(f.path, f.kind) for f in evil.scan.findings] == [("pytorch_model.bin", "pickle")]
    assert evil.scan_notes == (EXPORT_SCANNED,) and "hub's own scan was not asked" in EXPORT_SCANNED
    assert [r.verdict.warned[0].rule for r in result.revisions] == ["policy pickle: warn"]
    assert store.read_scan(key("org/evil"), evil.commit) is None
    assert sorted(p.relative_to(store.local_root) for p in store.local_root.rglob("*")) == before


def test_a_scan_recorded_of_other_files_is_not_taken(synced: Path, store: Store, tmp_path: Path) -> None:
    """A manifest that exports some of a commit's files: the recorded scan (of all of them) does not cover
    them, so export scans those it carries."""
    only_config = manifest(tmp_path, "org/evil\n    include: [config.json]", name="only.yml")
    out = tmp_path / "b.tar.zst"
    export_cli(store, out, only_config)
    evil = commit_of(read_index(out), "org/evil")
    assert [f.path for f in evil.files] == ["config.json"]
    assert evil.scan.findings == () and evil.scan_notes == (EXPORT_SCANNED,)


def test_exports_stay_byte_identical(synced: Path, store: Store, tmp_path: Path) -> None:
    put_repo(store, "org/unscanned", {"main": EVIL_FILES})  # scanned at export, the same each time
    first, second = tmp_path / "1" / "b.tar.zst", tmp_path / "2" / "b.tar.zst"
    export(store, None, first)
    export(store, None, second)
    assert first.read_bytes() == second.read_bytes()
    assert commit_of(read_index(first), "org/unscanned").scan is not None


# --- export's policy check ---------------------------------------------------------------------------------


def assert_nothing_written(out: Path) -> None:
    assert not out.parent.exists() or sorted(p.name for p in out.parent.iterdir()) == []


def test_a_manifest_that_denies_pickles_refuses_the_export_with_exit_3(
    synced: Path, store: Store, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "keys", "k")
    strict = manifest(tmp_path, "org/evil\n    policy: {pickle: deny}", "org/good", name="strict.yml")
    out = tmp_path / "out" / "b.tar.zst"
    args = ("export", strict, "--store", store.local_root, "-o", out, "--sign", keys.key_file)
    plain = run(*args)
    assert plain.exit_code == ExitCode.PARTIAL and plain.stdout == ""
    commit = store.read_refs(key("org/evil"))["main"].commit
    message = plain.stderr
    for word in (
        "huggingface:org/evil@main",
        commit,
        "pytorch_model.bin",
        IMPORTS_SYSTEM,
        "policy pickle: deny",
    ):
        assert word in message, word
    assert "org/good" not in message
    assert_nothing_written(out)  # no bundle, no partial file, no .sha256, no .sig
    error = json.loads(run(*args, "--json").stdout)["error"]
    assert error["exit_code"] == ExitCode.PARTIAL and error["type"] == "partial"
    assert "policy pickle: deny" in error["message"]
    assert_nothing_written(out)
    # the same store under the manifest that warns exports, and says what it warns about
    warned = run("export", synced, "--store", store.local_root, "-o", out)
    assert warned.exit_code == 0, warned.output
    line = f"  warning: huggingface:org/evil@main: pytorch_model.bin: {IMPORTS_SYSTEM} (policy pickle: warn)"
    assert line in warned.stdout.splitlines()


def test_an_invalid_header_in_the_store_refuses_an_export_of_the_whole_store(
    store: Store, tmp_path: Path
) -> None:
    put_repo(store, "org/good", {"main": GOOD_FILES})
    put_repo(store, "org/broken", {"main": {"config.json": CONFIG, "model.safetensors": BROKEN}})
    out = tmp_path / "out" / "b.tar.zst"
    with pytest.raises(PolicyDenied) as denied:
        export(store, None, out)
    message = str(denied.value)
    assert "huggingface:org/broken@main" in message and "model.safetensors" in message
    assert "invalid: always refused" in message
    assert_nothing_written(out)
    result = run("export", "--store", store.local_root, "-o", out)
    assert result.exit_code == ExitCode.PARTIAL and "invalid: always refused" in result.stderr
    assert_nothing_written(out)


# --- inspect -----------------------------------------------------------------------------------------------


@pytest.fixture
def evil_bundle(synced: Path, store: Store, tmp_path: Path) -> Path:
    out = tmp_path / "b.tar.zst"
    export_cli(store, out, synced)
    return out


def test_inspect_shows_the_findings_and_the_default_policys_verdict(evil_bundle: Path, store: Store) -> None:
    result = run("inspect", evil_bundle)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    commit = store.read_refs(key("org/evil"))["main"].commit
    assert any(line.startswith(f"  {commit}: 2 files, ") for line in lines)
    assert any(
        line.startswith(
            f"    ok      huggingface:org/evil@{commit[:12]} (licence none named; 0 denied, 1 warned"
        )
        for line in lines
    )
    assert f"      warned  {WARNED}" in lines
    assert lines[-1] == "ok  2 revision(s) scanned, 0 denied by the policy"

    data = json.loads(run("inspect", evil_bundle, "--json").stdout)
    assert data["format_version"] == "1.2" and data["ok"] is True
    repos = {r["repo_id"]: r for r in data["repos"]}
    (evil,) = repos["org/evil"]["commits"]
    assert evil["scan"]["findings"] == [
        {"path": "pytorch_model.bin", "kind": "pickle", "detail": IMPORTS_SYSTEM}
    ]
    assert evil["scan"]["verdict"]["warned"][0]["rule"] == "policy pickle: warn"
    assert (
        evil["scan"]["licenses"] == [] and evil["scan"]["repos"] == [] and evil["scan"]["missing_repos"] == []
    )
    assert isinstance(evil["scan"]["notes"], list)
    assert repos["org/good"]["commits"][0]["scan"]["findings"] == []


def test_inspect_with_a_policy_that_denies_exits_4(evil_bundle: Path, tmp_path: Path) -> None:
    strict = tmp_path / "far.yml"
    strict.write_text("pickle: deny\n")
    result = run("inspect", evil_bundle, "--policy", strict)
    assert result.exit_code == ExitCode.INTEGRITY, result.output
    assert f"      denied  pytorch_model.bin: {IMPORTS_SYSTEM} [policy pickle: deny]" in result.stdout
    assert result.stdout.splitlines()[-1] == "DENIED  2 revision(s) scanned, 1 denied by the policy"
    as_json = run("inspect", evil_bundle, "--policy", strict, "--json")
    assert as_json.exit_code == ExitCode.INTEGRITY
    data = json.loads(as_json.stdout)
    assert data["ok"] is False
    (evil,) = [r for r in data["repos"] if r["repo_id"] == "org/evil"]
    assert evil["commits"][0]["scan"]["verdict"]["denied"][0]["rule"] == "policy pickle: deny"
    allowing = tmp_path / "allow.yml"
    allowing.write_text("pickle: allow\n")
    assert run("inspect", evil_bundle, "--policy", allowing).exit_code == 0
    bad = tmp_path / "bad.yml"
    bad.write_text("pickle: maybe\n")
    assert run("inspect", evil_bundle, "--policy", bad).exit_code == ExitCode.USAGE


def test_a_referenced_repo_the_bundle_lacks_is_named(store: Store, tmp_path: Path) -> None:
    auto_map = json.dumps({"auto_map": {"AutoModel": "org/other--modeling.Model"}}).encode()
    put_repo(
        store, "org/remote", {"main": {"config.json": auto_map, "README.md": b"---\nlicense: mit\n---\n"}}
    )
    out = tmp_path / "b.tar.zst"
    export(store, None, out)
    result = run("inspect", out)
    assert result.exit_code == 0, result.output
    assert "(licence mit;" in result.stdout
    assert "auto_map refers to org/other, which is not here: the model will not load offline" in result.stdout
    (repo,) = json.loads(run("inspect", out, "--json").stdout)["repos"]
    scan = repo["commits"][0]["scan"]
    assert scan["repos"] == ["org/other"] and scan["missing_repos"] == ["org/other"]
    assert scan["licenses"] == ["mit"]


def test_a_bundle_of_format_1_1_reads_and_inspects_as_not_scanned(store: Store, tmp_path: Path) -> None:
    put_repo(store, "org/evil", {"main": EVIL_FILES})
    out = tmp_path / "old.tar.zst"
    write_archive(store, BundleIndex.from_json(old_index(store, "1.1", created=1700000000)), out)
    index = read_index(out)
    assert index.format_version == "1.1" and commit_of(index, "org/evil").scan is None
    assert run("verify", out).exit_code == 0
    result = run("inspect", out)
    assert result.exit_code == 0, result.output
    assert (
        "    not scanned: a bundle of format 1.1 carries no scan; `mirror scan BUNDLE` reads every byte and "
        "scans it"
    ) in result.stdout.splitlines()
    data = json.loads(run("inspect", out, "--json").stdout)
    assert data["format_version"] == "1.1" and data["repos"][0]["commits"][0]["scan"] is None
    strict = tmp_path / "far.yml"
    strict.write_text("pickle: deny\n")
    assert run("inspect", out, "--policy", strict).exit_code == 0  # nothing carried to deny
    assert run("scan", out, "--policy", strict).exit_code == ExitCode.INTEGRITY  # what it suggests


# --- the index's scan is untrusted input -------------------------------------------------------------------


def _index_with(store: Store, edit: Any) -> dict[str, Any]:
    data = build_index(store, select_all(store)).to_json()
    edit(data["repos"][0]["commits"][0])
    return data


BAD_SCANS = {
    "not an object": (lambda c: c.update(scan=[]), "its scan is invalid"),
    "an unknown finding kind": (
        lambda c: c["scan"]["findings"].append({"path": "config.json", "kind": "evil", "detail": "x"}),
        "unknown finding kind",
    ),
    "a finding on a file it lacks": (
        lambda c: c["scan"]["findings"].append({"path": "other.bin", "kind": "pickle", "detail": "x"}),
        "'other.bin', which is not one of its files",
    ),
    "a size other than its files'": (
        lambda c: c["scan"].update(size=c["scan"]["size"] + 1),
        "its scan covers",
    ),
    "notes that are not strings": (lambda c: c["scan"].update(notes=[1]), "notes must be a list of strings"),
    "repos that are not strings": (lambda c: c["scan"].update(repos=[None]), "its scan is invalid"),
}


@pytest.mark.parametrize("case", sorted(BAD_SCANS))
def test_a_bad_scan_in_the_index_is_refused_naming_the_commit(store: Store, case: str) -> None:
    put_repo(store, "org/evil", {"main": EVIL_FILES})
    edit, words = BAD_SCANS[case]
    data = _index_with(store, edit)
    commit = data["repos"][0]["commits"][0]["commit"]
    with pytest.raises(IntegrityError, match="invalid bundle index") as error:
        BundleIndex.from_json(data)
    assert f"commit {commit}" in str(error.value) and words in str(error.value)


def test_a_scan_in_an_index_of_an_older_format_is_refused(store: Store) -> None:
    put_repo(store, "org/evil", {"main": EVIL_FILES})
    data = _index_with(store, lambda c: None)
    data["format_version"] = "1.1"
    with pytest.raises(IntegrityError, match=r"carries a scan, which a bundle of format 1\.1 cannot"):
        BundleIndex.from_json(data)


def test_an_import_into_a_store_records_the_scans_it_carries(
    evil_bundle: Path, store: Store, tmp_path: Path
) -> None:
    far = tmp_path / "far"
    assert run("import", evil_bundle, "--layout", "store", "--target", far).exit_code == 0
    commit = store.read_refs(key("org/evil"))["main"].commit
    assert Store.at(far, clock=SYSTEM).read_scan(key("org/evil"), commit) == store.read_scan(
        key("org/evil"), commit
    )
