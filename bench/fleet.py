"""bench/fleet: one central (`watchkeeper serve --fleet`) following N simulated hosts over a real
NATS JetStream broker, each host reporting every 5 s.

For each N in ``--hosts``: a nats-server (JetStream in a temp dir, ``sync_interval: always``,
the README's configuration) and a central are started; a load generator (this file with
``--generate``, a process of its own) publishes a MetricSnapshot per host per ``--interval``
(50 processes each: 25 in the top-CPU list, 25 in the top-memory list; the hosts' ticks
spread evenly over the interval), exactly as an agent's bus does (the wire codec, one
``Nats-Msg-Id`` per event, each publish acknowledged by the broker). One host in 10 runs
hot (CPU 99 %) for two minutes in every four (each on its own phase), so the central keeps
raising and resolving alerts. The run measures, over ``--seconds`` after a warm-up:

- the central's CPU (user + system, % of one core) and peak RSS (VmHWM), and the broker's CPU;
- lag p50/p99: from a snapshot's time (``at``) to the alert it fired reaching a subscriber
  of the alerts stream (the central stores it in the same step);
- loss: snapshots the generator had acknowledged by the broker against snapshots the central
  stored (read from its SQLite history after the run drains);
- whether the generator kept its schedule (published vs. due).

Everything it starts it stops; temp dirs are removed. The central runs with default
settings but for its data dir, port, subject prefix and the bus (the point).

    python bench/fleet.py [--hosts 100,1000,10000] [--seconds 120] [--warmup 40] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
from bus_nats import start_server  # the same broker set-up (bench/ is on sys.path)

HOT_EVERY = 10  # one host in this many runs hot, each on a phase of its own
HOT_PERIOD_S = 240.0  # hot for the first half of every period
PREFIX = "fleetbench"




def start_central(root: Path, url: str, shards: int = 0) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHKEEPER_")}
    env.update({"WATCHKEEPER_STORAGE__DATA_DIR": str(root / "data"),
                "WATCHKEEPER_LOGGING__DIR": str(root / "logs"),
                "WATCHKEEPER_HOST_NAME": "central",
                "WATCHKEEPER_BUS__SUBJECT_PREFIX": PREFIX})
    proc = subprocess.Popen([sys.executable, "-m", "watchkeeper", "serve", "--fleet",
                             "--server", url, "--port", "0", "--no-console-log",
                             *(["--shards", str(shards)] if shards else [])],
                            cwd=root, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if "dashboard at" not in line:
        proc.kill()
        raise SystemExit(f"the central did not start: {line}{proc.stderr.read()[-2000:]}")
    return proc, line


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def shard_pids(central: int) -> list[int]:
    """The central's analysis shard processes (``--shards``)."""
    return [c.pid for c in psutil.Process(central).children()
            if "analyze" in c.cmdline()]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return psutil.Process(pid).memory_info().rss / 1e6


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --------------------------------------------------------------------------- the generator


def _snapshot(host: str, seq: int, at: datetime, hot: bool) -> Any:
    from watchkeeper.events import (
        CpuStats,
        DiskUsage,
        MemoryStats,
        MetricSnapshot,
        NetIO,
        ProcessInfo,
        ProcessSummary,
    )

    procs = tuple(ProcessInfo(pid=1000 + i, create_time=1.7e9 + i, name=f"worker-{i}",
                              user="www-data", cpu_percent=99.0 if hot and i == 0 else 1.5,
                              rss=50_000_000 + i * 1_000_000, memory_percent=0.6,
                              status="sleeping",
                              cmdline=f"/usr/bin/python3 -m app.worker --id {i} --queue q{i}")
                  for i in range(50))
    gb = 1 << 30
    return MetricSnapshot(
        host=host, seq=seq, at=at, interval_s=5.0,
        cpu=CpuStats(percent=99.0 if hot else 12.5, per_core=(10.0, 15.0), load_1=0.5,
                     load_5=0.5, load_15=0.5, count_logical=2),
        memory=MemoryStats(total=16 * gb, available=8 * gb, used=8 * gb, percent=50.0,
                           swap_total=gb, swap_used=0, swap_percent=0.0),
        disks=(DiskUsage(mountpoint="/", device="/dev/sda1", fstype="ext4", total=100 * gb,
                         used=40 * gb, free=60 * gb, percent=40.0, inodes_percent=5.0),),
        net=(NetIO(interface="eth0", is_up=True, bytes_sent_per_s=1e5, bytes_recv_per_s=2e5,
                   packets_sent_per_s=100, packets_recv_per_s=150, errors_in=0, errors_out=0,
                   drops_in=0, drops_out=0),),
        processes=ProcessSummary(total=300, running=2, zombies=0, threads=600,
                                 top_cpu=procs[:25], top_memory=procs[25:]))


async def generate(url: str, hosts: int, seconds: float, interval: float, out: Path) -> None:
    """Publish every host's snapshots on schedule for ``seconds``; write counts to ``out``."""
    import nats

    from watchkeeper.bus import codec

    nc = await nats.connect(url, max_reconnect_attempts=-1)
    js = nc.jetstream(timeout=30)
    start = time.time()
    names = [f"host-{i:05d}" for i in range(hosts)]
    published = due = late = 0
    inflight: set[asyncio.Task[Any]] = set()
    sem = asyncio.Semaphore(512)
    worst_late = 0.0
    worst_ack = [0.0]

    async def one(host: str, seq: int, at: float, hot: bool) -> None:
        nonlocal published
        async with sem:
            snap = _snapshot(host, seq, datetime.fromtimestamp(at, timezone.utc), hot)
            topic = f"metrics.{host}"
            data = codec.encode(snap, max_bytes=4 << 20)
            await js.publish(f"{PREFIX}.{topic}", data,
                             headers={"Nats-Msg-Id": codec.message_id(topic, data)})
            published += 1
            # Stored by the broker this long after its time (the generator's own backlog).
            worst_ack[0] = max(worst_ack[0], time.time() - at)

    seq = 0
    while time.time() - start < seconds:
        round_start = start + seq * interval
        for i, host in enumerate(names):
            at = round_start + interval * i / hosts
            wait = at - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                worst_late = max(worst_late, -wait)
                late += wait < -interval
            hot = i % HOT_EVERY == 0 and ((at + 37.0 * i) % HOT_PERIOD_S) < HOT_PERIOD_S / 2
            due += 1
            task = asyncio.create_task(one(host, seq, at, hot))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        seq += 1
    await asyncio.gather(*inflight, return_exceptions=True)
    await nc.drain()
    out.write_text(json.dumps({"published": published, "due": due, "late": late,
                               "worst_late_s": worst_late,
                               "worst_stored_after_s": worst_ack[0]}))


# --------------------------------------------------------------------------- the run


async def watch_alerts(url: str, stop: asyncio.Event, lags: list[float]) -> None:
    """Lag of every alert the central publishes: arrival minus the firing snapshot's time."""
    import nats

    nc = await nats.connect(url)

    async def on_msg(msg: Any) -> None:
        from watchkeeper.bus import codec

        try:
            alert = codec.decode(msg.data)
        except Exception:
            return
        if getattr(alert, "labels", {}).get("change") == "new":
            lags.append(time.time() - alert.at.timestamp())

    await nc.subscribe(f"{PREFIX}.alerts.>", cb=on_msg)
    await stop.wait()
    await nc.drain()


#: Where a sampled stack counts, first match from the top of this list (py-spy's frames
#: name the file): the split the README's "where the time goes" reports.
PROFILE_PARTS = (
    ("decode/validation", ("bus/codec.py", "pydantic", "_decode")),
    ("store writes", ("store/sqlite.py", "sqlitedb.py", "sqlite3")),
    ("analysis", ("/analysis/", "agents/analyzer.py")),
    ("communicator", ("agents/communicator.py",)),
    ("broker client/ack", ("/nats/", "bus/nats.py")),
    ("event loop/other", ("",)),
)


def start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy (if installed) samples the central for the window, every thread."""
    spy = Path(sys.executable).parent / "py-spy"
    exe = str(spy) if spy.exists() else shutil.which("py-spy")
    if exe is None:
        print("py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", "50", "--nonblocking", "--format", "raw", "--threads",
                             "--output", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def finish_profile(spy: subprocess.Popen[bytes], out: Path) -> dict[str, float]:
    """Share of the central's busy samples per part (idle samples are not recorded)."""
    spy.wait(timeout=120)
    counts: dict[str, int] = {}
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        part = next(name for name, keys in PROFILE_PARTS if any(k in stack for k in keys))
        counts[part] = counts.get(part, 0) + int(n)
    total = sum(counts.values()) or 1
    return {name: round(100 * counts.get(name, 0) / total, 1) for name, _ in PROFILE_PARTS}


def stored_snapshots(data_dir: Path, since: float, until: float) -> int:
    db = data_dir / "watchkeeper.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT COUNT(*) FROM snapshots WHERE at >= ? AND at < ?",
                           (since, until)).fetchone()
    return int(row[0])


def run_one(hosts: int, seconds: float, warmup: float, interval: float,
            profile: Path | None = None, shards: int = 0) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="wk-fleet-"))
    broker = central = gen = None
    try:
        broker, url = start_server(root)  # bench/bus_nats.py's: README configuration
        central, _ = start_central(root, url, shards)
        time.sleep(3 + 2 * shards)  # its consumers (and its shards') are made
        counts = root / "generator.json"
        gen = subprocess.Popen([sys.executable, __file__, "--generate", url, str(hosts),
                                str(warmup + seconds), str(interval), str(counts)])
        time.sleep(warmup)
        lags: list[float] = []
        stop = asyncio.Event()
        loop = asyncio.new_event_loop()
        watcher = loop.create_task(watch_alerts(url, stop, lags))
        workers = shard_pids(central.pid)
        assert len(workers) == shards, f"{len(workers)} shard processes, not {shards}"
        c0, b0, t0 = cpu_seconds(central.pid), cpu_seconds(broker.pid), time.monotonic()
        w0 = sum(cpu_seconds(w) for w in workers)
        spy = start_profile(central.pid, seconds, profile) if profile else None
        since = time.time()
        loop.run_until_complete(asyncio.sleep(seconds))
        c1, b1, t1 = cpu_seconds(central.pid), cpu_seconds(broker.pid), time.monotonic()
        w1 = sum(cpu_seconds(w) for w in workers)
        restarted = sorted(shard_pids(central.pid)) != sorted(workers)
        worker_rss = [peak_rss_mb(w) for w in workers if psutil.pid_exists(w)]
        split = finish_profile(spy, profile) if spy is not None and profile else None
        gen.wait(timeout=600)
        loop.run_until_complete(asyncio.sleep(10))  # the central drains what is queued
        stop.set()
        loop.run_until_complete(watcher)
        loop.close()
        rss = peak_rss_mb(central.pid)
        gen_counts = json.loads(counts.read_text())
        # Published during the measured window (the generator's schedule is even).
        expected = hosts * seconds / interval
        stored = stored_snapshots(root / "data", since, since + seconds)
        return {
            "hosts": hosts, "seconds": seconds, "shards": shards,
            "central_cpu_pct": round(100 * (c1 - c0) / (t1 - t0), 1),
            "shards_cpu_pct": round(100 * (w1 - w0) / (t1 - t0), 1),
            "shard_peak_rss_mb": round(max(worker_rss, default=0.0), 1),
            "shard_restarted": restarted,
            "load_avg": round(os.getloadavg()[0], 1),
            "central_peak_rss_mb": round(rss, 1),
            "broker_cpu_pct": round(100 * (b1 - b0) / (t1 - t0), 1),
            "alerts": len(lags),
            "lag_p50_s": round(pct(lags, 0.5), 2), "lag_p99_s": round(pct(lags, 0.99), 2),
            "lags_over_1s": sorted(round(x, 1) for x in lags if x > 1),
            "expected_in_window": int(expected), "stored_in_window": stored,
            "loss_pct": round(max(0.0, 100 * (1 - stored / expected)), 2) if expected else 0,
            "generator": gen_counts,
            **({"profile": split} if split else {}),
        }
    finally:
        for proc in (gen, central, broker):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--generate":
        url, hosts, seconds, interval, out = sys.argv[2:7]
        asyncio.run(generate(url, int(hosts), float(seconds), float(interval), Path(out)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="100,1000,10000")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--warmup", type=float, default=40.0)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--shards", default="0",
                        help="analysis shards of the central, a run each: 0,2 compares "
                             "in-process analysis with two shard processes")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy the central over the window; raw stacks to this file")
    args = parser.parse_args()
    results = []
    for n in [int(x) for x in args.hosts.split(",")]:
        for k in [int(x) for x in args.shards.split(",")]:
            r = run_one(n, args.seconds, args.warmup, args.interval, args.profile, k)
            results.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    load = os.getloadavg()
    print(f"\n{datetime.now(timezone.utc):%Y-%m-%d}, {platform.machine()}, "
          f"{psutil.cpu_count()} cores, load {load[0]:.1f} at the end\n")
    print("| hosts | shards | central CPU | shards' CPU (sum) | central peak RSS | shard peak RSS "
          "| broker CPU | alerts | lag p50 | lag p99 | stored / due | loss | generator late "
          "| load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        g = r["generator"]
        print(f"| {r['hosts']:,} | {r['shards']} | {r['central_cpu_pct']} % "
              f"| {r['shards_cpu_pct']} % | {r['central_peak_rss_mb']} MB "
              f"| {r['shard_peak_rss_mb']} MB "
              f"| {r['broker_cpu_pct']} % | {r['alerts']} | {r['lag_p50_s']} s "
              f"| {r['lag_p99_s']} s | {r['stored_in_window']:,} / "
              f"{r['expected_in_window']:,} | {r['loss_pct']} % "
              f"| {g['late']:,} of {g['due']:,} (worst {g['worst_late_s']:.1f} s; stored "
              f"{g.get('worst_stored_after_s', 0):.1f} s after its time at worst) "
              f"| {r['load_avg']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
