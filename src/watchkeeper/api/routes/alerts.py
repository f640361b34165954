"""Open alerts, acknowledgement and silences."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from watchkeeper.analysis.alerts import Silence
from watchkeeper.api.auth import require_operator, require_read
from watchkeeper.api.routes.deps import ActorDep, AnalyzerDep
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


def _silence_body(s: Silence) -> SilenceBody:
    return SilenceBody(id=s.id, matchers=dict(s.matchers), until=s.until, by=s.by,
                       comment=s.comment)


@router.get("", response_model=AlertsBody, dependencies=[Depends(require_read)])
def list_alerts(analyzer: AnalyzerDep,
                state: Annotated[AlertState | None, Query()] = None,
                severity: Annotated[Severity | None, Query()] = None,
                host: Annotated[Text | None, Query(max_length=253, description=(
                    "only this host's alerts (a central follows many)"))] = None
                ) -> AlertsBody:
    """Open alerts (firing or acknowledged), newest first, optionally filtered."""
    alerts = [a for a in analyzer.engine.active_alerts()
              if (state is None or a.state == state)
              and (severity is None or a.severity == severity)
              and (host is None or a.host == host)]
    return AlertsBody(alerts=sorted(alerts, key=lambda a: a.at, reverse=True))


@router.post("/{fingerprint}/ack", response_model=Alert, responses=_NOT_FOUND,
             dependencies=[Depends(require_operator)])
async def ack(fingerprint: Annotated[Text, Path(max_length=200)],
              analyzer: AnalyzerDep, by: ActorDep) -> Alert:
    """Acknowledge an open alert: it stays open but stops escalating and notifying."""
    alert = await analyzer.ack(fingerprint, by)
    if alert is None:
        raise HTTPException(404, f"no open alert with fingerprint {fingerprint!r}")
    return alert


@router.get("/silences", response_model=SilencesBody, dependencies=[Depends(require_read)])
def list_silences(analyzer: AnalyzerDep) -> SilencesBody:
    """Silences in force."""
    return SilencesBody(silences=[_silence_body(s) for s in analyzer.engine.silences])


@router.post("/silences", response_model=SilenceBody, status_code=201,
             dependencies=[Depends(require_operator)])
async def add_silence(body: SilenceRequest, analyzer: AnalyzerDep,
                      by: ActorDep) -> SilenceBody:
    """Silence alerts whose fields or labels match every glob, until ``until``."""
    until = body.until if body.until.tzinfo else body.until.replace(tzinfo=timezone.utc)
    if until <= datetime.now(timezone.utc):
        raise HTTPException(422, "until must be in the future")
    sid = await analyzer.silence(dict(body.matchers), until, by=by, comment=body.comment)
    found = next(s for s in analyzer.engine.silences if s.id == sid)
    return _silence_body(found)


@router.delete("/silences/{silence_id}", response_model=Done, responses=_NOT_FOUND,
               dependencies=[Depends(require_operator)])
async def delete_silence(silence_id: Annotated[Text, Path(max_length=200)],
                         analyzer: AnalyzerDep) -> Done:
    """End a silence early."""
    if not any(s.id == silence_id for s in analyzer.engine.silences):
        raise HTTPException(404, f"no silence {silence_id!r}")
    await analyzer.unsilence(silence_id)
    return Done(detail=f"silence {silence_id} removed")
