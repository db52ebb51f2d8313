"""SQL for the ledger. Row locks are always taken in one order: chain lock → hold row → accounts (by code) →
lots (by fifo_no); that order is what keeps concurrent posts, holds, voids and refunds free of deadlocks.

Accounts and lots are locked ``FOR NO KEY UPDATE``, never ``FOR UPDATE``: inserting a posting or an allocation
takes a key-share lock on the account or lot it refers to, which ``FOR UPDATE`` would wait for. Two transactions
that had each inserted postings on the general meal pool and then locked it would deadlock."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import String, and_, any_, bindparam, func, or_, select, text, true, update
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import contains_eager
from sqlalchemy.types import NullType

from app.kit.locks import xact_lock, xact_locks
from app.kit.sql import execute_core, planned_once, sql_text
from app.models import (
    Allocation,
    Canteen,
    CharityHold,
    DonationLot,
    Fund,
    JournalEntry,
    JournalSeal,
    LedgerAccount,
    LedgerDigest,
    Posting,
    UnsealedEntry,
)

if TYPE_CHECKING:
    from app.ledger.service import NewEntry


# Hot-path statements, built once; every list goes as one array, so their text is the same for any batch size
# and each pooled connection prepares them once (an IN list is a new statement for every length).

# Entries with everything that hangs on them, in one round trip, for the entries actually written (a replayed
# key's insert is skipped, and so are its postings, its lots and its credits): the postings, the donation lots
# that refer to them, and last the money added to pools and funds (the rows every payment to a pool shares,
# locked from here to the commit). The foreign keys are checked at the statement's end, when the entries are
# there.
# a refund reserves money from a pool; a release puts a refund that was not paid back
KIND_REFUND = "donation_refund"
KIND_REFUND_RELEASE = "donation_refund_release"

# The sealer's read: the oldest entries of its queue (committed, not sealed yet), each with its postings in line
# order (as two arrays), in one round trip; the queue's key is the order it takes them in. Each entry is read
# by its key in a grouped LATERAL, which PostgreSQL cannot fold into a join: a generic plan, which does not know
# the limit, would otherwise read the whole journal to join it with the queue.
_QUEUE = (
    select(UnsealedEntry.created_at, UnsealedEntry.entry_id)
    .order_by(UnsealedEntry.created_at, UnsealedEntry.entry_id)
    .limit(bindparam("limit"))
    .subquery("q")
)
# (arrays typed as NullType: the driver's lists as they come; SQLAlchemy's ARRAY would copy each list again)
_UNSEALED_ENTRY = (
    select(
        JournalEntry.id,
        JournalEntry.business_key,
        JournalEntry.kind,
        JournalEntry.memo,
        JournalEntry.refs,
        JournalEntry.day,
        JournalEntry.created_at,
        func.array_agg(aggregate_order_by(Posting.account_code, Posting.line_no), type_=NullType())
        .filter(Posting.entry_id.is_not(None))
        .label("accounts"),
        func.array_agg(aggregate_order_by(Posting.amount_fen, Posting.line_no), type_=NullType())
        .filter(Posting.entry_id.is_not(None))
        .label("amounts"),
    )
    .select_from(JournalEntry)
    .outerjoin(Posting, Posting.entry_id == JournalEntry.id)
    .where(JournalEntry.id == _QUEUE.c.entry_id)
    .group_by(JournalEntry.id)
    .lateral("e")
)
_UNSEALED = (
    select(_UNSEALED_ENTRY)
    .select_from(_QUEUE.join(_UNSEALED_ENTRY, true()))
    .order_by(_QUEUE.c.created_at, _QUEUE.c.entry_id)
)
# A batch of seals written and taken off the queue, in one statement.
_SEAL_ROWS = text(
    """
    WITH v AS (
        SELECT * FROM unnest(CAST(:seqs AS bigint[]), CAST(:ids AS uuid[]), CAST(:created AS timestamptz[]),
                             CAST(:prevs AS text[]), CAST(:hashes AS text[]))
                      AS v(seq, entry_id, created_at, prev_hash, hash)
    ),
    sealed AS (
        INSERT INTO journal_seals (seq, entry_id, prev_hash, hash)
        SELECT seq, entry_id, prev_hash, hash FROM v ORDER BY seq
    )
    DELETE FROM journal_unsealed AS q USING v WHERE q.created_at = v.created_at AND q.entry_id = v.entry_id
    """
)

_INSERT_ENTRIES = text(
    """
    WITH written AS (
        INSERT INTO journal_entries (id, business_key, kind, memo, refs, content_hash, day, created_at)
        SELECT v.id, v.business_key, v.kind, v.memo, CAST(v.refs AS jsonb), v.content_hash, v.day, v.created_at
        FROM unnest(CAST(:ids AS uuid[]), CAST(:keys AS text[]), CAST(:kinds AS text[]),
                    CAST(:memos AS text[]), CAST(:refs AS text[]), CAST(:hashes AS text[]),
                    CAST(:days AS date[]), CAST(:created AS timestamptz[]))
             AS v(id, business_key, kind, memo, refs, content_hash, day, created_at)
        ON CONFLICT (business_key) DO NOTHING
        RETURNING id, business_key
    ),
    lines AS (
        INSERT INTO postings (entry_id, line_no, account_code, amount_fen)
        SELECT p.entry_id, p.line_no, p.account_code, p.amount_fen
        FROM unnest(CAST(:entry_ids AS uuid[]), CAST(:line_nos AS int[]),
                    CAST(:accounts AS text[]), CAST(:amounts AS bigint[])) WITH ORDINALITY
             AS p(entry_id, line_no, account_code, amount_fen, n)
        WHERE p.entry_id IN (SELECT id FROM written)
        ORDER BY p.n
    ),
    lots AS (
        INSERT INTO donation_lots (id, donation_id, account_code, source, external_ref, entry_id, amount_fen,
                                   held_fen, allocated_fen, refunded_fen, paid_at)
        SELECT l.id, l.donation_id, l.account_code, l.source, l.external_ref, l.entry_id, l.amount_fen,
               0, 0, 0, l.paid_at
        FROM unnest(CAST(:lot_ids AS uuid[]), CAST(:lot_donation_ids AS uuid[]), CAST(:lot_accounts AS text[]),
                    CAST(:lot_sources AS text[]), CAST(:lot_refs AS text[]), CAST(:lot_entry_ids AS uuid[]),
                    CAST(:lot_amounts AS bigint[]), CAST(:lot_paid_at AS timestamptz[])) WITH ORDINALITY
             AS l(id, donation_id, account_code, source, external_ref, entry_id, amount_fen, paid_at, n)
        WHERE l.entry_id IN (SELECT id FROM written)
        ORDER BY l.n
    ),
    credited AS (
        UPDATE ledger_accounts AS a SET balance_fen = a.balance_fen + c.delta
        FROM (
            SELECT code, sum(delta) AS delta
            FROM unnest(CAST(:credit_entry_ids AS uuid[]), CAST(:credit_codes AS text[]),
                        CAST(:credit_deltas AS bigint[])) AS c(entry_id, code, delta)
            WHERE c.entry_id IN (SELECT id FROM written)
            GROUP BY code
        ) AS c
        WHERE a.code = c.code
    )
    SELECT business_key FROM written
    """
)

# What pools and funds can still give (balance not held), added up, for the accounts named by the ``codes``
# parameter: read alone (``free_fen``) or as a column of a booking's meal look-up. The array goes through a
# sub-select (``app.kit.sql.planned_once``): with the array in sight PostgreSQL planned it again on every
# execution.
FREE_FEN = select(
    func.coalesce(func.sum(func.greatest(0, -LedgerAccount.balance_fen - LedgerAccount.held_fen)), 0)
).where(LedgerAccount.code == any_(planned_once(bindparam("codes", type_=ARRAY(String)))))

_EXISTING_ACCOUNTS = select(LedgerAccount.code).where(
    LedgerAccount.code == any_(bindparam("codes", type_=ARRAY(String)))
)

# Two index look-ups (by donation, and by payment through its unique key), not an OR that would scan.
_LOTS_FOR_DONATIONS_OR_REFS = select(DonationLot).from_statement(
    text(
        """
        SELECT l.* FROM donation_lots AS l WHERE l.donation_id = ANY(CAST(:donation_ids AS uuid[]))
        UNION
        SELECT l.* FROM donation_lots AS l
        JOIN unnest(CAST(:sources AS text[]), CAST(:refs AS text[])) AS r(source, external_ref)
          ON l.source = r.source AND l.external_ref = r.external_ref
        """
    )
)


class NewLot(NamedTuple):
    """A payment's lot as ``insert_entries`` writes it (nothing held, allocated or refunded yet)."""

    id: uuid.UUID
    donation_id: uuid.UUID
    account_code: str
    source: str
    external_ref: str
    entry_id: uuid.UUID
    amount_fen: int
    paid_at: datetime


class HoldRow(NamedTuple):
    """A charity hold as the batch functions read it."""

    id: uuid.UUID
    hold_key: str
    canteen_id: uuid.UUID
    requested_fen: int
    held_fen: int
    status: str
    entry_id: uuid.UUID | None


class HeldAllocation(NamedTuple):
    """A still held allocation: ``amount_fen`` of one lot reserved for one hold."""

    id: uuid.UUID
    hold_id: uuid.UUID
    lot_id: uuid.UUID
    account_code: str
    amount_fen: int
    donation_id: uuid.UUID


class LedgerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ------------------------------------------------------------ chain and entries

    async def lock_chain(self, *, wait: bool = True) -> bool:
        """The sealer's lock: one transaction at a time appends to the hash chain."""
        return await xact_lock(self.session, "ledger:chain", wait=wait)

    async def lock_donation(self, donation_id: uuid.UUID) -> None:
        """Serialize the ledger's writes for one donation (payment, refunds), not the whole ledger."""
        await xact_lock(self.session, f"ledger:donation:{donation_id}")

    async def lock_donations(self, donation_ids: Sequence[uuid.UUID]) -> None:
        """``lock_donation`` for many, in one statement, in one order (so two batches never deadlock)."""
        await xact_locks(self.session, [f"ledger:donation:{d}" for d in donation_ids])

    async def unsealed(self, limit: int) -> list[Any]:
        """The oldest committed entries not sealed yet, as plain rows with what their hash covers (no ORM
        objects: the sealer reads thousands): the entry's columns, then ``accounts`` and ``amounts``, its
        postings in line order."""
        return list((await execute_core(self.session, _UNSEALED, {"limit": limit})).all())

    async def has_unsealed(self, entry_ids: Sequence[uuid.UUID] | None = None) -> bool:
        """Whether any entry (of these) is not sealed yet."""
        if entry_ids is None:
            return (await self.session.execute(select(UnsealedEntry.entry_id).limit(1))).first() is not None
        stmt = (
            select(JournalEntry.id)
            .outerjoin(JournalSeal, JournalSeal.entry_id == JournalEntry.id)
            .where(JournalEntry.id.in_(entry_ids), JournalSeal.entry_id.is_(None))
            .limit(1)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def seal_rows(self, rows: Sequence[tuple[uuid.UUID, datetime, int, str, str]]) -> None:
        """One statement for a batch, ``(entry id, its created_at, seq, prev_hash, hash)``: the seals written,
        the entries taken off the queue."""
        await execute_core(
            self.session,
            _SEAL_ROWS,
            {
                "ids": [r[0] for r in rows],
                "created": [r[1] for r in rows],
                "seqs": [r[2] for r in rows],
                "prevs": [r[3] for r in rows],
                "hashes": [r[4] for r in rows],
            },
        )

    async def unsealed_sums(self, codes: Sequence[str]) -> dict[str, int]:
        """Σ postings of entries not sealed yet, per account (what a deferred balance has still to add)."""
        stmt = (
            select(Posting.account_code, func.sum(Posting.amount_fen))
            .join(UnsealedEntry, UnsealedEntry.entry_id == Posting.entry_id)
            .where(Posting.account_code.in_(codes))
            .group_by(Posting.account_code)
        )
        return {code: int(total) for code, total in (await self.session.execute(stmt)).all()}

    async def chain_head(self) -> tuple[int, str] | None:
        row = (
            await self.session.execute(
                select(JournalSeal.seq, JournalSeal.hash).order_by(JournalSeal.seq.desc()).limit(1)
            )
        ).first()
        return (row[0], row[1]) if row else None

    async def entries_without_seal(self, limit: int) -> list[JournalEntry]:
        """Entries that have no seal (after the sealer has run: ones taken off its queue by hand)."""
        stmt = (
            select(JournalEntry)
            .where(~select(JournalSeal.entry_id).where(JournalSeal.entry_id == JournalEntry.id).exists())
            .order_by(JournalEntry.created_at, JournalEntry.id)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def entry_by_key(self, business_key: str) -> JournalEntry | None:
        return (
            await self.session.execute(select(JournalEntry).where(JournalEntry.business_key == business_key))
        ).scalar_one_or_none()

    async def entry_by_id(self, entry_id: uuid.UUID) -> JournalEntry | None:
        return await self.session.get(JournalEntry, entry_id)

    async def entries_by_ids(self, entry_ids: Sequence[uuid.UUID]) -> list[JournalEntry]:
        """These entries with their seals, in chain order (unsealed ones last)."""
        if not entry_ids:  # the usual case for a batch of new payments: no round trip for nothing
            return []
        stmt = (
            select(JournalEntry)
            .outerjoin(JournalEntry.seal)
            .options(contains_eager(JournalEntry.seal))
            .where(JournalEntry.id.in_(entry_ids))
            .order_by(JournalSeal.seq.nulls_last(), JournalEntry.created_at, JournalEntry.id)
        )
        return list((await self.session.execute(stmt.execution_options(populate_existing=True))).scalars())

    async def entries_by_keys(self, business_keys: Sequence[str]) -> dict[str, JournalEntry]:
        if not business_keys:
            return {}
        stmt = select(JournalEntry).where(JournalEntry.business_key.in_(business_keys))
        return {e.business_key: e for e in (await self.session.execute(stmt)).scalars()}

    async def insert_entries(
        self,
        entries: Sequence[tuple[NewEntry, Sequence[tuple[str, int]]]],
        *,
        lots: Sequence[NewLot] = (),
        credits: Sequence[tuple[uuid.UUID, str, int]] = (),
    ) -> set[str]:
        """Insert unsealed entries and their postings, the ``lots`` that refer to them, and add the
        ``credits`` (entry id, pool or fund, amount) to the balances, in one statement (columns as arrays,
        ``unnest``: no per-row SQL to build, and the same text for any batch); the business keys written. A
        key that exists is skipped with everything of it, having waited for a concurrent transaction holding
        it."""
        entry_ids: list[uuid.UUID] = []
        line_nos: list[int] = []
        accounts: list[str] = []
        amounts: list[int] = []
        for entry, postings in entries:
            for n, (account, amount) in enumerate(postings, start=1):
                entry_ids.append(entry.id)
                line_nos.append(n)
                accounts.append(account)
                amounts.append(amount)
        result = await execute_core(
            self.session,
            _INSERT_ENTRIES,
            {
                "ids": [e.id for e, _ in entries],
                "keys": [e.business_key for e, _ in entries],
                "kinds": [e.kind for e, _ in entries],
                "memos": [e.memo for e, _ in entries],
                "refs": [e.refs_json for e, _ in entries],
                "hashes": [e.content_hash for e, _ in entries],
                "days": [e.day for e, _ in entries],
                "created": [e.created_at for e, _ in entries],
                "entry_ids": entry_ids,
                "line_nos": line_nos,
                "accounts": accounts,
                "amounts": amounts,
                "lot_ids": [lot.id for lot in lots],
                "lot_donation_ids": [lot.donation_id for lot in lots],
                "lot_accounts": [lot.account_code for lot in lots],
                "lot_sources": [lot.source for lot in lots],
                "lot_refs": [lot.external_ref for lot in lots],
                "lot_entry_ids": [lot.entry_id for lot in lots],
                "lot_amounts": [lot.amount_fen for lot in lots],
                "lot_paid_at": [lot.paid_at for lot in lots],
                "credit_entry_ids": [entry_id for entry_id, _, _ in credits],
                "credit_codes": [code for _, code, _ in credits],
                "credit_deltas": [delta for _, _, delta in credits],
            },
        )
        return set(result.scalars())

    async def postings_of(self, entry_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[tuple[str, int]]]:
        out: dict[uuid.UUID, list[tuple[str, int]]] = {eid: [] for eid in entry_ids}
        stmt = (
            select(Posting.entry_id, Posting.account_code, Posting.amount_fen)
            .where(Posting.entry_id.in_(entry_ids))
            .order_by(Posting.entry_id, Posting.line_no)
        )
        for entry_id, account, amount in (await self.session.execute(stmt)).all():
            out[entry_id].append((account, amount))
        return out

    async def entries_after(self, seq: int, limit: int) -> list[JournalEntry]:
        stmt = (
            select(JournalEntry)
            .join(JournalEntry.seal)
            .options(contains_eager(JournalEntry.seal))
            .where(JournalSeal.seq > seq)
            .order_by(JournalSeal.seq)
            .limit(limit)
        )
        return list((await self.session.execute(stmt.execution_options(populate_existing=True))).scalars())

    async def day_hashes(self, day: date) -> list[tuple[uuid.UUID, int, str]]:
        stmt = (
            select(JournalEntry.id, JournalSeal.seq, JournalSeal.hash)
            .join(JournalSeal, JournalSeal.entry_id == JournalEntry.id)
            .where(JournalEntry.day == day)
            .order_by(JournalSeal.seq)
        )
        return [(r[0], r[1], r[2]) for r in (await self.session.execute(stmt)).all()]

    async def days_without_digest(self, before: date) -> list[date]:
        stmt = (
            select(JournalEntry.day)
            .where(JournalEntry.day < before)
            .where(~select(LedgerDigest.day).where(LedgerDigest.day == JournalEntry.day).exists())
            .distinct()
            .order_by(JournalEntry.day)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def refund_entry_ids(self, donation_id: uuid.UUID) -> list[uuid.UUID]:
        """The donation's refunds and their releases, oldest first."""
        stmt = (
            select(JournalEntry.id)
            .where(JournalEntry.kind.in_((KIND_REFUND, KIND_REFUND_RELEASE)))
            .outerjoin(JournalSeal, JournalSeal.entry_id == JournalEntry.id)
            .where(JournalEntry.refs["donation_id"].astext == str(donation_id))
            .order_by(JournalSeal.seq.nulls_last(), JournalEntry.created_at, JournalEntry.id)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def refunded_by_donation(self) -> dict[str, int]:
        """Σ refunded fen per donation, from its refund entries' postings to its pool, net of releases."""
        stmt = sql_text(
            """
            SELECT e.refs->>'donation_id', SUM(p.amount_fen)
            FROM journal_entries e
            JOIN postings p ON p.entry_id = e.id
            JOIN donation_lots l ON l.donation_id = (e.refs->>'donation_id')::uuid
                                AND l.account_code = p.account_code
            WHERE e.kind IN ('donation_refund', 'donation_refund_release')
            GROUP BY 1
            """
        )
        return {r[0]: int(r[1]) for r in (await self.session.execute(stmt)).all()}

    # ------------------------------------------------------------ digests

    async def digest(self, day: date) -> LedgerDigest | None:
        return await self.session.get(LedgerDigest, day, populate_existing=True)

    async def all_digests(self) -> list[LedgerDigest]:
        stmt = select(LedgerDigest).order_by(LedgerDigest.day).execution_options(populate_existing=True)
        return list((await self.session.execute(stmt)).scalars())

    async def insert_digest(self, values: dict[str, Any]) -> None:
        await self.session.execute(
            insert(LedgerDigest).values(**values).on_conflict_do_nothing(index_elements=[LedgerDigest.day])
        )

    # ------------------------------------------------------------ accounts

    async def fund_exists(self, fund_id: uuid.UUID) -> bool:
        return await self.session.scalar(select(func.count()).where(Fund.id == fund_id)) == 1

    async def canteen_exists(self, canteen_id: uuid.UUID) -> bool:
        return await self.session.scalar(select(func.count()).where(Canteen.id == canteen_id)) == 1

    async def existing_account_codes(self, codes: Sequence[str]) -> set[str]:
        return set((await execute_core(self.session, _EXISTING_ACCOUNTS, {"codes": list(codes)})).scalars())

    async def create_account(self, values: dict[str, Any]) -> None:
        await self.session.execute(
            insert(LedgerAccount)
            .values(balance_fen=0, held_fen=0, **values)
            .on_conflict_do_nothing(index_elements=[LedgerAccount.code])
        )

    async def lock_accounts(self, codes: Sequence[str]) -> dict[str, LedgerAccount]:
        stmt = (
            select(LedgerAccount)
            .where(LedgerAccount.code.in_(sorted(set(codes))))
            .order_by(LedgerAccount.code)
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)
        )
        return {a.code: a for a in (await self.session.execute(stmt)).scalars()}

    async def free_fen(self, codes: Sequence[str]) -> int:
        """What these pools and funds can still give (balance not held), added up; one row read per account,
        no ORM objects (every booking that may draw on donated money asks)."""
        return int((await execute_core(self.session, FREE_FEN, {"codes": list(codes)})).scalar_one())

    async def accounts(self, codes: Sequence[str]) -> list[LedgerAccount]:
        stmt = select(LedgerAccount).where(LedgerAccount.code.in_(codes)).order_by(LedgerAccount.code)
        return list((await self.session.execute(stmt.execution_options(populate_existing=True))).scalars())

    async def add_to_balance(self, code: str, delta: int) -> None:
        await self.session.execute(
            update(LedgerAccount)
            .where(LedgerAccount.code == code)
            .values(balance_fen=LedgerAccount.balance_fen + delta)
        )

    async def add_to_balances(self, deltas: dict[str, int]) -> None:
        """Several accounts in one statement (the sealer's deferred balances), in code order."""
        items = sorted((code, delta) for code, delta in deltas.items() if delta)
        if not items:
            return
        await self.session.execute(
            sql_text(
                """
                UPDATE ledger_accounts AS a SET balance_fen = a.balance_fen + v.delta
                FROM unnest(CAST(:codes AS text[]), CAST(:deltas AS bigint[])) AS v(code, delta)
                WHERE a.code = v.code
                """
            ),
            {"codes": [c for c, _ in items], "deltas": [d for _, d in items]},
        )

    async def add_to_balance_within_funds(self, code: str, delta: int) -> bool:
        """A pool's or fund's balance moves only while it stays covered: ``-(balance + delta) - held >= 0``.
        The row stays locked until commit. False when it would not be covered (or the row is missing)."""
        stmt = (
            update(LedgerAccount)
            .where(
                LedgerAccount.code == code,
                -(LedgerAccount.balance_fen + delta) - LedgerAccount.held_fen >= 0,
            )
            .values(balance_fen=LedgerAccount.balance_fen + delta)
            .returning(LedgerAccount.code)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def add_to_held(self, code: str, delta: int) -> None:
        await self.session.execute(
            update(LedgerAccount)
            .where(LedgerAccount.code == code)
            .values(held_fen=LedgerAccount.held_fen + delta)
        )

    # ------------------------------------------------------------ lots

    async def lot_for_donation(self, donation_id: uuid.UUID, *, lock: bool = False) -> DonationLot | None:
        stmt = select(DonationLot).where(DonationLot.donation_id == donation_id)
        if lock:
            stmt = stmt.with_for_update()
        return (
            await self.session.execute(stmt.execution_options(populate_existing=True))
        ).scalar_one_or_none()

    async def lot_for_donation_or_ref(
        self, donation_id: uuid.UUID, source: str, external_ref: str
    ) -> DonationLot | None:
        """The lot of this donation, else the lot already holding this payment (for another donation)."""
        stmt = (
            select(DonationLot)
            .where(
                or_(
                    DonationLot.donation_id == donation_id,
                    and_(DonationLot.source == source, DonationLot.external_ref == external_ref),
                )
            )
            .order_by((DonationLot.donation_id == donation_id).desc())
            .limit(1)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def lots_for_donations_or_refs(
        self, donation_ids: Sequence[uuid.UUID], refs: Sequence[tuple[str, str]]
    ) -> list[DonationLot]:
        """The lots of these donations, and the lots already holding these payments (for other donations)."""
        result = await self.session.execute(
            _LOTS_FOR_DONATIONS_OR_REFS,
            {
                "donation_ids": list(donation_ids),
                "sources": [source for source, _ in refs],
                "refs": [ref for _, ref in refs],
            },
        )
        return list(result.scalars())

    async def fifo_lots(self, account_code: str, need_fen: int, *, page: int) -> list[Any]:
        """Lock and return the oldest lots of a pool (``paid_at, fifo_no``) that together cover ``need_fen``,
        or all of them when they do not: rows ``(id, donation_id, account_code, remaining_fen, paid_at,
        fifo_no)``. Only the lots needed are locked: each statement reads up to ``page`` lots in index order
        and keeps the prefix whose running total is still short of what is needed. The caller holds the pool's
        row lock, so no one else changes these lots meanwhile."""
        running = func.sum(DonationLot.remaining_fen).over(
            order_by=(DonationLot.paid_at, DonationLot.fifo_no), rows=(None, 0)
        )
        lots: list[Any] = []
        after: tuple[Any, int] | None = None
        while need_fen > 0:
            window = select(DonationLot.id, (running - DonationLot.remaining_fen).label("before")).where(
                DonationLot.account_code == account_code, DonationLot.remaining_fen > 0
            )
            if after is not None:
                window = window.where(
                    func.row(DonationLot.paid_at, DonationLot.fifo_no) > func.row(after[0], after[1])
                )
            prefix = window.order_by(DonationLot.paid_at, DonationLot.fifo_no).limit(page).subquery()
            stmt = (
                select(
                    DonationLot.id,
                    DonationLot.donation_id,
                    DonationLot.account_code,
                    DonationLot.remaining_fen,
                    DonationLot.paid_at,
                    DonationLot.fifo_no,
                )
                .where(DonationLot.id.in_(select(prefix.c.id).where(prefix.c.before < need_fen)))
                .order_by(DonationLot.paid_at, DonationLot.fifo_no)
                .with_for_update(of=DonationLot, key_share=True)
            )
            rows = list((await self.session.execute(stmt)).all())
            lots.extend(rows)
            need_fen -= sum(r.remaining_fen for r in rows)
            if len(rows) < page:  # the page held more than needed, or the pool has no more lots
                break
            after = (rows[-1].paid_at, rows[-1].fifo_no)
        return lots

    async def lock_lots(self, lot_ids: Sequence[uuid.UUID]) -> None:
        """Row locks on these lots, in ``fifo_no`` order."""
        if lot_ids:
            await self.session.execute(
                sql_text(
                    """
                    SELECT id FROM donation_lots WHERE id = ANY(CAST(:ids AS uuid[]))
                    ORDER BY fifo_no FOR NO KEY UPDATE
                    """
                ),
                {"ids": list(lot_ids)},
            )

    async def change_lot(
        self, lot_id: uuid.UUID, *, held: int = 0, allocated: int = 0, refunded: int = 0
    ) -> None:
        await self.session.execute(
            update(DonationLot)
            .where(DonationLot.id == lot_id)
            .values(
                held_fen=DonationLot.held_fen + held,
                allocated_fen=DonationLot.allocated_fen + allocated,
                refunded_fen=DonationLot.refunded_fen + refunded,
            )
        )

    async def all_lots(self) -> list[DonationLot]:
        stmt = select(DonationLot).order_by(DonationLot.fifo_no).execution_options(populate_existing=True)
        return list((await self.session.execute(stmt)).scalars())

    # ------------------------------------------------------------ holds and allocations

    async def all_holds(self) -> list[CharityHold]:
        stmt = select(CharityHold).execution_options(populate_existing=True)
        return list((await self.session.execute(stmt)).scalars())

    # The batch forms below take and give whole batches in one statement each (arrays through ``unnest``), so
    # that a batch of holds costs the same few round trips as one. Their rows come as the driver gives them
    # (its UUIDs are ``uuid.UUID``s), without a typed result per row, and are used as tuples.

    async def existing_canteens(self, canteen_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        stmt = sql_text("SELECT id FROM canteens WHERE id = ANY(CAST(:ids AS uuid[]))")
        return set((await self.session.execute(stmt, {"ids": list(canteen_ids)})).scalars())

    async def claim_holds(self, rows: Sequence[tuple[str, uuid.UUID, int]]) -> dict[str, uuid.UUID]:
        """Insert hold rows ``(hold_key, canteen_id, requested_fen)``, in the order given, skipping keys that
        exist (having waited for a concurrent transaction inserting the same key); ``{hold_key: id}`` of the
        rows this call created. Callers give the rows in key order, so two batches never wait on each other in
        a circle. A new row says it holds what it asks for (what most holds get, so most rows are written
        once); the caller corrects the others with ``set_holds_held`` before its transaction ends."""
        if not rows:
            return {}
        stmt = sql_text(
            """
            INSERT INTO charity_holds (id, hold_key, canteen_id, requested_fen, held_fen, status)
            SELECT gen_random_uuid(), v.hold_key, v.canteen_id, v.requested_fen, v.requested_fen, 'held'
            FROM unnest(CAST(:keys AS text[]), CAST(:canteens AS uuid[]), CAST(:requested AS bigint[]))
                 WITH ORDINALITY AS v(hold_key, canteen_id, requested_fen, n)
            ORDER BY v.n
            ON CONFLICT (hold_key) DO NOTHING
            RETURNING hold_key, id
            """
        )
        result = await self.session.execute(
            stmt,
            {
                "keys": [r[0] for r in rows],
                "canteens": [r[1] for r in rows],
                "requested": [r[2] for r in rows],
            },
        )
        return {key: hold_id for key, hold_id in result.all()}

    async def holds_by_keys(self, hold_keys: Sequence[str], *, lock: bool = False) -> list[HoldRow]:
        """These holds; with ``lock``, locked in key order."""
        sql = """
            SELECT id, hold_key, canteen_id, requested_fen, held_fen, status, entry_id FROM charity_holds
            WHERE hold_key = ANY(CAST(:keys AS text[])) ORDER BY hold_key
            """
        result = await self.session.execute(
            sql_text(sql + "FOR UPDATE" if lock else sql), {"keys": list(hold_keys)}
        )
        return [HoldRow(*row) for row in result.all()]

    async def delete_holds(self, hold_ids: Sequence[uuid.UUID]) -> None:
        """Undo ``claim_holds`` of this transaction (a batch refused after claiming, before reserving)."""
        await self.session.execute(
            sql_text("DELETE FROM charity_holds WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'held'"),
            {"ids": list(hold_ids)},
        )

    async def set_holds_held(self, rows: Sequence[tuple[uuid.UUID, int]]) -> None:
        """``(hold id, held_fen)``: what each of these holds actually got."""
        if not rows:
            return
        await self.session.execute(
            sql_text(
                """
                UPDATE charity_holds AS h SET held_fen = v.held_fen
                FROM unnest(CAST(:ids AS uuid[]), CAST(:held AS bigint[])) AS v(id, held_fen)
                WHERE h.id = v.id
                """
            ),
            {"ids": [r[0] for r in rows], "held": [r[1] for r in rows]},
        )

    async def resolve_holds(
        self, rows: Sequence[tuple[uuid.UUID, uuid.UUID | None]], *, status: str, resolved_at: Any
    ) -> None:
        """Posted or voided: ``(hold id, entry id or None)`` for each hold."""
        if not rows:
            return
        await self.session.execute(
            sql_text(
                """
                UPDATE charity_holds AS h
                SET status = CAST(:status AS text), entry_id = v.entry_id, resolved_at = :resolved_at
                FROM unnest(CAST(:ids AS uuid[]), CAST(:entries AS uuid[])) AS v(id, entry_id)
                WHERE h.id = v.id
                """
            ),
            {
                "ids": [r[0] for r in rows],
                "entries": [r[1] for r in rows],
                "status": status,
                "resolved_at": resolved_at,
            },
        )

    async def insert_allocations(
        self, rows: Sequence[tuple[uuid.UUID, uuid.UUID, uuid.UUID, str, int, str]]
    ) -> None:
        """New held allocations ``(lot_id, donation_id, hold_id, account_code, amount_fen, meta JSON)``."""
        if not rows:
            return
        await self.session.execute(
            sql_text(
                """
                INSERT INTO allocations
                    (id, lot_id, donation_id, hold_id, account_code, amount_fen, status, meta)
                SELECT gen_random_uuid(), v.lot_id, v.donation_id, v.hold_id, v.account_code, v.amount_fen,
                       'held', CAST(v.meta AS jsonb)
                FROM unnest(CAST(:lots AS uuid[]), CAST(:donations AS uuid[]), CAST(:holds AS uuid[]),
                            CAST(:accounts AS text[]), CAST(:amounts AS bigint[]), CAST(:metas AS text[]))
                     AS v(lot_id, donation_id, hold_id, account_code, amount_fen, meta)
                """
            ),
            {
                "lots": [r[0] for r in rows],
                "donations": [r[1] for r in rows],
                "holds": [r[2] for r in rows],
                "accounts": [r[3] for r in rows],
                "amounts": [r[4] for r in rows],
                "metas": [r[5] for r in rows],
            },
        )

    async def held_allocations(self, hold_ids: Sequence[uuid.UUID]) -> list[HeldAllocation]:
        """The still held allocations of these holds."""
        stmt = sql_text(
            """
            SELECT id, hold_id, lot_id, account_code, amount_fen, donation_id FROM allocations
            WHERE hold_id = ANY(CAST(:ids AS uuid[])) AND status = 'held'
            """
        )
        result = await self.session.execute(stmt, {"ids": list(hold_ids)})
        return [HeldAllocation(*row) for row in result.all()]

    async def resolve_allocations(
        self,
        allocation_ids: Sequence[uuid.UUID],
        *,
        status: str,
        resolved_at: Any,
        entry_ids: Sequence[uuid.UUID] | None = None,
        metas: Sequence[str] | None = None,
    ) -> None:
        """These held allocations become posted (each with its entry, and its meta, a JSON object as text,
        merged over what it shows) or voided (as they are)."""
        if not allocation_ids:
            return
        await self.session.execute(
            sql_text(
                """
                UPDATE allocations AS a
                SET status = CAST(:status AS text), resolved_at = :resolved_at, entry_id = v.entry_id,
                    meta = a.meta || COALESCE(CAST(v.meta AS jsonb), '{}')
                FROM unnest(CAST(:ids AS uuid[]), CAST(:entries AS uuid[]), CAST(:metas AS text[]))
                     AS v(id, entry_id, meta)
                WHERE a.id = v.id AND a.status = 'held'
                """
            ),
            {
                "ids": list(allocation_ids),
                "entries": list(entry_ids) if entry_ids is not None else [None] * len(allocation_ids),
                "metas": list(metas) if metas is not None else [None] * len(allocation_ids),
                "status": status,
                "resolved_at": resolved_at,
            },
        )

    async def change_lots(self, rows: Sequence[tuple[uuid.UUID, int, int]]) -> None:
        """``(lot id, Δ held_fen, Δ allocated_fen)``, one row per lot, on lots this transaction has locked."""
        if not rows:
            return
        await self.session.execute(
            sql_text(
                """
                UPDATE donation_lots AS l
                SET held_fen = l.held_fen + v.held, allocated_fen = l.allocated_fen + v.allocated
                FROM unnest(CAST(:ids AS uuid[]), CAST(:held AS bigint[]), CAST(:allocated AS bigint[]))
                     AS v(id, held, allocated)
                WHERE l.id = v.id
                """
            ),
            {"ids": [r[0] for r in rows], "held": [r[1] for r in rows], "allocated": [r[2] for r in rows]},
        )

    async def add_to_held_of(self, deltas: dict[str, int], *, spent: bool = False) -> None:
        """``held_fen`` of several accounts (locked by this transaction) in one statement; with ``spent``, a
        negative delta also moves the balance (held money paid out: ``balance − delta``)."""
        items = sorted((code, delta) for code, delta in deltas.items() if delta)
        if not items:
            return
        await self.session.execute(
            sql_text(
                """
                UPDATE ledger_accounts AS a
                SET held_fen = a.held_fen + v.delta,
                    balance_fen = a.balance_fen - CASE WHEN :spent THEN v.delta ELSE 0 END
                FROM unnest(CAST(:codes AS text[]), CAST(:deltas AS bigint[])) AS v(code, delta)
                WHERE a.code = v.code
                """
            ),
            {"codes": [c for c, _ in items], "deltas": [d for _, d in items], "spent": spent},
        )

    async def allocations_of_donation(self, donation_id: uuid.UUID) -> list[tuple[Allocation, CharityHold]]:
        stmt = (
            select(Allocation, CharityHold)
            .join(CharityHold, CharityHold.id == Allocation.hold_id)
            .where(Allocation.donation_id == donation_id)
            .order_by(Allocation.created_at, Allocation.id)
        )
        return [(a, h) for a, h in (await self.session.execute(stmt)).all()]

    async def allocation_sums(self) -> list[tuple[uuid.UUID, uuid.UUID, str, str, int]]:
        """(lot_id, hold_id, account_code, status, Σ amount) for every group of allocations."""
        stmt = select(
            Allocation.lot_id,
            Allocation.hold_id,
            Allocation.account_code,
            Allocation.status,
            func.sum(Allocation.amount_fen),
        ).group_by(Allocation.lot_id, Allocation.hold_id, Allocation.account_code, Allocation.status)
        return [(r[0], r[1], r[2], r[3], int(r[4])) for r in (await self.session.execute(stmt)).all()]

    async def booking_line_holds(self) -> list[tuple[str, int, str, uuid.UUID | None, str | None]]:
        """(booking line id, its charity portion, booking status, hold id, hold status) for every line with a
        charity portion or a hold keyed by it (a booking line's hold key is its id)."""
        stmt = sql_text(
            """
            SELECT bl.id::text, bl.charity_subsidy_fen, b.status, h.id, h.status
            FROM booking_lines bl
            JOIN bookings b ON b.id = bl.booking_id
            LEFT JOIN charity_holds h ON h.hold_key = bl.id::text
            WHERE bl.charity_subsidy_fen > 0 OR h.id IS NOT NULL
            """
        )
        return [(r[0], int(r[1]), r[2], r[3], r[4]) for r in (await self.session.execute(stmt)).all()]

    async def account_sum_before(self, code: str, day: date) -> int:
        """Σ postings of one account in entries of business days before ``day``."""
        stmt = (
            select(func.coalesce(func.sum(Posting.amount_fen), 0))
            .join(JournalEntry, JournalEntry.id == Posting.entry_id)
            .where(Posting.account_code == code, JournalEntry.day < day)
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def account_movements(
        self, code: str, first: date, last: date
    ) -> list[tuple[str, str | None, int, int]]:
        """(entry kind, canteen id of a meal subsidy or None, Σ fen, entries) of one account over [first, last]."""
        canteen = JournalEntry.refs["canteen_id"].astext
        stmt = (
            select(JournalEntry.kind, canteen, func.sum(Posting.amount_fen), func.count(Posting.id))
            .join(JournalEntry, JournalEntry.id == Posting.entry_id)
            .where(Posting.account_code == code, JournalEntry.day >= first, JournalEntry.day <= last)
            .group_by(JournalEntry.kind, canteen)
            .order_by(JournalEntry.kind, canteen)
        )
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in (await self.session.execute(stmt)).all()]

    async def canteen_names(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str]]:
        if not ids:
            return {}
        stmt = select(Canteen.id, Canteen.code, Canteen.name).where(Canteen.id.in_(ids))
        return {r[0]: (r[1], r[2]) for r in (await self.session.execute(stmt)).all()}

    async def fund(self, fund_id: uuid.UUID) -> Fund | None:
        return await self.session.get(Fund, fund_id)

    async def canteen(self, canteen_id: uuid.UUID) -> Canteen | None:
        return await self.session.get(Canteen, canteen_id)

    async def account_posting_sums(self, *, sealed_only: bool = False) -> dict[str, int]:
        stmt = select(Posting.account_code, func.sum(Posting.amount_fen)).group_by(Posting.account_code)
        if sealed_only:
            stmt = stmt.join(JournalSeal, JournalSeal.entry_id == Posting.entry_id)
        return {r[0]: int(r[1]) for r in (await self.session.execute(stmt)).all()}

    async def all_accounts(self) -> list[LedgerAccount]:
        stmt = select(LedgerAccount).order_by(LedgerAccount.code).execution_options(populate_existing=True)
        return list((await self.session.execute(stmt)).scalars())
