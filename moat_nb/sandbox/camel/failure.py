"""Why an exchange failed, in Camel's terms: a Java-style exception type, a message, a cause chain.

A running exchange fails with an :class:`ExchangeFailure`. It carries what a Camel agent would
report: ``error_type`` (the exception's class name — a Java class name such as
``org.apache.camel.CamelExchangeException``, or a bean's own exception class), the message, the
cause (Camel's ``getCause()``), and the names of every class it *is* (its type and its
supertypes), so that ``doCatch`` can match by superclass as Java's ``instanceof`` does.

Python exceptions raised by beans or endpoint simulators become failures by
:func:`failure_from_python`: the type is the class's ``camel_type`` attribute when it declares
one (``camel_type = "com.acme.orders.OutOfStockException"``), else its qualified Python name
(``moat_nb.sandbox.apps.orders.beans.OutOfStockException``; builtins without ``builtins.``:
``ValueError``). Every class in its MRO contributes its ``camel_type`` and its Python names to
the matchable names, and, like any unchecked Java exception, it also matches
``java.lang.RuntimeException``, ``java.lang.Exception`` and ``java.lang.Throwable``.

Pure: no I/O. The stack trace text is built from the route frames the failure passed through
(``<routeId>.<processorId>(<file>:<line>)``, in the place Java puts ``Class.method(File:line)``)
and, for a Python exception, the Python frames of the bean that raised it.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from types import TracebackType

__all__ = [
    "JAVA_SUPERCLASS",
    "ExchangeFailure",
    "failure_from_python",
    "java_type_names",
    "python_type_name",
    "is_known_exception_name",
]

# The Java (and Camel, Jackson, Jayway) exception classes the engine raises or that route files
# commonly catch, each with its superclass, so that doCatch can match by superclass by name.
JAVA_SUPERCLASS: dict[str, str | None] = {
    "java.lang.Throwable": None,
    "java.lang.Exception": "java.lang.Throwable",
    "java.lang.Error": "java.lang.Throwable",
    "java.lang.VirtualMachineError": "java.lang.Error",
    "java.lang.StackOverflowError": "java.lang.VirtualMachineError",
    "java.lang.RuntimeException": "java.lang.Exception",
    "java.lang.IllegalArgumentException": "java.lang.RuntimeException",
    "java.lang.NumberFormatException": "java.lang.IllegalArgumentException",
    "java.lang.IllegalStateException": "java.lang.RuntimeException",
    "java.lang.NullPointerException": "java.lang.RuntimeException",
    "java.lang.ArithmeticException": "java.lang.RuntimeException",
    "java.lang.ClassCastException": "java.lang.RuntimeException",
    "java.lang.UnsupportedOperationException": "java.lang.RuntimeException",
    "java.lang.IndexOutOfBoundsException": "java.lang.RuntimeException",
    "java.lang.ArrayIndexOutOfBoundsException": "java.lang.IndexOutOfBoundsException",
    "java.util.NoSuchElementException": "java.lang.RuntimeException",
    "java.util.concurrent.TimeoutException": "java.lang.Exception",
    "java.io.IOException": "java.lang.Exception",
    "java.io.UncheckedIOException": "java.lang.RuntimeException",
    "java.net.SocketException": "java.io.IOException",
    "java.net.ConnectException": "java.net.SocketException",
    "java.io.InterruptedIOException": "java.io.IOException",
    "java.net.SocketTimeoutException": "java.io.InterruptedIOException",
    "org.apache.camel.CamelException": "java.lang.Exception",
    "org.apache.camel.CamelExchangeException": "org.apache.camel.CamelException",
    "org.apache.camel.InvalidPayloadException": "org.apache.camel.CamelExchangeException",
    "org.apache.camel.NoTypeConversionAvailableException": "org.apache.camel.CamelException",
    "org.apache.camel.ValidationException": "org.apache.camel.CamelExchangeException",
    "org.apache.camel.component.direct.DirectConsumerNotAvailableException": (
        "org.apache.camel.CamelExchangeException"
    ),
    "org.apache.camel.http.base.HttpOperationFailedException": "org.apache.camel.CamelException",
    "org.apache.camel.RuntimeCamelException": "java.lang.RuntimeException",
    "org.apache.camel.ExpressionEvaluationException": "org.apache.camel.RuntimeCamelException",
    "org.apache.camel.TypeConversionException": "org.apache.camel.RuntimeCamelException",
    "org.apache.camel.NoSuchBeanException": "org.apache.camel.RuntimeCamelException",
    "org.apache.camel.CamelExecutionException": "org.apache.camel.RuntimeCamelException",
    "com.fasterxml.jackson.core.JacksonException": "java.io.IOException",
    "com.fasterxml.jackson.core.JsonProcessingException": "com.fasterxml.jackson.core.JacksonException",
    "com.fasterxml.jackson.core.exc.StreamReadException": (
        "com.fasterxml.jackson.core.JsonProcessingException"
    ),
    "com.fasterxml.jackson.core.JsonParseException": "com.fasterxml.jackson.core.exc.StreamReadException",
    "com.jayway.jsonpath.JsonPathException": "java.lang.RuntimeException",
    "com.jayway.jsonpath.InvalidPathException": "com.jayway.jsonpath.JsonPathException",
    "com.jayway.jsonpath.PathNotFoundException": "com.jayway.jsonpath.InvalidPathException",
    "com.jayway.jsonpath.InvalidJsonException": "com.jayway.jsonpath.JsonPathException",
}

# Python exceptions are unchecked: a Java catch of RuntimeException would catch them.
_UNCHECKED = ("java.lang.RuntimeException", "java.lang.Exception", "java.lang.Throwable")


def java_type_names(error_type: str) -> frozenset[str]:
    """``error_type`` and all its known superclasses; an unknown class is a checked Exception."""
    names = {error_type}
    current: str | None = error_type
    if current not in JAVA_SUPERCLASS:
        current = "java.lang.Exception"
    while current is not None:
        names.add(current)
        current = JAVA_SUPERCLASS.get(current)
    return frozenset(names)


def python_type_name(cls: type) -> str:
    """``module.QualName`` of a class, without the ``builtins.`` prefix."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def is_known_exception_name(name: str) -> bool:
    """Whether ``name`` can name an exception in a ``doCatch``: a qualified (dotted) class name,
    or the bare name of a Python builtin exception (``ValueError``)."""
    if "." in name:
        return all(part.isidentifier() for part in name.split("."))
    obj = getattr(builtins, name, None)
    return isinstance(obj, type) and issubclass(obj, BaseException)


class ExchangeFailure(Exception):
    """The exception a failed exchange carries (Camel's ``exchange.getException()``)."""

    def __init__(
        self,
        error_type: str,
        message: str | None,
        *,
        cause: ExchangeFailure | None = None,
        type_names: frozenset[str] | None = None,
        python_frames: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        #: Java's ``getMessage()``: ``None`` for an exception built without one (a
        #: ``throwException`` with no ``message``), which Java prints as ``null``.
        self.message = message
        self.cause = cause
        self.type_names = type_names if type_names is not None else java_type_names(error_type)
        self.python_frames = python_frames
        #: ``routeId.processorId(file:line)`` of each processor the failure passed through,
        #: innermost first, appended while it propagates.
        self.frames: list[str] = []

    @property
    def message_text(self) -> str:
        """The message as Java's string concatenation prints it (``null`` when there is none)."""
        return "null" if self.message is None else self.message

    def __str__(self) -> str:
        # Java's Throwable.toString: the class name alone when getLocalizedMessage() is null.
        return self.error_type if self.message is None else f"{self.error_type}: {self.message}"

    def chain(self) -> Iterator[ExchangeFailure]:
        """This failure and its causes, outermost first (how Camel's doCatch walks them)."""
        current: ExchangeFailure | None = self
        seen: set[int] = set()
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            yield current
            current = current.cause

    def find(self, names: frozenset[str]) -> ExchangeFailure | None:
        """The first failure in the cause chain that is an instance of one of ``names``."""
        for failure in self.chain():
            if failure.type_names & names:
                return failure
        return None

    def stack_trace(self) -> str:
        """A Java-like stack trace: ``Type: message``, ``\\tat`` lines, ``Caused by:`` blocks."""
        lines: list[str] = []
        for n, failure in enumerate(self.chain()):
            head = str(failure)
            lines.append(head if n == 0 else f"Caused by: {head}")
            lines.extend(f"\tat {frame}" for frame in failure.python_frames)
            lines.extend(f"\tat {frame}" for frame in failure.frames)
        return "\n".join(lines)


def _python_frames(tb: TracebackType | None) -> tuple[str, ...]:
    # Java prints the innermost frame first; a Python traceback lists it last.
    frames: list[str] = []
    while tb is not None:
        frame = tb.tb_frame
        module = frame.f_globals.get("__name__", "?")
        code = frame.f_code
        filename = code.co_filename.replace("\\", "/").rsplit("/", 1)[-1]
        frames.append(f"{module}.{code.co_qualname}({filename}:{tb.tb_lineno})")
        tb = tb.tb_next
    # The first frames are the engine's own call into the bean; keep the bean's frames only.
    while frames and frames[0].startswith("moat_nb.sandbox.camel."):
        frames.pop(0)
    return tuple(reversed(frames))


def failure_from_python(exc: BaseException) -> ExchangeFailure:
    """An :class:`ExchangeFailure` for a Python exception raised by a bean or a simulator."""
    if isinstance(exc, ExchangeFailure):
        return exc
    if isinstance(exc, RecursionError):
        # A route that calls itself through direct: for ever: what the JVM would throw.
        return ExchangeFailure("java.lang.StackOverflowError", str(exc))
    cls = type(exc)
    declared = getattr(exc, "camel_type", None)
    error_type = declared if isinstance(declared, str) and declared else python_type_name(cls)
    names: set[str] = set(_UNCHECKED)
    for klass in cls.__mro__:
        if klass in (BaseException, Exception, object):
            continue
        names.add(python_type_name(klass))
        names.add(klass.__qualname__)
        own = klass.__dict__.get("camel_type")
        if isinstance(own, str) and own:
            names |= java_type_names(own)
    names.add(error_type)
    message = str(exc) if str(exc) else cls.__name__
    cause = None
    inner = exc.__cause__
    if inner is not None and isinstance(inner, Exception):
        cause = failure_from_python(inner)
    return ExchangeFailure(
        error_type,
        message,
        cause=cause,
        type_names=frozenset(names),
        python_frames=_python_frames(exc.__traceback__),
    )
