"""API fuzzing (bounded CI profile): schemathesis with a token for each role. ``make fuzz`` runs the long
profile (FUZZ_EXAMPLES=200 per operation and role)."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from app.db import Database, unit_of_work
from app.models.role_grant import Role
from tests.fixtures.factories import create_canteen, create_district, create_elder, grant, unique
from tests.security.fuzz import examples_from_env, run_fuzz


async def _tokens(base_url: str) -> dict[str, str | None]:
    openids = {r: unique(r[:3]) for r in ("elder", "family", "operator", "civil", "admin")}
    async with unit_of_work() as s:
        district = (await create_district(s)).code
        canteen = await create_canteen(s, district_code=district)
        await create_elder(s, district_code=district, user_openid=openids["elder"])
        await create_elder(s, district_code=district, family_openids=(openids["family"],))
        await grant(s, openids["operator"], Role.operator, canteen_id=canteen.id)
        await grant(s, openids["civil"], Role.civil_affairs, district=district)
        await grant(s, openids["admin"], Role.federation_admin)
    tokens: dict[str, str | None] = {"anonymous": None}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as c:
        for role, openid in openids.items():
            res = await c.post("/api/v1/auth/wechat/login", json={"code": f"sbx:{openid}"})
            assert res.status_code == 200, res.text
            tokens[role] = res.json()["access_token"]
    return tokens


@pytest.mark.skipif(os.environ.get("SKIP_FUZZ") == "1", reason="SKIP_FUZZ=1")
async def test_schemathesis_no_5xx_and_responses_match_schema(committed: Database, simulator: str) -> None:
    tokens = await _tokens(simulator)
    report = await asyncio.to_thread(run_fuzz, simulator, tokens, max_examples=examples_from_env(5))
    print(
        f"fuzz: {report.operations} operations, {report.calls} calls, statuses {sorted(report.statuses.items())}"
    )
    assert report.operations > 50
    assert report.calls > report.operations * len(tokens)
    assert not any(code >= 500 for code in report.statuses), report.statuses
    assert not report.failures, "\n".join(report.failures)
