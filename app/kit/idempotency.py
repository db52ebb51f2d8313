"""``Idempotency-Key`` handling for writes that must happen once (bookings, donations).

    key, digest = idempotency.require_key(header), idempotency.body_hash(payload)
    claim = await idempotency.claim(
        session, scope="booking", owner=str(subject.user_id), key=key, digest=digest, resource_id=new_id
    )
    if claim.existing_id:              # a replay of a committed request: return what it made
        return await load(claim.existing_id)
    ...create the resource with id new_id...

Concurrent requests with the same key serialize on the unique index: the loser waits for the winner's
transaction, then sees its row. Same key with a different body → 409. If the first request rolled back,
its claim is gone with it and the key can be used again.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.exceptions import BadRequest, Conflict
from app.kit.sql import execute_core, insert_or_skip
from app.models import IdempotencyKey

_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
_CLAIM = insert_or_skip(IdempotencyKey).returning(IdempotencyKey.id)  # built once; its one unique key


@dataclass
class Claim:
    id: uuid.UUID
    existing_id: uuid.UUID | None


def require_key(key: str | None) -> str:
    if not key:
        raise BadRequest("缺少 Idempotency-Key 请求头，无法防止重复提交", code="IdempotencyKeyRequired")
    if not _KEY.match(key):
        raise BadRequest(
            "Idempotency-Key 格式不对（8–128 位字母、数字或 ._:-）", code="IdempotencyKeyInvalid"
        )
    return key


def body_hash(body: BaseModel | dict[str, Any]) -> str:
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


async def claim(
    session: AsyncSession,
    *,
    scope: str,
    owner: str,
    key: str,
    digest: str,
    resource_id: uuid.UUID,
) -> Claim:
    """Take ``key`` (checked by ``require_key``) for the request whose body hashes to ``digest``
    (``body_hash``). ``resource_id``: the id the caller will give what it makes, chosen up front; the claim
    and the resource commit or roll back together."""
    new_id = uuid.uuid4()
    inserted = await execute_core(
        session,
        _CLAIM,
        {
            "id": new_id,
            "scope": scope,
            "owner": owner,
            "key": key,
            "request_hash": digest,
            "resource_id": resource_id,
        },
    )
    if inserted.scalar_one_or_none() is not None:
        return Claim(id=new_id, existing_id=None)
    return await existing(session, scope=scope, owner=owner, key=key, digest=digest)


async def existing(session: AsyncSession, *, scope: str, owner: str, key: str, digest: str) -> Claim:
    """The claim a request whose key is already taken runs into: the same request's (a replay: what it made),
    or a 409 when the key was used for a different body or its first request has not finished."""
    found = await find(session, scope=scope, owner=owner, key=key, digest=digest)
    assert found is not None, "existing() is for a key that is taken"
    return found


async def find(session: AsyncSession, *, scope: str, owner: str, key: str, digest: str) -> Claim | None:
    """``existing`` for a key that may not have been used yet (None then): a read, for a request that must
    know whether it is a replay before it does anything slow outside the database."""
    row = (
        await session.execute(
            select(IdempotencyKey).where(
                IdempotencyKey.scope == scope, IdempotencyKey.owner == owner, IdempotencyKey.key == key
            )
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    if row.request_hash != digest:
        raise Conflict(
            "这个 Idempotency-Key 已用于另一笔不同的请求，请换一个新的再提交", code="IdempotencyKeyReused"
        )
    if row.resource_id is None:
        raise Conflict("相同的请求正在处理中，请稍后刷新查看", code="RequestInProgress")
    return Claim(id=row.id, existing_id=row.resource_id)
