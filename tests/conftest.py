"""Shared fixtures: a bus recorder, settings on temp dirs, a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from tests.nats_server import NatsServer, kill_all_started
from watchkeeper.bus import MemoryBus
from watchkeeper.config import ConfigStore, Settings, validate
from watchkeeper.events import Event


class BusRecorder:
    """Subscribes to every topic and keeps what was published (DataDog's aggregator stub)."""

    def __init__(self, bus: MemoryBus) -> None:
        self.sub = bus.subscribe(">", name="recorder", maxsize=100_000)
        self.items: list[tuple[str, Event]] = []

    def drain(self) -> list[tuple[str, Event]]:
        while (item := self.sub.get_nowait()) is not None:
            self.items.append(item)
        return self.items

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for _, e in self.drain() if isinstance(e, kind)]

    async def wait_for(self, kind: type[Event], count: int = 1, timeout: float = 10.0
                       ) -> list[Event]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(found := self.of(kind)) < count:
            if loop.time() > deadline:
                raise AssertionError(f"only {len(found)} {kind.__name__} after {timeout}s")
            await asyncio.sleep(0.01)
        return found


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    bus = MemoryBus()
    yield bus
    await bus.close()


@pytest.fixture
def recorder(bus: MemoryBus) -> BusRecorder:
    return BusRecorder(bus)


def make_settings(tmp_path: Path, **sections: dict[str, object]) -> Settings:
    """Settings whose files all live under tmp_path, with overrides per section."""
    data: dict[str, dict[str, object]] = {
        "storage": {"data_dir": str(tmp_path / "data")},
        "logging": {"dir": str(tmp_path / "logs"), "color": False},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return validate(data)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def config_store(settings: Settings) -> ConfigStore:
    return ConfigStore(settings)


class FakeClock:
    """A monotonic clock tests move by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    yield FakeClock()


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes this test starts; every one of them (and only them) is killed afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One real nats-server (JetStream, sync_interval: always) for the session; tests that
    kill or restart a broker start their own NatsServer instead."""
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session", autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    """At the session's end, every nats-server a test started and did not stop is killed,
    and so is every other process this test process started that still runs (a `serve` a
    test started before the set-up that failed): only this session's own descendants."""
    yield
    kill_all_started()
    left = psutil.Process().children(recursive=True)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=10)
