"""One parser per Camel EIP: a YAML step (``- setHeader: {...}``) to a processor.

Each ``parse_<eip>(builder, name, value, route_id)`` reads the step's options (long and short
forms, as Camel's YAML DSL documents them), claims the processor's id *before* parsing nested
steps (Camel numbers depth first), and returns the processor — or ``None`` for a
``disabled: true`` step. Malformed or unsupported options raise
:class:`~moat_nb.errors.RouteLoadError` with the line (see :mod:`.dsl`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .bean import BEAN_PARAMETERS, Bean, Process, bean_binding, bean_methods, bean_target, builtin_kind
from .conversion import SUPPORTED_TYPES, canonical_type, charset_codec
from .dsl import (
    COMMON_KEYS,
    DATA_FORMAT_OPTIONS,
    EXPRESSION_KEYS,
    KNOWN_DATA_FORMATS,
    YamlMap,
    form_hint,
    is_null,
    load_error,
    with_parameters,
)
from .endpoints import To, ToD, uri_scheme
from .failure import is_known_exception_name
from .iteration import BUILTIN_AGGREGATIONS, Aggregation, Loop, Split, aggregation_for
from .language import SimpleLanguageExpression
from .processors import (
    Choice,
    ConvertBodyTo,
    Delay,
    Filter,
    Log,
    Marshal,
    Otherwise,
    Processor,
    RemoveHeader,
    RemoveHeaders,
    RemoveProperties,
    RemoveProperty,
    SetBody,
    SetHeader,
    SetProperty,
    Stop,
    Transform,
    Unmarshal,
    When,
    name_matcher,
)
from .try_catch import DoCatch, DoFinally, DoTry, ThrowException

if TYPE_CHECKING:
    from .loader import Builder

__all__ = ["STEP_PARSERS", "SUPPORTED_STEPS"]

StepParser = Callable[["Builder", str, Node, str], Processor | None]


def parse_to(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    m = b.step_map(name, value, scalar_key="uri")
    m.check(
        COMMON_KEYS
        | {
            "uri",
            "parameters",
            "pattern",
            "exchangePattern",
            "cacheSize",
            "allowOptimisedComponents",
            "autoStartComponents",
            "ignoreInvalidEndpoint",
            "variableSend",
            "variableReceive",
        }
    )
    for unsupported in ("variableSend", "variableReceive"):
        if unsupported in m.entries:
            raise load_error(
                b.file,
                m.get(unsupported),
                f"{unsupported} is not supported",
                name,
                "send and receive the body",
            )
    common = b.common(m, name, route_id)
    uri = with_parameters(m.text("uri", required=True) or "", m, b.file).strip()
    scheme = uri_scheme(uri)
    if not scheme:
        raise load_error(b.file, m.node, f"endpoint uri {uri!r} has no scheme", name, form_hint(name))
    pattern = m.text("pattern") or m.text("exchangePattern")
    if pattern is not None and pattern not in ("InOnly", "InOut"):
        raise load_error(
            b.file,
            m.node,
            f"exchange pattern {pattern!r} is not InOnly or InOut",
            name,
            "write pattern: InOut for a request-reply endpoint",
        )
    if common is None:
        return None
    request_reply = pattern == "InOut"
    if name == "to":
        node = To(**common, uri=uri, request_reply=request_reply)
        if scheme == "direct":
            b.direct_calls.append((node, b.file, m.line))
        return node
    template = SimpleLanguageExpression(uri, file=b.file, line=m.line_of("uri"))
    return ToD(**common, uri=uri, expression=template, request_reply=request_reply)


def parse_set_body(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    m = b.step_map(name, value)
    m.check(COMMON_KEYS | EXPRESSION_KEYS)
    common = b.common(m, name, route_id)
    expression = b.expression(m, predicate=False)
    if common is None:
        return None
    cls = SetBody if name == "setBody" else Transform
    return cls(**common, expression=expression)


def parse_set_header(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    legacy = "headerName" if name == "setHeader" else "propertyName"
    m = b.step_map(name, value)
    m.check(COMMON_KEYS | EXPRESSION_KEYS | {"name", legacy})
    common = b.common(m, name, route_id)
    target = m.text("name") or m.text(legacy)
    if not target:
        raise load_error(b.file, m.node, f"{name} needs 'name'", name, form_hint(name))
    expression = b.expression(m, predicate=False)
    # SetHeaderReifier/SetPropertyReifier: a name with a Simple function is a Simple expression.
    name_expression = None
    if "${" in target or "$simple{" in target:
        key = "name" if "name" in m.entries else legacy
        name_expression = SimpleLanguageExpression(target, file=b.file, line=m.line_of(key))
    if common is None:
        return None
    cls = SetHeader if name == "setHeader" else SetProperty
    return cls(**common, name=target, expression=expression, name_expression=name_expression)


def parse_remove_one(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    legacy = "headerName" if name == "removeHeader" else "propertyName"
    m = b.step_map(name, value, scalar_key="name")
    m.check(COMMON_KEYS | {"name", legacy})
    common = b.common(m, name, route_id)
    target = m.text("name") or m.text(legacy)
    if not target:
        raise load_error(b.file, m.node, f"{name} needs 'name'", name, f"write - {name}: {{name: myName}}")
    if common is None:
        return None
    cls = RemoveHeader if name == "removeHeader" else RemoveProperty
    return cls(**common, name=target)


def parse_remove_many(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    m = b.step_map(name, value, scalar_key="pattern")
    m.check(COMMON_KEYS | {"pattern", "excludePattern"})
    common = b.common(m, name, route_id)
    pattern = m.text("pattern", required=True) or ""
    exclude = m.text("excludePattern")
    for key, text in (("pattern", pattern), ("excludePattern", exclude)):
        try:
            name_matcher(text or "")
        except ValueError as err:
            raise load_error(
                b.file,
                m.get(key),
                f"{key} {text!r}: {err}",
                name,
                "names match exactly, by a prefix ending in *, or by a Java regex (case-insensitive)",
            ) from None
    if common is None:
        return None
    cls = RemoveHeaders if name == "removeHeaders" else RemoveProperties
    return cls(**common, pattern=pattern, exclude=exclude)


def parse_log(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    m = b.step_map(name, value, scalar_key="message")
    m.check(COMMON_KEYS | {"message", "loggingLevel", "logName", "marker", "logger", "logLanguage"})
    common = b.common(m, name, route_id)
    text = m.text("message", required=True) or ""
    level = (m.text("loggingLevel") or "INFO").upper()
    if level not in ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "OFF"):
        raise load_error(
            b.file,
            m.get("loggingLevel"),
            f"logging level {level!r} is unknown",
            name,
            "use TRACE, DEBUG, INFO, WARN, ERROR or OFF",
        )
    message = SimpleLanguageExpression(text, file=b.file, line=m.line_of("message"))
    if common is None:
        return None
    return Log(**common, message=message, level=level, log_name=m.text("logName"))


def parse_choice(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    m = b.step_map(name, value)
    m.check(COMMON_KEYS | {"when", "otherwise", "precondition"})
    common = b.common(m, name, route_id)
    when_node = m.get("when")
    if is_null(when_node) or not isinstance(when_node, SequenceNode) or not when_node.value:
        raise load_error(
            b.file,
            when_node or m.node,
            "choice needs a list of when: branches",
            name,
            form_hint(name),
        )
    # ChoiceReifier.createProcessor casts each when's processor to FilterProcessor; a disabled
    # when is built by DisabledReifier as a DisabledProcessor, so the route fails to start
    # (ClassCastException). A precondition choice never builds its whens that way (it only
    # evaluates their predicates), so there the flag is not read at all.
    precondition = m.flag("precondition")
    whens = []
    for item in when_node.value:
        wm = YamlMap(item, "when", b.file)
        wm.check(COMMON_KEYS | EXPRESSION_KEYS | {"steps"})
        if wm.flag("disabled") and not precondition:
            raise load_error(
                b.file,
                wm.get("disabled"),
                "a when clause cannot be disabled: Camel fails to start the route "
                "(its DisabledProcessor is not a FilterProcessor)",
                "when",
                "remove the when clause, or disable the whole choice",
            )
        wcommon = b.common(wm, "when", route_id, honour_disabled=False)
        predicate = b.expression(wm, predicate=True)
        steps = b.steps(wm.get("steps"), route_id)
        if wcommon is not None:
            whens.append(When(**wcommon, predicate=predicate, steps=steps))
    otherwise = None
    other_node = m.get("otherwise")
    if not is_null(other_node):
        assert other_node is not None
        if isinstance(other_node, SequenceNode):  # otherwise: [steps] (shorthand)
            ocommon = b.common(
                YamlMap(
                    MappingNode("tag:yaml.org,2002:map", [], other_node.start_mark, other_node.end_mark),
                    "otherwise",
                    b.file,
                ),
                "otherwise",
                route_id,
            )
            steps = b.steps(other_node, route_id)
        else:
            om = YamlMap(other_node, "otherwise", b.file)
            om.check(COMMON_KEYS | {"steps"})
            # ChoiceReifier builds the otherwise's outputs directly (createOutputsProcessor),
            # never through its own reifier: its disabled flag is not read and it still runs.
            ocommon = b.common(om, "otherwise", route_id, honour_disabled=False)
            steps = b.steps(om.get("steps"), route_id)
        if ocommon is not None:
            otherwise = Otherwise(**ocommon, steps=steps)
    if common is None:
        return None
    return Choice(**common, whens=whens, otherwise=otherwise)


def parse_filter(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    m = b.step_map(name, value)
    m.check(COMMON_KEYS | EXPRESSION_KEYS | {"steps", "statusPropertyName"})
    common = b.common(m, name, route_id)
    predicate = b.expression(m, predicate=True)
    status_property = m.text("statusPropertyName")
    steps = b.steps(m.get("steps"), route_id)
    if common is None:
        return None
    return Filter(**common, predicate=predicate, status_property=status_property or None, steps=steps)


def parse_split(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    m = b.step_map(name, value)
    ignored = {
        "parallelProcessing",
        "streaming",
        "timeout",
        "parallelAggregate",
        "synchronous",
        "executorService",
        "onPrepare",
    }
    m.check(
        COMMON_KEYS
        | EXPRESSION_KEYS
        | ignored
        | {
            "steps",
            "aggregationStrategy",
            "aggregationStrategyRef",
            "stopOnException",
            "shareUnitOfWork",
            "delimiter",
            "aggregationStrategyMethodName",
            "aggregationStrategyMethodAllowNull",
        }
    )
    if "aggregationStrategyMethodName" in m.entries:
        raise load_error(
            b.file,
            m.get("aggregationStrategyMethodName"),
            "aggregationStrategyMethodName is not supported",
            name,
            "register a callable (old_body, new_body) -> body as the aggregationStrategy bean instead",
        )
    common = b.common(m, name, route_id)
    expression = b.expression(m, predicate=False)
    aggregation = None
    strategy = m.text("aggregationStrategy") or m.text("aggregationStrategyRef")
    if strategy:
        aggregation = _aggregation(b, strategy.strip(), m)
        aggregation.allow_null = m.flag("aggregationStrategyMethodAllowNull")
    delimiter = m.text("delimiter")
    steps = b.steps(m.get("steps"), route_id)
    if delimiter == "":
        raise load_error(
            b.file,
            m.get("delimiter"),
            "split delimiter is empty",
            name,
            "write delimiter: ';' or delimiter: false",
        )
    if common is None:
        return None
    return Split(
        **common,
        expression=expression,
        aggregation=aggregation,
        stop_on_exception=m.flag("stopOnException"),
        share_unit_of_work=m.flag("shareUnitOfWork"),
        # Splitter.IGNORE_DELIMITER_MARKER: "false" (any case) turns text splitting off.
        delimiter=None if delimiter is not None and delimiter.lower() == "false" else (delimiter or ","),
        steps=steps,
    )


def _aggregation(b: Builder, ref: str, m: YamlMap) -> Aggregation:
    for prefix in ("#bean:", "#class:", "#type:", "#"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
            break
    if ref in BUILTIN_AGGREGATIONS:
        return aggregation_for(ref, None)
    if b.beans is None:
        return Aggregation(ref, "lookup")
    bean = b.beans.get(ref)
    if bean is None:
        raise load_error(
            b.file,
            m.get("aggregationStrategy") or m.get("aggregationStrategyRef"),
            f"aggregationStrategy {ref!r} is not a registered bean",
            "split",
            "registered beans: "
            + (", ".join(sorted(b.beans)) or "(none)")
            + "; built in: "
            + ", ".join(k for k in BUILTIN_AGGREGATIONS if "." not in k),
        )
    builtin = builtin_kind(bean)
    if builtin is not None:  # len(None, body) or dict(None, body): see bean.builtin_kind
        raise load_error(
            b.file,
            m.get("aggregationStrategy") or m.get("aggregationStrategyRef"),
            f"aggregationStrategy {ref!r} is Python's built-in {builtin}, not a strategy",
            "split",
            f"in beans.py, BEANS = {{{ref!r}: merge}} with def merge(old_body, new_body): ... "
            "(called from the second item on, or with old_body=None first with "
            "aggregationStrategyMethodAllowNull: true)",
        )
    agg = aggregation_for(ref, bean)
    if agg.kind == "body" and not callable(bean):
        raise load_error(
            b.file,
            m.get("aggregationStrategy"),
            f"aggregationStrategy bean {ref!r} is not callable",
            "split",
            "register a callable (old_body, new_body) -> body, or an object with "
            "aggregate(old_exchange, new_exchange)",
        )
    return agg


def parse_loop(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    m = b.step_map(name, value)
    m.check(COMMON_KEYS | EXPRESSION_KEYS | {"steps", "copy", "doWhile", "breakOnShutdown", "onPrepare"})
    common = b.common(m, name, route_id)
    do_while = m.flag("doWhile")
    expression = b.expression(m, predicate=do_while)
    steps = b.steps(m.get("steps"), route_id)
    if common is None:
        return None
    return Loop(**common, expression=expression, do_while=do_while, copy=m.flag("copy"), steps=steps)


def parse_data_format(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    m = b.step_map(name, value)
    formats = [k for k in m.entries if k not in COMMON_KEYS]
    if len(formats) != 1:
        raise load_error(
            b.file,
            m.node,
            f"{name} needs exactly one data format",
            name,
            f"write - {name}: {{json: {{}}}}",
        )
    fmt = formats[0]
    if fmt != "json":
        what = "is not supported by the sandbox engine" if fmt in KNOWN_DATA_FORMATS else ("is unknown")
        raise load_error(
            b.file,
            m.entries[fmt][0],
            f"data format {fmt!r} {what}",
            name,
            "supported: json (write json: {})",
        )
    common = b.common(m, name, route_id)
    options = b.step_map("json", m.get("json"))  # type: ignore[arg-type]
    options.check(DATA_FORMAT_OPTIONS)
    library = options.text("library")
    if library is not None and library not in (
        "Jackson",
        "Gson",
        "Jsonb",
        "Fastjson",
        "JohnzonJson",
        "XStream",
    ):
        raise load_error(
            b.file,
            options.get("library"),
            f"json library {library!r} is unknown",
            "json",
            "use Jackson (the default), Gson, Jsonb or Fastjson",
        )
    if common is None:
        return None
    if name == "marshal":
        return Marshal(
            **common,
            pretty=options.flag("prettyPrint"),
            content_type_header=options.flag("contentTypeHeader", True),
        )
    return Unmarshal(**common)


def parse_convert_body_to(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    m = b.step_map(name, value, scalar_key="type")
    m.check(COMMON_KEYS | {"type", "mandatory", "charset"})
    common = b.common(m, name, route_id)
    type_name = m.text("type", required=True) or ""
    canonical = canonical_type(type_name)
    if canonical is None:
        raise load_error(
            b.file,
            m.get("type"),
            f"convertBodyTo type {type_name!r} is not supported",
            name,
            "use one of " + ", ".join(SUPPORTED_TYPES),
        )
    # ConvertBodyReifier.validateCharset: an unsupported charset fails the route's build
    # (UnsupportedCharsetException), so it fails here at load time.
    charset_name = m.text("charset")
    charset = None
    if charset_name is not None:
        charset = charset_codec(charset_name)
        if charset is None:
            raise load_error(
                b.file,
                m.get("charset"),
                f"convertBodyTo charset {charset_name!r} is not a supported charset",
                name,
                "use a Java charset name, e.g. UTF-8, ISO-8859-1, US-ASCII or UTF-16",
            )
    if common is None:
        return None
    return ConvertBodyTo(**common, type_name=canonical, mandatory=m.flag("mandatory", True), charset=charset)


def parse_throw_exception(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    m = b.step_map(name, value)
    m.check(COMMON_KEYS | {"exceptionType", "message", "ref"})
    if "ref" in m.entries:
        raise load_error(b.file, m.get("ref"), "throwException ref is not supported", name, form_hint(name))
    common = b.common(m, name, route_id)
    exception_type = (m.text("exceptionType", required=True) or "").strip()
    if not is_known_exception_name(exception_type):
        raise load_error(
            b.file,
            m.get("exceptionType"),
            f"exceptionType {exception_type!r} is not a class name",
            name,
            "use a fully qualified name, e.g. java.lang.IllegalArgumentException",
        )
    text = m.text("message")
    # Camel builds the message with Simple whenever one is given, even ``""``.
    message = (
        SimpleLanguageExpression(text, file=b.file, line=m.line_of("message")) if text is not None else None
    )
    if common is None:
        return None
    return ThrowException(**common, exception_type=exception_type, message=message)


def parse_do_try(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    m = b.step_map(name, value)
    m.check(COMMON_KEYS | {"steps", "doCatch", "doFinally"})
    common = b.common(m, name, route_id)
    steps = b.steps(m.get("steps"), route_id)
    catches: list[DoCatch] = []
    catch_node = m.get("doCatch")
    if not is_null(catch_node):
        assert catch_node is not None
        items = catch_node.value if isinstance(catch_node, SequenceNode) else [catch_node]
        for item in items:
            clause = _do_catch(b, item, route_id)
            if clause is not None:
                catches.append(clause)
    finally_ = None
    finally_node = m.get("doFinally")
    if not is_null(finally_node):
        assert finally_node is not None
        fm = YamlMap(finally_node, "doFinally", b.file)
        fm.check(COMMON_KEYS | {"steps"})
        fcommon = b.common(fm, "doFinally", route_id)
        fsteps = b.steps(fm.get("steps"), route_id)
        if fcommon is not None:
            finally_ = DoFinally(**fcommon, steps=fsteps)
    # A disabled doCatch/doFinally is built as a DisabledProcessor (it does nothing: the
    # exception is not caught, the finally steps do not run), but it is still a clause of the
    # doTry (TryReifier), so a doTry with only disabled clauses is valid.
    has_catch = not is_null(catch_node) and not (
        isinstance(catch_node, SequenceNode) and not catch_node.value
    )
    if not has_catch and is_null(finally_node) and common is not None:
        raise load_error(b.file, m.node, "doTry needs a doCatch or a doFinally", name, form_hint(name))
    if common is None:
        return None
    node = DoTry(**common, steps=steps, catches=catches, finally_=finally_)
    _mark_in_try(node)
    return node


def _mark_in_try(node: Processor) -> None:
    """Flag the doTry and every processor in it (its steps, doCatch and doFinally, at any
    depth, not the sub-routes it calls): ProcessorReifier wraps a TryDefinition, a
    CatchDefinition, a FinallyDefinition and anything whose parent is one in no error handler
    (see :mod:`.error_handler`, ``Run.execute``). A split's items look at the exchange's
    ``TryRouteBlock`` instead, as Camel's MulticastProcessor does at run time (Split.process)."""
    stack = [node]
    while stack:
        child = stack.pop()
        child.in_try = True
        stack.extend(child.children())


def _do_catch(b: Builder, node: Node, route_id: str) -> DoCatch | None:
    cm = YamlMap(node, "doCatch", b.file)
    cm.check(COMMON_KEYS | {"exception", "onWhen", "steps"})
    common = b.common(cm, "doCatch", route_id)
    names: list[str] = []
    exc_node = cm.get("exception")
    if not is_null(exc_node):
        assert exc_node is not None
        items = exc_node.value if isinstance(exc_node, SequenceNode) else [exc_node]
        for item in items:
            if not isinstance(item, ScalarNode) or is_null(item):
                raise load_error(
                    b.file,
                    item,
                    "exception names must be class names",
                    "doCatch",
                    "write exception: [java.io.IOException]",
                )
            text = str(item.value).strip()
            if not is_known_exception_name(text):
                raise load_error(
                    b.file,
                    item,
                    f"exception {text!r} is not a class name",
                    "doCatch",
                    "use fully qualified names, e.g. "
                    "java.lang.IllegalArgumentException or com.acme.MyException",
                )
            names.append(text)
    if not names:
        names = ["java.lang.Exception"]  # Camel: a doCatch without classes catches Exception
    on_when = None
    when_node = cm.get("onWhen")
    if not is_null(when_node):
        assert when_node is not None
        wm = YamlMap(when_node, "onWhen", b.file)
        wm.check({"id", "description"} | EXPRESSION_KEYS)
        on_when = b.expression(wm, predicate=True)
    steps = b.steps(cm.get("steps"), route_id)
    if common is None:
        return None
    return DoCatch(**common, exceptions=frozenset(names), on_when=on_when, steps=steps)


def parse_delay(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    if isinstance(value, ScalarNode) and not is_null(value):
        m = b.step_map(name, value, scalar_key="constant")
    else:
        m = b.step_map(name, value)
    m.check(COMMON_KEYS | EXPRESSION_KEYS | {"asyncDelayed", "callerRunsWhenRejected", "executorService"})
    common = b.common(m, name, route_id)
    expression = b.expression(m, predicate=False)
    if common is None:
        return None
    return Delay(**common, expression=expression)


def parse_bean(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    m = b.step_map(name, value)
    allowed = COMMON_KEYS | {"ref", "method", "beanType", "scope"}
    if name == "process":
        allowed = COMMON_KEYS | {"ref"}
    m.check(allowed)
    if "beanType" in m.entries:
        raise load_error(
            b.file,
            m.get("beanType"),
            "bean beanType is not supported",
            name,
            "register the callable with the app's beans and write ref: name",
        )
    common = b.common(m, name, route_id)
    ref = (m.text("ref", required=True) or "").strip().removeprefix("#bean:").removeprefix("#")
    method = m.text("method")
    if method is not None and "(" in method:
        raise load_error(
            b.file,
            m.get("method"),
            f"method {method!r}: parameter binding in the method name is not supported",
            name,
            "name the Python parameters " + ", ".join(BEAN_PARAMETERS) + " (or take the Exchange)",
        )
    target, binding = None, None
    if b.beans is not None:
        bean = b.beans.get(ref)
        if bean is None:
            raise load_error(
                b.file,
                m.get("ref"),
                f"no bean {ref!r} is registered",
                name,
                "registered beans: " + (", ".join(sorted(b.beans)) or "(none)"),
            )
        found_target = bean_target(bean, method, name)
        if isinstance(found_target, str):
            raise load_error(
                b.file,
                m.get("method") or m.get("ref"),
                f"bean {ref!r} {found_target}",
                name,
                (
                    f"in beans.py, BEANS = {{{ref!r}: handle}} with def handle(body): ... (its "
                    "return value is the new body)"
                    if name == "bean"
                    else f"in beans.py, BEANS = {{{ref!r}: handle}} with def handle(exchange): ..."
                )
                if builtin_kind(bean) is not None
                or (method is not None and builtin_kind(getattr(bean, method, None)) is not None)
                else "its methods: " + (", ".join(bean_methods(bean)) or "(none)"),
            )
        target = found_target
        found = bean_binding(target)
        if isinstance(found, str):
            raise load_error(
                b.file,
                m.node,
                f"bean {ref!r}{'.' + method if method else ''}: {found}",
                name,
                "see moat_nb.sandbox.camel.processors.bean_binding",
            )
        binding = found
    if common is None:
        return None
    cls = Bean if name == "bean" else Process
    return cls(**common, ref=ref, method=method, target=target, binding=binding)


def parse_stop(b: Builder, name: str, value: Node, route_id: str) -> Processor | None:
    m = b.step_map(name, value)
    m.check(COMMON_KEYS)
    common = b.common(m, name, route_id)
    return Stop(**common) if common is not None else None


#: Step name -> parser. Several names share one parser (setBody/transform, to/toD, ...).
STEP_PARSERS: dict[str, StepParser] = {
    "to": parse_to,
    "toD": parse_to,
    "setBody": parse_set_body,
    "transform": parse_set_body,
    "setHeader": parse_set_header,
    "setProperty": parse_set_header,
    "removeHeader": parse_remove_one,
    "removeProperty": parse_remove_one,
    "removeHeaders": parse_remove_many,
    "removeProperties": parse_remove_many,
    "log": parse_log,
    "choice": parse_choice,
    "filter": parse_filter,
    "split": parse_split,
    "loop": parse_loop,
    "marshal": parse_data_format,
    "unmarshal": parse_data_format,
    "convertBodyTo": parse_convert_body_to,
    "throwException": parse_throw_exception,
    "doTry": parse_do_try,
    "delay": parse_delay,
    "bean": parse_bean,
    "process": parse_bean,
    "stop": parse_stop,
}

#: The steps (Camel EIP names) the engine supports.
SUPPORTED_STEPS: frozenset[str] = frozenset(STEP_PARSERS)
