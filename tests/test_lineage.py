"""Payload lineage and replay families (moat_nb/lineage.py)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from moat_nb.diff import diff
from moat_nb.errors import ValidationError
from moat_nb.lineage import LINEAGE_COLUMNS, lineage, replay_family
from moat_nb.model import Execution, Payload, ProcessorRecord
from moat_nb.sandbox.apps.orders import APP
from moat_nb.sandbox.camel import FixedClock, RouteSet, RunContext


def record(
    seq: int, pid: str, before: tuple[Any, dict, dict], after: tuple[Any, dict, dict], **kw: Any
) -> ProcessorRecord:
    def text(body: Any) -> str | None:
        return body if body is None or isinstance(body, str) else json.dumps(body)

    return ProcessorRecord(
        execution_id="e1",
        exchange_id="ID-x-1-1-1",
        seq=seq,
        processor_id=pid,
        processor_type=kw.pop("type", "process"),
        route_id=kw.pop("route", "orders"),
        status=kw.pop("status", "COMPLETED"),
        input_body=text(before[0]),
        output_body=text(after[0]),
        input_headers=before[1],
        output_headers=after[1],
        input_properties=before[2],
        properties=after[2],
        **kw,
    )


def hand_built() -> Execution:
    """parse -> set header -> choice{when-gold{gold-discount}} -> price -> drop stash."""
    s0 = ('{"qty": 2, "price": 5}', {"Content-Type": "json"}, {"stash": "x"})
    s1 = ({"qty": 2, "price": 5}, {"Content-Type": "json"}, {"stash": "x"})  # unmarshal: same JSON
    s2 = (s1[0], {**s1[1], "orderId": "O-1"}, s1[2])
    s3 = (s2[0], s2[1], {**s2[2], "pct": "10"})
    s4 = ({"qty": 2, "price": 5, "total": 9.0}, s3[1], s3[2])
    s5 = (s4[0], s4[1], {"pct": "10"})
    records = (
        record(1, "parse", s0, s1, type="unmarshal"),
        record(2, "set-order-id", s1, s2, type="setHeader"),
        record(3, "pricing-rules", s2, s3, type="choice"),
        record(4, "when-gold", s2, s3, type="when", parent_seq=3, depth=1),
        record(5, "gold-discount", s2, s3, type="setProperty", parent_seq=4, depth=2),
        record(6, "price", s3, s4, type="bean"),
        record(7, "drop-stash", s4, s5, type="removeProperty"),
    )
    return Execution(
        execution_id="e1",
        exchange_id="ID-x-1-1-1",
        route_id="orders",
        status="COMPLETED",
        input_body=s0[0],
        input_headers=s0[1],
        input_properties=s0[2],
        output_body=json.dumps(s5[0]),
        output_headers=s5[1],
        output_properties=s5[2],
        processors=records,
    )


def test_lineage_says_which_processor_set_changed_or_removed_which_field() -> None:
    result = lineage(hand_built())
    rows = [(r.seq, r.processor_id, r.field, r.path, r.change, r.before, r.after) for r in result.rows]
    assert rows == [
        (2, "set-order-id", "headers", "headers:orderId", "set", None, "O-1"),
        (5, "gold-discount", "properties", "properties:pct", "set", None, "10"),
        (6, "price", "body", "body:$.total", "set", None, 9.0),
        (7, "drop-stash", "properties", "properties:stash", "removed", "x", None),
    ]
    # the choice and its when are not credited with what their branch step did
    assert result.by("pricing-rules") == () and result.by("when-gold") == ()
    assert result.limitations == ()


def test_a_container_is_not_credited_with_keys_its_children_added() -> None:
    """A ``to`` whose sub-route adds most of an object's keys: its own before/after compare is
    one whole-object row (as DeepDiff reports it), which matched none of its children's rows,
    so it was credited with their work too (review finding)."""
    b0 = {"orderId": "O-1"}
    b1 = {**b0, "tier": "gold"}
    b2 = {**b1, "points": 120}
    b3 = {**b2, "region": "EU"}
    state = [(b, {}, {}) for b in (b0, b1, b2, b3)]
    records = (
        record(1, "to-enrich", state[0], state[3], type="to"),
        record(2, "set-tier", state[0], state[1], route="enrich", parent_seq=1, depth=1),
        record(3, "set-points", state[1], state[2], route="enrich", parent_seq=1, depth=1),
        record(4, "set-region", state[2], state[3], route="enrich", parent_seq=1, depth=1),
    )
    e = Execution(
        execution_id="e1", exchange_id="ID-x-1-1-1", route_id="orders", status="COMPLETED",
        input_body=json.dumps(b0), output_body=json.dumps(b3), processors=records,
    )  # fmt: skip
    rows = [(r.processor_id, r.path, r.change) for r in lineage(e).rows]
    assert rows == [
        ("set-tier", "body:$.tier", "set"),
        ("set-points", "body:$.points", "set"),
        ("set-region", "body:$.region", "set"),
    ]


def _enriched(b0: Any, b1: Any) -> Execution:
    """A ``to`` whose sub-route rewrites ``b0`` into ``b1``, then sets x, then y and z."""
    b2 = {**b1, "x": 1}
    b3 = {**b2, "y": 1, "z": 1}
    state = [(b, {}, {}) for b in (b0, b1, b2, b3)]
    records = (
        record(1, "to-enrich", state[0], state[3], type="to"),
        record(2, "set-order", state[0], state[1], route="enrich", parent_seq=1, depth=1),
        record(3, "set-x", state[1], state[2], route="enrich", parent_seq=1, depth=1),
        record(4, "set-yz", state[2], state[3], route="enrich", parent_seq=1, depth=1),
    )
    return Execution(
        execution_id="e1", exchange_id="ID-x-1-1-1", route_id="orders", status="COMPLETED",
        input_body=json.dumps(b0), output_body=json.dumps(b3), processors=records,
    )  # fmt: skip


def test_a_container_is_not_credited_when_a_child_rewrote_an_object_whole() -> None:
    """The child's own compare is one whole-object row too: both sides are compared key by key
    (the first fix walked only the container's row, and credited it with the child's keys)."""
    e = _enriched({"order": {"id": "O-1", "a": 1}}, {"order": {"id": "O-1", "b": 1, "c": 1, "d": 1}})
    rows = [(r.processor_id, r.path, r.change) for r in lineage(e).rows]
    assert rows == [
        ("set-order", "body:$.order", "changed"),
        ("set-x", "body:$.x", "set"),
        ("set-yz", "body:$.y", "set"),
        ("set-yz", "body:$.z", "set"),
    ]


def test_a_change_too_deep_to_walk_key_by_key_stays_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body that json.loads reads but the key-by-key walk cannot (nested near the recursion
    limit: how deep depends on the stack the walk starts from, so the walk's RecursionError is
    injected here) keeps its whole row instead of failing lineage()."""
    import importlib

    lineage_module = importlib.import_module("moat_nb.lineage")  # (moat_nb.lineage is also a function)

    def too_deep(*args: Any, **kwargs: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(lineage_module, "json_changes", too_deep)
    e = _enriched({"order": {"id": "O-1", "a": 1}}, {"order": {"id": "O-1", "b": 1, "c": 1, "d": 1}})
    rows = [(r.processor_id, r.path) for r in lineage(e).rows]
    assert ("set-x", "body:$.x") in rows and ("to-enrich", "body:$") in rows  # whole: not walked


def test_field_history_follows_one_field_across_processors() -> None:
    result = lineage(hand_built())
    history = result.field_history("properties:pct")
    assert [(e.processor_id, e.present, e.value, e.changed) for e in history] == [
        ("(start)", False, None, False),
        ("parse", False, None, False),
        ("set-order-id", False, None, False),
        ("gold-discount", True, "10", True),  # finished before its when and its choice
        ("when-gold", True, "10", False),
        ("pricing-rules", True, "10", False),
        ("price", True, "10", False),
        ("drop-stash", True, "10", False),
    ]
    assert [e.processor_id for e in result.field_history("body:$.total").changes()] == ["price"]
    assert result.field_history("headers:ORDERID").values()[-1] == "O-1"  # case-insensitive, as Camel
    frame = result.field_history("body:$.qty").to_pandas()
    assert list(frame.columns) == [
        "seq",
        "processor_id",
        "route_id",
        "iteration",
        "present",
        "value",
        "changed",
    ]
    assert frame["value"].tolist() == ["2"] * 8
    with pytest.raises(ValidationError, match="not a diff path"):
        result.field_history("payload.qty")


def test_lineage_frames_have_the_fixed_schema() -> None:
    result = lineage(hand_built())
    frame = result.to_pandas()
    assert list(frame.columns) == [name for name, _ in LINEAGE_COLUMNS]
    assert str(frame["seq"].dtype) == "Int64"
    assert frame.loc[frame["change"] == "set", "before"].isna().all()
    assert json.loads(frame.loc[frame["path"] == "body:$.total", "after"].iloc[0]) == 9.0
    polars = result.to_polars()
    assert polars.columns == [name for name, _ in LINEAGE_COLUMNS] and polars.height == 4
    assert "4 field changes by 4 processors" in repr(result)
    page = result._repr_html_()
    assert "<table>" in page and "body:$.total" in page and "drop-stash" in page


def test_graph_nodes_carry_status_and_change_markers_and_edges_the_flow() -> None:
    graph = lineage(hand_built()).graph()
    assert [n["seq"] for n in graph.nodes] == [1, 2, 3, 4, 5, 6, 7]
    assert {n["processor_id"]: n["changed"] for n in graph.nodes} == {
        "parse": False,
        "set-order-id": True,
        "pricing-rules": False,
        "when-gold": False,
        "gold-discount": True,
        "price": True,
        "drop-stash": True,
    }
    assert all(n["status"] == "COMPLETED" for n in graph.nodes)
    edges = {(e["source"], e["target"], e["kind"]) for e in graph.edges}
    assert edges == {
        (1, 2, "next"),
        (2, 3, "next"),
        (3, 4, "child"),
        (4, 5, "child"),
        (3, 6, "next"),
        (6, 7, "next"),
    }


def test_a_route_captured_execution_only_has_entry_versus_exit() -> None:
    e = hand_built()
    route_mode = replace(
        e,
        capture_mode="ROUTE",
        processors=tuple(
            replace(p, input_body=None, output_body=None, input_headers=None, output_headers=None,
                    input_properties=None, properties=None)
            for p in e.processors or ()
        ),
    )  # fmt: skip
    result = lineage(route_mode)
    assert {(r.processor_id, r.path, r.change) for r in result.rows} == {
        ("(route)", "headers:orderId", "set"),
        ("(route)", "properties:pct", "set"),
        ("(route)", "properties:stash", "removed"),
        ("(route)", "body:$.total", "set"),
    }
    assert result.limitations and "ROUTE" in result.limitations[0]
    assert [e.processor_id for e in result.field_history("properties:pct")] == ["(start)", "(route)"]
    # One processor is "1 processor" (analyst walk: "24 field changes by 1 processors").
    assert "4 field changes by 1 processor>" in repr(result)


def test_a_field_historys_repr_names_where_it_changed_not_every_processor() -> None:
    # Analyst walk: a cell ending in `lin.field_history("body:$.total")` printed the dataclass
    # repr, one FieldValue(...) per processor (57 on the orders route) on one line.
    history = lineage(hand_built()).field_history("properties:pct")
    text = repr(history)
    assert text.splitlines() == [
        "<FieldHistory properties:pct: 8 processors, changed at 1 (.to_pandas() for every one)>",
        '     5 gold-discount                "10"',  # JSON text, as in to_pandas()
    ]
    assert "FieldValue(" not in text


def test_a_search_hit_is_refused_with_where_to_get_its_detail() -> None:
    # p.executions(...) yields hits without processors or payloads: their lineage was always
    # empty, and who_changed() answered () without a word why (README walk-through finding).
    hit = hand_built().summary()
    assert hit.processors is None
    with pytest.raises(ValidationError) as info:
        lineage(hit)
    assert info.value.code == "BAD_SOURCE" and "search hit" in str(info.value)
    assert f"p.execution({hit.execution_id!r})" in (info.value.hint or "")


# --------------------------------------------------------------------------- the orders app

ROUTES = RouteSet.load(APP.versions["v2"], APP.beans, endpoints=APP.endpoints, version="v2")


def orders_run(lines: list[tuple[str, int, float]], **kw: Any) -> Execution:
    body = {"orderId": "ORD-7", "customerId": "C-1005", "currency": "EUR", "channel": "web",
            "lines": [{"sku": s, "qty": q, "unitPrice": p} for s, q, p in lines]}  # fmt: skip
    payload = Payload(
        headers={"Content-Type": "application/json", "Authorization": "Bearer x.y.z"},
        body=json.dumps(body),
        properties={"tenant": "acme-eu"},
    )
    ctx = RunContext(rng=random.Random(kw.pop("seed", 1)), now=FixedClock(datetime(2026, 1, 1, tzinfo=UTC)))
    return ROUTES.run(APP.entry_route, payload, context=ctx, **kw)


def test_lineage_of_a_real_orders_execution() -> None:
    e = orders_run([("SKU-100", 1, 19.99), ("SKU-103", 2, 24.5)])
    result = lineage(e)
    who = {(r.processor_id, r.path, r.change) for r in result.rows}
    assert ("silver-discount", "properties:tierDiscountPct", "set") in who
    assert ("compute-totals", "body:$.total", "set") in who
    assert ("strip-authorization", "headers:Authorization", "removed") in who
    assert ("setHeader1", "headers:CamelHttpMethod", "set") in who  # in the enrich-customer sub-route
    assert ("removeHeaders1", "headers:CamelHttpMethod", "removed") in who
    assert ("lookup-customer", "properties:customerTier", "set") in who
    # containers are credited only with what their children did not do
    assert result.by("pricing-rules") == () and result.by("when-silver") == ()
    assert result.by("to1") == ()  # the direct: call: its sub-route did everything
    # The split's aggregation: a callable strategy's result is the first line's exchange, and
    # Camel copies it back whole (ExchangeHelper.copyResults), that line's split properties too,
    # and its CamelCorrelationId (MulticastProcessor.doDone keeps only one the original had).
    assert {r.path for r in result.by("reserve-lines")} == {
        "body:$",
        "properties:CamelCorrelationId",
        "properties:CamelSplitIndex",
        "properties:CamelSplitSize",
        "properties:CamelSplitComplete",
    }
    assert [
        result.field_history(f"properties:CamelSplit{k}").values()[-1] for k in ("Index", "Size", "Complete")
    ] == [0, 2, False]
    reserve = [(r.iteration, r.path) for r in result.by("reserve-stock")]
    assert (0, "body:$.status") in reserve and (1, "body:$.status") in reserve
    assert {r.route_id for r in result.by("lookup-customer")} == {"enrich-customer"}
    # one field across the route
    total = result.field_history("headers:orderTotal")
    assert [e.processor_id for e in total.changes()] == ["set-order-total"]
    assert total.values()[-1] == pytest.approx(19.99 + 2 * 24.5 - (19.99 + 2 * 24.5) * 0.05, abs=0.01)
    who_set = result.who_changed("properties:order")
    assert [r.processor_id for r in who_set] == [
        "stash-customer-order",
        "drop-customer-stash",
        "stash-order",
        "drop-order-stash",
    ]
    # A part alone covers all of it, as an ignore= path does; header names fold case (found by
    # review: who_changed("body") and ("headers") answered nothing).
    assert result.who_changed("body") == tuple(r for r in result.rows if r.field == "body") != ()
    headers = tuple(r for r in result.rows if r.field == "headers")
    assert result.who_changed("headers") == headers != ()
    assert result.who_changed("headers:AUTHORIZATION") == result.who_changed("headers:Authorization") != ()
    assert result.who_changed("properties:ord") == ()
    # What is no path is refused, as field_history refuses it (it used to find nothing): sweep's
    # dotted spelling gets the diff's in the hint (fuzzing finding 14).
    for bad, spelled in (
        ("body.total", "body:$.total"),
        ("headers.orderTotal", "headers:orderTotal"),
        ("bodyx", None),
    ):
        for call in (result.who_changed, result.field_history):
            with pytest.raises(ValidationError) as err:
                call(bad)
            assert err.value.code == "BAD_PATH" and (
                spelled is None or repr(spelled) in (err.value.hint or "")
            )
    graph = result.graph()
    assert len(graph.nodes) == len(e.processors or ())
    assert any(edge["kind"] == "child" and edge["source"] == 10 for edge in graph.edges)  # to1 -> sub-route


def test_a_body_cut_at_capture_is_not_read_as_changed_or_removed() -> None:
    # Support walk: with bodies over captureMaxBytes, lineage credited parse-order (an
    # unmarshal that only re-spaces the JSON) with changing "body:line 1", and field_history
    # said set-processed-at (a setHeader) removed body:$.customerId: the cut texts no longer
    # parse. diff() skips such bodies; lineage now does too, and says so.
    lines = [("SKU-100", 1, 19.99), ("SKU-103", 2, 24.5), ("SKU-105", 3, 12.99)]
    whole, cut = orders_run(lines), orders_run(lines, capture_max_bytes=120)
    assert any(p.body_truncated for p in cut.processors or ()) and not any(
        p.body_truncated for p in whole.processors or ()
    )
    result = lineage(cut)
    assert result.by("parse-order") == () == lineage(whole).by("parse-order")
    assert any("truncated at capture" in text for text in result.limitations)
    history = result.field_history("body:$.customerId")
    assert history.entries[0].value == "C-1005"

    # Where the output body was cut its value is unknown: no entry says the field went away
    # there (an output that still parses is whole: the flag also covers a cut input).
    def parses(text: str | None) -> bool:
        try:
            json.loads(text or "")
        except ValueError:
            return False
        return True

    cut_seqs = {p.seq for p in cut.processors or () if p.body_truncated and not parses(p.output_body)}
    assert cut_seqs and not any(e.seq in cut_seqs for e in history.entries)
    assert all(e.processor_id != "set-processed-at" for e in history.changes())
    # Headers and properties are still attributed where the body was cut.
    who = {(r.processor_id, r.path) for r in result.rows}
    assert ("set-processed-at", "headers:processedAt") in who and ("stash-order", "properties:order") in who


def test_field_history_marks_the_split_not_the_step_inside_it() -> None:
    # Support walk: field_history("body:$.customerId") said reserve-stock (inside the split,
    # whose exchange is one order line) removed the customer id, while the lineage rows say the
    # split replaced the body; plots.field_lineage drew the change at reserve-stock. A change
    # now shows where a processor's output differs from its own input (a container only when
    # what it ran did not already make it), as the lineage rows have it.
    result = lineage(orders_run([("SKU-100", 1, 19.99), ("SKU-103", 2, 24.5)]))
    changes = result.field_history("body:$.customerId").changes()
    assert [(c.processor_id, c.present) for c in changes] == [
        ("reserve-lines", False),
        ("merge-reservations", True),
        ("build-response", False),
    ]
    assert {r.processor_id for r in result.who_changed("body:$")} >= {"reserve-lines", "merge-reservations"}
    # A branch's change stays with the step that made it, not its when and choice.
    assert [c.processor_id for c in result.field_history("properties:tierDiscountPct").changes()] == [
        "silver-discount"
    ]


def test_lineage_of_a_failed_orders_execution_marks_the_failing_node() -> None:
    e = orders_run([("SKU-100", -1, 19.99)])
    assert e.status == "FAILED"
    graph = lineage(e).graph()
    failed = [n for n in graph.nodes if n["status"] == "FAILED"]
    assert [n["processor_id"] for n in failed] == ["validate-order"]
    assert failed[0]["error_type"]


def test_status_history_is_each_processors_outcome_and_changes_where_one_failed() -> None:
    # Walk finding: field_history("status") began with the execution's final status at
    # (start), so in a failed exchange the first processor (a setHeader) "changed" the status
    # from FAILED to COMPLETED. The exchange has no outcome before it runs, and every
    # processor is handed one that has not failed: the change is where a processor failed.
    failed = orders_run([("SKU-100", -1, 19.99)])
    assert failed.status == "FAILED"
    history = lineage(failed).field_history("status")
    assert history.entries[0].processor_id == "(start)" and not history.entries[0].present
    assert [(c.processor_id, c.value) for c in history.changes()] == [("validate-order", "FAILED")]
    assert [c.processor_id for c in lineage(failed).field_history("error:type").changes()] == [
        "validate-order"
    ]
    # A line out of stock fails reserve-stock; the doCatch handles it and the exchange
    # completes: the change is at reserve-stock only (the catch did not "change" a status that
    # its own input never had), and the split holding it is not credited with it.
    backorder = orders_run([("SKU-100", 1, 19.99), ("SKU-106", 50, 5.0)])
    assert backorder.status == "COMPLETED"
    result = lineage(backorder)
    assert [(c.processor_id, c.iteration, c.value) for c in result.field_history("status").changes()] == [
        ("reserve-stock", 1, "FAILED")
    ]
    assert [c.processor_id for c in result.field_history("error:type").changes()] == ["reserve-stock"]
    assert lineage(orders_run([("SKU-100", 1, 19.99)])).field_history("status").changes() == ()
    # ROUTE capture: one (route) entry, a change only when the route failed.
    for lines, changes in (([("SKU-100", -1, 19.99)], ["(route)"]), ([("SKU-100", 1, 19.99)], [])):
        routed = lineage(orders_run(lines, capture="ROUTE")).field_history("status")
        assert [c.processor_id for c in routed.changes()] == changes


def test_lineage_of_a_route_captured_orders_execution() -> None:
    e = orders_run([("SKU-100", 1, 19.99)], capture="ROUTE")
    result = lineage(e)
    assert {r.processor_id for r in result.rows} == {"(route)"}
    assert ("headers:Authorization", "removed") in {(r.path, r.change) for r in result.rows}


# --------------------------------------------------------------------------- replay families


def test_replay_family_original_replays_and_replays_of_replays() -> None:
    original = orders_run([("SKU-100", 1, 19.99)], seed=1, environment="prod", capture="ROUTE")
    r1 = orders_run([("SKU-100", 1, 19.99)], seed=2, replay_of=original, replay_id="rp-1")
    r2 = orders_run([("SKU-100", 2, 19.99)], seed=3, replay_of=original, replay_id="rp-2")
    r11 = orders_run([("SKU-100", 3, 19.99)], seed=4, replay_of=r1, replay_id="rp-3")
    orphan = replace(
        r2, execution_id="orphan-exec", exchange_id="ID-orphan-1-1-1", source_exchange_id="ID-gone-9-9-9"
    )
    family = replay_family([r11, r2, orphan, original, r1])
    nodes = {n["node_id"]: n for n in family.nodes}
    assert nodes[original.execution_id]["generation"] == 0
    assert nodes[r1.execution_id]["parent"] == original.execution_id
    assert nodes[r2.execution_id]["generation"] == 1
    assert nodes[r11.execution_id]["parent"] == r1.execution_id and nodes[r11.execution_id]["generation"] == 2
    assert nodes["exchange:ID-gone-9-9-9"]["known"] is False
    assert nodes["orphan-exec"]["parent"] == "exchange:ID-gone-9-9-9"
    assert {n["node_id"] for n in family.roots} == {original.execution_id, "exchange:ID-gone-9-9-9"}
    assert {n["node_id"] for n in family.children(original.execution_id)} == {
        r1.execution_id,
        r2.execution_id,
    }
    assert [n["node_id"] for n in family.ancestors(r11.execution_id)] == [
        r1.execution_id,
        original.execution_id,
    ]
    assert {(e["source"], e["target"], e["replay_id"]) for e in family.edges} >= {
        (original.execution_id, r1.execution_id, "rp-1"),
        (r1.execution_id, r11.execution_id, "rp-3"),
    }
    assert [n["generation"] for n in family.nodes] == sorted(n["generation"] for n in family.nodes)
    frame = family.to_pandas()
    assert len(frame) == 6 and frame["generation"].max() == 2
    assert set(frame.columns) >= {"node_id", "parent", "generation", "is_replay", "replay_id", "known"}
    assert family.to_polars().height == 6


@pytest.mark.parametrize("bad", ["exec-1", {"executionId": "exec-1"}, None, 5])
def test_lineage_of_what_is_not_an_execution_says_how_to_get_one(bad: Any) -> None:
    # An id, a wire dict or None raised an AttributeError deep inside (fuzzing finding 8).
    with pytest.raises(ValidationError) as err:
        lineage(bad)
    assert err.value.code == "BAD_SOURCE" and "p.execution(" in (err.value.hint or "")
    assert "lineage() takes an Execution" in err.value.message


def test_lineage_of_a_frame_row_says_to_fetch_its_execution() -> None:
    pd = pytest.importorskip("pandas")
    row = pd.DataFrame([{"execution_id": "exec-1"}]).iloc[0]
    with pytest.raises(ValidationError) as err:
        lineage(row)
    assert err.value.code == "BAD_SOURCE" and "p.execution(row.execution_id)" in (err.value.hint or "")


def test_replay_family_of_what_is_not_a_list_of_executions_is_refused_in_words() -> None:
    pd = pytest.importorskip("pandas")
    one = hand_built()
    for bad, hint in [
        (None, "p.execution(i)"),  # TypeError: 'NoneType' object is not iterable (fuzzing finding 8)
        (one, "replay_family([original, *replays])"),  # one Execution, not a list of them
        (["exec-1"], "p.execution(id)"),  # an AttributeError before
        ([one, {"executionId": "x"}], "Execution.from_wire"),
        ("exec-1", "p.execution(i)"),
        (pd.DataFrame([{"execution_id": "exec-1"}]), "p.execution(i)"),  # iterates its column names
    ]:
        with pytest.raises(ValidationError) as err:
            replay_family(bad)  # type: ignore[arg-type]
        assert err.value.code == "BAD_SOURCE" and hint in (err.value.hint or ""), (bad, err.value)
    assert len(replay_family(iter([one])).nodes) == 1  # any iterable of Executions is taken


def test_who_changed_names_the_start_payload_of_a_replay_given_its_original() -> None:
    # A field only the replay's modified payload changed: who_changed() answered (), as if
    # nothing had changed it. Given the original, the start payload is its source, at (start).
    original = orders_run([("SKU-100", 1, 19.99)])
    replay = orders_run([("SKU-100", 3, 19.99)], seed=2, replay_of=original, replay_id="rp-1")
    assert lineage(replay).who_changed("body:$.lines[0].qty") == ()  # as before, without it
    result = lineage(replay, original=original)
    (row,) = result.who_changed("body:$.lines[0].qty")
    assert (row.seq, row.processor_id, row.route_id, row.field, row.change) == (
        None, "(start)", "order-intake", "body", "changed"
    )  # fmt: skip
    assert (row.before, row.after) == (1, 3) and result.rows[0] == row and result.by("(start)") == (row,)
    assert result.original is original
    # The processors' rows are those of the lineage without it; the start rows are the diff's.
    assert result.rows[1:] == lineage(replay).rows
    start = {
        (r.path, r.original, r.replay)
        for r in diff(original, replay).rows
        if r.processor.processor_id == "(start)"
    }
    assert {(r.path, r.before, r.after) for r in result.by("(start)")} == start
    frame = result.to_pandas()
    assert frame.iloc[0]["processor_id"] == "(start)" and pd.isna(frame.iloc[0]["seq"])
    # field_history marks the change at (start) too; a field the payload left alone is not.
    assert result.field_history("body:$.lines[0].qty").changes()[0].processor_id == "(start)"
    assert not result.field_history("body:$.customerId").entries[0].changed
    # A replay of the same payload: no start rows.
    same = orders_run([("SKU-100", 1, 19.99)], seed=2, replay_of=original, replay_id="rp-2")
    assert lineage(same, original=original).by("(start)") == ()


def test_an_original_that_is_not_the_replays_source_is_refused() -> None:
    original = orders_run([("SKU-100", 1, 19.99)])
    replay = orders_run([("SKU-100", 3, 19.99)], seed=2, replay_of=original, replay_id="rp-1")
    other = orders_run([("SKU-100", 2, 19.99)], seed=5)
    for execution, given, words in (
        (replay, other, f"which execution {replay.execution_id} did not replay (it replayed"),
        (original, other, "it is not a replay"),
        (replay, original.summary(), "is a search hit (no start payload)"),
        (replay, original.exchange_id, "takes an Execution as original, not a str"),
    ):
        with pytest.raises(ValidationError) as info:
            lineage(execution, original=given)
        assert info.value.code == "BAD_SOURCE" and words in str(info.value) and info.value.hint, str(
            info.value
        )
