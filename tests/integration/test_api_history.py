"""GET /api/history over a real runtime: a managed process the runtime started is killed
(SIGKILL) and restarted by remediation; the history shows it as one incident.

Remediation settings are the defaults (backoff 1 s, stable_window_s 5); the API binds to
loopback, where reads need no token (one test binds off loopback to check the read token).
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .test_api_harness import READER, Api, api_settings, serve_api, until
from .test_remediator import free_port
from .test_services_api import _resolved, settings, stored_alerts, web


async def history(api: Api, **params: str) -> dict[str, Any]:
    r = await api.client.get("/api/history", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _with_incident(api: Api) -> dict[str, Any] | None:
    body = await history(api)
    done = [i for i in body["incidents"] if i["state"] == "resolved" and i["actions"]]
    return body if done else None


async def test_a_killed_service_restarted_by_remediation_is_one_incident(
        tmp_path: Path) -> None:
    port = free_port()
    async with serve_api(settings(tmp_path, {"web": web(port)})) as api:
        empty = await history(api)  # nothing happened yet: an answer, not an error
        assert empty["incidents"] == [] and empty["by_action"] == []
        assert empty["ttd"] == {"count": 0, "mean_s": None, "p50_s": None, "p90_s": None}
        status = await api.runtime.services.wait_healthy("web", timeout_s=10)
        assert status.pid is not None
        killed = time.time()
        os.kill(status.pid, signal.SIGKILL)  # the runtime started it for this test
        alerts = await until(lambda: _resolved(stored_alerts(api, "web")), timeout=20)
        body = await until(lambda: _with_incident(api), timeout=10)

        (inc,) = body["incidents"]
        assert inc["host"] == api.runtime.host and inc["severity"] == "critical"
        fired = datetime.fromisoformat(alerts[0]["at"])
        resolved = datetime.fromisoformat(alerts[-1]["at"])
        since = datetime.fromisoformat(alerts[0]["since"])
        assert abs(since.timestamp() - killed) < 1.0  # the exit, not the next tick
        assert inc["start"] == alerts[0]["since"]
        assert datetime.fromisoformat(inc["end"]) == resolved
        assert inc["ttd_s"] == (fired - since).total_seconds() and inc["ttd_s"] < 1.0
        assert inc["ttr_s"] == (resolved - fired).total_seconds()
        assert inc["ttr_s"] >= 5.0  # the restart had to stay up for the stability window
        assert [a["rule"] for a in inc["alerts"]] == ["service"]
        assert [(a["action"], a["target"], a["success"]) for a in inc["actions"]] == [
            ("restart_service", "web", True)]
        assert body["by_action"] == [{"key": "restart_service", "successes": 1,
                                      "failures": 0, "success_rate": 1.0}]
        assert body["by_target"][0]["key"] == f"{api.runtime.host}/web"
        assert body["ttd"]["count"] == 1 and body["ttr"]["p50_s"] == inc["ttr_s"]
        (svc,) = body["services"]
        assert svc["service"] == "web" and svc["down_s"] > 0
        assert 0 < svc["uptime_percent"] < 100
        (host,) = body["hosts"]
        assert host["host"] == api.runtime.host and host["uptime_percent"] > 90

        # A range before all of it holds none of it.
        before = await history(api, **{"from": "2026-01-01T00:00:00Z",
                                       "to": "2026-01-01T01:00:00Z"})
        assert before["incidents"] == [] and before["services"] == []


async def test_bad_ranges_are_422_with_the_reason(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        for params, said in (({"from": "yesterday"}, "from='yesterday' is not a time"),
                             ({"to": "-1h", "from": "-1m"}, "must be before to"),
                             ({"from": "-9999d"}, "longer than 366 days"),
                             ({"from": "x" * 100}, "at most 64 characters"),
                             ({"from": "9999-12-31T23:59:59Z", "to": "now"},
                              "is in the future")):
            r = await api.client.get("/api/history", params=params)
            assert r.status_code == 422, params
            assert said in r.text, r.text
        r = await api.client.get("/api/history", params={"from": "-15m", "to": "now"})
        assert r.status_code == 200


async def test_the_history_needs_the_read_token_off_loopback(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path), bind_host="0.0.0.0") as api:
        assert (await api.client.get("/api/history")).status_code == 401
        r = await api.client.get("/api/history", headers=api.auth(READER))
        assert r.status_code == 200 and r.json()["incidents"] == []
