"""The whole runtime on `bus: {backend: nats}` with a real nats-server: every agent talks
through the broker (streams, consumers, request/reply) exactly as over the in-process bus."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path

import pytest

from tests.nats_server import NatsServer
from watchkeeper.bus import BusError
from watchkeeper.bus.nats import NatsBus
from watchkeeper.bus.subjects import stream_name
from watchkeeper.config import ConfigError
from watchkeeper.events import Command, utcnow
from watchkeeper.runtime import Runtime

from ..conftest import make_settings
from .test_runtime import wait_until

_prefixes = itertools.count()


async def test_one_host_runs_over_nats_and_its_alerts_are_in_a_durable_stream(
        tmp_path: Path, nats_server: NatsServer) -> None:
    # Changed from the defaults: the bus (the point), a fast sensor, and thresholds that
    # make this machine's memory an alert at once.
    prefix = f"rt{next(_prefixes)}"
    settings = make_settings(
        tmp_path, bus={"backend": "nats", "url": nats_server.url, "subject_prefix": prefix},
        agents={"check_interval": 0.2}, storage={"flush_interval": 0.1},
        thresholds={"memory_warning": 0.1, "memory_critical": 100}, analyzer={"for_s": 0})
    rt = Runtime(settings)
    assert isinstance(rt.bus, NatsBus)
    await rt.start()
    try:
        since = utcnow() - timedelta(minutes=1)
        await wait_until(lambda: len(rt.store.snapshots(since, utcnow())) >= 3)
        await wait_until(lambda: bool(rt.store.events(kinds=["alert"])))
        replies = await rt.command(Command(host=rt.host, command="health_check"))
        assert {r.agent for r in replies} == {"sensor", "analyzer", "remediator",
                                              "communicator", "notifier"}
        assert all(r.ok for r in replies)
        assert rt.bus.rejected == {}
    finally:
        await rt.stop()

    # What went through the broker is in its streams (alerts stored durably).
    check = await NatsBus.open(settings.bus, client="check")
    try:
        assert check._js is not None
        info = await check._js.stream_info(stream_name(prefix, "alerts"))
        assert info.state.messages >= 1
        assert info.config.storage == "file"
    finally:
        await check.close()


async def test_a_runtime_whose_broker_is_down_fails_to_start_with_a_clear_error(
        tmp_path: Path) -> None:
    from tests.nats_server import free_port

    settings = make_settings(tmp_path, bus={"backend": "nats", "connect_timeout_s": 1,
                                            "url": f"nats://127.0.0.1:{free_port()}"})
    rt = Runtime(settings)
    with pytest.raises(BusError, match="cannot connect to the NATS server"):
        await rt.start()
    await rt.store.close()
    await rt.audit.close()


@pytest.mark.parametrize("bus", [
    {"backend": "rabbitmq"},
    {"url": "http://127.0.0.1:4222"},
    {"url": "nats://host name:4222"},
    {"subject_prefix": "wk.>"},
    {"subject_prefix": ""},
    {"tls_cert_file": "/etc/wk/cert.pem"},
    {"streams": {"alerts": {"max_age_s": 0, "max_bytes": 1 << 20}}},
    {"urll": "nats://x:4222"},
], ids=["unknown-backend", "http-url", "space-in-host", "wildcard-prefix", "empty-prefix",
        "cert-without-key", "zero-age", "typo-key"])
def test_bad_bus_settings_are_config_errors(bus: dict[str, object], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bus"):
        make_settings(tmp_path, bus=bus)


def test_a_password_in_the_broker_url_is_masked(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, bus={"url": "nats://wk:s3cret-pass@broker:4222"})
    assert settings.masked()["bus"]["url"] == "nats://**********@broker:4222"


@pytest.mark.parametrize("command", ["run", "serve"])
def test_the_cli_says_clearly_when_the_broker_cannot_be_reached(
        tmp_path: Path, command: str) -> None:
    from tests.nats_server import free_port

    from .test_cli import wk, wk_env

    env = wk_env(tmp_path, WATCHKEEPER_BUS__BACKEND="nats", WATCHKEEPER_BUS__CONNECT_TIMEOUT_S="1",
                 WATCHKEEPER_BUS__URL=f"nats://127.0.0.1:{free_port()}",
                 WATCHKEEPER_API__PORT=str(free_port()))
    result = wk(tmp_path, command, "--no-console-log", env=env)
    assert result.returncode == 1
    assert "cannot connect to the NATS server at nats://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
