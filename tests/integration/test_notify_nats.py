"""The notifier on a real nats-server (a fleet's central): an alert the notifier read is
acknowledged to the broker only once what it decided is in the outbox, so a central killed
between the two gets the alert again and tells it; none is lost, none told twice.

A kill -9 cannot be aimed at the millisecond between reading and the outbox's commit from
outside, so the test stands in for it at the I/O boundary: the outbox's disk fails that one
commit (``OSError``), and the central's connection is then dropped without a word, as a
kill -9 leaves it (no acknowledgement, no nak). ack_wait 2 s instead of 60: what the dead
central held comes again within the test's time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings
from tests.nats_server import NatsServer
from tests.notify_receiver import Receiver
from watchkeeper.agents.notifier import NotifierAgent
from watchkeeper.bus.nats import NatsBus
from watchkeeper.config import ConfigStore
from watchkeeper.notify.message import Message
from watchkeeper.notify.outbox import Outbox
from watchkeeper.store.sqlite import SqliteStore

from .test_bus_nats import bus_opener, config_for
from .test_notify_delivery import T0, Wall, alert


class DiskFailsOnce(Outbox):
    """The real outbox whose next commit fails as a full or dying disk makes it fail."""

    failing = True

    async def commit(self, messages: Sequence[Message], state: dict[str, Any] | None,
                     now: float) -> None:
        if self.failing:
            self.failing = False
            raise OSError(28, "No space left on device")
        await super().commit(messages, state, now)


@pytest.fixture
async def buses(nats_server: NatsServer) -> AsyncIterator[Callable[..., Awaitable[NatsBus]]]:
    config = config_for(nats_server).model_copy(update={"ack_wait_s": 2.0})
    async with bus_opener(config) as open_bus:
        yield open_bus


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


async def test_an_alert_read_but_not_yet_in_the_outbox_at_a_kill_is_told_after_restart(
        tmp_path: Path, buses: Callable[..., Awaitable[NatsBus]], receiver: Receiver) -> None:
    settings = make_settings(tmp_path, notify={"routes": [
        {"name": "ops", "url": receiver.url("ops"), "group_wait_s": 0}]},
        personality={"level": "off"})
    # The history has not written the alert yet (it flushes every second): only the bus
    # can give it back.
    store = SqliteStore(tmp_path / "history.db")
    wall = Wall()
    data = tmp_path / "data"
    data.mkdir()

    def notifier(bus: NatsBus, outbox: Outbox) -> NotifierAgent:
        return NotifierAgent(store=store, outbox=outbox, wall_s=wall,
                             background_delivery=False, bus=bus,
                             config=ConfigStore(settings), host="central")

    host = await buses("web1")
    first = await buses("central")
    dying = DiskFailsOnce(data / "notify_outbox.db")
    agent = notifier(first, dying)
    await agent.setup()
    await first.settle()
    await host.publish("alerts.web1", alert("a", T0))
    for _ in range(200):  # until the alert reached the central's queue
        if agent._alerts is not None and len(agent._alerts):  # type: ignore[arg-type]
            break
        await asyncio.sleep(0.01)
    wall.now = T0
    with pytest.raises(OSError):
        await agent._perform_check()  # read, decided, and the disk said no
    # Whatever the dying process had sent leaves; then it is gone without a word.
    await asyncio.gather(*list(first._bg), return_exceptions=True)
    assert first._nc is not None
    await first._nc.flush()
    await first._nc.close()
    await dying.close()

    second = await buses("central")
    outbox = Outbox(data / "notify_outbox.db")
    again = notifier(second, outbox)
    await again.setup()
    try:
        for _ in range(100):  # the alert comes again after ack_wait (2 s)
            wall.now += 0.1
            await again._perform_check()
            await again.delivery.run_once()
            if receiver.received:
                break
            await asyncio.sleep(0.1)
        assert receiver.titles("ops") == ["[WARNING] web1: disk a is 93% full"]
        # Told once: the next passes add nothing.
        wall.now += 3600
        await again._perform_check()
        await again.delivery.run_once()
        assert len(receiver.received) == 1
    finally:
        await again.teardown()
        await outbox.close()
        await store.close()
