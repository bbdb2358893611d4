"""The platform under bad input and faults (DESIGN.md sections 4, 6, 7; issue 4 items 2, 6, 7;
security.md VAL-1, VAL-2, VAL-3, VAL-6, AUD-7, AUD-9, IDEM-4, IDEM-6, IDEM-7, TEST-1).

Everything goes over HTTP to a real sandbox (one for the module: server, three agents, history).
Faults are made as an operator or a failing disk would make them: a trigger that aborts every
insert into the audit table, ``PRAGMA max_page_count`` on the replay writer's connection (disk
full), a second connection holding the write lock past the busy timeout, and ``kill -9`` of a
sandbox process in the middle of a burst of replays.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import logging
import os
import random
import re
import signal
import socket
import sqlite3
import string
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moat_nb.sandbox import start
from moat_nb.sandbox.agent import AgentConfig
from moat_nb.sandbox.runner import SandboxHandle

TERMINAL_ACTIONS = {"REPLAY_COMPLETED", "REPLAY_FAILED", "REPLAY_ERROR", "REPLAY_ABORTED"}


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    handle = start(
        data=tmp_path_factory.mktemp("hardening"),
        per_env=20,
        seed=23,
        agent_config=AgentConfig(chunk_processors=16),
        replay_timeout=10.0,
    )
    try:
        yield handle
    finally:
        handle.stop()


def sources(client: httpx.Client, environment: str = "dev", n: int = 20) -> list[dict[str, Any]]:
    r = client.post(
        "/search/executions",
        json={"environment": environment, "status": "COMPLETED", "isReplay": False, "limit": n},
    )
    assert r.status_code == 200, r.text
    return r.json()["data"]


def count(sb: SandboxHandle, sql: str, *args: Any) -> int:
    conn = sqlite3.connect(sb.state.store.path, timeout=30)
    try:
        return int(conn.execute(sql, args).fetchone()[0])
    finally:
        conn.close()


def envelope(r: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "message", "details"}, body
    if error is not None:
        assert body["error"] == error, body
    return body


# --------------------------------------------------------------------------- input rules


def test_bodies_over_1_mib_are_refused_while_reading(sb: SandboxHandle, user: Any) -> None:
    op = user("operator")
    big = b'{"sourceExchangeId": "x", "reason": "' + b"a" * (1 << 20) + b'"}'
    headers = {"Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"}
    assert envelope(op.post("/replays", content=big, headers=headers), 413)["error"] == "PAYLOAD_TOO_LARGE"

    def stream() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        for _ in range(64):
            yield b" " * 32768

    assert (
        envelope(op.post("/replays", content=stream(), headers=headers), 413)["error"] == "PAYLOAD_TOO_LARGE"
    )
    assert envelope(httpx.post(f"{sb.api}/auth/login", content=big), 413)["error"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"sourceExchangeId": "a", "sourceExchangeId": "b", "reason": "r"}', "duplicate-key"),
        (
            b'{"sourceExchangeId": "a", "reason": "r", "modifiedPayload": {"properties": {"x": NaN}}}',
            "non-finite",
        ),
        (
            b'{"sourceExchangeId": "a", "reason": "r", "modifiedPayload": {"properties": {"x": -Infinity}}}',
            "non-finite",
        ),
        (b'{"sourceExchangeId": "a", "reason": "r", "client": 1e400}', "non-finite"),
        (b'{"sourceExchangeId": "a", "reason": "\xff\xfe"}', "utf-8"),
        (b'{"sourceExchangeId": "a", "reason": "r", "client": ' + b"[" * 65 + b"]" * 65 + b"}", "depth"),
        (b'{"sourceExchangeId": "a", "reason": "r",}', "syntax"),
    ],
)
def test_malformed_json_is_400_and_claims_nothing(
    sb: SandboxHandle, user: Any, raw: bytes, reason: str
) -> None:
    op = user("operator")
    key = uuid.uuid4().hex
    before = count(sb, "SELECT count(*) FROM replays")
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    body = envelope(op.post("/replays", content=raw, headers=headers), 400, "BAD_JSON")
    assert body["details"]["reason"] == reason
    assert count(sb, "SELECT count(*) FROM replays") == before
    assert count(sb, "SELECT count(*) FROM idempotency_keys WHERE key = ?", key) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Ok": "a\r\nX-Injected: 1"},
        {"X-Ok": "a\nb"},
        {"X-Ok": "a\x00b"},
        {"X-Bad\r\nName": "1"},
        {"X-Bad\x00": "1"},
        {"X-Ok": ["fine", "not\rfine"]},
    ],
)
def test_cr_lf_nul_in_modified_headers_is_400(sb: SandboxHandle, user: Any, headers: dict[str, Any]) -> None:
    op = user("operator")
    src = sources(op)[0]["exchangeId"]
    r = op.post(
        "/replays",
        json={"sourceExchangeId": src, "reason": "r", "modifiedPayload": {"headers": headers}},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert envelope(r, 400)["error"] == "BAD_HEADER"


def test_cr_and_nul_in_request_headers_never_reach_a_handler(sb: SandboxHandle) -> None:
    host, port = sb.url.removeprefix("http://").split(":")
    for bad in (b"X-Bad: a\x00b", b"X-Bad: a\rb", b"X-B\x00ad: 1"):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bad + b"\r\n\r\n")
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 400"), (bad, answer[:80])


def _case_permutations(word: str) -> list[str]:
    return [
        "".join(c.upper() if bit else c for c, bit in zip(word, bits, strict=True))
        for bits in itertools.product((0, 1), repeat=len(word))
    ]


CONTROL_HEADERS = [p + "HttpUri" for p in _case_permutations("camel")] + [
    "org.apache.camel.Exchange",
    "ORG.APACHE.CAMEL.x",
    "Org.Apache.Camel.bean.Method",
    "oRg.ApAcHe.CaMeL",
]


def test_camel_control_headers_in_every_case_are_refused_and_audited(sb: SandboxHandle, user: Any) -> None:
    assert len(set(CONTROL_HEADERS)) == 32 + 4
    op = user("operator")
    src = sources(op)[1]["exchangeId"]
    agent = sb.agents["dev"]
    last_command = agent.last_event_id
    replays_before = count(sb, "SELECT count(*) FROM replays")
    for name in CONTROL_HEADERS:
        before = len(sb.state.audit.events())
        r = op.post(
            "/replays",
            json={
                "sourceExchangeId": src,
                "reason": "r",
                "modifiedPayload": {"headers": {"X-Ok": "1", name: "http://evil/"}},
            },
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert envelope(r, 400, "CONTROL_HEADER")["details"]["headers"] == [name]
        new = sb.state.audit.events()[before:]
        assert [e["action"] for e in new] == ["CONTROL_HEADER_REJECTED"], name
        assert new[0]["detail"]["headers"] == [name] and new[0]["actor"]["username"] == "operator"
        assert new[0]["target"]["sourceExchangeId"] == src and new[0]["outcome"] == "REJECTED"
    assert count(sb, "SELECT count(*) FROM replays") == replays_before
    assert agent.last_event_id == last_command  # CamelHttpUri and friends never reached the agent
    ok = op.post(
        "/replays",
        json={
            "sourceExchangeId": src,
            "reason": "r",
            "modifiedPayload": {"headers": {"X-Camel-Like": "1", "Kamel": "2"}},
        },
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert ok.status_code == 202, ok.text  # only the prefixes are refused


TRAVERSAL = [
    "../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f",
    "%252e%252e%252f",
    "..\\..\\windows",
    "a\x00b",
    "\u2025\u2025",  # two-dot leader
    "\uff0e\uff0e",  # fullwidth full stops
    "x" * 129,
    "a b",
    "'; DROP TABLE replays; --",
]


def test_ids_are_checked_on_every_path_and_query(sb: SandboxHandle, user: Any) -> None:
    admin = user("admin")
    paths = [
        "/executions/{}",
        "/executions/{}/processors/1/snapshot",
        "/replays/{}",
        "/replays/{}/events",
    ]
    queries = [
        ("/replays", "sourceExchangeId"),
        ("/replays/preflight", "sourceExchangeId"),
        ("/replays/preflight", "targetAgent"),
        ("/admin/audit", "replayId"),
        ("/agents", "environment"),
    ]
    for bad in TRAVERSAL:
        for path in paths:
            r = admin.get(path.format(quote(bad, safe="%")))
            assert r.status_code in (400, 404), (path, bad, r.status_code)
            if r.status_code == 400:
                assert r.json()["error"] == "BAD_ID"
        for path, name in queries:
            params = {name: bad}
            if name == "targetAgent":
                params["sourceExchangeId"] = "ex-1"
            r = admin.get(path, params=params)
            assert r.status_code == 400 and r.json()["error"] in ("BAD_ID", "VALIDATION"), (
                path,
                name,
                bad,
                r.text,
            )
        r = admin.post(f"/replays/{quote(bad, safe='%')}/stream-ticket")
        assert r.status_code in (400, 404), bad


# --------------------------------------------------------------------------- secrets

SECRET_HEADERS = (
    "Authorization", "Cookie", "Set-Cookie", "Proxy-Authorization", "X-API-Key", "x-api-key-2",
    "X-Auth-Token", "X-Client-Secret", "X-Db-Password", "X-Passphrase", "X-AccessKey", "X-Refresh-Token",
    "X-Secret", "Api_Key", "X-Session-Token", "X-Password",
)  # fmt: skip
SECRET_PROPERTIES = (
    "dbPassword", "apiKey", "accessKey", "passphrase", "sessionToken", "clientSecret", "secretKey",
    "token", "aws.accessKey", "smtp_password",
)  # fmt: skip
# In the JSON body: these 12 fields, plus credentials.passphrase and credentials.accessKey.
SECRET_FIELDS = (
    "password", "secret", "token", "apiKey", "clientSecret", "accessKey", "passphrase", "authToken",
    "api_key", "x-api-key", "userPassword", "refreshToken",
)  # fmt: skip
ALPHABET = string.ascii_letters + string.digits + "-_.~+/"


def test_a_thousand_secrets_never_leave_the_agent(
    sb: SandboxHandle, user: Any, tools: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """VAL-6: secrets in sensitive headers, properties and JSON body fields of modified payloads
    appear nowhere (database file and WAL, SSE bytes, audit log, export, API answers, logs), while
    the stored fingerprints prove that the agent ran the real values."""
    caplog.set_level(logging.DEBUG, logger="moat_nb")
    # The one library logger that would see the command channel's real values is held at INFO
    # by the server (every other library logs requests, never their bodies).
    assert logging.getLogger("sse_starlette.sse").getEffectiveLevel() == logging.INFO
    rnd = random.Random(1000)
    op, admin = user("operator"), user("admin")
    originals = [op.get(f"/executions/{h['executionId']}").json() for h in sources(op, "dev", 10)]
    plans: list[tuple[dict[str, Any], dict[str, Any], list[str]]] = []
    for i in range(25):
        original = originals[i % len(originals)]
        secrets = ["".join(rnd.choices(ALPHABET, k=rnd.randint(24, 40))) for _ in range(40)]
        headers = {**original["inputHeaders"], **dict(zip(SECRET_HEADERS, secrets[:16], strict=True))}
        properties = dict(zip(SECRET_PROPERTIES, secrets[16:26], strict=True))
        body = json.loads(original["inputBody"])
        body.update(dict(zip(SECRET_FIELDS, secrets[26:38], strict=True)))
        body["credentials"] = {"passphrase": secrets[38], "accessKey": secrets[39]}
        payload = {"headers": headers, "properties": properties, "body": json.dumps(body)}
        plans.append((original, payload, secrets))
    everything = [s for _, _, secrets in plans for s in secrets]
    assert len(set(everything)) == 1000

    def one(plan: tuple[dict[str, Any], dict[str, Any], list[str]]) -> tuple[dict[str, Any], bytes]:
        original, payload, _ = plan
        r = tools.post_replay(op, original["exchangeId"], modifiedPayload=payload, reason="secrets")
        assert r.status_code == 202, r.text
        replay = tools.wait_replay(op, r.json()["replayId"])
        with op.stream("GET", f"/replays/{replay['replayId']}/events") as stream:
            return replay, stream.read()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        done = list(pool.map(one, plans))
    texts: list[bytes] = []
    for (replay, sse), (_, _, secrets) in zip(done, plans, strict=True):
        assert replay["status"] == "COMPLETED", replay
        execution = admin.get(f"/executions/{replay['resultExecutionId']}").json()
        # The agent ran the real values: the server fingerprinted what the agent reported.
        assert execution["inputHeaders"]["Authorization"] == sb.state.redactor.value(secrets[0])
        assert execution["inputProperties"]["dbPassword"] == sb.state.redactor.value(secrets[16])
        assert json.loads(execution["inputBody"])["password"] == sb.state.redactor.value(secrets[26])
        texts += [
            sse,
            json.dumps(execution).encode(),
            json.dumps(admin.get(f"/replays/{replay['replayId']}").json()).encode(),
        ]
    texts.append(admin.get("/admin/audit/export").content)
    texts.append(json.dumps(sb.state.audit.events()).encode())
    texts.append(caplog.text.encode())
    db = Path(sb.state.store.path)
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            texts.append(path.read_bytes())
    # A secret is a run of ALPHABET characters, so any copy of it lies inside a maximal run of
    # them at least as long: searching those runs alone is exact, and far cheaper than
    # searching the whole database file once per secret.
    runs = re.compile(rb"[A-Za-z0-9._~+/-]{24,}")
    corpus = b"\n".join({run for t in texts for run in runs.findall(t)})
    leaked = [s for s in everything if s.encode() in corpus]
    assert leaked == [], [i for i, t in enumerate(texts) if leaked[0].encode() in t]


# --------------------------------------------------------------------------- fail closed


def _agent_quiet(sb: SandboxHandle, env: str, last: str | None) -> None:
    time.sleep(0.3)  # a command would have reached the agent by now
    agent = sb.agents[env]
    assert agent.last_event_id == last and agent.running_replays == []
    assert sb.state.agents.pending(agent.instance_id) == []


def _refused(sb: SandboxHandle, op: httpx.Client, tools: Any, src: str, key: str, **body: Any) -> None:
    before = count(sb, "SELECT count(*) FROM replays")
    last = sb.agents["dev"].last_event_id
    r = tools.post_replay(op, src, key=key, **body)
    envelope(r, 503, "AUDIT_UNAVAILABLE")
    assert "nothing ran" in r.json()["message"]
    assert count(sb, "SELECT count(*) FROM replays") == before
    assert count(sb, "SELECT count(*) FROM idempotency_keys WHERE key = ?", key) == 0
    _agent_quiet(sb, "dev", last)


def _runs_after_repair(op: httpx.Client, tools: Any, src: str, key: str, **body: Any) -> None:
    r = tools.post_replay(op, src, key=key, **body)  # the same key: it was never claimed
    assert r.status_code == 202 and "idempotent-replayed" not in r.headers, r.text
    assert tools.wait_replay(op, r.json()["replayId"])["status"] == "COMPLETED"


def test_fail_closed_when_the_audit_insert_fails(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op, admin = user("operator"), user("admin")
    src = sources(op)[2]["exchangeId"]
    key = uuid.uuid4().hex
    conn = sqlite3.connect(sb.state.store.path, isolation_level=None, timeout=30)
    conn.execute(
        "CREATE TRIGGER fault_injection BEFORE INSERT ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    )
    try:
        _refused(sb, op, tools, src, key)
        # A refused replay keeps none of its payload's secrets in memory (found by review).
        secret = {"headers": {"Authorization": "Bearer held-" + uuid.uuid4().hex}}
        _refused(sb, op, tools, src, uuid.uuid4().hex, modifiedPayload=secret)
        assert not any(
            secret["headers"]["Authorization"] in held for held in sb.state.replays._secrets.values()
        )
        # A read of the log that could not be recorded is not answered either.
        envelope(admin.get("/admin/audit"), 503, "AUDIT_UNAVAILABLE")
        envelope(admin.get("/admin/audit/export"), 503, "AUDIT_UNAVAILABLE")
        envelope(admin.get("/admin/audit/verify"), 503, "AUDIT_UNAVAILABLE")
    finally:
        conn.execute("DROP TRIGGER fault_injection")
        conn.close()
    _runs_after_repair(op, tools, src, key)
    assert sb.state.audit.verify().ok


def test_fail_closed_when_the_disk_is_full(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op = user("operator")
    hit = sources(op)[3]
    order = json.loads(op.get(f"/executions/{hit['executionId']}").json()["inputBody"])
    key = uuid.uuid4().hex
    svc = sb.state.replays

    def writer_pragma(sql: str) -> int:  # on the replay writer's own connection (its thread)
        return int(svc._submit_sync(lambda: svc.store._conn().execute(sql).fetchone()[0]))

    order["padding"] = "p" * 100_000  # stored twice (replay row, audit detail): needs new pages
    body = {"modifiedPayload": {"body": json.dumps(order)}}
    # Earlier writes may have left free pages (a trace ingested in several chunks replaces its
    # rows) that would take the padding without growing the file: drop them first, after the
    # text-index jobs of earlier replays (they run a moment after their end, and free pages).
    svc.store._await_index()
    svc._submit_sync(lambda: svc.store._conn().execute("VACUUM"))
    assert writer_pragma("PRAGMA freelist_count") == 0
    limit = writer_pragma("PRAGMA max_page_count")
    writer_pragma(f"PRAGMA max_page_count = {writer_pragma('PRAGMA page_count')}")
    try:
        _refused(sb, op, tools, hit["exchangeId"], key, **body)
    finally:
        assert writer_pragma(f"PRAGMA max_page_count = {limit}") == limit
    _runs_after_repair(op, tools, hit["exchangeId"], key, **body)


def test_fail_closed_when_the_write_lock_is_held_past_the_busy_timeout(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    op = user("operator")
    src = sources(op)[4]["exchangeId"]
    key = uuid.uuid4().hex
    svc = sb.state.replays
    svc._submit_sync(lambda: svc.store._conn().execute("PRAGMA busy_timeout = 300"))
    holder = sqlite3.connect(sb.state.store.path, isolation_level=None, timeout=5)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        _refused(sb, op, tools, src, key)
        assert time.monotonic() - started < 5  # refused promptly, not after the agent's timeout
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        svc._submit_sync(lambda: svc.store._conn().execute("PRAGMA busy_timeout = 30000"))
    _runs_after_repair(op, tools, src, key)


# --------------------------------------------------------------------------- idempotency


def test_idempotency_keys_are_per_user_and_kept_24_hours(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op, other = user("operator"), user("prod-operator")
    src = sources(op)[5]["exchangeId"]
    key = uuid.uuid4().hex
    first = tools.post_replay(op, src, key=key)
    assert first.status_code == 202
    again = tools.post_replay(op, src, key=key)
    assert (
        again.json()["replayId"] == first.json()["replayId"]
        and again.headers["idempotent-replayed"] == "true"
    )
    theirs = tools.post_replay(other, src, key=key)  # IDEM-4: another user's key is another key
    assert theirs.status_code == 202 and theirs.json()["replayId"] != first.json()["replayId"]
    envelope(tools.post_replay(op, src, key=key, reason="another body"), 422, "IDEMPOTENCY_CONFLICT")
    for r in (first, theirs):
        tools.wait_replay(op if r is first else other, r.json()["replayId"])
    real_clock, audit_clock = sb.state.clock, sb.state.audit.clock
    later = timedelta(hours=24, minutes=1)
    sb.state.clock = lambda: real_clock() + later
    sb.state.audit.clock = lambda: audit_clock() + later
    try:
        tomorrow = tools.user_client(sb, "operator")
        reused = tools.post_replay(tomorrow, src, key=key)  # IDEM-6: after 24 h the key is free again
        assert reused.status_code == 202 and "idempotent-replayed" not in reused.headers
        assert reused.json()["replayId"] != first.json()["replayId"]
        assert tools.wait_replay(tomorrow, reused.json()["replayId"])["status"] == "COMPLETED"
        tomorrow.close()
    finally:
        sb.state.clock, sb.state.audit.clock = real_clock, audit_clock


# --------------------------------------------------------------------------- fuzzing the API


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if op.get("responses", {}).get("200", {}).get("content", {}).get("text/event-stream"):
                continue  # streams stay open by design; their errors are tested elsewhere
            out.append((method.upper(), path.removeprefix("/api/v1"), op))
    return out


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
texts = st.text(max_size=40) | st.sampled_from(
    ["", "0", "-1", "1001", "x" * 200, "../x", "ex-1", "DEV", "true", "2026-01-01T00:00:00Z"]
)


def test_random_requests_never_get_a_5xx(sb: SandboxHandle, user: Any) -> None:
    """A stand-in for Schemathesis (not installed): requests built from the OpenAPI document with
    random path, query, header and body values, as several users; no answer may be a 5xx, and
    every error is the envelope."""
    admin = user("admin")
    doc = admin.get("/api-docs").json()
    ops = _operations(doc)
    assert len(ops) >= 20
    clients = [admin, user("analyst"), httpx.Client(base_url=sb.api, timeout=15)]
    seen: set[str] = set()

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def fire(data: st.DataObject) -> None:
        method, path, op = data.draw(st.sampled_from(ops))
        client = data.draw(st.sampled_from(clients))
        params: dict[str, str] = {}
        headers: dict[str, str] = {}
        for p in op.get("parameters", []):
            if p["in"] == "path":
                path = path.replace("{" + p["name"] + "}", quote(data.draw(texts) or "x", safe=""))
            elif data.draw(st.booleans()):
                value = data.draw(texts)
                if p["in"] == "query":
                    params[p["name"]] = value
                elif p["in"] == "header" and value.isascii() and value.isprintable():
                    headers[p["name"]] = value
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if method == "POST":
            kwargs["json"] = data.draw(
                json_values
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "sourceExchangeId",
                            "reason",
                            "modifiedPayload",
                            "username",
                            "password",
                            "status",
                            "limit",
                        ]
                    ),
                    json_values,
                )
            )
        r = client.request(method, path, **kwargs)
        seen.add(f"{method} {path.split('/')[1]}")
        assert r.status_code < 500, (method, path, kwargs, r.status_code, r.text)
        if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
            assert set(r.json()) == {"error", "message", "details"}, r.text

    fire()
    clients[2].close()
    assert len(seen) >= 8


# --------------------------------------------------------------------------- crash


CRASH_SCRIPT = """
import sys, time
from moat_nb.sandbox import start
handle = start(data=sys.argv[1], per_env=5, seed=3, replay_timeout=120)
print(handle.url, handle.state.bootstrap_token, flush=True)
time.sleep(3600)
"""


def _hold_channel(api: str, bootstrap: str, instance_id: str, stop: threading.Event) -> None:
    """A registered agent that keeps its command channel open and never acts on a command."""
    with httpx.Client(base_url=api, timeout=30) as client:
        r = client.post(
            "/agents/register",
            headers={"Authorization": f"Bearer {bootstrap}"},
            json={"instanceId": instance_id, "applicationId": "orders", "environmentId": "qa",
                  "routeIds": ["order-intake", "enrich-customer"], "routeVersion": "v2"},
        )  # fmt: skip
        auth = {"Authorization": f"Bearer {r.json()['accessToken']}"}
        try:
            with client.stream("GET", f"/agents/{instance_id}/events", headers=auth) as s:
                for _ in s.iter_lines():
                    if stop.is_set():
                        return
        except httpx.HTTPError:
            return


def test_kill_9_during_a_burst_loses_nothing_and_runs_nothing_twice(tmp_path: Path, tools: Any) -> None:
    data = tmp_path / "crash"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()
    accepted: list[tuple[str, str, str, str | None]] = []  # (key, source, replayId, targetAgent)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, proc.stderr.read() if proc.stderr else "no output"
        url, bootstrap = line.split()
        api = url + "/api/v1"
        holder = threading.Thread(target=_hold_channel, args=(api, bootstrap, "held-qa-1", stop), daemon=True)
        holder.start()
        op = httpx.Client(base_url=api, timeout=30)
        op.headers["Authorization"] = (
            "Bearer "
            + op.post("/auth/login", json={"username": "operator", "password": "operator"}).json()[
                "accessToken"
            ]
        )
        tools.wait_for(lambda: any(a["instanceId"] == "held-qa-1" for a in op.get("/agents").json()))
        srcs = [h["exchangeId"] for h in sources(op, "dev", 5)]

        def fire(i: int) -> None:
            key = f"burst-{i}"
            extra = {"targetAgent": "held-qa-1"} if i % 3 == 0 else {}
            try:
                r = tools.post_replay(op, srcs[i % len(srcs)], key=key, **extra)
            except httpx.HTTPError:
                return  # the server died under this request
            if r.status_code == 202:
                accepted.append((key, srcs[i % len(srcs)], r.json()["replayId"], extra.get("targetAgent")))

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(fire, i) for i in range(30)]
            tools.wait_for(lambda: len(accepted) >= 12, timeout=30)
            os.kill(proc.pid, signal.SIGKILL)  # mid-burst: replays pending, running, done
            concurrent.futures.wait(futures)
        op.close()
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    handle = start(data=data, per_env=5, seed=3)
    try:
        check = handle.state.audit.verify()
        assert check.ok, check  # the chain and its anchored checkpoints survived the kill
        admin = tools.user_client(handle, "admin")
        replays = {r["replayId"]: r for r in admin.get("/replays", params={"limit": 1000}).json()["data"]}
        assert {rid for *_, rid, _ in accepted} <= set(replays)  # every 202 was committed first
        log = handle.state.audit.events()
        aborted = 0
        for rid, replay in replays.items():
            assert replay["status"] in ("COMPLETED", "ABORTED", "ERROR"), replay
            record = [e["action"] for e in log if e["target"]["replayId"] == rid]
            assert record[0] == "REPLAY_REQUESTED" and record.count("REPLAY_REQUESTED") == 1
            assert len([a for a in record if a in TERMINAL_ACTIONS]) == 1, record
            runs = admin.post("/search/executions", json={"replayId": rid}).json()["total"]
            assert runs <= 1  # never ran twice
            if replay["status"] == "ABORTED":
                aborted += 1
                assert "REPLAY_ABORTED" in record and "not run again" in replay["result"]["errorMessage"]
        held = [rid for *_, rid, agent in accepted if agent == "held-qa-1"]
        assert held and all(replays[rid]["status"] == "ABORTED" for rid in held)
        assert aborted >= len(held)
        # IDEM-7: a retry gives the recorded outcome back and runs nothing.
        key, src, rid, agent = next(a for a in accepted if a[3] == "held-qa-1")
        op = tools.user_client(handle, "operator")
        retry = tools.post_replay(op, src, key=key, targetAgent=agent)
        assert (
            retry.status_code == 202
            and retry.json()["replayId"] == rid
            and retry.json()["status"] == "ABORTED"
        )
        assert admin.post("/search/executions", json={"replayId": rid}).json()["total"] == 0
        op.close()
        admin.close()
    finally:
        handle.stop()


# --------------------------------------------------------------------------- last: every replay


def test_every_replay_of_this_module_has_its_request_and_exactly_one_terminal_event(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    admin = user("admin")
    replays = [
        tools.wait_replay(admin, r["replayId"])
        for r in admin.get("/replays", params={"limit": 1000}).json()["data"]
    ]
    assert len(replays) >= 25
    log = sb.state.audit.events()
    for replay in replays:
        record = [
            e
            for e in log
            if e["target"]["replayId"] == replay["replayId"] and e["action"].startswith("REPLAY_")
        ]
        assert record[0]["action"] == "REPLAY_REQUESTED"
        assert [e["action"] for e in record].count("REPLAY_REQUESTED") == 1
        assert len([e for e in record if e["action"] in TERMINAL_ACTIONS]) == 1
    assert sb.state.audit.verify().ok
