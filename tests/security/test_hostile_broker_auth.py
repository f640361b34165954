"""Security corpus: a fleet host's stolen credentials against the broker (issue 15, item 5).

A real nats-server runs with the authorization block `watchkeeper fleet add-central` and
`fleet add-host` print (default subject prefix ``wk``). Host web-1's seed is in the
attacker's hands. The promise: the broker refuses every publication, subscription and
JetStream API call outside web-1's own subjects and inbox, the central never sees a forged
message, the streams and the other members' consumers are untouched; and without a known
key nothing connects at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client

from tests.fleet_auth import CENTRAL, Client_, Fleet, connect_as, make_fleet
from watchkeeper.bus import BusError, codec
from watchkeeper.bus.auth import new_seed
from watchkeeper.bus.nats import NatsBus
from watchkeeper.bus.subjects import STREAM_FAMILIES, durable_name, stream_name
from watchkeeper.events import Alert, Command, CommandReply, Event, MetricSnapshot

T0 = datetime(2030, 3, 1, 12, 0, tzinfo=timezone.utc)
STREAMS = [stream_name("wk", s) for s in STREAM_FAMILIES]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Any:
    fleet = make_fleet(tmp_path_factory.mktemp("auth"))
    fleet.server.start()
    yield fleet
    fleet.server.kill()


@pytest.fixture
async def members(fleet: Fleet) -> AsyncIterator[Callable[[str], Awaitable[Client_]]]:
    """The central's bus (which sets the streams up), then raw connections as members."""
    central = await NatsBus.open(fleet.config(CENTRAL), client=CENTRAL)
    opened: list[Client_] = []

    async def as_member(name: str) -> Client_:
        client = await connect_as(fleet, name)
        opened.append(client)
        return client

    yield as_member
    for client in opened:
        await client.nc.close()
    await central.close()


async def stream_counts(admin: Client_) -> dict[str, int]:
    js = admin.nc.jetstream()
    return {name: (await js.stream_info(name)).state.messages for name in STREAMS}


CONSUMER_REQUEST = json.dumps({"stream_name": "WK_ALERTS", "config": {
    "name": "thief", "filter_subject": "wk.alerts.>", "deliver_subject": "_INBOX.web-1.loot",
    "ack_policy": "none"}}).encode()

# (subject web-1 publishes to, body): each is refused by the broker.
PUBLISH_ATTACKS = [
    pytest.param("wk.metrics.db-1", b"{}", id="metrics-as-another-host"),
    pytest.param("wk.alerts.db-1", b"{}", id="alert-for-another-host"),
    pytest.param("wk.actions.db-1", b"{}", id="action-result-as-another-host"),
    pytest.param("wk.audit.db-1", b"{}", id="audit-entry-as-another-host"),
    pytest.param("wk.services.db-1", b"{}", id="service-report-as-another-host"),
    pytest.param("wk.health.db-1.sensor", b"{}", id="heartbeat-as-another-host"),
    pytest.param("wk.errors.db-1.sensor", b"{}", id="agent-error-as-another-host"),
    pytest.param("wk.system.central-1", b"{}", id="system-event-as-the-central"),
    pytest.param("wk.command.db-1.remediator", b"{}", id="command-to-another-host"),
    pytest.param("wk.command.db-1.runtime", b"{}", id="config-command-to-another-host"),
    pytest.param("other.metrics.web-1", b"{}", id="outside-the-subject-prefix"),
    pytest.param("_INBOX.central-1.x.y", b"{}", id="reply-into-the-centrals-inbox"),
    pytest.param("_INBOX.db-1.x.y", b"{}", id="reply-into-another-hosts-inbox"),
    pytest.param("$JS.ACK.WK_ALERTS.c.1.1.1.0.0", b"", id="forged-jetstream-ack"),
    pytest.param("$JS.API.STREAM.DELETE.WK_ALERTS", b"", id="delete-the-alerts-stream"),
    pytest.param("$JS.API.STREAM.DELETE.WK_AUDIT", b"", id="delete-the-audit-stream"),
    pytest.param("$JS.API.STREAM.PURGE.WK_ACTIONS", b"", id="purge-the-actions-stream"),
    pytest.param("$JS.API.STREAM.PURGE.WK_METRICS",
                 b'{"filter": "wk.metrics.db-1"}', id="purge-another-hosts-metrics"),
    pytest.param("$JS.API.STREAM.UPDATE.WK_ALERTS",
                 b'{"name": "WK_ALERTS", "subjects": ["wk.alerts.>"], "max_age": 1}',
                 id="shrink-the-alerts-stream-limits"),
    pytest.param("$JS.API.STREAM.CREATE.LOOT",
                 b'{"name": "LOOT", "subjects": ["wk.>"]}', id="create-a-stream-over-all"),
    pytest.param("$JS.API.STREAM.MSG.DELETE.WK_AUDIT", b'{"seq": 1}', id="delete-an-audit-entry"),
    pytest.param("$JS.API.STREAM.MSG.GET.WK_ALERTS", b'{"last_by_subj": "wk.alerts.db-1"}',
                 id="read-another-hosts-alert-by-get"),
    pytest.param("$JS.API.DIRECT.GET.WK_ALERTS", b'{"seq": 1}', id="direct-get-of-a-stream"),
    pytest.param("$JS.API.STREAM.INFO.WK_METRICS", b'{"subjects_filter": ">"}',
                 id="list-the-fleets-hosts-by-stream-info"),
    pytest.param("$JS.API.STREAM.LIST", b"", id="list-streams"),
    pytest.param("$JS.API.CONSUMER.LIST.WK_ALERTS", b"", id="list-consumers"),
    pytest.param("$JS.API.CONSUMER.NAMES.WK_ALERTS", b"", id="consumer-names"),
    pytest.param("$JS.API.CONSUMER.INFO.WK_ALERTS.x", b"", id="read-a-consumers-settings"),
    pytest.param("$JS.API.CONSUMER.DELETE.WK_ALERTS.x", b"", id="delete-a-consumer"),
    pytest.param("$JS.API.CONSUMER.CREATE.WK_ALERTS", CONSUMER_REQUEST,
                 id="consumer-with-filter-in-body-only"),
    pytest.param("$JS.API.CONSUMER.DURABLE.CREATE.WK_ALERTS.thief", CONSUMER_REQUEST,
                 id="legacy-durable-consumer-create"),
    pytest.param("$JS.API.CONSUMER.CREATE.WK_ALERTS.thief.wk.alerts.db-1", CONSUMER_REQUEST,
                 id="consumer-on-another-hosts-alerts"),
    pytest.param("$JS.API.CONSUMER.CREATE.WK_ALERTS.thief.wk.alerts.>", CONSUMER_REQUEST,
                 id="consumer-on-every-hosts-alerts"),
    pytest.param("$JS.API.CONSUMER.CREATE.WK_ALERTS.thief.wk.alerts.*", CONSUMER_REQUEST,
                 id="consumer-on-wildcard-host"),
    pytest.param("$JS.API.CONSUMER.CREATE.WK_METRICS.thief.wk.*.web-1", CONSUMER_REQUEST,
                 id="consumer-with-wildcard-family"),
    pytest.param("$JS.API.CONSUMER.MSG.NEXT.WK_ALERTS.x", b"1", id="pull-from-a-consumer"),
    pytest.param("$JS.API.INFO", b"", id="account-info"),
    pytest.param("$SYS.REQ.SERVER.PING", b"", id="system-account-request"),
]


@pytest.mark.parametrize(("subject", "body"), PUBLISH_ATTACKS)
async def test_a_host_publishing_outside_its_own_subjects_is_refused(
        members: Callable[[str], Awaitable[Client_]], subject: str, body: bytes) -> None:
    central = await members(CENTRAL)
    watch = await central.nc.subscribe("wk.>")
    db_1 = await members("db-1")
    before = await stream_counts(central)
    attacker = await members("web-1")

    await attacker.nc.publish(subject, body, reply=attacker.nc.new_inbox())
    await attacker.settled()
    assert attacker.refused("publish", subject), attacker.errors

    # The central hears db-1's next message, and nothing from the attacker before it.
    await db_1.nc.publish("wk.health.db-1.sensor", b"sentinel")
    await db_1.settled()
    await central.settled()
    seen = [(await watch.next_msg(timeout=1)).subject for _ in range(watch.pending_msgs)]
    assert seen == ["wk.health.db-1.sensor"]
    await watch.unsubscribe()
    assert await stream_counts(central) == before  # nothing deleted, purged or added


# (pattern web-1 subscribes to): each is refused, and legitimate traffic that would match
# it never reaches the attacker.
SUBSCRIBE_ATTACKS = [
    pytest.param("wk.command.db-1.>", id="another-hosts-commands"),
    pytest.param("wk.command.*.runtime", id="every-hosts-config-commands"),
    pytest.param("wk.alerts.db-1", id="another-hosts-alerts"),
    pytest.param("wk.metrics.*", id="every-hosts-metrics"),
    pytest.param("wk.>", id="the-whole-fleet"),
    pytest.param(">", id="everything"),
    pytest.param("_INBOX.>", id="every-inbox"),
    pytest.param("_INBOX.central-1.>", id="the-centrals-replies"),
    pytest.param("_INBOX.db-1.>", id="another-hosts-replies-and-deliveries"),
    pytest.param("$JS.ACK.>", id="jetstream-acks"),
    pytest.param("$JS.EVENT.>", id="jetstream-advisories"),
    pytest.param("$JS.API.>", id="others-jetstream-api-calls"),
]


@pytest.mark.parametrize("pattern", SUBSCRIBE_ATTACKS)
async def test_a_host_reading_outside_its_own_subjects_is_refused(
        members: Callable[[str], Awaitable[Client_]], pattern: str) -> None:
    central = await members(CENTRAL)
    db_1 = await members("db-1")
    attacker = await members("web-1")
    loot = await attacker.nc.subscribe(pattern)
    await attacker.settled()
    assert attacker.refused("subscription", pattern), attacker.errors

    # Legitimate traffic of every kind the pattern would match: a command to db-1 and its
    # reply (into the central's inbox), db-1's stored publication (its acknowledgement into
    # db-1's inbox) and an alert the central stores for db-1.
    async def answer(msg: Any) -> None:
        await msg.respond(b"done")

    served = await db_1.nc.subscribe("wk.command.db-1.runtime", cb=answer)
    await db_1.settled()
    reply = await central.nc.request("wk.command.db-1.runtime", b"{}", timeout=10)
    assert reply.data == b"done"
    await db_1.nc.jetstream().publish("wk.alerts.db-1", b"{}")
    await central.nc.jetstream().publish("wk.alerts.db-1", b"{}")
    await served.unsubscribe()
    await attacker.settled()
    assert loot.pending_msgs == 0 and loot.delivered == 0
    assert not central.errors and not db_1.errors


async def test_a_host_cannot_repoint_another_members_durable_consumer(
        fleet: Fleet, members: Callable[[str], Awaitable[Client_]]) -> None:
    """Allowed to create consumers on its own subjects, a host could take over a consumer
    whose name it knows by creating it again with its own filter and inbox. Names are keyed
    by each member's own seed: the name a host can work out is not the central's."""
    central = await NatsBus.open(fleet.config(CENTRAL), client=CENTRAL)
    db_1 = await NatsBus.open(fleet.config("db-1"), client="db-1", manage_streams=False)
    attacker = await members("web-1")
    try:
        sub = central.subscribe("metrics.*", name="analyzer")
        await central.settle()
        guessed = durable_name(CENTRAL, "analyzer", "wk.metrics.*")
        actual = sub._js[0]._consumer
        assert actual != guessed
        hijack = {"stream_name": "WK_METRICS", "config": {
            "name": guessed, "durable_name": guessed, "filter_subject": "wk.metrics.web-1",
            # Where the central's consumer of that name would deliver (bus/nats.py).
            "deliver_subject": f"_INBOX.{CENTRAL}.{guessed}", "ack_policy": "explicit",
            "deliver_policy": "new", "max_ack_pending": 1000, "ack_wait": 60_000_000_000}}
        await attacker.nc.request(
            f"$JS.API.CONSUMER.CREATE.WK_METRICS.{guessed}.wk.metrics.web-1",
            json.dumps(hijack).encode(), timeout=10)  # allowed: its own subjects
        snap = MetricSnapshot(host="db-1", seq=1, interval_s=5.0, at=T0)
        await db_1.publish("metrics.db-1", snap)
        topic, event = await asyncio.wait_for(sub.get(), 10)
        assert (topic, event) == ("metrics.db-1", snap)
    finally:
        await db_1.close()
        await central.close()


async def test_a_host_bus_publishing_as_another_host_gets_a_clear_refusal(
        fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    """What an agent's log says when its credentials do not cover a subject (a host_name
    that is not the one its key was made for, or an attacker's attempt)."""
    central = await NatsBus.open(fleet.config(CENTRAL), client=CENTRAL)
    web_1 = await NatsBus.open(fleet.config("web-1", publish_timeout_s=1.0), client="web-1",
                               manage_streams=False)
    try:
        sub = central.subscribe("metrics.*", name="communicator")
        await central.settle()
        forged = MetricSnapshot(host="db-1", seq=1, interval_s=5.0, at=T0)
        with pytest.raises(BusError, match=r"permissions of 'web-1' do not allow publishing "
                           r"to 'wk\.metrics\.db-1'"):
            await web_1.publish("metrics.db-1", forged)
        assert web_1.denied == 1
        assert "refused this client" in caplog.text and "wk.metrics.db-1" in caplog.text
        own = MetricSnapshot(host="web-1", seq=2, interval_s=5.0, at=T0)
        await web_1.publish("metrics.web-1", own)
        assert await asyncio.wait_for(sub.get(), 10) == ("metrics.web-1", own)
    finally:
        await web_1.close()
        await central.close()


async def test_a_host_cannot_answer_for_another_host(
        fleet: Fleet, members: Callable[[str], Awaitable[Client_]]) -> None:
    """web-1 serving db-1's command subject: its subscription is refused, so the central's
    command reaches db-1 and db-1's answer comes back."""
    central = await NatsBus.open(fleet.config(CENTRAL), client=CENTRAL)
    db_1 = await NatsBus.open(fleet.config("db-1"), client="db-1", manage_streams=False)
    web_1 = await NatsBus.open(fleet.config("web-1"), client="web-1", manage_streams=False)

    def answer(who: str) -> Callable[[Event], Awaitable[Event]]:
        async def handle(event: Event) -> Event:
            return CommandReply(host="db-1", agent="runtime", command="status", ok=True,
                                message=who)
        return handle

    try:
        web_1.serve("command.db-1.runtime", answer("web-1"))
        await web_1.settle()
        assert web_1.denied == 1
        db_1.serve("command.db-1.runtime", answer("db-1"))
        await db_1.settle()
        for _ in range(5):
            reply = await central.request("command.db-1.runtime",
                                          Command(host="db-1", command="status"), timeout=10)
            assert isinstance(reply, CommandReply) and reply.message == "db-1"
    finally:
        await web_1.close()
        await db_1.close()
        await central.close()


@pytest.mark.parametrize("who", [
    pytest.param(None, id="no-credentials"),
    pytest.param("unknown-key", id="a-key-the-broker-does-not-know"),
])
async def test_a_client_without_a_known_key_cannot_connect(fleet: Fleet, tmp_path: Path,
                                                           who: str | None) -> None:
    options: dict[str, Any] = {"allow_reconnect": False, "connect_timeout": 5,
                               "max_reconnect_attempts": 0}
    if who is not None:
        seed, _public = new_seed()
        path = tmp_path / "stranger.nk"
        path.write_text(seed)
        path.chmod(0o600)
        options["nkeys_seed"] = str(path)
    nc = Client()
    try:
        with pytest.raises((nats.errors.Error, OSError)) as caught:
            await nc.connect(fleet.server.url, **options)
    finally:
        await nc.close()  # nats-py leaves the refused connection's socket open otherwise
    assert "authorization" in str(caught.value).lower() or \
        isinstance(caught.value, nats.errors.NoServersError)


@pytest.mark.parametrize("subject", [
    pytest.param("$JS.API.STREAM.DELETE.WK_ALERTS", id="central-deletes-the-alerts-stream"),
    pytest.param("$JS.API.STREAM.PURGE.WK_AUDIT", id="central-purges-the-audit-stream"),
    pytest.param("$JS.API.STREAM.MSG.DELETE.WK_ACTIONS", id="central-deletes-an-action"),
])
async def test_even_the_central_cannot_destroy_history(
        members: Callable[[str], Awaitable[Client_]], subject: str) -> None:
    central = await members(CENTRAL)
    before = await stream_counts(central)
    await central.nc.publish(subject, b'{"seq": 1}', reply=central.nc.new_inbox())
    await central.settled()
    assert central.refused("publish", subject), central.errors
    assert await stream_counts(central) == before


@pytest.mark.parametrize("name", [
    pytest.param("web.1", id="dot-splits-subjects"),
    pytest.param("*", id="single-token-wildcard"),
    pytest.param(">", id="full-wildcard"),
    pytest.param("web-1.>", id="wildcard-tail"),
    pytest.param("web 1", id="space"),
    pytest.param("web-1\n", id="newline"),
    pytest.param("web\x1b[2J", id="terminal-escape"),
    pytest.param("../../etc/cron.d/x", id="path-traversal"),
    pytest.param("web/1", id="slash"),
    pytest.param('web"} , {nkey: "UX', id="config-injection-quote"),
    pytest.param("web#1", id="config-comment"),
    pytest.param("_INBOX", id="inbox-name"),
    pytest.param("$SYS", id="system-account-name"),
    pytest.param("-web", id="leading-dash-option-like"),
    pytest.param("", id="empty"),
    pytest.param("w" * 64, id="too-long"),
    pytest.param("wéb", id="non-ascii"),
])
def test_a_hostile_fleet_name_is_refused_and_nothing_is_written(tmp_path: Path,
                                                                name: str) -> None:
    for command in ("add-host", "add-central"):
        out = subprocess.run([sys.executable, "-m", "watchkeeper", "fleet", command, "--dir",
                              "keys", "--", name], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60,
                             env={k: v for k, v in os.environ.items()
                                  if not k.startswith("WATCHKEEPER_")})
        assert out.returncode == 2, out.stdout + out.stderr
        assert "invalid fleet name" in out.stderr
        assert "1-63 letters, digits, '-' and '_'" in out.stderr
        assert out.stdout == ""
        assert not (tmp_path / "keys").exists()


def test_a_name_that_has_a_key_already_is_refused_and_the_key_kept(tmp_path: Path) -> None:
    def add(command: str, name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "watchkeeper", "fleet", command,
                               "--dir", "keys", name], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)

    assert add("add-host", "web-1").returncode == 0
    seed = (tmp_path / "keys/web-1.nk").read_bytes()
    for command in ("add-host", "add-central"):
        out = add(command, "web-1")
        assert out.returncode == 2 and "web-1 has an identity" in out.stderr
    assert (tmp_path / "keys/web-1.nk").read_bytes() == seed
    assert add("add-central", "central").returncode == 0
    out = add("add-central", "central-2")
    assert out.returncode == 2 and "has a central already" in out.stderr


async def test_a_consumer_delivering_into_another_hosts_subject_speaks_only_as_its_host(
        fleet: Fleet, members: Callable[[str], Awaitable[Client_]]) -> None:
    """A host may create consumers on its own subjects, and the deliver subject is the
    request body's, which no permission can confine: it can have its own stored messages
    pushed onto another host's subject. They arrive under their own subject (web-1's), so
    a receiver never takes them for db-1's, and no stream stores them as db-1's."""
    central_bus = await NatsBus.open(fleet.config(CENTRAL), client=CENTRAL)
    try:
        alerts = central_bus.subscribe("alerts.*", name="communicator")
        await central_bus.settle()
        central = await members(CENTRAL)
        literal = await central.nc.subscribe("wk.alerts.db-1")  # interest makes it deliver
        await central.settled()
        attacker = await members("web-1")
        forged = Alert(host="db-1", id="x", fingerprint="x", rule="cpu", metric="cpu",
                       severity="critical", since=T0, at=T0, summary="forged")
        await attacker.nc.jetstream().publish("wk.system.web-1", codec.encode(forged))
        request = {"stream_name": "WK_EVENTS", "config": {
            "name": "relay", "filter_subject": "wk.system.web-1", "deliver_policy": "all",
            "deliver_subject": "wk.alerts.db-1", "ack_policy": "none"}}
        await attacker.nc.request("$JS.API.CONSUMER.CREATE.WK_EVENTS.relay.wk.system.web-1",
                                  json.dumps(request).encode(), timeout=10)
        relayed = await literal.next_msg(timeout=10)
        assert relayed.subject.startswith("wk.system.web-1")  # its own subject, not db-1's
        real = Alert(host="db-1", id="r", fingerprint="r", rule="cpu", metric="cpu",
                     severity="warning", since=T0, at=T0, summary="real")
        await central_bus.publish("alerts.db-1", real)
        assert await asyncio.wait_for(alerts.get(), 10) == ("alerts.db-1", real)
    finally:
        await central_bus.close()


@pytest.mark.parametrize("headers", [
    pytest.param({"Nats-Rollup": "all"}, id="rollup-purges-the-whole-stream"),
    pytest.param({"Nats-Rollup": "sub"}, id="rollup-purges-its-subject"),
    pytest.param({"Nats-TTL": "1s"}, id="message-ttl"),
    pytest.param({"Nats-Schedule": "@at 2030-01-01T00:00:00Z",
                  "Nats-Schedule-Target": "wk.alerts.db-1"}, id="scheduled-message-as-another"),
])
async def test_a_host_cannot_purge_or_schedule_through_headers_on_its_own_subject(
        members: Callable[[str], Awaitable[Client_]], headers: dict[str, str]) -> None:
    """The streams allow no roll-ups, per-message TTLs or schedules (off by default), so
    headers on a host's own subject cannot remove others' history or publish as another."""
    central = await members(CENTRAL)
    await central.nc.jetstream().publish("wk.alerts.db-1", b"{}")
    before = await stream_counts(central)
    attacker = await members("web-1")
    with pytest.raises(nats.js.errors.Error):
        await attacker.nc.jetstream().publish("wk.alerts.web-1", b"{}", headers=headers)
    assert await stream_counts(central) == before
