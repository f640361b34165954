"""A central acts on its hosts: approvals raised by a host's remediator are listed on the
central with their host and approved there (the host runs and audits it); a host's local
policy refuses what it forbids, audited on both sides; services come from every host, and a
dead or hung host is named, never a hang. The central (real uvicorn) and two host agents
share one in-process bus; the same wiring runs over NATS (test_fleet_cli.py)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.agents.remediator import RemediatorAgent
from watchkeeper.bus import command_topic
from watchkeeper.events import CommandRefused, Event, RemediationEvent
from watchkeeper.runtime import Runtime

from ..conftest import make_settings
from .test_api_harness import Api, api_settings, serve_api, until
from .test_fleet_roles import SharedBus
from .test_fleet_roles import until as until_true

PY = sys.executable
FAST: dict[str, Any] = {"check_interval": 0.2, "heartbeat_interval": 0.5}
#: Host agents a test stopped itself (the fleet fixture stops the others).
GONE: list[Runtime] = []


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Real processes this test may ask a host to stop; killed afterwards if still there."""
    made: list[subprocess.Popen[bytes]] = []
    yield made
    for proc in made:
        proc.kill()
        proc.wait(10)


def sleeper(made: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([PY, "-c", "import time; time.sleep(120)"])
    made.append(proc)
    return proc


def host_settings(tmp_path: Path, name: str, **remediation: Any) -> Any:
    # startup_grace_s 0: the default (60 s) holds every action back for a minute after
    # start; everything else is the default policy (stop_process waits for approval).
    return make_settings(
        tmp_path / name, agents=FAST, storage={"flush_interval": 0.1},
        remediation={"startup_grace_s": 0, **remediation},
        services={"app": {"start": [PY, "-c", "import time; time.sleep(600)"]}}
        if name == "web-1" else {}).model_copy(update={"host_name": name})


@asynccontextmanager
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[Api, Runtime, Runtime]]:
    """A central's API and two host agents: web-1 (default policy, one service) and web-2,
    whose local policy turns stop_process off."""
    bus = SharedBus()
    bus.users = 3
    web1 = Runtime(host_settings(tmp_path, "web-1"), bus=bus, role="agent")
    web2 = Runtime(host_settings(tmp_path, "web-2", actions={"stop_process": "off"}),
                   bus=bus, role="agent")
    central = api_settings(tmp_path / "central", agents=FAST).model_copy(
        update={"host_name": "central"})
    async with serve_api(central, bus=bus, role="central") as api:
        await web1.start()
        await web2.start()
        try:
            async def both() -> bool:
                hosts = (await api.client.get("/api/hosts")).json()["hosts"]
                return sorted(h["host"] for h in hosts) == ["web-1", "web-2"]
            await until(both)
            yield api, web1, web2
        finally:
            for rt in (web1, web2):
                if rt not in GONE:
                    await rt.stop()
            GONE.clear()


def stored(rt: Runtime, kind: str) -> list[Event]:
    return [e.event for e in rt.store.events(kinds=[kind])]


async def test_an_approval_raised_on_a_host_is_listed_and_approved_on_the_central(
        tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]) -> None:
    victim = sleeper(sleepers)
    async with fleet(tmp_path) as (api, web1, web2):
        carol = {**api.auth(), "X-Watchkeeper-User": "carol"}
        ask = {"command": "remediate", "action": "stop_process",
               "params": {"pid": victim.pid, "grace_s": 5}, "reason": "runaway"}
        r = await api.client.post("/api/command", json=ask, headers=carol,
                                  params={"host": "web-1"})
        assert r.status_code == 200, r.text
        decision = r.json()["decision"]
        assert decision["verdict"] == "approve", decision
        approval_id = decision["approval_id"]
        # Raised on web-1 (its audit log), listed on the central with its host.
        (mine,) = web1.audit.pending()
        assert mine.id == approval_id and web2.audit.pending() == []
        listed = (await api.client.get("/api/actions/approvals",
                                       params={"state": "pending"})).json()
        assert [(a["host"], a["id"]) for a in listed["approvals"]] == [("web-1", approval_id)]
        assert listed["unreachable"] == []
        pending = (await api.client.get("/api/actions")).json()["pending"]
        assert [(p["host"], p["id"]) for p in pending] == [("web-1", approval_id)]
        only2 = (await api.client.get("/api/actions/approvals",
                                      params={"host": "web-2"})).json()["approvals"]
        assert only2 == []

        # Wrong ways in change nothing: no host (a central heals nothing itself), another
        # host's id, an unknown host.
        path = f"/api/actions/{approval_id}/approve"
        r = await api.client.post(path, headers=carol)
        assert r.status_code == 422 and "name the host" in r.json()["detail"]
        r = await api.client.post(path, headers=carol, params={"host": "web-2"})
        assert r.status_code == 404 and f"no approval #{approval_id}" in r.text
        r = await api.client.post(path, headers=carol, params={"host": "web-9"})
        assert r.status_code == 404 and "no host 'web-9'" in r.json()["detail"]
        assert victim.poll() is None and [a.id for a in web1.audit.pending()] == [approval_id]

        # Approved on the central: web-1 runs it and audits it; the central keeps it too.
        r = await api.client.post(path, headers=carol, params={"host": "web-1"})
        assert r.status_code == 200 and r.json()["verdict"] == "auto", r.text
        remediator = next(a for a in web1.agents if isinstance(a, RemediatorAgent))
        await remediator.wait_idle()
        assert await asyncio.to_thread(victim.wait, 10) == -signal.SIGTERM
        (outcome,) = web1.audit.entries(kind="outcome")
        assert outcome.outcome == "ok" and outcome.host == "web-1"
        (approval,) = web1.audit.approvals("approved")
        assert approval.by == "carol"
        finished = await until_true(lambda: [e for e in stored(api.runtime, "remediation")
                                        if isinstance(e, RemediationEvent)
                                        and e.phase == "finished"])
        assert finished[0].host == "web-1" and finished[0].outcome == "ok"
        # The denied try on web-2 is a refusal web-2 published: on the central's activity.
        refusals = await until_true(lambda: [e for e in stored(api.runtime, "command_refused")
                                        if isinstance(e, CommandRefused)])
        assert (refusals[0].host, refusals[0].command, refusals[0].actor,
                refusals[0].code) == ("web-2", "approve", "carol", "not_found")
        activity = (await api.client.get("/api/activity",
                                         params={"kind": "command_refused"})).json()
        assert [(e["event"]["host"], e["kind"]) for e in activity["events"]] == [
            ("web-2", "command_refused")]
        # ...and in web-2's own history, once its next flush (storage.flush_interval) ran.
        mine = await until_true(lambda: web2.store.events(kinds=["command_refused"]))
        assert [e.event.host for e in mine] == ["web-2"]


async def test_what_a_hosts_local_policy_forbids_is_refused_there_and_audited_on_both_sides(
        tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]) -> None:
    victim = sleeper(sleepers)
    async with fleet(tmp_path) as (api, _web1, web2):
        r = await api.client.post("/api/command", headers=api.auth(), params={"host": "web-2"},
                                  json={"command": "remediate", "action": "stop_process",
                                        "params": {"pid": victim.pid}})
        assert r.status_code == 200, r.text
        decision = r.json()["decision"]
        assert decision["verdict"] == "refused" and decision["approval_id"] is None, decision
        # web-2's own audit log has the refusal; nothing waits, nothing ran.
        (entry,) = web2.audit.entries(kind="decision")
        assert entry.verdict == "refused" and entry.host == "web-2"
        assert web2.audit.pending() == [] and victim.poll() is None
        # The central's history has it too, as web-2 published it.
        refused = await until_true(lambda: [e for e in stored(api.runtime, "remediation")
                                       if isinstance(e, RemediationEvent)
                                       and e.verdict == "refused"])
        assert refused[0].host == "web-2" and refused[0].action == "stop_process"
        assert api.runtime.audit.entries() == []  # the central ran nothing itself


async def test_services_across_hosts_and_what_a_dead_or_hung_host_shows(
        tmp_path: Path) -> None:
    async with fleet(tmp_path) as (api, _web1, web2):
        async def app_listed() -> Any:
            body = (await api.client.get("/api/services")).json()
            return body if body["services"] else None
        body = await until(app_listed)
        assert [(s["host"], s["name"]) for s in body["services"]] == [("web-1", "app")]
        assert body["unreachable"] == []
        one = (await api.client.get("/api/services", params={"host": "web-2"})).json()
        assert one["services"] == []
        # A reset goes to the named host's remediator: web-2 has no service app.
        r = await api.client.post("/api/actions/reset", json={"service": "app"},
                                  headers=api.auth(), params={"host": "web-2"})
        assert r.status_code == 404 and "app" in r.text
        r = await api.client.post("/api/actions/reset", json={"service": "app"},
                                  headers=api.auth(), params={"host": "web-1"})
        assert r.status_code == 200 and r.json()["target"] == "service:app"

        # Agent commands go to the named host's agents (the host agent's set).
        r = await api.client.post("/api/command", headers=api.auth(), params={"host": "web-1"},
                                  json={"command": "health_check", "target": "all"})
        assert r.status_code == 200, r.text
        assert sorted((x["host"], x["agent"], x["ok"]) for x in r.json()["replies"]) == [
            ("web-1", "communicator", True), ("web-1", "remediator", True),
            ("web-1", "sensor", True)]
        r = await api.client.post("/api/command", headers=api.auth(), params={"host": "web-1"},
                                  json={"command": "pause", "target": "analyzer"})
        assert r.status_code == 404 and "no agent 'analyzer'" in r.text

        # web-2 dies: the central still knows it; nobody answers for it.
        await web2.stop()
        GONE.append(web2)
        body = (await api.client.get("/api/services")).json()
        assert [(s["host"], s["name"]) for s in body["services"]] == [("web-1", "app")]
        (dead,) = body["unreachable"]
        assert dead["host"] == "web-2" and dead["status"] == 503
        r = await api.client.post("/api/actions/1/approve", headers=api.auth(),
                                  params={"host": "web-2"})
        assert r.status_code == 503
        assert "host web-2 did not answer" in r.json()["detail"]
        assert "nothing was changed" in r.json()["detail"]

        # A hung web-2 (it takes the request and never answers): the list waits at most the
        # per-host timeout, and says so.
        async def never(_event: Event) -> Event:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")
        unserve = api.runtime.bus.serve(command_topic("web-2", "remediator"), never)
        try:
            started = time.monotonic()
            body = (await api.client.get("/api/services")).json()
            assert time.monotonic() - started < 5
            assert [s["host"] for s in body["services"]] == ["web-1"]
            (hung,) = body["unreachable"]
            assert hung["host"] == "web-2" and hung["status"] == 504
            approvals = (await api.client.get("/api/actions/approvals")).json()
            assert [p["host"] for p in approvals["unreachable"]] == ["web-2"]
        finally:
            unserve()


async def test_a_snapshot_delivered_twice_is_counted_on_metrics_and_hosts(
        tmp_path: Path) -> None:
    async with fleet(tmp_path) as (api, _web1, _web2):
        snap = await until_true(lambda: api.runtime.store.latest_snapshot("web-1"))
        before = (await api.client.get("/api/hosts")).json()["duplicate_snapshots"]
        # The same snapshot again (what a spool replay past the broker's window delivers).
        await api.runtime.bus.publish("metrics.web-1", snap)

        async def counted() -> Any:
            body = (await api.client.get("/api/hosts")).json()
            return body if body["duplicate_snapshots"] > before else None
        body = await until(counted)
        assert body["duplicate_snapshots"] == before + 1 and body["rejected"] == {}
        exposition = (await api.client.get("/metrics")).text
        assert (f'watchkeeper_duplicate_snapshots_total{{host="central"}} '
                f'{float(before + 1)}') in exposition
        # The in-process bus refuses nothing: the counter is there, at zero samples.
        assert "# TYPE watchkeeper_bus_rejected_total counter" in exposition


async def test_a_hosts_configuration_is_read_and_patched_from_the_central_under_its_rules(
        tmp_path: Path) -> None:
    async with fleet(tmp_path) as (api, web1, _web2):
        central_before = api.runtime.config.current.thresholds.cpu_warning
        r = await api.client.patch("/api/config", headers=api.auth(), params={"host": "web-1"},
                                   json={"thresholds": {"cpu_warning": 71}})
        assert r.status_code == 200, r.text
        assert r.json()["changed"] == ["thresholds.cpu_warning"]
        assert r.json()["config"]["thresholds"]["cpu_warning"] == 71
        assert web1.config.current.thresholds.cpu_warning == 71
        assert api.runtime.config.current.thresholds.cpu_warning == central_before
        shown = (await api.client.get("/api/config", params={"host": "web-1"})).json()
        assert shown["config"]["thresholds"]["cpu_warning"] == 71
        assert shown["config"]["api"]["token"] in (None, "**********")
        # What the host runs or may do changes only in its own config file: web-1 refuses,
        # and its refusal is on the central's record.
        r = await api.client.patch("/api/config", headers=api.auth(), params={"host": "web-1"},
                                   json={"remediation": {"actions": {"stop_process": "auto"}}})
        assert r.status_code == 422, r.text
        assert "local policy changes only in the config file on the host" in r.text
        assert web1.config.current.remediation.actions["stop_process"] == "approve"
        refused = await until_true(lambda: [e for e in stored(api.runtime, "command_refused")
                                            if isinstance(e, CommandRefused)
                                            and e.command == "config_patch"])
        assert refused[0].host == "web-1" and refused[0].code == "invalid"
