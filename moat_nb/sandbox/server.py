"""The sandbox's HTTP API: a Starlette app speaking Cameleer's protocol (DESIGN.md sections 4-6).

``create_app(state)`` builds the app for one :class:`~moat_nb.sandbox.state.SandboxState`; run it
with uvicorn (:class:`ServerThread` does, on 127.0.0.1 in a background thread). All routes are
under ``/api/v1``, each an :class:`~moat_nb.sandbox.openapi.Operation` with a declared access
rule (default deny: see :mod:`moat_nb.sandbox.openapi`); the replay routes come from
:func:`moat_nb.sandbox.replays.replay_routes`, the audit routes from
:func:`moat_nb.sandbox.admin_api.admin_operations`. Every id in a path or query is checked
against the id syntax before a handler runs (400 ``BAD_ID``), and a call refused for the tier,
a permission or the kind of caller is audited: ``REPLAY_DENIED`` on a replay endpoint,
``AUDIT_DENIED`` on an audit endpoint, ``ACCESS_DENIED`` on any other.

Errors: any :class:`~moat_nb.errors.ApiError` becomes ``{"error": code, "message", "details"}``
with its status (``details.hint`` says what to do next; a 401 also carries
``WWW-Authenticate: Bearer``, RFC 6750 3; a 503 from the ingest buffer ``Retry-After``). A
malformed record (:class:`~moat_nb.errors.RecordError`) is a 400 (409 for a chunk that
contradicts one already stored). Anything else is 500 ``SERVER_ERROR`` with no stack trace in
the answer (ASVS 16.5.1); the server log has it.

Ingestion (``POST /data/chunks``): the agent's chunk is checked, its secrets redacted
(:class:`~moat_nb.sandbox.security.Redactor`: the store, the replay trace stream and the audit
log only ever see fingerprints, while the agent ran the real values) and stored; a replay's
chunk is stored by ``state.replays.ingest``, with the replay's trace events. At most
``config.chunk_buffer`` chunks are in flight; past that the answer is 503 ``INGEST_BUSY`` with
``Retry-After`` (cameleer.md 2.8).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from functools import partial
from typing import Any, Literal

import orjson
import uvicorn
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import AppStatus, SendTimeoutError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import (
    ApiError,
    AuthenticationError,
    HeadersTooLarge,
    HostNotAllowed,
    MoatError,
    NotFound,
    PermissionDenied,
    RecordError,
    ServerError,
    ValidationError,
)
from ..model import ID_PATTERN, Chunk, Execution, ProcessorRecord, check_id
from ..payload import (
    SECRET_HEADER_NAMES,
    SECRET_NAME_PARTS,
    collecting,
    redact_body,
    redact_mapping,
    redact_uri,
    scrub_body,
    scrub_text,
    scrub_uri,
    spellings,
)
from . import encoder
from .agents import AgentEnvironmentChanged, CommandChannel, event_name
from .bodies import (
    check_declared_length,
    check_header_limits,
    check_json_media_type,
    check_request_headers,
    parse_json,
    read_body,
    read_json,
)
from .openapi import (
    BOOTSTRAP,
    PUBLIC,
    Access,
    Operation,
    agent,
    document,
    needs,
    ref,
)
from .security import LoginGuard, Principal, Redactor, check_tier, require, require_agent
from .state import LOOPBACK_HOSTS, SandboxState
from .store import DEFAULT_LIMIT, MAX_LIMIT
from .store import SEARCH_FILTERS as STORE_FILTERS

__all__ = [
    "PROTOCOL_HEADER",
    "SEARCH_FILTERS",
    "IngestBusy",
    "create_app",
    "core_operations",
    "error_response",
    "redact_chunk",
    "redact_trace",
    "remember_trace",
    "ServerThread",
]

log = logging.getLogger("moat_nb.sandbox.server")
# sse-starlette logs every chunk it sends at DEBUG, and the agents' command channel carries the
# real values of secret headers (the agent runs them, section 4 "Secrets"): kept at INFO so that
# turning on debug logging cannot write secrets to the log (security.md VAL-6, ASVS 16.2.5).
logging.getLogger("sse_starlette.sse").setLevel(logging.INFO)

#: cameleer.md 2.1: ``/data/**`` needs this header with the value "1".
PROTOCOL_HEADER = "X-Cameleer-Protocol-Version"
PROTOCOL_VERSION = "1"

#: The body fields of ``POST /search/executions`` (section 4, plus Cameleer's ``textIn*``):
#: the store's list, so that the two cannot drift apart.
SEARCH_FILTERS = frozenset(STORE_FILTERS)


class _RetryLater(ApiError):
    """An answer that says when to ask again: ``retry_after`` seconds, sent as ``Retry-After``
    (RFC 9110 10.2.3) by :func:`error_response`."""

    def __init__(self, message: str, *, retry_after: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class IngestBusy(_RetryLater, ServerError):
    """503: the ingest buffer is full; the agent retries after ``retry_after`` seconds."""

    code = "INGEST_BUSY"
    status = 503


# --------------------------------------------------------------------------- errors


def error_response(exc: MoatError, status: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The envelope ``{error, message, details}`` for ``exc``."""
    details = dict(exc.details)
    if exc.hint and "hint" not in details:
        details["hint"] = exc.hint
    out = dict(headers or {})
    if status == 401:
        out.setdefault("WWW-Authenticate", 'Bearer realm="moat_nb"')
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        out["Retry-After"] = str(retry_after)
    return JSONResponse({"error": exc.code, "message": exc.message, "details": details}, status, out)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc, exc.status)


def _record_status(exc: RecordError) -> int:
    return 409 if exc.code == "CHUNK_CONFLICT" else 400


async def _record_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RecordError)
    return error_response(exc, _record_status(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err: ApiError = NotFound(
            f"no endpoint {request.method} {request.url.path}",
            hint="see GET /api/v1/api-docs for the endpoints",
        )
    elif exc.status_code == 405:
        err = ApiError(
            f"{request.method} is not allowed on {request.url.path}",
            status=405,
            code="METHOD_NOT_ALLOWED",
            hint="see GET /api/v1/api-docs for the methods of each path",
        )
    else:
        err = ApiError(str(exc.detail), status=exc.status_code, code="HTTP_ERROR")
    return error_response(err, err.status, exc.headers)


def _internal_error(request: Request, exc: BaseException) -> Response:
    # The trace goes to the log only: an answer never carries one (ASVS 16.5.1).
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    err = ServerError(
        "internal server error",
        hint="the sandbox log has the details; retry, and report it if it persists",
    )
    return error_response(err, 500)


async def _server_error(request: Request, exc: Exception) -> Response:
    return _internal_error(request, exc)


class HeaderLimits:
    """ASGI middleware: 431 ``HEADERS_TOO_LARGE`` (:func:`.bodies.check_header_limits`) for every
    request, before routing, so that unknown paths (404) and every method are covered, under
    any server or test transport. The byte bound of the whole head is the HTTP protocol's
    (:class:`_BoundedHttpTools`): by the time a request reaches here it has been read."""

    def __init__(self, app: ASGIApp, *, max_count: int, max_bytes: int) -> None:
        self.app = app
        self.max_count = max_count
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                check_header_limits(scope["headers"], max_count=self.max_count, max_bytes=self.max_bytes)
            except HeadersTooLarge as exc:
                await error_response(exc, exc.status, {"Connection": "close"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


class TrustedHosts:
    """ASGI middleware: 421 ``HOST_NOT_ALLOWED`` for a request whose ``Host`` is not one of
    ``allowed`` (``ServerConfig.allowed_hosts``; ``"*"``: every host), before anything else reads
    it. Starlette's TrustedHostMiddleware answers a bare text 400; this answers with the error
    envelope, a stable code and what to do (section 4 "Errors"), and compares IPv6 literals
    without their brackets. A request without ``Host`` (HTTP/1.0) passes: a browser always
    sends one, and the check is against browsers (DNS rebinding)."""

    def __init__(self, app: ASGIApp, *, allowed: tuple[str, ...] | None) -> None:
        self.app = app
        # None: loopback only, so that an app made without runner.start is safe too.
        names = LOOPBACK_HOSTS if allowed is None else allowed
        self.allowed = None if "*" in names else frozenset(names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allowed is not None and scope["type"] == "http":
            host = next((v for k, v in scope["headers"] if k == b"host"), None)
            name = None if host is None else _host_name(host.decode("latin-1"))
            if name is not None and name not in self.allowed:
                exc = HostNotAllowed(
                    f"this sandbox answers for {', '.join(sorted(self.allowed))}, not for host "
                    f"{name[:100]!r}",
                    hint="open it as http://127.0.0.1:<port>; to reach it by another name, start "
                    "it with allowed_hosts=(...) (moat-nb sandbox --allowed-host NAME)",
                    details={"host": name[:100]},
                )
                await error_response(exc, exc.status, {"Connection": "close"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _host_name(host: str) -> str:
    """The host of a ``Host`` header value (RFC 9110 section 7.2: ``uri-host [ ":" port ]``),
    lower case, without its port, an IPv6 literal's brackets or a final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0].rstrip(".") if ":" in host else host.rstrip(".")


# --------------------------------------------------------------------------- operations → routes


def _identify(access: Access, request: Request, state: SandboxState) -> Principal | None:
    """Who is calling, as ``access`` requires: every kind but ``public``/``self`` needs valid
    credentials (401 otherwise). :func:`_check_kind` then keeps users and agents apart."""
    if access.kind in ("public", "self"):
        return None
    credentials = request.headers.get("authorization")
    if access.kind == "bootstrap":
        state.authority.check_bootstrap(credentials)
        return None
    return state.authority.authenticate(credentials, state.clock())


def _check_kind(access: Access, request: Request, principal: Principal | None, state: SandboxState) -> None:
    """403 unless the caller is of the kind ``access`` names (users and agents are kept apart):
    a refusal :func:`_run` audits as it audits a missing permission (section 6).

    An agent's token is also held to the registry's record of its instance id (404
    ``AGENT_NOT_FOUND`` when the id is not registered now, 403 ``AGENT_TOKEN_STALE`` when it is
    registered with another environment): the token carries the environment it was issued
    with, and tokens outlive the in-memory registry (:class:`~.agents.AgentTokenStale`)."""
    if principal is None:
        return
    if access.kind == "user" and principal.kind != "user":
        raise PermissionDenied(
            f"{principal.subject} is an agent; this endpoint is for users",
            hint="log in as a user with POST /api/v1/auth/login",
            details={"principal": principal.subject},
        )
    if access.kind == "agent":
        instance = request.path_params.get(access.path_param) if access.path_param else None
        require_agent(principal, instance)
        state.agents.check_token(principal.username, principal.env)
    if access.kind not in ("user", "agent"):
        raise PermissionDenied(f"unknown access rule {access.kind!r}")  # unreachable; deny by default


def _endpoint(op: Operation) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await _run(op, request)
        except ApiError as exc:
            return error_response(exc, exc.status)
        except RecordError as exc:
            return error_response(exc, _record_status(exc))
        except Exception as exc:
            # Answered here rather than by Starlette's ServerErrorMiddleware, which re-raises
            # after answering and so makes uvicorn drop the keep-alive connection.
            return _internal_error(request, exc)

    endpoint.__name__ = op.operation_id
    endpoint.operation = op  # type: ignore[attr-defined]
    return endpoint


async def _run(op: Operation, request: Request) -> Response:
    state: SandboxState = request.app.state.sandbox
    check_request_headers(request.scope["headers"])
    # Section 4 "Input rules" for every endpoint, not only those that read a body (read_body
    # also counts a body sent without a length): security review finding 6.
    check_declared_length(request, limit=state.config.max_body)
    principal = _identify(op.access, request, state)
    try:
        # An agent's token on a user endpoint is a denied attempt like a missing permission,
        # and audited as one (section 6; security.md RBAC-4).
        _check_kind(op.access, request, principal, state)
        # Section 6: a LOW/MID tenant gets TIER_NOT_ENTITLED on every replay endpoint, whatever
        # the caller's permissions, so the tier goes before the permission check.
        if op.tier and principal is not None:
            check_tier(state.users.tenant.tier)
        if op.access.permission is not None:
            assert principal is not None
            require(principal, op.access.permission)
    except PermissionDenied as exc:
        await _audit_denial(state, op, request, principal, exc)
        raise
    _check_ids(request)
    if op.tag in _DENIAL_ACTIONS:
        return await op.handler(request, principal)  # the replay and audit handlers audit their own
    try:
        return await op.handler(request, principal)
    except PermissionDenied as exc:
        # A refusal the handler decides (an agent posting the trace of another agent's replay)
        # is a denied attempt as much as a missing permission is (section 6).
        await _audit_denial(state, op, request, principal, exc)
        raise


#: Path and query parameters that carry an id (section 3: ``^[A-Za-z0-9._:-]{1,128}$``).
ID_PARAMS = frozenset(
    {
        "executionId",
        "exchangeId",
        "replayId",
        "instanceId",
        "commandId",
        "sourceExchangeId",
        "targetAgent",
        "targetEnvironment",
        "environment",
    }
)


def _check_ids(request: Request) -> None:
    """400 ``BAD_ID`` for an id parameter (path, or non-empty query) that is not an id: one
    syntax check for every endpoint, so that no handler sees ``../``, NUL or 10 kB of text
    (security.md VAL-2). Ids are decoded once, by the router, and never name files."""
    params = [(k, v, "path") for k, v in request.path_params.items()]
    params += [(k, v, "query") for k, v in request.query_params.multi_items() if v != ""]
    for name, value, where in params:
        if name in ID_PARAMS and (not isinstance(value, str) or not ID_PATTERN.match(value)):
            raise ValidationError(
                f"{where} parameter {name} is not an id: at most 128 of A-Z a-z 0-9 . _ : -",
                code="BAD_ID",
                hint="ids are what the API answered, e.g. an executionId from a search",
                details={"field": name, "in": where},
            )


#: Which denials are audited, and as what (section 6: "every denied attempt is audited"); a
#: refusal on any other endpoint (an agent's token on /executions, a user's on an agent
#: endpoint, an agent acting for another) is ``ACCESS_DENIED`` (ASVS 16.3.2: log failed
#: authorisation).
_DENIAL_ACTIONS = {"replays": "REPLAY_DENIED", "audit": "AUDIT_DENIED"}
#: The longest refusal message a denial's audit record keeps whole.
_REASON_MAX = 500


async def _audit_denial(
    state: SandboxState, op: Operation, request: Request, principal: Principal | None, exc: PermissionDenied
) -> None:
    """Record a refused call (tier, permission, kind of caller) with actor, action, target and
    reason. The refusal stands whether or not the record can be written. A call without valid
    credentials (401) has no actor and is not recorded here."""
    action = _DENIAL_ACTIONS.get(op.tag, "ACCESS_DENIED")
    if principal is None or state.audit is None:
        return  # an agent's refusal is audited too: its actor is the agent (roles ["AGENT"])
    from .replay_api import RequestInfo, actor_of

    def id_of(value: str | None) -> str | None:
        return value if isinstance(value, str) and ID_PATTERN.match(value) else None

    named = id_of(request.path_params.get("replayId"))
    source = RequestInfo.of(request).to_wire()

    def record() -> None:
        # The replay the refused call was about (its path), never a query filter, and only when
        # it is the caller's own: a caller may not add events to the audit record of a replay
        # that is not theirs by naming it (section 7: the record is the events sharing its
        # replayId, which audit:read-own shows its requester). Another's, or an agent's, names
        # it in the detail only, as a refused read does (ReplayService.deny_read).
        requester = state.replays.requested_by(named) if named and state.replays is not None else None
        own = principal.kind == "user" and requester == principal.username
        target = {
            "replayId": named if own else None,
            "sourceExchangeId": id_of(request.query_params.get("sourceExchangeId")),
        }
        state.audit.record(
            action,
            actor=actor_of(principal),
            source=source,
            target=target,
            detail={
                # Bounded: a refusal's message may quote the path (an agent acting for another).
                "reason": exc.message if len(exc.message) <= _REASON_MAX else exc.message[:_REASON_MAX] + "…",
                "code": exc.code,
                "operation": f"{op.method} {op.path}",
                **{k: v for k, v in exc.details.items() if k != "principal"},
                # The ids the refused call named (an execution, an agent, a command), checked:
                # a refused call's path may be anything. After the refusal's details, which
                # quote the path as given (require_agent's instanceId): that copy was kept.
                **{k: id_of(v) for k, v in request.path_params.items() if k != "replayId"},
                **({"replayId": named} if named and not own else {}),
            },
            outcome="DENIED",
        )

    try:
        await run_in_threadpool(record)
    except ApiError:
        pass  # AUDIT_UNAVAILABLE: logged by the audit log; the call is refused either way


def _route(op: Operation) -> Route:
    return Route(op.full_path, _endpoint(op), methods=[op.method], name=op.operation_id)


def _check_routes(routes: Iterable[BaseRoute]) -> None:
    """Refuse to build an app with a route that is not a declared operation (default deny)."""
    for route in routes:
        op = getattr(getattr(route, "endpoint", None), "operation", None)
        if not isinstance(route, Route) or not isinstance(op, Operation):
            raise TypeError(
                f"route {getattr(route, 'path', route)!r} is not a declared Operation; every endpoint "
                "must be an moat_nb.sandbox.openapi.Operation with an access rule"
            )


# --------------------------------------------------------------------------- helpers


def _state(request: Request) -> SandboxState:
    return request.app.state.sandbox  # type: ignore[no-any-return]


class FastJSONResponse(JSONResponse):
    """A :class:`JSONResponse` rendered by :func:`encoder.dumps_finite` (orjson, the stdlib's
    JSON values): an execution with its processors is ~100 KB of JSON, which the stdlib encoder
    takes ms to write. Stored data holds no NaN or infinity (the strict parser and the store's
    checks refuse them), which is that function's precondition."""

    def render(self, content: Any) -> bytes:
        return encoder.dumps_finite(content)


def _json(data: Any, status: int = 200, *, no_store: bool = False) -> JSONResponse:
    headers = {"Cache-Control": "no-store"} if no_store else None
    return FastJSONResponse(data, status, headers)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(
            f"{what} must be a JSON object, not {type(value).__name__}",
            hint="see GET /api/v1/api-docs for the request schema",
        )
    return value


def _string(body: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise ValidationError(
            f"field {key!r} must be a {'non-empty ' if required else ''}string",
            details={"field": key},
        )
    return value


def _path_id(request: Request, name: str) -> str:
    try:
        return check_id(request.path_params[name], name)
    except RecordError as exc:
        raise ValidationError(exc.message, code="BAD_ID", hint=exc.hint, details=exc.details) from None


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _with(record: ProcessorRecord, **fields: Any) -> ProcessorRecord:
    """``record`` with ``fields``, or ``record`` itself when each is the object it holds: the
    redaction helpers give back the record's own value when they change nothing, so that a
    trace without secrets is not copied record by record."""
    if all(getattr(record, name) is value for name, value in fields.items()):
        return record
    return record._evolve(**fields)


def redact_chunk(
    redactor: Redactor, chunk: Chunk, secrets: Iterable[str] = (), *, shown: set[str] | None = None
) -> Chunk:
    """``chunk`` with every secret replaced by its fingerprint (section 4 "Secrets"): the values
    of secret-named headers and properties, and of secret-named fields of JSON bodies — the
    same rules :mod:`moat_nb.sandbox.replays` applies to the trace stream, so the stored trace
    and the streamed one agree. A processor's ``endpointUri`` has its secret-named query options
    and its userinfo password masked (:func:`~moat_nb.payload.redact_uri`): a ``toD`` resolves
    its URI from headers (``?apiKey=${header.X-Api-Key}``). Error messages, the stack trace and
    the endpoint URIs have no names to go by (or not only): the values hidden elsewhere in the
    chunk, and ``secrets`` (a replay's payload secrets), are replaced wherever they occur in
    them (:func:`~moat_nb.payload.scrub_text`). ``shown``, when given, gets every value hidden
    in the chunk and every one of ``secrets`` (what :func:`redact_trace` remembers for the next
    chunk of the same trace).

    Cheap where it can be (it was most of a replay's server time): a header map, property map
    or body whose JSON text cannot hold a secret name (:func:`may_hold_secret_names`) is kept
    as it is, and the others are redacted once per distinct text — the records of one trace
    repeat the same headers and properties from processor to processor. Equal maps come out as
    one dict object, which the store then encodes and checks once (it remembers dicts by id).
    A map that redaction leaves equal stays the object it was, and a record none of whose maps
    and bodies changed is returned as it is: with maps already shared (:func:`share_maps`), a
    trace without secrets (or whose secrets are fingerprints already) is not copied at all."""
    found: set[str] = set(secrets)
    mask = collecting(redactor.value, found)  # notes each value it hides, for the error texts
    maps: dict[bytes, dict[str, Any]] = {}  # JSON text -> the map to keep (redacted, or the first seen)
    seen: dict[int, dict[str, Any]] = {}  # id of a map of this chunk (alive meanwhile) -> the map to keep
    bodies: dict[str, str | None] = {}
    uris: dict[str, str | None] = {}

    def mapping(values: dict[str, Any] | None) -> dict[str, Any] | None:
        if not values:
            return values
        kept = seen.get(id(values))
        if kept is not None:
            return kept
        try:
            # orjson: ~10x the stdlib's speed for a text that is only a cache key and the
            # screen's input. It must be injective: orjson writes NaN and infinities as null,
            # so a text with a null is made again by the stdlib (which writes NaN); datetimes,
            # dataclasses and subclasses are refused here, as the stdlib refuses them.
            text = orjson.dumps(values, option=encoder.ORJSON_STRICT)
            if b"null" in text:
                text = json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode()
        except (TypeError, ValueError):  # not JSON data (orjson also refuses big ints): the long way
            redacted = redact_mapping(values, mask)
            kept = seen[id(values)] = values if redacted is None or redacted == values else redacted
            return kept
        kept = maps.get(text)
        if kept is None:
            redacted = redact_mapping(values, mask) if may_hold_secret_names(text) else values
            # Redaction copies; a copy equal to the map (its secrets are fingerprints already,
            # as in a replay of a stored trace) is dropped for the map itself.
            kept = maps[text] = values if redacted is None or redacted == values else redacted
        seen[id(values)] = kept
        return kept

    def body(text: str | None) -> str | None:
        if text is None:
            return None
        if not isinstance(text, str):  # checked here, before redaction reads it (fuzzing finding)
            raise RecordError(
                f"a body must be a string or null, not {type(text).__name__}",
                code="BAD_FIELD",
                hint="agents send bodies as text, as Camel captures them",
            )
        kept = bodies.get(text)
        if kept is None:
            kept = bodies[text] = redact_body(text, mask) if may_hold_secret_names(text) else text
        # The record's own text when redaction left it equal (the cache holds the first one).
        return text if kept == text else kept

    def uri(text: str | None) -> str | None:
        if not isinstance(text, str):
            return text  # the store's field check refuses what is not a string or null
        kept = uris.get(text)
        if kept is None:
            kept = uris[text] = redact_uri(text, mask)
        return text if kept == text else kept

    def processor(p: ProcessorRecord) -> ProcessorRecord:
        return _with(
            p,
            input_headers=mapping(p.input_headers),
            output_headers=mapping(p.output_headers),
            input_properties=mapping(p.input_properties),
            properties=mapping(p.properties),
            input_body=body(p.input_body),
            output_body=body(p.output_body),
            endpoint_uri=uri(p.endpoint_uri),
        )

    execution: Execution | None = chunk.execution
    if execution is not None:
        execution = replace(
            execution,
            input_headers=mapping(execution.input_headers),
            output_headers=mapping(execution.output_headers),
            input_properties=mapping(execution.input_properties),
            output_properties=mapping(execution.output_properties),
            input_body=body(execution.input_body),
            output_body=body(execution.output_body),
            processors=None if execution.processors is None else tuple(map(processor, execution.processors)),
        )
    processors = tuple(map(processor, chunk.processors))
    if found:  # all the chunk's secrets are known now: look for them in its free texts
        plain = redactor.value

        scrubbed_bodies: dict[str, str | None] = {}
        spelled = spellings(found)

        def scrub(text: str | None) -> str | None:
            # Bodies repeat from processor to processor: each distinct one is searched once.
            if text is None:
                return None
            kept = scrubbed_bodies.get(text)
            if kept is None:
                kept = scrubbed_bodies[text] = scrub_body(text, found, plain, spelled=spelled)
            return text if kept == text else kept

        scrubbed_maps: dict[int, dict[str, Any]] = {}  # id of a map (alive in the chunk) -> kept

        def tree(value: Any) -> Any:
            if isinstance(value, str):
                return scrub(value)
            if isinstance(value, dict):
                return {k: tree(v) for k, v in value.items()}
            if isinstance(value, list):
                return [tree(v) for v in value]
            return value

        def scrub_map(values: dict[str, Any] | None) -> dict[str, Any] | None:
            # Nor in a header or property whose name says nothing (``setProperty: order:
            # ${body}`` of an order that holds it, ``setHeader: X-Upstream: ${header.
            # Authorization}``): the values of maps are searched as bodies are.
            if not values:
                return values
            kept = scrubbed_maps.get(id(values))
            if kept is None:
                new = tree(values)
                kept = scrubbed_maps[id(values)] = values if new == values else new
            return kept

        def scrubbed(p: ProcessorRecord) -> ProcessorRecord:
            text = scrub_text(p.error_message, found, plain, spelled=spelled)
            # A secret taken from a header need not sit under a secret option name in the URI
            # (``/lookup/${header.X-Api-Key}``, ``?key=...``): its value is looked for too.
            endpoint = (
                scrub_uri(p.endpoint_uri, found, plain) if isinstance(p.endpoint_uri, str) else p.endpoint_uri
            )
            # Nor in a body that a route built from it (``setBody: simple: ${header.X-Api-Key}``).
            bodies_now = (scrub(p.input_body), scrub(p.output_body))
            return _with(
                p,
                # Compared by value: scrub_text and scrub_uri may give an equal new string.
                error_message=p.error_message if text == p.error_message else text,
                endpoint_uri=p.endpoint_uri if endpoint == p.endpoint_uri else endpoint,
                input_body=bodies_now[0],
                output_body=bodies_now[1],
                input_headers=scrub_map(p.input_headers),
                output_headers=scrub_map(p.output_headers),
                input_properties=scrub_map(p.input_properties),
                properties=scrub_map(p.properties),
            )

        processors = tuple(map(scrubbed, processors))
        if execution is not None:
            execution = replace(
                execution,
                error_message=scrub_text(execution.error_message, found, plain),
                error_stack_trace=scrub_text(execution.error_stack_trace, found, plain),
                input_body=scrub(execution.input_body),
                output_body=scrub(execution.output_body),
                input_headers=scrub_map(execution.input_headers),
                output_headers=scrub_map(execution.output_headers),
                input_properties=scrub_map(execution.input_properties),
                output_properties=scrub_map(execution.output_properties),
                processors=(
                    None if execution.processors is None else tuple(map(scrubbed, execution.processors))
                ),
            )
    if shown is not None:
        shown.update(found)
    return replace(chunk, execution=execution, processors=processors)


def redact_trace(
    state: SandboxState, chunk: Chunk, secrets: Iterable[str] = (), *, shown: set[str] | None = None
) -> Chunk:
    """:func:`redact_chunk` that also looks for the secret values the earlier chunks of the same
    execution showed (:class:`~moat_nb.sandbox.security.TraceSecrets`). The values this chunk
    shows are added to ``shown``; :func:`remember_trace` keeps them for the next chunks once this
    one is stored."""
    known = state.trace_secrets.get(chunk.execution_id)
    return redact_chunk(
        state.redactor,
        chunk,
        known.union(secrets) if known else secrets,
        shown=set() if shown is None else shown,
    )


def remember_trace(state: SandboxState, chunk: Chunk, shown: Iterable[str]) -> None:
    """Keep what a stored chunk showed (:func:`redact_trace`) for its execution's next chunks.

    Only once the store took the chunk: a chunk refused for its execution's owner, a conflict or
    a replay's state would otherwise push other traces' values out of the bounded memory (found
    by review). A retry of a chunk the store could not write finds its values in itself again.
    They are kept past the final chunk: an agent that did not get its 202 sends that chunk again,
    and it must come out as stored (else 409 ``CHUNK_CONFLICT``)."""
    if not chunk.final:
        state.trace_secrets.remember(chunk.execution_id, shown)


#: The map fields of a processor record on the wire (section 3), which :func:`share_maps` shares.
_RECORD_MAPS = ("inputHeaders", "outputHeaders", "inputProperties", "properties")
_EXECUTION_MAPS = ("inputHeaders", "outputHeaders", "inputProperties", "outputProperties")


def share_maps(body: dict[str, Any]) -> None:
    """Make equal header and property maps of a chunk's processor records (its wire form, just
    parsed) one dict object, in place.

    An agent sends each record's maps in full, and a trace repeats them from processor to
    processor (the 55 records of an orders replay carry 27 distinct maps among 220); parsed, each is
    a dict of its own. Shared, :func:`redact_chunk` and the store handle each distinct map once,
    and redaction keeps the records as they are when it changes nothing. Equal JSON text
    (orjson's, which keeps key order; the stdlib's for what orjson cannot write) is the test."""
    shared: dict[bytes, Any] = {}

    def share(record: Any, names: tuple[str, ...]) -> None:
        if not isinstance(record, dict):
            return  # malformed: Chunk.from_wire says so
        for name in names:
            value = record.get(name)
            if type(value) is not dict or not value:
                continue
            try:
                key = orjson.dumps(value)
            except TypeError:  # an int beyond 64 bits: the stdlib's text, kept apart by a NUL
                key = b"\0" + json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
            record[name] = shared.setdefault(key, value)

    execution = body.get("execution")
    share(execution, _EXECUTION_MAPS)  # the summary's maps are often its first record's
    for group in (
        body.get("processors"),
        execution.get("processors") if isinstance(execution, dict) else None,
    ):
        if isinstance(group, list):
            for record in group:
                share(record, _RECORD_MAPS)


#: What every secret name contains once normalised (``payload.is_secret_name``): a header name
#: of SECRET_HEADER_NAMES whole, or one of SECRET_NAME_PARTS. A needle that contains another
#: ("proxyauthorization", "setcookie", "xapikey") is left out: wherever it is, the shorter one
#: is too, and each needle is a pass over the text.
_SECRET_NEEDLES: tuple[str, ...] = tuple(
    n
    for n in sorted(set(SECRET_HEADER_NAMES) | set(SECRET_NAME_PARTS))
    if not any(other != n and other in n for other in set(SECRET_HEADER_NAMES) | set(SECRET_NAME_PARTS))
)
_SECRET_NEEDLES_ASCII: tuple[bytes, ...] = tuple(n.encode("ascii") for n in _SECRET_NEEDLES)
#: ``[-_.\s]``: the separators ``payload._normalise`` drops from a name.
_NAME_SEPARATORS = re.compile(r"[-_.\s]")
#: The same separators among ASCII characters, and the backslash: ``\s`` in a str pattern also
#: matches the information separators 0x1C-0x1F (``str.isspace``). tests/sandbox/test_server.py
#: checks this list against the pattern, character by character.
_ASCII_DROPPED = b"-_.\\ \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
#: A JSON escape that stands for a character a name may hold but that the text spells otherwise
#: (``\u0070`` is "p"; ``\n`` is a separator the normalisation drops): the screen below cannot
#: see through it, so a text holding one is always redacted the long way. A backslash right
#: before one of the letters: the same texts as ``\\+[ubfnrt]``, which tried every ``\"`` of a
#: trace's nested JSON bodies and took 1-2.5 ms per chunk (this takes 0.1 ms).
_OPAQUE_ESCAPE = re.compile(r"\\[ubfnrt]")
_OPAQUE_ESCAPE_ASCII = re.compile(rb"\\[ubfnrt]")


def may_hold_secret_names(text: str | bytes) -> bool:
    r"""False only when no name in the JSON ``text`` (object keys at any depth, including keys
    of JSON text inside string values; a header or property name when ``text`` is a map's
    JSON) can be a secret name, so redacting it would change nothing.

    The normalisation of :func:`moat_nb.payload.is_secret_name` (lower case, drop ``-_.`` and
    white space) maps each character on its own, so a name whose normalised form contains a
    secret needle leaves that needle in the normalised whole text; with the backslashes of
    nested JSON text removed, the keys of inner documents read as written too. Escapes that
    stand for other characters (``\uXXXX``, ``\n`` ...) defeat that, hence the fallback. A
    false True only costs the full redaction.

    ``text`` may be the UTF-8 bytes of a request body. ASCII text (the usual trace) is screened
    as bytes, where lower-casing and dropping the separators are single C passes
    (``bytes.lower``, ``bytes.translate``); the regular-expression substitution over a 120 KB
    chunk took 4-5 ms of every replay. Other text takes the ``str`` road, because ``str.lower``
    maps some non-ASCII letters to ASCII ones (KELVIN SIGN to "k")."""
    if isinstance(text, bytes):
        if not text.isascii():
            return may_hold_secret_names(text.decode("utf-8", errors="replace"))
        data = text
    elif text.isascii():
        data = text.encode("ascii")
    else:
        if "\\" in text and _OPAQUE_ESCAPE.search(text):
            return True
        flat = _NAME_SEPARATORS.sub("", text.replace("\\", "").lower())
        return any(needle in flat for needle in _SECRET_NEEDLES)
    if b"\\" in data and _OPAQUE_ESCAPE_ASCII.search(data):
        return True
    # One pass per needle over the text without its separators: a needle spelt out as it is
    # ("Authorization") is found there too (needles hold no separator), so a first pass over
    # the plain text would only repeat the work (a header map without secrets: 15 -> 7 us).
    flat_ascii = data.lower().translate(None, _ASCII_DROPPED)
    return any(needle in flat_ascii for needle in _SECRET_NEEDLES_ASCII)


def _redact_and_store(state: SandboxState, chunk: Chunk, instance_id: str) -> Chunk:
    """Redact, then store as posted by ``instance_id`` (in the threadpool: JSON bodies are
    parsed, SQLite is written)."""
    shown: set[str] = set()
    redacted = redact_trace(state, chunk, shown=shown)
    state.store.ingest(redacted, instance_id)
    remember_trace(state, chunk, shown)
    return redacted


# --------------------------------------------------------------------------- handlers: auth, health


class TooManyAttempts(_RetryLater):
    """429: too many failed logins for a user name or from an address (:class:`LoginGuard`)."""

    code = "TOO_MANY_ATTEMPTS"
    status = 429


async def login(request: Request, principal: Principal | None) -> Response:
    state = _state(request)
    body = _object(await read_json(request, limit=state.config.max_body), "the login body")
    username = _string(body, "username")
    password = _string(body, "password")
    address = request.client.host if request.client else None
    guard = state.login_guard
    ticket = await _login_slot(guard, username, address)
    try:
        # scrypt takes ~70 ms: off the event loop.
        answer = await run_in_threadpool(state.authority.login, username, password, state.clock())
    except AuthenticationError as exc:
        wait = guard.failed(username, address, ticket)
        _turns(guard).given_back()  # before the audit write: the waiting logins go on meanwhile
        await _audit_login_failure(state, request, username, exc, wait)
        raise
    except BaseException:
        guard.release(ticket)  # not a password decision: not counted
        _turns(guard).given_back()
        raise
    guard.succeeded(username, address, ticket)
    _turns(guard).given_back()
    return _json(answer, no_store=True)


#: How long a login waits for a slot while others of its name are being checked (a right
#: password frees its slot in one scrypt time, ~70 ms; a burst of 50 logins of one name is
#: checked 5 at a time). Beyond it the login is refused as busy, with Retry-After 1.
LOGIN_QUEUE_SECONDS = 10.0
#: A waiting login is woken when a login ends (:class:`_LoginTurns`); it also looks again after
#: this long, in case a slot came free otherwise (a window passing).
_LOGIN_RECHECK_SECONDS = 0.25


class _LoginTurns:
    """Wakes the logins waiting for a slot (:func:`_login_slot`) when a login gives its slot
    back, on the server's event loop. They polled every 10 ms: with 100 right logins of one
    name arriving together (5 checked at a time, ~70 ms each), the 95 waiting ones spent about
    a fifth of the burst's CPU asking (review finding)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    async def wait(self, timeout: float) -> None:
        """Until the next :meth:`given_back`, or ``timeout`` seconds."""
        if self._event is None:
            self._event = asyncio.Event()
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass

    def given_back(self) -> None:
        """A login ended: every waiting login tries again (each to its own name's slots)."""
        if self._event is not None:
            self._event.set()
            self._event = None


_LOGIN_TURNS: weakref.WeakKeyDictionary[LoginGuard, _LoginTurns] = weakref.WeakKeyDictionary()


def _turns(guard: LoginGuard) -> _LoginTurns:
    turns = _LOGIN_TURNS.get(guard)
    if turns is None:
        turns = _LOGIN_TURNS[guard] = _LoginTurns()
    return turns


async def _login_slot(guard: LoginGuard, username: str, address: str | None) -> int:
    """A slot of the login guard for this attempt, waiting while every slot its name's (or
    address's) failures leave is held by a login in flight; 429 when it must wait for its
    failures to age (not audited one by one: the failure that started the wait was, so that a
    flood cannot grow the audit log) or the queue does not move within LOGIN_QUEUE_SECONDS.

    Check and slot are one step (LoginGuard.begin): concurrent logins all passed a separate
    check before any failure was counted. A slot is not a failure: the first design counted
    each login as failed until its password proved right, and five right logins of one name
    within one scrypt time gave the next a 429 (review finding)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOGIN_QUEUE_SECONDS
    while True:
        wait, ticket = guard.begin(username, address)
        if wait is not None:
            raise _too_many(wait)
        if ticket is not None:
            return ticket
        if loop.time() >= deadline:
            raise TooManyAttempts(
                "too many logins for this user name or from this address are being checked at "
                "once; try again in 1 s",
                retry_after=1,
                hint="log in once and reuse the token (it lasts 1 h; refresh it with "
                "POST /api/v1/auth/refresh) instead of logging in for every request",
                details={"retryAfter": 1},
            )
        await _turns(guard).wait(min(_LOGIN_RECHECK_SECONDS, max(0.0, deadline - loop.time())))


def _too_many(wait: int) -> TooManyAttempts:
    return TooManyAttempts(
        f"too many failed logins for this user name or from this address; try again in {wait} s",
        retry_after=wait,
        hint=f"wait {wait} s, then log in with the right password (an administrator can set it "
        "in the users file)",
        details={"retryAfter": wait},
    )


#: The audit actor of a failed login under a name that is no user's: this + its fingerprint.
UNKNOWN_NAME_PREFIX = "unknown#"


async def _audit_login_failure(
    state: SandboxState, request: Request, username: str, exc: AuthenticationError, wait: int | None
) -> None:
    """``LOGIN_FAILED``: who tried (the name given, which may be no user's), from where, and
    whether the name or address must now wait (ASVS 4.0.3 V7.2.1: authentication decisions
    are logged; the password never is). The refusal stands whether or not this is written."""
    if state.audit is None:
        return
    from .replay_api import RequestInfo

    source = RequestInfo.of(request).to_wire()

    known = state.users.get(username) is not None
    # A name that is no user's is often a password typed into the name field: it is written
    # as a keyed fingerprint and its length (OWASP Logging Cheat Sheet; ASVS 16.2.5: never a
    # credential in the log), which still shows an auditor the same name tried again. '#' is
    # not allowed in a user name (ID_PATTERN), so "unknown#..." is never a real user's.
    if known:
        actor_name, name_detail = username, {}
    else:
        fp = state.redactor.name_fingerprint(username)
        actor_name = f"{UNKNOWN_NAME_PREFIX}{fp}"
        name_detail = {"nameFingerprint": fp, "nameLength": len(username)}

    def record() -> None:
        state.audit.record(
            "LOGIN_FAILED",
            actor={"username": actor_name, "roles": [], "permissions": []},
            source=source,
            target={},
            detail={
                "reason": exc.message,
                "code": exc.code,
                "known": known,
                **name_detail,
                **({"retryAfter": wait} if wait is not None else {}),
            },
            outcome="DENIED",
        )

    try:
        await run_in_threadpool(record)
    except ApiError:
        pass  # AUDIT_UNAVAILABLE: logged by the audit log; the login is refused either way


async def refresh(request: Request, principal: Principal | None) -> Response:
    state = _state(request)
    answer = state.authority.refresh(request.headers.get("authorization"), state.clock())
    # An agent's refresh token is held to the registration as its access tokens are (agent
    # endpoints, _check_kind): it got a fresh access token for an id registered elsewhere since,
    # refused only at its first use (review finding).
    renewed = state.authority.authenticate(answer["accessToken"], state.clock())
    if renewed.kind == "agent":
        state.agents.check_token(renewed.username, renewed.env)
    return _json(answer, no_store=True)


async def health(request: Request, principal: Principal | None) -> Response:
    return _json({"status": "UP"})


async def api_docs(request: Request, principal: Principal | None) -> Response:
    return _json(request.app.state.openapi)


# --------------------------------------------------------------------------- handlers: executions


def _search_filters(body: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - SEARCH_FILTERS)
    if unknown:
        raise ValidationError(
            f"unknown search filter {unknown[0]!r}",
            hint="known filters: " + ", ".join(sorted(SEARCH_FILTERS)),
            details={"field": unknown[0], "unknown": unknown},
        )
    filters = {k: v for k, v in body.items() if v is not None}
    limit = filters.get("limit", DEFAULT_LIMIT)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(
            f"limit {limit!r} must be an integer from 1 to {MAX_LIMIT}",
            hint="page with offset to read more",
            details={"field": "limit", "max": MAX_LIMIT},
        )
    offset = filters.get("offset", 0)
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValidationError(
            f"offset {offset!r} must be a non-negative integer", details={"field": "offset"}
        )
    filters["limit"], filters["offset"] = limit, offset
    return filters


async def search_executions(request: Request, principal: Principal | None) -> Response:
    state = _state(request)
    body = await read_json(request, limit=state.config.max_body, allow_empty=True)
    filters = _search_filters(_object({} if body is None else body, "the search body"))
    hits, total = await run_in_threadpool(lambda: state.store.search(**filters))
    return _json(
        {
            "data": [h.summary().to_wire() for h in hits],
            "total": total,
            "offset": filters["offset"],
            "limit": filters["limit"],
        }
    )


async def get_execution(request: Request, principal: Principal | None) -> Response:
    state = _state(request)
    execution_id = _path_id(request, "executionId")
    execution = await run_in_threadpool(state.store.execution, execution_id)
    if execution is None:
        # An exchange id where an execution id belongs is the usual slip (replays take the one,
        # this path the other): say which execution it names.
        named = await run_in_threadpool(state.store.execution_id_by_exchange, execution_id)
        raise NotFound(
            f"no execution {execution_id!r}"
            + (
                f"; {execution_id!r} is an exchange id, whose recorded execution is {named!r}"
                if named
                else ""
            ),
            hint=f"GET /executions/{named} (p.execution({named!r}) in Python)"
            if named
            else "find executions by searching the history "
            "(POST /search/executions; p.executions(...) in Python)",
            details={"executionId": execution_id, **({"recordedExecutionId": named} if named else {})},
        )
    return _json(execution.to_wire(tree=True))


async def processor_snapshot(request: Request, principal: Principal | None) -> Response:
    state = _state(request)
    execution_id = _path_id(request, "executionId")
    raw_seq = request.path_params["seq"]
    if not raw_seq.isascii() or not raw_seq.isdigit() or len(raw_seq) > 9:
        raise ValidationError(
            f"seq {raw_seq[:20]!r} must be a non-negative integer", details={"field": "seq"}
        )
    seq = int(raw_seq)
    record = await run_in_threadpool(state.store.processor, execution_id, seq)
    if record is None:
        raise NotFound(
            f"execution {execution_id!r} has no processor with seq {seq}",
            details={"executionId": execution_id, "seq": seq},
        )
    return _json(record.to_wire())


# --------------------------------------------------------------------------- handlers: agents


async def list_agents(request: Request, principal: Principal | None) -> Response:
    state = _state(request)
    unknown = sorted(set(request.query_params) - {"environment", "status"})
    if unknown:
        raise ValidationError(f"unknown query parameter {unknown[0]!r}", hint="known: environment, status")
    agents = state.agents.list(
        environment=request.query_params.get("environment") or None,
        status=request.query_params.get("status") or None,
    )
    return _json([a.to_wire() for a in agents])


async def register_agent(request: Request, principal: Principal | None) -> Response:
    state = _state(request)
    body = _object(await read_json(request, limit=state.config.max_body), "the registration body")
    route_ids = body.get("routeIds", [])
    if not isinstance(route_ids, list) or not all(isinstance(r, str) for r in route_ids):
        raise ValidationError("routeIds must be a list of strings", details={"field": "routeIds"})
    capabilities = body.get("capabilities")
    if capabilities is not None and not isinstance(capabilities, list | dict):
        raise ValidationError("capabilities must be a list or an object", details={"field": "capabilities"})
    version = body.get("routeVersion", body.get("version"))
    if version is not None and not isinstance(version, str):
        raise ValidationError("routeVersion must be a string", details={"field": "routeVersion"})
    instance_id = _string(body, "instanceId") or ""
    environment_id = _string(body, "environmentId") or ""
    history: set[str] = set()
    if ID_PATTERN.match(instance_id):  # else register() refuses it as BAD_ID
        history = await run_in_threadpool(_instance_history, state, instance_id)
    try:
        info = state.agents.register(
            instance_id,
            environment_id=environment_id,
            application_id=_string(body, "applicationId") or "",
            display_name=_string(body, "displayName", required=False),
            route_ids=route_ids,
            route_version=version,
            capabilities=capabilities,
            history=history,
        )
    except RecordError as exc:
        raise ValidationError(exc.message, code="BAD_ID", hint=exc.hint, details=exc.details) from None
    except AgentEnvironmentChanged as exc:
        await _audit_registration_refused(state, request, instance_id, exc)
        raise
    tokens = state.authority.issue_agent_tokens(info.instance_id, info.environment_id, state.clock())
    return _json({**tokens, "serverPublicKey": state.signer.public_key_b64()}, no_store=True)


def _instance_history(state: SandboxState, instance_id: str) -> set[str]:
    """The environments ``instance_id`` recorded executions in or was sent replays in."""
    found = state.store.instance_environments(instance_id)
    if state.replays is not None:
        found |= state.replays.agent_environments(instance_id)
    return found


async def _audit_registration_refused(
    state: SandboxState, request: Request, instance_id: str, exc: AgentEnvironmentChanged
) -> None:
    """``ACCESS_DENIED`` for a registration refused for changing the id's environment (section
    6: every denied attempt is audited): the actor is the agent it claimed to be, holding the
    bootstrap token (there is no agent token yet). The refusal stands whether or not this is
    written."""
    if state.audit is None:
        return
    from .replay_api import RequestInfo

    source = RequestInfo.of(request).to_wire()

    def record() -> None:
        state.audit.record(
            "ACCESS_DENIED",
            actor={"username": instance_id, "roles": ["AGENT"], "permissions": []},
            source=source,
            target={"environment": exc.details["requested"]},
            detail={
                "reason": exc.message,
                "code": exc.code,
                "operation": "POST /agents/register",
                **exc.details,
            },
            outcome="DENIED",
        )

    try:
        await run_in_threadpool(record)
    except ApiError:
        pass  # AUDIT_UNAVAILABLE: logged by the audit log; the registration is refused either way


async def heartbeat(request: Request, principal: Principal | None) -> Response:
    state = _state(request)
    assert principal is not None
    instance_id = request.path_params["instanceId"]
    body = await read_json(request, limit=state.config.max_body, allow_empty=True)
    body = _object({} if body is None else body, "the heartbeat body")
    route_states = body.get("routeStates")
    if route_states is not None and not (
        isinstance(route_states, dict) and all(isinstance(v, str) for v in route_states.values())
    ):
        raise ValidationError(
            "routeStates must map route ids to state names", details={"field": "routeStates"}
        )
    env = body.get("environmentId")
    if env is not None and env != principal.env:
        raise ValidationError(
            f"environmentId {env!r} differs from the agent's registered environment {principal.env!r}",
            hint="re-register to change environment",
            details={"field": "environmentId"},
        )
    capabilities = body.get("capabilities")
    if capabilities is not None and not isinstance(capabilities, list | dict):
        raise ValidationError("capabilities must be a list or an object", details={"field": "capabilities"})
    info = state.agents.heartbeat(instance_id, route_states=route_states, capabilities=capabilities)
    return _json(info.to_wire())


async def agent_events(request: Request, principal: Principal | None) -> Response:
    state = _state(request)
    instance_id = request.path_params["instanceId"]
    if state.agents.get(instance_id) is None:
        raise NotFound(
            f"agent {instance_id!r} is not registered",
            code="AGENT_NOT_FOUND",
            hint="register with POST /api/v1/agents/register first",
        )
    last = request.headers.get("last-event-id")
    if last is not None and not ID_PATTERN.match(last):
        raise ValidationError(
            f"Last-Event-ID {last[:40]!r} is not a command id",
            code="BAD_LAST_EVENT_ID",
            hint="send the id of the last command event received, or no Last-Event-ID",
        )

    if request.method == "HEAD":  # headers only: must not take over the agent's live channel
        return Response(media_type="text/event-stream", headers={"Cache-Control": "no-store"})
    # Opened here, before the response starts, so that the agent counts as connected (LIVE) by
    # the time it sees the response headers; the response closes it however it ends.
    channel = state.agents.open_channel(instance_id, last_event_id=last)

    async def events() -> AsyncIterator[ServerSentEvent]:
        async for command in channel:
            yield ServerSentEvent(
                data=json.dumps(command, ensure_ascii=False, allow_nan=False, separators=(",", ":")),
                event=event_name(command["type"]),
                id=command["commandId"],
            )

    return _CommandStream(
        channel, events(), ping=state.config.ping_interval, send_timeout=state.config.send_timeout
    )


class _CommandStream(EventSourceResponse):
    """The command channel's response. A send that times out (an agent that stopped reading,
    security.md SSE-5) ends the stream as planned — the channel closes, the agent stops being
    LIVE and resumes with Last-Event-ID when it reconnects — instead of surfacing as an error."""

    def __init__(self, channel: CommandChannel, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channel = channel

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.info("command channel %s: agent too slow, dropped", scope.get("path"))
        finally:
            self.channel.close()


async def ack_command(request: Request, principal: Principal | None) -> Response:
    state = _state(request)
    instance_id = request.path_params["instanceId"]
    command_id = _path_id(request, "commandId")
    body = _object(await read_json(request, limit=state.config.max_body), "the ack body")
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        raise ValidationError("message must be a string", details={"field": "message"})
    data = body.get("data")
    if data is not None and not isinstance(data, dict):
        raise ValidationError("data must be an object", details={"field": "data"})
    ack = {"status": body.get("status"), "message": message, "data": data}
    # The replay service hears of the first ack through the registry's on_ack callbacks.
    _, first = state.agents.ack(instance_id, command_id, ack)
    return _json({"commandId": command_id, "status": ack["status"], "duplicate": not first})


# --------------------------------------------------------------------------- handlers: ingestion


async def post_chunk(request: Request, principal: Principal | None) -> Response:
    state = _state(request)
    assert principal is not None
    if request.headers.get(PROTOCOL_HEADER) != PROTOCOL_VERSION:
        # cameleer.md 2.1: the same check and message as Cameleer's ProtocolVersionInterceptor.
        raise ValidationError(
            f"Missing or unsupported {PROTOCOL_HEADER} header",
            code="PROTOCOL_VERSION",
            hint=f"send {PROTOCOL_HEADER}: {PROTOCOL_VERSION}",
            details={"header": PROTOCOL_HEADER, "expected": PROTOCOL_VERSION},
        )
    gate: _IngestGate = request.app.state.ingest_gate
    if gate.in_flight >= gate.capacity and state.replays is not None:
        # Told to wait (503 below) is not silent: the agent's replays' timeouts restart, or an
        # agent waiting out a full buffer would be timed out for waiting (found by review).
        state.replays.heard_from(principal.username)
    check_json_media_type(request)
    with gate.slot():
        raw = await read_body(request, limit=state.config.max_body)
        body = _object(parse_json(raw), "the chunk")
        share_maps(body)
        try:
            chunk = Chunk.from_wire(body)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:  # RecordError is a ValueError
            if isinstance(exc, RecordError):
                raise
            raise ValidationError(f"malformed chunk: {exc}", code="BAD_CHUNK") from None
        chunk = _stamp_agent(chunk, principal)
        # No screen of the whole body first: redact_chunk screens each distinct map and body
        # once, which is cheaper than one screen of the ~140 KB text (2.9 ms without a secret
        # name in it; 0.3 ms wasted when there is one, as in most traffic).
        try:
            if chunk.replay_id is not None and state.replays is not None:
                # A replay's chunk: redacted, stored and turned into trace events on the replay
                # worker, in one thread hop (the round trip of P2 waits on it).
                shown: set[str] = set()
                redact = partial(redact_trace, state, shown=shown)
                remember = partial(remember_trace, state, chunk, shown)  # on the worker, at commit
                chunk = await _maybe_await(state.replays.ingest(chunk, principal.username, redact, remember))
            else:
                chunk = await run_in_threadpool(_redact_and_store, state, chunk, principal.username)
        except (sqlite3.OperationalError, sqlite3.IntegrityError) as exc:
            # The chunk was checked whole before its transaction, so such a database error is
            # the store's (busy, I/O, disk full, a failing trigger), not the agent's (a value
            # the store cannot bind would be a gap in the check: a 500, a bug to fix, which
            # schemathesis would find); the transaction rolled back
            # and nothing of the chunk is kept, so the agent's retry (503 + Retry-After, as for a
            # full buffer) can complete the replay. A 500 made the agent give up and the replay
            # end ERROR although its route ran (found by review).
            log.error("chunk %s of execution %s not stored: %s", chunk.chunk_seq, chunk.execution_id, exc)
            raise IngestBusy(
                "the chunk could not be stored now (a storage error); nothing of it was kept",
                code="STORE_UNAVAILABLE",
                retry_after=gate.retry_after,
                hint=f"send the same chunk again after {gate.retry_after} s",
                details={"executionId": chunk.execution_id, "chunkSeq": chunk.chunk_seq},
            ) from None
    return _json({"executionId": chunk.execution_id, "chunkSeq": chunk.chunk_seq}, 202)


def _stamp_agent(chunk: Chunk, principal: Principal) -> Chunk:
    """Environment and instance come from the agent's token, never from the body (cameleer.md
    2.8; section 6: replay permissions are derived from stored environments). A chunk naming
    another environment or instance is refused rather than silently rewritten."""
    execution = chunk.execution
    if execution is None:
        return chunk
    for field_name, wire, expected in (
        ("environment", "environment", principal.env),
        ("instance_id", "instanceId", principal.username),
    ):
        value = getattr(execution, field_name)
        if value is not None and value != expected:
            raise ValidationError(
                f"chunk execution.{wire} {value!r} is not this agent's ({expected!r})",
                code="BAD_CHUNK",
                details={"field": f"execution.{wire}"},
            )
    return replace(
        chunk, execution=replace(execution, environment=principal.env, instance_id=principal.username)
    )


class _IngestGate:
    """Counts chunks in flight; a chunk over ``capacity`` is refused with 503 + Retry-After.

    Used only on the server's event loop, so a plain counter is enough.
    """

    def __init__(self, capacity: int, retry_after: int) -> None:
        self.capacity = capacity
        self.retry_after = retry_after
        self.in_flight = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.in_flight >= self.capacity:
            raise IngestBusy(
                f"the ingest buffer is full ({self.capacity} chunks in flight)",
                retry_after=self.retry_after,
                hint=f"retry after {self.retry_after} s",
                details={"capacity": self.capacity},
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


# --------------------------------------------------------------------------- the operation table

_NO_CONTENT = ("no body", None)
_PROTOCOL_PARAM = {
    "name": PROTOCOL_HEADER,
    "in": "header",
    "required": True,
    "schema": {"type": "string", "enum": [PROTOCOL_VERSION]},
}
_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "id of the last command received: later unacknowledged commands are sent again",
}


def core_operations() -> list[Operation]:
    """Every operation of section 4 except the replay and audit ones."""
    sse = {"type": "string", "description": "text/event-stream of signed commands"}
    return [
        Operation(
            "POST",
            "/auth/login",
            login,
            access=PUBLIC,
            operation_id="login",
            summary="Log in with a user name and password",
            tag="auth",
            request=ref("LoginRequest"),
            responses={200: ("tokens", ref("LoginResponse"))},
            errors=(401, 429),
        ),
        Operation(
            "POST",
            "/auth/refresh",
            refresh,
            access=PUBLIC,
            operation_id="refresh",
            summary="A new access token for a refresh token (Authorization: Bearer)",
            tag="auth",
            responses={200: ("a new access token", ref("RefreshResponse"))},
            errors=(401,),
        ),
        Operation(
            "GET",
            "/health",
            health,
            access=PUBLIC,
            operation_id="health",
            summary="Liveness",
            tag="server",
            responses={200: ("up", ref("Health"))},
        ),
        Operation(
            "GET",
            "/api-docs",
            api_docs,
            access=PUBLIC,
            operation_id="apiDocs",
            summary="This OpenAPI 3.1 document",
            tag="server",
            responses={200: ("the document", {"type": "object"})},
        ),
        Operation(
            "POST",
            "/search/executions",
            search_executions,
            access=needs("executions:read"),
            operation_id="searchExecutions",
            summary="Search executions",
            tag="executions",
            request=ref("SearchRequest"),
            request_required=False,
            responses={200: ("a page of executions", ref("SearchResponse"))},
        ),
        Operation(
            "GET",
            "/executions/{executionId}",
            get_execution,
            access=needs("executions:read"),
            operation_id="getExecution",
            summary="An execution with its processor tree",
            tag="executions",
            responses={200: ("the execution", ref("ExecutionDetail"))},
            errors=(404,),
        ),
        Operation(
            "GET",
            "/executions/{executionId}/processors/{seq}/snapshot",
            processor_snapshot,
            access=needs("executions:read"),
            operation_id="getProcessorSnapshot",
            summary="One processor's bodies, headers and properties",
            tag="executions",
            responses={200: ("the processor record", ref("ProcessorRecord"))},
            errors=(404,),
        ),
        Operation(
            "GET",
            "/agents",
            list_agents,
            access=needs("executions:read"),
            operation_id="listAgents",
            summary="Registered agents",
            tag="agents",
            parameters=[
                {"name": "environment", "in": "query", "required": False, "schema": {"type": "string"}},
                {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["LIVE", "STALE", "DEAD"]},
                },
            ],
            responses={200: ("agents", {"type": "array", "items": ref("Agent")})},
        ),
        Operation(
            "POST",
            "/agents/register",
            register_agent,
            access=BOOTSTRAP,
            operation_id="registerAgent",
            summary="Register an agent (Authorization: Bearer <bootstrap token>)",
            tag="agents",
            request=ref("RegisterRequest"),
            responses={200: ("agent tokens", ref("RegisterResponse"))},
            errors=(409,),
        ),
        Operation(
            "POST",
            "/agents/{instanceId}/heartbeat",
            heartbeat,
            access=agent("instanceId"),
            operation_id="agentHeartbeat",
            summary="Agent heartbeat with route states",
            tag="agents",
            request=ref("Heartbeat"),
            request_required=False,
            responses={200: ("the agent", ref("Agent"))},
            errors=(404,),
        ),
        Operation(
            "GET",
            "/agents/{instanceId}/events",
            agent_events,
            access=agent("instanceId"),
            operation_id="agentEvents",
            summary="The agent's SSE command channel",
            tag="agents",
            parameters=[_LAST_EVENT_ID],
            media_type="text/event-stream",
            responses={200: ("signed commands; event = type in kebab case, id = commandId", sse)},
            errors=(404,),
        ),
        Operation(
            "POST",
            "/agents/{instanceId}/commands/{commandId}/ack",
            ack_command,
            access=agent("instanceId"),
            operation_id="ackCommand",
            summary="Acknowledge a command",
            tag="agents",
            request=ref("Ack"),
            responses={200: ("recorded", ref("AckResponse"))},
            errors=(404,),
        ),
        Operation(
            "POST",
            "/data/chunks",
            post_chunk,
            access=agent(),
            operation_id="postChunk",
            summary="Ingest a chunk of an execution's trace",
            tag="ingestion",
            request=ref("Chunk"),
            parameters=[_PROTOCOL_PARAM],
            responses={202: ("accepted", ref("Accepted"))},
            errors=(404, 409, 503),
        ),
    ]


# --------------------------------------------------------------------------- the app


def _replay_operations(state: SandboxState) -> list[Operation]:
    """The replay endpoints (:func:`moat_nb.sandbox.replays.replay_routes`), which must be
    declared :class:`Operation` objects like every other endpoint (default deny)."""
    try:
        from .replays import replay_routes
    except ModuleNotFoundError as exc:  # written by another part of issue 3
        if exc.name != f"{__package__}.replays":
            raise
        return []
    ops = list(replay_routes(state))
    for op in ops:
        if not isinstance(op, Operation):
            raise TypeError(
                f"replay_routes() returned {op!r}; every endpoint must be a "
                "moat_nb.sandbox.openapi.Operation with its access rule (default deny)"
            )
    return ops


def create_app(state: SandboxState, *, extra_operations: Iterable[Operation] = ()) -> Starlette:
    """The Starlette app of one sandbox server (see the module docstring)."""
    from .admin_api import admin_operations

    operations = [*core_operations(), *_replay_operations(state), *admin_operations(state), *extra_operations]
    routes = [_route(op) for op in operations]
    _check_routes(routes)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # sse-starlette's shutdown flag is process-wide and never reset: a server stopped by a
        # signal earlier in this process would otherwise end every stream of this one at once.
        AppStatus.should_exit = False
        if state.replays is not None and hasattr(state.replays, "startup"):
            await _maybe_await(state.replays.startup())
        try:
            yield
        finally:
            state.agents.close_channels()
            if state.replays is not None and hasattr(state.replays, "shutdown"):
                await _maybe_await(state.replays.shutdown())

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(TrustedHosts, allowed=state.config.allowed_hosts),
            Middleware(
                HeaderLimits,
                max_count=state.config.max_headers,
                max_bytes=state.config.max_header_bytes,
            ),
        ],
        exception_handlers={
            ApiError: _api_error,
            RecordError: _record_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        lifespan=lifespan,
    )
    # No slash-redirects: an API client uses exact paths, and "/executions/%2e%2e%2f" must be a
    # 404, not a 307 to a path the client did not ask for (security.md VAL-2).
    app.router.redirect_slashes = False
    app.state.sandbox = state
    app.state.operations = operations
    app.state.openapi = document(operations)
    app.state.ingest_gate = _IngestGate(state.config.chunk_buffer, state.config.retry_after)
    _check_routes(app.routes)
    return app


# --------------------------------------------------------------------------- running it


def _fast_stack() -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    """The event loop factory and the HTTP implementation the server runs: uvloop and
    httptools (C, what ``uvicorn[standard]`` installs) where available, else asyncio's loop
    and h11. The sandbox's agents share the server's loop, so every replay crosses both ~8
    times; with them a replay's round trip was 2.5 ms shorter (alternating A/B, P2). uvloop
    does not exist on Windows."""
    try:
        import uvloop
    except ImportError:
        new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    else:
        new_loop = uvloop.new_event_loop
    try:
        import httptools  # noqa: F401
    except ImportError:
        return new_loop, "h11"
    return new_loop, "httptools"


def _head_too_large_answer(limit: int) -> bytes:
    """The whole 431 answer the HTTP protocols write for a head over ``limit`` bytes: the error
    envelope of :class:`HeaderLimits`'s (section 4 "Errors"), the same under httptools and h11."""
    body = json.dumps(
        {
            "error": HeadersTooLarge.code,
            "message": f"the request line and header fields are longer than {limit} bytes",
            "details": {"limit": limit, "hint": "send fewer and shorter header fields"},
        }
    ).encode()
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n".encode()
        + b"connection: close\r\n\r\n"
        + body
    )


def _bounded_httptools(limit: int) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, answering 431 and closing the connection once a request's
    head (request line and header fields) passes ``limit`` bytes without ending.

    httptools (llhttp) and uvicorn put no bound on it: a 20 MB header value was buffered whole
    (the process grew by ~80 MB) and handed to the app, so the app's own check
    (:class:`HeaderLimits`) came after the memory was spent. Bytes are counted as they arrive
    until the head is complete; a read that also holds the start of the body, or the end of the
    previous request, counts whole, which can only over-count by one read (at most 256 KiB),
    far below ``limit`` minus any head a client of the sandbox sends (measured in
    :mod:`.bodies`)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    answer = _head_too_large_answer(limit)

    class BoundedHttpTools(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0
            self._in_head = True

        def data_received(self, data: bytes) -> None:
            if self._in_head:
                self._head_bytes += len(data)
                if self._head_bytes > limit:
                    self._in_head = False
                    self.transport.write(answer)
                    self.transport.close()
                    return
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._in_head, self._head_bytes = False, 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_head, self._head_bytes = True, 0  # the next request on this connection
            super().on_message_complete()

    return BoundedHttpTools


def _bounded_h11(limit: int) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol (the fallback without httptools), answering a head over ``limit``
    bytes as :func:`_bounded_httptools` does: 431 ``HEADERS_TOO_LARGE``, then close.

    h11 bounds the head itself (``max_incomplete_event_size``) and says which refusal it is,
    ``RemoteProtocolError(error_status_hint=431)``, but uvicorn answers every protocol error
    with a plain-text 400, so a client saw 400 under h11 and 431 under httptools for the same
    request. The connection here remembers that hint, and the 400 answer gives way to the 431
    one; any other protocol error keeps uvicorn's 400."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    answer = _head_too_large_answer(limit)

    class HintedConnection(h11.Connection):
        head_too_large = False

        def next_event(self) -> Any:
            try:
                return super().next_event()
            except h11.RemoteProtocolError as exc:
                # h11 hints 431 only for a receive buffer over max_incomplete_event_size (h11
                # 0.16 _connection.py), i.e. a request head that does not end in time.
                self.head_too_large = exc.error_status_hint == 431
                raise

    class BoundedH11(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.conn = HintedConnection(h11.SERVER, max_incomplete_event_size=limit)

        def send_400_response(self, msg: str) -> None:
            if not getattr(self.conn, "head_too_large", False):
                super().send_400_response(msg)
                return
            self.transport.write(answer)
            self.transport.close()

    return BoundedH11


class ServerThread:
    """uvicorn serving ``app`` in a background thread with its own event loop.

    ``start()`` returns once the socket listens (``port=0`` picks a free port; :attr:`url` has
    it). ``stop()`` first ends the open agent command channels and, if the replay service has
    ``close_streams()``, the replay trace streams — uvicorn waits for open responses before it
    runs the lifespan shutdown, so endless SSE responses must end first — then stops uvicorn.
    """

    def __init__(
        self,
        app: Starlette,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        graceful_timeout: int = 5,
        trusted_proxies: Iterable[str] = (),
        http: Literal["httptools", "h11"] | None = None,
    ) -> None:
        self.app = app
        self._new_loop, fastest = _fast_stack()
        # `http` picks the HTTP implementation (default: httptools where installed): tests run
        # the h11 fallback with it, as a machine without httptools would.
        http = http or fastest
        head_limit = app.state.sandbox.config.max_head_bytes
        proxies = list(trusted_proxies)
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            lifespan="on",
            # The request head is bounded in the HTTP protocol, before the app (HeaderLimits)
            # sees it, with the same 431 under either: httptools bounds nothing; h11 (the
            # fallback) bounds it by max_incomplete_event_size but answered a plain 400.
            http=_bounded_httptools(head_limit) if http == "httptools" else _bounded_h11(head_limit),
            h11_max_incomplete_event_size=head_limit,
            # Forwarded headers only from the proxies named (ServerConfig.trusted_proxies).
            proxy_headers=bool(proxies),
            forwarded_allow_ips=proxies or None,
            timeout_graceful_shutdown=graceful_timeout,
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self._run, name="moat-sandbox-server", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self.port: int | None = None

    def _run(self) -> None:
        self.loop = self._new_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve())
        except BaseException as exc:  # reported by start()/stop()
            self.error = exc
        finally:
            # Tasks uvicorn does not own (sse-starlette's shutdown watcher, one per loop) would
            # otherwise be destroyed pending when the loop closes.
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not started")
        return f"http://{self.config.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.server.should_exit = True
                raise RuntimeError(f"the sandbox server did not start: {self.error!r}")
            time.sleep(0.01)
        sockets = [s for server in self.server.servers for s in server.sockets]
        self.port = sockets[0].getsockname()[1]
        return self

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` on the server's loop (awaiting it if it returns an awaitable)."""
        if self.loop is None or not self.thread.is_alive():
            raise RuntimeError("the server is not running")

        async def run() -> Any:
            return await _maybe_await(fn())

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        if self.thread.is_alive() and self.loop is not None:
            state: SandboxState = self.app.state.sandbox
            try:
                self.call(state.agents.close_channels)
                replays = state.replays
                if replays is not None and hasattr(replays, "close_streams"):
                    self.call(replays.close_streams)
            except (RuntimeError, TimeoutError, asyncio.CancelledError):
                pass  # the loop is already going away; uvicorn's graceful timeout covers the rest
            self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
