"""The history keeps each snapshot once: a copy delivered twice (a fleet agent's spool sends
again what the broker stored but did not acknowledge) is dropped, while a restarted agent
(seq from 1 again) and a wall clock stepped back are kept."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from watchkeeper.agents.communicator import CommunicatorAgent
from watchkeeper.bus import MemoryBus
from watchkeeper.config import ConfigStore
from watchkeeper.events import MetricSnapshot
from watchkeeper.store.sqlite import SqliteStore

from ..conftest import make_settings

T0 = datetime(2030, 3, 1, 12, 0, tzinfo=timezone.utc)


def snap(host: str, seq: int, second: float) -> MetricSnapshot:
    return MetricSnapshot(host=host, seq=seq, interval_s=5.0,
                          at=T0 + timedelta(seconds=second))


async def test_a_copy_is_stored_once_and_nothing_else_is_dropped(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bus = MemoryBus()
    store = SqliteStore.open(settings.storage)
    comm = CommunicatorAgent(store=store, health=list, bus=bus,
                             config=ConfigStore(settings), host="central")
    await comm.setup()
    sent = [snap("web-1", 1, 0), snap("web-1", 2, 5), snap("web-1", 2, 5),  # the copy
            snap("web-2", 2, 5),  # another host, same seq and time: its own
            snap("web-1", 1, 60),  # the agent restarted: seq 1 again, later
            snap("web-1", 2, 30)]  # the wall clock stepped back 35 s: still kept
    for s in sent:
        await bus.publish(f"metrics.{s.host}", s)
    comm._drain()
    await store.flush()
    stored = store.snapshots(T0 - timedelta(hours=1), T0 + timedelta(hours=1), limit=100)
    assert sorted((s.host, s.seq, (s.at - T0).total_seconds()) for s in stored) == [
        ("web-1", 1, 0.0), ("web-1", 1, 60.0), ("web-1", 2, 5.0), ("web-1", 2, 30.0),
        ("web-2", 2, 5.0)]
    assert comm.duplicates == 1
    await store.close()
    await bus.close()
