"""encoder.dumps: orjson's speed, the stdlib's JSON values and refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moat_nb.sandbox.encoder import dumps, dumps_text, finite


def _stdlib(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        | st.dictionaries(st.integers(-5, 5), inner, max_size=2)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(value=_VALUES)
def test_dumps_gives_the_stdlib_value_or_its_refusal(value: Any) -> None:
    try:
        expected = _stdlib(value)
    except ValueError:
        with pytest.raises(ValueError, match="JSON compliant"):
            dumps(value)
        assert not finite(value)
        return
    assert finite(value)
    out = dumps(value)
    assert json.loads(out) == json.loads(expected)
    assert dumps_text(value) == out.decode("utf-8")
    if "e" not in expected and "E" not in expected:
        assert out == expected.encode("utf-8")  # same text but for exponent spelling


def test_dumps_refuses_what_the_stdlib_refuses() -> None:
    with pytest.raises(ValueError):
        dumps({"a": [1.0, float("inf")]})
    with pytest.raises(TypeError):
        dumps({"at": datetime(2026, 1, 1, tzinfo=UTC)})  # orjson would write it; the stdlib refuses
    assert dumps({1: "a"}) == b'{"1":"a"}'  # orjson refuses int keys; the stdlib writes them
    assert dumps(2**65) == str(2**65).encode()
    # A lone surrogate (orjson refuses it): the stdlib's text, for the store to refuse by name.
    assert dumps_text({"h": "a\udc00"}) == _stdlib({"h": "a\udc00"})
