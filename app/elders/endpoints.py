from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, Request, UploadFile, status

from app.auth.auth import CivilAffairsSubject, CurrentSubject, SessionDep, StaffSubject
from app.elders.schemas import (
    BindOut,
    BindRequest,
    ElderCreate,
    ElderOut,
    InviteOut,
    RosterReport,
    VerifyRequest,
)
from app.elders.service import elder_service
from app.exceptions import BadRequest
from app.kit.pagination import Page

router = APIRouter(tags=["elders"])

MAX_ROSTER_BYTES = 2 * 1024 * 1024


@router.post("/elders", response_model=ElderOut, status_code=status.HTTP_201_CREATED, summary="登记长者")
async def register_elder(payload: ElderCreate, subject: CurrentSubject, session: SessionDep) -> ElderOut:
    return await elder_service.register(session, subject, payload)


@router.get("/elders", response_model=Page[ElderOut], summary="我能看到的长者")
async def list_elders(
    subject: CurrentSubject,
    session: SessionDep,
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(20, ge=1, le=100),
) -> Page[ElderOut]:
    return await elder_service.list_elders(session, subject, cursor=cursor, limit=limit)


@router.get("/elders/{elder_id}", response_model=ElderOut, summary="长者详情")
async def get_elder(elder_id: uuid.UUID, subject: CurrentSubject, session: SessionDep) -> ElderOut:
    return await elder_service.get(session, subject, elder_id)


@router.post(
    "/elders/{elder_id}/invites",
    response_model=InviteOut,
    status_code=status.HTTP_201_CREATED,
    summary="生成家属邀请码",
)
async def create_invite(elder_id: uuid.UUID, subject: CurrentSubject, session: SessionDep) -> InviteOut:
    return await elder_service.create_invite(session, subject, elder_id)


@router.post(
    "/elders/bind", response_model=BindOut, status_code=status.HTTP_201_CREATED, summary="家属凭邀请码绑定"
)
async def bind_elder(payload: BindRequest, subject: CurrentSubject, session: SessionDep) -> BindOut:
    return await elder_service.bind(session, subject, payload)


@router.post("/admin/elders/{elder_id}/verify", response_model=ElderOut, summary="民政核实长者")
async def verify_elder(
    elder_id: uuid.UUID, payload: VerifyRequest, subject: CivilAffairsSubject, session: SessionDep
) -> ElderOut:
    return await elder_service.verify(session, subject, elder_id, payload)


@router.post("/admin/elders/roster", response_model=RosterReport, summary="导入资格名单（CSV）")
async def import_roster(request: Request, subject: StaffSubject, session: SessionDep) -> RosterReport:
    """CSV with columns ``id_number, categories, valid_until`` (categories separated by ``;``), sent either as
    a multipart ``file`` field or as the raw request body (``text/csv``)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadRequest("请上传名为 file 的 CSV 文件", code="RosterFileMissing")
        content = await upload.read(MAX_ROSTER_BYTES + 1)
    else:
        content = await request.body()
    if not content:
        raise BadRequest("上传的名单是空的", code="RosterEmpty")
    if len(content) > MAX_ROSTER_BYTES:
        raise BadRequest("名单文件太大（最多 2MB）", code="RosterTooLarge")
    return await elder_service.import_roster(session, subject, content)
