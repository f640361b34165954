"""Declared services: state, checks, restarts, and what remediation did and will do."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from watchkeeper.api.auth import require_read
from watchkeeper.api.routes.deps import RuntimeDep, ask_agent
from watchkeeper.api.schemas import ServiceBody, ServicesBody

router = APIRouter(prefix="/api/services", tags=["services"])


@router.get("", response_model=ServicesBody, dependencies=[Depends(require_read)])
async def list_services(runtime: RuntimeDep) -> ServicesBody:
    """Every declared service, in configured order: its state and pid as its manager says
    now, the last check run and its result, watchkeeper's restarts, the last action and its
    outcome, and the next allowed try and what holds it back."""
    # The remediator keeps what is known and done about each service: asked over the bus.
    found = await ask_agent(runtime, "remediator", "services", actor="api", role="viewer")
    return ServicesBody(services=[ServiceBody.model_validate(s) for s in found["services"]])
