"""Make /openapi.json tell the truth about errors: every error body is ``{"error", "message", "detail"}``
(app/errors.py), including 422, which FastAPI would otherwise document as its own ``HTTPValidationError``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_BODY: dict[str, Any] = {
    "title": "ErrorBody",
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "title": "Error", "description": "机器可读的错误代码"},
        "message": {"type": "string", "title": "Message", "description": "给用户看的中文说明"},
        "detail": {"title": "Detail", "description": "详情（校验错误时为逐项列表）"},
    },
}


def document_errors(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        schemas = schema.get("components", {}).get("schemas", {})
        if "HTTPValidationError" in schemas:
            schemas["HTTPValidationError"] = ERROR_BODY
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
