"""Which process watchkeeper may signal: one decision, made when a stop is asked for, in its
dry run, and again right before the signal.

A pid names a process only when it leads its thread group: kill(2) on a thread id signals the
whole process, so a thread of watchkeeper or of init would take that process down. Every
check is therefore made on the thread group, and a thread id is refused, naming its process.

Never signalled, whatever an approval says: init (pid 1), watchkeeper itself and its
ancestors, kernel threads, and processes with a protected name (``DEFAULT_PROTECTED`` minus
``remediation.processes.unprotect``, plus ``remediation.processes.protect``). Only processes
whose every uid (real, effective, saved) is watchkeeper's own effective user or a user in
``remediation.processes.users`` may be stopped; ``remediation.allow.stop_process`` may narrow
that further by pid, name and user.

The host is read at one boundary, ``read_status`` (``/proc/<pid>/status`` and ``stat`` on
Linux): tests replace it where the real thing cannot exist (another user's process).
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from watchkeeper.remediation.registry import ActionRefused

if TYPE_CHECKING:
    # Types only: config.py imports this module to validate its defaults, so neither it nor
    # the collectors (which import config) may be imported here at run time.
    from watchkeeper.collectors.common import PsutilLike
    from watchkeeper.config import RemediationConfig

logger = logging.getLogger(__name__)

#: Start times are compared with this slack: they travel as JSON floats, and the kernel
#: counts them in clock ticks (10 ms), so a smaller difference cannot be another process.
CREATE_TIME_TOLERANCE_S = 0.001

#: Process names never signalled unless ``remediation.processes.unprotect`` names them: what
#: keeps the host reachable and running (init and service managers, remote and console login,
#: the system bus, containers, storage, networking, logging and audit), on Linux, macOS and
#: Windows. Matched, case-insensitively, against the process name, its kernel name (comm)
#: and its executable's file name: a process cannot make another process unprotected.
DEFAULT_PROTECTED: tuple[str, ...] = (
    # init and service managers
    "init", "systemd", "systemd-*", "upstart", "runit", "runsvdir", "s6-svscan", "launchd",
    "supervisord",
    # logging in: remote and on a console
    "sshd", "sshd-session", "sshd-auth", "login", "getty", "agetty", "mingetty", "gdm",
    "gdm3", "sddm", "lightdm", "Xorg", "Xwayland",
    # the system bus, privileges, audit, logs, scheduled jobs
    "dbus-daemon", "dbus-broker", "polkitd", "auditd", "rsyslogd", "syslog-ng", "cron",
    "crond",
    # devices, storage, networking
    "udevd", "multipathd", "iscsid", "dmeventd", "lvmetad", "NetworkManager",
    "wpa_supplicant",
    # containers and orchestration
    "containerd", "containerd-shim*", "dockerd", "kubelet", "crio",
    # Windows and macOS kernel-adjacent processes
    "System", "smss.exe", "csrss.exe", "wininit.exe", "winlogon.exe", "services.exe",
    "lsass.exe", "kernel_task", "WindowServer", "loginwindow",
)

_PF_KTHREAD = 0x00200000  # include/linux/sched.h: "I am a kernel thread"
_ALLOW_KEYS = ("pid", "name", "user")


class TargetRefused(ActionRefused):
    """The named process must not be signalled (why, in plain words)."""


@dataclass(frozen=True)
class ProcStatus:
    """What the kernel says about one pid or thread id."""

    pid: int
    #: The thread group (process) this id belongs to; equal to ``pid`` for a process.
    tgid: int
    ppid: int
    #: The kernel's name (comm, at most 15 characters).
    comm: str
    #: Real, effective and saved uid (empty where unknown, e.g. Windows).
    uids: tuple[int, ...]
    kernel_thread: bool


def _linux_status(pid: int, proc: Path = Path("/proc")) -> ProcStatus | None:
    try:
        status = (proc / str(pid) / "status").read_text(errors="replace")
        stat = (proc / str(pid) / "stat").read_text(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    except PermissionError:
        raise TargetRefused(f"cannot read what pid {pid} is (/proc/{pid}: permission "
                            "denied)") from None
    fields: dict[str, str] = {}
    for line in status.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    try:
        after_comm = stat.rsplit(")", 1)[1].split()
        flags = int(after_comm[6])  # fields 3.. of stat: state ppid pgrp session tty tpgid flags
        uids = tuple(int(u) for u in fields.get("Uid", "").split()[:3])
        return ProcStatus(pid=pid, tgid=int(fields["Tgid"]), ppid=int(fields["PPid"]),
                          comm=fields.get("Name", ""), uids=uids,
                          kernel_thread=bool(flags & _PF_KTHREAD))
    except (IndexError, KeyError, ValueError):
        raise TargetRefused(f"cannot read what pid {pid} is (/proc/{pid}/status)") from None


def _portable_status(pid: int) -> ProcStatus | None:
    try:
        proc = psutil.Process(pid)
        uids = tuple(proc.uids())[:3] if hasattr(proc, "uids") else ()
        return ProcStatus(pid=pid, tgid=pid, ppid=proc.ppid(), comm=proc.name(), uids=uids,
                          kernel_thread=pid == 0)
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        raise TargetRefused(f"cannot read what pid {pid} is (access denied)") from None


def read_status(pid: int) -> ProcStatus | None:
    """The kernel's facts on ``pid`` (None: no such pid); raise TargetRefused if unreadable."""
    if sys.platform.startswith("linux"):
        return _linux_status(pid)
    return _portable_status(pid)


#: The boundary the guard reads the host through (``read_status``, or a fake in tests).
StatusReader = Callable[[int], "ProcStatus | None"]


def effective_uid() -> int | None:
    """This process's effective uid (None on Windows)."""
    geteuid = getattr(os, "geteuid", None)
    return None if geteuid is None else int(geteuid())


# --------------------------------------------------------------------------- allow entries


@dataclass(frozen=True)
class ProcessPattern:
    """One ``remediation.allow.stop_process`` entry: globs on pid, name and user, all of
    which must match (an absent one matches anything)."""

    text: str
    pid: str | None = None
    name: str | None = None
    user: str | None = None

    def matches(self, pid: int, name: str | None, user: str | None) -> bool:
        """Whether the process matches; an unknown (None) name or user could match."""
        return ((self.pid is None or fnmatch.fnmatchcase(str(pid), self.pid))
                and (self.name is None or name is None or fnmatch.fnmatchcase(name, self.name))
                and (self.user is None or user is None or fnmatch.fnmatchcase(user, self.user)))


def parse_pattern(text: str) -> ProcessPattern:
    """``"4242"``, ``"name:worker-*"``, ``"user:www-data name:php-fpm*"``; ValueError if bad."""
    found: dict[str, str] = {}
    for term in text.split():
        key, sep, glob = term.partition(":")
        if not sep:
            key, glob = "pid", term  # a bare glob names pids, as it always did
            if not re.fullmatch(r"[0-9*?\[\]!-]+", term):
                raise ValueError(f"{text!r}: {term!r} is not a pid glob (did you mean "
                                 f"'name:{term}'?)")
        if key not in _ALLOW_KEYS:
            close = difflib.get_close_matches(key, _ALLOW_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{text!r}: unknown key {key!r}{hint}; an entry is a pid glob or "
                             "pid:, name:, user: globs separated by spaces")
        if key in found:
            raise ValueError(f"{text!r}: {key}: given twice")
        if not glob:
            raise ValueError(f"{text!r}: {key}: needs a glob")
        found[key] = glob
    if not found:
        raise ValueError("an empty entry matches no process")
    return ProcessPattern(text=text, **found)


def parse_patterns(entries: Iterable[str]) -> tuple[ProcessPattern, ...]:
    """Every entry parsed (ValueError for the first bad one)."""
    return tuple(parse_pattern(e) for e in entries)


def allow_could_match(entries: Iterable[str], pid: int) -> bool:
    """Whether an entry may match ``pid`` before its name and user are known (the policy's
    pure pre-check; the guard decides on the live process)."""
    return any(p.matches(pid, None, None) for p in parse_patterns(entries))


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class GuardRules:
    """What the guard holds a process against (from the configuration and who we are)."""

    protected: tuple[str, ...] = DEFAULT_PROTECTED
    #: Users (globs, or uids) besides watchkeeper's own whose processes may be stopped.
    users: tuple[str, ...] = ()
    #: ``remediation.allow.stop_process`` (None: no entry, every process that passes).
    allow: tuple[str, ...] | None = None
    own_pid: int = field(default_factory=os.getpid)
    #: watchkeeper's effective uid (None where there are no uids: then user names compare).
    own_uid: int | None = field(default_factory=effective_uid)

    @classmethod
    def of(cls, settings: RemediationConfig, *, own_pid: int, own_uid: int | None
           ) -> GuardRules:
        """The rules of a remediation configuration, for the process ``own_pid``."""
        procs = settings.processes
        protected = tuple(n for n in DEFAULT_PROTECTED if n not in procs.unprotect)
        return cls(protected=protected + procs.protect, users=procs.users,
                   allow=settings.allow.get("stop_process"), own_pid=own_pid,
                   own_uid=own_uid)


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def _user_allowed(uid: int, rules: GuardRules) -> bool:
    if uid == rules.own_uid:
        return True
    if uid == 0:
        # Root's processes are only a root watchkeeper's to stop, whatever the list says:
        # another user could not signal them anyway, and "*" must not read as "root too".
        return False
    if "*" in rules.users:
        return True
    name = _user_name(uid)
    return any(u == str(uid) or fnmatch.fnmatchcase(name, u) for u in rules.users)


# --------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Candidate:
    """A live process that may be signalled: the psutil handle and what the guard saw."""

    proc: Any
    pid: int
    name: str
    create_time: float
    user: str | None


def _read(ps: PsutilLike, getter: Callable[[], Any], default: Any) -> Any:
    try:
        return getter()
    except (ps.AccessDenied, ps.NoSuchProcess):
        return default


def _names(ps: PsutilLike, proc: Any, status: ProcStatus) -> list[str]:
    """Every name the process goes by: psutil's (comm, completed from the command line when
    the kernel cut it at 15 characters), comm itself, the executable's file name."""
    names = [str(_read(ps, proc.name, "") or ""), status.comm]
    exe = str(_read(ps, proc.exe, "") or "") if hasattr(proc, "exe") else ""
    if exe:
        names.append(os.path.basename(exe.removesuffix(" (deleted)")))
    return [n for n in dict.fromkeys(names) if n]


def _ancestors(read: StatusReader, own_pid: int) -> set[int]:
    """watchkeeper's ancestors (killing one may take us or our session down)."""
    found: set[int] = set()
    pid = own_pid
    for _ in range(256):  # a loop in a fake or a racing /proc must not hang us
        try:
            st = read(pid)
        except TargetRefused:
            break
        if st is None or st.ppid <= 0 or st.ppid in found:
            break
        found.add(st.ppid)
        pid = st.ppid
    return found


def _kind(status: ProcStatus, names: list[str], rules: GuardRules,
          read: StatusReader) -> str | None:
    """Why this process (a thread group leader) is protected, or None."""
    if status.pid == 1:
        return "init (pid 1)"
    if status.pid == rules.own_pid:
        return "watchkeeper itself"
    if status.pid in _ancestors(read, rules.own_pid):
        return "an ancestor of watchkeeper"
    if status.kernel_thread or (status.pid == 2 and status.comm == "kthreadd"):
        return "a kernel thread"
    for name in names:
        glob = next((g for g in rules.protected
                     if fnmatch.fnmatchcase(name.lower(), g.lower())), None)
        if glob is not None:
            how = "" if glob.lower() == name.lower() else f" (matches {glob!r})"
            return f"a protected process: {name}{how}"
    return None


def _why_protected(ps: PsutilLike, read: StatusReader, status: ProcStatus,
                   rules: GuardRules) -> tuple[str, str | None]:
    """(the process's name, why it is protected or None) for a thread group leader."""
    proc = _proc(ps, status.pid)
    names = _names(ps, proc, status) if proc is not None else [status.comm]
    return (names[0] if names else "?"), _kind(status, names, rules, read)


def protection(ps: PsutilLike, read: StatusReader, pid: int, rules: GuardRules) -> str | None:
    """Why ``pid`` must never be signalled (a thread, or a protected process), None if it may
    be, or is gone. Used for stop_process and for processes a service manager adopts."""
    if pid <= 1:
        return f"pid {pid} is {'init (pid 1)' if pid == 1 else 'not a process'}; never a target"
    status = read(pid)
    if status is None:
        return None
    if status.tgid != pid:
        # Judged as the process it belongs to: that is what kill(2) would hit.
        leader = read(status.tgid)
        name, why = (_why_protected(ps, read, leader, rules) if leader is not None
                     else ("?", None))
        what = f"pid {pid} is a thread of process {status.tgid} ({name})"
        if why is not None:
            return f"{what}, which is {why}; refusing"
        return (f"{what}, not a process: signalling a thread signals its whole process; name "
                f"the process (pid {status.tgid}) if that is what you mean")
    name, why = _why_protected(ps, read, status, rules)
    return None if why is None else f"pid {pid} ({name}) is {why}; refusing"


def _proc(ps: PsutilLike, pid: int) -> Any:
    try:
        return ps.Process(pid)
    except ps.NoSuchProcess:
        return None


def check_stop(ps: PsutilLike, read: StatusReader, pid: int, create_time: float | None,
               rules: GuardRules) -> Candidate | None:
    """The process stop_process may signal, None if it is gone; raise TargetRefused saying
    why it may not (a thread, protected, another user's, not allowed, not the same process).

    The one decision for request time (``pin``), preview and execute.
    """
    why = protection(ps, read, pid, rules)
    if why is not None:
        raise TargetRefused(why)
    if create_time is None:
        raise TargetRefused(f"pid {pid} needs its create_time: a pid alone may have been "
                            "reused")
    proc = _proc(ps, pid)
    status = read(pid)
    if proc is None or status is None:
        return None
    try:
        started = float(proc.create_time())
    except ps.NoSuchProcess:
        return None
    except ps.AccessDenied:
        raise TargetRefused(f"cannot read the start time of pid {pid}") from None
    if not math.isclose(started, create_time, rel_tol=0.0, abs_tol=CREATE_TIME_TOLERANCE_S):
        raise TargetRefused(f"pid {pid} is another process now (started at {started:.2f}, "
                            f"not {create_time:.2f}): the pid was reused; refusing")
    name = str(_read(ps, proc.name, "") or status.comm)
    user = _read(ps, proc.username, None)
    user = None if user is None else str(user)
    label = f"pid {pid} ({name})"
    if status.uids:
        for role, uid in zip(("real", "effective", "saved"), status.uids, strict=False):
            if not _user_allowed(uid, rules):
                own = "?" if rules.own_uid is None else _user_name(rules.own_uid)
                if uid == 0:
                    raise TargetRefused(f"{label} runs as root ({role} uid 0) and watchkeeper "
                                        f"runs as {own}: root's processes are never its to stop")
                raise TargetRefused(
                    f"{label} runs as {_user_name(uid)} ({role} uid {uid}), not as "
                    f"watchkeeper's user {own}; list that user in remediation.processes.users "
                    "to allow it")
    else:
        own_name = _read(ps, lambda: ps.Process(rules.own_pid).username(), None)
        if "*" not in rules.users and (user is None or (user != own_name and not any(
                fnmatch.fnmatchcase(user, u) for u in rules.users))):
            raise TargetRefused(f"{label} runs as {user or 'an unknown user'}, not as "
                                f"watchkeeper's user {own_name}; list that user in "
                                "remediation.processes.users to allow it")
    if rules.allow is not None and not any(
            p.matches(pid, name, user) for p in parse_patterns(rules.allow)):
        shown = ", ".join(rules.allow) or "nothing"
        raise TargetRefused(f"may not touch {label}, user {user or '?'} "
                            f"(remediation.allow.stop_process: {shown})")
    return Candidate(proc=proc, pid=pid, name=name, create_time=started, user=user)
