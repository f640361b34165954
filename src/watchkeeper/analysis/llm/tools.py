"""Read-only tools the model may call while it investigates one incident.

Each tool reads (the latest snapshot, psutil, the metric store, recent alerts, the tail of a
configured log file), never writes, and returns plain JSON data with the evidence IDs it
shows. Everything a tool returns is untrusted host data: the investigator passes it through
``Privacy.clean_data`` before it is sent. Slow sources run in worker threads with a time
limit, so a tool can never stall the event loop or the investigation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from watchkeeper.aio import wait_for
from watchkeeper.events import Alert, MetricSnapshot, ProcessInfo, utcnow
from watchkeeper.redact import redact_cmdline, redact_text
from watchkeeper.remediation.actions import safepath
from watchkeeper.remediation.actions.base import Refused
from watchkeeper.safetext import MAX_NAME, printable
from watchkeeper.series import METRICS
from watchkeeper.store.base import SeriesPoint

from .client import ToolSpec
from .schema import event_id, log_id, metric_id, proc_id, stamp

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The psutil module or a stand-in with ``Process(pid)`` and NoSuchProcess/AccessDenied.
PsutilLike = Any


class HistoryFn(Protocol):
    """A metric's history, like ``Store.series`` (so ``store.series`` can be passed as is)."""

    def __call__(self, metric: str, start: datetime, end: datetime, *, dimension: str = "",
                 host: str | None = None) -> Sequence[SeriesPoint]: ...


#: The most recent alerts, newest first, at most ``limit`` of them.
AlertsFn = Callable[[int], Sequence[Alert]]

_LIVE_ATTRS = ("pid", "ppid", "name", "username", "status", "create_time", "num_threads",
               "memory_info", "cmdline")


@dataclass(frozen=True)
class ToolResult:
    """What a tool returns: JSON-ready data and the evidence IDs it contains."""

    data: Mapping[str, Any]
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class ToolContext:
    """What the tools may look at for one incident."""

    snapshot: MetricSnapshot | None
    log_files: tuple[Path, ...] = ()
    now: datetime = field(default_factory=utcnow)
    #: The incident's host, for a store that holds a fleet's history (None: the only one).
    host: str | None = None
    #: Whether that host is the one this process runs on (live psutil reads it).
    local: bool = True


class ToolError(Exception):
    """A tool could not answer; the message goes back to the model."""


def process_entry(p: ProcessInfo) -> dict[str, Any]:
    """A process as the model sees it (command line redacted again: it may be from a fake)."""
    return {
        "id": proc_id(p.pid), "pid": p.pid, "name": p.name, "user": p.user,
        "cpu_percent": p.cpu_percent, "memory_percent": _round(p.memory_percent),
        "rss": p.rss, "age_s": _round(p.age_s), "status": p.status,
        "create_time": p.create_time, "cmdline": redact_cmdline(p.cmdline),
    }


def _round(v: float | None, digits: int = 2) -> float | None:
    return None if v is None else round(v, digits)


def snapshot_processes(snapshot: MetricSnapshot | None) -> dict[int, ProcessInfo]:
    """The processes a snapshot lists (top by CPU and by memory), by pid."""
    if snapshot is None:
        return {}
    procs: dict[int, ProcessInfo] = {}
    for p in (*snapshot.processes.top_cpu, *snapshot.processes.top_memory):
        procs.setdefault(p.pid, p)
    return procs


class Toolbox:
    """The investigation tools; sources are injected, and a tool without one is not offered."""

    def __init__(
        self,
        *,
        psutil: PsutilLike | None = None,
        history: HistoryFn | None = None,
        recent_alerts: AlertsFn | None = None,
        call_timeout_s: float = 5.0,
        max_points: int = 30,
        max_log_lines: int = 100,
        max_log_bytes: int = 64 * 1024,
        max_line_chars: int = 400,
    ) -> None:
        self._ps = psutil
        self._history = history
        self._alerts = recent_alerts
        self._timeout = call_timeout_s
        self._max_points = max_points
        self._max_log_lines = max_log_lines
        self._max_log_bytes = max_log_bytes
        self._max_line_chars = max_line_chars

    # ------------------------------------------------------------------ declarations

    def specs(self, log_files: Sequence[Path] = (), *, local: bool = True) -> list[ToolSpec]:
        """OpenAI tool declarations for the tools that have a source."""
        specs = [_spec(
            "get_process",
            "Details of one process by pid (from the latest snapshot, and live if possible)."
            if local else "Details of one process by pid, from the host's latest snapshot.",
            {"pid": {"type": "integer", "minimum": 0}}, ["pid"],
        )]
        if self._history is not None:
            specs.append(_spec(
                "get_metric_history",
                "History of one metric (avg/min/max per point) over the last minutes.",
                {"metric": {"type": "string", "enum": list(METRICS)},
                 "dimension": {"type": "string",
                               "description": "mount, interface or device; empty for host-wide"},
                 "minutes": {"type": "integer", "minimum": 1, "maximum": 1440}},
                ["metric"],
            ))
        if self._alerts is not None:
            specs.append(_spec(
                "get_recent_alerts", "The most recent alerts on this host, newest first.",
                {"limit": {"type": "integer", "minimum": 1, "maximum": 20}}, [],
            ))
        if log_files:
            specs.append(_spec(
                "tail_log",
                "The last lines of a configured log file, by its index in log_files.",
                {"file": {"type": "integer", "minimum": 0, "maximum": len(log_files) - 1},
                 "lines": {"type": "integer", "minimum": 1, "maximum": self._max_log_lines}},
                ["file"],
            ))
        return specs

    # ------------------------------------------------------------------ dispatch

    async def call(self, name: str, arguments: str | Mapping[str, Any], ctx: ToolContext
                   ) -> ToolResult:
        """Run one tool; never raises: problems come back as ``{"error": ...}``."""
        try:
            args = json.loads(arguments or "{}") if isinstance(arguments, str) else arguments
            if not isinstance(args, Mapping):
                raise ToolError("arguments must be a JSON object")
            if name == "get_process":
                return await self._get_process(_int(args, "pid", 0, 2**31), ctx)
            if name == "get_metric_history" and self._history is not None:
                return await self._get_history(args, ctx)
            if name == "get_recent_alerts" and self._alerts is not None:
                return await self._get_alerts(_int(args, "limit", 1, 20, default=5), ctx)
            if name == "tail_log" and ctx.log_files:
                return await self._tail_log(args, ctx)
            raise ToolError(f"unknown tool {name!r}")
        except ToolError as exc:
            return ToolResult({"error": str(exc)})
        except json.JSONDecodeError:
            return ToolResult({"error": "arguments are not valid JSON"})
        except asyncio.TimeoutError:
            log.warning("LLM tool %s timed out after %.1f s", name, self._timeout)
            return ToolResult({"error": f"{name} timed out"})
        except Exception as exc:
            # A tool failing is data for the model, not a reason to abandon the incident.
            log.warning("LLM tool %s failed: %s", name, type(exc).__name__, exc_info=True)
            return ToolResult({"error": f"{name} failed: {type(exc).__name__}"})

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        # The worker thread cannot be cancelled; on timeout it is abandoned, not awaited.
        return await wait_for(asyncio.to_thread(fn), self._timeout)

    # ------------------------------------------------------------------ tools

    async def _get_process(self, pid: int, ctx: ToolContext) -> ToolResult:
        known = snapshot_processes(ctx.snapshot).get(pid)
        data: dict[str, Any] = {"pid": pid, "id": proc_id(pid)}
        if known is not None:
            data["snapshot"] = process_entry(known)
        if self._ps is not None and ctx.local:
            data["live"] = await self._in_thread(lambda: self._read_live(pid))
            live_ct = data["live"].get("create_time")
            if known is not None and live_ct and known.create_time \
                    and abs(live_ct - known.create_time) > 1:
                data["note"] = "the live process is not the one in the snapshot (pid reused)"
        if known is None and "live" not in data:
            raise ToolError(f"no process {pid} in the latest snapshot")
        if data.get("live", {}).get("error") and known is None:
            raise ToolError(str(data["live"]["error"]))
        return ToolResult(data, (proc_id(pid),))

    def _read_live(self, pid: int) -> dict[str, Any]:
        ps: Any = self._ps
        try:
            info: dict[str, Any] = ps.Process(pid).as_dict(attrs=list(_LIVE_ATTRS), ad_value=None)
        except ps.NoSuchProcess:
            return {"error": f"no process {pid}"}
        except ps.AccessDenied:
            return {"error": f"access denied to process {pid}"}
        mem = info.pop("memory_info", None)
        info["rss"] = getattr(mem, "rss", None)
        argv = info.pop("cmdline", None)
        info["cmdline"] = redact_cmdline(argv) if argv else ""
        user = info.pop("username", None)
        info["user"] = None if user is None else printable(str(user), MAX_NAME)
        if info.get("name") is not None:
            info["name"] = printable(str(info["name"]), MAX_NAME)
        return info

    async def _get_history(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        assert self._history is not None
        metric = str(args.get("metric", ""))
        if metric not in METRICS:
            raise ToolError(f"unknown metric {metric!r}")
        dimension = str(args.get("dimension") or "")
        minutes = _int(args, "minutes", 1, 1440, default=60)
        end = ctx.now
        start = end - timedelta(minutes=minutes)
        history = self._history
        host = ctx.host
        points = await self._in_thread(
            lambda: list(history(metric, start, end, dimension=dimension)) if host is None
            else list(history(metric, start, end, dimension=dimension, host=host)))
        if len(points) > self._max_points:
            # Evenly spaced, always keeping the newest point.
            step = len(points) / self._max_points
            picked = [points[int(i * step)] for i in range(self._max_points - 1)]
            points = [*picked, points[-1]]
        ids = [metric_id(metric, dimension, p.at) for p in points]
        rows = [{"id": i, "at": stamp(p.at), "avg": round(p.avg, 3), "min": round(p.min, 3),
                 "max": round(p.max, 3)} for i, p in zip(ids, points, strict=True)]
        data = {"metric": metric, "dimension": dimension, "minutes": minutes, "points": rows}
        return ToolResult(data, tuple(ids))

    async def _get_alerts(self, limit: int, ctx: ToolContext) -> ToolResult:
        assert self._alerts is not None
        fetch = self._alerts
        if ctx.host is None:
            alerts = list(await self._in_thread(lambda: list(fetch(limit))))[:limit]
        else:  # a fleet's: this host's only, never another host's incidents
            alerts = [a for a in await self._in_thread(lambda: list(fetch(500)))
                      if a.host == ctx.host][:limit]
        ids = [event_id(a.id) for a in alerts]
        rows = [{
            "id": event_id(a.id), "rule": a.rule, "metric": a.metric, "dimension": a.dimension,
            "severity": a.severity, "state": a.state, "value": a.value,
            "threshold": a.threshold, "since": stamp(a.since),
            "summary": redact_text(a.summary)[:300],  # redacted before it is cut
        } for a in alerts]
        return ToolResult({"alerts": rows}, tuple(ids))

    async def _tail_log(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        # Only by index into llm.log_files: the model never names a path, so it cannot
        # read anything that was not configured (no traversal, no symlink games).
        index = _int(args, "file", 0, len(ctx.log_files) - 1)
        count = _int(args, "lines", 1, self._max_log_lines, default=min(50, self._max_log_lines))
        path = ctx.log_files[index]
        lines = await self._in_thread(lambda: self._read_tail(path, count))
        rows = [{"id": log_id(index, offset), "line": text} for offset, text in lines]
        data = {"file": index, "name": path.name, "lines": rows}
        return ToolResult(data, tuple(r["id"] for r in rows))

    def _read_tail(self, path: Path, count: int) -> list[tuple[int, str]]:
        try:
            # Not open(path): a log (or a directory above it) swapped for a symlink would
            # send /etc/shadow to the model. Every component is opened O_NOFOLLOW.
            with safepath.open_file(str(path)) as fd:
                size = os.fstat(fd).st_size
                start = max(0, size - self._max_log_bytes)
                blob = os.pread(fd, self._max_log_bytes, start)
        except Refused:
            raise ToolError(f"cannot read log file {path.name}: it, or a directory on its "
                            "path, is a symlink, missing or not a regular file "
                            "(never followed)") from None
        except OSError as exc:
            raise ToolError(f"cannot read log file {path.name}: {exc.strerror}") from None
        out: list[tuple[int, str]] = []
        offset = start
        in_key = False
        for raw in blob.split(b"\n"):
            line_start = offset
            offset += len(raw) + 1
            if line_start == start and start > 0:
                continue  # the first line is cut in the middle
            if not raw.strip():
                continue
            text = raw.decode("utf-8", "replace")
            # A PEM key spans lines, and the text rules see one line at a time: blank out
            # everything from BEGIN to END (or, for a block cut at the window's start, the
            # key-like lines before an END).
            if _PEM_BEGIN.search(text):
                in_key = True
            elif _PEM_END.search(text) and not in_key:
                i = len(out) - 1
                while i >= 0 and _KEYISH_LINE.fullmatch(out[i][1]):
                    out[i] = (out[i][0], _KEY_REDACTED)
                    i -= 1
            ends = bool(_PEM_END.search(text))
            if in_key or ends:
                in_key = in_key and not ends
                out.append((line_start, _KEY_REDACTED))
                continue
            # Redacted before it is cut, so a secret split at the cap cannot slip through.
            out.append((line_start, redact_cmdline(text, self._max_line_chars)))
        return out[-count:]


_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
_KEYISH_LINE = re.compile(r"[A-Za-z0-9+/=]{16,}")  # a line of base64 key material
_KEY_REDACTED = "[private key material redacted]"


def _spec(name: str, description: str, properties: dict[str, Any], required: list[str]
          ) -> ToolSpec:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required,
                       "additionalProperties": False}}}


def _int(args: Mapping[str, Any], key: str, lo: int, hi: int, default: int | None = None
         ) -> int:
    value = args.get(key, default)
    if isinstance(value, bool) or value is None:
        raise ToolError(f"{key} must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ToolError(f"{key} must be an integer") from None
    if not lo <= number <= hi:
        raise ToolError(f"{key} must be between {lo} and {hi}")
    return number
