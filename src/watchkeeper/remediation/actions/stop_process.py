"""stop_process: SIGTERM a process named by pid *and* start time, SIGKILL it after a grace period.

A pid alone is not an identity: by the time an action runs, the process an alert was about
may have exited and its pid been reused. The target must therefore carry the create_time the
alert saw; a different create_time is a refusal, and psutil's own signal methods check the
identity once more right before each signal.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any

from pydantic import JsonValue

from watchkeeper.collectors.common import PsutilLike
from watchkeeper.redact import redact_cmdline
from watchkeeper.remediation.registry import REGISTRY, ActionRefused, StopProcessParams
from watchkeeper.safetext import MAX_NAME, printable

from .base import ActionContext, ActionResult, BaseAction, Check, Done, Plan, Refused, human_bytes

logger = logging.getLogger(__name__)

#: Start times are compared with this slack: they travel as JSON floats, and the kernel
#: counts them in clock ticks (10 ms), so a smaller difference cannot be another process.
CREATE_TIME_TOLERANCE_S = 0.001


@dataclass(frozen=True)
class _Target:
    proc: Any
    pid: int
    name: str
    create_time: float
    rss: int | None
    user: str | None
    cmdline: str

    def details(self) -> dict[str, JsonValue]:
        return {"pid": self.pid, "name": self.name, "create_time": self.create_time,
                "rss": self.rss, "user": self.user, "cmdline": self.cmdline}

    def label(self) -> str:
        rss = f", {human_bytes(self.rss)} RSS" if self.rss is not None else ""
        return f"pid {self.pid} {self.name}{rss}"


def pin(ps: PsutilLike, params: StopProcessParams) -> StopProcessParams:
    """``params`` bound to the live process when it is asked for, by the create_time looked
    up now: an approval may come much later, when the pid may be another process's. Raise
    ActionRefused when there is no such process or the given create_time is not its own."""
    try:
        started = float(ps.Process(params.pid).create_time())
    except ps.NoSuchProcess:
        raise ActionRefused(f"no process with pid {params.pid}") from None
    except ps.AccessDenied:
        raise ActionRefused(f"cannot read the start time of pid {params.pid}") from None
    if params.create_time is not None and not math.isclose(
            started, params.create_time, rel_tol=0.0, abs_tol=CREATE_TIME_TOLERANCE_S):
        raise ActionRefused(f"pid {params.pid} is another process now (started at "
                            f"{started:.2f}, not {params.create_time:.2f}): the pid was reused")
    return params.model_copy(update={"create_time": started})


def _protected(ctx: ActionContext) -> dict[int, str]:
    """watchkeeper and its ancestors (killing a parent may take us or our session down)."""
    ps = ctx.psutil
    protected = {ctx.own_pid: "watchkeeper itself"}
    try:
        for parent in ps.Process(ctx.own_pid).parents():
            protected.setdefault(parent.pid, "an ancestor of watchkeeper")
    except (ps.NoSuchProcess, ps.AccessDenied):
        logger.debug("could not list the parents of pid %d", ctx.own_pid)
    return protected


def _is_gone(ps: PsutilLike, proc: Any) -> bool:
    """Exited, reaped or not: a zombie holds no memory and cannot be signalled any further."""
    try:
        # is_running() also compares the create_time, so a reused pid counts as gone.
        return not proc.is_running() or proc.status() == ps.STATUS_ZOMBIE
    except ps.NoSuchProcess:
        return True


def _find(ctx: ActionContext, params: StopProcessParams) -> _Target | None:
    """The live target, None if it is gone; raise Refused for anything that must not be hit."""
    ps = ctx.psutil
    pid = params.pid
    if pid <= 1:
        raise Refused(f"pid {pid} is never a target")
    why = _protected(ctx).get(pid)
    if why is not None:
        raise Refused(f"pid {pid} is {why}; refusing to stop it")
    if params.create_time is None:
        raise Refused(f"pid {pid} needs its create_time: a pid alone may have been reused")
    try:
        proc = ps.Process(pid)
        started = float(proc.create_time())
    except ps.NoSuchProcess:
        return None
    if not math.isclose(started, params.create_time, rel_tol=0.0,
                        abs_tol=CREATE_TIME_TOLERANCE_S):
        raise Refused(f"pid {pid} now belongs to another process (started at {started:.2f}, "
                      f"not {params.create_time:.2f}): the pid was reused; refusing")
    if _is_gone(ps, proc):
        return None
    with proc.oneshot():
        name = _read(ps, proc.name, "")
        mem = _read(ps, proc.memory_info, None)
        user = _read(ps, proc.username, None)
        argv = _read(ps, proc.cmdline, [])
    return _Target(proc=proc, pid=pid, name=printable(str(name), MAX_NAME),
                   create_time=started, rss=None if mem is None else int(mem.rss),
                   user=None if user is None else printable(str(user), MAX_NAME),
                   cmdline=redact_cmdline(argv) if argv else "")


def _read(ps: PsutilLike, getter: Any, default: Any) -> Any:
    try:
        return getter()
    except ps.AccessDenied:
        return default
    except ps.NoSuchProcess:
        # It exited while we looked; the callers check _is_gone again before signalling.
        return default


class StopProcess(BaseAction[StopProcessParams]):
    """SIGTERM, then SIGKILL after ``grace_s``; the process must match pid and create_time."""

    spec = REGISTRY["stop_process"]

    async def _preview(self, params: StopProcessParams, ctx: ActionContext) -> Plan:
        target = await asyncio.to_thread(_find, ctx, params)
        if target is None:
            return Plan("nothing_to_do", f"pid {params.pid} is already gone; nothing to stop")
        return Plan("would_run",
                    f"would stop {target.label()}: SIGTERM, then SIGKILL after "
                    f"{params.grace_s:g} s",
                    items=(f"{target.pid} {target.cmdline or target.name}",),
                    details=target.details())

    async def _execute(self, params: StopProcessParams, ctx: ActionContext) -> Done:
        ps = ctx.psutil
        target = await asyncio.to_thread(_find, ctx, params)
        if target is None:
            return Done("ok", f"pid {params.pid} was already gone; nothing to stop",
                        details={"pid": params.pid, "already_gone": True})
        details = target.details()
        t0 = ctx.clock()
        signal_name = "SIGTERM"
        try:
            # psutil checks the process identity (pid + create_time) before signalling.
            await asyncio.to_thread(target.proc.terminate)
            gone = await self._wait_gone(ctx, target.proc, params.grace_s)
            if not gone:
                signal_name = "SIGKILL"
                logger.warning("%s ignored SIGTERM for %.1f s; sending SIGKILL",
                               target.label(), params.grace_s)
                await asyncio.to_thread(target.proc.kill)
                gone = await self._wait_gone(ctx, target.proc, ctx.kill_wait_s)
        except ps.NoSuchProcess:
            gone = True
        except ps.AccessDenied:
            return Done("failed", f"not permitted to signal {target.label()} "
                                  f"(user {target.user}); nothing was stopped", details=details)
        waited = ctx.clock() - t0
        details = {**details, "signal": signal_name, "waited_s": round(waited, 3)}
        if gone:
            return Done("ok", f"stopped {target.label()} with {signal_name} after {waited:.1f} s",
                        details=details)
        return Done("failed", f"{target.label()} is still there {ctx.kill_wait_s:g} s after "
                              "SIGKILL (uninterruptible sleep?)", details=details)

    @staticmethod
    async def _wait_gone(ctx: ActionContext, proc: Any, timeout_s: float) -> bool:
        deadline = ctx.clock() + timeout_s
        while True:
            if await asyncio.to_thread(_is_gone, ctx.psutil, proc):
                return True
            if ctx.clock() >= deadline:
                return False
            await asyncio.sleep(ctx.poll_interval_s)

    async def _verify(self, params: StopProcessParams, ctx: ActionContext,
                      result: ActionResult) -> Check:
        gone = await asyncio.to_thread(_gone_by_identity, ctx.psutil, params)
        if gone:
            return Check(True, f"pid {params.pid} is gone", {"pid": params.pid})
        return Check(False, f"pid {params.pid} is still running", {"pid": params.pid})


def _gone_by_identity(ps: PsutilLike, params: StopProcessParams) -> bool:
    try:
        proc = ps.Process(params.pid)
        if params.create_time is not None and not math.isclose(
                float(proc.create_time()), params.create_time, rel_tol=0.0,
                abs_tol=CREATE_TIME_TOLERANCE_S):
            return True  # the pid now belongs to someone else
    except ps.NoSuchProcess:
        return True
    return _is_gone(ps, proc)
