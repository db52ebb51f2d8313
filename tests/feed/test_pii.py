"""Nothing personal leaks into a public response: no openid, phone number, ID number, elder's name, private
message, or the name of a donor who chose to stay anonymous — on any public page or API."""

from __future__ import annotations

import re

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.repository import AuthRepository
from app.elders.service import PHONE_CONTEXT
from app.kit.crypto import encrypt_pii, pii_lookup_hash
from tests.feed.helpers import create_target, general_fund, pay, serve_meal
from tests.fixtures.client import login
from tests.fixtures.factories import create_canteen, create_district, create_elder, unique

_HEXISH = re.compile(r"[0-9a-fA-F-]{16,}")  # hashes and ids, where digits may line up by chance
_PHONE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
_ID = re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)")


async def _public_responses(client: httpx.AsyncClient, canteen_code: str, target_code: str) -> dict[str, str]:
    out: dict[str, str] = {}
    cursor, n = None, 0
    while True:
        res = await client.get("/api/v1/feed", params={"limit": 7, **({"cursor": cursor} if cursor else {})})
        assert res.status_code == 200
        out[f"/api/v1/feed#{n}"] = res.text
        cursor, n = res.json()["next_cursor"], n + 1
        if cursor is None:
            break
    for path in (
        "/api/v1/feed/stats",
        "/api/v1/feed?kind=donation_paid",
        "/api/v1/feed?kind=meals_funded",
        "/t",
        "/t/screen",
        f"/t/c/{canteen_code}",
        f"/q/{target_code}",
        f"/api/v1/donation-targets/{target_code}",
    ):
        res = await client.get(path)
        assert res.status_code == 200, (path, res.text)
        out[path] = res.text
    return out


async def test_no_personal_data_in_any_public_response(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    district = await create_district(session, name="德城区")
    canteen = await create_canteen(session, district.code, name="隐私测试食堂")
    target = await create_target(session, canteen_id=canteen.id, title="隐私测试助餐")
    general = await create_target(session, kind="fund", fund_id=(await general_fund(session)).id)
    elder, elder_id_number = await create_elder(
        session, district_code=district.code, name="欧阳秀兰", phone="13700001111"
    )

    secrets: list[str] = ["欧阳秀兰", elder_id_number, "13700001111"]
    repo = AuthRepository(session)
    donors = []
    for i, (anonymous, name, phone) in enumerate(
        [
            (True, "钱多多", "13911112222"),
            (True, None, "13522223333"),
            (False, "孙先生", "18633334444"),
            (False, None, "15044445555"),
        ]
    ):
        openid = unique("oPII")
        await login(client, openid)
        user = await repo.get_or_create_user(openid)
        user.phone_enc = encrypt_pii(phone, context=PHONE_CONTEXT)
        user.phone_hmac = pii_lookup_hash(phone, context=PHONE_CONTEXT)
        user.nickname = f"微信昵称{i}"
        secrets += [openid, phone, f"微信昵称{i}"]
        message = f"私信{i} 联系我 {phone} 身份证 37140219800101{i:03d}X"
        secrets += [message, f"37140219800101{i:03d}X"]
        if anonymous and name:
            secrets.append(name)
        donors.append(
            await pay(
                session,
                target if i % 2 else general,
                1000 + i,
                donor_user_id=user.id,
                anonymous=anonymous,
                display_name=name,
                message=message,
            )
        )
    await serve_meal(session, canteen.id, 300)
    await session.commit()

    responses = await _public_responses(client, canteen.code, target.code)
    assert "孙先生" in responses["/t"], "a donor who chose a name is credited"
    assert "爱心人士" in responses["/t"]
    for where, body in responses.items():
        for secret in secrets:
            assert secret not in body, f"{secret!r} leaked in {where}"
        scrubbed = _HEXISH.sub("", body)
        assert not _PHONE.search(scrubbed), f"phone-like number in {where}: {_PHONE.search(scrubbed)}"
        assert not _ID.search(scrubbed), f"ID-like number in {where}: {_ID.search(scrubbed)}"
        assert "openid" not in body.lower() and "donor_user_id" not in body
    _ = elder
