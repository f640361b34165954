"""A TCP forwarder on a loopback port that a test (or bench/fleet_cut.py) cuts and restores:
one host's network link to its broker, while the broker and everybody else stay up.

``cut()`` closes every connection through it (both ends, at once: what a firewall's REJECT
or a dead link noticed by the kernel looks like to a client) and refuses new ones until
``restore()`` listens again on the same port. ``stall()`` keeps the connections open but
passes nothing on (a link that silently drops packets) until ``flow()``, which delivers
what was held.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CutProxy:
    """127.0.0.1:``port`` forwarded to 127.0.0.1:``target``, cut and restored on demand."""

    def __init__(self, target: int, port: int | None = None) -> None:
        self.target = target
        self.port = port or _free_port()
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Connections refused or closed by cuts (for the report).
        self.cuts = 0
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port,
                                                  reuse_address=True)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._links.add(pair)
        try:
            await asyncio.gather(_pipe(reader, up_writer, self._flowing),
                                 _pipe(up_reader, writer, self._flowing))
        finally:
            self._links.discard(pair)

    async def cut(self) -> None:
        """Every connection closed now, new ones refused until restore()."""
        if self._server is not None:
            self._server.close()
        for down, up in list(self._links):
            down.transport.abort()
            up.transport.abort()
            self.cuts += 1
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    def stall(self) -> None:
        """Pass nothing on, either way, until flow(); the connections stay open."""
        self._flowing.clear()

    def flow(self) -> None:
        """Pass data on again, first what was held."""
        self._flowing.set()

    async def restore(self) -> None:
        """Listen again on the same port."""
        await self.start()

    async def close(self) -> None:
        await self.cut()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                flowing: asyncio.Event) -> None:
    try:
        while data := await reader.read(65536):
            await flowing.wait()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()
