"""Retries on an injected clock: the exact backoff, the total time bound, Retry-After, and a stop during a
wait; nothing here sleeps or reads the wall clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mirror.errors import HubError, IntegrityError, Interrupted, NotFoundError, RetryableError
from mirror.retry import RetryPolicy, with_retries
from tests.clocks import FakeClock


def failing(times: int, error: Callable[[], Exception], then: str = "ok") -> Callable[[], str]:
    """A call that raises `error()` `times` times, then answers `then`; `calls` counts the calls."""

    def call() -> str:
        call.calls += 1  # type: ignore[attr-defined]
        if call.calls <= times:  # type: ignore[attr-defined]
            raise error()
        return then

    call.calls = 0  # type: ignore[attr-defined]
    return call


def dropped() -> RetryableError:
    return RetryableError("org/a: connection failed")


def test_the_backoff_doubles_up_to_the_cap() -> None:
    fake = FakeClock()
    policy = RetryPolicy(clock=fake.clock, attempts=7, base=0.5, cap=5.0)
    assert with_retries(failing(6, dropped), policy, "org/a") == "ok"
    assert fake.waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_the_jitter_is_drawn_up_to_the_backoff() -> None:
    draws: list[tuple[float, float]] = []
    fake = FakeClock(jitter=lambda a, b: draws.append((a, b)) or b / 2)  # type: ignore[func-returns-value]
    policy = RetryPolicy(clock=fake.clock, attempts=4, base=1.0, cap=3.0)
    with_retries(failing(3, dropped), policy, "org/a")
    assert draws == [(0, 1.0), (0, 2.0), (0, 3.0)]
    assert fake.waits == [0.5, 1.0, 1.5]


def test_it_gives_up_after_the_attempts() -> None:
    fake = FakeClock()
    call = failing(10, dropped)
    with pytest.raises(HubError, match=r"connection failed \(giving up after 3 attempts\)") as e:
        with_retries(call, RetryPolicy(clock=fake.clock, attempts=3, base=1.0), "org/a")
    assert not isinstance(e.value, RetryableError)  # spent: a caller above does not retry it again
    assert call.calls == 3 and fake.waits == [1.0, 2.0]  # type: ignore[attr-defined]


def test_it_gives_up_before_a_wait_would_pass_the_total_time() -> None:
    fake = FakeClock()
    policy = RetryPolicy(clock=fake.clock, attempts=100, base=1.0, cap=100.0, total=10.0)
    with pytest.raises(HubError, match="org/a: giving up: retrying would pass the 10s retry time"):
        with_retries(failing(100, dropped), policy, "org/a")
    assert fake.waits == [1.0, 2.0, 4.0]  # 7 s spent; 8 s more would end at 15 s


def test_the_time_the_calls_take_counts_towards_the_total() -> None:
    fake = FakeClock()

    def slow() -> str:
        fake.now += 6.0  # a request that hangs for 6 s before it fails
        raise dropped()

    with pytest.raises(HubError, match="would pass the 10s retry time"):
        with_retries(slow, RetryPolicy(clock=fake.clock, attempts=100, base=1.0, total=10.0), "org/a")
    assert fake.waits == [1.0]  # 6 + 1 + 6 = 13 s; a second wait of 2 s would end past 10


def test_retry_after_is_waited_instead_of_the_backoff() -> None:
    fake = FakeClock()
    policy = RetryPolicy(clock=fake.clock, attempts=5, base=0.5, cap=1.0)
    told = failing(2, lambda: RetryableError("org/a: HTTP 429", retry_after=7.0))
    assert with_retries(told, policy, "org/a") == "ok"
    assert fake.waits == [7.0, 7.0]  # neither capped nor jittered


def test_a_retry_after_past_the_total_time_gives_up_at_once() -> None:
    fake = FakeClock()
    policy = RetryPolicy(clock=fake.clock, total=60.0)
    with pytest.raises(HubError, match="would pass the 60s retry time"):
        with_retries(failing(1, lambda: RetryableError("HTTP 503", retry_after=3600.0)), policy, "org/a")
    assert fake.waits == []


def test_a_stop_during_a_wait_ends_it_at_once() -> None:
    policy: RetryPolicy

    def stop_now(seconds: float) -> None:
        policy.stop.set()

    fake = FakeClock(on_wait=stop_now)
    policy = RetryPolicy(clock=fake.clock)
    call = failing(10, lambda: RetryableError("HTTP 503", retry_after=600.0))
    with pytest.raises(Interrupted):
        with_retries(call, policy, "org/a")
    assert call.calls == 1 and fake.waits == []  # type: ignore[attr-defined]


def test_a_stopped_run_makes_no_call() -> None:
    policy = RetryPolicy(clock=FakeClock().clock)
    policy.stop.set()
    call = failing(0, dropped)
    with pytest.raises(Interrupted):
        with_retries(call, policy, "org/a")
    assert call.calls == 0  # type: ignore[attr-defined]


def test_a_hash_mismatch_is_fetched_once_more_then_raised() -> None:
    fake = FakeClock()
    policy = RetryPolicy(clock=fake.clock, base=1.0)
    assert with_retries(failing(1, lambda: IntegrityError("sha256 mismatch")), policy, "org/a") == "ok"
    call = failing(5, lambda: IntegrityError("sha256 mismatch"))
    with pytest.raises(IntegrityError):
        with_retries(call, policy, "org/a")
    assert call.calls == 2 and fake.waits == [1.0, 1.0]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "error", [NotFoundError("org/a: HTTP 404"), HubError("org/a: HTTP 400"), ValueError()]
)
def test_what_cannot_pass_is_not_retried(error: Exception) -> None:
    fake = FakeClock()
    call = failing(1, lambda: error)
    with pytest.raises(type(error)):
        with_retries(call, RetryPolicy(clock=fake.clock), "org/a")
    assert call.calls == 1 and fake.waits == []  # type: ignore[attr-defined]
