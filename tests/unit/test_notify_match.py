"""Route matching: the severity floor and each matcher, alone and together."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from watchkeeper.config import RouteConfig
from watchkeeper.events import Alert
from watchkeeper.notify.match import route_takes

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def _alert(severity: str = "warning", rule: str = "cpu", host: str = "web1",
           labels: dict[str, str] | None = None) -> Alert:
    return Alert(host=host, id="a1", fingerprint="f", rule=rule, metric="cpu.percent",
                 severity=severity, since=T0, summary="s", labels=labels or {})  # type: ignore[arg-type]


def _route(**kw: object) -> RouteConfig:
    return RouteConfig.model_validate({"name": "ops", "url": "json://127.0.0.1:9/h", **kw})


@pytest.mark.parametrize(("floor", "severity", "takes"), [
    ("warning", "info", False), ("warning", "warning", True), ("warning", "critical", True),
    ("critical", "warning", False), ("info", "info", True)])
def test_the_severity_floor(floor: str, severity: str, takes: bool) -> None:
    assert route_takes(_route(min_severity=floor), _alert(severity)) is takes


@pytest.mark.parametrize(("match", "alert", "takes"), [
    ({"hosts": ["web*"]}, _alert(host="web1"), True),
    ({"hosts": ["db*"]}, _alert(host="web1"), False),
    ({"services": ["nginx"]}, _alert(labels={"service": "nginx"}), True),
    ({"services": ["nginx"]}, _alert(), False),
    ({"rules": ["disk*"]}, _alert(rule="disk_usage"), True),
    ({"rules": ["disk*"]}, _alert(rule="cpu"), False),
    ({"labels": {"mount": "/var*"}}, _alert(labels={"mount": "/var/lib"}), True),
    ({"labels": {"mount": "/var*"}}, _alert(labels={"mount": "/"}), False),
    ({"labels": {"mount": "*"}}, _alert(), False),
    ({"hosts": ["web*"], "rules": ["cpu"]}, _alert(host="web2", rule="cpu"), True),
    ({"hosts": ["web*"], "rules": ["cpu"]}, _alert(host="db1", rule="cpu"), False),
], ids=["host-glob", "host-other", "service", "service-absent", "rule", "rule-other",
        "label", "label-other", "label-absent", "all-given-match", "one-given-fails"])
def test_every_given_matcher_must_match(match: dict[str, object], alert: Alert,
                                        takes: bool) -> None:
    assert route_takes(_route(match=match), alert) is takes
