"""The Store protocol: history of snapshots and events, queried by metric and time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from watchkeeper.events import Event, MetricSnapshot


@dataclass(frozen=True)
class SeriesPoint:
    """One point of a metric's history; raw points have min == max == avg, count 1."""

    at: datetime
    avg: float
    min: float
    max: float
    count: int


@dataclass(frozen=True)
class StoredEvent:
    id: int
    at: datetime
    topic: str
    kind: str
    event: Event


class Store(Protocol):
    """Persistent history. Writes are queued and flushed in batches off the event loop."""

    def add_snapshot(self, snap: MetricSnapshot) -> None:
        """Queue a snapshot for the next batch (never blocks on I/O)."""
        ...

    def add_event(self, topic: str, event: Event) -> None:
        """Queue an event for the next batch (never blocks on I/O)."""
        ...

    async def flush(self) -> int:
        """Write everything queued in one transaction; returns rows written."""
        ...

    async def apply_retention(self, now: datetime | None = None) -> object:
        """Downsample old raw history and delete what is past retention."""
        ...

    async def close(self) -> None:
        """Flush what is queued and close the database."""
        ...

    def latest_snapshot(self) -> MetricSnapshot | None: ...

    def hosts(self, start: datetime) -> list[str]:
        """Hosts with a stored snapshot taken at or after ``start``."""
        ...

    def snapshots(self, start: datetime, end: datetime, limit: int = 1000
                  ) -> list[MetricSnapshot]: ...

    def series(self, metric: str, start: datetime, end: datetime, *, dimension: str = "",
               step_s: int | None = None, host: str | None = None) -> list[SeriesPoint]: ...

    def dimensions(self, metric: str) -> Sequence[str]: ...

    def events(self, start: datetime | None = None, end: datetime | None = None, *,
               kinds: Sequence[str] = (), limit: int = 1000) -> list[StoredEvent]: ...
