"""Trade bills for tests, written the way WeChat Pay (and the simulator) writes them, and rows to match."""

from __future__ import annotations

import csv
import gzip
import io
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.money import fen_to_yuan_text
from app.kit.time import SHANGHAI, business_date
from app.models import Donation, DonationRefund, DonationTarget
from app.reconciliation.parser import HEADER, SUMMARY_HEADER
from tests.fixtures.factories import create_canteen, unique

BILL_DAY = business_date() - timedelta(days=3)


def fee_of(fen: int) -> int:
    return (fen * 6 + 500) // 1000


def txn_id() -> str:
    return "4200" + str(uuid.uuid4().int)[:24].zfill(24)


def out_trade_no() -> str:
    return "SY" + uuid.uuid4().hex[:26].upper()


@dataclass
class Line:
    """One detail row: a payment (state SUCCESS) or a refund (state REFUND)."""

    out_trade_no: str
    amount_fen: int
    transaction_id: str
    state: str = "SUCCESS"
    out_refund_no: str = ""
    at: datetime | None = None
    fee_fen: int | None = None

    def fields(self, day: date) -> list[str]:
        at = self.at or datetime.combine(day, time(10, 0), tzinfo=SHANGHAI)
        y = fen_to_yuan_text
        refund = self.state == "REFUND"
        fee = (
            self.fee_fen
            if self.fee_fen is not None
            else (-fee_of(self.amount_fen) if refund else fee_of(self.amount_fen))
        )
        settled = 0 if refund else self.amount_fen
        return [
            at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"), "wxtestappid", "1900000109", "0", "",
            self.transaction_id, self.out_trade_no, "o-payer", "JSAPI", self.state, "OTHERS", "CNY",
            y(settled), "0.00", ("50" + self.transaction_id[4:31]) if refund else "0",
            self.out_refund_no if refund else "0", y(self.amount_fen if refund else 0), "0.00",
            "ORIGINAL" if refund else "", "SUCCESS" if refund else "", "我为老人助一餐", "",
            y(fee), "0.60%", y(settled), y(self.amount_fen if refund else 0), "",
        ]  # fmt: skip


def bill_text(
    lines: list[Line],
    day: date = BILL_DAY,
    *,
    summary: list[str] | None = None,
    header: str | None = None,
) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    out.write((header if header is not None else ",".join(HEADER)) + "\r\n")
    settled = refunded = fees = 0
    for line in lines:
        fields = line.fields(day)
        settled += round(float(fields[12]) * 100)
        refunded += round(float(fields[16]) * 100)
        fees += round(float(fields[22]) * 100)
        writer.writerow(["`" + f for f in fields])
    out.write(",".join(SUMMARY_HEADER) + "\r\n")
    y = fen_to_yuan_text
    values = summary or [str(len(lines)), y(settled), y(refunded), "0.00", y(fees), y(settled), y(refunded)]
    writer.writerow(["`" + v for v in values])
    return out.getvalue()


def bill_bytes(lines: list[Line], day: date = BILL_DAY, *, gz: bool = False, **kwargs: Any) -> bytes:
    data = bill_text(lines, day, **kwargs).encode()
    return gzip.compress(data) if gz else data


async def create_target(session: AsyncSession) -> DonationTarget:
    canteen = await create_canteen(session)
    target = DonationTarget(
        code=unique("r")[:12], kind="canteen", title="对账测试食堂", canteen_id=canteen.id
    )
    session.add(target)
    await session.flush()
    return target


async def add_donations(
    session: AsyncSession, target: DonationTarget, rows: list[dict[str, Any]], day: date = BILL_DAY
) -> list[uuid.UUID]:
    """Bulk-insert wechatpay donations. Each row: out_trade_no, amount_fen, and optionally status,
    transaction_id, paid_at (default: the bill day at 10:00 Shanghai when paid)."""
    paid_at = datetime.combine(day, time(10, 0), tzinfo=SHANGHAI)
    values = []
    for r in rows:
        status = r.get("status", "paid")
        values.append(
            {
                "id": r.get("id", uuid.uuid4()),
                "target_id": target.id,
                "target_account": f"pool:canteen:{target.canteen_id}",
                "channel": "wechatpay",
                "status": status,
                "amount_fen": r["amount_fen"],
                "refunded_fen": r.get("refunded_fen", 0),
                "anonymous": True,
                "out_trade_no": r["out_trade_no"],
                "transaction_id": r.get("transaction_id") if status != "pending" else None,
                "paid_at": r.get("paid_at", paid_at) if status != "pending" else None,
            }
        )
    await session.execute(insert(Donation), values)
    return [v["id"] for v in values]


async def add_refund(
    session: AsyncSession,
    donation_id: uuid.UUID,
    amount_fen: int,
    out_refund_no: str,
    *,
    status: str = "succeeded",
    day: date = BILL_DAY,
) -> uuid.UUID:
    refund = DonationRefund(
        id=uuid.uuid4(),
        donation_id=donation_id,
        amount_fen=amount_fen,
        reason="测试退款",
        status=status,
        out_refund_no=out_refund_no,
        succeeded_at=datetime.combine(day, time(15, 0), tzinfo=SHANGHAI) if status == "succeeded" else None,
    )
    session.add(refund)
    await session.flush()
    return refund.id


def day_after(day: date) -> date:
    return day + timedelta(days=1)
