"""Fixed-schema frames of executions, processors and audit events (DESIGN.md sections 3, 7, 9).

One schema per record kind, written once as an Arrow schema; pandas, polars and Parquet are all
made from the same :class:`pyarrow.Table`, so the three can never drift apart:

=============  ====================  ==========================  ==============================
Arrow          pandas                polars                      what
=============  ====================  ==========================  ==============================
string         ``string`` (pyarrow)  ``String``                  ids, names, bodies, JSON text
int64          ``Int64``             ``Int64``                   counts, seq (nullable, stays int)
float64        ``float64``           ``Float64``                 milliseconds (NaN when missing)
bool           ``boolean``           ``Boolean``                 flags (NA when unknown)
timestamp[ms,  ``datetime64[ms,      ``Datetime("ms", "UTC")``   times (the wire has ms, section 3)
UTC]           UTC]``
=============  ====================  ==========================  ==============================

Column names are the snake_case of the wire's camelCase (section 3). Maps on the wire (headers,
properties, an audit event's actor/source/detail) become JSON text columns: a frame of dicts has
no dtype a Parquet file or a polars ``scan_parquet`` can push a filter into, and JSON text
round-trips exactly (``json.loads`` gives the dict back). The text is compact (no spaces), keeps
the wire's key order and writes non-ASCII characters as they are: what
``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` writes, character for
character, except that a float may be spelt differently (``1e-05`` as ``0.00001``; the same
number) and that NaN and infinities, which JSON cannot hold (RFC 8259 section 6), become ``null``.

The processors frame adds three derived columns: ``offset_ms`` (start of the processor minus the
start of its execution), ``body_changed`` and ``headers_changed`` (output differs from input; NA
when the execution was captured in ``ROUTE`` mode and the processor carries neither side).

Everything here is pure: rows in, table out. Rows are wire dicts (camelCase, as the server
sends them: the fast path the client uses page by page) or the records of :mod:`moat_nb.model`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .errors import RecordError, ValidationError
from .model import Execution, ProcessorRecord, format_time, parse_time

if TYPE_CHECKING:
    pass

__all__ = [
    "AUDIT_SCHEMA",
    "Backend",
    "EXECUTION_SCHEMA",
    "PROCESSOR_SCHEMA",
    "audit_frame",
    "audit_table",
    "executions_frame",
    "executions_table",
    "ProcessorRows",
    "pandas_dtypes",
    "polars_schema",
    "processors_frame",
    "processors_table",
    "to_frame",
]

Backend = Literal["pandas", "polars", "arrow"]

_STR = pa.string()
_INT = pa.int64()
_FLOAT = pa.float64()
_BOOL = pa.bool_()
_TIME = pa.timestamp("ms", tz="UTC")
# Times are parsed at nanosecond precision, then cut to the wire's milliseconds: Arrow refuses
# to parse '...30.256789Z' straight into a millisecond type.
_TIME_PARSE = pa.timestamp("ns", tz="UTC")


@dataclass(frozen=True, slots=True)
class _Column:
    name: str  # frame column (snake_case)
    key: str | tuple[str, str]  # wire key, or (object key, member key) for a nested member
    type: pa.DataType
    json: bool = False  # a map on the wire, JSON text in the frame


def _schema(columns: Sequence[_Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type) for c in columns])


_EXECUTION_COLUMNS = (
    _Column("execution_id", "executionId", _STR),
    _Column("exchange_id", "exchangeId", _STR),
    _Column("correlation_id", "correlationId", _STR),
    _Column("route_id", "routeId", _STR),
    _Column("route_version", "routeVersion", _STR),
    _Column("application_id", "applicationId", _STR),
    _Column("instance_id", "instanceId", _STR),
    _Column("environment", "environment", _STR),
    _Column("status", "status", _STR),
    _Column("start_time", "startTime", _TIME),
    _Column("end_time", "endTime", _TIME),
    _Column("duration_ms", "durationMs", _FLOAT),
    _Column("error_type", "errorType", _STR),
    _Column("error_message", "errorMessage", _STR),
    _Column("processor_count", "processorCount", _INT),
    _Column("capture_mode", "captureMode", _STR),
    _Column("is_replay", "isReplay", _BOOL),
    _Column("replay_id", "replayId", _STR),
    _Column("source_exchange_id", "sourceExchangeId", _STR),
)

_PROCESSOR_COLUMNS = (
    _Column("execution_id", "executionId", _STR),
    _Column("exchange_id", "exchangeId", _STR),
    _Column("replay_id", "replayId", _STR),
    _Column("seq", "seq", _INT),
    _Column("parent_seq", "parentSeq", _INT),
    _Column("iteration", "iteration", _INT),
    _Column("depth", "depth", _INT),
    _Column("processor_id", "processorId", _STR),
    _Column("processor_type", "processorType", _STR),
    _Column("route_id", "routeId", _STR),
    _Column("status", "status", _STR),
    _Column("start_time", "startTime", _TIME),
    _Column("end_time", "endTime", _TIME),
    _Column("duration_ms", "durationMs", _FLOAT),
    _Column("endpoint_uri", "endpointUri", _STR),
    _Column("stubbed", "stubbed", _BOOL),
    _Column("error_type", "errorType", _STR),
    _Column("error_message", "errorMessage", _STR),
    _Column("body_truncated", "bodyTruncated", _BOOL),
    _Column("input_body", "inputBody", _STR),
    _Column("output_body", "outputBody", _STR),
    _Column("input_headers", "inputHeaders", _STR, json=True),
    _Column("output_headers", "outputHeaders", _STR, json=True),
    _Column("input_properties", "inputProperties", _STR, json=True),
    _Column("properties", "properties", _STR, json=True),
)
#: Derived columns of the processors frame, placed after ``duration_ms`` / ``error_message``.
_DERIVED = (
    pa.field("offset_ms", _FLOAT),
    pa.field("body_changed", _BOOL),
    pa.field("headers_changed", _BOOL),
)

_AUDIT_COLUMNS = (
    _Column("seq", "seq", _INT),
    _Column("event_id", "eventId", _STR),
    _Column("tenant_id", "tenantId", _STR),
    _Column("occurred_at", "occurredAt", _TIME),
    _Column("action", "action", _STR),
    _Column("outcome", "outcome", _STR),
    _Column("actor", ("actor", "username"), _STR),
    _Column("replay_id", ("target", "replayId"), _STR),
    _Column("source_exchange_id", ("target", "sourceExchangeId"), _STR),
    _Column("route_id", ("target", "routeId"), _STR),
    _Column("environment", ("target", "environment"), _STR),
    _Column("actor_detail", "actor", _STR, json=True),
    _Column("source", "source", _STR, json=True),
    _Column("detail", "detail", _STR, json=True),
    _Column("prev_hash", "prevHash", _STR),
    _Column("hash", "hash", _STR),
)

#: Search hits (section 3 Execution without the detail fields), one row per execution.
EXECUTION_SCHEMA: pa.Schema = _schema(_EXECUTION_COLUMNS)
#: One row per processor (section 3 ProcessorRecord) plus ``offset_ms``, ``body_changed``,
#: ``headers_changed``.
PROCESSOR_SCHEMA: pa.Schema = pa.schema(
    [pa.field(c.name, c.type) for c in _PROCESSOR_COLUMNS[:14]]
    + [_DERIVED[0]]
    + [pa.field(c.name, c.type) for c in _PROCESSOR_COLUMNS[14:18]]
    + [_DERIVED[1], _DERIVED[2]]
    + [pa.field(c.name, c.type) for c in _PROCESSOR_COLUMNS[18:]]
)
#: Audit events (section 7): the target's members and the actor's name as columns; actor,
#: source and detail also whole, as JSON text.
AUDIT_SCHEMA: pa.Schema = _schema(_AUDIT_COLUMNS)


# --------------------------------------------------------------------------- dtypes


def pandas_dtypes(schema: pa.Schema) -> dict[str, Any]:
    """The pandas dtype of every column of ``schema`` (what the frames of this module have)."""
    import pandas as pd

    mapping = {
        **_pandas_types(),
        _FLOAT: pd.api.types.pandas_dtype("float64"),
        _TIME: pd.DatetimeTZDtype(unit="ms", tz="UTC"),
    }
    return {f.name: mapping[f.type] for f in schema}


def polars_schema(schema: pa.Schema) -> dict[str, Any]:
    """The polars dtype of every column of ``schema``."""
    import polars as pl

    mapping = {
        _STR: pl.String(),
        _INT: pl.Int64(),
        _FLOAT: pl.Float64(),
        _BOOL: pl.Boolean(),
        _TIME: pl.Datetime("ms", "UTC"),
    }
    return {f.name: mapping[f.type] for f in schema}


def _pandas_types() -> dict[pa.DataType, Any]:
    import pandas as pd

    # NA-semantics extension dtypes, so that a missing int stays an int (Int64, not float64
    # with NaN) and a missing string is <NA>, not the float NaN. float64 keeps NaN: a missing
    # duration is not a number, and plotting libraries take float64 as it is.
    return {
        _STR: pd.StringDtype(storage="pyarrow"),
        _INT: pd.Int64Dtype(),
        _BOOL: pd.BooleanDtype(),
    }


def to_frame(table: pa.Table, backend: Backend = "pandas") -> Any:
    """``table`` as a pandas or polars DataFrame (or the Arrow table itself)."""
    if backend == "arrow":
        return table
    if backend == "polars":
        import polars as pl

        return pl.from_arrow(table, rechunk=True)
    if backend == "pandas":
        return table.to_pandas(types_mapper=_pandas_types().get)
    raise ValidationError(
        f"backend {backend!r} is not one of 'pandas', 'polars', 'arrow'",
        code="BAD_BACKEND",
        hint="pass backend='pandas' (default) or backend='polars'",
    )


# --------------------------------------------------------------------------- building tables


def _wire_rows(rows: Iterable[Any], kind: type) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for row in rows:
        if isinstance(row, Mapping):
            out.append(row)
        elif isinstance(row, kind):
            # ProcessorRecord / Execution: their wire form (processors are not needed here).
            out.append(row.to_wire(tree=False) if isinstance(row, Execution) else row.to_wire())
        else:
            raise RecordError(
                f"cannot make a frame row of {type(row).__name__}",
                hint=f"pass wire dicts or {kind.__name__} records",
            )
    return out


# The standard library's encoder writes what orjson refuses (see _dumps); one for every cell,
# as json.dumps with options builds a new encoder on each call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _dumps(value: Any) -> str | bytes | None:
    """A map as JSON text: UTF-8 bytes from orjson (Arrow takes them for a string column as they
    are, checking the UTF-8), or ``str`` where orjson refuses the value."""
    if value is None:
        return None
    if isinstance(value, str):
        return value  # already text (a server that sends JSON as a string)
    try:
        # orjson: the maps of a trace are re-encoded once per record, and the standard
        # library's encoder was most of the frame's own cost (DESIGN.md section 11, P1).
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: an int beyond 64 bits, a non-str key, a surrogate
        return _encode(value)


def _times(values: list[Any] | pa.Array, name: str) -> pa.Array:
    # A list of wire values, or already Arrow strings (ProcessorRows' struct).
    if isinstance(values, pa.Array):
        strings: pa.Array | None = values
        texts: list[Any] | None = None
    else:
        strings, texts = None, [format_time(v) if isinstance(v, datetime) else v for v in values]
    try:
        if strings is None:
            strings = pa.array(texts, _STR)
        return pc.cast(strings, _TIME_PARSE).cast(_TIME, safe=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    if texts is None:
        texts = values.to_pylist()  # type: ignore[union-attr]
    # Arrow refused one of them: find it with the model's parser, which names the bad value.
    for text in texts:
        try:
            parse_time(text)
        except RecordError as exc:
            raise RecordError(f"column {name}: {exc.message}", code="BAD_TIME", hint=exc.hint) from None
    raise RecordError(f"column {name}: a time could not be read", code="BAD_TIME")


def _column(rows: list[Mapping[str, Any]], col: _Column) -> pa.Array:
    key = col.key
    if isinstance(key, tuple):
        outer, inner = key
        values = [
            (r.get(outer) or {}).get(inner) if isinstance(r.get(outer), Mapping) else None for r in rows
        ]
    else:
        values = [r.get(key) for r in rows]
    if col.json:
        return pa.array([_dumps(v) for v in values], _STR)
    if col.type == _TIME:
        return _times(values, col.name)
    try:
        return pa.array(values, col.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise RecordError(
            f"column {col.name}: a value is not of type {col.type}: {exc}",
            code="BAD_RECORD",
            hint="the server sent a record that does not match the platform's schema (GET /api/v1/api-docs)",
        ) from None


def _table(rows: list[Mapping[str, Any]], columns: Sequence[_Column], schema: pa.Schema) -> pa.Table:
    arrays = {c.name: _column(rows, c) for c in columns}
    return pa.Table.from_pydict(arrays, schema=schema)


def executions_table(rows: Iterable[Mapping[str, Any] | Execution]) -> pa.Table:
    """Executions (wire dicts or :class:`~moat_nb.model.Execution`) as a table of
    :data:`EXECUTION_SCHEMA`."""
    return _table(_wire_rows(rows, Execution), _EXECUTION_COLUMNS, EXECUTION_SCHEMA)


def executions_frame(rows: Iterable[Mapping[str, Any] | Execution], backend: Backend = "pandas") -> Any:
    """Executions as a pandas (default) or polars frame of :data:`EXECUTION_SCHEMA`."""
    return to_frame(executions_table(rows), backend)


#: The processor columns Arrow converts straight from the wire dicts (all but the JSON text),
#: as one struct type keyed by the wire names; times are read as text, then parsed.
_PROCESSOR_STRUCT = pa.struct(
    [pa.field(c.key, _STR if c.type == _TIME else c.type) for c in _PROCESSOR_COLUMNS if not c.json]  # type: ignore[arg-type]
)


class ProcessorRows:
    """Processor records collected one at a time and made into columns of
    :data:`PROCESSOR_SCHEMA` all at once.

    A replay trace arrives one ``processor`` event at a time; the records are kept as they came
    (wire dicts, which the trace's events hold anyway) and :meth:`table` converts each column
    in one call into Arrow: one conversion of a list of dicts into a struct array costs less
    than appending 25 values per record in Python (measured for DESIGN.md section 11, P1).
    :func:`processors_table` uses it too.
    """

    def __init__(self) -> None:
        self._rows: list[Mapping[str, Any]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, row: Mapping[str, Any] | ProcessorRecord) -> None:
        """Add one record (a wire dict or a :class:`~moat_nb.model.ProcessorRecord`)."""
        self._rows.append(row if isinstance(row, Mapping) else _wire_rows([row], ProcessorRecord)[0])

    def _columns(self) -> dict[str, pa.Array]:
        rows = self._rows
        arrays: dict[str, pa.Array] = {}
        try:
            # Arrow reads each member of each dict in C; a dict that is not a dict (a Mapping
            # of another kind) or a value of the wrong type sends us to the column-by-column
            # path, which names the column.
            struct = pa.array(rows, _PROCESSOR_STRUCT)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
            struct = None
        for c in _PROCESSOR_COLUMNS:
            if c.json:
                arrays[c.name] = pa.array([_dumps(r.get(c.key)) for r in rows], _STR)  # type: ignore[arg-type]
            elif struct is not None:
                values = struct.field(c.key)
                arrays[c.name] = _times(values, c.name) if c.type == _TIME else values
            else:
                arrays[c.name] = _column(rows, c)
        return arrays

    def table(
        self, *, execution_start: datetime | str | None = None, capture_mode: str | None = None
    ) -> pa.Table:
        """The records so far as a table sorted by ``seq`` (see :func:`processors_table`)."""
        rows = self._rows
        arrays = self._columns()
        starts = arrays["start_time"]
        origin = (
            pa.scalar(parse_time(execution_start), _TIME) if execution_start is not None else pc.min(starts)
        )
        if origin.is_valid:
            arrays["offset_ms"] = pc.subtract(starts.cast(_INT), origin.cast(_INT)).cast(_FLOAT)
        else:
            arrays["offset_ms"] = pa.nulls(len(rows), _FLOAT)
        # ROUTE capture keeps no payload inside the route: "changed" is unknown there, not False.
        # Headers are compared as maps (the wire values), not as text: key order is no change.
        route = capture_mode == "ROUTE"
        for name, inp, out in (
            ("body_changed", "inputBody", "outputBody"),
            ("headers_changed", "inputHeaders", "outputHeaders"),
        ):
            pairs = [(r.get(inp), r.get(out)) for r in rows]
            arrays[name] = pa.array(
                [None if (route and a is None and b is None) else a != b for a, b in pairs], _BOOL
            )
        table = pa.Table.from_pydict(
            {f.name: arrays[f.name] for f in PROCESSOR_SCHEMA}, schema=PROCESSOR_SCHEMA
        )
        seq = arrays["seq"]
        in_order = seq.null_count == 0 and (
            len(seq) < 2 or pc.all(pc.greater_equal(seq[1:], seq[:-1])).as_py()
        )
        return table if in_order else table.sort_by("seq")


def processors_table(
    records: Execution | Iterable[Mapping[str, Any] | ProcessorRecord],
    *,
    execution_start: datetime | str | None = None,
    capture_mode: str | None = None,
) -> pa.Table:
    """Processor records as a table of :data:`PROCESSOR_SCHEMA`, sorted by ``seq``.

    ``records`` is an :class:`~moat_nb.model.Execution` fetched with its processors (its start
    time and capture mode are then used), or processor records (wire dicts or
    :class:`~moat_nb.model.ProcessorRecord`). ``offset_ms`` counts from ``execution_start``;
    without one, from the earliest processor start.
    """
    if isinstance(records, Execution):
        if records.processors is None:
            raise ValidationError(
                f"execution {records.execution_id} was fetched without its processors",
                code="NO_PROCESSORS",
                hint="fetch it with platform.execution(id): search hits carry no processors",
            )
        execution_start = execution_start or records.start_time
        capture_mode = capture_mode or records.capture_mode
        records = records.processors
    rows = ProcessorRows()
    for record in records:
        rows.append(record)
    return rows.table(execution_start=execution_start, capture_mode=capture_mode)


def processors_frame(
    records: Execution | Iterable[Mapping[str, Any] | ProcessorRecord],
    backend: Backend = "pandas",
    *,
    execution_start: datetime | str | None = None,
    capture_mode: str | None = None,
) -> Any:
    """One row per processor (see :func:`processors_table`) as a pandas or polars frame."""
    table = processors_table(records, execution_start=execution_start, capture_mode=capture_mode)
    return to_frame(table, backend)


def audit_table(events: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Audit events (wire dicts, section 7) as a table of :data:`AUDIT_SCHEMA`."""
    return _table(_wire_rows(events, dict), _AUDIT_COLUMNS, AUDIT_SCHEMA)


def audit_frame(events: Iterable[Mapping[str, Any]], backend: Backend = "pandas") -> Any:
    """Audit events as a pandas or polars frame of :data:`AUDIT_SCHEMA`."""
    return to_frame(audit_table(events), backend)
