"""The Alertmanager route's own logic: which labels identify an alert, what a route keeps
(bounded), and when its sender posts and backs off (a fake monotonic clock; the network is
real: a loopback port nobody listens on, a loopback server keeping what is posted)."""

from __future__ import annotations

import logging
import socket
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tests.alertmanager_server import WebhookReceiver
from watchkeeper.config import RouteConfig
from watchkeeper.events import Alert
from watchkeeper.notify.alertmanager import (
    AlertmanagerRoute,
    RouteState,
    alerts_endpoint,
    label_name,
    labels_of,
    mask_url,
)

from ..conftest import FakeClock

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
ROUTE = RouteConfig(name="am", alertmanager="http://127.0.0.1:9", min_severity="info")


def alert(dimension: str = "/", severity: str = "warning", state: str = "firing",
          labels: dict[str, str] | None = None, silenced: bool = False,
          at: datetime = T0) -> Alert:
    return Alert(host="h", id="a1", fingerprint=f"fp{dimension}", rule="threshold",
                 metric="disk.percent", dimension=dimension, severity=severity, state=state,
                 since=T0 - timedelta(minutes=5), at=at, summary="disk full", silenced=silenced,
                 labels={"mount": dimension, "change": "new"} if labels is None else labels)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connecting is refused


@pytest.mark.parametrize(("name", "expected"), [
    ("mount", "mount"), ("a.b-c", "a_b_c"), ("9lives", "_9lives"), ("__name__", "name"),
    ("...", None), ("", None), ("ünïcode", "n_code"),
], ids=["plain", "dots-dashes", "leading-digit", "reserved-prefix", "nothing-left", "empty",
        "non-ascii"])
def test_label_names_are_made_valid(name: str, expected: str | None) -> None:
    assert label_name(name) == expected


def test_labels_are_the_alerts_identity_changing_facts_are_not_labels() -> None:
    labels = labels_of(alert(labels={"mount": "/", "change": "value", "pid": "42",
                                     "acked_by": "ann", "escalated": "critical",
                                     "service": "nginx", "alertname": "forged",
                                     "host": "elsewhere"}))
    assert labels == {"alertname": "threshold", "severity": "warning", "host": "h",
                      "instance": "h", "metric": "disk.percent", "dimension": "/",
                      "mount": "/", "service": "nginx"}


def test_a_severity_change_ends_the_old_identity_and_fires_the_new() -> None:
    state = RouteState()
    state.take(ROUTE, alert(), dashboard="", now=T0, mono=0.0)
    state.take(ROUTE, alert(severity="critical", at=T0 + timedelta(minutes=1)), dashboard="",
               now=T0 + timedelta(minutes=1), mono=60.0)
    by_severity = {e.labels["severity"]: e for e in state.entries.values()}
    assert by_severity["warning"].ends_at == T0 + timedelta(minutes=1)
    assert by_severity["critical"].ends_at is None
    assert by_severity["critical"].starts_at == T0 - timedelta(minutes=5)


def test_a_route_takes_only_what_it_matches() -> None:
    route = RouteConfig(name="am", alertmanager="http://x:9093", min_severity="critical")
    state = RouteState()
    assert not state.take(route, alert(severity="warning"), dashboard="", now=T0, mono=0.0)
    assert state.take(route, alert(severity="critical"), dashboard="", now=T0, mono=0.0)
    assert [e.labels["severity"] for e in state.entries.values()] == ["critical"]


def test_the_state_is_bounded_ended_alerts_go_first(caplog: pytest.LogCaptureFixture) -> None:
    state = RouteState(max_alerts=5)
    for i in range(3):
        state.take(ROUTE, alert(f"/e{i}"), dashboard="", now=T0, mono=0.0)
        state.take(ROUTE, alert(f"/e{i}", state="resolved"), dashboard="", now=T0, mono=0.0)
    for i in range(6):
        state.take(ROUTE, alert(f"/f{i}"), dashboard="", now=T0, mono=0.0)
    assert len(state.entries) == 5
    assert all(e.ends_at is None for e in state.entries.values())
    assert sorted(state.firing) == [f"fp/f{i}" for i in range(1, 6)]
    assert len([r for r in caplog.records if "more than 5 alerts" in r.getMessage()]) == 1


def test_ended_alerts_are_kept_for_the_retention_then_forgotten() -> None:
    state = RouteState()
    state.take(ROUTE, alert(), dashboard="", now=T0, mono=100.0)
    state.take(ROUTE, alert(state="resolved"), dashboard="", now=T0, mono=100.0)
    state.expire(100.0 + 899.0, 900.0)
    assert len(state.entries) == 1
    state.expire(100.0 + 900.0, 900.0)
    assert not state.entries


@pytest.mark.parametrize(("url", "shown"), [
    ("http://user:s3cret@am.example:9093", "http://***@am.example:9093"),
    ("https://tok3n@am.example/prefix?key=s3cret", "https://***@am.example/prefix"),
    ("http://[::1]:9093", "http://[::1]:9093"),
], ids=["user-password", "token-user-and-query", "ipv6"])
def test_urls_are_masked_for_logs(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_the_endpoint_keeps_a_route_prefix() -> None:
    assert alerts_endpoint("http://am:9093/am/") == "http://am:9093/am/api/v2/alerts"


async def test_a_down_alertmanager_is_retried_with_backoff_and_logged_once(
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    route = RouteConfig(name="am", alertmanager=f"http://u:s3cret@127.0.0.1:{closed_port()}",
                        min_severity="info")
    async with httpx.AsyncClient() as client:
        sender = AlertmanagerRoute(route, client=client, dashboard="", monotonic=clock,
                                   wall=lambda: T0)
        sender.take([alert()])
        delays = []
        for _ in range(9):
            assert sender._due_in() == 0.0
            assert not await sender.send_once()
            delays.append(sender._due_in())
            clock.advance(sender._due_in())
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]  # capped at the resend interval
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "connection refused" in text and "***@127.0.0.1" in text
    assert "s3cret" not in caplog.text


async def test_changes_are_posted_at_once_and_everything_each_resend_interval(
        clock: FakeClock) -> None:
    receiver = WebhookReceiver()  # a real loopback server keeping what is POSTed
    route = RouteConfig(name="am", alertmanager=receiver.url.removesuffix("/hook"),
                        min_severity="info")

    def posted() -> list[list[dict[str, Any]]]:
        return receiver.received()  # type: ignore[return-value]

    try:
        async with httpx.AsyncClient() as client:
            sender = AlertmanagerRoute(route, client=client, dashboard="d", monotonic=clock,
                                       wall=lambda: T0 + timedelta(seconds=clock.now))
            sender.take([alert("/a"), alert("/b")])
            assert await sender.send_once()
            assert len(posted()[-1]) == 2
            assert sender._due_in() == 60.0
            clock.advance(10)
            sender.take([alert("/c")])
            assert sender._due_in() == 0.0
            assert await sender.send_once()
            assert [a["labels"]["dimension"] for a in posted()[-1]] == ["/c"]
            assert sender._due_in() == 50.0
            clock.advance(50)
            assert await sender.send_once()
            assert len(posted()[-1]) == 3
            ends = datetime.fromisoformat(str(posted()[-1][0]["endsAt"]))
            assert ends - (T0 + timedelta(seconds=clock.now)) == timedelta(minutes=4)
    finally:
        receiver.close()
