"""The scriptable commands against a hostile or wrong server: what it sends is shown as text
(never terminal control), in one line, and the token never goes anywhere but --url.

A real HTTP server on 127.0.0.1 answers each case as an attacker (or a different program on
the port) would; `watchkeeper` runs as a real subprocess against it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ..integration.test_cli import wk_env

ESC = "\x1b]0;pwned\x07\x1b[2J"


class _Hostile(ThreadingHTTPServer):
    daemon_threads = True
    answer: tuple[int, dict[str, str], bytes] = (200, {}, b"{}")
    seen: list[tuple[str, str | None]]


class _Handler(BaseHTTPRequestHandler):
    server: _Hostile

    def _answer(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        status, headers, body = self.server.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[_Hostile]:
    server = _Hostile(("127.0.0.1", 0), _Handler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _url(server: _Hostile) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _wk(tmp_path: Path, server: _Hostile, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "watchkeeper", *args, "--url", _url(server),
                           "--token", "secret-token"], cwd=tmp_path,
                          env=wk_env(tmp_path, COLUMNS="200"), capture_output=True, text=True,
                          timeout=60)


def _json(status: int, body: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


ALERT = {"severity": "critical", "state": "firing", "rule": ESC, "fingerprint": "ab" + ESC,
         "summary": "disk\nwatchkeeper: all good\u202e", "since": "2026-01-01T00:00:00Z"}

TABLES = {
    "alert-fields-with-terminal-escapes": ("alerts", {"alerts": [ALERT]}),
    "service-detail-with-escapes": ("services", {"services": [
        {"name": ESC, "manager": "process", "condition": "down", "state": ESC,
         "detail": ESC * 50}]}),
    "agent-error-with-escapes": ("agents", {"agents": [
        {"name": "sensor", "state": "running", "last_error": ESC}]}),
    "process-command-line-with-escapes": ("metrics", {"processes": {"top_cpu": [
        {"pid": 1, "name": ESC, "user": ESC, "cmdline": ESC}]}, "disks": [
        {"mountpoint": ESC, "device": ESC}]}),
    "activity-with-escapes": ("logs", {"events": [
        {"at": ESC, "kind": ESC, "event": {"summary": ESC, "message": ESC}},
        {"at": "2026-01-01T00:00:00Z", "kind": "alert", "event": ALERT}]}),
    "status-reasons-with-escapes": ("status", {"status": ESC, "reasons": [ESC]}),
    "rich-markup-in-a-value": ("alerts", {"alerts": [{**ALERT, "summary": "[blink]x[/blink]"}]}),
}


@pytest.mark.parametrize(("command", "body"), TABLES.values(), ids=TABLES.keys())
def test_server_text_is_shown_never_obeyed(tmp_path: Path, hostile: _Hostile, command: str,
                                           body: Any) -> None:
    hostile.answer = _json(200, body)
    out = _wk(tmp_path, hostile, command)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout and "\u202e" not in out.stdout
    assert "\\x1b" in out.stdout or "[blink]" in out.stdout


WRONG = {
    "not-json": ((200, {"Content-Type": "text/html"}, b"<html>hello</html>"), "is not JSON"),
    "json-of-another-shape": (_json(200, ["a", "list"]), "is not what watchkeeper sends"),
    "fields-of-the-wrong-type": (_json(200, {"status": "ok", "alerts": [1, 2],
                                             "reasons": 5}), "is not what watchkeeper sends"),
    "huge-error-detail": (_json(500, {"detail": "x" * 1_000_000}), "500: xxx"),
    "error-detail-with-escapes-and-lines": (_json(409, {"detail": ESC + "\nforged line"}),
                                            "409: \\x1b"),
    "error-without-a-body": ((503, {}, b""), "503: Service Unavailable"),
}


@pytest.mark.parametrize(("answer", "said"), WRONG.values(), ids=WRONG.keys())
def test_a_wrong_answer_exits_1_with_one_safe_line(tmp_path: Path, hostile: _Hostile,
                                                   answer: tuple[int, dict[str, str], bytes],
                                                   said: str) -> None:
    hostile.answer = answer
    out = _wk(tmp_path, hostile, "status")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], out.stderr
    assert len(lines[0]) < 700 and "\x1b" not in lines[0]


def test_a_redirect_is_not_followed_so_the_token_stays(tmp_path: Path, hostile: _Hostile
                                                       ) -> None:
    elsewhere = _Hostile(("127.0.0.1", 0), _Handler)
    elsewhere.seen = []
    thread = threading.Thread(target=elsewhere.serve_forever, daemon=True)
    thread.start()
    try:
        hostile.answer = (307, {"Location": f"{_url(elsewhere)}/api/actions/1/approve"}, b"")
        out = _wk(tmp_path, hostile, "approve", "1")
    finally:
        elsewhere.shutdown()
        elsewhere.server_close()
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert hostile.seen == [("/api/actions/1/approve", "Bearer secret-token")]
    assert elsewhere.seen == []


def test_an_ack_fingerprint_stays_in_its_path_segment(tmp_path: Path, hostile: _Hostile
                                                      ) -> None:
    hostile.answer = _json(200, {"summary": "ok"})
    out = _wk(tmp_path, hostile, "ack", "../../command?x=1#y")
    assert out.returncode == 0, out.stderr
    assert hostile.seen[0][0] == "/api/alerts/..%2F..%2Fcommand%3Fx%3D1%23y/ack"


# Raw in a JSON string, these are legal JSON and yet act on a terminal (U+009B is an 8-bit
# CSI) or hide and reorder what follows; ensure_ascii=False output would pass them through.
C1_BIDI = "\u009b2J\u009d0;pwned\u009c\u202egnp.exe\u2028\u200b\udcff"
JSON_CASES = {
    "status": {"status": "ok", "reasons": [C1_BIDI]},
    "alerts": {"alerts": [{**ALERT, "summary": C1_BIDI}]},
    "ack": {"summary": C1_BIDI},
}


@pytest.mark.parametrize(("command", "body"), JSON_CASES.items(), ids=[
    f"{c}-json-with-c1-controls-and-bidi" for c in JSON_CASES])
def test_json_output_escapes_what_a_terminal_would_obey(tmp_path: Path, hostile: _Hostile,
                                                        command: str, body: Any) -> None:
    hostile.answer = (200, {"Content-Type": "application/json"},
                      json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    args = (command, "ab") if command == "ack" else (command,)
    out = _wk(tmp_path, hostile, *args, "--json")
    assert out.returncode == 0, out.stderr
    bad = [c for c in out.stdout if 0x7f <= ord(c) <= 0x9f or c in "\u202e\u2028\u200b"]
    assert bad == []
    assert "\\u009b" in out.stdout and "\\u202e" in out.stdout
    parsed = json.loads(out.stdout)
    assert json.dumps(parsed, ensure_ascii=False).count("\u009b") == 1  # same data, escaped
