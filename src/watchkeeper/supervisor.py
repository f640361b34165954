"""Supervisor: runs agents as tasks, restarts dead ones with backoff, serves commands.

The supervisor, not the agent, answers an agent's command topic, so a crashed agent still
answers ``health_check`` (with state "crashed") and can be restarted on request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from watchkeeper.agents.base import BaseAgent
from watchkeeper.bus import Bus, command_topic, system_topic
from watchkeeper.config import ConfigStore
from watchkeeper.events import (
    AgentGaveUp,
    AgentHealth,
    AgentRestarted,
    Command,
    CommandReply,
    Event,
    ReplyCode,
)

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


def backoff_delay(attempt: int, initial: float, cap: float) -> float:
    """Exponential backoff: initial, 2x, 4x ... capped (attempt counts from 1)."""
    return float(min(cap, initial * (2 ** max(attempt - 1, 0))))


class _Slot:
    """One agent under supervision and its restart bookkeeping."""

    def __init__(self, agent: BaseAgent) -> None:
        self.agent = agent
        self.task: asyncio.Task[None] | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.attempt = 0  # consecutive crashes without a stable run in between
        self.started_at = 0.0
        self.manual_restart = asyncio.Event()
        self.gave_up = False
        #: Being stopped for good (shutdown, or a reload that no longer wants the agent).
        self.removed = False


class Supervisor:
    """Starts agents, restarts crashed ones with exponential backoff, stops them cleanly."""

    #: A run this long (seconds) counts as stable and resets the backoff.
    stable_after = 60.0

    def __init__(
        self,
        agents: list[BaseAgent],
        *,
        bus: Bus,
        config: ConfigStore,
        host: str,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        names = [a.name for a in agents]
        if len(set(names)) != len(names):
            raise ValueError(f"agent names must be unique: {names}")
        self.bus = bus
        self.config = config
        self.host = host
        self._monotonic = monotonic
        self._sleep = sleep
        self._slots = {a.name: _Slot(a) for a in agents}
        for slot in self._slots.values():
            slot.agent.restarter = self._restarter(slot)
        self._unserve: dict[str, Callable[[], None]] = {}
        self._started = False
        self._stopping = False

    @property
    def agents(self) -> dict[str, BaseAgent]:
        return {name: slot.agent for name, slot in self._slots.items()}

    def health(self) -> list[AgentHealth]:
        return [slot.agent.health() for slot in self._slots.values()]

    async def start(self) -> None:
        """Start every agent and serve their command topics."""
        # Agents re-read settings at once when they change (a new interval applies now).
        self.config.subscribe(self._wake_all)
        self._started = True
        for slot in self._slots.values():
            self._launch(slot)

    def _launch(self, slot: _Slot) -> None:
        name = slot.agent.name
        self._unserve[name] = self.bus.serve(command_topic(self.host, name),
                                             self._command_handler(slot))
        slot.watcher = asyncio.create_task(self._watch(slot), name=f"watch-{name}")

    def add(self, agent: BaseAgent, order: list[str]) -> None:
        """Supervise one more agent from now on (a reload that wants it); ``order``: every
        agent's name in start order, so the stop order stays the reverse of it."""
        if agent.name in self._slots:
            raise ValueError(f"agent {agent.name} is already supervised")
        slot = _Slot(agent)
        agent.restarter = self._restarter(slot)
        self._slots[agent.name] = slot
        rank = {name: i for i, name in enumerate(order)}
        self._slots = dict(sorted(self._slots.items(),
                                  key=lambda kv: rank.get(kv[0], len(rank))))
        if self._started and not self._stopping:
            self._launch(slot)

    async def remove(self, name: str, timeout: float = 10.0) -> BaseAgent:
        """Stop one agent as a graceful stop does and supervise it no more."""
        slot = self._slots.pop(name)
        unserve = self._unserve.pop(name, None)
        if unserve is not None:
            unserve()
        await self._stop_slot(slot, timeout)
        return slot.agent

    def _wake_all(self, _settings: object, _changed: tuple[str, ...]) -> None:
        for slot in self._slots.values():
            slot.agent.wake()

    async def stop(self, timeout: float = 10.0) -> None:
        """Graceful shutdown, in reverse start order: producers stop before the consumers
        that store what they produced. An agent that does not stop within ``timeout``
        seconds is cancelled."""
        self._stopping = True
        for unserve in self._unserve.values():
            unserve()
        self._unserve.clear()
        for slot in reversed(list(self._slots.values())):
            await self._stop_slot(slot, timeout)

    async def _stop_slot(self, slot: _Slot, timeout: float) -> None:
        slot.removed = True
        slot.agent.stop()
        if slot.watcher is not None:
            _done, pending = await asyncio.wait([slot.watcher], timeout=timeout)
            if pending:
                log.warning("agent %s did not stop within %gs; cancelling",
                            slot.agent.name, timeout)
                slot.watcher.cancel()
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()
            await asyncio.gather(slot.watcher, return_exceptions=True)
        slot.agent.mark_stopped()
        try:
            slot.agent.close()
        except Exception as exc:
            log.warning("closing agent %s failed: %s", slot.agent.name, exc)

    async def restart(self, name: str) -> None:
        """Restart one agent now (manual restart: no backoff, not counted as a crash)."""
        slot = self._slots[name]
        slot.manual_restart.set()
        slot.agent.stop()

    # ------------------------------------------------------------------ internals

    async def _publish(self, event: Event) -> None:
        try:
            await self.bus.publish(system_topic(self.host), event)
        except Exception as exc:
            log.error("supervisor could not publish %s: %s", type(event).__name__, exc)

    async def _watch(self, slot: _Slot) -> None:
        agent = slot.agent
        while not self._stopping and not slot.removed:
            slot.started_at = self._monotonic()
            slot.task = asyncio.create_task(agent.run(), name=f"agent-{agent.name}")
            try:
                await slot.task
                reason = None
            except asyncio.CancelledError:
                if self._stopping or slot.removed:
                    return
                reason = "task was cancelled"
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                log.debug("agent %s died", agent.name, exc_info=True)
            if self._stopping or slot.removed:
                return
            if slot.manual_restart.is_set():
                slot.manual_restart.clear()
                agent.restarts += 1
                log.info("agent %s restarted on request", agent.name)
                await self._publish(AgentRestarted(host=self.host, agent=agent.name,
                                                   restarts=agent.restarts, backoff_s=0.0,
                                                   reason="restart requested"))
                continue
            if reason is None:
                reason = "run() returned without being asked to stop"
            if self._monotonic() - slot.started_at >= self.stable_after:
                slot.attempt = 0
            slot.attempt += 1
            agent.mark_crashed(reason)
            settings = self.config.current.agents
            if settings.restart_limit and agent.restarts >= settings.restart_limit:
                slot.gave_up = True
                log.error("agent %s crashed (%s); restart limit %d reached, giving up",
                          agent.name, reason, settings.restart_limit)
                await self._publish(AgentGaveUp(host=self.host, agent=agent.name,
                                                restarts=agent.restarts, reason=reason))
                return
            delay = backoff_delay(slot.attempt, settings.restart_backoff_initial,
                                  settings.restart_backoff_max)
            agent.restarts += 1
            log.error("agent %s crashed (%s); restarting in %.1fs (restart #%d)",
                      agent.name, reason, delay, agent.restarts)
            await self._publish(AgentRestarted(host=self.host, agent=agent.name,
                                               restarts=agent.restarts, backoff_s=delay,
                                               reason=reason))
            await self._sleep(delay)
            # A restart asked for during the backoff is served by this very restart.
            slot.manual_restart.clear()

    def _command_handler(self, slot: _Slot) -> Callable[[Event], Awaitable[Event]]:
        async def handle(event: Event) -> Event:
            # The agent's desk checks every command (its restart verb is ours, below).
            return await slot.agent.handle_command(event)

        return handle

    def _restarter(self, slot: _Slot) -> Callable[[], Awaitable[None]]:
        async def restart() -> None:
            if slot.gave_up and slot.watcher is not None and slot.watcher.done():
                slot.gave_up = False
                slot.attempt = 0
                slot.watcher = asyncio.create_task(self._watch(slot),
                                                   name=f"watch-{slot.agent.name}")
            else:
                await self.restart(slot.agent.name)

        return restart


async def send_command(bus: Bus, host: str, agents: list[str], command: Command,
                       timeout: float = 5.0) -> list[CommandReply]:
    """Send a command to one agent or to all (``target == "all"``); collect the replies."""
    targets = agents if command.target == "all" else [command.target]
    replies: list[CommandReply] = []
    for name in targets:
        if name not in agents:
            replies.append(CommandReply(host=host, agent=name, command=command.command, ok=False,
                                        code="not_found", message=f"unknown agent {name!r}",
                                        request_id=command.request_id))
            continue
        code: ReplyCode = "unavailable"
        try:
            reply = await bus.request(command_topic(host, name), command, timeout=timeout)
        except asyncio.TimeoutError:
            message, code = f"no reply within {timeout:g}s", "timeout"
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
        else:
            if isinstance(reply, CommandReply):
                replies.append(reply)
                continue
            message, code = f"unexpected reply {type(reply).__name__}", "error"
        replies.append(CommandReply(host=host, agent=name, command=command.command, ok=False,
                                    message=message, code=code, request_id=command.request_id))
    return replies
