"""A sharded central (`watchkeeper serve --fleet --shards 2`) on a real nats-server: each
host is analysed by exactly one of the two shard processes, the alerts of both shards' hosts
reach the central once, and a shard killed with SIGKILL mid-stream is started again by the
central, catches up on what it missed and fires nothing twice (its hosts' open alerts are
rebuilt from the alerts stream; its baselines from its state file).

The hosts are published as an agent's bus publishes them (the wire codec, Nats-Msg-Id, each
acknowledged by the broker). Settings changed from the defaults, and why: a subject prefix
of the test's own (one broker serves the session); ticks every 0.2 s and alerts without a
``for_s`` wait (seconds, not minutes); ``bus.ack_wait_s`` 3 instead of 60, so what the
killed shard held unacknowledged comes back within the test's time (the README's kill -9
bound is ack_wait_s)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sqlite3
import subprocess
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.fleet_auth import make_fleet
from tests.nats_server import NatsServer
from watchkeeper.analysis.shard import shard_agent_name, shard_of
from watchkeeper.bus import BusError, command_topic
from watchkeeper.bus.nats import NatsBus
from watchkeeper.config import BusConfig
from watchkeeper.events import Command, CommandReply, CpuStats, MemoryStats, MetricSnapshot

from .served import stop_all, until
from .test_api_security import start_serve
from .test_cli import wk, wk_env

_prefixes = itertools.count()
T0 = datetime.now(timezone.utc).replace(microsecond=0)
HOSTS = [f"web-{i}" for i in range(8)]


def snap(host: str, seq: int, cpu: float) -> MetricSnapshot:
    return MetricSnapshot(host=host, seq=seq, interval_s=5.0,
                          at=T0 + timedelta(seconds=5 * seq),
                          cpu=CpuStats(percent=cpu, count_logical=2),
                          memory=MemoryStats(percent=30.0))


def shard_pid(central: subprocess.Popen[str], index: int) -> int | None:
    """The pid of the central's shard process ``index`` (of 2), if it runs."""
    for child in psutil.Process(central.pid).children():
        try:
            if f"{index}/2" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                return child.pid
        except psutil.NoSuchProcess:
            continue
    return None


def cpu_changes(db: Path) -> list[tuple[str, str]]:
    """(host, change) of every stored cpu threshold alert change, in store order."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT payload FROM events WHERE kind = 'alert' ORDER BY id"
                            ).fetchall()
    out = []
    for (payload,) in rows:
        alert = json.loads(payload)
        if alert["rule"] == "threshold" and alert["metric"] == "cpu.percent":
            out.append((alert["host"], alert["labels"].get("change", "")))
    return out


def test_two_shards_split_the_hosts_and_a_killed_shard_loses_and_doubles_nothing(
        tmp_path: Path, nats_server: NatsServer) -> None:
    prefix = f"shard{os.getpid()}x{next(_prefixes)}"
    owner = {h: shard_of(h, 2) for h in HOSTS}
    assert set(owner.values()) == {0, 1}  # both shards have hosts
    env = wk_env(tmp_path, WATCHKEEPER_HOST_NAME="central",
                 WATCHKEEPER_BUS__SUBJECT_PREFIX=prefix, WATCHKEEPER_BUS__ACK_WAIT_S="3",
                 WATCHKEEPER_AGENTS__CHECK_INTERVAL="0.2", WATCHKEEPER_ANALYZER__FOR_S="0")
    central, url = start_serve(tmp_path, env, "--fleet", "--server", nats_server.url,
                               "--shards", "2")
    runner = asyncio.Runner()
    bus = runner.run(NatsBus.open(BusConfig(backend="nats", url=nats_server.url,
                                            subject_prefix=prefix), client="gen"))
    seq = itertools.count(1)

    def publish(cpu: float, hosts: list[str] = HOSTS) -> None:
        n = next(seq)

        async def go() -> None:
            for host in hosts:
                await bus.publish(f"metrics.{host}", snap(host, n, cpu))
        runner.run(go())

    def open_cpu(host_list: list[str] | None = None) -> dict[str, int]:
        alerts = httpx.get(f"{url}/api/alerts", timeout=5).json()["alerts"]
        return Counter(a["host"] for a in alerts if a["metric"] == "cpu.percent"
                       and a["rule"] == "threshold")

    def ask(index: int) -> Any:
        agent = shard_agent_name(index, 2)
        reply = runner.run(bus.request(command_topic("central", agent),
                                       Command(host="central", command="alerts",
                                               target=agent), timeout=5))
        assert isinstance(reply, CommandReply) and reply.ok, reply
        return reply.result

    try:
        # Hot everywhere until the central shows every host's cpu alert (each once).
        def all_firing() -> bool:
            publish(99.0)
            return set(open_cpu()) == set(HOSTS)

        until(all_firing, "every host's cpu alert at the central", timeout=60)
        assert set(open_cpu().values()) == {1}
        for index in (0, 1):  # each host analysed by exactly its own shard
            hosts = {a["host"] for a in ask(index)["alerts"]}
            assert hosts == {h for h in HOSTS if owner[h] == index}
        hosts_api = httpx.get(f"{url}/api/hosts", timeout=5).json()
        assert hosts_api["fleet"] is True
        assert [h["host"] for h in hosts_api["hosts"]] == sorted(HOSTS)
        assert {h["health"] for h in hosts_api["hosts"]} == {"critical"}

        # An operator's acknowledgement reaches the shard that owns the host; a silence
        # reaches both, under one id.
        token = (tmp_path / "data" / "api_token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        alerts = httpx.get(f"{url}/api/alerts", timeout=5).json()["alerts"]
        target = next(a for a in alerts if owner[a["host"]] == 1)
        acked = httpx.post(f"{url}/api/alerts/{target['fingerprint']}/ack", headers=auth,
                           timeout=10)
        assert acked.status_code == 200 and acked.json()["state"] == "acknowledged", acked.text
        assert {a["fingerprint"]: a["state"] for a in ask(1)["alerts"]}[
            target["fingerprint"]] == "acknowledged"
        until_at = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
        made = httpx.post(f"{url}/api/alerts/silences", headers=auth, timeout=10,
                          json={"matchers": {"metric": "disk.*"}, "until": until_at})
        assert made.status_code == 201, made.text
        for index in (0, 1):
            agent = shard_agent_name(index, 2)
            reply = runner.run(bus.request(command_topic("central", agent), Command(
                host="central", command="silences", target=agent), timeout=5))
            assert isinstance(reply, CommandReply) and reply.result is not None
            assert [s["id"] for s in reply.result["silences"]] == [made.json()["id"]]

        # Shard 0 dies mid-stream (SIGKILL); meanwhile its hosts stay hot, then cool down.
        victim = shard_pid(central, 0)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)  # the test's own (its central's child)
        for _ in range(3):
            publish(99.0)
        for _ in range(3):
            publish(5.0)
        # Shard 1's hosts resolve at once; shard 0's when it is back and has caught up.
        until(lambda: not any(owner[h] == 1 for h in open_cpu()),
              "shard 1's hosts to resolve", timeout=30)
        until(lambda: (pid := shard_pid(central, 0)) is not None and pid != victim,
              "the central to start shard 0 again", timeout=30)
        until(lambda: not open_cpu(), "shard 0's hosts to resolve after its restart",
              timeout=60)

        # In the central's store: per host one alert opened and one resolved, none twice
        # (a restored shard that forgot its open alerts would open them again).
        db = tmp_path / "data" / "watchkeeper.db"
        until(lambda: Counter(c for _, c in cpu_changes(db))["resolved"] == len(HOSTS),
              "every resolution stored", timeout=30)
        changes = cpu_changes(db)
        for host in HOSTS:
            mine = [c for h, c in changes if h == host and c in ("new", "resolved")]
            assert mine == ["new", "resolved"], (host, owner[host], mine)
    finally:
        runner.run(bus.close())
        runner.close()
        stop_all(central)


def test_bad_shard_options_are_usage_errors(tmp_path: Path) -> None:
    out = wk(tmp_path, "analyze", "--server", "nats://127.0.0.1:1", "--shard", "2/2")
    assert out.returncode == 2 and "shard index 2 is not in 0..1" in out.stderr
    out = wk(tmp_path, "analyze", "--server", "nats://127.0.0.1:1", "--shard", "half")
    assert out.returncode == 2 and "i/N" in out.stderr
    out = wk(tmp_path, "serve", "--shards", "2")
    assert out.returncode == 2 and "give --fleet too" in out.stderr
    out = wk(tmp_path, "serve", "--fleet", "--server", "nats://127.0.0.1:1", "--shards", "65")
    assert out.returncode == 2 and "--shards" in out.stderr
    assert not (tmp_path / "data").exists()  # nothing started, nothing written


def test_shards_work_with_a_key_per_host(tmp_path: Path) -> None:
    """The README's secured fleet, sharded: a broker that knows only the keys `fleet
    add-central`/`add-host` made, the central and its two shards on the central's key, each
    host publishing with its own. Both shards' hosts alert at the central, each once, an
    acknowledgement reaches the owning shard, and the broker refused nobody. Settings changed
    as in the test above (ticks, for_s); the prefix is the default."""
    hosts = ("web-1", "db-1", "db-2", "web-3")
    owner = {h: shard_of(h, 2) for h in hosts}
    assert set(owner.values()) == {0, 1}
    fleet = make_fleet(tmp_path, central="central", hosts=hosts)
    home = tmp_path / "central"
    home.mkdir()
    env = wk_env(home, WATCHKEEPER_HOST_NAME="central",
                 WATCHKEEPER_BUS__NKEY_SEED_FILE=str(fleet.seed("central")),
                 WATCHKEEPER_AGENTS__CHECK_INTERVAL="0.2", WATCHKEEPER_ANALYZER__FOR_S="0")
    runner = asyncio.Runner()
    buses: dict[str, NatsBus] = {}
    central: subprocess.Popen[str] | None = None
    seq = itertools.count(1)
    try:  # from the broker's start on: whatever fails, the finally stops what started
        fleet.server.start()
        central, url = start_serve(home, env, "--fleet", "--server", fleet.server.url,
                                   "--shards", "2")
        for h in hosts:
            buses[h] = runner.run(NatsBus.open(fleet.config(h), client=h,
                                               manage_streams=False))

        def all_firing() -> bool:
            n = next(seq)

            async def go() -> None:
                for host, bus in buses.items():
                    await bus.publish(f"metrics.{host}", snap(host, n, 99.0))
            try:
                runner.run(go())
            except BusError:  # the central has not made the streams yet
                return False
            alerts = httpx.get(f"{url}/api/alerts", timeout=5).json()["alerts"]
            return sorted(a["host"] for a in alerts if a["metric"] == "cpu.percent") == \
                sorted(hosts)

        until(all_firing, "every host's cpu alert at the sharded central", timeout=60)
        token = (home / "data" / "api_token").read_text().strip()
        alerts = httpx.get(f"{url}/api/alerts", timeout=5).json()["alerts"]
        for index in (0, 1):  # an acknowledgement reaches each shard's own host
            target = next(a for a in alerts if owner[a["host"]] == index
                          and a["metric"] == "cpu.percent")
            acked = httpx.post(f"{url}/api/alerts/{target['fingerprint']}/ack", timeout=10,
                               headers={"Authorization": f"Bearer {token}"})
            assert acked.status_code == 200, acked.text
            assert acked.json()["state"] == "acknowledged", acked.text
        logs = sorted((home / "logs").rglob("*.log"))  # the central's and each shard's
        assert any(p.parent.name == "shard-1" for p in logs), logs
        text = "".join(p.read_text() for p in logs)
        assert "Permissions Violation" not in text and "refused this client" not in text
        assert "could not start" not in text, text[-3000:]
    finally:
        for bus in buses.values():
            runner.run(bus.close())
        runner.close()
        if central is not None:
            stop_all(central)
        fleet.server.kill()
