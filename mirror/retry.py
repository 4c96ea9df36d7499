"""Retrying what may pass: capped exponential backoff with jitter, honouring Retry-After, bounded in
attempts and in total time. Used by every source and by the transfer."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from mirror.errors import HubError, IntegrityError, Interrupted, NotFoundError, RetryableError

log = logging.getLogger("mirror")
T = TypeVar("T")

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter, bounded in attempts and in total time; everything waiting or
    streaming under it stops early once `stop` is set (Ctrl-C), raising Interrupted."""

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
        """time.sleep, cut short by a stop."""
        if self.stop.wait(seconds):
            raise Interrupted("interrupted")

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after  # the server knows best; the total time bound still applies
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


def with_retries(fn: Callable[[], T], policy: RetryPolicy, label: str) -> T:
    """Call fn until it succeeds or the policy is spent; only RetryableError and IntegrityError retry."""
    started = time.monotonic()
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
        if time.monotonic() - started + wait > policy.total:
            raise HubError(f"{label}: giving up: retrying would pass the {policy.total:.0f}s retry time")
        policy.sleep(wait)


def request_error(error: Exception, where: str) -> HubError:
    """The HTTP client's failure to get an answer, as ours: a dropped or refused connection (TLS errors
    included) may pass and is retried; a redirect loop, a body that cannot be decoded (a Content-Encoding
    that lies) or anything else the client refuses does not."""
    import httpx2

    if isinstance(error, httpx2.TransportError):
        return RetryableError(f"{where}: connection failed: {type(error).__name__}: {error}")
    if isinstance(error, httpx2.TooManyRedirects):
        return HubError(f"{where}: the hub redirects in a loop ({error}); check the endpoint")
    if isinstance(error, httpx2.DecodingError):
        return HubError(
            f"{where}: the hub's answer cannot be decoded ({error}); a proxy or its Content-Encoding lies"
        )
    return HubError(f"{where}: the request failed: {type(error).__name__}: {error}")


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


@dataclass(frozen=True)
class TokenHint:
    """What a hub refusing access (401/403) should tell the user about the token: the variable it is read
    from (a manifest's `token_env`, else the hub's usual one) and whether a token was sent. Never the token."""

    var: str
    sent: bool
    named: bool = False  # `var` is a manifest's token_env

    def todo(self) -> str:
        """What to do with the token for a repo that is private or gated."""
        if self.sent:
            return (
                f"the token from {self.var} was sent and refused: set {self.var} to a token that may read "
                "this repo (for a gated repo, accept its terms on the hub with that account)"
            )
        other = "" if self.named else " (or name another variable with the manifest's token_env:)"
        return f"no token was sent: set {self.var}{other} to a token that may read it"

    def access_denied(self, where: str, status: int | str) -> NotFoundError:
        """The one message for a 401/403, on a listing or a file download alike."""
        # a hub answers 401 to an anonymous request for a repo that does not exist, too
        what = (
            "private or gated" if status == 403 else "private or gated, or does not exist (check the repo id)"
        )
        return NotFoundError(f"{where}: access denied (HTTP {status}); the repo is {what}: {self.todo()}")


def check_status(status: int, retry_after: str | None, where: str, token: TokenHint) -> None:
    """Map a hub's HTTP status to our errors: retry 5xx/429, explain 401/403/404, pass 200."""
    if status == 200:
        return
    if status in RETRY_STATUS:
        raise RetryableError(f"{where}: the hub answered HTTP {status}", retry_after_seconds(retry_after))
    if status in (401, 403):
        raise token.access_denied(where, status)
    if status == 404:
        raise NotFoundError(f"{where}: not found on the hub (HTTP 404); check the repo id and revision")
    raise HubError(f"{where}: the hub answered HTTP {status}")
