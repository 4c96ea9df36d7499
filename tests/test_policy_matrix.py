"""Issue 15's fixture repos, each carried across the gap as a user would (`mirror sync`, `export`,
`import` on the command line, in process): its verdict, the exit code at sync, export and import, and that
the far side's policy wins over the near side's (a bundle the near side let through is refused by a
stricter far side, the target untouched).

Each hostile fixture is one kind of finding (`pickle`, `remote_code`, `license`, `hub_flagged`, `invalid`);
the benign ones must pass the strictest policy everywhere.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy
import pytest
from click.testing import Result
from safetensors.numpy import save

from mirror.clock import SYSTEM
from mirror.repo import RepoKey
from mirror.store import Store
from tests.conftest import put_repo
from tests.hub import LoopbackHub
from tests.test_exits import run
from tests.test_validate_headers import safetensors_file, tensor
from tests.test_validate_pickles import STATE_DICT, Evil, Nested, torch_like_zip

README = b"---\nlicense: apache-2.0\n---\n# a model\n"
CONFIG = b'{"model_type": "bert"}'
GETATTR_CALL = b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'echo x'\ntR."
DENY_ALL = "pickle: deny\nremote_code: deny\nhub_flagged: deny\nlicenses: [apache-2.0, mit]\n"
ALLOW_ALL = "pickle: allow\nremote_code: allow\nhub_flagged: allow\nlicenses: any\n"


def npy_of_objects() -> bytes:
    out = io.BytesIO()
    numpy.save(out, numpy.array([Evil(), 1], dtype=object), allow_pickle=True)
    return out.getvalue()


def torch_checkpoint(*, zipped: bool) -> bytes:
    import torch

    out = io.BytesIO()
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    torch.save(model.state_dict(), out, _use_new_zipfile_serialization=zipped)
    return out.getvalue()


@dataclass(frozen=True)
class Case:
    """A fixture repo: its files (beside a config and a README naming apache-2.0), the kind of finding
    it must give (None: benign), and the policy key that denies that kind."""

    name: str
    files: Callable[[], dict[str, bytes]]
    kind: str | None
    deny: str = ""  # the policy (YAML lines) that denies this kind; "" for kinds always refused
    allow: str = ALLOW_ALL
    flagged: tuple[str, ...] = field(default=())  # paths the hub's own scan flags

    @property
    def repo(self) -> str:
        return f"org/{self.name}"


EVIL = pickle.dumps(Evil(), protocol=2)
OTHER_REPO_CODE = json.dumps({"model_type": "x", "auto_map": {"AutoModel": "org/other--modeling.Model"}})
ZIP_EVIL = {"archive/data.pkl": EVIL, "archive/data/0": bytes(8), "archive/version": b"3\n"}
HOSTILE = [
    Case("reduce", lambda: {"pytorch_model.bin": EVIL}, "pickle", "pickle: deny\n"),
    Case(
        "protocol-0",
        lambda: {"model.pkl": pickle.dumps({"a": Evil()}, protocol=0)},
        "pickle",
        "pickle: deny\n",
    ),
    Case(
        "protocol-5",
        lambda: {"model.pt": pickle.dumps({"a": Evil()}, protocol=5)},
        "pickle",
        "pickle: deny\n",
    ),
    Case("getattr", lambda: {"pytorch_model.bin": GETATTR_CALL}, "pickle", "pickle: deny\n"),
    Case("nested", lambda: {"model.ckpt": pickle.dumps(Nested(), protocol=4)}, "pickle", "pickle: deny\n"),
    Case("torch-zip", lambda: {"pytorch_model.bin": torch_like_zip(ZIP_EVIL)}, "pickle", "pickle: deny\n"),
    Case("npy", lambda: {"weights.npy": npy_of_objects()}, "pickle", "pickle: deny\n"),
    Case(
        "other-repo-code",
        lambda: {"config.json": OTHER_REPO_CODE.encode()},
        "remote_code",
        "remote_code: deny\n",
    ),
    Case("python-file", lambda: {"modeling_x.py": b"import os\n"}, "remote_code", "remote_code: deny\n"),
    Case(
        "licence",
        lambda: {"README.md": b"---\nlicense: cc-by-nc-4.0\n---\n"},
        "license",
        "licenses: [apache-2.0, mit]\n",
    ),
    Case(
        "hub-flagged",
        lambda: {"model.safetensors": save({"w": numpy.zeros(2, dtype=numpy.float32)})},
        "hub_flagged",
        "hub_flagged: deny\n",
        flagged=("model.safetensors",),
    ),
]
# Each safetensors header defect: always refused, whatever the policy.
DEFECTS = {
    "size-mismatch": safetensors_file({"w": tensor("F32", [3], 0, 8)}, bytes(8)),
    "past-the-data": safetensors_file({"w": tensor("F32", [4], 0, 16)}, bytes(8)),
    "overlap": safetensors_file({"a": tensor("F32", [2], 0, 8), "b": tensor("F32", [2], 4, 12)}, bytes(12)),
    "gap": safetensors_file({"a": tensor("F32", [1], 0, 4), "b": tensor("F32", [1], 8, 12)}, bytes(12)),
    "trailing": safetensors_file({"w": tensor("F32", [2], 0, 8)}, bytes(9)),
    "unknown-dtype": safetensors_file({"w": tensor("F33", [2], 0, 8)}, bytes(8)),
    "bad-json": safetensors_file(b'{"w": ', bytes(4)),
    "header-too-long": (10**9).to_bytes(8, "little") + b"{}",
}
INVALID = [
    Case(f"safetensors-{name}", (lambda data=data: {"model.safetensors": data}), "invalid")
    for name, data in DEFECTS.items()
]
BENIGN = [
    Case("state-dict-pickle", lambda: {"pytorch_model.bin": STATE_DICT}, None),
    Case(
        "safetensors",
        lambda: {
            "model.safetensors": save({"w": numpy.arange(6, dtype=numpy.float32)}, metadata={"format": "pt"})
        },
        None,
    ),
    Case("floats-npy", lambda: {"weights.npy": _npy_floats()}, None),
]
TORCH = [
    Case("torch-save-zip", lambda: {"pytorch_model.bin": torch_checkpoint(zipped=True)}, None),
    Case("torch-save-legacy", lambda: {"pytorch_model.bin": torch_checkpoint(zipped=False)}, None),
]


def _npy_floats() -> bytes:
    out = io.BytesIO()
    numpy.save(out, numpy.arange(12, dtype=numpy.float32))
    return out.getvalue()


def params(cases: list[Case], *marks: Any) -> list[Any]:
    return [pytest.param(c, id=c.name, marks=marks) for c in cases]


PASSABLE = params(HOSTILE) + params(BENIGN) + params(TORCH, pytest.mark.e2e)


class Gap:
    """Both sides of one test: the hub, the near side's store, the files a run writes."""

    def __init__(self, hub: LoopbackHub, tmp: Path) -> None:
        self.hub, self.tmp = hub, tmp
        self.store = tmp / "store"
        self.env = {"HF_ENDPOINT": hub.url, "MIRROR_STORE": str(self.store)}

    def serve(self, case: Case) -> str:
        files = {"config.json": CONFIG, "README.md": README, **case.files()}
        commit = self.hub.add_commit(case.repo, files)
        for path in case.flagged:
            self.hub.set_security(case.repo, path, status="unsafe")
        return commit

    def manifest(self, case: Case, policy: str) -> Path:
        path = self.tmp / f"manifest-{abs(hash(policy))}.yml"
        body = "".join(f"      {line}\n" for line in policy.splitlines())
        path.write_text(
            f"version: 1\nmodels:\n  - repo: {case.repo}\n" + (f"    policy:\n{body}" if body else "")
        )
        return path

    def policy_file(self, policy: str) -> Path:
        path = self.tmp / f"policy-{abs(hash(policy))}.yml"
        path.write_text(policy)
        return path

    def cli(self, *args: str | Path) -> Result:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in self.env.items():
                patch.setenv(name, value)
            return run(*args)

    def sync(self, case: Case, policy: str) -> Result:
        return self.cli("sync", self.manifest(case, policy), "--json")

    def export(self, case: Case, policy: str, out: Path) -> Result:
        return self.cli("export", self.manifest(case, policy), "-o", out, "--json")

    def import_(self, bundle: Path, target: Path, policy: str | None) -> Result:
        extra = ["--policy", self.policy_file(policy)] if policy is not None else []
        return self.cli("import", bundle, "--layout", "dir", "--target", target, "--json", *extra)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) and its bytes: what 'untouched' compares."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def recorded_kinds(gap: Gap, case: Case, commit: str) -> set[str]:
    record = Store.at(gap.store, clock=SYSTEM).read_scan(RepoKey("huggingface", "model", case.repo), commit)
    return {f["kind"] for f in record["scan"]["findings"]}


@pytest.fixture
def gap(hub: LoopbackHub, tmp_path: Path, isolated_home: Path) -> Gap:
    return Gap(hub, tmp_path)


@pytest.mark.parametrize("case", PASSABLE)
def test_sync_denies_the_kind_its_policy_denies_and_records_the_finding(gap: Gap, case: Case) -> None:
    commit = gap.serve(case)
    strict = gap.sync(case, case.deny or DENY_ALL)
    if case.kind is None:  # benign: the strictest policy lets it through
        assert strict.exit_code == 0, strict.output
        assert recorded_kinds(gap, case, commit) == set()
        return
    assert strict.exit_code == 3, strict.output
    (item,) = json.loads(strict.stdout)["items"]
    assert item["status"] == "failed" and "refused by the policy" in item["error"]
    denied = item["scan"]["verdict"]["denied"]
    assert {d["kind"] for d in denied} == {case.kind}
    assert recorded_kinds(gap, case, commit) >= ({case.kind} - {"license"})  # the licence is the policy's
    lenient = gap.sync(case, case.allow)
    assert lenient.exit_code == 0, lenient.output


@pytest.mark.parametrize("case", params(INVALID))
def test_an_invalid_header_fails_its_sync_whatever_the_policy(gap: Gap, case: Case) -> None:
    gap.serve(case)
    result = gap.sync(case, ALLOW_ALL)
    assert result.exit_code == 3, result.output
    (item,) = json.loads(result.stdout)["items"]
    rules = {(d["path"], d["kind"], d["rule"]) for d in item["scan"]["verdict"]["denied"]}
    assert rules == {("model.safetensors", "invalid", "invalid: always refused")}


@pytest.mark.parametrize("case", PASSABLE)
def test_export_judges_by_the_manifest_policy_and_writes_nothing_when_denied(gap: Gap, case: Case) -> None:
    gap.serve(case)
    assert gap.sync(case, case.allow).exit_code == 0
    out = gap.tmp / "out" / "b.tar.zst"
    out.parent.mkdir()
    strict = gap.export(case, case.deny or DENY_ALL, out)
    if case.kind is None:
        assert strict.exit_code == 0, strict.output
        return
    assert strict.exit_code == 3, strict.output
    assert list(out.parent.iterdir()) == []  # no bundle, no .sha256, nothing half-written
    assert case.repo in strict.stderr or case.repo in strict.stdout
    lenient = gap.export(case, case.allow, out)
    assert lenient.exit_code == 0 and out.is_file(), lenient.output


@pytest.mark.parametrize("case", params(INVALID))
def test_export_refuses_an_invalid_header_a_store_holds_without_a_scan(gap: Gap, case: Case) -> None:
    """A store written before scans existed (put_repo records no scan): export scans it itself."""
    store = Store.at(gap.store, clock=SYSTEM)
    put_repo(store, case.repo, {"main": {"config.json": CONFIG, **case.files()}})
    out = gap.tmp / "out" / "b.tar.zst"
    out.parent.mkdir()
    result = gap.cli("export", "-o", out)
    assert result.exit_code == 3, result.output
    assert "model.safetensors" in result.stderr and "invalid: always refused" in result.stderr
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("case", PASSABLE)
def test_import_far_side_policy_wins_and_a_refused_bundle_leaves_the_target_untouched(
    gap: Gap, case: Case
) -> None:
    gap.serve(case)
    assert gap.sync(case, case.allow).exit_code == 0
    bundle = gap.tmp / "b.tar.zst"
    assert gap.export(case, case.allow, bundle).exit_code == 0  # the near side let it through
    target = gap.tmp / "far"
    (target / "earlier").mkdir(parents=True)
    (target / "earlier" / "kept.txt").write_bytes(b"an earlier import's file")
    before = tree(target)
    strict = gap.import_(bundle, target, case.deny or DENY_ALL)
    if case.kind is None:
        assert strict.exit_code == 0, strict.output
        return
    assert strict.exit_code == 4, strict.output
    assert tree(target) == before  # untouched: no file, no receipt, no staging left
    words = strict.stderr + strict.stdout
    assert case.repo in words and "policy" in words
    for path in case.files():
        if case.kind != "license":  # a licence finding is the revision's, not a file's
            assert path in words
    assert gap.import_(bundle, target, case.allow).exit_code == 0  # a lenient far side takes it


def test_the_default_policy_at_import_refuses_what_the_hub_flagged_even_when_the_near_side_allowed_it(
    gap: Gap,
) -> None:
    (case,) = [c for c in HOSTILE if c.kind == "hub_flagged"]
    gap.serve(case)
    assert gap.sync(case, case.allow).exit_code == 0
    bundle = gap.tmp / "b.tar.zst"
    assert gap.export(case, case.allow, bundle).exit_code == 0
    target = gap.tmp / "far"
    result = gap.import_(bundle, target, None)
    assert result.exit_code == 4, result.output
    assert "model.safetensors" in result.stderr + result.stdout and tree(target) == {}
