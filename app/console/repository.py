from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditLog, Canteen, StaffAccount, StaffSession, User


class StaffRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_by_username(self, username: str, *, for_update: bool = False) -> StaffAccount | None:
        stmt = select(StaffAccount).where(StaffAccount.username == username)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get(self, staff_id: uuid.UUID) -> StaffAccount | None:
        return await self.session.get(StaffAccount, staff_id)

    async def get_user_by_openid(self, openid: str) -> User | None:
        return (await self.session.execute(select(User).where(User.openid == openid))).scalar_one_or_none()

    def add(self, staff: StaffAccount) -> None:
        self.session.add(staff)

    def add_session(self, row: StaffSession) -> None:
        self.session.add(row)

    async def get_session_by_token_hash(self, token_hash: str) -> tuple[StaffSession, StaffAccount] | None:
        stmt = (
            select(StaffSession, StaffAccount)
            .join(StaffAccount, StaffAccount.id == StaffSession.staff_id)
            .where(StaffSession.token_hash == token_hash)
        )
        row = (await self.session.execute(stmt)).first()
        return (row[0], row[1]) if row else None

    async def revoke_session(self, session_id: uuid.UUID, now: datetime) -> None:
        await self.session.execute(
            update(StaffSession)
            .where(StaffSession.id == session_id, StaffSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    async def revoke_all_sessions(self, staff_id: uuid.UUID, now: datetime) -> None:
        await self.session.execute(
            update(StaffSession)
            .where(StaffSession.staff_id == staff_id, StaffSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )


@dataclass(frozen=True)
class AuditFilters:
    actor: str | None = None
    action: str | None = None
    target_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    before_id: int | None = None  # keyset cursor: rows with a smaller id (newest first)


class AuditLogRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(self, filters: AuditFilters, limit: int) -> list[AuditLog]:
        stmt = select(AuditLog)
        if filters.actor:
            stmt = stmt.where(AuditLog.actor_label.ilike(f"%{_escape_like(filters.actor)}%", escape="\\"))
        if filters.action:
            stmt = stmt.where(AuditLog.action.ilike(f"{_escape_like(filters.action)}%", escape="\\"))
        if filters.target_type:
            stmt = stmt.where(AuditLog.target_type == filters.target_type)
        if filters.since is not None:
            stmt = stmt.where(AuditLog.created_at >= filters.since)
        if filters.until is not None:
            stmt = stmt.where(AuditLog.created_at < filters.until)
        if filters.before_id is not None:
            stmt = stmt.where(AuditLog.id < filters.before_id)
        stmt = stmt.order_by(AuditLog.id.desc()).limit(limit)
        return list((await self.session.execute(stmt)).scalars())

    async def target_types(self) -> list[str]:
        stmt = select(AuditLog.target_type).distinct().order_by(AuditLog.target_type)
        return list((await self.session.execute(stmt)).scalars())


def scoped_canteens(district_code: str | None) -> Select[tuple[Canteen]]:
    """Canteens a console user may see: all, or only one district's (civil_affairs)."""
    stmt = select(Canteen)
    if district_code is not None:
        stmt = stmt.where(Canteen.district_code == district_code)
    return stmt


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
