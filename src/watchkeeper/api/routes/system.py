"""Health, system, agents, bus counters and agent commands."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from watchkeeper import __version__
from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.agents.commands import RUNTIME
from watchkeeper.api.auth import require_operator, require_read
from watchkeeper.api.routes.deps import (
    ActorDep,
    HostQuery,
    RuntimeDep,
    acting_host,
    ask_agent,
    from_agent,
    target_host,
)
from watchkeeper.api.schemas import (
    AgentsBody,
    AgentStatus,
    BusBody,
    CommandBody,
    CommandRequest,
    DecisionBody,
    ErrorBody,
    HealthBody,
    OpenAlerts,
    RemediateRequest,
    SimulateRequest,
    SimulationBody,
    SystemBody,
    TopicCounters,
)
from watchkeeper.events import AgentHealth, Command
from watchkeeper.overall import Overall, overall
from watchkeeper.runtime import ROLE_AGENTS, Runtime
from watchkeeper.supervisor import send_command

router = APIRouter(prefix="/api", tags=["system"])


def _overall(runtime: Runtime, health: list[AgentHealth]) -> tuple[Overall, OpenAlerts]:
    """The host's status from the engine's open alerts and the agents' health."""
    analyzer = next((a for a in runtime.agents if isinstance(a, AnalyzerAgent)), None)
    chain = runtime.audit.chain_status()
    problems = [] if chain.broken_at is None else [
        f"audit log chain broken at "
        f"{'?' if chain.broken_at.id is None else f'#{chain.broken_at.id}'}: "
        f"{chain.broken_at.problem} ({chain.broken_at.message})"]
    found = overall(analyzer.engine.active_alerts() if analyzer is not None else None, health,
                    problems)
    return found, OpenAlerts(critical=found.critical, warning=found.warning,
                             acknowledged=found.acknowledged, silenced=found.silenced)


def _health(runtime: Runtime) -> HealthBody:
    health = runtime.supervisor.health()
    agents = [AgentStatus(name=h.name, state=h.state) for h in health]
    ready = bool(agents) and all(a.state == "running" for a in agents)
    found, counts = _overall(runtime, health)
    return HealthBody(status=found.status, reasons=list(found.reasons), alerts=counts,
                      live=True, ready=ready, agents=agents)


@router.get("/health", response_model=HealthBody, dependencies=[Depends(require_read)],
            responses={503: {"model": HealthBody, "description": "not every agent is running"}})
def health(runtime: RuntimeDep) -> JSONResponse:
    """The host's status (from open alerts and agents) in the body; the HTTP status is
    watchkeeper's own readiness: 200 when every agent runs, else 503. A critical alert on
    the host is not a reason to restart watchkeeper, so it does not make this a 503."""
    body = _health(runtime)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if body.ready else 503)


@router.get("/system", response_model=SystemBody, dependencies=[Depends(require_read)])
def system(request: Request, runtime: RuntimeDep) -> SystemBody:
    """Overall status, uptime, host and version."""
    snap = runtime.store.latest_snapshot(runtime.host)
    health = runtime.supervisor.health()
    running = sum(1 for h in health if h.state == "running")
    identity = snap.identity if snap is not None else None
    found, counts = _overall(runtime, health)
    return SystemBody(
        status=found.status, reasons=list(found.reasons), alerts=counts,
        version=__version__, host=runtime.host,
        uptime_s=round(time.monotonic() - request.app.state.started, 3),
        host_uptime_s=snap.uptime_s if snap is not None else None,
        os=f"{identity.os} {identity.os_release}" if identity is not None else None,
        agents_running=running, agents_total=len(health))


@router.get("/agents", response_model=AgentsBody, dependencies=[Depends(require_read)])
def agents(runtime: RuntimeDep) -> AgentsBody:
    """Every agent's health: state, last success and error, restarts, checks."""
    return AgentsBody(agents=runtime.supervisor.health())


@router.get("/bus", response_model=BusBody, dependencies=[Depends(require_read)])
def bus(runtime: RuntimeDep) -> BusBody:
    """Message counters per topic."""
    return BusBody(topics=[TopicCounters(topic=t.topic, published=t.published,
                                         delivered=t.delivered, dropped=t.dropped,
                                         queue_depth=t.queue_depth)
                           for t in runtime.bus.stats()])


@router.post("/command", response_model=CommandBody, dependencies=[Depends(require_operator)],
             responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody},
                        422: {"model": ErrorBody}, 503: {"model": ErrorBody},
                        504: {"model": ErrorBody}})
async def command(body: CommandRequest, runtime: RuntimeDep, by: ActorDep,
                  host: HostQuery = None) -> CommandBody:
    """Agent commands (health_check, pause, resume, restart) to one agent or all, with their
    replies; or ``remediate``: one action, decided by the remediation policy like any other;
    or ``simulate``: the built-in demo service, crashed (see `watchkeeper simulate`). On a
    central, ``host=`` sends it to that host's agents (remediate and simulate need it)."""
    if isinstance(body, RemediateRequest):
        return CommandBody(decision=await _remediate(body, runtime, by,
                                                     acting_host(runtime, host)))
    if isinstance(body, SimulateRequest):
        return CommandBody(simulation=await _simulate(body, runtime, by,
                                                      target_host(runtime, host)))
    remote = target_host(runtime, host)
    # A fleet host runs the host agent's set (watchkeeper agent); this one, its own.
    names = list(ROLE_AGENTS["agent"] or ()) if remote else [a.name for a in runtime.agents]
    if body.target != "all" and body.target not in names:
        raise HTTPException(404, f"no agent {body.target!r}; agents: {', '.join(names)}")
    if remote is None:
        replies = await runtime.command(Command(host=runtime.host, command=body.command,
                                                target=body.target, actor=by))
    else:
        replies = await send_command(runtime.bus, remote, names, Command(
            host=remote, command=body.command, target=body.target, actor=by))
    return CommandBody(replies=replies)


async def _remediate(body: RemediateRequest, runtime: Runtime, by: str,
                     host: str | None) -> DecisionBody:
    # The remediator checks the action and its parameters, and its policy decides: the
    # host's own policy, whoever asks (a central cannot make a host run what it refuses).
    done = await ask_agent(runtime, "remediator", "remediate", {
        "action": body.action, "params": body.params, "dry_run": body.dry_run,
        "reason": body.reason}, actor=by, host=host)
    return from_agent(DecisionBody, done, host)


async def _simulate(body: SimulateRequest, runtime: Runtime, by: str,
                    host: str | None) -> SimulationBody:
    from watchkeeper.simulate.demo import READY_TIMEOUT_S

    # The demo service must come up healthy before it is crashed: that may take a while.
    done = await ask_agent(runtime, RUNTIME, "simulate", {
        "scenario": body.scenario, "duration_s": body.duration_s}, actor=by,
        extra_timeout=READY_TIMEOUT_S, host=host)
    return SimulationBody.model_validate(done)
