"""The Linux process scan without psutil objects: /proc/<pid>/stat and statm per process.

psutil stays the portable path and the reference the tests hold this one to (same pids, same
resident memory, CPU % within a tolerance). Through psutil a process costs about 50 µs per
tick (a Process object, three files, a dict of attributes); here it is two small files
(one for a kernel thread), parsed by hand, and three more for each process in a top list.
The resident size comes from statm, as psutil's: the one in stat is the kernel's per-CPU
estimate (on 6.x it was seen 10 % below). The CPU % is the same figure
psutil's ``cpu_percent()`` gives: user + system
time since the previous scan over the time between the two scans, 100 = one full core; at
first sight 0.0 for a process older than the previous scan, and its CPU time over its age
(CLOCK_BOOTTIME, the clock of starttime) for one started since. A process is known by
(pid, start time), so a reused pid starts afresh.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import NamedTuple

#: The one-letter states of /proc/<pid>/stat, as psutil names them.
STATES: dict[str, str] = {
    "R": "running", "S": "sleeping", "D": "disk-sleep", "T": "stopped", "t": "tracing-stop",
    "Z": "zombie", "X": "dead", "x": "dead", "K": "wake-kill", "W": "waking", "I": "idle",
    "P": "parked",
}
_STATES = {k.encode(): v for k, v in STATES.items()}
_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
#: The "flags" field's bit for a kernel thread (include/linux/sched.h).
_PF_KTHREAD = 0x00200000


class ProcStat(NamedTuple):
    """What one scan read of one process (a tuple: made once per process per tick, and a
    frozen dataclass costs several times as much to build)."""

    pid: int
    name: str
    status: str
    create_time: float
    cpu_percent: float
    rss: int
    num_threads: int


def _read(path: str) -> bytes | None:
    """A small /proc file in one read (no buffered file object: this runs per process)."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


class ProcessGone(LookupError):
    """The process is not there any more (or its pid now belongs to another one)."""


class ProcDetails(NamedTuple):
    """What a top-list row needs beyond the scan: the real uid and the command line (None
    where it could not be read, with the error in ``errors`` by attribute)."""

    uid: int | None
    cmdline: tuple[str, ...] | None
    errors: tuple[tuple[str, OSError], ...] = ()


def _slurp(path: str) -> bytes:
    """A whole /proc file, however long (a command line can be); OSError as the kernel says."""
    fd = os.open(path, _FLAGS)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _gone(exc: OSError) -> bool:
    # ENOENT: the directory is gone; ESRCH: the process exited while its file was read.
    return isinstance(exc, (FileNotFoundError, ProcessLookupError))


def parse_cmdline(data: bytes) -> tuple[str, ...]:
    """/proc/<pid>/cmdline as psutil splits it: NUL-separated, or by spaces when a process
    rewrote its title that way (setproctitle); empty for kernel threads and zombies."""
    text = data.decode("utf-8", "surrogateescape")
    if not text:
        return ()
    sep = "\x00" if text.endswith("\x00") else " "
    if text.endswith(sep):
        text = text[:-1]
    args = text.split(sep)
    if sep == "\x00" and len(args) == 1 and " " in text:
        args = text.split(" ")
    return tuple(args)


def _boot_time(root: str) -> float:
    with open(os.path.join(root, "stat"), "rb") as handle:
        for line in handle:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError(f"no btime in {root}/stat")


def _boottime() -> float | None:
    """Seconds since boot on the clock /proc/<pid>/stat's starttime counts in (CLOCK_BOOTTIME;
    /proc/uptime is too coarse on some kernels), or None where there is none."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):
        return None


class ProcScanner:
    """Scans ``root`` (/proc) once per call; keeps the CPU times of the previous scan."""

    def __init__(self, root: str = "/proc", *, monotonic: Callable[[], float] = time.monotonic,
                 boot_time: float | None = None,
                 uptime: Callable[[], float | None] = _boottime) -> None:
        self._root = root
        self._monotonic = monotonic
        self._uptime = uptime
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._page = os.sysconf("SC_PAGE_SIZE")
        # Read once, as psutil does: create times are boot time + start ticks, so both agree.
        self._boot = _boot_time(root) if boot_time is None else boot_time
        self._prev: dict[tuple[int, int], int] = {}
        self._prev_at: float | None = None
        #: Clock ticks since boot at the previous scan: a process started after it is new.
        self._prev_up: float | None = None

    @staticmethod
    def available(root: str = "/proc") -> bool:
        """Whether ``root`` looks like Linux's procfs (this process is in it, with a stat)."""
        try:
            return os.path.isfile(os.path.join(root, "self", "stat")) and \
                _boot_time(root) > 0
        except (OSError, ValueError, IndexError):
            return False

    def details(self, pid: int, create_time: float | None) -> ProcDetails:
        """The real uid and the command line of ``pid``, for a top-list row: three small
        reads instead of a psutil Process. ProcessGone if ``pid`` is gone or is no longer
        the process that started at ``create_time``."""
        base = f"{self._root}/{pid}"
        try:
            data = _slurp(f"{base}/stat")
        except OSError as exc:
            raise ProcessGone(pid) from exc
        close = data.rfind(b")")
        rest = data[close + 2:].split(None, 20) if close >= 0 else []
        if len(rest) < 20 or not rest[19].isdigit():
            raise ProcessGone(pid)
        started = self._boot + int(rest[19]) / self._ticks
        if create_time is not None and abs(started - create_time) > 0.05:
            raise ProcessGone(pid)  # the pid was reused
        errors: list[tuple[str, OSError]] = []
        uid: int | None = None
        try:
            status = _slurp(f"{base}/status")
            # "Uid:\treal\teffective\tsaved\tfs": the real one, as psutil's username().
            at = status.index(b"\nUid:") + 5
            uid = int(status[at:status.index(b"\n", at)].split()[0])
        except OSError as exc:
            if _gone(exc):
                raise ProcessGone(pid) from exc
            errors.append(("username", exc))
        except ValueError:
            errors.append(("username", OSError("no Uid line")))
        cmdline: tuple[str, ...] | None = None
        try:
            cmdline = parse_cmdline(_slurp(f"{base}/cmdline"))
        except OSError as exc:
            if _gone(exc):
                raise ProcessGone(pid) from exc
            errors.append(("cmdline", exc))
        return ProcDetails(uid, cmdline, tuple(errors))

    def scan(self) -> list[ProcStat]:
        """Every process readable now; one that exits mid-scan is simply not in the list.
        OSError only if ``root`` itself cannot be listed."""
        now = self._monotonic()
        elapsed = None if self._prev_at is None else now - self._prev_at
        scale = 0.0 if not elapsed or elapsed <= 0 else 100.0 / (self._ticks * elapsed)
        up = self._uptime()
        up_ticks = None if up is None else up * self._ticks
        # A process started since the previous scan gets its CPU time over its age (as ps
        # shows it): a fork that spins at once is in the top list at its first reading, not
        # only at its second.
        # starttime is whole ticks: a process started in the tick the previous scan began in
        # (and not seen by it) is new too.
        born_after = (None if up_ticks is None or self._prev_up is None
                      else float(int(self._prev_up)))
        up_now = up_ticks or 0.0
        seen: dict[tuple[int, int], int] = {}
        out: list[ProcStat] = []
        # The loop below runs once per process per tick: names are bound locally and the
        # parsing is inline (a call per process is a noticeable share of the scan).
        root, prev, ticks, page, boot = self._root, self._prev, self._ticks, self._page, self._boot
        append, states, read = out.append, _STATES, _read
        for entry in os.listdir(root):
            if not entry.isdigit():
                continue
            data = read(f"{root}/{entry}/stat")
            if data is None:
                continue  # gone since the listing, or not ours to read
            # "pid (comm) S ppid ...": comm may hold spaces and parentheses; it ends at the
            # last ")".
            close = data.rfind(b")")
            if close < 0:
                continue
            # Fields counted from 1 in proc(5): rest[0] is field 3 (state); up to starttime
            # (22).
            rest = data[close + 2:].split(None, 20)
            if len(rest) < 20:
                continue
            try:
                used = int(rest[11]) + int(rest[12])  # utime + stime, in clock ticks
                start = int(rest[19])
                threads = int(rest[17])
                # A kernel thread has no memory of its own (statm says 0): not read.
                rss = 0 if int(rest[6]) & _PF_KTHREAD else -1
            except ValueError:
                continue
            if rss < 0:
                statm = read(f"{root}/{entry}/statm")
                pages = None if statm is None else statm.split(None, 2)
                if pages is None or len(pages) < 2 or not pages[1].isdigit():
                    continue
                rss = int(pages[1]) * page
            pid = int(entry)
            key = (pid, start)
            seen[key] = used
            before = prev.get(key)
            if before is not None:
                cpu = round(max(0, used - before) * scale, 1)
            elif born_after is not None and start >= born_after and up_now - start >= 1:
                # At most a core per thread, whatever a clock that went wrong says.
                cpu = round(min(used * 100.0 / (up_now - start), 100.0 * threads), 1)
            else:
                cpu = 0.0  # first sight of an older process, as psutil
            append(ProcStat(
                pid, data[data.find(b"(") + 1:close].decode("utf-8", "surrogateescape"),
                states.get(rest[0]) or rest[0].decode("ascii", "replace"),
                boot + start / ticks, cpu, rss, threads))
        self._prev, self._prev_at, self._prev_up = seen, now, up_ticks
        return out
