"""bench/scenarios: each `watchkeeper simulate` scenario injected for real into a running
`watchkeeper serve`, measured from what the server stored; Monit, supervisord and Glances
watching the same host in the same run.

    python bench/scenarios.py [--quiet-minutes 10] [--only cpu,leak,...] [--port 8410]
                              [--no-others] [--json out.json]

The server runs with the DEFAULT settings except these (each printed with the table too):

- ``storage.data_dir``: a temp dir, so the run starts with no history and leaves none behind;
- ``logging.dir``: a temp dir, for the same reason;
- ``api.port``: ``--port`` (8410), not the 8000 another watchkeeper may hold;
- ``llm.base_url``: the loopback OpenAI-compatible server of the tests
  (``tests/openai_server.py``), which answers every request with one fixed assessment and
  counts them: the LLM calls a scenario costs, without a key or the network.

For each scenario (service crash, crash loop, CPU runaway, memory, leak, disk fill,
forkstorm, log flood) the bench runs ``watchkeeper simulate SCENARIO --json`` against the
server and then reads ``/api/activity`` (the stored alert and remediation events):

- *detect*: condition start (the kill, for service and crashloop) to the first alert
  opened that is about the scenario (its culprit, or the resource it strains: memory alerts
  for memory and leak, process count for forkstorm; host CPU alerts count for cpu only when
  they name its process, since other work drives this shared host's CPU);
- *culprit*: to the first alert that names the culprit itself (the worker's pid or
  ``wk-sim-*`` name, the demo service, the filled mount, the flooded file);
- *recover*: condition end to the detecting alert resolved (service: also the crash to the
  restart that succeeded, from the stored remediation event);
- *alerts* (all opened in the scenario's window) and *false* (those about something else);
- *actions*: the remediation events of those alerts, with verdict and outcome;
- *LLM*: chat requests the loopback server received in the window.

Then ``--quiet-minutes`` (10) with nothing injected: every alert opened is a false one.

The disk fill needs a filesystem that 1 MB/s can bring to its warning threshold within
minutes: as root the bench makes one (a sparse 10 GiB ext4 image on a loop device, filled
with fallocate to ``--disk-headroom-mb`` (240) below 85 %, the default disk_warning) and
removes it afterwards; without root the disk scenario is skipped, saying so.

Beside watchkeeper (``--no-others`` leaves them out), from the same run:

- supervisord (PyPI ``supervisor``) runs its own copy of the demo service
  (``autorestart=true``, its defaults otherwise) and Monit (Debian ``monit``, ``set daemon
  30``: the 30 s cycle; ``if failed port ... protocol http then restart``) another; both are
  killed at the moment watchkeeper's demo is, and the time until each answers HTTP again is
  measured by polling it (crashloop: the copies are made to exit at every start for as long
  as watchkeeper's is);
- Monit also checks the host (``cpu usage > 75%``, ``memory usage > 85%``, the loop
  filesystem ``space usage > 85%``, the same levels as watchkeeper's defaults): the first
  matching line of its log in a scenario's window is its detection;
- Glances (``glances --stdout alert -t 5``): the first alert event that begins in the
  window, and whether its top processes name the culprit.

A tool that is not installed is reported as such, never given a number. Everything started
is stopped; temp dirs, the loop mount and the image are removed.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.openai_server import OpenAIServer, completion  # noqa: E402
from watchkeeper.simulate.report import Culprit  # noqa: E402

PY = sys.executable
BIN = Path(PY).parent
#: One fixed answer for every LLM request (valid against the assessment schema).
LLM_ANSWER = {"summary": "scripted assessment (bench)", "likely_cause": "the scenario",
              "confidence": 0.5, "claims": [], "evidence": [], "suggested_actions": []}
#: Resource families an alert may strain for a scenario and still be about it.
#: (Host CPU alerts are not the cpu scenario's unless they name its process: one spinning
#: core on this shared 2-core host is not what drives the host's CPU past its thresholds.)
FAMILIES = {"cpu": (), "memory": ("memory.",), "leak": ("memory.",),
            "forkstorm": ("processes.",), "disk": (), "logflood": (), "service": (),
            "crashloop": ()}
#: How long the other tools' copies of the demo are waited for once the cause is gone.
WAIT_BACK_S = 60.0
#: The stored events each measurement read (kept in --json, to judge again by hand).
RAW: list[dict[str, Any]] = []
ORDER = ("service", "crashloop", "cpu", "memory", "leak", "disk", "forkstorm", "logflood")


def utc() -> datetime:
    return datetime.now(timezone.utc)


def parse_at(text: Any) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def log(msg: str) -> None:
    print(f"[{utc():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- watchkeeper


@dataclass
class Served:
    root: Path
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    config: Path

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.url + path, params=params, timeout=30,
                      headers={"Authorization": f"Bearer {self.token}"})
        r.raise_for_status()
        return r.json()

    def activity(self) -> list[tuple[datetime, str, dict[str, Any]]]:
        body = self.get("/api/activity", limit=1000, kind=["alert", "remediation"])
        out = []
        for item in body.get("events", []):
            at = parse_at(item.get("at"))
            if at is not None and isinstance(item.get("event"), dict):
                out.append((at, str(item.get("kind")), item["event"]))
        return out

    def simulate(self, *args: str, timeout: float) -> dict[str, Any]:
        env = dict(os.environ, TMPDIR=str(self.root / "tmp"))
        out = subprocess.run([PY, "-m", "watchkeeper", "-c", str(self.config), "simulate",
                              *args, "--json", "--url", self.url, "--token", self.token],
                             cwd=self.root, env=env, capture_output=True, text=True,
                             timeout=timeout)
        if out.returncode not in (0, 1):
            raise RuntimeError(f"simulate {' '.join(args)}: exit {out.returncode}: "
                               f"{out.stderr.strip()[-500:]}")
        report: dict[str, Any] = json.loads(out.stdout)
        return report


def start_server(root: Path, port: int, llm_url: str) -> Served:
    config = root / "watchkeeper.yaml"
    # Only what the docstring names differs from the defaults.
    config.write_text(f"api: {{port: {port}}}\n"
                      f"storage: {{data_dir: {json.dumps(str(root / 'data'))}}}\n"
                      f"logging: {{dir: {json.dumps(str(root / 'logs'))}}}\n"
                      f"llm: {{base_url: {json.dumps(llm_url)}}}\n", encoding="utf-8")
    (root / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WATCHKEEPER_") and k != "OPENAI_API_KEY"}
    proc = subprocess.Popen([PY, "-m", "watchkeeper", "-c", str(config), "serve",
                             "--no-console-log"], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/api/health", timeout=5).status_code in (200, 503):
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"watchkeeper serve did not come up on {url}")
        time.sleep(0.5)
    token = (root / "data" / "api_token").read_text(encoding="utf-8").strip()
    return Served(root, url, token, proc, config)


def stop(proc: subprocess.Popen[Any] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- others


class LogTail:
    """Lines appended to a file, each with the UTC time the bench first saw it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[tuple[datetime, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pos = 0
        while not self._stop.is_set():
            with contextlib.suppress(OSError), self.path.open("rb") as f:
                f.seek(pos)
                chunk = f.read()
                if b"\n" in chunk:
                    whole = chunk[:chunk.rfind(b"\n") + 1]
                    pos += len(whole)
                    now = utc()
                    self.lines += [(now, ln) for ln in whole.decode(errors="replace")
                                   .splitlines()]
            self._stop.wait(0.5)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Glances:
    """``glances --stdout-json alert``: its alert events as they begin."""

    def __init__(self, root: Path) -> None:
        exe = shutil.which("glances", path=str(BIN)) or shutil.which("glances")
        self.missing = None if exe else "not installed (pip install glances: the bench extra)"
        self.events: dict[tuple[Any, Any], dict[str, Any]] = {}
        self.proc: subprocess.Popen[str] | None = None
        if exe:
            # --stdout-json prints one reading and exits when not on a terminal; --stdout
            # keeps going, one Python literal a refresh.
            self.proc = subprocess.Popen([exe, "--stdout", "alert", "-t", "5"], cwd=root,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError, TypeError, AttributeError, SyntaxError):
                if not line.startswith("alert:"):
                    continue
                for ev in ast.literal_eval(line.split(":", 1)[1].strip()):
                    key = (ev.get("begin"), ev.get("type"))
                    old = self.events.get(key, {})
                    tops = set(old.get("tops", [])) | {str(t) for t in ev.get("top") or []}
                    self.events[key] = {**ev, "tops": sorted(tops)}

    def first(self, since: datetime, until: datetime, names: tuple[str, ...]
              ) -> tuple[float | None, str]:
        best: tuple[float, str] | None = None
        for ev in self.events.values():
            begin = datetime.fromtimestamp(float(ev.get("begin") or 0), timezone.utc)
            if since <= begin <= until:
                delay = (begin - since).total_seconds()
                named = any(n in t for n in names for t in ev.get("tops", []))
                text = f"{ev.get('type')} {ev.get('state')}" + (" naming it" if named else "")
                if best is None or delay < best[0]:
                    best = (delay, text)
        return (best[0], best[1]) if best else (None, "no alert")

    def close(self) -> None:
        stop(self.proc)


class DemoCopies:
    """The demo service under supervisord and under Monit, killed when watchkeeper's is."""

    def __init__(self, root: Path, mount: Path | None) -> None:
        self.root = root
        self.flag = root / "others.crash"
        self.until = time.time() + 6 * 3600
        self.sup_port, self.monit_port = free_port(), free_port()
        self.sup: subprocess.Popen[bytes] | None = None
        self.monit: subprocess.Popen[bytes] | None = None
        self.monit_log: LogTail | None = None
        self.sup_missing: str | None = None
        self.monit_missing: str | None = None
        self._start_supervisord()
        self._start_monit(mount)

    def _argv(self, port: int) -> list[str]:
        return [PY, "-m", "watchkeeper.simulate.demo_service", "--port", str(port),
                "--crash-flag", str(self.flag), "--until", f"{self.until:.0f}"]

    def _start_supervisord(self) -> None:
        exe = shutil.which("supervisord", path=str(BIN)) or shutil.which("supervisord")
        if exe is None:
            self.sup_missing = "not installed (pip install supervisor)"
            return
        d = self.root / "supervisord"
        d.mkdir()
        self.sup_rpc = free_port()
        (d / "supervisord.conf").write_text(
            f"[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/pid\n"
            f"[inet_http_server]\nport=127.0.0.1:{self.sup_rpc}\n"
            "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = "
            "supervisor.rpcinterface:make_main_rpcinterface\n"
            f"[program:wkdemo]\ncommand={' '.join(self._argv(self.sup_port))}\n"
            "autorestart=true\n", encoding="utf-8")
        self.sup = subprocess.Popen([exe, "-c", str(d / "supervisord.conf")], cwd=d,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.sup_log = LogTail(d / "supervisord.log")

    def _start_monit(self, mount: Path | None) -> None:
        exe = shutil.which("monit")
        if exe is None:
            self.monit_missing = "not installed (Debian: apt-get install monit)"
            return
        d = self.root / "monit"
        d.mkdir()
        start = (f"/bin/sh -c '{' '.join(self._argv(self.monit_port))} "
                 f">/dev/null 2>&1 & echo $! > {d}/demo.pid'")
        rc = d / "monitrc"
        rc.write_text(
            "set daemon 30\n"
            f"set logfile {d}/monit.log\nset pidfile {d}/monit.pid\n"
            f"set idfile {d}/monit.id\nset statefile {d}/monit.state\n"
            "check system wkbench\n  if cpu usage > 75% then alert\n"
            "  if memory usage > 85% then alert\n"
            f"check process wkdemo with pidfile {d}/demo.pid\n"
            f"  start program = \"{start}\"\n"
            f"  stop program = \"/bin/sh -c 'kill $(cat {d}/demo.pid)'\"\n"
            f"  if failed port {self.monit_port} protocol http then restart\n"
            + (f"check filesystem wkloop with path {mount}\n  if space usage > 85% then alert\n"
               if mount else ""), encoding="utf-8")
        rc.chmod(0o600)
        self.monit = subprocess.Popen([exe, "-c", str(rc), "-I"], cwd=d,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.monit_log = LogTail(d / "monit.log")
        self.monit_pidfile = d / "demo.pid"

    def pids(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        if self.sup is not None:
            import xmlrpc.client
            try:
                info = xmlrpc.client.ServerProxy(
                    f"http://127.0.0.1:{self.sup_rpc}/RPC2").supervisor.getProcessInfo("wkdemo")
                out["supervisord"] = int(info["pid"]) or None
            except (OSError, xmlrpc.client.Error):
                out["supervisord"] = None
        if self.monit is not None:
            try:
                out["monit"] = int(self.monit_pidfile.read_text().strip())
            except (OSError, ValueError):
                out["monit"] = None
        return out

    def ready(self, timeout: float = 90) -> None:
        """Until both copies answer (Monit starts its copy at its first cycle)."""
        deadline = time.monotonic() + timeout
        want = [p for p, on in ((self.sup_port, self.sup), (self.monit_port, self.monit)) if on]
        while not all(http_ok(p) for p in want) and time.monotonic() < deadline:
            time.sleep(0.5)

    def crash(self, loop_s: float) -> dict[str, float | str]:
        """Kill both copies now (with the crash flag for ``loop_s`` seconds); seconds until
        each answers again (or why not), polled until WAIT_BACK_S after the cause ended."""
        self.ready()
        if loop_s:
            self.flag.touch()
        killed_at = time.monotonic()
        for pid in self.pids().values():
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        ports = {name: port for name, port, on in (("supervisord", self.sup_port, self.sup),
                                                     ("monit", self.monit_port, self.monit))
                 if on}
        result: dict[str, float | str] = {}
        healed = False
        while ports and time.monotonic() - killed_at < WAIT_BACK_S + loop_s:
            if loop_s and not healed and time.monotonic() - killed_at >= loop_s:
                self.flag.unlink(missing_ok=True)
                healed = True
            for name, port in list(ports.items()):
                if (not loop_s or healed) and http_ok(port):
                    result[name] = time.monotonic() - killed_at
                    del ports[name]
            time.sleep(0.25)
        self.flag.unlink(missing_ok=True)
        for name in ports:
            result[name] = (f"not back {WAIT_BACK_S:.0f} s after the cause ended"
                            if loop_s else f"not back within {WAIT_BACK_S:.0f} s")
        return result

    def close(self) -> None:
        for proc in (self.sup, self.monit):
            stop(proc)
        for tail in (getattr(self, "sup_log", None), self.monit_log):
            if tail is not None:
                tail.close()
        # Monit started its copy detached: stop it by the pid it recorded.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.kill(int(self.monit_pidfile.read_text().strip()), signal.SIGKILL)


def monit_first(tail: LogTail | None, since: datetime, until: datetime, pattern: str
                ) -> tuple[float | None, str]:
    if tail is None:
        return None, "not running"
    for at, line in tail.lines:
        if since <= at <= until and re.search(pattern, line):
            return (at - since).total_seconds(), line.split("]", 1)[-1].strip()[:80]
    return None, "no alert"


# --------------------------------------------------------------------------- loop fs


@contextlib.contextmanager
def loop_fs(root: Path, headroom_mb: float) -> Iterator[tuple[Path | None, str]]:
    """A 10 GiB ext4 filesystem on a loop device, filled to ``headroom_mb`` below 85 %."""
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
        yield None, "skipped: making a loop filesystem needs root and mkfs.ext4"
        return
    image, mnt = root / "disk.img", root / "mnt"
    mnt.mkdir()
    mounted = False
    try:
        with image.open("wb") as f:
            f.truncate(10 << 30)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
        mounted = True
        st = os.statvfs(mnt)
        total = st.f_blocks * st.f_frsize
        used = total - st.f_bfree * st.f_frsize
        fill = int(0.85 * total - headroom_mb * 1e6 - used)
        subprocess.run(["fallocate", "-l", str(fill), str(mnt / "ballast")], check=True)
        yield mnt, (f"10 GiB ext4 loop filesystem at {mnt}, filled to "
                    f"{headroom_mb:g} MB below 85 %")
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        image.unlink(missing_ok=True)


# --------------------------------------------------------------------------- measuring


@dataclass
class Result:
    scenario: str
    how: str
    detect_s: float | None = None
    detect_by: str = ""
    culprit_s: float | None = None
    recover_s: float | None = None
    alerts: list[str] = field(default_factory=list)
    false: list[str] = field(default_factory=list)
    #: Host CPU/load alerts raised by other work on the host (see outside_load).
    load: list[str] = field(default_factory=list)
    loadavg: float = field(default_factory=lambda: os.getloadavg()[1])
    #: service, crashloop: the crash to the first restart that succeeded (stored event).
    restart_s: float | None = None
    actions: list[str] = field(default_factory=list)
    llm_calls: int = 0
    others: dict[str, str] = field(default_factory=dict)
    note: str = ""


def measure(srv: Served, scenario: str, report: dict[str, Any], start: datetime,
            end: datetime, window_end: datetime, mount: Path | None) -> Result:
    """Read the stored events of [start, window_end] and judge each alert."""
    run = report["run"]
    names = tuple(run.get("names") or ())
    culprit = Culprit(frozenset(run.get("pids") or ()), names,
                      str(mount) if scenario == "disk" and mount else None,
                      next(iter(run.get("files") or []), None) if scenario == "logflood"
                      else None)
    families = FAMILIES[scenario]
    res = Result(scenario, "")
    first: dict[str, tuple[datetime, dict[str, Any]]] = {}
    about: dict[str, bool] = {}
    named: dict[str, bool] = {}
    resolved: dict[str, datetime] = {}
    #: Resolved only because the demo service was removed: not a recovery.
    gone: dict[str, bool] = {}
    events = srv.activity()
    RAW.append({"scenario": scenario, "events": [(str(a), k, e) for a, k, e in events
                                                  if a >= start - timedelta(seconds=1)]})
    slack = timedelta(seconds=1)
    # One alert (fingerprint) may open, resolve and open again: each opening is counted.
    # The activity lists some events twice (same time, same content): once is enough.
    live: dict[str, str | None] = {}
    seen_ev: set[str] = set()
    for at, kind, ev in events:
        if kind != "alert":
            continue
        ident = json.dumps([str(at), ev], sort_keys=True, default=str)
        if ident in seen_ev:
            continue
        seen_ev.add(ident)
        fp = str(ev.get("fingerprint"))
        if ev.get("state") == "firing" and live.get(fp) is None:
            key = live[fp] = f"{fp}#{sum(k.startswith(fp + '#') for k in first)}"
            opened = parse_at(ev.get("since")) or at
            # Open before the window: not this scenario's.
            first[key] = (at, ev if start - slack <= opened <= window_end else {})
        key = live.get(fp)
        if key is None:
            continue
        if first[key][1]:
            rank = culprit.rank(ev)
            metric = str(ev.get("metric", ""))
            named[key] = named.get(key, False) or rank is not None
            about[key] = about.get(key, False) or rank is not None or any(
                metric.startswith(f) for f in families)
        if ev.get("state") == "resolved":
            live[fp] = None
            if first[key][1]:
                resolved[key] = at
                gone[key] = "no longer declared" in str(ev.get("summary", ""))
    fired = {fp: v for fp, v in first.items() if v[1]}
    for fp, (at, ev) in sorted(fired.items(), key=lambda kv: kv[1][0]):
        text = f"{ev.get('severity')} {ev.get('rule')} {ev.get('metric')} {ev.get('dimension')}"
        if about.get(fp):
            res.alerts.append(text.strip())
        elif outside_load(ev):
            res.load.append(f"{text.strip()} = {ev.get('value')}")
        else:
            res.false.append(text.strip())
        if about.get(fp) and res.detect_s is None:
            # Clocks read at different moments: an alert stamped just before the kill
            # (the server crashes its demo and stamps both) counts as at once.
            res.detect_s = max(0.0, (at - start).total_seconds())
            res.detect_by = f"{ev.get('rule')} {ev.get('dimension') or ev.get('metric')}"
        if named.get(fp) and res.culprit_s is None:
            res.culprit_s = max(0.0, (at - start).total_seconds())
    mine = [fp for fp in fired if about.get(fp)]
    if mine:
        # Recovery: the alert that detected it resolved (as simulate reports it); others of
        # the scenario still open are said.
        primary = min(mine, key=lambda fp: fired[fp][0])
        if gone.get(primary):
            res.note = "not recovered: the alert closed when the demo service was removed"
        elif primary in resolved:
            res.recover_s = max(0.0, (resolved[primary] - end).total_seconds())
        else:
            res.note = "not recovered within the settle time"
        still = [fp for fp in mine if fp not in resolved]
        if still and res.recover_s is not None:
            res.note = "; ".join(f"{fired[fp][1].get('rule')} {fired[fp][1].get('metric')} "
                                 "still open" for fp in still)
    steps: Counter[str] = Counter()
    for at, kind, ev in events:
        target = str(ev.get("target", ""))
        if kind == "remediation" and at >= start - slack and (
                ev.get("fingerprint") in {k.split("#")[0] for k in mine}
                or any(n in target for n in names)
                or any(target.endswith(f":{p}") for p in culprit.pids)) and (
                ev.get("phase") in ("decided", "pending", "finished", "escalated")
                or ev.get("outcome")):
            why = str(ev.get("why") or ev.get("message") or "")
            # "refused: backoff: next try …" -> "backoff"
            refused = (why.removeprefix("refused:").strip().split(":", 1)[0]
                       if ev.get("verdict") == "refused" else "")
            if ev.get("phase") == "finished" and ev.get("outcome") == "ok" and \
                    ev.get("action") == "restart_service" and res.restart_s is None:
                res.restart_s = max(0.0, (at - start).total_seconds())
            steps[f"{ev.get('phase')} {ev.get('action')} {ev.get('verdict') or ''}"
                  f"{' (' + refused + ')' if refused else ''}"
                  f"{' -> ' + str(ev.get('outcome')) if ev.get('outcome') else ''}"] += 1
    res.actions = [f"{n}x {k}" if n > 1 else k for k, n in steps.items()]
    return res


def outside_load(alert: dict[str, Any]) -> bool:
    """A host CPU or load threshold alert: on this shared host other sessions' work raises
    them; they are listed apart from false alerts (their values were measured, not guessed)."""
    return alert.get("rule") in ("threshold", "anomaly") and str(
        alert.get("metric", "")).startswith("cpu.")


def settle(srv: Served, limit_s: float, mount: Path | None) -> None:
    """Until no alert is open (or ``limit_s``): each scenario starts from a quiet host. The
    loop filesystem stays above 80 % after the fill (the disk warning's hysteresis), so its
    threshold alert stays open: that one does not hold the next scenario back."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if not [a for a in srv.get("/api/alerts").get("alerts", [])
                    if a.get("severity") != "info" and not outside_load(a)
                    and (mount is None or a.get("dimension") != str(mount))]:
                return
        time.sleep(2)


# --------------------------------------------------------------------------- the run


def scenario_args(name: str, runaway_s: float, mount: Path | None) -> tuple[list[str], float]:
    """simulate's arguments for a scenario, and how long the run takes."""
    if name == "cpu":
        d = runaway_s + 90
        return ["cpu", "--duration", f"{d:.0f}s", "--settle", "60"], d
    if name == "leak":
        return ["leak", "--duration", "6m", "--settle", "60"], 360
    if name == "disk":
        assert mount is not None
        return ["disk", "--path", str(mount), "--rate", "1M/s", "--duration", "6m",
                "--settle", "60"], 360
    if name == "crashloop":
        return ["crashloop", "--duration", "120s", "--settle", "60"], 120
    if name == "service":
        return ["service", "--duration", "60s", "--settle", "60"], 60
    if name == "logflood":
        # Into /var/log (sensor.log_paths by default), in a directory of the run's own.
        return ["logflood", "--path", "/var/log", "--duration", "90s", "--settle", "60"], 90
    if name == "memory":
        return ["memory", "--size", "2G", "--duration", "60s", "--settle", "30"], 60
    return [name, "--duration", "60s", "--settle", "30"], 60


def run_into(box: dict[str, Any], srv: Served, sim: list[str], timeout: float) -> None:
    """simulate in a thread (service, crashloop: the other tools' copies crash meanwhile)."""
    box["r"] = srv.simulate(*sim, timeout=timeout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quiet-minutes", type=float, default=10.0)
    ap.add_argument("--only", default=",".join(ORDER))
    ap.add_argument("--port", type=int, default=8410)
    ap.add_argument("--disk-headroom-mb", type=float, default=240.0)
    ap.add_argument("--no-others", action="store_true", help="watchkeeper only")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    chosen = [s for s in ORDER if s in args.only.split(",")]
    root = Path(tempfile.mkdtemp(prefix="wk-scen-"))
    results: list[Result] = []
    quiet: Result | None = None
    started = utc()
    llm = OpenAIServer(default=completion(LLM_ANSWER)).start()
    srv: Served | None = None
    glances: Glances | None = None
    copies: DemoCopies | None = None
    try:
        with loop_fs(root, args.disk_headroom_mb) if "disk" in chosen else \
                contextlib.nullcontext((None, "not run")) as (mount, disk_note):
            srv = start_server(root, args.port, llm.base_url)
            log(f"watchkeeper serve on {srv.url}, data in {root}")
            cfg = srv.get("/api/config")["config"]
            runaway_s = float(cfg["analyzer"]["runaway_minutes"]) * 60
            grace = float(cfg["remediation"]["startup_grace_s"])
            if not args.no_others:
                glances = Glances(root)
                copies = DemoCopies(root, mount)
            up = time.monotonic()
            for name in chosen:
                if name == "disk" and mount is None:
                    results.append(Result("disk", "", note=disk_note))
                    continue
                if name in ("service", "crashloop"):
                    # Inside the start-up grace nothing is restarted: start after it.
                    time.sleep(max(0.0, grace + 5 - (time.monotonic() - up)))
                settle(srv, 120, mount)
                sim, length = scenario_args(name, runaway_s, mount)
                log(f"{name}: simulate {' '.join(sim)}")
                calls0 = len(llm.chat_requests)
                t0 = utc()
                others: dict[str, float | str] = {}
                if name in ("service", "crashloop") and copies is not None:
                    box: dict[str, Any] = {}
                    th = threading.Thread(target=run_into, args=(box, srv, sim, length + 400))
                    th.start()
                    time.sleep(3)  # the demo comes up healthy, then is killed
                    others = copies.crash(length * 2 / 3 if name == "crashloop" else 0)
                    th.join()
                    report = box["r"]
                else:
                    report = srv.simulate(*sim, timeout=length + 400)
                run = report["run"]
                start = parse_at(run["started_at"]) or t0
                end = parse_at(run["ended_at"]) or utc()
                res = measure(srv, name, report, start, end, utc(), mount)
                res.how = " ".join(sim)
                res.llm_calls = len(llm.chat_requests) - calls0
                if name in ("service", "crashloop"):
                    for tool, value in others.items():
                        res.others[tool] = (f"back after {value:.1f} s"
                                            if isinstance(value, float) else value)
                    if copies is not None and copies.sup_missing:
                        res.others["supervisord"] = copies.sup_missing
                    if copies is not None and copies.monit_missing:
                        res.others["monit"] = copies.monit_missing
                elif copies is not None or glances is not None:
                    until = utc()
                    pattern = {"cpu": "cpu usage", "memory": "memory usage",
                               "leak": "memory usage", "disk": "wkloop.*space usage"}.get(name)
                    if pattern and copies is not None:
                        if copies.monit_missing:
                            res.others["monit"] = copies.monit_missing
                        else:
                            d, what = monit_first(copies.monit_log, start, until, pattern)
                            res.others["monit"] = (f"{what} after {d:.0f} s" if d is not None
                                                   else what)
                    if glances is not None:
                        if glances.missing:
                            res.others["glances"] = glances.missing
                        else:
                            d, what = glances.first(start, until, tuple(run.get("names") or ()))
                            res.others["glances"] = (f"{what} after {d:.0f} s"
                                                     if d is not None else what)
                results.append(res)
                log(f"{name}: detect {res.detect_s} culprit {res.culprit_s} recover "
                    f"{res.recover_s} alerts {res.alerts} false {res.false} "
                    f"actions {res.actions} llm {res.llm_calls} others {res.others}")
            if args.quiet_minutes > 0:
                settle(srv, 180, mount)
                log(f"quiet run: {args.quiet_minutes:g} min with nothing injected")
                calls0 = len(llm.chat_requests)
                q0 = utc()
                time.sleep(args.quiet_minutes * 60)
                quiet = measure(srv, "service", {"run": {}}, q0, q0, utc(), None)
                quiet.false = quiet.alerts + quiet.false
                quiet.alerts = []
                quiet.llm_calls = len(llm.chat_requests) - calls0
                quiet.scenario = "quiet"
                quiet.how = f"nothing, {args.quiet_minutes:g} min"
                if glances is not None and not glances.missing:
                    d, what = glances.first(q0, utc(), ())
                    quiet.others["glances"] = what if d is None else f"{what} after {d:.0f} s"
                if copies is not None and copies.monit_log is not None:
                    d, what = monit_first(copies.monit_log, q0, utc(), "matches resource limit")
                    quiet.others["monit"] = what if d is None else f"{what} after {d:.0f} s"
                log(f"quiet: false alerts {quiet.false}")
    finally:
        if glances is not None:
            glances.close()
        if copies is not None:
            copies.close()
        if srv is not None:
            stop(srv.proc)
        llm.stop()
        shutil.rmtree(root, ignore_errors=True)
    print_table(results, quiet, started, args)
    if args.json:
        args.json.write_text(json.dumps({"results": [r.__dict__ for r in results],
                                         "quiet": quiet.__dict__ if quiet else None,
                                         "events": RAW},
                                        indent=2, default=str))


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f} s"


def print_table(results: list[Result], quiet: Result | None, started: datetime,
                args: argparse.Namespace) -> None:
    print(f"watchkeeper scenarios, {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores; "
          "default settings except storage.data_dir, logging.dir (temp dirs), api.port "
          f"({args.port}) and llm.base_url (the loopback OpenAI-compatible test server)\n")
    print("| scenario | detect | culprit named | recover | alerts (false) | actions | LLM calls "
          "| Monit / supervisord / Glances, same run |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in [*results, *([quiet] if quiet else [])]:
        if r.note and r.detect_s is None and not r.alerts and r.scenario == "disk" \
                and r.note.startswith("skipped"):
            print(f"| disk | {r.note} | | | | | | |")
            continue
        alerts = "; ".join(r.alerts) or "none"
        false = "; ".join(r.false)
        acts = "; ".join(r.actions) or "none"
        others = "; ".join(f"{k}: {v}" for k, v in r.others.items()) or "-"
        if r.restart_s is not None and r.scenario == "service":
            acts = f"restarted (ok) {r.restart_s:.1f} s after the crash; {acts}"
        false_s = f"{len(r.false)}{': ' + false if false else ''}"
        load = (f"; host CPU/load alerts from other work: {'; '.join(r.load)}" if r.load
                else "")
        recover = " ".join(x for x in (fmt_s(r.recover_s) if r.recover_s is not None
                                       else "", f"({r.note})" if r.note else "") if x) or "-"
        print(f"| {r.scenario} | {fmt_s(r.detect_s)} {r.detect_by} | {fmt_s(r.culprit_s)} | "
              f"{recover} | {len(r.alerts)} ({false_s}) "
              f"{alerts if r.alerts else ''}{load} (load avg {r.loadavg:.1f}) | "
              f"{acts} | {r.llm_calls} | {others} |")


if __name__ == "__main__":
    main()
