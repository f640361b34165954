"""Public request and response models of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from watchkeeper.events import (
    AgentHealth,
    AgentState,
    Alert,
    CommandName,
    CommandReply,
    ServiceCondition,
)
from watchkeeper.overall import OverallStatus
from watchkeeper.remediation.audit import Approval, AuditEntry
from watchkeeper.remediation.auditchain import ChainStatus
from watchkeeper.remediation.registry import REGISTRY


def _no_nul(value: str) -> str:
    # A NUL would be cut short or rejected deep in SQLite or a C library: refuse it here.
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


#: A string safe to pass on: no NUL characters, bounded length.
Text = Annotated[str, Field(max_length=1024), AfterValidator(_no_nul)]

#: Ids stored in SQLite are signed 64-bit integers; anything larger cannot exist.
MAX_ID = 2**63 - 1


class Model(BaseModel):
    """Base of the API's own models: unknown fields in a request are errors."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(Model):
    """Every error response: a short code and a human-readable detail."""

    error: str
    detail: Any = None


class AgentStatus(Model):
    name: str
    state: AgentState


_STATUS = ("the host's overall status: critical (an open critical alert, silenced ones "
           "excepted), degraded (an agent is not running), warning (an open warning), ok")


class OpenAlerts(Model):
    """Open alerts the status counted; silenced ones are counted apart and never raise it."""

    critical: int
    warning: int
    acknowledged: int = Field(description="of the critical and warning ones")
    silenced: int


class HealthBody(Model):
    status: OverallStatus = Field(description=_STATUS)
    reasons: list[str] = Field(description="why, in words (empty when ok)")
    alerts: OpenAlerts
    live: bool
    ready: bool = Field(description="every agent runs (the HTTP status: 200, else 503)")
    agents: list[AgentStatus]


class SystemBody(Model):
    status: OverallStatus = Field(description=_STATUS)
    reasons: list[str] = Field(description="why, in words (empty when ok)")
    alerts: OpenAlerts
    version: str
    host: str
    uptime_s: float = Field(description="seconds since this API started")
    host_uptime_s: float | None = Field(None, description="the machine's uptime, if known")
    os: str | None = None
    agents_running: int
    agents_total: int


class AgentsBody(Model):
    agents: list[AgentHealth]


class Point(Model):
    at: datetime
    avg: float
    min: float
    max: float
    count: int


class HistoryBody(Model):
    metric: str
    dimension: str
    step_s: int | None
    start: datetime
    end: datetime
    points: list[Point]


class AlertsBody(Model):
    alerts: list[Alert]


class HostBody(Model):
    host: str
    health: Literal["ok", "warning", "critical", "down", "unknown"] = Field(
        description="down: no snapshot for analyzer.host_down_after_s; unknown: none yet")
    last_seen: datetime | None = Field(description="when its last snapshot arrived")
    last_snapshot_at: datetime | None = Field(description="that snapshot's time (the host's "
                                                          "clock)")
    open_alerts: int


class HostsBody(Model):
    fleet: bool = Field(description="whether this server follows a fleet (serve --fleet)")
    hosts: list[HostBody]
    rejected: dict[str, int] = Field(
        default_factory=dict, description="messages this server refused from the bus since "
        "it started, by reason (e.g. wrong_host: a host publishing as another)")
    duplicate_snapshots: int = Field(0, description="snapshots delivered twice (a spool "
                                     "replay) and stored once, since it started")


class SilenceRequest(Model):
    matchers: dict[Text, Text] = Field(min_length=1, max_length=20,
                                       description="globs on rule, metric, dimension, host, "
                                                   "severity or a label")
    until: datetime
    comment: Text = ""


class SilenceBody(Model):
    id: str
    matchers: dict[str, str]
    until: datetime
    by: str
    comment: str


class SilencesBody(Model):
    silences: list[SilenceBody]


_CHAIN = ("whether the audit log's hash chain verifies (every entry carries the hash of "
          "the one before): when not, broken_at says where and how, and what is served "
          "here may have been altered")


class HostProblem(Model):
    """A host a central asked for its part of a list, which did not answer."""

    host: str
    status: int = Field(description="503: nobody answers for it (its agent is not running or "
                        "not connected); 504: no answer in time; 502: an answer that is not "
                        "valid")
    detail: str


class HostApproval(Approval):
    """An approval request, with the host whose remediator raised it (and decides it)."""

    host: str = Field(description="the host it runs on: approve or reject it there "
                                  "(host=NAME)")


class ActionsBody(Model):
    entries: list[AuditEntry]
    pending: list[HostApproval]
    audit_chain: ChainStatus = Field(description=_CHAIN)
    unreachable: list[HostProblem] = Field(
        default_factory=list, description="on a central: hosts whose pending approvals "
        "could not be read (they are missing from pending)")


class ApprovalsBody(Model):
    approvals: list[HostApproval]
    audit_chain: ChainStatus = Field(description=_CHAIN)
    unreachable: list[HostProblem] = Field(
        default_factory=list, description="on a central: hosts that did not answer (their "
        "approvals are missing from the list)")


class RejectRequest(Model):
    reason: Text = ""


class ApproveBody(Model):
    approval_id: int
    verdict: str
    why: str


class ActivityItem(Model):
    id: int
    at: datetime
    topic: str
    kind: str
    event: dict[str, Any] = Field(description="the event as the live stream sends it")


class ActivityBody(Model):
    events: list[ActivityItem]
    audit_chain: ChainStatus = Field(description=_CHAIN)


class TopicCounters(Model):
    topic: str
    published: int
    delivered: int
    dropped: int
    queue_depth: int


class BusBody(Model):
    topics: list[TopicCounters]


class ConfigBody(Model):
    version: int
    config: dict[str, Any]


class ConfigUpdated(Model):
    version: int
    changed: list[str]
    config: dict[str, Any]


def _plain_json(value: Any, depth: int = 0) -> Any:
    """Check a free-form JSON value: no NUL anywhere, bounded nesting and size."""
    if depth > 5:
        raise ValueError("nested too deeply (at most 5 levels)")
    if isinstance(value, str):
        return _no_nul(value)
    if isinstance(value, dict):
        if len(value) > 50:
            raise ValueError("at most 50 keys")
        for key, item in value.items():
            _no_nul(key)
            _plain_json(item, depth + 1)
    elif isinstance(value, list):
        if len(value) > 100:
            raise ValueError("at most 100 items")
        for item in value:
            _plain_json(item, depth + 1)
    return value


class AgentCommandRequest(Model):
    """Ask one agent, or all of them, to check in, pause, resume or restart."""

    command: CommandName
    target: Text = Field("all", description="an agent's name, or all")


_ACTIONS: list[Any] = sorted(REGISTRY)


class RemediateRequest(Model):
    """Ask for one remediation action; it goes through the same policy as the agents' own."""

    command: Literal["remediate"]
    action: Text = Field(description="a registered action, e.g. restart_service",
                         json_schema_extra={"enum": _ACTIONS})
    params: Annotated[dict[str, Any], AfterValidator(_plain_json)] = Field(
        default_factory=dict, description="the action's parameters, e.g. {\"service\": \"web\"}")
    dry_run: bool = Field(False, description="only say what would happen")
    reason: Text = ""


class SimulateRequest(Model):
    """Start watchkeeper's built-in demo managed service and crash it once (service) or make
    it exit at every start (crashloop); removed after duration_s. Its command line is
    watchkeeper's own: a request cannot give one."""

    command: Literal["simulate"]
    scenario: Literal["service", "crashloop"]
    duration_s: float = Field(60.0, gt=0, le=600, allow_inf_nan=False,
                              description="how long the demo service stays declared")


CommandRequest = Annotated[AgentCommandRequest | RemediateRequest | SimulateRequest,
                           Field(discriminator="command")]


class SimulationBody(Model):
    """A started simulation: the demo service, its port, the pid killed, when, and until."""

    scenario: str
    service: str
    port: int
    pid: int | None
    started_at: datetime
    crashed_at: datetime
    heals_at: datetime = Field(description="when the cause ends (crashloop: it starts again)")
    until: datetime = Field(description="when the demo service is removed")


class DecisionBody(Model):
    """The policy's verdict on a requested remediation, and why."""

    decision_id: str
    action: str
    target: str | None
    verdict: Literal["auto", "approve", "dry_run", "refused"]
    check: str = Field(description="the policy check that decided (ok: all passed)")
    why: str
    preview: str | None = Field(None, description="for a dry run: what would happen")
    approval_id: int | None = Field(None, description="when it waits for approval")


class CommandBody(Model):
    replies: list[CommandReply] = Field(default_factory=list,
                                        description="the agents' answers (agent commands)")
    decision: DecisionBody | None = Field(None, description="the verdict (remediate)")
    simulation: SimulationBody | None = Field(None, description="what started (simulate)")


class Done(Model):
    ok: bool = True
    detail: str = ""


# --------------------------------------------------------------------------- services


class ServiceBody(Model):
    """One declared service: its state, its checks, and what remediation did and does."""

    name: str
    host: str | None = Field(None, description="the host it runs on (whose remediator "
                             "resets it: host=NAME)")
    manager: str
    condition: ServiceCondition = Field(description="ok, starting, down, unhealthy, "
                                        "restarting, crash_looping, failing")
    state: str = Field(description="as its manager says: running, stopped, failed, ...")
    healthy: bool | None = None
    pid: int | None = None
    uptime_s: float | None = Field(None, description="how long its process has run")
    detail: str = Field("", description="why it is not ok")
    since: datetime | None = Field(None, description="since when in this condition")
    restarts: int = Field(description="restarts and starts watchkeeper ran since it started")
    last_check_at: datetime | None = None
    last_check_ok: bool | None = None
    last_check: str = ""
    last_action: str | None = None
    last_action_at: datetime | None = None
    last_outcome: str | None = Field(None, description="ok, failed, unstable (did not stay "
                                     "up for the stability window), running")
    last_message: str = ""
    refused: str | None = Field(None, description="the check holding the next try back")
    next_try_at: datetime | None = Field(None, description="when the next try is allowed")
    remediation: str = Field("", description="what was done and what comes next, in words")


class ServicesBody(Model):
    services: list[ServiceBody]
    unreachable: list[HostProblem] = Field(
        default_factory=list, description="on a central: hosts that did not answer (their "
        "services are missing from the list)")


_TARGET = r"^(service|pid|root|log|script|host|action):.+$"


class ResetRequest(Model):
    """Which failing target to reset: ``{"service": "web"}`` or
    ``{"target": "service:web"}`` (exactly one)."""

    service: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)] | None \
        = None
    target: Annotated[str, Field(min_length=3, max_length=1024, pattern=_TARGET,
                                 description="kind:name, e.g. service:web, script:fix"),
                      AfterValidator(_no_nul)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ResetRequest:
        if (self.service is None) == (self.target is None):
            raise ValueError('name exactly one of "service" or "target"')
        return self


class ResetBody(Model):
    """What a reset did."""

    target: str
    cleared: bool = Field(description="whether a failing mark, failure streak or backoff "
                          "was cleared")
    by: str
    detail: str


# --------------------------------------------------------------------------- health history


class IncidentAlert(Model):
    """One alert episode (one ``Alert.id``: fired once, resolved at most once) of an incident."""

    id: str
    fingerprint: str
    rule: str
    metric: str
    dimension: str
    severity: str
    summary: str
    since: datetime = Field(description="when the condition began (first breaching sample, "
                            "a service's exit)")
    fired_at: datetime | None = Field(description="when the alert fired; null: before the range")
    resolved_at: datetime | None = Field(description="null: still firing at the range's end")


class IncidentAction(Model):
    """One finished remediation attempt that belongs to an incident."""

    at: datetime
    action: str
    target: str
    source: str
    outcome: str | None
    success: bool | None = Field(description="null: refused or dry run, says nothing")


class Incident(Model):
    """Alerts and remediation of one problem on one host (see README: Health history)."""

    id: str
    host: str
    state: Literal["open", "resolved"]
    severity: str
    title: str
    start: datetime = Field(description="the first alert's since")
    end: datetime | None = Field(description="the last resolution; null while open")
    ttd_s: float | None = Field(description="time to detect: start -> the first alert fired")
    ttr_s: float | None = Field(description="time to recover: the first alert fired -> end")
    alerts: list[IncidentAlert]
    actions: list[IncidentAction]


class DurationStats(Model):
    """Mean and percentiles of a duration over the incidents that have one."""

    count: int
    mean_s: float | None
    p50_s: float | None
    p90_s: float | None


class HostUptime(Model):
    host: str
    uptime_percent: float | None = Field(description="up_s / (up_s + down_s): the machine's "
                                         "uptime; null: nothing known in the range")
    up_s: float = Field(description="watched and running, plus unwatched_s, plus the time "
                        "after a reboot before the first snapshot")
    down_s: float = Field(0.0, description="across a reboot (the boot time moved during a "
                          "gap): from the last snapshot before it to the new boot")
    unwatched_s: float = Field(0.0, description="gaps longer than gap_s without a reboot: "
                               "the machine kept running while watchkeeper (or the link to "
                               "the central) was down; counted in up_s")
    unknown_s: float = Field(description="gaps whose boot times are not known, and the end "
                             "of the range after the last snapshot when it is silent now; "
                             "left out of the percentage")
    gaps: int = Field(description="gaps longer than gap_s, a silent end included")
    reboots: int = Field(0, description="gaps across which the machine rebooted")


class ServiceUptime(Model):
    host: str
    service: str
    uptime_percent: float | None = Field(description="null: no report of this service")
    down_s: float = Field(description="time in condition down, crash_looping, failing, "
                          "restarting or unhealthy")
    known_s: float = Field(description="time its condition was known")


class SuccessRate(Model):
    """Finished remediation attempts of one action or one target (learning.py's counting)."""

    key: str
    successes: int
    failures: int
    success_rate: float | None


class HealthHistoryBody(Model):
    """Incidents, uptime, time to detect/recover and remediation success over a range."""

    start: datetime
    end: datetime
    incidents: list[Incident]
    ttd: DurationStats
    ttr: DurationStats
    hosts: list[HostUptime]
    services: list[ServiceUptime]
    by_action: list[SuccessRate]
    by_target: list[SuccessRate]
    gap_s: float = Field(description="a gap between snapshots longer than this counts as "
                         "unknown (not up)")
    truncated: bool = Field(description="the range held more events than one answer reads "
                            "(the newest are used): ask for a shorter range")


class NotifyRouteBody(Model):
    """One notification route's delivery: is it getting through (see GET /api/notify)."""

    name: str
    kind: str = Field(description="the apprise URL's scheme (json, slack, mailtos ...), or "
                      "alertmanager")
    url: str = Field(description="as GET /api/config shows it: an apprise URL is all masked, "
                     "an Alertmanager's user, password and query are")
    state: Literal["ok", "retrying", "failing", "unknown"] = Field(
        description="ok: the last try succeeded or none was made; retrying: tries fail, for "
        "less than notify.failing_after_s so far; failing: for that long or longer (the "
        "health is degraded); unknown: the agent that delivers it did not answer")
    waiting: int | None = Field(None, description="messages waiting in the outbox (apprise "
                                "routes; an Alertmanager route queues nothing)")
    oldest_waiting_s: float | None = Field(None, description="age of the oldest waiting "
                                           "(a summary counts from the oldest it replaced)")
    sent_total: int = Field(0, description="messages delivered (apprise: kept in the outbox "
                            "file, across restarts; Alertmanager: posts accepted, since this "
                            "process started)")
    failed_total: int = Field(0, description="failed tries (each retry counts)")
    dropped_total: int = Field(0, description="messages dropped past the outbox's bounds "
                               "(into one summary); Alertmanager: alerts past its set's bound")
    last_success_at: datetime | None = None
    last_error: str | None = Field(None, description="one line, secrets masked")
    last_error_at: datetime | None = None
    failing_since: datetime | None = Field(None, description="first failed try since the "
                                           "last success")
    next_retry_at: datetime | None = None
    alerts: int | None = Field(None, description="Alertmanager: alerts in its current set "
                               "(firing and recently ended)")
    firing: int | None = Field(None, description="Alertmanager: of them, firing")
    last_post_ok: bool | None = Field(None, description="Alertmanager: whether its last post "
                                      "was accepted (None: none made yet)")


class NotifyBody(Model):
    """Every configured route, in configured order."""

    failing_after_s: float = Field(description="notify.failing_after_s: a route failing this "
                                   "long makes the health degraded")
    routes: list[NotifyRouteBody]
    unavailable: list[str] = Field(default_factory=list, description="agents that did not "
                                   "answer (their routes are listed as unknown)")
