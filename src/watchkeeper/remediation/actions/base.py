"""The action contract: preview (dry-run), execute (never raises), verify; and their results.

Like the agents' BaseAgent, the base class owns the parts every action must get right: it
validates parameters against the registry model, honours the global dry-run switch, times
the run, turns a refusal or an unexpected exception into a result instead of raising, and
redacts what it reports. A subclass writes ``_preview``, ``_execute`` and ``_verify``, and
``_check`` when its parameters name something that must be configured (a path, a service,
a script): that one function decides whether a request could ever succeed and normalises
it, when the action is asked for (before any approval is queued) and again at preview,
execute and verify.
"""

from __future__ import annotations

import json
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar, cast

import psutil
from pydantic import Field, JsonValue

from watchkeeper.collectors.common import PsutilLike
from watchkeeper.config import RemediationConfig
from watchkeeper.events import Frozen
from watchkeeper.redact import redact_text
from watchkeeper.remediation.process_guard import StatusReader, effective_uid, read_status
from watchkeeper.remediation.registry import (
    REGISTRY,
    ActionRefused,
    ActionSpec,
    Params,
    parse_params,
)

from .runner import CommandRunner, SubprocessRunner

logger = logging.getLogger(__name__)

Outcome = Literal["ok", "failed", "refused", "dry_run"]
PreviewOutcome = Literal["would_run", "nothing_to_do", "refused", "error"]
JsonDict = dict[str, JsonValue]

#: Items (files, targets) listed in a preview or result; the count is always complete.
MAX_ITEMS = 200
#: Longest message kept in a result.
MAX_MESSAGE = 2000


class Preview(Frozen):
    """What an action would do, exactly, without doing it (the dry-run)."""

    action: str
    params: JsonDict = Field(default_factory=dict)
    outcome: PreviewOutcome
    summary: str
    items: tuple[str, ...] = ()
    items_total: int = 0
    details: JsonDict = Field(default_factory=dict)
    at: datetime


class ActionResult(Frozen):
    """What an action did: outcome, the argv run, an output excerpt, duration and details."""

    action: str
    params: JsonDict = Field(default_factory=dict)
    outcome: Outcome
    message: str
    argv: tuple[str, ...] = ()
    exit_code: int | None = None
    output: str = ""
    started_at: datetime
    duration_s: float
    details: JsonDict = Field(default_factory=dict)
    preview: Preview | None = None

    @property
    def ok(self) -> bool:
        """Whether the action ran and succeeded."""
        return self.outcome == "ok"


class Verification(Frozen):
    """Whether an executed action had the intended effect (process gone, bytes freed...)."""

    action: str
    ok: bool
    message: str
    details: JsonDict = Field(default_factory=dict)
    at: datetime


@dataclass(frozen=True)
class ActionContext:
    """The side effects an action may use, injected so tests can pass fakes at the boundary."""

    settings: RemediationConfig
    psutil: PsutilLike = psutil
    runner: CommandRunner = field(default_factory=SubprocessRunner)
    #: Monotonic clock for durations and waits.
    clock: Callable[[], float] = time.monotonic
    #: Wall clock (epoch seconds) for timestamps and file ages (mtimes are wall-clock).
    wall_clock: Callable[[], float] = time.time
    #: watchkeeper's own pid: it and its ancestors are never a target.
    own_pid: int = field(default_factory=os.getpid)
    #: watchkeeper's effective uid: by default only its processes may be stopped.
    own_uid: int | None = field(default_factory=effective_uid)
    #: What the kernel says about a pid (thread group, parent, uids, kernel thread).
    proc_status: StatusReader = read_status
    #: How often a wait (for a process to exit) looks again.
    poll_interval_s: float = 0.05
    #: How long to wait for a process to disappear after SIGKILL.
    kill_wait_s: float = 5.0
    #: The service managers (remediation.services.Services) for the service actions.
    services: Any = None
    #: How long a restarted or started service has to pass its checks.
    verify_timeout_s: float = 30.0

    def now(self) -> datetime:
        """The wall clock as an aware UTC datetime."""
        return datetime.fromtimestamp(self.wall_clock(), timezone.utc)


class Refused(Exception):
    """Raised inside an action to refuse, with a reason a human can act on; nothing was done."""


@dataclass(frozen=True)
class Plan:
    """What a subclass's ``_preview`` returns; the base adds the action, params and time."""

    outcome: PreviewOutcome
    summary: str
    items: tuple[str, ...] = ()
    items_total: int | None = None
    details: Mapping[str, JsonValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Done:
    """What a subclass's ``_execute`` returns; the base adds the action, params and timing."""

    outcome: Literal["ok", "failed", "refused"]
    message: str
    argv: tuple[str, ...] = ()
    exit_code: int | None = None
    output: str = ""
    details: Mapping[str, JsonValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """What a subclass's ``_verify`` returns."""

    ok: bool
    message: str
    details: Mapping[str, JsonValue] = field(default_factory=dict)


class Action(Protocol):
    """An executor for one registry action."""

    @property
    def spec(self) -> ActionSpec:
        """The registry entry (name, risk, parameter model)."""
        ...

    def check(self, params: Params | Mapping[str, Any], ctx: ActionContext) -> Params:
        """``params`` parsed, checked and normalised; raise Refused if it can never succeed."""
        ...

    async def preview(self, params: Params | Mapping[str, Any], ctx: ActionContext) -> Preview:
        """Say exactly what execute would do now, changing nothing."""
        ...

    async def execute(self, params: Params | Mapping[str, Any], ctx: ActionContext
                      ) -> ActionResult:
        """Do it (or only preview under dry_run); never raises."""
        ...

    async def verify(self, params: Params | Mapping[str, Any], ctx: ActionContext,
                     result: ActionResult) -> Verification:
        """Check that an executed action had its effect; never raises."""
        ...


P = TypeVar("P", bound=Params)


class BaseAction(ABC, Generic[P]):
    """Validation, dry-run, timing and error handling around ``_preview/_execute/_verify``."""

    #: The registry entry (its params model is ``P``).
    spec: ClassVar[ActionSpec]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is not None and REGISTRY.get(spec.name) is not spec:
            raise TypeError(f"{cls.__name__}.spec is not the registry's {spec.name!r} entry")

    @property
    def name(self) -> str:
        """The action's registry name."""
        return self.spec.name

    def parse(self, params: Params | Mapping[str, Any]) -> P:
        """``params`` as this action's model; raise Refused if they do not validate."""
        if type(params) is self.spec.params:
            return cast(P, params)
        # Another model (or a dict from the bus) is validated afresh: extra keys are refused.
        raw = params.model_dump() if isinstance(params, Params) else params
        try:
            return cast(P, parse_params(self.name, raw))
        except ActionRefused as exc:
            raise Refused(str(exc)) from None

    def check(self, params: Params | Mapping[str, Any], ctx: ActionContext) -> P:
        """``params`` parsed, checked against what this action could ever do, and normalised
        (a path absolute and lexically clean, inside what is configured); raise Refused for a
        request that can never succeed. Quick and without I/O: the policy calls it when the
        action is asked for, under its lock; preview, execute and verify call it again."""
        return self._check(self.parse(params), ctx)

    def _check(self, params: P, ctx: ActionContext) -> P:
        """Check and normalise parsed parameters; the default accepts what the model did."""
        return params

    async def preview(self, params: Params | Mapping[str, Any], ctx: ActionContext) -> Preview:
        """Say exactly what execute would do now, changing nothing; never raises."""
        raw = _jsonable(params)
        try:
            parsed = self.check(params, ctx)
            raw = parsed.model_dump(mode="json")
            plan = await self._preview(parsed, ctx)
        except Refused as exc:
            plan = Plan("refused", str(exc))
        except Exception as exc:
            logger.exception("preview of %s failed", self.name)
            plan = Plan("error", f"could not preview {self.name}: {_describe(exc)}")
        items = tuple(plan.items[:MAX_ITEMS])
        total = len(plan.items) if plan.items_total is None else plan.items_total
        return Preview(action=self.name, params=raw, outcome=plan.outcome,
                       summary=_clean(plan.summary), items=items, items_total=total,
                       details=dict(plan.details), at=ctx.now())

    async def execute(self, params: Params | Mapping[str, Any], ctx: ActionContext
                      ) -> ActionResult:
        """Do it, or under ``dry_run`` only preview it; never raises (except cancellation)."""
        started_at = ctx.now()
        t0 = ctx.clock()
        if ctx.settings.dry_run:
            # Defence in depth: the policy should not even call us, but dry-run must hold.
            preview = await self.preview(params, ctx)
            # A target the action would refuse is said to be refused, not just described.
            verdict = "refused: " if preview.outcome == "refused" else ""
            return ActionResult(action=self.name, params=preview.params, outcome="dry_run",
                                message=_clean(f"dry run, nothing done: {verdict}"
                                               f"{preview.summary}"),
                                started_at=started_at, duration_s=max(0.0, ctx.clock() - t0),
                                preview=preview)
        raw = _jsonable(params)
        try:
            parsed = self.check(params, ctx)
            raw = parsed.model_dump(mode="json")
            done = await self._execute(parsed, ctx)
        except Refused as exc:
            done = Done("refused", str(exc))
        except Exception as exc:
            logger.exception("%s failed", self.name)
            done = Done("failed", f"{self.name} failed: {_describe(exc)}")
        duration = max(0.0, ctx.clock() - t0)
        result = ActionResult(
            action=self.name, params=raw, outcome=done.outcome, message=_clean(done.message),
            argv=done.argv, exit_code=done.exit_code, output=redact_text(done.output),
            started_at=started_at, duration_s=duration, details=dict(done.details))
        log = logger.debug if done.outcome == "ok" else logger.warning
        log("%s %s: %s", self.name, done.outcome, result.message)
        return result

    async def verify(self, params: Params | Mapping[str, Any], ctx: ActionContext,
                     result: ActionResult) -> Verification:
        """Check that an executed action had its effect; never raises."""
        if result.outcome != "ok":
            check = Check(False, f"nothing to verify: the action's outcome was {result.outcome}")
        else:
            try:
                check = await self._verify(self.check(params, ctx), ctx, result)
            except Refused as exc:
                check = Check(False, str(exc))
            except Exception as exc:
                logger.exception("verification of %s failed", self.name)
                check = Check(False, f"could not verify {self.name}: {_describe(exc)}")
        return Verification(action=self.name, ok=check.ok, message=_clean(check.message),
                            details=dict(check.details), at=ctx.now())

    @abstractmethod
    async def _preview(self, params: P, ctx: ActionContext) -> Plan:
        """Compute the plan; raise Refused to refuse."""

    @abstractmethod
    async def _execute(self, params: P, ctx: ActionContext) -> Done:
        """Do it; raise Refused to refuse before anything changed."""

    @abstractmethod
    async def _verify(self, params: P, ctx: ActionContext, result: ActionResult) -> Check:
        """Check the effect of a successful ``_execute``."""


def _jsonable(params: Params | Mapping[str, Any]) -> JsonDict:
    """Parameters as plain JSON, even ones that fail validation (they go into the audit)."""
    if isinstance(params, Params):
        data: JsonDict = params.model_dump(mode="json")
        return data
    try:
        loaded: JsonDict = json.loads(json.dumps(dict(params), default=str))
    except (TypeError, ValueError):
        return {"unparseable": redact_text(repr(params))[:MAX_MESSAGE]}
    return loaded


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{type(exc).__name__}: {exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _clean(message: str) -> str:
    """A message as stored: secrets redacted, length capped."""
    text = redact_text(message)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def human_bytes(n: float) -> str:
    """A byte count the way people read it (decimal units: 3.2 GB)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
