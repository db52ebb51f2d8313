from __future__ import annotations

import enum
import uuid
from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, DateTime, ForeignKey, Index, LargeBinary, String, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class ElderCategory(enum.StrEnum):
    tekun = "特困"
    dibao = "低保"
    low_income = "低收入"
    disabled_care = "失能"
    living_alone = "独居"
    disability = "残疾"
    youfu = "优抚"


class DietTag(enum.StrEnum):
    low_salt = "低盐"
    low_sugar = "低糖"
    soft = "软食"
    halal = "清真"
    vegetarian = "素食"


class VerificationStatus(enum.StrEnum):
    pending = "pending"
    verified = "verified"
    rejected = "rejected"


class Elder(UUIDPK, Timestamps, Base):
    """An older resident who receives meals (the beneficiary). Not necessarily a WeChat user: ``user_id`` is
    set only when the elder registered themselves. ID number, phone and address are encrypted at rest with an
    HMAC column for lookups; the name is stored as is and masked in responses."""

    __tablename__ = "elders"
    __table_args__ = (
        CheckConstraint(
            "verification_status IN ('pending','verified','rejected')", name="verification_status_known"
        ),
        CheckConstraint("gender IN ('M','F')", name="gender_known"),
        Index("uq_elders_user_id", "user_id", unique=True, postgresql_where=text("user_id IS NOT NULL")),
    )

    user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(32), nullable=False)
    id_number_enc: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    id_number_hmac: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    birth_date: Mapped[date] = mapped_column(Date, nullable=False)
    gender: Mapped[str] = mapped_column(String(1), nullable=False)
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    hukou_district_code: Mapped[str] = mapped_column(
        String(12), ForeignKey("districts.code"), index=True, nullable=False
    )
    street: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    community: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    address_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    categories: Mapped[list[str]] = mapped_column(ARRAY(String(16)), nullable=False, default=list)
    diet_tags: Mapped[list[str]] = mapped_column(ARRAY(String(16)), nullable=False, default=list)
    allergens: Mapped[list[str]] = mapped_column(ARRAY(String(32)), nullable=False, default=list)
    emergency_contact_name: Mapped[str | None] = mapped_column(String(32))
    emergency_contact_phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    verification_status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    verified_by_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    verification_note: Mapped[str | None] = mapped_column(String(200))
    eligibility_valid_until: Mapped[date | None] = mapped_column(Date)
    registered_by_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    registration_channel: Mapped[str] = mapped_column(String(16), nullable=False, default="self")
