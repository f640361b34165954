"""The LLM investigation of one incident, with every safety net around it.

``Investigator.assess`` never raises and never takes longer than its deadline. In order:
LLM off (no key and no base_url) -> rule-based; a cached answer for the same incident
(fingerprint, severity, state) -> reused; circuit breaker open -> rule-based at once; budget
spent (calls per hour, tokens per day) -> rule-based and one ``llm_budget_exhausted`` notice
per exhaustion; otherwise an investigation loop (model <-> read-only tools, at most
``max_tool_calls`` tool calls) whose answer is validated by ``schema.build_assessment``.
Any failure ends in the alert's rule-based assessment, with a note saying why.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from watchkeeper.aio import wait_for
from watchkeeper.config import LlmConfig, Settings
from watchkeeper.events import (
    Alert,
    AnalyzerNotice,
    Assessment,
    MetricSnapshot,
    utcnow,
)

from .client import (
    ChatReply,
    CircuitBreaker,
    LlmClient,
    LlmError,
    Message,
    RetryPolicy,
    ToolSpec,
    call_with_retries,
    openai_client_from_config,
)
from .privacy import Privacy, PrivacyError, compile_patterns
from .prompts import (
    STEP_LIMIT_MESSAGE,
    build_context,
    repair_message,
    system_prompt,
    tool_content,
    user_message,
)
from .schema import AnswerError, EvidenceIndex, build_assessment, event_id, parse_answer
from .tools import Toolbox, ToolContext

log = logging.getLogger(__name__)

#: The longest any one assess() may take, whatever timeout and retries say.
MAX_DEADLINE_S = 300.0

IncidentKey = tuple[str, str, str]


def llm_enabled(llm: LlmConfig) -> bool:
    """Whether the LLM is on: enabled, and an API key or a base_url (a local server) is set."""
    return llm.enabled and (llm.api_key is not None or bool(llm.base_url))


def rule_based(alert: Alert, why: str) -> Assessment:
    """The alert's rule-based assessment (or a minimal one) with ``why`` in its note."""
    base = alert.assessment
    if base is None or base.source != "rule":
        base = Assessment(source="rule", summary=alert.summary,
                          suggested_actions=alert.suggested_actions,
                          evidence=(event_id(alert.id),))
    note = f"{base.note}; {why}" if base.note else why
    return base.model_copy(update={"note": note})


class Budget:
    """Sliding-window budget: investigations per hour and tokens per day.

    Two deques of timestamps instead of aiolimiter/limits: those pace or reject calls, while
    we also need to add a cost after the fact (tokens are known only from the reply).
    """

    HOUR = 3600.0
    DAY = 86400.0

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._calls: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._token_sum = 0

    def _trim(self, now: float) -> None:
        while self._calls and self._calls[0] <= now - self.HOUR:
            self._calls.popleft()
        while self._tokens and self._tokens[0][0] <= now - self.DAY:
            self._token_sum -= self._tokens.popleft()[1]

    def calls_this_hour(self) -> int:
        """Investigations started in the last hour."""
        self._trim(self._clock())
        return len(self._calls)

    def tokens_today(self) -> int:
        """Tokens spent in the last 24 hours."""
        self._trim(self._clock())
        return self._token_sum

    def spent(self, llm: LlmConfig) -> str | None:
        """Why no new investigation may start now, or None if one may."""
        if self.calls_this_hour() >= llm.max_calls_per_hour:
            return f"LLM budget spent: {llm.max_calls_per_hour} investigations in the last hour"
        if self.tokens_today() >= llm.max_tokens_per_day:
            return f"LLM budget spent: {llm.max_tokens_per_day} tokens in the last 24 hours"
        return None

    def spend_call(self) -> None:
        """Count one investigation."""
        self._calls.append(self._clock())

    def spend_tokens(self, tokens: int) -> None:
        """Count tokens one request cost."""
        if tokens > 0:
            self._tokens.append((self._clock(), tokens))
            self._token_sum += tokens


class AnswerCache:
    """Answers per incident key for ``ttl`` seconds, at most ``size`` of them (oldest out)."""

    def __init__(self, clock: Callable[[], float], size: int = 1024) -> None:
        self._clock = clock
        self._size = size
        self._items: OrderedDict[IncidentKey, tuple[float, Assessment]] = OrderedDict()

    def get(self, key: IncidentKey) -> Assessment | None:
        """The cached assessment, if still fresh."""
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._items[key]
            return None
        return item[1]

    def put(self, key: IncidentKey, value: Assessment, ttl: float) -> None:
        """Remember ``value`` for ``ttl`` seconds (0: not at all)."""
        if ttl <= 0:
            return
        self._items[key] = (self._clock() + ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


@dataclass
class _Outcome:
    """How one investigation ended: an assessment, or why not (and whose fault)."""

    assessment: Assessment | None = None
    why: str = ""
    server_failed: bool = False  # counts against the circuit breaker


#: Returns the current settings (``lambda: config_store.current``) or just their llm section.
SettingsProvider = Callable[[], Settings | LlmConfig]


class Investigator:
    """Asks the LLM about an alert, safely: bounded in time, calls, tokens and tool steps."""

    def __init__(
        self,
        settings_provider: SettingsProvider,
        client: LlmClient | None = None,
        tools: Toolbox | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        client_factory: Callable[[LlmConfig], LlmClient] = openai_client_from_config,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        wall_clock: Callable[[], datetime] = utcnow,
        deadline_s: float | None = None,
        retry_policy: RetryPolicy | None = None,
        repair_attempts: int = 1,
        cache_size: int = 1024,
        local_host: str | None = None,
    ) -> None:
        self._settings = settings_provider
        #: The host this process runs on; an alert of another host (a fleet's central)
        #: gets no live process lookups and no local log files: they would describe the
        #: central, not that host. None: every alert is local (one host).
        self._local_host = local_host
        self._injected = client
        self._factory = client_factory
        self._built: LlmClient | None = None
        self._built_for: tuple[Any, ...] | None = None
        self._tools = tools if tools is not None else Toolbox()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._wall_clock = wall_clock
        self._deadline_s = deadline_s
        self._retry = retry_policy or RetryPolicy()
        self._repairs = repair_attempts
        llm = self._llm()
        self.breaker = CircuitBreaker(llm.breaker_failures, llm.breaker_reset_s, clock)
        self.budget = Budget(clock)
        self.cache = AnswerCache(clock, cache_size)
        self._budget_noticed = False

    # ------------------------------------------------------------------ settings, client

    def _llm(self) -> LlmConfig:
        current = self._settings()
        return current if isinstance(current, LlmConfig) else current.llm

    def _host_names(self) -> list[str | None]:
        current = self._settings()
        return [current.host_name] if isinstance(current, Settings) else []

    def enabled(self) -> bool:
        """Whether assess() may call an LLM at all (it is configured and switched on)."""
        llm = self._llm()
        return llm.enabled and (self._injected is not None or llm_enabled(llm))

    async def _client_for(self, llm: LlmConfig) -> LlmClient:
        if self._injected is not None:
            return self._injected
        key = (llm.base_url, llm.api_key.get_secret_value() if llm.api_key else None,
               llm.model, llm.temperature, llm.max_tokens, llm.timeout)
        if self._built is None or key != self._built_for:
            old, self._built = self._built, self._factory(llm)
            self._built_for = key
            if old is not None:
                # A request still running on the old client (a concurrent investigation)
                # fails and falls back; settings changes are rare enough for that.
                await old.aclose()
        return self._built

    def deadline_for(self, llm: LlmConfig) -> float:
        """Seconds one assess() may take in all: every attempt's timeout, capped."""
        if self._deadline_s is not None:
            return self._deadline_s
        return min(llm.timeout * (llm.retries + 1), MAX_DEADLINE_S)

    async def aclose(self) -> None:
        """Close the client this investigator built (an injected one belongs to its owner)."""
        if self._built is not None:
            client, self._built = self._built, None
            await client.aclose()

    # ------------------------------------------------------------------ assess

    async def assess(self, alert: Alert, snapshot: MetricSnapshot | None
                     ) -> tuple[Assessment, list[AnalyzerNotice]]:
        """An assessment of ``alert`` (from the LLM, or rule-based and saying why) and notices.

        Never raises (except cancellation of the caller) and returns within the deadline.
        """
        notices: list[AnalyzerNotice] = []
        try:
            return await self._assess(alert, snapshot, notices), notices
        except Exception:
            log.exception("LLM investigation of %s failed unexpectedly", alert.fingerprint)
            return rule_based(alert, "rule-based fallback: internal error in the LLM step"), \
                notices

    def _notice(self, alert: Alert, code: Any, message: str) -> AnalyzerNotice:
        return AnalyzerNotice(host=alert.host, code=code, message=message,
                              incident=alert.fingerprint)

    async def _assess(self, alert: Alert, snapshot: MetricSnapshot | None,
                      notices: list[AnalyzerNotice]) -> Assessment:
        llm = self._llm()
        if not self.enabled():
            why = ("LLM switched off (llm.enabled)" if not llm.enabled
                   else "no LLM configured (no api_key or base_url)")
            return rule_based(alert, f"rule-based: {why}")
        key: IncidentKey = (alert.fingerprint, alert.severity, alert.state)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        try:
            compile_patterns(llm.redact_patterns)  # cached by re; checked before any spending
        except PrivacyError as exc:
            # Fail closed: if we cannot redact as configured, nothing is sent.
            log.error("LLM not called: %s", exc)
            return rule_based(alert, f"rule-based fallback: {exc}")
        breaker = self.breaker
        breaker.configure(llm.breaker_failures, llm.breaker_reset_s)
        if not breaker.ready():
            return rule_based(alert, (
                f"rule-based fallback: LLM circuit breaker open after "
                f"{breaker.consecutive_failures} failures in a row; next try in "
                f"{breaker.retry_in():.0f} s"))
        spent = self.budget.spent(llm)
        if spent is not None:
            self._budget_exhausted(alert, spent, notices)
            return rule_based(alert, f"rule-based fallback: {spent}")
        self._budget_noticed = False
        self.budget.spend_call()
        breaker.acquire()
        deadline_s = self.deadline_for(llm)
        try:
            client = await self._client_for(llm)
            deadline = asyncio.get_running_loop().time() + deadline_s
            outcome = await wait_for(
                self._investigate(alert, snapshot, llm, client, deadline, notices), deadline_s)
        except asyncio.TimeoutError:
            outcome = _Outcome(why=f"the LLM took longer than the {deadline_s:g} s deadline",
                               server_failed=True)
        except BaseException:
            breaker.release()
            raise
        self._record(alert, outcome, llm, notices)
        if outcome.assessment is not None:
            self.cache.put(key, outcome.assessment, llm.cache_ttl_s)
            return outcome.assessment
        log.warning("LLM investigation of %s fell back to rules: %s", alert.fingerprint,
                    outcome.why)
        return rule_based(alert, f"rule-based fallback: {outcome.why}")

    def _budget_exhausted(self, alert: Alert, why: str, notices: list[AnalyzerNotice]) -> None:
        # One notice per exhaustion, not one per incident that finds the budget spent.
        if not self._budget_noticed:
            self._budget_noticed = True
            log.warning("%s; using rule-based assessments until it frees up", why)
            notices.append(self._notice(alert, "llm_budget_exhausted",
                                        f"{why}; rule-based assessments until it frees up"))

    def _record(self, alert: Alert, outcome: _Outcome, llm: LlmConfig,
                notices: list[AnalyzerNotice]) -> None:
        breaker = self.breaker
        if outcome.server_failed:
            if breaker.failure():
                msg = (f"LLM failing ({outcome.why}); {llm.breaker_failures} failures in a "
                       f"row, pausing LLM calls for {llm.breaker_reset_s:g} s")
                log.warning("%s", msg)
                notices.append(self._notice(alert, "llm_circuit_open", msg))
        elif outcome.assessment is not None:
            if breaker.success():
                log.info("LLM answering again; circuit breaker closed")
                notices.append(self._notice(alert, "llm_circuit_closed",
                                            "LLM answering again; LLM assessments resumed"))
        else:
            breaker.release()

    # ------------------------------------------------------------------ the loop

    async def _chat(self, client: LlmClient, messages: Sequence[Message],
                    tools: Sequence[ToolSpec], llm: LlmConfig, deadline: float) -> ChatReply:
        policy = RetryPolicy(retries=llm.retries, base_delay_s=self._retry.base_delay_s,
                             max_delay_s=self._retry.max_delay_s,
                             max_retry_after_s=self._retry.max_retry_after_s)
        reply = await call_with_retries(lambda: client.chat(messages, tools), policy,
                                        sleep=self._sleep, rng=self._rng, deadline=deadline)
        if reply.usage is not None and reply.usage.total_tokens > 0:
            self.budget.spend_tokens(reply.usage.total_tokens)
        else:
            # No usage from the server: estimate (about four characters per token).
            size = len(json.dumps(list(messages), default=str)) + len(reply.content or "")
            self.budget.spend_tokens(size // 4 + 1)
        return reply

    async def _investigate(self, alert: Alert, snapshot: MetricSnapshot | None,
                           llm: LlmConfig, client: LlmClient, deadline: float,
                           notices: list[AnalyzerNotice]) -> _Outcome:
        privacy = Privacy(llm)
        hosts: list[str | None] = [alert.host, *self._host_names()]
        if snapshot is not None:
            hosts.append(snapshot.host)
            if snapshot.identity is not None:
                hosts.append(snapshot.identity.hostname)
        local = self._local_host is None or alert.host == self._local_host
        log_files = tuple(llm.log_files) if local else ()
        context = build_context(alert, snapshot, log_files)
        privacy.learn(hosts=hosts, users=[p.user for p in context.processes.values()])
        shown = EvidenceIndex(processes=dict(context.processes))
        first = user_message(privacy.clean_data(context.data))
        shown.add(privacy.clean(e) for e in context.evidence)
        messages: list[Message] = [{"role": "system", "content": system_prompt()},
                                   {"role": "user", "content": first}]
        specs = self._tools.specs(log_files, local=local) if llm.max_tool_calls > 0 else []
        tool_ctx = ToolContext(snapshot=snapshot, log_files=log_files, now=self._wall_clock(),
                               host=None if self._local_host is None else alert.host,
                               local=local)
        used = 0
        repairs = 0
        step_limited = False
        while True:
            if self.budget.tokens_today() >= llm.max_tokens_per_day:
                why = f"LLM budget spent: {llm.max_tokens_per_day} tokens in the last 24 hours"
                self._budget_exhausted(alert, why, notices)
                return _Outcome(why=f"{why} (during the investigation)")
            try:
                reply = await self._chat(client, messages, [] if step_limited else specs, llm,
                                         deadline)
            except LlmError as exc:
                tries = f" after {exc.attempts} attempt(s)" if exc.retryable else ""
                return _Outcome(why=f"LLM {exc.reason}{tries}", server_failed=True)
            if reply.tool_calls:
                if step_limited:
                    return _Outcome(why=(f"the model kept calling tools past the limit of "
                                         f"{llm.max_tool_calls} tool calls"))
                if used >= llm.max_tool_calls or not specs:
                    step_limited = True
                    msg = (f"LLM investigation stopped at the limit of {llm.max_tool_calls} "
                           "tool calls")
                    log.warning("%s (%s)", msg, alert.fingerprint)
                    notices.append(self._notice(alert, "llm_step_limit", msg))
                    messages.append({"role": "user", "content": STEP_LIMIT_MESSAGE})
                    continue
                messages.append(_assistant_message(reply))
                for call in reply.tool_calls:
                    if used >= llm.max_tool_calls:
                        data: Any = {"error": "tool budget spent; answer with what you have"}
                    else:
                        used += 1
                        result = await self._tools.call(
                            call.name, _restore_arguments(call.arguments, privacy), tool_ctx)
                        data = privacy.clean_data(result.data)
                        shown.add(privacy.clean(e) for e in result.evidence)
                    messages.append({"role": "tool", "tool_call_id": call.id,
                                     "content": tool_content(data)})
                continue
            try:
                answer = parse_answer(reply.content)
            except AnswerError as exc:
                if repairs < self._repairs:
                    repairs += 1
                    messages.append({"role": "assistant", "content": reply.content or ""})
                    messages.append({"role": "user", "content": repair_message(str(exc))})
                    continue
                notices.append(self._notice(alert, "llm_output_rejected",
                                            f"LLM answer rejected: {exc}"))
                return _Outcome(why=str(exc).replace("the reply", "the LLM reply"),
                                server_failed=True)
            note = (f"answered after the limit of {llm.max_tool_calls} tool calls"
                    if step_limited else None)
            verdict = build_assessment(answer, shown, model=llm.model,
                                       restore=privacy.restore_data, note=note)
            if verdict.dropped:
                notices.append(self._notice(
                    alert, "llm_output_rejected",
                    f"dropped {len(verdict.dropped)} item(s) of the LLM answer: "
                    + "; ".join(verdict.dropped)[:400]))
            return _Outcome(assessment=verdict.assessment)


def _assistant_message(reply: ChatReply) -> Message:
    return {
        "role": "assistant",
        "content": reply.content,
        "tool_calls": [{"id": c.id, "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments}}
                       for c in reply.tool_calls],
    }


def _restore_arguments(arguments: str, privacy: Privacy) -> str | dict[str, Any]:
    """Tool arguments with placeholders turned back into real names (they run locally)."""
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return arguments
    restored = privacy.restore_data(parsed)
    return restored if isinstance(restored, dict) else arguments
