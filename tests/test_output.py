"""What mirror writes (issue 11, section 3): untrusted text escaped at the output edge, a JSON error object
for every failure under --json, verify saying what it could not vouch for, and read-only commands that
create nothing."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from mirror.bundle import INDEX_NAME, select_all, write_bundle
from mirror.cli import cli, main
from mirror.clock import SYSTEM
from mirror.printable import printable
from mirror.store import Store
from tests.conftest import put_repo
from tests.modelfiles import safetensors_sized
from tests.test_bounds import _bundle_with_index

HOSTILE = "\x1b[2J\x1b]0;pwned\x07\rok\x9b31m\u202eevil\u2066\udc80"
UNSAFE = ("\x1b", "\x07", "\r", "\x9b", "\u202e", "\u2066", "\udc80")


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def assert_escaped(text: str) -> None:
    assert not any(c in text for c in UNSAFE), repr(text)


@pytest.fixture
def store(tmp_path: Path, isolated_home: Path) -> Store:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    put_repo(
        store,
        "org/tiny",
        {"main": {"config.json": b"{}\n", "model.safetensors": safetensors_sized(b"w" * 136)}},
    )
    return store


@pytest.fixture
def bundle(store: Store, tmp_path: Path) -> Path:
    out = tmp_path / "b.tar.zst"
    write_bundle(store, select_all(store), out)
    return out


def test_printable_escapes_every_unsafe_character() -> None:
    text = printable("a" + HOSTILE + "é日本\t\n")
    assert_escaped(text)
    assert "\\x1b[2J" in text and "\\u202e" in text and "\\udc80" in text and "\\x9b" in text
    assert "é日本" in text and text.endswith("\\t\\n")
    text.encode("utf-8")  # no surrogate left to fail the write


def _hostile_index(bundle: Path, out: Path) -> None:
    """`bundle`'s index with hostile text in the free fields an index holds (inspect reads the index only)."""
    from mirror.bundle import read_index
    from mirror.signing import read_index_bytes

    data = json.loads(read_index_bytes(bundle))
    data["tool_version"] = HOSTILE
    assert read_index(bundle)  # the original is fine
    _bundle_with_index(out, json.dumps(data).encode())


def test_inspect_escapes_index_fields(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = tmp_path / "h.tar.zst"
    _hostile_index(bundle, hostile)
    rc, out, err = run(["inspect", str(hostile)], capsys)
    assert rc == 0, err
    assert_escaped(out)
    assert "\\x1b[2J" in out
    rc, out, _ = run(["inspect", str(hostile), "--json"], capsys)
    assert rc == 0
    assert_escaped(out)
    assert json.loads(out)["tool_version"] == HOSTILE  # escaped in the text, intact in the value


@pytest.mark.parametrize("as_json", [False, True])
def test_a_file_name_with_control_characters_and_undecodable_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    name = tmp_path / ("bad" + HOSTILE + ".tar.zst")
    name.write_bytes(b"not a bundle")  # a real file of that name: the refusal names it
    rc, out, err = run(["inspect", str(name), *(["--json"] if as_json else [])], capsys)
    assert rc == 4
    assert_escaped(err + out)
    assert printable(str(name)) in err
    if as_json:
        assert str(name) in json.loads(out)["error"]["message"]


def test_error_messages_and_log_lines_are_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mirror.signing import keygen

    keys = keygen(tmp_path / ("k" + HOSTILE))
    os.chmod(keys.private_key, 0o644)  # logs a warning naming the key
    rc, out, err = run(
        [
            "export",
            "--sign",
            str(keys.private_key),
            "-o",
            str(tmp_path / "o.tar.zst"),
            "--store",
            str(tmp_path / "s"),
        ],
        capsys,
    )
    assert "readable by others" in err  # the log line
    assert_escaped(err + out)
    assert rc != 0  # an empty store: nothing to export


def test_the_log_formatter_escapes_tracebacks_line_by_line() -> None:
    from mirror.cli.output import EscapingFormatter

    try:
        raise ValueError(HOSTILE)
    except ValueError:
        record = logging.LogRecord("mirror", logging.ERROR, __file__, 1, "bad %s", (HOSTILE,), sys.exc_info())
    text = EscapingFormatter("%(message)s").format(record)
    assert_escaped(text)
    assert "Traceback" in text and "\n" in text


# --json: one error object for every failure ----------------------------------------------------------------
def _failures(tmp_path: Path, bundle: Path) -> dict[str, tuple[list[str], int]]:
    bad_manifest = tmp_path / "bad.yml"
    bad_manifest.write_text("version: 1\nmodels: 3\n")
    bad_lock = tmp_path / "bad.lock"
    bad_lock.write_text("{}")
    (tmp_path / "taken.key").write_text("x")
    damaged = tmp_path / "damaged.tar.zst"
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    fifo = tmp_path / "fifo.tar.zst"
    os.mkfifo(fifo)
    store = ["--store", str(tmp_path / "store")]
    return {
        "sync": (["sync", str(bad_manifest), *store], 2),
        "status": (["status", str(bad_manifest), *store], 2),
        "gc": (["gc", "--lock", str(bad_lock), *store], 2),
        "export": (["export", "-o", str(tmp_path / "o.tar.zst"), "--split", "1", *store], 2),
        "import": (["import", str(fifo), "--target", str(tmp_path / "t")], 4),
        "inventory": (["inventory", "--layout", "dir", "-o", str(tmp_path / "have.json")], 2),
        "keygen": (["keygen", "-o", str(tmp_path / "taken")], 1),
        "inspect": (["inspect", str(tmp_path / "bad.yml")], 4),
        "verify": (["verify", str(damaged)], 4),
        "scan": (["scan", str(damaged)], 4),
        "serve": (["serve", "--store", str(tmp_path / "no-store")], 2),
    }


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_json_error_object_for_a_failure(
    command: str, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failures = _failures(tmp_path, bundle)
    assert command in failures, f"mirror {command} has no failure case in _failures"
    args, code = failures[command]
    rc, out, err = run(args, capsys)
    assert rc == code, err
    assert out == ""  # no JSON without --json
    human = err
    rc, out, err = run([*args, "--json"], capsys)
    assert rc == code
    assert err == human  # the same message on stderr
    error = json.loads(out)["error"]
    assert error["exit_code"] == code
    assert error["type"] == {1: "failure", 2: "usage", 4: "integrity"}[code]
    assert error["message"] and printable(error["message"]) in human


def test_json_error_for_click_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ["export", "--json", "--no-such-option"],
        ["export", "--json", "/nonexistent.yml", "-o", "out.tar.zst"],
        ["verify", "--json", "--wat"],
    ):
        rc, out, err = run(args, capsys)
        assert rc == 2
        assert json.loads(out)["error"]["type"] == "usage"
        assert "Usage:" in err


def test_json_is_not_read_from_after_a_double_dash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(["sync", "--store", str(tmp_path / "s"), "--", "--json"], capsys)
    assert rc == 2
    assert out == ""


@pytest.mark.parametrize(
    ("raised", "code", "kind"),
    [(RuntimeError("boom\x1b"), 1, "unexpected"), (KeyboardInterrupt(), 130, "interrupted")],
)
def test_json_error_for_unexpected_exceptions_and_interrupts(
    raised: BaseException,
    code: int,
    kind: str,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import mirror.status

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise raised

    monkeypatch.setattr(mirror.status, "store_targets", explode)
    for as_json in (False, True):
        rc, out, err = run(
            ["status", "--store", str(store.local_root), *(["--json"] if as_json else [])], capsys
        )
        assert rc == code
        assert err and "\x1b" not in err
        if as_json:
            error = json.loads(out)["error"]
            assert (error["exit_code"], error["type"]) == (code, kind)
        else:
            assert out == ""


# verify: what it could not vouch for -------------------------------------------------------------------------
def test_verify_an_absent_or_empty_store_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    absent = tmp_path / "absent"
    rc, out, err = run(["verify", "--store", str(absent)], capsys)
    assert rc == 1 and "does not exist" in err and str(absent) in err
    assert not absent.exists()
    empty = tmp_path / "empty"
    (empty / "tmp").mkdir(parents=True)
    rc, out, err = run(["verify", "--store", str(empty), "--json"], capsys)
    assert rc == 1 and "holds nothing" in err
    assert json.loads(out)["error"]["exit_code"] == 1


def test_verify_a_bundle_says_whether_its_transfer_digest_was_checked(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(["verify", str(bundle), "--json"], capsys)
    assert rc == 0
    assert json.loads(out)[0]["transfer_checked"] is True
    rc, out, _ = run(["verify", str(bundle)], capsys)
    assert "as its .sha256 says" in out
    bundle.with_name(bundle.name + ".sha256").unlink()
    rc, out, _ = run(["verify", str(bundle)], capsys)
    assert rc == 0 and "transfer digest was not checked" in out
    rc, out, _ = run(["verify", str(bundle), "--json"], capsys)
    (result,) = json.loads(out)
    assert result["transfer_checked"] is False and len(result["sha256"]) == 64


# read-only commands create nothing ---------------------------------------------------------------------------
def listing(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in root.rglob("*")}


def test_read_only_commands_create_nothing_where_nothing_is(
    tmp_path: Path, isolated_home: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = tmp_path / "world"
    world.mkdir()
    store, target = world / "store", world / "cache"
    before = listing(isolated_home) | listing(world)
    for args in (
        ["status", "--store", str(store)],
        ["gc", "--dry-run", "--store", str(store)],
        ["verify", "--store", str(store)],
        ["status"],  # the default store
        ["gc", "--dry-run"],
        ["verify"],
        ["verify", "--target", str(target)],
        ["verify", "--layout", "modelscope"],
        ["verify", "--layout", "dir", "--target", str(target)],
        ["inventory", "--target", str(target), "-o", str(tmp_path / "have.json")],
        ["inventory", "--layout", "modelscope", "-o", str(tmp_path / "have.json")],
        ["inspect", str(bundle)],
    ):
        run(args, capsys)
        assert listing(isolated_home) | listing(world) == before, args


def test_read_only_commands_create_nothing_in_a_store_and_target(
    tmp_path: Path, store: Store, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "cache"
    assert run(["import", str(bundle), "--target", str(target)], capsys)[0] == 0
    before = listing(store.local_root), listing(target)
    for args in (
        ["status", "--store", str(store.local_root)],
        ["verify", "--store", str(store.local_root)],
        ["verify", "--target", str(target)],
        ["inventory", "--target", str(target), "-o", str(tmp_path / "have.json")],
        ["inspect", str(bundle)],
    ):
        assert run(args, capsys)[0] == 0, args
        assert (listing(store.local_root), listing(target)) == before, args


def test_index_member_named_in_json_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.tar.zst"
    _bundle_with_index(bad, b"[" * 1000)
    rc, out, _ = run(["inspect", str(bad), "--json"], capsys)
    assert rc == 4 and INDEX_NAME in json.loads(out)["error"]["message"]
