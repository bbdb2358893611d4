"""Strict request bodies and header fields (DESIGN.md section 4, input rules; security.md VAL-1)."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from moat_nb.errors import PayloadTooLarge, ValidationError
from moat_nb.sandbox.bodies import (
    _MISS,
    DEFAULT_LIMIT,
    MAX_DEPTH,
    _parse_json_fast,
    _parse_json_strict,
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


# --------------------------------------------------------------------------- fast path = strict reading
#
# parse_json takes orjson's value only when _parse_json_fast proves it equal to the strict
# (stdlib) reading; these tests hold it to that on texts chosen where the two parsers part:
# duplicate keys (also spelled with escapes), integers past 64 bits, numbers that overflow,
# lone surrogates, nesting around the limit, colons and "e+" inside strings, odd whitespace.


def same_json(a: Any, b: Any) -> bool:
    """Equal *and* of the same types all the way down: 1, 1.0 and True differ, so do 0.0 and
    -0.0; object keys in the same order."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(map(same_json, a, b))
    if type(a) is float:
        return struct.pack("<d", a) == struct.pack("<d", b)
    return bool(a == b)


def outcome(parse: Callable[..., Any], raw: bytes, max_depth: int) -> tuple[str, Any]:
    try:
        return "value", parse(raw, max_depth=max_depth)
    except ValidationError as exc:
        return "error", (type(exc), exc.code, exc.status, exc.message, exc.hint, exc.details)


def readings(raw: bytes, max_depth: int = MAX_DEPTH) -> tuple[tuple[str, Any], tuple[str, Any]]:
    """parse_json's answer to ``raw`` and the strict reading's: ("value", v) or ("error", e)."""
    return outcome(parse_json, raw, max_depth), outcome(_parse_json_strict, raw, max_depth)


def agree(fast: tuple[str, Any], strict: tuple[str, Any]) -> bool:
    """The same answer: equal values of the same types, or the same error."""
    if fast[0] != strict[0]:
        return False
    return same_json(fast[1], strict[1]) if fast[0] == "value" else fast[1] == strict[1]


def as_strict(raw: bytes, max_depth: int = MAX_DEPTH) -> tuple[str, Any]:
    """The strict reading's answer, once parse_json is checked to give the same."""
    fast, strict = readings(raw, max_depth)
    assert agree(fast, strict), (raw[:300], max_depth, fast, strict)
    return strict


# Numbers where the parsers part: -0, overflow and underflow, halfway cases, integers around and
# past 64 bits (orjson makes floats of those), longer than int() takes, NaN and Infinity.
EDGE_NUMBERS = [
    "-0", "-0.0", "0e0", "-0E-0", "1e16", "1e+16", "1e-7", "1e400", "-1e400", "1E+999", "1e-400",
    "2e308", "1.7976931348623157e308", "1.7976931348623159e308", "4.9e-324",
    "2.4703282292062327e-324", "2.4703282292062328e-324", "9007199254740993",
    "9007199254740993.0", "9223372036854775807", "9223372036854775808", "18446744073709551615",
    "18446744073709551616", "-9223372036854775808", "-9223372036854775809", "1" * 30,
    "1" * 5000, "0." + "1" * 800, "12345678901234567890e-3", "NaN", "Infinity", "-Infinity",
]  # fmt: skip
number_texts = st.one_of(
    st.sampled_from(EDGE_NUMBERS),
    st.integers().map(str),
    st.integers(-(2**64) - 3, 2**64 + 3).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?\Z"),
)
# Escapes and characters where the parsers, or the fast path's colon and "e+" checks, could part.
STRING_PIECES = [
    '\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u003a", "\\u003A", "\\\\u003a",
    "\\u0000", "\\u001f", "\\ud800", "\\udc00", "\\ud83d\\ude00", "\\uDBFF\\uDFFF", "\\ud800\\u0041",
    "\\u00e9", "\\u0061", "e+", ":", '\\":', "[", "{", "]}", "\x7f", "\u2028",
]  # fmt: skip
string_texts = st.lists(
    st.text(st.characters(exclude_characters='"\\', exclude_categories=["Cc", "Cs"]), max_size=6)
    | st.sampled_from(STRING_PIECES),
    max_size=4,
).map(lambda parts: '"' + "".join(parts) + '"')
# Few distinct keys, so that objects often repeat one (also as "\u0061" for "a").
key_texts = st.sampled_from(['"a"', '"b"', '"\\u0061"', '"a:"', '"a\\u003a"', '""']) | string_texts
ws = st.sampled_from(["", "", "", " ", "\n", "\t", "\r\n  "])
scalar_texts = number_texts | string_texts | st.sampled_from(["true", "false", "null", "0"])


def _containers(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    element = st.tuples(ws, inner, ws).map("".join)
    member = st.tuples(ws, key_texts, ws, st.just(":"), ws, inner, ws).map("".join)
    return st.lists(element, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]") | st.lists(
        member, max_size=4
    ).map(lambda ms: "{" + ",".join(ms) + "}")


# JSON texts (NaN and Infinity aside): where the two readings must agree on the value or refusal.
json_texts = st.recursive(scalar_texts, _containers, max_leaves=12)
# What makes a text not JSON: bad numbers, literals, escapes, raw control characters, a lone
# surrogate (invalid UTF-8 once encoded), characters that str.strip() takes for whitespace.
BREAKERS = [
    *'{}[],:" \\0e+-', "", "01", "1.", ".5", "+1", "1e", "0x10", "tru", "True", "\\x", "\\u12",
    "\n", "\x01", "\ud800", "\x0b", "\x0c", "\u00a0", "\u2028", "\ufeff",
]  # fmt: skip


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A JSON-ish body: JSON, wrapped in a few more levels now and then, one time in four broken
    at one place, in UTF-8."""
    text = draw(json_texts)
    for kind in draw(st.lists(st.sampled_from("ao"), max_size=8)):
        text = f"[{text}]" if kind == "a" else f'{{"k":{text}}}'
    text = draw(ws) + text + draw(ws)
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(BREAKERS)) + text[at + draw(st.integers(0, 1)) :]
    return text.encode("utf-8", "surrogatepass")


max_depths = st.just(MAX_DEPTH) | st.integers(0, 12)


@settings(max_examples=1000, deadline=None)
@given(bodies(), max_depths)
def test_fast_path_answers_as_the_strict_reading(raw: bytes, max_depth: int) -> None:
    fast, strict = readings(raw, max_depth)
    assert agree(fast, strict), (raw[:300], max_depth, fast, strict)


wide_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # past 64 bits too: orjson turns those into floats
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.lists(st.integers(0xD800, 0xDFFF).map(chr) | st.characters(), max_size=4).map("".join)
)
wide_values = st.recursive(
    wide_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=25,
)
ENCODERS: list[Callable[[Any], str | bytes]] = [
    json.dumps,
    lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":")),  # the agent's (agent._dumps)
    lambda v: json.dumps(v, ensure_ascii=False, indent=2),
    lambda v: json.dumps(v, indent="\t") + "\n",
    orjson.dumps,
    lambda v: orjson.dumps(v, option=orjson.OPT_INDENT_2),
]


@settings(max_examples=500, deadline=None)
@given(wide_values, st.sampled_from(range(len(ENCODERS))), max_depths)
def test_serialised_values_read_as_strict(value: Any, encoder: int, max_depth: int) -> None:
    try:
        text = ENCODERS[encoder](value)
    except orjson.JSONEncodeError:  # orjson writes neither big integers nor lone surrogates
        return
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    fast, strict = readings(raw, max_depth)
    assert agree(fast, strict), (raw[:300], max_depth, fast, strict)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 300),
    st.integers(0, 300) | st.just(MAX_DEPTH),
    st.lists(st.sampled_from("ao"), min_size=1, max_size=3),
    st.sampled_from(["1", "[]", "{}", '"x"', "[1]", '{"a":[]}', "[[],[[]]]"]),
)
def test_nesting_around_the_limit_reads_as_strict(
    depth: int, max_depth: int, kinds: list[str], core: str
) -> None:
    # Empty containers at the bottom are the case the indentation check must not miss.
    text = core
    for i in range(depth):
        text = f'{{"k":{text}}}' if kinds[i % len(kinds)] == "o" else f"[{text}]"
    fast, strict = readings(text.encode(), max_depth)
    assert agree(fast, strict), (depth, max_depth, fast, strict)


@pytest.mark.parametrize("depth", [254, 255, 1024, 1025, 3000])
@pytest.mark.parametrize("max_depth", [MAX_DEPTH, 300, 2000])
def test_nesting_past_orjsons_limits_reads_as_strict(depth: int, max_depth: int) -> None:
    # orjson.dumps stops at 254 levels, orjson.loads at 1024: past them the strict reading decides.
    fast, strict = readings(nested(depth, ["a", "o"]).encode(), max_depth)
    assert agree(fast, strict), (depth, max_depth, fast, strict)


@pytest.mark.parametrize(
    "raw, expected",
    [
        # duplicate keys, also spelled with escapes and with colons in the keys
        (b'{"a":1,"a":2}', "duplicate-key"),
        (b'{"a":1,"\\u0061":2}', "duplicate-key"),
        (b'{"a:":1, "a\\u003a":2}', "duplicate-key"),
        (b'{"x":[{"k":"v:w","k":"v:w"}]}', "duplicate-key"),
        (b'{"a\\u003a":1,"b":"\\u003a"}', {"a:": 1, "b": ":"}),
        (b'{ "a" : 1 , "b" : "c:d" }', {"a": 1, "b": "c:d"}),
        # numbers where orjson and the stdlib part
        (b"18446744073709551616", 2**64),
        (b"[-9223372036854775809, 9223372036854775808]", [-(2**63) - 1, 2**63]),
        (b'{"n": 123456789012345678901234567890}', {"n": 123456789012345678901234567890}),
        (b"1e400", "non-finite"),
        (b"[-1E+999]", "non-finite"),
        (b"NaN", "non-finite"),
        (b"1" * 5000, "number"),
        (b"-0", 0),
        (b"-0.0", -0.0),
        (b" 1e16 ", 1e16),
        (b'["e+", 1]', ["e+", 1]),
        (b"1e-400", 0.0),
        # strings
        # Lone surrogates: refused (I-JSON, RFC 7493 2.1); a pair is one character.
        (b'"\\ud800"', "surrogate"),
        (b'["\\udc00\\ud800", "\\ud83d\\ude00"]', "surrogate"),
        (b'["\\ud83d\\ude00", {"\\u00e9": "\\\\ud800"}]', ["\U0001f600", {"\u00e9": "\\ud800"}]),
        (b'"\xed\xa0\x80"', "utf-8"),
        (b'"a\x01"', "syntax"),
        # framing
        (b"\xef\xbb\xbf{}", "syntax"),
        (b"", "empty"),
        (b" \r\n\t", "empty"),
        (b"\x0c", "empty"),
        (b"\x0c[]", "syntax"),
        (b" \n[1]\n ", [1]),
        (b'"x"', "x"),
        (b"true", True),
        (b"null", None),
        (b"1 2", "syntax"),
    ],
)
def test_where_orjson_differs(raw: bytes, expected: Any) -> None:
    kind, answer = as_strict(raw)
    if isinstance(expected, str) and kind == "error":
        assert answer[-1]["reason"] == expected
    else:
        assert kind == "value" and same_json(answer, expected)


@settings(max_examples=300, deadline=None)
@given(number_texts)
def test_orjson_and_the_stdlib_read_a_number_alike(text: str) -> None:
    # The fast path takes orjson's float for the strict reading's float(text): both must round
    # correctly to the same double (or orjson must refuse, and the strict reading decides).
    try:
        fast = orjson.loads(text)
    except orjson.JSONDecodeError:
        return
    strict = json.loads(text, parse_float=float)
    if isinstance(fast, float) and isinstance(strict, float):
        assert struct.pack("<d", fast) == struct.pack("<d", strict)
    else:  # an integer: the same, or a float for one past 64 bits (the "e+" check rules it out)
        assert same_json(fast, strict) or (isinstance(fast, float) and abs(fast) >= 2**63)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=2**63, allow_infinity=False), st.booleans())
def test_orjson_writes_big_floats_with_an_exponent(size: float, negative: bool) -> None:
    # What the fast path's "e+" check leans on: a float orjson made of an integer literal past
    # 64 bits is at least 2**63, and orjson writes every such float with "e+".
    assert b"e+" in orjson.dumps(-size if negative else size)


TRACE_LIKE = {
    "executionId": "8b676713-0adb-4270-8a2b-1b20f2a8d0dd",
    "chunkSeq": 0,
    "final": True,
    "processors": [
        {
            "seq": i,
            "durationMs": 0.057 * i,
            "parentSeq": None,
            "inputBody": '{"orderId": "ORD-000004", "lines": [{"sku": "SKU-111", "qty": 5}]}',
            "inputHeaders": {"Content-Type": "application/json", "processedAt": "2026-11-26T15:53:44Z"},
            "properties": {"tenant": "acme-eu", "loop": [i, {"x": "é ü \u2028"}]},
        }
        for i in range(30)
    ],
}


@pytest.mark.parametrize("encoder", range(len(ENCODERS)))
def test_fast_path_takes_trace_bodies(encoder: int) -> None:
    # Not a timing test: it checks the fast path answers for the bodies it is there for (the
    # agent's compact encoding, and other encodings of the same trace) instead of handing them on.
    text = ENCODERS[encoder](TRACE_LIKE)
    raw = text if isinstance(text, bytes) else text.encode()
    value = _parse_json_fast(raw, MAX_DEPTH)
    assert value is not _MISS
    assert same_json(value, TRACE_LIKE)
    assert _parse_json_fast(raw, 3) is _MISS  # nested 4 deep


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
@given(st.dictionaries(tokens, clean_values))
def test_clean_request_headers_pass(headers: dict[str, Any]) -> None:
    check_request_headers([(k.lower().encode(), v.encode()) for k, v in headers.items()])


@FAST
@given(tokens, dirty())
def test_cr_lf_nul_in_a_request_header_value_is_refused(name: str, value: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_request_headers([(name.lower().encode(), value.encode())])
    assert info.value.code == "BAD_HEADER"


@FAST
@given(dirty() | st.just("") | st.just("two words") | st.just("x:y") | st.just("é"))
def test_request_header_names_outside_the_token_grammar_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_request_headers([(name.encode("utf-8"), b"v")])
    assert info.value.code == "BAD_HEADER"
