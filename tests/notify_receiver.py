"""A real webhook receiver on 127.0.0.1 for apprise's ``json://`` URLs (tests start it).

``Receiver.start()`` listens on a port (a free one, or the same one again after ``stop()``,
so a test can take a channel down and bring it back); every POST is recorded as
``(path, json body)`` and answered 200.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768 and up on Linux): a
    server a test stops and starts again on its port must find it free, and the source port
    of any client connection made meanwhile (by this run or another) comes from that range."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32768)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free loopback port in 20000-32767")


class Receiver:
    """Records what apprise posts; can go down and come back on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.raw.append(body)
                    receiver.received.append((self.path, json.loads(body or b"{}")))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def messages(self, path: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [body for p, body in self.received if path is None or p == f"/{path}"]

    def titles(self, path: str | None = None) -> list[str]:
        return [str(m.get("title", "")) for m in self.messages(path)]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 30.0
                 ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(found := self.messages(path)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(found)} message(s) after {timeout}s: "
                                     f"{[m.get('title') for m in found]}")
            time.sleep(0.05)
        return found
