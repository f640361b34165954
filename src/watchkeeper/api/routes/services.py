"""Declared services: state, checks, restarts, and what remediation did and will do."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends

from watchkeeper.api.auth import require_read
from watchkeeper.api.routes.deps import RemediatorDep, RuntimeDep
from watchkeeper.api.schemas import ServiceBody, ServicesBody

router = APIRouter(prefix="/api/services", tags=["services"])


@router.get("", response_model=ServicesBody, dependencies=[Depends(require_read)])
async def list_services(runtime: RuntimeDep, remediator: RemediatorDep) -> ServicesBody:
    """Every declared service, in configured order: its state and pid as its manager says
    now, the last check run and its result, watchkeeper's restarts, the last action and its
    outcome, and the next allowed try and what holds it back."""
    out = []
    book = remediator.book
    for report in book.reports():
        if report.service not in runtime.services:
            continue  # removed by a reload (or a simulation's end): no longer declared
        # The live view of the process (no checks run here: those are the sensor's).
        status = await runtime.services.status(report.service, checks=False)
        uptime = None
        if status.state == "running" and status.create_time is not None:
            uptime = round(max(0.0, time.time() - status.create_time), 1)
        checked_at, checked_ok, checked = book.checked(report.service)
        out.append(ServiceBody(
            name=report.service, manager=report.manager, condition=report.condition,
            state=status.state if status.state != "unknown" else report.state,
            healthy=report.healthy, pid=status.pid if status.pid is not None else report.pid,
            uptime_s=uptime, detail=report.detail, since=report.since,
            restarts=report.restarts, last_check_at=checked_at, last_check_ok=checked_ok,
            last_check=checked, last_action=report.last_action,
            last_action_at=report.last_action_at, last_outcome=report.last_outcome,
            last_message=report.last_message, refused=report.refused,
            next_try_at=report.next_try_at, remediation=report.remediation))
    return ServicesBody(services=out)
