"""Executors of the registry's actions: preview (dry-run), execute, verify; one module each.

``get_action(name)`` returns the executor a registry entry names; every executor follows the
``Action`` protocol and never raises from ``execute``, it returns an ``ActionResult``.
"""

from __future__ import annotations

import functools
import importlib

from watchkeeper.remediation.argv import FIXED_PATH, resolve_argv
from watchkeeper.remediation.registry import ActionRefused, get_spec

from .base import (
    Action,
    ActionContext,
    ActionResult,
    BaseAction,
    Check,
    Done,
    Outcome,
    Plan,
    Preview,
    Refused,
    Verification,
)
from .runner import (
    FIXED_ENV,
    CommandNotFound,
    CommandOutput,
    CommandRunner,
    SubprocessRunner,
)

__all__ = [
    "FIXED_ENV",
    "FIXED_PATH",
    "Action",
    "ActionContext",
    "ActionRefused",
    "ActionResult",
    "BaseAction",
    "Check",
    "CommandNotFound",
    "CommandOutput",
    "CommandRunner",
    "Done",
    "Outcome",
    "Plan",
    "Preview",
    "Refused",
    "SubprocessRunner",
    "Verification",
    "get_action",
    "resolve_argv",
]


@functools.cache
def get_action(name: str) -> Action:
    """The executor of registry action ``name``; raise ActionRefused if it has none here."""
    spec = get_spec(name)
    if spec.executor is None:
        raise ActionRefused(f"action {name!r} has no executor on this host")
    module, _, attr = spec.executor.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    action: Action = cls()
    if action.spec is not spec:
        raise ActionRefused(f"executor {spec.executor} does not implement {name!r}")
    return action
