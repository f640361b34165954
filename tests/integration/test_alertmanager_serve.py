"""End to end: a real `watchkeeper serve` whose configuration file names one Alertmanager
route (written as a user writes it) posts its alert to a real Alertmanager, and Alertmanager's
own webhook receiver is told.

What differs from the defaults, and why: a memory warning at 0.1 % with no hold time, so an
alert fires at once on any machine; fast ticks; the LLM off (no network); the API on a free
port (never 8000); files in a temp dir. The route itself is as written in the README, with
every default (min_severity: warning, resend every 60 s).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.alertmanager_server import Alertmanager, WebhookReceiver, until

from .served import free_port as _free_port
from .test_cli import wk_env


def _memory_alert(am: Alertmanager) -> dict[str, object] | None:
    return next((a for a in am.alerts() if a["labels"].get("metric") == "memory.percent"),
                None)



def _stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM the test's serve (SIGKILL after 30 s); its stderr."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

def test_serve_posts_its_alert_to_alertmanager_and_the_receiver_is_told(
        tmp_path: Path, am: Alertmanager, webhook: WebhookReceiver) -> None:
    port = _free_port()
    (tmp_path / "watchkeeper.yaml").write_text(
        f"api: {{port: {port}}}\n"
        "host_name: wk-e2e\n"
        "agents: {check_interval: 0.2}\n"
        "thresholds: {memory_warning: 0.1, memory_critical: 100}\n"
        "analyzer: {for_s: 0}\n"
        "llm: {enabled: false}\n"
        "notify:\n"
        "  routes:\n"
        "    - name: team-am\n"
        f"      alertmanager: {am.url}\n", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "watchkeeper", "serve", "--no-console-log"],
                            cwd=tmp_path, env=wk_env(tmp_path), stderr=subprocess.PIPE,
                            text=True)
    try:
        got = until(lambda: _memory_alert(am), "the memory alert in Alertmanager", timeout=60)
        labels = got["labels"]
        assert isinstance(labels, dict)
        assert labels["alertname"] == "threshold"
        assert labels["severity"] == "warning"
        assert labels["host"] == labels["instance"] == "wk-e2e"
        notes = got["annotations"]
        assert isinstance(notes, dict)
        assert "memory" in notes["summary"].lower()
        assert notes["dashboard"] == got["generatorURL"] == f"http://127.0.0.1:{port}/"
        # Alertmanager itself delivers it to its receiver (group_wait 1s).
        note = until(lambda: [b for b in webhook.received()
                              if any(a["labels"].get("metric") == "memory.percent"
                                     for a in b["alerts"])], "the webhook notification")
        assert note[0]["status"] == "firing"
        # The agent is listed with the others while a route names an Alertmanager.
        token = (tmp_path / "data" / "api_token").read_text(encoding="utf-8").strip()
        agents = httpx.get(f"http://127.0.0.1:{port}/api/agents", timeout=10,
                           headers={"Authorization": f"Bearer {token}"}).json()
        names = {a["name"] for a in (agents["agents"] if isinstance(agents, dict) else agents)}
        assert "alertmanager" in names
    finally:
        err = _stop(proc)
    assert proc.returncode == 0, err


def test_a_reload_that_adds_the_first_alertmanager_route_starts_posting_and_removing_it_stops(
        tmp_path: Path, am: Alertmanager, webhook: WebhookReceiver) -> None:
    port = _free_port()
    base = (f"api: {{port: {port}}}\n"
            "host_name: wk-reload\n"
            "agents: {check_interval: 0.2}\n"
            "thresholds: {memory_warning: 0.1, memory_critical: 100}\n"
            "analyzer: {for_s: 0}\n"
            "llm: {enabled: false}\n")
    config = tmp_path / "watchkeeper.yaml"
    config.write_text(base, encoding="utf-8")  # no route at start
    proc = subprocess.Popen([sys.executable, "-m", "watchkeeper", "serve", "--no-console-log"],
                            cwd=tmp_path, env=wk_env(tmp_path), stderr=subprocess.PIPE,
                            text=True)
    url = f"http://127.0.0.1:{port}"

    def agents() -> set[str]:
        token = (tmp_path / "data" / "api_token").read_text(encoding="utf-8").strip()
        body = httpx.get(f"{url}/api/agents", timeout=10,
                         headers={"Authorization": f"Bearer {token}"}).json()
        return {a["name"] for a in (body["agents"] if isinstance(body, dict) else body)}

    def firing() -> bool:
        body = httpx.get(f"{url}/api/alerts", timeout=10).json()
        items = body["alerts"] if isinstance(body, dict) else body
        return any(a["metric"] == "memory.percent" for a in items)

    try:
        until(lambda: (tmp_path / "data" / "api_token").exists() and agents(),
              "the server", timeout=60)
        assert "alertmanager" not in agents()
        until(firing, "the memory alert", timeout=60)  # fires before the route exists
        config.write_text(base + "notify:\n  routes:\n    - name: team-am\n"
                          f"      alertmanager: {am.url}\n", encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        # The alert already open is posted, and Alertmanager's receiver is told.
        until(lambda: _memory_alert(am), "the memory alert in Alertmanager", timeout=30)
        until(lambda: [b for b in webhook.received()
                       if any(a["labels"].get("host") == "wk-reload" for a in b["alerts"])],
              "the webhook notification")
        assert "alertmanager" in agents()

        config.write_text(base, encoding="utf-8")  # the last route removed
        proc.send_signal(signal.SIGHUP)
        until(lambda: "alertmanager" not in agents(), "the alertmanager agent stopping")
        assert proc.poll() is None
    finally:
        err = _stop(proc)
    assert proc.returncode == 0, err
    log = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "logs").glob("*.log"))
    assert "the alertmanager agent started" in log
    assert "the alertmanager agent stopped" in log
    assert "takes effect" not in log
