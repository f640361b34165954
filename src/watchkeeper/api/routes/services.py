"""Declared services: state, checks, restarts, and what remediation did and will do."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import ValidationError

from watchkeeper.api.auth import require_read
from watchkeeper.api.routes.deps import (
    HostQuery,
    RuntimeDep,
    ask_agent,
    ask_each_host,
    is_central,
    known_hosts,
    target_host,
)
from watchkeeper.api.schemas import ErrorBody, ServiceBody, ServicesBody

router = APIRouter(prefix="/api/services", tags=["services"])


def _rows(found: dict[str, Any], host: str) -> list[ServiceBody]:
    # Tagged with the host that answered: a host cannot list services as another's.
    return [ServiceBody.model_validate({**s, "host": host}) for s in found["services"]]


def _checked_rows(found: dict[str, Any], host: str) -> list[ServiceBody]:
    try:
        return _rows(found, host)
    except (ValidationError, KeyError, TypeError):
        raise HTTPException(502, f"host {host} answered with something that is not a valid "
                                 "reply") from None


@router.get("", response_model=ServicesBody, dependencies=[Depends(require_read)],
            responses={404: {"model": ErrorBody, "description": "no such host reports here"},
                       503: {"model": ErrorBody, "description": "its remediator does not "
                             "answer"},
                       504: {"model": ErrorBody, "description": "no answer in time"}})
async def list_services(runtime: RuntimeDep, host: HostQuery = None) -> ServicesBody:
    """Every declared service, in configured order: its state and pid as its manager says
    now, the last check run and its result, watchkeeper's restarts, the last action and its
    outcome, and the next allowed try and what holds it back. On a central: one host's
    (``host=``), or every host's, each tagged with its host; a host that does not answer
    within a couple of seconds is listed under ``unreachable`` instead."""
    # The remediator keeps what is known and done about each service: asked over the bus.
    remote = target_host(runtime, host)
    if remote is not None or not is_central(runtime):
        found = await ask_agent(runtime, "remediator", "services", actor="api",
                                role="viewer", host=remote)
        return ServicesBody(services=_checked_rows(found, remote or runtime.host))

    async def one(name: str, timeout: float) -> list[ServiceBody]:
        return _rows(await ask_agent(runtime, "remediator", "services", actor="api",
                                     role="viewer", host=name, timeout=timeout), name)

    answers, problems = await ask_each_host(runtime, known_hosts(runtime), one)
    return ServicesBody(services=[s for _name, rows in answers for s in rows],
                        unreachable=problems)
