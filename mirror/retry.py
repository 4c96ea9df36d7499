"""Retrying what may pass: capped exponential backoff with jitter, honouring Retry-After, bounded in
attempts and in total time, on the Clock the caller gives. Used by every source and by the transfer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from mirror.clock import Clock
from mirror.errors import HubError, IntegrityError, Interrupted, RetryableError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter, bounded in attempts and in total time; everything waiting or
    streaming under it stops early once `stop` is set (Ctrl-C), raising Interrupted. Its `clock` is the time
    of the run: the waits, the jitter, the total time, and the transfers' and sync's own timing."""

    clock: Clock
    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    total: float = 900.0
    integrity_attempts: int = 2
    stop: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    def check(self) -> None:
        """Raise Interrupted once the run was asked to stop."""
        if self.stop.is_set():
            raise Interrupted("interrupted")

    def sleep(self, seconds: float) -> None:
        """Wait on the clock, cut short by a stop."""
        if self.clock.sleep(seconds, self.stop):
            raise Interrupted("interrupted")

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after  # the server knows best; the total time bound still applies
        return self.clock.uniform(0, min(self.cap, self.base * 2**attempt))


def with_retries(fn: Callable[[], T], policy: RetryPolicy, label: str) -> T:
    """Call fn until it succeeds or the policy is spent; only RetryableError and IntegrityError retry."""
    started = policy.clock.monotonic()
    integrity_failures = 0
    attempt = 0
    while True:
        policy.check()
        try:
            return fn()
        except IntegrityError as e:
            integrity_failures += 1
            if integrity_failures >= policy.integrity_attempts:
                raise
            wait = policy.delay(attempt, None)
            log.warning("%s; downloading it again in %.1fs", e, wait)
        except RetryableError as e:
            if attempt + 1 >= policy.attempts:
                raise HubError(f"{e} (giving up after {attempt + 1} attempts)") from None
            wait = policy.delay(attempt, e.retry_after)
            log.warning("%s; retrying in %.1fs", e, wait)
        attempt += 1
        if policy.clock.monotonic() - started + wait > policy.total:
            raise HubError(f"{label}: giving up: retrying would pass the {policy.total:.0f}s retry time")
        policy.sleep(wait)
