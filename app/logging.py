"""JSON logs through structlog, one line each on stdout; stdlib loggers (uvicorn, sqlalchemy, dramatiq) go through the
same processors and renderer.
Every line carries the request id (or job name) bound in contextvars. Known PII shapes are scrubbed."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_SCRUBBERS = [
    # 18-digit resident ID numbers (last char may be X)
    (re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{8}(\d{3}[\dXx])(?![0-9A-Za-z])"), r"\1********\2"),
    # mainland mobile numbers
    (re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)"), r"\1****\2"),
    # bearer tokens
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
]
# every pattern above needs eleven digits in a row or the word "bearer": most strings have neither
_MAYBE_SENSITIVE = re.compile(r"\d{11}|[Bb][Ee][Aa][Rr][Ee][Rr]")
_SECRET_KEYS = {"authorization", "token", "access_token", "secret", "password", "session_key", "api_key"}


def scrub_text(text: str) -> str:
    if _MAYBE_SENSITIVE.search(text) is None:
        return text
    for pattern, repl in _SCRUBBERS:
        text = pattern.sub(repl, text)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: ("[redacted]" if str(k).lower() in _SECRET_KEYS else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def scrub_processor(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: ("[redacted]" if k.lower() in _SECRET_KEYS else _scrub(v)) for k, v in event_dict.items()}


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
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        scrub_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else (structlog.dev.ConsoleRenderer(colors=False))
    )
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
