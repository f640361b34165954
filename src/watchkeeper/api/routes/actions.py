"""Remediation history, pending approvals, approve and reject, reset of a failing target."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query

from watchkeeper.agents.remediator import UnknownTarget
from watchkeeper.api.auth import require_operator, require_read
from watchkeeper.api.routes.deps import ActorDep, RemediatorDep, RuntimeDep
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
from watchkeeper.remediation.audit import Approval, ApprovalError, ApprovalState
from watchkeeper.runtime import Runtime

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


def _check_pending(runtime: Runtime, approval_id: int) -> None:
    approval = runtime.audit.approval(approval_id)
    if approval is None:
        raise HTTPException(404, f"no approval #{approval_id}")
    if approval.state in ("approved", "rejected"):  # expired: the audit log says when (409)
        raise HTTPException(409, f"approval #{approval_id} was {approval.state} already")


@router.post("/{approval_id}/approve", response_model=ApproveBody, responses=_ERRORS,
             dependencies=[Depends(require_operator)])
async def approve(approval_id: ApprovalId, runtime: RuntimeDep,
                  remediator: RemediatorDep, by: ActorDep) -> ApproveBody:
    """Approve a pending action; it runs if the policy still allows it now."""
    _check_pending(runtime, approval_id)
    try:
        decision = await remediator.approve(approval_id, by)
    except ApprovalError as exc:  # decided by someone else in the meantime
        raise HTTPException(409, str(exc)) from None
    return ApproveBody(approval_id=approval_id, verdict=decision.verdict, why=decision.why)


@router.post("/{approval_id}/reject", response_model=Approval, responses=_ERRORS,
             dependencies=[Depends(require_operator)])
async def reject(approval_id: ApprovalId, runtime: RuntimeDep,
                 remediator: RemediatorDep, by: ActorDep,
                 body: Annotated[RejectRequest | None, Body()] = None) -> Approval:
    """Reject a pending action, with an optional reason."""
    _check_pending(runtime, approval_id)
    try:
        return await remediator.reject(approval_id, by, body.reason if body else "")
    except ApprovalError as exc:
        raise HTTPException(409, str(exc)) from None


@router.post("/reset", response_model=ResetBody, responses={404: {"model": ErrorBody}},
             dependencies=[Depends(require_operator)])
async def reset(body: ResetRequest, remediator: RemediatorDep, by: ActorDep) -> ResetBody:
    """A person resets a failing target (``{"service": "web"}`` or ``{"target":
    "service:web"}``): its failing mark, failure streak and backoff are cleared, so
    automatic tries are allowed again (a managed service that is down is restarted at once).
    Audited with who, announced on the live stream. An unknown target is a 404 and changes
    nothing."""
    if body.service is not None:
        kind, name = "service", body.service
    else:
        assert body.target is not None
        kind, _, name = body.target.partition(":")
    try:
        target = remediator.target_of(kind, name)
    except UnknownTarget as exc:
        raise HTTPException(404, str(exc)) from None
    cleared = await remediator.reset(target, by)
    detail = (f"{target.key} reset: automatic tries allowed again" if cleared else
              f"{target.key} was not held back (no failing mark, failure streak or backoff); "
              "nothing to clear")
    return ResetBody(target=target.key, cleared=cleared, by=by, detail=detail)
