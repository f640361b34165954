"""Analyzer throughput: snapshots analysed per second on one core.

Each snapshot carries 50 processes in both top lists, 10 mounts and 3 interfaces, 5 s apart
(so forecasts, leak tracking and baselines all do their real work). Two scenarios:

* ``healthy``: everything normal, no alert open (the common case);
* ``busy``: CPU critical with a runaway, two disks above warning, so alerts stay open and
  every tick builds findings for them (changes are still rare).

Snapshots are built before timing; only ``Analyzer.observe`` is timed. The aim is at least
2,000 snapshots per second (one server following 10,000 hosts at a 5 s interval).

    python bench/analyzer_throughput.py [--snapshots 20000] [--scenario both] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import random
import time
from datetime import datetime, timedelta, timezone

from watchkeeper.analysis import Analyzer
from watchkeeper.config import validate
from watchkeeper.events import (
    CpuStats,
    DiskUsage,
    MemoryStats,
    MetricSnapshot,
    NetIO,
    ProcessInfo,
    ProcessSummary,
)

HOST = "bench-host"
START = datetime(2024, 3, 4, tzinfo=timezone.utc)
GB = 1_000_000_000


def build(n_unique: int, busy: bool, procs: int, mounts: int, nics: int, seed: int = 7
          ) -> list[MetricSnapshot]:
    """``n_unique`` snapshots with realistic noise (the timed run cycles through copies)."""
    rng = random.Random(seed)
    pool = [(1000 + i, 1_700_000_000.0 + i, f"worker-{i}") for i in range(procs + 10)]
    base_rss = [rng.uniform(20, 800) * 1e6 for _ in pool]
    mount_names = ["/"] + [f"/srv/vol{i}" for i in range(1, mounts)]
    out = []
    for k in range(n_unique):
        rows = []
        for j, (pid, ct, name) in enumerate(pool):
            cpu = rng.uniform(0, 30)
            if busy and j == 0:
                cpu = 99.0
            rss = base_rss[j] * rng.uniform(0.97, 1.03)
            rows.append(ProcessInfo(pid=pid, create_time=ct, name=name, cpu_percent=cpu,
                                    rss=int(rss), memory_percent=rss / (16 * GB) * 100,
                                    user="app", status="running", cmdline=f"/usr/bin/{name}"))
        top_cpu = tuple(sorted(rows, key=lambda p: p.cpu_percent or 0, reverse=True)[:procs])
        top_mem = tuple(sorted(rows, key=lambda p: p.rss or 0, reverse=True)[:procs])
        disks = []
        for i, mp in enumerate(mount_names):
            pct = 40.0 + (i % 10) * 3 + rng.uniform(-0.05, 0.05)
            if busy and i < 2:
                pct = 88.0 + rng.uniform(-0.2, 0.2)
            total = 500 * GB
            used = int(total * pct / 100)
            disks.append(DiskUsage(mountpoint=mp, device=f"/dev/sd{chr(97 + i)}", fstype="ext4",
                                   total=total, used=used, free=total - used, percent=pct,
                                   inodes_percent=10.0 + i))
        net = tuple(NetIO(interface=f"eth{i}", is_up=True, bytes_sent_per_s=rng.uniform(1e5, 1e6),
                          bytes_recv_per_s=rng.uniform(1e5, 1e6), packets_sent_per_s=500,
                          packets_recv_per_s=700, errors_in=0, errors_out=0,
                          drops_in=rng.randint(0, 3), drops_out=0) for i in range(nics))
        cpu_pct = rng.uniform(93, 97) if busy else rng.uniform(10, 40)
        out.append(MetricSnapshot(
            host=HOST, at=START, seq=k, interval_s=5.0,
            cpu=CpuStats(percent=cpu_pct, load_1=rng.uniform(0.5, 2), load_5=1, load_15=1,
                         count_logical=8, iowait_percent=rng.uniform(0, 3)),
            memory=MemoryStats(total=16 * GB, available=8 * GB, used=8 * GB,
                               percent=rng.uniform(45, 55), swap_total=GB, swap_used=0,
                               swap_percent=0.0),
            disks=tuple(disks), net=net,
            processes=ProcessSummary(total=300 + rng.randint(-5, 5), running=3, zombies=0,
                                     threads=900, top_cpu=top_cpu, top_memory=top_mem)))
    return out


def run(name: str, n: int, unique: int, args: argparse.Namespace) -> float:
    """Time ``n`` observes; returns snapshots per second."""
    base = build(unique, name == "busy", args.processes, args.mounts, args.interfaces)
    snaps = [base[i % unique].model_copy(update={"at": START + timedelta(seconds=5 * i),
                                                 "seq": i}) for i in range(n)]
    settings = validate({})
    analyzer = Analyzer(lambda: settings, host=HOST, cleanup_roots=["/srv/vol1/tmp"])
    changes = 0
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    started = time.perf_counter()
    for snap in snaps:
        changes += len(analyzer.observe(snap))
    elapsed = time.perf_counter() - started
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
    rate = n / elapsed
    logging.info("%-8s %7d snapshots in %6.2f s: %8.0f snapshots/s, %6.1f us each; "
                 "%d alert changes, %d open at the end", name, n, elapsed, rate,
                 1e6 * elapsed / n, changes, len(analyzer.active_alerts()))
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=20_000)
    parser.add_argument("--unique", type=int, default=500, help="distinct snapshots to cycle")
    parser.add_argument("--processes", type=int, default=50)
    parser.add_argument("--mounts", type=int, default=10)
    parser.add_argument("--interfaces", type=int, default=3)
    parser.add_argument("--scenario", choices=("healthy", "busy", "both"), default="both")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    # The benchmark's own report goes through logging like everything else; the analyzer's
    # alert log lines stay quiet.
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("watchkeeper").setLevel(logging.WARNING)
    names = ("healthy", "busy") if args.scenario == "both" else (args.scenario,)
    rates = [run(name, args.snapshots, args.unique, args) for name in names]
    ok = min(rates) >= 2000
    logging.info("aim >= 2000 snapshots/s: %s", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
