"""bench/api_load: REST API latency and throughput under load, and the sensor's tick jitter.

Starts the real product (`python -m watchkeeper -c <tmp yaml> serve --port 0`, all agents,
a fast sensor interval, history in a temp dir), waits for GET /api/health to say ready, then:

1. measures single-connection latency of /api/metrics and /api/health (sequential requests);
2. a quiet phase: nothing but the agents, for --seconds;
3. a loaded phase of the same length, same process: --connections keep-alive connections
   spread over --workers load-generator processes (not the server's process), each
   connection alternating GET /api/metrics and GET /api/health as fast as answers come.

The sensor's tick times are read afterwards from the history the product itself wrote (the
``snapshots`` table: each snapshot's ``at`` and ``seq``), so nothing is mocked or patched.
Jitter is |interval between consecutive snapshots - configured interval|; a missed tick is a
schedule slot without a snapshot (the fixed-rate loop skips slots it is late for). The server's
CPU is user + system time of it and its children over each phase. Traffic goes to 127.0.0.1
only; everything it starts it stops, and its temp dir is removed.

    python bench/api_load.py [--seconds 45] [--connections 8] [--workers 2] [--interval 1.0]

Prints Markdown tables ready for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from overhead import cpu_seconds  # the same CPU accounting as bench/overhead.py

ENDPOINTS = ("/api/metrics", "/api/health")
HOST = "127.0.0.1"


# ------------------------------------------------------------------ load generator (workers)

def _connection(port: int, paths: tuple[str, ...], start_at: float, stop_at: float,
                out: dict[str, Any]) -> None:
    """One keep-alive connection: round-robin over ``paths`` until ``stop_at`` (wall clock)."""
    lat: dict[str, list[float]] = {p: [] for p in paths}
    status: dict[str, dict[int, int]] = {p: {} for p in paths}
    failures: dict[str, int] = {p: 0 for p in paths}
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    time.sleep(max(0.0, start_at - time.time()))
    i = 0
    while time.time() < stop_at:
        path = paths[i % len(paths)]
        i += 1
        t0 = time.perf_counter()
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            failures[path] += 1
            conn.close()  # reconnects on the next request
            continue
        lat[path].append(time.perf_counter() - t0)
        status[path][resp.status] = status[path].get(resp.status, 0) + 1
    conn.close()
    out.update(latencies=lat, status=status, failures=failures)


def load_worker(port: int, connections: int, start_at: float, stop_at: float
                ) -> dict[str, Any]:
    """A load-generator process: ``connections`` threads, one keep-alive connection each."""
    outs: list[dict[str, Any]] = [{} for _ in range(connections)]
    threads = []
    for n in range(connections):
        # Shift the starting endpoint so both endpoints are in flight at any moment.
        paths = ENDPOINTS[n % 2:] + ENDPOINTS[:n % 2]
        threads.append(threading.Thread(target=_connection,
                                        args=(port, paths, start_at, stop_at, outs[n])))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    merged: dict[str, Any] = {"latencies": {p: [] for p in ENDPOINTS},
                              "status": {p: {} for p in ENDPOINTS},
                              "failures": dict.fromkeys(ENDPOINTS, 0)}
    for out in outs:
        for p in ENDPOINTS:
            merged["latencies"][p].extend(out["latencies"][p])
            merged["failures"][p] += out["failures"][p]
            for code, n in out["status"][p].items():
                merged["status"][p][code] = merged["status"][p].get(code, 0) + n
    return merged


# ------------------------------------------------------------------ figures

def pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


@dataclass
class EndpointResult:
    path: str
    requests: int
    seconds: float
    latencies: list[float]
    errors: int
    not_ready: int = 0  # 503 from /api/health: an answer, not an error

    def row(self, label: str) -> str:
        lat = sorted(self.latencies)
        ms = [f"{1000 * pct(lat, q):.1f}" for q in (50, 90, 99)]
        return (f"| {label} | `{self.path}` | {self.requests:,} | "
                f"{self.requests / self.seconds:,.0f} | {' | '.join(ms)} | "
                f"{1000 * (lat[-1] if lat else float('nan')):.1f} | {self.errors} |")


def endpoint_results(merged: dict[str, Any], seconds: float) -> list[EndpointResult]:
    results = []
    for path in ENDPOINTS:
        status = {int(k): v for k, v in merged["status"][path].items()}
        ok = sum(n for code, n in status.items() if 200 <= code < 300)
        not_ready = status.get(503, 0) if path == "/api/health" else 0
        errors = sum(status.values()) - ok - not_ready + merged["failures"][path]
        results.append(EndpointResult(path, sum(status.values()), seconds,
                                      merged["latencies"][path], errors, not_ready))
    return results


@dataclass
class Jitter:
    ticks: int
    expected: int
    missed: int
    deviations: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.deviations) if self.deviations else float("nan")

    def q(self, p: float) -> float:
        return pct(sorted(self.deviations), p)


def jitter(rows: list[tuple[float, int]], start: float, end: float, interval: float) -> Jitter:
    """Tick jitter over the snapshots whose ``at`` falls in [start, end)."""
    inside = [(at, seq) for at, seq in rows if start <= at < end]
    deviations, missed = [], 0
    for (a0, s0), (a1, s1) in itertools.pairwise(inside):
        gap = a1 - a0
        deviations.append(abs(gap - interval))
        # Slots skipped by the fixed-rate loop show as a long gap; a tick that ran but
        # was not stored shows as a seq gap. Count whichever says more, not both.
        missed += max(round(gap / interval) - 1, s1 - s0 - 1, 0)
    return Jitter(len(inside), int((end - start) / interval), missed, deviations)


# ------------------------------------------------------------------ the product

def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def start_serve(tmp: Path, interval: float) -> subprocess.Popen[bytes]:
    """`watchkeeper serve` on a free loopback port, everything in ``tmp`` (stderr in
    ``tmp/serve.stderr``, for wait_ready): all agents, sensor every ``interval`` s.
    Nothing leaves the host and nothing on it is changed: no LLM, actions decided and
    logged only."""
    cfg = tmp / "watchkeeper.yaml"
    cfg.write_text(json.dumps({  # JSON is YAML
        "agents": {"check_interval": interval},
        "storage": {"data_dir": str(tmp / "data")},
        "logging": {"dir": str(tmp / "logs")},
        "llm": {"enabled": False},
        "remediation": {"dry_run": True},
    }))
    with (tmp / "serve.stderr").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "watchkeeper", "-c", str(cfg), "serve",
             "--host", HOST, "--port", "0", "--no-console-log"],
            cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)


def stop_serve(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean stop flushes the history), then SIGKILL after 30 s."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def wait_ready(server: subprocess.Popen[bytes], stderr_path: Path, timeout: float = 60.0
               ) -> int:
    """The bound port (from the start-up line), once GET /api/health answers 200."""
    deadline = time.monotonic() + timeout
    port = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"watchkeeper serve exited with {server.returncode}:\n"
                     f"{stderr_path.read_text(errors='replace')}")
        if port is None:
            banner = stderr_path.read_text(errors="replace")
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", banner)
            port = int(found.group(1)) if found else None
        if port is not None:
            try:
                if get(port, "/api/health") == 200:
                    return port
            except OSError:
                pass
        time.sleep(0.1)
    sys.exit(f"watchkeeper serve not ready within {timeout:g}s:\n"
             f"{stderr_path.read_text(errors='replace')}")


def sequential(port: int, path: str, n: int) -> EndpointResult:
    """``n`` requests one after another on one keep-alive connection (no concurrency)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    lat, errors = [], 0
    t_start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        lat.append(time.perf_counter() - t0)
        errors += not 200 <= resp.status < 300
    conn.close()
    return EndpointResult(path, n, time.perf_counter() - t_start, lat, errors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=45.0, help="length of each phase")
    ap.add_argument("--connections", type=int, default=8, help="concurrent connections")
    ap.add_argument("--workers", type=int, default=2, help="load-generator processes")
    ap.add_argument("--interval", type=float, default=1.0, help="sensor check interval (s)")
    ap.add_argument("--sequential", type=int, default=300,
                    help="single-connection requests per endpoint before the phases")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.connections < args.workers:
        sys.exit("--connections must be at least --workers")

    tmp = Path(tempfile.mkdtemp(prefix="wk-apiload-"))
    data = tmp / "data"
    stderr_path = tmp / "serve.stderr"
    server: subprocess.Popen[bytes] | None = None
    try:
        server = start_serve(tmp, args.interval)
        port = wait_ready(server, stderr_path)
        handle = psutil.Process(server.pid)
        time.sleep(3 * args.interval)  # past start-up: first readings, first rates

        single = [sequential(port, p, args.sequential) for p in ENDPOINTS]

        # Quiet phase: the agents alone.
        c0, q_start = cpu_seconds(handle), time.time()
        time.sleep(args.seconds)
        q_end = time.time()
        quiet_cpu = 100 * (cpu_seconds(handle) - c0) / (q_end - q_start)

        # Loaded phase: the workers start together at start_at, stop at stop_at.
        ctx = mp.get_context("spawn")
        per_worker = [args.connections // args.workers + (i < args.connections % args.workers)
                      for i in range(args.workers)]
        with ctx.Pool(args.workers) as pool:
            start_at = time.time() + 2.0  # time for the workers to spawn and import
            stop_at = start_at + args.seconds
            pending = pool.starmap_async(
                load_worker, [(port, n, start_at, stop_at) for n in per_worker])
            time.sleep(max(0.0, start_at - time.time()))
            c0 = cpu_seconds(handle)
            time.sleep(max(0.0, stop_at - time.time()))
            loaded_cpu = 100 * (cpu_seconds(handle) - c0) / args.seconds
            parts = pending.get(timeout=args.seconds + 60)
        merged: dict[str, Any] = {"latencies": {p: [] for p in ENDPOINTS},
                                  "status": {p: {} for p in ENDPOINTS},
                                  "failures": dict.fromkeys(ENDPOINTS, 0)}
        for part in parts:
            for p in ENDPOINTS:
                merged["latencies"][p].extend(part["latencies"][p])
                merged["failures"][p] += part["failures"][p]
                for code, n in part["status"][p].items():
                    merged["status"][p][code] = merged["status"][p].get(code, 0) + n
        loaded = endpoint_results(merged, args.seconds)
        processes = len(psutil.pids())
        time.sleep(2 * args.interval)  # the last ticks of the phase reach the store queue

        # A clean stop flushes the history; then read the tick times the product wrote.
        stop_serve(server)
        with contextlib.closing(sqlite3.connect(f"file:{data / 'watchkeeper.db'}?mode=ro",
                                                uri=True)) as db:
            stored = db.execute("SELECT at, seq, data FROM snapshots ORDER BY at").fetchall()
        rows = [(at, seq) for at, seq, _ in stored]
        collect_ms = [(at, json.loads(zlib.decompress(data)).get("collect_ms"))
                      for at, _, data in stored]
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    j_quiet = jitter(rows, q_start, q_end, args.interval)
    j_loaded = jitter(rows, start_at, stop_at, args.interval)

    print(f"host: {os.cpu_count()} cores, {processes} processes, Python "
          f"{platform.python_version()}; server and load generator on the same host; "
          f"{args.connections} keep-alive connections over {args.workers} load processes, "
          f"each connection alternating {' and '.join(ENDPOINTS)}; sensor interval "
          f"{args.interval:g} s; {args.seconds:g} s per phase\n")
    print("| load | endpoint | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in single:
        print(r.row("1 connection, sequential"))
    for r in loaded:
        print(r.row(f"{args.connections} connections"))
    total = sum(r.requests for r in loaded)
    print(f"\ntotal under load: {total:,} requests, {total / args.seconds:,.0f} req/s; "
          f"server CPU {quiet_cpu:.1f} % quiet, {loaded_cpu:.1f} % loaded (of one core)\n")
    print("| phase | ticks | expected | missed | mean jitter ms | p50 ms | p99 ms | max ms "
          "| server CPU % |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, j, cpu in (("quiet", j_quiet, quiet_cpu), ("loaded", j_loaded, loaded_cpu)):
        print(f"| {name} | {j.ticks} | {j.expected} | {j.missed} | {1000 * j.mean:.1f} | "
              f"{1000 * j.q(50):.1f} | {1000 * j.q(99):.1f} | "
              f"{1000 * max(j.deviations, default=float('nan')):.1f} | {cpu:.1f} |")

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.1f}x" if b > 0 else "n/a"

    print(f"| ratio loaded / quiet | | | | {ratio(j_loaded.mean, j_quiet.mean)} | "
          f"{ratio(j_loaded.q(50), j_quiet.q(50))} | {ratio(j_loaded.q(99), j_quiet.q(99))} | "
          f"{ratio(max(j_loaded.deviations, default=0), max(j_quiet.deviations, default=0))} "
          f"| |")
    print("\nHow long each tick's reading took (the snapshot's collect_ms):\n")
    print("| phase | ticks | p50 ms | p99 ms | max ms |")
    print("| --- | --- | --- | --- | --- |")
    for name, (lo, hi) in (("quiet", (q_start, q_end)), ("loaded", (start_at, stop_at))):
        ms = sorted(float(c) for at, c in collect_ms if lo <= at < hi and c is not None)
        print(f"| {name} | {len(ms)} | {pct(ms, 50):.1f} | {pct(ms, 99):.1f} | "
              f"{max(ms, default=float('nan')):.1f} |")

    if args.json:
        args.json.write_text(json.dumps({
            "single": [{"path": r.path, "p50": pct(sorted(r.latencies), 50)} for r in single],
            "loaded": [{"path": r.path, "requests": r.requests, "errors": r.errors,
                        "not_ready": r.not_ready,
                        **{f"p{q}": pct(sorted(r.latencies), q) for q in (50, 90, 99)}}
                       for r in loaded],
            "jitter": {name: {"ticks": j.ticks, "missed": j.missed, "mean": j.mean,
                              "p50": j.q(50), "p99": j.q(99)}
                       for name, j in (("quiet", j_quiet), ("loaded", j_loaded))},
            "cpu": {"quiet": quiet_cpu, "loaded": loaded_cpu}}, indent=2))


if __name__ == "__main__":
    main()
