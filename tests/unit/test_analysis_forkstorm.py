"""Fork storms: the process count rising by analyzer.fork_storm_processes (100) within
fork_storm_window_s (60 s) and held for for_s (30 s) is an alert named by the group of
same-named processes that grew most; it resolves when they are gone or the count settled."""

from __future__ import annotations

from collections.abc import Callable

from tests.unit.test_analysis_streams import Stream, analyzer, lifecycle, only, settings
from watchkeeper.analysis.engine import Analyzer
from watchkeeper.analysis.forkstorm import FORK_STORM_RULE
from watchkeeper.events import Alert, NameCount, ProcessSummary

BASE = 200
NAME = "wk-sim-forkstor"  # the kernel keeps 15 characters of a name


def feed(an: Analyzer, s: Stream, counts: list[int | None],
         culprit: Callable[[int], int] = lambda extra: 1 + extra) -> list[tuple[int, Alert]]:
    """One snapshot per count; the processes above BASE are the culprit's children."""
    out = []
    for i, n in enumerate(counts):
        snap = s.snap(total_procs=n)
        if n is not None:
            names = (NameCount(name=NAME, count=culprit(max(0, n - BASE))),
                     NameCount(name="bash", count=9))
            snap = snap.model_copy(update={"processes": ProcessSummary(
                total=n, zombies=0, top_names=names)})
        out += [(i, a) for a in an.observe(snap)]
    return out


def storms(events: list[tuple[int, Alert]]) -> list[tuple[int, str]]:
    return [(i, a.state) for i, a in events if a.rule == FORK_STORM_RULE
            and a.labels.get("change") != "value"]


def test_a_fork_storm_is_named_within_for_s_and_resolves_when_its_processes_are_gone() -> None:
    an = analyzer()  # defaults: +100 within 60 s, held for 30 s
    # 12 quiet ticks; 150 processes forked over 15 s; held 60 s; gone.
    counts = [BASE] * 12 + [BASE + 50, BASE + 100, BASE + 150] + [BASE + 150] * 12 + [BASE] * 2
    events = feed(an, Stream(), counts)
    got = storms(events)
    assert [s for _, s in got] == ["firing", "resolved"]
    crossed = 13  # the tick the rise reached 100
    assert crossed + 6 <= got[0][0] <= crossed + 7  # 30 s at 5 s ticks, at most one more
    assert got[1][0] == 27  # the first tick without them
    alert = next(a for _, a in events if a.rule == FORK_STORM_RULE)
    assert alert.severity == "warning" and alert.metric == "processes.total"
    assert alert.summary.startswith("Fork storm: 350 processes, 150 more than before it began")
    assert f"most of them are {NAME} (151 now, 1 before)" in alert.summary
    assert alert.labels["before"] == "200" and alert.labels["process"] == NAME
    assert [x.action for x in alert.suggested_actions] == ["notify_only"]
    resolved = [a for _, a in events if a.rule == FORK_STORM_RULE and a.state == "resolved"]
    assert resolved[0].summary.startswith("No fork storm any more: 200 processes, +0 from")


def test_slow_growth_a_short_burst_and_an_unread_count_are_no_storm() -> None:
    an = analyzer()
    slow = [BASE + i // 3 for i in range(360)]  # +120 over 30 min: +3 a minute
    burst = [slow[-1]] * 6 + [slow[-1] + 150] * 5 + [slow[-1]] * 6  # make -j: 25 s
    unread: list[int | None] = [None] * 20 + [slow[-1]] * 3
    assert storms(feed(an, Stream(), [*slow, *burst, *unread])) == []


def test_a_count_that_settles_at_a_new_level_resolves_and_does_not_fire_again() -> None:
    an = analyzer()
    # A pool that scaled up by 150 workers and stays: 10 windows (10 min) without growth.
    counts = [BASE] * 6 + [BASE + 150] * 140
    events = feed(an, Stream(), counts)
    got = storms(events)
    assert [s for _, s in got] == ["firing", "resolved"]
    assert got[1][0] == 6 + 600 // 5  # ten windows after the count last grew
    resolved = [a for i, a in events if a.rule == FORK_STORM_RULE and a.state == "resolved"]
    assert "it settled at 350 processes (no growth for 10 min)" in resolved[0].summary


def test_the_threshold_and_window_are_settings() -> None:
    an = analyzer(settings(analyzer={"fork_storm_processes": 40, "fork_storm_window_s": 20,
                                     "for_s": 10}))
    counts = [BASE] * 6 + [BASE + 45] * 4 + [BASE] * 2
    assert [s for _, s in storms(feed(an, Stream(), counts))] == ["firing", "resolved"]
    # +45 spread over 60 s is under +40 within any 20 s: no storm.
    an = analyzer(settings(analyzer={"fork_storm_processes": 40, "fork_storm_window_s": 20,
                                     "for_s": 10}))
    slow = [BASE] * 6 + [BASE + 4 * i for i in range(12)] + [BASE + 44] * 6
    assert storms(feed(an, Stream(), slow)) == []


def test_a_firing_storm_survives_a_restart_and_resolves_when_it_ends() -> None:
    s = Stream()
    first = analyzer()
    events = feed(first, s, [BASE] * 6 + [BASE + 150] * 10)
    open_alerts = [a for _, a in events if a.rule == FORK_STORM_RULE and a.state == "firing"]
    assert open_alerts
    second = analyzer()
    kept = second.restore([open_alerts[-1]])
    assert [a.rule for a in kept] == [FORK_STORM_RULE]
    # Still up: nothing new; back to the level before it began: resolved.
    assert only(lifecycle([a for _, a in feed(second, s, [BASE + 150] * 3)]),
                rule=FORK_STORM_RULE) == []
    after = feed(second, s, [BASE])
    assert [(a.state, a.labels["change"]) for _, a in after if a.rule == FORK_STORM_RULE] == [
        ("resolved", "resolved")]


def test_a_hostile_hosts_group_names_are_bounded_and_printable() -> None:
    # A central reads other hosts' lists: a name with terminal escapes, a huge one, and a
    # thousand groups cost no more than five printable names of 128 characters at most.
    an = analyzer()
    s = Stream()
    evil = "\x1b]0;owned\x07" + "x" * 10_000
    out: list[Alert] = []
    for i in range(20):
        n = BASE if i < 6 else BASE + 150
        groups = (NameCount(name=evil, count=1 + (n - BASE)),
                  *(NameCount(name=f"g{k}", count=1) for k in range(1000)))
        snap = s.snap(total_procs=n)
        out += an.observe(snap.model_copy(update={"processes": ProcessSummary(
            total=n, top_names=groups)}))
    alert = only(out, rule=FORK_STORM_RULE)[0]
    assert "\x1b" not in alert.summary and "\x07" not in alert.summary
    # 128 characters of the name are kept (escapes spelled out), and the cut is marked.
    assert len(alert.labels["process"]) < 200 and alert.labels["process"].endswith("…")
