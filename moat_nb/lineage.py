"""Payload lineage of one execution, and the replay family of an exchange (DESIGN.md section 9).

:func:`lineage` answers "which processor set, changed or removed which field": for every
processor record it compares the processor's input (body, headers, properties before it) with its
output, with the same structural comparison and path syntax as :mod:`moat_nb.diff` (paths such
as ``body:$.total``, ``headers:orderTotal``, ``properties:order.lines[0].qty``; see
:mod:`moat_nb.noise`). A processor with children (a ``choice``, ``split``, ``loop``, ``filter``,
``doTry``, or a ``to`` that called a ``direct:`` sub-route) is credited only with what its
children did not do: the ``split``'s aggregated body is the ``split``'s change, the discount a
``when`` branch set is that branch step's. :meth:`Lineage.field_history` follows one field's value
across processors; :meth:`Lineage.graph` gives nodes and edges for a plot.

:func:`replay_family` builds the graph original -> replays -> replays of replays from executions
(``isReplay``, ``sourceExchangeId``, ``exchangeId``); a source that is not among them appears as
a node marked ``known=False`` so that the family stays connected.

Pure: records in, values out. Frames are made lazily (pandas/polars imported on demand).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .diff import JsonCache, PayloadComparer, frame, json_changes, payload_changes, require_execution
from .errors import ValidationError
from .model import Execution, ProcessorRecord, format_time
from .noise import ParsedPath, check_prefix, parse_path

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

__all__ = [
    "LINEAGE_COLUMNS",
    "FamilyGraph",
    "FieldHistory",
    "FieldValue",
    "Lineage",
    "LineageGraph",
    "LineageRow",
    "lineage",
    "replay_family",
]

#: Columns of :meth:`Lineage.to_pandas` with their Arrow types.
LINEAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("seq", "int64"),
    ("processor_id", "string"),
    ("route_id", "string"),
    ("iteration", "int64"),
    ("field", "string"),
    ("path", "string"),
    ("change", "string"),
    ("before", "string"),
    ("after", "string"),
)

#: Pseudo processor id: the whole route, when processors carry no payloads (``ROUTE`` capture).
ROUTE = "(route)"
#: Pseudo processor id: the route's entry (the start payload), first entry of a field history.
START = "(start)"

_CHANGE = {"added": "set", "removed": "removed", "changed": "changed", "type_changed": "changed"}


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else _json_text(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


# --------------------------------------------------------------------------- one execution


@dataclass(frozen=True, slots=True)
class LineageRow:
    """One field one processor touched: ``change`` is ``set`` (it was absent before),
    ``changed`` or ``removed``; ``before`` / ``after`` are ``None`` where absent."""

    seq: int | None
    processor_id: str
    route_id: str
    iteration: int
    field: str
    path: str
    change: str
    before: Any
    after: Any


@dataclass(frozen=True, slots=True)
class FieldValue:
    """A field's value after one processor (``present=False``: the field did not exist)."""

    seq: int | None
    processor_id: str
    route_id: str
    iteration: int
    present: bool
    value: Any
    changed: bool


@dataclass(frozen=True)
class FieldHistory:
    """One field's value across processors, from the route's entry (``(start)``) on."""

    path: str
    entries: tuple[FieldValue, ...]

    def values(self) -> list[Any]:
        """The values, ``None`` where the field was absent."""
        return [e.value if e.present else None for e in self.entries]

    def changes(self) -> tuple[FieldValue, ...]:
        """Only the entries where the value changed (or appeared, or went away)."""
        return tuple(e for e in self.entries if e.changed)

    _COLUMNS = (
        ("seq", "int64"),
        ("processor_id", "string"),
        ("route_id", "string"),
        ("iteration", "int64"),
        ("present", "bool"),
        ("value", "string"),
        ("changed", "bool"),
    )

    def _data(self) -> dict[str, list[Any]]:
        data: dict[str, list[Any]] = {name: [] for name, _ in self._COLUMNS}
        for e in self.entries:
            data["seq"].append(e.seq)
            data["processor_id"].append(e.processor_id)
            data["route_id"].append(e.route_id)
            data["iteration"].append(e.iteration)
            data["present"].append(e.present)
            data["value"].append(_json_text(e.value) if e.present else None)
            data["changed"].append(e.changed)
        return data

    def to_pandas(self) -> pd.DataFrame:
        """One row per processor: ``value`` is JSON text (``<NA>`` where absent)."""
        return frame(self._COLUMNS, self._data(), "pandas")

    def to_polars(self) -> pl.DataFrame:
        return frame(self._COLUMNS, self._data(), "polars")

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[FieldValue]:
        return iter(self.entries)

    def __repr__(self) -> str:
        # The dataclass repr printed every entry, one FieldValue(...) per processor: a notebook
        # cell ending in `lin.field_history(path)` showed a wall of text. Say where it changed.
        changes = self.changes()
        head = "\n".join(
            f"  {'-' if c.seq is None else c.seq:>4} {c.processor_id:<28} "
            f"{_short(_json_text(c.value)) if c.present else '(absent)'}"
            for c in changes[:12]
        )
        more = f"\n  ... {len(changes) - 12} more" if len(changes) > 12 else ""
        return (
            f"<FieldHistory {self.path}: {len(self.entries)} {_plural(len(self.entries), 'processor')}, "
            f"changed at {len(changes)} (.to_pandas() for every one)>"
            + (f"\n{head}{more}" if changes else "")
        )


@dataclass(frozen=True)
class LineageGraph:
    """Plot data: ``nodes`` (one per processor record: ``seq processor_id route_id processor_type
    iteration depth parent_seq status changed changes fields error_type duration_ms``) and
    ``edges`` (``source``, ``target`` seqs; ``kind`` ``child`` from a processor to each processor
    it ran inside it, ``next`` from a processor to the one that ran after it at the same level)."""

    nodes: tuple[dict[str, Any], ...]
    edges: tuple[dict[str, Any], ...]


def _completion_order(procs: Iterable[ProcessorRecord]) -> list[ProcessorRecord]:
    """Records in the order they *finished*: a container (``choice``, ``split``, the ``to`` of a
    ``direct:`` call) after everything it ran, which is when its output is the exchange's state."""
    records = list(procs)
    known = {p.seq for p in records}
    children: dict[int | None, list[ProcessorRecord]] = {}
    for p in records:
        parent = p.parent_seq if p.parent_seq in known else None
        children.setdefault(parent, []).append(p)
    out: list[ProcessorRecord] = []
    stack: list[tuple[ProcessorRecord, bool]] = [(p, False) for p in reversed(children.get(None, []))]
    while stack:
        node, done = stack.pop()
        if done:
            out.append(node)
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in reversed(children.get(node.seq, [])))
    return out


def _captured(execution: Execution) -> bool:
    if execution.capture_mode == "ROUTE" or not execution.processors:
        return False
    return any(p.output_headers is not None or p.output_body is not None for p in execution.processors)


def _not_failed(parsed: ParsedPath) -> tuple[bool, Any]:
    """The outcome field ``parsed`` (``status`` or ``error:*``) of an exchange that has not failed."""
    return (True, "COMPLETED") if parsed.field == "status" else (False, None)


def _triple_in(p: ProcessorRecord) -> tuple[str | None, Mapping[str, Any] | None, Mapping[str, Any] | None]:
    # A body cut at capture (``bodyTruncated``: its input, its output or both) is not compared:
    # a cut JSON text no longer parses, so an unmarshal that only re-spaced a large document
    # was credited with changing "body:line 1", as diff() (which skips such bodies) never did.
    return (None if p.body_truncated else p.input_body, p.input_headers, p.input_properties)


def _triple_out(p: ProcessorRecord) -> tuple[str | None, Mapping[str, Any] | None, Mapping[str, Any] | None]:
    return (None if p.body_truncated else p.output_body, p.output_headers, p.properties)


class Lineage:
    """Which processor set, changed or removed which field of one execution (module docstring)."""

    def __init__(
        self,
        execution: Execution,
        rows: tuple[LineageRow, ...],
        limitations: tuple[str, ...],
        original: Execution | None = None,
    ):
        self.execution = execution
        #: The execution a replay replayed, when given (``lineage(replay, original=...)``).
        self.original = original
        self.rows = rows
        self.limitations = limitations
        self._json = JsonCache()

    def __repr__(self) -> str:
        e = self.execution
        touched = {(r.seq, r.processor_id) for r in self.rows}
        head = "\n".join(
            f"  {'-' if r.seq is None else r.seq:>4} {r.processor_id:<28} {r.change:<8} {r.path}"
            for r in self.rows[:12]
        )
        more = f"\n  ... {len(self.rows) - 12} more" if len(self.rows) > 12 else ""
        notes = "".join(f"\n  note: {t}" for t in self.limitations)
        return (
            f"<Lineage {e.route_id} {e.exchange_id}: {len(self.rows)} field "
            f"{_plural(len(self.rows), 'change')} by {len(touched)} {_plural(len(touched), 'processor')}>"
            f"\n{head}{more}{notes}"
        )

    def _repr_html_(self) -> str:
        cells = ("seq", "processor", "route", "iteration", "change", "path", "before", "after")
        body = []
        for r in self.rows[:50]:
            values = (
                "" if r.seq is None else r.seq,
                r.processor_id,
                r.route_id,
                r.iteration,
                r.change,
                r.path,
                "" if r.change == "set" else _short(r.before),
                "" if r.change == "removed" else _short(r.after),
            )
            body.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in values) + "</tr>")
        more = f"<p>{len(self.rows) - 50} more rows: use .to_pandas()</p>" if len(self.rows) > 50 else ""
        notes = "".join(f"<p>note: {html.escape(t)}</p>" for t in self.limitations)
        title = html.escape(repr(self).split("\n", 1)[0])
        return (
            f"<div><p>{title}</p>{notes}<table><thead><tr>"
            + "".join(f"<th>{c}</th>" for c in cells)
            + "</tr></thead><tbody>"
            + "".join(body)
            + f"</tbody></table>{more}</div>"
        )

    def __iter__(self) -> Iterator[LineageRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def by(self, processor_id: str) -> tuple[LineageRow, ...]:
        """The changes one processor (by id, every iteration) made."""
        return tuple(r for r in self.rows if r.processor_id == processor_id)

    def who_changed(self, path: str) -> tuple[LineageRow, ...]:
        """The rows for one path and what lies under it: ``properties:order`` covers
        ``properties:order.total``, and a part alone (``body``, ``headers``, ``properties``)
        all of it, as an ``ignore=`` path does. Header names compare case-insensitively, as
        Camel's do (``headers:Channel`` finds ``headers:channel``). A field a replay's modified
        start payload changed has a ``(start)`` row when the lineage was given the ``original``.

        Raises :class:`~moat_nb.errors.ValidationError` (``BAD_PATH``) for what is neither a
        diff path nor a part, as :meth:`field_history` does: sweep's ``body.total`` would find
        nothing, silently (the hint spells it ``body:$.total``)."""
        check_prefix(path)

        def key(p: str) -> str:
            return p.lower() if p[:8].lower() == "headers:" or p.lower() == "headers" else p

        want = key(path)
        under = (want + ".", want + "[", want + ":")
        return tuple(r for r in self.rows if key(r.path) == want or key(r.path).startswith(under))

    # -- frames

    def _data(self) -> dict[str, list[Any]]:
        data: dict[str, list[Any]] = {name: [] for name, _ in LINEAGE_COLUMNS}
        for r in self.rows:
            data["seq"].append(r.seq)
            data["processor_id"].append(r.processor_id)
            data["route_id"].append(r.route_id)
            data["iteration"].append(r.iteration)
            data["field"].append(r.field)
            data["path"].append(r.path)
            data["change"].append(r.change)
            data["before"].append(None if r.change == "set" else _json_text(r.before))
            data["after"].append(None if r.change == "removed" else _json_text(r.after))
        return data

    def to_pandas(self) -> pd.DataFrame:
        """One row per field change (:data:`LINEAGE_COLUMNS`; ``before``/``after`` JSON text)."""
        return frame(LINEAGE_COLUMNS, self._data(), "pandas")

    def to_polars(self) -> pl.DataFrame:
        return frame(LINEAGE_COLUMNS, self._data(), "polars")

    # -- one field

    def field_history(self, path: str) -> FieldHistory:
        """The value of ``path`` (diff path syntax) at the route's entry and after every processor,
        in the order processors finished (a ``choice`` after the branch it ran), so that a change
        shows at the processor that made it: one whose output differs from its own input there
        (a container only when what it ran did not already make that change), so that a step
        inside a ``split``, whose exchange is a part of the body, is not marked as having
        removed what the ``split`` took away.

        ``status`` and ``error:type`` / ``error:message`` are each processor's outcome, not a
        field of the message (a header, property or body key named ``status`` is
        ``headers:status``, ``properties:status``, ``body:$.status``). The exchange has no
        outcome before its first processor, so ``(start)`` has none, and every processor is
        handed an exchange that has not failed (Camel's pipeline stops at a failed exchange;
        ``doCatch`` and ``doFinally`` get it with the exception moved to ``CamelExceptionCaught``):
        the change shows where a processor failed, not at the first processor of a failed
        execution, which the execution's final status put at ``(start)`` made look like it changed.

        Raises :class:`~moat_nb.errors.ValidationError` for a path that does not parse."""
        parsed = parse_path(path)
        e = self.execution
        entries: list[FieldValue] = []
        previous: tuple[bool, str] | None = None

        def key_of(found: tuple[bool, Any]) -> tuple[bool, str]:
            return (found[0], _canon(found[1]) if found[0] else "")

        def add(
            seq: int | None, pid: str, rid: str, it: int, found: tuple[bool, Any], changed: bool | None = None
        ) -> None:
            nonlocal previous
            key = key_of(found)
            if changed is None:  # no input to compare with: against the entry before it
                changed = previous is not None and key != previous
            previous = key
            entries.append(FieldValue(seq, pid, rid, it, found[0], found[1] if found[0] else None, changed))

        outcome = parsed.field in ("status", "error")
        start = (
            (False, None)
            if outcome
            else self._lookup(parsed, e.input_body, e.input_headers, e.input_properties, None, None, None)
        )
        o = self.original
        # With the replayed original, (start) changed what the modified payload changed (its rows).
        was = (
            None
            if o is None or outcome
            else self._lookup(parsed, o.input_body, o.input_headers, o.input_properties, None, None, None)
        )
        add(None, START, e.route_id, 0, start, None if was is None else key_of(was) != key_of(start))
        if _captured(e):
            procs = e.processors or ()
            known = {p.seq for p in procs}
            # Values that processors ran inside each container produced as a change: a container
            # whose output is one of them only passes that change on.
            made_below: dict[int, set[tuple[bool, str]]] = {}
            for p in _completion_order(procs):
                found = self._lookup(
                    parsed,
                    p.output_body,
                    p.output_headers,
                    p.properties,
                    p.status,
                    p.error_type,
                    p.error_message,
                )
                if parsed.field == "body" and p.body_truncated and self._cut(p.output_body, parsed):
                    # The captured body was cut: its value there is unknown, not absent (a cut
                    # JSON text does not parse, and the field read as removed by whatever
                    # processor first saw a large body).
                    continue
                key = key_of(found)
                before = self._before(parsed, p)
                changed = None if before is None else key_of(before) != key
                below = made_below.pop(p.seq, set())
                if changed and key in below:
                    changed = False
                add(p.seq, p.processor_id, p.route_id, p.iteration, found, changed)
                if p.parent_seq in known:
                    made = made_below.setdefault(p.parent_seq, set())
                    made |= below
                    if entries[-1].changed:
                        made.add(key)
        else:
            found = self._lookup(
                parsed,
                e.output_body,
                e.output_headers,
                e.output_properties,
                e.status,
                e.error_type,
                e.error_message,
            )
            add(
                None,
                ROUTE,
                e.route_id,
                0,
                found,
                key_of(found) != key_of(_not_failed(parsed)) if outcome else None,
            )
        return FieldHistory(path, tuple(entries))

    def _before(self, parsed: ParsedPath, p: ProcessorRecord) -> tuple[bool, Any] | None:
        """The value of ``parsed`` in the input of ``p``, or None where the record cannot tell
        (a part not captured, or a body that may be cut). Status and errors have no input side
        in the record: a processor is handed an exchange that has not failed
        (:meth:`field_history`)."""
        if parsed.field in ("status", "error"):
            return _not_failed(parsed)
        if parsed.field not in ("body", "headers", "properties"):
            return None
        if parsed.field == "headers" and p.input_headers is None:
            return None
        if parsed.field == "properties" and p.input_properties is None:
            return None
        if parsed.field == "body" and p.body_truncated and self._cut(p.input_body, parsed):
            return None
        return self._lookup(parsed, p.input_body, p.input_headers, p.input_properties, None, None, None)

    def _cut(self, body: str | None, parsed: ParsedPath) -> bool:
        """Whether the output ``body`` of a ``bodyTruncated`` record may be the cut one. The flag
        covers input and output; an output that still parses as JSON is whole (a cut JSON text
        does not parse), so a JSON path can be read in it; any other text may be cut."""
        if body is None:
            return False
        return not parsed.json or self._json.parse(body) is JsonCache.NOT_JSON

    def _lookup(
        self,
        parsed: ParsedPath,
        body: str | None,
        headers: Mapping[str, Any] | None,
        properties: Mapping[str, Any] | None,
        status: str | None,
        error_type: str | None,
        error_message: str | None,
    ) -> tuple[bool, Any]:
        if parsed.field == "status":
            return (status is not None, status)
        if parsed.field == "error":
            value = error_type if parsed.name == "type" else error_message
            return (value is not None, value)
        if parsed.field == "route":
            return (True, None)
        if parsed.field == "body":
            if body is None:
                return (False, None)
            if parsed.line is not None:
                lines = body.splitlines()
                return (True, lines[parsed.line - 1]) if parsed.line <= len(lines) else (False, None)
            if not parsed.json:
                return (True, body)
            return self._navigate(self._json.parse(body), parsed.segments)
        mapping = headers if parsed.field == "headers" else properties
        if mapping is None:
            return (False, None)
        if parsed.field == "headers":
            # Camel header names are case-insensitive (DefaultMessage).
            low = (parsed.name or "").lower()
            hit = [v for k, v in mapping.items() if k.lower() == low]
        else:
            hit = [mapping[parsed.name]] if parsed.name in mapping else []
        if not hit:
            return (False, None)
        value = hit[0]
        if not parsed.segments:
            return (True, value)
        doc = self._json.parse(value) if isinstance(value, str) else value
        return self._navigate(doc, parsed.segments)

    @staticmethod
    def _navigate(doc: Any, segments: Iterable[str | int]) -> tuple[bool, Any]:
        if doc is JsonCache.NOT_JSON:
            return (False, None)
        for seg in segments:
            if isinstance(doc, dict) and isinstance(seg, str) and seg in doc:
                doc = doc[seg]
            elif isinstance(doc, list) and isinstance(seg, int) and 0 <= seg < len(doc):
                doc = doc[seg]
            else:
                return (False, None)
        return (True, doc)

    # -- graph

    def graph(self) -> LineageGraph:
        """Nodes and edges of the processor tree for a plot (:class:`LineageGraph`)."""
        procs = self.execution.processors or ()
        per_seq: dict[int, list[LineageRow]] = {}
        for r in self.rows:
            if r.seq is not None:
                per_seq.setdefault(r.seq, []).append(r)
        nodes = []
        for p in procs:
            rows = per_seq.get(p.seq, [])
            nodes.append(
                {
                    "seq": p.seq,
                    "processor_id": p.processor_id,
                    "route_id": p.route_id,
                    "processor_type": p.processor_type,
                    "iteration": p.iteration,
                    "depth": p.depth,
                    "parent_seq": p.parent_seq,
                    "status": p.status,
                    "changed": bool(rows),
                    "changes": len(rows),
                    "fields": sorted({r.field for r in rows}),
                    "error_type": p.error_type,
                    "duration_ms": p.duration_ms,
                }
            )
        edges: list[dict[str, Any]] = []
        last_at: dict[int | None, int] = {}
        for p in procs:
            if p.parent_seq is not None:
                edges.append({"source": p.parent_seq, "target": p.seq, "kind": "child"})
            before = last_at.get(p.parent_seq)
            if before is not None:
                edges.append({"source": before, "target": p.seq, "kind": "next"})
            last_at[p.parent_seq] = p.seq
        return LineageGraph(tuple(nodes), tuple(edges))


def lineage(execution: Execution, *, original: Execution | None = None) -> Lineage:
    """Which processor set, changed or removed which field of ``execution`` (module docstring).

    ``original``: for a replay, the execution it replayed (its ``sourceExchangeId``'s). The
    fields the replay's start payload (the modified payload, section 4) changed from the
    original's are then rows of the pseudo processor ``(start)``, first, as ``field_history``
    names the route's entry: ``who_changed("body:$.qty")`` of a replay whose payload set the
    quantity answered ``()`` (no processor changed it), as if nothing had. Without it, a
    lineage has no ``(start)`` rows, as before.

    With a ``ROUTE``-captured execution (no payloads at processors) the only changes it can tell
    are the route's as a whole, entry vs exit, under the pseudo processor ``(route)``; the
    limitation is listed in :attr:`Lineage.limitations`. Anything but an Execution
    (``p.execution(id)``) is a :class:`~moat_nb.errors.ValidationError` (``BAD_SOURCE``), and so
    is a search hit (``p.executions(...)``: no processors, no payloads), whose lineage is always
    empty: a user asking ``who_changed`` got ``()`` with no word why; so is an ``original``
    that is not what ``execution`` replayed, or that has no start payload."""
    e = require_execution(execution, "lineage()")
    if e.processors is None and e.input_headers is None and e.input_body is None:
        raise ValidationError(
            f"execution {e.execution_id} is a search hit (no processors, no payloads): its lineage "
            "needs the execution's detail",
            code="BAD_SOURCE",
            hint=f"fetch it first: p.execution({e.execution_id!r})",
            details={"executionId": e.execution_id},
        )
    comparer = PayloadComparer()
    limitations: list[str] = []
    rows: list[LineageRow] = []
    if original is not None:
        original = require_execution(original, "lineage()", "original")
        rows += _start_rows(e, original, comparer)
    if not _captured(e):
        limitations.append(
            "processors carry no payloads (ROUTE capture or a search hit): only the route's entry "
            "and exit are compared, not who changed what"
        )
        if e.input_headers is not None and e.output_headers is not None:
            for path, kind, a, b in payload_changes(
                (e.input_body, e.input_headers, e.input_properties or {}),
                (e.output_body, e.output_headers, e.output_properties or {}),
                comparer=comparer,
            ):
                rows.append(
                    LineageRow(None, ROUTE, e.route_id, 0, path.partition(":")[0], path, _CHANGE[kind], a, b)
                )
        return Lineage(e, tuple(rows), tuple(limitations), original)

    procs = e.processors or ()
    truncated = sum(1 for p in procs if p.body_truncated)
    if truncated:
        limitations.append(
            f"bodies were truncated at capture (captureMaxBytes) at {truncated} processors: body "
            "changes there are not attributed, and a body path's history skips them"
        )
    if any(p.input_properties is None for p in procs):
        limitations.append(
            "some processors carry no properties from before they ran: property changes are "
            "not attributed at those processors"
        )
    raw: dict[int, list[tuple[str, str, Any, Any]]] = {
        p.seq: payload_changes(_triple_in(p), _triple_out(p), comparer=comparer) for p in procs
    }
    # What each processor's descendants did, so that a container is credited only with the rest.
    children: dict[int, list[int]] = {}
    for p in procs:
        if p.parent_seq is not None:
            children.setdefault(p.parent_seq, []).append(p.seq)
    below: dict[int, set[tuple[str, str, str]]] = {}
    for p in reversed(procs):
        acc: set[tuple[str, str, str]] = set()
        for c in children.get(p.seq, ()):
            acc |= below.get(c, set())
            # Key by key, as the container's own rows are compared below (_finer_where_below).
            acc |= {(path, _CHANGE[kind], _canon(b)) for path, kind, _, b in _key_by_key(raw.get(c, ()))}
        below[p.seq] = acc
    for p in procs:
        done_below = below.get(p.seq, set())
        for path, kind, a, b in _finer_where_below(raw[p.seq], done_below):
            change = _CHANGE[kind]
            if done_below and (path, change, _canon(b)) in done_below:
                continue
            rows.append(
                LineageRow(
                    p.seq, p.processor_id, p.route_id, p.iteration, path.partition(":")[0], path, change, a, b
                )
            )
    return Lineage(e, tuple(rows), tuple(limitations), original)


def _start_rows(e: Execution, original: Execution, comparer: PayloadComparer) -> list[LineageRow]:
    """The fields ``e``'s start payload changed from ``original``'s, as rows of ``(start)``:
    compared as :func:`moat_nb.diff.diff` compares the two start payloads (its ``cause="input"``
    rows at ``(start)``), so that the two name the same paths."""
    if e.source_exchange_id is None or e.source_exchange_id != original.exchange_id:
        raise ValidationError(
            f"original= is exchange {original.exchange_id}, which execution {e.execution_id} did not "
            + (
                "replay: it is not a replay"
                if e.source_exchange_id is None
                else f"replay (it replayed {e.source_exchange_id})"
            ),
            code="BAD_SOURCE",
            hint="pass the execution the replay replayed: p.execution(...) of its sourceExchangeId"
            if e.source_exchange_id is not None
            else "original= is for a replay's lineage; lineage(execution) alone for another execution",
            details={"executionId": e.execution_id, "sourceExchangeId": e.source_exchange_id},
        )
    if original.input_headers is None:
        raise ValidationError(
            f"original {original.execution_id} is a search hit (no start payload): the start payload's "
            "changes need the execution's detail",
            code="BAD_SOURCE",
            hint=f"fetch it first: p.execution({original.execution_id!r})",
            details={"executionId": original.execution_id},
        )
    changes = payload_changes(
        (original.input_body, original.input_headers, original.input_properties or {}),
        (e.input_body, e.input_headers, e.input_properties or {}),
        comparer=comparer,
    )
    return [
        LineageRow(None, START, e.route_id, 0, path.partition(":")[0], path, _CHANGE[kind], a, b)
        for path, kind, a, b in changes
    ]


def _finer_where_below(
    changes: list[tuple[str, str, Any, Any]], done_below: set[tuple[str, str, str]]
) -> list[tuple[str, str, Any, Any]]:
    """A container's changes, with each whole-object change that its descendants' changes fall
    under walked key by key: an object whose keys mostly changed is one row (as DeepDiff has
    it), which matches none of the children's rows, so the container was credited with what
    its children did (review finding)."""
    out: list[tuple[str, str, Any, Any]] = []
    for change in changes:
        path = change[0]
        if done_below and any(q.startswith((path + ".", path + "[")) for q, _, _ in done_below):
            out.extend(_key_by_key([change]))
        else:
            out.append(change)
    return out


def _key_by_key(changes: Iterable[tuple[str, str, Any, Any]]) -> list[tuple[str, str, Any, Any]]:
    """``changes`` with each whole-object (or whole-list) change walked key by key; one nested
    past the interpreter's recursion limit stays whole."""
    out: list[tuple[str, str, Any, Any]] = []
    for path, kind, a, b in changes:
        if isinstance(a, dict | list) and type(a) is type(b):
            try:
                out.extend(json_changes(a, b, path, collapse=False))
                continue
            except RecursionError:
                pass
        out.append((path, kind, a, b))
    return out


# --------------------------------------------------------------------------- replay family


@dataclass(frozen=True)
class FamilyGraph:
    """Original -> replays -> replays of replays. ``nodes``: one dict per execution (``node_id``
    = execution id, or ``exchange:<id>`` for a source not among the executions, ``known=False``)
    with ``exchange_id execution_id is_replay replay_id source_exchange_id status route_id
    route_version environment start_time generation parent``; ``edges``: ``source`` ->
    ``target`` node ids, ``replay_id`` of the target."""

    nodes: tuple[dict[str, Any], ...]
    edges: tuple[dict[str, Any], ...]

    @property
    def roots(self) -> tuple[dict[str, Any], ...]:
        """The nodes nothing was replayed from (the originals)."""
        return tuple(n for n in self.nodes if n["parent"] is None)

    def children(self, node_id: str) -> tuple[dict[str, Any], ...]:
        """The replays made from one node."""
        targets = [e["target"] for e in self.edges if e["source"] == node_id]
        index = {n["node_id"]: n for n in self.nodes}
        return tuple(index[t] for t in targets)

    def ancestors(self, node_id: str) -> tuple[dict[str, Any], ...]:
        """From a node up to its original (nearest first)."""
        index = {n["node_id"]: n for n in self.nodes}
        out: list[dict[str, Any]] = []
        seen = {node_id}
        parent = index[node_id]["parent"] if node_id in index else None
        while parent is not None and parent not in seen:
            seen.add(parent)
            out.append(index[parent])
            parent = index[parent]["parent"]
        return tuple(out)

    _COLUMNS = (
        ("node_id", "string"),
        ("exchange_id", "string"),
        ("execution_id", "string"),
        ("parent", "string"),
        ("generation", "int64"),
        ("is_replay", "bool"),
        ("replay_id", "string"),
        ("source_exchange_id", "string"),
        ("status", "string"),
        ("route_id", "string"),
        ("route_version", "string"),
        ("environment", "string"),
        ("start_time", "string"),
        ("known", "bool"),
    )

    def _data(self) -> dict[str, list[Any]]:
        return {name: [n.get(name) for n in self.nodes] for name, _ in self._COLUMNS}

    def to_pandas(self) -> pd.DataFrame:
        """One row per node, with its ``parent`` and ``generation`` (0 for an original)."""
        return frame(self._COLUMNS, self._data(), "pandas")

    def to_polars(self) -> pl.DataFrame:
        return frame(self._COLUMNS, self._data(), "polars")


def replay_family(executions: Iterable[Execution]) -> FamilyGraph:
    """The replay family graph of ``executions`` (module docstring); nodes in generation order,
    then by start time. ``executions`` is a list (any iterable) of Executions; anything else is
    a :class:`~moat_nb.errors.ValidationError` (``BAD_SOURCE``)."""
    if isinstance(executions, Execution):
        raise ValidationError(
            "replay_family() takes a list of Executions, not one Execution",
            code="BAD_SOURCE",
            hint="pass the executions of the family, e.g. replay_family([original, *replays])",
            details={"argument": "executions", "type": "Execution"},
        )
    frame_like = hasattr(executions, "columns")  # a pandas/polars frame iterates its column names
    if frame_like or isinstance(executions, str | bytes | Mapping) or not isinstance(executions, Iterable):
        kind = type(executions).__name__
        given = "None" if executions is None else f"a {kind}"
        raise ValidationError(
            f"replay_family() takes a list of Executions, not {given}",
            code="BAD_SOURCE",
            hint="fetch them first, e.g. [p.execution(i) for i in frame.execution_id]",
            details={"argument": "executions", "type": kind},
        )
    execs = [require_execution(e, "replay_family()", "each item") for e in executions]
    by_exchange: dict[str, str] = {}
    nodes: dict[str, dict[str, Any]] = {}
    for e in execs:
        # Prefer the first execution seen for an exchange id as the one replays point at.
        by_exchange.setdefault(e.exchange_id, e.execution_id)
        nodes[e.execution_id] = {
            "node_id": e.execution_id,
            "exchange_id": e.exchange_id,
            "execution_id": e.execution_id,
            "is_replay": e.is_replay,
            "replay_id": e.replay_id,
            "source_exchange_id": e.source_exchange_id,
            "status": e.status,
            "route_id": e.route_id,
            "route_version": e.route_version,
            "environment": e.environment,
            "start_time": format_time(e.start_time),
            "known": True,
            "parent": None,
            "generation": 0,
        }
    for e in execs:
        src = e.source_exchange_id
        if not src or src == e.exchange_id:
            continue
        if src not in by_exchange:
            node_id = f"exchange:{src}"
            by_exchange[src] = node_id
            nodes[node_id] = {
                "node_id": node_id,
                "exchange_id": src,
                "execution_id": None,
                "is_replay": None,
                "replay_id": None,
                "source_exchange_id": None,
                "status": None,
                "route_id": None,
                "route_version": None,
                "environment": None,
                "start_time": None,
                "known": False,
                "parent": None,
                "generation": 0,
            }
        nodes[e.execution_id]["parent"] = by_exchange[src]
    # generations: walk up (guarding against a cycle in bad data)
    for node in nodes.values():
        depth, parent, seen = 0, node["parent"], {node["node_id"]}
        while parent is not None and parent not in seen:
            seen.add(parent)
            depth += 1
            parent = nodes[parent]["parent"]
        node["generation"] = depth
    ordered = sorted(nodes.values(), key=lambda n: (n["generation"], n["start_time"] or "", n["node_id"]))
    edges = tuple(
        {"source": n["parent"], "target": n["node_id"], "replay_id": n["replay_id"]}
        for n in ordered
        if n["parent"] is not None
    )
    return FamilyGraph(tuple(ordered), edges)
