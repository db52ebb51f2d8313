"""One error hierarchy. Every error the API returns has the shape
``{"error": "<Code>", "message": "<中文>", "detail": ...}``.

Business outcomes are 401/403/404/409/429; 422 is only for payloads that do not parse or validate.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SangyuError(Exception):
    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "BadRequest"
    default_message: ClassVar[str] = "请求有误"

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: Any = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.detail = detail
        self.error_code = code or self.code
        self.headers = headers
        super().__init__(self.message)

    def to_body(self) -> dict[str, Any]:
        return {"error": self.error_code, "message": self.message, "detail": self.detail}


class BadRequest(SangyuError):
    status_code = 400
    code = "BadRequest"
    default_message = "请求有误"


class Unauthorized(SangyuError):
    status_code = 401
    code = "Unauthorized"
    default_message = "请先登录"


class Forbidden(SangyuError):
    status_code = 403
    code = "Forbidden"
    default_message = "您没有权限进行此操作"


class NotFound(SangyuError):
    status_code = 404
    code = "NotFound"
    default_message = "找不到您要的内容"


class Conflict(SangyuError):
    status_code = 409
    code = "Conflict"
    default_message = "操作与当前状态冲突，请刷新后再试"


class Unprocessable(SangyuError):
    status_code = 422
    code = "ValidationError"
    default_message = "填写的内容有误，请检查后再试"


class TooManyRequests(SangyuError):
    status_code = 429
    code = "TooManyRequests"
    default_message = "操作太频繁，请稍后再试"


class ServiceUnavailable(SangyuError):
    status_code = 503
    code = "ServiceUnavailable"
    default_message = "服务暂时不可用，请稍后再试"


class WeChatUnavailable(ServiceUnavailable):
    code = "WeChatUnavailable"
    default_message = "暂时连不上微信，请稍后再试"
