"""How a run ends: every failure becomes one exit code (mirror.exits), a message and, with --json, an error
object; Ctrl-C and SIGTERM ask a run to stop; `sync --report` records whatever ended the run."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import click

from mirror.errors import MirrorError
from mirror.exits import ExitCode
from mirror.printable import printable

log = logging.getLogger(__name__)

EXIT_CODES_HELP = (
    "Exit codes: 0 ok (also nothing to do), 1 failure, 2 bad usage or invalid manifest, "
    "3 partial (some items failed, the rest were done), 4 integrity (hash or size mismatch, corrupt or "
    "hostile bundle), 75 another run holds the store lock, 130 stopped by Ctrl-C or SIGTERM."
)


# What --json names a failure (`type`), by exit code: the code's name (see README "Exit codes").
KINDS: dict[int, str] = {code: code.name.lower() for code in ExitCode if code != ExitCode.OK}


def kind_of(code: int) -> str:
    return KINDS.get(code, "failure")


def failure_of(error: BaseException) -> tuple[int, str, str]:
    """The exit code, message and kind (`--json`'s `type`) of the failure an exception ends a run with: the
    one mapping `main`, `--json` errors and `sync --report` share."""
    if isinstance(error, MirrorError):
        return error.exit_code, str(error), kind_of(error.exit_code)
    if isinstance(error, click.ClickException):
        code = ExitCode.USAGE if error.exit_code in (1, 2) else error.exit_code
        return code, error.format_message(), kind_of(code)
    if isinstance(error, KeyboardInterrupt | click.exceptions.Abort):
        return ExitCode.INTERRUPTED, "interrupted", kind_of(ExitCode.INTERRUPTED)
    return ExitCode.FAILURE, f"unexpected error: {type(error).__name__}: {error}", "unexpected"


def wants_json(args: Sequence[str]) -> bool:
    """Whether the command line asks for --json (an option before any `--`), also when it fails to parse."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def fail(
    args: Sequence[str], code: int, message: str, *, kind: str | None = None, shown: str | None = None
) -> NoReturn:
    """End the run on a failure: the human message on stderr (`shown`, else one line), with --json also
    `{"error": {"exit_code", "type", "message"}}` on stdout; exit `code`."""
    # The message is escaped whole first: a CR or LF in a name it holds must not start a line of its own.
    if shown is None:
        lines = [f"mirror: error: {message}"]
    else:
        lines = shown.replace(message, printable(message)).rstrip("\n").split("\n")
    for line in lines:
        click.echo(printable(line), err=True)
    if wants_json(args):
        error = {"exit_code": code, "type": kind or kind_of(code), "message": message}
        click.echo(json.dumps({"error": error}, indent=2))
    sys.exit(code)


def fail_on(args: Sequence[str], error: BaseException) -> NoReturn:
    """End the run on the exception that reached `main`: click's own text for a usage error, one line
    otherwise (the traceback too at -vv), and the exit code and --json error of `failure_of`."""
    code, message, kind = failure_of(error)
    shown = None
    if isinstance(error, click.ClickException):
        out = io.StringIO()
        error.show(file=out)
        shown = out.getvalue()
    elif kind == "interrupted":
        shown = message
    elif log.isEnabledFor(logging.DEBUG):
        log.exception("details")
    if kind == "unexpected":
        shown = f"mirror: {message} (run with -vv for details)"
    fail(args, code, message, kind=kind, shown=shown)


@contextmanager
def report_failure(path: Path | None) -> Iterator[None]:
    """`sync --report`: whatever ends the run early (a bad manifest or lock file, the store lock held,
    Ctrl-C, a bug) is written to the report too, with its exit code and message, so that a monitor never
    reads the success of an earlier run."""
    try:
        yield
    except BaseException as e:
        if path is not None and not isinstance(e, SystemExit):
            from mirror.fsutil import atomic_write_json

            code, message, _ = failure_of(e)
            try:
                atomic_write_json(path, {"ok": False, "exit_code": code, "error": message, "items": []})
            except OSError as write_error:
                log.error("cannot write the report %s: %s", path, write_error)
        raise


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM ask the run to stop: `stop` is set and the engine winds down, keeping
    what is complete. A second signal stops at once (KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; the default ones stay
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.warning("%s: stopping; press Ctrl-C again to stop at once", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def exit_leaving_stuck_transfers(code: int) -> None:
    """Exit after a stop. A transfer blocked in a read (a stalled hub) is not waited for: its bytes so far
    are on disk for the next run, and interpreter shutdown would wait for its thread forever."""
    sys.stdout.flush()
    sys.stderr.flush()
    deadline = time.monotonic() + 1.0
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    if any(
        t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.current_thread()
    ):
        os._exit(code)
    raise SystemExit(code)
