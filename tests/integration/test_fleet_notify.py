"""A fleet's central killed -9 around a notification: each alert is told at most once more
and none is lost, the guarantee the README states for one host (real processes: a real
nats-server, `watchkeeper serve --fleet` as the central, a `watchkeeper agent` host, and a
loopback receiver the central's notify route posts to through apprise's json://).

Two kills: one within milliseconds of the host's alert reaching the broker (received, not
yet told), one after the message was delivered and the outbox is empty. After each restart
the receiver must hold exactly one message about the host's alert.

Settings changed from the defaults, and why: those of test_fleet_durable.Fleet (a memory
warning at 0.1 % that fires on the first snapshot, fast ticks, no CPU alerts, ack_wait 2 s,
a history flush every 3 s); the route's group_wait_s is 1 instead of 30 (the message goes
out a second after the alert, not half a minute). To know that a restarted central has had
its chance to repeat itself, the test publishes a sentinel alert of a host of its own on the
broker after the restart: once that one is told, anything the restart would repeat about
web-1 (due as soon as the central is up) has been told too.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.nats_server import NatsServer
from tests.notify_receiver import Receiver
from watchkeeper.bus.nats import NatsBus
from watchkeeper.events import Alert

from ..conftest import make_settings
from .test_fleet_durable import Fleet, Watcher, until


def waiting(outbox: Path) -> int:
    """Messages in the central's outbox not yet delivered."""
    if not outbox.exists():
        return -1
    conn = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    except sqlite3.OperationalError:  # not made yet
        return -1
    finally:
        conn.close()


def sentinel(n: int) -> Alert:
    now = datetime.now(timezone.utc)
    return Alert(host="sentinel", at=now, id=f"sentinel-{n}", fingerprint=f"sentinel-{n}",
                 rule="threshold", metric="disk.percent", dimension=f"/s{n}",
                 severity="warning", since=now, summary=f"sentinel {n}")


async def test_a_central_killed_before_and_after_telling_tells_each_alert_once(
        tmp_path: Path, nats_server: NatsServer) -> None:
    receiver = Receiver().start()
    fleet = Fleet(tmp_path, nats_server)
    (tmp_path / "central").mkdir()
    (tmp_path / "central" / "watchkeeper.yaml").write_text(json.dumps({"notify": {"routes": [
        {"name": "ops", "url": receiver.url("ops"), "group_wait_s": 1}]}}), encoding="utf-8")
    outbox = tmp_path / "central" / "data" / "notify_outbox.db"
    cfg = make_settings(tmp_path / "watcher", bus={
        "backend": "nats", "url": nats_server.url, "subject_prefix": fleet.prefix}).bus
    bus = await NatsBus.open(cfg, client="watcher")
    watcher = Watcher(bus)
    await bus.settle()

    def told(host: str) -> list[str]:
        return [t for t in receiver.titles("ops") if f" {host}:" in t]

    def said() -> Any:
        return receiver.titles("ops")

    try:
        # 1. Killed within milliseconds of web-1's alert reaching the broker: received,
        # not yet told.
        central = fleet.start_central()
        watcher.kill_on = ("web-1", central.pid)
        fleet.start_agent("web-1")
        await until(lambda: watcher.alerts("web-1"), "web-1's alert on the broker",
                    timeout=60)
        central.wait(timeout=10)
        assert told("web-1") == [], "told before the kill: the kill came too late"
        central = fleet.start_central()
        await until(lambda: told("web-1"), "web-1's alert told after the restart",
                    timeout=60, detail=said)
        await until(lambda: waiting(outbox) == 0, "the outbox emptied")

        # 2. Killed after the message was delivered (the outbox is empty).
        central.kill()
        central.wait(timeout=10)
        central = fleet.start_central()
        await bus.publish("alerts.sentinel", sentinel(1))
        await until(lambda: told("sentinel"), "the sentinel told by the restarted central",
                    timeout=60, detail=said)
        assert len(told("web-1")) == 1, said()
        assert len(told("sentinel")) == 1, said()
    finally:
        fleet.stop()
        await watcher.close()
        await bus.close()
        receiver.stop()
