"""Watched log files and how fast each grows: the sensor's input to the log-flood rule.

``sensor.log_paths`` (default ``/var/log``) names files, or directories whose regular files
and whose subdirectories' regular files are watched (one level down: ``/var/log/nginx/*``).
Symlinks are never followed. Each tick lstat()s at most ``MAX_FILES`` of them (about 1 µs
each) and reports only the fastest growers, so a snapshot stays small whatever the directory
holds. A file that shrank (rotated, truncated) or appeared since the previous tick counts no
growth this tick.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from watchkeeper.events import LogGrowth

#: Files looked at per tick, at most (the rest are left out, not guessed).
MAX_FILES = 2000


def _files(paths: Iterable[Path], limit: int) -> dict[str, int]:
    """Path -> size of the regular files under ``paths`` (one level of subdirectories)."""
    sizes: dict[str, int] = {}

    def add(path: str, depth: int) -> None:
        if len(sizes) >= limit:
            return
        try:
            st = os.lstat(path)
        except OSError:
            return
        if stat.S_ISREG(st.st_mode):
            sizes[path] = st.st_size
        elif stat.S_ISDIR(st.st_mode) and depth < 2:
            try:
                with os.scandir(path) as it:
                    names = sorted(e.name for e in it)
            except OSError:
                return
            for name in names:
                add(os.path.join(path, name), depth + 1)

    for p in paths:
        add(os.path.abspath(p), 0)
    return sizes


class LogWatcher:
    """Sizes of the watched files between two ticks; the growth rates of the fastest."""

    def __init__(self) -> None:
        self._prev: dict[str, int] = {}
        self._prev_t: float | None = None

    def collect(self, paths: Iterable[Path], now: float, top: int,
                limit: int = MAX_FILES) -> tuple[LogGrowth, ...]:
        """The ``top`` files that grew fastest since the last call (bytes/s), newest sizes."""
        sizes = _files(paths, limit)
        prev, prev_t = self._prev, self._prev_t
        self._prev, self._prev_t = sizes, now
        if prev_t is None or now <= prev_t:
            return ()
        dt = now - prev_t
        grew = [(size - prev[path], path, size) for path, size in sizes.items()
                if path in prev and size > prev[path]]
        grew.sort(reverse=True)
        return tuple(LogGrowth(path=path, size=size, bytes_per_s=delta / dt)
                     for delta, path, size in grew[:max(top, 1)])
