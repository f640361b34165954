"""The bus contract (both backends: in-memory and NATS JetStream on a real nats-server),
and the in-memory bus's own overflow policy."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.nats_server import NatsServer
from watchkeeper.bus import (
    Bus,
    BusOverflowError,
    MemoryBus,
    NoResponderError,
    topic_matches,
)
from watchkeeper.bus.nats import NatsBus
from watchkeeper.config import BusConfig
from watchkeeper.events import (
    AgentError,
    AgentHealth,
    Command,
    CommandReply,
    CpuStats,
    DiskUsage,
    Event,
    Heartbeat,
    MetricSnapshot,
    Missing,
    ProcessInfo,
    ProcessSummary,
    decode,
    encode,
)

_prefixes = itertools.count()


@pytest.fixture(params=["memory", "nats"])
async def any_bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """Each backend in turn; the NATS one on the session's nats-server, with subjects and
    streams of its own (a prefix per test)."""
    bus: Bus
    if request.param == "memory":
        bus = MemoryBus()
    else:
        server: NatsServer = request.getfixturevalue("nats_server")
        config = BusConfig(backend="nats", url=server.url,
                           subject_prefix=f"contract{next(_prefixes)}")
        bus = await NatsBus.open(config, client="test")
    yield bus
    await bus.close()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for events to arrive (at once in memory, over the loopback with NATS)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not true after {timeout}s")
        await asyncio.sleep(0.005)


def snap(seq: int) -> MetricSnapshot:
    return MetricSnapshot(host="h", seq=seq, interval_s=5.0)


def err(n: int) -> AgentError:
    return AgentError(host="h", agent="a", error=f"boom {n}", error_type="RuntimeError")


@pytest.mark.parametrize(("pattern", "topic", "expected"), [
    ("metrics.h1", "metrics.h1", True),
    ("metrics.*", "metrics.h1", True),
    ("metrics.*", "metrics.h1.x", False),
    ("metrics.>", "metrics.h1.x", True),
    ("metrics.>", "metrics", False),
    (">", "anything.at.all", True),
    ("*.h1", "alerts.h1", True),
    ("alerts.h1", "alerts.h2", False),
])
def test_topic_matching(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


def snap_of(host: str, seq: int) -> MetricSnapshot:
    return MetricSnapshot(host=host, seq=seq, interval_s=5.0)


async def test_publish_reaches_matching_subscribers_in_order(any_bus: Bus) -> None:
    bus = any_bus
    all_metrics = bus.subscribe("metrics.*")
    one_host = bus.subscribe("metrics.h2")
    for i in range(5):
        await bus.publish(f"metrics.h{i % 2 + 1}", snap_of(f"h{i % 2 + 1}", i))
    got = [(await asyncio.wait_for(all_metrics.get(), 10))[1] for _ in range(5)]
    assert [e.seq for e in got if isinstance(e, MetricSnapshot)] == [0, 1, 2, 3, 4]
    await until(lambda: len(one_host) == 2)  # type: ignore[arg-type]


async def test_full_queue_drops_oldest_snapshot_and_counts_it(bus: MemoryBus) -> None:
    sub = bus.subscribe("metrics.>", maxsize=3)
    for i in range(5):
        await bus.publish("metrics.h", snap(i))
    seqs = []
    while (item := sub.get_nowait()) is not None:
        assert isinstance(item[1], MetricSnapshot)
        seqs.append(item[1].seq)
    assert seqs == [2, 3, 4]
    (stats,) = bus.stats()
    assert (stats.published, stats.delivered, stats.dropped, stats.queue_depth) == (5, 3, 2, 0)


async def test_never_drop_events_block_until_there_is_room() -> None:
    bus = MemoryBus(block_timeout=5.0)
    sub = bus.subscribe("errors.>", maxsize=2)
    await bus.publish("errors.h.a", err(1))
    await bus.publish("errors.h.a", err(2))
    blocked = asyncio.create_task(bus.publish("errors.h.a", err(3)))
    await asyncio.sleep(0.05)
    assert not blocked.done()  # back-pressure, not a drop
    await sub.get()
    await asyncio.wait_for(blocked, 1.0)
    got = [sub.get_nowait(), sub.get_nowait()]
    assert [e[1].error for e in got if e] == ["boom 2", "boom 3"]
    assert bus.stats()[0].dropped == 0
    await bus.close()


async def test_never_drop_events_fail_loudly_when_subscriber_is_stuck() -> None:
    bus = MemoryBus(block_timeout=0.05)
    bus.subscribe("errors.>", maxsize=1, name="stuck")
    await bus.publish("errors.h.a", err(1))
    with pytest.raises(BusOverflowError, match="stuck"):
        await bus.publish("errors.h.a", err(2))
    assert bus.stats()[0].dropped == 1
    await bus.close()


async def test_lossy_observer_never_holds_a_publisher_back(any_bus: Bus) -> None:
    # A browser's live stream that stops reading must not stall the agents: its oldest
    # events go (counted), while a normal subscriber of the same topic still gets all.
    bus = any_bus
    observer = bus.subscribe("errors.>", maxsize=2, lossy=True, name="browser")
    keeper = bus.subscribe("errors.>", maxsize=10)
    for i in range(5):
        await asyncio.wait_for(bus.publish("errors.h.a", err(i)), 2.0)
    await until(lambda: observer.dropped == 3 and len(keeper) == 5)  # type: ignore[attr-defined,arg-type]
    got = [item[1].error for item in (observer.get_nowait(), observer.get_nowait()) if item]
    assert got == ["boom 3", "boom 4"]
    assert observer.get_nowait() is None
    assert bus.stats()[0].dropped == 3


async def test_snapshot_never_evicts_an_alert_class_event(bus: MemoryBus) -> None:
    sub = bus.subscribe(">", maxsize=2)
    await bus.publish("errors.h.a", err(1))
    await bus.publish("errors.h.a", err(2))
    await bus.publish("metrics.h", snap(1))  # the queue holds only never-drop events
    kinds = [type(item[1]) for item in (sub.get_nowait(), sub.get_nowait()) if item]
    assert kinds == [AgentError, AgentError]
    assert {s.topic: s.dropped for s in bus.stats()} == {"errors.h.a": 0, "metrics.h": 1}


async def test_queue_depth_and_subscription_stats(any_bus: Bus) -> None:
    bus = any_bus
    sub = bus.subscribe("metrics.>", name="slow", maxsize=10)
    for i in range(4):
        await bus.publish("metrics.h", snap(i))
    await until(lambda: len(sub) == 4)  # type: ignore[arg-type]
    await sub.get()
    assert bus.stats()[0].queue_depth == 3
    (s,) = bus.subscriptions()
    assert (s.name, s.depth, s.maxsize) == ("slow", 3, 10)
    sub.close()
    assert bus.stats()[0].queue_depth == 0
    assert bus.subscriptions() == []


async def test_request_reply(any_bus: Bus) -> None:
    bus = any_bus

    async def handler(event: Event) -> Event:
        assert isinstance(event, Command)
        return CommandReply(host="h", agent="a", command=event.command, ok=True, message="pong")

    stop = bus.serve("command.h.a", handler)
    reply = await bus.request("command.h.a", Command(host="h", command="health_check"))
    assert isinstance(reply, CommandReply) and reply.message == "pong"
    stop()
    if isinstance(bus, NatsBus):
        await until(lambda: not bus._bg)  # the broker forgets the responder
    with pytest.raises(NoResponderError):
        await bus.request("command.h.a", Command(host="h", command="health_check"))


async def test_request_times_out(any_bus: Bus) -> None:
    bus = any_bus

    async def slow(event: Event) -> Event:
        await asyncio.sleep(10)
        return event

    bus.serve("command.h.slow", slow)
    with pytest.raises(asyncio.TimeoutError):
        await bus.request("command.h.slow", Command(host="h", command="pause"), timeout=0.05)


def test_events_are_frozen() -> None:
    s = snap(1)
    with pytest.raises(ValueError, match="frozen"):
        s.seq = 2  # type: ignore[misc]


_text = st.text(max_size=20)
_float = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(seq=st.integers(0, 2**62), pct=_float, name=_text, mount=_text,
       missing=st.lists(st.tuples(_text, _text), max_size=3))
def test_snapshot_json_round_trip_is_lossless(seq: int, pct: float, name: str, mount: str,
                                              missing: list[tuple[str, str]]) -> None:
    proc = ProcessInfo(pid=1, create_time=1.5, name=name, cmdline=name, cpu_percent=pct)
    original = MetricSnapshot(
        host="h", seq=seq, interval_s=5.0,
        cpu=CpuStats(percent=pct, per_core=(pct, 0.0)),
        disks=(DiskUsage(mountpoint=mount, device="/dev/x", fstype="ext4", percent=pct),),
        processes=ProcessSummary(total=3, top_cpu=(proc,)),
        missing=tuple(Missing(key=k, reason=r) for k, r in missing),
    )
    again = decode(encode(original))
    assert again == original
    assert again.schema_version == 1


def test_every_event_kind_round_trips() -> None:
    health = AgentHealth(name="a", state="running", interval_s=5.0)
    events: list[Event] = [
        snap(1), err(1), Heartbeat(host="h", agent="a", health=health),
        Command(host="h", command="pause", target="sensor", args={"x": [1, 2]}),
        CommandReply(host="h", agent="a", command="pause", ok=True, message="ok", health=health),
    ]
    for event in events:
        assert decode(encode(event)) == event
