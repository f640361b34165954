"""Remediation policy: may this action run now, on its own, and if not, why not.

``Policy.decide(request)`` returns a frozen ``Decision``: a verdict (``auto``, ``approve``,
``refused`` or ``dry_run``) and a plain-words ``why``. The checks run in this order and the
first that objects decides:

1. registry: unknown action or invalid parameters (refused); then the action's own
   ``check`` (passed to ``decide`` by the agent): parameters that can never succeed (a path
   outside every clean-up root, a log file not configured, an undeclared service) are
   refused here, with the reason, and normalised ones are what is decided, shown and run;
2. mode ``off`` (refused), and for a proposal by the LLM ``remediation.llm_mode`` (or its
   ``llm_actions`` entry) ``off`` (refused);
3. target: a service or script must be declared, and an ``allow`` entry for the action
   (globs) must match the target; no entry = every declared target (refused); a process
   the process guard refuses (``target_refusal``: a thread, protected, another user's, not
   in ``allow.stop_process``) is refused here too;
4. start-up grace period (refused, with ``retry_after_s``; a dry run asked for is answered,
   saying when it could run);
5. maintenance window: no automatic action, so ``auto`` becomes ``approve``; likewise a
   proposal by the LLM while its ``llm_mode`` is ``approve`` (the default);
6. global dry-run, a dry run asked for, or an LLM proposal under ``llm_mode: dry_run``
   (``dry_run``: decided and logged, nothing runs);
7. circuit breaker: global and per-action budgets over a rolling hour of *started* attempts;
   when one is spent: refused "breaker open: alert-only", with one ``breaker_open`` notice
   and, once budget is free again, one ``breaker_closed`` notice;
8. concurrency: at most ``agents.max_concurrent_actions`` in flight, one per target;
9. cooldown: ``agents.healing_cooldown`` seconds after the end of the last attempt on the target;
10. flap protection: ``flap_max_attempts`` attempts within ``flap_window_s`` on one target mark
    it *failing*: refused with ``escalate`` set on that one decision, refused from then on;
11. backoff: after n recent attempts on a target the next waits
    ``min(backoff_initial_s * 2**(n-1), backoff_max_s)`` after the last one *ended*;
12. learning: a strategy (action on target) that failed ``failure_limit`` times in a row is
    not repeated: refused "escalate: ...", ``escalate`` set once.

A *supervised* request (``ActionRequest.supervised``: the remediator's own restart of a
``manager: process`` service that is down, like supervisord's autorestart) skips 4 and 9:
the grace is for what the sensor saw before watchkeeper knew the host, and the cooldown for
what rules and the LLM propose. Backoff and flap protection still hold it back when it keeps
dying. A service action counts as a success only once the service stayed up and healthy for
``remediation.stable_window_s`` (its verification waits that long); such a success forgives
the earlier attempts on the target for flap protection and backoff, as a start that outlived
supervisord's ``startsecs`` resets its ``startretries``.

Actions of risk "none" (notify_only) change nothing, so 7-12 do not apply to them and the
maintenance window does not hold them back: telling a human is what alert-only means.
A proposal by the LLM goes through exactly the same checks as one by a rule, and one more:
what it reads (log lines, process names, command lines) can steer it, so by default it
never runs without a human, whatever the action's mode (``remediation.llm_mode``, per
action ``llm_actions``; ``auto`` there only lets it follow the action's own mode). The
request carries no mode or flag that could loosen a check, and the source is set by the
analyzer, never by the model. Only ``decide(..., approved_by=...)``, which the agent passes
after a human approved in the audit log, turns ``approve`` into ``auto``; every other check
still applies.

A failing target (step 10) or a refused strategy (step 12) gets no more automatic tries until
a human calls ``reset(target)``, or the agent reports the target healthy (``mark_healthy``)
continuously for ``flap_window_s``: it recovered, so its history no longer predicts anything.
We do not simply let the window expire: a service that crashes at once would then get a new
round of restarts every window, which is Monit's endless loop.

Clocks: all timing uses the injected monotonic clock; the wall clock is read only to place
maintenance windows, so a wall-clock jump changes no cooldown, backoff or budget.

Persistence: ``PolicyState`` keeps attempts, failing marks and learning counters with
monotonic times, which mean nothing after a reboot. The file stores each time as an *age*
(seconds before the save) and loading puts it that many seconds before the load. Time while
watchkeeper was not running therefore does not count: budgets, windows and cooldowns resume
where they stopped. That errs on the side of doing less after a restart, never more, and
needs no wall clock (which may have jumped meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from watchkeeper.config import ActionMode, LlmMode, MaintenanceWindow, Settings
from watchkeeper.events import Frozen, SuggestedAction
from watchkeeper.remediation.learning import ActionStats, StrategyStats
from watchkeeper.remediation.process_guard import allow_could_match
from watchkeeper.remediation.registry import (
    REGISTRY,
    ActionRefused,
    CleanDiskParams,
    NotifyParams,
    Params,
    Risk,
    RotateLogParams,
    RunScriptParams,
    ServiceParams,
    StopProcessParams,
    parse_params,
)

logger = logging.getLogger(__name__)

Verdict = Literal["auto", "approve", "refused", "dry_run"]
CheckName = Literal["registry", "mode", "target", "grace", "maintenance", "dry_run", "breaker",
                    "concurrency", "cooldown", "flap", "backoff", "learning", "ok"]
TargetKind = Literal["service", "pid", "root", "log", "script", "host", "action"]

#: The rolling window of the circuit breaker's budgets.
BUDGET_WINDOW_S = 3600.0
STATE_FILENAME = "policy_state.json"
_STATE_VERSION = 1
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class PolicyError(RuntimeError):
    """The policy was used out of order (begin of a refused decision, end without begin)."""


# --------------------------------------------------------------------------- values


class ActionRequest(Frozen):
    """A proposal to run one action: what, on which host, proposed by whom and why."""

    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    host: str
    source: Literal["rule", "llm", "operator"] = "rule"
    reasoning: str = ""
    fingerprint: str | None = Field(None, description="the alert this action answers")
    dry_run: bool = Field(False, description="only show what would happen (an operator's "
                                             "what-if), whatever remediation.dry_run says")
    supervised: bool = Field(False, description="a managed process (manager: process) is "
                             "down: restarted like a process supervisor does, so the start-up "
                             "grace and healing_cooldown do not apply; backoff and flap "
                             "protection do. Set only by the remediator, never by a proposer")

    @classmethod
    def from_suggestion(cls, suggestion: SuggestedAction, *, host: str,
                        fingerprint: str | None = None) -> ActionRequest:
        """The request for a rule's or the LLM's suggested action."""
        return cls(action=suggestion.action, params=dict(suggestion.params), host=host,
                   source=suggestion.source, reasoning=suggestion.reason,
                   fingerprint=fingerprint)


class Target(Frozen):
    """What an action touches: a service, a process, a clean-up root, a log, a script."""

    kind: TargetKind
    name: str

    @property
    def key(self) -> str:
        """Stable identity ("service:web"): a pid never collides with a service name."""
        return f"{self.kind}:{self.name}"

    def __str__(self) -> str:
        return f"pid {self.name}" if self.kind == "pid" else self.name

    @classmethod
    def service(cls, name: str) -> Target:
        """The target of restart_service / start_service on ``name``."""
        return cls(kind="service", name=name)

    @classmethod
    def of(cls, action: str, params: Params, host: str) -> Target:
        """The target named by an action's validated parameters (never by the proposer)."""
        if isinstance(params, ServiceParams):
            return cls(kind="service", name=params.service)
        if isinstance(params, StopProcessParams):
            return cls(kind="pid", name=str(params.pid))
        if isinstance(params, CleanDiskParams):
            return cls(kind="root", name=os.path.normpath(params.root))
        if isinstance(params, RotateLogParams):
            return cls(kind="log", name=os.path.normpath(params.path))
        if isinstance(params, RunScriptParams):
            return cls(kind="script", name=params.name)
        if isinstance(params, NotifyParams):
            return cls(kind="host", name=host)
        return cls(kind="action", name=action)


class PolicyNotice(Frozen):
    """A one-time message about the policy itself (the breaker opened or closed)."""

    code: Literal["breaker_open", "breaker_closed"]
    message: str


class Decision(Frozen):
    """The policy's verdict on one request, and why, in plain words."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    request: ActionRequest
    verdict: Verdict
    why: str
    check: CheckName = Field(description="the check that decided (ok: all passed)")
    target: Target | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="validated parameters")
    risk: Risk | None = None
    mode: ActionMode | None = None
    approved_by: str | None = None
    #: Set on exactly one decision per escalation: the agent tells a human once.
    escalate: bool = False
    #: For a refusal that will pass by itself (grace, cooldown, backoff, breaker): seconds.
    retry_after_s: float | None = None
    notice: PolicyNotice | None = None
    stats: ActionStats | None = None
    #: For a dry run: what the action would do, in plain words (from its preview).
    preview: str | None = None

    @property
    def runs(self) -> bool:
        """Whether the action may run now (after ``Policy.begin``)."""
        return self.verdict == "auto"


class FailingTarget(Frozen):
    """A target marked failing: no automatic tries until reset or healthy again."""

    host: str
    target: Target
    why: str
    for_s: float


# --------------------------------------------------------------------------- state


@dataclass
class Attempt:
    """One started action (monotonic times)."""

    host: str
    action: str
    target: str  # Target.key
    started: float
    ended: float | None = None
    #: Cleared by a reset or recovery: still counts for budgets and cooldown, no longer for
    #: flap protection and backoff.
    forgiven: bool = False


@dataclass
class TargetState:
    """Per (host, target): failing mark, reset point and health (monotonic times)."""

    failing_since: float | None = None
    failing_why: str = ""
    #: Since when the agent reports it healthy; not persisted (unknown after a restart).
    healthy_since: float | None = None


class _AttemptFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str
    action: str
    target: str
    started_age_s: float
    ended_age_s: float | None = None
    forgiven: bool = False


class _TargetFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str
    target: str
    failing_age_s: float | None = None
    failing_why: str = ""


class _StrategyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str
    action: str
    target: str
    successes: int = Field(ge=0)
    failures: int = Field(ge=0)
    failures_in_a_row: int = Field(ge=0)
    escalated: bool = False


class _StateFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal[1]
    attempts: list[_AttemptFile] = Field(default_factory=list)
    targets: list[_TargetFile] = Field(default_factory=list)
    strategies: list[_StrategyFile] = Field(default_factory=list)
    breaker_announced: bool = False


def _age(now: float, t: float | None) -> float | None:
    return None if t is None else max(0.0, now - t)


def _at(now: float, age: float | None) -> float | None:
    return None if age is None else now - max(0.0, age)


@dataclass
class PolicyState:
    """What the policy remembers across decisions and restarts (see the module docstring)."""

    path: Path | None = None
    attempts: list[Attempt] = field(default_factory=list)
    targets: dict[tuple[str, str], TargetState] = field(default_factory=dict)
    strategies: dict[tuple[str, str, str], StrategyStats] = field(default_factory=dict)
    #: Whether "breaker open" was announced and "breaker closed" not yet.
    breaker_announced: bool = False

    def dumps(self, now: float) -> str:
        """The state as JSON, times as ages relative to monotonic ``now``."""
        data = _StateFile(
            version=_STATE_VERSION,
            attempts=[_AttemptFile(host=a.host, action=a.action, target=a.target,
                                   started_age_s=max(0.0, now - a.started),
                                   ended_age_s=_age(now, a.ended), forgiven=a.forgiven)
                      for a in self.attempts],
            targets=[_TargetFile(host=h, target=t, failing_age_s=_age(now, s.failing_since),
                                 failing_why=s.failing_why)
                     for (h, t), s in self.targets.items() if s.failing_since is not None],
            strategies=[_StrategyFile(host=h, action=a, target=t, successes=s.successes,
                                      failures=s.failures,
                                      failures_in_a_row=s.failures_in_a_row,
                                      escalated=s.escalated)
                        for (h, a, t), s in self.strategies.items()],
            breaker_announced=self.breaker_announced)
        return data.model_dump_json()

    @classmethod
    def loads(cls, text: str, now: float, path: Path | None = None) -> PolicyState:
        """Rebuild a state from ``dumps`` output; ages become times before monotonic ``now``."""
        data = _StateFile.model_validate_json(text)
        state = cls(path=path, breaker_announced=data.breaker_announced)
        for a in data.attempts:
            state.attempts.append(Attempt(a.host, a.action, a.target,
                                          now - max(0.0, a.started_age_s),
                                          _at(now, a.ended_age_s), a.forgiven))
        for t in data.targets:
            state.targets[(t.host, t.target)] = TargetState(
                failing_since=_at(now, t.failing_age_s), failing_why=t.failing_why)
        for s in data.strategies:
            state.strategies[(s.host, s.action, s.target)] = StrategyStats(
                s.successes, s.failures, s.failures_in_a_row, s.escalated)
        return state

    @classmethod
    def load(cls, path: Path, *, monotonic: Callable[[], float] = time.monotonic
             ) -> PolicyState:
        """Read the state file (missing: a fresh state that will be saved there).

        A damaged file is moved aside (``.damaged``) and logged; starting with no memory is
        better than not healing at all, and the audit log still holds the history.
        """
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls(path=path)
        try:
            return cls.loads(text, monotonic(), path)
        except (ValidationError, ValueError) as exc:
            aside = path.with_name(path.name + ".damaged")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            logger.error("policy state %s is damaged, starting afresh (kept as %s): %s",
                         path, aside, exc)
            return cls(path=path)

    def save(self, *, monotonic: Callable[[], float] = time.monotonic,
             path: Path | None = None) -> None:
        """Write the state atomically and durably (temp file, fsync, rename, fsync dir)."""
        target = path or self.path
        if target is None:
            raise PolicyError("policy state has no file to save to")
        _write_durably(target, self.dumps(monotonic()))


def _write_durably(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: a crash leaves the old or the new file, never half."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself is durable only once the directory is synced.
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# --------------------------------------------------------------------------- helpers


def plain_secs(seconds: float) -> str:
    """'42 s', '1.5 s', '12 min' (remaining times rounded up, never shown as 0)."""
    if seconds >= 120:
        return f"{math.ceil(seconds / 60)} min"
    if seconds >= 10:
        return f"{math.ceil(seconds)} s"
    return f"{max(0.1, math.ceil(seconds * 10) / 10):g} s"


def _cfg_secs(seconds: float) -> str:
    """A configured duration exactly as set: '60 s', '0.5 s'."""
    return f"{seconds:g} s"


def _minutes(hh_mm: str) -> int:
    h, m = hh_mm.split(":")
    return int(h) * 60 + int(m)


def _zone(name: str) -> tzinfo | None:
    if name == "local":
        return None
    return timezone.utc if name == "UTC" else ZoneInfo(name)


def window_active(window: MaintenanceWindow, wall: float) -> bool:
    """Whether instant ``wall`` (epoch s) is inside ``window`` in the window's time zone.

    A window crossing midnight belongs to the day it starts on ("sat 23:00-02:00" holds
    until Sunday 02:00); equal start and end mean the whole day.
    """
    tz = _zone(window.timezone)
    now = datetime.fromtimestamp(wall, tz) if tz is not None else datetime.fromtimestamp(wall)
    days: set[str] = set(window.days) or set(_DAYS)
    today = _DAYS[now.weekday()]
    yesterday = _DAYS[(now - timedelta(days=1)).weekday()]
    start, end = _minutes(window.window[:5]), _minutes(window.window[6:])
    m = now.hour * 60 + now.minute
    if start < end:
        return start <= m < end and today in days
    if start > end:
        return (m >= start and today in days) or (m < end and yesterday in days)
    return today in days


def _describe_window(window: MaintenanceWindow) -> str:
    days = f" on {', '.join(window.days)}" if window.days else ""
    return f"{window.window}{days} ({window.timezone})"


def _target_from_key(key: str) -> Target:
    kind, _, name = key.partition(":")
    return Target.model_validate({"kind": kind, "name": name})


#: A check's objection: which check, why, and extra Decision fields.
_Refusal = tuple[CheckName, str, dict[str, Any]]


@dataclass
class _Running:
    decision_id: str
    action: str
    host: str
    target: Target
    attempt: Attempt | None  # None: exempt action (risk none), not counted


# --------------------------------------------------------------------------- the policy


class Policy:
    """Decides what may run; keeps attempts, breaker and learning state (see module doc).

    Not a coroutine API: every method is quick and synchronous, guarded by a lock so API
    threads may read while the agent decides. Call ``begin`` right after an ``auto``
    decision (no ``await`` in between), then persist the state before the side effect,
    and ``end`` once the attempt is over.
    """

    def __init__(self, settings_provider: Callable[[], Settings], *,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 state: PolicyState | None = None,
                 started_at: float | None = None,
                 failure_limit: int | None = None) -> None:
        """``failure_limit``: failures in a row that stop a strategy (default: the
        configured ``flap_max_attempts``, so a crash-looping service gets its full budget)."""
        if failure_limit is not None and failure_limit < 1:
            raise ValueError("failure_limit must be at least 1")
        self._settings = settings_provider
        self._mono = monotonic
        self._wall = wall
        self.state = state if state is not None else PolicyState()
        self._started_at = monotonic() if started_at is None else started_at
        self._failure_limit = failure_limit
        self._running: dict[str, _Running] = {}
        self._lock = threading.RLock()
        self._version = 0  # bumped on every change of the persisted state
        self._saved_version = 0
        self._save_lock = threading.Lock()

    # ------------------------------------------------------------------ decide

    def decide(self, request: ActionRequest, *, approved_by: str | None = None,
               check: Callable[[Params], Params] | None = None,
               target_refusal: str | None = None) -> Decision:
        """The verdict on ``request`` now; ``approved_by`` only after a human approved it.

        ``check``: the action's own check of its parsed parameters (``BaseAction.check``),
        returning them normalised or raising ActionRefused for a request that can never
        succeed; it must be quick and not block (no I/O). ``target_refusal``: why the live
        target can never be acted on, as the action found it when asked (stop_process's
        process guard); refused at the target check.
        """
        with self._lock:
            now = self._mono()
            settings = self._settings()
            notice = self._breaker_transition(now, settings)
            decision = self._decide(request, approved_by, now, settings, check,
                                    target_refusal)
            if notice is not None:
                decision = decision.model_copy(update={"notice": notice})
        logger.debug("policy: %s", decision.why)
        return decision

    def _decide(self, req: ActionRequest, approved_by: str | None, now: float,
                settings: Settings, checker: Callable[[Params], Params] | None,
                target_refusal: str | None = None) -> Decision:
        rem = settings.remediation
        base: dict[str, Any] = {"request": req, "approved_by": approved_by}

        def refuse(check: CheckName, why: str, **extra: Any) -> Decision:
            return Decision(verdict="refused", check=check, why=f"refused: {why}",
                            **{**base, **extra})

        # 1. registry
        try:
            params = parse_params(req.action, req.params)
        except ActionRefused as exc:
            return refuse("registry", str(exc), params=dict(req.params))
        spec = REGISTRY[req.action]
        if checker is not None:
            # Before anything waits for a human: an approval that can never succeed, or
            # that names one target and would act on another, is never asked for.
            try:
                params = checker(params)
            except ActionRefused as exc:
                return refuse("target", f"{req.action}: {exc}", params=dict(req.params),
                              risk=spec.risk)
        target = Target.of(req.action, params, req.host)
        mode: ActionMode = rem.actions.get(req.action, "off")
        llm_cap: LlmMode | None = rem.llm_mode_for(req.action) if req.source == "llm" else None
        llm_key = (f"remediation.llm_actions.{req.action}" if req.action in rem.llm_actions
                   else "remediation.llm_mode")
        stats = self._stats_for(req.host, req.action, target)
        base.update(target=target, params=params.model_dump(mode="json"), risk=spec.risk,
                    mode=mode, stats=stats)
        what = f"{req.action} {target}"
        self._note_request(req.host, target, now, settings)
        # 2. mode
        if mode == "off":
            return refuse("mode", f"{req.action} is off (remediation.actions.{req.action})")
        if llm_cap == "off":
            return refuse("mode", f"{req.action} proposed by an LLM is off ({llm_key})")
        # 3. target: declared, and allowed
        undeclared = self._undeclared(params, settings)
        if undeclared:
            return refuse("target", f"{req.action}: {undeclared}")
        if target_refusal:
            return refuse("target", f"{req.action}: {target_refusal}")
        globs = rem.allow.get(req.action)
        if globs is not None and not self._allowed(req.action, target, globs):
            shown = ", ".join(globs) or "nothing"
            return refuse("target", f"{req.action} may not touch {target} "
                                    f"(remediation.allow.{req.action}: {shown})")
        # 4. start-up grace: for what the sensor saw before watchkeeper knew the host, not
        # for a process watchkeeper itself watched going down.
        up = now - self._started_at
        in_grace = up < rem.startup_grace_s and not req.supervised
        # An operator's what-if is answered even now: what would happen, and when.
        if in_grace and not req.dry_run:
            return refuse("grace", f"watchkeeper started {plain_secs(up)} ago; no action in the "
                                   f"first {_cfg_secs(rem.startup_grace_s)} (startup_grace_s)",
                          retry_after_s=rem.startup_grace_s - up)
        exempt = spec.risk == "none"
        # 5. maintenance: nothing runs on its own, a human may still approve
        effective: ActionMode = mode
        check: CheckName = "ok"
        note = ""
        if mode == "auto" and approved_by is None and not exempt:
            window = next((w for w in rem.maintenance if window_active(w, self._wall())), None)
            if window is not None:
                effective, check = "approve", "maintenance"
                note = (f"maintenance window {_describe_window(window)} is on, no automatic "
                        "action")
        if llm_cap == "approve" and effective == "auto" and approved_by is None \
                and not exempt:
            # An injection in what the model read can steer it: a human decides.
            effective = "approve"
            note = f"{llm_key} is approve for what an LLM proposes"
        if mode == "approve" and approved_by is not None:
            effective = "auto"
        # 6. dry-run
        if rem.dry_run or req.dry_run or llm_cap == "dry_run":
            would = "would run" if effective == "auto" else "would wait for approval"
            if in_grace:
                would += (f" once the start-up grace ends (in "
                          f"{plain_secs(rem.startup_grace_s - up)}; startup_grace_s)")
            reason = ("remediation.dry_run is on" if rem.dry_run else
                      "a dry run was asked for" if req.dry_run else
                      f"{llm_key} is dry_run for what an LLM proposes")
            return Decision(verdict="dry_run", check="dry_run",
                            why=f"dry_run: {reason}; {what} {would}", **base)
        if not exempt:
            refusal = (self._check_breaker(req.action, now, settings)
                       or self._check_concurrency(req.host, target, settings)
                       or (None if req.supervised else
                           self._check_cooldown(req.host, target, what, now, settings))
                       or self._check_flap(req.host, target, now, settings)
                       or self._check_backoff(req.host, target, now, settings)
                       or self._check_learning(req.host, req.action, target, settings))
            if refusal is not None:
                rcheck, why, extra = refusal
                return refuse(rcheck, why, **extra)
        proposer = {"llm": "an LLM", "operator": "an operator"}.get(
            req.source, "the process supervisor" if req.supervised else "a rule")
        history = f"; history: {stats.describe()}" if stats is not None else ""
        if effective == "auto":
            how = f"approved by {approved_by}" if approved_by else f"mode {mode}"
            why = f"auto: {what} ({how}, proposed by {proposer}){history}"
        elif note:
            why = f"approve: {note}; {what} waits for a human (proposed by {proposer}){history}"
        else:
            why = (f"approve: {what} waits for a human (mode approve, proposed by "
                   f"{proposer}){history}")
        return Decision(verdict=effective, check=check, why=why, **base)

    def _note_request(self, host: str, target: Target, now: float, settings: Settings) -> None:
        """A request to fix ``target`` means it is unhealthy now: end its healthy stretch,
        after letting a stretch that already lasted a whole window count."""
        ts = self.state.targets.get((host, target.key))
        if ts is None or ts.healthy_since is None:
            return
        if now - ts.healthy_since >= settings.remediation.flap_window_s \
                and self._clear(host, target.key):
            logger.info("policy: %s was healthy for a whole window; automatic tries allowed "
                        "again", target)
        ts.healthy_since = None

    @staticmethod
    def _allowed(action: str, target: Target, globs: tuple[str, ...]) -> bool:
        """Whether an allow entry matches ``target``. A stop_process entry may also name the
        process's name and user, which only the live process tells: here it passes when it
        could match, and the process guard decides on the process (at request time too)."""
        if target.kind == "pid":
            return allow_could_match(globs, int(target.name))
        return any(fnmatch.fnmatchcase(target.name, g) for g in globs)

    def _undeclared(self, params: Params, settings: Settings) -> str:
        """Why the target is not declared in the configuration ('' if it is or need not be).

        Clean-up roots and log files are checked by their actions, which resolve paths on the
        filesystem; a lexical copy of that check here could only disagree with it.
        """
        if isinstance(params, ServiceParams) and params.service not in settings.services:
            known = ", ".join(sorted(settings.services)) or "none"
            return f"{params.service} is not a declared service (declared: {known})"
        if isinstance(params, RunScriptParams) and params.name not in settings.remediation.scripts:
            known = ", ".join(sorted(settings.remediation.scripts)) or "none"
            return f"{params.name} is not a declared script (declared: {known})"
        return ""

    # ------------------------------------------------------------------ the checks

    def _counted(self, now: float) -> list[Attempt]:
        return [a for a in self.state.attempts if a.started > now - BUDGET_WINDOW_S]

    def _check_breaker(self, action: str, now: float, settings: Settings) -> _Refusal | None:
        rem = settings.remediation
        counted = self._counted(now)
        scopes = ((counted, rem.budget_per_hour,
                   "{n} actions in the last hour (budget_per_hour {b})"),
                  ([a for a in counted if a.action == action], rem.budget_per_action_per_hour,
                   f"{action} ran {{n}} times in the last hour "
                   "(budget_per_action_per_hour {b})"))
        for attempts, budget, text in scopes:
            if len(attempts) >= budget:
                retry = None
                if budget > 0:
                    # Budget frees up when the attempt that put it over leaves the hour.
                    starts = sorted(a.started for a in attempts)
                    retry = max(0.0, starts[len(starts) - budget] + BUDGET_WINDOW_S - now)
                when = f", next in {plain_secs(retry)}" if retry is not None else ""
                why = "breaker open: alert-only; " + text.format(n=len(attempts), b=budget) + when
                return "breaker", why, {"retry_after_s": retry}
        return None

    def _check_concurrency(self, host: str, target: Target, settings: Settings
                           ) -> _Refusal | None:
        running = [r for r in self._running.values() if r.attempt is not None]
        same = next((r for r in running if r.host == host and r.target == target), None)
        if same is not None:
            return "concurrency", f"{same.action} on {target} is still running", {}
        limit = settings.agents.max_concurrent_actions
        if len(running) >= limit:
            return ("concurrency", f"{len(running)} actions in flight "
                                   f"(max_concurrent_actions {limit})", {})
        return None

    def _last_attempt(self, host: str, target: Target) -> Attempt | None:
        last = None
        for a in self.state.attempts:
            if a.host == host and a.target == target.key \
                    and (last is None or a.started >= last.started):
                last = a
        return last

    def _check_cooldown(self, host: str, target: Target, what: str, now: float,
                        settings: Settings) -> _Refusal | None:
        cooldown = settings.agents.healing_cooldown
        last = self._last_attempt(host, target)
        if last is None or cooldown <= 0:
            return None
        # From the end: the target gets the whole cooldown to show whether the fix worked.
        ref = last.ended if last.ended is not None else last.started
        left = ref + cooldown - now
        if left > 0:
            return ("cooldown", f"{what} is in cooldown for {plain_secs(left)} more "
                                f"(healing_cooldown {_cfg_secs(cooldown)})",
                    {"retry_after_s": left})
        return None

    def _recent(self, host: str, target: Target, now: float, settings: Settings
                ) -> list[Attempt]:
        """Attempts on the target inside the flap window and since its last reset."""
        lo = now - settings.remediation.flap_window_s
        return [a for a in self.state.attempts
                if a.host == host and a.target == target.key and a.started > lo
                and not a.forgiven]

    def _until(self, settings: Settings) -> str:
        return ("no more automatic tries until a human resets it or it stays healthy for "
                f"{_cfg_secs(settings.remediation.flap_window_s)}")

    def _check_flap(self, host: str, target: Target, now: float, settings: Settings
                    ) -> _Refusal | None:
        rem = settings.remediation
        ts = self.state.targets.get((host, target.key))
        if ts is not None and ts.failing_since is not None:
            return ("flap", f"{target} is failing ({ts.failing_why}, "
                            f"{plain_secs(now - ts.failing_since)} ago); {self._until(settings)}",
                    {})
        recent = self._recent(host, target, now, settings)
        if len(recent) >= rem.flap_max_attempts:
            ts = self.state.targets.setdefault((host, target.key), TargetState())
            ts.failing_since = now
            ts.failing_why = (f"{len(recent)} attempts within {_cfg_secs(rem.flap_window_s)}, "
                              f"flap_max_attempts {rem.flap_max_attempts}")
            self._version += 1
            logger.debug("policy: %s marked failing: %s", target, ts.failing_why)
            return ("flap", f"escalate: {target} marked failing after {ts.failing_why}; "
                            f"{self._until(settings)}", {"escalate": True})
        return None

    def _check_backoff(self, host: str, target: Target, now: float, settings: Settings
                       ) -> _Refusal | None:
        rem = settings.remediation
        recent = self._recent(host, target, now, settings)
        if not recent:
            return None
        n = len(recent)
        wait = min(rem.backoff_initial_s * 2.0 ** min(n - 1, 64), rem.backoff_max_s)
        last = max(recent, key=lambda a: a.started)
        ref = last.ended if last.ended is not None else last.started
        left = ref + wait - now
        if left > 0:
            return ("backoff", f"backoff: next try on {target} in {plain_secs(left)} (attempt "
                               f"{n + 1} waits {_cfg_secs(wait)} after the last one ended; "
                               f"backoff_initial_s {_cfg_secs(rem.backoff_initial_s)}, "
                               f"backoff_max_s {_cfg_secs(rem.backoff_max_s)})",
                    {"retry_after_s": left})
        return None

    def _check_learning(self, host: str, action: str, target: Target, settings: Settings
                        ) -> _Refusal | None:
        st = self.state.strategies.get((host, action, target.key))
        limit = self._failure_limit or settings.remediation.flap_max_attempts
        if st is None or st.failures_in_a_row < limit:
            return None
        why = f"{action} has failed {st.failures_in_a_row} times in a row for {target}"
        if st.escalated:
            return "learning", f"{why}; escalated already, {self._until(settings)}", {}
        st.escalated = True
        self._version += 1
        return "learning", f"escalate: {why}; {self._until(settings)}", {"escalate": True}

    # ------------------------------------------------------------------ breaker notices

    def _breaker_open(self, now: float, settings: Settings) -> str:
        """Why the breaker is open now ('' when closed)."""
        rem = settings.remediation
        counted = self._counted(now)
        if len(counted) >= rem.budget_per_hour:
            return (f"{len(counted)} actions in the last hour "
                    f"(budget_per_hour {rem.budget_per_hour})")
        per_action: dict[str, int] = {}
        for a in counted:
            per_action[a.action] = per_action.get(a.action, 0) + 1
        spent = sorted(a for a, n in per_action.items() if n >= rem.budget_per_action_per_hour)
        if spent:
            return (f"{', '.join(spent)} used the hourly budget "
                    f"(budget_per_action_per_hour {rem.budget_per_action_per_hour})")
        return ""

    def _breaker_transition(self, now: float, settings: Settings) -> PolicyNotice | None:
        why = self._breaker_open(now, settings)
        if why and not self.state.breaker_announced:
            self.state.breaker_announced = True
            self._version += 1
            return PolicyNotice(code="breaker_open",
                                message=f"breaker open: alert-only; {why}")
        if not why and self.state.breaker_announced:
            self.state.breaker_announced = False
            self._version += 1
            return PolicyNotice(code="breaker_closed",
                                message="breaker closed: actions allowed again")
        return None

    def breaker_notice(self) -> PolicyNotice | None:
        """A breaker change not yet announced (each opening and closing is returned once).

        ``decide`` attaches the same notice to its decision; call this on a timer to learn
        of the closing when nothing is being decided.
        """
        with self._lock:
            return self._breaker_transition(self._mono(), self._settings())

    @property
    def breaker_is_open(self) -> bool:
        """Whether a budget is spent now (alert-only)."""
        with self._lock:
            return bool(self._breaker_open(self._mono(), self._settings()))

    # ------------------------------------------------------------------ attempts

    def begin(self, decision: Decision) -> None:
        """Record that an ``auto`` decision's action starts now (counts for every limit).

        Raises PolicyError for any other verdict, a decision begun twice, or when the
        concurrency limit or a budget was used up since the decision (an ``await`` between
        ``decide`` and ``begin``): decide again.
        """
        with self._lock:
            if decision.verdict != "auto" or decision.target is None:
                raise PolicyError(f"only an auto decision may begin; this one is "
                                  f"{decision.verdict}: {decision.why}")
            if decision.id in self._running:
                raise PolicyError(f"decision {decision.id} has begun already")
            now = self._mono()
            settings = self._settings()
            req = decision.request
            exempt = decision.risk == "none"
            if not exempt:
                refusal = (self._check_breaker(req.action, now, settings)
                           or self._check_concurrency(req.host, decision.target, settings))
                if refusal is not None:
                    raise PolicyError(f"{req.action} on {decision.target} may not begin any "
                                      f"more: {refusal[1]}; decide again")
            attempt = None
            if not exempt:
                attempt = Attempt(req.host, req.action, decision.target.key, now)
                self.state.attempts.append(attempt)
                self._prune(now, settings)
                self._version += 1
            self._running[decision.id] = _Running(decision.id, req.action, req.host,
                                                  decision.target, attempt)

    def end(self, decision: Decision, *, success: bool | None) -> None:
        """Record that a begun attempt is over; ``success`` None: unknown or not tried.

        ``learning.success_of(result, verification)`` gives ``success``.
        """
        with self._lock:
            running = self._running.pop(decision.id, None)
            if running is None:
                raise PolicyError(f"decision {decision.id} was not begun (or ended already)")
            if running.attempt is None:
                return
            running.attempt.ended = self._mono()
            if success is not None:
                key = (running.host, running.action, running.target.key)
                self.state.strategies.setdefault(key, StrategyStats()).record(success)
            if success and running.target.kind == "service":
                # A service action succeeds only once the service stayed up and healthy for
                # the stability window (supervisord's startsecs): like startretries, the
                # tries before such a run no longer count for flap protection and backoff.
                for a in self.state.attempts:
                    if a.host == running.host and a.target == running.target.key:
                        a.forgiven = True
            self._version += 1

    @property
    def in_flight(self) -> int:
        """Attempts begun and not ended (risk-none actions not counted)."""
        with self._lock:
            return sum(1 for r in self._running.values() if r.attempt is not None)

    def _prune(self, now: float, settings: Settings) -> None:
        """Forget attempts no limit looks at any more (keeps the state file small)."""
        rem = settings.remediation
        keep = max(BUDGET_WINDOW_S, rem.flap_window_s, settings.agents.healing_cooldown,
                   rem.backoff_max_s)
        running = {id(r.attempt) for r in self._running.values()}
        self.state.attempts = [a for a in self.state.attempts
                               if a.started > now - keep or id(a) in running]

    # ------------------------------------------------------------------ health and reset

    def _targets_matching(self, target: Target, host: str | None
                          ) -> Iterable[tuple[str, str]]:
        hosts = ({h for h, _ in self.state.targets} | {h for h, _, _ in self.state.strategies}
                 | {a.host for a in self.state.attempts})
        return [(h, target.key) for h in sorted(hosts) if host is None or h == host]

    def _clear(self, host: str, key: str) -> bool:
        changed = False
        ts = self.state.targets.get((host, key))
        if ts is not None and ts.failing_since is not None:
            ts.failing_since, ts.failing_why = None, ""
            changed = True
        for (h, _, t), st in self.state.strategies.items():
            if h == host and t == key and (st.failures_in_a_row or st.escalated):
                st.forget_streak()
                changed = True
        if changed:
            # Attempts so far no longer count for flap protection and backoff.
            for a in self.state.attempts:
                if a.host == host and a.target == key:
                    a.forgiven = True
            self._version += 1
        return changed

    def reset(self, target: Target, *, by: str, host: str | None = None) -> bool:
        """A human clears the failing mark, failure streaks and backoff of ``target``.

        Returns whether anything was cleared. Cooldown and budgets still apply.
        """
        with self._lock:
            cleared = [self._clear(h, k) for h, k in self._targets_matching(target, host)]
            # Backoff too: after a reset the next automatic try may run at once.
            for a in self.state.attempts:
                if a.target == target.key and (host is None or a.host == host) \
                        and not a.forgiven:
                    a.forgiven = True
                    cleared.append(True)
                    self._version += 1
        if any(cleared):
            logger.info("policy: %s reset by %s; automatic tries allowed again", target, by)
        return any(cleared)

    def mark_healthy(self, target: Target, *, host: str) -> bool:
        """The agent saw ``target`` healthy; after ``flap_window_s`` of that it recovers.

        Returns True when this call cleared a failing mark or a failure streak.
        """
        with self._lock:
            now = self._mono()
            ts = self.state.targets.setdefault((host, target.key), TargetState())
            if ts.healthy_since is None:
                ts.healthy_since = now
            if now - ts.healthy_since < self._settings().remediation.flap_window_s:
                return False
            recovered = self._clear(host, target.key)
        if recovered:
            logger.info("policy: %s healthy again; automatic tries allowed again", target)
        return recovered

    def mark_unhealthy(self, target: Target, *, host: str) -> None:
        """The agent saw ``target`` unhealthy: the healthy stretch starts over."""
        with self._lock:
            ts = self.state.targets.get((host, target.key))
            if ts is not None:
                ts.healthy_since = None

    # ------------------------------------------------------------------ reading

    def _stats_for(self, host: str, action: str, target: Target) -> ActionStats | None:
        st = self.state.strategies.get((host, action, target.key))
        if st is None:
            return None
        return ActionStats(host=host, action=action, target=str(target),
                           successes=st.successes, failures=st.failures,
                           failures_in_a_row=st.failures_in_a_row)

    def stats(self, *, action: str | None = None, host: str | None = None
              ) -> list[ActionStats]:
        """Success counts per (host, action, target)."""
        with self._lock:
            out = []
            for (h, a, key), st in sorted(self.state.strategies.items()):
                if (action is None or a == action) and (host is None or h == host):
                    out.append(ActionStats(host=h, action=a, target=str(_target_from_key(key)),
                                           successes=st.successes, failures=st.failures,
                                           failures_in_a_row=st.failures_in_a_row))
            return out

    def knows(self, target: Target, *, host: str | None = None) -> bool:
        """Whether the policy has any record of ``target`` (attempts, marks, strategies)."""
        with self._lock:
            return any((host is None or h == host) and k == target.key for h, k in (
                *self.state.targets, *((h, t) for h, _, t in self.state.strategies),
                *((a.host, a.target) for a in self.state.attempts)))

    def failing(self) -> list[FailingTarget]:
        """Targets marked failing (flap protection), oldest first."""
        with self._lock:
            now = self._mono()
            out = []
            for (h, key), ts in self.state.targets.items():
                if ts.failing_since is not None:
                    out.append(FailingTarget(host=h, target=_target_from_key(key),
                                             why=ts.failing_why,
                                             for_s=now - ts.failing_since))
            return sorted(out, key=lambda f: -f.for_s)

    # ------------------------------------------------------------------ persistence

    def save(self) -> bool:
        """Write the state to its file if it changed (blocking; see ``persist``)."""
        with self._lock:
            path = self.state.path
            version = self._version
            if path is None or version == self._saved_version:
                return False
            text = self.state.dumps(self._mono())
        self._write(path, text, version)
        return True

    async def persist(self) -> bool:
        """``save`` with the file I/O on a worker thread; True if something was written."""
        with self._lock:
            path = self.state.path
            version = self._version
            if path is None or version == self._saved_version:
                return False
            # Serialised here, under the lock: the agent keeps mutating while we write.
            text = self.state.dumps(self._mono())
        await asyncio.to_thread(self._write, path, text, version)
        return True

    def _write(self, path: Path, text: str, version: int) -> None:
        with self._save_lock:
            # Two overlapping persists may finish out of order; never write an older state.
            if version <= self._saved_version:
                return
            _write_durably(path, text)
            self._saved_version = version


def state_path(settings: Settings) -> Path:
    """Where the policy state lives: ``<data_dir>/policy_state.json``."""
    return settings.storage.path / STATE_FILENAME


