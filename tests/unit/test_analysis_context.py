"""Context of high CPU and memory: known jobs, runaways, leaks, general load."""

from __future__ import annotations

import random
from datetime import datetime, timezone

from tests.unit.test_analysis_streams import Stream, analyzer, only, proc, settings
from watchkeeper.analysis.context import compile_jobs
from watchkeeper.config import KnownJob
from watchkeeper.events import Alert

BACKUP = {"name": "nightly-backup", "match": "*restic*", "windows": ["01:00-03:00"],
          "timezone": "UTC"}


def busy(name: str, pid: int, cpu: float, cmdline: str = "") -> list:  # type: ignore[type-arg]
    return [proc(pid, name, cpu=cpu, create_time=1234.5, cmdline=cmdline),
            proc(900, "sshd", cpu=1.0), proc(901, "cron", cpu=0.5)]


def cpu_alerts(at: datetime, top: list, minutes: int = 15) -> list[Alert]:  # type: ignore[type-arg]
    an = analyzer(settings(analyzer={"known_jobs": [BACKUP]}))
    return [a for a in Stream(start=at).feed(an, minutes * 12, cpu=95.0, top_cpu=top)
            if a.metric == "cpu.percent"]


def actions(a: Alert) -> list[str]:
    return [x.action for x in a.suggested_actions]


def test_a_known_job_in_its_window_is_expected_and_never_gets_stop_process() -> None:
    alerts = cpu_alerts(datetime(2024, 3, 4, 1, 30, tzinfo=timezone.utc),
                        busy("restic", 500, 370.0, "restic backup /home"))
    assert [(a.labels["change"], a.severity) for a in alerts] == [("new", "critical")]
    for a in alerts:
        assert a.context is not None
        assert a.context.startswith("known job 'nightly-backup': restic (pid 500)")
        assert "inside its window 01:00-03:00 UTC" in a.context
        assert a.assessment is not None and a.assessment.expected is True
        assert "stop_process" not in actions(a)


def test_a_runaway_names_the_process_and_suggests_stopping_exactly_it() -> None:
    alerts = cpu_alerts(datetime(2024, 3, 4, 14, 0, tzinfo=timezone.utc),
                        busy("spinner", 600, 99.0))
    # Fires as general load, then says "runaway" once the process has been pinned 10 min.
    assert [a.labels["change"] for a in alerts] == ["new", "updated"]
    first, runaway = alerts[0], alerts[1]
    assert first.context is not None and first.context.startswith("general load")
    assert actions(first) == ["notify_only"]
    assert runaway.context is not None
    assert runaway.context.startswith("runaway: spinner (pid 600) has been pinned at 90% CPU")
    assert runaway.assessment is not None and runaway.assessment.expected is False
    stop = runaway.suggested_actions[0]
    assert (stop.action, stop.params["pid"], stop.params["create_time"]) == (
        "stop_process", 600, 1234.5)
    assert runaway.labels["pid"] == "600"


def test_a_known_job_outside_its_window_is_not_expected_and_says_so() -> None:
    alerts = cpu_alerts(datetime(2024, 3, 4, 14, 0, tzinfo=timezone.utc),
                        busy("restic", 500, 99.0))
    last = alerts[-1]
    assert last.context is not None and last.context.startswith("runaway: restic (pid 500)")
    assert "matches known job 'nightly-backup' but runs outside its window" in last.context
    assert last.assessment is not None and last.assessment.expected is False
    assert "stop_process" in actions(last)


def test_a_known_job_matches_on_its_command_line() -> None:
    job = {"name": "etl", "match": "*/opt/etl/run.py*"}
    an = analyzer(settings(analyzer={"known_jobs": [job]}))
    top = busy("python3", 700, 380.0, "/usr/bin/python3 /opt/etl/run.py --full")
    alerts = Stream().feed(an, 10, cpu=96.0, top_cpu=top)
    assert alerts[0].context is not None and alerts[0].context.startswith("known job 'etl'")


def test_general_load_lists_the_top_processes() -> None:
    rng = random.Random(1)
    top = [proc(100 + i, f"svc{i}", cpu=rng.uniform(40, 60)) for i in range(8)]
    alerts = cpu_alerts(datetime(2024, 3, 4, 14, 0, tzinfo=timezone.utc), top, minutes=1)
    assert alerts[0].context is not None
    assert alerts[0].context.startswith("general load: no single process explains it; top: ")
    assert alerts[0].context.count("(pid ") == 3


def test_windows_cross_midnight_and_follow_the_configured_zone() -> None:
    (job,) = compile_jobs([KnownJob(name="j", match="x", windows=("23:00-02:00",),
                                    timezone="Europe/Berlin")])

    def at(h: int, m: int) -> float:
        return datetime(2024, 3, 4, h, m, tzinfo=timezone.utc).timestamp()

    assert job.active_at(at(22, 30))  # 23:30 in Berlin (UTC+1 in March)
    assert job.active_at(at(0, 59))  # 01:59
    assert not job.active_at(at(1, 0))  # 02:00: the end is exclusive
    assert not job.active_at(at(21, 59))  # 22:59
    (anytime,) = compile_jobs([KnownJob(name="a", match="x")])
    assert anytime.active_at(at(12, 0))


def test_high_memory_from_a_leaking_process_says_so() -> None:
    an = analyzer()
    s = Stream()

    def top(i: int) -> list:  # type: ignore[type-arg]
        return [proc(4242, "java", rss=2e9 + 200e6 * i * 5 / 3600, create_time=99.0),
                proc(10, "postgres", rss=1.5e9, create_time=5.0)]

    s.feed(an, 40 * 12, memory=60.0, top_memory=top)
    alerts = [a for a in s.feed(an, 10, memory=93.0, top_memory=lambda i: top(480 + i))
              if a.metric == "memory.percent"]
    assert alerts and alerts[0].context is not None
    assert alerts[0].context.startswith("leak: java (pid 4242) grows steadily by 200 MB/h")
    assert alerts[0].assessment is not None
    assert "java (pid 4242) leaks memory" in alerts[0].assessment.likely_cause
    assert only(alerts, "new")


# --------------------------------------------------------------------------- culprits


def two_core_cpu(**analyzer_cfg: object) -> tuple[Stream, object]:
    s = settings(thresholds={"cpu_warning": 50.0, "cpu_critical": 90.0},
                 analyzer={"for_s": 0, **analyzer_cfg})
    return Stream(cores=2), analyzer(s)


def test_one_process_using_most_of_the_cpu_is_named_from_the_first_firing() -> None:
    s, an = two_core_cpu()
    stress = [proc(4242, "stress", cpu=101.0, create_time=1234.5), proc(900, "sshd", cpu=2.0)]
    alerts = [a for a in s.feed(an, 1, cpu=52.0, top_cpu=stress)  # type: ignore[arg-type]
              if a.metric == "cpu.percent"]
    (first,) = alerts
    assert first.context is not None
    assert first.context.startswith(
        "stress (pid 4242) uses 101% of a core, 97% of the CPU in use"), first.context
    assert (first.labels["process"], first.labels["pid"]) == ("stress", "4242")
    assert actions(first) == ["notify_only"]  # busy is not yet a runaway
    assert first.assessment is not None and "stress (pid 4242)" in first.assessment.likely_cause


def test_a_named_culprit_becomes_a_runaway_after_runaway_minutes() -> None:
    s, an = two_core_cpu()
    stress = [proc(4242, "stress", cpu=99.0, create_time=1234.5)]
    alerts = [a for a in s.feed(an, 11 * 12, cpu=52.0, top_cpu=stress)  # type: ignore[arg-type]
              if a.metric == "cpu.percent" and a.labels["change"] != "value"]
    assert [a.labels["change"] for a in alerts] == ["new", "updated"]
    named, runaway = alerts
    assert named.context is not None and "(a runaway after 10 min)" in named.context
    assert runaway.context is not None and runaway.context.startswith("runaway: stress")
    assert actions(runaway) == ["stop_process"]


def test_a_few_processes_together_are_named_with_their_share() -> None:
    s, an = two_core_cpu()
    top = [proc(1, "ffmpeg", cpu=100.0), proc(2, "ffmpeg", cpu=96.0), proc(3, "sshd", cpu=1.0)]
    (a,) = [a for a in s.feed(an, 1, cpu=100.0, top_cpu=top)  # type: ignore[arg-type]
            if a.metric == "cpu.percent"]
    assert a.context is not None and a.context.startswith(
        "ffmpeg (pid 1) uses 100% of a core, ffmpeg (pid 2) 96%: together 98% of the CPU in use")


def test_many_small_consumers_are_still_general_load() -> None:
    s, an = two_core_cpu()
    top = [proc(10 + i, f"w{i}", cpu=18.0) for i in range(10)]
    (a,) = [a for a in s.feed(an, 1, cpu=90.0, top_cpu=top)  # type: ignore[arg-type]
            if a.metric == "cpu.percent"]
    assert a.context is not None and a.context.startswith("general load: no single process")


def test_one_process_holding_most_of_the_memory_is_named() -> None:
    an = analyzer(settings(analyzer={"for_s": 0}))
    top = [proc(7, "java", rss=12e9), proc(8, "postgres", rss=1e9)]
    (a,) = [a for a in Stream().feed(an, 1, memory=93.0, top_memory=top)
            if a.metric == "memory.percent"]
    assert a.context == "java (pid 7) holds 12.0 GB, 81% of the memory in use"
    assert a.labels["pid"] == "7"
