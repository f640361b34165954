"""Per-interface network rates, errors and drops, from counter deltas between ticks."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from watchkeeper.collectors.common import MissingLog, PsutilLike, counter_deltas
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
    out: list[NetIO] = []
    # An interface re-created under the same name (VPN reconnect) restarts at zero.
    for name, _c, _p, deltas, elapsed in counter_deltas(
            "net", prev.at if prev else None, cur.at, prev.counters if prev else None,
            cur.counters, ("bytes_sent", "bytes_recv", "packets_sent", "packets_recv",
                           "errin", "errout", "dropin", "dropout"), note, "interface reset"):
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
