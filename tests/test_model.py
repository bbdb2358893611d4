"""Wire records (DESIGN.md section 3): lossless round trips and clear errors."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

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


def _wire_execution() -> dict[str, Any]:
    rec = {"seq": 1, "processorId": "p", "processorType": "to", "routeId": "r", "status": "COMPLETED"}
    return {
        "executionId": "e",
        "exchangeId": "x",
        "routeId": "r",
        "status": "COMPLETED",
        "outputHeaders": {"a": "1"},
        "processors": [rec, {**rec, "seq": 2}],
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"processors": [None]}, None),  # a record that is not an object (fuzzing finding 16)
        ({"processors": "x"}, "processors"),
        ({"processors": {}}, "processors"),
        ({"outputHeaders": "x"}, "outputHeaders"),  # accepted before; diff then crashed
        ({"outputBody": 5}, "outputBody"),
        ({"durationMs": "5"}, "durationMs"),
        ({"isReplay": "no"}, "isReplay"),
        ({"processorCount": 1.5}, "processorCount"),
    ],
)
def test_from_wire_refuses_a_field_of_the_wrong_type_naming_it(
    change: dict[str, Any], field: str | None
) -> None:
    with pytest.raises(RecordError) as exc:
        Execution.from_wire({**_wire_execution(), **change})
    assert exc.value.hint
    if field is not None:
        assert exc.value.code == "BAD_FIELD" and exc.value.details["field"] == field
        assert repr(field) in exc.value.message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seq": "1"}, "seq"),  # the sort by seq raised a TypeError (fuzzing finding 16)
        ({"seq": None}, "seq"),
        ({"seq": True}, "seq"),
        ({"parentSeq": "1"}, "parentSeq"),
        ({"iteration": 1.0}, "iteration"),
        ({"properties": [1]}, "properties"),
        ({"errorMessage": {"a": 1}}, "errorMessage"),
        ({"processorId": None}, "processorId"),  # required: a null broke diff's alignment sort
        ({"children": "x"}, "children"),
    ],
)
def test_from_wire_refuses_a_processor_field_of_the_wrong_type(change: dict[str, Any], field: str) -> None:
    wire = _wire_execution()
    wire["processors"][1].update(change)
    with pytest.raises(RecordError) as exc:
        Execution.from_wire(wire)
    assert (exc.value.code, exc.value.details["field"]) == ("BAD_FIELD", field)
    assert exc.value.details["record"] == "ProcessorRecord" and exc.value.hint


def test_from_wire_payloads_and_chunks_refuse_wrong_types() -> None:
    for bad in ([1], "ab", 5):
        with pytest.raises(RecordError) as exc:
            Payload.from_wire({"headers": bad})
        assert exc.value.details == {"record": "Payload", "field": "headers"}
    with pytest.raises(RecordError, match="'body'"):
        ModifiedPayload.from_wire({"body": 5})
    with pytest.raises(RecordError, match="'headers'"):
        ModifiedPayload.from_wire({"headers": "x"})
    chunk = {"executionId": "e", "exchangeId": "x", "chunkSeq": 0}
    for change, field in [({"chunkSeq": "0"}, "chunkSeq"), ({"processors": "x"}, "processors")]:
        with pytest.raises(RecordError) as exc:
            Chunk.from_wire({**chunk, **change})
        assert exc.value.details["field"] == field


def test_from_wire_errors_carry_a_hint() -> None:
    with pytest.raises(RecordError) as exc:
        Execution.from_wire({})
    assert exc.value.code == "MISSING_FIELD"
    assert (
        "executionId, exchangeId, routeId, status" in exc.value.hint and "p.execution(id)" in exc.value.hint
    )
    with pytest.raises(RecordError) as exc:
        Execution.from_wire(None)  # type: ignore[arg-type]
    assert "p.execution(id)" in (exc.value.hint or "")
    with pytest.raises(RecordError) as exc:
        ProcessorRecord.from_wire({})
    assert exc.value.hint == (
        "a ProcessorRecord is the JSON object of the platform's API (GET /api/v1/api-docs) with at least "
        "seq, processorId, processorType, routeId, status"
    )


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_from_wire_gives_a_well_typed_record_or_a_record_error(data: st.DataObject) -> None:
    """Any damage to a wire form: a RecordError, or a record whose fields have the types the
    client code (diff, lineage, frames) relies on; never another exception."""
    execution = data.draw(executions(), label="execution")
    wire = execution.to_wire(tree=data.draw(st.booleans(), label="tree"))
    if execution.processors:
        wire["processors"] = [data.draw(damaged(p)) for p in wire["processors"]]
    form = data.draw(damaged(wire), label="wire")
    try:
        got = Execution.from_wire(form)
    except RecordError as exc:
        assert exc.hint
        return
    for rec in (got, *(got.processors or ())):
        for f in dataclasses.fields(rec):
            value = getattr(rec, f.name)
            if f.name in rec._times:
                assert value is None or isinstance(value, datetime)
            elif f.name == "processors":
                assert value is None or isinstance(value, tuple)
            else:
                test, what = _REF_FIELD_TYPES[f.type]  # type: ignore[index]
                assert test(value), (f.name, value, what)
                assert value is not None or f.name not in rec._required, f.name


@pytest.mark.parametrize("good", ["a", "ID-host-1-2", "x" * 128, "a.b:c_d-e"])
def test_valid_ids(good: str) -> None:
    assert check_id(good) == good


@pytest.mark.parametrize("bad", ["", "x" * 129, "a b", "a/b", "é", "a\nb", "a\n", "x" * 128 + "\n", None])
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


# --------------------------------------------------------------------------- generated codecs
#
# model.py generates per-class to_wire / from_wire functions and has fast paths in format_time
# and parse_time. Below is the generic code they replaced, kept as the reference: every
# property checks that the fast code gives the same value (same types, same time zone object)
# or the same error (type, code, message, hint, details) for any input.


def _ref_ms(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise RecordError(
            f"naive datetime {dt.isoformat()} has no time zone",
            code="BAD_TIME",
            hint="use an aware datetime, e.g. datetime.now(UTC)",
        )
    try:
        dt = dt.astimezone(UTC)
    except OverflowError:
        raise RecordError(
            f"time {dt.isoformat()} is outside the years 1-9999 once converted to UTC",
            code="BAD_TIME",
            hint="use a time between 0001-01-01 and 9999-12-31 UTC",
        ) from None
    return dt.replace(microsecond=dt.microsecond - dt.microsecond % 1000)


def _ref_format_time(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    dt = _ref_ms(dt)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


def _ref_parse_time(text: Any) -> datetime | None:
    if text is None:
        return None
    if isinstance(text, datetime):
        return _ref_ms(text)
    if not isinstance(text, str):
        raise RecordError(
            f"time {text!r} is not a string",
            code="BAD_TIME",
            hint="write times like 2026-11-26T13:09:44.123Z, or pass an aware datetime",
        )
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise RecordError(
            f"time {text!r} is not RFC 3339",
            code="BAD_TIME",
            hint="write times like 2026-11-26T13:09:44.123Z",
        ) from None
    if dt.tzinfo is None:
        raise RecordError(f"time {text!r} has no offset", code="BAD_TIME", hint="append Z for UTC")
    return _ref_ms(dt)


def _ref_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _ref_wire_dict(rec: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(rec):
        if f.name.startswith("_"):
            continue
        value = getattr(rec, f.name)
        if value is None and f.name in rec._optional_on_wire:
            continue
        if f.name in rec._times:
            value = _ref_format_time(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[_ref_camel(f.name)] = value
    return out


def _ref_nest(flat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_seq: dict[Any, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for rec in flat:
        node = dict(rec)
        node["children"] = []
        by_seq[node["seq"]] = node
        parent = by_seq.get(node.get("parentSeq")) if node.get("parentSeq") is not None else None
        (parent["children"] if parent is not None else roots).append(node)
    return roots


def _ref_to_wire(rec: Any, *, tree: bool = True) -> dict[str, Any]:
    if isinstance(rec, Chunk):
        return {
            "executionId": rec.execution_id,
            "exchangeId": rec.exchange_id,
            "replayId": rec.replay_id,
            "chunkSeq": rec.chunk_seq,
            "final": rec.final,
            "execution": None if rec.execution is None else _ref_to_wire(rec.execution),
            "processors": [_ref_to_wire(p) for p in rec.processors],
        }
    out = _ref_wire_dict(rec)
    if isinstance(rec, Execution) and rec.processors is not None:
        flat = [_ref_to_wire(p) for p in rec.processors]
        out["processors"] = _ref_nest(flat) if tree else flat
    return out


def _ref_hint(cls: type) -> str:
    keys = [_ref_camel(f.name) for f in dataclasses.fields(cls) if f.name in cls._required]  # type: ignore[attr-defined]
    article = "an" if cls.__name__[0] in "AEIOU" else "a"
    hint = f"{article} {cls.__name__} is the JSON object of the platform's API (GET /api/v1/api-docs)"
    if keys:
        hint += " with at least " + ", ".join(keys)
    if issubclass(cls, Execution):
        hint += "; fetch an execution with p.execution(id) rather than building its dict by hand"
    return hint


def _ref_not_an_object(cls: type, data: Any) -> RecordError:
    return RecordError(
        f"{cls.__name__} must be a JSON object, not {type(data).__name__}", hint=_ref_hint(cls)
    )


def _ref_kwargs(cls: type, data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise _ref_not_an_object(cls, data)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = _ref_camel(f.name)
        if key in data:
            kwargs[f.name] = data[key]
        elif f.name in cls._required:  # type: ignore[attr-defined]
            raise RecordError(
                f"{cls.__name__} is missing the field {key!r}",
                code="MISSING_FIELD",
                hint=_ref_hint(cls),
                details={"record": cls.__name__, "field": key},
            )
    return kwargs


def _ref_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# annotation -> (the test of a value, what it must be); str fields take a null too, unless
# they are required (see _ref_check_types)
_REF_FIELD_TYPES: dict[str, tuple[Any, str]] = {
    "str": (lambda v: v is None or isinstance(v, str), "a string"),
    "str | None": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "int": (_ref_int, "an integer"),
    "int | None": (lambda v: v is None or _ref_int(v), "an integer or null"),
    "float | None": (lambda v: v is None or _ref_int(v) or isinstance(v, float), "a number or null"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "dict[str, Any]": (lambda v: isinstance(v, Mapping), "a JSON object"),
    "dict[str, Any] | None": (lambda v: v is None or isinstance(v, Mapping), "a JSON object or null"),
}


def _ref_bad_field(cls: type, key: str, value: Any, what: str) -> RecordError:
    is_id = key in ("executionId", "exchangeId", "replayId", "sourceExchangeId")  # check_id's ids
    return RecordError(
        f"{cls.__name__} field {key!r} must be {what}, not {type(value).__name__}",
        code="BAD_ID" if is_id else "BAD_FIELD",
        hint="ids are 1-128 characters of letters, digits and . _ : -"
        if is_id
        else "wire records hold JSON: maps are objects, bodies and ids strings, seq an integer "
        "(GET /api/v1/api-docs has the schema)",
        details={"record": cls.__name__, "field": key},
    )


def _ref_check_types(cls: type, kw: dict[str, Any]) -> None:
    """The first field (in field order) whose value has the wrong type is the error; times are
    parse_time's to check, fields with a decoder the decoder's."""
    for f in dataclasses.fields(cls):
        skip = cls._times | cls._wire_decoders.keys() | cls._unchecked  # type: ignore[attr-defined]
        if f.name in kw and f.name not in skip:
            test, what = _REF_FIELD_TYPES[f.type]  # type: ignore[index]
            if not test(kw[f.name]) or (kw[f.name] is None and f.name in cls._required):  # type: ignore[attr-defined]
                raise _ref_bad_field(cls, _ref_camel(f.name), kw[f.name], what)


def _ref_list(cls: type, key: str, value: Any, what: str) -> Any:
    if value is not None and not isinstance(value, list | tuple):
        raise _ref_bad_field(cls, key, value, what)
    return value


def _ref_construct(cls: type, **kw: Any) -> Any:
    # The old __post_init__ parsed the times after __init__; parsing them first (in field
    # order) with the reference parse_time raises the same first error, and leaves datetimes
    # that the new __post_init__ keeps as they are.
    for f in dataclasses.fields(cls):
        if f.name in cls._times and kw.get(f.name) is not None:  # type: ignore[attr-defined]
            kw[f.name] = _ref_parse_time(kw[f.name])
    return cls(**kw)


def _ref_flatten(nodes: Any) -> Any:
    for node in nodes:
        if not isinstance(node, Mapping):
            raise _ref_not_an_object(ProcessorRecord, node)
        children = node.get("children") or ()
        _ref_list(ProcessorRecord, "children", children, "a list of processor records")
        yield {k: v for k, v in node.items() if k != "children"}
        yield from _ref_flatten(children)


def _ref_map(value: Any, key: str) -> dict[str, Any]:
    try:
        return dict(value or {})
    except (TypeError, ValueError):
        raise _ref_bad_field(Payload, key, value, "a JSON object or null") from None


def _ref_from_wire(cls: type, data: Any) -> Any:
    if cls is Payload:
        kw = _ref_kwargs(cls, data)
        _ref_check_types(cls, kw)
        return _ref_construct(
            cls,
            headers=_ref_map(kw.get("headers"), "headers"),
            body=kw.get("body"),
            properties=_ref_map(kw.get("properties"), "properties"),
        )
    if cls is ModifiedPayload:
        if data is None:
            return cls()
        kw = _ref_kwargs(cls, data)
        _ref_check_types(cls, kw)
        return _ref_construct(cls, **kw)
    kw = _ref_kwargs(cls, data)
    if cls is ProcessorRecord:
        kw.setdefault("execution_id", data.get("executionId", ""))
        kw.setdefault("exchange_id", data.get("exchangeId", ""))
        for key in ("iteration", "depth"):
            if kw.get(key) is None:
                kw[key] = 0
        for key in ("stubbed", "body_truncated"):
            if kw.get(key) is None:
                kw[key] = False
        _ref_check_types(cls, kw)
    elif cls is Execution:
        if kw.get("is_replay") is None:
            kw["is_replay"] = False
        if kw.get("processor_count") is None:
            kw["processor_count"] = 0
        if kw.get("capture_mode") is None:
            kw["capture_mode"] = "PROCESSOR"
        _ref_check_types(cls, kw)
        procs = kw.pop("processors", None)
        if _ref_list(cls, "processors", procs, "a list of processor records or null") is not None:
            flat = [_ref_from_wire(ProcessorRecord, p) for p in _ref_flatten(procs)]
            flat.sort(key=lambda p: p.seq)
            kw["processors"] = tuple(flat)
    elif cls is Chunk:
        if kw.get("final") is None:
            kw["final"] = True
        _ref_check_types(cls, kw)
        execution = kw.get("execution")
        kw["execution"] = None if execution is None else _ref_from_wire(Execution, execution)
        procs = _ref_list(cls, "processors", kw.get("processors"), "a list of processor records or null")
        kw["processors"] = tuple(_ref_from_wire(ProcessorRecord, p) for p in procs or ())
    return _ref_construct(cls, **kw)


def _same(a: Any, b: Any) -> bool:
    """Equal, of the same types all the way down (True == 1 and 1 == 1.0 are not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, datetime):
        return a == b and a.tzinfo is b.tzinfo and a.fold == b.fold
    if dataclasses.is_dataclass(a):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, Mapping):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """What a call gives: ("value", v) or ("error", type, its details)."""
    try:
        return ("value", fn(*args, **kwargs))
    except RecordError as exc:
        return ("error", type(exc), exc.code, exc.message, exc.hint, exc.details)
    except Exception as exc:  # wrong types fail the same way (AttributeError, TypeError, ...)
        return ("error", type(exc), str(exc))


def _assert_same_outcome(fast: tuple[Any, ...], slow: tuple[Any, ...]) -> None:
    assert fast[0] == slow[0], (fast, slow)
    if fast[0] == "value":
        assert _same(fast[1], slow[1]), (fast[1], slow[1])
    else:
        assert fast == slow


# -- times

offsets = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])
any_datetimes = st.datetimes(timezones=st.none() | offsets, allow_imaginary=True)
canonical = st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z\Z")


@st.composite
def time_texts(draw: st.DrawFn) -> str:
    """Strings near the canonical form: what format_time writes, then perhaps damaged."""
    dt = draw(any_datetimes)
    text = draw(
        st.sampled_from(
            [
                _outcome(_ref_format_time, dt)[1] if dt.tzinfo else dt.isoformat() + "Z",
                dt.isoformat(),
                dt.isoformat(timespec="milliseconds"),
                dt.isoformat(sep=" ") + "z",
            ]
        )
        | canonical
    )
    if not isinstance(text, str):
        text = dt.isoformat()
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        char = draw(st.sampled_from(["", " ", "0", "9", "Z", "+", "-", ".", "T", "١", "x"]))
        text = text[:at] + char + text[at + 1 :]
    return text


@settings(max_examples=300, deadline=None)
@given(any_datetimes | st.just(datetime(5, 1, 1, tzinfo=UTC)) | st.none())
def test_format_time_fast_path_equals_reference(dt: datetime | None) -> None:
    _assert_same_outcome(_outcome(format_time, dt), _outcome(_ref_format_time, dt))


@settings(max_examples=500, deadline=None)
@given(time_texts() | canonical | any_datetimes | st.text(max_size=30) | st.none() | st.integers())
def test_parse_time_fast_path_equals_reference(value: Any) -> None:
    _assert_same_outcome(_outcome(parse_time, value), _outcome(_ref_parse_time, value))


def test_parse_time_edge_cases_equal_reference() -> None:
    for value in [
        "2026-11-26T13:09:44.123Z",
        "0001-01-01T00:00:00.000Z",
        "9999-12-31T23:59:59.999Z",
        "2026-13-26T13:09:44.123Z",  # the canonical shape, no such month
        "2026-02-30T13:09:44.123Z",
        "0000-01-01T00:00:00.000Z",
        "2026-11-26T24:00:00.000Z",
        "2026-11-26T13:09:60.000Z",
        "2026-11-26T13:09:44.123z",
        " 2026-11-26T13:09:44.123Z",
        "2026-11-26T13:09:44.123Z\n",
        "２026-11-26T13:09:44.123Z",  # a full-width digit
        datetime(2026, 1, 1, 0, 0, 0, 999, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 0, 1000, tzinfo=UTC, fold=1),
        datetime(1, 1, 1, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 1, 1),
    ]:
        _assert_same_outcome(_outcome(parse_time, value), _outcome(_ref_parse_time, value))
        if isinstance(value, datetime):
            _assert_same_outcome(_outcome(format_time, value), _outcome(_ref_format_time, value))


# -- records to the wire

odd_values = (
    json_scalars
    | json_maps
    | json_maps.map(MappingProxyType)
    | json_maps.map(OrderedDict)
    | st.lists(json_scalars, max_size=3)
    | st.lists(json_scalars, max_size=3).map(tuple)
    | st.frozensets(st.integers(), max_size=2)
    | st.floats(allow_nan=False)
)


aware_datetimes = any_datetimes.filter(lambda d: d.tzinfo is not None)


def _records(cls: type) -> st.SearchStrategy[Any]:
    """Records of ``cls`` whose fields hold any value (the dataclasses do not check types)."""
    kwargs = {
        f.name: (st.none() | aware_datetimes if f.name in cls._times else odd_values)  # type: ignore[attr-defined]
        for f in dataclasses.fields(cls)
        if f.name != "processors" and f.name != "execution"
    }
    return st.builds(cls, **kwargs).filter(lambda r: not isinstance(r, Execution) or r.processors is None)


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_to_wire_equals_reference_for_any_field_values(data: st.DataObject) -> None:
    for cls in (ProcessorRecord, Payload, ModifiedPayload, Execution):
        rec = data.draw(_records(cls), label=cls.__name__)
        wire = rec.to_wire()
        assert _same(wire, _ref_to_wire(rec))
        for f in dataclasses.fields(rec):  # a Mapping goes out as a copy, never the record's own
            if isinstance(getattr(rec, f.name), Mapping):
                assert wire[_ref_camel(f.name)] is not getattr(rec, f.name)


@settings(max_examples=60, deadline=None)
@given(executions(), st.booleans())
def test_execution_and_chunk_to_wire_equal_reference(execution: Execution, tree: bool) -> None:
    assert _same(execution.to_wire(tree=tree), _ref_to_wire(execution, tree=tree))
    chunk = Chunk("e", "x", 3, final=tree, execution=execution, processors=execution.processors or ())
    assert _same(chunk.to_wire(), _ref_to_wire(chunk))
    assert _same(chunk.to_wire(), Chunk.from_wire(chunk.to_wire()).to_wire())


def test_to_wire_copies_mappings_and_keeps_field_order() -> None:
    headers = MappingProxyType({"a": 1})
    rec = ProcessorRecord("e", "x", 1, "p", "to", "r", "COMPLETED", input_headers=headers)
    wire = rec.to_wire()
    assert type(wire["inputHeaders"]) is dict and wire["inputHeaders"] == {"a": 1}
    assert wire["inputHeaders"] is not rec.to_wire()["inputHeaders"]  # a copy each time
    assert list(wire) == [_ref_camel(f.name) for f in dataclasses.fields(ProcessorRecord)]
    hit = Execution("e", "x", "r", "COMPLETED", input_body="b", error_stack_trace=None)
    assert list(hit.to_wire())[-1] == "inputBody"


# -- records from the wire


@st.composite
def damaged(draw: st.DrawFn, wire: Mapping[str, Any]) -> Any:
    """A wire dict with keys dropped, nulled or replaced by junk, unknown keys added, perhaps
    not a dict at all."""
    junk = odd_values | time_texts()
    out = {}
    for key, value in wire.items():
        action = draw(st.integers(0, 40))
        if action == 0:
            continue
        out[key] = None if action == 1 else draw(junk) if action == 2 else value
    for _ in range(draw(st.integers(0, 2))):
        out[draw(st.text(max_size=8))] = draw(junk)
    shape = draw(st.integers(0, 20))
    if shape == 0:
        return MappingProxyType(out)
    if shape == 1:
        return OrderedDict(out)
    if shape == 2:
        return draw(st.none() | st.lists(st.integers(), max_size=2) | st.text(max_size=5))
    return out


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_from_wire_equals_reference_for_damaged_wire_forms(data: st.DataObject) -> None:
    execution = data.draw(executions(), label="execution")
    tree = data.draw(st.booleans(), label="tree")
    wire = execution.to_wire(tree=tree)
    if execution.processors:  # damage the processor records too (flat ones: a tree keeps its nodes)
        wire["processors"] = [data.draw(damaged(p)) if not tree else p for p in wire["processors"]]
    for cls, form in [
        (Execution, data.draw(damaged(wire), label="execution wire")),
        (
            Chunk,
            data.draw(
                damaged(
                    {
                        "executionId": "e",
                        "exchangeId": "x",
                        "chunkSeq": 1,
                        "final": None,
                        "execution": data.draw(damaged(execution.summary().to_wire())),
                        "processors": [data.draw(damaged(p.to_wire())) for p in execution.processors or ()],
                    }
                ),
                label="chunk wire",
            ),
        ),
        (Payload, data.draw(damaged(execution.start_payload.to_wire()), label="payload wire")),
        (ModifiedPayload, data.draw(damaged({"headers": {"a": 1}, "body": "b", "properties": None}))),
    ] + [
        (ProcessorRecord, data.draw(damaged(p.to_wire()), label="record wire"))
        for p in (execution.processors or ())[:2]
    ]:
        _assert_same_outcome(_outcome(cls.from_wire, form), _outcome(_ref_from_wire, cls, form))


@settings(max_examples=40, deadline=None)
@given(executions())
def test_from_wire_equals_reference_for_exact_wire_forms(execution: Execution) -> None:
    for tree in (True, False):
        wire = execution.to_wire(tree=tree)
        _assert_same_outcome(_outcome(Execution.from_wire, wire), _outcome(_ref_from_wire, Execution, wire))
        assert Execution.from_wire(wire) == execution  # == : the wire form has no fold
    for p in execution.processors or ():
        assert ProcessorRecord.from_wire(p.to_wire()) == p


def test_from_wire_defaults_and_errors_by_record() -> None:
    rec = ProcessorRecord.from_wire(
        {
            "seq": 1,
            "processorId": "p",
            "processorType": "to",
            "routeId": "r",
            "status": "OK",
            "iteration": None,
            "stubbed": None,
            "executionId": None,
            "startTime": "2026-01-01T01:00:00.5+01:00",
        }
    )
    assert rec.exchange_id == "" and rec.execution_id is None  # absent reads as "", null stays
    assert rec.iteration == 0 and rec.stubbed is False
    assert rec.start_time == datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    with pytest.raises(RecordError) as exc:
        ProcessorRecord.from_wire({"seq": 1, "processorId": "p", "status": "OK"})
    assert exc.value.code == "MISSING_FIELD"
    assert exc.value.details == {"record": "ProcessorRecord", "field": "processorType"}
    with pytest.raises(RecordError, match="ProcessorRecord must be a JSON object, not list"):
        ProcessorRecord.from_wire([])  # type: ignore[arg-type]
    chunk = Chunk.from_wire(
        {"executionId": "e", "exchangeId": "x", "chunkSeq": 0, "final": None, "processors": None}
    )
    assert chunk.final is True and chunk.processors == () and chunk.execution is None
    payload = Payload.from_wire({"headers": None})
    assert payload == Payload() and Payload.from_wire({"headers": [("a", 1)]}).headers == {"a": 1}


def test_a_subclass_gets_its_own_codec() -> None:
    # The generated functions are per class: a subclass made after its base has converted
    # (and so has its base's functions installed) still converts its own fields.
    base = ProcessorRecord("e", "x", 1, "p", "to", "r", "OK")
    assert base.to_wire() and ProcessorRecord.from_wire(base.to_wire()) == base

    @dataclasses.dataclass(frozen=True, slots=True)
    class Tagged(ProcessorRecord):
        tag_name: str | None = None

    tagged = Tagged("e", "x", 1, "p", "to", "r", "OK", tag_name="t")
    assert tagged.to_wire() == {**base.to_wire(), "tagName": "t"}
    assert Tagged.from_wire(tagged.to_wire()) == tagged
    assert type(Tagged.from_wire(base.to_wire())) is Tagged
    assert ProcessorRecord.from_wire(tagged.to_wire()) == base  # the base's codec is unchanged


@settings(max_examples=200, deadline=None)
@given(
    headers=st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    body=st.none() | st.text(max_size=20),
    seq=st.integers(0, 1000),
)
def test_evolve_gives_what_dataclasses_replace_gives(headers: Any, body: Any, seq: int) -> None:
    from dataclasses import replace as dc_replace

    record = ProcessorRecord(
        execution_id="x", exchange_id="e", seq=1, processor_id="p", processor_type="log",
        route_id="r", status="COMPLETED", start_time="2026-01-01T00:00:00.001Z", input_headers={"a": "b"},
    )  # fmt: skip
    changes = {"input_headers": headers, "output_body": body, "seq": seq}
    evolved = record._evolve(**changes)
    assert evolved == dc_replace(record, **changes)
    assert type(evolved) is ProcessorRecord and evolved.start_time is record.start_time
    # A time goes through replace (parsed); an unknown field is refused as replace refuses it.
    assert (
        record._evolve(end_time="2026-01-01T01:00:00Z").end_time
        == dc_replace(record, end_time="2026-01-01T01:00:00Z").end_time
    )
    with pytest.raises(TypeError):
        record._evolve(no_such_field=1)
