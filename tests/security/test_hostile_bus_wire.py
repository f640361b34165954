"""Security corpus: hostile messages on the NATS bus (issue 15).

Anyone who can publish on a subject (a compromised host, a stray client) can send any bytes.
The promise: the codec refuses each with a clear reason and never builds anything but a
registered, validated event; over a real nats-server the subscriber counts it, carries on,
and a refused stored message is not delivered again.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import nats
import pytest

from tests.nats_server import NatsServer
from watchkeeper.bus import codec
from watchkeeper.bus.nats import ERROR_HEADER, NatsBus
from watchkeeper.config import BusConfig
from watchkeeper.events import Alert, Command, CommandReply, Event, Heartbeat, MetricSnapshot

SINCE = datetime(2026, 1, 1, tzinfo=timezone.utc)
ALERT = Alert(host="web1", id="a1", fingerprint="f", rule="cpu", metric="cpu",
              severity="critical", since=SINCE, summary="hot")


def wire(type_: str, event: dict[str, Any]) -> bytes:
    return json.dumps({"type": type_, "event": event}).encode()


def alert_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = ALERT.model_dump(mode="json")
    body.update(changes)
    return body


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"x": value}
    return value


SNAPSHOT = MetricSnapshot(host="web1", seq=1, interval_s=5.0).model_dump(mode="json")

#: (id, payload, topic, reason): what arrives, on which topic, and the refusal expected.
CASES: list[tuple[str, bytes, str, str]] = [
    ("empty", b"", "alerts.web1", "not_json"),
    ("binary-garbage", bytes(range(256)), "alerts.web1", "not_json"),
    ("truncated-json", codec.encode(ALERT)[:-10], "alerts.web1", "not_json"),
    ("nan-literal", b'{"type":"Alert","event":{"value":NaN}}', "alerts.web1", "not_json"),
    ("infinity-by-overflow", wire("Alert", alert_body(value=1e400)).replace(
        b"Infinity", b"1e400"), "alerts.web1", "bad_number"),
    ("integer-past-64-bits", wire("Alert", alert_body(value=10**30)), "alerts.web1",
     "bad_number"),
    ("json-array", b"[1, 2, 3]", "alerts.web1", "not_envelope"),
    ("json-string", b'"Alert"', "alerts.web1", "not_envelope"),
    ("bare-event-no-envelope", ALERT.model_dump_json().encode(), "alerts.web1",
     "not_envelope"),
    ("extra-envelope-key", json.dumps({"type": "Alert", "event": alert_body(),
                                       "py/object": "os.system"}).encode(),
     "alerts.web1", "not_envelope"),
    ("type-not-a-string", json.dumps({"type": ["Alert"], "event": alert_body()}).encode(),
     "alerts.web1", "not_envelope"),
    ("event-not-an-object", json.dumps({"type": "Alert", "event": "x"}).encode(),
     "alerts.web1", "not_envelope"),
    ("unknown-type", wire("EvilEvent", {}), "alerts.web1", "unknown_type"),
    ("python-path-as-type", wire("os.system", {"command": "rm -rf /"}), "alerts.web1",
     "unknown_type"),
    ("dunder-type", wire("__class__", {}), "alerts.web1", "unknown_type"),
    ("base-class-as-type", wire("Event", {"host": "web1"}), "alerts.web1", "unknown_type"),
    ("pydantic-base-as-type", wire("BaseModel", {}), "alerts.web1", "unknown_type"),
    ("non-event-model-as-type", wire("AgentHealth", {"name": "x", "state": "running",
                                                     "interval_s": 1}),
     "alerts.web1", "unknown_type"),
    ("missing-fields", wire("Alert", {"host": "web1"}), "alerts.web1", "invalid_event"),
    ("unknown-field", wire("Alert", alert_body(exec="import os")), "alerts.web1",
     "invalid_event"),
    ("wrong-field-type", wire("Alert", alert_body(severity=["critical"])), "alerts.web1",
     "invalid_event"),
    ("severity-outside-enum", wire("Alert", alert_body(severity="apocalyptic")),
     "alerts.web1", "invalid_event"),
    ("kind-mismatch", wire("Alert", alert_body(kind="metric_snapshot")), "alerts.web1",
     "invalid_event"),
    ("deeply-nested-in-labels", wire("Alert", alert_body(labels=nested(40))), "alerts.web1",
     "too_deep"),
    ("nesting-bomb", b'{"type":"Alert","event":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "alerts.web1", "too_deep"),
    ("oversize", wire("Alert", alert_body(summary="x" * (codec.DEFAULT_MAX_BYTES + 1))),
     "alerts.web1", "oversize"),
    ("snapshot-on-alerts-topic", wire("MetricSnapshot", SNAPSHOT), "alerts.web1",
     "wrong_topic"),
    ("alert-on-metrics-topic", codec.encode(ALERT), "metrics.web1", "wrong_topic"),
    ("command-on-health-topic", codec.encode(Command(host="web1", command="restart")),
     "health.web1.sensor", "wrong_topic"),
    ("alert-of-another-host", codec.encode(ALERT), "alerts.web2", "wrong_host"),
]


@pytest.mark.parametrize(("payload", "topic", "reason"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_codec_refuses_hostile_messages_with_a_reason(payload: bytes, topic: str,
                                                          reason: str) -> None:
    with pytest.raises(codec.WireError) as caught:
        codec.decode(payload, topic=topic)
    assert caught.value.reason == reason


def test_every_event_type_round_trips_and_a_new_one_needs_no_registration() -> None:
    class ProbeRequested(Event):  # as another module adds a command event
        probe: str

    for event in (ALERT, ProbeRequested(host="web1", probe="disk"),
                  Heartbeat.model_validate({"host": "web1", "agent": "sensor", "health": {
                      "name": "sensor", "state": "running", "interval_s": 5}})):
        assert codec.decode(codec.encode(event)) == event
    assert codec.event_class("ProbeRequested") is ProbeRequested


def test_an_event_too_large_to_send_is_refused_at_publish() -> None:
    with pytest.raises(codec.BusError, match="over the"):
        codec.encode(ALERT.model_copy(update={"summary": "x" * 5000}), max_bytes=4096)


_prefixes = itertools.count()


@pytest.fixture
async def hostile(nats_server: NatsServer) -> AsyncIterator[tuple[NatsBus, Any, str]]:
    """A central's bus, and a raw NATS client that publishes anything (the attacker)."""
    prefix = f"hostile{next(_prefixes)}"
    bus = await NatsBus.open(BusConfig(backend="nats", url=nats_server.url,
                                       subject_prefix=prefix), client="central")
    raw = await nats.connect(nats_server.url)
    yield bus, raw, prefix
    await raw.close()
    await bus.close()


WIRE_CASES = [c for c in CASES if c[0] != "oversize"]  # the broker itself caps the size


async def test_hostile_messages_over_a_real_broker_are_counted_and_never_stop_a_subscriber(
        hostile: tuple[NatsBus, Any, str]) -> None:
    bus, raw, prefix = hostile
    # A central's subscriber: JetStream consumers for stored topics, core NATS for health.
    central = bus.subscribe(">", name="communicator")
    observer = bus.subscribe(">", lossy=True)  # the browser's stream
    await bus.settle()
    js = raw.jetstream()
    for _case, payload, topic, _reason in WIRE_CASES:
        subject = f"{prefix}.{topic}"
        if topic.startswith("health."):
            await raw.publish(subject, payload)
        else:
            await js.publish(subject, payload)  # stored, as a host's publish would be
    await raw.flush()
    beat = Heartbeat.model_validate({"host": "web1", "agent": "sensor", "health": {
        "name": "sensor", "state": "running", "interval_s": 5}})
    await js.publish(f"{prefix}.alerts.web1", codec.encode(ALERT))
    await raw.publish(f"{prefix}.health.web1.sensor", codec.encode(beat))

    got = [(await asyncio.wait_for(central.get(), 10))[1] for _ in range(2)]
    assert sorted(type(e).__name__ for e in got) == ["Alert", "Heartbeat"]
    assert ALERT in got and beat in got  # every hostile one was refused, none delivered
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(observer) < 2 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    seen = [item[1] for item in (observer.get_nowait(), observer.get_nowait()) if item]
    assert sorted(type(e).__name__ for e in seen) == ["Alert", "Heartbeat"]
    assert central.get_nowait() is None and observer.get_nowait() is None
    # Counted by reason: each hostile message once per subscriber that received it.
    assert sum(bus.rejected.values()) == 2 * len(WIRE_CASES)
    assert bus.rejected["not_json"] == 2 * 4
    assert bus.rejected["wrong_host"] == 2
    # A refused stored message is terminated: the broker will not deliver it again.
    for psub in central._js:
        info = await js.consumer_info(psub._stream, psub._consumer)
        assert info.num_ack_pending <= 1  # at most the good alert, handed out
        assert info.num_redelivered == 0


async def test_an_oversize_message_is_refused_by_the_broker_itself(
        nats_server: NatsServer) -> None:
    # The streams carry bus.max_message_bytes as their max_msg_size: the broker refuses a
    # larger message before any subscriber sees it.
    prefix = f"hostile{next(_prefixes)}"
    bus = await NatsBus.open(BusConfig(backend="nats", url=nats_server.url,
                                       subject_prefix=prefix, max_message_bytes=65536),
                             client="central")
    raw = await nats.connect(nats_server.url)
    try:
        with pytest.raises(nats.js.errors.APIError, match="message size exceeds"):
            await raw.jetstream().publish(f"{prefix}.alerts.web1",
                                          wire("Alert", alert_body(summary="x" * 100_000)))
    finally:
        await raw.close()
        await bus.close()


async def test_a_hostile_request_never_reaches_the_handler(
        hostile: tuple[NatsBus, Any, str]) -> None:
    bus, raw, prefix = hostile
    called: list[Event] = []

    async def handler(event: Event) -> Event:
        called.append(event)
        return CommandReply(host="web1", agent="sensor", command="pause", ok=True, message="")

    bus.serve("command.web1.sensor", handler)
    await bus.settle()
    for _case, payload, _topic, _reason in CASES[:10]:
        reply = await raw.request(f"{prefix}.command.web1.sensor", payload, timeout=5)
        assert reply.headers is not None and "refused" in reply.headers[ERROR_HEADER]
    assert called == []
    ok = await raw.request(f"{prefix}.command.web1.sensor",
                           codec.encode(Command(host="web1", command="pause")), timeout=5)
    assert isinstance(codec.decode(ok.data), CommandReply)
    assert len(called) == 1


async def test_a_request_cannot_make_a_responder_publish_on_another_subject(
        hostile: tuple[NatsBus, Any, str]) -> None:
    # A reply subject that is not an inbox (here: another host's alerts stream) gets nothing.
    bus, raw, prefix = hostile
    called: list[Event] = []

    async def handler(event: Event) -> Event:
        called.append(event)
        return CommandReply(host="web1", agent="sensor", command="pause", ok=True, message="")

    bus.serve("command.web1.sensor", handler)
    watcher = bus.subscribe("alerts.>", name="watcher")
    await bus.settle()
    await raw.publish(f"{prefix}.command.web1.sensor",
                      codec.encode(Command(host="web1", command="pause")),
                      reply=f"{prefix}.alerts.web2")
    await raw.flush()
    # A real request after it is answered: the one before was seen and ignored.
    ok = await raw.request(f"{prefix}.command.web1.sensor",
                           codec.encode(Command(host="web1", command="pause")), timeout=5)
    assert isinstance(codec.decode(ok.data), CommandReply)
    assert len(called) == 1
    assert watcher.get_nowait() is None and bus.rejected == {}
