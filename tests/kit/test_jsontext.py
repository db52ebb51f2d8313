"""``json_text`` reads back as ``json.dumps(value, ensure_ascii=False)`` does, for every JSON value (big
integers, NaN and the infinities, keys that are not strings included), and refuses what the reference refuses."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.kit import jsontext
from app.kit.jsontext import encode_json, json_text

_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
_KEYS = st.text(max_size=6) | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(_KEYS, inner, max_size=4)
    ),
    max_leaves=16,
)


def _reference(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _same_reading(a: str, b: str) -> bool:
    """Both texts read back as the same value (NaN equal to NaN)."""
    return json.dumps(json.loads(a), sort_keys=True) == json.dumps(json.loads(b), sort_keys=True)


@settings(max_examples=400, deadline=None)
@given(_JSON)
def test_reads_back_as_the_reference_does(value: Any) -> None:
    text = json_text(value)
    assert _same_reading(text, _reference(value))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), _SCALARS, max_size=6))
def test_a_value_with_nan_or_an_infinity_is_the_reference_text(value: Any) -> None:
    """PostgreSQL refuses the reference's ``NaN`` in jsonb, and kept refusing it: orjson's ``null`` would be
    stored instead."""
    has_non_finite = any(isinstance(v, float) and not math.isfinite(v) for v in value.values())
    assert (json_text(value) == _reference(value)) or not has_non_finite


@pytest.mark.parametrize(
    "value",
    [
        {"amount": {"total": 2**64}},  # beyond 64 bits: orjson refuses it
        {1: "a", None: "b", False: "c", 2.5: "d"},  # keys that are not strings: written as strings
        [float("nan")],
        {"meals": None, "ratio": float("inf")},
        {"deep": [{"x": [None, -math.inf]}]},
    ],
)
def test_what_orjson_would_write_otherwise_goes_to_the_reference(value: Any) -> None:
    assert json_text(value) == _reference(value)


def test_the_fast_path_is_orjson_and_means_the_same() -> None:
    resource = {
        "out_trade_no": "SY2026113000001",
        "trade_state_desc": "支付成功",
        "attach": "",
        "payer": {"openid": "o-1"},
        "amount": {"total": 300, "currency": "CNY"},
        "meals": None,
        "rate": 0.5,
    }
    text = json_text(resource)
    assert (
        text
        == '{"out_trade_no":"SY2026113000001","trade_state_desc":"支付成功","attach":"","payer":{"openid":"o-1"},"amount":{"total":300,"currency":"CNY"},"meals":null,"rate":0.5}'
    )
    assert json.loads(text) == resource


@dataclasses.dataclass
class _Point:
    x: int


@pytest.mark.parametrize(
    "value", [{"at": datetime(2026, 11, 30, tzinfo=UTC)}, [date(2026, 11, 30)], _Point(1)]
)
def test_what_the_reference_refuses_is_refused(value: Any) -> None:
    with pytest.raises(TypeError):
        _reference(value)
    with pytest.raises(TypeError):
        json_text(value)


def test_a_string_that_is_not_unicode_is_the_reference_text() -> None:
    value = {"bad": "\ud800"}
    assert json_text(value) == _reference(value)


def test_the_search_for_nan_runs_only_on_text_with_null(monkeypatch: pytest.MonkeyPatch) -> None:
    searched: list[Any] = []
    real = jsontext._has_non_finite

    def spy(value: Any) -> bool:
        searched.append(value)
        return real(value)

    monkeypatch.setattr(jsontext, "_has_non_finite", spy)
    json_text({"a": 1, "b": [2.5, "x"]})
    assert searched == []
    json_text({"a": None})
    assert searched[0] == {"a": None}


@pytest.mark.parametrize(
    ("value", "by_orjson"),
    [
        ({"a": 1, "b": None}, True),
        ({"total": 2**64}, False),  # orjson.loads would read the reference's integer back as a float
        ({"x": float("nan")}, False),
        ({1: "a"}, False),
    ],
)
def test_encode_json_says_whether_orjson_wrote_the_text(value: Any, by_orjson: bool) -> None:
    text, fast = encode_json(value)
    assert fast is by_orjson
    assert text == json_text(value)
    if not fast:
        assert text == _reference(value)


def test_a_default_is_used_as_the_reference_uses_it() -> None:
    """The ledger's ``default=str``: dates, UUIDs and decimals read back as ``json.dumps(..., default=str)``
    writes them."""
    import uuid
    from decimal import Decimal

    value = {
        "at": datetime(2026, 11, 30, 8, 5, tzinfo=UTC),
        "day": date(2026, 11, 30),
        "id": uuid.UUID(int=7),
        "fen": Decimal("12.50"),
        "point": _Point(3),
    }
    text, fast = encode_json(value, default=str)
    assert fast
    assert json.loads(text) == json.loads(json.dumps(value, ensure_ascii=False, default=str))
