"""Investigator bookkeeping with a scripted LlmClient: budget, cache, fallbacks, cancellation.

These use a stand-in for our own LlmClient protocol (not the openai client); the HTTP path
is covered in tests/integration/test_llm_investigator.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import datetime, timezone

import pytest

from watchkeeper.analysis.llm import ChatReply, Investigator, LlmError, rule_based
from watchkeeper.analysis.llm.client import Message, ToolSpec
from watchkeeper.analysis.llm.investigator import AnswerCache, Budget
from watchkeeper.config import LlmConfig
from watchkeeper.events import Alert, Assessment

from ..conftest import FakeClock

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
GOOD = json.dumps({"summary": "busy", "confidence": 0.7, "evidence": ["event:a1"]})


def alert(**kw: object) -> Alert:
    fields: dict[str, object] = {"host": "h", "at": T0, "id": "a1", "fingerprint": "f",
                                 "rule": "cpu", "metric": "cpu.percent", "severity": "warning",
                                 "since": T0, "summary": "CPU high"}
    fields.update(kw)
    return Alert.model_validate(fields)


class Scripted:
    """An LlmClient whose replies (or exceptions) are listed up front."""

    def __init__(self, *replies: ChatReply | BaseException) -> None:
        self.replies = list(replies)
        self.requests: list[list[Message]] = []
        self.closed = False

    async def chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()
                   ) -> ChatReply:
        self.requests.append(list(messages))
        item = self.replies.pop(0) if self.replies else ChatReply(GOOD)
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        self.closed = True


def test_rule_based_fallback_shapes() -> None:
    own = Assessment(source="rule", summary="rule says", note="from rules")
    assert rule_based(alert(assessment=own), "why").note == "from rules; why"
    llm_made = Assessment(source="llm", summary="old llm answer")
    minimal = rule_based(alert(assessment=llm_made), "why")
    assert minimal.source == "rule" and minimal.summary == "CPU high"
    assert minimal.evidence == ("event:a1",)


def test_budget_windows_slide(clock: FakeClock) -> None:
    llm = LlmConfig(max_calls_per_hour=2, max_tokens_per_day=100)
    budget = Budget(clock)
    assert budget.spent(llm) is None
    budget.spend_call()
    clock.advance(1800)
    budget.spend_call()
    assert "2 investigations" in (budget.spent(llm) or "")
    clock.advance(1800)  # the first call is an hour old now
    assert budget.spent(llm) is None
    budget.spend_tokens(60)
    budget.spend_tokens(50)
    assert "100 tokens" in (budget.spent(llm) or "")
    clock.advance(86400)
    assert budget.tokens_today() == 0 and budget.calls_this_hour() == 0


def test_cache_ttl_and_size(clock: FakeClock) -> None:
    cache = AnswerCache(clock, size=2)
    a = Assessment(source="llm", summary="x")
    cache.put(("1", "w", "firing"), a, 10)
    cache.put(("2", "w", "firing"), a, 10)
    cache.put(("3", "w", "firing"), a, 10)
    assert cache.get(("1", "w", "firing")) is None  # evicted: oldest out
    assert cache.get(("3", "w", "firing")) is a
    clock.advance(10)
    assert cache.get(("3", "w", "firing")) is None
    cache.put(("4", "w", "firing"), a, 0)
    assert cache.get(("4", "w", "firing")) is None


async def test_injected_client_turns_the_llm_on_and_is_not_closed(clock: FakeClock) -> None:
    client = Scripted()
    inv = Investigator(lambda: LlmConfig(), client, clock=clock)
    result, _ = await inv.assess(alert(), None)
    assert result.source == "llm" and result.summary == "busy"
    await inv.aclose()
    assert not client.closed


async def test_unexpected_client_exception_never_escapes(clock: FakeClock) -> None:
    inv = Investigator(lambda: LlmConfig(), Scripted(RuntimeError("boom")), clock=clock)
    result, notices = await inv.assess(alert(), None)
    assert result.source == "rule" and "internal error" in (result.note or "")
    assert notices == []
    assert inv.breaker.ready()  # the claimed call was released


async def test_missing_usage_is_estimated(clock: FakeClock) -> None:
    inv = Investigator(lambda: LlmConfig(), Scripted(ChatReply(GOOD, usage=None)), clock=clock)
    await inv.assess(alert(), None)
    assert inv.budget.tokens_today() > 500  # the system prompt alone is a few thousand chars


async def test_cancelling_the_caller_propagates_and_releases(clock: FakeClock) -> None:
    class Hanging(Scripted):
        async def chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()
                       ) -> ChatReply:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    inv = Investigator(lambda: LlmConfig(breaker_failures=1), Hanging(), clock=clock)
    task = asyncio.create_task(inv.assess(alert(), None))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inv.breaker.ready() and inv.breaker.consecutive_failures == 0


async def test_no_tools_offered_when_the_step_bound_is_zero(clock: FakeClock) -> None:
    seen: list[Sequence[ToolSpec]] = []

    class Recording(Scripted):
        async def chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()
                       ) -> ChatReply:
            seen.append(tools)
            return ChatReply(GOOD)

    inv = Investigator(lambda: LlmConfig(max_tool_calls=0), Recording(), clock=clock)
    result, _ = await inv.assess(alert(), None)
    assert result.source == "llm" and seen == [[]]


async def test_non_retryable_errors_fall_back_at_once(clock: FakeClock) -> None:
    client = Scripted(LlmError("nope"))
    inv = Investigator(lambda: LlmConfig(retries=5), client, clock=clock)
    result, _ = await inv.assess(alert(), None)
    assert result.source == "rule" and "LLM error" in (result.note or "")
    assert len(client.requests) == 1
