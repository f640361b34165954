"""Tokens on disk, the serve command's refusals, and secrets kept out of every response."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from watchkeeper.api.auth import is_loopback, load_or_create_token, token_path
from watchkeeper.config import Settings, validate

from .test_api_harness import SECRETS, Api, api_settings, serve_api, until
from .test_cli import wk, wk_env


def _settings(tmp_path: Path, **api: object) -> Settings:
    return validate({"storage": {"data_dir": str(tmp_path / "data")}, "api": api})


def test_token_is_generated_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    token = load_or_create_token(settings)
    path = token_path(settings)
    assert len(token) >= 40 and path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(settings) == token  # the next start reuses it


def test_loose_token_file_is_restricted_and_configured_token_wins(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    token = load_or_create_token(settings)
    token_path(settings).chmod(0o644)
    assert load_or_create_token(settings) == token
    assert stat.S_IMODE(token_path(settings).stat().st_mode) == 0o600
    configured = "configured-token-1"
    assert load_or_create_token(_settings(tmp_path, token=configured)) == configured


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.5.0.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
    ("example.com", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path, host: str) -> None:
    out = wk(tmp_path, "serve", "--host", host, "--port", "0")
    assert out.returncode == 2, out.stderr
    assert "refusing to listen on" in out.stderr and "api.token" in out.stderr
    assert not token_path(_settings(tmp_path)).exists()


def test_serve_treats_an_empty_token_as_none(tmp_path: Path) -> None:
    out = wk(tmp_path, "serve", "--host", "0.0.0.0", "--port", "0",
             env=wk_env(tmp_path, WATCHKEEPER_API__TOKEN=""))
    assert out.returncode == 2 and "refusing to listen on" in out.stderr


def start_serve(tmp_path: Path, env: dict[str, str], *args: str
                ) -> tuple[subprocess.Popen[str], str]:
    """`watchkeeper serve` on a free port; returns the process and its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "watchkeeper", "serve", "--port", "0",
                             "--no-console-log", *args], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert found, line
    return proc, f"http://127.0.0.1:{found.group(1)}"


def wait_healthy(url: str) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        try:
            r = httpx.get(f"{url}/api/health", timeout=5)
            if r.status_code == 200:
                return r
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "serve did not become healthy"
        time.sleep(0.1)


def test_serve_runs_agents_and_api_and_stops_cleanly(tmp_path: Path) -> None:
    env = wk_env(tmp_path, WATCHKEEPER_AGENTS__CHECK_INTERVAL="0.2",
                 OPENAI_API_KEY="sk-live-SERVESECRET-123456")
    tokens = []
    for _ in range(2):
        proc, url = start_serve(tmp_path, env)
        try:
            assert wait_healthy(url).json()["ready"] is True
            token = token_path(_settings(tmp_path)).read_text().strip()
            tokens.append(token)
            r = httpx.post(f"{url}/api/command", json={"command": "health_check"}, timeout=10)
            assert r.status_code == 401
            r = httpx.post(f"{url}/api/command", json={"command": "health_check"},
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert r.status_code == 200 and len(r.json()["replies"]) == 5
            config = httpx.get(f"{url}/api/config", timeout=10).text
            assert "SERVESECRET" not in config and token not in config
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert tokens[-1] not in err  # the token is never printed, only where it is
    assert tokens[0] == tokens[1]
    assert stat.S_IMODE(token_path(_settings(tmp_path)).stat().st_mode) == 0o600


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_at_once_with_a_browser_stream_open(tmp_path: Path, sig: int) -> None:
    # A dashboard left open must not hold a stop (or a restart by systemd) for seconds.
    env = wk_env(tmp_path, WATCHKEEPER_AGENTS__CHECK_INTERVAL="0.2")
    proc, url = start_serve(tmp_path, env)
    try:
        wait_healthy(url)
        with httpx.stream("GET", f"{url}/api/events", timeout=10) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            asked = time.monotonic()
            proc.send_signal(sig)
            rest = list(lines)  # the server ends the stream itself
            assert time.monotonic() - asked < 2.0, rest[-3:]
        _, err = proc.communicate(timeout=10)
        took = time.monotonic() - asked
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert took < 2.0, took  # uvicorn's graceful limit is 5 s: it was not needed


def test_serve_applies_the_saved_config_overrides_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # An older version wrote whatever the API accepted; what only the config file may say
    # (a command to run) is ignored, and said so, and the rest applies.
    marker = tmp_path / "ran"
    (data / "config_overrides.yaml").write_text(
        "thresholds:\n  cpu_warning: 42\n"
        f"services:\n  sneaky:\n    start: [/usr/bin/touch, {marker}]\n")
    proc, url = start_serve(tmp_path, wk_env(tmp_path))
    try:
        wait_healthy(url)
        config = httpx.get(f"{url}/api/config", timeout=10).json()["config"]
        assert config["thresholds"]["cpu_warning"] == 42
        assert config["services"] == {}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert not marker.exists()
    log = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "config_overrides.yaml: ignoring services (these change only in the config file)" \
        in log


async def test_no_secret_in_any_response(tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    async with serve_api(settings) as api:
        await until(lambda: _has_metrics(api.client))
        responses = []
        schema = (await api.client.get("/openapi.json")).json()
        for path, ops in schema["paths"].items():
            if path == "/api/events":  # endless: read below, a few messages of it
                continue
            if "get" in ops and "{" not in path:
                params = {"metric": "cpu.percent"} if path.endswith("/history") else {}
                responses.append(await api.client.get(path, params=params))
        for path in ("/docs", "/openapi.json", "/api/nope", "/metrics"):
            responses.append(await api.client.get(path))
        for method, path, body in (
                ("PATCH", "/api/config", {"llm": {"api_key": 5}}),
                ("PATCH", "/api/config", {"api": {"token": "x"}}),
                ("PATCH", "/api/config", {"thresholds": {"cpu_warning": 1}}),
                ("POST", "/api/command", {"command": "health_check"})):
            responses.append(await api.client.request(method, path, json=body,
                                                      headers=api.auth()))
            responses.append(await api.client.request(method, path, json=body,
                                                      headers=api.auth("guess")))
        assert len(responses) >= 15
        streamed = await _first_lines(api, "/api/events?snapshots=full", 12)
        assert "event: metric_snapshot" in streamed
        for secret in SECRETS:
            assert secret not in streamed
        for r in responses:
            assert r.status_code < 500, r.request.url
            for secret in SECRETS:
                assert secret not in r.text, (r.request.url, secret)
                assert all(secret not in v for v in r.headers.values())
        assert os.environ.get("WATCHKEEPER_API__TOKEN") is None


async def _first_lines(api: Api, path: str, count: int) -> str:
    lines: list[str] = []
    async with api.client.stream("GET", path) as r:
        async for line in r.aiter_lines():
            lines.append(line)
            if len(lines) >= count:
                break
    return "\n".join(lines)


async def _has_metrics(client: httpx.AsyncClient) -> bool:
    return (await client.get("/api/metrics")).status_code == 200
