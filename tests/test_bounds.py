"""Every file mirror parses is bounded (issue 11, section 3): huge, endlessly nested, /dev/zero, a FIFO nobody
writes to, or a folder, each refused with exit 2 (what the user hands over) or 4 (what comes with a
bundle), a message naming the file, at once and in small memory."""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from mirror import bounded
from mirror.bundle import INDEX_NAME, select_all, write_bundle
from mirror.cli import main
from mirror.clock import SYSTEM
from mirror.signing import keygen
from mirror.store import Store
from tests.conftest import put_repo
from tests.modelfiles import safetensors_sized
from tests.roundtrip import mirror_command

DEEP = b"[" * 100_000
BILLION_LAUGHS = (
    "version: 1\n"
    'a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]\n'
    + "".join(f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
    + "models:\n  - repo: org/x\n    include: *a8\n"
).encode()


def run_cli(args: list[str], fifos: list[Path]) -> tuple[int, str]:
    """`mirror ARGS` in-process; its exit code and output (stderr and stdout). A thread, so that a read
    blocked on a FIFO (the defect under test) is failed and unblocked instead of hanging the suite."""
    out: dict[str, object] = {}
    err = io.StringIO()

    def target() -> None:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
            try:
                main(args)
            except SystemExit as e:
                out["code"] = e.code

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)  # a failsafe only: a refusal takes milliseconds
    if thread.is_alive():
        for fifo in fifos:  # let the blocked reader go, then fail
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail(f"mirror {' '.join(args)} blocked")
    return int(out["code"]), err.getvalue()  # type: ignore[call-overload]


@dataclass
class World:
    root: Path
    store: Path
    bundle: Path
    public_key: Path


@pytest.fixture
def world(tmp_path: Path, isolated_home: Path) -> World:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(
        store,
        "org/tiny",
        {"main": {"config.json": b"{}\n", "model.safetensors": safetensors_sized(b"w" * 200)}},
    )
    bundle = tmp_path / "b.tar.zst"
    write_bundle(store, select_all(store), bundle)
    keys = keygen(tmp_path / "k")
    return World(tmp_path, store.local_root, bundle, keys.public_key)


def plant(path: Path, case: str, bound: bounded.Bound) -> None:
    """Make `path` the hostile case."""
    path.unlink(missing_ok=True)
    if case == "huge":
        with open(path, "wb") as f:
            f.truncate(bound.size + 1)  # sparse: costs no disk
    elif case == "deep":
        path.write_bytes(DEEP)
    elif case == "fifo":
        os.mkfifo(path)
    elif case == "devzero":
        path.symlink_to("/dev/zero")
    elif case == "dir":
        path.mkdir()


# Each kind of file: where it sits, the command that reads it, its bound, and the exit code of a refusal.
Place = Callable[[World], tuple[Path, list[str]]]


def _manifest(w: World) -> tuple[Path, list[str]]:
    p = w.root / "m.yml"
    return p, ["sync", str(p), "--store", str(w.store)]


def _lock(w: World) -> tuple[Path, list[str]]:
    p = w.root / "mirror.lock"
    return p, ["sync", "--locked", str(p), "--store", str(w.store)]


def _have(w: World) -> tuple[Path, list[str]]:
    p = w.root / "have.json"
    return p, ["export", "--have", str(p), "-o", str(w.root / "o.tar.zst"), "--store", str(w.store)]


def _private_key(w: World) -> tuple[Path, list[str]]:
    p = w.root / "sign.key"
    return p, ["export", "--sign", str(p), "-o", str(w.root / "o.tar.zst"), "--store", str(w.store)]


def _public_key(w: World) -> tuple[Path, list[str]]:
    p = w.root / "trusted.pub"
    return p, ["import", "--trust", str(p), str(w.bundle), "--target", str(w.root / "t")]


def _signature(w: World) -> tuple[Path, list[str]]:
    p = w.bundle.with_name(w.bundle.name + ".sig")
    return p, ["import", "--trust", str(w.public_key), str(w.bundle), "--target", str(w.root / "t")]


def _side_sha256(w: World) -> tuple[Path, list[str]]:
    return w.bundle.with_name(w.bundle.name + ".sha256"), ["verify", str(w.bundle)]


def _bundle(w: World) -> tuple[Path, list[str]]:
    p = w.root / "hostile.tar.zst"
    return p, ["inspect", str(p)]


def _snapshot_record(w: World) -> tuple[Path, list[str]]:
    (p,) = (w.store / "repos").rglob("snapshots/*.json")
    return p, ["status", "--store", str(w.store)]


def _refs_record(w: World) -> tuple[Path, list[str]]:
    (p,) = (w.store / "repos").rglob("refs.json")
    return p, ["verify", "--store", str(w.store)]


KINDS: dict[str, tuple[Place, bounded.Bound, int]] = {
    "manifest": (_manifest, bounded.MANIFEST, 2),
    "lock": (_lock, bounded.LOCK_FILE, 2),
    "have": (_have, bounded.HAVE, 2),
    "private-key": (_private_key, bounded.KEY, 2),
    "public-key": (_public_key, bounded.KEY, 2),
    "signature": (_signature, bounded.SIGNATURE, 4),
    "sha256": (_side_sha256, bounded.SHA256_LINE, 4),
    "bundle": (_bundle, bounded.INDEX, 4),
    "snapshot-record": (_snapshot_record, bounded.RECORD, 4),
    "refs-record": (_refs_record, bounded.RECORD, 4),
}
CASES = ("huge", "deep", "fifo", "devzero", "dir")
# A file named on the command line that is a folder is click's usage error (exit 2), as any bad argument.
ARGUMENTS = {"manifest", "lock", "have", "private-key", "public-key", "bundle"}


# A bundle is streamed, not bounded by size; its index member is (test_hostile_index_member).
@pytest.mark.parametrize(
    ("kind", "case"), [(k, c) for k in KINDS for c in CASES if (k, c) != ("bundle", "huge")]
)
def test_a_hostile_file_is_refused_at_once_naming_it(world: World, kind: str, case: str) -> None:
    place, bound, code = KINDS[kind]
    path, args = place(world)
    plant(path, case, bound)
    rc, err = run_cli(args, [path] if case == "fifo" else [])
    assert rc == (2 if case == "dir" and kind in ARGUMENTS else code), err
    assert str(path) in err or repr(str(path)) in err, err


@pytest.mark.parametrize("case", ["fifo", "devzero", "deep", "huge"])
def test_a_hostile_have_file_is_named_in_a_bounded_read(tmp_path: Path, case: str) -> None:
    from mirror.errors import UsageError
    from mirror.inventory import read_have

    path = tmp_path / "have.json"
    plant(path, case, bounded.HAVE)
    with pytest.raises(UsageError, match=str(path)):
        read_have(path)


def _bundle_with_index(path: Path, index: bytes) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(INDEX_NAME)
        info.size = len(index)
        tar.addfile(info, io.BytesIO(index))
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))


@pytest.mark.parametrize(
    "index",
    [
        DEEP,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b"\xff\xfe not utf-8",
        json.dumps([[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]).encode(),
    ],
    ids=["deep-array", "deep-object", "not-utf8", "deeper-than-the-bound"],
)
def test_hostile_index_member(tmp_path: Path, index: bytes) -> None:
    bundle = tmp_path / "x.tar.zst"
    _bundle_with_index(bundle, index)
    for command in ("inspect", "verify"):
        rc, err = run_cli([command, str(bundle)], [])
        assert rc == 4, err
        assert str(bundle) in err and INDEX_NAME in err, err


@pytest.mark.parametrize(
    "text",
    [
        BILLION_LAUGHS,  # 10^9 strings once its aliases are expanded
        b"version: 1\nmodels: " + b"[" * 100_000,
        b"version: 1\nmodels:\n  - &a {repo: org/x, include: [*a]}\n",  # an alias inside what it names
        b"version: 1\ndefaults:\n  include: &i ["
        + b",".join([b'"x"'] * 60_000)
        + b"]\nmodels:\n"
        + b"".join(b"  - {repo: org/x%d, include: *i}\n" % n for n in range(10)),
    ],
    ids=["billion-laughs", "deep", "recursive-alias", "wide-aliases"],
)
def test_hostile_yaml_manifest(tmp_path: Path, text: bytes) -> None:
    manifest = tmp_path / "m.yml"
    manifest.write_bytes(text)
    rc, err = run_cli(["sync", str(manifest), "--store", str(tmp_path / "s")], [])
    assert rc == 2, err
    assert str(manifest) in err
    assert "unexpected" not in err


def test_hostile_receipt_in_a_target_is_named_by_verify(world: World, tmp_path: Path) -> None:
    target = tmp_path / "cache"
    assert run_cli(["import", str(world.bundle), "--target", str(target)], [])[0] == 0
    (receipt,) = target.rglob(".mirror/receipts/*.json")
    for case in ("fifo", "deep", "devzero", "dir"):
        plant(receipt, case, bounded.RECORD)
        rc, err = run_cli(["verify", "--target", str(target)], [receipt] if case == "fifo" else [])
        assert rc == 4, err
        assert str(receipt) in err, err


def test_other_bundles_still_import_beside_a_hostile_one(world: World, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.tar.zst"
    os.mkfifo(fifo)
    target = tmp_path / "cache"
    rc, err = run_cli(["import", str(fifo), str(world.bundle), "--target", str(target)], [fifo])
    assert rc == 4, err
    assert str(fifo) in err
    assert list(target.glob("models--org--tiny/snapshots/*/config.json"))


@pytest.mark.e2e
def test_a_huge_file_is_refused_in_small_memory(tmp_path: Path, isolated_home: Path) -> None:
    """Under an address-space limit far below the files' sizes: refused by their size, never read whole."""
    limit = 1 << 30
    cases = {
        "sync": bounded.MANIFEST,
        "sync --locked": bounded.LOCK_FILE,
        "export --have": bounded.HAVE,
    }
    for n, (command, bound) in enumerate(cases.items()):
        path = tmp_path / f"huge{n}"
        with open(path, "wb") as f:
            f.truncate(max(bound.size + 1, 4 * limit))
        args = [*mirror_command(), *command.split(), str(path), "--store", str(tmp_path / "s")]
        if "export" in command:
            args += ["-o", str(tmp_path / "o.tar.zst")]
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=120,  # a failsafe only
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert proc.returncode == 2, proc.stderr
        assert str(path) in proc.stderr and "larger than" in proc.stderr, proc.stderr


def test_the_depth_bound_counts_without_recursion() -> None:
    assert bounded.parse_json(b"[[1]]", bounded.Bound("x", 100, depth=2)) == [[1]]
    with pytest.raises(ValueError, match="deeper than 2"):
        bounded.parse_json(b"[[[1]]]", bounded.Bound("x", 100, depth=2))
    with pytest.raises(ValueError, match="deeper"):
        bounded.parse_json(DEEP + b"]" * len(DEEP), bounded.RECORD)


def test_store_record_refused_names_it(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    repo = put_repo(store, "org/r", {"main": {"a.txt": b"a"}})
    record = next((store.local_root / "repos").rglob("snapshots/*.json"))
    record.write_bytes(b"[" * 10_000)
    from mirror.errors import IntegrityError

    with pytest.raises(IntegrityError, match=str(record)):
        store.read_snapshot(repo.key, record.stem)


@pytest.mark.parametrize("case", CASES)
def test_records_beside_an_import_and_the_trust_state_are_bounded(tmp_path: Path, case: str) -> None:
    """A `.mirror/*.json` record counts as absent (the import then decides as for none); the trust state,
    whose loss would forget an accepted sequence, is refused naming it. Neither blocks or grows memory."""
    from mirror.errors import MirrorError
    from mirror.fsutil import read_json_record
    from mirror.signing import FolderSequences, read_sequence

    record = tmp_path / "implied-main.json"
    plant(record, case, bounded.RECORD)
    assert read_json_record(record) == {}
    state = tmp_path / "trust.json"
    plant(state, case, bounded.RECORD)
    with pytest.raises(MirrorError, match=str(state)):
        read_sequence(FolderSequences(tmp_path), "trust")


@pytest.mark.parametrize("case", ["fifo", "devzero", "dir", "huge"])
def test_a_ref_file_of_a_cache_is_bounded(tmp_path: Path, case: str) -> None:
    """An hf cache ref that is not a small regular file names no commit (inventory lists no revision)."""
    from mirror.layouts import make_layout

    cache = tmp_path / "hub"
    snapshots = cache / "models--org--x" / "snapshots" / ("a" * 40)
    snapshots.mkdir(parents=True)
    (cache / "models--org--x" / "refs").mkdir()
    plant(cache / "models--org--x" / "refs" / "main", case, bounded.REF)
    (repo,) = make_layout("hf", cache).held_repos()
    assert repo.revisions == ()
