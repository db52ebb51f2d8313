from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from app.auth.auth import AdminSubject, CurrentSubject, SessionDep
from app.auth.schemas import GrantOut, GrantRole, LoginResult, Me, PhoneResult, WeChatLogin, WeChatPhone
from app.auth.service import auth_service
from app.kit import ratelimit
from app.kit.ratelimit import rate_limit
from app.wechat.miniprogram import MiniProgram, miniprogram_dependency

router = APIRouter(tags=["auth"])

WeChatDep = Annotated[MiniProgram, Depends(miniprogram_dependency)]


@router.post(
    "/auth/wechat/login",
    response_model=LoginResult,
    summary="微信登录",
    dependencies=[Depends(rate_limit(ratelimit.LOGIN))],
)
async def wechat_login(payload: WeChatLogin, session: SessionDep, wechat: WeChatDep) -> LoginResult:
    """Exchange a ``wx.login()`` code for our own long-lived session token."""
    return await auth_service.login_with_wechat(session, wechat, payload.code)


@router.post("/auth/wechat/phone", response_model=PhoneResult, summary="绑定微信手机号")
async def wechat_phone(
    payload: WeChatPhone, subject: CurrentSubject, session: SessionDep, wechat: WeChatDep
) -> PhoneResult:
    return PhoneResult(phone_masked=await auth_service.bind_phone(session, wechat, subject, payload.code))


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, summary="退出登录")
async def logout(
    subject: CurrentSubject, session: SessionDep, everywhere: bool = Query(False, description="退出所有设备")
) -> None:
    await auth_service.logout(session, subject, everywhere=everywhere)


@router.get("/me", response_model=Me, summary="当前用户")
async def me(subject: CurrentSubject, session: SessionDep) -> Me:
    return await auth_service.me(session, subject)


@router.post("/admin/roles", response_model=GrantOut, status_code=status.HTTP_201_CREATED, summary="授予角色")
async def grant_role(payload: GrantRole, subject: AdminSubject, session: SessionDep) -> GrantOut:
    return await auth_service.grant_role(session, subject, payload)


@router.get("/admin/roles", response_model=list[GrantOut], summary="查看某用户的角色")
async def list_roles(
    subject: AdminSubject,
    session: SessionDep,
    openid: str = Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$"),
) -> list[GrantOut]:
    return await auth_service.list_grants(session, openid)


@router.post("/admin/roles/{grant_id}/revoke", status_code=status.HTTP_204_NO_CONTENT, summary="撤销角色")
async def revoke_role(grant_id: uuid.UUID, subject: AdminSubject, session: SessionDep) -> None:
    await auth_service.revoke_role(session, subject, grant_id)
