"""Subject arithmetic for the NATS bus: where a subscription pattern meets each stream."""

from __future__ import annotations

import pytest

from watchkeeper.bus.subjects import (
    FAMILY_STREAM,
    durable_name,
    intersect,
    stream_name,
    within,
)


@pytest.mark.parametrize(("a", "b", "both"), [
    ("wk.>", "wk.alerts.>", "wk.alerts.>"),
    ("wk.*.h1", "wk.alerts.>", "wk.alerts.h1"),
    ("wk.*.h1", "wk.errors.>", "wk.errors.h1"),
    ("wk.alerts.*", "wk.alerts.>", "wk.alerts.*"),
    ("wk.metrics.h1", "wk.alerts.>", None),
    ("wk.health.*.sensor", "wk.health.h1.*", "wk.health.h1.sensor"),
    ("wk.a.b", "wk.a", None),
    ("wk.>", "wk.>", "wk.>"),
    ("wk.*", "wk.a.b", None),
])
def test_intersection_of_patterns(a: str, b: str, both: str | None) -> None:
    assert intersect(a, b) == both
    assert intersect(b, a) == both


def test_within() -> None:
    assert within("wk.alerts.*", "wk.alerts.>")
    assert not within("wk.*.h1", "wk.alerts.>")
    assert not within("wk.>", "wk.alerts.>")


def test_streams_and_consumer_names() -> None:
    assert stream_name("wk", "alerts") == "WK_ALERTS"
    assert stream_name("acme.wk", "events") == "ACME_WK_EVENTS"
    assert FAMILY_STREAM["services"] == "events" and "health" not in FAMILY_STREAM
    name = durable_name("web 1.example", "analyzer.alerts", "wk.alerts.>")
    assert name.startswith("web-1-example__analyzer-alerts__")
    assert all(c.isalnum() or c in "_-" for c in name)
    assert name != durable_name("web 1.example", "analyzer.alerts", "wk.metrics.>")
