"""Fixed frame schemas (moat_nb/frames.py): pinned column names and dtypes, pandas and polars."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moat_nb import frames
from moat_nb.errors import RecordError, ValidationError
from moat_nb.model import Execution, ProcessorRecord

STRING = pd.StringDtype(storage="pyarrow")
TIME = pd.DatetimeTZDtype(unit="ms", tz="UTC")
PL_TIME = pl.Datetime("ms", "UTC")

# The schemas, written out: a change to any column or dtype must change this test too.
EXECUTION_COLUMNS = [
    ("execution_id", STRING, pl.String),
    ("exchange_id", STRING, pl.String),
    ("correlation_id", STRING, pl.String),
    ("route_id", STRING, pl.String),
    ("route_version", STRING, pl.String),
    ("application_id", STRING, pl.String),
    ("instance_id", STRING, pl.String),
    ("environment", STRING, pl.String),
    ("status", STRING, pl.String),
    ("start_time", TIME, PL_TIME),
    ("end_time", TIME, PL_TIME),
    ("duration_ms", "float64", pl.Float64),
    ("error_type", STRING, pl.String),
    ("error_message", STRING, pl.String),
    ("processor_count", "Int64", pl.Int64),
    ("capture_mode", STRING, pl.String),
    ("is_replay", "boolean", pl.Boolean),
    ("replay_id", STRING, pl.String),
    ("source_exchange_id", STRING, pl.String),
]
PROCESSOR_COLUMNS = [
    ("execution_id", STRING, pl.String),
    ("exchange_id", STRING, pl.String),
    ("replay_id", STRING, pl.String),
    ("seq", "Int64", pl.Int64),
    ("parent_seq", "Int64", pl.Int64),
    ("iteration", "Int64", pl.Int64),
    ("depth", "Int64", pl.Int64),
    ("processor_id", STRING, pl.String),
    ("processor_type", STRING, pl.String),
    ("route_id", STRING, pl.String),
    ("status", STRING, pl.String),
    ("start_time", TIME, PL_TIME),
    ("end_time", TIME, PL_TIME),
    ("duration_ms", "float64", pl.Float64),
    ("offset_ms", "float64", pl.Float64),
    ("endpoint_uri", STRING, pl.String),
    ("stubbed", "boolean", pl.Boolean),
    ("error_type", STRING, pl.String),
    ("error_message", STRING, pl.String),
    ("body_changed", "boolean", pl.Boolean),
    ("headers_changed", "boolean", pl.Boolean),
    ("body_truncated", "boolean", pl.Boolean),
    ("input_body", STRING, pl.String),
    ("output_body", STRING, pl.String),
    ("input_headers", STRING, pl.String),
    ("output_headers", STRING, pl.String),
    ("input_properties", STRING, pl.String),
    ("properties", STRING, pl.String),
]
AUDIT_COLUMNS = [
    ("seq", "Int64", pl.Int64),
    ("event_id", STRING, pl.String),
    ("tenant_id", STRING, pl.String),
    ("occurred_at", TIME, PL_TIME),
    ("action", STRING, pl.String),
    ("outcome", STRING, pl.String),
    ("actor", STRING, pl.String),
    ("replay_id", STRING, pl.String),
    ("source_exchange_id", STRING, pl.String),
    ("route_id", STRING, pl.String),
    ("environment", STRING, pl.String),
    ("actor_detail", STRING, pl.String),
    ("source", STRING, pl.String),
    ("detail", STRING, pl.String),
    ("prev_hash", STRING, pl.String),
    ("hash", STRING, pl.String),
]


def check_pandas(df: pd.DataFrame, columns: list[tuple]) -> None:
    assert list(df.columns) == [c for c, _, _ in columns]
    for name, dtype, _ in columns:
        assert df[name].dtype == pd.api.types.pandas_dtype(dtype), (name, df[name].dtype)
        if dtype is STRING:
            assert df[name].dtype.storage == "pyarrow" and df[name].dtype.na_value is pd.NA, name


def check_polars(df: pl.DataFrame, columns: list[tuple]) -> None:
    assert df.schema == pl.Schema([(c, t) for c, _, t in columns])


EXECUTION = {
    "executionId": "ex-1",
    "exchangeId": "ID-1",
    "correlationId": "ID-1",
    "routeId": "order-intake",
    "routeVersion": "v2",
    "applicationId": "orders",
    "instanceId": "orders-dev-1",
    "environment": "dev",
    "status": "FAILED",
    "startTime": "2026-01-11T23:37:30.256Z",
    "endTime": "2026-01-11T23:37:30.268Z",
    "durationMs": 12,
    "errorType": "X",
    "errorMessage": "boom",
    "processorCount": 52,
    "captureMode": "PROCESSOR",
    "isReplay": False,
    "replayId": None,
    "sourceExchangeId": None,
}


def processor(seq: int, **kw: object) -> dict:
    base = {
        "executionId": "ex-1",
        "exchangeId": "ID-1",
        "seq": seq,
        "processorId": f"to{seq}",
        "processorType": "to",
        "routeId": "order-intake",
        "status": "COMPLETED",
        "startTime": f"2026-01-11T23:37:30.{250 + seq:03d}Z",
        "endTime": f"2026-01-11T23:37:30.{251 + seq:03d}Z",
        "durationMs": 0.5,
        "parentSeq": None,
        "iteration": 0,
        "depth": 0,
        "stubbed": False,
        "bodyTruncated": False,
    }
    return {**base, **kw}


# --------------------------------------------------------------------------- schemas


def test_execution_frames_have_the_pinned_schema() -> None:
    check_pandas(frames.executions_frame([EXECUTION]), EXECUTION_COLUMNS)
    check_polars(frames.executions_frame([EXECUTION], "polars"), EXECUTION_COLUMNS)
    assert frames.pandas_dtypes(frames.EXECUTION_SCHEMA) == {
        c: pd.api.types.pandas_dtype(d) for c, d, _ in EXECUTION_COLUMNS
    }


def test_empty_results_keep_the_schema() -> None:
    check_pandas(frames.executions_frame([]), EXECUTION_COLUMNS)
    check_polars(frames.executions_frame([], "polars"), EXECUTION_COLUMNS)
    check_pandas(frames.processors_frame([]), PROCESSOR_COLUMNS)
    check_polars(frames.processors_frame([], "polars"), PROCESSOR_COLUMNS)
    check_pandas(frames.audit_frame([]), AUDIT_COLUMNS)
    check_polars(frames.audit_frame([], "polars"), AUDIT_COLUMNS)


def test_processor_frames_have_the_pinned_schema() -> None:
    rows = [processor(1), processor(2, parentSeq=1, depth=1)]
    check_pandas(frames.processors_frame(rows), PROCESSOR_COLUMNS)
    check_polars(frames.processors_frame(rows, "polars"), PROCESSOR_COLUMNS)


def test_audit_frame_flattens_actor_and_target() -> None:
    event = {
        "seq": 7,
        "eventId": "e7",
        "tenantId": "default",
        "occurredAt": "2026-11-26T13:29:39.332Z",
        "action": "REPLAY_REQUESTED",
        "actor": {"username": "operator", "roles": ["OPERATOR"], "permissions": []},
        "source": {"ip": "127.0.0.1", "userAgent": "x", "requestId": "r", "client": None},
        "target": {"replayId": "replay-1", "sourceExchangeId": "ID-1", "routeId": "r", "environment": "dev"},
        "detail": {"reason": "why"},
        "outcome": "ACCEPTED",
        "prevHash": "a" * 64,
        "hash": "b" * 64,
    }
    df = frames.audit_frame([event])
    check_pandas(df, AUDIT_COLUMNS)
    row = df.iloc[0]
    assert (row.actor, row.replay_id, row.environment, row.seq) == ("operator", "replay-1", "dev", 7)
    assert json.loads(row.actor_detail) == event["actor"] and json.loads(row.detail) == {"reason": "why"}
    check_polars(frames.audit_frame([event], "polars"), AUDIT_COLUMNS)


# --------------------------------------------------------------------------- values


def test_nullable_ints_stay_ints_and_times_are_utc() -> None:
    rows = [processor(1), processor(2, parentSeq=1)]
    df = frames.processors_frame(rows)
    assert df.parent_seq.isna().tolist() == [True, False] and df.parent_seq.iloc[1] == 1
    assert df.start_time.iloc[0] == pd.Timestamp("2026-01-11T23:37:30.251Z")
    assert str(df.start_time.dt.tz) == "UTC"
    pl_df = frames.processors_frame(rows, "polars")
    assert pl_df["parent_seq"].to_list() == [None, 1]


def test_times_with_offsets_and_microseconds_become_utc_milliseconds() -> None:
    row = {**EXECUTION, "startTime": "2026-01-12T01:37:30.256789+02:00", "endTime": None}
    df = frames.executions_frame([row])
    assert df.start_time.iloc[0] == pd.Timestamp("2026-01-11T23:37:30.256Z")
    assert df.end_time.isna().all()


def test_a_time_without_offset_is_refused_naming_the_column() -> None:
    with pytest.raises(RecordError, match="start_time"):
        frames.executions_frame([{**EXECUTION, "startTime": "2026-01-11T23:37:30"}])


def test_a_value_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(RecordError, match="processor_count"):
        frames.executions_frame([{**EXECUTION, "processorCount": "many"}])


def test_json_columns_round_trip_and_derived_columns() -> None:
    rows = [
        processor(3, inputBody="a", outputBody="a", inputHeaders={"k": 1}, outputHeaders={"k": 2}),
        processor(1, inputBody="a", outputBody="b", inputHeaders={"ü": "✓"}, outputHeaders={"ü": "✓"}),
        processor(2),
    ]
    df = frames.processors_frame(rows, execution_start="2026-01-11T23:37:30.250Z")
    assert df.seq.tolist() == [1, 2, 3]  # sorted by seq
    assert df.offset_ms.tolist() == [1.0, 2.0, 3.0]
    assert df.body_changed.tolist() == [True, False, False]  # None -> None is "same" in PROCESSOR mode
    assert df.headers_changed.tolist() == [False, False, True]
    assert json.loads(df.input_headers.iloc[0]) == {"ü": "✓"}
    # Without an execution start, offsets count from the first processor.
    assert frames.processors_frame(rows).offset_ms.tolist() == [0.0, 1.0, 2.0]


def test_route_capture_leaves_change_flags_unknown() -> None:
    rows = [processor(1), processor(2, inputBody="x", outputBody="y")]
    df = frames.processors_frame(rows, capture_mode="ROUTE")
    assert df.body_changed.isna().tolist() == [True, False]
    assert bool(df.body_changed.iloc[1]) is True


def test_records_and_wire_dicts_give_the_same_frame() -> None:
    rows = [processor(1, inputHeaders={"a": "1"}, outputHeaders={"a": "1"}), processor(2, parentSeq=1)]
    records = [ProcessorRecord.from_wire(r) for r in rows]
    execution = Execution.from_wire({**EXECUTION, "processors": rows, "inputHeaders": {}})
    a = frames.processors_frame(rows, execution_start=EXECUTION["startTime"])
    pd.testing.assert_frame_equal(a, frames.processors_frame(records, execution_start=EXECUTION["startTime"]))
    pd.testing.assert_frame_equal(a, frames.processors_frame(execution))
    pd.testing.assert_frame_equal(
        frames.executions_frame([EXECUTION]), frames.executions_frame([Execution.from_wire(EXECUTION)])
    )


def test_a_search_hit_has_no_processor_frame() -> None:
    with pytest.raises(ValidationError, match="without its processors"):
        frames.processors_frame(Execution.from_wire(EXECUTION))


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValidationError, match="backend"):
        frames.executions_frame([EXECUTION], "spark")  # type: ignore[arg-type]


texts = st.none() | st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
maps = st.none() | st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3)
ints = st.none() | st.integers(-(2**62), 2**62)
times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "parentSeq": ints,
                "inputBody": texts,
                "outputBody": texts,
                "inputHeaders": maps,
                "errorMessage": texts,
                "startTime": st.none() | times,
                "durationMs": st.none() | st.floats(0, 1e9),
            }
        ),
        max_size=8,
    )
)
def test_pandas_and_polars_hold_the_same_values(rows: list[dict]) -> None:
    wire = [
        processor(i + 1, **{**r, "startTime": r["startTime"] and r["startTime"].isoformat()})
        for i, r in enumerate(rows)
    ]
    pdf = frames.processors_frame(wire)
    plf = frames.processors_frame(wire, "polars")
    assert len(pdf) == len(plf) == len(rows)
    for i, r in enumerate(rows):
        assert (None if pd.isna(pdf.parent_seq.iloc[i]) else int(pdf.parent_seq.iloc[i])) == r["parentSeq"]
        assert plf["parent_seq"][i] == r["parentSeq"]
        assert plf["input_body"][i] == r["inputBody"]
        assert (None if pd.isna(pdf.input_body.iloc[i]) else pdf.input_body.iloc[i]) == r["inputBody"]
        got = plf["input_headers"][i]
        assert (None if got is None else json.loads(got)) == r["inputHeaders"]
        assert plf["start_time"][i] == r["startTime"]
        assert plf["duration_ms"][i] == r["durationMs"]


# --------------------------------------------------------------------------- JSON text and bulk columns

# What a header or property map may hold on the wire: any JSON, including integers beyond 64 bits
# (a Java BigInteger), which orjson refuses to write and the frame must still keep exact.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.integers(2**64, 2**80)  # beyond 64 bits, drawn on purpose: rare in the range above
    | st.integers(-(2**80), -(2**63) - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)
wire_maps = st.dictionaries(st.text(max_size=6), json_values, max_size=5)
STDLIB = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def has_float(value: object) -> bool:
    if isinstance(value, dict):
        return any(has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(has_float(v) for v in value)
    return isinstance(value, float)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.none() | wire_maps, st.none() | wire_maps, st.none() | wire_maps), max_size=6))
def test_map_columns_hold_the_maps_as_documented_json_text(maps: list[tuple]) -> None:
    wire = [
        processor(i + 1, inputHeaders=h, outputHeaders=o, properties=p) for i, (h, o, p) in enumerate(maps)
    ]
    plf = frames.processors_frame(wire, "polars")
    for i, (h, o, p) in enumerate(maps):
        for column, value in (("input_headers", h), ("output_headers", o), ("properties", p)):
            text = plf[column][i]
            if value is None:
                assert text is None
                continue
            assert json.loads(text) == value
            # Key order, separators and characters as the module docstring says; floats may be
            # spelt differently (the same number), so the text is compared only without them.
            if not has_float(value):
                assert text == STDLIB(value)
        # Changed is a comparison of the maps, not of their text.
        assert plf["headers_changed"][i] == (h != o)


def test_map_values_json_cannot_hold_become_null_and_odd_keys_are_kept() -> None:
    wire = [processor(1, inputHeaders={"big": 2**80, 3: "int key"}, outputHeaders={"x": float("nan")})]
    df = frames.processors_frame(wire, "polars")
    assert json.loads(df["input_headers"][0]) == {"big": 2**80, "3": "int key"}
    assert df["output_headers"][0] == '{"x":null}'  # RFC 8259 section 6: no NaN in JSON


def test_records_out_of_order_or_without_seq_are_sorted_and_bad_values_name_their_column() -> None:
    rows = [processor(2), processor(1), {**processor(3), "seq": None}]
    assert frames.processors_frame(rows, "polars")["seq"].to_list() == [1, 2, None]
    assert frames.processors_frame([processor(1), processor(2)], "polars")["seq"].to_list() == [1, 2]
    with pytest.raises(RecordError, match="depth"):
        frames.processors_frame([processor(1), processor(2, depth="deep")])
    with pytest.raises(RecordError, match="start_time"):
        frames.processors_frame([processor(1, startTime="yesterday")])
    # A datetime in a wire dict (not what the wire sends, but a Python caller may) still works.
    when = datetime(2026, 1, 11, 23, 37, 30, 300000, tzinfo=UTC)
    assert frames.processors_frame([processor(1, startTime=when)], "polars")["start_time"][0] == when


# The trace reader's parse step (moat_nb/stream.py), whose output these frames are made from.
@settings(max_examples=200, deadline=None)
@given(json_values)
def test_trace_data_is_read_as_json_loads_reads_it(value: object) -> None:
    from moat_nb.stream import parse_json

    text = json.dumps(value, ensure_ascii=False)
    got = parse_json(text)
    assert got == json.loads(text)
    assert STDLIB(got) == STDLIB(json.loads(text))  # ints stay ints, exactly (2**70 is no float)


def test_trace_data_json_loads_accepts_is_accepted_and_bad_data_refused() -> None:
    from moat_nb.stream import parse_json

    data = parse_json('{"a": NaN, "b": 1e400}')
    assert data["a"] != data["a"] and data["b"] == float("inf")
    assert parse_json("[123456789012345678901234, -9223372036854775809]") == [
        123456789012345678901234,
        -9223372036854775809,
    ]
    with pytest.raises(ValueError):
        parse_json("{not json")
