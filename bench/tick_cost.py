"""Tick cost of SnapshotCollector.collect() with real psutil on a host with many processes.

Starts N idle children (coreutils ``sleep``), times collect() over a number of ticks, and
kills every child it started (and only those). The process family is timed twice per tick
in the same run: the /proc scan the sensor uses on Linux (with its top rows' users and
command lines from /proc), and the psutil pass (the portable path, and the reference);
their ratio is the saving. Each is timed as wall time and as CPU time (all threads of this
process, so collect()'s worker threads count): on a machine shared with other work the wall
time includes waiting for a core, the CPU time much less so, and the minimum over the ticks
is the least disturbed figure. The load average is printed before and after.

    python bench/tick_cost.py [--children 300] [--ticks 20] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import psutil

from watchkeeper.collectors import SnapshotCollector
from watchkeeper.collectors.common import MissingLog
from watchkeeper.collectors.processes import linux_thread_total, read_processes
from watchkeeper.collectors.procfs import ProcScanner
from watchkeeper.config import SensorConfig

T = TypeVar("T")


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _row(name: str, wall: list[float], cpu: list[float]) -> str:
    return (f"| {name} | {statistics.mean(wall):.2f} | {_p95(wall):.2f} | {min(wall):.2f} | "
            f"{statistics.mean(cpu):.2f} | {statistics.median(cpu):.2f} | {min(cpu):.2f} |")


class _Timer:
    """Wall and CPU milliseconds of each timed call, kept in two lists."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __call__(self, fn: Callable[[], T]) -> T:
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        self.cpu.append((time.process_time() - cpu) * 1000.0)
        self.wall.append((time.perf_counter() - wall) * 1000.0)
        return result


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
        load_before = os.getloadavg()
        totals, procs, via_psutil = _Timer(), _Timer(), _Timer()
        scanner = ProcScanner() if ProcScanner.available() else None
        thread_total = linux_thread_total if psutil.LINUX else None
        if scanner is not None:
            scanner.scan()
        read_processes(psutil, MissingLog(psutil), 5, time.time(), thread_total)
        snap = None
        for seq in range(1, args.ticks + 1):
            time.sleep(args.interval)
            snap = totals(partial(collector.collect, seq, args.interval))
            # The process family alone, sequentially (the one that scales with the host).
            if scanner is not None:
                procs(partial(read_processes, psutil, MissingLog(psutil), 5, time.time(),
                              thread_total, scanner.scan, scanner.details))
            via_psutil(lambda: read_processes(psutil, MissingLog(psutil), 5, time.time(),
                                              thread_total))
        assert snap is not None
        load_after = os.getloadavg()
        print(f"host: {psutil.cpu_count()} logical CPUs, python {sys.version.split()[0]}, "
              f"psutil {psutil.__version__}; load average before "
              f"{' '.join(f'{x:.2f}' for x in load_before)}, after "
              f"{' '.join(f'{x:.2f}' for x in load_after)}")
        print(f"processes seen: {snap.processes.total} ({args.children} idle children), "
              f"threads: {snap.processes.threads}, mounts: {len(snap.disks)}, "
              f"missing: {[m.key for m in snap.missing]}")
        print(f"ticks: {args.ticks}, {args.interval:g}s apart; milliseconds\n")
        print("| measured | wall mean | wall p95 | wall min | CPU mean | CPU median | CPU min |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        print(_row("collect()", totals.wall, totals.cpu))
        if procs.wall:
            print(_row("processes, /proc scan", procs.wall, procs.cpu))
        print(_row("processes, psutil", via_psutil.wall, via_psutil.cpu))
        if procs.wall:
            n = snap.processes.total or 1
            fast, slow = statistics.median(procs.cpu), statistics.median(via_psutil.cpu)
            print(f"\n/proc / psutil, CPU median: {fast / slow:.2f}; per process "
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
