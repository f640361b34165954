"""The router's decisions, on an injected clock: grouping, repeat, resolved, ack/silence,
inhibition and escalation (what a route hears, and when)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings
from watchkeeper.config import ConfigError, Settings, validate
from watchkeeper.events import Alert, Assessment, RemediationEvent
from watchkeeper.notify.router import INHIBIT_RULES, Router, inhibited

T0 = 1_800_000_000.0


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def alert(fp: str, *, t: float = T0, rule: str = "threshold", severity: str = "warning",
          state: str = "firing", host: str = "web1", silenced: bool = False,
          labels: dict[str, str] | None = None, dimension: str = "",
          summary: str | None = None) -> Alert:
    return Alert(host=host, at=at(t), id=f"id-{fp}", fingerprint=fp, rule=rule,
                 metric="cpu.percent", dimension=dimension, severity=severity,  # type: ignore[arg-type]
                 state=state, since=at(T0), summary=summary or f"problem {fp}",  # type: ignore[arg-type]
                 labels=labels or {}, silenced=silenced,
                 assessment=Assessment(source="rule", summary=summary or f"problem {fp}",
                                       likely_cause="a busy loop"))


def settings_with(tmp_path: Path, *routes: dict[str, Any], level: str = "off") -> Settings:
    return make_settings(tmp_path, notify={"routes": list(routes),
                                           "dashboard_url": "http://dash.example/"},
                         personality={"level": level})


def route(name: str = "ops", **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": name, "url": f"json://127.0.0.1:9/{name}",
                            "group_wait_s": 30, "group_interval_s": 300,
                            "repeat_interval_s": 3600}
    base.update(kw)
    return base


#: A route that hears only what is escalated to it.
BOSS = route("boss", receive="escalations")


def test_a_burst_waits_group_wait_and_is_one_message(tmp_path: Path) -> None:
    r = Router(lambda: settings_with(tmp_path, route()))
    for i in range(50):
        r.observe_alert(alert(f"fp{i}", dimension=str(i)))
    assert r.tick(T0) == []
    assert r.tick(T0 + 29) == []
    msgs = r.tick(T0 + 30)
    assert len(msgs) == 1
    assert msgs[0].kind == "firing" and len(msgs[0].fingerprints) == 50
    assert "50 alerts" in msgs[0].title
    assert "likely cause: a busy loop" in msgs[0].body
    assert "Dashboard: http://dash.example/" in msgs[0].body
    assert r.tick(T0 + 31) == []


def test_joining_alert_waits_for_group_interval_then_repeat(tmp_path: Path) -> None:
    r = Router(lambda: settings_with(tmp_path, route()))
    r.observe_alert(alert("a"))
    assert len(r.tick(T0 + 30)) == 1
    r.observe_alert(alert("b", t=T0 + 40))
    assert r.tick(T0 + 100) == []  # group_interval (300) after the first message
    msgs = r.tick(T0 + 330)
    assert len(msgs) == 1 and set(msgs[0].fingerprints) == {"a", "b"}
    assert "(new)" in msgs[0].body
    assert r.tick(T0 + 330 + 3599) == []
    repeat = r.tick(T0 + 330 + 3600)
    assert [m.kind for m in repeat] == ["repeat"]


def test_other_groups_are_other_messages(tmp_path: Path) -> None:
    r = Router(lambda: settings_with(tmp_path, route()))
    r.observe_alert(alert("a", rule="threshold"))
    r.observe_alert(alert("b", rule="baseline"))
    r.observe_alert(alert("c", rule="threshold", host="db1"))
    assert len(r.tick(T0 + 30)) == 3


def test_resolved_is_told_once_and_only_if_told_firing(tmp_path: Path) -> None:
    r = Router(lambda: settings_with(tmp_path, route()))
    r.observe_alert(alert("a"))
    r.observe_alert(alert("quick"))
    r.observe_alert(alert("quick", t=T0 + 5, state="resolved"))  # gone before group_wait
    first = r.tick(T0 + 30)
    assert [m.fingerprints for m in first] == [("a",)]
    r.observe_alert(alert("a", t=T0 + 60, state="resolved"))
    assert r.tick(T0 + 100) == []  # group_interval
    msgs = r.tick(T0 + 330)
    assert [m.kind for m in msgs] == ["resolved"] and "[RESOLVED]" in msgs[0].title
    assert r.tick(T0 + 10_000) == []
    assert r.alerts == {}  # nothing kept once told


def test_send_resolved_false(tmp_path: Path) -> None:
    r = Router(lambda: settings_with(tmp_path, route(send_resolved=False)))
    r.observe_alert(alert("a"))
    assert len(r.tick(T0 + 30)) == 1
    r.observe_alert(alert("a", t=T0 + 60, state="resolved"))
    assert r.tick(T0 + 10_000) == []


def test_silenced_sends_nothing_even_when_it_resolves(tmp_path: Path) -> None:
    r = Router(lambda: settings_with(tmp_path, route()))
    r.observe_alert(alert("a", silenced=True))
    assert r.tick(T0 + 3600) == []
    r.observe_alert(alert("a", t=T0 + 4000, silenced=True, state="resolved"))
    assert r.tick(T0 + 8000) == []


def test_ack_stops_repeats_and_escalation_until_it_worsens(tmp_path: Path) -> None:
    s = settings_with(tmp_path, route(escalate_to="boss", escalate_after_s=600), BOSS)
    r = Router(lambda: s)
    r.observe_alert(alert("a"))
    assert [m.route for m in r.tick(T0 + 30)] == ["ops"]
    r.observe_alert(alert("a", t=T0 + 40, state="acknowledged"))
    assert r.tick(T0 + 100_000) == []  # no repeat, no escalation
    r.observe_alert(alert("a", t=T0 + 100_001, severity="critical"))  # worse: re-opened
    msgs = r.tick(T0 + 100_001)
    assert [m.route for m in msgs] == ["ops"] and "[CRITICAL]" in msgs[0].title


def test_escalation_after_unacknowledged_then_resolved_on_both(tmp_path: Path) -> None:
    s = settings_with(tmp_path, route(escalate_to="boss", escalate_after_s=600),
                      route("boss", min_severity="critical"))
    r = Router(lambda: s)
    r.observe_alert(alert("a"))
    assert [m.route for m in r.tick(T0 + 30)] == ["ops"]
    assert r.tick(T0 + 629) == []
    esc = r.tick(T0 + 630)
    assert [(m.route, m.kind) for m in esc] == [("boss", "escalation")]
    assert "Escalated from route ops" in esc[0].body
    assert r.tick(T0 + 631) == []  # once
    r.observe_alert(alert("a", t=T0 + 700, state="resolved"))
    msgs = r.tick(T0 + 700 + 300)
    assert sorted((m.route, m.kind) for m in msgs) == [("boss", "resolved"), ("ops", "resolved")]


def test_failed_remediation_goes_to_the_route_and_escalates_at_once(tmp_path: Path) -> None:
    s = settings_with(tmp_path, route(escalate_to="boss"), BOSS)
    r = Router(lambda: s)
    svc = alert("svc", rule="service", severity="critical", dimension="web",
                labels={"service": "web"})
    r.observe_alert(svc)
    assert len(r.tick(T0 + 30)) == 1
    r.observe_remediation(RemediationEvent(host="web1", at=at(T0 + 31), phase="started",
                                           action="restart_service", target="web"), T0 + 31)
    assert r.tick(T0 + 31) == []  # started: said in the next message, not on its own
    r.observe_remediation(RemediationEvent(
        host="web1", at=at(T0 + 35), phase="finished", action="restart_service",
        target="web", outcome="ok", verified=False, message="still down"), T0 + 35)
    msgs = r.tick(T0 + 35)
    assert [(m.route, m.kind) for m in msgs] == [("ops", "remediation"), ("boss", "remediation")]
    assert "[FIX FAILED]" in msgs[0].title and "did not work" in msgs[0].body
    assert "Escalated from route ops" in msgs[1].body


def test_remediation_that_worked_is_said_once_and_shown_in_the_resolved(tmp_path: Path) -> None:
    r = Router(lambda: settings_with(tmp_path, route(escalate_to="boss"), BOSS))
    r.observe_alert(alert("a"))
    r.tick(T0 + 30)
    r.observe_remediation(RemediationEvent(
        host="web1", at=at(T0 + 40), phase="finished", action="clean_disk", target="/tmp",
        outcome="ok", verified=True, message="freed 2 GB", fingerprint="a"), T0 + 40)
    msgs = r.tick(T0 + 40)
    assert [(m.route, m.title) for m in msgs] == [("ops", "[FIXED] web1: clean_disk /tmp")]


def test_pending_approval_without_alert_reaches_matching_routes(tmp_path: Path) -> None:
    r = Router(lambda: settings_with(tmp_path, route()))
    r.observe_remediation(RemediationEvent(
        host="web1", phase="pending", action="stop_process", target="pid 42",
        approval_id=7, message="waits"), T0)
    msgs = r.tick(T0)
    assert [m.kind for m in msgs] == ["remediation"]
    assert "approval #7" in msgs[0].body


def test_receive_escalations_hears_only_what_is_escalated_to_it(tmp_path: Path) -> None:
    # boss's floor (info) and match (any) take every alert: only `receive` holds it back.
    boss = route("boss", receive="escalations", min_severity="info")
    r = Router(lambda: settings_with(tmp_path, route(escalate_to="boss", escalate_after_s=600),
                                     boss))
    r.observe_alert(alert("a", severity="critical"))
    assert [m.route for m in r.tick(T0 + 30)] == ["ops"]
    assert r.tick(T0 + 599) == []
    assert [(m.route, m.kind) for m in r.tick(T0 + 630)] == [("boss", "escalation")]
    # A step that needs a human, of no alert: the route that takes it, and boss through it.
    r.observe_remediation(RemediationEvent(
        host="web1", phase="pending", action="stop_process", target="pid 42",
        approval_id=7, message="waits"), T0 + 700)
    assert [m.route for m in r.tick(T0 + 700)] == ["ops", "boss"]
    r.observe_alert(alert("a", t=T0 + 800, state="resolved"))
    assert sorted(m.route for m in r.tick(T0 + 1000)) == ["boss", "ops"]


def test_receive_all_is_the_default(tmp_path: Path) -> None:
    s = settings_with(tmp_path, route(escalate_to="boss"), route("boss"))
    assert [rt.receive for rt in s.notify.routes] == ["all", "all"]
    r = Router(lambda: s)
    r.observe_alert(alert("a"))
    assert sorted(m.route for m in r.tick(T0 + 30)) == ["boss", "ops"]


def test_service_down_inhibits_the_alerts_it_explains(tmp_path: Path) -> None:
    r = Router(lambda: settings_with(tmp_path, route(group_by=["host"])))
    down = alert("svc", rule="service", severity="critical", dimension="web",
                 labels={"service": "web"})
    explained = alert("cpu", labels={"process": "web"})
    other = alert("disk", rule="forecast")
    elsewhere = alert("cpu2", host="db1", labels={"process": "web"})
    for a in (down, explained, other, elsewhere):
        r.observe_alert(a)
    assert inhibited(explained, [down, explained]) == "service_down"
    msgs = r.tick(T0 + 30)
    told = {fp for m in msgs for fp in m.fingerprints}
    assert told == {"svc", "disk", "cpu2"}


def test_inhibition_is_table_driven_host_down_holds_back_the_host() -> None:
    assert [rule.name for rule in INHIBIT_RULES] == ["service_down", "host_down"]
    down = alert("h", rule="host_down", severity="critical")
    assert inhibited(alert("x"), [down]) == "host_down"
    assert inhibited(alert("x", host="other"), [down]) is None


def test_route_floor_and_alertmanager_routes_are_skipped(tmp_path: Path) -> None:
    s = settings_with(tmp_path, route(min_severity="critical"),
                      {"name": "am", "alertmanager": "http://127.0.0.1:9093"})
    r = Router(lambda: s)
    r.observe_alert(alert("w"))
    r.observe_alert(alert("c", severity="critical", rule="other"))
    msgs = r.tick(T0 + 30)
    assert [(m.route, m.fingerprints) for m in msgs] == [("ops", ("c",))]


def test_state_round_trip_no_repeat_after_restart(tmp_path: Path) -> None:
    s = settings_with(tmp_path, route())
    r = Router(lambda: s)
    r.observe_alert(alert("a"))
    assert len(r.tick(T0 + 30)) == 1
    saved = r.state()
    again = Router(lambda: s)
    again.load(saved)
    again.observe_alert(alert("a", t=T0 + 50))  # read back from the history at start
    assert again.tick(T0 + 60) == []
    assert [m.kind for m in again.tick(T0 + 30 + 3600)] == ["repeat"]


def test_an_alert_untold_before_a_restart_is_told_after_it(tmp_path: Path) -> None:
    s = settings_with(tmp_path, route())
    r = Router(lambda: s)
    r.observe_alert(alert("a"))
    assert r.tick(T0 + 10) == []  # still in group_wait when the process died
    again = Router(lambda: s)
    again.load(r.state())
    again.observe_alert(alert("a"))
    assert len(again.tick(T0 + 40)) == 1


def test_personality_levels_shape_only_the_words(tmp_path: Path) -> None:
    bodies = {}
    for level in ("off", "professional", "witty"):
        r = Router(lambda lv=level: settings_with(tmp_path, route(), level=lv))  # type: ignore[misc]
        r.observe_alert(alert("a", severity="critical"))
        (msg,) = r.tick(T0 + 30)
        bodies[level] = msg
    assert bodies["off"].title.startswith("[CRITICAL]")
    assert bodies["professional"].title.startswith("🔥 [CRITICAL]")
    assert bodies["witty"].title == bodies["professional"].title
    assert bodies["witty"].body.startswith(bodies["professional"].body)
    assert len(bodies["witty"].body.splitlines()) == len(bodies["professional"].body
                                                         .splitlines()) + 1
    assert not any(ord(c) > 0x2000 for c in bodies["off"].title + bodies["off"].body)


@pytest.mark.parametrize(("routes", "says"), [
    pytest.param([route(receive="some")], "receive", id="not-all-or-escalations"),
    pytest.param([route(), route("boss", receive="escalations")],
                 "no route escalates to it", id="escalations-nobody-sends"),
    pytest.param([{"name": "am", "alertmanager": "http://127.0.0.1:9093",
                   "receive": "escalations"}], "needs a url route", id="alertmanager-route"),
])
def test_receive_is_validated(routes: list[dict[str, Any]], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        validate({"notify": {"routes": routes}})
