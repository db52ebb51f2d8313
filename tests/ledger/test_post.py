from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.exceptions import BadRequest, Conflict, NotFound
from app.ledger import chain
from app.ledger.service import GENERAL_MEAL_POOL, DonationPayment, Posting, canteen_pool, ledger_service
from app.models import DonationLot, JournalEntry, LedgerAccount
from app.models import Posting as PostingRow
from tests.fixtures.factories import create_canteen, create_fund, unique
from tests.ledger.helpers import donate, entry_count, next_paid_at, pool_free


async def test_post_writes_balanced_chained_entry(session: AsyncSession) -> None:
    key = unique("k")
    first = await ledger_service.post(
        session,
        business_key=key,
        kind="test",
        postings=[Posting("wechatpay_clearing", 500), Posting("external:donors", -500)],
        refs={"x": uuid.UUID(int=1)},
    )
    second = await ledger_service.post(
        session,
        business_key=unique("k"),
        kind="test",
        postings=[Posting("wechatpay_clearing", 300), Posting("external:donors", -300)],
    )
    # written unsealed, chained by the sealer in the order they were written
    assert first.seq is None and first.hash is None
    assert await ledger_service.seal(session) >= 2
    await session.refresh(first)
    await session.refresh(second)
    assert first.seq is not None and first.prev_hash is not None and first.hash is not None
    assert second.seq == first.seq + 1
    assert second.prev_hash == first.hash
    assert first.refs == {"x": str(uuid.UUID(int=1))}
    rows = (await session.execute(select(PostingRow).where(PostingRow.entry_id == first.id))).scalars().all()
    assert sorted(r.amount_fen for r in rows) == [-500, 500]
    doc = chain.entry_document(
        seq=first.seq,
        business_key=key,
        kind="test",
        memo="",
        refs=first.refs,
        day=first.day,
        created_at=first.created_at,
        postings=[(r.account_code, r.amount_fen) for r in sorted(rows, key=lambda r: r.line_no)],
    )
    assert chain.entry_hash(first.prev_hash, doc) == first.hash


async def test_replay_same_key_same_content_is_one_entry(session: AsyncSession) -> None:
    key = unique("k")
    postings = [Posting("wechatpay_clearing", 100), Posting("external:donors", -100)]
    a = await ledger_service.post(session, business_key=key, kind="test", postings=postings)
    b = await ledger_service.post(session, business_key=key, kind="test", postings=list(reversed(postings)))
    assert a.id == b.id
    assert await entry_count(session, key) == 1
    assert (await ledger_service.balances(session, ["external:donors"]))[
        "external:donors"
    ].balance_fen <= -100


async def test_same_key_different_amount_is_conflict_and_changes_nothing(session: AsyncSession) -> None:
    key = unique("k")
    await ledger_service.post(
        session,
        business_key=key,
        kind="test",
        postings=[Posting("wechatpay_clearing", 100), Posting("external:donors", -100)],
    )
    before = (await session.get(LedgerAccount, "external:donors", populate_existing=True)).balance_fen  # type: ignore[union-attr]
    with pytest.raises(Conflict) as err:
        await ledger_service.post(
            session,
            business_key=key,
            kind="test",
            postings=[Posting("wechatpay_clearing", 101), Posting("external:donors", -101)],
        )
    assert err.value.error_code == "LedgerKeyReused"
    after = (await session.get(LedgerAccount, "external:donors", populate_existing=True)).balance_fen  # type: ignore[union-attr]
    assert after == before
    assert await entry_count(session, key) == 1


@pytest.mark.parametrize(
    ("postings", "code"),
    [
        ([Posting("wechatpay_clearing", 100), Posting("external:donors", -99)], "LedgerUnbalanced"),
        ([Posting("wechatpay_clearing", 0), Posting("external:donors", 0)], "LedgerBadAmount"),
        ([Posting("wechatpay_clearing", 1.5), Posting("external:donors", -1.5)], "LedgerBadAmount"),  # type: ignore[arg-type]
        ([Posting("wechatpay_clearing", True), Posting("external:donors", -1)], "LedgerBadAmount"),
        ([Posting("wechatpay_clearing", 100)], "LedgerUnbalanced"),
        ([Posting("cash_box", 100), Posting("external:donors", -100)], "LedgerUnknownAccount"),
        ([Posting("pool:canteen:NOT-A-UUID", 100), Posting("bank", -100)], "LedgerUnknownAccount"),
    ],
)
async def test_bad_postings_are_refused(session: AsyncSession, postings: list[Posting], code: str) -> None:
    before = await session.scalar(select(func.count()).select_from(JournalEntry))
    with pytest.raises(BadRequest) as err:
        await ledger_service.post(session, business_key=unique("k"), kind="test", postings=postings)
    assert err.value.error_code == code
    assert await session.scalar(select(func.count()).select_from(JournalEntry)) == before


async def test_unknown_canteen_or_fund_account_is_not_found(session: AsyncSession) -> None:
    with pytest.raises(NotFound):
        await ledger_service.post(
            session,
            business_key=unique("k"),
            kind="test",
            postings=[Posting("bank", 100), Posting(f"payable:canteen:{uuid.uuid4()}", -100)],
        )
    for account in (canteen_pool(uuid.uuid4()), f"fund:{uuid.uuid4()}"):
        with pytest.raises(NotFound):
            await ledger_service.record_donation_payment(
                session,
                donation_id=uuid.uuid4(),
                target_account=account,
                amount_fen=100,
                source="wechatpay",
                external_ref=unique("tx"),
                paid_at=next_paid_at(),
            )


async def test_pool_cannot_be_overdrawn_by_any_entry(session: AsyncSession) -> None:
    canteen = await create_canteen(session)
    pool = canteen_pool(canteen.id)
    await donate(session, pool, 1000)
    with pytest.raises(BadRequest) as refused:  # pools move only with their lots
        await ledger_service.post(
            session, business_key=unique("k"), kind="test", postings=[Posting(pool, 10), Posting("bank", -10)]
        )
    assert refused.value.error_code == "LedgerPoolNeedsLots"
    with pytest.raises(Conflict) as err:  # and even the lot-keeping path cannot overdraw
        await ledger_service._post(
            session,
            business_key=unique("k"),
            kind="test",
            postings=[Posting(pool, 1001), Posting("bank", -1001)],
            lots_kept=True,
        )
    assert err.value.error_code == "InsufficientFunds"
    assert await pool_free(session, pool) == 1000


async def test_donation_payment_creates_lot_and_is_idempotent(session: AsyncSession) -> None:
    canteen = await create_canteen(session)
    pool = canteen_pool(canteen.id)
    donation_id, ref, paid_at = uuid.uuid4(), unique("tx"), next_paid_at()
    kwargs = dict(
        donation_id=donation_id,
        target_account=pool,
        amount_fen=1000,
        source="wechatpay",
        external_ref=ref,
        paid_at=paid_at,
    )
    e1 = await ledger_service.record_donation_payment(session, **kwargs)  # type: ignore[arg-type]
    e2 = await ledger_service.record_donation_payment(session, **kwargs)  # type: ignore[arg-type]
    assert e1.id == e2.id
    lots = (
        (await session.execute(select(DonationLot).where(DonationLot.donation_id == donation_id)))
        .scalars()
        .all()
    )
    assert len(lots) == 1 and lots[0].amount_fen == 1000 and lots[0].account_code == pool
    clearing = (await ledger_service.balances(session, ["wechatpay_clearing"]))["wechatpay_clearing"]
    assert clearing.balance_fen >= 1000
    assert await pool_free(session, pool) == 1000
    assert await ledger_service.refundable_fen(session, donation_id=donation_id) == 1000

    with pytest.raises(Conflict):  # same payment, other amount
        await ledger_service.record_donation_payment(session, **{**kwargs, "amount_fen": 999})  # type: ignore[arg-type]
    with pytest.raises(Conflict):  # same transaction id credited to another donation
        await ledger_service.record_donation_payment(session, **{**kwargs, "donation_id": uuid.uuid4()})  # type: ignore[arg-type]
    assert await pool_free(session, pool) == 1000

    # A caller that holds its donations locked and unpaid skips the look-up of lots: the same payment for
    # another donation is still refused, by the entries' insert, and nothing of the batch stays.
    other = DonationPayment(**{**kwargs, "donation_id": uuid.uuid4()})  # type: ignore[arg-type]
    fresh = DonationPayment(**{**kwargs, "donation_id": uuid.uuid4(), "external_ref": unique("tx")})  # type: ignore[arg-type]
    with pytest.raises(Conflict) as err:
        async with session.begin_nested():
            await ledger_service.record_donation_payments(session, [fresh, other], unpaid_and_locked=True)
    assert err.value.error_code == "LedgerKeyReused"
    fresh_key = f"donation:wechatpay:{fresh.external_ref}:paid"
    assert await entry_count(session, fresh_key) == 0 and await pool_free(session, pool) == 1000
    made = await ledger_service.record_donation_payments(session, [fresh], unpaid_and_locked=True)
    assert [e.business_key for e in made] == [fresh_key]
    assert await pool_free(session, pool) == 2000


async def test_donation_to_fund_and_bad_targets(session: AsyncSession) -> None:
    fund = await create_fund(session, purpose="education")
    d = await donate(session, f"fund:{fund.id}", 500, source="bank")
    assert await ledger_service.refundable_fen(session, donation_id=d) == 500
    for bad in ("wechatpay_clearing", "payable:canteen:" + str(uuid.uuid4()), "nope"):
        with pytest.raises(BadRequest):
            await ledger_service.record_donation_payment(
                session,
                donation_id=uuid.uuid4(),
                target_account=bad,
                amount_fen=1,
                source="wechatpay",
                external_ref=unique("tx"),
                paid_at=next_paid_at(),
            )
    for amount in (0, -1, 1.0):
        with pytest.raises(BadRequest):
            await ledger_service.record_donation_payment(
                session,
                donation_id=uuid.uuid4(),
                target_account=GENERAL_MEAL_POOL,
                amount_fen=amount,  # type: ignore[arg-type]
                source="wechatpay",
                external_ref=unique("tx"),
                paid_at=next_paid_at(),
            )
    with pytest.raises(BadRequest):
        await ledger_service.record_donation_payment(
            session,
            donation_id=uuid.uuid4(),
            target_account=GENERAL_MEAL_POOL,
            amount_fen=1,
            source="alipay",
            external_ref=unique("tx"),
            paid_at=next_paid_at(),
        )


async def test_refund_only_from_remainder(session: AsyncSession) -> None:
    canteen = await create_canteen(session)
    pool = canteen_pool(canteen.id)
    d = await donate(session, pool, 1000)
    held = await ledger_service.place_hold(
        session, hold_key=unique("h"), canteen_id=canteen.id, amount_fen=300
    )
    assert held == 300
    assert await ledger_service.refundable_fen(session, donation_id=d) == 700

    with pytest.raises(Conflict) as err:
        await ledger_service.record_donation_refund(
            session,
            donation_id=d,
            refund_id=uuid.uuid4(),
            amount_fen=701,
            source="wechatpay",
            external_ref=unique("rf"),
        )
    assert err.value.error_code == "RefundExceedsRemainder"
    assert err.value.detail == {"refundable_fen": 700}

    ref, refund_id = unique("rf"), uuid.uuid4()
    e1 = await ledger_service.record_donation_refund(
        session, donation_id=d, refund_id=refund_id, amount_fen=400, source="wechatpay", external_ref=ref
    )
    e2 = await ledger_service.record_donation_refund(
        session, donation_id=d, refund_id=refund_id, amount_fen=400, source="wechatpay", external_ref=ref
    )
    assert e1.id == e2.id
    assert await ledger_service.refundable_fen(session, donation_id=d) == 300
    assert await pool_free(session, pool) == 300
    with pytest.raises(Conflict):  # the same refund id replayed with another amount
        await ledger_service.record_donation_refund(
            session, donation_id=d, refund_id=refund_id, amount_fen=100, source="wechatpay", external_ref=ref
        )
    with pytest.raises(NotFound):
        await ledger_service.record_donation_refund(
            session,
            donation_id=uuid.uuid4(),
            refund_id=uuid.uuid4(),
            amount_fen=1,
            source="wechatpay",
            external_ref=unique("rf"),
        )
    report = await ledger_service.check(session)
    assert report["ok"], report["problems"]


async def test_a_payment_batch_with_one_donation_twice_is_refused_whole(session: AsyncSession) -> None:
    from app.ledger.service import DonationPayment

    pool = canteen_pool((await create_canteen(session)).id)
    before = await session.scalar(select(func.count()).select_from(JournalEntry))
    twice = uuid.uuid4()

    def paid(donation_id: uuid.UUID, ref: str) -> DonationPayment:
        return DonationPayment(donation_id, pool, 1000, "wechatpay", ref, next_paid_at())

    for batch in (
        [paid(uuid.uuid4(), unique("tx")), paid(twice, unique("tx")), paid(twice, unique("tx"))],
        [paid(uuid.uuid4(), "same-tx"), paid(uuid.uuid4(), "same-tx")],  # one payment for two donations
    ):
        with pytest.raises(BadRequest) as refused:
            await ledger_service.record_donation_payments(session, batch)
        assert refused.value.error_code == "LedgerBadInput"
    assert await session.scalar(select(func.count()).select_from(JournalEntry)) == before
    assert await pool_free(session, pool) == 0
    lots = await session.scalar(
        select(func.count()).select_from(DonationLot).where(DonationLot.account_code == pool)
    )
    assert lots == 0
