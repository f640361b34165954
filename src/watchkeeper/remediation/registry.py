"""The registry of remediation actions: names, risk and validated parameters.

Everything that may be suggested (by a rule or an LLM) or run must be named here with
parameters that validate against the action's model; anything else is refused. Execution,
dry-run and verification of each action live in remediation/actions/ (one module each).
"""

from __future__ import annotations

from collections.abc import Mapping
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
    """Parameters may only narrow what the configured root allows, never widen it."""

    root: str = Field(min_length=1, description="a configured clean-up root, or a directory in one")
    patterns: tuple[str, ...] | None = Field(
        None, description="only files matching these as well as the root's patterns "
                          "(default: the root's)")
    min_age_hours: float | None = Field(
        None, ge=0, description="at least this old (default and minimum: the root's)")
    max_bytes: int | None = Field(
        None, gt=0, description="free at most this much (default and maximum: the root's)")


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
    #: "module:Class" of the executor (see ``remediation.actions.get_action``), imported only
    #: when an action runs so that the registry stays cheap for the LLM prompt and the config.
    #: None: no executor on this host yet.
    executor: str | None = None


_ACTIONS = "watchkeeper.remediation.actions"


REGISTRY: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec("restart_service", "medium", ServiceParams,
                   "restart a declared service and check it is healthy again",
                   f"{_ACTIONS}.service:RestartService"),
        ActionSpec("start_service", "low", ServiceParams, "start a declared service that is down",
                   f"{_ACTIONS}.service:StartService"),
        ActionSpec("stop_process", "high", StopProcessParams,
                   "stop a runaway process (SIGTERM, then SIGKILL after a grace period)",
                   f"{_ACTIONS}.stop_process:StopProcess"),
        ActionSpec("clean_disk", "medium", CleanDiskParams,
                   "delete old files matching patterns under a configured root",
                   f"{_ACTIONS}.clean_disk:CleanDisk"),
        ActionSpec("rotate_log", "low", RotateLogParams,
                   "truncate or rotate a configured log file", f"{_ACTIONS}.rotate_log:RotateLog"),
        ActionSpec("run_script", "high", RunScriptParams, "run a command declared in the config",
                   f"{_ACTIONS}.run_script:RunScript"),
        ActionSpec("notify_only", "none", NotifyParams, "tell a human; change nothing",
                   f"{_ACTIONS}.notify_only:NotifyOnly"),
    )
}


class ActionRefused(ValueError):
    """A suggested action is not in the registry or its parameters do not validate."""


def get_spec(action: str) -> ActionSpec:
    """The registry entry of ``action``, or raise ActionRefused naming the known ones."""
    spec = REGISTRY.get(action)
    if spec is None:
        raise ActionRefused(f"unknown action {action!r}; known: {', '.join(sorted(REGISTRY))}")
    return spec


def parse_params(action: str, params: Mapping[str, Any] | None) -> Params:
    """``params`` validated against the action's model, or raise ActionRefused saying why."""
    spec = get_spec(action)
    try:
        return spec.params.model_validate(dict(params or {}))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        raise ActionRefused(f"invalid parameters for {action}: {problems}") from None


def validate_action(action: str, params: dict[str, Any] | None, *, reason: str = "",
                    source: Literal["rule", "llm"] = "rule") -> SuggestedAction:
    """Return a SuggestedAction whose params passed the action's model, or raise ActionRefused."""
    model = parse_params(action, params)
    return SuggestedAction(action=action, params=model.model_dump(mode="json"), reason=reason,
                           source=source)
