"""Log floods: a watched log growing faster than analyzer.log_flood_mb_per_min (default 5)
for for_s (30 s) is an alert named by the file; the sensor's watcher reads real files."""

from __future__ import annotations

import os
from pathlib import Path

from tests.unit.test_analysis_streams import Stream, analyzer, only, settings
from watchkeeper.analysis.logflood import LOG_FLOOD_RULE
from watchkeeper.collectors.logs import LogWatcher
from watchkeeper.events import Alert, LogGrowth

LOG = "/var/log/app/error.log"


def feed(an: object, s: Stream, rates_mb_per_min: list[float]) -> list[tuple[int, Alert]]:
    out = []
    size = 10_000_000
    for i, rate in enumerate(rates_mb_per_min):
        size += int(rate * 1e6 / 12)
        logs = (LogGrowth(path=LOG, size=size, bytes_per_s=rate * 1e6 / 60),) if rate else ()
        out += [(i, a) for a in an.observe(s.snap().model_copy(update={"logs": logs}))]  # type: ignore[attr-defined]
    return out


def test_a_log_flood_is_named_by_its_file_within_for_s_and_resolves_when_it_stops() -> None:
    an = analyzer()  # defaults: 5 MB/min for 30 s
    events = feed(an, Stream(), [0.0] * 6 + [12.5] * 24 + [0.0] * 6)
    changes = [(i, a.state, a.labels["change"]) for i, a in events if a.rule == LOG_FLOOD_RULE
               and a.labels["change"] != "value"]
    assert [c[1:] for c in changes] == [("firing", "new"), ("resolved", "resolved")]
    fired_at = changes[0][0]
    assert 6 + 6 <= fired_at <= 6 + 7  # 30 s of flood at 5 s ticks, plus at most one tick
    alert = next(a for _, a in events if a.rule == LOG_FLOOD_RULE)
    assert alert.dimension == LOG and alert.metric == "log.growth_mb_per_min"
    assert f"Log {LOG} is flooding: it grows by 12.5 MB/min" in alert.summary
    assert [x.action for x in alert.suggested_actions] == ["notify_only"]
    assert changes[1][0] == 30  # the first tick without growth


def test_one_burst_or_a_busy_but_normal_log_is_no_flood() -> None:
    an = analyzer()
    # A rotation's copy or a journal's preallocation: 100 MB in one tick, then quiet; and
    # a busy access log at 3 MB/min for an hour.
    alerts = feed(an, Stream(), [0.0, 1200.0] + [0.0] * 10 + [3.0] * 720)
    assert only([a for _, a in alerts], rule=LOG_FLOOD_RULE) == []


def test_a_flooding_log_that_may_be_rotated_gets_rotate_log_suggested() -> None:
    s = settings(remediation={"log_files": [{"path": LOG}]})
    an = analyzer(s)
    alerts = [a for _, a in feed(an, Stream(), [20.0] * 10)]
    assert [x.action for x in alerts[0].suggested_actions] == ["rotate_log"]
    assert alerts[0].suggested_actions[0].params["path"] == LOG


def test_the_watcher_reports_real_files_growing_one_level_down_and_no_symlinks(
        tmp_path: Path) -> None:
    sub = tmp_path / "nginx"
    sub.mkdir()
    (sub / "access.log").write_bytes(b"x" * 100)
    (tmp_path / "syslog").write_bytes(b"")
    deep = sub / "old"
    deep.mkdir()
    (deep / "too-deep.log").write_bytes(b"")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.log"
    outside.write_bytes(b"")
    os.symlink(outside, tmp_path / "link.log")
    watcher = LogWatcher()
    assert watcher.collect([tmp_path], 100.0, top=5) == ()  # the first reading: no rates
    (sub / "access.log").write_bytes(b"x" * 1100)  # +1000 B
    with (tmp_path / "syslog").open("ab") as f:
        f.write(b"y" * 5000)
    (deep / "too-deep.log").write_bytes(b"z" * 9000)
    outside.write_bytes(b"w" * 9000)
    got = watcher.collect([tmp_path], 110.0, top=5)
    assert [(g.path, g.size, g.bytes_per_s) for g in got] == [
        (str(tmp_path / "syslog"), 5000, 500.0), (str(sub / "access.log"), 1100, 100.0)]
    (tmp_path / "syslog").write_bytes(b"")  # rotated: shrank, no growth
    assert [g.path for g in watcher.collect([tmp_path], 120.0, top=5)] == []
    outside.unlink()
