"""`watchkeeper simulate` against a real `watchkeeper serve` started here: the run is
detected, named, and the report reads it back from the API.

The server differs from the defaults in what makes a test of minutes take seconds, and says
so: analyzer.runaway_minutes 0.05 (3 s instead of 10 min), runaway_cpu_percent 30 (this host's
two cores are shared with other sessions: a spinning process does not always get a whole
one), ticks of 0.5 s, no LLM, remediation.startup_grace_s 0 (no 60 s wait after the start
before the first restart). The remediation policy is otherwise the default (stop_process
waits for approval, restart_service is automatic). simulate finds the server the way it does
by default: api.port from the configuration, the token from the api_token file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .served import Server, stop
from .served import free_port as _free_port
from .served import until as _until
from .test_cli import wk_env

# exclusive: its simulations spin cores and crash services that the server must name
# as its own; another test's wk-sim-cpu beside it would be named instead.
pytestmark = [pytest.mark.exclusive,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="simulate runs on Linux only")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("simulate_server")
    port = _free_port()
    config = root / "watchkeeper.yaml"
    config.write_text(
        f"api: {{port: {port}}}\n"
        "agents: {check_interval: 0.5}\n"
        "analyzer: {runaway_minutes: 0.05, runaway_cpu_percent: 30}\n"
        "remediation: {startup_grace_s: 0}\n"
        "llm: {enabled: false}\n", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "watchkeeper", "serve", "--no-console-log"],
                            cwd=root, env=wk_env(root), stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        assert f"http://127.0.0.1:{port}/" in banner, banner
        url = f"http://127.0.0.1:{port}"
        _until(lambda: httpx.get(f"{url}/api/health", timeout=10).status_code == 200, "health")
        token = (root / "data" / "api_token").read_text(encoding="utf-8").strip()
        yield Server(root, url, token, config)
    finally:
        stop(proc)


def _simulate(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "watchkeeper", "simulate", *args],
                          cwd=server.root, env=wk_env(server.root, TMPDIR=str(server.root)),
                          capture_output=True, text=True, timeout=120)


def test_cpu_is_named_a_runaway_and_the_report_says_when(server: Server) -> None:
    out = _simulate(server, "cpu", "--duration", "12s", "--settle", "30", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    pid = report["run"]["pids"][0]
    seen = report["watchkeeper"]
    assert seen["url"] == server.url
    assert seen["alert"]["rule"] == "runaway"
    assert seen["alert"]["dimension"] == f"wk-sim-cpu[{pid}]"
    assert "wk-sim-cpu" in seen["alert"]["summary"]
    # Pinned for runaway_minutes (3 s) plus a tick or so, well inside the run.
    assert 3 <= seen["time_to_detect_s"] < 12
    assert seen["time_to_recover_s"] is not None and seen["time_to_recover_s"] < 30
    # Decided by the default policy: refused inside the start-up grace, else waiting for
    # an operator's approval; never stopped on its own.
    assert any(a["action"] == "stop_process" for a in seen["actions"]), seen["actions"]


def test_the_table_names_the_alert_and_the_recovery(server: Server) -> None:
    out = _simulate(server, "cpu", "--duration", "8s", "--settle", "30")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"watchkeeper {server.url}" in text
    assert "detected    after" in text and "runaway: Process wk-sim-cpu (pid " in text
    assert "recovered   alert resolved" in text
    assert "cleaned up  yes" in text


def test_without_a_server_it_says_so_and_reports_the_run(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "watchkeeper", "simulate", "cpu", "--duration",
                          "1s", "--url", f"http://127.0.0.1:{_free_port()}"],
                         cwd=tmp_path, env=wk_env(tmp_path, TMPDIR=str(tmp_path)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "not reachable, so only what the run did is reported" in out.stdout
    assert "ran " in out.stdout and "cleaned up  yes" in out.stdout


def test_service_crash_is_restarted_and_recovered(server: Server) -> None:
    out = _simulate(server, "service", "--duration", "20s", "--settle", "30", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    service = report["run"]["names"][0]
    assert service.startswith("wk-sim-demo-")
    seen = report["watchkeeper"]
    assert seen["alert"]["rule"] == "service" and seen["alert"]["dimension"] == service
    assert "killed by SIGKILL" in seen["alert"]["summary"]
    assert seen["time_to_detect_s"] < 5
    finished = [a for a in seen["actions"] if a["phase"] == "finished"]
    assert finished and finished[0]["action"] == "restart_service"
    assert finished[0]["outcome"] == "ok"
    # Restarted and healthy for the stability window (5 s), well before the demo's end.
    assert seen["resolved_summary"] == f"Service {service} is running and healthy again"
    assert 4 <= seen["time_to_recover_s"] < 20
    # Removed from the server afterwards: not declared, its process gone.
    assert report["run"]["cleaned"] is True
    names = [s["name"] for s in server.api("GET", "/api/services").json()["services"]]
    assert service not in names
    config = server.api("GET", "/api/config").json()["config"]
    assert service not in config["services"]


def test_crashloop_is_named_a_crash_loop(server: Server) -> None:
    out = _simulate(server, "crashloop", "--duration", "18s", "--settle", "20", "--json")
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)["watchkeeper"]
    words = [u["summary"] for u in seen["updates"]]
    assert any("is crash-looping" in w for w in words), words
    assert seen["resolved_at"] is not None
    assert json.loads(out.stdout)["run"]["cleaned"] is True


def test_forkstorm_is_named_by_the_default_rule(server: Server) -> None:
    # The default fork storm rule (+100 processes within 60 s, held for for_s 30 s) against
    # simulate's default 150 processes: named by the group, resolved when they are gone.
    out = _simulate(server, "forkstorm", "--duration", "38s", "--settle", "20", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["run"]["names"] == ["wk-sim-forkstor"]
    seen = report["watchkeeper"]
    assert seen["alert"]["rule"] == "fork_storm", seen
    assert "most of them are wk-sim-forkstor (151 now" in seen["alert"]["summary"]
    assert 30 <= seen["time_to_detect_s"] < 38
    assert seen["resolved_summary"].startswith("No fork storm any more")
    assert report["run"]["cleaned"] is True


def test_one_simulation_at_a_time(server: Server) -> None:
    first = server.api("POST", "/api/command", {"command": "simulate", "scenario": "service",
                                                "duration_s": 8})
    assert first.status_code == 200, first.text
    second = server.api("POST", "/api/command", {"command": "simulate",
                                                 "scenario": "crashloop", "duration_s": 8})
    assert second.status_code == 409
    assert "a simulation runs already" in second.json()["detail"]
    service = first.json()["simulation"]["service"]
    _until(lambda: service not in [s["name"] for s in
                                   server.api("GET", "/api/services").json()["services"]],
           "the demo removed", timeout=30)
