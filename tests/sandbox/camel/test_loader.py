"""Loading Camel YAML DSL: forms, processor ids, and load-time errors with file, line, construct."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from moat_nb.errors import RouteLoadError, SimpleSyntaxError
from moat_nb.model import Payload
from moat_nb.sandbox.camel import RouteSet, RunContext
from moat_nb.sandbox.camel.loader import SUPPORTED_STEPS

ROUTES = Path(__file__).parent / "routes"
SHOP = ROUTES / "shop"


def ids(routes: RouteSet, route_id: str) -> list[str]:
    return [p.processor_id for p in routes.processors(route_id)]


def load_error(text: str, beans: dict[str, Any] | None = None) -> RouteLoadError:
    with pytest.raises(RouteLoadError) as err:
        RouteSet.loads(text, beans, file="bad.yaml")
    assert err.value.file == "bad.yaml"
    return err.value


# --------------------------------------------------------------------------- forms


def test_short_and_long_forms_give_the_same_routes() -> None:
    short = """
- from:
    uri: direct:a
    steps:
      - to: "mock:x"
      - setBody: {simple: "${body}!"}
      - log: "hi"
      - removeHeader: h
      - convertBodyTo: String
"""
    long = """
- route:
    id: route1
    from:
      uri: direct:a
      steps:
        - to: {uri: "mock:x"}
        - setBody: {expression: {simple: {expression: "${body}!"}}}
        - log: {message: "hi"}
        - removeHeader: {name: h}
        - convertBodyTo: {type: java.lang.String}
"""
    a, b = RouteSet.loads(short), RouteSet.loads(long)
    assert a.route_ids == b.route_ids == ["route1"]
    assert (
        ids(a, "route1") == ids(b, "route1") == ["to1", "setBody1", "log1", "removeHeader1", "convertBodyTo1"]
    )
    payload = Payload(headers={"h": "v"}, body="x")
    ra = a.run("route1", payload, context=RunContext(rng=random.Random(1)))
    rb = b.run("route1", payload, context=RunContext(rng=random.Random(1)))
    assert (ra.output_body, ra.output_headers) == (rb.output_body, rb.output_headers) == ("x!", {})


def test_every_route_option_camel_reads_is_accepted() -> None:
    # camel-yaml-dsl's RouteDefinitionDeserializer reads these keys of - route:; shutdownRoute
    # and shutdownRunningTask were refused as unknown options of a valid Camel 4 route.
    text = """
- route:
    id: r
    description: d
    group: g
    autoStartup: true
    startupOrder: 10
    shutdownRoute: Defer
    shutdown-running-task: CompleteAllTasks
    from:
      uri: direct:a
      steps:
        - log: "hi"
"""
    assert RouteSet.loads(text).route_ids == ["r"]


def test_a_property_placeholder_with_a_default_takes_it() -> None:
    # PropertiesComponent: {{key:default}} is the default when no property has the key.
    text = """
- from:
    uri: direct:a
    steps:
      - setBody: {simple: "{{greeting:hello}} ${body}"}
      - to: "kafka:{{topic:orders}}?brokers={{brokers:localhost:9092}}"
"""
    ex = RouteSet.loads(text).run("route1", Payload(body="ann"), context=RunContext(rng=random.Random(1)))
    assert ex.output_body == "hello ann"
    assert ex.processors[1].endpoint_uri == "kafka:orders?brokers=localhost:9092"


def test_folder_loads_sorted_files_as_one_set_with_kebab_case_keys() -> None:
    routes = RouteSet.load(SHOP)
    assert [p.name for p in routes.files] == ["10-intake.yaml", "20-billing.yaml"]
    assert routes.route_ids == ["intake", "route1"]
    # Per-type counters run across files in load order, depth first (Camel's DefaultNodeIdFactory).
    assert ids(routes, "intake") == [
        "unmarshal1",
        "setHeader1",
        "to1",
        "choice1",
        "when1",
        "setHeader2",
        "otherwise1",
        "log1",
        "marshal1",
        "publish",
    ]
    assert ids(routes, "route1") == ["setHeader3", "setHeader4", "convertBodyTo1"]
    for qty, review in ((12, None), (150, "true")):
        body = f'{{"id": "o-1", "qty": {qty}}}'
        ex = routes.run("intake", Payload(body=body), context=RunContext(rng=random.Random(1)))
        assert ex.status == "COMPLETED", ex.error_message
        assert ex.output_headers["total"] == qty  # jsonpath with resultType Integer
        assert ex.output_headers.get("review") == review
        assert ex.output_headers["orderId"] == "o-1"
        assert [p.processor_id for p in ex.processors if p.route_id == "route1"] == [
            "setHeader3",
            "setHeader4",
            "convertBodyTo1",
        ]


def test_ids_are_stable_across_loads_and_follow_the_load_order() -> None:
    first = [ids(RouteSet.load(SHOP), r) for r in ("intake", "route1")]
    again = [ids(RouteSet.load(SHOP), r) for r in ("intake", "route1")]
    assert first == again
    reverse = RouteSet.load([SHOP / "20-billing.yaml", SHOP / "10-intake.yaml"])
    assert reverse.route_ids == ["route1", "intake"]
    assert ids(reverse, "route1") == ["setHeader1", "setHeader2", "convertBodyTo1"]
    assert ids(reverse, "intake")[1] == "setHeader3"


def test_explicit_ids_are_kept_and_do_not_use_up_counters() -> None:
    routes = RouteSet.loads("""
- from:
    uri: direct:a
    steps:
      - setBody: {id: first, constant: a}
      - setBody: {constant: b}
      - doTry:
          steps:
            - setBody: {constant: c}
          doCatch:
            - exception: [java.lang.Exception]
              id: catcher
              steps: []
          doFinally:
            steps: []
""")
    assert ids(routes, "route1") == ["first", "setBody1", "doTry1", "setBody2", "catcher", "doFinally1"]


def test_disabled_steps_are_dropped() -> None:
    routes = RouteSet.loads(
        "- from:\n    uri: direct:a\n    steps:\n      - setBody: {constant: a, disabled: true}\n"
        "      - setBody: {constant: b}\n"
    )
    # ProcessorReifier.createProcessor assigns the disabled step's id (setBody1) before the
    # DisabledReifier builds it; its nested steps are never built and take no ids.
    assert ids(routes, "route1") == ["setBody2"]
    routes = RouteSet.loads(
        "- from:\n    uri: direct:a\n    steps:\n"
        "      - filter: {disabled: true, simple: 'true', steps: [{setBody: {constant: a}}]}\n"
        "      - filter: {simple: 'true', steps: [{setBody: {constant: b}}]}\n"
    )
    assert ids(routes, "route1") == ["filter2", "setBody1"]


# --------------------------------------------------------------------------- load-time errors


@pytest.mark.parametrize(
    ("name", "line", "construct", "in_message", "in_hint"),
    [
        ("unknown-step.yaml", 8, "setHedaer", "unknown step 'setHedaer'", "did you mean 'setHeader'"),
        ("bad-simple.yaml", 7, "simple", "Simple expression", None),
        ("missing-direct.yaml", 7, "to", "no route consumes 'direct:nowhere'", "pass the folder"),
    ],
)
def test_bad_files_name_file_line_and_construct(
    name: str, line: int, construct: str, in_message: str, in_hint: str | None
) -> None:
    path = ROUTES / "bad" / name
    with pytest.raises(RouteLoadError) as err:
        RouteSet.load(path)
    e = err.value
    assert (e.file, e.line, e.construct) == (str(path), line, construct)
    assert in_message in e.message
    if in_hint:
        assert in_hint in (e.hint or "")
    assert str(e).startswith(f"{path}:{line}: ")
    assert e.details["line"] == line


def test_bad_simple_is_a_simple_syntax_error_with_position() -> None:
    with pytest.raises(SimpleSyntaxError) as err:
        RouteSet.load(ROUTES / "bad" / "bad-simple.yaml")
    assert err.value.expression == "${header.x} == 'a" and err.value.position >= 15
    assert err.value.line == 7 and err.value.file.endswith("bad-simple.yaml")


STEP = "- from:\n    uri: direct:a\n    steps:\n{}"


@pytest.mark.parametrize(
    ("steps", "line", "construct", "message", "hint"),
    [
        ("      - aggregate: {constant: x}\n", 4, "aggregate", "not supported", "supported steps: bean"),
        ("      - setHeader: {name: x, groovy: '1'}\n", 4, "groovy", "language 'groovy'", "jsonpath"),
        (
            "      - setHeader: {name: x, simple: '1', colour: red}\n",
            4,
            "setHeader",
            "unknown option 'colour'",
            "supported: ",
        ),
        ("      - setHeader: {simple: '1'}\n", 4, "setHeader", "needs 'name'", "name: myHeader"),
        ("      - setBody: {}\n", 4, "setBody", "needs an expression", "simple"),
        ("      - setBody: {jsonpath: '$.a[?('}\n", 4, "jsonpath", "does not parse", "$.lines"),
        ("      - marshal: {jacksonXml: {}}\n", 4, "marshal", "'jacksonXml' is not supported", "json"),
        ("      - convertBodyTo: java.util.Date\n", 4, "convertBodyTo", "not supported", "java.lang.Integer"),
        # ConvertBodyReifier.validateCharset: UnsupportedCharsetException when the route is built.
        (
            "      - convertBodyTo: {type: String, charset: UTF-9}\n",
            4,
            "convertBodyTo",
            "'UTF-9' is not a supported charset",
            "ISO-8859-1",
        ),
        ("      - convertBodyTo: {type: String, charset: base64}\n", 4, "convertBodyTo", "charset", None),
        (
            "      - doTry:\n          steps: []\n          doCatch:\n"
            "            - exception: [IllegalThing]\n              steps: []\n",
            7,
            "doCatch",
            "not a class name",
            "fully qualified",
        ),
        ("      - doTry: {steps: []}\n", 4, "doTry", "needs a doCatch or a doFinally", None),
        ("      - to: {uri: 'kafka:a', pattern: InAndOut}\n", 4, "to", "InAndOut", "InOut"),
        ("      - to: 'noscheme'\n", 4, "to", "has no scheme", None),
        ("      - setBody: {id: 'a b', constant: x}\n", 4, "setBody", "not a valid id", "letters"),
        (
            "      - setBody: {id: x, constant: 1}\n      - setBody: {id: x, constant: 2}\n",
            5,
            "setBody",
            "Duplicate id detected: x",
            "unique",
        ),
        ("      - choice: {otherwise: {steps: []}}\n", 4, "choice", "list of when", None),
        ("      - throwException: {message: boom}\n", 4, "throwException", "needs 'exceptionType'", None),
        (
            "      - split: {simple: '${body}', aggregationStrategyMethodName: merge}\n",
            4,
            "split",
            "not supported",
            "callable",
        ),
        (
            "      - loop: {constant: 2, steps: {setBody: {constant: x}}}\n",
            4,
            "steps",
            "must be a list",
            None,
        ),
        ("      - log: {message: 'x', loggingLevel: LOUD}\n", 4, "log", "LOUD", "WARN"),
        # Camel options the engine lacks are "not supported", not "unknown" with a wrong guess
        # (endToken was "did you mean 'includeTokens'?"; the YAML DSL page's own example).
        (
            "      - split: {tokenize: {token: '<', end-token: '>'}, steps: []}\n",
            4,
            "tokenize",
            "option 'endToken' of tokenize is not supported",
            "supported options: expression",
        ),
        (
            "      - setBody: {jsonpath: {expression: '$.a', headerName: order}}\n",
            4,
            "jsonpath",
            "option 'headerName' of jsonpath is not supported",
            "on the body",
        ),
        # The YAML DSL page's "Output Aware Steps" example indents the steps under the
        # expression; the error said "expression must name one language" (it names one).
        (
            "      - filter:\n          expression:\n            simple: '${body}'\n            steps: []\n",
            7,
            "filter",
            "'steps' is inside the expression of filter",
            "beside expression",
        ),
    ],
)
def test_malformed_constructs_fail_at_load_time(
    steps: str, line: int, construct: str, message: str, hint: str | None
) -> None:
    err = load_error(STEP.format(steps))
    assert (err.line, err.construct) == (line, construct), str(err)
    assert message in err.message
    if hint:
        assert hint in (err.hint or "")


@pytest.mark.parametrize(
    ("text", "line", "construct", "message"),
    [
        (
            "- from:\n    uri: direct:a\n    steps:\n      - setBody: {constant: 'x'\n",
            5,
            "yaml",
            "not valid YAML",
        ),
        ("route: {}\n", 1, "routes", "a route file is a list"),
        ("- onException:\n    steps: []\n", 1, "onException", "not supported"),
        # Loaded nothing, silently: "OK: 0 routes in 1 file: " from routes check.
        ("[]\n", None, "routes", "the file defines no routes"),
        ("# routes come later\n", None, "routes", "the file defines no routes"),
        ("- route:\n    id: r\n", 2, "route", "needs 'from'"),
        # Camel resolves {{...}} when the route starts and fails on a missing property; the
        # engine ran with 'kafka:{{topic}}' as the endpoint.
        (
            "- from:\n    uri: direct:a\n    steps:\n      - to: 'kafka:{{topic}}'\n",
            4,
            "to",
            "property placeholder {{topic}} cannot be resolved",
        ),
        (
            "- from:\n    uri: direct:a\n    steps:\n"
            "      - setHeader: {name: h, constant: '{{env:HOME}}'}\n",
            4,
            "constant",
            "property placeholder {{env:HOME}} cannot be resolved",
        ),
        # Was "unknown option 'steps' for route", with no word of where steps go.
        (
            "- route:\n    id: r\n    from:\n      uri: direct:a\n    steps:\n      - log: hi\n",
            5,
            "route",
            "steps go inside its from",
        ),
        (
            "- route: {id: r, from: {uri: direct:a}}\n- route: {id: r, from: {uri: direct:b}}\n",
            2,
            "route",
            "Duplicate route id",
        ),
        ("- from: {uri: direct:a}\n- from: {uri: direct:a}\n", 2, "from", "Multiple consumers"),
        ("- from: {uri: nothing}\n", 1, "from", "has no scheme"),
    ],
)
def test_malformed_files_fail_with_the_line(text: str, line: int, construct: str, message: str) -> None:
    err = load_error(text)
    assert (err.line, err.construct) == (line, construct), str(err)
    assert message in err.message


def test_beans_are_checked_at_load_time_when_a_registry_is_given() -> None:
    text = STEP.format("      - bean: {ref: pricing, method: total}\n")

    class Pricing:
        def total(self, exchange: Any) -> None: ...

        def other(self, body: Any, colour: str) -> None: ...

    RouteSet.loads(text)  # no registry: checked when the step runs
    RouteSet.loads(text, {"pricing": Pricing()})
    err = load_error(text, {"orders": object()})
    assert "no bean 'pricing'" in err.message and "orders" in (err.hint or "") and err.line == 4
    err = load_error(text.replace("total", "totl"), {"pricing": Pricing()})
    assert "no method 'totl'" in err.message and "total" in (err.hint or "")
    err = load_error(text.replace("total", "other"), {"pricing": Pricing()})
    assert "'colour' cannot be bound" in err.message
    err = load_error(
        STEP.format("      - split: {tokenize: ',', aggregationStrategy: merger, steps: []}\n"), {}
    )
    assert "aggregationStrategy 'merger'" in err.message and "GroupedBodyAggregationStrategy" in (
        err.hint or ""
    )


def test_a_self_referencing_alias_is_a_load_error() -> None:
    err = load_error(
        "- from:\n    uri: direct:a\n    steps: &s\n      - filter: {simple: 'true', steps: *s}\n"
    )
    assert err.construct == "steps" and "alias" in err.message


def test_missing_paths_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(RouteLoadError, match="does not exist"):
        RouteSet.load(tmp_path / "nope.yaml")
    with pytest.raises(RouteLoadError, match="holds no route files"):
        RouteSet.load(tmp_path)


# --------------------------------------------------------------------------- robustness

_NAMES = st.sampled_from(sorted(SUPPORTED_STEPS) + ["aggregate", "sethead", "when", "expression", "simple"])
_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text("${}[]'\" .abc:*=<>", max_size=12))
_VALUE = st.recursive(
    _LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "uri",
                    "name",
                    "simple",
                    "constant",
                    "steps",
                    "when",
                    "otherwise",
                    "expression",
                    "jsonpath",
                    "ref",
                    "exception",
                    "doCatch",
                    "pattern",
                    "type",
                ]
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=10,
)
_STEP = st.dictionaries(_NAMES, _VALUE, min_size=1, max_size=1)


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(_STEP, max_size=4))
def test_arbitrary_route_files_load_or_fail_with_a_route_load_error(steps: list[dict[str, Any]]) -> None:
    text = yaml.safe_dump([{"from": {"uri": "direct:a", "steps": steps}}])
    try:
        routes = RouteSet.loads(text, {}, file="fuzz.yaml")
    except RouteLoadError as err:
        assert err.file == "fuzz.yaml" and err.line is not None and err.construct
        return
    ex = routes.run("route1", Payload(body='{"a": 1}'), context=RunContext(rng=random.Random(0)))
    assert ex.status in ("COMPLETED", "FAILED")
