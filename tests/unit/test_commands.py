"""The command desk every agent answers through: a dead agent is a clear 'unavailable' at
once, a restart brings it back, and a change whose requester stops waiting still completes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from watchkeeper.agents.base import BaseAgent
from watchkeeper.agents.commands import Args, CommandFailed, Verb, ask
from watchkeeper.bus import MemoryBus
from watchkeeper.config import ConfigStore
from watchkeeper.events import AgentGaveUp, Command
from watchkeeper.supervisor import Supervisor

from ..conftest import BusRecorder
from .test_agents_supervisor import fast, wait_until


class AddArgs(Args):
    n: int


class Tally(BaseAgent):
    """An agent with one mutating verb (add) whose work can be held, and a setup that
    can be made to fail (so that its task dies)."""

    name = "tally"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.total = 0
        self.broken = False
        self.hold = asyncio.Event()
        self.hold.set()

    def verbs(self) -> dict[str, Verb]:
        return {**super().verbs(), "add": Verb(self._add, AddArgs)}

    async def _add(self, args: AddArgs, _command: Command) -> dict[str, Any]:
        await self.hold.wait()
        self.total += args.n
        return {"total": self.total}

    async def setup(self) -> None:
        if self.broken:
            raise RuntimeError("cannot start")

    async def _perform_check(self) -> None:
        return None


async def test_a_dead_agent_is_unavailable_at_once_and_a_restart_brings_it_back(
        bus: MemoryBus, recorder: BusRecorder, config_store: ConfigStore) -> None:
    fast(config_store)
    config_store.update({"agents": {"restart_limit": 1}})
    agent = Tally(bus=bus, config=config_store, host="h")
    sup = Supervisor([agent], bus=bus, config=config_store, host="h")
    await sup.start()
    assert await ask(bus, "h", "tally", "add", {"n": 2}, actor="t") == {"total": 2}
    agent.broken = True
    await sup.restart("tally")
    await recorder.wait_for(AgentGaveUp)
    assert agent.health().state == "crashed"
    with pytest.raises(CommandFailed) as failed:
        await ask(bus, "h", "tally", "add", {"n": 3}, actor="t", timeout=5)
    assert failed.value.code == "unavailable"
    assert failed.value.message == "the tally agent is crashed: try again once it runs again"
    assert agent.total == 2
    agent.broken = False
    assert (await ask(bus, "h", "tally", "restart", actor="t"))["message"] == "restarting"
    await wait_until(lambda: agent.health().state == "running")
    assert await ask(bus, "h", "tally", "add", {"n": 3}, actor="t") == {"total": 5}
    await sup.stop()


async def test_a_change_whose_requester_gave_up_still_completes(
        bus: MemoryBus, config_store: ConfigStore) -> None:
    """No half-made change: the requester's timeout does not cancel the verb's work (as over
    NATS, where the responder never learns that the requester stopped waiting)."""
    fast(config_store)
    agent = Tally(bus=bus, config=config_store, host="h")
    sup = Supervisor([agent], bus=bus, config=config_store, host="h")
    await sup.start()
    agent.hold.clear()
    with pytest.raises(CommandFailed) as failed:
        await ask(bus, "h", "tally", "add", {"n": 7}, actor="t", timeout=0.05)
    assert failed.value.code == "timeout"
    assert agent.total == 0
    agent.hold.set()
    await wait_until(lambda: agent.total == 7)
    await sup.stop()


async def test_nobody_serving_the_topic_is_unavailable(bus: MemoryBus) -> None:
    with pytest.raises(CommandFailed) as failed:
        await ask(bus, "h", "ghost", "pause", actor="t")
    assert failed.value.code == "unavailable"
    assert failed.value.message == "the ghost agent is not running in this process"


async def test_nobody_serving_another_hosts_topic_names_that_host(bus: MemoryBus) -> None:
    with pytest.raises(CommandFailed) as failed:
        await ask(bus, "far-away", "remediator", "approve", {"approval_id": 1}, actor="t",
                  local=False)
    assert failed.value.code == "unavailable"
    assert failed.value.message == "no remediator agent of host far-away answers"
