"""What the route's error handler leaves on a failed exchange, against Camel 4's source.

Camel's DefaultErrorHandler (RedeliveryErrorHandler.SimpleTask, no onException, no redelivery)
stores the exception in CamelExceptionCaught and the route it failed in in CamelFailureRouteId;
ProcessorReifier wraps no processor of a doTry/doCatch/doFinally (the doTry included) in it;
CatchProcessor and FinallyProcessor set the same properties themselves.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from moat_nb.model import Execution, Payload
from moat_nb.sandbox.camel import FixedClock, RouteSet, RunContext

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
BOOM = "{exceptionType: java.lang.IllegalStateException, message: 'boom ${body}'}"


def run(yaml_text: str, body: str = "x", beans: dict[str, Any] | None = None) -> Execution:
    routes = RouteSet.loads(yaml_text, beans, file="t.yaml")
    context = RunContext(now=FixedClock(T0), rng=random.Random(7))
    return routes.run("r", Payload(headers={}, body=body, properties={}), context=context)


def route(*steps: str, route_id: str = "r", uri: str = "direct:r") -> str:
    body = "\n".join("      - " + s.replace("\n", "\n        ") for s in steps)
    return f"- route:\n    id: {route_id}\n    from:\n      uri: {uri}\n      steps:\n{body}\n"


def record(ex: Execution, processor_id: str) -> Any:
    (found,) = [p for p in ex.processors or () if p.processor_id == processor_id]
    return found


def test_a_failed_route_carries_the_caught_exception_and_its_route_id() -> None:
    # The gap: only a failed split item got CamelExceptionCaught; a route that failed anywhere
    # else ended with neither property, where Camel's error handler sets both on the exchange.
    ex = run(route("filter:\n  id: f\n  simple: 'true'\n  steps:\n    - throwException: " + BOOM))
    assert ex.status == "FAILED" and ex.error_message == "boom x"
    assert ex.output_properties["CamelExceptionCaught"] == "java.lang.IllegalStateException: boom x"
    assert ex.output_properties["CamelFailureRouteId"] == "r"
    # The handler wraps the failed processor: its own output does not show them yet, the
    # enclosing filter's does.
    assert "CamelExceptionCaught" not in record(ex, "throwException1").properties
    assert record(ex, "f").properties["CamelFailureRouteId"] == "r"
    # No CamelToEndpoint is modelled, so no CamelFailureEndpoint is made up.
    assert "CamelFailureEndpoint" not in ex.output_properties


def test_a_failure_in_a_sub_route_keeps_the_sub_routes_id() -> None:
    # The sub-route's own error handler handles it first (getAtRouteId: the sub-route) and marks
    # the exchange failure-handled, so the caller's leaves it alone.
    text = route("to: {id: call, uri: 'direct:sub'}") + route(
        "throwException: " + BOOM, route_id="sub", uri="direct:sub"
    )
    ex = run(text)
    assert ex.status == "FAILED"
    assert ex.output_properties["CamelFailureRouteId"] == "sub"
    assert record(ex, "call").properties["CamelFailureRouteId"] == "sub"


def test_no_error_handler_runs_for_a_do_try_a_do_finally_sets_the_properties_itself() -> None:
    # ProcessorReifier: "is part of doTry .. doCatch .. doFinally so no error handler is applied",
    # the doTry itself included: a failure no doCatch matches leaves a top-level doTry with no
    # error handler to record it.
    uncaught = "doTry:\n  steps:\n    - throwException: " + BOOM
    uncaught += "\n  doCatch:\n    - exception: [java.io.IOException]\n      steps: [{to: mock:io}]"
    ex = run(route(uncaught))
    assert ex.status == "FAILED"
    assert "CamelExceptionCaught" not in ex.output_properties
    assert "CamelFailureRouteId" not in ex.output_properties
    # Nested in a filter, the filter's error handler handles what leaves the doTry.
    ex = run(route("filter:\n  simple: 'true'\n  steps:\n    - " + uncaught.replace("\n", "\n      ")))
    assert ex.output_properties["CamelExceptionCaught"] == "java.lang.IllegalStateException: boom x"
    # FinallyProcessor moves the pending exception to CamelExceptionCaught (so the doFinally's
    # steps read it) with CamelFailureRouteId, and puts it back after them.
    with_finally = (
        uncaught
        + "\n  doFinally:\n    id: fin\n    steps:\n"
        + "      - setHeader: {name: seen, simple: '${exception.message}'}"
    )
    ex = run(route(with_finally))
    assert ex.status == "FAILED" and ex.error_message == "boom x"
    assert ex.output_headers["seen"] == "boom x"
    assert "CamelExceptionCaught" not in record(ex, "fin").input_properties
    assert ex.output_properties["CamelExceptionCaught"] == "java.lang.IllegalStateException: boom x"
    assert ex.output_properties["CamelFailureRouteId"] == "r"


def test_do_catch_sets_the_failure_route_and_a_do_finally_after_it_removes_it() -> None:
    caught = "doTry:\n  steps:\n    - throwException: " + BOOM
    caught += "\n  doCatch:\n    - id: c\n      exception: [java.lang.IllegalStateException]\n"
    caught += "      steps: [{to: mock:c}]"
    ex = run(route(caught))
    assert ex.status == "COMPLETED"
    assert record(ex, "c").properties["CamelFailureRouteId"] == "r"
    assert ex.output_properties["CamelFailureRouteId"] == "r"
    # FinallyAsyncCallback: no pending exception, so CamelFailureRouteId goes; the caught
    # exception stays.
    ex = run(route(caught + "\n  doFinally: {steps: [{to: mock:f}]}"))
    assert ex.status == "COMPLETED"
    assert "CamelFailureRouteId" not in ex.output_properties
    assert ex.output_properties["CamelExceptionCaught"] == "java.lang.IllegalStateException: boom x"


def test_a_handled_exchange_stays_handled_after_a_do_catch() -> None:
    # The failure-handled mark a sub-route's error handler sets is not cleared by a doCatch
    # (CatchProcessor resets only redeliveryExhausted), so a later failure in the caller finds
    # the exchange handled (SimpleTask.isFailedOrBridged) and its error handler changes nothing.
    text = route(
        "doTry:\n  steps: [{to: 'direct:sub'}]\n  doCatch:\n    - exception: [java.lang.Exception]\n"
        "      steps: [{to: mock:c}]",
        "throwException: {exceptionType: java.lang.IllegalArgumentException, message: second}",
    ) + route("throwException: " + BOOM, route_id="sub", uri="direct:sub")
    ex = run(text)
    assert ex.status == "FAILED" and ex.error_message == "second"
    assert ex.output_properties["CamelExceptionCaught"] == "java.lang.IllegalStateException: boom x"
    assert ex.output_properties["CamelFailureRouteId"] == "r"  # the doCatch's


def test_a_failed_split_item_and_a_failed_split_carry_the_failure_route() -> None:
    split = "split:\n  id: s\n  tokenize: ','%s\n  steps:\n    - filter:\n        id: f\n"
    split += "        simple: \"${body} == 'b'\"\n        steps:\n          - throwException: " + BOOM
    # The failed item's own error handler: both properties on the copy.
    ex = run(route(split % ""), "a,b,c")
    assert ex.status == "FAILED" and ex.error_message == "boom b"
    (item,) = [p for p in ex.processors or () if p.processor_id == "f" and p.iteration == 1]
    assert item.properties["CamelFailureRouteId"] == "r"
    # Without a strategy the original gets only CamelExceptionCaught from the items
    # (UseOriginalAggregationStrategy.checkCaughtException); the split's own error handler then
    # sets CamelFailureRouteId on it, after the split's record.
    assert "CamelFailureRouteId" not in record(ex, "s").properties
    assert record(ex, "s").properties["CamelExceptionCaught"] == "java.lang.IllegalStateException: boom b"
    assert ex.output_properties["CamelFailureRouteId"] == "r"
    # shareUnitOfWork's propagateFailure copies the failed copy's CamelFailureRouteId onto the
    # result (GroupedBody's: the first copy, which did not fail), so the split's record has it.
    share = "\n  shareUnitOfWork: true\n  aggregationStrategy: GroupedBodyAggregationStrategy"
    ex = run(route(split % share), "a,b,c")
    assert ex.status == "FAILED" and ex.error_message == "boom b"
    assert record(ex, "s").properties["CamelFailureRouteId"] == "r"
    assert record(ex, "s").properties["CamelExceptionCaught"] == "java.lang.IllegalStateException: boom b"


def test_a_do_finally_that_fails_while_an_exception_is_pending_keeps_the_pending_one() -> None:
    # FinallyProcessor.FinallyAsyncCallback.done puts the pending exception back on the exchange
    # (exchange.setException(exception)) whatever its steps did, so one a doFinally step throws
    # is lost: the doTry fails with the exception its steps raised. The engine let the new one
    # replace it.
    uncaught = "doTry:\n  id: t\n  steps:\n    - throwException: " + BOOM
    uncaught += "\n  doCatch:\n    - exception: [java.io.IOException]\n      steps: [{to: mock:io}]"
    uncaught += "\n  doFinally:\n    id: fin\n    steps:\n"
    uncaught += "      - throwException: {id: again, exceptionType: java.io.IOException, message: again}"
    ex = run(route(uncaught, "setHeader: {id: after, name: a, constant: x}"))
    assert ex.status == "FAILED"
    assert (ex.error_type, ex.error_message) == ("java.lang.IllegalStateException", "boom x")
    assert record(ex, "again").status == "FAILED"
    assert record(ex, "fin").status == "COMPLETED"  # as when its steps do not fail
    assert record(ex, "t").error_type == "java.lang.IllegalStateException"
    assert ex.output_properties["CamelExceptionCaught"] == "java.lang.IllegalStateException: boom x"
    assert not [p for p in ex.processors or () if p.processor_id == "after"]
    # Without a pending exception (a doCatch handled it) the doFinally's failure is the doTry's.
    handled = uncaught.replace("java.io.IOException]", "java.lang.IllegalStateException]", 1)
    ex = run(route(handled))
    assert (ex.error_type, ex.error_message) == ("java.io.IOException", "again")
    assert record(ex, "fin").status == "FAILED"


def test_a_do_try_marks_its_block_and_a_do_catch_the_failure_handled_until_the_do_try_ends() -> None:
    # TryProcessor.TryState sets TRY_ROUTE_BLOCK ("TryRouteBlock": Exchange.TRY_ROUTE_BLOCK has
    # no Camel prefix) before each of its processors and removes it when done; CatchProcessor
    # sets EXCEPTION_HANDLED ("CamelExceptionHandled") to true, and TryState puts back the value
    # it found (none here). The engine set neither.
    block, handled = "TryRouteBlock", "CamelExceptionHandled"
    text = route(
        "doTry:\n  id: t\n  steps:\n    - to: {id: call, uri: 'direct:sub'}\n"
        "  doCatch:\n    - id: c\n      exception: [java.lang.IllegalStateException]\n"
        "      steps: [{to: {id: in-catch, uri: mock:c}}]\n"
        "  doFinally: {id: fin, steps: [{to: {id: in-finally, uri: mock:f}}]}",
        "setHeader: {id: after, name: a, constant: x}",
    ) + route("log: {id: in-sub, message: hi}", "throwException: " + BOOM, route_id="sub", uri="direct:sub")
    ex = run(text)
    assert ex.status == "COMPLETED"
    assert block not in record(ex, "t").input_properties
    # A sub-route called from the doTry runs on the same exchange: it sees the mark too.
    assert record(ex, "call").input_properties[block] is True
    assert record(ex, "in-sub").properties[block] is True
    assert handled not in record(ex, "c").input_properties
    assert record(ex, "c").properties[handled] is True
    assert record(ex, "in-catch").input_properties[handled] is True
    assert record(ex, "in-catch").input_properties[block] is True
    assert record(ex, "fin").input_properties[handled] is True
    assert record(ex, "in-finally").properties[block] is True
    for props in (record(ex, "t").properties, record(ex, "after").input_properties, ex.output_properties):
        assert block not in props and handled not in props
    # The doFinally's and the doTry's own outputs are taken after they change the properties
    # (FinallyAsyncCallback removed CamelFailureRouteId: no failure was pending).
    assert "CamelFailureRouteId" not in record(ex, "fin").properties
    assert "CamelFailureRouteId" not in record(ex, "t").properties


def test_a_nested_do_try_resets_and_restores_the_handled_mark_and_ends_the_block() -> None:
    inner = (
        "doTry:\n  id: inner\n  steps:\n"
        "    - throwException: {exceptionType: java.io.IOException, message: io}\n"
        "  doCatch:\n    - id: inner-c\n      exception: [java.io.IOException]\n"
        "      steps: [{to: {id: inner-step, uri: mock:i}}]"
    )
    # In an outer doCatch: the inner doTry starts without CamelExceptionHandled (so its own
    # doCatch can handle) and puts the outer's true back when it ends.
    outer = (
        "doTry:\n  id: outer\n  steps:\n    - throwException: " + BOOM + "\n"
        "  doCatch:\n    - id: outer-c\n      steps:\n        - " + inner.replace("\n", "\n          ") + "\n"
        "        - to: {id: outer-after, uri: mock:o}"
    )
    ex = run(route(outer))
    assert ex.status == "COMPLETED"
    assert record(ex, "inner").input_properties["CamelExceptionHandled"] is True
    assert "CamelExceptionHandled" not in record(ex, "inner-c").input_properties
    assert record(ex, "inner-step").input_properties["CamelExceptionCaught"] == "java.io.IOException: io"
    assert record(ex, "outer-after").input_properties["CamelExceptionHandled"] is True
    # The inner doTry's end removes TryRouteBlock (it does not restore it), so the outer
    # doCatch's steps after it run without it.
    assert "TryRouteBlock" not in record(ex, "outer-after").input_properties
    assert "TryRouteBlock" not in ex.output_properties


def test_a_split_in_a_sub_route_called_from_a_do_try_runs_its_items_without_an_error_handler() -> None:
    # MulticastProcessor.wrapInErrorHandler skips the per-item error handler when the item's
    # copy carries TRY_ROUTE_BLOCK, a property the doTry sets on the exchange at run time, so
    # a split in a direct: sub-route called from a doTry skips it too (the engine looked for a
    # doTry in the split's own route only). It shows on a failure no step's own error handler
    # took: one leaving a doTry whose doCatch does not match. Without the item's handler, the
    # failed copy keeps the CamelExceptionCaught an earlier doCatch left, and shareUnitOfWork
    # copies that onto the split's result.
    split = """split:
  id: s
  tokenize: ','
  aggregationStrategy: GroupedBodyAggregationStrategy
  shareUnitOfWork: true
  steps:
    - doTry:
        steps:
          - throwException: {exceptionType: java.lang.IllegalArgumentException, message: 'caught ${body}'}
        doCatch:
          - exception: [java.lang.IllegalArgumentException]
            steps: [{to: mock:caught}]
    - doTry:
        steps:
          - filter:
              simple: "${body} starts with 'bad'"
              steps:
                - throwException: {exceptionType: java.lang.IllegalStateException, message: 'no ${body}'}
        doCatch:
          - exception: [java.io.IOException]
            steps: [{to: mock:io}]"""
    sub = route(split, route_id="sub", uri="direct:sub")
    # Called plainly, the item's error handler stores the item's own failure.
    ex = run(route("to: {id: call, uri: 'direct:sub'}") + sub, "a,bad1,c")
    assert ex.status == "FAILED" and ex.error_message == "no bad1"
    assert record(ex, "s").properties["CamelExceptionCaught"] == "java.lang.IllegalStateException: no bad1"
    # Called from a doTry, none runs: the doCatch's exception stays.
    caller = "doTry:\n  steps: [{to: {id: call, uri: 'direct:sub'}}]\n  doFinally: {steps: [{to: mock:f}]}"
    ex = run(route(caller) + sub, "a,bad1,c")
    assert ex.status == "FAILED" and ex.error_message == "no bad1"
    assert (
        record(ex, "s").properties["CamelExceptionCaught"]
        == "java.lang.IllegalArgumentException: caught bad1"
    )
