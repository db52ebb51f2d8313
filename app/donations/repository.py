"""SQL for donations: targets, orders, receipts, refunds, feed events. Donor scoping is a WHERE clause here."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import String, and_, any_, bindparam, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.feed.service import publish_after_commit
from app.kit.jsontext import json_text
from app.kit.locks import xact_lock
from app.kit.sql import execute_core, planned_once, sql_text
from app.kit.time import utcnow
from app.models import (
    Canteen,
    Donation,
    DonationInvoiceRequest,
    DonationRefund,
    DonationTarget,
    FeedEvent,
    Fund,
)
from app.models.donation import DonationStatus


class TargetLabel(NamedTuple):
    """What a payment's feed event says of its donation's target."""

    title: str
    kind: str


class PayableOrder(NamedTuple):
    """What a payment batch reads of an order it locks: the columns that check a notification against the order
    and that the payment writes from, not the whole row as an ORM object of the session (measured in-process: an
    object, loaded, given its paid values and let go at the commit, about 24 µs; the row as columns about 3 µs).
    ``complete_payments`` takes it where it takes a ``Donation``."""

    id: uuid.UUID
    out_trade_no: str | None
    status: str
    amount_fen: int
    transaction_id: str | None
    target_id: uuid.UUID
    target_account: str
    meals: int | None
    channel: str
    anonymous: bool
    display_name: str | None


# Built once, with the order numbers as one array: the same SQL text for any number of them, so each pooled
# connection prepares it once (an IN list is a new statement for every length). The array comes through a
# sub-select (``planned_once``). The order comes as ``PayableOrder``'s columns and the target as the two columns
# its feed event shows, not as objects.
_BY_OUT_TRADE_NOS = (
    select(
        *(getattr(Donation, name) for name in PayableOrder._fields), DonationTarget.title, DonationTarget.kind
    )
    .join(DonationTarget, DonationTarget.id == Donation.target_id)
    .where(Donation.out_trade_no == any_(planned_once(bindparam("out_trade_nos", type_=ARRAY(String)))))
    .order_by(Donation.id)
)
_LOCK_BY_OUT_TRADE_NOS = _BY_OUT_TRADE_NOS.with_for_update(of=Donation)
# the same, leaving out orders another transaction holds (a payment batch does not wait for them)
_LOCK_BY_OUT_TRADE_NOS_UNLESS_BUSY = _BY_OUT_TRADE_NOS.with_for_update(of=Donation, skip_locked=True)


# Reserves numbers of a year's receipt sequence. Written as text: a PostgreSQL ``insert()`` with ON CONFLICT
# is compiled again on every execution (see app/kit/sql.py), and the numberer runs after each burst of payments.
_ADVANCE_RECEIPT_COUNTER = text(
    """
    INSERT INTO receipt_counters (year, last_seq) VALUES (CAST(:year AS integer), CAST(:count AS integer))
    ON CONFLICT (year) DO UPDATE SET last_seq = receipt_counters.last_seq + EXCLUDED.last_seq
    RETURNING last_seq
    """
)


# The donations a batch pays, and their feed events, in one round trip; arrays keep the text fixed. The feed
# events are inserted in the batch's order, so their ids follow it.
# The arrays come through sub-selects (``planned_once``): one plan per connection, not one per execution.
_MARK_PAID = text(
    """
    WITH paid AS (
        UPDATE donations AS d
        SET status = 'paid', paid_at = v.paid_at, closed_at = NULL,
            transaction_id = COALESCE(v.transaction_id, d.transaction_id), updated_at = CAST(:at AS timestamptz)
        FROM unnest((SELECT CAST(:ids AS uuid[])), (SELECT CAST(:paid_at AS timestamptz[])),
                    (SELECT CAST(:transaction_ids AS text[])))
             AS v(id, paid_at, transaction_id)
        WHERE d.id = v.id
        RETURNING d.id
    )
    INSERT INTO feed_events (kind, occurred_at, payload)
    SELECT 'donation_paid', e.occurred_at, CAST(e.payload AS jsonb)
    FROM unnest((SELECT CAST(:paid_at AS timestamptz[])), (SELECT CAST(:payloads AS text[]))) WITH ORDINALITY
         AS e(occurred_at, payload, n)
    ORDER BY e.n
    RETURNING id, kind, payload, occurred_at, (SELECT count(*) FROM paid) AS donations_paid
    """
).columns(payload=JSONB)


_Locked = TypeVar("_Locked", Donation, DonationRefund)


class DonationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- targets

    async def get_target(self, code: str, *, active_only: bool = True) -> DonationTarget | None:
        stmt = select(DonationTarget).where(DonationTarget.code == code)
        if active_only:
            stmt = stmt.where(DonationTarget.is_active.is_(True))
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_target_by_id(self, target_id: uuid.UUID) -> DonationTarget | None:
        return await self.session.get(DonationTarget, target_id)

    async def targets_by_ids(self, target_ids: set[uuid.UUID]) -> dict[uuid.UUID, DonationTarget]:
        if not target_ids:
            return {}
        stmt = select(DonationTarget).where(DonationTarget.id.in_(target_ids))
        return {t.id: t for t in (await self.session.execute(stmt)).scalars()}

    async def list_targets(self, codes: list[str] | None = None) -> list[DonationTarget]:
        stmt = select(DonationTarget).where(DonationTarget.is_active.is_(True)).order_by(DonationTarget.code)
        if codes is not None:
            stmt = stmt.where(DonationTarget.code.in_(codes))
        return list((await self.session.execute(stmt)).scalars().all())

    async def target_names(self, target: DonationTarget) -> tuple[str | None, str | None]:
        canteen_name = fund_name = None
        if target.canteen_id:
            canteen_name = await self.session.scalar(
                select(Canteen.name).where(Canteen.id == target.canteen_id)
            )
        if target.fund_id:
            fund_name = await self.session.scalar(select(Fund.name).where(Fund.id == target.fund_id))
        return canteen_name, fund_name

    async def target_totals(self, target_id: uuid.UUID) -> tuple[int, int]:
        row = (
            await self.session.execute(
                select(
                    func.coalesce(func.sum(Donation.amount_fen - Donation.refunded_fen), 0), func.count()
                ).where(
                    Donation.target_id == target_id,
                    Donation.status.in_(
                        [DonationStatus.paid, DonationStatus.partially_refunded, DonationStatus.refunded]
                    ),
                )
            )
        ).one()
        return int(row[0]), int(row[1])

    async def count_scan(self, code: str) -> bool:
        result = await self.session.execute(
            update(DonationTarget)
            .where(DonationTarget.code == code, DonationTarget.is_active.is_(True))
            .values(scans=DonationTarget.scans + 1)
        )
        return bool(getattr(result, "rowcount", 0))

    async def canteen_ids_with_targets(self) -> set[uuid.UUID]:
        rows = await self.session.execute(
            select(DonationTarget.canteen_id).where(DonationTarget.canteen_id.isnot(None))
        )
        return {r[0] for r in rows}

    async def fund_ids_with_targets(self) -> set[uuid.UUID]:
        rows = await self.session.execute(
            select(DonationTarget.fund_id).where(DonationTarget.fund_id.isnot(None))
        )
        return {r[0] for r in rows}

    async def general_target(self) -> DonationTarget | None:
        return (
            await self.session.execute(
                select(DonationTarget).where(DonationTarget.kind == "general").limit(1)
            )
        ).scalar_one_or_none()

    async def add(self, obj: Any) -> None:
        self.session.add(obj)
        await self.session.flush()

    # -- donations

    async def get(self, donation_id: uuid.UUID, *, lock: bool = False) -> Donation | None:
        stmt = select(Donation).where(Donation.id == donation_id)
        if lock:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_for_donor(
        self, donation_id: uuid.UUID, donor_user_id: uuid.UUID, *, lock: bool = False
    ) -> Donation | None:
        stmt = select(Donation).where(Donation.id == donation_id, Donation.donor_user_id == donor_user_id)
        if lock:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def lock_by_out_trade_no(self, out_trade_no: str) -> Donation | None:
        return (
            await self.session.execute(
                select(Donation).where(Donation.out_trade_no == out_trade_no).with_for_update()
            )
        ).scalar_one_or_none()

    async def lock_by_out_trade_nos(
        self, out_trade_nos: list[str], *, unless_busy: bool = False
    ) -> dict[str, tuple[PayableOrder, TargetLabel]]:
        """Row-lock many orders at once, in id order (two batches never deadlock), fresh from the database, each
        with its target's label (read in the same round trip, not locked). ``unless_busy``: without waiting; an
        order another transaction holds is left out, as an unknown one is. The orders come as ``PayableOrder``
        values, not as objects of the session."""
        if not out_trade_nos:
            return {}
        statement = _LOCK_BY_OUT_TRADE_NOS_UNLESS_BUSY if unless_busy else _LOCK_BY_OUT_TRADE_NOS
        rows = await execute_core(self.session, statement, {"out_trade_nos": list(out_trade_nos)})
        fields = len(PayableOrder._fields)
        out: dict[str, tuple[PayableOrder, TargetLabel]] = {}
        for row in rows:
            order = PayableOrder._make(row[:fields])
            if order.out_trade_no:
                out[order.out_trade_no] = (order, TargetLabel(row[fields], row[fields + 1]))
        return out

    async def list_for_donor(
        self, donor_user_id: uuid.UUID, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Donation]:
        stmt = (
            select(Donation)
            .where(Donation.donor_user_id == donor_user_id)
            .order_by(Donation.created_at.desc(), Donation.id.desc())
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(
                or_(
                    Donation.created_at < after[0],
                    and_(Donation.created_at == after[0], Donation.id < after[1]),
                )
            )
        return list((await self.session.execute(stmt)).scalars().all())

    async def pending_to_check(self, *, created_before: datetime, limit: int) -> list[Donation]:
        """Unpaid WeChat orders old enough that a notification should have come. A read, nothing locked: the
        caller asks WeChat Pay about them with no transaction open, then locks what it changes
        (``lock_unless_busy``)."""
        stmt = (
            select(Donation)
            .where(
                Donation.status == DonationStatus.pending,
                Donation.channel == "wechatpay",
                Donation.created_at < created_before,
            )
            .order_by(Donation.expires_at)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars().all())

    async def lock_unless_busy(self, donation_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Donation]:
        """These donations, locked and read again, except those another transaction holds (skipped, not
        waited for)."""
        return await self._lock_unless_busy(Donation, donation_ids)

    async def _lock_unless_busy(
        self, model: type[_Locked], ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, _Locked]:
        stmt = select(model).where(model.id.in_(ids)).order_by(model.id).with_for_update(skip_locked=True)
        rows = await self.session.execute(stmt, execution_options={"populate_existing": True})
        return {row.id: row for row in rows.scalars()}

    async def lock_receipts(self, *, wait: bool) -> bool:
        """The receipt numberer's lock: one transaction at a time hands out numbers."""
        return await xact_lock(self.session, "donations:receipts", wait=wait)

    async def receipts_pending(self, limit: int) -> list[tuple[uuid.UUID, datetime]]:
        """Paid donations without a receipt number, in payment order."""
        stmt = (
            select(Donation.id, Donation.paid_at)
            .where(Donation.receipt_no.is_(None), Donation.paid_at.is_not(None))
            .order_by(Donation.paid_at, Donation.id)
            .limit(limit)
        )
        return [(r[0], r[1]) for r in (await self.session.execute(stmt)).all()]

    async def advance_receipt_counter(self, year: int, count: int) -> int:
        """Reserve ``count`` numbers of ``year``; returns the last of them."""
        result = await execute_core(self.session, _ADVANCE_RECEIPT_COUNTER, {"year": year, "count": count})
        return int(result.scalar_one())

    async def set_receipts(self, rows: list[tuple[uuid.UUID, int, int]]) -> None:
        """``(donation id, year, seq)`` for each, in one statement."""
        await self.session.execute(
            sql_text(
                """
                UPDATE donations AS d
                SET receipt_year = v.year, receipt_seq = v.seq,
                    receipt_no = 'SY' || v.year || lpad(v.seq::text, 8, '0'), updated_at = now()
                FROM unnest(CAST(:ids AS uuid[]), CAST(:years AS integer[]), CAST(:seqs AS integer[]))
                     AS v(id, year, seq)
                WHERE d.id = v.id AND d.receipt_no IS NULL
                """
            ),
            {"ids": [r[0] for r in rows], "years": [r[1] for r in rows], "seqs": [r[2] for r in rows]},
        )

    async def voucher_exists(self, voucher_no: str) -> bool:
        count = await self.session.scalar(select(func.count()).where(Donation.voucher_no == voucher_no))
        return bool(count)

    # -- invoice requests

    async def get_invoice_request(self, donation_id: uuid.UUID) -> DonationInvoiceRequest | None:
        return (
            await self.session.execute(
                select(DonationInvoiceRequest).where(DonationInvoiceRequest.donation_id == donation_id)
            )
        ).scalar_one_or_none()

    # -- refunds

    async def open_refund(self, donation_id: uuid.UUID) -> DonationRefund | None:
        return (
            await self.session.execute(
                select(DonationRefund).where(
                    DonationRefund.donation_id == donation_id,
                    DonationRefund.status.in_(["requested", "processing"]),
                )
            )
        ).scalar_one_or_none()

    async def get_refund(self, refund_id: uuid.UUID, *, lock: bool = False) -> DonationRefund | None:
        stmt = select(DonationRefund).where(DonationRefund.id == refund_id)
        if lock:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def refunds_of_donation(self, donation_id: uuid.UUID) -> list[DonationRefund]:
        stmt = (
            select(DonationRefund)
            .where(DonationRefund.donation_id == donation_id)
            .order_by(DonationRefund.created_at.desc(), DonationRefund.id.desc())
        )
        return list((await self.session.execute(stmt)).scalars())

    async def list_refunds(
        self, *, status: str | None, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[DonationRefund]:
        """Newest first; ``after`` is the (created_at, id) of the last one of the previous page."""
        stmt = select(DonationRefund).order_by(DonationRefund.created_at.desc(), DonationRefund.id.desc())
        if status is not None:
            stmt = stmt.where(DonationRefund.status == status)
        if after is not None:
            stmt = stmt.where(
                or_(
                    DonationRefund.created_at < after[0],
                    and_(DonationRefund.created_at == after[0], DonationRefund.id < after[1]),
                )
            )
        return list((await self.session.execute(stmt.limit(limit))).scalars())

    async def refunds_to_check(self, *, decided_before: datetime, limit: int) -> list[DonationRefund]:
        """Approved WeChat Pay refunds still waiting for their outcome, oldest decision first."""
        stmt = (
            select(DonationRefund)
            .where(DonationRefund.status == "processing", DonationRefund.decided_at < decided_before)
            .order_by(DonationRefund.decided_at, DonationRefund.id)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def lock_refunds_unless_busy(
        self, refund_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, DonationRefund]:
        """These refunds, locked and read again, except those another transaction holds (skipped)."""
        return await self._lock_unless_busy(DonationRefund, refund_ids)

    async def lock_refund_by_out_refund_no(self, out_refund_no: str) -> DonationRefund | None:
        return (
            await self.session.execute(
                select(DonationRefund).where(DonationRefund.out_refund_no == out_refund_no).with_for_update()
            )
        ).scalar_one_or_none()

    # -- public feed

    async def mark_paid(
        self, payments: list[tuple[Donation | PayableOrder, datetime, str | None, dict[str, Any]]]
    ) -> None:
        """Mark locked donations paid and add their ``donation_paid`` feed events, in one statement for the
        batch: ``(donation, paid_at, transaction id or None to keep the one it has, feed payload)``. Donation
        objects take the values written, as if they had been flushed (a ``PayableOrder`` is a value: nothing
        reads it after)."""
        if not payments:
            return
        at = utcnow()
        rows = (
            await execute_core(
                self.session,
                _MARK_PAID,
                {
                    "ids": [d.id for d, _, _, _ in payments],
                    "paid_at": [paid_at for _, paid_at, _, _ in payments],
                    "transaction_ids": [tx for _, _, tx, _ in payments],
                    "payloads": [json_text(feed) for _, _, _, feed in payments],
                    "at": at,
                },
            )
        ).all()
        if len(rows) != len(payments) or rows[0].donations_paid != len(payments):
            raise RuntimeError(f"mark_paid: {len(payments)} payments, {len(rows)} feed events, not all paid")
        for donation, paid_at, tx, _ in payments:
            if not isinstance(donation, Donation):
                continue
            set_committed_value(donation, "status", DonationStatus.paid.value)
            set_committed_value(donation, "paid_at", paid_at)
            set_committed_value(donation, "closed_at", None)
            if tx is not None:
                set_committed_value(donation, "transaction_id", tx)
            set_committed_value(donation, "updated_at", at)
        publish_after_commit(self.session, rows)

    async def add_feed_event(self, kind: str, payload: dict[str, Any], occurred_at: datetime) -> None:
        await self.add_feed_events([(kind, payload, occurred_at)])

    async def add_feed_events(self, events: list[tuple[str, dict[str, Any], datetime]]) -> None:
        """One flush for many (published after commit by ``app.feed.service``, one message each)."""
        self.session.add_all(
            [
                FeedEvent(kind=kind, payload=payload, occurred_at=occurred_at)
                for kind, payload, occurred_at in events
            ]
        )
        await self.session.flush()
