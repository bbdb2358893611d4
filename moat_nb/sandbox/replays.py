"""Replays: the lifecycle, idempotency and the replay audit events (DESIGN.md sections 4-7;
issue 3 items 4-6, issue 4 items 3 and 7). The endpoints are in :mod:`.replay_api`, the trace
stream in :mod:`.trace_stream`, the tables in :mod:`.replay_tables`.

Lifecycle (server-seams.md)::

    POST /replays  --one transaction: idempotency claim, replay PENDING, status event 1,
                     REPLAY_REQUESTED-->  signed ``replay`` command to the agent
      --> RUNNING (first chunk or ack SUCCESS; REPLAY_STARTED)
      --> COMPLETED (final chunk: ``execution``, ``status``, ``end``; REPLAY_COMPLETED, or
          REPLAY_FAILED when the route itself failed — result.status says which)
      | ERROR (ack FAILURE, or the command could not be queued; REPLAY_ERROR)
      | TIMED_OUT (no final chunk within ``config.replay_timeout``; REPLAY_ERROR whose detail
          says TIMED_OUT: section 7 has no action of its own for it)
      | ABORTED (found PENDING/RUNNING at start-up; REPLAY_ABORTED; never run again)

Every state change writes its ``status`` event (``replay_events``) and its audit event in the
one transaction that changes the ``replays`` row, so an event is stored before anyone can be
sent it; the trace stream only reads ``replay_events``.

Threads. Every write to the replay tables runs on one worker thread, in the order it was
submitted — chunk after chunk, ack, timeout — so a replay's events get their ids in the order
things happened, and the event loop never waits on SQLite's write lock. Reads use the
threadpool. Stream readers wait on :meth:`ReplayService.signal`, set from the worker through
``call_soon_threadsafe`` once a transaction has committed, with the events it stored: a live
stream sends those from memory (:meth:`ReplayService.tail_after`) instead of reading them back.

Idempotency (section 4; security.md section 5): ``(tenant, user, key)`` -> SHA-256 of the JCS of
the body and the replay, kept 24 h. The same key and body give back the same replay (202 with
``Idempotent-Replayed: true``; never a second run, whatever its status — an ABORTED one stays
ABORTED); another body is 422. The claim is an ``INSERT ... ON CONFLICT`` in the transaction that
creates the replay, so two concurrent requests cannot both run. Nothing is claimed for a request
that fails validation or permission, so retrying it after a fix is safe (as Stripe does).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from ..errors import (
    AgentUnavailable,
    ApiError,
    AuditUnavailable,
    ControlHeaderRejected,
    IdempotencyConflict,
    MoatError,
    NotFound,
    PermissionDenied,
    RecordError,
)
from ..model import Chunk, Execution, check_id, format_time
from ..payload import (
    EFFECTIVE_HASH_VERSION,
    REQUEST_HASH_VERSION,
    effective_payload,
    effective_payload_sha256,
    map_sha256,
    payload_diff,
    payload_secrets,
    redact_patch,
    request_sha256,
    scrub_text,
    text_sha256,
    trace_digest,
    trace_sha256,
)
from .audit_log import NO_SOURCE
from .camel.endpoints import LOCAL_SCHEMES, uri_scheme
from .encoder import dumps_text
from .preflight import no_source, preflight
from .replay_api import (
    ReplayRequest,
    RequestInfo,
    actor_of,
    audit_source_id,
    check_idempotency_key,
    screen_control_headers,
)
from .replay_tables import (
    REPLAY_COLUMNS,
    claim_key,
    create_tables,
    dumps,
    emit_events,
    events_after,
    find_key,
    last_event,
    list_replays,
    parse_processor_ref,
    processor_ref,
    processor_refs,
    replay_resource,
    select_replay,
)
from .security import Principal, check_tier, is_prod, replay_permissions, require_all
from .trace_stream import execution_event, processor_event, stored_processor_event

if TYPE_CHECKING:
    from .openapi import Operation
    from .state import SandboxState
    from .store import IndexJob

__all__ = [
    "TERMINAL_STATUSES",
    "IDEMPOTENCY_TTL",
    "ReplayService",
    "replay_routes",
    "recorded_replies",
]

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"COMPLETED", "ERROR", "TIMED_OUT", "ABORTED"})
#: Section 4: keys are kept 24 h.
IDEMPOTENCY_TTL = timedelta(hours=24)
#: How long the committed events of an ended replay stay in memory for the readers it woke.
_TAIL_KEPT_S = 2.0
#: A replay's text-index job waits for the service to be this quiet (no replay created, no
#: chunk taken for that many seconds) ... (:meth:`ReplayService._index_later`)
_INDEX_QUIET_S = 0.05
#: ... unless this many jobs wait ...
_INDEX_BATCH = 16
#: ... or the oldest has waited this many seconds; then all waiting jobs run in one transaction.
_INDEX_MAX_WAIT_S = 1.0
_SYSTEM_ACTOR = {"username": "moat-nb-sandbox", "roles": ["SYSTEM"], "permissions": []}


def replay_routes(state: SandboxState) -> list[Operation]:
    """The replay endpoints as declared operations (``create_app`` mounts them under /api/v1)."""
    from .replay_api import replay_operations

    return replay_operations(state)


def _epoch_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


# --------------------------------------------------------------------------- the service


class ReplayService:
    """Creates replays, follows them through chunks, acks and timeouts, and keeps their events.

    Made by :meth:`SandboxState.create` as ``ReplayService(state)``; the server calls
    :meth:`startup` before serving, :meth:`ingest` to store a chunk with a ``replayId``,
    :meth:`on_ack` for each first ack (it registers itself with ``state.agents.on_ack``) and
    :meth:`shutdown` when it stops.
    """

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.store = state.store
        self.audit = state.audit
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="replays")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals: dict[str, asyncio.Event] = {}
        self._timeouts: dict[str, asyncio.Task[None]] = {}
        #: Chunks that arrived before their predecessors (replayId -> chunkSeq -> chunk); worker only.
        self._held: dict[str, dict[int, Chunk]] = {}
        self._next_chunk: dict[str, int] = {}
        #: The processor records of the chunks taken so far, for the ``traceSha256`` of the
        #: terminal audit event (:func:`moat_nb.payload.trace_digest`); worker only.
        self._trace: dict[str, list[Any]] = {}
        #: The command of each live replay (replayId -> (agent, commandId)), withdrawn at its end.
        self._commands: dict[str, tuple[str, str]] = {}
        #: When each live replay's agent was last heard from (monotonic s): its timeout counts
        #: from there (:meth:`_start_timer`).
        self._heard: dict[str, float] = {}
        #: The trace events written by the open transaction of a thread (:meth:`_transaction`).
        self._written = threading.local()
        #: Committed trace events of live replays, (id, event, data JSON) in id order; loop only.
        self._tails: dict[str, list[tuple[int, str, str]]] = {}
        #: Seconds an ended replay's events stay in memory for the readers it woke.
        self.tail_kept = _TAIL_KEPT_S
        #: When text-index jobs run (:meth:`_index_later`): after this many quiet seconds ...
        self.index_quiet = _INDEX_QUIET_S
        #: ... or once this many wait, or the oldest has waited this long.
        self.index_batch = _INDEX_BATCH
        self.index_max_wait = _INDEX_MAX_WAIT_S
        #: time.monotonic() of the last replay created or chunk taken (what "quiet" is judged by).
        self._last_activity = 0.0
        #: The secret values of live replays' effective payloads (memory only: storing them would
        #: be the leak), looked for in the error texts of their chunks and acks.
        self._secrets: dict[str, frozenset[str]] = {}
        #: Index jobs held back, with when each came (monotonic); ``None`` once shutting down
        #: (run them at once). ``_index_look_at``: when the next look at them is scheduled on
        #: the loop (monotonic; None: no look scheduled).
        self._index_waiting: list[tuple[IndexJob, float]] | None = []
        self._index_look_at: float | None = None
        self._index_lock = threading.Lock()
        self.store.index_wanted = self._index_now
        self._routesets: dict[str, Any] | None = None
        self._routesets_lock = threading.Lock()
        self.closing = False
        with self.audit.transaction() as conn:
            create_tables(conn)
        state.agents.on_ack(self.on_ack)

    # ---------------------------------------------------------------- plumbing

    @property
    def tenant_id(self) -> str:
        return self.state.users.tenant.id

    def check_tier(self) -> None:
        """403 ``TIER_NOT_ENTITLED`` unless the tenant's tier includes replay (every endpoint)."""
        check_tier(self.state.users.tenant.tier)

    def bind_loop(self) -> None:
        """Remember the server's event loop (for waking stream readers from the worker)."""
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                pass

    def _now(self) -> datetime:
        return self.state.clock()

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the worker. On the event loop: returns an awaitable future (callers may
        ignore it); elsewhere: waits and returns the result."""
        future = self._worker.submit(self._guarded, fn, *args)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return future.result()
        return asyncio.wrap_future(future, loop=loop)

    @staticmethod
    def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except MoatError:
            raise  # a refusal with a code (a malformed chunk, no audit log): the caller answers it
        except Exception:
            log.exception("replay worker: %s failed", getattr(fn, "__name__", fn))
            raise

    def signal(self, replay_id: str) -> asyncio.Event:
        """The event set at the next stored event of ``replay_id`` (call on the loop)."""
        self.bind_loop()
        event = self._signals.get(replay_id)
        if event is None:
            event = self._signals[replay_id] = asyncio.Event()
        return event

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """The audit log's write transaction (:meth:`AuditLog.transaction`) for a change of
        replays: the trace events it writes (:meth:`_emit`) are handed to the replays' readers
        once it has committed — never before, so that nothing is sent that is not stored
        (section 5) — and nothing is handed on if it rolls back. Joins an open one."""
        written = getattr(self._written, "rows", None)
        if written is not None:
            with self.audit.transaction() as conn:
                yield conn
            return
        rows: list[tuple[str, int, str, str]] = []
        self._written.rows = rows
        try:
            with self.audit.transaction() as conn:
                yield conn
        finally:
            self._written.rows = None
        for replay_id in dict.fromkeys(r[0] for r in rows):
            self._notify(replay_id, [(r[1], r[2], r[3]) for r in rows if r[0] == replay_id])

    def _emit(
        self, conn: sqlite3.Connection, replay_id: str, events: list[tuple[str, Mapping[str, Any]]]
    ) -> int:
        """Store trace events of ``replay_id`` inside :meth:`_transaction`; the last id."""
        return emit_events(conn, replay_id, events, getattr(self._written, "rows", None))

    def tail_after(self, replay_id: str, after: int) -> list[tuple[int, str, str]] | None:
        """The committed events of ``replay_id`` after id ``after`` as the worker handed them
        to the loop (call on the loop), or None when they are not all in memory (a replay
        of an earlier server run, a reader behind the tail): then read :meth:`events_after`.
        Saves the live stream reading back what was written a moment ago."""
        tail = self._tails.get(replay_id)
        if not tail or not tail[0][0] <= after + 1 <= tail[-1][0] + 1:
            return None
        return tail[after + 1 - tail[0][0] :]

    def _notify(self, replay_id: str, rows: list[tuple[int, str, str]] | None = None) -> None:
        """Wake the readers of ``replay_id`` (from any thread), after a commit; ``rows`` are the
        events it stored, for :meth:`tail_after`."""

        def wake() -> None:
            if rows:
                tail = self._tails.setdefault(replay_id, [])
                if tail and tail[-1][0] + 1 != rows[0][0]:
                    tail.clear()  # not contiguous (cannot happen with one writer): start anew
                tail.extend(rows)
                if rows[-1][1] == "end":
                    # Readers woken now take the end from memory; later ones read the store.
                    assert self._loop is not None
                    self._loop.call_later(self.tail_kept, self._tails.pop, replay_id, None)
            event = self._signals.pop(replay_id, None)
            if event is not None:
                event.set()

        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake()
        else:
            loop.call_soon_threadsafe(wake)

    # ---------------------------------------------------------------- start-up, shutdown

    def startup(self) -> list[str]:
        """Mark every PENDING/RUNNING replay ABORTED (with its events and audit event): a replay
        left running by a crash or a stop is never run again (section 4). Returns their ids."""
        self.bind_loop()
        return self._submit_sync(self._abort_all)

    def _submit_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._worker.submit(self._guarded, fn, *args).result()

    def _abort_all(self) -> list[str]:
        conn = self.store._conn()
        ids = [
            r[0] for r in conn.execute("SELECT replay_id FROM replays WHERE status IN ('PENDING', 'RUNNING')")
        ]
        for replay_id in ids:
            self._finish(
                replay_id,
                "ABORTED",
                result={
                    "status": None,
                    "durationMs": None,
                    "outputBodySha256": None,
                    "errorType": "ServerRestart",
                    "errorMessage": "the server stopped while the replay was in flight; "
                    "it is not run again (replay it anew if needed)",
                },
                action="REPLAY_ABORTED",
                outcome="ABORTED",
            )
        return ids

    def close_streams(self) -> None:
        """End every open trace stream (they resume from the store on reconnect); the server
        calls this before stopping uvicorn, which waits for open responses."""
        self.closing = True

        def wake_all() -> None:
            for event in self._signals.values():
                event.set()
            self._signals.clear()

        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake_all()
        else:
            loop.call_soon_threadsafe(wake_all)

    def shutdown(self) -> None:
        """Stop the timers and the streams, finish the queued writes and sign the shutdown
        checkpoint of the audit log (section 7). Replays still PENDING/RUNNING stay so; the
        next :meth:`startup` marks them ABORTED."""
        for task in list(self._timeouts.values()):
            task.cancel()
        self._timeouts.clear()
        self.close_streams()
        with self._index_lock:
            waiting, self._index_waiting = self._index_waiting or [], None
        if waiting:  # held back: run them now, before the worker stops
            self._index_on_worker([job for job, _ in waiting])
        self._worker.shutdown(wait=True)
        self.audit.close()

    # ---------------------------------------------------------------- audit

    def _audit(self, conn: sqlite3.Connection, action: str, **kw: Any) -> int:
        """Append an audit event inside ``conn``'s transaction (:meth:`AuditLog.append`)."""
        return int(self.audit.append(conn, action, **kw)["seq"])

    def audit_standalone(self, action: str, **kw: Any) -> int | None:
        """One audit event in its own transaction, for a request that is refused anyway
        (denials, refused control headers): if the audit write fails, the refusal still stands
        and the failure is logged; the seq, or None then."""
        try:
            return int(self.audit.record(action, **kw)["seq"])
        except AuditUnavailable:
            log.error("a refused request (%s) could not be audited", action)
            return None

    def audit_events(self, replay_id: str | None = None) -> list[dict[str, Any]]:
        """Stored audit events in seq order (all, or those of one replay)."""
        return self.audit.events(replay_id)

    # ---------------------------------------------------------------- events

    def events_after(self, replay_id: str, after: int, limit: int = 500) -> list[tuple[int, str, str]]:
        """Stored events of a replay with ``id > after``, in id order: ``(id, event, data)``,
        each as it was sent (a ``processor`` event stored as a reference to its record is
        expanded from that record: :data:`~.replay_tables.PROCESSOR_REF`)."""
        rows = events_after(self.store._conn(), replay_id, after, limit)
        wanted = processor_refs(rows)
        if not wanted:
            return rows
        records = {eid: self.store.processors(eid, seqs) for eid, seqs in wanted.items()}
        expanded = []
        for event_id, event, data in rows:
            ref = parse_processor_ref(event, data)
            if ref is not None:
                seq, execution_id = ref
                record = records[execution_id].get(seq)
                if record is None:  # cannot happen: stored together, never replaced
                    raise MoatError(
                        f"event {event_id} of replay {replay_id} refers to processor {seq} of "
                        f"execution {execution_id}, which is not stored",
                        code="TRACE_INCOMPLETE",
                    )
                data = dumps_text(stored_processor_event(record, replay_id))
            expanded.append((event_id, event, data))
        return expanded

    def last_event(self, replay_id: str) -> tuple[int, str | None]:
        """The newest event id of a replay (0 if none) and its event name."""
        return last_event(self.store._conn(), replay_id)

    # ---------------------------------------------------------------- reading replays

    def get(self, replay_id: str) -> dict[str, Any] | None:
        """The Replay resource (wire form), or None."""
        return select_replay(self.store._conn(), self.tenant_id, replay_id)

    def visible(
        self, principal: Principal, replay_id: str, info: RequestInfo | None = None
    ) -> dict[str, Any]:
        """The replay if ``principal`` requested it or holds ``audit:read``; else 404 — the same
        answer as for a replay that does not exist, so ids cannot be probed (section 5). With
        ``info`` (the request), the refusal is audited (:meth:`deny_read`)."""
        replay = self.get(replay_id)
        if replay is None or not _may_read(principal, replay["requestedBy"]):
            if info is not None:
                self.deny_read(principal, replay_id, info)
            raise _no_replay(replay_id)
        return replay

    def deny_read(
        self, principal: Principal, replay_id: str, info: RequestInfo, reason: str | None = None
    ) -> None:
        """Audit a read of a replay answered 404 (``REPLAY_DENIED``; section 6 "Every denied
        attempt is audited"; security review finding 4b): another user's replay without
        ``audit:read``, and an unknown id as well — recording only the first would make the
        404 of an existing replay slower than the other one, and so tell them apart again.

        ``target.replayId`` is null (``detail.replayId`` names it): the event must not join
        the audit record of a replay that is not the caller's, as ``AUDIT_QUERIED`` does not.
        ``reason``, when given, is the refusal's reason (an agent's token: no replay is read)."""
        if reason is None:
            row = self._requester(replay_id)
            reason = "no such replay" if row is None else "another user's replay, and no audit:read"
        self.audit_standalone(
            "REPLAY_DENIED",
            actor=actor_of(principal),
            source=info.to_wire(),
            target={"replayId": None},
            detail={"reason": reason, "code": "NOT_FOUND", "replayId": replay_id},
            outcome="DENIED",
        )

    def agent_environments(self, instance_id: str) -> set[str]:
        """The environments the tenant's replays were sent to agent ``instance_id`` in."""
        rows = (
            self.store._conn()
            .execute(
                "SELECT DISTINCT target_environment FROM replays WHERE agent_id = ? AND tenant_id = ?",
                (instance_id, self.tenant_id),
            )
            .fetchall()
        )
        return {str(r[0]) for r in rows}

    def requested_by(self, replay_id: str) -> str | None:
        """The user who requested the tenant's replay ``replay_id``, or None when there is none."""
        row = self._requester(replay_id)
        return None if row is None else str(row[0])

    def _requester(self, replay_id: str) -> tuple[Any, ...] | None:
        """``(requested_by,)`` of the tenant's replay, or None when it has no such replay."""
        row: tuple[Any, ...] | None = (
            self.store._conn()
            .execute(
                "SELECT requested_by FROM replays WHERE replay_id = ? AND tenant_id = ?",
                (replay_id, self.tenant_id),
            )
            .fetchone()
        )
        return row

    def check_visible(self, principal: Principal, replay_id: str) -> None:
        """:meth:`visible` without building the Replay (its audit seqs, its JSON columns): the
        trace stream only needs the answer, and opens while the agent runs the replay (P2)."""
        row = self._requester(replay_id)
        if row is None or not _may_read(principal, row[0]):
            raise _no_replay(replay_id)

    def list(self, principal: Principal, params: Mapping[str, str]) -> dict[str, Any]:
        """``GET /replays``: newest first. Without ``audit:read`` only one's own replays."""
        only = None if principal.has("audit:read") else principal.username
        return list_replays(self.store._conn(), self.tenant_id, params, only=only)

    # ---------------------------------------------------------------- creating a replay

    def _deny(
        self, principal: Principal, exc: ApiError, info: RequestInfo, target: Mapping[str, Any]
    ) -> None:
        self.audit_standalone(
            "REPLAY_DENIED",
            actor=actor_of(principal),
            source=info.to_wire(),
            target=target,
            detail={
                "reason": exc.message,
                "code": exc.code,
                **{k: v for k, v in exc.details.items() if k != "principal"},
            },
            outcome="DENIED",
        )

    def _existing(self, principal: Principal, key: str, fingerprint: str) -> dict[str, Any] | None:
        """The replay an unexpired key already made (same body), or 422 for another body."""
        found = find_key(self.store._conn(), self.tenant_id, principal.subject, key, _epoch_ms(self._now()))
        if found is None:
            return None
        if found[0] != fingerprint:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with another request body",
                hint="use a new key for a different replay; retry only with the identical body",
                details={"replayId": found[1]},
            )
        return self.get(found[1])

    async def screen(self, principal: Principal, body: Any, info: RequestInfo) -> None:
        """400 ``CONTROL_HEADER`` (:class:`ControlHeaderRejected`), audited as
        ``CONTROL_HEADER_REJECTED``, when ``body`` (a ``POST /replays`` body, parsed) names a
        Camel control header in ``modifiedPayload.headers``; nothing otherwise. Section 4
        refuses such an attempt and audits it (security.md: "log the attempt as a security
        event"), so it runs before every other check of the request, whatever else is wrong."""
        try:
            screen_control_headers(body)
        except ControlHeaderRejected as exc:
            await run_in_threadpool(
                self.audit_standalone,
                "CONTROL_HEADER_REJECTED",
                actor=actor_of(principal),
                source=info.to_wire(),
                target={"sourceExchangeId": audit_source_id(body)},
                detail={"headers": exc.details.get("headers", []), "reason": exc.message},
                outcome="REJECTED",
            )
            raise

    async def create(
        self, principal: Principal, body: Any, key_header: str | None, info: RequestInfo
    ) -> tuple[dict[str, Any], bool]:
        """``POST /replays``: the Replay, and whether it was made now (False: an idempotent retry).

        Order (server-seams.md): control headers (refused and audited, before anything else
        is checked) -> the ``Idempotency-Key`` header (``key_header``) -> validate -> an earlier
        replay under this key -> the permissions that do not depend on environments -> source
        execution (404) -> the permissions its environment needs (403, audited) -> target agent
        (503) -> permissions from stored environments (403, audited) -> one transaction:
        idempotency claim, replay row, status event, REPLAY_REQUESTED -> signed command to the
        agent -> timeout timer.
        """
        self.bind_loop()
        self._last_activity = time.monotonic()
        await self.screen(principal, body, info)  # first (section 4; review finding 3)
        key = check_idempotency_key(key_header)
        req = ReplayRequest.parse(body)
        # Lookups by key run on the loop: cheaper than the thread hop that would carry them.
        existing = self._existing(principal, key, req.fingerprint)
        if existing is not None:
            return existing, False

        modified = not req.modified.is_empty()
        target = {"sourceExchangeId": req.source_exchange_id}
        base = ["replay:run", "replay:modify"] if modified else ["replay:run"]
        try:
            require_all(principal, base)
        except PermissionDenied as exc:
            await run_in_threadpool(self._deny, principal, exc, info, target)
            raise

        # The id by its index on the loop (tens of microseconds); the execution from the cache
        # of recent reads when it is there (a notebook replays what it just looked at), else
        # read in the threadpool (a trace is ms of SQLite and decoding).
        source_id = self.store.replay_source_id(req.source_exchange_id)
        source = None
        if source_id is not None:
            source = self.store.cached_execution(source_id) or await run_in_threadpool(
                self.store.execution, source_id
            )
        if source is None:
            raise await run_in_threadpool(no_source, self.store, req.source_exchange_id)
        target = {**target, "routeId": source.route_id, "environment": source.environment}
        # Section 6, before the agent is picked: the stored source's environment (and a target
        # environment the body names, which can only add to what is needed) decide already.
        # Picked first, a missing agent's 503 answered an operator without replay:prod, unaudited,
        # and told them which agents exist and run (security review finding 4c).
        early = replay_permissions(
            source.environment, req.target_environment or source.environment, modified=modified
        )
        # A named agent's registered environment counts too, whatever targetEnvironment claims:
        # named beside a "dev" claim, the prod agent answered 503 (it runs prod, not dev) to an
        # operator without replay:prod, unaudited (security walk; security.md RBAC-3).
        named = self.state.agents.get(req.target_agent) if req.target_agent else None
        if named is not None:
            also = replay_permissions(source.environment, named.environment_id, modified=modified)
            early += [p for p in also if p not in early]
        try:
            require_all(principal, early)
        except PermissionDenied as exc:
            exc.details["sourceEnvironment"] = source.environment
            if named is not None and is_prod(named.environment_id) and not is_prod(source.environment):
                target["environment"] = named.environment_id  # the prod side is the agent's
                exc.details["targetEnvironment"] = named.environment_id
            await run_in_threadpool(self._deny, principal, exc, info, target)
            raise
        agent = self.state.agents.pick(
            req.target_environment
            if req.target_environment is not None or req.target_agent
            else source.environment,
            instance_id=req.target_agent,
        )
        if agent.route_ids and source.route_id not in agent.route_ids:
            raise AgentUnavailable(
                f"agent {agent.instance_id!r} does not run route {source.route_id!r}",
                hint="pick an agent of the same application",
                details={"instanceId": agent.instance_id, "routeId": source.route_id},
            )
        # Section 6: environments from stored data only (the source execution, the chosen
        # agent's registration), never from what the body claims.
        needed = replay_permissions(source.environment, agent.environment_id, modified=modified)
        try:
            require_all(principal, needed)
        except PermissionDenied as exc:
            target["environment"] = agent.environment_id
            exc.details["sourceEnvironment"] = source.environment
            exc.details["targetEnvironment"] = agent.environment_id
            await run_in_threadpool(self._deny, principal, exc, info, target)
            raise

        original = source.start_payload
        effective = effective_payload(original, req.modified)
        secrets = payload_secrets(effective, self.state.redactor.value)
        # The secrets' values are hidden where the modified body repeats them too, as the
        # trace hides them (section 4 "Secrets"; security review: the diff showed them).
        diff = redact_patch(payload_diff(original, effective), self.state.redactor.value, secrets)
        replay_id = f"replay-{uuid.uuid4().hex}"
        command_id = uuid.uuid4().hex
        command = {
            "type": "replay",
            "commandId": command_id,
            "replayId": replay_id,
            "sourceExchangeId": source.exchange_id,
            "sourceExecutionId": source.execution_id,
            "routeId": source.route_id,
            "environment": agent.environment_id,
            # The real values: the agent runs them (section 4 "Secrets").
            "modifiedPayload": effective.to_wire(),
            "stubReplies": recorded_replies(source),
        }
        fresh = _Fresh(
            replay_id=replay_id,
            command_id=command_id,
            principal=principal,
            key=key,
            fingerprint=req.fingerprint,
            req=req,
            source=source,
            agent_id=agent.instance_id,
            target_environment=agent.environment_id,
            diff=diff,
            # Over the secrets' fingerprints, not their values: published beside the redacted
            # diff, a plain hash would let a reader search for short secrets (section 4).
            effective_sha=effective_payload_sha256(effective, self.state.redactor.value),
            info=info,
        )
        if secrets:
            self._secrets[replay_id] = secrets  # before the agent can answer
        try:
            created, earlier = await self._submit(self._insert, fresh)
        except BaseException:  # refused (422, 503): no replay, so nothing to keep them for
            self._secrets.pop(replay_id, None)
            raise
        if created is None:  # a concurrent request with the same key won the claim
            self._secrets.pop(replay_id, None)
            assert earlier is not None  # the key is taken, unexpired: its replay is there
            return earlier, False
        try:
            # The command lives as long as the replay waits for it: an agent that gets it after
            # the replay timed out refuses it as expired, instead of running a replay the
            # platform has given up on (found by review).
            await self.state.agents.send(agent.instance_id, command, ttl=self.state.config.replay_timeout)
            self._commands[replay_id] = (agent.instance_id, command_id)
        except ApiError as exc:
            await self._submit(self._fail_send, replay_id, exc.message)
            created = self.get(replay_id)  # ended ERROR
        else:
            self._start_timer(replay_id)
        # The Replay as written (PENDING), not read back: the agent has the command, and the
        # loop turns to it sooner (a read-back here cost ~0.3 ms of the round trip, P2).
        assert created is not None
        return created, True

    def _insert(self, f: _Fresh) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Claim the key and create the replay in one transaction (worker thread). Returns
        ``(the Replay made, None)``, or ``(None, the replay of a concurrent claim)`` if one won
        the key; raises 422 / 503 as appropriate."""
        now = self._now()
        now_ms = _epoch_ms(now)
        try:
            with self._transaction() as conn:
                ttl_ms = int(IDEMPOTENCY_TTL.total_seconds() * 1000)
                claimed = claim_key(
                    conn,
                    self.tenant_id,
                    f.principal.subject,
                    f.key,
                    f.fingerprint,
                    f.replay_id,
                    now_ms,
                    ttl_ms,
                )
                if not claimed:
                    raise _KeyTaken()
                row = (
                    f.replay_id, f.command_id, f.source.exchange_id, f.source.execution_id,
                    f.source.environment, f.target_environment, f.agent_id, f.source.route_id,
                    "PENDING", f.principal.username, format_time(now), None, None, f.req.reason, f.key,
                    None if f.info.client is None else dumps(f.info.client), dumps(f.diff),
                    f.effective_sha, None, None,
                )  # fmt: skip
                conn.execute(
                    f"INSERT INTO replays (tenant_id, requested_ms, {', '.join(REPLAY_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * (len(REPLAY_COLUMNS) + 2))})",
                    (self.tenant_id, now_ms, *row),
                )
                self._emit(conn, f.replay_id, [("status", {"replayId": f.replay_id, "status": "PENDING"})])
                seq = self._audit(
                    conn,
                    "REPLAY_REQUESTED",
                    actor=actor_of(f.principal),
                    source=f.info.to_wire(),
                    target={
                        "replayId": f.replay_id,
                        "sourceExchangeId": f.source.exchange_id,
                        "routeId": f.source.route_id,
                        "environment": f.target_environment,
                    },
                    detail={
                        "payloadDiff": f.diff,
                        "reason": f.req.reason,
                        "idempotencyKeySha256": hashlib.sha256(f.key.encode("ascii")).hexdigest(),
                        "targetAgent": f.agent_id,
                        "sourceEnvironment": f.source.environment,
                        "targetEnvironment": f.target_environment,
                        "sourceExecutionId": f.source.execution_id,
                        "effectivePayloadSha256": f.effective_sha,
                        "effectivePayloadHashVersion": EFFECTIVE_HASH_VERSION,
                        # Beyond section 7's list: the request's modifiedPayload, secrets hidden,
                        # hashed so that a report's claimed payload can be checked offline.
                        "modifiedPayloadSha256": request_sha256(_mapping(f.req.raw.get("modifiedPayload"))),
                        "modifiedPayloadHashVersion": REQUEST_HASH_VERSION,
                        "modified": bool(f.diff) or not f.req.modified.is_empty(),
                    },
                    outcome="ACCEPTED",
                )
        except _KeyTaken:
            return None, self._existing(f.principal, f.key, f.fingerprint)
        except (sqlite3.Error, RecordError) as exc:
            # Fail closed (section 7): no audit record, no replay.
            log.error("replay %s not created: %s", f.replay_id, exc)
            raise AuditUnavailable(
                f"the replay and its audit record could not be written ({type(exc).__name__}); nothing ran",
                hint="retry later with the same Idempotency-Key",
            ) from None
        return replay_resource(row, [seq]), None

    def _fail_send(self, replay_id: str, message: str) -> None:
        self._finish(
            replay_id,
            "ERROR",
            result=_error_result("AgentUnavailable", f"the replay command could not be queued: {message}"),
            action="REPLAY_ERROR",
            outcome="ERROR",
        )

    # ---------------------------------------------------------------- timeouts

    def _start_timer(self, replay_id: str) -> None:
        """TIMED_OUT after ``replay_timeout`` seconds in which the agent sent nothing for the
        replay (no chunk, no ack): silence, not the whole run, so that an agent still posting a
        long trace, or waiting out the server's 503 + Retry-After, is not cut off (found by
        review: the timer ran from the request)."""
        timeout = self.state.config.replay_timeout
        self._heard[replay_id] = time.monotonic()

        async def expire() -> None:
            try:
                while True:
                    remaining = self._heard.get(replay_id, 0.0) + timeout - time.monotonic()
                    if remaining > 0:
                        await asyncio.sleep(remaining)
                    elif await self._submit(self._time_out, replay_id, timeout):
                        break
            except asyncio.CancelledError:
                pass
            except Exception:  # logged by the worker
                pass
            finally:
                self._timeouts.pop(replay_id, None)

        self._timeouts[replay_id] = asyncio.get_running_loop().create_task(expire())

    def _time_out(self, replay_id: str, timeout: float) -> bool:
        """End a silent replay TIMED_OUT; False if the agent was heard from meanwhile (the
        worker took its chunk or ack while this waited in the queue)."""
        if time.monotonic() - self._heard.get(replay_id, 0.0) < timeout:
            return False
        replay = self.get(replay_id)
        if replay is None or replay["status"] in TERMINAL_STATUSES:
            return True
        agent = self.state.agents.get(replay["agentId"])
        if agent is None:
            why = "the agent is no longer registered"
        elif agent.status != "LIVE":
            why = (
                f"the agent is {agent.status} (command channel {'open' if agent.channel_open else 'closed'})"
            )
        else:
            why = "the agent is LIVE but did not report the trace"
        self._finish(
            replay_id,
            "TIMED_OUT",
            result=_error_result(
                "ReplayTimeout",
                f"agent {replay['agentId']!r} was silent for {timeout:g} s (no chunk, no ack) before "
                f"the final trace chunk; {why}",
            ),
            action="REPLAY_ERROR",
            outcome="TIMED_OUT",
        )
        return True

    def _cancel_timer(self, replay_id: str) -> None:
        task = self._timeouts.pop(replay_id, None)
        if task is None or self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(task.cancel)

    # ---------------------------------------------------------------- transitions

    def _start(self, conn: sqlite3.Connection, replay_id: str, actor: Mapping[str, Any], via: str) -> bool:
        """PENDING -> RUNNING inside ``conn``'s transaction; False if it was not PENDING."""
        now = format_time(self._now())
        changed = conn.execute(
            "UPDATE replays SET status = 'RUNNING', started_at = ? "
            "WHERE replay_id = ? AND status = 'PENDING'",
            (now, replay_id),
        ).rowcount
        if not changed:
            return False
        row = conn.execute(
            "SELECT source_exchange_id, route_id, target_environment, agent_id "
            "FROM replays WHERE replay_id = ?",
            (replay_id,),
        ).fetchone()
        self._emit(conn, replay_id, [("status", {"replayId": replay_id, "status": "RUNNING"})])
        self._audit(
            conn,
            "REPLAY_STARTED",
            actor=actor,
            source=NO_SOURCE,
            target={
                "replayId": replay_id,
                "sourceExchangeId": row[0],
                "routeId": row[1],
                "environment": row[2],
            },
            detail={"agentId": row[3], "via": via},
            outcome="STARTED",
        )
        return True

    def _finish(self, replay_id: str, status: str, **end: Any) -> bool:
        """PENDING/RUNNING -> a terminal status, with ``execution`` (if given), ``status`` and
        ``end`` events and the terminal audit event, in one transaction (``end``: the keyword
        arguments of :meth:`_end`). False if already ended."""
        with self._transaction() as conn:
            ended = self._end(conn, replay_id, status, **end)
        if ended:
            self._ended(replay_id)
        return ended

    def _end(
        self,
        conn: sqlite3.Connection,
        replay_id: str,
        status: str,
        *,
        result: Mapping[str, Any],
        action: str,
        outcome: str,
        result_execution_id: str | None = None,
        execution_event: Mapping[str, Any] | None = None,
        processor_count: int | None = None,
        output_maps: Mapping[str, str | None] | None = None,
    ) -> bool:
        """What :meth:`_finish` writes, inside the caller's transaction on ``conn``; the caller
        calls :meth:`_ended` once it has committed. False if the replay had ended already."""
        now = format_time(self._now())
        row = conn.execute(
            "SELECT status, source_exchange_id, route_id, target_environment, agent_id, started_at "
            "FROM replays WHERE replay_id = ?",
            (replay_id,),
        ).fetchone()
        if row is None or row[0] in TERMINAL_STATUSES:
            return False
        conn.execute(
            "UPDATE replays SET status = ?, finished_at = ?, started_at = coalesce(started_at, ?), "
            "result_execution_id = coalesce(?, result_execution_id), result = ? WHERE replay_id = ?",
            (
                status,
                now,
                now if status == "COMPLETED" else None,
                result_execution_id,
                dumps(result),
                replay_id,
            ),
        )
        (result_id,) = conn.execute(
            "SELECT result_execution_id FROM replays WHERE replay_id = ?", (replay_id,)
        ).fetchone()
        self._emit(
            conn,
            replay_id,
            [
                *([("execution", execution_event)] if execution_event is not None else []),
                ("status", {"replayId": replay_id, "status": status}),
                ("end", {"replayId": replay_id, "status": status, "resultExecutionId": result_id}),
            ],
        )
        self._audit(
            conn,
            action,
            actor=_SYSTEM_ACTOR if status in ("TIMED_OUT", "ABORTED") else _agent_actor(row[4]),
            source=NO_SOURCE,
            target={
                "replayId": replay_id,
                "sourceExchangeId": row[1],
                "routeId": row[2],
                "environment": row[3],
            },
            detail={
                "replayStatus": status,
                "resultExecutionId": result_id,
                "resultStatus": result.get("status"),
                "outputBodySha256": result.get("outputBodySha256"),
                "durationMs": result.get("durationMs"),
                "processorCount": processor_count,
                "errorType": result.get("errorType"),
                "errorMessage": result.get("errorMessage"),
                # Beyond section 7's list: the output's maps, hashed as the body is, and the
                # processors' outputs (traceSha256), so that an offline check vouches for them
                # too (moat_nb.evidence).
                **(output_maps or {}),
            },
            outcome=outcome,
        )
        return True

    def _ended(self, replay_id: str) -> None:
        """After the transaction that ended the replay committed (and woke its readers): forget
        its chunk state, stop its timer."""
        self._held.pop(replay_id, None)
        self._next_chunk.pop(replay_id, None)
        self._trace.pop(replay_id, None)
        self._secrets.pop(replay_id, None)
        self._heard.pop(replay_id, None)
        command = self._commands.pop(replay_id, None)
        if command is not None:
            self.state.agents.withdraw(*command)
        self._cancel_timer(replay_id)

    # ---------------------------------------------------------------- hooks: acks and chunks

    def heard_from(self, instance_id: str) -> None:
        """The agent spoke (a chunk the server asked it to send again later): each of its live
        replays' timeouts counts from now (:meth:`_start_timer`)."""
        now = time.monotonic()
        for replay_id, (agent_id, _) in list(self._commands.items()):
            if agent_id == instance_id and replay_id in self._heard:
                self._heard[replay_id] = now

    def on_ack(self, instance_id: str, command_id: str, ack: Mapping[str, Any]) -> Any:
        """A first ack from an agent (registered with ``AgentRegistry.on_ack``)."""
        return self._submit(self._ack, instance_id, command_id, dict(ack))

    def _ack(self, instance_id: str, command_id: str, ack: dict[str, Any]) -> None:
        row = (
            self.store._conn()
            .execute("SELECT replay_id, agent_id, status FROM replays WHERE command_id = ?", (command_id,))
            .fetchone()
        )
        if row is None or row[1] != instance_id or row[2] in TERMINAL_STATUSES:
            return  # not a replay command of this agent, or the replay already ended
        replay_id = row[0]
        if replay_id in self._heard:
            self._heard[replay_id] = time.monotonic()
        if ack.get("status") == "SUCCESS":
            # The ack's data names the execution the agent made, but the replay's result is the
            # execution its final chunk stored (_end): an ack alone could name any execution,
            # a prod one included, as the result of a replay that then timed out (found by review).
            with self._transaction() as conn:
                self._start(conn, replay_id, _agent_actor(instance_id), "ack")
            return
        message = scrub_text(ack.get("message"), self._secrets.get(replay_id, ()), self.state.redactor.value)
        self._finish(
            replay_id,
            "ERROR",
            result=_error_result(
                "AgentFailure",
                f"agent {instance_id!r} could not run the replay: "
                + (message if isinstance(message, str) and message else "no reason given"),
            ),
            action="REPLAY_ERROR",
            outcome="ERROR",
        )

    def ingest(
        self,
        chunk: Chunk,
        instance_id: str,
        redact: Callable[[Chunk, frozenset[str]], Chunk] | None = None,
        stored: Callable[[], None] | None = None,
    ) -> Any:
        """Store a chunk tagged with a ``replayId`` (from ``POST /data/chunks``) and follow its
        replay, on the worker (one thread hop for both). Returns the stored (redacted) chunk:
        an awaitable on the event loop, the chunk itself elsewhere.

        ``redact`` turns the chunk as sent into the chunk to keep (the server's redaction, given
        the replay's payload secrets to look for in error texts), or None when it needs none.
        ``instance_id`` is the posting agent; a chunk of a replay that another agent runs is
        refused (403), one of an execution another agent records too (409, the store), one of
        a replay the platform never sent (404 ``NO_SUCH_REPLAY``), one naming another source
        (400), and one that comes after its replay ended (409 ``REPLAY_ENDED``, unless it is a
        chunk already stored: a retry). Each chunk or ack restarts the replay's timeout.

        The chunk is checked completely first: a malformed one raises :class:`RecordError`
        with nothing written. Then one transaction writes the chunk's rows, the ``processor``
        events of the chunks now in ``chunkSeq`` order (a chunk that comes early is stored and
        held back from the trace until its predecessors are in), the move to RUNNING and — once
        the final chunk is in sequence — the replay's end (``execution``, ``status``, ``end``,
        the terminal audit event). So ``end`` is never sent before the replay's execution can
        be read, and a chunk whose write fails leaves no trace event behind: the agent's retry
        finds everything as it was. The execution's row of the text index is written after
        the commit (:meth:`Store.write_checked`); a text search waits for it. ``stored`` is
        called on the worker right after the commit (the server remembers the chunk's secret
        values there, for the trace's next chunks, even if the request is cancelled meanwhile)."""
        return self._submit(self._ingest, chunk, instance_id, redact, stored)

    def _ingest(
        self,
        chunk: Chunk,
        instance_id: str,
        redact: Callable[[Chunk, frozenset[str]], Chunk] | None,
        stored: Callable[[], None] | None = None,
    ) -> Chunk:
        self._last_activity = time.monotonic()
        # Checked before it is looked up (the whole chunk is checked below, after the lookup
        # that decides whose it is): schemathesis sent an object here.
        replay_id = check_id(chunk.replay_id, "replayId")  # type: ignore[arg-type]
        row = (
            self.store._conn()
            .execute(
                "SELECT status, agent_id, source_exchange_id FROM replays WHERE replay_id = ?", (replay_id,)
            )
            .fetchone()
        )
        if row is None:
            # A trace tagged with a replay nobody requested would be found as a replay of its
            # claimed source, with no Replay resource and no audit record (section 7: every
            # replay has one). Found by review.
            raise NotFound(
                f"no replay {replay_id!r}: a replay's trace is accepted only for a replay the platform sent",
                code="NO_SUCH_REPLAY",
                hint="tag a chunk with the replayId of a replay command this agent received",
                details={"replayId": replay_id},
            )
        if instance_id != row[1]:
            # Only the replay's agent writes its trace: another's chunk would be found as the
            # replay's execution by a search on its replayId.
            raise PermissionDenied(
                f"replay {replay_id} runs on agent {row[1]!r}; agent {instance_id!r} cannot post its trace",
                hint="post a replay's chunks from the agent its command went to",
                details={"replayId": replay_id, "agentId": row[1]},
            )
        chunk = _stamp_source(chunk, row[2])
        if redact is not None:
            chunk = redact(chunk, self._secrets.get(replay_id, frozenset()))
        checked = self.store.check(chunk, instance_id)
        follow = row[0] not in TERMINAL_STATUSES
        if follow and replay_id in self._heard:
            self._heard[replay_id] = time.monotonic()
        if not follow and not self.store.has_chunk(checked):
            # A trace that comes after its replay ended (TIMED_OUT, ERROR, ABORTED, or beyond a
            # final chunk) is refused: stored, it would be a run the replay's audit record says
            # did not happen. The same chunk again (a retry whose 202 was lost) stays a no-op.
            raise ApiError(
                f"replay {replay_id} has ended ({row[0]}); its trace is no longer accepted",
                status=409,
                code="REPLAY_ENDED",
                hint="stop the run: the platform gave up on this replay; the requester can replay again",
                details={"replayId": replay_id, "status": row[0]},
            )
        taken = self._in_sequence(replay_id, chunk) if follow else []
        trace = self._trace.get(replay_id, []) + [
            p for c in taken for p in (c.processors or _processors_of(c))
        ]
        job = None
        try:
            with self._transaction() as conn:
                job = self.store.write_checked(conn, checked, defer_index=True)
                if taken:
                    self._start(conn, replay_id, _agent_actor(row[1]), "chunk")
                    self._emit(
                        conn,
                        replay_id,
                        [
                            ("processor", processor_event(p, c, None), processor_ref(p.seq, c.execution_id))
                            for c in taken
                            for p in sorted(c.processors or _processors_of(c), key=_seq)
                        ],
                    )
                final = taken[-1] if taken and taken[-1].final else None
                ended = final is not None and self._end(
                    conn, replay_id, **self._ending(replay_id, final, trace)
                )
        except BaseException:
            if job is not None:
                self.store.drop_index(job)
            raise
        finally:
            self.store.forget(checked.execution_id)
        if stored is not None:
            stored()
        self._last_activity = time.monotonic()  # a long ingest is not a quiet moment either
        if follow:
            self._advance(replay_id, chunk, taken)
            self._trace[replay_id] = trace
        if ended:
            self._ended(replay_id)
        if job is not None:
            self._index_later(job)
        return chunk

    def _index_later(self, job: IndexJob) -> None:
        """Hold a chunk's text-index job back until the service is quiet (called on the worker,
        after the commit).

        Why: the job is ~1 ms of Python and FTS5 work and a commit. Run at once, it held the
        interpreter lock while the loop sent the trace and the ``end`` it had just woken; run
        25 ms later (the previous rule), it fell into the next replay of a notebook replaying
        one exchange after another: 1.1-1.7 ms of that replay's round trip (P2, DESIGN.md
        section 11; measured in blocks of 20 replays). So the jobs wait for ``index_quiet``
        seconds without a new replay or chunk, or until ``index_batch`` wait or the oldest has
        waited ``index_max_wait``, and then all run in one transaction (one FTS5 segment). A
        text search runs them at once (:attr:`Store.index_wanted`), and a job that comes while
        a search waits runs at once too, so nothing is missed and no search waits long; a job
        lost with the process is done at the next open (``text_pending``)."""
        loop = self._loop
        with self._index_lock:
            waiting = self._index_waiting
            if waiting is not None and loop is not None and not loop.is_closed():
                now = time.monotonic()
                waiting.append((job, now))
                if len(waiting) >= self.index_batch or self.store.index_awaited:
                    # Queued behind this task on the worker: after the loop has the trace.
                    self._index_on_worker(self._take_waiting())
                    return
                every = self._index_every()
                at = now + every
                if self._index_look_at is not None and self._index_look_at <= at:
                    return  # a look is due by then
                try:
                    loop.call_soon_threadsafe(loop.call_later, every, self._index_look, at)
                    self._index_look_at = at
                    return
                except RuntimeError:  # the loop closed meanwhile
                    waiting.pop()
        self.store.index(job)

    def _index_every(self) -> float:
        """Seconds between two looks at the waiting jobs."""
        return min(self.index_quiet, self.index_max_wait)

    def _index_look(self, at: float) -> None:
        """On the loop: hand the waiting jobs to the worker if it is time (see
        :meth:`_index_later`), else look again in a while. ``at``: when this look was meant
        for; a look that an earlier one replaced does nothing (one chain of looks at a time)."""
        now = time.monotonic()
        with self._index_lock:
            if self._index_look_at != at:
                return
            self._index_look_at = None
            waiting = self._index_waiting
            if not waiting:
                return
            due = (
                now - self._last_activity >= self.index_quiet
                or len(waiting) >= self.index_batch
                or now - waiting[0][1] >= self.index_max_wait
            )
            if not due:
                assert self._loop is not None
                every = self._index_every()
                self._index_look_at = now + every
                self._loop.call_later(every, self._index_look, self._index_look_at)
                return
            jobs = self._take_waiting()
        self._index_on_worker(jobs)

    def _take_waiting(self) -> list[IndexJob]:
        """Empty the waiting list (under ``_index_lock``); a look still scheduled then finds it
        empty and stops, or finds the jobs that came since."""
        assert self._index_waiting is not None
        jobs = [job for job, _ in self._index_waiting]
        self._index_waiting.clear()
        return jobs

    def _index_now(self) -> None:
        """Run the waiting jobs without waiting for a quiet moment (a text search needs them;
        any thread)."""
        with self._index_lock:
            waiting = self._index_waiting
            if not waiting:
                return
            jobs = self._take_waiting()
        self._index_on_worker(jobs)

    def _index_on_worker(self, jobs: list[IndexJob]) -> None:
        """Run index jobs on the worker, in one transaction (here, if the worker has stopped)."""
        try:
            self._worker.submit(self._guarded, self.store.index, *jobs)
        except RuntimeError:  # the worker stopped (shutting down)
            self.store.index(*jobs)

    def _in_sequence(self, replay_id: str, chunk: Chunk) -> list[Chunk]:
        """The chunks whose events are due once ``chunk`` is in: the held ones and this one,
        from the next expected ``chunkSeq`` on, up to a gap or the final chunk (pure: the
        state changes in :meth:`_advance`, after the commit)."""
        expected = self._next_chunk.get(replay_id, 0)
        if chunk.chunk_seq < expected:
            return []  # a retry of a chunk already taken
        held = self._held.get(replay_id, {})
        pool = {**held, chunk.chunk_seq: held.get(chunk.chunk_seq, chunk)}
        taken: list[Chunk] = []
        while expected + len(taken) in pool:
            taken.append(pool[expected + len(taken)])
            if taken[-1].final:
                break
        return taken

    def _advance(self, replay_id: str, chunk: Chunk, taken: list[Chunk]) -> None:
        """After the commit: hold ``chunk`` if it came early, and move past the ``taken`` ones."""
        expected = self._next_chunk.get(replay_id, 0)
        if chunk.chunk_seq < expected:
            return
        held = self._held.setdefault(replay_id, {})
        held.setdefault(chunk.chunk_seq, chunk)
        for c in taken:
            held.pop(c.chunk_seq, None)
        self._next_chunk[replay_id] = expected + len(taken)

    def _ending(self, replay_id: str, final: Chunk, trace: list[Any]) -> dict[str, Any]:
        """The arguments of :meth:`_end` for a replay whose final chunk has been taken
        (``trace``: the processor records of every chunk taken, this one's included)."""
        x = final.execution
        if x is None:
            return {
                "status": "ERROR",
                "result": _error_result("IncompleteTrace", "the final chunk carried no execution summary"),
                "action": "REPLAY_ERROR",
                "outcome": "ERROR",
            }
        return {
            "status": "COMPLETED",
            "result": {
                "status": x.status,
                "durationMs": x.duration_ms,
                "outputBodySha256": text_sha256(x.output_body),
                "errorType": x.error_type,
                "errorMessage": x.error_message,
            },
            "action": "REPLAY_COMPLETED" if x.status == "COMPLETED" else "REPLAY_FAILED",
            "outcome": "SUCCESS" if x.status == "COMPLETED" else "FAILED",
            "result_execution_id": x.execution_id,
            "execution_event": execution_event(x, replay_id, None),
            "processor_count": x.processor_count,
            "output_maps": {
                "outputHeadersSha256": map_sha256(x.output_headers),
                "outputPropertiesSha256": map_sha256(x.output_properties),
                # The processors' outputs, hashed (moat_nb.payload.trace_entries): what lets an
                # offline check vouch for an expectation on a processor.
                "traceSha256": trace_sha256(trace_digest(trace)),
            },
        }

    # ---------------------------------------------------------------- preflight

    def routesets(self) -> dict[str, Any]:
        """The app's route sets by version (loaded once, lazily)."""
        with self._routesets_lock:
            if self._routesets is None:
                from .traffic import load_routesets

                self._routesets = load_routesets(self.state.app)
            return self._routesets

    def preflight(self, principal: Principal, params: Mapping[str, str]) -> dict[str, Any]:
        """``GET /replays/preflight`` (:func:`moat_nb.sandbox.preflight.preflight`)."""
        return preflight(self.state, principal, params, self.routesets())


# --------------------------------------------------------------------------- pure helpers


class _KeyTaken(Exception):
    """A concurrent request claimed the idempotency key first."""


@dataclass(frozen=True)
class _Fresh:
    replay_id: str
    command_id: str
    principal: Principal
    key: str
    fingerprint: str
    req: ReplayRequest
    source: Execution
    agent_id: str
    target_environment: str
    diff: list[dict[str, Any]]
    effective_sha: str
    info: RequestInfo


def recorded_replies(source: Execution) -> list[dict[str, Any]]:
    """The replay command's ``stubReplies``: for each processor of the source that called an
    external endpoint, what it recorded — the reply body, and also its status and error (a
    failed call fails alike), the headers before and after it (the reply's headers, such as
    camel-http's ``CamelHttpResponseCode``/``CamelHttpResponseText``, are what changed between
    them) and whether the body was cut (the agent then simulates). The same processors as
    :func:`moat_nb.sandbox.preflight.stub_replies` counts; ``[]`` for a ROUTE-captured source
    (the agent then simulates, section 8). Headers are the stored, redacted ones."""
    replies = []
    for p in source.processors or ():
        if p.processor_type == "from" or not p.endpoint_uri or uri_scheme(p.endpoint_uri) in LOCAL_SCHEMES:
            continue
        reply: dict[str, Any] = {
            "routeId": p.route_id,
            "processorId": p.processor_id,
            "iteration": p.iteration,
            "body": p.output_body,
            "status": p.status,
        }
        if p.error_type is not None:
            reply["errorType"] = p.error_type
        if p.error_message is not None:
            reply["errorMessage"] = p.error_message
        if p.input_headers is not None:
            reply["inputHeaders"] = p.input_headers
        if p.output_headers is not None:
            reply["outputHeaders"] = p.output_headers
        if p.body_truncated:
            reply["bodyTruncated"] = True
        replies.append(reply)
    return replies


def _seq(p: Any) -> int:
    return p.seq


def _may_read(principal: Principal, requested_by: str) -> bool:
    """Section 5: a replay is its requester's, and any holder of ``audit:read``'s."""
    return requested_by == principal.username or principal.has("audit:read")


def _no_replay(replay_id: str) -> NotFound:
    return NotFound(
        f"no replay {replay_id!r}",
        hint="list your replays with GET /api/v1/replays",
        details={"replayId": replay_id},
    )


def _stamp_source(chunk: Chunk, source_exchange_id: str) -> Chunk:
    """The replay's execution as the platform knows it: a replay of its stored source
    (section 3: ``isReplay``, ``sourceExchangeId``). A chunk naming another source is refused
    rather than filed under it (a search by source finds a replay's runs); one naming none gets
    the replay's."""
    x = chunk.execution
    if x is None:
        return chunk
    if x.source_exchange_id is not None and x.source_exchange_id != source_exchange_id:
        raise RecordError(
            f"chunk execution.sourceExchangeId {x.source_exchange_id!r} is not the replay's "
            f"source {source_exchange_id!r}",
            code="BAD_CHUNK",
            details={"field": "execution.sourceExchangeId"},
        )
    if x.source_exchange_id == source_exchange_id and x.is_replay:
        return chunk
    return replace(chunk, execution=replace(x, source_exchange_id=source_exchange_id, is_replay=True))


def _processors_of(chunk: Chunk) -> tuple[Any, ...]:
    return (chunk.execution.processors if chunk.execution else None) or ()


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _agent_actor(instance_id: str) -> dict[str, Any]:
    return {"username": instance_id, "roles": ["AGENT"], "permissions": []}


def _error_result(error_type: str, message: str) -> dict[str, Any]:
    return {
        "status": None,
        "durationMs": None,
        "outputBodySha256": None,
        "errorType": error_type,
        "errorMessage": message,
    }
