"""Original-vs-replay diff (moat_nb/diff.py): alignment, payload diffs, noise, cause, frames."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import moat_nb
from bench.bench_diff import deepdiff_blind_spots, deepdiff_findings, diff_findings, whole_document
from moat_nb.diff import (
    COLUMNS,
    END,
    START,
    DiffResult,
    DiffRow,
    acalibrate_noise,
    calibrate_noise,
    diff,
    noise_rules_from,
    summary_count,
)
from moat_nb.errors import ValidationError
from moat_nb.model import Execution, Payload, ProcessorRecord
from moat_nb.noise import NoiseRule, format_segments
from moat_nb.sandbox.apps.orders import APP
from moat_nb.sandbox.camel import FixedClock, RouteSet, RunContext
from moat_nb.stream import ReplayRun

# --------------------------------------------------------------------------- a tiny trace maker


@dataclass
class Step:
    """One processor of a hand-built trace: ``fn`` changes the exchange state in place."""

    pid: str
    fn: Callable[[dict[str, Any]], None] | None = None
    route: str = "orders"
    iteration: int = 0
    parent: int | None = None  # seq of the enclosing processor
    type: str = "process"
    fails: str | None = None  # error type: the exchange fails here


def _text(body: Any) -> str | None:
    return body if body is None or isinstance(body, str) else json.dumps(body)


def trace(
    steps: list[Step],
    body: Any,
    headers: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    *,
    exchange_id: str = "ID-host-1-1700000000000-0-1",
    execution_id: str = "exec-1",
    capture: str = "PROCESSOR",
    **kw: Any,
) -> Execution:
    state = {
        "body": copy.deepcopy(body),
        "headers": dict(headers or {}),
        "properties": dict(properties or {}),
    }
    start = (_text(state["body"]), dict(state["headers"]), dict(state["properties"]))
    records = []
    failed: tuple[str, str] | None = None
    for seq, step in enumerate(steps, 1):
        before = (_text(state["body"]), dict(state["headers"]), dict(state["properties"]))
        if step.fn is not None:
            step.fn(state)
        after = (_text(state["body"]), dict(state["headers"]), dict(state["properties"]))
        payload = capture == "PROCESSOR"
        records.append(
            ProcessorRecord(
                execution_id=execution_id,
                exchange_id=exchange_id,
                seq=seq,
                processor_id=step.pid,
                processor_type=step.type,
                route_id=step.route,
                status="FAILED" if step.fails else "COMPLETED",
                parent_seq=step.parent,
                iteration=step.iteration,
                error_type=step.fails,
                error_message=f"{step.pid} failed" if step.fails else None,
                input_body=before[0] if payload else None,
                output_body=after[0] if payload else None,
                input_headers=before[1] if payload else None,
                output_headers=after[1] if payload else None,
                input_properties=before[2] if payload else None,
                properties=after[2] if payload else None,
            )
        )
        if step.fails:
            failed = (step.fails, f"{step.pid} failed")
            break
    return Execution(
        execution_id=execution_id,
        exchange_id=exchange_id,
        route_id="orders",
        status="FAILED" if failed else "COMPLETED",
        error_type=failed[0] if failed else None,
        error_message=failed[1] if failed else None,
        capture_mode=capture,
        input_body=start[0],
        input_headers=start[1],
        input_properties=start[2],
        output_body=_text(state["body"]),
        output_headers=dict(state["headers"]),
        output_properties=dict(state["properties"]),
        processors=tuple(records),
        processor_count=len(records),
        **kw,
    )


def set_body(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def fn(state: dict[str, Any]) -> None:
        doc = state["body"]
        for seg in path[:-1]:
            doc = doc[seg]
        doc[path[-1]] = value(state) if callable(value) else value

    return fn


def set_header(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def fn(state: dict[str, Any]) -> None:
        state["headers"][name] = value(state) if callable(value) else value

    return fn


def set_property(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def fn(state: dict[str, Any]) -> None:
        state["properties"][name] = value(state) if callable(value) else value

    return fn


ORDER = {
    "orderId": "ORD-1",
    "lines": [{"sku": "A", "qty": 1, "unitPrice": 19.99}, {"sku": "B", "qty": 1, "unitPrice": 5.0}],
}


def pricing(total: Callable[[float], float]) -> list[Step]:
    """A five-step route whose third step computes line totals with ``total``."""

    def compute(state: dict[str, Any]) -> None:
        for line in state["body"]["lines"]:
            line["total"] = total(line["qty"] * line["unitPrice"])

    return [
        Step("set-received", set_header("received", "yes")),
        Step("validate", set_body(["valid"], True)),
        Step("compute-totals", compute),
        Step("log-it"),
        Step(
            "set-order-total", set_header("orderTotal", lambda s: sum(x["total"] for x in s["body"]["lines"]))
        ),
    ]


def truncate(x: float) -> float:  # v1's bug: cut to cents
    return int(x * 100) / 100


def round_half_up(x: float) -> float:  # v2's fix
    return round(x + 1e-9, 2)


# --------------------------------------------------------------------------- basics


def test_identical_executions_have_no_rows() -> None:
    a = trace(pricing(round_half_up), ORDER, {"h": "1"}, {"p": 1})
    result = diff(a, a)
    assert result.rows == ()
    assert result.same
    assert result.first_divergence is None
    assert "no differences" in result.summary()
    assert [s.state for s in result.aligned] == ["same"] * 5


def test_a_changed_body_field_at_processor_k_is_the_first_divergence_with_its_exact_path() -> None:
    v1 = trace(pricing(truncate), ORDER)
    v2 = trace(pricing(round_half_up), ORDER, exchange_id="ID-host-1-1700000000000-0-2")
    result = diff(v1, v2)
    first = result.first_divergence
    assert first is not None
    assert (first.processor_id, first.seq_original, first.seq_replay) == ("compute-totals", 3, 3)
    at_k = result.rows_at(first)
    assert [(r.field, r.path, r.kind, r.original, r.replay) for r in at_k] == [
        ("body", "body:$.lines[0].total", "changed", 19.98, 19.99)
    ]
    # nothing before k differs; the difference is carried to every later processor and the result
    assert not [r for r in result.rows if r.processor.seq_original in (1, 2)]
    assert {r.processor.processor_id for r in result.rows} == {
        "compute-totals",
        "log-it",
        "set-order-total",
        END,
    }
    assert ("headers:orderTotal", "changed") in {
        (r.path, r.kind) for r in result.rows_at(result.rows[-1].processor)
    }
    assert all(r.cause == "route" and not r.noise for r in result.rows)
    assert not result.same


def test_another_choice_branch_shows_as_removed_and_added_processors() -> None:
    head = [Step("parse"), Step("pricing-rules", type="choice")]
    tail = [Step("compute"), Step("publish"), Step("respond")]
    silver = [
        Step("when-silver", parent=2, type="when"),
        Step("silver-discount", set_property("pct", "5"), parent=3),
    ]
    gold = [
        Step("when-gold", parent=2, type="when"),
        Step("gold-discount", set_property("pct", "10"), parent=3),
    ]
    a = trace(head + silver + tail, {"x": 1})
    b = trace(head + gold + tail, {"x": 1})
    result = diff(a, b)
    assert [r.processor_id for r in result.removed] == ["when-silver", "silver-discount"]
    assert [r.processor_id for r in result.added] == ["when-gold", "gold-discount"]
    assert [r.seq_original for r in result.removed] == [3, 4] and all(
        r.seq_replay is None for r in result.removed
    )
    # the common processors stay aligned: no route row for them, and only the property differs
    route_rows = [r for r in result.rows if r.field == "route"]
    assert len(route_rows) == 4
    aligned = [s for s in result.aligned if s.original is not None and s.replay is not None]
    assert [s.ref.processor_id for s in aligned] == [
        "parse",
        "pricing-rules",
        "compute",
        "publish",
        "respond",
    ]
    assert {r.path for r in result.rows if r.field != "route"} == {"properties:pct"}
    assert result.first_divergence is not None and result.first_divergence.processor_id == "when-silver"
    assert "2 processors ran only in the original (when-silver, silver-discount)" in result.summary()
    assert {s.state for s in result.aligned if s.ref.processor_id.startswith("when")} == {"removed", "added"}


def test_more_split_iterations_show_as_added_processors_with_their_iteration() -> None:
    def split(n: int) -> list[Step]:
        steps = [Step("parse"), Step("reserve-lines", type="split")]
        for i in range(n):
            steps += [
                Step("reserve-stock", iteration=i, parent=2),
                Step("backorder-only", iteration=i, parent=2),
            ]
        return steps + [Step("merge"), Step("respond")]

    result = diff(trace(split(2), {"x": 1}), trace(split(3), {"x": 1}))
    assert result.removed == ()
    assert [(r.processor_id, r.iteration, r.seq_replay) for r in result.added] == [
        ("reserve-stock", 2, 7),
        ("backorder-only", 2, 8),
    ]
    assert all(r.field == "route" for r in result.rows)
    mirrored = diff(trace(split(3), {"x": 1}), trace(split(2), {"x": 1}))
    assert [(r.processor_id, r.iteration) for r in mirrored.removed] == [
        ("reserve-stock", 2),
        ("backorder-only", 2),
    ]


def test_status_and_error_differences_and_the_failed_exchange_that_now_succeeds() -> None:
    steps_bad = [Step("parse"), Step("validate", fails="com.acme.InvalidQuantityException"), Step("price")]
    steps_ok = [Step("parse"), Step("validate"), Step("price", set_body(["total"], 3))]
    result = diff(trace(steps_bad, {"qty": -1}), trace(steps_ok, {"qty": 1}))
    at = {(r.processor.processor_id, r.path): r for r in result.rows}
    assert (
        at[("validate", "status")].original == "FAILED" and at[("validate", "status")].replay == "COMPLETED"
    )
    assert at[("validate", "error:type")].kind == "removed"
    assert at[(END, "status")].original == "FAILED"
    assert [r.processor_id for r in result.added] == ["price"]
    assert result.first_divergence is not None and result.first_divergence.processor_id == "validate"
    assert "result: FAILED -> COMPLETED" in result.summary()


# --------------------------------------------------------------------------- noise


def noisy_pair() -> tuple[Execution, Execution]:
    def stamp(created: str, breadcrumb: str, exchange: str, other_id: str) -> Step:
        def fn(state: dict[str, Any]) -> None:
            state["headers"]["breadcrumbId"] = breadcrumb
            state["headers"]["CamelMessageTimestamp"] = created
            state["properties"]["CamelCreatedTimestamp"] = created
            state["properties"]["intakeRef"] = f"orders/{exchange}"
            state["headers"]["upstreamExchange"] = other_id

        return Step("stamp", fn)

    ida, idb = "ID-host-1-1700000000000-0-1", "ID-host-2-1700000000001-0-9"
    a = trace(
        [stamp("1700000000000", "bc-1", ida, "ID-mq-7-1700000000123-0-1"), Step("log")],
        {"x": 1},
        exchange_id=ida,
    )
    b = trace(
        [
            stamp("1700000099999", "bc-2", idb, "4F1E2D3C4B5A697-000000000000000a"),
            Step("log", set_header("X-Cameleer-Replay", "r-1")),
        ],
        {"x": 1},
        exchange_id=idb,
    )
    return a, b


def test_default_noise_rules_flag_camel_ids_and_timestamps_and_keep_the_rows() -> None:
    a, b = noisy_pair()
    result = diff(a, b)
    assert result.rows, "noise rows are kept"
    assert all(r.noise for r in result.rows)
    assert result.same and result.first_divergence is None
    paths = {r.path for r in result.rows}
    assert {
        "headers:breadcrumbId",
        "headers:CamelMessageTimestamp",
        "properties:CamelCreatedTimestamp",
        "properties:intakeRef",
        "headers:upstreamExchange",
        "headers:X-Cameleer-Replay",
    } <= paths
    reasons = {r.path: r.noise_rule for r in result.rows}
    assert reasons["properties:intakeRef"] == "differs only by the exchange's own id"
    assert reasons["headers:upstreamExchange"] == "Camel exchange id"
    assert all(s.state in ("noise", "same") for s in result.aligned)
    # without the defaults the same rows are real differences
    raw = diff(a, b, defaults=False)
    assert {r.path for r in raw.rows} == paths and not any(r.noise for r in raw.rows)
    assert raw.first_divergence is not None and raw.first_divergence.processor_id == "stamp"


def test_application_timestamps_are_not_guessed_as_noise() -> None:
    a = trace([Step("stamp", set_header("processedAt", "2026-01-01T00:00:00.001Z"))], {"x": 1})
    b = trace([Step("stamp", set_header("processedAt", "2026-01-01T00:00:00.002Z"))], {"x": 1})
    result = diff(a, b)
    assert not result.same
    assert [r.path for r in result.differences] == ["headers:processedAt", "headers:processedAt"]


def quoted_pair() -> tuple[Execution, Execution]:
    body = {"lines": [{"unit price": 1.0, "sku": "A"}, {"unit price": 2.0, "sku": "B"}], "meta": {"a.b": 1}}

    def changes(delta: float) -> Step:
        def fn(state: dict[str, Any]) -> None:
            state["body"]["lines"][1]["unit price"] += delta
            state["body"]["meta"]["a.b"] += delta
            state["headers"]["processedAt"] = f"t{delta}"
            state["properties"]["order"] = json.dumps({"total": 10 + delta, "n": 1})

        return Step("mutate", fn)

    return trace([changes(0.0), Step("log")], body), trace([changes(1.0), Step("log")], body)


def test_a_path_copied_from_a_printed_row_hides_exactly_that_difference() -> None:
    a, b = quoted_pair()
    result = diff(a, b)
    frame = result.to_pandas()
    printed = sorted(set(frame["path"]))
    assert printed == [
        "body:$.lines[1]['unit price']",
        "body:$.meta['a.b']",
        "headers:processedAt",
        "properties:order.total",
    ]
    for path in printed:
        again = diff(a, b, ignore=[path])
        hidden = {r.path for r in again.rows if r.noise}
        assert hidden == {path}, path
        assert all(r.noise_rule == f"ignore {path}" for r in again.rows if r.noise)
    assert diff(a, b, ignore=printed).same


@pytest.mark.parametrize(
    ("rule", "hides"),
    [
        ("body:$.lines[*]['unit price']", {"body:$.lines[1]['unit price']"}),
        ("body", {"body:$.lines[1]['unit price']", "body:$.meta['a.b']"}),
        ("body:$.**", {"body:$.lines[1]['unit price']", "body:$.meta['a.b']"}),
        ("properties:order", {"properties:order.total"}),
        ("HEADERS:PROCESSEDAT", {"headers:processedAt"}),
        ("re:^headers:process", {"headers:processedAt"}),
        (NoiseRule(path="properties:*", processor="orders/log"), {"properties:order.total"}),
        (NoiseRule(value=r"t\d.*"), {"headers:processedAt"}),
    ],
)
def test_ignore_globs_regexes_and_rules(rule: Any, hides: set[str]) -> None:
    a, b = quoted_pair()
    result = diff(a, b, ignore=rule)
    if isinstance(rule, NoiseRule) and rule.processor:
        hidden = {(r.processor.processor_id, r.path) for r in result.rows if r.noise}
        assert hidden == {("log", p) for p in hides}
    else:
        assert {r.path for r in result.rows if r.noise} == hides


def test_a_bad_ignore_rule_is_refused_in_words() -> None:
    a, b = quoted_pair()
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        diff(a, b, ignore="re:([")
    with pytest.raises(ValidationError, match="ignore must be"):
        diff(a, b, ignore=42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dotted", "spelled"),
    [
        ("headers.processedAt", "headers:processedAt"),  # sweep's syntax matched nothing (fuzzing)
        ("body.total", "body:$.total"),
        ("properties.order.total", "properties:order.total"),
        ("body.lines[0].qty", "body:$.lines[0].qty"),
        ("headers.*", None),
        ("body:total", None),
    ],
)
def test_an_ignore_path_that_can_match_nothing_is_refused_with_its_diff_spelling(
    dotted: str, spelled: str | None
) -> None:
    a, b = quoted_pair()
    with pytest.raises(ValidationError) as err:
        diff(a, b, ignore=["headers:ok", dotted])
    assert err.value.code == "BAD_PATH" and err.value.hint
    if spelled is not None:
        assert repr(spelled) in err.value.hint
        diff(a, b, ignore=spelled)  # the spelling the hint gives is taken


_QUOTED_PATHS = {
    "body:$.lines[1]['unit price']",
    "body:$.meta['a.b']",
    "headers:processedAt",
    "properties:order.total",
}


@pytest.mark.parametrize(
    ("glob", "hides"),
    [
        ("headers", {"headers:processedAt"}),
        ("error", set()),
        ("*Timestamp", set()),
        ("headers:Camel*", set()),
        ("HEADERS:x", set()),
        ("body:$.lines[*]", {"body:$.lines[1]['unit price']"}),
        ("**", _QUOTED_PATHS),
        ("status", set()),
    ],
)
def test_fields_globs_and_wildcards_stay_valid_ignore_paths(glob: str, hides: set[str]) -> None:
    # Taken (not BAD_PATH, which refuses only a path that can match nothing), and they hide
    # what they match, no more: the rows stay, flagged as noise.
    a, b = quoted_pair()
    result = diff(a, b, ignore=glob)
    assert {r.path for r in result.rows} == _QUOTED_PATHS
    assert {r.path for r in result.rows if r.noise} == hides


def _frame_row() -> Any:
    pd = pytest.importorskip("pandas")
    return pd.DataFrame([{"execution_id": "exec-1", "exchange_id": "ID-x"}]).iloc[0]


@pytest.mark.parametrize(
    ("bad", "hint"),
    [
        ("exec-1", "p.execution(id)"),  # an AttributeError deep inside before (fuzzing finding 8)
        ({"executionId": "exec-1"}, "Execution.from_wire"),
        (None, "p.execution(id)"),
        ([1], "p.execution(id)"),
        ("row", "p.execution(row.execution_id)"),
        ("run", "run.wait()"),  # p.replay()'s result, as README's five lines name it (run)
    ],
)
def test_diff_of_what_is_not_an_execution_says_how_to_get_one(bad: Any, hint: str) -> None:
    if bad == "row":
        bad = _frame_row()
    elif bad == "run":
        platform = cast(Any, SimpleNamespace(stream_policy=None))
        bad = ReplayRun({"replayId": "replay-1", "status": "COMPLETED"}, platform=platform)
    a = trace(pricing(round_half_up), ORDER)
    for args, side in (((bad, a), "original"), ((a, bad), "replay")):
        with pytest.raises(ValidationError) as err:
            diff(*args)
        assert err.value.code == "BAD_SOURCE" and hint in (err.value.hint or "")
        assert side in err.value.message and (bad is None or type(bad).__name__ in err.value.message)


# --------------------------------------------------------------------------- cause


def test_input_caused_and_route_caused_differences() -> None:
    steps = [
        Step("parse"),
        Step("double", set_body(["qty2"], lambda s: s["body"]["qty"] * 2)),
        Step("set-qty-header", set_header("qty", lambda s: s["body"]["qty"])),
        Step("respond"),
    ]
    a = trace(steps, {"qty": 2, "sku": "A"}, {"channel": "web"})
    b = trace(steps, {"qty": 3, "sku": "A"}, {"channel": "mobile"})
    result = diff(a, b)
    start = [r for r in result.rows if r.processor.processor_id == START]
    assert {(r.path, r.original, r.replay) for r in start} == {
        ("body:$.qty", 2, 3),
        ("headers:channel", "web", "mobile"),
    }
    assert all(r.cause == "input" for r in start)
    cause = {(r.processor.processor_id, r.path): r.cause for r in result.rows}
    assert cause[("parse", "body:$.qty")] == "input"  # carried unchanged
    assert cause[("parse", "headers:channel")] == "input"
    assert cause[("double", "body:$.qty2")] == "route"  # computed by the route
    assert cause[("set-qty-header", "headers:qty")] == "route"  # same value, another place
    assert cause[(END, "body:$.qty")] == "input"
    first = result.first_divergence
    assert first is not None and first.processor_id == "double"
    assert [s.state for s in result.aligned] == ["input", "changed", "changed", "changed"]


def test_a_carried_field_that_the_route_changes_further_is_route_caused() -> None:
    steps = [Step("parse"), Step("double-qty", set_body(["qty"], lambda s: s["body"]["qty"] * 2))]
    result = diff(trace(steps, {"qty": 2}), trace(steps, {"qty": 3}))
    cause = {(r.processor.processor_id, r.path): (r.cause, r.original, r.replay) for r in result.rows}
    assert cause[("parse", "body:$.qty")] == ("input", 2, 3)
    assert cause[("double-qty", "body:$.qty")] == ("route", 4, 6)


# --------------------------------------------------------------------------- ROUTE capture, text


def test_route_captured_original_without_processor_records() -> None:
    a = replace(trace(pricing(truncate), ORDER), processors=None, capture_mode="ROUTE")
    b = trace(pricing(round_half_up), ORDER)
    result = diff(a, b)
    assert {r.processor.processor_id for r in result.rows} == {END}
    assert {r.path for r in result.rows} >= {"body:$.lines[0].total", "headers:orderTotal"}
    assert result.first_divergence is not None and result.first_divergence.processor_id == END
    assert any("no processor records" in text for text in result.limitations)
    assert "could not compare: the original has no processor records" in result.summary()


def test_two_search_hits_say_that_neither_side_was_compared() -> None:
    # Support walk: diff(hit, hit) of two search hits (p.executions(...) rows as Executions)
    # said "no differences" with one note, "the original has no detail": the replay had none
    # either, and that the route taken was not compared at all went unsaid.
    def hit(e: Execution) -> Execution:
        return replace(
            e, processors=None, input_body=None, input_headers=None, input_properties=None,
            output_body=None, output_headers=None, output_properties=None,
            processor_count=len(e.processors or ()),
        )  # fmt: skip

    a, b = (hit(trace(pricing(f), ORDER)) for f in (truncate, round_half_up))
    summary = diff(a, b).summary()
    assert "could not compare: the original and the replay have no detail" in summary
    assert "could not compare: the original and the replay have no processor records" in summary
    one = diff(a, trace(pricing(round_half_up), ORDER)).summary()
    assert "could not compare: the original has no processor records" in one
    assert "could not compare: the original has no detail" in one
    # A route that ran no processor on either side has nothing missing to report.
    empty = [replace(trace([], ORDER), processors=(), processor_count=0) for _ in range(2)]
    assert not any("processor records" in t for t in diff(*empty).limitations)


def test_route_captured_original_with_records_compares_the_path_and_the_result() -> None:
    a = trace(pricing(truncate), ORDER, capture="ROUTE")
    b = trace(pricing(round_half_up), ORDER)
    result = diff(a, b)
    assert all(r.processor.processor_id == END for r in result.rows)
    assert any("ROUTE mode" in text and "5 aligned processors" in text for text in result.limitations)
    extra = trace(pricing(round_half_up) + [Step("audit")], ORDER)
    assert [r.processor_id for r in diff(a, extra).added] == ["audit"]


def test_text_bodies_are_compared_line_by_line() -> None:
    a = trace([Step("render", lambda s: s.update(body="name: x\nqty: 2\nnote: a\n"))], None)
    b = trace([Step("render", lambda s: s.update(body="name: x\nqty: 3\nnote: a\nextra: 1\n"))], None)
    rows = [r for r in diff(a, b).rows if r.processor.processor_id == "render"]
    assert [(r.path, r.kind, r.original, r.replay) for r in rows] == [
        ("body:line 2", "changed", "qty: 2", "qty: 3"),
        ("body:line 4", "added", None, "extra: 1"),
    ]
    assert diff(a, b, ignore="body:line 2").rows_at(rows[0].processor)[0].noise


def test_bodies_nested_past_the_recursion_limit_are_compared_as_text() -> None:
    """A hostile request a route rejected may be nested thousands deep: the diff compares it
    as text instead of raising RecursionError (review finding)."""
    deep_a, deep_b = "[" * 5000 + "]" * 5000, "[" * 5000 + "1" + "]" * 5000
    a = trace([Step("parse", lambda s: s.update(body=deep_a))], None)
    b = trace([Step("parse", lambda s: s.update(body=deep_b))], None)
    rows = [r for r in diff(a, b).rows if r.processor.processor_id == "parse"]
    assert [(r.path, r.kind) for r in rows] == [("body:line 1", "changed")]
    deep = {"x-deep": deep_a}
    c = trace([Step("parse", lambda s: s["headers"].update(deep))], None)
    d = trace([Step("parse", lambda s: s["headers"].update({"x-deep": deep_b}))], None)
    assert [r.path for r in diff(c, d).rows if r.processor.processor_id == "parse"] == ["headers:x-deep"]


def test_json_structure_not_text_decides() -> None:
    a = trace([Step("p", lambda s: s.update(body='{"a": 1, "b": [1, 2]}'))], None)
    b = trace([Step("p", lambda s: s.update(body='{"b":[1,2],"a":1}'))], None)
    assert diff(a, b).rows == ()
    c = trace([Step("p", lambda s: s.update(body='{"a": 1.0, "b": [1, 2]}'))], None)
    rows = diff(a, c).rows
    assert [(r.path, r.kind) for r in rows if r.processor.processor_id == "p"] == [
        ("body:$.a", "type_changed")
    ]


scalars = st.one_of(st.booleans(), st.integers(-2, 2), st.sampled_from([0.0, 1.0, -1.0, 2.0]), st.none())


@given(st.lists(scalars, max_size=5), st.data())
def test_lists_of_scalars_differing_only_in_type_are_not_the_same(items: list[Any], data: Any) -> None:
    """1, 1.0 and true are equal in Python and DeepDiff matches them as one value; in JSON
    they are three values. Two lists of one length with a type swapped differ there. (Lists of
    other lengths: where an item went is ambiguous, and DeepDiff's alignment decides.)"""
    other = [data.draw(st.sampled_from([x, *_equal_of_another_type(x)])) for x in items]
    a = trace([Step("p", lambda s: s.update(body=json.dumps({"xs": items})))], None)
    b = trace([Step("p", lambda s: s.update(body=json.dumps({"xs": other})))], None)
    rows = [(r.path, r.kind) for r in diff(a, b).rows if r.processor.processor_id == "p"]
    expected = [
        (f"body:$.xs[{i}]", "type_changed")
        for i, (x, y) in enumerate(zip(items, other, strict=True))
        if type(x) is not type(y)
    ]
    assert rows == expected


def _equal_of_another_type(x: Any) -> list[Any]:
    """The JSON values of other types that Python holds equal to ``x``."""
    if x is None:
        return []
    return [y for y in (True, False, 0, 1, -1, 2, 0.0, 1.0, -1.0, 2.0) if y == x and type(y) is not type(x)]


# --------------------------------------------------------------------------- result objects


def test_frames_json_and_reprs() -> None:
    v1 = trace(pricing(truncate), ORDER)
    v2 = trace(pricing(round_half_up) + [Step("extra")], ORDER)
    result = diff(v1, v2)
    frame = result.to_pandas()
    assert list(frame.columns) == [name for name, _ in COLUMNS]
    assert str(frame["seq_original"].dtype) == "Int64" and str(frame["noise"].dtype) == "boolean"
    assert frame["path"].dtype.name.startswith("string")
    added = frame[frame["kind"] == "added"].iloc[0]
    assert added["processor_id"] == "extra" and added["original"] is __import__("pandas").NA
    assert json.loads(added["replay"]) == {"processorType": "process", "status": "COMPLETED"}
    changed = frame[frame["path"] == "body:$.lines[0].total"].iloc[0]
    assert json.loads(changed["original"]) == 19.98
    pl_frame = result.to_polars()
    assert pl_frame.columns == [name for name, _ in COLUMNS]
    assert str(pl_frame.schema["iteration"]) == "Int64" and str(pl_frame.schema["noise"]) == "Boolean"
    assert pl_frame.height == len(result.rows) == len(frame)
    data = json.loads(result.to_json())
    assert data["same"] is False and len(data["rows"]) == len(result.rows)
    assert data["firstDivergence"]["processorId"] == "compute-totals"
    assert data["rows"][0]["seqOriginal"] == 3
    text = repr(result)
    assert "first divergence: orders/compute-totals (seq 3/3)" in text
    html = result._repr_html_()
    assert "<table>" in html and "body:$.lines[0].total" in html and "first divergence" in html


def test_an_empty_diff_has_frames_with_the_schema() -> None:
    a = trace(pricing(truncate), ORDER)
    result = diff(a, a)
    assert list(result.to_pandas().columns) == [name for name, _ in COLUMNS]
    assert result.to_polars().height == 0


# --------------------------------------------------------------------------- calibration


class FakeRun:
    def __init__(self, execution: Execution) -> None:
        self.execution = execution

    def wait(self) -> Execution:
        return self.execution


class FakePlatform:
    """Stands in for moat_nb.client.Platform: only the duck-typed replay(...).wait() is used."""

    def __init__(self, runs: list[Execution]) -> None:
        self.runs = list(runs)
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def replay(self, source: Any, **kwargs: Any) -> FakeRun:
        self.calls.append((source, kwargs))
        return FakeRun(self.runs.pop(0))


def stamped(n: int) -> Execution:
    steps = [
        Step("stamp", set_header("processedAt", f"2026-01-01T00:00:0{n}Z")),
        Step("track", set_body(["trackingId"], f"TRK-{n}{n}{n}")),
        Step("render", lambda s: s["headers"].update(note=f"line1\nrun {n}\n")),
    ]
    return trace(steps, {"x": 1}, exchange_id=f"ID-host-{n}-1-1", execution_id=f"exec-{n}")


def test_calibrate_noise_replays_twice_and_returns_rules_for_what_differed() -> None:
    platform = FakePlatform([stamped(1), stamped(2)])
    rules = calibrate_noise(platform, "ID-source", target_environment="dev")
    assert [c[0] for c in platform.calls] == ["ID-source", "ID-source"]
    assert all(c[1]["reason"] and c[1]["target_environment"] == "dev" for c in platform.calls)
    assert {r.path for r in rules} == {"headers:processedAt", "body:$.trackingId", "headers:note"}
    original, replay = stamped(0), stamped(3)
    assert not diff(original, replay).same
    calibrated = diff(original, replay, ignore=rules)
    assert calibrated.same
    assert all(r.noise_rule and r.noise_rule.startswith("calibration") for r in calibrated.rows)
    # a real change still shows
    changed = replace(replay, status="FAILED")
    assert not diff(original, changed, ignore=rules).same


class FakeAsyncRun:
    """An AsyncPlatform's ReplayRun as calibration uses it: ``await run`` is its wait()."""

    def __init__(self, execution: Execution) -> None:
        self.execution = execution

    def __await__(self) -> Any:
        async def done() -> Execution:
            return self.execution

        return done().__await__()


class FakeAsyncPlatform(FakePlatform):
    """Stands in for moat_nb.client.AsyncPlatform: ``await p.replay(...)`` gives a run."""

    async def replay(self, source: Any, **kwargs: Any) -> FakeAsyncRun:  # type: ignore[override]
        self.calls.append((source, kwargs))
        return FakeAsyncRun(self.runs.pop(0))


def test_calibration_with_an_async_platform() -> None:
    # Support walk: calibrate_noise(AsyncPlatform, ...) died with "AttributeError: 'coroutine'
    # object has no attribute 'wait'" and a never-awaited warning, although AsyncPlatform
    # mirrors Platform. It now says what to call, and acalibrate_noise is that call.
    import asyncio
    import warnings

    platform = FakeAsyncPlatform([stamped(1), stamped(2)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine ... was never awaited" left behind
        with pytest.raises(ValidationError) as err:
            calibrate_noise(platform, "ID-source")
    assert err.value.code == "BAD_PLATFORM" and "acalibrate_noise" in (err.value.hint or "")
    assert len(platform.runs) == 2  # nothing was consumed
    rules = asyncio.run(acalibrate_noise(platform, "ID-source", target_environment="dev"))
    assert {r.path for r in rules} == {"headers:processedAt", "body:$.trackingId", "headers:note"}
    assert [c[1]["target_environment"] for c in platform.calls[-2:]] == ["dev", "dev"]
    assert moat_nb.acalibrate_noise is acalibrate_noise

    # A Platform's ReplayRun is awaitable too (``await run``): it is still a run to wait for.
    class AwaitableRun(FakeRun):
        def __await__(self) -> Any:
            return FakeAsyncRun(self.execution).__await__()

    class SyncPlatform(FakePlatform):
        def replay(self, source: Any, **kwargs: Any) -> AwaitableRun:
            return AwaitableRun(super().replay(source, **kwargs).execution)

    assert calibrate_noise(SyncPlatform([stamped(1), stamped(2)]), "ID-source") == rules


def test_calibration_rules_for_text_lines_are_tied_to_their_processor() -> None:
    a = trace(
        [
            Step("render", lambda s: s.update(body="a\nrun 1\n")),
            Step("other", lambda s: s.update(body="x\ny\n")),
        ],
        None,
    )
    b = trace(
        [
            Step("render", lambda s: s.update(body="a\nrun 2\n")),
            Step("other", lambda s: s.update(body="x\ny\n")),
        ],
        None,
    )
    rules = noise_rules_from(a, b)
    line_rules = [r for r in rules if r.path == "body:line 2"]
    assert [r.processor for r in line_rules] == ["orders/render"]


def test_calibration_rules_at_the_end_are_tied_to_the_end() -> None:
    """A text line or an error message that differs at ``(end)`` between two unmodified runs is
    noise there only: the same line elsewhere, changed by a real regression, still shows."""

    def run(stamp: str, qty: str, error: str) -> Execution:
        return trace(
            [
                Step("to-xml", lambda s: s.update(body=f"<order>\n<qty>{qty}</qty>\n</order>\n")),
                Step("stamp", lambda s: s.update(body=f"<ack>\n<at>{stamp}</at>\n</ack>\n"), fails=error),
            ],
            None,
        )

    rules = noise_rules_from(run("t1", "5", "X"), run("t2", "5", "X"))
    assert {(r.path, r.processor) for r in rules} == {
        ("body:line 2", "orders/stamp"),
        ("body:line 2", f"orders/{END}"),
    }
    result = diff(run("t1", "5", "X"), run("t3", "50", "X"), ignore=rules)
    assert not result.same
    assert [(x.processor.processor_id, x.noise) for x in result if x.processor.processor_id == "to-xml"] == [
        ("to-xml", False)
    ]


def test_calibration_rule_for_a_whole_object_is_tied_to_its_processor() -> None:
    """A map keyed by a per-run id differs as one whole-object row (``body:$``); a rule made
    from it must not cover every JSON path at every processor."""

    def run(key: str, qty: int) -> Execution:
        return trace(
            [
                Step("price", lambda s: s.update(body={"qty": qty, "total": qty * 10})),
                Step("reserve", lambda s: s.update(body={key: {"sku": "A", "qty": qty}})),
                Step("restore", lambda s: s.update(body={"qty": qty, "total": qty * 10})),
            ],
            {"qty": 5},
        )

    rules = noise_rules_from(run("R-1", 5), run("R-2", 5))
    assert [(r.path, r.processor) for r in rules] == [("body:$", "orders/reserve")]
    result = diff(run("R-1", 5), run("R-3", 7), ignore=rules)
    assert not result.same
    shown = {(x.processor.processor_id, x.path) for x in result if not x.noise}
    assert ("price", "body:$.qty") in shown and (END, "body:$.total") in shown
    assert all(x.noise for x in result if x.processor.processor_id == "reserve")


def test_calibrated_noise_does_not_hide_a_failure_going_away() -> None:
    """Support walk: an error message that carries a per-run reference differs between two
    unmodified runs of a failing exchange, so calibration made it noise at the failing
    processor and at ``(end)``; the replay with the fix then had its error:message "removed"
    rows flagged noise too, as if the message had merely changed. A value seen to change is
    noise where it changes again, not where it appears or goes away."""

    def run(ref: str | None) -> Execution:
        steps = [Step("parse"), Step("lookup", fails=None if ref is None else "UnknownCustomer")]
        e = trace(steps, {"customerId": "C-9"})
        if ref is None:
            return e
        tag = f" (ref {ref})"
        procs = tuple(
            replace(p, error_message=p.error_message + tag) if p.error_message else p
            for p in e.processors or ()
        )
        return replace(e, error_message=(e.error_message or "") + tag, processors=procs)

    rules = noise_rules_from(run("r-1"), run("r-2"))
    assert diff(run("r-1"), run("r-3"), ignore=rules).same  # the reproduction: same failure
    fixed = diff(run("r-1"), run(None), ignore=rules)
    gone = [(x.processor.processor_id, x.path, x.noise) for x in fixed if x.field == "error"]
    assert gone == [
        ("lookup", "error:type", False),
        ("lookup", "error:message", False),
        (END, "error:type", False),
        (END, "error:message", False),
    ]
    assert "error:message" in fixed.summary().splitlines()[1]  # "the result differs in ..."
    assert {(r.path, r.processor, r.kinds) for r in rules} == {
        ("error:message", "orders/lookup", ("changed", "type_changed")),
        ("error:message", f"orders/{END}", ("changed", "type_changed")),
    }
    # Something seen to come and go between two unmodified runs stays noise whatever it does.
    flaky = noise_rules_from(run("r-1"), run(None))
    assert diff(run("r-1"), run(None), ignore=flaky).same
    assert {r.kinds for r in flaky if r.path.startswith("error:")} == {None}


# --------------------------------------------------------------------------- properties

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-10, 10, allow_nan=False, width=32),
    st.text("abc", max_size=3),
)
keys = st.sampled_from(["a", "b", "c", "d", "total", "lines", "x y"])
json_values = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
json_docs = st.dictionaries(keys, json_values, min_size=1, max_size=5)
# Documents without lists of scalars: there DeepDiff's own matching depends on argument order.
json_values_no_scalar_lists = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(st.dictionaries(keys, inner, min_size=1, max_size=3), max_size=3),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=12,
)
PIDS = ["parse", "validate", "choice", "when-a", "when-b", "split", "reserve", "publish"]


@st.composite
def executions(draw: Any, values: Any = json_values) -> Execution:
    n = draw(st.integers(0, 7))
    records = []
    for seq in range(1, n + 1):
        body = draw(st.one_of(st.none(), st.text("ab\n", max_size=6), values.map(json.dumps)))
        records.append(
            ProcessorRecord(
                execution_id="e",
                exchange_id="ID-x-1-1-1",
                seq=seq,
                processor_id=draw(st.sampled_from(PIDS)),
                processor_type="p",
                route_id="r",
                status=draw(st.sampled_from(["COMPLETED", "FAILED"])),
                iteration=draw(st.integers(0, 2)),
                output_body=body,
                output_headers=draw(
                    st.dictionaries(st.sampled_from(["h1", "H2", "h3"]), json_leaf, max_size=3)
                ),
                properties=draw(st.dictionaries(st.sampled_from(["p1", "p2"]), values, max_size=2)),
            )
        )
    return Execution(
        execution_id="e",
        exchange_id="ID-x-1-1-1",
        route_id="r",
        status=draw(st.sampled_from(["COMPLETED", "FAILED"])),
        input_body=draw(values.map(json.dumps)),
        input_headers=draw(st.dictionaries(st.sampled_from(["h1", "h2"]), json_leaf, max_size=2)),
        input_properties={},
        output_body=draw(st.one_of(st.none(), values.map(json.dumps))),
        output_headers={},
        output_properties={},
        processors=tuple(records),
    )


def _reshuffled(e: Execution) -> Execution:
    """The same execution with every JSON body re-serialised (other key order and spacing)."""

    def again(text: str | None) -> str | None:
        try:
            value = json.loads(text) if text else None
        except ValueError:
            return text
        if not isinstance(value, dict | list):
            return text
        return json.dumps(value, indent=1, sort_keys=True)

    return replace(
        e,
        input_body=again(e.input_body),
        output_body=again(e.output_body),
        processors=tuple(replace(p, output_body=again(p.output_body)) for p in e.processors or ()),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(executions())
def test_diff_of_an_execution_with_itself_is_empty(e: Execution) -> None:
    assert diff(e, e).rows == ()
    assert diff(e, _reshuffled(e)).rows == ()


def _mirror(result: DiffResult, *, paths: bool = True) -> set[tuple[Any, ...]]:
    swap = {"added": "removed", "removed": "added"}
    out = set()
    for r in result.rows:
        p = r.processor
        key: tuple[Any, ...] = (
            p.route_id,
            p.processor_id,
            p.iteration,
            p.seq_replay,
            p.seq_original,
            r.field,
        )
        if paths:
            key += (_side_path(r), swap.get(r.kind, r.kind), json.dumps(r.replay), json.dumps(r.original))
        out.add(key)
    return out


def _side_path(r: DiffRow) -> str:
    # A changed text line is numbered as in the original (moat_nb.noise): once lines were added
    # above it, the same pair is line 2 one way and line 3 the other (Hypothesis found
    # "\n\n" vs "a\n\na"). The pair of lines still has to mirror.
    return "body:line (changed)" if r.kind == "changed" and r.path.startswith("body:line ") else r.path


def _plain(result: DiffResult, *, paths: bool = True) -> set[tuple[Any, ...]]:
    out = set()
    for r in result.rows:
        p = r.processor
        key: tuple[Any, ...] = (
            p.route_id,
            p.processor_id,
            p.iteration,
            p.seq_original,
            p.seq_replay,
            r.field,
        )
        if paths:
            key += (_side_path(r), r.kind, json.dumps(r.original), json.dumps(r.replay))
        out.add(key)
    return out


def test_swapping_mirrors_a_changed_text_line_below_added_ones() -> None:
    # Hypothesis's find (test below): "\n\n" vs "a\n\na" pairs the same two lines both ways,
    # numbered as in each call's original (line 2, then line 3), as the path syntax says.
    a = trace([Step("parse", lambda s: s.update(body="\n\n"))], None)
    b = trace([Step("parse", lambda s: s.update(body="a\n\na"))], None)
    forward, backward = diff(a, b), diff(b, a)
    assert [(r.path, r.kind, r.original, r.replay) for r in forward.rows_at(forward.rows[0].processor)] == [
        ("body:line 1", "added", None, "a"),
        ("body:line 2", "changed", "", "a"),
    ]
    assert _plain(backward) == _mirror(forward)


@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(executions(json_values_no_scalar_lists), executions(json_values_no_scalar_lists))
def test_swapping_the_arguments_mirrors_the_diff(a: Execution, b: Execution) -> None:
    forward, backward = diff(a, b), diff(b, a)
    assert _plain(backward) == _mirror(forward)
    assert {(r.processor_id, r.iteration) for r in forward.added} == {
        (r.processor_id, r.iteration) for r in backward.removed
    }


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(executions(), executions())
def test_swapping_mirrors_where_differences_are_even_with_lists_of_scalars(
    a: Execution, b: Execution
) -> None:
    forward, backward = diff(a, b), diff(b, a)
    assert _plain(backward, paths=False) == _mirror(forward, paths=False)
    assert len(forward.added) == len(backward.removed) and len(forward.removed) == len(backward.added)


@st.composite
def mutated(draw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A document and a copy with one to four random edits (set, delete, add, change type)."""
    doc = draw(json_docs)
    new = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 4))):
        # walk to a random container
        node: Any = new
        path: list[Any] = []
        while True:
            children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            containers = [(k, v) for k, v in children if isinstance(v, dict | list) and v]
            if not containers or draw(st.booleans()):
                break
            k, node = draw(st.sampled_from(containers))
            path.append(k)
        op = draw(st.sampled_from(["set", "delete", "add", "retype"]))
        if isinstance(node, dict):
            if op == "delete" and node:
                del node[draw(st.sampled_from(sorted(node)))]
            elif op == "retype" and node:
                k = draw(st.sampled_from(sorted(node)))
                node[k] = str(node[k]) if not isinstance(node[k], str) else 7
            else:
                node[draw(keys)] = draw(json_leaf)
        elif isinstance(node, list):
            if op == "delete" and node:
                node.pop(draw(st.integers(0, len(node) - 1)))
            elif op == "add" or not node:
                node.append(draw(json_leaf))
            else:
                node[draw(st.integers(0, len(node) - 1))] = draw(json_leaf)
    return doc, new


def _run_of(docs: list[Any]) -> Execution:
    records = tuple(
        ProcessorRecord(
            execution_id="e",
            exchange_id="ID-x-1-1-1",
            seq=i,
            processor_id=f"p{i}",
            processor_type="bean",
            route_id="r",
            status="COMPLETED",
            output_body=json.dumps(d),
            output_headers={"h": 1},
            properties={},
        )
        for i, d in enumerate(docs, 1)
    )
    return Execution(
        execution_id="e",
        exchange_id="ID-x-1-1-1",
        route_id="r",
        status="COMPLETED",
        input_body=json.dumps(docs[0]),
        input_headers={},
        input_properties={},
        output_body=json.dumps(docs[-1]),
        output_headers={},
        output_properties={},
        processors=records,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.integers(1, 4))
def test_per_processor_diff_finds_what_one_deepdiff_over_whole_documents_finds(
    pair: tuple[dict[str, Any], dict[str, Any]], k: int
) -> None:
    doc, new = pair
    docs_a = [doc] * 5
    docs_b = [doc] * k + [new] * (5 - k)  # the replay diverges at processor k + 1
    a, b = _run_of(docs_a), _run_of(docs_b)
    result = diff(a, b, defaults=False)
    ours, theirs = diff_findings(result), deepdiff_findings(whole_document(a), whole_document(b))
    assert theirs <= ours
    # Beyond DeepDiff only what it cannot see: 1 vs 1.0 in two lists equal in Python.
    assert ours - theirs <= deepdiff_blind_spots(result)


@settings(max_examples=150, deadline=None)
@given(json_docs, st.data())
def test_a_planted_value_change_is_found_exactly(doc: dict[str, Any], data: Any) -> None:
    # plant one change at a random leaf (a value of another type-stable kind)
    leaves: list[tuple[list[Any], Any]] = []

    def collect(node: Any, path: list[Any]) -> None:
        items = (
            node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
        )
        if items is None:
            leaves.append((path, node))
            return
        for k, v in items:
            collect(v, [*path, k])

    collect(doc, [])
    leaves = [(p, v) for p, v in leaves if p and isinstance(v, int) and not isinstance(v, bool)]
    if not leaves:
        return
    path, value = data.draw(st.sampled_from(leaves))
    new = copy.deepcopy(doc)
    node: Any = new
    for seg in path[:-1]:
        node = node[seg]
    node[path[-1]] = value + 1
    result = diff(_run_of([doc, doc]), _run_of([doc, new]), defaults=False)
    expected = "body:$" + format_segments(path)
    found = {(r.processor.processor_id, r.path, r.kind, r.original, r.replay) for r in result.rows}
    assert found == {
        ("p2", expected, "changed", value, value + 1),
        (END, expected, "changed", value, value + 1),
    }


# --------------------------------------------------------------------------- the orders app, end to end

ROUTES = {
    v: RouteSet.load(APP.versions[v], APP.beans, endpoints=APP.endpoints, version=v) for v in ("v1", "v2")
}


def context(seed: int = 1, second: int = 0) -> RunContext:
    return RunContext(rng=random.Random(seed), now=FixedClock(datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)))


def order(lines: list[tuple[str, int, float]], customer: str = "C-1003") -> Payload:
    body = {
        "orderId": "ORD-000001",
        "customerId": customer,
        "currency": "EUR",
        "channel": "web",
        "lines": [{"sku": s, "qty": q, "unitPrice": p} for s, q, p in lines],
    }
    return Payload(
        headers={"Content-Type": "application/json", "channel": "web"},
        body=json.dumps(body),
        properties={"tenant": "acme-eu"},
    )


ROUNDING = order([("SKU-100", 1, 19.99)])  # v1 truncates 19.99 * 1 to 19.98


def run(version: str, payload: Payload, **kw: Any) -> Execution:
    ctx = kw.pop("context", None) or context()
    return ROUTES[version].run(APP.entry_route, payload, context=ctx, **kw)


def test_orders_v1_vs_v2_diverges_at_the_pricing_step() -> None:
    original = run("v1", ROUNDING)
    replay = run("v2", ROUNDING, replay_of=original)
    result = diff(original, replay)
    first = result.first_divergence
    assert first is not None and first.processor_id == "compute-totals"
    assert {r.path for r in result.rows_at(first)} >= {"body:$.total", "body:$.lines[0].lineTotal"}
    total = next(r for r in result.rows_at(first) if r.path == "body:$.total")
    assert (total.original, total.replay) == (19.98, 19.99)
    assert result.removed == () and result.added == ()
    assert "body:$.total" in result.summary()


def test_orders_route_captured_prod_exchange_vs_its_v2_replay() -> None:
    prod = run("v1", ROUNDING, capture="ROUTE", environment="prod")
    replay = run("v2", ROUNDING, replay_of=prod, environment="staging")
    result = diff(prod, replay)
    assert result.first_divergence is not None and result.first_divergence.processor_id == END
    end_paths = {r.path for r in result.rows if r.processor.processor_id == END}
    assert {"body:$.total", "headers:orderTotal"} <= end_paths
    assert all(r.processor.processor_id == END for r in result.rows)
    assert any("ROUTE mode" in text for text in result.limitations)
    summary = result.summary()
    assert "could not compare" in summary and "(v1, prod, ROUTE)" in summary


def test_the_count_line_says_what_a_route_captured_original_let_it_compare() -> None:
    # The summary said "2 differences (...) at 0 processors" for a prod (ROUTE-captured) original:
    # read as "no processor differs" where no payload at a processor had been compared.
    prod = run("v1", ROUNDING, capture="ROUTE", environment="prod")
    replay = run("v2", ROUNDING, replay_of=prod, environment="staging")
    line = diff(prod, replay).summary().splitlines()[2]
    assert line == (
        "2 differences (2 from the route, 0 carried from the start payload) at the route's input and"
        " output: the original was captured at ROUTE level, so payloads compare only there (no"
        " processor differs in status, error or route taken); 0 noise"
    )
    # Without its processor records (a platform that keeps none in ROUTE mode).
    bare = replace(prod, processors=None)
    assert (
        "with no processors recorded, so only the route's input and output compare; 0 noise"
        in (diff(bare, replay).summary().splitlines()[2])
    )
    # Processors whose route taken differs (another choice branch) are counted as before.
    gold = order([("SKU-100", 1, 19.99)], customer="C-1001")
    other = run("v2", gold, replay_of=prod, environment="staging")
    assert diff(prod, other).summary().splitlines()[2] == (
        "12 differences (11 from the route, 1 carried from the start payload) at 4 processors (status,"
        " error or route taken) and the route's input and output: the original was captured at ROUTE"
        " level, so payloads compare only there; 0 noise"
    )
    # A PROCESSOR-captured original keeps the line it had.
    staged = run("v1", ROUNDING)
    assert diff(staged, run("v2", ROUNDING, replay_of=staged)).summary().splitlines()[2] == (
        "53 differences (53 from the route, 0 carried from the start payload) at 13 processors; 0 noise"
    )


def test_the_count_line_says_one_difference_and_one_processor_in_the_singular() -> None:
    # "1 differences (...) at 1 processors" in a report an auditor reads (analyst walk).
    one = {"route": 1, "input": 0}
    assert summary_count(1, one, 1, 0, "PROCESSOR", True) == (
        "1 difference (1 from the route, 0 carried from the start payload) at 1 processor; 0 noise"
    )
    assert summary_count(2, {"route": 1, "input": 1}, 3, 1, "PROCESSOR", True) == (
        "2 differences (1 from the route, 1 carried from the start payload) at 3 processors; 1 noise"
    )
    assert " at 1 processor (status, error or route taken) and" in summary_count(1, one, 1, 0, "ROUTE", True)
    # The wording reports made before still say, which their verification makes again.
    assert summary_count(1, one, 1, 0, "PROCESSOR", True, plural_always=True) == (
        "1 differences (1 from the route, 0 carried from the start payload) at 1 processors; 0 noise"
    )


def test_orders_a_modified_payload_takes_the_other_choice_branch() -> None:
    original = run("v2", ROUNDING)
    gold = order([("SKU-100", 1, 19.99)], customer="C-1001")  # gold instead of bronze
    replay = run("v2", gold, replay_of=original)
    result = diff(original, replay)
    assert [r.processor_id for r in result.removed] == ["otherwise-no-tier", "no-tier-discount"]
    assert [r.processor_id for r in result.added] == ["when-gold", "gold-discount"]
    assert len([r for r in result.rows if r.field == "route"]) == 4
    causes = {(r.processor.processor_id, r.path): r.cause for r in result.rows}
    assert causes[(START, "body:$.customerId")] == "input"
    assert causes[("parse-order", "body:$.customerId")] == "input"
    assert causes[("compute-totals", "body:$.total")] == "route"
    tier = [
        r for r in result.rows if r.path == "properties:tierDiscountPct" and r.processor.processor_id == END
    ]
    assert [(r.original, r.replay) for r in tier] == [("0", "10")]


def test_orders_a_split_with_more_lines_adds_iterations() -> None:
    original = run("v2", ROUNDING)
    more = run("v2", order([("SKU-100", 1, 19.99), ("SKU-103", 2, 24.5)]), replay_of=original)
    result = diff(original, more)
    assert result.removed == ()
    assert [(r.processor_id, r.iteration) for r in result.added] == [
        ("try-reserve", 1),
        ("reserve-stock", 1),
        ("backorder-only", 1),
    ]


def test_orders_a_failed_exchange_replayed_with_a_fix_now_succeeds() -> None:
    failed = run("v1", order([("SKU-100", -1, 19.99)]), capture="ROUTE")
    assert failed.status == "FAILED"
    fixed = run("v2", order([("SKU-100", 1, 19.99)]), replay_of=failed)
    result = diff(failed, fixed)
    first = result.first_divergence
    assert first is not None and first.processor_id == "validate-order"
    assert {r.path for r in result.rows_at(first)} == {"status", "error:type", "error:message"}
    assert ("status", "FAILED", "COMPLETED") in [
        (r.path, r.original, r.replay) for r in result.rows if r.processor.processor_id == END
    ]
    assert len(result.added) > 10 and result.removed == ()


def test_orders_noise_needs_calibration() -> None:
    source = run("v2", ROUNDING, context=context(1, 0))
    replays = [run("v2", ROUNDING, replay_of=source, context=context(seed, seed)) for seed in (2, 3, 4)]
    raw = diff(source, replays[0])
    assert not raw.same
    assert {r.path for r in raw.differences} >= {
        "headers:processedAt",
        "headers:trackingId",
        "body:$.trackingId",
    }
    assert any(r.path == "properties:intakeRef" and r.noise for r in raw.rows)  # the exchange id in it
    rules = calibrate_noise(FakePlatform(replays[1:]), source.exchange_id)
    calibrated = diff(source, replays[0], ignore=rules)
    assert calibrated.same, calibrated.summary()
    assert calibrated.first_divergence is None


def test_a_failure_reproduced_says_whether_the_error_is_the_same() -> None:
    """A bare "FAILED on both" did not say whether the replay failed the same way: the reader had
    to look for error rows at (end) to know that the failure was reproduced."""
    bad = [Step("parse"), Step("validate", fails="com.acme.InvalidQuantityException")]
    same = diff(trace(bad, {"qty": -1}), trace(bad, {"qty": -1}, execution_id="exec-2"))
    assert (
        "result: FAILED on both, with the same error: com.acme.InvalidQuantityException: validate failed"
        in same.summary()
    )
    other = [Step("parse", fails="com.acme.ParseException")]
    moved = diff(trace(bad, {"qty": -1}), trace(other, {"qty": -1}))
    assert (
        "FAILED on both, with another error: com.acme.InvalidQuantityException -> com.acme.ParseException"
        in moved.summary()
    )
    fixed = diff(trace(bad, {"qty": -1}), trace([Step("parse"), Step("validate")], {"qty": 1}))
    assert "result: FAILED -> COMPLETED" in fixed.summary() and "same error" not in fixed.summary()
    ok = [Step("parse")]
    assert "result: COMPLETED on both; the result is the same" in diff(trace(ok, 1), trace(ok, 1)).summary()


def test_a_replayed_engine_failure_stays_the_same_with_the_error_handlers_properties() -> None:
    # A failed exchange now carries CamelExceptionCaught (the exception as text) and
    # CamelFailureRouteId, as Camel's error handler leaves them. A message naming the exchange
    # id differs in a replay only by that id: the default exchange-id rule makes the property's
    # difference noise, so the replay still reads as the same failure.
    routes = RouteSet.loads(
        "- route:\n    id: r\n    from:\n      uri: direct:r\n      steps:\n"
        "        - setHeader: {name: a, constant: '1'}\n        - toD: 'direct:${header.a}'\n"
    )
    payload = Payload(headers={}, body="x", properties={})
    source = routes.run("r", payload, context=context(1))
    replay = routes.run("r", payload, context=context(2), replay_of=source)
    for side in (source, replay):
        assert side.status == "FAILED" and side.output_properties["CamelFailureRouteId"] == "r"
        assert side.output_properties["CamelExceptionCaught"].startswith(
            "org.apache.camel.component.direct.DirectConsumerNotAvailableException: "
        )
    result = diff(source, replay)
    assert result.same, result.summary()
    rows = {r.path: r.noise for r in result.rows}
    assert rows["properties:CamelExceptionCaught"] is True
