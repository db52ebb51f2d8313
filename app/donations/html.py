"""Jinja2 rendering for the public landing page and the printable receipt (templates in app/web/templates)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from app.kit.money import fen_to_yuan_text
from app.kit.time import SHANGHAI

TEMPLATES = Path(__file__).resolve().parent.parent / "web" / "templates"


def _shanghai(value: Any) -> str:
    return value.astimezone(SHANGHAI).strftime("%Y年%m月%d日 %H:%M") if value else ""


@lru_cache
def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    env.filters["yuan"] = fen_to_yuan_text
    env.filters["shanghai"] = _shanghai
    return env


def render(name: str, **context: Any) -> str:
    return _env().get_template(name).render(**context)
