"""Batch replays (moat_nb/batch.py): the pure parts (grid, input paths, keys, verdicts, results
file, frames) and sweeps and regressions against a real sandbox on loopback.

The sandbox is this module's own (20 exchanges per environment, seed 1: prod has two exchanges
that fail for real reasons), so that the replays made here never show in the client tests'
counts. Expected outcomes come from an oracle that does not go through moat_nb.batch: the orders
app's route engine run in this process on the same start payloads (tests/sandbox/apps shows it
is the engine the agents run).
"""

from __future__ import annotations

import asyncio
import decimal
import itertools
import json
import math
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moat_nb import batch
from moat_nb.batch import (
    COLUMNS,
    REMOVE,
    BatchCancelled,
    BatchInterrupted,
    BatchResult,
    aregression,
    asweep,
    grid,
    regression,
    row_key,
    sweep,
    variant_payload,
    verdict,
)
from moat_nb.client import AsyncPlatform, Platform, connect
from moat_nb.errors import NotFound, PermissionDenied, TransportError, ValidationError
from moat_nb.model import Execution, Payload
from moat_nb.stream import StreamPolicy

SEED = 1
PER_ENV = 20


# --------------------------------------------------------------------------- pure parts


def _execution(
    body: Any, headers: dict[str, Any] | None = None, properties: dict[str, Any] | None = None
) -> Execution:
    return Execution(
        execution_id="e-1",
        exchange_id="x-1",
        route_id="r",
        status="COMPLETED",
        input_body=body if isinstance(body, str) or body is None else json.dumps(body),
        input_headers={"Content-Type": "application/json", "Channel": "web"} if headers is None else headers,
        input_properties={"tenant": "acme", "order": '{"total": 1}'} if properties is None else properties,
        processors=(),
    )


ORDER = {"orderId": "O-1", "lines": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}], "meta": {"a b": 1}}


def test_grid_expands_to_the_cartesian_product_last_axis_fastest() -> None:
    variants = grid({"body.lines[0].qty": [1, 5, 50], "headers.channel": ["web", "store"]})
    assert variants == [
        {"body.lines[0].qty": q, "headers.channel": c} for q in (1, 5, 50) for c in ("web", "store")
    ]


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["body.a", "body.b[0]", "headers.h", "properties.p", "body:$.c"]),
        st.lists(st.integers() | st.text(max_size=3), min_size=1, max_size=4),
        max_size=4,
    )
)
def test_grid_size_and_combinations(axes: dict[str, list[Any]]) -> None:
    variants = grid(axes)
    sizes = [len(v) for v in axes.values()]
    assert len(variants) == math.prod(sizes)
    assert all(list(v) == list(axes) for v in variants)
    assert [tuple(v.values()) for v in variants] == list(itertools.product(*axes.values()))


@pytest.mark.parametrize(
    ("axes", "words"),
    [
        ({"body.a": "web"}, "must be a list"),
        ({"body.a": 5}, "must be a list"),
        ({"colour": [1]}, "must start with body, headers or properties"),
        ({"body:line 3": [1]}, "only JSON bodies"),
        ({"headers.a b": [1]}, "not a plain name"),
    ],
)
def test_grid_refuses_what_is_not_a_grid(axes: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        grid(axes)


@pytest.mark.parametrize(
    "axis",
    [
        np.arange(1, 4),
        pd.Series([1, 2, 3]),
        pl.Series([1, 2, 3]),
        (1, 2, 3),
        range(1, 4),
        (n for n in (1, 2, 3)),
        pd.DataFrame({"q": [1, 2, 3]})["q"],  # a frame's column
    ],
)
def test_grid_takes_an_array_a_series_or_any_ordered_collection_as_an_axis(axis: Any) -> None:
    # The values are the Python ones the array holds (np.int64 -> int), as JSON needs them.
    variants = grid({"body.qty": axis, "headers.c": np.array(["web", "store"])})
    assert variants == [{"body.qty": q, "headers.c": c} for q in (1, 2, 3) for c in ("web", "store")]
    assert all(type(v["body.qty"]) is int and type(v["headers.c"]) is str for v in variants)


@pytest.mark.parametrize(
    ("axis", "words"),
    [
        ({1, 2}, "sorted"),  # no order to keep
        (pd.DataFrame({"q": [1]}), "not DataFrame"),  # it would iterate column names
        (b"12", "not bytes"),
    ],
)
def test_grid_refuses_axes_without_an_order_of_values(axis: Any, words: str) -> None:
    with pytest.raises(ValidationError, match=words) as caught:
        grid({"body.qty": axis})
    assert caught.value.code == "BAD_VARIANT"


def test_variant_payload_edits_only_the_parts_it_touches() -> None:
    original = _execution(ORDER)
    args = variant_payload(original, {"body.lines[0].qty": 7, "body['meta']['a b']": 2})
    assert set(args) == {"body"}  # headers and properties are not sent: the original's stay
    assert json.loads(args["body"]) == {
        **ORDER,
        "lines": [{"sku": "A", "qty": 7}, {"sku": "B", "qty": 2}],
        "meta": {"a b": 2},
    }
    # The diff's own path syntax works as well; a new key is created, index == len appends.
    args = variant_payload(original, {"body:$.lines[2]": {"sku": "C", "qty": 3}, "body.note.text": "hi"})
    body = json.loads(args["body"])
    assert body["lines"][2] == {"sku": "C", "qty": 3} and body["note"] == {"text": "hi"}
    # Headers compare case-insensitively (as Camel's): the recorded spelling is edited.
    args = variant_payload(original, {"headers.channel": "store", "headers.X-New": "1"})
    assert args == {"headers": {"Content-Type": "application/json", "Channel": "store", "X-New": "1"}}
    # Inside a property holding JSON text: edited and written back as JSON text.
    args = variant_payload(original, {"properties.order.total": 9, "properties.tenant": REMOVE})
    assert args == {"properties": {"order": '{"total": 9}'}}
    # Whole parts first, then the paths inside them.
    args = variant_payload(original, {"headers.b": "2", "headers": {"a": "1"}})
    assert args == {"headers": {"a": "1", "b": "2"}}
    assert variant_payload(original, {"body": "plain"}) == {"body": "plain"}
    assert json.loads(variant_payload(original, {"body": [1, 2]})["body"]) == [1, 2]
    assert json.loads(variant_payload(original, {"body.lines[1]": REMOVE})["body"])["lines"] == [
        {"sku": "A", "qty": 1}
    ]
    # numpy scalars, as np.arange or a DataFrame column gives a grid (found by review: a sweep
    # over them died with a TypeError).
    args = variant_payload(original, {"body.lines[0].qty": np.int64(7), "headers.vip": np.bool_(True)})
    assert json.loads(args["body"])["lines"][0]["qty"] == 7 and type(args["headers"]["vip"]) is bool
    assert json.loads(variant_payload(original, {"body.meta": {"w": np.float64(0.5)}})["body"])["meta"] == {
        "w": 0.5
    }
    assert json.loads(variant_payload(original, {"body.meta": np.array([1, 2])})["body"])["meta"] == [1, 2]


def test_an_index_equal_to_the_lists_length_appends_inside_a_path_too() -> None:
    # The error for an index one past the end said "use ... 2 to append" for index 2 itself
    # when the path went on after it (body.lines[2].qty): only a last index could append.
    original = _execution(ORDER)
    body = json.loads(variant_payload(original, {"body.lines[2].qty": 5})["body"])
    assert body["lines"] == [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}, {"qty": 5}]
    body = json.loads(variant_payload(original, {"body.grid[0][0]": 1})["body"])
    assert body["grid"] == [[1]]
    # Removing from an element that is not there is refused without offering to append.
    with pytest.raises(ValidationError, match="index 2 is outside a list of 2") as err:
        variant_payload(original, {"body.lines[2].qty": REMOVE})
    assert "append" not in str(err.value)


@pytest.mark.parametrize(
    ("variant", "words"),
    [
        ({"body.lines[5].qty": 1}, "index 5 is outside a list of 2"),
        ({"body.orderId.x": 1}, "cannot take key 'x' of a str"),
        ({"body.lines.x": 1}, "cannot take key 'x' of a list"),
        ({"properties.tenant.x": 1}, "not a JSON object or array"),
        ({"headers": "a=b"}, "give a dict"),
        ({"body.at": datetime(2026, 1, 1)}, "'body.at': a datetime is not a JSON value"),
    ],
)
def test_bad_variants_say_what_is_wrong(variant: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        variant_payload(_execution(ORDER), variant)
    with pytest.raises(ValidationError, match="original body is not JSON"):
        variant_payload(_execution("<order/>", {"Content-Type": "application/xml"}), {"body.a": 1})


json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
json_doc = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text("ab_", min_size=1, max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


@settings(max_examples=200, deadline=None)
@given(json_doc.filter(lambda d: isinstance(d, dict | list)), st.data(), json_leaf)
def test_a_body_path_sets_exactly_that_value(doc: Any, data: st.DataObject, value: Any) -> None:
    segments = data.draw(st.sampled_from([p for p in _paths(doc) if p]) if any(_paths(doc)) else st.nothing())
    path = "body" + "".join(f"[{s}]" if isinstance(s, int) else f"['{s}']" for s in segments)
    body = json.loads(variant_payload(_execution(doc), {path: value})["body"])
    node = body
    for s in segments:
        node = node[s]
    assert node == value
    # Everything else is as it was: putting the old value back gives the original document.
    old = doc
    for s in segments:
        old = old[s]
    assert json.loads(variant_payload(_execution(body), {path: old})["body"]) == doc


def test_row_keys_are_stable_and_tell_variants_apart() -> None:
    a = row_key("sweep", "x-1", "staging", {"body.a": 1, "headers.b": "x"})
    assert a == row_key("sweep", "x-1", "staging", {"headers.b": "x", "body.a": 1})  # order-free
    assert a == row_key("sweep", "x-1", "staging", {"body.a": 1.0, "headers.b": "x"})  # JCS: 1 == 1.0
    others = {
        row_key("sweep", "x-1", "staging", {"body.a": 2, "headers.b": "x"}),
        row_key("sweep", "x-2", "staging", {"body.a": 1, "headers.b": "x"}),
        row_key("sweep", "x-1", "dev", {"body.a": 1, "headers.b": "x"}),
        row_key("sweep", "x-1", "staging", {"body.a": REMOVE, "headers.b": "x"}),
        row_key("regression", "x-1", "staging"),
    }
    assert a not in others and len(others) == 5
    assert batch._unique_keys(["k", "j", "k", "k"]) == ["k", "j", "k#2", "k#3"]


def test_row_keys_hold_long_ints_and_keep_the_keys_results_files_have() -> None:
    # Keys of values JCS holds are the ones written before (results files must still resume).
    assert row_key("sweep", "x-1", "staging", {"body.a": 1, "headers.b": "x"}) == "6b3addacff23bd70bf3c248e"
    assert (
        row_key(
            "sweep",
            "x-1",
            "staging",
            {"body.a": np.int64(5), "body.b": [1.5, None, True], "properties.p": REMOVE},
        )
        == "2bbdc1098d18a6887a658d32"
    )
    assert row_key("regression", "x-1", "staging") == "293ca565d77a0a8cbcf5a913"
    # A Java long id (beyond 2**53, which JCS refuses) has a key of its own, exactly.
    keys = {row_key("sweep", "x-1", "staging", {"body.id": 2**60 + n}) for n in range(3)}
    assert len(keys) == 3 and row_key("sweep", "x-1", "staging", {"body.id": 2**60}) in keys
    assert row_key("sweep", "x-1", "staging", {"body.id": 2**60, "body.b": 1}) == row_key(
        "sweep", "x-1", "staging", {"body.b": 1, "body.id": 2**60}
    )
    for bad in (math.nan, math.inf, np.float64("nan")):
        with pytest.raises(ValidationError, match="use None") as caught:
            row_key("sweep", "x-1", "staging", {"body.a": bad})
        assert caught.value.code == "BAD_VARIANT"


@pytest.mark.parametrize(
    ("original", "replay", "result", "same", "expected"),
    [
        ("COMPLETED", "COMPLETED", "COMPLETED", True, "SAME"),
        ("COMPLETED", "COMPLETED", "COMPLETED", False, "CHANGED"),
        ("COMPLETED", "COMPLETED", "FAILED", False, "FAILED"),
        ("FAILED", "COMPLETED", "FAILED", True, "SAME"),  # failed before, fails the same way
        ("FAILED", "COMPLETED", "FAILED", False, "CHANGED"),
        ("FAILED", "COMPLETED", "COMPLETED", False, "CHANGED"),  # a fix is a change
        ("COMPLETED", "TIMED_OUT", None, None, "ERROR"),
        ("COMPLETED", "ERROR", None, None, "ERROR"),
        ("COMPLETED", None, None, None, "ERROR"),  # refused
    ],
)
def test_verdicts(
    original: str, replay: str | None, result: str | None, same: bool | None, expected: str
) -> None:
    assert verdict(original, replay, result, same) == expected


def _row(i: int, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name, _, _ in COLUMNS}
    row.update(key=f"k{i}", kind="sweep", index=i, verdict="SAME", differences=0, duration_ms=1.5)
    row.update(kw)
    return row


def test_frames_have_the_fixed_columns_then_inputs_then_outputs() -> None:
    rows = [
        _row(0, inputs_values={"body.q": 1, "headers.c": "web"}, outputs={"total": 1.5, "ok": True}),
        _row(
            1,
            verdict="CHANGED",
            differences=3,
            inputs_values={"body.q": 50, "headers.c": None},
            outputs={"total": 2},
        ),
        _row(2, verdict="ERROR", error_code="FORBIDDEN", error="no", inputs_values={"body.q": {"x": 1}}),
    ]
    result = BatchResult("sweep", rows, total=4)
    fixed = [name for name, _, _ in COLUMNS]
    frame = result.to_pandas()
    assert list(frame.columns) == [*fixed, "body.q", "headers.c", "total", "ok"]
    assert str(frame["differences"].dtype) == "Int64" and str(frame["duration_ms"].dtype) == "float64"
    assert str(frame["total"].dtype) == "float64" and frame["total"].iloc[:2].tolist() == [1.5, 2.0]
    assert pd.isna(frame["total"].iloc[2]) and frame["ok"].tolist()[:1] == [True]
    assert frame["body.q"].tolist() == ["1", "50", '{"x": 1}']  # mixed: JSON text
    polars = result.to_polars()
    assert polars.columns == list(frame.columns)
    assert polars.schema["index"] == pl.Int64 and polars.schema["ok"] == pl.Boolean
    assert polars["headers.c"].to_list() == ["web", None, None]
    text = result.summary()
    assert "3 of 4 rows" in text and "SAME 1, CHANGED 1, ERROR 1" in text and "[FORBIDDEN] no" in text
    empty = BatchResult("regression", [], total=0).to_polars()
    assert empty.columns == fixed and empty.height == 0
    asked = BatchResult("regression", [], total=0, output_names=("total",)).to_pandas()
    assert list(asked.columns) == [*fixed, "total"] and str(asked["total"].dtype) == "float64"


def test_an_output_no_row_has_takes_the_type_of_another_run_when_concatenated() -> None:
    # A run where every row failed had its "total" column as float64 NaN: pl.concat with a run
    # whose output is text failed (SchemaError), and a relaxed concat with a bool made True 1.0.
    failed = BatchResult(
        "regression",
        [_row(0, verdict="ERROR"), _row(1, verdict="ERROR")],
        total=2,
        output_names=("total", "ok"),
    )
    ran = BatchResult("regression", [_row(2, outputs={"total": "9.50 EUR", "ok": True})], total=1)
    assert (
        failed.to_polars().schema["total"] == pl.Null
        and failed.to_arrow().schema.field("ok").type == pa.null()
    )
    empty = BatchResult("regression", [], total=0, output_names=("total",)).to_polars()
    assert empty.schema["total"] == pl.Null
    # Plain concat takes a Null column after the frame that sets the types; relaxed, either order.
    plain = pl.concat([ran.to_polars(), failed.to_polars()])
    assert plain.schema["total"] == pl.String and plain["total"].to_list() == ["9.50 EUR", None, None]
    for frames in ([failed.to_polars(), ran.to_polars()], [ran.to_polars(), failed.to_polars()]):
        relaxed = pl.concat(frames, how="vertical_relaxed")
        assert relaxed.schema["total"] == pl.String and relaxed.schema["ok"] == pl.Boolean
        assert sorted(relaxed["ok"].to_list(), key=str) == [None, None, True]
    arrow = pa.concat_tables([failed.to_arrow(), ran.to_arrow()], promote_options="default")
    assert arrow.schema.field("total").type == pa.string()
    # pandas: NaN (no null dtype there); pd.concat never refuses, and numbers stay numbers.
    frame = failed.to_pandas()
    assert str(frame["total"].dtype) == "float64" and (frame["total"] - 1.0).isna().all()
    both = pd.concat([frame, ran.to_pandas()], ignore_index=True)
    assert both["total"].iloc[2] == "9.50 EUR" and both["total"].iloc[:2].isna().all()
    counted = BatchResult("regression", [_row(3, outputs={"total": 7, "ok": False})], total=1).to_pandas()
    numbers = pd.concat([frame, counted], ignore_index=True)["total"]
    assert pd.api.types.is_float_dtype(numbers.dtype) and numbers.iloc[2] == 7


def test_a_declared_output_type_is_the_columns_in_every_run() -> None:
    # A run where no row has "total" (Null) before one where it is a number: pl.concat failed,
    # and there was no way to say what the column is. Declared, it is that type either way.
    failed = BatchResult("regression", [_row(0, verdict="ERROR")], total=1, output_names=("total",))
    ran = BatchResult(
        "regression", [_row(1, outputs={"total": 7}), _row(2, outputs={"total": None})], total=2
    )
    with pytest.raises(pl.exceptions.PolarsError):
        pl.concat([failed.to_polars(), ran.to_polars()])
    declared = {"total": pa.float64()}
    failed.output_types = ran.output_types = declared
    assert failed.to_polars().schema["total"] == ran.to_polars().schema["total"] == pl.Float64
    both = pl.concat([failed.to_polars(), ran.to_polars()])
    assert both["total"].to_list() == [None, 7.0, None]
    assert str(failed.to_pandas()["total"].dtype) == "float64"
    # A value that is not of the declared type: refused by name, not a bare ArrowInvalid.
    text = BatchResult("regression", [_row(3, outputs={"total": "9.50 EUR"})], total=1, output_types=declared)
    with pytest.raises(ValidationError, match="output 'total' holds values that are not double") as info:
        text.to_polars()
    assert info.value.code == "BAD_OUTPUT_TYPE" and info.value.hint
    # polars' String is the string an undeclared text column has (not large_string).
    assert (
        batch._column_type("x", pl.String) == pa.string()
        and batch._column_type("x", pl.Int64()) == pa.int64()
    )


def test_a_declared_output_type_keeps_every_value_as_it_is_or_refuses_it() -> None:
    # Arrow's safe cast let these by, changed: 1.234 as Decimal(10, 2) was 1.23, 0.5 as Boolean
    # True, 1e300 as Float32 inf, a 20-digit id (JSON text) as Float64 its nearest float; and a
    # text value beside a number, declared String, kept the JSON quotes ('"a"').
    def frame(values: list[Any], dtype: Any) -> pl.DataFrame:
        rows = [_row(i, outputs={"x": v}) for i, v in enumerate(values)]
        return BatchResult(
            "regression", rows, total=len(rows), output_types={"x": batch._column_type("x", dtype)}
        ).to_polars()

    for values, dtype in (
        ([1.234], pl.Decimal(10, 2)),
        ([0.5, 1.0], pl.Boolean),
        ([2], pl.Boolean),
        ([1e300], pl.Float32),
        ([2**64 - 1, 3], pl.Float64),
    ):
        with pytest.raises(ValidationError, match="output 'x' holds values that are not") as info:
            frame(values, dtype)
        assert info.value.code == "BAD_OUTPUT_TYPE", (values, dtype)
    assert frame([1, "a", None], pl.String)["x"].to_list() == ["1", "a", None]
    # What casts to the same value still does.
    assert frame([0.1, 9.99], pl.Decimal(10, 2))["x"].to_list() == [
        decimal.Decimal("0.10"),
        decimal.Decimal("9.99"),
    ]
    assert frame([1.5, 0.1], pl.Float32)["x"].to_list()[0] == 1.5
    assert frame([1, 0], pl.Boolean)["x"].to_list() == [True, False]
    assert frame([2.0, None], pl.Int64)["x"].to_list() == [2, None]
    assert frame(["9.50"], pl.Float64)["x"].to_list() == [9.5]


def test_a_declared_list_or_struct_output_type_holds_lists_and_objects() -> None:
    # _column_type takes pl.List and pl.Struct, but the column was cast from the JSON text an
    # undeclared column of lists or objects is, which Arrow does not cast: always BAD_OUTPUT_TYPE.
    lines = batch._column_type("lines", pl.List(pl.Int64))
    shape = batch._column_type("shape", pl.Struct({"sku": pl.String, "qty": pl.Int64}))
    result = BatchResult(
        "regression",
        [
            _row(1, outputs={"lines": [1, 2], "shape": {"sku": "SKU-1", "qty": 2}}),
            _row(2, outputs={"lines": None, "shape": None}),
        ],
        total=2,
        output_types={"lines": lines, "shape": shape},
    )
    frame = result.to_polars()
    assert frame.schema["lines"] == pl.List(pl.Int64) and frame["lines"].to_list() == [[1, 2], None]
    assert frame["shape"].to_list() == [{"sku": "SKU-1", "qty": 2}, None]
    # Values that are not of the declared type are still refused by name.
    wrong = BatchResult(
        "regression", [_row(3, outputs={"lines": [1.5]})], total=1, output_types={"lines": lines}
    )
    with pytest.raises(ValidationError, match="output 'lines' holds values that are not") as info:
        wrong.to_polars()
    assert info.value.code == "BAD_OUTPUT_TYPE"


def test_results_file_skips_a_torn_line_and_refuses_another_kind(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    path.write_text(
        json.dumps({"type": "started", "kind": "sweep", "key": "a", "replayId": "replay-1"})
        + "\n"
        + json.dumps({"type": "row", **_row(0, key="a")})
        + "\n"
        + json.dumps({"type": "started", "kind": "sweep", "key": "b", "replayId": "replay-2"})
        + "\n"
        + '{"type": "row", "kind": "sw'  # the process died mid-write
    )
    loaded = batch._ResultsFile(path, "sweep")
    loaded.close()
    assert list(loaded.rows) == ["a"] and loaded.started == {"b": "replay-2"} and loaded.torn == 1
    with pytest.raises(ValidationError, match="holds sweep rows, not regression rows"):
        batch._ResultsFile(path, "regression")


def _started(key: str, replay: str) -> dict[str, Any]:
    return {"type": "started", "kind": "sweep", "key": key, "replayId": replay}


@settings(max_examples=150, deadline=None)
@given(
    before=st.integers(0, 3),
    cut=st.floats(0, 1, exclude_max=True),
    note=st.text(max_size=8),
    next_is_row=st.booleans(),
)
def test_resume_after_a_torn_last_line_loses_and_repeats_nothing(
    tmp_path_factory: pytest.TempPathFactory, before: int, cut: float, note: str, next_is_row: bool
) -> None:
    # The process died while writing the last line (cut anywhere, even inside a UTF-8 character);
    # the resumed run's first record (a finished row, or a replay it just requested) must load.
    path = tmp_path_factory.mktemp("torn") / "runs.jsonl"
    whole = [json.dumps({"type": "row", **_row(i, error={"type": "X", "note": note})}) for i in range(before)]
    torn = json.dumps({"type": "row", **_row(9, error={"type": "X", "note": note})}, ensure_ascii=False)
    data = "".join(x + "\n" for x in whole).encode() + torn.encode()[: int(len(torn.encode()) * cut)]
    path.write_bytes(data)
    results = batch._ResultsFile(path, "sweep")
    results.open()
    if next_is_row:
        results.add_row(_row(5, key="new"))
    else:
        results.add_started("new", "replay-new")
    results.close()
    again = batch._ResultsFile(path, "sweep")
    assert list(again.rows) == [f"k{i}" for i in range(before)] + (["new"] if next_is_row else [])
    assert again.started == ({} if next_is_row else {"new": "replay-new"})
    assert again.torn == 0 and path.read_bytes().endswith(b"\n")


def test_a_record_glued_onto_a_torn_line_by_an_older_resume_is_read(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    glued = '{"type": "row", "kind": "sw' + json.dumps(_started("b", "replay-2"))
    path.write_text(json.dumps({"type": "row", **_row(0, key="a")}) + "\n" + glued + "\n")
    loaded = batch._ResultsFile(path, "sweep")
    assert list(loaded.rows) == ["a"] and loaded.started == {"b": "replay-2"} and loaded.torn == 0


def test_a_replay_lost_from_sight_stays_followed_and_one_that_answered_does_not(tmp_path: Path) -> None:
    # A row that could not reach the platform after its replay was requested (its trace was lost)
    # keeps that replay: a resumed batch follows it rather than replay the exchange twice. A row
    # the platform answered (even with an error) is done with its replay.
    path = tmp_path / "runs.jsonl"
    results = batch._ResultsFile(path, "sweep")
    results.open()
    for i, code in enumerate(["STREAM_RESUME_FAILED", "TRANSPORT", "REPLAY_ABORTED", None]):
        results.add_started(f"k{i}", f"replay-{i}")
        verdict = "SAME" if code is None else "ERROR"
        results.add_row(_row(i, verdict=verdict, error_code=code, replay_id=f"replay-{i}"))
    results.close()
    again = batch._ResultsFile(path, "sweep")
    assert again.started == {"k0": "replay-0", "k1": "replay-1"}
    assert set(again.rows) == {"k0", "k1", "k2", "k3"}


@pytest.mark.parametrize("peer", ["hangs up", "a gateway says 502"])
def test_ids_are_not_looked_up_one_by_one_once_the_platform_is_gone(tmp_path: Path, peer: str) -> None:
    """A regression by exchange id looks each source up first: against a platform that hangs up
    on every connection (or a proxy whose platform is gone: 502 with no envelope) it stops
    looking after max(3, concurrency) failures in a row instead of spending the client's
    retries on every id (review finding: 1,000 ids took ~175 s), and the batch stops at once."""
    import socket

    from moat_nb.client import RetryPolicy
    from moat_nb.errors import BatchStopped

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[int] = []

    def hang_up() -> None:  # a real peer that closes every connection it takes (after a 502)
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            if peer != "hangs up":
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown"
                )
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    gone = Platform(f"http://127.0.0.1:{server.getsockname()[1]}", token="t", retry=RetryPolicy(attempts=0))
    try:
        with pytest.raises(BatchStopped) as info:
            regression(
                gone, [f"ID-{i}" for i in range(60)], "dev", reason="r", concurrency=4, progress=False,
                calibrate=False, results=tmp_path / "runs.jsonl", retry_errors=False,
            )  # fmt: skip
    finally:
        gone.close()
        server.close()
    assert len(accepted) < 12  # 4 in a row, and the look-ups already in flight, not 60
    assert len(info.value.result.rows) == 4
    assert "with retry_errors=True also the rows that could not reach it" in str(info.value)


def test_rows_in_flight_when_the_batch_stops_are_cut_off_not_waited_for(tmp_path: Path) -> None:
    """One replay request hangs (a peer that takes it and never answers) while the others cannot
    connect: the batch stops after three of those in a row and cuts the hanging row off, rather
    than wait for it (its request is still waited for, up to the client's timeout, so that an
    accepted replay's id would reach the results file)."""
    import socket

    from moat_nb.client import RetryPolicy
    from moat_nb.errors import BatchStopped

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def serve() -> None:  # the first replay request is held open, unanswered; others are hung up on
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            # Only a POST /replays: the batch's look-up of the agents (a GET) comes first.
            if not held and conn.recv(65536).startswith(b"POST"):
                held.append(conn)
            else:
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    sources = [
        Execution(
            execution_id=f"e-{i}", exchange_id=f"x-{i}", route_id="r", status="COMPLETED", environment="dev",
            input_headers={}, input_body="{}", input_properties={}, processors=(),
        )
        for i in range(20)
    ]  # fmt: skip
    gone = Platform(
        f"http://127.0.0.1:{server.getsockname()[1]}", token="t", retry=RetryPolicy(attempts=0), timeout=3.0
    )
    try:
        with pytest.raises(BatchStopped) as info:
            regression(gone, sources, "dev", reason="r", concurrency=3, progress=False, calibrate=False)
    finally:
        gone.close()
        server.close()
        for conn in held:
            conn.close()
    rows = info.value.result.rows
    # Three rows that could not connect; the held one is not among them (it was cut off).
    assert len(rows) == 3 and {r["error_code"] for r in rows} == {"TRANSPORT"}
    assert len(held) == 1


@pytest.fixture
def offline() -> Iterator[Platform]:
    """A platform nothing listens for: a test using it shows that nothing was sent."""
    platform = Platform("http://127.0.0.1:9", token="t")
    try:
        yield platform
    finally:
        platform.close()


@pytest.mark.parametrize(
    "text",
    [
        "my precious notes\nline two without newline",  # a last line that looks torn
        "one line\n",
        '{"type": "event", "key": "a", "kind": "sweep"}\n',  # someone else's JSON lines
        json.dumps({"type": "row", **_row(0, key="a")}) + "\nmy note\n",  # a line of ours, then not
        json.dumps({"type": "row", **_row(0, key="a")}) + '\n{"ty"pe',  # a torn line that is not ours
    ],
)
def test_a_file_that_is_not_a_results_file_is_refused_untouched(
    tmp_path: Path, text: str, offline: Platform
) -> None:
    """``results=`` pointed at an unrelated file: it lost its last line (taken for a torn record)
    and had records appended to it (fuzzing finding)."""
    path = tmp_path / "notes.txt"
    path.write_text(text)
    with pytest.raises(ValidationError, match="not a results file") as caught:
        sweep(offline, "x", [{"body.a": 1}], reason="r", results=path, progress=False)
    assert caught.value.code == "BAD_RESULTS_FILE" and "another results= path" in (caught.value.hint or "")
    assert path.read_text() == text


def test_results_naming_a_folder_is_refused_in_words(tmp_path: Path, offline: Platform) -> None:
    # results="out/" raised a bare IsADirectoryError once the batch began (found by fuzzing).
    with pytest.raises(ValidationError, match="is a folder, not a file") as caught:
        sweep(offline, "x", [{"body.a": 1}], reason="r", results=tmp_path, progress=False)
    assert caught.value.code == "BAD_RESULTS_FILE" and "results.jsonl" in (caught.value.hint or "")


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    # Cut exactly before the newline: a whole record, not a torn one; cutting it off lost it.
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(_started("a", "replay-1")) + "\n\n" + json.dumps(_started("b", "replay-2")))
    results = batch._ResultsFile(path, "sweep")
    assert results.started == {"a": "replay-1", "b": "replay-2"} and results.torn == 0
    results.open()
    results.add_row(_row(0, key="a"))
    results.close()
    again = batch._ResultsFile(path, "sweep")
    assert list(again.rows) == ["a"] and again.started == {"b": "replay-2"}


def test_arguments_are_checked_before_anything_runs(offline: Platform) -> None:
    platform = offline
    with pytest.raises(ValidationError, match="needs a reason"):
        sweep(platform, "x", [{"body.a": 1}], reason=" ")
    with pytest.raises(ValidationError, match="concurrency"):
        regression(platform, ["x"], "staging", reason="r", concurrency=0)
    with pytest.raises(ValidationError, match="must be a dict"):
        sweep(platform, "x", ["body.a=1"], reason="r")  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="fixed column"):
        sweep(platform, "x", [{"body.a": 1}], reason="r", outputs={"verdict": "body:$.v"})
    with pytest.raises(ValidationError, match="no variants"):
        sweep(platform, "x", [], reason="r")
    # NaN (pandas' missing value) from a frame column, in a grid or a list: refused by path.
    for variants in (
        {"body.lines[0].qty": list(pd.Series([1.0, np.nan]))},
        {"body.lines[0].qty": pd.Series([1.0, np.nan])},
        [{"headers.channel": float("inf")}],
    ):
        with pytest.raises(ValidationError, match="is not a JSON number .* use None") as caught:
            sweep(platform, "x", variants, reason="r")  # type: ignore[arg-type]
        assert caught.value.code == "BAD_VARIANT"
    # A datetime64 from a frame column, in nanoseconds: tolist() made it an int of nanoseconds,
    # which was sent as the value.
    for variants in (
        [{"body.orderedAt": np.datetime64("2026-01-01T00:00:00.000000000")}],
        {"body.orderedAt": pd.Series(pd.to_datetime(["2026-01-01"])).to_numpy()},
    ):
        with pytest.raises(ValidationError, match="is not a JSON value") as caught:
            sweep(platform, "x", variants, reason="r")  # type: ignore[arg-type]
        assert caught.value.code == "BAD_VARIANT"


@pytest.mark.parametrize(
    ("call", "code", "words"),
    [
        # grid({}) was one empty variant: a sweep of {} ran one unmodified replay (fuzzing finding).
        (lambda p: sweep(p, "x", {}, reason="r"), "BAD_VARIANT", "no variants to sweep"),
        # AttributeError / TypeError before.
        (lambda p: grid([{"body.a": [1]}]), "BAD_VARIANT", "a grid is a dict of input paths"),
        (lambda p: grid(None), "BAD_VARIANT", "not NoneType"),
        (lambda p: sweep(p, "x", None, reason="r"), "BAD_VARIANT", "variants must be a list of dicts"),
        (
            lambda p: sweep(p, "x", [{"body.a": 1}], reason="r", outputs={"x": 5}),
            "VALIDATION",
            "neither a path",
        ),
        (lambda p: sweep(p, "x", [{"body.a": 1}], reason="r", outputs=["body:$.x"]), "VALIDATION", "a dict"),
        # A declared output type that is none (a string, polars' Object), or a tuple of three.
        (
            lambda p: sweep(p, "x", [{"body.a": 1}], reason="r", outputs={"x": ("body:$.x", "float")}),
            "BAD_OUTPUT_TYPE",
            "'float' is not a column type",
        ),
        (
            lambda p: regression(p, ["x"], "staging", reason="r", outputs={"x": ("body:$.x", pl.Object)}),
            "BAD_OUTPUT_TYPE",
            "is not a column type",
        ),
        (
            lambda p: sweep(p, "x", [{"body.a": 1}], reason="r", outputs={"x": ("body:$.x", pl.Int64, 1)}),
            "BAD_OUTPUT_TYPE",
            "is not (path or function, type)",
        ),
        (
            lambda p: sweep(p, "x", [{"body.a": 1}], reason="r", outputs={"x": (5, pl.Int64)}),
            "VALIDATION",
            "neither a path",
        ),
        (lambda p: regression(p, None, "staging", reason="r"), "BAD_SOURCE", "cannot replay None"),
        (lambda p: regression(p, 5, "staging", reason="r"), "BAD_SOURCE", "cannot replay 5"),
        # A whole frame: the hint said "or the frame itself", which sweep refuses (analyst walk).
        (
            lambda p: sweep(p, pl.DataFrame({"exchange_id": ["x"]}), [{"body.a": 1}], reason="r"),
            "BAD_SOURCE",
            "not a DataFrame of 1 row — pass one row of the frame: frame.iloc[0]",
        ),
        # A MoatError without a hint before.
        (lambda p: sweep(p, "x", [{"body.a": 1}], reason="r", concurrency=0), "VALIDATION", "concurrency"),
        (lambda p: regression(p, ["x"], "staging", reason="r", concurrency=1.5), "VALIDATION", "concurrency"),
        # Above the most the sandbox lets one user read at once (ServerConfig.max_streams).
        (lambda p: regression(p, ["x"], "staging", reason="r", concurrency=65), "VALIDATION", "from 1 to 64"),
    ],
)
def test_wrong_arguments_are_refused_with_a_code_and_a_hint(
    call: Callable[[Platform], Any], code: str, words: str, offline: Platform
) -> None:
    with pytest.raises(ValidationError, match=re.escape(words)) as caught:
        call(offline)
    assert caught.value.code == code and caught.value.hint


# --------------------------------------------------------------------------- the sandbox


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from moat_nb.sandbox import start

    handle = start(data=tmp_path_factory.mktemp("batch-sandbox"), per_env=PER_ENV, seed=SEED)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def admin(sandbox: Any) -> Iterator[Platform]:
    p = connect(sandbox.url, username="admin", password="admin")
    yield p
    p.close()


@pytest.fixture(scope="module")
def engine() -> Any:
    """The orders app's route engine in this process: the oracle."""
    from moat_nb.sandbox.apps.orders import APP
    from moat_nb.sandbox.camel import RouteSet

    routes = {
        v: RouteSet.load(APP.versions[v], APP.beans, endpoints=APP.endpoints, version=v) for v in ("v1", "v2")
    }

    def run(version: str, payload: Payload) -> Execution:
        return routes[version].run(APP.entry_route, payload, capture="ROUTE")

    return run


def _total(execution: Execution) -> Any:
    try:
        return json.loads(execution.output_body or "").get("total")
    except ValueError:
        return None


def _replays(platform: Platform, reason: str) -> list[dict[str, Any]]:
    return [r for r in platform.replays(limit=None) if r.get("reason") == reason]


@pytest.fixture(scope="module")
def prod(admin: Platform) -> pd.DataFrame:
    return admin.executions(environment="prod", is_replay=False).to_pandas()


@pytest.fixture(scope="module")
def full_regression(admin: Platform, prod: pd.DataFrame) -> BatchResult:
    return regression(admin, prod, "staging", reason="batch test: prod v1 on staging v2", progress=False)


def test_regression_prod_v1_on_staging_v2(
    admin: Platform, prod: pd.DataFrame, full_regression: BatchResult, engine: Any
) -> None:
    result = full_regression
    frame = result.to_pandas()
    assert result.complete and len(frame) == len(prod) == PER_ENV
    assert frame["source_exchange_id"].tolist() == prod["exchange_id"].tolist()  # input order
    # The oracle: v2 run here on each recorded start payload, compared with what v1 recorded.
    for row in frame.itertuples():
        original = admin.execution(row.source_execution_id)
        v2 = engine("v2", original.start_payload)
        changed = (v2.status, _total(v2)) != (original.status, _total(original))
        assert row.verdict == ("CHANGED" if changed else "SAME"), row.source_exchange_id
        assert row.replay_status == "COMPLETED" and row.target_environment == "staging"
        assert row.result_status == original.status and row.original_status == original.status
        assert (row.differences > 0) == changed and row.noise > 0  # timestamps, tracking ids
        if changed:
            assert row.first_divergence in ("order-intake/bulk-discount-rate", "order-intake/(end)")
            assert "result: " in row.summary and "differences" in row.summary
    verdicts = result.verdicts
    assert verdicts["SAME"] >= 3 and verdicts["CHANGED"] >= 3
    # Both prod failures (bad customer / line) fail on v2 for the same reason: SAME.
    failed = frame[frame.original_status == "FAILED"]
    assert len(failed) == 2 and set(failed.verdict) == {"SAME"}
    # The bulk rule change (10 items on v2, 20 on v1) shows where it starts: one more processor.
    bulk = frame[frame.first_divergence == "order-intake/bulk-discount-rate"]
    assert len(bulk) >= 1
    # Calibrated once, for the one route: the app's own timestamp and random id.
    assert list(result.calibration) == ["order-intake@staging"]
    assert {"headers:processedAt", "headers:trackingId", "body:$.trackingId"} <= set(
        result.calibration["order-intake@staging"]
    )
    calibration = _replays(admin, "batch test: prod v1 on staging v2 (noise calibration)")
    assert len(calibration) == 2
    assert len(_replays(admin, "batch test: prod v1 on staging v2")) == PER_ENV
    assert "noise calibrated on order-intake@staging" in result.summary()


def test_without_calibration_noise_makes_everything_changed(
    admin: Platform, prod: pd.DataFrame, full_regression: BatchResult
) -> None:
    same = full_regression.to_pandas().query("verdict == 'SAME' and original_status == 'COMPLETED'")
    sources = prod[prod.exchange_id.isin(same.source_exchange_id)].head(3)
    raw = regression(
        admin, sources, "staging", reason="batch test: no calibration", calibrate=False, progress=False
    )
    assert set(raw.to_pandas().verdict) == {"CHANGED"} and raw.calibration == {}
    paths = {"headers:processedAt", "headers:trackingId", "body:$.trackingId", "body:$.processedAt"}
    ignored = regression(
        admin, sources, "staging", list(paths), reason="batch test: ignore", calibrate=False, progress=False
    )
    assert set(ignored.to_pandas().verdict) == {"SAME"}


def test_errors_become_rows_with_the_message(sandbox: Any, prod: pd.DataFrame) -> None:
    operator = connect(sandbox.url, username="operator", password="operator")
    try:
        sources = [*prod.exchange_id.head(2), "ID-no-such-exchange"]
        result = regression(
            operator,
            sources,
            "staging",
            reason="batch test: operator on prod data",
            progress=False,
            outputs={"total": "body:$.total"},
        )
    finally:
        operator.close()
    frame = result.to_pandas()
    assert frame.verdict.tolist() == ["ERROR"] * 3
    # The output asked for is a column though no row has a value (regression_replay.ipynb read
    # frame["total"] and died of KeyError 'total' for a user without replay:prod), and NaN
    # subtracts as a number does.
    assert frame["total"].isna().all() and (frame["total"] - 1.0).isna().all()
    assert frame.error_code.tolist()[:2] == ["FORBIDDEN"] * 2 and frame.replay_id.isna().all()
    assert all("replay:prod" in text for text in frame.error.head(2))
    assert frame.error_code.iloc[2] == "NOT_FOUND" and "ID-no-such-exchange" in frame.error.iloc[2]
    assert "error ×2: [FORBIDDEN]" in result.summary()
    assert "failed" in result.calibration["order-intake@staging"]  # calibration was refused too


@pytest.fixture(scope="module")
def staging_source(admin: Platform) -> Execution:
    hits = admin.executions(environment="staging", is_replay=False, status="COMPLETED").to_pandas()
    for execution_id in hits.execution_id:
        full = admin.execution(execution_id)
        order = json.loads(full.input_body or "")
        if len(order["lines"]) >= 2 and order["lines"][0]["qty"] not in (1, 5, 50):
            return full
    raise AssertionError("no staging order with two lines")


def test_grid_sweep_over_quantities_and_channels(
    admin: Platform, staging_source: Execution, engine: Any
) -> None:
    source = staging_source
    order = json.loads(source.input_body or "")
    qty0, channel0 = order["lines"][0]["qty"], source.input_headers["channel"]
    axes = {"body.lines[0].qty": [1, qty0, 50], "headers.channel": [channel0, "store"]}
    with pytest.warns(UserWarning, match="Authorization holds the platform's redaction marker"):
        result = sweep(
            admin,
            source,
            axes,
            reason="batch test: grid",
            outputs={
                "total": "body:$.total",
                "order_status": "headers.orderStatus",
                "n": lambda e: e.processor_count,
            },
            progress=False,
        )
    frame = result.to_pandas()
    assert len(frame) == 6 and frame["index"].tolist() == list(range(6))
    assert frame["body.lines[0].qty"].tolist() == [1, 1, qty0, qty0, 50, 50]
    assert frame["headers.channel"].tolist() == [channel0, "store"] * 3
    for row, variant in zip(frame.to_dict("records"), grid(axes), strict=True):
        payload = Payload.from_wire({**source.start_payload.to_wire(), **variant_payload(source, variant)})
        expected = engine("v2", payload)
        assert row["total"] == pytest.approx(_total(expected)), variant
        assert row["result_status"] == "COMPLETED" and row["replay_status"] == "COMPLETED"
        assert json.loads(row["inputs"]) == variant and row["n"] > 10
    totals = frame.drop_duplicates("body.lines[0].qty")["total"].tolist()
    assert len(set(totals)) == 3  # three quantities, three totals
    by = {(r["body.lines[0].qty"], r["headers.channel"]): r for r in frame.to_dict("records")}
    base = by[(qty0, channel0)]  # the unmodified payload: nothing comes from the input
    assert base["differences"] == base["route_differences"]
    # The channel is carried through unchanged: input differences only, the route is the same.
    store = by[(qty0, "store")]
    assert store["route_differences"] == base["route_differences"] < store["differences"]
    # A quantity change is first seen where the route recomputes the quantity.
    for qty in (1, 50):
        row = by[(qty, channel0)]
        assert row["verdict"] == "CHANGED" and row["first_divergence"] == "order-intake/validate-order"
        assert row["route_differences"] > base["route_differences"]
        assert by[(qty, "store")]["differences"] > row["differences"]
    assert result.calibration and "sweep: 6 of 6 rows" in result.summary()


def test_the_redacted_header_warning_points_at_the_users_call(
    admin: Platform, staging_source: Execution
) -> None:
    # It pointed at a line inside batch.py (stacklevel=2 from a coroutine run on an event loop,
    # and in a notebook on a worker thread): the user could not tell which call it was about.
    kw: dict[str, Any] = {"reason": "batch test: warning location", "progress": False, "calibrate": False}
    variants = [{"headers.channel": "store"}]

    def seen(caught: Any) -> list[warnings.WarningMessage]:
        return [w for w in caught if "redaction marker" in str(w.message)]

    with pytest.warns(UserWarning, match="redaction marker") as caught:
        sweep(admin, staging_source, variants, **kw)  # no running loop: asyncio.run, this thread
    assert [w.filename for w in seen(caught)] == [__file__]

    async def cell() -> None:  # a notebook cell: the sync call runs the batch on a worker thread
        sweep(admin, staging_source, variants, **kw)
        await asweep(admin, staging_source, variants, **kw)

    with pytest.warns(UserWarning, match="redaction marker") as caught:
        asyncio.run(cell())
    assert [w.filename for w in seen(caught)] == [__file__, __file__]
    assert len({w.lineno for w in seen(caught)}) == 2  # each at its own call


@pytest.mark.filterwarnings("ignore:variants edit the headers")
def test_a_sweep_over_long_ids_from_an_array_runs_and_resumes(
    admin: Platform, staging_source: Execution, tmp_path: Path
) -> None:
    # A Java long id beyond 2**53 is a legitimate value (the platform takes it), and a numpy
    # array is a grid axis; neither may stop the sweep before it starts (review finding).
    path = tmp_path / "long.jsonl"
    ids = np.array([2**60, 2**60 + 1], dtype=np.int64)
    kw: dict[str, Any] = dict(reason="batch test: long ids", results=path, progress=False, calibrate=False)
    result = sweep(admin, staging_source, {"body.customerRef": ids}, **kw)
    assert result.complete and len(result) == 2 and result.verdicts["ERROR"] == 0
    assert result.to_pandas()["body.customerRef"].tolist() == [2**60, 2**60 + 1]
    again = sweep(admin, staging_source, {"body.customerRef": ids}, **kw)
    assert again.loaded == 2 and len(again) == 2  # both keyed, both found: nothing run twice


def test_numpy_values_in_listed_variants_are_the_numbers_they_hold(
    admin: Platform, staging_source: Execution, tmp_path: Path
) -> None:
    # [{"qty": q} for q in np.arange(1, 3)]: the replays got the ints, but the frame's input
    # column and ``inputs`` said the strings "1" and "2", and the rows were keyed over those
    # strings, so the same sweep written with Python ints did not resume them: it ran again.
    path = tmp_path / "numpy.jsonl"
    kw: dict[str, Any] = dict(
        reason="batch test: numpy variants", results=path, progress=False, calibrate=False
    )
    result = sweep(admin, staging_source, [{"body.lines[0].qty": q} for q in np.arange(1, 3)], **kw)
    frame = result.to_pandas()
    assert str(frame["body.lines[0].qty"].dtype) == "Int64" and frame["body.lines[0].qty"].tolist() == [1, 2]
    assert [json.loads(text) for text in frame["inputs"]] == [
        {"body.lines[0].qty": 1},
        {"body.lines[0].qty": 2},
    ]
    again = sweep(admin, staging_source, [{"body.lines[0].qty": 1}, {"body.lines[0].qty": 2}], **kw)
    assert again.loaded == 2 and len(_replays(admin, "batch test: numpy variants")) == 2


def test_an_int_beyond_64_bits_is_a_frame_column_of_its_digits(
    admin: Platform, staging_source: Execution
) -> None:
    # The platform replays a variant with 2**64 (a JSON number), but to_pandas() / to_polars()
    # (and the result's display in a notebook) failed with "OverflowError: Python int too large
    # to convert to C long".
    kw: dict[str, Any] = dict(reason="batch test: wide ints", progress=False, calibrate=False)
    result = sweep(admin, staging_source, {"body.customerRef": [2**64, 7]}, **kw)
    assert result.verdicts["ERROR"] == 0
    assert result.to_pandas()["body.customerRef"].tolist() == [str(2**64), "7"]
    assert result.to_polars()["body.customerRef"].to_list() == [str(2**64), "7"]
    assert "18446744073709551616" in result._repr_html_()


@pytest.mark.filterwarnings("ignore:variants edit the headers")
def test_list_sweep_failed_and_refused_variants(admin: Platform, staging_source: Execution) -> None:
    variants = [
        {"body.lines[0].qty": -1},  # the route refuses it: FAILED (the original did not fail)
        {"properties.tenant": "acme-uk", "headers.channel": "store"},
        {"headers.CamelHttpUri": "http://elsewhere.example"},  # a Camel control header: refused
        {"body.lines[0].qty": -1},  # the same variant twice runs twice
    ]
    result = sweep(admin, staging_source.exchange_id, variants, reason="batch test: list", progress=False)
    rows = result.rows
    assert [r["verdict"] for r in rows] == ["FAILED", "CHANGED", "ERROR", "FAILED"]
    assert (
        rows[0]["result_status"] == "FAILED" and rows[0]["first_divergence"] == "order-intake/validate-order"
    )
    assert rows[0]["key"] != rows[3]["key"] and rows[3]["key"].endswith("#2")
    assert rows[2]["error_code"] == "CONTROL_HEADER" and rows[2]["replay_id"] is None
    # Default outputs: the top-level scalars of the result body.
    assert {"orderId", "status", "total"} <= set(rows[1]["outputs"])
    assert rows[0]["outputs"] == {} or "total" not in rows[0]["outputs"]
    frame = result.to_polars()
    assert frame["properties.tenant"].to_list() == [None, "acme-uk", None, None]


class _Counting:
    """An AsyncPlatform that counts the replays in flight: from the request until their trace
    has been read to the end (observation only; every call goes to the real platform)."""

    def __init__(self, platform: AsyncPlatform) -> None:
        self.platform = platform
        self.now = 0
        self.max = 0
        self.replays = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.platform, name)

    def _enter(self) -> None:
        self.now += 1
        self.replays += 1
        self.max = max(self.max, self.now)

    async def replay(self, *args: Any, **kwargs: Any) -> Any:
        self._enter()
        try:
            return _CountingRun(await self.platform.replay(*args, **kwargs), self)
        except BaseException:
            self.now -= 1
            raise


class _CountingRun:
    def __init__(self, run: Any, owner: _Counting) -> None:
        self.run, self.owner, self.open = run, owner, True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.run, name)

    def __await__(self) -> Any:
        return self.run.__await__()

    async def aevents(self) -> Any:
        try:
            async for event in self.run.aevents():
                yield event
        finally:
            if self.open:
                self.open = False
                self.owner.now -= 1


def _max_overlap(replays: list[dict[str, Any]]) -> int:
    """The most replays the server had between request and finish at one instant."""
    marks = []
    for r in replays:
        marks.append((datetime.fromisoformat(r["requestedAt"]), 1))
        marks.append((datetime.fromisoformat(r["finishedAt"]), -1))
    now = peak = 0
    for _, step in sorted(marks):  # at equal times a finish (-1) sorts before a start
        now += step
        peak = max(peak, now)
    return peak


def test_a_replays_exchange_id_is_a_source_as_it_is_for_the_platform(
    admin: Platform, staging_source: Execution
) -> None:
    """The platform replays a replay's own exchange (Store.replay_source_id); the batch looked
    among recorded exchanges only, so that id was a NOT_FOUND row (fuzzing finding)."""
    replayed = admin.replay(staging_source, reason="batch test: a replay to replay").wait(timeout=60)
    assert replayed.is_replay and replayed.exchange_id != staging_source.exchange_id
    result = regression(
        admin,
        [replayed.exchange_id],
        "staging",
        reason="batch test: replay of a replay",
        progress=False,
        calibrate=False,
    )
    row = result.rows[0]
    assert row["verdict"] in ("SAME", "CHANGED"), row["error"]
    assert row["source_execution_id"] == replayed.execution_id and row["replay_status"] == "COMPLETED"


def test_a_source_id_finds_the_recorded_exchange_before_a_replay_with_that_id() -> None:
    """Both may hold an exchange id: the recorded one is the source (as the platform picks it),
    the newest replay execution only when there is none."""

    @dataclass
    class Hit:
        execution_id: str
        route_id: str = "r"
        status: str = "COMPLETED"
        environment: str = "dev"

    class Searches:
        def __init__(self, found: dict[bool, list[Hit]]) -> None:
            self.found = found
            self.asked: list[dict[str, Any]] = []

        async def executions(self, **filters: Any) -> Any:
            self.asked.append(filters)
            for hit in self.found.get(filters["is_replay"], [])[: filters["limit"]]:
                yield hit

    run = batch._Batch(
        "regression", None, **batch._common("r", None, 1, None, False, None, False, None, True)
    )

    def resolve(found: dict[bool, list[Hit]]) -> tuple[str | None, list[dict[str, Any]]]:
        ap, source = Searches(found), batch._Source("x-1")
        asyncio.run(run._resolve(ap, source))
        return source.execution_id, ap.asked

    assert resolve({False: [Hit("recorded")], True: [Hit("replayed")]})[0] == "recorded"
    found, asked = resolve({True: [Hit("replayed")]})
    assert found == "replayed" and asked[1]["sort"] == "start_time:desc"  # the newest replay
    with pytest.raises(NotFound, match="no recorded exchange 'x-1'"):
        resolve({})


def test_regression_takes_one_frame_row_as_one_source(admin: Platform, prod: pd.DataFrame) -> None:
    # README: a frame row (frame.iloc[0]) is a source; it was iterated cell by cell (review finding).
    row = prod.iloc[0]
    result = regression(admin, row, "staging", reason="batch test: a row", progress=False, calibrate=False)
    assert len(result) == 1 and result.rows[0]["source_exchange_id"] == row.exchange_id
    # A column of exchange ids is still a list of sources.
    assert [s.exchange_id for s in batch._sources(prod.head(2)["exchange_id"])] == prod.head(
        2
    ).exchange_id.tolist()


@pytest.mark.filterwarnings("ignore:variants edit the headers")
def test_resume_reuses_the_noise_calibration_in_the_results_file(
    admin: Platform, staging_source: Execution, tmp_path: Path
) -> None:
    # Calibration replays the source twice; a resume did it again every time (review finding).
    reason = "batch test: calibration kept"
    path = tmp_path / "calibrated.jsonl"
    axes = {"body.lines[0].qty": [2, 3]}

    def replays() -> int:
        return len(_replays(admin, reason)) + len(_replays(admin, f"{reason} (noise calibration)"))

    first = sweep(admin, staging_source, axes, reason=reason, results=path, progress=False)
    assert first.complete and replays() == 4 and first.calibration  # 2 rows, 2 calibration runs
    # As if stopped while the last row was in flight: its replay was requested, its row not written.
    lines = path.read_text().splitlines(keepends=True)
    last_row = max(i for i, line in enumerate(lines) if json.loads(line)["type"] == "row")
    path.write_text("".join(line for i, line in enumerate(lines) if i != last_row))
    resumed = sweep(admin, staging_source, axes, reason=reason, results=path, progress=False)
    assert resumed.complete and resumed.loaded == 1 and len(resumed) == 2
    assert replays() == 4  # the row's replay followed, the calibration read back: nothing new
    assert resumed.calibration == first.calibration
    assert {r["key"]: r["verdict"] for r in resumed.rows} == {r["key"]: r["verdict"] for r in first.rows}
    # Resumed with calibrate=False: the kept rules are neither applied nor reported as applied.
    path.write_text("".join(line for i, line in enumerate(lines) if i != last_row))
    plain = sweep(admin, staging_source, axes, reason=reason, results=path, progress=False, calibrate=False)
    assert plain.complete and not plain.calibration


def test_an_output_asked_for_on_resume_is_read_for_the_rows_already_run(
    admin: Platform, prod: pd.DataFrame, engine: Any, tmp_path: Path
) -> None:
    # The rows came back from the results file without the output the resumed call asks for:
    # the "total" column was NaN for every row, though each replay had a total.
    path, reason = tmp_path / "runs.jsonl", "batch test: output on resume"
    sources = prod[prod.status == "COMPLETED"].head(3)
    regression(admin, sources, "staging", reason=reason, results=path, progress=False)
    asked = {"total": "body:$.total"}
    resumed = regression(
        admin, sources, "staging", reason=reason, results=path, progress=False, outputs=asked
    )
    assert resumed.loaded == 3 and len(_replays(admin, reason)) == 3  # nothing replayed again
    expected = [_total(engine("v2", admin.execution(e).start_payload)) for e in sources.execution_id]
    assert resumed.to_pandas()["total"].tolist() == pytest.approx(expected)
    # Written back: the next resume reads them from the file.
    again = batch._ResultsFile(path, "regression")
    assert sorted(r["outputs"]["total"] for r in again.rows.values()) == pytest.approx(sorted(expected))


def test_an_output_redefined_on_resume_is_read_again_with_its_new_definition(
    admin: Platform, prod: pd.DataFrame, engine: Any, tmp_path: Path
) -> None:
    # The same name with another path (or function) on resume kept the value read with the old
    # definition, with no word: "total" stayed the body's total after it was asked as the status.
    path, reason = tmp_path / "runs.jsonl", "batch test: output redefined on resume"
    sources = prod[prod.status == "COMPLETED"].head(3)
    kw: dict[str, Any] = dict(reason=reason, results=path, progress=False, calibrate=False)
    regression(admin, sources, "staging", outputs={"total": "body:$.total"}, **kw)
    replays = [engine("v2", admin.execution(e).start_payload) for e in sources.execution_id]

    def status(e: Execution) -> Any:
        return json.loads(e.output_body or "").get("status")

    resumed = regression(admin, sources, "staging", outputs={"total": "body:$.status"}, **kw)
    assert resumed.loaded == 3 and len(_replays(admin, reason)) == 3  # read, not replayed again
    assert resumed.to_pandas()["total"].tolist() == [status(e) for e in replays]
    # The file records what each value was read as: the next resume with it reads nothing again.
    again = batch._ResultsFile(path, "regression")
    assert {json.dumps(r["output_definitions"]) for r in again.rows.values()} == {
        '{"total": "body:$.status"}'
    }
    # A function edited in the notebook is a new definition too.
    first = regression(admin, sources, "staging", outputs={"n": lambda e: 1}, **kw)
    edited = regression(admin, sources, "staging", outputs={"n": lambda e: 2}, **kw)
    assert first.to_pandas()["n"].tolist() == [1, 1, 1] and edited.to_pandas()["n"].tolist() == [2, 2, 2]
    assert len(_replays(admin, reason)) == 3


def test_an_output_dropped_on_resume_is_not_a_column_of_the_resumed_frame(
    admin: Platform, prod: pd.DataFrame, staging_source: Execution, tmp_path: Path
) -> None:
    # Resumed without an output defined before, the frame kept it as a column: the loaded rows'
    # values, missing in every row run now. A frame has the outputs asked for, as in one go.
    path, reason = tmp_path / "runs.jsonl", "batch test: output dropped on resume"
    sources = prod[prod.status == "COMPLETED"].head(3)
    kw: dict[str, Any] = dict(reason=reason, results=path, progress=False, calibrate=False)
    both = {"total": "body:$.total", "status": "body:$.status"}
    regression(admin, sources.head(2), "staging", outputs=both, **kw)
    resumed = regression(admin, sources, "staging", outputs={"total": "body:$.total"}, **kw)
    assert resumed.loaded == 2 and len(_replays(admin, reason)) == 3  # the third ran, none again
    fixed = [name for name, _, _ in COLUMNS]
    assert list(resumed.to_pandas().columns) == [*fixed, "total"]
    assert resumed.to_polars().columns == [*fixed, "total"] and resumed.to_pandas()["total"].notna().all()
    assert all(set(r["outputs"]) == set(r["output_definitions"]) == {"total"} for r in resumed.rows)
    assert list(regression(admin, sources, "staging", **kw).to_pandas().columns) == fixed  # none asked
    # Asked for again: read back (the file kept the values), nothing replayed.
    again = regression(admin, sources.head(2), "staging", outputs=both, **kw)
    assert again.to_pandas()["status"].notna().all() and len(_replays(admin, reason)) == 3
    # A sweep resumed with the default outputs reads those, not the explicit ones of before.
    sweep_kw: dict[str, Any] = dict(kw, reason=f"{reason} (sweep)", results=tmp_path / "sweep.jsonl")
    axes = {"body.lines[0].qty": [2, 3]}
    sweep(admin, staging_source, axes, outputs={"n": lambda e: 1}, **sweep_kw)
    default = sweep(admin, staging_source, axes, **sweep_kw)
    assert default.loaded == 2 and len(_replays(admin, f"{reason} (sweep)")) == 2
    frame = default.to_pandas()
    assert "n" not in frame.columns and {"orderId", "status", "total"} <= set(frame.columns)
    assert frame["total"].notna().all()


@pytest.mark.slow
def test_a_notebook_run_by_papermill_saves_the_bars_final_state(sandbox: Any, tmp_path: Path) -> None:
    # The bar is a widget: its state lives in the front end, and the saved notebook (papermill,
    # nbconvert) kept the text it was first shown with, "0%| | 0/2", above a finished batch.
    # (Without calibration both rows are CHANGED: their timestamps differ.)
    import nbformat

    from moat_nb import report

    setup = (
        "import moat_nb\nfrom moat_nb import batch\nplatform = moat_nb.connect()\n"
        'sources = platform.executions(environment="prod", status="COMPLETED", is_replay=False, '
        "limit=2).to_pandas()"
    )
    kw = 'reason="batch test: bar in a saved notebook", calibrate=False'
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(setup),
        nbformat.v4.new_code_cell(f'result = batch.regression(platform, sources, "staging", {kw})'),
        nbformat.v4.new_code_cell(f'result = await batch.aregression(platform, sources, "staging", {kw})'),
    ]
    nbformat.write(nb, tmp_path / "bar.ipynb")
    env = {"MOAT_URL": sandbox.url, "MOAT_USER": "admin", "MOAT_PASSWORD": "admin"}
    done = report.run_notebook(tmp_path / "bar.ipynb", tmp_path / "out.ipynb", env=env, cwd=tmp_path)
    for cell in done.cells[1:]:  # the sync call (its batch on a thread of its own), the coroutine
        bars = [o["data"]["text/plain"] for o in cell.outputs if "text/plain" in o.get("data", {})]
        assert len(bars) == 1 and "100%" in bars[0] and "2/2" in bars[0] and "CHANGED=2" in bars[0], bars


def test_an_exchange_given_twice_is_replayed_once(admin: Platform, prod: pd.DataFrame) -> None:
    # Two searches concatenated, or an id pasted twice: the exchange was replayed (and audited)
    # twice and counted twice in the verdicts.
    reason = "batch test: an exchange given twice"
    a, b = prod[prod.status == "COMPLETED"].exchange_id.head(2)
    with pytest.warns(
        UserWarning, match=f"2 of the 4 sources repeat an exchange given before \\(the first: {a}\\)"
    ):
        result = regression(
            admin,
            [a, b, a, prod[prod.exchange_id == b].iloc[0]],
            "staging",
            reason=reason,
            progress=False,
            calibrate=False,
        )
    frame = result.to_pandas()
    assert frame["source_exchange_id"].tolist() == [a, b] and frame["index"].tolist() == [0, 1]
    assert result.total == 2 and sum(result.verdicts.values()) == 2 and len(_replays(admin, reason)) == 2


def test_a_declared_output_type_holds_through_a_real_regression_and_its_resume(
    admin: Platform, prod: pd.DataFrame, tmp_path: Path
) -> None:
    sources = prod[prod.status == "COMPLETED"].exchange_id.head(2).tolist()
    kw: dict[str, Any] = {
        "reason": "batch test: declared output types",
        "progress": False,
        "calibrate": False,
        "results": tmp_path / "runs.jsonl",
    }
    typed = {"total": ("body:$.total", pl.Float64), "refund": ("body:$.refund", pl.Float64)}
    with pytest.warns(UserWarning, match=r"'body:\$\.refund' matches nothing"):  # no order has one
        frame = regression(admin, sources, "staging", outputs=typed, **kw).to_polars()
    assert frame.schema["total"] == frame.schema["refund"] == pl.Float64 and frame["refund"].null_count() == 2
    # Read back from the results file (nothing replayed again): the paths are the definitions.
    plain = {name: path for name, (path, _) in typed.items()}
    untyped = regression(admin, sources, "staging", outputs=plain, **kw)
    assert untyped.loaded == 2 and untyped.to_polars()["total"].to_list() == frame["total"].to_list()
    # Undeclared, "refund" is Null: first in a plain concat it fails; declared, it does not.
    with pytest.raises(pl.exceptions.PolarsError):
        pl.concat([untyped.to_polars(), frame])
    again = regression(admin, sources, "staging", outputs=typed, **kw)
    assert again.loaded == 2 and pl.concat([again.to_polars(), frame]).schema["refund"] == pl.Float64
    assert len(_replays(admin, kw["reason"])) == 2


def test_numpy_scalars_from_output_functions_keep_their_type(
    admin: Platform, prod: pd.DataFrame, tmp_path: Path
) -> None:
    # An output function computed with numpy gives np.int64 / np.bool_: the columns were JSON
    # text of their str() ('"52"', '"True"') and the results file held strings.
    outputs = {
        "processors": lambda e: np.int64(len(e.processors or ())),
        "completed": lambda e: np.bool_(e.status == "COMPLETED"),
        "started": lambda e: np.datetime64(e.start_time.replace(tzinfo=None), "ns"),
    }
    path = tmp_path / "runs.jsonl"
    kw: dict[str, Any] = dict(
        reason="batch test: numpy outputs", calibrate=False, progress=False, outputs=outputs, results=path
    )
    sources = prod[prod.status == "COMPLETED"].head(2)
    for result in (regression(admin, sources, "staging", **kw), regression(admin, sources, "staging", **kw)):
        frame = result.to_pandas()
        assert str(frame["processors"].dtype) == "Int64" and (frame["processors"] > 0).all()
        assert str(frame["completed"].dtype) == "boolean" and frame["completed"].tolist() == [True, True]
        # A datetime64 in nanoseconds is a time written out, not a count of nanoseconds.
        assert str(frame["started"].dtype) == "string" and frame["started"].str.contains("T").all()
    assert result.loaded == 2  # the second read them back from the file


def test_a_polars_lazy_frame_of_an_export_is_a_list_of_sources(
    admin: Platform, prod: pd.DataFrame, tmp_path: Path
) -> None:
    # pl.scan_parquet(export).filter(...) was refused: BAD_SOURCE "cannot replay <LazyFrame ...>".
    export = admin.export({"environment": "prod", "is_replay": False}, tmp_path / "prod.parquet")
    lazy = pl.scan_parquet(export).filter(pl.col("status") == "COMPLETED").head(2)
    result = regression(
        admin, lazy, "staging", reason="batch test: lazy frame", calibrate=False, progress=False
    )
    expected = lazy.collect()
    assert [r["source_exchange_id"] for r in result.rows] == expected["exchange_id"].to_list()
    assert [r["source_execution_id"] for r in result.rows] == expected["execution_id"].to_list()
    assert result.verdicts["ERROR"] == 0
    with pytest.raises(ValidationError, match="no exchange_id column") as refused:
        regression(admin, lazy.select("status"), "staging", reason="batch test: lazy frame", progress=False)
    assert refused.value.code == "BAD_SOURCE"


def test_a_numpy_concurrency_is_the_number_it_holds(admin: Platform, prod: pd.DataFrame) -> None:
    # concurrency=np.int64(2) was refused: "concurrency must be an integer >= 1, not 2".
    sources = prod.exchange_id.head(2)
    result = regression(
        admin, sources, "staging", reason="batch test: numpy concurrency", concurrency=np.int64(2),
        calibrate=False, progress=False,
    )  # fmt: skip
    assert len(result) == 2 and result.verdicts["ERROR"] == 0


def test_a_results_file_in_the_home_folder(
    admin: Platform, prod: pd.DataFrame, home_elsewhere: tuple[Path, Path]
) -> None:
    # results="~/runs.jsonl" wrote to a folder named "~" made in the working directory.
    home, elsewhere = home_elsewhere
    kw: dict[str, Any] = dict(
        reason="batch test: home", calibrate=False, progress=False, results="~/runs.jsonl"
    )
    first = regression(admin, prod.exchange_id.head(1), "staging", **kw)
    assert first.results_path == home / "runs.jsonl" and (home / "runs.jsonl").is_file()
    assert list(elsewhere.iterdir()) == []
    assert regression(admin, prod.exchange_id.head(1), "staging", **kw).loaded == 1


def test_a_malformed_calibration_record_is_calibrated_again(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    good = {"path": "headers:processedAt", "processor": None, "reason": "calibration"}
    records = [
        {"type": "calibration", "kind": "sweep", "key": "r@staging", "rules": [good]},
        {"type": "calibration", "kind": "sweep", "key": "s@staging", "rules": [{"path": 5}]},
        {"type": "calibration", "kind": "sweep", "key": "t@staging", "rules": "headers:x"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = batch._ResultsFile(path, "sweep")
    assert loaded.calibrations == {"r@staging": [good]} and not loaded.rows and not loaded.started


def test_calibrated_rules_keep_their_kinds_through_the_results_file(tmp_path: Path) -> None:
    # Calibration rules say which kinds of difference they cover (a value seen to change is
    # not noise where it goes away); a resumed batch must diff with the same rules, not with
    # rules that lost their kinds and hide a failure going away again.
    from moat_nb.noise import NoiseRule

    rules = [
        NoiseRule(
            path="error:message",
            processor="r/lookup",
            reason="calibration",
            kinds=("changed", "type_changed"),
        ),
        NoiseRule(path="headers:processedAt", reason="calibration"),
    ]
    path = tmp_path / "runs.jsonl"
    written = batch._ResultsFile(path, "sweep")
    written.open()
    written.add_calibration("r@staging", rules)
    written.close()
    loaded = batch._ResultsFile(path, "sweep").calibrations["r@staging"]
    assert [NoiseRule(**r) for r in loaded] == rules
    # A record with kinds that are no diff kinds is calibrated again, as any malformed one.
    bad = {"path": "headers:x", "processor": None, "reason": "c", "kinds": ["sometimes"]}
    path.write_text(
        json.dumps({"type": "calibration", "kind": "sweep", "key": "b@staging", "rules": [bad]}) + "\n"
    )
    assert batch._ResultsFile(path, "sweep").calibrations == {}


def test_concurrency_is_bounded(sandbox: Any, admin: Platform, prod: pd.DataFrame) -> None:
    reason = "batch test: bound"

    async def main() -> tuple[_Counting, BatchResult]:
        async with AsyncPlatform(sandbox.url, username="admin", password="admin") as ap:
            counting = _Counting(ap)
            result = await aregression(
                counting,
                prod.head(9),
                "staging",
                reason=reason,
                concurrency=3,
                calibrate=False,
                progress=False,
            )
            return counting, result

    counting, result = asyncio.run(main())
    assert len(result) == 9 and counting.replays == 9
    assert counting.max == 3 and counting.now == 0  # three at once: never more, and it got there
    server = _replays(admin, reason)
    assert len(server) == 9 and _max_overlap(server) <= 3


def test_cancel_then_resume_runs_each_exchange_once(
    admin: Platform, prod: pd.DataFrame, full_regression: BatchResult, tmp_path: Path
) -> None:
    reason = "batch test: resume"
    path = tmp_path / "runs.jsonl"
    sources = prod.head(10)

    def finished() -> list[dict[str, Any]]:
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        return [x for x in lines if x["type"] == "row"]

    async def interrupted() -> BatchResult:
        task = asyncio.create_task(
            aregression(admin, sources, "staging", reason=reason, concurrency=2, results=path, progress=False)
        )
        while len(finished()) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(BatchCancelled) as stopped:
            await task
        return stopped.value.result

    partial = asyncio.run(interrupted())
    assert not partial.complete and 3 <= len(partial) < 10
    on_file = finished()
    assert sorted(r["key"] for r in on_file) == sorted(r["key"] for r in partial.rows)  # the finished rows
    assert "run again with the same results= file" in partial.summary()

    resumed = regression(admin, sources, "staging", reason=reason, results=path, progress=False)
    assert resumed.complete and resumed.loaded == len(partial) and len(resumed) == 10
    assert len(_replays(admin, reason)) == 10  # in-flight replays were followed, not run again
    one_run = {r["key"]: r["verdict"] for r in full_regression.rows}
    assert {r["key"]: r["verdict"] for r in resumed.rows} == {
        k: one_run[k] for k in (r["key"] for r in resumed.rows)
    }
    assert len(finished()) == 10
    again = regression(admin, sources, "staging", reason=reason, results=path, progress=False)
    assert again.loaded == 10 and len(_replays(admin, reason)) == 10  # nothing left to run


def _ctrl_c_after_first_row(path: Path) -> None:
    """Press Ctrl-C (SIGINT to this process) once the results file has a finished row."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists() and '"type": "row"' in path.read_text():
            signal.raise_signal(signal.SIGINT)
            return
        time.sleep(0.01)


def _interrupted_on_a_running_loop(cell: Any) -> BatchInterrupted:
    """Run ``cell`` (a coroutine calling a sync batch function) on a loop of its own, as a
    Jupyter kernel runs a cell, and return the BatchInterrupted it must raise."""
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(BatchInterrupted) as stopped:
            loop.run_until_complete(cell)
    finally:
        loop.close()
    return stopped.value


class _StillFinishingARow:
    """A batch (what _run_sync drives) that is cancelled while a row is still finishing: the
    row lands 0.3 s after the cancel, and an interrupt must wait for it."""

    kind = "regression"

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.started = threading.Event()

    def make_bar(self) -> None:
        pass

    def _show_final_bar(self) -> None:
        pass

    async def run(self) -> BatchResult:
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)
            self.rows.append({"key": "late", "verdict": "SAME"})
            raise
        return self.result()

    def result(self) -> BatchResult:
        return BatchResult(self.kind, list(self.rows), total=2)


def test_an_interrupt_waits_for_the_worker_thread_to_stop() -> None:
    # On CPython 3.11 Ctrl-C inside Thread.join() leaves a running thread marked stopped; the
    # runner must not read the result before the worker has really ended.
    fake = _StillFinishingARow()

    def press() -> None:
        fake.started.wait(10)
        time.sleep(0.2)
        signal.raise_signal(signal.SIGINT)

    async def cell() -> Any:
        return batch._run_sync(fake)  # type: ignore[arg-type]

    threading.Thread(target=press, daemon=True).start()
    stopped = _interrupted_on_a_running_loop(cell())
    assert [r["key"] for r in stopped.result.rows] == ["late"]


def test_ctrl_c_raises_with_the_finished_rows(admin: Platform, prod: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "ctrl-c.jsonl"

    threading.Thread(target=_ctrl_c_after_first_row, args=(path,), daemon=True).start()
    with pytest.raises(BatchInterrupted) as stopped:
        regression(
            admin, prod.head(12), "staging", reason="batch test: ctrl-c", concurrency=2, calibrate=False,
            results=path, progress=False,
        )  # fmt: skip
    partial = stopped.value.result
    rows = [json.loads(x) for x in path.read_text().splitlines() if '"type": "row"' in x]
    assert not partial.complete and 1 <= len(partial) < 12 and len(rows) == len(partial)
    assert isinstance(stopped.value, KeyboardInterrupt) and str(path) in str(stopped.value)


@pytest.mark.filterwarnings("ignore:variants edit the headers")
def test_sync_sweep_works_inside_a_running_event_loop(admin: Platform, staging_source: Execution) -> None:
    async def cell() -> tuple[BatchResult, bool]:  # what a Jupyter cell is: code on a running loop
        loop = asyncio.get_running_loop()
        result = sweep(
            admin, staging_source, {"headers.channel": ["a", "b"]}, reason="batch test: jupyter",
            calibrate=False, progress=False,
        )  # fmt: skip
        return result, loop.is_running()

    result, running = asyncio.run(cell())
    assert running and [r["verdict"] for r in result.rows] == ["CHANGED", "CHANGED"]
    assert [r["inputs_values"]["headers.channel"] for r in result.rows] == ["a", "b"]


def test_interrupt_inside_a_running_loop_stops_the_worker_thread(
    admin: Platform, prod: pd.DataFrame, tmp_path: Path
) -> None:
    # A Jupyter kernel runs cells on a loop it drives itself and turns an interrupt into a
    # KeyboardInterrupt in the main thread (no asyncio.run signal handler): do the same here.
    path = tmp_path / "kernel.jsonl"
    threading.Thread(target=_ctrl_c_after_first_row, args=(path,), daemon=True).start()

    async def cell() -> BatchResult:
        return regression(
            admin, prod.head(12), "staging", reason="batch test: kernel interrupt", concurrency=2,
            calibrate=False, results=path, progress=False,
        )  # fmt: skip

    partial = _interrupted_on_a_running_loop(cell()).result
    rows = [json.loads(x) for x in path.read_text().splitlines() if '"type": "row"' in x]
    assert not partial.complete and 1 <= len(partial) < 12
    assert sorted(r["key"] for r in rows) == sorted(r["key"] for r in partial.rows)
    assert not [t for t in threading.enumerate() if t.name == "moat-regression" and t.is_alive()]


def test_operator_sweeping_onto_prod_is_refused_before_any_row(
    sandbox: Any, staging_source: Execution
) -> None:
    # Every row needs replay:prod, which OPERATOR lacks: each was sent, refused and audited
    # (REPLAY_DENIED) and came back ERROR [FORBIDDEN]; now one refusal before any request.
    operator = connect(sandbox.url, username="operator", password="operator")
    denied = len(sandbox.state.store.connection().execute(
        "SELECT 1 FROM audit_events WHERE action = 'REPLAY_DENIED'").fetchall())  # fmt: skip
    try:
        with pytest.raises(PermissionDenied) as info:
            sweep(
                operator, staging_source, [{"body.lines[0].qty": 2}, {"body.lines[0].qty": 3}],
                target_environment="prod", reason="batch test: operator onto prod", progress=False,
            )  # fmt: skip
    finally:
        operator.close()
    assert info.value.code == "FORBIDDEN" and "none of the 2 rows" in str(info.value)
    assert info.value.details["missing"] == ["replay:prod"] and "prod-operator" in (info.value.hint or "")
    assert not info.value.answered  # refused here: nothing was sent
    assert len(sandbox.state.store.connection().execute(
        "SELECT 1 FROM audit_events WHERE action = 'REPLAY_DENIED'").fetchall()) == denied  # fmt: skip


def test_a_batch_with_one_row_that_may_run_runs_and_the_others_are_refused_by_the_platform(
    sandbox: Any, staging_source: Execution
) -> None:
    # Only a batch that can run nothing is refused up front; the platform decides the rest.
    operator = connect(sandbox.url, username="operator", password="operator")
    prod = operator.executions(environment="prod", status="COMPLETED", is_replay=False, limit=1).to_pandas()
    try:
        result = regression(
            operator, [staging_source, *prod.exchange_id], "staging", reason="batch test: mixed",
            progress=False, calibrate=False,
        )  # fmt: skip
    finally:
        operator.close()
    verdicts = {r["source_environment"]: r["verdict"] for r in result.rows}
    assert verdicts["prod"] == "ERROR" and verdicts["staging"] != "ERROR", result.rows


def _denied(sandbox: Any) -> int:
    """How many REPLAY_DENIED events the sandbox's audit log holds."""
    sql = "SELECT 1 FROM audit_events WHERE action = 'REPLAY_DENIED'"
    return len(sandbox.state.store.connection().execute(sql).fetchall())


def test_noise_is_calibrated_on_a_row_the_user_may_replay(sandbox: Any) -> None:
    # An operator's regression of prod rows (refused: replay:prod) and staging rows onto staging:
    # calibration took the route's first COMPLETED row, a prod one, was refused, and the staging
    # rows, replayed on the version that recorded them, came out CHANGED by timestamps alone.
    before = _denied(sandbox)
    operator = connect(sandbox.url, username="operator", password="operator")
    try:
        prod = operator.executions(environment="prod", status="COMPLETED", is_replay=False, limit=2)
        staging = operator.executions(environment="staging", status="COMPLETED", is_replay=False, limit=2)
        sources = pd.concat([prod.to_pandas(), staging.to_pandas()], ignore_index=True)
        result = regression(
            operator, sources, "staging", reason="batch test: calibrate what may run", progress=False
        )
    finally:
        operator.close()
    rules = result.calibration["order-intake@staging"]
    assert isinstance(rules, list) and "headers:processedAt" in rules, rules
    verdicts = [(r["source_environment"], r["verdict"]) for r in result.rows]
    assert verdicts == [("prod", "ERROR")] * 2 + [("staging", "SAME")] * 2, verdicts
    assert _denied(sandbox) == before + 2  # the two prod rows; calibration asked for nothing refused


def test_calibration_asks_for_no_replay_the_user_may_not_run(sandbox: Any) -> None:
    # Completed prod rows the operator may not replay, and one staging row that failed: the
    # calibration was tried on the prod rows (each refused, and audited as denied) and the
    # staging row, which fails on v2 as it did, came out CHANGED by its timestamps.
    before = _denied(sandbox)
    operator = connect(sandbox.url, username="operator", password="operator")
    try:
        prod = operator.executions(environment="prod", status="COMPLETED", is_replay=False, limit=2)
        failed = operator.executions(environment="staging", status="FAILED", is_replay=False, limit=1)
        sources = pd.concat([prod.to_pandas(), failed.to_pandas()], ignore_index=True)
        assert len(sources) == 3
        result = regression(
            operator, sources, "staging", reason="batch test: calibrate on a failure", concurrency=1,
            progress=False,
        )  # fmt: skip
    finally:
        operator.close()
    assert isinstance(result.calibration["order-intake@staging"], list), result.calibration
    assert [r["verdict"] for r in result.rows] == ["ERROR", "ERROR", "SAME"], result.rows
    assert _denied(sandbox) == before + 2  # the two prod rows, nothing more


def test_a_variant_that_does_not_fit_the_original_fails_before_any_replay(
    admin: Platform, staging_source: Execution
) -> None:
    reason = "batch test: bad variant"
    with pytest.raises(ValidationError, match=r"index 9 is outside a list of \d"):
        sweep(
            admin,
            staging_source.exchange_id,
            [{"body.lines[0].qty": 2}, {"body.lines[9].qty": 1}],
            reason=reason,
        )
    assert _replays(admin, reason) == [] and _replays(admin, reason + " (noise calibration)") == []


# --------------------------------------------------------------------------- a platform that dies mid-batch


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_batch_with_no_platform_stops_after_a_few_rows_in_a_row(concurrency: int) -> None:
    """Nothing answers: the batch stops once as many rows in a row as run side by side (3 at
    least) could not reach the platform, and takes no row after that."""
    from moat_nb.client import RetryPolicy
    from moat_nb.errors import BatchStopped

    gone = Platform("http://127.0.0.1:9", token="t", retry=RetryPolicy(attempts=0))
    ids = [f"ID-{i}" for i in range(40)]
    with pytest.raises(BatchStopped) as info:
        regression(gone, ids, "dev", reason="r", concurrency=concurrency, progress=False, calibrate=False)
    gone.close()
    stopped = info.value
    rows = stopped.result.rows
    assert stopped.code == "PLATFORM_UNREACHABLE" and isinstance(stopped, TransportError)
    assert max(3, concurrency) <= len(rows) < 40 and not stopped.result.complete
    assert {r["verdict"] for r in rows} == {"ERROR"} and {r["error_code"] for r in rows} == {"TRANSPORT"}
    assert f"after {len(rows)} of 40 rows" in str(stopped) and "results='runs.jsonl'" in str(stopped)


def _kill_when_in_flight(
    process: Any, results: Path, done: int, in_flight: int
) -> tuple[threading.Thread, list[float]]:
    """A started thread that SIGKILLs ``process`` once the results file holds ``done`` rows and
    ``in_flight`` replays requested but not finished (inside their delay step), and records when."""
    killed: list[float] = []

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = results.read_text() if results.exists() else ""
            records = [json.loads(line) for line in text.splitlines() if line.endswith("}")]
            rows = {r["key"] for r in records if r["type"] == "row"}
            started = sum(r["type"] == "started" and r["key"] not in rows for r in records)
            if len(rows) >= done and started >= in_flight:
                time.sleep(0.2)  # inside the 600 ms delay step, their readers connected
                process.send_signal(signal.SIGKILL)
                killed.append(time.monotonic())
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch)
    thread.start()
    return thread, killed


def test_reach_counts_readers_that_cannot_reconnect_over_its_patience() -> None:
    from moat_nb.batch import _Reach

    reach = _Reach(concurrency=8, patience=15.0)
    refused = ConnectionRefusedError("refused")
    assert not any(reach.dropped(refused, 100.0) for _ in range(8))  # all at once: a restart, maybe
    assert not reach.dropped(refused, 114.9)
    assert reach.dropped(refused, 115.0)  # 10 failed reconnects over 15 s: gone
    assert not reach.dropped(None, 116.0)  # a reader reached its stream: it is back
    assert reach.drops == 0 and not reach.dropped(refused, 200.0) and not reach.dropped(refused, 230.0)
    assert reach.dropped(refused, 231.0)  # 3 drops, the first over 15 s ago
    reach.lost(None)  # a row that got its answer resets the readers' count too
    assert reach.drops == 0 and reach.since is None
    reach.dropped(refused, 300.0)
    reach.lost("TRANSPORT")
    assert reach.drops == 1  # a row that could not reach it does not
    reach.lost("REPLAY_TIMED_OUT")  # a row the platform answered, even with an error, does
    assert reach.drops == 0 and reach.since is None


@pytest.mark.slow
def test_a_batch_whose_readers_lose_the_platform_stops_without_waiting_out_their_back_off(
    tmp_path: Path, sandbox_processes: Any, paced_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker follows a replay's trace when the sandbox is killed: no row ends, so the
    rows' rule never counts, and each reader would retry for ~165 s with the default back-off.
    The readers' failed reconnects stop the batch once they span the patience (2 s here)."""
    import moat_nb.batch as batch_module
    from moat_nb.errors import BatchStopped

    monkeypatch.setattr(batch_module, "_READER_PATIENCE", 2.0)
    first = sandbox_processes.start(tmp_path / "data", paced_app(600), per_env=12)
    p = connect(sandbox_processes.url, username="operator", password="operator")
    assert p.stream_policy is None or p.stream_policy.max_retries >= 8  # the default back-off
    sources = p.executions(environment="dev", limit=12).to_pandas()
    results = tmp_path / "runs.jsonl"
    killer, killed = _kill_when_in_flight(first, results, done=2, in_flight=2)

    with pytest.raises(BatchStopped) as info:
        regression(
            p, sources, "dev", reason="r", results=results, concurrency=2, progress=False, calibrate=False
        )
    stopped_after = time.monotonic() - killed[0]
    killer.join()
    p.close()
    stopped = info.value
    assert stopped.code == "PLATFORM_UNREACHABLE" and "trace readers" in str(stopped)
    assert 2.0 <= stopped_after < 20, stopped_after  # the readers' back-off alone: ~165 s
    assert 2 <= len(stopped.result.rows) < 12
    # The rows in flight were cut off, not recorded as errors; the file keeps their replays.
    started = {r["key"] for r in map(json.loads, results.read_text().splitlines()) if r["type"] == "started"}
    assert started - {r["key"] for r in stopped.result.rows}


@pytest.mark.slow
def test_a_batch_that_loses_its_platform_stops_and_resumes_once_it_is_back(
    tmp_path: Path, sandbox_processes: Any, paced_app: Any
) -> None:
    """The sandbox's process is killed (SIGKILL) a few rows into a regression: the batch stops
    with BatchStopped (PLATFORM_UNREACHABLE) and its partial result instead of spending the
    client's retries on every row left (1.4 s each; a trace reader in flight waits minutes), and
    the same call with the same results file, once the platform is back, finishes every row
    once: those whose replays were in flight follow them, find them ABORTED by the restart,
    and replay anew."""
    from moat_nb.errors import BatchStopped

    app = paced_app(600)
    data = tmp_path / "data"
    first = sandbox_processes.start(data, app, per_env=12)
    p = connect(sandbox_processes.url, username="operator", password="operator")
    # A reader in flight gives up resuming after ~1 s instead of minutes (the default suits one
    # replay a person waits for); the batch's own behaviour is what is under test.
    p.stream_policy = StreamPolicy(max_retries=2, max_delay=0.5)
    sources = p.executions(environment="dev", limit=12).to_pandas()
    assert len(sources) == 12
    results = tmp_path / "runs.jsonl"

    # After 4 rows, while the next replays wait in their 600 ms delay step: they are in flight
    # when the platform dies.
    killer, _ = _kill_when_in_flight(first, results, done=4, in_flight=1)
    run = dict(reason="crash test", results=results, concurrency=2, progress=False, calibrate=False)
    with pytest.raises(BatchStopped) as info:
        regression(p, sources, "dev", **run)
    killer.join()
    stopped = info.value
    assert stopped.code == "PLATFORM_UNREACHABLE" and str(results) in str(stopped)
    partial = stopped.result
    assert not partial.complete and 4 <= len(partial.rows) < 12  # it stopped instead of erring row by row
    cut = [r for r in partial.rows if r["verdict"] == "ERROR"]
    assert len(cut) >= 3 and {r["error_code"] for r in cut} <= {"TRANSPORT", "STREAM_RESUME_FAILED"}
    sandbox_processes.start(data, app, per_env=12)  # back on the same port and data: it aborts
    aborted = [r for r in cut if r["replay_id"] and p.get_replay(r["replay_id"])["status"] == "ABORTED"]
    assert aborted, "no replay was in flight when the platform died"
    # Their replays were requested before the platform went away: the file keeps them as
    # started, the resumed batch follows each one, finds it ABORTED, and replays it anew.
    started = {
        r["key"]: r["replayId"]
        for r in map(json.loads, results.read_text().splitlines())
        if r["type"] == "started"
    }
    assert all(started.get(r["key"]) == r["replay_id"] for r in aborted)

    again = regression(p, sources, "dev", **run)
    assert again.complete and len(again.rows) == 12
    # Every row has its result (none ERROR): CHANGED, as a replay takes the delay branch.
    assert again.verdicts["CHANGED"] == 12, again.summary()
    for row in aborted:
        anew = next(r for r in again.rows if r["key"] == row["key"])
        assert anew["replay_id"] != row["replay_id"] and anew["verdict"] == "CHANGED"
    assert sorted(r["source_exchange_id"] for r in again.rows) == sorted(sources["exchange_id"])
    p.close()


# --------------------------------------------------------------------------- analyst walk (batch-s15)


def test_a_target_environment_without_a_live_agent_is_refused_before_any_row(
    admin: Platform, staging_source: Execution, prod: pd.DataFrame, tmp_path: Path
) -> None:
    # target_environment="stagin" sent every row (and the calibration) to be refused and ended
    # with every row ERROR; now one refusal naming the live environments, before any request,
    # and the results file is neither made nor, on a resume, written to.
    from moat_nb.errors import AgentUnavailable

    reason = "batch test: mistyped target"
    path = tmp_path / "runs.jsonl"
    with pytest.raises(AgentUnavailable) as info:
        sweep(
            admin, staging_source, [{"body.lines[0].qty": 2}, {"body.lines[0].qty": 3}],
            target_environment="stagin", reason=reason, results=path, progress=False,
        )  # fmt: skip
    error = info.value
    assert (
        error.code == "AGENT_UNAVAILABLE" and "'stagin'" in str(error) and "none of the 2 rows" in str(error)
    )
    assert error.details["liveEnvironments"] == ["dev", "prod", "staging"]
    assert error.details["environments"] == ["stagin"] and "dev, prod, staging" in (error.hint or "")
    assert not path.exists()
    assert _replays(admin, reason) == [] and _replays(admin, reason + " (noise calibration)") == []
    # A resume with a mistyped target: the file holds what it held, nothing more.
    sources = prod[prod.status == "COMPLETED"].head(2)
    regression(
        admin, sources.head(1), "staging", reason=reason, results=path, progress=False, calibrate=False
    )
    before = path.read_bytes()
    with pytest.raises(AgentUnavailable, match="none of the 2 rows"):
        regression(admin, sources, "stagin", reason=reason, results=path, progress=False)
    assert path.read_bytes() == before and len(_replays(admin, reason)) == 1


def test_a_resume_under_another_reason_keeps_the_finished_rows_and_says_under_which(
    admin: Platform, staging_source: Execution, tmp_path: Path
) -> None:
    # The finished rows were reused without a word, and the audit log kept the old reason for
    # them: they stay as they are (never replayed twice), and a warning names the earlier reason.
    path = tmp_path / "runs.jsonl"
    first, second = "batch test: reason one", "batch test: reason two"
    sweep(admin, staging_source, {"body.lines[0].qty": [2, 3]}, reason=first, results=path, progress=False)
    with pytest.warns(UserWarning, match=r"2 of the 3 rows .* 2 under 'batch test: reason one'") as caught:
        resumed = sweep(
            admin,
            staging_source,
            {"body.lines[0].qty": [2, 3, 4]},
            reason=second,
            results=path,
            progress=False,
        )
    assert any(w.filename == __file__ for w in caught)  # at the user's call
    assert resumed.loaded == 2 and len(_replays(admin, second)) == 1 and len(_replays(admin, first)) == 2
    assert [r["reason"] for r in resumed.rows] == [first, first, second]
    with warnings.catch_warnings(record=True) as again:  # resumed under the same reason: no word
        warnings.simplefilter("always")
        same = sweep(
            admin, staging_source, {"body.lines[0].qty": [2, 3]}, reason=first, results=path, progress=False
        )
    assert same.loaded == 2 and not [w for w in again if "earlier reason" in str(w.message)]


def test_an_output_path_that_matches_nothing_in_any_row_is_said_once_with_a_near_path(
    admin: Platform, staging_source: Execution
) -> None:
    # outputs={"total": "body:$.totl"} gave an all-null column without a word.
    reason = "batch test: output path matches nothing"
    outputs = {
        "total": "body:$.totl",
        "state": "headers.orderStatuss",
        "ok": "body:$.total",
        "n": "body:$.x[0]",
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sweep(
            admin,
            staging_source,
            {"body.lines[0].qty": [2, 3]},
            reason=reason,
            outputs=outputs,
            progress=False,
        )
    said = [w for w in caught if "matches nothing" in str(w.message)]
    texts = sorted(str(w.message) for w in said)
    assert len(texts) == 3 and all(w.filename == __file__ for w in said)  # once each, at the user's call
    assert texts[0].startswith("output 'n': 'body:$.x[0]' matches nothing") and "did you mean" not in texts[0]
    assert "output 'state': 'headers:orderStatuss'" in texts[1]
    assert "did you mean 'headers:orderStatus'?" in texts[1] and "'headers.orderStatuss' is" in texts[1]
    assert "output 'total': 'body:$.totl'" in texts[2] and "did you mean 'body:$.total'?" in texts[2]
    frame = result.to_pandas()
    assert frame["total"].isna().all() and frame["ok"].notna().all()


def test_a_finished_batch_resumed_shows_its_progress_bar_once(
    admin: Platform, staging_source: Execution, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Resuming a finished sweep printed its 100% bar twice: as it was made, and as it closed.
    path, reason = tmp_path / "runs.jsonl", "batch test: bar once"
    axes = {"body.lines[0].qty": [2, 3]}
    sweep(admin, staging_source, axes, reason=reason, results=path, progress=False, calibrate=False)
    capsys.readouterr()
    resumed = sweep(admin, staging_source, axes, reason=reason, results=path, calibrate=False)
    err = capsys.readouterr().err
    assert resumed.loaded == 2 and err.count("sweep: 100%") == 1 and "2/2" in err, err
    # A batch with rows to run shows its bar as it goes, as before.
    sweep(admin, staging_source, {"body.lines[0].qty": [4]}, reason=reason, results=path, calibrate=False)
    assert "sweep: " in capsys.readouterr().err


def test_the_call_site_of_a_batch_run_as_a_task_is_the_users_not_asyncios() -> None:
    # asyncio.run(asweep(...)) runs the coroutine as a task: the frame above it is the event
    # loop's, and every batch warning pointed at asyncio/events.py.
    async def asweep_like() -> Any:  # as asweep calls _common: the caller is two frames up
        return batch._common("r", None, 1, None, True, None, False, None, True)["caller"]

    line = sys._getframe().f_lineno + 1
    site = asyncio.run(asweep_like())
    assert (site.filename, site.lineno, site.module) == (__file__, line, __name__)
