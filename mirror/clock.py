"""Time for the library: a Clock the CLI passes in, and the one ISO 8601 form mirror writes.

The library never reads the wall clock or sleeps by itself; it asks the Clock it was given, so tests
drive time (retries, lock waits, signature expiry, lease renewals) without waiting for it.
"""

from __future__ import annotations

import random
import threading
import time as systime
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso(ts: float) -> str:
    """`2026-12-05T12:00:00Z` for a POSIX time (whole seconds, UTC)."""
    return datetime.fromtimestamp(int(ts), UTC).strftime(ISO_FORMAT)


def parse_iso(value: str) -> int | None:
    """The POSIX time of an `iso()` string; None when it is not one."""
    try:
        return int(datetime.strptime(value, ISO_FORMAT).replace(tzinfo=UTC).timestamp())
    except (ValueError, OverflowError):
        return None


@dataclass(frozen=True)
class Clock:
    """Wall time, monotonic time, sleeping and jitter, as one injectable object.

    `sleep(seconds, stop)` returns early (True) when `stop` is set; `uniform(a, b)` is the jitter source.
    """

    time: Callable[[], float] = systime.time
    monotonic: Callable[[], float] = systime.monotonic
    wait: Callable[[threading.Event, float], bool] = field(default=lambda stop, seconds: stop.wait(seconds))
    uniform: Callable[[float, float], float] = random.uniform

    def now_iso(self) -> str:
        return iso(self.time())

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Sleep `seconds`; True when `stop` was set meanwhile (then it returns at once)."""
        return self.wait(stop if stop is not None else threading.Event(), max(0.0, seconds))


SYSTEM = Clock()
"""The real clock; only the CLI (and tests that want real time) name it."""
