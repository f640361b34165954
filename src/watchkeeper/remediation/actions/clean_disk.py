"""clean_disk: delete old files matching patterns under a configured root, and nothing else.

Safety rules, each enforced here and not left to the caller:
- the directory named must be absolute, contain no ``..`` and lie in a configured
  CleanupRoot; the parameters may only narrow what the root allows (patterns must match the
  root's too, ages are at least the root's, the size cap at most the root's);
- the parameters are checked and normalised when the action is asked for (``check``), so a
  directory outside every root is refused before any approval is queued, and an approval
  shows the directory that would be cleaned;
- symlinks are never followed and never deleted: every component of the path, from ``/``
  through the root to every directory walked, is opened with O_NOFOLLOW relative to its
  parent's descriptor (safepath), so a directory swapped for a symlink, even above the root
  and even mid-walk, fails to open instead of leading outside;
- only regular files with a single link go (unlinking one of several names frees nothing,
  and the other name may be anywhere); the walk stays on the root's filesystem;
- right before each unlink the name is looked at again (lstat in the pinned directory) and
  must still be the same, old enough, regular file.
Deleting is blocking I/O on a possibly huge tree, so all of it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from pydantic import JsonValue

from watchkeeper.config import CleanupRoot, RemediationConfig
from watchkeeper.remediation.registry import REGISTRY, CleanDiskParams

from . import safepath
from .base import (
    MAX_ITEMS,
    ActionContext,
    ActionResult,
    BaseAction,
    Check,
    Done,
    Plan,
    Refused,
    human_bytes,
)

logger = logging.getLogger(__name__)

_DIR_FLAGS = safepath.DIR_FLAGS
#: Deeper trees are not walked further (each level holds one open descriptor).
MAX_DEPTH = 64


@dataclass(frozen=True)
class Rules:
    """What may go: the configured root, the directory to clean and the effective limits."""

    root: str
    target: str
    below_root: tuple[str, ...]
    root_patterns: tuple[str, ...]
    param_patterns: tuple[str, ...] | None
    min_age_hours: float
    max_bytes: int | None

    def matches(self, rel: str, name: str) -> bool:
        """Whether a file (relative path and name) matches the root's and the params' globs."""
        ok = _match(self.root_patterns, rel, name)
        if ok and self.param_patterns is not None:
            ok = _match(self.param_patterns, rel, name)
        return ok


def _match(patterns: Sequence[str], rel: str, name: str) -> bool:
    # A pattern with a slash is matched against the path below the cleaned directory,
    # one without against the file name (like .gitignore).
    return any(fnmatch.fnmatchcase(rel if "/" in p else name, p) for p in patterns)


def rules_for(settings: RemediationConfig, params: CleanDiskParams) -> Rules:
    """The configured root ``params.root`` lies in, with limits narrowed by params; or Refused."""
    raw = params.root
    configured = [str(r.path) for r in settings.cleanup_roots]
    allowed = ", ".join(configured) or "none are configured"
    try:
        target = safepath.lexical(raw, what="root")
    except Refused as exc:
        raise Refused(f"{exc}; clean_disk works only in the configured clean-up roots "
                      f"({allowed})") from None
    best: tuple[str, CleanupRoot] | None = None
    for rule in settings.cleanup_roots:
        base = _configured(str(rule.path))
        if (target == base or target.startswith(base.rstrip(os.sep) + os.sep)) and (
                best is None or len(base) > len(best[0])):
            best = (base, rule)
    if best is None:
        raise Refused(f"{target} is not inside a configured clean-up root ({allowed}); "
                      "refusing")
    base, rule = best
    below = tuple(p for p in os.path.relpath(target, base).split(os.sep) if p not in ("", "."))
    min_age = max(rule.min_age_hours, params.min_age_hours or 0.0)
    caps = [c for c in (rule.max_bytes, params.max_bytes) if c is not None]
    return Rules(root=base, target=target, below_root=below, root_patterns=rule.patterns,
                 param_patterns=params.patterns, min_age_hours=min_age,
                 max_bytes=min(caps) if caps else None)


def _configured(path: str) -> str:
    """A configured root as the normalised absolute path it names (no filesystem look-up)."""
    return "/" + os.path.normpath(os.path.abspath(path)).lstrip("/")


@contextlib.contextmanager
def open_target(rules: Rules) -> Iterator[int]:
    """A descriptor of the directory to clean: every component from ``/`` opened without
    following a symlink (above the root too: a swapped parent must not lead elsewhere)."""
    def what(prefix: str) -> str:
        if prefix == rules.root:
            return f"configured root {prefix}"
        if len(prefix) < len(rules.root):
            return f"directory {prefix} (on the way to the configured root {rules.root})"
        return f"directory {prefix}"

    with safepath.open_dir(rules.target, what) as fd:
        yield fd


@dataclass(frozen=True)
class Candidate:
    """A file that may be deleted: where it is and what it was when scanned."""

    dirs: tuple[str, ...]
    name: str
    size: int
    mtime: float
    dev: int
    ino: int

    @property
    def rel(self) -> str:
        """Its path below the cleaned directory."""
        return "/".join((*self.dirs, self.name))


@dataclass
class Scan:
    """The outcome of walking the directory: candidates, plus what was skipped and why."""

    candidates: list[Candidate] = field(default_factory=list)
    dir_ids: dict[tuple[str, ...], tuple[int, int]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        """Count one entry skipped for ``reason``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def scan(fd: int, rules: Rules, now: float) -> Scan:
    """Every matching, old enough, regular single-link file below ``fd`` (no symlinks)."""
    result = Scan()
    top = os.fstat(fd)
    result.dir_ids[()] = (top.st_dev, top.st_ino)
    cutoff = now - rules.min_age_hours * 3600.0
    _walk(fd, (), top.st_dev, rules, cutoff, result)
    return result


def _walk(fd: int, dirs: tuple[str, ...], dev: int, rules: Rules, cutoff: float,
          out: Scan) -> None:
    with os.scandir(fd) as it:
        entries = list(it)
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            out.skip("symlink")
        elif stat.S_ISDIR(mode):
            if st.st_dev != dev:
                out.skip("other filesystem")
            elif len(dirs) >= MAX_DEPTH:
                out.skip("too deep")
            else:
                _descend(fd, (*dirs, entry.name), st, dev, rules, cutoff, out)
        elif not stat.S_ISREG(mode):
            out.skip("not a regular file")
        elif not rules.matches("/".join((*dirs, entry.name)), entry.name):
            continue
        elif st.st_mtime > cutoff:
            out.skip("too new")
        elif st.st_nlink > 1:
            out.skip("hard-linked")
        else:
            out.candidates.append(Candidate(dirs, entry.name, st.st_size, st.st_mtime,
                                            st.st_dev, st.st_ino))


def _descend(parent: int, dirs: tuple[str, ...], seen: os.stat_result, dev: int, rules: Rules,
             cutoff: float, out: Scan) -> None:
    try:
        sub = os.open(dirs[-1], _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        # Swapped for a symlink since the scan saw it (ELOOP/ENOTDIR), or not ours to read.
        out.skip("symlink" if exc.errno in (errno.ELOOP, errno.ENOTDIR)
                 else "unreadable directory")
        return
    try:
        st = os.fstat(sub)
        if (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino):
            out.skip("changed during the scan")
            return
        out.dir_ids[dirs] = (st.st_dev, st.st_ino)
        _walk(sub, dirs, dev, rules, cutoff, out)
    except PermissionError:
        out.skip("unreadable directory")
    finally:
        os.close(sub)


def select(candidates: Sequence[Candidate], max_bytes: int | None) -> list[Candidate]:
    """Oldest first, never more than ``max_bytes`` in total (a file that would overshoot is
    skipped, a smaller one after it may still fit)."""
    ordered = sorted(candidates, key=lambda c: (c.mtime, c.rel))
    if max_bytes is None:
        return ordered
    chosen: list[Candidate] = []
    total = 0
    for c in ordered:
        if total + c.size <= max_bytes:
            chosen.append(c)
            total += c.size
    return chosen


@dataclass
class Removal:
    """What deleting the selected files did."""

    removed: list[Candidate] = field(default_factory=list)
    bytes_freed: int = 0
    errors: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def remove(fd: int, chosen: Sequence[Candidate], scanned: Scan, rules: Rules, now: float
           ) -> Removal:
    """Unlink each chosen file inside its pinned directory, after checking it once more."""
    out = Removal()
    cutoff = now - rules.min_age_hours * 3600.0
    by_dir: dict[tuple[str, ...], list[Candidate]] = {}
    for c in chosen:
        by_dir.setdefault(c.dirs, []).append(c)
    for dirs, files in by_dir.items():
        try:
            dfd = _reopen(fd, dirs, scanned.dir_ids)
        except (OSError, Refused) as exc:
            out.errors.append(f"{'/'.join(dirs)}: {exc}")
            continue
        try:
            for c in files:
                _remove_one(dfd, c, cutoff, out)
        finally:
            if dfd != fd:
                os.close(dfd)
    return out


def _reopen(fd: int, dirs: tuple[str, ...], ids: dict[tuple[str, ...], tuple[int, int]]) -> int:
    """The directory ``dirs`` below ``fd`` again, each step O_NOFOLLOW and checked by inode."""
    current = fd
    try:
        for i in range(len(dirs)):
            sub = os.open(dirs[i], _DIR_FLAGS, dir_fd=current)
            if current != fd:
                os.close(current)
            current = sub
            st = os.fstat(current)
            if (st.st_dev, st.st_ino) != ids.get(dirs[: i + 1]):
                raise Refused("directory changed since the scan")
    except BaseException:
        if current != fd:
            os.close(current)
        raise
    return current


def _remove_one(dfd: int, c: Candidate, cutoff: float, out: Removal) -> None:
    try:
        st = os.stat(c.name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        out.skipped["gone"] = out.skipped.get("gone", 0) + 1
        return
    if ((st.st_dev, st.st_ino) != (c.dev, c.ino) or not stat.S_ISREG(st.st_mode)
            or st.st_nlink > 1 or st.st_mtime > cutoff):
        out.skipped["changed since the scan"] = out.skipped.get("changed since the scan", 0) + 1
        return
    try:
        os.unlink(c.name, dir_fd=dfd)
    except FileNotFoundError:
        out.skipped["gone"] = out.skipped.get("gone", 0) + 1
        return
    except OSError as exc:
        out.errors.append(f"{c.rel}: {exc.strerror or exc}")
        return
    out.removed.append(c)
    out.bytes_freed += st.st_size


def _plan(rules: Rules, now: float) -> tuple[Scan, list[Candidate]]:
    with open_target(rules) as fd:
        found = scan(fd, rules, now)
    return found, select(found.candidates, rules.max_bytes)


def _execute_sync(rules: Rules, now: float) -> tuple[Scan, list[Candidate], Removal]:
    with open_target(rules) as fd:
        found = scan(fd, rules, now)
        chosen = select(found.candidates, rules.max_bytes)
        return found, chosen, remove(fd, chosen, found, rules, now)


def _describe_rules(rules: Rules) -> dict[str, JsonValue]:
    return {"root": rules.root, "directory": rules.target,
            "patterns": list(rules.root_patterns),
            "param_patterns": None if rules.param_patterns is None else list(rules.param_patterns),
            "min_age_hours": rules.min_age_hours, "max_bytes": rules.max_bytes}


def _skipped_text(skipped: dict[str, int]) -> str:
    if not skipped:
        return ""
    return " (skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())) + ")"


def _listing(files: Sequence[Candidate]) -> tuple[str, ...]:
    return tuple(f"{c.rel} ({human_bytes(c.size)})" for c in files[:MAX_ITEMS])


class CleanDisk(BaseAction[CleanDiskParams]):
    """Delete old files matching patterns under a configured root; never follows symlinks."""

    spec = REGISTRY["clean_disk"]

    def _check(self, params: CleanDiskParams, ctx: ActionContext) -> CleanDiskParams:
        # Inside a configured root, no '..', normalised: what an approval shows is the
        # directory that would be cleaned.
        return params.model_copy(update={"root": rules_for(ctx.settings, params).target})

    async def _preview(self, params: CleanDiskParams, ctx: ActionContext) -> Plan:
        rules = rules_for(ctx.settings, params)
        found, chosen = await asyncio.to_thread(_plan, rules, ctx.wall_clock())
        total = sum(c.size for c in chosen)
        details: dict[str, JsonValue] = {
            **_describe_rules(rules), "files": len(chosen), "bytes": total,
            "skipped": dict(found.skipped)}
        if not chosen:
            return Plan("nothing_to_do",
                        f"nothing to delete in {rules.target}: no file matches "
                        f"{_criteria(rules)}{_skipped_text(found.skipped)}", details=details)
        return Plan("would_run",
                    f"would free {human_bytes(total)} from these {len(chosen)} files in "
                    f"{rules.target} ({_criteria(rules)}){_skipped_text(found.skipped)}",
                    items=_listing(chosen), items_total=len(chosen), details=details)

    async def _execute(self, params: CleanDiskParams, ctx: ActionContext) -> Done:
        rules = rules_for(ctx.settings, params)
        found, chosen, done = await asyncio.to_thread(_execute_sync, rules, ctx.wall_clock())
        skipped = dict(found.skipped)
        for why, n in done.skipped.items():
            skipped[why] = skipped.get(why, 0) + n
        details: dict[str, JsonValue] = {
            **_describe_rules(rules), "bytes_freed": done.bytes_freed,
            "files_removed": len(done.removed),
            "removed": list(_listing(done.removed)),
            "errors": list(done.errors[:MAX_ITEMS]),
            "skipped": dict(skipped)}
        message = (f"freed {human_bytes(done.bytes_freed)} from {len(done.removed)} files in "
                   f"{rules.target}{_skipped_text(skipped)}")
        if done.errors:
            message += f"; {len(done.errors)} could not be removed: {done.errors[0]}"
            if not done.removed:
                return Done("failed", message, details=details)
        elif not chosen:
            message = (f"nothing to delete in {rules.target}: no file matches "
                       f"{_criteria(rules)}{_skipped_text(skipped)}")
        return Done("ok", message, details=details)

    async def _verify(self, params: CleanDiskParams, ctx: ActionContext,
                      result: ActionResult) -> Check:
        rules = rules_for(ctx.settings, params)
        usage = await asyncio.to_thread(ctx.psutil.disk_usage, rules.target)
        freed = result.details.get("bytes_freed")
        details: dict[str, JsonValue] = {"bytes_freed": freed, "disk_percent": usage.percent,
                                         "disk_free": usage.free}
        state = f"{rules.target} is now {usage.percent:.0f}% full ({human_bytes(usage.free)} free)"
        if isinstance(freed, int) and freed > 0:
            return Check(True, f"freed {human_bytes(freed)}; {state}", details)
        return Check(False, f"nothing was freed; {state}", details)


def _criteria(rules: Rules) -> str:
    pats = ", ".join(rules.root_patterns)
    if rules.param_patterns is not None:
        pats += " and " + ", ".join(rules.param_patterns)
    text = f"{pats}, older than {rules.min_age_hours:g} h"
    if rules.max_bytes is not None:
        text += f", at most {human_bytes(rules.max_bytes)}"
    return text
