"""SQL for reconciliation. The bill's rows go by COPY into a temporary table (dropped at commit) and are
matched against donations and refunds in set-based SQL, so a million-row bill needs neither a million
queries nor a million objects in memory."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, delete, func, literal, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import FeedEvent, ReconciliationDiscrepancy, ReconciliationRun
from app.reconciliation.parser import ROW_COLUMNS, BillRow

BILL_TABLE = "recon_bill_rows"

_CREATE_BILL_TABLE = f"""
CREATE TEMP TABLE {BILL_TABLE} (
    line_no integer NOT NULL,
    kind text NOT NULL,
    trade_state text NOT NULL,
    transaction_id text,
    out_trade_no text NOT NULL,
    refund_id text,
    out_refund_no text,
    amount_fen bigint NOT NULL,
    fee_fen bigint NOT NULL
) ON COMMIT DROP
"""

# Each bill row is classified once; our own payments/refunds of the day that the bill lacks are added.
_CLASSIFY = f"""
WITH pay AS (
    SELECT b.line_no, b.trade_state AS bill_status, b.transaction_id, b.out_trade_no,
           NULL::text AS out_refund_no, b.amount_fen AS bill_amount_fen,
           d.id AS donation_id, NULL::uuid AS refund_id, d.amount_fen AS ledger_amount_fen,
           d.status AS ledger_status,
           CASE
               WHEN d.id IS NULL OR d.status IN ('pending', 'closed') THEN 'missing_in_ledger'
               WHEN d.amount_fen <> b.amount_fen THEN 'amount_mismatch'
               WHEN d.transaction_id IS DISTINCT FROM b.transaction_id THEN 'status_mismatch'
               ELSE 'matched'
           END AS state,
           CASE
               WHEN d.id IS NOT NULL AND d.status NOT IN ('pending', 'closed')
                    AND d.amount_fen = b.amount_fen
                    AND d.transaction_id IS DISTINCT FROM b.transaction_id
               THEN jsonb_build_object('reason', 'transaction_id',
                                       'ledger_transaction_id', d.transaction_id)
               ELSE '{{}}'::jsonb
           END AS detail,
           'pay:' || b.out_trade_no AS ref_key
    FROM {BILL_TABLE} b
    LEFT JOIN donations d ON d.out_trade_no = b.out_trade_no AND d.channel = 'wechatpay'
    WHERE b.kind = 'payment'
), refund AS (
    SELECT b.line_no, b.trade_state, b.transaction_id, b.out_trade_no, b.out_refund_no, b.amount_fen,
           d.id, r.id, r.amount_fen, r.status,
           CASE
               WHEN r.id IS NULL THEN 'missing_in_ledger'
               WHEN r.amount_fen <> b.amount_fen THEN 'amount_mismatch'
               WHEN r.status <> 'succeeded' OR d.out_trade_no IS DISTINCT FROM b.out_trade_no
                   THEN 'status_mismatch'
               ELSE 'matched'
           END,
           CASE
               WHEN r.id IS NOT NULL AND r.amount_fen = b.amount_fen
                    AND r.status = 'succeeded' AND d.out_trade_no IS DISTINCT FROM b.out_trade_no
               THEN jsonb_build_object('reason', 'out_trade_no', 'ledger_out_trade_no', d.out_trade_no)
               ELSE '{{}}'::jsonb
           END,
           'refund:' || b.out_refund_no
    FROM {BILL_TABLE} b
    LEFT JOIN donation_refunds r ON r.out_refund_no = b.out_refund_no
    LEFT JOIN donations d ON d.id = r.donation_id
    WHERE b.kind = 'refund'
), other AS (
    SELECT b.line_no, b.trade_state, b.transaction_id, b.out_trade_no, NULL::text, b.amount_fen,
           d.id, NULL::uuid, d.amount_fen, d.status,
           CASE WHEN d.status IN ('paid', 'partially_refunded', 'refunded') THEN 'status_mismatch'
                ELSE 'matched' END,
           '{{}}'::jsonb,
           'pay:' || b.out_trade_no
    FROM {BILL_TABLE} b
    LEFT JOIN donations d ON d.out_trade_no = b.out_trade_no AND d.channel = 'wechatpay'
    WHERE b.kind = 'other'
), ours_pay AS (
    SELECT NULL::integer, NULL::text, d.transaction_id, d.out_trade_no, NULL::text, NULL::bigint,
           d.id, NULL::uuid, d.amount_fen, d.status, 'missing_in_bill', '{{}}'::jsonb,
           'pay:' || d.out_trade_no
    FROM donations d
    WHERE d.channel = 'wechatpay' AND d.status IN ('paid', 'partially_refunded', 'refunded')
      AND d.paid_at >= :start AND d.paid_at < :end
      AND NOT EXISTS (SELECT 1 FROM {BILL_TABLE} b
                      WHERE b.kind <> 'refund' AND b.out_trade_no = d.out_trade_no)
), ours_refund AS (
    SELECT NULL::integer, NULL::text, d.transaction_id, d.out_trade_no, r.out_refund_no, NULL::bigint,
           d.id, r.id, r.amount_fen, r.status, 'missing_in_bill', '{{}}'::jsonb,
           'refund:' || r.out_refund_no
    FROM donation_refunds r
    JOIN donations d ON d.id = r.donation_id
    WHERE d.channel = 'wechatpay' AND r.status = 'succeeded'
      AND r.succeeded_at >= :start AND r.succeeded_at < :end
      AND NOT EXISTS (SELECT 1 FROM {BILL_TABLE} b
                      WHERE b.kind = 'refund' AND b.out_refund_no = r.out_refund_no)
), classified AS (
    SELECT * FROM pay UNION ALL SELECT * FROM refund UNION ALL SELECT * FROM other
    UNION ALL SELECT * FROM ours_pay UNION ALL SELECT * FROM ours_refund
), stored AS (
    -- the run's open discrepancies were deleted just before; a resolved one that recurs is kept as it is
    INSERT INTO reconciliation_discrepancies (
        id, run_id, kind, ref_key, out_trade_no, transaction_id, out_refund_no, donation_id, refund_id,
        bill_line, bill_amount_fen, ledger_amount_fen, bill_status, ledger_status, detail, status,
        created_at, updated_at)
    SELECT (:id_prefix || lpad(to_hex(row_number() OVER (ORDER BY c.state COLLATE "C", c.ref_key COLLATE "C")),
                               12, '0'))::uuid,
           :run_id, c.state, c.ref_key, c.out_trade_no, c.transaction_id,
           c.out_refund_no, c.donation_id, c.refund_id, c.line_no, c.bill_amount_fen,
           c.ledger_amount_fen, c.bill_status, c.ledger_status, c.detail, 'open', now(), now()
    FROM classified c
    WHERE c.state <> 'matched'
      AND NOT EXISTS (SELECT 1 FROM reconciliation_discrepancies r
                      WHERE r.run_id = :run_id AND r.status = 'resolved'
                        AND r.kind = c.state AND r.ref_key = c.ref_key)
    ORDER BY c.state COLLATE "C", c.ref_key COLLATE "C"
)
SELECT c.state, count(*) FROM classified c GROUP BY c.state
"""


class ReconciliationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ---------------------------------------------------------------- the bill, in a temporary table

    async def create_bill_table(self) -> None:
        # hash joins and aggregates over a million bill rows stay in memory on the server
        await self.session.execute(text("SET LOCAL work_mem = '128MB'"))
        await self.session.execute(text(f"DROP TABLE IF EXISTS pg_temp.{BILL_TABLE}"))
        await self.session.execute(text(_CREATE_BILL_TABLE))

    async def copy_bill_rows(self, rows: Sequence[BillRow]) -> None:
        connection = await self.session.connection()
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.copy_records_to_table(BILL_TABLE, records=rows, columns=list(ROW_COLUMNS))

    async def analyze_bill_table(self) -> None:
        # indexes built once after the bulk load, so the "ours but not in the bill" probes stay cheap
        # whatever plan the server picks
        await self.session.execute(text(f"CREATE INDEX ON {BILL_TABLE} (out_trade_no)"))
        await self.session.execute(text(f"CREATE INDEX ON {BILL_TABLE} (out_refund_no)"))
        await self.session.execute(text(f"ANALYZE {BILL_TABLE}"))

    async def duplicate_bill_rows(self) -> tuple[str, int, int] | None:
        """The first business object that appears on two lines of the bill: (key, first line, second line)."""
        row = (
            await self.session.execute(
                text(
                    f"""
                    SELECT key, min(line_no), max(line_no) FROM (
                        SELECT CASE WHEN kind = 'refund' THEN 'refund:' || out_refund_no
                                    ELSE 'pay:' || out_trade_no END AS key, line_no
                        FROM {BILL_TABLE}) k
                    GROUP BY key HAVING count(*) > 1 ORDER BY min(line_no) LIMIT 1
                    """
                )
            )
        ).first()
        return None if row is None else (str(row[0]), int(row[1]), int(row[2]))

    async def classify(self, run_id: uuid.UUID, start: datetime, end: datetime) -> dict[str, int]:
        """Store every disagreement as an open discrepancy of ``run_id`` (a resolved one with the same key and
        kind is kept as it is) and return how many rows fell into each state."""
        # ids ascend in (kind, ref_key) order within a run, like the unique index: a million discrepancies
        # are appended to both indexes instead of being scattered over them
        p = uuid.uuid4().hex
        id_prefix = f"{p[:8]}-{p[8:12]}-4{p[13:16]}-8{p[17:20]}-"
        result = await self.session.execute(
            text(_CLASSIFY), {"run_id": run_id, "start": start, "end": end, "id_prefix": id_prefix}
        )
        return {str(state): int(n) for state, n in result.all()}

    # ---------------------------------------------------------------- runs

    async def lock_or_create_run(
        self, bill_date: date, values: dict[str, Any]
    ) -> tuple[ReconciliationRun, bool]:
        """The date's run, row-locked (concurrent runs of one date take turns). Created when missing."""
        inserted = await self.session.execute(
            insert(ReconciliationRun)
            .values(id=uuid.uuid4(), bill_date=bill_date, **values)
            .on_conflict_do_nothing(index_elements=["bill_date"])
            .returning(ReconciliationRun.id)
        )
        created = inserted.scalar_one_or_none() is not None
        run = (
            await self.session.execute(
                select(ReconciliationRun)
                .where(ReconciliationRun.bill_date == bill_date)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).scalar_one()
        return run, created

    async def get_run(self, run_id: uuid.UUID, *, lock: bool = False) -> ReconciliationRun | None:
        stmt = select(ReconciliationRun).where(ReconciliationRun.id == run_id)
        if lock:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_runs(self, limit: int) -> list[ReconciliationRun]:
        stmt = select(ReconciliationRun).order_by(ReconciliationRun.bill_date.desc()).limit(limit)
        return list((await self.session.execute(stmt)).scalars())

    async def delete_open(self, run_id: uuid.UUID) -> None:
        await self.session.execute(
            delete(ReconciliationDiscrepancy).where(
                ReconciliationDiscrepancy.run_id == run_id, ReconciliationDiscrepancy.status == "open"
            )
        )

    async def count_by_status(self, run_id: uuid.UUID) -> dict[str, int]:
        rows = await self.session.execute(
            select(ReconciliationDiscrepancy.status, func.count())
            .where(ReconciliationDiscrepancy.run_id == run_id)
            .group_by(ReconciliationDiscrepancy.status)
        )
        return {str(s): int(n) for s, n in rows.all()}

    # ---------------------------------------------------------------- discrepancies

    def _discrepancies(self, run_id: uuid.UUID, status: str | None, kind: str | None) -> Select[Any]:
        stmt = select(ReconciliationDiscrepancy).where(ReconciliationDiscrepancy.run_id == run_id)
        if status:
            stmt = stmt.where(ReconciliationDiscrepancy.status == status)
        if kind:
            stmt = stmt.where(ReconciliationDiscrepancy.kind == kind)
        return stmt

    async def page_discrepancies(
        self,
        run_id: uuid.UUID,
        *,
        status: str | None,
        kind: str | None,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[ReconciliationDiscrepancy]:
        stmt = self._discrepancies(run_id, status, kind)
        if after is not None:
            stmt = stmt.where(
                tuple_(ReconciliationDiscrepancy.kind, ReconciliationDiscrepancy.ref_key)
                > tuple_(literal(after[0]), literal(after[1]))
            )
        stmt = stmt.order_by(ReconciliationDiscrepancy.kind, ReconciliationDiscrepancy.ref_key).limit(limit)
        return list((await self.session.execute(stmt)).scalars())

    async def get_discrepancy(
        self, discrepancy_id: uuid.UUID, *, lock: bool = False
    ) -> ReconciliationDiscrepancy | None:
        stmt = select(ReconciliationDiscrepancy).where(ReconciliationDiscrepancy.id == discrepancy_id)
        if lock:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def resolve(self, discrepancy_id: uuid.UUID, values: dict[str, Any]) -> None:
        await self.session.execute(
            update(ReconciliationDiscrepancy)
            .where(ReconciliationDiscrepancy.id == discrepancy_id)
            .values(status="resolved", updated_at=func.now(), **values)
        )

    # ---------------------------------------------------------------- the public feed

    async def add_feed_event(self, payload: dict[str, Any], occurred_at: datetime) -> None:
        self.session.add(FeedEvent(kind="reconciliation", payload=payload, occurred_at=occurred_at))
        await self.session.flush()
