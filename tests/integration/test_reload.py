"""SIGHUP: `watchkeeper serve` reads its configuration again and applies it live."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .test_api_security import start_serve, wait_healthy
from .test_cli import wk_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_service(port: int) -> dict[str, Any]:
    return {"start": [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            "checks": [{"http": f"http://127.0.0.1:{port}/", "timeout_s": 1}]}


def poll(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
    return found


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_sighup_applies_the_edited_config_file_live(tmp_path: Path) -> None:
    web, api = free_port(), free_port()
    config_file = tmp_path / "watchkeeper.yaml"  # found in the working directory
    config: dict[str, Any] = {"agents": {"check_interval": 0.2},
                              "services": {"web": http_service(web)}}
    config_file.write_text(json.dumps(config))  # JSON is YAML
    proc, url = start_serve(tmp_path, wk_env(tmp_path))

    def current() -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{url}/api/config", timeout=5).json()
        return body

    try:
        wait_healthy(url)
        poll(lambda: answers(web))
        before = current()
        assert list(before["config"]["services"]) == ["web"]

        # The file now says: one more service, another threshold, and another port (which
        # only a restart can change).
        config["services"]["api"] = http_service(api)
        config["thresholds"] = {"cpu_warning": 61}
        config["api"] = {"port": 1}
        config_file.write_text(json.dumps(config))
        proc.send_signal(signal.SIGHUP)
        after = poll(lambda: (c := current())["config"]["thresholds"]["cpu_warning"] == 61
                     and c)
        assert list(after["config"]["services"]) == ["web", "api"]
        assert after["config"]["api"]["port"] == before["config"]["api"]["port"]
        assert after["version"] > before["version"]
        poll(lambda: answers(api))  # started, as at start-up
        poll(lambda: {s["name"]: s["healthy"] for s in httpx.get(
            f"{url}/api/metrics", timeout=5).json()["services"]} == {"web": True, "api": True})

        # A broken edit changes nothing and does not stop anything.
        config_file.write_text(json.dumps({**config, "thresholds": {"cpu_warning": "lots"}}))
        proc.send_signal(signal.SIGHUP)
        log_dir = tmp_path / "logs"
        poll(lambda: "config reload refused, nothing changed" in "".join(
            p.read_text() for p in log_dir.glob("*.log")))
        assert current()["version"] == after["version"]
        assert proc.poll() is None and answers(web) and answers(api)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    log = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "config reload: api changed, which takes effect only at the next start" in log
    assert "thresholds.cpu_warning" in log  # what changed is said
    assert not answers(web) and not answers(api)  # stopped with watchkeeper


def test_sighup_reloads_the_headless_run_too(tmp_path: Path) -> None:
    config_file = tmp_path / "watchkeeper.yaml"
    config_file.write_text(json.dumps({"agents": {"check_interval": 0.2}}))
    proc = subprocess.Popen([sys.executable, "-m", "watchkeeper", "run", "--no-console-log"],
                            cwd=tmp_path, env=wk_env(tmp_path), stderr=subprocess.PIPE,
                            text=True)
    log_dir = tmp_path / "logs"

    def log() -> str:
        return "".join(p.read_text() for p in log_dir.glob("*.log"))

    try:
        poll(lambda: "is on watch as" in log())
        config_file.write_text(json.dumps({"agents": {"check_interval": 0.2},
                                           "thresholds": {"cpu_warning": 61}}))
        proc.send_signal(signal.SIGHUP)
        poll(lambda: "config reloaded: thresholds.cpu_warning" in log())
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
