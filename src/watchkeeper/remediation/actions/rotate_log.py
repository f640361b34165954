"""rotate_log: truncate (keep: 0) or copy-truncate-rotate a configured log file.

Copy-then-truncate rather than rename, because the writer is not ours to signal: it keeps
its file descriptor, and with O_APPEND its next write lands at the new end of the emptied
file. The price, as with logrotate's copytruncate, is that lines written between the end of
the copy and the truncation are lost; the copy runs to end-of-file right before truncating
to keep that window short. The path is checked when the action is asked for (``check``:
absolute, no ``..``, and lexically one of ``remediation.log_files``), so an approval for a
file that is not configured is never queued. The file must be a regular file and no
component of its path a symlink: its directory is reached from ``/`` one component at a
time with O_NOFOLLOW (safepath) and the log opened O_NOFOLLOW in it, so neither a log
swapped for a link to /etc/shadow nor a ``logs/`` directory swapped for a link elsewhere is
ever truncated; every step (stat, delete, rename, copy, truncate) happens relative to the
log directory's descriptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import JsonValue

from watchkeeper.config import LogFileRule, RemediationConfig
from watchkeeper.remediation.registry import REGISTRY, RotateLogParams

from . import safepath
from .base import ActionContext, ActionResult, BaseAction, Check, Done, Plan, Refused, human_bytes

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _configured(path: str) -> str:
    """A configured log path as the normalised absolute path it names (no look-up: what is
    compared is what is shown and what is opened, component by component)."""
    return "/" + os.path.normpath(os.path.abspath(path)).lstrip("/")


def rule_for(settings: RemediationConfig, raw: str) -> tuple[str, LogFileRule]:
    """The configured rule for ``raw`` and its normalised path, or Refused."""
    configured = ", ".join(str(r.path) for r in settings.log_files) or "none are configured"
    try:
        wanted = safepath.lexical(raw, what="log path")
    except Refused as exc:
        raise Refused(f"{exc}; configured log files: {configured}") from None
    for rule in settings.log_files:
        if _configured(str(rule.path)) == wanted:
            return wanted, rule
    raise Refused(f"{raw} is not a configured log file ({configured}); refusing")


@dataclass(frozen=True)
class _Steps:
    """The rotation as names relative to the log's directory."""

    name: str
    keep: int

    def rotated(self, i: int) -> str:
        return f"{self.name}.{i}"


@contextlib.contextmanager
def _open_log(path: str) -> Iterator[tuple[int, int, os.stat_result]]:
    """(directory fd, log fd, stat): the directory reached from ``/`` without following a
    symlink, the log opened O_NOFOLLOW in it and checked to be a regular file."""
    def what(prefix: str) -> str:
        return f"directory {prefix} (on the way to {path})"

    with safepath.open_in_dir(path, os.O_RDWR, what, "refusing to rotate it") as found:
        yield found


def _look(path: str) -> tuple[os.stat_result, bool]:
    """The log's stat and whether ``<log>.1`` exists, looked at through the walked directory."""
    with safepath.open_dir(os.path.dirname(path),
                           lambda p: f"directory {p} (on the way to {path})") as dfd:
        name = os.path.basename(path)
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        return st, _exists(f"{name}.1", dfd) is not None


def _exists(name: str, dfd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _describe(path: str, size: int, rule: LogFileRule, dfd: int) -> tuple[str, list[str]]:
    steps = _Steps(os.path.basename(path), rule.keep)
    limit = f"{human_bytes(size)}; limit {human_bytes(rule.max_bytes)}"
    if rule.keep == 0:
        return f"truncate {path} in place ({limit}; keep: 0)", [f"truncate {steps.name}"]
    plan: list[str] = []
    if _exists(steps.rotated(rule.keep), dfd) is not None:
        plan.append(f"delete {steps.rotated(rule.keep)}")
    for i in range(rule.keep - 1, 0, -1):
        if _exists(steps.rotated(i), dfd) is not None:
            plan.append(f"rename {steps.rotated(i)} -> {steps.rotated(i + 1)}")
    plan += [f"copy {steps.name} -> {steps.rotated(1)}", f"truncate {steps.name}"]
    return f"rotate {path} ({limit}; keep {rule.keep}): {'; '.join(plan)}", plan


def _preview_sync(path: str, rule: LogFileRule) -> tuple[str, list[str], int]:
    with _open_log(path) as (dfd, _fd, st):
        text, plan = _describe(path, st.st_size, rule, dfd)
    return text, plan, st.st_size


def _rotate_sync(path: str, rule: LogFileRule) -> tuple[int, dict[str, JsonValue]]:
    with _open_log(path) as (dfd, fd, st):
        steps = _Steps(os.path.basename(path), rule.keep)
        freed = 0
        done: list[str] = []
        copied = 0
        if rule.keep > 0:
            oldest = _exists(steps.rotated(rule.keep), dfd)
            if oldest is not None:
                # unlink never follows a symlink: at worst a planted link is removed.
                os.unlink(steps.rotated(rule.keep), dir_fd=dfd)
                freed += oldest.st_size if stat.S_ISREG(oldest.st_mode) else 0
                done.append(f"deleted {steps.rotated(rule.keep)}")
            for i in range(rule.keep - 1, 0, -1):
                if _exists(steps.rotated(i), dfd) is not None:
                    os.rename(steps.rotated(i), steps.rotated(i + 1), src_dir_fd=dfd,
                              dst_dir_fd=dfd)
                    done.append(f"renamed {steps.rotated(i)} -> {steps.rotated(i + 1)}")
            copied = _copy(fd, steps.rotated(1), dfd, st)
            done.append(f"copied {human_bytes(copied)} to {steps.rotated(1)}")
        size_before = os.fstat(fd).st_size
        os.ftruncate(fd, 0)
        done.append(f"truncated {steps.name}")
        if rule.keep == 0:
            freed += size_before
        return size_before, {"path": path, "keep": rule.keep, "size_before": size_before,
                             "bytes_copied": copied, "bytes_freed": freed, "steps": list(done)}


def _copy(src: int, name: str, dfd: int, st: os.stat_result) -> int:
    """Copy ``src`` from its start to its current end into a new file ``name``."""
    # O_EXCL|O_NOFOLLOW: if something appeared under the name since we renamed it away,
    # fail rather than write through it.
    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC,
                  stat.S_IMODE(st.st_mode), dir_fd=dfd)
    try:
        with contextlib.suppress(PermissionError):
            os.fchown(out, st.st_uid, st.st_gid)  # only root may give a file away
        copied = 0
        while chunk := os.pread(src, _CHUNK, copied):
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view):]
            copied += len(chunk)
        return copied
    finally:
        os.close(out)


class RotateLog(BaseAction[RotateLogParams]):
    """Truncate (keep: 0) or rotate a configured log file by copy-truncate."""

    spec = REGISTRY["rotate_log"]

    def _check(self, params: RotateLogParams, ctx: ActionContext) -> RotateLogParams:
        # One of remediation.log_files, named the way the configuration names it.
        return params.model_copy(update={"path": rule_for(ctx.settings, params.path)[0]})

    async def _preview(self, params: RotateLogParams, ctx: ActionContext) -> Plan:
        path, rule = rule_for(ctx.settings, params.path)
        text, plan, size = await asyncio.to_thread(_preview_sync, path, rule)
        return Plan("would_run", f"would {text}", items=tuple(plan),
                    details={"path": path, "size": size, "max_bytes": rule.max_bytes,
                             "keep": rule.keep})

    async def _execute(self, params: RotateLogParams, ctx: ActionContext) -> Done:
        path, rule = rule_for(ctx.settings, params.path)
        size, details = await asyncio.to_thread(_rotate_sync, path, rule)
        verb = "truncated" if rule.keep == 0 else f"rotated (keep {rule.keep})"
        return Done("ok", f"{verb} {path}, was {human_bytes(size)}", details=details)

    async def _verify(self, params: RotateLogParams, ctx: ActionContext,
                      result: ActionResult) -> Check:
        path, rule = rule_for(ctx.settings, params.path)
        st, first_exists = await asyncio.to_thread(_look, path)
        details: dict[str, JsonValue] = {"path": path, "size": st.st_size,
                                         "max_bytes": rule.max_bytes}
        if st.st_size > rule.max_bytes:
            return Check(False, f"{path} is {human_bytes(st.st_size)} again, over its "
                                f"{human_bytes(rule.max_bytes)} limit", details)
        if rule.keep > 0:
            first = f"{path}.1"
            if not first_exists:
                return Check(False, f"{first} is missing after the rotation", details)
        return Check(True, f"{path} is {human_bytes(st.st_size)}, under its "
                           f"{human_bytes(rule.max_bytes)} limit", details)
