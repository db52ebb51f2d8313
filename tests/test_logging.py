from __future__ import annotations

import json
import logging

import pytest
import structlog

from app.config import get_settings
from app.logging import configure_logging, scrub_processor, scrub_text


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


def test_cheap_precheck_still_catches_every_shape() -> None:
    # the scrubbers only run on strings with eleven digits in a row or the word "bearer", in any case
    for raw, hidden in [
        ("电话13812345678。", "13812345678"),
        ("身份证37140219500101123x", "37140219500101123x"),
        ("authorization: BeArEr abc.def", "abc.def"),
    ]:
        assert hidden not in scrub_text(raw)
    plain = "GET /api/v1/feed?limit=20 1234567890"
    assert scrub_text(plain) is plain


def test_own_loggers_follow_the_stdlib_level_of_their_name(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING")
    log = structlog.get_logger("tests.level_probe")
    log.info("hidden_probe")
    logging.getLogger("tests.level_probe").setLevel(logging.INFO)
    try:
        log.info("shown_probe", phone="13812345678")
    finally:
        logging.getLogger("tests.level_probe").setLevel(logging.NOTSET)
        configure_logging(get_settings().LOG_LEVEL)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "hidden_probe" not in events and "shown_probe" in events
    shown = next(line for line in lines if line["event"] == "shown_probe")
    assert shown["phone"] == "138****5678" and shown["logger"] == "tests.level_probe"
    assert shown["level"] == "info" and shown["timestamp"].endswith("Z")
