from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.role_grant import Role
from tests.fixtures.client import login
from tests.fixtures.factories import create_district, grant, unique


async def test_admin_creates_and_patches_canteen_and_nearby_search(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    district = (await create_district(session)).code
    admin = unique("ad")
    await grant(session, admin, Role.federation_admin)
    h = await login(client, admin)
    near = {
        "code": unique("N")[:10],
        "name": "近的食堂",
        "type": "urban_community",
        "district_code": district,
        "lat": 37.4536,
        "lng": 116.3075,
        "slots": [
            {
                "slot": "lunch",
                "serve_start": "11:00",
                "serve_end": "13:00",
                "cutoff_time": "16:00",
                "default_capacity": 80,
            }
        ],
    }
    far = near | {"code": unique("F")[:10], "name": "远的食堂", "lat": 37.50, "lng": 116.40, "slots": []}
    r1 = await client.post("/api/v1/admin/canteens", json=near, headers=h)
    assert r1.status_code == 201, r1.text
    assert (await client.post("/api/v1/admin/canteens", json=far, headers=h)).status_code == 201
    dup = await client.post("/api/v1/admin/canteens", json=near, headers=h)
    assert dup.status_code == 409
    bad_slot = near | {
        "code": unique("B")[:10],
        "slots": [{"slot": "lunch", "serve_start": "13:00", "serve_end": "11:00", "cutoff_time": "16:00"}],
    }
    assert (await client.post("/api/v1/admin/canteens", json=bad_slot, headers=h)).status_code == 422

    found = await client.get(
        "/api/v1/canteens", params={"lat": 37.4537, "lng": 116.3076, "district": district}
    )
    names = [c["name"] for c in found.json()["items"]]
    assert names == ["近的食堂", "远的食堂"]
    assert found.json()["items"][0]["distance_m"] < 50 < found.json()["items"][1]["distance_m"]
    radius = await client.get(
        "/api/v1/canteens", params={"lat": 37.4537, "lng": 116.3076, "radius_m": 1000, "district": district}
    )
    assert [c["name"] for c in radius.json()["items"]] == ["近的食堂"]
    assert (await client.get("/api/v1/canteens", params={"lat": 37.4})).status_code == 400

    patched = await client.patch(
        f"/api/v1/admin/canteens/{r1.json()['id']}",
        json={
            "delivery_enabled": True,
            "delivery_fee_fen": 300,
            "slots": [
                {
                    "slot": "dinner",
                    "serve_start": "17:00",
                    "serve_end": "19:00",
                    "cutoff_days_before": 0,
                    "cutoff_time": "14:00",
                }
            ],
        },
        headers=h,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["delivery_fee_fen"] == 300 and [s["slot"] for s in patched.json()["slots"]] == [
        "lunch",
        "dinner",
    ]
    nobody = await client.patch(
        f"/api/v1/admin/canteens/{r1.json()['id']}",
        json={"name": "x"},
        headers=await login(client, unique("u")),
    )
    assert nobody.status_code == 403
