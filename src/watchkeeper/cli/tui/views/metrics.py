"""3 System Metrics: live sparklines (CPU, memory, swap, load) and the top processes."""

from __future__ import annotations

from collections import deque
from datetime import timedelta
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import DataTable, Sparkline, Static

from watchkeeper.cli.tui.fleet import Fleet, HostRow
from watchkeeper.cli.tui.look import rows, safe
from watchkeeper.cli.tui.views.base import View, refill, table

#: Metric, label, unit: one sparkline each.
LINES = (("cpu.percent", "CPU", "%"), ("memory.percent", "memory", "%"),
         ("memory.swap_percent", "swap", "%"), ("cpu.load_1", "load 1m", ""))
#: Points kept per sparkline (one per sensor tick).
KEEP = 120
#: History read when the view first loads, in buckets of STEP_S.
HISTORY = timedelta(minutes=10)
STEP_S = 10


def _bytes(n: Any) -> str:
    from watchkeeper.analysis.alerts import fmt_bytes

    return fmt_bytes(n) if isinstance(n, (int, float)) else "-"


class MetricsView(View):
    """GET /api/metrics and /api/metrics/history; then the stream's sensor ticks. On a
    fleet's central: the picked host's (``host=``), else the first host's, as the
    dashboard's charts."""

    number = 3
    title = "System Metrics"
    short = "Metrics"
    follows = "host"
    while_down = "its metrics show again when it reports"
    data_lines = ("metrics-summary",)

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.series: dict[str, deque[float]] = {m: deque(maxlen=KEEP) for m, _, _ in LINES}
        self._history_read = False
        #: Whose series these are (a central's host; "" on a single server); None: nobody's.
        self._for: str | None = None

    def compose(self) -> ComposeResult:
        yield from self.top()
        for metric, label, _unit in LINES:
            with Horizontal(classes="spark-row"):
                yield Static(label, markup=False, classes="spark-label",
                             id=f"label-{metric.replace('.', '-')}")
                yield Sparkline([], summary_function=max, classes="spark",
                                id=f"spark-{metric.replace('.', '-')}")
        yield Static("", id="metrics-summary", markup=False)
        yield Static("top processes by CPU", markup=False, classes="subheading")
        yield table("PID", "NAME", "USER", "CPU", "RSS", "COMMAND", id="top")

    def target(self, fleet: Fleet) -> HostRow | None:
        return fleet.metrics_host()

    def blank(self, fleet: Fleet, why: str) -> None:
        super().blank(fleet, why)
        self._start(None)
        self._draw()

    def _start(self, whose: str | None) -> None:
        """Series for ``whose`` from now on: empty, its history read at the next load."""
        self._for = whose
        for series in self.series.values():
            series.clear()
        self._history_read = False

    async def load(self) -> None:
        api, fleet = self.host.api, self.host.fleet
        shown = self.target(fleet)
        if fleet.on and shown is None:
            self.blank(fleet, "no host has reported to this central yet")
            return
        where = {"host": shown.name} if shown is not None else {}
        if self._for != (shown.name if shown is not None else ""):
            self._start(shown.name if shown is not None else "")
        if not self._history_read:
            start = (self.host.now() - HISTORY).isoformat()
            for metric, _, _ in LINES:
                history = await api.get("/api/metrics/history",
                                        {"metric": metric, "start": start, "step": STEP_S,
                                         **where})
                points = [p.get("avg") for p in rows(history, "points")]
                self.series[metric].extend(float(v) for v in points
                                           if isinstance(v, (int, float)))
            self._history_read = True
        data = await api.get("/api/metrics", where)
        cpu, mem = data.get("cpu") or {}, data.get("memory") or {}
        procs = data.get("processes") or {}
        for metric, key, part in (("cpu.percent", "percent", cpu),
                                  ("memory.percent", "percent", mem),
                                  ("memory.swap_percent", "swap_percent", mem),
                                  ("cpu.load_1", "load_1", cpu)):
            value = part.get(key)
            if isinstance(value, (int, float)) and not self.series[metric]:
                self.series[metric].append(float(value))
        self._draw()
        # On a central, whose numbers these are, as the host itself names them.
        who = f"{safe(data.get('host'), 64)} · " if shown is not None else ""
        self.query_one("#metrics-summary", Static).update(
            f"{who}{safe(cpu.get('count_logical'), 8)} cores · memory {_bytes(mem.get('used'))} of "
            f"{_bytes(mem.get('total'))} · {safe(procs.get('total'), 12)} processes "
            f"({safe(procs.get('zombies'), 12)} zombies)")
        look = self.host.look
        refill(self.query_one("#top", DataTable), [
            (f"{safe(p.get('pid'), 12)}-{i}",
             [look.cell(p.get("pid")), look.cell(p.get("name"), 40), look.cell(p.get("user"), 32),
              look.cell(f"{p['cpu_percent']:.1f}%" if isinstance(p.get("cpu_percent"),
                                                                 (int, float)) else None),
              look.cell(_bytes(p.get("rss"))), look.cell(p.get("cmdline"), 80)])
            for i, p in enumerate(rows(procs, "top_cpu"))])

    def on_stream(self, event: str, data: Any) -> None:
        if event != "metrics" or not isinstance(data, dict) or self._for is None:
            return
        if self._for and data.get("host") != self._for:  # another host of the fleet
            return
        for value in rows(data, "values"):
            metric = value.get("metric")
            if metric in self.series and not value.get("dimension") \
                    and isinstance(value.get("value"), (int, float)):
                self.series[metric].append(float(value["value"]))
        if self.is_mounted:
            self._draw()

    def _draw(self) -> None:
        for metric, label, unit in LINES:
            name = metric.replace(".", "-")
            points = list(self.series[metric])
            self.query_one(f"#spark-{name}", Sparkline).data = points
            now = f"{points[-1]:.1f}{unit}" if points else "-"
            self.query_one(f"#label-{name}", Static).update(f"{label:<8}{now:>7}")
