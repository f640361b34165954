"""Disk I/O rates per physical disk, from counter deltas between ticks."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from watchkeeper.collectors.common import PsutilLike, counter_deltas
from watchkeeper.events import DiskIO

#: Devices that are not physical disks: loop/ram/zram live in memory or on a file; dm-* (LVM,
#: dm-crypt) and md* (software RAID) sit on top of physical disks and would count their
#: traffic twice; sr/fd are optical and floppy drives.
VIRTUAL_DISK_PREFIXES: tuple[str, ...] = ("loop", "ram", "zram", "dm-", "md", "sr", "fd")

_PARTITION_SUFFIX = re.compile(r"\d+")
_PARTITION_SUFFIX_AFTER_DIGIT = re.compile(r"[ps]\d+")  # nvme0n1p1, mmcblk0p1, disk0s1


@dataclass(frozen=True)
class CounterReading:
    """Cumulative counters of one tick, and when they were read (monotonic seconds)."""

    at: float
    counters: Mapping[str, Any]


def _is_partition(name: str, names: Mapping[str, Any]) -> bool:
    # psutil's perdisk=True also lists partitions (sda1 beside sda) on Linux; a name that
    # extends another listed disk with a partition number is a partition of it.
    for parent in names:
        if parent != name and name.startswith(parent):
            rest = name[len(parent):]
            pattern = _PARTITION_SUFFIX_AFTER_DIGIT if parent[-1].isdigit() else _PARTITION_SUFFIX
            if pattern.fullmatch(rest):
                return True
    return False


def physical_disks(counters: Mapping[str, Any]) -> dict[str, Any]:
    """Keep whole physical disks: no partitions, loop, ram or device-mapper devices."""
    return {
        name: c for name, c in counters.items()
        if not name.startswith(VIRTUAL_DISK_PREFIXES) and not _is_partition(name, counters)
    }


def read_disk_io(ps: PsutilLike, clock: Callable[[], float]) -> CounterReading:
    """Cumulative per-disk counters (empty when the platform has none)."""
    counters = ps.disk_io_counters(perdisk=True) or {}
    return CounterReading(at=clock(), counters=physical_disks(counters))


def disk_io_rates(
    prev: CounterReading | None, cur: CounterReading, note: Callable[[str, str], None]
) -> tuple[DiskIO, ...]:
    """Per-second rates between two readings; a disk without a usable previous value is noted."""
    out: list[DiskIO] = []
    for name, c, p, deltas, elapsed in counter_deltas(
            "disk_io", prev.at if prev else None, cur.at, prev.counters if prev else None,
            cur.counters, ("read_bytes", "write_bytes", "read_count", "write_count"), note,
            "device reset"):
        busy = None
        c_busy, p_busy = getattr(c, "busy_time", None), getattr(p, "busy_time", None)
        if c_busy is not None and p_busy is not None and c_busy >= p_busy:
            # busy_time is in milliseconds.
            busy = min(100.0, (c_busy - p_busy) / (elapsed * 1000.0) * 100.0)
        out.append(DiskIO(
            device=name,
            read_bytes_per_s=deltas[0] / elapsed,
            write_bytes_per_s=deltas[1] / elapsed,
            read_ops_per_s=deltas[2] / elapsed,
            write_ops_per_s=deltas[3] / elapsed,
            busy_percent=busy,
        ))
    return tuple(out)
