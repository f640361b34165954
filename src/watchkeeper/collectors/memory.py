"""Memory and swap."""

from __future__ import annotations

from watchkeeper.collectors.common import MissingLog, PsutilLike
from watchkeeper.events import MemoryStats


def read_memory(ps: PsutilLike, log: MissingLog) -> MemoryStats:
    """Virtual memory and swap; a failing half costs only its own fields."""
    vm = log.attempt("memory", ps.virtual_memory)
    # Swap can fail on its own (e.g. /proc/swaps unreadable in some sandboxes).
    sw = log.attempt("memory.swap", ps.swap_memory)
    return MemoryStats(
        total=None if vm is None else int(vm.total),
        available=None if vm is None else int(vm.available),
        used=None if vm is None else int(vm.used),
        percent=None if vm is None else float(vm.percent),
        swap_total=None if sw is None else int(sw.total),
        swap_used=None if sw is None else int(sw.used),
        # psutil reports 0 % for a host without swap; that is a true value, not a missing one.
        swap_percent=None if sw is None else float(sw.percent),
    )
