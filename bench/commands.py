"""bench/commands: latency of operator actions and agent-state reads through the REST API.

Starts the real product as bench/api_load.py does (`watchkeeper serve`, all agents, history
in a temp dir, no LLM, actions dry-run) and sends ``--n`` sequential requests on one
keep-alive connection for each route whose path to the agents changed in issue 15 (the
analyzer's ack, silence and unsilence; the configuration patch; the alert and service
lists), plus two controls that did not change (GET /api/health, and POST /api/command
health_check, which went over the bus before too). Run it against two checkouts on the same
machine to compare (``PYTHONPATH=<other checkout>/src python bench/commands.py``).

    python bench/commands.py [--n 300]

Prints a Markdown table; traffic goes to 127.0.0.1 only; it stops what it starts and removes
its temp dir.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api_load import HOST, pct, start_serve, stop_serve, wait_ready

Request = tuple[str, str, Any]


def _timed(conn: http.client.HTTPConnection, token: str, request: Request
           ) -> tuple[float, int, Any]:
    method, path, body = request
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    t0 = time.perf_counter()
    conn.request(method, path, body=None if body is None else json.dumps(body),
                 headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    took = time.perf_counter() - t0
    return took, resp.status, json.loads(data) if data else None


def run(port: int, token: str, n: int) -> list[tuple[str, list[float], int]]:
    """Per route: its latencies (s) and the answers that were not what it should give."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    until = "2999-01-01T00:00:00+00:00"
    rows: list[tuple[str, list[float], int]] = []

    def measure(label: str, make: Callable[[int], Request], ok: int,
                after: Callable[[Any], None] | None = None) -> None:
        lat, bad = [], 0
        for i in range(n):
            took, status, body = _timed(conn, token, make(i))
            lat.append(took)
            bad += status != ok
            if after is not None and status == ok:
                after(body)
        rows.append((label, lat, bad))

    measure("GET /api/health (control)", lambda i: ("GET", "/api/health", None), 200)
    measure("POST /api/command health_check (control: bus before too)",
            lambda i: ("POST", "/api/command", {"command": "health_check",
                                                "target": "analyzer"}), 200)
    measure("POST /api/alerts/{fp}/ack (no such alert)",
            lambda i: ("POST", "/api/alerts/no-such-alert/ack", None), 404)
    created: list[str] = []
    measure("POST /api/alerts/silences",
            lambda i: ("POST", "/api/alerts/silences",
                       {"matchers": {"metric": f"bench.{i}"}, "until": until}), 201,
            lambda body: created.append(body["id"]))
    measure("DELETE /api/alerts/silences/{id}",
            lambda i: ("DELETE", f"/api/alerts/silences/{created[i]}", None), 200)
    measure("PATCH /api/config (a threshold)",
            lambda i: ("PATCH", "/api/config",
                       {"thresholds": {"cpu_warning": 80 + i % 2}}), 200)
    measure("GET /api/alerts", lambda i: ("GET", "/api/alerts", None), 200)
    measure("GET /api/services", lambda i: ("GET", "/api/services", None), 200)
    conn.close()
    return rows


def in_process(n: int) -> tuple[float, float]:
    """Mean µs of one command round trip over the in-process bus (Command built, checked
    and answered by an agent's desk under its supervisor), and of the direct call it
    replaces, on the same agent."""
    import asyncio

    from watchkeeper.agents.base import BaseAgent
    from watchkeeper.agents.commands import ask
    from watchkeeper.bus import MemoryBus
    from watchkeeper.config import ConfigStore, validate
    from watchkeeper.supervisor import Supervisor

    class Idle(BaseAgent):
        name = "idle"

        async def _perform_check(self) -> None:
            return None

    async def go() -> tuple[float, float]:
        bus = MemoryBus()
        config = ConfigStore(validate({}))
        agent = Idle(bus=bus, config=config, host="h")
        sup = Supervisor([agent], bus=bus, config=config, host="h")
        await sup.start()
        t0 = time.perf_counter()
        for _ in range(n):
            await ask(bus, "h", "idle", "health_check", actor="bench")
        over_bus = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for _ in range(n):
            agent.health()
        direct = (time.perf_counter() - t0) / n
        await sup.stop()
        await bus.close()
        return over_bus * 1e6, direct * 1e6

    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="requests per route")
    ap.add_argument("--interval", type=float, default=1.0, help="sensor check interval (s)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wk-bench-commands-"))
    server = start_serve(tmp, args.interval)
    try:
        port = wait_ready(server, tmp / "serve.stderr")
        token = (tmp / "data" / "api_token").read_text().strip()
        rows = run(port, token, args.n)
    finally:
        stop_serve(server)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{platform.system()} {platform.machine()}, Python {platform.python_version()}; "
          f"{args.n} sequential requests per route on one keep-alive connection\n")
    print("| route | requests | p50 ms | p90 ms | p99 ms | unexpected answers |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, lat, bad in rows:
        ordered = sorted(lat)
        cells = " | ".join(f"{1000 * pct(ordered, q):.2f}" for q in (50, 90, 99))
        print(f"| {label} | {len(lat)} | {cells} | {bad} |")
    over_bus, direct = in_process(5000)
    print(f"\nIn process, 5,000 times: a command round trip over the memory bus (health_check "
          f"to an idle agent) {over_bus:.0f} µs, the direct call it replaces {direct:.0f} µs.")


if __name__ == "__main__":
    main()
