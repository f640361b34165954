"""MTTR through the whole watchkeeper runtime: SIGKILL -> policy -> audit -> restart -> HTTP.

Like bench/mttr.py, but the restart goes the full way a user's does: the RemediatorAgent
sees the exit, the policy decides, the intent is fsynced to the audit log, the service
manager restarts, and the time runs until the HTTP check answers again. The start-up grace
and healing_cooldown keep their defaults (60 s each: a managed process's exit is restarted
regardless, as by a process supervisor). Flap protection, backoff and budgets are raised for
the run: each crash here comes 0.3 s after the last heal, inside the 5 s stability window,
so every restart counts as a try that did not hold (20 of them in a minute would otherwise,
rightly, stop the healing after 3).

    python bench/mttr_agent.py [--crashes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from watchkeeper.config import validate
from watchkeeper.runtime import Runtime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:
            return bool(resp.status < 400)
    except OSError:
        return False


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crashes", type=int, default=20)
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    tmp = Path(tempfile.mkdtemp(prefix="wk-mttr-"))
    settings = validate({
        "storage": {"data_dir": str(tmp / "data")},
        "logging": {"dir": str(tmp / "logs")},
        "services": {"web": {"start": [sys.executable, "-m", "http.server", str(port),
                                       "--bind", "127.0.0.1"],
                             "checks": [{"http": url, "timeout_s": 1}]}},
        "remediation": {"flap_max_attempts": 1000,
                        "backoff_initial_s": 0, "budget_per_hour": 10_000,
                        "budget_per_action_per_hour": 10_000},
    })
    rt = Runtime(settings)
    await rt.start()
    times: list[float] = []
    try:
        for _ in range(args.crashes):
            status = await rt.services.wait_healthy("web", timeout_s=10)
            assert status.healthy and status.pid, status
            await asyncio.sleep(0.3)  # let the previous verification finish
            t0 = time.monotonic()
            os.kill(status.pid, signal.SIGKILL)  # the runtime started it for this bench
            await asyncio.sleep(0.005)
            while not await asyncio.to_thread(answers, url):
                await asyncio.sleep(0.005)
                assert time.monotonic() - t0 < 30, "not healed within 30 s"
            times.append(time.monotonic() - t0)
    finally:
        await rt.stop()
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    print(f"MTTR through the runtime ({len(times)} crashes): p50 "
          f"{statistics.median(times):.3f} s, p95 {p95:.3f} s, max {times[-1]:.3f} s")


if __name__ == "__main__":
    asyncio.run(main())
