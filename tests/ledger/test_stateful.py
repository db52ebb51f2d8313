"""Model-based test in the TigerBeetle "auditor" style: random donate / hold / serve / cancel / refund sequences
against the real ledger on PostgreSQL, compared after every step with a plain-Python model of FIFO lots."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from app.db import to_async_url
from app.exceptions import Conflict
from app.ledger.service import GENERAL_MEAL_POOL, canteen_pool, ledger_service
from app.models import DonationLot, LedgerAccount
from tests.fixtures.factories import create_canteen, unique
from tests.ledger.helpers import next_paid_at


@dataclass
class LotModel:
    account: str
    amount: int
    held: int = 0
    allocated: int = 0
    refunded: int = 0

    @property
    def remaining(self) -> int:
        return self.amount - self.held - self.allocated - self.refunded


@dataclass
class HoldModel:
    canteen: int
    status: str = "held"
    parts: list[tuple[uuid.UUID, int]] = field(default_factory=list)


class LedgerMachine(RuleBasedStateMachine):
    url: str = ""
    donations = Bundle("donations")
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.engine: AsyncEngine = create_async_engine(to_async_url(self.url), poolclass=NullPool)
        self.conn: AsyncConnection = self.run(self.engine.connect())
        self.run(self.conn.begin())
        self.session = AsyncSession(
            bind=self.conn, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        self.canteens = [self.run(create_canteen(self.session)).id for _ in range(2)]
        self.lots: dict[uuid.UUID, LotModel] = {}  # insertion order = FIFO order (paid_at increases)
        self.model_holds: dict[str, HoldModel] = {}

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    async def _step(self, coro: Coroutine[Any, Any, Any]) -> Any:
        async with self.session.begin_nested():
            return await coro

    def teardown(self) -> None:
        async def close() -> None:
            await self.session.close()
            await self.conn.rollback()
            await self.conn.close()
            await self.engine.dispose()

        self.run(close())
        self.loop.close()

    # ------------------------------------------------------------ rules

    @rule(target=donations, where=st.sampled_from(["c0", "c1", "general"]), amount=st.integers(1, 1500))
    def donate(self, where: str, amount: int) -> uuid.UUID:
        account = GENERAL_MEAL_POOL if where == "general" else canteen_pool(self.canteens[int(where[1])])
        donation_id = uuid.uuid4()
        self.run(
            self._step(
                ledger_service.record_donation_payment(
                    self.session,
                    donation_id=donation_id,
                    target_account=account,
                    amount_fen=amount,
                    source="wechatpay",
                    external_ref=unique("tx"),
                    paid_at=next_paid_at(),
                )
            )
        )
        self.lots[donation_id] = LotModel(account, amount)
        return donation_id

    @rule(target=holds, canteen=st.integers(0, 1), amount=st.integers(0, 1200))
    def hold(self, canteen: int, amount: int) -> str:
        key = unique("line")
        held = self.run(
            self._step(
                ledger_service.place_hold(
                    self.session, hold_key=key, canteen_id=self.canteens[canteen], amount_fen=amount
                )
            )
        )
        model = HoldModel(canteen)
        need = amount
        for account in (canteen_pool(self.canteens[canteen]), GENERAL_MEAL_POOL):
            for donation_id, lot in self.lots.items():
                if need and lot.account == account and lot.remaining > 0:
                    take = min(need, lot.remaining)
                    lot.held += take
                    need -= take
                    model.parts.append((donation_id, take))
        assert held == amount - need
        self.model_holds[key] = model
        return key

    @rule(key=holds)
    def serve(self, key: str) -> None:
        model = self.model_holds[key]
        try:
            self.run(
                self._step(
                    ledger_service.post_hold(
                        self.session, hold_key=key, service_date=date(2026, 3, 5), meta={"slot": "lunch"}
                    )
                )
            )
        except Conflict as err:
            assert model.status == "voided" and err.error_code == "HoldAlreadyVoided"
            return
        assert model.status in ("held", "posted")
        if model.status == "held":
            for donation_id, take in model.parts:
                self.lots[donation_id].held -= take
                self.lots[donation_id].allocated += take
            model.status = "posted"

    @rule(key=holds)
    def cancel(self, key: str) -> None:
        model = self.model_holds[key]
        try:
            self.run(self._step(ledger_service.void_hold(self.session, hold_key=key)))
        except Conflict as err:
            assert model.status == "posted" and err.error_code == "HoldAlreadyPosted"
            return
        assert model.status in ("held", "voided")
        if model.status == "held":
            for donation_id, take in model.parts:
                self.lots[donation_id].held -= take
            model.status = "voided"

    @rule(donation_id=donations, amount=st.integers(1, 1500))
    def refund(self, donation_id: uuid.UUID, amount: int) -> None:
        lot = self.lots[donation_id]
        try:
            self.run(
                self._step(
                    ledger_service.record_donation_refund(
                        self.session,
                        donation_id=donation_id,
                        refund_id=uuid.uuid4(),
                        amount_fen=amount,
                        source="wechatpay",
                        external_ref=unique("rf"),
                    )
                )
            )
        except Conflict as err:
            assert err.error_code == "RefundExceedsRemainder" and amount > lot.remaining
            return
        assert amount <= lot.remaining
        lot.refunded += amount

    # ------------------------------------------------------------ invariants

    @invariant()
    def lots_match_model(self) -> None:
        rows = self.run(self.session.execute(select(DonationLot).execution_options(populate_existing=True)))
        actual = {
            r.donation_id: (r.held_fen, r.allocated_fen, r.refunded_fen)
            for r in rows.scalars()
            if r.donation_id in self.lots
        }
        assert actual == {d: (m.held, m.allocated, m.refunded) for d, m in self.lots.items()}

    @invariant()
    def pools_match_model(self) -> None:
        accounts = [canteen_pool(c) for c in self.canteens] + [GENERAL_MEAL_POOL]
        rows = self.run(
            self.session.execute(
                select(LedgerAccount)
                .where(LedgerAccount.code.in_(accounts))
                .execution_options(populate_existing=True)
            )
        )
        for acc in rows.scalars():
            lots = [m for m in self.lots.values() if m.account == acc.code]
            assert -acc.balance_fen == sum(m.amount - m.allocated - m.refunded for m in lots)
            assert acc.held_fen == sum(m.held for m in lots)
            assert -acc.balance_fen - acc.held_fen >= 0

    @invariant()
    def ledger_check_passes(self) -> None:
        report = self.run(ledger_service.check(self.session))
        assert report["ok"], report["problems"]


def test_ledger_state_machine(migrated: str) -> None:
    LedgerMachine.url = migrated
    LedgerMachine.TestCase.settings = settings(
        max_examples=10,
        stateful_step_count=14,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    LedgerMachine.TestCase().runTest()
