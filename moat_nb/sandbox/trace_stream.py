"""The replay trace stream ``GET /replays/{replayId}/events`` and its stream tickets (DESIGN.md
section 5; reference/security.md section 4).

The stream is a pure reader of ``replay_events`` (:class:`~moat_nb.sandbox.replays.ReplayService`
stores every event before anyone is sent it): it sends the stored events after the client's
``Last-Event-ID`` (or ``?lastEventId=``), then waits on the replay's signal for the next stored
event and reads again — so resume and live tail are one code path, and the replay never depends
on a connection. The events a live replay has just committed are read from memory
(:meth:`~moat_nb.sandbox.replays.ReplayService.tail_after`: the rows the worker wrote, handed
over after the commit), anything else from the store. ``retry: 3000`` goes first;
sse-starlette sends the comment pings (``config.ping_interval``) and drops a client that does
not take an event within ``config.send_timeout`` (it resumes from the store).

Status codes (WHATWG EventSource: anything but 200 ``text/event-stream`` stops a browser from
reconnecting): 204 after ``end`` when the client has seen it, 404 for an unknown replay or one
the caller may not read, 400 for a Last-Event-ID that is not a non-negative integer or that was
never sent.

Stream tickets: a browser's ``EventSource`` cannot send ``Authorization``, and a bearer token in
a URL leaks into access logs (security.md 4.1), so ``POST /replays/{id}/stream-ticket`` gives a
random ticket valid once, for 60 s, for that replay and that user, used as ``?ticket=``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ..errors import ApiError, AuthenticationError, NotFound, PermissionDenied, ValidationError
from ..model import Chunk, Execution, ProcessorRecord
from .openapi import USER, Operation, self_checked
from .security import Principal

if TYPE_CHECKING:
    from .replays import ReplayService
    from .state import SandboxState

__all__ = [
    "RETRY_MS",
    "BATCH_BYTES",
    "TICKET_TTL",
    "StreamCount",
    "TicketBook",
    "TooManyStreams",
    "encode_event",
    "parse_last_event_id",
    "stream_operations",
    "processor_event",
    "stored_processor_event",
    "execution_event",
]

log = logging.getLogger(__name__)

#: The reconnection time sent first (section 5).
RETRY_MS = 3000
#: Section 4: stream tickets last 60 s.
TICKET_TTL = timedelta(seconds=60)
# ASCII digits only: `\d` also matches other scripts' digits ("٣"), which int() reads too.
_DIGITS = re.compile(r"[0-9]{1,18}")


def parse_last_event_id(header: str | None, query: str | None) -> int:
    """The id the client saw last: the ``Last-Event-ID`` header, else ``?lastEventId=``, else 0.

    400 ``BAD_LAST_EVENT_ID`` unless it is a non-negative decimal integer (ids are 1, 2, 3 ...).
    """
    raw = header if header is not None else query
    if raw is None or raw == "":
        return 0  # an empty id resets the last event id (WHATWG), i.e. "from the start"
    if not _DIGITS.fullmatch(raw.strip()):
        raise ValidationError(
            f"Last-Event-ID {raw[:40]!r} is not an event id of this stream",
            code="BAD_LAST_EVENT_ID",
            hint="send the id of the last event received (1, 2, 3 ...), or none to start over",
        )
    return int(raw.strip())


class TooManyStreams(ApiError):
    """429: a user holds ``config.max_streams`` open trace streams (``TOO_MANY_STREAMS``) or
    unused stream tickets (``TOO_MANY_TICKETS``). ``retry_after`` (seconds, sent as
    ``Retry-After``) only where it is known: when the user's oldest ticket expires."""

    code = "TOO_MANY_STREAMS"
    status = 429

    def __init__(self, message: str, *, retry_after: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class StreamCount:
    """Open trace streams per user, at most ``limit`` each: one user opening streams without
    end (or never reading them) held a coroutine, a socket and a store reader each, and could
    exhaust the sandbox for everyone (review finding). Used on the server's event loop only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def open(self, user: str) -> None:
        """Count a stream of ``user``; 429 ``TOO_MANY_STREAMS`` when it has ``limit`` open."""
        self.check(user)
        self._open[user] = self._open.get(user, 0) + 1

    def check(self, user: str) -> None:
        """429 ``TOO_MANY_STREAMS`` when ``user`` has ``limit`` streams open (nothing counted)."""
        n = self._open.get(user, 0)
        if n >= self.limit:
            raise TooManyStreams(
                f"{n} trace streams of this user are open; at most {self.limit} may be",
                hint="close streams you no longer read (each replay's stream ends by itself after "
                "`end`); a batch reads one per row in flight, so lower its concurrency",
                details={"limit": self.limit},
            )

    def close(self, user: str) -> None:
        n = self._open.get(user, 0) - 1
        if n > 0:
            self._open[user] = n
        else:
            self._open.pop(user, None)

    def of(self, user: str) -> int:
        """The streams ``user`` has open now."""
        return self._open.get(user, 0)


class TicketBook:
    """Single-use stream tickets: ticket -> (replayId, principal, expiry). Thread-safe.

    At most ``limit`` unused, unexpired tickets per user (review finding: unbounded, one user
    could fill the server's memory with them); beyond, 429 ``TOO_MANY_TICKETS`` with the
    seconds until that user's oldest ticket expires as ``Retry-After``."""

    def __init__(self, ttl: timedelta = TICKET_TTL, *, limit: int = 256) -> None:
        self.ttl = ttl
        self.limit = limit
        self._tickets: dict[str, tuple[str, Principal, datetime]] = {}
        self._lock = threading.Lock()

    def issue(self, principal: Principal, replay_id: str, now: datetime) -> dict[str, object]:
        ticket = secrets.token_urlsafe(32)
        with self._lock:
            # Forget expired tickets so that the book stays small.
            for t in [t for t, (_, _, exp) in self._tickets.items() if exp <= now]:
                del self._tickets[t]
            held = [exp for _, p, exp in self._tickets.values() if p.username == principal.username]
            if len(held) >= self.limit:
                wait = max(1, math.ceil((min(held) - now).total_seconds()))
                raise TooManyStreams(
                    f"this user holds {len(held)} unused stream tickets; at most {self.limit} may be",
                    code="TOO_MANY_TICKETS",
                    retry_after=wait,
                    hint=f"use the tickets you have (each opens one stream, once) or wait {wait} s "
                    "for the oldest to expire",
                    details={"limit": self.limit, "retryAfter": wait},
                )
            self._tickets[ticket] = (replay_id, principal, now + self.ttl)
        return {"ticket": ticket, "expiresIn": int(self.ttl.total_seconds())}

    def holder(self, ticket: str) -> Principal | None:
        """Whose ticket this is (None: unknown), without using it up."""
        with self._lock:
            entry = self._tickets.get(ticket)
        return None if entry is None else entry[1]

    def redeem(self, ticket: str, replay_id: str, now: datetime) -> Principal:
        """The principal of a valid ticket for ``replay_id``; the ticket is used up either way.

        401 ``BAD_TICKET`` for an unknown, used, expired or other-replay ticket."""
        with self._lock:
            entry = self._tickets.pop(ticket, None)
        if entry is None or entry[2] <= now or entry[0] != replay_id:
            raise _bad_ticket()
        return entry[1]


def _bad_ticket() -> AuthenticationError:
    """401 ``BAD_TICKET``: one answer whatever is wrong with a ticket."""
    return AuthenticationError(
        "the stream ticket is unknown, used, expired or for another replay",
        code="BAD_TICKET",
        hint="get a new one with POST /api/v1/replays/{replayId}/stream-ticket (single use, 60 s)",
    )


class _TraceResponse(EventSourceResponse):
    """An EventSourceResponse that treats a send timeout as the planned end of a slow client's
    stream (security.md SSE-5) instead of an application error: the client resumes from the
    store with its Last-Event-ID."""

    def __init__(self, *args: Any, on_close: Callable[[], None], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.info(
                "trace stream %s: client too slow, dropped (it resumes from the store)", scope.get("path")
            )
        finally:
            self._on_close()  # the user's stream count (StreamCount), however the stream ended


#: Stored events are written to the socket in batches of about this many bytes: one write per
#: event (~50 for an orders trace) cost a syscall and a GIL hand-over each, which dominated the
#: round trip on a busy machine; a batch still bounds what a client that hung up is written.
BATCH_BYTES = 64 * 1024


def encode_event(event_id: int, event: str, data: str) -> bytes:
    """The bytes :meth:`ServerSentEvent.encode` gives for one stored event (WHATWG HTML 9.2.5
    framing, CRLF as sse-starlette writes it). Stored data is compact JSON, one line, and event
    names are ours: the common case is formatted directly, because sse-starlette splits every
    event's data with a regular expression (1.5 ms of a 50-event trace); anything holding a line
    break goes through it."""
    if "\n" in data or "\r" in data or "\n" in event or "\r" in event:
        return ServerSentEvent(id=str(event_id), event=event, data=data).encode()
    return f"id: {event_id}\r\nevent: {event}\r\ndata: {data}\r\n\r\n".encode()


async def _events(svc: ReplayService, replay_id: str, after: int) -> AsyncIterator[ServerSentEvent | bytes]:
    yield ServerSentEvent(retry=RETRY_MS)
    last = after
    while True:
        # Take the signal *before* reading, so that an event stored between the read and the
        # wait still wakes us.
        wake = svc.signal(replay_id)
        # A live replay's new events are in memory, as committed (no read back, no thread hop);
        # a resume from further back, or a replay of an earlier run, reads the store.
        rows = svc.tail_after(replay_id, last)
        if rows is None:
            rows = await run_in_threadpool(svc.events_after, replay_id, last)
        batch: list[bytes] = []
        size = 0
        for event_id, event, data in rows:
            encoded = encode_event(event_id, event, data)
            batch.append(encoded)
            size += len(encoded)
            last = event_id
            if event == "end":
                yield b"".join(batch)
                return  # section 5: after `end` the server closes
            if size >= BATCH_BYTES:
                yield b"".join(batch)
                batch, size = [], 0
                # Let the loop run its callbacks between two batches: a client that hung up is
                # noticed (and this stream cancelled) instead of being written the whole backlog.
                await asyncio.sleep(0)
        if batch:
            yield b"".join(batch)
        if rows:
            continue
        if svc.closing:
            return
        await wake.wait()


async def _check_visible(svc: ReplayService, principal: Principal, replay_id: str, request: Request) -> None:
    """``svc.check_visible``, its 404 audited (section 6; review finding 4b): the check on the
    loop, the audit write (a refusal only) in the threadpool."""
    try:
        svc.check_visible(principal, replay_id)
    except NotFound:
        from .replay_api import RequestInfo

        await run_in_threadpool(svc.deny_read, principal, replay_id, RequestInfo.of(request))
        raise


def stream_operations(state: SandboxState, service: Callable[[], ReplayService]) -> list[Operation]:
    """``GET /replays/{replayId}/events`` and ``POST /replays/{replayId}/stream-ticket``."""
    from .replay_api import principal_of

    # One limit for both, per user: open trace streams, and unused tickets (each opens one).
    tickets = TicketBook(limit=state.config.max_streams)
    streams = StreamCount(state.config.max_streams)

    async def events(request: Request, _: Principal | None) -> Response:
        svc = service()
        replay_id = request.path_params["replayId"]
        ticket = request.query_params.get("ticket")
        if ticket is not None and "authorization" not in request.headers:
            # A user at the stream limit keeps the ticket: used up by a 429, a browser's retry
            # with it once a stream closed got 401 BAD_TICKET instead (review finding).
            owner = tickets.holder(ticket)
            if owner is not None:
                streams.check(owner.username)
            # Who asked for the ticket, with the permissions they hold now, as a bearer token's
            # request is checked (section 6; security.md RBAC-7): not those of when they asked.
            holder = state.authority.current(tickets.redeem(ticket, replay_id, state.clock()))
            if holder is None:
                raise _bad_ticket()  # the user is gone from the users file
            principal = holder
        else:
            principal = principal_of(state, request)
        if principal.kind != "user":
            # Audited as any refused read of a replay (section 6: every denied attempt), and
            # answered as one: 404, whether the replay exists or not.
            from .replay_api import RequestInfo

            await run_in_threadpool(
                svc.deny_read, principal, replay_id, RequestInfo.of(request), "an agent's token, not a user's"
            )
            raise NotFound(f"no replay {replay_id!r}", details={"replayId": replay_id})
        try:
            svc.check_tier()
        except PermissionDenied as exc:
            # Audited as server._run audits the other replay endpoints' refusals (section 6):
            # this one identifies its caller itself, so _run cannot (review finding 4a).
            from .server import _audit_denial

            await _audit_denial(state, request.scope["endpoint"].operation, request, principal, exc)
            raise
        # Two lookups by key (tens of microseconds each) run here on the loop: a thread hop
        # costs more CPU than either (about 0.1 ms, and a hand-off of the interpreter lock).
        await _check_visible(svc, principal, replay_id, request)
        after = parse_last_event_id(
            request.headers.get("last-event-id"), request.query_params.get("lastEventId")
        )
        last_id, last_event = svc.last_event(replay_id)
        if last_event == "end" and after >= last_id:
            return Response(status_code=204)
        if after > last_id:
            raise ValidationError(
                f"Last-Event-ID {after} was never sent on this stream (the newest event is {last_id})",
                code="BAD_LAST_EVENT_ID",
                hint="send the id of the last event received",
            )
        svc.bind_loop()
        user = principal.username
        streams.open(user)  # 429 TOO_MANY_STREAMS; closed by the response however it ends
        try:
            return _TraceResponse(
                _events(svc, replay_id, after),
                ping=state.config.ping_interval,
                send_timeout=state.config.send_timeout,
                headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
                on_close=lambda: streams.close(user),
            )
        except BaseException:
            streams.close(user)
            raise

    async def stream_ticket(request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        svc = service()
        replay_id = request.path_params["replayId"]
        await _check_visible(svc, principal, replay_id, request)  # on the loop (see events above)
        return JSONResponse(
            tickets.issue(principal, replay_id, state.clock()), headers={"Cache-Control": "no-store"}
        )

    return [
        Operation(
            "GET",
            "/replays/{replayId}/events",
            events,
            access=self_checked(
                "a browser EventSource cannot send Authorization: the stream takes a bearer token "
                "or a single-use ?ticket= from POST /replays/{replayId}/stream-ticket"
            ),
            tier=True,
            operation_id="replayEvents",
            summary="The replay's trace as server-sent events (status, processor, execution, end)",
            tag="replays",
            media_type="text/event-stream",
            parameters=[
                {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
                {"name": "lastEventId", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "ticket", "in": "query", "required": False, "schema": {"type": "string"}},
            ],
            responses={
                200: ("the event stream; ids 1, 2, 3 ...", {"type": "string"}),
                204: ("the replay ended and the client has seen its last event", None),
            },
            errors=(404, 429),
        ),
        Operation(
            "POST",
            "/replays/{replayId}/stream-ticket",
            stream_ticket,
            access=USER,
            tier=True,
            operation_id="replayStreamTicket",
            summary="A single-use, 60 s ticket to open the trace stream without Authorization",
            tag="replays",
            responses={
                200: (
                    "the ticket",
                    {
                        "type": "object",
                        "required": ["ticket", "expiresIn"],
                        "properties": {"ticket": {"type": "string"}, "expiresIn": {"type": "integer"}},
                    },
                )
            },
            errors=(404, 429),
        ),
    ]


# --------------------------------------------------------------------------- event data


def processor_event(p: ProcessorRecord, chunk: Chunk, redactor: Any) -> dict[str, Any]:
    """The ``processor`` event's data: the record's wire form with ``replayId``, secret headers
    and properties redacted as in the stored trace (the server redacted the chunk already; the
    Redactor leaves markers as they are, so this only guards a chunk that was not).
    ``redactor`` None: the chunk is known to be redacted already (skips the second pass)."""
    if redactor is None:
        # The wire form patched, rather than a patched record's wire form: the same dict (the
        # keys are there already, in their order) without copying the record (~50 per replay).
        wire = p.to_wire()
        wire["executionId"] = p.execution_id or chunk.execution_id
        wire["exchangeId"] = p.exchange_id or chunk.exchange_id
        wire["replayId"] = chunk.replay_id
        return _as_stored(wire)
    fixed = replace(
        p,
        execution_id=p.execution_id or chunk.execution_id,
        exchange_id=p.exchange_id or chunk.exchange_id,
        replay_id=chunk.replay_id,
        input_headers=redactor.mapping(p.input_headers),
        output_headers=redactor.mapping(p.output_headers),
        input_properties=redactor.mapping(p.input_properties),
        properties=redactor.mapping(p.properties),
    )
    return _as_stored(fixed.to_wire())


def _as_stored(wire: dict[str, Any]) -> dict[str, Any]:
    """``durationMs`` as the store keeps it (a REAL column), so that a stream read back from the
    store is the stream sent: a Java agent's long 3 is 3.0 both ways, and -0.0 is 0.0. (The
    store has checked the chunk: a finite number within 64 bits, or null.)"""
    duration = wire.get("durationMs")
    if duration is not None:
        wire["durationMs"] = float(duration) + 0.0
    return wire


def stored_processor_event(p: ProcessorRecord, replay_id: str) -> dict[str, Any]:
    """The ``processor`` event's data from the stored (redacted) record: what
    :func:`processor_event` gave when the record's chunk came in (a stored record has its
    executionId and exchangeId; its maps and ``durationMs`` read back as they were sent, once
    :func:`processor_event` has written ``durationMs`` as the store keeps it)."""
    wire = p.to_wire()
    wire["replayId"] = replay_id
    return wire


def execution_event(x: Execution, replay_id: str, redactor: Any) -> dict[str, Any]:
    """The ``execution`` event's data: the replay's Execution without processors, redacted
    (``redactor`` None: it is redacted already)."""
    if redactor is None:
        return replace(x, processors=None, replay_id=replay_id, is_replay=True).to_wire()
    fixed = replace(
        x,
        processors=None,
        replay_id=replay_id,
        is_replay=True,
        input_headers=redactor.mapping(x.input_headers),
        output_headers=redactor.mapping(x.output_headers),
        input_properties=redactor.mapping(x.input_properties),
        output_properties=redactor.mapping(x.output_properties),
    )
    return fixed.to_wire()
