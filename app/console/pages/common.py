"""What the console's pages share: the signed-in staff member as the services' ``Subject``, the message and
error pages, and how money and times are shown."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response

from app.auth.subject import GrantInfo, Subject
from app.console.auth import principal_of
from app.console.schemas import StaffPrincipal
from app.console.templating import render
from app.exceptions import SangyuError
from app.kit.money import fen_to_yuan_text
from app.kit.time import SHANGHAI, utcnow
from app.models.role_grant import Role
from app.models.staff_account import StaffRole


@dataclass(frozen=True)
class ConsoleSubject(Subject):
    """A console staff member as the services' ``Subject``: the grant matches the staff role (a civil-affairs
    account governs its one district), and the audit label is the staff label (``staff:<username>``)."""

    staff_label: str = ""

    @property
    def label(self) -> str:
        return self.staff_label


def console_subject(principal: StaffPrincipal, *, reader: bool = False) -> Subject:
    """``user_id`` is the staff member's linked WeChat user, which may be absent: services store it in nullable
    ``*_by_id`` columns. For *reading* (``reader=True``) an absent user becomes a fresh id that matches no row,
    so queries like "elders bound to me" can never match rows whose user column is NULL."""
    user_id = principal.user_id if principal.user_id is not None or not reader else uuid.uuid4()
    if principal.role == StaffRole.federation_admin:
        grant = GrantInfo(id=principal.staff_id, role=Role.federation_admin)
    else:
        grant = GrantInfo(
            id=principal.staff_id, role=Role.civil_affairs, district_code=principal.district_code
        )
    return ConsoleSubject(
        user_id=cast(uuid.UUID, user_id),
        openid=f"staff:{principal.username}",
        session_id=principal.session_id,
        session_expires_at=utcnow() + timedelta(hours=1),
        grants=(grant,),
        staff_label=principal.label,
    )


def subject_of(request: Request, *, reader: bool = False) -> Subject:
    principal = principal_of(request)
    assert principal is not None  # the page guard ran
    return console_subject(principal, reader=reader)


def message(request: Request, title: str, text: str, status: int) -> Response:
    return render(request, "message.html", {"title": title, "message": text}, status)


def error_page(request: Request, exc: SangyuError) -> Response:
    status = exc.status_code if 400 <= exc.status_code < 500 else 409
    return message(request, "没有完成", exc.message, status)


def yuan(fen: int | None) -> str:
    return "" if fen is None else "¥" + fen_to_yuan_text(fen)


def local_time(value: Any) -> str:
    return value.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") if value else ""
