from __future__ import annotations

import pytest

from app.kit.crypto import (
    PIIDecryptError,
    decrypt_pii,
    encrypt_pii,
    mask_address,
    mask_id_number,
    mask_name,
    mask_phone,
    pii_lookup_hash,
)
from app.kit.money import fen_to_yuan_text, yuan_text_to_fen


def test_pii_round_trip_and_context_binding() -> None:
    blob = encrypt_pii("371402195001011234", context="elder.id_number")
    assert b"371402" not in blob
    assert decrypt_pii(blob, context="elder.id_number") == "371402195001011234"
    with pytest.raises(PIIDecryptError):
        decrypt_pii(blob, context="user.phone")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(PIIDecryptError):
        decrypt_pii(tampered, context="elder.id_number")
    # randomized: the same value encrypts differently, but looks up the same
    assert encrypt_pii("x", context="c") != encrypt_pii("x", context="c")
    assert pii_lookup_hash("37140219500101123x", context="c") == pii_lookup_hash(
        "37140219500101123X ", context="c"
    )
    assert pii_lookup_hash("a", context="c1") != pii_lookup_hash("a", context="c2")


def test_masks() -> None:
    assert mask_id_number("371402195001011234") == "3714**********1234"
    assert mask_phone("13800000000") == "138****0000"
    assert mask_name("王小明") == "王**"
    assert mask_name("王") == "王"
    assert mask_address("德州市德城区新湖街道10号") == "德州市德城区****"


@pytest.mark.parametrize(("fen", "text"), [(0, "0.00"), (5, "0.05"), (1200, "12.00"), (-305, "-3.05")])
def test_fen_text(fen: int, text: str) -> None:
    assert fen_to_yuan_text(fen) == text
    assert yuan_text_to_fen(text) == fen


@pytest.mark.parametrize("bad", ["1.234", "abc", "NaN", "Infinity", ""])
def test_yuan_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        yuan_text_to_fen(bad)
