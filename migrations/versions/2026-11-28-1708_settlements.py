"""settlements: monthly charity settlement statements per canteen and their meal lines

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 17:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "settlements",
        sa.Column("canteen_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("meals", sa.Integer(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("drafted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_by_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_by_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("voucher_no", sa.String(length=64), nullable=True),
        sa.Column("entry_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("month ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'", name=op.f("ck_settlements_month_format")),
        sa.CheckConstraint(
            "status IN ('draft','confirmed','paid')", name=op.f("ck_settlements_status_known")
        ),
        sa.CheckConstraint(
            "seq > 0 AND meals >= 0 AND amount_fen >= 0", name=op.f("ck_settlements_amounts_nonneg")
        ),
        sa.CheckConstraint(
            "status <> 'paid' OR (voucher_no IS NOT NULL AND entry_id IS NOT NULL AND paid_at IS NOT NULL)",
            name=op.f("ck_settlements_paid_has_voucher"),
        ),
        sa.CheckConstraint(
            "status = 'draft' OR confirmed_at IS NOT NULL", name=op.f("ck_settlements_confirmed_has_time")
        ),
        sa.ForeignKeyConstraint(
            ["canteen_id"], ["canteens.id"], name=op.f("fk_settlements_canteen_id_canteens")
        ),
        sa.ForeignKeyConstraint(
            ["confirmed_by_id"], ["users.id"], name=op.f("fk_settlements_confirmed_by_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("fk_settlements_entry_id_journal_entries")
        ),
        sa.ForeignKeyConstraint(["paid_by_id"], ["users.id"], name=op.f("fk_settlements_paid_by_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlements")),
        sa.UniqueConstraint("canteen_id", "month", "seq", name=op.f("uq_settlements_canteen_id_month_seq")),
    )
    op.create_index(op.f("ix_settlements_canteen_id"), "settlements", ["canteen_id"], unique=False)
    op.create_index(op.f("ix_settlements_month"), "settlements", ["month"], unique=False)
    op.create_index(
        "uq_settlements_one_draft",
        "settlements",
        ["canteen_id", "month"],
        unique=True,
        postgresql_where=sa.text("status = 'draft'"),
    )
    op.create_table(
        "settlement_lines",
        sa.Column("settlement_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("booking_line_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("booking_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("hold_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("entry_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("service_date", sa.Date(), nullable=False),
        sa.Column("slot", sa.String(length=16), nullable=False),
        sa.Column("item_name", sa.String(length=64), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_settlement_lines_amount_positive")),
        sa.ForeignKeyConstraint(
            ["booking_id"], ["bookings.id"], name=op.f("fk_settlement_lines_booking_id_bookings")
        ),
        sa.ForeignKeyConstraint(
            ["booking_line_id"],
            ["booking_lines.id"],
            name=op.f("fk_settlement_lines_booking_line_id_booking_lines"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("fk_settlement_lines_entry_id_journal_entries")
        ),
        sa.ForeignKeyConstraint(
            ["hold_id"], ["charity_holds.id"], name=op.f("fk_settlement_lines_hold_id_charity_holds")
        ),
        sa.ForeignKeyConstraint(
            ["settlement_id"], ["settlements.id"], name=op.f("fk_settlement_lines_settlement_id_settlements")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_lines")),
        sa.UniqueConstraint("booking_line_id", name=op.f("uq_settlement_lines_booking_line_id")),
    )
    op.create_index(
        op.f("ix_settlement_lines_settlement_id"), "settlement_lines", ["settlement_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_settlement_lines_settlement_id"), table_name="settlement_lines")
    op.drop_table("settlement_lines")
    op.drop_index(
        "uq_settlements_one_draft", table_name="settlements", postgresql_where=sa.text("status = 'draft'")
    )
    op.drop_index(op.f("ix_settlements_month"), table_name="settlements")
    op.drop_index(op.f("ix_settlements_canteen_id"), table_name="settlements")
    op.drop_table("settlements")
