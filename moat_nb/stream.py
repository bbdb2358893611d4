"""The replay trace stream: a resumable SSE reader, :class:`ReplayRun` and :class:`LiveTrace`.

``GET /replays/{replayId}/events`` (DESIGN.md section 5) sends ``status``, ``processor``,
``execution`` and ``end`` events with ids 1, 2, 3 ...; every event is stored before it is sent,
so a dropped connection loses nothing: reconnect with ``Last-Event-ID: n`` and the server sends
exactly the events after n. httpx-sse parses the stream; :class:`TraceCursor` (pure) does the
bookkeeping both readers share:

* an event is given out once: an id at or below the last one is a repeat and dropped; an id
  that skips one is a broken stream and raises (the trace would silently miss a processor);
* a block with no data (``retry:`` alone, an id or an event name without data) is not an event
  (WHATWG HTML 9.2.6: "if the data buffer is an empty string ... return"); httpx-sse hands such
  blocks out as events with empty data, so they are dropped here;
* the server's ``retry:`` is the reconnection time (WHATWG), the base of an exponential
  back-off over consecutive failed attempts, capped; any event received resets it; after
  ``max_retries`` attempts in a row without a new event the reader gives up
  (:class:`~moat_nb.errors.TransportError`);
* 204 means the stream is over (the client saw ``end``: WHATWG's "stop reconnecting" answer,
  security.md 4.1); a 401 ``TOKEN_EXPIRED`` (or ``BAD_TOKEN`` with a password to log in with,
  as calls do: :meth:`~moat_nb.client.Session.renews`) renews the token and reconnects at once; 502/503/504
  are retried; any other error status raises the mapped error (no reconnect, as EventSource);
* the read timeout is three ping intervals (the server pings every 15 s): two lost pings are
  tolerated, a third means the connection is dead and is resumed.

The sync reader (:func:`iter_trace`) and the async one (:func:`aiter_trace`) are the same loop
over the same cursor, one with ``httpx.Client``, one with ``httpx.AsyncClient``.
"""

from __future__ import annotations

import asyncio
import html
import json
import math
import numbers
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import orjson
from httpx_sse import EventSource, ServerSentEvent

from .client import Op, error_from_response, op_execution, redirect_error
from .errors import MoatError, ReplayFailed, ServerError, TransportError, ValidationError, WaitTimeout
from .frames import Backend, ProcessorRows, to_frame
from .model import Execution, ProcessorRecord

if TYPE_CHECKING:
    from .client import AsyncPlatform, Platform

__all__ = [
    "LiveTrace",
    "ReplayRun",
    "StreamPolicy",
    "TraceCursor",
    "TraceEvent",
    "aiter_trace",
    "iter_trace",
]

#: The reconnection time before the server sent ``retry:`` (section 5 sends 3000 first).
DEFAULT_RETRY_MS = 3000
_TERMINAL = frozenset({"COMPLETED", "ERROR", "TIMED_OUT", "ABORTED"})


@dataclass(frozen=True)
class StreamPolicy:
    """How the trace reader waits and resumes.

    ``ping_interval``: the server's comment ping (section 5: 15 s); the read timeout is three of
    them. ``max_retries``: reconnect attempts in a row without a new event before giving up.
    ``max_delay``: the cap of the back-off (seconds) that starts at the server's ``retry:``.
    """

    ping_interval: float = 15.0
    max_retries: int = 8
    max_delay: float = 30.0
    connect_timeout: float = 10.0

    @property
    def read_timeout(self) -> float:
        return 3 * self.ping_interval

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.connect_timeout, read=self.read_timeout)


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One event of the trace stream: ``id`` (1, 2, 3 ...), ``event`` (``status``,
    ``processor``, ``execution``, ``end``) and ``data`` (the parsed JSON, wire form)."""

    id: int
    event: str
    data: Any

    @property
    def record(self) -> ProcessorRecord:
        """A ``processor`` event's :class:`~moat_nb.model.ProcessorRecord`."""
        return ProcessorRecord.from_wire(self.data)

    @property
    def execution(self) -> Execution:
        """An ``execution`` event's :class:`~moat_nb.model.Execution` (no processors)."""
        return Execution.from_wire(self.data)


# --------------------------------------------------------------------------- event data (pure)

# orjson reads an integer beyond 64 bits (RFC 8259 section 6 leaves the range open) as the
# nearest float, where json.loads keeps it exact: a header may hold a Java BigInteger.
_U64_END = 2.0**64
_I64_MIN = -(2.0**63)


def _rounded(value: Any) -> bool:
    """True when ``value`` holds a float outside the 64-bit integers: perhaps a rounded one."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is dict:
            extend(item.values())
        elif kind is list:
            extend(item)
        elif kind is float and (item >= _U64_END or item <= _I64_MIN):
            return True
    return False


def parse_json(text: str) -> Any:
    """An event's data as ``json.loads`` reads it, parsed with orjson where that gives the same.

    orjson parses a trace record several times faster than the standard library, which was the
    reader's largest cost (DESIGN.md section 11, P1). What it reads differently goes to
    ``json.loads``: what it refuses (``NaN``, ``1e400``, lone surrogate escapes; json.loads then
    says whether it is JSON at all by raising ValueError), and integers beyond 64 bits.
    """
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    return json.loads(text) if _rounded(data) else data


# --------------------------------------------------------------------------- the cursor (pure)


@dataclass
class TraceCursor:
    """Where a reader of one replay's trace stands; what to do on each answer (pure)."""

    replay_id: str
    policy: StreamPolicy = field(default_factory=StreamPolicy)
    last_id: int = 0
    retry_ms: int | None = None
    ended: bool = False
    status: str | None = None
    result_execution_id: str | None = None
    failures: int = 0
    connections: int = 0
    repeats: int = 0
    _renewed: bool = False
    #: Told of each connection that reached the stream (None) and of each drop (its cause): a
    #: batch watches its readers this way, to stop when none of them reaches the platform.
    watch: Callable[[BaseException | str | None], None] | None = field(
        default=None, repr=False, compare=False
    )

    def headers(self) -> dict[str, str]:
        """Headers of the next connection (``Last-Event-ID`` once an event was seen)."""
        out = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.last_id:
            out["Last-Event-ID"] = str(self.last_id)
        return out

    def on_response(
        self, status: int, content_type: str | None, error_code: str | None, *, renews: bool | None = None
    ) -> str:
        """What to do with a connection's answer: ``"read"`` its events, ``"done"``,
        ``"renew"`` the token and reconnect, ``"retry"`` after a pause, or ``"raise"``.
        ``renews``: whether the session renews on this 401's code (:meth:`Session.renews`);
        None: on ``TOKEN_EXPIRED`` only."""
        self.connections += 1
        if status == 200:
            if "text/event-stream" not in (content_type or ""):
                return "raise"
            self._renewed = False
            if self.watch is not None:
                self.watch(None)
            return "read"
        if status == 204:
            self.ended = True
            return "done"
        renewable = error_code == "TOKEN_EXPIRED" if renews is None else renews
        if status == 401 and renewable and not self._renewed:
            self._renewed = True
            return "renew"
        if status in (502, 503, 504):
            return "retry"
        return "raise"

    def accept(self, sse: ServerSentEvent) -> TraceEvent | None:
        """The event to give out for a parsed block, or None (a repeat, or not an event)."""
        if sse.retry is not None and sse.retry >= 0:
            self.retry_ms = sse.retry
        if sse.data == "":
            # WHATWG 9.2.6: an empty data buffer dispatches nothing, whatever the event type
            # buffer holds; httpx-sse hands out `event: status` + `id: 1` without data as an
            # event with data "", which was refused as "not JSON" (found by a mutation run).
            return None
        if not (sse.id.isascii() and sse.id.isdigit()):
            raise TransportError(
                f"trace stream of {self.replay_id}: event id {sse.id[:40]!r} is not a number",
                code="BAD_STREAM",
                hint="the server does not speak the replay trace stream: is MOAT_URL the platform?",
            )
        n = int(sse.id)
        if n <= self.last_id:
            self.repeats += 1
            return None
        if n != self.last_id + 1:
            raise TransportError(
                f"trace stream of {self.replay_id}: event {n} follows event {self.last_id}",
                code="STREAM_GAP",
                hint="events were lost on the way; read the replay again with platform.replay_run(id)",
                details={"replayId": self.replay_id, "lastId": self.last_id, "got": n},
            )
        try:
            data = parse_json(sse.data)
        except ValueError:
            raise TransportError(
                f"trace stream of {self.replay_id}: event {n} carries data that is not JSON",
                code="BAD_STREAM",
            ) from None
        self.last_id = n
        self.failures = 0  # progress: the back-off starts over
        if sse.event in ("status", "end") and isinstance(data, dict):
            self.status = data.get("status", self.status)
        if sse.event == "end":
            self.ended = True
            if isinstance(data, dict):
                self.result_execution_id = data.get("resultExecutionId")
        return TraceEvent(n, sse.event, data)

    def on_drop(self, cause: BaseException | str) -> float:
        """The connection ended before ``end``: seconds to wait before resuming; raises
        TransportError when ``max_retries`` attempts in a row brought nothing new."""
        self.failures += 1
        if self.watch is not None:
            self.watch(cause)
        if self.failures > self.policy.max_retries:
            raise TransportError(
                f"trace stream of {self.replay_id}: {self.failures - 1} reconnects in a row brought no "
                f"event (last id {self.last_id}): {cause}",
                code="STREAM_RESUME_FAILED",
                hint="the replay itself goes on: platform.replay_run(replay_id) reads it again later",
                details={"replayId": self.replay_id, "lastId": self.last_id},
            )
        base = (self.retry_ms if self.retry_ms is not None else DEFAULT_RETRY_MS) / 1000
        return min(self.policy.max_delay, base * 2 ** (self.failures - 1))


def _events_path(session: Any, replay_id: str) -> str:
    return f"/replays/{session.quote(replay_id)}/events"


def _stream_error(response: httpx.Response) -> MoatError:
    if 300 <= response.status_code < 400:
        return redirect_error(response)
    if response.status_code == 200:
        return ServerError(
            f"GET {response.request.url.path} answered {response.headers.get('content-type')!r}, "
            "not text/event-stream",
            status=200,
            code="BAD_STREAM",
            hint="is MOAT_URL the platform's address (not a proxy or a web page)?",
        )
    return error_from_response(response)


def _code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


def _wait_seconds(timeout: Any) -> float | None:
    """``ReplayRun.wait(timeout=)`` in seconds: None (no limit), a number of seconds (``math.inf``
    is no limit too) or a timedelta. Anything else is refused before the trace is read: a
    string or a timedelta failed in a comparison (TypeError), and NaN compared false
    everywhere, so it set no deadline, read with a 0.1 s timeout and ended in a misleading
    STREAM_RESUME_FAILED (fuzzing finding)."""
    if timeout is None:
        return None
    if isinstance(timeout, timedelta):
        seconds = timeout.total_seconds()
    elif isinstance(timeout, numbers.Real) and not isinstance(timeout, bool):  # numpy's too
        try:
            seconds = float(timeout)
        except OverflowError:  # an int beyond any float: no deadline in practice
            seconds = math.inf
    else:
        raise ValidationError(
            f"timeout={timeout!r} is not a number of seconds ({type(timeout).__name__})",
            code="BAD_TIMEOUT",
            hint="pass seconds (timeout=30) or a timedelta (timeout=timedelta(minutes=2))"
            + (f"; float({timeout!r}) converts text" if isinstance(timeout, str) else ""),
        )
    if math.isnan(seconds) or seconds < 0:
        raise ValidationError(
            f"timeout={timeout!r} is not a time to wait",
            code="BAD_TIMEOUT",
            hint="pass 0 or more seconds, or timeout=None (or math.inf) to wait for the end",
        )
    return seconds


class Deadline:
    """A time limit on a blocking read of the trace (``ReplayRun.wait(timeout=)``).

    Why a watchdog: httpx's read timeout starts again with every chunk, and the server pings
    every 15 s, so no read timeout ends a silent replay's wait at its deadline. At the deadline
    the watchdog thread marks it expired and shuts down the socket the reader waits on
    (``shutdown(2)`` wakes a blocked ``recv``; ``close(2)`` from another thread does not); the
    reader then stops instead of reconnecting. The socket is found through httpx's
    ``network_stream`` response extension; a transport without one (``MockTransport``) does
    not block."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = threading.Event()
        self._response: httpx.Response | None = None
        self._lock = threading.Lock()
        # No watchdog for a deadline a timer cannot hold (math.inf: no deadline at all).
        self._timer: threading.Timer | None = None
        if seconds < threading.TIMEOUT_MAX:
            self._timer = threading.Timer(max(0.0, seconds), self._expire)
            self._timer.daemon = True
            self._timer.start()

    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def reading(self, response: httpx.Response | None) -> None:
        with self._lock:
            self._response = response
        if response is not None and self.expired.is_set():
            self._expire()  # expired while the connection was being made

    def sleep(self, seconds: float) -> None:
        self.expired.wait(seconds)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _expire(self) -> None:
        self.expired.set()
        with self._lock:
            response = self._response
        stream = None if response is None else response.extensions.get("network_stream")
        sock = None if stream is None else stream.get_extra_info("socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed meanwhile


def iter_trace(
    platform: Platform, cursor: TraceCursor, deadline: Deadline | None = None
) -> Iterator[TraceEvent]:
    """The trace events after ``cursor.last_id`` until ``end``, resuming after every drop; with
    a ``deadline``, until it expires too (then it returns: the caller says so)."""
    session = platform.session
    sleep = time.sleep if deadline is None else deadline.sleep
    while not cursor.ended:
        if deadline is not None and deadline.expired.is_set():
            return
        timeout = cursor.policy.timeout()
        if deadline is not None:
            # Until the response's head has come the watchdog has no socket to shut down: the
            # connect and the first read are not waited for beyond the deadline.
            left = deadline.left() + 0.1
            timeout = httpx.Timeout(
                min(cursor.policy.connect_timeout, left), read=min(cursor.policy.read_timeout, left)
            )
        request = session.request(
            "GET", _events_path(session, cursor.replay_id), headers=cursor.headers(), timeout=timeout
        )
        request.headers["Authorization"] = platform._run(session.authorize())
        try:
            response = platform._client.send(request, stream=True)
        except httpx.TransportError as exc:
            if deadline is not None and deadline.expired.is_set():
                return
            sleep(cursor.on_drop(exc))
            continue
        if deadline is not None:
            deadline.reading(response)
        try:
            code = None
            if response.status_code >= 400:
                response.read()
                code = _code(response)
            action = cursor.on_response(
                response.status_code, response.headers.get("content-type"), code, renews=session.renews(code)
            )
            if action == "read":
                for sse in EventSource(response).iter_sse():
                    event = cursor.accept(sse)
                    if event is not None:
                        yield event
                    if cursor.ended:
                        return
                cause: BaseException | str = "the server closed the stream before `end`"
            elif action == "done":
                return
            elif action == "renew":
                platform._run(session.renew())
                continue
            elif action == "retry":
                cause = f"HTTP {response.status_code}"
            else:
                response.read()
                raise _stream_error(response)
        except httpx.TransportError as exc:  # read timeout, connection cut mid-body
            cause = exc
        finally:
            if deadline is not None:
                deadline.reading(None)
            response.close()
        if deadline is not None and deadline.expired.is_set():
            return
        sleep(cursor.on_drop(cause))


async def aiter_trace(platform: AsyncPlatform, cursor: TraceCursor) -> AsyncIterator[TraceEvent]:
    """:func:`iter_trace` on an :class:`~moat_nb.client.AsyncPlatform`."""
    session = platform.session
    while not cursor.ended:
        request = session.request(
            "GET",
            _events_path(session, cursor.replay_id),
            headers=cursor.headers(),
            timeout=cursor.policy.timeout(),
        )
        request.headers["Authorization"] = await platform._run(session.authorize())
        try:
            response = await platform._client.send(request, stream=True)
        except httpx.TransportError as exc:
            await anyio.sleep(cursor.on_drop(exc))
            continue
        try:
            code = None
            if response.status_code >= 400:
                await response.aread()
                code = _code(response)
            action = cursor.on_response(
                response.status_code, response.headers.get("content-type"), code, renews=session.renews(code)
            )
            if action == "read":
                async for sse in EventSource(response).aiter_sse():
                    event = cursor.accept(sse)
                    if event is not None:
                        yield event
                    if cursor.ended:
                        return
                cause: BaseException | str = "the server closed the stream before `end`"
            elif action == "done":
                return
            elif action == "renew":
                await platform._run(session.renew())
                continue
            elif action == "retry":
                cause = f"HTTP {response.status_code}"
            else:
                await response.aread()
                raise _stream_error(response)
        except httpx.TransportError as exc:
            cause = exc
        finally:
            await response.aclose()
        await anyio.sleep(cursor.on_drop(cause))


# --------------------------------------------------------------------------- ReplayRun


class ReplayRun:
    """A replay that was requested: follow its trace, wait for its result, frame its trace.

    ``events()`` / ``aevents()`` iterate the trace events (resumable; events already read are
    kept and given again first, so iterating twice costs nothing); ``wait()`` / ``await run``
    (``wait(timeout=)`` / ``await run.await_(timeout=)``: at most that long) give the replay's
    :class:`~moat_nb.model.Execution` (built from the trace, or fetched after ``end`` when the
    trace does not hold all of it: :meth:`_from_trace`); ``trace()`` /
    ``await run.atrace()`` its processors frame; ``live()`` a view that fills in a notebook.
    ``replay`` is the Replay resource as last read (section 4).
    """

    def __init__(
        self,
        replay: dict[str, Any],
        *,
        platform: Platform | None = None,
        aplatform: AsyncPlatform | None = None,
        policy: StreamPolicy | None = None,
    ) -> None:
        if platform is None and aplatform is None:
            raise ValueError("ReplayRun needs a platform or an aplatform")
        self.replay = replay
        self.replay_id: str = replay["replayId"]
        self._platform = platform
        self._aplatform = aplatform
        owner = platform if platform is not None else aplatform
        self.cursor = TraceCursor(self.replay_id, policy or owner.stream_policy or StreamPolicy())  # type: ignore[union-attr]
        self._events: list[TraceEvent] = []
        self._rows = ProcessorRows()
        self._start: str | None = None
        self._execution: Execution | None = None

    def __repr__(self) -> str:
        return f"<ReplayRun {self.replay_id} {self.status} events={len(self._events)}>"

    @property
    def status(self) -> str:
        """The newest status seen (``PENDING`` ... ``COMPLETED``/``ERROR``/``TIMED_OUT``/``ABORTED``)."""
        return self.cursor.status or self.replay.get("status", "PENDING")

    @property
    def done(self) -> bool:
        """True once ``end`` was read."""
        return self.cursor.ended

    @property
    def seen(self) -> list[TraceEvent]:
        """The events read so far."""
        return list(self._events)

    # ---------------------------------------------------------------- platforms

    @contextmanager
    def _sync_platform(self) -> Iterator[Platform]:
        if self._platform is not None:
            yield self._platform
            return
        assert self._aplatform is not None
        twin = self._aplatform._twin()
        try:
            yield twin
        finally:
            twin.close()

    @asynccontextmanager
    async def _async_platform(self) -> AsyncIterator[AsyncPlatform]:
        if self._aplatform is not None:
            yield self._aplatform
            return
        assert self._platform is not None
        # An AsyncClient of its own, made on the loop that runs this (a kernel's, for live()).
        twin = self._platform._twin()
        try:
            yield twin
        finally:
            # Shielded: a read cut off at await_()'s deadline still closes the client.
            with anyio.CancelScope(shield=True):
                await twin.aclose()

    # ---------------------------------------------------------------- events

    def events(self) -> Iterator[TraceEvent]:
        """The trace events, from the first, until ``end`` (resuming after dropped connections)."""
        yield from list(self._events)
        yield from self._read()

    def _read(self, deadline: Deadline | None = None) -> Iterator[TraceEvent]:
        """The events not read yet, kept as they come, until ``end`` (or the deadline)."""
        if self.cursor.ended:
            return
        with self._sync_platform() as platform:
            for event in iter_trace(platform, self.cursor, deadline):
                self._keep(event)
                yield event

    async def aevents(self) -> AsyncIterator[TraceEvent]:
        """:meth:`events` for async code."""
        for event in list(self._events):
            yield event
        if self.cursor.ended:
            return
        async with self._async_platform() as platform:
            async for event in aiter_trace(platform, self.cursor):
                self._keep(event)
                yield event

    def _keep(self, event: TraceEvent) -> None:
        self._events.append(event)
        if event.event == "processor":
            self._rows.append(event.data)  # converted now, while the next event is on its way
        elif event.event == "execution" and isinstance(event.data, dict):
            self._start = event.data.get("startTime")

    # ---------------------------------------------------------------- results

    def _result(self) -> Op[Execution]:
        """After ``end``: the replay's execution, or the reason there is none (core operation)."""
        if self._execution is not None:
            return self._execution
        platform = self._platform or self._aplatform
        assert platform is not None
        session = platform.session
        # Only a COMPLETED replay has a result: a platform that names an execution for one that
        # ended otherwise names something else's (found by review: an agent's ack could).
        if self.cursor.result_execution_id is None or self.status != "COMPLETED":
            self.replay = yield from session.call("GET", f"/replays/{session.quote(self.replay_id)}")
            result = self.replay.get("result") or {}
            raise ReplayFailed(
                f"replay {self.replay_id} ended {self.status} without an execution"
                + (f": {result.get('errorMessage')}" if result.get("errorMessage") else ""),
                replay_id=self.replay_id,
                status=str(self.status),
                hint="run.replay has the details; platform.replay_receipt(replay_id) its audit record",
            )
        self._execution = self._from_trace()
        if self._execution is None:
            self._execution = yield from op_execution(session, self.cursor.result_execution_id)
        return self._execution

    def _from_trace(self) -> Execution | None:
        """The replay's Execution built from the events read (no I/O), or None when they do not
        hold all of it.

        Section 5: the ``execution`` event is the replay's Execution without processors and the
        ``processor`` events are its records, so a trace read to ``end`` holds what
        ``GET /executions/{id}`` would send again (~140 KB for an orders replay: a round trip
        and a second parse, 5-7 ms of the ~25 ms a ``wait()`` took). It is used only when it is
        whole: the ``execution`` event names the replay's result, the records belong to it and
        there are ``processorCount`` of them; otherwise (a platform that sends less, a
        malformed event) the stored execution is fetched, as before."""
        if not self.cursor.ended or self.cursor.result_execution_id is None:
            return None
        final = next((e.data for e in self._events if e.event == "execution"), None)
        if not isinstance(final, dict) or final.get("executionId") != self.cursor.result_execution_id:
            return None
        records = [e.data for e in self._events if e.event == "processor"]
        if final.get("processorCount") != len(records) or any(
            not isinstance(r, dict) or r.get("executionId") != final["executionId"] for r in records
        ):
            return None
        try:
            return Execution.from_wire({**final, "processors": records})
        except (TypeError, ValueError):  # RecordError is a ValueError: the stored one decides
            return None

    def wait(self, timeout: float | timedelta | None = None) -> Execution:
        """Read the trace to ``end`` and return the replay's Execution (with processors).

        Raises ReplayFailed (code ``REPLAY_<STATUS>``) when the replay ended without one (``ERROR``,
        ``TIMED_OUT``, ``ABORTED``), WaitTimeout ``WAIT_TIMEOUT`` (a TransportError and a
        TimeoutError) after ``timeout`` seconds (a number, or a timedelta); a timeout that is not
        one is ValidationError ``BAD_TIMEOUT``.
        """
        timeout = _wait_seconds(timeout)
        if timeout is None:
            for _ in self._read():
                pass
        elif not self.cursor.ended:
            # Read here, with this platform's own client (its transport, proxy, certificates),
            # until the end or the deadline, whichever comes first.
            deadline = Deadline(timeout)
            try:
                for _ in self._read(deadline):
                    pass
            finally:
                deadline.cancel()
            if not self.cursor.ended:
                raise self._timed_out(timeout, "run.wait()")
        with self._sync_platform() as platform:
            return platform._run(self._result())

    def _timed_out(self, seconds: float, again: str) -> WaitTimeout:
        return WaitTimeout(
            f"replay {self.replay_id} did not end within {seconds:g} s (status {self.status})",
            hint=f"it goes on running: call {again} again to keep waiting",
            details={"replayId": self.replay_id, "lastEventId": self.cursor.last_id},
        )

    async def await_(self, timeout: float | timedelta | None = None) -> Execution:
        """:meth:`wait` for async code, with its ``timeout``: ``execution = await
        run.await_(timeout=30)``; ``await run`` is ``await run.await_()`` (no limit). Its name is
        ``wait``'s async twin as :meth:`aevents` and :meth:`atrace` are (``a`` + ``wait``), with
        PEP 8's trailing underscore for the keyword.

        Raises what :meth:`wait` raises: WaitTimeout ``WAIT_TIMEOUT`` (a TransportError and a
        TimeoutError) after ``timeout`` seconds, the replay going on (awaiting again picks up
        after the last event read: none is lost or read twice), ReplayFailed, ValidationError
        ``BAD_TIMEOUT`` for a timeout that is not a time to wait. ``asyncio.wait_for(run, 30)``
        raised a bare TimeoutError instead, which ``except TransportError`` (and a notebook's
        one line) did not tell from the others."""
        seconds = _wait_seconds(timeout)
        if seconds is not None and not self.cursor.ended:
            # A cancel scope, not a watchdog thread as wait() needs: the read awaits, and is
            # cancelled at the deadline (anyio: the loop AsyncPlatform runs on, asyncio or trio).
            events = self.aevents()
            with anyio.move_on_after(seconds):
                async for _ in events:
                    pass
            await events.aclose()
            if not self.cursor.ended:
                raise self._timed_out(seconds, "await run.await_()")
        return await self._await()

    async def _await(self) -> Execution:
        async for _ in self.aevents():
            pass
        async with self._async_platform() as platform:
            return await platform._run(self._result())

    def __await__(self) -> Generator[Any, None, Execution]:
        """``execution = await run``: :meth:`wait` for async code (``await run.await_(timeout=30)``
        waits at most 30 s)."""
        return self._await().__await__()

    def frame(self, backend: Backend = "pandas") -> Any:
        """The processors frame of the events read so far (no I/O). Offsets count from the
        replay execution's start once its ``execution`` event arrived (from the first processor
        before that); a replay always runs with ``PROCESSOR`` capture (section 3)."""
        return to_frame(self._rows.table(execution_start=self._start, capture_mode="PROCESSOR"), backend)

    def trace(self, backend: Backend = "pandas") -> Any:
        """The replay's processors frame (``backend="polars"`` for polars), once it ended."""
        for _ in self.events():
            pass
        return self.frame(backend)

    async def atrace(self, backend: Backend = "pandas") -> Any:
        """:meth:`trace` for async code."""
        async for _ in self.aevents():
            pass
        return self.frame(backend)

    def live(self, backend: Backend = "pandas", *, display: bool = True) -> LiveTrace:
        """In Jupyter: a table and a progress line that fill as processors arrive.

        The trace is read by an asyncio task on the kernel's own running loop (no threads, no
        nest_asyncio); ``await view.wait()`` gives the full frame once it ended.
        """
        return LiveTrace(self, backend=backend, display=display)


# --------------------------------------------------------------------------- LiveTrace

_COLUMNS = ("seq", "routeId", "processorId", "processorType", "status", "durationMs")


class LiveTrace:
    """An ipywidgets view of a running replay: a progress line and the processors table.

    Made by :meth:`ReplayRun.live`; filled by a task on the running event loop (the kernel's),
    so only that loop's thread touches the widgets. ``frame()`` is the frame so far;
    ``await view.wait()`` the full one; ``view.task`` the task; ``view.error`` what stopped it.
    """

    #: Seconds between two renderings of the table (events arrive faster than anyone reads).
    refresh = 0.1

    def __init__(self, run: ReplayRun, *, backend: Backend = "pandas", display: bool = True) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise MoatError(
                "live() needs a running event loop, as a Jupyter kernel has",
                code="NO_EVENT_LOOP",
                hint="outside Jupyter use run.events() or run.trace(), or await run.atrace()",
            ) from None
        import ipywidgets as widgets

        self.run = run
        self.backend = backend
        self.error: BaseException | None = None
        self.progress = widgets.HTML(value=self._progress_text())
        self.table = widgets.HTML(value=self._table_html([]))
        self.view = widgets.VBox([self.progress, self.table])
        self._rows: list[str] = []
        self._shown = 0  # events of run._events already in the table
        #: Threads that drew the widgets: only the loop's own (kept to show it, and for tests).
        self.draw_threads: set[int] = set()
        self._drawn = 0.0
        self._displayed = False
        self.task: asyncio.Task[Any] = loop.create_task(self._fill())
        if display:
            self._ipython_display_()

    def _ipython_display_(self) -> None:
        # Shown once: `run.live()` as a cell's last line would otherwise be shown twice.
        if self._displayed:
            return
        from IPython.display import display

        self._displayed = True
        display(self.view)

    def _progress_text(self, final: bool = False) -> str:
        run = self.run
        n = sum(1 for e in run._events if e.event == "processor")
        text = f"<b>{html.escape(run.replay_id)}</b> · {html.escape(run.status)} · {n} processors"
        if self.error is not None:
            text += f" · <span style='color:#b00'>{html.escape(str(self.error))}</span>"
        elif final and run.cursor.result_execution_id:
            text += f" · execution {html.escape(run.cursor.result_execution_id)}"
        return text

    @staticmethod
    def _table_html(rows: list[str]) -> str:
        head = "".join(f"<th>{c}</th>" for c in _COLUMNS)
        return (
            "<div style='max-height:320px;overflow:auto'><table><thead><tr>"
            f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        )

    def _draw(self, final: bool = False) -> None:
        self.draw_threads.add(threading.get_ident())
        # The rows come from the run's kept events, not from what this task read: another
        # reader of the run (the next cell's run.wait()) may have read them first.
        kept = self.run._events
        for event in kept[self._shown :]:
            if event.event == "processor":
                cells = "".join(f"<td>{html.escape(str(event.data.get(c, '')))}</td>" for c in _COLUMNS)
                self._rows.append(f"<tr>{cells}</tr>")
        self._shown = len(kept)
        self.progress.value = self._progress_text(final)
        self.table.value = self._table_html(self._rows)

    async def _fill(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for _ in self.run.aevents():
                if loop.time() - self._drawn >= self.refresh:
                    self._draw()
                    self._drawn = loop.time()
        except BaseException as exc:
            self.error = exc
            self._draw()
            raise
        self._draw(final=True)

    @property
    def done(self) -> bool:
        return self.task.done()

    def frame(self) -> Any:
        """The processors frame of what arrived so far."""
        return self.run.frame(self.backend)

    async def wait(self) -> Any:
        """The full processors frame, once the replay ended."""
        await self.task
        return self.run.frame(self.backend)

    def cancel(self) -> None:
        """Stop following (the replay itself goes on)."""
        self.task.cancel()
