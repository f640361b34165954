"""Tick cost of SnapshotCollector.collect() with real psutil on a host with many processes.

Starts N idle children (coreutils ``sleep``), times collect() over a number of ticks, prints
mean / p95 / max, and kills every child it started (and only those). The process family is
timed twice per tick in the same run: the /proc scan the sensor uses on Linux, and the
psutil pass (the portable path, and the reference); their ratio is the saving.

    python bench/tick_cost.py [--children 300] [--ticks 20] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

import psutil

from watchkeeper.collectors import SnapshotCollector
from watchkeeper.collectors.common import MissingLog
from watchkeeper.collectors.processes import linux_thread_total, read_processes
from watchkeeper.collectors.procfs import ProcScanner
from watchkeeper.config import SensorConfig


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _row(name: str, values: list[float]) -> str:
    return (f"{name:<22} mean {statistics.mean(values):7.2f} ms   p95 {_p95(values):7.2f} ms"
            f"   max {max(values):7.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=300)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between ticks")
    args = parser.parse_args()

    sleep = shutil.which("sleep")
    argv = [sleep, "600"] if sleep else [sys.executable, "-c", "import time; time.sleep(600)"]
    children: list[subprocess.Popen[bytes]] = []
    collector = SnapshotCollector(config=SensorConfig(), host="bench")
    try:
        for _ in range(args.children):
            children.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL))
        time.sleep(0.5)
        collector.collect(0, args.interval)  # warm-up: psutil's process cache, our rates
        totals: list[float] = []
        procs: list[float] = []
        via_psutil: list[float] = []
        scanner = ProcScanner() if ProcScanner.available() else None
        thread_total = linux_thread_total if psutil.LINUX else None
        if scanner is not None:
            scanner.scan()
        read_processes(psutil, MissingLog(psutil), 5, time.time(), thread_total)
        snap = None
        for seq in range(1, args.ticks + 1):
            time.sleep(args.interval)
            started = time.perf_counter()
            snap = collector.collect(seq, args.interval)
            totals.append((time.perf_counter() - started) * 1000.0)
            # The process family alone, sequentially (the one that scales with the host).
            if scanner is not None:
                started = time.perf_counter()
                read_processes(psutil, MissingLog(psutil), 5, time.time(), thread_total,
                               scanner.scan)
                procs.append((time.perf_counter() - started) * 1000.0)
            started = time.perf_counter()
            read_processes(psutil, MissingLog(psutil), 5, time.time(), thread_total)
            via_psutil.append((time.perf_counter() - started) * 1000.0)
        assert snap is not None
        print(f"host: {psutil.cpu_count()} logical CPUs, python {sys.version.split()[0]}, "
              f"psutil {psutil.__version__}")
        print(f"processes seen: {snap.processes.total} ({args.children} idle children), "
              f"threads: {snap.processes.threads}, mounts: {len(snap.disks)}, "
              f"missing: {[m.key for m in snap.missing]}")
        print(f"ticks: {args.ticks}, {args.interval:g}s apart")
        print(_row("collect()", totals))
        if procs:
            print(_row("processes, /proc scan", procs))
        print(_row("processes, psutil", via_psutil))
        if procs:
            fast, slow = statistics.mean(procs), statistics.mean(via_psutil)
            n = snap.processes.total or 1
            print(f"/proc scan / psutil: {fast / slow:.2f}   per process: "
                  f"{fast * 1000 / n:.1f} µs vs {slow * 1000 / n:.1f} µs")
    finally:
        collector.close()
        for child in children:
            child.kill()
        for child in children:
            child.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
