"""The client (moat_nb/client.py, moat_nb/history.py) against a real sandbox on loopback:
search filters, paging, frames, export, replay sources and bodies, errors, token renewal."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from moat_nb import frames
from moat_nb.client import (
    AsyncPlatform,
    AuditBundle,
    Platform,
    Session,
    connect,
    op_pages,
    op_replay,
    serialise_body,
)
from moat_nb.errors import (
    AgentUnavailable,
    AuthenticationError,
    ControlHeaderRejected,
    IdempotencyConflict,
    MoatError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    TierNotEntitled,
    TransportError,
    ValidationError,
)
from moat_nb.history import parse_duration, search_filters
from moat_nb.model import Execution

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

# --------------------------------------------------------------------------- pure parts


def test_search_filters_map_to_section_4_names_with_conveniences() -> None:
    body = search_filters(
        {
            "route_id": "r",
            "status": ["failed", "RUNNING"],
            "since": "24h",
            "until": timedelta(hours=1),
            "duration_min": timedelta(milliseconds=5),
            "is_replay": False,
            "sort": "duration_ms:desc",
            "application_id": "orders",
            "environment": None,
        },
        NOW,
    )
    assert body == {
        "routeId": "r",
        "status": ["FAILED", "RUNNING"],
        "timeFrom": "2026-11-25T12:00:00.000Z",
        "timeTo": "2026-11-26T11:00:00.000Z",
        "durationMin": 5.0,
        "isReplay": False,
        "sort": "durationMs:desc",
        "application": "orders",
    }
    assert search_filters({"time_from": datetime(2026, 1, 1, 1, tzinfo=UTC), "status": "completed"}, NOW) == {
        "timeFrom": "2026-01-01T01:00:00.000Z",
        "status": "COMPLETED",
    }
    assert parse_duration("250ms") == timedelta(milliseconds=250) and parse_duration("2w") == timedelta(
        days=14
    )


def test_a_date_as_text_is_the_day_a_date_object_is() -> None:
    # since="2026-11-20" was refused ("has no offset") while since=date(2026, 11, 20) was taken.
    as_object = search_filters({"since": date(2026, 11, 20), "until": date(2026, 11, 21)}, NOW)
    as_text = search_filters({"since": "2026-11-20", "until": " 2026-11-21 "}, NOW)
    assert (
        as_text == as_object == {"timeFrom": "2026-11-20T00:00:00.000Z", "timeTo": "2026-11-21T00:00:00.000Z"}
    )
    # A time of day without an offset stays refused, as a naive datetime is: local or UTC?
    with pytest.raises(ValidationError, match="has no offset"):
        search_filters({"since": "2026-11-20T10:00:00"}, NOW)
    with pytest.raises(ValidationError, match="not a date") as caught:
        search_filters({"since": "2026-13-45"}, NOW)
    assert caught.value.code == "BAD_TIME"


@pytest.mark.parametrize(
    ("filters", "words"),
    [
        ({"colour": "red"}, "no filter 'colour'"),
        ({"status": "DONE"}, "not an execution status"),
        ({"since": "yesterday-ish"}, "RFC 3339"),
        ({"since": datetime(2026, 1, 1)}, "no time zone"),
        ({"since": "1h", "time_from": "2026-01-01T00:00:00Z"}, "both given"),
        ({"duration_max": "fast"}, "not a duration"),
    ],
)
def test_bad_filters_are_refused_before_any_request(filters: dict, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        search_filters(filters, NOW)


@pytest.mark.parametrize(
    ("filters", "code", "words"),
    [
        # JSON has no NaN: httpx refused the body with a bare ValueError (fuzzing finding).
        ({"duration_min": float("nan")}, "BAD_DURATION", "duration_min=nan is not a number"),
        ({"duration_max": float("inf")}, "BAD_DURATION", "duration_max=inf is not a number"),
        # Before year 1: datetime raised a bare OverflowError, also through audit(since=).
        ({"since": "99999999w"}, "BAD_TIME", "since='99999999w' reaches outside the years"),
        ({"until": timedelta(days=999999999)}, "BAD_TIME", "reaches outside the years"),
        ({"time_from": timedelta(days=-999999999)}, "BAD_TIME", "reaches outside the years"),
        ({"since": "9999999999w"}, "BAD_DURATION", "longer than a duration can be"),
        ({"duration_min": "9999999999w"}, "BAD_DURATION", "longer than a duration can be"),
        ({"exchange_id": []}, "VALIDATION", "give a string or a list of strings"),
    ],
)
def test_filters_out_of_range_are_refused_with_a_code_and_a_hint(
    filters: dict, code: str, words: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(words)) as caught:
        search_filters(filters, NOW)
    assert caught.value.code == code and caught.value.hint


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda p: p.executions(limit="5"), "limit='5' is not a whole number"),
        (lambda p: p.executions(limit=2.5), "limit=2.5 is not a whole number"),
        (lambda p: p.executions(limit=True), "limit=True is not a whole number"),
        (lambda p: p.executions(page_size="100"), "page_size='100' is not a whole number"),
        (lambda p: p.executions(max_rows="10"), "max_rows='10' is not a whole number"),
        (lambda p: p.executions(environment=5), "environment=5: give a string or a list of strings, not int"),
        (lambda p: p.executions(status={"COMPLETED": 1}), "give a string or a list of strings, not dict"),
        (lambda p: p.audit(limit="3"), "limit='3' is not a whole number"),
        (lambda p: p.audit(limit=-1), "none may be negative"),
        (lambda p: p.executions(limit=-1), "limit=-1 is negative"),
        (lambda p: p.executions(exchange_id=[]), "exchange_id=[]: give a string or a list of strings"),
    ],
)
def test_wrong_typed_counts_and_filters_are_refused_in_words_before_any_request(
    call: Callable[[Platform], Any], words: str
) -> None:
    # A string limit is what a papermill -r parameter or a text field gives; it failed in a
    # comparison with a raw TypeError (review finding).
    platform = Platform("http://127.0.0.1:9", token="t")  # nothing listens: nothing may be sent
    try:
        with pytest.raises(ValidationError, match=re.escape(words)) as caught:
            call(platform)
        assert caught.value.code == "VALIDATION" and caught.value.hint
    finally:
        platform.close()


def test_counts_may_be_numpy_integers(op_platform: Platform) -> None:
    import numpy as np

    assert len(op_platform.executions(limit=np.int64(3), page_size=np.int32(2)).to_pandas()) == 3


def test_dict_bodies_are_written_as_the_original_content() -> None:
    order = {"orderId": "ORD-1", "qty": 2, "note": "ü"}
    assert (
        json.loads(serialise_body(order, {"Content-Type": "application/json; charset=utf-8"}, None) or "")
        == order
    )
    assert serialise_body(order, {"content-type": "application/vnd.acme+json"}, None) == json.dumps(
        order, ensure_ascii=False
    )
    assert serialise_body([1, 2], None, '{"a": 1}') == "[1, 2]"  # no Content-Type: the original is JSON
    assert (
        serialise_body({"a": "b c"}, {"Content-Type": "application/x-www-form-urlencoded"}, None) == "a=b+c"
    )
    assert serialise_body("as is", {"Content-Type": "application/xml"}, "<a/>") == "as is"
    assert serialise_body("ü".encode(), None, None) == "ü"
    with pytest.raises(ValidationError, match="content type application/xml"):
        serialise_body(order, {"Content-Type": "application/xml"}, "<order/>")
    with pytest.raises(ValidationError, match=r"\(none\)"):
        serialise_body(order, None, "plain text")


def test_bodies_from_a_frame_are_json_or_refused_in_words() -> None:
    """Values taken out of a pandas frame are numpy scalars, and its missing values NaN."""
    import numpy as np

    row = {"qty": np.int64(3), "price": np.float64(2.5), "ok": np.bool_(True), "note": "x"}
    text = serialise_body(row, {"Content-Type": "application/json"}, None) or ""
    assert json.loads(text) == {"qty": 3, "price": 2.5, "ok": True, "note": "x"}
    for bad in (float("nan"), np.float64("nan"), float("inf")):
        with pytest.raises(ValidationError, match="NaN or an infinity") as info:
            serialise_body({"note": bad}, {"Content-Type": "application/json"}, None)
        assert info.value.code == "BAD_BODY" and "None" in (info.value.hint or "")
    with pytest.raises(ValidationError, match="JSON cannot carry") as info:
        serialise_body({"at": datetime(2026, 1, 1)}, {"Content-Type": "application/json"}, None)
    assert info.value.code == "BAD_BODY"
    # An array (a frame column's .values) was refused as "NaN or an infinity" (fuzzing finding).
    with pytest.raises(ValidationError, match="numpy.ndarray is not JSON data") as info:
        serialise_body({"qty": np.array([1, 2])}, {"Content-Type": "application/json"}, None)
    assert info.value.code == "BAD_BODY" and "NaN" not in str(info.value)
    assert "tolist()" in (info.value.hint or "")
    assert serialise_body({"qty": np.array(3)}, {"Content-Type": "application/json"}, None) == '{"qty": 3}'


# --------------------------------------------------------------------------- helpers


def recording(platform: Platform) -> list[httpx.Request]:
    """The requests ``platform`` sends from now on (httpx event hook: observation only)."""
    seen: list[httpx.Request] = []
    platform._client.event_hooks["request"].append(seen.append)
    return seen


def searches(seen: list[httpx.Request]) -> list[dict]:
    return [json.loads(r.content) for r in seen if r.url.path.endswith("/search/executions")]


@pytest.fixture
def fresh(client_sandbox: Any) -> Any:
    """A Platform of its own (requests can be recorded without touching the shared one)."""
    platform = connect(client_sandbox.url, username="operator", password="operator")
    yield platform
    platform.close()


@pytest.fixture(scope="module")
def everything(op_platform: Platform) -> pd.DataFrame:
    """The recorded history (no replays), as the client frames it."""
    return op_platform.executions(is_replay=False, max_rows=None).to_pandas()


def ids(df: pd.DataFrame) -> set[str]:
    return set(df.execution_id)


# --------------------------------------------------------------------------- search


def test_the_history_is_there_with_the_pinned_schema(everything: pd.DataFrame, op_platform: Platform) -> None:
    assert len(everything) == 120 and everything.execution_id.is_unique
    assert dict(everything.dtypes) == frames.pandas_dtypes(frames.EXECUTION_SCHEMA)
    polars = op_platform.executions(is_replay=False).to_polars()
    assert polars.schema == pl.Schema(frames.polars_schema(frames.EXECUTION_SCHEMA))
    assert polars["execution_id"].to_list() == everything.execution_id.tolist()
    assert str(everything.start_time.dt.tz) == "UTC" and everything.processor_count.dtype == "Int64"
    assert set(everything.environment) == {"dev", "staging", "prod"}
    # The default order is the server's: newest first.
    assert everything.start_time.is_monotonic_decreasing


def filter_cases(everything: pd.DataFrame) -> list[tuple[dict[str, Any], pd.Series]]:
    e = everything
    row = e.iloc[17]
    mid = e.start_time.sort_values().iloc[60].to_pydatetime()
    mid_duration = float(e.duration_ms.median())
    return [
        ({"environment": "dev"}, e.environment == "dev"),
        ({"environment": ["dev", "prod"]}, e.environment.isin(["dev", "prod"])),
        ({"application": "orders"}, e.application_id == "orders"),
        ({"route_id": row.route_id}, e.route_id == row.route_id),
        ({"status": "failed"}, e.status == "FAILED"),
        ({"status": ["FAILED", "COMPLETED"]}, e.status.isin(["FAILED", "COMPLETED"])),
        ({"time_from": mid}, e.start_time >= mid),
        ({"time_to": mid}, e.start_time < mid),
        (
            {"since": mid, "until": mid + timedelta(hours=6)},
            (e.start_time >= mid) & (e.start_time < mid + timedelta(hours=6)),
        ),
        ({"correlation_id": row.correlation_id}, e.correlation_id == row.correlation_id),
        ({"exchange_id": row.exchange_id}, e.exchange_id == row.exchange_id),
        ({"duration_min": mid_duration}, e.duration_ms >= mid_duration),
        ({"duration_max": timedelta(milliseconds=mid_duration)}, e.duration_ms <= mid_duration),
        (
            {"status": "FAILED", "environment": "staging"},
            (e.status == "FAILED") & (e.environment == "staging"),
        ),
    ]


def test_each_filter_selects_what_it_says(op_platform: Platform, everything: pd.DataFrame) -> None:
    for filters, mask in filter_cases(everything):
        got = op_platform.executions(is_replay=False, **filters).to_pandas()
        assert ids(got) == ids(everything[mask]), filters
        assert len(got) > 0, filters
    assert len(op_platform.executions(route_id="no-such-route").to_pandas()) == 0


def test_filter_values_read_from_a_frame_are_taken_as_the_values_they_hold(
    op_platform: Platform, everything: pd.DataFrame
) -> None:
    import numpy as np

    # A frame's cells are numpy scalars: is_replay=row["is_replay"] failed in the request with
    # "TypeError: Object of type bool is not JSON serializable", and an Int64 cell as a
    # duration in milliseconds was "not a duration".
    row = everything.iloc[0]
    assert isinstance(row["is_replay"], np.bool_)
    got = op_platform.executions(is_replay=row["is_replay"], duration_min=np.int64(0)).to_pandas()
    assert ids(got) == ids(everything)
    # pandas' missing value is refused in words, not by the JSON encoder.
    with pytest.raises(ValidationError, match="is_replay=<NA> is not True or False") as caught:
        op_platform.executions(is_replay=pd.NA).to_pandas()
    assert caught.value.code == "VALIDATION" and caught.value.hint
    # A timedelta64 in nanoseconds is not its count of nanoseconds read as milliseconds.
    with pytest.raises(ValidationError, match="is not a duration") as caught:
        op_platform.executions(duration_min=np.timedelta64(5_000_000, "ns"))
    assert caught.value.code == "BAD_DURATION"


def test_text_offset_and_sort(op_platform: Platform, everything: pd.DataFrame) -> None:
    one = op_platform.execution(everything.execution_id.iloc[3])
    order_id = json.loads(one.input_body or "{}")["orderId"]
    hits = op_platform.executions(text=order_id, is_replay=False).to_pandas()
    assert one.execution_id in ids(hits)
    for hit in hits.execution_id:
        detail = op_platform.execution(hit)
        assert order_id in json.dumps(detail.to_wire())
    page = op_platform.executions(is_replay=False, offset=5, limit=3).to_pandas()
    assert page.execution_id.tolist() == everything.execution_id.iloc[5:8].tolist()
    by_duration = op_platform.executions(is_replay=False, sort="duration_ms:desc", limit=20).to_pandas()
    assert by_duration.duration_ms.tolist() == sorted(everything.duration_ms, reverse=True)[:20]


def test_replay_filters(op_platform: Platform, everything: pd.DataFrame) -> None:
    source = everything[everything.environment == "dev"].iloc[0]
    run = op_platform.replay(source, reason="client test: replay filters")
    replayed = run.wait()
    by_replay = op_platform.executions(replay_id=run.replay_id).to_pandas()
    assert by_replay.execution_id.tolist() == [replayed.execution_id]
    assert bool(by_replay.is_replay.iloc[0]) and by_replay.source_exchange_id.iloc[0] == source.exchange_id
    family = op_platform.executions(source_exchange_id=source.exchange_id).to_pandas()
    assert replayed.execution_id in ids(family) and family.is_replay.all()
    recent = op_platform.executions(since="1h", is_replay=True).to_pandas()
    assert replayed.execution_id in ids(recent)
    assert not (ids(recent) & ids(everything))  # the recorded history is older than an hour


# --------------------------------------------------------------------------- paging


def test_paging_asks_for_no_more_than_the_limit(fresh: Platform, everything: pd.DataFrame) -> None:
    seen = recording(fresh)
    history = fresh.executions(is_replay=False, limit=30, page_size=7)
    assert seen == []  # lazy: nothing until used
    got = history.to_pandas()
    assert got.execution_id.tolist() == everything.execution_id.iloc[:30].tolist()
    assert [(b["offset"], b["limit"]) for b in searches(seen)] == [(0, 7), (7, 7), (14, 7), (21, 7), (28, 2)]


def test_iteration_is_lazy_and_pages_through_everything(fresh: Platform, everything: pd.DataFrame) -> None:
    seen = recording(fresh)
    iterator = iter(fresh.executions(is_replay=False, page_size=50))
    first = next(iterator)
    assert isinstance(first, Execution) and first.execution_id == everything.execution_id.iloc[0]
    assert len(searches(seen)) == 1
    rest = list(iterator)
    assert [first.execution_id, *(x.execution_id for x in rest)] == everything.execution_id.tolist()
    assert len(searches(seen)) == math.ceil(120 / 50)


def test_len_max_rows_and_empty_results(fresh: Platform) -> None:
    history = fresh.executions(is_replay=False, environment="dev")
    assert len(history) == 40
    assert len(fresh.executions(is_replay=False, environment="dev", limit=7)) == 7
    with pytest.raises(ValidationError, match="more than max_rows=10") as info:
        fresh.executions(is_replay=False, max_rows=10).to_pandas()
    assert info.value.code == "TOO_MANY_ROWS" and "export" in (info.value.hint or "")
    assert len(fresh.executions(is_replay=False, max_rows=10, limit=10).to_pandas()) == 10
    empty = fresh.executions(correlation_id="no-such-correlation")
    assert list(empty) == [] and len(empty) == 0
    assert dict(empty.to_pandas().dtypes) == frames.pandas_dtypes(frames.EXECUTION_SCHEMA)
    assert empty.to_polars().schema == pl.Schema(frames.polars_schema(frames.EXECUTION_SCHEMA))
    assert len(empty.to_pandas()) == 0


def test_the_async_history_gives_the_same_rows(client_sandbox: Any, op_platform: Platform) -> None:
    expected = op_platform.executions(environment="staging", is_replay=False, limit=12).to_polars()

    async def main() -> tuple[Any, list[Execution], int]:
        async with AsyncPlatform(client_sandbox.url, username="analyst", password="analyst") as ap:
            history = ap.executions(environment="staging", is_replay=False, limit=12, page_size=5)
            return await history.to_polars(), [x async for x in history], await history.count()

    frame, rows, count = asyncio.run(main())
    assert frame.equals(expected) and [x.execution_id for x in rows] == expected["execution_id"].to_list()
    assert count == 12


# --------------------------------------------------------------------------- detail, export


def test_an_execution_with_its_processor_frame(op_platform: Platform, everything: pd.DataFrame) -> None:
    hit = everything[(everything.environment == "dev") & (everything.status == "COMPLETED")].iloc[0]
    execution = op_platform.execution(hit.execution_id)
    assert execution.processors and len(execution.processors) == hit.processor_count
    df = op_platform.processors(hit.execution_id)
    assert dict(df.dtypes) == frames.pandas_dtypes(frames.PROCESSOR_SCHEMA)
    assert df.seq.tolist() == [p.seq for p in execution.processors]
    assert (df.offset_ms >= 0).all() and df.offset_ms.iloc[0] == pytest.approx(
        (execution.processors[0].start_time - execution.start_time).total_seconds() * 1000  # type: ignore[operator]
    )
    assert df.body_changed.notna().all() and df.body_changed.any()
    # A ROUTE-captured execution (prod) keeps no payload inside the route: flags are unknown.
    prod = everything[everything.environment == "prod"].iloc[0]
    route = op_platform.processors(prod.execution_id, backend="polars")
    assert route["body_changed"].null_count() > 0


def test_processors_take_a_frame_row_as_replay_does(
    client_sandbox: Any, op_platform: Platform, everything: pd.DataFrame
) -> None:
    row = everything[everything.environment == "dev"].iloc[0]  # a pandas Series
    expected = op_platform.processors(row.execution_id)
    assert op_platform.processors(row).equals(expected)
    assert op_platform.processors(row.to_dict()).equals(expected)

    async def from_async() -> pd.DataFrame:
        async with AsyncPlatform(client_sandbox.url, username="operator", password="operator") as ap:
            return await ap.processors(row)

    assert asyncio.run(from_async()).equals(expected)
    with pytest.raises(ValidationError, match="processors of a int") as caught:
        op_platform.processors(5)  # type: ignore[arg-type]
    assert caught.value.code == "BAD_SOURCE" and "row of an executions frame" in (caught.value.hint or "")


def test_export_writes_parquet_page_by_page_and_scans_lazily(op_platform: Platform, tmp_path: Path) -> None:
    path = op_platform.export(
        {"environment": "dev", "is_replay": False}, tmp_path / "dev.parquet", page_size=7
    )
    assert pq.ParquetFile(path).metadata.num_row_groups == math.ceil(40 / 7)  # one per page
    expected = op_platform.executions(environment="dev", is_replay=False).to_polars()
    assert pl.read_parquet(path).equals(expected)
    failed = pl.scan_parquet(path).filter(pl.col("status") == "FAILED").select("execution_id", "start_time")
    assert failed.collect().equals(
        expected.filter(pl.col("status") == "FAILED").select("execution_id", "start_time")
    )
    assert pd.read_parquet(path, dtype_backend="pyarrow").shape == (40, 19)
    with pytest.raises(ValidationError, match="limit as a keyword") as info:
        op_platform.export({"environment": "dev", "limit": 3}, tmp_path / "x.parquet")
    assert info.value.code == "BAD_FILTER"
    # A path that cannot be written is refused before a page is read, naming it, not the
    # temporary file beside it (a missing folder was a pyarrow FileNotFoundError on that name).
    for bad in (tmp_path / "missing" / "x.parquet", tmp_path):
        with pytest.raises(ValidationError, match=re.escape(repr(str(bad)))) as info:
            op_platform.export({"environment": "dev"}, bad)
        assert info.value.code == "BAD_OUT" and ".part" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.parquet"]


def test_export_to_a_path_in_the_home_folder(
    op_platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "~/history.parquet" (as pandas' and polars' writers take it) was refused: "it is in '~',
    # which is not a folder".
    monkeypatch.setenv("HOME", str(tmp_path))
    path = op_platform.export({"environment": "dev"}, "~/history.parquet", limit=3)
    assert path == tmp_path / "history.parquet" and pl.read_parquet(path).height == 3


def test_an_audit_bundle_saved_to_and_read_from_the_home_folder(home_elsewhere: tuple[Path, Path]) -> None:
    # AuditBundle.save("~/bundle.json") wrote into a folder named "~" in the working directory
    # (or failed with FileNotFoundError without one), unlike export() and results=.
    from moat_nb.audit import load_bundle

    home, elsewhere = home_elsewhere
    (elsewhere / "~").mkdir()  # so that the old behaviour writes instead of failing
    bundle = AuditBundle({"events": [], "checkpoints": [], "publicKeys": []})
    assert bundle.save("~/bundle.json") == home / "bundle.json"
    assert load_bundle("~/bundle.json") == bundle.data
    assert list((elsewhere / "~").iterdir()) == []


def test_async_export_writes_the_same_file(
    client_sandbox: Any, op_platform: Platform, tmp_path: Path
) -> None:
    async def main() -> Path:
        async with AsyncPlatform(client_sandbox.url, username="operator", password="operator") as p:
            return await p.export(
                {"environment": "dev", "is_replay": False}, tmp_path / "a.parquet", page_size=7
            )

    path = asyncio.run(main())
    assert pq.ParquetFile(path).metadata.num_row_groups == math.ceil(40 / 7)
    assert pl.read_parquet(path).equals(
        op_platform.executions(environment="dev", is_replay=False).to_polars()
    )


# --------------------------------------------------------------------------- replay


def test_replay_takes_an_id_an_execution_or_a_frame_row(
    op_platform: Platform, everything: pd.DataFrame
) -> None:
    dev = everything[everything.environment == "dev"]
    polars_row = pl.from_pandas(dev.iloc[[2]]).row(0, named=True)
    sources = [
        dev.exchange_id.iloc[0],
        op_platform.execution(dev.execution_id.iloc[1]),
        polars_row,
        dev.iloc[3],
    ]
    expected = [dev.exchange_id.iloc[i] for i in range(4)]
    for source, exchange in zip(sources, expected, strict=True):
        replayed = op_platform.replay(source, reason="client test: sources").wait()
        assert replayed.source_exchange_id == exchange and replayed.is_replay


def test_a_dict_body_of_a_search_hit_is_written_as_json(
    op_platform: Platform, everything: pd.DataFrame
) -> None:
    hit = everything[everything.environment == "staging"].iloc[0]
    order = {
        "orderId": "ORD-CLIENT",
        "customerId": "C-1001",
        "currency": "EUR",
        "channel": "web",
        "lines": [{"sku": "SKU-101", "qty": 1, "unitPrice": 10.0}],
    }
    headers = {"Content-Type": "application/json", "X-Test": "client"}
    run = op_platform.replay(
        hit, body=order, headers=headers, properties={"tenant": "t"}, reason="client test: body"
    )
    assert run.replay["payloadDiff"] and run.status in ("PENDING", "RUNNING")
    replayed = run.wait()
    assert json.loads(replayed.input_body or "") == order
    assert replayed.input_headers and replayed.input_headers["X-Test"] == "client"
    assert replayed.input_properties == {"tenant": "t"}


# --------------------------------------------------------------------------- errors from the real server


def test_errors_of_the_real_server(
    op_platform: Platform, analyst_platform: Platform, everything: pd.DataFrame
) -> None:
    prod = everything[everything.environment == "prod"].iloc[0]
    with pytest.raises(PermissionDenied) as info:
        op_platform.replay(prod, reason="client test: no prod")
    assert (
        info.value.status == 403
        and "replay:prod" in str(info.value)
        and info.value.details["missing"] == ["replay:prod"]
    )
    dev = everything[everything.environment == "dev"].iloc[0]
    with pytest.raises(PermissionDenied, match="replay:run"):
        analyst_platform.replay(dev, reason="client test: viewer")
    with pytest.raises(NotFound) as nf:
        op_platform.execution("no-such-execution")
    assert nf.value.status == 404 and nf.value.hint
    with pytest.raises(ValidationError) as bad:
        op_platform.executions(sort="colour").to_pandas()
    assert bad.value.status == 400 and "sort" in bad.value.message
    with pytest.raises(ControlHeaderRejected) as ch:
        op_platform.replay(dev, headers={"cAmelHttpUri": "http://evil"}, reason="client test: control header")
    assert ch.value.code == "CONTROL_HEADER" and ch.value.status == 400
    with pytest.raises(PayloadTooLarge):
        op_platform.replay(dev, body="x" * (1 << 20), reason="client test: too large")
    with pytest.raises(AgentUnavailable) as au:
        op_platform.replay(dev, target_environment="nowhere", reason="client test: no agent")
    assert au.value.status == 503
    with pytest.raises(NotFound):
        op_platform.replay("ID-no-such-exchange", reason="client test: unknown source")


def test_an_idempotency_key_reused_with_another_body_conflicts(
    op_platform: Platform, everything: pd.DataFrame
) -> None:
    dev = everything[everything.environment == "dev"].iloc[4]
    key = uuid.uuid4().hex

    def send(body: str) -> dict:
        op = op_replay(
            op_platform.session,
            dev.exchange_id,
            key=key,
            headers=None,
            body=body,
            properties=None,
            target_environment=None,
            target_agent=None,
            reason="client test: key",
            client=None,
        )
        return op_platform._run(op)

    first = send('{"orderId": "A"}')
    assert send('{"orderId": "A"}')["replayId"] == first["replayId"]  # a resend: the same replay
    with pytest.raises(IdempotencyConflict) as info:
        send('{"orderId": "B"}')
    assert info.value.status == 422


def test_bad_credentials_fail_at_connect(client_sandbox: Any) -> None:
    with pytest.raises(AuthenticationError) as info:
        connect(client_sandbox.url, username="operator", password="wrong")
    assert info.value.status == 401 and info.value.hint


def test_connect_reads_the_environment(client_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOAT_URL", client_sandbox.url)
    monkeypatch.setenv("MOAT_USER", "analyst")
    monkeypatch.setenv("MOAT_PASSWORD", "analyst")
    monkeypatch.delenv("MOAT_TOKEN", raising=False)
    with connect() as p:
        assert p.user and p.user["username"] == "analyst" and "replay:run" not in p.user["permissions"]
        refresh = p.session.refresh_token
    monkeypatch.delenv("MOAT_USER")
    monkeypatch.delenv("MOAT_PASSWORD")
    monkeypatch.setenv("MOAT_TOKEN", refresh or "")
    with connect() as p:  # a refresh token in MOAT_TOKEN: access tokens are made from it
        assert p.health() == {"status": "UP"} and len(p.executions(limit=2).to_pandas()) == 2
        assert p.session.renewals == 1


def test_tier_low_refuses_replay(tmp_path: Path) -> None:
    from moat_nb.sandbox import start

    users = tmp_path / "users.toml"
    users.write_text(
        'tenant = { id = "small", tier = "LOW" }\n[users.operator]\npassword = "operator"\n'
        'roles = ["OPERATOR"]\n'
    )
    with (
        start(data=tmp_path / "data", users=users, per_env=2) as handle,
        connect(handle.url, username="operator", password="operator") as p,
    ):
        hit = next(iter(p.executions(limit=1)))
        with pytest.raises(TierNotEntitled) as info:
            p.replay(hit, reason="client test: tier")
    assert info.value.status == 403 and info.value.code == "TIER_NOT_ENTITLED"


# --------------------------------------------------------------------------- token renewal


def expired_access_token(handle: Any, username: str) -> str:
    """An access token the sandbox signed an hour ago that expired a minute ago (the sandbox's
    access lifetime is a fixed hour: there is no setting to shorten it)."""
    secret = (Path(handle.data_dir) / "keys" / "jwt.key").read_bytes()
    now = int(time.time())
    claims = {
        "sub": f"user:{username}",
        "roles": ["OPERATOR"],
        "permissions": [],
        "env": None,
        "typ": "access",
        "iat": now - 3660,
        "exp": now - 60,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def statuses(platform: Platform) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []

    def hook(response: httpx.Response) -> None:
        seen.append((response.request.url.path.removeprefix("/api/v1"), response.status_code))

    platform._client.event_hooks["response"].append(hook)
    return seen


def test_an_access_token_that_expired_mid_session_is_refreshed(fresh: Platform, client_sandbox: Any) -> None:
    fresh.session.access_token = expired_access_token(client_sandbox, "operator")
    seen = statuses(fresh)
    assert len(fresh.executions(limit=3).to_pandas()) == 3
    assert seen == [("/search/executions", 401), ("/auth/refresh", 200), ("/search/executions", 200)]
    assert fresh.session.renewals == 1


def test_a_token_the_platform_no_longer_takes_is_renewed_with_the_password(fresh: Platform) -> None:
    # A sandbox started on a fresh data folder (a new JWT key), or a token from before a
    # password change, is BAD_TOKEN: a notebook that has the password logs in again instead of
    # failing on its next call.
    other_key = jwt.encode(
        {"sub": "user:operator", "typ": "access", "iat": int(time.time()), "exp": int(time.time()) + 60},
        b"another-sandbox-key-0123456789abcdef",
        algorithm="HS256",
    )
    fresh.session.access_token = other_key
    seen = statuses(fresh)
    assert len(fresh.executions(limit=2).to_pandas()) == 2
    assert seen == [("/search/executions", 401), ("/auth/refresh", 200), ("/search/executions", 200)]
    fresh.session.access_token, fresh.session.refresh_token = other_key, other_key  # both refused
    seen.clear()
    fresh.health()
    assert fresh.executions(limit=1).to_pandas().shape[0] == 1
    assert seen[-4:] == [
        ("/search/executions", 401),
        ("/auth/refresh", 401),
        ("/auth/login", 200),
        ("/search/executions", 200),
    ]
    # Without a password there is nothing to renew with: the refusal is said as it is.
    with pytest.raises(AuthenticationError) as info:
        connect(fresh.url, token=other_key).executions(limit=1).to_pandas()
    assert info.value.code == "BAD_TOKEN"


def test_the_access_token_is_renewed_before_it_expires(fresh: Platform) -> None:
    clock: Callable[[], float] = fresh.session.clock
    fresh.session.clock = lambda: clock() + 3600  # an hour later: the token is due
    seen = statuses(fresh)
    before = fresh.session.access_token
    fresh.health()
    fresh.execution(fresh.executions(limit=1).to_pandas().execution_id.iloc[0])
    assert seen[0] == ("/auth/refresh", 200) and all(status == 200 for _, status in seen)
    assert fresh.session.access_token != before and fresh.session.renewals == 1


# --------------------------------------------------------------------------- audit


def test_audit_frame_receipt_and_bundle(admin_platform: Platform, everything: pd.DataFrame) -> None:
    run = admin_platform.replay(
        everything[everything.environment == "dev"].iloc[5], reason="client test: audit"
    )
    run.wait()
    receipt = admin_platform.replay_receipt(run.replay_id)
    actions = [e["action"] for e in receipt]
    assert actions[0] == "REPLAY_REQUESTED" and actions[-1] == "REPLAY_COMPLETED"
    assert all(e["target"]["replayId"] == run.replay_id for e in receipt)
    frame = admin_platform.audit(replay_id=run.replay_id)
    assert dict(frame.dtypes) == frames.pandas_dtypes(frames.AUDIT_SCHEMA)
    # The receipt's own read was audited (AUDIT_QUERIED, section 7), after the replay's events.
    assert frame.seq.tolist()[: len(receipt)] == [e["seq"] for e in receipt]
    assert set(frame.action.iloc[len(receipt) :]) == {"AUDIT_QUERIED"}
    assert (frame.replay_id == run.replay_id).all() and frame.actor.iloc[0] == "admin"
    verified = admin_platform.audit_verify()
    assert verified["ok"] is True and verified["checked"] >= frame.seq.max()
    bundle = admin_platform.audit_bundle()
    result = bundle.verify()
    assert result.ok, result.message
    assert run.replay_id in set(bundle.frame().replay_id.dropna())
    # One changed byte in an event and the offline check names it.
    tampered = json.loads(json.dumps(bundle.data))
    tampered["events"][1]["action"] = "REPLAY_DENIED"
    bad = AuditBundle(tampered).verify()
    assert not bad.ok and bad.first_bad_seq == tampered["events"][1]["seq"]


def test_receipts_of_ones_own_replays_and_nothing_more_without_audit_read(
    op_platform: Platform, everything: pd.DataFrame
) -> None:
    run = op_platform.replay(everything[everything.environment == "dev"].iloc[6], reason="client test: own")
    run.wait()
    receipt = op_platform.replay_receipt(run.replay_id)  # audit:read-own
    assert [e["action"] for e in receipt][-1] == "REPLAY_COMPLETED"
    assert receipt[0]["actor"]["username"] == "operator" and receipt[0]["action"] == "REPLAY_REQUESTED"
    with pytest.raises(PermissionDenied) as info:
        op_platform.audit_bundle()
    assert info.value.status == 403 and "audit:read" in str(info.value)


def test_a_receipt_of_an_id_that_is_no_replay_says_which_id_to_pass(
    op_platform: Platform, analyst_platform: Platform, client_sandbox: Any, everything: pd.DataFrame
) -> None:
    """An exchange or execution id passed to ``replay_receipt`` gave ``[]``: an empty receipt,
    as if the replay had left no audit trail. A replay always has its ``REPLAY_REQUESTED``,
    which its requester may read, so none means the id is not one of the caller's replays."""
    source = everything[everything.environment == "dev"].iloc[7]
    run = op_platform.replay(source, reason="client test: receipt by the wrong id")
    replayed = run.wait()
    cases = {
        source.exchange_id: f"that is an exchange id; its newest replays you may read are '{run.replay_id}'",
        source.execution_id: f"execution id of the recorded exchange '{source.exchange_id}', not of a replay",
        replayed.execution_id: f"that is the execution id of replay '{run.replay_id}'",
        replayed.exchange_id: f"that is the exchange id of replay '{run.replay_id}'",
        "replay-0000000000000000000000000000dead": "that you may read",
    }
    for wrong, said in cases.items():
        with pytest.raises(NotFound) as info:
            op_platform.replay_receipt(wrong)
        assert said in str(info.value) and not info.value.answered, str(info.value)
        assert info.value.hint and ("p.replay" in info.value.hint), info.value.hint
    # Another user without audit:read sees none of the operator's replays: told so, not [].
    with pytest.raises(NotFound) as info:
        analyst_platform.replay_receipt(source.exchange_id)
    assert "that is the id of a recorded exchange, not of a replay" in str(info.value)
    with pytest.raises(NotFound):
        analyst_platform.replay_receipt(run.replay_id)
    assert op_platform.replay_receipt(run.replay_id)[0]["action"] == "REPLAY_REQUESTED"

    async def from_async() -> str:
        async with AsyncPlatform(client_sandbox.url, username="operator", password="operator") as ap:
            try:
                await ap.replay_receipt(source.execution_id)
            except NotFound as exc:
                return str(exc)
        return "no error"

    assert "not of a replay" in asyncio.run(from_async())


# --------------------------------------------------------------------------- paging (pure)


@pytest.mark.parametrize("added_after_page", [0, 1])
def test_pages_read_while_rows_are_added_give_every_row_once(added_after_page: int) -> None:
    """``GET /replays`` lists the newest first: a replay requested between two pages pushes the
    last row of a page onto the next one. The driver below is the server's list, answered
    page by page, with a row added after the given page."""
    rows = [{"replayId": f"replay-{i}"} for i in range(250)]
    op = op_pages(
        Session("http://platform.test", token="t"), "/replays", {}, page_size=100, limit=None, key="replayId"
    )
    request, pages = next(op), 0
    try:
        while True:
            offset, size = int(request.url.params["offset"]), int(request.url.params["limit"])
            body = {"data": rows[offset : offset + size], "total": len(rows), "offset": offset, "limit": size}
            if pages == added_after_page:
                rows.insert(0, {"replayId": "replay-new"})
            pages += 1
            request = op.send(httpx.Response(200, json=body, request=request))
    except StopIteration as stop:
        got = [r["replayId"] for r in stop.value]
    assert len(got) == len(set(got)) == 250
    assert got == [f"replay-{i}" for i in range(250)]


def test_a_nan_in_replay_headers_is_refused_before_anything_is_sent(op_platform: Platform) -> None:
    src = next(iter(op_platform.executions(environment="dev", is_replay=False, limit=1)))
    sent = recording(op_platform)
    with pytest.raises(ValidationError, match="the headers holds NaN") as info:
        op_platform.replay(src, headers={"x-qty": float("nan")}, reason="client test: NaN header")
    assert info.value.code == "BAD_BODY"
    assert not [r for r in sent if r.method == "POST" and r.url.path.endswith("/replays")]


def test_async_platform_mirrors_every_method() -> None:
    """README: AsyncPlatform mirrors every method with ``await`` (``close`` is ``aclose``)."""
    public = {n for n in dir(Platform) if not n.startswith("_")} - {"close"}
    assert public - set(dir(AsyncPlatform)) == set()
    assert hasattr(AsyncPlatform, "aclose")


def test_connect_with_a_token_checks_the_address_and_the_token_at_once(
    client_sandbox: Any, op_platform: Platform
) -> None:
    """README: connect() fails at once on a wrong URL or credentials; with a token alone it
    sent nothing, and the first query failed instead (review finding)."""
    token = op_platform.session.access_token
    with connect(client_sandbox.url, token=token) as p:
        assert p.replays(limit=1) is not None
    with pytest.raises(AuthenticationError) as info:
        connect(client_sandbox.url, token="not-a-token")
    assert info.value.status == 401
    with pytest.raises(TransportError):
        connect("http://127.0.0.1:9", token=token)


# --------------------------------------------------------------------------- bad arguments (fuzzing findings)


def test_a_receipt_of_no_replay_id_is_refused_before_any_request(
    fresh: Platform, client_sandbox: Any
) -> None:
    """The server reads an empty ``replayId`` as no filter: ``replay_receipt(None)`` or ``("")``
    gave the whole audit log as that replay's record."""
    sent = recording(fresh)
    for bad in (None, "", 5, "../etc"):
        with pytest.raises(ValidationError, match="is not a replay id") as info:
            fresh.replay_receipt(bad)  # type: ignore[arg-type]
        assert info.value.code == "BAD_ID" and "run.replay_id" in (info.value.hint or "")
    with pytest.raises(ValidationError) as info:
        fresh.audit(replay_id="")
    assert info.value.code == "BAD_ID"
    assert sent == []

    async def from_async() -> list[str]:
        codes = []
        async with AsyncPlatform(client_sandbox.url, username="operator", password="operator") as ap:
            for call in (ap.replay_receipt(None), ap.replay_receipt(""), ap.audit(replay_id="")):  # type: ignore[arg-type]
                try:
                    await call
                except ValidationError as exc:
                    codes.append(exc.code)
        return codes

    assert asyncio.run(from_async()) == ["BAD_ID"] * 3


def test_replay_and_agent_filters_take_one_value_or_a_status_list(
    op_platform: Platform, fresh: Platform, client_sandbox: Any, everything: pd.DataFrame
) -> None:
    """httpx sends a list as a repeated parameter and the server keeps the last one: a list
    gave the rows of its last value only. ``status`` is comma-separated in the API."""
    op_platform.replay(
        everything[everything.environment == "dev"].iloc[8], reason="client test: lists"
    ).wait()

    def replay_ids(rows: list[dict]) -> set[str]:
        return {r["replayId"] for r in rows}

    completed = fresh.replays(status="COMPLETED", limit=None)
    errored = fresh.replays(status="ERROR", limit=None)
    both = fresh.replays(status=["COMPLETED", "ERROR"], limit=None)
    assert completed and replay_ids(both) == replay_ids(completed) | replay_ids(errored)
    assert {a["environmentId"] for a in fresh.agents(environment="dev")} == {"dev"}
    sent = recording(fresh)
    for call in (
        lambda: fresh.agents(environment=["dev", "prod"]),
        lambda: fresh.agents(status={"LIVE"}),
        lambda: fresh.replays(source_exchange_id=["a", "b"]),
        lambda: fresh.replays(status=["COMPLETED", 5]),
    ):
        with pytest.raises(ValidationError) as info:
            call()
        assert info.value.code == "BAD_FILTER" and "one value per filter" in (info.value.hint or "")
    assert sent == []
    # Values from a frame are their Python values, and an empty list is no filter, as before
    # these checks (found by review: they were refused).
    import numpy as np
    import pyarrow as pa

    one = next(iter(completed))
    picked = fresh.replays(
        source_exchange_id=pa.scalar(one["sourceExchangeId"]), offset=np.int64(0), limit=None
    )
    assert one["replayId"] in replay_ids(picked)
    assert replay_ids(fresh.replays(status=[], limit=None)) == replay_ids(fresh.replays(limit=None))

    async def from_async() -> tuple[set[str], str]:
        async with AsyncPlatform(client_sandbox.url, username="operator", password="operator") as ap:
            rows = await ap.replays(status=("COMPLETED", "ERROR"), limit=None)
            try:
                await ap.agents(environment=["dev", "prod"])
            except ValidationError as exc:
                return replay_ids(rows), exc.code
        return replay_ids(rows), "no error"

    assert asyncio.run(from_async()) == (replay_ids(both), "BAD_FILTER")


def test_a_replay_of_a_replay_takes_a_dict_body(fresh: Platform, everything: pd.DataFrame) -> None:
    """The server replays a replay's own exchange (replays of replays); the client's look-up
    of the source for a dict body asked for recorded exchanges only and said NotFound."""
    first = fresh.replay(everything[everything.environment == "dev"].iloc[9], reason="client test: r1").wait()
    order = {"orderId": "ORD-AGAIN", "customerId": "C-1001", "currency": "EUR", "channel": "web"}
    seen = recording(fresh)
    again = fresh.replay(first.exchange_id, body=order, reason="client test: replay of a replay").wait()
    assert again.source_exchange_id == first.exchange_id and json.loads(again.input_body or "") == order
    # The recorded exchange is asked for first, as the server picks it; then the replays.
    assert [b.get("isReplay") for b in searches(seen)] == [False, True]
    with pytest.raises(NotFound, match="recorded or replayed"):
        fresh.replay("ID-no-such-exchange", body=order, reason="client test: unknown source")


def test_a_closed_platform_says_so_in_words(client_sandbox: Any, everything: pd.DataFrame) -> None:
    """After ``close()`` (or the end of its ``with`` block) httpx raised a bare RuntimeError."""
    dev = everything[everything.environment == "dev"]
    p = connect(client_sandbox.url, username="operator", password="operator")
    done = p.replay(dev.iloc[10], reason="client test: closed, waited")
    result = done.wait()
    pending = p.replay(dev.iloc[11], reason="client test: closed, not waited")
    p.close()
    for call in (
        p.health,
        lambda: p.executions(limit=2).to_pandas(),
        lambda: p.execution(dev.execution_id.iloc[0]),
        lambda: p.replay(dev.iloc[0], reason="client test: closed"),
        pending.wait,
    ):
        with pytest.raises(MoatError) as info:
            call()
        assert info.value.code == "CLIENT_CLOSED" and "moat_nb.connect(" in (info.value.hint or "")
    assert done.wait() is result  # read before: nothing to send
    with connect(client_sandbox.url, username="operator", password="operator") as q:
        assert q.health() == {"status": "UP"}
    with pytest.raises(MoatError, match="was closed") as info:
        q.health()
    assert info.value.code == "CLIENT_CLOSED"

    async def from_async() -> MoatError:
        async with AsyncPlatform(client_sandbox.url, username="operator", password="operator") as ap:
            await ap.health()
        try:
            await ap.health()
        except MoatError as exc:
            return exc
        raise AssertionError("no error")

    exc = asyncio.run(from_async())
    assert exc.code == "CLIENT_CLOSED" and "AsyncPlatform(" in (exc.hint or "")


def test_ids_that_are_not_strings_are_refused_and_a_row_names_its_execution(
    fresh: Platform, everything: pd.DataFrame
) -> None:
    """``execution(None)`` or ``get_replay(5)`` failed in urllib with a bare TypeError; a frame
    row, which replay() and processors() take, too."""
    sent = recording(fresh)
    for call, words in (
        (lambda: fresh.execution(None), "the execution id must be a non-empty str, not None (NoneType)"),
        (lambda: fresh.execution(5), "the execution id must be a non-empty str, not 5 (int)"),
        (lambda: fresh.execution(""), "the execution id must be a non-empty str, not '' (str)"),
        (lambda: fresh.get_replay(5), "the replay id must be a non-empty str, not 5 (int)"),  # type: ignore[arg-type]
        (lambda: fresh.replay_run(None), "the replay id must be a non-empty str, not None (NoneType)"),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValidationError, match=re.escape(words)) as info:
            call()
        assert info.value.code == "BAD_ID" and "as a string" in (info.value.hint or "")
    assert sent == []
    # Analyst walk: a one-row frame (polars' `df.filter(...)`) put the first 40 characters of
    # its drawn table, a line break and box characters, into the message.
    one = everything[everything.environment == "dev"].head(1)
    for frame_ in (one, pl.from_pandas(one)):
        with pytest.raises(ValidationError) as info:
            fresh.execution(frame_)
        assert info.value.code == "BAD_ID" and "\n" not in info.value.message
        assert "not a frame of 1 row (DataFrame)" in info.value.message
        assert "frame.row(0, named=True)" in (info.value.hint or "")
    assert sent == []
    row = everything[everything.environment == "dev"].iloc[0]
    expected = fresh.execution(row.execution_id)
    assert expected.processors
    for source in (
        row,
        row.to_dict(),
        next(iter(fresh.executions(exchange_id=row.exchange_id, is_replay=False, limit=1))),
    ):
        assert fresh.execution(source) == expected


def test_connect_checks_the_timeout_and_refuses_an_empty_token(
    client_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``timeout=inf``, ``-1``, ``nan`` or ``"5"`` failed later in socket with bare errors, and
    ``token=""`` connected as nobody, to fail at the first call."""
    for bad in (float("inf"), -1, 0, float("nan"), "5", True):
        with pytest.raises(ValidationError, match="is not a number of seconds") as info:
            connect(client_sandbox.url, username="operator", password="operator", timeout=bad)
        assert info.value.code == "VALIDATION" and "timeout=None" in (info.value.hint or "")
    # An httpx.Timeout (or httpx's 4-tuple) is the caller's own per-phase choice: taken as it is
    # (found by review: refused).
    for good in (None, 2.5, 10, httpx.Timeout(10, read=60), (5, 60, 5, 5)):
        with connect(client_sandbox.url, username="operator", password="operator", timeout=good) as p:
            assert p.health() == {"status": "UP"}
    # token=os.environ.get("MOAT_TOKEN", "") beside a password logs in with the password.
    with connect(client_sandbox.url, username="operator", password="operator", token="") as p:
        assert p.user is not None and p.user["username"] == "operator"
    monkeypatch.setenv("MOAT_USER", "operator")
    monkeypatch.setenv("MOAT_PASSWORD", "operator")
    for bad in ("", "   "):
        with pytest.raises(AuthenticationError, match="token= is empty") as info:
            connect(client_sandbox.url, token=bad)
        assert info.value.code == "NO_CREDENTIALS" and info.value.hint


def test_replay_headers_and_properties_must_be_mappings(fresh: Platform, everything: pd.DataFrame) -> None:
    """``headers="abc"`` or ``properties=[1]`` failed in dict() with a bare ValueError or TypeError."""
    import numpy as np

    src = everything[everything.environment == "dev"].iloc[0]
    sent = recording(fresh)
    for kw in ({"headers": "abc"}, {"headers": 5}, {"properties": [1]}, {"properties": "x"}):
        name = next(iter(kw))
        with pytest.raises(ValidationError, match=f"{name}= is a") as info:
            fresh.replay(src, reason="client test: bad payload", **kw)  # type: ignore[arg-type]
        assert info.value.code == "BAD_PAYLOAD" and "as a dict" in (info.value.hint or "")
    with pytest.raises(ValidationError, match="numpy.ndarray is not JSON data") as body:
        fresh.replay(src, body={"qty": np.array([1, 2])}, reason="client test: array body")
    assert body.value.code == "BAD_BODY" and "NaN" not in str(body.value)
    assert not [r for r in sent if r.method == "POST" and r.url.path.endswith("/replays")]
    # What dict() makes a mapping of is one, as before (found by review: refused): name-value
    # pairs, a pandas Series.
    for pairs in ([("X-A", "1")], pd.Series({"X-A": "1"})):
        done = fresh.replay(src, headers=pairs, reason="client test: pairs").wait()
        assert done.input_headers["X-A"] == "1"  # (and the platform's X-Cameleer-Replay)


def test_replay_permissions_follow_the_design_table() -> None:
    from moat_nb.client import replay_permissions

    assert replay_permissions("staging", None, False) == ["replay:run"]
    assert replay_permissions("staging", "dev", True) == ["replay:run", "replay:modify"]
    assert replay_permissions("prod", None, False) == ["replay:run", "replay:prod"]  # the source's own
    assert replay_permissions("staging", "prod", True) == ["replay:run", "replay:modify", "replay:prod"]
