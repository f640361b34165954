"""Replay speed: a day of 5 s history through `watchkeeper replay`, in seconds.

Writes a synthetic but realistic day for one host into a temporary store through the real
store API (``SqliteStore.add_snapshot``/``add_event``/``flush``): 17,280 snapshots, each with
50 process rows (25 in each top list; ``--top``; the sensor keeps 5 by default), 4 mounts and
2 interfaces; a daily CPU curve with noise, a
mount that fills slowly, a nightly backup pinning a core for 15 minutes, a service that
crashes twice (its service reports and remediation events), and the alerts a real analyzer
published over it. Then times, on the same files:

* ``read``: paging through the snapshots and decoding them (HistoryReader), nothing else;
* ``replay``: the whole shadow run in-process (read, rules, policy, comparison);
* ``cli``: ``watchkeeper replay --json`` as a user runs it (Python start-up included).

    python bench/replay.py [--hours 24] [--interval 5] [--top 25] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from watchkeeper.analysis import Analyzer
from watchkeeper.config import StorageConfig, validate
from watchkeeper.events import (
    CpuStats,
    DiskUsage,
    MemoryStats,
    MetricSnapshot,
    NetIO,
    ProcessInfo,
    ProcessSummary,
    RemediationEvent,
    ServiceInfo,
    ServiceReport,
)
from watchkeeper.replay import replay
from watchkeeper.store.reader import HistoryReader
from watchkeeper.store.sqlite import DB_FILENAME, SqliteStore

HOST = "bench-host"
START = datetime(2024, 3, 4, tzinfo=timezone.utc)
GB = 1_000_000_000
MOUNTS = ("/", "/var", "/home", "/srv")


def _procs(rng: random.Random, backup: bool, top: int) -> tuple[ProcessInfo, ...]:
    out = []
    for k in range(max(top, 8)):
        cpu = max(0.0, rng.gauss(2.0 if k > 5 else 12.0, 1.5))
        out.append(ProcessInfo(pid=1000 + k, create_time=1_700_000_000.0 + k,
                               name=f"proc{k}", user="app", cpu_percent=cpu,
                               rss=int((200 - 3 * k) * 1_000_000 + rng.random() * 1e6),
                               memory_percent=2.0, status="sleeping",
                               cmdline=f"/usr/bin/proc{k} --serve --port {8000 + k}"))
    if backup:
        out[0] = ProcessInfo(pid=999, create_time=1_709_520_000.0, name="backup",
                             user="root", cpu_percent=99.0, rss=80_000_000,
                             cmdline="/usr/bin/backup --full")
    out.sort(key=lambda p: -(p.cpu_percent or 0))
    return tuple(out)


def snapshot(i: int, interval: float, rng: random.Random, top: int = 25) -> MetricSnapshot:
    at = START + timedelta(seconds=i * interval)
    hour = (i * interval / 3600) % 24
    backup = 2.0 <= hour < 2.25  # 02:00-02:15: a core pinned
    cpu = 20 + 25 * math.sin(math.pi * max(0.0, hour - 7) / 14) * (7 <= hour <= 21)
    cpu = min(100.0, max(0.0, cpu + rng.gauss(0, 4) + (50 if backup else 0)))
    var = 60 + 30 * (i * interval) / 86400  # /var: 60 % to 90 % over the day
    procs = _procs(rng, backup, top)
    web_down = hour % 12 >= 11.5 and hour % 12 < 11.5 + 10 / 3600
    return MetricSnapshot(
        host=HOST, at=at, seq=i, interval_s=interval,
        cpu=CpuStats(percent=cpu, per_core=(cpu, cpu), load_1=cpu / 50, load_5=cpu / 50,
                     load_15=cpu / 50, count_logical=2, iowait_percent=1.0),
        memory=MemoryStats(total=16 * GB, available=9 * GB, used=7 * GB,
                           percent=43.75 + rng.gauss(0, 0.5), swap_total=2 * GB,
                           swap_used=0, swap_percent=0.0),
        disks=tuple(DiskUsage(mountpoint=m, device=f"/dev/sd{chr(97 + k)}1", fstype="ext4",
                              total=100 * GB, used=int(p * GB), free=int((100 - p) * GB),
                              percent=p, inodes_percent=4.0)
                    for k, (m, p) in enumerate(zip(MOUNTS, (40.0, var, 55.0, 30.0),
                                                   strict=True))),
        net=tuple(NetIO(interface=n, is_up=True, bytes_sent_per_s=1e5 * rng.random(),
                        bytes_recv_per_s=1e5 * rng.random(), packets_sent_per_s=100,
                        packets_recv_per_s=100, errors_in=0, errors_out=0, drops_in=0,
                        drops_out=0) for n in ("eth0", "eth1")),
        processes=ProcessSummary(total=180, running=3, zombies=0, threads=600,
                                 top_cpu=procs[:top], top_memory=tuple(
                                     sorted(procs, key=lambda p: -(p.rss or 0)))[:top]),
        services=(ServiceInfo(name="web", manager="process",
                              state="stopped" if web_down else "running",
                              healthy=None if web_down else True),),
        uptime_s=86400.0 + i * interval)


def crash_reports(hours: float) -> list[ServiceReport]:
    """web exits at 11:30 and 23:30 and is back 10 s later."""
    out = []
    for h in (11.5, 23.5):
        if h >= hours:
            continue
        down = START + timedelta(hours=h)
        base = {"host": HOST, "service": "web", "manager": "process"}
        out += [ServiceReport(**base, at=down, condition="down", state="stopped",
                              detail="exited with code 1", since=down),
                ServiceReport(**base, at=down + timedelta(seconds=10), condition="ok",
                              state="running", healthy=True, restarts=1,
                              since=down + timedelta(seconds=10))]
    return out


async def write(data_dir: Path, n: int, interval: float, hours: float, top: int) -> float:
    """The day through the real store (and the alerts a real analyzer published)."""
    settings = validate({"services": {"web": {"manager": "process", "start": ["true"]}}})
    analyzer = Analyzer(lambda: settings, host=HOST)
    store = SqliteStore.open(StorageConfig(data_dir=data_dir))
    rng = random.Random(7)
    reports = crash_reports(hours)
    began = time.perf_counter()
    for i in range(n):
        snap = snapshot(i, interval, rng, top)
        while reports and reports[0].at <= snap.at:
            rep = reports.pop(0)
            store.add_event(f"services.{HOST}", rep)
            for alert in analyzer.observe_service(rep):
                store.add_event(f"alerts.{HOST}", alert)
            if rep.condition == "down":
                store.add_event(f"actions.{HOST}", RemediationEvent(
                    host=HOST, at=rep.at, phase="finished", action="restart_service",
                    target="web", verdict="auto", source="supervisor", outcome="ok"))
        store.add_snapshot(snap)
        for alert in analyzer.observe(snap):
            store.add_event(f"alerts.{HOST}", alert)
        if i % 500 == 499:
            await store.flush()
    await store.close()
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between snapshots")
    parser.add_argument("--top", type=int, default=25, help="processes in each top list")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the history here and keep it (default: a temp dir)")
    args = parser.parse_args()
    n = int(args.hours * 3600 / args.interval)
    tmp = None
    if args.keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="wk-replay-bench-")
        data_dir = Path(tmp.name)
    else:
        data_dir = args.keep
    try:
        took = asyncio.run(write(data_dir, n, args.interval, args.hours, args.top))
        db = data_dir / DB_FILENAME
        print(f"wrote {n:,} snapshots ({args.hours:g} h at {args.interval:g} s, {args.top} "
              f"processes in each top list) in {took:.1f} s; {db.stat().st_size / 1e6:.1f} MB;"
              f" load average {os.getloadavg()[0]:.1f}")
        end = START + timedelta(seconds=n * args.interval)
        settings = validate({"services": {"web": {"manager": "process", "start": ["true"]}}})
        with HistoryReader(db) as reader:
            t0 = time.perf_counter()
            count = sum(1 for _ in reader.snapshots(START.timestamp(), end.timestamp(), HOST))
            read_s = time.perf_counter() - t0
            report = replay(reader, settings, START, end, host=HOST)
        print(f"read    {count:,} snapshots in {read_s:6.2f} s ({count / read_s:8,.0f}/s)")
        print(f"replay  {report.snapshots:,} snapshots in {report.took_s:6.2f} s "
              f"({report.snapshots / report.took_s:8,.0f}/s): {len(report.would_alerts)} "
              f"alerts would fire, {len(report.did_alerts)} did, "
              f"{len(report.would_actions)} decisions")
        env = {**os.environ, "WATCHKEEPER_STORAGE__DATA_DIR": str(data_dir)}
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "watchkeeper", "replay", "--host", HOST,
                              "--from", START.isoformat(), "--to", end.isoformat(), "--json"],
                             capture_output=True, text=True, env=env, check=True,
                             cwd=data_dir)
        cli_s = time.perf_counter() - t0
        data = json.loads(out.stdout)
        print(f"cli     {data['snapshots']:,} snapshots in {cli_s:6.2f} s wall "
              f"(replay itself {data['took_s']:.2f} s)")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
