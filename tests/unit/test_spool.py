"""The fleet agent's spool: durable, in order, bounded with a gap instead of a silent hole,
and nothing lost when the agent is killed -9 while appending or flushing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from watchkeeper.bus.spool import SPOOL_FILE, Entry, Gap, Spool, SpoolError

NOW = 2_000_000_000.0


def entry(i: int, *, droppable: bool = True, at: float | None = None, size: int = 10) -> Entry:
    return Entry(topic="metrics.web-1" if droppable else "actions.web-1", msg_id=f"m{i}",
                 at=NOW + i if at is None else at, droppable=droppable,
                 payload=bytes([i % 256]) * size)


async def test_rows_come_back_in_order_and_leave_only_when_sent(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    await spool.append([entry(i) for i in range(5)], now=NOW)
    await spool.append([entry(5, droppable=False)], now=NOW)
    head = spool.head(limit=4)
    assert [r.msg_id for r in head] == ["m0", "m1", "m2", "m3"]
    assert head[0].payload == b"\x00" * 10 and head[0].topic == "metrics.web-1"
    await spool.sent([r.id for r in head[:2]])
    await spool.close()
    assert oct(os.stat(tmp_path / SPOOL_FILE).st_mode & 0o777) == "0o600"

    again = Spool.open(tmp_path)  # a restart keeps what was not sent, in order
    assert [r.msg_id for r in again.head()] == ["m2", "m3", "m4", "m5"]
    assert again.stats() == (4, 40, NOW + 2) and len(again) == 4
    assert again.gap() is None
    await again.close()


async def test_past_the_count_snapshots_go_first_and_leave_a_gap(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, max_events=4)
    await spool.append([entry(0, droppable=False), entry(1), entry(2)], now=NOW)
    dropped = await spool.append([entry(3), entry(4, droppable=False), entry(5)], now=NOW)
    assert dropped == 2
    assert [r.msg_id for r in spool.head()] == ["m0", "m3", "m4", "m5"]
    assert spool.gap() == Gap(dropped=2, first_at=NOW + 1, last_at=NOW + 2)
    # Only actions left past the bound: then the oldest of them go too.
    assert await spool.append([entry(i, droppable=False) for i in range(6, 10)], now=NOW) == 4
    assert [r.msg_id for r in spool.head()] == ["m6", "m7", "m8", "m9"]
    gap = spool.gap()
    assert gap == Gap(dropped=6, first_at=NOW, last_at=NOW + 5)
    # The marker is sent; one more drop meanwhile stays owed.
    await spool.append([entry(10)], now=NOW)
    await spool.gap_sent(gap)
    assert spool.gap() == Gap(dropped=1, first_at=NOW, last_at=NOW + 10)
    await spool.close()


async def test_past_the_age_or_the_bytes_the_oldest_go(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, max_age_s=60, max_bytes=100)
    await spool.append([entry(0, at=NOW - 61, droppable=False), entry(1, at=NOW - 59)],
                       now=NOW)
    assert [r.msg_id for r in spool.head()] == ["m1"]
    await spool.append([entry(i, size=30) for i in range(2, 6)], now=NOW)
    assert [r.msg_id for r in spool.head()] == ["m3", "m4", "m5"]  # 90 bytes, under 100
    gap = spool.gap()
    assert gap is not None and gap.dropped == 3
    await spool.close()


def test_bad_bounds_and_a_foreign_file_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="spool bounds must be positive"):
        Spool(tmp_path / "x.db", max_events=0)
    (tmp_path / SPOOL_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(SpoolError, match=r"fleet_spool\.db is not a SQLite database or is damaged"):
        Spool.open(tmp_path)


CHILD = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from watchkeeper.bus.spool import Entry, Spool

    async def main(mode):
        spool = Spool.open(Path(sys.argv[1]))
        if mode == "append":
            for i in range(100_000):
                await spool.append([Entry("metrics.h", f"m{i}", float(i), True, b"x" * 200)],
                                   now=float(i))
                print(f"kept m{i}", flush=True)
        else:  # flush: "send" each row (print), then mark a batch of 5 sent
            while rows := spool.head(limit=5):
                for r in rows:
                    print(f"sent {r.msg_id}", flush=True)
                await spool.sent([r.id for r in rows])
                print("marked", flush=True)
    asyncio.run(main(sys.argv[2]))
""")


def _run_until_killed(tmp_path: Path, mode: str, lines: int) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), mode],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    out = []
    try:
        while len(out) < lines:
            line = proc.stdout.readline()
            assert line, "the child ended early"
            out.append(line.strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    out += [line.strip() for line in proc.stdout if line.strip()]
    proc.stdout.close()
    return out


async def test_kill_9_while_appending_or_flushing_loses_nothing(tmp_path: Path) -> None:
    kept = [x.split()[1] for x in _run_until_killed(tmp_path, "append", 300)
            if x.startswith("kept")]
    spool = Spool.open(tmp_path)
    on_disk = [r.msg_id for r in spool.head(limit=1_000_000)]
    await spool.close()
    assert on_disk[:len(kept)] == kept  # every acknowledged append is there, in order
    assert len(on_disk) - len(kept) <= 1  # at most the one in flight when killed

    out = _run_until_killed(tmp_path, "flush", 120)
    sent = [x.split()[1] for x in out if x.startswith("sent")]
    spool = Spool.open(tmp_path)
    left = [r.msg_id for r in spool.head(limit=1_000_000)]
    await spool.close()
    # Nothing lost: every row was sent or is still there; in order; and what is sent again
    # (sent, not yet marked) is at most one batch, for the broker's de-duplication to drop.
    assert set(sent) | set(left) == set(on_disk)
    assert left == on_disk[len(on_disk) - len(left):]
    assert 0 <= len(set(sent) & set(left)) <= 5
    await asyncio.sleep(0)
