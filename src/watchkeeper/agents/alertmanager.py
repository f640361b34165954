"""AlertmanagerAgent: hands alerts to the Alertmanagers named in notify.routes.

It only reads the bus and keeps the current set per route (never waiting on the network);
each route's sender is its own task (notify/alertmanager.py), so a slow or dead Alertmanager
delays nothing but itself. Runs only when a route has ``alertmanager:`` set.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx

from watchkeeper.agents.base import BaseAgent
from watchkeeper.agents.commands import NoArgs, Verb
from watchkeeper.bus import Subscription
from watchkeeper.config import Settings
from watchkeeper.events import AgentHealth, Alert, Command
from watchkeeper.notify.alertmanager import (
    MAX_ALERTS,
    RESOLVED_RETENTION_S,
    AlertmanagerRoute,
    dashboard_url,
)
from watchkeeper.notify.match import alertmanager_routes
from watchkeeper.store.base import Store

log = logging.getLogger(__name__)


class AlertmanagerAgent(BaseAgent):
    """Posts the alerts each Alertmanager route takes, and re-posts them while firing."""

    name = "alertmanager"

    def __init__(self, *, store: Store | None = None, route_options: dict[str, Any] | None = None,
                 open_alerts: Callable[[], Awaitable[list[Alert]]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = store
        #: Started while the process runs (a reload added the first route): the analyzer's
        #: open alerts, which the history may not hold yet (it is written every second).
        self._open_alerts = open_alerts
        #: Passed to every AlertmanagerRoute (tests shorten the resend interval).
        self._route_options = route_options or {}
        self._sub: Subscription | None = None
        self._client: httpx.AsyncClient | None = None
        self._restored = False
        #: The latest version of every open alert (what a new or changed route starts from).
        self._open: OrderedDict[str, Alert] = OrderedDict()
        #: Alerts that ended shortly before a start: their end is told once more.
        self._ended_before_start: list[Alert] = []
        self.routes: dict[str, AlertmanagerRoute] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def verbs(self) -> dict[str, Verb]:
        """status (a read: each route's posts, for GET /api/notify) besides the common."""
        return {**super().verbs(),
                "status": Verb(self._status_verb, mutating=False, any_state=True)}

    async def _status_verb(self, _args: NoArgs, _command: Command) -> dict[str, Any]:
        from watchkeeper.notify.status import alertmanager_row

        settings, now, mono = self.config.current, self._wall(), self._monotonic()
        return {"routes": [alertmanager_row(s, settings, now, mono)
                           for s in self.routes.values()]}

    def health(self) -> AgentHealth:
        """The common health, with each route failing past notify.failing_after_s."""
        from watchkeeper.notify.status import alertmanager_problems

        return super().health().model_copy(update={"problems": alertmanager_problems(
            list(self.routes.values()), self.config.current, self._wall(),
            self._monotonic())})

    def interval(self, settings: Settings) -> float:
        # Event-driven: each check waits for the next alert (see _perform_check).
        return 0.01

    async def setup(self) -> None:
        if self._sub is None:
            # Every host's alerts (a central server takes a fleet's).
            self._sub = self.bus.subscribe("alerts.>", name=self.name, maxsize=10_000)
        if self._client is None:
            self._client = httpx.AsyncClient()
            for sender in self.routes.values():  # kept across a restart: the new client
                sender.use(self._client)
        if not self._restored:
            self._restored = True
            self._restore()
            if self._open_alerts is not None:
                await self._take_open_alerts(self._open_alerts)
        self._reconcile(self.config.current)

    async def teardown(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def close(self) -> None:
        # Stopped for good (shutdown, or a reload that removed the last Alertmanager route):
        # the bus stops queueing alerts for it.
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    def _restore(self) -> None:
        """The alerts open at the last stop are posted again at start; those that ended in
        the last RESOLVED_RETENTION_S get their end posted."""
        if self.store is None:
            return
        try:
            latest: dict[str, Alert] = {}
            for stored in self.store.events(kinds=["alert"], limit=MAX_ALERTS):
                if isinstance(stored.event, Alert):
                    latest[stored.event.fingerprint] = stored.event
        except Exception as exc:  # a damaged history must not stop delivery
            log.warning("alertmanager: could not read the open alerts back: %s", exc)
            return
        horizon = self._wall() - timedelta(seconds=RESOLVED_RETENTION_S)
        for fp, alert in latest.items():
            if alert.state != "resolved":
                self._open[fp] = alert
            elif alert.at >= horizon:
                self._ended_before_start.append(alert)

    async def _take_open_alerts(self, source: Callable[[], Awaitable[list[Alert]]]) -> None:
        """The analyzer's open alerts join what the history gave (the newer version wins)."""
        try:
            alerts = await source()
        except Exception as exc:  # the history's copy is still there
            log.warning("alertmanager: could not ask for the open alerts: %s", exc)
            return
        for alert in alerts:
            known = self._open.get(alert.fingerprint)
            if known is None or known.at <= alert.at:
                self._open[alert.fingerprint] = alert

    def _reconcile(self, settings: Settings) -> None:
        """Senders in line with the configured routes (a changed route starts afresh)."""
        wanted = {r.name: r for r in alertmanager_routes(settings)}
        dashboard = dashboard_url(settings)
        for name in [n for n, s in self.routes.items()
                     if wanted.get(n) != s.route or s.dashboard != dashboard]:
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
            del self.routes[name]
        assert self._client is not None
        for name, route in wanted.items():
            if name not in self.routes:
                sender = AlertmanagerRoute(route, client=self._client,
                                           dashboard=dashboard, wall=self._wall,
                                           monotonic=self._monotonic, **self._route_options)
                sender.take([*self._ended_before_start, *self._open.values()])
                self.routes[name] = sender
            task = self._tasks.get(name)
            if task is None or task.done():
                if task is not None and not task.cancelled() and task.exception() is not None:
                    log.error("alertmanager: the sender of route %s died: %r; restarted", name,
                              task.exception())
                self._tasks[name] = asyncio.get_running_loop().create_task(
                    self.routes[name].run(), name=f"alertmanager-{name}")
        self._ended_before_start = []

    async def _perform_check(self) -> None:
        sub = self._sub
        if sub is None:
            return
        batch = [e for _, e in await self.next_batch(sub) if isinstance(e, Alert)]
        self._reconcile(self.config.current)
        if not batch:
            return
        for alert in batch:
            self._open.pop(alert.fingerprint, None)
            if alert.state != "resolved":
                self._open[alert.fingerprint] = alert
        while len(self._open) > MAX_ALERTS:
            self._open.popitem(last=False)
        for sender in self.routes.values():
            sender.take(batch)
