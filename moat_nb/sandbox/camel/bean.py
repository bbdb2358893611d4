"""``bean`` and ``process``: calling the app's Python code, as Camel calls a Java bean.

The calling convention (Camel binds a Java method's parameters by type and annotation; Python
has names) is :func:`bean_binding`'s: one parameter receives the :class:`~.exchange.Exchange`
unless it is named ``body``, ``headers`` or ``properties``; several parameters are bound by
those names (and ``exchange``). A non-``None`` return value becomes the body (``process``
ignores it, as a Camel ``Processor`` returns nothing); ``None`` leaves the body alone, as a
``void`` Java method does. An exception fails the exchange with the exception's
``camel_type`` (or its Python class name) as the error type (see :mod:`.failure`).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .exchange import Exchange
from .failure import ExchangeFailure, failure_from_python
from .processors import Processor

if TYPE_CHECKING:
    from .trace import Run

__all__ = [
    "BEAN_PARAMETERS",
    "Bean",
    "Process",
    "bean_binding",
    "bean_methods",
    "bean_target",
    "builtin_kind",
    "is_builtin_type",
]

BEAN_PARAMETERS: dict[str, Callable[[Exchange], Any]] = {
    "exchange": lambda ex: ex,
    "body": lambda ex: ex.body,
    "headers": lambda ex: ex.headers,
    "properties": lambda ex: ex.properties,
}


def bean_methods(bean: Any) -> list[str]:
    """The bean's public methods (names not starting with ``_``), sorted."""
    return sorted(a for a in dir(bean) if not a.startswith("_") and callable(getattr(bean, a, None)))


def bean_target(bean: Any, method: str | None, step: str = "bean") -> Callable[..., Any] | str:
    """What a ``bean``/``process`` step calls on ``bean``, or an error text.

    With ``method``, that method. Without one, as Camel's ``BeanInfo`` chooses: a callable (a
    function, an object with ``__call__``) is called; a ``process`` step calls a Processor's
    ``process``; an object with exactly one public method gets that method, as a Java bean with
    one method does. A class is a bean only for its static and class methods (as Camel calls a
    static method on a class): calling the class itself would make an instance the body, and an
    instance method would have no ``self`` (Camel instantiates a ``beanType``; this engine does not).
    """
    builtin = builtin_kind(bean)
    if builtin is not None:
        # dict, str, list ... registered by mistake (BEANS = {"config": dict}): an instance of
        # one is no bean either (the route would call dict.get(exchange)), so the advice to
        # register an instance, and a list of str's 47 methods, only misled. A built-in
        # function (len, print, str.upper) cannot follow bean_binding's convention at all.
        return f"is Python's built-in {builtin}, not a bean: " + (
            "register a function or an instance of your own class that has the method the step calls"
            if is_builtin_type(bean)
            else "register a function of your own that calls it"
        )
    if isinstance(bean, type) and not (
        method and isinstance(inspect.getattr_static(bean, method, None), staticmethod | classmethod)
    ):
        return (
            f"is the class {bean.__name__}, not an instance: register one, as in "
            f"BEANS = {{'name': {bean.__name__}()}}"
        )
    if method:
        fn = getattr(bean, method, None)
        if not callable(fn):
            return f"has no method {method!r}"
        builtin = builtin_kind(fn)
        if builtin is not None:  # {"cfg": {...}} with method: get is dict.get(exchange)
            return (
                f"method {method!r} is Python's built-in {builtin}, not a bean method: "
                "register a function of your own that calls it"
            )
        return fn  # type: ignore[no-any-return]
    if callable(bean):
        return bean
    if step == "process" and callable(getattr(bean, "process", None)):
        return bean.process  # type: ignore[no-any-return]
    methods = bean_methods(bean)
    if len(methods) == 1:
        return getattr(bean, methods[0])  # type: ignore[no-any-return]
    return "is not callable and has " + (
        "several methods: name one with method:" if methods else "no public method"
    )


def is_builtin_type(bean: Any) -> bool:
    """Whether ``bean`` is one of Python's own classes (``dict``, ``str``, ``list`` ...)."""
    return isinstance(bean, type) and bean.__module__ == "builtins"


#: What Python calls a built-in function or method: implemented in C, its parameters
#: positional-only (``len(obj, /)``, ``str.upper(self, /)``) or without a signature at all.
_BUILTIN_CALLABLES = (
    types.BuiltinFunctionType,  # len, print, time.time, "text".upper, dict.fromkeys
    types.MethodDescriptorType,  # str.upper, dict.get
    types.WrapperDescriptorType,  # str.__len__
    types.MethodWrapperType,  # "text".__len__
    types.ClassMethodDescriptorType,  # dict.__dict__["fromkeys"]
)


def builtin_kind(obj: Any) -> str | None:
    """``"type dict"``, ``"function len"``, ``"method str.upper"`` for Python's own classes and
    built-in functions and methods; ``None`` for anything else.

    None of them can be a bean: :func:`bean_binding` binds by parameter name, and a built-in's
    parameters cannot be named ``body``: one taking an argument gets the Exchange (``len``:
    "object of type 'Exchange' has no len()"), one without a signature too (``time.time``:
    "takes no arguments (1 given)"), ``print(*args)`` gets nothing and writes a blank line, and
    one that runs (a bound ``"x".upper``) ignores the message. As a split strategy they get
    ``(None, body)`` first. So they are refused when the routes load; a two-line function of
    one's own (``def size(body): return len(body)``) is the bean.
    """
    if is_builtin_type(obj):
        return f"type {obj.__name__}"
    if not isinstance(obj, _BUILTIN_CALLABLES):
        return None
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj))
    owner = getattr(obj, "__self__", None)
    if isinstance(obj, types.BuiltinFunctionType) and (owner is None or inspect.ismodule(owner)):
        module = getattr(obj, "__module__", None)
        return f"function {name}" if module in (None, "builtins") else f"function {module}.{name}"
    return f"method {name}"


def bean_binding(fn: Callable[..., Any]) -> tuple[str, ...] | str:
    """How to call a bean: a tuple of parameter names to bind, or an error text.

    The convention (Camel binds a Java bean method's parameters by type and annotation; Python
    has names): a callable with one parameter gets the :class:`Exchange` — unless that
    parameter is named ``body``, ``headers`` or ``properties``; a callable with several
    parameters gets each by its name, which must be one of :data:`BEAN_PARAMETERS` (parameters
    with defaults may have other names and keep their defaults).
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return ("exchange",)
    params = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    required = [p for p in params if p.default is p.empty]
    if len(params) == 1 and params[0].name not in BEAN_PARAMETERS:
        return (
            ("exchange",)
            if params[0].kind != params[0].KEYWORD_ONLY
            else (f"its parameter {params[0].name!r} is keyword-only")
        )
    names = []
    for p in params:
        if p.name in BEAN_PARAMETERS:
            names.append(p.name)
        elif p in required:
            return (
                f"its parameter {p.name!r} cannot be bound; name the parameters "
                + ", ".join(BEAN_PARAMETERS)
                + " (or declare a single parameter, which receives the Exchange)"
            )
    if any(p.kind == p.POSITIONAL_ONLY and p.name in names for p in params):
        return "positional-only parameters cannot be bound by name"
    return tuple(names)


class Bean(Processor):
    """``bean``: call a registered Python callable, as Camel calls a Java bean's method.

    A non-``None`` return value becomes the body; an exception fails the exchange with the
    exception's ``camel_type`` (or its Python class name) as the error type.
    """

    __slots__ = ("ref", "method", "target", "binding")
    processor_type = "bean"
    _sets_body: ClassVar[bool] = True

    def __init__(
        self,
        *args: Any,
        ref: str,
        method: str | None,
        target: Callable[..., Any] | None,
        binding: tuple[str, ...] | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.ref = ref
        self.method = method
        self.target = target
        self.binding = binding

    def _resolve(self, run: Run) -> tuple[Callable[..., Any], tuple[str, ...]]:
        # Beans given at load time were resolved then; without a registry (beans=None) the
        # lookup happens now and fails as Camel's does, with NoSuchBeanException.
        bean = run.lookup_bean(self.ref)
        if bean is None:
            raise ExchangeFailure(
                "org.apache.camel.NoSuchBeanException",
                f"No bean could be found in the registry for: {self.ref}",
            )
        fn = bean_target(bean, self.method, self.processor_type)
        if isinstance(fn, str):
            raise ExchangeFailure(
                "org.apache.camel.component.bean.MethodNotFoundException",
                f"Method with name: {self.method} not found on bean: {self.ref}"
                if fn.startswith("has no method")
                else f"bean {self.ref} {fn}",
            )
        binding = bean_binding(fn)
        if isinstance(binding, str):
            raise ExchangeFailure("java.lang.IllegalArgumentException", f"bean {self.ref}: {binding}")
        return fn, binding

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        fn, binding = (self.target, self.binding) if self.target is not None else self._resolve(run)
        assert binding is not None
        try:
            if binding == ("exchange",):
                result = fn(exchange)
            else:
                result = fn(**{name: BEAN_PARAMETERS[name](exchange) for name in binding})
        except ExchangeFailure:
            raise
        except Exception as err:
            raise failure_from_python(err) from err
        finally:
            run.forget()
        if result is not None and self._sets_body:
            exchange.body = result
        return None


class Process(Bean):
    """``process: {ref}``: a Camel ``Processor`` — called with the exchange, result ignored."""

    __slots__ = ()
    processor_type = "process"
    _sets_body = False
