"""The event journal: numbering, what it keeps, resuming, and readers that fall behind."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from watchkeeper.api.journal import EventJournal
from watchkeeper.bus import MemoryBus
from watchkeeper.events import (
    AgentError,
    AgentHealth,
    Command,
    CpuStats,
    Heartbeat,
    MetricSnapshot,
)


def error(i: int) -> AgentError:
    return AgentError(host="h", agent="sensor", error=f"e{i}", error_type="X")


def tick(i: int) -> MetricSnapshot:
    return MetricSnapshot(host="h", at=datetime.now(timezone.utc), seq=i, interval_s=5.0,
                          cpu=CpuStats(percent=1.0))


def test_events_are_numbered_and_news_and_routine_kept_apart() -> None:
    journal = EventJournal(MemoryBus(), news_kept=3, routine_kept=2)
    assert journal.after(0) == [] and journal.last == 0
    assert journal.add("commands.h", Command(host="h", command="pause")) is None  # plumbing
    for i in range(4):
        journal.add("errors.h.sensor", error(i))
        journal.add("metrics.h", tick(i))
    assert journal.last == 8
    kept = [(e.n, type(e.event).__name__) for e in journal.after(0)]
    # The newest three news (3, 5, 7) and the newest two ticks (6, 8), in order.
    assert kept == [(3, "AgentError"), (5, "AgentError"), (6, "MetricSnapshot"),
                    (7, "AgentError"), (8, "MetricSnapshot")]
    assert [e.n for e in journal.after(6)] == [7, 8]
    assert journal.after(8) == []


def test_a_reader_behind_the_kept_news_is_told_it_lost_some() -> None:
    journal = EventJournal(MemoryBus(), news_kept=2)
    for i in range(5):
        journal.add("errors.h.sensor", error(i))  # 1..5; 4 and 5 kept
    assert journal.lost_after(2) and not journal.lost_after(3)
    # Ticks and heartbeats forgotten are not news: losing them is no loss to report.
    for i in range(40):
        journal.add("metrics.h", tick(i))
        health = AgentHealth(name="sensor", state="running", interval_s=5.0)
        journal.add("heartbeats.h.sensor", Heartbeat(host="h", agent="sensor", health=health))
    assert not journal.lost_after(5)
    assert [e.n for e in journal.after(0)][:2] == [4, 5]  # the news is still there


def test_resume_from_an_id() -> None:
    journal = EventJournal(MemoryBus(), news_kept=2)
    for i in range(4):
        journal.add("errors.h.sensor", error(i))
    assert journal.resume_from(None) == (4, None)
    assert journal.resume_from("") == (4, None)
    assert journal.resume_from(journal.event_id(3)) == (3, None)
    assert journal.resume_from(journal.event_id(2)) == (2, None)  # 3 and 4 are kept
    for bad, why in ((journal.event_id(1), "no longer kept"),
                     (journal.event_id(9), "not known yet"),
                     ("ffffffff-3", "earlier run"), ("nonsense", "earlier run"),
                     (f"{journal.run}-x", "earlier run")):
        cursor, reason = journal.resume_from(bad)
        assert cursor == 4 and reason is not None and why in reason, bad


async def test_it_follows_the_bus_and_wakes_waiting_readers() -> None:
    bus = MemoryBus()
    journal = EventJournal(bus)
    journal.start()
    journal.start()  # idempotent
    try:
        assert await journal.wait(0, 0.05) is False  # nothing yet: timed out
        waiting = asyncio.create_task(journal.wait(0, 5))
        await bus.publish("errors.h.sensor", error(1))
        assert await asyncio.wait_for(waiting, 5) is True
        (entry,) = journal.after(0)
        assert entry.topic == "errors.h.sensor"
        assert isinstance(entry.event, AgentError) and entry.event.error == "e1"
        blocked = asyncio.create_task(journal.wait(journal.last, 30))
        await asyncio.sleep(0)
    finally:
        journal.close()
    assert journal.closed
    await asyncio.wait_for(blocked, 1)  # closing wakes every reader
    assert not [s for s in bus.subscriptions() if s.name == "api-journal"]
    await bus.close()


async def test_a_closed_bus_closes_the_journal() -> None:
    bus = MemoryBus()
    journal = EventJournal(bus)
    journal.start()
    await bus.close()
    for _ in range(50):
        if journal.closed:
            break
        await asyncio.sleep(0.01)
    assert journal.closed
