"""The fleet from the command line, as the README has it: a real nats-server, `watchkeeper
serve --fleet --server URL` as the central and `watchkeeper agent --server URL` on a host,
each a process of its own. The central's API lists the host, serves its metrics, and calls
it down after it is killed (SIGKILL).

Settings changed from the defaults, and why: a subject prefix of the test's own (one broker
serves the session); ticks every 0.5 s and host_down_after_s 3 instead of 60, to take
seconds."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.nats_server import NatsServer

from .served import stop_all, until
from .test_api_security import start_serve
from .test_cli import wk, wk_env

_prefixes = itertools.count()



def test_a_central_and_a_host_agent_over_nats(tmp_path: Path, nats_server: NatsServer
                                              ) -> None:
    prefix = f"cli{os.getpid()}x{next(_prefixes)}"
    common = {"WATCHKEEPER_BUS__SUBJECT_PREFIX": prefix,
              "WATCHKEEPER_AGENTS__CHECK_INTERVAL": "0.5"}
    (tmp_path / "central").mkdir()
    (tmp_path / "web-1").mkdir()
    central_env = wk_env(tmp_path / "central", WATCHKEEPER_HOST_NAME="central",
                         WATCHKEEPER_ANALYZER__HOST_DOWN_AFTER_S="3", **common)
    agent_env = wk_env(tmp_path / "web-1", WATCHKEEPER_HOST_NAME="web-1", **common)
    central, url = start_serve(tmp_path / "central", central_env, "--fleet",
                               "--server", nats_server.url)
    agent = subprocess.Popen([sys.executable, "-m", "watchkeeper", "agent", "--server",
                              nats_server.url, "--no-console-log"], cwd=tmp_path / "web-1",
                             env=agent_env, stderr=subprocess.DEVNULL)
    try:
        def web_1() -> dict[str, Any] | None:
            hosts = httpx.get(f"{url}/api/hosts", timeout=5).json()
            return next((h for h in hosts["hosts"] if h["host"] == "web-1"
                         and h["health"] != "unknown"), None)

        until(web_1, "the central to hear from web-1")
        hosts = httpx.get(f"{url}/api/hosts", timeout=5).json()
        assert hosts["fleet"] is True and [h["host"] for h in hosts["hosts"]] == ["web-1"]
        snap = httpx.get(f"{url}/api/metrics", params={"host": "web-1"}, timeout=5)
        assert snap.status_code == 200 and snap.json()["host"] == "web-1"
        health = httpx.get(f"{url}/api/health", timeout=5).json()
        assert {a["name"] for a in health["agents"]} == {"analyzer", "communicator",
                                                         "notifier"}

        os.kill(agent.pid, signal.SIGKILL)  # the test's own process
        agent.wait(timeout=10)
        down = until(lambda: (h := web_1()) and h["health"] == "down" and h,
                      "web-1 to be down")
        assert down["open_alerts"] >= 1
        alerts = httpx.get(f"{url}/api/alerts", params={"host": "web-1"}, timeout=5).json()
        assert any(a["rule"] == "host_down" and a["severity"] == "critical"
                   for a in alerts["alerts"])
    finally:
        stop_all(agent, central)


def test_a_fleet_role_without_a_broker_is_a_usage_error(tmp_path: Path) -> None:
    out = wk(tmp_path, "agent")
    assert out.returncode == 2
    assert "watchkeeper agent reports to a NATS JetStream broker: give --server " \
        "nats://HOST:4222" in out.stderr
    out = wk(tmp_path, "serve", "--fleet")
    assert out.returncode == 2 and "serve --fleet follows its hosts" in out.stderr
    out = wk(tmp_path, "agent", "--server", "http://example.org")
    assert out.returncode == 2 and "bus.url" in out.stderr
