"""Plotly figures of executions, diffs, lineage and sweeps (DESIGN.md section 9, issue 6).

Every function returns a :class:`plotly.graph_objects.Figure` and does nothing else (no display,
no I/O): show it in a notebook, ``fig.write_html(...)`` it, or put it in a widget.

=====================  ===========================================================================
:func:`timeline`       processors as bars over time (ms from each execution's start), one row per
                       aligned processor (:attr:`~moat_nb.diff.DiffResult.aligned`), original and
                       replay side by side or overlaid; divergent processors coloured, marked and
                       shaded; hover lists the field changes at that processor
:func:`route_graph`    the route as a graph (nodes = processors, edges = flow), per-node status,
                       change marker, the path only one side took highlighted
:func:`diff_view`      processors x fields heatmap of non-noise differences, or a table of rows
:func:`field_lineage`  one field's value across the processors of one execution
:func:`sweep_outcomes` verdict (and status) counts of a batch, input vs output scatter
=====================  ===========================================================================

Colours
    One scheme for all figures (:data:`STATES`, :data:`STATUS_COLOURS`): the Okabe-Ito
    colour-blind-safe hues (Okabe & Ito, "Color Universal Design", 2008) at mid lightness, which
    read on a white and on a dark background alike; divergent processors also carry a marker
    symbol, so the meaning does not rest on colour alone. ``theme=`` picks the plotly template:
    ``None`` (plotly's default, ``plotly.io.templates.default``), ``"light"`` (``plotly_white``),
    ``"dark"`` (``plotly_dark``), or any template name.

Rendering in JupyterLab and in exported HTML
    Inside a Jupyter kernel plotly picks the ``plotly_mimetype`` renderer: the output carries only
    ``application/vnd.plotly.v1+json``, which JupyterLab draws but nbconvert's HTML export cannot
    ("is not able to be represented"). A notebook that will be exported (the compliance report,
    section 9) sets :data:`EXPORT_RENDERER`, ``"plotly_mimetype+notebook"``, with
    :func:`use_export_renderer`: each figure then carries ``application/vnd.plotly.v1+json``
    *and* ``text/html``, and the first figure writes plotly.js into the notebook itself, so the
    exported HTML draws offline. ``"notebook_connected"`` would load plotly.js from a CDN: not
    usable offline. For a single figure, ``fig.to_html(include_plotlyjs=True)`` is
    self-contained; ``include_plotlyjs="cdn"`` is smaller but needs the network.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from .diff import END, START, DiffResult, DiffRow, ProcessorRef, require_execution
from .diff import diff as compute_diff
from .errors import ValidationError
from .lineage import lineage
from .model import Execution, ProcessorRecord

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "EXPORT_RENDERER",
    "STATES",
    "STATUS_COLOURS",
    "diff_view",
    "field_lineage",
    "route_graph",
    "sweep_outcomes",
    "timeline",
    "use_export_renderer",
]

#: Renderer for notebooks exported to HTML by nbconvert (module docstring).
EXPORT_RENDERER = "plotly_mimetype+notebook"

#: State of an aligned processor (:class:`~moat_nb.diff.AlignedProcessor`) -> colour, legend text.
STATES: dict[str, tuple[str, str]] = {
    "same": ("#8C96A3", "same in both runs"),
    "noise": ("#BAC2CC", "differs only in noise (ids, timestamps)"),
    "input": ("#56B4E9", "carries the modified input"),
    "changed": ("#E69F00", "changed in the replay"),
    "removed": ("#CC79A7", "ran only in the original"),
    "added": ("#009E73", "ran only in the replay"),
    "uncompared": ("#A7A7A7", "not compared (no processor records on the other side)"),
}
#: Processor / execution status -> colour (single-execution views and the failed outline).
STATUS_COLOURS: dict[str, str] = {"COMPLETED": "#0072B2", "FAILED": "#D62728", "RUNNING": "#8C96A3"}
#: Marker symbols of the divergent states: the meaning does not rest on colour alone.
_SYMBOLS = {"changed": "diamond", "removed": "triangle-left", "added": "triangle-right"}
_DIVERGENT = tuple(_SYMBOLS)
_LINEAGE = {
    "changed": (STATES["changed"][0], "sets or changes a field"),
    "unchanged": (STATES["same"][0], "leaves body, headers and properties as they were"),
    "uncaptured": (STATES["noise"][0], "payload not captured (ROUTE mode)"),
}
_NBSP = "\u00a0"
#: Times on the wire have millisecond resolution (DESIGN.md section 3).
_RESOLUTION_MS = 1.0
_HOVER_ROWS = 12


def use_export_renderer() -> str:
    """Make figures displayed from now on render in JupyterLab *and* in HTML exported by
    nbconvert, offline (:data:`EXPORT_RENDERER`, module docstring). Returns the renderer that was
    set before, to restore it with ``plotly.io.renderers.default = previous``."""
    previous = pio.renderers.default
    pio.renderers.default = EXPORT_RENDERER
    return previous


# --------------------------------------------------------------------------- shared pieces


def _template(theme: str | None) -> str:
    if theme is None:
        return str(pio.templates.default)
    name = {"light": "plotly_white", "dark": "plotly_dark"}.get(theme, theme)
    if name not in pio.templates:
        raise ValidationError(
            f"theme {theme!r} is not a plotly template",
            code="BAD_THEME",
            hint="pass theme='light', 'dark', None (plotly's default) or a name in plotly.io.templates",
        )
    return name


def _esc(value: Any) -> str:
    # Hover text is plotly's HTML subset: escape what a payload may hold (<, >, &).
    return html.escape(str(value), quote=False)


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _side_text(e: Execution) -> str:
    parts = [p for p in (e.route_version, e.environment) if p]
    if e.capture_mode == "ROUTE":
        parts.append("ROUTE capture")
    return ", ".join(parts) or e.status


def _who(e: Execution) -> str:
    return f"{e.exchange_id} ({_side_text(e)})"


def _rank(state: str) -> int:
    """Legend order: the states in :data:`STATES` order, before the keys."""
    return 1000 + 10 * list(STATES).index(state) if state in STATES else 1500


def _state_text(state: str, original: Execution, replay: Execution | None) -> str:
    """Legend text of a state; "same" says less when one side carried no payloads."""
    if state == "same" and any(e is not None and e.capture_mode == "ROUTE" for e in (original, replay)):
        return "same path and status (payloads not compared)"
    return STATES[state][1]


def _row_text(r: DiffRow) -> str:
    if r.field == "route":
        what = "ran only in the original" if r.kind == "removed" else "ran only in the replay"
    else:
        a = "(absent)" if r.kind == "added" else _short(r.original, 40)
        b = "(absent)" if r.kind == "removed" else _short(r.replay, 40)
        what = f"{r.path}: {a} → {b}"
    if r.noise:
        what += f" (noise: {r.noise_rule})" if r.noise_rule else " (noise)"
    elif r.cause == "input":
        what += " (from the modified input)"
    return _esc(what)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _rows_text(rows: Sequence[DiffRow]) -> str:
    if not rows:
        return "no differences here"
    ordered = sorted(rows, key=lambda r: r.noise)  # real differences first
    real = sum(1 for r in rows if not r.noise)
    # "1 differences:" under "0 differences, 1 noise" said the opposite (walk-through finding).
    head = _count(real, "difference") + (
        f", {_count(len(rows) - real, 'noise row')}" if real < len(rows) else ""
    )
    lines = [head + ":"] + [f"{_NBSP * 2}{_row_text(r)}" for r in ordered[:_HOVER_ROWS]]
    if len(rows) > _HOVER_ROWS:
        lines.append(f"{_NBSP * 2}… {len(rows) - _HOVER_ROWS} more (DiffResult.rows_at)")
    return "<br>".join(lines)


def _label(pid: str, iteration: int, depth: int, iterated: bool) -> str:
    # Tick labels are right-aligned against the axis, so nesting shows as a hook and a step
    # away from the axis per level (non-breaking spaces: plotly collapses ordinary ones).
    text = pid + (f" [{iteration}]" if iterated else "")
    return ("↳ " + text + _NBSP * (3 * depth)) if depth else text


def _ms(value: float) -> str:
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def _finish(fig: go.Figure, title: str, subtitle: str | None, template: str, **layout: Any) -> go.Figure:
    # A subtitle line per "\n": the limitations of a diff go on a line of their own.
    lines = (subtitle or "").split("\n")
    # The title is pinned to the top and the margin grows with the subtitle's lines (and the
    # subplot titles under them), so that nothing overlaps.
    extra = 24 if any(a.yref == "paper" and a.yanchor == "bottom" for a in fig.layout.annotations) else 0
    margin = {"t": 64 + 18 * len(lines) + extra, **layout.pop("margin", {})}
    fig.update_layout(
        template=template,
        title={
            "text": _esc(title),
            "subtitle": {"text": "<br>".join(map(_esc, lines))},
            "x": 0.01,
            "y": 1,
            "yref": "container",
            "yanchor": "top",
            "pad": {"t": 16},
        },
        hoverlabel={"align": "left"},
        margin=margin,
        **layout,
    )
    return fig


def _executions(call: str, first: Any, replay: Any) -> None:
    """Refuse what is not an Execution in the plot's own name: a frame row given to route_graph
    raised a bare AttributeError ('Series' object has no attribute 'processors'), and one given
    to timeline was refused as diff()'s (analyst walk)."""
    require_execution(first, call, "original" if replay is not None else "execution")
    if replay is not None:
        require_execution(replay, call, "replay")


def _resolve(
    original: Execution, replay: Execution | None, result: DiffResult | None
) -> tuple[Execution | None, DiffResult | None]:
    if result is None:
        return replay, (compute_diff(original, replay) if replay is not None else None)
    if result.original.execution_id != original.execution_id:
        raise ValidationError(
            f"diff= compares {result.original.execution_id}, not {original.execution_id}",
            code="DIFF_MISMATCH",
            hint="pass the DiffResult of diff(original, replay) for these two executions",
        )
    if replay is not None and result.replay.execution_id != replay.execution_id:
        raise ValidationError(
            f"diff= compares replay {result.replay.execution_id}, not {replay.execution_id}",
            code="DIFF_MISMATCH",
            hint="pass the DiffResult of diff(original, replay) for these two executions",
        )
    return result.replay, result


# --------------------------------------------------------------------------- rows of a timeline


@dataclass(frozen=True, slots=True)
class _Row:
    """One row of a timeline or node of a route graph: one processor, on one side or both."""

    ref: ProcessorRef | None
    original: ProcessorRecord | None
    replay: ProcessorRecord | None
    state: str

    @property
    def any(self) -> ProcessorRecord:
        rec = self.original if self.original is not None else self.replay
        assert rec is not None
        return rec


def _rows(original: Execution, replay: Execution | None, result: DiffResult | None) -> list[_Row]:
    if replay is None or result is None:
        return [_Row(None, p, None, p.status.lower()) for p in original.processors or ()]
    if result.aligned:
        return [_Row(a.ref, a.original, a.replay, a.state) for a in result.aligned]
    # One side has no processor records (a search hit, or nothing captured): draw the other.
    return [_Row(None, p, None, "uncompared") for p in original.processors or ()] + [
        _Row(None, None, p, "uncompared") for p in replay.processors or ()
    ]


def _iterated(rows: Sequence[_Row]) -> set[tuple[str, str]]:
    """Processors that ran more than once (inside a split or loop): their label shows the index."""
    return {(r.any.route_id, r.any.processor_id) for r in rows if r.any.iteration}


def _placement(execution: Execution) -> dict[int, tuple[float, float]]:
    """``seq -> (offset ms from the execution's start, duration ms)``.

    Start times on the wire are cut to milliseconds (section 3) while a processor may run for
    microseconds, so an offset read from ``startTime`` alone piles fast processors onto the same
    millisecond. A processor starts no earlier than its previous sibling ended (or its parent
    started): a recorded start within the resolution of that point is taken as that point, a
    later one (a real gap) as recorded; and no later than leaves room, inside its parent (or
    the execution), for itself and the siblings after it. Parallel ``split`` iterations are drawn
    one after the other by this rule."""
    origin = execution.start_time
    procs = execution.processors or ()
    durations: dict[int, float] = {}
    for p in procs:
        if p.duration_ms is not None:
            durations[p.seq] = max(float(p.duration_ms), 0.0)
        elif p.start_time is not None and p.end_time is not None:
            durations[p.seq] = max((p.end_time - p.start_time).total_seconds() * 1000.0, 0.0)
        else:
            durations[p.seq] = 0.0
    # What this processor and the siblings after it need (walked backwards).
    remaining: dict[int, float] = {}
    after: dict[int | None, float] = {}
    for p in reversed(procs):
        after[p.parent_seq] = after.get(p.parent_seq, 0.0) + durations[p.seq]
        remaining[p.seq] = after[p.parent_seq]
    last_end: dict[int | None, float] = {}
    out: dict[int, tuple[float, float]] = {}
    for p in procs:
        outer = out.get(p.parent_seq) if p.parent_seq is not None else None
        floor = last_end.get(p.parent_seq, outer[0] if outer is not None else 0.0)
        recorded = None
        if origin is not None and p.start_time is not None:
            recorded = (p.start_time - origin).total_seconds() * 1000.0
        start = floor if recorded is None or recorded < floor + _RESOLUTION_MS else recorded
        if outer is not None:
            ceiling: float | None = outer[0] + outer[1] - remaining[p.seq]
        elif execution.duration_ms is not None:
            ceiling = float(execution.duration_ms) - remaining[p.seq]
        else:
            ceiling = None
        if ceiling is not None:
            start = max(floor, min(start, ceiling))  # floor wins when the durations do not add up
        out[p.seq] = (start, durations[p.seq])
        last_end[p.parent_seq] = start + durations[p.seq]
    return out


def _span(execution: Execution, placed: Mapping[int, tuple[float, float]]) -> float:
    ends = [s + d for s, d in placed.values()]
    if execution.duration_ms is not None:
        ends.append(float(execution.duration_ms))
    return max(ends, default=0.0)


def _exchange_state(result: DiffResult | None) -> str:
    if result is None:
        return "same"
    rows = [r for r in result.rows if r.processor.processor_id in (START, END)]
    if any(not r.noise and r.cause == "route" for r in rows):
        return "changed"
    if any(not r.noise for r in rows):
        return "input"
    return "noise" if rows else "same"


def timeline(
    original: Execution,
    replay: Execution | None = None,
    *,
    diff: DiffResult | None = None,
    mode: str = "side-by-side",
    theme: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """Processors as horizontal bars over time, one row per aligned processor (a first row for
    the whole exchange), original and replay ``"side-by-side"`` (two panels sharing the rows) or
    ``"overlay"`` (one panel, the original's bar hatched above the replay's).

    Without ``replay`` (and ``diff``) it draws one execution, bars coloured by status. With a
    replay, bars take the colour of the diff state (:data:`STATES`); changed, removed and added
    processors also carry a marker and a shaded row, and the first divergence an arrow. Hover
    shows the processor's times, status and field changes. ``diff`` defaults to
    ``moat_nb.diff(original, replay)``: pass your own to use ``ignore=`` rules. A ``ROUTE``-captured
    original (no payloads at processors) draws; the subtitle says what could not be compared.

    Each bar trace carries ``meta = {"side", "state"}`` and per-bar ``customdata = [row,
    processor_id, iteration, seq]``."""
    _executions("plots.timeline()", original, replay)
    if mode not in ("side-by-side", "overlay"):
        raise ValidationError(
            f"mode {mode!r} is not 'side-by-side' or 'overlay'",
            code="BAD_MODE",
            hint="pass mode='side-by-side' (two panels) or mode='overlay' (one panel)",
        )
    replay, result = _resolve(original, replay, diff)
    template = _template(theme)
    rows = _rows(original, replay, result)
    iterated = _iterated(rows)
    by_ref: dict[ProcessorRef, list[DiffRow]] = {}
    for r in result.rows if result else ():
        by_ref.setdefault(r.processor, []).append(r)
    sides: list[tuple[str, Execution]] = [("original", original)]
    if replay is not None:
        sides.append(("replay", replay))
    placed = {name: _placement(e) for name, e in sides}
    span = max(_span(e, placed[name]) for name, e in sides) or 1.0
    min_width = span / 300  # a microsecond processor still shows as a sliver

    labels = ["whole exchange"] + [
        _label(
            r.any.processor_id,
            r.any.iteration,
            r.any.depth,
            (r.any.route_id, r.any.processor_id) in iterated,
        )
        for r in rows
    ]
    side_by_side = replay is not None and mode == "side-by-side"
    if side_by_side:
        assert replay is not None
        fig = make_subplots(
            rows=1,
            cols=2,
            shared_yaxes=True,
            horizontal_spacing=0.03,
            subplot_titles=(f"original ({_side_text(original)})", f"replay ({_side_text(replay)})"),
        )
    else:
        fig = go.Figure()
    legend_done: set[str] = set()
    end_rows = [r for r in (result.rows if result else ()) if r.processor.processor_id in (START, END)]

    for col, (side, execution) in enumerate(sides, 1):
        where = {"row": 1, "col": col} if side_by_side else {}
        bar_shape: dict[str, Any] = {"width": 0.72}
        if replay is not None and not side_by_side:
            bar_shape = {"width": 0.4, "offset": -0.42 if side == "original" else 0.02}
        hatch = {"shape": "/", "solidity": 0.35} if (bar_shape.get("offset") == -0.42) else None
        # The whole exchange: where a ROUTE-captured original's differences show.
        ex_state = _exchange_state(result) if result else execution.status.lower()
        ex_colour = STATES[ex_state][0] if result else STATUS_COLOURS.get(execution.status, "#8C96A3")
        ex_dur = _span(execution, placed[side])
        ex_hover = (
            f"<b>whole exchange</b> ({side})<br>{_esc(execution.exchange_id)}: {execution.status}, "
            f"{_ms(ex_dur)}<br>start payload and result: " + _rows_text(end_rows)
        )
        fig.add_trace(
            go.Bar(
                orientation="h",
                y=[0],
                x=[max(ex_dur, min_width)],
                base=[0.0],
                name="whole exchange",
                showlegend=False,
                marker={"color": ex_colour, "pattern": hatch},
                hovertext=[ex_hover],
                hovertemplate="%{hovertext}<extra></extra>",
                customdata=[[0, "(exchange)", 0, None]],
                meta={"side": side, "state": ex_state, "row": "exchange"},
                **bar_shape,
            ),
            **where,
        )
        by_state: dict[str, list[tuple[int, ProcessorRecord]]] = {}
        for i, r in enumerate(rows, 1):
            rec = r.original if side == "original" else r.replay
            if rec is not None:
                by_state.setdefault(r.state, []).append((i, rec))
        for state, items in by_state.items():
            idx = [i for i, _ in items]
            recs = [p for _, p in items]
            spans = [placed[side].get(p.seq, (0.0, 0.0)) for p in recs]
            if result is not None:
                colour, text = STATES[state][0], _state_text(state, original, replay)
            else:
                colour, text = STATUS_COLOURS.get(state.upper(), "#8C96A3"), state
            failed = [p.status == "FAILED" for p in recs]
            hover = [
                _bar_hover(rows[i - 1], p, side, s, result, by_ref)
                for i, p, s in zip(idx, recs, spans, strict=True)
            ]
            show = state not in _DIVERGENT and state not in legend_done
            legend_done.add(state)
            fig.add_trace(
                go.Bar(
                    orientation="h",
                    y=idx,
                    x=[max(d, min_width) for _, d in spans],
                    base=[s for s, _ in spans],
                    name=text,
                    legendgroup=state,
                    showlegend=show,
                    legendrank=_rank(state),
                    marker={
                        "color": colour,
                        "line": {
                            "color": [STATUS_COLOURS["FAILED"] if f else colour for f in failed],
                            "width": [2.5 if f else 0 for f in failed],
                        },
                        "pattern": hatch,
                    },
                    hovertext=hover,
                    hovertemplate="%{hovertext}<extra></extra>",
                    customdata=[[i, p.processor_id, p.iteration, p.seq] for i, p in items],
                    meta={"side": side, "state": state, "row": "processor"},
                    **bar_shape,
                ),
                **where,
            )
            if result is not None and state in _DIVERGENT:
                lane = bar_shape.get("offset", -0.2) + bar_shape["width"] / 2
                fig.add_trace(
                    go.Scatter(
                        x=[s + max(d, min_width) + span * 0.012 for s, d in spans],
                        y=[i + (lane if not side_by_side and replay is not None else 0) for i in idx],
                        mode="markers",
                        marker={
                            "symbol": _SYMBOLS[state],
                            "size": 11,
                            "color": colour,
                            "line": {"width": 1, "color": "#333333"},
                        },
                        name=text,
                        legendgroup=state,
                        showlegend=f"m:{state}" not in legend_done,
                        legendrank=_rank(state),
                        hovertext=hover,
                        hovertemplate="%{hovertext}<extra></extra>",
                        meta={"side": side, "state": state, "row": "marker"},
                    ),
                    **where,
                )
                legend_done.add(f"m:{state}")
        if replay is not None and not side_by_side:
            # Legend keys for the two sides of the overlay.
            fig.add_trace(
                go.Bar(
                    x=[None],
                    y=[None],
                    orientation="h",
                    name=f"{side} run" + (" (hatched, upper half)" if hatch else " (solid, lower half)"),
                    marker={"color": "#8C96A3", "pattern": hatch},
                    legendrank=2000 + len(fig.data),
                    meta={"side": side, "state": None, "row": "key"},
                )
            )
    if any(p.status == "FAILED" for r in rows for p in (r.original, r.replay) if p is not None):
        fig.add_trace(
            go.Bar(
                x=[None],
                y=[None],
                orientation="h",
                name="failed (red outline)",
                marker={"color": "rgba(0,0,0,0)", "line": {"color": STATUS_COLOURS["FAILED"], "width": 2.5}},
                legendrank=1900,
                meta={"side": None, "state": "FAILED", "row": "key"},
            )
        )

    # Shade the divergent rows across the panels (one band per run of equal states; built as
    # plain shape dicts in one update: add_hrect per row costs ~0.3 s each) and point at the
    # first divergence.
    if result is not None:
        bands: list[dict[str, Any]] = []
        for i, r in enumerate(rows, 1):
            if r.state not in _DIVERGENT:
                continue
            if bands and bands[-1]["name"] == r.state and bands[-1]["y1"] == i - 0.5:
                bands[-1]["y1"] = i + 0.5
                continue
            bands.append(
                {
                    "type": "rect",
                    "name": r.state,
                    "xref": "paper",
                    "x0": 0,
                    "x1": 1,
                    "yref": "y",
                    "y0": i - 0.5,
                    "y1": i + 0.5,
                    "fillcolor": STATES[r.state][0],
                    "opacity": 0.13,
                    "line": {"width": 0},
                    "layer": "below",
                }
            )
        fig.update_layout(shapes=bands)
        _mark_first(fig, result, rows, placed, side_by_side, min_width)

    height = max(380, 19 * (len(rows) + 1) + 190)
    y_axis = {
        "tickmode": "array",
        "tickvals": list(range(len(labels))),
        "ticktext": labels,
        "autorange": "reversed",
        "tickfont": {"size": 11},
        "title": {"text": "processor (execution order; ↳ = inside a container)"},
    }
    fig.update_yaxes(**y_axis)
    if side_by_side:
        fig.update_yaxes(title_text=None, row=1, col=2)
    # Side by side, each panel says it in short: at a notebook's width (~670 px with JupyterLab's
    # sidebar open) the long title under each panel ran into the other (lab walk-through).
    fig.update_xaxes(
        title_text="ms since start" if side_by_side else "ms since the execution started", rangemode="tozero"
    )
    if side_by_side:
        fig.update_xaxes(matches="x")  # one time scale for both runs: durations compare by eye
    if title is None:
        title = f"Timeline of {original.route_id}" + (": original vs replay" if replay is not None else "")
    subtitle = _subtitle(original, replay, result)
    return _finish(
        fig,
        title,
        subtitle,
        template,
        barmode="overlay",
        height=height,
        # Below the panels, in rows: on the right it took ~200 px of a notebook's width from
        # the panels, whose titles then overlapped (lab walk-through, 670 px).
        legend={
            "title": {"text": "processor"},
            "traceorder": "normal",
            "orientation": "h",
            "x": 0,
            "xanchor": "left",
            "yref": "container",
            "y": 0,
            "yanchor": "bottom",
        },
        margin={"b": 110},  # the axis titles, then the legend's rows
        hovermode="closest",
    )


def _bar_hover(
    row: _Row,
    rec: ProcessorRecord | None,
    side: str,
    placement: tuple[float, float],
    result: DiffResult | None,
    by_ref: Mapping[ProcessorRef, list[DiffRow]],
) -> str:
    assert rec is not None
    start, duration = placement
    head = f"<b>{_esc(rec.processor_id)}</b> ({_esc(rec.processor_type)}) in {_esc(rec.route_id)}" + (
        f", iteration {rec.iteration}" if rec.iteration else ""
    )
    times = f"{side}: seq {rec.seq}, starts at {_ms(start)}, runs {_ms(duration)}, {rec.status}"
    if rec.error_type:
        times += f"<br>error: {_esc(rec.error_type)}" + (
            f": {_esc(_short(rec.error_message, 80))}" if rec.error_message is not None else ""
        )
    if result is None:
        return f"{head}<br>{times}"
    state = STATES[row.state][1]
    found = by_ref.get(row.ref, []) if row.ref is not None else []
    return f"{head}<br>{times}<br>{state}<br>{_rows_text(found)}"


def _subtitle(original: Execution, replay: Execution | None, result: DiffResult | None) -> str:
    if replay is None or result is None:
        if original.processors is None:
            # A search hit carries no processor records: "0 processors" said the exchange ran
            # none, with an empty chart under it.
            ran = "" if original.processor_count is None else f"{original.processor_count} processors ran, "
            return (
                f"{_who(original)}: {original.status}, {ran}no processor records in a search hit: "
                "fetch the detail with Platform.execution(id)"
            )
        count = len(original.processors)
        return f"{_who(original)}: {original.status}, {count} processors"
    first = result.first_divergence
    where = "no divergence" if first is None else f"first divergence at {_ref_name(first)}"
    counts = Counter(a.state for a in result.aligned)
    parts = [where, f"{len(result.differences)} differences"]
    parts += [f"{counts[s]} {STATES[s][1]}" for s in _DIVERGENT if counts[s]]
    text = "; ".join(parts)
    if result.limitations:
        text += "\ncould not compare: " + _short(result.limitations[0], 150)
    return text


def _ref_name(ref: ProcessorRef) -> str:
    if ref.processor_id == END:
        return "the result (end)"
    if ref.processor_id == START:
        return "the start payload"
    return ref.processor_id + (f" [{ref.iteration}]" if ref.iteration else "")


def _mark_first(
    fig: go.Figure,
    result: DiffResult,
    rows: Sequence[_Row],
    placed: Mapping[str, Mapping[int, tuple[float, float]]],
    side_by_side: bool,
    min_width: float,
) -> None:
    first = result.first_divergence
    if first is None:
        return
    index, rec, side = 0, None, "replay"
    for i, r in enumerate(rows, 1):
        if r.ref == first:
            index = i
            side = "replay" if r.replay is not None else "original"
            rec = r.replay if r.replay is not None else r.original
            break
    start, duration = placed[side].get(rec.seq, (0.0, 0.0)) if rec is not None else (0.0, 0.0)
    axis = "x2" if side_by_side and side == "replay" else "x"
    fig.add_annotation(
        x=start + max(duration, min_width),
        y=index,
        xref=axis,
        yref="y",
        text="first divergence",
        showarrow=True,
        arrowhead=2,
        arrowcolor=STATES["changed"][0],
        ax=70,
        ay=18,
        xanchor="left",
        bgcolor=STATES["changed"][0],
        font={"color": "#000000", "size": 12},
    )


# --------------------------------------------------------------------------- route graph


def route_graph(
    execution: Execution,
    replay: Execution | None = None,
    *,
    diff: DiffResult | None = None,
    theme: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """The route as a graph: one node per processor (label: processor id and type), edges for the
    flow (``next`` from one processor to the one after it at the same level; ``child`` into the
    first processor a container ran, per iteration), from :meth:`moat_nb.lineage.Lineage.graph`.

    One execution: nodes coloured by whether the processor set or changed a field (lineage).
    With a replay: nodes of the diff alignment coloured by state (:data:`STATES`); nodes and
    edges only one side ran are drawn in their side's colour and lane (original left, replay
    right). Failed processors get a red ring, the first divergence a star. Each node trace
    carries ``meta = {"kind": "node", "state"}`` and per-node ``customdata = [row, processor_id,
    iteration, status]``."""
    _executions("plots.route_graph()", execution, replay)
    replay, result = _resolve(execution, replay, diff)
    template = _template(theme)
    rows = _rows(execution, replay, result)
    iterated = _iterated(rows)
    if result is None:
        lin = lineage(execution)
        graph_nodes = {n["seq"]: n for n in lin.graph().nodes}
        captured = execution.capture_mode != "ROUTE" and any(
            p.output_body is not None or p.output_headers is not None for p in execution.processors or ()
        )
        for i, r in enumerate(rows):
            node = graph_nodes.get(r.any.seq, {})
            cls = "changed" if node.get("changed") else "unchanged"
            rows[i] = _Row(None, r.original, None, cls if captured else "uncaptured")
        palette = _LINEAGE
        lineage_rows: dict[int | None, list[str]] = {}
        for lr in lin.rows:
            lineage_rows.setdefault(lr.seq, []).append(f"{lr.change} {lr.path}")
    else:
        palette = {k: (c, _state_text(k, execution, replay)) for k, (c, _) in STATES.items()}
        lineage_rows = {}
    by_ref: dict[ProcessorRef, list[DiffRow]] = {}
    for d in result.rows if result else ():
        by_ref.setdefault(d.processor, []).append(d)

    # Layout computed by hand rather than with networkx (not a dependency) or graphviz: a route
    # trace is a tree walked in execution order, so y = row in execution (alignment) order and
    # x = nesting depth give a deterministic drawing without crossings; the lanes (-0.3 / +0.3)
    # keep the nodes only one side ran apart from the shared path.
    lane = {"removed": -0.3, "added": 0.3}
    xs = [r.any.depth + lane.get(r.state, 0.0) for r in rows]
    fig = go.Figure()
    _route_edges(fig, execution, replay, rows, xs)

    for state, (colour, text) in palette.items():
        idx = [i for i, r in enumerate(rows) if r.state == state]
        if not idx:
            continue
        hover = [_node_hover(rows[i], result, by_ref, lineage_rows) for i in idx]
        failed = [_failed(rows[i]) for i in idx]
        fig.add_trace(
            go.Scatter(
                x=[xs[i] for i in idx],
                y=idx,
                mode="markers+text",
                text=[_esc(_node_text(rows[i].any, iterated)) for i in idx],
                textposition="middle right",
                textfont={"size": 11},
                marker={
                    "size": 14,
                    "color": colour,
                    "symbol": [_SYMBOLS.get(state, "square" if f else "circle") for f in failed],
                    "line": {"width": 1, "color": "#333333"},
                },
                name=text,
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
                customdata=[
                    [i, rows[i].any.processor_id, rows[i].any.iteration, _status(rows[i])] for i in idx
                ],
                meta={"kind": "node", "state": state},
            )
        )
    failed_idx = [i for i, r in enumerate(rows) if _failed(r)]
    if failed_idx:
        fig.add_trace(
            go.Scatter(
                x=[xs[i] for i in failed_idx],
                y=failed_idx,
                mode="markers",
                marker={
                    "size": 24,
                    "symbol": "circle-open",
                    "color": STATUS_COLOURS["FAILED"],
                    "line": {"width": 2.5},
                },
                name="failed (red ring)",
                hoverinfo="skip",
                meta={"kind": "failed"},
            )
        )
    first = result.first_divergence if result else None
    first_idx = [i for i, r in enumerate(rows) if first is not None and r.ref == first]
    if first_idx:
        fig.add_trace(
            go.Scatter(
                x=[xs[i] - 0.22 for i in first_idx],
                y=first_idx,
                mode="markers",
                marker={"size": 17, "symbol": "star", "color": STATES["changed"][0], "line": {"width": 1}},
                name="first divergence",
                hoverinfo="skip",
                meta={"kind": "first"},
            )
        )
    if not rows:
        fig.add_annotation(
            text="no processor records: fetch the execution's detail (Platform.execution(id))",
            showarrow=False,
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
        )
    depth = max((x for x in xs), default=0.0)
    fig.update_xaxes(visible=False, range=[-0.8, depth + 3.2])
    fig.update_yaxes(visible=False, autorange="reversed")
    if title is None:
        title = f"Route {execution.route_id}" + (": original vs replay path" if replay is not None else "")
    return _finish(
        fig,
        title,
        _subtitle(execution, replay, result),
        template,
        height=max(420, 22 * len(rows) + 160),
        hovermode="closest",
        legend={"title": {"text": "node / edge"}},
    )


def _node_text(rec: ProcessorRecord, iterated: set[tuple[str, str]]) -> str:
    it = f" [{rec.iteration}]" if (rec.route_id, rec.processor_id) in iterated else ""
    return f"{rec.processor_id}{it} · {rec.processor_type}"


def _status(r: _Row) -> str:
    a = r.original.status if r.original is not None else None
    b = r.replay.status if r.replay is not None else None
    if a and b and a != b:
        return f"{a} → {b}"
    return a or b or ""


def _failed(r: _Row) -> bool:
    return any(p is not None and p.status == "FAILED" for p in (r.original, r.replay))


def _node_hover(
    row: _Row,
    result: DiffResult | None,
    by_ref: Mapping[ProcessorRef, list[DiffRow]],
    lineage_rows: Mapping[int | None, list[str]],
) -> str:
    rec = row.any
    seqs = "/".join("-" if p is None else str(p.seq) for p in (row.original, row.replay))
    head = (
        f"<b>{_esc(rec.processor_id)}</b> ({_esc(rec.processor_type)}) in {_esc(rec.route_id)}"
        + (f", iteration {rec.iteration}" if rec.iteration else "")
        + f"<br>seq {seqs if result else rec.seq}, status {_status(row)}"
    )
    if rec.error_type and _failed(row):
        head += f"<br>error: {_esc(rec.error_type)}"
    if result is None:
        changes = lineage_rows.get(rec.seq, [])
        lines = [_esc(c) for c in changes[:_HOVER_ROWS]]
        if len(changes) > _HOVER_ROWS:
            lines.append(f"… {len(changes) - _HOVER_ROWS} more")
        return head + "<br>" + ("<br>".join(lines) if lines else _LINEAGE.get(row.state, ("", ""))[1])
    found = by_ref.get(row.ref, []) if row.ref is not None else []
    return f"{head}<br>{STATES[row.state][1]}<br>{_rows_text(found)}"


_EDGE_STYLES = (("next", "solid", ": next processor"), ("child", "dot", ": into a container"))


def _route_edges(
    fig: go.Figure, original: Execution, replay: Execution | None, rows: Sequence[_Row], xs: Sequence[float]
) -> None:
    """Edges of each side mapped onto the rows; drawn once when both sides have them."""
    per_side: list[tuple[str, set[tuple[int, int, str]]]] = []
    for side, execution in (("original", original), ("replay", replay)):
        if execution is None or execution.processors is None:  # a search hit has no edges to draw
            continue
        row_of = {}
        for i, r in enumerate(rows):
            rec = r.original if side == "original" else r.replay
            if rec is not None:
                row_of[rec.seq] = i
        recs = {p.seq: p for p in execution.processors or ()}
        edges = lineage(execution).graph().edges
        keep: set[tuple[int, int, str]] = set()
        entered = {
            e["target"]
            for e in edges
            if e["kind"] == "next" and recs[e["source"]].iteration == recs[e["target"]].iteration
        }
        for e in edges:
            if e["kind"] == "child" and e["target"] in entered:
                continue  # the flow reaches it from its previous sibling, not the container
            if e["source"] in row_of and e["target"] in row_of:
                keep.add((row_of[e["source"]], row_of[e["target"]], e["kind"]))
        per_side.append((side, keep))
    if not per_side:
        return
    if len(per_side) == 1:
        groups = {"both": per_side[0][1]}
    else:
        a, b = per_side[0][1], per_side[1][1]
        groups = {"both": a & b, "original": a - b, "replay": b - a}
    style = {
        "both": ("#8C96A3", "flow"),
        "original": (STATES["removed"][0], "path only in the original"),
        "replay": (STATES["added"][0], "path only in the replay"),
    }
    for group, edges in groups.items():
        colour, text = style[group]
        for kind, dash, suffix in _EDGE_STYLES:
            chosen = sorted(e for e in edges if e[2] == kind)
            if not chosen:
                continue
            x: list[float | None] = []
            y: list[float | None] = []
            for s, t, _ in chosen:
                if kind == "child":
                    # An elbow down the parent's column, then across to the child: a straight
                    # line would run through the labels written to the right of the nodes.
                    x += [xs[s], xs[s], xs[t], None]
                    y += [s, t, t, None]
                else:
                    x += [xs[s], xs[t], None]
                    y += [s, t, None]
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    line={"color": colour, "width": 1.5 if group == "both" else 2.5, "dash": dash},
                    name=text + (suffix if group == "both" else f" ({kind})"),
                    legendgroup=group,
                    hoverinfo="skip",
                    meta={"kind": "edge", "group": group, "edge": kind, "count": len(chosen)},
                )
            )


# --------------------------------------------------------------------------- diff view

#: Columns of the heatmap, in the order a reader scans a processor's output.
_FIELD_ORDER = ("status", "error", "body", "headers", "properties", "route")
_FIELD_TEXT = {"route": "route (ran on one side)"}
_TABLE_COLUMNS = ("processor", "field", "path", "original", "replay", "kind", "cause", "noise")


def _ref_label(ref: ProcessorRef) -> str:
    if ref.processor_id in (START, END):
        return _ref_name(ref)
    seqs = "/".join("-" if s is None else str(s) for s in (ref.seq_original, ref.seq_replay))
    return f"{_ref_name(ref)} (seq {seqs})"


def diff_view(
    diff: DiffResult,
    kind: str = "heatmap",
    *,
    theme: str | None = None,
    title: str | None = None,
    max_rows: int = 500,
) -> go.Figure:
    """The differences of a :class:`~moat_nb.diff.DiffResult`.

    ``kind="heatmap"``: one row per processor with a difference (``start payload`` first,
    ``result (end)`` last), one column per field (status, error, body, headers, properties,
    route); a cell counts the non-noise differences, a grey cell holds only noise, hover lists
    the paths. ``kind="table"``: a ``go.Table`` of the diff rows (the first ``max_rows``), noise
    rows greyed, rows tinted by state as in :func:`timeline`."""
    if kind not in ("heatmap", "table"):
        raise ValidationError(
            f"kind {kind!r} is not 'heatmap' or 'table'",
            code="BAD_KIND",
            hint="pass kind='heatmap' (processors x fields) or kind='table' (one row per difference)",
        )
    if not isinstance(diff, DiffResult):
        raise ValidationError(
            f"diff_view takes a DiffResult, not {type(diff).__name__}",
            code="BAD_ARGUMENT",
            hint="pass moat_nb.diff(original, replay)",
        )
    template = _template(theme)
    subtitle = diff.summary().splitlines()[0]
    if kind == "table":
        return _diff_table(diff, template, title or "Differences, one row each", subtitle, max_rows)
    refs = list(dict.fromkeys(r.processor for r in diff.rows))
    cells: dict[tuple[ProcessorRef, str], list[DiffRow]] = {}
    for r in diff.rows:
        cells.setdefault((r.processor, r.field), []).append(r)
    z: list[list[int | None]] = []
    text: list[list[str]] = []
    hover: list[list[str]] = []
    for ref in refs:
        z_row, t_row, h_row = [], [], []
        for fld in _FIELD_ORDER:
            found = cells.get((ref, fld), [])
            real = [r for r in found if not r.noise]
            z_row.append(len(real) if found else None)
            t_row.append(str(len(real)) if real else "")
            h_row.append(f"<b>{_esc(_ref_label(ref))}</b> · {fld}<br>" + _rows_text(found) if found else "")
        z.append(z_row)
        text.append(t_row)
        hover.append(h_row)
    fig = go.Figure()
    top = max((v for row in z for v in row if v), default=0)
    if refs:
        grey = "rgba(140,150,163,0.35)"
        scale = [[0.0, grey], [1.0, STATES["changed"][0]]]
        if top > 1:
            scale = [[0.0, grey], [1 / top, "#F5D08A"], [1.0, "#B36B00"]]
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=[_FIELD_TEXT.get(f, f) for f in _FIELD_ORDER],
                y=[_ref_label(r) for r in refs],
                text=text,
                texttemplate="%{text}",
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
                colorscale=scale,
                zmin=0,
                zmax=max(top, 1),
                xgap=2,
                ygap=2,
                colorbar={"title": {"text": "differences<br>(noise excluded)"}},
                meta={"kind": "heatmap"},
            )
        )
    else:
        fig.add_annotation(text="no differences", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_yaxes(autorange="reversed", title_text="processor (execution order)", type="category")
    fig.update_xaxes(title_text="field", side="top", type="category")
    return _finish(
        fig,
        title or "Differences by processor and field",
        subtitle,
        template,
        height=max(360, 26 * len(refs) + 240),
        margin={"t": 150},  # the field names and axis title sit above the cells
    )


def _diff_table(diff: DiffResult, template: str, title: str, subtitle: str, max_rows: int) -> go.Figure:
    rows = diff.rows[:max_rows]
    columns: list[list[str]] = [[] for _ in _TABLE_COLUMNS]
    fills: list[str] = []
    for r in rows:
        values = (
            _ref_label(r.processor),
            r.field,
            r.path,
            "(absent)" if r.kind == "added" else _short(r.original, 80),
            "(absent)" if r.kind == "removed" else _short(r.replay, 80),
            r.kind,
            r.cause,
            r.noise_rule or "yes" if r.noise else "",
        )
        for col, v in zip(columns, values, strict=True):
            col.append(_esc(v))
        if r.noise:
            state = "noise"
        elif r.field == "route":
            state = r.kind  # added / removed
        else:
            state = "input" if r.cause == "input" else "changed"
        fills.append(_rgba(STATES[state][0], 0.22))
    fig = go.Figure(
        go.Table(
            columnwidth=[2.2, 0.9, 2.2, 2.6, 2.6, 0.9, 0.7, 1.3],
            header={
                "values": [f"<b>{c}</b>" for c in _TABLE_COLUMNS],
                "fill": {"color": "rgba(128,128,128,0.30)"},
                "align": "left",
            },
            cells={"values": columns, "fill": {"color": [fills] * len(_TABLE_COLUMNS)}, "align": "left"},
            meta={"kind": "table", "rows": len(rows), "total": len(diff.rows)},
        )
    )
    more = f" (first {len(rows)} of {len(diff.rows)} rows)" if len(diff.rows) > len(rows) else ""
    return _finish(fig, title + more, subtitle, template, height=min(900, 28 * len(rows) + 200))


def _rgba(colour: str, alpha: float) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


# --------------------------------------------------------------------------- field lineage


def field_lineage(
    execution: Execution,
    path: str,
    *,
    changes_only: bool = False,
    theme: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """One field's value across the processors of ``execution``, from the route's entry on
    (:meth:`moat_nb.lineage.Lineage.field_history`; ``path`` in diff path syntax, e.g.
    ``body:$.total`` or ``headers:orderTotal``). Numbers draw as a step chart; anything else as
    a categorical strip, one level per distinct value. Processors where the value changed carry
    a marker; ``changes_only=True`` keeps only the entry and those processors (long routes).

    Raises :class:`~moat_nb.errors.ValidationError` for a path that does not parse."""
    _executions("plots.field_lineage()", execution, None)
    template = _template(theme)
    history = lineage(execution).field_history(path)
    entries = [e for i, e in enumerate(history.entries) if not changes_only or i == 0 or e.changed]
    numeric = all(
        isinstance(e.value, int | float) and not isinstance(e.value, bool) for e in entries if e.present
    ) and any(e.present for e in entries)
    ticks = [
        "start" if e.processor_id == START else e.processor_id + (f" [{e.iteration}]" if e.iteration else "")
        for e in entries
    ]
    hover = [
        f"<b>{_esc(t)}</b>"
        + (f" (seq {e.seq}, {_esc(e.route_id)})" if e.seq is not None else "")
        + f"<br>{_esc(path)} = "
        + (_esc(_short(e.value, 200)) if e.present else "(absent)")
        + ("<br>changed here" if e.changed else "")
        for t, e in zip(ticks, entries, strict=True)
    ]
    xs = list(range(len(entries)))
    absent = [i for i, e in enumerate(entries) if not e.present]
    if numeric:
        ys: list[Any] = [e.value if e.present else None for e in entries]
        y_axis: dict[str, Any] = {"title": {"text": path}}
        floor = min(v for v in ys if v is not None)
        marks = [floor if v is None else v for v in ys]  # where an absent value is marked
    else:
        shown = ["(absent)" if not e.present else _short(e.value, 40) for e in entries]
        levels = list(dict.fromkeys(shown))
        ys = [levels.index(s) for s in shown]
        y_axis = {
            "title": {"text": path},
            "tickmode": "array",
            "tickvals": list(range(len(levels))),
            "ticktext": [_esc(v) for v in levels],
        }
        marks = ys
    fig = go.Figure(
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines+markers",
            line={"shape": "hv", "color": STATUS_COLOURS["COMPLETED"], "width": 2},
            marker={"size": 6, "color": STATUS_COLOURS["COMPLETED"]},
            name="value after the processor",
            hovertext=hover,
            hovertemplate="%{hovertext}<extra></extra>",
            connectgaps=False,
            meta={"kind": "value", "numeric": numeric},
        )
    )
    if numeric and absent:
        fig.add_trace(
            go.Scatter(
                x=absent,
                y=[marks[i] for i in absent],
                mode="markers",
                marker={"symbol": "x-thin-open", "size": 9, "color": STATES["same"][0], "line": {"width": 2}},
                name="field absent (marked at the lowest value)",
                hovertext=[hover[i] for i in absent],
                hovertemplate="%{hovertext}<extra></extra>",
                meta={"kind": "absent"},
            )
        )
    changed = [i for i, e in enumerate(entries) if e.changed]
    fig.add_trace(
        go.Scatter(
            x=changed,
            y=[marks[i] for i in changed],
            mode="markers",
            marker={
                "symbol": _SYMBOLS["changed"],
                "size": 12,
                "color": STATES["changed"][0],
                "line": {"width": 1, "color": "#333333"},
            },
            name="the value changes here",
            hovertext=[hover[i] for i in changed],
            hovertemplate="%{hovertext}<extra></extra>",
            meta={"kind": "changes"},
        )
    )
    fig.update_xaxes(
        tickmode="array",
        tickvals=xs,
        ticktext=[_esc(t) for t in ticks],
        tickangle=-60,
        tickfont={"size": 10},
        title_text="processor (in the order they finished)",
    )
    fig.update_yaxes(**y_axis)
    return _finish(
        fig,
        title or f"{path} across the processors of {execution.route_id}",
        f"{_who(execution)}: {len(changed)} change{'' if len(changed) == 1 else 's'} over "
        f"{len(entries)} steps"
        + ("" if numeric else "; text values: one level per distinct value")
        + (
            "; payloads not captured at processors (ROUTE mode): entry and exit only"
            if any(e.processor_id == "(route)" for e in entries)
            else ""
        ),
        template,
        height=520,
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
    )


# --------------------------------------------------------------------------- sweeps


_GOOD = ("same", "pass", "ok", "match", "expected", "completed", "success")
_BAD = ("fail", "error", "diverg", "differ", "regress", "mismatch", "unexpected", "timed_out", "abort")
_CYCLE = ("#E69F00", "#56B4E9", "#CC79A7", "#009E73", "#F0E442", "#8C96A3")


def _category_colours(values: Sequence[str]) -> dict[str, str]:
    """A colour per category: pass-like blue, failure-like red, others from the Okabe-Ito cycle."""
    out: dict[str, str] = {}
    free = iter(_CYCLE * (len(values) // len(_CYCLE) + 1))
    for v in values:
        low = v.lower()
        if any(k in low for k in _BAD):
            out[v] = STATUS_COLOURS["FAILED"]
        elif any(k in low for k in _GOOD):
            out[v] = STATUS_COLOURS["COMPLETED"]
        elif "noise" in low:
            out[v] = STATES["noise"][0]
        else:
            out[v] = next(free)
    return out


def sweep_outcomes(
    frame: pd.DataFrame,
    *,
    verdict: str = "verdict",
    status: str | None = None,
    x: str | None = None,
    y: str | None = None,
    hover: Sequence[str] = (),
    theme: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """Outcomes of a batch of replays (one row each, e.g. from ``moat_nb.batch``): a bar chart of
    the ``verdict`` counts, of the ``status`` counts if that column is named, and, with ``x`` and a
    numeric ``y``, a scatter of input vs output coloured by verdict (``hover`` columns added to
    its hover text). Takes a pandas frame (or anything with ``.to_pandas()``, such as polars)."""
    if not hasattr(frame, "columns") or not hasattr(frame, "iloc"):
        if hasattr(frame, "to_pandas"):
            frame = frame.to_pandas()
        else:
            raise ValidationError(
                f"sweep_outcomes takes a pandas DataFrame, not {type(frame).__name__}",
                code="BAD_ARGUMENT",
                hint="pass the frame of a sweep, e.g. result.to_pandas()",
            )
    from pandas.api.types import is_numeric_dtype

    wanted = [c for c in (verdict, status, x, y, *hover) if c is not None]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ValidationError(
            f"the frame has no column {', '.join(map(repr, missing))}",
            code="BAD_COLUMN",
            hint=f"its columns are {', '.join(map(str, frame.columns))}",
        )
    if (x is None) != (y is None):
        raise ValidationError(
            "x and y go together: name both columns for the scatter, or neither",
            code="BAD_ARGUMENT",
            hint="e.g. x='quantity', y='total'",
        )
    if y is not None and not is_numeric_dtype(frame[y]):
        raise ValidationError(
            f"column {y!r} is not numeric ({frame[y].dtype})",
            code="BAD_COLUMN",
            hint="convert it first, e.g. frame[y].astype(float), or pick a numeric output column",
        )
    template = _template(theme)
    panels = [f"replays by {verdict}"]
    if status is not None:
        panels.append(f"replays by {status}")
    if x is not None:
        panels.append(f"{y} by {x}")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels, horizontal_spacing=0.1)
    verdicts = frame[verdict].astype("string").fillna("(none)")
    order = list(dict.fromkeys(verdicts))
    colours = _category_colours(order)
    counts = verdicts.value_counts()
    fig.add_trace(
        go.Bar(
            x=order,
            y=[int(counts[v]) for v in order],
            marker={"color": [colours[v] for v in order]},
            name=verdict,
            showlegend=False,
            text=[int(counts[v]) for v in order],
            textposition="auto",
            hovertemplate="%{x}: %{y} replays<extra></extra>",
            meta={"kind": "verdict_counts"},
        ),
        row=1,
        col=1,
    )
    fig.update_xaxes(title_text=verdict, row=1, col=1)
    fig.update_yaxes(title_text="replays", row=1, col=1)
    col = 1
    if status is not None:
        col += 1
        statuses = frame[status].astype("string").fillna("(none)")
        s_order = list(dict.fromkeys(statuses))
        s_counts = statuses.value_counts()
        s_colours = {s: STATUS_COLOURS.get(s, _category_colours([s])[s]) for s in s_order}
        fig.add_trace(
            go.Bar(
                x=s_order,
                y=[int(s_counts[s]) for s in s_order],
                marker={"color": [s_colours[s] for s in s_order]},
                name=status,
                showlegend=False,
                text=[int(s_counts[s]) for s in s_order],
                textposition="auto",
                hovertemplate="%{x}: %{y} replays<extra></extra>",
                meta={"kind": "status_counts"},
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text=status, row=1, col=col)
        fig.update_yaxes(title_text="replays", row=1, col=col)
    if x is not None and y is not None:
        col += 1
        for v in order:
            part = frame[verdicts == v]
            texts = [
                "<br>".join(
                    [f"<b>{_esc(v)}</b>", f"{_esc(x)} = {_esc(rec[x])}", f"{_esc(y)} = {_esc(rec[y])}"]
                    + [f"{_esc(h)} = {_esc(_short(rec[h], 60))}" for h in hover]
                )
                for rec in part.to_dict("records")
            ]
            fig.add_trace(
                go.Scatter(
                    x=part[x].tolist(),
                    y=part[y].tolist(),
                    mode="markers",
                    marker={"color": colours[v], "size": 9, "line": {"width": 0.5, "color": "#333333"}},
                    name=v,
                    legendgroup=v,
                    hovertext=texts,
                    hovertemplate="%{hovertext}<extra></extra>",
                    meta={"kind": "scatter", "verdict": v},
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text=x, row=1, col=col)
        fig.update_yaxes(title_text=y, row=1, col=col)
    return _finish(
        fig,
        title or f"Outcomes of {len(frame)} replays",
        ", ".join(f"{int(counts[v])} {v}" for v in order),
        template,
        height=440,
        legend={"title": {"text": verdict}},
    )
