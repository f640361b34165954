"""Health, system, agents, bus counters and agent commands."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from watchkeeper import __version__
from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.api.auth import require_operator, require_read
from watchkeeper.api.routes.deps import ActorDep, RuntimeDep, remediator_of
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
from watchkeeper.remediation.actions.stop_process import pin
from watchkeeper.remediation.policy import ActionRequest
from watchkeeper.remediation.registry import (
    REGISTRY,
    ActionRefused,
    StopProcessParams,
    parse_params,
)
from watchkeeper.runtime import Runtime

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
                        503: {"model": ErrorBody}})
async def command(body: CommandRequest, runtime: RuntimeDep, by: ActorDep) -> CommandBody:
    """Agent commands (health_check, pause, resume, restart) to one agent or all, with their
    replies; or ``remediate``: one action, decided by the remediation policy like any other;
    or ``simulate``: the built-in demo service, crashed (see `watchkeeper simulate`)."""
    if isinstance(body, RemediateRequest):
        return CommandBody(decision=await _remediate(body, runtime, by))
    if isinstance(body, SimulateRequest):
        return CommandBody(simulation=await _simulate(body, runtime, by))
    names = [a.name for a in runtime.agents]
    if body.target != "all" and body.target not in names:
        raise HTTPException(404, f"no agent {body.target!r}; agents: {', '.join(names)}")
    replies = await runtime.command(Command(host=runtime.host, command=body.command,
                                            target=body.target))
    return CommandBody(replies=replies)


async def _remediate(body: RemediateRequest, runtime: Runtime, by: str) -> DecisionBody:
    if body.action not in REGISTRY:
        raise HTTPException(422, f"unknown action {body.action!r}; known: "
                                 f"{', '.join(sorted(REGISTRY))}")
    params = body.params
    remediator = remediator_of(runtime)
    try:
        parsed = parse_params(body.action, params)
        if isinstance(parsed, StopProcessParams):
            # Checked when asked, not after an approval: the live process, by its start time,
            # and everything the process guard holds it against (a thread, protected, another
            # user's, not allowed), so that no approval is asked for what can never run.
            pinned = await asyncio.to_thread(pin, remediator.action_context(), parsed)
            params = {**params, "create_time": pinned.create_time}
    except ActionRefused as exc:  # the caller's mistake, not the policy's verdict
        raise HTTPException(422, str(exc)) from None
    decision = await remediator.submit(ActionRequest(
        action=body.action, params=params, host=runtime.host, source="operator",
        reasoning=f"{by}: {body.reason or 'asked for through the API'}", dry_run=body.dry_run))
    approval = next((a.id for a in runtime.audit.pending() if a.decision.id == decision.id),
                    None)
    return DecisionBody(decision_id=decision.id, action=body.action,
                        target=str(decision.target) if decision.target else None,
                        verdict=decision.verdict, check=decision.check, why=decision.why,
                        preview=decision.preview, approval_id=approval)


async def _simulate(body: SimulateRequest, runtime: Runtime, by: str) -> SimulationBody:
    from watchkeeper.simulate.demo import DemoError

    logging.getLogger(__name__).info("simulate %s asked by %s", body.scenario, by)
    try:
        run = await runtime.demos.start(body.scenario, body.duration_s)
    except DemoError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return SimulationBody(scenario=run.scenario, service=run.service, port=run.port,
                          pid=run.pid, started_at=run.started_at, crashed_at=run.crashed_at,
                          heals_at=run.heals_at, until=run.until)
