"""Whether notifications get through, inside one process with an exact clock: the notifier
agent's ``status`` command (what GET /api/notify shows) and its health problems, from the
real SQLite outbox, real apprise and a real loopback receiver taken down and brought back.
The delivery pass is driven by hand (see test_notify_delivery.Rig)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.notify_receiver import Receiver
from watchkeeper.agents.commands import ask
from watchkeeper.notify.delivery import backoff
from watchkeeper.notify.message import Message
from watchkeeper.overall import overall

from .test_notify_delivery import T0, Rig, alert, at
from .test_notify_delivery import receiver as receiver  # the fixture

SECRET = "Zq7-status-pass-42x"
ROUTE = {"name": "ops", "group_wait_s": 0, "group_by": ["fingerprint"]}


def secret_url(receiver: Receiver) -> str:
    return receiver.url("ops").replace("json://", f"json://wk:{SECRET}@")


async def status(rig: Rig) -> dict[str, Any]:
    answer = await ask(rig.bus, "web1", "notifier", "status", actor="test", role="viewer")
    (row,) = answer["routes"]
    assert SECRET not in str(answer)
    return row


async def test_down_then_up_status_and_health_follow_the_outbox(
        tmp_path: Path, receiver: Receiver) -> None:
    rig = Rig(tmp_path, receiver, failing_after_s=60,
              routes=[{**ROUTE, "url": secret_url(receiver)}])
    await rig.agent.setup()
    unserve = rig.bus.serve("command.web1.notifier", rig.agent.handle_command)
    try:
        row = await status(rig)
        assert (row["state"], row["waiting"], row["sent_total"], row["failed_total"]) == (
            "ok", 0, 0, 0)
        assert (row["kind"], row["url"]) == ("json", "**********")  # as GET /api/config
        receiver.stop()
        for i in range(3):
            await rig.publish(alert(f"m{i}", T0))
        await rig.step(T0)
        row = await status(rig)
        assert (row["state"], row["waiting"], row["failed_total"]) == ("retrying", 3, 1)
        assert row["failing_since"] == at(T0).isoformat()
        assert row["next_retry_at"] == at(T0 + backoff(1)).isoformat()
        assert "Connection error" in row["last_error"] and "\n" not in row["last_error"]
        assert rig.agent.health().problems == ()  # not yet failing_after_s

        await rig.publish(alert("m3", T0 + 59))
        await rig.step(T0 + 59)  # a retry (due at +2) fails again; one more waits
        row = await status(rig)
        assert (row["state"], row["waiting"], row["failed_total"]) == ("retrying", 4, 2)
        assert row["oldest_waiting_s"] == 59
        rig.wall.now = T0 + 60
        (reason,) = rig.agent.health().problems
        assert reason.startswith("notification route ops has failed for 60 s: ")
        assert SECRET not in reason
        # (The agent's own state is "starting" here: the test drives it without its loop.)
        assert reason in overall([], [rig.agent.health()]).reasons
        assert (await status(rig))["state"] == "failing"

        # A restart while it fails: the record and the failing state are read back.
        await rig.restart()
        unserve()
        unserve = rig.bus.serve("command.web1.notifier", rig.agent.handle_command)
        row = await status(rig)
        assert (row["state"], row["waiting"], row["failed_total"]) == ("failing", 4, 2)
        assert rig.agent.health().problems

        receiver.start()
        await rig.step(T0 + 60 + backoff(2))
        assert receiver.titles("ops") == [f"[WARNING] web1: disk m{i} is 93% full"
                                          for i in range(4)]
        row = await status(rig)
        assert (row["state"], row["waiting"], row["sent_total"], row["failed_total"]) == (
            "ok", 0, 4, 2)
        assert row["failing_since"] is None and row["next_retry_at"] is None
        assert row["last_success_at"] == at(T0 + 60 + backoff(2)).isoformat()
        assert rig.agent.health().problems == ()
        assert not [r for r in overall([], [rig.agent.health()]).reasons if "route" in r]
    finally:
        unserve()
        await rig.close()


async def test_at_the_defaults_a_route_is_failing_after_15_minutes(
        tmp_path: Path, receiver: Receiver) -> None:
    """notify.failing_after_s at its default (900 s): retrying before, a health problem from
    then on (the test above shortens it to 60 s to walk the whole life of a route)."""
    rig = Rig(tmp_path, receiver, routes=[{**ROUTE, "url": secret_url(receiver)}])
    await rig.agent.setup()
    try:
        receiver.stop()
        await rig.publish(alert("m0", T0))
        await rig.step(T0)
        rig.wall.now = T0 + 899
        assert rig.agent.health().problems == ()
        rig.wall.now = T0 + 900
        (reason,) = rig.agent.health().problems
        assert reason.startswith("notification route ops has failed for 15 min: ")
    finally:
        await rig.close()


async def test_drops_past_the_bounds_are_counted_and_kept_across_a_restart(
        tmp_path: Path, receiver: Receiver) -> None:
    rig = Rig(tmp_path, receiver, outbox_max_messages=100, outbox_max_age_s=3600,
              routes=[{"name": "ops", "url": receiver.url("ops")}])
    await rig.agent.setup()
    try:
        receiver.stop()
        await rig.outbox.commit([Message(route="ops", kind="firing", title=f"m{i}",
                                         body="b") for i in range(150)], None, T0)
        await rig.step(T0)
        (stats,) = rig.outbox.stats().values()
        assert (stats.dropped, stats.failed, stats.sent) == (51, 1, 0)
        waiting = rig.outbox.waiting()["ops"]
        assert (waiting.count, waiting.oldest_at, waiting.head_attempts) == (100, T0, 1)
        await rig.step(T0 + 4000)  # all of it past outbox_max_age_s: one summary
        waiting = rig.outbox.waiting()["ops"]
        # The summary counts from the oldest message it replaced.
        assert (waiting.count, waiting.oldest_at) == (1, T0)
        assert rig.outbox.stats()["ops"].dropped == 150
        await rig.restart()
        assert rig.outbox.stats()["ops"].dropped == 150
    finally:
        await rig.close()


async def test_an_alertmanager_route_down_then_up(tmp_path: Path) -> None:
    """A real Alertmanager, not running at first: its route's posts fail, the health says
    so past failing_after_s (1 s here, default 900 s), and it clears at the first post it
    accepts. Also a memory warning at 0.1 % (an alert to post) and fast ticks."""
    from tests.alertmanager_server import Alertmanager, WebhookReceiver

    from .test_api_harness import api_settings, serve_api, until

    webhook = WebhookReceiver()
    (tmp_path / "am").mkdir()
    manager = Alertmanager(tmp_path / "am", webhook.url)  # not started yet
    base = manager.url.replace("http://", f"http://wk:{SECRET}@")
    settings = api_settings(tmp_path, thresholds={"memory_warning": 0.1,
                                                  "memory_critical": 100},
                            analyzer={"for_s": 0},
                            notify={"failing_after_s": 1,
                                    "routes": [{"name": "am", "alertmanager": base}]})
    try:
        async with serve_api(settings) as api:
            async def row(state: str) -> dict[str, Any] | None:
                r = await api.client.get("/api/notify")
                assert r.status_code == 200 and SECRET not in r.text, r.text
                (found,) = r.json()["routes"]
                return found if found["state"] == state else None

            down = await until(lambda: row("failing"), 30)
            assert (down["kind"], down["url"]) == (
                "alertmanager", f"http://**********@127.0.0.1:{manager.port}")
            assert down["last_post_ok"] is False and down["waiting"] is None
            assert down["last_error"] == "connection refused" and down["failed_total"] >= 1
            assert down["alerts"] >= 1 and down["firing"] >= 1 and down["next_retry_at"]
            health = (await api.client.get("/api/health")).json()
            # (Degraded, or critical if this busy machine's CPU fires its own alert.)
            assert health["status"] in ("degraded", "critical")
            assert any(r.startswith("notification route am has failed for ")
                       for r in health["reasons"]), health
            metrics = (await api.client.get("/metrics")).text
            assert 'watchkeeper_notifications_failed_total{route="am"}' in metrics
            assert 'watchkeeper_notify_outbox_messages{route="am"}' not in metrics

            manager.start()
            up = await until(lambda: row("ok"), 90)
            assert up["last_post_ok"] is True and up["sent_total"] >= 1
            assert up["failing_since"] is None and up["last_success_at"]
            reasons = (await api.client.get("/api/health")).json()["reasons"]
            assert not [r for r in reasons if "route am" in r], reasons
    finally:
        manager.stop()
        webhook.close()


async def test_get_api_notify_is_a_read_over_the_bus_with_the_read_token(
        tmp_path: Path, receiver: Receiver) -> None:
    from watchkeeper.bus import command_topic

    from .test_api_harness import READER, api_settings, serve_api
    from .test_commands_bus import CommandRecorder

    bus = CommandRecorder()
    settings = api_settings(tmp_path, notify={"routes": [{"name": "ops",
                                                          "url": secret_url(receiver)}]})
    # Bound to a non-loopback address (only decides auth here): reads need a token.
    async with serve_api(settings, bind_host="0.0.0.0", bus=bus) as api:
        assert (await api.client.get("/api/notify")).status_code == 401
        r = await api.client.get("/api/notify", headers=api.auth(READER))
        assert r.status_code == 200, r.text
        assert bus.last() == (command_topic(api.runtime.host, "notifier"), "status", "api",
                              "viewer")
        assert r.json()["routes"][0]["url"] == "**********" and SECRET not in r.text
        assert r.json()["failing_after_s"] == 900  # the default
        # The route is in the API's own description.
        schema = (await api.client.get("/openapi.json", headers=api.auth(READER))).json()
        assert "NotifyRouteBody" in schema["components"]["schemas"]
        assert "get" in schema["paths"]["/api/notify"]


async def test_a_fleet_central_answers_for_its_own_routes(tmp_path: Path,
                                                           receiver: Receiver) -> None:
    """A fleet's notifications go out from its central (hosts run no notifier): GET
    /api/notify there is the central's own notifier's answer."""
    import httpx

    from watchkeeper.api.app import create_app
    from watchkeeper.bus import MemoryBus
    from watchkeeper.runtime import Runtime

    from ..conftest import make_settings

    central = Runtime(make_settings(tmp_path, notify={"routes": [
        {"name": "ops", "url": secret_url(receiver)}]}).model_copy(
        update={"host_name": "central"}), bus=MemoryBus(), role="central")
    await central.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(central)),
                                     base_url="http://127.0.0.1") as api:
            r = await api.get("/api/notify")
        assert r.status_code == 200, r.text
        assert [(x["name"], x["kind"], x["state"]) for x in r.json()["routes"]] == [
            ("ops", "json", "ok")]
        assert r.json()["unavailable"] == []
    finally:
        await central.stop()
