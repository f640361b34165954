"""The agents and the API started inside the TUI's process, when no server answers.

They run `watchkeeper serve`'s code (cli/main.py's ``_serve``: the connection guard, the
Host check) in a thread of their own with their own event loop: the agents' work never
slows the UI, and no signal handler is installed outside the main thread (Textual owns the
terminal's). The data dir's instance lock is held as `watchkeeper serve` holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from watchkeeper.config import ConfigError, Settings

#: Seconds the agents get to stop and flush their history on quit.
STOP_TIMEOUT_S = 30.0


class LocalServerError(Exception):
    """The agents could not be started here: why, in one line."""


class LocalServer:
    """Runtime + REST API on the configured loopback address, in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = ""
        self._thread: threading.Thread | None = None
        self._stop: Callable[[], None] | None = None
        self._lock: Any = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None

    def start(self) -> str:
        """Start everything (blocking, call it off the UI loop); the URL it serves."""
        from watchkeeper.api.auth import is_loopback
        from watchkeeper.api.routes.config import load_overrides, overrides_path
        from watchkeeper.cli.client import default_url
        from watchkeeper.cli.main import _listen
        from watchkeeper.instance_lock import InstanceLock, InstanceLockError
        from watchkeeper.logging_setup import setup_logging
        from watchkeeper.remediation.audit import AuditError
        from watchkeeper.runtime import Runtime
        from watchkeeper.store.sqlite import StoreError

        settings = self.settings
        host = settings.api.host if is_loopback(settings.api.host) else "127.0.0.1"
        try:
            self._lock = InstanceLock.acquire(settings.storage.path)
        except InstanceLockError as exc:
            raise LocalServerError(str(exc)) from None
        try:
            # The log file only: the terminal belongs to the UI.
            setup_logging(settings.logging, console=False)
            runtime = Runtime(settings)
            overrides = load_overrides(settings)
            if overrides:
                runtime.update_config(overrides, source=str(overrides_path(settings)))
            sock = _listen(host, settings.api.port)
        except (StoreError, AuditError, ValueError, OSError) as exc:
            self._release()
            raise LocalServerError(str(exc)) from None
        except ConfigError as err:
            self._release()
            raise LocalServerError("; ".join(str(p) for p in err.problems)) from None
        self.url = default_url(settings.model_copy(update={
            "api": settings.api.model_copy(update={"host": host})}))
        self._thread = threading.Thread(target=self._run, args=(runtime, host, sock),
                                        name="watchkeeper-local-server", daemon=True)
        self._thread.start()
        self._ready.wait(STOP_TIMEOUT_S)
        if self._failed is not None:
            self._release()
            raise LocalServerError(f"the agents did not start: {self._failed}")
        return self.url

    def _run(self, runtime: Any, host: str, sock: Any) -> None:
        try:
            asyncio.run(self._main(runtime, host, sock))
        except BaseException as exc:  # reported to the UI, not raised here
            self._failed = exc
            self._ready.set()

    async def _main(self, runtime: Any, host: str, sock: Any) -> None:
        # `serve`'s own code path: the same Host check, connection cap, request timeout and
        # descriptor budget. Its signal handlers (stop, SIGHUP reload) cannot be set outside
        # the main thread and are skipped: quitting the UI stops these agents instead.
        from watchkeeper.cli.main import _serve

        def started(stop: Callable[[], None]) -> None:
            self._stop = stop
            self._ready.set()

        # No config file: it is read again only by the SIGHUP handler, which is not set here.
        await _serve(runtime, host, sock, None, started=started)

    def stop(self) -> None:
        """Stop the API and the agents (they flush their history) and release the lock."""
        stop, thread = self._stop, self._thread
        if stop is not None and thread is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                stop()  # thread-safe: it hands the rest to the server's loop
            thread.join(STOP_TIMEOUT_S)
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
