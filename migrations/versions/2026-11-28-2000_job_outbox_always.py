"""job outbox: every job is written in its transaction; due for a re-send only if it has not run

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28 20:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "job_outbox",
        sa.Column("send_after", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_index("ix_job_outbox_send_after", "job_outbox", ["send_after"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_outbox_send_after", table_name="job_outbox")
    op.drop_column("job_outbox", "send_after")
