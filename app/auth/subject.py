"""Who is calling: the user, their live session and their active role grants."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from app.models.role_grant import Role


@dataclass(frozen=True)
class GrantInfo:
    id: uuid.UUID
    role: Role
    canteen_id: uuid.UUID | None = None
    district_code: str | None = None


@dataclass(frozen=True)
class Subject:
    user_id: uuid.UUID
    openid: str
    session_id: uuid.UUID
    session_expires_at: datetime
    grants: tuple[GrantInfo, ...] = field(default_factory=tuple)

    @property
    def roles(self) -> list[Role]:
        seen: list[Role] = []
        for g in self.grants:
            if g.role not in seen:
                seen.append(g.role)
        return seen

    def has_role(self, *roles: Role) -> bool:
        return any(g.role in roles for g in self.grants)

    @property
    def is_admin(self) -> bool:
        return self.has_role(Role.federation_admin)

    @property
    def operator_canteen_ids(self) -> frozenset[uuid.UUID]:
        return frozenset(g.canteen_id for g in self.grants if g.role == Role.operator and g.canteen_id)

    @property
    def civil_affairs_districts(self) -> frozenset[str]:
        return frozenset(
            g.district_code for g in self.grants if g.role == Role.civil_affairs and g.district_code
        )

    def operates(self, canteen_id: uuid.UUID) -> bool:
        return canteen_id in self.operator_canteen_ids

    def governs(self, district_code: str) -> bool:
        return district_code in self.civil_affairs_districts

    @property
    def label(self) -> str:
        return f"user:{self.user_id}"
