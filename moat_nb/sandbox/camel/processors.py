"""The processors (Camel's EIPs) a loaded route is made of, and what each does to an exchange.

Each class is one Camel EIP; ``processor_type`` is Camel's short name for it (``setHeader``,
``to``, ``choice`` ...). ``process(exchange, run, seq, depth, iteration)`` does the work on the
exchange in place; processors with their own steps (``choice``'s branches, ``filter``,
``split``, ``loop``, ``doTry``) run them through ``run.pipeline(...)`` so that each nested step
gets its own trace record with this processor as parent. ``run`` is the engine's per-exchange
:class:`~.trace.Run`: it records the trace, dispatches endpoints and answers replays.

This module holds the base class and the EIPs that change the message in place (setters,
removers, data formats, ``log``, ``delay``, ``stop``) and route it (``choice``, ``filter``);
:mod:`.endpoints`, :mod:`.iteration`, :mod:`.try_catch` and :mod:`.bean` hold the others.
Semantics follow the Camel EIP pages; ``delay`` calls ``RunContext.sleep`` when one is given
and otherwise does not wait (the sandbox never really sleeps while generating traffic).
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .conversion import convert_to, java_type_of, to_json, to_text
from .exchange import Exchange
from .failure import ExchangeFailure
from .language import Expression
from .simple import java_regex

if TYPE_CHECKING:
    from .trace import Run

__all__ = [
    "Processor",
    "WithSteps",
    "SetBody",
    "Transform",
    "SetHeader",
    "SetProperty",
    "RemoveHeader",
    "RemoveHeaders",
    "RemoveProperty",
    "RemoveProperties",
    "Log",
    "Choice",
    "When",
    "Otherwise",
    "Filter",
    "Marshal",
    "Unmarshal",
    "ConvertBodyTo",
    "Delay",
    "Stop",
    "name_matcher",
]


class Processor(ABC):
    """One step of a route: its id, Camel type, where it was written, and its nested steps."""

    __slots__ = ("processor_id", "route_id", "file", "line", "description", "frame", "in_try")
    processor_type: ClassVar[str] = "?"
    #: True when ``process`` does nothing to the exchange after its last nested step returns,
    #: so the engine may reuse that step's output capture as this processor's.
    ends_with_children: ClassVar[bool] = False

    def __init__(
        self, processor_id: str, route_id: str, file: str, line: int, description: str | None = None
    ) -> None:
        self.processor_id = processor_id
        self.route_id = route_id
        self.file = file
        self.line = line
        self.description = description
        # The stack-trace frame, built once: ``routeId.processorId(file:line)``.
        self.frame = f"{route_id}.{processor_id}({file.rsplit('/', 1)[-1]}:{line})"
        #: Whether this is a doTry/doCatch/doFinally or sits in one of its route (set by the
        #: loader): Camel's ProcessorReifier wraps such a processor in no error handler.
        self.in_try = False

    @abstractmethod
    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        """Do this processor's work on ``exchange`` (in place); raise :class:`ExchangeFailure`
        to fail it. Endpoint processors report their URI through ``run.send``."""

    def children(self) -> Iterator[Processor]:
        """Nested processors, in route order (for static walks: ids, counts, endpoints)."""
        return iter(())

    def __repr__(self) -> str:
        return f"<{self.processor_type} {self.processor_id} {self.route_id}@{self.line}>"


class WithSteps(Processor):
    """A processor that runs a nested pipeline (``when``, ``otherwise``, ``doCatch`` ...)."""

    __slots__ = ("steps",)
    ends_with_children = True

    def __init__(self, *args: Any, steps: Sequence[Processor] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps: tuple[Processor, ...] = tuple(steps)

    def children(self) -> Iterator[Processor]:
        return iter(self.steps)

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        run.pipeline(self.steps, exchange, seq, depth + 1, iteration)
        return None


# --------------------------------------------------------------------------- message setters


class SetBody(Processor):
    """``setBody``: the body becomes the expression's value."""

    __slots__ = ("expression",)
    processor_type = "setBody"

    def __init__(self, *args: Any, expression: Expression, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.expression = expression

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        exchange.body = self.expression.evaluate(exchange)
        return None


class Transform(SetBody):
    """``transform``: since Camel 3 the same as ``setBody``."""

    __slots__ = ()
    processor_type = "transform"


class SetHeader(Processor):
    """``setHeader``: one header becomes the expression's value (``SetHeaderProcessor``).

    The name is a constant, or a Simple expression when it holds a Simple function (``${...}``;
    ``SetHeaderReifier`` tests ``LanguageSupport.hasSimpleFunction``), evaluated after the value.
    """

    __slots__ = ("name", "expression", "name_expression")
    processor_type = "setHeader"

    def __init__(
        self,
        *args: Any,
        name: str,
        expression: Expression,
        name_expression: Expression | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.name = name
        self.expression = expression
        self.name_expression = name_expression

    def _key(self, exchange: Exchange) -> str:
        if self.name_expression is None:
            return self.name
        return to_text(self.name_expression.evaluate(exchange)) or ""

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        value = self.expression.evaluate(exchange)
        exchange.headers[self._key(exchange)] = value
        return None


class SetProperty(SetHeader):
    """``setProperty``: one exchange property becomes the expression's value; a ``null`` value
    removes the property (``AbstractExchange.setProperty``: "if the value is null, we just
    remove the key from the map")."""

    __slots__ = ()
    processor_type = "setProperty"

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        value = self.expression.evaluate(exchange)
        key = self._key(exchange)
        if value is None:
            exchange.properties.pop(key, None)
        else:
            exchange.properties[key] = value
        return None


class RemoveHeader(Processor):
    """``removeHeader``: drop one header (names compare case-insensitively)."""

    __slots__ = ("name",)
    processor_type = "removeHeader"

    def __init__(self, *args: Any, name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = name

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        exchange.headers.pop(self.name, None)
        return None


class RemoveProperty(RemoveHeader):
    """``removeProperty``: drop one exchange property."""

    __slots__ = ()
    processor_type = "removeProperty"

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        exchange.properties.pop(self.name, None)
        return None


def name_matcher(pattern: str) -> Callable[[str], bool]:
    """Camel's ``PatternHelper.matchPattern``, case-insensitive throughout: the name itself
    (``equalsIgnoreCase``), a prefix when the pattern *ends* with ``*`` (``CamelHttp*``; a ``*``
    elsewhere is no wildcard), else a Java regex matching the whole name with
    ``CASE_INSENSITIVE`` (a pattern that is no valid regex, such as ``*Id``, matches nothing).

    Raises ``ValueError`` for a regex Python would read differently from Java (see
    :func:`.simple.java_regex`): the loader reports it.
    """
    exact = pattern.lower()
    prefix = pattern[:-1].lower() if pattern.endswith("*") else None
    translated = java_regex(pattern)
    try:
        regex: re.Pattern[str] | None = re.compile(translated, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError):
        regex = None  # Java's PatternSyntaxException is ignored: no match

    def match(name: str) -> bool:
        low = name.lower()
        if low == exact:
            return True
        if prefix is not None and low.startswith(prefix):
            return True
        return regex is not None and regex.fullmatch(name) is not None

    return match


class RemoveHeaders(Processor):
    """``removeHeaders``: drop every header matching ``pattern`` except those matching
    ``excludePattern`` (``DefaultMessage.removeHeaders`` with ``PatternHelper``)."""

    __slots__ = ("pattern", "exclude", "_match", "_keep")
    processor_type = "removeHeaders"

    def __init__(self, *args: Any, pattern: str, exclude: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pattern = pattern
        self.exclude = exclude
        self._match = name_matcher(pattern)
        self._keep = name_matcher(exclude) if exclude else None

    def _remove(self, mapping: Any) -> None:
        keep = self._keep
        for key in [k for k in mapping if self._match(k) and not (keep and keep(k))]:
            del mapping[key]

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        self._remove(exchange.headers)
        return None


class RemoveProperties(RemoveHeaders):
    """``removeProperties``: drop every exchange property matching ``pattern``; Camel's
    ``AbstractExchange.removeProperties`` matches with the same case-insensitive
    ``PatternHelper`` as headers."""

    __slots__ = ()
    processor_type = "removeProperties"

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        self._remove(exchange.properties)
        return None


class Log(Processor):
    """``log``: evaluate the Simple message and hand it to ``RunContext.log``."""

    __slots__ = ("message", "level", "log_name")
    processor_type = "log"

    def __init__(
        self, *args: Any, message: Expression, level: str = "INFO", log_name: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.message = message
        self.level = level
        self.log_name = log_name

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        if self.level == "OFF":
            # LogProcessor.process works only when logger.shouldLog(), which CamelLogger
            # answers false for OFF: nothing is evaluated nor logged.
            return None
        text = to_text(self.message.evaluate(exchange))
        sink = exchange.context.log
        if sink is not None:
            sink(self.log_name or exchange.route_id, self.level, text or "")
        return None


# --------------------------------------------------------------------------- routing


class When(WithSteps):
    """A ``choice`` branch: its predicate and steps (a trace record when it is taken)."""

    __slots__ = ("predicate",)
    processor_type = "when"

    def __init__(self, *args: Any, predicate: Expression, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.predicate = predicate


class Otherwise(WithSteps):
    """The ``choice`` branch taken when no ``when`` matches."""

    __slots__ = ()
    processor_type = "otherwise"


class Choice(Processor):
    """``choice``: the first ``when`` whose predicate matches runs, else ``otherwise``."""

    __slots__ = ("whens", "otherwise")
    processor_type = "choice"
    ends_with_children = True

    def __init__(self, *args: Any, whens: Sequence[When], otherwise: Otherwise | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.whens = tuple(whens)
        self.otherwise = otherwise

    def children(self) -> Iterator[Processor]:
        yield from self.whens
        if self.otherwise is not None:
            yield self.otherwise

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        for when in self.whens:
            if when.predicate.matches(exchange):
                run.execute(when, exchange, seq, depth + 1, iteration)
                return None
        if self.otherwise is not None:
            run.execute(self.otherwise, exchange, seq, depth + 1, iteration)
        return None


class Filter(WithSteps):
    """``filter``: the steps run only when the predicate matches; the route goes on either way.

    Camel 4's ``FilterProcessor`` sets no exchange property of its own (the EIP page: "The
    Filter eip has no exchange properties"; Camel 2's ``CamelFilterMatched`` is gone): only
    when ``statusPropertyName`` names one does it store the outcome there, as a boolean.
    """

    __slots__ = ("predicate", "status_property")
    processor_type = "filter"

    def __init__(
        self, *args: Any, predicate: Expression, status_property: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.predicate = predicate
        self.status_property = status_property

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        matched = self.predicate.matches(exchange)
        if self.status_property is not None:
            exchange.properties[self.status_property] = matched
        if matched:
            run.pipeline(self.steps, exchange, seq, depth + 1, iteration)
        return None


# --------------------------------------------------------------------------- data formats


class Marshal(Processor):
    """``marshal: {json: {}}``: the body written as JSON text (Jackson's output).

    Like Camel's ``AbstractJacksonDataFormat.marshal`` (and Gson's), it sets the
    ``Content-Type`` header to ``application/json`` unless ``contentTypeHeader: false``.
    """

    __slots__ = ("pretty", "content_type_header")
    processor_type = "marshal"

    def __init__(
        self, *args: Any, pretty: bool = False, content_type_header: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.pretty = pretty
        self.content_type_header = content_type_header

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        exchange.body = to_json(exchange.body, pretty=self.pretty)
        if self.content_type_header:
            exchange.headers["Content-Type"] = "application/json"
        return None


def _reject_constant(token: str) -> Any:
    # Jackson rejects NaN and Infinity unless ALLOW_NON_NUMERIC_NUMBERS is on.
    raise ValueError(f"Non-standard token '{token}': enable ALLOW_NON_NUMERIC_NUMBERS to allow")


#: Jackson's ParserMinimalBase._validJsonTokenList() (ALLOW_NON_NUMERIC_NUMBERS off).
_JSON_VALUES = "(JSON String, Number, Array, Object or token 'null', 'true' or 'false')"
#: JsonLocation since Jackson 2.16, which Camel 4 ships: the source is not shown by default.
_JSON_SOURCE = "REDACTED (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled)"


def _jackson_parse_message(text: str, err: json.JSONDecodeError) -> str:
    """Jackson's JsonParseException message for the errors users meet most (a body that is not
    JSON at all, an unquoted field name), so that a failure reads as it does in Camel: the
    problem, then ``at [Source: ...; line: L, column: C]`` with the column after the offending
    character or token, as Jackson counts. Other syntax errors keep Python's description."""
    pos, line, column = err.pos, err.lineno, err.colno
    char = text[pos] if pos < len(text) else ""
    if err.msg == "Expecting value" and (char.isalpha() or char in "_$"):
        # _handleUnexpectedValue -> _reportInvalidToken: the run of identifier characters.
        end = pos
        while end < len(text) and (text[end].isalnum() or text[end] in "_$"):
            end += 1
        token = text[pos:end]
        problem = f"Unrecognized token '{token}': was expecting {_JSON_VALUES}"
        column += len(token)
    elif err.msg == "Expecting value" and char:
        problem = f"Unexpected character ('{char}' (code {ord(char)})): expected a valid value {_JSON_VALUES}"
        column += 1
    elif err.msg == "Expecting property name enclosed in double quotes" and char and char != "}":
        problem = (
            f"Unexpected character ('{char}' (code {ord(char)})): "
            "was expecting double-quote to start field name"
        )
        column += 1
    else:
        return str(err)
    return f"{problem}\n at [Source: {_JSON_SOURCE}; line: {line}, column: {column}]"


_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _read_first_json_value(text: str) -> Any:
    """The first JSON value in ``text``, the rest unread, as Jackson 2's
    ``ObjectReader.readValue`` reads with ``DeserializationFeature.FAIL_ON_TRAILING_TOKENS`` off
    (its default, and Camel's ``JacksonDataFormat`` makes a plain ``new ObjectMapper()``).

    The parser still looks at the one character after a root-level number or literal:
    ``ReaderBasedJsonParser._verifyRootSpace`` wants whitespace after a number ("Expected space
    separating root-level values") and ``_matchToken`` refuses a literal run on into identifier
    characters (``truex`` is an unrecognized token)."""
    start = len(text) - len(text.lstrip(" \t\n\r"))  # the whitespace json.loads skips
    value, end = _JSON_DECODER.raw_decode(text, start)
    if end < len(text):
        char = text[end]
        if type(value) in (int, float) and char not in " \t\n\r":
            line = text.count("\n", 0, end) + 1
            column = end - (text.rfind("\n", 0, end) + 1) + 2  # after the character, 1-based
            raise ExchangeFailure(
                "com.fasterxml.jackson.core.JsonParseException",
                f"Unexpected character ('{char}' (code {ord(char)})): "
                "Expected space separating root-level values\n"
                f" at [Source: {_JSON_SOURCE}; line: {line}, column: {column}]",
            )
        if (value is None or type(value) is bool) and (char.isalnum() or char in "_$"):
            err = json.JSONDecodeError("Expecting value", text, start)
            raise ExchangeFailure(
                "com.fasterxml.jackson.core.JsonParseException", _jackson_parse_message(text, err)
            )
    return value


class Unmarshal(Processor):
    """``unmarshal: {json: {}}``: the body text parsed as JSON (maps and lists); what follows
    the first JSON value is ignored, as Jackson does by default (:func:`_read_first_json_value`)."""

    __slots__ = ()
    processor_type = "unmarshal"

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        body = exchange.body
        if isinstance(body, dict | list):
            raise ExchangeFailure(
                "com.fasterxml.jackson.core.JsonParseException",
                "the body is already unmarshalled (a java.util.LinkedHashMap / ArrayList); "
                "unmarshal expects JSON text",
            )
        text = to_text(body)
        if not text or not text.strip():
            raise ExchangeFailure(
                "com.fasterxml.jackson.core.JsonParseException",
                "No content to map due to end-of-input",
            )
        try:
            exchange.body = _read_first_json_value(text)
        except json.JSONDecodeError as err:
            raise ExchangeFailure(
                "com.fasterxml.jackson.core.JsonParseException", _jackson_parse_message(text, err)
            ) from None
        except ValueError as err:
            raise ExchangeFailure("com.fasterxml.jackson.core.JsonParseException", f"{err}") from None
        return None


class ConvertBodyTo(Processor):
    """``convertBodyTo``: the body converted to a Java type, as Camel's ``ConvertBodyProcessor``.

    A ``null`` body is left alone ("only convert if there is a body"). With ``mandatory`` (the
    default) the conversion is ``Message.getMandatoryBody(type)``: a failed conversion is an
    ``org.apache.camel.InvalidPayloadException`` caused by the converter's
    ``TypeConversionException``; with ``mandatory: false`` it is ``getBody(type)``, which lets
    the ``TypeConversionException`` through.
    """

    __slots__ = ("type_name", "mandatory", "charset")
    processor_type = "convertBodyTo"

    def __init__(
        self, *args: Any, type_name: str, mandatory: bool = True, charset: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.type_name = type_name
        self.mandatory = mandatory
        #: The ``charset`` option as a Python codec: Camel sets it as ``CamelCharsetName`` for
        #: the conversion only (and restores the previous value after).
        self.charset = charset

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        body = exchange.body
        if body is None:
            return None
        try:
            exchange.body = convert_to(body, self.type_name, self.charset)
        except ExchangeFailure as failure:
            if not self.mandatory:
                raise
            # InvalidPayloadException(exchange, type, message, cause), a CamelExchangeException
            raise ExchangeFailure(
                "org.apache.camel.InvalidPayloadException",
                f"No body available of type: {self.type_name} but has type: {java_type_of(body)} "
                f"on: Message. Caused by: {failure.message_text}. Exchange[{exchange.exchange_id}]. "
                f"Caused by: [{failure.error_type} - {failure.message_text}]",
                cause=failure,
            ) from None
        return None


# --------------------------------------------------------------------------- others


class Delay(Processor):
    """``delay``: wait the expression's milliseconds through ``RunContext.sleep`` (if any)."""

    __slots__ = ("expression",)
    processor_type = "delay"

    def __init__(self, *args: Any, expression: Expression, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.expression = expression

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        # Delayer.calculateDelay: delay.evaluate(exchange, Long.class); null or <= 0 is no delay.
        millis = convert_to(self.expression.evaluate(exchange), "java.lang.Long") or 0
        sleep = exchange.context.sleep
        if sleep is not None and millis > 0:
            sleep(millis / 1000.0)
        return None


class Stop(Processor):
    """``stop``: no further processor runs for this exchange (it completes, not fails)."""

    __slots__ = ()
    processor_type = "stop"

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        exchange.route_stop = True
        return None
