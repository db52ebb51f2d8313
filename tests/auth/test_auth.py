"""Each typed role dependency admits its role and rejects every other caller."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import auth as deps
from app.db import get_db_session, unit_of_work
from app.errors import install_error_handlers
from app.models.role_grant import Role
from tests.fixtures.client import login
from tests.fixtures.factories import create_canteen, create_district, grant, unique

ALIASES = {
    "admin": (deps.AdminSubject, {Role.federation_admin}),
    "operator": (deps.OperatorSubject, {Role.operator}),
    "civil": (deps.CivilAffairsSubject, {Role.civil_affairs}),
    "staff": (deps.StaffSubject, {Role.federation_admin, Role.civil_affairs}),
    "elder": (deps.ElderSubject, {Role.elder}),
    "family": (deps.FamilySubject, {Role.family}),
    "elder_or_family": (deps.ElderOrFamilySubject, {Role.elder, Role.family}),
    "current": (deps.CurrentSubject, None),
}


@pytest.fixture
def role_app(app: FastAPI, session_maker: async_sessionmaker[AsyncSession]) -> FastAPI:
    probe = FastAPI()
    install_error_handlers(probe)
    for name, (alias, _) in ALIASES.items():

        async def endpoint(subject):  # type: ignore[no-untyped-def]
            return {"user": str(subject.user_id)}

        endpoint.__annotations__ = {"subject": alias}

        probe.add_api_route(f"/{name}", endpoint, methods=["GET"])

    async def override() -> AsyncIterator[AsyncSession]:
        async with unit_of_work(session_maker) as s:
            yield s

    probe.dependency_overrides[get_db_session] = override
    return probe


async def test_role_dependencies_matrix(
    role_app: FastAPI, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    district = await create_district(session)
    canteen = await create_canteen(session, district.code)
    users: dict[Role | None, str] = {None: unique("plain")}
    for role in Role:
        users[role] = unique(role.value[:5])
        await grant(
            session,
            users[role],
            role,
            canteen_id=canteen.id if role == Role.operator else None,
            district=district.code if role == Role.civil_affairs else None,
        )
    headers = {role: await login(client, openid) for role, openid in users.items()}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=role_app), base_url="http://t") as c:
        for name, (_, allowed) in ALIASES.items():
            assert (await c.get(f"/{name}")).status_code == 401, name
            for role, h in headers.items():
                res = await c.get(f"/{name}", headers=h)
                expected = 200 if allowed is None or role in allowed else 403
                assert res.status_code == expected, (name, role, res.text)
                if expected == 403:
                    assert res.json()["error"] == "RoleRequired"
