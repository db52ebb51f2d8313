"""Keyset pagination with opaque cursors: stable while new rows arrive (no OFFSET)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from app.exceptions import BadRequest

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(values: dict[str, Any]) -> str:
    raw = json.dumps(values, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def invalid_cursor() -> BadRequest:
    return BadRequest("分页参数 cursor 无效，请从第一页重新加载", code="InvalidCursor")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid_cursor() from exc
    if not isinstance(value, dict):
        raise invalid_cursor()
    return value


K = TypeVar("K")


def decode_cursor_as(cursor: str | None, parse: Callable[[dict[str, Any]], K]) -> K | None:
    """Decode a cursor and turn it into a keyset position with ``parse``; a cursor that is missing a field or
    holds a value of the wrong kind is refused with the same 400 as a garbled one."""
    raw = decode_cursor(cursor)
    if raw is None:
        return None
    try:
        return parse(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise invalid_cursor() from exc
