"""bench/fleet_cut: one real host agent cut off from its broker for 2 minutes, then back.

A nats-server (bench/bus_nats.py's: JetStream in a temp dir, ``sync_interval: always``), a
central (``watchkeeper serve --fleet``) connected to it directly, and one ``watchkeeper
agent`` with the default settings (5 s ticks) connected through a TCP proxy
(tests/tcp_proxy.py). The cut: the proxy closes the agent's connection and refuses new
ones for ``--cut-s`` (120) seconds while the broker and the central stay up; then it
listens again. Reported: the samples the agent took during the cut and how many reached
the central's history (24/24 expected at 5 s over 2 minutes), none twice on the broker, in
order; the lag from the reconnect until the last of them was stored.

``--gap``: the same outage against a deliberately tiny spool (``bus.spool.max_events``
100, the smallest allowed, and ticks every 0.5 s so that the 2 minutes overflow it): the
samples the spool dropped are one run, and the central stores a gap marker covering
exactly them.

    python bench/fleet_cut.py [--cut-s 120] [--gap] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bus_nats import start_server  # the same broker set-up (bench/ is on sys.path)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.tcp_proxy

from tests.tcp_proxy import CutProxy
from watchkeeper.bus.nats import NatsBus
from watchkeeper.bus.subjects import stream_name
from watchkeeper.config import BusConfig
from watchkeeper.events import MetricSnapshot, SpoolGap, decode

HOST = "cut-1"
PREFIX = "wk"


def env(root: Path, **extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("WATCHKEEPER_")}
    out.update({"WATCHKEEPER_STORAGE__DATA_DIR": str(root / "data"),
                "WATCHKEEPER_LOGGING__DIR": str(root / "logs"),
                "WATCHKEEPER_LLM__ENABLED": "false", **extra})
    return out


def start(root: Path, args: list[str], extra: dict[str, str]) -> subprocess.Popen[bytes]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "stderr.log").open("ab") as err:
        return subprocess.Popen([sys.executable, "-m", "watchkeeper", *args,
                                 "--no-console-log"], cwd=root, env=env(root, **extra),
                                stdout=subprocess.DEVNULL, stderr=err)


def snapshots(history: Path) -> list[tuple[int, float]]:
    if not history.exists():
        return []
    conn = sqlite3.connect(f"file:{history}?mode=ro", uri=True, timeout=10)
    try:
        return [(r[0], r[1]) for r in conn.execute(
            "SELECT seq, at FROM snapshots WHERE host = ? ORDER BY at", (HOST,))]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def gaps(history: Path) -> list[SpoolGap]:
    conn = sqlite3.connect(f"file:{history}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT payload FROM events WHERE kind = 'spool_gap' AND host = ?",
                            (HOST,)).fetchall()
    finally:
        conn.close()
    return [e for e in (decode(r[0]) for r in rows) if isinstance(e, SpoolGap)]


async def central_listens(bus: NatsBus) -> None:
    """Until the central's durable consumers of the metrics stream exist."""
    assert bus._js is not None
    deadline = time.monotonic() + 120
    while True:
        try:
            if len(await bus._js.consumers_info(stream_name(PREFIX, "metrics"))) >= 2:
                return
        except Exception:  # the stream is made by the first client to connect
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the central made no consumers")
        await asyncio.sleep(0.2)


async def wait(check: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="wk-fleet-cut-"))
    broker, url = start_server(root)
    port = int(url.rsplit(":", 1)[1])
    proxy = CutProxy(port)
    await proxy.start()
    procs: list[subprocess.Popen[bytes]] = []
    watcher = await NatsBus.open(BusConfig(backend="nats", url=url, subject_prefix=PREFIX),
                                 client="bench-watcher")
    agent_extra: dict[str, str] = {"WATCHKEEPER_HOST_NAME": HOST}
    interval = 5.0
    if args.gap:
        interval = 0.5
        agent_extra.update({"WATCHKEEPER_AGENTS__CHECK_INTERVAL": str(interval),
                            "WATCHKEEPER_BUS__SPOOL__MAX_EVENTS": "100"})
    history = root / "central" / "data" / "watchkeeper.db"
    begun = datetime.now(timezone.utc) - timedelta(seconds=1)
    try:
        procs.append(start(root / "central", ["serve", "--fleet", "--server", url,
                                              "--port", "0"],
                           {"WATCHKEEPER_HOST_NAME": "central"}))
        await central_listens(watcher)  # what the agent sends from then on is kept for it
        procs.append(start(root / HOST, ["agent", "--server", proxy.url], agent_extra))
        await wait(lambda: len(snapshots(history)) >= 3, "the agent at the central", 120)
        print(f"agent reporting ({len(snapshots(history))} samples); cutting its link for "
              f"{args.cut_s:g} s", flush=True)
        cut_at = time.time()
        await proxy.cut()
        await asyncio.sleep(args.cut_s)
        await proxy.restore()
        back_at = time.time()
        print("link restored", flush=True)
        during = [s for s, at in snapshots(history) if cut_at <= at < back_at]
        assert not during, "samples reached the central through a cut link"

        def in_cut() -> list[int]:
            return [s for s, at in snapshots(history) if cut_at <= at < back_at]

        expected = round(args.cut_s / interval)
        if args.gap:
            await wait(lambda: gaps(history) and any(s > 0 for s, at in snapshots(history)
                                                     if at > back_at + interval), "the gap", 120)
        else:
            await wait(lambda: len(in_cut()) >= expected - 1, "the replay", 120)
        lag = time.time() - back_at
        await asyncio.sleep(max(3 * interval, 15))  # and some live samples after
        stored = snapshots(history)
        seqs = [s for s, _ in stored]
        on_broker = [e.seq for _t, e in await watcher.stored(f"metrics.{HOST}", since=begun,
                                                              limit=100_000)
                     if isinstance(e, MetricSnapshot)]
        twice = len(on_broker) - len(set(on_broker))
        ordered = on_broker == sorted(on_broker)
        missing = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
        taken = in_cut()
        result: dict[str, Any] = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "mode": "gap" if args.gap else "cut", "interval_s": interval,
            "cut_s": args.cut_s, "samples_in_cut_stored": len(taken),
            "samples_in_cut_expected": expected, "missing": len(missing),
            "twice_on_broker": twice, "in_order_on_broker": ordered,
            "catch_up_lag_s": round(lag, 2), "load_average": os.getloadavg(),
        }
        if args.gap:
            marked = gaps(history)
            result["gap_markers"] = [{"dropped": g.dropped, "first_at": g.first_at.isoformat(),
                                      "last_at": g.last_at.isoformat()} for g in marked]
            one_run = missing == list(range(missing[0], missing[0] + len(missing))) \
                if missing else False
            at = dict(stored)
            covered = one_run and at[missing[0] - 1] < min(
                g.first_at for g in marked).timestamp() and max(
                g.last_at for g in marked).timestamp() < at[missing[-1] + 1]
            result.update({"dropped_marked": sum(g.dropped for g in marked),
                           "missing_one_run": one_run, "marker_covers_exactly": covered
                           and len(missing) == sum(g.dropped for g in marked)})
        return result
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        await watcher.close()
        await proxy.close()
        broker.kill()
        broker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cut-s", type=float, default=120.0)
    parser.add_argument("--gap", action="store_true",
                        help="a tiny spool (100 events, 0.5 s ticks): the gap marker")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
