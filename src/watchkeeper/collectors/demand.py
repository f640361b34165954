"""CPU demand of the top-CPU processes: the share of time each was running or waiting for a
CPU, from ``/proc/<pid>/schedstat`` (Linux).

On a saturated host a process spinning in a loop gets only its share of the cores (45 % of
one on a 2-core host at load 5) though it would take a whole one: its CPU % says "busy", its
demand (running plus waiting in the run queue) says "pinned". The runaway rule judges the
larger of the two. Only the few processes of the top-CPU list are read (one small file each);
the file counts the process's main thread, so a busy multi-threaded process is judged by its
CPU % as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from watchkeeper.events import ProcessInfo

Key = tuple[int, float]
#: A process first seen at most this old is judged over its whole life at once.
YOUNG_S = 60.0


def read_schedstat(pid: int) -> int | None:
    """Nanoseconds ``pid`` has run plus waited to run (None: unreadable or gone)."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            run, wait = f.read().split()[:2]
        return int(run) + int(wait)
    except (OSError, ValueError):
        return None


class DemandMeter:
    """Demand (% of one core) of listed processes since the previous tick."""

    def __init__(self, read: Callable[[int], int | None] = read_schedstat) -> None:
        self._read = read
        self._prev: dict[Key, tuple[float, int]] = {}

    def annotate(self, procs: Sequence[ProcessInfo], now: float) -> tuple[ProcessInfo, ...]:
        """``procs`` with ``cpu_demand_percent`` set where a previous reading allows."""
        out = []
        seen: dict[Key, tuple[float, int]] = {}
        for p in procs:
            key = (p.pid, p.create_time)
            ns = self._read(p.pid)
            if ns is None:
                out.append(p)
                continue
            seen[key] = (now, ns)
            prev = self._prev.get(key)
            demand: float | None = None
            if prev is not None and now > prev[0] and ns >= prev[1]:
                demand = (ns - prev[1]) / 1e9 / (now - prev[0]) * 100.0
            elif prev is None and p.age_s is not None and 0 < p.age_s <= YOUNG_S:
                # First seen and young: its whole life is the interval (a tick sooner).
                # One thread cannot want more than one core; more is age rounding.
                demand = min(ns / 1e9 / p.age_s * 100.0, 100.0)
            if demand is not None:
                p = p.model_copy(update={"cpu_demand_percent": round(demand, 1)})
            out.append(p)
        self._prev = seen
        return tuple(out)
