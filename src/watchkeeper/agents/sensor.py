"""SensorAgent: the eyes and ears. One MetricSnapshot per tick on ``metrics.<host>``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from watchkeeper.agents.base import BaseAgent
from watchkeeper.bus import metrics_topic
from watchkeeper.collectors.snapshot import SnapshotCollector
from watchkeeper.events import MetricSnapshot, ServiceInfo
from watchkeeper.personality import Commentator, mark
from watchkeeper.remediation.services import Services

log = logging.getLogger(__name__)

#: Seconds between the "still watching" summary lines in the log (INFO).
SUMMARY_EVERY_S = 300.0


def summary_line(snap: MetricSnapshot) -> str:
    """One plain line about a snapshot: CPU, memory, swap, load, fullest disk, processes."""
    parts = []
    if snap.cpu.percent is not None:
        parts.append(f"CPU {snap.cpu.percent:.0f}%")
    if snap.memory.percent is not None:
        parts.append(f"mem {snap.memory.percent:.0f}%")
    if snap.memory.swap_percent is not None and snap.memory.swap_total:
        parts.append(f"swap {snap.memory.swap_percent:.0f}%")
    if snap.cpu.load_1 is not None:
        parts.append(f"load {snap.cpu.load_1:.2f}")
    disks = [d for d in snap.disks if d.percent is not None]
    if disks:
        fullest = max(disks, key=lambda d: d.percent or 0.0)
        parts.append(f"{fullest.mountpoint} {fullest.percent:.0f}% full")
    if snap.processes.total is not None:
        parts.append(f"{snap.processes.total} processes")
    if snap.services:
        down = [sv.name for sv in snap.services if sv.healthy is False or sv.state != "running"]
        parts.append(f"services: {len(snap.services) - len(down)}/{len(snap.services)} ok"
                     + (f" (down: {', '.join(down)})" if down else ""))
    if snap.missing:
        parts.append(f"{len(snap.missing)} values unreadable")
    return " · ".join(parts) or "no readings"


class SensorAgent(BaseAgent):
    """Collects real metrics off the event loop and publishes them; at personality level
    witty, a one-liner in the log when a notable state comes or goes (never in the event)."""

    name = "sensor"

    def __init__(self, *, collector: SnapshotCollector | None = None,
                 psutil_module: Any = None, services: Services | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        settings = self.config.current
        if collector is None:
            extra = {"psutil_module": psutil_module} if psutil_module is not None else {}
            collector = SnapshotCollector(config=settings.sensor, host=self.host, **extra)
        self.collector = collector
        self.services = services
        self.commentator = Commentator(settings.thresholds,
                                       enabled=settings.personality.level == "witty")
        self._seq = 0
        self._next_summary = float("-inf")

    def timeout(self, settings: Any) -> float:
        # Collectors bound themselves by collector_timeout; leave room for all families.
        return float(max(settings.agents.check_timeout, settings.sensor.collector_timeout * 3))

    async def _perform_check(self) -> None:
        settings = self.config.current
        # Live config: the next collect() and comment use the current settings.
        self.collector.config = settings.sensor
        self.commentator.thresholds = settings.thresholds
        self.commentator.enabled = settings.personality.level == "witty"
        self._seq += 1
        collect = asyncio.to_thread(self.collector.collect, self._seq, self.interval(settings))
        if self.services is not None and self.services.names:
            # Service checks (HTTP, TCP, commands) run concurrently with the psutil work.
            snap, services = await asyncio.gather(collect, self._services(self.services))
            snap = snap.model_copy(update={"services": services})
        else:
            snap = await collect
        comment = self.commentator.observe(snap)
        if comment:
            log.info("%s", comment)
        # The first tick with rates, then every few minutes: proof of life, not a flood.
        now = self._monotonic()
        if self._seq >= 2 and now >= self._next_summary:
            self._next_summary = now + SUMMARY_EVERY_S
            log.info(mark(settings.personality.level, "📊") + "%s", summary_line(snap))
        else:
            log.debug("tick %d: %s", self._seq, summary_line(snap))
        await self.bus.publish(metrics_topic(self.host), snap)

    @staticmethod
    async def _services(services: Services) -> tuple[ServiceInfo, ...]:
        found = await services.statuses()
        return tuple(
            ServiceInfo(name=name, manager=st.manager, state=st.state, healthy=st.healthy,
                        pid=st.pid, detail=st.detail[:300],
                        failing=tuple(c.message[:200] for c in st.checks if not c.ok))
            for name, st in found.items())

    def close(self) -> None:
        self.collector.close()
