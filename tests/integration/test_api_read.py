"""Read routes of the REST API against a real server on loopback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from watchkeeper.series import METRICS

from .test_api_harness import Api, api_settings, serve_api, until


async def _ok(api: Api, path: str) -> httpx.Response | None:
    r = await api.client.get(path)
    return r if r.status_code == 200 else None


def assert_secure_headers(r: httpx.Response) -> None:
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "access-control-allow-origin" not in r.headers  # CORS stays closed


async def test_health_system_agents_bus(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        r = await until(lambda: _ok(api, "/api/health"))
        body = r.json()
        assert body["status"] == "ok" and body["ready"] and body["live"]
        assert {a["name"] for a in body["agents"]} == {"sensor", "analyzer", "remediator",
                                                       "communicator", "notifier"}
        assert_secure_headers(r)

        r = await until(lambda: _ok(api, "/api/system"))
        system = r.json()
        assert system["host"] == api.runtime.host and system["version"]
        assert system["uptime_s"] >= 0 and system["agents_running"] == 5

        agents = (await api.client.get("/api/agents")).json()["agents"]
        assert all(a["state"] == "running" for a in agents)
        assert {"restarts", "checks", "last_success"} <= set(agents[0])

        topics = (await api.client.get("/api/bus")).json()["topics"]
        assert any(t["topic"].startswith("metrics.") and t["published"] > 0 for t in topics)


async def test_health_is_503_when_an_agent_is_not_running(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        await until(lambda: _ok(api, "/api/health"))
        r = await api.client.post("/api/command", headers=api.auth(),
                                  json={"command": "pause", "target": "sensor"})
        assert r.status_code == 200
        r = await api.client.get("/api/health")
        assert r.status_code == 503
        states = {a["name"]: a["state"] for a in r.json()["agents"]}
        assert states["sensor"] == "paused" and r.json()["ready"] is False


async def test_metrics_current_and_history(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        r = await until(lambda: _ok(api, "/api/metrics"))
        snap = r.json()
        assert snap["host"] == api.runtime.host and snap["memory"]["percent"] > 0

        async def history() -> httpx.Response | None:
            r = await api.client.get("/api/metrics/history",
                                     params={"metric": "memory.percent"})
            return r if r.status_code == 200 and len(r.json()["points"]) >= 2 else None

        body = (await until(history)).json()
        assert body["metric"] == "memory.percent" and body["dimension"] == ""
        assert all(0 < p["avg"] <= 100 for p in body["points"])
        r = await api.client.get("/api/metrics/history", params={
            "metric": "disk.percent", "dimension": "/", "step": 60})
        assert r.status_code == 200 and r.json()["step_s"] == 60

        bad: list[dict[str, str | int]] = [
            {"metric": "cpu.bogus"}, {}, {"metric": "cpu.percent", "step": 0},
            {"metric": "cpu.percent", "start": "2026-01-02T00:00:00Z",
             "end": "2026-01-01T00:00:00Z"},
            {"metric": "cpu.percent", "start": "not-a-date"},
            {"metric": "cpu.percent", "dimension": "x" * 2000}]
        for params in bad:
            r = await api.client.get("/api/metrics/history", params=params)
            assert r.status_code == 422, (params, r.text)
            assert r.json()["error"] in ("validation_error", "unprocessable_content",
                                         "unprocessable_entity")
        r = await api.client.get("/api/metrics/history", params={"metric": "cpu.bogus"})
        assert all(m in r.json()["detail"] for m in METRICS)  # it names the valid metrics


async def test_prometheus_exposition_parses(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        await until(lambda: _ok(api, "/api/metrics"))
        r = await api.client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        assert {"watchkeeper_memory_percent", "watchkeeper_agent_up", "watchkeeper_alerts_open",
                "watchkeeper_actions_pending", "watchkeeper_agent_state"} <= set(families)
        up = {s.labels["agent"]: s.value for s in families["watchkeeper_agent_up"].samples}
        assert up == {"sensor": 1.0, "analyzer": 1.0, "remediator": 1.0, "communicator": 1.0,
                      "notifier": 1.0}
        mounts = {s.labels["dimension"] for s in families["watchkeeper_disk_percent"].samples}
        assert "/" in mounts


async def test_alerts_config_and_actions_lists(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        r = await api.client.get("/api/alerts")
        assert r.status_code == 200 and r.json() == {"alerts": []}
        assert (await api.client.get("/api/alerts", params={"state": "firing"})).status_code \
            == 200
        assert (await api.client.get("/api/alerts", params={"state": "bogus"})).status_code \
            == 422
        assert (await api.client.get("/api/alerts/silences")).json() == {"silences": []}

        r = await api.client.get("/api/actions")
        body = r.json()
        assert r.status_code == 200 and body["entries"] == [] and body["pending"] == []
        assert body["audit_chain"]["ok"] is True and body["audit_chain"]["broken_at"] is None
        assert (await api.client.get("/api/actions", params={"limit": 0})).status_code == 422

        config = (await api.client.get("/api/config")).json()
        assert config["version"] == 1
        assert config["config"]["api"]["token"] == "**********"
        assert config["config"]["api"]["read_token"] == "**********"
        assert config["config"]["llm"]["api_key"] == "**********"


async def test_history_over_any_range_is_bounded_by_the_data(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        r = await api.client.get("/api/metrics/history", params={
            "metric": "cpu.percent", "start": "0001-01-01T00:00:00Z",
            "end": "9999-12-31T23:59:59Z"})
        assert r.status_code == 200, r.text


#: Any memory use is critical; the CPU, swap and disk rules are off and a runaway takes a
#: day, so a busy test machine (another run's loop mount at 83 %, a process pinned for 10
#: minutes) adds nothing.
ONE_CRITICAL = {"thresholds": {"memory_warning": 0.5, "memory_critical": 1.0},
                "analyzer": {"for_s": 0, "runaway_minutes": 1440,
                             "rules": {"cpu.percent": {"enabled": False},
                                       "cpu.load_per_core": {"enabled": False},
                                       "memory.swap_percent": {"enabled": False},
                                       "disk.percent": {"enabled": False},
                                       "disk.inodes_percent": {"enabled": False}}}}


async def test_health_and_system_tell_the_truth_about_open_alerts(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path, **ONE_CRITICAL)) as api:
        async def critical() -> httpx.Response | None:
            r = await api.client.get("/api/health")
            return r if r.json()["status"] == "critical" else None

        r = await until(critical)
        # The host has a problem, watchkeeper itself is fine: a liveness probe stays at 200.
        assert r.status_code == 200 and r.json()["ready"] is True
        assert r.json()["reasons"] == ["1 critical alert open"]
        system = (await api.client.get("/api/system")).json()
        assert system["status"] == "critical" and system["alerts"]["critical"] == 1
        (alert,) = [a for a in (await api.client.get("/api/alerts")).json()["alerts"]
                    if a["severity"] == "critical"]
        fp = alert["fingerprint"]

        # Acknowledged is still a problem; silenced is muted.
        r = await api.client.post(f"/api/alerts/{fp}/ack", headers=api.auth())
        assert r.status_code == 200
        body = (await api.client.get("/api/health")).json()
        assert body["status"] == "critical" and body["alerts"]["acknowledged"] == 1
        r = await api.client.post("/api/alerts/silences", headers=api.auth(), json={
            "matchers": {"fingerprint": fp}, "until": "2999-01-01T00:00:00Z"})
        assert r.status_code == 201, r.text
        body = (await api.client.get("/api/health")).json()
        assert (body["status"], body["alerts"]["silenced"]) == ("ok", 1), body
        assert (await api.client.get("/api/system")).json()["status"] == "ok"

        # An agent that is not running: degraded, and the probe says not ready.
        r = await api.client.post("/api/command", headers=api.auth(),
                                  json={"command": "pause", "target": "sensor"})
        assert r.status_code == 200
        r = await api.client.get("/api/health")
        assert (r.status_code, r.json()["status"]) == (503, "degraded")
        assert "agent sensor is paused" in r.json()["reasons"]


async def test_hosts_lists_this_host_with_its_health_and_alerts_filter_by_host(
        tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        r = await until(lambda: _ok_when(api, "/api/hosts",
                                         lambda b: b["hosts"][0]["health"] != "unknown"))
        body = r.json()
        assert body["fleet"] is False
        (me,) = body["hosts"]
        assert me["host"] == api.runtime.host and me["health"] in ("ok", "warning", "critical")
        assert me["last_seen"] and me["open_alerts"] >= 0
        none = (await api.client.get("/api/hosts", params={"health": "down"})).json()
        assert (none["fleet"], none["hosts"]) == (False, [])
        bad = await api.client.get("/api/hosts", params={"health": "sideways"})
        assert bad.status_code == 422
        other = await api.client.get("/api/alerts", params={"host": "not-this-one"})
        assert other.status_code == 200 and other.json() == {"alerts": []}


async def _ok_when(api: Api, path: str, good: Callable[[Any], bool]) -> httpx.Response | None:
    r = await api.client.get(path)
    return r if r.status_code == 200 and good(r.json()) else None
