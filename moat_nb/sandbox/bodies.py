"""Strict reading of request bodies and header fields (DESIGN.md section 4, "Input rules").

The rules, and what each answers:

* a body over the limit (1 MiB by default) -> 413 ``PAYLOAD_TOO_LARGE``, decided *while the
  body streams in* (a declared ``Content-Length`` over the limit is refused before reading a
  byte), so an oversized or endless body never sits in memory (security.md VAL-1);
* a body whose ``Content-Type`` is not ``application/json`` (or ``application/*+json``) -> 415
  ``UNSUPPORTED_MEDIA_TYPE``, before a byte of it is read (:func:`check_json_media_type`);
* invalid UTF-8, duplicate object keys, ``NaN`` / ``Infinity`` (and numbers that overflow to
  infinity, such as ``1e400``), nesting deeper than 64, or anything that is not JSON ->
  400 ``BAD_JSON`` with a message naming the fault and where it is;
* a header name or value containing CR, LF or NUL, or a name outside RFC 9110's token grammar
  -> 400 ``BAD_HEADER``;
* more than 100 header fields, or a name or value over 8 KiB -> 431 ``HEADERS_TOO_LARGE``
  (RFC 6585 section 5; security.md section 8 "Limits"), :func:`check_header_limits`.

Why not the stdlib defaults: ``json.loads`` keeps the last of duplicate keys silently, accepts
``NaN``/``Infinity`` as an extension, and turns ``1e400`` into ``inf`` — all of which RFC 8259
section 4 / I-JSON (RFC 7493) leave undefined and JCS (RFC 8785) forbids. Its recursion on
deep input is bounded by the interpreter (``RecursionError``), which we turn into ``BAD_JSON``
too. :func:`parse_json` is pure (bytes in, value out); :func:`read_json` adds the streaming.

Speed: every trace chunk an agent posts (~120 KB of JSON, on every replay) goes through
:func:`parse_json`. The stdlib decoder with the hooks above, plus the depth walk, costs ~1.3-2.5
ms a chunk; orjson parses the same text in ~0.2 ms but keeps the last of duplicate keys, turns
integers beyond 64 bits into floats and knows no depth limit of ours. So orjson's value is used
only when it is *proven* equal (types included) to the strict reading (:func:`_parse_json_fast`,
~0.45 ms a chunk); every other body, and every error, goes to the strict reading
(:func:`_parse_json_strict`), which stays the reference for what is accepted and what each
refusal says.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

import orjson
from starlette.requests import Request

from ..errors import HeadersTooLarge, PayloadTooLarge, UnsupportedMediaType, ValidationError

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_DEPTH",
    "check_declared_length",
    "check_json_media_type",
    "read_body",
    "read_json",
    "parse_json",
    "json_depth",
    "check_request_headers",
    "check_header_limits",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
]

#: DESIGN.md section 4: request bodies over 1 MiB are refused.
DEFAULT_LIMIT = 1 << 20
#: DESIGN.md section 4: JSON nested deeper than this is refused.
MAX_DEPTH = 64
#: security.md section 8 "Limits": header fields per request, and bytes of one field's name or
#: value (nginx's large_client_header_buffers and Apache's LimitRequestFieldSize are 8 KiB too).
#: What the sandbox's clients send is far below both (measured): ~6-8 fields from httpx, the
#: agents and schemathesis, ~20 from a browser; the longest value is ``Authorization: Bearer``
#: and a JWT of at most ~630 bytes (an agent with a 128-character instance id and environment;
#: a user's is ~410, 600 with a 128-character name), then ``Idempotency-Key`` (<= 255),
#: ``X-Request-ID``, ``Last-Event-ID`` (an id, <= 128) and ``User-Agent`` (a few hundred at most).
MAX_HEADERS = 100
MAX_HEADER_BYTES = 8 * 1024

# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _bad_json(message: str, **details: Any) -> ValidationError:
    return ValidationError(
        message,
        code="BAD_JSON",
        hint="send one JSON value encoded as UTF-8, without duplicate keys, NaN or Infinity, "
        f"nested at most {MAX_DEPTH} deep",
        details=details,
    )


# --------------------------------------------------------------------------- streaming


def check_declared_length(request: Request, *, limit: int = DEFAULT_LIMIT) -> None:
    """413 when the request's ``Content-Length`` declares more than ``limit`` bytes (400
    ``BAD_HEADER`` when it is not a number). The server runs it for every endpoint (section 4
    "Input rules": bodies over 1 MiB get 413), those that never read a body included;
    :func:`read_body` runs it too and also counts what arrives without a declared length."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise ValidationError(
            f"Content-Length {declared[:40]!r} is not a number",
            code="BAD_HEADER",
            details={"header": "Content-Length"},
        ) from None
    if size > limit:
        raise _too_large(limit, declared=size)


def check_json_media_type(request: Request) -> None:
    """415 ``UNSUPPORTED_MEDIA_TYPE`` unless a request that has a body declares it JSON:
    ``Content-Type: application/json`` (parameters such as ``charset`` allowed) or an
    ``application/<x>+json`` type (RFC 6839). A request without a body needs none.

    Why, though the API takes bearer tokens and no cookies (so a cross-site request carries no
    credentials): a web page can send a "simple" cross-site POST (text/plain, no CORS
    preflight) to a loopback sandbox, and ``<form enctype="text/plain">`` can spell a JSON
    login body. Read as JSON, five of them locked an account out for five minutes (the
    LoginGuard counts failed logins by name) and each wrote a LOGIN_FAILED audit event. A
    JSON content type cannot be sent cross-site without a preflight, which the sandbox never
    grants (it sends no CORS headers), so such a request now stops here (OWASP CSRF Prevention
    Cheat Sheet, "Employing custom request headers" / content-type checks)."""
    declared = request.headers.get("content-length")
    has_body = "transfer-encoding" in request.headers or (declared is not None and declared.strip() != "0")
    if not has_body:
        return
    given = request.headers.get("content-type", "")
    media = given.split(";", 1)[0].strip().lower()
    kind, _, sub = media.partition("/")
    if kind == "application" and (sub == "json" or sub.endswith("+json")):
        return
    raise UnsupportedMediaType(
        f"the request body is declared {given[:80]!r}, not application/json"
        if given
        else "the request body has no Content-Type; it must be application/json",
        hint="send the body as JSON with Content-Type: application/json",
        details={"contentType": given[:80]},
    )


async def read_body(request: Request, *, limit: int = DEFAULT_LIMIT) -> bytes:
    """The request body, refusing it (413) as soon as more than ``limit`` bytes are declared or
    have arrived — the rest of an oversized body is never read."""
    check_declared_length(request, limit=limit)
    parts: list[bytes] = []
    received = 0
    async for part in request.stream():
        received += len(part)
        if received > limit:
            raise _too_large(limit, received=received)
        parts.append(part)
    return b"".join(parts)


def _too_large(limit: int, **details: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body is larger than the limit of {limit} bytes",
        hint="send a smaller body",
        details={"limit": limit, **details},
    )


async def read_json(
    request: Request,
    *,
    limit: int = DEFAULT_LIMIT,
    max_depth: int = MAX_DEPTH,
    allow_empty: bool = False,
) -> Any:
    """Read and strictly parse the request's JSON body (see the module docstring for the rules).

    An empty body is ``BAD_JSON`` unless ``allow_empty``, when it reads as ``None`` (for
    endpoints whose body is optional, such as the heartbeat).
    """
    check_declared_length(request, limit=limit)  # 413 and a bad length first, as the server does
    check_json_media_type(request)
    raw = await read_body(request, limit=limit)
    if allow_empty and not raw.strip():
        return None
    return parse_json(raw, max_depth=max_depth)


# --------------------------------------------------------------------------- parsing (pure)


class _Refused(Exception):
    """Raised from inside the decoder's hooks; carries the finished ValidationError."""

    def __init__(self, error: ValidationError) -> None:
        super().__init__(error.message)
        self.error = error


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(_bad_json(f"duplicate key {key[:80]!r} in a JSON object", reason="duplicate-key"))
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise _Refused(_bad_json(f"{name} is not a JSON number", reason="non-finite"))


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(_bad_json(f"number {text[:40]} overflows to infinity", reason="non-finite"))
    return value


def parse_json(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw`` as strict JSON (RFC 8259 as I-JSON restricts it); 400 ``BAD_JSON`` else.

    The same value (same types) and the same errors as :func:`_parse_json_strict`; orjson's
    reading is taken when :func:`_parse_json_fast` proves it equal.
    """
    value = _parse_json_fast(raw, max_depth)
    if value is _MISS:
        return _parse_json_strict(raw, max_depth=max_depth)
    return value


#: What :func:`_parse_json_fast` returns when it cannot prove its answer (never a JSON value).
_MISS: Any = object()


def _parse_json_fast(raw: bytes, max_depth: int) -> Any:
    """orjson's reading of ``raw`` when it provably equals :func:`_parse_json_strict`'s, else
    :data:`_MISS` (the caller then runs the strict reading, which also names any fault).

    Where orjson and the strict reading part, and how each case is ruled out:

    * orjson *refuses* more: NaN/Infinity, numbers that overflow to infinity, lone surrogate
      escapes (``"\\ud800"``, which the stdlib accepts), nesting past 1024 (and ``dumps`` past
      254) -> :data:`_MISS`, so the strict reading decides exactly as before. Everything else
      orjson refuses the strict reading refuses too (the tests compare them on random texts).
    * duplicate keys: orjson keeps the last one silently. Re-serialising the value gives
      ``compact``, which has none; if ``compact == raw`` (the agent's compact ``json.dumps``
      of a trace is orjson's form byte for byte) the body has none either. Otherwise the
      members are counted as colons: outside strings, valid JSON has a ':' between each
      member's key and value and nowhere else, so ``raw.count(b":")`` is the members in the
      text plus the colons in its strings, and ``compact.count(b":")`` the members kept plus
      the colons in the kept strings (orjson never escapes ':'). A dropped member makes the first strictly
      larger; without one they are equal, provided no string spells a colon as ``\\u003a``
      (such bodies -> :data:`_MISS`).
    * an integer literal outside [-2**63, 2**64) comes back as a float (the stdlib keeps an
      int). If ``compact == raw`` every number is spelled as orjson writes it: digits for an
      int, a '.' or an exponent for a float, read as the same type by the stdlib. Otherwise:
      such a float is at least 2**63 in size, and orjson writes every float of 1e16 or more
      with ``e+`` (as Python's repr does), so a ``compact`` without ``e+`` carries none.
    * floats: both parsers round correctly, so the same text gives the same float (tested).
    * depth: orjson has no limit of ours; see :func:`_indent_bounds_depth`. (A ``max_depth``
      of some hundreds would let this path accept a value the strict reading might refuse
      only because the interpreter's recursion limit is near; at 64 it is far.)

    Why not count members by scanning the text for strings in Python (a regex): that costs
    ~1.6 ms a chunk, as much as the strict reading. The checks here are C passes: the two
    ``dumps`` ~0.1 ms each, the counts and searches ~0.01-0.15 ms (only for bodies that are not
    orjson's own encoding).
    """
    try:
        # orjson validates UTF-8 as well; the stdlib decoder is the rule the strict reading
        # applies (and names the byte), so it decides here too.
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return _MISS
    try:
        value = orjson.loads(raw)
        compact = orjson.dumps(value)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return _MISS
    # The colon count first: it is what finds duplicate keys.
    if compact != raw and (raw.count(b":") != compact.count(b":") or b"\\u003" in raw or b"e+" in compact):
        return _MISS
    indented = orjson.dumps(value, option=orjson.OPT_INDENT_2)  # cannot fail: compact did not
    if not _indent_bounds_depth(indented, max_depth) and json_depth(value) > max_depth:
        return _MISS
    return value


def _indent_bounds_depth(indented: bytes, max_depth: int) -> bool:
    """True when ``indented`` (orjson's ``OPT_INDENT_2`` form of a value) proves the value is
    nested at most ``max_depth`` deep; False when it cannot tell (then walk the value).

    Why: the walk (:func:`json_depth`) costs ~0.4 ms a chunk in Python; the ``dumps`` and
    one search ~0.1 ms. In that form every element of a non-empty container starts a line
    indented two spaces per enclosing container (strings cannot hold a raw newline: orjson
    writes ``\\n``). A value nested deeper than ``max_depth`` has a container inside
    ``max_depth`` others, hence a line indented by ``2 * max_depth`` spaces; no such line -> not
    deeper. (Empty containers take no line of their own, which is why the line sought is the
    one of the container at level ``max_depth``, not of something inside it.) ``max_depth``
    below 1 would need the top value's line, which no newline precedes: walk then.
    """
    return max_depth >= 1 and b"\n" + b"  " * max_depth not in indented


def _parse_json_strict(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The reference reading behind :func:`parse_json`: the stdlib decoder with the hooks above,
    then the depth walk. Slow (~2 ms for a 120 KB chunk) but it decides every refusal and its
    message."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_json(
            f"request body is not valid UTF-8 (byte {exc.start}: {exc.reason})",
            reason="utf-8",
            position=exc.start,
        ) from None
    if not text.strip():
        raise _bad_json("request body is empty; send a JSON value", reason="empty")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_constant=_constant,
            parse_float=_float,
        )
    except _Refused as refused:
        raise refused.error from None
    except RecursionError:
        raise _bad_json(f"JSON is nested deeper than {max_depth} levels", reason="depth") from None
    except json.JSONDecodeError as exc:
        raise _bad_json(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            reason="syntax",
            line=exc.lineno,
            column=exc.colno,
        ) from None
    except ValueError as exc:  # an integer longer than sys.get_int_max_str_digits()
        raise _bad_json(f"not valid JSON: {exc}", reason="number") from None
    depth = json_depth(value)
    if depth > max_depth:
        raise _bad_json(
            f"JSON is nested {depth} levels deep; at most {max_depth} are allowed",
            reason="depth",
            depth=depth,
        )
    if _SURROGATE_ESCAPE.search(text):
        lone = _lone_surrogate(value)
        if lone is not None:
            # RFC 7493 2.1 (I-JSON): no unpaired surrogates. Refused here, once, instead of
            # wherever the text would later be encoded (SQLite, a hash, a password check).
            raise _bad_json(
                f"a string holds the lone surrogate \\u{ord(lone):04x}: JSON text must be valid "
                "Unicode (I-JSON, RFC 7493 section 2.1); send the character itself or a surrogate pair",
                reason="surrogate",
            )
    return value


#: A \uD800-\uDFFF escape in JSON text (a pair decodes to one character; a lone one stays).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value: Any) -> str | None:
    """The first unpaired surrogate in a parsed value's strings and keys, or None (iterative)."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            found = _SURROGATE.search(node)
            if found:
                return found.group()
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value: 0 for a scalar, 1 for ``[]`` or ``{}``, ...

    Iterative, so that it cannot itself hit the recursion limit.
    """
    if not isinstance(value, dict | list):
        return 0
    # Only containers go on the stack: most nodes of a trace are scalars, and skipping them
    # halves the walk (it runs on every chunk an agent posts).
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, level = pop()
        if level > deepest:
            deepest = level
        children: Iterable[Any] = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                push((child, level + 1))
    return deepest


# --------------------------------------------------------------------------- header fields (pure)


def _bad_header(message: str, **details: Any) -> ValidationError:
    return ValidationError(
        message,
        code="BAD_HEADER",
        hint="header names are RFC 9110 tokens; names and values may not contain CR, LF or NUL",
        details=details,
    )


def check_header_limits(
    raw: Iterable[tuple[bytes, bytes]], *, max_count: int = MAX_HEADERS, max_bytes: int = MAX_HEADER_BYTES
) -> None:
    """431 ``HEADERS_TOO_LARGE`` for more than ``max_count`` header fields, or a field whose
    name or value is longer than ``max_bytes``. Neither uvicorn nor httptools bounds request
    headers (h11 does, at 16 KiB in all, but the server runs httptools): a 20 MB header value
    was read whole and handed to the app. The server's HTTP protocol also stops reading a
    request head beyond all the fields this allows (server.py, ``_BoundedHttpTools``)."""
    count = 0
    for name, value in raw:
        count += 1
        longest = max(len(name), len(value))
        if longest > max_bytes:
            shown = name.decode("latin-1")[:80]
            raise HeadersTooLarge(
                f"request header {shown!r} is {longest} bytes long; the limit is {max_bytes}",
                hint="send shorter header fields (a bearer token is well under 1 KiB)",
                details={"header": shown, "limit": max_bytes, "size": longest},
            )
    if count > max_count:
        raise HeadersTooLarge(
            f"the request has {count} header fields; the limit is {max_count}",
            hint="send fewer header fields",
            details={"limit": max_count, "count": count},
        )


def check_request_headers(raw: Iterable[tuple[bytes, bytes]]) -> None:
    """Check an ASGI request's raw header list. h11 (uvicorn) already refuses CR/LF/NUL on the
    wire; this keeps the rule true whatever server or test transport sits in front of the app."""
    for name, value in raw:
        text_name = name.decode("latin-1")
        if not _TOKEN.fullmatch(text_name):
            raise _bad_header(
                f"request header name {text_name[:80]!r} is not a valid field name",
                where="request",
                header=repr(text_name)[:120],
            )
        if b"\r" in value or b"\n" in value or b"\x00" in value:
            raise _bad_header(
                f"request header {text_name!r} contains CR, LF or NUL",
                where="request",
                header=text_name,
            )
