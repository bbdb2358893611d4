"""The replay endpoints (DESIGN.md section 4): request reading and the declared operations.

:func:`replay_operations` gives the server (``create_app``) one
:class:`~moat_nb.sandbox.openapi.Operation` per endpoint, each with its access rule and the
tenant tier check (403 ``TIER_NOT_ENTITLED`` for LOW/MID on every replay endpoint, section 6):

======================================  =================  ====================================
``POST /replays``                        any user            ``replay:run`` (+ ``replay:modify``,
                                                             ``replay:prod``) checked by the
                                                             service, so that a denial is audited
``GET /replays``                         ``executions:read`` own replays; all with ``audit:read``
``GET /replays/preflight``               ``replay:run``
``GET /replays/{replayId}``              any user            requester or ``audit:read``, else 404
``GET /replays/{replayId}/events``       self-checked        bearer token or a stream ticket
``POST /replays/{replayId}/stream-ticket``  any user         requester or ``audit:read``
======================================  =================  ====================================
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import audit
from ..errors import AuditUnavailable, PayloadTooLarge, RecordError, UnsupportedMediaType, ValidationError
from ..model import REPLAY_STATUSES, ModifiedPayload, check_id
from ..payload import Mask, parse_modified_payload, redact_mapping, refuse_control_headers
from .bodies import parse_json, read_body, read_json
from .openapi import USER, Operation, needs, ref
from .replay_tables import dumps
from .security import Principal

if TYPE_CHECKING:
    from .replays import ReplayService
    from .state import SandboxState

__all__ = [
    "REQUEST_KEYS",
    "RequestInfo",
    "ReplayRequest",
    "check_idempotency_key",
    "principal_of",
    "actor_of",
    "valid_id",
    "replay_operations",
    "REPLAY_SCHEMA",
]

_KEY = re.compile(r"[\x20-\x7e]{1,255}")
#: The fields of a ``POST /replays`` body.
REQUEST_KEYS = frozenset(
    {"sourceExchangeId", "modifiedPayload", "targetEnvironment", "targetAgent", "reason", "client"}
)


def principal_of(state: SandboxState, request: Request) -> Principal:
    """The authenticated user of a request (``Authorization: Bearer``); 401 otherwise."""
    return state.authority.authenticate(request.headers.get("authorization"), state.clock())


def check_idempotency_key(value: str | None) -> str:
    """The ``Idempotency-Key`` header: required, 1-255 printable ASCII (section 4); 400 else."""
    if value is None:
        raise ValidationError(
            "POST /replays needs an Idempotency-Key header",
            code="IDEMPOTENCY_KEY_REQUIRED",
            hint="send a fresh random key per replay (e.g. a UUID) and reuse it only to retry",
        )
    if not _KEY.fullmatch(value):
        raise ValidationError(
            "Idempotency-Key must be 1-255 printable ASCII characters",
            code="BAD_IDEMPOTENCY_KEY",
            hint="use a UUID",
            details={"length": len(value)},
        )
    return value


#: The most of a request header an audit event's ``source`` keeps: the server takes headers of
#: up to 80 KB, and each refused call is an event of the append-only log, so a caller could
#: grow the log by that much a request (security walk: a 20 kB User-Agent was kept whole).
SOURCE_HEADER_CHARS = 512


def _bounded(value: str | None) -> str | None:
    """``value`` cut to :data:`SOURCE_HEADER_CHARS`, saying how much was cut."""
    if value is None or len(value) <= SOURCE_HEADER_CHARS:
        return value
    return f"{value[:SOURCE_HEADER_CHARS]}... ({len(value) - SOURCE_HEADER_CHARS} more characters)"


@dataclass(frozen=True)
class RequestInfo:
    """Where a request came from, for the audit event's ``source``."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    client: Any = None

    @classmethod
    def of(cls, request: Request, client: Any = None) -> RequestInfo:
        return cls(
            ip=request.client.host if request.client else None,
            user_agent=_bounded(request.headers.get("user-agent")),
            request_id=_bounded(request.headers.get("x-request-id")) or uuid.uuid4().hex,
            client=client,
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "userAgent": self.user_agent,
            "requestId": self.request_id,
            "client": self.client,
        }


def actor_of(principal: Principal) -> dict[str, Any]:
    """The audit ``actor`` of a user."""
    return {
        "username": principal.username,
        "roles": list(principal.roles),
        "permissions": sorted(principal.permissions),
    }


@dataclass(frozen=True)
class ReplayRequest:
    """A validated ``POST /replays`` body."""

    source_exchange_id: str
    reason: str
    modified: ModifiedPayload
    target_environment: str | None
    target_agent: str | None
    client: Any
    raw: Mapping[str, Any]

    @classmethod
    def parse(cls, body: Any) -> ReplayRequest:
        """Validate the body (400); control headers raise :class:`ControlHeaderRejected`."""
        if not isinstance(body, Mapping):
            raise ValidationError("the body of POST /replays must be a JSON object")
        screen_control_headers(body)
        unknown = sorted(set(body) - REQUEST_KEYS)
        if unknown:
            raise ValidationError(
                f"unknown fields {unknown}",
                hint="POST /replays takes " + ", ".join(sorted(REQUEST_KEYS)),
                details={"unknown": unknown},
            )
        source = body.get("sourceExchangeId")
        if source is None:
            raise ValidationError("sourceExchangeId is required", details={"field": "sourceExchangeId"})
        valid_id(source, "sourceExchangeId")
        for name in ("targetEnvironment", "targetAgent"):
            if body.get(name) is not None:
                valid_id(body[name], name)
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
            raise ValidationError(
                "reason is required: 1-500 characters saying why this replay runs",
                hint="the reason goes into the audit record of the replay",
                details={"field": "reason"},
            )
        modified = parse_modified_payload(body.get("modifiedPayload"))
        client = body.get("client")
        if client is not None and not isinstance(client, str | Mapping):
            raise ValidationError("client must be a string or an object", details={"field": "client"})
        if client is not None and len(dumps(client)) > 1024:
            raise ValidationError("client must be at most 1 KiB of JSON", details={"field": "client"})
        if client is not None and _canonical(client) is None:
            raise ValidationError(
                "client must be I-JSON (integers within +-2**53, no lone surrogates): it goes into "
                "the audit record, whose canonical form (RFC 8785) holds nothing else",
                details={"field": "client"},
            )
        return cls(
            source_exchange_id=source,
            reason=reason,
            modified=modified,
            target_environment=body.get("targetEnvironment"),
            target_agent=body.get("targetAgent"),
            client=client,
            raw=body,
        )

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the JCS of the body: "the same body" for idempotency (section 4).
        400 ``NOT_CANONICAL`` naming the field when JCS cannot write the body."""
        try:
            return hashlib.sha256(audit.canonical_json(dict(self.raw))).hexdigest()
        except RecordError:
            raise _not_canonical(self.raw) from None


def _not_canonical(body: Mapping[str, Any]) -> ValidationError:
    """The refusal of a body JCS cannot write, naming where (a field, or a part of
    ``modifiedPayload``) but never the value: it may be a secret header's (security review
    finding 7; the JCS error quoted it)."""
    field = next((k for k in sorted(body) if _canonical(body[k]) is None), "body")
    part = body.get(field)
    if field == "modifiedPayload" and isinstance(part, Mapping):
        field = next((f"{field}.{k}" for k in sorted(part) if _canonical(part[k]) is None), field)
    return ValidationError(
        f"{field} holds a value that RFC 8785 canonical JSON cannot write",
        code="NOT_CANONICAL",
        hint="send I-JSON: integers within ±(2**53-1), finite numbers (send a larger number as a string)",
        details={"field": field},
    )


def screen_control_headers(body: Any) -> None:
    """Raise :class:`ControlHeaderRejected` when the ``POST /replays`` body's
    ``modifiedPayload.headers`` names a Camel control header, whatever else the request gets
    wrong: section 4 refuses such an attempt *and audits it*, and only this refusal is audited,
    so it must come before every other check of the request, the ``Idempotency-Key`` included
    (security review finding 3)."""
    modified = body.get("modifiedPayload") if isinstance(body, Mapping) else None
    if isinstance(modified, Mapping):
        refuse_control_headers(modified.get("headers"))


def audit_source_id(body: Any) -> str | None:
    """The body's ``sourceExchangeId`` when it is a valid id, for the audit target of a refused
    request (which may have failed on it: it must not carry anything the record cannot hold)."""
    value = body.get("sourceExchangeId") if isinstance(body, Mapping) else None
    try:
        return check_id(value, "sourceExchangeId")
    except RecordError:
        return None


def _canonical(value: Any) -> bytes | None:
    try:
        return audit.canonical_json(value)
    except (RecordError, ValueError, TypeError):
        return None


def recordable_client(client: Any, mask: Mask) -> Any:
    """A ``POST /replays`` body's ``client`` as the audit record and the Replay keep it: an
    object with its secret-named fields as fingerprints (section 4 "Secrets"), and None for
    anything the audit's canonical JSON cannot hold. The request is then refused, but its
    refusal (a control header) must still be recorded, so the audit event cannot depend on it."""
    if isinstance(client, Mapping):
        client = redact_mapping(client, mask)
    elif not isinstance(client, str):
        return None
    return client if _canonical(client) is not None and len(dumps(client)) <= 1024 else None


def valid_id(value: Any, what: str) -> str:
    """``value`` if it is a valid id, else 400 ``BAD_ID``."""
    try:
        return check_id(value, what)
    except RecordError as exc:
        raise ValidationError(exc.message, code="BAD_ID", hint=exc.hint, details=exc.details) from None


# --------------------------------------------------------------------------- schemas

_N = ["string", "null"]
_RESULT_SCHEMA = {
    "type": ["object", "null"],
    "required": ["status", "durationMs", "outputBodySha256", "errorType", "errorMessage"],
    "properties": {
        "status": {"type": _N, "description": "the replayed execution's status (COMPLETED/FAILED)"},
        "durationMs": {"type": ["number", "null"]},
        "outputBodySha256": {"type": _N},
        "errorType": {"type": _N},
        "errorMessage": {"type": _N},
    },
}
#: The Replay resource (section 4).
REPLAY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "replayId",
        "sourceExchangeId",
        "sourceExecutionId",
        "sourceEnvironment",
        "targetEnvironment",
        "agentId",
        "routeId",
        "status",
        "requestedBy",
        "requestedAt",
        "startedAt",
        "finishedAt",
        "reason",
        "idempotencyKey",
        "client",
        "payloadDiff",
        "effectivePayloadSha256",
        "resultExecutionId",
        "result",
        "auditSeqs",
    ],  # fmt: skip
    "properties": {
        "replayId": {"type": "string"},
        "sourceExchangeId": {"type": "string"},
        "sourceExecutionId": {"type": "string"},
        "sourceEnvironment": {"type": _N},
        "targetEnvironment": {"type": "string"},
        "agentId": {"type": "string"},
        "routeId": {"type": "string"},
        "status": {"type": "string", "enum": list(REPLAY_STATUSES)},
        "requestedBy": {"type": "string"},
        "requestedAt": {"type": "string", "format": "date-time"},
        "startedAt": {"type": _N, "format": "date-time"},
        "finishedAt": {"type": _N, "format": "date-time"},
        "reason": {"type": "string"},
        "idempotencyKey": {"type": "string"},
        "client": {"type": ["string", "object", "null"]},
        "payloadDiff": {
            "type": "array",
            "description": "RFC 6902 JSON Patch from the original to the effective payload, secrets redacted",
            "items": {"type": "object", "required": ["op", "path"]},
        },
        "effectivePayloadSha256": {"type": "string"},
        "resultExecutionId": {"type": _N},
        "result": _RESULT_SCHEMA,
        "auditSeqs": {"type": "array", "items": {"type": "integer"}},
    },
}
_PAYLOAD_PART = {"type": ["object", "null"], "additionalProperties": True}
_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["sourceExchangeId", "reason"],
    "properties": {
        "sourceExchangeId": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$"},
        "reason": {"type": "string", "minLength": 1, "maxLength": 500},
        "modifiedPayload": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "properties": {"headers": _PAYLOAD_PART, "body": {"type": _N}, "properties": _PAYLOAD_PART},
        },
        "targetEnvironment": {"type": _N},
        "targetAgent": {"type": _N},
        "client": {"type": ["string", "object", "null"]},
    },
}
_LIST_SCHEMA = {
    "type": "object",
    "required": ["data", "total", "offset", "limit"],
    "properties": {
        "data": {"type": "array", "items": REPLAY_SCHEMA},
        "total": {"type": "integer"},
        "offset": {"type": "integer"},
        "limit": {"type": "integer"},
    },
}
_ENDPOINT_SCHEMA = {
    "type": "object",
    "required": ["uri", "scheme", "processorId", "routeId", "stubbed"],
    "properties": {
        "uri": {"type": "string"},
        "scheme": {"type": "string"},
        "processorId": {"type": "string"},
        "routeId": {"type": "string"},
        "requestReply": {"type": "boolean"},
        "dynamic": {"type": "boolean", "description": "toD: the URI is resolved per exchange"},
        "stubbed": {"type": "boolean", "description": "a replay answers it from the recording"},
    },
}
_PREFLIGHT_SCHEMA = {
    "type": "object",
    "required": [
        "sourceExchangeId",
        "sourceExecutionId",
        "routeId",
        "sourceEnvironment",
        "targetEnvironment",
        "routeVersion",
        "agent",
        "agentError",
        "endpoints",
        "requiredPermissions",
        "missingPermissions",
    ],  # fmt: skip
    "properties": {
        "sourceExchangeId": {"type": "string"},
        "sourceExecutionId": {"type": "string"},
        "routeId": {"type": "string"},
        "sourceEnvironment": {"type": _N},
        "targetEnvironment": {"type": _N},
        "routeVersion": {"type": _N},
        "agent": {"oneOf": [ref("Agent"), {"type": "null"}]},
        "agentError": {"type": _N},
        "endpoints": {"type": "array", "items": _ENDPOINT_SCHEMA},
        "requiredPermissions": {"type": "array", "items": {"type": "string"}},
        "missingPermissions": {"type": "array", "items": {"type": "string"}},
        "captureMode": {"type": "string"},
        "stubReplies": {"type": "integer"},
    },
}


def _query(name: str, schema: Mapping[str, Any], *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": dict(schema)}


_IDEMPOTENCY_PARAM = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[\x20-\x7e]+$"},
    "description": "per user, kept 24 h: the same key and body give back the same replay",
}


# --------------------------------------------------------------------------- operations


def replay_operations(state: SandboxState) -> list[Operation]:
    """The replay endpoints, as declared operations (``create_app`` mounts them)."""
    from .trace_stream import stream_operations

    def _request_info(request: Request, body: Any) -> RequestInfo:
        client = body.get("client") if isinstance(body, Mapping) else None
        return RequestInfo.of(request, recordable_client(client, state.redactor.value))

    async def _screen_undeclared(request: Request, principal: Principal, svc: ReplayService) -> None:
        """A body not declared JSON (415) is still read for control headers, so that a wrong
        Content-Type, like any other fault of the request, cannot keep an attempt out of the
        audit log (section 4; security review finding 3). The 415 is there against web pages
        (a text/plain POST needs no CORS preflight), and none can send this one: it reached
        here with a bearer token, which a cross-site request cannot carry without a preflight.
        A body that is not JSON, or is too large, keeps its 415."""
        try:
            body = parse_json(await read_body(request, limit=state.config.max_body))
        except (ValidationError, PayloadTooLarge):
            return
        await svc.screen(principal, body, _request_info(request, body))

    def service() -> ReplayService:
        svc = state.replays
        if svc is None:
            raise AuditUnavailable("the replay service is not running")
        return svc  # type: ignore[no-any-return]

    async def post_replay(request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        svc = service()
        # The body before the Idempotency-Key: a control header in it is refused and audited
        # whatever else is wrong (section 4), the key included; create() checks the key next.
        try:
            body = await read_json(request, limit=state.config.max_body)
        except UnsupportedMediaType:
            await _screen_undeclared(request, principal, svc)
            raise
        replay, made = await svc.create(
            principal, body, request.headers.get("idempotency-key"), _request_info(request, body)
        )
        headers = {"Location": f"/api/v1/replays/{replay['replayId']}", "Cache-Control": "no-store"}
        if not made:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(replay, status_code=202, headers=headers)

    async def list_replays(request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        return JSONResponse(await run_in_threadpool(service().list, principal, dict(request.query_params)))

    async def preflight(request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        return JSONResponse(
            await run_in_threadpool(service().preflight, principal, dict(request.query_params))
        )

    async def get_replay(request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        replay_id = request.path_params["replayId"]
        info = RequestInfo.of(request)  # a 404 is audited (section 6)
        return JSONResponse(await run_in_threadpool(service().visible, principal, replay_id, info))

    return [
        Operation(
            "POST",
            "/replays",
            post_replay,
            access=USER,
            tier=True,
            operation_id="createReplay",
            summary="Replay a recorded exchange, optionally with a modified payload",
            tag="replays",
            request=_REQUEST_SCHEMA,
            parameters=[_IDEMPOTENCY_PARAM],
            responses={202: ("the replay (new, or the one this key already made)", REPLAY_SCHEMA)},
            errors=(404, 422, 503),
        ),
        Operation(
            "GET",
            "/replays",
            list_replays,
            access=needs("executions:read"),
            tier=True,
            operation_id="listReplays",
            summary="Replays, newest first (one's own; all with audit:read)",
            tag="replays",
            parameters=[
                _query("sourceExchangeId", {"type": "string"}),
                _query("requestedBy", {"type": "string"}),
                _query("status", {"type": "string", "description": "one or several, comma-separated"}),
                _query("offset", {"type": "integer", "minimum": 0}),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
            ],
            responses={200: ("a page of replays", _LIST_SCHEMA)},
        ),
        Operation(
            "GET",
            "/replays/preflight",
            preflight,
            access=needs("replay:run"),
            tier=True,
            operation_id="replayPreflight",
            summary="What a replay of an exchange would reach, stub and need, and which agent runs it",
            tag="replays",
            parameters=[
                _query("sourceExchangeId", {"type": "string"}, required=True),
                _query("targetEnvironment", {"type": "string"}),
                _query("targetAgent", {"type": "string"}),
                _query("modified", {"type": "boolean"}),
            ],
            responses={200: ("the preflight", _PREFLIGHT_SCHEMA)},
            errors=(404,),
        ),
        Operation(
            "GET",
            "/replays/{replayId}",
            get_replay,
            access=USER,
            tier=True,
            operation_id="getReplay",
            summary="One replay (its requester, or audit:read)",
            tag="replays",
            responses={200: ("the replay", REPLAY_SCHEMA)},
            errors=(404,),
        ),
        *stream_operations(state, service),
    ]
