"""Alertmanager as a route, against a real Alertmanager (tests/alertmanager_server.py): what it
receives, groups, resolves and keeps active, and what its webhook receiver is sent.

The agent posts on Alertmanager's clock (``Alertmanager.now``): equal to ours, except in
scripts/test's year-ahead pass, which cannot move a Go binary's clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.alertmanager_server import Alertmanager, WebhookReceiver, until
from watchkeeper.agents.alertmanager import AlertmanagerAgent
from watchkeeper.bus import MemoryBus
from watchkeeper.config import ConfigStore, RouteConfig
from watchkeeper.events import Alert, Assessment
from watchkeeper.notify.alertmanager import TEST_ALERTNAME, RouteState, send_test
from watchkeeper.store.sqlite import SqliteStore

from ..conftest import make_settings

HOST = "web-1"


def parse(t: str) -> datetime:
    return datetime.fromisoformat(t.replace("Z", "+00:00"))


def same_time(shown: str, t: datetime) -> bool:
    """Alertmanager answers with milliseconds."""
    return abs(parse(shown) - t) < timedelta(milliseconds=1)


def alert(am: Alertmanager, *, rule: str = "disk", metric: str = "disk.percent",
          dimension: str = "/", severity: str = "warning", state: str = "firing",
          since: datetime | None = None, at: datetime | None = None, silenced: bool = False,
          labels: dict[str, str] | None = None, **extra: Any) -> Alert:
    now = am.now()
    return Alert(host=HOST, id=f"{rule}-{dimension}-1", fingerprint=f"fp-{rule}-{dimension}",
                 rule=rule, metric=metric, dimension=dimension, severity=severity,
                 state=state, since=since or now - timedelta(minutes=5), at=at or now,
                 summary=f"Disk {dimension} is 93% full", silenced=silenced,
                 labels={"mount": dimension, "change": "new"} if labels is None else labels,
                 **extra)


class Running:
    """An AlertmanagerAgent running on a real bus, posting to ``am``."""

    def __init__(self, bus: MemoryBus, agent: AlertmanagerAgent,
                 task: asyncio.Task[None]) -> None:
        self.bus = bus
        self.agent = agent
        self.task = task

    async def publish(self, *alerts: Alert) -> None:
        for a in alerts:
            await self.bus.publish(f"alerts.{a.host}", a)


@asynccontextmanager
async def running(tmp_path: Path, am: Alertmanager, *, url: str | None = None,
                  store: SqliteStore | None = None, **options: Any
                  ) -> AsyncIterator[Running]:
    settings = make_settings(
        tmp_path, agents={"check_interval": 0.05},
        notify={"routes": [{"name": "am", "alertmanager": url or am.url,
                            "min_severity": "info"}],
                "dashboard_url": "http://dash.example:8000/"})
    bus = MemoryBus()
    agent = AlertmanagerAgent(store=store, route_options=options, bus=bus,
                              config=ConfigStore(settings), host=HOST,
                              wall=lambda: am.now())
    run = Running(bus, agent, asyncio.get_running_loop().create_task(agent.run()))
    try:
        await asyncio.sleep(0)
        yield run
    finally:
        agent.stop()
        await asyncio.wait_for(run.task, 15)
        await bus.close()


async def wait(check: Any, what: str, timeout: float = 20.0) -> Any:
    """Poll a blocking check from async code without holding the loop."""
    return await asyncio.to_thread(until, check, what, timeout)


def by_name(am: Alertmanager, name: str = "disk") -> list[dict[str, Any]]:
    return [a for a in am.alerts() if a["labels"].get("alertname") == name]


async def test_an_alert_reaches_alertmanager_with_its_labels_annotations_and_start(
        tmp_path: Path, am: Alertmanager) -> None:
    since = am.now() - timedelta(minutes=7)
    fired = alert(am, since=since, context="/var/log/app grew 4 GB in an hour",
                  labels={"mount": "/", "change": "new", "pid": "4242",
                          "acked_by": "ann"},
                  assessment=Assessment(source="llm", summary="app logs are filling /",
                                        likely_cause="debug logging left on"))
    async with running(tmp_path, am) as run:
        await run.publish(fired)
        [got] = await wait(lambda: by_name(am), "the alert in Alertmanager")
    assert got["labels"] == {"alertname": "disk", "severity": "warning", "host": HOST,
                             "instance": HOST, "metric": "disk.percent", "dimension": "/",
                             "mount": "/"}
    notes = got["annotations"]
    assert notes["summary"] == "Disk / is 93% full"
    assert notes["description"] == "/var/log/app grew 4 GB in an hour"
    assert notes["analysis"] == "app logs are filling /"
    assert notes["likely_cause"] == "debug logging left on"
    assert notes["dashboard"] == "http://dash.example:8000/"
    assert notes["pid"] == "4242" and notes["acked_by"] == "ann"  # changing facts: notes
    assert got["generatorURL"] == "http://dash.example:8000/"
    assert same_time(got["startsAt"], since)
    assert got["status"]["state"] == "active"
    # Firing: ends by itself 4 resend intervals (4 minutes) ahead unless posted again.
    ahead = parse(got["endsAt"]) - am.now()
    assert timedelta(minutes=3) < ahead <= timedelta(minutes=4, seconds=5)


async def test_two_related_alerts_are_one_webhook_notification(
        tmp_path: Path, webhook: WebhookReceiver) -> None:
    # Its own Alertmanager, waiting 3s for a group to fill (not 1s): on a loaded machine the
    # second post may come a second after the first, and this is about grouping.
    (tmp_path / "am3").mkdir()
    am = Alertmanager(tmp_path / "am3", webhook.url, group_wait="3s")
    am.start()
    try:
        async with running(tmp_path, am) as run:
            await run.publish(alert(am, dimension="/"), alert(am, dimension="/var"))
            [note] = await wait(webhook.received, "Alertmanager's webhook notification")
            # group_interval is 1s: a second notification for the group would come by then.
            await asyncio.sleep(3)
    finally:
        am.stop()
    assert len(webhook.received()) == 1
    assert note["status"] == "firing"
    assert note["groupLabels"] == {"alertname": "disk", "host": HOST}
    assert sorted(a["labels"]["dimension"] for a in note["alerts"]) == ["/", "/var"]


async def test_a_resolved_alert_ends_at_its_resolution_and_the_receiver_hears_resolved(
        tmp_path: Path, am: Alertmanager, webhook: WebhookReceiver) -> None:
    async with running(tmp_path, am) as run:
        fired = alert(am)
        await run.publish(fired)
        await wait(lambda: [b for b in webhook.received() if b["status"] == "firing"],
                   "the firing notification")
        ended = am.now() - timedelta(seconds=1)
        await run.publish(fired.model_copy(update={"state": "resolved", "at": ended}))
        done = await wait(lambda: [b for b in webhook.received() if b["status"] == "resolved"],
                          "the resolved notification")
    [got] = done[0]["alerts"]
    assert got["status"] == "resolved"
    assert same_time(got["endsAt"], ended)
    assert by_name(am) == []  # no longer active
    [kept] = [a for a in am.alerts(active="false", inhibited="false", silenced="false",
                                   unprocessed="false")
              if a["labels"]["alertname"] == "disk"] or [None]
    assert kept is None or kept["status"]["state"] != "active"


async def test_reposting_keeps_a_long_firing_alert_active_and_stopping_lets_it_expire(
        tmp_path: Path, am: Alertmanager, webhook: WebhookReceiver) -> None:
    # A 0.5s resend interval: each post says endsAt = now + 2s.
    async with running(tmp_path, am, resend_every_s=0.5) as run:
        await run.publish(alert(am))
        [first] = await wait(lambda: by_name(am), "the alert")
        first_end = parse(first["endsAt"])
        assert first_end - am.now() < timedelta(seconds=2.5)
        # Past the first post's endsAt, it is still active: re-posted, with a later end.
        await wait(lambda: am.now() > first_end + timedelta(seconds=1), "the first endsAt")
        [later] = by_name(am)
        assert later["status"]["state"] == "active"
        assert parse(later["endsAt"]) > first_end
        assert later["startsAt"] == first["startsAt"]
        assert not [b for b in webhook.received() if b["status"] == "resolved"]
    # watchkeeper gone (nothing posts it any more): Alertmanager resolves it by itself.
    await wait(lambda: not by_name(am), "Alertmanager to expire the alert", timeout=10)
    await wait(lambda: [b for b in webhook.received() if b["status"] == "resolved"],
               "the resolved notification")


async def test_watchkeeper_silenced_alerts_are_not_sent_and_silencing_ends_one(
        tmp_path: Path, am: Alertmanager, webhook: WebhookReceiver) -> None:
    async with running(tmp_path, am) as run:
        quiet = alert(am, dimension="/srv", silenced=True)
        loud = alert(am, dimension="/")
        await run.publish(quiet, loud)
        await wait(lambda: by_name(am), "the unsilenced alert")
        await wait(webhook.received, "a notification")
        assert [a["labels"]["dimension"] for a in by_name(am)] == ["/"]
        # Silenced in watchkeeper while firing: it ends in Alertmanager, nothing re-posts it.
        await run.publish(loud.model_copy(update={"silenced": True, "at": am.now()}))
        await wait(lambda: not by_name(am), "the silenced alert to end")
    for body in webhook.received():
        assert all(a["labels"]["dimension"] != "/srv" for a in body["alerts"])


async def test_alertmanager_down_then_up_gets_the_firing_set_and_the_outage_is_logged_once(
        tmp_path: Path, am: Alertmanager, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="watchkeeper.notify.alertmanager")
    am.stop()
    async with running(tmp_path, am, resend_every_s=1.0, backoff_initial_s=0.1) as run:
        await run.publish(alert(am, dimension="/"), alert(am, dimension="/var"))
        sender = run.agent.routes["am"]
        await wait(lambda: sender.down, "the sender to see the outage")
        failures_before = sender._failures
        await wait(lambda: sender._failures >= failures_before + 3, "more failed attempts")
        # ... while down, one more alert fires and one ends: the set is what arrives.
        await run.publish(alert(am, dimension="/home"))
        await run.publish(alert(am, dimension="/var", state="resolved"))
        am.start()
        got = await wait(lambda: by_name(am) if len(by_name(am)) == 2 else None,
                         "the current firing set")
        assert sorted(a["labels"]["dimension"] for a in got) == ["/", "/home"]
        await wait(lambda: not sender.down, "the sender to see it back")
    down = [r for r in caplog.records if "cannot take alerts" in r.getMessage()]
    back = [r for r in caplog.records if "takes alerts again" in r.getMessage()]
    assert len(down) == 1 and len(back) == 1, [r.getMessage() for r in caplog.records]
    assert down[0].levelno == logging.WARNING


async def test_at_start_the_open_alerts_are_posted_again_and_the_lately_ended_ones_end(
        tmp_path: Path, am: Alertmanager) -> None:
    settings = make_settings(tmp_path)
    store = SqliteStore.open(settings.storage)
    still_open = alert(am, dimension="/")
    ended_lately = alert(am, dimension="/var", at=am.now() - timedelta(seconds=60))
    # What the last run posted: both firing, ending 4 minutes on unless posted again.
    last_run = RouteState()
    for a in (still_open, ended_lately):
        last_run.take(RouteConfig(name="am", alertmanager=am.url, min_severity="info"), a,
                      dashboard="", now=am.now(), mono=0.0)
    httpx.post(f"{am.url}/api/v2/alerts", timeout=5, json=[
        e.payload(am.now(), 240.0, "") for e in last_run.entries.values()]).raise_for_status()
    before = {a["labels"]["dimension"]: parse(a["endsAt"]) for a in by_name(am)}
    assert sorted(before) == ["/", "/var"]
    # ... and what it stored: /var ended 30s ago, while watchkeeper was down.
    store.add_event("alerts.web-1", still_open)
    store.add_event("alerts.web-1", ended_lately)
    store.add_event("alerts.web-1", ended_lately.model_copy(
        update={"state": "resolved", "at": am.now() - timedelta(seconds=30)}))
    await store.flush()
    try:
        async with running(tmp_path, am, store=store):
            got = await wait(lambda: by_name(am) if len(by_name(am)) == 1 else None,
                             "the ended alert to end in Alertmanager")
    finally:
        await store.close()
    assert got[0]["labels"]["dimension"] == "/"
    assert parse(got[0]["endsAt"]) > before["/"]  # posted again, so ending later


async def test_an_escalated_alert_replaces_its_warning_in_alertmanager(
        tmp_path: Path, am: Alertmanager) -> None:
    async with running(tmp_path, am) as run:
        warning = alert(am)
        await run.publish(warning)
        await wait(lambda: by_name(am), "the warning")
        await run.publish(warning.model_copy(update={"severity": "critical", "at": am.now()}))
        got = await wait(lambda: [a for a in by_name(am)
                                  if a["labels"]["severity"] == "critical"]
                         and len(by_name(am)) == 1 and by_name(am), "only the critical one")
    assert same_time(got[0]["startsAt"], warning.since)


def test_send_test_posts_a_short_lived_alert_and_says_what_alertmanager_answered(
        tmp_path: Path, am: Alertmanager) -> None:
    route = RouteConfig(name="am", alertmanager=am.url)
    settings = make_settings(tmp_path).model_copy(update={"host_name": HOST})
    ok, message = send_test(route, settings)
    assert ok, message
    assert "accepted the test alert" in message and am.url in message
    assert "0.25" in message or "Alertmanager at" in message
    [got] = [a for a in am.alerts() if a["labels"]["alertname"] == TEST_ALERTNAME]
    assert got["labels"]["route"] == "am" and got["labels"]["host"] == HOST
    # Short-lived: it ends by itself within minutes.
    ends = parse(got["endsAt"]) - parse(got["startsAt"])
    assert timedelta(0) < ends <= timedelta(minutes=5)


def test_send_test_says_clearly_when_alertmanager_is_down(
        tmp_path: Path, am: Alertmanager) -> None:
    am.stop()
    route = RouteConfig(name="am", alertmanager=am.url)
    started = time.monotonic()
    ok, message = send_test(route, make_settings(tmp_path))
    assert not ok
    assert message == f"Alertmanager at {am.url} is unreachable: connection refused"
    assert time.monotonic() - started < 10


async def test_the_agent_runs_only_when_a_route_names_an_alertmanager(
        tmp_path: Path) -> None:
    from watchkeeper.runtime import Runtime

    plain = make_settings(tmp_path)
    rt = Runtime(plain)
    try:
        assert "alertmanager" not in [a.name for a in rt.agents]
        with_route = plain.model_copy(update={"notify": plain.notify.model_copy(update={
            "routes": (RouteConfig(name="am", alertmanager="http://127.0.0.1:9"),)})})
        # A reload applies it (the serve end-to-end test shows it posting): it starts the
        # agent with the first such route and stops it with the last, in start order.
        rt.reload(with_route)
        await asyncio.gather(*rt._tasks)
        assert [a.name for a in rt.agents] == ["communicator", "notifier", "alertmanager",
                                               "remediator", "analyzer", "sensor"]
        assert list(rt.supervisor.agents) == [a.name for a in rt.agents]
        rt.reload(plain)
        await asyncio.gather(*rt._tasks)
        assert "alertmanager" not in [a.name for a in rt.agents]
        assert "alertmanager" not in rt.supervisor.agents
    finally:
        await rt.store.close()
        await rt.audit.close()
    rt = Runtime(with_route)
    try:
        assert "alertmanager" in [a.name for a in rt.agents]
    finally:
        await rt.store.close()
        await rt.audit.close()


async def test_a_restarted_agent_keeps_posting(tmp_path: Path, am: Alertmanager) -> None:
    async with running(tmp_path, am) as run:
        await run.publish(alert(am, dimension="/"))
        await wait(lambda: by_name(am), "the first alert")
        # What the supervisor does for a restart: stop the task, run the same agent again.
        run.agent.stop()
        await asyncio.wait_for(run.task, 15)
        run.task = asyncio.get_running_loop().create_task(run.agent.run())
        await run.publish(alert(am, dimension="/var"))
        await wait(lambda: len(by_name(am)) == 2, "the alert after the restart")


async def test_an_acknowledged_alert_keeps_firing_in_alertmanager_with_who_acked_it(
        tmp_path: Path, am: Alertmanager) -> None:
    async with running(tmp_path, am) as run:
        fired = alert(am)
        await run.publish(fired)
        [before] = await wait(lambda: by_name(am), "the alert")
        await run.publish(fired.model_copy(update={
            "state": "acknowledged", "at": am.now(),
            "labels": {"mount": "/", "change": "acknowledged", "acked_by": "ann"}}))
        [after] = await wait(lambda: [a for a in by_name(am)
                                      if a["annotations"].get("acked_by") == "ann"],
                             "the acknowledgement")
    assert after["fingerprint"] == before["fingerprint"]  # the same alert, still active
    assert after["status"]["state"] == "active"
