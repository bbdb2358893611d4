"""Replays end to end (moat_nb/sandbox/replays.py, replay_api.py, trace_stream.py, preflight.py,
replay_tables.py): a real server on 127.0.0.1 with real agents over HTTP/SSE (DESIGN.md
sections 4-7; issue 3 "Tests that must exist"; security.md SSE-*, IDEM-*, AUD-8, VAL-3, VAL-6).

This module runs its own sandbox (short replay timeout and ping interval, an extra user with
``replay:run`` but not ``replay:modify``) next to the shared one of conftest.py. A *silent agent*
— a plain HTTP client that registers, holds its command channel and never acts — stands for an
agent that hangs or dies mid-replay.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from moat_nb import audit
from moat_nb.diff import diff
from moat_nb.errors import ValidationError
from moat_nb.model import Execution, Payload, parse_time
from moat_nb.payload import effective_payload_sha256, trace_digest, trace_sha256
from moat_nb.payload import is_secret_name as payload_is_secret_name
from moat_nb.sandbox import start
from moat_nb.sandbox.agent import AgentConfig, chunks_of
from moat_nb.sandbox.apps.orders import APP
from moat_nb.sandbox.camel import RouteSet
from moat_nb.sandbox.camel.exchange import RunContext
from moat_nb.sandbox.replay_tables import claim_key, create_tables, find_key
from moat_nb.sandbox.runner import SandboxHandle
from moat_nb.sandbox.security import DEFAULT_USERS_TOML, Tenant, parse_users
from moat_nb.sandbox.security import is_secret_name as security_is_secret_name
from moat_nb.sandbox.trace_stream import parse_last_event_id

TIMEOUT = 2.0  # the module sandbox's replay_timeout (s)
PING = 0.3  # its ping interval (s)
SEND_TIMEOUT = 1.0
USERS_TOML = (
    DEFAULT_USERS_TOML
    + """
[users.runner]
password = "runner"
roles = ["VIEWER"]
grants = ["replay:run"]
"""
)
ROUTE = "order-intake"


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    handle = start(
        data=tmp_path_factory.mktemp("replays"),
        per_env=25,
        seed=11,
        users=parse_users(USERS_TOML),
        agent_config=AgentConfig(chunk_processors=16),
        replay_timeout=TIMEOUT,
        ping_interval=PING,
        send_timeout=SEND_TIMEOUT,
    )
    try:
        yield handle
    finally:
        handle.stop()


def detail(client: httpx.Client, execution_id: str) -> dict[str, Any]:
    r = client.get(f"/executions/{execution_id}")
    assert r.status_code == 200, r.text
    return r.json()


def flat(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for n in nodes:
        yield n
        yield from flat(n.get("children") or [])


def sources(client: httpx.Client, environment: str, n: int = 50) -> list[dict[str, Any]]:
    r = client.post(
        "/search/executions",
        json={"environment": environment, "status": "COMPLETED", "isReplay": False, "limit": n},
    )
    assert r.status_code == 200, r.text
    return r.json()["data"]


def read_events(
    client: httpx.Client, replay_id: str, *, last: int | None = None, limit: int | None = None, **params: str
) -> tuple[int, list[tuple[int, str, dict[str, Any]]]]:
    """Open the trace stream (after ``last``), read at most ``limit`` events (then disconnect);
    the status code and the ``(id, event, data)`` triples read."""
    headers = {} if last is None else {"Last-Event-ID": str(last)}
    out: list[tuple[int, str, dict[str, Any]]] = []
    with client.stream("GET", f"/replays/{replay_id}/events", headers=headers, params=params) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, out
        fields: dict[str, str] = {}
        for line in r.iter_lines():
            if line.startswith(":"):
                continue
            if line == "":
                if "id" in fields:
                    out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                    if fields["event"] == "end" or (limit is not None and len(out) >= limit):
                        break
                fields = {}
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
    return 200, out


def replay_done(client: httpx.Client, tools: Any, source: str, **body: Any) -> dict[str, Any]:
    r = tools.post_replay(client, source, **body)
    assert r.status_code == 202, r.text
    return tools.wait_replay(client, r.json()["replayId"])


class SilentAgent:
    """A registered agent (plain HTTP, in a thread) that holds its command channel open, records
    the commands it is sent, and otherwise does nothing until told to ack or to die."""

    def __init__(self, sb: SandboxHandle, instance_id: str, environment: str = "qa") -> None:
        self.instance_id = instance_id
        self.client = httpx.Client(base_url=sb.api, timeout=10.0)
        r = self.client.post(
            "/agents/register",
            headers={"Authorization": f"Bearer {sb.state.bootstrap_token}"},
            json={
                "instanceId": instance_id,
                "applicationId": "orders",
                "environmentId": environment,
                "routeIds": [ROUTE, "enrich-customer"],
                "routeVersion": "v2",
            },
        )
        assert r.status_code == 200, r.text
        self.auth = {"Authorization": f"Bearer {r.json()['accessToken']}"}
        self.commands: list[dict[str, Any]] = []
        self.dead = threading.Event()
        self.gone = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not sb.state.agents.channel_open(instance_id):
            assert time.monotonic() < deadline, "the silent agent's channel did not open"
            time.sleep(0.02)

    def _listen(self) -> None:
        try:
            with self.client.stream("GET", f"/agents/{self.instance_id}/events", headers=self.auth) as r:
                for line in r.iter_lines():  # pings every PING s wake this loop
                    if line.startswith("data:"):
                        self.commands.append(json.loads(line[5:]))
                    if self.dead.is_set():
                        break
        except httpx.HTTPError:
            pass
        finally:
            self.gone.set()

    def ack(self, command: dict[str, Any], status: str, message: str) -> httpx.Response:
        return self.client.post(
            f"/agents/{self.instance_id}/commands/{command['commandId']}/ack",
            headers=self.auth,
            json={"status": status, "message": message, "data": {}},
        )

    def post_chunk(self, chunk: dict[str, Any]) -> httpx.Response:
        return self.client.post(
            "/data/chunks", json=chunk, headers={**self.auth, "X-Cameleer-Protocol-Version": "1"}
        )

    def die(self) -> None:
        self.dead.set()
        self.gone.wait(5)

    def close(self) -> None:
        self.die()
        self.client.close()


def last_seq(sb: SandboxHandle) -> int:
    """The newest audit event's seq (0 before any): tests read the events written after it."""
    events = sb.state.replays.audit_events()
    return int(events[-1]["seq"]) if events else 0


def db_rows(sb: SandboxHandle, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(sb.state.store.path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


# --------------------------------------------------------------------------- lifecycle


def test_replay_resource_trace_and_audit_record(sb: SandboxHandle, user: Any, tools: Any) -> None:
    admin = user("admin")
    source = sources(admin, "dev")[0]
    r = admin.post(
        "/replays",
        json={"sourceExchangeId": source["exchangeId"], "reason": "check the resource", "client": "pytest"},
        # A client naming another address: not believed (no trusted proxy), so the audit
        # record below says where the request really came from.
        headers={"Idempotency-Key": uuid.uuid4().hex, "X-Forwarded-For": "203.0.113.9"},
    )
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/api/v1/replays/{r.json()['replayId']}"
    first = r.json()
    assert first["status"] in ("PENDING", "RUNNING", "COMPLETED")
    assert first["requestedBy"] == "admin" and first["reason"] == "check the resource"
    assert first["client"] == "pytest" and first["payloadDiff"] == []
    replay = tools.wait_replay(admin, first["replayId"])
    assert replay["status"] == "COMPLETED"
    assert (replay["sourceEnvironment"], replay["targetEnvironment"]) == ("dev", "dev")
    assert replay["agentId"] == "orders-dev-1" and replay["routeId"] == ROUTE
    assert replay["sourceExecutionId"] == source["executionId"]
    assert replay["startedAt"] and replay["finishedAt"] >= replay["startedAt"] >= replay["requestedAt"]

    # The replay's execution: stored through the chunk path, tagged, found by search.
    found = admin.post("/search/executions", json={"replayId": replay["replayId"]}).json()["data"]
    assert [x["executionId"] for x in found] == [replay["resultExecutionId"]]
    execution = detail(admin, replay["resultExecutionId"])
    assert execution["isReplay"] is True and execution["sourceExchangeId"] == source["exchangeId"]
    result = replay["result"]
    assert result["status"] == execution["status"]
    assert result["outputBodySha256"] == hashlib.sha256(execution["outputBody"].encode()).hexdigest()
    assert result["durationMs"] == execution["durationMs"]

    # The audit record of the replay: requested, started, one terminal event; the chain verifies.
    events = sb.state.replays.audit_events(replay["replayId"])
    assert [e["action"] for e in events] == ["REPLAY_REQUESTED", "REPLAY_STARTED", "REPLAY_COMPLETED"]
    assert replay["auditSeqs"] == [e["seq"] for e in events]
    requested = events[0]
    assert requested["actor"]["username"] == "admin"
    assert (
        requested["detail"]["idempotencyKeySha256"]
        == hashlib.sha256(replay["idempotencyKey"].encode()).hexdigest()
    )
    assert requested["detail"]["targetAgent"] == "orders-dev-1"
    assert requested["source"]["client"] == "pytest" and requested["source"]["ip"] == "127.0.0.1"
    assert events[2]["detail"]["outputBodySha256"] == result["outputBodySha256"]
    # The processors' outputs, hashed as stored: taken chunk by chunk (16 processors a chunk
    # here), the hash is the whole trace's.
    stored = Execution.from_wire(execution)
    assert stored.processor_count > 16 and len(stored.processors or ()) == stored.processor_count
    assert events[2]["detail"]["traceSha256"] == trace_sha256(trace_digest(stored.processors or ()))
    assert all(e["occurredAt"].endswith("Z") for e in events)
    everything = sb.state.replays.audit_events()
    assert audit.verify(everything).ok

    # The trace: ids 1..N, PENDING, RUNNING, processors in seq order, execution, COMPLETED, end.
    status, trace = read_events(admin, replay["replayId"])
    assert status == 200
    assert [i for i, _, _ in trace] == list(range(1, len(trace) + 1))
    kinds = [k for _, k, _ in trace]
    assert kinds[:2] == ["status", "status"] and kinds[-3:] == ["execution", "status", "end"]
    assert [d["status"] for _, k, d in trace if k == "status"] == ["PENDING", "RUNNING", "COMPLETED"]
    procs = [d for _, k, d in trace if k == "processor"]
    assert [p["seq"] for p in procs] == sorted(p["seq"] for p in procs)
    assert len(procs) == execution["processorCount"] == len(list(flat(execution["processors"])))
    assert all(p["replayId"] == replay["replayId"] for p in procs)
    assert trace[-1][2] == {
        "replayId": replay["replayId"],
        "status": "COMPLETED",
        "resultExecutionId": replay["resultExecutionId"],
    }
    assert trace[-3][2]["executionId"] == replay["resultExecutionId"] and "processors" not in trace[-3][2]


def test_a_replay_whose_route_copies_a_large_body_into_properties_completes(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    # orders' enrich-customer sets a property to the whole body: with a 300 KB order a record
    # held ~1.1 MB, its chunk was refused (1 MiB) and the replay ended ERROR with no trace.
    operator = user("operator")
    source = sources(operator, "dev")[0]
    order = json.loads(detail(operator, source["executionId"])["inputBody"])
    body = json.dumps({**order, "note": "n" * 300_000})
    r = tools.post_replay(operator, source["exchangeId"], modifiedPayload={"body": body})
    assert r.status_code == 202, r.text
    replay = tools.wait_replay(operator, r.json()["replayId"])
    assert replay["status"] == "COMPLETED", replay.get("result")
    execution = Execution.from_wire(detail(operator, replay["resultExecutionId"]))
    assert len(execution.processors or ()) == execution.processor_count > 0
    records = execution.processors or ()
    assert any(p.body_truncated for p in records)  # cut at capture, or to fit a chunk: flagged
    notes = [
        v
        for p in records
        for m in (p.input_properties, p.properties)
        for v in (m or {}).values()
        if isinstance(v, str) and v.endswith("the record was too large to post]")
    ]
    assert notes


def test_events_emitted_in_one_transaction_look_the_last_id_up_once() -> None:
    from moat_nb.sandbox.replay_tables import SCHEMA, emit_events

    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(SCHEMA)
    conn.execute("INSERT INTO replay_events VALUES ('r-1', 1, 'status', '{}'), ('r-2', 1, 'status', '{}')")
    lookups: list[str] = []
    conn.set_trace_callback(lambda sql: lookups.append(sql) if sql.startswith("SELECT") else None)
    written: list[tuple[str, int, str, str]] = []
    conn.execute("BEGIN")
    assert emit_events(conn, "r-1", [("status", {"s": 1})], written) == 2
    assert emit_events(conn, "r-1", [("processor", {"seq": 1}), ("processor", {"seq": 2})], written) == 4
    assert emit_events(conn, "r-2", [("status", {"s": 1})], written) == 2  # another replay: its own
    assert emit_events(conn, "r-1", [], written) == 4
    conn.execute("COMMIT")
    assert len(lookups) == 2  # once for r-1, once for r-2
    assert [r[1] for r in written if r[0] == "r-1"] == [2, 3, 4]
    rows = conn.execute("SELECT replay_id, id FROM replay_events ORDER BY replay_id, id").fetchall()
    assert rows == [("r-1", 1), ("r-1", 2), ("r-1", 3), ("r-1", 4), ("r-2", 1), ("r-2", 2)]
    assert emit_events(conn, "r-1", [("end", {})]) == 5  # without the transaction's rows: looked up


def test_a_replays_own_exchange_can_be_replayed(sb: SandboxHandle, user: Any, tools: Any) -> None:
    """Section 9's family graph has replays of replays: a replay's exchange is a source too
    (it was 404 "no recorded exchange"; review finding)."""
    operator = user("operator")
    source = sources(operator, "dev")[0]
    first = tools.wait_replay(operator, tools.post_replay(operator, source["exchangeId"]).json()["replayId"])
    replayed = detail(operator, first["resultExecutionId"])
    assert replayed["isReplay"] is True
    again = tools.post_replay(operator, replayed["exchangeId"])
    assert again.status_code == 202, again.text
    second = tools.wait_replay(operator, again.json()["replayId"])
    assert second["status"] == "COMPLETED"
    assert second["sourceExecutionId"] == first["resultExecutionId"]
    assert detail(operator, second["resultExecutionId"])["sourceExchangeId"] == replayed["exchangeId"]
    # Preflight finds it too.
    pre = operator.get("/replays/preflight", params={"sourceExchangeId": replayed["exchangeId"]})
    assert pre.status_code == 200, pre.text


def test_one_id_given_for_the_other_is_named_with_the_right_one(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    """A frame has an execution_id and an exchange_id column: replays take the exchange id,
    GET /executions the execution id. The 404 for the one given for the other names the right
    id, where it told a Python user to POST a search (README walk-through finding)."""
    operator = user("operator")
    hit = sources(operator, "dev")[0]
    execution_id, exchange_id = hit["executionId"], hit["exchangeId"]
    for r in (
        tools.post_replay(operator, execution_id),
        operator.get("/replays/preflight", params={"sourceExchangeId": execution_id}),
    ):
        assert r.status_code == 404 and r.json()["error"] == "NOT_FOUND", r.text
        body = r.json()
        assert "id of an execution" in body["message"] and repr(exchange_id) in body["details"]["hint"]
        assert r.json()["details"]["exchangeId"] == exchange_id
    r = operator.get(f"/executions/{exchange_id}")
    assert r.status_code == 404 and f"p.execution({execution_id!r})" in r.json()["details"]["hint"]
    assert r.json()["details"]["recordedExecutionId"] == execution_id
    unknown = tools.post_replay(operator, "ID-nowhere-1")  # neither: the search is the way
    assert unknown.status_code == 404 and "p.executions(...)" in unknown.json()["details"]["hint"]
    assert "exchangeId" not in unknown.json()["details"]


def test_modified_body_takes_another_branch_and_secrets_stay_hidden(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    operator = user("operator")
    # A recorded order of a customer without the gold tier discount.
    for hit in sources(operator, "dev"):
        original = detail(operator, hit["executionId"])
        ids = {p["processorId"] for p in flat(original["processors"])}
        if "gold-discount" not in ids and ids & {"silver-discount", "no-tier-discount"}:
            break
    else:
        pytest.fail("no non-gold COMPLETED order in dev")
    order = json.loads(original["inputBody"])
    order["customerId"] = "C-1001"  # Alder & Finch GmbH: gold
    secret = "Bearer S3cret-" + uuid.uuid4().hex
    headers = {**original["inputHeaders"], "Authorization": secret}
    replay = replay_done(
        operator,
        tools,
        original["exchangeId"],
        modifiedPayload={"body": json.dumps(order), "headers": headers},
        reason="what if the customer were gold?",
    )
    assert replay["status"] == "COMPLETED", replay

    status, trace = read_events(operator, replay["replayId"])
    replay_ids = {d["processorId"] for _, k, d in trace if k == "processor"}
    assert "gold-discount" in replay_ids and not replay_ids & {"silver-discount", "no-tier-discount"}
    stored = detail(operator, replay["resultExecutionId"])
    assert "gold-discount" in {p["processorId"] for p in flat(stored["processors"])}

    # The diff shows what changed, with the secret as its fingerprint only.
    diff = {op["path"]: op for op in replay["payloadDiff"]}
    assert diff["/body"]["op"] == "replace" and json.loads(diff["/body"]["value"])["customerId"] == "C-1001"
    marker = sb.state.redactor.value(secret)
    assert diff["/headers/Authorization"]["value"] == marker
    # Nowhere: not in the resource, the SSE bytes, the audit table, the stored events or the DB.
    with operator.stream("GET", f"/replays/{replay['replayId']}/events") as r:
        raw = r.read()
    assert secret.encode() not in raw
    assert secret not in json.dumps(operator.get(f"/replays/{replay['replayId']}").json())
    assert secret not in json.dumps(sb.state.replays.audit_events())
    db = Path(sb.state.store.path)
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            assert secret.encode() not in path.read_bytes()


def test_effective_payload_hash_is_over_fingerprints_and_tells_no_secret(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    """effectivePayloadSha256 sits beside the redacted diff, and the original payload is
    readable by any viewer: over the real values, a short secret was found by trying PINs
    (security review finding 2). It is over the fingerprints, so it still changes with the
    secret but cannot be searched without the server key."""
    operator = user("operator")
    source = detail(operator, sources(operator, "dev")[20]["executionId"])
    original = Payload(
        headers=source["inputHeaders"], body=source["inputBody"], properties=source["inputProperties"] or {}
    )

    def requested(pin: str) -> tuple[dict[str, Any], Payload]:
        modified = {
            "headers": {**original.headers, "X-Api-Key": pin},
            "properties": {"dbPassword": "sunshine"},
        }
        replay = replay_done(operator, tools, source["exchangeId"], modifiedPayload=modified)
        return replay, Payload(
            headers=modified["headers"], body=original.body, properties=modified["properties"]
        )

    replay, effective = requested("4711")
    published = replay["effectivePayloadSha256"]
    real = hashlib.sha256(rfc8785.dumps(effective.to_wire())).hexdigest()
    assert published != real
    assert published == effective_payload_sha256(effective, sb.state.redactor.value)
    [event] = [
        e for e in sb.state.replays.audit_events(replay["replayId"]) if e["action"] == "REPLAY_REQUESTED"
    ]
    assert event["detail"]["effectivePayloadSha256"] == published
    assert event["detail"]["effectivePayloadHashVersion"] == 2
    # The dictionary search of the review finds nothing.
    for pin in ("4710", "4711", "4712"):
        guess = Payload(
            headers={**effective.headers, "X-Api-Key": pin},
            body=effective.body,
            properties=effective.properties,
        )
        assert hashlib.sha256(rfc8785.dumps(guess.to_wire())).hexdigest() != published
    # Another secret, another hash; the same one, the same hash.
    assert requested("4712")[0]["effectivePayloadSha256"] != published
    assert requested("4711")[0]["effectivePayloadSha256"] == published
    # A replay as recorded hashes as the stored payload (fingerprints already) does.
    plain = replay_done(operator, tools, source["exchangeId"])
    assert plain["effectivePayloadSha256"] == hashlib.sha256(rfc8785.dumps(original.to_wire())).hexdigest()


def test_a_secret_quoted_by_the_routes_error_message_stays_hidden(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    # The orders route's validation error quotes the order; here the order's id is an object
    # with a password in it, so the error message would carry the secret.
    operator = user("operator")
    secret = "hunter2-" + uuid.uuid4().hex
    body = {"orderId": {"password": secret}, "customerId": "C-1010", "lines": [{"sku": "SKU-108", "qty": 1}]}
    replay = replay_done(
        operator, tools, sources(operator, "dev")[0]["exchangeId"], modifiedPayload={"body": json.dumps(body)}
    )
    assert replay["status"] == "COMPLETED" and replay["result"]["status"] == "FAILED", replay
    marker = sb.state.redactor.value(secret)
    assert marker in replay["result"]["errorMessage"]
    with operator.stream("GET", f"/replays/{replay['replayId']}/events") as r:
        raw = r.read()
    assert secret.encode() not in raw and marker.encode() in raw
    assert secret not in json.dumps(detail(operator, replay["resultExecutionId"]))
    assert secret not in json.dumps(sb.state.replays.audit_events(replay["replayId"]))
    db = Path(sb.state.store.path)
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            assert secret.encode() not in path.read_bytes()


def _replay_with_a_secret_the_body_repeats(
    operator: Any, tools: Any, index: int
) -> tuple[dict[str, Any], str]:
    """A replay (done) of the ``index``-th dev exchange with a secret ``X-Api-Key`` header whose
    value the modified order repeats in a note; the replay and the secret."""
    source = detail(operator, sources(operator, "dev")[index]["executionId"])
    secret = "K3y-" + uuid.uuid4().hex
    order = {**json.loads(source["inputBody"]), "note": f"api key {secret}"}
    replay = replay_done(
        operator,
        tools,
        source["exchangeId"],
        modifiedPayload={
            "headers": {**source["inputHeaders"], "X-Api-Key": secret},
            "body": json.dumps(order),
        },
    )
    return replay, secret


def test_a_secret_headers_value_in_the_modified_body_is_hidden_in_the_payload_diff(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    """A secret header's value that the modified body repeats (a customer id that is also the
    API key; a token pasted into the order) is a secret in the diff as it is in the trace:
    section 4 hides secrets in "payload diffs and audit events", and the stored trace already
    replaces the value in the body (redact_chunk/scrub_body), so the diff of the Replay and of
    REPLAY_REQUESTED told what the trace hid (security.md VAL-6: 0 times in the audit table)."""
    operator = user("operator")
    replay, secret = _replay_with_a_secret_the_body_repeats(operator, tools, 21)
    marker = sb.state.redactor.value(secret)
    diff = {op["path"]: op for op in replay["payloadDiff"]}
    assert diff["/headers/X-Api-Key"]["value"] == marker
    # Still the body's change, JSON as sent, with the secret as its fingerprint.
    assert json.loads(diff["/body"]["value"])["note"] == f"api key {marker}"
    assert secret not in json.dumps(operator.get(f"/replays/{replay['replayId']}").json())
    assert secret not in json.dumps(sb.state.replays.audit_events(replay["replayId"]))


def test_a_secret_a_route_copies_into_a_property_stays_hidden_in_the_trace(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    """enrich-customer stashes the order in the property ``order`` (``setProperty: simple:
    ${body}``); a secret header's value in the order then sits in a property whose name says
    nothing. The trace hid it in bodies and error texts but not in header and property values,
    so it reached the stored trace, the SSE stream and the database (section 4 "Secrets";
    security.md VAL-6)."""
    operator = user("operator")
    replay, secret = _replay_with_a_secret_the_body_repeats(operator, tools, 22)
    assert replay["status"] == "COMPLETED", replay
    marker = sb.state.redactor.value(secret)
    stored = detail(operator, replay["resultExecutionId"])
    stashed = [
        p["properties"]["order"] for p in flat(stored["processors"]) if "order" in (p["properties"] or {})
    ]
    assert stashed and all(json.loads(o)["note"] == f"api key {marker}" for o in stashed)
    assert secret not in json.dumps(stored)
    with operator.stream("GET", f"/replays/{replay['replayId']}/events") as r:
        assert secret.encode() not in r.read()
    db = Path(sb.state.store.path)
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            assert secret.encode() not in path.read_bytes()


#: A user's app whose ``toD`` puts a secret header into its URI, as Camel routes that call a
#: partner API often do (review finding 1).
_URI_ROUTES = """\
- route:
    id: lookup
    from:
      uri: "platform-http:/api/lookup"
      steps:
        - toD:
            id: call-partner
            uri: "http://partner.example/api/lookup?apiKey=${header.X-Api-Key}&user=${header.user}"
        - to:
            id: call-static
            uri: "http://partner.example/api/ping?apiKey=STATIC-LIVE-KEY-0042&x=1"
        - to:
            id: call-userinfo
            uri: "ahc:http://svc:UserInfoPw-77@partner.example/db"
        - setBody:
            id: echo-key
            simple: "looked up with key ${header.X-Api-Key}"
        - setBody:
            id: echo-json
            simple: '{"note": "key ${header.X-Api-Key}", "user": "${header.user}"}'
        - setBody:
            id: done
            constant: "ok"
"""
_URI_BEANS = """\
BEANS = {}
def sample_payload(rng, i):
    headers = {"X-Api-Key": "recorded-partner-key-0123", "user": "u%d" % i}
    return {"headers": headers, "body": "{}", "properties": {}}
"""


def test_a_secret_header_resolved_into_an_endpoint_uri_stays_hidden(tmp_path: Path, tools: Any) -> None:
    """The recorded trace, the replay's SSE events and its stored trace show the endpoint URI,
    and bodies the route built from the header, with the header's fingerprint, never the real
    key (section 4 "Secrets")."""
    app = tmp_path / "uri-app"
    app.mkdir()
    (app / "routes.yaml").write_text(_URI_ROUTES, encoding="utf-8")
    (app / "beans.py").write_text(_URI_BEANS, encoding="utf-8")
    handle = start(app=app, data=tmp_path / "data", per_env=2, seed=1)
    try:
        op = tools.user_client(handle, "operator")
        source = tools.source_exchange(op, "dev")
        recorded = detail(op, source["executionId"])
        call = next(p for p in flat(recorded["processors"]) if p["processorId"] == "call-partner")
        marker = handle.state.redactor.value("recorded-partner-key-0123")
        assert recorded["inputHeaders"]["X-Api-Key"] == marker
        assert call["endpointUri"].startswith(f"http://partner.example/api/lookup?apiKey={marker}&user=u")
        new = "replayed-partner-key-" + uuid.uuid4().hex
        replay = replay_done(
            op, tools, source["exchangeId"], modifiedPayload={"headers": {"X-Api-Key": new, "user": "u0"}}
        )
        assert replay["status"] == "COMPLETED", replay
        with op.stream("GET", f"/replays/{replay['replayId']}/events") as r:
            raw = r.read()
        status, events = read_events(op, replay["replayId"])
        assert status == 200
        streamed = next(d for _, k, d in events if k == "processor" and d["processorId"] == "call-partner")
        new_marker = handle.state.redactor.value(new)
        assert streamed["endpointUri"] == f"http://partner.example/api/lookup?apiKey={new_marker}&user=u0"
        # A body the route built from the header holds its fingerprint too; JSON stays JSON.
        bodies = {d["processorId"]: d["outputBody"] for _, k, d in events if k == "processor"}
        assert bodies["echo-key"] == f"looked up with key {new_marker}"
        assert json.loads(bodies["echo-json"]) == {"note": f"key {new_marker}", "user": "u0"}
        assert new.encode() not in raw
        assert new not in json.dumps(detail(op, replay["resultExecutionId"]))
        db = Path(handle.state.store.path)
        for path in (db, db.with_name(db.name + "-wal")):
            if path.exists():
                data = path.read_bytes()
                assert new.encode() not in data and b"recorded-partner-key-0123" not in data
                # A key spelt in the route file, and a password behind a component prefix
                # (ahc:http://user:pw@...), are masked as well (found by review).
                assert b"STATIC-LIVE-KEY-0042" not in data and b"UserInfoPw-77" not in data
        # Preflight lists the route's endpoints from the route file: redacted the same way.
        preflight = op.get("/replays/preflight", params={"sourceExchangeId": source["exchangeId"]})
        assert preflight.status_code == 200, preflight.text
        uris = {e["processorId"]: e["uri"] for e in preflight.json()["endpoints"]}
        assert uris["call-static"].startswith("http://partner.example/api/ping?apiKey=[REDACTED:")
        assert uris["call-userinfo"].startswith("ahc:http://svc:[REDACTED:")
        assert "STATIC-LIVE-KEY-0042" not in preflight.text and "UserInfoPw-77" not in preflight.text
        op.close()
    finally:
        handle.stop()


def test_disconnecting_never_stops_a_replay(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op = user("operator")
    for hit in sources(op, "staging", 4):
        r = tools.post_replay(op, hit["exchangeId"])
        assert r.status_code == 202
        status, got = read_events(op, r.json()["replayId"], limit=1)  # read one event, hang up
        assert status == 200 and got[0][0] == 1
        assert tools.wait_replay(op, r.json()["replayId"])["status"] == "COMPLETED"


# --------------------------------------------------------------------------- idempotency


def test_same_key_twice_runs_once_and_other_body_is_422(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op = user("operator")
    src = sources(op, "dev")[1]["exchangeId"]
    key = "idem-" + uuid.uuid4().hex
    first = tools.post_replay(op, src, key=key, reason="once")
    second = tools.post_replay(op, src, key=key, reason="once")
    assert first.status_code == second.status_code == 202
    assert second.json()["replayId"] == first.json()["replayId"]
    assert second.headers.get("idempotent-replayed") == "true" and "idempotent-replayed" not in first.headers
    done = tools.wait_replay(op, first.json()["replayId"])
    again = tools.post_replay(op, src, key=key, reason="once")  # after completion: the same, finished
    assert again.status_code == 202 and again.json()["replayId"] == done["replayId"]
    assert again.json()["status"] == "COMPLETED"
    other = tools.post_replay(op, src, key=key, reason="another reason")
    assert other.status_code == 422 and other.json()["error"] == "IDEMPOTENCY_CONFLICT"
    # One run: one execution carries the replay id, one REPLAY_REQUESTED, one terminal event.
    runs = op.post("/search/executions", json={"replayId": done["replayId"]}).json()["total"]
    assert runs == 1
    actions = [e["action"] for e in sb.state.replays.audit_events(done["replayId"])]
    assert actions.count("REPLAY_REQUESTED") == 1 and actions.count("REPLAY_STARTED") == 1
    assert len(db_rows(sb, "SELECT 1 FROM replays WHERE idempotency_key = ?", key)) == 1
    # The same key is another user's own: independent.
    mine = tools.post_replay(user("prod-operator"), src, key=key, reason="once")
    assert mine.status_code == 202 and mine.json()["replayId"] != done["replayId"]


def test_concurrent_posts_with_one_key_make_one_replay(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op = user("operator")
    src = sources(op, "staging")[2]["exchangeId"]
    key = uuid.uuid4().hex
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: tools.post_replay(op, src, key=key), range(8)))
    assert {a.status_code for a in answers} == {202}
    ids = {a.json()["replayId"] for a in answers}
    assert len(ids) == 1
    replay = tools.wait_replay(op, ids.pop())
    assert op.post("/search/executions", json={"replayId": replay["replayId"]}).json()["total"] == 1
    assert sum(1 for a in answers if "idempotent-replayed" not in a.headers) == 1


@pytest.mark.parametrize(
    ("key", "code"),
    [(None, "IDEMPOTENCY_KEY_REQUIRED"), ("", "BAD_IDEMPOTENCY_KEY"), ("k" * 256, "BAD_IDEMPOTENCY_KEY"),
     ("tab\there", "BAD_IDEMPOTENCY_KEY"), ("caf\xe9", "BAD_IDEMPOTENCY_KEY")],
)  # fmt: skip
def test_idempotency_key_is_required_and_printable_ascii(
    sb: SandboxHandle, user: Any, key: str | None, code: str
) -> None:
    op = user("operator")
    headers = {} if key is None else {"Idempotency-Key": key.encode("latin-1")}
    r = op.post("/replays", json={"sourceExchangeId": "x", "reason": "r"}, headers=headers)
    assert r.status_code == 400 and r.json()["error"] == code


# --------------------------------------------------------------------------- the trace stream


def test_resume_at_random_points_gives_exactly_1_to_n(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op = user("operator")
    replay = replay_done(op, tools, sources(op, "dev")[3]["exchangeId"])
    status, whole = read_events(op, replay["replayId"])
    n = len(whole)
    assert status == 200 and n > 10 and whole[-1][1] == "end"
    rng = random.Random(20261126)
    for _ in range(12):
        got: list[tuple[int, str, dict[str, Any]]] = []
        last: int | None = None
        while not got or got[-1][1] != "end":
            status, part = read_events(op, replay["replayId"], last=last, limit=rng.randint(1, 9))
            assert status == 200 and part
            got += part
            last = part[-1][0]
        assert got == whole  # ids 1..N, no gap, no duplicate, same data
    # At or past the end: 204 (a browser stops reconnecting).
    assert read_events(op, replay["replayId"], last=n)[0] == 204
    assert read_events(op, replay["replayId"], last=n + 5)[0] == 204
    # ?lastEventId= (a browser's first connection) does what the header does.
    assert read_events(op, replay["replayId"], lastEventId=str(n - 2))[1] == whole[-2:]
    assert read_events(op, replay["replayId"], lastEventId=str(n))[0] == 204


def test_stream_status_codes_and_headers(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op = user("operator")
    replay = replay_done(op, tools, sources(op, "dev")[4]["exchangeId"])
    rid = replay["replayId"]
    with op.stream("GET", f"/replays/{rid}/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in r.headers
        assert next(r.iter_lines()) == "retry: 3000"
    assert read_events(op, "replay-does-not-exist")[0] == 404
    for bad in ("abc", "-1", "1.5", "9" * 30):
        r = op.get(f"/replays/{rid}/events", headers={"Last-Event-ID": bad})
        assert r.status_code == 400 and r.json()["error"] == "BAD_LAST_EVENT_ID", bad
    # Another user's replay: 404 without audit:read, readable with it.
    assert user("prod-operator").get(f"/replays/{rid}").status_code == 404
    assert read_events(user("prod-operator"), rid)[0] == 404
    assert user("admin").get(f"/replays/{rid}").status_code == 200
    assert read_events(user("admin"), rid)[0] == 200


def test_live_tail_pings_and_timeout_of_a_silent_agent(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op = user("operator")
    agent = SilentAgent(sb, "silent-qa-1")
    try:
        r = tools.post_replay(op, sources(op, "dev")[5]["exchangeId"], targetAgent=agent.instance_id)
        assert r.status_code == 202, r.text
        rid = r.json()["replayId"]
        assert r.json()["targetEnvironment"] == "qa" and r.json()["agentId"] == agent.instance_id
        # The 202 is the Replay as written (not read back): what GET says while it is PENDING.
        assert r.json() == op.get(f"/replays/{rid}").json() and r.json()["status"] == "PENDING"
        assert len(r.json()["auditSeqs"]) == 1
        tools.wait_for(lambda: agent.commands)
        command = agent.commands[0]
        assert command["type"] == "replay" and command["replayId"] == rid and command["signature"]
        assert command["modifiedPayload"].keys() == {"headers", "body", "properties"}
        # Open the stream while the replay is PENDING: the live tail brings the rest.
        lines: list[str] = []
        started = time.monotonic()
        with op.stream("GET", f"/replays/{rid}/events") as s:
            for line in s.iter_lines():
                lines.append(line)
                if line.startswith("data: ") and "event: end" in lines:
                    break
        waited = time.monotonic() - started
        assert waited >= TIMEOUT - 0.5
        assert sum(1 for line in lines if line.startswith(":")) >= 2  # pings while idle
        data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
        assert [d["status"] for d in data] == ["PENDING", "TIMED_OUT", "TIMED_OUT"]
        replay = op.get(f"/replays/{rid}").json()
        assert replay["status"] == "TIMED_OUT"
        assert agent.instance_id in replay["result"]["errorMessage"]
        assert "before the final trace chunk" in replay["result"]["errorMessage"]
        actions = [e["action"] for e in sb.state.replays.audit_events(rid)]
        assert actions == ["REPLAY_REQUESTED", "REPLAY_ERROR"]
        assert sb.state.replays.audit_events(rid)[-1]["outcome"] == "TIMED_OUT"
        # An ack that comes after the timeout changes nothing.
        assert agent.ack(command, "SUCCESS", "late").status_code == 200
        time.sleep(0.2)
        assert op.get(f"/replays/{rid}").json()["status"] == "TIMED_OUT"
    finally:
        agent.close()


def test_a_timed_out_replay_is_over_its_late_trace_refused(sb: SandboxHandle, user: Any, tools: Any) -> None:
    # Found by review: a TIMED_OUT replay's command stayed valid for command_ttl (60 s), so an
    # agent could still run it, and its late trace was stored under the replayId (202) while
    # the Replay and its audit record said it never completed.
    op = user("operator")
    agent = SilentAgent(sb, "silent-qa-7")
    try:
        rid, chunks = _replay_chunks(op, tools, agent, sources(op, "dev")[11]["exchangeId"], per_chunk=1000)
        command = agent.commands[-1]
        lifetime = parse_time(command["expiresAt"]) - parse_time(command["issuedAt"])
        assert lifetime.total_seconds() <= TIMEOUT  # the agent refuses it once the replay gave up
        assert tools.wait_replay(op, rid, timeout=TIMEOUT + 10)["status"] == "TIMED_OUT"
        late = agent.post_chunk(chunks[0])
        assert late.status_code == 409 and late.json()["error"] == "REPLAY_ENDED"
        assert op.post("/search/executions", json={"replayId": rid}).json()["total"] == 0
        assert db_rows(sb, "SELECT count(*) FROM chunks WHERE replay_id = ?", rid) == [(0,)]
        assert sb.state.agents.pending(agent.instance_id) == []
    finally:
        agent.close()


def test_a_replay_ended_by_its_trace_withdraws_its_command(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op = user("operator")
    agent = SilentAgent(sb, "silent-qa-8")
    try:
        rid, chunks = _replay_chunks(op, tools, agent, sources(op, "dev")[12]["exchangeId"], per_chunk=1000)
        assert [c["commandId"] for c in sb.state.agents.pending(agent.instance_id)] == [
            agent.commands[-1]["commandId"]
        ]
        assert agent.post_chunk(chunks[0]).status_code == 202  # the final chunk, before any ack
        assert tools.wait_replay(op, rid)["status"] == "COMPLETED"
        # Not sent again to a channel that reconnects: the replay is over.
        assert sb.state.agents.pending(agent.instance_id) == []
        # The same chunk again (a retry whose 202 was lost) is still a no-op; another is not.
        assert agent.post_chunk(chunks[0]).status_code == 202
        other = {**chunks[0], "chunkSeq": 1}
        refused = agent.post_chunk(other)
        assert refused.status_code == 409 and refused.json()["error"] == "REPLAY_ENDED"
    finally:
        agent.close()


def test_a_trace_for_no_replay_or_another_source_is_refused(sb: SandboxHandle, user: Any, tools: Any) -> None:
    # Found by review: any agent could store a "replay" of any exchange, prod included, under a
    # replayId nobody requested (no Replay, no audit record), or file a replay under another
    # source than its own.
    op = user("operator")
    agent = SilentAgent(sb, "silent-qa-9")
    try:
        rid, chunks = _replay_chunks(op, tools, agent, sources(op, "dev")[13]["exchangeId"], per_chunk=1000)
        forged = {**chunks[0], "replayId": "replay-never-requested", "executionId": "x-forged-1"}
        forged["processors"] = [
            {**p, "replayId": "replay-never-requested", "executionId": "x-forged-1"}
            for p in forged["processors"]
        ]
        forged["execution"] = {
            **forged["execution"],
            "replayId": "replay-never-requested",
            "executionId": "x-forged-1",
        }
        refused = agent.post_chunk(forged)
        assert refused.status_code == 404 and refused.json()["error"] == "NO_SUCH_REPLAY"
        other_source = sources(op, "staging")[0]["exchangeId"]
        moved = {**chunks[0], "execution": {**chunks[0]["execution"], "sourceExchangeId": other_source}}
        bad = agent.post_chunk(moved)
        assert bad.status_code == 400 and bad.json()["error"] == "BAD_CHUNK"
        assert "sourceExchangeId" in bad.json()["message"]
        # An ack naming some other execution does not become the replay's result.
        prod = (
            user("admin")
            .post("/search/executions", json={"environment": "prod", "limit": 1})
            .json()["data"][0]["executionId"]
        )
        assert (
            agent.client.post(
                f"/agents/{agent.instance_id}/commands/{agent.commands[-1]['commandId']}/ack",
                headers=agent.auth,
                json={"status": "SUCCESS", "message": "ok", "data": {"executionId": prod}},
            ).status_code
            == 200
        )
        time.sleep(0.2)
        assert op.get(f"/replays/{rid}").json()["resultExecutionId"] is None
        nameless = {**chunks[0], "execution": {**chunks[0]["execution"], "sourceExchangeId": None}}
        assert agent.post_chunk(nameless).status_code == 202  # the replay's source is stamped on
        replay = tools.wait_replay(op, rid)
        assert replay["status"] == "COMPLETED" and replay["resultExecutionId"] == chunks[0]["executionId"]
        stored = op.get(f"/executions/{replay['resultExecutionId']}").json()
        assert stored["sourceExchangeId"] == replay["sourceExchangeId"] and stored["isReplay"] is True
    finally:
        agent.close()


def test_the_timeout_counts_the_agents_silence_not_the_whole_run(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    # Found by review: the timer ran from the request, so an agent still posting a long trace
    # (or waiting out 503 + Retry-After) was cut off mid-trace.
    op = user("operator")
    agent = SilentAgent(sb, "silent-qa-10")
    try:
        rid, chunks = _replay_chunks(op, tools, agent, sources(op, "dev")[14]["exchangeId"], per_chunk=4)
        assert len(chunks) * TIMEOUT * 0.4 > TIMEOUT * 1.5  # the whole run outlasts the timeout
        for chunk in chunks:
            time.sleep(TIMEOUT * 0.4)
            assert agent.post_chunk(chunk).status_code == 202
            assert op.get(f"/replays/{rid}").json()["status"] in ("RUNNING", "COMPLETED")
        assert tools.wait_replay(op, rid)["status"] == "COMPLETED"
    finally:
        agent.close()


def test_an_agent_told_to_wait_by_a_full_buffer_is_not_timed_out(
    sb: SandboxHandle, user: Any, tools: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 503 INGEST_BUSY answers before the chunk is read: it still counts as hearing from the
    # agent, or one waiting out a full buffer would be timed out for waiting (found by review).
    op = user("operator")
    agent = SilentAgent(sb, "silent-qa-11")
    gate = sb.server.app.state.ingest_gate
    try:
        rid, chunks = _replay_chunks(op, tools, agent, sources(op, "dev")[16]["exchangeId"], per_chunk=1000)
        monkeypatch.setattr(gate, "capacity", 0)  # the buffer is full
        for _ in range(4):  # 1.6 timeouts of refusals, each after 0.4 of one
            time.sleep(TIMEOUT * 0.4)
            busy = agent.post_chunk(chunks[0])
            assert busy.status_code == 503 and busy.json()["error"] == "INGEST_BUSY"
        assert op.get(f"/replays/{rid}").json()["status"] == "PENDING"
        monkeypatch.undo()
        assert agent.post_chunk(chunks[0]).status_code == 202
        assert tools.wait_replay(op, rid)["status"] == "COMPLETED"
    finally:
        monkeypatch.undo()
        agent.close()


def test_agent_dying_mid_replay_times_out_with_a_clear_message(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    op = user("operator")
    agent = SilentAgent(sb, "silent-qa-2")
    try:
        r = tools.post_replay(op, sources(op, "dev")[6]["exchangeId"], targetAgent=agent.instance_id)
        assert r.status_code == 202, r.text
        tools.wait_for(lambda: agent.commands)
        agent.die()  # got the command, then its connection went away
        replay = tools.wait_replay(op, r.json()["replayId"], timeout=TIMEOUT + 10)
        assert replay["status"] == "TIMED_OUT"
        assert "closed" in replay["result"]["errorMessage"] or "STALE" in replay["result"]["errorMessage"]
        # And an agent that is not LIVE any more is refused before anything runs.
        again = tools.post_replay(op, sources(op, "dev")[6]["exchangeId"], targetAgent=agent.instance_id)
        assert again.status_code == 503 and again.json()["error"] == "AGENT_UNAVAILABLE"
    finally:
        agent.close()


def _replay_chunks(
    op: httpx.Client, tools: Any, agent: SilentAgent, source: str, per_chunk: int
) -> tuple[str, list[dict[str, Any]]]:
    """A replay sent to ``agent`` and the wire chunks of its trace, run here by the same engine
    (what the agent would post), ``per_chunk`` processors a chunk."""
    r = tools.post_replay(op, source, targetAgent=agent.instance_id)
    assert r.status_code == 202, r.text
    rid = r.json()["replayId"]
    tools.wait_for(lambda: agent.commands)
    command = agent.commands[-1]
    routes = RouteSet.load(APP.versions["v2"], APP.beans, endpoints=APP.endpoints, version="v2")
    effective = command["modifiedPayload"]
    x = routes.run(
        ROUTE,
        Payload(effective["headers"], effective["body"], effective["properties"]),
        capture="PROCESSOR",
        context=RunContext(),
        replay_id=rid,
        environment="qa",
        instance_id=agent.instance_id,
    )
    x = replace(x, is_replay=True, source_exchange_id=command["sourceExchangeId"])
    return rid, [c.to_wire() for c in chunks_of(x, max_processors=per_chunk)]


def test_a_secret_one_chunk_of_a_replays_trace_shows_is_hidden_in_its_next_chunks(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    """The replay path remembers what a stored chunk showed (on the worker, at its commit) as the
    recorded path does: a body in a later chunk that echoes a header's secret, with no name to
    go by, is stored and streamed with the fingerprint."""
    op = user("operator")
    agent = SilentAgent(sb, "silent-qa-secrets")
    key = "replay-chunk-key-0123456789"
    try:
        rid, chunks = _replay_chunks(op, tools, agent, sources(op, "dev")[7]["exchangeId"], per_chunk=8)
        assert len(chunks) >= 2
        first = chunks[0]["processors"][0]
        first["inputHeaders"] = {**(first.get("inputHeaders") or {}), "X-Api-Key": key}
        echo = chunks[1]["processors"][0]
        echo["outputBody"] = f"called the partner with {key}"
        for chunk in chunks:
            assert agent.post_chunk(chunk).status_code == 202
        assert tools.wait_replay(op, rid)["status"] == "COMPLETED"
        marker = sb.state.redactor.value(key)
        stored = detail(op, chunks[0]["executionId"])
        texts = [p.get("outputBody") for p in flat(stored["processors"])]
        assert f"called the partner with {marker}" in texts
        assert key not in json.dumps(stored) and key not in json.dumps(read_events(op, rid)[1])
    finally:
        agent.close()


def _stored(sb: SandboxHandle, rid: str) -> list[tuple[int, str]]:
    return [
        (i, e)
        for i, e in db_rows(sb, "SELECT id, event FROM replay_events WHERE replay_id = ? ORDER BY id", rid)
    ]


def test_a_replays_chunks_are_stored_and_streamed_in_order_whatever_order_they_come_in(
    sb: SandboxHandle, user: Any, tools: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sb.state, "config", replace(sb.state.config, replay_timeout=60.0))
    monkeypatch.setattr(sb.state.replays, "tail_kept", 60.0)
    # Text-index jobs held back until the search below, which must run them and wait for them.
    monkeypatch.setattr(sb.state.replays, "index_quiet", 3600.0)
    monkeypatch.setattr(sb.state.replays, "index_max_wait", 3600.0)
    op = user("operator")
    agent = SilentAgent(sb, "silent-qa-4")
    try:
        rid, chunks = _replay_chunks(op, tools, agent, sources(op, "dev")[8]["exchangeId"], per_chunk=8)
        assert len(chunks) >= 3 and chunks[-1]["final"]
        execution_id = chunks[0]["executionId"]

        # A malformed chunk is refused whole: nothing stored, no event, the replay untouched.
        bad = json.loads(json.dumps(chunks[0]))
        bad["processors"][3]["seq"] = "four"
        refused = agent.post_chunk(bad)
        assert (refused.status_code, refused.json()["error"]) == (400, "BAD_FIELD"), refused.text
        assert _stored(sb, rid) == [(1, "status")]
        assert db_rows(sb, "SELECT count(*) FROM chunks WHERE execution_id = ?", execution_id) == [(0,)]

        # Chunk 1 before chunk 0: stored (the store takes chunks in any order), held back from
        # the trace until chunk 0 is in.
        assert agent.post_chunk(chunks[1]).status_code == 202
        assert _stored(sb, rid) == [(1, "status")]
        assert db_rows(sb, "SELECT chunk_seq FROM chunks WHERE execution_id = ?", execution_id) == [(1,)]
        assert op.get(f"/replays/{rid}").json()["status"] == "PENDING"
        assert agent.post_chunk(chunks[0]).status_code == 202
        seqs = [p["seq"] for c in chunks[:2] for p in c["processors"]]
        assert _stored(sb, rid) == [(1, "status"), (2, "status")] + [
            (i, "processor") for i in range(3, 3 + len(seqs))
        ]
        for chunk in chunks[2:]:
            assert agent.post_chunk(chunk).status_code == 202
        assert agent.post_chunk(chunks[-1]).status_code == 202  # a retry of the final chunk: no-op

        replay = tools.wait_replay(op, rid)
        assert replay["status"] == "COMPLETED" and replay["resultExecutionId"] == execution_id
        status, trace = read_events(op, rid)
        assert [i for i, _, _ in trace] == list(range(1, len(trace) + 1))
        procs = [d["seq"] for _, k, d in trace if k == "processor"]
        assert procs == sorted(p["seq"] for c in chunks for p in c["processors"])
        assert [k for _, k, _ in trace][-3:] == ["execution", "status", "end"]
        # `end` is sent only once the execution is stored: it can be read at once, and found by
        # a text search (its text index is written after the end; a text search waits for it).
        stored_execution = detail(op, execution_id)
        assert stored_execution["processorCount"] == len(procs)
        term = stored_execution["inputBody"][2:24]
        (pk,) = db_rows(sb, "SELECT id FROM executions WHERE execution_id = ?", execution_id)[0]
        assert db_rows(sb, "SELECT id FROM text_pending WHERE id = ?", pk) == [(pk,)]  # not yet
        hits = op.post("/search/executions", json={"text": term, "replayId": rid}).json()["data"]
        assert [h["executionId"] for h in hits] == [execution_id]

        # The live tail kept in memory is what the store holds, from any point of it.
        svc = sb.state.replays
        stored = svc.events_after(rid, 0)

        async def tails() -> list[Any]:
            return [svc.tail_after(rid, after) for after in range(len(stored) + 2)]

        in_memory = sb.server.call(tails)
        assert in_memory[: len(stored) + 1] == [stored[after:] for after in range(len(stored) + 1)]
        assert in_memory[len(stored) + 1] is None  # a reader past the end reads the store

        async def behind() -> Any:  # a tail that lost its start: a reader before it reads the store
            svc._tails[rid] = svc._tails[rid][5:]
            return svc.tail_after(rid, 4), svc.tail_after(rid, 5)

        assert sb.server.call(behind) == (None, stored[5:])
    finally:
        agent.close()


def test_processor_events_are_stored_as_references_and_read_back_as_they_were_sent(
    sb: SandboxHandle, user: Any, tools: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sb.state.replays, "tail_kept", 60.0)
    op = user("operator")
    replay = replay_done(op, tools, sources(op, "staging", 1)[0]["exchangeId"])
    rid = replay["replayId"]
    live = _ended_tail(sb, rid)
    assert [e for _, e, _ in live][-3:] == ["execution", "status", "end"]
    stored = db_rows(sb, "SELECT id, event, data FROM replay_events WHERE replay_id = ? ORDER BY id", rid)
    processors = [(i, d) for i, e, d in stored if e == "processor"]
    execution_id = replay["resultExecutionId"]
    assert len(processors) == detail(op, execution_id)["processorCount"] > 10
    # Stored once, as the records: the events hold a reference each, not the trace again.
    assert [d for _, d in processors] == [f"@{seq} {execution_id}" for seq in range(1, len(processors) + 1)]
    assert sum(len(d) for _, _, d in stored) < sum(len(d) for _, _, d in live) // 20

    # Read back from the store (the live tail gone, as after a restart): what was sent.
    sb.server.call(_drop_tail(sb, rid))
    assert sb.state.replays.events_after(rid, 0) == live
    status, trace = read_events(op, rid)
    assert status == 200 and [(i, e, json.loads(d)) for i, e, d in live] == trace
    status, resumed = read_events(op, rid, last=4)
    assert resumed == trace[4:]


@pytest.mark.parametrize("agent_sends", ["a long duration", "an integer beyond 64 bits", "-0.0"])
def test_a_trace_read_back_from_the_store_is_the_trace_sent_whatever_the_agent_wrote(
    sb: SandboxHandle, user: Any, tools: Any, monkeypatch: pytest.MonkeyPatch, agent_sends: str
) -> None:
    # Found by review: a Java agent's long durationMs came back as 3.0, an integer of 2**64 in
    # a header as 1.8446744073709552e+19 (orjson's reading), -0.0 as 0.0 (SQLite's REAL).
    monkeypatch.setattr(sb.state.replays, "tail_kept", 60.0)
    op = user("operator")
    agent = SilentAgent(sb, "silent-qa-" + uuid.uuid4().hex[:8])
    try:
        rid, chunks = _replay_chunks(op, tools, agent, sources(op, "dev")[3]["exchangeId"], per_chunk=8)
        for c in chunks:
            for p in c["processors"]:
                if agent_sends == "a long duration":
                    p["durationMs"] = 3
                elif agent_sends == "-0.0":
                    p["durationMs"] = -0.0
                else:
                    p["inputHeaders"] = {
                        **(p.get("inputHeaders") or {}),
                        "X-Big": 2**64,
                        "X-Low": -(2**63) - 1,
                    }
            assert agent.post_chunk(c).status_code == 202
        tools.wait_replay(op, rid)
        live = _ended_tail(sb, rid)
        assert sb.state.replays.events_after(rid, 0) == live
        if agent_sends.startswith("an integer"):
            first = json.loads(next(d for _, e, d in live if e == "processor"))
            assert first["inputHeaders"]["X-Big"] == 2**64 and first["inputHeaders"]["X-Low"] == -(2**63) - 1
            execution = detail(op, chunks[0]["executionId"])
            assert execution["processors"][0]["inputHeaders"]["X-Big"] == 2**64  # GET reads it exactly too
    finally:
        agent.close()


def _tail_of(sb: SandboxHandle, rid: str) -> Any:
    async def tail() -> Any:
        return sb.state.replays.tail_after(rid, 0)

    return tail


def _ended_tail(sb: SandboxHandle, rid: str) -> Any:
    """The replay's live tail once it holds the ``end``: the worker hands committed events to
    the event loop just after its commit, and a GET that saw the replay ended can come in
    between (a CI run caught it)."""
    deadline = time.monotonic() + 5
    while True:
        live = sb.server.call(_tail_of(sb, rid))
        if live and live[-1][1] == "end":
            return live
        assert time.monotonic() < deadline, "the live tail never got the replay's end"
        time.sleep(0.01)


def _drop_tail(sb: SandboxHandle, rid: str) -> Any:
    async def drop() -> None:
        sb.state.replays._tails.pop(rid, None)

    return drop


def test_events_stored_whole_by_an_earlier_version_are_read_as_they_are(sb: SandboxHandle) -> None:
    svc = sb.state.replays
    rid = "r-legacy-" + uuid.uuid4().hex[:8]
    data = json.dumps({"seq": 1, "replayId": rid, "processorId": "p1"}, separators=(",", ":"))
    with svc.store.transaction() as conn:
        conn.execute(
            "INSERT INTO replay_events (replay_id, id, event, data) VALUES (?, 1, 'processor', ?)",
            (rid, data),
        )
    assert svc.events_after(rid, 0) == [(1, "processor", data)]


def test_an_agent_cannot_write_another_agents_trace(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op = user("operator")
    recorded = detail(op, sources(op, "prod", 1)[0]["executionId"])
    rogue = SilentAgent(sb, "rogue-dev-1", environment="dev")
    target = SilentAgent(sb, "silent-qa-owner")
    try:
        # A dev agent relabelling a prod execution (replay:prod is derived from its environment).
        summary = {k: v for k, v in recorded.items() if k not in ("processors", "environment", "instanceId")}
        r = rogue.post_chunk(
            {"executionId": recorded["executionId"], "exchangeId": recorded["exchangeId"], "replayId": None,
             "chunkSeq": 999, "final": True, "execution": summary, "processors": []}
        )  # fmt: skip
        assert (r.status_code, r.json()["error"]) == (409, "CHUNK_CONFLICT"), r.text
        assert detail(op, recorded["executionId"])["environment"] == "prod"
        # Another agent posting a replay's trace.
        rid, chunks = _replay_chunks(op, tools, target, sources(op, "dev")[9]["exchangeId"], per_chunk=8)
        assert not chunks[0]["final"]
        before = len(sb.state.audit.events())
        r = rogue.post_chunk(chunks[0])
        assert (r.status_code, r.json()["error"]) == (403, "FORBIDDEN"), r.text
        assert _stored(sb, rid) == [(1, "status")]
        # A denied attempt, audited (section 6), without joining the replay's audit record.
        (denied,) = sb.state.audit.events()[before:]
        assert (denied["action"], denied["actor"]["username"]) == ("ACCESS_DENIED", "rogue-dev-1")
        assert denied["target"]["replayId"] is None and denied["detail"]["replayId"] == rid
        assert denied["detail"]["operation"] == "POST /data/chunks"
        assert target.post_chunk(chunks[0]).status_code == 202
    finally:
        rogue.close()
        target.close()


def test_a_replay_chunk_whose_write_fails_leaves_nothing_and_its_retry_completes_the_replay(
    sb: SandboxHandle, user: Any, tools: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sb.state, "config", replace(sb.state.config, replay_timeout=60.0))
    op = user("operator")
    agent = SilentAgent(sb, "silent-qa-5")
    conn = sqlite3.connect(sb.state.store.path, isolation_level=None, timeout=30)
    try:
        rid, chunks = _replay_chunks(op, tools, agent, sources(op, "dev")[9]["exchangeId"], per_chunk=1000)
        assert len(chunks) == 1
        conn.execute(
            "CREATE TRIGGER fault_injection BEFORE INSERT ON processors "
            "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )
        failed = agent.post_chunk(chunks[0])
        # The store's fault, not the agent's: 503 + Retry-After, so that an agent retries (a 500
        # made the sandbox's agent give up and the replay end ERROR; found by review).
        assert failed.status_code == 503 and failed.json()["error"] == "STORE_UNAVAILABLE"
        assert failed.headers["retry-after"] == str(sb.state.config.retry_after)
        assert "Traceback" not in failed.text and "disk I/O" not in failed.text
        # Nothing of the chunk is kept: no rows, no trace event, no audit event; still PENDING.
        execution_id = chunks[0]["executionId"]
        assert db_rows(sb, "SELECT count(*) FROM chunks WHERE execution_id = ?", execution_id) == [(0,)]
        assert _stored(sb, rid) == [(1, "status")]
        assert [e["action"] for e in sb.state.replays.audit_events(rid)] == ["REPLAY_REQUESTED"]
        assert op.get(f"/replays/{rid}").json()["status"] == "PENDING"
        conn.execute("DROP TRIGGER fault_injection")
        # The agent sends the chunk again: the replay runs to its end as if nothing had failed.
        assert agent.post_chunk(chunks[0]).status_code == 202
        replay = tools.wait_replay(op, rid)
        assert replay["status"] == "COMPLETED" and replay["resultExecutionId"] == execution_id
        _, trace = read_events(op, rid)
        assert [i for i, _, _ in trace] == list(range(1, len(trace) + 1))
        kinds = [k for _, k, _ in trace]
        assert kinds[:2] == ["status", "status"] and kinds[-3:] == ["execution", "status", "end"]
        assert kinds.count("processor") == len(chunks[0]["processors"])
        assert sb.state.audit.verify().ok
    finally:
        conn.execute("DROP TRIGGER IF EXISTS fault_injection")
        conn.close()
        agent.close()


def test_the_agents_retry_completes_a_replay_whose_chunk_met_a_storage_fault(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    op = user("operator")
    agent = sb.agents["dev"]  # the sandbox's own agent, with its own retry rule
    retries = agent.retries
    conn = sqlite3.connect(sb.state.store.path, isolation_level=None, timeout=30)
    lifted = threading.Event()

    def lift() -> None:
        with sqlite3.connect(sb.state.store.path, isolation_level=None, timeout=30) as c:
            c.execute("DROP TRIGGER IF EXISTS fault_injection")
        lifted.set()

    try:
        conn.execute(
            "CREATE TRIGGER fault_injection BEFORE INSERT ON processors "
            "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )
        timer = threading.Timer(0.6, lift)
        timer.start()
        r = tools.post_replay(op, sources(op, "dev")[15]["exchangeId"])
        assert r.status_code == 202, r.text
        replay = tools.wait_replay(op, r.json()["replayId"], timeout=30)
        assert lifted.is_set() and agent.retries > retries
        assert replay["status"] == "COMPLETED" and replay["resultExecutionId"]
    finally:
        timer.join()
        conn.execute("DROP TRIGGER IF EXISTS fault_injection")
        conn.close()


def test_ack_failure_is_error_with_the_agents_message(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op = user("operator")
    agent = SilentAgent(sb, "silent-qa-3")
    try:
        r = tools.post_replay(op, sources(op, "dev")[7]["exchangeId"], targetAgent=agent.instance_id)
        tools.wait_for(lambda: agent.commands)
        assert agent.ack(agent.commands[0], "FAILURE", "route order-intake is stopped").status_code == 200
        replay = tools.wait_replay(op, r.json()["replayId"])
        assert replay["status"] == "ERROR"
        assert "route order-intake is stopped" in replay["result"]["errorMessage"]
        status, trace = read_events(op, replay["replayId"])
        assert [(k, d.get("status")) for _, k, d in trace] == [
            ("status", "PENDING"), ("status", "ERROR"), ("end", "ERROR")
        ]  # fmt: skip
    finally:
        agent.close()


def test_stream_tickets_are_single_use_and_per_replay(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op = user("operator")
    a = replay_done(op, tools, sources(op, "dev")[8]["exchangeId"])
    b = replay_done(op, tools, sources(op, "dev")[9]["exchangeId"])
    ticket = op.post(f"/replays/{a['replayId']}/stream-ticket").json()
    assert ticket["expiresIn"] == 60 and len(ticket["ticket"]) >= 32
    anonymous = httpx.Client(base_url=sb.api, timeout=10)
    try:
        status, events = read_events(anonymous, a["replayId"], ticket=ticket["ticket"])
        assert status == 200 and events[-1][1] == "end"
        used = anonymous.get(f"/replays/{a['replayId']}/events", params={"ticket": ticket["ticket"]})
        assert used.status_code == 401 and used.json()["error"] == "BAD_TICKET"
        other = op.post(f"/replays/{a['replayId']}/stream-ticket").json()["ticket"]
        wrong = anonymous.get(f"/replays/{b['replayId']}/events", params={"ticket": other})
        assert wrong.status_code == 401
        assert anonymous.get(f"/replays/{a['replayId']}/events").status_code == 401
        # Only someone who may read the replay gets a ticket for it.
        assert user("prod-operator").post(f"/replays/{a['replayId']}/stream-ticket").status_code == 404
    finally:
        anonymous.close()


def test_a_stream_ticket_opens_the_stream_only_with_the_users_permissions_of_now(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    """A ticket carries who asked for it, not what they could do then: the trace stream reads
    the user table when the ticket is used, as a bearer token's request does (section 6;
    security.md RBAC-7, "revoking a role affects the next request"). An admin's ticket for
    another user's replay opened it after audit:read was taken away, and a deleted user's
    ticket still opened their stream."""
    op, admin = user("operator"), user("admin")
    rid = replay_done(op, tools, sources(op, "dev")[10]["exchangeId"])["replayId"]
    table = sb.state.authority.users
    demoted = replace(table.users["admin"], roles=("VIEWER",), grants=())
    gone = {name: u for name, u in table.users.items() if name != "operator"}
    anonymous = httpx.Client(base_url=sb.api, timeout=10)
    try:
        ticket = admin.post(f"/replays/{rid}/stream-ticket").json()["ticket"]
        sb.state.authority.users = replace(table, users={**table.users, "admin": demoted})
        seq = last_seq(sb)
        r = anonymous.get(f"/replays/{rid}/events", params={"ticket": ticket})
        assert r.status_code == 404, r.text
        [event] = [e for e in sb.state.replays.audit_events() if e["seq"] > seq]
        assert (event["action"], event["actor"]["username"]) == ("REPLAY_DENIED", "admin")
        assert "audit:read" not in event["actor"]["permissions"]
        sb.state.authority.users = table
        ticket = op.post(f"/replays/{rid}/stream-ticket").json()["ticket"]
        sb.state.authority.users = replace(table, users=gone)
        r = anonymous.get(f"/replays/{rid}/events", params={"ticket": ticket})
        assert r.status_code == 401 and r.json()["error"] == "BAD_TICKET", r.text
        # With the table as it was, a ticket opens the stream.
        sb.state.authority.users = table
        ticket = admin.post(f"/replays/{rid}/stream-ticket").json()["ticket"]
        status, events = read_events(anonymous, rid, ticket=ticket)
        assert status == 200 and events[-1][1] == "end"
    finally:
        sb.state.authority.users = table
        anonymous.close()


def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    op = user("operator")
    replay = replay_done(op, tools, sources(op, "dev")[10]["exchangeId"])
    token = op.headers["Authorization"].encode()
    sent: list[dict[str, Any]] = []

    async def call_app() -> float:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": f"/api/v1/replays/{replay['replayId']}/events", "raw_path": b"",
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
            "headers": [(b"authorization", token), (b"host", b"127.0.0.1")],
        }  # fmt: skip

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(3600)  # the client never hangs up ...
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and len(sent) >= 3:
                await asyncio.sleep(3600)  # ... and stops reading after the first events

        began = time.monotonic()
        await asyncio.wait_for(sb.server.app(scope, receive, send), timeout=SEND_TIMEOUT + 5)
        return time.monotonic() - began

    elapsed = asyncio.run(call_app())
    assert sent[0]["status"] == 200
    assert elapsed < SEND_TIMEOUT + 2
    # The replay and its events are untouched; the client resumes from the store.
    assert read_events(op, replay["replayId"], last=1)[1][-1][1] == "end"


def test_parse_last_event_id() -> None:
    assert parse_last_event_id(None, None) == 0
    assert parse_last_event_id("7", "3") == 7  # the header wins
    assert parse_last_event_id(None, "3") == 3
    assert parse_last_event_id("", None) == 0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=22) | st.from_regex(r"\A[0-9]{1,20}\Z") | st.sampled_from(["٣", "５", "१२", "1٣"]))
def test_last_event_id_is_ascii_digits_or_refused(raw: str) -> None:
    # Section 5: a bad Last-Event-ID is a 400. Other scripts' digits ("٣") are not event ids,
    # though Python's \d and int() read them (found by review).
    ascii_id = raw.strip().isascii() and raw.strip().isdigit() and len(raw.strip()) <= 18
    if raw == "":
        assert parse_last_event_id(raw, None) == 0
    elif ascii_id:
        assert parse_last_event_id(raw, None) == parse_last_event_id(None, raw) == int(raw.strip())
    else:
        with pytest.raises(ValidationError) as caught:
            parse_last_event_id(raw, None)
        assert caught.value.code == "BAD_LAST_EVENT_ID"


# --------------------------------------------------------------------------- permissions


EXPECTED = {  # user -> environments whose exchanges it may replay (section 6)
    "analyst": set(),
    "operator": {"dev", "staging"},
    "prod-operator": {"dev", "staging", "prod"},
    "admin": {"dev", "staging", "prod"},
}


@pytest.mark.parametrize("modified", [False, True])
def test_permission_matrix(sb: SandboxHandle, user: Any, tools: Any, modified: bool) -> None:
    admin = user("admin")
    picks = {env: sources(admin, env, 3)[-1] for env in ("dev", "staging", "prod")}
    made = []
    for name, allowed in EXPECTED.items():
        for env, hit in picks.items():
            body: dict[str, Any] = {}
            if modified:
                body["modifiedPayload"] = {"properties": {"whatIf": True}}
            denied_before = len(
                [e for e in sb.state.replays.audit_events() if e["action"] == "REPLAY_DENIED"]
            )
            r = tools.post_replay(user(name), hit["exchangeId"], **body)
            if env in allowed:
                assert r.status_code == 202, (name, env, r.text)
                made.append((user(name), r.json()["replayId"]))
            else:
                assert r.status_code == 403, (name, env, r.text)
                assert r.json()["error"] == "FORBIDDEN"
                missing = r.json()["details"]["missing"]
                assert (
                    missing == (["replay:run", "replay:modify"] if modified else ["replay:run"])
                    if (name == "analyst")
                    else ["replay:prod"]
                )
                denied = [e for e in sb.state.replays.audit_events() if e["action"] == "REPLAY_DENIED"]
                assert len(denied) == denied_before + 1
                assert denied[-1]["actor"]["username"] == name and denied[-1]["outcome"] == "DENIED"
                assert denied[-1]["detail"]["reason"]
    for client, rid in made:
        assert tools.wait_replay(client, rid)["status"] == "COMPLETED"


def test_claiming_dev_for_a_prod_exchange_still_needs_replay_prod(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    prod = sources(user("admin"), "prod", 3)[0]["exchangeId"]
    r = tools.post_replay(user("operator"), prod, targetEnvironment="dev")
    assert r.status_code == 403 and r.json()["details"]["missing"] == ["replay:prod"]
    assert r.json()["details"]["sourceEnvironment"] == "prod"
    ok = tools.post_replay(user("prod-operator"), prod, targetEnvironment="dev")
    assert ok.status_code == 202
    assert (ok.json()["sourceEnvironment"], ok.json()["targetEnvironment"]) == ("prod", "dev")
    assert tools.wait_replay(user("prod-operator"), ok.json()["replayId"])["status"] == "COMPLETED"


@pytest.mark.parametrize("body", [{"targetAgent": "no-such-agent"}, {"targetEnvironment": "qa"}, {}])
def test_replay_prod_is_checked_before_the_agent_is_picked(
    sb: SandboxHandle, user: Any, tools: Any, body: dict[str, Any]
) -> None:
    """A prod exchange needs replay:prod whichever agent would run it: picked first, an agent
    that cannot be had answered 503 AGENT_UNAVAILABLE, unaudited, telling an operator without
    replay:prod which agents exist (security review finding 4c)."""
    prod = sources(user("admin"), "prod", 3)[1]["exchangeId"]
    seq = last_seq(sb)
    r = tools.post_replay(user("operator"), prod, **body)
    assert (r.status_code, r.json()["error"]) == (403, "FORBIDDEN"), r.text
    assert r.json()["details"]["missing"] == ["replay:prod"]
    [event] = [e for e in sb.state.replays.audit_events() if e["seq"] > seq]
    assert event["action"] == "REPLAY_DENIED" and event["actor"]["username"] == "operator"
    assert event["target"]["sourceExchangeId"] == prod and event["target"]["environment"] == "prod"
    # Allowed, the same request gets on to the agent pick (503 for an agent that is not there).
    if body:
        assert tools.post_replay(user("prod-operator"), prod, **body).status_code == 503


def test_a_prod_agent_named_beside_a_claimed_dev_target_needs_replay_prod(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    """Section 6: the target environment is the chosen agent's, never the body's claim, and a
    denied attempt is audited (security.md RBAC-3: a dev claim for prod is treated as prod and
    audited). An operator without replay:prod who named the prod agent with targetEnvironment
    "dev" got 503 AGENT_UNAVAILABLE ("runs environment 'prod', not 'dev'"), unaudited."""
    op = user("operator")
    dev = sources(op, "dev")[14]["exchangeId"]
    prod_agent = sb.agents["prod"].instance_id
    seq = last_seq(sb)
    r = tools.post_replay(op, dev, targetEnvironment="dev", targetAgent=prod_agent)
    assert (r.status_code, r.json()["error"]) == (403, "FORBIDDEN"), r.text
    assert r.json()["details"]["missing"] == ["replay:prod"]
    [event] = [e for e in sb.state.replays.audit_events() if e["seq"] > seq]
    assert (event["action"], event["actor"]["username"]) == ("REPLAY_DENIED", "operator")
    assert event["target"]["sourceExchangeId"] == dev and event["target"]["environment"] == "prod"
    # With replay:prod the request gets on to the agent pick: the mismatch is a 503 as before.
    r = tools.post_replay(user("prod-operator"), dev, targetEnvironment="dev", targetAgent=prod_agent)
    assert (r.status_code, r.json()["error"]) == (503, "AGENT_UNAVAILABLE"), r.text


def test_reading_another_users_replay_is_404_and_audited(sb: SandboxHandle, user: Any, tools: Any) -> None:
    """Section 5 hides another user's replay behind a 404; section 6 audits every denied
    attempt: GET, the trace stream and a stream ticket each write REPLAY_DENIED, with
    target.replayId null so that the prober's event does not join the victim's audit record
    (security review finding 4b). An unknown id is audited alike, so the two 404s take alike."""
    owner, prober = user("prod-operator"), user("operator")
    rid = replay_done(owner, tools, sources(owner, "dev")[15]["exchangeId"])["replayId"]
    record = len(sb.state.replays.audit_events(rid))
    calls = [
        ("GET", f"/replays/{rid}"),
        ("GET", f"/replays/{rid}/events"),
        ("POST", f"/replays/{rid}/stream-ticket"),
        ("GET", "/replays/replay-no-such-id"),
    ]
    for method, path in calls:
        seq = last_seq(sb)
        r = prober.request(method, path)
        assert (r.status_code, r.json()["error"]) == (404, "NOT_FOUND"), path
        [event] = [e for e in sb.state.replays.audit_events() if e["seq"] > seq]
        assert event["action"] == "REPLAY_DENIED" and event["outcome"] == "DENIED", path
        assert event["actor"]["username"] == "operator" and event["target"]["replayId"] is None
        assert event["detail"]["replayId"] == path.split("/")[2]
        unknown = path.endswith("no-such-id")
        assert event["detail"]["reason"] == (
            "no such replay" if unknown else "another user's replay, and no audit:read"
        )
    assert len(sb.state.replays.audit_events(rid)) == record  # nothing joined the owner's record
    # The owner and audit:read still read it, and write no denial.
    seq = last_seq(sb)
    assert owner.get(f"/replays/{rid}").status_code == 200
    assert user("admin").get(f"/replays/{rid}").status_code == 200
    assert last_seq(sb) == seq


def test_replay_modify_is_needed_only_with_a_modified_payload(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    runner = user("runner")  # VIEWER + replay:run
    src = sources(runner, "dev")[11]["exchangeId"]
    plain = tools.post_replay(runner, src)
    assert plain.status_code == 202
    changed = tools.post_replay(runner, src, modifiedPayload={"body": "{}"})
    assert changed.status_code == 403 and changed.json()["details"]["missing"] == ["replay:modify"]
    assert tools.wait_replay(runner, plain.json()["replayId"])["status"] == "COMPLETED"


def test_every_replay_endpoint_refuses_low_and_mid_tiers(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op = user("operator")
    replay = replay_done(op, tools, sources(op, "dev")[12]["exchangeId"])
    rid = replay["replayId"]
    post = {"json": {"sourceExchangeId": "x", "reason": "r"}, "headers": {"Idempotency-Key": "k"}}
    calls = [
        ("POST", "/replays", post),
        ("GET", "/replays", {}),
        ("GET", "/replays/preflight", {"params": {"sourceExchangeId": "x"}}),
        ("GET", f"/replays/{rid}", {}),
        ("GET", f"/replays/{rid}/events", {}),
        ("POST", f"/replays/{rid}/stream-ticket", {}),
    ]  # fmt: skip
    table = sb.state.authority.users
    try:
        for tier in ("LOW", "MID"):
            sb.state.authority.users = replace(table, tenant=Tenant(table.tenant.id, tier))
            for method, path, kw in calls:
                seq = last_seq(sb)
                r = op.request(method, path, **kw)
                assert r.status_code == 403 and r.json()["error"] == "TIER_NOT_ENTITLED", (tier, path)
                # Every refusal audited (section 6), the trace stream's too (review finding 4a).
                [event] = [e for e in sb.state.replays.audit_events() if e["seq"] > seq]
                assert (event["action"], event["detail"]["code"]) == ("REPLAY_DENIED", "TIER_NOT_ENTITLED"), (
                    path
                )
                assert event["actor"]["username"] == "operator"
    finally:
        sb.state.authority.users = table
    assert op.get(f"/replays/{rid}").status_code == 200


def test_a_refusal_naming_another_users_replay_stays_out_of_its_audit_record(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    """Section 7: a replay's audit record is the events sharing its replayId, and audit:read-own
    shows them to its requester. In a LOW tenant another user's refused GET, trace stream or
    ticket naming the replay was written with target.replayId, so the requester read who
    probed their replay, from which address (the rule _audit_denial states and deny_read
    follows: a caller may not add events to a record that is not theirs by naming it)."""
    op, analyst = user("operator"), user("analyst")
    rid = replay_done(op, tools, sources(op, "dev")[13]["exchangeId"])["replayId"]
    record = [e["seq"] for e in sb.state.replays.audit_events(rid)]
    table = sb.state.authority.users
    try:
        sb.state.authority.users = replace(table, tenant=Tenant(table.tenant.id, "LOW"))
        for method, path in (
            ("GET", f"/replays/{rid}"),
            ("GET", f"/replays/{rid}/events"),
            ("POST", f"/replays/{rid}/stream-ticket"),
        ):
            seq = last_seq(sb)
            r = analyst.request(method, path)
            assert r.status_code == 403 and r.json()["error"] == "TIER_NOT_ENTITLED", path
            [event] = [e for e in sb.state.replays.audit_events() if e["seq"] > seq]
            assert event["actor"]["username"] == "analyst" and event["action"] == "REPLAY_DENIED"
            assert event["target"]["replayId"] is None and event["detail"]["replayId"] == rid, path
        # The requester's own refusal is part of their replay's record, as before.
        seq = last_seq(sb)
        assert op.get(f"/replays/{rid}").status_code == 403
        [own] = [e for e in sb.state.replays.audit_events() if e["seq"] > seq]
        assert own["target"]["replayId"] == rid
    finally:
        sb.state.authority.users = table
    assert [e["seq"] for e in sb.state.replays.audit_events(rid)] == [*record, own["seq"]]
    receipts = op.get("/admin/audit", params={"replayId": rid}).json()["data"]
    assert "analyst" not in {e["actor"]["username"] for e in receipts}


@pytest.mark.parametrize(
    "prefix", ["camel", "CAMEL", "cAmEl", "CaMeL", "camEL", "org.apache.camel", "ORG.Apache.CAMEL"]
)
def test_control_headers_are_refused_and_audited(
    sb: SandboxHandle, user: Any, tools: Any, prefix: str
) -> None:
    op = user("operator")
    src = sources(op, "dev")[13]["exchangeId"]
    before = db_rows(sb, "SELECT count(*) FROM replays")[0][0]
    name = prefix + "HttpUri"
    r = tools.post_replay(op, src, modifiedPayload={"headers": {"X-Ok": "1", name: "http://evil/"}})
    assert r.status_code == 400 and r.json()["error"] == "CONTROL_HEADER"
    assert name in r.json()["message"]
    assert db_rows(sb, "SELECT count(*) FROM replays")[0][0] == before
    last = sb.state.replays.audit_events()[-1]
    assert last["action"] == "CONTROL_HEADER_REJECTED" and last["detail"]["headers"] == [name]
    assert last["actor"]["username"] == "operator" and last["target"]["sourceExchangeId"] == src
    # A client the audit cannot canonicalise (an integer past 2**53) does not keep the attempt
    # out of the audit record (found by review); the client is then not recorded.
    seq = last["seq"]
    r = _post_with_client(op, src, {"n": 2**53 + 1}, modifiedPayload={"headers": {name: "x"}})
    assert r.status_code == 400 and r.json()["error"] == "CONTROL_HEADER"
    last = sb.state.replays.audit_events()[-1]
    assert (last["seq"], last["action"], last["source"]["client"]) == (
        seq + 1,
        "CONTROL_HEADER_REJECTED",
        None,
    )
    # Without a control header, such a client is a bad request.
    r = _post_with_client(op, src, {"n": 2**53 + 1})
    assert r.status_code == 400 and "client" in r.json()["message"]


@pytest.mark.parametrize(
    ("case", "body", "headers"),
    [
        ("empty reason", {"reason": " "}, None),
        ("no sourceExchangeId", {"sourceExchangeId": None}, None),
        ("a bad sourceExchangeId", {"sourceExchangeId": "../etc/passwd"}, None),
        ("an unknown field", {"extra": 1}, None),
        ("another header with CR/LF", {"modifiedPayload": {"headers": {"X-A": "1\r\nB: 2"}}}, None),
        ("its own value with CR/LF", {"modifiedPayload": {"headers": {"X-A": "1"}, "body": 3}}, "x\r\ny"),
        ("an unknown payload part", {"modifiedPayload": {"headers": {}, "cookies": {}}}, None),
        ("no Idempotency-Key", {}, None),
    ],
)
def test_a_control_header_is_audited_whatever_else_is_wrong(
    sb: SandboxHandle, user: Any, case: str, body: dict[str, Any], headers: str | None
) -> None:
    """Section 4: refused *and audited*. Any other fault of the request used to answer first
    (400 VALIDATION / BAD_HEADER / IDEMPOTENCY_KEY_REQUIRED) and leave no audit event, so a
    prober could add one to hide (security review finding 3)."""
    op = user("operator")
    src = sources(op, "dev")[13]["exchangeId"]
    name = "CamelHttpUri"
    payload = body.get("modifiedPayload", {"headers": {}})
    payload = {**payload, "headers": {**payload["headers"], name: headers or "http://evil/"}}
    request = {"sourceExchangeId": src, "reason": "probe", **body, "modifiedPayload": payload}
    seq = last_seq(sb)
    key = {} if case == "no Idempotency-Key" else {"Idempotency-Key": uuid.uuid4().hex}
    r = op.post("/replays", json=request, headers=key)
    assert (r.status_code, r.json()["error"]) == (400, "CONTROL_HEADER"), (case, r.text)
    [event] = [e for e in sb.state.replays.audit_events() if e["seq"] > seq]
    assert event["action"] == "CONTROL_HEADER_REJECTED" and event["detail"]["headers"] == [name]
    assert event["actor"]["username"] == "operator"
    source = request["sourceExchangeId"]
    assert event["target"]["sourceExchangeId"] == (src if source == src else None)


def test_a_control_header_is_audited_whatever_the_declared_content_type(sb: SandboxHandle, user: Any) -> None:
    """A body not declared JSON got 415 UNSUPPORTED_MEDIA_TYPE before it was read, so a control
    header sent as text/plain (or form-urlencoded, curl -d's default) was refused unaudited:
    one more fault a prober could add to leave no trace (the reason the screen runs first,
    security review finding 3). The body of an authenticated POST /replays is now read for
    control headers first; without one the answer is still 415, and nothing is audited."""
    op = user("operator")
    src = sources(op, "dev")[13]["exchangeId"]
    attempt = json.dumps(
        {"sourceExchangeId": src, "reason": "probe", "modifiedPayload": {"headers": {"cAmElHttpUri": "x"}}}
    ).encode()
    harmless = json.dumps({"sourceExchangeId": src, "reason": "probe"}).encode()
    before = db_rows(sb, "SELECT count(*) FROM replays")[0][0]
    for kind in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Idempotency-Key": uuid.uuid4().hex, **({"Content-Type": kind} if kind else {})}
        seq = last_seq(sb)
        r = op.post("/replays", content=attempt, headers=headers)
        assert (r.status_code, r.json()["error"]) == (400, "CONTROL_HEADER"), (kind, r.text)
        [event] = [e for e in sb.state.replays.audit_events() if e["seq"] > seq]
        assert event["action"] == "CONTROL_HEADER_REJECTED" and event["detail"]["headers"] == ["cAmElHttpUri"]
        assert event["actor"]["username"] == "operator" and event["target"]["sourceExchangeId"] == src
        for body in (harmless, b"not json", b'{"a": 1, "a": 2}'):
            r = op.post("/replays", content=body, headers=headers)
            assert (r.status_code, r.json()["error"]) == (415, "UNSUPPORTED_MEDIA_TYPE"), (kind, body)
        assert last_seq(sb) == event["seq"]
    # Without a token nothing is read: 401, as before, and nothing audited.
    seq = last_seq(sb)
    bare = httpx.post(f"{sb.api}/replays", content=attempt, headers={"Content-Type": "text/plain"})
    assert bare.status_code == 401 and last_seq(sb) == seq
    assert db_rows(sb, "SELECT count(*) FROM replays")[0][0] == before


def _post_with_client(op: httpx.Client, source: str, client: Any, **body: Any) -> httpx.Response:
    return op.post(
        "/replays",
        json={"sourceExchangeId": source, "reason": "test", "client": client, **body},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )


def test_a_client_objects_secrets_are_kept_as_fingerprints(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op = user("operator")
    token = "tok-" + uuid.uuid4().hex
    r = _post_with_client(
        op, sources(op, "dev")[14]["exchangeId"], {"notebook": "t.ipynb", "apiToken": token}
    )
    assert r.status_code == 202, r.text
    marker = sb.state.redactor.value(token)
    assert r.json()["client"] == {"notebook": "t.ipynb", "apiToken": marker}
    requested = sb.state.replays.audit_events(r.json()["replayId"])[0]
    assert requested["source"]["client"] == {"notebook": "t.ipynb", "apiToken": marker}
    tools.wait_replay(op, r.json()["replayId"])


def test_bad_requests(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op = user("operator")
    src = sources(op, "dev")[0]["exchangeId"]
    cases = [
        ({"sourceExchangeId": src}, 400),  # no reason
        ({"sourceExchangeId": src, "reason": "x" * 501}, 400),
        ({"sourceExchangeId": "../etc/passwd", "reason": "r"}, 400),
        ({"sourceExchangeId": src, "reason": "r", "extra": 1}, 400),
        ({"sourceExchangeId": src, "reason": "r", "modifiedPayload": {"body": 3}}, 400),
        ({"sourceExchangeId": src, "reason": "r", "modifiedPayload": {"headers": {"a": "1\r\nb: 2"}}}, 400),
        ({"sourceExchangeId": "no-such-exchange", "reason": "r"}, 404),
        ({"sourceExchangeId": src, "reason": "r", "targetEnvironment": "nowhere"}, 503),
    ]
    for body, status in cases:
        r = op.post("/replays", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert r.status_code == status, (body, r.text)
        assert set(r.json()) == {"error", "message", "details"}


# --------------------------------------------------------------------------- listing and preflight


def test_list_shows_own_replays_unless_audit_read(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op, admin = user("operator"), user("admin")
    mine = op.get("/replays", params={"limit": 1000}).json()
    assert mine["total"] >= 1 and {r["requestedBy"] for r in mine["data"]} == {"operator"}
    everyone = admin.get("/replays", params={"limit": 1000}).json()
    assert everyone["total"] > mine["total"]
    assert {r["requestedBy"] for r in everyone["data"]} >= {"operator", "admin", "prod-operator"}
    times = [r["requestedAt"] for r in everyone["data"]]
    assert times == sorted(times, reverse=True)
    page = admin.get("/replays", params={"limit": 2, "offset": 1}).json()
    assert page["data"] == everyone["data"][1:3] and (page["offset"], page["limit"]) == (1, 2)
    timed_out = admin.get("/replays", params={"status": "TIMED_OUT"}).json()["data"]
    assert timed_out and {r["status"] for r in timed_out} == {"TIMED_OUT"}
    src = everyone["data"][0]["sourceExchangeId"]
    by_source = admin.get("/replays", params={"sourceExchangeId": src}).json()["data"]
    assert by_source and {r["sourceExchangeId"] for r in by_source} == {src}
    assert admin.get("/replays", params={"requestedBy": "operator"}).json()["total"] == mine["total"]
    for bad in ({"limit": 0}, {"limit": 1001}, {"status": "DONE"}, {"offset": -1}, {"nope": 1}):
        assert admin.get("/replays", params=bad).status_code == 400, bad
    assert user("analyst").get("/replays").json()["total"] == 0


def test_preflight(sb: SandboxHandle, user: Any) -> None:
    op = user("operator")
    prod = sources(user("admin"), "prod", 1)[0]
    pf = op.get("/replays/preflight", params={"sourceExchangeId": prod["exchangeId"]})
    assert pf.status_code == 200, pf.text
    body = pf.json()
    assert body["sourceEnvironment"] == body["targetEnvironment"] == "prod"
    assert body["agent"]["instanceId"] == "orders-prod-1" and body["routeVersion"] == "v1"
    assert body["requiredPermissions"] == ["replay:run", "replay:prod"]
    assert body["missingPermissions"] == ["replay:prod"]
    uris = {e["uri"]: e for e in body["endpoints"]}
    assert any(u.startswith("kafka:fulfilment") for u in uris)  # a prod (ROUTE) source: from the routes
    assert any(u.startswith("http") for u in uris)  # reached through direct:enrich-customer
    assert all(e["stubbed"] for e in body["endpoints"])
    assert not any(u.startswith(("direct:", "log:")) for u in uris)
    dev = sources(op, "dev", 1)[0]
    pf = op.get(
        "/replays/preflight", params={"sourceExchangeId": dev["exchangeId"], "modified": "true"}
    ).json()
    assert pf["requiredPermissions"] == ["replay:run", "replay:modify"] and pf["missingPermissions"] == []
    assert pf["stubReplies"] >= 1
    nowhere = op.get(
        "/replays/preflight", params={"sourceExchangeId": dev["exchangeId"], "targetEnvironment": "nowhere"}
    ).json()
    assert nowhere["agent"] is None and "nowhere" in nowhere["agentError"]
    assert op.get("/replays/preflight", params={"sourceExchangeId": "nope"}).status_code == 404
    assert op.get("/replays/preflight").status_code == 400
    assert user("analyst").get("/replays/preflight", params={"sourceExchangeId": "x"}).status_code == 403


def test_secret_names_agree_with_the_servers_redactor() -> None:
    # Whatever the server redacts in stored traces, the payload diff redacts too.
    names = ["Authorization", "Cookie", "Set-Cookie", "Proxy-Authorization", "X-API-Key", "x_api_key",
             "dbPassword", "client_secret", "X-Auth-Token", "apiKey", "PassPhrase", "aws.accessKey",
             "OrderId", "Content-Type", "channel", "author"]  # fmt: skip
    for name in names:
        assert payload_is_secret_name(name) == security_is_secret_name(name), name


def test_idempotency_keys_expire_after_their_ttl() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    create_tables(conn)
    day = 24 * 3600 * 1000
    assert claim_key(conn, "t", "user:a", "k", "fp1", "r1", 1000, day)
    assert not claim_key(conn, "t", "user:a", "k", "fp2", "r2", 1000 + day - 1, day)  # still held
    assert claim_key(conn, "t", "user:b", "k", "fp2", "r3", 1000, day)  # per user
    assert find_key(conn, "t", "user:a", "k", 1000 + day - 1) == ("fp1", "r1")
    assert find_key(conn, "t", "user:a", "k", 1000 + day) is None  # expired: reusable
    assert claim_key(conn, "t", "user:a", "k", "fp2", "r4", 1000 + day, day)
    assert find_key(conn, "t", "user:a", "k", 1000 + day) == ("fp2", "r4")


def test_audit_rows_cannot_be_updated_or_deleted(sb: SandboxHandle, user: Any, tools: Any) -> None:
    replay_done(user("operator"), tools, sources(user("operator"), "dev")[14]["exchangeId"])
    conn = sqlite3.connect(sb.state.store.path)
    try:
        for sql in ("UPDATE audit_events SET outcome = 'X'", "DELETE FROM audit_events"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(sql)
    finally:
        conn.close()
    assert audit.verify(sb.state.replays.audit_events()).ok


# --------------------------------------------------------------------------- restart


def test_restart_marks_running_replays_aborted_and_never_reruns_them(tmp_path: Path, tools: Any) -> None:
    data = tmp_path / "restart"
    first = start(data=data, per_env=5, seed=3)
    key = uuid.uuid4().hex
    try:
        agent = SilentAgent(first, "silent-qa-restart")
        op = tools.user_client(first, "operator")
        src = sources(op, "dev", 1)[0]["exchangeId"]
        r = tools.post_replay(op, src, key=key, targetAgent=agent.instance_id)
        assert r.status_code == 202 and r.json()["status"] == "PENDING"
        rid = r.json()["replayId"]
        token = op.headers["Authorization"]
        op.close()
    finally:
        first.stop()
        agent.client.close()
    second = start(data=data, per_env=5, seed=3)
    try:
        op = tools.user_client(second, "operator")
        replay = op.get(f"/replays/{rid}").json()
        assert replay["status"] == "ABORTED"
        assert "not run again" in replay["result"]["errorMessage"]
        status, trace = read_events(op, rid)
        assert [(k, d.get("status")) for _, k, d in trace][-2:] == [("status", "ABORTED"), ("end", "ABORTED")]
        actions = [e["action"] for e in second.state.replays.audit_events(rid)]
        assert actions == ["REPLAY_REQUESTED", "REPLAY_ABORTED"]
        assert audit.verify(second.state.replays.audit_events()).ok
        # A retry with the key gives the ABORTED replay back (tokens survive a restart).
        retry = httpx.post(
            f"{second.api}/replays",
            json={"sourceExchangeId": src, "reason": "test", "targetAgent": "silent-qa-restart"},
            headers={"Authorization": token, "Idempotency-Key": key},
        )
        assert retry.status_code == 202 and retry.json()["replayId"] == rid
        assert retry.json()["status"] == "ABORTED"
        assert op.post("/search/executions", json={"replayId": rid}).json()["total"] == 0
        op.close()
    finally:
        second.stop()


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(tmp_path: Path, tools: Any) -> None:
    sb = start(data=tmp_path / "proxied", per_env=0, seed=3, trusted_proxies=("127.0.0.1",))
    try:
        viewer = tools.user_client(sb, "analyst")  # a VIEWER: refused, and the refusal audited
        r = viewer.post(
            "/replays",
            json={"sourceExchangeId": "ex-1", "reason": "behind a proxy"},
            headers={"Idempotency-Key": uuid.uuid4().hex, "X-Forwarded-For": "203.0.113.9"},
        )
        assert r.status_code == 403, r.text
        denied = [e for e in sb.state.replays.audit_events() if e["action"] == "REPLAY_DENIED"]
        assert [e["source"]["ip"] for e in denied] == ["203.0.113.9"]
        viewer.close()
    finally:
        sb.stop()


def test_stopping_writes_the_text_index_jobs_still_held_back(tmp_path: Path, tools: Any) -> None:
    data = tmp_path / "index-at-stop"
    sb = start(data=data, per_env=3, seed=3)
    try:
        sb.state.replays.index_quiet = sb.state.replays.index_max_wait = 3600.0
        op = tools.user_client(sb, "operator")
        r = tools.post_replay(op, sources(op, "dev", 1)[0]["exchangeId"])
        assert r.status_code == 202, r.text
        replay = tools.wait_replay(op, r.json()["replayId"])
        assert replay["status"] == "COMPLETED"
        execution_id = replay["resultExecutionId"]
        (pk,) = db_rows(sb, "SELECT id FROM executions WHERE execution_id = ?", execution_id)[0]
        assert db_rows(sb, "SELECT id FROM text_pending") == [(pk,)]
        path = sb.state.store.path
        op.close()
    finally:
        sb.stop()
    # Written at the stop, not left for the next open's catch-up.
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT id FROM text_pending").fetchall() == []
        assert conn.execute("SELECT rowid FROM execution_text WHERE rowid = ?", (pk,)).fetchall() == [(pk,)]
    finally:
        conn.close()


# --------------------------------------------------------------------------- stubbed replies


def _pending(sb: SandboxHandle) -> set[int]:
    return {pk for (pk,) in db_rows(sb, "SELECT id FROM text_pending")}


def _pk(sb: SandboxHandle, execution_id: str) -> int:
    return int(db_rows(sb, "SELECT id FROM executions WHERE execution_id = ?", execution_id)[0][0])


def test_text_index_jobs_wait_for_a_quiet_moment_then_run_together(
    sb: SandboxHandle, user: Any, tools: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = sb.state.replays
    monkeypatch.setattr(svc, "index_quiet", 3600.0)  # never quiet ...
    monkeypatch.setattr(svc, "index_max_wait", 3600.0)
    monkeypatch.setattr(svc, "index_batch", 3)  # ... so the third job sets them off
    op = user("operator")
    svc._index_now()  # earlier tests' jobs
    svc.store._await_index()
    pks = []
    for source in sources(op, "dev", 3):
        replay = tools.wait_replay(op, tools.post_replay(op, source["exchangeId"]).json()["replayId"])
        assert replay["status"] == "COMPLETED"
        pks.append(_pk(sb, replay["resultExecutionId"]))
        if len(pks) < 3:
            time.sleep(0.1)  # the loop looks at the jobs every index_quiet: here, not again
            assert _pending(sb) >= set(pks), "held back while fewer than index_batch wait"
    deadline = time.monotonic() + 10
    while _pending(sb) & set(pks) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _pending(sb) & set(pks)
    rows = db_rows(sb, f"SELECT rowid FROM execution_text WHERE rowid IN ({','.join('?' * 3)})", *pks)
    assert sorted(r for (r,) in rows) == sorted(pks)


def test_text_index_jobs_run_once_the_service_is_quiet_or_a_job_has_waited_too_long(
    sb: SandboxHandle, user: Any, tools: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = sb.state.replays
    op = user("operator")
    monkeypatch.setattr(svc, "index_batch", 1000)
    for quiet, max_wait in ((0.2, 3600.0), (3600.0, 0.3)):
        monkeypatch.setattr(svc, "index_quiet", quiet)
        monkeypatch.setattr(svc, "index_max_wait", max_wait)
        source = sources(op, "dev", 1)[0]["exchangeId"]
        replay = tools.wait_replay(op, tools.post_replay(op, source).json()["replayId"])
        pk = _pk(sb, replay["resultExecutionId"])
        ended = time.monotonic()
        deadline = ended + 10
        while pk in _pending(sb) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pk not in _pending(sb), (quiet, max_wait)
        assert db_rows(sb, "SELECT rowid FROM execution_text WHERE rowid = ?", pk) == [(pk,)]


def test_unmodified_replay_keeps_the_recorded_http_reply_headers(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    """A stubbed HTTP call answers with everything the source recorded, not only the body: the
    replay command's ``stubReplies`` carry status and headers, so the reply headers camel-http
    set in live traffic (``CamelHttpResponseCode``/``CamelHttpResponseText``) are there in the
    replay too, and an unmodified replay shows no header difference at the stubbed step."""
    admin = user("admin")
    source = None
    for hit in sources(admin, "staging"):  # staging records PROCESSOR traces (section 8)
        candidate = detail(admin, hit["executionId"])
        if any(p["processorId"] == "fetch-loyalty" for p in flat(candidate["processors"])):
            source = candidate
            break
    assert source is not None, "no staging exchange reached enrich-customer/fetch-loyalty"
    replay = replay_done(admin, tools, source["exchangeId"])
    assert replay["status"] == "COMPLETED", replay
    replayed = detail(admin, replay["resultExecutionId"])

    def fetch(execution: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            p
            for p in flat(execution["processors"])
            if p["routeId"] == "enrich-customer" and p["processorId"] == "fetch-loyalty"
        ]

    before, after = fetch(source), fetch(replayed)
    assert before and len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        assert new["stubbed"] is True
        assert old["outputHeaders"]["CamelHttpResponseCode"] == 200
        for name in ("CamelHttpResponseCode", "CamelHttpResponseText"):
            assert new["outputHeaders"].get(name) == old["outputHeaders"][name], name
        assert new["outputBody"] == old["outputBody"]

        # No header difference arises at the stubbed step: what differs after it (the app's
        # random trackingId, its timestamps, the X-Cameleer-Replay marker) differed before it.
        def differing(a: dict[str, Any], b: dict[str, Any]) -> set[str]:
            return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}

        made_here = differing(old["outputHeaders"], new["outputHeaders"]) - differing(
            old["inputHeaders"], new["inputHeaders"]
        )
        assert made_here == set()
    # The same through the diff a notebook uses: header rows at fetch-loyalty are noise or
    # carried in from before the step.
    carried = {
        k
        for old, new in zip(before, after, strict=True)
        for k in old["inputHeaders"].keys() | new["inputHeaders"].keys()
        if old["inputHeaders"].get(k) != new["inputHeaders"].get(k)
    }
    rows = diff(Execution.from_wire(source), Execution.from_wire(replayed)).rows
    at_fetch = [
        r
        for r in rows
        if (r.processor.route_id, r.processor.processor_id) == ("enrich-customer", "fetch-loyalty")
        and r.field == "headers"
        and not r.noise
        and r.path.removeprefix("headers:") not in carried
    ]
    assert at_fetch == [], [(r.path, r.original, r.replay) for r in at_fetch]


@settings(max_examples=300, deadline=None)
@given(
    event_id=st.integers(1, 10**9),
    event=st.sampled_from(["processor", "status", "execution", "end", "odd\nname"]),
    data=st.text(alphabet=st.sampled_from(list('{}"a:é\r\n\\ ,')), max_size=40),
)
def test_stored_events_are_framed_as_sse_starlette_frames_them(event_id: int, event: str, data: str) -> None:
    from sse_starlette import ServerSentEvent

    from moat_nb.sandbox.trace_stream import encode_event

    assert (
        encode_event(event_id, event, data)
        == ServerSentEvent(id=str(event_id), event=event, data=data).encode()
    )


# --------------------------------------------------------------------------- limits


def test_one_user_holds_at_most_max_streams_trace_streams_and_tickets(tmp_path: Path, tools: Any) -> None:
    """Review finding: one user could open trace streams and stream tickets without end and
    exhaust the sandbox. ``start(max_streams=N)``: the (N+1)th open stream of a user is 429
    TOO_MANY_STREAMS and the (N+1)th unused ticket 429 TOO_MANY_TICKETS (with Retry-After: when
    the oldest expires); other users are not held up, and a closed stream or a used ticket
    gives its place back."""
    import contextlib

    handle = start(data=tmp_path / "data", per_env=2, seed=1, max_streams=2, ping_interval=0.3)
    agent = None
    try:
        op = tools.user_client(handle, "operator")
        admin = tools.user_client(handle, "admin")
        agent = SilentAgent(handle, "silent-qa-limit")
        r = tools.post_replay(
            op, tools.source_exchange(op, "dev")["exchangeId"], targetAgent=agent.instance_id
        )
        assert r.status_code == 202, r.text
        path = f"/replays/{r.json()['replayId']}/events"  # PENDING: its streams stay open
        with contextlib.ExitStack() as held:
            first = held.enter_context(op.stream("GET", path))
            assert first.status_code == 200
            assert held.enter_context(op.stream("GET", path)).status_code == 200
            third = op.get(path)
            assert (third.status_code, third.json()["error"]) == (429, "TOO_MANY_STREAMS")
            assert "at most 2" in third.json()["message"] and third.json()["details"]["hint"]
            assert "retry-after" not in third.headers  # when a stream closes is not known
            with admin.stream("GET", path) as other:  # another user has streams of their own
                assert other.status_code == 200
            first.close()

            def reopened() -> bool:
                with op.stream("GET", path) as again:
                    return again.status_code == 200

            tools.wait_for(reopened)  # the server saw the first close and gave its place back
        tickets = [op.post(f"{path.removesuffix('/events')}/stream-ticket") for _ in range(3)]
        assert [t.status_code for t in tickets[:2]] == [200, 200]
        assert (tickets[2].status_code, tickets[2].json()["error"]) == (429, "TOO_MANY_TICKETS")
        assert 1 <= int(tickets[2].headers["retry-after"]) <= 60
        # A used ticket is no longer held: one more may be had.
        with httpx.Client(base_url=handle.api, timeout=15.0) as browser:
            with browser.stream("GET", path, params={"ticket": tickets[0].json()["ticket"]}) as s:
                assert s.status_code == 200
        assert op.post(f"{path.removesuffix('/events')}/stream-ticket").status_code == 200
        # A ticket refused for the stream limit is not used up (review finding: a browser's
        # retry with it got 401 BAD_TICKET): once a stream closes, the same ticket opens one.
        ticket = tickets[1].json()["ticket"]
        with contextlib.ExitStack() as held, httpx.Client(base_url=handle.api, timeout=15.0) as browser:
            first = held.enter_context(op.stream("GET", path))
            held.enter_context(op.stream("GET", path))
            refused = browser.get(path, params={"ticket": ticket})
            assert (refused.status_code, refused.json()["error"]) == (429, "TOO_MANY_STREAMS")
            first.close()

            def with_ticket() -> bool:
                with browser.stream("GET", path, params={"ticket": ticket}) as s:
                    assert s.status_code in (200, 429), s.read()
                    return s.status_code == 200

            tools.wait_for(with_ticket)
    finally:
        if agent is not None:
            agent.close()
        handle.stop()
