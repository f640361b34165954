"""How values look: the log's emoji and colours, or plain text (--plain), always safe.

Every value from the server becomes a rich ``Text`` (never markup) through ``printable``:
a process name or a service's output cannot restyle the UI or drive the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from rich.text import Text

from watchkeeper.safetext import printable

#: The emoji the console log uses for the same things (agents/communicator.py).
ICONS = {"ok": "✅", "warning": "⚠️", "critical": "🔥", "degraded": "🛑", "firing": "🔥",
         "acknowledged": "👀", "resolved": "✅", "pending": "✋", "approved": "🔧",
         "rejected": "🚫", "started": "🔧", "finished": "✅", "failed": "❌",
         "escalated": "📣", "notice": "🛑", "reset": "🔓", "expired": "⌛",
         "agent_restarted": "🔁", "agent_gave_up": "🪦", "agent_error": "❌",
         "config_changed": "⚙️", "analyzer_notice": "🧠", "metrics": "📊", "dry_run": "🧪",
         "connected": "🟢", "lost": "🔴", "local": "🏠", "command_refused": "⛔",
         "spool_gap": "❗"}

STYLES = {"ok": "green", "warning": "yellow", "degraded": "yellow", "critical": "bold red",
          "running": "green", "paused": "yellow", "stopped": "red", "firing": "red",
          "acknowledged": "yellow", "resolved": "green", "down": "red", "failing": "bold red",
          "crash_looping": "bold red", "failed": "red", "unhealthy": "red",
          "pending": "yellow", "approved": "green", "rejected": "red"}


@dataclass(frozen=True)
class Look:
    """Emoji or none (plain); colour is Textual's to drop (NO_COLOR, or --plain)."""

    plain: bool = False

    def icon(self, name: str) -> str:
        """The emoji for ``name`` and a space, or nothing (plain, or none for it)."""
        found = ICONS.get(name)
        return "" if self.plain or found is None else f"{found} "

    def cell(self, value: Any, width: int = 200) -> Text:
        """One server value as safe text, coloured when it names a state."""
        if value is None or value == "":
            return Text("-", style="dim")
        if isinstance(value, float):
            value = f"{value:.4g}"
        shown = printable(str(value), width)
        return Text(shown, style=STYLES.get(shown, ""))

    def state(self, value: Any) -> Text:
        """A state with its emoji (e.g. "🔥 critical")."""
        shown = printable(str(value), 40)
        return Text(self.icon(shown) + shown, style=STYLES.get(shown, ""))


def safe(value: Any, width: int = 300) -> str:
    """A server value as one printable line."""
    return printable(str(value), width)


def ago(stamp: Any, now: datetime) -> str:
    """An ISO time as '3m ago'."""
    from watchkeeper.cli.tables import duration

    if not isinstance(stamp, str):
        return "-"
    try:
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return safe(stamp, 40)
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return f"{duration((now - at).total_seconds())} ago"


def rows(data: Any, key: str) -> list[dict[str, Any]]:
    """The list of objects under ``key`` (nothing if the answer has no such list)."""
    found = data.get(key) if isinstance(data, dict) else None
    return [r for r in found if isinstance(r, dict)] if isinstance(found, list) else []
