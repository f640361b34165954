"""stop_process: SIGTERM a process named by pid *and* start time, SIGKILL it after a grace period.

A pid alone is not an identity: by the time an action runs, the process an alert was about
may have exited and its pid been reused. The target must therefore carry the create_time the
alert saw; a different create_time is a refusal, and psutil's own signal methods check the
identity once more right before each signal.

Which process may be stopped at all (a process, not a thread; never init, watchkeeper, its
ancestors, kernel threads or a protected name; only permitted users; the allow-list) is
decided by ``process_guard.check_stop``: at request time (``pin``, ``refusal``), in the dry
run and again right before the first signal.
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
from watchkeeper.remediation.process_guard import (
    CREATE_TIME_TOLERANCE_S,
    Candidate,
    GuardRules,
    TargetRefused,
    check_stop,
    protection,
)
from watchkeeper.remediation.registry import REGISTRY, ActionRefused, StopProcessParams
from watchkeeper.safetext import MAX_NAME, printable

from .base import ActionContext, ActionResult, BaseAction, Check, Done, Plan, Refused, human_bytes

logger = logging.getLogger(__name__)



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


def _rules(ctx: ActionContext) -> GuardRules:
    return GuardRules.of(ctx.settings, own_pid=ctx.own_pid, own_uid=ctx.own_uid)


def inspect(ctx: ActionContext, params: StopProcessParams) -> Candidate | None:
    """The one decision on a stop_process target (``process_guard.check_stop``), as request
    time, preview and execute all take it; None if the process is gone."""
    return check_stop(ctx.psutil, ctx.proc_status, params.pid, params.create_time,
                      _rules(ctx))


def pin(ctx: ActionContext, params: StopProcessParams) -> StopProcessParams:
    """``params`` bound to the live process when it is asked for, by the create_time looked
    up now: an approval may come much later, when the pid may be another process's. Raise
    ActionRefused when there is no such process or the given create_time is not its own,
    and TargetRefused (an ActionRefused) when the guard would refuse it at any later stage."""
    if params.create_time is None:
        why = protection(ctx.psutil, ctx.proc_status, params.pid, _rules(ctx))
        if why is not None:
            raise TargetRefused(why)
        try:
            started = float(ctx.psutil.Process(params.pid).create_time())
        except ctx.psutil.NoSuchProcess:
            raise ActionRefused(f"no process with pid {params.pid}") from None
        except ctx.psutil.AccessDenied:
            raise ActionRefused(f"cannot read the start time of pid {params.pid}") from None
        params = params.model_copy(update={"create_time": started})
    found = inspect(ctx, params)
    if found is None:
        raise ActionRefused(f"no process with pid {params.pid}")
    return params.model_copy(update={"create_time": found.create_time})


def refusal(ctx: ActionContext, params: StopProcessParams) -> str | None:
    """Why a request to stop this process can never succeed now (None: it may)."""
    try:
        if inspect(ctx, params) is None:
            return f"no process with pid {params.pid} (it is gone)"
    except ActionRefused as exc:
        return str(exc)
    return None


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
    try:
        found = inspect(ctx, params)
    except ActionRefused as exc:
        raise Refused(str(exc)) from None
    if found is None or _is_gone(ps, found.proc):
        return None
    proc = found.proc
    with proc.oneshot():
        mem = _read(ps, proc.memory_info, None)
        argv = _read(ps, proc.cmdline, [])
    return _Target(proc=proc, pid=found.pid, name=printable(found.name, MAX_NAME),
                   create_time=found.create_time,
                   rss=None if mem is None else int(mem.rss),
                   user=None if found.user is None else printable(found.user, MAX_NAME),
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
