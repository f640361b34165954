"""`watchkeeper replay`: the shadow run's report as compact tables (rich) or JSON."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from rich.console import Console
from rich.text import Text

from watchkeeper.cli.tables import _cell, _table, duration
from watchkeeper.replay import AlertDiff, Episode, ReplayReport
from watchkeeper.safetext import printable

_CHANGE_WORDS = {"same": "same", "new": "would fire (new)", "gone": "would not fire",
                 "earlier": "earlier", "later": "later", "open_before": "open before range"}
_CHANGE_STYLE = {"new": "yellow", "gone": "cyan", "earlier": "yellow", "later": "yellow",
                 "same": "green", "open_before": "dim"}
_SEVERITY = {"critical": "bold red", "warning": "yellow", "info": ""}


def _clock(report: ReplayReport) -> Callable[[float | None], str]:
    """Times as HH:MM:SS UTC; with the date when the range spans more than one day."""
    fmt = "%H:%M:%S" if (report.end - report.start).total_seconds() <= 86400 \
        else "%m-%d %H:%M:%S"

    def show(ts: float | None) -> str:
        return "-" if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc).strftime(fmt)
    return show


def _change(d: AlertDiff) -> Text:
    words = _CHANGE_WORDS[d.change]
    delta = d.delta_s
    if d.change in ("earlier", "later") and delta is not None:
        words += f" by {duration(abs(delta))}"
    return Text(words, style=_CHANGE_STYLE[d.change])


def _fired(ep: Episode | None, t: Callable[[float | None], str]) -> Text:
    if ep is None:
        return Text("-", style="dim")
    return Text(f"{t(ep.fired)} {ep.severity}", style=_SEVERITY.get(ep.severity, ""))


def _until(ep: Episode | None, t: Callable[[float | None], str]) -> Text:
    if ep is None:
        return Text("-", style="dim")
    return Text("open" if ep.resolved is None else t(ep.resolved))


def render(console: Console, report: ReplayReport) -> None:
    """Header, alerts side by side, actions side by side, the per-rule summary."""
    t = _clock(report)
    console.print(
        f"Replay of {printable(report.host, 100)}, {report.start:%Y-%m-%d %H:%M:%S} to "
        f"{report.end:%Y-%m-%d %H:%M:%S} UTC (times below in UTC), rules and policy from "
        f"{printable(report.config, 200)}: {report.snapshots} snapshots and "
        f"{report.service_reports} service reports in {report.took_s:.2f} s (history opened "
        f"{report.db_mode}). Shadow mode: nothing was executed.", markup=False,
        highlight=False, soft_wrap=True)
    if not report.snapshots and not report.service_reports:
        console.print("No stored history of this host in that range: nothing would have "
                      "fired and nothing would have been done.", markup=False, soft_wrap=True)
    table = _table("rule", "metric", "dimension", "would fire", "until", "did fire", "until",
                   "difference", title="Alerts")
    for d in report.diffs:
        rule, metric, dim = d.key
        table.add_row(_cell(rule), _cell(metric), _cell(dim, 40), _fired(d.would, t),
                      _until(d.would, t), _fired(d.did, t), _until(d.did, t), _change(d))
    if report.diffs:
        console.print(table)
    else:
        console.print("Alerts: none would have fired and none did.", markup=False)
    acts = _table("time", "action", "target", "answers", "would", "why (refusals)",
                  title="Would have done (decided, not executed)")
    for a in report.would_actions:
        why = a.why.removeprefix("refused: ") if a.verdict == "refused" else None
        acts.add_row(_cell(t(a.at)), _cell(a.action), _cell(a.target, 40),
                     _cell(a.answers, 60), _cell(f"{a.verdict} ({a.check})"), _cell(why, 120))
    if report.would_actions:
        console.print(acts)
    else:
        console.print("Would have done: nothing.", markup=False)
    did = _table("time", "step", "action", "target", "by", "verdict", "outcome",
                 title="Did (stored remediation events)")
    for s in report.did_actions:
        did.add_row(_cell(t(s.at)), _cell(s.phase), _cell(s.action), _cell(s.target, 40),
                    _cell(s.source), _cell(s.verdict), _cell(s.outcome))
    if report.did_actions:
        console.print(did)
    else:
        console.print("Did: no remediation in that range.", markup=False)
    rules = report.rules()
    if rules:
        summary = _table("rule", "would", "did", "same", "new", "would not fire", "earlier",
                         "later", "open before", title="Per rule")
        for rule, row in rules.items():
            summary.add_row(_cell(rule), *(_cell(str(row[k])) for k in (
                "would", "did", "same", "new", "gone", "earlier", "later", "open_before")))
        console.print(summary)
