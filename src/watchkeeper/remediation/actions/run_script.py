"""run_script: run a command declared in ``remediation.scripts``, by name, and nothing else.

The name is all a suggestion (from a rule or an LLM) can choose; the argv and the time limit
come from the configuration. The runner resolves the executable on a fixed PATH, runs it with
a fixed environment and no shell, and kills its whole process group on timeout.
"""

from __future__ import annotations

import logging

from watchkeeper.config import RemediationConfig, ScriptConfig
from watchkeeper.redact import redact_cmdline
from watchkeeper.remediation.registry import REGISTRY, RunScriptParams

from .base import ActionContext, ActionResult, BaseAction, Check, Done, Plan, Refused
from .runner import CommandNotFound

logger = logging.getLogger(__name__)


def script_for(settings: RemediationConfig, name: str) -> ScriptConfig:
    """The declared script ``name``, or Refused naming the declared ones."""
    script = settings.scripts.get(name)
    if script is None:
        declared = ", ".join(sorted(settings.scripts)) or "none are declared"
        raise Refused(f"script {name!r} is not declared in remediation.scripts ({declared}); "
                      "refusing")
    return script


class RunScript(BaseAction[RunScriptParams]):
    """Run a declared script (argv, timeout); ok when it exits 0."""

    spec = REGISTRY["run_script"]

    def _check(self, params: RunScriptParams, ctx: ActionContext) -> RunScriptParams:
        script_for(ctx.settings, params.name)
        return params

    async def _preview(self, params: RunScriptParams, ctx: ActionContext) -> Plan:
        script = script_for(ctx.settings, params.name)
        try:
            argv = ctx.runner.resolve(script.argv)
        except CommandNotFound as exc:
            raise Refused(f"script {params.name!r} cannot run: {exc}") from None
        shown = redact_cmdline(argv)
        return Plan("would_run", f"would run script {params.name!r}: {shown} "
                                 f"(timeout {script.timeout_s:g} s)",
                    items=(shown,), details={"argv": shown, "timeout_s": script.timeout_s})

    async def _execute(self, params: RunScriptParams, ctx: ActionContext) -> Done:
        script = script_for(ctx.settings, params.name)
        try:
            out = await ctx.runner.run(script.argv, timeout_s=script.timeout_s)
        except CommandNotFound as exc:
            raise Refused(f"script {params.name!r} cannot run: {exc}") from None
        # The argv is operator-written but may still carry a secret (a token argument).
        argv = tuple(redact_cmdline([a]) for a in out.argv)
        details = {"timed_out": out.timed_out, "output_bytes": out.output_bytes,
                   "run_s": round(out.duration_s, 3)}
        if out.timed_out:
            return Done("failed", f"script {params.name!r} timed out after "
                                  f"{script.timeout_s:g} s; its process group was killed",
                        argv=argv, output=out.output, details=details)
        if out.exit_code != 0:
            return Done("failed", f"script {params.name!r} exited with {out.exit_code}",
                        argv=argv, exit_code=out.exit_code, output=out.output, details=details)
        return Done("ok", f"script {params.name!r} exited with 0 in {out.duration_s:.1f} s",
                    argv=argv, exit_code=0, output=out.output, details=details)

    async def _verify(self, params: RunScriptParams, ctx: ActionContext,
                      result: ActionResult) -> Check:
        # Exit status 0 is all a script promises; what it fixed is checked by the caller.
        ok = result.exit_code == 0
        return Check(ok, f"script {params.name!r} exited with {result.exit_code}",
                     {"exit_code": result.exit_code})
