"""Camel expression languages the sandbox supports: constant, simple, jsonpath, tokenize, header,
exchangeProperty.

Each is compiled once, when the route file is loaded (a bad expression fails the load with the
file and line), into an object with ``evaluate(exchange)`` (the value, Camel's
``Expression.evaluate``) and ``matches(exchange)`` (the value read as a predicate, Camel's
``Predicate.matches``). Evaluation failures raise :class:`ExchangeFailure` with Camel's type.

* ``constant`` — the text as written (Camel constants are strings unless ``resultType`` says
  otherwise: ``constant: 10`` sets the string ``"10"``).
* ``simple`` — :mod:`moat_nb.sandbox.camel.simple`.
* ``jsonpath`` — ``jsonpath-ng``'s extended parser, with Jayway's result shape (Camel's jsonpath
  language uses Jayway): a *definite* path (only fields and single indexes, ``$.a.b[0]``) gives
  one value and fails with ``org.apache.camel.ExpressionEvaluationException`` when nothing
  matches (``suppressExceptions: true`` gives ``null`` instead); an indefinite path (``[*]``,
  ``..``, filters, slices, unions) gives a list, possibly empty. A text body is parsed as JSON.
* ``tokenize`` — splits the body text on ``token`` (or a ``regex``), with ``group`` and
  ``skipFirst`` as Camel has them.
* ``header`` / ``exchangeProperty`` — the named header or property.

Every language trims its expression text unless ``trim: false`` (Camel's
``ExpressionDefinition.trim`` defaults to true).
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any

from jsonpath_ng import Child, DatumInContext, Fields, Index, JSONPath, Root, This
from jsonpath_ng.ext import parse as _jsonpath_parse
from jsonpath_ng.ext.filter import Filter

from ...errors import RouteLoadError, SimpleSyntaxError
from .conversion import canonical_type, convert_to, to_text, truthy
from .exchange import Exchange
from .failure import ExchangeFailure
from .simple import SimpleEvaluationError, compile_predicate, compile_simple

__all__ = [
    "LANGUAGES",
    "UNSUPPORTED_LANGUAGE_OPTIONS",
    "Expression",
    "ConstantExpression",
    "SimpleLanguageExpression",
    "JsonPathExpression",
    "TokenizeExpression",
    "HeaderExpression",
    "ExchangePropertyExpression",
]

#: The expression languages the engine supports, and the options each accepts besides
#: ``expression`` (the text), ``id``, ``trim`` and ``resultType``.
LANGUAGES: dict[str, frozenset[str]] = {
    "constant": frozenset(),
    "simple": frozenset(),
    "jsonpath": frozenset({"suppressExceptions", "allowSimple", "allowEasyPredicate", "writeAsString"}),
    "tokenize": frozenset({"token", "regex", "group", "skipFirst", "groupDelimiter", "includeTokens"}),
    "header": frozenset(),
    "exchangeProperty": frozenset(),
}

#: Options Camel's expression definitions have that the engine does not implement, so that a
#: route using one is told "not supported" rather than "unknown" (with a guess at a supported
#: option it is not). From the option tables of the JSONPath and Tokenize language pages
#: (https://camel.apache.org/components/latest/languages/jsonpath-language.html,
#: .../tokenize-language.html): ``source`` (Camel 4.7+; ``headerName``, ``propertyName`` and
#: ``variableName`` before it) reads the input from elsewhere than the body; ``endToken``,
#: ``inheritNamespaceTagName`` and ``xml`` are Tokenize's pair and XML modes, and the YAML DSL
#: page's own example of a full expression definition uses ``end-token``.
UNSUPPORTED_LANGUAGE_OPTIONS: dict[str, frozenset[str]] = {
    "jsonpath": frozenset({"unpack", "option", "source", "headerName", "propertyName", "variableName"}),
    "tokenize": frozenset(
        {"endToken", "inheritNamespaceTagName", "xml", "source", "headerName", "propertyName", "variableName"}
    ),
}


class Expression:
    """A compiled expression: ``evaluate`` for a value, ``matches`` for a predicate."""

    __slots__ = ("language", "source", "result_type")

    def __init__(self, language: str, source: str, result_type: str | None) -> None:
        self.language = language
        self.source = source
        self.result_type = result_type

    def _value(self, exchange: Exchange) -> Any:
        # The hook of languages that share evaluate()/matches() below; constant and simple
        # override evaluate() itself, so this is not abstract (and never reached for them).
        raise NotImplementedError(f"{type(self).__name__} must define _value or evaluate")

    def evaluate(self, exchange: Exchange) -> Any:
        value = self._value(exchange)
        if self.result_type is not None:
            value = convert_to(value, self.result_type)
        return value

    def matches(self, exchange: Exchange) -> bool:
        return truthy(self.evaluate(exchange))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.language}: {self.source!r})"


def _result_type(result_type: str | None, *, file: str | None, line: int | None) -> str | None:
    if result_type is None:
        return None
    name = canonical_type(str(result_type))
    if name is None:
        from .conversion import SUPPORTED_TYPES

        raise RouteLoadError(
            f"resultType {result_type!r} is not supported",
            file=file,
            line=line,
            construct="resultType",
            hint="use one of " + ", ".join(SUPPORTED_TYPES),
        )
    return name


class ConstantExpression(Expression):
    """Camel's ``constant`` language: the text itself."""

    __slots__ = ("value",)

    def __init__(
        self, text: str, result_type: str | None = None, *, file: str | None = None, line: int | None = None
    ) -> None:
        super().__init__("constant", text, _result_type(result_type, file=file, line=line))
        # Converted once: a constant does not change between exchanges.
        self.value = convert_to(text, self.result_type) if self.result_type else text

    def evaluate(self, exchange: Exchange) -> Any:
        return self.value


def _strip_simple_suffix(err: SimpleSyntaxError) -> str:
    suffix = f" at position {err.position} in Simple expression {err.expression!r}"
    return err.message[: -len(suffix)] if err.message.endswith(suffix) else err.message


class SimpleLanguageExpression(Expression):
    """Camel's ``simple`` language (the parser lives in :mod:`.simple`)."""

    __slots__ = ("compiled", "predicate")

    def __init__(
        self,
        text: str,
        result_type: str | None = None,
        *,
        predicate: bool = False,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__("simple", text, _result_type(result_type, file=file, line=line))
        self.predicate = predicate
        try:
            self.compiled = compile_predicate(text) if predicate else compile_simple(text)
        except SimpleSyntaxError as err:
            raise SimpleSyntaxError(
                _strip_simple_suffix(err),
                expression=err.expression,
                position=err.position,
                hint=err.hint,
                file=file,
                line=line,
            ) from err

    def evaluate(self, exchange: Exchange) -> Any:
        try:
            value = self.compiled.evaluate(exchange)
        except SimpleEvaluationError as err:
            if isinstance(err, ExchangeFailure):
                raise
            raise _simple_failure(err) from None
        if self.result_type is not None:
            value = convert_to(value, self.result_type)
        return value

    def matches(self, exchange: Exchange) -> bool:
        try:
            return bool(self.compiled.matches(exchange))
        except SimpleEvaluationError as err:
            if isinstance(err, ExchangeFailure):
                raise
            raise _simple_failure(err) from None


def _simple_failure(err: SimpleEvaluationError) -> ExchangeFailure:
    error_type = getattr(err, "error_type", None) or "org.apache.camel.ExpressionEvaluationException"
    message = getattr(err, "message", None) or str(err)
    return ExchangeFailure(str(error_type), str(message))


class _JaywayFilter(Filter):
    """A ``[?(...)]`` filter as Jayway applies it: on a map it tests the map itself.

    Jayway's ``PredicatePathToken.evaluate`` gives ``[map]`` when the map passes the filter and
    ``[]`` otherwise (``$[?(@.kind == 'B')]`` on ``{"kind": "B"}`` is that object); jsonpath-ng,
    following RFC 9535, tests the map's values instead. On a list both test each element.
    """

    def find(self, datum: Any) -> list[Any]:
        datum = DatumInContext.wrap(datum)
        if isinstance(datum.value, dict):
            return [datum] if all(e.find(datum) for e in self.expressions) else []
        return super().find(datum)


def _jayway_filters(node: Any) -> None:
    # Make the filters that follow a path step (Child's right side) Jayway's. A filter under a
    # deep scan ($..[?(...)]) keeps jsonpath-ng's reading: the scan already visits each map, so
    # testing the map itself there would give every match twice.
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Child) and type(current.right) is Filter:
            current.right.__class__ = _JaywayFilter
        for value in getattr(current, "__dict__", {}).values():
            if isinstance(value, JSONPath):
                stack.append(value)
            elif isinstance(value, list):
                stack.extend(v for v in value if isinstance(v, JSONPath))


@lru_cache(maxsize=512)
def _compile_jsonpath(text: str) -> Any:
    # The jsonpath-ng parser builds its tables per call; route versions repeat paths.
    path = _jsonpath_parse(text)
    _jayway_filters(path)
    return path


def _is_definite(node: Any) -> bool:
    # Jayway's PathCompiler: a path is definite when it has no wildcard, deep scan, filter,
    # slice or multi-index/multi-field segment; a definite path yields one value, not a list.
    if isinstance(node, Root | This):
        return True
    if isinstance(node, Child):
        return _is_definite(node.left) and _is_definite(node.right)
    if isinstance(node, Fields):
        return len(node.fields) == 1 and node.fields[0] != "*"
    if isinstance(node, Index):
        indices = getattr(node, "indices", None)
        if indices is None:
            indices = (getattr(node, "index", None),)
        return len(indices) == 1
    return False


# Jayway's path functions ("Functions can be invoked at the tail end of a path - the input to a
# function is the output of the path expression", json-path README; Camel's jsonpath language
# uses Jayway). Those without arguments are supported after a definite path, whose one value is
# the function's input; after an indefinite path Jayway feeds the function each match or the
# collected list depending on the path, so such paths are refused at load time instead of
# guessed, as are the functions that take arguments (concat, append, index).
_TAIL_FUNCTION = re.compile(r"(?s)(.*?)\.\s*([A-Za-z_][A-Za-z0-9_]*)\(([^()\[\]]*)\)\s*")
_ARG_FUNCTIONS = frozenset({"concat", "append", "index"})
_NUMERIC_FUNCTIONS = frozenset({"min", "max", "avg", "sum", "stddev"})
_FUNCTIONS = _NUMERIC_FUNCTIONS | {"length", "keys", "first", "last"}
_FUNCTION_CALL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\s*\(")


def _numbers(value: Any, name: str) -> list[float]:
    # AbstractAggregation.invoke: the numbers of the array (other items skipped); none at all
    # is a JsonPathException.
    items = value if isinstance(value, list) else []
    numbers = [float(v) for v in items if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        raise _evaluation_failure(
            f"Aggregation function attempted to calculate value using empty array ({name}())",
            "com.jayway.jsonpath.JsonPathException",
        )
    return numbers


def _apply_function(name: str, value: Any) -> Any:
    """Jayway's function ``name()`` on a value: the aggregations give a Double, ``length()`` the
    size of an array or object (else null), ``keys()`` an object's keys, ``first()``/``last()``
    an array's end item."""
    if name in _NUMERIC_FUNCTIONS:
        numbers = _numbers(value, name)
        if name == "min":
            return min(numbers)
        if name == "max":
            return max(numbers)
        total = math.fsum(numbers)
        if name == "sum":
            return total
        mean = total / len(numbers)
        if name == "avg":
            return mean
        return math.sqrt(max(math.fsum(n * n for n in numbers) / len(numbers) - mean * mean, 0.0))
    if name == "length":
        return len(value) if isinstance(value, list | dict) else None
    if name == "keys":
        return list(value) if isinstance(value, dict) else None
    if not isinstance(value, list) or not value:
        raise _evaluation_failure(
            f"Function {name}() needs a non-empty array", "com.jayway.jsonpath.JsonPathException"
        )
    return value[0] if name == "first" else value[-1]


def _evaluation_failure(message: str, cause_type: str) -> ExchangeFailure:
    return ExchangeFailure(
        "org.apache.camel.ExpressionEvaluationException",
        message,
        cause=ExchangeFailure(cause_type, message),
    )


class JsonPathExpression(Expression):
    """Camel's ``jsonpath`` language over the body (Jayway semantics, ``jsonpath-ng`` parser)."""

    __slots__ = ("path", "definite", "suppress", "function")

    def __init__(
        self,
        text: str,
        result_type: str | None = None,
        *,
        suppress: bool = False,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__("jsonpath", text, _result_type(result_type, file=file, line=line))
        hint = "write a JSONPath such as $.lines[*] or $.customer.id (filters: $.lines[?(@.qty > 1)])"
        fn_hint = (
            "functions without arguments (length, min, max, avg, sum, stddev, keys, first, last) "
            "are supported at the end of a definite path such as $.lines.length()"
        )
        path_text, self.function = text, None
        tail = _TAIL_FUNCTION.fullmatch(text)
        if tail is not None:
            path_text, name = tail.group(1), tail.group(2)
            if name not in _FUNCTIONS or tail.group(3).strip():
                if name in _ARG_FUNCTIONS or name in _FUNCTIONS:
                    what = f"function {name}() with arguments is not supported"
                else:
                    what = f"unknown function {name}()"
                raise RouteLoadError(
                    f"jsonpath {text!r}: {what}",
                    file=file,
                    line=line,
                    construct=f"jsonpath function {name}()",
                    hint=fn_hint,
                )
            self.function = name
        try:
            self.path = _compile_jsonpath(path_text)
        except Exception as err:  # jsonpath-ng raises several types (lexer, parser, ValueError)
            call = _FUNCTION_CALL.search(path_text)
            if call is not None:
                raise RouteLoadError(
                    f"jsonpath {text!r}: function {call.group(0).rstrip('( ')}() is not supported "
                    "there (only at the end of the path)",
                    file=file,
                    line=line,
                    construct="jsonpath function",
                    hint=fn_hint,
                ) from None
            raise RouteLoadError(
                f"jsonpath {text!r} does not parse: {err}",
                file=file,
                line=line,
                construct="jsonpath",
                hint=hint,
            ) from None
        self.definite = _is_definite(self.path)
        if self.function is not None and not self.definite:
            raise RouteLoadError(
                f"jsonpath {text!r}: function {self.function}() after an indefinite path "
                "(wildcard, deep scan, filter, slice) is not supported",
                file=file,
                line=line,
                construct=f"jsonpath function {self.function}()",
                hint=fn_hint,
            )
        self.suppress = suppress

    def _document(self, exchange: Exchange) -> Any:
        body = exchange.body
        if isinstance(body, dict | list):
            return body
        text = to_text(body)
        if text is None:
            raise _evaluation_failure(
                f"Cannot evaluate jsonpath {self.source} on a null body",
                "com.jayway.jsonpath.InvalidJsonException",
            )
        try:
            return json.loads(text)
        except ValueError as err:
            raise _evaluation_failure(
                f"Body is not JSON for jsonpath {self.source}: {err}",
                "com.jayway.jsonpath.InvalidJsonException",
            ) from None

    def _find(self, exchange: Exchange, suppress: bool) -> Any:
        try:
            document = self._document(exchange)
        except ExchangeFailure:
            if suppress:
                return None
            raise
        values = [m.value for m in self.path.find(document)]
        if not self.definite:
            return values
        if values:
            if self.function is None:
                return values[0]
            try:
                return _apply_function(self.function, values[0])
            except ExchangeFailure:
                if suppress:
                    return None
                raise
        if suppress:
            return None
        raise _evaluation_failure(
            f"No results for path: {self.source}", "com.jayway.jsonpath.PathNotFoundException"
        )

    def _value(self, exchange: Exchange) -> Any:
        return self._find(exchange, self.suppress)

    def matches(self, exchange: Exchange) -> bool:
        # Camel's JsonPathExpression is an ExpressionAdapter: matches() is
        # evaluateValuePredicate(evaluate()), and evaluate() throws ExpressionEvaluationException
        # for a definite path that is not there (Jayway's PathNotFoundException) or a body that
        # is not JSON, unless suppressExceptions is set; that is what the JSONPath language
        # page's "Suppress exceptions" example (.when().jsonpath("person.middlename", true))
        # is for. An indefinite path ($.lines[?(@.qty > 5)]) that finds nothing is [] and false.
        return truthy(self._find(exchange, self.suppress))


class TokenizeExpression(Expression):
    """Camel's ``tokenize`` language: the body text split on a token or a regex."""

    __slots__ = ("token", "regex", "group", "skip_first", "group_delimiter", "_pattern")

    def __init__(
        self,
        token: str,
        *,
        regex: bool = False,
        group: int | None = None,
        skip_first: bool = False,
        group_delimiter: str | None = None,
        result_type: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__("tokenize", token, _result_type(result_type, file=file, line=line))
        if not regex:
            # Route files write a line break as the two characters \n (Camel's own examples:
            # <tokenize token="\n"/>, where XML has no escapes); read them as the character.
            token = token.replace("\\n", "\n").replace("\\r", "\r").replace("\\t", "\t")
        self.token = token
        self.regex = regex
        self.group = group
        self.skip_first = skip_first
        self.group_delimiter = group_delimiter if group_delimiter is not None else token
        self._pattern = None
        if regex:
            try:
                self._pattern = re.compile(token)
            except re.error as err:
                raise RouteLoadError(
                    f"tokenize regex {token!r} does not compile: {err}",
                    file=file,
                    line=line,
                    construct="tokenize",
                    hint="write a Java/Python regular expression, or set regex: false",
                ) from None
        if group is not None and group < 1:
            raise RouteLoadError(
                f"tokenize group {group} must be at least 1",
                file=file,
                line=line,
                construct="tokenize",
                hint="group N joins every N tokens into one item",
            )

    def _value(self, exchange: Exchange) -> Any:
        text = to_text(exchange.body)
        if not text:
            return []
        parts = self._pattern.split(text) if self._pattern is not None else text.split(self.token)
        # java.util.Scanner, which Camel's tokenizer uses, yields no trailing empty token.
        if parts and parts[-1] == "":
            parts.pop()
        if self.skip_first:
            parts = parts[1:]
        if self.group:
            n = self.group
            parts = [self.group_delimiter.join(parts[i : i + n]) for i in range(0, len(parts), n)]
        return parts


class HeaderExpression(Expression):
    """Camel's ``header`` language: the value of one header."""

    __slots__ = ()

    def _value(self, exchange: Exchange) -> Any:
        return exchange.headers.get(self.source)


class ExchangePropertyExpression(Expression):
    """Camel's ``exchangeProperty`` language: the value of one exchange property."""

    __slots__ = ()

    def _value(self, exchange: Exchange) -> Any:
        return exchange.properties.get(self.source)
