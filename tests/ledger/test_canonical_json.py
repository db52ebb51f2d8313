"""The ledger's JSON written by orjson is the reference's: the canonical entry documents byte for byte (the
hash chain is published and re-run by others with Python's ``json``), and the jsonb text as the same value."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.ledger import chain
from app.ledger import service as ledger_module

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too
    | st.floats()  # NaN, the infinities and every exponent
    | st.text()
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=16,
)

# floats whose shortest form the two encoders write differently, and their neighbours
_AWKWARD_FLOATS = [
    1e-5,
    1e-7,
    -2.5e-8,
    9.943458097118422e-06,
    1e-4,
    1e-10,
    1e16,
    1e22,
    5e-324,
    -0.0,
    0.1,
    100.0,
]


def _reference_or_error(value: Any) -> bytes | type[BaseException]:
    try:
        return chain.reference_canonical_json(value)
    except (TypeError, ValueError) as exc:
        return type(exc)


def _canonical_or_error(value: Any) -> bytes | type[BaseException]:
    try:
        return chain.canonical_json(value)
    except (TypeError, ValueError) as exc:
        return type(exc)


@settings(max_examples=600, deadline=None)
@given(value=_JSON)
def test_canonical_json_is_the_reference_for_any_json_value(value: Any) -> None:
    assert _canonical_or_error(value) == _reference_or_error(value)


@settings(max_examples=200, deadline=None)
@given(value=st.dictionaries(st.integers() | st.booleans() | st.none() | st.floats(), _SCALARS, max_size=4))
def test_keys_that_are_not_strings_are_written_or_refused_as_the_reference_does(value: Any) -> None:
    assert _canonical_or_error(value) == _reference_or_error(value)


@pytest.mark.parametrize("number", [*_AWKWARD_FLOATS, math.nan, math.inf, -math.inf, 2**64, -(2**63) - 1])
def test_numbers_the_encoders_write_differently_are_written_as_the_reference_does(number: Any) -> None:
    for value in (number, [number], {"refs": {"x": number}, "memo": "1e-5"}):
        assert chain.canonical_json(value) == chain.reference_canonical_json(value)


def test_an_entry_document_hashes_as_the_published_recipe() -> None:
    document = chain.entry_document(
        seq=123456,
        business_key="meal:bench:meal:0:served",
        kind="meal_subsidy",
        memo='助餐补贴 "一份" \\ \n\t\x00\x7f\u2028😀',
        refs={"hold_key": "k", "donations": [str(uuid.uuid4())], "ratio": 1e-7, "none": None, "n": 2**70},
        day=date(2026, 11, 30),
        created_at=datetime(2026, 11, 30, 5, 45, 5, 123456, tzinfo=UTC),
        postings=[("pool:general_meal", -300), ("canteen:x:receivable", 300)],
    )
    recipe = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert chain.canonical_json(document) == recipe
    for key in (
        "ratio",
        "none",
        "n",
    ):  # each alone sends the document to the reference; without, orjson writes it
        plain = {**document, "refs": {k: v for k, v in document["refs"].items() if k != key}}
        assert chain.canonical_json(plain) == chain.reference_canonical_json(plain)
    plain = {**document, "refs": {"hold_key": "k"}}
    assert chain.canonical_json(plain) == chain.reference_canonical_json(plain)


@dataclasses.dataclass
class _Point:
    x: int


class _Kind(enum.StrEnum):
    donation = "donation"


class _Colour(enum.Enum):
    red = "red"


class _Level(enum.IntEnum):
    high = 3


@pytest.mark.parametrize(
    "value",
    [
        date(2026, 1, 2),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        _Point(1),
        Decimal("1.5"),
        {1, 2},
        _Kind.donation,
        _Level.high,
        _Colour.red,
        uuid.UUID(int=7),
        "\ud800",  # a lone surrogate: not UTF-8
    ],
)
def test_values_outside_json_are_written_or_refused_as_the_reference_does(value: Any) -> None:
    for wrapped in (value, [value], {"k": value}):
        assert _canonical_or_error(wrapped) == _reference_or_error(wrapped)


_SAFE_VALUES = st.recursive(
    _SCALARS
    | st.dates()
    | st.datetimes(timezones=st.just(UTC))
    | st.uuids()
    | st.decimals(allow_nan=False)
    | st.sampled_from([_Kind.donation, _Level.high]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=16,
)


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    return bool(a == b)


@settings(max_examples=600, deadline=None)
@given(value=st.dictionaries(st.text(max_size=8), _SAFE_VALUES, max_size=6))
def test_jsonb_text_holds_the_value_the_reference_text_holds(value: dict[str, Any]) -> None:
    """What is hashed is what the jsonb column gives back: the text written and the value returned read back as
    ``json.dumps(value, default=str)`` does."""
    expected = json.loads(json.dumps(value, default=str, ensure_ascii=False))
    result, text = ledger_module._json_safe(value)
    assert _same_json(result, expected)
    assert _same_json(json.loads(text), expected)
    assert _same_json(json.loads(ledger_module.LedgerService._meta_json(value)), expected)


@pytest.mark.parametrize("number", [math.nan, math.inf, 2**64])
def test_jsonb_text_for_what_orjson_writes_otherwise_is_the_reference_text(number: Any) -> None:
    """NaN and the infinities stay what PostgreSQL refuses (not a silent null); a huge integer stays itself."""
    value = {"amount": number}
    result, text = ledger_module._json_safe(value)
    assert text == json.dumps(value, default=str, ensure_ascii=False)
    assert _same_json(result, json.loads(text))
