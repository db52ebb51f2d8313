from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class MenuItem(UUIDPK, Timestamps, Base):
    """A dish or set meal on a menu. ``stock`` is optional; ``sold`` moves only by conditional UPDATEs."""

    __tablename__ = "menu_items"
    __table_args__ = (
        CheckConstraint("kind IN ('set_meal','dish')", name="kind_known"),
        CheckConstraint("price_fen > 0", name="price_positive"),
        CheckConstraint("sold >= 0 AND (stock IS NULL OR sold <= stock)", name="within_stock"),
    )

    menu_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("menus.id"), index=True, nullable=False
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    description: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    price_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    diet_tags: Mapped[list[str]] = mapped_column(ARRAY(String(16)), nullable=False, default=list)
    allergens: Mapped[list[str]] = mapped_column(ARRAY(String(32)), nullable=False, default=list)
    is_special: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    stock: Mapped[int | None] = mapped_column(Integer)
    sold: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
