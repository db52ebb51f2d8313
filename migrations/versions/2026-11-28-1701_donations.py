"""donations

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 17:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feed_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_events")),
    )
    op.create_index(op.f("ix_feed_events_kind"), "feed_events", ["kind"], unique=False)
    op.create_index(op.f("ix_feed_events_occurred_at"), "feed_events", ["occurred_at"], unique=False)
    op.create_table(
        "payment_inbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_inbox")),
        sa.UniqueConstraint("source", "external_id", name=op.f("uq_payment_inbox_source_external_id")),
    )
    op.create_table(
        "receipt_counters",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("year", name=op.f("pk_receipt_counters")),
    )
    op.create_table(
        "sandbox_wechatpay_orders",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("mchid", sa.String(length=32), nullable=False),
        sa.Column("appid", sa.String(length=32), nullable=False),
        sa.Column("out_trade_no", sa.String(length=32), nullable=False),
        sa.Column("params_digest", sa.String(length=64), nullable=False),
        sa.Column("request", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("total_fen", sa.BigInteger(), nullable=False),
        sa.Column("payer_openid", sa.String(length=128), nullable=False),
        sa.Column("notify_url", sa.String(length=256), nullable=False),
        sa.Column("prepay_id", sa.String(length=64), nullable=False),
        sa.Column("trade_state", sa.String(length=16), nullable=False),
        sa.Column("transaction_id", sa.String(length=32), nullable=True),
        sa.Column("time_expire", sa.DateTime(timezone=True), nullable=True),
        sa.Column("success_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refunded_fen", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_wechatpay_orders")),
        sa.UniqueConstraint(
            "mchid", "out_trade_no", name=op.f("uq_sandbox_wechatpay_orders_mchid_out_trade_no")
        ),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_sandbox_wechatpay_orders_transaction_id")),
    )
    op.create_table(
        "sandbox_wechatpay_refunds",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("mchid", sa.String(length=32), nullable=False),
        sa.Column("out_refund_no", sa.String(length=64), nullable=False),
        sa.Column("refund_id", sa.String(length=32), nullable=False),
        sa.Column("out_trade_no", sa.String(length=32), nullable=False),
        sa.Column("transaction_id", sa.String(length=32), nullable=False),
        sa.Column("refund_fen", sa.BigInteger(), nullable=False),
        sa.Column("total_fen", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("notify_url", sa.String(length=256), nullable=True),
        sa.Column("request", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("success_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_wechatpay_refunds")),
        sa.UniqueConstraint(
            "mchid", "out_refund_no", name=op.f("uq_sandbox_wechatpay_refunds_mchid_out_refund_no")
        ),
        sa.UniqueConstraint("refund_id", name=op.f("uq_sandbox_wechatpay_refunds_refund_id")),
    )
    op.create_table(
        "donation_targets",
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("canteen_id", sa.UUID(), nullable=True),
        sa.Column("fund_id", sa.UUID(), nullable=True),
        sa.Column("title", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("suggested_amounts_fen", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("scans", sa.BigInteger(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(kind = 'canteen' AND canteen_id IS NOT NULL AND fund_id IS NULL)"
            " OR (kind = 'fund' AND fund_id IS NOT NULL AND canteen_id IS NULL)"
            " OR (kind = 'general' AND canteen_id IS NULL AND fund_id IS NULL)",
            name=op.f("ck_donation_targets_kind_matches_target"),
        ),
        sa.CheckConstraint(
            "kind IN ('canteen','fund','general')", name=op.f("ck_donation_targets_kind_known")
        ),
        sa.CheckConstraint("scans >= 0", name=op.f("ck_donation_targets_scans_nonneg")),
        sa.ForeignKeyConstraint(
            ["canteen_id"], ["canteens.id"], name=op.f("fk_donation_targets_canteen_id_canteens")
        ),
        sa.ForeignKeyConstraint(["fund_id"], ["funds.id"], name=op.f("fk_donation_targets_fund_id_funds")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_donation_targets")),
        sa.UniqueConstraint("code", name=op.f("uq_donation_targets_code")),
    )
    op.create_index(op.f("ix_donation_targets_canteen_id"), "donation_targets", ["canteen_id"], unique=False)
    op.create_index(op.f("ix_donation_targets_fund_id"), "donation_targets", ["fund_id"], unique=False)
    op.create_table(
        "donations",
        sa.Column("target_id", sa.UUID(), nullable=False),
        sa.Column("target_account", sa.String(length=64), nullable=False),
        sa.Column("donor_user_id", sa.UUID(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("meals", sa.Integer(), nullable=True),
        sa.Column("refunded_fen", sa.BigInteger(), nullable=False),
        sa.Column("anonymous", sa.Boolean(), nullable=False),
        sa.Column("display_name", sa.String(length=32), nullable=True),
        sa.Column("message", sa.String(length=200), nullable=True),
        sa.Column("out_trade_no", sa.String(length=32), nullable=True),
        sa.Column("prepay_id", sa.String(length=64), nullable=True),
        sa.Column("prepay_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("transaction_id", sa.String(length=32), nullable=True),
        sa.Column("voucher_no", sa.String(length=64), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("receipt_year", sa.Integer(), nullable=True),
        sa.Column("receipt_seq", sa.Integer(), nullable=True),
        sa.Column("receipt_no", sa.String(length=24), nullable=True),
        sa.Column("recorded_by_user_id", sa.UUID(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "channel <> 'bank' OR voucher_no IS NOT NULL", name=op.f("ck_donations_bank_has_voucher")
        ),
        sa.CheckConstraint(
            "channel <> 'wechatpay' OR out_trade_no IS NOT NULL",
            name=op.f("ck_donations_wechatpay_has_out_trade_no"),
        ),
        sa.CheckConstraint("channel IN ('wechatpay','bank')", name=op.f("ck_donations_channel_known")),
        sa.CheckConstraint(
            "status = 'pending' OR status = 'closed' OR paid_at IS NOT NULL",
            name=op.f("ck_donations_paid_has_time"),
        ),
        sa.CheckConstraint(
            "status IN ('pending','paid','closed','partially_refunded','refunded')",
            name=op.f("ck_donations_status_known"),
        ),
        sa.CheckConstraint("amount_fen BETWEEN 1 AND 5000000", name=op.f("ck_donations_amount_in_range")),
        sa.CheckConstraint(
            "refunded_fen >= 0 AND refunded_fen <= amount_fen", name=op.f("ck_donations_refund_within_amount")
        ),
        sa.ForeignKeyConstraint(
            ["donor_user_id"], ["users.id"], name=op.f("fk_donations_donor_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by_user_id"], ["users.id"], name=op.f("fk_donations_recorded_by_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["target_id"], ["donation_targets.id"], name=op.f("fk_donations_target_id_donation_targets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_donations")),
        sa.UniqueConstraint("out_trade_no", name=op.f("uq_donations_out_trade_no")),
        sa.UniqueConstraint("receipt_no", name=op.f("uq_donations_receipt_no")),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_donations_transaction_id")),
        sa.UniqueConstraint("voucher_no", name=op.f("uq_donations_voucher_no")),
    )
    op.create_index(op.f("ix_donations_donor_user_id"), "donations", ["donor_user_id"], unique=False)
    op.create_index(
        "ix_donations_pending_expiry",
        "donations",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_donations_target_paid", "donations", ["target_id", "status"], unique=False)
    op.create_table(
        "donation_invoice_requests",
        sa.Column("donation_id", sa.UUID(), nullable=False),
        sa.Column("donor_type", sa.String(length=16), nullable=False),
        sa.Column("name_enc", sa.LargeBinary(), nullable=False),
        sa.Column("tax_id_enc", sa.LargeBinary(), nullable=False),
        sa.Column("email_enc", sa.LargeBinary(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "donor_type IN ('person','company')", name=op.f("ck_donation_invoice_requests_donor_type_known")
        ),
        sa.CheckConstraint(
            "status IN ('requested','issued','rejected')",
            name=op.f("ck_donation_invoice_requests_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["donation_id"], ["donations.id"], name=op.f("fk_donation_invoice_requests_donation_id_donations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_donation_invoice_requests")),
        sa.UniqueConstraint("donation_id", name=op.f("uq_donation_invoice_requests_donation_id")),
    )
    op.create_table(
        "donation_refunds",
        sa.Column("donation_id", sa.UUID(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("out_refund_no", sa.String(length=64), nullable=False),
        sa.Column("wechat_refund_id", sa.String(length=32), nullable=True),
        sa.Column("requested_by_user_id", sa.UUID(), nullable=True),
        sa.Column("decided_by_user_id", sa.UUID(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sa.String(length=200), nullable=True),
        sa.Column("succeeded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('requested','processing','succeeded','rejected','failed')",
            name=op.f("ck_donation_refunds_status_known"),
        ),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_donation_refunds_amount_positive")),
        sa.ForeignKeyConstraint(
            ["decided_by_user_id"], ["users.id"], name=op.f("fk_donation_refunds_decided_by_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["donation_id"], ["donations.id"], name=op.f("fk_donation_refunds_donation_id_donations")
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_user_id"],
            ["users.id"],
            name=op.f("fk_donation_refunds_requested_by_user_id_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_donation_refunds")),
        sa.UniqueConstraint("out_refund_no", name=op.f("uq_donation_refunds_out_refund_no")),
    )
    op.create_index(
        op.f("ix_donation_refunds_donation_id"), "donation_refunds", ["donation_id"], unique=False
    )
    op.create_index(
        "uq_donation_refunds_one_open",
        "donation_refunds",
        ["donation_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('requested','processing')"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_donation_refunds_one_open",
        table_name="donation_refunds",
        postgresql_where=sa.text("status IN ('requested','processing')"),
    )
    op.drop_index(op.f("ix_donation_refunds_donation_id"), table_name="donation_refunds")
    op.drop_table("donation_refunds")
    op.drop_table("donation_invoice_requests")
    op.drop_index("ix_donations_target_paid", table_name="donations")
    op.drop_index(
        "ix_donations_pending_expiry", table_name="donations", postgresql_where=sa.text("status = 'pending'")
    )
    op.drop_index(op.f("ix_donations_donor_user_id"), table_name="donations")
    op.drop_table("donations")
    op.drop_index(op.f("ix_donation_targets_fund_id"), table_name="donation_targets")
    op.drop_index(op.f("ix_donation_targets_canteen_id"), table_name="donation_targets")
    op.drop_table("donation_targets")
    op.drop_table("sandbox_wechatpay_refunds")
    op.drop_table("sandbox_wechatpay_orders")
    op.drop_table("receipt_counters")
    op.drop_table("payment_inbox")
    op.drop_index(op.f("ix_feed_events_occurred_at"), table_name="feed_events")
    op.drop_index(op.f("ix_feed_events_kind"), table_name="feed_events")
    op.drop_table("feed_events")
