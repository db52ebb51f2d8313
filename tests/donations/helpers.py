"""Arrangement helpers shared by the donation, payment and simulator tests."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.db import unit_of_work
from app.models import Donation, DonationTarget, FeedEvent, PaymentInbox
from app.sandbox.wechatpay import build_notification, sign_headers
from tests.fixtures.factories import create_canteen, create_fund, unique


async def create_target(session: AsyncSession, kind: str = "canteen", **kwargs: Any) -> DonationTarget:
    values: dict[str, Any] = {"code": unique("q")[:12], "kind": kind, "title": "测试捐赠项目"}
    if kind == "canteen":
        values["canteen_id"] = (await create_canteen(session)).id
    elif kind == "fund":
        values["fund_id"] = (await create_fund(session)).id
    values.update(kwargs)
    target = DonationTarget(**values)
    session.add(target)
    await session.flush()
    return target


async def committed_target(kind: str = "canteen") -> DonationTarget:
    async with unit_of_work() as session:
        return await create_target(session, kind)


async def donate(
    client: httpx.AsyncClient, headers: dict[str, str], code: str, key: str | None = None, **body: Any
) -> httpx.Response:
    payload = {"target_code": code, **body}
    if "meals" not in body and "amount_fen" not in body:
        payload["meals"] = 1
    return await client.post(
        "/api/v1/donations", json=payload, headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex}
    )


def payment_notification(
    out_trade_no: str,
    amount_fen: int,
    *,
    transaction_id: str | None = None,
    mchid: str | None = None,
    appid: str | None = None,
    notification_id: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """A correctly encrypted and signed TRANSACTION.SUCCESS notification, as the simulator sends it."""
    settings = get_settings()
    plaintext = {
        "appid": appid or settings.WECHAT_APPID,
        "mchid": mchid or settings.WECHATPAY_MCHID,
        "out_trade_no": out_trade_no,
        "transaction_id": transaction_id or "4200" + uuid.uuid4().int.__str__()[:24].zfill(24),
        "trade_type": "JSAPI",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "success_time": "2026-11-28T10:00:00+08:00",
        "payer": {"openid": "o-test"},
        "amount": {
            "total": amount_fen,
            "payer_total": amount_fen,
            "currency": "CNY",
            "payer_currency": "CNY",
        },
    }
    body = build_notification(
        "TRANSACTION.SUCCESS",
        "transaction",
        "支付成功",
        plaintext,
        notification_id=notification_id or unique("n"),
    )
    return {"Content-Type": "application/json", **sign_headers(body)}, body.encode()


def tamper(body: bytes) -> bytes:
    data = json.loads(body)
    ct = data["resource"]["ciphertext"]
    data["resource"]["ciphertext"] = ("A" if ct[0] != "A" else "B") + ct[1:]
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


async def counts(session: AsyncSession, donation_id: uuid.UUID) -> dict[str, Any]:
    from app.models import DonationLot, JournalEntry

    donation = (await session.execute(select(Donation).where(Donation.id == donation_id))).scalar_one()
    await session.refresh(donation)
    return {
        "status": donation.status,
        "inbox": await session.scalar(select(func.count()).select_from(PaymentInbox)),
        "feed": await session.scalar(select(func.count()).select_from(FeedEvent)),
        "lots": await session.scalar(
            select(func.count()).select_from(DonationLot).where(DonationLot.donation_id == donation_id)
        ),
        "entries": await session.scalar(
            select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == "donation")
        ),
        "receipt_no": donation.receipt_no,
        "transaction_id": donation.transaction_id,
    }
