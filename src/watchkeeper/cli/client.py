"""A small client for a running server's REST API, for the scriptable commands.

Every failure becomes :class:`ClientError` with the exit code and the one line to print:
1 the server said no (its ``detail``), 3 nothing answers at the URL. Never a traceback.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from watchkeeper.config import Settings

EXIT_FAILED = 1
EXIT_UNREACHABLE = 3
TOKEN_ENV = "WATCHKEEPER_TOKEN"
#: Longer than the server's default api.command_timeout_s (10 s): a fleet host that does not
#: answer is the server's clear 504 naming the host, not this client's own timeout.
TIMEOUT_S = 15.0
#: Longest server detail repeated on the terminal (a hostile server could send megabytes).
MAX_DETAIL = 500


class ClientError(Exception):
    """A request that did not succeed: what to print (one line) and the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Reply:
    """A successful answer: the body as the server sent it, and parsed."""

    text: str
    data: Any


def default_url(settings: Settings) -> str:
    """The API of `watchkeeper serve` with this configuration (a wildcard bind: loopback)."""
    host = settings.api.host
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{settings.api.port}"


def find_token(given: str | None, settings: Callable[[], Settings]) -> tuple[str | None, str]:
    """The token to send and where it came from: --token, $WATCHKEEPER_TOKEN, the configured
    api.token, else the server's token file in the data dir (None if there is none)."""
    if given:
        return given, "--token"
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env, f"${TOKEN_ENV}"
    loaded = settings()
    if loaded.api.token is not None and loaded.api.token.get_secret_value():
        return loaded.api.token.get_secret_value(), "api.token in the configuration"
    from watchkeeper.api.auth import TOKEN_FILE_NAME

    path = loaded.storage.path / TOKEN_FILE_NAME
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:  # absent or not ours to read: reads may still be open
        return None, f"no --token, no ${TOKEN_ENV}, no api.token, {path} not readable"
    return (text or None), str(path)


def _detail(response: httpx.Response) -> str:
    """The server's ``detail``, on one line (validation problems joined)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail: Any = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        detail = "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:]) or 'body'}: {d.get('msg', '')}"
            if isinstance(d, dict) else str(d) for d in detail)
    text = str(detail) if detail else response.reason_phrase or "error"
    from watchkeeper.safetext import printable

    return printable(text, MAX_DETAIL)


class Client:
    """GET and POST against one server, with one token."""

    def __init__(self, url: str, token: str | None, token_source: str,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.token_source = token_source
        self._token = token
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT_S,
                                  transport=transport, trust_env=False)

    def get(self, path: str, params: dict[str, Any] | None = None) -> Reply:
        """GET ``path``; raises ClientError for anything but a 2xx JSON answer."""
        return self._send("GET", path, params=params)

    def post(self, path: str, body: Any = None, params: dict[str, Any] | None = None
             ) -> Reply:
        """POST ``path`` with a JSON body; raises ClientError as get does."""
        return self._send("POST", path, json=body, params=params)

    def patch(self, path: str, body: Any, params: dict[str, Any] | None = None) -> Reply:
        """PATCH ``path`` with a JSON body; raises ClientError as get does."""
        return self._send("PATCH", path, json=body, params=params)

    def _send(self, method: str, path: str, **kwargs: Any) -> Reply:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ClientError(f"watchkeeper at {self.url} did not answer within "
                              f"{TIMEOUT_S:.0f} s: is it overloaded or stopped?",
                              EXIT_UNREACHABLE) from None
        except (httpx.TransportError, ValueError):  # ValueError: a URL httpx cannot use
            raise ClientError(f"no watchkeeper answers at {self.url}: start it with "
                              "`watchkeeper serve`, or pass --url", EXIT_UNREACHABLE) from None
        self._raise_for(response)
        try:
            return Reply(response.text, response.json())
        except ValueError:
            raise ClientError(f"{self.url} answered {method} {path} with something that is "
                              "not JSON: is --url a watchkeeper server?", EXIT_FAILED) from None

    def _raise_for(self, response: httpx.Response) -> None:
        """ClientError for a 4xx or 5xx answer (its detail), nothing otherwise."""
        if response.status_code == 401:
            said = (f"the server refused the token ({self.token_source})" if self._token
                    else f"the server wants a token and none was found ({self.token_source})")
            raise ClientError(f"{said}: pass --token or set {TOKEN_ENV} to its operator "
                              "token (the api_token file in its data dir)", EXIT_FAILED)
        if response.status_code >= 400:
            raise ClientError(f"{response.status_code}: {_detail(response)}", EXIT_FAILED)

    def follow(self, path: str, params: dict[str, Any],
               on_message: Callable[[str, str, str | None], None],
               on_lost: Callable[[], None], retry_s: float = 1.0,
               stop: threading.Event | None = None) -> None:
        """Read a server-sent event stream for ever (or until ``stop`` is set):
        ``on_message(event, data, id)`` for each message; when the server goes away,
        ``on_lost()`` and reconnect from the last id (Last-Event-ID). Unreachable at the
        start, or a refusal, raises ClientError."""
        import time

        last_id: str | None = None
        connected_once = False
        while stop is None or not stop.is_set():
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            try:
                with self._http.stream("GET", path, params=params, headers=headers,
                                       timeout=httpx.Timeout(TIMEOUT_S, read=None)) as response:
                    if response.status_code >= 400:
                        response.read()
                        self._raise_for(response)
                    connected_once = True
                    data: list[str] = []
                    event, sse_id = "message", None
                    for line in response.iter_lines():
                        if stop is not None and stop.is_set():  # seen at the next line at
                            return                              # worst: a keep-alive
                        if line == "":
                            if data:
                                on_message(event, "\n".join(data), sse_id)
                                if sse_id is not None:
                                    last_id = sse_id
                            event, data, sse_id = "message", [], None
                        elif line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].removeprefix(" "))
                        elif line.startswith("id:"):
                            sse_id = line[3:].strip()
            except (httpx.TransportError, ValueError):
                if not connected_once:
                    raise ClientError(f"no watchkeeper answers at {self.url}: start it with "
                                      "`watchkeeper serve`, or pass --url",
                                      EXIT_UNREACHABLE) from None
            if stop is not None:
                if stop.is_set():
                    return
                on_lost()
                stop.wait(retry_s)
                continue
            on_lost()
            time.sleep(retry_s)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

