"""Learned baselines: warm-up, anomalies below static thresholds, noise floors, persistence."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone

from tests.unit.test_analysis_streams import Stream, analyzer, only, settings


def normal_cpu(seed: int = 1) -> object:
    rng = random.Random(seed)
    return lambda i: rng.gauss(5.0, 1.0)


def test_a_jump_below_the_static_threshold_is_abnormal_after_warm_up() -> None:
    an = analyzer()  # warmup 120 samples, score 6, CPU warning 75
    s = Stream()
    assert s.feed(an, 200, cpu=normal_cpu()) == []
    alerts = s.feed(an, 12, cpu=40.0)
    assert [(a.rule, a.metric, a.severity, a.labels["change"]) for a in alerts] == [
        ("anomaly", "cpu.percent", "info", "new")]
    a = alerts[0]
    assert a.value == 40.0
    assert a.baseline is not None and 4.0 < a.baseline < 6.0
    assert a.threshold is not None and a.baseline < a.threshold < 40.0
    assert a.summary.startswith("CPU is 40%, abnormal for this host")
    assert "usually 5" in a.summary and "for 30 s" in a.summary
    assert an.anomaly_score("cpu.percent", "", 40.0) is not None
    # Back to normal: resolved.
    assert [x.state for x in s.feed(an, 5, cpu=5.0)] == ["resolved"]


def test_warm_up_raises_nothing() -> None:
    an = analyzer()
    s = Stream()
    assert s.feed(an, 60, cpu=normal_cpu()) == []
    assert s.feed(an, 50, cpu=40.0) == []  # 110 samples < 120: still learning
    assert an.anomaly_score("cpu.percent", "", 40.0) is None


def test_a_near_constant_metric_does_not_alert_on_a_tiny_change() -> None:
    an = analyzer()
    s = Stream()
    assert s.feed(an, 200, memory=40.0) == []
    # 1.5 points is a huge z on a flat line, but under the 10-point floor for memory.
    assert s.feed(an, 30, memory=41.5) == []
    assert [a.rule for a in s.feed(an, 10, memory=58.0)] == ["anomaly"]


def test_the_static_rule_speaks_instead_of_the_anomaly() -> None:
    an = analyzer()
    s = Stream()
    s.feed(an, 200, cpu=normal_cpu())
    alerts = s.feed(an, 20, cpu=95.0)
    assert [a.rule for a in alerts] == ["threshold"]


def test_baselines_survive_a_restart_through_json() -> None:
    an = analyzer()
    s = Stream()
    s.feed(an, 200, cpu=normal_cpu())
    saved = json.loads(json.dumps(an.baselines_to_dict()))
    restarted = analyzer()
    assert restarted.baselines_from_dict(saved) >= 1
    assert restarted.baselines_to_dict() == saved
    # No second warm-up: the jump is abnormal at once (after `for`).
    assert [a.rule for a in s.feed(restarted, 7, cpu=40.0)] == ["anomaly"]
    # Without the saved state the same jump is not judged (warm-up).
    assert Stream().feed(analyzer(), 7, cpu=40.0) == []


def test_malformed_or_foreign_baseline_data_is_skipped() -> None:
    an = analyzer()
    s = Stream()
    s.feed(an, 150, cpu=normal_cpu())
    data = an.baselines_to_dict()
    data["series"].append({"metric": "cpu.percent", "dimension": "x", "band": [1, 2]})
    data["series"].append({"metric": "cpu.percent", "dimension": "y",
                           "band": [float("nan"), 1, 200, 1, 1]})
    fresh = analyzer()
    assert fresh.baselines_from_dict(data) == len(data["series"]) - 2
    assert fresh.baselines_from_dict({"version": 99, "series": data["series"]}) == 0


def test_hourly_bands_learn_a_nightly_peak() -> None:
    def run(time_of_day: bool) -> list[int]:
        an = analyzer(settings(analyzer={"baseline": {"time_of_day": time_of_day}}))
        start = datetime(2024, 3, 4, 0, 0, tzinfo=timezone.utc)
        s = Stream(start=start, interval=60.0)
        new_per_day = []
        for _day in range(3):
            # 70 % between 02:00 and 03:00 UTC every night (below the 75 % warning), else 10 %
            alerts = s.feed(an, 24 * 60, cpu=lambda i: 70.0 if 120 <= i < 180 else 10.0)
            new_per_day.append(len(only(alerts, "new", "anomaly")))
        return new_per_day

    with_bands = run(True)
    assert with_bands[0] == 1  # the first night is abnormal
    assert with_bands[2] == 0  # by the third night 02:00 has its own band
    assert run(False)[2] == 1  # without hourly bands the third night still alerts

