"""ledger: seals as rows of their own, and a queue of entries to seal, instead of an UPDATE of each entry

An entry's place in the hash chain (``seq``, ``prev_hash``, ``hash``) moves to ``journal_seals``, one narrow row
written once by the sealer, and the entry is never updated again: the journal's trigger goes back to refusing
every UPDATE and DELETE. Sealing an entry by UPDATE wrote a new version of the whole row and an entry in each of
its indexes; a seal row costs a fraction of that. The partial index of unsealed entries gives way to
``journal_unsealed``, filled by a statement trigger on every insert into the journal and emptied by the sealer.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 01:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# what 0004 checked on journal_entries
_HEX = "hash ~ '^[0-9a-f]{64}$' AND prev_hash ~ '^[0-9a-f]{64}$'"
# the same, for journal_seals, without a regular expression (see app/models/journal_entry.py)
_SEAL_HEX = (
    "length(hash) = 64 AND octet_length(decode(hash, 'hex')) = 32 AND hash = lower(hash)"
    " AND length(prev_hash) = 64 AND octet_length(decode(prev_hash, 'hex')) = 32 AND prev_hash = lower(prev_hash)"
)


def upgrade() -> None:
    op.create_table(
        "journal_seals",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("entry_id", sa.UUID(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint(_SEAL_HEX, name=op.f("ck_journal_seals_hashes_hex")),
        sa.CheckConstraint("seq > 0", name=op.f("ck_journal_seals_seq_positive")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("fk_journal_seals_entry_id_journal_entries")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_journal_seals")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_journal_seals_entry_id")),
        sa.UniqueConstraint("hash", name=op.f("uq_journal_seals_hash")),
    )
    op.create_table(
        "journal_unsealed",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entry_id", sa.UUID(), nullable=False),
        sa.PrimaryKeyConstraint("created_at", "entry_id", name=op.f("pk_journal_unsealed")),
    )
    op.execute(
        "INSERT INTO journal_seals (seq, entry_id, prev_hash, hash) "
        "SELECT seq, id, prev_hash, hash FROM journal_entries WHERE seq IS NOT NULL"
    )
    op.execute(
        "INSERT INTO journal_unsealed (created_at, entry_id) "
        "SELECT created_at, id FROM journal_entries WHERE seq IS NULL"
    )
    op.execute("DROP TRIGGER journal_entries_append_only ON journal_entries")
    op.execute("DROP FUNCTION journal_entry_seal_once()")
    op.drop_index(
        "ix_journal_entries_unsealed", table_name="journal_entries", postgresql_where=sa.text("seq IS NULL")
    )
    op.drop_constraint(op.f("ck_journal_entries_sealed_together"), "journal_entries", type_="check")
    op.drop_constraint(op.f("ck_journal_entries_hashes_hex"), "journal_entries", type_="check")
    op.drop_constraint(op.f("ck_journal_entries_seq_positive"), "journal_entries", type_="check")
    op.drop_constraint(op.f("uq_journal_entries_hash"), "journal_entries", type_="unique")
    op.drop_constraint(op.f("uq_journal_entries_seq"), "journal_entries", type_="unique")
    op.drop_column("journal_entries", "hash")
    op.drop_column("journal_entries", "prev_hash")
    op.drop_column("journal_entries", "seq")
    for table in ("journal_entries", "journal_seals"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
    op.execute(
        """
        CREATE FUNCTION journal_entries_queue_unsealed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO journal_unsealed (created_at, entry_id) SELECT created_at, id FROM new_entries;
            RETURN NULL;
        END;
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER journal_entries_unsealed AFTER INSERT ON journal_entries "
        "REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT "
        "EXECUTE FUNCTION journal_entries_queue_unsealed()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER journal_entries_unsealed ON journal_entries")
    op.execute("DROP FUNCTION journal_entries_queue_unsealed()")
    op.execute("DROP TRIGGER journal_seals_append_only ON journal_seals")
    op.execute("DROP TRIGGER journal_entries_append_only ON journal_entries")
    op.add_column("journal_entries", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.add_column("journal_entries", sa.Column("prev_hash", sa.String(length=64), nullable=True))
    op.add_column("journal_entries", sa.Column("hash", sa.String(length=64), nullable=True))
    op.execute(
        "UPDATE journal_entries AS e SET seq = s.seq, prev_hash = s.prev_hash, hash = s.hash "
        "FROM journal_seals AS s WHERE s.entry_id = e.id"
    )
    op.create_unique_constraint(op.f("uq_journal_entries_seq"), "journal_entries", ["seq"])
    op.create_unique_constraint(op.f("uq_journal_entries_hash"), "journal_entries", ["hash"])
    op.create_check_constraint(op.f("ck_journal_entries_seq_positive"), "journal_entries", "seq > 0")
    op.create_check_constraint(op.f("ck_journal_entries_hashes_hex"), "journal_entries", _HEX)
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
    # revision 0011's function, exactly as it was (a downgrade restores that schema, not a new one)
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
    op.execute(
        "CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries "
        "FOR EACH ROW EXECUTE FUNCTION journal_entry_seal_once()"
    )
    op.drop_table("journal_unsealed")
    op.drop_table("journal_seals")
