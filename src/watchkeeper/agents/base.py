"""BaseAgent: the loop, interval, per-check timeout, health and heartbeats.

A subclass writes only ``async def _perform_check(self)`` (and optionally ``setup`` /
``teardown``). An exception or timeout inside a check becomes an AgentError event and a
health mark, never a dead agent; a task that does die is the supervisor's business.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, ClassVar

from watchkeeper.agents.commands import CommandDesk, NoArgs, Verb
from watchkeeper.aio import wait_for
from watchkeeper.bus import Bus, Subscription, errors_topic, health_topic
from watchkeeper.config import ConfigStore, Settings
from watchkeeper.events import (
    AgentError,
    AgentHealth,
    AgentState,
    Command,
    CommandReply,
    Event,
    Heartbeat,
    utcnow,
)

log = logging.getLogger(__name__)


class BaseAgent(ABC):
    """Template for every agent; the supervisor runs ``run()`` as a task."""

    #: Registry name; also the agent's command topic suffix.
    name: ClassVar[str] = "agent"

    def __init__(
        self,
        *,
        bus: Bus,
        config: ConfigStore,
        host: str,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utcnow,
    ) -> None:
        self.bus = bus
        self.config = config
        self.host = host
        self._monotonic = monotonic
        self._wall = wall
        self._state: AgentState = "starting"
        self._paused = False
        self._stopping = False
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_success: datetime | None = None
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None
        self._error_count = 0
        self._consecutive_errors = 0
        self._checks = 0
        self._last_check_ms: float | None = None
        self._last_heartbeat = float("-inf")
        self.restarts = 0
        #: Set by the supervisor, which owns restarts: what the restart command runs.
        self.restarter: Callable[[], Awaitable[None]] | None = None
        #: Every command this agent receives is checked and run here (agents/commands.py).
        self.desk = CommandDesk(bus=bus, host=host, name=self.name, verbs=self.verbs,
                                state=lambda: self._state)

    # ------------------------------------------------------------------ subclass hooks

    @abstractmethod
    async def _perform_check(self) -> None:
        """One cycle of the agent's work."""

    async def setup(self) -> None:
        """Called once each time the agent's task starts (also after a restart)."""

    async def teardown(self) -> None:
        """Called when the agent stops gracefully."""

    def close(self) -> None:
        """Release resources for good (process shutdown); teardown may run many times."""

    def interval(self, settings: Settings) -> float:
        """Seconds between two checks; read from settings every cycle (live reload)."""
        return settings.agents.check_interval

    def timeout(self, settings: Settings) -> float:
        """Seconds one check may take."""
        return settings.agents.check_timeout

    # ------------------------------------------------------------------ health

    @property
    def state(self) -> AgentState:
        return self._state

    def health(self) -> AgentHealth:
        """A frozen snapshot of this agent's health."""
        return AgentHealth(
            name=self.name,
            state=self._state,
            last_success=self._last_success,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            error_count=self._error_count,
            consecutive_errors=self._consecutive_errors,
            restarts=self.restarts,
            checks=self._checks,
            last_check_ms=self._last_check_ms,
            interval_s=self.interval(self.config.current),
        )

    def mark_crashed(self, reason: str) -> None:
        """Set by the supervisor when the agent's task died."""
        self._state = "crashed"
        self._last_error = reason
        self._last_error_at = self._wall()
        self._error_count += 1

    def mark_stopped(self) -> None:
        self._state = "stopped"

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask the loop to finish after the current check."""
        self._stopping = True
        self._wake.set()

    def pause(self) -> None:
        self._paused = True
        self._state = "paused"
        self._wake.set()

    def resume(self) -> None:
        self._paused = False
        if self._state == "paused":
            self._state = "running"
        self._wake.set()

    def verbs(self) -> dict[str, Verb]:
        """The commands this agent takes; subclasses add their own to these."""
        verbs = {
            "pause": Verb(self._pause_verb, any_state=True),
            "resume": Verb(self._resume_verb, any_state=True),
            "health_check": Verb(self._health_verb, mutating=False, any_state=True),
        }
        if self.restarter is not None:
            verbs["restart"] = Verb(self._restart_verb, any_state=True)
        return verbs

    async def _pause_verb(self, _args: NoArgs, _command: Command) -> dict[str, Any]:
        self.pause()
        return {"message": "paused"}

    async def _resume_verb(self, _args: NoArgs, _command: Command) -> dict[str, Any]:
        self.resume()
        return {"message": "resumed"}

    async def _health_verb(self, _args: NoArgs, _command: Command) -> dict[str, Any]:
        return {"message": f"{self._state}, {self._checks} checks, {self._error_count} errors"}

    async def _restart_verb(self, _args: NoArgs, _command: Command) -> dict[str, Any]:
        assert self.restarter is not None
        await self.restarter()
        return {"message": "restarting"}

    async def handle_command(self, command: Event) -> CommandReply:
        """Check one command and run it (agents/commands.py); the reply carries health."""
        reply = await self.desk.handle(command)
        return reply.model_copy(update={"health": self.health()})

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """The agent's life: setup, then checks every interval until stopped."""
        self._stopping = False
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._state = "paused" if self._paused else "running"
        await self.setup()
        scheduled = self._monotonic()
        try:
            while not self._stopping:
                if self._paused:
                    await self._heartbeat_if_due(self.config.current)
                    await self._sleep(self.config.current.agents.heartbeat_interval)
                    scheduled = self._monotonic()
                    continue
                await self._one_check(self.config.current)
                await self._heartbeat_if_due(self.config.current)
                scheduled = await self._wait_next(scheduled)
        finally:
            if self._stopping:
                self._state = "stopped"
        await self.teardown()
        await self._publish_heartbeat()

    async def _wait_next(self, scheduled: float) -> float:
        """Sleep until the next tick; returns its scheduled time.

        Fixed-rate: a slow check does not shift later ticks, and missed ticks are skipped
        rather than run back to back. Woken early (config change, command), the due time is
        recomputed from the current interval, so a new interval applies at once.
        """
        while not self._stopping and not self._paused:
            interval = self.interval(self.config.current)
            due = scheduled + interval
            now = self._monotonic()
            if due <= now:
                return now - ((now - due) % interval)
            if not await self._sleep(due - now):
                return due
        return self._monotonic()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, or return True early when woken."""
        self._wake.clear()
        if self._stopping:
            return True
        try:
            await wait_for(self._wake.wait(), max(seconds, 0.0))
        except asyncio.TimeoutError:
            return False
        return True

    async def next_item(self, sub: Subscription, timeout: float) -> tuple[str, Event] | None:
        """Wait up to ``timeout`` s for the next item of ``sub``, for event-driven agents.

        Returns None on timeout, or early when the agent is stopped, paused or its settings
        change, so a check that waits here never delays a shutdown.
        """
        item = sub.get_nowait()
        if item is not None or self._stopping or self._paused:
            return item
        getter = asyncio.ensure_future(sub.get())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait({getter, woken}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (getter, woken):
                if not task.done():
                    task.cancel()  # a cancelled get() takes nothing off the queue
        if getter in done and not getter.cancelled() and getter.exception() is None:
            return getter.result()
        return None

    async def next_batch(self, sub: Subscription) -> list[tuple[str, Event]]:
        """Wait for the next item of ``sub`` (bounded well inside the check timeout), then
        take everything else already queued: what an event-driven check works on."""
        agents = self.config.current.agents
        item = await self.next_item(sub, min(agents.check_interval * 2, agents.check_timeout / 2))
        batch: list[tuple[str, Event]] = []
        while item is not None:
            batch.append(item)
            item = sub.get_nowait()
        return batch

    def wake(self) -> None:
        """Interrupt the agent's sleep (thread-safe): it re-reads its settings."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            if asyncio.get_running_loop() is loop:
                self._wake.set()
                return
        except RuntimeError:
            pass
        loop.call_soon_threadsafe(self._wake.set)

    async def _one_check(self, settings: Settings) -> None:
        started = self._monotonic()
        limit = self.timeout(settings)
        error: BaseException | None = None
        timed_out = False
        try:
            await wait_for(self._perform_check(), limit)
        except asyncio.TimeoutError as exc:
            error, timed_out = exc, True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
        self._checks += 1
        self._last_check_ms = (self._monotonic() - started) * 1000
        if error is None:
            if self._consecutive_errors:
                log.info("%s recovered after %d failed check(s)", self.name,
                         self._consecutive_errors)
            self._consecutive_errors = 0
            self._last_success = self._wall()
            if self._state in ("degraded", "starting"):
                self._state = "running"
            return
        text = f"check timed out after {limit:g}s" if timed_out else f"{error}"
        self._error_count += 1
        self._consecutive_errors += 1
        self._last_error = text or type(error).__name__
        self._last_error_at = self._wall()
        self._state = "degraded"
        if self._consecutive_errors == 1:
            # Log an outage once, not every tick.
            log.warning("%s check failed: %s: %s", self.name, type(error).__name__, text,
                        exc_info=not timed_out)
        try:
            await self.bus.publish(errors_topic(self.host, self.name), AgentError(
                host=self.host, agent=self.name, error=self._last_error,
                error_type=type(error).__name__, timed_out=timed_out,
                consecutive=self._consecutive_errors))
        except Exception as exc:  # the bus failing must not kill the agent either
            log.error("%s could not publish its error event: %s", self.name, exc)

    async def _heartbeat_if_due(self, settings: Settings) -> None:
        if self._monotonic() - self._last_heartbeat >= settings.agents.heartbeat_interval:
            await self._publish_heartbeat()

    async def _publish_heartbeat(self) -> None:
        self._last_heartbeat = self._monotonic()
        try:
            await self.bus.publish(health_topic(self.host, self.name),
                                   Heartbeat(host=self.host, agent=self.name, health=self.health()))
        except Exception as exc:
            log.error("%s could not publish its heartbeat: %s", self.name, exc)
