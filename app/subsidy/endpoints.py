from __future__ import annotations

from fastapi import APIRouter, status

from app.auth.auth import AdminSubject, SessionDep, StaffSubject
from app.subsidy.schemas import PolicyIn, PolicyOut
from app.subsidy.service import subsidy_service

router = APIRouter(tags=["subsidy"])


@router.get("/admin/subsidy-policies", response_model=list[PolicyOut], summary="补贴政策（含历史版本）")
async def list_policies(subject: StaffSubject, session: SessionDep) -> list[PolicyOut]:
    return await subsidy_service.list_policies(session)


@router.post(
    "/admin/subsidy-policies",
    response_model=PolicyOut,
    status_code=status.HTTP_201_CREATED,
    summary="发布补贴政策新版本",
)
async def create_policy(payload: PolicyIn, subject: AdminSubject, session: SessionDep) -> PolicyOut:
    return await subsidy_service.create_policy(session, subject, payload)
