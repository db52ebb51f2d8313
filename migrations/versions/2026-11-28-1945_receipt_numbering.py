"""donations: receipt numbers are given right after the payment commits, by one numberer in batches

A partial index finds the paid donations still waiting for their number.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28 19:45:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_donations_receipt_pending",
        "donations",
        ["paid_at", "id"],
        unique=False,
        postgresql_where=sa.text("receipt_no IS NULL AND paid_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_donations_receipt_pending",
        table_name="donations",
        postgresql_where=sa.text("receipt_no IS NULL AND paid_at IS NOT NULL"),
    )
