"""Service managers: one protocol, backends for processes, systemd, Windows and supervisord.

``Services`` (the façade) builds one backend per configured service and routes calls by
name; ``Services.on_exit`` / ``Services.exits()`` report a managed process's exit the moment
it happens.
"""

from typing import TYPE_CHECKING, Any

from .base import (
    CheckResult,
    CommandResult,
    CommandRunner,
    ExecutableNotFound,
    ExitHub,
    ExitStream,
    OperationResult,
    ServiceExit,
    ServiceManager,
    ServiceState,
    ServiceStatus,
    SubprocessRunner,
    UnknownService,
)
from .checks import CheckContext, check_command, check_http, check_process, check_tcp, run_checks
from .process import ProcessManager
from .registry import BackendContext, BackendFactory, Services, ServicesChange
from .systemd import SystemdManager
from .windows import WindowsServiceManager

if TYPE_CHECKING:
    from .supervisord import SupervisordManager


def __getattr__(name: str) -> Any:
    # SupervisordManager on first use only (xmlrpc, about 1 MB; see registry._supervisord).
    if name == "SupervisordManager":
        from .supervisord import SupervisordManager

        return SupervisordManager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BackendContext",
    "BackendFactory",
    "CheckContext",
    "CheckResult",
    "CommandResult",
    "CommandRunner",
    "ExecutableNotFound",
    "ExitHub",
    "ExitStream",
    "OperationResult",
    "ProcessManager",
    "ServiceExit",
    "ServiceManager",
    "ServiceState",
    "ServiceStatus",
    "Services",
    "ServicesChange",
    "SubprocessRunner",
    "SupervisordManager",
    "SystemdManager",
    "UnknownService",
    "WindowsServiceManager",
    "check_command",
    "check_http",
    "check_process",
    "check_tcp",
    "run_checks",
]
