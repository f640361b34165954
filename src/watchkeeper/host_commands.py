"""The host's own commands, on ``command.<host>.runtime``: configuration and simulations.

They belong to the process rather than to one agent: a configuration change is checked
here against this host's rules (restart-only and host-only settings change only in the
config file), whoever asked, exactly as an agent checks its own commands.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, JsonValue

from watchkeeper.agents.commands import Args, CommandError, NoArgs, Verb
from watchkeeper.config import START_ONLY, ConfigError, json_type_problems
from watchkeeper.events import Command, ReplyCode

if TYPE_CHECKING:
    from watchkeeper.runtime import Runtime

log = logging.getLogger(__name__)


#: A demo that cannot start says so with an HTTP status; the reply's code says the same.
DEMO_CODES: dict[int, ReplyCode] = {409: "conflict", 503: "unavailable"}


class ConfigPatchArgs(Args):
    #: A partial configuration, deep-merged into the current one.
    patch: dict[str, JsonValue]


class SimulateArgs(Args):
    scenario: Literal["service", "crashloop"]
    duration_s: float = Field(60.0, gt=0, le=600, allow_inf_nan=False)


def runtime_verbs(runtime: Runtime) -> dict[str, Verb]:
    """config_patch, config (a read) and simulate, as the runtime answers them."""

    async def config_patch(args: ConfigPatchArgs, command: Command) -> dict[str, Any]:
        # The API module holds the host-only rules and the overrides file: imported here,
        # when first used, as the API imports the runtime.
        from watchkeeper.api.routes.config import (
            MAX_PATCH_DEPTH,
            _depth,
            host_only_keys,
            overrides_path,
            save_overrides,
        )

        patch = args.patch
        if _depth(patch) > MAX_PATCH_DEPTH:
            raise CommandError("invalid", f"patch nested deeper than {MAX_PATCH_DEPTH} "
                               "levels", [f"body: nested deeper than {MAX_PATCH_DEPTH} levels"])
        fixed = [f"{k}: changes only in the config file, with a restart"
                 for k in patch if k in START_ONLY]
        fixed += [f"{k}: decides what runs, what may be deleted or what leaves the host, so "
                  f"it changes only in the config file on the host (then SIGHUP)"
                  for k in host_only_keys(patch)]
        if runtime.role == "agent":
            # A fleet host agent serves no API: a patch reaches it from the central (or
            # anyone else on the bus). Its remediation policy is its own, so that a central
            # can never make it do what it does not allow: changed in its config file only.
            fixed += [f"{k}: a fleet host's local policy changes only in the config file on "
                      "the host (then SIGHUP), never from the central"
                      for k in patch if k == "remediation"]
        if fixed:
            raise CommandError("invalid", "; ".join(fixed), fixed)
        wrong_types = [str(p) for p in json_type_problems(patch)]
        if wrong_types:
            raise CommandError("invalid", "; ".join(wrong_types), wrong_types)
        try:
            changed = runtime.update_config(patch, source="api")
        except ConfigError as err:
            problems = [str(p) for p in err.problems]
            raise CommandError("invalid", "; ".join(problems), problems) from None
        if changed:
            try:
                await asyncio.to_thread(save_overrides, runtime.config.current, patch)
            except (OSError, ConfigError) as exc:
                # Applied but not kept: say so in the log; the live change still stands.
                log.error("config update applied but not saved to %s: %s",
                          overrides_path(runtime.config.current), exc)
            log.info("config updated by %s (%s): %s", command.actor, command.role,
                     ", ".join(changed))
        return {"version": runtime.config.version, "changed": list(changed),
                "config": runtime.config.current.masked()}

    async def config(_args: NoArgs, _command: Command) -> dict[str, Any]:
        # Every secret masked, as GET /api/config shows it (a central reads a host's).
        return {"version": runtime.config.version, "config": runtime.config.current.masked()}

    async def simulate(args: SimulateArgs, command: Command) -> dict[str, Any]:
        from watchkeeper.simulate.demo import DemoError

        log.info("simulate %s asked by %s", args.scenario, command.actor)
        try:
            run = await runtime.demos.start(args.scenario, args.duration_s)
        except DemoError as exc:
            code = DEMO_CODES.get(exc.status, "error")
            raise CommandError(code, str(exc)) from None
        return {"scenario": run.scenario, "service": run.service, "port": run.port,
                "pid": run.pid, "started_at": run.started_at.isoformat(),
                "crashed_at": run.crashed_at.isoformat(), "heals_at": run.heals_at.isoformat(),
                "until": run.until.isoformat()}

    return {"config_patch": Verb(config_patch, ConfigPatchArgs),
            "config": Verb(config, mutating=False, any_state=True),
            "simulate": Verb(simulate, SimulateArgs)}
