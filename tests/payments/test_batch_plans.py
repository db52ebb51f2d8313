"""The payment batch's statements are planned once per connection, not on every execution."""

from __future__ import annotations

import httpx
from sqlalchemy import text

from app.db import Database, create_engine, make_sessionmaker, unit_of_work
from app.payments.service import payment_service
from app.wechat.pay import get_wechatpay
from tests.payments.test_notify_batch import _note, _pending

_OTHER_ORDERS = text(
    """
    INSERT INTO donations (id, target_id, target_account, channel, status, amount_fen, refunded_fen, anonymous,
                           out_trade_no, closed_at)
    SELECT gen_random_uuid(), d.target_id, d.target_account, 'wechatpay', 'closed', 1000, 0, true, 'PLAN' || n,
           now()
    FROM generate_series(1, 20000) AS n, (SELECT target_id, target_account FROM donations LIMIT 1) AS d
    """
)
_PLANS = text(
    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
    " WHERE statement NOT LIKE '%pg_prepared_statements%'"
)


async def test_a_batch_of_one_reuses_its_plans(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    """With an array of keys in sight, PostgreSQL made a plan for its values on every execution (more
    planning than running, for a batch of one); passed through a sub-select, the arrays leave it one plan per
    connection after its first five executions."""
    donations = await _pending(committed_client, 9)
    async with unit_of_work() as s:  # a table of some size, as in use: for a handful of rows any plan will do
        await s.execute(_OTHER_ORDERS)
        await s.execute(text("ANALYZE donations"))
    engine = create_engine(committed.url, pool_size=1, max_overflow=0)  # one connection: every batch on it
    maker = make_sessionmaker(engine)
    try:
        for donation in donations:
            async with unit_of_work(maker) as s:
                outcome = await payment_service.handle_payment_notifications(
                    s,
                    get_wechatpay(),
                    [_note(donation)],
                    unless_busy=[True],  # as the batch locks
                )
            assert outcome == ["paid"]
        async with engine.connect() as conn:
            plans = {row[0]: (row[1], row[2]) for row in (await conn.execute(_PLANS)).all()}
    finally:
        await engine.dispose()
    lock = [p for s, p in plans.items() if "FOR UPDATE OF donations" in s]
    mark_paid = [p for s, p in plans.items() if "UPDATE donations AS d" in s]
    assert len(lock) == 1 and len(mark_paid) == 1, plans
    for generic, custom in (lock[0], mark_paid[0]):
        assert custom <= 5 and generic == 9 - custom, plans


def test_the_meal_look_up_names_its_partial_indexes_conditions() -> None:
    """The booking's meal look-up writes the published status and the live statuses into its text: bound, they
    kept PostgreSQL from using the partial indexes in the plan it reuses, and it planned the statement again
    for every booking."""
    from sqlalchemy.dialects import postgresql

    from app.bookings.repository import _MEAL_SETTINGS

    sql = " ".join(str(_MEAL_SETTINGS.compile(dialect=postgresql.asyncpg.dialect())).split())  # type: ignore[attr-defined]
    assert "menus.status = 'published'" in sql
    assert "bookings.status IN ('confirmed', 'served')" in sql
    # the pools' account codes behind a sub-select, so their count does not make a plan of its own
    assert "ledger_accounts.code = ANY (CAST((SELECT (SELECT array_agg(ask_pool.code)" in sql
    # every piece is about its own request's row: the requests' list appears once, in the outermost FROM,
    # never again inside a sub-select (which would read every request's elder or pools for each)
    assert sql.count("AS ask(") == sql.count("AS ask_item(") == sql.count("AS ask_pool(") == 1
