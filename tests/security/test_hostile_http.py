"""Security corpus: hostile HTTP (issue 11's web classes): Host names, encodings, sizes,
slow clients, piles of streams, and the shared token claiming a named operator.

Each case is what a web page (DNS rebinding), a local user or a token holder can send to a
real server: `watchkeeper serve` started here as a subprocess, or the API app on a real
uvicorn. The promise: a clear JSON error, nothing changed, and the agents unharmed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from watchkeeper.api.routes.events import STREAM_RETRY_AFTER_S

from ..integration.test_api_harness import OPERATOR, api_settings, serve_api, until
from ..integration.test_api_write import _pending, remediator_idle
from ..integration.test_cli import wk_env

# --- a real `watchkeeper serve` and raw HTTP ------------------------------------------------


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    root: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def status_file(self) -> Path:
        return self.root / "logs" / "system_status.json"

    def log(self) -> str:
        path = self.root / "logs" / "agent_system.log"
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


def _limit_files(n: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def start(root: Path, *, nofile: int | None = None, **env: str) -> Served:
    """`watchkeeper serve` on a free port, optionally with a low open-file limit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchkeeper", "serve", "--port", "0", "--no-console-log"],
        cwd=root, env=wk_env(root, **env), stderr=subprocess.PIPE,
        preexec_fn=(lambda: _limit_files(nofile)) if nofile else None)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert found, line
    served = Served(proc, int(found.group(1)), root)
    deadline = time.monotonic() + 20
    while not _healthy(served):
        assert time.monotonic() < deadline, "serve did not become healthy"
        time.sleep(0.1)
    return served


def stop(served: Served) -> None:
    served.proc.send_signal(signal.SIGTERM)
    try:
        served.proc.communicate(timeout=30)
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.communicate()


def _healthy(served: Served) -> bool:
    try:
        return httpx.get(f"{served.url}/api/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.body)
        return data


def exchange(port: int, request: bytes, timeout: float = 10.0) -> Reply:
    """Send ``request`` as it is, read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if _complete(data):
                break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), data[:200]
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return Reply(int(lines[0].split()[1]), headers, body)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return found is not None and len(body) >= int(found.group(1))


def get(port: int, path: str, host: bytes | None, *extra: bytes,
        version: bytes = b"HTTP/1.1") -> Reply:
    lines = [b"GET " + path.encode() + b" " + version]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += [*extra, b"Connection: close", b"", b""]
    return exchange(port, b"\r\n".join(lines))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the Host corpus: default settings, plus two names and a token."""
    root = tmp_path_factory.mktemp("hosts")
    s = start(root, WATCHKEEPER_API__TOKEN=OPERATOR, WATCHKEEPER_AGENTS__CHECK_INTERVAL="0.5",
              WATCHKEEPER_API__ALLOWED_HOSTS='["dash.example.com", "*.corp.example"]')
    yield s
    stop(s)


# --- DNS rebinding: the Host header ---------------------------------------------------------

#: Host values that name this server (any port): loopback in every spelling, and the
#: names the configuration adds.
ALLOWED = {
    "loopback-ipv4-with-port": "127.0.0.1:{port}",
    "loopback-ipv4-no-port": "127.0.0.1",
    "localhost-with-port": "localhost:{port}",
    "localhost-mixed-case": "LocalHost:{port}",
    "localhost-trailing-dot": "localhost.:{port}",
    "ipv6-loopback-with-port": "[::1]:{port}",
    "ipv6-loopback-no-port": "[::1]",
    "ipv6-loopback-long-form": "[0:0:0:0:0:0:0:1]:{port}",
    "ipv4-mapped-loopback": "[::ffff:127.0.0.1]:{port}",
    "another-loopback-address": "127.0.0.2:{port}",
    "any-port": "localhost:1",
    "empty-port": "127.0.0.1:",
    "configured-name": "dash.example.com",
    "configured-name-upper-case-and-port": "DASH.EXAMPLE.COM:443",
    "configured-wildcard": "grafana.corp.example:8443",
    "configured-wildcard-deep": "a.b.corp.example",
}

#: Names of other servers: what a page that rebinds its own name to 127.0.0.1 sends.
MISDIRECTED = {
    "rebound-name": "evil.example",
    "rebound-name-with-port": "evil.example:{port}",
    "rebound-name-upper-case": "EVIL.EXAMPLE:{port}",
    "loopback-as-subdomain": "127.0.0.1.evil.example",
    "localhost-as-subdomain": "localhost.evil:{port}",
    "localhost-suffix": "evillocalhost",
    "subdomain-of-localhost": "evil.localhost",
    "configured-name-as-prefix": "dash.example.com.evil.example",
    "configured-name-parent": "example.com",
    "wildcard-apex-not-covered": "corp.example",
    "wildcard-suffix-without-dot": "evilcorp.example",
    "decimal-ip": "2130706433",
    "hex-ip": "0x7f000001",
    "short-ip": "127.1",
    "punycode-look-alike": "xn--lcalhost-n2a",
    "unspecified-address": "0.0.0.0:{port}",
    "unspecified-ipv6": "[::]:{port}",
    "another-machines-address": "192.0.2.10",
}

#: Host values that are not host[:port] at all.
MALFORMED = {
    "empty": "",
    "ipv6-without-brackets": "::1",
    "unclosed-bracket": "[::1",
    "junk-after-bracket": "[::1]x",
    "not-ipv6-in-brackets": "[evil.example]",
    "port-too-large": "127.0.0.1:99999",
    "port-not-a-number": "127.0.0.1:http",
    "two-ports": "127.0.0.1:80:80",
    "userinfo": "evil.example@127.0.0.1",
    "percent-encoded-dot": "127.0.0.1%2eevil.example",
    "path-in-host": "127.0.0.1/evil",
    "space-inside": "127.0.0.1 evil.example",
    "leading-dot": ".localhost",
    "double-dot": "localhost..evil",
    "too-long": "a" * 300,
}


@pytest.mark.parametrize("host", ALLOWED.values(), ids=ALLOWED.keys())
def test_names_of_this_server_are_served(served: Served, host: str) -> None:
    r = get(served.port, "/api/health", host.format(port=served.port).encode())
    assert r.status == 200, r.body


@pytest.mark.parametrize("host", MISDIRECTED.values(), ids=MISDIRECTED.keys())
def test_other_names_are_421_with_how_to_allow_them(served: Served, host: str) -> None:
    r = get(served.port, "/api/config", host.format(port=served.port).encode())
    assert r.status == 421, r.body
    body = r.json()
    assert body["error"] == "misdirected_request"
    assert "api.allowed_hosts" in str(body["detail"])
    assert b"thresholds" not in r.body  # nothing of the configuration
    assert r.headers["content-type"] == "application/json"


@pytest.mark.parametrize("host", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_hosts_are_400(served: Served, host: str) -> None:
    r = get(served.port, "/api/config", host.encode())
    assert r.status == 400, r.body
    assert b"thresholds" not in r.body


@pytest.mark.parametrize("raw", [b"\xc3\xa9vil.example", b"local\xffhost", b"127.0.0.1\x00"],
                         ids=["non-ascii-name", "invalid-utf8", "nul-byte"])
def test_binary_hosts_are_400(served: Served, raw: bytes) -> None:
    r = get(served.port, "/api/config", raw)
    assert r.status == 400, r.body


#: Every kind of route: pages, JSON, the stream, Prometheus, the API docs, static files.
EVERY_ROUTE = ["/", "/api/config", "/api/metrics", "/api/actions", "/api/activity",
               "/api/alerts", "/api/events", "/metrics", "/docs", "/openapi.json",
               "/static/app.js", "/api/health", "/no-such-page"]


@pytest.mark.parametrize("path", EVERY_ROUTE)
def test_every_route_refuses_a_rebound_name(served: Served, path: str) -> None:
    r = get(served.port, path, b"evil.example")
    assert r.status == 421, (path, r.body[:200])


def test_a_rebound_name_cannot_mutate_even_with_the_token(served: Served) -> None:
    body = b'{"thresholds": {"cpu_warning": 11}}'
    r = exchange(served.port, b"PATCH /api/config HTTP/1.1\r\nHost: evil.example\r\n"
                 b"Authorization: Bearer " + OPERATOR.encode() + b"\r\n"
                 b"Content-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    assert r.status == 421
    config = httpx.get(f"{served.url}/api/config", timeout=10).json()["config"]
    assert config["thresholds"]["cpu_warning"] != 11


def test_two_host_headers_are_400(served: Served) -> None:
    r = get(served.port, "/api/config", b"127.0.0.1", b"Host: evil.example")
    assert r.status == 400
    r = get(served.port, "/api/config", b"evil.example", b"Host: 127.0.0.1")
    assert r.status == 400


def test_no_host_header(served: Served) -> None:
    # HTTP/1.0 without Host is served: a browser always sends one and a page cannot remove
    # it, so its absence never comes from a web page. HTTP/1.1 requires it (h11: 400).
    assert get(served.port, "/api/health", None, version=b"HTTP/1.0").status == 200
    assert get(served.port, "/api/health", None).status == 400


@pytest.mark.parametrize("target", [b"http://evil.example/api/config",
                                    b"http://127.0.0.1/api/config"],
                         ids=["absolute-url-naming-another-server", "absolute-url-own-name"])
def test_an_absolute_url_in_the_request_line_reads_nothing(served: Served, target: bytes
                                                           ) -> None:
    # A proxy-style request line: the Host header decides, and the path is not a route.
    r = exchange(served.port, b"GET " + target + b" HTTP/1.1\r\nHost: evil.example\r\n"
                 b"Connection: close\r\n\r\n")
    assert r.status == 421
    r = exchange(served.port, b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Connection: close\r\n\r\n")
    assert r.status in (400, 404) and b"thresholds" not in r.body


def test_refused_hosts_are_logged_once_a_minute_at_most(served: Served) -> None:
    def refusals() -> list[str]:
        return [x for x in served.log().splitlines() if "does not name this server" in x]

    before = len(refusals())
    started = time.monotonic()
    for n in range(50):
        assert get(served.port, "/api/health", f"rebind-{n}.example".encode()).status == 421
    new = refusals()[before:]
    # 50 refusals, each naming a new host: one line a minute (a minute may begin during
    # these 50; the line that starts it counts what was held back).
    assert len(new) <= 1 + int((time.monotonic() - started) // 60) + 1, new
    assert len(refusals()) >= 1
    assert all("more like this" in line for line in new[1:])


# --- hostile encodings and sizes ------------------------------------------------------------

HOSTILE_REQUESTS = {
    "nul-in-path": b"GET /api/config%00 HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    "raw-non-ascii-path": b"GET /api/\xc3\xa9 HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    "overlong-utf8-dot": b"GET /static/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd HTTP/1.1\r\n"
                         b"Host: 127.0.0.1\r\n",
    "dot-dot-encoded": b"GET /static/..%2f..%2fconfig.py HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    "host-folded-onto-two-lines": b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                  b" evil.example\r\n",
    "cr-in-header-value": b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\rX: y\r\n",
    "smuggling-cl-and-te": b"POST /api/command HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
    "two-content-lengths": b"POST /api/command HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Length: 4\r\nContent-Length: 5\r\n",
    "negative-content-length": b"POST /api/command HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               b"Content-Length: -1\r\n",
    "huge-content-length": b"POST /api/command HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Length: 99999999999999999999\r\n",
    "unknown-transfer-encoding": b"POST /api/command HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 b"Transfer-Encoding: gzip\r\n",
    "header-name-with-space": b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX A: b\r\n",
    "http-0.9-style": b"GET /api/health\r\n",
    "oversized-header": b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                        + b"a" * 20_000 + b"\r\n",
    "many-headers": b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 40) for i in range(400)),
    "oversized-url": b"GET /api/health?" + b"a=b&" * 5_000 + b" HTTP/1.1\r\n"
                     b"Host: 127.0.0.1\r\n",
}


@pytest.mark.parametrize("head", HOSTILE_REQUESTS.values(), ids=HOSTILE_REQUESTS.keys())
def test_hostile_requests_get_a_clear_refusal_and_the_server_goes_on(served: Served,
                                                                     head: bytes) -> None:
    try:
        r = exchange(served.port, head + b"Connection: close\r\n\r\n", timeout=15)
        status = r.status
    except (AssertionError, ConnectionError):
        status = 0  # the parser hung up: no answer at all is a refusal too
    assert status in (0, 400, 404, 405, 413, 421, 422, 431, 501, 505), (status, head[:80])
    assert status < 500 or status in (501, 505)
    assert _healthy(served)


@pytest.mark.parametrize("head", [
    b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n",
    b"GET /api/health?" + b"a=b&" * 5_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n",
], ids=["one-20-kib-header", "a-20-kib-url"])
def test_a_request_head_over_16_kib_is_431(served: Served, head: bytes) -> None:
    # Even when it arrives in one piece (h11 checks its 16 KiB only on incomplete heads).
    r = exchange(served.port, head + b"Connection: close\r\n\r\n")
    assert r.status == 431 and r.json()["error"] == "request_header_fields_too_large"


@pytest.mark.parametrize("head", [
    b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\r\n b\r\n",
    b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n",
    b"GET /api/health HTTP/1.9\r\nHost: 127.0.0.1\r\n",
], ids=["folded-harmless-header", "websocket-upgrade", "minor-version-1.9"])
def test_tolerated_oddities_are_plain_requests(served: Served, head: bytes) -> None:
    # RFC 9112 lets a server unfold a header (h11 does); no route takes a WebSocket, so an
    # upgrade is never accepted (no 101), the request is answered as a plain GET.
    r = exchange(served.port, head + b"Connection: close\r\n\r\n")
    assert r.status == 200


def test_a_body_over_64_kib_is_413(served: Served) -> None:
    body = b'{"x": "' + b"a" * (65 * 1024) + b'"}'
    r = exchange(served.port, b"PATCH /api/config HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Authorization: Bearer " + OPERATOR.encode() + b"\r\nContent-Type: "
                 b"application/json\r\nContent-Length: " + str(len(body)).encode()
                 + b"\r\nConnection: close\r\n\r\n" + body)
    assert r.status == 413


# --- slow clients and connection floods -----------------------------------------------------


def _half_open(port: int, n: int, head: bytes) -> list[socket.socket]:
    """``n`` connections that each send the start of a request and never finish it."""
    socks = []
    for _ in range(n):
        sock = socket.socket()
        sock.settimeout(3)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(head)
        except OSError:  # the server's queue is full: what a flood meets
            sock.close()
            continue
        socks.append(sock)
    return socks


def _status_writes(served: Served, seconds: float) -> set[int]:
    """The distinct versions of system_status.json seen during ``seconds``."""
    seen = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            seen.add(served.status_file.stat().st_mtime_ns)
            json.loads(served.status_file.read_text())  # and it is whole
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.05)
    return seen


NOFILE = 400  # the server's open-file limit in these tests: small, so the flood is too


def test_a_flood_of_half_open_requests_cannot_starve_the_agents(tmp_path: Path) -> None:
    # Default API settings; only the open-file limit is lowered (so that 600 connections
    # are a flood) and ticks are fast (so that the cadence shows within seconds). On the
    # old code the process ran out of descriptors: the status file stopped, /api/health
    # timed out and the log filled with "socket.accept() out of system resource".
    served = start(tmp_path, nofile=NOFILE, WATCHKEEPER_AGENTS__CHECK_INTERVAL="0.2",
                   WATCHKEEPER_STORAGE__FLUSH_INTERVAL="0.5")
    socks: list[socket.socket] = []
    try:
        socks = _half_open(served.port, 600, b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert len(socks) > 300  # the flood is real
        assert served.open_fds() < NOFILE - 100  # the agents' share is untouched
        # The agents keep their cadence: the status file is rewritten every flush.
        assert len(_status_writes(served, 3.0)) >= 3
        # A fresh client is served while the slow ones still hold their connections.
        started = time.monotonic()
        r = httpx.get(f"{served.url}/api/health", timeout=5)
        assert r.status_code == 200 and r.json()["ready"] is True
        assert time.monotonic() - started < 2.0
        served.proc.send_signal(0)
        log = served.log()
        assert "out of system resource" not in log
        assert "Too many open files" not in log
        assert len(log.splitlines()) < 40, log[-3000:]
    finally:
        for sock in socks:
            sock.close()
        stop(served)
    assert served.proc.returncode == 0


@pytest.mark.parametrize("head", [
    b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: a",
    b"PATCH /api/config HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n{\"thresholds\":",
    b"",
], ids=["head-never-ends", "header-line-never-ends", "body-never-ends", "connects-sends-nothing"])
def test_a_slow_request_is_cut_after_request_timeout(tmp_path: Path, head: bytes) -> None:
    # request_timeout_s lowered to 1 s (default 10 s) to keep the test short.
    served = start(tmp_path, WATCHKEEPER_API__REQUEST_TIMEOUT_S="1",
                   WATCHKEEPER_AGENTS__CHECK_INTERVAL="1")
    try:
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            sock.sendall(head)
            started = time.monotonic()
            for _ in range(5):  # trickling more in does not extend the deadline
                time.sleep(0.15)
                if head:
                    sock.sendall(b"a")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            took = time.monotonic() - started
        assert 0.5 < took < 3.0, took
        if head and not head.endswith(b'{"thresholds":'):
            assert data.startswith(b"HTTP/1.1 408 "), data
            assert b"request_timeout" in data
    finally:
        stop(served)


def test_a_quick_client_after_a_slow_one_on_the_same_connection(tmp_path: Path) -> None:
    # Keep-alive: the deadline starts again after each answer, so a connection that sent a
    # quick request is not cut in the middle of its next one because it was open long.
    served = start(tmp_path, WATCHKEEPER_API__REQUEST_TIMEOUT_S="1",
                   WATCHKEEPER_AGENTS__CHECK_INTERVAL="1")
    try:
        with httpx.Client(base_url=served.url, timeout=5) as client:
            for _ in range(4):
                assert client.get("/api/health").status_code == 200
                time.sleep(0.4)
    finally:
        stop(served)


# --- piles of live streams ------------------------------------------------------------------


async def _open_stream(port: int) -> asyncio.StreamWriter:
    """An idle /api/events stream (the server runs in this loop: no blocking calls)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/events?topics=alerts.* HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while b"event: ready" not in data:
        chunk = await asyncio.wait_for(reader.read(4096), 10)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data
    return writer


async def test_live_streams_are_capped_at_64_by_default(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        port = int(api.url.rsplit(":", 1)[1])
        streams = [await _open_stream(port) for _ in range(64)]
        try:
            r = await api.client.get("/api/events")
            assert r.status_code == 503
            assert r.headers["retry-after"] == str(STREAM_RETRY_AFTER_S)
            assert r.json()["error"] == "service_unavailable"
            assert "api.max_streams" in r.json()["detail"]
            assert (await api.client.get("/api/health")).status_code == 200  # the rest works
            streams.pop().close()  # one leaves: a new one may come

            async def room() -> bool:
                return len(api.app.state.streams) < 64

            await until(room)
            streams.append(await _open_stream(port))
        finally:
            for writer in streams:
                writer.close()


async def test_max_streams_is_configurable(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path, api={"max_streams": 2})) as api:
        port = int(api.url.rsplit(":", 1)[1])
        streams = [await _open_stream(port), await _open_stream(port)]
        try:
            r = await api.client.get("/api/events", params={"topics": ">"})
            assert r.status_code == 503 and "(api.max_streams: 2)" in r.json()["detail"]
        finally:
            for writer in streams:
                writer.close()


@pytest.mark.parametrize("query", ["limit=1001", "limit=0", "limit=-1",
                                   "limit=99999999999999999999"])
@pytest.mark.parametrize("path", ["/api/activity", "/api/actions", "/api/actions/approvals"])
async def test_list_sizes_are_bounded(tmp_path: Path, path: str, query: str) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        r = await api.client.get(f"{path}?{query}")
        assert r.status_code == 422, r.text


# --- the shared token claiming a named operator ---------------------------------------------

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"


@pytest.mark.parametrize("claimed", ["alice", "Alice", "ALICE", "Bob Smith", "Bob  Smith",
                                     "bob smith"],
                         ids=["exact", "capitalised", "upper-case", "two-words",
                              "double-space", "lower-case-two-words"])
async def test_the_shared_token_cannot_claim_a_named_operator(tmp_path: Path, claimed: str
                                                              ) -> None:
    settings = api_settings(tmp_path, api={"operators": {"alice": ALICE, "Bob Smith": BOB}})
    async with serve_api(settings) as api:
        pending = await _pending(api)
        r = await api.client.post(f"/api/actions/{pending}/approve", headers={
            **api.auth(OPERATOR), "X-Watchkeeper-User": claimed})
        assert r.status_code == 403, r.text
        owner = "alice" if "alice" in claimed.lower() else "Bob Smith"
        assert f"with {owner}'s own token" in r.json()["detail"]
        assert [a.id for a in api.runtime.audit.pending()] == [pending]  # nothing changed


async def test_with_named_operators_the_shared_tokens_names_are_marked(tmp_path: Path) -> None:
    settings = api_settings(tmp_path, api={"operators": {"alice": ALICE}})
    async with serve_api(settings) as api:
        first = await _pending(api)
        r = await api.client.post(f"/api/actions/{first}/approve", headers={
            **api.auth(OPERATOR), "X-Watchkeeper-User": "carol"})
        assert r.status_code == 200, r.text
        assert api.runtime.audit.approval(first).by == "carol (shared token)"  # type: ignore[union-attr]
        await remediator_idle(api)
        second = await _pending(api)
        r = await api.client.post(f"/api/actions/{second}/reject", headers=api.auth(OPERATOR))
        assert r.status_code == 200 and r.json()["by"] == "api (shared token)"
        await remediator_idle(api)
        third = await _pending(api)
        r = await api.client.post(f"/api/actions/{third}/approve", headers=api.auth(ALICE))
        assert api.runtime.audit.approval(third).by == "alice"  # type: ignore[union-attr]


async def test_without_named_operators_the_shared_token_names_as_before(tmp_path: Path
                                                                        ) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        first = await _pending(api)
        r = await api.client.post(f"/api/actions/{first}/approve", headers={
            **api.auth(OPERATOR), "X-Watchkeeper-User": "alice"})
        assert r.status_code == 200
        assert api.runtime.audit.approval(first).by == "alice"  # type: ignore[union-attr]


async def test_a_history_too_long_for_one_answer_says_which_step_to_ask_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The bound (20,000 points) lowered to 5 so that a few fast ticks pass it.
    from watchkeeper.api.routes import metrics

    monkeypatch.setattr(metrics, "MAX_HISTORY_POINTS", 5)
    async with serve_api(api_settings(tmp_path)) as api:
        from datetime import datetime, timedelta, timezone

        # Raw samples: a start within what this run has kept raw (no step asked for).
        since = datetime.now(timezone.utc) - timedelta(seconds=1)
        params = {"metric": "memory.percent", "start": since.isoformat()}

        async def enough() -> bool:
            r = await api.client.get("/api/metrics/history", params=params)
            return r.status_code == 422

        await until(enough)
        r = await api.client.get("/api/metrics/history", params=params)
        detail = r.json()["detail"]
        assert "more than 5 per answer" in detail
        step = int(re.search(r"step=(\d+)", detail).group(1))  # type: ignore[union-attr]
        r = await api.client.get("/api/metrics/history", params={**params, "step": step})
        assert r.status_code == 200 and 1 <= len(r.json()["points"]) <= 5
