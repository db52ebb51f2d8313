from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.models.role_grant import Role


class WeChatLogin(BaseModel):
    code: str = Field(min_length=1, max_length=128, description="wx.login() 得到的临时登录凭证")


class WeChatPhone(BaseModel):
    code: str = Field(min_length=1, max_length=128, description="getPhoneNumber 按钮回调里的 code")


class Grant(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    role: Role
    canteen_id: uuid.UUID | None = None
    district_code: str | None = None


class UserSummary(BaseModel):
    id: uuid.UUID
    roles: list[Role]
    grants: list[Grant]


class LoginResult(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: datetime
    user: UserSummary


class PhoneResult(BaseModel):
    phone_masked: str


class Me(BaseModel):
    id: uuid.UUID
    openid: str
    nickname: str | None
    phone_masked: str | None
    roles: list[Role]
    grants: list[Grant]
    session_expires_at: datetime


class GrantRole(BaseModel):
    openid: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    role: Role
    canteen_id: uuid.UUID | None = None
    district: str | None = Field(None, min_length=6, max_length=12, pattern=r"^\d+$")


class GrantOut(Grant):
    user_id: uuid.UUID
    openid: str
