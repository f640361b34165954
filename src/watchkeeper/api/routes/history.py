"""The health history: incidents, uptime, time to detect/recover, remediation success."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query

from watchkeeper.api.auth import require_read
from watchkeeper.api.routes.deps import RuntimeDep
from watchkeeper.api.schemas import ErrorBody, HealthHistoryBody
from watchkeeper.health_history import RangeError, health_history, resolve_range

router = APIRouter(tags=["history"])

_WHEN = ("ISO 8601 (naive is UTC), 'now', or relative to now: -30m, -24h, -7d (s m h d w)")


@router.get("/api/history", response_model=HealthHistoryBody,
            dependencies=[Depends(require_read)],
            responses={422: {"model": ErrorBody, "description": "a time that cannot be read, "
                             "from not before to, or a range over 366 days"}})
def history(
    runtime: RuntimeDep,
    start: Annotated[str | None, Query(alias="from", max_length=64,
                                       description=f"default: 24 h before to; {_WHEN}")] = None,
    end: Annotated[str | None, Query(alias="to", max_length=64,
                                     description=f"default: now; {_WHEN}")] = None,
) -> HealthHistoryBody:
    """Incidents (alerts and remediation of one problem) with time to detect and to
    recover, uptime per host and per declared service, and remediation success rates per
    action and target, over [from, to]. Computed from the stored events and snapshots."""
    now = datetime.now(timezone.utc)
    try:
        frm, to = resolve_range(start, end, now)
        return health_history(runtime.store, frm, to, now=now,
                              interval_s=runtime.config.current.agents.check_interval)
    except RangeError as exc:
        raise HTTPException(422, str(exc)) from None
    except (OverflowError, ValueError) as exc:  # a date outside what a timestamp holds
        raise HTTPException(422, f"invalid range: {exc}") from None
