"""Typed authentication dependencies. Every endpoint declares who may call it with one of these aliases:

    async def endpoint(subject: AdminSubject) -> ...

Each alias rejects everyone else with 401 (no or bad token) or 403 (wrong role)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Row, Select
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


async def _load_subject(
    session: AsyncSession, token: str, statement: Select[Any] | None, params: dict[str, Any] | None
) -> tuple[Subject, Row[Any]] | None:
    rows = await AuthRepository(session).get_live_session(
        token_hash(token), utcnow(), statement=statement, params=params
    )
    if not rows:
        return None
    first = rows[0]
    subject = Subject(
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
    return subject, first


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
    subject, _ = await authenticate_with(request, session, token)
    return subject


async def authenticate_with(
    request: Request,
    session: AsyncSession,
    token: str,
    statement: Select[Any] | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[Subject, Row[Any]]:
    """``authenticate``, and the look-up's first row: with ``statement`` (``live_session_with``) and its
    ``params``, the row carries a read of the caller's, made in the same round trip once the token is known
    to be live (its answer is only used after the 401, as if it had been read after it)."""
    found = await _load_subject(session, token, statement, params)
    if found is None:
        raise Unauthorized("登录已失效，请重新登录", code="InvalidToken")
    request.state.subject = found[0]
    return found


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
