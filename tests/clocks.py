"""Clocks for tests: time that passes only when the code under test waits, so no test sleeps or reads the
wall clock to see a retry's backoff."""

from __future__ import annotations

import threading
from collections.abc import Callable

from mirror.clock import Clock

NO_WAIT = Clock(wait=lambda stop, seconds: stop.is_set())
"""The real time, but every wait returns at once: for tests that retry against a real server."""


class FakeClock:
    """Time that stands still until the code waits on `clock`; every wait is recorded in `waits`.

    `jitter(a, b)` stands in for the uniform draw (default: the top of the range, so backoffs are exact);
    `on_wait(seconds)` runs at each wait, before time moves (a test sets the stop there)."""

    def __init__(
        self,
        start: float = 1_764_936_000.0,
        *,
        jitter: Callable[[float, float], float] = lambda a, b: b,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self.now = start
        self.waits: list[float] = []
        self._lock = threading.Lock()
        self._on_wait = on_wait
        self.clock = Clock(time=self._now, monotonic=self._now, wait=self._wait, uniform=jitter)

    def _now(self) -> float:
        return self.now

    def _wait(self, stop: threading.Event, seconds: float) -> bool:
        if self._on_wait is not None:
            self._on_wait(seconds)
        if stop.is_set():
            return True
        with self._lock:
            self.waits.append(seconds)
            self.now += seconds
        return False
