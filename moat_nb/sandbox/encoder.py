"""Compact JSON for the sandbox's hot paths: orjson where it writes what the stdlib writes.

A replay's trace is ~100 KB of JSON that the sandbox writes several times (the agent's chunk,
the stored trace events, the responses), and the stdlib encoder spent ms of CPU on each. orjson
writes the same JSON value as compact UTF-8 (the texts differ only in how a float with an
exponent is spelt: ``1e16`` for ``1e+16``), except in three places, which are kept as the stdlib
has them: NaN and infinities (orjson writes ``null``; ``json.dumps(allow_nan=False)`` refuses
them, and so does :func:`dumps`), and keys that are not strings or integers beyond 64 bits
(orjson refuses them; the stdlib's text is used). Datetimes, dataclasses and subclasses of
built-in types are passed to the same fallback, which refuses them as the stdlib does. Nothing
written here is hashed as text (the audit log has its own canonical form, RFC 8785).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

__all__ = ["ORJSON_STRICT", "dumps", "dumps_finite", "dumps_text", "finite"]

#: orjson options that make it refuse (TypeError) what the stdlib encoder refuses or writes its
#: own way: datetimes, dataclasses, subclasses of str/int/dict/list.
ORJSON_STRICT = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _stdlib(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps(value: Any) -> bytes:
    """``json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))`` as
    UTF-8 bytes, at orjson's speed; raises ValueError for NaN or infinity, as it does."""
    if not finite(value):
        raise ValueError("Out of range float values are not JSON compliant")
    try:
        return orjson.dumps(value, option=ORJSON_STRICT)
    except TypeError:
        return _stdlib(value).encode("utf-8")


def dumps_finite(value: Any) -> bytes:
    """:func:`dumps` for a value known to hold no NaN or infinity (parsed by the strict parser,
    which refuses them, or checked with :func:`finite`): the check is a Python walk that costs
    as much as the stdlib's whole encoding, so it is not done twice."""
    try:
        return orjson.dumps(value, option=ORJSON_STRICT)
    except TypeError:
        return _stdlib(value).encode("utf-8")


def dumps_text(value: Any) -> str:
    """:func:`dumps_finite` as text (for SQLite TEXT columns): same precondition. A string
    orjson refuses (a lone surrogate) comes back as the stdlib writes it, for the caller's own
    check of what it stores (:func:`moat_nb.sandbox.store` refuses it, naming the field)."""
    try:
        return orjson.dumps(value, option=ORJSON_STRICT).decode("utf-8")
    except TypeError:
        return _stdlib(value)


#: Types that hold no float: a container whose items are all of these exact types is finite.
_NO_FLOAT = frozenset({str, int, bool, type(None)})


def finite(value: Any) -> bool:
    """No NaN or infinity anywhere in a JSON-like value (iterative: no recursion limit)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if not isinstance(value, dict | list | tuple):
        return True
    # A flat map of strings (headers, most properties) is settled by one C-level pass.
    if _NO_FLOAT.issuperset(map(type, value.values() if isinstance(value, dict) else value)):
        return True
    stack = [value]
    while stack:
        node = stack.pop()
        for item in node.values() if isinstance(node, dict) else node:
            if isinstance(item, float):
                if not math.isfinite(item):
                    return False
            elif isinstance(item, dict | list | tuple):
                stack.append(item)
    return True
