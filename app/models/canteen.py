from __future__ import annotations

import enum

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class CanteenType(enum.StrEnum):
    urban_community = "urban_community"
    rural_happiness_home = "rural_happiness_home"
    institution = "institution"


class Canteen(UUIDPK, Timestamps, Base):
    __tablename__ = "canteens"
    __table_args__ = (
        CheckConstraint(
            "type IN ('urban_community','rural_happiness_home','institution')", name="type_known"
        ),
        CheckConstraint("delivery_fee_fen >= 0", name="delivery_fee_nonneg"),
        CheckConstraint("lat BETWEEN -90 AND 90 AND lng BETWEEN -180 AND 180", name="coords_valid"),
    )

    code: Mapped[str] = mapped_column(String(16), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    district_code: Mapped[str] = mapped_column(
        String(12), ForeignKey("districts.code"), index=True, nullable=False
    )
    street: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    community: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    address: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    phone: Mapped[str | None] = mapped_column(String(32))
    lat: Mapped[float] = mapped_column(Float, nullable=False)
    lng: Mapped[float] = mapped_column(Float, nullable=False)
    delivery_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    delivery_fee_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    delivery_radius_m: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
