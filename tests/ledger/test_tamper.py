"""Tamper evidence: the database refuses edits; a forced edit is caught by ledger-check; proofs are exact."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.exceptions import Conflict, NotFound
from app.kit.time import business_date
from app.ledger import chain
from app.ledger import service as ledger_module
from app.ledger.service import Posting, canteen_pool, ledger_service
from app.models import JournalEntry, UnsealedEntry
from app.models.role_grant import Role
from tests.fixtures.client import login
from tests.fixtures.factories import create_canteen, grant, unique
from tests.ledger.helpers import donate


async def _entry(session: AsyncSession, amount: int = 700) -> JournalEntry:
    """A sealed entry."""
    entry = await ledger_service.post(
        session,
        business_key=unique("k"),
        kind="test",
        postings=[Posting("expense:wechat_fee", amount), Posting("wechatpay_clearing", -amount)],
        memo="测试",
    )
    assert await ledger_service.seal(session) >= 1
    await session.refresh(entry)
    return entry


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE journal_entries SET memo = 'x' WHERE id = :id",
        "DELETE FROM journal_entries WHERE id = :id",
        "UPDATE postings SET amount_fen = amount_fen + 1 WHERE entry_id = :id",
        "DELETE FROM postings WHERE entry_id = :id",
    ],
)
async def test_database_refuses_update_and_delete(session: AsyncSession, statement: str) -> None:
    entry = await _entry(session)
    with pytest.raises(DBAPIError, match="append-only"):
        async with session.begin_nested():
            await session.execute(text(statement), {"id": entry.id})
    report = await ledger_service.check(session)
    assert report["ok"], report["problems"]


@pytest.mark.parametrize(
    "statement",
    [
        # sealing again, moving an entry in the chain, or unsealing it, is an edit like any other
        "UPDATE journal_seals SET seq = seq + 1000000 WHERE entry_id = :id",
        "UPDATE journal_seals SET hash = repeat('1', 64) WHERE entry_id = :id",
        "DELETE FROM journal_seals WHERE entry_id = :id",
    ],
)
async def test_sealed_entry_cannot_be_resealed(session: AsyncSession, statement: str) -> None:
    entry = await _entry(session)
    with pytest.raises(DBAPIError, match="append-only"):
        async with session.begin_nested():
            await session.execute(text(statement), {"id": entry.id})


async def test_an_unsealed_entry_cannot_be_changed_either(session: AsyncSession) -> None:
    entry = await ledger_service.post(
        session,
        business_key=unique("k"),
        kind="test",
        postings=[Posting("expense:wechat_fee", 5), Posting("wechatpay_clearing", -5)],
    )
    assert entry.seq is None
    assert (
        await session.scalar(
            select(func.count()).select_from(UnsealedEntry).where(UnsealedEntry.entry_id == entry.id)
        )
        == 1
    )  # queued for the sealer by the database itself
    with pytest.raises(DBAPIError, match="append-only"):
        async with session.begin_nested():
            await session.execute(
                text("UPDATE journal_entries SET memo = 'x' WHERE id = :id"), {"id": entry.id}
            )
    assert await ledger_service.seal(session) >= 1
    assert (await ledger_service.check(session))["ok"]
    assert await session.scalar(select(func.count()).select_from(UnsealedEntry)) == 0


async def _force(session: AsyncSession, statement: str, params: dict[str, Any]) -> None:
    """Edit behind the ledger's back, as someone with database access could (triggers off for a moment)."""
    await session.execute(text("SET LOCAL session_replication_role = replica"))
    await session.execute(text(statement), params)
    await session.execute(text("SET LOCAL session_replication_role = origin"))


async def test_hand_edited_amount_fails_check_naming_the_entry(session: AsyncSession) -> None:
    await _entry(session)
    victim = await _entry(session)
    await _entry(session)
    assert (await ledger_service.check(session))["ok"]
    await _force(
        session,
        "UPDATE postings SET amount_fen = amount_fen - 100 WHERE entry_id = :id AND line_no = 1",
        {"id": victim.id},
    )
    report = await ledger_service.check(session)
    assert not report["ok"]
    named = {p.get("entry_id") for p in report["problems"]}
    assert str(victim.id) in named
    checks = {p["check"] for p in report["problems"] if p.get("entry_id") == str(victim.id)}
    assert {"hash", "balance"} <= checks
    # only the edited entry is blamed among entries
    assert named - {None} == {str(victim.id)}


async def test_balanced_edit_and_relinked_chain_are_caught(session: AsyncSession) -> None:
    victim = await _entry(session)
    after = await _entry(session)
    # both legs edited so the entry still balances: the hash still gives it away
    await _force(
        session,
        "UPDATE postings SET amount_fen = CASE WHEN amount_fen > 0 THEN 600 ELSE -600 END WHERE entry_id = :id",
        {"id": victim.id},
    )
    report = await ledger_service.check(session)
    assert {p["check"] for p in report["problems"] if p.get("entry_id") == str(victim.id)} >= {"hash"}
    # recomputing the victim's hash breaks the link to the next entry
    lines = [("expense:wechat_fee", 600), ("wechatpay_clearing", -600)]
    new_hash = chain.entry_hash(victim.prev_hash, ledger_module.entry_document(victim, lines))
    await _force(
        session, "UPDATE journal_seals SET hash = :h WHERE entry_id = :id", {"h": new_hash, "id": victim.id}
    )
    report = await ledger_service.check(session)
    assert any(p.get("entry_id") == str(after.id) and p["check"] == "chain" for p in report["problems"])


async def test_deleted_entry_breaks_the_chain(session: AsyncSession) -> None:
    victim = await _entry(session)
    after = await _entry(session)
    await _force(session, "DELETE FROM postings WHERE entry_id = :id", {"id": victim.id})
    await _force(session, "DELETE FROM journal_entries WHERE id = :id", {"id": victim.id})
    report = await ledger_service.check(session)
    assert any(p.get("entry_id") == str(after.id) and p["check"] == "chain" for p in report["problems"])


async def test_entry_taken_off_the_sealers_queue_is_caught(session: AsyncSession) -> None:
    await _entry(session)
    victim = await ledger_service.post(
        session,
        business_key=unique("k"),
        kind="test",
        postings=[Posting("expense:wechat_fee", 9), Posting("wechatpay_clearing", -9)],
    )
    # the queue is not part of the record (no trigger guards it): what it loses, the check finds
    await session.execute(text("DELETE FROM journal_unsealed WHERE entry_id = :id"), {"id": victim.id})
    report = await ledger_service.check(session)
    assert not report["ok"]
    assert [p["check"] for p in report["problems"] if p.get("entry_id") == str(victim.id)] == ["chain"]


async def test_deleted_seal_is_caught(session: AsyncSession) -> None:
    victim = await _entry(session)
    after = await _entry(session)
    await _force(session, "DELETE FROM journal_seals WHERE entry_id = :id", {"id": victim.id})
    report = await ledger_service.check(session)
    blamed = {(p.get("entry_id"), p["check"]) for p in report["problems"]}
    # the next entry's seq no longer follows, and the victim is outside the chain
    assert (str(after.id), "chain") in blamed and (str(victim.id), "chain") in blamed


async def test_edited_lot_or_hold_is_caught(session: AsyncSession) -> None:
    canteen = await create_canteen(session)
    d = await donate(session, canteen_pool(canteen.id), 1000)
    await ledger_service.place_hold(session, hold_key=unique("h"), canteen_id=canteen.id, amount_fen=100)
    await session.execute(
        text("UPDATE donation_lots SET refunded_fen = refunded_fen + 50 WHERE donation_id = :d"), {"d": d}
    )
    report = await ledger_service.check(session)
    assert any(p.get("donation_id") == str(d) for p in report["problems"])


# ---------------------------------------------------------------- proofs and digests


class FrozenClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


async def _past_day_activity(session: AsyncSession, monkeypatch: pytest.MonkeyPatch, day: date) -> uuid.UUID:
    """A donation paid and spent on a meal on ``day`` (the ledger's clock set back)."""
    clock = FrozenClock(datetime(day.year, day.month, day.day, 2, 0, tzinfo=UTC))
    monkeypatch.setattr(ledger_module, "utcnow", clock)
    canteen = await create_canteen(session)
    await donate(session, canteen_pool(canteen.id), 400)
    d = await donate(session, canteen_pool(canteen.id), 1000)
    for i in range(5):
        key = unique("line")
        await ledger_service.place_hold(session, hold_key=key, canteen_id=canteen.id, amount_fen=300)
        if i != 2:
            await ledger_service.post_hold(session, hold_key=key, service_date=day, meta={"slot": "lunch"})
        else:
            await ledger_service.void_hold(session, hold_key=key)
    await ledger_service.record_donation_refund(
        session,
        donation_id=d,
        refund_id=uuid.uuid4(),
        amount_fen=50,
        source="wechatpay",
        external_ref=unique("r"),
    )
    monkeypatch.undo()
    return d


async def test_proof_recomputes_published_root_and_fails_on_any_byte(
    session: AsyncSession, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = date(2020, 1, 1) + timedelta(days=uuid.uuid4().int % 1500)
    d = await _past_day_activity(session, monkeypatch, day)
    await session.flush()

    res = await client.get(f"/api/v1/ledger/digests/{day.isoformat()}")
    assert res.status_code == 200, res.text
    digest = res.json()
    assert digest["entry_count"] >= 7

    ids = await ledger_service.entry_ids_for_donation(session, donation_id=d)
    assert len(ids) == 5  # paid; meals 2 (partly), 4 and 5 (meal 3 was voided); the refund
    proof = await ledger_service.proof_for_entries(session, ids)
    assert proof["published"] == {day.isoformat(): True}
    assert proof["roots"][day.isoformat()] == digest["merkle_root"]
    assert chain.verify_proof(proof)

    raw = json.dumps(proof, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    for i in range(len(raw)):
        tampered = bytearray(raw)
        tampered[i] ^= 0x01
        try:
            parsed = json.loads(bytes(tampered).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        assert not chain.verify_proof(parsed), (
            f"byte {i} ({chr(raw[i])!r}) changed and the proof still verified"
        )


async def test_merkle_paths_for_every_size() -> None:
    for n in range(1, 18):
        hashes = [chain.entry_hash(chain.GENESIS_HASH, {"n": i}) for i in range(n)]
        root = chain.merkle_root(hashes)
        for i in range(n):
            assert chain.root_from_path(hashes[i], chain.merkle_path(hashes, i)) == root
        if n > 1:  # any changed, dropped or reordered leaf changes the root
            assert chain.merkle_root([*hashes[:-1], hashes[0]]) != root
            assert chain.merkle_root(hashes[:-1]) != root
            assert chain.merkle_root(hashes[::-1]) != root


async def test_digest_endpoint_rules(
    session: AsyncSession, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    today = business_date()
    res = await client.get(f"/api/v1/ledger/digests/{today.isoformat()}")
    assert res.status_code == 404 and res.json()["error"] == "DigestNotReady"
    assert "次日" in res.json()["message"]
    res = await client.get("/api/v1/ledger/digests/2019-02-30")
    assert res.status_code == 422
    empty = await client.get("/api/v1/ledger/digests/2001-01-01")
    assert empty.status_code == 200
    assert empty.json()["entry_count"] == 0 and empty.json()["merkle_root"] == chain.merkle_root([])
    with pytest.raises(Conflict):
        await ledger_service.publish_digest(session, day=today)

    day = date(2019, 6, 1) + timedelta(days=uuid.uuid4().int % 200)
    await _past_day_activity(session, monkeypatch, day)
    published = await ledger_service.publish_missing_digests(session)
    assert day in published
    assert await ledger_service.publish_missing_digests(session) == []
    report = await ledger_service.check(session)
    assert report["ok"], report["problems"]
    # a published root that no longer matches is reported
    await _force(
        session, "UPDATE ledger_digests SET merkle_root = :r WHERE day = :d", {"r": "0" * 64, "d": day}
    )
    report = await ledger_service.check(session)
    assert any(p.get("day") == day.isoformat() and p["check"] == "digest" for p in report["problems"])


async def test_proof_for_unknown_entry_is_not_found(session: AsyncSession) -> None:
    with pytest.raises(NotFound):
        await ledger_service.proof_for_entries(session, [uuid.uuid4()])


async def test_admin_check_endpoint(session: AsyncSession, client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/admin/ledger/check")).status_code == 401
    plain = await login(client, unique("o"))
    res = await client.get("/api/v1/admin/ledger/check", headers=plain)
    assert res.status_code == 403
    openid = unique("o")
    await grant(session, openid, Role.federation_admin)
    admin = await login(client, openid)
    await _entry(session)
    res = await client.get("/api/v1/admin/ledger/check", headers=admin)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["ok"] is True and body["entries_checked"] >= 1 and body["problems"] == []


async def test_a_day_is_published_only_after_its_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry dated 23:59:59 whose transaction commits just after midnight must still be in its day's root."""
    from app.kit.time import SHANGHAI

    day = date(2026, 3, 4)
    midnight = datetime(2026, 3, 5, tzinfo=SHANGHAI).astimezone(UTC)
    for offset, ready in ((timedelta(minutes=1), False), (ledger_module.DIGEST_GRACE, True)):
        monkeypatch.setattr(ledger_module, "utcnow", lambda at=midnight + offset: at)
        assert ledger_module.digest_ready(day) is ready


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    memo=st.text(),
    refs=st.dictionaries(st.text(max_size=12), _JSON_VALUES, max_size=6),
    postings=st.lists(st.tuples(st.text(min_size=1, max_size=20), st.integers()), min_size=1, max_size=4),
)
def test_entry_hash_is_the_documented_recipe(memo: str, refs: dict[str, Any], postings: list[Any]) -> None:
    """Anyone re-running the chain with the recipe in app/ledger/chain.py gets the same hash: SHA-256 of
    prev_hash and the document as JSON with sorted keys, no spaces, UTF-8 (not ASCII escapes)."""
    document = chain.entry_document(
        seq=7,
        business_key="测试:" + memo[:20],
        kind="donation",
        memo=memo,
        refs=refs,
        day=date(2026, 1, 2),
        created_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        postings=postings,
    )
    recipe = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    prev = "ab" * 32
    assert chain.entry_hash(prev, document) == hashlib.sha256(prev.encode("ascii") + recipe).hexdigest()
    assert (
        chain.content_hash("donation", postings)
        == hashlib.sha256(
            json.dumps(
                {"kind": "donation", "postings": sorted(postings)},
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
            ).encode("utf-8")
        ).hexdigest()
    )


@pytest.mark.parametrize(
    "bad",
    [
        "A" * 64,  # hex, but not lowercase
        "g" * 64,  # not hex
        "a" * 62 + " a",  # hex digits and a space: 64 characters, not 32 bytes
        "a" * 63,  # too short
        "a" * 66,
    ],
)
async def test_a_seal_holds_only_lowercase_sha256_hex(session: AsyncSession, bad: str) -> None:
    entry = await ledger_service.post(
        session,
        business_key=unique("k"),
        kind="test",
        postings=[Posting("expense:wechat_fee", 3), Posting("wechatpay_clearing", -3)],
    )
    good = "0" * 64
    for hash_, prev in ((bad, good), (good, bad)):
        with pytest.raises(DBAPIError):
            async with session.begin_nested():
                await session.execute(
                    text(
                        "INSERT INTO journal_seals (seq, entry_id, prev_hash, hash) VALUES (1, :id, :p, :h)"
                    ),
                    {"id": entry.id, "p": prev, "h": hash_},
                )
    async with session.begin_nested():  # and a well-formed one goes in
        await session.execute(
            text("INSERT INTO journal_seals (seq, entry_id, prev_hash, hash) VALUES (1, :id, :p, :h)"),
            {"id": entry.id, "p": good, "h": "0123456789abcdef" * 4},
        )
