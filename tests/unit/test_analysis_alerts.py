"""Alert lifecycle: fingerprints, ack, escalation, silences, flapping, restore after restart."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from tests.unit.test_analysis_streams import (
    HOST,
    START,
    Stream,
    analyzer,
    disk,
    lifecycle,
    only,
    proc,
    settings,
)
from watchkeeper.analysis.alerts import fingerprint
from watchkeeper.analysis.engine import GONE_AFTER_S
from watchkeeper.events import Alert, Assessment, ProcessInfo


def var(percent: float) -> list:  # type: ignore[type-arg]
    return [disk("/", 40), disk("/var", percent)]


def test_fingerprints_are_stable_and_per_problem() -> None:
    fp = fingerprint("web1", "threshold", "disk.percent", "/var")
    # Persisted alerts and silences refer to this value: it must never change between runs.
    assert fp == "15c7da49f66cb70e"
    assert fp == fingerprint("web1", "threshold", "disk.percent", "/var")
    others = {fingerprint("web2", "threshold", "disk.percent", "/var"),
              fingerprint("web1", "threshold", "disk.percent", "/"),
              fingerprint("web1", "anomaly", "disk.percent", "/var"),
              fingerprint("web1", "threshold", "disk.inodes_percent", "/var")}
    assert fp not in others and len(others) == 4
    a = Stream().feed(analyzer(), 7, disks=var(90))[0]
    assert a.fingerprint == fp


def test_ack_stops_time_escalation_but_a_worsening_pages_again() -> None:
    an = analyzer()
    s = Stream()
    (new,) = s.feed(an, 7, disks=var(90))
    acked = an.ack(new.fingerprint, "alice")
    assert acked is not None
    assert (acked.state, acked.labels["acked_by"], acked.labels["change"]) == (
        "acknowledged", "alice", "acknowledged")
    assert an.ack(new.fingerprint, "bob") is None  # already acknowledged
    assert an.ack("nope", "bob") is None
    # An hour at the same level: acknowledged, so no escalation by time.
    assert s.feed(an, 720, disks=var(90)) == []
    assert an.active_alerts()[0].state == "acknowledged"
    # Worse than what was acknowledged: escalated and firing again.
    (worse,) = lifecycle(s.feed(an, 7, disks=var(97)))
    assert (worse.labels["change"], worse.severity, worse.state) == (
        "escalated", "critical", "firing")
    assert "acked_by" not in worse.labels and worse.id == new.id


def test_a_silence_mutes_until_it_expires_and_the_alerts_stay_tracked() -> None:
    an = analyzer()
    s = Stream()
    (open_,) = s.feed(an, 7, disks=var(90))
    until = open_.at + timedelta(minutes=10)
    silence, changes = an.silence({"metric": "disk.*", "dimension": "/var"}, until, by="ops",
                                  comment="migration")
    assert [(a.labels["change"], a.silenced) for a in changes] == [("silenced", True)]
    assert an.silences == [silence]
    # A new alert that matches is emitted (stored, shown) but marked silenced.
    new_cpu = [a for a in s.feed(an, 7, cpu=80.0, disks=var(90)) if a.metric == "cpu.percent"]
    assert [a.silenced for a in new_cpu] == [False]  # the matcher names disk.* only
    # The silence ends on the snapshots' clock: the still-open alert is un-silenced.
    later = s.feed(an, 12 * 10, cpu=80.0, disks=var(90))
    unsilenced = only(later, "unsilenced")
    assert [(a.dimension, a.silenced) for a in unsilenced] == [("/var", False)]
    assert unsilenced[0].at >= until
    assert an.silences == []


def test_a_silenced_new_alert_is_marked_and_unsilence_ends_it_early() -> None:
    an = analyzer()
    s = Stream()
    s.feed(an, 1)
    silence, changes = an.silence({"host": "web*"}, s.at + timedelta(hours=1))
    assert changes == []
    (new,) = s.feed(an, 7, disks=var(90))
    assert new.silenced is True and new.labels["change"] == "new"
    back = an.unsilence(silence.id)
    assert [(a.labels["change"], a.silenced) for a in back] == [("unsilenced", False)]
    assert an.unsilence(silence.id) == []
    with pytest.raises(ValueError, match="matcher"):
        an.silence({}, s.at + timedelta(hours=1))


def test_flapping_is_held_open_instead_of_emitting_every_transition() -> None:
    an = analyzer(settings(analyzer={"rules": {"cpu.percent": {"for_s": 0, "hysteresis": 0}}}))
    s = Stream()
    # 80 / 70 every 20 s for 10 minutes: 30 raw openings and closings.
    alerts = s.feed(an, 120, cpu=lambda i: 80.0 if (i // 4) % 2 == 0 else 70.0)
    kinds = [a.labels["change"] for a in alerts]
    assert len(alerts) <= 6, kinds
    assert kinds.count("new") <= 3
    assert any(a.labels.get("flapping") == "true" for a in alerts)
    assert len(an.active_alerts()) == 1  # held open
    # Once it settles the held alert resolves once, after the window has emptied.
    settled = s.feed(an, 150, cpu=70.0)
    assert [a.state for a in settled] == ["resolved"]


def test_a_hand_resolved_alert_fires_again_only_after_for_s_if_still_true() -> None:
    an = analyzer()
    s = Stream()
    (first,) = s.feed(an, 7, disks=var(90))
    done = an.resolve(first.fingerprint, "alice")
    assert done is not None and done.state == "resolved" and "Resolved by alice" in done.summary
    assert an.resolve(first.fingerprint, "alice") is None
    assert s.feed(an, 6, disks=var(90)) == []  # pending again
    (again,) = s.feed(an, 1, disks=var(90))
    assert again.labels["change"] == "new" and again.id != first.id
    assert again.fingerprint == first.fingerprint


def events_before_restart() -> tuple[Stream, list[Alert]]:
    an = analyzer()
    s = Stream()
    events = s.feed(an, 7, cpu=80.0, disks=var(90))
    (cpu,) = [a for a in events if a.metric == "cpu.percent"]
    ack = an.ack(cpu.fingerprint, "alice")
    assert ack is not None
    events.append(ack)
    events += s.feed(an, 7, cpu=5.0, disks=var(90))  # the CPU alert resolves
    return s, events


def test_open_alerts_are_restored_after_a_restart_without_duplicates() -> None:
    s, events = events_before_restart()
    assert [(a.metric, a.state) for a in events if a.labels["change"] != "new"] == [
        ("cpu.percent", "acknowledged"), ("cpu.percent", "resolved")]
    restarted = analyzer()
    restored = restarted.restore(reversed(events))  # order does not matter
    assert [(a.metric, a.dimension) for a in restored] == [("disk.percent", "/var")]
    assert [a.id for a in restarted.active_alerts()] == [restored[0].id]
    # Still full after the restart: nothing new (no duplicate "new", no re-notification).
    assert s.feed(restarted, 20, disks=var(90)) == []
    # It keeps its history: since, and escalation after 15 min from the original since.
    later = s.feed(restarted, 12 * 14, disks=var(90))
    assert [(a.labels["change"], a.id, a.since) for a in later] == [
        ("escalated", restored[0].id, restored[0].since)]
    # And it resolves like any other alert.
    assert [(a.state, a.id) for a in s.feed(restarted, 1, disks=var(50))] == [
        ("resolved", restored[0].id)]


def test_a_restored_acknowledged_alert_stays_acknowledged() -> None:
    an = analyzer()
    s = Stream()
    (new,) = s.feed(an, 7, disks=var(90))
    ack = an.ack(new.fingerprint, "alice")
    assert ack is not None
    restarted = analyzer()
    (restored,) = restarted.restore([new, ack])
    assert restored.state == "acknowledged"
    # Acknowledged: no time escalation after the restart either.
    assert s.feed(restarted, 12 * 20, disks=var(90)) == []


def test_a_restored_alert_whose_dimension_is_gone_resolves() -> None:
    _, events = events_before_restart()
    restarted = analyzer()
    restarted.restore(events)
    s = Stream(start=events[-1].at + timedelta(seconds=5))
    gone = s.feed(restarted, int(GONE_AFTER_S / 5) + 2, disks=[disk("/", 40)])
    assert [(a.dimension, a.state) for a in gone] == [("/var", "resolved")]


def test_restore_ignores_other_hosts_and_unknown_rules() -> None:
    _, events = events_before_restart()
    foreign = [e.model_copy(update={"host": "db9"}) for e in events]
    odd = [e.model_copy(update={"rule": "retired_rule", "fingerprint": "f" * 16})
           for e in events if e.metric == "disk.percent"]
    an = analyzer()
    assert an.restore(foreign + odd) == []
    assert an.active_alerts() == []
    assert [a.host for a in analyzer().restore(events)] == [HOST]


def test_a_silence_on_a_fingerprint_mutes_that_alert() -> None:
    # The dashboard's "Silence 1 h" matches on the fingerprint: it must mute the alert.
    an = analyzer()
    s = Stream()
    (new,) = s.feed(an, 7, disks=var(90))
    _, changes = an.silence({"fingerprint": new.fingerprint}, START + timedelta(days=1))
    assert [(a.fingerprint, a.silenced) for a in changes] == [(new.fingerprint, True)]


# --------------------------------------------------------------------------- following the value


def cpu_only(alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.metric == "cpu.percent"]


def test_a_firing_alert_follows_the_current_sample_and_keeps_its_peak_apart() -> None:
    an = analyzer(settings(analyzer={"for_s": 0}))
    s = Stream()
    (new,) = cpu_only(s.feed(an, 1, cpu=95.0))
    assert (new.value, new.peak) == (95.0, 95.0)
    # Lower a few ticks later: the open alert (what the API shows) follows at once ...
    assert cpu_only(s.feed(an, 3, cpu=80.0)) == []
    (now,) = [a for a in an.active_alerts() if a.metric == "cpu.percent"]
    assert (now.value, now.peak, now.severity) == (80.0, 95.0, "critical")
    # The words describe the current value; the severity stays what the alert reached.
    assert now.summary.startswith("CPU is at 80% (warning at 75%) for 15 s")
    assert now.assessment is not None and now.assessment.summary == now.summary
    # ... and is published as a "value" change once the last one is a minute old.
    published = cpu_only(s.feed(an, 12, cpu=80.0))
    assert [(a.labels["change"], a.value, a.peak) for a in published] == [
        ("value", 80.0, 95.0)]
    assert published[0].id == new.id
    # A steady value publishes nothing more.
    assert cpu_only(s.feed(an, 10 * 12, cpu=80.0)) == []


def test_a_jumping_value_is_published_at_most_once_a_minute() -> None:
    an = analyzer(settings(analyzer={"for_s": 0}))
    s = Stream()
    changes = cpu_only(s.feed(an, 10 * 12, cpu=lambda i: 96.0 if i % 2 else 78.0))
    values = [a for a in changes if a.labels["change"] == "value"]
    assert changes[0].labels["change"] == "new" and 1 <= len(values) <= 10
    assert all((b.at - a.at).total_seconds() >= 60 for a, b in itertools.pairwise(changes)
               if b.labels["change"] == "value")


def test_a_culprit_flickering_between_two_processes_is_published_at_a_bounded_rate() -> None:
    an = analyzer(settings(analyzer={"for_s": 0}))
    s = Stream(cores=2)

    def top(i: int) -> list[ProcessInfo]:
        a, b = (proc(1, "a", cpu=150.0), proc(2, "b", cpu=20.0))
        return [a, b] if i % 2 else [b.model_copy(update={"cpu_percent": 150.0}),
                                     a.model_copy(update={"cpu_percent": 20.0})]

    changes = cpu_only(s.feed(an, 5 * 12, cpu=95.0, top_cpu=top))
    updated = [a for a in changes if a.labels["change"] == "updated"]
    # The first new explanation goes out at once, the next ones 30 s apart: not 60 updates.
    assert (updated[0].at - changes[0].at).total_seconds() == 5.0
    assert 2 <= len(updated) <= 11
    assert all((b.at - a.at).total_seconds() >= 30 for a, b in itertools.pairwise(updated))


def test_an_llm_assessment_is_kept_on_later_versions_and_not_published_twice() -> None:
    an = analyzer(settings(analyzer={"for_s": 0}))
    s = Stream()
    (new,) = cpu_only(s.feed(an, 1, cpu=80.0))
    llm = Assessment(source="llm", summary="the model's view", model="m")
    assessed = an.assess(new.fingerprint, llm)
    assert assessed is not None and assessed.labels["change"] == "assessed"
    assert assessed.id == new.id and assessed.assessment == llm
    assert an.assess(new.fingerprint, llm) is None  # the same (cached) answer: nothing new
    assert an.assess("nope", llm) is None
    # Later versions keep it: followed, escalated, acknowledged.
    s.feed(an, 2, cpu=82.0)
    assert [a.assessment for a in an.active_alerts() if a.metric == "cpu.percent"] == [llm]
    (up,) = lifecycle(cpu_only(s.feed(an, 1, cpu=95.0)))
    assert up.labels["change"] == "escalated" and up.assessment == llm
    acked = an.ack(new.fingerprint, "alice")
    assert acked is not None and acked.assessment == llm


def test_a_restored_alert_keeps_its_llm_assessment_and_peak() -> None:
    an = analyzer(settings(analyzer={"for_s": 0}))
    s = Stream()
    (new,) = cpu_only(s.feed(an, 1, cpu=97.0))
    llm = Assessment(source="llm", summary="the model's view")
    assessed = an.assess(new.fingerprint, llm)
    assert assessed is not None
    # A restart: a new engine restores from what was published, then follows the samples.
    again = analyzer(settings(analyzer={"for_s": 0}))
    assert again.restore([new, assessed]) == [assessed]
    s.feed(again, 3, cpu=92.0)
    (now,) = [a for a in again.active_alerts() if a.metric == "cpu.percent"]
    assert (now.assessment, now.value, now.peak) == (llm, 92.0, 97.0)


def test_a_detector_that_reports_changes_only_has_each_new_cause_published_at_once() -> None:
    # E.g. a service's remediation status: every report is news, none may be deferred.
    from watchkeeper.analysis.alerts import AlertManager, Description, Finding

    manager = AlertManager("h")

    def report(cause: str) -> Finding:
        return Finding(rule="service", metric="service.up", dimension="web",
                       severity="critical", value=0.0, since=0.0, cause=cause,
                       describe=lambda _since: Description(summary=f"web is down: {cause}"))

    kinds = [a.labels["change"] for cause, t in (("restarting", 0.0), ("refused", 1.0),
                                                  ("waiting", 2.0))
             for a in manager.update(t, [report(cause)])]
    assert kinds == ["new", "updated", "updated"]
