"""SensorAgent and CommunicatorAgent with a fake psutil at the boundary and a bus recorder."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from tests.fake_psutil import FakeProcess, FakePsutil, VirtualMemory
from watchkeeper.agents.communicator import CommunicatorAgent
from watchkeeper.agents.sensor import SensorAgent
from watchkeeper.bus import MemoryBus
from watchkeeper.collectors import SnapshotCollector
from watchkeeper.collectors.processes import linux_thread_total
from watchkeeper.config import ConfigStore
from watchkeeper.events import AgentRestarted, MetricSnapshot
from watchkeeper.status import write_atomic
from watchkeeper.store.sqlite import SqliteStore
from watchkeeper.supervisor import Supervisor

from ..conftest import BusRecorder

GIB = 1024**3


def sensor(bus: MemoryBus, config: ConfigStore, fake: FakePsutil) -> SensorAgent:
    collector = SnapshotCollector(fake, config=config.current.sensor, host="h", statvfs=None,
                                  thread_total=None)
    return SensorAgent(collector=collector, bus=bus, config=config, host="h")


async def test_sensor_publishes_snapshots_on_its_topic(
        bus: MemoryBus, recorder: BusRecorder, config_store: ConfigStore) -> None:
    fake = FakePsutil()
    agent = sensor(bus, config_store, fake)
    await agent._perform_check()
    await agent._perform_check()
    snaps = recorder.of(MetricSnapshot)
    assert [s.seq for s in snaps] == [1, 2]  # type: ignore[attr-defined]
    assert {t for t, _ in recorder.items} == {"metrics.h"}
    second = snaps[1]
    assert isinstance(second, MetricSnapshot)
    assert second.memory.percent == 25.0 and second.disks[0].mountpoint == "/"
    assert second.interval_s == 5.0
    agent.close()


async def test_personality_comments_once_on_the_way_in_and_once_out(
        bus: MemoryBus, recorder: BusRecorder, config_store: ConfigStore,
        caplog: pytest.LogCaptureFixture) -> None:
    fake = FakePsutil()
    agent = sensor(bus, config_store, fake)
    caplog.set_level(logging.INFO, logger="watchkeeper.agents.sensor")
    high = VirtualMemory(total=8 * GIB, available=GIB // 4, percent=97.0, used=7 * GIB,
                         free=GIB // 4)
    normal = fake.memory
    for memory in (normal, high, high, high, normal, normal):
        fake.memory = memory
        await agent._perform_check()
    said = [r.getMessage() for r in caplog.records if r.name == "watchkeeper.agents.sensor"
            and not r.getMessage().startswith("📊")]
    # One line when it rose, one when it recovered: in the log, never in the event.
    assert said == ["Memory at 97%: the OOM killer is sharpening its pencil.",
                    "Memory pressure eased. Carry on."]
    assert all("comment" not in s.model_dump() for s in recorder.of(MetricSnapshot))
    for level in ("professional", "off"):
        caplog.clear()
        config_store.update({"personality": {"level": level}})
        for memory in (high, normal):
            fake.memory = memory
            await agent._perform_check()
        assert [r for r in caplog.records if r.name == "watchkeeper.agents.sensor"
                and not r.getMessage().startswith("📊")] == []
    agent.close()


async def test_sensor_applies_config_changes_live(
        bus: MemoryBus, recorder: BusRecorder, config_store: ConfigStore) -> None:
    fake = FakePsutil()
    fake.processes = [FakeProcess(pid, f"p{pid}", cpu_percent=float(pid), rss=pid * 1000)
                      for pid in range(2, 12)]
    agent = sensor(bus, config_store, fake)
    await agent._perform_check()
    first = recorder.of(MetricSnapshot)[-1]
    assert isinstance(first, MetricSnapshot) and len(first.processes.top_cpu) == 5
    config_store.update({"sensor": {"top_processes": 2}})
    await agent._perform_check()
    last = recorder.of(MetricSnapshot)[-1]
    assert isinstance(last, MetricSnapshot)
    assert [p.pid for p in last.processes.top_cpu] == [11, 10]
    agent.close()


def test_linux_thread_total_reads_loadavg(tmp_path: Path) -> None:
    f = tmp_path / "loadavg"
    f.write_text("0.10 0.20 0.30 2/523 4242\n")
    assert linux_thread_total(str(f)) == 523
    f.write_text("garbage")
    assert linux_thread_total(str(f)) is None
    assert linux_thread_total(str(tmp_path / "absent")) is None


def test_thread_total_replaces_per_process_counts() -> None:
    fake = FakePsutil()
    collector = SnapshotCollector(fake, statvfs=None, thread_total=lambda: 777)
    snap = collector.collect(1, 5.0)
    assert snap.processes.threads == 777
    collector.close()


def test_status_file_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "s" / "system_status.json"
    write_atomic(path, {"a": 1})
    write_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["system_status.json"]  # no temp left


async def test_communicator_stores_everything_and_writes_status(
        bus: MemoryBus, config_store: ConfigStore, tmp_path: Path) -> None:
    store = SqliteStore.open(config_store.current.storage)
    fake = FakePsutil()
    sens = sensor(bus, config_store, fake)
    comm = CommunicatorAgent(store=store, health=lambda: [sens.health()],
                             bus_stats=bus.stats, bus=bus, config=config_store, host="h")
    await comm.setup()
    await sens._perform_check()
    await sens._perform_check()
    await bus.publish("system.h", AgentRestarted(host="h", agent="sensor", restarts=1,
                                                 backoff_s=1.0, reason="test"))
    await comm._perform_check()
    latest = store.latest_snapshot()
    assert latest is not None
    hour = timedelta(hours=1)
    assert len(store.snapshots(latest.at - hour, latest.at + hour)) == 2
    (event,) = store.events(kinds=["agent_restarted"])
    assert isinstance(event.event, AgentRestarted) and event.event.reason == "test"
    status = json.loads((Path(config_store.current.logging.dir) / "system_status.json")
                        .read_text())
    assert status["host"] == "h"
    assert status["latest_metrics"]["seq"] == 2
    assert status["agents"][0]["name"] == "sensor"
    assert {b["topic"] for b in status["bus"]} >= {"metrics.h", "system.h"}
    await comm.teardown()
    await store.close()
    sens.close()


async def test_sensor_survives_a_failing_family_inside_the_supervisor(
        bus: MemoryBus, recorder: BusRecorder, config_store: ConfigStore) -> None:
    config_store.update({"agents": {"check_interval": 0.01}})
    fake = FakePsutil()
    fake.fail("virtual_memory", RuntimeError("kaput"))
    agent = sensor(bus, config_store, fake)
    sup = Supervisor([agent], bus=bus, config=config_store, host="h")
    await sup.start()
    await recorder.wait_for(MetricSnapshot, 3)
    await sup.stop()
    snap = recorder.of(MetricSnapshot)[-1]
    assert isinstance(snap, MetricSnapshot)
    assert snap.memory.percent is None
    assert any(m.key.startswith("memory") for m in snap.missing)
    assert snap.cpu.count_logical == 2  # the rest of the tick is intact
    assert agent.health().error_count == 0 and agent.restarts == 0
    await asyncio.sleep(0)


async def test_summary_line_logged_on_first_full_tick_then_sparingly(
        bus: MemoryBus, config_store: ConfigStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="watchkeeper.agents.sensor")
    agent = sensor(bus, config_store, FakePsutil())
    for _ in range(4):
        await agent._perform_check()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("📊")]
    assert len(lines) == 1
    assert "mem 25%" in lines[0] and "/ 40% full" in lines[0] and "1 processes" in lines[0]
    agent.close()


def test_a_snapshot_stored_with_a_quip_by_an_earlier_version_still_reads() -> None:
    from watchkeeper.events import decode, encode

    snap = MetricSnapshot(host="h", seq=1, interval_s=5.0)
    old = json.loads(encode(snap))
    old["comment"] = "CPU's back to sipping decaf."  # what versions before levels stored
    read = decode(json.dumps(old))
    assert read == snap and "comment" not in read.model_dump()
