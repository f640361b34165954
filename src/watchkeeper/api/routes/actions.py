"""Remediation history, pending approvals, approve and reject, reset of a failing target."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query

from watchkeeper.api.auth import require_operator, require_read
from watchkeeper.api.routes.deps import ActorDep, RuntimeDep, ask_agent
from watchkeeper.api.schemas import (
    MAX_ID,
    ActionsBody,
    ApprovalsBody,
    ApproveBody,
    ErrorBody,
    RejectRequest,
    ResetBody,
    ResetRequest,
)
from watchkeeper.remediation.audit import Approval, ApprovalState

router = APIRouter(prefix="/api/actions", tags=["actions"])

_ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}, 409: {"model": ErrorBody}}

ApprovalId = Annotated[int, Path(ge=1, le=MAX_ID, description="id of a pending approval")]


@router.get("", response_model=ActionsBody, dependencies=[Depends(require_read)])
def list_actions(runtime: RuntimeDep,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> ActionsBody:
    """The newest audit entries (oldest first) and every action waiting for approval."""
    return ActionsBody(entries=runtime.audit.entries(limit=limit),
                       pending=runtime.audit.pending(),
                       audit_chain=runtime.audit.chain_status())


@router.get("/approvals", response_model=ApprovalsBody, dependencies=[Depends(require_read)])
def list_approvals(runtime: RuntimeDep,
                   state: Annotated[ApprovalState | None, Query(
                       description="only this state (default: all)")] = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> ApprovalsBody:
    """Approval requests, oldest first (the newest ``limit``): who decided each and when,
    and which expired unanswered."""
    return ApprovalsBody(approvals=runtime.audit.approvals(state, limit),
                         audit_chain=runtime.audit.chain_status())


#: The mutating routes here ask the remediator over the bus (command.<host>.remediator).
REMEDIATOR = "remediator"


@router.post("/{approval_id}/approve", response_model=ApproveBody, responses=_ERRORS,
             dependencies=[Depends(require_operator)])
async def approve(approval_id: ApprovalId, runtime: RuntimeDep, by: ActorDep) -> ApproveBody:
    """Approve a pending action; it runs if the policy still allows it now."""
    done = await ask_agent(runtime, REMEDIATOR, "approve", {"approval_id": approval_id},
                           actor=by)
    return ApproveBody.model_validate(done)


@router.post("/{approval_id}/reject", response_model=Approval, responses=_ERRORS,
             dependencies=[Depends(require_operator)])
async def reject(approval_id: ApprovalId, runtime: RuntimeDep, by: ActorDep,
                 body: Annotated[RejectRequest | None, Body()] = None) -> Approval:
    """Reject a pending action, with an optional reason."""
    done = await ask_agent(runtime, REMEDIATOR, "reject", {
        "approval_id": approval_id, "reason": body.reason if body else ""}, actor=by)
    return Approval.model_validate(done["approval"])


@router.post("/reset", response_model=ResetBody, responses={404: {"model": ErrorBody}},
             dependencies=[Depends(require_operator)])
async def reset(body: ResetRequest, runtime: RuntimeDep, by: ActorDep) -> ResetBody:
    """A person resets a failing target (``{"service": "web"}`` or ``{"target":
    "service:web"}``): its failing mark, failure streak and backoff are cleared, so
    automatic tries are allowed again (a managed service that is down is restarted at once).
    Audited with who, announced on the live stream. An unknown target is a 404 and changes
    nothing."""
    target = f"service:{body.service}" if body.service is not None else body.target
    done = await ask_agent(runtime, REMEDIATOR, "reset", {"target": target}, actor=by)
    return ResetBody(target=done["target"], cleared=done["cleared"], by=by,
                     detail=done["detail"])
