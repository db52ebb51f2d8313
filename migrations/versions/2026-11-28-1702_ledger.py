"""ledger: accounts, append-only journal entries and postings (hash-chained), donation lots, charity holds,
allocations, daily Merkle digests

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 17:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY_TABLES = ("journal_entries", "postings", "ledger_digests")


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("code", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("fund_id", sa.UUID(), nullable=True),
        sa.Column("canteen_id", sa.UUID(), nullable=True),
        sa.Column("no_overdraft", sa.Boolean(), nullable=False),
        sa.Column("balance_fen", sa.BigInteger(), nullable=False),
        sa.Column("held_fen", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "NOT no_overdraft OR -balance_fen - held_fen >= 0", name=op.f("ck_ledger_accounts_no_overdraft")
        ),
        sa.CheckConstraint("held_fen >= 0", name=op.f("ck_ledger_accounts_held_nonneg")),
        sa.ForeignKeyConstraint(
            ["canteen_id"], ["canteens.id"], name=op.f("fk_ledger_accounts_canteen_id_canteens")
        ),
        sa.ForeignKeyConstraint(["fund_id"], ["funds.id"], name=op.f("fk_ledger_accounts_fund_id_funds")),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_ledger_accounts")),
    )
    op.create_index(op.f("ix_ledger_accounts_canteen_id"), "ledger_accounts", ["canteen_id"], unique=False)
    op.create_index(op.f("ix_ledger_accounts_fund_id"), "ledger_accounts", ["fund_id"], unique=False)
    op.create_table(
        "journal_entries",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("business_key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("memo", sa.Text(), nullable=False),
        sa.Column("refs", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "hash ~ '^[0-9a-f]{64}$' AND prev_hash ~ '^[0-9a-f]{64}$'",
            name=op.f("ck_journal_entries_hashes_hex"),
        ),
        sa.CheckConstraint("seq > 0", name=op.f("ck_journal_entries_seq_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journal_entries")),
        sa.UniqueConstraint("business_key", name=op.f("uq_journal_entries_business_key")),
        sa.UniqueConstraint("hash", name=op.f("uq_journal_entries_hash")),
        sa.UniqueConstraint("seq", name=op.f("uq_journal_entries_seq")),
    )
    op.create_index(op.f("ix_journal_entries_day"), "journal_entries", ["day"], unique=False)
    op.create_index(op.f("ix_journal_entries_kind"), "journal_entries", ["kind"], unique=False)
    op.create_table(
        "postings",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("entry_id", sa.UUID(), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("account_code", sa.String(length=80), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount_fen <> 0", name=op.f("ck_postings_amount_nonzero")),
        sa.ForeignKeyConstraint(
            ["account_code"], ["ledger_accounts.code"], name=op.f("fk_postings_account_code_ledger_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("fk_postings_entry_id_journal_entries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_postings")),
        sa.UniqueConstraint("entry_id", "line_no", name=op.f("uq_postings_entry_id_line_no")),
    )
    op.create_index(op.f("ix_postings_account_code"), "postings", ["account_code"], unique=False)
    op.create_table(
        "donation_lots",
        sa.Column("fifo_no", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("donation_id", sa.UUID(), nullable=False),
        sa.Column("account_code", sa.String(length=80), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("external_ref", sa.String(length=128), nullable=False),
        sa.Column("entry_id", sa.UUID(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("held_fen", sa.BigInteger(), nullable=False),
        sa.Column("allocated_fen", sa.BigInteger(), nullable=False),
        sa.Column("refunded_fen", sa.BigInteger(), nullable=False),
        sa.Column(
            "remaining_fen",
            sa.BigInteger(),
            sa.Computed("amount_fen - held_fen - allocated_fen - refunded_fen", persisted=True),
            nullable=False,
        ),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_donation_lots_amount_positive")),
        sa.CheckConstraint(
            "held_fen + allocated_fen + refunded_fen <= amount_fen",
            name=op.f("ck_donation_lots_not_overdrawn"),
        ),
        sa.CheckConstraint(
            "held_fen >= 0 AND allocated_fen >= 0 AND refunded_fen >= 0",
            name=op.f("ck_donation_lots_parts_nonneg"),
        ),
        sa.ForeignKeyConstraint(
            ["account_code"],
            ["ledger_accounts.code"],
            name=op.f("fk_donation_lots_account_code_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("fk_donation_lots_entry_id_journal_entries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_donation_lots")),
        sa.UniqueConstraint("donation_id", name=op.f("uq_donation_lots_donation_id")),
        sa.UniqueConstraint("fifo_no", name=op.f("uq_donation_lots_fifo_no")),
        sa.UniqueConstraint("source", "external_ref", name=op.f("uq_donation_lots_source_external_ref")),
    )
    op.create_index(
        "ix_donation_lots_fifo",
        "donation_lots",
        ["account_code", "paid_at", "fifo_no"],
        unique=False,
        postgresql_where=sa.text("remaining_fen > 0"),
    )
    op.create_table(
        "charity_holds",
        sa.Column("hold_key", sa.String(length=100), nullable=False),
        sa.Column("canteen_id", sa.UUID(), nullable=False),
        sa.Column("requested_fen", sa.BigInteger(), nullable=False),
        sa.Column("held_fen", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("entry_id", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.CheckConstraint(
            "status IN ('held','posted','voided')", name=op.f("ck_charity_holds_status_known")
        ),
        sa.CheckConstraint(
            "requested_fen >= 0 AND held_fen >= 0 AND held_fen <= requested_fen",
            name=op.f("ck_charity_holds_amounts"),
        ),
        sa.ForeignKeyConstraint(
            ["canteen_id"], ["canteens.id"], name=op.f("fk_charity_holds_canteen_id_canteens")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("fk_charity_holds_entry_id_journal_entries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_charity_holds")),
        sa.UniqueConstraint("hold_key", name=op.f("uq_charity_holds_hold_key")),
    )
    op.create_index(op.f("ix_charity_holds_canteen_id"), "charity_holds", ["canteen_id"], unique=False)
    op.create_table(
        "allocations",
        sa.Column("lot_id", sa.UUID(), nullable=False),
        sa.Column("donation_id", sa.UUID(), nullable=False),
        sa.Column("hold_id", sa.UUID(), nullable=False),
        sa.Column("account_code", sa.String(length=80), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("meta", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("entry_id", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.CheckConstraint("status IN ('held','posted','voided')", name=op.f("ck_allocations_status_known")),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_allocations_amount_positive")),
        sa.ForeignKeyConstraint(
            ["account_code"],
            ["ledger_accounts.code"],
            name=op.f("fk_allocations_account_code_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("fk_allocations_entry_id_journal_entries")
        ),
        sa.ForeignKeyConstraint(
            ["hold_id"], ["charity_holds.id"], name=op.f("fk_allocations_hold_id_charity_holds")
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["donation_lots.id"], name=op.f("fk_allocations_lot_id_donation_lots")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_allocations")),
    )
    op.create_index(op.f("ix_allocations_donation_id"), "allocations", ["donation_id"], unique=False)
    op.create_index(op.f("ix_allocations_hold_id"), "allocations", ["hold_id"], unique=False)
    op.create_index(op.f("ix_allocations_lot_id"), "allocations", ["lot_id"], unique=False)
    op.create_table(
        "ledger_digests",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.Column("merkle_root", sa.String(length=64), nullable=False),
        sa.Column("chain_head", sa.String(length=64), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_ledger_digests")),
    )

    # Append-only: the ledger's history can only grow. Corrections are new (reversing) entries.
    op.execute(
        """
        CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger table % is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END;
        $$
        """
    )
    for table in APPEND_ONLY_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )


def downgrade() -> None:
    for table in APPEND_ONLY_TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    op.execute("DROP FUNCTION IF EXISTS ledger_append_only()")
    op.drop_table("ledger_digests")
    op.drop_table("allocations")
    op.drop_table("charity_holds")
    op.drop_table("donation_lots")
    op.drop_table("postings")
    op.drop_table("journal_entries")
    op.drop_table("ledger_accounts")
