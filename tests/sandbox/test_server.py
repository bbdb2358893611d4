"""The sandbox HTTP API against a real uvicorn on 127.0.0.1 (DESIGN.md sections 4-6).

One server for the module (port 0, background thread), with hand-built chunks posted by two
agents registered over HTTP; httpx clients; no mocks of our own parts.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from moat_nb.model import Chunk, Execution, ProcessorRecord
from moat_nb.payload import ALONE_BELOW, collecting, redact_body, redact_mapping, scrub_body
from moat_nb.sandbox.apps.orders import APP
from moat_nb.sandbox.openapi import API_PREFIX, PUBLIC, Operation
from moat_nb.sandbox.security import DEFAULT_USERS_TOML, LoginGuard, Redactor, TraceSecrets, verify_command
from moat_nb.sandbox.server import (
    ServerThread,
    _check_routes,
    create_app,
    may_hold_secret_names,
    redact_chunk,
    share_maps,
)
from moat_nb.sandbox.state import SandboxState, ServerConfig
from moat_nb.sandbox.store import MAX_TEXT_CHARS

USERS = ("admin", "operator", "prod-operator", "analyst", "nobody")
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
SECRET = "Bearer s3cr3t-value-9f8e7d"


async def _boom(request: Request, principal: Any) -> Response:
    raise RuntimeError("a bug with a secret stack trace")


BOOM = Operation(
    "GET",
    "/test/boom",
    _boom,
    access=PUBLIC,
    operation_id="boom",
    summary="raises",
    responses={200: ("never", None)},
)


class Sandbox:
    """The running server plus what the tests need to talk to it."""

    def __init__(self, tmp: Path) -> None:
        users_file = tmp / "users.toml"
        users_file.write_text(
            DEFAULT_USERS_TOML + '\n[users.nobody]\npassword = "nobody-pw"\nroles = []\n', encoding="utf-8"
        )
        config = ServerConfig(ping_interval=0.3, send_timeout=1.0, chunk_buffer=1, retry_after=2)
        self.state = SandboxState.create(tmp / "data", users_file=users_file, app=APP, seed=1, config=config)
        self.app = create_app(self.state, extra_operations=[BOOM])
        self.server = ServerThread(self.app).start()
        self.url = self.server.url + API_PREFIX
        self.http = httpx.Client(base_url=self.url, timeout=10)
        self.tokens: dict[str, str] = {}
        for user in USERS:
            password = "nobody-pw" if user == "nobody" else user
            r = self.http.post("/auth/login", json={"username": user, "password": password})
            assert r.status_code == 200, r.text
            self.tokens[user] = r.json()["accessToken"]
        self.agent_tokens: dict[str, dict[str, Any]] = {}
        for env in ("dev", "prod"):
            r = self.http.post(
                "/agents/register",
                headers=self.bootstrap(),
                json={
                    "instanceId": f"agent-{env}",
                    "displayName": f"Orders {env}",
                    "applicationId": "orders",
                    "environmentId": env,
                    "routeVersion": "v1",
                    "routeIds": ["order-intake"],
                    "capabilities": ["replay"],
                },
            )
            assert r.status_code == 200, r.text
            self.agent_tokens[env] = r.json()
        for i in range(3):
            self.post_chunk(
                "dev", make_chunk(f"exec-dev-{i}", f"ex-dev-{i}", status="FAILED" if i == 2 else "COMPLETED")
            )
        self.post_chunk("prod", make_chunk("exec-prod-0", "ex-prod-0"))

    def bootstrap(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.state.bootstrap_token}"}

    def auth(self, who: str) -> dict[str, str]:
        if who.startswith("agent-"):
            return {"Authorization": f"Bearer {self.agent_tokens[who.removeprefix('agent-')]['accessToken']}"}
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def post_chunk(self, env: str, chunk: dict[str, Any], **headers: str) -> httpx.Response:
        h = {**self.auth(f"agent-{env}"), "X-Cameleer-Protocol-Version": "1", **headers}
        r = self.http.post("/data/chunks", json=chunk, headers=h)
        return r

    def close(self) -> None:
        self.http.close()
        self.server.stop()
        self.state.close()


def make_chunk(
    execution_id: str,
    exchange_id: str,
    *,
    status: str = "COMPLETED",
    headers: dict[str, Any] | None = None,
    environment: str | None = None,
) -> dict[str, Any]:
    headers = (
        headers if headers is not None else {"Content-Type": "application/json", "Authorization": SECRET}
    )
    procs = tuple(
        ProcessorRecord(
            execution_id=execution_id,
            exchange_id=exchange_id,
            seq=seq,
            parent_seq=None if seq == 1 else 1,
            processor_id=pid,
            processor_type=kind,
            route_id="order-intake",
            status="COMPLETED",
            start_time=T0 + timedelta(milliseconds=seq),
            end_time=T0 + timedelta(milliseconds=seq + 1),
            duration_ms=1.0,
            depth=0 if seq == 1 else 1,
            input_body='{"orderId": "o-1"}',
            output_body='{"orderId": "o-1", "total": 10}',
            input_headers=dict(headers),
            output_headers=dict(headers),
            properties={"dbPassword": "hunter2", "region": "eu"},
        )
        for seq, pid, kind in ((1, "choice1", "choice"), (2, "setBody2", "setBody"))
    )
    execution = Execution(
        execution_id=execution_id,
        exchange_id=exchange_id,
        route_id="order-intake",
        status=status,
        route_version="v1",
        application_id="orders",
        environment=environment,
        start_time=T0,
        end_time=T0 + timedelta(milliseconds=5),
        duration_ms=5.0,
        processor_count=2,
        error_type="ValidationException" if status == "FAILED" else None,
        input_body='{"orderId": "o-1"}',
        output_body='{"orderId": "o-1", "total": 10}',
        input_headers=dict(headers),
        output_headers=dict(headers),
    )
    return Chunk(execution_id, exchange_id, 0, final=True, execution=execution, processors=procs).to_wire()


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sandbox = Sandbox(tmp_path_factory.mktemp("server"))
    yield sandbox
    sandbox.close()


def refusal(r: httpx.Response) -> tuple[int, str]:
    """``(status, error code)`` of an error answer, once its body is checked to be section 4's
    envelope: exactly ``error``, ``message`` (saying something) and ``details``. Tests compare
    the pair where they stand: ``assert refusal(r) == (404, "NOT_FOUND")``."""
    try:
        body = r.json()
    except ValueError:
        raise AssertionError(f"not a JSON error envelope: {r.status_code} {r.text[:200]!r}") from None
    assert isinstance(body, dict) and set(body) == {"error", "message", "details"}, (r.status_code, body)
    assert isinstance(body["message"], str) and body["message"], body
    return r.status_code, body["error"]


def envelope(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The envelope's body, for tests that read its message or details (:func:`refusal`)."""
    got = refusal(r)
    assert got[0] == status, (r.status_code, r.text)
    if code is not None:
        assert got[1] == code, r.text
    return dict(r.json())


# --------------------------------------------------------------------------- basics


def test_health_is_public(sb: Sandbox) -> None:
    r = sb.http.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "UP"}


def test_unknown_path_and_method_use_the_envelope(sb: Sandbox) -> None:
    assert refusal(sb.http.get("/no/such/thing")) == (404, "NOT_FOUND")
    assert refusal(sb.http.delete("/health")) == (405, "METHOD_NOT_ALLOWED")


def test_unexpected_errors_are_500_without_a_trace(sb: Sandbox) -> None:
    body = envelope(sb.http.get("/test/boom"), 500, "SERVER_ERROR")
    assert "secret stack trace" not in json.dumps(body) and "Traceback" not in json.dumps(body)


# --------------------------------------------------------------------------- auth


def test_login_answers_tokens_and_the_user(sb: Sandbox) -> None:
    r = sb.http.post("/auth/login", json={"username": "prod-operator", "password": "prod-operator"})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["expiresIn"] == 3600
    assert body["user"] == {
        "username": "prod-operator",
        "roles": ["OPERATOR"],
        "permissions": ["executions:read", "audit:read-own", "replay:run", "replay:modify", "replay:prod"],
    }
    refreshed = sb.http.post("/auth/refresh", headers={"Authorization": f"Bearer {body['refreshToken']}"})
    assert refreshed.status_code == 200
    new = refreshed.json()["accessToken"]
    assert (
        sb.http.post("/search/executions", json={}, headers={"Authorization": f"Bearer {new}"}).status_code
        == 200
    )


def test_a_failed_login_is_audited_without_its_password(sb: Sandbox) -> None:
    """ASVS 4.0.3 V7.2.1: authentication decisions are logged. A wrong password (or a name that
    is no user's) left no trace: an auditor could not see someone guessing passwords."""
    before = len(sb.state.audit.events())
    tries = (("nobody", True), ("nobody-at-all", False))
    for name, _ in tries:
        r = sb.http.post(
            "/auth/login",
            json={"username": name, "password": "guess-4711"},
            headers={"User-Agent": "probe/1"},
        )
        assert refusal(r) == (401, "BAD_CREDENTIALS")
    events = sb.state.audit.events()[before:]
    assert [e["action"] for e in events] == ["LOGIN_FAILED", "LOGIN_FAILED"]
    for event, (name, known) in zip(events, tries, strict=True):
        if known:
            assert event["actor"] == {"username": name, "roles": [], "permissions": []}
        else:
            assert event["actor"]["username"].startswith("unknown#")  # the next test says why
        assert event["outcome"] == "DENIED" and event["detail"]["code"] == "BAD_CREDENTIALS"
        assert event["detail"]["known"] is known and "retryAfter" not in event["detail"]
        assert event["source"]["ip"] == "127.0.0.1" and event["source"]["userAgent"] == "probe/1"
        assert "guess-4711" not in json.dumps(event)  # never the password (ASVS 16.2.5)
    sb.state.login_guard.succeeded("nobody")  # the shared sandbox's other tests log in as it
    # A right password is not an event of its own (no flood of routine logins in the chain).
    before = len(sb.state.audit.events())
    assert (
        sb.http.post("/auth/login", json={"username": "nobody", "password": "nobody-pw"}).status_code == 200
    )
    assert len(sb.state.audit.events()) == before


def test_an_unknown_user_name_is_audited_as_a_fingerprint_not_in_clear(sb: Sandbox) -> None:
    """Review finding: a password typed into the user-name field was written verbatim to the
    immutable audit log (LOGIN_FAILED's actor). OWASP's Logging Cheat Sheet: do not log it.
    A name that is no user's is now a keyed fingerprint and its length; the same name gives
    the same fingerprint (an auditor still sees one name tried again and again, and filters
    on it), another name another; a user's own name stays readable."""
    secret = "Tr0ub4dor&3-correct-horse"
    before = len(sb.state.audit.events())
    for name in (secret, secret, "Tr0ub4dor&3-other", "nobody"):
        r = sb.http.post("/auth/login", json={"username": name, "password": "wrong"})
        assert refusal(r) == (401, "BAD_CREDENTIALS")
    sb.state.login_guard.succeeded("nobody")  # the shared sandbox's other tests log in as it
    events = sb.state.audit.events()[before:]
    assert [e["action"] for e in events] == ["LOGIN_FAILED"] * 4
    assert secret not in json.dumps(events) and "Tr0ub4dor" not in json.dumps(events)
    first, again, other, user = events
    fp = first["detail"]["nameFingerprint"]
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    assert first["actor"] == {"username": f"unknown#{fp}", "roles": [], "permissions": []}
    assert first["detail"]["nameLength"] == len(secret) and first["detail"]["known"] is False
    assert again["actor"] == first["actor"] and other["actor"] != first["actor"]
    assert user["actor"]["username"] == "nobody" and "nameFingerprint" not in user["detail"]
    # The audit query (and so the audit browser's actor filter) finds the repeats by it.
    admin = {
        "Authorization": f"Bearer {sb.state.authority.issue_tokens('admin', sb.state.clock())['accessToken']}"
    }
    r = sb.http.get(
        "/admin/audit", params={"actor": f"unknown#{fp}", "action": "LOGIN_FAILED"}, headers=admin
    )
    assert r.status_code == 200, r.text
    assert [e["eventId"] for e in r.json()["data"]] == [first["eventId"], again["eventId"]]


def test_repeated_failed_logins_make_the_name_wait(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anti-automation (ASVS 4.0.3 V2.2.1): logins were unlimited, so a password could be guessed
    at the rate scrypt allows (~14/s per core) for ever. Now the name waits once it has failed
    ``login_attempts`` times in the window, even with the right password, and says how long."""
    now = [1000.0]
    guard = LoginGuard(attempts=3, window=60.0, clock=lambda: now[0])
    monkeypatch.setattr(sb.state, "login_guard", guard)
    wrong = {"username": "nobody", "password": "wrong"}
    before = len(sb.state.audit.events())
    for _ in range(3):
        assert refusal(sb.http.post("/auth/login", json=wrong)) == (401, "BAD_CREDENTIALS")
        now[0] += 1
    events = sb.state.audit.events()[before:]
    assert [e["detail"].get("retryAfter") for e in events] == [None, None, 58]  # the third starts it
    r = sb.http.post("/auth/login", json={"username": "nobody", "password": "nobody-pw"})
    assert refusal(r) == (429, "TOO_MANY_ATTEMPTS")
    assert r.headers["retry-after"] == "57" and r.json()["details"]["retryAfter"] == 57
    assert "57 s" in r.json()["message"] and r.json()["details"]["hint"]
    assert len(sb.state.audit.events()) == before + 3  # a refused retry is not written one by one
    # Other names are not held up by this one's failures ...
    assert sb.http.post("/auth/login", json={"username": "analyst", "password": "analyst"}).status_code == 200
    # ... and once the first failure leaves the window, the right password works again.
    now[0] = 1000.0 + 60.0
    assert (
        sb.http.post("/auth/login", json={"username": "nobody", "password": "nobody-pw"}).status_code == 200
    )


def test_concurrent_failed_logins_get_no_more_guesses_than_the_limit(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: the guard was checked before the password and counted after it, so
    logins sent together all passed the check before any failure was counted: 30 concurrent
    guesses were all checked (30 x 401) with a limit of 3."""
    import asyncio
    from collections import Counter

    guard = LoginGuard(attempts=3, window=60.0)
    monkeypatch.setattr(sb.state, "login_guard", guard)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=sb.url, timeout=30) as client:
            return await asyncio.gather(
                *[
                    client.post("/auth/login", json={"username": "nobody", "password": f"g{i}"})
                    for i in range(30)
                ]
            )

    codes = Counter(r.status_code for r in asyncio.run(burst()))
    assert codes == {401: 3, 429: 27}, codes
    # A right password does not count against its address; a refused one is not a guess.
    guard = LoginGuard(attempts=1, window=60.0)
    monkeypatch.setattr(sb.state, "login_guard", guard)
    for _ in range(10):
        assert (
            sb.http.post("/auth/login", json={"username": "analyst", "password": "analyst"}).status_code
            == 200
        )
    assert not guard._failures


def test_concurrent_right_logins_of_one_name_are_not_refused(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: a login was counted as a failure until its password proved right, so
    more than ``login_attempts`` right logins of one name within one scrypt time (~70 ms: a
    notebook's parallel workers starting together) got 429 TOO_MANY_ATTEMPTS. A login in
    flight now holds a slot, not a failure: the others wait for a slot and all get in."""
    import asyncio
    from collections import Counter

    guard = LoginGuard(attempts=3, window=60.0)
    monkeypatch.setattr(sb.state, "login_guard", guard)

    async def burst(password: str, n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=sb.url, timeout=60) as client:
            return await asyncio.gather(
                *[
                    client.post("/auth/login", json={"username": "nobody", "password": password})
                    for _ in range(n)
                ]
            )

    asked = Counter[str]()
    begin = guard.begin

    def counted(username: str, address: str | None) -> tuple[int | None, int | None]:
        asked["begin"] += 1
        return begin(username, address)

    monkeypatch.setattr(guard, "begin", counted)
    monkeypatch.setattr("moat_nb.sandbox.server._LOGIN_RECHECK_SECONDS", 30.0)  # only wake-ups ask again
    codes = Counter(r.status_code for r in asyncio.run(burst("nobody-pw", 12)))
    assert codes == {200: 12}, codes
    assert not guard._failures and not guard._pending  # nothing counted, nothing held
    # Waiting logins are woken when a login ends, not polled (review finding: every 10 ms,
    # about a fifth of a burst's CPU): each of the 12 ends wakes each of at most 11 waiters
    # once, so at most 12 + 12 * 11 asks however slow scrypt is here (about 55 seen; polling
    # made about 300).
    assert asked["begin"] <= 12 + 12 * 11, asked
    # Wrong ones sent together still get no more checks than the limit (the other test).
    codes = Counter(r.status_code for r in asyncio.run(burst("wrong", 10)))
    assert codes == {401: 3, 429: 7}, codes
    assert not guard._pending


def test_login_errors(sb: Sandbox) -> None:
    r = sb.http.post("/auth/login", json={"username": "admin", "password": "wrong"})
    assert refusal(r) == (401, "BAD_CREDENTIALS")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert refusal(sb.http.post("/auth/login", json={"username": "admin"})) == (400, "VALIDATION")
    assert refusal(sb.http.post("/auth/login", json=["admin", "admin"])) == (400, "VALIDATION")
    # JSON may spell a lone surrogate (it was a 500 from scrypt's UTF-8 encoding): refused as
    # not I-JSON, before any handler sees it.
    lone = b'{"username": "admin", "password": "\\ud800"}'
    r = sb.http.post("/auth/login", content=lone, headers={"Content-Type": "application/json"})
    assert refusal(r) == (400, "BAD_JSON") and "lone surrogate" in r.json()["message"]


def test_a_lone_surrogate_in_any_body_is_a_400_not_a_500(sb: Sandbox) -> None:
    # Found by review: a search filter with one reached SQLite and gave 500 SERVER_ERROR.
    for name in ("environment", "routeId", "exchangeId", "replayId", "text"):
        body = b'{"' + name.encode() + b'": "\\ud800"}'
        headers = {**sb.auth("admin"), "Content-Type": "application/json"}
        r = sb.http.post("/search/executions", content=body, headers=headers)
        assert refusal(r) == (400, "BAD_JSON"), (name, r.text)


def test_refresh_needs_a_refresh_token(sb: Sandbox) -> None:
    assert refusal(sb.http.post("/auth/refresh")) == (401, "UNAUTHORIZED")
    assert refusal(sb.http.post("/auth/refresh", headers=sb.auth("admin")))[0] == 401  # an access token


def test_authentication_errors(sb: Sandbox) -> None:
    r = sb.http.post("/search/executions", json={})
    assert refusal(r) == (401, "UNAUTHORIZED")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert (
        refusal(sb.http.post("/search/executions", json={}, headers={"Authorization": "Bearer nonsense"}))[0]
        == 401
    )
    old = sb.state.authority.issue_tokens("admin", datetime.now(UTC) - timedelta(hours=2))["accessToken"]
    assert refusal(
        sb.http.post("/search/executions", json={}, headers={"Authorization": f"Bearer {old}"})
    ) == (401, "TOKEN_EXPIRED")
    assert (
        refusal(sb.http.post("/search/executions", json={}, headers={"Authorization": "Basic YTpi"}))[0]
        == 401
    )


# --------------------------------------------------------------------------- input rules


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'{"limit": 5, "limit": 6}', "duplicate-key"),
        (b'{"durationMin": NaN}', "non-finite"),
        (b'{"durationMin": Infinity}', "non-finite"),
        (b'{"durationMin": 1e999}', "non-finite"),
        (b'{"text": "' + b"[" * 0 + b'\xff"}', "utf-8"),
        (b'{"text": ' + b"[" * 65 + b"]" * 65 + b"}", "depth"),
        (b"[" * 100_000, "depth"),
        (b'{"text": ', "syntax"),
    ],
)
def test_bad_json_is_400_and_says_why(sb: Sandbox, raw: bytes, reason: str) -> None:
    r = sb.http.post(
        "/search/executions", content=raw, headers={**sb.auth("analyst"), "Content-Type": "application/json"}
    )
    body = envelope(r, 400, "BAD_JSON")
    assert body["details"]["reason"] == reason


def test_declared_oversized_body_is_413(sb: Sandbox) -> None:
    r = sb.http.post("/search/executions", content=b" " * (1 << 20 + 1), headers=sb.auth("analyst"))
    assert refusal(r) == (413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    ("method", "path", "who"),
    [
        ("POST", "/auth/refresh", None),
        ("GET", "/health", None),
        ("GET", "/api-docs", None),
        ("GET", "/agents", "analyst"),
        ("GET", "/executions/exec-dev-0", "analyst"),
        ("GET", "/admin/audit", "admin"),
        ("POST", "/agents/agent-dev/heartbeat", "agent-dev"),
    ],
)
def test_a_declared_oversized_body_is_413_where_no_body_is_read(
    sb: Sandbox, method: str, path: str, who: str | None
) -> None:
    """Section 4 "Input rules" hold for every endpoint: those that never read a body answered
    200 to a 2 MiB one (security review finding 6). Refused by its declared length, first."""
    headers = sb.auth(who) if who else {}
    r = sb.http.request(method, path, content=b" " * (2 << 20), headers=headers)
    body = envelope(r, 413, "PAYLOAD_TOO_LARGE")
    assert (body["details"]["limit"], body["details"]["declared"]) == (1 << 20, 2 << 20)
    assert sb.http.request(method, path, content=b"", headers=headers).status_code != 413


def _complete(answer: bytes) -> bool:
    """True once ``answer`` holds a whole HTTP response with a Content-Length."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def _raw_request(port: int, head: str, body_parts: Iterator[bytes], *, rcvbuf: int | None = None) -> bytes:
    """Send a request head and body parts on a raw socket (stopping quietly if the server
    closes), then read whatever the server answered."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(head.encode("latin-1"))
        for part in body_parts:
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        try:
            while not _complete(answer):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
        return answer
    finally:
        sock.close()


def test_oversized_streamed_body_is_413_before_it_ends(sb: Sandbox) -> None:
    """Chunked transfer, no Content-Length, and the body never ends: the server must answer 413
    once the limit is passed, not wait for (or buffer) the rest."""
    token = sb.tokens["analyst"]
    head = (
        f"POST {API_PREFIX}/search/executions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b" " * 65536

    def parts() -> Iterator[bytes]:
        for _ in range(24):  # 1.5 MiB, and no terminating 0-size chunk
            yield b"%x\r\n" % len(piece) + piece + b"\r\n"

    answer = _raw_request(sb.server.port or 0, head, parts())
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"PAYLOAD_TOO_LARGE" in answer


def test_header_with_control_characters_never_reaches_a_handler(sb: Sandbox) -> None:
    # h11 refuses it on the wire already (400); the app's own check (BAD_HEADER) is tested in
    # test_bodies.py. Either way, no 2xx.
    head = f"GET {API_PREFIX}/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Evil: a\x00b\r\n\r\n"
    answer = _raw_request(sb.server.port or 0, head, iter(()))
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]


def test_too_many_or_too_long_header_fields_get_431(sb: Sandbox) -> None:
    """Found probing: a 100 KB header value and 500 header fields were taken (neither uvicorn
    nor httptools bounds them). security.md section 8 "Limits": 100 fields, 8 KiB a value, on
    every request (an unknown path and a public endpoint too), 431 (RFC 6585) with the error
    envelope. Just within both limits still passes."""
    config = sb.state.config
    assert (config.max_headers, config.max_header_bytes) == (100, 8192)
    bare = httpx.Client(base_url=sb.url, timeout=10)  # httpx adds 5 fields of its own
    try:
        own = len(bare.build_request("GET", "/health").headers)
        fits = {f"X-F{i}": "v" for i in range(100 - own)}
        assert bare.get("/health", headers=fits).status_code == 200
        assert bare.get("/health", headers={"X-Big": "a" * 8192}).status_code == 200
        for path in ("/health", "/no/such/path", "/executions/exec-dev-0"):
            r = bare.get(path, headers={**fits, "X-One-More": "v"})
            assert refusal(r) == (431, "HEADERS_TOO_LARGE"), (path, r.text)
            assert r.json()["details"] == {"limit": 100, "count": 101, "hint": "send fewer header fields"}
            r = bare.get(path, headers={"X-Big": "a" * 8193})
            assert refusal(r) == (431, "HEADERS_TOO_LARGE"), path
            assert r.json()["details"]["size"] == 8193 and r.json()["details"]["header"] == "x-big"
        r = bare.post(
            "/auth/login", json={"username": "admin", "password": "admin"}, headers={"X-Big": "a" * 100_000}
        )
        assert refusal(r) == (431, "HEADERS_TOO_LARGE")
    finally:
        bare.close()
    # The sandbox's own clients are far within: the longest field is a bearer token.
    assert (
        max(len(t) for t in [*sb.tokens.values(), *(a["accessToken"] for a in sb.agent_tokens.values())])
        < 1024
    )


def test_a_loopback_sandbox_answers_only_for_loopback_host_names(sb: Sandbox) -> None:
    """DNS rebinding (found by review): a web page whose own name rebinds to 127.0.0.1 reached a
    loopback sandbox from the user's browser, same-origin in the browser's eyes, and could log
    in as admin/admin. A loopback sandbox now answers only requests naming a loopback host, on
    every path, before anything is read; 421 with the error envelope otherwise."""
    port = sb.server.port
    assert sb.state.config.allowed_hosts is None  # the default: the loopback names
    bare = httpx.Client(base_url=sb.url, timeout=10)
    try:
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST.", "localhost"):
            assert bare.get("/health", headers={"Host": host}).status_code == 200, host
        for host in (f"evil.example:{port}", "evil.example", "127.0.0.1.evil.example", "[::2]", "x"):
            for path in ("/health", "/no/such/path"):
                r = bare.get(path, headers={"Host": host})
                assert refusal(r) == (421, "HOST_NOT_ALLOWED"), (host, path, r.text)
            r = bare.post(
                "/auth/login", json={"username": "admin", "password": "admin"}, headers={"Host": host}
            )
            assert refusal(r) == (421, "HOST_NOT_ALLOWED") and "accessToken" not in r.text
            assert "allowed_hosts" in r.json()["details"]["hint"]
    finally:
        bare.close()


def test_allowed_hosts_adds_names_and_keeps_the_loopback_ones() -> None:
    from moat_nb.sandbox.runner import _hosts_answered

    given = _hosts_answered(ServerConfig(allowed_hosts=("Lab.Example.",)), "127.0.0.1").allowed_hosts
    assert given == ("lab.example", "localhost", "127.0.0.1", "::1")
    # On the network with no names given: any host (the server cannot know its names).
    assert _hosts_answered(ServerConfig(), "0.0.0.0").allowed_hosts == ("*",)
    assert _hosts_answered(ServerConfig(allowed_hosts=("*",)), "127.0.0.1").allowed_hosts == ("*",)
    assert _hosts_answered(ServerConfig(allowed_hosts=("box",)), "[::]").allowed_hosts == (
        "box",
        "localhost",
        "127.0.0.1",
        "::1",
        "::",
    )


def test_allowed_hosts_are_names_as_a_host_header_spells_them(tmp_path: Path) -> None:
    """Review finding: ServerConfig.allowed_hosts was compared as given with the Host header's
    name, which is lower case without brackets or a final dot, so a sandbox made with
    ServerConfig(allowed_hosts=("Lab.Example",)) (not through start()) answered 421 for the very
    name it was given; and a bare str, start(allowed_hosts="lab.example"), became one name per
    character (and "*" in any str, e.g. "*.example", answered every host). Names are now
    normalised where the config is made, a str is one name, and a name with a port is refused."""
    config = ServerConfig(allowed_hosts=("Lab.Example.", "[::1]"))
    assert config.allowed_hosts == ("lab.example", "::1")
    assert ServerConfig(allowed_hosts="lab.example").allowed_hosts == ("lab.example",)
    from moat_nb.sandbox.runner import _hosts_answered

    assert "lab.example" in (
        _hosts_answered(ServerConfig(allowed_hosts="lab.example"), "127.0.0.1").allowed_hosts or ()
    )
    for bad in ("lab.example:8081", "", ("ok", 3), "*.example"):
        with pytest.raises(ValueError, match="allowed_hosts"):
            ServerConfig(allowed_hosts=bad)  # type: ignore[arg-type]
    state = SandboxState.create(tmp_path / "data", app=APP, config=config)
    server = ServerThread(create_app(state)).start()
    try:
        with httpx.Client(base_url=server.url + API_PREFIX, timeout=10) as http:
            assert http.get("/health", headers={"Host": "lab.example:80"}).status_code == 200
            assert http.get("/health", headers={"Host": "[::1]:80"}).status_code == 200
            assert refusal(http.get("/health", headers={"Host": "l"})) == (421, "HOST_NOT_ALLOWED")
    finally:
        server.stop()
        state.close()


def test_a_head_that_never_ends_is_cut_off_at_the_limit(sb: Sandbox) -> None:
    """The app's check (431 above) comes once a request head has been read whole, and httptools
    reads any amount: a 20 MB header value was buffered (~80 MB more memory) and then handed on.
    The server's HTTP protocol now answers 431 and closes as soon as a head passes
    max_head_bytes (100 fields at 8 KiB + 64 KiB), without waiting for its end."""
    limit = sb.state.config.max_head_bytes
    assert limit == 100 * 8192 + 65536
    head = f"GET {API_PREFIX}/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: ".encode()
    sock = socket.create_connection(("127.0.0.1", sb.server.port or 0), timeout=5)
    try:
        sock.sendall(head + b"a" * (limit + 1 - len(head)))  # one byte over, and no end of head
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "HEADERS_TOO_LARGE"
    assert sb.http.get("/health").status_code == 200  # the server is fine


def _send_head(port: int, head: bytes) -> bytes:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    finally:
        sock.close()
    return answer


def test_the_h11_fallback_answers_an_over_long_head_as_httptools_does(tmp_path: Path) -> None:
    """Without httptools the server runs h11, which bounds the head itself but was answered by
    uvicorn with a plain-text 400 "Invalid HTTP request received.": the same request got 431
    HEADERS_TOO_LARGE under httptools and 400 under h11. Now 431 with the error envelope under
    both; h11's other protocol errors keep their 400."""
    state = SandboxState.create(tmp_path / "data", app=APP)
    servers = {http: ServerThread(create_app(state), http=http).start() for http in ("httptools", "h11")}
    try:
        limit = state.config.max_head_bytes
        start = f"GET {API_PREFIX}/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: ".encode()
        answers = {}
        for http, server in servers.items():
            answers[http] = answer = _send_head(server.port or 0, start + b"a" * (limit + 1 - len(start)))
            assert answer.startswith(b"HTTP/1.1 431 "), (http, answer[:120])
            body = json.loads(answer.partition(b"\r\n\r\n")[2])
            assert body["error"] == "HEADERS_TOO_LARGE" and body["details"]["limit"] == limit, http
            bad = _send_head(server.port or 0, start + b"a\x00b\r\n\r\n")
            assert bad.startswith(b"HTTP/1.1 400"), (http, bad[:120])
            with httpx.Client(base_url=server.url + API_PREFIX, timeout=10) as http_client:
                assert http_client.get("/health").status_code == 200, http
        assert answers["h11"] == answers["httptools"]
        assert servers["h11"].server.config.http_protocol_class.__name__ == "BoundedH11"
    finally:
        for server in servers.values():
            server.stop()
        state.close()


def test_an_argon2id_user_logs_in_over_http(tmp_path: Path) -> None:
    """DESIGN section 6 allows `password_hash = "<argon2 or scrypt hash>"`; an Argon2id hash made
    by argon2's own tools was refused at start (USERS_FILE_INVALID, "only scrypt")."""
    from argon2 import PasswordHasher

    users_file = tmp_path / "users.toml"
    encoded = PasswordHasher(time_cost=2, memory_cost=8 * 1024, parallelism=1).hash("correct horse")
    users_file.write_text(f'[users.ann]\npassword_hash = "{encoded}"\nroles = ["OPERATOR"]\n')
    state = SandboxState.create(tmp_path / "data", users_file=users_file, app=APP)
    server = ServerThread(create_app(state)).start()
    try:
        with httpx.Client(base_url=server.url + API_PREFIX, timeout=10) as http:
            r = http.post("/auth/login", json={"username": "ann", "password": "correct horse"})
            assert r.status_code == 200 and r.json()["user"]["roles"] == ["OPERATOR"], r.text
            for name, password in (("ann", "wrong"), ("bob", "correct horse")):
                r = http.post("/auth/login", json={"username": name, "password": password})
                assert refusal(r) == (401, "BAD_CREDENTIALS"), r.text
    finally:
        server.stop()
        state.close()


def test_a_body_must_be_declared_json(sb: Sandbox) -> None:
    """Found probing: every JSON endpoint read any body as JSON, whatever its Content-Type. A web
    page can POST text/plain cross-site without a CORS preflight, and <form enctype=text/plain>
    can spell a JSON body: such logins with a wrong password counted as failures and locked the
    user name out for 5 minutes (and were audited). Now 415 UNSUPPORTED_MEDIA_TYPE before the
    body is read; a JSON type needs a preflight, which the sandbox never grants."""
    wrong = b'{"username": "nobody", "password": "wrong"}'
    before = len(sb.state.audit.events())
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        for _ in range(3):
            r = sb.http.post("/auth/login", content=wrong, headers={"Content-Type": kind})
            assert refusal(r) == (415, "UNSUPPORTED_MEDIA_TYPE"), kind
            assert r.json()["details"]["contentType"] == kind
    assert refusal(sb.http.post("/auth/login", content=wrong)) == (415, "UNSUPPORTED_MEDIA_TYPE")
    assert len(sb.state.audit.events()) == before  # not read, so neither counted nor audited
    r = sb.http.post("/auth/login", json={"username": "nobody", "password": "nobody-pw"})
    assert r.status_code == 200, r.text
    # Every endpoint that reads a JSON body, users' and agents' alike.
    chunk = json.dumps(make_chunk("exec-dev-ct", "ex-dev-ct")).encode()
    for path, who, body in (
        ("/search/executions", "analyst", b"{}"),
        ("/replays", "operator", b'{"sourceExchangeId": "ex-dev-0", "reason": "x"}'),
        ("/agents/agent-dev/heartbeat", "agent-dev", b"{}"),
        ("/agents/agent-dev/commands/c-1/ack", "agent-dev", b'{"status": "SUCCESS"}'),
        ("/data/chunks", "agent-dev", chunk),
        (
            "/agents/register",
            None,
            b'{"instanceId": "agent-ct", "environmentId": "dev", "applicationId": "o"}',
        ),
    ):
        auth = sb.auth(who) if who else sb.bootstrap()
        headers = {
            **auth,
            "Content-Type": "text/plain",
            "X-Cameleer-Protocol-Version": "1",
            "Idempotency-Key": "k-ct",
        }
        assert refusal(sb.http.post(path, content=body, headers=headers)) == (
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ), path
    assert sb.state.agents.get("agent-ct") is None
    # JSON with parameters, and +json types, are JSON; a request without a body needs no type.
    for kind in ("application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"):
        r = sb.http.post(
            "/search/executions", content=b"{}", headers={**sb.auth("analyst"), "Content-Type": kind}
        )
        assert r.status_code == 200, (kind, r.text)
    assert sb.http.post("/agents/agent-dev/heartbeat", headers=sb.auth("agent-dev")).status_code == 200


def test_jwt_edge_cases_over_http(sb: Sandbox) -> None:
    """Probing the token checks with tokens signed by the sandbox's own key (what only a holder
    of keys/jwt.key could make). Found: a token "not before" next year (nbf, RFC 7519 4.1.5)
    and one issued with a lifetime of ten years were taken; both are 401 BAD_TOKEN now. Also
    held here: iat in the future, a refresh token as an access token and the reverse, an
    agent's refresh token on an agent endpoint, a deleted user's token."""
    import jwt

    key = (sb.state.data_dir / "keys" / "jwt.key").read_bytes()
    now = int(time.time())

    analyst = sb.state.authority.users.get("analyst")
    assert analyst is not None
    mark = sb.state.authority._password_mark(analyst)  # the password's mark every user token has

    def token(**claims: Any) -> dict[str, str]:
        base = {
            "sub": "user:analyst",
            "typ": "access",
            "iat": now,
            "exp": now + 3600,
            "jti": "j",
            "pwd": mark,
        }
        return {"Authorization": "Bearer " + jwt.encode({**base, **claims}, key, algorithm="HS256")}

    assert sb.http.get("/agents", headers=token()).status_code == 200  # the forgery itself is sound
    for claims in (
        {"nbf": now + 365 * 86400},
        {"nbf": "soon"},
        {"iat": now, "exp": now + 10 * 365 * 86400},
        {"iat": now - 86400 * 3, "exp": now + 86400 * 3},
        {"iat": now + 3600, "exp": now + 7200},
        {"typ": "refresh", "exp": now + 60},
        {"sub": "user:ghost"},
        {"exp": 2**80},
        {"pwd": "0" * 16},  # issued before the password changed
        {"pwd": None},
    ):
        r = sb.http.get("/agents", headers=token(**claims))
        assert refusal(r) == (401, "BAD_TOKEN"), (claims, r.text)
    assert sb.http.get("/agents", headers=token(nbf=now - 10)).status_code == 200  # nbf past: fine
    assert refusal(sb.http.post("/auth/refresh", headers=token())) == (401, "BAD_TOKEN")
    too_long = token(typ="refresh", exp=now + 30 * 86400)
    assert refusal(sb.http.post("/auth/refresh", headers=too_long)) == (401, "BAD_TOKEN")
    agent_refresh = {"Authorization": f"Bearer {sb.agent_tokens['dev']['refreshToken']}"}
    assert refusal(sb.http.post("/agents/agent-dev/heartbeat", headers=agent_refresh)) == (401, "BAD_TOKEN")


# --------------------------------------------------------------------------- executions


def test_search_happy_path_and_filters(sb: Sandbox) -> None:
    r = sb.http.post(
        "/search/executions", json={"environment": "dev", "limit": 2}, headers=sb.auth("analyst")
    )
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 3 and body["limit"] == 2 and body["offset"] == 0
    assert len(body["data"]) == 2
    hit = body["data"][0]
    assert hit["environment"] == "dev" and hit["instanceId"] == "agent-dev"
    assert "processors" not in hit and "inputBody" not in hit  # summaries only
    r = sb.http.post("/search/executions", json={"status": "FAILED"}, headers=sb.auth("analyst"))
    assert [h["executionId"] for h in r.json()["data"]] == ["exec-dev-2"]
    r = sb.http.post("/search/executions", headers=sb.auth("analyst"))  # no body: everything
    assert r.json()["total"] == 4


@pytest.mark.parametrize(
    "body, field",
    [
        ({"limit": 1001}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": "5"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_search_refuses_bad_filters(sb: Sandbox, body: dict[str, Any], field: str) -> None:
    r = sb.http.post("/search/executions", json=body, headers=sb.auth("analyst"))
    assert envelope(r, 400)["details"]["field"] == field


def test_a_long_search_text_is_refused_before_it_reaches_the_index(sb: Sandbox) -> None:
    """Any user with executions:read (a VIEWER) could exhaust the server: FTS5 matches a phrase
    of n trigrams against every position of each of them, so a text of repeated characters
    against a stored body that repeats them (zeros, spaces, base64 padding) cost memory and
    time in n times the positions. Against one 100 kB body of zeros 3,000 characters took
    ~13 s and ~450 MB; the 500 kB a 1 MiB body allows killed the sandbox (the kernel's OOM
    killer at 21 GB). A text is at most MAX_TEXT_CHARS characters (400, as other bad filters)."""
    zeros = make_chunk("exec-zeros", "ex-zeros")
    zeros["execution"]["inputBody"] = "0" * 100_000
    assert sb.post_chunk("dev", zeros).status_code == 202
    for field in ("text", "textInBody", "textInHeaders", "textInErrors"):
        r = sb.http.post(
            "/search/executions", json={field: "0" * (MAX_TEXT_CHARS + 1)}, headers=sb.auth("analyst")
        )
        details = envelope(r, 400, "VALIDATION")["details"]
        assert details["field"] == field and details["max"] == MAX_TEXT_CHARS
    r = sb.http.post("/search/executions", json={"text": "0" * MAX_TEXT_CHARS}, headers=sb.auth("analyst"))
    assert r.status_code == 200 and "exec-zeros" in {h["executionId"] for h in r.json()["data"]}
    schema = sb.http.get("/api-docs").json()["components"]["schemas"]["SearchRequest"]["properties"]
    assert schema["text"]["maxLength"] == MAX_TEXT_CHARS


def test_search_limit_1000_is_allowed(sb: Sandbox) -> None:
    r = sb.http.post("/search/executions", json={"limit": 1000}, headers=sb.auth("analyst"))
    assert r.status_code == 200 and r.json()["limit"] == 1000


def test_execution_detail_has_the_processor_tree_with_secrets_redacted(sb: Sandbox) -> None:
    r = sb.http.get("/executions/exec-dev-0", headers=sb.auth("analyst"))
    assert r.status_code == 200
    body = r.json()
    assert body["executionId"] == "exec-dev-0" and body["environment"] == "dev"
    [root] = body["processors"]
    assert root["seq"] == 1 and [c["seq"] for c in root["children"]] == [2]
    # Stored traces carry fingerprints, never the secret (section 4 "Secrets").
    assert body["inputHeaders"]["Authorization"].startswith("[REDACTED:")
    assert body["inputHeaders"]["Content-Type"] == "application/json"
    assert root["inputHeaders"]["Authorization"] == body["inputHeaders"]["Authorization"]
    assert root["properties"]["dbPassword"].startswith("[REDACTED:") and root["properties"]["region"] == "eu"
    assert SECRET not in r.text and "hunter2" not in r.text
    raw = (sb.state.data_dir / "sandbox.db").read_bytes()
    assert SECRET.encode() not in raw and b"hunter2" not in raw


def test_endpoint_uris_are_stored_and_served_with_their_secrets_masked(sb: Sandbox) -> None:
    """A toD's resolved URI carries header values (review finding 1): a secret-named query
    option, a userinfo password and a secret header's value elsewhere in the URI are stored and
    served as the header's fingerprint (section 4 "Secrets"), never in clear."""
    key, pw = "live-partner-key-0123456789", "db-pw-5678"
    chunk = make_chunk("exec-uri-1", "ex-uri-1", headers={"X-Api-Key": key, "user": "u2"})
    uris = [
        f"http://partner.example/api/lookup?apiKey={key}&user=u2",
        f"https://svc:{pw}@partner.example/keys/{key}",
    ]
    for record, uri in zip(chunk["processors"], uris, strict=True):
        record["endpointUri"] = uri
    assert sb.post_chunk("dev", chunk).status_code == 202
    r = sb.http.get("/executions/exec-uri-1", headers=sb.auth("analyst"))
    assert r.status_code == 200, r.text
    [root] = r.json()["processors"]
    marker = root["inputHeaders"]["X-Api-Key"]
    assert marker == sb.state.redactor.value(key)
    assert root["endpointUri"] == f"http://partner.example/api/lookup?apiKey={marker}&user=u2"
    assert root["children"][0]["endpointUri"] == (
        f"https://svc:{sb.state.redactor.value(pw)}@partner.example/keys/{marker}"
    )
    snapshot = sb.http.get("/executions/exec-uri-1/processors/2/snapshot", headers=sb.auth("analyst"))
    assert snapshot.status_code == 200 and key not in snapshot.text and pw not in snapshot.text
    assert key not in r.text and pw not in r.text
    db = sb.state.data_dir / "sandbox.db"
    for path in (db, db.with_name(db.name + "-wal")):  # the chunk is likely in the WAL still
        if path.exists():
            raw = path.read_bytes()
            assert key.encode() not in raw and pw.encode() not in raw


def test_a_secret_shown_in_one_chunk_is_hidden_in_the_next_chunks_texts(sb: Sandbox) -> None:
    """A trace of over 200 processors comes in several chunks: the header that names a secret
    can sit in the first while the body a route built from it comes in the last, with no name
    to go by. The values the first showed are looked for in the next (TraceSecrets)."""
    key = "split-partner-key-0123456789"
    whole = make_chunk("exec-split-1", "ex-split-1", headers={"X-Api-Key": key, "user": "u2"})
    first, last = whole["processors"]
    plain = {"Content-Type": "application/json"}  # a removeHeaders step dropped the key
    last.update(inputHeaders=plain, outputHeaders=plain, outputBody=f"called partner with {key}")
    last["errorMessage"] = f"partner said no to {key}"
    whole["execution"].update(inputHeaders=plain, outputHeaders=plain, outputBody=f'{{"echo": "{key}"}}')
    head = {**whole, "chunkSeq": 0, "final": False, "execution": None, "processors": [first]}
    tail = {**whole, "chunkSeq": 1, "final": True, "processors": [last]}
    assert sb.post_chunk("dev", head).status_code == 202
    assert sb.state.trace_secrets.get("exec-split-1") == {key, "hunter2"}  # its dbPassword property too
    assert sb.post_chunk("dev", tail).status_code == 202
    # The final chunk again (its 202 lost): redacted as the first time, so the same chunk, a no-op
    # (review finding: the values were forgotten at the final chunk, and this was a 409).
    assert sb.post_chunk("dev", tail).status_code == 202
    marker = sb.state.redactor.value(key)
    r = sb.http.get("/executions/exec-split-1", headers=sb.auth("analyst"))
    assert r.status_code == 200, r.text
    [root] = r.json()["processors"]
    [child] = root["children"]
    assert child["outputBody"] == f"called partner with {marker}"
    assert child["errorMessage"] == f"partner said no to {marker}"
    assert json.loads(r.json()["outputBody"]) == {"echo": marker}
    assert key not in r.text
    db = sb.state.data_dir / "sandbox.db"
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            assert key.encode() not in path.read_bytes()


def test_a_refused_chunk_leaves_the_remembered_secrets_alone(sb: Sandbox) -> None:
    """Only a stored chunk's values are remembered: chunks refused for their execution's owner
    or for an unknown replay would otherwise fill the bounded memory and push out the values of
    traces still coming in (review finding)."""
    key = "owned-partner-key-0123456789"
    whole = make_chunk("exec-own-1", "ex-own-1", headers={"X-Api-Key": key})
    head = {**whole, "chunkSeq": 0, "final": False, "execution": None, "processors": whole["processors"][:1]}
    assert sb.post_chunk("dev", head).status_code == 202
    remembered = sb.state.trace_secrets.get("exec-own-1")
    assert key in remembered
    count = len(sb.state.trace_secrets)
    intruder = make_chunk("exec-own-1", "ex-own-1", headers={"X-Api-Key": "prod-key-9876543210"})
    intruder = {
        **intruder,
        "chunkSeq": 1,
        "final": False,
        "execution": None,
        "processors": intruder["processors"][1:],
    }
    assert refusal(sb.post_chunk("prod", intruder)) == (409, "CHUNK_CONFLICT")  # dev's execution
    assert sb.state.trace_secrets.get("exec-own-1") == remembered
    for n in range(3):
        stray = make_chunk(f"exec-stray-{n}", f"ex-stray-{n}", headers={"X-Api-Key": f"stray-key-{n:020d}"})
        stray = {**stray, "final": False, "replayId": "r-unknown"}
        assert refusal(sb.post_chunk("dev", stray)) == (404, "NO_SUCH_REPLAY")
        assert sb.state.trace_secrets.get(f"exec-stray-{n}") == frozenset()
    assert len(sb.state.trace_secrets) == count


def test_trace_secrets_are_bounded() -> None:
    memo = TraceSecrets(capacity=2)
    memo.remember("x-1", {"a-secret"})
    memo.remember("x-1", {"b-secret"})
    memo.remember("x-2", set())  # a chunk that showed nothing takes no room
    assert memo.get("x-1") == {"a-secret", "b-secret"} and len(memo) == 1
    memo.remember("x-2", {"c"})
    memo.remember("x-3", {"d"})  # over capacity: the one remembered longest ago (x-1) goes
    assert memo.get("x-1") == frozenset() and memo.get("x-2") == {"c"} and memo.get("x-3") == {"d"}


def test_execution_errors(sb: Sandbox) -> None:
    assert refusal(sb.http.get("/executions/nope", headers=sb.auth("analyst"))) == (404, "NOT_FOUND")
    assert refusal(sb.http.get("/executions/" + "a" * 129, headers=sb.auth("analyst"))) == (400, "BAD_ID")
    assert refusal(sb.http.get("/executions/..%2F..%2Fetc", headers=sb.auth("analyst")))[0] == 404


def test_processor_snapshot(sb: Sandbox) -> None:
    r = sb.http.get("/executions/exec-dev-1/processors/2/snapshot", headers=sb.auth("analyst"))
    assert r.status_code == 200
    body = r.json()
    assert body["seq"] == 2 and body["processorId"] == "setBody2"
    assert body["outputBody"] == '{"orderId": "o-1", "total": 10}'
    assert body["inputHeaders"]["Authorization"].startswith("[REDACTED:")
    assert (
        refusal(sb.http.get("/executions/exec-dev-1/processors/9/snapshot", headers=sb.auth("analyst")))[0]
        == 404
    )
    assert (
        refusal(sb.http.get("/executions/exec-dev-1/processors/x/snapshot", headers=sb.auth("analyst")))[0]
        == 400
    )


# --------------------------------------------------------------------------- agents


def test_agents_list(sb: Sandbox) -> None:
    r = sb.http.get("/agents", headers=sb.auth("analyst"))
    assert r.status_code == 200
    agents = {a["instanceId"]: a for a in r.json()}
    assert set(agents) >= {"agent-dev", "agent-prod"}
    assert agents["agent-dev"]["environmentId"] == "dev" and agents["agent-dev"]["routeVersion"] == "v1"
    # Registered and heartbeating, but no command channel open: not LIVE (cannot take a replay).
    assert agents["agent-dev"]["status"] == "STALE"
    r = sb.http.get("/agents", params={"environment": "prod"}, headers=sb.auth("analyst"))
    assert [a["instanceId"] for a in r.json()] == ["agent-prod"]
    assert refusal(sb.http.get("/agents", params={"status": "ASLEEP"}, headers=sb.auth("analyst")))[0] == 400
    assert refusal(sb.http.get("/agents", params={"colour": "red"}, headers=sb.auth("analyst")))[0] == 400


def test_register(sb: Sandbox) -> None:
    body = {"instanceId": "agent-x", "applicationId": "orders", "environmentId": "staging"}
    r = sb.http.post("/agents/register", json=body, headers=sb.bootstrap())
    assert r.status_code == 200
    answer = r.json()
    key = load_der_public_key(base64.b64decode(answer["serverPublicKey"]))
    assert isinstance(key, Ed25519PublicKey)
    assert answer["serverPublicKey"] == sb.state.signer.public_key_b64()
    assert set(answer) >= {"accessToken", "refreshToken", "serverPublicKey"}
    assert refusal(sb.http.post("/agents/register", json=body)) == (401, "UNAUTHORIZED")
    assert (
        refusal(
            sb.http.post(
                "/agents/register", json=body, headers={"Authorization": "Bearer wrong-token-123456"}
            )
        )[0]
        == 401
    )
    assert (
        refusal(sb.http.post("/agents/register", json=body, headers=sb.auth("admin")))[0] == 401
    )  # a user token is not it
    assert refusal(
        sb.http.post("/agents/register", json={**body, "instanceId": "../x"}, headers=sb.bootstrap())
    ) == (400, "BAD_ID")
    assert (
        refusal(sb.http.post("/agents/register", json={"instanceId": "a"}, headers=sb.bootstrap()))[0] == 400
    )


def test_an_agent_cannot_change_its_environment_by_registering_again(sb: Sandbox) -> None:
    """Review finding: an instance id registered as ``dev`` re-registered as ``prod`` and got a
    ``prod`` token, though its recorded executions and queued commands (authorised without
    ``replay:prod``) were ``dev``'s. Cameleer: each agent belongs to one environment (a
    heartbeat naming another is refused). Now 409 AGENT_ENVIRONMENT_CHANGED, audited."""
    base = {"applicationId": "orders", "routeIds": ["order-intake"]}
    before = len(sb.state.audit.events())
    r = sb.http.post(
        "/agents/register",
        json={**base, "instanceId": "agent-dev", "environmentId": "prod"},
        headers=sb.bootstrap(),
    )
    assert refusal(r) == (409, "AGENT_ENVIRONMENT_CHANGED")
    assert "'dev'" in r.json()["message"] and r.json()["details"]["hint"]
    assert sb.state.agents.get("agent-dev").environment_id == "dev"
    [event] = sb.state.audit.events()[before:]
    assert event["action"] == "ACCESS_DENIED" and event["outcome"] == "DENIED"
    assert event["actor"] == {"username": "agent-dev", "roles": ["AGENT"], "permissions": []}
    assert event["detail"]["code"] == "AGENT_ENVIRONMENT_CHANGED"
    assert (event["detail"]["environment"], event["detail"]["requested"]) == ("dev", "prod")
    # The same environment again resumes the identity (cameleer.md 2.2) ...
    r = sb.http.post(
        "/agents/register",
        json={**base, "instanceId": "agent-dev", "environmentId": "dev"},
        headers=sb.bootstrap(),
    )
    assert r.status_code == 200, r.text
    sb.agent_tokens["dev"] = r.json()
    # ... and an id the server has forgotten (as after a restart: the registry is in memory)
    # is still held to the environment of the executions it recorded.
    r = sb.http.post(
        "/agents/register",
        json={**base, "instanceId": "agent-h", "environmentId": "dev"},
        headers=sb.bootstrap(),
    )
    token = r.json()["accessToken"]
    chunk = make_chunk("exec-h-0", "ex-h-0")
    h = {"Authorization": f"Bearer {token}", "X-Cameleer-Protocol-Version": "1"}
    assert sb.http.post("/data/chunks", json=chunk, headers=h).status_code == 202
    del sb.state.agents._agents["agent-h"]
    r = sb.http.post(
        "/agents/register",
        json={**base, "instanceId": "agent-h", "environmentId": "prod"},
        headers=sb.bootstrap(),
    )
    assert refusal(r) == (409, "AGENT_ENVIRONMENT_CHANGED")
    # A new id may take any environment.
    r = sb.http.post(
        "/agents/register",
        json={**base, "instanceId": "agent-h-prod", "environmentId": "prod"},
        headers=sb.bootstrap(),
    )
    assert r.status_code == 200, r.text


def test_an_agent_token_from_before_a_restart_is_held_to_the_registration_now(tmp_path: Path) -> None:
    """Review finding: agent tokens carry the environment they were issued with, survive a
    restart (the JWT key is in the data folder) and were never compared with the registry. A
    ``dev`` token of an id that recorded nothing went on beating, taking commands, acking and
    posting ``dev`` executions after the restarted server let the id register in ``prod``, and
    posted chunks for an id no longer registered at all. Now every agent endpoint holds the
    token to the registry: 404 AGENT_NOT_FOUND for an id not registered (the agent registers
    again), 403 AGENT_TOKEN_STALE for another environment, audited as ACCESS_DENIED."""
    bootstrap = "b" * 32
    boot = {"Authorization": f"Bearer {bootstrap}"}
    base = {"applicationId": "orders", "routeIds": ["order-intake"], "instanceId": "agent-x"}

    def serve() -> tuple[SandboxState, ServerThread, httpx.Client]:
        state = SandboxState.create(
            tmp_path / "data", app=APP, config=ServerConfig(bootstrap_token=bootstrap)
        )
        server = ServerThread(create_app(state)).start()
        return state, server, httpx.Client(base_url=server.url + API_PREFIX, timeout=10)

    state, server, http = serve()
    try:
        r = http.post("/agents/register", json={**base, "environmentId": "dev"}, headers=boot)
        assert r.status_code == 200, r.text
        old = {"Authorization": f"Bearer {r.json()['accessToken']}"}
        old_refresh = {"Authorization": f"Bearer {r.json()['refreshToken']}"}
    finally:
        http.close()
        server.stop()
        state.close()
    state, server, http = serve()  # the restart: the registry is empty, tokens still verify
    try:
        ingest = {**old, "X-Cameleer-Protocol-Version": "1"}
        chunk = make_chunk("exec-x-0", "ex-x-0")
        assert refusal(http.post("/data/chunks", json=chunk, headers=ingest)) == (404, "AGENT_NOT_FOUND")
        assert state.store.instance_environments("agent-x") == set()  # nothing was stored
        # The id recorded nothing, so another environment may take it now ...
        r = http.post("/agents/register", json={**base, "environmentId": "prod"}, headers=boot)
        assert r.status_code == 200, r.text
        registered_prod = r.json()
        prod = {"Authorization": f"Bearer {r.json()['accessToken']}"}
        command = server.call(lambda: state.agents.send("agent-x", {"type": "config-update"}))
        before = len(state.audit.events())
        # ... and the dev token no longer speaks for it, on any agent endpoint.
        ack = f"/agents/agent-x/commands/{command['commandId']}/ack"
        refused = [
            http.post("/agents/agent-x/heartbeat", json={}, headers=old),
            http.get("/agents/agent-x/events", headers=old),
            http.post(ack, json={"status": "SUCCESS"}, headers=old),
            http.post("/data/chunks", json=chunk, headers=ingest),
        ]
        for r in refused:
            assert refusal(r) == (403, "AGENT_TOKEN_STALE"), r.text
            assert r.json()["details"]["environment"] == "prod" and r.json()["details"]["hint"]
        assert state.store.instance_environments("agent-x") == set()
        assert state.agents.pending("agent-x") == [command]  # the ack was not taken
        assert not state.agents.channel_open("agent-x")
        events = state.audit.events()[before:]
        assert [e["action"] for e in events] == ["ACCESS_DENIED"] * 4
        for event in events:
            assert event["actor"]["username"] == "agent-x" and event["outcome"] == "DENIED"
            assert event["detail"]["code"] == "AGENT_TOKEN_STALE"
            assert (event["detail"]["tokenEnvironment"], event["detail"]["environment"]) == ("dev", "prod")
        # The old refresh token gets no new access token (it got one, refused only at its
        # first use: review finding); the prod token works, and so does its refresh token.
        r = http.post("/auth/refresh", headers=old_refresh)
        assert refusal(r) == (403, "AGENT_TOKEN_STALE") and "accessToken" not in r.text
        assert http.post("/agents/agent-x/heartbeat", json={}, headers=prod).status_code == 200
        prod_refresh = {"Authorization": f"Bearer {registered_prod['refreshToken']}"}
        assert http.post("/auth/refresh", headers=prod_refresh).status_code == 200
    finally:
        http.close()
        server.stop()
        state.close()


def test_an_id_with_a_final_newline_is_not_an_id(sb: Sandbox) -> None:
    """Found probing: ids were checked with a regex ending in "$", which also matches before a
    final newline, so "agent-dev\n" registered a second agent (in prod) that lists and audits
    exactly as agent-dev, and path ids like "abc%0A" reached the handlers."""
    body = {"instanceId": "agent-dev\n", "applicationId": "orders", "environmentId": "prod"}
    r = sb.http.post("/agents/register", json=body, headers=sb.bootstrap())
    assert refusal(r) == (400, "BAD_ID")
    assert sb.state.agents.get("agent-dev\n") is None
    for path in ("/replays/abc%0A", "/executions/exec-dev-0%0A"):
        assert refusal(sb.http.get(path, headers=sb.auth("admin"))) == (400, "BAD_ID"), path
    chunk = make_chunk("exec-nl-0", "ex-nl-0\n")
    assert refusal(sb.post_chunk("dev", chunk))[0] == 400


def test_heartbeat(sb: Sandbox) -> None:
    r = sb.http.post(
        "/agents/agent-dev/heartbeat",
        json={"routeStates": {"order-intake": "Started"}},
        headers=sb.auth("agent-dev"),
    )
    assert r.status_code == 200 and r.json()["routeStates"] == {"order-intake": "Started"}
    assert (
        sb.http.post("/agents/agent-dev/heartbeat", headers=sb.auth("agent-dev")).status_code == 200
    )  # no body
    assert refusal(sb.http.post("/agents/agent-dev/heartbeat", headers=sb.auth("agent-prod"))) == (
        403,
        "FORBIDDEN",
    )
    assert refusal(sb.http.post("/agents/agent-dev/heartbeat", headers=sb.auth("admin"))) == (
        403,
        "FORBIDDEN",
    )
    assert refusal(sb.http.post("/agents/agent-dev/heartbeat"))[0] == 401
    assert (
        refusal(
            sb.http.post(
                "/agents/agent-dev/heartbeat", json={"environmentId": "prod"}, headers=sb.auth("agent-dev")
            )
        )[0]
        == 400
    )
    assert (
        refusal(
            sb.http.post(
                "/agents/agent-dev/heartbeat",
                json={"routeStates": {"r": "Melting"}},
                headers=sb.auth("agent-dev"),
            )
        )[0]
        == 400
    )
    ghost = sb.state.authority.issue_agent_tokens("ghost", "dev", datetime.now(UTC))["accessToken"]
    assert refusal(sb.http.post("/agents/ghost/heartbeat", headers={"Authorization": f"Bearer {ghost}"})) == (
        404,
        "AGENT_NOT_FOUND",
    )


def _read_events(
    response: httpx.Response, want: int, timeout: float = 5.0
) -> tuple[list[dict[str, str]], int]:
    """Parse SSE from a streaming response until ``want`` events arrived; also count comments."""
    events: list[dict[str, str]] = []
    comments = 0
    current: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    for line in response.iter_lines():
        if line.startswith(":"):
            comments += 1
        elif line == "":
            if current:
                events.append(current)
                current = {}
                if len(events) >= want:
                    break
        else:
            name, _, value = line.partition(":")
            current[name] = value[1:] if value.startswith(" ") else value
        if time.monotonic() > deadline:
            break
    return events, comments


def test_command_channel_streams_signed_commands(sb: Sandbox) -> None:
    with httpx.Client(base_url=sb.url, timeout=10) as client:
        with client.stream("GET", "/agents/agent-dev/events", headers=sb.auth("agent-dev")) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"] == "no-store" and r.headers["x-accel-buffering"] == "no"
            assert sb.state.agents.pick("dev").instance_id == "agent-dev"  # LIVE once the channel is open
            c1 = sb.server.call(
                lambda: sb.state.agents.send("agent-dev", {"type": "replay", "replayId": "r-1"})
            )
            c2 = sb.server.call(lambda: sb.state.agents.send("agent-dev", {"type": "CONFIG_UPDATE"}))
            events, _ = _read_events(r, 2)
    assert [e["event"] for e in events] == ["replay", "config-update"]
    assert [e["id"] for e in events] == [c1["commandId"], c2["commandId"]]
    data = json.loads(events[0]["data"])
    assert data == c1 and verify_command(data, sb.state.signer.public_key_b64())
    # Acknowledge the first; reconnecting after it resends only the unacknowledged second one.
    ack = sb.http.post(
        f"/agents/agent-dev/commands/{c1['commandId']}/ack",
        json={"status": "SUCCESS", "message": "ok", "data": {"executionId": "e-1"}},
        headers=sb.auth("agent-dev"),
    )
    assert ack.status_code == 200 and ack.json() == {
        "commandId": c1["commandId"],
        "status": "SUCCESS",
        "duplicate": False,
    }
    with httpx.Client(base_url=sb.url, timeout=10) as client:
        headers = {**sb.auth("agent-dev"), "Last-Event-ID": c1["commandId"]}
        with client.stream("GET", "/agents/agent-dev/events", headers=headers) as r:
            events, _ = _read_events(r, 1)
    assert [e["id"] for e in events] == [c2["commandId"]]
    sb.http.post(
        f"/agents/agent-dev/commands/{c2['commandId']}/ack",
        json={"status": "FAILURE"},
        headers=sb.auth("agent-dev"),
    )


def test_command_channel_pings(sb: Sandbox) -> None:
    with httpx.Client(base_url=sb.url, timeout=10) as client:
        with client.stream("GET", "/agents/agent-prod/events", headers=sb.auth("agent-prod")) as r:
            start = time.monotonic()
            comments = 0
            for line in r.iter_lines():
                if line.startswith(":"):
                    comments += 1
                if comments >= 2:
                    break
            elapsed = time.monotonic() - start
    assert comments >= 2 and elapsed < 3 * 0.3 + 1.0  # SSE-3: >= 2 pings in 3 intervals


def test_command_channel_errors(sb: Sandbox) -> None:
    assert refusal(sb.http.get("/agents/agent-dev/events", headers=sb.auth("agent-prod")))[0] == 403
    assert refusal(sb.http.get("/agents/agent-dev/events", headers=sb.auth("analyst")))[0] == 403
    assert refusal(sb.http.get("/agents/agent-dev/events"))[0] == 401
    bad = {**sb.auth("agent-dev"), "Last-Event-ID": "not an id"}
    assert refusal(sb.http.get("/agents/agent-dev/events", headers=bad)) == (400, "BAD_LAST_EVENT_ID")
    ghost = sb.state.authority.issue_agent_tokens("ghost2", "dev", datetime.now(UTC))["accessToken"]
    assert (
        refusal(sb.http.get("/agents/ghost2/events", headers={"Authorization": f"Bearer {ghost}"}))[0] == 404
    )


def test_a_client_that_stops_reading_is_dropped(sb: Sandbox) -> None:
    """SSE-5 on the command channel: the agent's socket stops being read; within send_timeout
    (1 s here) + slack the server drops it, and the agent no longer counts as LIVE."""
    token = sb.agent_tokens["prod"]["accessToken"]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", sb.server.port or 0))
    try:
        sock.sendall(
            (
                f"GET {API_PREFIX}/agents/agent-prod/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        deadline = time.monotonic() + 3
        while not sb.state.agents.channel_open("agent-prod") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sb.state.agents.channel_open("agent-prod")
        pad = "x" * 200_000
        for _ in range(60):  # ~12 MB: far more than the socket buffers hold
            sb.server.call(lambda: sb.state.agents.send("agent-prod", {"type": "config-update", "pad": pad}))
        deadline = time.monotonic() + 1.0 + 4.0
        while sb.state.agents.channel_open("agent-prod") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not sb.state.agents.channel_open("agent-prod")
    finally:
        sock.close()
    for command in sb.state.agents.pending("agent-prod"):  # leave no queue behind for other tests
        sb.state.agents.ack("agent-prod", command["commandId"], {"status": "FAILURE"})


def test_ack_errors(sb: Sandbox) -> None:
    cmd = sb.server.call(lambda: sb.state.agents.send("agent-dev", {"type": "replay"}))
    path = f"/agents/agent-dev/commands/{cmd['commandId']}/ack"
    assert refusal(sb.http.post(path, json={"status": "MAYBE"}, headers=sb.auth("agent-dev")))[0] == 400
    assert refusal(sb.http.post(path, json={"status": "SUCCESS"}, headers=sb.auth("agent-prod")))[0] == 403
    assert refusal(sb.http.post(path, json={"status": "SUCCESS"}, headers=sb.auth("operator")))[0] == 403
    assert refusal(sb.http.post(path, json={"status": "SUCCESS"}))[0] == 401
    assert (
        refusal(
            sb.http.post(
                "/agents/agent-dev/commands/unknown/ack",
                json={"status": "SUCCESS"},
                headers=sb.auth("agent-dev"),
            )
        )[0]
        == 404
    )
    assert refusal(
        sb.http.post(
            path,
            content=b'{"status": "SUCCESS", "status": "FAILURE"}',
            headers={**sb.auth("agent-dev"), "Content-Type": "application/json"},
        )
    ) == (400, "BAD_JSON")
    assert (
        sb.http.post(path, json={"status": "SUCCESS"}, headers=sb.auth("agent-dev")).json()["duplicate"]
        is False
    )
    assert (
        sb.http.post(path, json={"status": "SUCCESS"}, headers=sb.auth("agent-dev")).json()["duplicate"]
        is True
    )


# --------------------------------------------------------------------------- ingestion


def test_chunk_is_stored_with_the_agents_environment(sb: Sandbox) -> None:
    r = sb.post_chunk("prod", make_chunk("exec-prod-9", "ex-prod-9"))
    assert r.status_code == 202 and r.json() == {"executionId": "exec-prod-9", "chunkSeq": 0}
    got = sb.http.get("/executions/exec-prod-9", headers=sb.auth("analyst")).json()
    assert got["environment"] == "prod" and got["instanceId"] == "agent-prod"
    # Re-sending the same chunk is harmless (agents retry); other content for it conflicts.
    assert sb.post_chunk("prod", make_chunk("exec-prod-9", "ex-prod-9")).status_code == 202
    other = make_chunk("exec-prod-9", "ex-prod-9", status="FAILED")
    assert refusal(sb.post_chunk("prod", other)) == (409, "CHUNK_CONFLICT")


def test_an_agent_cannot_record_another_environments_exchange_id(sb: Sandbox) -> None:
    """Security walk: a replay's source is found by its exchangeId (the earliest recorded
    execution with it), and an agent of dev could record a new execution under the exchange id
    of a prod one, starting earlier: every replay of that prod exchange then started from the
    dev agent's payload, in dev. An exchange id recorded in another environment is now 409
    CHUNK_CONFLICT, naming neither that environment nor storing anything; the same environment
    may record it again (an exchange passing two routes)."""
    shadow = make_chunk("exec-shadow-1", "ex-prod-0")
    shadow["execution"]["startTime"] = shadow["processors"][0]["startTime"] = "2020-01-01T00:00:00Z"
    r = sb.post_chunk("dev", shadow)
    assert refusal(r) == (409, "CHUNK_CONFLICT") and "'prod'" not in r.text, r.text
    assert sb.state.store.replay_source_id("ex-prod-0") == "exec-prod-0"
    conn = sb.state.store._conn()
    for table in ("executions", "chunks", "processors"):
        assert conn.execute(
            f"SELECT count(*) FROM {table} WHERE execution_id = 'exec-shadow-1'"
        ).fetchone() == (0,), table
    assert sb.post_chunk("prod", make_chunk("exec-prod-0b", "ex-prod-0")).status_code == 202
    assert sb.state.store.replay_source_id("ex-prod-0") == "exec-prod-0"


@pytest.mark.parametrize("replay_id", [{"a": 1}, ["r"], "bad id", 7])
def test_a_chunk_whose_replay_id_is_not_an_id_is_a_400(sb: Sandbox, replay_id: Any) -> None:
    # schemathesis found an object here reaching the replay lookup (a 500 from SQLite's binding).
    chunk = {**make_chunk("exec-r-2", "ex-r-2"), "replayId": replay_id}
    assert refusal(sb.post_chunk("dev", chunk)) == (400, "BAD_ID")


def test_a_replay_tagged_chunk_of_no_replay_is_refused(sb: Sandbox) -> None:
    """The replay service decides on it: a replay it does not know gets 404 and nothing is
    stored (it would be found as a replay nobody requested, with no audit record)."""
    chunk = {**make_chunk("exec-r-1", "ex-r-1"), "replayId": "r-unknown"}
    assert refusal(sb.post_chunk("dev", chunk)) == (404, "NO_SUCH_REPLAY")
    hits = sb.http.post(
        "/search/executions", json={"replayId": "r-unknown"}, headers=sb.auth("analyst")
    ).json()
    assert hits["data"] == []


def test_chunk_errors(sb: Sandbox) -> None:
    chunk = make_chunk("exec-dev-7", "ex-dev-7")
    r = sb.http.post("/data/chunks", json=chunk, headers=sb.auth("agent-dev"))
    body = envelope(r, 400, "PROTOCOL_VERSION")
    assert body["message"] == "Missing or unsupported X-Cameleer-Protocol-Version header"
    assert refusal(sb.post_chunk("dev", chunk, **{"X-Cameleer-Protocol-Version": "2"})) == (
        400,
        "PROTOCOL_VERSION",
    )
    assert (
        refusal(sb.http.post("/data/chunks", json=chunk, headers={"X-Cameleer-Protocol-Version": "1"}))[0]
        == 401
    )
    assert (
        refusal(
            sb.http.post(
                "/data/chunks", json=chunk, headers={**sb.auth("admin"), "X-Cameleer-Protocol-Version": "1"}
            )
        )[0]
        == 403
    )
    # A dev agent cannot file an execution under prod (permissions follow stored environments).
    assert refusal(sb.post_chunk("dev", make_chunk("exec-dev-8", "ex-dev-8", environment="prod"))) == (
        400,
        "BAD_CHUNK",
    )
    assert refusal(sb.post_chunk("dev", {"executionId": "e", "exchangeId": "x"}))[0] == 400
    assert refusal(sb.post_chunk("dev", {**chunk, "processors": "nope"}))[0] == 400
    assert refusal(sb.post_chunk("dev", {**chunk, "executionId": "../../x"}))[0] == 400
    assert sb.http.get("/executions/exec-dev-8", headers=sb.auth("analyst")).status_code == 404


def test_full_ingest_buffer_answers_503_with_retry_after(sb: Sandbox) -> None:
    """chunk_buffer is 1 here: a chunk whose body is still arriving holds the only slot."""
    body = json.dumps(make_chunk("exec-dev-slow", "ex-dev-slow")).encode()
    token = sb.agent_tokens["dev"]["accessToken"]
    sock = socket.create_connection(("127.0.0.1", sb.server.port or 0), timeout=10)
    try:
        sock.sendall(
            (
                f"POST {API_PREFIX}/data/chunks HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\n"
                f"X-Cameleer-Protocol-Version: 1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body[:10]
        )
        gate = sb.app.state.ingest_gate
        deadline = time.monotonic() + 3
        while gate.in_flight < 1 and time.monotonic() < deadline:  # the slow chunk holds the slot
            time.sleep(0.01)
        assert gate.in_flight == 1
        busy = sb.post_chunk("dev", make_chunk("exec-dev-fast", "ex-dev-fast"))
        assert refusal(busy) == (503, "INGEST_BUSY")
        assert busy.headers["retry-after"] == "2"
        sock.sendall(body[10:])
        answer = b""
        while not _complete(answer):
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 202"), answer
    finally:
        sock.close()
    assert sb.post_chunk("dev", make_chunk("exec-dev-fast", "ex-dev-fast")).status_code == 202


# --------------------------------------------------------------------------- permissions


# endpoint -> who gets a 2xx/expected-domain answer; everyone else 401 (no token) or 403.
def _calls(sb: Sandbox) -> list[tuple[str, str, dict[str, Any], set[str]]]:
    users = {"analyst", "operator", "admin", "prod-operator"}
    return [
        ("POST", "/search/executions", {"json": {}}, users),
        ("GET", "/executions/exec-dev-0", {}, users),
        ("GET", "/executions/exec-dev-0/processors/1/snapshot", {}, users),
        ("GET", "/agents", {}, users),
        ("POST", "/agents/agent-dev/heartbeat", {}, {"agent-dev"}),
        (
            "POST",
            "/data/chunks",
            {"json": None, "headers": {"X-Cameleer-Protocol-Version": "1"}},
            {"agent-dev"},
        ),
    ]


PRINCIPALS = (
    "anonymous",
    "nobody",
    "analyst",
    "operator",
    "admin",
    "prod-operator",
    "agent-dev",
    "agent-prod",
)


@pytest.mark.parametrize("who", PRINCIPALS)
def test_permission_matrix(sb: Sandbox, who: str) -> None:
    for method, path, kw, allowed in _calls(sb):
        headers = {**kw.get("headers", {}), **({} if who == "anonymous" else sb.auth(who))}
        if path == "/data/chunks" and who == "agent-prod":
            allowed = allowed | {"agent-prod"}  # any agent may post its own environment's chunks
        body = kw.get("json")
        if path == "/data/chunks":
            body = make_chunk(f"exec-m-{who}", f"ex-m-{who}")
        r = sb.http.request(method, path, json=body, headers=headers)
        if who in allowed:
            assert r.status_code < 300, (who, method, path, r.text)
        elif who == "anonymous":
            assert refusal(r)[0] == 401
        else:
            assert refusal(r) == (403, "FORBIDDEN")


def test_an_agent_token_refused_on_a_replay_or_audit_endpoint_is_audited(sb: Sandbox) -> None:
    """Section 6: every denied attempt is audited with actor, action, target and reason
    (security.md RBAC-4: 100 %). An agent token (a compromised agent) on the replay and audit
    endpoints was refused (403; 404 on the trace stream) with nothing in the audit log: only
    users' refusals were recorded."""
    agent = sb.auth("agent-dev")
    calls = [
        ("POST", "/replays", {"json": {"sourceExchangeId": "ex-dev-0", "reason": "r"}}, 403, "REPLAY_DENIED"),
        ("GET", "/replays", {}, 403, "REPLAY_DENIED"),
        ("GET", "/replays/preflight", {"params": {"sourceExchangeId": "ex-dev-0"}}, 403, "REPLAY_DENIED"),
        ("GET", "/replays/replay-x", {}, 403, "REPLAY_DENIED"),
        ("POST", "/replays/replay-x/stream-ticket", {}, 403, "REPLAY_DENIED"),
        ("GET", "/replays/replay-x/events", {}, 404, "REPLAY_DENIED"),
        ("GET", "/admin/audit", {}, 403, "AUDIT_DENIED"),
        ("GET", "/admin/audit/verify", {}, 403, "AUDIT_DENIED"),
        ("GET", "/admin/audit/export", {}, 403, "AUDIT_DENIED"),
    ]
    for method, path, kw, status, action in calls:
        before = len(sb.state.audit.events())
        r = sb.http.request(method, path, headers={**agent, "Idempotency-Key": "k-agent"}, **kw)
        assert r.status_code == status, (path, r.text)
        new = sb.state.audit.events()[before:]
        assert [e["action"] for e in new] == [action], (path, new)
        (event,) = new
        assert event["actor"] == {"username": "agent-dev", "roles": ["AGENT"], "permissions": []}
        assert event["outcome"] == "DENIED" and event["detail"]["reason"], (path, event)
        # Naming a replay does not add to its audit record (the agent requested none).
        assert event["target"].get("replayId") is None, (path, event)
        if "replay-x" in path:
            assert event["detail"]["replayId"] == "replay-x", (path, event)


def test_a_refusal_on_any_other_endpoint_is_audited_as_access_denied(sb: Sandbox) -> None:
    """Section 6: *every* denied attempt is audited (ASVS 16.3.2: log failed authorisation). An
    agent's token on the user endpoints, a user's token on the agent endpoints and an agent
    acting for another were refused (403) with nothing in the audit log: only the replay and
    audit endpoints recorded their refusals."""
    agent, operator = sb.auth("agent-dev"), sb.auth("operator")
    chunk_headers = {"X-Cameleer-Protocol-Version": "1"}
    calls = [
        (agent, "POST", "/search/executions", {"json": {}}, {}),
        (agent, "GET", "/executions/exec-dev-0", {}, {"executionId": "exec-dev-0"}),
        (
            agent,
            "GET",
            "/executions/exec-dev-0/processors/1/snapshot",
            {},
            {"executionId": "exec-dev-0", "seq": "1"},
        ),
        (agent, "GET", "/agents", {}, {}),
        (operator, "POST", "/agents/agent-dev/heartbeat", {"json": {}}, {"instanceId": "agent-dev"}),
        (operator, "GET", "/agents/agent-dev/events", {}, {"instanceId": "agent-dev"}),
        (operator, "POST", "/agents/agent-dev/commands/c-1/ack", {"json": {}}, {"commandId": "c-1"}),
        (operator, "POST", "/data/chunks", {"json": {}, "headers": chunk_headers}, {}),
        (agent, "POST", "/agents/agent-prod/heartbeat", {"json": {}}, {"instanceId": "agent-prod"}),
    ]
    for who, method, path, kw, named in calls:
        before = len(sb.state.audit.events())
        headers = {**who, **kw.pop("headers", {})}
        r = sb.http.request(method, path, headers=headers, **kw)
        assert refusal(r) == (403, "FORBIDDEN"), (path, r.text)
        new = sb.state.audit.events()[before:]
        assert [e["action"] for e in new] == ["ACCESS_DENIED"], (path, new)
        (event,) = new
        username = "agent-dev" if who is agent else "operator"
        assert event["actor"]["username"] == username, (path, event)
        assert event["outcome"] == "DENIED" and event["detail"]["reason"] == r.json()["message"], (
            path,
            event,
        )
        assert event["detail"]["code"] == "FORBIDDEN"
        assert event["detail"]["operation"].split(" ")[0] == method, (path, event)
        assert event["target"].get("replayId") is None and event["source"]["ip"] == "127.0.0.1"
        for key, value in named.items():
            assert event["detail"][key] == value, (path, event)
    # A refusal is for someone: a call with no valid token (401) has no actor and is not recorded.
    before = len(sb.state.audit.events())
    assert refusal(sb.http.get("/agents", headers={"Authorization": "Bearer nope"}))[0] == 401
    assert len(sb.state.audit.events()) == before


def test_an_access_denied_record_keeps_no_unchecked_path_text(sb: Sandbox) -> None:
    """Found by review: an agent acting for an "agent" whose id is no id (any text in the path)
    was audited with that text as detail.instanceId (require_agent's details overrode the
    checked path ids) and twice more in the reason: an agent could write kilobytes of its own
    text into the chain with each refused call."""
    bad = "forged<script>" + "x" * 3000
    before = len(sb.state.audit.events())
    r = sb.http.post(f"/agents/{bad}/heartbeat", json={}, headers=sb.auth("agent-dev"))
    assert refusal(r) == (403, "FORBIDDEN")
    (event,) = sb.state.audit.events()[before:]
    assert event["action"] == "ACCESS_DENIED" and event["detail"]["instanceId"] is None
    assert len(event["detail"]["reason"]) <= 501 and len(json.dumps(event)) < 2000


def test_every_route_is_a_declared_operation_and_denies_by_default(sb: Sandbox) -> None:
    """Walk app.routes: each is an Operation with an access rule; every non-public one refuses
    a request without credentials (401) — including the replay routes, once they exist."""
    checked = 0
    for route in sb.app.routes:
        op = route.endpoint.operation  # type: ignore[attr-defined]
        assert isinstance(op, Operation) and op.access is not None
        if op.access.kind == "public":
            continue
        path = route.path
        for name in op.path_params:
            path = path.replace("{" + name + "}", "1" if name == "seq" else "x-1")
        r = httpx.request(
            op.method, sb.server.url + path, json={} if op.method == "POST" else None, timeout=10
        )
        assert r.status_code == 401, (op.method, path, r.status_code, r.text)
        checked += 1
    assert checked >= 8


def test_a_route_without_an_operation_is_refused() -> None:
    async def naked(request: Request) -> Response:
        return Response("hi")

    with pytest.raises(TypeError):
        _check_routes([Route("/api/v1/naked", naked)])
    with pytest.raises(TypeError):
        Operation("GET", "/x", _boom, operation_id="x", summary="x", responses={200: ("x", None)})  # type: ignore[call-arg]


# --------------------------------------------------------------------------- OpenAPI


def test_openapi_lists_exactly_the_app_routes(sb: Sandbox) -> None:
    r = sb.http.get("/api-docs")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, item in doc["paths"].items() for method in item}
    served = set()
    for route in sb.app.routes:
        for method in route.methods - {"HEAD"}:  # type: ignore[attr-defined]
            served.add((route.path, method))
    assert documented == served
    for path, item in doc["paths"].items():
        for method, op in item.items():
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == set(__import__("re").findall(r"\{(\w+)\}", path)), (method, path)
            assert "x-access" in op and "responses" in op
            if op["x-access"] != "anyone":
                assert "401" in op["responses"]
    assert doc["paths"]["/api/v1/search/executions"]["post"]["x-permission"] == "executions:read"
    assert doc["paths"]["/api/v1/data/chunks"]["post"]["responses"]["503"]
    # every $ref resolves
    text = json.dumps(doc)
    for name in set(__import__("re").findall(r'"#/components/schemas/(\w+)"', text)):
        assert name in doc["components"]["schemas"], name


def test_real_answers_validate_against_the_document(sb: Sandbox) -> None:
    """Answers (and the chunks the agents send) against the document's JSON Schemas (2020-12,
    the dialect of OpenAPI 3.1), so the document says what the app does."""
    doc = sb.http.get("/api-docs").json()

    def check(instance: Any, path: str, method: str, status: str) -> None:
        content = doc["paths"][API_PREFIX + path][method]["responses"][status]["content"]
        schema = next(iter(content.values()))["schema"]
        Draft202012Validator({**schema, "components": doc["components"]}).validate(instance)

    check(sb.http.get("/health").json(), "/health", "get", "200")
    check(
        sb.http.post("/search/executions", json={}, headers=sb.auth("analyst")).json(),
        "/search/executions",
        "post",
        "200",
    )
    check(
        sb.http.get("/executions/exec-dev-0", headers=sb.auth("analyst")).json(),
        "/executions/{executionId}",
        "get",
        "200",
    )
    check(
        sb.http.get("/executions/exec-dev-0/processors/1/snapshot", headers=sb.auth("analyst")).json(),
        "/executions/{executionId}/processors/{seq}/snapshot",
        "get",
        "200",
    )
    check(sb.http.get("/agents", headers=sb.auth("analyst")).json(), "/agents", "get", "200")
    check(
        sb.http.post("/agents/agent-dev/heartbeat", headers=sb.auth("agent-dev")).json(),
        "/agents/{instanceId}/heartbeat",
        "post",
        "200",
    )
    login = sb.http.post("/auth/login", json={"username": "analyst", "password": "analyst"}).json()
    check(login, "/auth/login", "post", "200")
    refreshed = sb.http.post("/auth/refresh", headers={"Authorization": f"Bearer {login['refreshToken']}"})
    check(refreshed.json(), "/auth/refresh", "post", "200")
    reg = sb.http.post(
        "/agents/register",
        headers=sb.bootstrap(),
        json={"instanceId": "agent-y", "applicationId": "orders", "environmentId": "dev"},
    )
    check(reg.json(), "/agents/register", "post", "200")
    chunk = make_chunk("exec-doc-1", "ex-doc-1")
    Draft202012Validator({"$ref": "#/components/schemas/Chunk", "components": doc["components"]}).validate(
        chunk
    )
    check(sb.post_chunk("dev", chunk).json(), "/data/chunks", "post", "202")
    cmd = sb.server.call(lambda: sb.state.agents.send("agent-dev", {"type": "replay"}))
    ack = sb.http.post(
        f"/agents/agent-dev/commands/{cmd['commandId']}/ack",
        json={"status": "SUCCESS"},
        headers=sb.auth("agent-dev"),
    )
    check(ack.json(), "/agents/{instanceId}/commands/{commandId}/ack", "post", "200")
    check(
        sb.http.get("/executions/nope", headers=sb.auth("analyst")).json(),
        "/executions/{executionId}",
        "get",
        "404",
    )
    check(
        sb.http.post("/search/executions", json={"limit": 5000}, headers=sb.auth("analyst")).json(),
        "/search/executions",
        "post",
        "400",
    )

    # Each error answer's code is one the document lists for its status on that operation
    # (security review finding 7: four codes the app answers were missing).
    def check_code(r: httpx.Response, path: str, method: str, code: str) -> None:
        assert refusal(r)[1] == code, r.text
        described = doc["paths"][API_PREFIX + path][method]["responses"][str(r.status_code)]["description"]
        assert code in re.findall(r"[A-Z][A-Z_]+", described), (code, described)
        check(r.json(), path, method, str(r.status_code))

    replay = {"sourceExchangeId": "ex-dev-0", "reason": "r"}
    op = sb.auth("operator")
    check_code(
        sb.http.post("/replays", json=replay, headers=op), "/replays", "post", "IDEMPOTENCY_KEY_REQUIRED"
    )
    bad_key = {**op, "Idempotency-Key": "x" * 300}
    check_code(
        sb.http.post("/replays", json=replay, headers=bad_key), "/replays", "post", "BAD_IDEMPOTENCY_KEY"
    )
    # A value JCS cannot write (an integer past 2**53) in a secret header: named by its place only.
    big = {**replay, "modifiedPayload": {"headers": {"X-Api-Key": 2**70}}}
    r = sb.http.post("/replays", json=big, headers={**op, "Idempotency-Key": "k-not-canonical"})
    check_code(r, "/replays", "post", "NOT_CANONICAL")
    assert str(2**70) not in r.text and r.json()["details"]["field"] == "modifiedPayload.headers"
    forged = sb.http.get("/replays/replay-x/events", params={"ticket": "forged"})
    check_code(forged, "/replays/{replayId}/events", "get", "BAD_TICKET")
    late = make_chunk("exec-doc-2", "ex-doc-2")
    late["processors"][0]["startTime"] = "yesterday"
    check_code(sb.post_chunk("dev", late), "/data/chunks", "post", "BAD_TIME")
    check_code(
        sb.http.request("GET", "/health", content=b" " * (2 << 20)), "/health", "get", "PAYLOAD_TOO_LARGE"
    )


#: Codes in the server's sources that no HTTP answer carries, and why (the test below).
_NOT_ANSWERED = {
    "APP_INVALID": "start-up (runner.py loads the app folder)",
    "CANNOT_LISTEN": "start-up",
    "DATA_DIR_INVALID": "start-up",
    "DATA_DIR_IN_USE": "start-up",
    "UNSAFE_BIND": "start-up",
    "STORE_PATH": "start-up",
    "SCHEMA_TOO_NEW": "start-up",
    "AUDIT_KEY_INVALID": "start-up",
    "SIGNING_KEY_INVALID": "start-up",
    "USERS_FILE_INVALID": "start-up",
    "BAD_ANSWER": "the sandbox agent's (agent.py), a client of the server",
    "BAD_COMMAND": "the sandbox agent's",
    "BAD_BUNDLE": "offline audit verification (moat_nb.audit)",
    "BAD_KEY": "offline audit verification",
    "BAD_AUDIT_EVENT": "the server's own audit calls; verify reports a bad event in its answer",
    "TRACE_INCOMPLETE": "a MoatError: answered as 500 SERVER_ERROR",
    "STORE_CLOSED": "a MoatError: answered as 500 SERVER_ERROR",
    "DUPLICATE_COMMAND": "command ids are the server's own uuid4",
    "HTTP_ERROR": "a Starlette HTTPException other than 404/405, which no route raises",
    "API_ERROR": "the base class's code; every raise names its own",
}


def test_every_error_code_the_server_raises_is_documented() -> None:
    """Every error code written in the server's sources (``code="..."`` arguments and the
    ``code`` of error classes) is in the OpenAPI document's lists, or named above as one no
    HTTP answer carries: a new code fails here until it is documented (section 4; security
    review finding 7)."""
    import moat_nb
    from moat_nb import errors as errors_module
    from moat_nb.sandbox.openapi import ERROR_CODES

    root = Path(moat_nb.__file__).parent
    files = [
        *sorted((root / "sandbox").glob("*.py")),
        *(root / name for name in ("model.py", "payload.py", "audit.py")),
    ]
    found: dict[str, str] = {}
    for file in files:
        text = file.read_text(encoding="utf-8")
        for code in re.findall(r'\bcode\s*=\s*"([A-Z][A-Z_]+)"', text):  # arguments, class attributes
            found.setdefault(code, file.name)
    # The error classes the server answers with (ApiError's, and RecordError's as 400/409).
    for cls in vars(errors_module).values():
        if isinstance(cls, type) and issubclass(cls, (errors_module.ApiError, errors_module.RecordError)):
            found.setdefault(cls.code, "errors.py")
    documented = {code for codes in ERROR_CODES.values() for code in codes}
    assert {"VALIDATION", "NOT_FOUND", "PAYLOAD_TOO_LARGE", "IDEMPOTENCY_KEY_REQUIRED"} <= set(found)
    missing = {
        code: where for code, where in found.items() if code not in documented and code not in _NOT_ANSWERED
    }
    assert not missing, f"error codes the API may answer but its document does not list: {missing}"


def test_operation_declarations_are_checked() -> None:
    with pytest.raises(ValueError):
        Operation(
            "get", "/x", _boom, access=PUBLIC, operation_id="x", summary="x", responses={200: ("x", None)}
        )
    with pytest.raises(ValueError):
        Operation("GET", "/x", _boom, access=PUBLIC, operation_id="x", summary="x")
    from moat_nb.sandbox.openapi import agent, self_checked

    with pytest.raises(ValueError):
        Operation(
            "GET",
            "/x/{id}",
            _boom,
            access=agent("instanceId"),
            operation_id="x",
            summary="x",
            responses={200: ("x", None)},
        )
    with pytest.raises(ValueError):
        self_checked("")


def test_state_keys_live_outside_the_database(sb: Sandbox) -> None:
    keys = sb.state.data_dir / "keys"
    for name in ("jwt.key", "commands.pem", "redaction.key"):
        assert (keys / name).exists() and (keys / name).stat().st_mode & 0o077 == 0
    db = (sb.state.data_dir / "sandbox.db").read_bytes()
    for name in ("jwt.key", "redaction.key"):
        assert (keys / name).read_bytes() not in db
    assert len(sb.state.bootstrap_token) >= 32  # made per start when the config gives none


# --------------------------------------------------------------------------- redaction of chunks

_NAMES = st.sampled_from(
    ["id", "total", "Authorization", "x-api-key", "X_Api.Key", "pass word", "PASSWORD",
     "clientSecret", "accessKey", "Set-Cookie", "token", "pass\nword", "notes", "passw\u00f6rd"]
)  # fmt: skip
_LEAVES = st.one_of(
    st.none(), st.integers(), st.text(max_size=8), st.sampled_from(["[REDACTED:0123456789abcdef]"])
)
_TREES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(_NAMES, inner, max_size=4),
        # JSON text inside a value, as Camel routes keep a body in a property (any escaping).
        st.dictionaries(_NAMES, inner, max_size=3).map(lambda d: json.dumps(d)),
        st.dictionaries(_NAMES, inner, max_size=3).map(lambda d: json.dumps(d, ensure_ascii=False)),
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    headers=st.dictionaries(_NAMES, _TREES, max_size=4),
    properties=st.dictionaries(_NAMES, _TREES, max_size=4),
    body=_TREES.map(json.dumps),
)
def test_redact_chunk_screen_gives_what_full_redaction_gives(
    headers: dict[str, Any], properties: dict[str, Any], body: str
) -> None:
    """The screen that lets redact_chunk skip maps and bodies with no secret name never lets a
    secret through: the result equals redacting every value the long way, then hiding every
    value so hidden wherever else the body, or a header's or property's value, spells it."""
    redactor = Redactor(b"k" * 32)
    record = ProcessorRecord(
        execution_id="x-1", exchange_id="e-1", seq=1, processor_id="p", processor_type="log",
        route_id="r", status="COMPLETED", input_headers=headers, output_headers=headers,
        input_properties=properties, properties=properties, input_body=body, output_body=body,
    )  # fmt: skip
    chunk = Chunk(execution_id="x-1", exchange_id="e-1", chunk_seq=0, processors=(record, record))
    found: set[str] = set()
    mask = collecting(redactor.value, found)
    redact_mapping(headers, mask)
    redact_mapping(properties, mask)
    expected_body = scrub_body(redact_body(body, mask), found, redactor.value)

    def scrubbed(value: Any) -> Any:
        if isinstance(value, str):
            return scrub_body(value, found, redactor.value)
        if isinstance(value, dict):
            return {k: scrubbed(v) for k, v in value.items()}
        return [scrubbed(v) for v in value] if isinstance(value, list) else value

    for p in redact_chunk(redactor, chunk).processors:
        assert p.input_headers == p.output_headers == scrubbed(redactor.mapping(headers))
        assert p.input_properties == p.properties == scrubbed(redactor.mapping(properties))
        assert p.input_body == p.output_body == expected_body
        # (A short secret is hidden only where it stands alone: "1234" is left in "12345".)
        assert not any(secret in p.output_body for secret in found if len(secret) >= ALONE_BELOW)
    if not may_hold_secret_names(json.dumps({"h": headers, "p": properties, "b": body})):
        assert redact_chunk(redactor, chunk) == chunk


def test_redact_chunk_hides_secrets_quoted_in_error_texts() -> None:
    # A route's exception may quote the payload; the values hidden by name elsewhere in the chunk
    # (and a replay's payload secrets, passed in) are hidden in its error texts too.
    redactor = Redactor(b"k" * 32)
    body = json.dumps({"orderId": None, "card": {"apiKey": "key-in-body-1"}})
    record = ProcessorRecord(
        execution_id="x-1", exchange_id="e-1", seq=1, processor_id="p", processor_type="bean",
        route_id="r", status="FAILED", input_headers={"Authorization": "Bearer tok-in-header"},
        input_body=body, error_type="Invalid",
        error_message="order {'card': {'apiKey': 'key-in-body-1'}} by Bearer tok-in-header, pin 98765",
    )  # fmt: skip
    execution = Execution(
        execution_id="x-1", exchange_id="e-1", route_id="r", status="FAILED",
        error_message=record.error_message, error_stack_trace="Traceback: key-in-body-1\n  pin=98765",
    )  # fmt: skip
    chunk = Chunk("x-1", "e-1", 0, execution=execution, processors=(record,))
    out = redact_chunk(redactor, chunk, frozenset({"98765"}))
    texts = [out.processors[0].error_message, out.execution.error_message, out.execution.error_stack_trace]
    for text in texts:
        assert "key-in-body-1" not in text and "tok-in-header" not in text and "98765" not in text
    assert redactor.value("key-in-body-1") in texts[0] and redactor.value("98765") in texts[2]
    assert out.processors[0].error_message.startswith("order {'card': {'apiKey': '[REDACTED:")
    # Nothing hidden, nothing scrubbed: the chunk stays as it was.
    plain = replace(record, input_headers={"channel": "web"}, input_body="{}", error_message="pin 98765")
    assert redact_chunk(redactor, Chunk("x-1", "e-1", 0, processors=(plain,))).processors == (plain,)


def test_redact_chunk_hides_a_secret_a_route_copied_into_a_body() -> None:
    # setBody: simple: "key ${header.X-Api-Key}": no name in the body says it holds a secret
    # (security.md VAL-6; found by review). Text stays text; JSON stays JSON.
    redactor = Redactor(b"k" * 32)
    key = "partner-key-0123456789"
    marker = redactor.value(key)
    bodies = [
        f"called with {key}",
        json.dumps({"note": f"key {key}", key: 1, "n": [7]}),
        json.dumps({"echo": {"auth": [f"Bearer {key}"]}}),
    ]
    records = tuple(
        ProcessorRecord(
            execution_id="x-1", exchange_id="e-1", seq=i, processor_id=f"p{i}", processor_type="setBody",
            route_id="r", status="COMPLETED", input_headers={"X-Api-Key": key}, input_body=body,
            output_body=body,
        )
        for i, body in enumerate(bodies, start=1)
    )  # fmt: skip
    execution = Execution(
        execution_id="x-1", exchange_id="e-1", route_id="r", status="COMPLETED", output_body=bodies[1]
    )
    out = redact_chunk(redactor, Chunk("x-1", "e-1", 0, execution=execution, processors=records))
    texts = [t for p in out.processors for t in (p.input_body, p.output_body)] + [out.execution.output_body]
    assert all(key not in t for t in texts)
    assert out.processors[0].output_body == f"called with {marker}"
    assert json.loads(out.processors[1].output_body) == {"note": f"key {marker}", marker: 1, "n": [7]}
    assert json.loads(out.processors[2].output_body) == {"echo": {"auth": [f"Bearer {marker}"]}}
    # A number that spells a secret (a PIN put into a JSON body) becomes its marker, as a string.
    pin = replace(
        records[0], input_headers={"X-Pin-Token": "424242"}, output_body='{"pin": 424242, "qty": 42}'
    )
    (scrubbed,) = redact_chunk(redactor, Chunk("x-1", "e-1", 0, processors=(pin,))).processors
    assert json.loads(scrubbed.output_body) == {"pin": redactor.value("424242"), "qty": 42}


def test_redact_chunk_hides_a_secret_a_route_copied_into_a_header_or_property() -> None:
    # setHeader: X-Upstream: ${header.Authorization}, setProperty: order: ${body}: no name says
    # the value is a secret (section 4 "Secrets"; security.md VAL-6; found by the security walk).
    redactor = Redactor(b"k" * 32)
    token = "Bearer tok-0123456789abcdef"
    marker = redactor.value(token)
    order = json.dumps({"note": f"auth {token}", "qty": 1})
    record = ProcessorRecord(
        execution_id="x-1", exchange_id="e-1", seq=1, processor_id="p", processor_type="setHeader",
        route_id="r", status="COMPLETED", input_headers={"Authorization": token},
        output_headers={"Authorization": token, "X-Upstream": token, "List": [token, "x"]},
        input_properties={"order": order}, properties={"order": order, "n": 7, "nested": {"a": token}},
    )  # fmt: skip
    execution = Execution(
        execution_id="x-1", exchange_id="e-1", route_id="r", status="COMPLETED",
        input_headers={"Authorization": token}, output_headers={"X-Upstream": token},
        output_properties={"order": order},
    )  # fmt: skip
    out = redact_chunk(redactor, Chunk("x-1", "e-1", 0, execution=execution, processors=(record,)))
    (p,) = out.processors
    assert token not in repr(out)
    assert p.output_headers == {"Authorization": marker, "X-Upstream": marker, "List": [marker, "x"]}
    assert json.loads(p.properties["order"]) == {"note": f"auth {marker}", "qty": 1}
    assert p.properties["n"] == 7 and p.properties["nested"] == {"a": marker}
    assert out.execution.output_headers == {"X-Upstream": marker}
    assert json.loads(out.execution.output_properties["order"])["note"] == f"auth {marker}"


@settings(max_examples=150, deadline=None)
@given(
    maps=st.lists(st.dictionaries(_NAMES, _TREES, max_size=3), min_size=1, max_size=3),
    picks=st.lists(st.tuples(*[st.integers(0, 2)] * 5), min_size=1, max_size=6),
)
def test_shared_maps_change_nothing_but_identity(
    maps: list[dict[str, Any]], picks: list[tuple[int, ...]]
) -> None:
    """share_maps (the ingest endpoint, before decoding) makes equal maps one object and
    nothing else: the decoded chunk, and its redaction, equal those of the chunk as sent; a
    record that redaction leaves equal comes back as the same object."""
    redactor = Redactor(b"k" * 32)

    def wire() -> dict[str, Any]:
        def pick(i: int) -> dict[str, Any]:
            return json.loads(json.dumps(maps[i % len(maps)]))  # a fresh, equal copy each time

        records = [
            {"executionId": "x-1", "exchangeId": "e-1", "seq": n, "processorId": f"p{n}",
             "processorType": "log", "routeId": "r", "status": "COMPLETED",
             "inputHeaders": pick(a), "outputHeaders": pick(b), "inputProperties": pick(c),
             "properties": pick(d), "inputBody": json.dumps(maps[e % len(maps)])}
            for n, (a, b, c, d, e) in enumerate(picks, start=1)
        ]  # fmt: skip
        return {"executionId": "x-1", "exchangeId": "e-1", "chunkSeq": 0, "processors": records}

    sent = wire()
    shared = wire()
    share_maps(shared)
    assert Chunk.from_wire(shared) == Chunk.from_wire(sent)
    ids: dict[str, int] = {}
    for record in shared["processors"]:
        for name in ("inputHeaders", "outputHeaders", "inputProperties", "properties"):
            if record[name]:
                text = json.dumps(record[name])
                assert ids.setdefault(text, id(record[name])) == id(record[name])  # one object per text
    chunk = Chunk.from_wire(shared)
    redacted = redact_chunk(redactor, chunk)
    assert redacted == redact_chunk(redactor, Chunk.from_wire(sent))
    for before, after in zip(chunk.processors, redacted.processors, strict=True):
        assert (after is before) == (after == before)


def test_a_trace_whose_secrets_are_fingerprints_already_is_not_copied() -> None:
    """A replay's trace carries the stored trace's fingerprints ("Authorization" in every
    record of an orders replay): redaction finds nothing to change and copies no record."""
    marker = "[REDACTED:4af6e12342e5b71c]"
    headers = {"Content-Type": "application/json", "Authorization": marker}
    body = {
        "executionId": "x-1", "exchangeId": "e-1", "chunkSeq": 0, "final": False,
        "processors": [
            {"executionId": "x-1", "exchangeId": "e-1", "seq": n, "processorId": f"p{n}",
             "processorType": "log", "routeId": "r", "status": "COMPLETED",
             "inputHeaders": dict(headers), "outputHeaders": dict(headers),
             "inputBody": '{"orderId": "o-1"}', "outputBody": '{"orderId": "o-1"}'}
            for n in range(1, 6)
        ],
    }  # fmt: skip
    share_maps(body)
    chunk = Chunk.from_wire(body)
    redacted = redact_chunk(Redactor(b"k" * 32), chunk)
    assert all(a is b for a, b in zip(chunk.processors, redacted.processors, strict=True))
    assert redacted.processors[4].input_headers is redacted.processors[0].output_headers
    assert redacted.processors[0].input_headers["Authorization"] == marker
    # A secret not yet fingerprinted is still redacted, in every record that holds it.
    body["processors"][2]["outputHeaders"] = {**headers, "Authorization": "Bearer live-token"}
    share_maps(body)
    chunk = Chunk.from_wire(body)
    redacted = redact_chunk(Redactor(b"k" * 32), chunk)
    assert redacted.processors[2].output_headers["Authorization"].startswith("[REDACTED:")
    assert redacted.processors[2].output_headers["Authorization"] != marker
    assert [a is b for a, b in zip(chunk.processors, redacted.processors, strict=True)] == [
        True,
        True,
        False,
        True,
        True,
    ]


def test_secret_screen_sees_through_nesting_but_not_escapes() -> None:
    assert not may_hold_secret_names('{"orderId":"o-1","lines":[{"sku":"A"}]}')
    assert may_hold_secret_names('{"X-API-Key":"k"}')
    assert may_hold_secret_names(json.dumps({"order": json.dumps({"pass_word": "x"})}))
    assert may_hold_secret_names('{"pass\\u0077ord":"x"}')  # "password" spelt with an escape
    assert may_hold_secret_names('{"pass\\nword":"x"}')  # a separator spelt with an escape


def test_ascii_separators_are_exactly_what_the_name_pattern_drops() -> None:
    """The bytes screen drops the same ASCII characters as ``payload._normalise`` (+ backslash)."""
    from moat_nb.sandbox.server import _ASCII_DROPPED, _NAME_SEPARATORS

    pattern = {chr(c) for c in range(128) if _NAME_SEPARATORS.fullmatch(chr(c))}
    assert set(_ASCII_DROPPED.decode("ascii")) == pattern | {"\\"}


def _slow_screen(text: str) -> bool:
    """The str-only screen, as it was before the bytes road (the reference), with every needle
    of the redaction rules (the server leaves out those that contain another)."""
    from moat_nb.payload import SECRET_HEADER_NAMES, SECRET_NAME_PARTS
    from moat_nb.sandbox.server import _NAME_SEPARATORS

    if "\\" in text and re.search(r"\\+[ubfnrt]", text):  # the escape pattern, as a pattern
        return True
    flat = _NAME_SEPARATORS.sub("", text.replace("\\", "").lower())
    return any(needle in flat for needle in {*SECRET_HEADER_NAMES, *SECRET_NAME_PARTS})


_SCREEN_TEXT = st.text(
    alphabet=st.sampled_from(list('PASWORDtokenapikeyXcs-_. \t\n\x1c\x1f\\"{}:ubK\u212aé\u0130')),
    max_size=60,
) | st.lists(
    st.sampled_from(
        ["proxy-authorization", "Set-Cookie", "x_api.key", "authorization", "cookie", "apikey", "x", "-", '"']
    ),
    max_size=6,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(text=_SCREEN_TEXT)
def test_secret_screen_bytes_road_equals_the_str_road(text: str) -> None:
    assert may_hold_secret_names(text) == _slow_screen(text)
    assert may_hold_secret_names(text.encode("utf-8")) == _slow_screen(text)


def test_secret_screen_sees_a_kelvin_sign_as_k() -> None:
    # str.lower() maps U+212A KELVIN SIGN to an ASCII "k": "apiKey" spelt with it is a secret name.
    assert may_hold_secret_names('{"api\u212aey":"x"}')
    assert may_hold_secret_names('{"api\u212aey":"x"}'.encode())
