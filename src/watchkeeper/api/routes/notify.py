"""Whether notifications get through: each route's delivery (GET /api/notify)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from watchkeeper.api.auth import require_read
from watchkeeper.api.routes.deps import RuntimeDep, ask_agent, from_agent
from watchkeeper.api.schemas import NotifyBody, NotifyRouteBody
from watchkeeper.notify.status import kind_of, shown_urls
from watchkeeper.runtime import Runtime

router = APIRouter(prefix="/api", tags=["notify"])

#: Seconds /metrics waits for the agents' answer (a scrape must not hang on one of them).
METRICS_TIMEOUT_S = 2.0


async def notify_status(runtime: Runtime, timeout: float | None = None) -> NotifyBody:
    """Every configured route's delivery, asked over the bus of the agents that deliver
    them: the notifier (apprise routes, from its outbox) and the Alertmanager agent."""
    settings = runtime.config.current
    routes = settings.notify.routes
    found: dict[str, NotifyRouteBody] = {}
    unavailable: list[str] = []
    owners = [("notifier", any(r.url is not None for r in routes)),
              ("alertmanager", any(r.alertmanager is not None for r in routes))]
    for agent, wanted in owners:
        if not wanted:
            continue
        try:
            answer: dict[str, Any] = await ask_agent(runtime, agent, "status", actor="api",
                                                     role="viewer", timeout=timeout)
        except HTTPException as exc:
            unavailable.append(f"{agent}: {exc.detail}")
            continue
        for row in from_agent(NotifyBody, {"failing_after_s": 0, **answer}, None).routes:
            found[row.name] = row
    urls = shown_urls(settings)
    rows = [found.get(r.name) or NotifyRouteBody(
        name=r.name, url=urls.get(r.name, ""), state="unknown",
        kind="alertmanager" if r.url is None else kind_of(r.url.get_secret_value()))
        for r in routes]
    return NotifyBody(failing_after_s=settings.notify.failing_after_s, routes=rows,
                      unavailable=unavailable)


@router.get("/notify", response_model=NotifyBody, dependencies=[Depends(require_read)])
async def notify(runtime: RuntimeDep) -> NotifyBody:
    """Each notification route, in configured order: its kind, its URL masked as GET
    /api/config masks it, its state (ok, retrying, failing), messages waiting in the outbox
    and the oldest's age, sent, failed-try and dropped totals, last success, last error
    (secrets masked) and since when it fails, the next retry; for an Alertmanager route,
    the alerts in its current set and whether its last post was accepted. Answered by the
    agents that deliver (the notifier, the Alertmanager agent); on a fleet's central, its
    own routes (a fleet's notifications go out from the central)."""
    return await notify_status(runtime)
