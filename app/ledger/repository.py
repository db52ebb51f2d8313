"""SQL for the ledger. Row locks are always taken in one order: chain lock → hold row → accounts (by code) →
lots (by fifo_no); that order is what keeps concurrent posts, holds, voids and refunds free of deadlocks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any, cast

from sqlalchemy import Table, and_, func, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from app.kit.locks import xact_lock, xact_locks
from app.models import (
    Allocation,
    Canteen,
    CharityHold,
    DonationLot,
    Fund,
    JournalEntry,
    LedgerAccount,
    LedgerDigest,
    Posting,
)


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

    async def unsealed(self, limit: int) -> list[JournalEntry]:
        stmt = (
            select(JournalEntry)
            .where(JournalEntry.seq.is_(None))
            .order_by(JournalEntry.created_at, JournalEntry.id)
            .limit(limit)
        )
        return list((await self.session.execute(stmt.execution_options(populate_existing=True))).scalars())

    async def has_unsealed(self, entry_ids: Sequence[uuid.UUID] | None = None) -> bool:
        stmt = select(JournalEntry.id).where(JournalEntry.seq.is_(None))
        if entry_ids is not None:
            stmt = stmt.where(JournalEntry.id.in_(entry_ids))
        return (await self.session.execute(stmt.limit(1))).first() is not None

    async def seal_rows(self, rows: Sequence[tuple[uuid.UUID, int, str, str]]) -> None:
        """One UPDATE for a batch: ``(entry id, seq, prev_hash, hash)``; the trigger lets only this through."""
        await self.session.execute(
            text(
                """
                UPDATE journal_entries AS e SET seq = v.seq, prev_hash = v.prev_hash, hash = v.hash
                FROM unnest(CAST(:ids AS uuid[]), CAST(:seqs AS bigint[]), CAST(:prevs AS text[]),
                            CAST(:hashes AS text[])) AS v(id, seq, prev_hash, hash)
                WHERE e.id = v.id AND e.seq IS NULL
                """
            ),
            {
                "ids": [r[0] for r in rows],
                "seqs": [r[1] for r in rows],
                "prevs": [r[2] for r in rows],
                "hashes": [r[3] for r in rows],
            },
        )

    async def unsealed_sums(self, codes: Sequence[str]) -> dict[str, int]:
        """Σ postings of entries not sealed yet, per account (what a deferred balance has still to add)."""
        stmt = (
            select(Posting.account_code, func.sum(Posting.amount_fen))
            .join(JournalEntry, JournalEntry.id == Posting.entry_id)
            .where(JournalEntry.seq.is_(None), Posting.account_code.in_(codes))
            .group_by(Posting.account_code)
        )
        return {code: int(total) for code, total in (await self.session.execute(stmt)).all()}

    async def chain_head(self) -> tuple[int, str] | None:
        row = (
            await self.session.execute(
                select(JournalEntry.seq, JournalEntry.hash)
                .where(JournalEntry.seq.is_not(None))
                .order_by(JournalEntry.seq.desc())
                .limit(1)
            )
        ).first()
        return (row[0], row[1]) if row else None

    async def entry_by_key(self, business_key: str) -> JournalEntry | None:
        return (
            await self.session.execute(select(JournalEntry).where(JournalEntry.business_key == business_key))
        ).scalar_one_or_none()

    async def entry_by_id(self, entry_id: uuid.UUID) -> JournalEntry | None:
        return await self.session.get(JournalEntry, entry_id)

    async def entries_by_ids(self, entry_ids: Sequence[uuid.UUID]) -> list[JournalEntry]:
        stmt = select(JournalEntry).where(JournalEntry.id.in_(entry_ids)).order_by(JournalEntry.seq)
        return list((await self.session.execute(stmt.execution_options(populate_existing=True))).scalars())

    async def entries_by_keys(self, business_keys: Sequence[str]) -> dict[str, JournalEntry]:
        stmt = select(JournalEntry).where(JournalEntry.business_key.in_(business_keys))
        return {e.business_key: e for e in (await self.session.execute(stmt)).scalars()}

    async def insert_entries(
        self, entries: Sequence[tuple[JournalEntry, Sequence[tuple[str, int]]]]
    ) -> set[str]:
        """Insert unsealed entries and their postings in two statements; the business keys written. A key that
        exists is skipped (nothing of it written), having waited for a concurrent transaction holding it."""
        columns = [c.key for c in JournalEntry.__table__.columns if c.key not in ("seq", "prev_hash", "hash")]
        table = cast(Table, JournalEntry.__table__)
        result = await self.session.execute(
            insert(table)
            .on_conflict_do_nothing(index_elements=[table.c.business_key])
            .returning(table.c.business_key),
            [{k: getattr(entry, k) for k in columns} for entry, _ in entries],
        )
        written = set(result.scalars())
        rows: list[dict[str, Any]] = []
        for entry, postings in entries:
            if entry.business_key not in written:
                continue
            make_transient_to_detached(entry)  # the row exists now: the object joins the session, no INSERT
            self.session.add(entry)
            rows.extend(
                {"entry_id": entry.id, "line_no": i, "account_code": account, "amount_fen": amount}
                for i, (account, amount) in enumerate(postings, start=1)
            )
        if rows:
            await self.session.execute(insert(cast(Table, Posting.__table__)), rows)
        return written

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
        stmt = select(JournalEntry).where(JournalEntry.seq > seq).order_by(JournalEntry.seq).limit(limit)
        return list((await self.session.execute(stmt.execution_options(populate_existing=True))).scalars())

    async def day_hashes(self, day: date) -> list[tuple[uuid.UUID, int, str]]:
        stmt = (
            select(JournalEntry.id, JournalEntry.seq, JournalEntry.hash)
            .where(JournalEntry.day == day, JournalEntry.seq.is_not(None))
            .order_by(JournalEntry.seq)
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
        stmt = (
            select(JournalEntry.id)
            .where(JournalEntry.kind == "donation_refund")
            .where(JournalEntry.refs["donation_id"].astext == str(donation_id))
            .order_by(JournalEntry.seq)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def refunded_by_donation(self) -> dict[str, int]:
        """Σ refunded fen per donation, from the refund entries' postings to the donation's pool."""
        stmt = text(
            """
            SELECT e.refs->>'donation_id', SUM(p.amount_fen)
            FROM journal_entries e JOIN postings p ON p.entry_id = e.id
            WHERE e.kind = 'donation_refund' AND p.amount_fen > 0
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
        stmt = select(LedgerAccount.code).where(LedgerAccount.code.in_(codes))
        return set((await self.session.execute(stmt)).scalars())

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
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return {a.code: a for a in (await self.session.execute(stmt)).scalars()}

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
            text(
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
        stmt = select(DonationLot).where(
            or_(
                DonationLot.donation_id.in_(donation_ids),
                tuple_(DonationLot.source, DonationLot.external_ref).in_(list(refs)),
            )
        )
        return list((await self.session.execute(stmt)).scalars())

    async def add_lots(self, lots: Sequence[DonationLot]) -> None:
        if lots:
            self.session.add_all(lots)
            await self.session.flush(lots)

    async def fifo_lots(
        self, account_code: str, *, after: tuple[Any, int] | None, limit: int
    ) -> list[DonationLot]:
        stmt = select(DonationLot).where(
            DonationLot.account_code == account_code, DonationLot.remaining_fen > 0
        )
        if after is not None:
            stmt = stmt.where(
                func.row(DonationLot.paid_at, DonationLot.fifo_no) > func.row(after[0], after[1])
            )
        stmt = (
            stmt.order_by(DonationLot.paid_at, DonationLot.fifo_no)
            .limit(limit)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def lock_lots(self, lot_ids: Sequence[uuid.UUID]) -> list[DonationLot]:
        stmt = (
            select(DonationLot)
            .where(DonationLot.id.in_(lot_ids))
            .order_by(DonationLot.fifo_no)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return list((await self.session.execute(stmt)).scalars())

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

    async def claim_hold(self, values: dict[str, Any]) -> uuid.UUID | None:
        """Insert the hold row unless ``hold_key`` exists; the id when this call created it."""
        stmt = (
            insert(CharityHold)
            .values(id=uuid.uuid4(), held_fen=0, status="held", **values)
            .on_conflict_do_nothing(index_elements=[CharityHold.hold_key])
            .returning(CharityHold.id)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def hold_by_key(self, hold_key: str, *, lock: bool = False) -> CharityHold | None:
        stmt = select(CharityHold).where(CharityHold.hold_key == hold_key)
        if lock:
            stmt = stmt.with_for_update()
        return (
            await self.session.execute(stmt.execution_options(populate_existing=True))
        ).scalar_one_or_none()

    async def set_hold(self, hold_id: uuid.UUID, **values: Any) -> None:
        await self.session.execute(update(CharityHold).where(CharityHold.id == hold_id).values(**values))

    async def all_holds(self) -> list[CharityHold]:
        stmt = select(CharityHold).execution_options(populate_existing=True)
        return list((await self.session.execute(stmt)).scalars())

    async def add_allocations(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(insert(Allocation), [{"id": uuid.uuid4(), **r} for r in rows])

    async def allocations_of_hold(self, hold_id: uuid.UUID) -> list[Allocation]:
        stmt = (
            select(Allocation)
            .where(Allocation.hold_id == hold_id)
            .order_by(Allocation.created_at, Allocation.id)
            .execution_options(populate_existing=True)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def set_allocations(self, hold_id: uuid.UUID, *, status_from: str, **values: Any) -> None:
        await self.session.execute(
            update(Allocation)
            .where(Allocation.hold_id == hold_id, Allocation.status == status_from)
            .values(**values)
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
        stmt = text(
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
            stmt = stmt.join(JournalEntry, JournalEntry.id == Posting.entry_id).where(
                JournalEntry.seq.is_not(None)
            )
        return {r[0]: int(r[1]) for r in (await self.session.execute(stmt)).all()}

    async def all_accounts(self) -> list[LedgerAccount]:
        stmt = select(LedgerAccount).order_by(LedgerAccount.code).execution_options(populate_existing=True)
        return list((await self.session.execute(stmt)).scalars())
