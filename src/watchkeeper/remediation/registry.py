"""The registry of remediation actions: names, risk and validated parameters.

Everything that may be suggested (by a rule or an LLM) or run must be named here with
parameters that validate against the action's model; anything else is refused. Execution,
dry-run and verification of each action live in remediation/actions/ (one module each).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from watchkeeper.events import SuggestedAction

Risk = Literal["none", "low", "medium", "high"]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$"


class Params(BaseModel):
    """Base for action parameters: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ServiceParams(Params):
    service: str = Field(pattern=_NAME, description="a service declared in the configuration")


class StopProcessParams(Params):
    pid: int = Field(gt=1, description="never pid 0 or 1")
    create_time: float | None = Field(
        None, description="process start time; a reused pid is never hit")
    grace_s: float = Field(10.0, ge=0, le=300, description="SIGTERM, then SIGKILL after this")


class CleanDiskParams(Params):
    root: str = Field(min_length=1, description="a configured clean-up root")
    patterns: tuple[str, ...] = ("*.tmp", "*.log.[0-9]*", "*.gz")
    min_age_hours: float = Field(24.0, ge=0)
    max_bytes: int | None = Field(None, gt=0, description="stop after freeing this much")


class RotateLogParams(Params):
    path: str = Field(min_length=1, description="a configured log file")


class RunScriptParams(Params):
    name: str = Field(pattern=_NAME, description="a script declared in the configuration")


class NotifyParams(Params):
    message: str = Field("", max_length=2000)


@dataclass(frozen=True)
class ActionSpec:
    """What an action is: its name, risk, parameter model and a one-line description."""

    name: str
    risk: Risk
    params: type[Params]
    description: str


REGISTRY: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec("restart_service", "medium", ServiceParams,
                   "restart a declared service and check it is healthy again"),
        ActionSpec("start_service", "low", ServiceParams, "start a declared service that is down"),
        ActionSpec("stop_process", "high", StopProcessParams,
                   "stop a runaway process (SIGTERM, then SIGKILL after a grace period)"),
        ActionSpec("clean_disk", "medium", CleanDiskParams,
                   "delete old files matching patterns under a configured root"),
        ActionSpec("rotate_log", "low", RotateLogParams,
                   "truncate or rotate a configured log file"),
        ActionSpec("run_script", "high", RunScriptParams, "run a command declared in the config"),
        ActionSpec("notify_only", "none", NotifyParams, "tell a human; change nothing"),
    )
}


class ActionRefused(ValueError):
    """A suggested action is not in the registry or its parameters do not validate."""


def validate_action(action: str, params: dict[str, Any] | None, *, reason: str = "",
                    source: Literal["rule", "llm"] = "rule") -> SuggestedAction:
    """Return a SuggestedAction whose params passed the action's model, or raise ActionRefused."""
    spec = REGISTRY.get(action)
    if spec is None:
        raise ActionRefused(f"unknown action {action!r}; known: {', '.join(sorted(REGISTRY))}")
    try:
        model = spec.params.model_validate(params or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        raise ActionRefused(f"invalid parameters for {action}: {problems}") from None
    return SuggestedAction(action=action, params=model.model_dump(mode="json"), reason=reason,
                           source=source)
