"""Slowloris against a real `watchkeeper serve`: do the agents keep their cadence?

Starts `serve` on a temp data dir, then ``--attackers`` processes each open ``--per``
connections that send the start of a request and never finish it, hold them for
``--seconds``, and reports: the server's open files (peak), how often system_status.json
was rewritten during the attack, the latency of /api/health from fresh connections, and the
log lines written.

    python bench/slowloris.py --attackers 2 --per 10000 --seconds 30
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def attacker(port: int, per: int, hold: float, opened: multiprocessing.Queue[int]) -> None:
    """Open ``per`` half-open requests and hold them."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    for _ in range(per):
        sock = socket.socket()
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        except OSError:
            sock.close()
            continue
        socks.append(sock)
    opened.put(len(socks))
    time.sleep(hold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attackers", type=int, default=2)
    parser.add_argument("--per", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="wk-slowloris-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHKEEPER_")}
    env.update(WATCHKEEPER_STORAGE__DATA_DIR=str(root / "data"),
               WATCHKEEPER_LOGGING__DIR=str(root / "logs"))
    proc = subprocess.Popen([sys.executable, "-m", "watchkeeper", "serve", "--port", "0",
                             "--no-console-log"], cwd=root, env=env, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", proc.stderr.readline())
    assert found
    port = int(found.group(1))
    url = f"http://127.0.0.1:{port}"
    time.sleep(3)
    status = root / "logs" / "system_status.json"
    log = root / "logs" / "agent_system.log"
    lines_before = len(log.read_text().splitlines())
    opened: multiprocessing.Queue[int] = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=attacker, args=(port, args.per, args.seconds,
                                                                opened))
               for _ in range(args.attackers)]
    for w in workers:
        w.start()
    writes: set[int] = set()
    latencies: list[float] = []
    failures = 0
    peak_fds = 0
    start = time.monotonic()
    while any(w.is_alive() for w in workers):
        peak_fds = max(peak_fds, len(os.listdir(f"/proc/{proc.pid}/fd")))
        with contextlib.suppress(FileNotFoundError):
            writes.add(status.stat().st_mtime_ns)
        t0 = time.monotonic()
        try:
            ok = httpx.get(f"{url}/api/health", timeout=5).status_code == 200
        except httpx.TransportError:
            ok = False
        if ok:
            latencies.append(time.monotonic() - t0)
        else:
            failures += 1
        time.sleep(0.5)
    took = time.monotonic() - start
    held = sum(opened.get() for _ in workers)
    log_lines = len(log.read_text().splitlines()) - lines_before
    proc.terminate()
    proc.wait(30)
    print(f"half-open connections opened: {held} by {args.attackers} processes, over {took:.0f} s")
    print(f"server open files, peak: {peak_fds}")
    print(f"system_status.json rewrites during the attack: {len(writes)} "
          f"({len(writes) / took:.2f}/s)")
    if latencies:
        print(f"/api/health from fresh connections: {len(latencies)} ok, {failures} failed, "
              f"median {statistics.median(latencies) * 1000:.1f} ms, "
              f"max {max(latencies) * 1000:.1f} ms")
    else:
        print(f"/api/health: all {failures} tries failed")
    print(f"log lines written during the attack: {log_lines}")


if __name__ == "__main__":
    main()
