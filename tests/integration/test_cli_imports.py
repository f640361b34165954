"""`watchkeeper run` and `serve` never load the terminal UI's Textual, and `run` nothing of
the web server, the client commands, or the optional integrations it was not configured for:
their memory is benchmarked (bench/overhead.py). Checked inside a real run and serve, once
they are up, from a thread of the same process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .served import free_port
from .test_cli import wk_env

#: Starts the command in this process and, once it is up, prints the loaded modules that
#: are (or are inside) the packages named in argv[4], then stops it as SIGTERM would.
PROBE = r"""
import os, signal, sys, threading, time, urllib.request

command, port, data = sys.argv[1], int(sys.argv[2]), sys.argv[3]
packages = sys.argv[4].split(",")

def up():
    if command == "serve":
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health",
                                          timeout=5).status == 200
        except OSError:
            return False
    return os.path.exists(os.path.join(data, "watchkeeper.db"))

def probe():
    deadline = time.monotonic() + 60
    while not up() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)  # a few agent ticks
    loaded = sorted(m for m in sys.modules
                    if any(m == p or m.startswith(p + ".") for p in packages))
    print("UP" if up() else "NOT UP", loaded, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=probe, daemon=True).start()
from watchkeeper.cli.main import cli
args = [command, "--no-console-log"] + (["--port", str(port)] if command == "serve" else [])
cli(args, obj={})
"""


#: What `run` with default settings (and no config file) has no use for: the web server and
#: API, the client commands and the terminal UI, simulate and replay, and what is imported
#: only when configured or needed (Alertmanager routes, supervisord services, an LLM and its
#: investigator, notification URLs, a YAML file to read).
NOT_IN_RUN = (
    "fastapi", "starlette", "uvicorn", "prometheus_client", "watchkeeper.api",
    "textual", "rich", "pygments", "watchkeeper.cli.client", "watchkeeper.cli.tables",
    "watchkeeper.cli.tui", "watchkeeper.cli.simulate", "watchkeeper.cli.replay",
    "watchkeeper.replay", "watchkeeper.simulate.runner", "watchkeeper.simulate.scenarios",
    "httpx", "watchkeeper.agents.alertmanager", "watchkeeper.notify.alertmanager",
    "xmlrpc", "watchkeeper.remediation.services.supervisord",
    "openai", "watchkeeper.analysis.llm", "apprise", "yaml",
)


def _probe(tmp_path: Path, command: str, packages: tuple[str, ...]
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, command, str(free_port()),
                           str(tmp_path / "data"), ",".join(packages)], cwd=tmp_path,
                          env=wk_env(tmp_path), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["run", "serve"])
def test_run_and_serve_never_import_textual(tmp_path: Path, command: str) -> None:
    out = _probe(tmp_path, command, ("textual", "watchkeeper.cli.tui"))
    assert "UP []" in out.stdout, out.stdout + out.stderr
    assert out.returncode == 0, out.stderr


def test_run_imports_only_what_it_uses(tmp_path: Path) -> None:
    """Default settings: none of NOT_IN_RUN is loaded once the agents are up and ticking."""
    out = _probe(tmp_path, "run", NOT_IN_RUN)
    assert "UP []" in out.stdout, out.stdout + out.stderr
    assert out.returncode == 0, out.stderr


def test_the_probe_sees_what_serve_loads(tmp_path: Path) -> None:
    """The check can fail: `serve` does load the web server (and `run` the same probe's
    agents), so an empty list above is not a probe that sees nothing."""
    out = _probe(tmp_path, "serve", ("fastapi", "uvicorn"))
    assert "'fastapi'" in out.stdout and "'uvicorn'" in out.stdout, out.stdout + out.stderr


def test_the_probe_sees_textual_when_it_is_loaded(tmp_path: Path) -> None:
    """The check can fail: `watchkeeper cli` does load it."""
    code = ("import sys; from watchkeeper.cli.main import cli; "
            "import watchkeeper.cli.tui.app; "
            "print('textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=wk_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
