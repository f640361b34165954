"""Security corpus: ``host=`` on the routes that act (and the lists a central gathers from
its hosts). An operator names a host; the action reaches that host's agent and no other:
a name that is not a host reporting here is a 404 (or 422/400 for what is not a name) with
no command sent; another host's approval id, alert or silence is that host's 404; and a
hostile host's answer to a list is checked, tagged as its own, and never breaks the list or
passes for another host's.

A central (real uvicorn) and a real host agent web-1 share an in-process bus; web-2 is a
hostile host: it reports snapshots like any host and answers its remediator's commands with
what an attacker wants."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.bus import topic_matches
from watchkeeper.events import Command, CommandReply, Event
from watchkeeper.runtime import Runtime

from ..integration.test_api_harness import Api, api_settings, serve_api, until
from ..integration.test_fleet_remote_actions import host_settings
from ..integration.test_fleet_roles import SharedBus
from ..integration.test_fleet_roles import until as until_true

HOSTILE_HOSTS = {
    "nats-wildcard-star": "*",
    "nats-wildcard-tail": ">",
    "subject-injection": "web-1.>",
    "another-agents-subject": "web-1.remediator",
    "path-traversal": "../web-1",
    "sql-quote": "web-1' OR '1'='1",
    "newline-header": "web-1\nX-Injected: 1",
    "nul": "web-1\x00",
    "bidi-override": "web\u202e1",
    "too-long": "w" * 300,
    "empty": "",
    "case-twin": "WEB-1",
}

#: (method, path, body) of every route that acts on a host; {id} is a pending approval's.
MUTATING = [
    ("POST", "/api/actions/{id}/approve", None),
    ("POST", "/api/actions/{id}/reject", {"reason": "x"}),
    ("POST", "/api/actions/reset", {"service": "app"}),
    ("POST", "/api/command", {"command": "remediate", "action": "notify_only",
                              "params": {"message": "x"}}),
    ("POST", "/api/command", {"command": "pause", "target": "sensor"}),
    ("POST", "/api/alerts/{fp}/ack", None),
    ("POST", "/api/alerts/silences", {"matchers": {"metric": "*"}, "until": "{until}"}),
    ("DELETE", "/api/alerts/silences/nope", None),
]
READS = ["/api/services", "/api/actions", "/api/actions/approvals"]


class Recorder(SharedBus):
    """The shared bus, keeping the topic of every command request."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    async def request(self, topic: str, event: Event, *, timeout: float = 5.0) -> Event:
        if topic_matches("command.>", topic):
            self.asked.append(topic)
        return await super().request(topic, event, timeout=timeout)


#: What the hostile web-2 answers to its remediator's reads.
HOSTILE_ANSWERS: dict[str, dict[str, Any]] = {}


@asynccontextmanager
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[Api, Runtime, Recorder]]:
    bus = Recorder()
    web1 = Runtime(host_settings(tmp_path, "web-1"), bus=bus, role="agent")
    central = api_settings(tmp_path / "central", thresholds={"memory_warning": 0.1},
                           analyzer={"for_s": 0}).model_copy(update={"host_name": "central"})
    async with serve_api(central, bus=bus, role="central") as api:
        await web1.start()
        try:
            snap = await until_true(lambda: api.runtime.store.latest_snapshot("web-1"))

            async def hostile(event: Event) -> Event:
                assert isinstance(event, Command)
                return CommandReply(host="web-2", agent="remediator", command=event.command,
                                    ok=True, message="done", request_id=event.request_id,
                                    result=HOSTILE_ANSWERS.get(event.command, {}))
            unserve = bus.serve("command.web-2.remediator", hostile)
            await bus.publish("metrics.web-2", snap.model_copy(update={"host": "web-2"}))

            async def both() -> bool:
                hosts = (await api.client.get("/api/hosts")).json()["hosts"]
                return [h["host"] for h in hosts] == ["web-1", "web-2"]
            await until(both)
            yield api, web1, bus
            unserve()
        finally:
            await web1.stop()


async def _pending_on_web1(api: Api, sleeper: subprocess.Popen[bytes]) -> int:
    r = await api.client.post("/api/command", headers=api.auth(), params={"host": "web-1"},
                              json={"command": "remediate", "action": "stop_process",
                                    "params": {"pid": sleeper.pid}})
    assert r.status_code == 200, r.text
    approval_id: int = r.json()["decision"]["approval_id"]
    return approval_id


@pytest.fixture
def sleeper() -> Any:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait(10)


async def test_a_host_name_that_does_not_report_here_reaches_no_agent(
        tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    async with fleet(tmp_path) as (api, web1, bus):
        approval_id = await _pending_on_web1(api, sleeper)
        fp = (await until(lambda: _alert_of(api, "web-1")))["fingerprint"]
        until_at = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
        for name, host in HOSTILE_HOSTS.items():
            for method, path, body in MUTATING:
                path = path.format(id=approval_id, fp=fp)
                if body and body.get("until") == "{until}":
                    body = {**body, "until": until_at}
                before = list(bus.asked)
                r = await api.client.request(method, path, json=body, headers=api.auth(),
                                             params={"host": host})
                assert r.status_code in (400, 404, 422), (name, method, path, r.text)
                assert bus.asked == before, (name, path, bus.asked[len(before):])
                assert "X-Injected" not in r.headers and "\x00" not in r.text, name
                if r.status_code == 404:
                    assert "no host" in r.json()["detail"], (name, path)
            for path in READS:
                r = await api.client.get(path, params={"host": host})
                assert r.status_code in (400, 404, 422), (name, path, r.status_code)
        # Nothing happened on web-1.
        assert [a.id for a in web1.audit.pending()] == [approval_id]
        assert sleeper.poll() is None


async def _alert_of(api: Api, host: str) -> dict[str, Any] | None:
    alerts = (await api.client.get("/api/alerts", params={"host": host})).json()["alerts"]
    return next((a for a in alerts if a["metric"] == "memory.percent"), None)


@pytest.mark.parametrize("case", [
    "approve-web1s-approval-as-web2s", "reject-web1s-approval-as-web2s",
    "ack-web1s-alert-as-web2s", "unsilence-a-web1-silence-as-web2s",
    "silence-host-param-and-matcher-disagree"])
async def test_another_hosts_approval_alert_or_silence_is_not_this_ones(
        tmp_path: Path, sleeper: subprocess.Popen[bytes], case: str) -> None:
    async with fleet(tmp_path) as (api, web1, _bus):
        approval_id = await _pending_on_web1(api, sleeper)
        auth = api.auth()
        until_at = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
        if case.startswith(("approve", "reject")):
            verb = case.split("-")[0]
            r = await api.client.post(f"/api/actions/{approval_id}/{verb}", headers=auth,
                                      params={"host": "web-2"})
            # web-2 (hostile) says "done" with an empty result: not a valid reply, a 500 or
            # 502 at worst, never web-1's approval decided.
            assert r.status_code >= 400, r.text
        elif case == "ack-web1s-alert-as-web2s":
            fp = (await until(lambda: _alert_of(api, "web-1")))["fingerprint"]
            r = await api.client.post(f"/api/alerts/{fp}/ack", headers=auth,
                                      params={"host": "web-2"})
            assert r.status_code == 404 and "on host web-2" in r.text
            assert (await _alert_of(api, "web-1") or {}).get("state") == "firing"
        elif case == "unsilence-a-web1-silence-as-web2s":
            made = await api.client.post("/api/alerts/silences", headers=auth,
                                         params={"host": "web-1"},
                                         json={"matchers": {"metric": "x"}, "until": until_at})
            assert made.status_code == 201 and made.json()["matchers"]["host"] == "web-1"
            r = await api.client.delete(f"/api/alerts/silences/{made.json()['id']}",
                                        headers=auth, params={"host": "web-2"})
            assert r.status_code == 404 and "for host web-2" in r.text
            silences = (await api.client.get("/api/alerts/silences")).json()["silences"]
            assert [s["id"] for s in silences] == [made.json()["id"]]
        else:
            r = await api.client.post("/api/alerts/silences", headers=auth,
                                      params={"host": "web-1"},
                                      json={"matchers": {"host": "web-2"}, "until": until_at})
            assert r.status_code == 422 and "give one or the other" in r.text
            assert (await api.client.get("/api/alerts/silences")).json()["silences"] == []
        assert [a.id for a in web1.audit.pending()] == [approval_id]
        assert sleeper.poll() is None


#: A hostile host's answers to the lists: (id, verb, result, what the list must show).
ANSWERS = [
    pytest.param("services", {"services": [{"name": "db", "host": "web-1", "manager": "x",
                                            "condition": "ok", "state": "running",
                                            "restarts": 0}]},
                 "tagged-as-its-own", id="services-claiming-to-be-another-hosts"),
    pytest.param("services", {"services": "not a list"}, "unreachable-502",
                 id="services-not-a-list"),
    pytest.param("services", {"services": [{"name": "x", "condition": "pwned"}]},
                 "unreachable-502", id="services-with-invalid-fields"),
    pytest.param("services", {}, "unreachable-502", id="services-missing"),
    pytest.param("approvals", {"approvals": [{"id": 1, "state": "pending"}]},
                 "unreachable-502", id="approvals-not-approvals"),
    pytest.param("approvals", {"approvals": None}, "unreachable-502",
                 id="approvals-null"),
]


@pytest.mark.parametrize(("verb", "result", "expect"), ANSWERS)
async def test_a_hostile_hosts_answer_to_a_list_is_checked_and_its_own(
        tmp_path: Path, verb: str, result: dict[str, Any], expect: str) -> None:
    HOSTILE_ANSWERS.clear()
    HOSTILE_ANSWERS[verb] = result
    try:
        async with fleet(tmp_path) as (api, _web1, _bus):
            path = "/api/services" if verb == "services" else "/api/actions/approvals"
            r = await api.client.get(path)
            assert r.status_code == 200, r.text
            body = r.json()
            rows = body["services" if verb == "services" else "approvals"]
            if expect == "tagged-as-its-own":
                assert sorted((s["host"], s["name"]) for s in rows) == [("web-1", "app"),
                                                                       ("web-2", "db")]
                assert body["unreachable"] == []
            else:
                assert [p["host"] for p in body["unreachable"]] == ["web-2"]
                assert body["unreachable"][0]["status"] == 502
                assert all(s["host"] == "web-1" for s in rows)
            one = await api.client.get(path, params={"host": "web-2"})
            assert one.status_code == (200 if expect == "tagged-as-its-own" else 502), one.text
    finally:
        HOSTILE_ANSWERS.clear()


@pytest.mark.parametrize("patch", [
    pytest.param({"remediation": {"actions": {"stop_process": "auto"}}},
                 id="every-kill-automatic"),
    pytest.param({"remediation": {"dry_run": True}}, id="healing-switched-to-dry-run"),
    pytest.param({"remediation": {"budget_per_hour": 100000}}, id="budget-lifted"),
    pytest.param({"remediation": {"startup_grace_s": 0, "flap_max_attempts": 1000}},
                 id="brakes-off"),
    pytest.param({"remediation": None}, id="policy-reset-to-defaults"),
    pytest.param({"remediation": "auto"}, id="policy-replaced-by-a-string"),
    pytest.param({"services": {"evil": {"start": ["/bin/sh", "-c", "id"]}}},
                 id="a-service-that-runs-a-command"),
])
async def test_a_compromised_central_cannot_patch_a_hosts_local_policy(
        tmp_path: Path, patch: dict[str, Any]) -> None:
    """Straight over the bus, as a compromised central would send it (no API in between):
    the host refuses, changing nothing."""
    from watchkeeper.agents.commands import CommandFailed, ask

    async with fleet(tmp_path) as (api, web1, bus):
        before = web1.config.current.model_dump()
        with pytest.raises(CommandFailed) as refused:
            await ask(bus, "web-1", "runtime", "config_patch", {"patch": patch},
                      actor="central", timeout=5, local=False)
        assert refused.value.code == "invalid", refused.value.message
        assert web1.config.current.model_dump() == before
        r = await api.client.patch("/api/config", headers=api.auth(), params={"host": "web-1"},
                                   json=patch)
        assert r.status_code == 422, r.text
        assert web1.config.current.model_dump() == before
