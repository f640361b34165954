"""Carry out a plan: start the workers, watch them (what the condition looked like), end on
time or on a signal, clean up, and say what was done."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from watchkeeper.simulate.lifecycle import Run, stop_signals
from watchkeeper.simulate.scenarios import Plan
from watchkeeper.simulate.worker import process_name

#: Seconds between two looks at the workers.
SAMPLE_S = 1.0


@dataclass
class Outcome:
    """What a run did: when, which processes, the peak of the condition, how it ended."""

    scenario: str
    summary: str
    started_at: datetime
    ended_at: datetime
    duration_s: float
    ended_by: str
    pids: list[int]
    names: list[str]
    files: list[str]
    append_to: str | None
    peak: dict[str, float] = field(default_factory=dict)
    cleaned: bool = False
    reaped: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"scenario": self.scenario, "summary": self.summary,
                "started_at": self.started_at.isoformat(), "ended_at": self.ended_at.isoformat(),
                "duration_s": round(self.duration_s, 3), "ended_by": self.ended_by,
                "pids": self.pids, "names": self.names, "files": self.files,
                "append_to": self.append_to, "peak": self.peak, "cleaned": self.cleaned,
                "reaped_orphans": self.reaped}


class _Sampler:
    """The peak CPU %, resident memory, file size and process count of a run's workers."""

    def __init__(self) -> None:
        self.peak: dict[str, float] = {}
        self._procs: dict[int, psutil.Process] = {}

    def _proc(self, pid: int) -> psutil.Process | None:
        p = self._procs.get(pid)
        if p is None:
            with contextlib.suppress(psutil.Error):
                p = self._procs[pid] = psutil.Process(pid)
                p.cpu_percent(None)  # the first call only starts the measurement
        return p

    def sample(self, pids: list[int], files: list[Path]) -> None:
        cpu = rss = 0.0
        count = 0
        for pid in pids:
            leader = self._proc(pid)
            if leader is None:
                continue
            try:
                group = [leader, *leader.children(recursive=True)]
            except psutil.Error:
                continue
            count += len(group)
            with contextlib.suppress(psutil.Error):
                # The worker is the busy one and the holder of memory; a forkstorm's
                # sleepers share its pages, and adding them up would count those many times.
                cpu += leader.cpu_percent(None)
                rss += leader.memory_info().rss
        size = 0
        for f in files:
            with contextlib.suppress(OSError):
                size += os.lstat(f).st_size
        for key, value in (("cpu_percent", cpu), ("rss_bytes", rss), ("processes", count),
                           ("file_bytes", float(size))):
            self.peak[key] = max(self.peak.get(key, 0.0), value)


def execute(plan: Plan, on_start: Callable[[Run], None] = lambda _r: None,
            now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
            monotonic: Callable[[], float] = time.monotonic) -> Outcome:
    """Run ``plan`` to its end (time, a signal, or every worker gone) and clean up."""
    with stop_signals() as got, Run() as run:
        files: list[Path] = []
        data = run.data_dir(plan.write_under) if plan.write_under is not None else None
        started_at, t0 = now(), monotonic()
        for w in plan.workers:
            params = dict(w.params)
            if w.file is not None and data is not None:
                params["path"] = str(data / w.file)
                files.append(data / w.file)
            run.start(w.kind, params)
        if plan.append_to is not None:
            files.append(plan.append_to)
        on_start(run)
        pids = [p.pid for p in run.workers]
        sampler = _Sampler()
        deadline = t0 + plan.duration_s + 0.5  # the workers end themselves; this is a backstop
        ended_by = "time"
        next_sample = t0
        while monotonic() < deadline:
            if got:
                ended_by = signal.Signals(got[0]).name
                break
            if not run.running():
                break
            if monotonic() >= next_sample:
                sampler.sample(pids, files if plan.append_to is None else [])
                next_sample += SAMPLE_S
            time.sleep(0.1)
        duration = monotonic() - t0
        ended_at = now()
        run.close()
        return Outcome(scenario=plan.scenario, summary=plan.summary, started_at=started_at,
                       ended_at=ended_at, duration_s=duration, ended_by=ended_by, pids=pids,
                       names=sorted({process_name(w.kind) for w in plan.workers}),
                       files=[str(f) for f in files if f != plan.append_to],
                       append_to=str(plan.append_to) if plan.append_to else None,
                       peak=sampler.peak, cleaned=not run.dir.exists()
                       and not (data is not None and data.exists()),
                       reaped=len(run.reaped))
