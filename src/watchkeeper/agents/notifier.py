"""NotifierAgent: tells humans, off every other agent's path.

It consumes the bus as the communicator does (``alerts.*`` and ``actions.*``): the analyzer
and the remediator only publish, and nothing they do waits for a channel. Each check feeds
what arrived to the :class:`~watchkeeper.notify.router.Router`, and commits the messages due
with the router's state to the :class:`~watchkeeper.notify.outbox.Outbox` in one transaction;
a :class:`~watchkeeper.notify.delivery.Delivery` task sends them (apprise in worker threads,
retries with backoff); only then are the events read acknowledged to the bus (a fleet's
broker), so a kill between the two loses nothing. At start the router's state is loaded
and the open alerts are read back from the history (the analyzer restores them without
publishing), so a restart neither repeats what was said nor misses what began meanwhile.

Its ``status`` command answers how each apprise route's delivery goes (notify/status.py); a
route whose tries have failed for ``notify.failing_after_s`` is a problem in its health, so
the overall status says the pager is broken.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from watchkeeper.agents.base import BaseAgent
from watchkeeper.agents.commands import NoArgs, Verb
from watchkeeper.aio import wait_for
from watchkeeper.bus import Subscription
from watchkeeper.config import Settings
from watchkeeper.events import AgentHealth, Alert, Command, RemediationEvent
from watchkeeper.logging_setup import set_log_secrets
from watchkeeper.notify.delivery import Delivery
from watchkeeper.notify.outbox import Outbox
from watchkeeper.notify.router import Router
from watchkeeper.notify.sender import Sender, secret_pieces
from watchkeeper.notify.status import apprise_rows, clean_error, problem, state_of
from watchkeeper.store.base import Store

log = logging.getLogger(__name__)

#: Alert events read back from the history at start (the latest of each fingerprint counts).
RESTORE_LIMIT = 10_000
#: Seconds a graceful stop waits for a send in flight to finish (so it is not sent twice).
STOP_WAIT_S = 15.0


def register_route_secrets(settings: Settings) -> None:
    """Every route URL's secret parts are masked in every log line from now on."""
    pieces: list[str] = []
    for route in settings.notify.routes:
        if route.url is not None:
            pieces += secret_pieces(route.url.get_secret_value())
    set_log_secrets("notify.routes", pieces)


class NotifierAgent(BaseAgent):
    """Routes alerts and remediation steps to the configured channels, through the outbox."""

    name = "notifier"

    def __init__(self, *, store: Store, outbox: Outbox, sender: Sender | None = None,
                 wall_s: Callable[[], float] | None = None, background_delivery: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.outbox = outbox
        self._wall_s = wall_s or (lambda: self._wall().timestamp())
        self.router = Router(lambda: self.config.current)
        self.delivery = Delivery(outbox, lambda: self.config.current, sender=sender,
                                 wall=self._wall_s)
        self._alerts: Subscription | None = None
        self._actions: Subscription | None = None
        self._restored = False
        self._task: asyncio.Task[None] | None = None
        self._routes_seen: object = None
        #: False: nobody runs the delivery task (tests drive ``delivery.run_once`` by hand).
        self._background = background_delivery

    def interval(self, settings: Settings) -> float:
        # Group waits and repeats are timers: look at them every second at most.
        return min(1.0, settings.agents.check_interval)

    async def setup(self) -> None:
        if self._alerts is None:
            # Subscribed before the history is read: nothing falls between the two.
            self._alerts = self.bus.subscribe("alerts.*", name=f"{self.name}.alerts",
                                              maxsize=10_000)
            self._actions = self.bus.subscribe("actions.*", name=f"{self.name}.actions",
                                               maxsize=10_000)
            # Acknowledged once what they led to is in the outbox (commit after each
            # check), not once read: a central killed -9 between the two gets them again
            # from its durable consumers, and the router's state saved with the messages
            # says what was told already (so none is lost, none told twice).
            self._alerts.commit()
            self._actions.commit()
        self._secrets()
        if not self._restored:
            self._restored = True
            await self._restore()
        self._start_delivery()

    def _secrets(self) -> None:
        routes = self.config.current.notify.routes
        if routes != self._routes_seen:
            self._routes_seen = routes
            register_route_secrets(self.config.current)

    async def _restore(self) -> None:
        state = await asyncio.to_thread(self.outbox.state)
        if state is not None:
            self.router.load(state)
        try:
            stats = await asyncio.to_thread(self.outbox.stats)
        except Exception as exc:  # a damaged record must not stop notifications
            log.warning("notifier: could not read the routes' delivery records: %s", exc)
            stats = {}
        # A route that was failing at the last stop still is, since then, until it succeeds.
        for name, st in stats.items():
            if st.failing_since is not None:
                self.delivery.failing[name] = (st.failing_since, st.last_error or "")
        try:
            stored = await asyncio.to_thread(self.store.events, kinds=["alert"],
                                             limit=RESTORE_LIMIT)
        except Exception as exc:  # a damaged history must not stop notifications
            log.warning("notifier: could not read the alerts back: %s", exc)
            return
        for item in stored:
            if isinstance(item.event, Alert):
                self.router.observe_alert(item.event)

    def _start_delivery(self) -> None:
        if not self._background:
            return
        if self._task is None or self._task.done():
            if self._task is not None and not self._task.cancelled() \
                    and self._task.exception() is not None:
                log.error("notifier: the delivery task died (%s); started again",
                          self._task.exception())
            self.delivery._stopping = False
            self._task = asyncio.create_task(self.delivery.run(), name="notify-delivery")

    async def teardown(self) -> None:
        await self._check()
        task = self._task
        if task is not None:
            self.delivery.stop()
            try:
                await wait_for(asyncio.shield(task), STOP_WAIT_S)
            except asyncio.TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            self._task = None

    # ----------------------------------------------------------------- status

    def verbs(self) -> dict[str, Verb]:
        """status (a read) besides the common verbs."""
        return {**super().verbs(),
                "status": Verb(self._status_verb, mutating=False, any_state=True)}

    async def _status_verb(self, _args: NoArgs, _command: Command) -> dict[str, Any]:
        settings = self.config.current
        stats, waiting = await asyncio.to_thread(
            lambda: (self.outbox.stats(), self.outbox.waiting()))
        return {"routes": apprise_rows(settings, stats, waiting, self._wall_s())}

    def health(self) -> AgentHealth:
        """The common health, with each route failing past notify.failing_after_s as a
        problem (the overall status is then degraded, naming the route)."""
        return super().health().model_copy(update={"problems": self.problems()})

    def problems(self) -> tuple[str, ...]:
        """Routes whose tries have failed for notify.failing_after_s or longer."""
        settings = self.config.current
        now = self._wall_s()
        out = []
        for route in settings.notify.routes:
            found = self.delivery.failing.get(route.name)
            if route.url is None or found is None:
                continue
            since, error = found
            if state_of(since, now, settings.notify.failing_after_s) == "failing":
                out.append(problem(route.name, now - since, clean_error(
                    error, secret_pieces(route.url.get_secret_value()))))
        return tuple(out)

    async def _perform_check(self) -> None:
        self._secrets()
        self._start_delivery()
        await self._check()

    async def _check(self) -> None:
        now = self._wall_s()
        for sub in (self._alerts, self._actions):
            if sub is None:
                continue
            while (item := sub.get_nowait()) is not None:
                event = item[1]
                if isinstance(event, Alert):
                    self.router.observe_alert(event)
                elif isinstance(event, RemediationEvent):
                    self.router.observe_remediation(event, now)
        messages = self.router.tick(now)
        if messages or self.router.changed:
            await self.outbox.commit(messages, self.router.state(), now)
            self.router.changed = False
        for sub in (self._alerts, self._actions):
            if sub is not None:
                sub.commit()  # what was read is decided and saved: the bus may forget it
        if messages:
            log.debug("notifier: %d message(s) queued", len(messages))
            self.delivery.wake()
