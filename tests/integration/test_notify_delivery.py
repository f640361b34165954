"""Notifications end to end inside one process: the NotifierAgent on a real bus, the real
SQLite outbox, real apprise posting to a real loopback receiver (``json://``). Time is an
injected wall clock; the delivery pass is driven by hand (``background_delivery=False``),
so group_wait, backoff and escalation are exact, not slept for."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings
from tests.notify_receiver import Receiver, free_port
from watchkeeper.agents.notifier import NotifierAgent
from watchkeeper.bus import MemoryBus
from watchkeeper.config import ConfigStore, Settings
from watchkeeper.events import Alert, Assessment, RemediationEvent
from watchkeeper.notify.delivery import backoff
from watchkeeper.notify.message import Message
from watchkeeper.notify.outbox import Outbox
from watchkeeper.notify.sender import AppriseSender
from watchkeeper.store.sqlite import SqliteStore

T0 = 1_800_000_000.0


class Wall:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def alert(fp: str, t: float, *, state: str = "firing", severity: str = "warning",
          silenced: bool = False, rule: str = "threshold", dimension: str = "") -> Alert:
    return Alert(host="web1", at=at(t), id=f"id-{fp}", fingerprint=fp, rule=rule,
                 metric="disk.percent", dimension=dimension or fp, severity=severity,  # type: ignore[arg-type]
                 state=state, since=at(T0), summary=f"disk {fp} is 93% full",  # type: ignore[arg-type]
                 silenced=silenced,
                 assessment=Assessment(source="rule", summary=f"disk {fp} is 93% full",
                                       likely_cause="logs growing"))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


class Rig:
    def __init__(self, tmp_path: Path, receiver: Receiver, **notify: Any) -> None:
        routes = notify.pop("routes", None) or [
            {"name": "ops", "url": receiver.url("ops"), "group_wait_s": 30,
             "group_interval_s": 300, "repeat_interval_s": 3600, "escalate_to": "boss",
             "escalate_after_s": 600},
            {"name": "boss", "url": receiver.url("boss"),
             "receive": "escalations"}]
        self.settings: Settings = make_settings(
            tmp_path, notify={"routes": routes, "dashboard_url": "http://dash.test/", **notify},
            personality={"level": "off"})
        self.tmp_path = tmp_path
        self.wall = Wall()
        self.bus = MemoryBus()
        self.store = SqliteStore(tmp_path / "history.db")
        self.outbox = Outbox.open(tmp_path / "data")
        self.agent = self._agent()

    def _agent(self) -> NotifierAgent:
        return NotifierAgent(store=self.store, outbox=self.outbox, wall_s=self.wall,
                             background_delivery=False, bus=self.bus,
                             config=ConfigStore(self.settings), host="web1")

    async def publish(self, event: Alert | RemediationEvent) -> None:
        topic = "alerts.web1" if isinstance(event, Alert) else "actions.web1"
        self.store.add_event(topic, event)
        await self.store.flush()
        await self.bus.publish(topic, event)

    async def step(self, to: float) -> None:
        """Move the clock to ``to``, let the router decide, and deliver what is due."""
        self.wall.now = to
        await self.agent._perform_check()
        while True:
            delay = await self.agent.delivery.run_once()
            if delay is None or delay > 0:
                return

    async def restart(self) -> None:
        """A graceful restart: the agent stops, a new one starts on the same files."""
        await self.agent.teardown()
        self.bus = MemoryBus()
        self.agent = self._agent()
        await self.agent.setup()

    async def close(self) -> None:
        await self.outbox.close()
        await self.store.close()
        await self.bus.close()


@pytest.fixture
async def rig(tmp_path: Path, receiver: Receiver) -> AsyncIterator[Rig]:
    r = Rig(tmp_path, receiver)
    await r.agent.setup()
    yield r
    await r.close()


async def test_fire_group_escalate_remediate_resolve(rig: Rig, receiver: Receiver) -> None:
    for i, fp in enumerate(("a", "b", "c")):  # a burst of related alerts
        await rig.publish(alert(fp, T0 + i))
    await rig.step(T0 + 29)
    assert receiver.received == []  # group_wait
    await rig.step(T0 + 30)
    assert receiver.titles("ops") == ["[WARNING] web1: 3 alerts"]
    body = receiver.messages("ops")[0]["message"]
    assert "likely cause: logs growing" in body and "Dashboard: http://dash.test/" in body
    assert receiver.messages("ops")[0]["type"] == "warning"
    await rig.step(T0 + 629)
    assert receiver.messages("boss") == []
    await rig.step(T0 + 630)  # unacknowledged for escalate_after_s
    assert receiver.titles("boss") == [
        "[ESCALATED] web1: 3 alerts unacknowledged for 10 min"]
    await rig.publish(RemediationEvent(
        host="web1", at=at(T0 + 640), phase="finished", action="clean_disk", target="/var",
        outcome="ok", verified=True, message="freed 4 GB", fingerprint="a"))
    await rig.step(T0 + 640)
    assert receiver.titles("ops")[-1] == "[FIXED] web1: clean_disk /var"
    for fp in ("a", "b", "c"):
        await rig.publish(alert(fp, T0 + 650, state="resolved"))
    await rig.step(T0 + 650)  # group_interval after the first message has passed
    assert receiver.titles("ops") == ["[WARNING] web1: 3 alerts",
                                      "[FIXED] web1: clean_disk /var",
                                      "[RESOLVED] web1: 3 alerts"]
    assert "done: clean_disk /var: worked - freed 4 GB" in receiver.messages("ops")[2][
        "message"]
    assert receiver.titles("boss") == ["[ESCALATED] web1: 3 alerts unacknowledged for 10 min",
                                       "[RESOLVED] web1: 3 alerts"]
    await rig.step(T0 + 100_000)
    assert len(receiver.received) == 5  # nothing more, ever
    assert rig.outbox.pending() == []


async def test_a_burst_of_50_related_alerts_is_one_message(rig: Rig, receiver: Receiver
                                                           ) -> None:
    for i in range(50):
        await rig.publish(alert(f"d{i}", T0 + i / 10))
    await rig.step(T0 + 1)
    await rig.step(T0 + 35)
    assert receiver.titles("ops") == ["[WARNING] web1: 50 alerts"]
    assert "and 30 more firing" in receiver.messages("ops")[0]["message"]


async def test_a_silenced_alert_sends_nothing(rig: Rig, receiver: Receiver) -> None:
    await rig.publish(alert("s", T0, silenced=True))
    for t in (T0 + 30, T0 + 700, T0 + 5000):
        await rig.step(t)
    await rig.publish(alert("s", T0 + 6000, state="resolved", silenced=True))
    await rig.step(T0 + 7000)
    assert receiver.received == []


async def test_receiver_down_then_up_each_message_once_in_order(
        tmp_path: Path, receiver: Receiver) -> None:
    rig = Rig(tmp_path, receiver, routes=[{"name": "ops", "url": receiver.url("ops"),
                                           "group_wait_s": 0, "group_by": ["fingerprint"]}])
    await rig.agent.setup()
    try:
        receiver.stop()
        for i in range(5):
            await rig.publish(alert(f"m{i}", T0))
        await rig.step(T0)
        pending = rig.outbox.pending("ops")
        assert [p.fingerprints for p in pending] == [(f"m{i}",) for i in range(5)]
        # Only the head was tried (in order); it waits with backoff and says why.
        assert [p.attempts for p in pending] == [1, 0, 0, 0, 0]
        assert "Connection error" in (pending[0].last_error or "")
        assert pending[0].next_try_at == T0 + backoff(1)
        await rig.step(T0 + backoff(1))  # still down: a second failure
        assert rig.outbox.pending("ops")[0].attempts == 2
        receiver.start()
        await rig.step(T0 + backoff(1) + backoff(2))
        assert [m["title"] for m in receiver.messages("ops")] == [
            f"[WARNING] web1: disk m{i} is 93% full" for i in range(5)]
        assert rig.outbox.pending() == []
        await rig.step(T0 + 10_000)
        assert len(receiver.received) == 5
    finally:
        await rig.close()


async def test_past_the_bounds_the_dropped_become_one_summary_first(
        tmp_path: Path, receiver: Receiver) -> None:
    rig = Rig(tmp_path, receiver, outbox_max_messages=100, outbox_max_age_s=3600,
              routes=[{"name": "ops", "url": receiver.url("ops")}])
    try:
        receiver.stop()
        await rig.outbox.commit([Message(route="ops", kind="firing", title=f"m{i}",
                                         body="b") for i in range(150)], None, T0)
        await rig.step(T0)
        pending = rig.outbox.pending("ops")
        assert len(pending) == 100
        assert pending[0].kind == "summary"
        assert pending[0].title == ("51 messages for route ops were dropped while it was "
                                    "unreachable")
        assert [p.title for p in pending[1:]] == [f"m{i}" for i in range(51, 150)]
        # More time passes than outbox_max_age_s: everything waiting becomes the summary.
        await rig.step(T0 + 4000)
        pending = rig.outbox.pending("ops")
        assert [p.title for p in pending] == [
            "150 messages for route ops were dropped while it was unreachable"]
        receiver.start()
        await rig.step(T0 + 4000 + 400)
        assert receiver.titles("ops") == [
            "150 messages for route ops were dropped while it was unreachable"]
        assert "- m0" in receiver.messages("ops")[0]["message"]
    finally:
        await rig.close()


async def test_graceful_restart_does_not_repeat(rig: Rig, receiver: Receiver) -> None:
    await rig.publish(alert("a", T0))
    await rig.step(T0 + 30)
    assert len(receiver.received) == 1
    await rig.restart()  # the alert is read back from the history, unchanged
    await rig.step(T0 + 60)
    await rig.step(T0 + 400)
    assert len(receiver.received) == 1
    await rig.publish(alert("a", T0 + 500, state="resolved"))
    await rig.step(T0 + 500)
    assert receiver.titles("ops")[-1] == "[RESOLVED] web1: disk a is 93% full"


async def test_an_alert_open_in_the_history_but_never_told_is_told_after_start(
        tmp_path: Path, receiver: Receiver) -> None:
    rig = Rig(tmp_path, receiver)
    try:
        # Fired (and stored) while no notifier ran: the analyzer restores it silently.
        rig.store.add_event("alerts.web1", alert("x", T0))
        await rig.store.flush()
        await rig.agent.setup()
        await rig.step(T0 + 5)
        await rig.step(T0 + 31)
        assert receiver.titles("ops") == ["[WARNING] web1: disk x is 93% full"]
        await rig.restart()
        await rig.step(T0 + 100)
        assert len(receiver.received) == 1
    finally:
        await rig.close()


class _StuckChannel:
    """A channel that hangs until released (a blackholed webhook)."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()
        self.calls = 0

    def send(self, url: str, title: str, body: str, notify_type: str) -> Any:
        from watchkeeper.notify.sender import SendResult

        self.calls += 1
        self.release.wait(30)
        return SendResult(True, "sent")


async def test_a_hung_channel_never_holds_up_the_bus_or_the_notifier(
        tmp_path: Path, receiver: Receiver) -> None:
    import asyncio

    rig = Rig(tmp_path, receiver, routes=[{"name": "ops", "url": receiver.url("ops"),
                                           "group_wait_s": 0, "group_by": ["fingerprint"]}])
    stuck = _StuckChannel()
    rig.agent = NotifierAgent(store=rig.store, outbox=rig.outbox, wall_s=rig.wall,
                              sender=stuck, bus=rig.bus, config=ConfigStore(rig.settings),
                              host="web1")
    await rig.agent.setup()  # with its background delivery task
    try:
        await rig.publish(alert("h0", T0))
        await rig.agent._perform_check()
        while stuck.calls == 0:  # the delivery task is now inside the hung send
            await asyncio.sleep(0.01)
        # Publishing (what the analyzer does) and the notifier's checks go on meanwhile.
        for i in range(1, 200):
            await asyncio.wait_for(rig.bus.publish("alerts.web1", alert(f"h{i}", T0)), 1)
        await asyncio.wait_for(rig.agent._perform_check(), 2)
        assert len(rig.outbox.pending("ops")) == 200
        stuck.release.set()
    finally:
        stuck.release.set()
        await rig.agent.teardown()
        await rig.close()


def reload_routes(rig: Rig, routes: list[dict[str, Any]]) -> None:
    """What SIGHUP does to the notifier: the settings are replaced by the file's."""
    rig.settings = make_settings(rig.tmp_path, notify={"routes": routes},
                                 personality={"level": "off"})
    rig.agent.config.replace(rig.settings)


async def test_a_reload_that_fixes_a_route_url_delivers_what_waits_at_once(
        tmp_path: Path, receiver: Receiver) -> None:
    broken = Receiver()  # a port nobody listens on: the URL the operator got wrong
    route = {"name": "ops", "group_wait_s": 0}
    rig = Rig(tmp_path, receiver, routes=[{**route, "url": broken.url("ops")}])
    await rig.agent.setup()
    try:
        await rig.publish(alert("a", T0))
        await rig.step(T0)
        await rig.step(T0 + backoff(1))
        await rig.step(T0 + backoff(1) + backoff(2))
        (waiting,) = rig.outbox.pending("ops")
        assert waiting.attempts == 3 and waiting.next_try_at > T0 + 7
        reload_routes(rig, [{**route, "url": receiver.url("ops")}])
        await rig.step(T0 + 7)  # long before the backoff would try again
        assert receiver.titles("ops") == ["[WARNING] web1: disk a is 93% full"]
        assert rig.outbox.pending() == []
    finally:
        await rig.close()


async def test_a_reload_that_removes_a_route_drops_what_waits_for_it_and_says_so(
        tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    gone = Receiver()  # down: its messages wait in the outbox
    team = {"name": "team", "url": receiver.url("team"), "group_wait_s": 0,
            "group_by": ["fingerprint"]}
    rig = Rig(tmp_path, receiver, routes=[
        {"name": "old", "url": gone.url("old"), "group_wait_s": 0,
         "group_by": ["fingerprint"]}, team])
    await rig.agent.setup()
    try:
        for fp in ("a", "b", "c"):
            await rig.publish(alert(fp, T0))
        await rig.step(T0)
        assert len(rig.outbox.pending("old")) == 3
        assert len(receiver.titles("team")) == 3
        reload_routes(rig, [team])
        await rig.step(T0 + 1)  # before the old route's backoff is due
        assert rig.outbox.pending() == []
        said = [r.getMessage() for r in caplog.records if "no longer configured" in
                r.getMessage()]
        assert said == ["notify: route old is no longer configured; the 3 message(s) "
                        "waiting for it are dropped"]
        # Its failing record goes too: put back later, it is not "failing since" then.
        assert "old" not in rig.outbox.stats() and "old" not in rig.agent.delivery.failing
        # The route that stays is not touched: nothing repeated, and it keeps working.
        await rig.publish(alert("d", T0 + 2))
        await rig.step(T0 + 2)
        assert len(receiver.titles("team")) == 4
        # Put back, it starts afresh: told what fires now, once.
        reload_routes(rig, [{"name": "old", "url": receiver.url("old"), "group_wait_s": 0,
                             "group_by": ["host"]}, team])
        await rig.step(T0 + 3)
        assert receiver.titles("old") == ["[WARNING] web1: 4 alerts"]
    finally:
        await rig.close()


def test_a_channel_that_is_down_is_told_by_what_went_wrong(
        caplog: pytest.LogCaptureFixture) -> None:
    """What `notify status`, the health reason and `notify test` show of a refused send is
    apprise's warning, not its "Notifying 1 service(s)." chatter before it (logged at INFO,
    serve's level)."""
    caplog.set_level(logging.INFO)
    result = AppriseSender().send(f"json://127.0.0.1:{free_port()}/hook", "t", "b", "info")
    assert not result.ok
    assert result.answer.startswith("WARNING: A Connection error"), result.answer
    assert "Notifying" not in result.answer
