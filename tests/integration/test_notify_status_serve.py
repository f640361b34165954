"""A broken pager is visible: a real `watchkeeper serve` whose route's receiver is down,
then up. GET /api/notify, /metrics (checked by promtool), the health and `watchkeeper notify
status` show the failures and the waiting messages growing, the health degraded naming the
route, then the delivery, the outbox empty and the health ok again; the counters are read
back after a restart.

Changed from the defaults, and why: ``notify.failing_after_s: 3`` (default 900: the test
cannot wait 15 minutes), a memory warning at 0.1 % with ``analyzer.for_s: 0`` (an alert at
once), the route's ``group_wait_s: 0`` and ``repeat_interval_s: 1`` (a message a second
while it fires, so the waiting count grows), fast ticks, and the other thresholds at 99 %
(no CPU or disk alert of this busy machine's own in the final "ok").
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.notify_receiver import Receiver, free_port

from .test_api_promtool import promtool
from .test_cli import wk_env
from .test_notify_serve import Serve as _Serve

SECRET = "Zq7-notify-status-77y"


class Serve(_Serve):
    def __init__(self, root: Path, receiver: Receiver) -> None:
        super().__init__(root, receiver)
        hook = receiver.url("ops").replace("json://", f"json://wk:{SECRET}@")
        (root / "watchkeeper.yaml").write_text(
            f"api: {{port: {self.port}}}\n"
            "agents: {check_interval: 0.2}\n"
            "thresholds: {memory_warning: 0.1, memory_critical: 100, cpu_warning: 99, "
            "cpu_critical: 100, swap_warning: 99, swap_critical: 100, disk_warning: 99, "
            "disk_critical: 100}\n"
            "analyzer: {for_s: 0}\n"
            "llm: {enabled: false}\n"
            "notify:\n"
            "  failing_after_s: 3\n"
            "  routes:\n"
            f"    - name: ops\n      url: {hook}\n      group_wait_s: 0\n"
            "      group_by: [fingerprint]\n      repeat_interval_s: 1\n", encoding="utf-8")

    def token(self) -> str:
        return (self.root / "data" / "api_token").read_text(encoding="utf-8").strip()

    def text(self, path: str) -> str:
        r = httpx.get(self.url + path, timeout=10,
                      headers={"Authorization": f"Bearer {self.token()}"})
        r.raise_for_status()
        return r.text

    def ops(self) -> dict[str, Any]:
        (row,) = self.api("/api/notify")["routes"]
        assert row["name"] == "ops"
        return dict(row)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "watchkeeper", *args], cwd=self.root,
                              env=wk_env(self.root, COLUMNS="200", NO_COLOR="1"),
                              capture_output=True, text=True, timeout=60)


def sample(text: str, name: str) -> float:
    found = re.search(rf'^{name}{{route="ops"}} (\S+)$', text, re.MULTILINE)
    assert found, (name, text[-2000:])
    return float(found.group(1))


def route_reasons(body: dict[str, Any]) -> list[str]:
    return [r for r in body["reasons"] if "route ops" in r]


def test_a_broken_pager_shows_then_clears(tmp_path: Path) -> None:
    receiver = Receiver(free_port())  # not started: the channel is down
    serve = Serve(tmp_path, receiver)
    try:
        serve.start()
        first = serve.until(lambda: (row := serve.ops())["failed_total"] >= 1 and row,
                            "a failed try")
        assert first["kind"] == "json" and first["url"] == "**********"
        assert "Connection error" in first["last_error"]
        serve.until(lambda: serve.ops()["waiting"] > first["waiting"],
                    "more messages waiting")
        degraded = serve.until(
            lambda: (h := serve.api("/api/health"))["status"] == "degraded" and h,
            "the health degraded")
        (reason,) = route_reasons(degraded)
        assert reason.startswith("notification route ops has failed for ")
        assert route_reasons(serve.api("/api/system"))
        row = serve.ops()
        assert row["state"] == "failing" and row["failing_since"] and row["next_retry_at"]
        assert row["oldest_waiting_s"] > 0 and row["sent_total"] == 0

        metrics = serve.text("/metrics")
        assert sample(metrics, "watchkeeper_notifications_failed_total") >= 1
        assert sample(metrics, "watchkeeper_notify_outbox_messages") >= 2
        assert sample(metrics, "watchkeeper_notify_outbox_oldest_seconds") > 0
        assert sample(metrics, "watchkeeper_notifications_sent_total") == 0
        assert sample(metrics, "watchkeeper_notifications_dropped_total") == 0
        checked = subprocess.run([promtool(), "check", "metrics"], input=metrics.encode(),
                                 capture_output=True, timeout=30, check=False)
        assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), \
            checked

        shown = serve.cli("notify", "status", "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["routes"][0]["state"] == "failing"
        table = serve.cli("notify", "status")
        assert table.returncode == 0, table.stderr
        assert re.search(r"ops\s+json\s+failing", table.stdout), table.stdout
        assert re.search(r"^ops: .*A Connection error occurred", table.stdout, re.MULTILINE)
        for out in (metrics, shown.stdout, table.stdout, json.dumps(degraded)):
            assert SECRET not in out

        # Someone silences the host's alerts (no more messages; and an alert this busy shared
        # machine may raise of its own, a runaway process, does not decide the final status),
        # and the channel comes back: everything waiting is delivered, after the backoff.
        r = httpx.post(f"{serve.url}/api/alerts/silences", timeout=10,
                       headers={"Authorization": f"Bearer {serve.token()}"},
                       json={"matchers": {"host": "*"}, "until": "2999-01-01T00:00:00Z"})
        assert r.status_code == 201, r.text
        receiver.start()
        done = serve.until(lambda: (row := serve.ops())["waiting"] == 0
                           and row["state"] == "ok" and row, "the outbox emptied", 90)
        assert done["failing_since"] is None and done["last_success_at"]
        healthy = serve.api("/api/health")
        deadline = time.monotonic() + 30
        while healthy["status"] != "ok":
            assert time.monotonic() < deadline, (healthy["reasons"], [
                (a["rule"], a["summary"]) for a in serve.api("/api/alerts")["alerts"]])
            time.sleep(0.1)
            healthy = serve.api("/api/health")
        assert route_reasons(healthy) == []
        # Each message that waited arrived once: the count sent is what the receiver has.
        final = serve.ops()
        assert final["sent_total"] == len(receiver.messages("ops")) >= 2, (
            done, final, receiver.titles("ops"))

        serve.stop(signal.SIGTERM)
        serve.start()
        again = serve.ops()
        assert (again["sent_total"], again["failed_total"]) == (final["sent_total"],
                                                                final["failed_total"])
    finally:
        serve.stop()
        receiver.stop()
    log = (tmp_path / "logs" / "agent_system.log").read_text(encoding="utf-8")
    assert SECRET not in log


def test_notify_status_without_a_server_exits_3(tmp_path: Path) -> None:
    shown = subprocess.run([sys.executable, "-m", "watchkeeper", "notify", "status", "--url",
                            f"http://127.0.0.1:{free_port()}"], cwd=tmp_path,
                           env=wk_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert shown.returncode == 3 and "no watchkeeper answers" in shown.stderr
