"""The ledger: double-entry, append-only, hash-chained; donation lots, two-phase charity holds, daily digests.

Sign convention: **debit positive, credit negative**; every entry's postings sum to zero. Asset accounts
(``wechatpay_clearing``, ``bank``) and expenses are debit-normal; pools, funds and payables are credit-normal
(balance ≤ 0). A paid donation is ``clearing +X / pool −X``; a meal paid by charity is ``pool +X /
payable:canteen −X``; a refund is ``pool +X / clearing −X``. What a pool can still give is
``-balance_fen - held_fen`` and is never negative.

``ledger_service.post`` is the only writer of entries. It writes an entry *unsealed*, in the business
transaction, without any ledger-wide lock. The sealer (``seal``: after each committing transaction that posted,
on demand before a proof, a digest or ``ledger-check``, and every minute as a job) takes the chain lock in a
short transaction of its own and chains the committed entries in batches, taking them off its queue
(``journal_unsealed``): a seal row each, with consecutive ``seq`` numbers and ``hash = SHA-256(prev_hash ||
canonical entry)`` (see ``app/ledger/chain.py``); the entry itself is never updated. A business key names each
entry: the same key with the same content returns the existing entry, with different content it is
``LedgerKeyReused``.

Balances: pools and funds (``no_overdraft``) are kept by the posting transaction under their row lock, because
every spend is checked against them; every other account (clearing, bank, payables, fees) is a sum the sealer
adds up per batch, so that no single hot row serialises all payments. ``balances()`` gives exact figures either
way.

Donation lots: each paid donation is one lot on its target account. Holds reserve fen from lots FIFO
(the canteen's pool first, then the general meal pool, oldest payment first) under row locks; a hold is then
posted (meal served) or voided (cancelled / no-show), exactly once. Refunds come only from a lot's remainder.

Lock order everywhere: donation lock or hold row → accounts (by code) → lots (by fifo_no). The chain lock is
taken only by the sealer, in a transaction of its own that touches nothing else.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol, overload

import orjson
import structlog
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from app.exceptions import BadRequest, Conflict, NotFound
from app.kit.background import PostCommitBatch
from app.kit.jsontext import encode_json
from app.kit.time import business_date, utcnow
from app.ledger import chain
from app.ledger.repository import (
    KIND_REFUND,
    KIND_REFUND_RELEASE,
    HeldAllocation,
    HoldRow,
    LedgerRepository,
    NewLot,
)
from app.models import DonationLot, JournalEntry, LedgerDigest
from app.models.charity_hold import HoldStatus

GENERAL_MEAL_POOL = "pool:general_meal"
CLEARING = {"wechatpay": "wechatpay_clearing", "bank": "bank"}
_FIXED_ACCOUNTS: dict[str, tuple[str, bool]] = {
    "wechatpay_clearing": ("asset", False),
    "bank": ("asset", False),
    GENERAL_MEAL_POOL: ("pool", True),
    "expense:wechat_fee": ("expense", False),
    "external:donors": ("external", False),
    "external:refunds": ("external", False),
}
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_SCOPED_ACCOUNTS = [
    (re.compile(rf"^fund:({_UUID})$"), "fund", True, "fund"),
    (re.compile(rf"^pool:canteen:({_UUID})$"), "pool", True, "canteen"),
    (re.compile(rf"^payable:canteen:({_UUID})$"), "payable", False, "canteen"),
]
_MAX_FEN = 10**15
# Accounts seen committed by this process (``_ensure_accounts``); the session key of those created by a
# transaction, which are not known until it commits.
_known_accounts: set[str] = set()
_KNOWN_ACCOUNTS_MAX = 100_000
_CREATED_ACCOUNTS = "ledger_created_accounts"


def forget_known_accounts() -> None:
    """For tests that empty the database under a running process."""
    _known_accounts.clear()


log = structlog.get_logger("app.ledger")
DIGEST_GRACE = timedelta(minutes=5)


@dataclass(frozen=True)
class Posting:
    """One leg of an entry: debit positive, credit negative (fen)."""

    account: str
    amount_fen: int


@dataclass(frozen=True)
class AccountBalance:
    code: str
    kind: str
    balance_fen: int
    held_fen: int


@dataclass(frozen=True)
class AccountSpec:
    code: str
    kind: str
    no_overdraft: bool
    fund_id: uuid.UUID | None = None
    canteen_id: uuid.UUID | None = None


def account_spec(code: str) -> AccountSpec:
    """The chart of accounts: a code is valid only if it matches one of its forms."""
    if not isinstance(code, str):
        raise BadRequest("账户名称不对", code="LedgerUnknownAccount", detail={"account": str(code)})
    return _account_spec(code)


@functools.lru_cache(maxsize=8192)  # a deployment has a few hundred accounts; every posting asks
def _account_spec(code: str) -> AccountSpec:
    fixed = _FIXED_ACCOUNTS.get(code)
    if fixed is not None:
        return AccountSpec(code, fixed[0], fixed[1])
    for pattern, kind, no_overdraft, scope in _SCOPED_ACCOUNTS:
        m = pattern.match(code)
        if m:
            ref = uuid.UUID(m.group(1))
            if scope == "fund":
                return AccountSpec(code, kind, no_overdraft, fund_id=ref)
            return AccountSpec(code, kind, no_overdraft, canteen_id=ref)
    raise BadRequest("账户名称不对", code="LedgerUnknownAccount", detail={"account": code})


def canteen_pool(canteen_id: uuid.UUID) -> str:
    return f"pool:canteen:{canteen_id}"


def meal_pools(canteen_id: uuid.UUID) -> list[str]:
    """The pools a meal at this canteen may draw on: its own, then the general meal pool."""
    return [canteen_pool(canteen_id), GENERAL_MEAL_POOL]


def canteen_payable(canteen_id: uuid.UUID) -> str:
    return f"payable:canteen:{canteen_id}"


def fund_account(fund_id: uuid.UUID, *, is_general_meal_pool: bool = False) -> str:
    """The account a donation to a fund lands on (the general meal pool fund is ``pool:general_meal``)."""
    return GENERAL_MEAL_POOL if is_general_meal_pool else f"fund:{fund_id}"


def _json_safe(value: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """Round-trip through JSON so what is hashed now is exactly what JSONB gives back later: the value as JSONB
    will give it back, and its JSON text (what is written; it holds the same value). The reference is
    ``json.dumps(value, default=str, ensure_ascii=False)`` (``app.kit.jsontext``)."""
    text, by_orjson = encode_json(value or {}, default=str)
    result: dict[str, Any] = orjson.loads(text) if by_orjson else json.loads(text)
    return result, text


def _check_fen(amount: Any, *, allow_zero: bool = False, field: str = "amount_fen") -> int:
    if type(amount) is not int or amount < 0 or (amount == 0 and not allow_zero) or amount > _MAX_FEN:
        raise BadRequest("金额必须是正整数（分）", code="LedgerBadAmount", detail={field: str(amount)})
    return amount


def _check_text(value: Any, field: str, max_len: int) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise BadRequest("记账参数不对", code="LedgerBadInput", detail={"field": field})
    return value


def sealed(entry: JournalEntry) -> tuple[int, str, str]:
    """``(seq, prev_hash, hash)`` of an entry the sealer has chained."""
    if entry.seq is None or entry.prev_hash is None or entry.hash is None:
        raise ValueError(f"entry {entry.id} is not sealed yet")
    return entry.seq, entry.prev_hash, entry.hash


def entry_document(
    entry: JournalEntry | Row[Any], postings: list[tuple[str, int]], *, seq: int | None = None
) -> dict[str, Any]:
    """The hashed document of ``entry`` (an entry, or a row of its columns): at its own ``seq``, or at ``seq``
    while it is being sealed."""
    if seq is None:
        assert isinstance(entry, JournalEntry)
        seq = sealed(entry)[0]
    return chain.entry_document(
        seq=seq,
        business_key=entry.business_key,
        kind=entry.kind,
        memo=entry.memo,
        refs=entry.refs,
        day=entry.day,
        created_at=entry.created_at,
        postings=postings,
    )


@dataclass(frozen=True)
class EntryDraft:
    """An entry to write: what ``post`` takes, as one item of a batch."""

    business_key: str
    kind: str
    postings: list[Posting]
    memo: str = ""
    refs: dict[str, Any] | None = None


class EntryLike(Protocol):
    """What a batch writer gives back for each entry: a new one (``NewEntry``) or one read back."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def business_key(self) -> str: ...

    @property
    def kind(self) -> str: ...


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry just written by a batch, as plain values (thousands of ORM objects cost more than the SQL)."""

    id: uuid.UUID
    business_key: str
    kind: str
    memo: str
    refs: dict[str, Any]
    refs_json: str  # ``refs`` as JSON text, as it is written
    content_hash: str
    day: date
    created_at: datetime

    def orm(self) -> JournalEntry:
        """The same entry as a JournalEntry (unsealed), for callers that want one in their session."""
        return JournalEntry(
            id=self.id,
            business_key=self.business_key,
            kind=self.kind,
            memo=self.memo,
            refs=self.refs,
            content_hash=self.content_hash,
            seal=None,
            day=self.day,
            created_at=self.created_at,
        )


@dataclass(frozen=True)
class DonationPayment:
    """A paid donation to record: one item of ``record_donation_payments``."""

    donation_id: uuid.UUID
    target_account: str
    amount_fen: int
    source: str
    external_ref: str
    paid_at: datetime


@dataclass(frozen=True)
class _Prepared:
    draft: EntryDraft
    lines: list[tuple[str, int]]
    fingerprint: str
    deltas: dict[str, int]  # pools and funds only


def _in_session(session: AsyncSession, entry: EntryLike) -> JournalEntry:
    """A JournalEntry in ``session`` for what a batch writer gave back (a new one joins it, unsealed, without
    another INSERT)."""
    if isinstance(entry, NewEntry):
        orm = entry.orm()
        make_transient_to_detached(orm)
        session.add(orm)
        return orm
    assert isinstance(entry, JournalEntry)
    return entry


def _payment_key(p: DonationPayment) -> str:
    return f"donation:{p.source}:{p.external_ref}:paid"


def _sum_deltas(items: list[_Prepared]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for item in items:
        for code, delta in item.deltas.items():
            total[code] += delta
    return dict(total)


def _check_refund(amount_fen: Any, source: Any, external_ref: Any) -> None:
    _check_fen(amount_fen)
    if source not in CLEARING:
        raise BadRequest("退款渠道不对", code="LedgerBadInput", detail={"field": "source"})
    _check_text(external_ref, "external_ref", 128)


class LedgerService:
    # ================================================================ the one writer

    async def post(
        self,
        session: AsyncSession,
        *,
        business_key: str,
        kind: str,
        postings: list[Posting],
        memo: str = "",
        refs: dict[str, Any] | None = None,
    ) -> JournalEntry:
        """Write one balanced entry (or return the identical one already written under ``business_key``).

        Pools and funds (``pool:*``, ``fund:*``) move only through the lot-keeping functions below (payments,
        meal holds, refunds), so that every fen in a pool belongs to a donation; ``post`` refuses them."""
        return await self._post(
            session,
            business_key=business_key,
            kind=kind,
            postings=postings,
            memo=memo,
            refs=refs,
            lots_kept=False,
        )

    async def _post(
        self,
        session: AsyncSession,
        *,
        business_key: str,
        kind: str,
        postings: list[Posting],
        memo: str = "",
        refs: dict[str, Any] | None = None,
        lots_kept: bool,
    ) -> JournalEntry:
        draft = EntryDraft(business_key=business_key, kind=kind, postings=postings, memo=memo, refs=refs)
        return (await self._post_many(session, [draft], lots_kept=lots_kept))[0]

    def _prepare(self, draft: EntryDraft, *, lots_kept: bool) -> _Prepared:
        _check_text(draft.business_key, "business_key", 200)
        _check_text(draft.kind, "kind", 40)
        if not isinstance(draft.memo, str):
            raise BadRequest("记账参数不对", code="LedgerBadInput", detail={"field": "memo"})
        if not isinstance(draft.postings, list) or len(draft.postings) < 2:
            raise BadRequest("一笔分录至少要有两条记账", code="LedgerUnbalanced")
        lines: list[tuple[str, int]] = []
        for p in draft.postings:
            amount = p.amount_fen
            if type(amount) is not int or amount == 0 or abs(amount) > _MAX_FEN:
                raise BadRequest(
                    "记账金额必须是非零整数（分）", code="LedgerBadAmount", detail={"account": p.account}
                )
            if account_spec(p.account).no_overdraft and not lots_kept:
                raise BadRequest(
                    "资金池和基金只能通过捐赠入账、助餐补贴和退款变动",
                    code="LedgerPoolNeedsLots",
                    detail={"account": p.account},
                )
            lines.append((p.account, amount))
        if sum(a for _, a in lines) != 0:
            raise BadRequest(
                "借贷不平衡", code="LedgerUnbalanced", detail={"sum_fen": sum(a for _, a in lines)}
            )
        deltas: dict[str, int] = defaultdict(int)
        for account, amount in lines:
            if account_spec(account).no_overdraft:
                deltas[account] += amount
        return _Prepared(draft, lines, chain.content_hash(draft.kind, lines), dict(deltas))

    async def _post_many(
        self,
        session: AsyncSession,
        drafts: list[EntryDraft],
        *,
        lots_kept: bool,
    ) -> list[JournalEntry]:
        """``_write_entries``, giving back JournalEntry objects in the session (new ones join it unsealed)."""
        entries = await self._write_entries(session, drafts, lots_kept=lots_kept)
        return [_in_session(session, entry) for entry in entries]

    async def _write_entries(
        self,
        session: AsyncSession,
        drafts: list[EntryDraft],
        *,
        lots_kept: bool,
        lots_for: Callable[[list[NewEntry]], list[NewLot]] | None = None,
        pools_moved_by_caller: bool = False,
    ) -> list[EntryLike]:
        """Write balanced entries (one per draft, in order), or return the identical ones already written
        under their business keys; all or nothing. A batch costs the same few statements as one entry: the
        accounts' existence (once per process), one conditional UPDATE per pool or fund the batch takes money
        from, then one statement that inserts the entries, their postings and ``lots_for(new entries)`` (the
        donation lots that refer to them) and adds the money to the pools and funds the batch pays into, all
        for the entries actually written.

        Money taken from a pool is checked and its row locked first, since it can fail. Money added cannot
        fail, so it comes last: a popular pool's row is then locked only from that statement to the commit,
        not for the whole transaction, and concurrent payments to one pool do not queue behind each other's
        inserts.

        ``pools_moved_by_caller``: the caller moves the pools and funds itself, after this (a served meal's
        held money becomes spent, ``post_holds``), and nothing of theirs is checked or moved here."""
        prepared = [self._prepare(d, lots_kept=lots_kept) for d in drafts]
        if len({p.draft.business_key for p in prepared}) != len(prepared):
            raise BadRequest(
                "同一批记账里业务编号重复", code="LedgerBadInput", detail={"field": "business_key"}
            )
        repo = LedgerRepository(session)
        await self._ensure_accounts(repo, sorted({a for p in prepared for a, _ in p.lines}))
        found: dict[str, JournalEntry] = {}
        pending = prepared
        # Pools and funds: balance kept in this transaction by a conditional UPDATE (row-locked to commit), so
        # no one overdraws them; every other account's balance is added up by the sealer (no hot row such as
        # the clearing account). Replayed keys are found by the insert below, which then undoes their share.
        while True:
            taken = {} if pools_moved_by_caller else {c: d for c, d in _sum_deltas(pending).items() if d > 0}
            failed = await self._apply_balances(repo, taken)
            if failed is None:
                break
            replays = await repo.entries_by_keys([p.draft.business_key for p in pending])
            if not replays:  # nothing here is a replay of an entry that already spent this money
                acc = (await repo.accounts([failed]))[0]
                raise Conflict(
                    "资金池余额不足",
                    code="InsufficientFunds",
                    detail={"account": failed, "available_fen": -acc.balance_fen - acc.held_fen},
                )
            found.update(replays)
            pending = [p for p in pending if p.draft.business_key not in replays]

        created_at = utcnow()
        day = business_date(created_at)
        new: dict[str, NewEntry] = {}
        for p in pending:
            refs, refs_json = _json_safe(p.draft.refs)
            new[p.draft.business_key] = NewEntry(
                id=uuid.uuid4(),
                business_key=p.draft.business_key,
                kind=p.draft.kind,
                memo=p.draft.memo,
                refs=refs,
                refs_json=refs_json,
                content_hash=p.fingerprint,
                day=day,
                created_at=created_at,
            )
        # what each entry adds to pools and funds (applied only for the entries written)
        credits = (
            []
            if pools_moved_by_caller
            else [
                (new[p.draft.business_key].id, code, delta)
                for p in pending
                for code, delta in p.deltas.items()
                if code not in taken and delta
            ]
        )
        inserted = (
            await repo.insert_entries(
                [(new[p.draft.business_key], p.lines) for p in pending],
                lots=lots_for([new[p.draft.business_key] for p in pending]) if lots_for else (),
                credits=credits,
            )
            if pending
            else set()
        )
        raced = [p for p in pending if p.draft.business_key not in inserted]
        if raced:
            # keys committed meanwhile by a concurrent transaction, which this insert waited on: give back what
            # was taken for them (nothing was added for them, nor lots written)
            await repo.add_to_balances({code: -d for code, d in _sum_deltas(raced).items() if code in taken})
            found.update(await repo.entries_by_keys([p.draft.business_key for p in raced]))
        if inserted:
            sealer.after_commit_of(session)
        out: list[EntryLike] = []
        for p in prepared:
            key = p.draft.business_key
            if key in inserted:
                out.append(new[key])
            else:
                out.append(self._replayed_entry(found[key], p.fingerprint))
        return out

    @staticmethod
    async def _apply_balances(repo: LedgerRepository, deltas: dict[str, int]) -> str | None:
        """Move each pool or fund by its delta while it stays covered, in code order; on the first that would
        not be, undo the others and return its code."""
        applied: list[str] = []
        for code in sorted(deltas):
            if not deltas[code]:
                continue
            if not await repo.add_to_balance_within_funds(code, deltas[code]):
                for done in reversed(applied):
                    await repo.add_to_balance(done, -deltas[done])
                return code
            applied.append(code)
        return None

    @staticmethod
    def _replayed_entry(existing: JournalEntry, fingerprint: str) -> JournalEntry:
        if existing.content_hash != fingerprint:
            raise Conflict(
                "这笔账已经记过，内容却不一样",
                code="LedgerKeyReused",
                detail={"business_key": existing.business_key, "entry_id": str(existing.id)},
            )
        return existing

    # ================================================================ the sealer

    @overload
    async def seal(self, session: AsyncSession, *, wait: Literal[True] = True, batch: int = 500) -> int: ...

    @overload
    async def seal(self, session: AsyncSession, *, wait: bool, batch: int = 500) -> int | None: ...

    async def seal(self, session: AsyncSession, *, wait: bool = True, batch: int = 500) -> int | None:
        """Chain every committed entry that is not sealed yet (a seal row each: consecutive ``seq``,
        ``prev_hash``, ``hash``) and add their postings to the balances that are not kept in the posting
        transaction. Holds the chain lock (transaction-scoped) until the caller commits. Returns how many it
        sealed; with ``wait=False``, None at once when another transaction holds the chain lock."""
        repo = LedgerRepository(session)
        if not await repo.lock_chain(wait=wait):
            return None
        head = await repo.chain_head()
        seq, prev_hash = head if head else (0, chain.GENESIS_HASH)
        sealed = 0
        while True:
            entries = await repo.unsealed(batch)
            if not entries:
                break
            rows: list[tuple[uuid.UUID, datetime, int, str, str]] = []
            deferred: dict[str, int] = defaultdict(int)
            for entry in entries:
                seq += 1
                lines = list(zip(entry.accounts or (), entry.amounts or (), strict=True))
                entry_hash = chain.entry_hash(prev_hash, entry_document(entry, lines, seq=seq))
                rows.append((entry.id, entry.created_at, seq, prev_hash, entry_hash))
                prev_hash = entry_hash
                for account, amount in lines:
                    if not account_spec(account).no_overdraft:
                        deferred[account] += amount
            await repo.seal_rows(rows)
            await repo.add_to_balances(deferred)
            sealed += len(entries)
            if len(entries) < batch:
                break
        return sealed

    async def _ensure_accounts(self, repo: LedgerRepository, codes: list[str]) -> None:
        """Create the accounts that do not exist yet. Accounts are never deleted, so one seen committed stays
        known to this process and is not looked up again (if one ever went missing anyway, the postings'
        foreign key would refuse the entry: nothing is written to an account that is not there)."""
        unknown = [code for code in codes if code not in _known_accounts]
        if not unknown:
            return
        existing = await repo.existing_account_codes(unknown)
        created_here: set[str] = repo.session.info.setdefault(_CREATED_ACCOUNTS, set())
        if len(_known_accounts) > _KNOWN_ACCOUNTS_MAX:
            _known_accounts.clear()
        _known_accounts.update(existing - created_here)  # one created by this transaction may roll back
        for code in unknown:
            if code in existing:
                continue
            spec = account_spec(code)
            if spec.fund_id is not None and not await repo.fund_exists(spec.fund_id):
                raise NotFound("找不到这个基金", code="FundNotFound", detail={"account": code})
            if spec.canteen_id is not None and not await repo.canteen_exists(spec.canteen_id):
                raise NotFound("找不到这个食堂", code="CanteenNotFound", detail={"account": code})
            await repo.create_account(
                {
                    "code": code,
                    "kind": spec.kind,
                    "no_overdraft": spec.no_overdraft,
                    "fund_id": spec.fund_id,
                    "canteen_id": spec.canteen_id,
                }
            )
            created_here.add(code)

    # ================================================================ donations

    async def record_donation_payment(
        self,
        session: AsyncSession,
        *,
        donation_id: uuid.UUID,
        target_account: str,
        amount_fen: int,
        source: str,
        external_ref: str,
        paid_at: datetime,
    ) -> JournalEntry:
        """Money in: ``clearing (or bank) +X / target −X`` and a lot on the target. Idempotent on
        ``(source, external_ref)``."""
        payment = DonationPayment(
            donation_id=donation_id,
            target_account=target_account,
            amount_fen=amount_fen,
            source=source,
            external_ref=external_ref,
            paid_at=paid_at,
        )
        return _in_session(session, (await self.record_donation_payments(session, [payment]))[0])

    async def record_donation_payments(
        self, session: AsyncSession, payments: list[DonationPayment], *, unpaid_and_locked: bool = False
    ) -> list[EntryLike]:
        """``record_donation_payment`` for a batch, in a constant number of statements: the donations' locks,
        one look-up of lots already there, then the entries with their postings, their lots and the receiving
        pools' new balances in one (``_write_entries``). Each payment is idempotent on ``(source,
        external_ref)``; the batch is all or nothing. New entries come back as ``NewEntry`` values, not added
        to the session (a batch of payments has no use for thousands of ORM objects).

        ``unpaid_and_locked``: the caller holds every donation's row lock in this transaction and has seen
        each one unpaid (``DonationService.complete_payments``). A donation's lot is written by the
        transaction that marks it paid, so none of these has one: the donation locks and the look-up are
        skipped (two round trips of every payment batch). A payment whose entry turns out to be there already
        (the same payment recorded for another donation) then fails the batch with ``LedgerKeyReused``, as
        the look-up would have."""
        for p in payments:
            self._check_payment(p)
        if len({p.donation_id for p in payments}) != len(payments) or len(
            {(p.source, p.external_ref) for p in payments}
        ) != len(payments):
            raise BadRequest(
                "同一批入账里有重复的捐赠", code="LedgerBadInput", detail={"field": "donation_id"}
            )
        repo = LedgerRepository(session)
        if unpaid_and_locked:
            lots: list[DonationLot] = []
        else:
            await repo.lock_donations([p.donation_id for p in payments])
            lots = await repo.lots_for_donations_or_refs(
                [p.donation_id for p in payments], [(p.source, p.external_ref) for p in payments]
            )
        by_donation = {lot.donation_id: lot for lot in lots}
        by_ref = {(lot.source, lot.external_ref): lot for lot in lots}
        known: dict[int, DonationLot] = {}
        for i, p in enumerate(payments):
            lot = by_donation.get(p.donation_id) or by_ref.get((p.source, p.external_ref))
            if lot is None:
                continue
            same = (
                lot.donation_id == p.donation_id
                and lot.source == p.source
                and lot.external_ref == p.external_ref
                and lot.amount_fen == p.amount_fen
                and lot.account_code == p.target_account
            )
            if not same:
                raise Conflict(
                    "这笔捐款已经入账，内容却不一样",
                    code="LedgerKeyReused",
                    detail={"donation_id": str(lot.donation_id)},
                )
            known[i] = lot
        fresh = [p for i, p in enumerate(payments) if i not in known]

        def lots_for(entries: list[NewEntry]) -> list[NewLot]:
            made = {e.business_key: e for e in entries}
            return [
                NewLot(
                    id=uuid.uuid4(),
                    donation_id=p.donation_id,
                    account_code=p.target_account,
                    source=p.source,
                    external_ref=p.external_ref,
                    entry_id=made[_payment_key(p)].id,
                    amount_fen=p.amount_fen,
                    paid_at=p.paid_at,
                )
                for p in fresh
                if _payment_key(p) in made
            ]

        entries = await self._write_entries(
            session,
            [
                EntryDraft(
                    business_key=_payment_key(p),
                    kind="donation",
                    postings=[
                        Posting(CLEARING[p.source], p.amount_fen),
                        Posting(p.target_account, -p.amount_fen),
                    ],
                    memo="捐赠到账",
                    refs={
                        "donation_id": str(p.donation_id),
                        "source": p.source,
                        "external_ref": p.external_ref,
                    },
                )
                for p in fresh
            ],
            lots_kept=True,
            lots_for=lots_for,
        )
        if unpaid_and_locked:
            reused = next((e for e in entries if not isinstance(e, NewEntry)), None)
            if reused is not None:
                raise Conflict(
                    "这笔捐款已经入账，内容却不一样",
                    code="LedgerKeyReused",
                    detail={"business_key": reused.business_key, "entry_id": str(reused.id)},
                )
        earlier = {e.id: e for e in await repo.entries_by_ids([lot.entry_id for lot in known.values()])}
        made = iter(entries)
        return [earlier[known[i].entry_id] if i in known else next(made) for i in range(len(payments))]

    @staticmethod
    def _check_payment(p: DonationPayment) -> None:
        _check_fen(p.amount_fen)
        if p.source not in CLEARING:
            raise BadRequest("付款渠道不对", code="LedgerBadInput", detail={"field": "source"})
        _check_text(p.external_ref, "external_ref", 128)
        spec = account_spec(p.target_account)
        if spec.kind not in ("pool", "fund"):
            raise BadRequest(
                "捐赠只能进入资金池或基金", code="LedgerBadTarget", detail={"account": p.target_account}
            )
        if not isinstance(p.paid_at, datetime) or p.paid_at.tzinfo is None:
            raise BadRequest("付款时间不对", code="LedgerBadInput", detail={"field": "paid_at"})

    async def refundable_fen(self, session: AsyncSession, *, donation_id: uuid.UUID) -> int:
        """paid − held − allocated (spent) − refunded; 0 for a donation the ledger has not seen."""
        lot = await LedgerRepository(session).lot_for_donation(donation_id)
        return 0 if lot is None else lot.amount_fen - lot.held_fen - lot.allocated_fen - lot.refunded_fen

    async def record_donation_refund(
        self,
        session: AsyncSession,
        *,
        donation_id: uuid.UUID,
        refund_id: uuid.UUID,
        amount_fen: int,
        source: str,
        external_ref: str,
    ) -> JournalEntry:
        """Money back to the donor from the unspent remainder: ``pool +X / clearing (or bank) −X``."""
        _check_refund(amount_fen, source, external_ref)
        repo = LedgerRepository(session)
        await repo.lock_donation(donation_id)
        lot = await repo.lot_for_donation(donation_id)
        if lot is None:
            raise NotFound("这笔捐款还没有入账", code="DonationNotInLedger")
        business_key = f"refund:{source}:{external_ref}"
        postings = [Posting(lot.account_code, amount_fen), Posting(CLEARING[source], -amount_fen)]
        refs = {"donation_id": str(donation_id), "refund_id": str(refund_id), "source": source}
        if await repo.entry_by_key(business_key) is not None:  # replay: same content or LedgerKeyReused
            return await self._post(
                session,
                business_key=business_key,
                kind=KIND_REFUND,
                postings=postings,
                refs=refs,
                lots_kept=True,
            )
        await repo.lock_accounts([lot.account_code])
        lot = await repo.lot_for_donation(donation_id, lock=True)
        assert lot is not None
        remaining = lot.amount_fen - lot.held_fen - lot.allocated_fen - lot.refunded_fen
        if amount_fen > remaining:
            raise Conflict(
                "退款金额超过了这笔捐款尚未使用的部分",
                code="RefundExceedsRemainder",
                detail={"refundable_fen": remaining},
            )
        await repo.change_lot(lot.id, refunded=amount_fen)
        return await self._post(
            session,
            business_key=business_key,
            kind=KIND_REFUND,
            postings=postings,
            memo="捐赠退款",
            refs=refs,
            lots_kept=True,
        )

    async def release_donation_refund(
        self,
        session: AsyncSession,
        *,
        donation_id: uuid.UUID,
        refund_id: uuid.UUID,
        amount_fen: int,
        source: str,
        external_ref: str,
    ) -> JournalEntry:
        """A reserved refund that will not be paid (WeChat Pay refused or closed it) goes back into the pool: a
        reversing entry ``pool −X / clearing (or bank) +X`` and the donation's unspent remainder grows again.
        Only a refund recorded under the same ``external_ref`` and amount can be released, and only once;
        releasing it again returns the same entry."""
        _check_refund(amount_fen, source, external_ref)
        repo = LedgerRepository(session)
        await repo.lock_donation(donation_id)
        lot = await repo.lot_for_donation(donation_id)
        reserved = await repo.entry_by_key(f"refund:{source}:{external_ref}")
        if lot is None or reserved is None:
            raise NotFound("这笔退款没有在账本中预留", code="RefundNotInLedger")
        if (
            reserved.refs.get("refund_id") != str(refund_id)
            or (lot.account_code, amount_fen) not in (await repo.postings_of([reserved.id]))[reserved.id]
        ):
            raise Conflict(
                "要撤回的退款与账本中预留的不一致",
                code="LedgerKeyReused",
                detail={"business_key": reserved.business_key, "entry_id": str(reserved.id)},
            )
        business_key = f"refund_release:{source}:{external_ref}"
        postings = [Posting(lot.account_code, -amount_fen), Posting(CLEARING[source], amount_fen)]
        refs = {"donation_id": str(donation_id), "refund_id": str(refund_id), "source": source}
        if await repo.entry_by_key(business_key) is None:
            await repo.change_lot(lot.id, refunded=-amount_fen)
        # money back into a pool cannot fail: _write_entries adds it after the inserts, as for payments
        return await self._post(
            session,
            business_key=business_key,
            kind=KIND_REFUND_RELEASE,
            postings=postings,
            memo="退款未成功，款项退回",
            refs=refs,
            lots_kept=True,
        )

    # ================================================================ holds (two-phase)

    async def available_for_canteen(self, session: AsyncSession, *, canteen_id: uuid.UUID) -> int:
        """Free fen for this canteen's meals: its pool plus the general meal pool."""
        return await LedgerRepository(session).free_fen(meal_pools(canteen_id))

    @dataclass(frozen=True)
    class HoldRequest:
        """One meal's charity portion to reserve: what ``place_hold`` takes, one item of ``place_holds``."""

        hold_key: str
        canteen_id: uuid.UUID
        amount_fen: int
        meta: dict[str, Any] | None = None

    @dataclass(frozen=True)
    class ServedMeal:
        """A served meal whose hold is to be posted: what ``post_hold`` takes, one item of ``post_holds``."""

        hold_key: str
        service_date: date
        meta: dict[str, Any] | None = None

    async def place_hold(
        self,
        session: AsyncSession,
        *,
        hold_key: str,
        canteen_id: uuid.UUID,
        amount_fen: int,
        meta: dict[str, Any] | None = None,
    ) -> int:
        """Reserve up to ``amount_fen`` FIFO from the canteen's lots, then the general pool's; returns what was
        held (possibly less, or 0). Calling again with the same key returns the same amount. ``meta`` (service
        date, slot, age band: never who eats) is shown to donors as "reserved"; ``post_hold`` adds to it.
        A batch of one of ``place_holds``."""
        request = LedgerService.HoldRequest(hold_key, canteen_id, amount_fen, meta)
        return (await self.place_holds(session, [request]))[hold_key]

    async def place_holds(
        self, session: AsyncSession, requests: list[LedgerService.HoldRequest]
    ) -> dict[str, int]:
        """``place_hold`` for a batch, exactly as if it were called for each request in order, in a constant
        number of statements (at most eight, whatever the size): the same FIFO over the same lots, a later
        request getting what the earlier ones left (the elder pays any shortfall), and replays answered from
        the hold rows (a key given twice in the batch is a replay of its first request). Returns what was held
        per hold key.

        All or nothing: bad input, an unknown canteen or a refused replay (``HoldKeyReused``,
        ``HoldAlreadyVoided``) refuses the whole batch before anything is reserved, checked in that order (by
        request order within each). Holds are claimed in key order, then the pools are locked (by code), then
        the lots needed (FIFO), so concurrent batches queue on the pool rows and never deadlock."""
        for r in requests:
            _check_text(r.hold_key, "hold_key", 100)
            _check_fen(r.amount_fen, allow_zero=True)
        if not requests:
            return {}
        repo = LedgerRepository(session)
        canteens = {r.canteen_id for r in requests}
        if len(await repo.existing_canteens(list(canteens))) != len(canteens):
            raise NotFound("找不到这个食堂", code="CanteenNotFound")

        first: dict[str, tuple[int, LedgerService.HoldRequest]] = {}
        refused: list[tuple[int, Conflict]] = []
        for i, r in enumerate(requests):
            seen = first.setdefault(r.hold_key, (i, r))[1]
            if (seen.canteen_id, seen.amount_fen) != (r.canteen_id, r.amount_fen):
                refused.append((i, self._hold_key_reused(r.hold_key)))
        claimed = await repo.claim_holds(
            sorted((key, r.canteen_id, r.amount_fen) for key, (_, r) in first.items())
        )
        held = {key: 0 for key in claimed}
        replays = [key for key in first if key not in claimed]
        if replays:
            for hold in await repo.holds_by_keys(replays):
                i, r = first[hold.hold_key]
                try:
                    held[hold.hold_key] = self._replayed_hold(hold, r.canteen_id, r.amount_fen)
                except Conflict as err:
                    refused.append((i, err))
        if refused:
            if claimed:  # nothing of a refused batch stays behind
                await repo.delete_holds(list(claimed.values()))
            raise min(refused, key=lambda item: item[0])[1]
        assert held.keys() == first.keys()

        wanted = [(key, r) for key, (_, r) in first.items() if key in claimed and r.amount_fen > 0]
        if wanted:
            await self._reserve(repo, wanted, claimed, held)
        return {key: held[key] for key in first}

    async def _reserve(
        self,
        repo: LedgerRepository,
        wanted: list[tuple[str, LedgerService.HoldRequest]],
        claimed: dict[str, uuid.UUID],
        held: dict[str, int],
    ) -> None:
        """FIFO allocation of the new holds ``wanted`` (in request order), in Python over locked rows, then
        written in one statement per table; ``held`` gets what each hold got."""
        metas = [self._meta_json(r.meta or {}) for _, r in wanted]  # before the pool rows are locked
        accounts = await repo.lock_accounts(
            sorted({canteen_pool(r.canteen_id) for _, r in wanted} | {GENERAL_MEAL_POOL})
        )
        free = {code: max(0, -a.balance_fen - a.held_fen) for code, a in accounts.items()}
        # Requests served in order take from their canteen's pool as far as it goes, and what they lack from
        # the general pool: so the batch draws exactly this much from each pool, and only those lots are
        # locked.
        draw: dict[str, int] = defaultdict(int)
        for _, r in wanted:
            draw[canteen_pool(r.canteen_id)] += r.amount_fen
        short = 0
        for code, total in list(draw.items()):
            draw[code] = min(total, free.get(code, 0))
            short += total - draw[code]
        draw[GENERAL_MEAL_POOL] = min(short, free.get(GENERAL_MEAL_POOL, 0))
        page = min(max(50, 2 * len(wanted)), 2000)
        lots: dict[str, list[tuple[uuid.UUID, uuid.UUID, int]]] = {}
        for code in sorted(draw):
            if draw[code] > 0:
                lots[code] = [
                    (lot.id, lot.donation_id, lot.remaining_fen)
                    for lot in await repo.fifo_lots(code, draw[code], page=page)
                ]

        left = {lot_id: remaining for rows in lots.values() for lot_id, _, remaining in rows}
        next_lot: dict[str, int] = defaultdict(int)
        lot_held: dict[uuid.UUID, int] = defaultdict(int)
        account_held: dict[str, int] = defaultdict(int)
        allocations: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID, str, int, str]] = []
        short_of: list[tuple[uuid.UUID, int]] = []  # claimed as fully held: the ones that were not
        for (key, r), meta in zip(wanted, metas, strict=True):
            need = r.amount_fen
            hold_id = claimed[key]
            for code in (canteen_pool(r.canteen_id), GENERAL_MEAL_POOL):
                rows = lots.get(code)
                if not rows or need == 0:
                    continue
                pos, room = next_lot[code], free[code]
                while need > 0 and room > 0 and pos < len(rows):
                    lot_id, donation_id, _ = rows[pos]
                    take = min(need, left[lot_id], room)
                    if take > 0:
                        allocations.append((lot_id, donation_id, hold_id, code, take, meta))
                        lot_held[lot_id] += take
                        account_held[code] += take
                        left[lot_id] -= take
                        room -= take
                        need -= take
                    if left[lot_id] == 0:
                        pos += 1
                next_lot[code], free[code] = pos, room
            held[key] = r.amount_fen - need
            if need:
                short_of.append((hold_id, held[key]))

        await repo.change_lots([(lot_id, fen, 0) for lot_id, fen in lot_held.items()])
        await repo.add_to_held_of(account_held)
        await repo.insert_allocations(allocations)
        await repo.set_holds_held(short_of)

    @staticmethod
    def _meta_json(meta: dict[str, Any]) -> str:
        """What donors see of a meal, as the JSON text that ``_json_safe`` would give (for a jsonb column)."""
        return encode_json(meta, default=str)[0]

    @staticmethod
    def _hold_key_reused(hold_key: str) -> Conflict:
        return Conflict("这笔预留已经存在，内容却不一样", code="HoldKeyReused", detail={"hold_key": hold_key})

    @staticmethod
    def _replayed_hold(hold: HoldRow, canteen_id: uuid.UUID, amount_fen: int) -> int:
        """A hold asked for again: the same amount, unless it was asked differently or has been voided."""
        if hold.canteen_id != canteen_id or hold.requested_fen != amount_fen:
            raise LedgerService._hold_key_reused(hold.hold_key)
        if hold.status == HoldStatus.voided:
            raise Conflict("这笔预留已经取消", code="HoldAlreadyVoided", detail={"hold_key": hold.hold_key})
        return hold.held_fen

    async def post_hold(
        self, session: AsyncSession, *, hold_key: str, service_date: date, meta: dict[str, Any]
    ) -> JournalEntry | None:
        """The meal was served: pool(s) → ``payable:canteen:<id>``; the allocations become final. None when
        nothing was held for this key. Posting twice returns the same entry; posting a voided hold is a
        ``HoldAlreadyVoided`` conflict. A batch of one of ``post_holds``."""
        meal = LedgerService.ServedMeal(hold_key, service_date, meta)
        entry = (await self.post_holds(session, [meal]))[hold_key]
        return None if entry is None else _in_session(session, entry)

    async def post_holds(
        self, session: AsyncSession, meals: list[LedgerService.ServedMeal]
    ) -> dict[str, EntryLike | None]:
        """``post_hold`` for a batch, exactly as if it were called for each meal in order, in a constant
        number of statements (eight, plus ``_write_entries``' four): one ``meal_subsidy`` entry per meal under
        ``hold:<key>:posted``, and the meal's ``meta`` (with its service date) added to what the donors see of
        its allocations. Returns the entry per hold key: None when nothing was held or there is no such hold,
        the existing entry for a hold already posted; a key given twice is a replay of its first meal.

        All or nothing: a voided hold (``HoldAlreadyVoided``, the first in order) refuses the whole batch
        before anything is written. Lock order: the hold rows (by key), the pools (by code), the lots (by
        fifo_no); the entries are drafted before the pools are locked."""
        first: dict[str, LedgerService.ServedMeal] = {}
        for m in meals:
            first.setdefault(m.hold_key, m)
        if not first:
            return {}
        repo = LedgerRepository(session)
        holds = {h.hold_key: h for h in await repo.holds_by_keys(list(first), lock=True)}
        for key in first:
            hold = holds.get(key)
            if hold is not None and hold.status == HoldStatus.voided:
                raise Conflict(
                    "这笔预留已经取消，不能再记为已用餐", code="HoldAlreadyVoided", detail={"hold_key": key}
                )
        out: dict[str, EntryLike | None] = {key: None for key in first}
        done = {
            h.entry_id: h.hold_key for h in holds.values() if h.status == HoldStatus.posted and h.entry_id
        }
        if done:
            for entry in await repo.entries_by_ids(list(done)):
                out[done[entry.id]] = entry
        pending = [holds[key] for key in first if key in holds and holds[key].status == HoldStatus.held]
        if not pending:
            return out
        now = utcnow()
        live = [h for h in pending if h.held_fen > 0]
        allocations = await self._held_allocations(repo, live)

        drafts: list[EntryDraft] = []
        metas: list[str] = []
        for hold in live:
            key, canteen_id = hold.hold_key, hold.canteen_id
            meal = first[key]
            day = meal.service_date.isoformat()
            metas.append(self._meta_json({**(meal.meta or {}), "service_date": day}))
            per_account: dict[str, int] = defaultdict(int)
            donations: set[str] = set()
            for a in allocations[hold.id]:
                per_account[a.account_code] += a.amount_fen
                donations.add(str(a.donation_id))
            postings = [Posting(code, total) for code, total in sorted(per_account.items())]
            postings.append(Posting(canteen_payable(canteen_id), -hold.held_fen))
            drafts.append(
                EntryDraft(
                    business_key=f"hold:{key}:posted",
                    kind="meal_subsidy",
                    postings=postings,
                    memo="助餐补贴（已用餐）",
                    refs={
                        "hold_key": key,
                        "canteen_id": str(canteen_id),
                        "service_date": day,
                        "donations": sorted(donations),
                    },
                )
            )
        entries = (
            await self._write_entries(session, drafts, lots_kept=True, pools_moved_by_caller=True)
            if drafts
            else []
        )
        entry_of = {h.id: e for h, e in zip(live, entries, strict=True)}
        resolved = [
            (allocation.id, entry_of[h.id].id, meta)
            for h, meta in zip(live, metas, strict=True)
            for allocation in allocations[h.id]
        ]
        await repo.resolve_allocations(
            [a for a, _, _ in resolved],
            status=HoldStatus.posted.value,
            resolved_at=now,
            entry_ids=[e for _, e, _ in resolved],
            metas=[m for _, _, m in resolved],
        )
        await repo.resolve_holds(
            [(h.id, entry_of[h.id].id if h.id in entry_of else None) for h in pending],
            status=HoldStatus.posted.value,
            resolved_at=now,
        )
        # last, so the pools (every meal's hot rows) and lots are locked only from here to the commit: the held
        # money becomes spent (held → allocated on the lots; held → balance on the pools, which leaves what a
        # pool can still give unchanged, so nothing needs checking)
        await self._release(repo, allocations, allocated=True)
        for h in live:
            out[h.hold_key] = entry_of[h.id]
        return out

    @staticmethod
    async def _held_allocations(
        repo: LedgerRepository, holds: list[HoldRow]
    ) -> dict[uuid.UUID, list[HeldAllocation]]:
        """Each hold's held allocations. The hold rows are locked, so they stay as read."""
        per_hold: dict[uuid.UUID, list[HeldAllocation]] = {h.id: [] for h in holds}
        for allocation in await repo.held_allocations(list(per_hold)) if holds else []:
            per_hold[allocation.hold_id].append(allocation)
        return per_hold

    @staticmethod
    async def _release(
        repo: LedgerRepository, allocations: dict[uuid.UUID, list[HeldAllocation]], *, allocated: bool
    ) -> None:
        """Take these held allocations off their lots' and pools' held amounts (when ``allocated``: onto the
        lots' allocated amounts and the pools' balances, i.e. spent), under the pools' and then the lots' row
        locks."""
        lot_moves: dict[uuid.UUID, int] = defaultdict(int)
        account_moves: dict[str, int] = defaultdict(int)
        for rows in allocations.values():
            for a in rows:
                lot_moves[a.lot_id] += a.amount_fen
                account_moves[a.account_code] += a.amount_fen
        if not lot_moves:
            return
        await repo.lock_accounts(sorted(account_moves))
        await repo.lock_lots(list(lot_moves))
        await repo.change_lots([(lot_id, -fen, fen if allocated else 0) for lot_id, fen in lot_moves.items()])
        await repo.add_to_held_of({code: -fen for code, fen in account_moves.items()}, spent=allocated)

    async def void_hold(self, session: AsyncSession, *, hold_key: str) -> None:
        """Cancelled or not collected: the reservation goes back to its lots. A no-op when there is no such hold
        or it is already voided; ``HoldAlreadyPosted`` when the meal was already served. A batch of one of
        ``void_holds``."""
        await self.void_holds(session, [hold_key])

    async def void_holds(self, session: AsyncSession, hold_keys: list[str]) -> None:
        """``void_hold`` for a batch, in a constant number of statements. All or nothing: a hold already
        posted (``HoldAlreadyPosted``, the first in order) refuses the whole batch before anything is
        written."""
        keys = list(dict.fromkeys(hold_keys))
        if not keys:
            return
        repo = LedgerRepository(session)
        holds = {h.hold_key: h for h in await repo.holds_by_keys(keys, lock=True)}
        for key in keys:
            hold = holds.get(key)
            if hold is not None and hold.status == HoldStatus.posted:
                raise Conflict(
                    "这份餐已经核销，不能再取消补贴", code="HoldAlreadyPosted", detail={"hold_key": key}
                )
        pending = [holds[key] for key in keys if key in holds and holds[key].status == HoldStatus.held]
        if not pending:
            return
        allocations = await self._held_allocations(repo, [h for h in pending if h.held_fen > 0])
        await self._release(repo, allocations, allocated=False)
        now = utcnow()
        released = [a.id for rows in allocations.values() for a in rows]
        await repo.resolve_allocations(released, status=HoldStatus.voided.value, resolved_at=now)
        await repo.resolve_holds(
            [(h.id, None) for h in pending], status=HoldStatus.voided.value, resolved_at=now
        )

    # ================================================================ traceability and proofs

    async def donation_trace(self, session: AsyncSession, *, donation_id: uuid.UUID) -> dict[str, Any]:
        """Where one donation went: meals paid (with the meta the booking side kept: date, slot, canteen, age
        band), money reserved for booked meals, refunded, and the unused remainder."""
        repo = LedgerRepository(session)
        lot = await repo.lot_for_donation(donation_id)
        if lot is None:
            return {
                "donation_id": str(donation_id),
                "recorded": False,
                "account": None,
                "paid_fen": 0,
                "paid_at": None,
                "spent_fen": 0,
                "held_fen": 0,
                "refunded_fen": 0,
                "unused_fen": 0,
                "meals": [],
                "reserved": [],
            }
        meals: list[dict[str, Any]] = []
        reserved: list[dict[str, Any]] = []
        for allocation, hold in await repo.allocations_of_donation(donation_id):
            item = {
                **allocation.meta,
                "amount_fen": allocation.amount_fen,
                "canteen_id": str(hold.canteen_id),
                "from_account": allocation.account_code,
            }
            if allocation.status == HoldStatus.posted:
                meals.append({**item, "entry_id": str(allocation.entry_id)})
            elif allocation.status == HoldStatus.held:
                reserved.append(item)
        return {
            "donation_id": str(donation_id),
            "recorded": True,
            "account": lot.account_code,
            "paid_fen": lot.amount_fen,
            "paid_at": lot.paid_at.isoformat(),
            "spent_fen": lot.allocated_fen,
            "held_fen": lot.held_fen,
            "refunded_fen": lot.refunded_fen,
            "unused_fen": lot.amount_fen - lot.held_fen - lot.allocated_fen - lot.refunded_fen,
            "meals": meals,
            "reserved": reserved,
        }

    async def entry_ids_for_donation(
        self, session: AsyncSession, *, donation_id: uuid.UUID
    ) -> list[uuid.UUID]:
        """The entries a donor's proof covers: the payment, its refunds and the meals it paid for."""
        repo = LedgerRepository(session)
        lot = await repo.lot_for_donation(donation_id)
        if lot is None:
            return []
        ids = [lot.entry_id, *await repo.refund_entry_ids(donation_id)]
        for allocation, _ in await repo.allocations_of_donation(donation_id):
            if (
                allocation.status == HoldStatus.posted
                and allocation.entry_id
                and allocation.entry_id not in ids
            ):
                ids.append(allocation.entry_id)
        return ids

    async def proof_for_entries(self, session: AsyncSession, entry_ids: list[uuid.UUID]) -> dict[str, Any]:
        """Entries with everything needed to recompute their day's Merkle root (``chain.verify_proof``)."""
        repo = LedgerRepository(session)
        if await repo.has_unsealed(entry_ids):  # written moments ago: chain them now
            await self.seal(session)
        entries = await repo.entries_by_ids(list(dict.fromkeys(entry_ids)))
        if not entries or len(entries) != len(set(entry_ids)):
            raise NotFound("找不到这些账目", code="LedgerEntryNotFound")
        postings = await repo.postings_of([e.id for e in entries])
        roots: dict[str, str] = {}
        published: dict[str, bool] = {}
        day_leaves: dict[date, list[str]] = {}
        items = []
        for entry in entries:
            if entry.day not in day_leaves:
                day_leaves[entry.day] = [h for _, _, h in await repo.day_hashes(entry.day)]
                digest = await repo.digest(entry.day)
                roots[entry.day.isoformat()] = (
                    digest.merkle_root if digest else chain.merkle_root(day_leaves[entry.day])
                )
                published[entry.day.isoformat()] = digest is not None
            leaves = day_leaves[entry.day]
            items.append(
                {
                    "entry": entry_document(entry, postings[entry.id]),
                    "prev_hash": entry.prev_hash,
                    "hash": entry.hash,
                    "path": chain.merkle_path(leaves, leaves.index(entry.hash or "")),
                    "root": chain.merkle_root(leaves),
                }
            )
        return {"algorithm": chain.ALGORITHM, "entries": items, "roots": roots, "published": published}

    # ================================================================ daily digests

    async def publish_digest(self, session: AsyncSession, *, day: date) -> LedgerDigest:
        """Compute and store the Merkle root of a finished day (idempotent)."""
        if not digest_ready(day):
            raise Conflict(
                "当天的账目还没有结束，次日公布", code="DigestNotReady", detail={"date": day.isoformat()}
            )
        repo = LedgerRepository(session)
        existing = await repo.digest(day)
        if existing is not None:
            return existing
        await self.seal(session)  # chain what has been committed, and keep the chain still while counting
        await repo.insert_digest(self._digest_values(day, await repo.day_hashes(day)))
        digest = await repo.digest(day)
        assert digest is not None
        from app.feed.service import feed_service  # the public feed: "<day> 账本已封存 … Merkle 根"

        await feed_service.record_ledger_root(
            session, day=day, merkle_root=digest.merkle_root, entry_count=digest.entry_count
        )
        return digest

    @staticmethod
    def _digest_values(day: date, rows: list[tuple[uuid.UUID, int, str]]) -> dict[str, Any]:
        return {
            "day": day,
            "entry_count": len(rows),
            "first_seq": rows[0][1] if rows else None,
            "last_seq": rows[-1][1] if rows else None,
            "merkle_root": chain.merkle_root([h for _, _, h in rows]),
            "chain_head": rows[-1][2] if rows else None,
        }

    async def digest_for_day(self, session: AsyncSession, *, day: date) -> dict[str, Any]:
        """The public digest of a day: stored once published; a past day with entries is published on first
        request; a past day without entries has the empty root; today and later are not ready."""
        repo = LedgerRepository(session)
        digest = await repo.digest(day)
        if digest is None:
            if not digest_ready(day):
                raise NotFound(
                    "当天的账目还没有结束，次日公布", code="DigestNotReady", detail={"date": day.isoformat()}
                )
            if await repo.has_unsealed():
                await self.seal(session)
            rows = await repo.day_hashes(day)
            if not rows:
                return {**self._digest_values(day, rows), "day": day.isoformat(), "computed_at": None}
            digest = await self.publish_digest(session, day=day)
        return {
            "day": digest.day.isoformat(),
            "entry_count": digest.entry_count,
            "first_seq": digest.first_seq,
            "last_seq": digest.last_seq,
            "merkle_root": digest.merkle_root,
            "chain_head": digest.chain_head,
            "computed_at": digest.computed_at.isoformat(),
        }

    async def publish_missing_digests(self, session: AsyncSession) -> list[date]:
        """Every finished day that has entries but no digest yet (normally just yesterday)."""
        repo = LedgerRepository(session)
        days = [day for day in await repo.days_without_digest(business_date()) if digest_ready(day)]
        for day in days:
            await self.publish_digest(session, day=day)
        return days

    # ================================================================ ledger-check

    async def check(self, session: AsyncSession, *, max_problems: int = 200) -> dict[str, Any]:
        """Verify the chain, the published roots and every invariant. Each problem names what is wrong and,
        for entries, which entry."""
        repo = LedgerRepository(session)
        await self.seal(session)  # everything committed gets chained, and the chain stays still meanwhile
        problems: list[dict[str, Any]] = []

        def problem(check: str, message: str, entry: JournalEntry | None = None, **extra: Any) -> None:
            if len(problems) < max_problems:
                item: dict[str, Any] = {"check": check, "message": message, **extra}
                if entry is not None:
                    item.update(entry_id=str(entry.id), seq=entry.seq, business_key=entry.business_key)
                problems.append(item)

        # 1. the chain: consecutive seq, prev_hash links, recomputed hashes, balanced postings
        prev_seq, prev_hash = 0, chain.GENESIS_HASH
        day_leaves: dict[date, list[str]] = defaultdict(list)
        checked = 0
        while True:
            batch = await repo.entries_after(prev_seq, 1000)
            if not batch:
                break
            postings = await repo.postings_of([e.id for e in batch])
            for entry in batch:
                checked += 1
                lines = postings[entry.id]
                seq, entry_prev, entry_hash = sealed(entry)
                if seq != prev_seq + 1:
                    problem("chain", f"序号不连续：期望 {prev_seq + 1}，实际 {seq}", entry)
                if entry_prev != prev_hash:
                    problem("chain", "prev_hash 与上一笔分录的 hash 不一致", entry)
                if chain.entry_hash(entry_prev, entry_document(entry, lines)) != entry_hash:
                    problem("hash", "分录内容与其 hash 不符（分录或其记账行被改动）", entry)
                if chain.content_hash(entry.kind, lines) != entry.content_hash:
                    problem("hash", "分录的内容指纹与记账行不符", entry)
                if len(lines) < 2 or sum(a for _, a in lines) != 0:
                    problem("balance", f"记账行合计不为零：{sum(a for _, a in lines)} 分", entry)
                if business_date(entry.created_at) != entry.day:
                    problem("day", "分录日期与记账时间不符", entry)
                day_leaves[entry.day].append(entry_hash)
                prev_seq, prev_hash = seq, entry_hash
        # an entry the sealer has not chained after all it was given (taken off its queue by hand, or its seal
        # deleted) is outside the chain, and so outside every check above
        for entry in await repo.entries_without_seal(max_problems):
            problem("chain", "分录没有封存进哈希链", entry)

        # 2. published daily roots
        digests = await repo.all_digests()
        for digest in digests:
            leaves = day_leaves.get(digest.day, [])
            if chain.merkle_root(leaves) != digest.merkle_root or len(leaves) != digest.entry_count:
                problem("digest", "公布的当日 Merkle 根与账目不符", day=digest.day.isoformat())

        # 3. accounts: cached balances re-derived; no pool or fund overdrawn
        sums = await repo.account_posting_sums()
        sealed_sums = await repo.account_posting_sums(sealed_only=True)
        accounts = await repo.all_accounts()
        held_by_account: dict[str, int] = defaultdict(int)
        held_by_lot: dict[uuid.UUID, int] = defaultdict(int)
        posted_by_lot: dict[uuid.UUID, int] = defaultdict(int)
        live_by_hold: dict[uuid.UUID, int] = defaultdict(int)
        statuses_by_hold: dict[uuid.UUID, set[str]] = defaultdict(set)
        for lot_id, hold_id, account_code, status, total in await repo.allocation_sums():
            statuses_by_hold[hold_id].add(status)
            if status == HoldStatus.held:
                held_by_account[account_code] += total
                held_by_lot[lot_id] += total
                live_by_hold[hold_id] += total
            elif status == HoldStatus.posted:
                posted_by_lot[lot_id] += total
                live_by_hold[hold_id] += total
        for acc in accounts:
            # pools and funds are kept by the posting transaction; the others by the sealer
            expected = (sums if acc.no_overdraft else sealed_sums).get(acc.code, 0)
            if acc.balance_fen != expected:
                problem(
                    "account",
                    f"账户余额缓存 {acc.balance_fen} 与记账合计 {expected} 不符",
                    account=acc.code,
                )
            if acc.held_fen != held_by_account.get(acc.code, 0):
                problem("account", "账户预留金额与预留明细不符", account=acc.code)
            if acc.no_overdraft and -sums.get(acc.code, 0) - held_by_account.get(acc.code, 0) < 0:
                problem("overspend", "资金池或基金被透支", account=acc.code)

        # 4. lots: per donation allocated + refunded (+ held) ≤ paid, and the lot agrees with its allocations
        refunded = await repo.refunded_by_donation()
        by_account_remaining: dict[str, int] = defaultdict(int)
        for lot in await repo.all_lots():
            did = str(lot.donation_id)
            if lot.held_fen + lot.allocated_fen + lot.refunded_fen > lot.amount_fen:
                problem("donation", "捐款的已用 + 已退 + 预留超过了捐款金额", donation_id=did)
            if lot.held_fen != held_by_lot.get(lot.id, 0) or lot.allocated_fen != posted_by_lot.get(
                lot.id, 0
            ):
                problem("donation", "捐款的预留/已用金额与分配明细不符", donation_id=did)
            if lot.refunded_fen != refunded.get(did, 0):
                problem("donation", "捐款的已退金额与退款分录不符", donation_id=did)
            by_account_remaining[lot.account_code] += lot.amount_fen - lot.allocated_fen - lot.refunded_fen
        for acc in accounts:
            if acc.kind == "pool" and -sums.get(acc.code, 0) != by_account_remaining.get(acc.code, 0):
                problem("pool", "资金池余额与其中各笔捐款的剩余合计不符", account=acc.code)

        # 5. holds: allocations add up to the held amount and agree with the hold's state
        for hold in await repo.all_holds():
            if live_by_hold.get(hold.id, 0) != (0 if hold.status == HoldStatus.voided else hold.held_fen):
                problem("hold", "预留的分配合计与预留金额不符", hold_key=hold.hold_key)
            statuses = statuses_by_hold.get(hold.id, set())
            if statuses - {hold.status}:
                problem("hold", "分配状态与预留状态不一致", hold_key=hold.hold_key)

        # 6. booking lines: the charity portion on each line is exactly what its hold still reserves or has
        # paid (nothing once the booking is cancelled or not collected), and a served meal's hold is posted
        for line_id, charity_fen, booking_status, line_hold, hold_status in await repo.booking_line_holds():
            live = live_by_hold.get(line_hold, 0) if line_hold is not None else 0
            expected = charity_fen if booking_status in ("confirmed", "served") else 0
            if live != expected:
                problem(
                    "booking_line",
                    f"订餐行的爱心补贴 {expected} 分与预留/已付分配 {live} 分不符",
                    hold_key=line_id,
                )
            elif charity_fen and booking_status == "served" and hold_status != HoldStatus.posted:
                problem("booking_line", "已取餐的订餐，其爱心补贴预留没有记账", hold_key=line_id)

        head = {"seq": prev_seq, "hash": prev_hash}
        return {
            "ok": not problems,
            "entries_checked": checked,
            "digests_checked": len(digests),
            "accounts_checked": len(accounts),
            "chain_head": head,
            "problems": problems,
        }

    async def balances(self, session: AsyncSession, codes: list[str]) -> dict[str, AccountBalance]:
        """Exact balances, whether or not the latest entries are sealed yet."""
        repo = LedgerRepository(session)
        accounts = await repo.accounts(codes)
        pending = await repo.unsealed_sums([a.code for a in accounts if not a.no_overdraft])
        return {
            a.code: AccountBalance(a.code, a.kind, a.balance_fen + pending.get(a.code, 0), a.held_fen)
            for a in accounts
        }


async def _seal_without_waiting(session: AsyncSession) -> int | None:
    return await ledger_service.seal(session, wait=False)


# Chains entries shortly after the transactions that posted them commit (see app/kit/background.py).
sealer = PostCommitBatch("ledger.seal", _seal_without_waiting)


def digest_ready(day: date) -> bool:
    """A day's root is published once the day is over plus ``DIGEST_GRACE``: an entry dated 23:59:59 whose
    transaction commits just after midnight is still in it."""
    return day < business_date(utcnow() - DIGEST_GRACE)


ledger_service = LedgerService()
