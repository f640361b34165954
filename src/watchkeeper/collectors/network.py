"""Per-interface network rates, errors and drops, from counter deltas between ticks."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from watchkeeper.collectors.common import FIRST_SAMPLE, MissingLog, PsutilLike
from watchkeeper.events import Missing, NetIO


@dataclass(frozen=True)
class NetReading:
    """Cumulative per-interface counters, link state, and when they were read."""

    at: float
    counters: Mapping[str, Any]
    is_up: Mapping[str, bool]
    missing: list[Missing] = field(default_factory=list)


def read_net(
    ps: PsutilLike, clock: Callable[[], float], ignore_interfaces: Iterable[str] = ()
) -> NetReading:
    """Counters of every interface not ignored (names or glob patterns like ``veth*``)."""
    log = MissingLog(ps)
    patterns = tuple(ignore_interfaces)
    counters = {
        name: c for name, c in (ps.net_io_counters(pernic=True) or {}).items()
        if not any(fnmatch.fnmatchcase(name, p) for p in patterns)
    }
    at = clock()
    stats = log.attempt("net.is_up", ps.net_if_stats) or {}
    is_up = {name: bool(s.isup) for name, s in stats.items()}
    return NetReading(at=at, counters=counters, is_up=is_up, missing=log.entries)


def net_rates(
    prev: NetReading | None, cur: NetReading, note: Callable[[str, str], None]
) -> tuple[NetIO, ...]:
    """Per-second rates between two readings.

    errors_*/drops_* are counts during the interval (not totals since boot), so a rule can
    alert on new errors without firing forever after one old burst.
    """
    if prev is None:
        note("net", FIRST_SAMPLE)
        return ()
    elapsed = cur.at - prev.at
    if elapsed <= 0:
        note("net", "no time elapsed since the previous reading")
        return ()
    out: list[NetIO] = []
    for name in sorted(cur.counters):
        c = cur.counters[name]
        p = prev.counters.get(name)
        if p is None:
            note(f"net:{name}", FIRST_SAMPLE)
            continue
        deltas = (
            c.bytes_sent - p.bytes_sent, c.bytes_recv - p.bytes_recv,
            c.packets_sent - p.packets_sent, c.packets_recv - p.packets_recv,
            c.errin - p.errin, c.errout - p.errout, c.dropin - p.dropin, c.dropout - p.dropout,
        )
        if min(deltas) < 0:
            # An interface re-created under the same name (VPN reconnect) restarts at zero.
            note(f"net:{name}", "counters went backwards (interface reset)")
            continue
        out.append(NetIO(
            interface=name,
            is_up=cur.is_up.get(name),
            bytes_sent_per_s=deltas[0] / elapsed,
            bytes_recv_per_s=deltas[1] / elapsed,
            packets_sent_per_s=deltas[2] / elapsed,
            packets_recv_per_s=deltas[3] / elapsed,
            errors_in=int(deltas[4]),
            errors_out=int(deltas[5]),
            drops_in=int(deltas[6]),
            drops_out=int(deltas[7]),
        ))
    return tuple(out)
