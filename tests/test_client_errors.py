"""Error handling of the client (moat_nb/client.py) against scripted HTTP answers.

httpx.MockTransport stands in for the network here only: these tests need answers a healthy
server never gives (every error status, broken connections, expired tokens on cue). Everything
that a real server can answer is tested against the sandbox in tests/test_client.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from moat_nb.client import CLIENT, AsyncPlatform, Platform, RetryPolicy, Session
from moat_nb.errors import (
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

URL = "http://platform.test"
TOKENS = {"accessToken": "a1", "refreshToken": "r1", "expiresIn": 100, "user": {"username": "u"}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def platform(
    handler: Callable[[httpx.Request], httpx.Response], clock: Clock | None = None, **session: object
) -> Platform:
    kwargs = {"username": "u", "password": "p", **session}
    s = Session(URL, clock=clock or Clock(), **kwargs)  # type: ignore[arg-type]
    p = Platform(session=s, transport=httpx.MockTransport(handler), retry=RetryPolicy(attempts=3))
    p._sleep = lambda s: None
    return p


def envelope(status: int, code: str, message: str = "it went wrong", **details: object) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "message": message, "details": details})


def answering(status: int, body: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/auth/login":
            return httpx.Response(200, json=TOKENS)
        return body

    return handler


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "VALIDATION", ValidationError),
        (400, "BAD_JSON", ValidationError),
        (400, "BAD_HEADER", ValidationError),
        (400, "CONTROL_HEADER", ControlHeaderRejected),
        (401, "UNAUTHORIZED", AuthenticationError),
        (401, "BAD_CREDENTIALS", AuthenticationError),
        (401, "BAD_TOKEN", AuthenticationError),
        (403, "FORBIDDEN", PermissionDenied),
        (403, "TIER_NOT_ENTITLED", TierNotEntitled),
        (404, "NOT_FOUND", NotFound),
        (413, "PAYLOAD_TOO_LARGE", PayloadTooLarge),
        (422, "IDEMPOTENCY_CONFLICT", IdempotencyConflict),
        (503, "AGENT_UNAVAILABLE", AgentUnavailable),
        (503, "AUDIT_UNAVAILABLE", AuditUnavailable),
        (500, "SERVER_ERROR", ServerError),
        (502, "BAD_GATEWAY", ServerError),
        (409, "IN_FLIGHT", ApiError),
    ],
)
def test_every_envelope_becomes_its_class(status: int, code: str, cls: type[ApiError]) -> None:
    p = platform(answering(status, envelope(status, code, "the server's words", field="x")))
    with pytest.raises(ApiError) as info:
        p.execution("ex-1")
    exc = info.value
    assert type(exc) is cls
    assert (exc.status, exc.code, exc.message) == (status, code, "the server's words")
    assert exc.details["field"] == "x"
    assert exc.hint, "every error says what to do"
    assert str(exc).startswith(f"HTTP {status} [{code}] the server's words — ")


def test_forbidden_names_the_missing_permission() -> None:
    body = envelope(403, "FORBIDDEN", "user:operator lacks permission replay:prod", missing=["replay:prod"])
    p = platform(answering(403, body))
    with pytest.raises(PermissionDenied) as info:
        p.execution("ex-1")
    assert "grant replay:prod" in info.value.hint and "no role implies replay:prod" in info.value.hint


def test_the_server_hint_wins() -> None:
    p = platform(answering(404, envelope(404, "NOT_FOUND", "no replay 'x'", hint="list your replays")))
    with pytest.raises(NotFound) as info:
        p.execution("x")
    assert info.value.hint == "list your replays"


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_gateway_answering_for_a_platform_it_cannot_reach_is_told_apart(status: int) -> None:
    # A proxy's own page (no envelope) is not the platform's 503 AGENT_UNAVAILABLE: code GATEWAY,
    # which a batch counts as "could not reach the platform".
    p = platform(answering(status, httpx.Response(status, text="<html>upstream down</html>")))
    with pytest.raises(ServerError) as info:
        p.execution("ex-1")
    assert info.value.code == "GATEWAY" and info.value.status == status
    assert "is it running?" in (info.value.hint or "")
    enveloped = platform(answering(503, envelope(503, "AGENT_UNAVAILABLE", "no agent")))
    with pytest.raises(ApiError) as info:
        enveloped.execution("ex-1")
    assert info.value.code == "AGENT_UNAVAILABLE"


def test_a_body_that_is_no_envelope_still_maps_by_status() -> None:
    p = platform(answering(502, httpx.Response(502, text="<html>Bad Gateway</html>")))
    with pytest.raises(ServerError) as info:
        p.execution("ex-1")
    assert "GET /api/v1/executions/ex-1 answered HTTP 502" in info.value.message
    assert "Bad Gateway" in info.value.message
    p = platform(answering(404, httpx.Response(404, json={"detail": "nope"})))
    with pytest.raises(NotFound, match="HTTP 404"):
        p.execution("ex-1")


def test_a_redirect_is_an_error_that_names_the_address_to_use() -> None:
    for status in (301, 302, 307, 308):
        p = platform(
            answering(status, httpx.Response(status, headers={"Location": "https://platform.test/x"}))
        )
        with pytest.raises(ServerError, match="a redirect to https://platform.test/x") as info:
            p.execution("ex-1")
        assert info.value.code == "REDIRECTED" and info.value.status == status
        assert "MOAT_URL" in (info.value.hint or "")


def test_a_2xx_that_is_not_json_is_a_server_error() -> None:
    p = platform(answering(200, httpx.Response(200, text="<html>login page</html>")))
    with pytest.raises(ServerError, match="not JSON") as info:
        p.health()
    assert info.value.code == "BAD_RESPONSE"
    # What json.loads would read as NaN or infinity (a verifier must not), said as what it is.
    for text in ('{"status": NaN}', '{"x": 1e999}', '{"x": -Infinity}'):
        p = platform(
            answering(200, httpx.Response(200, text=text, headers={"content-type": "application/json"}))
        )
        with pytest.raises(ServerError, match="a number JSON cannot carry") as info:
            p.health()
        assert info.value.code == "NON_FINITE_NUMBER" and "MOAT_URL" not in (info.value.hint or "")


def test_a_redirect_of_the_trace_stream_is_redirected_too() -> None:
    from moat_nb.stream import ReplayRun, StreamPolicy

    p = platform(answering(302, httpx.Response(302, headers={"Location": "https://platform.test/login"})))
    run = ReplayRun({"replayId": "replay-1"}, platform=p, policy=StreamPolicy(max_retries=1, max_delay=0.001))
    with pytest.raises(ServerError, match="a redirect to https://platform.test/login") as info:
        list(run.events())
    assert info.value.code == "REDIRECTED"


# --------------------------------------------------------------------------- network failures


def test_network_failure_is_retried_then_raised_as_transport_error() -> None:
    attempts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        raise httpx.ConnectError("connection refused", request=request)

    p = platform(handler)
    delays: list[float] = []
    p._sleep = delays.append
    with pytest.raises(TransportError) as info:
        p.health()
    assert len(attempts) == 4  # the first try and RetryPolicy.attempts resends
    assert delays == [0.2, 0.4, 0.8]
    assert "4 attempt(s)" in info.value.message and "MOAT_URL" in (info.value.hint or "")


def test_replay_resends_with_the_same_idempotency_key_and_a_new_call_gets_a_new_key() -> None:
    keys: list[str] = []
    failures = iter([True, True, False, False])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/auth/login":
            return httpx.Response(200, json=TOKENS)
        assert request.url.path == "/api/v1/replays"
        keys.append(request.headers["Idempotency-Key"])
        if next(failures):  # the request went out, the answer was lost
            raise httpx.ReadTimeout("timed out", request=request)
        body = json.loads(request.content)
        assert body == {"sourceExchangeId": "ID-1", "reason": "why", "client": CLIENT}
        return httpx.Response(202, json={"replayId": f"replay-{len(keys)}", "status": "PENDING"})

    p = platform(handler)
    first = p.replay("ID-1", reason="why")
    assert len(keys) == 3 and len(set(keys)) == 1
    second = p.replay("ID-1", reason="why")
    assert len(keys) == 4 and keys[3] != keys[0]
    assert (first.replay_id, second.replay_id) == ("replay-3", "replay-4")


def test_a_replay_without_reason_is_refused_before_any_request() -> None:
    p = platform(lambda r: pytest.fail("no request expected"))  # type: ignore[arg-type,return-value]
    with pytest.raises(ValidationError, match="reason"):
        p.replay("ID-1", reason=" ")


# --------------------------------------------------------------------------- tokens


class Server:
    """Scripted auth endpoints: counts logins and refreshes; answers 401 TOKEN_EXPIRED for
    access tokens listed in ``expired``."""

    def __init__(self) -> None:
        self.logins = 0
        self.refreshes = 0
        self.expired: set[str] = set()
        self.refresh_ok = True
        self.seen: list[tuple[str, str | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("Authorization")
        self.seen.append((request.url.path, auth))
        if request.url.path == "/api/v1/auth/login":
            self.logins += 1
            return httpx.Response(200, json={**TOKENS, "accessToken": f"login{self.logins}"})
        if request.url.path == "/api/v1/auth/refresh":
            if not self.refresh_ok:
                return envelope(401, "TOKEN_EXPIRED", "the refresh token expired")
            self.refreshes += 1
            assert auth == "Bearer r1"
            return httpx.Response(200, json={"accessToken": f"refreshed{self.refreshes}", "expiresIn": 100})
        if auth is None or auth.removeprefix("Bearer ") in self.expired:
            return envelope(401, "TOKEN_EXPIRED", "the access token expired")
        return httpx.Response(200, json={"status": "UP", "auth": auth})


def test_the_token_is_refreshed_shortly_before_it_expires() -> None:
    server, clock = Server(), Clock()
    p = platform(server, clock)
    assert p.health()["auth"] == "Bearer login1"
    clock.now += 85  # expiresIn 100, margin 10 s: not due yet
    assert p.health()["auth"] == "Bearer login1"
    clock.now += 6
    assert p.health()["auth"] == "Bearer refreshed1"
    assert (server.logins, server.refreshes) == (1, 1)
    assert not any(path != "/api/v1/auth/login" and auth is None for path, auth in server.seen)


def test_a_401_token_expired_refreshes_once_and_resends() -> None:
    server = Server()
    p = platform(server)
    p.health()
    server.expired.add("login1")  # the server revoked it early (e.g. its clock runs ahead)
    assert p.health()["auth"] == "Bearer refreshed1"
    server.expired.add("refreshed1")
    server.expired.add("refreshed2")  # still expired after one renewal: give up, in words
    with pytest.raises(AuthenticationError) as info:
        p.health()
    assert info.value.code == "TOKEN_EXPIRED" and server.refreshes == 2


def test_an_expired_refresh_token_falls_back_to_the_password() -> None:
    server, clock = Server(), Clock()
    p = platform(server, clock)
    p.health()
    server.refresh_ok = False
    clock.now += 1000
    assert p.health()["auth"] == "Bearer login2"


def test_a_refresh_token_as_token_is_used_to_get_access_tokens() -> None:
    server = Server()
    refresh = "x." + _b64({"typ": "refresh", "sub": "user:u"}) + ".y"
    server_refresh = Server.__call__

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/auth/refresh":
            assert request.headers["Authorization"] == f"Bearer {refresh}"
            request.headers["Authorization"] = "Bearer r1"
        return server_refresh(server, request)

    p = platform(handler, username=None, password=None, token=refresh)
    assert p.health()["auth"] == "Bearer refreshed1" and server.logins == 0


def test_an_access_token_is_sent_as_it_is_and_cannot_be_renewed() -> None:
    server = Server()
    p = platform(server, username=None, password=None, token="plain-access")
    assert p.health()["auth"] == "Bearer plain-access"
    server.expired.add("plain-access")
    with pytest.raises(AuthenticationError) as info:
        p.health()
    assert info.value.code == "TOKEN_EXPIRED" and "MOAT_TOKEN" in (info.value.hint or "")


def _b64(claims: dict) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")


# --------------------------------------------------------------------------- credentials


def test_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOAT_URL", URL + "/api/v1/")
    monkeypatch.setenv("MOAT_USER", "envuser")
    monkeypatch.setenv("MOAT_PASSWORD", "envpass")
    monkeypatch.delenv("MOAT_TOKEN", raising=False)
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=TOKENS)

    p = Platform(transport=httpx.MockTransport(handler))
    p.login()
    assert p.url == URL and p.session.api == URL + "/api/v1"
    assert bodies == [{"username": "envuser", "password": "envpass"}]
    # Arguments win over the environment.
    p = Platform(URL, username="arg", password="argpass", transport=httpx.MockTransport(handler))
    p.login()
    assert bodies[-1] == {"username": "arg", "password": "argpass"}


def test_missing_url_or_credentials_are_said_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MOAT_URL", "MOAT_USER", "MOAT_PASSWORD", "MOAT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError, match="MOAT_URL") as info:
        Platform()
    assert info.value.code == "NO_URL"
    with pytest.raises(AuthenticationError) as info2:
        Platform(URL, username="only-a-name")
    assert info2.value.code == "NO_CREDENTIALS" and "MOAT_PASSWORD" in (info2.value.hint or "")
    with pytest.raises(ValidationError, match="http"):
        Platform("ftp://x", token="t")


# --------------------------------------------------------------------------- async


def test_the_async_client_maps_errors_the_same_way() -> None:
    import asyncio

    async def main() -> MoatError:
        s = Session(URL, username="u", password="p")
        handler = answering(403, envelope(403, "TIER_NOT_ENTITLED", "tier LOW"))
        async with AsyncPlatform(session=s, transport=httpx.MockTransport(handler)) as p:
            try:
                await p.execution("ex-1")
            except MoatError as exc:
                return exc
        raise AssertionError("no error")

    exc = asyncio.run(main())
    assert type(exc) is TierNotEntitled and exc.status == 403


def test_wait_raises_for_a_replay_that_ended_otherwise_than_completed_whatever_it_names() -> None:
    # Found by review: a platform whose `end` named an execution for a TIMED_OUT replay (the
    # sandbox took one from an agent's ack) made wait() return that unrelated execution.
    from moat_nb.errors import ReplayFailed

    replay = {"replayId": "replay-1", "status": "TIMED_OUT", "result": {"errorMessage": "silent"}}
    stream = (
        'retry: 3000\n\nid: 1\nevent: status\ndata: {"replayId": "replay-1", "status": "TIMED_OUT"}\n\n'
        'id: 2\nevent: end\ndata: {"replayId": "replay-1", "status": "TIMED_OUT", '
        '"resultExecutionId": "x-prod-1"}\n\n'
    )
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/api/v1/auth/login":
            return httpx.Response(200, json=TOKENS)
        if request.url.path.endswith("/events"):
            return httpx.Response(200, text=stream, headers={"content-type": "text/event-stream"})
        if request.url.path == "/api/v1/replays/replay-1":
            return httpx.Response(200, json=replay)
        return envelope(404, "NOT_FOUND")

    with pytest.raises(ReplayFailed) as caught:
        platform(handler).replay_run("replay-1").wait()
    assert caught.value.status == "TIMED_OUT" and "silent" in caught.value.message
    assert "/api/v1/executions/x-prod-1" not in asked


def test_an_export_that_fails_half_way_leaves_the_earlier_file_and_no_part(tmp_path: object) -> None:
    # "Bad input gets a clear error and loses nothing": the writer wrote the path itself, so a
    # platform that failed on page 2 left a truncated Parquet file where the last good one was.
    from pathlib import Path

    import pyarrow.parquet as pq

    from moat_nb.model import Execution

    folder = Path(str(tmp_path))
    row = Execution(
        execution_id="x-1", exchange_id="e-1", route_id="orders", status="COMPLETED",
        environment="dev", application_id="orders", instance_id="orders-dev-1",
        start_time=None, duration_ms=1.0,
    ).to_wire()  # fmt: skip
    pages: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/auth/login":
            return httpx.Response(200, json=TOKENS)
        asked = json.loads(request.content)
        pages.append(asked["offset"])
        if asked["limit"] == 2:  # the earlier export: two rows on one page
            other = {**row, "executionId": "x-2", "exchangeId": "e-2"}
            return httpx.Response(200, json={"data": [row, other], "total": 2, "offset": 0, "limit": 2})
        if len(pages) == 1:
            return httpx.Response(200, json={"data": [row], "total": 3, "offset": 0, "limit": 1})
        return envelope(500, "INTERNAL", "the store went away")

    p = platform(handler)
    good = p.export({"environment": "dev"}, folder / "dev.parquet", limit=2, page_size=2)
    assert pq.read_table(good).num_rows == 2
    before = good.read_bytes()
    pages.clear()
    with pytest.raises(ServerError):
        p.export({"environment": "dev"}, folder / "dev.parquet", page_size=1)
    assert pages[:2] == [0, 1]  # the first page was written before the second failed
    assert good.read_bytes() == before
    assert sorted(f.name for f in folder.iterdir()) == ["dev.parquet"]
