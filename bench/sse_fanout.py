"""bench/sse_fanout: what open live streams cost the server, and how fast ticks reach them.

Starts the real product (`python -m watchkeeper -c <tmp yaml> serve --port 0`, all agents,
sensor every --interval s, remediation in dry-run, no LLM), then runs phases of --seconds
each in the same server process: with 0 open streams, then with each count in --streams.
The streams are GET /api/events (the dashboard's own request: snapshots=summary), opened by
a reader process that is not the server's. For each phase:

* the server's CPU (user + system, of one core) and its RSS at the end of the phase;
* per stream, how many sensor ticks arrived, and the delivery lag of each: the time it was
  read by the client minus the time the reading started (the snapshot's ``at``; both clocks
  are this host's wall clock), so it includes the reading itself (its ``collect_ms``).

Ratios are against the phase with no stream, in the same run. Traffic goes to 127.0.0.1
only; everything it starts it stops, and its temp dir is removed.

    python bench/sse_fanout.py [--seconds 20] [--streams 1,10,50] [--interval 1.0]

Prints a Markdown table ready for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from api_load import HOST, pct, start_serve, stop_serve, wait_ready
from overhead import cpu_seconds

# ------------------------------------------------------------------ reader process

async def _stream(port: int, stop_at: float, lags: list[float], ready: list[int]) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET /api/events?snapshots=summary HTTP/1.1\r\nHost: {HOST}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    event = ""
    try:
        while (left := stop_at - time.time()) > 0:
            try:
                line = await asyncio.wait_for(reader.readline(), left)
            except asyncio.TimeoutError:
                break
            if not line:
                break
            text = line.decode(errors="replace").rstrip("\r\n")
            if text.startswith("event: "):
                event = text[7:]
                if event == "ready":
                    ready.append(1)
            elif text.startswith("data: ") and event == "metrics":
                # A chunked body: the data line is whole, the chunk-size lines are skipped.
                at = datetime.fromisoformat(json.loads(text[6:])["at"]).timestamp()
                lags.append(time.time() - at)
    finally:
        writer.close()


def reader_process(port: int, n: int, start_at: float, stop_at: float) -> dict[str, Any]:
    """Open ``n`` streams at ``start_at``, read them until ``stop_at``; lags per stream."""
    async def run() -> dict[str, Any]:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        lags: list[list[float]] = [[] for _ in range(n)]
        ready: list[int] = []
        await asyncio.gather(*(_stream(port, stop_at, lags[i], ready) for i in range(n)))
        return {"lags": lags, "ready": len(ready)}
    return asyncio.run(run())


# ------------------------------------------------------------------ orchestration

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    ap.add_argument("--streams", default="1,10,50", help="stream counts, one phase each")
    ap.add_argument("--interval", type=float, default=1.0, help="sensor check interval (s)")
    args = ap.parse_args()
    counts = [int(c) for c in args.streams.split(",") if c.strip()]

    tmp = Path(tempfile.mkdtemp(prefix="wk-ssefan-"))
    stderr_path = tmp / "serve.stderr"
    server: subprocess.Popen[bytes] | None = None
    rows: list[dict[str, Any]] = []
    try:
        server = start_serve(tmp, args.interval)
        port = wait_ready(server, stderr_path)
        handle = psutil.Process(server.pid)
        time.sleep(3 * args.interval)
        ctx = mp.get_context("spawn")
        with ctx.Pool(1) as pool:
            for n in [0, *counts]:
                start_at = time.time() + 2.0  # time to open the streams
                stop_at = start_at + args.seconds
                pending = pool.apply_async(reader_process, (port, n, start_at - 1.0, stop_at))
                time.sleep(max(0.0, start_at - time.time()))
                c0 = cpu_seconds(handle)
                time.sleep(max(0.0, stop_at - time.time()))
                cpu = 100 * (cpu_seconds(handle) - c0) / args.seconds
                rss = handle.memory_info().rss / 2**20
                got = pending.get(timeout=args.seconds + 60)
                per_stream = [len(lags) for lags in got["lags"]]
                lags = sorted(lag for ls in got["lags"] for lag in ls)
                rows.append({"streams": n, "ready": got["ready"], "cpu": cpu, "rss": rss,
                             "ticks_min": min(per_stream, default=0),
                             "ticks_max": max(per_stream, default=0),
                             "p50": pct(lags, 50) if lags else float("nan"),
                             "p99": pct(lags, 99) if lags else float("nan"),
                             "max": max(lags, default=float("nan")),
                             "mean": statistics.fmean(lags) if lags else float("nan")})
                time.sleep(1.0)  # the streams of this phase are closed before the next
        stop_serve(server)
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    base = rows[0]
    print(f"host: {os.cpu_count()} cores, Python {platform.python_version()}; server and "
          f"reader on the same host; sensor interval {args.interval:g} s; {args.seconds:g} s "
          f"per phase; streams are GET /api/events?snapshots=summary\n")
    print("| open streams | ticks per stream | lag p50 ms | lag p99 ms | lag max ms "
          "| server CPU % | CPU vs none | RSS MB | RSS vs none |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        ticks = "–" if not r["streams"] else (
            f"{r['ticks_min']}" if r["ticks_min"] == r["ticks_max"]
            else f"{r['ticks_min']}–{r['ticks_max']}")
        lag = ("–", "–", "–") if not r["streams"] else tuple(
            f"{1000 * r[k]:.1f}" for k in ("p50", "p99", "max"))
        print(f"| {r['streams']} | {ticks} | {lag[0]} | {lag[1]} | {lag[2]} | {r['cpu']:.2f} | "
              f"{r['cpu'] / base['cpu']:.2f}x | {r['rss']:.1f} | {r['rss'] / base['rss']:.2f}x |")
    short = [r for r in rows if r["streams"] and r["ready"] < r["streams"]]
    if short:
        print(f"\nWARNING: not every stream opened: {short}")


if __name__ == "__main__":
    main()
