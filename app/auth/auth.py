"""Typed authentication dependencies. Every endpoint declares who may call it with one of these aliases:

    async def endpoint(subject: AdminSubject) -> ...

Each alias rejects everyone else with 401 (no or bad token) or 403 (wrong role)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.repository import AuthRepository
from app.auth.subject import GrantInfo, Subject
from app.db import get_db_session
from app.exceptions import Forbidden, Unauthorized
from app.kit.crypto import token_hash
from app.kit.time import utcnow
from app.models.role_grant import Role

bearer_scheme = HTTPBearer(auto_error=False, description="POST /api/v1/auth/wechat/login 返回的 access_token")

# scope="function": the transaction commits when the endpoint returns and BEFORE the response is sent, so a
# failed commit becomes an error response instead of a 200 for something that was never saved.
SessionDep = Annotated[AsyncSession, Depends(get_db_session, scope="function")]


def subject_of(rows: Sequence[Row[Any]]) -> Subject | None:
    """The subject of a session look-up's rows (``AuthRepository.get_live_session``), None for none: the token
    is not live."""
    if not rows:
        return None
    first = rows[0]
    return Subject(
        user_id=first.user_id,
        openid=first.openid,
        session_id=first.session_id,
        session_expires_at=first.expires_at,
        grants=tuple(
            GrantInfo(
                id=r.grant_id, role=Role(r.role), canteen_id=r.canteen_id, district_code=r.district_code
            )
            for r in rows
            if r.grant_id is not None
        ),
    )


def invalid_token() -> Unauthorized:
    return Unauthorized("登录已失效，请重新登录", code="InvalidToken")


async def optional_subject(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Subject | None:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        return None
    return await authenticate(request, session, credentials.credentials)


async def authenticate(request: Request, session: AsyncSession, token: str) -> Subject:
    """The subject of a bearer ``token``, also kept on the request's state, or 401 (unknown, expired or
    revoked session)."""
    subject = subject_of(await AuthRepository(session).get_live_session(token_hash(token), utcnow()))
    if subject is None:
        raise invalid_token()
    request.state.subject = subject
    return subject


async def current_subject(subject: Annotated[Subject | None, Depends(optional_subject)]) -> Subject:
    if subject is None:
        raise Unauthorized("请先登录", code="NotAuthenticated")
    return subject


def require_roles(*roles: Role) -> object:
    names = "、".join(_ROLE_NAMES[r] for r in roles)

    async def dependency(subject: Annotated[Subject, Depends(current_subject)]) -> Subject:
        if not subject.has_role(*roles):
            raise Forbidden(f"此操作仅限{names}", code="RoleRequired", detail={"roles": list(roles)})
        return subject

    return Depends(dependency)


_ROLE_NAMES = {
    Role.elder: "长者本人",
    Role.family: "家属",
    Role.operator: "食堂工作人员",
    Role.federation_admin: "慈善总会管理员",
    Role.civil_affairs: "民政工作人员",
}

OptionalSubject = Annotated[Subject | None, Depends(optional_subject)]
CurrentSubject = Annotated[Subject, Depends(current_subject)]
AdminSubject = Annotated[Subject, require_roles(Role.federation_admin)]
OperatorSubject = Annotated[Subject, require_roles(Role.operator)]
CivilAffairsSubject = Annotated[Subject, require_roles(Role.civil_affairs)]
StaffSubject = Annotated[Subject, require_roles(Role.federation_admin, Role.civil_affairs)]
ElderSubject = Annotated[Subject, require_roles(Role.elder)]
FamilySubject = Annotated[Subject, require_roles(Role.family)]
ElderOrFamilySubject = Annotated[Subject, require_roles(Role.elder, Role.family)]
