"""Host identity (read once) and uptime."""

from __future__ import annotations

import platform
import socket

from watchkeeper.collectors.common import MissingLog, PsutilLike
from watchkeeper.events import HostIdentity


def read_identity(ps: PsutilLike, log: MissingLog) -> HostIdentity:
    """Hostname, OS, release, architecture, boot time and logical CPU count."""
    uname = platform.uname()
    return HostIdentity(
        hostname=socket.gethostname(),
        os=uname.system,
        os_release=uname.release,
        machine=uname.machine,
        boot_time=log.attempt("host.boot_time", ps.boot_time),
        cpu_count=log.attempt("host.cpu_count", lambda: ps.cpu_count(logical=True)),
    )


def uptime(identity: HostIdentity | None, now: float) -> float | None:
    """Seconds since boot, from the boot time read with the identity."""
    if identity is None or identity.boot_time is None:
        return None
    return max(0.0, now - identity.boot_time)
