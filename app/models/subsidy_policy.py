from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Date, ForeignKey, String
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class SubsidyPolicy(UUIDPK, Timestamps, Base):
    """One version of a city's (or a district's) meal-subsidy rules, in force from ``effective_from`` until
    ``effective_to`` (exclusive). A district policy wins over the city's; the latest start wins among equals.

    ``charity_rules`` lists who may receive the charity portion: ``[{"category": "独居", "min_age": 80}, ...]``.
    """

    __tablename__ = "subsidy_policies"
    __table_args__ = (
        CheckConstraint("effective_to IS NULL OR effective_to > effective_from", name="period_ordered"),
        CheckConstraint(
            "min_self_pay_fen >= 0 AND min_spend_fen >= 0 AND charity_cap_fen >= 0", name="amounts_nonneg"
        ),
    )

    name: Mapped[str] = mapped_column(String(64), nullable=False)
    city: Mapped[str] = mapped_column(String(32), nullable=False)
    district_code: Mapped[str | None] = mapped_column(String(12), ForeignKey("districts.code"))
    effective_from: Mapped[date] = mapped_column(Date, nullable=False)
    effective_to: Mapped[date | None] = mapped_column(Date)
    min_self_pay_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    min_spend_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    require_hukou_district: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    subsidized_slots: Mapped[list[str]] = mapped_column(
        ARRAY(String(16)), nullable=False, default=lambda: ["breakfast", "lunch", "dinner"]
    )
    charity_rules: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False, default=list)
    charity_cap_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
