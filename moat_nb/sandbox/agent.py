"""A sandbox agent: one Camel application instance, a real HTTP/SSE client of the server.

It speaks Cameleer's agent protocol (reference/cameleer.md section 2; DESIGN.md sections 4, 5, 8):

* **register** — ``POST /api/v1/agents/register`` with the bootstrap token as Bearer, body
  ``{instanceId, displayName, applicationId, environmentId, routeIds, routeVersion,
  capabilities}`` → ``{accessToken, refreshToken, expiresIn, serverPublicKey}``;
* **heartbeat** — ``POST /agents/{id}/heartbeat`` ``{routeStates}`` every
  :attr:`AgentConfig.heartbeat_interval` seconds (Cameleer: 30 s; the sandbox beats faster so
  that a dead agent is noticed in tests);
* **tokens** — the access token is refreshed (``POST /auth/refresh`` with the refresh token)
  at :attr:`AgentConfig.refresh_at` of its lifetime; a 401 anywhere refreshes (or, failing
  that, registers again) and retries once, a 404 ``AGENT_NOT_FOUND`` registers again (a server
  that restarted forgot its agents), and so does a 403 ``AGENT_TOKEN_STALE`` (the id was
  registered in another environment since the token was issued). If that registration is
  refused with 409 ``AGENT_ENVIRONMENT_CHANGED`` the id belongs to another environment now:
  the agent stops (:attr:`Agent.refused`) instead of retrying for ever;
* **command channel** — ``GET /agents/{id}/events`` held open; when it drops (or stays silent
  past :attr:`AgentConfig.channel_idle_timeout`: the server pings every 15 s) the agent
  reconnects with exponential back-off and full jitter (AWS Architecture Blog, "Exponential
  Backoff and Jitter") and ``Last-Event-ID`` = the last command id it received (WHATWG HTML,
  "Server-sent events", 9.2.4);
* **commands** — each is checked by :func:`~moat_nb.sandbox.security.check_command`
  (Ed25519 over the RFC 8785 canonical JSON without ``signature``; ``expiresAt``; nonce not
  reused) and refused with an ack ``FAILURE`` naming the reason; a ``replay`` command runs the
  effective payload through the agent's routes with ``PROCESSOR`` capture, the header
  ``X-Cameleer-Replay: <replayId>`` and every external endpoint stubbed (answered from the
  command's ``stubReplies``, else simulated), posts the trace as chunks and acks
  ``{status: SUCCESS, message, data: {executionId}}`` (``FAILURE`` with a message when it
  could not run — a route that *fails* ran, and is a ``SUCCESS`` ack);
* **ingestion** — ``POST /api/v1/data/chunks`` with ``X-Cameleer-Protocol-Version: 1``; a trace
  with many processors goes as several chunks (:func:`chunks_of`); a 503 is retried after its
  ``Retry-After`` (RFC 9110 10.2.3), a bounded number of times. :meth:`Agent.post_history`
  sends recorded traffic through the same path.

The engine run happens in a worker thread (:func:`asyncio.to_thread`): a route may ``delay``
for real during a replay, and the agents share the server's event loop in the sandbox, so a
run on the loop would stall every heartbeat, channel and request of the server meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import math
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from httpx_sse import SSEError, aconnect_sse

from ..errors import ApiError, MoatError, RecordError, TransportError
from ..model import ID_PATTERN, Chunk, Execution, Payload, ProcessorRecord
from . import encoder
from .apps import App
from .camel.exchange import RunContext
from .security import NonceCache, check_command, verify_command

if TYPE_CHECKING:
    from .camel import RouteSet

__all__ = [
    "API_PREFIX",
    "PROTOCOL_HEADER",
    "PROTOCOL_VERSION",
    "REPLAY_HEADER",
    "Agent",
    "AgentConfig",
    "chunks_of",
    "retry_after_seconds",
    "stub_source",
]

log = logging.getLogger("moat_nb.sandbox.agent")

API_PREFIX = "/api/v1"
#: cameleer.md 2.1: every ``/data/**`` request carries this header with the value "1".
PROTOCOL_HEADER = "X-Cameleer-Protocol-Version"
PROTOCOL_VERSION = "1"
#: cameleer.md 3.4: a replayed exchange carries this header; the value is the replay id.
REPLAY_HEADER = "X-Cameleer-Replay"
#: The capability that lets the server pick this agent for replays.
CAPABILITIES = ("replay",)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AgentConfig:
    """Tunables of one agent. Times in seconds."""

    #: Between two heartbeats (Cameleer's agents: 30 s; LIVE lasts 90 s without one).
    heartbeat_interval: float = 5.0
    #: First and largest pause before reconnecting the command channel (doubled each failure).
    reconnect_min: float = 0.1
    reconnect_max: float = 5.0
    #: The channel is presumed dead when nothing (event or ping) arrives for this long:
    #: three of the server's 15 s pings, as Cameleer counts three missed heartbeats.
    channel_idle_timeout: float = 45.0
    #: Timeout of every other request.
    request_timeout: float = 10.0
    #: A trace is cut into chunks of at most this many processor records ...
    chunk_processors: int = 200
    #: ... and about this many bytes of JSON (the server refuses bodies over 1 MiB).
    chunk_bytes: int = 512 * 1024
    #: Attempts per chunk (and per ack) on 503 or a transport error before giving up.
    post_attempts: int = 8
    #: Upper bound of one wait, whatever Retry-After says.
    retry_after_max: float = 5.0
    #: Refresh the access token at this fraction of its lifetime.
    refresh_at: float = 0.8
    #: Replays run at the same time (each in a worker thread).
    max_concurrent_replays: int = 8
    #: Chunks of recorded history posted at the same time.
    history_concurrency: int = 4
    #: ``delay`` steps wait for real in a replay (as Camel would); traffic never waits.
    real_delays: bool = True
    #: On :meth:`Agent.stop`, how long running replays may take to finish before they are
    #: acknowledged ``FAILURE``.
    stop_grace: float = 2.0

    def __post_init__(self) -> None:
        for name in (
            "heartbeat_interval",
            "reconnect_min",
            "reconnect_max",
            "channel_idle_timeout",
            "request_timeout",
            "retry_after_max",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"AgentConfig.{name} must be positive")
        if not 0 < self.refresh_at < 1:
            raise ValueError("AgentConfig.refresh_at must be between 0 and 1")
        for name in (
            "chunk_processors",
            "chunk_bytes",
            "post_attempts",
            "max_concurrent_replays",
            "history_concurrency",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"AgentConfig.{name} must be at least 1")


# --------------------------------------------------------------------------- pure helpers


def chunks_of(
    execution: Execution,
    *,
    max_processors: int = 200,
    max_bytes: int = 512 * 1024,
) -> list[Chunk]:
    """Cut one finished execution into the chunks of ``POST /data/chunks`` (cameleer.md 3.2).

    Processor records go in ``seq`` order, at most ``max_processors`` and (unless one record is
    larger by itself) about ``max_bytes`` of JSON per chunk; ``chunkSeq`` counts from 0; only
    the last chunk is ``final`` and carries the execution (without processors), on its own when
    it would not fit beside the last records. Every chunk carries the execution's ``replayId``.
    """
    cut = encoded_chunks(execution, max_processors=max_processors, max_bytes=max_bytes)
    return [chunk for chunk, _ in cut]


def encoded_chunks(
    execution: Execution,
    *,
    max_processors: int = 200,
    max_bytes: int = 512 * 1024,
) -> list[tuple[Chunk, bytes]]:
    """:func:`chunks_of`, each chunk with its JSON body: the records' wire forms, made once to
    size them, are encoded as they are instead of a second time (a PROCESSOR trace is ~100 KB
    of JSON: each pass costs ms of CPU on the machine that also runs the server)."""
    if max_processors < 1 or max_bytes < 1:
        raise ValueError("max_processors and max_bytes must be at least 1")
    records = sorted(execution.processors or (), key=lambda p: p.seq)
    groups: list[list[tuple[ProcessorRecord, bytes]]] = [[]]
    used = 0
    checked: set[int] = set()  # ids of maps found finite (the engine shares unchanged captures)
    for record in records:
        record = _finite(record, checked)
        encoded = encoder.dumps_finite(record.to_wire())
        if len(encoded) > RECORD_MAX_BYTES:
            record = fit_record(record)
            encoded = encoder.dumps_finite(record.to_wire())
        size = len(encoded)
        group = groups[-1]
        if group and (len(group) >= max_processors or used + size > max_bytes):
            groups.append([])
            group, used = groups[-1], 0
        group.append((record, encoded))
        used += size
    summary = _finite(replace(execution, processors=None), checked)
    summary_wire = summary.to_wire()
    if len(_dumps(summary_wire)) > RECORD_MAX_BYTES:
        summary = fit_record(summary)
        summary_wire = summary.to_wire()
    if groups[-1] and used + len(_dumps(summary_wire)) > max_bytes:
        groups.append([])
    out = []
    for i, group in enumerate(groups):
        last = i == len(groups) - 1
        chunk = Chunk(
            execution_id=execution.execution_id,
            exchange_id=execution.exchange_id,
            chunk_seq=i,
            final=last,
            replay_id=execution.replay_id,
            execution=summary if last else None,
            processors=tuple(record for record, _ in group),
        )
        # Chunk.to_wire's shape (``processors`` last), around the records' bytes made above.
        head = _dumps(
            {
                "executionId": chunk.execution_id,
                "exchangeId": chunk.exchange_id,
                "replayId": chunk.replay_id,
                "chunkSeq": chunk.chunk_seq,
                "final": chunk.final,
                "execution": summary_wire if last else None,
            }
        )
        body = b"".join((head[:-1], b',"processors":[', b",".join(e for _, e in group), b"]}"))
        out.append((chunk, body))
    return out


#: The largest record (a processor record, or the execution that ends the last chunk) an agent
#: posts: DESIGN section 4 refuses request bodies over 1 MiB, and a chunk has a few hundred
#: bytes around its records. Bodies are cut at capture (256 KiB each), header and property
#: values are not: a route that copies a 300 KB body into a property (``setProperty: order:
#: ${body}``) made one record of ~1.1 MB, its chunk was refused (413), and the replay ended
#: ERROR without a trace.
RECORD_MAX_BYTES = 1024 * 1024 - 16 * 1024
_R = TypeVar("_R", ProcessorRecord, Execution)

_BODY_FIELDS = ("input_body", "output_body")
_MAP_FIELDS = ("input_headers", "output_headers", "input_properties", "properties", "output_properties")


def fit_record(record: _R, limit: int = RECORD_MAX_BYTES) -> _R:
    """``record`` (a ProcessorRecord or an Execution) with its longest texts cut until its JSON
    takes at most ``limit`` bytes: a processor record's bodies, flagged ``bodyTruncated`` as a
    capture cut is (section 3), and the string values of headers and properties, which end in
    a note saying how much of them was cut (an execution has no flag for its bodies, which
    capture keeps within 256 KiB each: only its maps are cut). A record that fits is returned
    as it is; one too large for other reasons comes back as small as these cuts make it.

    Why cut rather than refuse: the run happened; a trace with a long value cut is what a user
    can read and diff, where a refused chunk left the replay ERROR with nothing."""
    encoded = len(_dumps(record.to_wire()))
    bodies = _BODY_FIELDS if hasattr(record, "body_truncated") else ()
    originals: dict[tuple[str, str], str] = {}  # a map value as it was, before any cut
    while encoded > limit:
        longest: tuple[int, str, str | None] | None = None  # (length, field, key in a map)
        for name in bodies:
            text = getattr(record, name)
            if isinstance(text, str) and (longest is None or len(text) > longest[0]):
                longest = (len(text), name, None)
        for name in _MAP_FIELDS:
            for key, value in (getattr(record, name, None) or {}).items():
                if isinstance(value, str) and (longest is None or len(value) > longest[0]):
                    longest = (len(value), name, key)
        if longest is None or longest[0] == 0:
            break
        length, name, key = longest
        # By what is over (a character is at least one byte of JSON) and the note, and at least
        # by half, so that a few rounds do it.
        keep = max(0, min(length - (encoded - limit) - 96, length // 2))
        if key is None:
            changes: dict[str, Any] = {name: getattr(record, name)[:keep], "body_truncated": True}
        else:
            values = getattr(record, name)
            whole = originals.setdefault((name, key), values[key])
            kept = whole[: min(keep, len(whole))]
            note = f"... [{len(whole) - len(kept)} characters cut: the record was too large to post]"
            changes = {name: {**values, key: kept + note}}
        record = replace(record, **changes)
        encoded = len(_dumps(record.to_wire()))
    return record


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (RFC 9110 10.2.3: delay-seconds or an
    HTTP-date), or None when absent or unreadable. Never negative."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 5.6.7: an HTTP-date is GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def stub_source(command: Mapping[str, Any]) -> Execution:
    """The ``replay_of`` execution :meth:`RouteSet.run` stubs external endpoints from, built
    from a replay command's ``stubReplies`` (``[{routeId, processorId, iteration, body}]``:
    the replies the source exchange recorded, so the agent needs no access to the store).

    An empty list still stubs every external endpoint (answered with the simulated reply), as a
    replay must never reach a real system (DESIGN.md section 8). A reply may also carry
    ``status``/``errorType``/``errorMessage`` (the source step failed: the stub fails alike) and
    ``inputHeaders``/``outputHeaders`` (the headers the reply set) and ``bodyTruncated`` (the
    recorded body was cut: the simulated reply is used instead). Raises ``RecordError``.
    """
    replies = command.get("stubReplies")
    replies = [] if replies is None else replies
    if not isinstance(replies, list):
        raise RecordError("stubReplies must be a list", code="BAD_COMMAND")
    records = []
    for i, reply in enumerate(replies, start=1):
        if not isinstance(reply, Mapping):
            raise RecordError(f"stubReplies[{i - 1}] is not an object", code="BAD_COMMAND")
        route_id, processor_id = reply.get("routeId"), reply.get("processorId")
        iteration = reply.get("iteration", 0)
        body = reply.get("body")
        if not isinstance(route_id, str) or not isinstance(processor_id, str):
            raise RecordError(f"stubReplies[{i - 1}] needs routeId and processorId", code="BAD_COMMAND")
        if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
            raise RecordError(f"stubReplies[{i - 1}].iteration must be an integer >= 0", code="BAD_COMMAND")
        if body is not None and not isinstance(body, str):
            raise RecordError(f"stubReplies[{i - 1}].body must be a string or null", code="BAD_COMMAND")
        status = reply.get("status") or "COMPLETED"
        records.append(
            ProcessorRecord(
                execution_id=str(command.get("sourceExecutionId") or ""),
                exchange_id=str(command.get("sourceExchangeId") or ""),
                seq=i,
                processor_id=processor_id,
                processor_type="to",
                route_id=route_id,
                status=status if status in ("COMPLETED", "FAILED") else "COMPLETED",
                iteration=iteration,
                error_type=_typed(reply, "errorType", str),
                error_message=_typed(reply, "errorMessage", str),
                output_body=body,
                input_headers=_typed(reply, "inputHeaders", dict),
                output_headers=_typed(reply, "outputHeaders", dict),
                body_truncated=reply.get("bodyTruncated") is True,
            )
        )
    return Execution(
        execution_id=str(command.get("sourceExecutionId") or "source"),
        exchange_id=str(command.get("sourceExchangeId") or "source"),
        route_id=str(command.get("routeId") or ""),
        status="COMPLETED",
        processors=tuple(records),
    )


def _typed(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    return value if isinstance(value, kind) else None


def _replay_payload(command: Mapping[str, Any]) -> Payload:
    """The effective payload of a replay command, checked, with ``X-Cameleer-Replay`` set."""
    raw = command.get("modifiedPayload")
    if not isinstance(raw, Mapping):
        raise RecordError("modifiedPayload must be an object {headers, body, properties}", code="BAD_COMMAND")
    headers, body, properties = raw.get("headers") or {}, raw.get("body"), raw.get("properties") or {}
    if not isinstance(headers, Mapping) or not isinstance(properties, Mapping):
        raise RecordError("modifiedPayload headers and properties must be objects", code="BAD_COMMAND")
    if body is not None and not isinstance(body, str):
        raise RecordError("modifiedPayload.body must be a string or null", code="BAD_COMMAND")
    # The header marks the exchange as a replay for the route and for Cameleer's server
    # (cameleer.md 3.4); any copy of it in the recorded payload is replaced by this replay's id.
    kept = {k: v for k, v in headers.items() if k.lower() != REPLAY_HEADER.lower()}
    kept[REPLAY_HEADER] = command["replayId"]
    return Payload(headers=kept, body=body, properties=dict(properties))


def _error_from(response: httpx.Response, what: str) -> ApiError:
    """The server's ``{error, message, details}`` envelope as an :class:`ApiError`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("error"), str):
        details = body.get("details") if isinstance(body.get("details"), dict) else {}
        return ApiError(
            f"{what}: {body.get('message') or body['error']}",
            status=response.status_code,
            code=body["error"],
            hint=details.get("hint") if isinstance(details.get("hint"), str) else None,
            details=details,
        )
    return ApiError(
        f"{what}: HTTP {response.status_code} {response.reason_phrase}",
        status=response.status_code,
        code="SERVER_ERROR" if response.status_code >= 500 else "HTTP_ERROR",
    )


# --------------------------------------------------------------------------- the agent


class Agent:
    """One agent (Camel application instance) of one environment; see the module docstring.

    ``base_url`` is the server root (``http://127.0.0.1:8081``); requests go to
    ``base_url + "/api/v1/..."``. ``routes`` is the route version the instance runs and
    ``capture`` its capture mode for live traffic (replays always capture ``PROCESSOR``).
    Use it on one event loop: ``await agent.start()`` ... ``await agent.stop()`` (or
    ``async with agent``). ``transport`` lets tests hand in an httpx transport; ``clock``
    and ``rng`` (back-off jitter) are handed in so that tests can drive them.
    """

    def __init__(
        self,
        base_url: str,
        bootstrap_token: str,
        *,
        instance_id: str,
        environment: str,
        app: App,
        routes: RouteSet,
        capture: str,
        route_version: str | None = None,
        display_name: str | None = None,
        config: AgentConfig | None = None,
        clock: Callable[[], datetime] = _utcnow,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        for what, value in (("instance_id", instance_id), ("environment", environment)):
            if not isinstance(value, str) or not ID_PATTERN.match(value):
                raise ValueError(f"{what} {value!r} is not a valid id (1-128 of A-Z a-z 0-9 . _ : -)")
        self.base_url = base_url.rstrip("/")
        self.instance_id = instance_id
        self.environment = environment
        self.app = app
        self.routes = routes
        self.capture = capture
        self.route_version = route_version if route_version is not None else getattr(routes, "version", None)
        self.display_name = display_name or f"{app.name} ({environment})"
        self.config = config or AgentConfig()
        self._bootstrap = bootstrap_token
        #: The agent's clock (aware UTC): what command expiry is judged by.
        self.clock = clock
        self._rng = rng or random.Random()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._access: str | None = None
        self._refresh: str | None = None
        self._token_generation = 0
        self._token_due = 0.0  # monotonic time to refresh the access token
        self._auth_lock = asyncio.Lock()
        self.server_public_key: str | None = None
        self._nonces = NonceCache()
        # Command ids this agent accepted (bounded): a re-delivered command is not run twice.
        self._handled: OrderedDict[str, None] = OrderedDict()
        self._tasks: list[asyncio.Task[Any]] = []
        self._running: dict[str, tuple[asyncio.Task[Any], Mapping[str, Any]]] = {}
        self._replay_slots: asyncio.Semaphore | None = None
        self._connected = asyncio.Event()
        self._stopping = False
        #: The id of the last command event received (sent as ``Last-Event-ID`` on reconnect).
        self.last_event_id: str | None = None
        #: How many times the command channel was (re)opened; for tests and diagnostics.
        self.connections = 0
        #: The last 1024 acks this agent sent, in order: ``(commandId, {status, message, data})``.
        self.acks: deque[tuple[str, dict[str, Any]]] = deque(maxlen=1024)
        #: How many 503 answers were waited out and retried.
        self.retries = 0
        #: Set when the server refused to register this agent again while it ran because its
        #: id now belongs to another environment (409 ``AGENT_ENVIRONMENT_CHANGED``): the agent
        #: has stopped heartbeating and listening, as nothing it retries can succeed.
        self.refused: ApiError | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def api(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def connected(self) -> bool:
        """True while the command channel is open."""
        return self._connected.is_set()

    @property
    def running_replays(self) -> list[str]:
        """Replay ids this agent is running now (received, not yet acknowledged)."""
        return [str(command.get("replayId")) for _, command in self._running.values()]

    @property
    def route_states(self) -> dict[str, str]:
        """``{routeId: "Started"}`` for every route the instance runs (cameleer.md 2.4)."""
        return {route_id: "Started" for route_id in self.routes.route_ids}

    async def start(self, *, wait: float | None = 10.0) -> Agent:
        """Register, then heartbeat and hold the command channel in background tasks.

        Waits up to ``wait`` seconds for the channel to open (None: do not wait). Raises
        ``ApiError``/``TransportError`` when registration fails.
        """
        if self._client is not None:
            raise RuntimeError(f"agent {self.instance_id} is already started")
        self._stopping = False
        self.refused = None
        self._client = httpx.AsyncClient(
            base_url=self.api,
            timeout=self.config.request_timeout,
            transport=self._transport,
            headers={"User-Agent": f"moat-nb-sandbox-agent/{self.instance_id}"},
        )
        self._replay_slots = asyncio.Semaphore(self.config.max_concurrent_replays)
        try:
            await self.register()
        except BaseException:
            await self._close_client()
            raise
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name=f"{self.instance_id}-heartbeat"),
            asyncio.create_task(self._channel_loop(), name=f"{self.instance_id}-channel"),
            asyncio.create_task(self._refresh_loop(), name=f"{self.instance_id}-refresh"),
        ]
        if wait is not None:
            await self.wait_connected(wait)
        return self

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until the command channel is open; ``TransportError`` after ``timeout`` s."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise TransportError(
                f"agent {self.instance_id}: the command channel did not open within {timeout} s",
                hint=f"is the server at {self.base_url} up?",
            ) from None

    async def stop(self) -> None:
        """Stop cleanly: stop heartbeating, close the channel, give running replays
        ``stop_grace`` seconds, acknowledge the rest ``FAILURE`` (so the server reports them
        as ``ERROR`` at once rather than after its replay timeout), close the client."""
        if self._client is None:
            return
        self._stopping = True
        await self._cancel(self._tasks)
        self._tasks = []
        self._connected.clear()
        running = dict(self._running)
        if running:
            done, pending = await asyncio.wait(
                [task for task, _ in running.values()], timeout=self.config.stop_grace
            )
            await self._cancel(list(pending))
            for command_id, (task, command) in running.items():
                if task in pending:
                    with contextlib.suppress(MoatError, httpx.HTTPError):
                        await self._ack(
                            command_id,
                            "FAILURE",
                            f"agent {self.instance_id} stopped before replay "
                            f"{command.get('replayId')} finished",
                            attempts=3,
                        )
        await self._close_client()

    async def kill(self) -> None:
        """Stop at once without a word to the server, as a crashed process would: no acks, no
        chunks, the channel just drops. (Tests use it to check how the server copes.)"""
        if self._client is None:
            return
        self._stopping = True
        await self._cancel([*self._tasks, *(task for task, _ in self._running.values())])
        self._tasks = []
        self._connected.clear()
        await self._close_client()

    async def __aenter__(self) -> Agent:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @staticmethod
    async def _cancel(tasks: Sequence[asyncio.Task[Any]]) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            raise TransportError(f"agent {self.instance_id} is not running", hint="await agent.start() first")
        return self._client

    # ---------------------------------------------------------------- registration and tokens

    async def register(self) -> None:
        """``POST /agents/register`` with the bootstrap token; keeps the tokens and the key."""
        body = {
            "instanceId": self.instance_id,
            "displayName": self.display_name,
            "applicationId": self.app.application_id,
            "environmentId": self.environment,
            "routeIds": list(self.routes.route_ids),
            "routeVersion": self.route_version,
            "capabilities": list(CAPABILITIES),
        }
        try:
            response = await self._http().post(
                "/agents/register", json=body, headers={"Authorization": f"Bearer {self._bootstrap}"}
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"agent {self.instance_id}: cannot register at {self.api}: {exc}") from exc
        if response.status_code != 200:
            refused = _error_from(response, f"agent {self.instance_id}: registration refused")
            if refused.code == "AGENT_ENVIRONMENT_CHANGED" and self._tasks:
                # Running, and another environment holds the id now (registered while the server
                # had forgotten this agent): every retry would be refused — and audited — again.
                log.error("agent %s stops: %s", self.instance_id, refused)
                self.refused = refused
                self._stopping = True
                self._connected.clear()
            raise refused
        answer = response.json()
        key = answer.get("serverPublicKey")
        if not isinstance(key, str) or not isinstance(answer.get("accessToken"), str):
            raise ApiError(
                f"agent {self.instance_id}: the registration answer lacks accessToken or serverPublicKey",
                status=response.status_code,
                code="BAD_ANSWER",
            )
        self.server_public_key = key
        self._set_tokens(answer["accessToken"], answer.get("refreshToken"), answer.get("expiresIn"))
        log.info("agent %s registered (%s, %s)", self.instance_id, self.environment, self.route_version)

    def _set_tokens(self, access: str, refresh: str | None, expires_in: Any) -> None:
        self._access = access
        if isinstance(refresh, str):
            self._refresh = refresh
        lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 3600.0
        self._token_due = time.monotonic() + lifetime * self.config.refresh_at
        self._token_generation += 1

    async def refresh_token(self) -> None:
        """A new access token from the refresh token; registers again if that is refused."""
        if self._refresh is not None:
            try:
                response = await self._http().post(
                    "/auth/refresh", headers={"Authorization": f"Bearer {self._refresh}"}
                )
            except httpx.HTTPError as exc:
                raise TransportError(f"agent {self.instance_id}: cannot refresh its token: {exc}") from exc
            if response.status_code == 200:
                answer = response.json()
                self._set_tokens(answer["accessToken"], None, answer.get("expiresIn"))
                return
            log.info(
                "agent %s: refresh refused (%s); registering again", self.instance_id, response.status_code
            )
        await self.register()

    async def _reauthenticate(self, generation: int, *, register: bool) -> None:
        # One re-authentication for any number of requests that failed with the same token.
        async with self._auth_lock:
            if self._token_generation != generation:
                return
            if register:
                await self.register()
            else:
                await self.refresh_token()

    async def _refresh_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(max(0.0, self._token_due - time.monotonic()))
            generation = self._token_generation
            try:
                await self._reauthenticate(generation, register=False)
            except (MoatError, httpx.HTTPError) as exc:
                log.warning("agent %s: token refresh failed: %s", self.instance_id, exc)
                self._token_due = time.monotonic() + self.config.reconnect_max

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._access}"}

    async def _request(self, method: str, path: str, *, what: str, **kw: Any) -> httpx.Response:
        """One request with the access token; on 401 re-authenticates and retries once, on 404
        ``AGENT_NOT_FOUND`` (the server forgot this agent) registers again and retries once."""
        headers = dict(kw.pop("headers", None) or {})
        for attempt in (1, 2):
            generation = self._token_generation
            try:
                response = await self._http().request(method, path, headers={**headers, **self._auth()}, **kw)
            except httpx.HTTPError as exc:
                raise TransportError(f"agent {self.instance_id}: {what}: {exc}") from exc
            if attempt == 1 and response.status_code == 401:
                await self._reauthenticate(generation, register=False)
                continue
            if attempt == 1 and _register_again(response):
                await self._reauthenticate(generation, register=True)
                continue
            return response
        return response

    # ---------------------------------------------------------------- heartbeat

    async def heartbeat(self) -> None:
        """One ``POST /agents/{id}/heartbeat`` with the route states."""
        response = await self._request(
            "POST",
            f"/agents/{self.instance_id}/heartbeat",
            json={"routeStates": self.route_states},
            what="heartbeat",
        )
        if response.status_code != 200:
            raise _error_from(response, f"agent {self.instance_id}: heartbeat refused")

    async def _heartbeat_loop(self) -> None:
        while not self._stopping:  # the first beat at once: the route states are known from the start
            try:
                await self.heartbeat()
            except (MoatError, httpx.HTTPError) as exc:
                log.warning("agent %s: %s", self.instance_id, exc)
            await asyncio.sleep(self.config.heartbeat_interval)

    # ---------------------------------------------------------------- command channel

    async def _channel_loop(self) -> None:
        pause = self.config.reconnect_min
        while not self._stopping:
            try:
                opened = await self._listen()
            except (MoatError, httpx.HTTPError, SSEError) as exc:
                opened = False
                log.info("agent %s: command channel: %s", self.instance_id, exc)
            self._connected.clear()
            if self._stopping:
                return
            if opened:
                pause = self.config.reconnect_min
            # Full jitter: a random pause in [0, pause], so that agents of a restarted server do
            # not all reconnect in the same instant.
            await asyncio.sleep(self._rng.uniform(0, pause))
            pause = min(self.config.reconnect_max, pause * 2)

    async def _listen(self) -> bool:
        """Hold one connection of the channel until it ends; True if it opened."""
        headers = self._auth()
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        generation = self._token_generation
        timeout = httpx.Timeout(self.config.request_timeout, read=self.config.channel_idle_timeout)
        async with aconnect_sse(
            self._http(), "GET", f"/agents/{self.instance_id}/events", headers=headers, timeout=timeout
        ) as source:
            response = source.response
            if response.status_code != 200:
                await response.aread()
                if response.status_code == 401:
                    await self._reauthenticate(generation, register=False)
                elif _register_again(response):
                    await self._reauthenticate(generation, register=True)
                elif response.status_code == 400 and _code(response) == "BAD_LAST_EVENT_ID":
                    self.last_event_id = None
                raise _error_from(response, "command channel refused")
            self.connections += 1
            self._connected.set()
            log.info("agent %s: command channel open (last id %s)", self.instance_id, self.last_event_id)
            async for event in source.aiter_sse():
                if event.id:
                    self.last_event_id = event.id
                if not event.data:
                    continue  # a keep-alive or an event without a command
                self._spawn(self._on_event(event.event, event.data))
        return True

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(self._log_failure)
        return task

    def _log_failure(self, task: asyncio.Future[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("agent %s: command handling failed", self.instance_id, exc_info=task.exception())

    async def _on_event(self, event: str, data: str) -> None:
        try:
            command = json.loads(data)
        except ValueError:
            log.warning("agent %s: event %r is not JSON; ignored", self.instance_id, event)
            return
        if not isinstance(command, dict):
            log.warning("agent %s: event %r is not a JSON object; ignored", self.instance_id, event)
            return
        command_id = command.get("commandId")
        if not isinstance(command_id, str) or not ID_PATTERN.match(command_id):
            # Nothing to acknowledge against: the server never sent such a command.
            log.warning("agent %s: event %r without a valid commandId; ignored", self.instance_id, event)
            return
        key = self.server_public_key or ""
        if command_id in self._handled and verify_command(command, key):
            return  # the server sent a command again that this agent already has
        reason = check_command(command, key, self.clock(), self._nonces)
        if reason is not None:
            log.warning("agent %s refused command %s: %s", self.instance_id, command_id, reason)
            await self._ack(command_id, "FAILURE", f"refused: {reason}")
            return
        self._handled[command_id] = None
        while len(self._handled) > 4096:
            self._handled.popitem(last=False)
        kind = command.get("type")
        if kind == "replay":
            task = asyncio.current_task()
            assert task is not None
            self._running[command_id] = (task, command)
            try:
                await self._replay(command)
            finally:
                self._running.pop(command_id, None)
        else:
            await self._ack(
                command_id, "FAILURE", f"unsupported command type {kind!r}; this agent runs: replay"
            )

    # ---------------------------------------------------------------- replays

    async def _replay(self, command: Mapping[str, Any]) -> None:
        command_id = command["commandId"]
        replay_id = command.get("replayId")
        assert self._replay_slots is not None
        try:
            problem = self._check_replay(command)
            if problem is not None:
                await self._ack(command_id, "FAILURE", f"replay {replay_id} not run: {problem}")
                return
            async with self._replay_slots:
                # Cut in the worker thread too: sizing the records is JSON encoding (ms of CPU),
                # and in the sandbox the loop is also the server's.
                execution, chunks = await asyncio.to_thread(self._run_and_cut, command)
                for chunk, content in chunks:
                    await self.post_chunk(chunk, content)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # anything that kept the replay from running or reporting
            message = exc.message if isinstance(exc, MoatError) else f"{type(exc).__name__}: {exc}"
            log.warning("agent %s: replay %s failed: %s", self.instance_id, replay_id, message)
            await self._ack(
                command_id, "FAILURE", f"replay {replay_id} failed on agent {self.instance_id}: {message}"
            )
            return
        await self._ack(
            command_id,
            "SUCCESS",
            f"replay {replay_id} ran on {self.instance_id}: route {execution.route_id} "
            f"{execution.status}, {execution.processor_count} processors, "
            f"{execution.duration_ms or 0:.1f} ms, {len(chunks)} chunk(s)",
            {
                "executionId": execution.execution_id,
                "exchangeId": execution.exchange_id,
                "status": execution.status,
                "chunks": len(chunks),
            },
        )

    def _check_replay(self, command: Mapping[str, Any]) -> str | None:
        """Why this agent cannot run the replay command, or None."""
        for key in ("replayId", "sourceExchangeId", "routeId"):
            value = command.get(key)
            if not isinstance(value, str) or not ID_PATTERN.match(value):
                return f"{key} {value!r} is missing or not a valid id"
        route_id = command["routeId"]
        if route_id not in self.routes.route_ids:
            return (
                f"route {route_id!r} is not deployed on {self.instance_id} "
                f"(routes: {', '.join(self.routes.route_ids)})"
            )
        env = command.get("environment")
        if env is not None and env != self.environment:
            return f"the command is for environment {env!r}; {self.instance_id} runs {self.environment!r}"
        return None

    def _run_and_cut(self, command: Mapping[str, Any]) -> tuple[Execution, list[tuple[Chunk, bytes]]]:
        """:meth:`_run_replay`, then the chunks of its trace, encoded (:func:`encoded_chunks`)."""
        execution = self._run_replay(command)
        chunks = encoded_chunks(
            execution, max_processors=self.config.chunk_processors, max_bytes=self.config.chunk_bytes
        )
        return execution, chunks

    def _run_replay(self, command: Mapping[str, Any]) -> Execution:
        """Run the replay through the engine (in a worker thread): PROCESSOR capture, every
        external endpoint stubbed, this agent's labels on the execution."""
        context = RunContext(
            rng=random.Random(),  # a replay is a new exchange: fresh ids and random values
            perf=time.perf_counter,
            sleep=time.sleep if self.config.real_delays else None,
        )
        return self.routes.run(
            command["routeId"],
            _replay_payload(command),
            capture="PROCESSOR",
            replay_of=stub_source(command),
            context=context,
            replay_id=command["replayId"],
            source_exchange_id=command["sourceExchangeId"],
            environment=self.environment,
            application_id=self.app.application_id,
            instance_id=self.instance_id,
        )

    async def _ack(
        self,
        command_id: str,
        status: str,
        message: str,
        data: Mapping[str, Any] | None = None,
        *,
        attempts: int | None = None,
    ) -> None:
        """``POST /agents/{id}/commands/{commandId}/ack``, retried like a chunk."""
        body = {"status": status, "message": message, "data": dict(data) if data is not None else None}
        self.acks.append((command_id, body))
        try:
            response = await self._send_retrying(
                "POST",
                f"/agents/{self.instance_id}/commands/{command_id}/ack",
                json=body,
                what=f"ack of {command_id}",
                attempts=attempts,
            )
        except (MoatError, httpx.HTTPError) as exc:
            log.warning("agent %s: could not ack %s: %s", self.instance_id, command_id, exc)
            return
        if response.status_code != 200:
            refused = _error_from(response, f"ack of {command_id} refused")
            log.warning("agent %s: %s", self.instance_id, refused)

    # ---------------------------------------------------------------- ingestion

    async def post_chunk(self, chunk: Chunk, content: bytes | None = None) -> None:
        """``POST /data/chunks`` (202 expected); 503 and transport errors are retried after
        ``Retry-After`` (or back-off) up to ``post_attempts`` times; anything else raises.
        ``content``: the chunk's JSON when already encoded (:func:`encoded_chunks`)."""
        if content is None:
            # Encoded in a worker thread: a chunk of a PROCESSOR-captured trace is ~100 KB of
            # JSON (several ms of CPU), and in the sandbox the loop is also the server's.
            content = await asyncio.to_thread(_encode, chunk)
        response = await self._send_retrying(
            "POST",
            "/data/chunks",
            content=content,
            headers={PROTOCOL_HEADER: PROTOCOL_VERSION, "Content-Type": "application/json"},
            what=f"chunk {chunk.chunk_seq} of execution {chunk.execution_id}",
        )
        if response.status_code != 202:
            raise _error_from(response, f"chunk {chunk.chunk_seq} of execution {chunk.execution_id} refused")

    async def post_history(self, chunks: Iterable[Chunk]) -> int:
        """Send recorded traffic (final chunks, e.g. from :func:`~moat_nb.sandbox.traffic.generate`)
        through the ingest path, ``history_concurrency`` at a time; returns how many executions.
        Chunks over the size limits are cut with :func:`chunks_of`. Raises on the first refusal."""
        slots = asyncio.Semaphore(self.config.history_concurrency)
        count = 0

        async def send(chunk: Chunk) -> None:
            async with slots:
                if (
                    chunk.final
                    and chunk.chunk_seq == 0
                    and chunk.execution is not None
                    and (len(chunk.processors) > self.config.chunk_processors)
                ):
                    parts = chunks_of(
                        replace(chunk.execution, processors=chunk.processors),
                        max_processors=self.config.chunk_processors,
                        max_bytes=self.config.chunk_bytes,
                    )
                else:
                    parts = [chunk]
                for part in parts:
                    await self.post_chunk(part)

        pending: set[asyncio.Task[None]] = set()
        try:
            for chunk in chunks:
                if len(pending) >= self.config.history_concurrency * 2:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()
                pending.add(asyncio.create_task(send(chunk)))
                count += 1
            for task in asyncio.as_completed(pending):
                await task
        except BaseException:
            for task in pending:
                task.cancel()
            raise
        return count

    async def _send_retrying(
        self, method: str, path: str, *, what: str, attempts: int | None = None, **kw: Any
    ) -> httpx.Response:
        attempts = attempts or self.config.post_attempts
        pause = self.config.reconnect_min
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                response = await self._request(method, path, what=what, **kw)
            except TransportError:
                if last:
                    raise
                await asyncio.sleep(self._rng.uniform(0, pause))
                pause = min(self.config.retry_after_max, pause * 2)
                continue
            if response.status_code != 503 or last:
                return response
            self.retries += 1
            wait = retry_after_seconds(response.headers.get("retry-after"), self.clock())
            if wait is None:
                wait, pause = self._rng.uniform(0, pause), min(self.config.retry_after_max, pause * 2)
            await asyncio.sleep(min(wait, self.config.retry_after_max))
        raise AssertionError("unreachable")  # pragma: no cover

    def __repr__(self) -> str:
        state = "connected" if self.connected else ("stopped" if self._client is None else "connecting")
        return f"<Agent {self.instance_id} {self.environment} {self.route_version} {state}>"


def _encode(chunk: Chunk) -> bytes:
    return _dumps(_finite_chunk(chunk).to_wire())


def _dumps(wire: Mapping[str, Any]) -> bytes:
    # orjson where it writes what the stdlib writes (encoder.py): a trace is ~100 KB of JSON.
    return encoder.dumps(wire)


#: The map fields of the records an agent posts (the only fields that can hold any float).
_MAP_FIELDS = ("input_headers", "output_headers", "input_properties", "properties", "output_properties")


def _java_double(value: float) -> str:
    # Double.toString of the values JSON cannot hold.
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


def _quoted_non_finite(value: Any) -> Any:
    """``value`` with every NaN or infinity as the text Java writes for it, as a Camel agent's
    Jackson writes them (``QUOTE_NON_NUMERIC_NUMBERS``, on by default): JSON has no such
    numbers, orjson would write null and the stdlib refuses them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else _java_double(value)
    if isinstance(value, dict):
        return {k: _quoted_non_finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_quoted_non_finite(v) for v in value]
    return value


def _finite(record: _R, checked: set[int] | None = None) -> _R:
    """``record`` with its maps' NaN and infinities quoted (:func:`_quoted_non_finite`). A route
    whose bean returned NaN into a header ran, but its agent refused to post the trace, so the
    replay ended ERROR and ``sandbox --app`` could not record its history. A map shared by
    several records (the engine shares unchanged captures) is walked once (``checked``)."""
    checked = set() if checked is None else checked
    changes: dict[str, Any] = {}
    for name in _MAP_FIELDS:
        values = getattr(record, name, None)
        if values and id(values) not in checked:
            if encoder.finite(values):
                checked.add(id(values))
            else:
                changes[name] = _quoted_non_finite(values)
    return replace(record, **changes) if changes else record  # type: ignore[type-var]


def _finite_chunk(chunk: Chunk) -> Chunk:
    checked: set[int] = set()
    processors = tuple(_finite(p, checked) for p in chunk.processors)
    execution = None if chunk.execution is None else _finite(chunk.execution, checked)
    if execution is chunk.execution and all(
        a is b for a, b in zip(processors, chunk.processors, strict=True)
    ):
        return chunk
    return replace(chunk, processors=processors, execution=execution)


def _register_again(response: httpx.Response) -> bool:
    """Whether the answer asks the agent to register again: 404 ``AGENT_NOT_FOUND`` (the
    server forgot it, e.g. after a restart) or 403 ``AGENT_TOKEN_STALE`` (its token names
    another environment than the id's registration now)."""
    return (response.status_code, _code(response)) in ((404, "AGENT_NOT_FOUND"), (403, "AGENT_TOKEN_STALE"))


def _code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, Mapping) else None
