"""WeChat Pay APIv3 — the one adapter around wechatpayv3 (nothing else imports it).

微信支付公钥 (public-key) mode: requests are signed with the merchant's API key, responses and notifications are
verified with the platform public key selected by ``Wechatpay-Serial: PUB_KEY_ID_…``. Only the gateway URL
differs between real WeChat Pay and the built-in simulator. wechatpayv3 returns ``(status, text)`` and raises
nothing on 4xx/5xx: this module turns that into :class:`WeChatPayError` / :class:`WeChatUnavailable`.

The signature primitives below are shared with the simulator and pinned by the official test vectors.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import hashlib
import hmac
import json
import secrets
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import structlog
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from wechatpayv3.async_ import AsyncWeChatPay
from wechatpayv3.async_ import WeChatPayType as AsyncWeChatPayType  # the async client's own enum

from app.config import Settings, get_settings
from app.exceptions import WeChatUnavailable
from app.kit.time import SHANGHAI

log = structlog.get_logger("app.wechat.pay")

SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
MAX_CLOCK_SKEW_SECONDS = 300


# ---------------------------------------------------------------- signature primitives


def request_sign_message(method: str, url: str, timestamp: str, nonce: str, body: str) -> str:
    """APIv3 request: ``METHOD\\nURL(path?query)\\nTIMESTAMP\\nNONCE\\nBODY\\n``."""
    return f"{method}\n{url}\n{timestamp}\n{nonce}\n{body}\n"


def response_sign_message(timestamp: str, nonce: str, body: str) -> str:
    """APIv3 response / notification: ``TIMESTAMP\\nNONCE\\nBODY\\n``."""
    return f"{timestamp}\n{nonce}\n{body}\n"


def pay_sign_message(appid: str, timestamp: str, nonce: str, package: str) -> str:
    """``wx.requestPayment`` paySign input (signType RSA is not signed)."""
    return f"{appid}\n{timestamp}\n{nonce}\n{package}\n"


@functools.lru_cache(maxsize=16)
def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """Parsed once per key: loading checks the key, which costs milliseconds (the simulator signs each
    delivery with the platform key)."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def rsa_sign(private_key: rsa.RSAPrivateKey, message: str) -> str:
    """base64(SHA256withRSA(message)), PKCS#1 v1.5 — deterministic for a given key."""
    return base64.b64encode(private_key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa_verify(public_key: rsa.RSAPublicKey, message: str, signature_b64: str) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public_key.verify(signature, message.encode(), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def aead_encrypt(apiv3_key: str, nonce: str, plaintext: str, associated_data: str) -> str:
    """AEAD_AES_256_GCM as in notifications: key = the 32-byte APIv3 key, 12-char nonce, base64 output."""
    data = AESGCM(apiv3_key.encode()).encrypt(nonce.encode(), plaintext.encode(), associated_data.encode())
    return base64.b64encode(data).decode()


def aead_decrypt(apiv3_key: str, nonce: str, ciphertext_b64: str, associated_data: str) -> str | None:
    try:
        data = base64.b64decode(ciphertext_b64, validate=True)
        return AESGCM(apiv3_key.encode()).decrypt(nonce.encode(), data, associated_data.encode()).decode()
    except (InvalidTag, ValueError):
        return None


def v2_sign(params: Mapping[str, Any], key: str, sign_type: str = "MD5") -> str:
    """APIv2 ``sign``: non-empty params sorted by key, ``k=v&…&key=KEY``, MD5 or HMAC-SHA256, upper-case hex.
    (Only for APIv2 merchants and the v2 bill/ack formats; APIv3 uses RSA.)"""
    pairs = [f"{k}={v}" for k, v in sorted(params.items()) if k != "sign" and v not in (None, "")]
    text = "&".join([*pairs, f"key={key}"])
    if sign_type == "MD5":
        return hashlib.md5(text.encode()).hexdigest().upper()
    if sign_type == "HMAC-SHA256":
        return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest().upper()
    raise ValueError(f"unknown sign_type {sign_type!r}")


def new_nonce() -> str:
    return secrets.token_hex(16).upper()


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class MerchantConfig:
    mchid: str
    appid: str
    apiv3_key: str
    private_key_pem: str
    serial_no: str
    public_key_pem: str
    public_key_id: str
    gateway: str
    notify_url: str
    refund_notify_url: str
    timeout_seconds: float


def merchant_config(settings: Settings | None = None) -> MerchantConfig:
    settings = settings or get_settings()
    private_pem = public_pem = None
    serial = settings.WECHATPAY_CERT_SERIAL_NO
    key_id = settings.WECHATPAY_PUBLIC_KEY_ID
    if settings.WECHATPAY_PRIVATE_KEY_PATH:
        private_pem = settings.WECHATPAY_PRIVATE_KEY_PATH.read_text()
    if settings.WECHATPAY_PUBLIC_KEY_PATH:
        public_pem = settings.WECHATPAY_PUBLIC_KEY_PATH.read_text()
    if private_pem is None or public_pem is None:
        if not settings.is_sandbox:
            raise RuntimeError("WeChat Pay keys are not configured")
        from app.sandbox.wechatpay_keys import load_sandbox_keys

        keys = load_sandbox_keys(settings.DATA_DIR)
        private_pem = private_pem or keys.merchant_private_pem
        public_pem = public_pem or keys.platform_public_pem
        serial = serial or keys.merchant_serial_no
        key_id = key_id or keys.public_key_id
    assert serial and key_id
    return MerchantConfig(
        mchid=settings.WECHATPAY_MCHID,
        appid=settings.WECHAT_APPID,
        apiv3_key=settings.WECHATPAY_APIV3_KEY,
        private_key_pem=private_pem,
        serial_no=serial,
        public_key_pem=public_pem,
        public_key_id=key_id,
        gateway=settings.wechatpay_api_base,
        notify_url=settings.wechatpay_notify_url,
        refund_notify_url=settings.wechatpay_refund_notify_url,
        timeout_seconds=settings.WECHAT_TIMEOUT_SECONDS,
    )


# ---------------------------------------------------------------- errors


class WeChatPayError(Exception):
    """WeChat Pay answered with a 4xx/5xx business error (``{"code", "message"}``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class NotificationRejected(Exception):
    """A notification that must not be acted on; WeChat gets ``status`` and ``{"code": "FAIL", ...}``."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Notification:
    id: str
    event_type: str
    create_time: str
    resource: dict[str, Any]


# ---------------------------------------------------------------- the gateway


class WeChatPayGateway:
    def __init__(self, config: MerchantConfig | None = None) -> None:
        self.config = config or merchant_config()
        # Public-key mode constructs offline; this instance signs paySign and verifies notifications.
        self._offline = self._build()
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncWeChatPay] = (
            weakref.WeakKeyDictionary()
        )

    def _build(self) -> AsyncWeChatPay:
        c = self.config
        wxpay = AsyncWeChatPay(
            wechatpay_type=AsyncWeChatPayType.MINIPROG,
            mchid=c.mchid,
            private_key=c.private_key_pem,
            cert_serial_no=c.serial_no,
            appid=c.appid,
            apiv3_key=c.apiv3_key,
            notify_url=c.notify_url,
            timeout=(c.timeout_seconds, c.timeout_seconds * 2),
            public_key=c.public_key_pem,
            public_key_id=c.public_key_id,
        )
        wxpay._core._gate_way = c.gateway
        return wxpay

    def _client(self) -> AsyncWeChatPay:
        """The running event loop's client, kept for every call made on it.

        wechatpayv3 opens an ``httpx.AsyncClient`` when its client object is entered and closes it on leaving,
        so each call built a TLS context (loading the CA bundle: about 20 ms of CPU here) and opened a new
        connection, with a TLS handshake to WeChat Pay; building a client object also parses the merchant's RSA
        key (40–60 ms). So each loop keeps a copy of the offline client (its parsed keys and settings) with an
        HTTP client of its own, and never enters it; its requests change nothing on it, so concurrent calls
        share it. An httpx client serves only the loop that first used it: the app's loop and the job workers'
        each get theirs, forgotten with their loop. Idle connections are dropped after 4 s, before servers that
        close them at 5 s (uvicorn's default, which the sandbox simulator runs under) can."""
        loop = asyncio.get_running_loop()
        wxpay = self._per_loop.get(loop)
        if wxpay is None or wxpay._core._client.is_closed:
            seconds = self.config.timeout_seconds
            wxpay = copy.copy(self._offline)
            wxpay._core = copy.copy(self._offline._core)
            wxpay._core._client = httpx.AsyncClient(
                timeout=httpx.Timeout(seconds * 2, connect=seconds),
                # httpx's own bounds (100 connections, 20 kept idle); idle ones go after 4 s
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=4.0),
            )
            self._per_loop[loop] = wxpay
        return wxpay

    async def aclose(self) -> None:
        """Close the running loop's HTTP client (at shutdown)."""
        wxpay = self._per_loop.pop(asyncio.get_running_loop(), None)
        if wxpay is not None:
            await wxpay._core._client.aclose()

    async def _call(self, action: str, method: str, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        try:
            status, text = await getattr(self._client(), method)(*args, **kwargs)
        except httpx.HTTPError as exc:
            log.warning("wechatpay_unreachable", action=action, error=type(exc).__name__)
            raise WeChatUnavailable("暂时连不上微信支付，请稍后再试", detail={"action": action}) from exc
        except Exception as exc:  # wechatpayv3 raises bare Exception for a bad response signature
            log.error("wechatpay_response_rejected", action=action, error=str(exc))
            raise WeChatUnavailable(
                "微信支付的应答未通过验签，请稍后再试", detail={"action": action}
            ) from exc
        if status >= 500:
            log.warning("wechatpay_server_error", action=action, status=status)
            raise WeChatUnavailable("微信支付暂时不可用，请稍后再试", detail={"action": action})
        return status, text

    @staticmethod
    def _json(text: Any) -> dict[str, Any]:
        if isinstance(text, bytes):
            text = text.decode()
        if not text:
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _raise_for(self, status: int, text: Any) -> None:
        if status >= 400:
            body = self._json(text)
            raise WeChatPayError(status, str(body.get("code", "UNKNOWN")), str(body.get("message", "")))

    # -- orders

    async def create_jsapi_order(
        self,
        *,
        out_trade_no: str,
        description: str,
        amount_fen: int,
        payer_openid: str,
        time_expire: datetime,
        attach: str | None = None,
    ) -> str:
        """``POST /v3/pay/transactions/jsapi`` → prepay_id. Re-entry with identical parameters gives a fresh one."""
        status, text = await self._call(
            "pay",
            "pay",
            description=description,
            out_trade_no=out_trade_no,
            amount={"total": amount_fen, "currency": "CNY"},
            payer={"openid": payer_openid},
            time_expire=time_expire.astimezone(SHANGHAI).isoformat(timespec="seconds"),
            attach=attach,
            notify_url=self.config.notify_url,
            pay_type=AsyncWeChatPayType.MINIPROG,
        )
        self._raise_for(status, text)
        prepay_id = self._json(text).get("prepay_id")
        if not prepay_id:
            raise WeChatUnavailable("微信支付下单没有返回 prepay_id", detail={"action": "pay"})
        return str(prepay_id)

    async def query_order(self, out_trade_no: str) -> dict[str, Any] | None:
        """The order as WeChat Pay sees it, or None when it does not know it (``ORDER_NOT_EXIST``)."""
        status, text = await self._call("query", "query", out_trade_no=out_trade_no)
        if status == 404:
            return None
        self._raise_for(status, text)
        return self._json(text)

    async def close_order(self, out_trade_no: str) -> None:
        status, text = await self._call("close", "close", out_trade_no=out_trade_no)
        self._raise_for(status, text)

    def pay_params(self, prepay_id: str) -> dict[str, str]:
        """The four values + paySign for ``wx.requestPayment`` (APIv3: signType RSA)."""
        timestamp = str(int(time.time()))
        nonce = new_nonce()
        package = f"prepay_id={prepay_id}"
        pay_sign = self._offline.sign([self.config.appid, timestamp, nonce, package])
        return {
            "appId": self.config.appid,
            "timeStamp": timestamp,
            "nonceStr": nonce,
            "package": package,
            "signType": "RSA",
            "paySign": pay_sign,
        }

    # -- refunds

    async def refund(
        self, *, out_trade_no: str, out_refund_no: str, refund_fen: int, total_fen: int, reason: str
    ) -> dict[str, Any]:
        """``POST /v3/refund/domestic/refunds``; the same out_refund_no returns the same refund."""
        status, text = await self._call(
            "refund",
            "refund",
            out_refund_no=out_refund_no,
            amount={"refund": refund_fen, "total": total_fen, "currency": "CNY"},
            out_trade_no=out_trade_no,
            reason=reason[:80] or None,
            notify_url=self.config.refund_notify_url,
        )
        self._raise_for(status, text)
        return self._json(text)

    async def query_refund(self, out_refund_no: str) -> dict[str, Any] | None:
        status, text = await self._call("query_refund", "query_refund", out_refund_no=out_refund_no)
        if status == 404:
            return None
        self._raise_for(status, text)
        return self._json(text)

    # -- bills

    async def trade_bill(self, bill_date: str) -> dict[str, Any]:
        """``GET /v3/bill/tradebill`` → ``{download_url, hash_type, hash_value}``."""
        status, text = await self._call("trade_bill", "trade_bill", bill_date=bill_date)
        self._raise_for(status, text)
        return self._json(text)

    async def download_bill(self, download_url: str, hash_value: str | None = None) -> bytes:
        """The bill file, gunzipped; its SHA1 is checked against ``hash_value`` when given."""
        import gzip

        status, content = await self._call("download_bill", "download_bill", download_url)
        self._raise_for(status, content)
        data = content if isinstance(content, bytes) else str(content).encode()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        if hash_value and hashlib.sha1(data).hexdigest().lower() != hash_value.lower():
            raise WeChatUnavailable("对账单校验失败（SHA1 不一致）", detail={"action": "download_bill"})
        return data

    async def download_bill_file(self, download_url: str) -> bytes:
        """The bill file exactly as served (gzip when requested so): the caller streams, gunzips and checks
        the SHA1 itself, so a truncated or tampered file is refused by whoever parses it."""
        status, content = await self._call("download_bill", "download_bill", download_url)
        self._raise_for(status, content)
        return content if isinstance(content, bytes) else str(content).encode()

    # -- notifications

    def parse_notification(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> Notification:
        """Verify the signature on the raw body with the platform public key, reject stale timestamps,
        decrypt the AEAD_AES_256_GCM resource. Raises :class:`NotificationRejected`."""
        lower = {k.lower(): v for k, v in headers.items()}
        timestamp = lower.get("wechatpay-timestamp", "")
        if not timestamp.isdigit():
            raise NotificationRejected("missing or malformed Wechatpay-Timestamp")
        if abs((now if now is not None else time.time()) - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
            raise NotificationRejected("stale Wechatpay-Timestamp")
        if lower.get("wechatpay-serial") != self.config.public_key_id:
            raise NotificationRejected("unknown Wechatpay-Serial")
        if lower.get("wechatpay-signature-type", SIGNATURE_TYPE) != SIGNATURE_TYPE:
            raise NotificationRejected("unsupported signature type")
        lower.setdefault("wechatpay-signature-type", SIGNATURE_TYPE)
        try:
            text = body.decode("utf-8")
            result = self._offline.callback(lower, text)
        except Exception as exc:  # malformed JSON / algorithm: never act on it
            raise NotificationRejected(f"unreadable notification: {type(exc).__name__}", 400) from exc
        if not result:
            raise NotificationRejected("signature or decryption failed")
        resource = result.get("resource")
        if not isinstance(resource, dict) or not result.get("id"):
            raise NotificationRejected("notification without resource", 400)
        return Notification(
            id=str(result["id"]),
            event_type=str(result.get("event_type", "")),
            create_time=str(result.get("create_time", "")),
            resource=resource,
        )


_gateway: WeChatPayGateway | None = None


def get_wechatpay() -> WeChatPayGateway:
    global _gateway
    if _gateway is None:
        _gateway = WeChatPayGateway()
    return _gateway


async def wechatpay_dependency() -> WeChatPayGateway:
    """``get_wechatpay`` for ``Depends``: async, so FastAPI neither sends each request through its thread pool
    nor lets a burst of first requests build the gateway in many threads at once."""
    return get_wechatpay()


async def close_wechatpay() -> None:
    """At shutdown: the gateway's kept HTTP connections of the running loop are closed (if it was built)."""
    if _gateway is not None:
        await _gateway.aclose()


def reset_wechatpay() -> None:
    global _gateway
    _gateway = None
