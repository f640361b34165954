"""Context for high CPU and memory: a known job, a runaway process, a leak, or general load.

Known jobs (``analyzer.known_jobs``) match by a glob (case-sensitive, like fnmatchcase) on the
process name or its command line, optionally only inside time windows "HH:MM-HH:MM". A window
is read in the job's ``timezone``: "local" (default) is the local time of the machine running
the analyzer, which is the monitored host in the default one-process setup; a central server
following hosts in other zones should name the zone ("Europe/Berlin", "UTC"). The instant
compared is always the snapshot's own timestamp, never the wall clock. A window may cross
midnight ("23:00-02:00"); "24:00" may end a window.

A job explains the load when the top consumer matches it or its processes use at least half
of what is in use. A runaway is one process at or above ``runaway_cpu_percent`` in every
snapshot's top-CPU list for longer than ``runaway_minutes``. Otherwise the culprits are named
from the first firing: the (at most three) biggest consumers that each use at least a fifth
of what is in use, when together they use at least half of it; else it is general load.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from watchkeeper.analysis.alerts import fmt_bytes, fmt_duration
from watchkeeper.config import KnownJob
from watchkeeper.events import MetricSnapshot, ProcessInfo

ProcKey = tuple[int, float]

_UNPRINTABLE = re.compile(r"[^\x20-\x7e\u00a0-\uffff]")


def proc_label(p: ProcessInfo) -> str:
    """'name (pid 42)', with the untrusted name made printable and short."""
    name = _UNPRINTABLE.sub("?", p.name)[:64] or "?"
    return f"{name} (pid {p.pid})"


def cores(snap: MetricSnapshot) -> int | None:
    """Logical CPU count from whichever part of the snapshot has it."""
    if snap.cpu.count_logical:
        return snap.cpu.count_logical
    if snap.identity is not None and snap.identity.cpu_count:
        return snap.identity.cpu_count
    return len(snap.cpu.per_core) or None


# --------------------------------------------------------------------------- known jobs


def _minutes(hh_mm: str) -> int:
    h, m = hh_mm.split(":")
    return int(h) * 60 + int(m)


@dataclass(frozen=True)
class CompiledJob:
    """A known job ready to match: compiled glob, windows in minutes of the day, zone."""

    name: str
    pattern: str
    regex: re.Pattern[str]
    windows: tuple[tuple[int, int], ...]
    window_text: str
    tz: tzinfo | None

    def matches(self, p: ProcessInfo) -> bool:
        """True when the glob matches the process name or its command line."""
        return bool(self.regex.match(p.name) or (p.cmdline and self.regex.match(p.cmdline)))

    def local_time(self, t: float) -> datetime:
        """The snapshot instant in the job's zone (naive local time for "local")."""
        if self.tz is None:
            return datetime.fromtimestamp(t)
        return datetime.fromtimestamp(t, self.tz)

    def active_at(self, t: float) -> bool:
        """Whether instant ``t`` (epoch s) falls in one of the windows (always, if none)."""
        if not self.windows:
            return True
        now = self.local_time(t)
        m = now.hour * 60 + now.minute
        for start, end in self.windows:
            if start < end:
                if start <= m < end:
                    return True
            elif start > end:  # crosses midnight
                if m >= start or m < end:
                    return True
            else:
                return True  # "01:00-01:00": the whole day
        return False


def compile_jobs(jobs: Iterable[KnownJob]) -> tuple[CompiledJob, ...]:
    """Compile the configured known jobs (validated by the config model already)."""
    out = []
    for job in jobs:
        windows = tuple((_minutes(w[:5]), _minutes(w[6:])) for w in job.windows)
        tz: tzinfo | None = None
        if job.timezone != "local":
            tz = timezone.utc if job.timezone == "UTC" else ZoneInfo(job.timezone)
        zone = "" if job.timezone == "local" else f" {job.timezone}"
        out.append(CompiledJob(
            name=job.name, pattern=job.match,
            regex=re.compile(fnmatch.translate(job.match), re.DOTALL),
            windows=windows, window_text=", ".join(job.windows) + zone if windows else "",
            tz=tz))
    return tuple(out)


# --------------------------------------------------------------------------- runaways


class Pinned(Protocol):
    """Which processes are pinned at the runaway CPU percentage, and since when (the
    runaway detector's state, read to name a runaway as the cause of a busy host)."""

    def longest(self, t: float, min_s: float) -> tuple[ProcessInfo, float] | None:
        """The process pinned longest, if for at least ``min_s``; with how long."""
        ...  # pragma: no cover

    def to_list(self) -> list[tuple[ProcessInfo, float]]:
        """Every pinned process with the time it became pinned."""
        ...  # pragma: no cover


# --------------------------------------------------------------------------- classification


Kind = Literal["known_job", "runaway", "leak", "culprit", "general"]

#: Culprits: each named process uses at least this share of what is in use ...
CULPRIT_SHARE = 0.2
#: ... and together they use at least this share (most of it) ...
CULPRITS_TOTAL = 0.5
#: ... and at most this many are named.
MAX_CULPRITS = 3


@dataclass(frozen=True)
class Classification:
    """Why CPU or memory is high, in words, with a tag that changes when the reason does."""

    kind: Kind
    text: str
    cause: str
    likely_cause: str
    confidence: float
    expected: bool = False
    process: ProcessInfo | None = None


def _job_note(job: CompiledJob, procs: Sequence[ProcessInfo], t: float) -> str:
    now = job.local_time(t).strftime("%H:%M")
    return (f"; {proc_label(procs[0])} matches known job '{job.name}' but runs outside its "
            f"window {job.window_text} (now {now})")


def _known_job(procs: Sequence[ProcessInfo], amount: Callable[[ProcessInfo], float],
               used: float, jobs: Sequence[CompiledJob], t: float
               ) -> tuple[CompiledJob, list[ProcessInfo], float] | str:
    """The job that explains the load (with its processes and share), or a note."""
    if not procs or not jobs:
        return ""
    top = max(procs, key=amount)
    note = ""
    for job in jobs:
        matching = [p for p in procs if amount(p) > 0 and job.matches(p)]
        if not matching:
            continue
        share = sum(amount(p) for p in matching) / used if used > 0 else 0.0
        if not (share >= 0.5 or any(p.pid == top.pid for p in matching)):
            continue
        matching.sort(key=amount, reverse=True)
        if job.active_at(t):
            return job, matching, min(share, 1.0)
        note = note or _job_note(job, matching, t)
    return note



def _known_job_classification(found: tuple[CompiledJob, list[ProcessInfo], float], verb: str,
                              resource: str) -> Classification:
    """The explanation for busy processes that match a configured known job."""
    job, matching, share = found
    names = ", ".join(proc_label(p) for p in matching[:3])
    when = f", inside its window {job.window_text}" if job.window_text else ""
    return Classification(
        kind="known_job", expected=True, process=matching[0], cause=f"known_job:{job.name}",
        text=(f"known job '{job.name}': {names} match '{job.pattern}' and {verb} "
              f"{share:.0%} of the {resource} in use{when}"),
        likely_cause=f"the known job '{job.name}' is running", confidence=0.8)

def culprits(procs: Sequence[ProcessInfo], amount: Callable[[ProcessInfo], float],
             used: float) -> tuple[list[ProcessInfo], float] | None:
    """The few processes that account for most of what is in use, with their share."""
    if used <= 0:
        return None
    top = sorted((p for p in procs if amount(p) > 0), key=amount, reverse=True)
    named = [p for p in top[:MAX_CULPRITS] if amount(p) / used >= CULPRIT_SHARE]
    share = sum(amount(p) for p in named) / used
    if not named or share < CULPRITS_TOTAL:
        return None
    return named, min(share, 1.0)


def _culprit_cpu(found: tuple[list[ProcessInfo], float], runaway: Pinned, t: float,
                 runaway_s: float, runaway_percent: float, note: str) -> Classification:
    named, share = found
    p = named[0]
    use = p.cpu_percent or 0.0
    if len(named) == 1:
        text = f"{proc_label(p)} uses {use:.0f}% of a core, {share:.0%} of the CPU in use"
    else:
        rest = ", ".join(f"{proc_label(q)} {q.cpu_percent or 0.0:.0f}%" for q in named[1:])
        text = (f"{proc_label(p)} uses {use:.0f}% of a core, {rest}: together {share:.0%} "
                "of the CPU in use")
    pinned = next((since for q, since in runaway.to_list()
                   if (q.pid, q.create_time) == (p.pid, p.create_time)), None)
    if pinned is not None:
        text += (f"; pinned at {runaway_percent:g}% or more for {fmt_duration(t - pinned)} "
                 f"(a runaway after {fmt_duration(runaway_s)})")
    return Classification(
        kind="culprit", process=p, cause=f"culprit:{p.pid}:{p.create_time!r}",
        text=text + note, likely_cause=f"{proc_label(p)} is busy", confidence=0.7)


def classify_cpu(snap: MetricSnapshot, t: float, jobs: Sequence[CompiledJob],
                 runaway: Pinned, runaway_s: float, runaway_percent: float
                 ) -> Classification:
    """Known job, runaway or general load, for a high CPU (or load) alert."""
    procs = snap.processes.top_cpu

    def amount(p: ProcessInfo) -> float:
        return p.cpu_percent or 0.0

    n = cores(snap) or 1
    used = (snap.cpu.percent * n if snap.cpu.percent is not None
            else sum(amount(p) for p in procs))
    found = _known_job(procs, amount, used, jobs, t)
    if not isinstance(found, str):
        return _known_job_classification(found, "use", "CPU")
    note = found
    pinned = runaway.longest(t, runaway_s)
    if pinned is not None:
        p, held = pinned
        return Classification(
            kind="runaway", process=p, cause=f"runaway:{p.pid}:{p.create_time!r}",
            text=(f"runaway: {proc_label(p)} has been pinned at {runaway_percent:g}% CPU or "
                  f"more (now {amount(p):.0f}%) for {fmt_duration(held)}, past the "
                  f"{fmt_duration(runaway_s)} that makes a runaway{note}"),
            likely_cause=f"{proc_label(p)} is stuck in a busy loop or overloaded",
            confidence=0.75)
    named = culprits(procs, amount, used)
    if named is not None:
        return _culprit_cpu(named, runaway, t, runaway_s, runaway_percent, note)
    top = sorted(procs, key=amount, reverse=True)[:3]
    listed = ", ".join(f"{proc_label(p)} {amount(p):.0f}%" for p in top)
    text = ("general load: no single process explains it"
            + (f"; top: {listed}" if listed else "; no process details in this snapshot")
            + note)
    return Classification(kind="general", cause="general", text=text,
                          likely_cause="overall demand is above what this host handles "
                                       "comfortably", confidence=0.5)


def classify_memory(snap: MetricSnapshot, t: float, jobs: Sequence[CompiledJob],
                    leaks: Mapping[ProcKey, float]) -> Classification:
    """Known job, leaking process or general use, for a high memory (or swap) alert."""
    procs = snap.processes.top_memory

    def amount(p: ProcessInfo) -> float:
        return float(p.rss or 0)

    m = snap.memory
    used = float(m.used) if m.used is not None else (
        m.total * m.percent / 100 if m.total and m.percent is not None
        else sum(amount(p) for p in procs))
    found = _known_job(procs, amount, used, jobs, t)
    if not isinstance(found, str):
        return _known_job_classification(found, "hold", "memory")
    note = found
    leaking = [(p, leaks[(p.pid, p.create_time)]) for p in procs
               if (p.pid, p.create_time) in leaks]
    if leaking:
        p, rate = max(leaking, key=lambda pr: pr[1])
        return Classification(
            kind="leak", process=p, cause=f"leak:{p.pid}:{p.create_time!r}",
            text=(f"leak: {proc_label(p)} grows steadily by {rate:.0f} MB/h "
                  f"(now {fmt_bytes(amount(p))}){note}"),
            likely_cause=f"{proc_label(p)} leaks memory", confidence=0.7)
    named = culprits(procs, amount, used)
    if named is not None:
        hogs, share = named
        hog = hogs[0]
        text = f"{proc_label(hog)} holds {fmt_bytes(amount(hog))}"
        if len(hogs) > 1:
            text += ", " + ", ".join(f"{proc_label(q)} {fmt_bytes(amount(q))}"
                                     for q in hogs[1:]) + f": together {share:.0%}"
        else:
            text += f", {share:.0%}"
        return Classification(
            kind="culprit", process=hog, cause=f"culprit:{hog.pid}:{hog.create_time!r}",
            text=text + " of the memory in use" + note,
            likely_cause=f"{proc_label(hog)} holds most of the memory", confidence=0.7)
    top = sorted(procs, key=amount, reverse=True)[:3]
    listed = ", ".join(f"{proc_label(p)} {fmt_bytes(amount(p))}" for p in top)
    text = ("general memory use: no single process explains it"
            + (f"; largest: {listed}" if listed else "; no process details in this snapshot")
            + note)
    return Classification(kind="general", cause="general", text=text,
                          likely_cause="the running workload needs more memory than is free",
                          confidence=0.5)


# --------------------------------------------------------------------------- per tick


def roots_on_mount(mount: str, mounts: Iterable[str], roots: Iterable[str]) -> list[str]:
    """The clean-up roots that live on ``mount`` (the longest mount containing each root)."""

    def contains(m: str, path: str) -> bool:
        base = m.rstrip("/\\")
        return path == m or not base or path.startswith((base + "/", base + "\\"))

    all_mounts = list(mounts)
    out = []
    for root in roots:
        holders = [m for m in all_mounts if contains(m, root)]
        if holders and max(holders, key=len) == mount:
            out.append(root)
    return out


class TickContext:
    """What detectors need to describe alerts at one tick; classifications computed once."""

    def __init__(self, snap: MetricSnapshot, t: float, *, jobs: Sequence[CompiledJob],
                 runaway: Pinned, runaway_s: float, runaway_percent: float,
                 leaks: Callable[[], Mapping[ProcKey, float]],
                 cleanup_roots: Callable[[], Sequence[str]]) -> None:
        self.snap = snap
        self.t = t
        self._jobs = jobs
        self._runaway = runaway
        self._runaway_s = runaway_s
        self._runaway_percent = runaway_percent
        self._leaks = leaks
        self._roots = cleanup_roots
        self._cpu: Classification | None = None
        self._memory: Classification | None = None

    @property
    def cpu(self) -> Classification:
        """Why CPU is busy right now."""
        if self._cpu is None:
            self._cpu = classify_cpu(self.snap, self.t, self._jobs, self._runaway,
                                     self._runaway_s, self._runaway_percent)
        return self._cpu

    @property
    def memory(self) -> Classification:
        """Why memory is full right now."""
        if self._memory is None:
            self._memory = classify_memory(self.snap, self.t, self._jobs, self._leaks())
        return self._memory

    def roots_on(self, mount: str) -> list[str]:
        """Configured clean-up roots on this mount (empty: do not suggest clean_disk)."""
        roots = self._roots()
        if not roots:
            return []
        return roots_on_mount(mount, (d.mountpoint for d in self.snap.disks), roots)
