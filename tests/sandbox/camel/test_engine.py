"""The engine: trace shape, capture modes, truncation, failures, replay stubs, determinism."""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moat_nb.errors import RouteError, RouteLoadError
from moat_nb.model import Execution, Payload, ProcessorRecord
from moat_nb.sandbox.camel import EndpointInfo, Exchange, FixedClock, RouteSet, RunContext
from moat_nb.sandbox.camel.trace import _record

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def ctx(seed: int = 7) -> RunContext:
    return RunContext(now=FixedClock(T0), rng=random.Random(seed))


# An order route: a direct: sub-route, a doTry around a split whose items go through a choice,
# external endpoints of both kinds.
ORDERS = """
- route:
    id: intake
    from:
      uri: platform-http:/orders
      steps:
        - unmarshal: {json: {}}
        - to: direct:enrich
        - doTry:
            id: guard
            steps:
              - split:
                  id: lines
                  jsonpath: "$.lines[*]"
                  aggregationStrategy: collect
                  # A POJO strategy is called for the first line (old=None) only with this,
                  # as Camel's AggregationStrategyBeanAdapter is.
                  aggregationStrategyMethodAllowNull: true
                  # A POJO strategy's result is the first line's exchange, so a later line's
                  # failure would be lost (as in Camel); sharing the unit of work propagates it.
                  shareUnitOfWork: true
                  steps:
                    - choice:
                        when:
                          - simple: "${body[qty]} > 10"
                            steps:
                              - setBody: {simple: "bulk:${body[sku]}"}
                          - simple: "${body[qty]} < 1"
                            steps:
                              - throwException:
                                  exceptionType: java.lang.IllegalArgumentException
                                  message: "bad quantity ${body[qty]}"
                        otherwise:
                          steps:
                            - setBody: {simple: "unit:${body[sku]}"}
            doCatch:
              - exception: [java.lang.IllegalArgumentException]
                steps:
                  - setBody: {constant: rejected}
            doFinally:
              steps:
                - setHeader: {name: checked, constant: "yes"}
        - marshal: {json: {}}
        - to: {id: publish, uri: "kafka:orders"}
- route:
    id: enrich
    from:
      uri: direct:enrich
      steps:
        - setProperty: {name: order, simple: "${body}"}
        - toD: {id: crm, uri: "http://crm/api/customers?id=${body[customer]}"}
        - unmarshal: {json: {}}
        - setHeader: {name: tier, simple: "${body[tier]}"}
        - setBody: {simple: "${exchangeProperty.order}"}
        - removeProperty: order
"""


def crm(exchange: Exchange) -> dict[str, Any]:
    return {"tier": "gold" if exchange.properties["order"]["customer"] == "C1" else "std"}


def collect(old: list[Any] | None, new: Any) -> list[Any]:
    return [*(old or []), new]


@pytest.fixture(scope="module")
def orders() -> RouteSet:
    return RouteSet.loads(
        ORDERS, {"collect": collect}, endpoints={"http://crm/api/customers": crm}, version="v9"
    )


def order(*qtys: int, customer: str = "C1") -> Payload:
    lines = [{"sku": f"S{i}", "qty": q} for i, q in enumerate(qtys)]
    return Payload(
        headers={"h": "1"}, body=json.dumps({"customer": customer, "lines": lines}), properties={"p": 2}
    )


def by_id(ex: Execution, pid: str) -> list[ProcessorRecord]:
    return [p for p in ex.processors or () if p.processor_id == pid]


# --------------------------------------------------------------------------- the trace


def test_trace_of_choice_inside_split_inside_do_try(orders: RouteSet) -> None:
    ex = orders.run("intake", order(12, 3), context=ctx())
    assert ex.status == "COMPLETED"
    assert json.loads(ex.output_body) == ["bulk:S0", "unit:S1"]
    procs = ex.processors
    assert [p.seq for p in procs] == list(range(1, len(procs) + 1))
    shape = [(p.processor_id, p.parent_seq, p.depth, p.iteration, p.route_id) for p in procs]
    assert shape == [
        ("unmarshal1", None, 0, 0, "intake"),
        ("to1", None, 0, 0, "intake"),
        ("setProperty1", 2, 1, 0, "enrich"),
        ("crm", 2, 1, 0, "enrich"),
        ("unmarshal2", 2, 1, 0, "enrich"),
        ("setHeader2", 2, 1, 0, "enrich"),
        ("setBody4", 2, 1, 0, "enrich"),
        ("removeProperty1", 2, 1, 0, "enrich"),
        ("guard", None, 0, 0, "intake"),
        ("lines", 9, 1, 0, "intake"),
        ("choice1", 10, 2, 0, "intake"),
        ("when1", 11, 3, 0, "intake"),
        ("setBody1", 12, 4, 0, "intake"),
        ("choice1", 10, 2, 1, "intake"),
        ("otherwise1", 14, 3, 1, "intake"),
        ("setBody2", 15, 4, 1, "intake"),
        ("doFinally1", 9, 1, 0, "intake"),
        ("setHeader1", 17, 2, 0, "intake"),
        ("marshal1", None, 0, 0, "intake"),
        ("publish", None, 0, 0, "intake"),
    ]
    # Tree form on the wire: the sub-route nests under the `to` that called it.
    tree = ex.tree()
    assert [n["processorId"] for n in tree[1]["children"]][:2] == ["setProperty1", "crm"]
    assert ex.processor_count == len(procs) and ex.route_version == "v9"


def test_failure_in_an_iteration_is_caught_and_finally_runs(orders: RouteSet) -> None:
    ex = orders.run("intake", order(2, 0, 5), context=ctx())
    assert ex.status == "COMPLETED" and ex.output_body == '"rejected"'
    assert ex.output_headers["checked"] == "yes"
    (thrown,) = [p for p in ex.processors if p.processor_type == "throwException"]
    assert (thrown.status, thrown.iteration, thrown.error_type) == (
        "FAILED",
        1,
        "java.lang.IllegalArgumentException",
    )
    assert thrown.error_message == "bad quantity 0"
    # The failure went up through when -> choice -> split; the doTry handled it.
    failed = [p.processor_id for p in ex.processors if p.status == "FAILED"]
    assert failed == ["lines", "choice1", "when2", "throwException1"]
    assert by_id(ex, "guard")[0].status == "COMPLETED"
    # The third line still ran (no stopOnException) before the split failed.
    assert [p.iteration for p in by_id(ex, "choice1")] == [0, 1, 2]


def test_the_do_catch_is_what_sets_camel_exception_caught(orders: RouteSet) -> None:
    # CatchProcessor.process sets EXCEPTION_CAUGHT and clears the exception, so the property
    # appears in the doCatch's output, not already in its input (lineage credited the doTry).
    ex = orders.run("intake", order(2, 0, 5), context=ctx())
    (catch,) = [p for p in ex.processors if p.processor_type == "doCatch"]
    assert "CamelExceptionCaught" not in (catch.input_properties or {})
    assert "bad quantity 0" in catch.properties["CamelExceptionCaught"]
    first_step = next(p for p in ex.processors if p.parent_seq == catch.seq)
    assert "bad quantity 0" in first_step.input_properties["CamelExceptionCaught"]


def test_uncaught_failure_fails_the_execution_with_a_camel_stack_trace() -> None:
    routes = RouteSet.loads(
        """
- route:
    id: a
    from:
      uri: direct:a
      steps:
        - to: direct:b
- route:
    id: b
    from:
      uri: direct:b
      steps:
        - throwException: {exceptionType: java.lang.IllegalStateException, message: "no ${body}"}
""",
        file="routes/ab.yaml",
    )
    ex = routes.run("a", Payload(body="way"), context=ctx())
    assert (ex.status, ex.error_type, ex.error_message) == (
        "FAILED",
        "java.lang.IllegalStateException",
        "no way",
    )
    assert ex.error_stack_trace.splitlines() == [
        "java.lang.IllegalStateException: no way",
        "\tat b.throwException1(ab.yaml:13)",
        "\tat a.to1(ab.yaml:7)",
    ]
    assert [p.status for p in ex.processors] == ["FAILED", "FAILED"]
    assert ex.output_body == "way"


def test_run_never_raises_for_route_failures_but_does_for_caller_mistakes(orders: RouteSet) -> None:
    bad = orders.run("intake", Payload(body="{not json"), context=ctx())
    assert bad.status == "FAILED" and bad.error_type == "com.fasterxml.jackson.core.JsonParseException"
    with pytest.raises(RouteError) as err:
        orders.run("nope", order(1))
    assert "intake" in str(err.value) and "enrich" in str(err.value)
    with pytest.raises(RouteError):
        orders.run("intake", order(1), capture="EVERYTHING")


# --------------------------------------------------------------------------- capture


def test_processor_capture_has_payloads_before_and_after_each_step(orders: RouteSet) -> None:
    ex = orders.run("intake", order(12), context=ctx())
    (tier,) = by_id(ex, "setHeader2")
    assert "tier" not in tier.input_headers and tier.output_headers["tier"] == "gold"
    (prop,) = by_id(ex, "setProperty1")
    assert "order" not in prop.input_properties and json.loads(prop.properties["order"])["customer"] == "C1"
    # Consecutive steps: one's output is the next one's input.
    for a, b in zip(ex.processors, ex.processors[1:], strict=False):
        if b.parent_seq == a.parent_seq and a.route_id == b.route_id and b.seq == a.seq + 1:
            assert (a.output_body, a.output_headers) == (b.input_body, b.input_headers)
    assert (
        ex.input_body == order(12).body and ex.input_headers == {"h": "1"} and ex.input_properties == {"p": 2}
    )
    assert ex.start_payload == order(12)


def test_route_capture_keeps_entry_and_exit_and_the_tree_without_payloads(orders: RouteSet) -> None:
    full = orders.run("intake", order(12, 3), context=ctx())
    light = orders.run("intake", order(12, 3), capture="ROUTE", context=ctx())
    assert light.capture_mode == "ROUTE" and full.capture_mode == "PROCESSOR"
    assert (light.input_body, light.output_body, light.output_headers) == (
        full.input_body,
        full.output_body,
        full.output_headers,
    )
    key = [
        (p.seq, p.parent_seq, p.processor_id, p.iteration, p.status, p.endpoint_uri) for p in full.processors
    ]
    assert [
        (p.seq, p.parent_seq, p.processor_id, p.iteration, p.status, p.endpoint_uri) for p in light.processors
    ] == key
    assert all(
        p.input_body is None and p.output_body is None and p.input_headers is None and p.properties is None
        for p in light.processors
    )


def test_bodies_above_the_limit_are_cut_on_a_character_boundary_and_flagged() -> None:
    routes = RouteSet.loads(
        "- from:\n    uri: direct:a\n    steps:\n      - setBody: {simple: '${body}${body}'}\n"
        "      - setBody: {constant: short}\n"
    )
    ex = routes.run("route1", Payload(body="é" * 10), capture_max_bytes=25, context=ctx())
    first, second = ex.processors
    assert first.body_truncated and first.input_body == "é" * 10  # 20 bytes: under the limit
    assert first.output_body == "é" * 12 and len(first.output_body.encode()) <= 25
    assert second.body_truncated and second.output_body == "short"
    assert ex.output_body == "short" and ex.input_body == "é" * 10  # the execution is never cut
    assert not routes.run("route1", Payload(body="x"), context=ctx()).processors[1].body_truncated


def test_records_are_what_the_model_constructor_builds(orders: RouteSet) -> None:
    for p in orders.run("intake", order(12, 0), context=RunContext(rng=random.Random(1))).processors:
        fields = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}
        assert ProcessorRecord(**fields) == p
        assert ProcessorRecord.from_wire(p.to_wire()) == p
    values = (
        "e",
        "x",
        1,
        "a",
        "to",
        "r",
        "COMPLETED",
        T0,
        T0,
        0.5,
        None,
        0,
        0,
        None,
        None,
        False,
        None,
        None,
        "b",
        "c",
        {},
        {"h": 1},
        {},
        {},
        True,
    )
    assert _record(values) == ProcessorRecord(*values)


def test_wire_round_trip_and_determinism(orders: RouteSet) -> None:
    a = orders.run("intake", order(12, 3), context=ctx(3))
    b = orders.run("intake", order(12, 3), context=ctx(3))
    assert a == b
    assert Execution.from_wire(a.to_wire()) == a
    # FixedClock: every read is 50 us later; record times are cut to milliseconds, durations not.
    assert a.start_time == T0 and a.processors[0].start_time == T0
    assert a.processors[0].duration_ms == pytest.approx(0.05)
    end = T0 + timedelta(microseconds=50 * (2 * len(a.processors) + 1))
    assert a.end_time == end.replace(microsecond=end.microsecond // 1000 * 1000)
    assert a.duration_ms == pytest.approx(0.05 * (2 * len(a.processors) + 1))
    c = orders.run("intake", order(12, 3), context=ctx(4))
    assert c.exchange_id != a.exchange_id and c.execution_id != a.execution_id


# --------------------------------------------------------------------------- endpoints and replays


def test_external_endpoints_are_recorded_with_simulated_replies(orders: RouteSet) -> None:
    ex = orders.run("intake", order(1, customer="C2"), context=ctx())
    (call,) = by_id(ex, "crm")
    assert call.endpoint_uri == "http://crm/api/customers?id=C2" and not call.stubbed
    assert call.output_body == '{"tier":"std"}'  # a dict reply travels as JSON text
    assert call.output_headers["CamelHttpResponseCode"] == 200
    (publish,) = by_id(ex, "publish")
    assert publish.input_body == publish.output_body  # one-way: the body is not changed


def test_replay_stubs_external_endpoints_with_recorded_replies(orders: RouteSet) -> None:
    source = orders.run("intake", order(12, customer="C1"), context=ctx())
    # Doctor the recorded reply: the replay must answer with what was recorded, not call crm().
    doctored = tuple(
        replace(p, output_body='{"tier": "platinum"}', output_headers={**p.output_headers, "X-Rec": "1"})
        if p.processor_id == "crm"
        else p
        for p in source.processors
    )
    source = replace(source, processors=doctored)
    replay = orders.run(
        "intake", order(12, customer="C1"), replay_of=source, replay_id="rp-1", context=ctx(9)
    )
    assert replay.is_replay and replay.replay_id == "rp-1" and replay.source_exchange_id == source.exchange_id
    stubbed = {p.processor_id: p.stubbed for p in replay.processors if p.endpoint_uri}
    assert stubbed == {"to1": False, "crm": True, "publish": True}
    (tier,) = by_id(replay, "setHeader2")
    assert tier.output_headers["tier"] == "platinum" and tier.output_headers["X-Rec"] == "1"
    assert all(p.replay_id == "rp-1" for p in replay.processors)


def test_replay_of_a_route_captured_source_uses_the_simulated_reply(orders: RouteSet) -> None:
    source = orders.run("intake", order(12, customer="C1"), capture="ROUTE", context=ctx())
    replay = orders.run("intake", order(12, customer="C2"), replay_of=source, context=ctx())
    (call,) = by_id(replay, "crm")
    assert call.stubbed and call.output_body == '{"tier":"std"}'  # what live traffic would get now


def test_replay_reproduces_a_recorded_endpoint_failure() -> None:
    def down(exchange: Exchange) -> str:
        raise ConnectionError("crm is down")

    routes = RouteSet.loads(
        "- from:\n    uri: direct:a\n    steps:\n      - to: {id: call, uri: 'https://crm/x'}\n",
        endpoints={"https://crm/x": down},
    )
    source = routes.run("route1", Payload(body="b"), context=ctx())
    assert source.status == "FAILED" and source.error_type == "ConnectionError"
    healthy = RouteSet.loads(
        "- from:\n    uri: direct:a\n    steps:\n      - to: {id: call, uri: 'https://crm/x'}\n",
        endpoints={"https://crm/x": lambda ex: "fine"},
    )
    replay = healthy.run("route1", Payload(body="b"), replay_of=source, context=ctx())
    assert replay.status == "FAILED" and replay.error_type == "ConnectionError"
    assert replay.processors[0].stubbed


def test_endpoints_lists_external_endpoints_following_direct(orders: RouteSet) -> None:
    assert orders.endpoints("intake") == [
        EndpointInfo("http://crm/api/customers?id=${body[customer]}", "http", "crm", "enrich", True, True),
        EndpointInfo("kafka:orders", "kafka", "publish", "intake", False),
    ]
    assert orders.endpoints("enrich")[0].to_wire() == {
        "uri": "http://crm/api/customers?id=${body[customer]}",
        "scheme": "http",
        "processorId": "crm",
        "routeId": "enrich",
        "requestReply": True,
        "dynamic": True,
    }


def test_in_out_pattern_makes_any_endpoint_request_reply() -> None:
    routes = RouteSet.loads(
        "- from:\n    uri: direct:a\n    steps:\n      - to: {uri: 'jms:queue:prices', pattern: InOut}\n"
        "      - to: 'jms:queue:audit'\n",
        endpoints={"jms:queue:prices": lambda ex: "42", "jms:queue:audit": lambda ex: "never"},
    )
    ex = routes.run("route1", Payload(body="q"), context=ctx())
    assert [p.output_body for p in ex.processors] == ["42", "42"]
    assert [e.request_reply for e in routes.endpoints("route1")] == [True, False]


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        ({"http://crm/api": "static reply"}, "ENDPOINTS['http://crm/api'] is a str, not a function"),
        ({"http://crm/api": lambda exchange, extra: "x"}, "cannot be called as fn(exchange)"),
        ({"crm": lambda exchange: "x"}, "is not an endpoint URI"),
    ],
)
def test_an_endpoint_simulator_that_cannot_reply_is_refused_at_load_time(
    endpoints: dict[str, Any], message: str
) -> None:
    # A str simulator used to load, then fail every exchange reaching the endpoint with
    # "TypeError: 'str' object is not callable" (DESIGN section 8: nothing fails at run time
    # that could be known at load time).
    text = "- from:\n    uri: direct:a\n    steps:\n      - to: {uri: 'http://crm/api', pattern: InOut}\n"
    with pytest.raises(RouteLoadError) as err:
        RouteSet.loads(text, endpoints=endpoints)
    assert message in err.value.message and err.value.construct == "ENDPOINTS"


# --------------------------------------------------------------------------- properties


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    body=st.one_of(
        st.none(), _TEXT, st.builds(json.dumps, st.dictionaries(_TEXT, st.integers() | _TEXT, max_size=4))
    ),
    headers=st.dictionaries(st.text("abcXYZ-_", min_size=1, max_size=8), st.integers() | _TEXT, max_size=4),
    limit=st.integers(min_value=0, max_value=64),
)
def test_any_payload_gives_a_well_formed_execution(
    orders: RouteSet, body: str | None, headers: dict[str, Any], limit: int
) -> None:
    ex = orders.run("intake", Payload(headers=headers, body=body), capture_max_bytes=limit, context=ctx())
    assert ex.status in ("COMPLETED", "FAILED")
    assert (ex.error_type is None) == (ex.status == "COMPLETED")
    seqs = {p.seq for p in ex.processors}
    assert seqs == set(range(1, len(ex.processors) + 1))
    for p in ex.processors:
        assert p.parent_seq is None or p.parent_seq < p.seq
        for text in (p.input_body, p.output_body):
            assert text is None or len(text.encode()) <= limit
    assert Execution.from_wire(json.loads(json.dumps(ex.to_wire()))) == ex


def test_durations_are_rounded_to_the_microsecond_without_float_noise() -> None:
    # Each perf() call advances 9 µs: the step's (18e-06 - 9e-06) * 1000.0 is 0.009000000000000001
    # in floats, the route's (36e-06 - 0.0) * 1000.0 is 0.036000000000000004; durationMs must not.
    ticks = iter([0.0, 9e-06, 18e-06, 36e-06])
    routes = RouteSet.loads(
        "- route:\n    id: r\n    from:\n      uri: direct:r\n"
        "      steps:\n        - setBody: {constant: x}\n"
    )
    context = RunContext(now=FixedClock(T0), rng=random.Random(7), perf=lambda: next(ticks))
    ex = routes.run("r", Payload(headers={}, body="a", properties={}), context=context)
    assert [ex.duration_ms] + [p.duration_ms for p in ex.processors] == [0.036, 0.009]
    assert '"durationMs":0.009,' in json.dumps(ex.to_wire(), separators=(",", ":"))
