"""Running commands safely: one fixed PATH, absolute executables, process-group signals.

Shared by the remediation actions (run_script) and the service managers (start/stop
commands, command checks, systemctl): whatever runs a command resolves it here, so there is
one definition of where executables may come from.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

#: Where executables are looked up: never the PATH watchkeeper itself was started with.
FIXED_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ExecutableNotFound(LookupError):
    """The executable of an argv is not on the fixed PATH (or is not an executable file)."""


def resolve_argv(argv: Sequence[str], *, path: str = FIXED_PATH,
                 cwd: Path | None = None) -> tuple[str, ...]:
    """The argv with an absolute executable, looked up on ``path``.

    A relative path with a separator (``bin/tool``) is taken relative to ``cwd`` and refused
    without one: it would otherwise depend on watchkeeper's own working directory.
    """
    if not argv or not argv[0]:
        raise ExecutableNotFound("empty argv")
    exe = argv[0]
    if os.sep in exe or (os.altsep and os.altsep in exe):
        if not Path(exe).is_absolute() and cwd is None:
            raise ExecutableNotFound(f"{exe!r}: a path to an executable must be absolute "
                                     "(or the service needs a cwd)")
        full = Path(exe) if Path(exe).is_absolute() else Path(cwd or "/") / exe
        if not (full.is_file() and os.access(full, os.X_OK)):
            raise ExecutableNotFound(f"{exe!r} is not an executable file")
        return (str(full), *argv[1:])
    found = shutil.which(exe, path=path)
    if found is None:
        raise ExecutableNotFound(f"{exe!r} is not an executable on {path}")
    return (os.path.abspath(found), *argv[1:])


def kill_group(pid: int, sig: int) -> bool:
    """Signal the process group led by ``pid`` (started with its own session); False if it
    no longer exists or is not ours."""
    try:
        if sys.platform == "win32":
            os.kill(pid, sig)
        else:
            os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
