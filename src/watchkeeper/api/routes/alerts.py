"""Open alerts, acknowledgement and silences."""

from __future__ import annotations

from datetime import timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from watchkeeper.api.auth import require_operator, require_read
from watchkeeper.api.routes.deps import ActorDep, HostQuery, RuntimeDep, ask_agent, target_host
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
              runtime: RuntimeDep, by: ActorDep, host: HostQuery = None) -> Alert:
    """Acknowledge an open alert: it stays open but stops escalating and notifying. With
    ``host=`` (a central), only if it is that host's alert (404 otherwise)."""
    remote = target_host(runtime, host)
    done = await ask_agent(runtime, ANALYZER, "ack", {
        "fingerprint": fingerprint, **({"host": remote} if remote else {})}, actor=by)
    return Alert.model_validate(done["alert"])


@router.get("/silences", response_model=SilencesBody, dependencies=[Depends(require_read)])
async def list_silences(runtime: RuntimeDep) -> SilencesBody:
    """Silences in force."""
    found = await ask_agent(runtime, ANALYZER, "silences", actor="api", role="viewer")
    return SilencesBody(silences=[SilenceBody.model_validate(s) for s in found["silences"]])


@router.post("/silences", response_model=SilenceBody, status_code=201,
             responses={404: {"model": ErrorBody, "description": "no such host reports here"}},
             dependencies=[Depends(require_operator)])
async def add_silence(body: SilenceRequest, runtime: RuntimeDep, by: ActorDep,
                      host: HostQuery = None) -> SilenceBody:
    """Silence alerts whose fields or labels match every glob, until ``until``. With
    ``host=`` (a central), only that host's: the silence gets a ``host`` matcher."""
    until = body.until if body.until.tzinfo else body.until.replace(tzinfo=timezone.utc)
    matchers = dict(body.matchers)
    remote = target_host(runtime, host)
    if remote is not None:
        if matchers.get("host", remote) != remote:
            raise HTTPException(422, f"host={remote} but the matchers name host "
                                     f"{matchers['host']!r}: give one or the other")
        matchers["host"] = remote
    done = await ask_agent(runtime, ANALYZER, "silence", {
        "matchers": matchers, "until": until.isoformat(), "comment": body.comment},
        actor=by)
    return SilenceBody.model_validate(done["silence"])


@router.delete("/silences/{silence_id}", response_model=Done, responses=_NOT_FOUND,
               dependencies=[Depends(require_operator)])
async def delete_silence(silence_id: Annotated[Text, Path(max_length=200)],
                         runtime: RuntimeDep, by: ActorDep, host: HostQuery = None) -> Done:
    """End a silence early (with ``host=``, only a silence narrowed to that host)."""
    remote = target_host(runtime, host)
    if any(ord(c) < 32 or c == "\x7f" for c in silence_id):  # never one of ours
        raise HTTPException(404, "no such silence")
    done = await ask_agent(runtime, ANALYZER, "unsilence", {
        "silence_id": silence_id, **({"host": remote} if remote else {})}, actor=by)
    return Done(detail=str(done.get("message", f"silence {silence_id} removed")))
