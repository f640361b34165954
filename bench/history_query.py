"""Benchmark the health history (GET /api/history's computation) over a busy day.

Run: python bench/history_query.py [--incidents 2000] [--hosts 1]
One day at the default 5 s interval (17,280 snapshots per host); per incident a firing, a
few value updates and a resolution, a started and a finished remediation, two service
reports. The answer is computed from the real SQLite store as the route does it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from watchkeeper.config import StorageConfig
from watchkeeper.events import Alert, MetricSnapshot, RemediationEvent, ServiceReport
from watchkeeper.health_history import health_history
from watchkeeper.store.sqlite import SqliteStore

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
DAY = 86_400


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


async def fill(store: SqliteStore, incidents: int, hosts: int) -> int:
    events = 0
    for h in range(hosts):
        host = f"host{h}"
        for i in range(0, DAY, 5):
            store.add_snapshot(MetricSnapshot(host=host, at=at(i), seq=i, interval_s=5.0))
        await store.flush()
        gap = DAY / incidents
        for n in range(incidents):
            since = n * gap
            fp = f"fp{n % 50}"
            service = f"svc{n % 10}"
            base = {"host": host, "id": f"{fp}-{n}", "fingerprint": fp, "rule": "service",
                    "metric": "service.up", "dimension": service, "severity": "critical",
                    "since": at(since), "summary": f"Service {service} is down"}
            out = [
                ServiceReport(host=host, at=at(since), service=service, manager="process",
                              condition="down", state="stopped"),
                Alert(**base, at=at(since + 0.3), labels={"change": "new"}),
                *(Alert(**base, at=at(since + 1 + k), labels={"change": "value"})
                  for k in range(3)),
                RemediationEvent(host=host, at=at(since + 1), phase="started",
                                 action="restart_service", target=service, fingerprint=fp),
                RemediationEvent(host=host, at=at(since + 2), phase="finished",
                                 action="restart_service", target=service, fingerprint=fp,
                                 outcome="ok" if n % 7 else "failed", verified=True),
                ServiceReport(host=host, at=at(since + 8), service=service,
                              manager="process", condition="ok", state="running"),
                Alert(**base, at=at(since + 8), state="resolved",
                      labels={"change": "resolved"}),
            ]
            for ev in out:
                store.add_event(f"x.{host}", ev)
            events += len(out)
            if n % 500 == 0:
                await store.flush()
        await store.flush()
    return events


async def run(incidents: int, hosts: int, repeat: int, directory: Path) -> None:
    store = SqliteStore(directory / "bench.db", StorageConfig(data_dir=directory))
    events = await fill(store, incidents, hosts)
    times = []
    body = None
    for _ in range(repeat):
        t = time.perf_counter()
        body = health_history(store, at(0), at(DAY), interval_s=5.0, now=at(DAY))
        times.append(time.perf_counter() - t)
    await store.close()
    assert body is not None
    print(f"{hosts} host(s), {hosts * DAY // 5:,} snapshots, {events:,} events, "
          f"{len(body.incidents)} incidents (truncated: {body.truncated}): "
          f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
          f"over {repeat} runs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--incidents", type=int, default=2000)
    parser.add_argument("--hosts", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.incidents, args.hosts, args.repeat, Path(tmp)))


if __name__ == "__main__":
    main()
