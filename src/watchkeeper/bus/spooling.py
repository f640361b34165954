"""A fleet agent's bus: what the broker cannot take now waits in the spool, in order.

:class:`SpoolingBus` wraps the network bus of ``watchkeeper agent``. A stored event (metrics,
alerts, actions, audit, services, system, errors) is published to the broker when it is
online and nothing older waits; otherwise (an outage, a refusal, a timeout) it goes to the
:class:`~watchkeeper.bus.spool.Spool` on disk. A flusher sends the spool again, oldest first,
once the broker is back: the gap marker first when the spool's bounds dropped anything, then
each event exactly as it was encoded, so its ``Nats-Msg-Id`` is the same and the broker
stores a copy sent twice (kill -9 between its acknowledgement and the row's removal) once.
Heartbeats (not stored by the broker) are not spooled: a missed one means nothing later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

from watchkeeper.aio import wait_for
from watchkeeper.bus import codec
from watchkeeper.bus.base import (
    Bus,
    BusError,
    Handler,
    Subscription,
    SubscriptionStats,
    TopicFilter,
    TopicStats,
)
from watchkeeper.bus.spool import Entry, Spool
from watchkeeper.bus.subjects import FAMILY_STREAM
from watchkeeper.events import Event, SpoolGap

log = logging.getLogger(__name__)

#: Rows sent per round of the flusher (each one acknowledged by the broker before removal).
FLUSH_BATCH = 200
#: Seconds between tries while the broker stays away.
RETRY_S = 1.0
#: The longest wait between tries while an online broker keeps refusing the spool (its
#: streams not made yet, a permission): the wait doubles from RETRY_S up to this.
RETRY_MAX_S = 10.0
#: The longest a publisher (the sensor's tick) waits for the broker's acknowledgement before
#: the event goes to the spool instead: a link cut mid-publish is noticed only at
#: bus.publish_timeout_s (5 s), and the sensor must keep its cadence meanwhile.
HANDOFF_S = 1.0


def _consume(task: asyncio.Future[None]) -> None:
    """Collect the outcome of a publication left to finish on its own (its event is in the
    spool either way)."""
    if not task.cancelled():
        task.exception()


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


class SpoolingBus:
    """``inner`` (a NATS bus) with the spool in front of its publishing."""

    def __init__(self, inner: Bus, spool: Spool, *, host: str, online: Callable[[], bool],
                 clock: Callable[[], float] = time.time, retry_s: float = RETRY_S,
                 retry_max_s: float = RETRY_MAX_S, handoff_s: float = HANDOFF_S) -> None:
        self.inner = inner
        self._handoff_s = handoff_s
        self.spool = spool
        self.host = host
        self._online = online
        self._clock = clock
        self._retry_s = retry_s
        self._retry_max_s = max(retry_s, retry_max_s)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one writer of "send now or spool" at a time: order
        self._backlog = len(spool) > 0 or spool.gap() is not None
        self._flusher: asyncio.Task[None] | None = None
        #: Events sent again from the spool, events spooled, and rounds the broker refused.
        self.replayed = 0
        self.spooled = 0
        self.refused = 0

    # ------------------------------------------------------------------ publishing

    async def publish(self, topic: str, event: Event) -> None:
        if topic.split(".", 1)[0] not in FAMILY_STREAM:
            if self._online():
                with contextlib.suppress(BusError, asyncio.TimeoutError):
                    await self.inner.publish(topic, event)
            return
        async with self._lock:
            if not self._backlog and self._online():
                sending = asyncio.ensure_future(self.inner.publish(topic, event))
                try:
                    await wait_for(asyncio.shield(sending), self._handoff_s)
                    return
                except asyncio.TimeoutError:
                    # Still in flight: it finishes (or fails) on its own. The spool's copy
                    # has the same message id, so the broker keeps one of the two.
                    sending.add_done_callback(_consume)
                    log.warning("fleet: the broker did not confirm %s on %s within %g s; "
                                "kept in the spool until it does", type(event).__name__,
                                topic, self._handoff_s)
                except BusError as exc:
                    log.warning("fleet: the broker did not take %s on %s (%s); kept in the "
                                "spool until it does", type(event).__name__, topic, exc)
            await self._keep(topic, event)

    async def _keep(self, topic: str, event: Event) -> None:
        data = codec.encode(event)
        dropped = await self.spool.append(
            [Entry(topic=topic, msg_id=codec.message_id(topic, data), at=event.at.timestamp(),
                   droppable=type(event).droppable, payload=data)], now=self._clock())
        if not self._backlog:
            log.warning("fleet: the broker is unreachable; events are kept in %s until it is "
                        "back", self.spool.path)
        self._backlog = True
        self.spooled += 1
        if dropped:
            log.error("fleet: the spool is full: %d oldest event(s) dropped (a gap marker "
                      "tells the central)", dropped)
        self._ensure_flusher()
        self._wake.set()

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(),
                                                                   name="spool-flusher")

    async def start(self) -> None:
        """Send what an earlier run left in the spool (called once connected)."""
        if self._backlog:
            log.info("fleet: %d event(s) left in the spool by an earlier run are sent first",
                     len(self.spool))
            self._ensure_flusher()

    async def _flush_loop(self) -> None:
        delay = self._retry_s
        failing = False
        while self._backlog:
            if self._online():
                try:
                    await self.flush_once()
                except (BusError, asyncio.TimeoutError) as exc:
                    # Said once per outage: a log line may itself be an event to spool.
                    (log.debug if failing else log.warning)(
                        "fleet: sending the spool failed (%s); trying again, at most every "
                        "%g s, until the broker takes it", exc, self._retry_max_s)
                    failing = True
                    self.refused += 1
                    await self._back_off(delay)
                    delay = min(2 * delay, self._retry_max_s)
                    continue
                if failing:
                    log.info("fleet: the broker takes the spool again")
                failing, delay = False, self._retry_s
                continue
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_for(self._wake.wait(), self._retry_s)

    async def _back_off(self, delay: float) -> None:
        """Wait ``delay`` after a refused round. New events only join the spool meanwhile
        (before, each woke the flusher: about 100 refused rounds a second when an agent
        started before its central had made the streams); a reconnection cuts it short."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        went_offline = False
        while (left := deadline - loop.time()) > 0:
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_for(self._wake.wait(), left)
            online = self._online()
            went_offline = went_offline or not online
            if online and went_offline:
                return

    async def flush_once(self) -> int:
        """One round: the gap marker if owed, then up to FLUSH_BATCH rows; returns rows sent.
        When the spool is empty afterwards, new events go straight to the broker again."""
        gap = self.spool.gap()
        if gap is not None:
            await self.inner.publish(f"system.{self.host}", SpoolGap(
                host=self.host, dropped=gap.dropped, first_at=_utc(gap.first_at),
                last_at=_utc(gap.last_at)))
            await self.spool.gap_sent(gap)
        rows = self.spool.head(FLUSH_BATCH)
        sent: list[int] = []
        if rows:
            self.spool.sending(rows[-1].id)
        try:
            for row in rows:
                await self.inner.publish(row.topic, codec.decode(row.payload, topic=row.topic))
                sent.append(row.id)
        finally:
            try:
                if sent:
                    await self.spool.sent(sent)
                    self.replayed += len(sent)
            finally:
                self.spool.sending(0)
        async with self._lock:
            if len(self.spool) == 0 and self.spool.gap() is None:
                self._backlog = False
                log.info("fleet: the spool is sent; %d event(s) replayed so far", self.replayed)
        return len(sent)

    # ------------------------------------------------------------------ the rest as is

    def subscribe(self, pattern: str, *, name: str = "", maxsize: int | None = None,
                  lossy: bool = False, keep: TopicFilter | None = None) -> Subscription:
        return self.inner.subscribe(pattern, name=name, maxsize=maxsize, lossy=lossy,
                                    keep=keep)

    def serve(self, topic: str, handler: Handler) -> Callable[[], None]:
        return self.inner.serve(topic, handler)

    async def request(self, topic: str, event: Event, *, timeout: float = 5.0) -> Event:
        return await self.inner.request(topic, event, timeout=timeout)

    def stats(self) -> list[TopicStats]:
        return self.inner.stats()

    def subscriptions(self) -> list[SubscriptionStats]:
        return self.inner.subscriptions()

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.inner.close()
        await self.spool.close()
