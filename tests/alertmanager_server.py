"""A real Alertmanager (Debian's prometheus-alertmanager) for tests, and the webhook it calls.

The Alertmanager listens on a free loopback port (a random free one below the ephemeral
range: a fixed range collides with other test runs on the same machine) with a temporary
storage path and no clustering; its one receiver is a webhook to a loopback HTTP server the
test owns, so a test sees what Alertmanager itself delivers after grouping. Timings are short
and named: group_wait 1s, group_interval 1s, repeat_interval 1h.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.notify_receiver import free_port

BINARY = "prometheus-alertmanager"
GROUP_WAIT = "1s"
GROUP_INTERVAL = "1s"
REPEAT_INTERVAL = "1h"


def until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something truthy (on the monotonic clock)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except httpx.TransportError:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class WebhookReceiver:
    """A loopback HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        lock = self.lock = threading.Lock()
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with lock:
                    bodies.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    # Below the ephemeral range (tests/notify_receiver.py says why): a test restarts it on
    # its port.
    return free_port()


class _NotOurs(AssertionError):
    """Another Alertmanager answers on the port we picked."""


class Alertmanager:
    """One prometheus-alertmanager process the test started (and alone may kill)."""

    def __init__(self, root: Path, webhook_url: str, *, group_by: tuple[str, ...] = (
            "alertname", "host"), group_wait: str = GROUP_WAIT) -> None:
        binary = shutil.which(BINARY)
        assert binary, f"{BINARY} is not installed (scripts/test installs it: Debian's " \
                       "prometheus-alertmanager)"
        self.binary = binary
        self.root = root
        self.config = root / "alertmanager.yml"
        self.config.write_text(json.dumps({
            "route": {"receiver": "hook", "group_by": list(group_by),
                      "group_wait": group_wait, "group_interval": GROUP_INTERVAL,
                      "repeat_interval": REPEAT_INTERVAL},
            "receivers": [{"name": "hook", "webhook_configs": [
                {"url": webhook_url, "send_resolved": True}]}],
        }), encoding="utf-8")
        self.webhook_url = webhook_url
        self._set_port(_free_port())
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "alertmanager.log"
        #: Alertmanager's clock minus ours: a Go binary's clock is not moved by faketime
        #: (scripts/test's year-ahead pass), so tests post on Alertmanager's clock.
        self.offset = timedelta(0)

    def _set_port(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        """Start it and wait until it answers; a restart keeps the port (and the URL)."""
        first = self.proc is None
        for _ in range(5):
            if first:
                self.log.write_bytes(b"")  # so a bind error read below is this attempt's
            self._launch()
            try:
                until(self._ready, f"Alertmanager ready on {self.url} (log: {self.log})")
                return
            except BaseException as exc:
                self.stop()
                # Another process took the free port between our pick and its bind: a new
                # pick, unless a test restarts it where its clients expect it.
                taken = isinstance(exc, _NotOurs) or \
                    "address already in use" in self.log.read_text(errors="replace")
                if first and taken:
                    self._set_port(_free_port())
                    continue
                raise
        raise AssertionError(f"Alertmanager found no free port (log: {self.log})")

    def _launch(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.config}",
                 f"--storage.path={self.root / 'storage'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--cluster.listen-address=", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT)

    def _ready(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, self.log.read_text(errors="replace")
        response = httpx.get(f"{self.url}/-/ready", timeout=2)
        if response.status_code != 200:
            return False
        # Ours, not another run's on the same port: its configuration names our webhook.
        status = httpx.get(f"{self.url}/api/v2/status", timeout=2).json()
        if self.webhook_url not in status["config"]["original"]:
            raise _NotOurs(f"another Alertmanager answers on {self.url}")
        theirs = parsedate_to_datetime(response.headers["date"])
        offset = theirs - datetime.now(timezone.utc)
        # The Date header has whole seconds: only a real difference counts.
        self.offset = offset if abs(offset) > timedelta(seconds=30) else timedelta(0)
        return True

    def now(self) -> datetime:
        """Now on Alertmanager's clock."""
        return datetime.now(timezone.utc) + self.offset

    def stop(self) -> None:
        """SIGKILL (it keeps alerts in memory only: a killed one comes back empty)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def alerts(self, **params: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts (active ones by default)."""
        response = httpx.get(f"{self.url}/api/v2/alerts", params=params, timeout=5)
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()
        return found
