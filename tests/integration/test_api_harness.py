"""A real watchkeeper API on a free loopback port: Runtime + create_app + uvicorn + httpx."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from watchkeeper.api import create_app
from watchkeeper.api.routes.events import close_streams
from watchkeeper.config import Settings
from watchkeeper.runtime import Runtime

from ..conftest import make_settings

OPERATOR = "operator-token-0123456789abcdef"
READER = "read-token-fedcba9876543210"
LLM_KEY = "sk-live-LLMSECRET-abcdef123456"
SECRETS = (OPERATOR, READER, LLM_KEY)


def api_settings(tmp_path: Path, **sections: dict[str, object]) -> Settings:
    """Fast ticks, known secrets, notify_only waiting for approval (to have approvals)."""
    base: dict[str, dict[str, object]] = {
        "agents": {"check_interval": 0.2},
        "storage": {"flush_interval": 0.1},
        "api": {"token": OPERATOR, "read_token": READER},
        "llm": {"api_key": LLM_KEY, "enabled": False},
        "remediation": {"startup_grace_s": 0, "actions": {"notify_only": "approve"}},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return make_settings(tmp_path, **base)


@dataclass
class Api:
    url: str
    client: httpx.AsyncClient
    runtime: Runtime
    app: FastAPI

    def auth(self, token: str = OPERATOR) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@asynccontextmanager
async def serve_api(settings: Settings, *, bind_host: str = "127.0.0.1",
                    **runtime_kwargs: Any) -> AsyncIterator[Api]:
    """Start the runtime and a real uvicorn server; ``bind_host`` decides read auth;
    ``runtime_kwargs`` go to Runtime (e.g. an ``audit`` log with an injected clock)."""
    runtime = Runtime(settings, **runtime_kwargs)
    app = create_app(runtime, bind_host=bind_host)
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                           lifespan="off"))
    await runtime.start()
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
            yield Api(url, client, runtime, app)
    finally:
        close_streams(app)
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
        await runtime.stop()


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    """Poll ``check`` until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
