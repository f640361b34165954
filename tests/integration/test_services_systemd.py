"""The systemd backend through the real systemctl binary (Debian always has one).

Without systemd as PID 1 (a container) systemctl cannot reach it; with it, the unit below
does not exist. Either way the answer is a clear ``unknown``/failure, never an exception.
"""

from __future__ import annotations

import shutil

from watchkeeper.config import ServiceConfig
from watchkeeper.remediation.services import SystemdManager
from watchkeeper.remediation.services.base import SAFE_PATH

UNIT = "watchkeeper-test-no-such-unit.service"



async def test_real_systemctl_answers_with_clear_results() -> None:
    m = SystemdManager({"ghost": ServiceConfig(manager="systemd", unit=UNIT)},
                       status_timeout_s=10, timeout_s=10)
    status = await m.status("ghost")
    assert status.state == "unknown" and status.healthy is None
    assert status.detail in ("systemd is not running on this host (systemctl cannot reach it)",
                             f"unit {UNIT} not found")
    result = await m.restart("ghost")
    assert not result.ok and result.argv[0] == shutil.which("systemctl", path=SAFE_PATH)
    assert result.argv[1:] == ("--no-ask-password", "restart", "--", UNIT)
    assert result.message in (
        "systemd is not running on this host (systemctl cannot reach it)",
        f"unit {UNIT} not found",
        f"permission denied to restart {UNIT}: run watchkeeper as root or allow it through "
        "polkit")
