"""Plotly figures (moat_nb/plots.py), on real runs of the orders app through the route engine.

Assertions are on the figures' data (traces, marks, hover text, layout), never on pixels; the
last tests export figures to HTML (directly and through nbconvert from an executed notebook) and
check that the export carries the plot, and, where Chromium is installed, that it draws offline.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moat_nb import diff, lineage, plots
from moat_nb.diff import DiffResult, noise_rules_from
from moat_nb.errors import ValidationError
from moat_nb.model import Execution, Payload, ProcessorRecord
from moat_nb.plots import STATES, STATUS_COLOURS
from moat_nb.sandbox.apps.orders import APP
from moat_nb.sandbox.camel import FixedClock, RouteSet, RunContext

# --------------------------------------------------------------------------- real runs

ROUTES = {
    v: RouteSet.load(APP.versions[v], APP.beans, endpoints=APP.endpoints, version=v) for v in ("v1", "v2")
}
_rng = random.Random(1)
PAYLOADS = [APP.sample_payload(_rng, i) for i in range(8)]
ROUNDING = PAYLOADS[4]  # v1 truncates a line total: diverges at compute-totals (checked below)


def run(version: str, payload: Payload, seed: int = 1, **kw: Any) -> Execution:
    # A fixed clock and seed: the same ids, times and durations on every test run.
    ctx = RunContext(rng=random.Random(seed), now=FixedClock(datetime(2026, 1, 1, 0, 0, seed, tzinfo=UTC)))
    return ROUTES[version].run(APP.entry_route, payload, context=ctx, **kw)


def with_body(payload: Payload, **changes: Any) -> Payload:
    body = json.loads(payload.body or "{}")
    body.update(changes)
    return Payload(headers=payload.headers, body=json.dumps(body), properties=payload.properties)


# Noise calibration as calibrate_noise does it: two unmodified runs, what differs is noise.
RULES = noise_rules_from(run("v2", ROUNDING, seed=2), run("v2", ROUNDING, seed=3))

V1 = run("v1", ROUNDING)
V2 = run("v2", ROUNDING, seed=4, replay_of=V1)
ROUNDING_DIFF = diff(V1, V2, ignore=RULES)

PROD = run("v1", ROUNDING, capture="ROUTE", environment="prod")
PROD_REPLAY = run("v2", ROUNDING, seed=5, replay_of=PROD, environment="staging")
PROD_DIFF = diff(PROD, PROD_REPLAY, ignore=RULES)

BRANCH_SOURCE = run("v2", ROUNDING, seed=6)
GOLD = run("v2", with_body(ROUNDING, customerId="C-1001"), seed=7, replay_of=BRANCH_SOURCE)
BRANCH_DIFF = diff(BRANCH_SOURCE, GOLD, ignore=RULES)

_lines = json.loads(ROUNDING.body or "{}")["lines"]
FAILED = run("v1", with_body(ROUNDING, lines=[{**_lines[0], "qty": -1}]), capture="ROUTE")
FIXED = run("v2", ROUNDING, seed=8, replay_of=FAILED)
FAILED_DIFF = diff(FAILED, FIXED, ignore=RULES)


def test_the_cases_are_what_the_tests_say() -> None:
    first = ROUNDING_DIFF.first_divergence
    assert first is not None and first.processor_id == "compute-totals"
    assert PROD.capture_mode == "ROUTE" and PROD.processors and PROD.processors[0].output_body is None
    assert BRANCH_DIFF.removed and BRANCH_DIFF.added
    assert FAILED.status == "FAILED" and FIXED.status == "COMPLETED"


# --------------------------------------------------------------------------- helpers


def traces(fig: go.Figure, **meta: Any) -> list[Any]:
    return [t for t in fig.data if t.meta and all(t.meta.get(k) == v for k, v in meta.items())]


def bars(fig: go.Figure, side: str) -> list[tuple[int, str, int, int, str]]:
    """(row, processor id, iteration, seq, state) of every processor bar of one side."""
    out = []
    for t in traces(fig, side=side, row="processor"):
        out += [(c[0], c[1], c[2], c[3], t.meta["state"]) for c in t.customdata]
    return sorted(out)


def hover_of(fig: go.Figure, side: str, processor_id: str) -> str:
    for t in traces(fig, side=side, row="processor"):
        for c, h in zip(t.customdata, t.hovertext, strict=True):
            if c[1] == processor_id:
                return str(h)
    raise AssertionError(f"no bar for {processor_id}")


def legend(fig: go.Figure) -> set[str]:
    return {t.name for t in fig.data if t.showlegend is not False and t.name}


def row_of(result: DiffResult, processor_id: str) -> int:
    return next(i for i, a in enumerate(result.aligned, 1) if a.ref.processor_id == processor_id)


def assert_labelled(fig: go.Figure) -> None:
    assert fig.layout.title.text and fig.layout.title.subtitle.text


# --------------------------------------------------------------------------- timeline


def test_timeline_draws_one_bar_per_aligned_processor_on_each_side() -> None:
    fig = plots.timeline(V1, V2, diff=ROUNDING_DIFF)
    aligned = ROUNDING_DIFF.aligned
    for side, records in (
        ("original", [a.original for a in aligned]),
        ("replay", [a.replay for a in aligned]),
    ):
        drawn = bars(fig, side)
        expected = [
            (i, p.processor_id, p.iteration, p.seq, a.state)
            for i, (a, p) in enumerate(zip(aligned, records, strict=True), 1)
            if p is not None
        ]
        assert drawn == expected
    # one tick per aligned processor plus the whole-exchange row, in execution order
    ticks = fig.layout.yaxis.ticktext
    assert len(ticks) == len(aligned) + 1 and ticks[0] == "whole exchange"
    assert ticks[row_of(ROUNDING_DIFF, "compute-totals")] == "compute-totals"
    assert ticks[row_of(ROUNDING_DIFF, "lookup-customer")].startswith("↳ lookup-customer")
    assert fig.layout.yaxis.autorange == "reversed"
    assert len(traces(fig, row="exchange")) == 2


def test_timeline_marks_divergent_processors_with_colour_marker_and_shading() -> None:
    fig = plots.timeline(V1, V2, diff=ROUNDING_DIFF)
    for t in traces(fig, row="processor"):
        assert t.marker.color == STATES[t.meta["state"]][0]
    changed = {a.ref.processor_id for a in ROUNDING_DIFF.aligned if a.state == "changed"}
    assert "compute-totals" in changed and "parse-order" not in changed
    assert {b[1] for b in bars(fig, "replay") if b[4] == "changed"} == changed
    marks = traces(fig, side="replay", row="marker", state="changed")
    assert len(marks) == 1 and marks[0].marker.symbol == "diamond"
    assert marks[0].marker.color == STATES["changed"][0]
    assert len(marks[0].y) == len([a for a in ROUNDING_DIFF.aligned if a.state == "changed"])
    # shaded bands cover exactly the changed rows
    shaded = set()
    for shape in fig.layout.shapes:
        shaded |= set(range(int(shape.y0 + 0.5), int(shape.y1 + 0.5)))
        assert shape.fillcolor == STATES[shape.name][0]
    assert shaded == {i for i, a in enumerate(ROUNDING_DIFF.aligned, 1) if a.state == "changed"}
    # an arrow at the first divergence, on the replay's panel
    (note,) = [a for a in fig.layout.annotations if a.text == "first divergence"]
    assert note.y == row_of(ROUNDING_DIFF, "compute-totals") and note.xref == "x2"
    # legend entries a person understands
    names = legend(fig)
    assert "changed in the replay" in names
    assert names & {"same in both runs", "differs only in noise (ids, timestamps)"}


def test_timeline_hover_lists_the_field_changes_of_the_processor() -> None:
    fig = plots.timeline(V1, V2, diff=ROUNDING_DIFF)
    text = hover_of(fig, "replay", "compute-totals")
    total = next(r for r in ROUNDING_DIFF.rows_at(ROUNDING_DIFF.first_divergence) if r.path == "body:$.total")
    assert "<b>compute-totals</b> (bean)" in text
    assert f"body:$.total: {total.original} → {total.replay}" in text
    assert "changed in the replay" in text and "runs " in text
    # noise is shown, and said to be noise
    noisy = hover_of(fig, "original", "set-tracking-id")
    assert "headers:trackingId" in noisy and "(noise: " in noisy


def test_timeline_labels_titles_and_axes() -> None:
    fig = plots.timeline(V1, V2, diff=ROUNDING_DIFF)
    assert_labelled(fig)
    assert "first divergence at compute-totals" in fig.layout.title.subtitle.text
    assert fig.layout.xaxis.title.text == fig.layout.xaxis2.title.text == "ms since start"
    assert fig.layout.xaxis2.matches == "x"  # one time scale for both panels
    # The legend sits under the panels, in a row: on their right it took ~200 px of a
    # notebook's width and their titles ran into each other at 670 px (lab walk-through).
    legend = fig.layout.legend
    assert (legend.orientation, legend.yref, legend.y, legend.yanchor) == ("h", "container", 0, "bottom")
    assert fig.layout.margin.b >= 100
    assert plots.timeline(V2).layout.xaxis.title.text == "ms since the execution started"
    assert fig.layout.yaxis.title.text
    titles = [a.text for a in fig.layout.annotations if a.text != "first divergence"]
    assert titles == ["original (v1)", "replay (v2)"]


def test_timeline_bars_sit_inside_their_parent_and_after_their_sibling() -> None:
    fig = plots.timeline(V2)
    spans = {}
    for t in traces(fig, side="original", row="processor"):
        for c, base, width in zip(t.customdata, t.base, t.x, strict=True):
            spans[c[3]] = (base, base + width)
    by_seq = {p.seq: p for p in V2.processors or ()}
    assert set(spans) == set(by_seq)
    last: dict[int | None, float] = {}
    for seq, p in sorted(by_seq.items()):
        start, end = spans[seq]
        assert start >= last.get(p.parent_seq, 0.0) - 1e-9
        last[p.parent_seq] = start + (p.duration_ms or 0.0)
        if p.parent_seq is not None:
            assert spans[p.parent_seq][0] - 1e-9 <= start


def test_timeline_overlay_puts_both_runs_on_one_axis() -> None:
    fig = plots.timeline(V1, V2, diff=ROUNDING_DIFF, mode="overlay", theme="dark")
    assert "xaxis2" not in fig.layout
    original = traces(fig, side="original", row="processor")
    replay = traces(fig, side="replay", row="processor")
    assert original and replay
    assert all(t.offset == -0.42 and t.marker.pattern.shape == "/" for t in original)
    assert all(t.offset == 0.02 and t.marker.pattern.shape is None for t in replay)
    assert {"original run (hatched, upper half)", "replay run (solid, lower half)"} <= legend(fig)
    assert fig.layout.template.layout.paper_bgcolor == pio.templates["plotly_dark"].layout.paper_bgcolor


def test_timeline_of_another_branch_marks_removed_and_added() -> None:
    fig = plots.timeline(BRANCH_SOURCE, GOLD, diff=BRANCH_DIFF)
    removed = [b[1:3] for b in bars(fig, "original") if b[4] == "removed"]
    added = [b[1:3] for b in bars(fig, "replay") if b[4] == "added"]
    assert removed == [(r.processor_id, r.iteration) for r in BRANCH_DIFF.removed]
    assert added == [(r.processor_id, r.iteration) for r in BRANCH_DIFF.added]
    assert "gold-discount" in {a[0] for a in added}
    assert not [b for b in bars(fig, "replay") if b[4] == "removed"]
    assert {"ran only in the original", "ran only in the replay"} <= legend(fig)
    assert traces(fig, side="original", row="marker", state="removed")[0].marker.symbol == "triangle-left"
    assert traces(fig, side="replay", row="marker", state="added")[0].marker.symbol == "triangle-right"
    assert "ran only in the replay" in hover_of(fig, "replay", "gold-discount")
    assert "carries the modified input" in legend(fig)  # customerId carried from the start payload


def test_timeline_of_a_route_captured_original_still_draws() -> None:
    fig = plots.timeline(PROD, PROD_REPLAY, diff=PROD_DIFF)
    assert len(bars(fig, "original")) == len(PROD.processors or ()) == len(bars(fig, "replay"))
    assert "same path and status (payloads not compared)" in legend(fig)
    assert "could not compare" in fig.layout.title.subtitle.text
    assert "first divergence at the result (end)" in fig.layout.title.subtitle.text
    (exchange,) = traces(fig, side="replay", row="exchange")
    assert exchange.meta["state"] == "changed" and exchange.marker.color == STATES["changed"][0]
    assert "body:$.total" in exchange.hovertext[0]
    assert [a.y for a in fig.layout.annotations if a.text == "first divergence"] == [0]
    assert "(v1, prod, ROUTE capture)" in fig.layout.annotations[0].text


def test_timeline_outlines_failed_processors_in_red() -> None:
    fig = plots.timeline(FAILED, FIXED, diff=FAILED_DIFF)
    hit = [
        (t, i)
        for t in traces(fig, side="original", row="processor")
        for i, c in enumerate(t.customdata)
        if c[1] == "validate-order"
    ]
    ((trace, i),) = hit
    assert trace.marker.line.color[i] == STATUS_COLOURS["FAILED"] and trace.marker.line.width[i] > 0
    assert "failed (red outline)" in legend(fig)
    assert "error: " in hover_of(fig, "original", "validate-order")
    assert len(bars(fig, "replay")) > len(bars(fig, "original"))


def test_timeline_of_a_search_hit_does_not_say_it_ran_no_processors() -> None:
    # Support walk: plots.timeline(hit) of a p.executions(...) row titled the failed exchange
    # "FAILED, 0 processors" over an empty chart, though it ran 11: the hit has no records.
    from dataclasses import replace

    hit = replace(V1, processors=None, processor_count=len(V1.processors or ()))
    subtitle = plots.timeline(hit).layout.title.subtitle.text
    assert ", 0 processors" not in subtitle
    assert f"{len(V1.processors or ())} processors ran" in subtitle and "Platform.execution(id)" in subtitle
    assert f"{len(V1.processors or ())} processors" in plots.timeline(V1).layout.title.subtitle.text


def test_timeline_of_one_execution_colours_by_status() -> None:
    fig = plots.timeline(FAILED)
    drawn = bars(fig, "original")
    assert len(drawn) == len(FAILED.processors or ())
    assert {t.meta["state"] for t in traces(fig, row="processor")} == {"completed", "failed"}
    (failed,) = traces(fig, row="processor", state="failed")
    assert failed.marker.color == STATUS_COLOURS["FAILED"] and failed.customdata[0][1] == "validate-order"
    assert fig.layout.title.text == "Timeline of order-intake" and "FAILED" in fig.layout.title.subtitle.text
    assert not fig.layout.shapes and not traces(fig, row="marker")


def test_timeline_without_processor_records_on_one_side() -> None:
    hit = PROD.summary()  # a search hit: no processors, no payloads
    fig = plots.timeline(hit, PROD_REPLAY)
    assert {b[4] for b in bars(fig, "replay")} == {"uncompared"} and not bars(fig, "original")
    assert "could not compare" in fig.layout.title.subtitle.text


def test_route_graph_with_a_search_hit_draws_the_other_side_and_alone_says_what_to_fetch() -> None:
    hit = PROD.summary()
    fig = plots.route_graph(hit, PROD_REPLAY)
    assert fig.data  # the replay's nodes and edges
    with pytest.raises(ValidationError) as info:
        plots.route_graph(hit)  # nothing to draw: its lineage needs the detail
    assert info.value.code == "BAD_SOURCE" and "p.execution(" in (info.value.hint or "")


def test_plots_of_a_frame_row_say_which_plot_and_how_to_get_an_execution() -> None:
    # Analyst walk: route_graph(row) raised AttributeError ('Series' has no attribute
    # 'processors'), timeline(row, row) was refused in diff()'s name.
    row = pd.Series({"execution_id": V1.execution_id, "exchange_id": V1.exchange_id})
    for call, draw in (
        ("plots.route_graph() takes an Execution as execution", lambda: plots.route_graph(row)),
        ("plots.route_graph() takes an Execution as replay", lambda: plots.route_graph(V1, row)),
        ("plots.timeline() takes an Execution as original", lambda: plots.timeline(row, row)),
        ("plots.timeline() takes an Execution as execution", lambda: plots.timeline(row)),
        ("plots.field_lineage() takes an Execution", lambda: plots.field_lineage(row, "body:$.total")),
    ):
        with pytest.raises(ValidationError, match=re.escape(call)) as info:
            draw()
        assert info.value.code == "BAD_SOURCE" and "p.execution(row.execution_id)" in (info.value.hint or "")


def test_timeline_refuses_a_diff_of_other_executions_and_bad_options() -> None:
    with pytest.raises(ValidationError) as info:
        plots.timeline(V2, V1, diff=ROUNDING_DIFF)
    assert info.value.code == "DIFF_MISMATCH"
    with pytest.raises(ValidationError) as info:
        plots.timeline(V1, V2, mode="stacked")
    assert info.value.code == "BAD_MODE"
    with pytest.raises(ValidationError) as info:
        plots.timeline(V1, theme="solarized")
    assert info.value.code == "BAD_THEME" and "plotly.io.templates" in (info.value.hint or "")


def test_timeline_takes_the_replay_from_the_diff_and_computes_one_if_missing() -> None:
    from_diff = plots.timeline(V1, diff=ROUNDING_DIFF)
    computed = plots.timeline(V1, V2)  # default rules: the app's own timestamps are not noise
    assert bars(from_diff, "replay") == bars(plots.timeline(V1, V2, diff=ROUNDING_DIFF), "replay")
    assert {b[4] for b in bars(computed, "replay")} != {b[4] for b in bars(from_diff, "replay")}


def test_theme_none_follows_plotlys_default_template() -> None:
    fig = plots.timeline(V1)
    default = pio.templates[pio.templates.default]
    assert fig.layout.template.layout.paper_bgcolor == default.layout.paper_bgcolor
    light = plots.timeline(V1, theme="light")
    assert light.layout.template.layout.plot_bgcolor == pio.templates["plotly_white"].layout.plot_bgcolor


# --------------------------------------------------------------------------- placement


@st.composite
def trees(draw: st.DrawFn) -> tuple[Execution, dict[int, float]]:
    """Random processor trees with exact times, cut to milliseconds on the way in (section 3),
    and the true start offsets (ms) that the cut lost."""
    start_us = draw(st.integers(0, 999_999))
    origin = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=start_us)
    records: list[ProcessorRecord] = []
    true: dict[int, float] = {}

    def grow(parent: int | None, depth: int, start_us: int, budget: int) -> int:
        t = start_us
        for _ in range(draw(st.integers(1 if parent is None else 0, 3))):
            if len(records) >= 25:
                break
            t += draw(st.integers(0, 2500))  # a gap between siblings, sometimes over 1 ms
            seq = len(records) + 1
            true[seq] = t / 1000
            records.append(None)  # type: ignore[arg-type]
            inner = grow(seq, depth + 1, t, budget - 1) if depth < 2 and budget > 0 else t
            end = inner + draw(st.integers(1, 900))
            records[seq - 1] = ProcessorRecord(
                execution_id="e",
                exchange_id="x",
                seq=seq,
                processor_id=f"p{seq}",
                processor_type="process",
                route_id="r",
                status="COMPLETED",
                start_time=origin + timedelta(microseconds=t),
                end_time=origin + timedelta(microseconds=end),
                duration_ms=(end - t) / 1000,
                parent_seq=parent,
                depth=depth,
            )
            t = end
        return t

    end = grow(None, 0, 0, 3)
    execution = Execution(
        execution_id="e",
        exchange_id="x",
        route_id="r",
        status="COMPLETED",
        start_time=origin,
        duration_ms=end / 1000,
        processors=tuple(records),
    )
    return execution, true


@settings(max_examples=150, deadline=None)
@given(trees())
def test_placement_keeps_the_tree_order_within_the_time_resolution(
    case: tuple[Execution, dict[int, float]],
) -> None:
    execution, true = case
    placed = plots._placement(execution)
    last_end: dict[int | None, float] = {}
    for p in execution.processors or ():
        start, duration = placed[p.seq]
        assert duration == p.duration_ms
        # never before the previous sibling ended, nor outside the parent
        assert start >= last_end.get(p.parent_seq, 0.0) - 1e-9
        if p.parent_seq is not None:
            parent_start, parent_duration = placed[p.parent_seq]
            assert start >= parent_start - 1e-9
            assert start + duration <= parent_start + parent_duration + 1e-9
        else:
            assert start + duration <= (execution.duration_ms or 0.0) + 1e-9
        last_end[p.parent_seq] = start + duration
        # and within the two cuts to milliseconds (the execution's start and the processor's)
        assert abs(start - true[p.seq]) < 2.0


# --------------------------------------------------------------------------- route graph


def nodes(fig: go.Figure) -> list[tuple[int, str, int, str, str]]:
    out = []
    for t in traces(fig, kind="node"):
        out += [(c[0], c[1], c[2], c[3], t.meta["state"]) for c in t.customdata]
    return sorted(out)


def edge_count(fig: go.Figure, **meta: Any) -> int:
    return sum(t.meta["count"] for t in traces(fig, kind="edge", **meta))


def test_route_graph_of_one_execution() -> None:
    fig = plots.route_graph(V2)
    procs = V2.processors or ()
    drawn = nodes(fig)
    assert [(n[1], n[2], n[3]) for n in drawn] == [(p.processor_id, p.iteration, p.status) for p in procs]
    graph = lineage(V2).graph()
    changed = {n["seq"] for n in graph.nodes if n["changed"]}
    assert {procs[n[0]].seq for n in drawn if n[4] == "changed"} == changed
    assert {procs[n[0]].seq for n in drawn if n[4] == "unchanged"} == {p.seq for p in procs} - changed
    assert edge_count(fig, edge="next") == sum(1 for e in graph.edges if e["kind"] == "next")
    # every container has a way in; the rest of its children follow by "next"
    containers = {e["source"] for e in graph.edges if e["kind"] == "child"}
    child_traces = traces(fig, kind="edge", edge="child")
    sources = {procs[int(y)].seq for t in child_traces for y in t.y[0::4]}
    assert sources == containers
    assert {"sets or changes a field", "flow: next processor", "flow: into a container"} <= legend(fig)
    assert_labelled(fig)
    # labelled "processor id · type"; a node in a split shows its iteration
    labels = [x for t in traces(fig, kind="node") for x in t.text]
    assert "compute-totals · bean" in labels and "reserve-stock [0] · bean" in labels
    # layered layout: x = nesting depth, y = execution order
    xs = {c[0]: x for t in traces(fig, kind="node") for c, x in zip(t.customdata, t.x, strict=True)}
    assert all(xs[i] == p.depth for i, p in enumerate(procs))


def test_route_graph_is_deterministic() -> None:
    assert (
        plots.route_graph(V1, V2, diff=ROUNDING_DIFF).to_plotly_json()
        == plots.route_graph(V1, V2, diff=ROUNDING_DIFF).to_plotly_json()
    )


def test_route_graph_of_original_vs_replay_highlights_the_other_path() -> None:
    fig = plots.route_graph(BRANCH_SOURCE, GOLD, diff=BRANCH_DIFF)
    drawn = nodes(fig)
    assert len(drawn) == len(BRANCH_DIFF.aligned)
    assert [n[4] for n in drawn] == [a.state for a in BRANCH_DIFF.aligned]
    xs = {c[0]: x for t in traces(fig, kind="node") for c, x in zip(t.customdata, t.x, strict=True)}
    for i, a in enumerate(BRANCH_DIFF.aligned):
        depth = (a.original or a.replay).depth  # type: ignore[union-attr]
        assert xs[i] == depth + {"removed": -0.3, "added": 0.3}.get(a.state, 0.0)
    assert edge_count(fig, group="original") > 0 and edge_count(fig, group="replay") > 0
    assert {"path only in the original (child)", "path only in the replay (child)"} <= legend(fig)
    assert {"ran only in the original", "ran only in the replay"} <= legend(fig)
    (star,) = traces(fig, kind="first")
    first = BRANCH_DIFF.first_divergence
    assert list(star.y) == [i for i, a in enumerate(BRANCH_DIFF.aligned) if a.ref == first]
    # removed/added nodes keep a marker symbol of their own
    removed = traces(fig, kind="node", state="removed")[0]
    assert set(removed.marker.symbol) == {"triangle-left"}


def test_route_graph_marks_status_and_changes() -> None:
    fig = plots.route_graph(FAILED, FIXED, diff=FAILED_DIFF)
    validate = next(n for n in nodes(fig) if n[1] == "validate-order")
    assert validate[3] == "FAILED → COMPLETED"
    (ring,) = traces(fig, kind="failed")
    assert list(ring.y) == [validate[0]] and ring.marker.color == STATUS_COLOURS["FAILED"]
    assert "failed (red ring)" in legend(fig)
    rounding = plots.route_graph(V1, V2, diff=ROUNDING_DIFF)
    hover = next(
        h
        for t in traces(rounding, kind="node")
        for c, h in zip(t.customdata, t.hovertext, strict=True)
        if c[1] == "compute-totals"
    )
    assert "body:$.total" in hover and "changed in the replay" in hover


def test_route_graph_of_a_route_captured_execution() -> None:
    fig = plots.route_graph(PROD)
    assert {n[4] for n in nodes(fig)} == {"uncaptured"}
    assert len(nodes(fig)) == len(PROD.processors or ())
    assert "payload not captured (ROUTE mode)" in legend(fig)


# --------------------------------------------------------------------------- diff view


def test_diff_view_heatmap_counts_non_noise_differences() -> None:
    fig = plots.diff_view(BRANCH_DIFF)
    (heat,) = traces(fig, kind="heatmap")
    refs = list(dict.fromkeys(r.processor for r in BRANCH_DIFF.rows))
    assert len(heat.y) == len(heat.z) == len(refs)
    assert list(heat.x) == ["status", "error", "body", "headers", "properties", "route (ran on one side)"]
    assert sum(v for row in heat.z for v in row if v) == len(BRANCH_DIFF.differences)
    assert heat.y[0] == "the start payload" and heat.y[-1] == "the result (end)"
    # a cell that holds only noise is 0 (grey), a cell with nothing is empty
    noise_only = [(i, j) for i, row in enumerate(heat.z) for j, v in enumerate(row) if v == 0]
    assert noise_only and all("noise" in heat.hovertext[i][j] for i, j in noise_only)
    # The count says what the cell holds, once: "0 differences, 1 noise" then "1 differences:"
    # said both (walk-through finding).
    i, j = noise_only[0]
    assert re.search(r"<br>0 differences, [1-9][0-9]* noise rows?:", heat.hovertext[i][j])
    assert "1 differences" not in " ".join(t for row in heat.hovertext for t in row if t)
    gold = next(i for i, y in enumerate(heat.y) if y.startswith("gold-discount"))
    assert heat.z[gold][5] == 1 and "ran only in the replay" in heat.hovertext[gold][5]
    assert fig.layout.xaxis.title.text == "field" and fig.layout.yaxis.title.text
    assert_labelled(fig)


def test_diff_view_table_lists_the_rows() -> None:
    fig = plots.diff_view(ROUNDING_DIFF, "table")
    (table,) = fig.data
    columns = table.cells.values
    assert len(columns) == 8 and len(columns[0]) == len(ROUNDING_DIFF.rows)
    assert "body:$.total" in columns[2]
    assert [h.strip("<b>/") for h in table.header.values][:3] == ["processor", "field", "path"]
    short = plots.diff_view(ROUNDING_DIFF, "table", max_rows=5)
    assert len(short.data[0].cells.values[0]) == 5
    assert f"first 5 of {len(ROUNDING_DIFF.rows)} rows" in short.layout.title.text
    noise_fill = STATES["noise"][0]
    fills = table.cells.fill.color[0]
    noisy = [i for i, r in enumerate(ROUNDING_DIFF.rows) if r.noise]
    assert noisy and all(fills[i] == plots._rgba(noise_fill, 0.22) for i in noisy)


def test_diff_view_of_no_differences_and_bad_input() -> None:
    same = diff(V2, V2)
    fig = plots.diff_view(same)
    assert [a.text for a in fig.layout.annotations] == ["no differences"]
    with pytest.raises(ValidationError):
        plots.diff_view(ROUNDING_DIFF, "pie")
    with pytest.raises(ValidationError):
        plots.diff_view(V1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- field lineage


def test_field_lineage_of_a_number_is_a_step_chart() -> None:
    fig = plots.field_lineage(V1, "body:$.total")
    history = lineage(V1).field_history("body:$.total")
    (value,) = traces(fig, kind="value")
    assert value.meta["numeric"] and value.line.shape == "hv"
    assert len(value.x) == len(history.entries)
    (changes,) = traces(fig, kind="changes")
    assert list(changes.x) == [i for i, e in enumerate(history.entries) if e.changed]
    compute = next(i for i, e in enumerate(history.entries) if e.processor_id == "compute-totals")
    assert compute in changes.x and value.y[compute] == history.entries[compute].value
    total = next(r for r in ROUNDING_DIFF.rows if r.path == "body:$.total")
    assert value.y[compute] == total.original
    assert traces(fig, kind="absent")  # no total before compute-totals
    assert fig.layout.xaxis.ticktext[0] == "start" and fig.layout.yaxis.title.text == "body:$.total"
    assert_labelled(fig)
    short = plots.field_lineage(V1, "body:$.total", changes_only=True)
    assert len(traces(short, kind="value")[0].x) == 1 + len(history.changes())


def test_field_lineage_of_text_is_a_categorical_strip() -> None:
    fig = plots.field_lineage(GOLD, "properties:tierDiscountPct")
    (value,) = traces(fig, kind="value")
    assert not value.meta["numeric"]
    assert list(fig.layout.yaxis.ticktext) == ["(absent)", "10"]
    (changes,) = traces(fig, kind="changes")
    assert [fig.layout.xaxis.ticktext[i] for i in changes.x] == ["gold-discount"]
    assert "one level per distinct value" in fig.layout.title.subtitle.text


def test_field_lineage_of_a_route_captured_execution_and_a_bad_path() -> None:
    fig = plots.field_lineage(PROD, "headers:orderTotal")
    assert len(traces(fig, kind="value")[0].x) == 2
    assert "ROUTE mode" in fig.layout.title.subtitle.text
    with pytest.raises(ValidationError):
        plots.field_lineage(V1, "body:$.[")


# --------------------------------------------------------------------------- sweeps


def sweep_frame() -> pd.DataFrame:
    """One row per replay of the first eight orders on v2, as a batch would report them."""
    rows = []
    for i, payload in enumerate(PAYLOADS):
        source = run("v1", payload, seed=10 + i)
        replay = run("v2", payload, seed=20 + i, replay_of=source)
        result = diff(source, replay, ignore=RULES)
        body = json.loads(payload.body or "{}")
        out = json.loads(replay.output_body or "{}") if replay.status == "COMPLETED" else {}
        rows.append(
            {
                "replay": replay.exchange_id,
                "verdict": "same" if result.same else "differs",
                "status": replay.status,
                "items": sum(line.get("qty", 0) for line in body.get("lines", [])),
                "total": float(out.get("total", "nan")),
            }
        )
    return pd.DataFrame(rows)


def test_sweep_outcomes_counts_and_scatter() -> None:
    frame = sweep_frame()
    fig = plots.sweep_outcomes(frame, status="status", x="items", y="total", hover=["replay"])
    (verdicts,) = traces(fig, kind="verdict_counts")
    counts = frame["verdict"].value_counts()
    assert dict(zip(verdicts.x, verdicts.y, strict=True)) == {k: int(v) for k, v in counts.items()}
    assert sum(verdicts.y) == len(frame)
    (statuses,) = traces(fig, kind="status_counts")
    assert sum(statuses.y) == len(frame)
    colour = dict(zip(statuses.x, statuses.marker.color, strict=True))
    assert all(colour[s] == STATUS_COLOURS[s] for s in statuses.x)
    scatter = traces(fig, kind="scatter")
    assert sorted(t.name for t in scatter) == sorted(counts.index)
    assert sum(len(t.x) for t in scatter) == len(frame)
    assert frame["replay"][0] in " ".join(h for t in scatter for h in t.hovertext)
    if "differs" in counts:
        differs = next(t for t in scatter if t.name == "differs")
        assert differs.marker.color == STATUS_COLOURS["FAILED"]
    assert fig.layout.title.text == f"Outcomes of {len(frame)} replays"
    assert fig.layout.xaxis3.title.text == "items" and fig.layout.yaxis3.title.text == "total"
    # polars frames work too
    again = plots.sweep_outcomes(pl.from_pandas(frame))
    assert list(traces(again, kind="verdict_counts")[0].y) == list(verdicts.y)


def test_sweep_outcomes_says_what_is_wrong_with_the_columns() -> None:
    frame = sweep_frame()
    with pytest.raises(ValidationError) as info:
        plots.sweep_outcomes(frame, verdict="outcome")
    assert info.value.code == "BAD_COLUMN" and "verdict" in (info.value.hint or "")
    with pytest.raises(ValidationError) as info:
        plots.sweep_outcomes(frame, x="items")
    assert "x and y go together" in info.value.message
    with pytest.raises(ValidationError) as info:
        plots.sweep_outcomes(frame, x="items", y="replay")
    assert "not numeric" in info.value.message
    with pytest.raises(ValidationError):
        plots.sweep_outcomes([1, 2, 3])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- HTML


def test_figures_export_to_html() -> None:
    figures = [
        plots.timeline(V1, V2, diff=ROUNDING_DIFF),
        plots.route_graph(BRANCH_SOURCE, GOLD, diff=BRANCH_DIFF),
        plots.diff_view(BRANCH_DIFF),
        plots.field_lineage(V1, "body:$.total"),
        plots.sweep_outcomes(pd.DataFrame({"verdict": ["same", "differs"]})),
    ]
    for fig in figures:
        inline = fig.to_html(include_plotlyjs=True, full_html=True)
        cdn = fig.to_html(include_plotlyjs="cdn", full_html=True)
        assert 'class="plotly-graph-div"' in inline and 'class="plotly-graph-div"' in cdn
        assert not re.search(r'<script[^>]+src="https://cdn\.plot\.ly', inline)  # offline
        assert re.search(r'<script[^>]+src="https://cdn\.plot\.ly', cdn)
        assert len(cdn) < len(inline) - 1_000_000
        assert json.dumps(fig.layout.title.text)[1:-1] in inline


NOTEBOOK = Path(__file__).with_name("notebooks") / "plots_render.ipynb"


@pytest.mark.slow
def test_a_notebook_with_figures_exports_to_html_that_draws_offline(tmp_path: Path) -> None:
    import nbclient
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    # In a kernel plotly's default is "plotly_mimetype" (no text/html: nbconvert cannot show it);
    # use_export_renderer() says so and switches to EXPORT_RENDERER.
    printed = "".join(o.get("text", "") for o in nb.cells[1].outputs if o.output_type == "stream")
    assert printed.strip() == f"plotly_mimetype -> {plots.EXPORT_RENDERER}"
    assert plots.EXPORT_RENDERER == "plotly_mimetype+notebook"
    figure_cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("plots.")]
    assert len(figure_cells) == 2
    for cell in figure_cells:
        data = [o.data for o in cell.outputs if o.output_type in ("display_data", "execute_result")]
        shown = [d for d in data if "application/vnd.plotly.v1+json" in d]
        # JupyterLab draws the plotly mimetype; nbconvert uses the text/html beside it
        assert len(shown) == 1 and "text/html" in shown[0]
    spec = figure_cells[0].outputs[-1].data["application/vnd.plotly.v1+json"]
    assert spec["layout"]["title"]["text"] == "Timeline of order-intake: original vs replay"
    body, _ = HTMLExporter().from_notebook_node(nb)
    assert body.count('class="plotly-graph-div"') == 2
    assert "plotly.js v" in body  # plotly.js itself is in the page, not fetched
    assert not re.search(r'<script[^>]+src="[^"]*plot\.ly', body)
    out = tmp_path / "plots_render.html"
    out.write_text(body, encoding="utf-8")

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed: the export was checked, not drawn")
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: any network fetch fails
            "--virtual-time-budget=15000",
            "--dump-dom",
            out.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    ).stdout
    # plotly.js drew both figures: their SVG layers and titles are in the live DOM
    assert dom.count('class="main-svg"') >= 4
    assert "Timeline of order-intake: original vs replay" in dom
    assert "Differences by processor and field" in dom
    assert Counter(re.findall(r'class="(xtick|ytick)"', dom))["ytick"] > 50
