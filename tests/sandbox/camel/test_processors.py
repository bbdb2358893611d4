"""Each processor (Camel EIP) of the sandbox engine against what Camel documents for it."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from moat_nb.errors import RouteLoadError
from moat_nb.model import Execution, Payload
from moat_nb.sandbox.camel import Exchange, FixedClock, RouteSet, RunContext
from moat_nb.sandbox.camel.loader import load_texts

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def ctx(**kw: Any) -> RunContext:
    return RunContext(now=FixedClock(T0), rng=random.Random(7), **kw)


def run(
    yaml_text: str,
    body: str | None = None,
    *,
    route: str = "r",
    headers: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    beans: dict[str, Any] | None = None,
    context: RunContext | None = None,
    **kw: Any,
) -> Execution:
    routes = RouteSet.loads(yaml_text, beans, file="t.yaml", **kw)
    payload = Payload(headers=headers or {}, body=body, properties=properties or {})
    return routes.run(route, payload, context=context or ctx())


def route(*steps: str) -> str:
    """A route ``r`` from direct:r with the given steps (YAML flow or block text, one per step)."""
    body = "\n".join("      - " + s.replace("\n", "\n        ") for s in steps)
    return f"- route:\n    id: r\n    from:\n      uri: direct:r\n      steps:\n{body}\n"


def ok(ex: Execution) -> Execution:
    assert ex.status == "COMPLETED", (ex.error_type, ex.error_message, ex.error_stack_trace)
    return ex


def rec(ex: Execution, processor_id: str) -> list[Any]:
    return [p for p in ex.processors or () if p.processor_id == processor_id]


# --------------------------------------------------------------------------- message setters


def test_set_body_constant_simple_jsonpath_and_long_forms() -> None:
    ex = ok(run(route('setBody: {constant: "hello"}'), "x"))
    assert ex.output_body == "hello"
    ex = ok(run(route('setBody: {simple: "${body}-${header.a}"}'), "x", headers={"a": "1"}))
    assert ex.output_body == "x-1"
    long_form = 'setBody:\n  expression:\n    simple:\n      expression: "${body}!"'
    assert ok(run(route(long_form), "x")).output_body == "x!"
    assert ok(run(route('setBody: {simple: {expression: "${body}?"}}'), "x")).output_body == "x?"
    ex = ok(run(route('setBody: {jsonpath: "$.a.b"}'), '{"a": {"b": 42}}'))
    assert ex.output_body == "42"
    assert ok(run(route('transform: {constant: "t"}'), "x")).processors[0].processor_type == "transform"


def test_constant_is_text_unless_result_type() -> None:
    # Camel's constant language gives the text: `constant: 10` sets the String "10".
    ex = ok(run(route("setHeader: {name: n, constant: 10}"), "x"))
    assert ex.output_headers == {"n": "10"}
    ex = ok(
        run(route("setHeader: {name: n, constant: {expression: 10, resultType: java.lang.Integer}}"), "x")
    )
    assert ex.output_headers == {"n": 10}


def test_set_header_and_property_and_removal() -> None:
    ex = ok(
        run(
            route(
                "setHeader: {name: Foo, constant: a}",
                "setProperty: {name: p, simple: '${header.foo}'}",
                "removeHeader: {name: FOO}",
                "removeProperty: tenant",
            ),
            "x",
            properties={"tenant": "t1"},
        )
    )
    assert ex.output_headers == {}
    assert ex.output_properties == {"p": "a"}


def test_remove_headers_wildcard_regex_and_exclude() -> None:
    headers = {"CamelHttpMethod": "GET", "CamelHttpUri": "/x", "camelhttpquery": "q", "Keep": 1, "x-id": 2}
    ex = ok(
        run(
            route('removeHeaders: {pattern: "CamelHttp*", excludePattern: "CamelHttpUri"}'),
            "b",
            headers=headers,
        )
    )
    assert ex.output_headers == {"CamelHttpUri": "/x", "Keep": 1, "x-id": 2}
    ex = ok(run(route('removeHeaders: "x-.*"'), "b", headers={"x-id": 1, "y": 2}))
    assert ex.output_headers == {"y": 2}
    ex = ok(run(route('removeProperties: {pattern: "tmp*"}'), "b", properties={"tmpA": 1, "TMPb": 2, "c": 3}))
    # AbstractExchange.removeProperties matches with PatternHelper too: case-insensitive.
    assert ex.output_properties == {"c": 3}


def test_log_evaluates_simple_and_uses_the_context_sink() -> None:
    lines: list[tuple[str, str, str]] = []
    text = route("log: 'got ${body}'", 'log: {message: "m", loggingLevel: WARN, logName: audit}', "to: log:x")
    ok(run(text, "B", context=ctx(log=lambda *a: lines.append(a))))
    assert lines[:2] == [("r", "INFO", "got B"), ("audit", "WARN", "m")]
    assert lines[2][0] == "x" and "Body: B" in lines[2][2]


def test_log_level_off_logs_nothing_and_evaluates_nothing() -> None:
    # LogProcessor.process runs only if logger.shouldLog(), and CamelLogger.shouldLog is false
    # for OFF: the message is not even evaluated, so a failing expression does not fail.
    lines: list[tuple[str, str, str]] = []
    text = route(
        "log: {message: 'n=${bodyAs(Integer)}', loggingLevel: OFF}",
        "log: {message: 'after', loggingLevel: 'off'}",
        "log: done",
    )
    ex = ok(run(text, "not a number", context=ctx(log=lambda *a: lines.append(a))))
    assert lines == [("r", "INFO", "done")]
    assert [p.processor_id for p in ex.processors] == ["log1", "log2", "log3"]


# --------------------------------------------------------------------------- routing


CHOICE = route(
    """choice:
  when:
    - simple: "${header.n} > 10"
      steps:
        - setBody: {constant: big}
    - expression: {simple: "${header.n} > 5"}
      steps:
        - setBody: {constant: medium}
  otherwise:
    steps:
      - setBody: {constant: small}"""
)


@pytest.mark.parametrize(
    ("n", "expected", "branch"), [(11, "big", "when1"), (6, "medium", "when2"), (1, "small", "otherwise1")]
)
def test_choice_takes_the_first_matching_branch(n: int, expected: str, branch: str) -> None:
    ex = ok(run(CHOICE, "x", headers={"n": n}))
    assert ex.output_body == expected
    choice, taken, step = ex.processors
    assert (choice.processor_type, taken.processor_id, step.processor_type) == ("choice", branch, "setBody")
    assert taken.parent_seq == choice.seq and step.parent_seq == taken.seq
    assert (choice.depth, taken.depth, step.depth) == (0, 1, 2)


def test_choice_without_match_or_otherwise_runs_nothing() -> None:
    text = route("choice: {when: [{simple: \"${body} == 'a'\", steps: [{setBody: {constant: A}}]}]}")
    ex = ok(run(text, "b"))
    assert ex.output_body == "b" and [p.processor_type for p in ex.processors] == ["choice"]


def test_filter_guards_its_steps_only() -> None:
    text = route(
        'filter: {simple: "${header.vip} == true", steps: [{setHeader: {name: f, constant: "in"}}]}',
        'setHeader: {name: after, constant: "yes"}',
    )
    ex = ok(run(text, "x", headers={"vip": "true"}))
    assert ex.output_headers["f"] == "in"
    ex = ok(run(text, "x", headers={"vip": "false"}))
    assert "f" not in ex.output_headers and ex.output_headers["after"] == "yes"
    # Camel 4's filter sets no exchange property (no CamelFilterMatched) ...
    assert ex.output_properties == {}
    # ... unless statusPropertyName names one: then it holds the outcome as a boolean.
    text = route('filter: {simple: "${header.vip} == true", statusPropertyName: vip, steps: []}')
    assert ok(run(text, "x", headers={"vip": "true"})).output_properties == {"vip": True}
    assert ok(run(text, "x", headers={"vip": "no"})).output_properties == {"vip": False}


# --------------------------------------------------------------------------- split and loop


def test_split_without_aggregation_keeps_the_original_body() -> None:
    text = route(
        """split:
  jsonpath: "$.lines[*]"
  steps:
    - setBody: {simple: "${body[sku]}:${exchangeProperty.CamelSplitIndex}/${exchangeProperty.CamelSplitSize}"}
    - to: mock:out"""
    )
    body = json.dumps({"lines": [{"sku": "a"}, {"sku": "b"}, {"sku": "c"}]})
    ex = ok(run(text, body))
    assert ex.output_body == body  # Camel's splitter returns the original message
    outs = [p for p in ex.processors if p.processor_type == "to"]
    assert [p.input_body for p in outs] == ["a:0/3", "b:1/3", "c:2/3"]
    assert [p.iteration for p in outs] == [0, 1, 2]
    assert all("CamelSplitComplete" in p.properties for p in outs)
    assert [p.properties["CamelSplitComplete"] for p in outs] == [False, False, True]


def test_split_drops_null_items_and_splits_text_as_camel_does() -> None:
    # Splitter: a null part makes no sub-exchange and does not count in CamelSplitSize.
    grouped = "aggregationStrategy: GroupedBodyAggregationStrategy"
    each_item = "'${body}:${exchangeProperty.CamelSplitIndex}/${exchangeProperty.CamelSplitSize}'"
    text = route(
        "split: {jsonpath: '$.skus', " + grouped + ", steps: [{setBody: {simple: " + each_item + "}}]}"
    )
    ex = ok(run(text, '{"skus": ["a", null, "b"]}'))
    assert json.loads(ex.output_body) == ["a:0/2", "b:1/2"]
    # ObjectHelper.createStringIterator: one leading and one trailing delimiter are skipped,
    # a blank text is no item, and any other text without the delimiter is one item.
    each = "split: {simple: '${body}', %s%s, steps: []}"
    assert ok(run(route(each % (grouped, "")), ",a,b,")).output_body == '["a","b"]'
    assert ok(run(route(each % (grouped, "")), "  ")).output_body == "  "  # no item: body kept
    assert ok(run(route(each % (grouped, ", delimiter: ';'")), ";a;b;")).output_body == '["a","b"]'
    # delimiter: false (Splitter.IGNORE_DELIMITER_MARKER) keeps the text whole.
    assert ok(run(route(each % (grouped, ", delimiter: false")), "a,b")).output_body == '["a,b"]'


def test_split_tokenize_and_aggregation_strategies() -> None:
    def join(old: str | None, new: str) -> str:
        return new.upper() if old is None else f"{old}+{new.upper()}"

    class Counter:
        def aggregate(self, old: Exchange | None, new: Exchange) -> Exchange:
            if old is None:
                new.headers["count"] = 1
                return new
            old.headers["count"] += 1
            old.body = f"{old.body}|{new.body}"
            return old

    beans = {"join": join, "counter": Counter()}
    tok = "split: {tokenize: {token: ','}, aggregationStrategy: %s, steps: [{to: 'mock:x'}]}"
    # Without aggregationStrategyMethodAllowNull the POJO is not called for the first item.
    assert ok(run(route(tok % "join"), "a,b,c", beans=beans)).output_body == "a+B+C"
    ex = ok(run(route(tok % "counter"), "a,b", beans=beans))
    assert ex.output_body == "a|b" and ex.output_headers["count"] == 2
    ex = ok(run(route(tok % "GroupedBodyAggregationStrategy"), "a,b,", beans=beans))
    assert ex.output_body == '["a","b"]'  # no trailing empty token (java.util.Scanner)
    ex = ok(
        run(
            route("split: {tokenize: {token: '\\n', group: 2}, aggregationStrategy: join, steps: []}"),
            "1\n2\n3",
            beans=beans,
        )
    )
    assert ex.output_body == "1\n2+3"


def test_split_item_failure_fails_after_all_items_or_stops_at_once() -> None:
    steps = (
        "steps:\n  - filter:\n      simple: \"${body} == 'bad'\"\n      steps:\n"
        "        - throwException: {exceptionType: java.lang.IllegalStateException, message: 'no ${body}'}\n"
        "  - to: mock:done"
    )
    ex = run(route(f"split:\n  tokenize: ','\n  {steps.replace(chr(10), chr(10) + '  ')}"), "a,bad,c")
    assert ex.status == "FAILED" and ex.error_type == "java.lang.IllegalStateException"
    assert len(rec(ex, "to1")) == 2  # items a and c still reached mock:done
    ex = run(
        route(
            f"split:\n  tokenize: ','\n  stopOnException: true\n  {steps.replace(chr(10), chr(10) + '  ')}"
        ),
        "a,bad,c",
    )
    assert ex.error_type == "org.apache.camel.CamelExchangeException"
    assert ex.error_message.startswith("Multicast processing failed for number 1.")
    assert "java.lang.IllegalStateException - no bad" in ex.error_message
    assert len(rec(ex, "to1")) == 1
    assert "Caused by: java.lang.IllegalStateException: no bad" in ex.error_stack_trace


def test_split_without_stop_on_exception_ends_with_the_last_failed_items_exception() -> None:
    # Camel's default UseOriginalAggregationStrategy(propagateException=true) keeps the newest
    # sub-exchange's exception (checkException), so the last failure is the split's.
    steps = (
        "steps:\n  - filter:\n      simple: \"${body} starts with 'bad'\"\n      steps:\n"
        "        - throwException: {exceptionType: java.lang.IllegalStateException, message: 'no ${body}'}"
    )
    for extra in ("", "\n  aggregationStrategy: UseOriginalAggregationStrategy"):
        split = f"split:\n  tokenize: ','{extra}\n  {steps.replace(chr(10), chr(10) + '  ')}"
        ex = run(route(split), "a,bad1,c,bad2,d")
        assert ex.status == "FAILED" and ex.error_message == "no bad2"
        assert ex.output_body == "a,bad1,c,bad2,d"


def _failing_split(extra: str) -> str:
    """A split over a comma list whose items starting with 'bad' throw 'no <item>'."""
    steps = (
        "steps:\n  - filter:\n      simple: \"${body} starts with 'bad'\"\n      steps:\n"
        "        - throwException: {exceptionType: java.lang.IllegalStateException, message: 'no ${body}'}\n"
        "  - to: mock:done"
    )
    return route(f"split:\n  tokenize: ','{extra}\n  {steps.replace(chr(10), chr(10) + '  ')}")


def test_a_split_with_a_strategy_ends_with_the_failure_the_strategy_keeps() -> None:
    # Walk finding: every strategy but the default reported the FIRST failed item. In Camel
    # (MulticastProcessor) a failed copy is aggregated like any other and the split ends with
    # the exception its result exchange carries (doDone -> ExchangeHelper.copyResults), so it
    # depends on the strategy (Split EIP: "You have the chance to remedy or handle this in
    # the AggregationStrategy").
    def join(old: str | None, new: str) -> str:
        return new.upper() if old is None else f"{old}+{new.upper()}"

    def join_but_not_c(old: str | None, new: str) -> str:
        if new == "c":
            raise ValueError("no c here")
        return join(old, new)

    class KeepGood:  # handles failures: a failed copy is left out
        def aggregate(self, old: Exchange | None, new: Exchange) -> Exchange:
            if new.exception is not None:
                return old if old is not None else new
            if old is not None:
                old.body = f"{old.body}|{new.body}"
                return old
            return new

    class Newest:  # returns each new copy, so the last one's outcome is the split's
        def aggregate(self, old: Exchange | None, new: Exchange) -> Exchange:
            return new

    beans = {"join": join, "joinButNotC": join_but_not_c, "keepGood": KeepGood(), "newest": Newest()}

    def split(strategy: str, body: str, more: str = "") -> Execution:
        return run(_failing_split(f"\n  aggregationStrategy: {strategy}{more}"), body, beans=beans)

    # UseLatest propagates the newest exception (propagateException): the last failure.
    ex = split("UseLatestAggregationStrategy", "a,bad1,c,bad2,d")
    assert ex.status == "FAILED" and ex.error_message == "no bad2"
    # GroupedBody and a POJO callable keep the FIRST copy as the result: a later item's
    # failure is lost and the split completes, the failed items' bodies aggregated too.
    assert ok(split("GroupedBodyAggregationStrategy", "a,bad1,c")).output_body == '["a","bad1","c"]'
    assert ok(split("join", "a,bad1,c")).output_body == "a+BAD1+C"
    for strategy in ("GroupedBodyAggregationStrategy", "join"):
        ex = split(strategy, "bad0,a,bad1")
        assert ex.status == "FAILED" and ex.error_message == "no bad0"
        assert len(rec(ex, "to1")) == 1  # a ran on; both bad items failed before mock:done
    # A POJO that throws: AggregationStrategyBeanAdapter sets the exception on the result and
    # aggregation goes on; the split then fails with it, after every item ran.
    ex = split("joinButNotC", "a,b,c,d")
    assert ex.status == "FAILED" and ex.error_type == "ValueError" and ex.error_message == "no c here"
    assert len(rec(ex, "to1")) == 4
    # An AggregationStrategy object decides: one that leaves failed copies out handles them ...
    assert ok(split("keepGood", "a,bad1,c,bad2")).output_body == "a|c"
    # ... one that returns each new copy ends with the last copy's outcome.
    assert ok(split("newest", "bad1,a")).output_body == "a"
    ex = split("newest", "a,bad1")
    assert ex.status == "FAILED" and ex.error_message == "no bad1"
    # shareUnitOfWork wraps any strategy in ShareUnitOfWorkAggregationStrategy, which copies a
    # failed copy's exception onto the result: the newest failure wins, the handler too.
    for strategy in ("GroupedBodyAggregationStrategy", "join", "keepGood"):
        ex = split(strategy, "a,bad1,c,bad2,d", "\n  shareUnitOfWork: true")
        assert ex.status == "FAILED" and ex.error_message == "no bad2", strategy
    # stopOnException stops at the first failure whatever the strategy; the failed copy is
    # not aggregated, only its exception (wrapped) is the split's.
    ex = split("keepGood", "a,bad1,c", "\n  stopOnException: true")
    assert ex.error_type == "org.apache.camel.CamelExchangeException"
    assert ex.error_message.startswith("Multicast processing failed for number 1.")


def test_a_default_split_sets_the_newest_caught_exception_on_the_original() -> None:
    # UseOriginalAggregationStrategy.checkCaughtException: an item whose doCatch handled an
    # exception leaves CamelExceptionCaught on the original exchange after the split.
    text = route(
        """split:
  tokenize: ','
  steps:
    - doTry:
        steps:
          - filter:
              simple: "${body} starts with 'bad'"
              steps:
                - throwException: {exceptionType: java.lang.IllegalStateException, message: 'no ${body}'}
        doCatch:
          - exception: [java.lang.IllegalStateException]
            steps: [{setBody: {constant: caught}}]""",
        "to: mock:after",
    )
    ex = ok(run(text, "a,bad1,bad2,c"))
    assert ex.output_body == "a,bad1,bad2,c"
    (after,) = rec(ex, "to1")
    assert "no bad2" in after.input_properties["CamelExceptionCaught"]
    assert "CamelExceptionCaught" not in ok(run(text, "a,c")).output_properties


def test_a_split_copies_its_strategys_result_back_onto_the_exchange_as_camel_does() -> None:
    # Walk finding: after a GroupedBody or callable split the sandbox copied only the body
    # back. Camel's MulticastProcessor.doDone copies the strategy's result exchange onto the
    # original with ExchangeHelper.copyResults whatever the strategy: the body, the headers
    # (replaced: Message.copyFrom), the properties (put over the original's) with the result's
    # CamelSplitIndex/Size/Complete. The result is the FIRST copy for GroupedBody
    # (AbstractListAggregationStrategy) and a POJO callable (AggregationStrategyBeanAdapter),
    # the last for UseLatest; without a strategy (or UseOriginal) it is the original itself.
    class Newest:
        def aggregate(self, old: Exchange | None, new: Exchange) -> Exchange:
            return new

    def join(old: str | None, new: str) -> str:
        return new if old is None else f"{old}+{new}"

    text = route(
        "setHeader: {name: h, constant: orig}",
        "setHeader: {name: gone, constant: x}",
        "setProperty: {name: p, constant: orig}",
        "setProperty: {name: kept, constant: x}",
        """split:
  tokenize: ','
  aggregationStrategy: STRATEGY
  steps:
    - setHeader: {name: h, simple: "${body}"}
    - setProperty: {name: p, simple: "${body}"}
    - removeHeader: {name: gone}
    - removeProperty: {name: kept}""",
        "to: mock:after",
    )
    beans = {"newest": Newest(), "join": join}
    split_keys = ("CamelSplitIndex", "CamelSplitSize", "CamelSplitComplete")

    def after(strategy: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        yaml_text = re.sub(r"\n *aggregationStrategy: none", "", text.replace("STRATEGY", strategy))
        (rec_after,) = rec(ok(run(yaml_text, "a,b,c", beans=beans)), "to1")
        return rec_after.input_body, rec_after.input_headers, rec_after.input_properties

    for strategy in ("none", "UseOriginalAggregationStrategy"):
        body, headers, props = after(strategy)
        assert body == "a,b,c" and headers == {"h": "orig", "gone": "x"}, strategy
        assert props["p"] == "orig" and props["kept"] == "x" and not set(split_keys) & set(props)
    for strategy, want_body in (("GroupedBodyAggregationStrategy", '["a","b","c"]'), ("join", "a+b+c")):
        body, headers, props = after(strategy)
        assert body == want_body and headers == {"h": "a"}, strategy  # the first copy's headers
        assert [props[k] for k in split_keys] == [0, 3, False] and props["p"] == "a", strategy
        assert props["kept"] == "x"  # properties are put over the original's, not replaced
    for strategy in ("UseLatestAggregationStrategy", "newest"):
        body, headers, props = after(strategy)
        assert body == "c" and headers == {"h": "c"}, strategy
        assert [props[k] for k in split_keys] == [2, 3, True] and props["p"] == "c", strategy


def test_a_strategy_returning_none_keeps_none_as_camel_keeps_a_null_result() -> None:
    # Walk finding: aggregate(old, new) returning None fell back to the new copy. Camel's
    # MulticastProcessor.doAggregateInternal sets the result to whatever aggregate returns,
    # null included: the next call gets old=None, and a null at the end (doDone(null)) copies
    # nothing back, so the exchange goes on as it came, failed items or not.
    seen: list[Any] = []

    class EveryOther:  # null for even items: the call after one gets old=None
        def aggregate(self, old: Exchange | None, new: Exchange) -> Exchange | None:
            seen.append(None if old is None else old.body)
            return None if new.properties["CamelSplitIndex"] % 2 == 0 else new

    class Nothing:
        def aggregate(self, old: Exchange | None, new: Exchange) -> None:
            return None

    beans = {"everyOther": EveryOther(), "nothing": Nothing()}
    ex = ok(
        run(
            route("split: {tokenize: ',', aggregationStrategy: everyOther, steps: []}"),
            "a,b,c,d",
            beans=beans,
        )
    )
    assert seen == [None, None, "b", None] and ex.output_body == "d"
    ex = ok(run(_failing_split("\n  aggregationStrategy: nothing"), "a,bad1,c", beans=beans))
    assert ex.output_body == "a,bad1,c" and "CamelSplitIndex" not in ex.output_properties
    assert len(rec(ex, "to1")) == 2  # every item ran; the failure went with the null result
    # shareUnitOfWork: ShareUnitOfWorkAggregationStrategy.propagateFailure sets the failed
    # copy's exception on the null answer, and the NullPointerException is the split's.
    ex = run(
        _failing_split("\n  aggregationStrategy: nothing\n  shareUnitOfWork: true"), "a,bad1,c", beans=beans
    )
    assert ex.status == "FAILED" and ex.error_type == "java.lang.NullPointerException"
    assert '"answer" is null' in ex.error_message
    assert len(rec(ex, "to1")) == 1  # the split stopped at the failed item
    assert ok(
        run(_failing_split("\n  aggregationStrategy: nothing\n  shareUnitOfWork: true"), "a,c", beans=beans)
    )


def test_a_pojo_strategy_is_called_for_the_first_item_only_with_allow_null() -> None:
    # Gap left by the last session: aggregationStrategyMethodAllowNull was accepted and ignored,
    # the callable always called with old_body=None first. Camel's SplitReifier hands it to
    # AggregationStrategyBeanAdapter (allowNullOldExchange/allowNullNewExchange, false by
    # default), whose aggregate returns the first copy as it is, uncalled, unless it is set.
    calls: list[tuple[Any, Any]] = []

    def join(old: str | None, new: str) -> str:
        calls.append((old, new))
        return new.upper() if old is None else f"{old}+{new.upper()}"

    class Counter:  # an AggregationStrategy: Camel calls it with old=None whatever the option
        def aggregate(self, old: Exchange | None, new: Exchange) -> Exchange:
            if old is not None:
                old.body = f"{old.body}|{new.body}"
                return old
            new.body = f"first:{new.body}"
            return new

    beans = {"join": join, "counter": Counter()}
    split = "split: {tokenize: ',', aggregationStrategy: %s, steps: []%s}"
    assert ok(run(route(split % ("join", "")), "a,b,c", beans=beans)).output_body == "a+B+C"
    assert calls == [("a", "b"), ("a+B", "c")]
    calls.clear()
    allow = ", aggregationStrategyMethodAllowNull: true"
    assert ok(run(route(split % ("join", allow)), "a,b,c", beans=beans)).output_body == "A+B+C"
    assert calls == [(None, "a"), ("A", "b"), ("A+B", "c")]
    calls.clear()
    no = ", aggregationStrategyMethodAllowNull: false"
    assert ok(run(route(split % ("join", no)), "a,b", beans=beans)).output_body == "a+B"
    # Routes loaded without beans look the strategy up when they run: the option goes with it.
    routes = RouteSet(
        load_texts([("t.yaml", route(split % ("join", allow)))], None),
        beans=beans,
        endpoints=None,
        version=None,
    )
    execution = routes.run("r", Payload(headers={}, body="a,b", properties={}), context=ctx())
    assert ok(execution).output_body == "A+B"
    # SplitReifier applies it to POJOs only: an AggregationStrategy object is called as always.
    for extra in ("", allow):
        assert ok(run(route(split % ("counter", extra)), "a,b", beans=beans)).output_body == "first:a|b"
    with pytest.raises(RouteLoadError, match="must be true or false"):
        RouteSet.loads(route(split % ("join", ", aggregationStrategyMethodAllowNull: yes")), beans)


def test_split_copies_carry_the_parent_exchange_id_as_camel_correlation_id() -> None:
    # Gap left by the last session: CamelCorrelationId was never set. Splitter makes each item
    # with createCorrelatedCopy, which sets it to the id of the exchange it copies (the
    # original's); MulticastProcessor.doDone keeps the original's own one around copyResults,
    # so an original without one takes the result copy's, and a loop copy (createCopy) has none.
    text = route(
        "split: {tokenize: ',', aggregationStrategy: STRATEGY, steps: ["
        "{setHeader: {name: corr, simple: '${exchangeProperty.CamelCorrelationId}'}},"
        "{split: {tokenize: ';', steps: [{to: 'mock:inner'}]}},"
        "{to: 'mock:item'}]}",
        "loop: {constant: 1, copy: true, steps: [{to: 'mock:loop'}]}",
    )

    def split(strategy: str, properties: dict[str, Any] | None = None) -> Execution:
        return ok(run(text.replace("STRATEGY", strategy), "a;x,b", properties=properties))

    ex = split("UseOriginalAggregationStrategy")
    items = rec(ex, "to2")
    assert [p.input_headers["corr"] for p in items] == [ex.exchange_id] * 2
    ids = [p.input_properties["CamelCorrelationId"] for p in items]
    assert ids == [ex.exchange_id] * 2
    # A nested split's items point at the outer item's copy, not at the original.
    inner = rec(ex, "to1")
    assert len(inner) == 3 and all(p.input_properties["CamelCorrelationId"] != ex.exchange_id for p in inner)
    assert len({p.input_properties["CamelCorrelationId"] for p in inner}) == 2
    assert "CamelCorrelationId" not in ex.output_properties  # the original was the result
    assert "CamelCorrelationId" not in rec(ex, "to3")[0].input_properties
    for strategy in ("GroupedBodyAggregationStrategy", "UseLatestAggregationStrategy"):
        ex = split(strategy)
        assert ex.output_properties["CamelCorrelationId"] == ex.exchange_id, strategy
        ex = split(strategy, {"CamelCorrelationId": "upstream-7"})
        assert ex.output_properties["CamelCorrelationId"] == "upstream-7", strategy
        assert rec(ex, "to2")[0].input_properties["CamelCorrelationId"] == ex.exchange_id


def test_share_unit_of_work_copies_the_failed_items_caught_exception_onto_the_result() -> None:
    # Gap left by the last session: ShareUnitOfWorkAggregationStrategy.propagateFailure copies
    # a failed copy's exception AND its CamelExceptionCaught onto the answer; only the exception
    # was. The failed copy's CamelExceptionCaught is its own exception, stored by the route's
    # error handler (RedeliveryErrorHandler.handleException, the item runs under it through
    # MulticastProcessor.wrapInErrorHandler), replacing what an earlier doCatch left; in a
    # doTry there is no error handler (ProcessorReifier), so the doCatch's stays.
    item = """split:
  tokenize: ','
  aggregationStrategy: GroupedBodyAggregationStrategy%s
  steps:
    - doTry:
        steps:
          - throwException: {exceptionType: java.lang.IllegalArgumentException, message: 'caught ${body}'}
        doCatch:
          - exception: [java.lang.IllegalArgumentException]
            steps: [{to: mock:caught}]
    - filter:
        simple: "${body} starts with 'bad'"
        steps:
          - throwException: {exceptionType: java.lang.IllegalStateException, message: 'no ${body}'}"""
    share = "\n  shareUnitOfWork: true"

    def caught(ex: Execution, split_id: str = "split1") -> str:
        (record,) = rec(ex, split_id)
        return record.properties["CamelExceptionCaught"]

    ex = run(route(item % share), "a,bad1,c")
    assert ex.status == "FAILED" and ex.error_message == "no bad1"
    assert caught(ex) == "java.lang.IllegalStateException: no bad1"
    # Without sharing, GroupedBody's result is the first copy: its doCatch's exception is kept.
    ex = ok(run(route(item % ""), "a,bad1,c"))
    assert caught(ex) == "java.lang.IllegalArgumentException: caught a"
    # Inside a doTry no error handler runs: the failed item keeps its doCatch's exception.
    in_try = "doTry:\n  steps:\n    - " + (item % share).replace("\n", "\n      ")
    in_try += "\n  doFinally: {steps: [{to: mock:finally}]}"
    ex = run(route(in_try), "a,bad1,c")
    assert ex.status == "FAILED" and ex.error_message == "no bad1"
    assert caught(ex) == "java.lang.IllegalArgumentException: caught bad1"

    # propagateFailure asks the new copy after the wrapped strategy ran: a strategy that clears
    # its exception has handled it, so nothing is propagated (no NullPointerException either).
    class Forgive:
        def aggregate(self, old: Exchange | None, new: Exchange) -> Exchange | None:
            new.exception = None
            return old

    ex = ok(
        run(
            _failing_split("\n  aggregationStrategy: forgive\n  shareUnitOfWork: true"),
            "a,bad1,c",
            beans={"forgive": Forgive()},
        )
    )
    assert len(rec(ex, "to1")) == 2 and ex.output_body == "a,bad1,c"


def test_loop_count_index_copy_and_do_while() -> None:
    ex = ok(
        run(
            route(
                "loop: {constant: 3, steps: "
                "[{setBody: {simple: '${body}${exchangeProperty.CamelLoopIndex}'}}]}"
            ),
            "x",
        )
    )
    assert ex.output_body == "x012"
    assert [p.iteration for p in ex.processors[1:]] == [0, 1, 2]
    ex = ok(
        run(
            route("loop: {simple: '${header.n}', copy: true, steps: [{setBody: {simple: '${body}!'}}]}"),
            "x",
            headers={"n": "4"},
        )
    )
    assert ex.output_body == "x!"  # each turn starts from a copy of the input
    ex = ok(
        run(
            route(
                "loop: {doWhile: true, simple: '${body.length()} < 5', "
                "steps: [{setBody: {simple: '${body}a'}}]}"
            ),
            "x",
        )
    )
    assert ex.output_body == "xaaaa"
    assert (
        ok(run(route("loop: {constant: 0, steps: [{setBody: {constant: never}}]}"), "x")).output_body == "x"
    )


# --------------------------------------------------------------------------- data formats


def test_marshal_unmarshal_json_like_jackson() -> None:
    text = route(
        "unmarshal: {json: {}}", "setBody: {simple: '${body[items]}'}", "marshal: {json: {library: Jackson}}"
    )
    ex = ok(run(text, '{"items": [1, 2.5, "é", null, true]}'))
    assert ex.output_body == '[1,2.5,"é",null,true]'
    bad = run(route("unmarshal: {json: {}}"), "{not json")
    assert bad.status == "FAILED" and bad.error_type == "com.fasterxml.jackson.core.JsonParseException"
    # Jackson's messages, not Python's ("Expecting value: line 1 column 1 (char 0)").
    source = "REDACTED (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled)"
    values = "(JSON String, Number, Array, Object or token 'null', 'true' or 'false')"
    assert bad.error_message == (
        "Unexpected character ('n' (code 110)): was expecting double-quote to start field name\n"
        f" at [Source: {source}; line: 1, column: 3]"
    )
    bad = run(route("unmarshal: {json: {}}"), "  hello world")
    assert bad.error_message == (
        f"Unrecognized token 'hello': was expecting {values}\n at [Source: {source}; line: 1, column: 8]"
    )
    bad = run(route("unmarshal: {json: {}}"), "<order/>")
    assert bad.error_message == (
        f"Unexpected character ('<' (code 60)): expected a valid value {values}\n"
        f" at [Source: {source}; line: 1, column: 2]"
    )
    assert run(route("unmarshal: {json: {}}"), "NaN").status == "FAILED"  # Jackson rejects NaN


def test_unmarshal_json_ignores_what_follows_the_first_value_as_jackson_does() -> None:
    # Camel's JacksonDataFormat reads with a plain new ObjectMapper(): ObjectReader.readValue
    # checks for trailing tokens only with DeserializationFeature.FAIL_ON_TRAILING_TOKENS, off
    # by default in Jackson 2, so the parser stops after the first value and never reads the
    # rest. The engine failed with Python's "Extra data".
    step = route("unmarshal: {json: {}}", "marshal: {json: {}}")
    for text, body in [
        ('{"a": 1} trailing words', '{"a":1}'),
        ('{"a": 1}{"b": 2}', '{"a":1}'),
        ("[1, 2]] }", "[1,2]"),
        ('  "x" y', '"x"'),
        ("12 34", "12"),
        ("true]", "true"),
    ]:
        assert ok(run(step, text)).output_body == body, text
    # A root-level number or literal is the exception: the parser looks at the character after
    # it (ReaderBasedJsonParser._verifyRootSpace, _matchToken) and fails on one that cannot end it.
    source = "REDACTED (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled)"
    values = "(JSON String, Number, Array, Object or token 'null', 'true' or 'false')"
    bad = run(step, "123abc")
    assert (bad.error_type, bad.error_message) == (
        "com.fasterxml.jackson.core.JsonParseException",
        "Unexpected character ('a' (code 97)): Expected space separating root-level values\n"
        f" at [Source: {source}; line: 1, column: 5]",
    )
    bad = run(step, "truex")
    assert bad.error_message == (
        f"Unrecognized token 'truex': was expecting {values}\n at [Source: {source}; line: 1, column: 6]"
    )


def test_convert_body_to() -> None:
    assert (
        ok(
            run(route("convertBodyTo: java.lang.Integer", "setBody: {simple: '${body} + 1'}"), " 41")
        ).output_body
        == "41 + 1"
    )
    ex = ok(
        run(
            route(
                "convertBodyTo: {type: java.math.BigDecimal}",
                "setHeader: {name: t, simple: '${bodyAs(String)}'}",
            ),
            "19.990",
        )
    )
    assert ex.output_headers == {"t": "19.990"}
    # ConvertBodyProcessor: getMandatoryBody wraps a failed conversion in InvalidPayloadException.
    ex = run(route("convertBodyTo: Integer"), "abc")
    assert ex.error_type == "org.apache.camel.InvalidPayloadException"
    assert ex.error_message.startswith(
        "No body available of type: java.lang.Integer but has type: java.lang.String on: Message."
    )
    assert "Caused by: org.apache.camel.TypeConversionException" in ex.error_stack_trace
    assert "java.lang.NumberFormatException" in ex.error_stack_trace
    ex = run(route("convertBodyTo: {type: Integer, mandatory: false}"), "abc")
    assert ex.error_type == "org.apache.camel.TypeConversionException"
    # "only convert if there is a body": a null body is left alone, mandatory or not.
    assert ok(run(route("convertBodyTo: String"), None)).output_body is None


def test_a_double_becomes_text_as_javas_double_to_string() -> None:
    # Camel converts a Double to String with toString(): NaN, Infinity, 1.0E10 (not nan, inf).
    for value, text in ((float("nan"), "NaN"), (float("-inf"), "-Infinity"), (1e10, "1.0E10")):
        beans = {"num": lambda body, v=value: v}
        ex = ok(run(route("bean: {ref: num}", "convertBodyTo: String"), "x", beans=beans))
        assert ex.output_body == text
        ex = ok(run(route("bean: {ref: num}"), "x", beans=beans))
        assert ex.output_body == text  # the captured body, as an agent converts it


def test_convert_body_to_map_and_list_agrees_with_body_as() -> None:
    # convertBodyTo: java.util.Map was refused at load time while ${bodyAs(java.util.Map)} worked;
    # both now use one converter: a Map/List as it is, JSON text parsed, anything else fails.
    for type_name in ("java.util.Map", "Map", "java.util.LinkedHashMap"):
        ex = ok(run(route(f"convertBodyTo: {type_name}", "setBody: {simple: '${body[a]}'}"), '{"a": 1}'))
        assert ex.output_body == "1"
    ex = ok(run(route("unmarshal: {json: {}}", "convertBodyTo: java.util.List"), "[1, 2]"))
    assert ex.output_body == "[1,2]"
    ex = ok(
        run(
            route("convertBodyTo: java.util.Map", "setHeader: {name: same, simple: '${bodyAs(Map)}'}"),
            '{"a": 1}',
        )
    )
    assert ex.output_headers == {"same": '{"a":1}'}
    ex = run(route("convertBodyTo: java.util.Map"), "[1]")
    assert ex.error_type == "org.apache.camel.InvalidPayloadException"
    assert "the JSON is not an object" in ex.error_message


def test_convert_body_to_uses_its_charset() -> None:
    # ConvertBodyProcessor sets CamelCharsetName for the conversion: the byte[]/String
    # converters encode and decode with it (UTF-8 otherwise).
    to_latin1 = "convertBodyTo: {type: 'byte[]', charset: ISO-8859-1}"
    ex = ok(run(route(to_latin1, "convertBodyTo: {type: String, charset: ISO-8859-1}"), "é"))
    assert ex.output_body == "é"
    ex = ok(run(route(to_latin1, "convertBodyTo: {type: String, charset: UTF-8}"), "é"))
    assert ex.output_body == "\ufffd"  # one Latin-1 byte is malformed UTF-8
    ex = ok(run(route("convertBodyTo: {type: 'byte[]', charset: UTF-16BE}", "convertBodyTo: String"), "é"))
    assert ex.output_body == "\x00\ufffd"  # b"\x00\xe9" read back as UTF-8
    # What the charset cannot map becomes '?', as String.getBytes(charset) does.
    ex = ok(run(route("convertBodyTo: {type: 'byte[]', charset: US-ASCII}", "convertBodyTo: String"), "é!"))
    assert ex.output_body == "?!"


# --------------------------------------------------------------------------- errors


def test_throw_exception_uses_the_given_type_and_simple_message() -> None:
    ex = run(
        route("throwException: {exceptionType: java.lang.IllegalArgumentException, message: 'bad ${body}'}"),
        "q",
    )
    assert (ex.status, ex.error_type, ex.error_message) == (
        "FAILED",
        "java.lang.IllegalArgumentException",
        "bad q",
    )
    (record,) = ex.processors
    assert record.status == "FAILED" and record.error_type == "java.lang.IllegalArgumentException"
    assert ex.error_stack_trace.splitlines()[0] == "java.lang.IllegalArgumentException: bad q"
    assert "\tat r.throwException1(t.yaml:" in ex.error_stack_trace


def test_throw_exception_without_message_has_a_null_message() -> None:
    # ThrowExceptionProcessor uses the type's default constructor when no message is given:
    # getMessage() is null and Throwable.toString() prints the class name alone.
    ex = run(route("throwException: {exceptionType: java.lang.IllegalStateException}"), "q")
    assert (ex.status, ex.error_type, ex.error_message) == ("FAILED", "java.lang.IllegalStateException", None)
    assert ex.processors[0].error_message is None
    assert ex.error_stack_trace.splitlines()[0] == "java.lang.IllegalStateException"
    # An empty message is still a message: new IllegalStateException("").
    ex = run(route("throwException: {exceptionType: java.lang.IllegalStateException, message: ''}"), "q")
    assert ex.error_message == ""
    # In a doCatch, ${exception.message} reads null (Simple prints it as empty text).
    caught = route(
        """doTry:
  steps:
    - throwException: {exceptionType: java.lang.IllegalStateException}
  doCatch:
    - exception: [java.lang.IllegalStateException]
      steps:
        - setBody: {simple: "[${exception.message}]"}"""
    )
    assert ok(run(caught, "q")).output_body == "[]"


TRY = route(
    """doTry:
  steps:
    - throwException: {exceptionType: "%s", message: boom}
  doCatch:
    - exception: [java.io.IOException]
      steps:
        - setBody: {constant: io}
    - exception: [java.lang.RuntimeException]
      onWhen: {simple: "${header.handle} == 'yes'"}
      steps:
        - setBody: {simple: "rt:${exchangeProperty.CamelExceptionCaught}"}
  doFinally:
    steps:
      - setHeader: {name: finally, constant: ran}"""
)


@pytest.mark.parametrize(
    ("thrown", "handle", "status", "body"),
    [
        ("java.net.ConnectException", "yes", "COMPLETED", "io"),  # a subclass of IOException
        ("java.lang.NumberFormatException", "yes", "COMPLETED", "rt:java.lang.NumberFormatException: boom"),
        ("java.lang.NumberFormatException", "no", "FAILED", "x"),  # onWhen says no: not caught
        ("com.acme.CheckedThing", "yes", "FAILED", "x"),  # an unknown class is a checked Exception
    ],
)
def test_do_try_catches_by_superclass_and_on_when_and_always_finally(
    thrown: str, handle: str, status: str, body: str
) -> None:
    ex = run(TRY % thrown, "x", headers={"handle": handle})
    assert ex.status == status and ex.output_body == body
    assert ex.output_headers["finally"] == "ran"
    types = [p.processor_type for p in ex.processors]
    assert types[0] == "doTry" and types[-2:] == ["doFinally", "setHeader"]
    assert ("doCatch" in types) == (status == "COMPLETED")
    assert ex.processors[0].status == status
    assert ex.processors[1].status == "FAILED"  # the throwing step itself


#: A split whose item fails (stopOnException wraps it in a CamelExchangeException) inside a
#: doTry whose doCatch matches the inner type; the catch's steps follow.
_SPLIT_FAILS_THEN_CATCH = """doTry:
  steps:
    - split:
        tokenize: ","
        stopOnException: true
        steps:
          - throwException: {exceptionType: java.lang.IllegalStateException, message: inner}
  doCatch:
    - exception: [java.lang.IllegalStateException]
      steps:
"""


def test_do_catch_matches_the_cause_chain_and_a_catch_can_fail_again() -> None:
    # stopOnException wraps the item's failure in a CamelExchangeException; Camel's doCatch
    # walks the causes, so a catch of the inner type still matches.
    text = route(
        _SPLIT_FAILS_THEN_CATCH
        + "        - throwException: {exceptionType: java.lang.UnsupportedOperationException, message: again}"
    )
    ex = run(text, "a,b")
    assert ex.status == "FAILED" and ex.error_type == "java.lang.UnsupportedOperationException"
    assert [p.processor_type for p in ex.processors] == [
        "doTry",
        "split",
        "throwException",
        "doCatch",
        "throwException",
    ]


def test_do_catch_of_a_cause_sees_the_exchange_exception_as_caught() -> None:
    # CatchProcessor.process: EXCEPTION_CAUGHT is exchange.getException(), the wrapper, even
    # when the clause matched an exception further down its cause chain.
    text = route(_SPLIT_FAILS_THEN_CATCH + '        - setBody: {simple: "${exception.message}"}')
    ex = ok(run(text, "a,b"))
    assert ex.output_body.startswith("Multicast processing failed for number 0.")
    assert ex.output_properties["CamelExceptionCaught"].startswith("org.apache.camel.CamelExchangeException")


# --------------------------------------------------------------------------- beans


class Shop:
    def price(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "price": Decimal("1.50") * body["qty"]}

    def tag(self, exchange: Exchange) -> None:
        exchange.headers["tagged"] = exchange.body["qty"]

    def both(self, body: Any, headers: Any, properties: Any) -> str:
        return f"{body['qty']}/{headers['h']}/{properties['p']}"

    def refuse(self, exchange: Exchange) -> None:
        raise OutOfStock("nothing left")


class OutOfStock(ValueError):
    camel_type = "com.acme.OutOfStockException"


class NoType(KeyError):
    pass


def test_bean_binding_conventions_and_return_values() -> None:
    text = route(
        "unmarshal: {json: {}}",
        "bean: {ref: shop, method: tag}",
        "bean: {ref: shop, method: price}",
        "marshal: {json: {}}",
    )
    ex = ok(run(text, '{"qty": 3}', beans={"shop": Shop()}))
    assert json.loads(ex.output_body) == {"qty": 3, "price": 4.5}  # BigDecimal as a JSON number
    # tag returned None: the body stayed; marshal set Content-Type
    assert ex.output_headers == {"tagged": 3, "Content-Type": "application/json"}
    text = route("unmarshal: {json: {}}", "bean: {ref: shop, method: both}")
    ex = ok(run(text, '{"qty": 2}', headers={"h": "H"}, properties={"p": "P"}, beans={"shop": Shop()}))
    assert ex.output_body == "2/H/P"
    ex = ok(run(route("process: {ref: proc}"), "x", beans={"proc": lambda exchange: "ignored"}))
    assert ex.output_body == "x"  # a Processor's return value is not the body


def test_bean_exceptions_carry_camel_type_or_python_name_and_are_catchable() -> None:
    beans = {"shop": Shop(), "boom": lambda exchange: (_ for _ in ()).throw(NoType("k"))}
    ex = run(route("bean: {ref: shop, method: refuse}"), "x", beans=beans)
    assert ex.error_type == "com.acme.OutOfStockException" and ex.error_message == "nothing left"
    assert "test_processors.Shop.refuse(test_processors.py:" in ex.error_stack_trace
    ex = run(route("bean: {ref: boom}"), "x", beans=beans)
    assert ex.error_type == f"{NoType.__module__}.NoType"  # no camel_type: the Python class name
    # A doCatch may name the Python base class or a Java supertype of the camel_type.
    for name in ("ValueError", "java.lang.RuntimeException", "com.acme.OutOfStockException"):
        text = route(
            "doTry:\n  steps:\n    - bean: {ref: shop, method: refuse}\n"
            f"  doCatch:\n    - exception: [{name}]\n      steps:\n        - setBody: {{constant: caught}}"
        )
        assert ok(run(text, "x", beans=beans)).output_body == "caught", name


class OneMethod:
    def handle(self, body: Any) -> str:
        return f"handled {body}"


class Processorish:
    def process(self, exchange: Any) -> None:
        exchange.headers["seen"] = "yes"

    def describe(self) -> str:
        return "a Camel Processor in Python"


class Namespace:
    @staticmethod
    def shout(body: Any) -> str:
        return str(body).upper()

    def instance_only(self, body: Any) -> str:
        return str(body)


def test_a_bean_without_method_is_called_as_camels_bean_info_chooses() -> None:
    # BeanInfo: a bean with one public method gets it called when the step names none; the
    # engine refused it ("bean 'one' is not callable"). A process step calls a Processor's
    # process(exchange).
    beans = {"one": OneMethod(), "proc": Processorish(), "ns": Namespace}
    ex = ok(run(route("bean: {ref: one}"), "x", beans=beans))
    assert ex.output_body == "handled x"
    ex = ok(run(route("process: {ref: proc}"), "x", beans=beans))
    assert ex.output_headers == {"seen": "yes"} and ex.output_body == "x"
    # A class is a bean for its static methods only: calling it made an instance the body,
    # and an instance method failed on 'self' with advice to rename the parameter.
    assert ok(run(route("bean: {ref: ns, method: shout}"), "x", beans=beans)).output_body == "X"
    for step in ("bean: {ref: ns}", "bean: {ref: ns, method: instance_only}"):
        with pytest.raises(RouteLoadError, match="is the class Namespace, not an instance"):
            RouteSet.loads(route(step), beans)


def test_a_builtin_type_registered_as_a_bean_says_what_to_register_instead() -> None:
    # Walk finding: BEANS = {"lookup": dict} was told to register dict() (no bean either: the
    # route would call dict.get(exchange)) and got str's 47 methods listed as the hint.
    for bean, step in ((dict, "bean: {ref: lookup}"), (str, "bean: {ref: lookup, method: upper}")):
        with pytest.raises(RouteLoadError) as info:
            RouteSet.loads(route(step), {"lookup": bean})
        err = info.value
        assert err.code == "ROUTE_INVALID" and err.construct == "bean"
        assert f"is Python's built-in type {bean.__name__}, not a bean" in err.message
        assert "def handle(body)" in (err.hint or "") and "'lookup'" in (err.hint or "")
        assert "\n" not in str(err) and "capitalize" not in str(err) and "dict()" not in str(err)
    with pytest.raises(RouteLoadError, match="def handle\\(exchange\\)"):
        RouteSet.loads(route("process: {ref: p}"), {"p": list})
    with pytest.raises(RouteLoadError, match="aggregationStrategy 'merge' is Python's built-in type") as info:
        RouteSet.loads(
            route("split: {tokenize: ',', aggregationStrategy: merge, steps: []}"), {"merge": dict}
        )
    assert "def merge(old_body, new_body)" in (info.value.hint or "")
    # Your own class stays what it was: register an instance.
    with pytest.raises(RouteLoadError, match="is the class Namespace, not an instance"):
        RouteSet.loads(route("bean: {ref: ns}"), {"ns": Namespace})


def test_a_builtin_function_registered_as_a_bean_is_refused_at_load_in_one_line() -> None:
    # Walk finding: BEANS = {"size": len} loaded and failed each run with TypeError "object of
    # type 'Exchange' has no len()", and {"out": print} "succeeded" writing a blank line. A
    # built-in's parameters are positional-only, never named body, so bean_binding hands a
    # one-argument built-in the Exchange (str.upper too), calls time.time (no signature) with
    # it, print with nothing; no built-in is a usable bean, so all are refused at load.
    import operator
    import time

    cases = [
        (len, "bean: {ref: b}", "bean 'b' is Python's built-in function len, not a bean"),
        (print, "bean: {ref: b}", "bean 'b' is Python's built-in function print, not a bean"),
        (str.upper, "bean: {ref: b}", "bean 'b' is Python's built-in method str.upper, not a bean"),
        (time.time, "bean: {ref: b}", "bean 'b' is Python's built-in function time.time, not a bean"),
        ("text".upper, "bean: {ref: b}", "bean 'b' is Python's built-in method str.upper, not a bean"),
        (
            {"a": 1},
            "bean: {ref: b, method: get}",
            "bean 'b' method 'get' is Python's built-in method dict.get",
        ),
        (len, "process: {ref: b}", "bean 'b' is Python's built-in function len, not a bean"),
    ]
    for bean, step, message in cases:
        with pytest.raises(RouteLoadError) as info:
            RouteSet.loads(route(step), {"b": bean})
        err = info.value
        assert err.code == "ROUTE_INVALID" and message in err.message, (step, err.message)
        assert "register a function of your own that calls it" in err.message
        assert "'b': handle" in (err.hint or "") and "\n" not in str(err) and "Traceback" not in str(err)
    with pytest.raises(
        RouteLoadError, match="aggregationStrategy 'b' is Python's built-in function len"
    ) as info:
        RouteSet.loads(route("split: {tokenize: ',', aggregationStrategy: b, steps: []}"), {"b": len})
    assert "def merge(old_body, new_body)" in (info.value.hint or "")
    # Callable objects that merely come from the standard library are beans like any other:
    # attrgetter('body') is called with the Exchange and returns its body.
    assert (
        ok(
            run(
                route("bean: {ref: b}", "setBody: {simple: '${body}!'}"),
                "x",
                beans={"b": operator.attrgetter("body")},
            )
        ).output_body
        == "x!"
    )


def test_bean_without_registry_fails_at_run_time_with_no_such_bean() -> None:
    ex = run(route("bean: {ref: missing}"), "x")  # beans=None: nothing to check at load time
    assert ex.error_type == "org.apache.camel.NoSuchBeanException"


# --------------------------------------------------------------------------- others


def test_disabled_clauses_of_choice_and_do_try_as_camel_builds_them() -> None:
    # ChoiceReifier casts each when to FilterProcessor: a disabled one (a DisabledProcessor)
    # stops the route from starting, so it is refused at load time.
    disabled_when = route(
        """choice:
  when:
    - simple: "${body} == 'a'"
      disabled: true
      steps: [{setBody: {constant: A}}]
  otherwise:
    steps: [{setBody: {constant: other}}]"""
    )
    with pytest.raises(RouteLoadError, match="when clause cannot be disabled") as info:
        run(disabled_when, "a")
    assert info.value.line == 9 and info.value.construct == "when"  # the disabled: line
    # In a precondition choice the whens are only evaluated, the flag is never read.
    pre = disabled_when.replace("choice:\n", "choice:\n          precondition: true\n", 1)
    assert ok(run(pre, "a")).output_body == "A"
    # The otherwise's outputs are built directly: its disabled flag is ignored and it runs.
    other = route(
        """choice:
  when:
    - simple: "${body} == 'a'"
      steps: [{setBody: {constant: A}}]
  otherwise:
    disabled: true
    steps: [{setBody: {constant: other}}]"""
    )
    assert ok(run(other, "b")).output_body == "other"
    # TryReifier keeps a disabled doCatch/doFinally as a do-nothing DisabledProcessor: the
    # exception is not caught and the finally steps do not run, but the doTry is valid.
    only_disabled = route(
        """doTry:
  steps:
    - throwException: {exceptionType: java.lang.IllegalStateException, message: boom}
  doCatch:
    - exception: [java.lang.Exception]
      disabled: true
      steps: [{setBody: {constant: caught}}]
  doFinally:
    disabled: true
    steps: [{setHeader: {name: f, constant: ran}}]"""
    )
    ex = run(only_disabled, "x")
    assert (ex.status, ex.error_type, ex.output_headers) == ("FAILED", "java.lang.IllegalStateException", {})
    no_finally = only_disabled.split("  doFinally:")[0].rstrip() + "\n"
    assert run(no_finally, "x").error_message == "boom"  # loads: the doTry has a doCatch


def test_delay_uses_the_context_sleep_only() -> None:
    slept: list[float] = []
    ex = ok(
        run(
            route("delay: {constant: 250}", "delay: {simple: '${header.ms}'}"),
            "x",
            headers={"ms": "1500"},
            context=ctx(sleep=slept.append),
        )
    )
    assert slept == [0.25, 1.5]
    assert ex.processors[0].processor_type == "delay"
    ok(run(route("delay: 100000"), "x"))  # no sleep given: the sandbox never waits


def test_delay_converts_its_value_to_a_long() -> None:
    # Delayer.calculateDelay: delay.evaluate(exchange, Long.class). A Double is truncated by
    # Number.longValue(); the text "1.5" is not a Long and the conversion fails the exchange.
    slept: list[float] = []
    double = "setBody: {constant: {expression: 1.5, resultType: java.lang.Double}}"
    ok(run(route(double, "delay: {simple: '${body}'}"), "x", context=ctx(sleep=slept.append)))
    ok(
        run(
            route("delay: {simple: '${header.ms}'}"),
            "x",
            headers={"ms": 2.9},
            context=ctx(sleep=slept.append),
        )
    )
    assert slept == [0.001, 0.002]
    ex = run(route("delay: '1.5'"), "x", context=ctx(sleep=slept.append))
    assert (ex.status, ex.error_type) == ("FAILED", "org.apache.camel.TypeConversionException")
    assert 'NumberFormatException: For input string: "1.5"' in ex.error_message
    assert slept == [0.001, 0.002]


def test_stop_ends_the_exchange_including_the_caller() -> None:
    text = (
        route("to: direct:sub", "setBody: {constant: after}")
        + "- route:\n    id: sub\n    from:\n      uri: direct:sub\n      steps:\n        - stop: {}\n"
        "        - setBody: {constant: not-reached}\n"
    )
    ex = ok(run(text, "x"))
    assert ex.output_body == "x" and [p.processor_type for p in ex.processors] == ["to", "stop"]


def test_to_d_resolves_its_uri_per_exchange() -> None:
    ex = ok(run(route("toD: 'mock:${header.q}?x=1'"), "b", headers={"q": "blue"}))
    assert ex.processors[0].endpoint_uri == "mock:blue?x=1"
    text = route("toD: 'direct:${header.q}'")
    assert run(text, "b", headers={"q": "none"}).error_type == (
        "org.apache.camel.component.direct.DirectConsumerNotAvailableException"
    )


def test_jsonpath_functions_at_the_end_of_a_definite_path() -> None:
    # Jayway (Camel's jsonpath engine): "Functions can be invoked at the tail end of a path";
    # the aggregations give a Double, length() an Integer.
    doc = '{"lines": [3, 1, 2, "x"], "customer": {"id": 7, "tier": "gold"}, "none": []}'
    for path, expected in (
        ("$.lines.length()", 4),
        ("$.customer.length()", 2),
        ("$.lines.sum()", 6.0),
        ("$.lines.min()", 1.0),
        ("$.lines.max()", 3.0),
        ("$.lines.avg()", 2.0),
        ("$.lines.first()", 3),
        ("$.lines.last()", "x"),
        ("$.customer.keys()", '["id","tier"]'),  # a Set, captured as JSON text
    ):
        ex = ok(run(route(f'setHeader: {{name: v, jsonpath: "{path}"}}'), doc))
        assert ex.output_headers == {"v": expected}, path
    ex = ok(
        run(
            route('setHeader: {name: v, jsonpath: "$.lines.stddev()"}'), '{"lines": [2, 4, 4, 4, 5, 5, 7, 9]}'
        )
    )
    assert ex.output_headers == {"v": 2.0}
    ex = run(route('setHeader: {name: v, jsonpath: "$.none.sum()"}'), doc)
    assert ex.error_type == "org.apache.camel.ExpressionEvaluationException"
    assert "empty array" in ex.error_message


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("$.lines[*].length()", "function length() after an indefinite path"),
        ("$.lines.concat(1)", "function concat() with arguments is not supported"),
        ("$.lines.size()", "unknown function size()"),
        ("$.lines[?(@.tags.length() > 1)]", "function length() is not supported there"),
    ],
)
def test_unsupported_jsonpath_functions_fail_at_load_time_with_the_line(path: str, says: str) -> None:
    with pytest.raises(RouteLoadError, match=re.escape(says)) as info:
        RouteSet.loads(route("log: x", f'setHeader: {{name: v, jsonpath: "{path}"}}'), file="t.yaml")
    assert info.value.line == 7 and "jsonpath function" in str(info.value)


def test_a_jsonpath_filter_on_an_object_tests_the_object_itself_as_jayway_does() -> None:
    # Walk finding: `when: jsonpath: "$[?(@.kind == 'B')]"` never matched an object body. Jayway
    # (PredicatePathToken.evaluate) applies a filter on a map to the map itself, giving [map]
    # or []; jsonpath-ng tested the map's values (RFC 9535), so the branch was never taken.
    text = route(
        """choice:
  when:
    - jsonpath: "$[?(@.kind == 'B')]"
      steps: [{setHeader: {name: route, constant: b}}]
    - jsonpath: "$.customer[?(@.tier == 'gold')]"
      steps: [{setHeader: {name: route, constant: gold}}]
  otherwise:
    steps: [{setHeader: {name: route, constant: other}}]"""
    )

    def routed(body: dict[str, Any]) -> str:
        return ok(run(text, json.dumps(body))).output_headers["route"]

    assert routed({"kind": "B"}) == "b"
    assert routed({"kind": "A", "customer": {"tier": "gold"}}) == "gold"
    assert routed({"kind": "A", "customer": {"tier": "std"}}) == "other"
    one = json.dumps({"kind": "B", "items": [{"n": 1}, {"n": 2}]})
    assert ok(run(route("setBody: {jsonpath: \"$[?(@.kind == 'B')].kind\"}"), one)).output_body == '["B"]'
    # On a list each element is tested, as before; a deep scan visits each object once.
    assert ok(run(route('setBody: {jsonpath: "$.items[?(@.n > 1)]"}'), one)).output_body == '[{"n":2}]'
    assert ok(run(route('setBody: {jsonpath: "$..[?(@.n)]"}'), one)).output_body == '[{"n":1},{"n":2}]'


def test_jsonpath_missing_definite_path_fails_unless_suppressed() -> None:
    ex = run(route("setHeader: {name: c, jsonpath: '$.customer.id'}"), '{"order": 1}')
    assert ex.error_type == "org.apache.camel.ExpressionEvaluationException"
    assert "No results for path" in ex.error_message
    ex = ok(
        run(
            route("setHeader: {name: c, jsonpath: {expression: '$.customer.id', suppressExceptions: true}}"),
            "{}",
        )
    )
    assert ex.output_headers == {"c": None}
    ex = ok(
        run(
            route("setHeader: {name: c, jsonpath: '$.lines[?(@.qty > 1)].sku'}"),
            '{"lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]}',
        )
    )
    assert ex.output_headers == {"c": '["b"]'}  # an indefinite path gives a list
    ex = ok(
        run(
            route("filter: {jsonpath: '$.lines[?(@.qty > 5)]', steps: [{setBody: {constant: big}}]}"),
            '{"lines": [{"qty": 1}]}',
        )
    )
    assert ex.output_body != "big"  # an empty result is false as a predicate


@pytest.mark.parametrize(
    ("predicate", "body", "matched"),
    [
        ("jsonpath: '$.meta'", '{"meta": {}}', True),
        ("simple: '${body[meta]}'", '{"meta": {}}', True),
        ("simple: '${body[items]}'", '{"items": []}', False),
        ("jsonpath: '$.items'", '{"items": []}', False),
    ],
)
def test_an_empty_map_is_true_as_a_predicate_an_empty_list_false(
    predicate: str, body: str, matched: bool
) -> None:
    # ObjectHelper.evaluateValuePredicate: an empty java.util.Collection is false; a Map is no
    # Collection, so an empty one is true like any non-null value. The engine read {} as false.
    text = route(
        "unmarshal: {json: {}}", f"filter: {{{predicate}, steps: [{{setBody: {{constant: matched}}}}]}}"
    )
    ex = ok(run(text, body))
    assert (ex.output_body == "matched") is matched


def test_a_jsonpath_predicate_on_a_missing_path_fails_unless_suppressed() -> None:
    # ExpressionAdapter.matches evaluates, and JsonPathExpression.evaluate throws for a missing
    # definite path: a when on an optional field needs suppressExceptions (the JSONPath page's
    # "Suppress exceptions" example). The engine read it as false and took the otherwise.
    choice = (
        "choice: {{when: [{{jsonpath: {when}, steps: [{{setBody: {{constant: middle}}}}]}}], "
        "otherwise: {{steps: [{{setBody: {{constant: other}}}}]}}}}"
    )
    ex = run(route(choice.format(when="'$.person.middlename'")), '{"person": {"name": "Ann"}}')
    assert ex.status == "FAILED" and ex.error_type == "org.apache.camel.ExpressionEvaluationException"
    assert "No results for path: $.person.middlename" in ex.error_message
    suppressed = "{expression: '$.person.middlename', suppressExceptions: true}"
    ex = ok(run(route(choice.format(when=suppressed)), '{"person": {"name": "Ann"}}'))
    assert ex.output_body == "other"
    ex = ok(run(route(choice.format(when="'$.person.middlename'")), '{"person": {"middlename": "B"}}'))
    assert ex.output_body == "middle"


def test_a_route_that_calls_itself_for_ever_fails_with_a_stack_overflow() -> None:
    text = "- route:\n    id: r\n    from:\n      uri: direct:r\n      steps:\n        - to: direct:r\n"
    ex = run(text, "x")
    assert ex.status == "FAILED" and ex.error_type == "java.lang.StackOverflowError"


def test_loop_follows_camels_loop_processor() -> None:
    # LoopProcessor.LoopState: CamelLoopSize is set on the exchange before the first turn.
    ex = ok(run(route("loop: {constant: 0, steps: [{setBody: {constant: never}}]}"), "x"))
    assert ex.output_properties["CamelLoopSize"] == 0
    # The count is the value as a String, then a mandatory Integer.
    ex = run(route("loop: {simple: '${header.n}', steps: [{setBody: {constant: y}}]}"), "x")
    assert ex.status == "FAILED"
    assert ex.error_type == "org.apache.camel.NoTypeConversionAvailableException"
    ex = run(
        route("loop: {simple: '${header.n}', steps: [{setBody: {constant: y}}]}"), "x", headers={"n": 2.0}
    )
    assert ex.error_type == "org.apache.camel.TypeConversionException"
    # A doWhile loop stops on a route stop (PipelineHelper.continueProcessing).
    ex = ok(
        run(
            route(
                "loop: {doWhile: true, simple: '${body} != \"done\"', "
                "steps: [{setBody: {simple: '${body}a'}}, {stop: {}}]}",
                "setBody: {constant: after}",
            ),
            "x",
        )
    )
    assert ex.output_body == "xa"
    # copy: each turn is ExchangeHelper.createCopy(exchange, true), keeping the exchange id.
    ex = ok(
        run(
            route(
                "loop: {constant: 2, copy: true, steps: [{setHeader: {name: id, simple: '${exchangeId}'}}]}"
            ),
            "x",
        )
    )
    assert ex.output_headers["id"] == ex.exchange_id
    assert ex.output_properties["CamelLoopSize"] == 2


def test_remove_headers_and_properties_match_as_pattern_helper() -> None:
    # PatternHelper.matchPattern: exact or trailing-* prefix or whole-name Java regex, all
    # case-insensitive; a * elsewhere is regex syntax ("*Id" is no valid regex: no match).
    headers = {"CamelHttpUri": "u", "orderId": "1", "customerId": "2", "Keep": "k", "Kep": "x"}
    ex = ok(run(route("removeHeaders: {pattern: '*Id'}"), "x", headers=headers))
    assert set(ex.output_headers) == set(headers)
    ex = ok(run(route("removeHeaders: {pattern: 'camelhttp*'}"), "x", headers=headers))
    assert "CamelHttpUri" not in ex.output_headers
    ex = ok(run(route("removeHeaders: {pattern: 'ke+p'}"), "x", headers=headers))
    assert "Keep" not in ex.output_headers and "Kep" not in ex.output_headers
    ex = ok(run(route("removeHeaders: {pattern: '.*', excludePattern: 'ORDER*'}"), "x", headers=headers))
    assert set(ex.output_headers) == {"orderId"}
    props = {"tmpA": 1, "TMPb": 2, "keep": 3}
    ex = ok(run(route("removeProperties: {pattern: 'tmp*'}"), "x", properties=props))
    assert set(ex.output_properties) == {"keep"}
    ex = ok(run(route("removeProperties: {pattern: 'TMPA'}"), "x", properties=props))
    assert set(ex.output_properties) == {"TMPb", "keep"}


def test_remove_headers_rejects_a_regex_python_reads_differently() -> None:
    with pytest.raises(RouteLoadError) as err:
        RouteSet.loads(route("removeHeaders: {pattern: '[a-z[0-9]]'}"), file="t.yaml")
    assert err.value.line == 6 and "nested character classes" in str(err.value)


def test_set_property_null_removes_it_and_names_may_be_simple() -> None:
    # AbstractExchange.setProperty: a null value removes the property.
    ex = ok(run(route("setProperty: {name: p, simple: '${header.missing}'}"), "x", properties={"p": 1}))
    assert "p" not in ex.output_properties
    # A header keeps a null value (DefaultMessage.setHeader puts it).
    ex = ok(run(route("setHeader: {name: h, simple: '${header.missing}'}"), "x"))
    assert ex.output_headers == {"h": None}
    # Set{Header,Property}Reifier: a name with a Simple function is evaluated.
    ex = ok(
        run(
            route(
                "setHeader: {name: 'x-${header.kind}', constant: v}",
                "setProperty: {name: '${body}', constant: w}",
            ),
            "pb",
            headers={"kind": "a"},
        )
    )
    assert ex.output_headers["x-a"] == "v" and ex.output_properties["pb"] == "w"


def test_marshal_json_sets_content_type_and_pretty_prints_as_jackson() -> None:
    # AbstractJacksonDataFormat.marshal: Content-Type application/json unless contentTypeHeader: false.
    ex = ok(run(route("unmarshal: {json: {}}", "marshal: {json: {}}"), '{"a": 1}'))
    assert ex.output_headers == {"Content-Type": "application/json"}
    ex = ok(run(route("unmarshal: {json: {}}", "marshal: {json: {contentTypeHeader: false}}"), '{"a": 1}'))
    assert ex.output_headers == {}
    # prettyPrint is Jackson's DefaultPrettyPrinter: "key" : value, arrays inline, { } and [ ].
    ex = ok(
        run(
            route("unmarshal: {json: {}}", "marshal: {json: {prettyPrint: true}}"),
            '{"a": 1, "b": [1, {"c": {}}, []], "d": {"e": "x"}}',
        )
    )
    assert ex.output_body == (
        '{\n  "a" : 1,\n  "b" : [ 1, {\n    "c" : { }\n  }, [ ] ],\n  "d" : {\n    "e" : "x"\n  }\n}'
    )
