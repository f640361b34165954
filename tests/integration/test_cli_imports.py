"""`watchkeeper run` and `serve` never load the terminal UI's Textual: their memory is
benchmarked, and only `watchkeeper cli` needs it. Checked inside a real run and serve, once
they are up, from a thread of the same process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .served import free_port
from .test_cli import wk_env

#: Starts the command in this process and, once it is up, prints the Textual and TUI modules
#: loaded, then stops it as SIGTERM would.
PROBE = r"""
import os, signal, sys, threading, time, urllib.request

command, port, data = sys.argv[1], int(sys.argv[2]), sys.argv[3]

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
                    if m.split(".")[0] == "textual" or m.startswith("watchkeeper.cli.tui"))
    print("UP" if up() else "NOT UP", loaded, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=probe, daemon=True).start()
from watchkeeper.cli.main import cli
args = [command, "--no-console-log"] + (["--port", str(port)] if command == "serve" else [])
cli(args, obj={})
"""


@pytest.mark.parametrize("command", ["run", "serve"])
def test_run_and_serve_never_import_textual(tmp_path: Path, command: str) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, command, str(free_port()),
                          str(tmp_path / "data")], cwd=tmp_path, env=wk_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert "UP []" in out.stdout, out.stdout + out.stderr
    assert out.returncode == 0, out.stderr


def test_the_probe_sees_textual_when_it_is_loaded(tmp_path: Path) -> None:
    """The check can fail: `watchkeeper cli` does load it."""
    code = ("import sys; from watchkeeper.cli.main import cli; "
            "import watchkeeper.cli.tui.app; "
            "print('textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=wk_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
