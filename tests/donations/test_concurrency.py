from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import func, select

from app.db import Database, unit_of_work
from app.models import Donation, SandboxWeChatPayOrder
from app.models.role_grant import Role
from tests.donations.helpers import committed_target, donate
from tests.fixtures.client import login
from tests.fixtures.factories import grant, unique


async def test_concurrent_retries_with_one_key_make_one_order(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    target = await committed_target()
    headers = await login(committed_client, unique("o"))
    key = uuid.uuid4().hex
    results = await asyncio.gather(
        *(donate(committed_client, headers, target.code, key=key, amount_fen=1234) for _ in range(5))
    )
    assert {r.status_code for r in results} <= {201, 409}, [r.text for r in results]
    ok = [r.json() for r in results if r.status_code == 201]
    assert ok and len({d["out_trade_no"] for d in ok}) == 1
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(Donation)) == 1
        orders = await s.scalar(
            select(func.count())
            .select_from(SandboxWeChatPayOrder)
            .where(SandboxWeChatPayOrder.out_trade_no == ok[0]["out_trade_no"])
        )
    assert orders == 1


async def test_same_voucher_entered_twice_at_once(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    target = await committed_target("general")
    openid = unique("admin")
    async with unit_of_work() as s:
        await grant(s, openid, Role.federation_admin)
    headers = await login(committed_client, openid)
    body = {
        "target_code": target.code,
        "amount_fen": 100000,
        "voucher_no": unique("V"),
        "paid_on": "2026-11-20",
    }
    results = await asyncio.gather(
        *(
            committed_client.post("/api/v1/admin/donations/offline", json=body, headers=headers)
            for _ in range(3)
        )
    )
    assert sorted(r.status_code for r in results) == [201, 409, 409], [r.text for r in results]
    async with unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(Donation)) == 1
