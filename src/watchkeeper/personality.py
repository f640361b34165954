"""How watchkeeper talks in its logs: personality levels, status marks, witty one-liners.

Levels (``personality.level``): ``off`` plain words, no emoji, no quips; ``professional``
emoji as status marks (🔥 ✅ 🔧), no jokes; ``witty`` (default) the marks, the few witty
wordings, and the Commentator's one-liners about notable host states. All of it is for logs
(and notification text) only: never put a mark or a quip into an event, an API answer, the
status file or a metric.

Variants are picked from the snapshot's ``seq`` rather than at random, so a given snapshot
always gets the same line (stable tests, reproducible logs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from watchkeeper.config import PersonalityLevel, Thresholds
from watchkeeper.events import MetricSnapshot

#: Zombie counts worth a remark (a few transient zombies are normal).
ZOMBIES_WARNING = 5
ZOMBIES_CRITICAL = 50
#: 1-minute load average per logical core worth a remark.
LOAD_PER_CORE_WARNING = 2.0
LOAD_PER_CORE_CRITICAL = 4.0

# A state clears only this far below its threshold, so a value hovering around the line
# doesn't produce a comment on every tick.
_PERCENT_MARGIN = 5.0
_LOAD_MARGIN = 0.25
_ZOMBIE_MARGIN = 1.0

# Which state is talked about when several are notable at the same level.
_PRIORITY = ("memory", "swap", "disk", "cpu", "load", "zombies")

_LINES: dict[tuple[str, int], tuple[str, ...]] = {
    ("cpu", 1): (
        "CPU at {value:.0f}%: spiking harder than my coffee intake.",
        "CPU's at {value:.0f}% and starting to sweat.",
        "CPU at {value:.0f}%: somebody's keeping the cores busy.",
    ),
    ("cpu", 2): (
        "CPU at {value:.0f}%: the cores are running a marathon at sprint pace.",
        "CPU pinned at {value:.0f}%: it's getting toasty in here.",
        "CPU at {value:.0f}%: spiking harder than my coffee intake on a Monday.",
    ),
    ("memory", 1): (
        "Memory at {value:.0f}%: RAM is getting crowded.",
        "Memory at {value:.0f}%: every byte is looking for a roommate.",
        "Memory at {value:.0f}%: the RAM is packing things in tight.",
    ),
    ("memory", 2): (
        "Memory at {value:.0f}%: one browser tab away from trouble.",
        "Memory at {value:.0f}%: standing room only in RAM.",
        "Memory at {value:.0f}%: the OOM killer is sharpening its pencil.",
    ),
    ("swap", 1): (
        "Swap at {value:.0f}%: the disk is doing RAM's homework.",
        "Swap at {value:.0f}%: we're paging like it's 1999.",
        "Swap at {value:.0f}%: pages are commuting between RAM and disk.",
    ),
    ("swap", 2): (
        "Swap at {value:.0f}%: thrashing harder than a drummer's encore.",
        "Swap at {value:.0f}%: the disk has become very expensive RAM.",
        "Swap at {value:.0f}%: everything is waiting on page faults.",
    ),
    ("disk", 1): (
        "{mount} is {value:.0f}% full: time to take out the trash.",
        "{mount} at {value:.0f}%: the filesystem is feeling snug.",
        "{mount} is {value:.0f}% full: those logs won't rotate themselves.",
    ),
    ("disk", 2): (
        "{mount} is {value:.0f}% full: basically a packed suitcase.",
        "{mount} at {value:.0f}%: one more log line and it's over.",
        "{mount} is {value:.0f}% full: find the big files before they find us.",
    ),
    ("load", 1): (
        "Load {value:.1f} per core: the run queue is longer than the coffee line.",
        "Load {value:.1f} per core: everyone wants a turn on the CPU.",
        "Load {value:.1f} per core: the scheduler is earning its salary today.",
    ),
    ("load", 2): (
        "Load {value:.1f} per core: the run queue is out the door and around the block.",
        "Load {value:.1f} per core: the scheduler would like a word.",
        "Load {value:.1f} per core: more waiting than running.",
    ),
    ("zombies", 1): (
        "{value:.0f} zombie processes: someone isn't reaping their children.",
        "{value:.0f} zombies shambling around the process table.",
        "{value:.0f} zombies: a parent process is ignoring its kids.",
    ),
    ("zombies", 2): (
        "{value:.0f} zombies: the process table is a full-blown horror movie.",
        "{value:.0f} zombies: time to find the parent that stopped calling wait().",
        "{value:.0f} zombies and counting: the undead are unionising.",
    ),
}

_RECOVERY: dict[str, tuple[str, ...]] = {
    "cpu": (
        "CPU's back to sipping decaf.",
        "CPU has calmed down; the cores say thanks.",
        "CPU is back to a comfortable hum.",
    ),
    "memory": (
        "Memory has room to breathe again.",
        "Memory is back to normal; the RAM can stretch its legs.",
        "Memory pressure eased. Carry on.",
    ),
    "swap": (
        "Swap has settled down; pages are staying put.",
        "Swap is quiet again. The disk can go back to being a disk.",
    ),
    "disk": (
        "{mount} has some elbow room again.",
        "{mount} is back under control. Nice cleanup.",
    ),
    "load": (
        "Load is back to a manageable queue.",
        "Run queue cleared. The scheduler can take a breather.",
    ),
    "zombies": (
        "The zombies have been laid to rest.",
        "Process table is zombie-free again.",
    ),
}

_ALL_CLEAR = (
    "All clear: back to boring, just how I like it.",
    "Everything's back to normal. Nothing to see here.",
)


def mark(level: PersonalityLevel, icon: str) -> str:
    """``icon`` and a space to start a log line with, or nothing at level off."""
    return "" if level == "off" else f"{icon} "


def wording(level: PersonalityLevel, plain: str, witty: str) -> str:
    """The witty wording of a log line at level witty, else the plain one."""
    return witty if level == "witty" else plain


@dataclass(frozen=True)
class Notable:
    """One judged state: ``key`` is the family, or ``disk:<mount>``; level 0 means normal."""

    key: str
    level: int
    value: float

    @property
    def family(self) -> str:
        """The family part of the key (``disk`` for ``disk:/var``)."""
        return self.key.split(":", 1)[0]

    @property
    def mount(self) -> str:
        """The mount point of a disk state, else empty."""
        return self.key.split(":", 1)[1] if ":" in self.key else ""


def _level(value: float, warning: float, critical: float, previous: int, margin: float) -> int:
    if value >= critical or (previous >= 2 and value >= critical - margin):
        return 2
    if value >= warning or (previous >= 1 and value >= warning - margin):
        return 1
    return 0


def assess(
    snapshot: MetricSnapshot, thresholds: Thresholds, previous: Mapping[str, int] | None = None
) -> dict[str, Notable]:
    """Level of every family the snapshot has a value for (``previous`` adds hysteresis)."""
    prev = previous or {}
    out: dict[str, Notable] = {}

    def judge(key: str, value: float | None, warn: float, crit: float, margin: float) -> None:
        if value is not None:
            out[key] = Notable(key, _level(value, warn, crit, prev.get(key, 0), margin), value)

    th = thresholds
    judge("cpu", snapshot.cpu.percent, th.cpu_warning, th.cpu_critical, _PERCENT_MARGIN)
    judge("memory", snapshot.memory.percent, th.memory_warning, th.memory_critical,
          _PERCENT_MARGIN)
    # A host without swap reports 0 %; only swap actually in use can thrash.
    if snapshot.memory.swap_total:
        judge("swap", snapshot.memory.swap_percent, th.swap_warning, th.swap_critical,
              _PERCENT_MARGIN)
    for disk in snapshot.disks:
        judge(f"disk:{disk.mountpoint}", disk.percent, th.disk_warning, th.disk_critical,
              _PERCENT_MARGIN)
    cores = snapshot.cpu.count_logical
    if snapshot.cpu.load_1 is not None and cores:
        judge("load", snapshot.cpu.load_1 / cores, LOAD_PER_CORE_WARNING,
              LOAD_PER_CORE_CRITICAL, _LOAD_MARGIN)
    zombies = snapshot.processes.zombies
    judge("zombies", None if zombies is None else float(zombies), ZOMBIES_WARNING,
          ZOMBIES_CRITICAL, _ZOMBIE_MARGIN)
    return out


def _rank(n: Notable) -> tuple[int, int, str]:
    return (-n.level, _PRIORITY.index(n.family), n.key)


def _pick(variants: tuple[str, ...], seq: int) -> str:
    return variants[seq % len(variants)]


def line_for(state: Notable, seq: int) -> str:
    """The one-liner for a notable state (variant chosen by ``seq``)."""
    template = _pick(_LINES[(state.family, min(state.level, 2))], seq)
    return template.format(value=state.value, mount=state.mount)


def recovery_line(key: str, seq: int) -> str:
    """The one-liner for a state that went back to normal."""
    family = key.split(":", 1)[0]
    mount = key.split(":", 1)[1] if ":" in key else ""
    return _pick(_RECOVERY[family], seq).format(mount=mount)


def comment_for(snapshot: MetricSnapshot, thresholds: Thresholds) -> str | None:
    """A one-liner about the most notable state of ``snapshot``, or None if nothing is."""
    notable = [n for n in assess(snapshot, thresholds).values() if n.level > 0]
    if not notable:
        return None
    return line_for(min(notable, key=_rank), snapshot.seq)


class Commentator:
    """Comments only when the set of notable states changes: once on the way in, once out."""

    def __init__(self, thresholds: Thresholds, *, enabled: bool = True) -> None:
        self.thresholds = thresholds
        self.enabled = enabled
        self._levels: dict[str, int] = {}

    @property
    def active(self) -> dict[str, int]:
        """Currently notable states and their levels (1 warning, 2 critical)."""
        return dict(self._levels)

    def observe(self, snapshot: MetricSnapshot) -> str | None:
        """Update the state from ``snapshot``; a line if a state appeared, rose or cleared."""
        assessed = assess(snapshot, self.thresholds, self._levels)
        missing = {m.key for m in snapshot.missing}
        levels: dict[str, int] = {}
        for key, old in self._levels.items():
            # A value we could not read this tick is not a recovery: keep the old state.
            # A mount that is simply gone (unmounted) is dropped without a word.
            unreadable = key not in assessed and (
                not key.startswith("disk:") or key in missing
            )
            if unreadable:
                levels[key] = old
        levels.update({k: n.level for k, n in assessed.items() if n.level > 0})
        risen = [assessed[k] for k, lvl in levels.items()
                 if k in assessed and lvl > self._levels.get(k, 0)]
        cleared = sorted(
            (k for k in self._levels if k not in levels and k in assessed),
            key=lambda k: (_PRIORITY.index(k.split(":", 1)[0]), k),
        )
        self._levels = levels
        if not self.enabled:
            return None
        if risen:
            return line_for(min(risen, key=_rank), snapshot.seq)
        if cleared:
            if not levels and len(cleared) > 1:
                return _pick(_ALL_CLEAR, snapshot.seq)
            return recovery_line(cleared[0], snapshot.seq)
        return None
