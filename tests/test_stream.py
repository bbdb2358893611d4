"""The replay trace stream (moat_nb/stream.py): the cursor's bookkeeping, and reading real
streams from the sandbox, resumed through a proxy on loopback that cuts connections."""

from __future__ import annotations

import asyncio
import json
import math
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from httpx_sse import EventSource, ServerSentEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from moat_nb.client import Platform, Session
from moat_nb.errors import MoatError, NotFound, TransportError, ValidationError, WaitTimeout
from moat_nb.frames import processors_frame
from moat_nb.stream import ReplayRun, StreamPolicy, TraceCursor, TraceEvent, parse_json

# --------------------------------------------------------------------------- pure: the cursor

payloads = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(st.characters(codec="utf-8", exclude_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
events_lists = st.lists(
    st.tuples(st.sampled_from(["status", "processor", "execution"]), payloads), min_size=1, max_size=12
)


def wire(events: list[tuple[str, Any]], eol: str, *, after: int = 0, pings: int = 0) -> bytes:
    """What the server sends (section 5): retry first, then the events after ``after`` with ids
    1..n, an ``end`` last, comment pings between them; one line ending throughout."""
    parts = [f"retry: 3000{eol}{eol}"]
    allev = [*events, ("end", {"status": "COMPLETED", "resultExecutionId": "x-1"})]
    for i, (name, data) in enumerate(allev, start=1):
        if i <= after:
            continue
        if pings and i % pings == 0:
            parts.append(f": ping - 2026-01-01 00:00:00{eol}{eol}")
        text = json.dumps(data, ensure_ascii=False)  # one line: JSON escapes CR and LF
        parts.append(f"id: {i}{eol}event: {name}{eol}data: {text}{eol}{eol}")
    return "".join(parts).encode("utf-8")


def parse(chunks: list[bytes]) -> Iterator[ServerSentEvent]:
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(chunks))
    return EventSource(response).iter_sse()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


@settings(max_examples=150, deadline=None)
@given(
    events_lists,
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.lists(st.integers(0, 10**6), max_size=30),
    st.integers(0, 3),
)
def test_any_split_of_the_byte_stream_gives_the_same_events(
    events: list[tuple[str, Any]], eol: str, cuts: list[int], pings: int
) -> None:
    data = wire(events, eol, pings=pings)
    cursor = TraceCursor("r")
    got = [e for sse in parse(split(data, cuts)) if (e := cursor.accept(sse)) is not None]
    expected = [TraceEvent(i, name, json.loads(json.dumps(d))) for i, (name, d) in enumerate(events, 1)]
    assert got[:-1] == expected
    assert got[-1].event == "end" and cursor.ended and cursor.result_execution_id == "x-1"
    assert cursor.retry_ms == 3000 and cursor.status == "COMPLETED"


@settings(max_examples=150, deadline=None)
@given(events_lists, st.sampled_from(["\n", "\r\n"]), st.lists(st.integers(1, 600), min_size=1, max_size=40))
def test_resuming_after_cuts_at_any_byte_gives_each_event_once(
    events: list[tuple[str, Any]], eol: str, budgets: list[int]
) -> None:
    """A model of SSE-2: each connection is cut after a number of bytes; the next one asks for
    the events after the last id received. The concatenation is exactly 1..N."""
    cursor = TraceCursor("r", StreamPolicy(max_retries=len(budgets) + 1))
    got: list[TraceEvent] = []
    budgets = [*budgets, 10**9]  # the last connection is not cut
    for budget in budgets:
        data = wire(events, eol, after=cursor.last_id)[:budget]
        got += [e for sse in parse([data]) if (e := cursor.accept(sse)) is not None]
        if cursor.ended:
            break
        cursor.on_drop("cut")
    assert [e.id for e in got] == list(range(1, len(events) + 2))
    assert [e.data for e in got[:-1]] == [json.loads(json.dumps(d)) for _, d in events]
    assert cursor.repeats == 0


def sse(id: str = "", event: str = "", data: str = "", retry: int | None = None) -> ServerSentEvent:
    return ServerSentEvent(event=event, data=data, id=id, retry=retry)


def test_repeats_are_dropped_and_gaps_refused() -> None:
    cursor = TraceCursor("r")
    assert cursor.accept(sse("1", "status", '{"status": "PENDING"}')) == TraceEvent(
        1, "status", {"status": "PENDING"}
    )
    assert cursor.accept(sse("1", "status", '{"status": "PENDING"}')) is None
    assert cursor.repeats == 1 and cursor.headers()["Last-Event-ID"] == "1"
    with pytest.raises(TransportError) as info:
        cursor.accept(sse("3", "processor", "{}"))
    assert info.value.code == "STREAM_GAP" and cursor.last_id == 1
    with pytest.raises(TransportError, match="not a number"):
        cursor.accept(sse("x2", "processor", "{}"))
    with pytest.raises(TransportError, match="not JSON"):
        cursor.accept(sse("2", "processor", "{"))
    assert cursor.last_id == 1  # a refused event is not counted: a resumption asks for it again
    # Only ASCII digits are an id: int() reads Arabic-Indic "\u0662" as 2, and str.isdigit()
    # takes "\u00b2" (superscript two), which int() then refuses with a bare ValueError.
    for odd in ("\u0662", "\u00b2", "\uff12", "-2", " 2"):
        with pytest.raises(TransportError) as info:
            cursor.accept(sse(odd, "processor", "{}"))
        assert info.value.code == "BAD_STREAM" and cursor.last_id == 1, odd


def test_blocks_without_data_are_not_events() -> None:
    cursor = TraceCursor("r")
    assert cursor.accept(sse(retry=1500)) is None  # httpx-sse hands `retry:` alone out as a message
    assert cursor.accept(sse(id="5")) is None  # an id without data dispatches nothing (WHATWG)
    # Nor does a named event without data (httpx-sse hands `event: status`, `id: 1` out as one).
    assert cursor.accept(sse("1", "status")) is None
    assert cursor.retry_ms == 1500 and cursor.last_id == 0
    assert "Last-Event-ID" not in cursor.headers()


def test_the_next_connection_asks_for_a_fresh_stream_after_the_last_id() -> None:
    # Every header of the request, exactly: no-store keeps a cache between client and server
    # from answering a resumed request with the stream it saw first (a mutant dropping it passed).
    cursor = TraceCursor("r")
    assert cursor.headers() == {"Accept": "text/event-stream", "Cache-Control": "no-store"}
    cursor.accept(sse("1", "status", '{"status": "RUNNING"}'))
    cursor.accept(sse("2", "processor", "{}"))
    assert cursor.headers() == {
        "Accept": "text/event-stream",
        "Cache-Control": "no-store",
        "Last-Event-ID": "2",
    }


def test_backoff_starts_at_the_servers_retry_doubles_is_capped_and_resets_on_progress() -> None:
    cursor = TraceCursor("r", StreamPolicy(max_retries=5, max_delay=10.0))
    assert cursor.on_drop("x") == 3.0  # before any `retry:`: section 5's 3000 ms
    cursor = TraceCursor("r", StreamPolicy(max_retries=5, max_delay=1.0))
    cursor.accept(sse(retry=100))
    assert [cursor.on_drop("x") for _ in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    with pytest.raises(TransportError) as info:
        cursor.on_drop("connection refused")
    assert info.value.code == "STREAM_RESUME_FAILED" and "connection refused" in info.value.message
    cursor = TraceCursor("r", StreamPolicy(max_retries=2))
    cursor.accept(sse(retry=100))
    cursor.on_drop("x")
    cursor.on_drop("x")
    cursor.accept(sse("1", "status", "{}"))  # progress: the count starts over
    assert cursor.on_drop("x") == 0.1


def test_what_each_answer_means() -> None:
    c = TraceCursor("r")
    assert c.on_response(200, "text/event-stream; charset=utf-8", None) == "read"
    assert c.on_response(200, "text/html", None) == "raise"
    assert c.on_response(401, None, "TOKEN_EXPIRED") == "renew"
    assert c.on_response(401, None, "TOKEN_EXPIRED") == "raise"  # renewed once already
    # BAD_TOKEN renews when the session can log in again (Session.renews), once too.
    assert TraceCursor("r").on_response(401, None, "BAD_TOKEN") == "raise"
    c = TraceCursor("r")
    assert c.on_response(401, None, "BAD_TOKEN", renews=True) == "renew"
    assert c.on_response(401, None, "BAD_TOKEN", renews=True) == "raise"
    c = TraceCursor("r")
    assert [c.on_response(s, None, None) for s in (502, 503, 504)] == ["retry"] * 3
    assert [c.on_response(s, None, None) for s in (400, 403, 404)] == ["raise"] * 3
    assert not c.ended and c.on_response(204, None, None) == "done" and c.ended


def test_a_token_expiring_again_later_in_a_long_stream_is_renewed_again() -> None:
    # "Once" is once per failed connection: a stream that was read after the renewal has used
    # it, and a token that expires again an hour later renews again (not a "raise").
    c = TraceCursor("r")
    assert c.on_response(401, None, "TOKEN_EXPIRED") == "renew"
    assert c.on_response(200, "text/event-stream", None) == "read"
    assert c.on_response(401, None, "TOKEN_EXPIRED") == "renew"
    assert c.on_response(401, None, "TOKEN_EXPIRED") == "raise"


def test_the_watcher_hears_each_connection_and_each_drop() -> None:
    heard: list[Any] = []
    c = TraceCursor("r", StreamPolicy(max_retries=3), watch=heard.append)
    c.on_response(502, None, None)  # not a connection to the stream
    c.on_response(200, "text/event-stream", None)
    c.on_drop("cut")
    c.on_response(200, "text/html", None)  # not the stream either
    assert heard == [None, "cut"] and c.connections == 3


def test_an_end_without_a_status_keeps_the_last_status_seen() -> None:
    cursor = TraceCursor("r")
    cursor.accept(sse("1", "status", '{"status": "RUNNING"}'))
    cursor.accept(sse("2", "processor", '{"status": "FAILED"}'))  # a processor's, not the replay's
    assert cursor.status == "RUNNING"
    cursor.accept(sse("3", "end", '{"resultExecutionId": "x-9"}'))
    assert (cursor.status, cursor.ended, cursor.result_execution_id) == ("RUNNING", True, "x-9")


def test_a_negative_retry_is_ignored_and_the_back_off_never_negative() -> None:
    cursor = TraceCursor("r")
    cursor.accept(sse(retry=-5))
    assert cursor.retry_ms is None and cursor.on_drop("x") == 3.0
    cursor.accept(sse(retry=0))  # 0 is a time (reconnect at once), not "unset"
    assert cursor.retry_ms == 0 and cursor.on_drop("x") == 0.0


_EDGE_INTS = [2**63 - 1, 2**64 - 1, 2**64, 2**64 + 1, -(2**63), -(2**63) - 1, -(2**64) - 1, 3 * 2**64 + 5]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_EDGE_INTS) | st.integers(-(2**80), 2**80), st.booleans())
def test_event_data_keeps_every_integer_exact(n: int, nested_in_object: bool) -> None:
    """orjson reads an integer beyond 64 bits as the nearest float; parse_json must notice
    (in lists and objects alike) and read such data as json.loads does, exactly. The edges:
    2**64 and -(2**63) - 1 are the first integers orjson rounds (mutants of _rounded's bounds
    and comparisons, and of its walk, passed the tests before)."""
    text = json.dumps({"h": {"id": n}} if nested_in_object else [[n]])
    data = parse_json(text)
    assert data == json.loads(text)
    inner = data["h"]["id"] if nested_in_object else data[0][0]
    assert type(inner) is int and inner == n


# --------------------------------------------------------------------------- against the sandbox


def source(platform: Platform, environment: str = "dev") -> Any:
    return next(
        iter(platform.executions(environment=environment, status="COMPLETED", is_replay=False, limit=1))
    )


def test_a_modified_replay_streams_to_its_end_and_its_trace_is_the_stored_execution(
    op_platform: Platform,
) -> None:
    original = op_platform.execution(source(op_platform).execution_id)
    order = json.loads(original.input_body or "{}")
    order["lines"] = order["lines"][:1]
    run = op_platform.replay(original, body=order, reason="stream test: one order line")
    events = list(run.events())
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    # The reader returns at `end`: no drop counted, no back-off slept after it.
    assert run.cursor.failures == 0
    names = [e.event for e in events]
    assert names[0] == "status" and names[-1] == "end" and names[-2] == "status"
    assert "execution" in names and names.count("processor") > 5
    seqs = [e.data["seq"] for e in events if e.event == "processor"]
    assert seqs == sorted(seqs) and all(
        e.data["replayId"] == run.replay_id for e in events if e.event == "processor"
    )
    replayed = run.wait()
    assert replayed.is_replay and replayed.replay_id == run.replay_id and run.status == "COMPLETED"
    assert json.loads(replayed.input_body or "") == order
    trace = run.trace()
    pd.testing.assert_frame_equal(trace, processors_frame(replayed))
    assert trace.replay_id.eq(run.replay_id).all() and len(trace) == len(replayed.processors or ())
    polars = run.trace("polars")
    assert polars.shape == trace.shape and polars["seq"].to_list() == trace.seq.tolist()
    # Everything was read once: iterating again gives the same events without a connection.
    connections = run.cursor.connections
    assert list(run.events()) == events and run.cursor.connections == connections


def test_an_ended_stream_answers_204_and_an_unknown_replay_404(op_platform: Platform) -> None:
    run = op_platform.replay(source(op_platform), reason="stream test: 204")
    last = list(run.events())[-1]
    again = ReplayRun({"replayId": run.replay_id}, platform=op_platform)
    again.cursor.last_id = last.id  # as a client that saw `end` and reconnects
    assert list(again.events()) == [] and again.cursor.connections == 1 and again.done
    with pytest.raises(NotFound) as info:
        list(ReplayRun({"replayId": "replay-does-not-exist"}, platform=op_platform).events())
    assert info.value.status == 404 and info.value.hint


def test_the_async_reader_gives_the_same_events(op_platform: Platform) -> None:
    run = op_platform.replay(source(op_platform), reason="stream test: async")

    async def main() -> tuple[list[TraceEvent], Any, Any]:
        events = [e async for e in run.aevents()]
        execution = await run
        return events, execution, await run.atrace("polars")

    events, execution, trace = asyncio.run(main())
    assert [e.id for e in events] == list(range(1, len(events) + 1)) and events[-1].event == "end"
    assert execution.execution_id == run.cursor.result_execution_id
    assert trace["seq"].to_list() == [p.seq for p in execution.processors or ()]


@contextmanager
def requests_seen(platform: Platform) -> Iterator[list[str]]:
    """The requests ``platform``'s own client sends meanwhile, as "METHOD path" (an httpx event
    hook: the requests still go to the sandbox)."""
    seen: list[str] = []
    hooks = platform._client.event_hooks
    platform._client.event_hooks = {**hooks, "request": [lambda r: seen.append(f"{r.method} {r.url.path}")]}
    try:
        yield seen
    finally:
        platform._client.event_hooks = hooks


def test_wait_builds_the_execution_from_the_trace_it_read_without_fetching_it_again(
    op_platform: Platform,
) -> None:
    original = op_platform.execution(source(op_platform).execution_id)
    order = json.loads(original.input_body or "{}")
    failed = next(iter(op_platform.executions(environment="dev", status="FAILED", is_replay=False, limit=1)))
    cases = [
        op_platform.replay(original, reason="stream test: as recorded"),
        op_platform.replay(
            original, body={**order, "lines": order["lines"][:1]}, reason="stream test: one line"
        ),
        op_platform.replay(failed, reason="stream test: a failing route"),
    ]
    for run in cases:
        with requests_seen(op_platform) as seen:
            replayed = run.wait()
        assert not [r for r in seen if r.startswith("GET /api/v1/executions/")], seen
        # Exactly what the platform stored, tree and detail fields included.
        assert replayed == op_platform.execution(replayed.execution_id)
        assert replayed.processors and len(replayed.processors) == replayed.processor_count
    assert {run.wait().status for run in cases} == {"COMPLETED", "FAILED"}


def test_wait_fetches_the_execution_when_the_trace_does_not_hold_all_of_it(op_platform: Platform) -> None:
    run = op_platform.replay(source(op_platform), reason="stream test: a trace with a record missing")
    list(run.events())
    # As a platform that sent one record less would leave it: the stored execution decides.
    short = ReplayRun({"replayId": run.replay_id}, platform=op_platform)
    list(short.events())
    dropped = next(e for e in short._events if e.event == "processor")
    short._events.remove(dropped)
    with requests_seen(op_platform) as seen:
        replayed = short.wait()
    assert f"GET /api/v1/executions/{replayed.execution_id}" in seen
    assert dropped.data["seq"] in [p.seq for p in replayed.processors or ()]
    assert replayed == run.wait()


def test_wait_says_why_a_replay_ended_without_an_execution(op_platform: Platform) -> None:
    run = op_platform.replay(source(op_platform), reason="stream test: no execution")
    list(run.events())
    # As a reader that saw `end` with status ERROR (the agent could not run it) would stand:
    failed = ReplayRun({"replayId": run.replay_id}, platform=op_platform)
    failed.cursor.ended, failed.cursor.status = True, "ERROR"
    with pytest.raises(MoatError) as info:
        failed.wait()
    assert info.value.code == "REPLAY_ERROR" and run.replay_id in info.value.message
    assert failed.replay["replayId"] == run.replay_id and "resultExecutionId" in failed.replay  # fetched


def test_the_read_timeout_is_three_pings() -> None:
    assert StreamPolicy().timeout().read == 45.0
    assert StreamPolicy(ping_interval=2).read_timeout == 6.0


# --------------------------------------------------------------------------- resume through a cutting proxy


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 that forwards to the sandbox and cuts every connection after a
    random number of response bytes (seeded), as a flaky network or proxy would."""

    def __init__(self, target: httpx.URL, seed: int, max_bytes: int) -> None:
        self.target = (target.host, target.port)
        self.rng = random.Random(seed)
        self.max_bytes = max_bytes
        self.cuts = 0
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server

    def __enter__(self) -> CuttingProxy:
        self.thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        budget = self.rng.randint(1, self.max_bytes)
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def upstream() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            nonlocal budget
            while data := await up_reader.read(65536):
                if len(data) >= budget:
                    writer.write(data[:budget])
                    await writer.drain()
                    self.cuts += 1
                    return
                budget -= len(data)
                writer.write(data)
                await writer.drain()

        up = asyncio.ensure_future(upstream())
        try:
            await downstream()
        except (ConnectionError, OSError):
            pass
        finally:
            up.cancel()
            writer.transport.abort()
            up_writer.transport.abort()


def proxied(platform: Platform, proxy: CuttingProxy) -> Platform:
    """A Platform that reaches the server through the proxy, with the session's access token."""
    platform.health()
    return Platform(session=Session(proxy.url, token=platform.session.access_token))


FAST = StreamPolicy(max_retries=40, max_delay=0.005)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_stream_cut_again_and_again_gives_exactly_1_to_n(
    op_platform: Platform, client_sandbox: Any, seed: int
) -> None:
    run = op_platform.replay(source(op_platform, "staging"), reason=f"stream test: cut {seed}")
    whole = [(e.id, e.event, e.data) for e in run.events()]
    # Cuts anywhere up to twice the largest event (and the response head), so that each
    # connection delivers a few events at most, and sometimes none.
    largest = max(len(json.dumps(d)) for _, _, d in whole)
    with CuttingProxy(httpx.URL(client_sandbox.url), seed, max_bytes=2 * largest + 600) as proxy:
        via_proxy = proxied(op_platform, proxy)
        cut = ReplayRun({"replayId": run.replay_id}, platform=via_proxy, policy=FAST)
        got = [(e.id, e.event, e.data) for e in cut.events()]
        via_proxy.close()
    assert got == whole  # ids exactly 1..N: nothing repeated, nothing skipped, same data
    assert [i for i, _, _ in got] == list(range(1, len(whole) + 1))
    assert proxy.cuts >= 5 and cut.cursor.connections >= 5, (proxy.cuts, cut.cursor.connections)
    assert cut.cursor.repeats == 0  # the server resumed exactly after Last-Event-ID


def test_a_live_replay_read_through_cuts_with_the_async_reader(
    op_platform: Platform, client_sandbox: Any
) -> None:
    with CuttingProxy(httpx.URL(client_sandbox.url), 7, max_bytes=12_000) as proxy:
        via_proxy = proxied(op_platform, proxy)
        run = op_platform.replay(source(op_platform), reason="stream test: live through cuts")
        cut = ReplayRun(run.replay, platform=via_proxy, policy=FAST)  # read while it runs

        async def main() -> list[TraceEvent]:
            return [e async for e in cut.aevents()]

        got = asyncio.run(main())
        via_proxy.close()
    assert [e.id for e in got] == list(range(1, len(got) + 1)) and got[-1].event == "end"
    assert proxy.cuts >= 3
    assert [e.data for e in run.events()] == [e.data for e in got]


SLOW_ROUTES = """\
- route:
    id: slow-intake
    from:
      uri: "platform-http:/slow"
      steps:
        - delay:
            id: wait
            simple: "${header.delayMs}"
        - setBody:
            id: done
            constant: "done"
"""
SLOW_BEANS = """\
def sample_payload(rng, i):
    return {"headers": {"delayMs": "0"}, "body": f"order {i}", "properties": {}}
"""


def _slow_app(folder: Path) -> Path:
    """A user's app folder whose route waits ``delayMs`` (a replay that sends nothing a while)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "routes.yaml").write_text(SLOW_ROUTES)
    (folder / "beans.py").write_text(SLOW_BEANS)
    return folder


@pytest.fixture(scope="module")
def slow_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A sandbox whose route waits ``delayMs`` (a replay that sends nothing for a while)."""
    from moat_nb.client import connect
    from moat_nb.sandbox import start

    app = _slow_app(tmp_path_factory.mktemp("slow-app"))
    handle = start(app=app, data=tmp_path_factory.mktemp("slow-data"), per_env=2, seed=1)
    platform = connect(handle.url, username="operator", password="operator")
    try:
        yield platform
    finally:
        platform.close()
        handle.stop()


def test_wait_with_a_timeout_returns_at_the_deadline_while_the_replay_is_silent(
    slow_platform: Platform,
) -> None:
    run = slow_platform.replay(
        source(slow_platform), headers={"delayMs": "4000"}, reason="stream test: wait timeout"
    )
    sent: list[httpx.Request] = []
    slow_platform._client.event_hooks["request"].append(sent.append)  # observation only
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        run.wait(timeout=0.5)
    waited = time.monotonic() - started
    assert info.value.code == "WAIT_TIMEOUT" and 0.5 <= waited < 2.5, waited
    # Not "the network failed": its own class, a TimeoutError too, named so in a notebook's line.
    assert isinstance(info.value, WaitTimeout) and isinstance(info.value, TimeoutError)
    assert info.value._render_traceback_()[0].startswith("WaitTimeout: [WAIT_TIMEOUT]")
    assert not run.done and "run.wait()" in (info.value.hint or "")
    # Read with the platform's own client (its transport, proxy, certificates): review finding.
    assert any(r.url.path.endswith(f"/replays/{run.replay_id}/events") for r in sent)
    slow_platform._client.event_hooks["request"].remove(sent.append)
    # Waiting again goes on from where the first wait stopped: every event once, to the end.
    execution = run.wait(timeout=30)
    assert execution.status == "COMPLETED" and run.done
    ids = [e.id for e in run.events()]
    assert ids == list(range(1, len(ids) + 1)) and run.cursor.repeats == 0


def test_await_with_a_timeout_raises_wait_timeout_and_awaiting_again_resumes(
    slow_platform: Platform,
) -> None:
    """``await run`` had no timeout while ``run.wait(timeout=)`` had one: ``await
    run.await_(timeout=)`` is the same for async code, with the same error."""
    from moat_nb.client import AsyncPlatform

    async def main() -> tuple[BaseException, float, Any, ReplayRun, ReplayRun]:
        async with AsyncPlatform(session=slow_platform.session) as ap:
            run = await ap.replay(
                source(slow_platform), headers={"delayMs": "4000"}, reason="stream test: await timeout"
            )
            started = time.monotonic()
            try:
                await run.await_(timeout=0.5)
            except BaseException as exc:  # noqa: BLE001 - examined below
                caught: BaseException = exc
            waited = time.monotonic() - started
            # Awaiting again goes on from where the first stopped: every event once, to the end.
            execution = await run.await_(timeout=timedelta(seconds=30))
            # A sync platform's run, awaited (on a client of its own): the same.
            other = slow_platform.replay(
                source(slow_platform), headers={"delayMs": "4000"}, reason="stream test: await timeout, sync"
            )
            try:
                await other.await_(timeout=0.2)
            except WaitTimeout:
                pass
            return caught, waited, execution, run, other

    caught, waited, execution, run, other = asyncio.run(main())
    assert isinstance(caught, WaitTimeout) and isinstance(caught, TimeoutError), repr(caught)
    assert caught.code == "WAIT_TIMEOUT" and 0.5 <= waited < 2.5, waited
    assert "await run.await_()" in (caught.hint or "") and caught.details["replayId"] == run.replay_id
    assert execution.status == "COMPLETED" and run.done
    ids = [e.id for e in run.seen]
    assert ids == list(range(1, len(ids) + 1)) and run.cursor.repeats == 0
    assert not other.done and other.wait(timeout=30).status == "COMPLETED"


@pytest.mark.parametrize("timeout", ["5", math.nan, -1])
def test_await_refuses_a_timeout_that_is_not_a_time_before_reading(timeout: Any) -> None:
    dead = Platform(session=Session("http://127.0.0.1:9", token="t"))
    run = ReplayRun(
        {"replayId": "replay-x"}, platform=dead, policy=StreamPolicy(max_retries=1, max_delay=0.001)
    )
    try:
        with pytest.raises(ValidationError) as info:
            asyncio.run(run.await_(timeout=timeout))
        assert info.value.code == "BAD_TIMEOUT"
    finally:
        dead.close()


def test_a_dead_platform_gives_up_after_bounded_retries(op_platform: Platform) -> None:
    op_platform.health()
    dead = Platform(session=Session("http://127.0.0.1:9", token=op_platform.session.access_token))
    run = ReplayRun(
        {"replayId": "replay-x"}, platform=dead, policy=StreamPolicy(max_retries=3, max_delay=0.001)
    )
    with pytest.raises(TransportError) as info:
        list(run.events())
    assert info.value.code == "STREAM_RESUME_FAILED" and run.cursor.failures == 4
    assert isinstance(info.value, MoatError) and "replay_run" in (info.value.hint or "")
    dead.close()


# --------------------------------------------------------------------------- live() in a real kernel

NOTEBOOK = Path(__file__).with_name("notebooks") / "live_trace.ipynb"


def test_live_fills_the_full_frame_inside_a_real_kernel(
    client_sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    import papermill

    # Section 6: credentials reach the notebook through the environment, not parameters.
    monkeypatch.setenv("MOAT_URL", client_sandbox.url)
    monkeypatch.setenv("MOAT_USER", "operator")
    monkeypatch.setenv("MOAT_PASSWORD", "operator")
    monkeypatch.delenv("MOAT_TOKEN", raising=False)
    out = tmp_path / "live_trace.out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(out),
        kernel_name="python3",
        cwd=str(tmp_path),
        progress_bar=False,
        parameters={"reason": "live() via papermill"},
    )
    executed = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for o in executed.cells[-1].outputs if o.output_type == "stream")
    result = json.loads(text.strip().splitlines()[-1])
    assert result["error"] == "None" and result["status"] == "COMPLETED"
    assert result["rows"] == result["processors"] > 5 and result["equal"]
    assert result["table_rows"] == result["rows"]
    assert result["same_loop"] and result["draw_threads"] and not result["done_at_once"]
    assert "COMPLETED" in result["progress"] and f"{result['rows']} processors" in result["progress"]
    # The view was displayed as a widget in the cell that made it.
    live_cell = next(c for c in executed.cells if "run.live()" in c.source)
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in live_cell.outputs)
    assert any(
        "live() via papermill" in c.source
        for c in executed.cells
        if "injected-parameters" in c.metadata.get("tags", [])
    )


def test_live_outside_an_event_loop_says_what_to_do_instead(op_platform: Platform) -> None:
    run = ReplayRun({"replayId": "replay-x"}, platform=op_platform)
    with pytest.raises(MoatError) as info:
        run.live()
    assert info.value.code == "NO_EVENT_LOOP" and "atrace" in (info.value.hint or "")


def test_live_shows_every_processor_when_another_reader_read_them_first(op_platform: Platform) -> None:
    """``run.live()`` then ``run.wait()`` (the next cell, or "Run all"): the blocking wait reads
    the run to its end, and the view's table must still list every processor (it listed none:
    review finding)."""
    run = op_platform.replay(source(op_platform), reason="stream test: live, then wait")

    async def notebook() -> tuple[int, int, str]:
        view = run.live(display=False)  # cell 1
        await asyncio.sleep(0)  # the kernel runs its loop between cells
        execution = run.wait()  # cell 2: blocking, on the loop's thread
        await view.wait()
        return len(execution.processors or ()), view.table.value.count("<tr>") - 1, view.progress.value

    processors, rows, progress = asyncio.run(notebook())
    assert processors > 5 and rows == processors and f"{processors} processors" in progress


def test_wait_with_a_timeout_does_not_wait_for_a_response_head_past_its_deadline() -> None:
    """A platform (or a proxy) that takes the request and sends nothing: before the head comes
    the watchdog has no socket to shut down, so the first read is bounded by the deadline too
    (it waited the read timeout, 15 s here: review finding)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []

    def take() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        held.append(conn)  # read the GET, answer nothing

    threading.Thread(target=take, daemon=True).start()
    platform = Platform(session=Session(f"http://127.0.0.1:{server.getsockname()[1]}", token="t"))
    run = ReplayRun({"replayId": "replay-1"}, platform=platform, policy=StreamPolicy(ping_interval=5.0))
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        run.wait(timeout=1)
    assert info.value.code == "WAIT_TIMEOUT" and time.monotonic() - started < 4
    platform.close()
    server.close()
    for conn in held:
        conn.close()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_wait_without_a_finite_deadline_reads_to_the_end(op_platform: Platform) -> None:
    run = op_platform.replay(source(op_platform), reason="stream test: wait(timeout=inf)")
    assert run.wait(timeout=math.inf).status == "COMPLETED"  # no watchdog thread for it


def test_wait_takes_a_timedelta(op_platform: Platform) -> None:
    run = op_platform.replay(source(op_platform), reason="stream test: wait(timeout=timedelta)")
    assert run.wait(timeout=timedelta(seconds=30)).status == "COMPLETED"  # was a TypeError


@pytest.mark.parametrize("timeout", ["5", math.nan, -1, -math.inf, timedelta(seconds=-1), True, [5]])
def test_wait_refuses_a_timeout_that_is_not_a_time_before_reading(timeout: Any) -> None:
    """A string was a TypeError; NaN set no deadline, read with a 0.1 s timeout and ended in a
    misleading STREAM_RESUME_FAILED (fuzzing finding). Nothing listens on port 9: a read would
    fail with a TransportError, so a ValidationError means nothing was read."""
    dead = Platform(session=Session("http://127.0.0.1:9", token="t"))
    run = ReplayRun(
        {"replayId": "replay-x"}, platform=dead, policy=StreamPolicy(max_retries=1, max_delay=0.001)
    )
    try:
        with pytest.raises(ValidationError) as info:
            run.wait(timeout=timeout)
        assert info.value.code == "BAD_TIMEOUT" and info.value.hint
    finally:
        dead.close()


# --------------------------------------------------------------------------- a platform that crashes


@pytest.mark.slow
def test_a_replay_cut_by_a_platform_crash_resumes_on_the_restarted_platform_and_says_aborted(
    tmp_path: Path, sandbox_processes: Any
) -> None:
    """The notebook's ``wait()`` outlives the platform it started on: the sandbox's process is
    killed (SIGKILL) while its agent runs the replay, is started again on the same port and
    data, and marks the replay ABORTED (never run again); the reader reconnects with its last
    event id, as through any cut, and ends with a ReplayFailed that says so, not a transport
    error or a hang."""
    from moat_nb.client import connect
    from moat_nb.errors import ReplayFailed

    app = _slow_app(tmp_path / "slow-app")
    data = tmp_path / "data"
    first = sandbox_processes.start(data, app)
    p = connect(sandbox_processes.url, username="operator", password="operator")
    [source] = list(p.executions(environment="dev", limit=1))
    run = p.replay(source, headers={"delayMs": "5000"}, reason="crash test")
    outcome: dict[str, BaseException] = {}

    def read() -> None:  # the notebook's cell, blocked in wait() while the platform dies
        try:
            run.wait(timeout=60)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["raised"] = exc

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    while run.cursor.last_id < 1:
        assert time.monotonic() < deadline, "the reader read nothing"
        time.sleep(0.05)
    time.sleep(0.5)  # the agent has the command by now, and waits 5 s in the route's delay step
    assert p.get_replay(run.replay_id)["status"] == "PENDING"  # RUNNING comes with its trace
    read_before = run.cursor.last_id
    first.send_signal(signal.SIGKILL)  # mid-replay: the route waits 5 s in its delay step
    first.wait(10)
    sandbox_processes.start(data, app)  # the same port and data
    reader.join(90)
    assert not reader.is_alive()
    raised = outcome.get("raised")
    assert isinstance(raised, ReplayFailed), raised
    assert raised.code == "REPLAY_ABORTED" and run.replay_id in str(raised)
    assert (run.cursor.status, run.cursor.ended, run.cursor.repeats) == ("ABORTED", True, 0)
    # It came back through a reconnection that resumed after what it had read.
    assert run.cursor.connections >= 2 and run.cursor.last_id > read_before
    stored = p.get_replay(run.replay_id)
    assert stored["status"] == "ABORTED" and "not run again" in stored["result"]["errorMessage"]
    p.close()


def test_a_stream_whose_token_the_platform_no_longer_takes_logs_in_again(client_sandbox: Any) -> None:
    """Review finding: the client logs in again on 401 ``BAD_TOKEN`` when it has a password
    (a token from before a password change or of another JWT key), but the trace stream only
    renewed on ``TOKEN_EXPIRED``: a stream resumed on a platform that no longer took the token
    raised BAD_TOKEN where every other call logged in again. Both readers now do as calls do;
    a token-only session still raises."""
    import jwt

    from moat_nb.client import connect
    from moat_nb.errors import AuthenticationError

    now = int(time.time())
    refused = jwt.encode(
        {"sub": "user:operator", "typ": "access", "iat": now, "exp": now + 600},
        b"another-sandbox-key-0123456789abcdef",
        algorithm="HS256",
    )
    with connect(client_sandbox.url, username="operator", password="operator") as p:
        run = p.replay(source(p), reason="stream test: a token the platform no longer takes")
        p.session.access_token = p.session.refresh_token = refused  # both refused now
        events = list(run.events())
        assert events[-1].event == "end" and p.session.access_token != refused
        assert run.cursor.connections == 2  # refused once, then read with the new login

        async def read_async() -> list[TraceEvent]:
            # aevents reads with an AsyncPlatform on the same session (the async reader).
            return [e async for e in ReplayRun({"replayId": run.replay_id}, platform=p).aevents()]

        p.session.access_token = p.session.refresh_token = refused
        assert [e.id for e in asyncio.run(read_async())] == [e.id for e in events]
        # Without a password there is nothing to log in with: the refusal is said as it is.
        with connect(client_sandbox.url, token=p.session.access_token) as token_only:
            token_only.session.access_token = refused
            with pytest.raises(AuthenticationError) as info:
                list(ReplayRun({"replayId": run.replay_id}, platform=token_only).events())
            assert info.value.code == "BAD_TOKEN"
