"""notify_only: change nothing on the host; the result carries the message for a human."""

from __future__ import annotations

from watchkeeper.remediation.registry import REGISTRY, NotifyParams

from .base import ActionContext, ActionResult, BaseAction, Check, Done, Plan


class NotifyOnly(BaseAction[NotifyParams]):
    """Tell a human (the communicator delivers the result); touch nothing."""

    spec = REGISTRY["notify_only"]

    async def _preview(self, params: NotifyParams, ctx: ActionContext) -> Plan:
        return Plan("would_run", f"would only notify: {params.message or '(no message)'}")

    async def _execute(self, params: NotifyParams, ctx: ActionContext) -> Done:
        return Done("ok", params.message or "notification only; nothing changed",
                    details={"notify": True})

    async def _verify(self, params: NotifyParams, ctx: ActionContext,
                      result: ActionResult) -> Check:
        return Check(True, "nothing to verify: notify_only changes nothing")
