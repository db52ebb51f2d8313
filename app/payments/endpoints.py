"""WeChat Pay APIv3 callbacks. WeChat gets 204 when handled (or already handled), otherwise a 4xx/5xx with
``{"code": "FAIL", "message": ...}`` so that it retries; nothing is kept from a rejected notification."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.auth import SessionDep
from app.db import SessionFactory, get_session_factory
from app.exceptions import SangyuError
from app.middleware import on_access_line
from app.payments.service import WaitingNotification, payment_batch, payment_service
from app.wechat.pay import NotificationRejected, WeChatPayGateway, wechatpay_dependency

log = structlog.get_logger("app.payments")

router = APIRouter(tags=["payments"])

GatewayDep = Annotated[WeChatPayGateway, Depends(wechatpay_dependency)]
MAX_BODY = 64 * 1024

Act = Callable[[dict[str, str], bytes], Awaitable[str]]


async def _handle(request: Request, act: Act, session: AsyncSession | None = None) -> Response:
    """Run ``act`` on the raw notification; ``session`` (the request's, if it uses one) is rolled back on
    failure."""
    body = await request.body()
    if len(body) > MAX_BODY:
        return JSONResponse({"code": "FAIL", "message": "body too large"}, status_code=413)
    try:
        outcome = await act(dict(request.headers), body)
    except NotificationRejected as exc:
        if session is not None:
            await session.rollback()  # nothing of a rejected notification is kept, not even its inbox row
        log.warning("wechatpay_notification_rejected", reason=exc.reason, status=exc.status)
        return JSONResponse({"code": "FAIL", "message": exc.reason}, status_code=exc.status)
    except SangyuError as exc:
        if session is not None:
            await session.rollback()
        log.error("wechatpay_notification_failed", error=exc.error_code, message=exc.message)
        return JSONResponse({"code": "FAIL", "message": exc.error_code}, status_code=500)
    on_access_line(request.scope, notification=outcome)  # on the request's line, not a line of its own
    return Response(status_code=204)


def _name_order(request: Request, resource: dict[str, object]) -> None:
    """The order on the request's access line: the batch that pays it logs ``donation_paid`` with the same
    out_trade_no (a batch serves many requests, so its lines carry no request id)."""
    if isinstance(resource.get("out_trade_no"), str):
        on_access_line(request.scope, out_trade_no=resource["out_trade_no"])


@router.post("/payments/wechat/notify", status_code=204, summary="微信支付 APIv3 支付结果通知")
async def wechat_notify(
    request: Request,
    gateway: GatewayDep,
    open_session: Annotated[SessionFactory, Depends(get_session_factory)],
) -> Response:
    async def act(headers: dict[str, str], body: bytes) -> str:
        # verified and decrypted here, then applied together with this process's other waiting notifications
        # (group commit, app/payments/service.py); the answer comes after the commit
        note = gateway.parse_notification(headers, body)
        _name_order(request, note.resource)
        return await payment_batch.submit(open_session, WaitingNotification(note))

    return await _handle(request, act)


@router.post("/payments/wechat/refund-notify", status_code=204, summary="微信支付 APIv3 退款结果通知")
async def wechat_refund_notify(request: Request, session: SessionDep, gateway: GatewayDep) -> Response:
    async def act(headers: dict[str, str], body: bytes) -> str:
        return await payment_service.handle_refund_notification(session, gateway, headers, body)

    return await _handle(request, act, session)
