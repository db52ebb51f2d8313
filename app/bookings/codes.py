"""Serve codes (6 digits, unique per canteen and date) and the signed QR payload on a booking."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass

from app.config import get_settings

_QR = re.compile(r"^SY1\.([0-9a-f]{32})\.([0-9a-f]{32})$")
CODE_RE = re.compile(r"^\d{6}$")


def new_serve_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def _key() -> bytes:
    return hashlib.sha256(("booking-qr:" + get_settings().SECRET_KEY).encode()).digest()


def _sig(booking_id: uuid.UUID) -> str:
    return hmac.new(_key(), f"serve:{booking_id.hex}".encode(), hashlib.sha256).hexdigest()[:32]


def qr_payload(booking_id: uuid.UUID) -> str:
    return f"SY1.{booking_id.hex}.{_sig(booking_id)}"


@dataclass(frozen=True)
class ParsedCode:
    serve_code: str | None = None
    booking_id: uuid.UUID | None = None


class BadCode(ValueError):
    pass


def parse(code: str) -> ParsedCode:
    code = code.strip()
    if CODE_RE.match(code):
        return ParsedCode(serve_code=code)
    match = _QR.match(code)
    if not match:
        raise BadCode("取餐码格式不对")
    booking_id = uuid.UUID(hex=match.group(1))
    if not hmac.compare_digest(match.group(2), _sig(booking_id)):
        raise BadCode("二维码无效或被篡改")
    return ParsedCode(booking_id=booking_id)
