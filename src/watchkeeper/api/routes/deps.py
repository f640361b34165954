"""Shared dependencies: the runtime, who acts, and the one way to ask an agent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, HTTPException, Query, Request
from pydantic import BaseModel, ValidationError

from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.agents.commands import CommandFailed, ask
from watchkeeper.aio import wait_for
from watchkeeper.api.schemas import HostProblem, Text
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
                    host: str | None = None, timeout: float | None = None
                    ) -> dict[str, Any]:
    """Ask ``agent`` of ``host`` (default: this one) over the bus (command.<host>.<agent>)
    and return its result; a refusal or no answer within api.command_timeout_s is the HTTP
    error its code maps to (STATUS), with the agent's message or problems as the detail."""
    if timeout is None:
        timeout = runtime.config.current.api.command_timeout_s
    timeout += extra_timeout
    local = host is None or host == runtime.host
    try:
        return await ask(runtime.bus, host or runtime.host, agent, verb, args, actor=actor,
                         role=role, timeout=timeout, local=local)
    except CommandFailed as exc:
        if not local and not exc.answered:
            # A remote host that does not answer: say which, and that nothing was done.
            raise HTTPException(504 if exc.code == "timeout" else 503,
                                f"host {host} did not answer ({exc.message}); nothing was "
                                "changed. GET /api/hosts shows whether it is down") from None
        raise HTTPException(STATUS.get(exc.code, 500),
                            exc.detail if exc.detail is not None else exc.message) from None


M = TypeVar("M", bound=BaseModel)


def from_agent(model: type[M], data: Any, host: str | None) -> M:
    """An agent's result read as ``model``: a remote host's answer is hostile until checked,
    so one that does not fit is a 502 naming the host, never a 500."""
    try:
        return model.model_validate(data)
    except (ValidationError, KeyError, TypeError):
        raise HTTPException(502, f"host {host or 'here'} answered with something that is "
                                 "not a valid reply") from None


#: ``host=`` on the routes that read or act: which host (a central follows many).
HostQuery = Annotated[Text | None, Query(
    max_length=253, description="which host (a fleet's central follows many); default: this "
                                "one")]


def fleet_analyzer(runtime: Runtime) -> AnalyzerAgent | None:
    """The analyzer of a central (serve --fleet), which follows every host; None otherwise."""
    return next((a for a in runtime.agents if isinstance(a, AnalyzerAgent) and a.fleet), None)


def is_central(runtime: Runtime) -> bool:
    """Whether this server is a fleet's central (its hosts' agents act, not its own)."""
    return runtime.role == "central" or fleet_analyzer(runtime) is not None


def known_hosts(runtime: Runtime) -> list[str]:
    """The hosts a central follows (by name); this host alone otherwise."""
    analyzer = fleet_analyzer(runtime)
    if analyzer is None:
        return [runtime.host]
    return [h.host for h in analyzer.host_states()]


def target_host(runtime: Runtime, host: str | None) -> str | None:
    """``host`` if this server follows it (None: this host itself); 404 otherwise."""
    if host is None or host == runtime.host:
        return None
    analyzer = fleet_analyzer(runtime)
    if analyzer is not None and any(h.host == host for h in analyzer.host_states()):
        return host
    raise HTTPException(404, f"no host {host!r} reports to this server; GET /api/hosts "
                             "lists those that do")


def acting_host(runtime: Runtime, host: str | None) -> str | None:
    """The host whose remediator an action goes to: ``host`` (checked), or this one; a
    central heals nothing itself, so there the host must be named (422)."""
    found = target_host(runtime, host)
    if found is None and is_central(runtime):
        raise HTTPException(422, "this server is a fleet's central: name the host to act on "
                                 "(host=NAME; GET /api/hosts lists them)")
    return found


T = TypeVar("T")

#: Hosts asked at once when a central lists something of every host.
FANOUT = 32


async def ask_each_host(runtime: Runtime, hosts: list[str],
                        ask_one: Callable[[str, float], Awaitable[T]], *,
                        budget_s: float | None = None
                        ) -> tuple[list[tuple[str, T]], list[HostProblem]]:
    """``ask_one(host, timeout)`` for every host, FANOUT at a time, each bounded by
    FLEET_LIST_TIMEOUT_S and all by ``budget_s`` (FLEET_LIST_BUDGET_S): the answers by host,
    and the hosts that did not answer (a dead host costs its timeout, not the whole list)."""
    timeout = min(runtime.config.current.api.command_timeout_s, FLEET_LIST_TIMEOUT_S)
    gate = asyncio.Semaphore(FANOUT)
    answers: list[tuple[str, T]] = []
    problems: list[HostProblem] = []
    loop = asyncio.get_running_loop()
    # Many silent hosts must not make one list take minutes: past the budget, the hosts not
    # yet asked are listed as such (ask one alone with host=).
    budget = FLEET_LIST_BUDGET_S if budget_s is None else budget_s
    deadline = loop.time() + budget

    async def one(host: str) -> None:
        async with gate:
            if loop.time() >= deadline:
                problems.append(HostProblem(host=host, status=504, detail=(
                    f"host {host} was not asked: the list took {budget:g}s "
                    "already; ask it alone with host=")))
                return
            try:
                answers.append((host, await wait_for(ask_one(host, timeout),
                                                     timeout + 0.5)))
            except HTTPException as exc:
                problems.append(HostProblem(host=host, status=exc.status_code,
                                            detail=str(exc.detail)))
            except asyncio.TimeoutError:
                problems.append(HostProblem(host=host, status=504, detail=(
                    f"host {host} did not answer within {timeout:g}s")))
            except (ValidationError, KeyError, TypeError):
                # A host's answer is hostile until checked: one that does not parse is that
                # host's problem, not the whole list's.
                problems.append(HostProblem(host=host, status=502, detail=(
                    f"host {host} answered with something that is not a valid reply")))

    await asyncio.gather(*(one(h) for h in hosts))
    order = {h: i for i, h in enumerate(hosts)}
    answers.sort(key=lambda pair: order[pair[0]])
    problems.sort(key=lambda p: order[p.host])
    return answers, problems


#: Seconds a central waits for each host when it lists every host's services or approvals
#: (at most api.command_timeout_s): a host that does not answer in time is listed under
#: ``unreachable`` instead of holding the list back.
FLEET_LIST_TIMEOUT_S = 2.0
#: Seconds one such list may take in all (hosts are asked FANOUT at a time).
FLEET_LIST_BUDGET_S = 10.0


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
