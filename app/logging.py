"""JSON logs through structlog, one line each on stdout; stdlib loggers (uvicorn, sqlalchemy, dramatiq) go through the
same processors and renderer.
Every line carries the request id (or job name) bound in contextvars. Known PII shapes are scrubbed."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

import orjson
import structlog

_SCRUBBERS = [
    # 18-digit resident ID numbers (last char may be X)
    (re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{8}(\d{3}[\dXx])(?![0-9A-Za-z])"), r"\1********\2"),
    # mainland mobile numbers
    (re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)"), r"\1****\2"),
    # bearer tokens
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
]
# Every pattern above needs a run of exactly eleven digits, of exactly seventeen followed by a digit or an X, or
# the word "bearer": most strings have none. A longer run, such as a WeChat Pay transaction id (28 digits, on
# every payment's log line), matches no pattern and sends no line through the scrubbers.
_MAYBE_SENSITIVE = re.compile(r"(?<!\d)(?:\d{11}|\d{17}[\dXx])(?!\d)|[Bb][Ee][Aa][Rr][Ee][Rr]")
# eleven digits in a row, whatever the length of their run: for text whose runs may not be its strings' own
_MAYBE_SENSITIVE_ANY_RUN = re.compile(r"\d{11}|[Bb][Ee][Aa][Rr][Ee][Rr]")
_ASCII_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0000000000")
_ELEVEN_ZEROS_OR_MORE = re.compile(rb"0{11,}")


def _has_sensitive_run(zeros: bytes) -> bool:
    """``_MAYBE_SENSITIVE``'s runs of digits in ASCII text whose digits have all been turned into zeros (a
    regular expression with look-arounds costs several times more on a line with a long run)."""
    for run in _ELEVEN_ZEROS_OR_MORE.finditer(zeros):
        end = run.end()
        length = end - run.start()
        if length in (11, 18):
            return True
        if length == 17 and zeros[end : end + 1] in (b"X", b"x") and zeros[end + 1 : end + 2] != b"0":
            return True
    return False


_SECRET_KEYS = {"authorization", "token", "access_token", "secret", "password", "session_key", "api_key"}


def _may_be_sensitive(text: str, *, exact_runs: bool = True) -> bool:
    """``_MAYBE_SENSITIVE`` found in ``text`` (``_MAYBE_SENSITIVE_ANY_RUN`` if not ``exact_runs``). For ASCII
    text (the usual line) the same answer comes from byte operations, several times faster than the regular
    expression, which then only looks at the runs of a text that has eleven digits in a row; other text may
    hold digits of other scripts, such as full-width ones, which only the expression's ``\\d`` knows."""
    if text.isascii():
        zeros = text.encode("ascii").translate(_ASCII_DIGITS_AS_ZERO)
        if b"00000000000" in zeros and (not exact_runs or _has_sensitive_run(zeros)):
            return True
        return "bearer" in text.lower()
    pattern = _MAYBE_SENSITIVE if exact_runs else _MAYBE_SENSITIVE_ANY_RUN
    return pattern.search(text) is not None


def scrub_text(text: str) -> str:
    if not _may_be_sensitive(text):
        return text
    for pattern, repl in _SCRUBBERS:
        text = pattern.sub(repl, text)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: ("[redacted]" if _is_secret_key(k) else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _is_secret_key(key: Any) -> bool:
    return str(key).lower() in _SECRET_KEYS


# keys seen and not secret: a line whose keys are all here (nearly every line) skips the per-key check
_safe_keys: set[Any] = set()


def _redact_secret_keys(event_dict: dict[str, Any]) -> None:
    if _safe_keys.issuperset(event_dict):
        return
    for key in event_dict:
        if _is_secret_key(key):
            event_dict[key] = "[redacted]"
        elif len(_safe_keys) < 10_000:  # keys are names written in code; the bound stops odd ones piling up
            _safe_keys.add(key)


def scrub_processor(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Secret keys redacted, strings scrubbed, containers scrubbed through; in place (a line's dict is its own)."""
    _redact_secret_keys(event_dict)
    for key, value in event_dict.items():
        if isinstance(value, str):
            if _may_be_sensitive(value):
                event_dict[key] = scrub_text(value)
        elif isinstance(value, dict | list | tuple):
            event_dict[key] = _scrub(value)
    return event_dict


# (second, its date and time as text), replaced as one value so that threads logging at once never pair a second
# with another second's text
_second_text: tuple[int, str] = (-1, "")


def timestamp_processor(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """UTC time in ISO 8601 with microseconds and ``Z``, as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes
    it, with the date and time of the second formatted once per second rather than on every line."""
    global _second_text
    now = time.time()
    second = int(now)
    cached = _second_text
    if cached[0] != second:
        cached = _second_text = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    event_dict["timestamp"] = f"{cached[1]}.{int((now - second) * 1_000_000):06d}Z"
    return event_dict


def _json_fallback(value: Any) -> Any:
    """What structlog's JSON renderer does with a value JSON has no type for."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


# built once: ``json.dumps`` with options builds a new encoder for every line
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=_json_fallback)
# orjson writes dates, times and dataclasses its own way; through ``_json_fallback`` they read as they always did
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _encode(event_dict: dict[str, Any]) -> str:
    """The line's JSON, by orjson (about a tenth of ``_ENCODER``'s time for an access line). Beside ``_ENCODER``'s
    output it has no spaces after separators, writes a UUID as its text and an ``Enum`` member as its value, and
    NaN or an infinity as ``null``; whatever orjson refuses (a key that is not a string, an integer beyond 64
    bits, text that is not valid Unicode) goes to ``_ENCODER``."""
    try:
        return orjson.dumps(event_dict, default=_json_fallback, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _ENCODER.encode(event_dict)


def render_json(_: Any, __: str, event_dict: dict[str, Any]) -> str:
    """``scrub_processor`` and JSON in one step, cheaply for a line with nothing to scrub. Every scrubber needs a
    run of digits of a certain length or the word "bearer", and a JSON line holds its strings' digits and letters
    exactly as they are, so the whole line is searched once; only a line where that finds something has its
    strings scrubbed one by one and is written again. A ``\\u00XX`` escape (a control character) writes digits
    next to a string's own and changes the length of their run: a line with one is searched for eleven digits
    in a row, whatever their run."""
    _redact_secret_keys(event_dict)
    line = _encode(event_dict)
    if not _may_be_sensitive(line, exact_runs="\\u" not in line):
        return line
    return _encode(scrub_processor(_, __, event_dict))


class _Stdout:
    """Whatever ``sys.stdout`` is at the moment of writing (so a redirect or a test's capture sees every line)."""

    def write(self, text: str) -> int:
        out = sys.stdout
        written = out.write(text)
        out.flush()  # as the stdlib's StreamHandler does: a line is out before anything else happens
        return written

    def flush(self) -> None:
        sys.stdout.flush()


STDOUT = _Stdout()


class JsonLineLogger:
    """Where structlog's own loggers end: the rendered line goes straight to stdout, without a stdlib
    ``LogRecord`` and formatter (about half of a line's cost). The stdlib logger of the same name still decides the
    level (``filter_by_level`` reads it), so ``setLevel`` and the root level apply as before."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._std = logging.getLogger(name)

    @property
    def disabled(self) -> bool:
        return self._std.disabled

    def getEffectiveLevel(self) -> int:  # the stdlib's name: filter_by_level reads it
        return self._std.getEffectiveLevel()

    def msg(self, line: str) -> None:
        STDOUT.write(line + "\n")

    debug = info = warning = error = critical = exception = msg


def _logger_factory(*args: Any) -> JsonLineLogger:
    return JsonLineLogger(args[0] if args else "root")


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamp_processor,
        structlog.processors.format_exc_info,
    ]
    renderer: Any = render_json
    if not json:  # the console renderer has no scrubbing of its own
        shared.append(scrub_processor)
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, renderer],
        logger_factory=_logger_factory,
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    # stdlib loggers (uvicorn, sqlalchemy, dramatiq) render through the same processors into the same stream
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(STDOUT)  # write() and flush() are all it uses
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "dramatiq"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    # our own middleware logs each request with its id; uvicorn's access line would be a duplicate
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
