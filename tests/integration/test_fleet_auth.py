"""A fleet on a broker with per-host keys and TLS, as the README sets it up: identities from
`watchkeeper fleet add-central/add-host`, nats-server started with the block they print, a
self-signed CA made by the test. The legitimate traffic all works (metrics to the central,
alerts to the host and their acknowledgements, commands and their replies); a client that
does not trust the broker's CA, or names a file that is not there, is refused clearly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import nats.aio.client
import pytest

from tests.fleet_auth import CENTRAL, connect_as, make_fleet
from tests.nats_server import NatsServer
from tests.tls_certs import TestCA, tls_block
from watchkeeper.bus import BusError
from watchkeeper.bus.nats import NatsBus
from watchkeeper.config import validate
from watchkeeper.events import Alert, Command, CommandReply, Event, MetricSnapshot

from .served import stop_all, until
from .test_api_security import start_serve
from .test_cli import wk, wk_env

T0 = datetime(2030, 3, 1, 12, 0, tzinfo=timezone.utc)


def alert(n: int) -> Alert:
    return Alert(host="web-1", id=f"a{n}", fingerprint=f"f{n}", rule="cpu", metric="cpu",
                 severity="critical", since=T0, at=T0, summary=f"alert {n}")


async def test_a_host_and_the_central_with_their_own_keys_do_all_they_need(
        tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    fleet.server.start()
    central = await NatsBus.open(fleet.config(CENTRAL), client=CENTRAL)
    # As `watchkeeper agent` opens it: the streams are the central's business.
    host = await NatsBus.open(fleet.config("web-1"), client="web-1", manage_streams=False)
    try:
        metrics = central.subscribe("metrics.*", name="analyzer")
        alerts = host.subscribe("alerts.web-1", name="remediator")

        async def sensor(event: Event) -> Event:
            assert isinstance(event, Command)
            return CommandReply(host="web-1", agent="sensor", command=event.command, ok=True,
                                message="healthy")

        host.serve("command.web-1.sensor", sensor)
        await asyncio.gather(central.settle(), host.settle())

        snap = MetricSnapshot(host="web-1", seq=1, interval_s=5.0, at=T0)
        await host.publish("metrics.web-1", snap)
        assert await asyncio.wait_for(metrics.get(), 10) == ("metrics.web-1", snap)

        await central.publish("alerts.web-1", alert(1))
        assert await asyncio.wait_for(alerts.get(), 10) == ("alerts.web-1", alert(1))

        reply = await central.request("command.web-1.sensor",
                                      Command(host="web-1", command="health_check"))
        assert isinstance(reply, CommandReply) and reply.ok and reply.message == "healthy"

        # The host's acknowledgement was allowed: after its restart, alert 1 is not again.
        await host.close()
        host = await NatsBus.open(fleet.config("web-1"), client="web-1", manage_streams=False)
        alerts = host.subscribe("alerts.web-1", name="remediator")
        await host.settle()
        await central.publish("alerts.web-1", alert(2))
        assert await asyncio.wait_for(alerts.get(), 10) == ("alerts.web-1", alert(2))
        assert host.denied == 0 and central.denied == 0
    finally:
        await host.close()
        await central.close()
        fleet.server.kill()


async def test_a_host_reads_its_own_metrics_again_after_a_broker_restart(
        tmp_path: Path) -> None:
    """The metrics stream lives in memory: a broker restart loses it and its consumers. The
    central makes it again; a host, which may not look at streams, asks for its consumers
    again until the stream is back, and reads its own metrics again."""
    fleet = make_fleet(tmp_path)
    fleet.server.start()
    central = await NatsBus.open(fleet.config(CENTRAL), client=CENTRAL)
    host = await NatsBus.open(fleet.config("web-1"), client="web-1", manage_streams=False)
    try:
        own = host.subscribe("metrics.web-1", name="communicator")
        await host.settle()
        first = MetricSnapshot(host="web-1", seq=1, interval_s=5.0, at=T0)
        await host.publish("metrics.web-1", first)
        assert await asyncio.wait_for(own.get(), 10) == ("metrics.web-1", first)
        fleet.server.kill()
        fleet.server.start()
        got: tuple[str, Event] | None = None
        for seq in range(2, 200):  # one snapshot at a time, as a sensor sends them
            snap = MetricSnapshot(host="web-1", seq=seq, interval_s=5.0, at=T0)
            with contextlib.suppress(BusError):  # the stream is not back yet
                await host.publish("metrics.web-1", snap)
            with contextlib.suppress(asyncio.TimeoutError):
                got = await asyncio.wait_for(own.get(), 0.5)
                break
        assert got is not None and got[0] == "metrics.web-1"
        assert isinstance(got[1], MetricSnapshot) and got[1].seq > 1
        # At most the acknowledgement of the first snapshot, sent after the restart (the
        # broker forgot it had delivered it): nothing was published or read out of bounds.
        assert host.denied == 0 or "$js.ack." in host.last_denied.lower()
    finally:
        await host.close()
        await central.close()
        fleet.server.kill()


async def test_an_alert_handled_across_a_broker_restart_is_acknowledged(
        tmp_path: Path) -> None:
    """A host handles an alert while the broker restarts (a file stream: it survives): its
    acknowledgement afterwards counts (a host may answer only what it received), and the
    alert is not left pending for ever. bus.ack_wait_s 1 s here, for a redelivery to come
    within the test."""
    fleet = make_fleet(tmp_path)
    fleet.server.start()
    central = await NatsBus.open(fleet.config(CENTRAL), client=CENTRAL)
    host = await NatsBus.open(fleet.config("web-1", ack_wait_s=1.0), client="web-1",
                              manage_streams=False)
    try:
        alerts = host.subscribe("alerts.web-1", name="remediator")
        await host.settle()
        await central.publish("alerts.web-1", alert(1))
        assert await asyncio.wait_for(alerts.get(), 10) == ("alerts.web-1", alert(1))
        consumer = alerts._js[0]._consumer
        fleet.server.kill()
        fleet.server.start()
        await asyncio.wait_for(central._connected.wait(), 10)
        await central.publish("alerts.web-1", alert(2))  # once both are back
        assert await asyncio.wait_for(alerts.get(), 20) == ("alerts.web-1", alert(2))
        assert central._js is not None
        for _ in range(100):
            info = await central._js.consumer_info("WK_ALERTS", consumer)
            if info.num_ack_pending == 1:  # alert 2, being handled; alert 1 acknowledged
                break
            await asyncio.sleep(0.1)
        assert info.num_ack_pending == 1 and host.denied == 0
    finally:
        await host.close()
        await central.close()
        fleet.server.kill()


def _block(stdout: str) -> str:
    """The authorization block `fleet add-*` prints after its instructions."""
    return stdout[stdout.index("authorization {"):]


def test_agent_and_central_processes_on_the_keys_fleet_add_host_made(tmp_path: Path) -> None:
    """The README's steps, with default settings except: agents tick every 0.5 s, to take
    seconds. One broker of the test's own, so the default subject prefix."""
    out = wk(tmp_path, "fleet", "add-central", "central", "--dir", "keys")
    assert out.returncode == 0, out.stderr
    out = wk(tmp_path, "fleet", "add-host", "web-1", "--dir", "keys")
    assert out.returncode == 0, out.stderr
    for name in ("central", "web-1"):  # the seeds are written, never printed
        seed = (tmp_path / "keys" / f"{name}.nk").read_text().strip()
        assert seed.startswith("SU") and seed not in out.stdout + out.stderr
        assert (tmp_path / "keys" / f"{name}.nk").stat().st_mode & 0o777 == 0o600
    (tmp_path / "broker").mkdir()
    server = NatsServer(tmp_path / "broker", extra=_block(out.stdout))
    server.start()
    central_dir, host_dir = tmp_path / "central", tmp_path / "web-1"
    central_dir.mkdir()
    host_dir.mkdir()
    central_env = wk_env(central_dir, WATCHKEEPER_HOST_NAME="central",
                         WATCHKEEPER_BUS__NKEY_SEED_FILE=str(tmp_path / "keys/central.nk"))
    agent_env = wk_env(host_dir, WATCHKEEPER_HOST_NAME="web-1",
                       WATCHKEEPER_AGENTS__CHECK_INTERVAL="0.5",
                       WATCHKEEPER_BUS__NKEY_SEED_FILE=str(tmp_path / "keys/web-1.nk"))
    central, url = start_serve(central_dir, central_env, "--fleet", "--server", server.url)
    agent = subprocess.Popen([sys.executable, "-m", "watchkeeper", "agent", "--server",
                              server.url, "--no-console-log"], cwd=host_dir, env=agent_env,
                             stderr=subprocess.DEVNULL)
    try:
        def web_1() -> dict[str, Any] | None:
            hosts = httpx.get(f"{url}/api/hosts", timeout=5).json()
            return next((h for h in hosts["hosts"] if h["host"] == "web-1"
                         and h["health"] != "unknown"), None)

        until(web_1, "the central to hear from web-1")
        snap = httpx.get(f"{url}/api/metrics", params={"host": "web-1"}, timeout=5)
        assert snap.status_code == 200 and snap.json()["host"] == "web-1"

        async def command() -> Event:
            # With the central's key, as the central's API does.
            config = validate({"bus": {"backend": "nats", "url": server.url,
                                       "nkey_seed_file": str(tmp_path / "keys/central.nk")}})
            bus = await NatsBus.open(config.bus, client="central", manage_streams=False)
            try:
                return await bus.request("command.web-1.sensor",
                                         Command(host="web-1", command="health_check"),
                                         timeout=10)
            finally:
                await bus.close()

        reply = asyncio.run(command())
        assert isinstance(reply, CommandReply) and reply.ok, reply
        for logs in (central_dir / "logs", host_dir / "logs"):
            text = "".join(p.read_text() for p in logs.glob("*.log"))
            assert "refused this client" not in text
    finally:
        stop_all(agent, central)
        server.kill()


# -- TLS

@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A broker that speaks TLS only, with a certificate for 127.0.0.1 from the test's CA;
    client certificates are asked for but not required."""
    root = tmp_path_factory.mktemp("tls")
    ca = TestCA(root / "pki")
    server_pair = ca.issue("server", "127.0.0.1", server=True)
    server = NatsServer(root, extra=tls_block(ca, server_pair, verify_clients=False),
                        scheme="tls")
    server.start()
    yield server, ca
    server.kill()


async def test_an_agent_that_trusts_the_brokers_ca_connects_over_tls(tls_broker: Any) -> None:
    server, ca = tls_broker
    settings = validate({"bus": {"backend": "nats", "url": server.url,
                                 "tls_ca_file": str(ca.pem)}})
    central = await NatsBus.open(settings.bus, client="central")
    host = await NatsBus.open(settings.bus, client="web-1")
    try:
        sub = central.subscribe("metrics.*", name="analyzer")
        await central.settle()
        snap = MetricSnapshot(host="web-1", seq=1, interval_s=5.0, at=T0)
        await host.publish("metrics.web-1", snap)
        assert await asyncio.wait_for(sub.get(), 10) == ("metrics.web-1", snap)
        transport: Any = central._nc._transport if central._nc is not None else None
        assert transport._io_writer.get_extra_info("ssl_object") is not None  # encrypted
    finally:
        await host.close()
        await central.close()


async def test_a_client_that_does_not_trust_the_brokers_ca_is_refused(tls_broker: Any,
                                                                      tmp_path: Path) -> None:
    server, _ca = tls_broker
    stranger = TestCA(tmp_path / "other", name="someone else's CA")
    for extra in ({}, {"tls_ca_file": str(stranger.pem)}):  # system CAs; another CA
        settings = validate({"bus": {"backend": "nats", "url": server.url, **extra}})
        with pytest.raises(BusError, match=r"cannot connect .*CERTIFICATE_VERIFY_FAILED"):
            await NatsBus.open(settings.bus, client="web-1", manage_streams=False)


async def test_mutual_tls_with_a_client_certificate(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    server = NatsServer(tmp_path, scheme="tls", extra=tls_block(
        ca, ca.issue("server", "127.0.0.1", server=True), verify_clients=True))
    server.start()
    try:
        client = ca.issue("web-1", "web-1", server=False)
        good = validate({"bus": {"backend": "nats", "url": server.url,
                                 "tls_ca_file": str(ca.pem), "tls_cert_file": str(client.cert),
                                 "tls_key_file": str(client.key)}})
        bus = await NatsBus.open(good.bus, client="web-1")
        assert bus.online
        await bus.close()
        no_cert = validate({"bus": {"backend": "nats", "url": server.url,
                                    "tls_ca_file": str(ca.pem)}})
        with pytest.raises(BusError, match="cannot connect"):
            await NatsBus.open(no_cert.bus, client="web-1")
    finally:
        server.kill()


async def test_a_key_per_host_over_tls_as_the_readme_sets_it_up(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    fleet = make_fleet(tmp_path, scheme="tls", extra=tls_block(
        ca, ca.issue("server", "127.0.0.1", server=True), verify_clients=False))
    fleet.server.start()
    try:
        central = await NatsBus.open(fleet.config(CENTRAL, tls_ca_file=str(ca.pem)),
                                     client=CENTRAL)
        host = await NatsBus.open(fleet.config("web-1", tls_ca_file=str(ca.pem),
                                               publish_timeout_s=1.0),
                                  client="web-1", manage_streams=False)
        try:
            sub = central.subscribe("metrics.*", name="analyzer")
            await central.settle()
            snap = MetricSnapshot(host="web-1", seq=1, interval_s=5.0, at=T0)
            await host.publish("metrics.web-1", snap)
            assert await asyncio.wait_for(sub.get(), 10) == ("metrics.web-1", snap)
            with pytest.raises(BusError, match="do not allow publishing"):
                await host.publish("metrics.db-1", MetricSnapshot(
                    host="db-1", seq=1, interval_s=5.0, at=T0))
        finally:
            await host.close()
            await central.close()
    finally:
        fleet.server.kill()


@pytest.mark.parametrize(("key", "problem"), [
    pytest.param("tls_ca_file", "missing", id="ca-file-missing"),
    pytest.param("tls_ca_file", "not-pem", id="ca-file-not-a-certificate"),
    pytest.param("nkey_seed_file", "missing", id="seed-file-missing"),
    pytest.param("nkey_seed_file", "not-pem", id="seed-file-not-a-seed"),
    pytest.param("nkey_seed_file", "world-readable", id="seed-file-readable-by-others"),
])
def test_a_wrong_credential_or_tls_file_is_a_config_error_at_start(
        tmp_path: Path, key: str, problem: str) -> None:
    path = tmp_path / "file.pem"
    if problem != "missing":
        path.write_text("not what it should be\n")
    if problem == "world-readable":
        wk(tmp_path, "fleet", "add-host", "web-1", "--dir", "keys")
        path = tmp_path / "keys" / "web-1.nk"
        path.chmod(0o644)
    env = wk_env(tmp_path, **{f"WATCHKEEPER_BUS__{key.upper()}": str(path)})
    out = wk(tmp_path, "agent", "--server", "tls://127.0.0.1:1", env=env)
    assert out.returncode == 2, out.stderr
    assert f"bus.{key}:" in out.stderr and str(path) in out.stderr
    if problem == "world-readable":
        assert "chmod 600" in out.stderr
    # `config validate` tells it before any start (a warning: the file itself is valid).
    (tmp_path / "watchkeeper.yaml").write_text("bus: {backend: nats}\n")
    out = wk(tmp_path, "config", "validate", env=env)
    assert out.returncode == 0 and f"warning: bus.{key}:" in out.stderr, out.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())
    assert os.environ.get("WATCHKEEPER_BUS__NKEY_SEED_FILE") is None


# -- revocation

async def test_a_revoked_key_is_cut_off_at_the_brokers_reload(tmp_path: Path) -> None:
    """`watchkeeper fleet remove web-1`, its block installed and the broker reloaded (SIGHUP,
    as `nats-server --signal reload`): web-1's live connection is closed, its old seed is
    refused, and db-1 goes on as before."""
    fleet = make_fleet(tmp_path)
    fleet.server.start()
    old_seed = tmp_path / "web-1-old.nk"
    old_seed.write_text(fleet.seed("web-1").read_text())
    old_seed.chmod(0o600)
    web, db = await connect_as(fleet, "web-1"), await connect_as(fleet, "db-1")
    try:
        for member, name in ((web, "web-1"), (db, "db-1")):
            await member.nc.publish(f"wk.metrics.{name}", b"{}")
            await member.settled()
            assert member.errors == [] and member.nc.is_connected
        out = wk(tmp_path, "fleet", "list", "--dir", str(fleet.keys))
        assert out.returncode == 0 and "web-1" in out.stdout, out.stderr
        out = wk(tmp_path, "fleet", "remove", "web-1", "--dir", str(fleet.keys))
        assert out.returncode == 0, out.stderr
        assert not fleet.seed("web-1").exists()
        assert "web-1" not in out.stdout[out.stdout.index("authorization {"):]
        fleet.server.reload(out.stdout[out.stdout.index("authorization {"):])
        for _ in range(100):  # the broker closes the revoked member's connection
            if web.nc.is_closed:
                break
            await asyncio.sleep(0.1)
        assert web.nc.is_closed, "the revoked host is still connected"
        refused = nats.aio.client.Client()
        try:
            with pytest.raises(Exception, match=r"(?i)authorization"):
                await refused.connect(fleet.server.url, nkeys_seed=str(old_seed),
                                      allow_reconnect=False, connect_timeout=5,
                                      max_reconnect_attempts=0)
        finally:  # a refused connect leaves its socket to the caller
            transport = getattr(refused, "_transport", None)
            if transport is not None:
                transport.close()
        await db.nc.publish("wk.metrics.db-1", b"{}")
        await db.settled()
        assert db.errors == [] and db.nc.is_connected
        again = wk(tmp_path, "fleet", "remove", "web-1", "--dir", str(fleet.keys))
        assert again.returncode == 2 and "web-1 has no identity" in again.stderr
    finally:
        for member in (web, db):
            with contextlib.suppress(Exception):
                await member.nc.close()
        fleet.server.kill()
