"""A real CPU-burning child through the real sensor (psutil) and analyzer: the CPU alert
names it, with its share, from its first firing."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from watchkeeper.events import Alert
from watchkeeper.runtime import Runtime

from ..conftest import BusRecorder, make_settings

_Times = namedtuple("_Times", ["user", "system", "idle"])


class _OnlyThisTest:
    """The real psutil, with the host narrowed to the processes this test runs: itself and
    the burner. A quiet host cannot be had on a machine shared with other work, and there
    the work of others rightly makes the load "general" (a burner at 38 % of a core beside
    two Chromiums at 36 % and 32 %). Every figure is still the kernel's, read through psutil;
    the host's busy time is the sum of these processes' CPU times since the start."""

    def __init__(self, pids: set[int]) -> None:
        self._pids = pids
        self._cores = psutil.cpu_count() or 1
        self._start = time.monotonic()
        self._base = self._busy()

    def __getattr__(self, name: str) -> Any:
        return getattr(psutil, name)

    def process_iter(self, attrs: Any = None, ad_value: Any = None) -> Iterator[Any]:
        return (p for p in psutil.process_iter(attrs, ad_value) if p.pid in self._pids)

    def _busy(self) -> float:
        busy = 0.0
        for pid in self._pids:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            busy += times.user + times.system
        return busy

    def cpu_times(self, percpu: bool = False) -> Any:
        elapsed = (time.monotonic() - self._start) * self._cores  # core-seconds
        busy = min(max(self._busy() - self._base, 0.0), elapsed)
        if not percpu:
            return _Times(busy, 0.0, elapsed - busy)
        return [_Times(busy / self._cores, 0.0, (elapsed - busy) / self._cores)
                for _ in range(self._cores)]


# The limits only bound a hang: under a load of 7 per core the whole test has taken 70 s.
@pytest.mark.timeout(300)
async def test_a_cpu_burning_process_is_named_from_the_first_firing(tmp_path: Path) -> None:
    # Changed from the defaults, and why: on the narrowed host above, the burner gets what
    # the machine leaves it (a whole core when idle, a fifth of one under a load of 10), so
    # the warning is a tenth of a core's worth of the host; for_s 2 s instead of 30 s keeps
    # the test short (the first firing still comes after the sensor has seen the burner
    # several times: psutil reports 0 % for a process on first sight); ticks of 0.5 s.
    cores = psutil.cpu_count() or 1
    settings = make_settings(
        tmp_path, agents={"check_interval": 0.5},
        thresholds={"cpu_warning": 10.0 / cores, "cpu_critical": 99.0},
        analyzer={"for_s": 2.0}, llm={"enabled": False},
        remediation={"actions": {"stop_process": "off"}})
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        rt = Runtime(settings, psutil_module=_OnlyThisTest({psutil.Process().pid, burner.pid}))
    except BaseException:
        burner.kill()
        burner.wait()
        raise
    recorder = BusRecorder(rt.bus)  # type: ignore[arg-type]
    try:
        await rt.start()
        # The first firing comes about 3 s after the start on an idle machine.
        deadline = asyncio.get_running_loop().time() + 240.0
        first: Alert | None = None
        while first is None:
            assert asyncio.get_running_loop().time() < deadline, "no CPU alert in 240 s"
            await asyncio.sleep(0.1)
            first = next((a for a in recorder.of(Alert)
                          if isinstance(a, Alert) and a.metric == "cpu.percent"), None)
        assert first.labels["change"] == "new"
        context = first.context or ""
        # Named as a culprit with its share (alone, or beside the test's own process, which
        # runs the agents), never "general load".
        culprits = context.split(";")[0]
        assert f"(pid {burner.pid})" in culprits, context
        assert culprits.endswith("of the CPU in use"), context
        assert not context.startswith("general load"), context
    finally:
        burner.send_signal(signal.SIGKILL)
        await rt.stop()
        # No timeout: after SIGKILL the wait is immediate, and subprocess's timed wait sleeps
        # on the wall clock, which a faked clock (faketime, one year ahead) breaks.
        burner.wait()
