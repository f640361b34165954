"""Forecasts: disk-full ETA from the trend, and memory leaks from steady RSS growth."""

from __future__ import annotations

import random
import re

import pytest

from tests.unit.test_analysis_streams import GB, START, Stream, analyzer, disk, only, proc
from watchkeeper.analysis.forecast import DISK_RULE, LEAK_RULE, least_squares, theil_sen
from watchkeeper.events import Alert

TOTAL = 100 * GB


def filling(free0: float, gb_per_hour: float, noise_mb: float = 50.0, seed: int = 3,
            mount: str = "/data") -> object:
    """Mounts where ``mount`` loses ``gb_per_hour`` of free space, with noise."""
    rng = random.Random(seed)

    def at(i: int) -> list:  # type: ignore[type-arg]
        free = free0 - gb_per_hour * GB * (i * 5 / 3600) + rng.uniform(-1, 1) * noise_mb * 1e6
        return [disk("/", 40), disk(mount, 100 * (1 - free / TOTAL), free=free, total=TOTAL)]

    return at


def true_eta_h(free0: float, gb_per_hour: float, i: int) -> float:
    return (free0 / GB - gb_per_hour * i * 5 / 3600) / gb_per_hour


def test_a_filling_disk_gets_an_eta_within_20_percent_and_severity_by_horizon() -> None:
    an = analyzer()  # horizon 6 h, critical 1 h, window 60 min
    s = Stream()
    free0, rate = 30 * GB, 6.0  # full in 5 h
    fn = filling(free0, rate)
    events: list[tuple[int, Alert]] = []
    for i in range(int(4.5 * 720)):
        events += [(i, a) for a in an.observe(s.snap(disks=fn(i))) if a.rule == DISK_RULE]
    changes = [(a.labels["change"], a.severity) for _, a in events
               if a.labels["change"] != "value"]
    assert changes == [("new", "warning"), ("escalated", "critical")]
    for i, a in events:
        assert a.value is not None
        truth = true_eta_h(free0, rate, i)
        assert abs(a.value - truth) <= 0.2 * truth, (a.value, truth)
        assert a.dimension == "/data" and a.metric == "disk.full_eta_hours"
        assert "R²" in a.summary and "points" in a.summary and "confidence" in a.summary
        assert a.assessment is not None and 0 < a.assessment.confidence <= 1
    warning, critical = [a for _, a in events if a.labels["change"] != "value"]
    assert warning.threshold == 6.0 and critical.threshold == 1.0
    stated = re.search(r"free space falls by ([0-9.]+) GB/h", warning.summary)
    assert stated is not None and abs(float(stated.group(1)) - rate) <= 0.3
    # Forecast early, from the first minutes of trend: well before the 85 % rule would fire.
    assert events[0][0] < 120


def test_a_cleanup_resolves_the_forecast() -> None:
    an = analyzer()
    s = Stream()
    fn = filling(20 * GB, 6.0)
    assert only(s.feed(an, 240, disks=fn), "new", DISK_RULE)
    after = s.feed(an, 30, disks=[disk("/", 40), disk("/data", 30)])
    assert [a.state for a in after if a.rule == DISK_RULE] == ["resolved"]


def test_flat_shrinking_or_stepped_disks_get_no_forecast() -> None:
    rng = random.Random(5)
    flat = Stream().feed(analyzer(), 1440, disks=lambda i: [
        disk("/data", 80 + rng.uniform(-0.3, 0.3))])
    shrinking = Stream().feed(analyzer(), 1440, disks=filling(10 * GB, -3.0))
    for alerts in (flat, shrinking):
        assert only(alerts, rule=DISK_RULE) == []


@pytest.mark.parametrize("step_at", [100, 300, 420, 600])
def test_a_one_off_step_is_not_extrapolated(step_at: int) -> None:
    # a big file copied in (50 % -> 80 % in one tick), then nothing
    stepped = Stream().feed(analyzer(), 1440, disks=lambda i: [
        disk("/data", 50 if i < step_at else 80)])
    assert only(stepped, rule=DISK_RULE) == []


def test_fits_recover_a_known_line_and_report_its_quality() -> None:
    rng = random.Random(2)
    points = [(60.0 * i, 1000 - 2.0 * 60 * i + rng.uniform(-5, 5)) for i in range(40)]
    points[7] = (points[7][0], 5000.0)  # one wild outlier
    robust = theil_sen(points)
    assert robust is not None and abs(robust.slope - -2.0) < 0.02
    plain = least_squares(points[8:])
    assert plain is not None and abs(plain.slope - -2.0) < 0.05 and plain.r2 > 0.99
    assert plain.n == 32


def leaking(pid: int, mb_per_hour: float, *, noise_mb: float, seed: int) -> object:
    rng = random.Random(seed)

    def at(i: int) -> list:  # type: ignore[type-arg]
        rss = 500e6 + mb_per_hour * 1e6 * i * 5 / 3600 + rng.uniform(-1, 1) * noise_mb * 1e6
        return [proc(pid, f"app{pid}", rss=rss, create_time=1000.0 + pid)]

    return at


def test_a_leaking_process_is_detected_with_its_rate_and_a_noisy_one_is_not() -> None:
    an = analyzer()  # leak: >= 50 MB/h over >= 30 min
    s = Stream()
    leak = leaking(4242, 120.0, noise_mb=5, seed=1)
    noisy = leaking(777, 0.0, noise_mb=60, seed=2)
    slow = leaking(888, 20.0, noise_mb=1, seed=3)
    # Trending up at 60 MB/h but jumping ±200 MB between samples: growth, not steady.
    jumpy = leaking(999, 60.0, noise_mb=200, seed=4)
    alerts = s.feed(an, 720, top_memory=lambda i: leak(i) + noisy(i) + slow(i) + jumpy(i))
    leaks = only(alerts, rule=LEAK_RULE)
    assert [(a.labels["change"], a.dimension) for a in leaks] == [("new", "app4242[4242]")]
    a = leaks[0]
    assert a.value is not None and abs(a.value - 120.0) < 12
    assert a.labels["pid"] == "4242" and float(a.labels["create_time"]) == 5242.0
    assert "leaks memory" in a.summary and "MB/h" in a.summary and "R²" in a.summary
    # Not before it has been watched for leak_min_minutes.
    assert (a.since - START).total_seconds() >= 30 * 60


def test_a_restarted_process_with_the_same_pid_is_a_different_process() -> None:
    an = analyzer()
    s = Stream()

    def sawtooth(i: int) -> list:  # type: ignore[type-arg]
        # Restarted every 10 minutes (new create_time), growing fast in between.
        life = i // 120
        rss = 300e6 + (i % 120) * 2e6
        return [proc(4242, "worker", rss=rss, create_time=1000.0 + life)]

    # 1.44 GB/h would exhaust 8 GB within the horizon and be named early (see below);
    # with 64 GB available only the slow rule's 30 minutes apply, which no life reaches.
    assert only(s.feed(an, 1440, top_memory=sawtooth, available=64 * GB),
                rule=LEAK_RULE) == []


def test_a_leak_that_would_exhaust_memory_within_the_horizon_is_named_within_5_minutes(
        ) -> None:
    an = analyzer()  # defaults: horizon 6 h
    s = Stream()
    fast = leaking(4242, 2000.0, noise_mb=2, seed=1)  # 8 GB available: gone in about 4 h
    alerts = only(s.feed(an, 12 * 12, top_memory=fast), rule=LEAK_RULE)
    assert [a.labels["change"] for a in alerts] == ["new"]
    (a,) = alerts
    named_after = (a.at - START).total_seconds()
    assert named_after <= 5 * 60, named_after
    assert a.value is not None and abs(a.value - 2000.0) < 100
    assert "still available last about" in a.summary


def test_a_leak_resolves_30_s_after_its_process_left_the_list_and_not_for_one_tick() -> None:
    an = analyzer()
    s = Stream()
    fast = leaking(4242, 2000.0, noise_mb=2, seed=1)
    other = [proc(1, "init", rss=10e6, create_time=1.0)]
    alerts = only(s.feed(an, 12 * 12, top_memory=lambda i: fast(i) + other), rule=LEAK_RULE)
    assert [a.labels["change"] for a in alerts] == ["new"]
    # Out of the list for one tick (at the list's edge): nothing; the list missing for a
    # minute (an unreadable tick says nothing about who left it): nothing either.
    assert only(s.feed(an, 1, top_memory=other), rule=LEAK_RULE, change="resolved") == []
    assert only(s.feed(an, 2, top_memory=lambda i: fast(144 + i) + other), rule=LEAK_RULE,
                change="resolved") == []
    assert only(s.feed(an, 12, top_memory=[]), rule=LEAK_RULE, change="resolved") == []
    # Killed: resolved after 30 s (6 readings at 5 s), not after the 5 minutes of a
    # dimension that is gone.
    ticks = [only(s.feed(an, 1, top_memory=other), rule=LEAK_RULE, change="resolved")
             for _ in range(12)]
    assert [i for i, got in enumerate(ticks) if got] == [5]  # the sixth reading without it
    assert "not among the largest processes for 30 s: it exited or shrank" in ticks[5][0].summary


@pytest.mark.parametrize(("what", "rss", "available"), [
    ("slow-leak-with-plenty-of-memory", lambda i: 500e6 + 100e6 * i * 5 / 3600, 8 * GB),
    ("fast-growth-with-far-more-memory", lambda i: 500e6 + 2000e6 * i * 5 / 3600, 64 * GB),
    ("start-up-burst-then-flat", lambda i: 200e6 + min(i, 6) * 50e6, 8 * GB),
    ("fast-but-jumping-by-more-than-it-grows", lambda i: 900e6 + 2000e6 * i * 5 / 3600
     + random.Random(i).uniform(-600e6, 600e6), 8 * GB),
], ids=lambda v: v if isinstance(v, str) else "")
def test_no_early_verdict_for_what_would_not_exhaust_memory_or_is_not_steady(
        what: str, rss: object, available: float) -> None:
    an = analyzer()
    s = Stream()
    grow = rss  # a function of the tick

    def top(i: int) -> list:  # type: ignore[type-arg]
        return [proc(4242, "app", rss=grow(i), create_time=1000.0)]  # type: ignore[operator]

    assert only(s.feed(an, 20 * 12, top_memory=top, available=available),
                rule=LEAK_RULE) == [], what


@pytest.mark.parametrize("flat_minutes", [0, 60], ids=["fresh", "after-an-hour-flat"])
def test_a_1mb_per_s_fill_is_forecast_before_it_crosses_the_warning_threshold(
        flat_minutes: int) -> None:
    # Default settings. A 10 GiB filesystem 240 MB under its 85 % warning line, filling at
    # 1 MiB/s (synced each second; statvfs counts 4 KiB blocks): it crosses 85 % after
    # about 4 minutes. With an hour of flat history the window's fit alone would wait until
    # the fall held half its buckets.
    an = analyzer()
    s = Stream()
    total = 10 * (1 << 30)
    free0 = 0.15 * total + 240e6

    def mounts(filled: float) -> list:  # type: ignore[type-arg]
        free = (int(free0 - filled) // 4096) * 4096
        return [disk("/", 40), disk("/data", 100 * (1 - free / total), free=free,
                                    total=total)]

    assert not s.feed(an, flat_minutes * 12, disks=mounts(0))
    first: dict[str, int] = {}
    fired: list[Alert] = []
    for i in range(120):  # 10 minutes at 5 s
        for a in an.observe(s.snap(disks=mounts(float(i * 5 * (1 << 20))))):
            if a.dimension == "/data" and a.state == "firing":
                first.setdefault(a.rule, i * 5)
                fired.append(a)
    crossed = next(i * 5 for i in range(120) if 100 * (1 - (free0 - i * 5 * (1 << 20)) / total)
                   >= 85)
    assert DISK_RULE in first and "threshold" in first, first
    assert first[DISK_RULE] < crossed <= first["threshold"], (first, crossed)
    assert first[DISK_RULE] <= 150
    forecast = next(a for a in fired if a.rule == DISK_RULE)
    assert forecast.severity == "critical"  # full within the hour at this rate
    assert "a fast fill" in forecast.summary
    assert forecast.assessment is not None and forecast.assessment.confidence >= 0.5


def test_a_short_burst_of_writes_is_not_forecast_as_a_fast_fill() -> None:
    # 20 s of writing 50 MB/s on a disk with 5 GB free (full in 100 s at that rate), then
    # nothing: a file copied in, not a fill.
    an = analyzer()
    s = Stream()
    total = 100 * GB

    def mounts(i: int) -> list:  # type: ignore[type-arg]
        free = 5 * GB - 50e6 * 5 * min(max(i - 24, 0), 4)
        return [disk("/data", 100 * (1 - free / total), free=free, total=total)]

    alerts = [a for i in range(24 + 60) for a in an.observe(s.snap(disks=mounts(i)))]
    assert only(alerts, rule=DISK_RULE) == []
