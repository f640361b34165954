"""The scenarios: what each one does, its defaults, and the plan checked against the caps.

``plan(request, host)`` reads the sizes, applies the defaults and the limits, and returns what
to start, or raises :class:`~watchkeeper.simulate.limits.Refused`; it creates nothing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from watchkeeper.simulate import limits
from watchkeeper.simulate.limits import Refused, fmt_size

#: Scenarios run on this host by ``simulate`` itself.
LOCAL = ("cpu", "memory", "leak", "disk", "forkstorm", "logflood")
#: Scenarios a running server carries out (a demo managed service).
SERVER = ("service", "crashloop")
SCENARIOS = LOCAL + SERVER

DEFAULT_MEMORY = "256M"
DEFAULT_LEAK_RATE = "4M/s"
DEFAULT_DISK_RATE = "1M/s"
DEFAULT_PROCS = 150
DEFAULT_LINES_PER_S = 2000


class Host(Protocol):
    """What planning needs to know about this host (injected: tests give their own)."""

    def cpu_count(self) -> int: ...
    def memory_available(self) -> int: ...
    def disk_room(self, path: str) -> limits.DiskRoom: ...
    def nproc_headroom(self) -> int | None: ...


class LiveHost:
    """This host, as psutil and the OS see it now."""

    def cpu_count(self) -> int:
        """Logical CPUs."""
        return os.cpu_count() or 1

    def memory_available(self) -> int:
        """Bytes available to new allocations."""
        import psutil

        return int(psutil.virtual_memory().available)

    def disk_room(self, path: str) -> limits.DiskRoom:
        """The filesystem holding ``path``."""
        return limits.disk_room(path)

    def nproc_headroom(self) -> int | None:
        """Processes RLIMIT_NPROC still allows this user."""
        return limits.nproc_headroom()


@dataclass(frozen=True)
class Request:
    """A scenario as asked for on the command line (sizes as typed)."""

    scenario: str
    duration: str = f"{limits.DEFAULT_DURATION_S:.0f}s"
    cores: int | None = None
    size: str | None = None
    rate: str | None = None
    path: str | None = None
    procs: int | None = None
    lines_per_s: int | None = None
    #: Paths of the server's ``remediation.log_files`` (a logflood may append to one).
    log_files: Sequence[str] = ()


@dataclass(frozen=True)
class Worker:
    """One process to start: its kind and parameters (a ``file`` is made in the run's data
    directory when started)."""

    kind: str
    params: dict[str, Any]
    file: str | None = None


@dataclass(frozen=True)
class Plan:
    """What a run will do: its workers, where it writes, and in words."""

    scenario: str
    duration_s: float
    workers: tuple[Worker, ...]
    summary: str
    #: A directory the run makes its own subdirectory in (disk, logflood).
    write_under: Path | None = None
    #: A configured log file a logflood appends to (kept afterwards: it is not the run's).
    append_to: Path | None = None
    limits: dict[str, Any] = field(default_factory=dict)


def _no_extra(req: Request, allowed: set[str]) -> None:
    given = {"cores": req.cores, "size": req.size, "rate": req.rate, "path": req.path,
             "procs": req.procs, "lines_per_s": req.lines_per_s}
    extra = sorted(k for k, v in given.items() if v is not None and k not in allowed)
    if extra:
        names = ", ".join("--" + k.replace("_", "-") for k in extra)
        raise Refused(f"{req.scenario} does not take {names}")


def _real_dir(raw: str) -> Path:
    """``raw`` as an existing directory reached through no symlink."""
    from watchkeeper.remediation.actions.safepath import symlink_on

    if "\x00" in raw:
        raise Refused("--path must not contain a NUL character")
    path = Path(os.path.abspath(raw))
    link = symlink_on(str(path))
    if link is not None:
        raise Refused(f"--path {raw!r} goes through the symlink {link}: give the real path")
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise Refused(f"--path {raw!r}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise Refused(f"--path {raw!r} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise Refused(f"--path {raw!r} is not writable by this user")
    return path


def plan(req: Request, host: Host) -> Plan:
    """The checked plan for ``req``; Refused (nothing created) when unsafe or malformed."""
    if req.scenario not in LOCAL:
        raise Refused(f"unknown scenario {req.scenario!r}; known: {', '.join(SCENARIOS)}")
    duration = limits.parse_duration(req.duration)
    base = {"duration_s": duration}
    s = req.scenario
    if s == "cpu":
        _no_extra(req, {"cores"})
        cores = 1 if req.cores is None else req.cores
        limits.check_cores(cores, host.cpu_count())
        return Plan(s, duration, tuple(Worker("cpu", dict(base)) for _ in range(cores)),
                    f"{cores} process{'es' if cores > 1 else ''} (wk-sim-cpu) each spinning "
                    f"one core for {duration:g} s", limits={"cores": host.cpu_count()})
    if s == "memory":
        _no_extra(req, {"size"})
        size = limits.parse_size(DEFAULT_MEMORY if req.size is None else req.size, "--size")
        limits.check_memory(size, host.memory_available())
        return Plan(s, duration, (Worker("memory", {**base, "size": size}),),
                    f"one process (wk-sim-memory) holding {fmt_size(size)} for {duration:g} s",
                    limits={"memory_fraction": limits.MEMORY_FRACTION})
    if s == "leak":
        _no_extra(req, {"size", "rate"})
        rate = limits.parse_rate(DEFAULT_LEAK_RATE if req.rate is None else req.rate, "--rate")
        limits.check_rate(rate, limits.MAX_LEAK_RATE, "--rate")
        size = (limits.parse_size(req.size, "--size") if req.size is not None
                else int(rate * duration))
        limits.check_memory(size, host.memory_available())
        return Plan(s, duration, (Worker("leak", {**base, "rate": rate, "size": size}),),
                    f"one process (wk-sim-leak) growing by {fmt_size(rate)}/s up to "
                    f"{fmt_size(size)} for {duration:g} s",
                    limits={"memory_fraction": limits.MEMORY_FRACTION})
    if s == "disk":
        _no_extra(req, {"size", "rate", "path"})
        import tempfile

        where = _real_dir(tempfile.gettempdir() if req.path is None else req.path)
        rate = limits.parse_rate(DEFAULT_DISK_RATE if req.rate is None else req.rate, "--rate")
        limits.check_rate(rate, limits.MAX_DISK_RATE, "--rate")
        size = (limits.parse_size(req.size, "--size") if req.size is not None
                else int(rate * duration))
        room = host.disk_room(str(where))
        limits.check_disk(size, room, str(where))
        return Plan(s, duration, (Worker("disk", {**base, "rate": rate, "size": size,
                                                  "keep_free": room.keep_free},
                                         file="fill.bin"),),
                    f"one process (wk-sim-disk) writing {fmt_size(rate)}/s up to "
                    f"{fmt_size(size)} under {where} for {duration:g} s",
                    write_under=where, limits={"keep_free": room.keep_free})
    if s == "forkstorm":
        _no_extra(req, {"procs"})
        procs = DEFAULT_PROCS if req.procs is None else req.procs
        limits.check_procs(procs, host.nproc_headroom())
        return Plan(s, duration, (Worker("forkstorm", {**base, "procs": procs}),),
                    f"one process (wk-sim-forkstor) forking {procs} sleeping processes for "
                    f"{duration:g} s", limits={"max_procs": limits.MAX_PROCS})
    # logflood
    _no_extra(req, {"lines_per_s", "path", "size"})
    lines = DEFAULT_LINES_PER_S if req.lines_per_s is None else req.lines_per_s
    limits.check_lines(lines)
    size = (limits.parse_size(req.size, "--size") if req.size is not None
            else min(limits.MAX_LOG_BYTES, int(lines * duration * 120)))
    if size > limits.MAX_LOG_BYTES:
        raise Refused(f"--size {fmt_size(size)} is more than the log flood cap of "
                      f"{fmt_size(limits.MAX_LOG_BYTES)}")
    params = {**base, "lines_per_s": lines, "size": size}
    configured = {os.path.normpath(os.path.abspath(c)) for c in req.log_files}
    if req.path is not None and _is_dir(req.path) and \
            os.path.normpath(os.path.abspath(req.path)) not in configured:
        # A directory (a watched log directory such as /var/log): a file of the run's own
        # in a directory the run makes there, as for disk.
        where = _real_dir(req.path)
        limits.check_disk(size, host.disk_room(str(where)), str(where))
        return Plan(s, duration, (Worker("logflood", params, file="flood.log"),),
                    f"one process (wk-sim-logflood) writing {lines} lines/s, at most "
                    f"{fmt_size(size)}, to a log of its own under {where} for {duration:g} s",
                    write_under=where)
    if req.path is not None:
        target = _log_file(req.path, req.log_files)
        limits.check_disk(size, host.disk_room(str(target.parent)), str(target))
        return Plan(s, duration, (Worker("logflood", {**params, "path": str(target),
                                                      "append": True}),),
                    f"one process (wk-sim-logflood) appending {lines} lines/s, at most "
                    f"{fmt_size(size)}, to {target} (a configured remediation.log_files "
                    f"entry; the lines stay there) for {duration:g} s", append_to=target)
    import tempfile

    where = _real_dir(tempfile.gettempdir())
    limits.check_disk(size, host.disk_room(str(where)), str(where))
    return Plan(s, duration, (Worker("logflood", params, file="flood.log"),),
                f"one process (wk-sim-logflood) writing {lines} lines/s, at most "
                f"{fmt_size(size)}, to a log of its own under {where} for {duration:g} s",
                write_under=where)


def _is_dir(raw: str) -> bool:
    """Whether ``raw`` leads to a directory (_real_dir then refuses a symlink on the way)."""
    return "\x00" not in raw and os.path.isdir(raw)


def _log_file(raw: str, configured: Sequence[str]) -> Path:
    """``raw`` if it is one of the configured log files, a regular file reached through no
    symlink; Refused otherwise."""
    from watchkeeper.remediation.actions.safepath import symlink_on

    if "\x00" in raw:
        raise Refused("--path must not contain a NUL character")
    path = Path(os.path.normpath(os.path.abspath(raw)))
    known = {os.path.normpath(os.path.abspath(c)) for c in configured}
    if str(path) not in known:
        raise Refused(f"--path {raw!r} is not one of the server's remediation.log_files "
                      f"({', '.join(sorted(known)) or 'none configured'}); without --path "
                      "the flood goes to a file of its own")
    link = symlink_on(str(path))
    if link is not None:
        raise Refused(f"--path {raw!r} goes through the symlink {link}")
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise Refused(f"--path {raw!r}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"--path {raw!r} is not a regular file")
    return path
