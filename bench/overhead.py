"""bench/overhead: CPU and peak RSS of `watchkeeper serve` (or `run`) next to Glances, same run.

Starts N idle processes (default 300, so the process table is large), then runs
`watchkeeper serve` or `run` (5 s interval) and
`glances --stdout cpu.total,mem.percent,load,processcount -t 5` side by side for the same
duration, measures each one's CPU time (user + system, the process and its children) over
the run and its peak RSS (VmHWM), and prints a Markdown table
with the ratios. Everything it starts it stops; its temp dirs are removed.

watchkeeper's modules are byte-compiled first (``compileall``), as ``pip install`` does for
an installed package and as Glances' are here: an editable checkout under
PYTHONDONTWRITEBYTECODE would otherwise compile every module at each start, about 2 MB more
peak RSS that no installed copy pays (``--no-compile`` measures that case).

    python bench/overhead.py [--seconds 90] [--idle 300] [--command serve|run] [--json out.json]

Needs `pip install glances` (the `bench` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds of a process and its children (both reaped and alive)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + getattr(t, "children_user", 0.0) + \
                getattr(t, "children_system", 0.0)
        except psutil.Error:
            pass
    return total


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) in MB; falls back to current RSS off Linux."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return psutil.Process(pid).memory_info().rss / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--idle", type=int, default=300)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-compile", action="store_true",
                    help="do not byte-compile watchkeeper's modules first")
    ap.add_argument("--command", choices=("serve", "run"), default="serve",
                    help="serve: agents + dashboard + API (the main command, no client "
                         "connected); run: agents only")
    args = ap.parse_args()

    glances = shutil.which("glances") or str(Path(sys.executable).parent / "glances")
    if not Path(glances).exists():
        sys.exit("glances not found: pip install glances (or pip install -e '.[bench]')")
    if not args.no_compile:
        import watchkeeper

        subprocess.run([sys.executable, "-m", "compileall", "-q",
                        str(Path(watchkeeper.__file__).parent)], check=True,
                       stdout=subprocess.DEVNULL)
    tmp = Path(tempfile.mkdtemp(prefix="wk-bench-"))
    idle = [subprocess.Popen(["sleep", "3600"]) for _ in range(args.idle)]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        env = dict(os.environ)
        env.update({
            "WATCHKEEPER_STORAGE__DATA_DIR": str(tmp / "data"),
            "WATCHKEEPER_LOGGING__DIR": str(tmp / "logs"),
            "WATCHKEEPER_AGENTS__CHECK_INTERVAL": str(args.interval),
        })
        extra = ["--port", "0"] if args.command == "serve" else []
        procs["watchkeeper"] = subprocess.Popen(
            [sys.executable, "-m", "watchkeeper", args.command, *extra, "--no-console-log"],
            cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs["glances"] = subprocess.Popen(
            [glances, "--stdout", "cpu.total,mem.percent,load,processcount",
             "-t", str(int(args.interval))], cwd=tmp, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        handles = {name: psutil.Process(p.pid) for name, p in procs.items()}
        # Skip start-up (imports, first reading): measure the steady state.
        time.sleep(args.interval * 2)
        start = {name: cpu_seconds(h) for name, h in handles.items()}
        t0 = time.monotonic()
        time.sleep(args.seconds)
        wall = time.monotonic() - t0
        results = {}
        for name, h in handles.items():
            used = cpu_seconds(h) - start[name]
            results[name] = {"cpu_percent": 100 * used / wall, "peak_rss_mb": peak_rss_mb(h.pid)}
        process_count = len(psutil.pids())
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for p in idle:
            p.kill()
        for p in idle:
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    wk, gl = results["watchkeeper"], results["glances"]
    print(f"host: {os.cpu_count()} cores, {process_count} processes during the run, "
          f"interval {args.interval:g}s, measured {wall:.0f}s\n")
    print("| tool | CPU % of one core | peak RSS (MB) |")
    print("| --- | --- | --- |")
    for name, r in results.items():
        shown = f"watchkeeper {args.command}" if name == "watchkeeper" else name
        print(f"| {shown} | {r['cpu_percent']:.2f} | {r['peak_rss_mb']:.1f} |")
    print(f"| ratio watchkeeper / glances | {wk['cpu_percent'] / gl['cpu_percent']:.2f} | "
          f"{wk['peak_rss_mb'] / gl['peak_rss_mb']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "processes": process_count,
                                         "seconds": wall}, indent=2))


if __name__ == "__main__":
    main()
