from __future__ import annotations

import threading
from pathlib import Path

import httpx

from app.sandbox.wechatpay_keys import load_sandbox_keys
from app.wechat.pay import load_private_key, load_public_key, rsa_sign, rsa_verify


def test_keys_are_generated_once_per_data_directory(tmp_path: Path) -> None:
    results = []

    def load() -> None:
        results.append(load_sandbox_keys(tmp_path))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.public_key_id for r in results}) == 1
    keys = results[0]
    assert keys.public_key_id.startswith("PUB_KEY_ID_")
    assert (tmp_path / "wechatpay-sandbox" / "keys.json").stat().st_mode & 0o077 == 0
    sig = rsa_sign(load_private_key(keys.platform_private_pem), "x")
    assert rsa_verify(load_public_key(keys.platform_public_pem), "x", sig)
    other = load_sandbox_keys(tmp_path / "elsewhere")
    assert other.merchant_private_pem != keys.merchant_private_pem


async def test_controls_on_unknown_orders(simulator: str) -> None:
    async with httpx.AsyncClient(base_url=simulator) as sim:
        pay = await sim.post("/sandbox/wechatpay/pay/NOSUCHORDER0001")
        assert pay.json() == {"ok": False, "code": "ORDER_NOT_EXIST", "message": "订单不存在"}
        settle = await sim.post("/sandbox/wechatpay/refunds/NOSUCHREFUND/settle")
        assert settle.json()["ok"] is False
        bad = await sim.post("/sandbox/wechatpay/pay/X", params={"times": 99})
        assert bad.status_code == 422
        unsigned = await sim.post("/sandbox/wechatpay/v3/pay/transactions/jsapi", json={})
        assert unsigned.status_code == 401 and unsigned.json()["code"] == "SIGN_ERROR"
        assert unsigned.headers["Wechatpay-Signature-Type"] == "WECHATPAY2-SHA256-RSA2048"
