"""The scriptable commands (`watchkeeper status`, `alerts`, `approve`, ...) as a user runs
them: real subprocesses against a real `watchkeeper serve` started here.

The server is the `server` fixture (tests/integration/conftest.py, served.py): how its
configuration differs from the defaults, and why, is said there.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from .served import Server, free_port, serve, stop, until
from .test_cli import wk_env

READS = {"status": "/api/system", "agents": "/api/agents", "metrics": "/api/metrics",
         "alerts": "/api/alerts",
         "services": "/api/services", "actions": "/api/actions?limit=20",
         "logs": "/api/activity?limit=50"}
#: What moves between two reads of a paused server: how long it has been up, and when the
#: audit chain was last verified.
VOLATILE = {"uptime_s", "host_uptime_s", "checked_at"}


def _memory_alert(server: Server) -> dict[str, Any]:
    """The alert the configuration guarantees (others may come and go with the load)."""
    alerts = server.api("GET", "/api/alerts").json()["alerts"]
    found: dict[str, Any] = next(a for a in alerts if a["metric"] == "memory.percent")
    return found


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _steady(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _steady(v) for k, v in data.items() if k not in VOLATILE}
    if isinstance(data, list):
        return [_steady(v) for v in data]
    return data


@pytest.fixture
def paused(server: Server) -> Iterator[Server]:
    """Agents paused, so two reads a moment apart say the same."""
    assert server.api("POST", "/api/command", {"command": "pause"}).status_code == 200
    try:
        yield server
    finally:
        server.api("POST", "/api/command", {"command": "resume"})


@pytest.mark.parametrize("command", sorted(READS))
def test_json_is_what_the_api_returned(paused: Server, command: str) -> None:
    out = paused.wk(command, "--json")
    assert out.returncode == 0, out.stderr
    api = paused.api("GET", READS[command])  # with the command's default limit
    assert _steady(json.loads(out.stdout)) == _steady(api.json())


def test_tables_show_the_key_facts(server: Server) -> None:
    approval_id = server.pending()
    alert = _memory_alert(server)
    status = server.wk("status")
    assert status.returncode == 0, status.stderr
    assert re.search(r"status +(warning|critical) *\n", status.stdout), status.stdout
    assert re.search(r"alerts +\d+ critical, [1-9]\d* warning", status.stdout), status.stdout
    assert "running" in status.stdout and "\x1b[" not in status.stdout  # NO_COLOR
    agents = server.wk("agents")
    for name in ("sensor", "analyzer", "remediator", "communicator"):
        assert name in agents.stdout
    snapshot = server.api("GET", "/api/metrics").json()
    metrics = server.wk("metrics")
    assert metrics.returncode == 0, metrics.stderr
    assert f"of {snapshot['cpu']['count_logical']} cores" in metrics.stdout
    assert "MOUNT" in metrics.stdout and snapshot["disks"][0]["mountpoint"] in metrics.stdout
    alerts = server.wk("alerts")
    assert alert["fingerprint"] in alerts.stdout and "Memory is" in alerts.stdout
    services = server.wk("services")
    assert "sleeper" in services.stdout and "process" in services.stdout
    actions = server.wk("actions")
    assert "waiting for approval" in actions.stdout
    assert any(line.split()[:2] == [str(approval_id), "notify_only"]
               for line in actions.stdout.splitlines()), actions.stdout
    assert "audit chain ok" in actions.stdout
    logs = server.wk("logs")
    assert logs.returncode == 0, logs.stderr
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  alert +warning firing: Memory is",
                     logs.stdout, re.M), logs.stdout
    assert all(out.returncode == 0 for out in (agents, alerts, services, actions))


def test_ack_acknowledges_the_alert(server: Server) -> None:
    fingerprint = _memory_alert(server)["fingerprint"]
    out = server.wk("ack", fingerprint)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("acknowledged: Memory is")
    alerts = server.api("GET", "/api/alerts").json()["alerts"]
    assert {a["fingerprint"]: a["state"] for a in alerts}[fingerprint] == "acknowledged"


def test_reject_with_a_reason_then_approve_another(server: Server) -> None:
    first = server.pending()
    out = server.wk("reject", str(first), "--reason", "not now")
    assert out.returncode == 0 and out.stdout.strip() == f"approval #{first} rejected"
    decided = server.api("GET", "/api/actions/approvals").json()["approvals"]
    assert {a["id"]: (a["state"], a["reason"]) for a in decided}[first] == ("rejected",
                                                                            "not now")
    again = server.wk("approve", str(first))  # decided already: the server's 409
    assert again.returncode == 1
    assert _one_line(again.stderr) == f"watchkeeper: 409: approval #{first} was rejected " \
                                      "already"
    second = server.pending()
    out = server.wk("approve", str(second), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["approval_id"] == second


@pytest.mark.parametrize(("args", "detail"), [
    (("approve", "999999"), "404: no approval #999999"),
    (("reject", "999999"), "404: no approval #999999"),
    (("ack", "no-such-fingerprint"), "404: no open alert with fingerprint "
                                     "'no-such-fingerprint'"),
    # Sent encoded (%2F): it names no other route (a POST to /api/command would be a 422).
    (("ack", "../../api/command"), "404: "),
    (("reset", "no-such-service"), "404: unknown service 'no-such-service'"),
    (("reset", "bogus:x"), "422: target: String should match pattern"),
], ids=["approve-unknown-id", "reject-unknown-id", "ack-unknown", "ack-path-traversal",
        "reset-unknown-service", "reset-bad-kind"])
def test_the_server_saying_no_exits_1_with_its_detail(server: Server, args: tuple[str, ...],
                                                      detail: str) -> None:
    out = server.wk(*args)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert _one_line(out.stderr).startswith(f"watchkeeper: {detail}")
    assert out.stdout == ""


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_wrong_token_exits_1_saying_where_it_came_from_and_changes_nothing(
        server: Server, how: str) -> None:
    approval_id = server.pending()
    if how == "flag":
        out = server.wk("approve", str(approval_id), "--token", "wrong")
        source = "(--token)"
    else:
        out = server.wk("approve", str(approval_id), WATCHKEEPER_TOKEN="wrong")
        source = "($WATCHKEEPER_TOKEN)"
    assert out.returncode == 1
    line = _one_line(out.stderr)
    assert "refused the token" in line and source in line and "--token" in line
    pending = server.api("GET", "/api/actions").json()["pending"]
    assert approval_id in [p["id"] for p in pending]
    server.wk("reject", str(approval_id))  # leave nothing waiting for the next test


def test_silence_for_two_hours(server: Server) -> None:
    before = time.time()
    out = server.wk("silence", "metric=disk.*", "dimension=/nowhere", "--for", "2h",
                    "--comment", "maintenance")
    assert out.returncode == 0, out.stderr
    silence_id = out.stdout.split()[0]
    silences = server.api("GET", "/api/alerts/silences").json()["silences"]
    made = {s["id"]: s for s in silences}[silence_id]
    assert made["matchers"] == {"metric": "disk.*", "dimension": "/nowhere"}
    assert made["comment"] == "maintenance"
    until = datetime.fromisoformat(made["until"].replace("Z", "+00:00")).timestamp()
    assert before + 7200 - 5 < until < time.time() + 7200 + 5


@pytest.mark.parametrize("args", [("silence", "metric", "--for", "2h"),
                                  ("silence", "metric=x", "--for", "2y"),
                                  ("silence", "metric=x", "--for", "0s"),
                                  ("silence", "metric=x"),
                                  ("command", "explode")],
                         ids=["matcher-without-glob", "unknown-unit", "zero-duration",
                              "no-duration", "unknown-command"])
def test_bad_arguments_are_usage_errors_and_send_nothing(server: Server,
                                                        args: tuple[str, ...]) -> None:
    before = server.api("GET", "/api/alerts/silences").json()
    out = server.wk(*args)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert server.api("GET", "/api/alerts/silences").json() == before


def test_command_health_check_and_an_unknown_agent(server: Server) -> None:
    out = server.wk("command", "health_check")
    assert out.returncode == 0, out.stderr
    agents = sorted(line.split(":")[0] for line in out.stdout.splitlines())
    assert agents == ["analyzer", "communicator", "notifier", "remediator", "sensor"]
    assert all(": ok: " in line for line in out.stdout.splitlines())
    out = server.wk("command", "pause", "--target", "nobody")
    assert out.returncode == 1
    assert _one_line(out.stderr).startswith("watchkeeper: 404: no agent 'nobody'")


def test_command_remediate_previews_a_dry_run_then_asks_for_approval(server: Server) -> None:
    audit_before = server.api("GET", "/api/actions").json()
    out = server.wk("command", "remediate", "restart_service", "service=sleeper", "--dry-run")
    assert out.returncode == 0, out.stderr
    first, preview = out.stdout.splitlines()[:2]
    assert first.startswith("dry_run: restart_service sleeper")
    assert preview.startswith("  would: ") and "sleeper" in preview
    # A dry run runs nothing and asks nobody.
    after = server.api("GET", "/api/actions").json()
    assert after["pending"] == audit_before["pending"]

    out = server.wk("command", "remediate", "notify_only", "message=look", "--reason", "ops",
                    "--json")
    assert out.returncode == 0, out.stderr
    decision = json.loads(out.stdout)["decision"]
    assert decision["verdict"] == "approve" and isinstance(decision["approval_id"], int)
    assert server.wk("reject", str(decision["approval_id"])).returncode == 0

    refused = server.wk("command", "remediate", "restart_service", "service=nobody")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    for bad in (("command", "remediate"), ("command", "remediate", "notify_only", "oops"),
                ("command", "pause", "extra")):
        out = server.wk(*bad)
        assert out.returncode == 2 and "Traceback" not in out.stderr, bad


def test_config_get_and_set_through_the_server(server: Server) -> None:
    # swap: none used here, so no threshold moved below raises an alert other tests would see
    out = server.wk("config", "get", "thresholds.swap_warning")
    assert out.returncode == 0 and out.stdout.strip() == "50.0", out.stderr
    section = server.wk("config", "get", "thresholds", "--json")
    assert json.loads(section.stdout) == server.api("GET", "/api/config").json()[
        "config"]["thresholds"]
    out = server.wk("config", "set", "thresholds.swap_warning", "60")
    assert out.returncode == 0 and out.stdout.startswith("changed: thresholds.swap_warning")
    assert server.api("GET", "/api/config").json()["config"]["thresholds"][
        "swap_warning"] == 60
    for args, said in [
        (("get", "thresholds.swap_warnign"), "no setting 'thresholds.swap_warnign' (did you "
                                             "mean 'swap_warning'?)"),
        (("set", "thresholds.swap_warning", "99"), "422: thresholds: swap_warning (99) must "
                                                   "not be above swap_critical (80)"),
        (("set", "storage.data_dir", "/tmp"), "422: storage: changes only in the config file"),
        (("set", "thresholds.swap_warning", "abc"), "422: thresholds.swap_warning: Input "
                                                    "should be a valid number"),
    ]:
        out = server.wk("config", *args)
        assert out.returncode == 1, (args, out.stderr)
        assert _one_line(out.stderr).startswith(f"watchkeeper: {said}"), out.stderr
    config = server.api("GET", "/api/config").json()["config"]
    assert config["thresholds"]["swap_warning"] == 60  # nothing changed by the refused ones


def test_no_token_found_says_where_it_looked(server: Server, tmp_path: Path) -> None:
    """Another data dir (no api_token there): reads work on loopback, a mutation says why."""
    elsewhere = str(tmp_path / "other")
    read = server.wk("status", WATCHKEEPER_STORAGE__DATA_DIR=elsewhere)
    assert read.returncode == 0, read.stderr
    out = server.wk("reset", "sleeper", WATCHKEEPER_STORAGE__DATA_DIR=elsewhere)
    assert out.returncode == 1
    line = _one_line(out.stderr)
    assert "the server wants a token and none was found" in line
    assert f"{elsewhere}/api_token not readable" in line and "--token" in line


@pytest.mark.parametrize("command", [*sorted(READS), "ack", "approve", "reject", "reset",
                                     "silence", "command"])
def test_nothing_listening_exits_3_with_one_line(tmp_path: Path, command: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        args = {"ack": ["x"], "approve": ["1"], "reject": ["1"], "reset": ["web"],
                "silence": ["rule=*", "--for", "1h"], "command": ["health_check"]}
        out = subprocess.run([sys.executable, "-m", "watchkeeper", command,
                              *args.get(command, []), "--url", url], cwd=tmp_path,
                             env=wk_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    assert _one_line(out.stderr) == (f"watchkeeper: no watchkeeper answers at {url}: start it "
                                     "with `watchkeeper serve`, or pass --url")


def test_a_bad_argument_is_a_usage_error(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "watchkeeper", "approve", "abc"], cwd=tmp_path,
                         env=wk_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_the_client_variables_do_not_break_the_server_configuration(tmp_path: Path) -> None:
    env = wk_env(tmp_path, WATCHKEEPER_TOKEN="t", WATCHKEEPER_URL="http://127.0.0.1:1")
    out = subprocess.run([sys.executable, "-m", "watchkeeper", "config", "validate"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_run_and_serve_do_not_load_the_client() -> None:
    code = ("import sys, watchkeeper.cli.main; "
            "print(sorted(m for m in sys.modules if m in ('httpx', 'rich.table') "
            "or m.startswith('watchkeeper.cli.client') or m == 'watchkeeper.cli.tables'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def _lines(stream: Any) -> queue.Queue[str]:
    """The stream's lines as they come, read by a thread (a readline never blocks the test);
    "" at its end, where the thread closes the stream."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        with stream:
            for line in stream:
                lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    return lines


def _next(lines: queue.Queue[str], contains: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        assert line, f"the stream ended before a line with {contains!r}"
        if contains in line:
            return line


@pytest.mark.slow
def test_logs_follow_prints_live_events_and_survives_a_server_restart(tmp_path: Path) -> None:
    """Default settings but the port (api.port, so the restarted server is at the same URL)."""
    port = free_port()
    (tmp_path / "watchkeeper.yaml").write_text(f"api: {{port: {port}}}\n", encoding="utf-8")
    url = f"http://127.0.0.1:{port}"
    proc = serve(tmp_path)
    follower = None
    try:
        until(lambda: httpx.get(f"{url}/api/health", timeout=10).status_code == 200, "health")
        token = (tmp_path / "data" / "api_token").read_text(encoding="utf-8").strip()

        def restart_analyzer() -> None:
            r = httpx.post(f"{url}/api/command", json={"command": "restart",
                                                       "target": "analyzer"},
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert r.status_code == 200, r.text

        follower = subprocess.Popen(
            [sys.executable, "-m", "watchkeeper", "logs", "--follow", "--json"], cwd=tmp_path,
            env=wk_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = _lines(follower.stdout), _lines(follower.stderr)
        assert _next(err, "following").startswith(f"watchkeeper: following {url} ")
        restart_analyzer()
        event = json.loads(_next(out, "agent_restarted"))
        assert event["agent"] == "analyzer"
        stop(proc)
        assert "lost the server; reconnecting" in _next(err, "lost")
        proc = serve(tmp_path)
        assert "reconnected" in _next(err, "reconnected")
        restart_analyzer()
        assert json.loads(_next(out, "agent_restarted"))["agent"] == "analyzer"
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=30) == 0
        assert err.get(timeout=30) == ""  # its end: no traceback after the lines above
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
        stop(proc)
