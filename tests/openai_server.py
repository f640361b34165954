"""A real HTTP server speaking the OpenAI chat-completions API, with scripted replies.

Tests start it on a free 127.0.0.1 port and point ``llm.base_url`` at ``server.base_url``.
Each POST to ``/v1/chat/completions`` takes the next scripted reply (or ``default`` once
the script is used up): a JSON answer, tool calls, raw text, an HTTP error with headers
(429 + Retry-After), or a hang that lasts N seconds or until the server stops. Every byte
a client sends (request line, headers and body) is recorded, so a test can prove that a
secret never reached the "LLM".

It runs in its own threads, not on the test's event loop, so a hung reply never blocks the
code under test and an agent-level test can measure its cadence independently.

Usage::

    with OpenAIServer([tool_calls(("get_process", {"pid": 42})), completion({...})]) as srv:
        settings = make_settings(tmp_path, llm={"base_url": srv.base_url})
        ...
        assert b"hunter2" not in srv.raw_bytes()
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "OpenAIServer",
    "Recorded",
    "Reply",
    "completion",
    "hang",
    "http_error",
    "rate_limited",
    "raw",
    "tool_calls",
    "tool_messages",
]

_ids = itertools.count(1)


@dataclass(frozen=True)
class Recorded:
    """One request as received: raw bytes on the wire plus the parsed pieces."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    raw: bytes
    at: float  # time.monotonic() when the request was fully read

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages of the request."""
        messages: list[dict[str, Any]] = self.json().get("messages", [])
        return messages


@dataclass(frozen=True)
class Reply:
    """What the server does with one request."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    hang_s: float | None = None  # with ``hang``: seconds to block, None = until stop()
    hang: bool = False


ReplyLike = Reply | Callable[[Recorded], Reply]


def _completion_body(message: dict[str, Any], finish: str, usage: tuple[int, int],
                     model: str) -> bytes:
    prompt, completion_tokens = usage
    return json.dumps({
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish,
                     "logprobs": None}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                  "total_tokens": prompt + completion_tokens},
    }).encode()


def completion(content: str | Mapping[str, Any], *, usage: tuple[int, int] = (100, 50),
               model: str = "fake-model") -> Reply:
    """A normal answer; a mapping is sent as its JSON text (what a model in JSON mode says)."""
    text = content if isinstance(content, str) else json.dumps(content)
    message = {"role": "assistant", "content": text}
    return Reply(body=_completion_body(message, "stop", usage, model),
                 headers={"Content-Type": "application/json"})


def tool_calls(*calls: tuple[str, Mapping[str, Any] | str], usage: tuple[int, int] = (100, 20),
               model: str = "fake-model") -> Reply:
    """An answer that calls tools: ``(name, arguments)`` pairs (a str is sent verbatim)."""
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": f"call_{next(_ids)}", "type": "function",
             "function": {"name": name,
                          "arguments": args if isinstance(args, str) else json.dumps(args)}}
            for name, args in calls
        ],
    }
    return Reply(body=_completion_body(message, "tool_calls", usage, model),
                 headers={"Content-Type": "application/json"})


def http_error(status: int, message: str = "scripted error",
               headers: Mapping[str, str] | None = None) -> Reply:
    """An OpenAI-style error body with the given status."""
    body = json.dumps({"error": {"message": message, "type": "server_error", "code": None}})
    return Reply(status=status, body=body.encode(),
                 headers={"Content-Type": "application/json", **(headers or {})})


def rate_limited(retry_after: str | None = "1", *, retry_after_ms: int | None = None) -> Reply:
    """HTTP 429 with ``Retry-After`` (seconds or an HTTP date) and/or ``retry-after-ms``."""
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    return http_error(429, "rate limited", headers)


def raw(body: bytes | str, status: int = 200, content_type: str = "application/json") -> Reply:
    """Exactly these bytes (for bodies that are not valid JSON at the HTTP level)."""
    data = body.encode() if isinstance(body, str) else body
    return Reply(status=status, body=data, headers={"Content-Type": content_type})


def hang(seconds: float | None = None) -> Reply:
    """Read the request, then say nothing for ``seconds`` (None: until the server stops)."""
    return Reply(hang=True, hang_s=seconds)


class _RecordingReader:
    """Wraps the socket's read file and keeps a copy of every byte read from it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.data = bytearray()

    def readline(self, size: int = -1) -> bytes:
        line: bytes = self._inner.readline(size)
        self.data += line
        return line

    def read(self, size: int = -1) -> bytes:
        chunk: bytes = self._inner.read(size)
        self.data += chunk
        return chunk

    def close(self) -> None:
        self._inner.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # A client that opens a connection and never sends must not pin a thread forever.
    timeout = 30

    def setup(self) -> None:
        super().setup()
        self.rfile = _RecordingReader(self.rfile)  # type: ignore[assignment]
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read ``server.requests`` instead."""

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_POST(self) -> None:
        """Record the request and answer with the next scripted reply."""
        self.close_connection = True  # one request per connection keeps shutdown simple
        body = self._read_body()
        reader: _RecordingReader = self.rfile  # type: ignore[assignment]
        rec = Recorded(method="POST", path=self.path, headers=dict(self.headers.items()),
                       body=body, raw=bytes(reader.data), at=time.monotonic())
        owner = self.server.owner
        reply = owner._next(rec) if self.path.rstrip("/").endswith("/chat/completions") \
            else http_error(404, f"no route {self.path}")
        if reply.hang:
            owner._hang(reply.hang_s)
            if owner.stopping:
                return  # drop the connection without a word
        self._send(reply)

    def do_GET(self) -> None:
        """``/v1/models``: some clients probe it; anything else is 404."""
        self.close_connection = True
        reader: _RecordingReader = self.rfile  # type: ignore[assignment]
        self.server.owner._record(Recorded("GET", self.path, dict(self.headers.items()), b"",
                                           bytes(reader.data), time.monotonic()))
        if self.path.rstrip("/").endswith("/models"):
            self._send(Reply(body=json.dumps({"object": "list", "data": [
                {"id": "fake-model", "object": "model", "created": 0, "owned_by": "test"}]}
            ).encode(), headers={"Content-Type": "application/json"}))
        else:
            self._send(http_error(404, f"no route {self.path}"))

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            pass  # the client gave up (timed out) before we answered


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: OpenAIServer


class OpenAIServer:
    """The fixture server; use as a context manager or call start()/stop()."""

    def __init__(self, replies: Iterable[ReplyLike] = (), *,
                 default: ReplyLike | None = None) -> None:
        self._lock = threading.Lock()
        self._script: list[ReplyLike] = list(replies)
        self.default = default
        self.requests: list[Recorded] = []
        #: Requests that found no scripted reply (they got HTTP 500).
        self.unexpected = 0
        self.stopping = False
        self._release = threading.Event()
        self._conns: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ scripting

    def script(self, *replies: ReplyLike) -> None:
        """Append replies to the script."""
        with self._lock:
            self._script.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._script)

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def _next(self, rec: Recorded) -> Reply:
        with self._lock:
            self.requests.append(rec)
            item = self._script.pop(0) if self._script else self.default
            if item is None:
                self.unexpected += 1
        if item is None:
            return http_error(500, "no scripted reply left")
        return item(rec) if callable(item) else item

    def _hang(self, seconds: float | None) -> None:
        self._release.wait(seconds)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    # ------------------------------------------------------------------ observing

    @property
    def chat_requests(self) -> list[Recorded]:
        """The POSTs to /chat/completions, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path.rstrip("/").endswith("/chat/completions")]

    def raw_bytes(self) -> bytes:
        """Every byte received, all requests concatenated."""
        with self._lock:
            return b"".join(r.raw for r in self.requests)

    # ------------------------------------------------------------------ life

    @property
    def port(self) -> int:
        """The bound port (after start())."""
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """What to set as ``llm.base_url``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAIServer:
        """Bind a free loopback port and serve in a background thread."""
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-fixture", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release hung replies, close open connections, and join the threads."""
        if self._httpd is None:
            return
        self.stopping = True
        self._release.set()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.shutdown()
        self._httpd.server_close()  # joins the handler threads (block_on_close)
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tool_messages(rec: Recorded) -> Sequence[dict[str, Any]]:
    """The ``role: tool`` messages of a recorded request."""
    return [m for m in rec.messages if m.get("role") == "tool"]
