"""Admin API for reconciliation: run a bill date (download or upload), read a run, resolve a discrepancy."""

from __future__ import annotations

import re
import uuid
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from app.auth.auth import AdminSubject, SessionDep
from app.auth.subject import Subject
from app.exceptions import Unprocessable
from app.reconciliation.schemas import DiscrepancyOut, ResolveIn, RunDetailOut, RunOut, RunRequest
from app.reconciliation.service import Actor, reconciliation_service
from app.wechat.pay import WeChatPayGateway, wechatpay_dependency

router = APIRouter(prefix="/admin/reconciliation", tags=["reconciliation"])

GatewayDep = Annotated[WeChatPayGateway, Depends(wechatpay_dependency)]
_SHA1 = re.compile(r"^[0-9a-fA-F]{40}$")

_RUN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": RunRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "交易账单（CSV 或 gzip）",
                        },
                        "bill_date": {"type": "string", "format": "date"},
                        "sha1": {"type": "string", "description": "解压后文件的 SHA1（可选）"},
                    },
                }
            },
        },
    }
}


def _actor(subject: Subject) -> Actor:
    return Actor(user_id=subject.user_id, label=subject.label, channel="self")


def _invalid(field: str, message: str) -> Unprocessable:
    return Unprocessable(message, code="ValidationError", detail=[{"loc": ["body", field], "msg": message}])


@router.post(
    "/runs",
    response_model=RunOut,
    summary="对账：下载某日微信支付交易账单（JSON {bill_date}）或上传账单文件（multipart）",
    openapi_extra=_RUN_BODY,
)
async def create_run(
    request: Request, session: SessionDep, admin: AdminSubject, gateway: GatewayDep
) -> RunOut:
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _invalid("file", "请上传账单文件（字段名 file）")
        bill_date = None
        raw_date = form.get("bill_date")
        if isinstance(raw_date, str) and raw_date.strip():
            try:
                bill_date = date.fromisoformat(raw_date.strip())
            except ValueError as exc:
                raise _invalid("bill_date", "账单日期格式不对，请按 2026-03-05 这样填写") from exc
        sha1 = form.get("sha1")
        expected = None
        if isinstance(sha1, str) and sha1.strip():
            if not _SHA1.match(sha1.strip()):
                raise _invalid("sha1", "SHA1 校验值应为 40 位十六进制")
            expected = sha1.strip()
        return await reconciliation_service.run(
            session,
            upload.file,
            bill_date=bill_date,
            source="upload",
            actor=_actor(admin),
            expected_sha1=expected,
        )
    try:
        payload = RunRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc
    return await reconciliation_service.run_from_api(session, gateway, payload.bill_date, _actor(admin))


@router.get("/runs", response_model=list[RunOut], summary="最近的对账（按账单日期倒序）")
async def list_runs(
    session: SessionDep, admin: AdminSubject, limit: Annotated[int, Query(ge=1, le=200)] = 60
) -> list[RunOut]:
    return await reconciliation_service.list_runs(session, limit)


@router.get("/runs/{run_id}", response_model=RunDetailOut, summary="一次对账的汇总与差异列表")
async def get_run(
    run_id: uuid.UUID,
    session: SessionDep,
    admin: AdminSubject,
    status: Literal["open", "resolved"] | None = None,
    kind: Literal["amount_mismatch", "missing_in_ledger", "missing_in_bill", "status_mismatch"] | None = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> RunDetailOut:
    return await reconciliation_service.get_run(
        session, run_id, status=status, kind=kind, cursor=cursor, limit=limit
    )


@router.post(
    "/discrepancies/{discrepancy_id}/resolve",
    response_model=DiscrepancyOut,
    summary="处理对账差异：写备注、记更正分录，或向微信支付查询后修复",
)
async def resolve_discrepancy(
    discrepancy_id: uuid.UUID,
    payload: ResolveIn,
    session: SessionDep,
    admin: AdminSubject,
    gateway: GatewayDep,
) -> DiscrepancyOut:
    return await reconciliation_service.resolve(session, gateway, discrepancy_id, payload, _actor(admin))
