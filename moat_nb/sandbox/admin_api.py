"""The audit endpoints (DESIGN.md sections 4, 6 and 7): declared operations over
:class:`~moat_nb.sandbox.audit_log.AuditLog`, mounted by ``create_app`` like the replay routes.

======================================  ============================  ===========================
``GET /admin/audit``                     ``audit:read``: the tenant    every read is itself audited
                                         ``audit:read-own``: events    (``AUDIT_QUERIED``: who, the
                                         of one's own replays          filters, how many rows)
``GET /admin/audit/verify``              ``audit:read``                ``AUDIT_QUERIED`` too
``GET /admin/audit/export?from=&to=``    ``audit:read``                ``AUDIT_EXPORTED``; a bundle
                                                                       that verifies offline
======================================  ============================  ===========================

``from``/``to`` are a seq (digits) or an RFC 3339 time, inclusive. A refused read is audited as
``AUDIT_DENIED`` (by the handler for ``/admin/audit``, by the server's access check for the other
two). The endpoints are not replay endpoints: the tenant tier does not gate them, so a tenant
can always read its audit log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import audit
from ..errors import AuditUnavailable, PermissionDenied
from ..model import ID_PATTERN
from .audit_log import ACTIONS, AuditQuery
from .openapi import USER, Operation, needs
from .replay_api import RequestInfo, actor_of
from .security import Principal

if TYPE_CHECKING:
    from .audit_log import AuditLog
    from .state import SandboxState

__all__ = ["AUDIT_EVENT_SCHEMA", "BUNDLE_SCHEMA", "VERIFY_SCHEMA", "admin_operations"]

_N = ["string", "null"]
_OBJ = {"type": "object"}
_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_TARGET_FIELDS = ("replayId", "sourceExchangeId", "routeId", "environment")
#: An audit event (section 7).
AUDIT_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [*audit.EVENT_FIELDS, "prevHash", "hash"],
    "properties": {
        "seq": {"type": "integer", "minimum": 1},
        "eventId": {"type": "string"},
        "tenantId": {"type": "string"},
        "occurredAt": {"type": "string", "format": "date-time"},
        "action": {"type": "string", "enum": list(ACTIONS)},
        "actor": {
            "type": "object",
            "required": ["username", "roles", "permissions"],
            "properties": {
                "username": {"type": "string"},
                "roles": {"type": "array", "items": {"type": "string"}},
                "permissions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "source": {
            "type": "object",
            "required": ["ip", "userAgent", "requestId", "client"],
            "properties": {"ip": {"type": _N}, "userAgent": {"type": _N}, "requestId": {"type": _N}},
        },
        "target": {
            "type": "object",
            "required": ["replayId", "sourceExchangeId", "routeId", "environment"],
            "properties": {
                k: {"type": _N} for k in ("replayId", "sourceExchangeId", "routeId", "environment")
            },
        },
        "detail": _OBJ,
        "outcome": {"type": "string"},
        "prevHash": _HEX64,
        "hash": _HEX64,
    },
}
_PAGE_SCHEMA = {
    "type": "object",
    "required": ["data", "total", "offset", "limit"],
    "properties": {
        "data": {"type": "array", "items": AUDIT_EVENT_SCHEMA},
        "total": {"type": "integer"},
        "offset": {"type": "integer"},
        "limit": {"type": "integer"},
    },
}
#: ``GET /admin/audit/verify`` (section 4, plus ``message`` and where the chain is anchored).
VERIFY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ok", "checked", "headSeq", "headHash", "firstBadSeq", "reason", "checkpoints", "message"],
    "properties": {
        "ok": {"type": "boolean"},
        "checked": {"type": "integer", "description": "events verified"},
        "headSeq": {"type": ["integer", "null"]},
        "headHash": {"type": _N},
        "firstBadSeq": {"type": ["integer", "null"]},
        "reason": {"type": _N, "enum": [*audit.REASONS, None]},
        "checkpoints": {"type": "integer", "description": "checkpoints verified (database and anchor file)"},
        "message": {"type": "string"},
        "tenantId": {"type": _N},
        "anchoredSeq": {"type": ["integer", "null"], "description": "newest seq a checkpoint vouches for"},
    },
}
_CHECKPOINT_SCHEMA = {
    "type": "object",
    "required": ["tenantId", "seq", "hash", "at", "keyId", "signature"],
    "properties": {
        "tenantId": {"type": "string"},
        "seq": {"type": "integer"},
        "hash": _HEX64,
        "at": {"type": "string", "format": "date-time"},
        "keyId": {"type": "string"},
        "signature": {"type": "string", "description": "base64 Ed25519 signature"},
    },
}
#: ``GET /admin/audit/export`` (:func:`moat_nb.audit.make_bundle`).
BUNDLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["format", "tenantId", "startSeq", "events", "checkpoints", "publicKeys"],
    "properties": {
        "format": {"type": "string", "const": audit.BUNDLE_FORMAT},
        "tenantId": {"type": "string"},
        "startSeq": {"type": "integer", "minimum": 1},
        "events": {"type": "array", "items": AUDIT_EVENT_SCHEMA},
        "checkpoints": {"type": "array", "items": _CHECKPOINT_SCHEMA},
        "publicKeys": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "key id -> base64 DER SubjectPublicKeyInfo (Ed25519)",
        },
    },
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_BOUND = {"type": "string", "pattern": r"^(\d{1,15}|\d{4}-\d\d-\d\dT.+)$"}
_FROM = _query("from", _BOUND, "first seq (digits) or time (RFC 3339), inclusive")
_TO = _query("to", _BOUND, "last seq (digits) or time (RFC 3339), inclusive")


def admin_operations(state: SandboxState) -> list[Operation]:
    """The three audit endpoints, as declared operations (``create_app`` mounts them)."""

    def log() -> AuditLog:
        if state.audit is None:
            raise AuditUnavailable("the audit log is not open")
        return state.audit  # type: ignore[no-any-return]

    async def list_events(request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        info = RequestInfo.of(request)
        if principal.has("audit:read"):
            only = None
        elif principal.has("audit:read-own"):
            only = principal.username
        else:
            exc = PermissionDenied(
                f"{principal.subject} lacks audit:read-own",
                hint="ask an administrator for a role with audit:read-own (VIEWER and up have it)",
                details={"missing": ["audit:read-own"]},
            )
            await deny(principal, exc, info, request)
            raise exc
        query = AuditQuery.parse(request.query_params)
        page = await run_in_threadpool(
            log().query, query, actor=actor_of(principal), source=info.to_wire(), only_requested_by=only
        )
        return JSONResponse(page, headers={"Cache-Control": "no-store"})

    async def verify(request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        if request.query_params:
            AuditQuery.parse(request.query_params, allowed=frozenset())  # 400 naming them
        result = await run_in_threadpool(log().verify)
        await run_in_threadpool(
            log().record,
            "AUDIT_QUERIED",
            actor=actor_of(principal),
            source=RequestInfo.of(request).to_wire(),
            target={},
            detail={
                "query": "verify",
                "ok": result.ok,
                "checked": result.checked,
                "firstBadSeq": result.first_bad_seq,
                "reason": result.reason,
            },
            outcome="SUCCESS",
        )
        body = {
            **result.to_wire(),
            "message": result.message,
            "tenantId": result.tenant_id,
            "anchoredSeq": result.anchored_seq,
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def export(request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        bundle = await run_in_threadpool(
            log().export,
            dict(request.query_params),
            actor=actor_of(principal),
            source=RequestInfo.of(request).to_wire(),
        )
        events = bundle["events"]
        tenant = bundle["tenantId"] if ID_PATTERN.match(bundle["tenantId"]) else "tenant"
        name = f"audit-{tenant}-{events[0]['seq']}-{events[-1]['seq']}.json"  # a safe header value
        return JSONResponse(
            bundle,
            headers={"Cache-Control": "no-store", "Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def deny(principal: Principal, exc: PermissionDenied, info: RequestInfo, request: Request) -> None:
        try:
            await run_in_threadpool(
                log().record,
                "AUDIT_DENIED",
                actor=actor_of(principal),
                source=info.to_wire(),
                target={},
                detail={
                    "reason": exc.message,
                    "code": exc.code,
                    "operation": f"{request.method} {request.url.path}",
                    **{k: v for k, v in exc.details.items() if k != "principal"},
                },
                outcome="DENIED",
            )
        except AuditUnavailable:
            pass  # logged by the audit log; the request is refused either way

    return [
        Operation(
            "GET",
            "/admin/audit",
            list_events,
            access=USER,
            operation_id="listAuditEvents",
            summary="Audit events in seq order (the tenant's with audit:read; one's own replays' "
            "with audit:read-own); the query itself is audited",
            tag="audit",
            parameters=[
                _query("action", {"type": "string", "enum": list(ACTIONS)}, "one action"),
                _query("actor", {"type": "string"}, "the acting user's name"),
                _query("replayId", {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$"}, "one replay"),
                _FROM,
                _TO,
                _query("offset", {"type": "integer", "minimum": 0}, "rows to skip"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (100)"),
            ],
            responses={200: ("a page of audit events", _PAGE_SCHEMA)},
            errors=(503,),
        ),
        Operation(
            "GET",
            "/admin/audit/verify",
            verify,
            access=needs("audit:read"),
            operation_id="verifyAuditLog",
            summary="Verify the whole audit chain against its signed checkpoints (database and anchor file)",
            tag="audit",
            responses={200: ("the verification result (ok false names the first bad seq)", VERIFY_SCHEMA)},
            errors=(503,),
        ),
        Operation(
            "GET",
            "/admin/audit/export",
            export,
            access=needs("audit:read"),
            operation_id="exportAuditLog",
            summary="An offline-verifiable bundle of the audit log, ending on a checkpoint signed now",
            tag="audit",
            parameters=[_FROM, _TO],
            responses={200: ("the bundle (moat-nb audit verify BUNDLE.json checks it)", BUNDLE_SCHEMA)},
            errors=(503,),
        ),
    ]
