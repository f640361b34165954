"""The fleet's central killed -9 mid-stream and started again: every alert and every action
of its hosts is in its history exactly once (real processes: a real nats-server, `watchkeeper
serve --fleet` as the central, three `watchkeeper agent` hosts).

Alerts and actions happen before the kill, in flight at the kill (an alert already in the
broker, not yet in the central's store), while the central is down (an action), and after
the restart (a new host's alert, an approval request). A watcher on the broker records
every alert and action published; the test then reads the central's SQLite history and
finds each exactly once, and one alert (one id) per incident: the restarted central does
not fire again what its predecessor had fired.

Settings changed from the defaults, and why: a subject prefix of the test's own (one broker
serves the session); ticks every 0.5 s instead of 5 s and a memory warning at 0.1 % with no
``for_s`` (an alert on every host's first snapshot, at once); no CPU alerts (this busy
machine's noise); no start-up grace on the agents (their notify_only actions run at once);
the central flushes its history every 3 s instead of 1 s (a window wide enough that the
kill lands while an alert is in the broker and not yet stored); bus.ack_wait_s 2 instead
of 60 (what the killed central held comes again within seconds instead of a minute)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tests.nats_server import NatsServer
from watchkeeper.bus import codec, command_topic
from watchkeeper.bus.nats import NatsBus
from watchkeeper.bus.spool import Entry, Spool
from watchkeeper.bus.subjects import stream_name
from watchkeeper.events import (
    Alert,
    Command,
    CommandReply,
    CpuStats,
    Event,
    MemoryStats,
    MetricSnapshot,
    RemediationEvent,
    decode,
)

from ..conftest import make_settings
from .test_cli import wk_env

_prefixes = itertools.count()
HOSTS = ("web-1", "web-2", "web-3")


class Fleet:
    """The processes of one test (it kills and stops only these)."""

    def __init__(self, root: Path, server: NatsServer) -> None:
        self.root = root
        self.server = server
        self.prefix = f"dur{os.getpid()}x{next(_prefixes)}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.common = {"WATCHKEEPER_BUS__SUBJECT_PREFIX": self.prefix,
                       "WATCHKEEPER_BUS__ACK_WAIT_S": "2",
                       "WATCHKEEPER_AGENTS__CHECK_INTERVAL": "0.5",
                       "WATCHKEEPER_LLM__ENABLED": "false"}

    @property
    def history(self) -> Path:
        return self.root / "central" / "data" / "watchkeeper.db"

    def start_central(self) -> subprocess.Popen[bytes]:
        root = self.root / "central"
        root.mkdir(exist_ok=True)
        env = wk_env(root, WATCHKEEPER_HOST_NAME="central",
                     WATCHKEEPER_THRESHOLDS__MEMORY_WARNING="0.1",
                     WATCHKEEPER_THRESHOLDS__MEMORY_CRITICAL="100",
                     WATCHKEEPER_THRESHOLDS__CPU_WARNING="100",
                     WATCHKEEPER_THRESHOLDS__CPU_CRITICAL="100",
                     WATCHKEEPER_ANALYZER__FOR_S="0",
                     WATCHKEEPER_STORAGE__FLUSH_INTERVAL="3", **self.common)
        return self._start(root, env, "serve", "--fleet", "--port", "0")

    def start_agent(self, host: str, url: str | None = None, **extra: str
                    ) -> subprocess.Popen[bytes]:
        root = self.root / host
        root.mkdir(exist_ok=True)
        env = wk_env(root, WATCHKEEPER_HOST_NAME=host,
                     WATCHKEEPER_REMEDIATION__STARTUP_GRACE_S="0", **{**self.common, **extra})
        return self._start(root, env, "agent", url=url)

    def _start(self, root: Path, env: dict[str, str], *args: str, url: str | None = None
               ) -> subprocess.Popen[bytes]:
        with (root / "stderr.log").open("ab") as err:
            proc = subprocess.Popen([sys.executable, "-m", "watchkeeper", *args, "--server",
                                     url or self.server.url, "--no-console-log"], cwd=root,
                                    env=env, stdout=subprocess.DEVNULL, stderr=err)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def stored(history: Path) -> list[Event]:
    """Every alert and remediation step in the central's history, as stored."""
    return stored_events(history, "alert", "remediation")


def stored_events(history: Path, *kinds: str) -> list[Event]:
    """The central's stored events of these kinds, in the order stored."""
    if not history.exists():
        return []
    conn = sqlite3.connect(f"file:{history}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(f"SELECT topic, payload FROM events WHERE kind IN "
                            f"({', '.join('?' * len(kinds))}) ORDER BY id", kinds).fetchall()
    except sqlite3.OperationalError:  # not made yet
        return []
    finally:
        conn.close()
    return [decode(payload) for _topic, payload in rows]


class Watcher:
    """Every alert and action published on the broker, as the broker carried it."""

    def __init__(self, bus: NatsBus) -> None:
        self.bus = bus
        self.seen: list[Event] = []
        #: (host, pid): kill -9 that process the moment the host's first alert is seen.
        self.kill_on: tuple[str, int] | None = None
        self._subs = [bus.subscribe(p, lossy=True, maxsize=100_000)
                      for p in ("alerts.*", "actions.*")]
        self._tasks = [asyncio.create_task(self._read(s)) for s in self._subs]

    async def _read(self, sub: Any) -> None:
        async for _topic, event in sub:
            self.seen.append(event)
            if self.kill_on is not None and isinstance(event, Alert) \
                    and event.host == self.kill_on[0]:
                os.kill(self.kill_on[1], signal.SIGKILL)  # the test's own process
                self.kill_on = None

    def alerts(self, host: str) -> list[Alert]:
        return [e for e in self.seen if isinstance(e, Alert) and e.host == host]

    def actions(self, host: str) -> list[RemediationEvent]:
        return [e for e in self.seen if isinstance(e, RemediationEvent) and e.host == host]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def until(check: Any, what: str, timeout: float = 30, detail: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + (
            f": {detail()}" if detail else "")
        await asyncio.sleep(0.05)
    return found


async def remediate(bus: NatsBus, host: str, message: str) -> None:
    """An operator's notify_only on ``host``, straight to its remediator (no central)."""
    reply = await bus.request(command_topic(host, "remediator"), Command(
        host=host, command="remediate", actor="test",
        args={"action": "notify_only", "params": {"message": message}}), timeout=20)
    assert isinstance(reply, CommandReply) and reply.ok, reply


async def test_a_central_killed_mid_stream_stores_every_alert_and_action_once(
        tmp_path: Path, nats_server: NatsServer) -> None:
    fleet = Fleet(tmp_path, nats_server)
    cfg = make_settings(tmp_path / "watcher", bus={
        "backend": "nats", "url": nats_server.url, "subject_prefix": fleet.prefix}).bus
    bus = await NatsBus.open(cfg, client="watcher")
    watcher = Watcher(bus)
    await bus.settle()
    try:
        central = fleet.start_central()
        fleet.start_agent("web-1")
        # Before: web-1's alert and the action it set off are stored.
        await until(lambda: any(isinstance(e, Alert) and e.host == "web-1"
                                for e in stored(fleet.history)),
                    "web-1's alert in the central's history", timeout=60)
        await remediate(bus, "web-1", "before the kill")
        await until(lambda: any(isinstance(e, RemediationEvent) and e.host == "web-1"
                                for e in stored(fleet.history)),
                    "web-1's action in the central's history")
        # In flight: web-2's alert is in the broker; the central dies before storing it.
        # web-2's policy asks a human for notify_only: its action after the restart is an
        # approval request.
        watcher.kill_on = ("web-2", central.pid)  # killed within milliseconds of it
        fleet.start_agent("web-2", WATCHKEEPER_REMEDIATION__ACTIONS__NOTIFY_ONLY="approve")
        await until(lambda: watcher.alerts("web-2"), "web-2's alert on the broker")
        central.wait(timeout=10)
        in_flight = watcher.alerts("web-2")[0]
        assert in_flight not in stored(fleet.history), "the kill came after the store"
        # While the central is down: an action on web-1.
        await remediate(bus, "web-1", "while the central is down")
        central = fleet.start_central()
        # After: a new host's alert, and an action on web-2.
        fleet.start_agent("web-3")
        await remediate(bus, "web-2", "after the restart")

        def everything_stored() -> bool:
            have = stored(fleet.history)
            return all(e in have for e in watcher.seen) and all(
                any(isinstance(e, Alert) and e.host == h for e in have) for h in HOSTS)

        def missing() -> list[str]:
            have = stored(fleet.history)
            return [f"{type(e).__name__} {e.host} {e.at}" for e in watcher.seen
                    if e not in have]

        await until(everything_stored, "every alert and action in the history", timeout=60,
                    detail=missing)
        # What the killed central held comes again after ack_wait_s: let it, then count.
        await asyncio.sleep(8)
        await until(everything_stored, "every alert and action in the history")
        have = stored(fleet.history)
        counts = collections.Counter(e.model_dump_json() for e in have)
        twice = [k for k, n in counts.items() if n > 1]
        assert not twice, f"stored more than once: {twice[:3]}"
        assert all(e in have for e in watcher.seen)  # none missing
        assert all(e in watcher.seen for e in have)  # nothing that was not published
        # One memory incident per host (it never clears), one alert id: the restarted
        # central did not fire it again.
        ids: dict[str, set[str]] = collections.defaultdict(set)
        for e in have:
            if isinstance(e, Alert) and e.metric == "memory.percent":
                ids[e.fingerprint].add(e.id)
        assert len(ids) == len(HOSTS) and all(len(v) == 1 for v in ids.values()), dict(ids)
        assert in_flight in have
        # The actions of the three moments, each stored once.
        messages = [e.model_dump_json() for e in have if isinstance(e, RemediationEvent)]
        assert any("before the kill" in m for m in messages), messages
        assert any("while the central is down" in m for m in messages), messages
        assert any("after the restart" in m for m in messages), messages
        assert {e.host for e in have if isinstance(e, RemediationEvent)} >= {"web-1", "web-2"}
        assert [e.phase for e in have if isinstance(e, RemediationEvent) and e.host == "web-2"
                and e.phase == "pending"] == ["pending"]  # the approval request, once
    finally:
        fleet.stop()
        await watcher.close()
        await bus.close()


def spool_rows(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0])
    finally:
        conn.close()


async def central_listens(bus: NatsBus) -> None:
    """Until the central's durable consumers exist (what the broker takes from then on
    is kept for it, whatever its pace)."""
    assert bus._js is not None
    stream = stream_name(bus.prefix, "metrics")

    async def consumers() -> int:
        try:
            return len(await bus._js.consumers_info(stream))
        except Exception:  # the stream is made by the first client to connect
            return 0

    deadline = time.monotonic() + 30
    while await consumers() < 2:  # the communicator's and the analyzer's
        assert time.monotonic() < deadline, "the central made no consumers"
        await asyncio.sleep(0.1)


async def test_an_agent_killed_during_its_spool_flush_loses_nothing_and_sends_nothing_twice(
        tmp_path: Path, nats_server: NatsServer) -> None:
    """An agent comes back with a full spool (an outage's worth, written to its spool file
    before it starts), is killed -9 half-way through sending it, and started again: the
    broker and the central's history have every event once, in order."""
    fleet = Fleet(tmp_path, nats_server)
    cfg = make_settings(tmp_path / "watcher", bus={
        "backend": "nats", "url": nats_server.url, "subject_prefix": fleet.prefix}).bus
    bus = await NatsBus.open(cfg, client="watcher")
    host, count = "web-9", 4000
    start = datetime.now(timezone.utc) - timedelta(minutes=30)
    events: list[tuple[str, Event]] = []
    for i in range(count):
        at = start + timedelta(seconds=0.25 * i)
        if i % 100 == 50:  # now and then an action among the snapshots
            events.append((f"actions.{host}", RemediationEvent(
                host=host, at=at, phase="notice", action="notify_only", message=f"n{i}")))
        else:
            events.append((f"metrics.{host}", MetricSnapshot(
                host=host, at=at, seq=1_000_000 + i, interval_s=0.25,
                cpu=CpuStats(percent=10.0), memory=MemoryStats(percent=30.0))))
    spool = Spool.open(tmp_path / host / "data")
    await spool.append([Entry(topic=t, msg_id=codec.message_id(t, codec.encode(e)),
                              at=e.at.timestamp(), droppable=type(e).droppable,
                              payload=codec.encode(e)) for t, e in events],
                       now=datetime.now(timezone.utc).timestamp())
    await spool.close()
    try:
        fleet.start_central()
        await central_listens(bus)
        agent = fleet.start_agent(host)
        # Killed once the flush is under way and far from done.
        rows = await until(lambda: (n := spool_rows(spool.path)) < count * 0.8 and n,
                           "the agent to be sending its spool", timeout=60)
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(timeout=10)
        left = spool_rows(spool.path)
        assert 0 < left <= rows, "killed too late: the flush was over"
        fleet.start_agent(host)
        await until(lambda: spool_rows(spool.path) == 0, "the rest of the spool sent",
                    timeout=60)

        # The broker's streams: every event once, in order.
        on_broker = await bus.stored(f"*.{host}", limit=100_000, timeout=30)
        sent = [e for _t, e in on_broker if e.at < start + timedelta(seconds=0.25 * count)
                and (isinstance(e, RemediationEvent) or (
                    isinstance(e, MetricSnapshot) and e.seq >= 1_000_000))]
        snaps = [e.seq for e in sent if isinstance(e, MetricSnapshot)]
        assert snaps == sorted(snaps) and len(snaps) == len(set(snaps)), "twice or unordered"
        assert sorted(sent, key=lambda e: e.at) == [e for _t, e in events]

        # The central's history: the same, once.
        def history() -> tuple[list[int], list[Event]]:
            conn = sqlite3.connect(f"file:{fleet.history}?mode=ro", uri=True, timeout=10)
            try:
                seqs = [r[0] for r in conn.execute(
                    "SELECT seq FROM snapshots WHERE host = ? AND seq >= 1000000 ORDER BY at",
                    (host,))]
            finally:
                conn.close()
            return seqs, [e for e in stored(fleet.history) if e.host == host
                          and isinstance(e, RemediationEvent) and e.phase == "notice"]

        wanted = [e.seq for _t, e in events if isinstance(e, MetricSnapshot)]
        notices = [e for _t, e in events if isinstance(e, RemediationEvent)]
        await until(lambda: history()[0] == wanted, "every snapshot in the central's history",
                    timeout=60, detail=lambda: len(history()[0]))
        await until(lambda: sorted(history()[1], key=lambda e: e.at) == notices,
                    "every action in the central's history", detail=lambda: len(history()[1]))
    finally:
        fleet.stop()
        await bus.close()
