"""9 Live Monitoring: the event stream as it happens, one line each."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import RichLog

from watchkeeper.cli.tables import event_line
from watchkeeper.cli.tui.views.base import View

#: What is worth a line: what happened, not the routine ticks and heartbeats.
KINDS = frozenset({"alert", "remediation", "agent_error", "agent_restarted", "agent_gave_up",
                   "config_changed", "analyzer_notice", "reset"})
_STYLE = {"agent_error": "red", "agent_gave_up": "bold red", "agent_restarted": "yellow",
          "reset": "yellow"}


class LiveView(View):
    """GET /api/events: every event line as it comes, and the stream's own ups and downs."""

    number = 9
    title = "Live Monitoring"
    short = "Live"

    def compose(self) -> ComposeResult:
        yield self.heading()
        yield RichLog(id="live", max_lines=1000, wrap=True, markup=False)

    def focus_target(self) -> Widget | None:
        return self.query_one("#live", RichLog)

    def note(self, line: str, style: str = "bold") -> None:
        """A line about the stream itself (connected, lost, reconnected)."""
        self._write(Text(f"{self.host.now():%H:%M:%S}  — {line}", style=style))

    def _write(self, text: Text) -> None:
        self.query_one("#live", RichLog).write(text)

    def on_stream(self, event: str, data: Any) -> None:
        if event not in KINDS or not isinstance(data, dict):
            return
        look = self.host.look
        if event == "alert":
            icon = look.icon(str(data.get("state") if data.get("state") != "firing"
                                 else data.get("severity")))
            style = "red" if data.get("severity") == "critical" and \
                data.get("state") == "firing" else ""
        elif event == "remediation":
            icon = look.icon(str(data.get("phase")))
            style = "red" if data.get("outcome") == "failed" else ""
        elif event == "reset":
            icon, style = "", _STYLE["reset"]
        else:
            icon, style = look.icon(event), _STYLE.get(event, "")
        line = event_line(event, data) if event != "reset" else \
            f"the server says: {data.get('reason', '')}; views read again"
        from watchkeeper.cli.tui.look import safe

        self._write(Text(f"{self.host.now():%H:%M:%S}  {icon}{event:<15}  {safe(line)}",
                         style=style))
