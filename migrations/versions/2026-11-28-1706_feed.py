"""feed: grow-in-place feed events (meals funded per canteen per day, reconciliation, ledger roots) and the
weekly donor digest claims

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 17:06:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "donor_digests",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("meals", sa.Integer(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending','sent','no_quota')", name=op.f("ck_donor_digests_status_known")
        ),
        sa.CheckConstraint("meals >= 0 AND amount_fen >= 0", name=op.f("ck_donor_digests_nonneg")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_donor_digests_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_donor_digests")),
        sa.UniqueConstraint("user_id", "week_start", name=op.f("uq_donor_digests_user_id_week_start")),
    )
    op.create_table(
        "feed_aggregates",
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["feed_events.id"], name=op.f("fk_feed_aggregates_event_id_feed_events")
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_feed_aggregates")),
        sa.UniqueConstraint("event_id", name=op.f("uq_feed_aggregates_event_id")),
    )


def downgrade() -> None:
    op.drop_table("feed_aggregates")
    op.drop_table("donor_digests")
