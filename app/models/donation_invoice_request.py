from __future__ import annotations

import uuid

from sqlalchemy import CheckConstraint, ForeignKey, LargeBinary, String
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import UUIDPK, Base, Timestamps


class DonationInvoiceRequest(UUIDPK, Timestamps, Base):
    """A donor's request for an official 公益事业捐赠票据; the donor's details are encrypted at rest."""

    __tablename__ = "donation_invoice_requests"
    __table_args__ = (
        CheckConstraint("status IN ('requested','issued','rejected')", name="status_known"),
        CheckConstraint("donor_type IN ('person','company')", name="donor_type_known"),
    )

    donation_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("donations.id"), unique=True, nullable=False
    )
    donor_type: Mapped[str] = mapped_column(String(16), nullable=False)
    name_enc: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    tax_id_enc: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    email_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="requested")
