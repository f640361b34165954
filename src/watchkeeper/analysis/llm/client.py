"""Talking to an OpenAI-compatible chat server: the LlmClient protocol, retries, circuit breaker.

``OpenAiClient`` makes exactly one HTTP attempt per ``chat()`` (the openai client's own
retries are off: its defaults are a 10-minute timeout and 2 silent retries) and turns the
client's exceptions into ours, which say whether a retry makes sense. ``call_with_retries``
adds our policy on top (timeouts, 429 honouring Retry-After, 5xx; exponential backoff with
jitter; never sleeping past the caller's deadline), and ``CircuitBreaker`` stops calling a
server that keeps failing.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from watchkeeper.config import LlmConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Sent as the API key to servers that need none (Ollama, vLLM, llama.cpp): the openai
#: client refuses to start without one.
PLACEHOLDER_API_KEY = "no-key"

#: A chat message in the OpenAI wire format (role, content, tool_calls, tool_call_id).
Message = dict[str, Any]
#: A tool declaration in the OpenAI wire format ({"type": "function", "function": {...}}).
ToolSpec = dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asked for; ``arguments`` is its raw JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Usage:
    """Tokens one request cost, as the server reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatReply:
    """The assistant's message: text content, tool calls, or both."""

    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage | None = None
    finish_reason: str | None = None


class LlmClient(Protocol):
    """What the investigator needs from an LLM: one chat request, and a way to close."""

    async def chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()
                   ) -> ChatReply:
        """Send one chat request (no retries); raise an LlmError on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


# --------------------------------------------------------------------------- errors


class LlmError(Exception):
    """A request to the LLM failed; ``retryable`` says whether trying again can help."""

    retryable = False
    #: Short, stable cause for notes and logs ("timeout", "HTTP 429", ...).
    reason = "error"

    def __init__(self, message: str, *, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


class LlmTimeout(LlmError):
    """No answer within the timeout."""

    retryable = True
    reason = "timeout"


class LlmConnectionError(LlmError):
    """The server could not be reached."""

    retryable = True
    reason = "connection failed"


class LlmRateLimited(LlmError):
    """HTTP 429; ``retry_after`` is the server's wish in seconds, if it said one."""

    retryable = True
    reason = "rate limited (HTTP 429)"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LlmServerError(LlmError):
    """HTTP 5xx (or 408/409, which the server says are worth retrying)."""

    retryable = True

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.reason = f"server error (HTTP {status})"


class LlmRequestRejected(LlmError):
    """HTTP 4xx other than 408/409/429: the same request would fail again."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.reason = f"request rejected (HTTP {status})"


class LlmBadReply(LlmError):
    """The server answered, but not with a usable chat completion."""

    reason = "unusable reply"


# --------------------------------------------------------------------------- OpenAI


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, or ``Retry-After`` (s or date)."""
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    text = lower.get("retry-after")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return value if math.isfinite(value) and value >= 0 else None


def openai_client_from_config(llm: LlmConfig) -> LlmClient:
    """The default client: imported only when an LLM is in use (openai costs ~17 MB)."""
    from .openai_client import OpenAiClient

    return OpenAiClient.from_config(llm)


# --------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait between attempts."""

    retries: int = 2
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    #: A Retry-After beyond this is capped: we would rather fall back than wait minutes.
    max_retry_after_s: float = 30.0

    def delay(self, attempt: int, exc: LlmError, rng: Callable[[], float]) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        if isinstance(exc, LlmRateLimited) and exc.retry_after is not None:
            # The server said when; jitter only upwards, so we never come back too early.
            return min(exc.retry_after, self.max_retry_after_s) * (1.0 + 0.1 * rng())
        backoff = min(self.max_delay_s, self.base_delay_s * (2.0 ** attempt))
        # "Equal jitter": at least half the backoff, so retries still spread out in time.
        return backoff * (0.5 + 0.5 * rng())


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: Callable[[], float] = random.random,
    deadline: float | None = None,
) -> T:
    """Run ``attempt`` until it succeeds, fails for good, or retries/deadline run out.

    ``deadline`` is in event-loop time; a wait that would end past it is not started. A
    small loop rather than tenacity: the two rules that matter here (wait what Retry-After
    says, and give up early when the caller's deadline would pass) would be custom wait
    and stop callbacks there, which is most of this code anyway.
    """
    loop = asyncio.get_running_loop()
    tries = 0
    while True:
        tries += 1
        try:
            return await attempt()
        except LlmError as exc:
            exc.attempts = tries
            if not exc.retryable or tries > policy.retries:
                raise
            wait = policy.delay(tries - 1, exc, rng)
            if deadline is not None and loop.time() + wait >= deadline:
                log.info("LLM %s; not retrying: the deadline is near", exc.reason)
                raise
            log.info("LLM %s; retry %d of %d in %.2f s", exc.reason, tries, policy.retries, wait)
            await sleep(wait)


# --------------------------------------------------------------------------- breaker


BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Stops calling a failing server: ``failures`` in a row open it for ``reset_s``.

    After that one trial call is let through (half-open): success closes the breaker,
    failure opens it for another ``reset_s``. ``clock`` is injected so tests move time.
    """

    def __init__(self, failures: int, reset_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self._clock = clock
        self._state: BreakerState = "closed"
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial = False

    def configure(self, failures: int, reset_s: float) -> None:
        """Apply changed settings without losing the current state."""
        self.failures = failures
        self.reset_s = reset_s

    @property
    def state(self) -> BreakerState:
        """closed, open, or half_open (open and due for a trial)."""
        if self._state == "open" and self._clock() >= self._opened_at + self.reset_s:
            return "half_open"
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success."""
        return self._consecutive

    def retry_in(self) -> float:
        """Seconds until a trial call is allowed (0 when it is)."""
        if self._state == "closed":
            return 0.0
        return max(0.0, self._opened_at + self.reset_s - self._clock())

    def ready(self) -> bool:
        """Whether a call may go out now (without claiming the half-open trial)."""
        state = self.state
        return state == "closed" or (state == "half_open" and not self._trial)

    def acquire(self) -> bool:
        """Claim permission for one call; in half-open state only one caller gets it."""
        if not self.ready():
            return False
        if self.state == "half_open":
            self._state = "half_open"
            self._trial = True
        return True

    def success(self) -> bool:
        """Record a good call; True if this closed an open breaker."""
        recovered = self._state != "closed"
        self._state = "closed"
        self._consecutive = 0
        self._trial = False
        return recovered

    def failure(self) -> bool:
        """Record a failed call; True if this opened a closed breaker (a new outage)."""
        self._consecutive += 1
        self._trial = False
        if self._state != "closed":
            self._state = "open"  # the trial failed: wait another reset period
            self._opened_at = self._clock()
            return False
        if self._consecutive >= self.failures:
            self._state = "open"
            self._opened_at = self._clock()
            return True
        return False

    def release(self) -> None:
        """The claimed call never reached the server (budget, config): let another try."""
        self._trial = False
