from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.config import get_settings
from app.logging import (
    _MAYBE_SENSITIVE,
    _MAYBE_SENSITIVE_ANY_RUN,
    _SCRUBBERS,
    _may_be_sensitive,
    configure_logging,
    render_json,
    scrub_processor,
    scrub_text,
    timestamp_processor,
)


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
    # the scrubbers only run on strings with a run of exactly eleven digits, of exactly seventeen and a digit or
    # an X, or the word "bearer", in any case
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


_PIECES = st.sampled_from(
    ["1", "9", "13812345678", "371402195001011", "23X", "x", "Bearer ", "bEaReR", "bear", "er", "-", " ", "a"]
)
_TEXTS = st.one_of(st.text(), st.lists(_PIECES | st.text(max_size=3)).map("".join))


_RUNS = [
    "13812345678",  # 11: a phone number's
    "1381234567",  # 10
    "138123456789",  # 12
    "37140219500101123X",  # 17 and an X: an ID number's
    "37140219500101123x",
    "37140219500101123X5",  # 17, an X, a digit
    "371402195001011234",  # 18
    "3714021950010112345",  # 19
    "4200002026113012345678901234",  # 28: a WeChat Pay transaction id
]


@settings(max_examples=300, deadline=None)
@given(_TEXTS)
@example("")
@example("tx " + " id ".join(_RUNS) + " end")
def test_fast_precheck_agrees_with_the_pattern(text: str) -> None:
    """The byte-level check for ASCII text answers exactly as the regular expression it stands in for."""
    assert _may_be_sensitive(text) == (_MAYBE_SENSITIVE.search(text) is not None)
    assert _may_be_sensitive(text, exact_runs=False) == (_MAYBE_SENSITIVE_ANY_RUN.search(text) is not None)


@settings(max_examples=500, deadline=None)
@given(_TEXTS)
def test_the_precheck_passes_everything_a_scrubber_would_change(text: str) -> None:
    if any(pattern.search(text) for pattern, _ in _SCRUBBERS):
        assert _may_be_sensitive(text)
        assert _may_be_sensitive(text, exact_runs=False)


@pytest.mark.parametrize("run", _RUNS)
@pytest.mark.parametrize("around", ["{}", "a{}b", "-{}-", "电话{}。"])
def test_each_length_of_run_is_judged_as_the_pattern_judges_it(run: str, around: str) -> None:
    text = around.format(run)
    assert _may_be_sensitive(text) == (_MAYBE_SENSITIVE.search(text) is not None)
    assert _may_be_sensitive(text) == (len(run) in (11, 18) or run[-1] in "Xx")


def test_a_payment_line_with_its_long_transaction_id_is_not_scrubbed() -> None:
    """A WeChat Pay transaction id is 28 digits: no phone or ID number, so the line is written as it is, once."""
    event = {"event": "donation_paid", "transaction_id": "4200002026113012345678901234", "amount_fen": 1000}
    line = render_json(None, "info", dict(event))
    assert json.loads(line) == event and not _may_be_sensitive(line)
    assert _may_be_sensitive("phone 13812345678 tx 4200002026113012345678901234")  # one of each: scrubbed


def test_a_control_character_next_to_a_phone_number_does_not_hide_it() -> None:
    """JSON writes the control character as \\u0001, whose digits run on into the phone number's: the line is
    searched for eleven digits in a row whatever their run, and the value itself is scrubbed."""
    for value, scrubbed in [("\x0113812345678", "\x01138****5678"), ("\x1f13812345678", "\x1f138****5678")]:
        line = render_json(None, "info", {"event": "x", "note": value})
        assert "13812345678" not in line
        assert json.loads(line)["note"] == scrubbed


def test_json_lines_are_scrubbed_when_something_shows_and_untouched_otherwise() -> None:
    plain = {"event": "request", "path": "/api/v1/feed", "status": 200, "duration_ms": 1.5}
    assert json.loads(render_json(None, "info", dict(plain))) == plain
    line = json.loads(
        render_json(
            None,
            "info",
            {
                "event": "x",
                "note": "电话13812345678",
                "nested": {"who": ["Bearer abc.def"], "Password": "p"},
                "Token": "t0k3n",
                "count": 12345678901,  # a number is not text: written as it is
            },
        )
    )
    assert line["note"] == "电话138****5678"
    assert line["nested"] == {"who": ["Bearer [redacted]"], "Password": "[redacted]"}
    assert line["Token"] == "[redacted]" and line["count"] == 12345678901
    # digits of other scripts: an ID number typed in full-width digits
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in "37140219500101123") + "X"
    assert full_width not in render_json(None, "info", {"event": "x", "id": full_width})


def test_timestamps_are_utc_iso_with_microseconds() -> None:
    before = datetime.now(UTC)
    stamp = timestamp_processor(None, "info", {})["timestamp"]
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before - timedelta(microseconds=1) <= at <= after


def test_each_timestamp_names_its_own_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """The text of the second is cached, but a line stamped with an earlier time (another thread's, read just
    before the second turned) still gets its own second."""
    import app.logging as app_logging

    times = iter([1_000_000_000.5, 999_999_999.25, 1_000_000_000.75, 1_000_000_001.0])
    monkeypatch.setattr(app_logging.time, "time", lambda: next(times))
    stamps = [timestamp_processor(None, "info", {})["timestamp"] for _ in range(4)]
    assert stamps == [
        "2001-09-09T01:46:40.500000Z",
        "2001-09-09T01:46:39.250000Z",
        "2001-09-09T01:46:40.750000Z",
        "2001-09-09T01:46:41.000000Z",
    ]


def test_lines_orjson_refuses_are_written_by_json_and_still_scrubbed() -> None:
    """A key that is not a string, or an integer beyond 64 bits, is written by the standard library instead;
    the line reads back the same and a phone number in it is still scrubbed."""
    big = 2**70
    line = render_json(None, "info", {"event": "x", "big": big, "note": "电话13812345678"})
    assert json.loads(line) == {"event": "x", "big": big, "note": "电话138****5678"}
    line = render_json(None, "info", {"event": "x", "by_day": {1: "13812345678"}})
    assert json.loads(line) == {"event": "x", "by_day": {"1": "138****5678"}}


def test_values_without_a_json_type_read_as_before() -> None:
    """Dates, times and other objects are written as their repr (structlog's fallback), on the fast path and on
    the scrubbing path alike; a UUID as its text."""
    import uuid

    at = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    ident = uuid.UUID(int=5)
    for note in ("plain", "电话13812345678"):
        line = json.loads(render_json(None, "info", {"event": "x", "at": at, "id": ident, "note": note}))
        assert line["at"] == repr(at)
        assert line["id"] == str(ident)
    marked = type("Marked", (), {"__structlog__": lambda self: "marked"})()
    assert json.loads(render_json(None, "info", {"event": "x", "v": marked}))["v"] == "marked"
