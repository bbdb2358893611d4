"""The platform client: :func:`connect`, :class:`Platform` and :class:`AsyncPlatform` over httpx.

One implementation, two transports. Every call is written once, in the sans-I/O core below, as
a generator that *yields* the :class:`httpx.Request` it needs sent and *receives* the
:class:`httpx.Response` (httpx shares its Request and Response models between its sync and
async clients, and so do we)::

    def op_execution(session, execution_id):
        data = yield from session.call("GET", f"/executions/{session.quote(execution_id)}")
        return Execution.from_wire(data)

:class:`Platform` drives such a generator with ``httpx.Client.send``, :class:`AsyncPlatform`
with ``await httpx.AsyncClient.send``; neither knows what the call is. Authentication is part
of the core (:meth:`Session.send`): it logs in or refreshes the access token shortly before it
expires, and once more on a 401 ``TOKEN_EXPIRED``. The drivers only send, and resend a request
after a network failure (bounded, with back-off); a replay request carries its
``Idempotency-Key``, so resending it never runs a replay twice (DESIGN.md section 4).

Errors: an error envelope ``{error, message, details}`` becomes the class of
:mod:`moat_nb.errors` its code (else its status) names, with the server's code and message and
a hint; a network failure is :class:`~moat_nb.errors.TransportError`.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import math
import numbers
import os
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx

from . import audit as audit_core
from .errors import (
    AgentUnavailable,
    ApiError,
    AuditUnavailable,
    AuthenticationError,
    ControlHeaderRejected,
    IdempotencyConflict,
    MoatError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ServerError,
    TierNotEntitled,
    TransportError,
    ValidationError,
)
from .frames import Backend, audit_frame, processors_frame
from .history import (
    DEFAULT_MAX_ROWS,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    AsyncHistory,
    History,
    count_argument,
    instant,
    search_filters,
)
from .model import ID_PATTERN, Execution

if TYPE_CHECKING:
    from .stream import ReplayRun, StreamPolicy

__all__ = [
    "API_PREFIX",
    "CLIENT",
    "AsyncPlatform",
    "AuditBundle",
    "Op",
    "Platform",
    "RetryPolicy",
    "Session",
    "api_base",
    "connect",
    "decode",
    "error_from_response",
    "op_execution",
    "op_replay",
    "op_search_page",
    "replay_permissions",
    "serialise_body",
    "transport_error",
]

API_PREFIX = "/api/v1"


def _client_name() -> str:
    # From the installed metadata, not moat_nb.__version__: moat_nb/__init__.py imports this
    # module before it defines __version__.
    try:
        return f"moat_nb/{importlib.metadata.version('moat-nb')}"
    except importlib.metadata.PackageNotFoundError:
        return "moat_nb"


#: What a replay's ``client`` field says unless told (section 4: the Replay names its client).
CLIENT = _client_name()
T = TypeVar("T")
#: A request operation of the core: yields requests, receives responses, returns a value.
Op = Generator[httpx.Request, httpx.Response, T]


# --------------------------------------------------------------------------- errors (pure)

_BY_CODE: dict[str, type[ApiError]] = {
    "TIER_NOT_ENTITLED": TierNotEntitled,
    "CONTROL_HEADER": ControlHeaderRejected,
    "IDEMPOTENCY_CONFLICT": IdempotencyConflict,
    "AGENT_UNAVAILABLE": AgentUnavailable,
    "AUDIT_UNAVAILABLE": AuditUnavailable,
    "PAYLOAD_TOO_LARGE": PayloadTooLarge,
}
_BY_STATUS: dict[int, type[ApiError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    413: PayloadTooLarge,
    422: ValidationError,
}
_HINTS: dict[str, str] = {
    "TOKEN_EXPIRED": "the session expired and could not be renewed: connect again",
    "BAD_CREDENTIALS": "check the user name and password (MOAT_USER / MOAT_PASSWORD)",
    "UNAUTHORIZED": "log in: moat_nb.connect(url, username=..., password=...) or set MOAT_TOKEN",
    "BAD_TOKEN": "the token is not valid here: connect again with a user and password",
    "TIER_NOT_ENTITLED": "replay needs the HIGH or BUSINESS tier: ask your Cameleer administrator",
    "CONTROL_HEADER": "Camel control headers (Camel*, org.apache.camel*) cannot be set in a replay: "
    "remove them from headers=",
    "IDEMPOTENCY_CONFLICT": "this Idempotency-Key was already used for another request: call "
    "replay() again, it makes a fresh key",
    "AGENT_UNAVAILABLE": "no live agent serves that environment: try again later or pick another "
    "target_environment",
    "AUDIT_UNAVAILABLE": "the audit log could not be written, so nothing ran: try again later",
    "PAYLOAD_TOO_LARGE": "request bodies are limited to 1 MiB: send a smaller body",
    "NOT_FOUND": "check the id; platform.executions(...) searches the history",
}
_CLASS_HINTS: dict[type[ApiError], str] = {
    PermissionDenied: "ask an administrator for the permission this needs",
    ValidationError: "fix the request as the message says",
    ServerError: "the server failed: try again, and report it if it persists",
    ApiError: "the platform refused the request: see the message and details",
}


def _envelope(response: httpx.Response) -> tuple[str | None, str | None, dict[str, Any]]:
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return None, None, {}
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return None, None, {}
    details = body.get("details")
    message = body.get("message")
    return (
        body["error"],
        message if isinstance(message, str) else None,
        details if isinstance(details, dict) else {},
    )


def error_from_response(response: httpx.Response) -> ApiError:
    """The :mod:`moat_nb.errors` exception for an error response (its body must be read).

    The class comes from the envelope's code where one is specific (``TIER_NOT_ENTITLED``,
    ``CONTROL_HEADER`` ...), else from the status; it keeps the server's code, message and
    details, and its hint is the server's (``details.hint``) or one that says what to do.
    """
    status = response.status_code
    code, message, details = _envelope(response)
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    request = response.request
    where = f"{request.method} {request.url.path}" if request is not None else "the request"
    if message is None:
        text = response.text[:200].strip() if response.content else ""
        message = f"{where} answered HTTP {status} {response.reason_phrase}" + (f": {text}" if text else "")
    hint = details.get("hint") if isinstance(details.get("hint"), str) else None
    missing = details.get("missing")
    if hint is None and cls is PermissionDenied and isinstance(missing, list) and missing:
        hint = f"ask an administrator to grant {', '.join(map(str, missing))}"
        if "replay:prod" in missing:
            hint += " (no role implies replay:prod; it is granted to a user explicitly)"
    if hint is None:
        hint = _HINTS.get(code or "") or next(
            (_CLASS_HINTS[c] for c in cls.__mro__ if c in _CLASS_HINTS), None
        )
    if code is None and status in _GATEWAY_STATUSES:
        # No envelope: a proxy or load balancer answered for a platform it could not reach (the
        # platform's own 503s carry their code). Batches count it as unreachable (batch.py).
        code = "GATEWAY"
        hint = "the platform behind this address did not answer: is it running? (or wait and retry)"
    return cls(message, status=status, code=code or cls.code, hint=hint, details=details)


#: What a proxy in front of a platform answers when the platform is down or slow.
_GATEWAY_STATUSES = frozenset({502, 503, 504})


def redirect_error(response: httpx.Response) -> ServerError:
    """A 3xx answer: redirects are not followed (a POST would be resent elsewhere, with the
    token), so the address is wrong, and the Location says which one to use."""
    location = response.headers.get("location") or "(no Location header)"
    return ServerError(
        f"{response.request.method} {response.request.url.path} answered HTTP {response.status_code}, "
        f"a redirect to {location}",
        status=response.status_code,
        code="REDIRECTED",
        hint="set MOAT_URL to the platform's own address (https://... if the redirect says so)",
        details={"location": location},
    )


def decode(response: httpx.Response) -> Any:
    """The JSON body of a 2xx response (None when empty); the mapped error otherwise."""
    if response.status_code >= 400:
        raise error_from_response(response)
    if response.status_code >= 300:
        raise redirect_error(response)
    if response.status_code == 204 or not response.content:
        return None
    try:
        # Strict (no NaN, Infinity or 1e999): audit events read here are verified, and a
        # non-finite number has no canonical form to hash (audit.loads_strict).
        return audit_core.loads_strict(response.content)
    except audit_core.NonFiniteNumber as exc:
        raise ServerError(
            f"{response.request.method} {response.request.url.path} answered with a number JSON cannot "
            f"carry ({exc})",
            status=response.status_code,
            code="NON_FINITE_NUMBER",
            hint="the platform wrote NaN, Infinity or a number beyond the doubles; moat_nb refuses "
            "them, since what it reads may be hashed and verified",
        ) from None
    except (ValueError, RecursionError):
        raise ServerError(
            f"{response.request.method} {response.request.url.path} answered with a body that is not JSON",
            status=response.status_code,
            code="BAD_RESPONSE",
            hint="is MOAT_URL the platform's address (not a proxy or a web page)?",
        ) from None


# --------------------------------------------------------------------------- session (pure)


def _jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, read without checking the signature (the server checks it): only
    to tell a refresh token from an access token."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def api_base(url: str) -> str:
    """``http://host:port`` (or the API base itself) → the API base ``http://host:port/api/v1``."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValidationError(
            f"{url!r} is not an http(s) URL", code="BAD_URL", hint="e.g. http://127.0.0.1:8081"
        )
    return url if url.endswith(API_PREFIX) else url + API_PREFIX


def _timeout_argument(timeout: Any) -> Any:
    """``connect(timeout=)``: seconds, a positive finite number, or None for no timeout. Checked
    at connect: ``inf``, ``-1``, ``nan`` or ``"5"`` failed later, in ``socket``, with a bare
    ValueError, OverflowError or TypeError. An ``httpx.Timeout`` (or httpx's 4-tuple) is the
    caller's own choice per phase and passes as it is (found by review: it was refused)."""
    if timeout is None or isinstance(timeout, httpx.Timeout):
        return timeout
    if isinstance(timeout, tuple) and len(timeout) == 4:
        return httpx.Timeout(timeout)
    if isinstance(timeout, numbers.Real) and not isinstance(timeout, bool):
        seconds = float(timeout)
        if math.isfinite(seconds) and seconds > 0:
            return seconds
    raise ValidationError(
        f"timeout={timeout!r:.40} is not a number of seconds above 0",
        code="VALIDATION",
        hint="pass seconds as a number, e.g. timeout=30, or timeout=None to wait without a limit",
        details={"field": "timeout"},
    )


class Session:
    """Where the platform is, who we are and the tokens we hold; builds every request.

    Pure: time comes from ``clock`` (seconds, monotonic), handed in. The access token is
    renewed ``margin`` seconds before it expires (a tenth of its lifetime, at most 60 s): with
    the refresh token when there is one, else by logging in again when the password is known.
    A token given by the user is used as it is when it is an access token, and to get access
    tokens when it is a refresh token (``typ: refresh``), which lasts days instead of an hour.
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float | None = 30.0,
    ) -> None:
        self.api = api_base(url)
        self.url = self.api[: -len(API_PREFIX)]
        self.username = username
        self._password = password
        self.clock = clock
        self.timeout = httpx.Timeout(_timeout_argument(timeout))
        self.access_token: str | None = None
        self.refresh_token: str | None = None
        self.expires_at: float | None = None
        self.user: dict[str, Any] | None = None
        self.renewals = 0  # how many times the access token was renewed (for tests and repr)
        if token:
            if _jwt_claims(token).get("typ") == "refresh":
                self.refresh_token = token
            else:
                self.access_token = token

    def __repr__(self) -> str:
        who = self.username or (self.user or {}).get("username") or "token"
        return f"<Session {self.url} as {who}>"

    # ---------------------------------------------------------------- requests

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Request:
        """An :class:`httpx.Request` for ``path`` under the API base (no credentials yet)."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        return httpx.Request(
            method,
            self.api + path,
            params=clean or None,
            json=json,
            headers={"Accept": "application/json", **(headers or {})},
            extensions={"timeout": (timeout or self.timeout).as_dict()},
        )

    @staticmethod
    def quote(value: str, what: str = "id") -> str:
        """A path segment (ids are ``[A-Za-z0-9._:-]``, but a user may paste anything). Not a
        string, or empty: ``ValidationError`` ``BAD_ID`` before any request (``None`` from an
        unset variable or ``5`` failed in ``urllib`` with a bare TypeError)."""
        if not isinstance(value, str) or not value:
            hint = f"pass the {what} as a string, as the platform gave it (e.g. from a search hit)"
            shown = f"{value!r:.40}"
            if hasattr(value, "columns") and hasattr(value, "shape"):
                # A whole frame (`df.filter(...)` of one row, in polars): its repr is a table
                # drawn over many lines, of which the message showed the first 40 characters.
                rows = value.shape[0]
                shown = f"a frame of {rows} {'row' if rows == 1 else 'rows'}"
                hint = (
                    "pass one row of the frame: frame.iloc[0] (pandas) or frame.row(0, named=True) "
                    f"(polars), or the {what} as a string"
                )
            raise ValidationError(
                f"the {what} must be a non-empty str, not {shown} ({type(value).__name__})",
                code="BAD_ID",
                hint=hint,
                details={"field": what},
            )
        return urllib.parse.quote(value, safe="")

    # ---------------------------------------------------------------- tokens

    def _expiring(self) -> bool:
        if self.access_token is None:
            return True
        if self.expires_at is None:
            return False
        return self.clock() >= self.expires_at

    def _store(self, body: Mapping[str, Any], started: float) -> None:
        self.access_token = body["accessToken"]
        self.refresh_token = body.get("refreshToken") or self.refresh_token
        ttl = body.get("expiresIn")
        if isinstance(ttl, int | float) and ttl > 0:
            margin = min(60.0, ttl / 10)
            # From when the request left: the server's clock started the token no earlier.
            self.expires_at = started + ttl - margin
        else:
            self.expires_at = None
        if isinstance(body.get("user"), dict):
            self.user = body["user"]

    def login(self) -> Op[dict[str, Any]]:
        """``POST /auth/login`` with the user name and password."""
        if not (self.username and self._password):
            raise AuthenticationError(
                "no credentials to log in with",
                code="NO_CREDENTIALS",
                hint="pass username= and password= (or token=), or set MOAT_USER and MOAT_PASSWORD "
                "(or MOAT_TOKEN)",
            )
        started = self.clock()
        response = yield self.request(
            "POST", "/auth/login", json={"username": self.username, "password": self._password}
        )
        body = decode(response)
        self._store(body, started)
        return body

    def renew(self) -> Op[None]:
        """A fresh access token: refresh when we can, else log in again."""
        if self.refresh_token is not None:
            started = self.clock()
            request = self.request("POST", "/auth/refresh")
            request.headers["Authorization"] = f"Bearer {self.refresh_token}"
            response = yield request
            if response.status_code < 400:
                self._store(decode(response), started)
                self.renewals += 1
                return
            if not (self.username and self._password):
                raise error_from_response(response)
            self.refresh_token = None  # it expired or was revoked: log in instead
        if self.username and self._password:
            yield from self.login()
            self.renewals += 1
            return
        if self.access_token is None:
            yield from self.login()  # raises NO_CREDENTIALS, in words
        raise AuthenticationError(
            "the access token expired and there is no refresh token or password to renew it",
            code="TOKEN_EXPIRED",
            hint="connect again with a user and password, or with a refresh token in MOAT_TOKEN",
        )

    def authorize(self) -> Op[str]:
        """The ``Authorization`` value to send now, renewing the token first when it is due."""
        if self._expiring():
            yield from self.renew()
        return f"Bearer {self.access_token}"

    def renews(self, code: str | None) -> bool:
        """Whether a 401 with error ``code`` is answered by renewing the token and sending again
        (once): ``TOKEN_EXPIRED``, and ``BAD_TOKEN`` when there is a password to log in with
        (:meth:`send`). One rule for calls and trace streams (:mod:`moat_nb.stream`): the
        stream renewed on ``TOKEN_EXPIRED`` only, and raised where every call logged in again."""
        return code == "TOKEN_EXPIRED" or (code == "BAD_TOKEN" and bool(self.username and self._password))

    def send(self, request: httpx.Request) -> Op[httpx.Response]:
        """Send ``request`` with credentials; on a 401 ``TOKEN_EXPIRED`` renew once and resend,
        and on a 401 ``BAD_TOKEN`` too when there is a password to log in with again: the
        platform no longer takes a token it issued (its key is new, or the user's password
        changed: a sandbox started on a fresh data folder, or upgraded) and a notebook with
        credentials need not fail for it."""
        request.headers["Authorization"] = yield from self.authorize()
        response = yield request
        if response.status_code == 401 and self.renews(_envelope(response)[0]):
            yield from self.renew()
            request.headers["Authorization"] = f"Bearer {self.access_token}"
            response = yield request
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> Op[Any]:
        """One authorized request; its decoded JSON."""
        response = yield from self.send(self.request(method, path, **kwargs))
        return decode(response)


# --------------------------------------------------------------------------- operations (pure)


def op_search_page(session: Session, body: dict[str, Any]) -> Op[dict[str, Any]]:
    return (yield from session.call("POST", "/search/executions", json=body))


def op_execution(session: Session, execution_id: str) -> Op[Execution]:
    path = f"/executions/{session.quote(execution_id, 'execution id')}"
    data = yield from session.call("GET", path)
    return Execution.from_wire(data)


def _source_of(source: Any) -> tuple[str | None, str | None, Execution | None]:
    """(exchange id, execution id, full execution if at hand) of a replay source."""
    if isinstance(source, str):
        return source, None, None
    if isinstance(source, Execution):
        full = source if source.input_headers is not None or source.processors is not None else None
        return source.exchange_id, source.execution_id, full
    row: Mapping[str, Any] | None = None
    if isinstance(source, Mapping):
        row = source
    elif hasattr(source, "to_dict") and callable(source.to_dict):  # a pandas Series (a frame row)
        row = source.to_dict()
    if row is not None:
        exchange = row.get("exchange_id", row.get("exchangeId"))
        execution = row.get("execution_id", row.get("executionId"))
        if isinstance(exchange, str):
            return exchange, execution if isinstance(execution, str) else None, None
    raise ValidationError(
        f"cannot replay a {type(source).__name__}",
        code="BAD_SOURCE",
        hint="pass an exchange id, an Execution, or a row of an executions frame",
    )


def _execution_id(execution: Any) -> Any:
    """The execution id of an Execution or of a row of an executions frame (a dict or a pandas
    Series); anything else as it is, for :meth:`Session.quote` to take (a str) or refuse."""
    if isinstance(execution, Execution):
        return execution.execution_id
    row: Mapping[str, Any] | None = None
    if isinstance(execution, Mapping):
        row = execution
    elif hasattr(execution, "to_dict") and callable(execution.to_dict) and not hasattr(execution, "columns"):
        row = execution.to_dict()  # a pandas Series: one row of an executions frame
    ident = None if row is None else row.get("execution_id", row.get("executionId"))
    return ident if isinstance(ident, str) else execution


def _processors_source(execution: Any) -> tuple[str, Execution | None]:
    """(execution id, the Execution when it holds its processors) of what ``processors()`` is
    given: an execution id, an Execution, or a row of an executions frame (a dict or a pandas
    Series, as ``replay()`` takes one)."""
    if isinstance(execution, Execution):
        return execution.execution_id, execution if execution.processors is not None else None
    ident = _execution_id(execution)
    if isinstance(ident, str):
        return ident, None
    raise ValidationError(
        f"cannot show the processors of a {type(execution).__name__}",
        code="BAD_SOURCE",
        hint="pass an execution id, an Execution, or a row of an executions frame (frame.iloc[0])",
    )


def _header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return str(value)
    return None


def serialise_body(body: Any, headers: Mapping[str, Any] | None, original_body: str | None) -> str | None:
    """A replay body as the string a Camel agent carries (section 3: bodies travel as strings).

    A ``str`` goes as it is, ``bytes`` as UTF-8. A dict or list is written the way the original
    exchange's content would be: JSON when its ``Content-Type`` says JSON (``application/json``,
    ``*+json``) or, without a Content-Type, when the original body is JSON; form-encoded for
    ``application/x-www-form-urlencoded``. Anything else is refused: guessing a format for an
    XML or text route would replay a payload the route never sees.
    """
    if body is None or isinstance(body, str):
        return body
    if isinstance(body, bytes | bytearray):
        try:
            return bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError(
                "the body is not UTF-8 text", code="BAD_BODY", hint="bodies travel as text; decode it first"
            ) from None
    if not isinstance(body, Mapping | list | tuple):
        raise ValidationError(
            f"cannot send a {type(body).__name__} as a body",
            code="BAD_BODY",
            hint="pass a str, a dict or a list",
        )
    content_type = (_header(headers, "content-type") or "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded" and isinstance(body, Mapping):
        return urllib.parse.urlencode(body, doseq=True)
    is_json = content_type.endswith(("/json", "+json"))
    if not content_type and original_body is not None:
        try:
            json.loads(original_body)
            is_json = True
        except ValueError:
            is_json = False
    if not is_json:
        raise ValidationError(
            f"cannot write a {type(body).__name__} body for content type {content_type or '(none)'}",
            code="BAD_BODY",
            hint="the original is not JSON: pass the body as a string in the format the route reads",
        )
    # Python's default separators, as the recorded bodies have them (json.dumps in the agents).
    return _json_text(body, "the body", separators=None)


def _json_text(value: Any, what: str, separators: tuple[str, str] | None = (",", ":")) -> str:
    """``value`` as JSON text (RFC 8259): numpy and pandas scalars (``df.qty.iloc[0]``) as the
    Python values they hold; ``ValidationError`` ``BAD_BODY`` for NaN or an infinity (pandas'
    missing value, which ``json.dumps`` would write as the bare token ``NaN``, not JSON) and
    for anything else JSON cannot carry, before any request is sent."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=_scalar, separators=separators)
    except ValueError as exc:
        # json.dumps raises ValueError for NaN and infinities and for a value that holds itself.
        if "Circular reference" in str(exc):
            message, hint = f"{what} holds itself (a circular reference)", "pass a tree of values"
        else:
            message = f"{what} holds NaN or an infinity, which JSON cannot carry"
            hint = "use None for a missing value (pandas gives NaN for one)"
        raise ValidationError(message, code="BAD_BODY", hint=hint) from None
    except TypeError as exc:
        raise ValidationError(
            f"{what} holds a value JSON cannot carry: {exc}",
            code="BAD_BODY",
            hint="use str, int, float, bool, None, dict and list (a datetime as an ISO string, "
            "an array as array.tolist())",
        ) from None


def _scalar(value: Any) -> Any:
    # numpy scalars (and what pandas hands out of a frame) have .item(), a dtype and no
    # dimensions; an array has them too, and its .item() raised ValueError, which read as NaN.
    if hasattr(value, "dtype") and callable(getattr(value, "item", None)) and getattr(value, "ndim", 0) == 0:
        return value.item()
    kind = type(value)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    raise TypeError(f"{name} is not JSON data")


#: Where a replay of an exchange id starts, searched in this order (keyword filters of
#: ``executions()``), as the server picks it (``Store.replay_source_id``): the recorded exchange,
#: else the newest replay execution with that id, since a replay's own exchange may be replayed
#: again (DESIGN.md section 9: replays of replays). The recorded one first: should replay
#: executions carry the recorded exchange's id too, the payload replayed is the recorded one.
#: One rule for the client's look-up and the batches' (:mod:`moat_nb.batch`).
SOURCE_SEARCHES: tuple[dict[str, Any], ...] = (
    {"is_replay": False},
    {"is_replay": True, "sort": "start_time:desc"},
)


def replay_permissions(source_environment: str, target_environment: str | None, modified: bool) -> list[str]:
    """The permissions a replay needs (DESIGN.md section 6): ``replay:run``, ``replay:modify``
    with a modified payload, ``replay:prod`` when the source or the target is ``prod``. The
    platform decides; the client asks the same before work it would otherwise waste (a proof's
    kernel, a batch none of whose rows may run). One rule for :mod:`moat_nb.report` and
    :mod:`moat_nb.batch`."""
    needed = ["replay:run"]
    if modified:
        needed.append("replay:modify")
    if "prod" in (source_environment, target_environment or source_environment):
        needed.append("replay:prod")
    return needed


def op_source_execution_id(session: Session, exchange_id: str) -> Op[str]:
    """The execution a replay of ``exchange_id`` starts from (:data:`SOURCE_SEARCHES`)."""
    for wanted in SOURCE_SEARCHES:
        body = {**search_filters({"exchange_id": exchange_id, **wanted}, datetime.now(UTC)), "limit": 1}
        page = yield from op_search_page(session, body)
        if page.get("data"):
            return str(page["data"][0]["executionId"])
    # A conclusion from searches that answered 200, not an answer of 404: no "HTTP 404" in it.
    raise NotFound(f"no exchange {exchange_id!r}, recorded or replayed", hint=_HINTS["NOT_FOUND"])


def _payload_map(value: Any, name: str) -> dict[str, Any]:
    """``headers=`` / ``properties=`` of a replay: a mapping of names to values, or what ``dict()``
    makes one of (name-value pairs; a pandas Series by its ``to_dict()``), as before; a string,
    or anything ``dict()`` cannot take, is ``BAD_PAYLOAD`` (it failed with a bare ValueError or
    TypeError)."""
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str | bytes | bytearray):
        to_dict = getattr(value, "to_dict", None)
        try:
            return dict(to_dict()) if callable(to_dict) else dict(value)
        except (TypeError, ValueError):
            pass
    raise ValidationError(
        f"{name}= is a {type(value).__name__}, not a mapping of names to values",
        code="BAD_PAYLOAD",
        hint=f"pass {name} as a dict, e.g. {name}={{'name': 'value'}} (it replaces the original's)",
        details={"field": name},
    )


def op_replay(
    session: Session,
    source: Any,
    *,
    key: str,
    headers: Mapping[str, Any] | None,
    body: Any,
    properties: Mapping[str, Any] | None,
    target_environment: str | None,
    target_agent: str | None,
    reason: str,
    client: str | None,
) -> Op[dict[str, Any]]:
    """``POST /replays`` for ``source`` with a modified payload; the Replay (202)."""
    exchange_id, execution_id, full = _source_of(source)
    if body is not None and not isinstance(body, str | bytes | bytearray) and full is None:
        # The body must be written as the original's content: fetch the original for its
        # Content-Type and body (a search hit or a frame row does not carry them).
        if execution_id is None:
            execution_id = yield from op_source_execution_id(session, exchange_id)  # type: ignore[arg-type]
        full = yield from op_execution(session, execution_id)
    modified: dict[str, Any] = {}
    if headers is not None:
        modified["headers"] = json.loads(_json_text(_payload_map(headers, "headers"), "the headers"))
    if body is not None:
        effective_headers = headers if headers is not None else (full.input_headers if full else None)
        modified["body"] = serialise_body(body, effective_headers, full.input_body if full else None)
    if properties is not None:
        modified["properties"] = json.loads(
            _json_text(_payload_map(properties, "properties"), "the properties")
        )
    payload: dict[str, Any] = {"sourceExchangeId": exchange_id, "reason": reason}
    if modified:
        payload["modifiedPayload"] = modified
    if target_environment is not None:
        payload["targetEnvironment"] = target_environment
    if target_agent is not None:
        payload["targetAgent"] = target_agent
    if client is not None:
        payload["client"] = client
    return (yield from session.call("POST", "/replays", json=payload, headers={"Idempotency-Key": key}))


def op_check_token(session: Session) -> Op[None]:
    """One authorised read (``GET /replays?limit=1``): a token alone says nothing until it is
    used, and :func:`connect` promises that a wrong address or token fails at once. A 403 means
    the token is good and its user may not list replays."""
    try:
        yield from session.call("GET", "/replays", params={"limit": 1})
    except PermissionDenied:
        pass


def _export_filters(filters: Mapping[str, Any] | None) -> dict[str, Any]:
    """``export()``'s search filters; its own options are keywords, not filters."""
    out = dict(filters or {})
    for name in ("limit", "max_rows", "page_size"):
        if name in out:
            raise ValidationError(
                f"export() takes {name} as a keyword argument, not among the filters",
                code="BAD_FILTER",
                hint=f"p.export(filters, path, {name}=...)",
                details={"filter": name},
            )
    return out


@contextmanager
def _parquet_export(path: str | os.PathLike[str]) -> Iterator[tuple[Any, Path]]:
    """A Parquet writer of the executions schema for ``export()``, and the path it writes.

    Written beside ``path`` under a temporary name and moved onto ``path`` (``os.replace``,
    atomic on one file system) only once every page is in: an export that fails half way (the
    network, the platform, a full disk) leaves no half-written file, and an earlier export at
    ``path`` as it was."""
    import pyarrow.parquet as pq

    from .frames import EXECUTION_SCHEMA

    # "~/history.parquet" is in the home folder, as pandas' and polars' writers read it; it was
    # refused as "in '~', which is not a folder".
    target = Path(path).expanduser()
    # Before any page is fetched: else a missing folder failed naming the temporary file, and a
    # folder at ``path`` only once every page was read, at the move.
    if target.is_dir() or not target.parent.is_dir():
        where = "is a folder" if target.is_dir() else f"is in {str(target.parent)!r}, which is not a folder"
        raise ValidationError(
            f"cannot export to {str(target)!r}: it {where}",
            code="BAD_OUT",
            hint="name a file in an existing folder, e.g. 'history.parquet' (make the folder first)",
        )
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        with pq.ParquetWriter(partial, EXECUTION_SCHEMA) as writer:
            yield writer, target
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def op_pages(
    session: Session, path: str, params: dict[str, Any], *, page_size: int, limit: int | None, key: str
) -> Op[list[Any]]:
    """Every row of a ``{data, total, offset, limit}`` endpoint (GET with offset/limit), each
    once: a row whose ``key`` field came on an earlier page is dropped. Offsets shift when rows
    are added while the pages are read (``GET /replays`` lists the newest first, so a replay
    requested meanwhile pushes the last row of a page onto the next one); rows are never taken
    away, so nothing is skipped either."""
    limit = count_argument("limit", limit)
    page_size = count_argument("page_size", page_size, optional=False)  # type: ignore[assignment]
    rows: list[Any] = []
    seen: set[Any] = set()
    offset = count_argument("offset", params.pop("offset", 0)) or 0
    if (limit is not None and limit < 0) or page_size < 1 or offset < 0:
        raise ValidationError(
            f"limit={limit}, page_size={page_size}, offset={offset}: none may be negative, "
            "and a page holds at least one row",
            code="VALIDATION",
            hint="pass limit=None for every row, or a count of 0 or more",
        )
    while limit is None or len(rows) < limit:
        size = page_size if limit is None else min(page_size, limit - len(rows))
        page = yield from session.call("GET", path, params={**params, "offset": offset, "limit": size})
        data = page.get("data") or []
        for row in data:
            mark = row.get(key) if isinstance(row, dict) else None
            if mark is None or mark not in seen:
                seen.add(mark)
                rows.append(row)
        offset += len(data)
        if len(data) < size:
            break
    return rows[:limit] if limit is not None else rows


def _replay_id_argument(value: Any) -> str:
    """A replay id given to ``replay_receipt()`` or ``audit(replay_id=)``, checked before any
    request. The server reads an empty ``replayId`` as no filter at all, so ``None`` or ``""``
    (an unset variable, an empty cell) gave the whole audit log as if it were that replay's."""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise ValidationError(
            f"{value!r:.40} ({type(value).__name__}) is not a replay id",
            code="BAD_ID",
            hint="pass the replayId of a replay (run.replay_id, or a row of p.replays()); "
            "p.audit() without replay_id= gives every event",
            details={"field": "replay_id"},
        )
    return value


def op_replay_receipt(session: Session, replay_id: Any, now: datetime) -> Op[list[dict[str, Any]]]:
    """The audit events of one replay. A replay always has at least its ``REPLAY_REQUESTED``
    event, which its requester may read (``audit:read-own``, DESIGN.md section 7), so no events
    means the id names no replay the caller may read: an exchange or execution id passed by
    mistake gave ``[]``, an empty receipt a ticket could cite as if the replay left no trace.
    Only then are the exchange's replays (``GET /replays``) or the execution (``GET
    /executions/{id}``) looked up, to name the id to pass instead."""
    replay_id = _replay_id_argument(replay_id)  # None or "": no filter at all on the server
    params = _audit_params({"replay_id": replay_id}, now)
    events = yield from op_pages(
        session, "/admin/audit", params, page_size=MAX_PAGE_SIZE, limit=None, key="eventId"
    )
    if events:
        return events
    what = f"no audit events of a replay {replay_id!r} that you may read"
    hint = (
        "pass the replayId of one of your replays (run.replay_id, or a row of p.replays()); "
        "another user's replay needs audit:read"
    )
    try:
        replays = yield from op_pages(
            session, "/replays", {"sourceExchangeId": replay_id}, page_size=5, limit=5, key="replayId"
        )
    except ApiError:
        replays = []  # no executions:read: the generic answer stands
    if replays:
        ids = ", ".join(repr(r["replayId"]) for r in replays)
        what += f": that is an exchange id; its newest replays you may read are {ids}"
        hint = (
            f"p.replay_receipt({replays[0]['replayId']!r}); "
            f"p.replays(source_exchange_id={replay_id!r}) lists them all"
        )
    else:
        execution, kind = None, "execution"
        try:
            execution = yield from op_execution(session, replay_id)
        except NotFound:
            try:  # an exchange id: of a recorded exchange, or of a replay's run
                found = yield from op_source_execution_id(session, replay_id)
                execution, kind = (yield from op_execution(session, found)), "exchange"
            except ApiError:
                pass
        except ApiError:
            pass
        if execution is not None and execution.replay_id:
            what += f": that is the {kind} id of replay {execution.replay_id!r}"
            hint = f"p.replay_receipt({execution.replay_id!r}) (your replay, or any with audit:read)"
        elif execution is not None:
            what += (
                ": that is the id of a recorded exchange"
                if kind == "exchange"
                else f": that is the execution id of the recorded exchange {execution.exchange_id!r}"
            ) + ", not of a replay, and you have no replays of it"
            hint = f"p.replays(source_exchange_id={execution.exchange_id!r}) lists your replays of it"
    # A conclusion from reads that answered 200, not an answer of 404: no "HTTP 404" in it.
    raise NotFound(what, hint=hint, details={"field": "replay_id"})


def _audit_params(filters: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    names = {"action": "action", "actor": "actor", "replay_id": "replayId", "offset": "offset"}
    params: dict[str, Any] = {}
    for key, value in filters.items():
        if value is None:
            continue
        if key == "replay_id":
            value = _replay_id_argument(value)
        if key in ("since", "time_from", "from_"):
            params["from"] = instant(key, value, now)
        elif key in ("until", "time_to", "to"):
            params["to"] = instant(key, value, now)
        elif key in names:
            params[names[key]] = value
        else:
            raise ValidationError(
                f"audit() has no filter {key!r}",
                code="UNKNOWN_FILTER",
                hint="filters: action, actor, replay_id, since/time_from, until/time_to, offset, limit",
            )
    return params


@dataclass(frozen=True)
class AuditBundle:
    """An audit export (``GET /admin/audit/export``): ``{events, checkpoints, publicKeys}``.

    :meth:`verify` checks it offline with :func:`moat_nb.audit.verify_bundle`; pass the keys you
    trust (the server's published key) as ``public_keys``, else the bundle's own keys are used,
    which proves it consistent but not who signed it.
    """

    data: dict[str, Any]

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.data.get("events") or [])

    @property
    def checkpoints(self) -> list[dict[str, Any]]:
        return list(self.data.get("checkpoints") or [])

    def verify(self, public_keys: Any = None) -> audit_core.VerifyResult:
        """The offline verification result (``.ok``, ``.first_bad_seq``, ``.reason``)."""
        return audit_core.verify_bundle(self.data, public_keys)

    def frame(self, backend: Backend = "pandas") -> Any:
        """The bundle's events as a frame of :data:`~moat_nb.frames.AUDIT_SCHEMA`."""
        return audit_frame(self.events, backend)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the bundle as JSON (what ``moat-nb audit verify BUNDLE`` reads)."""
        # "~/bundle.json" is in the home folder, as export() and pandas' writers read it: it
        # was written into a folder named "~" under the working directory, or failed without one.
        target = Path(path).expanduser()
        target.write_text(json.dumps(self.data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return target

    def __repr__(self) -> str:
        return f"<AuditBundle {len(self.events)} events, {len(self.checkpoints)} checkpoints>"


# --------------------------------------------------------------------------- transports


@dataclass(frozen=True)
class RetryPolicy:
    """Resending after a network failure: ``attempts`` more tries, ``backoff`` × 2^n seconds
    apart (at most ``max_delay``). Every request of this client is safe to resend: reads, and a
    ``POST /replays`` that carries the same Idempotency-Key (section 4)."""

    attempts: int = 3
    backoff: float = 0.2
    max_delay: float = 5.0

    def delay(self, failures: int) -> float | None:
        """Seconds to wait after the ``failures``-th failure in a row; None: give up."""
        if failures > self.attempts:
            return None
        return min(self.max_delay, self.backoff * 2 ** (failures - 1))


def transport_error(exc: Exception, request: httpx.Request | None, attempts: int) -> TransportError:
    where = f"{request.method} {request.url}" if request is not None else "the platform"
    return TransportError(
        f"{where} failed after {attempts} attempt(s): {type(exc).__name__}: {exc}",
        hint="is the platform running and MOAT_URL right? (moat-nb sandbox starts one locally)",
        details={"url": str(request.url) if request is not None else None},
    )


def _credentials(
    url: str | None, username: str | None, password: str | None, token: str | None
) -> tuple[str, str | None, str | None, str | None]:
    """Arguments first; else ``MOAT_URL`` and ``MOAT_TOKEN`` or ``MOAT_USER``/``MOAT_PASSWORD``
    (section 6: credentials reach notebooks through the environment, never parameters)."""
    env = os.environ
    url = url or env.get("MOAT_URL")
    if not url:
        raise ValidationError(
            "no platform URL", code="NO_URL", hint="pass url= or set MOAT_URL (moat-nb sandbox prints it)"
        )
    if token is not None and isinstance(token, str) and not token.strip() and username and password:
        token = None  # token=os.environ.get("MOAT_TOKEN", "") beside a password: the password
    if token is not None and (not isinstance(token, str) or not token.strip()):
        # An unset variable read as "" (os.environ.get("X", "")) would log in as nobody, and
        # fail only at the first call: connect promises to fail here.
        raise AuthenticationError(
            f"token= is {'empty' if isinstance(token, str) else f'a {type(token).__name__}, not a str'}",
            code="NO_CREDENTIALS",
            hint="pass the token itself (a str), or leave token= out to use username= and password= "
            "or MOAT_TOKEN",
        )
    if token is None and not (username and password):
        if username is None and password is None and env.get("MOAT_TOKEN"):
            token = env["MOAT_TOKEN"]
        else:
            username = username or env.get("MOAT_USER")
            password = password or env.get("MOAT_PASSWORD")
    if token is None and not (username and password):
        raise AuthenticationError(
            "no credentials",
            code="NO_CREDENTIALS",
            hint="pass username= and password= or token=, or set MOAT_USER and MOAT_PASSWORD or MOAT_TOKEN",
        )
    return url, username, password, token


def _closed_error(again: str) -> MoatError:
    return MoatError(
        "this platform was closed (close(), or the end of its `with` block): it sends no more requests",
        code="CLIENT_CLOSED",
        hint=f"connect again with {again}",
    )


class _Client(httpx.Client):
    """``httpx.Client`` whose ``send`` after ``close()`` raises :class:`MoatError`
    ``CLIENT_CLOSED`` in words instead of httpx's bare ``RuntimeError``: a notebook cell run
    after the ``with connect(...) as p:`` cell ended is common. Checked here, where every request
    goes (the platform's own calls and the trace streams of its replay runs)."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if self.is_closed:
            raise _closed_error("moat_nb.connect(...)")
        return super().send(request, **kwargs)


class _AsyncClient(httpx.AsyncClient):
    """:class:`_Client` for :class:`AsyncPlatform`: ``CLIENT_CLOSED`` after ``aclose()``."""

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if self.is_closed:
            raise _closed_error("moat_nb.AsyncPlatform(...)")
        return await super().send(request, **kwargs)


class _Common:
    """What both platforms share: the session and the pure parts of each method."""

    session: Session
    retry: RetryPolicy

    @property
    def url(self) -> str:
        return self.session.url

    @property
    def user(self) -> dict[str, Any] | None:
        """``{username, roles, permissions}`` once logged in with a password."""
        return self.session.user

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.session.url} user={(self.user or {}).get('username')}>"

    @staticmethod
    def _now() -> datetime:
        return datetime.now(UTC)

    def _search(self, body: dict[str, Any]) -> Op[dict[str, Any]]:
        return op_search_page(self.session, body)

    def _history_args(
        self, filters: dict[str, Any], limit: int | None, max_rows: int | None, page_size: int
    ) -> dict[str, Any]:
        return {
            "filters": search_filters(filters, self._now()),
            "limit": limit,
            "max_rows": max_rows,
            "page_size": page_size,
        }

    def _replay_op(self, source: Any, kw: dict[str, Any]) -> Op[dict[str, Any]]:
        if not isinstance(kw.get("reason"), str) or not kw["reason"].strip():
            raise ValidationError(
                "a replay needs a reason",
                code="VALIDATION",
                hint="pass reason='why you replay it' (1-500 characters)",
            )
        # A fresh key per call, the same for every resend of this call (section 4).
        return op_replay(self.session, source, key=uuid.uuid4().hex, **kw)


class Platform(_Common):
    """A Cameleer (or sandbox) platform, over a blocking ``httpx.Client``.

    ``Platform(url, username=, password=)`` or ``token=``; missing arguments are read from
    ``MOAT_URL``, ``MOAT_USER``, ``MOAT_PASSWORD``, ``MOAT_TOKEN``. Nothing is sent until the
    first call (:func:`connect` logs in at once, to fail early on a wrong password).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float | None = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        session: Session | None = None,
        stream_policy: StreamPolicy | None = None,
    ) -> None:
        if session is None:
            url, username, password, token = _credentials(url, username, password, token)
            session = Session(url, username=username, password=password, token=token, timeout=timeout)
        self.session = session
        self.retry = retry or RetryPolicy()
        #: How replay traces are read (ping interval, resume attempts); None: the defaults.
        self.stream_policy = stream_policy
        self._client = _Client(transport=transport, timeout=session.timeout)
        self._sleep: Callable[[float], None] = time.sleep

    # ---------------------------------------------------------------- driver

    def _run(self, op: Op[T]) -> T:
        """Drive a core operation: send what it yields, hand back the answers."""
        try:
            request = next(op)
            while True:
                request = op.send(self._send(request))
        except StopIteration as stop:
            return stop.value
        finally:
            op.close()

    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        failures = 0
        while True:
            try:
                return self._client.send(request, stream=stream)
            except httpx.TransportError as exc:
                failures += 1
                delay = self.retry.delay(failures)
                if delay is None:
                    raise transport_error(exc, request, failures) from exc
                self._sleep(delay)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _twin(self) -> AsyncPlatform:
        """An AsyncPlatform on the same session (tokens), for ``ReplayRun.live()``."""
        return AsyncPlatform(session=self.session, retry=self.retry, stream_policy=self.stream_policy)

    # ---------------------------------------------------------------- API

    def login(self) -> dict[str, Any]:
        """Log in now (``connect`` does); the user's ``{username, roles, permissions}``. With an
        access token alone, one small authorised read checks the address and the token."""
        if self.session.refresh_token is not None and not self.session.username:
            self._run(self.session.renew())
        elif self.session.username:
            self._run(self.session.login())
        elif self.session.access_token is not None:
            self._run(op_check_token(self.session))
        return self.session.user or {}

    def health(self) -> dict[str, Any]:
        return self._run(self.session.call("GET", "/health"))

    def executions(
        self,
        *,
        limit: int | None = None,
        max_rows: int | None = DEFAULT_MAX_ROWS,
        page_size: int = DEFAULT_PAGE_SIZE,
        **filters: Any,
    ) -> History:
        """Executions matching ``filters`` (section 4, snake_case; ``since="24h"``, lists), paged
        lazily. ``limit``: rows wanted at most; ``page_size``: rows per request (≤ 1000);
        ``max_rows``: frames refuse a larger result (use :meth:`export`)."""
        return History(self._run, self._search, **self._history_args(filters, limit, max_rows, page_size))

    def execution(self, execution_id: str | Execution | Any) -> Execution:
        """One execution with its detail fields and processors (of an id, an Execution or a row of
        an executions frame, as :meth:`processors` and :meth:`replay` take)."""
        return self._run(op_execution(self.session, _execution_id(execution_id)))

    def processors(self, execution: Execution | str | Any, backend: Backend = "pandas") -> Any:
        """The processors frame of an execution (id, Execution or a row of an executions frame;
        fetched when needed)."""
        ident, full = _processors_source(execution)
        return processors_frame(full if full is not None else self.execution(ident), backend)

    def export(
        self,
        filters: Mapping[str, Any] | None,
        path: str | os.PathLike[str],
        *,
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Path:
        """Write the executions matching ``filters`` to a Parquet file page by page (memory holds
        one page), for analyses larger than memory: ``polars.scan_parquet(path)``. The file
        appears whole or not at all: a failed export leaves ``path`` as it was."""
        history = self.executions(limit=limit, max_rows=None, page_size=page_size, **_export_filters(filters))
        with _parquet_export(path) as (writer, target):
            for table in history.pages():
                writer.write_table(table)
        return target

    def replay(
        self,
        source: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        body: Any = None,
        properties: Mapping[str, Any] | None = None,
        target_environment: str | None = None,
        target_agent: str | None = None,
        reason: str,
        client: str | None = CLIENT,
    ) -> ReplayRun:
        """Replay ``source`` (an exchange id, an Execution or a frame row) with a modified payload.

        ``headers``/``properties`` replace the original's whole; a dict ``body`` is written as the
        original's content type (JSON for JSON). Returns a :class:`~moat_nb.stream.ReplayRun`.
        """
        kw = {
            "headers": headers,
            "body": body,
            "properties": properties,
            "target_environment": target_environment,
            "target_agent": target_agent,
            "reason": reason,
            "client": client,
        }
        replay = self._run(self._replay_op(source, kw))
        from .stream import ReplayRun  # stream.py builds on this module

        return ReplayRun(replay, platform=self)

    def replay_run(self, replay_id: str) -> ReplayRun:
        """A :class:`~moat_nb.stream.ReplayRun` for an existing replay (to follow or re-read it)."""
        from .stream import ReplayRun

        return ReplayRun(self.get_replay(replay_id), platform=self)

    def get_replay(self, replay_id: str) -> dict[str, Any]:
        """The Replay resource (section 4)."""
        return self._run(self.session.call("GET", f"/replays/{self.session.quote(replay_id, 'replay id')}"))

    def replays(self, *, limit: int | None = 100, **filters: Any) -> list[dict[str, Any]]:
        """Replays (``source_exchange_id=``, ``requested_by=``, ``status=`` one or a list), newest
        first."""
        params = _query_filters("replays", filters, several=_REPLAY_LISTS)
        return self._run(
            op_pages(self.session, "/replays", params, page_size=100, limit=limit, key="replayId")
        )

    def agents(self, **filters: Any) -> list[dict[str, Any]]:
        """Connected agents (``environment=``, ``status=``)."""
        return self._run(self.session.call("GET", "/agents", params=_query_filters("agents", filters)))

    def audit(self, *, limit: int | None = None, backend: Backend = "pandas", **filters: Any) -> Any:
        """Audit events (``action=``, ``actor=``, ``replay_id=``, ``since=``/``until=``) as a frame."""
        params = _audit_params(filters, self._now())
        rows = self._run(
            op_pages(
                self.session, "/admin/audit", params, page_size=MAX_PAGE_SIZE, limit=limit, key="eventId"
            )
        )
        return audit_frame(rows, backend)

    def replay_receipt(self, replay_id: str) -> list[dict[str, Any]]:
        """The audit events of one replay (its audit record), in seq order, as the server has them."""
        return self._run(op_replay_receipt(self.session, replay_id, self._now()))

    def audit_verify(self) -> dict[str, Any]:
        """The server's own check of its audit log (``GET /admin/audit/verify``)."""
        return self._run(self.session.call("GET", "/admin/audit/verify"))

    def audit_bundle(self, *, since: Any = None, until: Any = None) -> AuditBundle:
        """An offline-verifiable export of the audit log (``GET /admin/audit/export``)."""
        params = _audit_params({"since": since, "until": until}, self._now())
        return AuditBundle(self._run(self.session.call("GET", "/admin/audit/export", params=params)))


class AsyncPlatform(_Common):
    """:class:`Platform` over ``httpx.AsyncClient``: the same methods, awaited
    (``await p.execution(id)``, ``await p.executions(...).to_pandas()``, ``async with``)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float | None = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        session: Session | None = None,
        stream_policy: StreamPolicy | None = None,
    ) -> None:
        if session is None:
            url, username, password, token = _credentials(url, username, password, token)
            session = Session(url, username=username, password=password, token=token, timeout=timeout)
        self.session = session
        self.retry = retry or RetryPolicy()
        #: How replay traces are read (ping interval, resume attempts); None: the defaults.
        self.stream_policy = stream_policy
        self._client = _AsyncClient(transport=transport, timeout=session.timeout)
        self._sleep: Callable[[float], Awaitable[None]] = anyio.sleep

    async def _run(self, op: Op[T]) -> T:
        try:
            request = next(op)
            while True:
                request = op.send(await self._send(request))
        except StopIteration as stop:
            return stop.value
        finally:
            op.close()

    async def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        failures = 0
        while True:
            try:
                return await self._client.send(request, stream=stream)
            except httpx.TransportError as exc:
                failures += 1
                delay = self.retry.delay(failures)
                if delay is None:
                    raise transport_error(exc, request, failures) from exc
                await self._sleep(delay)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AsyncPlatform:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _twin(self) -> Platform:
        return Platform(session=self.session, retry=self.retry, stream_policy=self.stream_policy)

    async def login(self) -> dict[str, Any]:
        if self.session.refresh_token is not None and not self.session.username:
            await self._run(self.session.renew())
        elif self.session.username:
            await self._run(self.session.login())
        elif self.session.access_token is not None:
            await self._run(op_check_token(self.session))
        return self.session.user or {}

    async def health(self) -> dict[str, Any]:
        return await self._run(self.session.call("GET", "/health"))

    def executions(
        self,
        *,
        limit: int | None = None,
        max_rows: int | None = DEFAULT_MAX_ROWS,
        page_size: int = DEFAULT_PAGE_SIZE,
        **filters: Any,
    ) -> AsyncHistory:
        return AsyncHistory(
            self._run, self._search, **self._history_args(filters, limit, max_rows, page_size)
        )

    async def export(
        self,
        filters: Mapping[str, Any] | None,
        path: str | os.PathLike[str],
        *,
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Path:
        """:meth:`Platform.export`: the matching executions to a Parquet file, page by page,
        whole or not at all."""
        history = self.executions(limit=limit, max_rows=None, page_size=page_size, **_export_filters(filters))
        with _parquet_export(path) as (writer, target):
            async for table in history.pages():
                writer.write_table(table)
        return target

    async def execution(self, execution_id: str | Execution | Any) -> Execution:
        return await self._run(op_execution(self.session, _execution_id(execution_id)))

    async def processors(self, execution: Execution | str | Any, backend: Backend = "pandas") -> Any:
        ident, full = _processors_source(execution)
        return processors_frame(full if full is not None else await self.execution(ident), backend)

    async def replay(
        self,
        source: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        body: Any = None,
        properties: Mapping[str, Any] | None = None,
        target_environment: str | None = None,
        target_agent: str | None = None,
        reason: str,
        client: str | None = CLIENT,
    ) -> ReplayRun:
        kw = {
            "headers": headers,
            "body": body,
            "properties": properties,
            "target_environment": target_environment,
            "target_agent": target_agent,
            "reason": reason,
            "client": client,
        }
        replay = await self._run(self._replay_op(source, kw))
        from .stream import ReplayRun

        return ReplayRun(replay, aplatform=self)

    async def replay_run(self, replay_id: str) -> ReplayRun:
        from .stream import ReplayRun

        return ReplayRun(await self.get_replay(replay_id), aplatform=self)

    async def get_replay(self, replay_id: str) -> dict[str, Any]:
        return await self._run(
            self.session.call("GET", f"/replays/{self.session.quote(replay_id, 'replay id')}")
        )

    async def replays(self, *, limit: int | None = 100, **filters: Any) -> list[dict[str, Any]]:
        params = _query_filters("replays", filters, several=_REPLAY_LISTS)
        return await self._run(
            op_pages(self.session, "/replays", params, page_size=100, limit=limit, key="replayId")
        )

    async def agents(self, **filters: Any) -> list[dict[str, Any]]:
        return await self._run(self.session.call("GET", "/agents", params=_query_filters("agents", filters)))

    async def audit(self, *, limit: int | None = None, backend: Backend = "pandas", **filters: Any) -> Any:
        params = _audit_params(filters, self._now())
        rows = await self._run(
            op_pages(
                self.session, "/admin/audit", params, page_size=MAX_PAGE_SIZE, limit=limit, key="eventId"
            )
        )
        return audit_frame(rows, backend)

    async def replay_receipt(self, replay_id: str) -> list[dict[str, Any]]:
        return await self._run(op_replay_receipt(self.session, replay_id, self._now()))

    async def audit_verify(self) -> dict[str, Any]:
        return await self._run(self.session.call("GET", "/admin/audit/verify"))

    async def audit_bundle(self, *, since: Any = None, until: Any = None) -> AuditBundle:
        params = _audit_params({"since": since, "until": until}, self._now())
        return AuditBundle(await self._run(self.session.call("GET", "/admin/audit/export", params=params)))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


#: ``replays()`` filters the API takes comma-separated (``GET /replays`` ``status``: "one or several").
_REPLAY_LISTS = frozenset({"status"})


def _query_filters(
    call: str, filters: Mapping[str, Any], *, several: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The query parameters of ``replays()`` / ``agents()`` (camelCase), one value each.

    httpx sends a list as the parameter repeated, and the server keeps only the last one: a
    list gave the rows of its last value as if they were all of them. A filter the API takes
    comma-separated (``several``: ``GET /replays?status=COMPLETED,ERROR``) is joined so; any
    other non-scalar value is refused before any request."""
    params: dict[str, Any] = {}
    for key, value in filters.items():
        name = _camel(key)
        # A value from a frame: a numpy scalar (.item()) or a pyarrow one (.as_py()) is its
        # Python value, as it was sent before these checks (found by review).
        for method in ("as_py", "item"):
            convert = getattr(value, method, None)
            if callable(convert) and not isinstance(value, list | tuple | set | frozenset | dict):
                try:
                    value = convert()
                except (TypeError, ValueError):
                    pass
                break
        if value is None or isinstance(value, str | int | float):
            params[name] = value
            continue
        many = isinstance(value, list | tuple | set | frozenset)
        if many and not value:
            continue  # an empty list selects nothing in particular: no filter, as httpx sent it
        if name in several and many and value and all(isinstance(v, str) for v in value):
            params[name] = ",".join(value)
            continue
        if name in several:
            message = f"{call}({key}=...) takes a string or a non-empty list of strings, not {value!r:.60}"
        else:
            message = f"{call}({key}=...) takes one value, not a {type(value).__name__}" + (
                " (the platform would keep only the last one)" if many else ""
            )
        raise ValidationError(
            message,
            code="BAD_FILTER",
            hint=f"one value per filter: call {call}() once per value and concatenate the results, "
            f"e.g. [row for v in values for row in p.{call}({key}=v)]",
            details={"filter": key},
        )
    return params


def connect(
    url: str | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    timeout: float | None = 30.0,
) -> Platform:
    """A logged-in :class:`Platform` (DESIGN.md section 9). Missing arguments come from
    ``MOAT_URL``, ``MOAT_USER``, ``MOAT_PASSWORD``, ``MOAT_TOKEN``. Logs in at once, so that a
    wrong URL or password fails here, in words, and not at the first query."""
    platform = Platform(url, username=username, password=password, token=token, timeout=timeout)
    try:
        platform.login()
    except MoatError:
        platform.close()
        raise
    return platform
