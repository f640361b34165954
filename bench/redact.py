"""Cost of secret redaction: redact_cmdline on real and corpus command lines, redact_text on logs.

The sensor redacts the command line of every process it reports on every tick, and the LLM
tools redact every log line they send, so this must stay in microseconds per line.

    python bench/redact.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import psutil

from watchkeeper.redact import redact_cmdline, redact_text

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "security" / "secret_corpus.json"


def _host_cmdlines() -> list[list[str]]:
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info.get("cmdline")
        if argv:
            out.append(list(argv))
    return out


def _time_per_item(fn: object, items: list, rounds: int) -> tuple[float, float]:
    """Mean and best microseconds per item over ``rounds`` passes."""
    call = fn  # type: ignore[assignment]
    per = []
    for _ in range(rounds):
        start = time.perf_counter()
        for item in items:
            call(item)  # type: ignore[operator]
        per.append((time.perf_counter() - start) / len(items) * 1e6)
    return statistics.mean(per), min(per)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    corpus = json.loads(CORPUS.read_text(encoding="utf-8"))
    corpus_lines = [row[2] for row in corpus["secrets"]] + [row[1] for row in corpus["keep"]]
    host = _host_cmdlines()
    # A log excerpt as the LLM's read_log tool sees it: ordinary lines, a few with secrets.
    log = [f"2026-12-06T01:00:{i % 60:02d} app[{1000 + i}]: GET /api/items/{i} 200 "
           f"{i * 7 % 900}ms user=bob" for i in range(2000)] + corpus_lines
    rows = [
        ("host cmdlines (argv)", redact_cmdline, host),
        ("corpus lines (string)", redact_cmdline, corpus_lines),
        ("log lines (redact_text)", redact_text, log),
    ]
    print(f"python {sys.version.split()[0]}, {len(host)} host processes, "
          f"{len(corpus_lines)} corpus lines, {len(log)} log lines, {args.rounds} rounds")
    for name, fn, items in rows:
        mean, best = _time_per_item(fn, items, args.rounds)
        print(f"{name:<26} mean {mean:7.1f} us/line   best {best:7.1f} us/line")
    return 0


if __name__ == "__main__":
    sys.exit(main())
