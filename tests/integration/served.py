"""A real `watchkeeper serve` for tests that drive it from outside (the scriptable commands,
the terminal UI): started as a subprocess on a free loopback port with a temp data dir.

Its configuration differs from the defaults in what gives a client something to show, and
says so: a memory warning at 0.1 % that fires at once (an open alert to list and ack),
notify_only waiting for approval and no start-up grace (approvals to approve and reject),
one declared service, fast ticks. Its port is api.port in the configuration and its token
the generated api_token file: clients find both the way they do by default.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.notify_receiver import free_port as free_port  # one picker, below the ephemeral range

from .test_cli import wk_env


@dataclass
class Server:
    root: Path
    url: str
    token: str
    config: Path

    def api(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, self.url + path, json=body, timeout=10,
                             headers={"Authorization": f"Bearer {self.token}"})

    def wk(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`watchkeeper ARGS` with the server's config, as an operator on its host runs it."""
        return subprocess.run([sys.executable, "-m", "watchkeeper", *args], cwd=self.root,
                              env=wk_env(self.root, **{"COLUMNS": "200", "NO_COLOR": "1", **env}),
                              capture_output=True, text=True, timeout=60)

    def pending(self, message: str = "look at this") -> int:
        """A new action waiting for approval; its id (one per message: the same request
        again is the same approval)."""
        r = self.api("POST", "/api/command", {"command": "remediate", "action": "notify_only",
                                              "params": {"message": message}})
        assert r.status_code == 200, r.text
        approval_id = r.json()["decision"]["approval_id"]
        assert isinstance(approval_id, int), r.text
        return approval_id



def until(check: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except httpx.TransportError:
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def write_config(root: Path, port: int) -> Path:
    """The configuration described above, in ROOT/watchkeeper.yaml."""
    config = root / "watchkeeper.yaml"
    config.write_text(
        f"api: {{port: {port}}}\n"
        "agents: {check_interval: 0.2}\n"
        "thresholds: {memory_warning: 0.1, memory_critical: 100}\n"
        "analyzer: {for_s: 0}\n"
        "remediation: {startup_grace_s: 0, actions: {notify_only: approve}}\n"
        "llm: {enabled: false}\n"
        "services:\n"
        "  sleeper: {manager: process, start: [" + json.dumps(sys.executable) + ", -c, "
        "'import time; time.sleep(600)']}\n", encoding="utf-8")
    return config


def serve(root: Path) -> subprocess.Popen[str]:
    """`watchkeeper serve` in ROOT (its config and data dir), not yet answering."""
    return subprocess.Popen([sys.executable, "-m", "watchkeeper", "serve", "--no-console-log"],
                            cwd=root, env=wk_env(root), stderr=subprocess.DEVNULL, text=True)


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def stop_all(*procs: subprocess.Popen[Any]) -> None:
    """Stop each process of a test (SIGTERM, SIGKILL after 30 s) and close its pipes."""
    for proc in procs:
        if proc.poll() is None:
            stop(proc)
        else:
            proc.communicate()


def ready(root: Path, config: Path, port: int) -> Server:
    """The server in ROOT once it answers and its memory alert is open."""
    url = f"http://127.0.0.1:{port}"
    until(lambda: httpx.get(f"{url}/api/health", timeout=10).status_code == 200, "health")
    token = (root / "data" / "api_token").read_text(encoding="utf-8").strip()
    srv = Server(root, url, token, config)
    until(lambda: any(a["metric"] == "memory.percent"
                      for a in srv.api("GET", "/api/alerts").json()["alerts"]),
          "the memory alert")
    return srv
