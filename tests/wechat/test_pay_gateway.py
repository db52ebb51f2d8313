"""The adapter and the unmodified wechatpayv3 SDK against the simulator over real HTTP."""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.config import get_settings
from app.exceptions import WeChatUnavailable
from app.kit.money import yuan_text_to_fen
from app.kit.time import business_date, utcnow
from app.sandbox.wechatpay import keys
from app.sandbox.wechatpay_keys import generate
from app.wechat.pay import (
    WeChatPayError,
    WeChatPayGateway,
    load_private_key,
    load_public_key,
    merchant_config,
    pay_sign_message,
    request_sign_message,
    rsa_sign,
    rsa_verify,
)


def _no() -> str:
    return "T" + uuid.uuid4().hex[:24].upper()


@pytest.fixture
def gateway(simulator: str) -> WeChatPayGateway:
    return WeChatPayGateway(merchant_config())


async def _order(gateway: WeChatPayGateway, no: str, total: int = 300, openid: str = "o-payer") -> str:
    return await gateway.create_jsapi_order(
        out_trade_no=no,
        description="我为老人助一餐-测试",
        amount_fen=total,
        payer_openid=openid,
        time_expire=(utcnow() + timedelta(minutes=30)).replace(microsecond=0),
    )


async def test_order_reentry_query_and_pay_sign(gateway: WeChatPayGateway, simulator: str) -> None:
    no = _no()
    expire = (utcnow() + timedelta(minutes=30)).replace(microsecond=0)
    args = dict(out_trade_no=no, description="助一餐", amount_fen=300, payer_openid="o1", time_expire=expire)
    first = await gateway.create_jsapi_order(**args)  # type: ignore[arg-type]
    second = await gateway.create_jsapi_order(**args)  # type: ignore[arg-type]
    assert first.startswith("wx") and second.startswith("wx") and first != second
    with pytest.raises(WeChatPayError) as exc:
        await gateway.create_jsapi_order(**{**args, "amount_fen": 301})  # type: ignore[arg-type]
    assert exc.value.code == "INVALID_REQUEST" and "订单号重复" in exc.value.message
    order = await gateway.query_order(no)
    assert order is not None and order["trade_state"] == "NOTPAY" and order["amount"]["total"] == 300
    assert await gateway.query_order(_no()) is None

    params = gateway.pay_params(second)
    assert params["signType"] == "RSA" and params["package"] == f"prepay_id={second}"
    message = pay_sign_message(params["appId"], params["timeStamp"], params["nonceStr"], params["package"])
    assert rsa_verify(load_public_key(keys().merchant_public_pem), message, params["paySign"])

    async with httpx.AsyncClient(base_url=simulator) as sim:
        paid = (await sim.post(f"/sandbox/wechatpay/pay/{no}", params={"drop": "true"})).json()
    assert (await gateway.query_order(no))["trade_state"] == "SUCCESS"  # type: ignore[index]
    with pytest.raises(WeChatPayError) as exc:
        await gateway.create_jsapi_order(**args)  # type: ignore[arg-type]
    assert exc.value.code == "ORDERPAID"
    with pytest.raises(WeChatPayError) as exc:
        await gateway.close_order(no)
    assert exc.value.code == "ORDERPAID"
    assert paid["transaction_id"].startswith("4200") and len(paid["transaction_id"]) == 28


async def test_close_then_reorder_is_refused(gateway: WeChatPayGateway) -> None:
    no = _no()
    await _order(gateway, no)
    await gateway.close_order(no)
    assert (await gateway.query_order(no))["trade_state"] == "CLOSED"  # type: ignore[index]
    with pytest.raises(WeChatPayError) as exc:
        await _order(gateway, no)
    assert exc.value.code == "ORDER_CLOSED"


async def test_business_validation(gateway: WeChatPayGateway) -> None:
    for amount in (1.5, 0, "300", True):
        status, text = await gateway._call(
            "pay", "pay", description="x", out_trade_no=_no(), amount={"total": amount},
            payer={"openid": "o"}, notify_url=gateway.config.notify_url,
        )  # fmt: skip
        assert status == 400 and "PARAM_ERROR" in text, (amount, text)
    status, text = await gateway._call(
        "pay", "pay", description="x", out_trade_no="bad no!", amount={"total": 1}, payer={"openid": "o"}
    )
    assert status == 400
    status, text = await gateway._call(
        "pay", "pay", description="x", out_trade_no=_no(), amount={"total": 1}, payer={"openid": "o"},
        notify_url="http://example.com/notify",
    )  # fmt: skip
    assert status == 400 and "https" in text


async def test_wrong_merchant_key_is_401_sign_error(gateway: WeChatPayGateway) -> None:
    bad = WeChatPayGateway(replace(gateway.config, private_key_pem=generate().merchant_private_pem))
    status, text = await bad._call("query", "query", out_trade_no=_no())
    assert status == 401 and "SIGN_ERROR" in text


async def test_wrong_platform_key_makes_the_sdk_refuse_the_response(gateway: WeChatPayGateway) -> None:
    bad = WeChatPayGateway(replace(gateway.config, public_key_pem=generate().platform_public_pem))
    with pytest.raises(WeChatUnavailable):
        await _order(bad, _no())


async def test_stale_request_timestamp_is_rejected(simulator: str) -> None:
    settings = get_settings()
    k = keys()
    path = f"/v3/pay/transactions/out-trade-no/{_no()}?mchid={settings.WECHATPAY_MCHID}"
    ts, nonce = str(int(time.time()) - 301), "N" * 32
    sig = rsa_sign(load_private_key(k.merchant_private_pem), request_sign_message("GET", path, ts, nonce, ""))
    auth = (
        f'WECHATPAY2-SHA256-RSA2048 mchid="{settings.WECHATPAY_MCHID}",nonce_str="{nonce}",'
        f'signature="{sig}",timestamp="{ts}",serial_no="{k.merchant_serial_no}"'
    )
    async with httpx.AsyncClient(base_url=simulator) as sim:
        res = await sim.get("/sandbox/wechatpay" + path, headers={"Authorization": auth})
        assert res.status_code == 401 and res.json()["code"] == "SIGN_ERROR"
        res = await sim.get("/sandbox/wechatpay" + path)
        assert res.status_code == 401


async def test_refunds_limits_and_idempotency(gateway: WeChatPayGateway, simulator: str) -> None:
    no = _no()
    await _order(gateway, no, total=1000)
    with pytest.raises(WeChatPayError) as exc:  # unpaid
        await gateway.refund(out_trade_no=no, out_refund_no=_no(), refund_fen=100, total_fen=1000, reason="x")
    assert exc.value.code == "INVALID_REQUEST"
    async with httpx.AsyncClient(base_url=simulator) as sim:
        await sim.post(f"/sandbox/wechatpay/pay/{no}", params={"drop": "true"})
    r1 = _no()
    first = await gateway.refund(
        out_trade_no=no, out_refund_no=r1, refund_fen=600, total_fen=1000, reason="x"
    )
    assert first["status"] == "PROCESSING" and first["amount"]["refund"] == 600
    again = await gateway.refund(
        out_trade_no=no, out_refund_no=r1, refund_fen=600, total_fen=1000, reason="x"
    )
    assert again["refund_id"] == first["refund_id"]  # same out_refund_no → same refund
    with pytest.raises(WeChatPayError) as exc:
        await gateway.refund(out_trade_no=no, out_refund_no=_no(), refund_fen=401, total_fen=1000, reason="x")
    assert exc.value.status == 403 and exc.value.code == "NOT_ENOUGH"
    last = await gateway.refund(
        out_trade_no=no, out_refund_no=_no(), refund_fen=400, total_fen=1000, reason="x"
    )
    assert last["status"] == "PROCESSING"
    queried = await gateway.query_refund(r1)
    assert queried is not None and queried["refund_id"] == first["refund_id"]
    assert await gateway.query_refund(_no()) is None


async def test_trade_bill_gzip_sha1_backtick_yuan(gateway: WeChatPayGateway, simulator: str) -> None:
    no = _no()
    await _order(gateway, no, total=300)
    async with httpx.AsyncClient(base_url=simulator) as sim:
        await sim.post(f"/sandbox/wechatpay/pay/{no}", params={"drop": "true"})
    bill = await gateway.trade_bill(business_date().isoformat())
    assert bill["hash_type"] == "SHA1" and bill["download_url"].startswith(gateway.config.gateway)
    data = await gateway.download_bill(bill["download_url"], bill["hash_value"])
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows[0][0] == "交易时间" and len(rows[0]) == 27
    mine = [[f.lstrip("`") for f in r] for r in rows if len(r) == 27 and r[6] == "`" + no]
    assert len(mine) == 1 and mine[0][9] == "SUCCESS" and mine[0][12] == "3.00"
    assert yuan_text_to_fen(mine[0][12]) == 300
    assert rows[-2][0] == "总交易单数" and rows[-1][0].startswith("`")
    with pytest.raises(WeChatUnavailable):
        await gateway.download_bill(bill["download_url"], "0" * 40)
    with pytest.raises(WeChatPayError):
        await gateway.trade_bill((business_date() + timedelta(days=1)).isoformat())


async def test_calls_reuse_the_parsed_key_and_run_concurrently(
    gateway: WeChatPayGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent calls share the loop's one kept client: the merchant's RSA key is not parsed again (tens of
    milliseconds of CPU per order), no TLS context is built (about 20 ms) and no connection opened per call."""
    import wechatpayv3.async_.core as sdk_core

    parsed: list[object] = []
    real = sdk_core.load_private_key
    monkeypatch.setattr(sdk_core, "load_private_key", lambda pem: parsed.append(pem) or real(pem))
    built: list[object] = []
    real_init = httpx.AsyncClient.__init__

    def counting_init(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "__init__", counting_init)
    await gateway.aclose()  # start from no kept client on this loop
    numbers = [_no() for _ in range(6)]
    prepays = await asyncio.gather(*(_order(gateway, no, total=300 + i) for i, no in enumerate(numbers)))
    assert all(p.startswith("wx") for p in prepays) and len(set(prepays)) == 6
    orders = await asyncio.gather(*(gateway.query_order(no) for no in numbers))
    assert [o["amount"]["total"] if o else None for o in orders] == [300 + i for i in range(6)]
    assert parsed == []
    assert len(built) == 1 and gateway._client()._core._client is built[0]
    assert gateway._offline._core._client is None  # the offline client never holds one
    await gateway.aclose()  # closed (at shutdown): the next call on this loop gets a new one and works
    assert built[0].is_closed  # type: ignore[attr-defined]
    assert (await gateway.query_order(numbers[0])) is not None
    assert len(built) == 2
