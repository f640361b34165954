"""Services changed at run time (a reload of the config file, SIGHUP) apply live, with real
processes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import psutil

from watchkeeper.events import RemediationEvent
from watchkeeper.runtime import Runtime

from ..conftest import BusRecorder
from .test_remediator import free_port, settings_for, until


def http_service(port: int) -> dict[str, Any]:
    return {"start": [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            "checks": [{"http": f"http://127.0.0.1:{port}/", "timeout_s": 1}]}


async def test_added_and_changed_services_apply_live(tmp_path: Path) -> None:
    web = http_service(free_port())
    rt = Runtime(settings_for(tmp_path, web["start"], web["checks"]))
    recorder = BusRecorder(rt.bus)  # type: ignore[arg-type]
    await rt.start()
    try:
        first = await rt.services.wait_healthy("web", timeout_s=10)
        assert first.healthy and first.pid

        # A new service: watchkeeper starts it, watches it, and leaves "web" alone.
        changed = rt.update_config({"services": {"api": http_service(free_port())}})
        assert changed and all(k.startswith("services.api") for k in changed)
        await until(lambda: "api" in rt.services)
        api = await rt.services.wait_healthy("api", timeout_s=10)
        assert api.healthy and api.pid and api.pid != first.pid
        assert (await rt.services.status("web")).pid == first.pid
        await until(lambda: (snap := rt.store.latest_snapshot()) is not None
                    and {s.name for s in snap.services} == {"web", "api"})

        # A changed service: stopped as it was defined, started as it is now defined.
        moved = http_service(free_port())
        rt.update_config({"services": {"web": moved}})
        await until(lambda: rt.services.config("web").start == tuple(moved["start"]))
        now = await rt.services.wait_healthy("web", timeout_s=10)
        assert now.healthy and now.pid not in (None, first.pid)
        assert not psutil.pid_exists(first.pid)
        assert (await rt.services.status("api")).pid == api.pid  # untouched

        # A service the file no longer has: stopped, and no longer watched.
        rt.reload(rt.config.current.model_copy(update={
            "services": {"web": rt.config.current.services["web"]}}))
        await until(lambda: "api" not in rt.services)
        await until(lambda: not psutil.pid_exists(api.pid))
        assert (await rt.services.status("web")).pid == now.pid
        # The ends of the old processes were expected: nothing was "healed".
        assert not [e for e in recorder.of(RemediationEvent)
                    if isinstance(e, RemediationEvent) and e.phase == "started"]
    finally:
        await rt.stop()
    assert not psutil.pid_exists(now.pid)  # stopped with watchkeeper, as at start-up
