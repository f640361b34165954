"""Compact terminal tables for the scriptable read commands (rich; NO_COLOR honoured).

Every value from the server is shown as plain text (never rich markup) and through
``printable``: a process name or a service's output cannot drive the operator's terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from watchkeeper.safetext import printable

_STYLE = {"ok": "green", "warning": "yellow", "degraded": "yellow", "critical": "bold red",
          "running": "green", "firing": "red", "acknowledged": "yellow", "resolved": "green",
          "down": "red", "failing": "bold red", "crash_looping": "bold red", "failed": "red",
          "unhealthy": "red", "pending": "yellow", "approved": "green", "rejected": "red",
          "retrying": "yellow", "unknown": "yellow"}


PIPED_WIDTH = 1000  # wider than any row: a cell is at most 200 characters


def _cell(value: Any, width: int = 200) -> Text:
    """One value as safe plain text, styled when it names a state."""
    if value is None or value == "":
        return Text("-", style="dim")
    if isinstance(value, float):
        value = f"{value:.4g}"
    shown = printable(str(value), width)
    return Text(shown, style=_STYLE.get(shown, ""))


def _ago(stamp: Any, now: datetime) -> str:
    """An ISO time as '3m ago' (or as it was, if it does not parse)."""
    if not isinstance(stamp, str):
        return "-"
    try:
        at = datetime.fromisoformat(stamp)
    except ValueError:
        return printable(stamp, 40)
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return f"{duration((now - at).total_seconds())} ago"


def duration(seconds: Any) -> str:
    """Seconds as 45s, 12m, 3h05m, 2d04h."""
    if not isinstance(seconds, (int, float)):
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _table(*columns: str, title: str | None = None) -> Table:
    """A table whose last column (the free text) folds; the short ones never wrap."""
    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left",
                  header_style="bold", pad_edge=False)
    for i, name in enumerate(columns):
        last = i == len(columns) - 1
        table.add_column(name, no_wrap=not last, overflow="fold" if last else "ellipsis",
                         min_width=20 if last else None)
    return table


def console_width(is_terminal: bool, environ: Mapping[str, str]) -> int | None:
    """The width tables get: the terminal's; piped, $COLUMNS or whole lines (for grep)."""
    if is_terminal or environ.get("COLUMNS", "").isdigit():
        return None  # rich asks the terminal, or reads $COLUMNS
    return PIPED_WIDTH


def _rows(data: Any, key: str) -> list[dict[str, Any]]:
    rows = data.get(key) if isinstance(data, dict) else None
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _many_hosts(data: Any, rows: list[dict[str, Any]]) -> bool:
    """Whether rows come from several hosts (a fleet's central): then each says whose."""
    return len({r.get("host") for r in rows}) > 1 or bool(_rows(data, "unreachable"))


def _unreachable(console: Console, data: Any) -> None:
    """A central's hosts that did not answer: named, never left out silently."""
    for p in _rows(data, "unreachable"):
        console.print(Text(f"not listed, {printable(str(p.get('host')), 253)} "
                           f"({printable(str(p.get('status')), 8)}): "
                           f"{printable(str(p.get('detail', '')), 300)}", style="bold red"))


def status(console: Console, data: dict[str, Any], _now: datetime) -> None:
    """`watchkeeper status`: the overall status, why, and the counts behind it."""
    alerts = data.get("alerts") or {}
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("status", _cell(data.get("status")))
    for reason in data.get("reasons") or []:
        table.add_row("", _cell(reason))
    table.add_row("alerts", Text(
        f"{alerts.get('critical', 0)} critical, {alerts.get('warning', 0)} warning "
        f"({alerts.get('acknowledged', 0)} acknowledged), {alerts.get('silenced', 0)} silenced"))
    table.add_row("agents", Text(f"{data.get('agents_running')}/{data.get('agents_total')} "
                                 "running"))
    table.add_row("host", _cell(data.get("host")))
    table.add_row("os", _cell(data.get("os")))
    table.add_row("version", _cell(data.get("version")))
    table.add_row("uptime", Text(f"{duration(data.get('uptime_s'))} (host "
                                 f"{duration(data.get('host_uptime_s'))})"))
    console.print(table)


def agents(console: Console, data: dict[str, Any], now: datetime) -> None:
    """`watchkeeper agents`: each agent's state and health counters."""
    table = _table("AGENT", "STATE", "CHECKS", "ERRORS", "RESTARTS", "LAST OK", "LAST ERROR")
    for a in _rows(data, "agents"):
        table.add_row(_cell(a.get("name")), _cell(a.get("state")), _cell(a.get("checks")),
                      _cell(a.get("error_count")), _cell(a.get("restarts")),
                      Text(_ago(a.get("last_success"), now)), _cell(a.get("last_error"), 80))
    console.print(table)


def notify(console: Console, data: dict[str, Any], now: datetime) -> None:
    """`watchkeeper notify status`: each route's delivery, failing ones with their error."""
    rows = _rows(data, "routes")
    if not rows:
        console.print("no notification routes configured (notify.routes in the config file)")
    else:
        table = _table("ROUTE", "KIND", "STATE", "WAITING", "OLDEST", "SENT", "FAILED",
                       "DROPPED", "LAST OK", "FAILING SINCE", "NEXT TRY")
        for r in rows:
            waiting = r.get("waiting")
            if waiting is None and r.get("alerts") is not None:
                waiting = f"{r.get('alerts')} alerts"  # an Alertmanager route's current set
            table.add_row(_cell(r.get("name"), 64), _cell(r.get("kind"), 32),
                          _cell(r.get("state")), _cell(waiting),
                          Text(duration(r.get("oldest_waiting_s"))),
                          _cell(r.get("sent_total")), _cell(r.get("failed_total")),
                          _cell(r.get("dropped_total")), Text(_ago(r.get("last_success_at"),
                                                                   now)),
                          Text(_ago(r.get("failing_since"), now)),
                          Text(_when(r.get("next_retry_at"))))
        console.print(table)
        for r in rows:
            if r.get("last_error") and r.get("state") != "ok":
                console.print(Text(f"{printable(str(r.get('name')), 64)}: "
                                   f"{printable(str(r.get('last_error')), 300)}",
                                   style=_STYLE.get(str(r.get("state")), "")))
    for line in data.get("unavailable") or []:
        console.print(Text(f"not known: {printable(str(line), 300)}", style="bold red"))


def alerts(console: Console, data: dict[str, Any], now: datetime) -> None:
    """`watchkeeper alerts`: open alerts, worst first as the server orders them."""
    rows = _rows(data, "alerts")
    if not rows:
        console.print("no open alerts")
        return
    hosts = _many_hosts(data, rows)
    table = _table(*(["HOST"] if hosts else []), "SEVERITY", "STATE", "RULE", "VALUE",
                   "SINCE", "SUMMARY", "FINGERPRINT")
    for a in rows:
        state = a.get("state")
        if a.get("silenced"):
            state = f"{state}, silenced"
        table.add_row(*([_cell(a.get("host"), 64)] if hosts else []),
                      _cell(a.get("severity")), _cell(state), _cell(a.get("rule")),
                      _cell(a.get("value")), Text(_ago(a.get("since"), now)),
                      _cell(a.get("summary"), 120), _cell(a.get("fingerprint")))
    console.print(table)


def services(console: Console, data: dict[str, Any], now: datetime) -> None:
    """`watchkeeper services`: declared services, their condition and the last action."""
    rows = _rows(data, "services")
    if not rows:
        console.print("no services declared (services: in the configuration)")
        _unreachable(console, data)
        return
    hosts = _many_hosts(data, rows)
    table = _table(*(["HOST"] if hosts else []), "SERVICE", "MANAGER", "CONDITION", "STATE",
                   "PID", "UP", "RESTARTS", "LAST ACTION", "DETAIL")
    for s in rows:
        last = s.get("last_action")
        if last:
            last = f"{last} {s.get('last_outcome') or ''} {_ago(s.get('last_action_at'), now)}"
        table.add_row(*([_cell(s.get("host"), 64)] if hosts else []),
                      _cell(s.get("name")), _cell(s.get("manager")), _cell(s.get("condition")),
                      _cell(s.get("state")), _cell(s.get("pid")),
                      Text(duration(s.get("uptime_s"))), _cell(s.get("restarts")),
                      _cell(last), _cell(s.get("refused") or s.get("detail"), 80))
    console.print(table)
    _unreachable(console, data)


def actions(console: Console, data: dict[str, Any], now: datetime) -> None:
    """`watchkeeper actions`: approvals waiting, recent audit entries, the chain's state."""
    pending = _rows(data, "pending")
    _unreachable(console, data)
    if pending:
        hosts = _many_hosts(data, pending)
        table = _table(*(["HOST"] if hosts else []), "APPROVAL", "ACTION", "PARAMS",
                       "REQUESTED", "WHY", title="waiting for approval (watchkeeper approve "
                       "ID / reject ID" + (", with --host HOST)" if hosts else ")"))
        for p in pending:
            decision = p.get("decision") or {}
            request = decision.get("request") or {}
            params = request.get("params") or {}
            table.add_row(*([_cell(p.get("host"), 64)] if hosts else []),
                          _cell(p.get("id")), _cell(request.get("action")),
                          _cell(" ".join(f"{k}={v}" for k, v in params.items()), 60),
                          Text(_ago(p.get("requested_at"), now)), _cell(decision.get("why"), 80))
        console.print(table)
    entries = _rows(data, "entries")
    if entries:
        table = _table("ID", "WHEN", "KIND", "ACTION", "TARGET", "OUTCOME", "BY", "MESSAGE")
        for e in entries:
            table.add_row(_cell(e.get("id")), Text(_ago(e.get("at"), now)), _cell(e.get("kind")),
                          _cell(e.get("action")), _cell(e.get("target")),
                          _cell(e.get("outcome") or e.get("verdict")), _cell(e.get("actor")),
                          _cell(e.get("message"), 80))
        console.print(table)
    else:
        console.print("no remediation actions recorded yet")
    chain = data.get("audit_chain") or {}
    if chain.get("ok"):
        console.print(f"audit chain ok ({chain.get('checked')} records checked)")
    else:
        broken = chain.get("broken_at") or {}
        console.print(Text(f"audit chain BROKEN at record #{broken.get('id')}: "
                           f"{printable(str(broken.get('message', '')), 200)} (run "
                           "`watchkeeper audit verify`)", style="bold red"))


def _when(stamp: Any) -> str:
    """An ISO time as 2026-12-01 08:00:05 UTC (or as it was, if it does not parse)."""
    if not isinstance(stamp, str):
        return "-"
    try:
        at = datetime.fromisoformat(stamp)
    except ValueError:
        return printable(stamp, 40)
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _span(seconds: Any) -> str:
    """Like duration(), with a tenth of a second below a minute (detection is fast)."""
    if isinstance(seconds, (int, float)) and 0 <= seconds < 60:
        return f"{seconds:.1f}s"
    return duration(seconds)


def _stats(name: str, s: Any) -> str:
    if not isinstance(s, dict) or not s.get("count"):
        return f"{name}: no incident with one yet"
    return (f"{name}: mean {_span(s.get('mean_s'))}, p50 {_span(s.get('p50_s'))}, "
            f"p90 {_span(s.get('p90_s'))} over {s.get('count')} incident(s)")


def _host_gaps(h: dict[str, Any]) -> str:
    """A host's time not watched, by what it was: down across reboots, unwatched, unknown."""
    parts = []
    if h.get("reboots"):
        parts.append(f"{duration(h.get('down_s'))} down ({h.get('reboots')} reboots)")
    if h.get("unwatched_s"):
        parts.append(f"{duration(h.get('unwatched_s'))} not watched")
    if h.get("unknown_s"):
        parts.append(f"{duration(h.get('unknown_s'))} unknown")
    return ", ".join(parts) or "-"


def _percent(p: Any) -> str:
    return f"{p:.2f}%" if isinstance(p, (int, float)) else "-"


def history(console: Console, data: dict[str, Any], _now: datetime) -> None:
    """`watchkeeper history`: incidents, TTD/TTR, uptime and remediation success."""
    console.print(f"health history {_when(data.get('start'))} - {_when(data.get('end'))} UTC"
                  + (" (truncated: ask for a shorter range)" if data.get("truncated") else ""))
    incidents = _rows(data, "incidents")
    if incidents:
        # Below 120 columns the full row leaves the title no room: a shorter time, and the
        # alert count and actions go with the title.
        narrow = console.width < 120
        columns = (("START (UTC)", "STATE", "SEVERITY", "HOST", "TTD", "TTR", "TITLE")
                   if narrow else ("START (UTC)", "STATE", "SEVERITY", "HOST", "TTD", "TTR",
                                   "ALERTS", "ACTIONS", "TITLE"))
        table = _table(*columns, title="incidents")
        for i in incidents:
            acts = [a for a in i.get("actions") or [] if isinstance(a, dict)]
            done = ", ".join(f"{a.get('action')} {'ok' if a.get('success') else 'failed'}"
                             if a.get("success") is not None else str(a.get("action"))
                             for a in acts)
            count = len(i.get("alerts") or [])
            start = _when(i.get("start"))
            row = [Text(start[5:16] if narrow else start), _cell(i.get("state")),
                   _cell(i.get("severity")), _cell(i.get("host")),
                   Text(_span(i.get("ttd_s"))), Text(_span(i.get("ttr_s")))]
            if narrow:
                title = str(i.get("title") or "")[:100]
                extra = f" ({count} alerts)" if count > 1 else ""
                row.append(_cell(title + extra + (f"; done: {done}" if done else ""), 200))
            else:
                row += [_cell(count), _cell(done, 60), _cell(i.get("title"), 100)]
            table.add_row(*row)
        console.print(table)
    else:
        console.print("no incidents in this range")
    console.print(_stats("time to detect", data.get("ttd")))
    console.print(_stats("time to recover", data.get("ttr")))
    uptime = _table("HOST / SERVICE", "UPTIME", "DOWN, NOT WATCHED, UNKNOWN", title="uptime")
    for h in _rows(data, "hosts"):
        uptime.add_row(_cell(h.get("host")), Text(_percent(h.get("uptime_percent"))),
                       Text(_host_gaps(h)))
    for s in _rows(data, "services"):
        uptime.add_row(_cell(f"{s.get('host')}/{s.get('service')}"),
                       Text(_percent(s.get("uptime_percent"))),
                       Text(f"{duration(s.get('down_s'))} down"))
    if uptime.row_count:
        console.print(uptime)
    rates = _table("ACTION / TARGET", "WORKED", "FAILED", "SUCCESS", title="remediation")
    for r in [*_rows(data, "by_action"), *_rows(data, "by_target")]:
        rates.add_row(_cell(r.get("key")), _cell(r.get("successes")), _cell(r.get("failures")),
                      Text(_percent(100 * r["success_rate"]) if isinstance(
                          r.get("success_rate"), (int, float)) else "-"))
    if rates.row_count:
        console.print(rates)
    else:
        console.print("no remediation attempt finished in this range")


def _bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    from watchkeeper.analysis.alerts import fmt_bytes

    return fmt_bytes(n)


def _pct(n: Any) -> str:
    return f"{n:.1f}%" if isinstance(n, (int, float)) else "-"


def metrics(console: Console, data: dict[str, Any], now: datetime) -> None:
    """`watchkeeper metrics`: the latest snapshot: CPU, memory, disks, top processes."""
    cpu = data.get("cpu") or {}
    mem = data.get("memory") or {}
    procs = data.get("processes") or {}
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    loads = " ".join(f"{v:.2f}" if isinstance(v, (int, float)) else "-"
                     for v in (cpu.get("load_1"), cpu.get("load_5"), cpu.get("load_15")))
    grid.add_row("cpu", Text(f"{_pct(cpu.get('percent'))} of {cpu.get('count_logical')} "
                             f"cores, load {loads}"))
    grid.add_row("memory", Text(f"{_pct(mem.get('percent'))} ({_bytes(mem.get('used'))} of "
                                f"{_bytes(mem.get('total'))}), swap "
                                f"{_pct(mem.get('swap_percent'))}"))
    grid.add_row("processes", Text(f"{procs.get('total')} ({procs.get('zombies')} zombies)"))
    grid.add_row("sampled", Text(_ago(data.get("at"), now)))
    console.print(grid)
    disks = _rows(data, "disks")
    if disks:
        table = _table("MOUNT", "USED", "FREE", "SIZE", "INODES", "DEVICE")
        for d in disks:
            full = isinstance(d.get("percent"), (int, float)) and d["percent"] >= 95
            table.add_row(_cell(d.get("mountpoint")),
                          Text(_pct(d.get("percent")), style="bold red" if full else ""),
                          Text(_bytes(d.get("free"))), Text(_bytes(d.get("total"))),
                          Text(_pct(d.get("inodes_percent"))), _cell(d.get("device")))
        console.print(table)
    top = _rows(procs, "top_cpu")
    if top:
        table = _table("PID", "NAME", "USER", "CPU", "RSS", "COMMAND")
        for p in top:
            table.add_row(_cell(p.get("pid")), _cell(p.get("name"), 40), _cell(p.get("user"), 32),
                          Text(_pct(p.get("cpu_percent"))), Text(_bytes(p.get("rss"))),
                          _cell(p.get("cmdline"), 80))
        console.print(table)


def event_line(kind: Any, event: Any) -> str:
    """One stored or live event as a log line's message (host text made printable)."""
    e = event if isinstance(event, dict) else {}

    def f(*keys: str) -> str:
        return " ".join(str(e[k]) for k in keys if e.get(k) not in (None, ""))

    if kind == "alert":
        text = f"{f('severity', 'state')}: {f('summary')}"
    elif kind == "remediation":
        text = f"{f('phase', 'action', 'target', 'outcome')}: {f('message') or f('why')}"
    elif kind in ("agent_error", "agent_restarted", "agent_gave_up"):
        text = f"{f('agent')}: {f('error', 'message', 'reason')}"
    else:
        text = f("message", "summary", "detail") or f("changed")
    return printable(text, 300)


def logs(console: Console, data: dict[str, Any], _now: datetime) -> None:
    """`watchkeeper logs`: the newest activity, oldest first, one line each."""
    rows = _rows(data, "events")
    if not rows:
        console.print("no activity recorded yet")
    for row in rows:
        at = row.get("at")
        shown = printable(str(at)[:19].replace("T", " "), 19) if isinstance(at, str) else "-"
        console.print(Text(f"{shown}  {printable(str(row.get('kind')), 20):<15}  "
                           f"{event_line(row.get('kind'), row.get('event'))}"), soft_wrap=True)
