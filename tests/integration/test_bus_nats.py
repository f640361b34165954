"""NATS JetStream bus against a real nats-server: de-duplication, durable consumers across a
subscriber's restart, acknowledged alerts across a kill -9 of the broker, request/reply
between two processes' buses, and a slow subscriber that loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.nats_server import NatsServer
from watchkeeper.bus import BusError, NoResponderError
from watchkeeper.bus.nats import NatsBus, NatsSubscription
from watchkeeper.config import BusConfig, validate
from watchkeeper.events import Alert, Command, CommandReply, Event, RemediationEvent

_prefixes = itertools.count()
SINCE = datetime(2026, 1, 1, tzinfo=timezone.utc)


def alert(n: int, host: str = "web1") -> Alert:
    return Alert(host=host, id=f"a{n}", fingerprint=f"f{n}", rule="cpu", metric="cpu",
                 severity="critical", since=SINCE, summary=f"alert {n}")


def config_for(server: NatsServer, prefix: str | None = None) -> BusConfig:
    # Through the settings validation, as a user's YAML would be.
    settings = validate({"bus": {"backend": "nats", "url": server.url,
                                 "subject_prefix": prefix or f"it{next(_prefixes)}"}})
    return settings.bus


@contextlib.asynccontextmanager
async def bus_opener(config: BusConfig) -> AsyncIterator[Callable[..., Awaitable[NatsBus]]]:
    """Opens buses (one per simulated process) on one prefix; all closed at the end."""
    opened: list[NatsBus] = []

    async def open_bus(client: str, cfg: BusConfig = config) -> NatsBus:
        bus = await NatsBus.open(cfg, client=client)
        opened.append(bus)
        return bus

    try:
        yield open_bus
    finally:
        for bus in opened:
            await bus.close()


@pytest.fixture
async def buses(nats_server: NatsServer) -> AsyncIterator[Callable[..., Awaitable[NatsBus]]]:
    """Open buses (one per simulated process) on one prefix; all closed at the end."""
    async with bus_opener(config_for(nats_server)) as open_bus:
        yield open_bus


async def take(sub: NatsSubscription, count: int, timeout: float = 10.0) -> list[Event]:
    return [(await asyncio.wait_for(sub.get(), timeout))[1] for _ in range(count)]


async def nothing_more(bus: NatsBus, sub: NatsSubscription, topic: str, host: str) -> None:
    """Prove the queue holds nothing else: a fresh sentinel is the very next event."""
    sentinel = alert(999_999, host)
    await bus.publish(topic, sentinel)
    (got,) = await take(sub, 1)
    assert got == sentinel


async def test_the_same_event_published_twice_is_delivered_once(
        buses: Callable[..., Awaitable[NatsBus]]) -> None:
    central = await buses("central")
    agent = await buses("web1")
    sub = central.subscribe("alerts.>", name="communicator")
    await central.settle()
    event = alert(1)
    await agent.publish("alerts.web1", event)
    await agent.publish("alerts.web1", event)  # a retry after a lost acknowledgement
    assert await take(sub, 1) == [event]
    assert agent.duplicates == 1
    await nothing_more(agent, sub, "alerts.web1", "web1")


async def test_a_durable_subscriber_gets_what_it_missed_in_order_exactly_once(
        buses: Callable[..., Awaitable[NatsBus]]) -> None:
    agent = await buses("web1")
    central = await buses("central")
    sub = central.subscribe("alerts.*", name="communicator")
    await central.settle()
    for n in range(3):
        await agent.publish("alerts.web1", alert(n))
    assert [e.id for e in await take(sub, 3) if isinstance(e, Alert)] == ["a0", "a1", "a2"]
    await central.close()  # the central stops

    for n in range(3, 13):  # ... misses ten alerts ...
        await agent.publish("alerts.web1", alert(n))

    again = await buses("central")  # ... and starts again
    resumed = again.subscribe("alerts.*", name="communicator")
    got = await take(resumed, 10)
    assert [e.id for e in got if isinstance(e, Alert)] == [f"a{n}" for n in range(3, 13)]
    await nothing_more(agent, resumed, "alerts.web1", "web1")


async def test_acknowledged_alerts_survive_a_kill_9_of_the_broker(tmp_path: Path) -> None:
    # sync_interval: always (the README's configuration): every acknowledged write is on disk.
    server = NatsServer(tmp_path)
    server.start()
    try:
        config = config_for(server, "k9")
        central = await NatsBus.open(config, client="central")
        central.subscribe("alerts.>", name="communicator")
        await central.settle()
        await central.close()  # its durable consumer stays on the broker

        agent = await NatsBus.open(config, client="web1")
        for n in range(20):
            await agent.publish("alerts.web1", alert(n))  # returns once the broker stored it
        server.kill()
        await agent.close()

        server.start()
        central = await NatsBus.open(config, client="central")
        try:
            sub = central.subscribe("alerts.>", name="communicator")
            got = await take(sub, 20, timeout=20)
            assert [e.id for e in got if isinstance(e, Alert)] == [f"a{n}" for n in range(20)]
            agent = await NatsBus.open(config, client="web1")
            await nothing_more(agent, sub, "alerts.web1", "web1")
            await agent.close()
        finally:
            await central.close()
    finally:
        server.kill()


async def test_a_slow_subscriber_of_stored_events_loses_nothing_and_holds_no_one_back(
        buses: Callable[..., Awaitable[NatsBus]]) -> None:
    central = await buses("central")
    agent = await buses("web1")
    sub = central.subscribe("actions.>", name="notifier", maxsize=5)
    await central.settle()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(60):
        await agent.publish("actions.web1", RemediationEvent(host="web1", phase="decided",
                                                             action=f"act{n}"))
    assert loop.time() - started < 30  # the publisher never waited for the subscriber
    await asyncio.sleep(0)
    assert len(sub) <= 5  # the rest waits in the stream, not in this process
    got = await take(sub, 60)
    assert [e.action for e in got if isinstance(e, RemediationEvent)] == \
        [f"act{n}" for n in range(60)]
    assert sub.dropped == 0


async def test_request_reply_between_two_processes(
        buses: Callable[..., Awaitable[NatsBus]]) -> None:
    agent = await buses("web1")
    central = await buses("central")
    asked: list[Event] = []

    async def sensor(event: Event) -> Event:
        asked.append(event)
        assert isinstance(event, Command)
        return CommandReply(host="web1", agent="sensor", command=event.command, ok=True,
                            message="paused")

    async def broken(event: Event) -> Event:
        raise RuntimeError("disk on fire")

    stop = agent.serve("command.web1.sensor", sensor)
    agent.serve("command.web1.broken", broken)
    await agent.settle()
    reply = await central.request("command.web1.sensor", Command(host="web1", command="pause"))
    assert isinstance(reply, CommandReply) and reply.message == "paused"
    assert len(asked) == 1

    with pytest.raises(BusError, match="disk on fire"):
        await central.request("command.web1.broken", Command(host="web1", command="pause"))
    with pytest.raises(NoResponderError):
        await central.request("command.web2.sensor", Command(host="web2", command="pause"))
    stop()
    await agent.close()
    with pytest.raises(NoResponderError):
        await central.request("command.web1.sensor", Command(host="web1", command="pause"))
    # Requests are never stored, and never reach plain subscribers.
    assert not any(s.topic.startswith("command.") and s.delivered for s in central.stats())


async def test_an_unreachable_broker_is_a_clear_error() -> None:
    from tests.nats_server import free_port

    config = BusConfig(backend="nats", url=f"nats://127.0.0.1:{free_port()}",
                       connect_timeout_s=1)
    with pytest.raises(BusError, match="cannot connect to the NATS server"):
        await NatsBus.open(config, client="web1")


async def test_buses_wait_out_a_broker_restart_and_carry_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="watchkeeper.bus.nats")
    server = NatsServer(tmp_path)
    server.start()
    try:
        config = config_for(server, "rs")
        central = await NatsBus.open(config, client="central")
        agent = await NatsBus.open(config, client="web1")
        try:
            sub = central.subscribe("alerts.>", name="communicator")
            await central.settle()
            await agent.publish("alerts.web1", alert(0))
            server.kill()
            server.start()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while True:  # the agent's publish fails (clearly) until it has reconnected
                try:
                    await agent.publish("alerts.web1", alert(1))
                    break
                except BusError:
                    assert loop.time() < deadline, "no reconnect within 30 s"
                    await asyncio.sleep(0.2)
            got = await take(sub, 2, timeout=30)
            assert [e.id for e in got if isinstance(e, Alert)] == ["a0", "a1"]
        finally:
            await agent.close()
            await central.close()
    finally:
        server.kill()
    lost = [r for r in caplog.records if "lost the connection" in r.getMessage()]
    back = [r for r in caplog.records if "reconnected" in r.getMessage()]
    assert len(lost) == 2 and len(back) == 2  # once per bus each, not once per retry


async def test_a_subscription_closed_while_it_is_being_made_leaves_nothing_behind(
        buses: Callable[..., Awaitable[NatsBus]]) -> None:
    central = await buses("central")
    agent = await buses("web1")
    sub = central.subscribe(">", name="communicator")  # seven consumers and a core sub
    sub.close()  # before any of them exists
    await central.settle()
    await asyncio.gather(*list(central._bg))
    assert central._js is not None
    assert len(sub._js) <= 1  # it stopped making consumers once closed
    for psub in sub._js:
        for _ in range(500):  # the broker notices a gone subscriber asynchronously
            info = await central._js.consumer_info(psub._stream, psub._consumer)
            if not info.push_bound:
                break
            await asyncio.sleep(0.01)
        assert not info.push_bound  # nobody is listening on it any more
    # The name is free again, and a new subscriber gets what is published from now on.
    again = central.subscribe(">", name="communicator")
    await central.settle()
    event = alert(1)
    await agent.publish("alerts.web1", event)
    assert await take(again, 1) == [event]


#: A central in a child process: takes ``count`` alerts, makes sure its acknowledgements
#: reached the broker, says so, and waits to be killed.
CHILD = """
import asyncio, sys
from watchkeeper.bus.nats import NatsBus
from watchkeeper.config import BusConfig

async def main(url, prefix, count):
    config = BusConfig(backend="nats", url=url, subject_prefix=prefix, ack_wait_s=1)
    bus = await NatsBus.open(config, client="central")
    sub = bus.subscribe("alerts.>", name="communicator")
    for _ in range(count):
        _topic, event = await sub.get()
        print(event.id, flush=True)
    await asyncio.sleep(0)  # the acknowledgement tasks run
    await bus._nc.flush()
    print("flushed", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_a_central_killed_mid_stream_gets_again_only_what_it_had_not_finished(
        nats_server: NatsServer, children: list[subprocess.Popen[bytes]]) -> None:
    prefix = f"it{next(_prefixes)}"
    config = config_for(nats_server, prefix).model_copy(update={"ack_wait_s": 1.0})
    central = await NatsBus.open(config, client="central")
    central.subscribe("alerts.>", name="communicator")
    await central.settle()
    await central.close()  # its durable consumer waits on the broker
    agent = await NatsBus.open(config, client="web1")
    try:
        for n in range(10):
            await agent.publish("alerts.web1", alert(n))
        child = subprocess.Popen([sys.executable, "-c", CHILD, nats_server.url, prefix, "4"],
                                 stdout=subprocess.PIPE)
        children.append(child)
        assert child.stdout is not None
        lines = [child.stdout.readline().decode().strip() for _ in range(5)]
        assert lines == ["a0", "a1", "a2", "a3", "flushed"]
        child.kill()  # SIGKILL while handling a3 (a0..a2 are finished: it asked for more)
        child.wait(timeout=10)

        again = await NatsBus.open(config, client="central")
        try:
            sub = again.subscribe("alerts.>", name="communicator")
            got = await take(sub, 7, timeout=20)  # after ack_wait (1 s here, 60 by default)
            assert [e.id for e in got if isinstance(e, Alert)] == [f"a{n}" for n in range(3, 10)]
            await nothing_more(agent, sub, "alerts.web1", "web1")
        finally:
            await again.close()
    finally:
        await agent.close()


async def test_an_event_its_receivers_would_refuse_fails_at_the_publisher(
        buses: Callable[..., Awaitable[NatsBus]]) -> None:
    agent = await buses("web1")
    with pytest.raises(BusError, match="wrong_topic"):
        await agent.publish("metrics.web1", alert(1))
    with pytest.raises(BusError, match="wrong_host"):
        await agent.publish("alerts.web2", alert(1))
    with pytest.raises(ValueError, match="invalid topic"):
        await agent.publish("alerts.*", alert(1))
    assert agent.stats() == []  # nothing was sent


async def test_an_event_sent_again_in_wire_form_with_its_id_is_stored_once(
        buses: Callable[..., Awaitable[NatsBus]]) -> None:
    # What a spool does after an outage: it kept the bytes and the id of the first try.
    from watchkeeper.bus import codec

    central = await buses("central")
    agent = await buses("web1")
    sub = central.subscribe("alerts.>", name="communicator")
    await central.settle()
    event = alert(7)
    data = codec.encode(event)
    msg_id = codec.message_id("alerts.web1", data)
    await agent.publish("alerts.web1", event)  # acknowledged, but the spool did not know
    assert await agent.publish_wire("alerts.web1", data, msg_id=msg_id) is True
    assert await take(sub, 1) == [event]
    await nothing_more(agent, sub, "alerts.web1", "web1")
    with pytest.raises(codec.WireError, match="not_json"):
        await agent.publish_wire("alerts.web1", data[:-3], msg_id="x")


async def test_one_message_is_decoded_once_for_every_subscriber_of_a_process(
        buses: Callable[..., Awaitable[NatsBus]]) -> None:
    central = await buses("central")
    agent = await buses("web1")
    first = central.subscribe("alerts.>", name="analyzer")
    second = central.subscribe("alerts.>", name="communicator")
    await central.settle()
    await agent.publish("alerts.web1", alert(7))
    (a,) = await take(first, 1)
    (b,) = await take(second, 1)
    assert isinstance(a, Alert) and a.id == "a7" and a is b  # validated once, for both
