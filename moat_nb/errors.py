"""Every exception moat_nb raises, in one place.

The hierarchy::

    MoatError                         base: .code (stable, machine-readable), .message, .hint, .details
    ├── RouteError                    the route engine (sandbox/camel)
    │   └── RouteLoadError            a route file could not be loaded: .file .line .construct
    │       └── SimpleSyntaxError     a Simple expression does not parse: .expression .position
    ├── RecordError                   a wire record is malformed (missing field, bad id, bad time)
    ├── ApiError                      the platform answered with an error envelope: .status
    │                                 (.answered False: refused here, before anything was sent)
    │   ├── AuthenticationError       401  UNAUTHORIZED / TOKEN_EXPIRED / BAD_CREDENTIALS
    │   ├── PermissionDenied          403  FORBIDDEN (names the missing permission)
    │   │   └── TierNotEntitled       403  TIER_NOT_ENTITLED
    │   ├── NotFound                  404  NOT_FOUND
    │   ├── ValidationError           400  VALIDATION / BAD_JSON / BAD_HEADER / ...
    │   │   └── ControlHeaderRejected 400  CONTROL_HEADER
    │   ├── PayloadTooLarge           413  PAYLOAD_TOO_LARGE
    │   ├── UnsupportedMediaType      415  UNSUPPORTED_MEDIA_TYPE
    │   ├── HeadersTooLarge           431  HEADERS_TOO_LARGE
    │   ├── HostNotAllowed            421  HOST_NOT_ALLOWED
    │   ├── IdempotencyConflict       422  IDEMPOTENCY_CONFLICT
    │   ├── AgentUnavailable          503  AGENT_UNAVAILABLE
    │   ├── AuditUnavailable          503  AUDIT_UNAVAILABLE
    │   └── ServerError               any other 5xx
    ├── TransportError                the network failed (connect, read, resume attempts exhausted)
    │   ├── BatchStopped              a sweep or regression lost the platform: .result (the rows so far)
    │   └── WaitTimeout               run.wait / run.await_(timeout=) ran out; the replay goes on
    ├── ReplayFailed                  a replay ended ERROR / TIMED_OUT / ABORTED: .replay_id .status
    └── AuditVerificationError        an audit log or bundle does not verify: .first_bad_seq .reason

Every class carries a stable ``code`` and a ``hint`` (what to do next); ``str()`` is one line a
person can act on, never a stack trace.
"""

from __future__ import annotations

from typing import Any


class MoatError(Exception):
    """Base of every moat_nb error."""

    code: str = "MOAT_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        hint: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.hint = hint
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}"
        if self.hint:
            text += f" — {self.hint}"
        return text

    def _render_traceback_(self) -> list[str]:
        """What IPython (a notebook, papermill's report) shows for this error: its one line,
        where a refusal printed 20-40 lines of the client's frames above the message that says
        what to do. ``MOAT_DEBUG=1`` in the kernel's environment shows the whole traceback."""
        import os
        import traceback

        if os.environ.get("MOAT_DEBUG"):
            return "".join(traceback.format_exception(self)).splitlines()
        return [f"{type(self).__name__}: {self}"]


# --------------------------------------------------------------------------- route engine


class RouteError(MoatError):
    """Raised by the sandbox route engine outside a running exchange."""

    code = "ROUTE_ERROR"


class RouteLoadError(RouteError):
    """A route file is malformed or uses a construct the engine does not support.

    Raised at load time, never at run time, naming the file, the line and the construct.
    """

    code = "ROUTE_INVALID"

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        construct: str | None = None,
        hint: str | None = None,
        code: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.construct = construct
        super().__init__(
            message,
            code=code,
            hint=hint,
            details={"file": file, "line": line, "construct": construct},
        )

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}"
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        text = f"{where}{self.message}"
        if self.construct:
            text += f" (construct: {self.construct})"
        if self.hint:
            text += f" — {self.hint}"
        return text


class SimpleSyntaxError(RouteLoadError):
    """A Camel Simple expression does not parse."""

    code = "SIMPLE_SYNTAX"

    def __init__(
        self,
        message: str,
        *,
        expression: str,
        position: int,
        hint: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        self.expression = expression
        self.position = position
        super().__init__(
            f"{message} at position {position} in Simple expression {expression!r}",
            file=file,
            line=line,
            construct="simple",
            hint=hint,
        )
        self.details.update({"expression": expression, "position": position})


# --------------------------------------------------------------------------- records


class RecordError(MoatError, ValueError):
    """A wire record is malformed: a missing field, a bad id, an unparsable time."""

    code = "BAD_RECORD"


# --------------------------------------------------------------------------- platform API


class ApiError(MoatError):
    """The platform answered with an error envelope ``{error, message, details}``.

    The same classes are raised this side when a request would be refused anyway (a bad filter,
    a bad timeout): ``answered`` is False then, and ``str()`` names no HTTP status.
    """

    code = "API_ERROR"
    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        hint: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, hint=hint, details=details)
        # Only an answer carries an HTTP status: a check this side refuses before anything is
        # sent, and "HTTP 400" would tell its reader the platform refused it.
        self.answered = status is not None
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        text = super().__str__()
        return f"HTTP {self.status} {text}" if self.answered else text


class AuthenticationError(ApiError):
    code = "UNAUTHORIZED"
    status = 401


class PermissionDenied(ApiError):
    code = "FORBIDDEN"
    status = 403


class TierNotEntitled(PermissionDenied):
    code = "TIER_NOT_ENTITLED"


class NotFound(ApiError):
    code = "NOT_FOUND"
    status = 404


class ValidationError(ApiError, ValueError):
    code = "VALIDATION"
    status = 400


class ControlHeaderRejected(ValidationError):
    code = "CONTROL_HEADER"


class PayloadTooLarge(ApiError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413


class UnsupportedMediaType(ApiError):
    """415 (RFC 9110 15.5.16): a request body that is not declared ``application/json``."""

    code = "UNSUPPORTED_MEDIA_TYPE"
    status = 415


class HeadersTooLarge(ApiError):
    """431 Request Header Fields Too Large (RFC 6585 section 5): too many request header
    fields, or one too long."""

    code = "HEADERS_TOO_LARGE"
    status = 431


class HostNotAllowed(ApiError):
    """421 Misdirected Request (RFC 9110 section 15.5.20): the request names a host the server
    does not answer for, as a page that rebinds its own DNS name to 127.0.0.1 does (DNS
    rebinding) to reach a sandbox on loopback from the user's browser."""

    code = "HOST_NOT_ALLOWED"
    status = 421


class IdempotencyConflict(ApiError):
    code = "IDEMPOTENCY_CONFLICT"
    status = 422


class AgentUnavailable(ApiError):
    code = "AGENT_UNAVAILABLE"
    status = 503


class AuditUnavailable(ApiError):
    code = "AUDIT_UNAVAILABLE"
    status = 503


class ServerError(ApiError):
    code = "SERVER_ERROR"
    status = 500


class TransportError(MoatError):
    """The network failed: could not connect, the read timed out, resume attempts ran out."""

    code = "TRANSPORT"


class WaitTimeout(TransportError, TimeoutError):
    """``run.wait(timeout=)`` (or ``await run.await_(timeout=)``) reached its deadline before
    the replay ended; the replay goes on and waiting again picks up where it stopped. Raised as
    a bare TransportError before, which this hierarchy documents as "the network failed": a
    notebook's one line read
    "TransportError: [WAIT_TIMEOUT]" on a healthy network, and ``except TimeoutError`` missed it.
    A subclass of both, so that ``except TransportError`` still catches it."""

    code = "WAIT_TIMEOUT"


class BatchStopped(TransportError):
    """A sweep or regression stopped early: row after row could not reach the platform (as many
    in a row as run side by side). ``.result`` is the partial ``BatchResult``: the rows finished,
    the failed ones included; rows in flight were cut off and are not in it. With a results file
    the same call resumes once the platform answers again. ``code`` is ``PLATFORM_UNREACHABLE``."""

    code = "PLATFORM_UNREACHABLE"

    def __init__(
        self,
        message: str,
        *,
        result: Any,
        hint: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, hint=hint, details=details)
        self.result = result


class ReplayFailed(MoatError):
    """The platform could not run a replay: it ended ``ERROR``, ``TIMED_OUT`` or ``ABORTED``.

    (A replay whose *route* failed is ``COMPLETED`` with ``result.status == "FAILED"``: that is a
    result, not an error.) ``code`` is ``REPLAY_<STATUS>``.
    """

    code = "REPLAY_FAILED"

    def __init__(self, message: str, *, replay_id: str, status: str, hint: str | None = None) -> None:
        self.replay_id = replay_id
        self.status = status
        super().__init__(
            message,
            code=f"REPLAY_{status}",
            hint=hint,
            details={"replayId": replay_id, "status": status},
        )


class AuditVerificationError(MoatError):
    """An audit log or exported bundle does not verify."""

    code = "AUDIT_INVALID"

    def __init__(
        self, message: str, *, first_bad_seq: int | None, reason: str, hint: str | None = None
    ) -> None:
        self.first_bad_seq = first_bad_seq
        self.reason = reason
        super().__init__(message, hint=hint, details={"firstBadSeq": first_bad_seq, "reason": reason})
