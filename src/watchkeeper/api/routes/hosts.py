"""The hosts this server follows: one on a single host, every reporting host on a central."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from watchkeeper.analysis.fleet import HostState
from watchkeeper.api.auth import require_read
from watchkeeper.api.routes.deps import AnalyzerDep, RuntimeDep
from watchkeeper.api.routes.metrics import wire_counters
from watchkeeper.api.schemas import HostBody, HostsBody

router = APIRouter(prefix="/api/hosts", tags=["hosts"])

Health = Literal["ok", "warning", "critical", "down", "unknown"]


def _health(h: HostState) -> Health:
    if h.down:
        return "down"
    if h.last_snapshot_at is None:
        return "unknown"
    if h.worst in ("warning", "critical"):
        return h.worst  # type: ignore[return-value]
    return "ok"


@router.get("", response_model=HostsBody, dependencies=[Depends(require_read)])
def list_hosts(analyzer: AnalyzerDep, runtime: RuntimeDep,
               health: Annotated[Health | None, Query(description="only hosts in this state")]
               = None) -> HostsBody:
    """Every host with its health (worst open alert, or down), by name; and what this
    server refused from the bus, and the duplicate snapshots it dropped."""
    rows = []
    for h in analyzer.host_states():
        state = _health(h)
        if health is not None and state != health:
            continue
        seen = None if h.last_seen is None else datetime.fromtimestamp(h.last_seen,
                                                                       timezone.utc)
        rows.append(HostBody(host=h.host, health=state, last_seen=seen,
                             last_snapshot_at=h.last_snapshot_at, open_alerts=h.open_alerts))
    counts = wire_counters(runtime)
    return HostsBody(fleet=analyzer.fleet, hosts=rows, rejected=counts.rejected,
                     duplicate_snapshots=counts.duplicate_snapshots)
