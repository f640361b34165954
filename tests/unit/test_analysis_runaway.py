"""Runaway processes are alerts of their own, whatever the host's total CPU."""

from __future__ import annotations

from datetime import datetime, timezone

from tests.unit.test_analysis_streams import Stream, analyzer, proc, settings
from watchkeeper.analysis.runaway import RUNAWAY_RULE
from watchkeeper.events import Alert, ProcessInfo

T0 = 1_700_000_000.0


def runaways(alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.rule == RUNAWAY_RULE and a.labels.get("change") != "value"]


def spinner(cpu: float, *, pid: int = 4242, create_time: float = 1234.5) -> list[ProcessInfo]:
    return [proc(pid, "spin", cpu=cpu, create_time=create_time, cmdline="python3 spin.py"),
            proc(900, "sshd", cpu=1.0)]


def test_one_pinned_core_on_a_two_core_host_is_a_runaway_within_its_minutes_plus_a_tick(
        ) -> None:
    # Default settings: runaway after 10 min at 90 %; the host's CPU stays at 50 %, below
    # every CPU threshold, as one pinned core on two cores is.
    s, an = Stream(cores=2), analyzer(settings())
    ticks = []
    for i in range(12 * 12):
        for a in runaways(an.observe(s.snap(cpu=50.0, top_cpu=spinner(100.0)))):
            ticks.append((i, a))
    assert [a.labels["change"] for _, a in ticks] == ["new"]
    fired_at, alert = ticks[0]
    assert fired_at * 5 <= 600 + 5  # pinned since tick 0: 10 min, plus at most one tick
    assert fired_at * 5 >= 600
    assert alert.severity == "warning" and alert.dimension == "spin[4242]"
    assert alert.summary.startswith("Process spin (pid 4242) is a runaway: pinned at 90% of "
                                    "a core or more for 10 min (now 100%)")
    assert (alert.labels["pid"], alert.labels["process"]) == ("4242", "spin")
    (stop,) = alert.suggested_actions
    assert (stop.action, stop.params["pid"], stop.params["create_time"]) == (
        "stop_process", 4242, 1234.5)
    assert not [a for _, a in ticks if a.metric == "cpu.percent"]


def test_a_dip_below_the_percentage_before_it_fires_starts_the_clock_again() -> None:
    s, an = Stream(cores=2), analyzer(settings())
    alerts = s.feed(an, 110, cpu=50.0, top_cpu=lambda i: spinner(40.0 if i == 60 else 99.0))
    assert runaways(alerts) == []  # 5 min, dip, 4 min 45 s: never 10 min in a row
    assert runaways(s.feed(an, 72, cpu=50.0, top_cpu=spinner(99.0)))


def test_once_firing_a_short_dip_holds_and_a_real_drop_or_exit_resolves() -> None:
    s, an = Stream(cores=2), analyzer(settings())
    assert runaways(s.feed(an, 121, cpu=50.0, top_cpu=spinner(99.0)))
    assert runaways(s.feed(an, 3, cpu=45.0, top_cpu=spinner(80.0))) == []  # hysteresis
    (resolved,) = runaways(s.feed(an, 1, cpu=10.0, top_cpu=spinner(30.0)))
    assert resolved.state == "resolved"
    assert resolved.summary.startswith("Process spin (pid 4242) is no longer a runaway")
    # Again, and this time the process leaves the list (it exited).
    assert runaways(s.feed(an, 121, cpu=50.0, top_cpu=spinner(99.0)))
    (gone,) = runaways(s.feed(an, 1, cpu=2.0, top_cpu=[proc(900, "sshd", cpu=1.0)]))
    assert gone.state == "resolved"


def test_a_reused_pid_is_another_process() -> None:
    s, an = Stream(cores=2), analyzer(settings())
    s.feed(an, 100, cpu=50.0, top_cpu=spinner(99.0, create_time=1.0))
    assert runaways(s.feed(an, 30, cpu=50.0, top_cpu=spinner(99.0, create_time=2.0))) == []


def test_a_known_job_in_its_window_is_never_a_runaway() -> None:
    job = {"name": "backup", "match": "spin", "windows": ["11:00-13:00"], "timezone": "UTC"}
    s = Stream(cores=2, start=datetime(2024, 3, 4, 12, 0, tzinfo=timezone.utc))
    an = analyzer(settings(analyzer={"known_jobs": [job]}))
    assert runaways(s.feed(an, 150, cpu=50.0, top_cpu=spinner(99.0))) == []


def test_busy_but_below_the_percentage_and_a_quiet_host_raise_nothing() -> None:
    s, an = Stream(cores=2), analyzer(settings())
    top = [proc(1, "web", cpu=60.0), proc(2, "db", cpu=45.0)]
    assert s.feed(an, 200, cpu=50.0, top_cpu=top) == []


def test_a_runaway_alert_is_restored_after_a_restart_and_resolves_when_its_process_is_gone(
        ) -> None:
    s, an = Stream(cores=2), analyzer(settings())
    (fired,) = runaways(s.feed(an, 121, cpu=50.0, top_cpu=spinner(99.0)))
    again = analyzer(settings())
    assert [a.fingerprint for a in again.restore([fired])] == [fired.fingerprint]
    (resolved,) = runaways(s.feed(again, 1, cpu=2.0, top_cpu=[proc(900, "sshd", cpu=1.0)]))
    assert resolved.state == "resolved" and resolved.fingerprint == fired.fingerprint


def test_on_a_saturated_host_a_spinner_getting_half_a_core_is_named_by_its_demand() -> None:
    # Default settings on a 2-core host at 100 %: the spinner gets 45 % of a core but runs
    # or waits for a CPU 97 % of the time (its schedstat demand): a runaway all the same.
    s, an = Stream(cores=2), analyzer(settings())
    spin = ProcessInfo(pid=4242, create_time=1234.5, name="spin", cpu_percent=45.0,
                       cpu_demand_percent=97.0)
    fired = [(i, a) for i in range(12 * 12) for a in runaways(
        an.observe(s.snap(cpu=100.0, top_cpu=[spin])))]
    assert [a.labels["change"] for _, a in fired] == ["new"]
    assert 600 <= fired[0][0] * 5 <= 605
    assert "(now 45%, 97% running or waiting for a CPU)" in fired[0][1].summary
    # A busy process that does not wait for a CPU (demand 50 %) is no runaway.
    quiet = ProcessInfo(pid=77, create_time=1.0, name="busy", cpu_percent=45.0,
                        cpu_demand_percent=50.0)
    assert not runaways(Stream(cores=2).feed(analyzer(settings()), 150, top_cpu=[quiet]))
