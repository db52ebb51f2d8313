"""reconciliation: one run per WeChat Pay trade bill date, and the discrepancies it found

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 17:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reconciliation_runs",
        sa.Column("bill_date", sa.Date(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("file_sha1", sa.String(length=40), nullable=False),
        sa.Column("day_status", sa.String(length=16), nullable=False),
        sa.Column("published_status", sa.String(length=16), nullable=True),
        sa.Column("run_count", sa.Integer(), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_by", sa.String(length=80), nullable=False),
        sa.Column("bill_rows", sa.Integer(), nullable=False),
        sa.Column("payment_rows", sa.Integer(), nullable=False),
        sa.Column("refund_rows", sa.Integer(), nullable=False),
        sa.Column("settled_fen", sa.BigInteger(), nullable=False),
        sa.Column("refund_fen", sa.BigInteger(), nullable=False),
        sa.Column("fee_fen", sa.BigInteger(), nullable=False),
        sa.Column("order_fen", sa.BigInteger(), nullable=False),
        sa.Column("matched_count", sa.Integer(), nullable=False),
        sa.Column("amount_mismatch_count", sa.Integer(), nullable=False),
        sa.Column("missing_in_ledger_count", sa.Integer(), nullable=False),
        sa.Column("missing_in_bill_count", sa.Integer(), nullable=False),
        sa.Column("status_mismatch_count", sa.Integer(), nullable=False),
        sa.Column("fee_posted_fen", sa.BigInteger(), nullable=False),
        sa.Column("fee_entries", sa.Integer(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "day_status IN ('reconciled','under_review')",
            name=op.f("ck_reconciliation_runs_day_status_known"),
        ),
        sa.CheckConstraint("source IN ('api','upload')", name=op.f("ck_reconciliation_runs_source_known")),
        sa.CheckConstraint("run_count >= 1", name=op.f("ck_reconciliation_runs_run_count_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_runs")),
        sa.UniqueConstraint("bill_date", name=op.f("uq_reconciliation_runs_bill_date")),
    )
    op.create_table(
        "reconciliation_discrepancies",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=24, collation="C"), nullable=False),
        sa.Column("ref_key", sa.String(length=80, collation="C"), nullable=False),
        sa.Column("out_trade_no", sa.String(length=32), nullable=True),
        sa.Column("transaction_id", sa.String(length=32), nullable=True),
        sa.Column("out_refund_no", sa.String(length=64), nullable=True),
        sa.Column("donation_id", sa.UUID(), nullable=True),
        sa.Column("refund_id", sa.UUID(), nullable=True),
        sa.Column("bill_line", sa.Integer(), nullable=True),
        sa.Column("bill_amount_fen", sa.BigInteger(), nullable=True),
        sa.Column("ledger_amount_fen", sa.BigInteger(), nullable=True),
        sa.Column("bill_status", sa.String(length=24), nullable=True),
        sa.Column("ledger_status", sa.String(length=24), nullable=True),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("resolution", sa.String(length=16), nullable=True),
        sa.Column("resolution_note", sa.String(length=500), nullable=True),
        sa.Column("correction_entry_id", sa.UUID(), nullable=True),
        sa.Column("resolved_by", sa.String(length=80), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(status = 'open') = (resolution IS NULL AND resolved_at IS NULL)",
            name=op.f("ck_reconciliation_discrepancies_resolved_has_resolution"),
        ),
        sa.CheckConstraint(
            "kind IN ('amount_mismatch','missing_in_ledger','missing_in_bill','status_mismatch')",
            name=op.f("ck_reconciliation_discrepancies_kind_known"),
        ),
        sa.CheckConstraint(
            "resolution IS NULL OR resolution IN ('note','ledger_entry','repaired')",
            name=op.f("ck_reconciliation_discrepancies_resolution_known"),
        ),
        sa.CheckConstraint(
            "status IN ('open','resolved')", name=op.f("ck_reconciliation_discrepancies_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["reconciliation_runs.id"],
            name=op.f("fk_reconciliation_discrepancies_run_id_reconciliation_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_discrepancies")),
        sa.UniqueConstraint(
            "run_id", "kind", "ref_key", name=op.f("uq_reconciliation_discrepancies_run_id_kind_ref_key")
        ),
    )


def downgrade() -> None:
    op.drop_table("reconciliation_discrepancies")
    op.drop_table("reconciliation_runs")
