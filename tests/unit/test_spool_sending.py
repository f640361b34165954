"""The spool's bounds and a flush in progress: a row the broker is being sent is never
counted as dropped, so a gap marker names only what the central never gets."""

from __future__ import annotations

from pathlib import Path

from watchkeeper.bus.spool import Entry, Spool


def entry(i: int) -> Entry:
    return Entry(topic="metrics.h", msg_id=f"m{i}", at=1000.0 + i, droppable=True,
                 payload=b"x" * 10)


async def test_rows_being_sent_are_not_dropped_by_the_bound(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, max_events=100)
    try:
        await spool.append([entry(i) for i in range(100)], now=2000.0)
        batch = spool.head(50)
        spool.sending(batch[-1].id)  # the flusher took these 50 and sends them
        # 50 in flight do not count: 50 more fit before anything goes.
        assert await spool.append([entry(i) for i in range(100, 150)], now=2000.0) == 0
        dropped = await spool.append([entry(i) for i in range(150, 160)], now=2000.0)
        assert dropped == 10
        assert [r.id for r in spool.head(50)] == [r.id for r in batch]  # all still there
        gap = spool.gap()
        assert gap is not None and gap.dropped == 10
        assert (gap.first_at, gap.last_at) == (1050.0, 1059.0)  # the oldest not in flight
        await spool.sent([r.id for r in batch])
        spool.sending(0)
        assert len(spool) == 100
        # Nothing in flight: the oldest go first again.
        assert await spool.append([entry(160)], now=2000.0) == 1
        assert spool.head(1)[0].at == 1061.0
    finally:
        await spool.close()
