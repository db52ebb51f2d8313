"""Mini-program server APIs through wechatpy (sync, so always called through the threadpool).

Only the base URL differs between real WeChat and the built-in simulator. The access token comes from
``cgi-bin/stable_token`` (wechatpy 1.8 only knows ``cgi-bin/token``) and is cached in Redis.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests
import structlog
from starlette.concurrency import run_in_threadpool
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException
from wechatpy.session import SessionStorage
from wechatpy.session.memorystorage import MemoryStorage
from wechatpy.session.redisstorage import RedisStorage

from app.config import Settings, get_settings
from app.exceptions import TooManyRequests, Unauthorized, Unprocessable, WeChatUnavailable

log = structlog.get_logger("app.wechat")

INVALID_CODE_ERRCODES = {40029, 40163, 40226}
RATE_LIMIT_ERRCODES = {45011, 45009}


class ResilientStorage(SessionStorage):
    """Redis first; if Redis is unreachable, a per-process memory copy keeps WeChat calls working."""

    def __init__(self, primary: SessionStorage) -> None:
        self.primary = primary
        self.fallback = MemoryStorage()

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self.primary.get(key, default)
        except Exception:
            log.warning("wechat_token_cache_unavailable")
            return self.fallback.get(key, default)

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        self.fallback.set(key, value, ttl)
        try:
            self.primary.set(key, value, ttl)
        except Exception:
            log.warning("wechat_token_cache_unavailable")

    def delete(self, key: str) -> None:
        self.fallback.delete(key)
        try:
            self.primary.delete(key)
        except Exception:
            log.warning("wechat_token_cache_unavailable")


class SangyuWeChatClient(WeChatClient):
    def __init__(self, settings: Settings, storage: SessionStorage) -> None:
        super().__init__(
            settings.WECHAT_APPID,
            settings.WECHAT_SECRET,
            session=storage,
            timeout=settings.WECHAT_TIMEOUT_SECONDS,
        )
        base = settings.wechat_api_base
        self.API_BASE_URL = base
        self.wxa.API_BASE_URL = base

    def fetch_access_token(self) -> dict[str, Any]:
        """``POST cgi-bin/stable_token``: does not invalidate tokens other processes hold."""
        res = self._http.post(
            self.API_BASE_URL + "cgi-bin/stable_token",
            json={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
            timeout=self.timeout,
        )
        try:
            res.raise_for_status()
        except requests.RequestException as exc:
            raise WeChatClientException(
                None, None, client=self, request=exc.request, response=exc.response
            ) from exc
        result: dict[str, Any] = res.json()
        if result.get("errcode", 0) != 0:
            raise WeChatClientException(
                result["errcode"], result.get("errmsg"), client=self, request=res.request, response=res
            )
        expires_in = int(result.get("expires_in", 7200))
        # refresh five minutes early, as WeChat recommends for stable tokens
        ttl = max(expires_in - 300, 60)
        self.session.set(self.access_token_key, result["access_token"], ttl)
        self.expires_at = int(time.time()) + ttl
        return result


@dataclass(frozen=True)
class CodeSession:
    openid: str
    unionid: str | None


def _translate(exc: Exception, *, action: str) -> Exception:
    if isinstance(exc, WeChatClientException):
        if exc.errcode is not None and action == "phone" and exc.errcode not in RATE_LIMIT_ERRCODES:
            return Unprocessable(
                "获取手机号失败，请重新授权", code="InvalidPhoneCode", detail={"errcode": exc.errcode}
            )
        if exc.errcode in INVALID_CODE_ERRCODES:
            return Unauthorized(
                "登录凭证无效或已过期，请重新打开小程序再试",
                code="InvalidWeChatCode",
                detail={"errcode": exc.errcode},
            )
        if exc.errcode in RATE_LIMIT_ERRCODES:
            return TooManyRequests("微信那边请求太频繁，请稍等一分钟再试", detail={"errcode": exc.errcode})
    log.warning("wechat_call_failed", action=action, error=type(exc).__name__)
    return WeChatUnavailable(detail={"action": action})


class MiniProgram:
    """The calls the app makes. Each runs the sync SDK in the threadpool and maps failures to our errors."""

    def __init__(self, settings: Settings | None = None) -> None:
        from app.redis import get_sync_redis

        self.settings = settings or get_settings()
        storage = ResilientStorage(RedisStorage(get_sync_redis(self.settings), prefix="sangyu:wechatpy"))
        self.client = SangyuWeChatClient(self.settings, storage)

    async def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await run_in_threadpool(fn, *args, **kwargs)
        except (WeChatClientException, requests.RequestException) as exc:
            raise _translate(exc, action=action) from exc

    async def code_to_session(self, code: str) -> CodeSession:
        result = await self._call("login", self.client.wxa.code_to_session, code)
        openid = result.get("openid")
        if not openid:
            raise WeChatUnavailable(detail={"action": "login"})
        # session_key is deliberately dropped here: it never leaves this function.
        return CodeSession(openid=openid, unionid=result.get("unionid"))

    async def get_phone_number(self, code: str) -> str:
        result = await self._call(
            "phone",
            self.client.post,
            "wxa/business/getuserphonenumber",
            data={"code": code},
        )
        info = result.get("phone_info") or {}
        phone = info.get("purePhoneNumber") or info.get("phoneNumber")
        if not phone:
            raise Unprocessable("获取手机号失败，请重新授权", code="InvalidPhoneCode")
        return str(phone)

    async def send_subscribe_message(
        self, openid: str, template_id: str, data: dict[str, Any], page: str | None = None
    ) -> None:
        payload = {key: {"value": value} for key, value in data.items()}
        await self._call(
            "subscribe_send", self.client.wxa.send_subscribe_message, openid, template_id, payload, page
        )


_instance: MiniProgram | None = None


def get_miniprogram() -> MiniProgram:
    global _instance
    if _instance is None:
        _instance = MiniProgram()
    return _instance


async def miniprogram_dependency() -> MiniProgram:
    """``get_miniprogram`` for ``Depends``, async so that FastAPI does not run it in its thread pool."""
    return get_miniprogram()


def reset_miniprogram() -> None:
    global _instance
    _instance = None
