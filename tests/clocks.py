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


class ManualClock:
    """Time that moves only when the test calls `advance`; a wait blocks until time reaches its end (or
    its stop is set), so a background thread (a lease's renewer) runs exactly when the test lets it.
    `waits` counts the waits begun."""

    def __init__(self, start: float = 1_764_936_000.0) -> None:
        self.now = start
        self.waits = 0
        self._moved = threading.Condition()
        self.clock = Clock(time=self._now, monotonic=self._now, wait=self._wait)

    def _now(self) -> float:
        return self.now

    def _wait(self, stop: threading.Event, seconds: float) -> bool:
        with self._moved:
            self.waits += 1
            self._moved.notify_all()
            end = self.now + seconds
            while self.now < end and not stop.is_set():
                self._moved.wait(0.01)  # a set stop does not notify: look again soon
        return stop.is_set()

    def advance(self, seconds: float) -> None:
        with self._moved:
            self.now += seconds
            self._moved.notify_all()

    def wait_for_waits(self, count: int) -> None:
        """Block until `count` waits have begun (a background thread is waiting again)."""
        with self._moved:
            assert self._moved.wait_for(lambda: self.waits >= count, timeout=30), "no wait began"
