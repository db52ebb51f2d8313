from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.responses import HTMLResponse, Response

from app.auth.auth import AdminSubject, CurrentSubject, SessionDep
from app.donations import qrcodes
from app.donations.html import render
from app.donations.repository import DonationRepository
from app.donations.schemas import (
    DonationCreate,
    DonationCreated,
    DonationOut,
    DonationTargetOut,
    InvoiceRequestIn,
    InvoiceRequestOut,
    OfflineDonationIn,
    QRCodeFiles,
    QRCodeRequest,
    ReceiptOut,
    RefundDecision,
    RefundOut,
    RefundRequestIn,
)
from app.donations.service import donation_service
from app.exceptions import NotFound
from app.feed.schemas import MyDonationOut
from app.feed.service import feed_service
from app.kit import ratelimit
from app.kit.pagination import Page
from app.kit.ratelimit import rate_limit
from app.models.donation_refund import RefundStatus
from app.wechat.pay import WeChatPayGateway, wechatpay_dependency

router = APIRouter(tags=["donations"])

GatewayDep = Annotated[WeChatPayGateway, Depends(wechatpay_dependency)]
CodePath = Annotated[str, qrcodes.CODE_PATH]


@router.get(
    "/donation-targets",
    response_model=list[DonationTargetOut],
    summary="全部捐赠项目",
    dependencies=[Depends(rate_limit(ratelimit.PUBLIC_READ))],
)
async def list_targets(session: SessionDep) -> list[DonationTargetOut]:
    return await donation_service.list_targets(session)


@router.get(
    "/donation-targets/{code}",
    response_model=DonationTargetOut,
    summary="捐赠项目（扫码落地）",
    dependencies=[Depends(rate_limit(ratelimit.QR_SCAN))],
)
async def get_target(
    code: CodePath,
    session: SessionDep,
    scan: bool = Query(False, description="小程序扫码进入时传 true，计入扫码次数"),
) -> DonationTargetOut:
    return await donation_service.get_target(session, code, scan=scan)


@router.get("/donation-targets/{code}/qrcode.{fmt}", summary="捐赠二维码图片（PNG / SVG / 海报）")
async def target_qrcode(code: CodePath, fmt: str, session: SessionDep) -> Response:
    target = await DonationRepository(session).get_target(code)
    if target is None or fmt not in ("png", "svg"):
        raise NotFound("找不到这个捐赠项目，请重新扫码", code="DonationTargetNotFound")
    url = donation_service.target_url(code)
    if fmt == "svg":
        return Response(qrcodes.qr_svg(url), media_type="image/svg+xml")
    return Response(qrcodes.qr_png(url), media_type="image/png")


@router.post(
    "/donations",
    response_model=DonationCreated,
    status_code=status.HTTP_201_CREATED,
    summary="发起捐赠",
    dependencies=[Depends(rate_limit(ratelimit.DONATION_CREATE))],
)
async def create_donation(
    payload: DonationCreate,
    subject: CurrentSubject,
    session: SessionDep,
    gateway: GatewayDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> DonationCreated:
    """Places the WeChat Pay order; ``pay_params`` go straight into ``wx.requestPayment``. Retrying with the
    same Idempotency-Key returns the same donation and out_trade_no."""
    return await donation_service.create(session, gateway, subject, payload, idempotency_key)


@router.get("/donations/{donation_id}", response_model=DonationOut, summary="我的一笔捐赠")
async def get_donation(donation_id: uuid.UUID, subject: CurrentSubject, session: SessionDep) -> DonationOut:
    return await donation_service.get_for_donor(session, subject, donation_id)


@router.get("/me/donations", response_model=Page[MyDonationOut], summary="我的捐赠（含每笔的去向摘要）")
async def my_donations(
    subject: CurrentSubject,
    session: SessionDep,
    cursor: str | None = Query(None, max_length=200),
    limit: int = Query(20, ge=1, le=100),
) -> Page[MyDonationOut]:
    page = await donation_service.list_for_donor(session, subject, cursor, limit)
    return await feed_service.with_traces(session, page)


@router.get(
    "/donations/{donation_id}/receipt",
    response_model=ReceiptOut,
    summary="捐赠收据（JSON，或 format=html 打印版）",
    responses={200: {"content": {"text/html": {}}}},
)
async def receipt(
    donation_id: uuid.UUID,
    subject: CurrentSubject,
    session: SessionDep,
    format: str = Query("json", pattern="^(json|html)$"),
) -> ReceiptOut | HTMLResponse:
    out = await donation_service.receipt(session, subject, donation_id)
    if format == "html":
        return HTMLResponse(render("receipt.html", receipt=out))
    return out


@router.post(
    "/donations/{donation_id}/receipt/invoice-request",
    response_model=InvoiceRequestOut,
    status_code=status.HTTP_201_CREATED,
    summary="申请公益事业捐赠票据",
)
async def request_invoice(
    donation_id: uuid.UUID, payload: InvoiceRequestIn, subject: CurrentSubject, session: SessionDep
) -> InvoiceRequestOut:
    return await donation_service.request_invoice(session, subject, donation_id, payload)


@router.post(
    "/donations/{donation_id}/refund-requests",
    response_model=RefundOut,
    status_code=status.HTTP_201_CREATED,
    summary="申请退款（仅限尚未用于长者用餐的部分）",
    dependencies=[Depends(rate_limit(ratelimit.REFUND_REQUEST))],
)
async def request_refund(
    donation_id: uuid.UUID, payload: RefundRequestIn, subject: CurrentSubject, session: SessionDep
) -> RefundOut:
    return await donation_service.request_refund(session, subject, donation_id, payload)


@router.get(
    "/donations/{donation_id}/refund-requests",
    response_model=list[RefundOut],
    summary="这笔捐赠的退款申请（进度、未成功的原因）",
)
async def donation_refunds(
    donation_id: uuid.UUID, subject: CurrentSubject, session: SessionDep
) -> list[RefundOut]:
    return await donation_service.refunds_for_donor(session, subject, donation_id)


@router.get(
    "/admin/refund-requests", response_model=Page[RefundOut], summary="退款申请（待审批、处理中、未成功……）"
)
async def list_refunds(
    subject: AdminSubject,
    session: SessionDep,
    status_filter: RefundStatus | None = Query(None, alias="status", description="只看这个状态的申请"),
    cursor: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=200),
) -> Page[RefundOut]:
    return await donation_service.list_refunds(session, status=status_filter, cursor=cursor, limit=limit)


@router.post("/admin/refund-requests/{refund_id}/approve", response_model=RefundOut, summary="批准退款")
async def approve_refund(
    refund_id: uuid.UUID,
    subject: AdminSubject,
    session: SessionDep,
    payload: RefundDecision | None = None,
) -> RefundOut:
    """Reserves the refund and answers ``processing``; WeChat Pay is asked by a job right after (a refusal
    shows as ``failed`` with ``failure_reason``). A bank-transfer donation's refund is recorded as made."""
    return await donation_service.approve_refund(session, subject, refund_id, payload.note if payload else "")


@router.post("/admin/refund-requests/{refund_id}/reject", response_model=RefundOut, summary="驳回退款")
async def reject_refund(
    refund_id: uuid.UUID, subject: AdminSubject, session: SessionDep, payload: RefundDecision | None = None
) -> RefundOut:
    return await donation_service.reject_refund(session, subject, refund_id, payload.note if payload else "")


@router.post(
    "/admin/donations/offline",
    response_model=DonationOut,
    status_code=status.HTTP_201_CREATED,
    summary="登记银行转账捐赠",
)
async def record_offline(
    payload: OfflineDonationIn, subject: AdminSubject, session: SessionDep
) -> DonationOut:
    return await donation_service.record_offline(session, subject, payload)


@router.post(
    "/admin/donation-targets/qrcodes", response_model=list[QRCodeFiles], summary="生成捐赠二维码和海报"
)
async def generate_qrcodes(
    subject: AdminSubject, session: SessionDep, payload: QRCodeRequest | None = None
) -> list[QRCodeFiles]:
    return await qrcodes.generate_for_targets(session, payload.codes if payload else None)


# ---------------------------------------------------------------- public HTML (no /api/v1 prefix)

pages = APIRouter(include_in_schema=False)


@pages.get("/q/{code}", response_class=HTMLResponse, dependencies=[Depends(rate_limit(ratelimit.QR_SCAN))])
async def landing_page(code: CodePath, request: Request, session: SessionDep) -> HTMLResponse:
    """What a scanner outside WeChat sees when it opens the QR code's URL."""
    try:
        target = await donation_service.get_target(session, code, scan=True)
    except NotFound:
        return HTMLResponse(render("landing_missing.html", code=code), status_code=404)
    return HTMLResponse(render("landing.html", target=target))
