"""An operator on a fleet's central acts on a host from the command line: `--host NAME` on
the commands that list or act. Real processes: a nats-server, `watchkeeper serve --fleet`,
`watchkeeper agent` on web-1, and the CLI itself.

Settings changed from the defaults, and why: a subject prefix of the test's own (one broker
serves the session); ticks every 0.5 s; on the agent, startup_grace_s 0 (the default holds
every action back for a minute after start)."""

from __future__ import annotations

import itertools
import json
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


def test_an_operator_on_the_central_lists_and_acts_on_a_host_with_host(
        tmp_path: Path, nats_server: NatsServer) -> None:
    prefix = f"clihosts{os.getpid()}x{next(_prefixes)}"
    common = {"WATCHKEEPER_BUS__SUBJECT_PREFIX": prefix,
              "WATCHKEEPER_AGENTS__CHECK_INTERVAL": "0.5"}
    for name in ("central", "web-1"):
        (tmp_path / name).mkdir()
    central_env = wk_env(tmp_path / "central", WATCHKEEPER_HOST_NAME="central", **common)
    agent_env = wk_env(tmp_path / "web-1", WATCHKEEPER_HOST_NAME="web-1",
                       WATCHKEEPER_REMEDIATION__STARTUP_GRACE_S="0", **common)
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    central, url = start_serve(tmp_path / "central", central_env, "--fleet",
                               "--server", nats_server.url)
    agent = subprocess.Popen([sys.executable, "-m", "watchkeeper", "agent", "--server",
                              nats_server.url, "--no-console-log"], cwd=tmp_path / "web-1",
                             env=agent_env, stderr=subprocess.DEVNULL)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        # The operator token is found in the central's data dir, as on the central itself.
        return wk(tmp_path / "central", *args, "--url", url, env=central_env)

    try:
        def web_1() -> dict[str, Any] | None:
            hosts = httpx.get(f"{url}/api/hosts", timeout=5).json()
            return next((h for h in hosts["hosts"] if h["host"] == "web-1"
                         and h["health"] != "unknown"), None)
        until(web_1, "the central to hear from web-1")

        out = cli("command", "remediate", "stop_process", f"pid={victim.pid}", "grace_s=5",
                  "--host", "web-1")
        assert out.returncode == 0, out.stderr
        assert "approve: stop_process" in out.stdout
        (approval_id,) = [line.split("#")[1].split(":")[0] for line in out.stdout.splitlines()
                          if "waits for approval #" in line]
        assert f"watchkeeper approve {approval_id} --host web-1" in out.stdout
        listed = cli("actions", "--json")
        assert listed.returncode == 0, listed.stderr
        pending = json.loads(listed.stdout)["pending"]
        assert [(p["host"], str(p["id"])) for p in pending] == [("web-1", approval_id)]

        # A central heals nothing itself: without --host, a clear no, and nothing runs.
        out = cli("approve", approval_id)
        assert out.returncode == 1 and "name the host to act on" in out.stderr
        out = cli("approve", approval_id, "--host", "web-9")
        assert out.returncode == 1 and "no host 'web-9' reports to this server" in out.stderr
        assert victim.poll() is None

        out = cli("approve", approval_id, "--host", "web-1")
        assert out.returncode == 0, out.stderr
        assert f"approval #{approval_id}: auto" in out.stdout
        assert victim.wait(timeout=20) == -signal.SIGTERM

        assert cli("services", "--host", "web-1").returncode == 0
        assert cli("alerts", "--host", "web-1").returncode == 0
        out = cli("config", "set", "thresholds.cpu_warning", "71", "--host", "web-1")
        assert out.returncode == 0 and "changed: thresholds.cpu_warning" in out.stdout
        out = cli("config", "get", "thresholds.cpu_warning", "--host", "web-1")
        assert out.returncode == 0 and out.stdout.strip() == "71.0"
        assert cli("config", "get", "thresholds.cpu_warning").stdout.strip() != "71.0"

        # web-1 dies: the list still answers (after the 2 s per-host wait: over NATS a dead
        # host's request times out), and names the host that did not.
        os.kill(agent.pid, signal.SIGKILL)  # the test's own process
        agent.wait(timeout=10)
        out = cli("services")
        assert out.returncode == 0, out.stderr
        assert "not listed, web-1 (504): host web-1 did not answer" in " ".join(
            out.stdout.split())
        out = cli("reset", "app", "--host", "web-1")
        assert out.returncode == 1 and "host web-1 did not answer" in out.stderr
    finally:
        victim.kill()
        victim.wait()
        stop_all(agent, central)
