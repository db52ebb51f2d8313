"""Simulated mini-program server APIs: stable_token, jscode2session, getuserphonenumber, subscribe send.

Sandbox codes: ``sbx:<openid>`` logs in as that openid; ``sbx:<11-digit phone>`` returns that phone number.
Like WeChat, errors come back as HTTP 200 with a non-zero ``errcode``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from app.config import get_settings
from app.db import unit_of_work
from app.models import SandboxWeChatMessage

router = APIRouter(prefix="/wechat", tags=["sandbox"])

_OPENID = re.compile(r"^sbx:([A-Za-z0-9_-]{1,64})$")
_PHONE = re.compile(r"^sbx:(1[3-9]\d{9})$")
TOKEN_TTL = 7200


def _err(errcode: int, errmsg: str) -> dict[str, Any]:
    return {"errcode": errcode, "errmsg": errmsg}


def _token_mac(appid: str, expires: int) -> str:
    key = hashlib.sha256(("sandbox-token:" + get_settings().SECRET_KEY).encode()).digest()
    return hmac.new(key, f"{appid}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]


def mint_access_token(appid: str, now: float | None = None) -> str:
    expires = int((now or time.time()) + TOKEN_TTL)
    return f"sbxtok.{expires}.{_token_mac(appid, expires)}"


def check_access_token(token: str | None) -> dict[str, Any] | None:
    """None when valid, else the WeChat error body."""
    appid = get_settings().WECHAT_APPID
    if not token:
        return _err(41001, "access_token missing")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != "sbxtok" or not parts[1].isdigit():
        return _err(40001, "invalid credential, access_token is invalid or not latest")
    if not hmac.compare_digest(parts[2], _token_mac(appid, int(parts[1]))):
        return _err(40001, "invalid credential, access_token is invalid or not latest")
    if int(parts[1]) < time.time():
        return _err(42001, "access_token expired")
    return None


def _check_app(appid: str | None, secret: str | None) -> dict[str, Any] | None:
    settings = get_settings()
    if appid != settings.WECHAT_APPID:
        return _err(40013, "invalid appid")
    if not secret or not hmac.compare_digest(secret, settings.WECHAT_SECRET):
        return _err(40125, "invalid appsecret")
    return None


@router.post("/cgi-bin/stable_token")
async def stable_token(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return _err(47001, "data format error")
    if not isinstance(body, dict) or body.get("grant_type") != "client_credential":
        return _err(40002, "invalid grant_type")
    problem = _check_app(body.get("appid"), body.get("secret"))
    if problem:
        return problem
    return {"access_token": mint_access_token(body["appid"]), "expires_in": TOKEN_TTL}


@router.get("/sns/jscode2session")
async def jscode2session(
    appid: str | None = None,
    secret: str | None = None,
    js_code: str | None = None,
    grant_type: str | None = None,
) -> dict[str, Any]:
    problem = _check_app(appid, secret)
    if problem:
        return problem
    if grant_type != "authorization_code":
        return _err(40002, "invalid grant_type")
    match = _OPENID.match(js_code or "")
    if not match:
        return _err(40029, "invalid code")
    return {"openid": match.group(1), "session_key": secrets.token_urlsafe(16)}


@router.post("/wxa/business/getuserphonenumber")
async def getuserphonenumber(request: Request, access_token: str | None = None) -> dict[str, Any]:
    problem = check_access_token(access_token)
    if problem:
        return problem
    try:
        body = await request.json()
    except ValueError:
        return _err(47001, "data format error")
    match = _PHONE.match(str(body.get("code", ""))) if isinstance(body, dict) else None
    if not match:
        return _err(40029, "invalid code")
    phone = match.group(1)
    return {
        "errcode": 0,
        "errmsg": "ok",
        "phone_info": {
            "phoneNumber": phone,
            "purePhoneNumber": phone,
            "countryCode": "86",
            "watermark": {"timestamp": int(time.time()), "appid": get_settings().WECHAT_APPID},
        },
    }


@router.post("/cgi-bin/message/subscribe/send")
async def subscribe_send(request: Request, access_token: str | None = None) -> dict[str, Any]:
    problem = check_access_token(access_token)
    if problem:
        return problem
    try:
        body = await request.json()
    except ValueError:
        return _err(47001, "data format error")
    if not isinstance(body, dict):
        return _err(47001, "data format error")
    touser, template_id, data = body.get("touser"), body.get("template_id"), body.get("data")
    if not isinstance(touser, str) or not touser:
        return _err(40003, "invalid openid")
    if not isinstance(template_id, str) or not template_id:
        return _err(40037, "invalid template_id")
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "value" in v for v in data.values()):
        return _err(47003, "argument invalid! data.value invalid")
    async with unit_of_work() as session:
        session.add(
            SandboxWeChatMessage(
                appid=get_settings().WECHAT_APPID,
                touser=touser,
                template_id=template_id,
                page=body.get("page"),
                data=data,
                miniprogram_state=body.get("miniprogram_state"),
            )
        )
    return {"errcode": 0, "errmsg": "ok"}


@router.get("/messages")
async def list_messages(touser: str | None = None, limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    """Subscribe messages the simulator has 'delivered', newest first (a demo and test control)."""
    stmt = select(SandboxWeChatMessage).order_by(SandboxWeChatMessage.id.desc()).limit(limit)
    if touser:
        stmt = stmt.where(SandboxWeChatMessage.touser == touser)
    async with unit_of_work() as session:
        rows = (await session.execute(stmt)).scalars().all()
    return {
        "items": [
            {
                "id": m.id,
                "touser": m.touser,
                "template_id": m.template_id,
                "page": m.page,
                "data": m.data,
                "created_at": m.created_at.isoformat(),
            }
            for m in rows
        ]
    }
