"""CPU demand from /proc/<pid>/schedstat: a spinning process reads as pinned even when the
host gives it less than a core; a sleeping one does not."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from watchkeeper.collectors.demand import DemandMeter
from watchkeeper.events import ProcessInfo

pytestmark = pytest.mark.skipif(not Path("/proc/self/schedstat").exists(),
                                reason="schedstat is Linux-only")


def test_a_spinner_is_in_demand_all_the_time_and_a_sleeper_is_not() -> None:
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    sleep = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        procs = [ProcessInfo(pid=p.pid, create_time=1.0, name=n, cpu_percent=1.0)
                 for p, n in ((spin, "spin"), (sleep, "sleep"))]
        meter = DemandMeter()
        time.sleep(0.3)  # past the interpreter's start-up
        first = meter.annotate(procs, time.monotonic())
        assert [p.cpu_demand_percent for p in first] == [None, None]  # no rate yet
        time.sleep(1.0)
        spun, slept = meter.annotate(procs, time.monotonic())
        # Running or runnable the whole second, however the cores are shared just now.
        assert spun.cpu_demand_percent is not None and spun.cpu_demand_percent >= 80
        assert slept.cpu_demand_percent is not None and slept.cpu_demand_percent < 5
    finally:
        for p in (spin, sleep):
            p.kill()
            p.wait()
    # Gone: left as it was, not invented.
    assert meter.annotate(procs, time.monotonic())[0].cpu_demand_percent is None


def test_a_young_process_is_judged_over_its_life_at_its_first_reading() -> None:
    # Its first tick already says how pinned it is: one tick sooner to a runaway verdict.
    young = ProcessInfo(pid=1, create_time=1.0, name="spin", cpu_percent=None, age_s=4.0)
    old = ProcessInfo(pid=2, create_time=1.0, name="old", cpu_percent=50.0, age_s=3600.0)
    meter = DemandMeter(read=lambda pid: 4_000_000_000 if pid == 1 else 10**12)
    spun, aged = meter.annotate([young, old], 100.0)
    assert spun.cpu_demand_percent == 100.0
    assert aged.cpu_demand_percent is None  # an old process needs two readings
