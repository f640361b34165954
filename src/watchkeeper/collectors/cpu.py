"""CPU: total and per-core busy %, iowait %, load averages.

Percentages come from deltas of psutil.cpu_times() between our own ticks, not from
psutil.cpu_percent(interval=None): that function keeps its previous sample in module-global
state, so any other caller in the process (an LLM tool, a CLI command) would silently shorten
our measurement window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from watchkeeper.collectors.common import FIRST_SAMPLE, MissingLog, PsutilLike
from watchkeeper.events import CpuStats, Missing


@dataclass(frozen=True)
class _Times:
    """Jiffies-like counters reduced to what the percentages need."""

    total: float
    idle: float
    iowait: float | None


@dataclass(frozen=True)
class CpuReading:
    """Raw counters of one tick; turned into percentages against the previous reading."""

    total: _Times | None
    per_core: tuple[_Times, ...] | None
    load: tuple[float, float, float] | None
    count_logical: int | None
    missing: list[Missing] = field(default_factory=list)


def _reduce(times: Any) -> _Times:
    values: dict[str, float] = times._asdict()
    total = sum(values.values())
    # Linux already counts guest time inside user/nice; psutil subtracts it the same way.
    total -= values.get("guest", 0.0) + values.get("guest_nice", 0.0)
    iowait = values.get("iowait")
    idle = values.get("idle", 0.0) + (iowait or 0.0)
    return _Times(total=total, idle=idle, iowait=iowait)


def read_cpu(ps: PsutilLike) -> CpuReading:
    """Read CPU counters, load averages and the logical core count."""
    log = MissingLog(ps)
    total = log.attempt("cpu.percent", lambda: _reduce(ps.cpu_times(percpu=False)))
    per_core = log.attempt(
        "cpu.per_core", lambda: tuple(_reduce(t) for t in ps.cpu_times(percpu=True))
    )
    load_raw = log.attempt("cpu.load", ps.getloadavg)
    load = None if load_raw is None else (
        float(load_raw[0]), float(load_raw[1]), float(load_raw[2])
    )
    count = log.attempt("cpu.count_logical", lambda: ps.cpu_count(logical=True))
    return CpuReading(total, per_core, load, count, log.entries)


def _busy_percent(prev: _Times, cur: _Times) -> float | None:
    elapsed = cur.total - prev.total
    if elapsed <= 0:
        return None
    busy = (cur.total - cur.idle) - (prev.total - prev.idle)
    return min(100.0, max(0.0, busy / elapsed * 100.0))


def _iowait_percent(prev: _Times, cur: _Times) -> float | None:
    elapsed = cur.total - prev.total
    if cur.iowait is None or prev.iowait is None or elapsed <= 0:
        return None
    return min(100.0, max(0.0, (cur.iowait - prev.iowait) / elapsed * 100.0))


def cpu_stats(
    prev: CpuReading | None, cur: CpuReading, note: Callable[[str, str], None]
) -> CpuStats:
    """CpuStats for ``cur``; percentages need ``prev`` (else they are noted missing)."""
    percent = iowait = None
    per_core: tuple[float, ...] = ()
    if cur.total is not None:
        if prev is None or prev.total is None:
            note("cpu.percent", FIRST_SAMPLE)
        else:
            percent = _busy_percent(prev.total, cur.total)
            iowait = _iowait_percent(prev.total, cur.total)
            if percent is None:
                note("cpu.percent", "no CPU time elapsed since the previous reading")
    if cur.per_core is not None and prev is not None and prev.per_core is not None:
        if len(prev.per_core) != len(cur.per_core):
            note("cpu.per_core", "number of cores changed since the previous reading")
        else:
            cores = [_busy_percent(p, c) for p, c in zip(prev.per_core, cur.per_core, strict=True)]
            per_core = tuple(c if c is not None else 0.0 for c in cores)
    count = cur.count_logical
    if count is None and cur.per_core is not None:
        count = len(cur.per_core)
    load = cur.load or (None, None, None)
    return CpuStats(
        percent=percent,
        per_core=per_core,
        load_1=load[0],
        load_5=load[1],
        load_15=load[2],
        count_logical=count,
        iowait_percent=iowait,
    )
