"""Service outages a user can see and act on, through the real API (uvicorn + httpx) over
the real runtime, with managed processes the runtime started and the test kills (SIGKILL).

Remediation settings are the defaults (grace 60 s, cooldown 60 s, backoff 1 s doubling,
flap_max_attempts 3 in 300 s, stable_window_s 5); where a test changes the sensor's
check_interval it says why.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from watchkeeper.config import Settings
from watchkeeper.remediation.servicebook import clock_time

from ..conftest import make_settings
from .test_api_harness import OPERATOR, Api, serve_api, until
from .test_remediator import free_port

PY = sys.executable


def settings(tmp_path: Path, services: dict[str, Any], **agents: Any) -> Settings:
    return make_settings(tmp_path, api={"token": OPERATOR}, llm={"enabled": False},
                         agents=agents, services=services)


def web(port: int) -> dict[str, Any]:
    return {"start": [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            "checks": [{"http": f"http://127.0.0.1:{port}/", "timeout_s": 1}]}


async def service_alerts(api: Api, name: str) -> list[dict[str, Any]]:
    r = await api.client.get("/api/alerts")
    assert r.status_code == 200
    return [a for a in r.json()["alerts"] if a["rule"] == "service" and a["dimension"] == name]


async def service(api: Api, name: str) -> dict[str, Any]:
    r = await api.client.get("/api/services")
    assert r.status_code == 200
    (found,) = [s for s in r.json()["services"] if s["name"] == name]
    return found


async def stored_alerts(api: Api, name: str) -> list[dict[str, Any]]:
    r = await api.client.get("/api/activity", params={"kind": "alert", "limit": 1000})
    return [e["event"] for e in r.json()["events"]
            if e["event"]["rule"] == "service" and e["event"]["dimension"] == name]


def samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[s.labels["service"]] = s.value
    return out


async def test_a_crash_is_an_alert_at_once_that_resolves_once_the_restart_held(
        tmp_path: Path) -> None:
    port = free_port()
    async with serve_api(settings(tmp_path, {"web": web(port)})) as api:
        status = await api.runtime.services.wait_healthy("web", timeout_s=10)
        assert status.pid is not None
        up = await until(lambda: _condition(api, "web", "ok"))
        assert up["restarts"] == 0 and up["pid"] == status.pid and up["uptime_s"] >= 0
        assert up["last_check_at"] is not None and up["last_check_ok"] is True
        killed = time.time()
        os.kill(status.pid, signal.SIGKILL)  # the runtime started it for this test
        (alert,) = await until(lambda: service_alerts(api, "web"), timeout=5)
        # From the exit, not from the next 5 s tick.
        assert datetime.fromisoformat(alert["at"]).timestamp() - killed < 1.0
        assert alert["severity"] == "critical" and alert["state"] == "firing"
        assert alert["summary"].startswith("Service web ")
        assert "killed by SIGKILL" in alert["summary"]
        assert alert["labels"]["service"] == "web"
        assert alert["suggested_actions"] == []  # the remediator heals services itself
        # Resolves once the restart stayed up for the stability window (5 s).
        await until(lambda: _none(service_alerts(api, "web")), timeout=15)
        history = await until(lambda: _resolved(stored_alerts(api, "web")), timeout=5)
        assert history[-1]["summary"] == "Service web is running and healthy again"
        assert history[-1]["context"] == "watchkeeper restarted it 1 time"
        now = await service(api, "web")
        assert now["condition"] == "ok" and now["restarts"] == 1
        assert now["pid"] not in (None, status.pid)
        assert now["last_action"] == "restart_service" and now["last_outcome"] == "ok"
        assert "stable for 5 s" in now["last_message"]
        text = (await api.client.get("/metrics")).text
        assert samples(text, "watchkeeper_service_up") == {"web": 1.0}
        assert samples(text, "watchkeeper_service_restarts_total") == {"web": 1.0}


async def _condition(api: Api, name: str, condition: str) -> dict[str, Any] | None:
    found = await service(api, name)
    return found if found["condition"] == condition else None


async def _none(alerts: Any) -> bool:
    return not await alerts


async def _resolved(alerts: Any) -> list[dict[str, Any]] | None:
    found = await alerts
    return found if found and found[-1]["state"] == "resolved" else None


async def test_a_flapped_service_is_an_alert_says_so_and_a_person_can_reset_it(
        tmp_path: Path) -> None:
    """Today remediation gives up on it silently: no alert, and no way back but a restart
    of watchkeeper."""
    dies = {"start": [PY, "-c", "import time; time.sleep(2); raise SystemExit(1)"],
            "checks": [{"process": True}]}
    async with serve_api(settings(tmp_path, {"dies": dies})) as api:
        failing = await until(lambda: _condition(api, "dies", "failing"), timeout=30)
        hint = ('reset it with POST /api/actions/reset {"service": "dies"} or the Reset '
                "button on the dashboard")
        assert failing["remediation"] == (
            "watchkeeper restarted it 3 times; remediation gave up (flap protection: 3 "
            f"attempts within 300 s, flap_max_attempts 3); {hint}")
        assert failing["refused"] == "flap" and failing["restarts"] == 3
        assert failing["last_outcome"] == "unstable"
        (alert,) = await until(lambda: service_alerts(api, "dies"), timeout=5)
        alert = await until(lambda: _context(api, "dies", "remediation gave up"), timeout=5)
        assert alert["severity"] == "critical" and alert["labels"]["condition"] == "failing"
        assert alert["summary"].startswith("Service dies is failing; remediation gave up")
        assert alert["context"] == failing["remediation"]
        # On the way it said when the next try would be (backoff), not only in the audit log.
        history = await until(lambda: _with(stored_alerts(api, "dies"), "next try at"))
        assert any("restart refused: backoff, next try at " in (a["context"] or "")
                   for a in history)
        # An alert like any other: acknowledged through the alerts API.
        r = await api.client.post(f"/api/alerts/{alert['fingerprint']}/ack",
                                  headers=api.auth())
        assert r.status_code == 200 and r.json()["state"] == "acknowledged"

        audit_before = len(api.runtime.audit.entries(limit=10_000))
        for bad, code in (({"service": "dise"}, 404), ({"target": "pid:4242424"}, 404),
                          ({"target": "service:nope"}, 404), ({}, 422),
                          ({"service": "dies", "target": "service:dies"}, 422),
                          ({"target": "dies"}, 422)):
            r = await api.client.post("/api/actions/reset", headers=api.auth(), json=bad)
            assert r.status_code == code, (bad, r.text)
        r = await api.client.post("/api/actions/reset", headers=api.auth(),
                                  json={"service": "dise"})
        assert "unknown service 'dise' (did you mean 'dies'?)" in r.json()["detail"]
        r = await api.client.post("/api/actions/reset", json={"service": "dies"})
        assert r.status_code == 401
        assert len(api.runtime.audit.entries(limit=10_000)) == audit_before  # nothing changed
        assert (await service(api, "dies"))["condition"] == "failing"

        r = await api.client.post("/api/actions/reset", json={"service": "dies"},
                                  headers={**api.auth(), "X-Watchkeeper-User": "alice"})
        assert r.status_code == 200, r.text
        assert r.json() == {"target": "service:dies", "cleared": True, "by": "alice",
                            "detail": "service:dies reset: automatic tries allowed again"}
        (entry,) = api.runtime.audit.entries(action="reset")
        assert entry.actor == "alice" and entry.target == "dies"
        # Automatic tries are allowed again: it is restarted at once.
        again = await until(lambda: _restarts(api, "dies", 4), timeout=5)
        assert again["condition"] in ("restarting", "down", "crash_looping")
        alert = await until(lambda: _context(api, "dies", "watchkeeper restarted it 4 times"))
        assert "remediation gave up" not in alert["context"]


async def _context(api: Api, name: str, text: str) -> dict[str, Any] | None:
    found = await service_alerts(api, name)
    return found[0] if found and text in (found[0]["context"] or "") else None


async def _with(alerts: Any, text: str) -> list[dict[str, Any]] | None:
    found = await alerts
    return found if any(text in (a["context"] or "") for a in found) else None


async def _restarts(api: Api, name: str, n: int) -> dict[str, Any] | None:
    found = await service(api, name)
    return found if found["restarts"] >= n else None


async def test_a_refused_restart_says_why_and_when_on_the_service_and_its_alert(
        tmp_path: Path) -> None:
    """A running service failing its checks is restarted by a rule, which the default
    60 s start-up grace holds back. Today only the audit log says so. (check_interval
    0.5 s instead of 5 s: the two unhealthy ticks a rule waits for come sooner.)"""
    port = free_port()  # nothing listens here: the check fails, the process runs
    deaf = {"start": [PY, "-c", "import time; time.sleep(600)"],
            "checks": [{"http": f"http://127.0.0.1:{port}/", "timeout_s": 1}]}
    async with serve_api(settings(tmp_path, {"deaf": deaf}, check_interval=0.5)) as api:
        held = await until(lambda: _refused(api, "deaf"), timeout=15)
        assert held["refused"] == "grace" and held["condition"] in ("starting", "unhealthy")
        # Just started, it may not answer yet: "starting" for the stability window (5 s).
        held = await until(lambda: _condition(api, "deaf", "unhealthy"), timeout=15)
        at = datetime.fromisoformat(held["next_try_at"])
        assert 0 < at.timestamp() - time.time() <= 60
        expected = f"restart refused: grace, next try at {clock_time(at)}"
        assert held["remediation"] == expected
        assert held["last_check_ok"] is False and held["last_check"] == "connection refused"
        alert = await until(lambda: _context(api, "deaf", expected), timeout=5)
        assert alert["severity"] == "warning"
        assert alert["summary"].startswith("Service deaf fails its health checks: ")


async def _refused(api: Api, name: str) -> dict[str, Any] | None:
    found = await service(api, name)
    return found if found["refused"] else None


async def test_services_route_needs_the_read_token_off_loopback(tmp_path: Path) -> None:
    async with serve_api(settings(tmp_path, {}), bind_host="0.0.0.0") as api:
        r = await api.client.get("/api/services")
        assert r.status_code == 401
        r = await api.client.get("/api/services", headers=api.auth())
        assert r.status_code == 200 and r.json()["services"] == []
        assert isinstance(r, httpx.Response)


async def test_a_restart_waiting_for_approval_says_so_on_the_service_and_its_alert(
        tmp_path: Path) -> None:
    """restart_service in approve mode (the one setting changed: that is the point)."""
    port = free_port()
    sets = make_settings(tmp_path, api={"token": OPERATOR}, llm={"enabled": False},
                         services={"web": web(port)},
                         remediation={"actions": {"restart_service": "approve"}})
    async with serve_api(sets) as api:
        status = await api.runtime.services.wait_healthy("web", timeout_s=10)
        assert status.pid is not None
        await until(lambda: _condition(api, "web", "ok"))
        os.kill(status.pid, signal.SIGKILL)  # the runtime started it for this test
        waiting = await until(lambda: _refused(api, "web"), timeout=5)
        (approval,) = api.runtime.audit.pending()
        assert waiting["refused"] == "approval" and waiting["condition"] == "down"
        assert waiting["remediation"] == f"restart waits for approval #{approval.id}"
        alert = await until(lambda: _context(api, "web", "waits for approval"), timeout=5)
        assert alert["context"] == waiting["remediation"]
        r = await api.client.post(f"/api/actions/{approval.id}/approve", headers=api.auth())
        assert r.status_code == 200 and r.json()["verdict"] == "auto"
        await until(lambda: _none(service_alerts(api, "web")), timeout=15)
