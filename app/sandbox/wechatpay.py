"""Simulated WeChat Pay APIv3 (direct merchant, 微信支付公钥 mode), mounted at ``/sandbox/wechatpay``.

Like WeChat Pay it verifies every request's ``WECHATPAY2-SHA256-RSA2048`` signature and timestamp, signs every
response with the platform key (``Wechatpay-Serial: PUB_KEY_ID_…``), keeps order/refund state (``sandbox_*``
tables, its own transactions), enforces fen amounts, out_trade_no re-entry rules and refund limits, and
delivers AEAD_AES_256_GCM-encrypted, signed notifications to the order's ``notify_url``.

Controls a demo or test needs (not part of WeChat Pay):
``POST /sandbox/wechatpay/pay/{out_trade_no}?times=N[&drop=true][&concurrent=true]`` — the payer confirms;
the notification is delivered N times (or dropped).
``POST /sandbox/wechatpay/refunds/{out_refund_no}/settle?times=N[&status=SUCCESS|ABNORMAL|CLOSED]``.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import gzip
import hashlib
import hmac
import io
import json
import re
import secrets
import time
import uuid
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from app.config import get_settings
from app.db import unit_of_work
from app.kit.money import fen_to_yuan_text
from app.kit.time import SHANGHAI, business_date, utcnow
from app.models import SandboxWeChatPayOrder, SandboxWeChatPayRefund
from app.sandbox.wechatpay_keys import SandboxKeys, load_sandbox_keys
from app.wechat.pay import (
    SIGNATURE_TYPE,
    aead_encrypt,
    load_private_key,
    load_public_key,
    new_nonce,
    request_sign_message,
    response_sign_message,
    rsa_sign,
    rsa_verify,
)

log = structlog.get_logger("app.sandbox.wechatpay")

PREFIX = "/sandbox/wechatpay"
router = APIRouter(prefix="/wechatpay", tags=["sandbox"])

_OUT_TRADE_NO = re.compile(r"^[A-Za-z0-9_\-|*]{6,32}$")
_OUT_REFUND_NO = re.compile(r"^[A-Za-z0-9_\-|*@]{1,64}$")
_AUTH_PARAM = re.compile(r'(\w+)="([^"]*)"')
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}

BILL_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
    "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,"
    "商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
)
BILL_SUMMARY_HEADER = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
)
FEE_RATE_PER_MILLE = 6  # 0.60%


def keys() -> SandboxKeys:
    return load_sandbox_keys(get_settings().DATA_DIR)


# ---------------------------------------------------------------- signed responses


def sign_headers(body: str) -> dict[str, str]:
    k = keys()
    timestamp, nonce = str(int(time.time())), new_nonce()
    signature = rsa_sign(
        load_private_key(k.platform_private_pem), response_sign_message(timestamp, nonce, body)
    )
    return {
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": signature,
        "Wechatpay-Serial": k.public_key_id,
        "Wechatpay-Signature-Type": SIGNATURE_TYPE,
        "Request-ID": uuid.uuid4().hex,
    }


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def signed(data: Any | None, status: int = 200) -> Response:
    body = "" if data is None else _dumps(data)
    return Response(
        content=body.encode(), status_code=status, headers=sign_headers(body), media_type="application/json"
    )


def error(status: int, code: str, message: str) -> Response:
    return signed({"code": code, "message": message}, status)


def _sign_error(message: str) -> Response:
    return error(401, "SIGN_ERROR", message)


async def authenticate(request: Request) -> tuple[bytes, Response | None]:
    """Check the merchant's request signature the way WeChat Pay does. Returns (raw body, error or None)."""
    body = await request.body()
    settings = get_settings()
    header = request.headers.get("authorization", "")
    scheme, _, params_text = header.partition(" ")
    if scheme != SIGNATURE_TYPE:
        return body, _sign_error("Authorization 头缺失或认证类型不正确")
    params = dict(_AUTH_PARAM.findall(params_text))
    for name in ("mchid", "nonce_str", "signature", "timestamp", "serial_no"):
        if not params.get(name):
            return body, _sign_error(f"Authorization 缺少 {name}")
    if params["mchid"] != settings.WECHATPAY_MCHID:
        return body, _sign_error("商户号与签名不匹配")
    k = keys()
    if params["serial_no"] != k.merchant_serial_no:
        return body, _sign_error("商户证书序列号有误")
    if not params["timestamp"].isdigit() or abs(time.time() - int(params["timestamp"])) > 300:
        return body, _sign_error("时间戳与当前时间相差过大")
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    path = raw_path.decode().removeprefix(PREFIX)
    query = request.scope.get("query_string", b"").decode()
    url = f"{path}?{query}" if query else path
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return body, _sign_error("请求体不是 UTF-8")
    message = request_sign_message(request.method, url, params["timestamp"], params["nonce_str"], text)
    if not rsa_verify(load_public_key(k.merchant_public_pem), message, params["signature"]):
        return body, _sign_error("签名错误")
    serial = request.headers.get("wechatpay-serial")
    if serial is not None and serial != k.public_key_id:
        return body, error(400, "PARAM_ERROR", "Wechatpay-Serial 与微信支付公钥ID不一致")
    return body, None


def _json_body(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _is_fen(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _rfc3339(at: datetime | None) -> str | None:
    return at.astimezone(SHANGHAI).isoformat(timespec="seconds") if at else None


def _notify_url_ok(url: Any) -> bool:
    if not isinstance(url, str) or len(url) > 255:
        return False
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.netloc:
        return True
    # Sandbox only: the simulator also delivers over plain HTTP to this machine.
    return parts.scheme == "http" and parts.hostname in _LOOPBACK


def _digits(n: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(n))


def _transaction_view(order: SandboxWeChatPayOrder) -> dict[str, Any]:
    state_desc = {
        "NOTPAY": "未支付",
        "SUCCESS": "支付成功",
        "CLOSED": "已关闭",
        "REFUND": "转入退款",
    }.get(order.trade_state, order.trade_state)
    view: dict[str, Any] = {
        "appid": order.appid,
        "mchid": order.mchid,
        "out_trade_no": order.out_trade_no,
        "trade_type": "JSAPI",
        "trade_state": order.trade_state,
        "trade_state_desc": state_desc,
        "payer": {"openid": order.payer_openid},
        "amount": {"total": order.total_fen, "currency": "CNY"},
    }
    if order.request.get("attach"):
        view["attach"] = order.request["attach"]
    if order.transaction_id:
        view["transaction_id"] = order.transaction_id
        view["bank_type"] = "OTHERS"
        view["success_time"] = _rfc3339(order.success_time)
        view["amount"].update({"payer_total": order.total_fen, "payer_currency": "CNY"})
    return view


def _refund_view(refund: SandboxWeChatPayRefund) -> dict[str, Any]:
    view: dict[str, Any] = {
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": refund.transaction_id,
        "out_trade_no": refund.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": _rfc3339(refund.created_at),
        "status": refund.status,
        "funds_account": "AVAILABLE",
        "amount": {
            "total": refund.total_fen,
            "refund": refund.refund_fen,
            "payer_total": refund.total_fen,
            "payer_refund": refund.refund_fen,
            "settlement_total": refund.total_fen,
            "settlement_refund": refund.refund_fen,
            "discount_refund": 0,
            "currency": "CNY",
        },
    }
    if refund.success_time:
        view["success_time"] = _rfc3339(refund.success_time)
    return view


# ---------------------------------------------------------------- notifications


def build_notification(
    event_type: str, original_type: str, summary: str, plaintext: dict[str, Any], *, notification_id: str
) -> str:
    """The JSON envelope WeChat Pay POSTs: resource encrypted with AEAD_AES_256_GCM under the APIv3 key."""
    nonce = secrets.token_hex(6)  # 12 characters
    associated_data = original_type
    ciphertext = aead_encrypt(get_settings().WECHATPAY_APIV3_KEY, nonce, _dumps(plaintext), associated_data)
    return _dumps(
        {
            "id": notification_id,
            "create_time": _rfc3339(utcnow()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": ciphertext,
                "associated_data": associated_data,
                "nonce": nonce,
            },
        }
    )


async def deliver(url: str, body: str, *, times: int, concurrent: bool) -> list[int | str]:
    """POST the notification ``times`` times, each delivery freshly signed like a WeChat retry."""

    async def one(client: httpx.AsyncClient) -> int | str:
        headers = {"Content-Type": "application/json", **sign_headers(body)}
        try:
            res = await client.post(url, content=body.encode(), headers=headers)
            return res.status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__

    async with httpx.AsyncClient(timeout=30) as client:
        if concurrent:
            return list(await asyncio.gather(*(one(client) for _ in range(times))))
        return [await one(client) for _ in range(times)]


# ---------------------------------------------------------------- orders


def _params_digest(data: dict[str, Any]) -> str:
    significant = {
        k: data.get(k)
        for k in ("appid", "mchid", "description", "amount", "payer", "notify_url", "attach", "time_expire")
    }
    if isinstance(significant["amount"], dict):
        significant["amount"] = {
            "total": data["amount"].get("total"),
            "currency": data["amount"].get("currency"),
        }
    return hashlib.sha256(json.dumps(significant, sort_keys=True).encode()).hexdigest()


@router.post("/v3/pay/transactions/jsapi")
async def jsapi_order(request: Request) -> Response:
    body, problem = await authenticate(request)
    if problem:
        return problem
    data = _json_body(body)
    if data is None:
        return error(400, "PARAM_ERROR", "请求体不是有效的 JSON")
    settings = get_settings()
    amount, payer = data.get("amount"), data.get("payer")
    if data.get("mchid") != settings.WECHATPAY_MCHID:
        return error(400, "PARAM_ERROR", "mchid 与请求签名的商户号不一致")
    if data.get("appid") != settings.WECHAT_APPID:
        return error(400, "APPID_MCHID_NOT_MATCH", "appid 和 mch_id 不匹配")
    description = data.get("description")
    if not isinstance(description, str) or not description or len(description) > 127:
        return error(400, "PARAM_ERROR", "description 必填且不超过127个字符")
    out_trade_no = data.get("out_trade_no")
    if not isinstance(out_trade_no, str) or not _OUT_TRADE_NO.match(out_trade_no):
        return error(400, "PARAM_ERROR", "out_trade_no 须为6-32位数字、字母或_-|*")
    if not isinstance(amount, dict) or not _is_fen(amount.get("total")):
        return error(400, "PARAM_ERROR", "amount.total 须为大于0的整数（单位：分）")
    if amount.get("currency", "CNY") != "CNY":
        return error(400, "PARAM_ERROR", "currency 仅支持 CNY")
    if not isinstance(payer, dict) or not isinstance(payer.get("openid"), str) or not payer["openid"]:
        return error(400, "PARAM_ERROR", "payer.openid 必填")
    if not _notify_url_ok(data.get("notify_url")):
        return error(400, "PARAM_ERROR", "notify_url 须为 https 地址")
    time_expire: datetime | None = None
    if data.get("time_expire") is not None:
        try:
            time_expire = datetime.fromisoformat(str(data["time_expire"]))
        except ValueError:
            return error(400, "PARAM_ERROR", "time_expire 须为 RFC3339 格式")
        if time_expire.tzinfo is None:
            return error(400, "PARAM_ERROR", "time_expire 须带时区")
    digest = _params_digest(data)
    prepay_id = "wx" + datetime.now(SHANGHAI).strftime("%d%H%M%S") + secrets.token_hex(14)
    async with unit_of_work() as session:
        await session.execute(
            insert(SandboxWeChatPayOrder)
            .values(
                mchid=data["mchid"],
                appid=data["appid"],
                out_trade_no=out_trade_no,
                params_digest=digest,
                request=data,
                total_fen=amount["total"],
                payer_openid=payer["openid"],
                notify_url=data["notify_url"],
                prepay_id=prepay_id,
                time_expire=time_expire,
            )
            .on_conflict_do_nothing(index_elements=["mchid", "out_trade_no"])
        )
        order = (
            await session.execute(
                select(SandboxWeChatPayOrder)
                .where(
                    SandboxWeChatPayOrder.mchid == data["mchid"],
                    SandboxWeChatPayOrder.out_trade_no == out_trade_no,
                )
                .with_for_update()
            )
        ).scalar_one()
        if order.prepay_id == prepay_id:
            return signed({"prepay_id": prepay_id})
        if order.trade_state in ("SUCCESS", "REFUND"):
            return error(400, "ORDERPAID", "该订单已支付")
        if order.trade_state == "CLOSED" or (order.time_expire and order.time_expire < utcnow()):
            return error(400, "ORDER_CLOSED", "当前订单已关闭，请重新下单")
        if order.params_digest != digest:
            return error(400, "INVALID_REQUEST", "201 商户订单号重复")
        order.prepay_id = prepay_id  # re-entry with identical parameters: a fresh prepay_id
    return signed({"prepay_id": prepay_id})


async def _find_order(**where: Any) -> SandboxWeChatPayOrder | None:
    stmt = select(SandboxWeChatPayOrder).filter_by(mchid=get_settings().WECHATPAY_MCHID, **where)
    async with unit_of_work() as session:
        return (await session.execute(stmt)).scalar_one_or_none()


async def _query(request: Request, mchid: str | None, **where: Any) -> Response:
    _, problem = await authenticate(request)
    if problem:
        return problem
    if mchid != get_settings().WECHATPAY_MCHID:
        return error(400, "PARAM_ERROR", "mchid 缺失或与签名不一致")
    order = await _find_order(**where)
    if order is None:
        return error(404, "ORDER_NOT_EXIST", "订单不存在")
    return signed(_transaction_view(order))


@router.get("/v3/pay/transactions/out-trade-no/{out_trade_no}")
async def query_by_out_trade_no(request: Request, out_trade_no: str, mchid: str | None = None) -> Response:
    return await _query(request, mchid, out_trade_no=out_trade_no)


@router.get("/v3/pay/transactions/id/{transaction_id}")
async def query_by_transaction_id(
    request: Request, transaction_id: str, mchid: str | None = None
) -> Response:
    return await _query(request, mchid, transaction_id=transaction_id)


@router.post("/v3/pay/transactions/out-trade-no/{out_trade_no}/close")
async def close_order(request: Request, out_trade_no: str) -> Response:
    body, problem = await authenticate(request)
    if problem:
        return problem
    data = _json_body(body)
    if data is None or data.get("mchid") != get_settings().WECHATPAY_MCHID:
        return error(400, "PARAM_ERROR", "mchid 缺失或与签名不一致")
    async with unit_of_work() as session:
        order = (
            await session.execute(
                select(SandboxWeChatPayOrder)
                .filter_by(mchid=data["mchid"], out_trade_no=out_trade_no)
                .with_for_update()
            )
        ).scalar_one_or_none()
        if order is None:
            return error(404, "ORDER_NOT_EXIST", "订单不存在")
        if order.trade_state in ("SUCCESS", "REFUND"):
            return error(400, "ORDERPAID", "订单已支付，不能关单")
        order.trade_state = "CLOSED"
    return signed(None, 204)


@router.post("/pay/{out_trade_no}")
async def confirm_payment(
    out_trade_no: str,
    times: int = Query(1, ge=0, le=20, description="how many times to deliver the notification"),
    drop: bool = Query(False, description="mark paid but deliver nothing (lost notification)"),
    concurrent: bool = Query(False, description="deliver all copies at once"),
) -> dict[str, Any]:
    """Demo/test control: the payer confirms the payment in WeChat; WeChat Pay notifies the merchant."""
    async with unit_of_work() as session:
        order = (
            await session.execute(
                select(SandboxWeChatPayOrder)
                .filter_by(mchid=get_settings().WECHATPAY_MCHID, out_trade_no=out_trade_no)
                .with_for_update()
            )
        ).scalar_one_or_none()
        if order is None:
            return {"ok": False, "code": "ORDER_NOT_EXIST", "message": "订单不存在"}
        if order.trade_state == "NOTPAY":
            if order.time_expire and order.time_expire < utcnow():
                order.trade_state = "CLOSED"
            else:
                order.trade_state = "SUCCESS"
                order.transaction_id = "4200" + _digits(24)
                order.success_time = utcnow().replace(microsecond=0)
        if order.trade_state == "CLOSED":
            return {"ok": False, "code": "ORDER_CLOSED", "message": "订单已关闭"}
        view = _transaction_view(order)
        notification_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"pay:{order.mchid}:{order.transaction_id}"))
        url = order.notify_url
    body = build_notification(
        "TRANSACTION.SUCCESS", "transaction", "支付成功", view, notification_id=notification_id
    )
    deliveries = [] if drop else await deliver(url, body, times=times, concurrent=concurrent)
    log.info("sandbox_payment", out_trade_no=out_trade_no, deliveries=deliveries, dropped=drop)
    return {
        "ok": True,
        "out_trade_no": out_trade_no,
        "transaction_id": view.get("transaction_id"),
        "notification_id": notification_id,
        "deliveries": deliveries,
        "dropped": drop,
    }


# ---------------------------------------------------------------- refunds


@router.post("/v3/refund/domestic/refunds")
async def create_refund(request: Request) -> Response:
    body, problem = await authenticate(request)
    if problem:
        return problem
    data = _json_body(body)
    if data is None:
        return error(400, "PARAM_ERROR", "请求体不是有效的 JSON")
    out_refund_no, amount = data.get("out_refund_no"), data.get("amount")
    if not isinstance(out_refund_no, str) or not _OUT_REFUND_NO.match(out_refund_no):
        return error(400, "PARAM_ERROR", "out_refund_no 格式不正确")
    if not isinstance(amount, dict) or not _is_fen(amount.get("refund")) or not _is_fen(amount.get("total")):
        return error(400, "PARAM_ERROR", "amount.refund 和 amount.total 须为大于0的整数（单位：分）")
    if amount.get("currency", "CNY") != "CNY":
        return error(400, "PARAM_ERROR", "currency 仅支持 CNY")
    notify_url = data.get("notify_url")
    if notify_url is not None and not _notify_url_ok(notify_url):
        return error(400, "PARAM_ERROR", "notify_url 须为 https 地址")
    mchid = get_settings().WECHATPAY_MCHID
    where: dict[str, Any] = {"mchid": mchid}
    if data.get("transaction_id"):
        where["transaction_id"] = data["transaction_id"]
    elif data.get("out_trade_no"):
        where["out_trade_no"] = data["out_trade_no"]
    else:
        return error(400, "PARAM_ERROR", "transaction_id 和 out_trade_no 必须填一个")
    async with unit_of_work() as session:
        order = (
            await session.execute(select(SandboxWeChatPayOrder).filter_by(**where).with_for_update())
        ).scalar_one_or_none()
        if order is None:
            return error(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        existing = (
            await session.execute(
                select(SandboxWeChatPayRefund).filter_by(mchid=mchid, out_refund_no=out_refund_no)
            )
        ).scalar_one_or_none()
        if existing is not None:
            if existing.refund_fen != amount["refund"] or existing.out_trade_no != order.out_trade_no:
                return error(400, "INVALID_REQUEST", "退款单号重复，且与之前请求的参数不一致")
            return signed(_refund_view(existing))
        if order.trade_state not in ("SUCCESS", "REFUND") or order.transaction_id is None:
            return error(400, "INVALID_REQUEST", "订单未支付，不能退款")
        if amount["total"] != order.total_fen:
            return error(400, "PARAM_ERROR", "订单金额与原订单不一致")
        if order.refunded_fen + amount["refund"] > order.total_fen:
            return error(403, "NOT_ENOUGH", "退款金额超过订单可退金额")
        refund = SandboxWeChatPayRefund(
            mchid=mchid,
            out_refund_no=out_refund_no,
            refund_id="50" + _digits(27),
            out_trade_no=order.out_trade_no,
            transaction_id=order.transaction_id,
            refund_fen=amount["refund"],
            total_fen=order.total_fen,
            status="PROCESSING",
            notify_url=notify_url,
            request=data,
            created_at=utcnow().replace(microsecond=0),
        )
        session.add(refund)
        order.refunded_fen += amount["refund"]
        order.trade_state = "REFUND"
        await session.flush()
        view = _refund_view(refund)
    return signed(view)


@router.get("/v3/refund/domestic/refunds/{out_refund_no}")
async def query_refund(request: Request, out_refund_no: str) -> Response:
    _, problem = await authenticate(request)
    if problem:
        return problem
    async with unit_of_work() as session:
        refund = (
            await session.execute(
                select(SandboxWeChatPayRefund).filter_by(
                    mchid=get_settings().WECHATPAY_MCHID, out_refund_no=out_refund_no
                )
            )
        ).scalar_one_or_none()
    if refund is None:
        return error(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
    return signed(_refund_view(refund))


@router.post("/refunds/{out_refund_no}/settle")
async def settle_refund(
    out_refund_no: str,
    status: str = Query("SUCCESS", pattern="^(SUCCESS|ABNORMAL|CLOSED)$"),
    times: int = Query(1, ge=0, le=20),
    drop: bool = Query(False),
) -> dict[str, Any]:
    """Demo/test control: the refund reaches the payer (or fails); WeChat Pay notifies the merchant."""
    mchid = get_settings().WECHATPAY_MCHID
    async with unit_of_work() as session:
        refund = (
            await session.execute(
                select(SandboxWeChatPayRefund)
                .filter_by(mchid=mchid, out_refund_no=out_refund_no)
                .with_for_update()
            )
        ).scalar_one_or_none()
        if refund is None:
            return {"ok": False, "code": "RESOURCE_NOT_EXISTS", "message": "退款单不存在"}
        if refund.status == "PROCESSING":
            refund.status = status
            if status == "SUCCESS":
                refund.success_time = utcnow().replace(microsecond=0)
            else:  # the money goes back to what the order can still refund
                order = (
                    await session.execute(
                        select(SandboxWeChatPayOrder)
                        .filter_by(mchid=mchid, out_trade_no=refund.out_trade_no)
                        .with_for_update()
                    )
                ).scalar_one()
                order.refunded_fen -= refund.refund_fen
        plaintext: dict[str, Any] = {
            "mchid": mchid,
            "out_trade_no": refund.out_trade_no,
            "transaction_id": refund.transaction_id,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_status": refund.status,
            "user_received_account": "支付用户零钱",
            "amount": {
                "total": refund.total_fen,
                "refund": refund.refund_fen,
                "payer_total": refund.total_fen,
                "payer_refund": refund.refund_fen,
            },
        }
        if refund.success_time:
            plaintext["success_time"] = _rfc3339(refund.success_time)
        url = refund.notify_url
        final_status = refund.status
    if not url:
        return {"ok": True, "status": final_status, "deliveries": [], "dropped": True}
    body = build_notification(
        f"REFUND.{final_status}",
        "refund",
        {"SUCCESS": "退款成功", "ABNORMAL": "退款异常", "CLOSED": "退款关闭"}[final_status],
        plaintext,
        notification_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"refund:{mchid}:{out_refund_no}:{final_status}")),
    )
    deliveries = [] if drop else await deliver(url, body, times=times, concurrent=False)
    return {"ok": True, "status": final_status, "deliveries": deliveries, "dropped": drop}


# ---------------------------------------------------------------- bills


def _bill_token(bill_date: str, bill_type: str, tar_type: str) -> str:
    raw = f"{bill_date}|{bill_type}|{tar_type}"
    mac = hmac.new(get_settings().WECHATPAY_APIV3_KEY.encode(), raw.encode(), hashlib.sha256).hexdigest()[:24]
    return base64.urlsafe_b64encode(f"{raw}|{mac}".encode()).decode().rstrip("=")


def _parse_bill_token(token: str) -> tuple[str, str, str] | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        bill_date, bill_type, tar_type, _mac = raw.split("|")
    except (ValueError, UnicodeDecodeError):
        return None
    if not hmac.compare_digest(_bill_token(bill_date, bill_type, tar_type), token):
        return None
    return bill_date, bill_type, tar_type


def _fee(total_fen: int) -> int:
    return (total_fen * FEE_RATE_PER_MILLE + 500) // 1000


async def build_trade_bill(bill_date: date, bill_type: str) -> bytes:
    """The ALL/SUCCESS/REFUND trade bill for a day (Asia/Shanghai): backtick-prefixed CSV, amounts in yuan."""
    start = datetime.combine(bill_date, datetime.min.time(), tzinfo=SHANGHAI)
    end = start + timedelta(days=1)
    mchid = get_settings().WECHATPAY_MCHID
    async with unit_of_work() as session:
        orders = (
            (
                await session.execute(
                    select(SandboxWeChatPayOrder)
                    .where(
                        SandboxWeChatPayOrder.mchid == mchid,
                        SandboxWeChatPayOrder.success_time >= start,
                        SandboxWeChatPayOrder.success_time < end,
                    )
                    .order_by(SandboxWeChatPayOrder.success_time, SandboxWeChatPayOrder.id)
                )
            )
            .scalars()
            .all()
        )
        refunds = (
            await session.execute(
                select(SandboxWeChatPayRefund, SandboxWeChatPayOrder)
                .join(
                    SandboxWeChatPayOrder,
                    (SandboxWeChatPayOrder.mchid == SandboxWeChatPayRefund.mchid)
                    & (SandboxWeChatPayOrder.out_trade_no == SandboxWeChatPayRefund.out_trade_no),
                )
                .where(
                    SandboxWeChatPayRefund.mchid == mchid,
                    SandboxWeChatPayRefund.status == "SUCCESS",
                    SandboxWeChatPayRefund.success_time >= start,
                    SandboxWeChatPayRefund.success_time < end,
                )
                .order_by(SandboxWeChatPayRefund.success_time, SandboxWeChatPayRefund.id)
            )
        ).all()
    y = fen_to_yuan_text
    rows: list[list[str]] = []
    settled = refunded = fees = ordered = 0
    if bill_type in ("ALL", "SUCCESS"):
        for o in orders:
            assert o.success_time is not None
            fee = _fee(o.total_fen)
            settled += o.total_fen
            ordered += o.total_fen
            fees += fee
            rows.append(
                [
                    o.success_time.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"),
                    o.appid, o.mchid, "0", "", o.transaction_id or "", o.out_trade_no, o.payer_openid,
                    "JSAPI", "SUCCESS", "OTHERS", "CNY", y(o.total_fen), "0.00", "0", "0", "0.00", "0.00",
                    "", "", str(o.request.get("description", "")), str(o.request.get("attach", "") or ""),
                    y(fee), "0.60%", y(o.total_fen), "0.00", "",
                ]
            )  # fmt: skip
    if bill_type in ("ALL", "REFUND"):
        for r, o in refunds:
            assert r.success_time is not None
            fee = -_fee(r.refund_fen)
            refunded += r.refund_fen
            fees += fee
            rows.append(
                [
                    r.success_time.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"),
                    o.appid, o.mchid, "0", "", r.transaction_id, r.out_trade_no, o.payer_openid,
                    "JSAPI", "REFUND", "OTHERS", "CNY", "0.00", "0.00", r.refund_id, r.out_refund_no,
                    y(r.refund_fen), "0.00", "ORIGINAL", "SUCCESS", str(o.request.get("description", "")),
                    str(o.request.get("attach", "") or ""), y(fee), "0.60%", "0.00", y(r.refund_fen), "",
                ]
            )  # fmt: skip
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    out.write(BILL_HEADER + "\r\n")
    for row in rows:
        writer.writerow(["`" + f for f in row])
    out.write(BILL_SUMMARY_HEADER + "\r\n")
    writer.writerow(
        ["`" + f for f in (str(len(rows)), y(settled), y(refunded), "0.00", y(fees), y(ordered), y(refunded))]
    )
    return out.getvalue().encode("utf-8")


def _bill_date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value or "")
    except ValueError:
        return None


@router.get("/v3/bill/tradebill")
async def trade_bill(
    request: Request, bill_date: str | None = None, bill_type: str = "ALL", tar_type: str | None = None
) -> Response:
    _, problem = await authenticate(request)
    if problem:
        return problem
    day = _bill_date(bill_date)
    if day is None:
        return error(400, "PARAM_ERROR", "bill_date 须为 YYYY-MM-DD")
    if bill_type not in ("ALL", "SUCCESS", "REFUND"):
        return error(400, "PARAM_ERROR", "bill_type 仅支持 ALL、SUCCESS、REFUND")
    if tar_type not in (None, "GZIP"):
        return error(400, "PARAM_ERROR", "tar_type 仅支持 GZIP")
    today = business_date()
    # WeChat Pay publishes a day's bill the next morning; the sandbox also serves today's (so far).
    if day > today:
        return error(400, "NO_STATEMENT_EXIST", "账单日期不能晚于今天")
    if day < today - timedelta(days=92):
        return error(400, "NO_STATEMENT_EXIST", "只能下载三个月以内的账单")
    content = await build_trade_bill(day, bill_type)
    token = _bill_token(day.isoformat(), bill_type, tar_type or "")
    base = str(request.base_url).rstrip("/") + PREFIX
    return signed(
        {
            "hash_type": "SHA1",
            "hash_value": hashlib.sha1(content).hexdigest(),
            "download_url": f"{base}/v3/billdownload/file?token={token}",
        }
    )


@router.get("/v3/billdownload/file")
async def download_bill(request: Request, token: str = "") -> Response:
    """The bill file itself. The request is signed; the response is not (as with WeChat Pay)."""
    _, problem = await authenticate(request)
    if problem:
        return problem
    parsed = _parse_bill_token(token)
    if parsed is None:
        return error(400, "PARAM_ERROR", "下载链接无效或已过期")
    bill_date, bill_type, tar_type = parsed
    content = await build_trade_bill(date.fromisoformat(bill_date), bill_type)
    if tar_type == "GZIP":
        return Response(content=gzip.compress(content), media_type="application/gzip")
    return Response(content=content, media_type="text/plain; charset=utf-8")


@router.get("/orders/{out_trade_no}")
async def inspect_order(out_trade_no: str) -> dict[str, Any]:
    """Demo/test control: the simulator's view of an order (unsigned, no auth)."""
    order = await _find_order(out_trade_no=out_trade_no)
    if order is None:
        return {"ok": False, "code": "ORDER_NOT_EXIST"}
    async with unit_of_work() as session:
        refunds = (
            await session.execute(
                select(func.count()).select_from(SandboxWeChatPayRefund).filter_by(out_trade_no=out_trade_no)
            )
        ).scalar_one()
    return {"ok": True, **_transaction_view(order), "refunded_fen": order.refunded_fen, "refunds": refunds}


@router.post("/faults/amount/{out_trade_no}")
async def inject_amount_fault(
    out_trade_no: str, total_fen: int = Query(..., ge=1, le=5_000_000)
) -> dict[str, Any]:
    """Demo/test control (fault injection): WeChat Pay's record of an order now says ``total_fen`` — its
    trade bill and order query show the changed amount, so reconciliation must report an amount mismatch."""
    async with unit_of_work() as session:
        order = (
            await session.execute(
                select(SandboxWeChatPayOrder)
                .filter_by(mchid=get_settings().WECHATPAY_MCHID, out_trade_no=out_trade_no)
                .with_for_update()
            )
        ).scalar_one_or_none()
        if order is None:
            return {"ok": False, "code": "ORDER_NOT_EXIST"}
        before = order.total_fen
        order.total_fen = total_fen
    log.warning("sandbox_fault_amount", out_trade_no=out_trade_no, before=before, after=total_fen)
    return {"ok": True, "out_trade_no": out_trade_no, "total_fen_before": before, "total_fen": total_fen}
