"""Exception handlers: every error leaves as ``{"error", "message" (中文), "detail"}``."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.exceptions import SangyuError
from app.kit.context import request_id_var

log = structlog.get_logger("app.errors")

_PYDANTIC_MESSAGES = {
    "missing": "必须填写",
    "string_too_short": "太短了",
    "string_too_long": "太长了",
    "string_pattern_mismatch": "格式不对",
    "string_type": "应该是文字",
    "int_type": "应该是整数",
    "int_parsing": "应该是整数",
    "int_from_float": "应该是整数",
    "float_type": "应该是数字",
    "float_parsing": "应该是数字",
    "bool_type": "应该是是/否",
    "bool_parsing": "应该是是/否",
    "greater_than": "数值太小",
    "greater_than_equal": "数值太小",
    "less_than": "数值太大",
    "less_than_equal": "数值太大",
    "enum": "不是可选的值",
    "literal_error": "不是可选的值",
    "uuid_type": "编号格式不对",
    "uuid_parsing": "编号格式不对",
    "date_type": "日期格式不对",
    "date_parsing": "日期格式不对",
    "date_from_datetime_parsing": "日期格式不对",
    "datetime_type": "时间格式不对",
    "datetime_parsing": "时间格式不对",
    "json_invalid": "不是有效的 JSON",
    "model_attributes_type": "格式不对",
    "dict_type": "格式不对",
    "list_type": "应该是列表",
    "too_short": "数量太少",
    "too_long": "数量太多",
    "extra_forbidden": "不认识这个字段",
    "value_error": "内容不对",
    "assertion_error": "内容不对",
}
_LOC_NAMES = {"body": "请求内容", "query": "查询参数", "path": "路径", "header": "请求头"}


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in _LOC_NAMES]
    return ".".join(parts) or _LOC_NAMES.get(str(loc[0]) if loc else "", "请求内容")


def validation_detail(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        ctx_msg = ""
        if err.get("type") == "value_error" and err.get("ctx", {}).get("error"):
            ctx_msg = str(err["ctx"]["error"])
        message = ctx_msg or _PYDANTIC_MESSAGES.get(str(err.get("type")), "内容不对")
        out.append({"field": _field(loc), "loc": list(loc), "type": err.get("type"), "message": message})
    return out


def _body(error: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": error, "message": message, "detail": detail}


async def sangyu_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SangyuError)
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = validation_detail(list(exc.errors()))
    first = detail[0] if detail else {"field": "请求内容", "message": "格式不对"}
    message = f"填写的内容有误：{first['field']} {first['message']}"
    return JSONResponse(_body("ValidationError", message, detail), status_code=422)


_HTTP_MESSAGES = {
    400: ("BadRequest", "请求有误"),
    401: ("Unauthorized", "请先登录"),
    403: ("Forbidden", "您没有权限进行此操作"),
    404: ("NotFound", "找不到您要的内容"),
    405: ("MethodNotAllowed", "不支持这种请求方式"),
    413: ("PayloadTooLarge", "提交的内容太大了"),
    415: ("UnsupportedMediaType", "不支持这种内容格式"),
}


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, message = _HTTP_MESSAGES.get(exc.status_code, ("HTTPError", "请求未能完成"))
    return JSONResponse(
        _body(code, message), status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


def is_unavailable(exc: BaseException) -> bool:
    """A database or network failure (answered 503), not a fault of the request."""
    if isinstance(exc, OperationalError | ConnectionError | TimeoutError | OSError | PoolTimeout):
        return True  # PoolTimeout: every connection of the process stayed busy for DATABASE_POOL_TIMEOUT
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    name = type(exc).__name__
    return name in {"CannotConnectNowError", "ConnectionDoesNotExistError", "InterfaceError"}


# Text PostgreSQL cannot store (a NUL character, say) is bad input, whatever field it came in.
_BAD_TEXT_ERRORS = {"CharacterNotInRepertoireError", "UntranslatableCharacterError"}


def _is_bad_text(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if type(seen).__name__ in _BAD_TEXT_ERRORS:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    request_id = request_id_var.get()
    if _is_bad_text(exc):
        return JSONResponse(
            _body("InvalidCharacters", "填写的内容里有无法识别的字符（例如空字符），请删掉后再试"),
            status_code=422,
        )
    if is_unavailable(exc):
        log.warning("dependency_unavailable", error=type(exc).__name__)
        return JSONResponse(
            _body("ServiceUnavailable", "服务暂时不可用，请稍后再试", {"request_id": request_id}),
            status_code=503,
            headers={"Retry-After": "5"},
        )
    log.exception("unhandled_error", error=type(exc).__name__)
    return JSONResponse(
        _body("InternalError", "系统出了点问题，请稍后再试", {"request_id": request_id}), status_code=500
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SangyuError, sangyu_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    # Database / network failures are answered here, inside the app, instead of by the outermost
    # ServerErrorMiddleware, which re-raises after answering and makes uvicorn drop the keep-alive connection
    # (clients then saw connection resets during a PostgreSQL restart; see docs/reliability.md).
    import asyncpg

    for unavailable in (
        DBAPIError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        ConnectionError,
        TimeoutError,
        OSError,
    ):
        app.add_exception_handler(unavailable, unhandled_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
