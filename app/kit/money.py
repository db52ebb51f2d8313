"""Money is integer fen everywhere; yuan only as text for people."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation


def fen_to_yuan_text(fen: int) -> str:
    """12345 → '123.45'; -5 → '-0.05'."""
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def format_yuan(fen: int) -> str:
    return "¥" + fen_to_yuan_text(fen)


def yuan_text_to_fen(text: str) -> int:
    """Exact parse of a yuan amount with at most two decimals ('3.00' → 300). Raises ValueError otherwise."""
    cleaned = text.strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation as exc:
        raise ValueError(f"not an amount: {text!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not an amount: {text!r}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise ValueError(f"more than two decimals: {text!r}")
    return int(value * 100)
