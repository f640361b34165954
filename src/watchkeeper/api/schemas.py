"""Public request and response models of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from watchkeeper.events import AgentHealth, AgentState, Alert, CommandName, CommandReply
from watchkeeper.remediation.audit import Approval, AuditEntry


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


class HealthBody(Model):
    status: Literal["ok", "degraded"]
    live: bool
    ready: bool
    agents: list[AgentStatus]


class SystemBody(Model):
    status: Literal["ok", "degraded"]
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


class ActionsBody(Model):
    entries: list[AuditEntry]
    pending: list[Approval]


class RejectRequest(Model):
    reason: Text = ""


class ApproveBody(Model):
    approval_id: int
    verdict: str
    why: str


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


class CommandRequest(Model):
    command: CommandName
    target: Text = "all"


class CommandBody(Model):
    replies: list[CommandReply]


class Done(Model):
    ok: bool = True
    detail: str = ""
