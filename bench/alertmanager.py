"""Alertmanager route: the cost on the agents' path, and a whole resend to a real Alertmanager.

* ``take``: alert changes applied to a route's state per second (what the AlertmanagerAgent
  does between two bus reads; it never waits on the network). Alerts carry a summary, a
  context of 200 characters, an assessment and 4 labels of their own.
* ``resend``: wall time of one post of the whole current set (N firing alerts, batches of
  64) to a real prometheus-alertmanager on 127.0.0.1:9330-9339, started here and killed after.

    python bench/alertmanager.py [--alerts 10000] [--changes 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

from watchkeeper.config import RouteConfig
from watchkeeper.events import Alert, Assessment, utcnow
from watchkeeper.notify.alertmanager import AlertmanagerRoute, RouteState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.alertmanager_server import Alertmanager, WebhookReceiver


def alerts(n: int) -> list[Alert]:
    now = utcnow()
    return [Alert(host=f"host-{i % 50}", id=f"a{i}", fingerprint=f"fp{i}", rule="threshold",
                  metric="disk.percent", dimension=f"/mnt/d{i}", severity="warning",
                  since=now - timedelta(minutes=5), at=now, summary=f"Disk /mnt/d{i} 93% full",
                  context="x" * 200, value=93.0, threshold=90.0,
                  labels={"mount": f"/mnt/d{i}", "change": "value", "pid": "42",
                          "process": "app"},
                  assessment=Assessment(source="rule", summary="logs grow",
                                        likely_cause="debug logging"))
            for i in range(n)]


def bench_take(changes: int, distinct: int) -> float:
    route = RouteConfig(name="am", alertmanager="http://127.0.0.1:9", min_severity="info")
    state = RouteState()
    batch = alerts(distinct)
    now = utcnow()
    started = time.perf_counter()
    for i in range(changes):
        state.take(route, batch[i % distinct], dashboard="http://d/", now=now, mono=0.0)
    return changes / (time.perf_counter() - started)


async def bench_resend(n: int) -> float:
    route_alerts = alerts(n)
    root = Path(tempfile.mkdtemp(prefix="wk-bench-am-"))
    receiver = WebhookReceiver()
    am = Alertmanager(root, receiver.url)
    am.start()
    try:
        route = RouteConfig(name="am", alertmanager=am.url, min_severity="info")
        async with httpx.AsyncClient() as client:
            sender = AlertmanagerRoute(route, client=client, dashboard="http://d/")
            sender.take(route_alerts)
            started = time.perf_counter()
            assert await sender.send_once()
            took = time.perf_counter() - started
        assert len(am.alerts()) == n
        return took
    finally:
        am.stop()
        receiver.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=100_000)
    args = parser.parse_args()
    rate = bench_take(args.changes, min(args.alerts, 1000))
    print(f"take: {rate:,.0f} alert changes/s into a route's state (1000 distinct alerts)")
    for n in (1000, args.alerts):
        took = asyncio.run(bench_resend(n))
        print(f"resend: {n} firing alerts posted in {took:.2f}s ({n / took:,.0f} alerts/s)")


if __name__ == "__main__":
    main()
