"""6 Message Bus: per topic, messages published, delivered and dropped, and their rates;
what the server refused from the bus and the duplicates it stored once."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from watchkeeper.cli.client import ClientError
from watchkeeper.cli.tui.api import unreachable
from watchkeeper.cli.tui.look import rows, safe
from watchkeeper.cli.tui.views.base import View, refill, table


def rate(before: Any, after: Any, seconds: float) -> float | None:
    """Messages per second between two readings of a counter (None when unknown or when
    the counter went back, as after a server restart)."""
    if not isinstance(before, int) or not isinstance(after, int) or seconds <= 0 \
            or after < before:
        return None
    return (after - before) / seconds


class BusView(View):
    """GET /api/bus, read each refresh: rates from successive counters; GET /api/hosts for
    the bus's refusals and duplicates (a fleet central's, over NATS; zero in one process)."""

    number = 6
    title = "Message Bus"
    short = "Bus"
    central_scope = "this central's bus, which every host publishes to"

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self._last: tuple[float, dict[str, dict[str, Any]]] | None = None

    def compose(self) -> ComposeResult:
        yield from self.top()
        yield table("TOPIC", "PUBLISHED", "PUB/S", "DELIVERED", "DELIV/S", "DROPPED",
                    "DROPS/S", "QUEUED", id="bus")
        yield Static("", markup=False, id="bus-wire")
        yield Static("rates: the change between two readings, a refresh apart",
                     markup=False, id="bus-note")

    async def load(self) -> None:
        data = await self.host.api.get("/api/bus")
        now = self.host.monotonic()
        topics = {safe(t.get("topic"), 200): t for t in rows(data, "topics")}
        look = self.host.look
        last = self._last

        def per_s(name: str, key: str) -> Any:
            if last is None or name not in last[1]:
                return None
            found = rate(last[1][name].get(key), topics[name].get(key), now - last[0])
            return None if found is None else f"{found:.1f}"

        listing: list[tuple[str, list[Any]]] = []
        for name, t in sorted(topics.items()):
            dropped = look.cell(t.get("dropped"))
            if isinstance(t.get("dropped"), int) and t["dropped"] > 0:
                dropped.stylize("bold red")
            listing.append((name, [
                look.cell(name), look.cell(t.get("published")),
                look.cell(per_s(name, "published")), look.cell(t.get("delivered")),
                look.cell(per_s(name, "delivered")), dropped,
                look.cell(per_s(name, "dropped")), look.cell(t.get("queue_depth"))]))
        refill(self.query_one("#bus", DataTable), listing)
        self._last = (now, topics)
        await self._wire()

    async def _wire(self) -> None:
        """The refusals by reason and the duplicate snapshots, under the table."""
        shown = self.query_one("#bus-wire", Static)
        try:
            data = await self.host.api.get("/api/hosts")
        except ClientError as exc:
            if unreachable(exc):  # the app says so in its top line
                raise
            shown.update("refused from the bus: not known to this server "
                         f"({safe(exc, 120)})")
            return
        found = data.get("rejected") if isinstance(data, dict) else None
        rejected = {safe(k, 60): v for k, v in found.items() if isinstance(v, int)} \
            if isinstance(found, dict) else {}
        dupes = data.get("duplicate_snapshots") if isinstance(data, dict) else None
        refused = ", ".join(f"{reason} {count}" for reason, count in sorted(rejected.items())
                            if count) or "none"
        shown.update(f"refused from the bus since the server started: {refused} · "
                     f"duplicate snapshots stored once: {safe(dupes, 20)}")
        shown.set_class(refused != "none", "bad")
