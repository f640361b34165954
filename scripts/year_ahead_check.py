"""Run by scripts/test under faketime: prove the wall clock really is a year ahead.

Checked where the tests read it: time.time(), datetime.now(), SQLite's 'now' and a child
process. The monotonic clock must stay real (asyncio and every timeout run on it).
Usage: year_ahead_check.py REAL_EPOCH_SECONDS REAL_MONOTONIC_SECONDS
"""

from __future__ import annotations

import datetime
import sqlite3
import subprocess
import sys
import time

real_now, real_mono = float(sys.argv[1]), float(sys.argv[2])
clocks = {
    "time.time()": time.time(),
    "datetime.now()": datetime.datetime.now(datetime.timezone.utc).timestamp(),
    "SQLite 'now'": float(sqlite3.connect(":memory:").execute(
        "SELECT strftime('%s', 'now')").fetchone()[0]),
    "child process": float(subprocess.run([sys.executable, "-c", "import time; print(time.time())"],
                                          capture_output=True, text=True, check=True).stdout),
}
wrong = {name: t for name, t in clocks.items() if not 364 * 86400 < t - real_now < 366 * 86400}
if wrong or not 0 <= time.monotonic() - real_mono < 60:
    print(f"year-ahead check FAILED: clocks {clocks} (real {real_now}), monotonic "
          f"{time.monotonic()} (real {real_mono})", file=sys.stderr)
    sys.exit(1)
shown = datetime.datetime.fromtimestamp(clocks["time.time()"], datetime.timezone.utc)
print(f"wall clock {shown:%Y-%m-%d %H:%M} UTC in Python, SQLite and a child process; "
      "monotonic clock real")
