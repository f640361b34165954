"""Shared dependencies: the runtime and the agents routes talk to."""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Depends, Header, HTTPException, Request

from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.agents.base import BaseAgent
from watchkeeper.agents.remediator import RemediatorAgent
from watchkeeper.config import ACTOR_PATTERN
from watchkeeper.runtime import Runtime

A = TypeVar("A", bound=BaseAgent)

#: Who the audit log and the alert history record as having acted when a request names no one.
DEFAULT_ACTOR = "api"

#: Appended to a name the shared operator token declares when named operators exist.
SHARED_MARK = "(shared token)"


def get_runtime(request: Request) -> Runtime:
    """The runtime this app serves."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def _agent(runtime: Runtime, kind: type[A], name: str) -> A:
    for agent in runtime.agents:
        if isinstance(agent, kind):
            return agent
    raise HTTPException(503, f"the {name} agent is not running in this process")


def get_analyzer(request: Request) -> AnalyzerAgent:
    """The analyzer agent (503 when this process runs without one)."""
    return _agent(get_runtime(request), AnalyzerAgent, "analyzer")


def remediator_of(runtime: Runtime) -> RemediatorAgent:
    """The runtime's remediator agent (503 when this process runs without one)."""
    return _agent(runtime, RemediatorAgent, "remediator")


def get_remediator(request: Request) -> RemediatorAgent:
    """The remediator agent, as a route dependency."""
    return remediator_of(get_runtime(request))


def get_actor(request: Request, x_watchkeeper_user: Annotated[str | None, Header(
        pattern=ACTOR_PATTERN, description="who acts, as the audit log should record it: "
        "with a named operator token, that name (the header may only repeat it); with the "
        "shared operator token, self-declared, like Alertmanager's createdBy (default: api); "
        "when api.operators is set, it may not be a named operator's name and is recorded "
        "as 'name (shared token)'")]
        = None) -> str:
    """The name a mutating request acts under (after require_operator authenticated it)."""
    named: str | None = getattr(request.state, "operator", None)
    given = (x_watchkeeper_user or "").strip()
    if named is not None:
        if given and given != named:
            raise HTTPException(403, f"this token is {named}'s: it cannot act as {given}")
        return named
    operators = request.app.state.tokens.named
    if not operators:
        return given or DEFAULT_ACTOR
    # The shared token, with named operators configured: a name is only a claim. It may
    # not be a named operator's (compared loosely, so "Alice " or "ALICE" cannot pass for
    # alice), and the audit log says it was self-declared.
    claimed = _loose(given)
    owner = next((n for n in operators if _loose(n) == claimed), None) if given else None
    if owner is not None:
        raise HTTPException(403, f"{owner} has a named operator token (api.operators): act "
                                 f"as {owner} with {owner}'s own token; the shared operator "
                                 "token cannot claim a named operator's name")
    return f"{given or DEFAULT_ACTOR} {SHARED_MARK}"


def _loose(name: str) -> str:
    return " ".join(name.casefold().split())


ActorDep = Annotated[str, Depends(get_actor)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
AnalyzerDep = Annotated[AnalyzerAgent, Depends(get_analyzer)]
RemediatorDep = Annotated[RemediatorAgent, Depends(get_remediator)]
