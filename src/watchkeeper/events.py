"""Typed, frozen events: everything that travels on the bus.

Every event is a frozen pydantic model with a ``kind`` discriminator and a
``schema_version``; ``encode``/``decode`` turn any event into JSON bytes and back
without loss, so a network bus (NATS) can carry them unchanged.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, model_validator

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    """Timezone-aware UTC now (the only clock format events carry)."""
    return datetime.now(timezone.utc)


class Frozen(BaseModel):
    """Base for every value carried in an event: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Event(Frozen):
    """Base for everything published on the bus."""

    # Whether a full subscriber queue may drop the oldest of these (metrics, heartbeats)
    # instead of pushing back on the publisher (alerts, actions, commands).
    droppable: ClassVar[bool] = False

    schema_version: int = SCHEMA_VERSION
    host: str
    at: datetime = Field(default_factory=utcnow)


# --------------------------------------------------------------------------- metrics


class Missing(Frozen):
    """A value a collector could not read this tick, and why (timeout, access denied, ...)."""

    key: str
    reason: str


class CpuStats(Frozen):
    percent: float | None = None
    per_core: tuple[float, ...] = ()
    load_1: float | None = None
    load_5: float | None = None
    load_15: float | None = None
    count_logical: int | None = None
    iowait_percent: float | None = None


class MemoryStats(Frozen):
    total: int | None = None
    available: int | None = None
    used: int | None = None
    percent: float | None = None
    swap_total: int | None = None
    swap_used: int | None = None
    swap_percent: float | None = None


class DiskUsage(Frozen):
    mountpoint: str
    device: str
    fstype: str
    total: int | None = None
    used: int | None = None
    free: int | None = None
    percent: float | None = None
    inodes_percent: float | None = None


class DiskIO(Frozen):
    device: str
    read_bytes_per_s: float
    write_bytes_per_s: float
    read_ops_per_s: float
    write_ops_per_s: float
    busy_percent: float | None = None


class NetIO(Frozen):
    """Rates per second; errors and drops are counts during the last interval, not totals."""

    interface: str
    is_up: bool | None = None
    bytes_sent_per_s: float
    bytes_recv_per_s: float
    packets_sent_per_s: float
    packets_recv_per_s: float
    errors_in: int
    errors_out: int
    drops_in: int
    drops_out: int


class ProcessInfo(Frozen):
    pid: int
    create_time: float
    name: str
    user: str | None = None
    cpu_percent: float | None = None
    rss: int | None = None
    memory_percent: float | None = None
    age_s: float | None = None
    status: str | None = None
    cmdline: str = ""
    #: Running or waiting for a CPU, % of one core (Linux, top-CPU list only): what it would
    #: take on an idle host.
    cpu_demand_percent: float | None = None


class LogGrowth(Frozen):
    """A watched log file that grew since the previous tick (``sensor.log_paths``)."""

    path: str
    size: int
    bytes_per_s: float


class NameCount(Frozen):
    """How many processes share one name (the sensor's largest groups)."""

    name: str
    count: int = Field(ge=0)


class ProcessSummary(Frozen):
    total: int | None = None
    running: int | None = None
    zombies: int | None = None
    threads: int | None = None
    top_cpu: tuple[ProcessInfo, ...] = ()
    top_memory: tuple[ProcessInfo, ...] = ()
    #: The largest groups of processes by name (a fork storm's culprit), largest first.
    top_names: tuple[NameCount, ...] = ()


class HostIdentity(Frozen):
    hostname: str
    os: str
    os_release: str
    machine: str
    boot_time: float | None = None
    cpu_count: int | None = None


class ServiceInfo(Frozen):
    """A declared service as its manager sees it this tick, with its health checks."""

    name: str
    manager: str
    state: str
    healthy: bool | None = None
    pid: int | None = None
    detail: str = ""
    failing: tuple[str, ...] = ()


class MetricSnapshot(Event):
    """One tick of the SensorAgent: every metric family, with what could not be read."""

    droppable: ClassVar[bool] = True
    kind: Literal["metric_snapshot"] = "metric_snapshot"
    seq: int
    interval_s: float
    cpu: CpuStats = CpuStats()
    memory: MemoryStats = MemoryStats()
    disks: tuple[DiskUsage, ...] = ()
    disk_io: tuple[DiskIO, ...] = ()
    net: tuple[NetIO, ...] = ()
    processes: ProcessSummary = ProcessSummary()
    uptime_s: float | None = None
    identity: HostIdentity | None = None
    services: tuple[ServiceInfo, ...] = ()
    missing: tuple[Missing, ...] = ()
    collect_ms: float | None = None
    #: The fastest-growing watched log files this tick (at most sensor.top_processes).
    logs: tuple[LogGrowth, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _drop_comment(cls, data: Any) -> Any:
        # Snapshots stored by earlier versions carry the sensor's quip as "comment"; quips
        # live in the log only now (structured data stays plain), so an old one is dropped.
        if isinstance(data, dict) and "comment" in data:
            data = {k: v for k, v in data.items() if k != "comment"}
        return data


# --------------------------------------------------------------------------- agent life


AgentState = Literal["starting", "running", "paused", "degraded", "stopped", "crashed"]


class AgentHealth(Frozen):
    """What an agent says about itself; carried by heartbeats and the status file."""

    name: str
    state: AgentState
    last_success: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    error_count: int = 0
    consecutive_errors: int = 0
    restarts: int = 0
    checks: int = 0
    last_check_ms: float | None = None
    interval_s: float
    #: What the agent, though running, cannot do (a notification route failing): each one
    #: makes the overall status degraded, in these words.
    problems: tuple[str, ...] = ()


class Heartbeat(Event):
    droppable: ClassVar[bool] = True
    kind: Literal["heartbeat"] = "heartbeat"
    agent: str
    health: AgentHealth


class AgentError(Event):
    """A check that raised or timed out: a health mark, not a dead agent."""

    kind: Literal["agent_error"] = "agent_error"
    agent: str
    error: str
    error_type: str
    timed_out: bool = False
    consecutive: int = 1


class AgentRestarted(Event):
    """The supervisor restarted an agent whose task died."""

    kind: Literal["agent_restarted"] = "agent_restarted"
    agent: str
    restarts: int
    backoff_s: float
    reason: str


class AgentGaveUp(Event):
    """The supervisor stopped restarting an agent (restart budget spent)."""

    kind: Literal["agent_gave_up"] = "agent_gave_up"
    agent: str
    restarts: int
    reason: str


# --------------------------------------------------------------------------- commands


CommandName = Literal["health_check", "pause", "resume", "restart"]

#: What a refused command's reply says went wrong; the API turns each into one HTTP status
#: (invalid and unknown_command 422, forbidden 403, not_found 404, conflict 409,
#: unavailable and timeout 503, error 500).
ReplyCode = Literal["ok", "unknown_command", "invalid", "forbidden", "not_found", "conflict",
                    "unavailable", "timeout", "error"]

#: Who may ask: an operator changes things; a viewer (the read token) only asks questions.
CommandRole = Literal["operator", "viewer"]


def new_request_id() -> str:
    """A fresh id that pairs a command with its reply (and with its audit record)."""
    return uuid.uuid4().hex


class Command(Event):
    """A request to one agent (or to ``all``) on ``command.<host>.<agent>``, answered by a
    CommandReply: every operator action travels this way, so a remote host is acted on
    exactly as the local one. ``command`` is the verb and ``args`` its JSON arguments; the
    receiving agent checks both (a verb it does not take, a wrong type, an oversize string
    is refused, changing nothing). ``actor`` and ``role`` say who asked, for the agent's
    audit; authorization itself is decided where the request entered (the API's tokens)."""

    kind: Literal["command"] = "command"
    command: str = Field(min_length=1, max_length=64)
    target: str = Field("all", min_length=1, max_length=64)
    args: dict[str, JsonValue] = Field(default_factory=dict)
    actor: str = Field("system", pattern=r"^[^\x00-\x1f\x7f]{1,200}$")
    role: CommandRole = "operator"
    request_id: str = Field(default_factory=new_request_id, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")


class CommandReply(Event):
    """An agent's answer to one Command: ``ok``, or a ``code`` and a message saying why
    not; ``result`` holds what the verb returns (JSON)."""

    kind: Literal["command_reply"] = "command_reply"
    agent: str
    command: str
    ok: bool
    message: str
    health: AgentHealth | None = None
    code: ReplyCode = "ok"
    request_id: str = ""
    result: dict[str, JsonValue] | None = None

    @model_validator(mode="after")
    def _code_says_why(self) -> CommandReply:
        if not self.ok and self.code == "ok":  # a refusal always names a reason
            object.__setattr__(self, "code", "error")
        return self


class CommandRefused(Event):
    """An agent refused a command: what was asked, by whom, and why (its audit record,
    published on ``system.<host>`` so the history keeps it)."""

    kind: Literal["command_refused"] = "command_refused"
    agent: str
    command: str
    actor: str
    role: str
    request_id: str
    code: ReplyCode
    message: str


class ConfigChanged(Event):
    """The effective configuration was replaced through the validated update function."""

    kind: Literal["config_changed"] = "config_changed"
    version: int
    changed: tuple[str, ...]


# --------------------------------------------------------------------------- analysis


Severity = Literal["info", "warning", "critical"]
AlertState = Literal["firing", "acknowledged", "resolved"]


class SuggestedAction(Frozen):
    """An action from the remediation registry, with validated parameters and a reason."""

    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    reason: str = ""
    source: Literal["rule", "llm"] = "rule"


class Assessment(Frozen):
    """What the analyzer concludes about an alert: rule-based, or reasoned by an LLM."""

    source: Literal["rule", "llm"]
    summary: str
    likely_cause: str = ""
    confidence: float = Field(0.5, ge=0.0, le=1.0)
    expected: bool = False
    suggested_actions: tuple[SuggestedAction, ...] = ()
    evidence: tuple[str, ...] = ()
    model: str | None = None
    note: str | None = None


class Alert(Event):
    """One problem, de-duplicated by fingerprint, through firing -> acknowledged -> resolved."""

    kind: Literal["alert"] = "alert"
    id: str
    fingerprint: str
    rule: str
    metric: str
    dimension: str = ""
    severity: Severity
    state: AlertState = "firing"
    value: float | None = None
    threshold: float | None = None
    baseline: float | None = None
    #: The worst value since the alert opened (``value`` follows the current sample).
    peak: float | None = None
    since: datetime
    summary: str
    context: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    suggested_actions: tuple[SuggestedAction, ...] = ()
    assessment: Assessment | None = None
    silenced: bool = False


class AnalyzerNotice(Event):
    """Something about the analyzer itself a user should know (LLM budget spent, breaker open)."""

    kind: Literal["analyzer_notice"] = "analyzer_notice"
    code: Literal["llm_budget_exhausted", "llm_circuit_open", "llm_circuit_closed",
                  "llm_step_limit", "llm_output_rejected"]
    message: str
    incident: str | None = None


# --------------------------------------------------------------------------- remediation


class RemediationEvent(Event):
    """A step of one remediation: decided, pending approval (then rejected or expired
    unanswered), started, finished, escalated; or a human's reset of a failing target."""

    kind: Literal["remediation"] = "remediation"
    phase: Literal["decided", "pending", "rejected", "expired", "started", "finished",
                   "escalated", "notice", "reset"]
    action: str
    target: str = ""
    verdict: str = ""
    why: str = ""
    source: Literal["rule", "llm", "operator", "supervisor"] = Field(
        "rule", description="who proposed it; supervisor: the restart of a managed process "
        "that went down")
    message: str = ""
    outcome: str | None = None
    verified: bool | None = None
    duration_s: float | None = None
    decision_id: str = ""
    intent_id: int | None = None
    approval_id: int | None = None
    fingerprint: str | None = None
    by: str | None = Field(None, description="who approved or rejected it")


# --------------------------------------------------------------------------- services


ServiceCondition = Literal["ok", "starting", "down", "unhealthy", "restarting", "crash_looping",
                           "failing", "removed"]


class ServiceReport(Event):
    """What watchkeeper knows and does about one declared service, published on
    ``services.<host>`` when its condition or its remediation changes (an exit at once)."""

    kind: Literal["service_report"] = "service_report"
    service: str
    manager: str
    condition: ServiceCondition
    state: str = Field(description="as its manager says: running, stopped, failed, ...")
    healthy: bool | None = None
    pid: int | None = None
    detail: str = Field("", description="why it is not ok: the exit, the failing checks")
    since: datetime | None = Field(None, description="since when it is in this condition")
    restarts: int = Field(0, description="restarts and starts watchkeeper ran since it started")
    last_action: str | None = None
    last_action_at: datetime | None = None
    last_outcome: str | None = Field(None, description="ok, failed, unstable, running")
    last_message: str = ""
    refused: str | None = Field(None, description="the check that holds the next try back: "
                                "grace, cooldown, backoff, breaker, flap, approval, ...")
    next_try_at: datetime | None = None
    remediation: str = Field("", description="what was done and what comes next, in words")


class SpoolGap(Event):
    """A fleet agent's gap marker: events its spool dropped (past its bounds) while the
    broker was unreachable; the central shows the gap instead of a silent hole."""

    kind: Literal["spool_gap"] = "spool_gap"
    dropped: int = Field(ge=1, description="events dropped, oldest first, snapshots first")
    first_at: datetime = Field(description="the oldest dropped event's time")
    last_at: datetime = Field(description="the newest dropped event's time")


AnyEvent = Annotated[
    MetricSnapshot
    | Heartbeat
    | AgentError
    | AgentRestarted
    | AgentGaveUp
    | Command
    | CommandReply
    | CommandRefused
    | ConfigChanged
    | Alert
    | AnalyzerNotice
    | RemediationEvent
    | ServiceReport
    | SpoolGap,
    Field(discriminator="kind"),
]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyEvent)


def encode(event: Event) -> bytes:
    """Serialise an event to JSON bytes (what a network bus carries)."""
    return event.model_dump_json().encode()


def decode(data: bytes | str) -> Event:
    """Parse JSON produced by :func:`encode` back into the same typed event."""
    event: Event = _ADAPTER.validate_json(data)
    return event
