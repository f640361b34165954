"""Witty one-liners: which states are notable, stable variants, comments only on change."""

from __future__ import annotations

from typing import Any

import pytest

from watchkeeper.config import Thresholds
from watchkeeper.events import (
    CpuStats,
    DiskUsage,
    MemoryStats,
    MetricSnapshot,
    Missing,
    ProcessSummary,
)
from watchkeeper.personality import _ALL_CLEAR, _LINES, _RECOVERY, Commentator, comment_for

TH = Thresholds()


def snap(
    seq: int = 1,
    cpu: float | None = 10.0,
    mem: float | None = 30.0,
    swap: float = 0.0,
    swap_total: int = 1024,
    disks: dict[str, float] | None = None,
    load: float = 0.5,
    cores: int = 4,
    zombies: int = 0,
    missing: tuple[str, ...] = (),
) -> MetricSnapshot:
    return MetricSnapshot(
        host="h",
        seq=seq,
        interval_s=5.0,
        cpu=CpuStats(percent=cpu, load_1=load, count_logical=cores),
        memory=MemoryStats(percent=mem, swap_percent=swap, swap_total=swap_total),
        disks=tuple(DiskUsage(mountpoint=m, device="/dev/x", fstype="ext4", percent=p)
                    for m, p in (disks or {"/": 40.0}).items()),
        processes=ProcessSummary(zombies=zombies),
        missing=tuple(Missing(key=k, reason="timed out after 2s") for k in missing),
    )


def test_calm_host_gets_no_comment() -> None:
    assert comment_for(snap(), TH) is None


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"cpu": 80.0}, "80%"),
    ({"cpu": 97.0}, "97%"),
    ({"mem": 90.0}, "Memory at 90%"),
    ({"swap": 85.0}, "Swap at 85%"),
    ({"disks": {"/": 40.0, "/var": 96.0}}, "/var"),
    ({"zombies": 7}, "7 zombie"),
    ({"load": 10.0, "cores": 4}, "2.5 per core"),
])
def test_notable_states_get_a_line(kwargs: dict[str, Any], needle: str) -> None:
    line = comment_for(snap(**kwargs), TH)
    assert line is not None and needle in line


def test_variants_are_chosen_by_seq_and_stable() -> None:
    lines = {comment_for(snap(seq=s, cpu=80.0), TH) for s in range(6)}
    assert len(lines) == 3
    assert comment_for(snap(seq=4, cpu=80.0), TH) == comment_for(snap(seq=4, cpu=80.0), TH)
    assert comment_for(snap(seq=0, cpu=80.0), TH) == (
        "CPU at 80%: spiking harder than my coffee intake.")


def test_worst_state_wins() -> None:
    line = comment_for(snap(cpu=80.0, mem=97.0, disks={"/": 86.0}), TH)
    assert line is not None and line.startswith("Memory at 97%")


def test_no_swap_means_no_swap_comment() -> None:
    assert comment_for(snap(swap=100.0, swap_total=0), TH) is None


def test_every_line_formats_and_stays_short() -> None:
    for (_family, _level), variants in _LINES.items():
        for template in variants:
            text = template.format(value=99.0, mount="/var/lib/postgresql")
            assert 10 < len(text) <= 100
    for variants in (*_RECOVERY.values(), _ALL_CLEAR):
        for template in variants:
            assert len(template.format(mount="/var")) <= 100


def test_commentator_speaks_on_change_only() -> None:
    c = Commentator(TH)
    assert c.observe(snap(1)) is None
    first = c.observe(snap(2, cpu=80.0))
    assert first is not None and "CPU" in first
    assert [c.observe(snap(s, cpu=82.0)) for s in range(3, 8)] == [None] * 5
    worse = c.observe(snap(8, cpu=96.0))          # warning -> critical: worth a line
    assert worse is not None and "96%" in worse
    assert c.observe(snap(9, cpu=84.0)) is None    # easing off within the band: quiet
    assert c.observe(snap(9, cpu=30.0)) == "CPU's back to sipping decaf."
    assert [c.observe(snap(s)) for s in range(10, 14)] == [None] * 4
    assert c.active == {}


def test_hovering_around_a_threshold_is_one_comment() -> None:
    c = Commentator(TH)
    lines = [c.observe(snap(s, cpu=v)) for s, v in enumerate([74, 76, 74, 76, 73, 76, 71.5])]
    assert sum(line is not None for line in lines) == 1
    assert c.observe(snap(9, cpu=60.0)) is not None   # well below: recovered


def test_unreadable_value_is_not_a_recovery() -> None:
    c = Commentator(TH)
    assert c.observe(snap(1, mem=96.0)) is not None
    assert c.observe(snap(2, mem=None, missing=("memory",))) is None
    assert c.active == {"memory": 2}
    assert c.observe(snap(3, mem=40.0)) is not None


def test_disk_states_follow_their_mount() -> None:
    c = Commentator(TH)
    line = c.observe(snap(1, disks={"/": 40.0, "/data": 97.0}))
    assert line is not None and "/data" in line
    # Unreadable this tick (hung NFS): keep the state, say nothing.
    assert c.observe(snap(2, disks={"/": 40.0}, missing=("disk:/data",))) is None
    assert c.active == {"disk:/data": 2}
    recovery = c.observe(snap(3, disks={"/": 40.0, "/data": 50.0}))
    assert recovery is not None and "/data" in recovery
    # Full again, then unmounted: dropped without a word.
    assert c.observe(snap(4, disks={"/": 40.0, "/data": 97.0})) is not None
    assert c.observe(snap(5, disks={"/": 40.0})) is None
    assert c.active == {}


def test_several_states_clearing_at_once_get_one_all_clear() -> None:
    c = Commentator(TH)
    c.observe(snap(1, cpu=95.0, mem=96.0, zombies=9))
    assert c.observe(snap(2)) in _ALL_CLEAR
    assert c.observe(snap(3)) is None


def test_new_state_is_announced_while_another_continues() -> None:
    c = Commentator(TH)
    c.observe(snap(1, cpu=95.0))
    line = c.observe(snap(2, cpu=95.0, disks={"/": 90.0}))
    assert line is not None and "/ " in line + " "
    partial = c.observe(snap(3, cpu=95.0))
    assert partial is not None and "/" in partial   # the disk recovered, CPU still high


def test_disabled_commentator_stays_silent_but_tracks_state() -> None:
    c = Commentator(TH, enabled=False)
    assert c.observe(snap(1, cpu=99.0)) is None
    assert c.active == {"cpu": 2}
    c.enabled = True
    assert c.observe(snap(2, cpu=99.0)) is None          # not a change
    assert c.observe(snap(3, cpu=10.0)) is not None
