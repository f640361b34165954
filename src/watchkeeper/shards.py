"""Analysis shards: ``watchkeeper analyze --shard i/N`` and the central that runs N of them.

A shard is one process holding one AnalyzerAgent for the hosts that hash to it
(analysis/shard.py), reading the metrics stream through a durable consumer of its own and
publishing alert changes on the bus, where the central stores them and shows them. Killed
and started again (by the central, or by systemd for a shard run by hand), it resumes its
consumer where it stopped and rebuilds its hosts' open alerts from the alerts stream, so
nothing is lost and nothing fires twice; learned baselines come back from its state file
(saved every 5 minutes and at a clean stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.aio import wait_for
from watchkeeper.analysis.shard import Shard
from watchkeeper.bus.factory import make_bus, start_bus
from watchkeeper.config import ConfigStore, Settings
from watchkeeper.runtime import host_name
from watchkeeper.store.sqlite import SqliteStore
from watchkeeper.supervisor import Supervisor

log = logging.getLogger(__name__)

#: Seconds before a shard that exited is started again, doubling up to the last one; the
#: delay starts over once a shard has run for ``HEALTHY_AFTER_S``.
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
HEALTHY_AFTER_S = 60.0


async def run_shard(settings: Settings, shard: Shard, stop: asyncio.Event) -> None:
    """One analysis shard until ``stop`` is set (the central's history is read, never
    written: an investigation's tools look at it)."""
    host = host_name(settings)
    config = ConfigStore(settings)
    bus = make_bus(settings.bus, client=host)
    store = SqliteStore.open(settings.storage)
    agent = AnalyzerAgent(store=store, shard=shard, bus=bus, config=config, host=host)
    supervisor = Supervisor([agent], bus=bus, config=config, host=host)
    try:
        await start_bus(bus)
        await supervisor.start()
        log.info("analysis shard %d of %d is on watch for %s's fleet", shard.index + 1,
                 shard.count, host)
        await stop.wait()
    finally:
        await supervisor.stop()
        await bus.close()
        await store.close()


class ShardProcesses:
    """A sharded central's N ``watchkeeper analyze`` processes, started again when one
    exits (with backoff), stopped with the central."""

    def __init__(self, count: int, *, server: str, config_file: Path | None,
                 log_dir: Path) -> None:
        self.count = count
        self.server = server
        self.config_file = config_file
        self.log_dir = log_dir
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.restarts: dict[int, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def argv(self, index: int) -> list[str]:
        """The command line of shard ``index`` (the central's configuration and broker)."""
        config = ["--config", str(self.config_file)] if self.config_file else []
        return [sys.executable, "-m", "watchkeeper", *config, "analyze", "--server",
                self.server, "--shard", f"{index}/{self.count}", "--no-console-log"]

    async def start(self) -> None:
        for index in range(self.count):
            await self._spawn(index)
            self._tasks.append(asyncio.create_task(self._watch(index),
                                                   name=f"shard-{index}"))

    async def _spawn(self, index: int) -> None:
        env = dict(os.environ)
        # A log file each: several processes rotating one file would lose lines.
        env["WATCHKEEPER_LOGGING__DIR"] = str(self.log_dir / f"shard-{index}")
        self.procs[index] = await asyncio.create_subprocess_exec(
            *self.argv(index), env=env, stdin=asyncio.subprocess.DEVNULL)
        log.info("analysis shard %d/%d started (pid %d)", index, self.count,
                 self.procs[index].pid)

    async def _watch(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping:
            proc = self.procs[index]
            started = loop.time()
            code = await proc.wait()
            if self._stopping:
                return
            if loop.time() - started >= HEALTHY_AFTER_S:
                failures = 0
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            failures += 1
            self.restarts[index] = self.restarts.get(index, 0) + 1
            log.error("analysis shard %d/%d (pid %d) exited with %s; starting it again in "
                      "%.0f s (restart #%d)", index, self.count, proc.pid, code, delay,
                      self.restarts[index])
            await asyncio.sleep(delay)
            if not self._stopping:
                await self._spawn(index)

    async def stop(self, timeout: float = 15.0) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        running = [p for p in self.procs.values() if p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                await wait_for(proc.wait(), timeout)
            except asyncio.TimeoutError:
                log.error("analysis shard pid %d did not stop in %.0f s: killed", proc.pid,
                          timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
