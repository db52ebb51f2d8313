from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from app.elders.idcard import IdNumberError, parse_id_number
from app.models.elder import DietTag, ElderCategory, VerificationStatus

PHONE_PATTERN = r"^1[3-9]\d{9}$"


def _check_id_number(value: str) -> str:
    try:
        return parse_id_number(value).value
    except IdNumberError as exc:
        raise ValueError(str(exc)) from exc


class ElderCreate(BaseModel):
    """Register an elder: ``registrant`` says who fills this in — the elder (``self``), a family member on
    their behalf (``family``, consent required), or civil-affairs / federation staff (``staff``)."""

    registrant: Literal["self", "family", "staff"]
    name: str = Field(min_length=1, max_length=32)
    id_number: str = Field(min_length=1, max_length=32, description="18位居民身份证号")
    phone: str | None = Field(None, pattern=PHONE_PATTERN, description="11位手机号")
    hukou_district_code: str = Field(pattern=r"^\d{6}$")
    street: str = Field("", max_length=64)
    community: str = Field("", max_length=64)
    address: str = Field("", max_length=200)
    categories: list[ElderCategory] = Field(default_factory=list, max_length=7)
    diet_tags: list[DietTag] = Field(default_factory=list, max_length=5)
    allergens: list[str] = Field(default_factory=list, max_length=20)
    emergency_contact_name: str | None = Field(None, max_length=32)
    emergency_contact_phone: str | None = Field(None, pattern=PHONE_PATTERN)
    relationship: str | None = Field(None, max_length=16, description="家属代登记时与长者的关系，如 子女")
    consent: bool = Field(False, description="家属代登记时须为 true：长者同意由您代为订餐并查看订餐记录")

    @field_validator("id_number")
    @classmethod
    def _id_number(cls, value: str) -> str:
        return _check_id_number(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("姓名不能为空")
        return value

    @field_validator("allergens")
    @classmethod
    def _allergens(cls, value: list[str]) -> list[str]:
        cleaned = [v.strip() for v in value if v.strip()]
        if any(len(v) > 32 for v in cleaned):
            raise ValueError("过敏原每项不超过32个字")
        return sorted(set(cleaned))


class ElderOut(BaseModel):
    id: uuid.UUID
    name: str
    id_number: str = Field(description="除本区民政人员外均为打码形式")
    phone: str | None
    gender: str
    age: int
    is_80_plus: bool
    hukou_district_code: str
    street: str
    community: str
    address: str | None
    categories: list[str]
    diet_tags: list[str]
    allergens: list[str]
    emergency_contact_name: str | None
    emergency_contact_phone: str | None
    verification_status: VerificationStatus
    eligibility_valid_until: date | None
    has_own_account: bool
    created_at: datetime


class InviteOut(BaseModel):
    invite_code: str
    expires_at: datetime


class BindRequest(BaseModel):
    invite_code: str = Field(min_length=4, max_length=16, pattern=r"^[A-Za-z0-9]+$")
    relationship: str = Field(min_length=1, max_length=16, description="与长者的关系，如 子女、配偶")
    consent: bool = Field(description="须为 true：长者同意您代为订餐、取消并查看其订餐记录")


class BindOut(BaseModel):
    elder_id: uuid.UUID
    relationship: str
    consented_at: datetime


class VerifyRequest(BaseModel):
    decision: Literal["verified", "rejected"]
    categories: list[ElderCategory] | None = Field(None, max_length=7, description="核实后的类别；不填则保留")
    valid_until: date | None = None
    note: str | None = Field(None, max_length=200)


class RosterRowResult(BaseModel):
    row: int
    status: Literal["applied", "error"]
    id_number: str | None = Field(None, description="打码")
    message: str


class RosterReport(BaseModel):
    total: int
    applied: int
    errors: int
    rows: list[RosterRowResult]
