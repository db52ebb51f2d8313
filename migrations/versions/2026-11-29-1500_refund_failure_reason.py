"""donation_refunds.failure_reason: why a refund did not go through

A refund's approval now reserves it in the ledger and commits; a job then asks WeChat Pay. When WeChat Pay
refuses it (or later closes it), the reservation goes back to the pool and the refund is marked ``failed``,
with the reason kept here for the donor and the staff. A refund WeChat Pay reports abnormal keeps its
reservation (staff finish it in the merchant platform) and says so here.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29 15:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("donation_refunds", sa.Column("failure_reason", sa.String(length=200), nullable=True))


def downgrade() -> None:
    op.drop_column("donation_refunds", "failure_reason")
