"""Wire records (DESIGN.md section 3): lossless round trips and clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moat_nb.errors import RecordError
from moat_nb.model import (
    Chunk,
    Execution,
    ModifiedPayload,
    Payload,
    ProcessorRecord,
    check_id,
    format_time,
    parse_time,
)

ids = st.from_regex(r"\A[A-Za-z0-9._:-]{1,40}\Z")
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_maps = st.dictionaries(st.text(min_size=1, max_size=12), json_scalars, max_size=5)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
durations = st.none() | st.floats(0, 1e7, allow_nan=False, allow_infinity=False)


@st.composite
def processor_records(draw: st.DrawFn, seq: int, parent: int | None) -> ProcessorRecord:
    return ProcessorRecord(
        execution_id="exec-1",
        exchange_id="ex-1",
        seq=seq,
        parent_seq=parent,
        processor_id=draw(ids),
        processor_type=draw(st.sampled_from(["to", "setHeader", "split", "choice"])),
        route_id=draw(ids),
        status=draw(st.sampled_from(["COMPLETED", "FAILED"])),
        start_time=draw(st.none() | times),
        end_time=draw(st.none() | times),
        duration_ms=draw(durations),
        iteration=draw(st.integers(0, 50)),
        depth=draw(st.integers(0, 5)),
        replay_id=draw(st.none() | ids),
        endpoint_uri=draw(st.none() | st.text(max_size=30)),
        stubbed=draw(st.booleans()),
        error_type=draw(st.none() | st.text(max_size=30)),
        input_body=draw(st.none() | st.text(max_size=50)),
        output_body=draw(st.none() | st.text(max_size=50)),
        input_headers=draw(st.none() | json_maps),
        output_headers=draw(st.none() | json_maps),
        input_properties=draw(st.none() | json_maps),
        properties=draw(st.none() | json_maps),
        body_truncated=draw(st.booleans()),
    )


@st.composite
def executions(draw: st.DrawFn) -> Execution:
    n = draw(st.integers(0, 6))
    procs = []
    for seq in range(1, n + 1):
        parent = draw(st.none() | st.integers(1, seq - 1)) if seq > 1 else None
        procs.append(draw(processor_records(seq, parent)))
    detail = draw(st.booleans())
    return Execution(
        execution_id=draw(ids),
        exchange_id=draw(ids),
        route_id=draw(ids),
        status=draw(st.sampled_from(["COMPLETED", "FAILED", "RUNNING"])),
        correlation_id=draw(st.none() | ids),
        environment=draw(st.sampled_from([None, "dev", "staging", "prod"])),
        start_time=draw(st.none() | times),
        duration_ms=draw(durations),
        processor_count=n,
        capture_mode=draw(st.sampled_from(["PROCESSOR", "ROUTE"])),
        is_replay=draw(st.booleans()),
        input_body=draw(st.text(max_size=40)) if detail else None,
        input_headers=draw(json_maps) if detail else None,
        processors=tuple(procs) if detail else None,
    )


@settings(max_examples=150, deadline=None)
@given(executions())
def test_execution_round_trips_through_the_wire(execution: Execution) -> None:
    assert Execution.from_wire(execution.to_wire()) == execution
    assert Execution.from_wire(execution.to_wire(tree=False)) == execution
    # and the wire form is stable: wire -> record -> wire gives the same dict
    wire = execution.to_wire()
    assert Execution.from_wire(wire).to_wire() == wire


@settings(max_examples=100, deadline=None)
@given(executions())
def test_chunk_round_trips(execution: Execution) -> None:
    chunk = Chunk(
        execution_id=execution.execution_id,
        exchange_id=execution.exchange_id,
        chunk_seq=0,
        final=True,
        execution=execution.summary(),
        processors=execution.processors or (),
    )
    assert Chunk.from_wire(chunk.to_wire()) == chunk


def test_wire_names_are_camel_case_and_detail_fields_only_with_detail() -> None:
    start = datetime(2026, 11, 26, 13, 9, 44, 123456, tzinfo=UTC)
    rec = ProcessorRecord(
        execution_id="e",
        exchange_id="x",
        seq=1,
        processor_id="to1",
        processor_type="to",
        route_id="r",
        status="COMPLETED",
        start_time=start,
        parent_seq=None,
    )
    wire = rec.to_wire()
    assert wire["processorId"] == "to1" and wire["parentSeq"] is None
    assert wire["startTime"] == "2026-11-26T13:09:44.123Z"  # cut to milliseconds, Z
    assert "bodyTruncated" in wire and "processor_id" not in wire

    hit = Execution(execution_id="e", exchange_id="x", route_id="r", status="COMPLETED")
    assert "inputBody" not in hit.to_wire() and "processors" not in hit.to_wire()
    assert {"isReplay", "replayId", "sourceExchangeId", "captureMode"} <= set(hit.to_wire())


def test_processor_tree_nests_children_under_parent_seq() -> None:
    def rec(seq: int, parent: int | None) -> ProcessorRecord:
        return ProcessorRecord("e", "x", seq, f"p{seq}", "to", "r", "COMPLETED", parent_seq=parent)

    ex = Execution("e", "x", "r", "COMPLETED", processors=(rec(1, None), rec(2, 1), rec(3, 2), rec(4, None)))
    tree = ex.to_wire()["processors"]
    assert [n["seq"] for n in tree] == [1, 4]
    assert tree[0]["children"][0]["seq"] == 2
    assert tree[0]["children"][0]["children"][0]["seq"] == 3


def test_times_parse_any_offset_into_utc_milliseconds() -> None:
    t = parse_time("2026-11-26T14:09:44.123456+01:00")
    assert t == datetime(2026, 11, 26, 13, 9, 44, 123000, tzinfo=UTC)
    assert format_time(t) == "2026-11-26T13:09:44.123Z"
    aware = datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    assert format_time(aware) == "2026-01-01T00:00:00.000Z"


@pytest.mark.parametrize("bad", ["yesterday", "2026-11-26T13:09:44", 17])
def test_bad_times_raise_record_error_with_hint(bad: object) -> None:
    with pytest.raises(RecordError) as exc:
        parse_time(bad)  # type: ignore[arg-type]
    assert exc.value.code == "BAD_TIME"


def test_missing_required_field_names_it() -> None:
    with pytest.raises(RecordError) as exc:
        Execution.from_wire({"executionId": "e", "exchangeId": "x", "status": "COMPLETED"})
    assert "routeId" in str(exc.value)
    with pytest.raises(RecordError):
        Execution.from_wire(["not", "an", "object"])  # type: ignore[arg-type]


@pytest.mark.parametrize("good", ["a", "ID-host-1-2", "x" * 128, "a.b:c_d-e"])
def test_valid_ids(good: str) -> None:
    assert check_id(good) == good


@pytest.mark.parametrize("bad", ["", "x" * 129, "a b", "a/b", "é", "a\nb", None])
def test_invalid_ids(bad: object) -> None:
    with pytest.raises(RecordError) as exc:
        check_id(bad, "exchangeId")  # type: ignore[arg-type]
    assert exc.value.code == "BAD_ID" and "exchangeId" in str(exc.value)


def test_modified_payload_replaces_present_parts_whole() -> None:
    original = Payload(headers={"a": "1", "b": "2"}, body="{}", properties={"p": 1})
    mod = ModifiedPayload(headers={"a": "9"})
    eff = mod.apply(original)
    assert eff.headers == {"a": "9"}  # whole replacement, not a merge: "b" is gone
    assert eff.body == "{}" and eff.properties == {"p": 1}
    assert ModifiedPayload().apply(original) == original
    assert ModifiedPayload.from_wire({"body": "x"}).to_wire() == {"body": "x"}
    assert ModifiedPayload.from_wire(None).is_empty()


@settings(max_examples=100, deadline=None)
@given(json_maps, st.none() | st.text(max_size=40), json_maps)
def test_payload_round_trips(headers: dict, body: str | None, props: dict) -> None:
    p = Payload(headers=headers, body=body, properties=props)
    assert Payload.from_wire(p.to_wire()) == p


def test_years_before_1000_are_zero_padded() -> None:
    early = datetime(5, 1, 1, tzinfo=UTC)
    assert format_time(early) == "0005-01-01T00:00:00.000Z"
    assert parse_time(format_time(early)) == early


@pytest.mark.parametrize("edge", ["0001-01-01T00:00:01+02:00", "9999-12-31T23:59:59-02:00"])
def test_times_outside_the_utc_range_are_a_record_error_not_an_overflow(edge: str) -> None:
    with pytest.raises(RecordError) as exc:
        parse_time(edge)
    assert exc.value.code == "BAD_TIME"
