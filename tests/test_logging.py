from __future__ import annotations

from app.logging import scrub_processor, scrub_text


def test_scrubs_id_numbers_phones_and_tokens() -> None:
    text = scrub_text("id 37140219500101123X phone 13812345678 auth Bearer abc.def-ghi")
    assert "37140219500101123X" not in text and "371402********123X" in text
    assert "13812345678" not in text and "138****5678" in text
    assert "abc.def-ghi" not in text


def test_scrubs_secret_fields_in_events() -> None:
    event = scrub_processor(
        None, "info", {"event": "x", "access_token": "t0k3n", "nested": {"password": "p"}}
    )
    assert event["access_token"] == "[redacted]"
    assert event["nested"]["password"] == "[redacted]"
