"""9 Live Monitoring: the event stream as it happens, one line each."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import RichLog

from watchkeeper.cli.tables import event_line
from watchkeeper.cli.tui.look import safe
from watchkeeper.cli.tui.views.base import View

#: What is worth a line: what happened, not the routine ticks and heartbeats (the
#: dashboard's activity feed shows the same kinds).
KINDS = frozenset({"alert", "remediation", "agent_error", "agent_restarted", "agent_gave_up",
                   "config_changed", "analyzer_notice", "command_refused", "spool_gap",
                   "reset"})
_STYLE = {"agent_error": "red", "agent_gave_up": "bold red", "agent_restarted": "yellow",
          "reset": "yellow", "command_refused": "yellow", "spool_gap": "bold red"}


def event_text(event: str, data: dict[str, Any]) -> str | None:
    """The line for one event (None: not worth one), in the words of the dashboard's feed."""
    def f(key: str) -> str:
        return safe(data.get(key, ""), 200)

    if event == "alert":
        labels = data.get("labels")
        change = labels.get("change") if isinstance(labels, dict) else None
        if change == "value":  # the open alert's number moved: views 1 and 4 show it
            return None
        assessment = data.get("assessment")
        if change == "assessed" and isinstance(assessment, dict):
            return (f"{f('severity')} assessed: {safe(assessment.get('summary', ''))} – on: "
                    f"{f('summary')}")
    if event == "command_refused":
        return (f"{f('host')} refused {f('command')} to its {f('agent')} from {f('actor')} "
                f"({f('code')}): {f('message')}")
    if event == "config_changed":
        changed = data.get("changed")
        keys = ", ".join(safe(k, 100) for k in changed) if isinstance(changed, list) else ""
        return f"configuration changed (version {f('version')}): {keys}"
    if event == "spool_gap":
        return (f"gap: {f('host')} could not reach the broker and its spool was full: "
                f"{f('dropped')} event(s) from {f('first_at')} to {f('last_at')} are lost")
    if event == "reset":
        return f"the server says: {f('reason')}; views read again"
    return event_line(event, data)


class LiveView(View):
    """GET /api/events: every event line as it comes, and the stream's own ups and downs."""

    number = 9
    title = "Live Monitoring"
    short = "Live"
    central_scope = "every host's events, as they happen"

    def compose(self) -> ComposeResult:
        yield from self.top()
        yield RichLog(id="live", max_lines=1000, wrap=True, markup=False)

    def focus_target(self) -> Widget | None:
        return self.query_one("#live", RichLog)

    def note(self, line: str, style: str = "bold") -> None:
        """A line about the stream itself (connected, lost, reconnected)."""
        self._write(Text(f"{self.host.now():%H:%M:%S}  — {line}", style=style))

    def _write(self, text: Text) -> None:
        log = self.query_one("#live", RichLog)
        # Wrapped at the log's own width once known: left to itself, RichLog measures a
        # line against the console's width, 80 columns when headless, whatever the window.
        width = log.scrollable_content_region.width
        log.write(text, width=width if width > 0 else None)

    def on_stream(self, event: str, data: Any) -> None:
        if event not in KINDS or not isinstance(data, dict):
            return
        line = event_text(event, data)
        if line is None:
            return
        if self.host.fleet.on and isinstance(data.get("host"), str) \
                and event not in ("command_refused", "spool_gap"):  # these name it already
            line = f"{safe(data['host'], 64)}: {line}"  # every host's events: whose
        look = self.host.look
        if event == "alert":
            icon = look.icon(str(data.get("state") if data.get("state") != "firing"
                                 else data.get("severity")))
            style = "red" if data.get("severity") == "critical" and \
                data.get("state") == "firing" else ""
        elif event == "remediation":
            icon = look.icon(str(data.get("phase")))
            style = "red" if data.get("outcome") == "failed" else ""
        elif event == "reset":  # the stream's own news, not a target's reset
            icon, style = "", _STYLE["reset"]
        else:
            icon, style = look.icon(event), _STYLE.get(event, "")
        self._write(Text(f"{self.host.now():%H:%M:%S}  {icon}{event:<15}  {safe(line)}",
                         style=style))
