"""Mutating routes of the REST API: operator token, 401/404/409/422 paths, real server."""

from __future__ import annotations

import asyncio
import logging
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from watchkeeper.agents.remediator import RemediatorAgent
from watchkeeper.api.routes.config import overrides_path
from watchkeeper.remediation.policy import ActionRequest

from .test_api_harness import READER, Api, api_settings, serve_api, until

FUTURE = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()

#: Every mutating route with a body that would be valid.
MUTATIONS: list[tuple[str, str, Any]] = [
    ("POST", "/api/alerts/some-fingerprint/ack", None),
    ("POST", "/api/alerts/silences", {"matchers": {"metric": "cpu.*"}, "until": FUTURE}),
    ("DELETE", "/api/alerts/silences/silence-1", None),
    ("POST", "/api/actions/1/approve", None),
    ("POST", "/api/actions/1/reject", {"reason": "no"}),
    ("PATCH", "/api/config", {"thresholds": {"cpu_warning": 70}}),
    ("POST", "/api/command", {"command": "health_check", "target": "all"}),
]


async def _pending(api: Api) -> int:
    """One action waiting for approval (one per target waits at a time)."""
    remediator = next(a for a in api.runtime.agents if isinstance(a, RemediatorAgent))
    await remediator.submit(ActionRequest(action="notify_only", host=api.runtime.host,
                                          params={"message": "look at this"}))
    (approval,) = api.runtime.audit.pending()
    return approval.id


async def remediator_idle(api: Api) -> None:
    remediator = next(a for a in api.runtime.agents if isinstance(a, RemediatorAgent))
    await remediator.wait_idle()


@pytest.mark.parametrize("token", [None, READER, "wrong-token"])
async def test_every_mutation_needs_the_operator_token(tmp_path: Path, token: str | None
                                                       ) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        headers = api.auth(token) if token else {}
        for method, path, body in MUTATIONS:
            r = await api.client.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
        # Nothing changed.
        assert api.runtime.config.version == 1


async def test_reads_need_a_token_when_bound_off_loopback(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path), bind_host="0.0.0.0") as api:
        schema = (await api.client.get("/openapi.json")).json()
        reads = {p for p, ops in schema["paths"].items() if "get" in ops and "{" not in p}
        # Every read route the document lists, so a new one cannot be left open by mistake.
        assert {"/api/health", "/api/metrics", "/api/events", "/api/activity", "/metrics",
                "/api/metrics/history", "/api/alerts/silences"} <= reads
        for path in sorted(reads):
            r = await api.client.get(path)
            assert r.status_code == 401, path
            r = await api.client.get(path, headers=api.auth("nope"))
            assert r.status_code == 401, path
        assert (await api.client.get("/api/config", headers=api.auth(READER))).status_code \
            == 200
        assert (await api.client.get("/api/config", headers=api.auth())).status_code == 200
        # The read token reads, and only reads.
        r = await api.client.post("/api/command", headers=api.auth(READER),
                                  json={"command": "health_check"})
        assert r.status_code == 401


async def test_ack_and_silences(tmp_path: Path) -> None:
    # Every host uses more than 1% memory: a memory alert fires at once.
    settings = api_settings(tmp_path, thresholds={"memory_warning": 1, "memory_critical": 99.9},
                            analyzer={"for_s": 0})
    async with serve_api(settings) as api:
        async def memory_alert() -> dict[str, Any] | None:
            alerts = (await api.client.get("/api/alerts")).json()["alerts"]
            return next((a for a in alerts if a["metric"] == "memory.percent"), None)

        alert = await until(memory_alert)
        fp = alert["fingerprint"]
        r = await api.client.post(f"/api/alerts/{fp}/ack",
                                  headers={**api.auth(), "X-Watchkeeper-User": "carol"})
        assert r.status_code == 200 and r.json()["state"] == "acknowledged"
        assert r.json()["labels"]["acked_by"] == "carol"
        acked = (await api.client.get("/api/alerts", params={"state": "acknowledged"})).json()
        assert fp in [a["fingerprint"] for a in acked["alerts"]]
        r = await api.client.post("/api/alerts/no-such-alert/ack", headers=api.auth())
        assert r.status_code == 404 and "no-such-alert" in r.json()["detail"]

        r = await api.client.post("/api/alerts/silences", json={
            "matchers": {"metric": "memory.*"}, "until": FUTURE, "comment": "known"},
            headers={**api.auth(), "X-Watchkeeper-User": "dave@example.com"})
        assert r.status_code == 201, r.text
        assert r.json()["by"] == "dave@example.com"
        sid = r.json()["id"]
        listed = (await api.client.get("/api/alerts/silences")).json()["silences"]
        assert [s["id"] for s in listed] == [sid] and listed[0]["comment"] == "known"
        silenced = await until(memory_alert)
        assert silenced["silenced"] is True

        r = await api.client.delete(f"/api/alerts/silences/{sid}", headers=api.auth())
        assert r.status_code == 200 and r.json()["ok"] is True
        r = await api.client.delete(f"/api/alerts/silences/{sid}", headers=api.auth())
        assert r.status_code == 404

        past = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
        for body in ({"matchers": {}, "until": FUTURE},
                     {"matchers": {"metric": "x"}, "until": past},
                     {"matchers": {"metric": "x"}},
                     {"matchers": {"metric": "x\u0000"}, "until": FUTURE},
                     {"matchers": {"metric": "x"}, "until": FUTURE, "extra": 1},
                     ["not", "an", "object"]):
            r = await api.client.post("/api/alerts/silences", headers=api.auth(), json=body)
            assert r.status_code == 422, (body, r.text)


async def test_an_expired_approval_is_409_and_leaves_the_list(tmp_path: Path) -> None:
    # Long enough to be listed first on a loaded machine (0.5 s was not, in CI).
    settings = api_settings(tmp_path, remediation={"approval_ttl_s": 2.0})
    async with serve_api(settings) as api:
        approval_id = await _pending(api)
        (listed,) = (await api.client.get("/api/actions")).json()["pending"]
        asked = datetime.fromisoformat(listed["requested_at"])
        expires = datetime.fromisoformat(listed["expires_at"])
        assert expires - asked == timedelta(seconds=2)
        await asyncio.sleep(max(0.0, (expires - datetime.now(timezone.utc)).total_seconds())
                            + 0.05)
        assert (await api.client.get("/api/actions")).json()["pending"] == []
        for verb in ("approve", "reject"):
            r = await api.client.post(f"/api/actions/{approval_id}/{verb}", headers=api.auth())
            assert r.status_code == 409, r.text
            assert "expired unanswered at" in r.json()["detail"]
        entries = (await api.client.get("/api/actions")).json()["entries"]
        assert not [e for e in entries if e["kind"] in ("approved", "rejected")]
        r = await api.client.get("/api/actions/approvals", params={"state": "expired"})
        assert [(a["id"], a["state"]) for a in r.json()["approvals"]] == \
            [(approval_id, "expired")]
        assert (await api.client.get("/api/actions/approvals?state=pending")).json()[
            "approvals"] == []
        for query in ("state=stale", "limit=0", "limit=1001"):
            r = await api.client.get(f"/api/actions/approvals?{query}")
            assert r.status_code == 422, query


async def test_who_acts_is_recorded_as_named(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        first = await _pending(api)
        for bad in ("x" * 65, "a;b", "", "<img>", "alice\tbob"):
            r = await api.client.post(f"/api/actions/{first}/approve",
                                      headers={**api.auth(), "X-Watchkeeper-User": bad})
            assert r.status_code == 422, (bad, r.text)
        assert [a.id for a in api.runtime.audit.pending()] == [first]  # nothing changed
        r = await api.client.post(f"/api/actions/{first}/approve",
                                  headers={**api.auth(), "X-Watchkeeper-User": "Alice Smith"})
        assert r.status_code == 200, r.text
        approval = api.runtime.audit.approval(first)
        assert approval is not None and approval.by == "Alice Smith"
        r = await api.client.get("/api/actions/approvals?state=approved")
        assert [(a["id"], a["by"]) for a in r.json()["approvals"]] == [(first, "Alice Smith")]
        await remediator_idle(api)
        second = await _pending(api)
        await api.client.post(f"/api/actions/{second}/reject", headers=api.auth())
        assert api.runtime.audit.approval(second).by == "api"  # type: ignore[union-attr]
        r = await api.client.post("/api/command", json={
            "command": "remediate", "action": "notify_only", "params": {"message": "hi"},
            "dry_run": True, "reason": "checking"},
            headers={**api.auth(), "X-Watchkeeper-User": "erin"})
        assert r.status_code == 200, r.text
        (asked,) = api.runtime.audit.entries(kind="decision", source="operator")
        assert asked.data["decision"]["request"]["reasoning"] == "erin: checking"


async def test_named_operators_act_as_themselves(tmp_path: Path) -> None:
    alice, bob = "alice-token-0123456789", "bob-token-0123456789ab"
    settings = api_settings(tmp_path, api={"operators": {"alice": alice, "Bob Smith": bob}})
    async with serve_api(settings, bind_host="0.0.0.0") as api:
        first = await _pending(api)
        # Alice's token cannot be used to act as someone else.
        r = await api.client.post(f"/api/actions/{first}/approve", headers={
            **api.auth(alice), "X-Watchkeeper-User": "Bob Smith"})
        assert r.status_code == 403, r.text
        assert r.json()["detail"] == "this token is alice's: it cannot act as Bob Smith"
        assert [a.id for a in api.runtime.audit.pending()] == [first]
        r = await api.client.post(f"/api/actions/{first}/approve", headers={
            **api.auth(alice), "X-Watchkeeper-User": "alice"})  # repeating it is fine
        assert r.status_code == 200, r.text
        assert api.runtime.audit.approval(first).by == "alice"  # type: ignore[union-attr]
        await remediator_idle(api)
        second = await _pending(api)
        r = await api.client.post(f"/api/actions/{second}/reject", headers=api.auth(bob))
        assert r.status_code == 200 and r.json()["by"] == "Bob Smith"
        # A named token reads too (bound off loopback, reads need a token), and the
        # configuration never shows it.
        r = await api.client.get("/api/config", headers=api.auth(alice))
        assert r.status_code == 200
        assert r.json()["config"]["api"]["operators"] == {"alice": "**********",
                                                          "Bob Smith": "**********"}
        assert alice not in r.text and bob not in r.text
        for wrong in ("alice", alice[:-1], bob + "x"):
            r = await api.client.post("/api/command", headers=api.auth(wrong),
                                      json={"command": "health_check"})
            assert r.status_code == 401, wrong


async def test_approve_and_reject(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="watchkeeper.agents.communicator")
    async with serve_api(api_settings(tmp_path)) as api:
        first = await _pending(api)
        body = (await api.client.get("/api/actions")).json()
        assert [p["id"] for p in body["pending"]] == [first]
        assert any(e["kind"] == "approval_requested" for e in body["entries"])

        r = await api.client.post(f"/api/actions/{first}/approve", headers=api.auth())
        assert r.status_code == 200, r.text
        assert r.json()["approval_id"] == first and r.json()["verdict"] == "auto"
        r = await api.client.post(f"/api/actions/{first}/approve", headers=api.auth())
        assert r.status_code == 409

        await remediator_idle(api)
        second = await _pending(api)
        r = await api.client.post(f"/api/actions/{second}/reject", headers=api.auth(),
                                  json={"reason": "not now"})
        assert r.status_code == 200 and r.json()["state"] == "rejected"
        assert r.json()["reason"] == "not now"

        async def rejected() -> list[dict[str, Any]]:
            body = (await api.client.get("/api/activity?kind=remediation")).json()
            return [e["event"] for e in body["events"] if e["event"]["phase"] == "rejected"]

        (told,) = await until(rejected)  # other dashboards and the log learn of it
        assert (told["approval_id"], told["by"], told["message"]) == (second, "api", "not now")
        assert any(f"approval #{second} rejected by api" in r.getMessage()
                   for r in caplog.records)
        r = await api.client.post(f"/api/actions/{second}/reject", headers=api.auth())
        assert r.status_code == 409
        assert (await api.client.get("/api/actions")).json()["pending"] == []

        for path in ("/api/actions/999/approve", "/api/actions/999/reject"):
            assert (await api.client.post(path, headers=api.auth())).status_code == 404
        for bad in (str(2**63), "0", "-1", "abc", "1.5", str(2**64)):
            r = await api.client.post(f"/api/actions/{bad}/approve", headers=api.auth())
            assert r.status_code == 422, (bad, r.text)
        r = await api.client.post(f"/api/actions/{2**63 - 1}/approve", headers=api.auth())
        assert r.status_code == 404
        r = await api.client.post("/api/actions/5/reject", headers=api.auth(),
                                  json={"reason": 5})
        assert r.status_code == 422


async def test_config_update_is_validated_applied_and_kept(tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    async with serve_api(settings) as api:
        r = await api.client.patch("/api/config", headers=api.auth(),
                                   json={"thresholds": {"cpu_warning": 70}})
        assert r.status_code == 200, r.text
        assert r.json()["changed"] == ["thresholds.cpu_warning"] and r.json()["version"] == 2
        assert api.runtime.config.current.thresholds.cpu_warning == 70
        path = overrides_path(settings)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert yaml.safe_load(path.read_text()) == {"thresholds": {"cpu_warning": 70}}

        r = await api.client.patch("/api/config", headers=api.auth(),
                                   json={"thresholds": {"cpu_warning": 99}})
        assert r.status_code == 422
        assert any("cpu_warning" in line for line in r.json()["detail"])
        r = await api.client.patch("/api/config", headers=api.auth(),
                                   json={"thresholds": {"cpu_warnin": 50}})
        assert r.status_code == 422 and "did you mean 'cpu_warning'" in r.json()["detail"][0]
        r = await api.client.patch("/api/config", headers=api.auth(),
                                   json={"api": {"token": "mine"}})
        assert r.status_code == 422
        # What runs and what may be deleted is set on the host only: the token is no shell.
        for patch, key in (
                ({"services": {"x": {"start": ["/bin/sh", "-c", "id"]}}}, "services"),
                ({"remediation": {"scripts": {"x": {"argv": ["/bin/sh"]}}}},
                 "remediation.scripts"),
                ({"remediation": {"cleanup_roots": [{"path": "/"}]}},
                 "remediation.cleanup_roots"),
                ({"remediation": {"log_files": [{"path": "/etc/passwd"}]}},
                 "remediation.log_files"),
                ({"llm": {"base_url": "http://elsewhere.example/v1"}}, "llm.base_url"),
                ({"llm": {"log_files": ["/etc/shadow"]}}, "llm.log_files"),
                ({"llm": {"mask_identifiers": False}}, "llm.mask_identifiers")):
            r = await api.client.patch("/api/config", headers=api.auth(), json=patch)
            assert r.status_code == 422, (patch, r.text)
            assert r.json()["detail"] == [f"{key}: decides what runs, what may be deleted or "
                                          "what leaves the host, so it changes only in the "
                                          "config file on the host (then SIGHUP)"]
        r = await api.client.patch("/api/config", headers=api.auth(),
                                   json={"host_name": "elsewhere"})  # names every stored row
        assert r.status_code == 422
        assert r.json()["detail"] == ["host_name: changes only in the config file, with a "
                                      "restart"]
        r = await api.client.patch("/api/config", headers=api.auth(), json=[1, 2])
        assert r.status_code == 422
        # JSON types are strict: false is not a threshold of 0, "90" is not 90.
        r = await api.client.patch("/api/config", headers=api.auth(),
                                   json={"thresholds": {"cpu_warning": False,
                                                        "cpu_critical": "90"}})
        assert r.status_code == 422
        assert r.json()["detail"] == [
            "thresholds.cpu_warning: Input should be a valid number (got false) [from api]",
            'thresholds.cpu_critical: Input should be a valid number (got "90") [from api]']
        r = await api.client.patch("/api/config", headers=api.auth(),
                                   json={"llm": {"api_key": 12}})
        assert r.status_code == 422 and "12" not in str(r.json()["detail"])
        assert api.runtime.config.version == 2  # nothing invalid was applied
        assert yaml.safe_load(path.read_text()) == {"thresholds": {"cpu_warning": 70}}


async def test_commands(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        r = await api.client.post("/api/command", headers=api.auth(),
                                  json={"command": "health_check", "target": "all"})
        assert r.status_code == 200
        replies = r.json()["replies"]
        assert {x["agent"] for x in replies} == {"sensor", "analyzer", "remediator",
                                                 "communicator", "notifier"}
        assert all(x["ok"] for x in replies)
        for command in ("pause", "resume", "restart"):
            r = await api.client.post("/api/command", headers=api.auth(),
                                      json={"command": command, "target": "analyzer"})
            assert r.status_code == 200 and r.json()["replies"][0]["ok"], r.text
        r = await api.client.post("/api/command", headers=api.auth(),
                                  json={"command": "health_check", "target": "nobody"})
        assert r.status_code == 404
        for body in ({"command": "explode"}, {}, {"command": "pause", "target": 3}):
            r = await api.client.post("/api/command", headers=api.auth(), json=body)
            assert r.status_code == 422, body


async def test_errors_are_json_without_stack_traces(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        checks: list[tuple[httpx.Response, int]] = [
            (await api.client.get("/api/nothing-here"), 404),
            (await api.client.delete("/api/health"), 405),
            (await api.client.get("/api/alerts/silences/x%00y"), 400),
            (await api.client.post("/api/alerts/a%00b/ack", headers=api.auth()), 400),
            (await api.client.get("/api/metrics/history?metric=cpu.percent&dimension=a%00")
             , 400),
            (await api.client.post("/api/command", headers={
                **api.auth(), "content-type": "application/json"}, content=b"{not json"), 422),
            (await api.client.patch("/api/config", headers=api.auth(),
                                    content=b"{" + b" " * 100_000 + b"}"), 413),
        ]
        for r, status in checks:
            assert r.status_code == status, (r.request.url, r.text)
            body = r.json()
            assert set(body) == {"error", "detail"} and body["error"]
            assert "Traceback" not in r.text and "File \"" not in r.text
            assert "default-src 'none'" in r.headers["content-security-policy"]

        async def chunks() -> Any:
            for _ in range(100):
                yield b" " * 1024

        r = await api.client.patch("/api/config", headers=api.auth(), content=chunks())
        assert r.status_code == 413


async def test_docs_render_offline_with_a_strict_csp(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        r = await api.client.get("/docs")
        assert r.status_code == 200 and "swagger" in r.text.lower()
        csp = r.headers["content-security-policy"]
        assert "script-src 'self' 'sha256-" in csp and "unsafe-eval" not in csp
        assert "http" not in r.text.replace("http-equiv", "")  # nothing from a CDN
        assert "script-src 'self' 'unsafe-inline'" not in csp
        js = await api.client.get("/static-offline-docs/swagger-ui-bundle.js")
        assert js.status_code == 200 and len(js.content) > 100_000
        schema = (await api.client.get("/openapi.json")).json()
        assert "/api/command" in schema["paths"]
        assert set(schema["components"]["securitySchemes"]) == {"OperatorToken"}
        assert "security" not in schema["paths"]["/api/health"]["get"]
        # The config patch is typed in the docs: every section it may change, nothing required.
        body = schema["paths"]["/api/config"]["patch"]["requestBody"]["content"]
        assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/ConfigPatch"}
        patch = schema["components"]["schemas"]["ConfigPatch"]
        assert {"thresholds", "remediation", "agents"} <= set(patch["properties"])
        assert not {"api", "storage", "logging", "host_name", "services"} \
            & set(patch["properties"])
        remediation = schema["components"]["schemas"]["SettingsRemediationConfig"]
        assert {"dry_run", "actions", "approval_ttl_s"} <= set(remediation["properties"])
        assert not {"scripts", "cleanup_roots", "log_files"} & set(remediation["properties"])
        llm = schema["components"]["schemas"]["SettingsLlmConfig"]
        assert {"enabled", "model", "max_calls_per_hour"} <= set(llm["properties"])
        assert not {"base_url", "api_key", "log_files"} & set(llm["properties"])
        thresholds = schema["components"]["schemas"]["SettingsThresholds"]
        assert "cpu_warning" in thresholds["properties"] and "required" not in thresholds
