from __future__ import annotations

import json
import logging
from collections.abc import Iterator

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


@pytest.fixture
def info_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    configure_logging("INFO")
    monkeypatch.setattr(logging.getLogger("tests.flush_probe"), "level", logging.INFO)
    yield
    configure_logging(get_settings().LOG_LEVEL)


class _CountingStdout:
    def __init__(self) -> None:
        self.text = ""
        self.flushed = ""
        self.flushes = 0

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        self.flushes += 1
        self.flushed = self.text


async def test_info_lines_of_one_loop_turn_go_out_together_and_warnings_at_once(
    monkeypatch: pytest.MonkeyPatch, info_lines: None
) -> None:
    import asyncio
    import sys

    out = _CountingStdout()
    monkeypatch.setattr(sys, "stdout", out)
    log = structlog.get_logger("tests.flush_probe")
    for n in range(20):
        log.info("request_probe", n=n)
    assert out.flushes == 0 and out.text.count("request_probe") == 20  # written, not yet flushed
    await asyncio.sleep(0)  # the loop's next turn
    await asyncio.sleep(0)
    assert out.flushes == 1 and out.flushed.count("request_probe") == 20
    log.warning("trouble_probe")
    assert out.flushes == 2 and "trouble_probe" in out.flushed  # out before anything else happens


def test_info_lines_outside_a_loop_are_flushed_at_once(
    monkeypatch: pytest.MonkeyPatch, info_lines: None
) -> None:
    import sys

    out = _CountingStdout()
    monkeypatch.setattr(sys, "stdout", out)
    structlog.get_logger("tests.flush_probe").info("cli_probe")
    assert out.flushes == 1 and "cli_probe" in out.flushed
