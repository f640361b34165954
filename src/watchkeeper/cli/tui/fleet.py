"""A fleet's hosts as the TUI sees them (GET /api/hosts), and the host the operator picked.

On a central (``serve --fleet``) the views that the API can narrow to one host (``host=``)
show the picked host, as the dashboard's host picker does; "" is the fleet overview (every
host's alerts and services, the first host's metrics). On a single server nothing changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.text import Text

from watchkeeper.cli.client import ClientError
from watchkeeper.cli.tui.api import Api, unreachable
from watchkeeper.cli.tui.look import Look, ago, rows, safe

#: The longest host name the API takes in ``host=`` (a DNS name); a longer one is no host.
MAX_HOST = 253
#: Seconds between two reads of /api/hosts on a single server (a central's is read with
#: each refresh: its hosts' health moves): enough to notice a restart as a central.
SINGLE_EVERY_S = 30.0
#: Answers that mean the picked host's data cannot be had now (no such host any more, its
#: answer invalid, its agent not answering, or not in time): said in the view, not as stale
#: data.
HOST_TROUBLE = frozenset({404, 502, 503, 504})
#: Worst first, for the overview.
_RANK = {"down": 0, "critical": 1, "warning": 2, "unknown": 3, "ok": 4}


@dataclass(frozen=True)
class HostRow:
    """One host of GET /api/hosts: ``name`` as sent (for ``host=``), the rest as shown."""

    name: str
    health: str
    open_alerts: Any
    last_seen: Any

    @property
    def shown(self) -> str:
        """The name as one printable line."""
        return safe(self.name, 64)

    @property
    def down(self) -> bool:
        """Whether the central says it stopped reporting."""
        return self.health == "down"


def status_of(exc: ClientError) -> int | None:
    """The HTTP status of a refusal (the client's message starts with it), else None."""
    found = re.match(r"(\d{3}): ", str(exc))
    return int(found.group(1)) if found else None


class Fleet:
    """The hosts a central follows, and the one picked (remembered while the UI runs)."""

    def __init__(self) -> None:
        #: True on a fleet's central, False on a single server, None until known.
        self.on: bool | None = None
        self.hosts: list[HostRow] = []
        #: The picked host's name; "" is the fleet overview.
        self.chosen = ""
        self._read_at: float | None = None

    def due(self, now: float) -> bool:
        """Whether /api/hosts is worth reading again before the view on screen."""
        return self.on is not False or self._read_at is None \
            or now - self._read_at >= SINGLE_EVERY_S

    def forget(self) -> None:
        """Read again at the next refresh (the server may have restarted as another one)."""
        self._read_at = None

    async def read(self, api: Api, now: float) -> str | None:
        """Read GET /api/hosts; what the operator should be told when the picked host is no
        longer listed (it goes back to the overview), else None. Unreachable: ClientError."""
        try:
            data = await api.get("/api/hosts")
        except ClientError as exc:
            if unreachable(exc):
                raise
            data = None  # a refusal, or a server without that route: one host
        self._read_at = now
        self.on = isinstance(data, dict) and data.get("fleet") is True
        self.hosts = []
        for h in rows(data, "hosts"):
            name = h.get("host")
            if isinstance(name, str) and 0 < len(name) <= MAX_HOST:
                self.hosts.append(HostRow(name, safe(h.get("health"), 20),
                                          h.get("open_alerts"), h.get("last_seen")))
        if self.chosen and (not self.on or self.row(self.chosen) is None):
            gone, self.chosen = self.chosen, ""
            return f"{safe(gone, 64)} is no longer listed by the server: showing all hosts"
        return None

    def row(self, name: str) -> HostRow | None:
        """The listed host called ``name``."""
        return next((h for h in self.hosts if h.name == name), None)

    def picked(self) -> HostRow | None:
        """The picked host (None: the overview, or a single server)."""
        return self.row(self.chosen) if self.on and self.chosen else None

    def metrics_host(self) -> HostRow | None:
        """Whose metrics view 3 shows on a central: the picked host, else the first (as the
        dashboard's charts do); None on a single server or before any host reports."""
        if not self.on:
            return None
        return self.picked() or (self.hosts[0] if self.hosts else None)

    def where(self) -> dict[str, str]:
        """The ``host=`` query of the views that follow the picked host ({}: none)."""
        picked = self.picked()
        return {"host": picked.name} if picked is not None else {}

    def label(self) -> str:
        """The picked host for the top bar: "all hosts", or its name (and down)."""
        picked = self.picked()
        if picked is None:
            return f"all {hosts_words(len(self.hosts))}"
        return picked.shown + (" (DOWN)" if picked.down else "")

    def ordered(self) -> list[HostRow]:
        """Worst health first, then by name: what needs a look comes first."""
        return sorted(self.hosts, key=lambda h: (_RANK.get(h.health, 3), h.name))


def health_text(look: Look, health: str, width: int = 0) -> Text:
    """A host's health with its emoji (down: the lost-connection one), padded to ``width``."""
    shown = look.state(health)
    if health == "down":
        shown = Text(look.icon("lost") + health, style="bold red")
    shown.pad_right(width - shown.cell_len)
    return shown


def hosts_words(count: int) -> str:
    """'1 host', '3 hosts'."""
    return "1 host" if count == 1 else f"{count} hosts"


def open_alerts(count: Any) -> str:
    """'1 open alert', '3 open alerts' (whatever the server sent, shown safely)."""
    return "1 open alert" if count == 1 else f"{safe(count, 12)} open alerts"


def down_words(row: HostRow, now: datetime) -> str:
    """A down host in plain words: when it was last heard from."""
    seen = f"last heard from {ago(row.last_seen, now)}" if row.last_seen \
        else "never heard from since this server started"
    return f"{row.shown} is DOWN: {seen}"
