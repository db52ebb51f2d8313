from __future__ import annotations

import uuid

import httpx
import pytest

from app.exceptions import BadRequest
from app.kit.pagination import decode_cursor_as, encode_cursor
from tests.fixtures.client import login


def test_cursor_round_trip_and_refusals() -> None:
    position = decode_cursor_as(
        encode_cursor({"n": 3, "id": "a"}), lambda raw: (int(raw["n"]), str(raw["id"]))
    )
    assert position == (3, "a")
    assert decode_cursor_as(None, lambda raw: raw) is None
    for bad in ("%%%", encode_cursor({"x": 1}), encode_cursor({"n": "three", "id": "a"})):
        with pytest.raises(BadRequest) as caught:
            decode_cursor_as(bad, lambda raw: (int(raw["n"]), str(raw["id"])))
        assert caught.value.error_code == "InvalidCursor"


@pytest.mark.parametrize(
    "cursor",
    ["not-base64!", encode_cursor({"t": "yesterday", "id": str(uuid.uuid4())}), encode_cursor({"t": 5})],
)
async def test_tampered_cursors_are_a_clear_400(client: httpx.AsyncClient, cursor: str) -> None:
    headers = await login(client, f"cur{uuid.uuid4().hex[:10]}")
    res = await client.get("/api/v1/me/donations", params={"cursor": cursor}, headers=headers)
    assert res.status_code == 400, res.text
    assert res.json()["error"] == "InvalidCursor" and "cursor" in res.json()["message"]
