"""Notifications from a real `watchkeeper serve` to a real receiver, across restarts.

The server runs as a user runs it, with a notify route to this test's loopback receiver
(apprise ``json://``). What differs from the defaults, and why: a memory warning at 0.1 %
with ``analyzer.for_s: 0`` (a condition present from the first snapshot, so there is an
alert to tell about: it began while watchkeeper was down), fast ticks
(``agents.check_interval: 0.2``) and the route's ``group_wait_s: 1`` and ``group_by:
[fingerprint]`` (one message per alert, quickly; the defaults wait 30 s). Everything else,
the outbox's bounds and the repeat interval included, is the default.

What is checked is what the README promises: a condition present at start is told once;
a graceful restart with the alert unchanged repeats nothing; after a SIGKILL each alert is
told at most once more, and none is lost; a SIGHUP that changes a route's URL sends what
waits to the new one, and one that removes a route drops what waits for it, said once.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.notify_receiver import Receiver, free_port

from .test_cli import wk_env

SECRET = "Zq7-notify-pass-91x"


class Serve:
    def __init__(self, root: Path, receiver: Receiver) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        hook = receiver.url("ops").replace("json://", f"json://wk:{SECRET}@")
        (root / "watchkeeper.yaml").write_text(
            f"api: {{port: {self.port}}}\n"
            "agents: {check_interval: 0.2}\n"
            "thresholds: {memory_warning: 0.1, memory_critical: 100}\n"
            "analyzer: {for_s: 0}\n"
            "llm: {enabled: false}\n"
            "notify:\n"
            "  routes:\n"
            f"    - name: ops\n      url: {hook}\n      group_wait_s: 1\n"
            "      group_by: [fingerprint]\n", encoding="utf-8")
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "watchkeeper", "serve", "--no-console-log"],
            cwd=self.root, env=wk_env(self.root), stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        banner = self.proc.stderr.readline()
        assert f"{self.url}/" in banner, banner
        self.until(lambda: httpx.get(f"{self.url}/api/health", timeout=5).status_code == 200,
                   "health")

    def api(self, path: str) -> Any:
        token = (self.root / "data" / "api_token").read_text(encoding="utf-8").strip()
        r = httpx.get(self.url + path, timeout=10, headers={"Authorization": f"Bearer {token}"})
        r.raise_for_status()
        return r.json()

    def notifier_checks(self) -> int:
        agents = self.api("/api/agents")
        rows = agents["agents"] if isinstance(agents, dict) else agents
        return int(next(a for a in rows if a["name"] == "notifier")["checks"])

    @staticmethod
    def until(check: Any, what: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = check()
            except (httpx.TransportError, httpx.HTTPStatusError):
                found = None
            if found:
                return found
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def settle(self) -> None:
        """Wait until the notifier has run 15 more checks (3 s of 0.2 s ticks, thrice the
        route's group_wait): what it would send, it has sent by then."""
        start = self.until(self.notifier_checks, "the notifier's first checks")
        self.until(lambda: self.notifier_checks() >= start + 15, "15 notifier checks")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        proc = self.proc
        if proc is None:
            return
        proc.send_signal(sig)
        try:
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.proc = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def memory_told(receiver: Receiver) -> list[str]:
    return [t for t in receiver.titles("ops") if "Memory is" in t]


def test_told_once_across_graceful_restart_and_sigkill(tmp_path: Path,
                                                       receiver: Receiver) -> None:
    serve = Serve(tmp_path, receiver)
    try:
        serve.start()  # the condition is there before watchkeeper is
        serve.until(lambda: memory_told(receiver), "the memory alert's message")
        serve.settle()
        assert len(memory_told(receiver)) == 1, receiver.titles()
        assert memory_told(receiver)[0].startswith("⚠️ [WARNING]")  # default: witty

        serve.stop(signal.SIGTERM)
        serve.start()  # graceful restart, the alert unchanged
        serve.settle()
        assert len(memory_told(receiver)) == 1, receiver.titles()

        serve.stop(signal.SIGKILL)
        serve.start()
        serve.settle()
        told = len(memory_told(receiver))
        assert 1 <= told <= 2, receiver.titles()
    finally:
        serve.stop()
    log = (tmp_path / "logs" / "agent_system.log").read_text(encoding="utf-8")
    assert SECRET not in log


def test_sigkill_before_the_first_message_loses_nothing(tmp_path: Path,
                                                        receiver: Receiver) -> None:
    serve = Serve(tmp_path, receiver)
    try:
        serve.start()
        # Killed while the alert is open and waiting out its group_wait (or being sent).
        serve.until(lambda: any(a["metric"] == "memory.percent"
                                for a in serve.api("/api/alerts")["alerts"]), "the alert")
        serve.stop(signal.SIGKILL)
        serve.start()
        serve.until(lambda: memory_told(receiver), "the memory alert's message after a kill")
        serve.settle()
        assert 1 <= len(memory_told(receiver)) <= 2, receiver.titles()
    finally:
        serve.stop()


def attempts(root: Path) -> dict[str, int]:
    """Each route's failed tries of its waiting messages, from the server's outbox."""
    path = root / "data" / "notify_outbox.db"
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return dict(conn.execute("SELECT route, SUM(attempts) FROM outbox GROUP BY route"))
    except sqlite3.OperationalError:  # not made yet
        return {}
    finally:
        conn.close()


def test_sighup_points_a_route_elsewhere_and_drops_what_waits_for_a_removed_one(
        tmp_path: Path, receiver: Receiver) -> None:
    nobody = Receiver()  # never started: a wrong port, messages wait for it
    serve = Serve(tmp_path, receiver)
    config = tmp_path / "watchkeeper.yaml"
    text = config.read_text(encoding="utf-8")
    before, _, _ = text.partition("notify:\n")
    route = "      group_wait_s: 1\n      group_by: [fingerprint]\n"
    config.write_text(before + "notify:\n  routes:\n"
                      f"    - name: ops\n      url: {nobody.url('ops')}\n" + route +
                      f"    - name: old\n      url: {nobody.url('old')}\n" + route,
                      encoding="utf-8")
    try:
        serve.start()
        serve.until(lambda: (a := attempts(tmp_path)).get("ops") and a.get("old"),
                    "both routes failing")
        # The edit: ops gets its right URL, old is gone.
        config.write_text(before + "notify:\n  routes:\n"
                          f"    - name: ops\n      url: {receiver.url('ops')}\n" + route,
                          encoding="utf-8")
        assert serve.proc is not None
        serve.proc.send_signal(signal.SIGHUP)
        serve.until(lambda: memory_told(receiver), "the memory alert at ops's new URL")
        serve.until(lambda: attempts(tmp_path) == {}, "the outbox emptied")
        serve.settle()
        assert len(memory_told(receiver)) == 1, receiver.titles()
        assert receiver.messages("old") == []
    finally:
        serve.stop()
    log = (tmp_path / "logs" / "agent_system.log").read_text(encoding="utf-8")
    # Said once for the route, however many waited (this busy machine may add a CPU alert).
    dropped = re.findall(r"notify: route old is no longer configured; the (\d+) message\(s\) "
                         r"waiting for it are dropped", log)
    assert len(dropped) == 1 and int(dropped[0]) >= 1, dropped
