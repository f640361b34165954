"""restart_service and start_service: through the service managers, never a shell."""

from __future__ import annotations

from watchkeeper.remediation.registry import REGISTRY, ServiceParams

from .base import ActionContext, ActionResult, BaseAction, Check, Done, Plan, Refused


def _services(params: ServiceParams, ctx: ActionContext) -> object:
    services = ctx.services
    if services is None:
        raise Refused("no service managers are configured on this host")
    if params.service not in services:
        known = ", ".join(sorted(services.names)) or "none"
        raise Refused(f"service {params.service!r} is not declared in the configuration "
                      f"(declared: {known})")
    return services


class _ServiceAction(BaseAction[ServiceParams]):
    """Shared by restart and start: preview the current state, verify the checks pass."""

    operation = "restart"

    def _check(self, params: ServiceParams, ctx: ActionContext) -> ServiceParams:
        _services(params, ctx)
        return params

    async def _preview(self, params: ServiceParams, ctx: ActionContext) -> Plan:
        services = _services(params, ctx)
        status = await services.status(params.service)  # type: ignore[attr-defined]
        health = {True: "healthy", False: "unhealthy", None: "no checks"}[status.healthy]
        return Plan("would_run", f"would {self.operation} {params.service} "
                    f"({status.manager}; now {status.state}, {health})",
                    details={"state": status.state, "manager": status.manager})

    async def _execute(self, params: ServiceParams, ctx: ActionContext) -> Done:
        services = _services(params, ctx)
        result = await getattr(services, self.operation)(params.service)
        return Done("ok" if result.ok else "failed", result.message, argv=tuple(result.argv),
                    output=result.output)

    async def _verify(self, params: ServiceParams, ctx: ActionContext,
                      result: ActionResult) -> Check:
        # Fixed means healthy *and* still so after the stability window (supervisord's
        # startsecs): a service that dies two seconds after each start is never "fixed".
        services = _services(params, ctx)
        settled = await services.settle(  # type: ignore[attr-defined]
            params.service, timeout_s=ctx.verify_timeout_s,
            stable_s=ctx.settings.stable_window_s)
        state = settled.status.state if settled.status is not None else "failed"
        return Check(settled.ok, settled.message, details={"state": state})


class RestartService(_ServiceAction):
    """Restart a declared service and check that it is healthy again."""

    spec = REGISTRY["restart_service"]
    operation = "restart"


class StartService(_ServiceAction):
    """Start a declared service that is down."""

    spec = REGISTRY["start_service"]
    operation = "start"
