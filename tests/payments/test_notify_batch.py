"""Group commit of payment notifications: a batch acts exactly as its notifications would one by one, a bad one
fails alone, and concurrent deliveries through the endpoint still pay every order once."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.db import Database, unit_of_work
from app.donations.repository import DonationRepository, PayableOrder
from app.errors import is_unavailable
from app.kit.background import WHOLE_RETRIES, Again, RequestBatch
from app.ledger.service import forget_known_accounts, ledger_service
from app.models import Donation, FeedEvent, JournalEntry, PaymentInbox
from app.payments.service import ORDER_BUSY, WaitingNotification, payment_batch, payment_service
from app.wechat.pay import Notification, NotificationRejected, get_wechatpay
from tests.donations.helpers import committed_target, donate, payment_notification
from tests.fixtures.client import login
from tests.fixtures.factories import unique

NOTIFY = "/api/v1/payments/wechat/notify"


async def _pending(client: httpx.AsyncClient, n: int, amount_fen: int = 1000) -> list[dict[str, Any]]:
    target = await committed_target()
    headers = await login(client, unique("o"))
    made = []
    for _ in range(n):
        res = await donate(client, headers, target.code, amount_fen=amount_fen)
        assert res.status_code == 201, res.text
        made.append(res.json())
    return made


def _note(
    donation: dict[str, Any],
    *,
    note_id: str | None = None,
    tx: str | None = None,
    amount_fen: int | None = None,
    event: str = "TRANSACTION.SUCCESS",
    trade_state: str = "SUCCESS",
    out_trade_no: str | None = None,
) -> Notification:
    settings = get_settings()
    return Notification(
        id=note_id or unique("n"),
        event_type=event,
        create_time="2026-11-28T10:00:00+08:00",
        resource={
            "appid": settings.WECHAT_APPID,
            "mchid": settings.WECHATPAY_MCHID,
            "out_trade_no": out_trade_no or donation["out_trade_no"],
            "transaction_id": tx or "4200" + str(uuid.uuid4().int)[:24].zfill(24),
            "trade_state": trade_state,
            "success_time": "2026-11-28T10:00:00+08:00",
            "amount": {"total": amount_fen or donation["amount_fen"], "currency": "CNY"},
        },
    )


async def _facts(session: AsyncSession, donation_ids: list[str]) -> dict[str, Any]:
    ids = [uuid.UUID(d) for d in donation_ids]
    rows = (await session.execute(select(Donation).where(Donation.id.in_(ids)))).scalars().all()
    return {
        "status": {str(d.id): d.status for d in rows},
        "tx": {str(d.id): d.transaction_id for d in rows},
        "entries": await session.scalar(select(func.count()).where(JournalEntry.kind == "donation")),
        "feed": await session.scalar(select(func.count()).where(FeedEvent.kind == "donation_paid")),
        "inbox": set((await session.execute(select(PaymentInbox.external_id))).scalars()),
    }


async def test_a_batch_acts_like_each_notification_alone(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    a, b, c, d = await _pending(committed_client, 4)
    earlier = _note(d, note_id="n-earlier")
    async with unit_of_work() as s:  # stored and acted on before the batch
        assert await payment_service.handle_payment_notifications(s, get_wechatpay(), [earlier]) == ["paid"]

    same_tx = "4200" + "7" * 24
    notes = [
        _note(a, note_id="n-a1", tx=same_tx),
        _note(a, note_id="n-a1", tx=same_tx),  # the same delivery twice in one batch
        _note(a, note_id="n-a2", tx=same_tx),  # another id for the same payment
        _note(a, note_id="n-a3", tx="4200" + "8" * 24),  # a different payment for a paid order
        _note(b, note_id="n-b-amount", amount_fen=999),  # does not match the order
        _note(b, note_id="n-b-state", trade_state="NOTPAY"),
        _note(b, note_id="n-unknown", out_trade_no="SY20261128NOSUCHORDER000000"),
        _note(c, note_id="n-c"),
        _note(c, note_id="n-refund-event", event="REFUND.SUCCESS"),
        earlier,  # delivered again
    ]
    async with unit_of_work() as s:
        outcomes = await payment_service.handle_payment_notifications(s, get_wechatpay(), notes)
    shown = [o if isinstance(o, str) else (o.status, o.reason) for o in outcomes]
    assert shown == [
        "paid",
        "duplicate",
        "already_paid",
        (400, "transaction_id mismatch"),
        (400, "amount mismatch"),
        (400, "trade_state is not SUCCESS"),
        (404, "unknown out_trade_no"),
        "paid",
        "ignored",
        "duplicate",
    ]
    async with unit_of_work() as s:
        facts = await _facts(s, [a["id"], b["id"], c["id"], d["id"]])
        check = await ledger_service.check(s)
    assert facts["status"] == {a["id"]: "paid", b["id"]: "pending", c["id"]: "paid", d["id"]: "paid"}
    assert facts["tx"][a["id"]] == same_tx
    assert (facts["entries"], facts["feed"]) == (3, 3)
    # rejected notifications leave nothing behind, not even an inbox row
    assert {"n-a1", "n-a2", "n-c", "n-refund-event", "n-earlier"} <= facts["inbox"]
    assert not {"n-a3", "n-b-amount", "n-b-state", "n-unknown"} & facts["inbox"]
    assert check["ok"], check["problems"]


async def test_request_batch_groups_waiting_callers_and_a_bad_item_fails_alone(committed: Database) -> None:
    sizes: list[int] = []
    running = asyncio.Event()

    async def run(session: AsyncSession, items: list[str]) -> list[str | Exception]:
        sizes.append(len(items))
        running.set()
        await session.execute(select(1))
        await asyncio.sleep(0.01)
        if "boom" in items:
            raise RuntimeError("boom")
        return [NotificationRejected(i, 400) if i.startswith("bad") else i.upper() for i in items]

    batch: RequestBatch[str, str] = RequestBatch("test", run)
    lone = asyncio.ensure_future(batch.submit(unit_of_work, "first"))
    await running.wait()  # the first caller's batch is running
    items = [f"item{n}" for n in range(30)] + ["bad1"]
    results = await asyncio.gather(*(batch.submit(unit_of_work, i) for i in items), return_exceptions=True)
    assert results[:30] == [f"ITEM{n}" for n in range(30)]
    assert isinstance(results[30], NotificationRejected) and results[30].reason == "bad1"
    assert await lone == "FIRST"
    # the first caller ran alone at once; the 31 that queued meanwhile ran as one batch
    assert sizes == [1, 31]

    sizes.clear()
    items = [f"item{n}" for n in range(10)] + ["boom"]
    results = await asyncio.gather(*(batch.submit(unit_of_work, i) for i in items), return_exceptions=True)
    assert results[:10] == [f"ITEM{n}" for n in range(10)]
    assert isinstance(results[10], RuntimeError)
    # the batch failed on "boom" and was split: each item again alone, so only "boom" failed
    assert sizes == [11] + [1] * 11


async def test_request_batch_runs_an_item_left_for_later_in_the_next_batch(committed: Database) -> None:
    """An item answered ``Again`` keeps its caller waiting and goes, as the item it names, to the front of the
    next batch; the rest of its batch is answered at once."""
    batches: list[list[str]] = []
    first_done = asyncio.Event()

    async def run(session: AsyncSession, items: list[str]) -> list[str | Exception | Again[str]]:
        batches.append(list(items))
        await session.execute(select(1))
        return [Again("later, again") if i == "later" else i.upper() for i in items]

    batch: RequestBatch[str, str] = RequestBatch("test", run)
    later = asyncio.ensure_future(batch.submit(unit_of_work, "later"))
    now = asyncio.ensure_future(batch.submit(unit_of_work, "now"))
    now.add_done_callback(lambda _: first_done.set())
    await asyncio.wait_for(first_done.wait(), 5)
    assert await now == "NOW"
    assert await asyncio.wait_for(later, 5) == "LATER, AGAIN"
    assert batches == [["later", "now"], ["later, again"]]

    # an item left for later in a batch that failed and ran its items alone goes to the next batch too
    batches.clear()

    async def failing(session: AsyncSession, items: list[str]) -> list[str | Exception | Again[str]]:
        batches.append(list(items))
        if len(items) > 1:
            raise RuntimeError("boom")
        return [Again("again") if items == ["later"] else items[0].upper()]

    batch = RequestBatch("test", failing)
    results = await asyncio.gather(*(batch.submit(unit_of_work, i) for i in ["a", "later", "b"]))
    assert results == ["A", "AGAIN", "B"]
    assert batches == [["a", "later", "b"], ["a"], ["later"], ["b"], ["again"]]


async def test_request_batch_answers_everyone_when_it_is_stopped(committed: Database) -> None:
    started = asyncio.Event()

    async def run(session: AsyncSession, items: list[str]) -> list[str | Exception]:
        started.set()
        await asyncio.sleep(30)
        return items

    batch: RequestBatch[str, str] = RequestBatch("test", run)
    waiting = [asyncio.ensure_future(batch.submit(unit_of_work, "in-flight"))]
    await started.wait()
    waiting.append(asyncio.ensure_future(batch.submit(unit_of_work, "queued")))
    await asyncio.sleep(0.01)
    for task in list(batch._tasks.values()):
        task.cancel()  # shutdown
    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
    assert [str(r) for r in results] == ["test stopped", "test stopped"]


async def test_a_storm_of_concurrent_deliveries_pays_each_order_once(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    donations = await _pending(committed_client, 20, amount_fen=1500)
    deliveries = []
    for d in donations:
        first = payment_notification(d["out_trade_no"], 1500, notification_id=f"n-{d['id']}")
        deliveries += [first, first]  # re-delivered at the same moment
    bad = payment_notification(donations[0]["out_trade_no"], 1499)  # forged amount: rejected, rest unharmed
    unknown = payment_notification("SY20261128NOSUCHORDER000000", 1500)
    results = await asyncio.gather(
        *(committed_client.post(NOTIFY, content=body, headers=h) for h, body in [*deliveries, bad, unknown])
    )
    assert [r.status_code for r in results] == [204] * 40 + [400, 404]
    async with unit_of_work() as s:
        facts = await _facts(s, [d["id"] for d in donations])
        check = await ledger_service.check(s)
    assert set(facts["status"].values()) == {"paid"}
    assert (facts["entries"], facts["feed"], len(facts["inbox"])) == (20, 20, 20)
    assert check["ok"], check["problems"]


@pytest.mark.parametrize("field", ["mchid", "appid"])
async def test_a_batch_refuses_another_merchants_notification(
    committed_client: httpx.AsyncClient, committed: Database, field: str
) -> None:
    (donation,) = await _pending(committed_client, 1)
    note = _note(donation)
    note.resource[field] = "someone-else"
    async with unit_of_work() as s:
        (outcome,) = await payment_service.handle_payment_notifications(s, get_wechatpay(), [note])
    assert isinstance(outcome, NotificationRejected) and outcome.reason == f"{field} mismatch"
    async with unit_of_work() as s:
        facts = await _facts(s, [donation["id"]])
    assert facts["status"] == {donation["id"]: "pending"} and facts["inbox"] == set()


async def test_request_batch_does_not_split_when_the_database_is_away(committed: Database) -> None:
    sizes: list[int] = []

    async def run(session: AsyncSession, items: list[str]) -> list[str | Exception]:
        sizes.append(len(items))
        raise ConnectionRefusedError("database away")

    batch: RequestBatch[str, str] = RequestBatch("test", run, shared_failure=is_unavailable)
    results = await asyncio.gather(
        *(batch.submit(unit_of_work, f"i{n}") for n in range(8)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionRefusedError) for r in results)
    assert sizes == [
        8
    ]  # answered together (a 503 each), not retried one by one against a database that is away


async def test_request_batch_tries_a_failure_it_is_told_of_again_whole_then_splits(
    committed: Database,
) -> None:
    """A failure ``retry_whole`` names runs the batch again as a whole, up to ``WHOLE_RETRIES`` times, before
    splitting it; a failure on a second try that would fail every item alone (the database away) is answered
    to all at once."""
    sizes: list[int] = []
    failures: list[Exception] = []

    async def run(session: AsyncSession, items: list[str]) -> list[str | Exception]:
        sizes.append(len(items))
        if failures and len(items) > 1:
            raise failures.pop(0)
        return [i.upper() for i in items]

    batch: RequestBatch[str, str] = RequestBatch(
        "test", run, shared_failure=is_unavailable, retry_whole=lambda exc: isinstance(exc, LookupError)
    )

    async def submit_three() -> list[Any]:
        sizes.clear()
        return await asyncio.gather(
            *(batch.submit(unit_of_work, i) for i in ("a", "b", "c")), return_exceptions=True
        )

    failures[:] = [LookupError("filled meanwhile")]
    assert await submit_three() == ["A", "B", "C"]
    assert sizes == [3, 3]  # once more whole, not split

    failures[:] = [LookupError("filled meanwhile"), LookupError("filled again")]
    assert await submit_three() == ["A", "B", "C"]
    assert sizes == [3, 3, 3]

    failures[:] = [LookupError("filled meanwhile")] * (1 + WHOLE_RETRIES)
    assert await submit_three() == ["A", "B", "C"]
    assert sizes == [3] * (1 + WHOLE_RETRIES) + [1, 1, 1]  # failed on every try: split

    failures[:] = [RuntimeError("boom")]
    assert await submit_three() == ["A", "B", "C"]
    assert sizes == [3, 1, 1, 1]  # a failure it is not told of: split at once

    failures[:] = [LookupError("filled meanwhile"), ConnectionRefusedError("database away")]
    results = await submit_three()
    assert all(isinstance(r, ConnectionRefusedError) for r in results), results
    assert sizes == [3, 3]


async def _statements_of(database: Database, notes: list[Notification]) -> tuple[list[str], list[Any]]:
    """The statements one batch sends on its own connection (not the sealer's or the numberer's), and its
    outcomes."""
    from sqlalchemy import event

    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    async with unit_of_work() as s:
        connection = (await s.connection()).sync_connection
        assert connection is not None
        event.listen(connection, "before_cursor_execute", seen)
        try:
            outcomes = await payment_service.handle_payment_notifications(s, get_wechatpay(), notes)
        finally:
            event.remove(connection, "before_cursor_execute", seen)
    return statements, outcomes


async def test_a_batch_of_new_payments_makes_no_round_trip_for_nothing(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    """Under read load each round trip of a batch waits its turn on the event loop: the targets come with the
    donations' locks, and nothing is read back for payments the ledger had not seen."""

    warm_up, *donations = await _pending(committed_client, 4)
    async with unit_of_work() as s:  # the first payment to a target creates its pool's account
        assert await payment_service.handle_payment_notifications(s, get_wechatpay(), [_note(warm_up)]) == [
            "paid"
        ]
    forget_known_accounts()
    sent, outcomes = await _statements_of(committed, [_note(d) for d in donations])
    statements = [" ".join(x.split())[:80] for x in sent]
    assert outcomes == ["paid"] * 3
    assert not [x for x in statements if x.startswith("SELECT donation_targets")], statements
    assert not [x for x in statements if x.startswith("SELECT journal_entries")], statements
    assert not [x for x in statements if x.startswith("SELECT payment_inbox")], statements
    # the donations' locks, the inbox, paid + feed events, the ledger's donation locks, lots already there,
    # the accounts (the first time this process sees them), and the entries with their postings, lots and
    # the pools' new balances
    assert len(statements) <= 7, statements
    async with unit_of_work() as s:
        facts = await _facts(s, [d["id"] for d in donations])
    assert set(facts["status"].values()) == {"paid"} and facts["feed"] == 4  # with the warm-up


async def test_a_batch_locks_its_orders_as_values_not_session_objects(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    """The orders a batch locks come as values (``PayableOrder``), not as Donation objects of its session (in a
    notify storm, thirty objects a batch cost about a sixth of its CPU). Unknown orders are left out, the lock
    is held (another transaction cannot take it without waiting), and the batch pays them all the same."""
    donations = await _pending(committed_client, 2)
    numbers = [d["out_trade_no"] for d in donations]
    async with unit_of_work() as s:
        locked = await DonationRepository(s).lock_by_out_trade_nos([*numbers, "NO-SUCH-ORDER"])
        assert sorted(locked) == sorted(numbers)
        for number, (order, target) in locked.items():
            assert isinstance(order, PayableOrder) and order.out_trade_no == number
            assert order.status == "pending" and order.amount_fen == 1000
            assert target.kind in ("canteen", "fund", "general")
        assert list(s.sync_session.identity_map.values()) == []
        async with unit_of_work() as other:
            busy = await DonationRepository(other).lock_by_out_trade_nos(numbers, unless_busy=True)
        assert busy == {}
    async with unit_of_work() as s:
        outcomes = await payment_service.handle_payment_notifications(
            s, get_wechatpay(), [_note(d) for d in donations]
        )
    assert outcomes == ["paid"] * 2
    async with unit_of_work() as s:
        facts = await _facts(s, [d["id"] for d in donations])
    assert set(facts["status"].values()) == {"paid"}


async def test_a_batch_sends_the_same_statements_whatever_its_size(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    """Each pooled connection prepares a statement once per text: a text that changed with the batch size (an
    IN list, a multi-row VALUES) would be prepared again, a round trip more, on almost every batch."""
    warm_up, *donations = await _pending(committed_client, 8)
    _, outcomes = await _statements_of(committed, [_note(warm_up)])  # creates the target pool's account
    assert outcomes == ["paid"]
    forget_known_accounts()
    one, outcomes = await _statements_of(committed, [_note(donations[0])])
    assert outcomes == ["paid"]
    forget_known_accounts()
    five, outcomes = await _statements_of(committed, [_note(d) for d in donations[1:6]])
    assert outcomes == ["paid"] * 5
    assert one == five
    # the accounts are known to the process once seen: the next batch does not look them up
    again, outcomes = await _statements_of(committed, [_note(donations[6])])
    assert outcomes == ["paid"]
    assert len(again) == len(one) - 1
    assert not [x for x in again if "FROM ledger_accounts" in x and x.lstrip().startswith("SELECT")]


async def test_an_account_made_by_a_rolled_back_batch_is_not_taken_as_known(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    """The first payment to a target creates its pool's account; a second batch in the same transaction finds
    it. If that transaction rolls back, the account is gone, and this process must not remember it."""
    from sqlalchemy import delete

    from app.models import LedgerAccount

    a, b = await _pending(committed_client, 2)
    async with unit_of_work() as s:  # the target's pool has no account yet
        account = (
            await s.execute(select(Donation.target_account).where(Donation.id == a["id"]))
        ).scalar_one()
        await s.execute(delete(LedgerAccount).where(LedgerAccount.code == account))
    forget_known_accounts()

    class Undo(Exception):
        pass

    with pytest.raises(Undo):
        async with unit_of_work() as s:
            assert await payment_service.handle_payment_notifications(s, get_wechatpay(), [_note(a)]) == [
                "paid"
            ]
            assert await payment_service.handle_payment_notifications(s, get_wechatpay(), [_note(b)]) == [
                "paid"
            ]
            raise Undo
    async with unit_of_work() as s:
        assert await s.get(LedgerAccount, account) is None
        outcomes = await payment_service.handle_payment_notifications(
            s, get_wechatpay(), [_note(a), _note(b)]
        )
    assert outcomes == ["paid", "paid"]
    async with unit_of_work() as s:
        assert (await s.get(LedgerAccount, account)) is not None
        check = await ledger_service.check(s)
    assert check["ok"], check["problems"]


async def test_a_notification_delivered_twice_at_once_is_answered_once_and_then_as_duplicate(
    committed: Database,
) -> None:
    """The second delivery's inbox insert waits for the first transaction, then skips the row: "duplicate",
    with no error and no second row."""
    note = Notification(
        id=unique("n"), event_type="TRANSACTION.CLOSED", create_time="2026-11-28T10:00:00+08:00", resource={}
    )

    async def second() -> list[str | Exception]:
        async with unit_of_work() as s2:
            return await payment_service.handle_payment_notifications(s2, get_wechatpay(), [note])

    async with unit_of_work() as s1:
        assert await payment_service.handle_payment_notifications(s1, get_wechatpay(), [note]) == ["ignored"]
        racing = asyncio.ensure_future(second())
        await asyncio.sleep(0.3)
        assert not racing.done()  # waiting for the first delivery's transaction
    assert await racing == ["duplicate"]
    async with unit_of_work() as s:
        stored = (
            await s.execute(select(func.count()).where(PaymentInbox.external_id == note.id))
        ).scalar_one()
    assert stored == 1


async def test_a_payment_already_recorded_for_another_order_fails_alone(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    """A batch skips the look-up of lots (its orders are locked and unpaid), so a transaction id that the ledger
    already holds for another order is refused (by the orders' unique transaction id, and the ledger's entries
    would refuse it too): that notification fails, alone, and leaves nothing behind; the others in its batch are
    paid."""
    first, second, third, fourth = await _pending(committed_client, 4)
    reused_tx = "4200" + "5" * 24
    async with unit_of_work() as s:
        assert await payment_service.handle_payment_notifications(
            s, get_wechatpay(), [_note(first, note_id="n-first", tx=reused_tx)]
        ) == ["paid"]
    # the orders' own unique transaction id refuses it first, before the ledger
    with pytest.raises(IntegrityError):
        async with unit_of_work() as s:
            await payment_service.handle_payment_notifications(
                s, get_wechatpay(), [_note(second, note_id="n-second", tx=reused_tx)]
            )

    reused = payment_notification(third["out_trade_no"], third["amount_fen"], transaction_id=reused_tx)
    good = [payment_notification(d["out_trade_no"], d["amount_fen"]) for d in (second, fourth)]
    results = await asyncio.gather(
        *(committed_client.post(NOTIFY, content=body, headers=h) for h, body in [good[0], reused, good[1]])
    )
    assert [r.status_code for r in results] == [204, 500, 204]
    async with unit_of_work() as s:
        facts = await _facts(s, [d["id"] for d in (first, second, third, fourth)])
        check = await ledger_service.check(s)
    assert facts["status"] == {
        first["id"]: "paid",
        second["id"]: "paid",
        third["id"]: "pending",
        fourth["id"]: "paid",
    }
    assert facts["tx"][third["id"]] is None and facts["entries"] == 3
    assert "n-second" not in facts["inbox"]
    assert check["ok"], check["problems"]


async def test_each_notification_is_logged_on_its_own_request_line(
    committed_client: httpx.AsyncClient, committed: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    """A batch answers many requests, so its own lines carry none of their ids (they used to carry the id of
    whichever request started the batch); each request's access line says what became of its notification and
    names the order, which the batch's ``donation_paid`` line names too."""
    import json

    from app.logging import configure_logging

    donations = await _pending(committed_client, 4, amount_fen=1500)
    configure_logging("INFO")
    capsys.readouterr()
    try:
        sent = [payment_notification(d["out_trade_no"], 1500) for d in donations]
        # the first alone, in this very task (as one keep-alive connection would), the rest at once
        h, body = sent[0]
        first = await committed_client.post(NOTIFY, content=body, headers={**h, "X-Request-ID": "req-000000"})
        assert first.status_code == 204
        results = await asyncio.gather(
            *(
                committed_client.post(NOTIFY, content=body, headers={**h, "X-Request-ID": f"req-{n:06d}"})
                for n, (h, body) in enumerate(sent)
                if n
            )
        )
        assert [r.status_code for r in results] == [204] * 3
        # then, in the same task, one that is refused: nothing of the others' lines may stick to it
        unsigned = await committed_client.post(
            NOTIFY, content=sent[0][1], headers={"X-Request-ID": "req-unsigned"}
        )
        assert unsigned.status_code == 401
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    finally:
        configure_logging(get_settings().LOG_LEVEL)
    access = {x["request_id"]: x for x in lines if x["event"] == "request" and x.get("route") == NOTIFY}
    assert sorted(access) == [f"req-{n:06d}" for n in range(4)] + ["req-unsigned"]
    for n, d in enumerate(donations):
        line = access[f"req-{n:06d}"]
        assert (line["notification"], line["out_trade_no"], line["status"]) == (
            "paid",
            d["out_trade_no"],
            204,
        )
    paid = [x for x in lines if x["event"] == "donation_paid"]
    assert sorted(x["out_trade_no"] for x in paid) == sorted(d["out_trade_no"] for d in donations)
    assert all("request_id" not in x for x in paid)
    assert not [x for x in lines if x["event"] == "wechatpay_notification"]
    refused = [x for x in lines if x.get("request_id") == "req-unsigned"]
    assert {x["event"] for x in refused} == {"request", "wechatpay_notification_rejected"}
    assert all("notification" not in x and "out_trade_no" not in x for x in refused), refused


async def test_a_batch_does_not_wait_for_an_order_another_transaction_holds(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    """The same payment delivered to two processes at once (or an order the receipt numberer holds): the batch
    that finds the order held leaves that notification for its next batch and pays the rest at once, instead of
    holding all of them until the other transaction ends. The next batch waits for the order, and the payment
    is recorded once."""
    held, free, other = await _pending(committed_client, 3)
    holder = await committed.engine.connect()
    try:
        await holder.begin()
        await holder.execute(
            text("SELECT id FROM donations WHERE id = :id FOR UPDATE"), {"id": uuid.UUID(held["id"])}
        )
        # a batch on its own: the held order's notification is left, with nothing of it written
        notes = [_note(held, note_id="n-held"), _note(free, note_id="n-free")]
        async with unit_of_work() as s:
            outcomes = await asyncio.wait_for(
                payment_service.handle_payment_notifications(
                    s, get_wechatpay(), notes, unless_busy=[True, True]
                ),
                5,
            )
        assert outcomes == [ORDER_BUSY, "paid"]
        async with unit_of_work() as s:
            facts = await _facts(s, [held["id"], free["id"]])
        assert facts["status"] == {held["id"]: "pending", free["id"]: "paid"}
        assert "n-held" not in facts["inbox"] and "n-free" in facts["inbox"]

        # through the process's batch: the other order is paid while the held one waits
        waiting = asyncio.ensure_future(
            payment_batch.submit(unit_of_work, WaitingNotification(_note(held, note_id="n-held")))
        )
        paid = await asyncio.wait_for(
            payment_batch.submit(unit_of_work, WaitingNotification(_note(other, note_id="n-other"))), 5
        )
        assert paid == "paid"
        await asyncio.sleep(0.3)
        assert not waiting.done()  # left once, now waiting for the order's lock
        async with unit_of_work() as s:
            assert (await _facts(s, [other["id"]]))["status"] == {other["id"]: "paid"}
        await holder.rollback()
        assert await asyncio.wait_for(waiting, 5) == "paid"
    finally:
        await holder.close()
    async with unit_of_work() as s:
        facts = await _facts(s, [held["id"], free["id"], other["id"]])
        check = await ledger_service.check(s)
    assert set(facts["status"].values()) == {"paid"} and facts["entries"] == 3
    assert {"n-held", "n-free", "n-other"} <= facts["inbox"]
    assert check["ok"], check["problems"]


async def test_a_batch_that_waits_for_some_orders_leaves_only_the_others(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    """A notification left once waits for its order the next time; in the same batch, a new notification for
    an order another transaction holds is still left, and one for an unknown order that was left once is
    answered 404."""
    first, second = await _pending(committed_client, 2)
    holder = await committed.engine.connect()
    try:
        await holder.begin()
        await holder.execute(
            text("SELECT id FROM donations WHERE id = :id FOR UPDATE"), {"id": uuid.UUID(second["id"])}
        )
        notes = [
            _note(first, note_id="n-first"),
            _note(second, note_id="n-second"),
            _note(first, note_id="n-unknown", out_trade_no="SY20261128NOSUCHORDER000000"),
        ]
        async with unit_of_work() as s:
            outcomes = await asyncio.wait_for(
                payment_service.handle_payment_notifications(
                    s, get_wechatpay(), notes, unless_busy=[False, True, False]
                ),
                5,
            )
        shown = [o if isinstance(o, str) or o is ORDER_BUSY else (o.status, o.reason) for o in outcomes]
        assert shown == ["paid", ORDER_BUSY, (404, "unknown out_trade_no")]
    finally:
        await holder.close()
    async with unit_of_work() as s:
        facts = await _facts(s, [first["id"], second["id"]])
    assert facts["status"] == {first["id"]: "paid", second["id"]: "pending"}


async def test_a_delivery_left_for_the_one_being_applied_elsewhere_is_answered_as_a_duplicate(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    """The same notification delivered to two processes at once: one applies it; the other's batch finds the
    order held, leaves the delivery, waits for the order in its next batch and answers "duplicate". The
    payment is recorded once: one entry, one inbox row, one feed event."""
    (donation,) = await _pending(committed_client, 1)
    note = _note(donation, note_id="n-twice")
    async with unit_of_work() as first:  # the other process, not committed yet
        assert await payment_service.handle_payment_notifications(first, get_wechatpay(), [note]) == ["paid"]
        second = asyncio.ensure_future(payment_batch.submit(unit_of_work, WaitingNotification(note)))
        await asyncio.sleep(0.3)
        assert not second.done()  # left once, then waiting for the order
    assert await asyncio.wait_for(second, 5) == "duplicate"
    async with unit_of_work() as s:
        facts = await _facts(s, [donation["id"]])
        stored = await s.scalar(select(func.count()).where(PaymentInbox.external_id == "n-twice"))
        check = await ledger_service.check(s)
    assert facts["status"] == {donation["id"]: "paid"}
    assert (facts["entries"], facts["feed"], stored) == (1, 1, 1)
    assert check["ok"], check["problems"]


async def test_the_paid_line_is_written_only_once_the_payment_is_kept(
    committed_client: httpx.AsyncClient, committed: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from app.logging import configure_logging

    class Boom(Exception):
        pass

    donations = await _pending(committed_client, 2)

    def paid_lines() -> list[str]:
        out = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
        return [x["out_trade_no"] for x in out if x["event"] == "donation_paid"]

    configure_logging("INFO")
    capsys.readouterr()
    try:
        with pytest.raises(Boom):
            async with unit_of_work() as s:
                await payment_service.handle_payment_notifications(s, get_wechatpay(), [_note(donations[0])])
                assert paid_lines() == []  # applied, not yet kept
                raise Boom  # the transaction does not commit
        rolled_back = paid_lines()
        async with unit_of_work() as s:
            await payment_service.handle_payment_notifications(s, get_wechatpay(), [_note(donations[1])])
        kept = paid_lines()
    finally:
        configure_logging(get_settings().LOG_LEVEL)
    assert rolled_back == []
    assert kept == [donations[1]["out_trade_no"]]
    async with unit_of_work() as s:
        facts = await _facts(s, [d["id"] for d in donations])
    assert facts["status"] == {donations[0]["id"]: "pending", donations[1]["id"]: "paid"}


def _recording(sizes: list[int]) -> Any:
    async def run(session: AsyncSession, items: list[str]) -> list[str | Exception]:
        sizes.append(len(items))
        await session.execute(select(1))
        return [i.upper() for i in items]

    return run


async def _a_round_then(batch: RequestBatch[str, str], first: str, rest: list[str], gap: float) -> list[str]:
    """A round of eight callers answered together; then one of them comes back, and after ``gap`` seconds the
    other seven."""
    assert await asyncio.gather(*(batch.submit(unit_of_work, f"r{n}") for n in range(8))) == [
        f"R{n}" for n in range(8)
    ]
    lone = asyncio.ensure_future(batch.submit(unit_of_work, first))
    await asyncio.sleep(gap)
    back = await asyncio.gather(*(batch.submit(unit_of_work, i) for i in rest))
    return [await lone, *back]


@pytest.mark.parametrize("linger", [0.0, 30.0])
async def test_request_batch_waits_for_the_callers_of_its_last_round(
    committed: Database, linger: float
) -> None:
    """Right after a round of eight, the first caller back waits (at most ``linger``) until six are waiting,
    so the round stays one batch. Without a linger it goes alone and the rest after it."""
    sizes: list[int] = []
    batch: RequestBatch[str, str] = RequestBatch("test", _recording(sizes), linger=linger)
    started = asyncio.get_running_loop().time()
    results = await _a_round_then(batch, "first", [f"back{n}" for n in range(7)], gap=0.1)
    assert results == ["FIRST", *[f"BACK{n}" for n in range(7)]]
    assert sizes == ([8, 8] if linger else [8, 1, 7])
    assert (
        asyncio.get_running_loop().time() - started < 20
    )  # the wait ended when they came back, not at the linger


async def test_request_batch_waits_no_longer_than_its_linger(committed: Database) -> None:
    sizes: list[int] = []
    batch: RequestBatch[str, str] = RequestBatch("test", _recording(sizes), linger=0.3)
    assert await asyncio.gather(*(batch.submit(unit_of_work, f"r{n}") for n in range(8))) == [
        f"R{n}" for n in range(8)
    ]
    started = asyncio.get_running_loop().time()
    assert await batch.submit(unit_of_work, "alone") == "ALONE"  # nobody else comes back
    waited = asyncio.get_running_loop().time() - started
    assert 0.25 < waited < 3
    assert sizes == [8, 1]


async def test_request_batch_does_not_wait_after_a_quiet_spell(
    committed: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.kit.background as background

    monkeypatch.setattr(background, "RECENT_LINGERS", 0.002)  # a round is "recent" for 0.06 s
    sizes: list[int] = []
    batch: RequestBatch[str, str] = RequestBatch("test", _recording(sizes), linger=30.0)
    await asyncio.gather(*(batch.submit(unit_of_work, f"r{n}") for n in range(8)))
    await asyncio.sleep(0.3)
    started = asyncio.get_running_loop().time()
    assert await batch.submit(unit_of_work, "later") == "LATER"
    assert asyncio.get_running_loop().time() - started < 20  # not the 30 s linger
    assert sizes == [8, 1]


async def test_request_batch_answers_everyone_when_it_is_stopped_while_waiting(committed: Database) -> None:
    sizes: list[int] = []
    batch: RequestBatch[str, str] = RequestBatch("test", _recording(sizes), linger=30.0)
    await asyncio.gather(*(batch.submit(unit_of_work, f"r{n}") for n in range(8)))
    waiting = asyncio.ensure_future(batch.submit(unit_of_work, "waiting"))
    await asyncio.sleep(0.05)
    assert batch._gathering  # waiting for the round's callers
    for task in list(batch._tasks.values()):
        task.cancel()  # shutdown
    result = await asyncio.wait_for(asyncio.gather(waiting, return_exceptions=True), 5)
    assert [str(r) for r in result] == ["test stopped"]
    assert sizes == [8] and not batch._gathering


async def test_request_batch_counts_the_callers_waiting_when_a_round_is_answered(committed: Database) -> None:
    """A round's callers are those its batch answered and those that waited meanwhile: four answered and four
    waiting make eight, so the next batch waits for six, not three (which would split them into 4 and 4)."""
    sizes: list[int] = []
    release = asyncio.Event()

    async def run(session: AsyncSession, items: list[str]) -> list[str | Exception]:
        sizes.append(len(items))
        if len(sizes) == 1:
            await release.wait()
        await session.execute(select(1))
        return [i.upper() for i in items]

    batch: RequestBatch[str, str] = RequestBatch("test", run, linger=30.0)
    first = asyncio.gather(*(batch.submit(unit_of_work, f"a{n}") for n in range(4)))
    await asyncio.sleep(0.05)  # the first four are one batch, running
    second = asyncio.gather(*(batch.submit(unit_of_work, f"b{n}") for n in range(4)))
    await asyncio.sleep(0.05)
    release.set()
    assert await first == ["A0", "A1", "A2", "A3"]
    await asyncio.sleep(0.1)  # the first four come back
    assert await asyncio.gather(*(batch.submit(unit_of_work, f"c{n}") for n in range(4))) == [
        "C0",
        "C1",
        "C2",
        "C3",
    ]
    assert await second == ["B0", "B1", "B2", "B3"]
    assert sizes == [4, 8]


async def test_redeliveries_that_arrive_while_a_batch_waits_pay_each_order_once(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    """The payment batch with a long linger: a round of four payments, then each delivered twice more while the
    next batch waits for the round's callers. One batch takes them all; each order is paid once, with one
    ledger entry and one inbox row, and the redeliveries are answered as duplicates."""
    from app.payments.service import _apply_payment_notifications

    donations = await _pending(committed_client, 4)
    notes = [_note(d) for d in donations]
    async with unit_of_work() as s:
        before = await _facts(s, [d["id"] for d in donations])
    sizes: list[int] = []

    async def run(session: AsyncSession, items: list[WaitingNotification]) -> list[Any]:
        sizes.append(len(items))
        return await _apply_payment_notifications(session, items)

    batch: RequestBatch[WaitingNotification, str] = RequestBatch("test", run, linger=30.0)
    first = await asyncio.gather(*(batch.submit(unit_of_work, WaitingNotification(n)) for n in notes))
    assert first == ["paid"] * 4
    lone = asyncio.ensure_future(batch.submit(unit_of_work, WaitingNotification(notes[0])))
    await asyncio.sleep(0.05)
    assert batch._gathering and not lone.done()  # waiting for the round's callers
    again = await asyncio.gather(
        *(batch.submit(unit_of_work, WaitingNotification(n)) for n in [*notes[1:], *notes])
    )
    assert [await lone, *again] == ["duplicate"] * 8
    assert sizes == [4, 8]
    async with unit_of_work() as s:
        after = await _facts(s, [d["id"] for d in donations])
    assert set(after["status"].values()) == {"paid"}
    assert after["entries"] - before["entries"] == 4 and after["feed"] - before["feed"] == 4
    assert {n.id for n in notes} <= after["inbox"] and len(after["inbox"] - before["inbox"]) == 4
