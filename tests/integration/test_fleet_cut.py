"""A host agent cut off from its broker (its link through a proxy closed, new connections
refused; the broker and the central stay up), then reconnected: what it sensed meanwhile
reaches the central, every sample once, in order; past its spool's bound, a gap marker
says what was dropped, never a silent hole. Real processes: nats-server, `watchkeeper serve
--fleet`, two `watchkeeper agent` hosts. bench/fleet_cut.py runs the README's version with
the defaults (5 s ticks, 2 minutes: 24/24 samples).

Settings changed from the defaults, and why: ticks every 0.25 s instead of 5 s (24 samples
in the 6 s cut instead of 2 minutes); web-2 ticks every 0.1 s with the smallest spool
bound (bus.spool.max_events 100 instead of 100,000), so that its outage overflows the
spool within seconds; a subject prefix of the test's own."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from tests.nats_server import NatsServer
from tests.tcp_proxy import CutProxy
from watchkeeper.bus.nats import NatsBus
from watchkeeper.bus.spool import SPOOL_FILE
from watchkeeper.events import MetricSnapshot, SpoolGap

from ..conftest import make_settings
from .test_fleet_durable import Fleet, central_listens, spool_rows, stored_events, until

TICKS = 24


def central_snapshots(history: Path, host: str) -> list[tuple[int, float]]:
    """(seq, time) of the host's snapshots in the central's history, by time."""
    if not history.exists():
        return []
    conn = sqlite3.connect(f"file:{history}?mode=ro", uri=True, timeout=10)
    try:
        return [(r[0], r[1]) for r in conn.execute(
            "SELECT seq, at FROM snapshots WHERE host = ? ORDER BY at", (host,))]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def spool_gap(data_dir: Path) -> int:
    path = data_dir / SPOOL_FILE
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute("SELECT dropped FROM gap").fetchone()
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()
    return 0 if row is None else int(row[0])


async def test_a_cut_agent_replays_every_sample_once_in_order_and_marks_a_gap(
        tmp_path: Path, nats_server: NatsServer) -> None:
    fleet = Fleet(tmp_path, nats_server)
    cfg = make_settings(tmp_path / "watcher", bus={
        "backend": "nats", "url": nats_server.url, "subject_prefix": fleet.prefix}).bus
    bus = await NatsBus.open(cfg, client="watcher")
    link_1, link_2 = CutProxy(nats_server.port), CutProxy(nats_server.port)
    await link_1.start()
    await link_2.start()
    try:
        fleet.start_central()
        await central_listens(bus)
        fleet.start_agent("web-1", url=link_1.url, WATCHKEEPER_AGENTS__CHECK_INTERVAL="0.25")
        fleet.start_agent("web-2", url=link_2.url, WATCHKEEPER_AGENTS__CHECK_INTERVAL="0.1",
                          WATCHKEEPER_BUS__SPOOL__MAX_EVENTS="100")
        await until(lambda: len(central_snapshots(fleet.history, "web-1")) >= 4
                    and len(central_snapshots(fleet.history, "web-2")) >= 4,
                    "both hosts at the central", timeout=60)

        # web-1: cut for 24 ticks. web-2: cut until its spool dropped some.
        cut_at = time.time()
        await link_1.cut()
        await link_2.cut()
        web_2_full = asyncio.create_task(until(
            lambda: spool_gap(tmp_path / "web-2" / "data"), "web-2's spool to overflow",
            timeout=60))
        await asyncio.sleep(TICKS * 0.25 + 0.5)  # the outage itself: 24 ticks at 0.25 s
        await link_1.restore()
        back_at = time.time()
        in_cut = [s for s, at in central_snapshots(fleet.history, "web-1")
                  if cut_at <= at < back_at]
        assert in_cut == [], "web-1 reached the central through a cut link"

        def replayed() -> list[int]:
            return [s for s, at in central_snapshots(fleet.history, "web-1")
                    if cut_at + 0.3 <= at < back_at - 0.3]

        # What web-1 sensed during the cut, by its own history (how many ticks a loaded
        # machine fits into the cut is not the point; that each of them arrives is).
        agent_history = tmp_path / "web-1" / "data" / "watchkeeper.db"

        def taken() -> list[int]:
            return [s for s, at in central_snapshots(agent_history, "web-1")
                    if cut_at + 0.3 <= at < back_at - 0.3]

        await until(lambda: len(taken()) >= TICKS // 3 and replayed() == taken(),
                    "web-1's outage replayed", detail=lambda: (taken(), replayed()))
        caught_up = time.time() - back_at
        await web_2_full
        await link_2.restore()

        # web-1: every sample once, in order, none lost (the whole run: before, in, after).
        await until(lambda: max((s for s, _ in central_snapshots(fleet.history, "web-1")),
                                default=0) > (replayed() or [0])[-1] + 2,
                    "web-1 live again after its replay")
        seqs = [s for s, _ in central_snapshots(fleet.history, "web-1")]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
        on_broker = [e.seq for _t, e in await bus.stored("metrics.web-1", limit=100_000)
                     if isinstance(e, MetricSnapshot)]
        assert on_broker == sorted(set(on_broker)), "twice, or out of order, on the broker"
        assert replayed() == taken()  # every sample of the cut, once, in order
        assert caught_up < 10, caught_up

        # web-2: what its spool dropped is one run of samples, and the central has a gap
        # marker covering exactly it.
        def gaps() -> list[SpoolGap]:
            return [e for e in stored_events(fleet.history, "spool_gap")
                    if isinstance(e, SpoolGap) and e.host == "web-2"]

        def missing() -> list[int]:
            seqs_2 = [s for s, _ in central_snapshots(fleet.history, "web-2")]
            return sorted(set(range(seqs_2[0], seqs_2[-1] + 1)) - set(seqs_2))

        def one_run() -> bool:
            lost = missing()
            return bool(lost) and lost == list(range(lost[0], lost[0] + len(lost)))

        # Sent in full: nothing left in web-2's spool, one run of samples lost, its marker.
        await until(lambda: spool_gap(tmp_path / "web-2" / "data") == 0
                    and spool_rows(tmp_path / "web-2" / "data" / SPOOL_FILE) == 0
                    and one_run() and gaps(), "web-2's spool sent", detail=missing)
        lost = missing()
        stored = central_snapshots(fleet.history, "web-2")
        marked = gaps()
        assert len(lost) == sum(g.dropped for g in marked), (lost, marked)
        at = dict(stored)
        assert at[lost[0] - 1] < min(g.first_at for g in marked).timestamp()
        assert max(g.last_at for g in marked).timestamp() < at[lost[-1] + 1]
    finally:
        fleet.stop()
        await link_1.close()
        await link_2.close()
        await bus.close()
