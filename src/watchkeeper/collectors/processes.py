"""Process counts and the top processes by CPU and by memory.

Cost matters on hosts with thousands of processes: one pass reads only cheap attributes, and
the expensive ones (command line, user name) are read only for the few processes that make a
top list. On Linux the pass is ``procfs.ProcScanner`` (one /proc/<pid>/stat read per
process, and its ``details`` for the top rows); elsewhere, and as the reference,
psutil.process_iter(), which keeps its Process objects between calls, which is what lets
cpu_percent compare against the previous tick; that cache is module-global in psutil, so
another caller of process_iter(attrs=["cpu_percent"]) in this process would shorten our
window.
"""

from __future__ import annotations

import heapq
import operator
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from watchkeeper.collectors.common import MissingLog, PsutilLike, describe_error
from watchkeeper.collectors.procfs import ProcDetails, ProcessGone, ProcStat
from watchkeeper.events import NameCount, ProcessInfo, ProcessSummary
from watchkeeper.redact import REDACTION_RULES, redact_cmdline
from watchkeeper.safetext import MAX_NAME, printable

try:
    import pwd
except ImportError:  # not on Windows; the /proc path that uses it is Linux-only anyway
    pwd = None  # type: ignore[assignment]

#: Attributes read for every process: all cheap (no cmdline, no username).
CHEAP_ATTRS: tuple[str, ...] = (
    "pid", "name", "create_time", "cpu_percent", "memory_info", "status", "num_threads",
)
#: The same without num_threads, for when the thread total comes from elsewhere: on Linux
#: num_threads costs one more /proc file per process (about a quarter of the scan).
CHEAPER_ATTRS: tuple[str, ...] = tuple(a for a in CHEAP_ATTRS if a != "num_threads")


#: Longest name the kernel keeps for a process (comm); a longer one is cut, and psutil reads
#: the whole from the command line.
_COMM_MAX = 15
#: How many of the largest same-name groups a snapshot lists (a fork storm's culprit).
TOP_NAMES = 5


@dataclass(frozen=True)
class _Row:
    proc: Any  # a psutil Process, or None from the /proc scan (made for a top-list row)
    pid: int
    name: str
    create_time: float | None
    cpu: float | None
    rss: int | None
    status: str | None


def _row(proc: Any, info: dict[str, Any]) -> _Row:
    mem = info.get("memory_info")
    return _Row(
        proc=proc,
        pid=int(info.get("pid", proc.pid)),
        name=str(info.get("name") or ""),
        create_time=info.get("create_time"),
        cpu=info.get("cpu_percent"),
        rss=None if mem is None else int(mem.rss),
        status=None if info.get("status") is None else str(info["status"]),
    )


def _from_stat(st: ProcStat) -> _Row:
    return _Row(proc=None, pid=st.pid, name=st.name, create_time=st.create_time,
                cpu=st.cpu_percent, rss=st.rss, status=st.status)


def _top(rows: Sequence[_Row], n: int, by_cpu: bool) -> list[_Row]:
    if by_cpu:
        # pid 0 is Windows' "System Idle Process", whose CPU % is idle time.
        candidates = [r for r in rows if r.pid != 0]
        return heapq.nlargest(n, candidates, key=lambda r: (r.cpu or 0.0, r.rss or 0, -r.pid))
    return heapq.nlargest(n, rows, key=lambda r: (r.rss or 0, r.cpu or 0.0, -r.pid))


class _Redacted:
    """Redacted command lines by their raw argv, kept across ticks: the same processes top
    the lists tick after tick, and redaction (dozens of patterns) costs up to a few hundred
    µs for a long line. Bounded in entries and in the length of a line it keeps; emptied
    when the redaction rules change."""

    def __init__(self, size: int = 64, longest: int = 4096) -> None:
        self._size = size
        self._longest = longest
        self._rules: tuple[Any, ...] = ()
        self._lines: OrderedDict[tuple[str, ...], str] = OrderedDict()
        self._lock = threading.Lock()  # one per process; collectors may run side by side

    def __call__(self, argv: Sequence[str]) -> str:
        key = tuple(argv)
        if sum(map(len, key)) > self._longest:
            return redact_cmdline(key)
        with self._lock:
            return self._cached(key)

    def _cached(self, key: tuple[str, ...]) -> str:
        rules = tuple(REDACTION_RULES)
        if rules != self._rules:
            self._lines.clear()
            self._rules = rules
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = redact_cmdline(key)
            if len(self._lines) > self._size:
                self._lines.popitem(last=False)
        else:
            self._lines.move_to_end(key)
        return line


_redacted = _Redacted()


#: Reads a top-list row's uid and command line from /proc (``ProcScanner.details``).
DetailReader = Callable[[int, "float | None"], ProcDetails]


def _user_name(uid: int) -> str:
    """The user's name as psutil gives it: the passwd entry, or the number without one."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class _Details:
    """User, redacted command line and whole name, read once per process per tick."""

    def __init__(self, ps: PsutilLike, log: MissingLog,
                 reader: DetailReader | None = None) -> None:
        self._ps = ps
        self._log = log
        self._reader = reader if pwd is not None else None
        self._cache: dict[int, tuple[str | None, str, str]] = {}
        self._users: dict[int, str] = {}

    def get(self, row: _Row) -> tuple[str | None, str, str]:
        if row.pid not in self._cache:
            self._cache[row.pid] = self._read(row)
        return self._cache[row.pid]

    def _process(self, row: _Row) -> Any:
        """The row's psutil Process: the one the scan kept, or one made now and checked to
        be the same process (its start time), never a successor on a reused pid."""
        if row.proc is not None:
            return row.proc
        proc = self._ps.Process(row.pid)
        if row.create_time is not None and abs(proc.create_time() - row.create_time) > 0.05:
            raise self._ps.NoSuchProcess(row.pid)
        return proc

    def _from_proc(self, row: _Row, reader: DetailReader) -> tuple[str | None, str, str]:
        """The /proc path (Linux): the same fields and notes as through psutil below."""
        try:
            found = reader(row.pid, row.create_time)
        except ProcessGone:
            self._log.note(f"process:{row.pid}", "process vanished")
            return None, "", row.name
        except Exception as exc:  # whatever else: this row's details, never the tick
            self._log.note(f"process:{row.pid}", describe_error(self._ps, exc))
            return None, "", row.name
        for attr, error in found.errors:
            self._log.note(f"process:{row.pid}.{attr}",
                           "access denied" if isinstance(error, PermissionError)
                           else describe_error(self._ps, error))
        user = None
        if found.uid is not None:
            if found.uid not in self._users:
                self._users[found.uid] = printable(_user_name(found.uid), MAX_NAME)
            user = self._users[found.uid]
        return user, *self._command(row, found.cmdline or ())

    @staticmethod
    def _command(row: _Row, value: Sequence[str]) -> tuple[str, str]:
        """The redacted command line, and the whole name where the kernel cut it."""
        name = row.name
        if row.proc is None and len(name) >= _COMM_MAX and value:
            # The kernel cut the name; the whole one, as psutil's name() finds it.
            whole = os.path.basename(str(value[0]))
            if whole.startswith(name):
                name = whole
        return (_redacted(value) if value else ""), name

    def _read(self, row: _Row) -> tuple[str | None, str, str]:
        if row.proc is None and self._reader is not None:
            return self._from_proc(row, self._reader)
        user: str | None = None
        cmdline = ""
        name = row.name
        try:
            proc = self._process(row)
        except self._ps.NoSuchProcess:
            self._log.note(f"process:{row.pid}", "process vanished")
            return user, cmdline, name
        except Exception as exc:
            self._log.note(f"process:{row.pid}", describe_error(self._ps, exc))
            return user, cmdline, name
        for attr in ("username", "cmdline"):
            try:
                value = getattr(proc, attr)()
            except self._ps.ZombieProcess:
                continue  # a zombie has no command line left: nothing is missing
            except self._ps.NoSuchProcess:
                # It exited after the scan; keep what the scan saw, note what is lost.
                self._log.note(f"process:{row.pid}", "process vanished")
                break
            except Exception as exc:
                self._log.note(f"process:{row.pid}.{attr}", describe_error(self._ps, exc))
                continue
            if attr == "username":
                user = printable(str(value), MAX_NAME)
            else:
                cmdline, name = self._command(row, value or ())
        return user, cmdline, name


def _info(row: _Row, details: _Details, total_memory: int | None, now: float) -> ProcessInfo:
    user, cmdline, name = details.get(row)
    mem_pct = None
    if row.rss is not None and total_memory:
        mem_pct = row.rss / total_memory * 100.0
    age = None if row.create_time is None else max(0.0, now - row.create_time)
    return ProcessInfo(
        pid=row.pid,
        create_time=float(row.create_time or 0.0),
        name=printable(name, MAX_NAME),
        user=user,
        cpu_percent=row.cpu,
        rss=row.rss,
        memory_percent=mem_pct,
        age_s=age,
        status=row.status,
        cmdline=cmdline,
    )


def linux_thread_total(path: str = "/proc/loadavg") -> int | None:
    """Threads on the host from /proc/loadavg ("0.1 0.2 0.3 2/523 999": 523), or None."""
    try:
        with open(path, encoding="ascii") as handle:
            field = handle.read().split()[3]
        return int(field.split("/")[1])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class _Pass:
    """One pass over every process: the counts, and rows for at least every process that
    can make a top list (all of them from psutil; from the /proc scan only the top few, so
    the rest never become rows). Counts are None-able at the end."""

    rows: list[_Row]
    threads: int = 0
    complete: bool = True
    total: int = 0
    running: int = 0
    zombies: int = 0
    names: list[tuple[str, int]] = field(default_factory=list)


def _counted(found: _Pass) -> _Pass:
    found.total = len(found.rows)
    found.running = sum(1 for r in found.rows if r.status == "running")
    found.zombies = sum(1 for r in found.rows if r.status == "zombie")
    found.names = Counter(r.name for r in found.rows).most_common(TOP_NAMES)
    return found


def _psutil_pass(ps: PsutilLike, log: MissingLog, with_threads: bool) -> _Pass:
    found = _Pass([])
    unknown_threads = 0
    try:
        attrs = CHEAP_ATTRS if with_threads else CHEAPER_ATTRS
        for proc in ps.process_iter(attrs=list(attrs), ad_value=None):
            info: dict[str, Any] = proc.info
            found.rows.append(_row(proc, info))
            if not with_threads:
                continue
            n_threads = info.get("num_threads")
            if n_threads is None:
                unknown_threads += 1
            else:
                found.threads += int(n_threads)
    except Exception as exc:
        # psutil itself skips processes that vanish mid-scan; anything else ends the scan
        # early, and partial counts would look like a real drop.
        found.complete = False
        log.note("processes.list", f"incomplete: {describe_error(ps, exc)}")
    if unknown_threads:
        log.note("processes.threads", f"partial: unreadable for {unknown_threads} processes")
    return _counted(found)


def _proc_pass(ps: PsutilLike, log: MissingLog, scan: Callable[[], list[ProcStat]],
               top_n: int) -> _Pass:
    try:
        stats = scan()
    except OSError as exc:  # /proc itself unreadable (a process that exits is just absent)
        log.note("processes.list", f"incomplete: {describe_error(ps, exc)}")
        return _Pass([], complete=False)
    # The same order as _top's, on the scan's tuples, with C-level keys: sorted by pid
    # first, the lower pid wins a tie as _top's -pid makes it (nlargest keeps the order of
    # equal keys). Rows are made only for the few that can win.
    stats.sort()  # by pid: they are unique
    candidates = stats[1:] if stats and stats[0].pid == 0 else stats  # pid 0: see _top
    by_cpu = heapq.nlargest(top_n, candidates, key=_BY_CPU)
    by_mem = heapq.nlargest(top_n, stats, key=_BY_MEMORY)
    few = {st.pid: st for st in (*by_cpu, *by_mem)}
    statuses = list(map(_STATUS, stats))
    return _Pass([_from_stat(st) for st in few.values()], sum(map(_THREADS, stats)),
                 total=len(stats), running=statuses.count("running"),
                 zombies=statuses.count("zombie"),
                 names=Counter(map(_NAME, stats)).most_common(TOP_NAMES))


_BY_CPU = operator.attrgetter("cpu_percent", "rss")
_BY_MEMORY = operator.attrgetter("rss", "cpu_percent")
_STATUS = operator.attrgetter("status")
_NAME = operator.attrgetter("name")
_THREADS = operator.attrgetter("num_threads")


def read_processes(ps: PsutilLike, log: MissingLog, top_n: int, now: float,
                   thread_total: Callable[[], int | None] | None = None,
                   scan: Callable[[], list[ProcStat]] | None = None,
                   details: DetailReader | None = None) -> ProcessSummary:
    """Counts of all processes plus the ``top_n`` by CPU % and by resident memory.

    cpu_percent is psutil's per-process figure (100 = one full core), 0.0 on first sight.
    ``thread_total``, when given and answering, replaces the per-process thread count.
    ``scan`` (Linux: ``ProcScanner.scan``) replaces psutil.process_iter() for the pass, and
    ``details`` (``ProcScanner.details``) psutil's username() and cmdline() for its rows.
    """
    threads_from_host = thread_total() if thread_total is not None else None
    vm = log.attempt("processes.memory_percent", ps.virtual_memory)
    total_memory = None if vm is None else int(vm.total)
    found = (_proc_pass(ps, log, scan, top_n) if scan is not None
             else _psutil_pass(ps, log, with_threads=threads_from_host is None))
    rows, complete = found.rows, found.complete
    threads = found.threads if threads_from_host is None else threads_from_host
    found_details = _Details(ps, log, details)
    return ProcessSummary(
        total=found.total if complete else None,
        running=found.running if complete else None,
        zombies=found.zombies if complete else None,
        threads=threads if complete else None,
        top_cpu=tuple(_info(r, found_details, total_memory, now)
                      for r in _top(rows, top_n, True)),
        top_memory=tuple(_info(r, found_details, total_memory, now)
                         for r in _top(rows, top_n, False)),
        top_names=tuple(NameCount(name=printable(name, MAX_NAME), count=n)
                        for name, n in found.names) if complete else (),
    )
