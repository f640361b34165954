"""Shared plumbing for the collectors: the psutil boundary, time limits, missing values."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeAlias, TypeVar

from watchkeeper.events import Missing

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The psutil module, or a fake with the same functions and exception classes
#: (``NoSuchProcess``, ``ZombieProcess``, ``AccessDenied``). Typed loosely on purpose: psutil's
#: overloaded signatures make a structural Protocol unusable, and the fake lives at the boundary.
#: Functions used: cpu_times, cpu_count, getloadavg, virtual_memory, swap_memory,
#: disk_partitions, disk_usage, disk_io_counters, net_io_counters, net_if_stats, process_iter,
#: boot_time.
PsutilLike: TypeAlias = Any

#: Reason recorded for a rate that has no previous reading to compare against.
FIRST_SAMPLE = "first sample: a rate needs a previous reading"


def counter_deltas(
    family: str, prev_at: float | None, cur_at: float, prev: Mapping[str, Any] | None,
    cur: Mapping[str, Any], fields: Sequence[str], note: Callable[[str, str], None],
    reset: str,
) -> Iterator[tuple[str, Any, Any, tuple[float, ...], float]]:
    """Walk two readings of per-device counters: (name, current, previous, deltas of
    ``fields``, elapsed seconds) for every device with a usable previous value. The first
    reading, no elapsed time, a new device and counters that went backwards are noted."""
    if prev is None or prev_at is None:
        note(family, FIRST_SAMPLE)
        return
    elapsed = cur_at - prev_at
    if elapsed <= 0:
        note(family, "no time elapsed since the previous reading")
        return
    for name in sorted(cur):
        c, p = cur[name], prev.get(name)
        if p is None:
            note(f"{family}:{name}", FIRST_SAMPLE)
            continue
        deltas = tuple(float(getattr(c, f) - getattr(p, f)) for f in fields)
        if min(deltas) < 0:
            note(f"{family}:{name}", f"counters went backwards ({reset})")
            continue
        yield name, c, p, deltas, elapsed


class CollectorTimeout(TimeoutError):
    """A time-limited call did not return in time (its thread may still be running)."""


def describe_error(ps: PsutilLike, exc: BaseException) -> str:
    """A short, stable reason for a Missing entry (no tracebacks, no changing numbers)."""
    # ZombieProcess subclasses NoSuchProcess, so it is checked first.
    zombie = getattr(ps, "ZombieProcess", None)
    if zombie is not None and isinstance(exc, zombie):
        return "zombie process"
    if isinstance(exc, ps.NoSuchProcess):
        return "process vanished"
    if isinstance(exc, ps.AccessDenied):
        return "access denied"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:200]


class MissingLog:
    """Collects the Missing entries of one family; each failure costs only its own value."""

    def __init__(self, ps: PsutilLike) -> None:
        self._ps = ps
        self.entries: list[Missing] = []

    def note(self, key: str, reason: str) -> None:
        """Record that ``key`` could not be read, and why."""
        self.entries.append(Missing(key=key, reason=reason))

    def attempt(self, key: str, fn: Callable[[], T]) -> T | None:
        """Call ``fn``; on any exception record ``key`` as missing and return None."""
        try:
            return fn()
        except Exception as exc:
            self.note(key, describe_error(self._ps, exc))
            return None


class DaemonPool:
    """A growable pool of daemon worker threads.

    Why not ThreadPoolExecutor: its workers are joined at interpreter exit, so one thread
    stuck forever in statvfs() on a dead NFS mount would make the whole service hang on
    shutdown. Daemon threads are abandoned instead. A worker is started whenever no idle one
    is available, so a stuck worker never blocks other calls; idle workers retire after
    ``idle_timeout`` seconds.
    """

    def __init__(self, name: str, idle_timeout: float = 60.0) -> None:
        self._name = name
        self._idle_timeout = idle_timeout
        self._tasks: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._idle = threading.Semaphore(0)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._workers = 0
        self._closed = False

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on a worker thread; the future holds its result or exception."""
        if self._closed:
            raise RuntimeError(f"{self._name}: pool is closed")
        fut: Future[T] = Future()
        self._tasks.put((fut, fn))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                self._workers += 1
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{next(self._counter)}", daemon=True
            )
            thread.start()
        return fut

    def close(self) -> None:
        """Let every worker exit once it is idle (a stuck one exits when its call returns)."""
        with self._lock:
            self._closed = True
            for _ in range(self._workers):
                self._tasks.put(None)

    def _work(self) -> None:
        try:
            self._serve()
        finally:
            with self._lock:
                self._workers -= 1

    def _serve(self) -> None:
        while True:
            try:
                item = self._tasks.get(timeout=self._idle_timeout)
            except queue.Empty:
                # Retire only if we can take back our idle token; if a submitter took it,
                # a task is on its way and some idle worker (possibly us) must pick it up.
                if self._idle.acquire(blocking=False):
                    return
                continue
            if item is None:
                return
            fut, fn = item
            if not fut.set_running_or_notify_cancel():
                self._idle.release()
                continue
            # Count ourselves idle *before* the waiter wakes up, so the caller's next submit
            # reuses this thread instead of racing it and starting another one.
            try:
                result = fn()
            except BaseException as exc:  # handed to the waiter, never lost in the thread
                self._idle.release()
                fut.set_exception(exc)
            else:
                self._idle.release()
                fut.set_result(result)
            del item, fut, fn  # don't keep the last result alive while idle


class TimeLimiter:
    """Runs keyed calls with a deadline and remembers the ones that never came back.

    A key whose previous call is still running is not started again: a hung mount costs at
    most one thread, however many ticks it stays hung.
    """

    def __init__(self, pool: DaemonPool) -> None:
        self._pool = pool
        self._hung: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()

    def submit(self, key: str, fn: Callable[[], T]) -> Future[T] | None:
        """Start ``fn`` for ``key``, or return None if the previous call is still hung."""
        with self._lock:
            previous = self._hung.get(key)
            if previous is not None:
                if not previous.done():
                    return None
                del self._hung[key]
        return self._pool.submit(fn)

    def wait(self, key: str, fut: Future[T], deadline: float) -> T:
        """Result of ``fut`` by ``deadline`` (time.monotonic), else CollectorTimeout."""
        try:
            return fut.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            with self._lock:
                self._hung[key] = fut
            raise CollectorTimeout(key) from None

    def hung(self) -> list[str]:
        """Keys whose last call has not returned yet."""
        with self._lock:
            return sorted(k for k, f in self._hung.items() if not f.done())
