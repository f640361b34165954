"""One way in to the agents: every operator action the API takes goes over the bus's
request/reply on ``command.<host>.<agent>``, so the API acts on agents it does not hold
exactly as on its own, and an agent that is paused, absent or hung is a prompt 503."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.bus import MemoryBus, command_topic, topic_matches
from watchkeeper.events import Command, Event
from watchkeeper.runtime import Runtime

from .test_api_harness import READER, Api, api_settings, serve_api, until

HOST = "wk-commands"


class CommandRecorder(MemoryBus):
    """The in-process bus, keeping every request on ``command.>`` (what a subscriber on
    command.> sees on NATS, where a request is a message on that subject)."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: list[tuple[str, Command]] = []

    async def request(self, topic: str, event: Event, *, timeout: float = 5.0) -> Event:
        if topic_matches("command.>", topic) and isinstance(event, Command):
            self.commands.append((topic, event))
        return await super().request(topic, event, timeout=timeout)

    def last(self) -> tuple[str, str, str, str]:
        topic, command = self.commands[-1]
        return topic, command.command, command.actor, command.role


def settings_for(tmp_path: Path, **sections: dict[str, object]) -> Any:
    # Every host uses more than 1% memory: a memory alert fires at once (to acknowledge).
    base: dict[str, dict[str, object]] = {
        "thresholds": {"memory_warning": 1, "memory_critical": 99.9}, "analyzer": {"for_s": 0}}
    base.update(sections)
    return api_settings(tmp_path, **base).model_copy(update={"host_name": HOST})


async def _memory_alert(api: Api) -> dict[str, Any] | None:
    alerts = (await api.client.get("/api/alerts")).json()["alerts"]
    return next((a for a in alerts if a["metric"] == "memory.percent"), None)


def _mutating_routes(api: Api) -> set[tuple[str, str]]:
    schema = api.app.openapi()
    return {(method.upper(), path) for path, ops in schema["paths"].items()
            for method in ops if method in ("post", "put", "patch", "delete")}


async def test_every_mutating_route_sends_its_command_over_the_bus(tmp_path: Path) -> None:
    bus = CommandRecorder()
    async with serve_api(settings_for(tmp_path), bus=bus) as api:
        carol = {**api.auth(), "X-Watchkeeper-User": "carol"}
        seen: set[tuple[str, str]] = set()

        async def call(method: str, path: str, body: Any, agent: str, verb: str,
                       status: int = 200, timeout: float = 10.0, route: str = "") -> Any:
            before = len(bus.commands)
            r = await api.client.request(method, path, json=body, headers=carol,
                                         timeout=timeout)
            assert r.status_code == status, (method, path, r.text)
            assert len(bus.commands) > before, f"{method} {path} did not use the bus"
            assert bus.last() == (command_topic(HOST, agent), verb, "carol", "operator")
            seen.add((method, route or path))
            return r.json()

        fp = (await until(lambda: _memory_alert(api)))["fingerprint"]
        acked = await call("POST", f"/api/alerts/{fp}/ack", None, "analyzer", "ack",
                           route="/api/alerts/{fingerprint}/ack")
        assert acked["state"] == "acknowledged" and acked["labels"]["acked_by"] == "carol"
        future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
        silence = await call("POST", "/api/alerts/silences",
                             {"matchers": {"metric": "memory.*"}, "until": future},
                             "analyzer", "silence", 201)
        assert silence["by"] == "carol"
        await call("DELETE", f"/api/alerts/silences/{silence['id']}", None, "analyzer",
                   "unsilence", route="/api/alerts/silences/{silence_id}")

        remediate = {"command": "remediate", "action": "notify_only",
                     "params": {"message": "look"}}
        decision = (await call("POST", "/api/command", remediate, "remediator",
                               "remediate"))["decision"]
        assert decision["verdict"] == "approve" and decision["approval_id"]
        approved = await call("POST", f"/api/actions/{decision['approval_id']}/approve", None,
                              "remediator", "approve", route="/api/actions/{approval_id}/approve")
        assert approved["verdict"] == "auto"
        decision = (await call("POST", "/api/command", remediate, "remediator",
                               "remediate"))["decision"]
        rejected = await call("POST", f"/api/actions/{decision['approval_id']}/reject",
                              {"reason": "not now"}, "remediator", "reject",
                              route="/api/actions/{approval_id}/reject")
        assert rejected["state"] == "rejected" and rejected["by"] == "carol"
        await call("POST", "/api/actions/reset", {"service": "nope"}, "remediator", "reset",
                   404)

        for verb in ("pause", "resume", "restart", "health_check"):
            replies = (await call("POST", "/api/command",
                                  {"command": verb, "target": "analyzer"}, "analyzer",
                                  verb))["replies"]
            assert [r["ok"] for r in replies] == [True]
        updated = await call("PATCH", "/api/config", {"thresholds": {"cpu_warning": 70}},
                             "runtime", "config_patch")
        assert updated["changed"] == ["thresholds.cpu_warning"]
        assert api.runtime.config.current.thresholds.cpu_warning == 70
        sim = (await call("POST", "/api/command",
                          {"command": "simulate", "scenario": "service", "duration_s": 3},
                          "runtime", "simulate", timeout=60))["simulation"]
        assert sim["pid"] and sim["scenario"] == "service"

        # A new mutating route must be added here, and so go over the bus too.
        assert _mutating_routes(api) == seen


async def test_reads_of_agent_state_go_over_the_bus_as_the_viewer(tmp_path: Path) -> None:
    bus = CommandRecorder()
    async with serve_api(settings_for(tmp_path), bus=bus) as api:
        reader = api.auth(READER)
        for path, agent, verb in (("/api/alerts", "analyzer", "alerts"),
                                  ("/api/alerts/silences", "analyzer", "silences"),
                                  ("/api/services", "remediator", "services")):
            r = await api.client.get(path, headers=reader)
            assert r.status_code == 200, r.text
            assert bus.last() == (command_topic(HOST, agent), verb, "api", "viewer")


@asynccontextmanager
async def agents_elsewhere(tmp_path: Path, bus: MemoryBus) -> AsyncIterator[Runtime]:
    """The analyzer and the remediator under a supervisor of their own that shares only the
    bus (their own store, audit log and state files): as on a remote host."""
    settings = settings_for(tmp_path / "elsewhere")
    runtime = Runtime(settings, bus=bus, agents=["analyzer", "remediator"])
    await runtime.supervisor.start()
    try:
        yield runtime
    finally:
        await runtime.supervisor.stop()
        await runtime.audit.close()
        await runtime.store.close()


async def test_the_api_acts_on_agents_it_does_not_hold(tmp_path: Path) -> None:
    bus = MemoryBus()
    settings = settings_for(tmp_path)
    async with agents_elsewhere(tmp_path, bus) as elsewhere, \
            serve_api(settings, bus=bus, agents=["communicator", "sensor"]) as api:
        assert not any(a.name in ("analyzer", "remediator") for a in api.runtime.agents)
        fp = (await until(lambda: _memory_alert(api)))["fingerprint"]
        r = await api.client.post(f"/api/alerts/{fp}/ack",
                                  headers={**api.auth(), "X-Watchkeeper-User": "erin"})
        assert r.status_code == 200 and r.json()["labels"]["acked_by"] == "erin"
        analyzer = elsewhere.supervisor.agents["analyzer"]
        (alert,) = [a for a in analyzer.engine.active_alerts()  # type: ignore[attr-defined]
                    if a.fingerprint == fp]
        assert alert.state == "acknowledged"
        services = await api.client.get("/api/services")
        assert services.status_code == 200 and services.json()["services"] == []


async def test_a_paused_agent_answers_503_at_once_and_works_again_when_resumed(
        tmp_path: Path) -> None:
    async with serve_api(settings_for(tmp_path)) as api:
        r = await api.client.post("/api/command", json={"command": "pause",
                                                        "target": "analyzer"},
                                  headers=api.auth())
        assert r.status_code == 200
        r = await api.client.post("/api/alerts/x/ack", headers=api.auth())
        assert r.status_code == 503
        assert r.json()["detail"] == "the analyzer agent is paused: resume it and try again"
        r = await api.client.post("/api/command", json={"command": "remediate",
                                                        "action": "notify_only"},
                                  headers=api.auth())
        assert r.status_code == 200  # the remediator runs: only the analyzer is paused
        await api.client.post("/api/command", json={"command": "resume", "target": "analyzer"},
                              headers=api.auth())
        r = await api.client.post("/api/alerts/x/ack", headers=api.auth())
        assert r.status_code == 404  # answered again: there is no such alert


async def test_an_agent_not_running_is_503_with_the_same_message_as_before(tmp_path: Path
                                                                           ) -> None:
    async with serve_api(settings_for(tmp_path), agents=["communicator"]) as api:
        for method, path, body in (("POST", "/api/alerts/x/ack", None),
                                   ("POST", "/api/actions/1/approve", None),
                                   ("GET", "/api/alerts", None)):
            r = await api.client.request(method, path, json=body, headers=api.auth())
            assert r.status_code == 503, (path, r.text)
            agent = "remediator" if "actions" in path else "analyzer"
            assert r.json()["detail"] == f"the {agent} agent is not running in this process"


@pytest.mark.parametrize("wait_s", [0.5])
async def test_a_hung_agent_is_503_within_the_command_timeout_not_a_hang(
        tmp_path: Path, wait_s: float) -> None:
    """An analyzer that takes the command and never answers (hung, or on a host that went
    away): the API answers 503 once api.command_timeout_s has passed."""
    bus = MemoryBus()
    stuck = asyncio.Event()
    asked: list[Command] = []

    async def hung(event: Event) -> Event:
        assert isinstance(event, Command)
        asked.append(event)
        await stuck.wait()
        raise AssertionError("never answered")

    settings = settings_for(tmp_path, api={"command_timeout_s": wait_s})
    async with serve_api(settings, bus=bus, agents=["communicator"]) as api:
        stop = bus.serve(command_topic(HOST, "analyzer"), hung)
        try:
            started = time.monotonic()
            r = await api.client.post("/api/alerts/x/ack", headers=api.auth(),
                                      timeout=wait_s + 30)
            waited = time.monotonic() - started
        finally:
            stop()
        assert r.status_code == 503
        assert r.json()["detail"] == f"the analyzer agent did not answer ack within {wait_s:g}s"
        assert [c.command for c in asked] == ["ack"]
        assert waited >= wait_s  # it did wait for the agent, then gave up (no hang)


async def test_a_config_patch_through_the_api_is_announced_and_stored(tmp_path: Path) -> None:
    """The patch is applied by the runtime's own command handler, on its loop: the change is
    published as config_changed (the live stream, the dashboard's config view and the
    history see it), which a patch applied in the API's worker thread never was."""
    async with serve_api(settings_for(tmp_path)) as api:
        r = await api.client.patch("/api/config", json={"thresholds": {"cpu_warning": 71}},
                                   headers={**api.auth(), "X-Watchkeeper-User": "carol"})
        assert r.status_code == 200, r.text

        async def announced() -> list[dict[str, Any]]:
            found = (await api.client.get("/api/activity",
                                          params={"kind": "config_changed"})).json()
            return [e["event"] for e in found["events"]]

        (event,) = await until(announced)
        assert event["changed"] == ["thresholds.cpu_warning"]
        assert event["version"] == api.runtime.config.version
