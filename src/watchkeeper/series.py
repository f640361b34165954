"""Flatten a MetricSnapshot into named scalar samples (metric, dimension, value).

One naming scheme for history queries, rules and Prometheus: ``cpu.percent``,
``disk.percent`` with dimension ``/var``, ``net.bytes_recv_per_s`` with dimension ``eth0``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from watchkeeper.events import MetricSnapshot


class Sample(NamedTuple):
    metric: str
    dimension: str
    value: float


_CPU = ("percent", "load_1", "load_5", "load_15", "iowait_percent")
_MEM = ("percent", "used", "available", "swap_percent", "swap_used")
_DISK = ("percent", "used", "free", "inodes_percent")
_DISK_IO = ("read_bytes_per_s", "write_bytes_per_s", "read_ops_per_s", "write_ops_per_s",
            "busy_percent")
_NET = ("bytes_sent_per_s", "bytes_recv_per_s", "packets_sent_per_s", "packets_recv_per_s",
        "errors_in", "errors_out", "drops_in", "drops_out")
_PROC = ("total", "running", "zombies", "threads")

#: Every metric name flatten() can produce, for listings and validation of queries.
METRICS: tuple[str, ...] = (
    *(f"cpu.{k}" for k in _CPU),
    *(f"memory.{k}" for k in _MEM),
    *(f"disk.{k}" for k in _DISK),
    *(f"disk_io.{k}" for k in _DISK_IO),
    *(f"net.{k}" for k in _NET),
    *(f"processes.{k}" for k in _PROC),
    "uptime_s",
)


def flatten(snap: MetricSnapshot) -> Iterator[Sample]:
    """Yield every present numeric value of a snapshot; missing values are skipped."""
    for key in _CPU:
        v = getattr(snap.cpu, key)
        if v is not None:
            yield Sample(f"cpu.{key}", "", float(v))
    for key in _MEM:
        v = getattr(snap.memory, key)
        if v is not None:
            yield Sample(f"memory.{key}", "", float(v))
    for disk in snap.disks:
        for key in _DISK:
            v = getattr(disk, key)
            if v is not None:
                yield Sample(f"disk.{key}", disk.mountpoint, float(v))
    for dio in snap.disk_io:
        for key in _DISK_IO:
            v = getattr(dio, key)
            if v is not None:
                yield Sample(f"disk_io.{key}", dio.device, float(v))
    for nic in snap.net:
        for key in _NET:
            yield Sample(f"net.{key}", nic.interface, float(getattr(nic, key)))
    for key in _PROC:
        v = getattr(snap.processes, key)
        if v is not None:
            yield Sample(f"processes.{key}", "", float(v))
    if snap.uptime_s is not None:
        yield Sample("uptime_s", "", float(snap.uptime_s))
