from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    TextClause,
    and_,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.sql import execute_core, per_row
from app.models import AuthSession, RoleGrant, User

_LIVE_SESSION = (
    select(
        AuthSession.id.label("session_id"),
        AuthSession.expires_at,
        User.id.label("user_id"),
        User.openid,
        RoleGrant.id.label("grant_id"),
        RoleGrant.role,
        RoleGrant.canteen_id,
        RoleGrant.district_code,
    )
    .join(User, User.id == AuthSession.user_id)
    .outerjoin(RoleGrant, and_(RoleGrant.user_id == User.id, RoleGrant.revoked_at.is_(None)))
    .where(
        AuthSession.token_hash == bindparam("token_hash"),
        AuthSession.revoked_at.is_(None),
        AuthSession.expires_at > bindparam("now"),
    )
    .order_by(RoleGrant.created_at)
)


def live_sessions_of(given: Any, *columns: ColumnElement[Any] | TextClause) -> Select[Any]:
    """The session look-up for many requests in one statement: ``given`` their rows (``app.kit.sql.given_rows``)
    with a ``token_hash`` and an ``n`` (the request's place) column. Each request's rows are those
    ``get_live_session`` gives for its token, with its ``n`` beside them and, beside those, more ``columns``: other
    reads the requests make first, answered in the same round trip. They may refer to ``given``'s columns and
    to the session's user as ``users.id``. The time is the ``now`` parameter. Built once, as a module constant,
    like the look-up."""

    return per_row(_LIVE_SESSION, {"token_hash": given.c.token_hash}).add_columns(given.c.n, *columns)


class AuthRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def upsert_user_by_openid(self, openid: str, *, unionid: str | None, login_at: datetime) -> User:
        stmt = (
            insert(User)
            .values(id=uuid.uuid4(), openid=openid, unionid=unionid, last_login_at=login_at)
            .on_conflict_do_update(
                index_elements=[User.openid],
                set_={
                    "last_login_at": login_at,
                    "unionid": func.coalesce(insert(User).excluded.unionid, User.unionid),
                    "updated_at": func.now(),
                },
            )
            .returning(User)
        )
        result = await self.session.execute(stmt, execution_options={"populate_existing": True})
        return result.scalar_one()

    async def get_or_create_user(self, openid: str) -> User:
        stmt = (
            insert(User)
            .values(id=uuid.uuid4(), openid=openid)
            .on_conflict_do_nothing(index_elements=[User.openid])
        )
        await self.session.execute(stmt)
        return (await self.session.execute(select(User).where(User.openid == openid))).scalar_one()

    async def get_user(self, user_id: uuid.UUID) -> User | None:
        return await self.session.get(User, user_id)

    def add_session(self, auth_session: AuthSession) -> None:
        self.session.add(auth_session)

    async def get_live_session(self, token_hash: str, now: datetime) -> Sequence[Row[Any]]:
        """The live session for a token with its user's active grants (oldest first), one row per grant (one
        row with no grant columns if there are none; no rows if the token is not live). Every authenticated
        request starts here, so it is one prepared statement that reads columns, not ORM objects, and a plain
        read: it does not begin the request's transaction (``execute_core``)."""
        values = {"token_hash": token_hash, "now": now}
        return (await execute_core(self.session, _LIVE_SESSION, values, plain_read=True)).all()

    async def revoke_session(self, session_id: uuid.UUID, now: datetime) -> None:
        await self.session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    async def revoke_all_sessions(self, user_id: uuid.UUID, now: datetime) -> int:
        result = await self.session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def delete_expired_sessions(self, before: datetime) -> int:
        from sqlalchemy import delete, or_

        result = await self.session.execute(
            delete(AuthSession).where(or_(AuthSession.expires_at < before, AuthSession.revoked_at < before))
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def active_grants(self, user_id: uuid.UUID) -> Sequence[RoleGrant]:
        stmt = (
            select(RoleGrant)
            .where(RoleGrant.user_id == user_id, RoleGrant.revoked_at.is_(None))
            .order_by(RoleGrant.created_at)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def find_active_grant(
        self, user_id: uuid.UUID, role: str, canteen_id: uuid.UUID | None, district_code: str | None
    ) -> RoleGrant | None:
        stmt = select(RoleGrant).where(
            RoleGrant.user_id == user_id,
            RoleGrant.role == role,
            RoleGrant.revoked_at.is_(None),
            RoleGrant.canteen_id.is_(None) if canteen_id is None else RoleGrant.canteen_id == canteen_id,
            RoleGrant.district_code.is_(None)
            if district_code is None
            else RoleGrant.district_code == district_code,
        )
        return (await self.session.execute(stmt)).scalars().first()

    async def get_grant(self, grant_id: uuid.UUID) -> RoleGrant | None:
        return await self.session.get(RoleGrant, grant_id)

    def add_grant(self, grant: RoleGrant) -> None:
        self.session.add(grant)
