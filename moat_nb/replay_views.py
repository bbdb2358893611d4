"""The views of one replay as table records and figures: trace, diff, lineage, audit receipt.

Pure where it can be (records from wire dicts and results of :mod:`moat_nb.diff` /
:mod:`moat_nb.lineage`); the figures are plotly's. :class:`~moat_nb.workbench.ReplayWorkbench`
shows them; they are separate so that other views (a dashboard, a report) can reuse them.

The figures of the diff and the lineage are :mod:`moat_nb.plots`'; a figure that cannot be
drawn is named with the reason, and the tables still show.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anywidget
import ipywidgets as widgets
import plotly.graph_objects as go
import traitlets

from . import audit as audit_core
from .assets import asset
from .diff import DiffResult
from .errors import MoatError
from .lineage import Lineage
from .model import parse_time
from .table import Column, format_ms, format_time_cell

__all__ = [
    "DIFF_COLUMNS",
    "LINEAGE_COLUMNS",
    "RECEIPT_COLUMNS",
    "TRACE_COLUMNS",
    "TraceTimeline",
    "diff_figures",
    "diff_records",
    "draw_timeline",
    "figure_bundle",
    "lineage_figures",
    "lineage_records",
    "plot_box",
    "receipt_records",
    "text_of",
    "timeline_widget",
    "trace_record",
]

TRACE_COLUMNS: tuple[Column, ...] = (
    Column("seq", "Seq", kind="number"),
    Column("route_id", "Route"),
    Column("processor_id", "Processor", kind="code"),
    Column("processor_type", "Type"),
    Column("status", "Status", kind="status"),
    Column("offset_ms", "Start", kind="number", format=format_ms),
    Column("duration_ms", "Duration", kind="number", desc_first=True, format=format_ms),
    Column("stubbed", "Stubbed", format=lambda v: "stubbed" if v else ""),
    Column("error", "Error"),
)
DIFF_COLUMNS: tuple[Column, ...] = (
    Column("processor", "Processor", kind="code"),
    Column("field", "Field"),
    Column("path", "Path", kind="code"),
    Column("original", "Original", kind="code"),
    Column("replay", "Replay", kind="code"),
    Column("kind", "Kind"),
    Column("cause", "Cause"),
    Column("noise", "Noise", format=lambda v: v or ""),
)
LINEAGE_COLUMNS: tuple[Column, ...] = (
    Column("seq", "Seq", kind="number"),
    Column("processor_id", "Processor", kind="code"),
    Column("route_id", "Route"),
    Column("path", "Path", kind="code"),
    Column("change", "Change"),
    Column("before", "Before", kind="code"),
    Column("after", "After", kind="code"),
)
RECEIPT_COLUMNS: tuple[Column, ...] = (
    Column("seq", "Seq", kind="number"),
    Column("occurred_at", "When (UTC)", format=format_time_cell),
    Column("action", "Action"),
    Column("actor", "Actor"),
    Column("outcome", "Outcome", kind="status"),
    Column("hash", "Hash", kind="code", sortable=False),
    Column("check", "Hash check", sortable=False),
)


# --------------------------------------------------------------------------- records for tables


def _offset_ms(start: Any, origin: Any) -> float | None:
    a, b = parse_time(start) if start else None, parse_time(origin) if origin else None
    if a is None or b is None:
        return None
    return (a - b).total_seconds() * 1000


def trace_record(data: Mapping[str, Any], origin: Any) -> dict[str, Any]:
    """A ``processor`` event (wire form) as a trace table record."""
    error = data.get("errorMessage") or ""
    if data.get("errorType"):
        error = f"{str(data['errorType']).rsplit('.', 1)[-1]}: {error}"
    return {
        "seq": data.get("seq"),
        "route_id": data.get("routeId"),
        "processor_id": data.get("processorId"),
        "processor_type": data.get("processorType"),
        "status": data.get("status"),
        "offset_ms": _offset_ms(data.get("startTime"), origin),
        "duration_ms": data.get("durationMs"),
        "stubbed": bool(data.get("stubbed")),
        "endpoint_uri": data.get("endpointUri"),
        "error": error,
    }


def text_of(value: Any) -> str:
    """A value as one line of text (JSON for anything but a string)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def diff_records(result: DiffResult) -> list[dict[str, Any]]:
    first = result.first_divergence
    return [
        {
            "processor": r.processor.label,
            "field": r.field,
            "path": r.path,
            "original": "(absent)" if r.kind == "added" else text_of(r.original),
            "replay": "(absent)" if r.kind == "removed" else text_of(r.replay),
            "kind": r.kind,
            "cause": r.cause,
            "noise": r.noise_rule or ("noise" if r.noise else ""),
            "_noise": r.noise,
            "_first": first is not None and r.processor == first and not r.noise and r.cause == "route",
        }
        for r in result.rows
    ]


def lineage_records(result: Lineage) -> list[dict[str, Any]]:
    return [
        {
            "seq": r.seq,
            "processor_id": r.processor_id,
            "route_id": r.route_id,
            "path": r.path,
            "change": r.change,
            "before": text_of(r.before),
            "after": text_of(r.after),
        }
        for r in result
    ]


def receipt_records(events: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Audit events as receipt rows; ``check`` recomputes each event's hash from its content
    and its ``prevHash`` (section 7), so a receipt altered on the way shows."""
    out = []
    for e in events:
        try:
            ok = audit_core.event_hash(e, str(e.get("prevHash"))) == e.get("hash")
        except MoatError:
            ok = False
        actor = e.get("actor") if isinstance(e.get("actor"), Mapping) else {}
        out.append(
            {
                "seq": e.get("seq"),
                "occurred_at": e.get("occurredAt"),
                "action": e.get("action"),
                "actor": actor.get("username") if actor else "",
                "outcome": e.get("outcome"),
                "hash": str(e.get("hash") or "")[:16] + "…",
                "check": "✓ recomputes" if ok else "✗ does not match its content",
                "_ok": ok,
            }
        )
    return out


# --------------------------------------------------------------------------- figures


class TraceTimeline(anywidget.AnyWidget):
    """A replay's processors on a time axis, filling while the trace streams (browser side:
    ``widgets/timeline.js``). ``bars``: ``{label, start, duration, status, note}`` in
    milliseconds since the replay started; :meth:`set_records` makes them from trace records."""

    _esm = asset("timeline.js")
    _css = asset("moat.css") + asset("timeline.css")

    bars = traitlets.List(traitlets.Dict()).tag(sync=True)
    title = traitlets.Unicode("Timeline").tag(sync=True)
    axis_label = traitlets.Unicode("since the replay started").tag(sync=True)
    empty_text = traitlets.Unicode("").tag(sync=True)
    max_height = traitlets.Int(320).tag(sync=True)
    follow = traitlets.Bool(True).tag(sync=True)

    def set_records(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.bars = [
            {
                "label": f"{r['seq']} {r['processor_id']}",
                "start": r["offset_ms"] or 0.0,
                "duration": r["duration_ms"] or 0.0,
                "status": r["status"] or "",
                "note": " · ".join(
                    p
                    for p in (r.get("processor_type"), "stubbed" if r.get("stubbed") else "", r.get("error"))
                    if p
                ),
            }
            for r in records
        ]


def timeline_widget() -> TraceTimeline:
    return TraceTimeline(
        title="Timeline of the replay (live)",
        empty_text="Press Replay: the processors appear here as they run.",
    )


def draw_timeline(timeline: TraceTimeline, records: Sequence[Mapping[str, Any]]) -> None:
    timeline.set_records(records)


Figure = tuple[str, go.Figure]


def _figures(makers: Sequence[tuple[str, Callable[[], go.Figure]]]) -> tuple[list[Figure], list[str]]:
    """(figures that could be drawn, why the others could not): a figure that fails must not
    hide the tables next to it."""
    figures: list[Figure] = []
    problems: list[str] = []
    for name, make in makers:
        try:
            figures.append((name, make()))
        except MoatError as exc:
            problems.append(f"{name}: {exc.message}")
        except Exception as exc:  # noqa: BLE001 - see the docstring
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
    return figures, problems


def diff_figures(result: DiffResult) -> tuple[list[Figure], list[str]]:
    """The diff's figures from :mod:`moat_nb.plots`: the side-by-side timeline (divergent
    processors marked) and the processors × fields heatmap."""
    from . import plots  # plotting imports plotly.io (and nbformat): only once a diff is shown

    return _figures(
        [
            ("timeline", lambda: plots.timeline(result.original, result.replay, diff=result)),
            ("heatmap", lambda: plots.diff_view(result, "heatmap")),
        ]
    )


def lineage_figures(result: DiffResult, path: str | None) -> tuple[list[Figure], list[str]]:
    """The route graph (original vs replay) and, for a diff path, that field across the replay's
    processors (:func:`moat_nb.plots.route_graph`, :func:`moat_nb.plots.field_lineage`)."""
    from . import plots

    makers: list[tuple[str, Callable[[], go.Figure]]] = [
        ("route graph", lambda: plots.route_graph(result.original, result.replay, diff=result))
    ]
    if path and path.split(":", 1)[0] in ("body", "headers", "properties"):
        makers.append(("field lineage", lambda: plots.field_lineage(result.replay, path)))
    return _figures(makers)


def figure_bundle(fig: go.Figure) -> dict[str, Any]:
    """The MIME bundle JupyterLab's plotly renderer draws (``application/vnd.plotly.v1+json``),
    built without plotly's renderer machinery (which guesses a renderer from the environment and
    imports nbformat) and without a plotly.js copy inside every output."""
    spec = json.loads(fig.to_json())
    spec["config"] = {"displaylogo": False, "responsive": True}
    title = fig.layout.title.text or "figure"
    return {"application/vnd.plotly.v1+json": spec, "text/plain": f"<plotly figure: {title}>"}


def plot_box(fig: go.Figure) -> widgets.Output:
    """A figure as a widget: an Output holding its MIME bundle (class ``moat-plot``, whose CSS
    keeps plotly's text readable in a dark theme). The backgrounds are made transparent, so the
    figure sits on the notebook's own colour in the light and the dark theme."""
    fig = go.Figure(fig)
    fig.update_layout(paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")
    out = widgets.Output(layout=widgets.Layout(width="100%"))
    out.outputs = ({"output_type": "display_data", "data": figure_bundle(fig), "metadata": {}},)
    out.add_class("moat-plot")
    return out
