"""Strict reading of request bodies and header fields (DESIGN.md section 4, "Input rules").

The rules, and what each answers:

* a body over the limit (1 MiB by default) -> 413 ``PAYLOAD_TOO_LARGE``, decided *while the
  body streams in* (a declared ``Content-Length`` over the limit is refused before reading a
  byte), so an oversized or endless body never sits in memory (security.md VAL-1);
* invalid UTF-8, duplicate object keys, ``NaN`` / ``Infinity`` (and numbers that overflow to
  infinity, such as ``1e400``), nesting deeper than 64, or anything that is not JSON ->
  400 ``BAD_JSON`` with a message naming the fault and where it is;
* a header name or value containing CR, LF or NUL, or a name outside RFC 9110's token grammar
  -> 400 ``BAD_HEADER``.

Why not the stdlib defaults: ``json.loads`` keeps the last of duplicate keys silently, accepts
``NaN``/``Infinity`` as an extension, and turns ``1e400`` into ``inf`` — all of which RFC 8259
section 4 / I-JSON (RFC 7493) leave undefined and JCS (RFC 8785) forbids. Its recursion on
deep input is bounded by the interpreter (``RecursionError``), which we turn into ``BAD_JSON``
too. :func:`parse_json` is pure (bytes in, value out); :func:`read_json` adds the streaming.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.requests import Request

from ..errors import PayloadTooLarge, ValidationError

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_DEPTH",
    "read_body",
    "read_json",
    "parse_json",
    "json_depth",
    "check_header_field",
    "check_header_fields",
    "check_request_headers",
]

#: DESIGN.md section 4: request bodies over 1 MiB are refused.
DEFAULT_LIMIT = 1 << 20
#: DESIGN.md section 4: JSON nested deeper than this is refused.
MAX_DEPTH = 64

# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN = re.compile(r"[\r\n\x00]")


def _bad_json(message: str, **details: Any) -> ValidationError:
    return ValidationError(
        message,
        code="BAD_JSON",
        hint="send one JSON value encoded as UTF-8, without duplicate keys, NaN or Infinity, "
        f"nested at most {MAX_DEPTH} deep",
        details=details,
    )


# --------------------------------------------------------------------------- streaming


async def read_body(request: Request, *, limit: int = DEFAULT_LIMIT) -> bytes:
    """The request body, refusing it (413) as soon as more than ``limit`` bytes are declared or
    have arrived — the rest of an oversized body is never read."""
    declared = request.headers.get("content-length")
    if declared is not None:
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
    """Parse ``raw`` as strict JSON (RFC 8259 as I-JSON restricts it); 400 ``BAD_JSON`` else."""
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
    return value


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


def check_header_field(name: str, value: Any, *, where: str = "headers") -> None:
    """Refuse (400 ``BAD_HEADER``) a header whose name is not an RFC 9110 token or whose name or
    (string, or list of strings) value contains CR, LF or NUL — the characters that split a
    header into two on the wire (response splitting, CWE-113)."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise _bad_header(
            f"header name {str(name)[:80]!r} in {where} is not a valid field name",
            where=where,
            header=repr(name)[:120],
        )
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, str) and _FORBIDDEN.search(item):
            raise _bad_header(
                f"value of header {name!r} in {where} contains CR, LF or NUL",
                where=where,
                header=name,
            )


def check_header_fields(headers: Mapping[str, Any] | None, *, where: str = "headers") -> None:
    """:func:`check_header_field` over every entry of a headers map (e.g. a modifiedPayload's)."""
    for name, value in (headers or {}).items():
        check_header_field(name, value, where=where)


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
