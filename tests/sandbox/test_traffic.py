"""The traffic generator (moat_nb/sandbox/traffic.py) on the real engine and the orders app:
one seed gives one history byte for byte, about 5 % of exchanges fail, times are spread and
increasing, environments carry their version and capture mode (DESIGN.md section 8), and the
store answers the section 4 filters on that history as a plain Python filter does."""

from __future__ import annotations

import importlib.util
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from moat_nb.errors import RouteError, ValidationError
from moat_nb.model import Chunk, Execution
from moat_nb.sandbox.apps.orders import APP
from moat_nb.sandbox.store import Store
from moat_nb.sandbox.traffic import (
    DEFAULT_START,
    build_history,
    chunk,
    generate,
    instance_id,
    load_routesets,
    plan,
    run,
)


def _sibling(name: str) -> Any:
    # The plain-Python reference of the search semantics lives with the store's tests.
    spec = importlib.util.spec_from_file_location(f"_moat_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference_search: Callable[..., tuple[list[str], int]] = _sibling("test_store").reference_search

PER_ENV = 500
SEED = 11
START = datetime(2026, 2, 2, tzinfo=UTC)
SPAN = timedelta(days=7)


def _full(c: Chunk) -> Execution:
    assert c.execution is not None
    return replace(c.execution, processors=c.processors)


@pytest.fixture(scope="module")
def routesets() -> dict[str, Any]:
    return load_routesets(APP)


@pytest.fixture(scope="module")
def history(routesets: dict[str, Any]) -> list[Chunk]:
    return list(generate(APP, routesets, per_env=PER_ENV, seed=SEED, start=START, span=SPAN))


@pytest.fixture(scope="module")
def timed_store(
    routesets: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Store, float, list[Chunk]]]:
    """The same history generated again and ingested, timed end to end (and kept, to compare)."""
    store = Store(tmp_path_factory.mktemp("traffic") / "moat.db")
    seen: list[Chunk] = []

    def keep(c: Chunk) -> Chunk:
        seen.append(c)
        return c

    t0, cpu0 = time.perf_counter(), time.process_time()
    n = build_history(
        store, APP, routesets, transform=keep, per_env=PER_ENV, seed=SEED, start=START, span=SPAN
    )
    elapsed = time.perf_counter() - t0
    print(f"\nbuild_history: {n} exchanges in {elapsed:.2f} s wall, {time.process_time() - cpu0:.2f} s CPU")
    assert n == len(seen)
    yield store, elapsed, seen
    store.close()


def test_same_seed_same_history_byte_for_byte(
    history: list[Chunk], timed_store: tuple[Store, float, list[Chunk]], routesets: dict[str, Any]
) -> None:
    again = timed_store[2]
    assert again == history  # every field of every record, processors included
    dump = lambda cs: json.dumps([c.to_wire() for c in cs], sort_keys=True)  # noqa: E731
    assert dump(again[::25]) == dump(history[::25])  # and the wire form, byte for byte
    other = list(generate(APP, routesets, per_env=20, seed=SEED + 1, start=START, span=SPAN))
    assert {c.exchange_id for c in other}.isdisjoint({c.exchange_id for c in history})
    assert [c.execution.input_body for c in other] != [c.execution.input_body for c in history[:20]]  # type: ignore[union-attr]


def test_one_final_chunk_per_execution_with_unique_ids(history: list[Chunk]) -> None:
    assert len(history) == 3 * PER_ENV
    assert all(c.final and c.chunk_seq == 0 and c.execution is not None for c in history)
    assert len({c.execution_id for c in history}) == len(history)
    assert len({c.exchange_id for c in history}) == len(history)
    for c in history:
        assert c.execution is not None and c.execution.processors is None
        assert c.processors and all(p.execution_id == c.execution_id for p in c.processors)
        assert c.execution.processor_count == len(c.processors)
        assert c.execution.route_id == APP.entry_route
        assert not c.execution.is_replay and c.replay_id is None


@pytest.mark.parametrize(
    "env, version, capture",
    [("dev", "v2", "PROCESSOR"), ("staging", "v2", "PROCESSOR"), ("prod", "v1", "ROUTE")],
)
def test_environment_labels_version_and_capture(
    history: list[Chunk], env: str, version: str, capture: str
) -> None:
    xs = [c.execution for c in history if c.execution and c.execution.environment == env]
    assert len(xs) == PER_ENV
    for x in xs:
        assert x.route_version == version and x.capture_mode == capture
        assert x.application_id == "orders" and x.instance_id == f"orders-{env}-1" == instance_id(APP, env)
        assert x.input_body and x.input_headers  # the start payload is always there


def test_route_capture_has_no_inner_bodies(history: list[Chunk]) -> None:
    # ROUTE mode (prod) captures bodies only at route entry and exit; PROCESSOR mode at every step.
    def inner_bodies(env: str) -> int:
        return sum(
            1
            for c in history
            if c.execution and c.execution.environment == env
            for p in c.processors
            if p.depth > 0 and (p.input_body is not None or p.output_body is not None)
        )

    assert inner_bodies("prod") == 0
    assert inner_bodies("dev") > PER_ENV


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_failure_ratio_is_about_five_percent(history: list[Chunk], env: str) -> None:
    xs = [c.execution for c in history if c.execution and c.execution.environment == env]
    failed = [x for x in xs if x.status == "FAILED"]
    assert 0.02 <= len(failed) / len(xs) <= 0.10, len(failed)
    assert all(x.status in ("COMPLETED", "FAILED") for x in xs)
    # Failures are real ones, with a reason.
    assert all(x.error_type and x.error_message for x in failed)
    assert len({x.error_type for x in failed}) >= 2


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_times_are_spread_and_increasing(history: list[Chunk], env: str) -> None:
    xs = [c.execution for c in history if c.execution and c.execution.environment == env]
    starts = [x.start_time for x in xs]
    assert all(s is not None for s in starts)
    assert all(a < b for a, b in zip(starts, starts[1:], strict=False))  # type: ignore[operator]
    assert START <= starts[0] < START + SPAN * 0.05  # type: ignore[operator]
    assert START + SPAN * 0.95 < starts[-1] < START + SPAN  # type: ignore[operator]
    # Spread: every day of the week has traffic.
    days = Counter((s - START).days for s in starts)  # type: ignore[operator]
    assert sorted(days) == list(range(7)) and min(days.values()) > PER_ENV / 7 / 2
    for x in xs:
        assert x.end_time is not None and x.end_time >= x.start_time  # type: ignore[operator]
        assert x.duration_ms is not None and x.duration_ms >= 0
    assert len({x.duration_ms for x in xs}) > PER_ENV / 2  # durations vary


def test_plan_is_pure_and_independent_per_exchange() -> None:
    a = list(plan(APP, "dev", per_env=30, seed=5))
    b = list(plan(APP, "dev", per_env=30, seed=5))
    assert [p.payload for p in a] == [p.payload for p in b]
    assert [p.recorded_at for p in a] == [p.recorded_at for p in b]
    assert [p.context.now() for p in a] == [p.context.now() for p in b]
    assert a[0].recorded_at >= DEFAULT_START
    # The i-th input does not depend on how many exchanges are planned.
    c = list(plan(APP, "dev", per_env=10, seed=5))
    assert [p.payload for p in c] == [p.payload for p in a[:10]]
    assert [p.payload for p in plan(APP, "prod", per_env=10, seed=5)] != [p.payload for p in c]


def test_bad_arguments(routesets: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        list(generate(APP, routesets, per_env=1, environments=["qa"]))
    with pytest.raises(ValidationError):
        plan(APP, "dev", per_env=5, span=timedelta(milliseconds=3))  # checked at the call
    with pytest.raises(ValidationError):
        plan(APP, "dev", per_env=1, start=datetime(2026, 1, 1))  # naive
    with pytest.raises(ValidationError):
        plan(APP, "dev", per_env=-1)
    with pytest.raises(RouteError):
        list(generate(APP, {"v2": routesets["v2"]}, per_env=1, environments=["prod"]))


def test_run_and_chunk_compose_to_generate(routesets: dict[str, Any], history: list[Chunk]) -> None:
    first = next(plan(APP, "dev", per_env=PER_ENV, seed=SEED, start=START, span=SPAN))
    assert chunk(run(APP, routesets, first)) == history[0]


# --------------------------------------------------------------------------- the store on a history


def test_ingest_timing_and_counts(
    timed_store: tuple[Store, float, list[Chunk]], history: list[Chunk]
) -> None:
    store, elapsed, chunks = timed_store
    n = len(chunks)
    print(f"\ngenerate + ingest {n} exchanges: {elapsed:.2f} s ({n / elapsed:.0f}/s)")
    assert n == len(history)
    assert store.search(limit=0)[1] == len(history)
    assert elapsed < 60  # a few seconds on an idle core; generous for a shared CI machine
    stats = store.stats()
    assert sum(r["count"] for r in stats) == len(history)
    assert {r["environment"] for r in stats} == {"dev", "staging", "prod"}


def test_stored_history_round_trips(
    timed_store: tuple[Store, float, list[Chunk]], history: list[Chunk]
) -> None:
    store, _, _ = timed_store
    for c in history[:: len(history) // 40]:
        assert store.execution(c.execution_id) == _full(c)


def _filters(history: list[Chunk]) -> list[dict[str, Any]]:
    xs = [_full(c) for c in history]
    failed = next(x for x in xs if x.status == "FAILED")
    some = xs[len(xs) // 3]
    durations = sorted(x.duration_ms for x in xs if x.duration_ms is not None)
    order = json.loads(some.input_body or "{}")
    return [
        {},
        {"environment": "prod"},
        {"environment": ["dev", "staging"], "status": "FAILED"},
        {"application": "orders"},
        {"application": "billing"},
        {"routeId": APP.entry_route},
        {"status": "FAILED"},
        {"status": ["COMPLETED", "RUNNING"]},
        {"timeFrom": START + timedelta(days=2), "timeTo": START + timedelta(days=3)},
        {"timeFrom": some.start_time},
        {"timeTo": some.start_time},
        {"correlationId": some.correlation_id} if some.correlation_id else {"correlationId": "none"},
        {"exchangeId": some.exchange_id},
        {"durationMin": statistics.median(durations)},
        {"durationMax": durations[len(durations) // 10]},
        {"durationMin": durations[10], "durationMax": durations[-10], "environment": "staging"},
        {"isReplay": False},
        {"isReplay": True},
        {"replayId": "rpl-1"},
        {"sourceExchangeId": some.exchange_id},
        {"text": order.get("orderId", "ORD")},
        {"text": order.get("customerId", "C-")},
        {"text": "SKU-900"},
        {"text": (failed.error_message or "")[:12]},
        {"textInErrors": failed.error_type},
        {"textInHeaders": "partner-api"},
        {"textInBody": "partner-api"},
        {"text": "kafka"},
    ]


def test_store_answers_each_filter_like_python(
    timed_store: tuple[Store, float, list[Chunk]], history: list[Chunk]
) -> None:
    store, _, _ = timed_store
    xs = [_full(c) for c in history]
    for filters in _filters(history):
        want = reference_search(xs, limit=1000, **filters)
        hits, total = store.search(limit=1000, **filters)
        assert ([h.execution_id for h in hits], total) == want, filters


def test_paging_over_the_history(timed_store: tuple[Store, float, list[Chunk]], history: list[Chunk]) -> None:
    store, _, _ = timed_store
    xs = [_full(c) for c in history]
    seen: list[str] = []
    for offset in range(0, len(xs) + 1000, 1000):
        hits, total = store.search(offset=offset, limit=1000, sort="durationMs:desc")
        assert total == len(xs)
        seen += [h.execution_id for h in hits]
    assert seen == reference_search(xs, sort="durationMs:desc", limit=len(xs))[0]
    page, total = store.search(environment="prod", offset=490, limit=25)
    assert total == PER_ENV and len(page) == 10
    assert [h.execution_id for h in page] == reference_search(xs, environment="prod", offset=490, limit=25)[0]
