"""Remediation history, pending approvals, approve and reject, reset of a failing target."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query
from pydantic import ValidationError

from watchkeeper.api.auth import require_operator, require_read
from watchkeeper.api.routes.deps import (
    ActorDep,
    HostQuery,
    RuntimeDep,
    acting_host,
    ask_agent,
    ask_each_host,
    from_agent,
    is_central,
    known_hosts,
    target_host,
)
from watchkeeper.api.schemas import (
    MAX_ID,
    ActionsBody,
    ApprovalsBody,
    ApproveBody,
    ErrorBody,
    HostApproval,
    HostProblem,
    RejectRequest,
    ResetBody,
    ResetRequest,
)
from watchkeeper.remediation.audit import Approval, ApprovalState
from watchkeeper.remediation.auditchain import ChainStatus
from watchkeeper.runtime import Runtime

router = APIRouter(prefix="/api/actions", tags=["actions"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such approval, or no such host"},
    409: {"model": ErrorBody},
    422: {"model": ErrorBody, "description": "on a central: no host named"},
    503: {"model": ErrorBody, "description": "the host's remediator does not answer"},
    504: {"model": ErrorBody, "description": "the host did not answer in time"}}

#: The mutating routes here ask the remediator over the bus (command.<host>.remediator), and
#: so do a central's reads (each host's remediator keeps its own audit log).
REMEDIATOR = "remediator"

ApprovalId = Annotated[int, Path(ge=1, le=MAX_ID, description="id of a pending approval")]


def _tagged(approvals: list[Approval], host: str) -> list[HostApproval]:
    return [HostApproval(**a.model_dump(), host=host) for a in approvals]


def _from_host(raw: Any, host: str) -> list[HostApproval]:
    # What a host says of its own approvals: checked, and tagged with the host that said it
    # (a host cannot pass its approvals off as another's).
    return [HostApproval(**Approval.model_validate(a).model_dump(), host=host) for a in raw]


def _invalid(host: str) -> HTTPException:
    return HTTPException(502, f"host {host} answered with something that is not a valid "
                              "reply")


async def _every_host(runtime: Runtime, args: dict[str, Any]
                      ) -> tuple[list[HostApproval], list[HostProblem]]:
    """Every followed host's approvals (the remediator's ``approvals`` verb), oldest first;
    the hosts that do not answer in time are listed as such."""
    async def one(name: str, timeout: float) -> list[HostApproval]:
        body = await ask_agent(runtime, REMEDIATOR, "approvals", args, actor="api",
                               role="viewer", host=name, timeout=timeout)
        return _from_host(body["approvals"], name)

    answers, problems = await ask_each_host(runtime, known_hosts(runtime), one)
    rows = sorted((a for _name, got in answers for a in got), key=lambda a: a.requested_at)
    return rows, problems


@router.get("", response_model=ActionsBody, dependencies=[Depends(require_read)],
            responses=_ERRORS)
async def list_actions(runtime: RuntimeDep,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                       host: HostQuery = None) -> ActionsBody:
    """The newest audit entries (oldest first) and every action waiting for approval. On a
    central: ``host=`` reads that host's remediator (its audit log); without it, every
    host's pending approvals, each tagged with its host (hosts that do not answer are
    listed under unreachable), and the central's own entries."""
    remote = target_host(runtime, host)
    if remote is not None:
        body = await ask_agent(runtime, REMEDIATOR, "actions", {"limit": limit},
                               actor="api", role="viewer", host=remote)
        try:
            return ActionsBody(entries=body["entries"],
                               pending=_from_host(body["pending"], remote),
                               audit_chain=ChainStatus.model_validate(body["audit_chain"]))
        except (ValidationError, KeyError, TypeError):
            raise _invalid(remote) from None
    if not is_central(runtime):
        return ActionsBody(entries=runtime.audit.entries(limit=limit),
                           pending=_tagged(runtime.audit.pending(), runtime.host),
                           audit_chain=runtime.audit.chain_status())
    pending, problems = await _every_host(runtime, {"state": "pending", "limit": 1000})
    return ActionsBody(entries=runtime.audit.entries(limit=limit), pending=pending,
                       audit_chain=runtime.audit.chain_status(), unreachable=problems)


@router.get("/approvals", response_model=ApprovalsBody, dependencies=[Depends(require_read)],
            responses=_ERRORS)
async def list_approvals(runtime: RuntimeDep,
                         state: Annotated[ApprovalState | None, Query(
                             description="only this state (default: all)")] = None,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                         host: HostQuery = None) -> ApprovalsBody:
    """Approval requests, oldest first (the newest ``limit``): who decided each and when,
    and which expired unanswered. On a central: one host's (``host=``) or every host's,
    each tagged with its host; a host that does not answer is listed under unreachable."""
    remote = target_host(runtime, host)
    args: dict[str, Any] = {"limit": limit, **({"state": state} if state else {})}
    if remote is not None:
        body = await ask_agent(runtime, REMEDIATOR, "approvals", args, actor="api",
                               role="viewer", host=remote)
        try:
            return ApprovalsBody(approvals=_from_host(body["approvals"], remote),
                                 audit_chain=ChainStatus.model_validate(body["audit_chain"]))
        except (ValidationError, KeyError, TypeError):
            raise _invalid(remote) from None
    if not is_central(runtime):
        return ApprovalsBody(approvals=_tagged(runtime.audit.approvals(state, limit),
                                               runtime.host),
                             audit_chain=runtime.audit.chain_status())
    rows, problems = await _every_host(runtime, args)
    return ApprovalsBody(approvals=rows[-limit:], audit_chain=runtime.audit.chain_status(),
                         unreachable=problems)


@router.post("/{approval_id}/approve", response_model=ApproveBody, responses=_ERRORS,
             dependencies=[Depends(require_operator)])
async def approve(approval_id: ApprovalId, runtime: RuntimeDep, by: ActorDep,
                  host: HostQuery = None) -> ApproveBody:
    """Approve a pending action; it runs if the policy still allows it now (that host's
    policy: on a central, ``host=`` names whose approval it is, and that host decides)."""
    remote = acting_host(runtime, host)
    done = await ask_agent(runtime, REMEDIATOR, "approve", {"approval_id": approval_id},
                           actor=by, host=remote)
    return from_agent(ApproveBody, done, remote)


@router.post("/{approval_id}/reject", response_model=Approval, responses=_ERRORS,
             dependencies=[Depends(require_operator)])
async def reject(approval_id: ApprovalId, runtime: RuntimeDep, by: ActorDep,
                 body: Annotated[RejectRequest | None, Body()] = None,
                 host: HostQuery = None) -> Approval:
    """Reject a pending action, with an optional reason (on a central: of ``host=``)."""
    done = await ask_agent(runtime, REMEDIATOR, "reject", {
        "approval_id": approval_id, "reason": body.reason if body else ""}, actor=by,
        host=(remote := acting_host(runtime, host)))
    return from_agent(Approval, done.get("approval"), remote)


@router.post("/reset", response_model=ResetBody, responses=_ERRORS,
             dependencies=[Depends(require_operator)])
async def reset(body: ResetRequest, runtime: RuntimeDep, by: ActorDep,
                host: HostQuery = None) -> ResetBody:
    """A person resets a failing target (``{"service": "web"}`` or ``{"target":
    "service:web"}``): its failing mark, failure streak and backoff are cleared, so
    automatic tries are allowed again (a managed service that is down is restarted at once).
    Audited with who, announced on the live stream. An unknown target is a 404 and changes
    nothing. On a central, ``host=`` names the host whose target it is."""
    target = f"service:{body.service}" if body.service is not None else body.target
    remote = acting_host(runtime, host)
    done = await ask_agent(runtime, REMEDIATOR, "reset", {"target": target}, actor=by,
                           host=remote)
    return from_agent(ResetBody, {"target": done.get("target"), "cleared": done.get("cleared"),
                                  "by": by, "detail": done.get("detail")}, remote)
