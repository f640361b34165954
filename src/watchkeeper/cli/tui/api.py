"""The TUI's link to a server: REST calls off the UI's event loop, and the live stream.

Both reuse the scriptable commands' :class:`~watchkeeper.cli.client.Client` (its errors,
token handling and SSE reader with Last-Event-ID resume): nothing here speaks HTTP itself.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

from watchkeeper.cli.client import EXIT_UNREACHABLE, Client, ClientError, Reply

#: Finds the token to send: (token, where it came from). Called again when the URL changes
#: (a server started in-process writes its token file only when it starts).
TokenFinder = Callable[[], tuple[str | None, str]]

#: Seconds between two tries to reach the stream while the server is away.
STREAM_RETRY_S = 1.0


class Api:
    """GET/POST/PATCH against one server, awaited without blocking the UI."""

    def __init__(self, url: str, find_token: TokenFinder) -> None:
        self.find_token = find_token
        self.url = url.rstrip("/")
        token, self.token_source = find_token()
        self._client = Client(self.url, token, self.token_source)
        #: Requests the server answered (any status): a view's read that made none says
        #: nothing about whether the server is there.
        self.answered = 0
        # One request at a time: the sync client is shared, and an operator's keypress never
        # needs two answers at once.
        self._lock = asyncio.Lock()

    def connect(self, url: str) -> None:
        """Talk to ``url`` from now on, with the token found for it now."""
        self._client.close()
        self.url = url.rstrip("/")
        token, self.token_source = self.find_token()
        self._client = Client(self.url, token, self.token_source)

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """The JSON answer to GET ``path``; ClientError otherwise."""
        return (await self._call(lambda c: c.get(path, params))).data

    async def post(self, path: str, body: Any = None,
                   params: dict[str, Any] | None = None) -> Any:
        """The JSON answer to POST ``path``; ClientError otherwise."""
        return (await self._call(lambda c: c.post(path, body, params))).data

    async def patch(self, path: str, body: Any,
                    params: dict[str, Any] | None = None) -> Any:
        """The JSON answer to PATCH ``path``; ClientError otherwise."""
        return (await self._call(lambda c: c.patch(path, body, params))).data

    async def _call(self, request: Callable[[Client], Reply]) -> Reply:
        async with self._lock:
            client = self._client
            try:
                reply = await asyncio.to_thread(request, client)
            except ClientError as exc:
                if not unreachable(exc):
                    self.answered += 1
                raise
            self.answered += 1
            return reply

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def unreachable(exc: ClientError) -> bool:
    """Whether ``exc`` means nothing answers (as opposed to the server saying no)."""
    return exc.code == EXIT_UNREACHABLE


class Stream:
    """Follows ``/api/events`` in a daemon thread with the scriptable `logs --follow` reader:
    each message, each loss and each refusal is handed to the UI's loop through ``post``.

    A daemon thread, not a Textual worker: a read blocked on a quiet stream must not hold
    the process when the operator quits (the reader notices ``stop`` at the next keep-alive).
    """

    def __init__(self, api: Api, post: Callable[[Callable[[], None]], None],
                 on_message: Callable[[str, Any], None], on_lost: Callable[[], None],
                 on_refused: Callable[[ClientError], None]) -> None:
        self.api = api
        self._post = post
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_refused = on_refused
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start following (again, from now, after :meth:`stop`)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,),
                                        name="watchkeeper-tui-stream", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following; the thread ends at its next line or retry."""
        self._stop.set()

    def _deliver(self, stop: threading.Event, call: Callable[[], None]) -> None:
        if stop.is_set():
            return
        try:
            self._post(call)
        except RuntimeError:  # the app has ended meanwhile
            stop.set()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            token, source = self.api.find_token()
            client = Client(self.api.url, token, source)

            def message(event: str, data: str, _id: str | None) -> None:
                try:
                    body = json.loads(data)
                except ValueError:
                    return  # not ours to show
                self._deliver(stop, lambda: self._on_message(event, body))

            try:
                client.follow("/api/events", {"snapshots": "summary"}, message,
                              lambda: self._deliver(stop, self._on_lost),
                              retry_s=STREAM_RETRY_S, stop=stop)
            except ClientError as exc:  # unreachable at the start, or refused: try again
                self._deliver(stop, lambda err=exc: self._on_refused(err))  # type: ignore[misc]
                stop.wait(STREAM_RETRY_S if unreachable(exc) else 5 * STREAM_RETRY_S)
            finally:
                client.close()
