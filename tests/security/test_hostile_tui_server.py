"""The terminal UI against a hostile or wrong server: whatever it sends is shown as text,
never as terminal control, Rich markup or Textual actions, and no answer ends the session.

A real HTTP server on 127.0.0.1 answers as an attacker (or another program on the port)
would; the app runs headless (Textual's pilot) against it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from textual.widgets import DataTable, OptionList, Static

from watchkeeper.cli.tui.app import WatchkeeperApp
from watchkeeper.cli.tui.capture import screen_text

#: Each attack: what the server sends in a name, and what the screen must show instead.
ATTACKS = {
    "osc-retitle-and-clear": ("\x1b]0;pwned\x07\x1b[2J", "\\x1b]0;pwned\\x07\\x1b[2J"),
    "sgr-colour": ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    "rich-markup": ("[bold red]loud[/bold red]", "[bold red]loud[/bold red]"),
    "textual-click-action": ("[@click=app.quit]click me[/]", "[@click=app.quit]click me[/]"),
    "bidi-override": ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
    "forged-line": ("ok\nwatchkeeper: all good", "ok\\nwatchkeeper: all good"),
}


class _Status:
    """An answer with another status than 200: ``routes[path] = _Status(504, body)``."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body


class _Hostile(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Any]


class _Handler(BaseHTTPRequestHandler):
    server: _Hostile

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/api/events":
            body = self.server.routes.get(path, b"")
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        found = self.server.routes.get(path)
        status = 200 if found is not None else 404
        if isinstance(found, _Status):
            status, found = found.status, found.body
        raw = json.dumps(found).encode() if found is not None else b'{"detail": "no"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[_Hostile]:
    server = _Hostile(("127.0.0.1", 0), _Handler)
    server.routes = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _routes(text: str) -> dict[str, Any]:
    alert = {"severity": "critical", "state": "firing", "rule": "r", "fingerprint": "f1",
             "summary": text, "since": "2026-01-01T00:00:00Z", "value": 1.0,
             "assessment": {"source": "llm", "summary": text, "likely_cause": text,
                            "confidence": 0.9, "suggested_actions": [{"action": text}]}}
    event = {"kind": "agent_error", "agent": text, "error": text}
    return {
        "/api/system": {"status": text, "reasons": [text], "alerts": {}, "host": text,
                        "os": text, "version": text, "agents_running": 4, "agents_total": 4},
        "/api/agents": {"agents": [{"name": text, "state": text, "last_error": text}]},
        "/api/alerts": {"alerts": [alert]},
        "/api/bus": {"topics": [{"topic": text, "published": 1, "delivered": 1, "dropped": 0,
                                 "queue_depth": 0}]},
        "/api/hosts": {"fleet": True, "hosts": [], "rejected": {text: 3},
                       "duplicate_snapshots": 2},
        "/api/events": (f"event: ready\ndata: {{}}\n\n"
                        f"id: x-1\nevent: agent_error\ndata: {json.dumps(event)}\n\n").encode(),
    }


async def _show(app: WatchkeeperApp, pilot: Any, key: str, *texts: str) -> str:
    await pilot.press(key)
    await app.reload()
    deadline = time.monotonic() + 10
    while not all(t in (screen := screen_text(app)) for t in texts):
        assert time.monotonic() < deadline, f"never showed {texts}:\n{screen}"
        await pilot.pause(0.1)
    return screen


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_hostile_text_is_shown_as_text(hostile: _Hostile, attack: str) -> None:
    sent, shown = ATTACKS[attack]
    hostile.routes = _routes(sent)
    app = WatchkeeperApp(f"http://127.0.0.1:{hostile.server_address[1]}",
                         lambda: (None, "none"), offer_local=False, poll_s=60)
    async with app.run_test(size=(160, 40)) as pilot:
        for key in "12469":
            screen = await _show(app, pilot, key, shown[:30])
            assert "\x1b" not in screen and "\u202e" not in screen
        await pilot.click("#live")  # a click on the text runs no action hidden in it
        assert app.is_running
        await pilot.press("q")


@pytest.mark.parametrize(("path", "body"), [
    ("/api/system", ["not", "an", "object"]),
    ("/api/system", {"status": {"nested": True}, "reasons": "abc", "alerts": []}),
    ("/api/agents", {"agents": "not a list"}),
    ("/api/agents", {"agents": [1, None, "x"]}),
    ("/api/alerts", {"alerts": [{"assessment": "not an object", "since": 5}]}),
], ids=["system-a-list", "system-wrong-types", "agents-not-a-list", "agents-not-objects",
        "alert-wrong-types"])
async def test_an_answer_of_the_wrong_shape_is_said_and_the_ui_goes_on(
        hostile: _Hostile, path: str, body: Any) -> None:
    hostile.routes = {path: body}
    app = WatchkeeperApp(f"http://127.0.0.1:{hostile.server_address[1]}",
                         lambda: (None, "none"), offer_local=False, poll_s=60)
    async with app.run_test(size=(120, 30)) as pilot:
        for key in "124":
            await pilot.press(key)
            await app.reload()
            if key == "1" and path == "/api/system" and isinstance(body, list):
                assert "is not what watchkeeper sends" in str(
                    app.query_one("#message", Static).content)
        assert app.is_running
        await pilot.press("3")  # a 404 here: said, and the UI goes on
        await app.reload()
        assert app.is_running
        await pilot.press("q")


async def test_a_huge_name_is_cut(hostile: _Hostile) -> None:
    hostile.routes = _routes("A" * 1_000_000)
    app = WatchkeeperApp(f"http://127.0.0.1:{hostile.server_address[1]}",
                         lambda: (None, "none"), offer_local=False, poll_s=60)
    async with app.run_test(size=(120, 30)) as pilot:
        await _show(app, pilot, "2", "AAAA")
        name, state = app.query_one("#agents", DataTable).get_row_at(0)[:2]
        assert len(str(name)) <= 200 and str(name).endswith("…")
        assert len(str(state)) <= 40
        await pilot.press("q")


async def test_the_bus_view_shows_a_centrals_refusals_by_reason(hostile: _Hostile) -> None:
    # A fleet central over NATS counts what it refused (a host publishing as another); the
    # in-process bus of the other tests refuses nothing, so a server answers it here.
    hostile.routes = {"/api/bus": {"topics": []}, "/api/hosts": {
        "fleet": True, "hosts": [], "rejected": {"wrong_host": 3, "undecodable": 0},
        "duplicate_snapshots": 2}}
    app = WatchkeeperApp(f"http://127.0.0.1:{hostile.server_address[1]}",
                         lambda: (None, "none"), offer_local=False, poll_s=60)
    async with app.run_test(size=(120, 30)) as pilot:
        await _show(app, pilot, "6", "refused from the bus since the server started: "
                    "wrong_host 3 · duplicate snapshots stored once: 2")
        assert "bad" in app.query_one("#bus-wire").classes
        await pilot.press("q")


def _fleet_routes(text: str) -> dict[str, Any]:
    """A central whose one host has ``text`` for its name, health, counts and times, and
    for what its metrics say."""
    routes = _routes(text)
    routes["/api/hosts"] = {"fleet": True, "hosts": [
        {"host": text, "health": text, "open_alerts": text, "last_seen": text,
         "last_snapshot_at": text}], "rejected": {}, "duplicate_snapshots": 0}
    routes["/api/metrics"] = {"host": text, "cpu": {"count_logical": text},
                              "memory": {"total": text},
                              "processes": {"total": text, "top_cpu": [
                                  {"pid": 7, "name": text, "user": text, "cmdline": text}]}}
    routes["/api/metrics/history"] = {"points": []}
    return routes


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_a_hosts_name_and_health_are_shown_as_text(hostile: _Hostile,
                                                         attack: str) -> None:
    sent, shown = ATTACKS[attack]
    hostile.routes = _fleet_routes(sent)
    app = WatchkeeperApp(f"http://127.0.0.1:{hostile.server_address[1]}",
                         lambda: (None, "none"), offer_local=False, poll_s=60)
    async with app.run_test(size=(160, 40)) as pilot:
        screen = await _show(app, pilot, "1", "fleet: 1 host ", shown[:30])  # the overview
        await pilot.press("h")  # the picker
        screen += await _show(app, pilot, "down", "Show which host?", shown[:30])
        pilot.app.screen.query_one("#dialog-options", OptionList).highlighted = 1
        await pilot.press("enter")
        screen += await _show(app, pilot, "3", f"showing {shown[:30]}", "top processes")
        assert app.query_one("#top", DataTable).row_count == 1
        for text in (screen, str(app.query_one("#conn", Static).content)):
            assert "\x1b" not in text and "\u202e" not in text
        await pilot.click("#conn")  # a click on the text runs no action hidden in it
        assert app.is_running
        await pilot.press("q")


async def test_a_host_that_stops_answering_is_said_instead_of_its_last_rows(
        hostile: _Hostile) -> None:
    hostile.routes = {"/api/hosts": {"fleet": True, "hosts": [
        {"host": "web-9", "health": "ok", "open_alerts": 0,
         "last_seen": "2026-01-01T00:00:00Z", "last_snapshot_at": None}]},
        "/api/services": {"services": [{"name": "nginx", "host": "web-9", "condition": "ok"}]},
        "/api/actions": {"entries": [], "pending": [], "audit_chain": {"ok": True}}}
    app = WatchkeeperApp(f"http://127.0.0.1:{hostile.server_address[1]}",
                         lambda: (None, "none"), offer_local=False, poll_s=60)
    async with app.run_test(size=(120, 30)) as pilot:
        app.fleet.chosen = "web-9"  # as h does (tests/integration/test_tui_fleet.py)
        await _show(app, pilot, "5", "host web-9 (ok, 0 open alerts)", "nginx")
        hostile.routes["/api/services"] = _Status(
            504, {"detail": "web-9 did not answer in time"})
        await _show(app, pilot, "5", "nothing shown for web-9: 504: web-9 did not answer "
                    "in time")
        assert app.query_one("#services", DataTable).row_count == 0
        assert "nginx" not in screen_text(app)
        assert app.is_running
        await pilot.press("q")
