"""Security corpus: hostile input on the way to an Alertmanager.

Alert labels, summaries and context carry host data (mount points, process and service names,
log lines) that anyone on the host can shape; the route URL may carry credentials; the
Alertmanager (or whatever answers at its address) may answer anything, or nothing. The
promises: a real Alertmanager accepts every alert watchkeeper posts, with valid label names,
bounded one-line values and watchkeeper's own labels unforgeable; the credentials never reach
a log line, `notify test`'s answer, `config show` or the API; a hanging Alertmanager delays
nothing but its own sender.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.alertmanager_server import Alertmanager, WebhookReceiver
from watchkeeper.agents.alertmanager import AlertmanagerAgent
from watchkeeper.bus import MemoryBus
from watchkeeper.config import ConfigStore, RouteConfig
from watchkeeper.events import Alert
from watchkeeper.notify.alertmanager import (
    MAX_ANNOTATION,
    MAX_LABEL_VALUE,
    AlertmanagerRoute,
    send_test,
)

from ..conftest import make_settings
from ..integration.test_api_harness import api_settings, serve_api
from ..integration.test_cli import wk as cli

LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET = "s3cret-Pa55"


@pytest.fixture(scope="module")
def am(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    root = tmp_path_factory.mktemp("hostile_am")
    receiver = WebhookReceiver()
    manager = Alertmanager(root, receiver.url)
    manager.start()
    try:
        yield manager
    finally:
        manager.stop()
        receiver.close()


def hostile(am: Alertmanager, n: int, **update: Any) -> Alert:
    now = am.now()
    base = Alert(host="web-1", id=f"x{n}", fingerprint=f"fp-hostile-{n}", rule="threshold",
                 metric="disk.percent", dimension=f"/mnt/h{n}", severity="warning",
                 since=now - timedelta(minutes=1), at=now, summary="disk full",
                 labels={"mount": f"/mnt/h{n}"})
    return base.model_copy(update=update)


LABEL_CASES: list[tuple[str, dict[str, str]]] = [
    ("name-with-spaces-dots-dashes", {"a b.c-d": "v"}),
    ("name-with-newline", {"x\ny": "v"}),
    ("name-all-emoji", {"💣": "v", "🔥x": "v"}),
    ("name-reserved-prefix", {"__name__": "v", "__meta_x": "v"}),
    ("name-leading-digit", {"1st": "v"}),
    ("name-huge", {"n" * 100_000: "v"}),
    ("forges-alertname", {"alertname": "Forged", "severity": "critical", "host": "other"}),
    ("forges-after-cleaning", {"alert-name": "x", "sever.ity": "y", "al ertname": "z"}),
    ("hundreds-of-labels", {f"l{i}": str(i) for i in range(500)}),
    ("value-huge", {"mount": "/" + "a" * 1_000_000}),
    ("value-terminal-escape", {"mount": "/mnt/\x1b]0;pwned\x07\x1b[2J"}),
    ("value-forged-line", {"mount": "/mnt\r\nlevel=error msg=forged"}),
    ("value-not-utf8", {"mount": "/mnt/\udcff\udcfe"}),
    ("value-bidi-override", {"mount": "/mnt/\u202egnp.exe"}),
    ("value-nul", {"mount": "/mnt/\x00x"}),
]


@pytest.mark.parametrize(("n", "labels"), list(enumerate(c[1] for c in LABEL_CASES)),
                         ids=[c[0] for c in LABEL_CASES])
async def test_hostile_labels_are_accepted_valid_bounded_and_cannot_forge(
        am: Alertmanager, n: int, labels: dict[str, str]) -> None:
    route = RouteConfig(name="am", alertmanager=am.url, min_severity="info")
    async with httpx.AsyncClient() as client:
        sender = AlertmanagerRoute(route, client=client, dashboard="http://d/",
                                   wall=am.now)
        sender.take([hostile(am, n, labels=labels)])
        assert await sender.send_once(), "Alertmanager refused the alert"
    [got] = [a for a in am.alerts() if a["annotations"].get("watchkeeper_id") == f"x{n}"]
    assert got["labels"]["alertname"] == "threshold"
    assert got["labels"]["severity"] == "warning"
    assert got["labels"]["host"] == got["labels"]["instance"] == "web-1"
    assert len(got["labels"]) <= 7 + 32
    for name, value in got["labels"].items():
        assert LABEL_NAME.match(name) and not name.startswith("__"), name
        assert len(value) <= MAX_LABEL_VALUE
        assert not re.search(r"[\x00-\x1f\x7f\u202e]", value), value


TEXT_CASES = [
    ("summary-huge", {"summary": "x" * 2_000_000}),
    ("context-terminal-escape", {"context": "\x1b]0;pwned\x07 log line\r\nforged"}),
    ("context-not-utf8", {"context": "bad \udcff bytes"}),
]


@pytest.mark.parametrize(("n", "update"), list(enumerate((c[1] for c in TEXT_CASES), 100)),
                         ids=[c[0] for c in TEXT_CASES])
async def test_hostile_text_becomes_bounded_one_line_annotations(
        am: Alertmanager, n: int, update: dict[str, str]) -> None:
    route = RouteConfig(name="am", alertmanager=am.url, min_severity="info")
    async with httpx.AsyncClient() as client:
        sender = AlertmanagerRoute(route, client=client, dashboard="http://d/", wall=am.now)
        sender.take([hostile(am, n, **update)])
        assert await sender.send_once()
    [got] = [a for a in am.alerts() if a["annotations"].get("watchkeeper_id") == f"x{n}"]
    for value in got["annotations"].values():
        assert len(value) <= MAX_ANNOTATION
        assert not re.search(r"[\x00-\x1f\x7f]", value), value


@pytest.mark.parametrize(("n", "dashboard"), [
    (200, "dash"), (201, "http://dash/\x1b[2J x"), (202, "javascript:alert(1)"), (203, ""),
], ids=["not-a-url", "control-and-space", "javascript-scheme", "empty"])
async def test_a_bad_dashboard_link_never_makes_alertmanager_refuse_the_alerts(
        am: Alertmanager, n: int, dashboard: str) -> None:
    route = RouteConfig(name="am", alertmanager=am.url, min_severity="info")
    async with httpx.AsyncClient() as client:
        sender = AlertmanagerRoute(route, client=client, dashboard=dashboard, wall=am.now)
        sender.take([hostile(am, n)])
        assert await sender.send_once(), "Alertmanager refused the alert"
    [got] = [a for a in am.alerts() if a["annotations"].get("watchkeeper_id") == f"x{n}"]
    assert got.get("generatorURL", "") == ""  # left out rather than refused
    assert "\x1b" not in got["annotations"].get("dashboard", "")


class _Answering:
    """A loopback server at the Alertmanager's address answering ``status`` and ``body``;
    it records the Authorization header it was sent."""

    def __init__(self, status: int, body: bytes) -> None:
        self.auth: list[str | None] = []
        seen = self.auth

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                seen.append(self.headers.get("Authorization"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("answer", [
    (500, b"internal error"), (401, f"bad credentials for bob:{SECRET}".encode()),
    (400, b"\x1b]0;pwned\x07" + b"x" * 100_000), (None, b""),
], ids=["server-error", "answer-echoes-the-credentials", "hostile-huge-answer",
        "connection-refused"])
async def test_route_credentials_never_reach_a_log_line(
        caplog: pytest.LogCaptureFixture, answer: tuple[int | None, bytes]) -> None:
    caplog.set_level(logging.DEBUG)
    status, body = answer
    server = _Answering(status, body) if status is not None else None
    port = server.port if server is not None else _closed_port()
    route = RouteConfig(name="am", alertmanager=f"http://bob:{SECRET}@127.0.0.1:{port}/",
                        min_severity="info")
    try:
        async with httpx.AsyncClient() as client:
            sender = AlertmanagerRoute(route, client=client, dashboard="http://d/")
            now = datetime.now(timezone.utc)
            sender.take([Alert(host="h", id="a", fingerprint="f", rule="r", metric="m",
                               severity="critical", since=now, at=now, summary="s")])
            assert not await sender.send_once()
        ok, message = send_test(route, make_settings(Path("/nonexistent")))
    finally:
        if server is not None:
            server.close()
    assert not ok
    assert SECRET not in caplog.text and SECRET not in message
    assert "bob" not in caplog.text and "bob:" not in message
    assert all("\x1b" not in r.getMessage() and len(r.getMessage()) < 1000
               for r in caplog.records)
    if server is not None:  # the credentials went where they belong: basic auth
        assert server.auth and server.auth[0] is not None
        assert server.auth[0].startswith("Basic ")


class _Raw:
    """A loopback server at the Alertmanager's address that answers with ``head`` and then
    ``chunk`` every ``every`` seconds, for ever (until closed)."""

    def __init__(self, head: bytes, chunk: bytes, every: float) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.done = threading.Event()
        self.head, self.chunk, self.every = head, chunk, every
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(self.head)
                while not self.done.wait(self.every):
                    conn.sendall(self.chunk)
            except OSError:
                return

    def close(self) -> None:
        self.done.set()
        self.sock.close()


@pytest.mark.parametrize(("head", "chunk", "every"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", b"x", 0.2),
    (b"HTTP/1.1 500 Oops\r\nContent-Length: 10000000000\r\n\r\n", b"\x1b" * 65536, 0.0),
    (b"HTTP/1.1 2", b"0", 0.2),
], ids=["body-drips-a-byte-at-a-time", "error-with-an-endless-body", "headers-drip"])
async def test_an_answer_that_never_ends_costs_a_bounded_time_and_memory(
        head: bytes, chunk: bytes, every: float, caplog: pytest.LogCaptureFixture) -> None:
    server = _Raw(head, chunk, every)
    route = RouteConfig(name="am", alertmanager=f"http://127.0.0.1:{server.port}",
                        min_severity="info")
    try:
        async with httpx.AsyncClient() as client:
            sender = AlertmanagerRoute(route, client=client, dashboard="", timeout_s=1.0)
            now = datetime.now(timezone.utc)
            sender.take([Alert(host="h", id="a", fingerprint="f", rule="r", metric="m",
                               severity="critical", since=now, at=now, summary="s")])
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert not await sender.send_once()
            assert loop.time() - started < 3
    finally:
        server.close()
    assert all(len(r.getMessage()) < 1000 and "\x1b" not in r.getMessage()
               for r in caplog.records)


def test_config_show_masks_the_alertmanager_credentials(tmp_path: Path) -> None:
    (tmp_path / "wk.yaml").write_text(
        "notify:\n  routes:\n    - name: am\n"
        f"      alertmanager: http://bob:{SECRET}@127.0.0.1:9093/?token={SECRET}\n")
    result = cli(tmp_path, "--config", "wk.yaml", "config", "show")
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "http://**********@127.0.0.1:9093/?**********" in result.stdout


async def test_the_api_masks_the_alertmanager_credentials(tmp_path: Path) -> None:
    url = f"http://bob:{SECRET}@127.0.0.1:{_closed_port()}"
    settings = api_settings(tmp_path, notify={"routes": [{"name": "am", "alertmanager": url}]})
    async with serve_api(settings) as api:
        r = await api.client.get("/api/config", headers=api.auth())
    assert r.status_code == 200
    assert SECRET not in r.text and "bob" not in r.text


async def test_a_hanging_alertmanager_delays_nothing_but_its_sender(tmp_path: Path) -> None:
    # Accepts connections and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    port = silent.getsockname()[1]
    settings = make_settings(tmp_path, agents={"check_interval": 0.05}, notify={"routes": [
        {"name": "am", "alertmanager": f"http://127.0.0.1:{port}", "min_severity": "info"}]})
    bus = MemoryBus()
    agent = AlertmanagerAgent(bus=bus, config=ConfigStore(settings), host="h",
                              route_options={"timeout_s": 1.0})
    task = asyncio.get_running_loop().create_task(agent.run())
    try:
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        now = datetime.now(timezone.utc)
        # Well past any queue: the publisher (the analyzer) must never wait on the network.
        for i in range(20_000):
            await bus.publish("alerts.h", Alert(
                host="h", id=f"a{i}", fingerprint=f"f{i % 500}", rule="r", metric="m",
                dimension=f"d{i % 500}", severity="critical", since=now, at=now, summary=f"s{i}"))
        assert loop.time() - started < 10
        sender = agent.routes["am"]
        deadline = loop.time() + 10
        while not sender.down:
            assert loop.time() < deadline, "the post never timed out"
            await asyncio.sleep(0.05)
        assert sender.state.firing_count() == 500
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        await bus.close()
        silent.close()
