from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, literal, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.subject import Subject
from app.kit.sql import load_entities
from app.models import Elder, ElderInvite, FamilyBinding


def acting_for(user_id: Any) -> ColumnElement[bool]:
    """The elder is the user themself, or bound to the user as family (a live binding): who may book for and
    manage an elder as elder or family. ``user_id``: a value, a parameter or a column."""
    bound = select(FamilyBinding.elder_id).where(
        FamilyBinding.user_id == user_id, FamilyBinding.revoked_at.is_(None)
    )
    return or_(Elder.user_id == user_id, Elder.id.in_(bound))


_ACTABLE = select(Elder).where(Elder.id == bindparam("elder_id"), acting_for(bindparam("user_id")))
_ACTABLE_FOR_UPDATE = _ACTABLE.with_for_update()


class ElderRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def readable_statement(self, subject: Subject) -> Select[tuple[Elder]]:
        """Elders the subject may see: themselves, elders bound to them as family, elders of the districts
        they govern (civil affairs), everyone for federation admins."""
        if subject.is_admin:
            return select(Elder).where(true())
        clauses = [acting_for(subject.user_id)]
        if subject.civil_affairs_districts:
            clauses.append(Elder.hukou_district_code.in_(subject.civil_affairs_districts))
        return select(Elder).where(or_(*clauses))

    def actable_statement(self, subject: Subject) -> Select[tuple[Elder]]:
        """Elders the subject may book for and manage as elder or family (not staff)."""
        return select(Elder).where(acting_for(subject.user_id))

    async def get_readable(self, subject: Subject, elder_id: uuid.UUID) -> Elder | None:
        stmt = self.readable_statement(subject).where(Elder.id == elder_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_actable(
        self, subject: Subject, elder_id: uuid.UUID, *, for_update: bool = False
    ) -> Elder | None:
        """``actable_statement`` for one elder, through a statement built once (every booking runs it)."""
        stmt = _ACTABLE_FOR_UPDATE if for_update else _ACTABLE
        params = {"elder_id": elder_id, "user_id": subject.user_id}
        rows = await load_entities(self.session, stmt, params)  # by primary key: one row or none
        return rows[0][0] if rows else None

    async def list_readable(
        self, subject: Subject, *, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> Sequence[Elder]:
        stmt = self.readable_statement(subject)
        if after is not None:
            from sqlalchemy import tuple_

            stmt = stmt.where(
                tuple_(Elder.created_at, Elder.id) > tuple_(literal(after[0]), literal(after[1]))
            )
        stmt = stmt.order_by(Elder.created_at, Elder.id).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()

    async def get(self, elder_id: uuid.UUID, *, for_update: bool = False) -> Elder | None:
        stmt = select(Elder).where(Elder.id == elder_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_by_id_hmac(self, id_hmac: str, *, for_update: bool = False) -> Elder | None:
        stmt = select(Elder).where(Elder.id_number_hmac == id_hmac)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_by_user(self, user_id: uuid.UUID) -> Elder | None:
        return (
            await self.session.execute(select(Elder).where(Elder.user_id == user_id))
        ).scalar_one_or_none()

    async def is_family(self, user_id: uuid.UUID, elder_id: uuid.UUID) -> bool:
        stmt = select(FamilyBinding.id).where(
            FamilyBinding.user_id == user_id,
            FamilyBinding.elder_id == elder_id,
            FamilyBinding.revoked_at.is_(None),
        )
        return (await self.session.execute(stmt)).first() is not None

    async def family_user_ids(self, elder_id: uuid.UUID) -> list[uuid.UUID]:
        stmt = select(FamilyBinding.user_id).where(
            FamilyBinding.elder_id == elder_id, FamilyBinding.revoked_at.is_(None)
        )
        return list((await self.session.execute(stmt)).scalars().all())

    async def get_invite_for_update(self, code: str) -> ElderInvite | None:
        stmt = select(ElderInvite).where(ElderInvite.code == code).with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    def add(self, obj: object) -> None:
        self.session.add(obj)
