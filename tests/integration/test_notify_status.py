"""Whether notifications get through, inside one process with an exact clock: the notifier
agent's ``status`` command (what GET /api/notify shows) and its health problems, from the
real SQLite outbox, real apprise and a real loopback receiver taken down and brought back.
The delivery pass is driven by hand (see test_notify_delivery.Rig)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.notify_receiver import Receiver
from watchkeeper.agents.commands import ask
from watchkeeper.events import AgentHealth
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


def test_a_failing_agent_problem_degrades_without_making_it_unready() -> None:
    health = AgentHealth(name="notifier", state="running", interval_s=1,
                         problems=("notification route ops has failed for 16 min",))
    found = overall([], [health])
    assert (found.status, found.reasons) == (
        "degraded", ("notification route ops has failed for 16 min",))
