"""bench/central_cuts: what each cut of a fleet central's per-snapshot cost saves, old against
new in the same run (the profile of bench/fleet.py --profile says where the time goes).

- the wire shape check (bus/codec.py ``_check_shape``: nesting depth, non-finite numbers,
  integers past 64 bits), over a bench/fleet.py snapshot: isinstance per value (before)
  against exact types with strings skipped first (now);
- the history's snapshot blob: zlib level 6 (before) against 1 (now), time and bytes;
- acknowledgements: an asyncio task per message (before) against one task sending every
  acknowledgement queued (now), the acknowledgement itself a no-op here (the publish it makes
  is the same either way);
- host-down: walking every host after every batch (before: about 100 batches a second at
  2,000 hosts) against once a second (now), per second of a central with ``--hosts`` hosts.

    python bench/central_cuts.py [--rounds 2000] [--hosts 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time
import zlib
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pydantic_core
from fleet import _snapshot  # bench/ is on sys.path

from watchkeeper.analysis.fleet import FleetAnalyzer
from watchkeeper.bus import codec
from watchkeeper.config import Settings
from watchkeeper.events import encode

_INT_LIMIT = 2**63 - 1


def old_check_shape(value: Any, max_depth: int) -> None:
    """The shape check as it was (isinstance on every value)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > max_depth:
            raise ValueError("too deep")
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, level + 1))
            elif (isinstance(child, float) and not math.isfinite(child)) or (
                    isinstance(child, int) and not isinstance(child, bool)
                    and abs(child) > _INT_LIMIT):
                raise ValueError("bad number")


def per_call_us(fn: Callable[[], Any], rounds: int) -> float:
    fn()
    best = math.inf
    for _ in range(3):  # the best of three: the machine is shared
        started = time.perf_counter()
        for _ in range(rounds):
            fn()
        best = min(best, (time.perf_counter() - started) / rounds * 1e6)
    return best


async def acks_us(count: int, one_task: bool) -> float:
    async def ack() -> None:
        return None

    started = time.perf_counter()
    if one_task:
        pending: list[int] = []
        tasks: set[asyncio.Task[None]] = set()

        async def send() -> None:
            while pending:
                batch = pending[:]
                pending.clear()
                for _ in batch:
                    await ack()

        for i in range(count):
            pending.append(i)
            if not tasks or all(t.done() for t in tasks):
                tasks = {asyncio.get_running_loop().create_task(send())}
            if i % 20 == 0:
                await asyncio.sleep(0)  # the loop turns between deliveries
        await asyncio.gather(*tasks)
    else:
        spawned = []
        for i in range(count):
            spawned.append(asyncio.get_running_loop().create_task(ack()))
            if i % 20 == 0:
                await asyncio.sleep(0)
        await asyncio.gather(*spawned)
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--hosts", type=int, default=2000)
    args = parser.parse_args()
    snap = _snapshot("host-00001", 1, datetime.now(timezone.utc), False)
    wire = codec.encode(snap)
    raw = pydantic_core.from_json(wire, allow_inf_nan=False)
    rows: list[tuple[str, str, str, str]] = []

    old = per_call_us(lambda: old_check_shape(raw, 32), args.rounds)
    new = per_call_us(lambda: codec._check_shape(raw, 32), args.rounds)
    whole = per_call_us(lambda: codec.decode(wire, topic="metrics.host-00001"), args.rounds)
    rows.append(("wire shape check, a snapshot", f"{old:.0f} us", f"{new:.0f} us",
                 f"{old / new:.1f}x (decode now {whole:.0f} us in all)"))

    blob = encode(snap)
    z6 = per_call_us(lambda: zlib.compress(blob, 6), args.rounds)
    z1 = per_call_us(lambda: zlib.compress(blob, 1), args.rounds)
    rows.append(("stored snapshot blob, zlib", f"{z6:.0f} us, {len(zlib.compress(blob, 6)):,} B",
                 f"{z1:.0f} us, {len(zlib.compress(blob, 1)):,} B", f"{z6 / z1:.1f}x"))

    count = 20_000
    spawn = min(asyncio.run(acks_us(count, False)) for _ in range(3))
    batch = min(asyncio.run(acks_us(count, True)) for _ in range(3))
    rows.append(("acknowledgement overhead", f"{spawn:.1f} us", f"{batch:.1f} us",
                 f"{spawn / batch:.1f}x"))

    settings = Settings()
    fleet = FleetAnalyzer(lambda: settings)
    now = time.time()
    for i in range(args.hosts):
        fleet.observe(_snapshot(f"host-{i:05d}", 1, datetime.now(timezone.utc), False),
                      received=now)
    walk = per_call_us(lambda: fleet.check_silent(now), max(10, args.rounds // 100))
    batches = 100  # a central at 2,000 hosts takes about 100 batches a second
    rows.append((f"host-down walk, {args.hosts:,} hosts, per second",
                 f"{walk * batches / 1000:.1f} ms ({batches} walks)",
                 f"{walk / 1000:.2f} ms (1 walk)", f"{batches}x"))

    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.1f}\n")
    print("| cut | before | now | ratio |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
