"""The delivery worker: takes messages out of the outbox and through their channels.

Per route, the oldest waiting message is the only one tried (in-order delivery); routes are
tried side by side, each send in a worker thread, so a slow channel never blocks the event
loop. A message leaves the outbox only after its channel accepted it (at-least-once: a kill
between the two is the one duplicate there can be). A failed try is retried with exponential
backoff (:func:`backoff`: 2 s doubling to 5 min). Between passes, the outbox's bounds are
enforced (:meth:`Outbox.enforce_bounds`). An outage is logged once and its end once.
Each success, failed try and drop is counted in the route's record in the outbox
(:class:`~watchkeeper.notify.outbox.RouteStats`); :attr:`Delivery.failing` mirrors which
routes fail, and since when, for the notifier's health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from watchkeeper.aio import wait_for
from watchkeeper.config import Settings
from watchkeeper.notify.outbox import Outbox, Pending
from watchkeeper.notify.sender import AppriseSender, Sender
from watchkeeper.safetext import printable

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0
#: Longest sleep between two passes when nothing is due (bounds are enforced each pass).
IDLE_S = 60.0


def backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones (2, 4, 8, ... 300)."""
    return float(min(BACKOFF_BASE_S * 2 ** max(0, attempts - 1), BACKOFF_MAX_S))


class Delivery:
    """Sends what the outbox holds; ``run_once`` is one pass (tests drive it by hand)."""

    def __init__(self, outbox: Outbox, settings: Callable[[], Settings], *,
                 sender: Sender | None = None, wall: Callable[[], float] = time.time) -> None:
        self.outbox = outbox
        self._settings = settings
        self.sender: Sender = sender or AppriseSender()
        self._wall = wall
        self._wake = asyncio.Event()
        self._stopping = False
        self.sent = 0
        #: Each route's URL at the last pass: a changed one is tried again at once.
        self._urls: dict[str, str] = {}
        #: Route -> (epoch seconds of its first failed try since its last success, the
        #: last error): what the notifier's health reads.
        self.failing: dict[str, tuple[float, str]] = {}

    def wake(self) -> None:
        """New messages are waiting: try now."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the pass in progress, then return from :meth:`run`."""
        self._stopping = True
        self._wake.set()

    async def run_once(self) -> float | None:
        """One pass: enforce the bounds, try every route's due head; returns the seconds
        until the next head is due (None when the outbox is empty)."""
        settings = self._settings()
        n = settings.notify
        now = self._wall()
        dropped = await self.outbox.enforce_bounds(
            max_messages=n.outbox_max_messages, max_age_s=n.outbox_max_age_s, now=now,
            level=settings.personality.level)
        if dropped:
            log.warning("notify: %d undelivered message(s) were past the outbox's bounds and "
                        "became one summary message per route", dropped)
        heads = await asyncio.to_thread(self.outbox.heads)
        urls = {r.name: r.url.get_secret_value() for r in n.routes if r.url is not None}
        heads = await self._follow_routes(heads, urls, now)
        due = [h for h in heads if h.next_try_at <= now]
        if due:
            await asyncio.gather(*(self._try(h, urls.get(h.route)) for h in due))
            heads = await asyncio.to_thread(self.outbox.heads)
        if not heads:
            return None
        return max(0.0, min(h.next_try_at for h in heads) - self._wall())

    async def _follow_routes(self, heads: list[Pending], urls: dict[str, str], now: float
                             ) -> list[Pending]:
        """The outbox in line with the routes as configured now (a reload changed them):
        what waits for a removed route is dropped, as Alertmanager drops what waits for a
        receiver its new configuration no longer has (the route's URL is gone; sending to it
        anyway is what its removal forbids); a route whose URL changed is tried at once,
        its backoff forgotten (the operator fixed the URL: no reason to wait)."""
        seen, self._urls = self._urls, urls
        if any(h.route not in urls for h in heads):
            for route, count in sorted((await self.outbox.drop_routes(set(urls))).items()):
                self.failing.pop(route, None)
                log.warning("notify: route %s is no longer configured; the %d message(s) "
                            "waiting for it are dropped", route, count)
        changed = [h.route for h in heads
                   if h.route in urls and h.route in seen and seen[h.route] != urls[h.route]
                   and h.next_try_at > now]
        for route in changed:
            await self.outbox.retry_now(route, now)
            log.info("notify: route %s has a new URL; what waits for it is tried now", route)
        if changed or any(h.route not in urls for h in heads):
            return await asyncio.to_thread(self.outbox.heads)
        return heads

    async def _try(self, msg: Pending, url: str | None) -> None:
        if url is None:
            # The route left the configuration: nobody to deliver to.
            log.warning("notify: route %s is no longer configured; its waiting message "
                        "%r is dropped", msg.route, msg.title)
            await self.outbox.delivered(msg.id)
            return
        result = await asyncio.to_thread(self.sender.send, url, msg.title, msg.body,
                                         msg.notify_type)
        now = self._wall()
        if result.ok:
            await self.outbox.delivered(msg.id, route=msg.route, now=now)
            self.failing.pop(msg.route, None)
            self.sent += 1
            if msg.attempts:
                log.info("notify: route %s reachable again; delivered what waited",
                         msg.route)
            log.debug("notify: route %s took %r", msg.route, msg.title)
            return
        attempts = msg.attempts + 1
        await self.outbox.failed(msg.id, result.answer, now + backoff(attempts),
                                 route=msg.route, now=now)
        self.failing[msg.route] = (self.failing.get(msg.route, (now, ""))[0], result.answer)
        if msg.attempts == 0:
            # The channel's answer is hostile text: escaped here, not only by the file
            # formatter, since every handler gets the record (a lone surrogate broke one).
            log.warning("notify: route %s did not take a message (%s); retrying with backoff, "
                        "the outbox keeps what waits", msg.route, printable(result.answer, 2000))

    async def run(self) -> None:
        """Pass after pass until :meth:`stop`."""
        while not self._stopping:
            self._wake.clear()
            try:
                delay = await self.run_once()
            except Exception:  # a damaged row or a full disk: log it and try again later
                log.exception("notify: delivery pass failed")
                delay = BACKOFF_BASE_S
            if self._stopping:
                return
            wait = IDLE_S if delay is None else min(delay, IDLE_S)
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_for(self._wake.wait(), wait)
