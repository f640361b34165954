"""The whole runtime with real psutil and a real SQLite file."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from watchkeeper.events import Command, ConfigChanged, MetricSnapshot, utcnow
from watchkeeper.runtime import Runtime
from watchkeeper.series import METRICS
from watchkeeper.store.sqlite import SqliteStore

from ..conftest import BusRecorder, make_settings


async def wait_until(cond: object, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_runtime_collects_stores_and_answers_history_queries(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, agents={"check_interval": 0.2},
                             storage={"flush_interval": 0.1})
    rt = Runtime(settings)
    recorder = BusRecorder(rt.bus)  # type: ignore[arg-type]
    await rt.start()
    try:
        await recorder.wait_for(MetricSnapshot, 4)
        await wait_until(lambda: len(rt.store.snapshots(utcnow() - timedelta(minutes=1),
                                                        utcnow())) >= 4)
        now = utcnow()
        points = rt.store.series("cpu.percent", now - timedelta(minutes=1), now)
        assert len(points) >= 3  # the first tick has no CPU rate yet
        assert all(0.0 <= p.avg <= 100.0 for p in points)
        mounts = rt.store.dimensions("disk.percent")
        assert "/" in mounts
        stored_metrics = {m for m in METRICS if rt.store.dimensions(m)}
        assert {"cpu.percent", "memory.percent", "processes.total"} <= stored_metrics

        # A live config change: the sensor speeds up without a restart.
        changed = rt.update_config({"agents": {"check_interval": 0.05}})
        assert changed == ("agents.check_interval",)
        before = len(recorder.of(MetricSnapshot))
        # The next snapshots are taken on the new interval (how many fit in a given time
        # depends on the machine's load, so that is not what is asserted).
        await wait_until(lambda: [s.interval_s for s in recorder.of(MetricSnapshot)[before:]
                                  ][-3:] == [0.05] * 3)
        (event,) = recorder.of(ConfigChanged)
        assert event.changed == ("agents.check_interval",)  # type: ignore[attr-defined]

        replies = await rt.command(Command(host=rt.host, command="health_check"))
        assert {r.agent for r in replies} == {"sensor", "analyzer", "remediator", "communicator",
                                              "notifier"}
        assert all(r.ok and r.health and r.health.state == "running" for r in replies)
        (restarted,) = await rt.command(Command(host=rt.host, command="restart",
                                                target="sensor"))
        assert restarted.ok
        sensor = next(a for a in rt.agents if a.name == "sensor")
        await wait_until(lambda: sensor.restarts == 1 and sensor.state == "running")
        taken = len(recorder.of(MetricSnapshot))
    finally:
        await rt.stop()
    # Clean shutdown flushed every snapshot the sensor published.
    reopened = SqliteStore.open(settings.storage)
    try:
        assert reopened.integrity_check() == "ok"
        stored = reopened.snapshots(utcnow() - timedelta(minutes=5), utcnow(), limit=10_000)
        assert len(stored) >= taken
    finally:
        await reopened.close()


async def test_declared_services_are_started_reported_and_stopped(tmp_path: Path) -> None:
    import socket

    from watchkeeper.events import ServiceInfo

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(tmp_path, agents={"check_interval": 0.2})
    settings = settings.model_copy(update={"services": validate_services({
        "web": {"start": ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                "checks": [{"http": f"http://127.0.0.1:{port}/"}]}})})
    rt = Runtime(settings)
    recorder = BusRecorder(rt.bus)  # type: ignore[arg-type]
    await rt.start()
    try:
        async def healthy_web() -> ServiceInfo:
            while True:
                for snap in recorder.of(MetricSnapshot):
                    assert isinstance(snap, MetricSnapshot)
                    for info in snap.services:
                        if info.name == "web" and info.healthy:
                            return info
                await asyncio.sleep(0.05)

        info = await asyncio.wait_for(healthy_web(), 15)
        assert info.state == "running" and info.manager == "process" and info.pid
        pid = info.pid
    finally:
        await rt.stop()
    import psutil

    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def validate_services(raw: dict[str, object]) -> dict[str, object]:
    from watchkeeper.config import validate

    return dict(validate({"services": raw}).services)
