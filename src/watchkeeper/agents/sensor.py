"""SensorAgent: the eyes and ears. One MetricSnapshot per tick on ``metrics.<host>``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from watchkeeper.agents.base import BaseAgent
from watchkeeper.bus import metrics_topic
from watchkeeper.collectors.snapshot import SnapshotCollector
from watchkeeper.personality import Commentator

log = logging.getLogger(__name__)


class SensorAgent(BaseAgent):
    """Collects real metrics off the event loop and publishes them, with a comment."""

    name = "sensor"

    def __init__(self, *, collector: SnapshotCollector | None = None,
                 psutil_module: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        settings = self.config.current
        if collector is None:
            extra = {"psutil_module": psutil_module} if psutil_module is not None else {}
            collector = SnapshotCollector(config=settings.sensor, host=self.host, **extra)
        self.collector = collector
        self.commentator = Commentator(settings.thresholds,
                                       enabled=settings.personality.enabled)
        self._seq = 0

    def timeout(self, settings: Any) -> float:
        # Collectors bound themselves by collector_timeout; leave room for all families.
        return float(max(settings.agents.check_timeout, settings.sensor.collector_timeout * 3))

    async def _perform_check(self) -> None:
        settings = self.config.current
        # Live config: the next collect() and comment use the current settings.
        self.collector.config = settings.sensor
        self.commentator.thresholds = settings.thresholds
        self.commentator.enabled = settings.personality.enabled
        self._seq += 1
        snap = await asyncio.to_thread(self.collector.collect, self._seq,
                                       self.interval(settings))
        comment = self.commentator.observe(snap)
        if comment:
            snap = snap.model_copy(update={"comment": comment})
            log.info("%s", comment)
        await self.bus.publish(metrics_topic(self.host), snap)

    def close(self) -> None:
        self.collector.close()
