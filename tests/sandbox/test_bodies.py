"""Strict request bodies and header fields (DESIGN.md section 4, input rules; security.md VAL-1)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from moat_nb.errors import PayloadTooLarge, ValidationError
from moat_nb.sandbox.bodies import (
    DEFAULT_LIMIT,
    MAX_DEPTH,
    check_header_field,
    check_header_fields,
    check_request_headers,
    json_depth,
    parse_json,
    read_body,
    read_json,
)

FAST = settings(max_examples=150, deadline=None)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def nested(depth: int, kinds: list[str]) -> str:
    """JSON text of ``depth`` nested containers (arrays or objects by ``kinds``) around 1."""
    text = "1"
    for i in range(depth):
        text = f'{{"k":{text}}}' if kinds[i % len(kinds)] == "o" else f"[{text}]"
    return text


def refused(raw: bytes, **kw: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_json(raw, **kw)
    assert info.value.code == "BAD_JSON"
    assert info.value.status == 400
    return info.value


# --------------------------------------------------------------------------- parse_json


@FAST
@given(json_values)
def test_valid_json_round_trips(value: Any) -> None:
    assert parse_json(json.dumps(value).encode()) == value
    assert parse_json(json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8")) == value


@FAST
@given(json_values, st.text(max_size=8), st.data())
def test_duplicate_keys_are_refused_at_any_depth(value: Any, key: str, data: st.DataObject) -> None:
    depth = data.draw(st.integers(0, 5))
    dup = "{" + f"{json.dumps(key)}:1,{json.dumps(key)}:{json.dumps(value)}" + "}"
    text = dup
    for _ in range(depth):
        text = f'{{"a":[{text}]}}'
    err = refused(text.encode())
    assert "duplicate key" in err.message
    assert err.details["reason"] == "duplicate-key"


@FAST
@given(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1E+999"]), st.integers(0, 4))
def test_non_finite_numbers_are_refused(token: str, depth: int) -> None:
    text = token
    for _ in range(depth):
        text = f'{{"x":[0,{text}]}}'
    err = refused(text.encode())
    assert err.details["reason"] == "non-finite"


@FAST
@given(st.integers(1, MAX_DEPTH), st.lists(st.sampled_from("ao"), min_size=1, max_size=3))
def test_depth_up_to_the_limit_is_accepted(depth: int, kinds: list[str]) -> None:
    value = parse_json(nested(depth, kinds).encode())
    assert json_depth(value) == depth


@FAST
@given(st.integers(MAX_DEPTH + 1, 5000), st.lists(st.sampled_from("ao"), min_size=1, max_size=3))
def test_depth_over_the_limit_is_refused(depth: int, kinds: list[str]) -> None:
    # Past the interpreter's recursion limit the stdlib decoder raises RecursionError; both
    # paths must end as BAD_JSON with reason "depth", never as a crash.
    err = refused(nested(depth, kinds).encode())
    assert err.details["reason"] == "depth"
    assert "nested" in err.message


def test_depth_limit_is_a_parameter() -> None:
    assert parse_json(nested(3, ["a"]).encode(), max_depth=3) == [[[1]]]
    refused(nested(4, ["a"]).encode(), max_depth=3)


@FAST
@given(
    st.text(max_size=10),
    st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]),
)
def test_invalid_utf8_is_refused_with_its_position(prefix: str, bad: bytes) -> None:
    head = b'{"s":"' + prefix.encode("utf-8").replace(b"\\", b"").replace(b'"', b"")
    raw = head + bad + b'"}'
    err = refused(raw)
    assert "UTF-8" in err.message
    assert err.details["position"] == len(head)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"{", "syntax"),
        (b"{'a': 1}", "syntax"),
        (b"[1,]", "syntax"),
        (b"1 2", "syntax"),
        (b"\xef\xbb\xbf{}", "syntax"),  # a BOM: RFC 8259 section 8.1 says MUST NOT add one
        (b"1" * 5000, "number"),  # past sys.get_int_max_str_digits()
    ],
)
def test_malformed_json_names_what_is_wrong(raw: bytes, reason: str) -> None:
    err = refused(raw)
    assert err.details["reason"] == reason
    assert err.message


def test_json_depth_counts_containers() -> None:
    assert json_depth(1) == 0
    assert json_depth([]) == 1
    assert json_depth({"a": [1, {"b": {}}]}) == 4
    assert json_depth([[], [[[]]], {}]) == 4


# --------------------------------------------------------------------------- streaming


def _request(parts: list[bytes], headers: dict[str, str] | None = None) -> tuple[Request, list[int]]:
    """A Starlette Request fed by an ASGI ``receive`` that hands out ``parts`` one by one and
    counts how many it handed out."""
    handed = [0]

    async def receive() -> dict[str, Any]:
        i = handed[0]
        handed[0] += 1
        if i < len(parts):
            return {"type": "http.request", "body": parts[i], "more_body": i < len(parts) - 1}
        return {"type": "http.disconnect"}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "query_string": b"",
    }
    return Request(scope, receive), handed


@FAST
@given(st.integers(1, 64), st.integers(1, 40))
def test_oversized_body_is_refused_while_streaming(limit: int, part_size: int) -> None:
    parts = [b"x" * part_size] * (limit // part_size + 50)
    request, handed = _request(parts)
    with pytest.raises(PayloadTooLarge) as info:
        asyncio.run(read_body(request, limit=limit))
    assert info.value.status == 413 and info.value.code == "PAYLOAD_TOO_LARGE"
    # Refused as soon as the limit was passed: the parts after that were never read.
    assert handed[0] == limit // part_size + 1


def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    request, handed = _request([b"{}"], {"Content-Length": str(DEFAULT_LIMIT + 1)})
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_json(request))
    assert handed[0] == 0


def test_bad_content_length_is_a_bad_header() -> None:
    request, _ = _request([b"{}"], {"Content-Length": "lots"})
    with pytest.raises(ValidationError) as info:
        asyncio.run(read_json(request))
    assert info.value.code == "BAD_HEADER"


@FAST
@given(json_values, st.integers(1, 7))
def test_read_json_reassembles_parts(value: Any, pieces: int) -> None:
    raw = json.dumps(value).encode()
    step = max(1, len(raw) // pieces)
    parts = [raw[i : i + step] for i in range(0, len(raw), step)]
    request, _ = _request(parts)
    assert asyncio.run(read_json(request)) == value


def test_body_at_exactly_the_limit_is_accepted() -> None:
    raw = b'"' + b"a" * (DEFAULT_LIMIT - 2) + b'"'
    request, _ = _request([raw[:1000], raw[1000:]])
    assert len(asyncio.run(read_json(request))) == DEFAULT_LIMIT - 2


def test_empty_body_is_none_only_when_allowed() -> None:
    request, _ = _request([b""])
    assert asyncio.run(read_json(request, allow_empty=True)) is None
    request, _ = _request([b""])
    with pytest.raises(ValidationError):
        asyncio.run(read_json(request))


# --------------------------------------------------------------------------- headers

tokens = st.from_regex(r"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20}\Z")
clean_values = st.text(max_size=30).filter(lambda s: not any(c in s for c in "\r\n\x00"))


@st.composite
def dirty(draw: st.DrawFn) -> str:
    text = draw(st.text(max_size=10))
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(st.sampled_from(["\r", "\n", "\r\n", "\x00"])) + text[at:]


@FAST
@given(st.dictionaries(tokens, clean_values | st.lists(clean_values, max_size=3) | st.integers()))
def test_clean_headers_pass(headers: dict[str, Any]) -> None:
    check_header_fields(headers)
    check_request_headers([(k.lower().encode(), str(v).encode()) for k, v in headers.items()])


@FAST
@given(tokens, dirty())
def test_cr_lf_nul_in_a_value_is_refused(name: str, value: str) -> None:
    for candidate in (value, ["ok", value]):
        with pytest.raises(ValidationError) as info:
            check_header_field(name, candidate, where="modifiedPayload.headers")
        assert info.value.code == "BAD_HEADER"
        assert name in info.value.message and "modifiedPayload.headers" in info.value.message
    with pytest.raises(ValidationError) as info:
        check_request_headers([(name.lower().encode(), value.encode())])
    assert info.value.code == "BAD_HEADER"


@FAST
@given(dirty() | st.just("") | st.just("two words") | st.just("x:y") | st.just("é"))
def test_names_outside_the_token_grammar_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_header_fields({name: "v"})
    assert info.value.code == "BAD_HEADER"
    with pytest.raises(ValidationError):
        check_request_headers([(name.encode("utf-8"), b"v")])
