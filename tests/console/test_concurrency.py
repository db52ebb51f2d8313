from __future__ import annotations

import asyncio
import io
import sys

import httpx
import pytest
from sqlalchemy import select

from app.db import Database, unit_of_work
from app.models import AuditLog, StaffAccount
from tests.console.conftest import PASSWORD, console_login, login_form_token
from tests.fixtures.factories import create_staff_account, unique


async def test_concurrent_wrong_passwords_lock_the_account_exactly_once(
    committed_client: httpx.AsyncClient, committed: Database
) -> None:
    username = unique("race")
    async with unit_of_work() as s:
        await create_staff_account(s, username=username)
    token = await login_form_token(committed_client)

    async def attempt() -> int:
        res = await committed_client.post(
            "/admin/login", data={"username": username, "password": "wrong-password", "csrf_token": token}
        )
        return res.status_code

    statuses = await asyncio.gather(*(attempt() for _ in range(8)))
    assert statuses == [401] * 8
    async with unit_of_work() as s:
        staff = (await s.execute(select(StaffAccount).where(StaffAccount.username == username))).scalar_one()
        locks = (
            (
                await s.execute(
                    select(AuditLog).where(
                        AuditLog.action == "staff.lock", AuditLog.target_id == str(staff.id)
                    )
                )
            )
            .scalars()
            .all()
        )
    assert staff.locked_until is not None  # no failed attempt was lost to a race
    assert staff.failed_login_count == 0
    assert len(locks) == 1
    assert (await console_login(committed_client, username, PASSWORD)).status_code == 401


def test_create_staff_command_reads_the_password_from_stdin(
    committed: Database, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    username = unique("cli")
    monkeypatch.setattr(sys, "stdin", io.StringIO("cli-password-123\n"))
    args = ["create-staff", "--username", username, "--name", "张会计", "--role", "federation_admin"]
    assert main([*args, "--password-stdin"]) == 0
    assert username in capsys.readouterr().out

    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    other = ["create-staff", "--username", unique("cli"), "--role", "federation_admin", "--password-stdin"]
    assert main(other) == 1
    assert "密码至少需要" in capsys.readouterr().err

    async def check() -> StaffAccount | None:
        db = Database(committed.url)
        try:
            async with db.sessionmaker() as s:
                return (
                    await s.execute(select(StaffAccount).where(StaffAccount.username == username))
                ).scalar_one_or_none()
        finally:
            await db.dispose_current()

    staff = asyncio.run(check())
    assert staff is not None and staff.role == "federation_admin" and staff.display_name == "张会计"
    assert staff.password_hash.startswith("$argon2id$")
