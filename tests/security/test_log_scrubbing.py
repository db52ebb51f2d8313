"""No ID numbers, phones, tokens or keys in the logs, at any level: real requests carrying PII go through the
app with the root logger (and SQLAlchemy's engine logger) at DEBUG, plus direct log calls at every level from
structlog and stdlib loggers, exceptions included. Everything written to stdout is then searched."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import date

import httpx
import pytest
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.elders.idcard import make_id_number
from app.logging import configure_logging
from app.models.role_grant import Role
from tests.fixtures.client import login
from tests.fixtures.factories import create_district, grant

LEVELS = ("debug", "info", "warning", "error", "critical")


@pytest.fixture
def debug_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """The app's own logging setup at DEBUG; every line it writes to stdout is captured."""
    configure_logging("DEBUG")
    logging.getLogger("sqlalchemy.engine").setLevel(logging.DEBUG)
    yield capsys
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    configure_logging(get_settings().LOG_LEVEL)


async def test_no_pii_or_secrets_in_logs_at_any_level(
    client: httpx.AsyncClient, session: AsyncSession, debug_logs: pytest.CaptureFixture[str]
) -> None:
    settings = get_settings()
    district = (await create_district(session)).code
    staff = "log-staff-" + uuid.uuid4().hex[:8]
    await grant(session, staff, Role.civil_affairs, district=district)
    headers = await login(client, staff)
    token = headers["Authorization"].split()[1]
    id_number = make_id_number("371402", date(1941, 2, 3), 517)
    phone = "13912345678"
    res = await client.post(
        "/api/v1/elders",
        json={
            "registrant": "staff",
            "name": "赵淑珍",
            "id_number": id_number,
            "phone": phone,
            "hukou_district_code": district,
            "address": "德城区日志路7号",
            "emergency_contact_phone": "13787654321",
            "consent": True,
        },
        headers=headers,
    )
    assert res.status_code == 201, res.text
    # bad input that echoes the PII back into validation errors
    bad = await client.post(
        "/api/v1/elders",
        json={
            "registrant": "staff",
            "name": "x",
            "id_number": id_number[:-1] + "0",
            "hukou_district_code": "1",
        },
        headers=headers,
    )
    assert bad.status_code in (400, 422)
    await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}x"})  # a bad token: 401

    # direct calls at every level, structlog and stdlib, with secrets as values, keys and inside text
    slog = structlog.get_logger("tests.security")
    plain = logging.getLogger("tests.security.stdlib")
    for level in LEVELS:
        getattr(slog, level)(
            "pii_probe",
            id_number=id_number,
            note=f"长者 {id_number} 电话 {phone}",
            authorization=f"Bearer {token}",
            token=token,
            password="hunter2-very-secret",
            nested={"secret": settings.SECRET_KEY, "list": [phone, f"Bearer {token}"]},
        )
        getattr(plain, level)("stdlib probe %s %s Bearer %s", id_number, phone, token)
    try:
        raise ValueError(f"failed for {id_number} / {phone}")
    except ValueError:
        slog.exception("probe_exception")
        plain.exception("stdlib exception for %s", phone)

    out = debug_logs.readouterr().out
    assert "pii_probe" in out and "stdlib probe" in out and "probe_exception" in out
    levels = {json.loads(line).get("level") for line in out.splitlines() if line.startswith("{")}
    assert "debug" in levels  # DEBUG really was on
    for secret in (id_number, phone, "13787654321", token, "hunter2-very-secret", settings.SECRET_KEY):
        assert secret not in out, f"{secret[:4]}… leaked into the logs"
    assert id_number[:6] + "********" + id_number[-4:] in out  # masked, still useful for support
