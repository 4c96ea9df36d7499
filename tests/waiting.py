"""Waiting for something another thread or process does (a server's log line, a sync's progress), polling
with a bound: `wait_until` says whether it came, `eventually` fails the test when it did not."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

FAILSAFE = 60.0  # seconds `eventually` waits by default: a test that hangs fails instead


def wait_until(
    done: Callable[[], Any], within: float = 10.0, *, proc: subprocess.Popen[Any] | None = None
) -> bool:
    """Whether `done()` came true within `within` seconds (False as soon as `proc`, if given, has ended)."""
    deadline = time.monotonic() + within
    while not done():
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            return bool(done())
        time.sleep(0.01)
    return True


def eventually(
    condition: Callable[[], Any],
    what: str,
    *,
    within: float = FAILSAFE,
    proc: subprocess.Popen[Any] | None = None,
) -> None:
    """Wait for `condition()`; fail naming `what` (and how `proc` ended, if it did) when it does not come."""
    if not wait_until(condition, within, proc=proc):
        ended = (
            f" (the process ended with {proc.returncode} first)"
            if proc is not None and proc.poll() is not None
            else ""
        )
        raise AssertionError(f"not within {within:.0f} s: {what}{ended}")
