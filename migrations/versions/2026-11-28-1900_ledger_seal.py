"""ledger: entries are written unsealed and chained after commit by the sealer

``seq``, ``prev_hash`` and ``hash`` become nullable (all three or none), a partial index finds the unsealed
entries, and the journal's append-only trigger lets exactly one UPDATE through: the sealing, which fills those
three columns on an entry that has none and changes nothing else.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28 19:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("journal_entries", "seq", existing_type=sa.BigInteger(), nullable=True)
    op.alter_column("journal_entries", "prev_hash", existing_type=sa.String(length=64), nullable=True)
    op.alter_column("journal_entries", "hash", existing_type=sa.String(length=64), nullable=True)
    op.create_check_constraint(
        op.f("ck_journal_entries_sealed_together"),
        "journal_entries",
        "(seq IS NULL AND prev_hash IS NULL AND hash IS NULL)"
        " OR (seq IS NOT NULL AND prev_hash IS NOT NULL AND hash IS NOT NULL)",
    )
    op.create_index(
        "ix_journal_entries_unsealed",
        "journal_entries",
        ["created_at", "id"],
        unique=False,
        postgresql_where=sa.text("seq IS NULL"),
    )
    op.execute(
        """
        CREATE FUNCTION journal_entry_seal_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND NEW.seq IS NOT NULL
               AND (NEW.id, NEW.business_key, NEW.kind, NEW.memo, NEW.refs, NEW.content_hash, NEW.day,
                    NEW.created_at)
                   IS NOT DISTINCT FROM
                   (OLD.id, OLD.business_key, OLD.kind, OLD.memo, OLD.refs, OLD.content_hash, OLD.day,
                    OLD.created_at)
            THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION 'ledger table % is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END;
        $$
        """
    )
    op.execute("DROP TRIGGER journal_entries_append_only ON journal_entries")
    op.execute(
        "CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries "
        "FOR EACH ROW EXECUTE FUNCTION journal_entry_seal_once()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER journal_entries_append_only ON journal_entries")
    op.execute(
        "CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries "
        "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
    )
    op.execute("DROP FUNCTION journal_entry_seal_once()")
    op.drop_index(
        "ix_journal_entries_unsealed", table_name="journal_entries", postgresql_where=sa.text("seq IS NULL")
    )
    op.drop_constraint(op.f("ck_journal_entries_sealed_together"), "journal_entries", type_="check")
    op.alter_column("journal_entries", "hash", existing_type=sa.String(length=64), nullable=False)
    op.alter_column("journal_entries", "prev_hash", existing_type=sa.String(length=64), nullable=False)
    op.alter_column("journal_entries", "seq", existing_type=sa.BigInteger(), nullable=False)
