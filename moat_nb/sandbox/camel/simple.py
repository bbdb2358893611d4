"""Apache Camel's Simple language, parsed once and compiled into Python closures.

Follows the Camel 4 "Simple" language page
(https://camel.apache.org/components/latest/languages/simple-language.html) and, where the page
is silent, Camel's own implementation, which the comments quote: ``SimpleTokenizer``,
``SimplePredicateParser``, ``ast.BinaryExpression``, ``support.ObjectHelper`` (``typeCoerceEquals``,
``typeCoerceCompare``, ``typeCoerceContains``, ``createIterable``) and ``PredicateBuilder``.

Two modes, as in Camel:

* **expression** (``compile_simple(text)``): a template, literal text mixed with ``${...}``
  functions. A text that is one function alone evaluates to the raw object (a dict stays a dict);
  mixed text evaluates to a ``str`` in which ``null`` renders as nothing. ``\\n``, ``\\t``, ``\\r``
  and ``\\}`` are escapes; ``${header.n}++`` / ``--`` increment and decrement a number.
* **predicate** (``compile_predicate(text)``): values (functions, ``'single'`` / ``"double"``
  quoted literals that may embed functions, numbers, ``true``, ``false``, ``null``) joined by
  binary operators (which need a space on both sides, as Camel's tokenizer requires) and by
  ``&&`` / ``||``. Camel gives ``&&`` and ``||`` *the same* precedence and folds them left to right
  (``SimplePredicateParser.prepareLogicalExpressions``): ``a || b && c`` is ``(a || b) && c``.
  There are no parentheses. A lone value is read with Camel's ``evaluateValuePredicate``.

Comparisons follow ``typeCoerceEquals`` / ``typeCoerceCompare`` branch by branch, quirks included,
because a route must take here the branch it takes in Camel: two texts compare as numbers only when
both are integer texts (``'10.5' > '9'`` is false, as text), and a Double meets an Integer as two
Longs (``150.5 > 150`` is false, ``150.5 == 150`` is true).

Camel trims the expression text before parsing (the ``trim`` option defaults to true); so do we.

Every syntax error surfaces in :func:`compile_simple` as
:class:`~moat_nb.errors.SimpleSyntaxError` (position and hint included); evaluation raises only
:class:`SimpleEvaluationError`, which carries the Java exception type Camel would throw
(``org.apache.camel.TypeConversionException``, ...) so that the engine can record it and a
``doCatch`` can match it.

Deliberate differences from Camel, each cheaper to explain than to emulate:

* Stricter parsing. Camel turns stray unquoted words in a predicate into literal text and ANDs
  adjacent values together (``${header.a} = 5`` is then always true); here they are syntax errors.
  Unknown functions, bad date patterns, ``bodyAs`` types, ``range`` literals, regular expressions
  and time zones fail at compile time instead of at the first exchange.
* A dict or list renders as JSON (the project's ``to_text``), not as Java's ``{a=1}``.
* ``${body.x}`` on a *string* body that holds JSON does not parse it (neither does Camel): it fails
  with ``RuntimeBeanExpressionException`` as Camel's bean OGNL does; unmarshal the body first.
* Regular expressions run on Python's ``re`` (``fullmatch``, like Java's ``String.matches``) after
  translating the Java syntax a route would use (``\\Q..\\E``, the POSIX ``\\p{Alpha}`` classes,
  ``(?<name>..)``, ``\\k<name>``, ``\\z``); what Python would silently read differently (nested classes,
  ``&&`` intersections) or cannot do (Unicode ``\\p{L}``) is rejected at compile time.
* Dates are formatted in UTC (the sandbox JVM's time zone), English month and day names, and ISO
  weeks are not used: ``w``/``W``/``Y`` follow Java's default US week (Sunday first).
"""

from __future__ import annotations

import math
import re
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple
from zoneinfo import ZoneInfo

from moat_nb.errors import SimpleSyntaxError

from .conversion import canonical_type, convert_to, to_text, truthy
from .conversion import java_double_text as _java_double_text
from .failure import ExchangeFailure

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = [
    "SimpleExpression",
    "SimpleEvaluationError",
    "compile_simple",
    "compile_predicate",
    "java_regex",
    "SUPPORTED_FUNCTIONS",
    "SUPPORTED_OPERATORS",
]

# --------------------------------------------------------------------------- errors

TYPE_CONVERSION = "org.apache.camel.TypeConversionException"
INVALID_PAYLOAD = "org.apache.camel.InvalidPayloadException"
BEAN_EXPRESSION = "org.apache.camel.language.bean.RuntimeBeanExpressionException"
ILLEGAL_SYNTAX = "org.apache.camel.language.simple.types.SimpleIllegalSyntaxException"
ILLEGAL_ARGUMENT = "java.lang.IllegalArgumentException"
EXCHANGE_EXCEPTION = "org.apache.camel.CamelExchangeException"
PATTERN_SYNTAX = "java.util.regex.PatternSyntaxException"
#: Only for a Python error the evaluator did not foresee (a bug, or a bean's odd object).
EXPRESSION_EVALUATION = "org.apache.camel.ExpressionEvaluationException"


class SimpleEvaluationError(ExchangeFailure):
    """A Simple expression failed while evaluating against an exchange.

    ``error_type`` is the Java class Camel would throw (e.g.
    ``org.apache.camel.TypeConversionException`` for ``${bodyAs(Integer)}`` on ``"abc"``). It is an
    :class:`~moat_nb.sandbox.camel.failure.ExchangeFailure`, so the engine can fail the exchange
    with it as it is and a ``doCatch`` matches it by Java superclass.
    """

    def __init__(
        self,
        message: str,
        *,
        error_type: str,
        expression: str | None = None,
        cause: ExchangeFailure | None = None,
    ) -> None:
        super().__init__(error_type, message, cause=cause)
        self.expression = expression


def _fail(error_type: str, message: str) -> SimpleEvaluationError:
    return SimpleEvaluationError(message, error_type=error_type)


SUPPORTED_FUNCTIONS = (
    "${body} ${in.body} ${body.x} ${body[x]} ${body?.x} ${body[0]} ${body[last]} "
    "${bodyAs(Type)} ${mandatoryBodyAs(Type)} ${bodyType} ${bodyOneLine} "
    "${header.x} ${headers.x} ${header[x]} ${in.header.x} ${headers} "
    "${exchangeProperty.x} ${exchangeProperty[x]} ${exchangeId} ${id} ${routeId} ${fromRouteId} "
    "${camelId} ${exception} ${exception.message} ${exception.stacktrace} "
    "${date:now} ${date:now:pattern} ${date:millis} ${date:header.x:pattern} "
    "${date:exchangeProperty.x:pattern} ${date-with-timezone:now:zone:pattern} "
    "${random(max)} ${random(min,max)} ${null}; "
    "after body/header/property: .key, [key], ?.key and the methods "
    "length() size() isEmpty() toUpperCase() toLowerCase() trim() toString() keySet() values()"
)

SUPPORTED_OPERATORS = (
    "== != =~ !=~ > >= < <= contains !contains ~~ !~~ regex !regex in !in range !range "
    "is !is startsWith !startsWith endsWith !endsWith (also 'starts with', 'ends with'), "
    "joined by && and ||"
)

_PREDICATE_HINT = (
    "a predicate is values joined by operators, each operator with a space on both sides: "
    "${header.total} > 100 && ${header.type} in 'gold,silver'. Values: ${...}, 'text', \"text\", "
    "numbers, true, false, null. Operators: " + SUPPORTED_OPERATORS
)

# --------------------------------------------------------------------------- values and coercion

_NUMBER_TYPES = (int, float, Decimal)
# ObjectHelper.isNumber: an optional minus, then digits. Python's int() would also take "1_0" and
# non-ASCII digits, which Java's parsers do not; so every text goes through these patterns first.
_INT_TEXT = re.compile(r"-?[0-9]+")
# Java's Double.valueOf (after its own trim): decimals, exponents, NaN, Infinity, a d/f suffix.
_DOUBLE_TEXT = re.compile(r"[+-]?(?:NaN|Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)[fFdD]?")
# Python refuses to convert very long digit strings (int_max_str_digits); Java's Long would overflow.
_MAX_DIGITS = 4000


def _int_text(text: str) -> int | None:
    if len(text) <= _MAX_DIGITS and _INT_TEXT.fullmatch(text):
        return int(text)
    return None


def _double_text(text: str) -> float | None:
    text = text.strip()
    if len(text) <= _MAX_DIGITS and _DOUBLE_TEXT.fullmatch(text):
        return float(text.rstrip("fFdD") if text[-1] in "fFdD" else text)
    return None


def _number(value: Any) -> int | float | Decimal | None:
    """``value`` as a number when Camel's converter would make a Long or a Double of it."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, _NUMBER_TYPES):
        return value
    if isinstance(value, str):
        n = _int_text(value)
        return n if n is not None else _double_text(value)
    return None


def _num_cmp(a: Any, b: Any) -> int:
    # Java's Double.compareTo puts NaN above every number and equal to itself.
    a_nan, b_nan = a != a, b != b
    if a_nan or b_nan:
        return int(a_nan) - int(b_nan)
    return (a > b) - (a < b)


def _java_bool(text: str) -> bool:
    return text.lower() == "true"  # Boolean.valueOf: "true" ignoring case, anything else false


def _text(value: Any) -> str:
    """A value as text for a template or a string operator; ``null`` is empty."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, float):
        return _java_double_text(value)  # Double.toString: 1.0E7, not 10000000.0
    if isinstance(value, datetime):
        return _java_date_text(value)  # Date.toString: Tue Mar 05 14:07:09 UTC 2024
    if isinstance(value, Mapping) and not isinstance(value, dict):
        value = dict(value)  # Headers render as the map they hold
    return str(to_text(value))


def _str_eq(a: str, b: str, ignore_case: bool) -> bool:
    return a.lower() == b.lower() if ignore_case else a == b


# ObjectHelper.isFloatingNumber: an optional minus, digits and at most one dot (at least one digit
# here: Camel would accept "." and then fail in Double.valueOf).
_FLOAT_TEXT = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
# Long.valueOf: an optional sign, then digits, within 64 bits.
_LONG_TEXT = re.compile(r"[+-]?[0-9]{1,19}")
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_int_text(text: str) -> bool:
    return len(text) <= _MAX_DIGITS and _INT_TEXT.fullmatch(text) is not None


def _is_float_text(text: str) -> bool:
    return len(text) <= _MAX_DIGITS and _FLOAT_TEXT.fullmatch(text) is not None


def _cmp(a: Any, b: Any) -> int:
    if isinstance(a, float) or isinstance(b, float):
        return _num_cmp(a, b)
    return (a > b) - (a < b)


def _date_millis(d: datetime) -> int:
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return (d - _EPOCH) // timedelta(milliseconds=1)


def _to_long(value: Any) -> int | None:
    """``TypeConverter.tryConvertTo(Long.class, value)``: ``ObjectConverter.toLong(Number)`` is
    ``longValue()`` (a Double is truncated, NaN gives null), ``toLong(String)`` is ``Long.valueOf``
    (a failure gives null), a ``Date`` is its epoch millis."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float | Decimal):
        if value != value:
            return None
        if isinstance(value, float) and math.isinf(value):
            return _LONG_MAX if value > 0 else _LONG_MIN  # Java's (long) cast saturates
        return max(_LONG_MIN, min(_LONG_MAX, int(value)))
    if isinstance(value, str):
        if _LONG_TEXT.fullmatch(value):
            n = int(value)
            return n if _LONG_MIN <= n <= _LONG_MAX else None
        return None
    if isinstance(value, datetime):
        return _date_millis(value)
    return None


def _to_double(value: Any) -> float | None:
    """``TypeConverter.tryConvertTo(Double.class, value)``: a Number's ``doubleValue()``, a
    String's ``Double.valueOf``; null when there is no conversion."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, _NUMBER_TYPES):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        return _double_text(value)
    return None


def _to_boolean(value: Any) -> bool | None:
    """``org.apache.camel.util.ObjectHelper.toBoolean`` (the Object to Boolean converter):
    "true"/"false" in any case, an Integer is ``> 0``, anything else null."""
    if isinstance(value, bool):
        return value
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        low = value.lower()
        return True if low == "true" else False if low == "false" else None
    if _is_int(value) and -(2**31) <= value < 2**31:
        return value > 0
    return None


def _java_string(value: Any) -> str:
    """``TypeConverter.tryConvertTo(String.class, value)``: the value's ``toString()``."""
    return _text(value)


def _java_date_text(d: datetime) -> str:
    """``java.util.Date.toString()`` in the sandbox JVM's zone (UTC): ``Tue Mar 05 14:07:09 UTC 2024``."""
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return _date_to_string()(d.astimezone(UTC))


@lru_cache(maxsize=1)
def _date_to_string() -> Callable[[datetime], str]:
    return _compile_date_pattern("EEE MMM dd HH:mm:ss zzz yyyy")


def _java_class(value: Any) -> Any:
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, Mapping):
        return Mapping
    if isinstance(value, list | tuple):
        return list
    if isinstance(value, datetime):
        return datetime
    return type(value)


def _java_equal(a: Any, b: Any, ignore_case: bool) -> bool:
    """``org.apache.camel.util.ObjectHelper.equal``: Java's ``equals``, no coercion."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    if ignore_case and isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    if _java_class(a) is not _java_class(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # an exotic bean object whose __eq__ fails is simply not equal
        return False


def _convert_like(value: Any, like: Any) -> Any:
    """``TypeConverter.tryConvertTo(like.getClass(), value)`` for the types an exchange holds."""
    if isinstance(like, bool):
        return _to_boolean(value)
    if isinstance(like, str):
        return None if value is None else _java_string(value)
    if isinstance(like, int):
        return _to_long(value)
    if isinstance(like, float):
        return _to_double(value)
    if isinstance(like, Decimal):
        if isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool):
            return Decimal(value) if not isinstance(value, float) else Decimal(repr(value))
        if isinstance(value, str) and _double_text(value) is not None:
            try:
                return Decimal(value.strip())
            except ArithmeticError:
                return None
        return None
    if isinstance(like, datetime) and isinstance(value, datetime):
        return value
    return None


def _try_converters(left: Any, right: Any, ignore_case: bool) -> bool:
    # ObjectHelper.tryConverters: equals, then the left converted to the right's type, then the
    # right converted to the left's.
    if _java_equal(left, right, ignore_case):
        return True
    if _java_class(left) is _java_class(right):
        return False
    value = _convert_like(left, right)
    if value is not None and _java_equal(value, right, ignore_case):
        return True
    value = _convert_like(right, left)
    return value is not None and _java_equal(left, value, ignore_case)


def _equals(left: Any, right: Any, ignore_case: bool = False) -> bool:
    """Camel's ``ObjectHelper.typeCoerceEquals``, branch by branch.

    Two integer texts compare as numbers (``'01' == '1'``), a text meets an Integer/Long through
    ``Integer.valueOf`` only when it is an integer text (``'100.0' == 100`` is false), a Double
    through ``Double.valueOf``, a Boolean through ``Boolean.valueOf``. Other pairs go through the
    type converter: a Double meets an Integer by being converted to one (``150.5 == 150`` is
    true in Camel), an Integer meets a Boolean as ``> 0``.
    """
    if left is None or right is None:
        return left is right
    if isinstance(left, str):
        if isinstance(right, str):
            if _is_int_text(left) and _is_int_text(right):
                return int(left) == int(right)
            return _str_eq(left, right, ignore_case)
        if _is_int(right) and _is_int_text(left):
            return int(left) == right
        if isinstance(right, float) and _is_float_text(left):
            return _num_cmp(float(left), right) == 0
        if isinstance(right, bool):
            return _java_bool(left) == right
        return _try_converters(left, right, ignore_case)
    if isinstance(right, str) and _is_int(left) and _is_int_text(right):
        return left == int(right)
    if _is_int(left) and _is_int(right):
        return left == right
    if isinstance(left, float) and isinstance(right, float):
        return _num_cmp(left, right) == 0
    if isinstance(right, str) and isinstance(left, bool):
        return left == _java_bool(right)
    return _try_converters(left, right, ignore_case)


def _compare(left: Any, right: Any) -> int:
    """Camel's ``ObjectHelper.typeCoerceCompare`` (both values non-null), branch by branch.

    Two texts compare as numbers only when both are integer texts, else as text (``'10.5' < '9'``);
    a text meets an Integer/Long when it is an integer text and a Double when it is a decimal text.
    Everything else is first tried as two Longs, so a Double is truncated (``150.5 > 150`` is false
    in Camel), then as two Doubles, then by converting one side to the other's type.
    """
    if isinstance(left, str) and isinstance(right, str):
        if _is_int_text(left) and _is_int_text(right):
            return _cmp(int(left), int(right))
        return _cmp(left, right)
    if _is_int(left) and _is_int(right):
        return _cmp(left, right)
    if isinstance(left, float) and isinstance(right, float):
        return _num_cmp(left, right)
    if isinstance(left, str):
        if _is_int(right) and _is_int_text(left):
            return _cmp(int(left), right)
        if isinstance(right, float) and _is_float_text(left):
            return _num_cmp(float(left), right)
        if isinstance(right, bool):
            return _cmp(_java_bool(left), right)
    if isinstance(right, str):
        if _is_int(left) and _is_int_text(right):
            return _cmp(left, int(right))
        if isinstance(left, bool):
            return _cmp(left, _java_bool(right))
    a, b = _to_long(left), _to_long(right)
    if a is not None and b is not None:
        return _cmp(a, b)
    x, y = _to_double(left), _to_double(right)
    if x is not None and y is not None:
        return _num_cmp(x, y)
    if isinstance(right, str) and not isinstance(left, str):
        return -_compare(right, left)
    # "prefer to coerce to the right hand side at first", then the left
    value = _convert_like(left, right)
    if value is not None:
        try:
            return -_cmp(right, value)
        except TypeError:
            pass
    value = _convert_like(right, left)
    if value is not None:
        try:
            return _cmp(left, value)
        except TypeError:
            pass
    a_text, b_text = _java_string(left), _java_string(right)
    return _cmp(a_text, b_text)


def _gt(left: Any, right: Any) -> bool:
    return left is not None and right is not None and _compare(left, right) > 0


def _lt(left: Any, right: Any) -> bool:
    return left is not None and right is not None and _compare(left, right) < 0


def _ge(left: Any, right: Any) -> bool:
    # PredicateBuilder.isGreaterThanOrEqualTo: two nulls are equal, one null is not comparable.
    if left is None or right is None:
        return left is right
    return _compare(left, right) >= 0


def _le(left: Any, right: Any) -> bool:
    if left is None or right is None:
        return left is right
    return _compare(left, right) <= 0


def _entry_text(key: Any, value: Any) -> str:
    # A Map iterates as its entries; Camel compares a value with an entry through its toString.
    return f"{_text(key)}={'null' if value is None else _text(value)}"


def _iterate(value: Any) -> list[Any]:
    """Camel's ``ObjectHelper.createIterable`` with the default comma delimiter."""
    if value is None:
        return []
    if isinstance(value, str):
        if "," not in value:
            return [value] if value else []
        # StringHelper.splitOnCharacterAsIterator: one leading and one trailing comma are
        # skipped, values are not trimmed ('gold, silver' holds " silver").
        if value.startswith(","):
            value = value[1:]
        if value.endswith(","):
            value = value[:-1]
        return value.split(",")
    if isinstance(value, Mapping):
        return [_entry_text(k, v) for k, v in value.items()]
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    return [value]


def _java_equals(a: Any, b: Any) -> bool:
    # Collection.contains uses equals(): no type coercion, Integer(1) is not Double(1.0).
    if type(a) is not type(b) and not (isinstance(a, Mapping) and isinstance(b, Mapping)):
        return False
    try:
        return bool(a == b)
    except Exception:
        return False


def _contains(left: Any, right: Any, ignore_case: bool = False) -> bool:
    """Camel's ``ObjectHelper.typeCoerceContains``: substring of a string, member of a collection."""
    if left is None or right is None:
        return left is right
    if isinstance(left, str):
        sub = _text(right)
        return sub.lower() in left.lower() if ignore_case else sub in left
    if isinstance(left, list | tuple | set | frozenset):
        if ignore_case:
            low = _text(right).lower()
            return any(low in _text(item).lower() for item in left)
        return any(_java_equals(item, right) for item in left)
    return any(_equals(right, item, ignore_case) for item in _iterate(left))


def _starts_with(left: Any, right: Any) -> bool:
    if left is None or right is None:
        return left is right
    return _text(left).startswith(_text(right))


def _ends_with(left: Any, right: Any) -> bool:
    if left is None or right is None:
        return left is right
    return _text(left).endswith(_text(right))


def _regex_matches(value: Any, pattern: re.Pattern[str]) -> bool:
    # PredicateBuilder.regex: Matcher.matches(), i.e. the whole text; null never matches.
    return value is not None and pattern.fullmatch(_text(value)) is not None


# java.util.regex.Pattern's POSIX classes (US-ASCII), as the inside of a Python character class.
_POSIX_CLASSES = {
    "Lower": "a-z",
    "Upper": "A-Z",
    "ASCII": "\\x00-\\x7f",
    "Alpha": "a-zA-Z",
    "Digit": "0-9",
    "Alnum": "a-zA-Z0-9",
    "Punct": "!-/:-@\\[-`{-~",
    "Graph": "a-zA-Z0-9!-/:-@\\[-`{-~",
    "Print": " a-zA-Z0-9!-/:-@\\[-`{-~",
    "Blank": " \\t",
    "Cntrl": "\\x00-\\x1f\\x7f",
    "XDigit": "0-9a-fA-F",
    "Space": " \\t\\n\\x0b\\f\\r",
}
_REGEX_HINT = (
    "Java regex syntax minus Unicode properties, class unions and intersections: "
    "the POSIX classes, \\Q..\\E, (?<name>..) and \\k<name> are supported (Python re underneath)"
)
_POSIX_NAMES = ", ".join(f"\\p{{{name}}}" for name in _POSIX_CLASSES)
_POSIX_CLASS = re.compile(r"\\([pP])\{(?:Is)?(\w+)\}")
_NAMED_GROUP = re.compile(r"\(\?<([A-Za-z][A-Za-z0-9]*)>")
_BACK_REFERENCE = re.compile(r"\\k<([A-Za-z][A-Za-z0-9]*)>")


def java_regex(source: str) -> str:
    """A ``java.util.regex.Pattern`` as Python ``re`` syntax, where the two differ in a way a
    route would hit: ``\\Q...\\E`` quoting, the POSIX classes ``\\p{Alpha}`` ..., named groups
    ``(?<name>...)`` and ``\\k<name>``, ``\\z``. Raises ``ValueError`` for what Python would
    read differently without an error (nested classes and ``&&`` intersections in a class,
    Unicode ``\\p{..}`` properties)."""
    out: list[str] = []
    i, n, in_class = 0, len(source), False
    while i < n:
        c = source[i]
        if c == "\\" and i + 1 < n:
            nxt = source[i + 1]
            if nxt == "Q":
                end = source.find("\\E", i + 2)
                quoted = source[i + 2 :] if end < 0 else source[i + 2 : end]
                out.append(re.escape(quoted))
                i = n if end < 0 else end + 2
                continue
            if nxt in "pP":
                m = _POSIX_CLASS.match(source, i)
                if m is None or m.group(2) not in _POSIX_CLASSES:
                    shown = m.group(0) if m else source[i : i + 3]
                    raise ValueError(f"{shown}: only Java's POSIX classes are supported: {_POSIX_NAMES}")
                ranges = _POSIX_CLASSES[m.group(2)]
                negated = m.group(1) == "P"
                if in_class:
                    if negated:
                        raise ValueError(f"{m.group(0)} inside a character class is not supported")
                    out.append(ranges)
                else:
                    out.append(f"[{'^' if negated else ''}{ranges}]")
                i = m.end()
                continue
            if nxt == "k" and not in_class:
                m = _BACK_REFERENCE.match(source, i)
                if m:
                    out.append(f"(?P={m.group(1)})")
                    i = m.end()
                    continue
            if nxt == "z" and not in_class:
                out.append("\\Z")  # Java's \z is Python's \Z (the very end)
                i += 2
                continue
            out.append(source[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "[":
                raise ValueError("nested character classes (Java's [a-z[0-9]] union) are not supported")
            if source.startswith("&&", i):
                raise ValueError("character class intersection (&&) is not supported")
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            # a "]" or "^]" right after "[" is a literal in both languages
            if source.startswith("^", i):
                out.append("^")
                i += 1
            if source.startswith("]", i):
                out.append("\\]")
                i += 1
            continue
        if c == "(":
            m = _NAMED_GROUP.match(source, i)
            if m:
                out.append(f"(?P<{m.group(1)}>")
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _compile_regex(source: str) -> re.Pattern[str]:
    """Java regex syntax compiled with Python's ``re`` (see :func:`java_regex`); raises
    ``ValueError`` with the reason when it cannot be."""
    try:
        return re.compile(java_regex(source))
    except (re.error, RecursionError, OverflowError, ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None


_RANGE_TEXT = re.compile(r"([0-9]+)\.\.([0-9]+)")  # BinaryExpression.RANGE_PATTERN


def _in_range(value: Any, low: str, high: str) -> bool:
    # Camel builds ``value >= 'low' && value <= 'high'`` with the bounds as text constants.
    return _ge(value, low) and _le(value, high) if value is not None else False


def _is_number(v: Any) -> bool:
    return isinstance(v, _NUMBER_TYPES) and not isinstance(v, bool)


# ``is`` / ``!is``: Java's instanceof, for the Java types a sandbox value stands for.
_INSTANCE_OF: dict[str, Callable[[Any], bool]] = {
    "String": lambda v: isinstance(v, str),
    "CharSequence": lambda v: isinstance(v, str),
    "Integer": _is_int,
    "Long": _is_int,
    "Short": _is_int,
    "BigInteger": _is_int,
    "Double": lambda v: isinstance(v, float),
    "Float": lambda v: isinstance(v, float),
    "BigDecimal": lambda v: isinstance(v, Decimal),
    "Number": _is_number,
    "Boolean": lambda v: isinstance(v, bool),
    "Map": lambda v: isinstance(v, Mapping),
    "HashMap": lambda v: isinstance(v, Mapping),
    "LinkedHashMap": lambda v: isinstance(v, Mapping),
    "List": lambda v: isinstance(v, list | tuple),
    "ArrayList": lambda v: isinstance(v, list | tuple),
    "Collection": lambda v: isinstance(v, list | tuple | set | frozenset),
    "Iterable": lambda v: isinstance(v, list | tuple | set | frozenset | str),
    "Date": lambda v: isinstance(v, datetime),
    "Throwable": lambda v: isinstance(v, BaseException),
    "Exception": lambda v: isinstance(v, BaseException),
    "Object": lambda v: v is not None,
    "byte[]": lambda v: isinstance(v, bytes | bytearray),
}


def _instance_test(name: str) -> Callable[[Any], bool] | None:
    name = name.strip().strip("'\"")
    for package in ("java.lang.", "java.util.", "java.math."):
        if name.startswith(package):
            name = name[len(package) :]
            break
    return _INSTANCE_OF.get(name)


# --------------------------------------------------------------------------- OGNL on values
#
# "OGNL expression support" in the Simple page: ``${body.address.zip}``, ``${body[items][0]}``,
# ``${body?.address}`` (null safe), ``${body[last]}``. Camel invokes each name as a method through
# the bean component ("Camel's OGNL support is for invoking methods only"), and a key or index in
# brackets reads a Map or a List (BeanExpression.lookupResult); we support those keys and indexes
# and a handful of no-argument Java methods. A name that is no method fails, on a Map too: Camel's
# BeanInfo finds no method ``customerId`` (nor ``getCustomerId``) on a LinkedHashMap, and null
# safety (``?.``) guards against a null, not a missing method.


class JavaClass:
    """What ``getClass()`` returns: the Simple page's "Camel understands the shorthand names for
    getters", so ``${exception.class.name}`` is ``getClass().getName()`` and
    ``${body.class.simpleName}`` is ``getClass().getSimpleName()`` (the Java class the engine
    stands a value for: ``java.util.LinkedHashMap`` for a dict, the ``errorType`` for a failure).
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JavaClass) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def simple_name(self) -> str:
        return self.name.rsplit(".", 1)[-1].rsplit("$", 1)[-1]

    def __str__(self) -> str:
        return f"class {self.name}"  # Class.toString()


_JAVA_WHITESPACE = "".join(chr(i) for i in range(33))  # String.trim() strips every char <= ' '
_SIZED = (str, list, tuple, set, frozenset, Mapping)
_METHODS: dict[str, tuple[tuple[type, ...] | type, Callable[[Any], Any]]] = {
    "length": (str, len),
    "size": ((list, tuple, set, frozenset, Mapping), len),
    "isEmpty": (_SIZED, lambda v: len(v) == 0),
    "toUpperCase": (str, str.upper),
    "toLowerCase": (str, str.lower),
    "trim": (str, lambda v: v.strip(_JAVA_WHITESPACE)),
    "toString": (object, _text),
    "keySet": (Mapping, lambda v: list(v.keys())),
    "values": (Mapping, lambda v: list(v.values())),
    "class": (object, lambda v: JavaClass(_java_type(v))),
    "getClass": (object, lambda v: JavaClass(_java_type(v))),
    "name": (JavaClass, lambda c: c.name),
    "getName": (JavaClass, lambda c: c.name),
    "simpleName": (JavaClass, lambda c: c.simple_name),
    "getSimpleName": (JavaClass, lambda c: c.simple_name),
    "canonicalName": (JavaClass, lambda c: c.name.replace("$", ".")),
    "getCanonicalName": (JavaClass, lambda c: c.name.replace("$", ".")),
}


def _java_type(value: Any) -> str:
    if isinstance(value, ExchangeFailure):
        return value.error_type
    if isinstance(value, JavaClass):
        return "java.lang.Class"
    if isinstance(value, bool):
        return "java.lang.Boolean"
    if isinstance(value, str):
        return "java.lang.String"
    if isinstance(value, int):
        return "java.lang.Integer" if -(2**31) <= value < 2**31 else "java.lang.Long"
    if isinstance(value, float):
        return "java.lang.Double"
    if isinstance(value, Decimal):
        return "java.math.BigDecimal"
    if isinstance(value, Mapping):
        return "java.util.LinkedHashMap"
    if isinstance(value, list | tuple):
        return "java.util.ArrayList"
    if isinstance(value, bytes | bytearray):
        return "byte[]"
    if isinstance(value, datetime):
        return "java.util.Date"
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _no_method(value: Any, name: str) -> SimpleEvaluationError:
    shown = _text(value)
    if len(shown) > 100:
        shown = shown[:100] + "..."
    if isinstance(value, str):
        advice = ". Text is not parsed: unmarshal JSON first (unmarshal: json) to navigate it"
    elif isinstance(value, Mapping) and not name.endswith(")"):
        # In place of the dotted name, wherever it stands: "as in ${body[qty]}" was wrong for
        # ${body[items][0].qty} and for ${header.customer.tier} (found by review).
        advice = f". OGNL calls methods only: read a Map's key in brackets, [{name}] in place of .{name}"
    else:
        advice = ""
    return _fail(
        BEAN_EXPRESSION,
        f"Failed to invoke method: {name} on {_java_type(value)} due to: "
        f"org.apache.camel.component.bean.MethodNotFoundException: Method with name: {name} not found "
        f"on bean: {shown} of type: {_java_type(value)}{advice}",
    )


def _exception_message(exc: BaseException) -> str | None:
    if isinstance(exc, ExchangeFailure):
        return exc.message  # getMessage(): null when the exception was built without one
    message = getattr(exc, "message", None)
    if not isinstance(message, str):
        message = str(exc)
    return message or None  # Throwable.getMessage() is null when there is none


def _stack_trace(exc: BaseException) -> str:
    if isinstance(exc, ExchangeFailure):
        return exc.stack_trace()
    return "".join(traceback.format_exception(exc))


def _exception_member(exc: BaseException, name: str) -> Any:
    if name in ("message", "getMessage", "localizedMessage", "getLocalizedMessage"):
        return _exception_message(exc)
    if name in ("cause", "getCause"):
        return exc.cause if isinstance(exc, ExchangeFailure) else exc.__cause__
    if name == "stacktrace":
        return _stack_trace(exc)
    if name in ("toString",):
        return _text(exc)
    if name in ("class", "getClass"):
        return JavaClass(_java_type(exc))
    raise _no_method(exc, name)


def _map_get(mapping: Mapping[Any, Any], key: str) -> Any:
    value = mapping.get(key)
    if value is None and type(mapping) is dict:
        n = _int_text(key)
        if n is not None:
            value = mapping.get(n)  # a bean's dict may be keyed by ints; JSON keys are text
    return value


def _member(value: Any, name: str) -> Any:
    # BeanExpression.invokeOgnlMethod invokes each name as a method (BeanInfo.getOperations): on a
    # Map, a java.util.Map method (size, isEmpty, keySet, values, toString) is called even when
    # the map has a key of that name, and any other name is a MethodNotFoundException, as on any
    # bean; only [key] reads a key (lookupResult).
    if isinstance(value, BaseException):
        return _exception_member(value, name)
    method = _METHODS.get(name)
    if method is not None and isinstance(value, method[0]):
        return method[1](value)
    raise _no_method(value, name)


def _call(value: Any, name: str) -> Any:
    if isinstance(value, BaseException):
        return _exception_member(value, name)
    method = _METHODS.get(name)
    if method is not None and isinstance(value, method[0]):
        return method[1](value)
    raise _no_method(value, name + "()")


_LAST = re.compile(r"last(?:\s*-\s*([0-9]+))?")


def _index(value: Any, key: str) -> Any:
    if isinstance(value, list | tuple):
        size = len(value)
        n = _int_text(key)
        if n is None:
            m = _LAST.fullmatch(key)
            if m is None:
                raise _fail(
                    BEAN_EXPRESSION,
                    f"Failed to invoke method: [{key}] on {_java_type(value)} due to: "
                    f"the index must be a number or last/last-N",
                )
            n = size - 1 - int(m.group(1) or 0)
        if not 0 <= n < size:
            raise _fail(
                BEAN_EXPRESSION,
                f"Failed to invoke method: [{key}] on {_java_type(value)} due to: "
                f"java.lang.IndexOutOfBoundsException: Index: {n}, Size: {size}",
            )
        return value[n]
    if isinstance(value, Mapping):
        return _map_get(value, key)
    raise _no_method(value, f"[{key}]")


class _Step(NamedTuple):
    kind: int  # _MEMBER, _CALL or _INDEX
    arg: str
    null_safe: bool


_MEMBER, _CALL, _INDEX = 0, 1, 2


def _walk(value: Any, steps: tuple[_Step, ...]) -> Any:
    """Apply OGNL steps. A null root is null (Camel's body/header OGNL returns null early)."""
    if value is None:
        return None
    for kind, arg, null_safe in steps:
        if value is None:
            if null_safe:
                return None
            label = f"[{arg}]" if kind == _INDEX else arg
            raise _fail(
                BEAN_EXPRESSION,
                f"Failed to invoke method: {label} on null due to: last method returned null and "
                f"therefore cannot continue to invoke method {label} on a null instance "
                f"(use ?. for null-safe navigation)",
            )
        if kind == _MEMBER:
            value = _member(value, arg)
        elif kind == _CALL:
            value = _call(value, arg)
        else:
            value = _index(value, arg)
    return value


# --------------------------------------------------------------------------- Java date patterns
#
# ${date:...:pattern} formats with java.text.SimpleDateFormat. No installed library formats Java
# pattern letters (strftime has no equivalent for SSS, XXX or Java's quoting), so the pattern is
# compiled here, once, into a list of field renderers.

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _us_week(d: datetime) -> tuple[int, int]:
    """(week year, week of year) in Java's default US calendar: Sunday first, 1 minimal day."""
    day = d.date()
    next_jan1 = date(day.year + 1, 1, 1)
    if day >= next_jan1 - timedelta(days=(next_jan1.weekday() + 1) % 7):
        return day.year + 1, 1
    jan1 = date(day.year, 1, 1)
    offset = (jan1.weekday() + 1) % 7
    return day.year, (day.timetuple().tm_yday - 1 + offset) // 7 + 1


def _week_of_month(d: datetime) -> int:
    offset = (d.replace(day=1).weekday() + 1) % 7
    return (d.day - 1 + offset) // 7 + 1


def _offset_minutes(d: datetime) -> int:
    off = d.utcoffset()
    return 0 if off is None else int(off.total_seconds() // 60)


def _zone_offset(d: datetime, style: int) -> str:
    """Z (style 0: +0000) and X, XX, XXX (styles 1-3: Z for UTC, +01, +0100, +01:00)."""
    minutes = _offset_minutes(d)
    if style and minutes == 0:
        return "Z"
    sign = "-" if minutes < 0 else "+"
    h, m = divmod(abs(minutes), 60)
    if style == 1:
        return f"{sign}{h:02d}"
    if style == 3:
        return f"{sign}{h:02d}:{m:02d}"
    return f"{sign}{h:02d}{m:02d}"


def _padded(get: Callable[[datetime], int], width: int) -> Callable[[datetime], str]:
    return lambda d: str(get(d)).zfill(width)


def _date_field(letter: str, n: int) -> Callable[[datetime], str] | None:
    """The renderer of ``n`` repetitions of a SimpleDateFormat pattern letter, or None if illegal."""
    if letter == "G":
        return lambda d: "AD"
    if letter in "yY":
        year: Callable[[datetime], int] = (lambda d: d.year) if letter == "y" else (lambda d: _us_week(d)[0])
        if n == 2:
            return lambda d: f"{year(d) % 100:02d}"
        return _padded(year, n)
    if letter in "ML":
        if n >= 4:
            return lambda d: _MONTHS[d.month - 1]
        if n == 3:
            return lambda d: _MONTHS[d.month - 1][:3]
        return _padded(lambda d: d.month, n)
    if letter == "E":
        return (lambda d: _DAYS[d.weekday()]) if n >= 4 else (lambda d: _DAYS[d.weekday()][:3])
    if letter == "a":
        return lambda d: "AM" if d.hour < 12 else "PM"
    if letter in "XZz":
        if letter == "z":
            return lambda d: d.tzname() or "UTC"
        if letter == "Z":
            return lambda d: _zone_offset(d, 0)
        if n > 3:
            return None  # Java: "invalid ISO 8601 format: length=4"
        return lambda d, n=n: _zone_offset(d, n)
    numeric: dict[str, Callable[[datetime], int]] = {
        "w": lambda d: _us_week(d)[1],
        "W": _week_of_month,
        "D": lambda d: d.timetuple().tm_yday,
        "d": lambda d: d.day,
        "F": lambda d: (d.day - 1) // 7 + 1,
        "u": lambda d: d.isoweekday(),
        "H": lambda d: d.hour,
        "k": lambda d: d.hour or 24,
        "K": lambda d: d.hour % 12,
        "h": lambda d: d.hour % 12 or 12,
        "m": lambda d: d.minute,
        "s": lambda d: d.second,
        "S": lambda d: d.microsecond // 1000,  # Java's S is the millisecond count
    }
    get = numeric.get(letter)
    return _padded(get, n) if get is not None else None


def _compile_date_pattern(pattern: str) -> Callable[[datetime], str]:
    """Compile a SimpleDateFormat pattern; raises ``ValueError`` as Java's constructor would."""
    pieces: list[str | Callable[[datetime], str]] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "'":
            # Quoted literal text; '' is a single quote, inside or outside quotes.
            if i + 1 < n and pattern[i + 1] == "'":
                pieces.append("'")
                i += 2
                continue
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise ValueError(f"unterminated quote at {i}")
                if pattern[j] == "'":
                    if j + 1 < n and pattern[j + 1] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    break
                buf.append(pattern[j])
                j += 1
            pieces.append("".join(buf))
            i = j + 1
        elif ("a" <= c <= "z") or ("A" <= c <= "Z"):
            j = i
            while j < n and pattern[j] == c:
                j += 1
            field = _date_field(c, j - i)
            if field is None:
                raise ValueError(f"Illegal pattern character '{c}'")
            pieces.append(field)
            i = j
        else:
            pieces.append(c)
            i += 1
    merged: list[str | Callable[[datetime], str]] = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1] + piece
        else:
            merged.append(piece)
    parts = tuple(merged)
    return lambda d: "".join(p if isinstance(p, str) else p(d) for p in parts)


_OFFSET_START = re.compile(r"[+-]\s*[0-9]")  # DateExpressionBuilder.OFFSET_START
_OFFSET = re.compile(r"([+-])\s*([0-9][^+-]*)")  # DateExpressionBuilder.OFFSET_PATTERN
# TimeUtils.toMilliSeconds: "1h30m", "15s", "250ms", "2d" or a plain number of milliseconds.
_DURATION = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m(?!s))?(?:([0-9]+)s)?(?:([0-9]+)ms)?")
_DURATION_MS = (86_400_000, 3_600_000, 60_000, 1_000, 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIXED_ZONE = re.compile(r"(?:GMT|UTC)([+-])([0-9]{1,2})(?::?([0-9]{2}))?")


def _duration_ms(text: str) -> int | None:
    text = "".join(text.split())
    if text.isascii() and text.isdigit():
        return int(text) if len(text) <= _MAX_DIGITS else None
    m = _DURATION.fullmatch(text)
    if not text or m is None:
        return None
    return sum(int(g) * unit for g, unit in zip(m.groups(), _DURATION_MS, strict=True) if g)


def _zone(name: str) -> tzinfo:
    """A time zone by Java id; raises ``ValueError`` when unknown (Java silently falls back to GMT)."""
    name = name.strip()
    if name in ("UTC", "GMT", "Z"):
        return UTC
    m = _FIXED_ZONE.fullmatch(name)
    if m:
        minutes = int(m.group(2)) * 60 + int(m.group(3) or 0)
        return timezone(timedelta(minutes=-minutes if m.group(1) == "-" else minutes))
    try:
        return ZoneInfo(name)  # reads the packaged tz database once per zone
    except Exception as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _as_date(value: Any, command: str) -> datetime:
    # LanguageHelper.dateFromHeader: a Date (or a long of epoch millis), else IllegalArgument.
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return _EPOCH + timedelta(milliseconds=value)
        except OverflowError:
            pass
    raise _fail(ILLEGAL_ARGUMENT, f"Cannot find Date/long object at command: {command}")


# --------------------------------------------------------------------------- compiled nodes


class _Value(NamedTuple):
    """A compiled operand: ``fn(exchange)``; constants keep their value for compile-time checks."""

    fn: Callable[[Exchange], Any]
    is_const: bool = False
    const: Any = None
    is_bool: bool = False  # fn already returns a bool (an operator)


def _const(value: Any) -> _Value:
    return _Value(lambda ex: value, True, value)


def _exception_of(ex: Exchange) -> Any:
    # SimpleExpressionBuilder.exceptionExpression: the exception, else the caught one (doCatch).
    exc = ex.exception
    return exc if exc is not None else ex.properties.get("CamelExceptionCaught")


def _body_one_line(ex: Exchange) -> Any:
    body = ex.body
    return None if body is None else _text(body).replace("\r", "").replace("\n", "")


_CAMEL_ID = "camel-1"  # Camel's default CamelContext name
_NAMED: dict[str, Callable[[Exchange], Any]] = {
    "exchangeId": lambda ex: ex.exchange_id,
    # DefaultMessage.createMessageId: the message id defaults to the exchange id.
    "id": lambda ex: ex.exchange_id,
    "routeId": lambda ex: ex.route_id,
    "fromRouteId": lambda ex: ex.from_route_id,
    "camelId": lambda ex: _CAMEL_ID,
    "body": lambda ex: ex.body,
    "in.body": lambda ex: ex.body,
    "bodyType": lambda ex: None if ex.body is None else _java_type(ex.body),
    "bodyOneLine": _body_one_line,
    "headers": lambda ex: ex.headers,
    "in.headers": lambda ex: ex.headers,
    "exception": _exception_of,
    "exception.message": lambda ex: _walk(_exception_of(ex), (_Step(_MEMBER, "message", False),)),
    "exception.stacktrace": lambda ex: _walk(_exception_of(ex), (_Step(_MEMBER, "stacktrace", False),)),
}

_BODY = re.compile(r"(?:in\.)?body(?=[.\[?])")
_BODY_AS = re.compile(r"(mandatoryBodyAs|bodyAs)\(([^)]*)\)")
_HEADER = re.compile(r"(?:in\.)?headers?(?=[.:\[])")
_PROPERTY = re.compile(r"exchangeProperty(?=[.:\[])")
_EXCEPTION = re.compile(r"exception(?=[.\[?])")
_RANDOM = re.compile(r"random\((.*)\)", re.S)
_JAVA_INT = re.compile(r"\s*([+-]?[0-9]{1,18})\s*")
_FUNCTION_NAME = re.compile(r"[^\s(.\[:]*")
# What a function with a nested ${} may start with, checked at compile time.
_DYNAMIC_HEADS = (
    "body",
    "in.body",
    "header",
    "in.header",
    "exchangeProperty",
    "exception",
    "date:",
    "date-with-timezone:",
    "random(",
    "bodyAs(",
    "mandatoryBodyAs(",
)
_MAX_DEPTH = 16


def _bad_conversion(ex_type: str, value: Any, java: str, why: str) -> SimpleEvaluationError:
    shown = _text(value)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return _fail(
        ex_type,
        f"Error during type conversion from type: {_java_type(value)} to the required type: {java} "
        f"with value {shown} due to {why}",
    )


_TYPE_HINT = (
    "bodyAs accepts String, Integer, Long, Short, Double, Float, BigDecimal, BigInteger, Boolean, "
    "Object, byte[], Map, List (java.lang./java.util./java.math. prefixes allowed)"
)
# Java's Integer, Long and Short overflow; the project converter does not check, so we do here.
_INT_BITS = {"java.lang.Integer": 32, "java.lang.Long": 64, "java.lang.Short": 16}


def _converter(type_name: str) -> tuple[str, Callable[[Any], Any]] | None:
    """(Java name, converter) for a ``bodyAs`` type, or None when unsupported."""
    name = type_name.strip().strip("'\"")
    short = name
    for package in ("java.util.", "java.lang.", "java.math."):
        if name.startswith(package):
            short = name[len(package) :]
    canonical = canonical_type(name) or canonical_type(short)
    if canonical is None:
        return None
    bits = _INT_BITS.get(canonical)
    limit = 2 ** (bits - 1) if bits is not None else 0

    def convert(value: Any) -> Any:
        try:
            result = convert_to(value, canonical)
        except ExchangeFailure as failure:
            raise SimpleEvaluationError(
                failure.message, error_type=failure.error_type, cause=failure.cause
            ) from None
        except (ValueError, OverflowError, ArithmeticError) as exc:
            why = f"java.lang.NumberFormatException: {exc}"
            raise _bad_conversion(TYPE_CONVERSION, value, canonical, why) from None
        if bits is not None and isinstance(result, int) and not -limit <= result < limit:
            why = f'java.lang.NumberFormatException: Value out of range. Value:"{_text(value)[:40]}"'
            raise _bad_conversion(TYPE_CONVERSION, value, canonical, why)
        return result

    return canonical, convert


# --------------------------------------------------------------------------- the compiler


class _Token(NamedTuple):
    kind: str  # "value", "binop" or "logic"
    pos: int
    text: str  # the operator, or what the value was written as: "function", "quoted", ...
    value: _Value | None = None
    raw: str = ""  # a quoted literal's text, unparsed (regex right-hand sides)


# Binary operators, longest first (SimpleTokenizer.KNOWN_TOKENS) with the deprecated spellings.
_OPERATORS = (
    "not contains",
    "not regex",
    "not range",
    "starts with",
    "!startsWith",
    "ends with",
    "!endsWith",
    "startsWith",
    "endsWith",
    "!contains",
    "contains",
    "not in",
    "not is",
    "!regex",
    "regex",
    "!range",
    "range",
    "!=~",
    "!~~",
    "!in",
    "!is",
    "==",
    "=~",
    ">=",
    "<=",
    "!=",
    "~~",
    "in",
    "is",
    ">",
    "<",
)
_ALIASES = {
    "not contains": "!contains",
    "not regex": "!regex",
    "not range": "!range",
    "not in": "!in",
    "not is": "!is",
    "starts with": "startsWith",
    "ends with": "endsWith",
}
_PLAIN_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": _equals,
    "=~": lambda a, b: _equals(a, b, True),
    "!=": lambda a, b: not _equals(a, b),
    "!=~": lambda a, b: not _equals(a, b, True),
    ">": _gt,
    ">=": _ge,
    "<": _lt,
    "<=": _le,
    "contains": _contains,
    "!contains": lambda a, b: not _contains(a, b),
    "~~": lambda a, b: _contains(a, b, True),
    "!~~": lambda a, b: not _contains(a, b, True),
    "startsWith": _starts_with,
    "!startsWith": lambda a, b: not _starts_with(a, b),
    "endsWith": _ends_with,
    "!endsWith": lambda a, b: not _ends_with(a, b),
}
# BinaryOperatorType.supportedParameterTypes: these take only a quoted literal or a function.
_LITERAL_OR_FUNCTION = ("regex", "!regex", "range", "!range", "is", "!is")
# SimpleTokenizer's numeric token: a digit, then digits, dots and commas (repositionIndex), after an
# optional minus token. SimplePredicateParser.addImageToken makes it a number when it is one
# (isNumber / isFloatingNumber), else literal text: "1,2,3" and "1.2.3" are text, "5." is 5.0.
_NUMBER = re.compile(r"-?[0-9][0-9.,]*")


class _Compiler:
    """Compiles one expression text; every error names a position in ``text``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def error(self, message: str, pos: int, hint: str) -> SimpleSyntaxError:
        return SimpleSyntaxError(message, expression=self.text, position=pos, hint=hint)

    # ------------------------------------------------------------------ templates and functions

    def starts_function(self, i: int) -> int:
        """Length of the function start token at ``i`` (``${`` or ``$simple{``), else 0."""
        text = self.text
        if text.startswith("${", i):
            return 2
        if text.startswith("$simple{", i):
            return 8
        return 0

    def template(self, i: int, end: int, *, stop: str = "", expression_mode: bool) -> tuple[_Value, int]:
        """Literal text and functions from ``i`` up to ``end`` or the ``stop`` character.

        Returns the value and the index where it stopped (at ``stop``, or ``end``).
        """
        text = self.text
        parts: list[str | _Value] = []
        buf: list[str] = []
        while i < end:
            c = text[i]
            if stop and c == stop:
                break
            start_len = self.starts_function(i)
            if start_len:
                if buf:
                    parts.append("".join(buf))
                    buf = []
                value, i = self.function(i, start_len, 0)
                unary = text.startswith(("++", "--"), i) and (i + 2 == end or text[i + 2] == " ")
                if expression_mode and unary:
                    # UnaryExpression: "${header.n}++" applies to the function just before it.
                    value = _unary(value, text[i : i + 2])
                    i += 2
                parts.append(value)
                continue
            if expression_mode and c == "\\" and i + 1 < end and text[i + 1] in "ntr}":
                # SimpleTokenizer.fromEscaped: \n \t \r \} with allowEscape (the default).
                buf.append({"n": "\n", "t": "\t", "r": "\r", "}": "}"}[text[i + 1]])
                i += 2
                continue
            buf.append(c)
            i += 1
        if buf:
            parts.append("".join(buf))
        return _join(parts), i

    def function(self, start: int, start_len: int, depth: int) -> tuple[_Value, int]:
        """The function starting at ``start``; returns its value and the index after its ``}``."""
        if depth >= _MAX_DEPTH:
            raise self.error(
                f"functions nested more than {_MAX_DEPTH} deep", start, "simplify the expression"
            )
        text = self.text
        parts: list[str | _Value] = []
        buf: list[str] = []
        i = start + start_len
        while i < len(text):
            c = text[i]
            nested = self.starts_function(i)
            if nested:
                if buf:
                    parts.append("".join(buf))
                    buf = []
                value, i = self.function(i, nested, depth + 1)
                parts.append(value)
                continue
            if c == "\\" and i + 1 < len(text) and text[i + 1] in "ntr}":
                buf.append({"n": "\n", "t": "\t", "r": "\r", "}": "}"}[text[i + 1]])
                i += 2
                continue
            if c == "}":
                if buf:
                    parts.append("".join(buf))
                if all(isinstance(p, str) for p in parts):
                    static = "".join(p for p in parts if isinstance(p, str))
                    return self.static_function(static, start + start_len), i + 1
                return self.dynamic_function(parts, start + start_len), i + 1
            buf.append(c)
            i += 1
        raise self.error(
            "function has no ending token '}'", start, "close every ${ with }; write \\} for a literal }"
        )

    def dynamic_function(self, parts: list[str | _Value], pos: int) -> _Value:
        """A function whose text holds nested functions (``${header.${exchangeProperty.k}}``).

        As in Camel, the nested values are spliced into the text at run time and the result is
        parsed then; we check at compile time that the text starts like a supported function and
        cache what each spliced text compiles to.
        """
        head = parts[0].lstrip() if isinstance(parts[0], str) else ""
        if head and not head.startswith(_DYNAMIC_HEADS):
            raise self.unknown_function(head, pos)
        pieces = tuple(p if isinstance(p, str) else p.fn for p in parts)
        cache: dict[str, Callable[[Exchange], Any]] = {}

        def evaluate(ex: Exchange) -> Any:
            function_text = "".join(p if isinstance(p, str) else _text(p(ex)) for p in pieces)
            compiled = cache.get(function_text)
            if compiled is None:
                try:
                    compiled = _Compiler(function_text).static_function(function_text, 0).fn
                except SimpleSyntaxError as exc:
                    raise _fail(ILLEGAL_SYNTAX, f"${{{function_text}}}: {exc.message}") from None
                if len(cache) >= 256:
                    cache.clear()
                cache[function_text] = compiled
            return compiled(ex)

        return _Value(evaluate)

    def unknown_function(self, function_text: str, pos: int) -> SimpleSyntaxError:
        name = _FUNCTION_NAME.match(function_text.strip())
        shown = name.group() if name and name.group() else function_text.strip()
        return self.error(
            f"Unknown function '{shown}' in ${{{function_text}}}",
            pos,
            "supported functions: " + SUPPORTED_FUNCTIONS,
        )

    def static_function(self, function_text: str, pos: int) -> _Value:
        """Compile the text between ``${`` and ``}`` (``pos`` is where it starts)."""
        f = function_text.strip()
        pos += len(function_text) - len(function_text.lstrip())
        if not f:
            raise self.error("empty function ${}", pos, "supported functions: " + SUPPORTED_FUNCTIONS)
        if f == "null":
            return _const(None)
        named = _NAMED.get(f)
        if named is not None:
            return _Value(named)
        if f in ("header", "in.header", "exchangeProperty"):
            raise self.error(f"${{{f}}} needs a name", pos, f"write ${{{f}.name}} or ${{{f}[name]}}")
        m = _BODY_AS.match(f)
        if m:
            return self.body_as(m, f, pos)
        m = _BODY.match(f)
        if m:
            steps = self.steps(f, m.end(), pos)
            return _Value(lambda ex: _walk(ex.body, steps))
        m = _HEADER.match(f)
        if m:
            return self.keyed(f, m.end(), pos, lambda ex: ex.headers, "header")
        m = _PROPERTY.match(f)
        if m:
            return self.keyed(f, m.end(), pos, lambda ex: ex.properties, "exchangeProperty")
        m = _EXCEPTION.match(f)
        if m:
            steps = self.steps(f, m.end(), pos)
            return _Value(lambda ex: _walk(_exception_of(ex), steps))
        if f.startswith("date:"):
            return self.date(f[5:], pos + 5, None)
        if f.startswith("date-with-timezone:"):
            parts = f[19:].split(":", 2)
            if len(parts) < 3:
                raise self.error(
                    "date-with-timezone needs a command, a time zone and a pattern",
                    pos,
                    "write ${date-with-timezone:now:Europe/Paris:yyyy-MM-dd HH:mm}",
                )
            return self.date(f"{parts[0]}:{parts[2]}", pos + 19, parts[1])
        m = _RANDOM.fullmatch(f)
        if m:
            return self.random(m.group(1), pos)
        raise self.unknown_function(f, pos)

    def steps(self, f: str, i: int, pos: int) -> tuple[_Step, ...]:
        """Parse OGNL steps ``.name``, ``?.name``, ``name()``, ``[key]`` from ``f[i:]``."""
        steps: list[_Step] = []
        hint = "navigate with .key, ?.key (null safe), [key], [0], [last] or a no-argument method: " + (
            ", ".join(f"{m}()" for m in _METHODS)
        )
        while i < len(f):
            null_safe = False
            if f.startswith("?.", i):
                null_safe, i = True, i + 2
            elif f[i] == ".":
                i += 1
            elif f[i] == "[":
                key, i = self.bracket(f, i, pos)
                steps.append(_Step(_INDEX, key, False))
                continue
            else:
                raise self.error(f"unexpected {f[i]!r} in ${{{f}}}", pos + i, hint)
            j = i
            while j < len(f) and f[j] not in ".[(" and not f.startswith("?.", j):
                if f[j] in ")]":
                    raise self.error(f"unexpected {f[j]!r} in ${{{f}}}", pos + j, hint)
                j += 1
            name = f[i:j].strip()
            if not name:
                raise self.error(f"missing name after '.' in ${{{f}}}", pos + i, hint)
            if j < len(f) and f[j] == "(":
                close = f.find(")", j)
                if close < 0:
                    raise self.error(f"method {name}( has no closing ')'", pos + j, hint)
                if f[j + 1 : close].strip():
                    args = f[j + 1 : close]
                    raise self.error(f"method arguments are not supported: {name}({args})", pos + j, hint)
                if name not in _METHODS and name not in ("getMessage", "getCause", "getLocalizedMessage"):
                    raise self.error(f"unsupported method {name}()", pos + i, hint)
                steps.append(_Step(_CALL, name, null_safe))
                i = close + 1
            else:
                steps.append(_Step(_MEMBER, name, null_safe))
                i = j
        return tuple(steps)

    def bracket(self, f: str, i: int, pos: int) -> tuple[str, int]:
        """``[key]`` at ``f[i]``: the key (quotes removed) and the index after ``]``."""
        j = i + 1
        quote = f[j] if j < len(f) and f[j] in "'\"" else ""
        if quote:
            close = f.find(quote, j + 1)
            if close < 0 or not f.startswith("]", close + 1):
                raise self.error(f"unterminated [{quote}... in ${{{f}}}", pos + i, "write [key] or ['key']")
            return f[j + 1 : close], close + 2
        close = f.find("]", j)
        if close < 0:
            raise self.error(f"'[' has no closing ']' in ${{{f}}}", pos + i, "write [key] or [0]")
        key = f[j:close].strip()
        if not key:
            raise self.error(f"empty [] in ${{{f}}}", pos + i, "write [key] or [0]")
        return key, close + 1

    def keyed(
        self, f: str, i: int, pos: int, source: Callable[[Exchange], Mapping[str, Any]], what: str
    ) -> _Value:
        """``header.name...`` / ``header[name]...`` / ``exchangeProperty.name...``."""
        hint = f"write ${{{what}.name}} or ${{{what}[name]}}, then optional .key, [key], ?.key"
        full: str | None = None
        if f[i] == "[":
            key, after = self.bracket(f, i, pos)
        else:
            j = i + 1
            while j < len(f) and f[j] not in ".[" and not f.startswith("?.", j):
                j += 1
            key, after = f[i + 1 : j].strip(), j
            # KeyedOgnlExpressionAdapter tries the whole text as the key first: a header
            # literally named "a.b" wins over header "a" navigated to ".b".
            full = f[i + 1 :].strip()
        if not key:
            raise self.error(f"missing {what} name in ${{{f}}}", pos + i, hint)
        steps = self.steps(f, after, pos)
        if not steps:
            return _Value(lambda ex: source(ex).get(key))

        def evaluate(ex: Exchange) -> Any:
            mapping = source(ex)
            if full is not None:
                whole = mapping.get(full)
                if whole is not None:
                    return whole
            return _walk(mapping.get(key), steps)

        return _Value(evaluate)

    def body_as(self, m: re.Match[str], f: str, pos: int) -> _Value:
        mandatory = m.group(1) == "mandatoryBodyAs"
        found = _converter(m.group(2))
        if found is None:
            shown = m.group(2).strip()
            raise self.error(f"unsupported type {shown!r} in ${{{f}}}", pos + m.start(2), _TYPE_HINT)
        java, convert = found
        steps = self.steps(f, m.end(), pos)

        def evaluate(ex: Exchange) -> Any:
            body = ex.body
            value = None if body is None else convert(body)
            if value is None and mandatory:
                raise _fail(
                    INVALID_PAYLOAD,
                    f"No body available of type: {java} but has type: "
                    f"{'null' if body is None else _java_type(body)} on exchange {ex.exchange_id}",
                )
            return _walk(value, steps) if steps else value

        if not mandatory:
            return _Value(evaluate)

        def evaluate_mandatory(ex: Exchange) -> Any:
            try:
                return evaluate(ex)
            except SimpleEvaluationError as exc:
                if exc.error_type != TYPE_CONVERSION:
                    raise
                # MessageSupport.getMandatoryBody wraps a failed conversion.
                raise SimpleEvaluationError(
                    f"No body available of type: {java} but has type: {_java_type(ex.body)} "
                    f"on exchange {ex.exchange_id}. Caused by: {exc.message}",
                    error_type=INVALID_PAYLOAD,
                    cause=exc,
                ) from None

        return _Value(evaluate_mandatory)

    def date(self, rest: str, pos: int, zone_name: str | None) -> _Value:
        """``date:command[:pattern]`` (``rest`` is after ``date:``), or with a time zone."""
        hint = (
            "write ${date:now}, ${date:now:yyyy-MM-dd'T'HH:mm:ss.SSSXXX}, ${date:millis}, "
            "${date:exchangeCreated:pattern}, "
            "${date:header.name:pattern}, ${date:exchangeProperty.name:pattern}, offsets such as "
            "now-1h30m; pattern letters are Java SimpleDateFormat's"
        )
        command_text, _, pattern = rest.partition(":")
        start = _OFFSET_START.search(command_text)
        command = (command_text[: start.start()] if start else command_text).strip()
        total = 0
        if start:
            for om in _OFFSET.finditer(command_text, start.start()):
                ms = _duration_ms(om.group(2).strip())
                if ms is None:
                    raise self.error(f"bad date offset {om.group(0).strip()!r}", pos + om.start(), hint)
                total += ms if om.group(1) == "+" else -ms
        try:
            offset = timedelta(milliseconds=total)
        except OverflowError:
            raise self.error(f"date offset too large in {command_text!r}", pos, hint) from None
        read: Callable[[Exchange], datetime]
        if command in ("now", "millis"):
            read = lambda ex: ex.context.now()  # noqa: E731
        elif command == "exchangeCreated":
            # Simple page, date:command: "exchangeCreated for the timestamp when the current
            # exchange was created" (the run's start on the context clock).
            read = lambda ex: ex.created if ex.created is not None else ex.context.now()  # noqa: E731
        elif command.startswith("header.") and len(command) > 7:
            key = command[7:]
            read = lambda ex: _as_date(ex.headers.get(key), command)  # noqa: E731
        elif command.startswith("exchangeProperty.") and len(command) > 17:
            key = command[17:]
            read = lambda ex: _as_date(ex.properties.get(key), command)  # noqa: E731
        else:
            raise self.error(f"unsupported date command {command!r}", pos, hint)
        zone: tzinfo = UTC
        if zone_name is not None:
            try:
                zone = _zone(zone_name)
            except ValueError as exc:
                zone_hint = "use an IANA zone id such as Europe/Paris, or UTC, GMT+2"
                raise self.error(str(exc), pos, zone_hint) from None
        fmt: Callable[[datetime], str] | None = None
        if pattern:
            try:
                fmt = _compile_date_pattern(pattern)
            except ValueError as exc:
                where = pos + len(command_text) + 1
                raise self.error(f"bad date pattern {pattern!r}: {exc}", where, hint) from None
        millis = command == "millis"

        def evaluate(ex: Exchange) -> Any:
            moment = read(ex)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            try:
                # java.util.Date has millisecond precision.
                moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000) + offset
                local = moment.astimezone(zone)
            except (OverflowError, ValueError) as exc:
                raise _fail(ILLEGAL_ARGUMENT, f"date out of range: {exc}") from None
            if fmt is not None:
                return fmt(local)
            if millis:
                return (moment - _EPOCH) // timedelta(milliseconds=1)
            return local

        return _Value(evaluate)

    def random(self, args: str, pos: int) -> _Value:
        hint = "write ${random(max)} (0 <= n < max) or ${random(min,max)} (min <= n < max) with integers"
        values = []
        for arg in args.split(","):
            m = _JAVA_INT.fullmatch(arg)
            if m is None:
                raise self.error(f"random() takes integers, got {arg.strip()!r}", pos, hint)
            values.append(int(m.group(1)))
        if len(values) > 2:
            raise self.error("random() takes one or two integers", pos, hint)
        low, high = (0, values[0]) if len(values) == 1 else (values[0], values[1])
        if high <= low:
            raise self.error(f"random({args}): max must be greater than min", pos, hint)
        # Camel: min + new Random().nextInt(max - min); the sandbox's random source is handed in.
        return _Value(lambda ex: ex.context.rng.randrange(low, high))

    # ------------------------------------------------------------------ predicates

    def predicate(self, start: int, end: int) -> _Value:
        tokens = self.tokenize(start, end)
        if not tokens:
            return _Value(lambda ex: False, True, False, True)  # Camel: nothing to parse is false
        first = tokens[0]
        if first.kind == "value" and first.text in ("number", "text", "null"):
            # SimplePredicateParser.parseTokens: a numeric, minus or null token is only taken as
            # the right hand side of a binary or logical operator; first in the predicate it
            # is "Unexpected token" (true and false are accepted anywhere).
            literal = self.text[first.pos : first.pos + 40].split(None, 1)[0]
            raise self.error(
                f"Unexpected token {literal}",
                first.pos,
                "put the function first (${body} == 5, not 5 == ${body}), or quote the literal ('5')",
            )

        def chain(k: int, after: _Token | None) -> tuple[_Value, int]:
            """A value and the binary operators applied to it, left to right."""
            if k >= len(tokens):
                assert after is not None
                raise self.error(f"operator {after.text} has no right hand side", after.pos, _PREDICATE_HINT)
            first = tokens[k]
            if first.kind != "value":
                raise self.error(f"operator {first.text} has no left hand side", first.pos, _PREDICATE_HINT)
            assert first.value is not None
            left, k = first.value, k + 1
            while k < len(tokens) and tokens[k].kind == "binop":
                op_token = tokens[k]
                if k + 1 >= len(tokens) or tokens[k + 1].kind != "value":
                    raise self.error(
                        f"operator {op_token.text} has no right hand side", op_token.pos, _PREDICATE_HINT
                    )
                left = self.binary(op_token, left, tokens[k + 1])
                k += 2
            return left, k

        node, k = chain(0, None)
        while k < len(tokens):
            token = tokens[k]
            if token.kind != "logic":
                raise self.error(
                    f"missing operator before {self.text[token.pos : token.pos + 20]!r}",
                    token.pos,
                    _PREDICATE_HINT,
                )
            right, k = chain(k + 1, token)
            node = _logical(token.text, node, right)
        return node

    def tokenize(self, i: int, end: int) -> list[_Token]:
        text = self.text
        tokens: list[_Token] = []
        while True:
            while i < end and text[i].isspace():
                i += 1
            if i >= end:
                return tokens
            c = text[i]
            start_len = self.starts_function(i)
            if start_len:
                value, j = self.function(i, start_len, 0)
                if text.startswith(("++", "--"), j) and (j + 2 == end or text[j + 2].isspace()):
                    value = _unary(value, text[j : j + 2])  # "${header.n}++ > 5"
                    j += 2
                tokens.append(_Token("value", i, "function", value))
                i = j
                continue
            if c in "'\"":
                if tokens and tokens[-1].kind == "binop" and tokens[-1].text in ("regex", "!regex"):
                    # A regex literal is plain text: no functions inside (Camel's
                    # singleQuotedLiteralText), so "${" and "}" stay as written.
                    close = text.find(c, i + 1, end)
                    if close < 0:
                        raise self.quote_error(c, i)
                    raw = text[i + 1 : close]
                    tokens.append(_Token("value", i, "quoted", _const(raw), raw))
                    i = close + 1
                    continue
                value, j = self.template(i + 1, end, stop=c, expression_mode=False)
                if j >= end:
                    raise self.quote_error(c, i)
                tokens.append(_Token("value", i, "quoted", value, text[i + 1 : j]))
                i = j + 1
                continue
            if text.startswith(("&&", "||"), i):
                tokens.append(_Token("logic", i, text[i : i + 2]))
                i += 2
                continue
            op = self.operator_at(i, end)
            if op:
                tokens.append(_Token("binop", i, _ALIASES.get(op, op)))
                i += len(op)
                continue
            m = _NUMBER.match(text, i, end)
            if m and (m.end() == end or text[m.end()].isspace()):
                literal = m.group()
                if _is_int_text(literal):
                    tokens.append(_Token("value", i, "number", _const(int(literal))))
                elif _is_float_text(literal):
                    tokens.append(_Token("value", i, "number", _const(float(literal))))
                else:
                    tokens.append(_Token("value", i, "text", _const(literal), literal))
                i = m.end()
                continue
            word_end = i
            while word_end < end and not text[word_end].isspace():
                word_end += 1
            word = text[i:word_end]
            if word in ("true", "false", "null"):
                tokens.append(_Token("value", i, word, _const(None if word == "null" else word == "true")))
                i = word_end
                continue
            if c in "()":
                raise self.error(
                    "parentheses are not supported in Simple predicates",
                    i,
                    "Camel has no grouping: && and || have the same precedence and are evaluated "
                    "left to right; split the condition into nested choice/filter steps",
                )
            raise self.error(
                f"unexpected text {word[:40]!r}",
                i,
                "quote literal text ('gold') and put a space on both sides of every operator; "
                + _PREDICATE_HINT,
            )

    def quote_error(self, quote: str, pos: int) -> SimpleSyntaxError:
        which = "single" if quote == "'" else "double"
        return self.error(
            f"{which} quote has no ending quote",
            pos,
            f"close the literal with {quote}; to put a {quote} inside, quote with the other kind",
        )

    def operator_at(self, i: int, end: int) -> str:
        """The binary operator at ``i``: Camel requires whitespace before and after it."""
        text = self.text
        if i > 0 and not text[i - 1].isspace():
            return ""
        for op in _OPERATORS:
            after = i + len(op)
            if after <= end and text.startswith(op, i) and (after == end or text[after].isspace()):
                return op
        return ""

    def binary(self, op_token: _Token, left: _Value, right_token: _Token) -> _Value:
        op = op_token.text
        right = right_token.value
        assert right is not None
        if op in _LITERAL_OR_FUNCTION and right_token.text not in ("quoted", "function"):
            raise self.error(
                f"operator {op} needs a quoted literal or a function on its right, got {right_token.text}",
                right_token.pos,
                f"write ${{header.x}} {op} '...'",
            )
        lf, rf = left.fn, right.fn
        negate = op.startswith("!") and op not in _PLAIN_OPERATORS
        base = op[1:] if negate else op
        test: Callable[[Exchange], bool]
        if base == "regex":
            if right_token.text == "quoted":
                try:
                    pattern = _compile_regex(right_token.raw)
                except ValueError as exc:
                    message = f"invalid regular expression: {exc}"
                    raise self.error(message, right_token.pos, _REGEX_HINT) from None
                test = lambda ex: _regex_matches(lf(ex), pattern)  # noqa: E731
            else:
                test = lambda ex: _regex_matches(lf(ex), _dynamic_regex(rf(ex)))  # noqa: E731
        elif base == "in":
            if right.is_const:
                values = tuple(_iterate(right.const))
                test = lambda ex: _in(lf(ex), values)  # noqa: E731
            else:
                test = lambda ex: _in(lf(ex), _iterate(rf(ex)))  # noqa: E731
        elif base == "range":
            if right.is_const:
                m = _RANGE_TEXT.fullmatch(_text(right.const))
                if m is None:
                    raise self.error(
                        f"range operator is not valid: {right_token.raw!r}",
                        right_token.pos,
                        "valid syntax: 'from..to' where from and to are whole numbers, e.g. '100..199'",
                    )
                low, high = m.group(1), m.group(2)
                test = lambda ex: _in_range(lf(ex), low, high)  # noqa: E731
            else:
                test = lambda ex: _dynamic_range(lf(ex), rf(ex))  # noqa: E731
        elif base == "is":
            if right.is_const:
                check = _instance_test(_text(right.const))
                if check is None:
                    raise self.error(
                        f"is operator cannot find class with name: {right_token.raw}",
                        right_token.pos,
                        "known types: " + ", ".join(_INSTANCE_OF),
                    )
                test = lambda ex: check(lf(ex))  # noqa: E731
            else:
                test = lambda ex: _dynamic_is(lf(ex), rf(ex))  # noqa: E731
        else:
            plain = _PLAIN_OPERATORS[op]
            test = lambda ex: plain(lf(ex), rf(ex))  # noqa: E731
        if negate:
            positive = test
            test = lambda ex: not positive(ex)  # noqa: E731
        return _Value(test, is_bool=True)


def _join(parts: list[str | _Value]) -> _Value:
    """A template: one function alone keeps its raw value; mixed parts concatenate as text."""
    if not parts:
        return _const("")
    if len(parts) == 1:
        part = parts[0]
        return _const(part) if isinstance(part, str) else part
    if all(isinstance(p, str) or p.is_const for p in parts):
        return _const("".join(p if isinstance(p, str) else _text(p.const) for p in parts))
    fns = tuple((lambda ex, s=p: s) if isinstance(p, str) else p.fn for p in parts)
    return _Value(lambda ex: "".join([_text(f(ex)) for f in fns]))


def _unary(value: _Value, op: str) -> _Value:
    """``++`` / ``--`` (UnaryExpression): the number plus or minus one, in the value's own type."""
    step = 1 if op == "++" else -1
    inner = value.fn

    def evaluate(ex: Exchange) -> Any:
        v = inner(ex)
        n = _number(v)
        if n is None or isinstance(n, float) and not math.isfinite(n):
            raise _fail(EXCHANGE_EXCEPTION, f"Cannot evaluate {_text(v)!r} as a number for {op}")
        result = int(n) + step  # Camel works on Number.longValue()
        if isinstance(v, str):
            return str(result)
        if isinstance(v, float):
            return float(result)
        if isinstance(v, Decimal):
            return Decimal(result)
        return result

    return _Value(evaluate)


def _logical(op: str, left: _Value, right: _Value) -> _Value:
    lf = left.fn if left.is_bool else (lambda ex, f=left.fn: truthy(f(ex)))
    rf = right.fn if right.is_bool else (lambda ex, f=right.fn: truthy(f(ex)))
    if op == "&&":
        return _Value(lambda ex: lf(ex) and rf(ex), is_bool=True)
    return _Value(lambda ex: lf(ex) or rf(ex), is_bool=True)


def _in(value: Any, values: Any) -> bool:
    return any(_equals(value, candidate) for candidate in values)


def _dynamic_regex(source: Any) -> re.Pattern[str]:
    if source is None:
        raise _fail(PATTERN_SYNTAX, "the regular expression is null")
    try:
        return _compile_regex(_text(source))  # re caches compiled patterns
    except ValueError as exc:
        raise _fail(PATTERN_SYNTAX, f"{exc} in regex {_text(source)!r}") from None


def _dynamic_range(value: Any, bounds: Any) -> bool:
    m = _RANGE_TEXT.fullmatch(_text(bounds))
    if m is None:
        raise _fail(
            ILLEGAL_SYNTAX,
            f"range operator is not valid: {_text(bounds)!r}. "
            "Valid syntax:'from..to' (where from and to are numbers).",
        )
    return _in_range(value, m.group(1), m.group(2))


def _dynamic_is(value: Any, type_name: Any) -> bool:
    check = _instance_test(_text(type_name))
    if check is None:
        raise _fail(ILLEGAL_SYNTAX, f"is operator cannot find class with name: {_text(type_name)}")
    return check(value)


# --------------------------------------------------------------------------- public API


class SimpleExpression:
    """A compiled Simple expression or predicate. Compile with :func:`compile_simple`."""

    __slots__ = ("source", "predicate", "_fn", "_test")

    def __init__(self, source: str, predicate: bool, value: _Value) -> None:
        self.source = source
        self.predicate = predicate
        self._fn = value.fn
        fn = value.fn
        self._test: Callable[[Exchange], bool] = fn if value.is_bool else (lambda ex: truthy(fn(ex)))

    def evaluate(self, exchange: Exchange) -> Any:
        """The expression's value: a lone ``${...}`` gives the raw object, mixed text a ``str``,
        a predicate with operators a ``bool``. Raises only :class:`SimpleEvaluationError`."""
        try:
            return self._fn(exchange)
        except SimpleEvaluationError as exc:
            exc.expression = self.source
            raise
        except Exception as exc:
            raise self._unexpected(exc) from exc

    def matches(self, exchange: Exchange) -> bool:
        """The value read as a predicate (Camel's ``ObjectHelper.evaluateValuePredicate`` for a
        value that is not a boolean). Raises only :class:`SimpleEvaluationError`."""
        try:
            return bool(self._test(exchange))
        except SimpleEvaluationError as exc:
            exc.expression = self.source
            raise
        except Exception as exc:
            raise self._unexpected(exc) from exc

    def _unexpected(self, exc: Exception) -> SimpleEvaluationError:
        return SimpleEvaluationError(
            f"Error evaluating simple expression {self.source!r}: {type(exc).__name__}: {exc}",
            error_type=EXPRESSION_EVALUATION,
            expression=self.source,
        )

    def __repr__(self) -> str:
        kind = "predicate" if self.predicate else "expression"
        return f"SimpleExpression({kind}, {self.source!r})"


@lru_cache(maxsize=2048)
def _compile(text: str, predicate: bool) -> SimpleExpression:
    compiler = _Compiler(text)
    # Camel trims the expression first (the language's "trim" option, on by default).
    start = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    if predicate:
        value = compiler.predicate(start, end)
    else:
        value, _ = compiler.template(start, end, expression_mode=True)
    return SimpleExpression(text, predicate, value)


def compile_simple(text: str, *, predicate: bool = False) -> SimpleExpression:
    """Parse a Simple expression (or, with ``predicate=True``, a predicate) once.

    Raises :class:`~moat_nb.errors.SimpleSyntaxError` naming the position and what is supported.
    """
    if not isinstance(text, str):
        raise SimpleSyntaxError(
            f"a Simple expression must be text, got {type(text).__name__}",
            expression=repr(text),
            position=0,
            hint="quote the expression in the route file",
        )
    return _compile(text, predicate)


def compile_predicate(text: str) -> SimpleExpression:
    """``compile_simple(text, predicate=True)``."""
    return compile_simple(text, predicate=True)
