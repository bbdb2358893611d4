"""Declared operations of the sandbox API, and the OpenAPI 3.1 document built from them.

Every HTTP endpoint of the sandbox is an :class:`Operation`: method, path, **access rule**,
handler and the schemas of what it reads and answers. The router and the OpenAPI document
(``GET /api/v1/api-docs``) are both made from the same list, so they cannot disagree, and
an endpoint cannot exist without an access rule:

* :class:`Operation` requires ``access`` (keyword-only, no default): forgetting it is a
  ``TypeError`` at import time;
* the server builds its routes only from operations, and :func:`moat_nb.sandbox.server.create_app`
  refuses to start if any route of the app is not one (default deny, DESIGN.md section 6);
* the wrapper that runs an operation authenticates and authorises *before* the handler runs.

Access rules (:class:`Access`):

=================  =====================================================================
``PUBLIC``         anyone (health, login, refresh, api-docs)
``BOOTSTRAP``      the agent bootstrap token (``POST /agents/register``)
``needs(p)``       a user's access token with permission ``p`` (agents are refused: 403)
``USER``           any user's access token; the handler decides the rest (e.g. "the
                   requester or ``audit:read``" on a replay)
``agent()``        an agent's access token; ``agent("instanceId")`` only for the agent
                   named by that path parameter
``self_checked(r)``  the handler authenticates itself, for reason ``r`` (a replay trace
                   stream opened with a single-use ``?ticket=``). Must name why.
=================  =====================================================================

``tier=True`` on an operation adds the tenant tier check (403 ``TIER_NOT_ENTITLED`` for
``LOW``/``MID``, section 6) after authentication and before the permission check, so every
replay endpoint answers it whatever the caller holds (a ``self_checked`` handler does it itself).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from starlette.requests import Request
from starlette.responses import Response

from .security import PERMISSIONS
from .store import MAX_TEXT_CHARS

if TYPE_CHECKING:
    from .security import Principal

__all__ = [
    "API_PREFIX",
    "Access",
    "PUBLIC",
    "BOOTSTRAP",
    "USER",
    "needs",
    "agent",
    "self_checked",
    "Operation",
    "Handler",
    "SCHEMAS",
    "ERROR_CODES",
    "ref",
    "document",
]

API_PREFIX = "/api/v1"

Handler = Callable[[Request, "Principal | None"], Awaitable[Response]]


@dataclass(frozen=True)
class Access:
    """Who may call an operation (see the module docstring)."""

    kind: Literal["public", "bootstrap", "user", "agent", "self"]
    permission: str | None = None
    #: For ``agent``: the path parameter that must equal the agent's instanceId.
    path_param: str | None = None
    #: For ``self``: why the handler authenticates itself.
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "self" and not self.reason:
            raise ValueError("self_checked access must say why the handler authenticates itself")
        if self.permission is not None and self.permission not in PERMISSIONS:
            # A typo would deny everyone for ever (default deny); say so at import time instead.
            raise ValueError(f"unknown permission {self.permission!r}; known: {', '.join(PERMISSIONS)}")

    def describe(self) -> str:
        """One line for the OpenAPI document (``x-access``)."""
        if self.kind == "public":
            return "anyone"
        if self.kind == "bootstrap":
            return "agent bootstrap token"
        if self.kind == "user":
            return f"user with {self.permission}" if self.permission else "any user; handler checks the rest"
        if self.kind == "agent":
            return f"the agent named by {{{self.path_param}}}" if self.path_param else "any agent"
        return f"checked by the handler: {self.reason}"


PUBLIC = Access("public")
BOOTSTRAP = Access("bootstrap")
USER = Access("user")


def needs(permission: str) -> Access:
    """A user holding ``permission`` (section 6 table)."""
    return Access("user", permission=permission)


def agent(path_param: str | None = None) -> Access:
    """An agent; with ``path_param``, only the agent whose instanceId is that path parameter."""
    return Access("agent", path_param=path_param)


def self_checked(reason: str) -> Access:
    """The handler authenticates the request itself (it must, and must say why)."""
    return Access("self", reason=reason)


_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}")


@dataclass(frozen=True)
class Operation:
    """One endpoint: ``method path`` (relative to ``/api/v1``), its access rule and handler.

    ``request`` is the JSON schema of the body (None: no body); ``responses`` maps a status to
    ``(description, schema or None)``; ``errors`` lists the error statuses it can answer (each
    documented with the error envelope); ``parameters`` are OpenAPI parameter objects for the
    query and headers (path parameters are derived from ``path``); ``media_type`` is the
    success content type (``text/event-stream`` for streams).
    """

    method: str
    path: str
    handler: Handler
    access: Access = field(kw_only=True)
    summary: str = field(kw_only=True)
    operation_id: str = field(kw_only=True)
    tag: str = field(default="sandbox", kw_only=True)
    request: Mapping[str, Any] | None = field(default=None, kw_only=True)
    request_required: bool = field(default=True, kw_only=True)
    responses: Mapping[int, tuple[str, Mapping[str, Any] | None]] = field(default_factory=dict, kw_only=True)
    errors: Sequence[int] = field(default=(), kw_only=True)
    parameters: Sequence[Mapping[str, Any]] = field(default=(), kw_only=True)
    media_type: str = field(default="application/json", kw_only=True)
    tier: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.access, Access):
            raise TypeError(f"{self.method} {self.path}: access must be an Access rule, not {self.access!r}")
        if self.method.upper() != self.method or self.method not in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
            raise ValueError(f"{self.path}: method {self.method!r} must be an upper-case HTTP method")
        if not self.path.startswith("/"):
            raise ValueError(f"path {self.path!r} must start with '/' (it is relative to {API_PREFIX})")
        if self.access.kind == "agent" and self.access.path_param is not None:
            if self.access.path_param not in self.path_params:
                raise ValueError(f"{self.path}: access names path parameter {self.access.path_param!r}")
        if not self.responses:
            raise ValueError(f"{self.method} {self.path}: declare at least one success response")

    @property
    def full_path(self) -> str:
        return API_PREFIX + self.path

    @property
    def openapi_path(self) -> str:
        """The path with Starlette convertors dropped (``{seq:int}`` → ``{seq}``)."""
        return _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", self.full_path)

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    def error_statuses(self) -> list[int]:
        """Error statuses documented: the declared ones plus what the access rule implies."""
        # Bad input (headers, JSON), a declared body over the limit (every endpoint refuses it,
        # section 4 "Input rules"), too many or too long header fields (every request,
        # security.md section 8 "Limits") and the catch-all.
        # A Host the server does not answer for (421, server.TrustedHosts) too.
        statuses = set(self.errors) | {400, 413, 421, 431, 500}
        if self.request is not None:
            statuses.add(415)  # a body not declared application/json (bodies.check_json_media_type)
        if self.access.kind != "public":
            statuses.add(401)
        if self.access.kind in {"user", "agent", "self"}:
            statuses.add(403)
        if self.tier:
            statuses.add(403)
        return sorted(statuses)


# --------------------------------------------------------------------------- schemas

#: Error codes the sandbox answers, by status (the ``error`` field of the envelope).
ERROR_CODES: Mapping[int, tuple[str, ...]] = {
    400: (
        "VALIDATION",
        "BAD_JSON",
        "BAD_HEADER",
        "BAD_ID",
        "BAD_CHUNK",
        "BAD_RECORD",
        "BAD_FIELD",
        "BAD_TEXT",
        "BAD_TIME",
        "MISSING_FIELD",
        "NOT_CANONICAL",
        "CONTROL_HEADER",
        "PROTOCOL_VERSION",
        "BAD_LAST_EVENT_ID",
        "IDEMPOTENCY_KEY_REQUIRED",
        "BAD_IDEMPOTENCY_KEY",
    ),
    401: ("UNAUTHORIZED", "TOKEN_EXPIRED", "BAD_TOKEN", "BAD_CREDENTIALS", "BAD_TICKET"),
    403: ("FORBIDDEN", "TIER_NOT_ENTITLED", "AGENT_TOKEN_STALE"),
    404: ("NOT_FOUND", "AGENT_NOT_FOUND", "NO_SUCH_REPLAY"),
    405: ("METHOD_NOT_ALLOWED",),
    409: ("CHUNK_CONFLICT", "REPLAY_ENDED", "AGENT_ENVIRONMENT_CHANGED"),
    413: ("PAYLOAD_TOO_LARGE",),
    415: ("UNSUPPORTED_MEDIA_TYPE",),
    421: ("HOST_NOT_ALLOWED",),
    431: ("HEADERS_TOO_LARGE",),
    422: ("IDEMPOTENCY_CONFLICT",),
    429: ("TOO_MANY_ATTEMPTS", "TOO_MANY_STREAMS", "TOO_MANY_TICKETS"),
    500: ("SERVER_ERROR",),
    503: ("AGENT_UNAVAILABLE", "AUDIT_UNAVAILABLE", "INGEST_BUSY", "STORE_UNAVAILABLE"),
}


def ref(name: str) -> dict[str, str]:
    """A ``$ref`` to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def _n(kind: str | list[str], **extra: Any) -> dict[str, Any]:
    """A nullable schema of ``kind``."""
    kinds = [kind] if isinstance(kind, str) else list(kind)
    return {"type": [*kinds, "null"], **extra}


_ID = {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$"}
_TIME = {"type": "string", "format": "date-time"}
_MAP = {"type": "object", "additionalProperties": True}
_NMAP = _n("object", additionalProperties=True)

_PROCESSOR_PROPS: dict[str, Any] = {
    "executionId": {"type": "string"},
    "exchangeId": {"type": "string"},
    "replayId": _n("string"),
    "seq": {"type": "integer"},
    "parentSeq": _n("integer"),
    "iteration": {"type": "integer"},
    "depth": {"type": "integer"},
    "processorId": {"type": "string"},
    "processorType": {"type": "string"},
    "routeId": {"type": "string"},
    "status": {"type": "string"},
    "startTime": _n("string", format="date-time"),
    "endTime": _n("string", format="date-time"),
    "durationMs": _n("number"),
    "endpointUri": _n("string"),
    "stubbed": {"type": "boolean"},
    "errorType": _n("string"),
    "errorMessage": _n("string"),
    "inputBody": _n("string"),
    "outputBody": _n("string"),
    "inputHeaders": _NMAP,
    "outputHeaders": _NMAP,
    "inputProperties": _NMAP,
    "properties": _NMAP,
    "bodyTruncated": {"type": "boolean"},
}

_EXECUTION_PROPS: dict[str, Any] = {
    "executionId": {"type": "string"},
    "exchangeId": {"type": "string"},
    "correlationId": _n("string"),
    "routeId": {"type": "string"},
    "routeVersion": _n("string"),
    "applicationId": _n("string"),
    "instanceId": _n("string"),
    "environment": _n("string"),
    "status": {"type": "string", "enum": ["COMPLETED", "FAILED", "RUNNING"]},
    "startTime": _n("string", format="date-time"),
    "endTime": _n("string", format="date-time"),
    "durationMs": _n("number"),
    "errorType": _n("string"),
    "errorMessage": _n("string"),
    "processorCount": {"type": "integer"},
    "captureMode": {"type": "string", "enum": ["PROCESSOR", "ROUTE"]},
    "isReplay": {"type": "boolean"},
    "replayId": _n("string"),
    "sourceExchangeId": _n("string"),
}
_DETAIL_PROPS: dict[str, Any] = {
    "inputBody": _n("string"),
    "outputBody": _n("string"),
    "inputHeaders": _NMAP,
    "outputHeaders": _NMAP,
    "inputProperties": _NMAP,
    "outputProperties": _NMAP,
    "errorStackTrace": _n("string"),
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message", "details"],
        "properties": {
            "error": {"type": "string", "description": "a stable code, e.g. BAD_JSON"},
            "message": {"type": "string"},
            "details": {
                "type": "object",
                "additionalProperties": True,
                "description": "facts about the error; `hint` says what to do next",
            },
        },
    },
    "ProcessorRecord": {
        "type": "object",
        "required": ["seq", "processorId", "processorType", "routeId", "status"],
        "properties": _PROCESSOR_PROPS,
    },
    "ProcessorNode": {
        "type": "object",
        "required": ["seq", "processorId", "processorType", "routeId", "status", "children"],
        "properties": {**_PROCESSOR_PROPS, "children": {"type": "array", "items": ref("ProcessorNode")}},
    },
    "ExecutionSummary": {
        "type": "object",
        "required": ["executionId", "exchangeId", "routeId", "status"],
        "properties": _EXECUTION_PROPS,
    },
    "ExecutionDetail": {
        "type": "object",
        "required": ["executionId", "exchangeId", "routeId", "status", "processors"],
        "properties": {
            **_EXECUTION_PROPS,
            **_DETAIL_PROPS,
            "processors": {"type": "array", "items": ref("ProcessorNode")},
        },
    },
    "ChunkExecution": {
        "type": "object",
        "required": ["executionId", "exchangeId", "routeId", "status"],
        "properties": {
            **_EXECUTION_PROPS,
            **_DETAIL_PROPS,
            "processors": _n("array", items=ref("ProcessorRecord")),
        },
    },
    "Chunk": {
        "type": "object",
        "required": ["executionId", "exchangeId", "chunkSeq"],
        "properties": {
            "executionId": _ID,
            "exchangeId": _ID,
            "replayId": _n("string"),
            "chunkSeq": {"type": "integer", "minimum": 0},
            "final": {"type": "boolean"},
            "execution": {"oneOf": [ref("ChunkExecution"), {"type": "null"}]},
            "processors": {"type": "array", "items": ref("ProcessorRecord")},
        },
    },
    "SearchRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **{
                k: {
                    "oneOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "string"}},
                        {"type": "null"},
                    ]
                }
                for k in ("environment", "application", "routeId", "status")
            },
            "timeFrom": _n("string", format="date-time"),
            "timeTo": _n("string", format="date-time"),
            **{k: _n("string") for k in ("correlationId", "exchangeId", "replayId", "sourceExchangeId")},
            **{
                k: _n("string", maxLength=MAX_TEXT_CHARS)
                for k in ("text", "textInBody", "textInHeaders", "textInErrors")
            },
            "durationMin": _n("number"),
            "durationMax": _n("number"),
            "isReplay": _n("boolean"),
            "offset": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
            "sort": _n("string", description="FIELD[:asc|desc], default startTime:desc"),
        },
    },
    "SearchResponse": {
        "type": "object",
        "required": ["data", "total", "offset", "limit"],
        "properties": {
            "data": {"type": "array", "items": ref("ExecutionSummary")},
            "total": {"type": "integer"},
            "offset": {"type": "integer"},
            "limit": {"type": "integer"},
        },
    },
    "Agent": {
        "type": "object",
        "required": [
            "instanceId",
            "displayName",
            "applicationId",
            "environmentId",
            "status",
            "routeIds",
            "routeVersion",
            "capabilities",
            "lastHeartbeat",
        ],
        "properties": {
            "instanceId": {"type": "string"},
            "displayName": {"type": "string"},
            "applicationId": {"type": "string"},
            "environmentId": {"type": "string"},
            "status": {"type": "string", "enum": ["LIVE", "STALE", "DEAD"]},
            "routeIds": {"type": "array", "items": {"type": "string"}},
            "routeVersion": _n("string"),
            "capabilities": {"type": ["array", "object"]},
            "lastHeartbeat": _n("string", format="date-time"),
            "routeStates": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "LoginRequest": {
        "type": "object",
        "required": ["username", "password"],
        "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
    },
    "LoginResponse": {
        "type": "object",
        "required": ["accessToken", "refreshToken", "expiresIn", "user"],
        "properties": {
            "accessToken": {"type": "string"},
            "refreshToken": {"type": "string"},
            "expiresIn": {"type": "integer"},
            "user": {
                "type": "object",
                "required": ["username", "roles", "permissions"],
                "properties": {
                    "username": {"type": "string"},
                    "roles": {"type": "array", "items": {"type": "string"}},
                    "permissions": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
    "RefreshResponse": {
        "type": "object",
        "required": ["accessToken", "expiresIn"],
        "properties": {"accessToken": {"type": "string"}, "expiresIn": {"type": "integer"}},
    },
    "RegisterRequest": {
        "type": "object",
        "required": ["instanceId", "applicationId", "environmentId"],
        "properties": {
            "instanceId": _ID,
            "displayName": {"type": "string"},
            "applicationId": _ID,
            "environmentId": _ID,
            "routeVersion": _n("string"),
            "version": _n("string", description="Cameleer v1 name of routeVersion"),
            "routeIds": {"type": "array", "items": {"type": "string"}},
            "capabilities": {"type": ["array", "object", "null"]},
        },
    },
    "RegisterResponse": {
        "type": "object",
        "required": ["accessToken", "refreshToken", "serverPublicKey"],
        "properties": {
            "accessToken": {"type": "string"},
            "refreshToken": {"type": "string"},
            "expiresIn": {"type": "integer"},
            "serverPublicKey": {
                "type": "string",
                "description": "Ed25519, base64 of the DER SubjectPublicKeyInfo",
            },
        },
    },
    "Heartbeat": {
        "type": "object",
        "properties": {
            "routeStates": {
                "type": "object",
                "additionalProperties": {"enum": ["Started", "Stopped", "Suspended"]},
            },
            "environmentId": _n("string"),
            "capabilities": {"type": ["array", "object", "null"]},
        },
    },
    "Ack": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": ["SUCCESS", "FAILURE"]},
            "message": _n("string"),
            "data": _NMAP,
        },
    },
    "AckResponse": {
        "type": "object",
        "required": ["commandId", "status", "duplicate"],
        "properties": {
            "commandId": {"type": "string"},
            "status": {"type": "string"},
            "duplicate": {"type": "boolean"},
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["executionId", "chunkSeq"],
        "properties": {"executionId": {"type": "string"}, "chunkSeq": {"type": "integer"}},
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["UP"]}},
    },
}


# --------------------------------------------------------------------------- the document


def _operation_object(op: Operation) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer"} if name == "seq" else {"type": "string"},
        }
        for name in op.path_params
    ]
    params.extend(dict(p) for p in op.parameters)
    responses: dict[str, Any] = {}
    for status, (description, schema) in sorted(op.responses.items()):
        entry: dict[str, Any] = {"description": description}
        if schema is not None:
            entry["content"] = {op.media_type: {"schema": dict(schema)}}
        responses[str(status)] = entry
    for status in op.error_statuses():
        codes = ERROR_CODES.get(status, ())
        responses.setdefault(
            str(status),
            {
                "description": "error envelope; `error` is one of " + ", ".join(codes) if codes else "error",
                "content": {"application/json": {"schema": ref("Error")}},
            },
        )
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "x-access": op.access.describe(),
        "responses": responses,
    }
    if op.access.permission:
        out["x-permission"] = op.access.permission
    if params:
        out["parameters"] = params
    if op.access.kind == "public":
        out["security"] = []
    elif op.access.kind == "self":
        out["security"] = [{"bearer": []}, {}]
    else:
        out["security"] = [{"bearer": []}]
    if op.request is not None:
        out["requestBody"] = {
            "required": op.request_required,
            "content": {"application/json": {"schema": dict(op.request)}},
        }
    return out


def document(
    operations: Iterable[Operation], *, extra_schemas: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations`` (what ``GET /api/v1/api-docs`` answers)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        item = paths.setdefault(op.openapi_path, {})
        method = op.method.lower()
        if method in item:
            raise ValueError(f"{op.method} {op.openapi_path} is declared twice")
        item[method] = _operation_object(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "moat_nb sandbox (Cameleer-compatible) API",
            "version": "1",
            "description": "The embedded Cameleer-compatible platform of moat_nb. "
            "Every error is {error, message, details}.",
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {**SCHEMAS, **dict(extra_schemas or {})},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
