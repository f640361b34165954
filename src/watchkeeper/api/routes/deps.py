"""Shared dependencies: the runtime, who acts, and the one way to ask an agent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request

from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.agents.commands import CommandFailed, ask
from watchkeeper.config import ACTOR_PATTERN
from watchkeeper.events import CommandRole, ReplyCode
from watchkeeper.runtime import Runtime

#: Who the audit log and the alert history record as having acted when a request names no one.
DEFAULT_ACTOR = "api"

#: Appended to a name the shared operator token declares when named operators exist.
SHARED_MARK = "(shared token)"


def get_runtime(request: Request) -> Runtime:
    """The runtime this app serves."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_analyzer(request: Request) -> AnalyzerAgent:
    """The analyzer agent of this process, for the reads that still look at it directly
    (503 when this process runs without one). Never for a change: those go by ask_agent."""
    for agent in get_runtime(request).agents:
        if isinstance(agent, AnalyzerAgent):
            return agent
    raise HTTPException(503, "the analyzer agent is not running in this process")


#: The HTTP status each refusal code of a command's reply is answered with.
STATUS: dict[ReplyCode, int] = {
    "invalid": 422, "unknown_command": 422, "forbidden": 403, "not_found": 404,
    "conflict": 409, "unavailable": 503, "timeout": 503, "error": 500}


async def ask_agent(runtime: Runtime, agent: str, verb: str,
                    args: Mapping[str, Any] | None = None, *, actor: str,
                    role: CommandRole = "operator", extra_timeout: float = 0.0,
                    host: str | None = None) -> dict[str, Any]:
    """Ask ``agent`` of ``host`` (default: this one) over the bus (command.<host>.<agent>)
    and return its result; a refusal or no answer within api.command_timeout_s is the HTTP
    error its code maps to (STATUS), with the agent's message or problems as the detail."""
    timeout = runtime.config.current.api.command_timeout_s + extra_timeout
    try:
        return await ask(runtime.bus, host or runtime.host, agent, verb, args, actor=actor,
                         role=role, timeout=timeout,
                         local=host is None or host == runtime.host)
    except CommandFailed as exc:
        raise HTTPException(STATUS.get(exc.code, 500),
                            exc.detail if exc.detail is not None else exc.message) from None


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
#: A direct read of the analyzer (e.g. the hosts it follows); changes go over the bus.
AnalyzerDep = Annotated[AnalyzerAgent, Depends(get_analyzer)]
