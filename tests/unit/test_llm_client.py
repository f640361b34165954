"""Retry policy, Retry-After parsing and the circuit breaker, on a fake clock."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Awaitable, Callable

import pytest

from watchkeeper.analysis.llm.client import (
    CircuitBreaker,
    LlmBadReply,
    LlmError,
    LlmRateLimited,
    LlmServerError,
    LlmTimeout,
    RetryPolicy,
    call_with_retries,
    parse_retry_after,
)

from ..conftest import FakeClock


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "3"}, 3.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
    ({"Retry-After": "soon"}, None),
    ({"Retry-After": "-1"}, None),
    ({"Retry-After": "nan"}, None),
    ({}, None),
])
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date() -> None:
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=1_000_000.0) == pytest.approx(30.0)
    assert parse_retry_after({"Retry-After": date}, now=2_000_000.0) == 0.0


def test_delay_backs_off_exponentially_with_jitter() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0)
    err = LlmTimeout("slow")
    assert [policy.delay(n, err, lambda: 0.0) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [policy.delay(n, err, lambda: 1.0) for n in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_delay_honours_retry_after_capped_and_never_early() -> None:
    policy = RetryPolicy(max_retry_after_s=30.0)
    assert policy.delay(0, LlmRateLimited("429", retry_after=3.0), lambda: 0.0) == 3.0
    assert policy.delay(0, LlmRateLimited("429", retry_after=3.0), lambda: 1.0) == \
        pytest.approx(3.3)
    assert policy.delay(0, LlmRateLimited("429", retry_after=600.0), lambda: 0.0) == 30.0
    # 429 without Retry-After: ordinary backoff.
    assert policy.delay(1, LlmRateLimited("429"), lambda: 0.0) == 0.5


class Script:
    """An attempt function failing with the given errors, then returning "ok"."""

    def __init__(self, *errors: LlmError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def recording_sleep() -> tuple[list[float], Callable[[float], Awaitable[None]]]:
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    return waits, sleep


async def test_retries_then_succeeds() -> None:
    waits, sleep = recording_sleep()
    attempt = Script(LlmTimeout("t"), LlmServerError("500", status=500))
    result = await call_with_retries(attempt, RetryPolicy(retries=2), sleep=sleep,
                                     rng=lambda: 0.0)
    assert result == "ok" and attempt.calls == 3 and waits == [0.25, 0.5]


async def test_gives_up_after_the_retries_and_counts_attempts() -> None:
    _, sleep = recording_sleep()
    attempt = Script(*[LlmServerError("502", status=502)] * 5)
    with pytest.raises(LlmServerError) as info:
        await call_with_retries(attempt, RetryPolicy(retries=2), sleep=sleep)
    assert attempt.calls == 3 and info.value.attempts == 3


async def test_non_retryable_errors_are_not_retried() -> None:
    _, sleep = recording_sleep()
    attempt = Script(LlmBadReply("garbage"))
    with pytest.raises(LlmBadReply):
        await call_with_retries(attempt, RetryPolicy(retries=5), sleep=sleep)
    assert attempt.calls == 1


async def test_no_wait_past_the_deadline() -> None:
    waits, sleep = recording_sleep()
    attempt = Script(LlmRateLimited("429", retry_after=10.0))
    deadline = asyncio.get_running_loop().time() + 5.0
    with pytest.raises(LlmRateLimited):
        await call_with_retries(attempt, RetryPolicy(retries=3), sleep=sleep, deadline=deadline)
    assert waits == [] and attempt.calls == 1


# --------------------------------------------------------------------------- breaker


def test_breaker_opens_after_failures_in_a_row(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failures=3, reset_s=60, clock=clock)
    assert breaker.failure() is False
    assert breaker.success() is False  # a success in between resets the count
    assert [breaker.failure() for _ in range(3)] == [False, False, True]
    assert breaker.state == "open" and not breaker.ready() and not breaker.acquire()
    assert breaker.retry_in() == 60


def test_breaker_half_opens_for_one_trial(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failures=1, reset_s=60, clock=clock)
    breaker.failure()
    clock.advance(59.9)
    assert not breaker.ready()
    clock.advance(0.2)
    assert breaker.state == "half_open"
    assert breaker.acquire() is True
    assert breaker.acquire() is False  # only one trial at a time
    assert breaker.failure() is False  # the same outage: no new "opened"
    assert not breaker.ready() and breaker.retry_in() == 60
    clock.advance(60)
    assert breaker.acquire()
    assert breaker.success() is True
    assert breaker.ready() and breaker.retry_in() == 0


def test_released_trial_lets_the_next_caller_try(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failures=1, reset_s=10, clock=clock)
    breaker.failure()
    clock.advance(10)
    assert breaker.acquire()
    breaker.release()
    assert breaker.acquire()


def test_breaker_settings_can_change(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failures=5, reset_s=10, clock=clock)
    breaker.failure()
    breaker.configure(failures=2, reset_s=10)
    assert breaker.failure() is True
