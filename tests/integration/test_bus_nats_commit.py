"""A subscriber that stores what it gets (the communicator) on a real nats-server: events are
acknowledged at commit(), once durable, so what a process read and did not commit comes
again to its successor; and the newest of what the broker holds can be read back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.nats_server import NatsServer
from watchkeeper.bus.nats import NatsBus
from watchkeeper.events import Alert

from .test_bus_nats import alert, bus_opener, config_for, take


@pytest.fixture
async def buses(nats_server: NatsServer) -> AsyncIterator[Callable[..., Awaitable[NatsBus]]]:
    # ack_wait 2 s instead of 60: an event handed out and never acknowledged comes again
    # within the test's time.
    config = config_for(nats_server).model_copy(update={"ack_wait_s": 2.0})
    async with bus_opener(config) as open_bus:
        yield open_bus


async def test_what_was_read_but_not_committed_comes_again_to_the_next_process(
        buses: Callable[..., Awaitable[NatsBus]]) -> None:
    agent = await buses("web1")
    first = await buses("central")
    sub = first.subscribe("alerts.*", name="communicator")
    sub.commit()  # from now on: acknowledged at commit only
    await first.settle()
    for n in range(4):
        await agent.publish("alerts.web1", alert(n))
    assert [e.id for e in await take(sub, 3) if isinstance(e, Alert)] == ["a0", "a1", "a2"]
    sub.commit()  # a0..a2 stored: acknowledged
    (a3,) = await take(sub, 1)  # read, never committed: the process "dies"
    assert isinstance(a3, Alert) and a3.id == "a3"
    assert first._nc is not None
    await first._nc.close()  # no acknowledgement, no nak: as a kill -9 leaves it

    for n in range(4, 6):  # newer ones meanwhile
        await agent.publish("alerts.web1", alert(n))
    second = await buses("central")
    again = second.subscribe("alerts.*", name="communicator")
    # a4, a5 at once; a3 after ack_wait, after the newer ones: not taken for a copy.
    got = await take(again, 3)
    assert sorted(e.id for e in got if isinstance(e, Alert)) == ["a3", "a4", "a5"]


async def test_the_newest_of_what_the_broker_holds_is_read_back_by_sequence(
        buses: Callable[..., Awaitable[NatsBus]]) -> None:
    # Counted by the stream's sequences, not by time: the events' own times (2030) and the
    # broker's clock play no part.
    agent = await buses("web1")
    reader = await buses("central")
    events = [alert(n) for n in range(5)]
    for event in events:
        await agent.publish("alerts.web1", event)
    back = await reader.stored("alerts.*")
    assert [e for _t, e in back] == events
    assert [t for t, _e in back] == ["alerts.web1"] * 5
    assert [e for _t, e in await reader.stored("alerts.*", limit=2)] == events[3:]
    assert await reader.stored("actions.*") == []  # an empty stream
    # The throw-away consumers are gone again.
    assert reader._js is not None
    stream = f"{reader.prefix.upper()}_ALERTS"
    await asyncio.sleep(0)
    assert [c.name for c in await reader._js.consumers_info(stream)] == []
