"""The sandbox store (moat_nb/sandbox/store.py): ingest of POST /data/chunks, search (DESIGN.md
section 4), detail, and what a broken store would get wrong: lost fields, double counting of a
re-sent chunk, half-written malformed chunks, filters and sorting that disagree with their
definition (checked against :func:`reference_search`, a plain Python filter)."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moat_nb.errors import MoatError, RecordError, ValidationError
from moat_nb.model import Chunk, Execution, ProcessorRecord, format_time
from moat_nb.sandbox import store as store_module
from moat_nb.sandbox.store import MAX_LIMIT, SCHEMA_VERSION, SORT_FIELDS, Store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# --------------------------------------------------------------------------- reference semantics


def _headers_text(h: Mapping[str, Any] | None) -> str | None:
    return None if h is None else json.dumps(h, ensure_ascii=False, separators=(",", ":"))


def _text_parts(x: Execution, which: str) -> list[str]:
    procs = x.processors or ()
    if which == "body":
        parts = [x.input_body, x.output_body, *(b for p in procs for b in (p.input_body, p.output_body))]
    elif which == "headers":
        parts = [
            _headers_text(h)
            for h in (
                x.input_headers,
                x.output_headers,
                *(h for p in procs for h in (p.input_headers, p.output_headers)),
            )
        ]
    else:
        parts = [
            x.error_type,
            x.error_message,
            x.error_stack_trace,
            *(e for p in procs for e in (p.error_type, p.error_message)),
        ]
    return [p for p in parts if p]


# Lower-cased text parts per execution, computed once (the traffic tests filter 1,500 executions
# of ~50 processors many times). Keyed by id() with the object kept, so an id is never reused.
_PARTS: dict[int, tuple[Execution, dict[str, list[str]]]] = {}


def _lowered_parts(x: Execution) -> dict[str, list[str]]:
    hit = _PARTS.get(id(x))
    if hit is None or hit[0] is not x:
        parts = {
            w: list(dict.fromkeys(p.lower() for p in _text_parts(x, w)))
            for w in ("body", "headers", "errors")
        }
        hit = _PARTS[id(x)] = (x, parts)
    return hit[1]


_SORT_ATTRS = {
    "startTime": "start_time",
    "endTime": "end_time",
    "durationMs": "duration_ms",
    "status": "status",
    "routeId": "route_id",
    "environment": "environment",
    "applicationId": "application_id",
    "instanceId": "instance_id",
    "correlationId": "correlation_id",
    "exchangeId": "exchange_id",
    "executionId": "execution_id",
    "processorCount": "processor_count",
}


def reference_search(executions: Iterable[Execution], **f: Any) -> tuple[list[str], int]:
    """What search must answer, written as plainly as possible: (page of execution ids, total).

    ``executions`` are full executions (with processors); filter names are camelCase.
    """

    def as_list(v: Any) -> list[Any]:
        return [v] if isinstance(v, str) else list(v)

    def keep(x: Execution) -> bool:
        checks = {
            "environment": x.environment,
            "application": x.application_id,
            "routeId": x.route_id,
            "status": x.status,
            "correlationId": x.correlation_id,
            "exchangeId": x.exchange_id,
            "replayId": x.replay_id,
            "sourceExchangeId": x.source_exchange_id,
        }
        for name, value in checks.items():
            if f.get(name) is not None and value not in as_list(f[name]):
                return False
        t = x.start_time
        if f.get("timeFrom") is not None and (t is None or t < f["timeFrom"]):
            return False
        if f.get("timeTo") is not None and (t is None or t >= f["timeTo"]):
            return False
        d = x.duration_ms
        if f.get("durationMin") is not None and (d is None or d < f["durationMin"]):
            return False
        if f.get("durationMax") is not None and (d is None or d > f["durationMax"]):
            return False
        if f.get("isReplay") is not None and x.is_replay != f["isReplay"]:
            return False
        for name, which in (
            ("text", ("body", "headers", "errors")),
            ("textInBody", ("body",)),
            ("textInHeaders", ("headers",)),
            ("textInErrors", ("errors",)),
        ):
            term = f.get(name)
            if term:
                lowered = _lowered_parts(x)
                if not any(term.lower() in p for w in which for p in lowered[w]):
                    return False
        return True

    hits = [x for x in executions if keep(x)]
    field, _, direction = f.get("sort", "startTime:desc").partition(":")
    attr = _SORT_ATTRS[field]

    def key(x: Execution) -> tuple[Any, ...]:
        v = getattr(x, attr)
        return (v is not None, v if v is not None else 0, x.execution_id)  # NULL sorts smallest

    hits.sort(key=key, reverse=(direction or "asc") == "desc")
    offset, limit = f.get("offset", 0), f.get("limit", 50)
    return [x.execution_id for x in hits[offset : offset + limit]], len(hits)


# --------------------------------------------------------------------------- builders


def proc(execution_id: str, exchange_id: str, seq: int, **kw: Any) -> ProcessorRecord:
    base: dict[str, Any] = dict(
        execution_id=execution_id,
        exchange_id=exchange_id,
        seq=seq,
        processor_id=f"to{seq}",
        processor_type="to",
        route_id="intake",
        status="COMPLETED",
        start_time=T0 + timedelta(milliseconds=seq),
        end_time=T0 + timedelta(milliseconds=seq + 1),
        duration_ms=1.25,
        parent_seq=None if seq == 1 else 1,
        depth=0 if seq == 1 else 1,
        input_body=f'{{"step":{seq}}}',
        output_body=f'{{"step":{seq + 1}}}',
        input_headers={"OrderId": "A-1"},
        output_headers={"OrderId": "A-1", "Step": seq},
        input_properties={},
        properties={"p": seq},
    )
    base.update(kw)
    return ProcessorRecord(**base)


def execution(n: int = 1, *, procs: int = 3, **kw: Any) -> Execution:
    execution_id, exchange_id = f"exec-{n}", f"ex-{n}"
    base: dict[str, Any] = dict(
        execution_id=execution_id,
        exchange_id=exchange_id,
        route_id="intake",
        status="COMPLETED",
        correlation_id=f"corr-{n}",
        route_version="v2",
        application_id="orders",
        instance_id="orders-dev-1",
        environment="dev",
        start_time=T0 + timedelta(minutes=n),
        end_time=T0 + timedelta(minutes=n, milliseconds=12),
        duration_ms=12.5,
        processor_count=procs,
        capture_mode="PROCESSOR",
        input_body='{"orderId": "A-1", "customer": "C-7"}',
        output_body='{"total": 10.5}',
        input_headers={"OrderId": "A-1", "Content-Type": "application/json"},
        output_headers={"OrderId": "A-1"},
        input_properties={"tenant": "t1"},
        output_properties={"tenant": "t1", "priced": True},
        processors=tuple(proc(execution_id, exchange_id, s) for s in range(1, procs + 1)),
    )
    base.update(kw)
    return Execution(**base)


def chunk_of(x: Execution, *, chunk_seq: int = 0, final: bool = True) -> Chunk:
    return Chunk(
        execution_id=x.execution_id,
        exchange_id=x.exchange_id,
        chunk_seq=chunk_seq,
        final=final,
        replay_id=x.replay_id,
        execution=replace(x, processors=None),
        processors=x.processors or (),
    )


def ids(hits: Sequence[Execution]) -> list[str]:
    return [h.execution_id for h in hits]


@pytest.fixture
def store(tmp_path: Path) -> Iterable[Store]:
    s = Store(tmp_path / "moat.db")
    assert s.fts5  # SQLite >= 3.34 with FTS5, as Debian's and python.org's builds are
    yield s
    s.close()


@pytest.fixture(params=["fts5", "no-fts5"])
def each_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterable[Store]:
    """A fresh store; once with the FTS5 trigram index, once with the scan fallback."""
    if request.param == "no-fts5":
        monkeypatch.setattr(store_module, "_fts5_available", lambda conn: False)
    s = Store(tmp_path / "moat.db")
    assert s.fts5 is (request.param == "fts5")
    yield s
    s.close()


# --------------------------------------------------------------------------- ingest


def test_round_trip_execution_with_processors(store: Store) -> None:
    x = execution(1, procs=4)
    store.ingest(chunk_of(x))
    assert store.execution("exec-1") == x
    hits, total = store.search()
    assert (hits, total) == ([x.summary()], 1)
    assert store.processor("exec-1", 3) == x.processors[2]  # type: ignore[index]
    assert store.processor("exec-1", 99) is None
    assert store.execution("nope") is None


def test_ingest_accepts_the_wire_dict_and_a_nested_tree(store: Store) -> None:
    x = execution(2, procs=3)
    wire = chunk_of(x).to_wire()
    store.ingest(wire)
    assert store.execution("exec-2") == x
    # Processors may also come inside the execution (as Cameleer's tree), filled with the chunk's ids.
    y = execution(3, procs=3)
    tree = {
        "executionId": "exec-3",
        "exchangeId": "ex-3",
        "chunkSeq": 0,
        "final": True,
        "execution": y.to_wire(),
    }
    store.ingest(tree)
    assert store.execution("exec-3") == y


def test_processors_without_ids_take_the_chunks(store: Store) -> None:
    x = execution(1, procs=2)
    wire = chunk_of(x).to_wire()
    for p in wire["processors"]:
        del p["executionId"], p["exchangeId"]
    store.ingest(wire)
    assert store.execution("exec-1") == x


def test_multi_chunk_ingest_in_order_and_out_of_order(each_store: Store) -> None:
    store = each_store
    x = execution(1, procs=6, status="COMPLETED")
    ps = x.processors or ()
    running = replace(x, processors=None, status="RUNNING", end_time=None, duration_ms=None)
    parts = [
        Chunk("exec-1", "ex-1", 0, final=False, processors=ps[0:2]),
        Chunk("exec-1", "ex-1", 1, final=False, execution=running, processors=ps[2:4]),
        Chunk("exec-1", "ex-1", 2, final=True, execution=replace(x, processors=None), processors=ps[4:6]),
    ]
    store.ingest(parts[0])
    assert store.search() == ([], 0)  # processors alone are not an execution yet
    assert store.processor("exec-1", 2) == ps[1]
    store.ingest(parts[1])
    hits, _ = store.search()
    assert [h.status for h in hits] == ["RUNNING"]
    store.ingest(parts[2])
    assert store.execution("exec-1") == x
    # A text only in the first chunk's processors is found once the summary exists.
    assert ids(store.search(text='"step":2')[0]) == ["exec-1"]

    # Reversed order: the late non-final chunk must not turn COMPLETED back into RUNNING.
    y = replace(
        x,
        execution_id="exec-2",
        exchange_id="ex-2",
        processors=tuple(replace(p, execution_id="exec-2", exchange_id="ex-2") for p in ps),
    )
    yps = y.processors or ()
    y_running = replace(y, processors=None, status="RUNNING")
    store.ingest(
        Chunk("exec-2", "ex-2", 2, final=True, execution=replace(y, processors=None), processors=yps[4:6])
    )
    # Each read between chunks is cached until the next chunk of that execution arrives.
    assert store.execution("exec-2").processors == yps[4:6]
    store.ingest(Chunk("exec-2", "ex-2", 1, final=False, execution=y_running, processors=yps[2:4]))
    assert store.execution("exec-2").processors == yps[2:6]
    assert store.execution("exec-2") is store.execution("exec-2")  # served from the cache
    store.ingest(Chunk("exec-2", "ex-2", 0, final=False, processors=yps[0:2]))
    assert store.execution("exec-2") == y


def test_a_read_that_overlaps_an_ingest_of_its_execution_is_not_cached(store: Store) -> None:
    """The cache keeps a read only when no ingest of that execution committed meanwhile."""
    x = execution(1, procs=4, status="COMPLETED")
    ps = x.processors or ()
    store.ingest(
        Chunk("exec-1", "ex-1", 0, final=True, execution=replace(x, processors=None), processors=ps[0:2])
    )
    read = store._read_execution

    def racing_read(execution_id: str) -> Execution | None:
        stale = read(execution_id)
        store.ingest(Chunk("exec-1", "ex-1", 1, final=False, processors=ps[2:4]))  # a late chunk
        return stale

    store._read_execution = racing_read  # type: ignore[method-assign]
    assert store.execution("exec-1").processors == ps[0:2]  # what the read saw
    store._read_execution = read  # type: ignore[method-assign]
    assert store.execution("exec-1") == x  # not the stale read


def test_reingest_is_idempotent(store: Store) -> None:
    x = execution(1, procs=3)
    c = chunk_of(x)
    store.ingest(c)
    store.ingest(c)
    store.ingest(c.to_wire())
    assert store.ingest_many([c, c]) == 2
    assert store.search() == ([x.summary()], 1)
    assert store.execution("exec-1") == x
    assert store.stats() == [{"environment": "dev", "route_id": "intake", "status": "COMPLETED", "count": 1}]


def test_same_chunk_seq_with_other_content_is_a_conflict(store: Store) -> None:
    x = execution(1)
    store.ingest(chunk_of(x))
    with pytest.raises(RecordError) as err:
        store.ingest(chunk_of(replace(x, status="FAILED")))
    assert err.value.code == "CHUNK_CONFLICT"
    assert store.execution("exec-1") == x
    # Another chunk claiming a different exchange for the same execution id.
    with pytest.raises(RecordError) as err:
        store.ingest(Chunk("exec-1", "ex-other", 5, final=False))
    assert err.value.code == "CHUNK_CONFLICT"


def test_a_chunk_cannot_replace_a_processor_record_another_chunk_stored(store: Store) -> None:
    # Replay trace events refer to stored records (replay_tables.PROCESSOR_REF): a record,
    # once stored, must stay what was sent.
    x = execution(1, procs=4)
    first = Chunk("exec-1", "ex-1", 0, final=False, processors=x.processors[:2])
    store.ingest(first)
    clash = Chunk("exec-1", "ex-1", 1, final=True, execution=replace(x, processors=None),
                  processors=(replace(x.processors[1], status="FAILED"), *x.processors[2:]))  # fmt: skip
    with pytest.raises(RecordError) as err:
        store.ingest(clash)
    assert err.value.code == "CHUNK_CONFLICT" and "repeats processor seq [2]" in err.value.message
    assert store.processors("exec-1", [1, 2, 3]) == {1: x.processors[0], 2: x.processors[1]}
    assert store.execution("exec-1") is None  # nothing of the refused chunk was written
    store.ingest(Chunk("exec-1", "ex-1", 1, final=True, execution=replace(x, processors=None),
                       processors=x.processors[2:]))  # fmt: skip
    assert store.execution("exec-1") == x
    assert store.processors("exec-1", []) == {} and store.processors("exec-2", [1]) == {}


def _malformed() -> dict[str, Any]:
    good = chunk_of(execution(9, procs=2)).to_wire()
    cases: dict[str, Any] = {}

    def case(name: str, mutate: Any) -> None:
        wire = json.loads(json.dumps(good))
        mutate(wire)
        cases[name] = wire

    case("missing executionId", lambda w: w.pop("executionId"))
    case("bad id", lambda w: w.update(executionId="exec 9/../x"))
    case("negative chunkSeq", lambda w: w.update(chunkSeq=-1))
    case("chunkSeq not int", lambda w: w.update(chunkSeq="zero"))
    case("final not bool", lambda w: w.update(final="yes"))
    case("final without execution", lambda w: w.update(execution=None))
    case("unknown status", lambda w: w["execution"].update(status="DONE"))
    case("unknown capture mode", lambda w: w["execution"].update(captureMode="FULL"))
    case("execution of another id", lambda w: w["execution"].update(executionId="exec-8"))
    case("execution is a list", lambda w: w.update(execution=[1, 2]))
    case("processors not a list", lambda w: w.update(processors=7))
    case("bad time", lambda w: w["execution"].update(startTime="yesterday"))
    case("headers not an object", lambda w: w["execution"].update(inputHeaders=["a"]))
    case("body not a string", lambda w: w["execution"].update(inputBody={"a": 1}))
    case("duration is text", lambda w: w["execution"].update(durationMs="12"))
    case("processor missing status", lambda w: w["processors"][1].pop("status"))
    case("processor seq twice", lambda w: w["processors"][1].update(seq=w["processors"][0]["seq"]))
    case("processor of another execution", lambda w: w["processors"][1].update(executionId="exec-8"))
    case("processor negative iteration", lambda w: w["processors"][1].update(iteration=-2))
    case("replayId on execution only", lambda w: w["execution"].update(replayId="r-1", isReplay=True))
    case("NaN in headers", lambda w: w["processors"][1]["outputHeaders"].update(x=float("nan")))
    case("lone surrogate in body", lambda w: w["processors"][1].update(inputBody="ok \ud800 no"))
    case("lone surrogate in a header", lambda w: w["processors"][1]["inputHeaders"].update(x="\udc00"))
    case("infinity in properties", lambda w: w["execution"]["inputProperties"].update(x=float("inf")))
    # Beyond SQLite's 64-bit integers (found by review: OverflowError, a 500 over HTTP).
    case("duration beyond 64 bits", lambda w: w["execution"].update(durationMs=2**64))
    case("processor duration beyond floats", lambda w: w["processors"][0].update(durationMs=10**400))
    case("seq beyond 64 bits", lambda w: w["processors"][1].update(seq=2**63))
    case("parentSeq beyond 64 bits", lambda w: w["processors"][1].update(parentSeq=-(2**63) - 1))
    case("iteration beyond 64 bits", lambda w: w["processors"][1].update(iteration=2**63))
    case("processorCount beyond 64 bits", lambda w: w["execution"].update(processorCount=2**63))
    case("chunkSeq beyond 64 bits", lambda w: w.update(chunkSeq=2**63))
    case("not an object", lambda w: w.clear())
    cases["a list"] = [good]
    return cases


def test_json_columns_keep_what_only_the_stdlib_writes(store: Store) -> None:
    # orjson refuses integers beyond 64 bits and spells 1e+16 "1e16": the stored maps must read
    # back as they were sent either way.
    maps = {"big": 2**70, "small": -(2**65), "f": 1e16, "tiny": 1e-7, "neg0": -0.0, "text": "é\u2028"}
    x = execution(9, procs=2)
    x = replace(
        x,
        input_properties=maps,
        processors=(replace(x.processors[0], input_headers=maps), *x.processors[1:]),  # type: ignore[misc]
    )
    store.ingest(chunk_of(x))
    got = store.execution("exec-9")
    assert got is not None and got.input_properties == maps and got.processors[0].input_headers == maps
    assert repr(got.input_properties["neg0"]) == "-0.0"


_ROW_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(), st.binary(max_size=20)
)


@given(st.lists(st.tuples(_ROW_VALUE, _ROW_VALUE, _ROW_VALUE), max_size=6))
def test_content_digest_depends_on_values_not_on_objects(rows: list[tuple[Any, ...]]) -> None:
    # Equal values built anew (no object shared, strings not interned) give the same digest:
    # a re-sent chunk is parsed again and must be recognised as the same.
    copy = [tuple(v[:] if isinstance(v, str | bytes) and len(v) > 1 else v for v in r) for r in rows]
    rebuilt = [tuple(("".join(reversed(v[::-1])) if isinstance(v, str) else v) for v in r) for r in copy]
    interned = [tuple((sys.intern(v) if isinstance(v, str) else v) for v in r) for r in rows]
    shared = [rows[0]] * 2 if rows else []  # one tuple object twice: marshal's references (v3+)
    digest = store_module._content_digest(("head", rows))
    assert store_module._content_digest(("head", rebuilt)) == digest
    assert store_module._content_digest(("head", interned)) == digest
    assert store_module._content_digest(("head", shared)) == store_module._content_digest(
        ("head", [tuple(copy[0]), tuple(rebuilt[0])] if rows else [])
    )
    # A value of another type or sign is another content (1 / 1.0 / True; 0.0 / -0.0).
    for before, after in ((1, 1.0), (1, True), (0.0, -0.0), ("1", 1), (b"a", "a"), (None, "")):
        changed = [*rows, (before,)]
        assert store_module._content_digest(("head", changed)) != store_module._content_digest(
            ("head", [*rows, (after,)])
        )


@pytest.mark.parametrize("name", list(_malformed()))
def test_malformed_chunk_is_rejected_and_nothing_is_written(store: Store, name: str) -> None:
    bad = _malformed()[name]
    with pytest.raises(RecordError):
        store.ingest(bad)
    assert store.search() == ([], 0)
    assert store.processor("exec-9", 1) is None
    assert store.execution("exec-9") is None
    # The good version of the same chunk is still accepted afterwards (no chunk row was left).
    store.ingest(chunk_of(execution(9, procs=2)))
    assert store.execution("exec-9") == execution(9, procs=2)


def test_ingest_many_rolls_back_the_batch_with_a_bad_chunk(tmp_path: Path) -> None:
    s = Store(tmp_path / "m.db", batch_size=3)
    good = [chunk_of(execution(n)) for n in range(1, 6)]
    bad = _malformed()["unknown status"]
    with pytest.raises(RecordError):
        s.ingest_many([*good, bad])  # batch 1 = 1..3 committed; batch 2 = 4, 5, bad rolled back
    assert sorted(ids(s.search(limit=10)[0])) == ["exec-1", "exec-2", "exec-3"]
    assert s.ingest_many(good) == 5  # re-sending the committed ones is harmless
    assert s.search()[1] == 5
    s.close()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"is_replay": True}, "execution.isReplay"),
        ({"source_exchange_id": "ex-1"}, "execution.sourceExchangeId"),
        ({"is_replay": True, "source_exchange_id": "ex-1"}, "execution.isReplay"),
    ],
)
def test_replay_fields_without_a_replay_id_are_refused(
    store: Store, fields: dict[str, Any], field: str
) -> None:
    """A chunk with no replayId is recorded traffic: one claiming to be a replay (or a replay's
    copy of another exchange) would be a replay no audit record vouches for, and would hide
    from a history searched with isReplay=false. Refused whole; nothing is stored."""
    x = execution(1, **fields)
    with pytest.raises(RecordError) as err:
        store.ingest(chunk_of(x))
    assert err.value.code == "BAD_CHUNK"
    assert err.value.details["field"] == field
    assert "replayId" in str(err.value)
    assert store.execution("exec-1") is None
    assert store.search()[1] == 0


def test_replay_execution_is_stored_and_found(store: Store) -> None:
    original = execution(1)
    replay = execution(
        2,
        exchange_id="ex-2",
        is_replay=True,
        replay_id="rpl-1",
        source_exchange_id="ex-1",
        environment="staging",
    )
    replay = replace(
        replay,
        processors=tuple(replace(p, replay_id="rpl-1") for p in replay.processors or ()),
    )
    store.ingest(chunk_of(original))
    store.ingest(chunk_of(replay))
    assert store.execution("exec-2") == replay
    assert ids(store.search(isReplay=True)[0]) == ["exec-2"]
    assert ids(store.search(replayId="rpl-1")[0]) == ["exec-2"]
    assert ids(store.search(sourceExchangeId="ex-1")[0]) == ["exec-2"]
    assert ids(store.search(is_replay=False)[0]) == ["exec-1"]


def test_chunk_replay_id_marks_the_execution_a_replay(store: Store) -> None:
    x = execution(1, procs=2)
    c = replace(chunk_of(x), replay_id="rpl-9")
    store.ingest(c)
    got = store.execution("exec-1")
    assert got is not None and got.is_replay and got.replay_id == "rpl-9"
    assert all(p.replay_id == "rpl-9" for p in got.processors or ())


def test_execution_by_exchange_prefers_the_original(store: Store) -> None:
    original = execution(1)
    # A replay execution may carry the same exchange id (an agent replaying in place).
    replay = execution(2, exchange_id="ex-1", is_replay=True, replay_id="r-1", source_exchange_id="ex-1")
    replay = replace(
        replay, processors=tuple(replace(p, exchange_id="ex-1") for p in replay.processors or ())
    )
    store.ingest(chunk_of(replay))
    store.ingest(chunk_of(original))
    assert store.execution_by_exchange("ex-1") == original
    got = store.execution_by_exchange("ex-1", replay=True)
    assert got is not None and got.execution_id == "exec-2"
    assert store.execution_by_exchange("ex-404") is None


def test_the_cache_of_recent_reads_answers_without_reading(store: Store) -> None:
    x = execution(1)
    store.ingest(chunk_of(x))
    assert store.execution_id_by_exchange("ex-1") == "exec-1"
    assert store.execution_id_by_exchange("ex-1", replay=True) is None
    assert store.cached_execution("exec-1") is None  # not read yet
    assert store.execution("exec-1") == x
    assert store.cached_execution("exec-1") == x
    late = replace(x, processors=(proc("exec-1", "ex-1", 9),))
    store.ingest(chunk_of(late, chunk_seq=1, final=False))  # another chunk of it...
    assert store.cached_execution("exec-1") is None  # ...forgets it
    assert len(store.execution("exec-1").processors or ()) == 4


def test_reopen_keeps_data_schema_version_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "data" / "moat.db"  # parent folders are created
    s = Store(path)
    x = execution(1)
    s.ingest(chunk_of(x))
    s.close()
    with pytest.raises(MoatError, match="closed"):
        s.search()
    with Store(path) as s2:
        assert s2.execution("exec-1") == x
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    conn.close()


def _in_database_file(path: Path) -> int:
    """Executions the database file itself holds, without its write-ahead log (``immutable=1``
    reads the main file only: sqlite.org/uri.html); -1 while a page being copied reads torn."""
    try:
        conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            return int(conn.execute("SELECT count(*) FROM executions").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return -1


def test_commits_are_copied_into_the_database_file_by_the_checkpointer_not_by_the_writer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "moat.db"
    store = Store(path, checkpoint_delay=0.01)
    try:
        # A writer copies the log itself only past the backstop (SQLite's own default is 1,000
        # pages, a commit in eight of a replaying sandbox).
        assert store.connection().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == (
            store_module.WAL_BACKSTOP_PAGES
        )
        for n in range(1, 4):  # a few pages: far below any automatic checkpoint
            store.ingest(chunk_of(execution(n)))
        deadline = time.monotonic() + 10
        while _in_database_file(path) != 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _in_database_file(path) == 3  # copied by the checkpointer, a moment after
        assert store.search()[1] == 3
        thread = store._checkpointer._thread
        assert thread is not None and thread.is_alive()
    finally:
        store.close()
    assert not thread.is_alive()  # stopped with the store (other tests' stores may have theirs)


def test_a_store_that_only_reads_starts_no_checkpointer(tmp_path: Path) -> None:
    with Store(tmp_path / "moat.db") as first:
        first.ingest(chunk_of(execution(1)))
    before = {t.ident for t in threading.enumerate() if t.name == "moat-store-checkpoint"}
    with Store(tmp_path / "moat.db") as again:
        assert again.execution("exec-1") is not None
        assert {t.ident for t in threading.enumerate() if t.name == "moat-store-checkpoint"} == before


def test_a_chunk_stored_before_the_marshal_digest_is_still_the_same_chunk(tmp_path: Path) -> None:
    # Found by review: history re-posted after an upgrade got 409 and the sandbox did not start.
    store = Store(tmp_path / "old-digest.db")
    chunk = chunk_of(execution(1))
    store.ingest(chunk)
    checked = store.check(chunk)
    head = (checked.execution_id, checked.exchange_id, checked.chunk_seq, checked.final, checked.replay_id)
    legacy = hashlib.sha256(
        repr((head, checked.summary, checked.detail, checked.processors)).encode()
    ).hexdigest()
    conn = sqlite3.connect(store.path)
    conn.execute("UPDATE chunks SET sha256 = ?", (legacy,))  # what the older version stored
    conn.commit()
    conn.close()
    store.ingest(chunk)  # a retry, not a conflict
    with pytest.raises(RecordError) as err:
        store.ingest(replace(chunk, execution=replace(chunk.execution, status="FAILED")))
    assert err.value.code == "CHUNK_CONFLICT"
    store.close()


def test_an_execution_takes_chunks_from_the_agent_that_records_it_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "owned.db")
    x = execution(1, procs=4)
    ps = x.processors or ()
    first = Chunk("exec-1", "ex-1", 0, final=False, processors=ps[0:2])
    rest = Chunk("exec-1", "ex-1", 1, final=True, execution=replace(x, processors=None), processors=ps[2:4])
    store.ingest(first, "agent-prod")
    for other in (rest, replace(rest, chunk_seq=99)):  # its last chunk, or one it never sent
        with pytest.raises(RecordError) as err:
            store.ingest(other, "agent-dev")
        assert err.value.code == "CHUNK_CONFLICT" and "agent-prod" in err.value.message
    store.ingest(rest, "agent-prod")
    assert store.execution("exec-1") == x
    # A file of schema 2 has no agent per chunk: the execution's own instanceId decides.
    conn = sqlite3.connect(store.path)
    conn.execute("UPDATE chunks SET instance_id = NULL")
    conn.commit()
    conn.close()
    with pytest.raises(RecordError):
        store.ingest(replace(rest, chunk_seq=7, processors=()), "agent-dev")
    store.ingest(replace(rest, chunk_seq=7, processors=()), x.instance_id)
    store.ingest(chunk_of(execution(2)))  # a caller that names no agent (tests, imports) is not checked
    store.close()


def test_a_deferred_text_index_is_waited_for_by_text_searches_only(each_store: Store) -> None:
    store = each_store
    x = execution(1, input_body='{"note": "zebra-crossing"}')
    checked = store.check(chunk_of(x))
    with store.transaction() as conn:
        job = store.write_checked(conn, checked, defer_index=True)
    store.forget(x.execution_id)
    assert job is not None
    # Stored and found by other filters at once; a text search waits until the index is in.
    assert ids(store.search(environment="dev")[0]) == ["exec-1"]
    found: list[list[str]] = []
    searching = threading.Thread(target=lambda: found.append(ids(store.search(text="zebra")[0])))
    searching.start()
    searching.join(0.3)
    assert searching.is_alive() and found == []
    store.index(job)
    searching.join(5)
    assert found == [["exec-1"]]


def _deferred(store: Store, x: Execution) -> Any:
    with store.transaction() as conn:
        job = store.write_checked(conn, store.check(chunk_of(x)), defer_index=True)
    store.forget(x.execution_id)
    assert job is not None
    return job


def test_a_text_search_waits_only_for_the_index_jobs_issued_before_it(store: Store) -> None:
    # Found by review: with replays coming every few ms, a search waited for every job written
    # after it began too, up to the holding back of the index jobs (hundreds of ms).
    first = _deferred(store, execution(1, input_body='{"note": "zebra-1"}'))
    wanted: list[int] = []
    store.index_wanted = lambda: wanted.append(1)
    found: list[list[str]] = []
    searching = threading.Thread(target=lambda: found.append(ids(store.search(text="zebra")[0])))
    searching.start()
    deadline = time.monotonic() + 5
    while not store.index_awaited and time.monotonic() < deadline:
        time.sleep(0.005)
    assert store.index_awaited and wanted == [1]  # the owner was asked to run its jobs now
    later = _deferred(store, execution(2, input_body='{"note": "zebra-2"}'))
    store.index(first)
    searching.join(2)  # (a search that waits for `later` too waits 10 s, then goes ahead)
    assert not searching.is_alive() and found == [["exec-1"]]  # did not wait for `later`
    assert not store.index_awaited
    store.index(later)
    assert sorted(ids(store.search(text="zebra")[0])) == ["exec-1", "exec-2"]


def test_a_failing_index_job_costs_only_its_own_row(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    # Found by review: the jobs of a batch ran in one transaction, and one failure lost them all.
    good = [_deferred(store, execution(n, input_body=f'{{"note": "zebra-{n}"}}')) for n in (1, 2)]

    def bad(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    store._index_pending += 1  # as write_checked counts a job
    store._index_open[bad] = 99
    store.index(good[0], bad, good[1])
    assert sorted(ids(store.search(text="zebra")[0])) == ["exec-1", "exec-2"]
    assert store._index_pending == 0 and not store._index_open
    assert "retried one by one" in caplog.text and "disk I/O error" in caplog.text


def test_a_failed_index_job_of_an_execution_in_two_chunks_is_redone_at_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: the final chunk came first, then chunk 0; the two jobs share the
    # execution's text_pending row, and the one that succeeded removed it for both.
    from moat_nb.sandbox.agent import chunks_of

    path = tmp_path / "moat.db"
    store = Store(path)
    x = execution(1, procs=4)
    procs = list(x.processors)
    procs[0] = replace(procs[0], input_body="alpha-zzword")  # in chunk 0
    procs[2] = replace(procs[2], input_body="beta-zzword")  # in the final chunk
    first, last = chunks_of(replace(x, processors=tuple(procs)), max_processors=2)
    jobs: list[Any] = []
    for chunk in (last, first):
        with store.transaction() as conn:
            jobs.append(store.write_checked(conn, store.check(chunk), defer_index=True))
        store.forget(chunk.execution_id)

    def failing(*args: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store_module, "_index_text_from_rows", failing)  # the second job's way
    store.index(*jobs)
    monkeypatch.undo()
    assert store._index_pending == 0
    assert ids(store.search(text="beta-zzword")[0]) == ["exec-1"]
    assert store.search(text="alpha-zzword") == ([], 0)
    store.close()
    with Store(path) as again:
        assert ids(again.search(text="alpha-zzword")[0]) == ["exec-1"]


def test_a_deferred_index_given_back_or_lost_is_made_at_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "moat.db"
    store = Store(path)
    x = execution(1, input_body='{"note": "zebra-crossing"}')
    # A write that rolls back gives its job back: searches do not wait for it.
    with pytest.raises(ZeroDivisionError):
        with store.transaction() as conn:
            job = store.write_checked(conn, store.check(chunk_of(x)), defer_index=True)
            assert job is not None
            store.drop_index(job)
            raise ZeroDivisionError
    assert store.search(text="zebra") == ([], 0)
    # A job that never ran (the process stopped after the commit): the next open indexes it.
    with store.transaction() as conn:
        job = store.write_checked(conn, store.check(chunk_of(x)), defer_index=True)
    assert job is not None
    store.drop_index(job)
    assert store.search(text="zebra") == ([], 0)  # stored, not indexed
    store.close()
    with Store(path) as again:
        assert ids(again.search(text="zebra")[0]) == ["exec-1"]
        assert ids(again.search(textInHeaders="OrderId")[0]) == ["exec-1"]


def test_a_version_1_file_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "moat.db"
    with Store(path) as s:
        s.ingest(chunk_of(execution(1)))
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE text_pending")  # what a file of schema version 1 lacks (v2)
    conn.execute("ALTER TABLE chunks DROP COLUMN instance_id")  # (v3)
    conn.execute("UPDATE schema_version SET version = 1")
    conn.commit()
    conn.close()
    with Store(path) as s:
        assert ids(s.search(text="A-1")[0]) == ["exec-1"]
        with s.transaction() as tx:
            assert s.write_checked(tx, s.check(chunk_of(execution(2))), defer_index=True) is not None
        assert s._index_pending == 1
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)] == [(4,)]
    assert conn.execute("SELECT id FROM text_pending").fetchall() == [(2,)]
    agents = conn.execute("SELECT instance_id FROM chunks ORDER BY execution_id").fetchall()
    assert agents == [(None,), (None,)]  # no agent named: the file's chunks, and a test's
    conn.close()
    with Store(path) as s:
        assert ids(s.search(text="A-1", sort="executionId:asc")[0]) == ["exec-1", "exec-2"]


def test_memory_database_is_refused() -> None:
    with pytest.raises(MoatError) as err:
        Store(":memory:")
    assert err.value.code == "STORE_PATH"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "moat.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(MoatError, match="newer"):
        Store(path)


def test_transaction_rolls_back_together(store: Store) -> None:
    with pytest.raises(ZeroDivisionError):
        with store.transaction() as conn:
            conn.execute("CREATE TABLE extra (x)")
            store.ingest(chunk_of(execution(1)))  # joins the open transaction
            raise ZeroDivisionError
    assert store.search() == ([], 0)


def test_threads_ingest_and_search_concurrently(tmp_path: Path) -> None:
    s = Store(tmp_path / "t.db")
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for n in range(k * 20, k * 20 + 20):
                s.ingest(chunk_of(execution(n, procs=2)))
                s.search(environment="dev", limit=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert s.search(limit=0)[1] == 80
    s.close()


# --------------------------------------------------------------------------- search

WORDS = ["apple", "banana", "cherry", "dragonfruit", "elderberry", "fig", "grape", "Kiwi"]


def dataset(n: int = 60, seed: int = 3) -> list[Execution]:
    """Executions varied in every filtered field, with ties in times and durations and NULLs."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        status = rng.choice(["COMPLETED"] * 4 + ["FAILED", "RUNNING"])
        is_replay = rng.random() < 0.2
        start = T0 + timedelta(minutes=rng.randrange(0, 40))  # ties on purpose
        duration = rng.choice([None, 1.0, 2.5, 2.5, 10.0, 99.75, rng.uniform(0, 100)])
        word, inner, hdr = rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS)
        x = execution(
            i,
            procs=rng.randrange(0, 4),
            environment=rng.choice(["dev", "staging", "prod", None]),
            application_id=rng.choice(["orders", "billing"]),
            route_id=rng.choice(["intake", "enrich", "pricing"]),
            status=status,
            correlation_id=rng.choice([f"corr-{i % 7}", None]),
            start_time=rng.choice([start, start, start, None]),
            end_time=start + timedelta(milliseconds=rng.randrange(1, 50)),
            duration_ms=duration,
            instance_id=rng.choice(["orders-dev-1", "orders-prod-1", None]),
            is_replay=is_replay,
            replay_id=f"rpl-{i % 5}" if is_replay else None,
            source_exchange_id=f"ex-{i % 9}" if is_replay else None,
            input_body=json.dumps({"fruit": word, "n": i}),
            output_body=rng.choice([None, f"done {word}"]),
            input_headers={"X-Fruit": hdr, "Quote": 'say "hi"'},
            error_type="java.lang.IllegalArgumentException" if status == "FAILED" else None,
            error_message=f"bad {rng.choice(WORDS)} line" if status == "FAILED" else None,
        )
        # A word that only a processor saw, in body, headers or error.
        procs = list(x.processors or ())
        if procs:
            where = rng.choice(["input_body", "output_headers", "error_message"])
            value = {"output_headers": {"Inner": inner}}.get(where, f"inner {inner}")
            procs[-1] = replace(procs[-1], **{where: value})
        out.append(replace(x, processors=tuple(procs)))
    return out


@pytest.fixture
def loaded(each_store: Store) -> tuple[Store, list[Execution]]:
    store = each_store
    xs = dataset()
    assert store.ingest_many(chunk_of(x) for x in xs) == len(xs)
    return store, xs


FILTERS: list[dict[str, Any]] = [
    {},
    {"environment": "prod"},
    {"environment": ["dev", "staging"]},
    {"application": "billing"},
    {"routeId": "pricing"},
    {"status": "FAILED"},
    {"status": ["FAILED", "RUNNING"]},
    {"timeFrom": T0 + timedelta(minutes=10)},
    {"timeTo": T0 + timedelta(minutes=10)},
    {"timeFrom": T0 + timedelta(minutes=5), "timeTo": T0 + timedelta(minutes=6)},
    {"correlationId": "corr-3"},
    {"exchangeId": "ex-17"},
    {"durationMin": 2.5},
    {"durationMax": 2.5},
    {"durationMin": 2.5, "durationMax": 10.0},
    {"isReplay": True},
    {"isReplay": False},
    {"replayId": "rpl-2"},
    {"sourceExchangeId": "ex-4"},
    {"text": "banana"},
    {"text": "KIWI"},  # case-insensitive
    {"text": "fig"},
    {"text": "ig"},  # under 3 characters: the scan path
    {"text": 'say "hi"'},  # quotes must not break the FTS query
    {"text": "inner grape"},  # only in a processor record
    {"text": "IllegalArgument"},
    {"textInBody": "cherry"},
    {"textInHeaders": "cherry"},
    {"textInErrors": "cherry"},
    {"text": "no-such-word-anywhere"},
    {"environment": "dev", "status": "COMPLETED", "text": "apple", "durationMin": 1.0},
]


@pytest.mark.parametrize("filters", FILTERS, ids=[json.dumps(f, default=str) for f in FILTERS])
def test_each_filter_matches_the_reference(
    loaded: tuple[Store, list[Execution]], filters: dict[str, Any]
) -> None:
    store, xs = loaded
    want, want_total = reference_search(xs, limit=1000, **filters)
    hits, total = store.search(limit=1000, **filters)
    assert (ids(hits), total) == (want, want_total)
    assert all(h.processors is None and h.input_body is None for h in hits)  # summaries
    by_id = {x.execution_id: x for x in xs}
    assert all(h == by_id[h.execution_id].summary() for h in hits)


def test_filters_in_wire_form_and_snake_case(loaded: tuple[Store, list[Execution]]) -> None:
    store, xs = loaded
    wire = {
        "timeFrom": format_time(T0 + timedelta(minutes=3)),
        "timeTo": "2026-03-01T13:30:00+01:00",  # any offset
        "durationMin": "1",
        "isReplay": "false",
        "limit": "1000",
        "environment": None,  # null = no filter
    }
    want = reference_search(
        xs,
        timeFrom=T0 + timedelta(minutes=3),
        timeTo=T0 + timedelta(minutes=30),
        durationMin=1,
        isReplay=False,
        limit=1000,
    )
    got = store.search(**wire)
    assert (ids(got[0]), got[1]) == want
    snake = store.search(
        time_from=T0 + timedelta(minutes=3), route_id="intake", application_id="orders", limit=1000
    )
    camel = store.search(
        timeFrom=T0 + timedelta(minutes=3), routeId="intake", applicationId="orders", limit=1000
    )
    assert snake == camel and snake[1] > 0


@pytest.mark.parametrize("field", sorted(SORT_FIELDS))
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_sort(loaded: tuple[Store, list[Execution]], field: str, direction: str) -> None:
    store, xs = loaded
    sort = f"{field}:{direction}"
    assert ids(store.search(sort=sort, limit=1000)[0]) == reference_search(xs, sort=sort, limit=1000)[0]


def test_default_sort_is_newest_first_and_direction_defaults_to_asc(
    loaded: tuple[Store, list[Execution]],
) -> None:
    store, xs = loaded
    hits, _ = store.search(limit=1000)
    times = [h.start_time for h in hits if h.start_time is not None]
    assert times == sorted(times, reverse=True)
    assert ids(hits) == reference_search(xs, sort="startTime:desc", limit=1000)[0]
    assert store.search(sort="durationMs", limit=1000) == store.search(sort="duration_ms:ASC", limit=1000)


def test_paging(loaded: tuple[Store, list[Execution]]) -> None:
    store, xs = loaded
    everything, total = store.search(limit=1000, environment=["dev", "prod"])
    pages, offset = [], 0
    while True:
        page, t = store.search(offset=offset, limit=7, environment=["dev", "prod"])
        assert t == total  # the total does not depend on the page
        if not page:
            break
        assert len(page) <= 7
        pages.extend(page)
        offset += 7
    assert pages == everything and len(pages) == total
    assert store.search(offset=len(xs) + 5) == ([], len(xs))
    assert store.search(limit=0) == ([], len(xs))
    assert len(store.search()[0]) == 50  # default limit


@pytest.mark.parametrize(
    "filters",
    [
        {"limit": MAX_LIMIT + 1},
        {"limit": -1},
        {"limit": "many"},
        {"offset": -3},
        {"status": "DONE"},
        {"status": []},
        {"environment": 3},
        {"timeFrom": "last tuesday"},
        {"timeTo": datetime(2026, 1, 1)},  # naive
        {"durationMin": "fast"},
        {"isReplay": "maybe"},
        {"text": 5},
        {"text": "abc\x00def"},  # FTS5 read the NUL as the query's end: a 500 (Schemathesis)
        {"textInBody": "a\x00"},
        {"text": "ab\udb0ecd"},  # a lone surrogate could not be bound: a 500 (Schemathesis)
        {"sort": "color:desc"},
        {"sort": "startTime:sideways"},
        {"envirnoment": "prod"},  # a typo is an error, not an ignored filter
        {"application": "orders", "applicationId": "orders"},
    ],
    ids=str,
)
def test_bad_filters_are_validation_errors(store: Store, filters: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as err:
        store.search(**filters)
    assert err.value.status == 400


def test_limit_1000_is_allowed(loaded: tuple[Store, list[Execution]]) -> None:
    store, xs = loaded
    assert len(store.search(limit=MAX_LIMIT)[0]) == len(xs)


def test_stats_counts_by_environment_route_status(loaded: tuple[Store, list[Execution]]) -> None:
    store, xs = loaded
    counts: dict[tuple[Any, ...], int] = {}
    for x in xs:
        k = (x.environment, x.route_id, x.status)
        counts[k] = counts.get(k, 0) + 1
    got = {(r["environment"], r["route_id"], r["status"]): r["count"] for r in store.stats()}
    assert got == counts


# --------------------------------------------------------------------------- hypothesis round trip

_ids = st.from_regex(r"\A[A-Za-z0-9._:-]{1,24}\Z")
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)  # UTF-8 encodable
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_maps = st.none() | st.dictionaries(_text, _json, max_size=4)
_times = st.none() | st.datetimes(
    min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
_durations = st.none() | st.floats(-1e9, 1e12, allow_nan=False) | st.integers(0, 10**6)
_opt_text = st.none() | _text


@st.composite
def _processors(draw: st.DrawFn, execution_id: str, exchange_id: str) -> tuple[ProcessorRecord, ...]:
    seqs = draw(st.lists(st.integers(0, 10**6), unique=True, max_size=5))
    return tuple(
        ProcessorRecord(
            execution_id=execution_id,
            exchange_id=exchange_id,
            seq=s,
            processor_id=draw(_text.filter(bool)),
            processor_type=draw(_text.filter(bool)),
            route_id=draw(_text.filter(bool)),
            status=draw(st.sampled_from(["COMPLETED", "FAILED"])),
            start_time=draw(_times),
            end_time=draw(_times),
            duration_ms=draw(_durations),
            parent_seq=draw(st.none() | st.integers(-5, 10**6)),
            iteration=draw(st.integers(0, 1000)),
            depth=draw(st.integers(0, 64)),
            endpoint_uri=draw(_opt_text),
            stubbed=draw(st.booleans()),
            error_type=draw(_opt_text),
            error_message=draw(_opt_text),
            input_body=draw(_opt_text),
            output_body=draw(_opt_text),
            input_headers=draw(_maps),
            output_headers=draw(_maps),
            input_properties=draw(_maps),
            properties=draw(_maps),
            body_truncated=draw(st.booleans()),
        )
        for s in sorted(seqs)
    )


@st.composite
def executions(draw: st.DrawFn) -> Execution:
    execution_id, exchange_id = draw(_ids), draw(_ids)
    replay_id = draw(st.none() | _ids)
    procs = draw(_processors(execution_id, exchange_id))
    return Execution(
        execution_id=execution_id,
        exchange_id=exchange_id,
        route_id=draw(_text.filter(bool)),
        status=draw(st.sampled_from(["COMPLETED", "FAILED", "RUNNING"])),
        correlation_id=draw(_opt_text),
        route_version=draw(_opt_text),
        application_id=draw(_opt_text),
        instance_id=draw(_opt_text),
        environment=draw(_opt_text),
        start_time=draw(_times),
        end_time=draw(_times),
        duration_ms=draw(_durations),
        error_type=draw(_opt_text),
        error_message=draw(_opt_text),
        processor_count=draw(st.integers(0, 10**6)),
        capture_mode=draw(st.sampled_from(["PROCESSOR", "ROUTE"])),
        # A replay's fields come with its replayId (section 3; refused without one).
        is_replay=replay_id is not None,
        replay_id=replay_id,
        source_exchange_id=draw(st.none() | _ids) if replay_id is not None else None,
        input_body=draw(_opt_text),
        output_body=draw(_opt_text),
        input_headers=draw(_maps),
        output_headers=draw(_maps),
        input_properties=draw(_maps),
        output_properties=draw(_maps),
        error_stack_trace=draw(_opt_text),
        processors=tuple(replace(p, replay_id=replay_id) for p in procs),
    )


_example = itertools.count()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=executions(), as_wire=st.booleans())
def test_hypothesis_round_trip(store: Store, x: Execution, as_wire: bool) -> None:
    # One store for all examples: make the ids unique per example (a counter, since Hypothesis
    # reseeds `random`).
    n = next(_example)
    ex_id, xc_id = f"{n}-{x.execution_id}", f"{n}-{x.exchange_id}"
    x = replace(
        x,
        execution_id=ex_id,
        exchange_id=xc_id,
        processors=tuple(replace(p, execution_id=ex_id, exchange_id=xc_id) for p in x.processors or ()),
    )
    before = store.search(limit=0)[1]
    c = chunk_of(x)
    store.ingest(c.to_wire() if as_wire else c)
    assert store.execution(x.execution_id) == x
    hits, total = store.search(exchangeId=x.exchange_id)
    assert (hits, total) == ([x.summary()], 1)
    store.ingest(c)  # idempotent
    assert store.search(limit=0)[1] == before + 1


_ascii = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_ascii, data=st.data())
def test_text_search_is_a_substring_match(each_store: Store, body: str, data: st.DataObject) -> None:
    # FTS5 query syntax (quotes, *, AND/OR/NEAR, parentheses) must not leak into the meaning.
    i, j = sorted(data.draw(st.tuples(st.integers(0, len(body)), st.integers(0, len(body)))))
    specials = st.sampled_from(['"', '""x', "a*", "AND", "x OR y", "(a)", "^b", "NEAR"])
    term = data.draw(st.just(body[i:j]) | st.just(body[i:j].swapcase()) | _ascii | specials)
    n = next(_example)
    x = execution(n, procs=1, input_body=body, output_body=None, input_headers=None, output_headers=None)
    x = replace(
        x, processors=tuple(replace(p, input_body=None, output_body=None) for p in x.processors or ())
    )
    each_store.ingest(chunk_of(x))
    hits, _ = each_store.search(textInBody=term, exchangeId=x.exchange_id)
    assert bool(hits) == (term == "" or term.lower() in body.lower())


_json_leaves = (
    st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet="0123456789-ab", max_size=30)
    | st.booleans()
    | st.none()
)


@given(
    st.dictionaries(
        st.text(max_size=5),
        st.recursive(_json_leaves, lambda c: st.lists(c, max_size=3), max_leaves=6),
        max_size=5,
    )
)
def test_json_columns_read_back_exactly_what_was_written(value: dict[str, Any]) -> None:
    # orjson reads an integer beyond 64 bits as a float: such texts are read by the stdlib.
    back = store_module._unjson(store_module._json(value))
    assert back == value
    assert json.dumps(back) == json.dumps(value)  # same types: 2**64 stays an int, -0.0 stays -0.0
