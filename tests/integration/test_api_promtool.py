"""GET /metrics passes `promtool check metrics` (format and lint), on a real server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from watchkeeper.agents.remediator import RemediatorAgent
from watchkeeper.remediation.policy import ActionRequest

from .test_api_harness import Api, api_settings, serve_api, until

#: Debian's `prometheus` package puts it here; scripts/test installs it in CI.
PROMTOOL_HINT = ("promtool not found: install it (Debian/Ubuntu: apt-get install prometheus; "
                 "or the promtool binary from a Prometheus release) so /metrics can be "
                 "checked against Prometheus' own parser and linter")


def promtool() -> str:
    """Path of promtool; a missing tool fails the test, never skips it."""
    found = shutil.which("promtool") or next(
        (p for p in ("/usr/bin/promtool", "/usr/local/bin/promtool") if Path(p).exists()), None)
    assert found is not None, PROMTOOL_HINT
    return found


async def _request_approval(api: Api) -> int:
    """An action waiting for approval: api_settings puts notify_only in approve mode."""
    remediator = next(a for a in api.runtime.agents if isinstance(a, RemediatorAgent))
    await remediator.submit(ActionRequest(action="notify_only", host=api.runtime.host,
                                          params={"message": "promtool check"}))
    # One per target waits at a time: a rule may have proposed it first, either will do.
    return api.runtime.audit.pending()[0].id


async def test_prometheus_exposition_passes_promtool(tmp_path: Path) -> None:
    tool = promtool()
    # A declared service, so the per-service families have samples too.
    sleeper = {"start": [sys.executable, "-c", "import time; time.sleep(600)"],
               "checks": [{"process": True}]}
    async with serve_api(api_settings(tmp_path, services={"sleeper": sleeper})) as api:
        async def have_snapshot() -> bool:
            return (await api.client.get("/api/metrics")).status_code == 200

        await until(have_snapshot)
        # One outcome in the audit log (an approved action ran) and one still pending, so
        # every family of the exposition has samples.
        first = await _request_approval(api)
        r = await api.client.post(f"/api/actions/{first}/approve", headers=api.auth())
        assert r.status_code == 200, r.text
        remediator = next(a for a in api.runtime.agents if isinstance(a, RemediatorAgent))
        await remediator.wait_idle()

        async def have_outcome() -> bool:
            return bool(api.runtime.audit.entries(kind="outcome", limit=1))

        await until(have_outcome)
        await _request_approval(api)

        r = await api.client.get("/metrics")
    assert r.status_code == 200, r.text
    content_type = r.headers["content-type"]
    assert content_type.startswith("text/plain"), content_type
    # 0.0.4 is the classic text format; prometheus_client >= 0.22 labels the same text 1.0.0.
    assert any(f"version={v}" in content_type for v in ("0.0.4", "1.0.0")), content_type
    text = r.text
    for family in ("watchkeeper_memory_percent", "watchkeeper_agent_up",
                   "watchkeeper_alerts_open", "watchkeeper_action_outcomes",
                   "watchkeeper_actions_pending", "watchkeeper_processes",
                   "watchkeeper_memory_used_bytes", "watchkeeper_uptime_seconds"):
        assert f"\n# TYPE {family} gauge" in "\n" + text, family
    assert "\n# TYPE watchkeeper_agent_restarts_total counter" in text
    assert "\nwatchkeeper_agent_restarts_total{" in text
    assert "\n# TYPE watchkeeper_service_up gauge" in text
    assert 'watchkeeper_service_up{host="' in text and 'service="sleeper"} 1.0' in text
    assert "\n# TYPE watchkeeper_service_restarts_total counter" in text
    assert 'service="sleeper"} 0.0' in text
    (pending,) = [line for line in text.splitlines()
                  if line.startswith("watchkeeper_actions_pending{")]
    assert pending.endswith(" 1.0"), pending

    proc = subprocess.run([tool, "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=30, check=False)
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    problems = [line for line in output.splitlines() if line.strip()]
    assert proc.returncode == 0 and not problems, (
        f"promtool check metrics exited {proc.returncode}:\n" + "\n".join(problems))
