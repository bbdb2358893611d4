"""Camel's type converter, as far as the sandbox needs it: bodies to text and JSON, and the
``convertBodyTo`` / ``resultType`` conversions to the common Java types.

A Camel agent captures bodies as strings; :func:`to_text` is that rendering: a ``str`` as it is,
``bytes`` decoded as UTF-8, a dict or list as compact JSON (what Jackson writes), anything else
``str()``. :func:`to_json` is the ``marshal: json`` data format. :func:`capture_value` renders a
header or property value so that a captured map is valid JSON.

Conversions follow Camel's ``TypeConverter`` (a failure is a
``org.apache.camel.TypeConversionException`` caused by what Java would throw, e.g.
``java.lang.NumberFormatException``); one deliberate difference: a dict or list converted to
``java.lang.String`` becomes JSON rather than Java's ``Map.toString()`` (``{a=1}``), because the
JSON form is what every sandbox user wants to read.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from .failure import ExchangeFailure

__all__ = [
    "SUPPORTED_TYPES",
    "charset_codec",
    "java_double_text",
    "to_text",
    "to_json",
    "capture_value",
    "capture_map",
    "convert_to",
    "canonical_type",
    "java_type_of",
    "truthy",
]


def _json_default(value: Any) -> Any:
    # json cannot write Decimal, dates, bytes or sets; Jackson writes BigDecimal as a number,
    # dates as ISO text (with JavaTimeModule), byte[] as base64 (we keep the UTF-8 text: bodies
    # here are text), and collections as arrays.
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and value.as_tuple().exponent >= 0:
            return int(value)
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


# One encoder for the whole process: building a JSONEncoder per call costs as much as encoding a
# small body, and bodies are encoded at every capture point.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)


# The C encoder itself, made once: JSONEncoder.encode() builds one per call. Without a markers
# dict it does not look for cycles; a cyclic value ends in RecursionError, and then the Python
# encoder (which reports the cycle properly) takes over.
_C_ENCODER = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _json_default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )
    if getattr(json.encoder, "c_make_encoder", None) is not None
    else None
)


def to_json(value: Any, *, pretty: bool = False) -> str:
    """``marshal: json``: compact JSON as Jackson writes it (non-ASCII kept, no spaces).

    Raises ``ValueError`` for a cyclic value and ``TypeError`` for keys JSON cannot have.
    """
    if pretty:
        return _jackson_pretty(value, 0)
    if _C_ENCODER is not None and isinstance(value, dict | list):
        try:
            return "".join(_C_ENCODER(value, 0))
        except RecursionError:
            pass
    return _ENCODER.encode(value)


def _jackson_pretty(value: Any, nesting: int) -> str:
    # Jackson's DefaultPrettyPrinter (what prettyPrint's INDENT_OUTPUT uses): objects one entry
    # a line, indented two spaces per enclosing object, "key" : value; arrays inline as
    # [ 1, 2 ] (FixedSpaceIndenter, which adds no nesting); empty ones as { } and [ ].
    if isinstance(value, dict):
        if not value:
            return "{ }"
        inner = "\n" + "  " * (nesting + 1)
        entries = (
            f"{_ENCODER.encode(str(k) if not isinstance(k, str) else k)} : {_jackson_pretty(v, nesting + 1)}"
            for k, v in value.items()
        )
        return "{" + inner + ("," + inner).join(entries) + "\n" + "  " * nesting + "}"
    if isinstance(value, list | tuple | set | frozenset):
        if not value:
            return "[ ]"
        return "[ " + ", ".join(_jackson_pretty(v, nesting) for v in value) + " ]"
    return _ENCODER.encode(value)


def java_double_text(f: float) -> str:
    """Java's ``Double.toString``: plain between 10^-3 and 10^7, else ``1.5E-4`` / ``1.0E10``.

    Camel converts a Double to String with ``toString()`` (ObjectConverter / the type converter
    fallback), so ``NaN``, ``Infinity`` and ``1.0E10`` — never Python's ``nan``, ``inf`` or
    ``10000000000.0``.
    """
    if f != f:
        return "NaN"
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    if f == 0:
        return "-0.0" if math.copysign(1.0, f) < 0 else "0.0"
    if 1e-3 <= abs(f) < 1e7:
        return repr(f)  # Python's shortest repr is plain, with ".0", in this range
    sign, digits, exponent = Decimal(repr(f)).normalize().as_tuple()
    text = "".join(map(str, digits))
    power = len(text) - 1 + int(exponent)
    return f"{'-' if sign else ''}{text[0]}.{text[1:] or '0'}E{power}"


def to_text(value: Any) -> str | None:
    """A body as a Camel agent captures it: ``None`` stays ``None``, everything else is text."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, dict | list):
        try:
            return to_json(value)
        except (ValueError, TypeError):
            return str(value)  # a cycle or a non-text key: capture must not fail the run
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"  # Java's Boolean.toString
    if isinstance(value, float):
        return java_double_text(value)  # a bean's Double becomes text as Java prints it
    if isinstance(value, BaseException):
        return str(value)
    if isinstance(value, tuple | set | frozenset):
        return to_text(list(value))
    return str(value)


_SCALARS = (str, int, float, bool, type(None))


def capture_value(value: Any) -> Any:
    """A header or property value as it goes on the wire: JSON scalars as they are, else text."""
    if type(value) in _SCALARS:
        return value
    return to_text(value)


def capture_map(items: Any) -> dict[str, Any]:
    """A shallow, JSON-safe copy of a headers or properties mapping."""
    return {k: (v if type(v) in _SCALARS else to_text(v)) for k, v in items}


def truthy(value: Any) -> bool:
    """Camel's ``ObjectHelper.evaluateValuePredicate``: how a value reads as a predicate.

    Booleans are themselves; the strings ``true``/``false`` (any case) are booleans; an empty
    string, an empty collection and ``null`` are false; anything else is true. A Map is no
    ``java.util.Collection``, so an empty dict (a JSON ``{}``) is true, as any non-null value.
    """
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "false" or not text:
            return False
        return True
    if isinstance(value, list | tuple | set | frozenset):
        return bool(value)
    return True


# --------------------------------------------------------------------------- conversions


def _conversion_failure(value: Any, type_name: str, why: str, cause_type: str) -> ExchangeFailure:
    source = java_type_of(value)
    cause = ExchangeFailure(cause_type, why)
    return ExchangeFailure(
        "org.apache.camel.TypeConversionException",
        f"Error during type conversion from type: {source} to the required type: {type_name} "
        f"with value {to_text(value)!s:.200} due to {cause_type}: {why}",
        cause=cause,
    )


def java_type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "java.lang.Boolean"
    if isinstance(value, str):
        return "java.lang.String"
    if isinstance(value, int):
        return "java.lang.Integer"
    if isinstance(value, float):
        return "java.lang.Double"
    if isinstance(value, Decimal):
        return "java.math.BigDecimal"
    if isinstance(value, dict):
        return "java.util.LinkedHashMap"
    if isinstance(value, list | tuple):
        return "java.util.ArrayList"
    if isinstance(value, bytes | bytearray):
        return "byte[]"
    return type(value).__name__


def _to_int(value: Any, type_name: str) -> int:
    if isinstance(value, bool):
        raise _conversion_failure(
            value, type_name, "a Boolean is not a number", "java.lang.ClassCastException"
        )
    if isinstance(value, int):
        return value
    if isinstance(value, float | Decimal):
        return int(value)  # Java's Number.intValue() truncates
    text = to_text(value)
    try:
        return int(str(text).strip())
    except ValueError:
        raise _conversion_failure(
            value, type_name, f'For input string: "{text}"', "java.lang.NumberFormatException"
        ) from None


def _to_float(value: Any, type_name: str) -> float:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return float(value)
    text = to_text(value)
    try:
        return float(str(text).strip())
    except ValueError:
        raise _conversion_failure(
            value, type_name, f'For input string: "{text}"', "java.lang.NumberFormatException"
        ) from None


def _to_decimal(value: Any, type_name: str) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(str(value))  # BigDecimal.valueOf(double): the shortest repr
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    text = to_text(value)
    try:
        return Decimal(str(text).strip())
    except InvalidOperation:
        raise _conversion_failure(
            value,
            type_name,
            f"Character array is missing \"exponent\" mark 'e' or 'E': {text}",
            "java.lang.NumberFormatException",
        ) from None


def _to_bool(value: Any, type_name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(to_text(value)).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise _conversion_failure(
        value, type_name, f"{text!r} is neither true nor false", "java.lang.IllegalArgumentException"
    )


def _to_bytes(value: Any, type_name: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return str(to_text(value)).encode("utf-8")


def _to_string(value: Any, type_name: str) -> str | None:
    return to_text(value)


def _identity(value: Any, type_name: str) -> Any:
    return value


def _to_container(value: Any, type_name: str) -> Any:
    """``java.util.Map`` / ``List`` / ``Collection``: a map or list as it is (a LinkedHashMap from
    ``unmarshal: json`` is a Map), JSON text parsed as camel-jackson's type converter does (as
    ``${bodyAs(Map)}`` always did here, so that ``convertBodyTo`` and ``bodyAs`` agree); anything
    else has no converter. Kept on purpose: Camel core has no text-to-Map converter, that one is
    camel-jackson's JacksonTypeConverters, a fallback converter on only with the global option
    ``CamelJacksonEnableTypeConverter=true``; the sandbox assumes it is on, as in most JSON apps
    (README, "The route engine")."""
    want_map = type_name.endswith("Map")
    if want_map and isinstance(value, Mapping):
        return value
    if not want_map and isinstance(value, list | tuple | set | frozenset):
        return value if isinstance(value, list) else list(value)
    if isinstance(value, str | bytes | bytearray):
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise _conversion_failure(
                value, type_name, f"invalid JSON: {exc}", "java.io.IOException"
            ) from None
        if isinstance(parsed, dict if want_map else list):
            return parsed
        what = "an object" if want_map else "an array"
        raise _conversion_failure(value, type_name, f"the JSON is not {what}", "java.io.IOException")
    raise _conversion_failure(
        value, type_name, "no type converter available", "org.apache.camel.NoTypeConversionAvailableException"
    )


_CONVERTERS: dict[str, Callable[[Any, str], Any]] = {
    "java.lang.String": _to_string,
    "java.lang.Integer": _to_int,
    "java.lang.Long": _to_int,
    "java.lang.Short": _to_int,
    "java.math.BigInteger": _to_int,
    "java.lang.Double": _to_float,
    "java.lang.Float": _to_float,
    "java.math.BigDecimal": _to_decimal,
    "java.lang.Boolean": _to_bool,
    "byte[]": _to_bytes,
    "java.lang.Object": _identity,
    "java.util.Map": _to_container,
    "java.util.HashMap": _to_container,
    "java.util.LinkedHashMap": _to_container,
    "java.util.List": _to_container,
    "java.util.ArrayList": _to_container,
    "java.util.Collection": _to_container,
}

# Camel's ObjectHelper.loadSimpleType accepts the simple names of java.lang types and primitives.
_ALIASES = {
    "String": "java.lang.String",
    "Integer": "java.lang.Integer",
    "int": "java.lang.Integer",
    "Long": "java.lang.Long",
    "long": "java.lang.Long",
    "Short": "java.lang.Short",
    "short": "java.lang.Short",
    "Double": "java.lang.Double",
    "double": "java.lang.Double",
    "Float": "java.lang.Float",
    "float": "java.lang.Float",
    "Boolean": "java.lang.Boolean",
    "boolean": "java.lang.Boolean",
    "BigDecimal": "java.math.BigDecimal",
    "BigInteger": "java.math.BigInteger",
    "Object": "java.lang.Object",
    "java.lang.byte[]": "byte[]",
    "Map": "java.util.Map",
    "HashMap": "java.util.HashMap",
    "LinkedHashMap": "java.util.LinkedHashMap",
    "List": "java.util.List",
    "ArrayList": "java.util.ArrayList",
    "Collection": "java.util.Collection",
}

#: The Java types ``convertBodyTo`` and ``resultType`` accept (and their simple names).
SUPPORTED_TYPES: tuple[str, ...] = tuple(_CONVERTERS)


def canonical_type(type_name: str) -> str | None:
    """The fully qualified name of a supported type, or ``None`` when it is not supported."""
    name = _ALIASES.get(type_name.strip(), type_name.strip())
    return name if name in _CONVERTERS else None


# java.nio.charset.Charset.checkName: a letter or digit, then letters, digits, - + : _ .
_CHARSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-+:_.]*\Z")


def charset_codec(name: str) -> str | None:
    """The Python codec for the Java charset ``name``, or ``None`` when Java's
    ``Charset.isSupported`` would refuse it (an illegal name or an unknown charset)."""
    if not _CHARSET_NAME.match(name):
        return None
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None
    # Only text encodings are charsets (not base64, rot13, zlib ...).
    return info.name if getattr(info, "_is_text_encoding", True) else None


def convert_to(value: Any, type_name: str, charset: str | None = None) -> Any:
    """Convert ``value`` to the Java type ``type_name`` (a name :func:`canonical_type` accepts).

    ``None`` converts to ``None`` (Camel's converters return null for a null value). A failure
    raises :class:`ExchangeFailure` (``org.apache.camel.TypeConversionException``).
    ``charset`` (a codec from :func:`charset_codec`) is the exchange's ``CamelCharsetName``:
    Camel's converters decode ``byte[]`` and encode text with it (UTF-8 otherwise), replacing
    what the charset cannot map as Java's ``new String(bytes, cs)``/``getBytes(cs)`` do.
    """
    if value is None:
        return None
    name = _ALIASES.get(type_name, type_name)
    if charset is not None:
        if isinstance(value, bytes | bytearray):
            if name in ("byte[]", "java.lang.Object"):
                return bytes(value)
            value = bytes(value).decode(charset, "replace")
        elif name == "byte[]":
            return str(to_text(value)).encode(charset, "replace")
    return _CONVERTERS[name](value, name)
