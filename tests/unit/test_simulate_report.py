"""Which alert a simulate report takes as the detection, from the server's activity JSON."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from watchkeeper.simulate.report import Culprit, read_response
from watchkeeper.simulate.runner import Outcome

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def _outcome() -> Outcome:
    return Outcome(scenario="cpu", summary="", started_at=T0, ended_at=T0 + timedelta(seconds=20),
                   duration_s=20, ended_by="time", pids=[4242], names=["wk-sim-cpu"], files=[],
                   append_to=None)


def _alert(at_s: float, fp: str, state: str, since_s: float, **fields: Any) -> dict[str, Any]:
    event = {"fingerprint": fp, "state": state, "rule": fields.pop("rule", "threshold"),
             "severity": "warning", "since": (T0 + timedelta(seconds=since_s)).isoformat(),
             **fields}
    return {"at": (T0 + timedelta(seconds=at_s)).isoformat(), "kind": "alert", "event": event}


def _read(*items: dict[str, Any]) -> Any:
    return read_response(lambda _p, _q: {"events": list(items)}, "http://x", _outcome(),
                         Culprit(frozenset({4242}), ("wk-sim-cpu",)))


def test_the_runs_own_alert_wins_over_one_that_only_mentions_it() -> None:
    resp = _read(
        _alert(3, "cpu", "firing", 2, summary="CPU is at 95%",
               context="the runaway wk-sim-cpu (pid 4242) is the cause"),
        _alert(9, "run", "firing", 5, rule="runaway", dimension="wk-sim-cpu[4242]",
               labels={"pid": "4242"}, summary="Process wk-sim-cpu (pid 4242) is a runaway"),
        _alert(25, "run", "resolved", 5, rule="runaway", summary="no longer a runaway"))
    assert resp.alert["fingerprint"] == "run"
    assert resp.detect_s == 9 and resp.recover_s == 5 and resp.open_s == 16
    assert resp.other_alerts == ["warning threshold: CPU is at 95%"]


def test_an_alert_open_before_the_run_is_not_its_detection() -> None:
    resp = _read(_alert(8, "cpu", "firing", -240, summary="CPU is at 100% for 4 min",
                        context="wk-sim-cpu is the busiest process"))
    assert resp.alert is None and resp.detect_s is None


def test_a_mention_in_an_alert_opened_during_the_run_counts() -> None:
    resp = _read(_alert(8, "mem", "firing", 6, summary="Memory is at 95%",
                        context="top: wk-sim-cpu (pid 4242)"))
    assert resp.alert is not None and resp.detect_s == 8
