"""The event journal behind GET /api/events: every streamed bus event, numbered, recent ones kept.

One lossy bus subscription serves every open stream, so a stalled browser tab never holds
monitoring back and costs nothing per event. Each event gets the next number of this
process; the newest ``NEWS_KEPT`` events that are news (alerts, remediation steps, agent
errors, config changes, ...) and the newest ``ROUTINE_KEPT`` routine ones (sensor ticks and
agent heartbeats, which the next one supersedes) are kept, so:

* a stream is a cursor into the journal: it sends whatever is after its cursor;
* a client that reconnects with ``Last-Event-ID`` gets the news it missed, as a browser's
  EventSource does on its own;
* a client that fell further behind than the journal keeps (or that asks for an id of a
  previous run of watchkeeper) is told so, to read the current state again, rather than
  being silently handed a gap.

Ids look like ``<run>-<n>``: ``run`` is random per process, so ids of an earlier run are
never mistaken for ids of this one.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import secrets
from collections import deque
from dataclasses import dataclass, field

from watchkeeper.aio import wait_for
from watchkeeper.bus import Bus, BusClosedError, Subscription
from watchkeeper.events import Command, CommandReply, Event

log = logging.getLogger(__name__)

#: News events kept for clients that reconnect (a few hours of a busy host's alerts).
NEWS_KEPT = 1000
#: Routine events kept (the bus's droppable ones: ticks, heartbeats, each superseded by the
#: next): enough for a reader a few ticks behind; losing older ones is no loss to report.
ROUTINE_KEPT = 32
#: The journal's own bus queue; it drains it at once, so this only absorbs bursts.
QUEUE = 4096


@dataclass
class Entry:
    """One journalled event; ``wire`` caches its encodings (one per stream format)."""

    n: int
    topic: str
    event: Event
    wire: dict[str, bytes | None] = field(default_factory=dict)


class EventJournal:
    """Numbers bus events and keeps the recent ones; streams read it by cursor."""

    def __init__(self, bus: Bus, *, news_kept: int = NEWS_KEPT,
                 routine_kept: int = ROUTINE_KEPT) -> None:
        self.run = secrets.token_hex(4)
        self._bus = bus
        self._news: deque[Entry] = deque(maxlen=news_kept)
        self._routine: deque[Entry] = deque(maxlen=routine_kept)
        self._last = 0
        self._news_forgotten = 0  # number of the newest news entry no longer kept
        self._changed = asyncio.Event()
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Subscribe and start numbering (idempotent; needs the running loop)."""
        if self._task is not None or self.closed:
            return
        self._sub = self._bus.subscribe(">", name="api-journal", maxsize=QUEUE, lossy=True)
        self._task = asyncio.get_running_loop().create_task(self._pump(),
                                                            name="api-journal")

    async def _pump(self) -> None:
        assert self._sub is not None
        try:
            while True:
                topic, event = await self._sub.get()
                self.add(topic, event)
        except BusClosedError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Stop; every stream waiting on the journal wakes and ends."""
        if self.closed:
            return
        self.closed = True
        if self._sub is not None:
            self._sub.close()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._wake()

    # ------------------------------------------------------------------ writing

    def add(self, topic: str, event: Event) -> Entry | None:
        """Number and keep one event (commands and their replies are plumbing: skipped)."""
        if isinstance(event, (Command, CommandReply)):
            return None
        self._last += 1
        entry = Entry(self._last, topic, event)
        if type(event).droppable:
            self._routine.append(entry)
        else:
            if len(self._news) == self._news.maxlen:
                self._news_forgotten = self._news[0].n
            self._news.append(entry)
        self._wake()
        return entry

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # ------------------------------------------------------------------ reading

    @property
    def last(self) -> int:
        """The number of the newest event (0 before the first)."""
        return self._last

    def event_id(self, n: int) -> str:
        """The SSE id of event ``n``."""
        return f"{self.run}-{n}"

    def resume_from(self, last_event_id: str | None) -> tuple[int, str | None]:
        """The cursor for a client's ``Last-Event-ID``, and why it cannot resume (or None).

        Without an id, a stream starts from now. With an id this journal still covers, it
        starts right after it; otherwise from now, with the reason to tell the client.
        """
        if not last_event_id:
            return self._last, None
        run, _, number = last_event_id.strip().partition("-")
        if run != self.run or not number.isdigit():
            return self._last, ("that id is from an earlier run of watchkeeper, or not one "
                                "of its ids")
        n = int(number)
        if n > self._last:
            return self._last, "that id is not known yet"
        if self.lost_after(n):
            return self._last, "events after that id are no longer kept"
        return n, None

    def lost_after(self, cursor: int) -> bool:
        """True if news after ``cursor`` was forgotten before a reader got it."""
        return self._news_forgotten > cursor

    def after(self, cursor: int) -> list[Entry]:
        """Kept entries numbered after ``cursor``, in order (a copy: the journal goes on
        growing while a stream sends them)."""
        return list(heapq.merge(_newer(self._news, cursor), _newer(self._routine, cursor),
                                key=lambda e: e.n))

    async def wait(self, cursor: int, timeout: float) -> bool:
        """Wait until there is something after ``cursor``, or the journal is woken or
        closed (True), or ``timeout`` passes (False). A reader checks again what it waits
        for after every True."""
        if self._last > cursor or self.closed:
            return True
        try:
            await wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def wake(self) -> None:
        """Wake every waiting reader (one of them has something else to see to)."""
        self._wake()


def _newer(entries: deque[Entry], cursor: int) -> list[Entry]:
    """The entries after ``cursor``, in order, looking only at those (newest first)."""
    found: list[Entry] = []
    for entry in reversed(entries):
        if entry.n <= cursor:
            break
        found.append(entry)
    found.reverse()
    return found
