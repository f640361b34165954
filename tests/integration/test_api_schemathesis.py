"""Schemathesis over the OpenAPI document of a real `watchkeeper serve`, token set.

Every check is on (schemathesis' default): no 5xx, responses that match their own schema,
no mutating route that ignores missing auth, unsupported methods answered 405 with Allow.
25 examples per operation; WK_FUZZ_EXAMPLES=400 runs a deeper search by hand.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from watchkeeper.remediation.registry import REGISTRY

from .test_api_security import start_serve, wait_healthy
from .test_cli import wk_env

TOKEN = "schemathesis-operator-token-0123456789"

# Exceptions, each a rule the schema cannot express, so a schema-valid request may be refused:
# - /api/health answers 503 by design while an agent is paused or restarting (the fuzzer
#   pauses and restarts agents through /api/command);
# - a silence's `until` must lie in the future; history's start must not be after its end;
#   the health history's from/to are times in words (ISO 8601, now, -24h) in a free string;
# - a config patch must pass the settings' own validation (warning <= critical, ...). Its JSON
#   types are strict (no false for 0, no "5" for 5), so the negative-data check stays on.
CONFIG = """
[[operations]]
include-path = "/api/health"
checks.not_a_server_error.enabled = false

[[operations]]
include-path = "/api/alerts/silences"
include-method = "POST"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/api/metrics/history"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/api/history"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/api/config"
include-method = "PATCH"
checks.positive_data_acceptance.enabled = false
"""


def _fuzz(tmp_path: Path, url: str, selected: int, *args: str) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    out = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
         f"{url}/openapi.json", "-H", f"Authorization: Bearer {TOKEN}",
         "--max-examples", os.environ.get("WK_FUZZ_EXAMPLES", "25"), "--seed", "20261126",
         "--workers", "1", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    # The filters chose what was meant, and the fuzzing was not vacuous.
    assert f"Selected: {selected}/" in out.stdout and f"Tested: {selected}" in out.stdout


def _serve_and_fuzz(tmp_path: Path, serve_args: tuple[str, ...], selected: int,
                    *fuzz_args: str) -> None:
    # The fuzzer asks for remediations and approves pending ones: only harmless actions may
    # be on (a generated stop_process pid would be some process this test did not start).
    env = wk_env(tmp_path, WATCHKEEPER_API__TOKEN=TOKEN,
                 WATCHKEEPER_AGENTS__CHECK_INTERVAL="0.5",
                 **{f"WATCHKEEPER_REMEDIATION__ACTIONS__{a.upper()}": "off"
                    for a in REGISTRY if a != "notify_only"})
    proc, url = start_serve(tmp_path, env, *serve_args)
    try:
        wait_healthy(url)
        _fuzz(tmp_path, url, selected, *fuzz_args)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_schemathesis_every_route_but_config_updates(tmp_path: Path) -> None:
    # 24 operations: GET /api/notify is one of them.
    # The live stream never ends by itself; tests/integration/test_api_events.py covers it.
    _serve_and_fuzz(tmp_path, (), 24, "--exclude-operation-id",
                    "update_config_api_config_patch", "--exclude-path", "/api/events")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_schemathesis_config_updates_without_a_remediator(tmp_path: Path) -> None:
    # Fuzzed settings are applied live; with no remediator nothing can act on them
    # (a generated cleanup root plus a zero threshold must never reach clean_disk).
    _serve_and_fuzz(tmp_path, ("--agents", "sensor,analyzer,communicator"), 1,
                    "--include-operation-id", "update_config_api_config_patch")
