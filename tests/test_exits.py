"""Exit codes: the one rule that combines several outcomes (sync's revisions, import's bundles), and every
exit code the CLI ends with, reached in-process through click's CliRunner from a small store, with its
`--json` error object."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

import mirror.cli
from mirror.bundle import select_all, write_bundle
from mirror.cli.exits import KINDS
from mirror.cli.options import LAYOUT_NAMES
from mirror.clock import SYSTEM
from mirror.errors import Interrupted, MirrorError
from mirror.exits import ExitCode, combine
from mirror.layouts import LAYOUTS
from mirror.repo import RepoKey
from mirror.report import ImportRun
from mirror.store import Store
from mirror.sync import ItemResult, SyncReport, Target
from tests.conftest import put_repo

codes = st.lists(st.sampled_from(list(ExitCode)), max_size=8)
some_codes = st.lists(st.sampled_from(list(ExitCode)), min_size=1, max_size=8)


# the combining rule ------------------------------------------------------------------------------------------
@given(codes, st.randoms())
def test_the_order_of_the_outcomes_does_not_matter(outcomes: list[ExitCode], random: Any) -> None:
    shuffled = list(outcomes)
    random.shuffle(shuffled)
    assert combine(shuffled) == combine(outcomes)
    assert combine(outcomes + outcomes) == combine(outcomes)  # nor how many times each occurs


@given(some_codes, some_codes)
def test_combining_parts_first_gives_the_same_code(first: list[ExitCode], second: list[ExitCode]) -> None:
    assert combine([combine(first), combine(second)]) == combine(first + second)


@given(codes)
def test_the_worst_wins_interrupted_then_integrity(outcomes: list[ExitCode]) -> None:
    result = combine(outcomes)
    if ExitCode.INTERRUPTED in outcomes:
        assert result == ExitCode.INTERRUPTED
    elif ExitCode.INTEGRITY in outcomes:
        assert result == ExitCode.INTEGRITY
    else:
        assert result in {*outcomes, ExitCode.OK, ExitCode.PARTIAL, ExitCode.FAILURE}


@given(st.sampled_from(list(ExitCode)), st.integers(1, 5))
def test_outcomes_all_alike_keep_their_code(code: ExitCode, times: int) -> None:
    assert combine([code] * times) == code


@given(some_codes)
def test_a_failure_beside_a_success_is_partial_unless_worse(outcomes: list[ExitCode]) -> None:
    failures = set(outcomes) - {ExitCode.OK}
    result = combine([*outcomes, ExitCode.OK])
    if not failures:
        assert result == ExitCode.OK
    elif failures & {ExitCode.INTERRUPTED, ExitCode.INTEGRITY}:
        assert result in failures
    else:
        assert result == ExitCode.PARTIAL


def test_no_outcome_is_ok() -> None:
    assert combine([]) == ExitCode.OK


def _error(code: ExitCode) -> MirrorError:
    error = MirrorError(f"failed with {code.name}")
    error.exit_code = code
    return error


@given(codes)
def test_sync_and_import_combine_alike(outcomes: list[ExitCode]) -> None:
    target = Target(RepoKey("huggingface", "model", "org/x"), "main", ())
    sync_report = SyncReport([ItemResult(target, error=_error(c) if c else None) for c in outcomes])
    failed = tuple(_error(c) for c in outcomes)
    import_run = ImportRun(Path("t"), "hf", (), failed)
    assert sync_report.exit_code == import_run.exit_code == combine(outcomes)


# every exit code, through the CLI ----------------------------------------------------------------------------
class _Main(click.Command):
    """`mirror.cli.main` (the boundary that turns every failure into an exit code) for CliRunner."""

    def main(self, args: Sequence[str] | None = None, *unused: Any, **ignored: Any) -> Any:
        mirror.cli.main(list(args or ()))


MAIN = _Main("mirror")


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(MAIN, [str(a) for a in args])


def json_error(*args: str | Path, code: int) -> dict[str, Any]:
    """Run with and without --json: the same exit code and stderr; with --json, the error object."""
    plain = run(*args)
    assert plain.exit_code == code, plain.stderr
    assert plain.stdout == ""
    result = run(*args, "--json")
    assert (result.exit_code, result.stderr) == (code, plain.stderr)
    error: dict[str, Any] = json.loads(result.stdout)["error"]
    assert error["exit_code"] == code and error["message"]
    return error


@pytest.fixture
def store(tmp_path: Path, isolated_home: Path) -> Store:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(store, "org/tiny", {"main": {"config.json": b"{}\n", "model.safetensors": b"w" * 100}})
    return store


def bundle_of(repo_id: str, out: Path) -> Path:
    store = Store.at(out.parent / f"store-{out.name}", clock=SYSTEM)
    put_repo(store, repo_id, {"main": {"config.json": repo_id.encode()}})
    write_bundle(store, select_all(store), out)
    return out


def test_ok_is_0(store: Store) -> None:
    result = run("verify", "--store", store.local_root)
    assert result.exit_code == ExitCode.OK, result.stderr
    assert result.stdout == f"ok  {store.local_root}\n"


def test_a_failure_is_1(tmp_path: Path, isolated_home: Path) -> None:
    error = json_error("verify", "--store", tmp_path / "absent", code=ExitCode.FAILURE)
    assert error["type"] == "failure" and "does not exist" in error["message"]


def test_a_bad_manifest_or_bad_usage_is_2(tmp_path: Path, store: Store) -> None:
    manifest = tmp_path / "bad.yml"
    manifest.write_text("version: 1\nmodels: 3\n")
    error = json_error("sync", manifest, "--store", store.local_root, code=ExitCode.USAGE)
    assert error["type"] == "usage" and "bad.yml" in error["message"]
    assert json_error("status", "--no-such-option", code=ExitCode.USAGE)["type"] == "usage"


def test_a_layout_without_a_default_target_is_2(tmp_path: Path, isolated_home: Path) -> None:
    bundle = tmp_path / "b.tar.zst"
    bundle.write_bytes(b"")  # never read: the target is resolved first
    for args in (("inventory", "-o", tmp_path / "have.json"), ("verify",), ("import", bundle)):
        error = json_error(*args, "--layout", "dir", code=ExitCode.USAGE)
        assert error["message"] == "--layout dir needs --target DIR"


def test_a_target_not_given_is_where_the_layouts_client_looks(tmp_path: Path, isolated_home: Path) -> None:
    for layout, variable in (("hf", "HF_HUB_CACHE"), ("modelscope", "MODELSCOPE_CACHE")):
        result = run("inventory", "--layout", layout, "-o", tmp_path / "have.json", "--json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["target"] == os.environ[variable]


def test_the_layouts_offered_are_the_layouts() -> None:
    assert sorted(LAYOUT_NAMES) == sorted(LAYOUTS)


def test_failures_beside_successes_are_partial_3(tmp_path: Path, isolated_home: Path) -> None:
    good = bundle_of("org/good", tmp_path / "good.tar.zst")
    blocked = bundle_of("org/blocked", tmp_path / "blocked.tar.zst")
    target = tmp_path / "cache"
    target.mkdir()
    (target / "models--org--blocked").symlink_to(tmp_path)  # refused: exit 1 for that bundle alone
    result = run("import", good, blocked, "--target", target, "--json")
    assert result.exit_code == ExitCode.PARTIAL, result.stderr
    data = json.loads(result.stdout)
    assert [b["bundle"] for b in data["bundles"]] == [str(good)]
    assert len(data["errors"]) == 1 and "models--org--blocked" in data["errors"][0]
    assert (target / "models--org--good" / "refs" / "main").is_file()


def test_a_corrupt_bundle_is_4_and_wins_over_a_success(tmp_path: Path, isolated_home: Path) -> None:
    good = bundle_of("org/good", tmp_path / "good.tar.zst")
    damaged = bundle_of("org/damaged", tmp_path / "damaged.tar.zst")
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert json_error("verify", damaged, code=ExitCode.INTEGRITY)["type"] == "integrity"
    result = run("import", good, damaged, "--target", tmp_path / "cache")
    assert result.exit_code == ExitCode.INTEGRITY, result.stderr
    assert "damaged.tar.zst" in result.stderr


def test_a_held_lock_is_75(store: Store, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    manifest = tmp_path / "m.yml"
    manifest.write_text("version: 1\nmodels:\n  - repo: org/tiny\n")
    with store.lock():
        assert json_error("gc", "--store", store.local_root, code=ExitCode.LOCKED)["type"] == "locked"
        result = run("sync", manifest, "--store", store.local_root, "--report", report)
    assert result.exit_code == ExitCode.LOCKED, result.stderr
    assert json.loads(report.read_text())["exit_code"] == ExitCode.LOCKED


def test_an_interrupted_run_is_130(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import mirror.verify

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise Interrupted("interrupted while verifying")

    monkeypatch.setattr(mirror.verify, "verify_store", interrupted)
    error = json_error("verify", "--store", store.local_root, code=ExitCode.INTERRUPTED)
    assert error == {"exit_code": 130, "type": "interrupted", "message": "interrupted while verifying"}


def test_every_failure_kind_is_the_name_of_its_code() -> None:
    assert KINDS == {
        1: "failure",
        2: "usage",
        3: "partial",
        4: "integrity",
        75: "locked",
        130: "interrupted",
    }
