"""BaseAgent loop and Supervisor: errors become events, dead tasks come back with backoff."""

from __future__ import annotations

import asyncio

from watchkeeper.agents.base import BaseAgent
from watchkeeper.bus import MemoryBus
from watchkeeper.config import ConfigStore
from watchkeeper.events import (
    AgentError,
    AgentGaveUp,
    AgentRestarted,
    Command,
    Heartbeat,
)
from watchkeeper.supervisor import Supervisor, backoff_delay, send_command

from ..conftest import BusRecorder


class Counter(BaseAgent):
    """Counts checks; raises while `fail` is set; hangs while `hang` is set."""

    name = "counter"

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.count = 0
        self.fail = False
        self.hang = False
        self.setup_failures = 0

    async def setup(self) -> None:
        if self.setup_failures:
            self.setup_failures -= 1
            raise RuntimeError("setup exploded")

    async def _perform_check(self) -> None:
        self.count += 1
        if self.fail:
            raise ValueError("disk on fire")
        if self.hang:
            await asyncio.sleep(3600)


def fast(config: ConfigStore, interval: float = 0.01) -> None:
    config.update({"agents": {"check_interval": interval, "check_timeout": 0.2,
                              "heartbeat_interval": 0.05, "restart_backoff_initial": 0.01,
                              "restart_backoff_max": 0.04}})


async def wait_until(cond: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_check_exception_becomes_event_and_health_mark(
        bus: MemoryBus, recorder: BusRecorder, config_store: ConfigStore) -> None:
    fast(config_store)
    agent = Counter(bus=bus, config=config_store, host="h")
    agent.fail = True
    sup = Supervisor([agent], bus=bus, config=config_store, host="h")
    await sup.start()
    await wait_until(lambda: agent.count >= 3)
    health = agent.health()
    assert health.state == "degraded"
    assert health.last_error == "disk on fire" and health.error_count >= 3
    errors = await recorder.wait_for(AgentError, 3)
    assert all(e.error_type == "ValueError" for e in errors)  # type: ignore[attr-defined]
    assert [e.consecutive for e in errors[:3]] == [1, 2, 3]  # type: ignore[attr-defined]
    agent.fail = False
    await wait_until(lambda: agent.health().state == "running")
    assert agent.health().consecutive_errors == 0
    assert agent.restarts == 0  # the agent never died
    await sup.stop()
    assert agent.health().state == "stopped"


async def test_check_timeout_is_an_error_not_a_hang(
        bus: MemoryBus, recorder: BusRecorder, config_store: ConfigStore) -> None:
    fast(config_store)
    agent = Counter(bus=bus, config=config_store, host="h")
    agent.hang = True
    sup = Supervisor([agent], bus=bus, config=config_store, host="h")
    await sup.start()
    (error,) = await recorder.wait_for(AgentError, 1)
    assert isinstance(error, AgentError) and error.timed_out
    assert "timed out after 0.2s" in error.error
    agent.hang = False
    await wait_until(lambda: agent.health().state == "running")
    await sup.stop()


async def test_dead_task_is_restarted_with_exponential_backoff(
        bus: MemoryBus, recorder: BusRecorder, config_store: ConfigStore) -> None:
    fast(config_store)
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    agent = Counter(bus=bus, config=config_store, host="h")
    agent.setup_failures = 4
    sup = Supervisor([agent], bus=bus, config=config_store, host="h", sleep=fake_sleep)
    await sup.start()
    await wait_until(lambda: agent.count >= 2)
    assert delays == [0.01, 0.02, 0.04, 0.04]  # doubling, capped at restart_backoff_max
    restarted = recorder.of(AgentRestarted)
    assert [e.restarts for e in restarted] == [1, 2, 3, 4]  # type: ignore[attr-defined]
    assert "setup exploded" in restarted[0].reason  # type: ignore[attr-defined]
    assert agent.health().restarts == 4 and agent.health().state == "running"
    await sup.stop()


async def test_cancelled_task_counts_as_death(
        bus: MemoryBus, recorder: BusRecorder, config_store: ConfigStore) -> None:
    fast(config_store)
    agent = Counter(bus=bus, config=config_store, host="h")
    sup = Supervisor([agent], bus=bus, config=config_store, host="h")
    await sup.start()
    await wait_until(lambda: agent.count >= 1)
    slot_task = sup._slots["counter"].task
    assert slot_task is not None
    slot_task.cancel()
    (event,) = await recorder.wait_for(AgentRestarted, 1)
    assert "cancelled" in event.reason  # type: ignore[attr-defined]
    before = agent.count
    await wait_until(lambda: agent.count > before)
    await sup.stop()


async def test_supervisor_gives_up_after_restart_limit(
        bus: MemoryBus, recorder: BusRecorder, config_store: ConfigStore) -> None:
    fast(config_store)
    config_store.update({"agents": {"restart_limit": 2}})
    agent = Counter(bus=bus, config=config_store, host="h")
    agent.setup_failures = 100
    sup = Supervisor([agent], bus=bus, config=config_store, host="h")
    await sup.start()
    (gave_up,) = await recorder.wait_for(AgentGaveUp, 1)
    assert gave_up.restarts == 2  # type: ignore[attr-defined]
    assert len(recorder.of(AgentRestarted)) == 2
    assert agent.health().state == "crashed"
    # A manual restart brings it back once the fault is gone.
    agent.setup_failures = 0
    (reply,) = await send_command(bus, "h", ["counter"], Command(host="h", command="restart",
                                                                 target="counter"))
    assert reply.ok
    await wait_until(lambda: agent.count >= 1)
    await sup.stop()


async def test_commands_pause_resume_health_restart(
        bus: MemoryBus, recorder: BusRecorder, config_store: ConfigStore) -> None:
    fast(config_store)

    class Other(Counter):
        name = "other"

    a, b = Counter(bus=bus, config=config_store, host="h"), Other(bus=bus, config=config_store,
                                                                    host="h")
    sup = Supervisor([a, b], bus=bus, config=config_store, host="h")
    await sup.start()
    names = ["counter", "other"]
    replies = await send_command(bus, "h", names, Command(host="h", command="health_check"))
    assert [(r.agent, r.ok) for r in replies] == [("counter", True), ("other", True)]
    await send_command(bus, "h", names, Command(host="h", command="pause", target="counter"))
    assert a.health().state == "paused"
    await asyncio.sleep(0.05)
    frozen = a.count
    await asyncio.sleep(0.1)
    assert a.count == frozen  # paused: no checks
    assert b.count > 0
    await send_command(bus, "h", names, Command(host="h", command="resume", target="counter"))
    await wait_until(lambda: a.count > frozen)
    await send_command(bus, "h", names, Command(host="h", command="restart", target="other"))
    await wait_until(lambda: b.restarts == 1)
    (unknown,) = await send_command(bus, "h", names,
                                    Command(host="h", command="pause", target="nobody"))
    assert not unknown.ok and "unknown agent" in unknown.message
    beats = await recorder.wait_for(Heartbeat, 2)
    assert {e.agent for e in beats} == {"counter", "other"}  # type: ignore[attr-defined]
    await sup.stop()


async def test_interval_change_applies_on_next_cycle(
        bus: MemoryBus, config_store: ConfigStore) -> None:
    fast(config_store, interval=10.0)
    agent = Counter(bus=bus, config=config_store, host="h")
    sup = Supervisor([agent], bus=bus, config=config_store, host="h")
    await sup.start()
    await wait_until(lambda: agent.count == 1)
    await asyncio.sleep(0.1)
    assert agent.count == 1  # 10 s interval
    config_store.update({"agents": {"check_interval": 0.01}})
    await wait_until(lambda: agent.count >= 5)
    await sup.stop()


def test_backoff_delay_doubles_and_caps() -> None:
    assert [backoff_delay(n, 1.0, 60.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


async def test_next_item_returns_items_and_gives_way_to_stop(
        bus: MemoryBus, config_store: ConfigStore) -> None:
    agent = Counter(bus=bus, config=config_store, host="h")
    sub = bus.subscribe("errors.>")
    loop = asyncio.get_running_loop()
    waiting = asyncio.create_task(agent.next_item(sub, timeout=30))
    await asyncio.sleep(0.01)
    await bus.publish("errors.h.x", AgentError(host="h", agent="x", error="e",
                                               error_type="E"))
    item = await asyncio.wait_for(waiting, 1)
    assert item is not None and item[0] == "errors.h.x"
    # A stop wakes a waiting check at once instead of after its timeout.
    waiting = asyncio.create_task(agent.next_item(sub, timeout=30))
    await asyncio.sleep(0.01)
    t = loop.time()
    agent.stop()
    assert await asyncio.wait_for(waiting, 1) is None
    assert loop.time() - t < 0.5
    assert len(sub) == 0 and await agent.next_item(sub, timeout=0.01) is None


async def test_an_agent_added_and_removed_while_running(
        bus: MemoryBus, config_store: ConfigStore) -> None:
    # What a reload that adds the first Alertmanager route, then removes it, does.
    fast(config_store)

    class Other(Counter):
        name = "other"

    a = Counter(bus=bus, config=config_store, host="h")
    sup = Supervisor([a], bus=bus, config=config_store, host="h")
    await sup.start()
    b = Other(bus=bus, config=config_store, host="h")
    sup.add(b, ["other", "counter"])
    assert list(sup.agents) == ["other", "counter"]  # start order kept: stopped last
    await wait_until(lambda: b.count > 0)
    (reply,) = await send_command(bus, "h", ["other"], Command(host="h", command="health_check",
                                                               target="other"))
    assert reply.ok
    assert await sup.remove("other") is b
    assert b.health().state == "stopped" and list(sup.agents) == ["counter"]
    stopped = b.count
    (gone,) = await send_command(bus, "h", ["other"], Command(host="h", command="health_check",
                                                              target="other"), timeout=0.5)
    assert not gone.ok  # nobody answers its topic any more
    await wait_until(lambda: a.count > 5)
    assert b.count == stopped and b.restarts == 0  # stopped for good, not restarted
    await sup.stop()
