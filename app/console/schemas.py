from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from app.models.staff_account import StaffRole

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@+-]{2,47}$")
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256

ROLE_LABELS = {StaffRole.federation_admin: "慈善总会管理员", StaffRole.civil_affairs: "民政工作人员"}


@dataclass(frozen=True)
class StaffPrincipal:
    """Who is using the console in this request."""

    staff_id: uuid.UUID
    username: str
    display_name: str
    role: StaffRole
    district_code: str | None
    user_id: uuid.UUID | None
    session_id: uuid.UUID
    csrf_token: str

    @property
    def label(self) -> str:
        """The actor written to the audit log."""
        return f"staff:{self.username}"

    @property
    def is_admin(self) -> bool:
        return self.role == StaffRole.federation_admin

    @property
    def district_scope(self) -> str | None:
        """The only district this person may see, or None for everything (federation admins)."""
        return None if self.is_admin else self.district_code

    @property
    def role_label(self) -> str:
        return ROLE_LABELS[self.role]


@dataclass(frozen=True)
class StaffInput:
    username: str
    display_name: str
    role: StaffRole
    district_code: str | None = None
    openid: str | None = None
    is_active: bool = True


def normalize_username(value: str) -> str:
    return value.strip().lower()
