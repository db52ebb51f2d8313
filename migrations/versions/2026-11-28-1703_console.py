"""console: staff accounts and their console sessions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 17:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "staff_accounts",
        sa.Column("username", sa.String(length=48), nullable=False),
        sa.Column("display_name", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=24), nullable=False),
        sa.Column("district_code", sa.String(length=12), nullable=True),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("failed_login_count", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "role <> 'civil_affairs' OR district_code IS NOT NULL",
            name=op.f("ck_staff_accounts_civil_affairs_has_district"),
        ),
        sa.CheckConstraint("failed_login_count >= 0", name=op.f("ck_staff_accounts_failed_count_nonneg")),
        sa.CheckConstraint(
            "role IN ('federation_admin','civil_affairs')", name=op.f("ck_staff_accounts_role_known")
        ),
        sa.CheckConstraint("username = lower(username)", name=op.f("ck_staff_accounts_username_lowercase")),
        sa.ForeignKeyConstraint(
            ["district_code"], ["districts.code"], name=op.f("fk_staff_accounts_district_code_districts")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_staff_accounts_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_accounts")),
        sa.UniqueConstraint("username", name=op.f("uq_staff_accounts_username")),
    )
    op.create_index(
        op.f("ix_staff_accounts_district_code"), "staff_accounts", ["district_code"], unique=False
    )
    op.create_index(op.f("ix_staff_accounts_user_id"), "staff_accounts", ["user_id"], unique=False)
    op.create_table(
        "staff_sessions",
        sa.Column("staff_id", sa.UUID(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ip", postgresql.INET(), nullable=True),
        sa.Column("user_agent", sa.String(length=200), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["staff_accounts.id"],
            name=op.f("fk_staff_sessions_staff_id_staff_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_staff_sessions_token_hash")),
    )
    op.create_index(op.f("ix_staff_sessions_staff_id"), "staff_sessions", ["staff_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_staff_sessions_staff_id"), table_name="staff_sessions")
    op.drop_table("staff_sessions")
    op.drop_index(op.f("ix_staff_accounts_user_id"), table_name="staff_accounts")
    op.drop_index(op.f("ix_staff_accounts_district_code"), table_name="staff_accounts")
    op.drop_table("staff_accounts")
