"""What a simulation may use: sizes read from the command line and the safety caps.

Every check raises :class:`Refused` with the reason in words before anything is created.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import dataclass

#: Longest run (seconds): long enough for the default runaway_minutes (10) plus margin.
MAX_DURATION_S = 1800.0
DEFAULT_DURATION_S = 60.0
#: Free space a disk fill always leaves: the larger of this fraction of the filesystem...
DISK_FREE_FRACTION = 0.10
#: ...and this many bytes.
DISK_FREE_MIN = 1 << 30
#: The most of the memory available at the start a memory or leak run may take.
MEMORY_FRACTION = 0.5
#: The most processes a forkstorm starts, and the share of RLIMIT_NPROC headroom it may use.
MAX_PROCS = 500
NPROC_SHARE = 0.5
#: A log flood's caps: lines per second and bytes in all.
MAX_LINES_PER_S = 20_000
MAX_LOG_BYTES = 200 << 20
#: Fastest disk fill (bytes/s).
MAX_DISK_RATE = 200 << 20
#: Fastest leak (bytes/s).
MAX_LEAK_RATE = 512 << 20

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"(\d{1,12}(?:\.\d{1,6})?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_DURATION = re.compile(r"(\d{1,6}(?:\.\d{1,3})?)\s*(ms|s|m|h)?", re.IGNORECASE)


class Refused(Exception):
    """A simulation that would not be safe, or input that is not a size: nothing was done."""


def parse_size(text: str, what: str = "size") -> int:
    """``512M``, ``1G``, ``64k``, ``1048576`` as bytes (binary units); Refused otherwise."""
    found = _SIZE.fullmatch(text.strip())
    if not found:
        raise Refused(f"{what} {text!r} is not a size like 512M, 1G or 64k")
    value = float(found.group(1)) * _UNITS[found.group(2).lower()]
    if not math.isfinite(value) or value < 1:
        raise Refused(f"{what} {text!r} must be at least one byte")
    return int(value)


def parse_rate(text: str, what: str = "rate") -> int:
    """``1M/s``, ``512k`` (per second implied) as bytes per second; Refused otherwise."""
    body = text.strip()
    if body.lower().endswith("/s"):
        body = body[:-2]
    return parse_size(body, what)


def parse_duration(text: str) -> float:
    """``60``, ``90s``, ``5m``, ``1h`` as seconds, within (0, MAX_DURATION_S]."""
    found = _DURATION.fullmatch(text.strip())
    if not found:
        raise Refused(f"duration {text!r} is not like 60s, 5m or 1h")
    unit = (found.group(2) or "s").lower()
    seconds = float(found.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    if seconds <= 0:
        raise Refused(f"duration {text!r} must be more than 0 s")
    if seconds > MAX_DURATION_S:
        raise Refused(f"duration {text!r} is longer than the cap of {MAX_DURATION_S:.0f} s")
    return seconds


def fmt_size(n: float) -> str:
    """Bytes in binary units, e.g. 512.0 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(frozen=True)
class DiskRoom:
    """A filesystem's total and free bytes, and what a fill must leave free."""

    total: int
    free: int

    @property
    def keep_free(self) -> int:
        """max(10 % of the filesystem, 1 GiB)."""
        return max(int(self.total * DISK_FREE_FRACTION), DISK_FREE_MIN)

    @property
    def may_write(self) -> int:
        """The most a run may write here."""
        return max(0, self.free - self.keep_free)


def disk_room(path: str) -> DiskRoom:
    """The room on the filesystem holding ``path``."""
    usage = shutil.disk_usage(path)
    return DiskRoom(total=usage.total, free=usage.free)


def check_disk(size: int, room: DiskRoom, where: str) -> None:
    """Refused if writing ``size`` bytes would leave less than the margin free."""
    if size > room.may_write:
        raise Refused(
            f"writing {fmt_size(size)} to {where} would leave less than "
            f"{fmt_size(room.keep_free)} free (max(10 % of the filesystem, 1 GiB) stays free; "
            f"{fmt_size(room.free)} free now, so at most {fmt_size(room.may_write)} may be "
            "written)")


def check_memory(size: int, available: int) -> None:
    """Refused past MEMORY_FRACTION of the memory available now."""
    cap = int(available * MEMORY_FRACTION)
    if size > cap:
        raise Refused(f"{fmt_size(size)} is more than {MEMORY_FRACTION:.0%} of the memory "
                      f"available now ({fmt_size(available)}): at most {fmt_size(cap)}")


def nproc_headroom() -> int | None:
    """How many more processes RLIMIT_NPROC lets this user start (None: no limit known)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft == resource.RLIM_INFINITY:
        return None
    uid = os.getuid()
    mine = 0
    try:  # the limit counts this user's threads too; /proc has them per process
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if entry.stat().st_uid == uid:
                        mine += len(os.listdir(f"/proc/{entry.name}/task"))
                except OSError:
                    continue
    except OSError:
        return None
    return max(0, soft - mine)


def check_procs(procs: int, headroom: int | None) -> None:
    """Refused past MAX_PROCS, or past half of what RLIMIT_NPROC still allows."""
    if procs < 1:
        raise Refused(f"--procs {procs} must be at least 1")
    if procs > MAX_PROCS:
        raise Refused(f"--procs {procs} is more than the cap of {MAX_PROCS} processes")
    if headroom is not None and procs > int(headroom * NPROC_SHARE):
        raise Refused(f"--procs {procs} is more than half of the {headroom} processes "
                      f"RLIMIT_NPROC (ulimit -u) still allows this user")


def check_cores(cores: int, count: int) -> None:
    """Refused past the number of logical CPUs."""
    if cores < 1 or cores > count:
        raise Refused(f"--cores {cores} must be between 1 and this host's {count} logical "
                      "CPUs")


def check_rate(rate: int, cap: int, what: str) -> None:
    """Refused past a rate cap."""
    if rate > cap:
        raise Refused(f"{what} {fmt_size(rate)}/s is faster than the cap of {fmt_size(cap)}/s")


def check_lines(lines_per_s: int) -> None:
    """Refused past MAX_LINES_PER_S."""
    if lines_per_s < 1 or lines_per_s > MAX_LINES_PER_S:
        raise Refused(f"--lines-per-s {lines_per_s} must be between 1 and "
                      f"{MAX_LINES_PER_S}")
