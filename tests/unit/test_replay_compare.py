"""How replay pairs the alerts that would fire with those that did (pure, fixed times)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from watchkeeper.events import Alert
from watchkeeper.replay import Episode, compare, stored_alerts

T0 = 1_709_553_600.0  # 2024-03-04 12:00 UTC


def ep(fired: float, resolved: float | None = None, *, dim: str = "/data",
       before: bool = False) -> Episode:
    return Episode("threshold", "disk.percent", dim, "warning", T0 + fired,
                   None if resolved is None else T0 + resolved, before=before)


def test_each_difference_is_named() -> None:
    would = [ep(100, 200), ep(500, 600, dim="/var"), ep(1000, 1100, dim="/srv"),
             ep(30, 90, dim="/old")]
    did = [ep(100.5, 200), ep(400, 600, dim="/var"), ep(2000, 2100, dim="/srv"),
           ep(1000, 1200, dim="/home"), ep(-300, 90, dim="/old", before=True)]
    changes = {(d.key[2], d.change, d.delta_s) for d in compare(would, did)}
    assert changes == {
        ("/data", "same", -0.5),
        ("/var", "later", 100.0),
        ("/srv", "new", None),  # no overlap with the one that did fire, an hour later
        ("/srv", "gone", None),
        ("/home", "gone", None),
        ("/old", "open_before", 330.0),
    }


def test_an_episode_pairs_with_one_episode_only() -> None:
    diffs = compare([ep(0, 50), ep(60, 120)], [ep(0, 120)])
    assert [d.change for d in diffs] == ["same", "new"]


def _alert(at: float, change: str, state: str = "firing", since: float | None = None
           ) -> Alert:
    when = datetime.fromtimestamp(T0 + at, tz=timezone.utc)
    return Alert(host="h", at=when, id="a", fingerprint="fp", rule="threshold",
                 metric="disk.percent", dimension="/data", severity="warning", state=state,
                 since=when if since is None else when - timedelta(seconds=since),
                 summary="s", labels={"change": change})


def test_what_did_fire_is_read_from_the_stored_alert_changes() -> None:
    eps = stored_alerts([(T0 + 10, _alert(10, "value", since=600)),
                         (T0 + 20, _alert(20, "resolved", "resolved")),
                         (T0 + 100, _alert(100, "new")),
                         (T0 + 160, _alert(160, "value"))], T0)
    assert [(e.fired - T0, None if e.resolved is None else e.resolved - T0, e.before)
            for e in eps] == [(-590.0, 20.0, True), (100.0, None, False)]
