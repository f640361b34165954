"""Benchmark the audit log's hash chain: full verification, incremental checks, append cost.

Run: python bench/audit_chain.py [--records 100000]
The log is filled with copies of real decision entries (about 1.3 KB each, as the remediator
writes them), chained as AuditLog chains them, in one transaction (fast to build); then
`watchkeeper audit verify`'s walk, the API's incremental check and one append are timed.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from watchkeeper.remediation import auditchain
from watchkeeper.remediation.audit import AuditLog, verify_file
from watchkeeper.remediation.policy import ActionRequest, Decision, Target


def decision(i: int) -> Decision:
    """A decision as the remediator records it, with an LLM's reasoning."""
    req = ActionRequest(action="restart_service", params={"service": f"web{i}"}, host="bench",
                        source="llm", reasoning="the service stopped answering its health "
                        "check three times in a row; restarting it is the routine fix " * 3)
    return Decision(request=req, verdict="auto", why="auto: restart_service web",
                    check="ok", target=Target.service(f"web{i}"),
                    params={"service": f"web{i}"}, risk="medium", mode="auto")


async def build(db: Path, records: int) -> None:
    audit = AuditLog(db)
    await audit.record_decision(decision(0))
    await audit.close()
    key = auditchain.load_key(auditchain.key_path(db), create=False)
    assert key is not None
    cols = auditchain.COLUMNS
    conn = sqlite3.connect(db, isolation_level=None)
    template = list(conn.execute(f"SELECT {', '.join(cols)}, hash FROM entries").fetchone())
    prev = template.pop()
    conn.execute("BEGIN")
    for i in range(2, records + 1):
        row = list(template)
        row[0], row[1] = i, float(row[1]) + i
        digest = auditchain.link_hash(key, prev, row)
        conn.execute(f"INSERT INTO entries ({', '.join(cols)}, prev_hash, hash) VALUES "
                     f"({', '.join('?' * (len(cols) + 2))})", (*row, prev, digest))
        prev = digest
    conn.execute("COMMIT")
    conn.close()
    auditchain.write_head(auditchain.head_path(db),
                          auditchain.Head(records, prev, auditchain.key_id(key)))


async def measure(records: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "audit.db"
        started = time.perf_counter()
        await build(db, records)
        print(f"built {records} chained entries in {time.perf_counter() - started:.1f} s "
              f"({db.stat().st_size / records:.0f} bytes each)")

        started = time.perf_counter()
        status = verify_file(db)
        took = time.perf_counter() - started
        assert status.ok and status.checked == records, status
        print(f"full verification (audit verify): {took:.2f} s, {records / took:,.0f} "
              "records/s")

        audit = AuditLog(db)
        try:
            started = time.perf_counter()
            assert audit.chain_status().ok  # at start: the whole chain
            print(f"chain_status() at start (full): {time.perf_counter() - started:.2f} s")
            appends, checks = [], []
            for i in range(50):
                t0 = time.perf_counter()
                await audit.record_decision(decision(i))
                t1 = time.perf_counter()
                assert audit.chain_status().ok  # what an API request pays: one new entry
                checks.append(time.perf_counter() - t1)
                appends.append(t1 - t0)
            print(f"append (fsynced, chained, head file): median "
                  f"{statistics.median(appends) * 1e3:.2f} ms")
            print(f"incremental chain_status() after one append: median "
                  f"{statistics.median(checks) * 1e3:.2f} ms")
            started = time.perf_counter()
            for _ in range(200):
                audit.chain_status()
            print(f"chain_status() with nothing new: "
                  f"{(time.perf_counter() - started) / 200 * 1e3:.3f} ms")
        finally:
            await audit.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}")
    asyncio.run(measure(args.records))


if __name__ == "__main__":
    main()
