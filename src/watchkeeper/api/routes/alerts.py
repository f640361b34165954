"""Open alerts, acknowledgement and silences."""

from __future__ import annotations

from datetime import timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from watchkeeper.api.auth import require_operator, require_read
from watchkeeper.api.routes.deps import ActorDep, RuntimeDep, ask_agent
from watchkeeper.api.schemas import (
    AlertsBody,
    Done,
    ErrorBody,
    SilenceBody,
    SilenceRequest,
    SilencesBody,
    Text,
)
from watchkeeper.events import Alert, AlertState, Severity

router = APIRouter(prefix="/api/alerts", tags=["alerts"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}

#: Every route here asks the analyzer over the bus (command.<host>.analyzer).
ANALYZER = "analyzer"


@router.get("", response_model=AlertsBody, dependencies=[Depends(require_read)])
async def list_alerts(runtime: RuntimeDep,
                      state: Annotated[AlertState | None, Query()] = None,
                      severity: Annotated[Severity | None, Query()] = None,
                      host: Annotated[Text | None, Query(max_length=253, description=(
                          "only this host's alerts (a central follows many)"))] = None
                      ) -> AlertsBody:
    """Open alerts (firing or acknowledged), newest first, optionally filtered."""
    found = await ask_agent(runtime, ANALYZER, "alerts", actor="api", role="viewer")
    alerts = [a for a in (Alert.model_validate(raw) for raw in found["alerts"])
              if (state is None or a.state == state)
              and (severity is None or a.severity == severity)
              and (host is None or a.host == host)]
    return AlertsBody(alerts=sorted(alerts, key=lambda a: a.at, reverse=True))


@router.post("/{fingerprint}/ack", response_model=Alert, responses=_NOT_FOUND,
             dependencies=[Depends(require_operator)])
async def ack(fingerprint: Annotated[Text, Path(max_length=200)],
              runtime: RuntimeDep, by: ActorDep) -> Alert:
    """Acknowledge an open alert: it stays open but stops escalating and notifying."""
    done = await ask_agent(runtime, ANALYZER, "ack", {"fingerprint": fingerprint}, actor=by)
    return Alert.model_validate(done["alert"])


@router.get("/silences", response_model=SilencesBody, dependencies=[Depends(require_read)])
async def list_silences(runtime: RuntimeDep) -> SilencesBody:
    """Silences in force."""
    found = await ask_agent(runtime, ANALYZER, "silences", actor="api", role="viewer")
    return SilencesBody(silences=[SilenceBody.model_validate(s) for s in found["silences"]])


@router.post("/silences", response_model=SilenceBody, status_code=201,
             dependencies=[Depends(require_operator)])
async def add_silence(body: SilenceRequest, runtime: RuntimeDep, by: ActorDep) -> SilenceBody:
    """Silence alerts whose fields or labels match every glob, until ``until``."""
    until = body.until if body.until.tzinfo else body.until.replace(tzinfo=timezone.utc)
    done = await ask_agent(runtime, ANALYZER, "silence", {
        "matchers": dict(body.matchers), "until": until.isoformat(), "comment": body.comment},
        actor=by)
    return SilenceBody.model_validate(done["silence"])


@router.delete("/silences/{silence_id}", response_model=Done, responses=_NOT_FOUND,
               dependencies=[Depends(require_operator)])
async def delete_silence(silence_id: Annotated[Text, Path(max_length=200)],
                         runtime: RuntimeDep, by: ActorDep) -> Done:
    """End a silence early."""
    done = await ask_agent(runtime, ANALYZER, "unsilence", {"silence_id": silence_id},
                           actor=by)
    return Done(detail=str(done.get("message", f"silence {silence_id} removed")))
