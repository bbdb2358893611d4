"""The audit endpoints and the audit record of real replays (moat_nb/sandbox/admin_api.py, the
audit parts of replays.py and server.py; DESIGN.md sections 4, 6, 7; security.md AUD-6, AUD-8,
AUD-10, RBAC-4, SOC-1, SOC-2).

One sandbox for the module: the real server on 127.0.0.1 with its three real agents over
HTTP/SSE, the default users and ``nobody`` (no role at all). A *refusing agent* — a plain HTTP
client that registers and acknowledges every command with ``FAILURE`` — stands for an agent that
cannot run a replay.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jsonschema import Draft202012Validator

from moat_nb import audit
from moat_nb.cli import main as cli
from moat_nb.sandbox import audit_log, start
from moat_nb.sandbox.agent import AgentConfig
from moat_nb.sandbox.runner import SandboxHandle
from moat_nb.sandbox.security import DEFAULT_USERS_TOML, Tenant, parse_users

USERS = DEFAULT_USERS_TOML + '\n[users.nobody]\npassword = "nobody"\nroles = []\n'
TERMINAL_ACTIONS = {"REPLAY_COMPLETED", "REPLAY_FAILED", "REPLAY_ERROR", "REPLAY_ABORTED"}


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    handle = start(
        data=tmp_path_factory.mktemp("admin-api"),
        per_env=20,
        seed=17,
        users=parse_users(USERS),
        agent_config=AgentConfig(chunk_processors=16),
        replay_timeout=10.0,
    )
    try:
        yield handle
    finally:
        handle.stop()


def sources(client: httpx.Client, environment: str, status: str = "COMPLETED", n: int = 20) -> list[dict]:
    r = client.post(
        "/search/executions",
        json={"environment": environment, "status": status, "isReplay": False, "limit": n},
    )
    assert r.status_code == 200, r.text
    return r.json()["data"]


def run(client: httpx.Client, tools: Any, source: str, *, key: str | None = None, **body: Any) -> dict:
    r = tools.post_replay(client, source, key=key, **body)
    assert r.status_code == 202, r.text
    return tools.wait_replay(client, r.json()["replayId"])


def events(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every event a GET /admin/audit with ``params`` answers, page by page."""
    out: list[dict[str, Any]] = []
    while True:
        r = client.get("/admin/audit", params={**params, "offset": len(out), "limit": 1000})
        assert r.status_code == 200, r.text
        page = r.json()
        out.extend(page["data"])
        if len(out) >= page["total"] or not page["data"]:
            return out


def stored(sb: SandboxHandle) -> list[dict[str, Any]]:
    """The whole log as stored (no AUDIT_QUERIED of its own)."""
    return sb.state.audit.events()


class RefusingAgent:
    """A registered agent that acknowledges every command it gets with FAILURE."""

    def __init__(self, sb: SandboxHandle, instance_id: str) -> None:
        self.instance_id = instance_id
        self.client = httpx.Client(base_url=sb.api, timeout=10.0)
        r = self.client.post(
            "/agents/register",
            headers={"Authorization": f"Bearer {sb.state.bootstrap_token}"},
            json={
                "instanceId": instance_id,
                "applicationId": "orders",
                "environmentId": "qa",
                "routeIds": ["order-intake", "enrich-customer"],
                "routeVersion": "v2",
            },
        )
        assert r.status_code == 200, r.text
        self.auth = {"Authorization": f"Bearer {r.json()['accessToken']}"}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not sb.state.agents.channel_open(instance_id):
            assert time.monotonic() < deadline
            time.sleep(0.02)

    def _listen(self) -> None:
        try:
            with self.client.stream("GET", f"/agents/{self.instance_id}/events", headers=self.auth) as r:
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        command = json.loads(line[5:])
                        self.client.post(
                            f"/agents/{self.instance_id}/commands/{command['commandId']}/ack",
                            headers=self.auth,
                            json={"status": "FAILURE", "message": "route order-intake is stopped"},
                        )
                    if self.stop.is_set():
                        break
        except httpx.HTTPError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.client.close()


# --------------------------------------------------------------------------- the record of a replay


def test_a_modified_replay_has_every_event_with_every_field(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op, admin = user("operator"), user("admin")
    hit = sources(op, "dev")[0]
    original = op.get(f"/executions/{hit['executionId']}").json()
    secret = "Bearer tok-" + uuid.uuid4().hex
    key = uuid.uuid4().hex
    body = json.loads(original["inputBody"])
    body["note"] = "changed"
    replay = run(
        op,
        tools,
        hit["exchangeId"],
        key=key,
        reason="check the audit record",
        modifiedPayload={
            "headers": {**original["inputHeaders"], "Authorization": secret},
            "body": json.dumps(body),
        },
    )
    assert replay["status"] == "COMPLETED"
    record = events(admin, replayId=replay["replayId"])
    assert [e["action"] for e in record] == ["REPLAY_REQUESTED", "REPLAY_STARTED", "REPLAY_COMPLETED"]
    assert [e["seq"] for e in record] == replay["auditSeqs"]
    requested, started, completed = record
    marker = sb.state.redactor.value(secret)
    diff = {op_["path"]: op_ for op_ in requested["detail"]["payloadDiff"]}
    assert diff["/headers/Authorization"]["value"] == marker  # RFC 6902, redacted
    assert json.loads(diff["/body"]["value"])["note"] == "changed"
    assert requested["detail"]["payloadDiff"] == replay["payloadDiff"]
    assert requested["detail"]["reason"] == "check the audit record"
    assert requested["detail"]["idempotencyKeySha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert requested["detail"]["targetAgent"] == replay["agentId"] == "orders-dev-1"
    assert requested["actor"] == {
        "username": "operator",
        "roles": ["OPERATOR"],
        "permissions": sorted(["executions:read", "audit:read-own", "replay:run", "replay:modify"]),
    }
    assert requested["source"]["ip"] == "127.0.0.1" and requested["source"]["userAgent"].startswith(
        "python-httpx"
    )
    assert started["detail"]["agentId"] == "orders-dev-1"
    execution = admin.get(f"/executions/{replay['resultExecutionId']}").json()
    assert completed["detail"]["resultExecutionId"] == replay["resultExecutionId"]
    assert completed["detail"]["resultStatus"] == execution["status"] == "COMPLETED"
    assert (
        completed["detail"]["outputBodySha256"]
        == hashlib.sha256(execution["outputBody"].encode()).hexdigest()
    )
    assert completed["detail"]["durationMs"] == execution["durationMs"]
    assert completed["detail"]["processorCount"] == execution["processorCount"]
    for e in record:
        assert e["target"] == {
            "replayId": replay["replayId"],
            "sourceExchangeId": hit["exchangeId"],
            "routeId": "order-intake",
            "environment": "dev",
        }
        assert e["occurredAt"].endswith("Z") and e["tenantId"] == "default" and e["outcome"]
    assert secret not in json.dumps(record)


def test_a_route_that_fails_and_an_agent_that_cannot_run_are_recorded(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    op, admin = user("operator"), user("admin")
    hit = sources(op, "dev")[5]
    order = json.loads(op.get(f"/executions/{hit['executionId']}").json()["inputBody"])
    order["customerId"] = "C-0000"  # no such customer: the route throws
    failed = run(op, tools, hit["exchangeId"], modifiedPayload={"body": json.dumps(order)})
    assert failed["status"] == "COMPLETED" and failed["result"]["status"] == "FAILED"
    last = events(admin, replayId=failed["replayId"])[-1]
    assert last["action"] == "REPLAY_FAILED" and last["outcome"] == "FAILED"
    assert last["detail"]["resultStatus"] == "FAILED" and last["detail"]["resultExecutionId"]
    agent = RefusingAgent(sb, "refusing-qa-1")
    try:
        errored = run(op, tools, sources(op, "dev")[1]["exchangeId"], targetAgent=agent.instance_id)
    finally:
        agent.close()
    assert errored["status"] == "ERROR"
    last = events(admin, replayId=errored["replayId"])[-1]
    assert last["action"] == "REPLAY_ERROR" and last["detail"]["replayStatus"] == "ERROR"
    assert "route order-intake is stopped" in last["detail"]["errorMessage"]


# --------------------------------------------------------------------------- denials


def test_denied_attempts_are_audited_with_actor_target_and_reason(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    analyst, op, nobody = user("analyst"), user("operator"), user("nobody")
    dev = sources(op, "dev")[2]["exchangeId"]
    prod = sources(user("admin"), "prod")[0]["exchangeId"]

    def last_denial() -> dict[str, Any]:
        return next(e for e in reversed(stored(sb)) if e["action"] in ("REPLAY_DENIED", "AUDIT_DENIED"))

    cases = [
        (lambda: tools.post_replay(analyst, dev), "analyst", "REPLAY_DENIED", dev, "replay:run"),
        (lambda: tools.post_replay(op, prod), "operator", "REPLAY_DENIED", prod, "replay:prod"),
        (
            lambda: analyst.get("/replays/preflight", params={"sourceExchangeId": dev}),
            "analyst",
            "REPLAY_DENIED",
            dev,
            "replay:run",
        ),
        (lambda: nobody.get("/admin/audit"), "nobody", "AUDIT_DENIED", None, "audit:read-own"),
        (lambda: op.get("/admin/audit/verify"), "operator", "AUDIT_DENIED", None, "audit:read"),
        (lambda: op.get("/admin/audit/export"), "operator", "AUDIT_DENIED", None, "audit:read"),
    ]
    for call, who, action, target, missing in cases:
        before = len(stored(sb))
        r = call()
        assert r.status_code == 403 and r.json()["error"] == "FORBIDDEN", r.text
        e = last_denial()
        assert e["seq"] > before and (e["action"], e["actor"]["username"], e["outcome"]) == (
            action,
            who,
            "DENIED",
        )
        assert e["target"]["sourceExchangeId"] == target
        assert missing in e["detail"]["reason"] and e["detail"]["missing"] == [missing]
    # A tenant whose tier does not include replay: refused and audited before any permission check.
    table = sb.state.authority.users
    try:
        sb.state.authority.users = replace(table, tenant=Tenant(table.tenant.id, "LOW"))
        r = tools.post_replay(user("admin"), dev)
        assert r.status_code == 403 and r.json()["error"] == "TIER_NOT_ENTITLED"
        e = last_denial()
        assert e["actor"]["username"] == "admin" and e["detail"]["code"] == "TIER_NOT_ENTITLED"
        assert e["detail"]["operation"] == "POST /replays" and "LOW" in e["detail"]["reason"]
        assert (
            user("admin").get("/admin/audit", params={"limit": 1}).status_code == 200
        )  # not a replay endpoint
    finally:
        sb.state.authority.users = table


def test_a_denied_attempts_source_keeps_a_bounded_part_of_long_headers(sb: SandboxHandle, user: Any) -> None:
    # Each refusal is an event of the append-only log: a caller may not grow it by whole
    # 8 kB headers a request (security walk; longer ones are refused before anything, 431).
    nobody = user("nobody")
    r = nobody.get("/admin/audit", headers={"User-Agent": "u" * 8_000, "X-Request-ID": "r" * 6_000})
    assert r.status_code == 403
    e = next(e for e in reversed(stored(sb)) if e["action"] == "AUDIT_DENIED")
    assert e["source"]["userAgent"] == "u" * 512 + "... (7488 more characters)"
    assert e["source"]["requestId"] == "r" * 512 + "... (5488 more characters)"
    r = nobody.get("/admin/audit", headers={"User-Agent": "short/1.0", "X-Request-ID": "req-7"})
    e = next(e for e in reversed(stored(sb)) if e["action"] == "AUDIT_DENIED")
    assert (e["source"]["userAgent"], e["source"]["requestId"]) == ("short/1.0", "req-7")


# --------------------------------------------------------------------------- reading the log


def test_reading_the_log_is_itself_audited(sb: SandboxHandle, user: Any, tools: Any) -> None:
    admin = user("admin")
    run(admin, tools, sources(admin, "staging")[0]["exchangeId"])
    r = admin.get("/admin/audit", params={"action": "REPLAY_REQUESTED", "limit": 2})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    page = r.json()
    assert len(page["data"]) == 2 and page["total"] >= 2 and (page["offset"], page["limit"]) == (0, 2)
    assert all(e["action"] == "REPLAY_REQUESTED" for e in page["data"])
    queried = stored(sb)[-1]
    assert queried["action"] == "AUDIT_QUERIED" and queried["actor"]["username"] == "admin"
    assert queried["detail"] == {
        "query": "events",
        "filters": {"action": "REPLAY_REQUESTED", "offset": 0, "limit": 2},
        "scope": "tenant",
        "returned": 2,
        "total": page["total"],
    }
    assert queried["seq"] not in [e["seq"] for e in page["data"]]
    v = admin.get("/admin/audit/verify").json()
    assert v["ok"] is True and v["firstBadSeq"] is None and v["reason"] is None
    after = stored(sb)[-1]
    assert after["action"] == "AUDIT_QUERIED" and after["detail"]["query"] == "verify"
    assert after["detail"]["ok"] is True and after["seq"] == v["headSeq"] + 1
    bundle = admin.get("/admin/audit/export").json()
    exported = stored(sb)[-1]
    assert exported["action"] == "AUDIT_EXPORTED" and bundle["events"][-1] == exported
    assert exported["detail"]["firstSeq"] == 1 and exported["detail"]["lastSeq"] == exported["seq"]


def test_filters_and_paging(sb: SandboxHandle, user: Any, tools: Any) -> None:
    admin = user("admin")
    whole = stored(sb)
    mid = whole[len(whole) // 2]
    by_seq = events(admin, **{"from": str(mid["seq"]), "to": str(mid["seq"] + 4)})
    assert [e["seq"] for e in by_seq] == list(range(mid["seq"], mid["seq"] + 5))
    by_time = events(admin, **{"from": mid["occurredAt"], "to": mid["occurredAt"]})
    assert mid["seq"] in [e["seq"] for e in by_time] and all(
        e["occurredAt"] == mid["occurredAt"] for e in by_time
    )
    by_actor = events(admin, actor="operator", action="REPLAY_REQUESTED")
    assert by_actor and all(
        e["actor"]["username"] == "operator" and e["action"] == "REPLAY_REQUESTED" for e in by_actor
    )
    pages = [
        admin.get("/admin/audit", params={"offset": o, "limit": 3, "to": "12"}).json() for o in (0, 3, 6, 9)
    ]
    assert [e["seq"] for p in pages for e in p["data"]] == list(range(1, 13)) and pages[0]["total"] == 12
    for bad in (
        {"action": "NOPE"},
        {"replayId": "../x"},
        {"from": "last week"},
        {"limit": "0"},
        {"limit": "1001"},
        {"sort": "x"},
    ):
        r = admin.get("/admin/audit", params=bad)
        assert r.status_code == 400 and set(r.json()) == {"error", "message", "details"}, bad
    assert admin.get("/admin/audit/verify", params={"x": "1"}).status_code == 400
    assert admin.get("/admin/audit/export", params={"from": str(10**9)}).status_code == 400


def test_read_own_sees_only_the_events_of_ones_own_replays(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op, prod_op, admin = user("operator"), user("prod-operator"), user("admin")
    theirs = run(prod_op, tools, sources(op, "dev")[3]["exchangeId"])
    mine = run(op, tools, sources(op, "dev")[4]["exchangeId"])
    own_ids = {
        r["replayId"]
        for r in admin.get("/replays", params={"requestedBy": "operator", "limit": 1000}).json()["data"]
    }
    seen = events(op)
    assert seen and {e["target"]["replayId"] for e in seen} <= own_ids
    assert mine["replayId"] in {e["target"]["replayId"] for e in seen}
    assert theirs["replayId"] not in {e["target"]["replayId"] for e in seen}
    everything = events(admin)
    receipts = [  # others' reads of the log are not receipts (review finding 6)
        e
        for e in everything
        if e["target"]["replayId"] in own_ids
        and (not e["action"].startswith("AUDIT_") or e["actor"]["username"] == "operator")
    ]
    assert len(seen) == len(receipts)
    record = admin.get(f"/replays/{theirs['replayId']}").json()["auditSeqs"]
    assert events(op, replayId=theirs["replayId"]) == []  # filtering cannot widen the scope
    # ... nor add to another's audit record (found by review): the query is recorded, unlinked.
    assert stored(sb)[-1]["detail"]["scope"] == "own" and stored(sb)[-1]["target"]["replayId"] is None
    assert events(op, replayId=mine["replayId"]) and stored(sb)[-1]["target"]["replayId"] == mine["replayId"]
    assert events(user("analyst")) == []  # a VIEWER with no replays has no receipts
    # A refused call that names another's replay only in a query parameter: unlinked too.
    refused = user("analyst").get(
        "/replays/preflight", params={"sourceExchangeId": "x", "replayId": theirs["replayId"]}
    )
    assert refused.status_code == 403
    assert stored(sb)[-1]["action"] == "REPLAY_DENIED" and stored(sb)[-1]["target"]["replayId"] is None
    assert admin.get(f"/replays/{theirs['replayId']}").json()["auditSeqs"] == record


def test_read_own_does_not_show_the_requester_who_reviewed_their_replay(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    """Review finding 6: an administrator's query naming the operator's replay is in the tenant's
    log, but not in the operator's own view (section 6: receipts of one's own replays)."""
    op, admin = user("operator"), user("admin")
    mine = run(op, tools, sources(op, "dev")[6]["exchangeId"])
    rid = mine["replayId"]
    r = admin.get(
        "/admin/audit",
        params={"replayId": rid, "actor": "operator"},
        headers={"User-Agent": "SecOps-Investigation-Console/2.1", "X-Request-Id": "case-4711"},
    )
    assert r.status_code == 200
    review = stored(sb)[-1]
    assert review["action"] == "AUDIT_QUERIED" and review["target"]["replayId"] == rid  # still audited
    assert review in events(admin, replayId=rid)
    seen = events(op, replayId=rid)
    assert {e["action"] for e in seen} >= {"REPLAY_REQUESTED", "REPLAY_COMPLETED"}
    assert all(e["actor"]["username"] == "operator" for e in seen if e["action"].startswith("AUDIT_"))
    assert "case-4711" not in json.dumps(events(op))
    # One's own reads of one's replay stay visible to oneself.
    assert any(e["action"] == "AUDIT_QUERIED" for e in events(op, replayId=rid))


# --------------------------------------------------------------------------- verify and export


def test_verify_names_the_first_bad_seq_of_a_tampered_log_and_recovers(sb: SandboxHandle, user: Any) -> None:
    admin = user("admin")
    assert admin.get("/admin/audit/export").status_code == 200  # signs a checkpoint at the head
    conn = sqlite3.connect(sb.state.store.path, isolation_level=None, timeout=30)
    try:
        seq = 5
        (outcome,) = conn.execute("SELECT outcome FROM audit_events WHERE seq = ?", (seq,)).fetchone()
        conn.execute("DROP TRIGGER audit_events_no_update")
        conn.execute("UPDATE audit_events SET outcome = 'NOTHING_HAPPENED' WHERE seq = ?", (seq,))
        v = admin.get("/admin/audit/verify").json()
        assert (v["ok"], v["firstBadSeq"], v["reason"]) == (False, seq, "HASH_MISMATCH") and v["message"]
        conn.execute("UPDATE audit_events SET outcome = ? WHERE seq = ?", (outcome, seq))
        # Cut the tail: the checkpoint in the anchor file (and the database) still covers it.
        head = conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
        tail = conn.execute(
            f"SELECT {audit_log.AUDIT_COLUMNS} FROM audit_events WHERE seq > ?", (head - 3,)
        ).fetchall()
        conn.execute("DROP TRIGGER audit_events_no_delete")
        conn.execute("DELETE FROM audit_events WHERE seq > ?", (head - 3,))
        v = admin.get("/admin/audit/verify").json()
        assert (v["ok"], v["reason"], v["firstBadSeq"]) == (False, "TRUNCATED", head - 2)
        conn.execute("DELETE FROM audit_events WHERE seq > ?", (head - 3,))  # the verify's own event
        conn.executemany(
            f"INSERT INTO audit_events ({audit_log.AUDIT_COLUMNS}) VALUES ({', '.join('?' * 13)})", tail
        )
    finally:
        conn.executescript(audit_log.SCHEMA)  # the triggers again
        conn.close()
    v = admin.get("/admin/audit/verify").json()
    assert v["ok"] is True, v


def test_an_export_verifies_offline_through_the_cli(
    sb: SandboxHandle, user: Any, tmp_path: Path, capsys: Any
) -> None:
    admin = user("admin")
    r = admin.get("/admin/audit/export")
    assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment;")
    bundle = r.json()
    assert bundle["format"] == audit.BUNDLE_FORMAT and bundle["startSeq"] == 1
    assert bundle["checkpoints"][-1]["seq"] == bundle["events"][-1]["seq"]  # ends on a signature
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    trusted = [
        line
        for line in (sb.data_dir / audit_log.PUBLIC_KEYS_FILE).read_text().splitlines()
        if line and not line.startswith("#")
    ]
    capsys.readouterr()
    assert cli(["audit", "verify", str(path), *[a for k in trusted for a in ("--key", k)]]) == 0
    assert capsys.readouterr().out.startswith("OK:")
    # One changed byte: exit 1, naming the seq.
    bad = json.loads(path.read_text())
    bad["events"][6]["detail"]["tampered"] = True
    path.write_text(json.dumps(bad))
    assert cli(["audit", "verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED:") and f"seq {bad['events'][6]['seq']}: HASH_MISMATCH" in out
    # Signed by a key the user does not trust.
    path.write_text(json.dumps(bundle))
    other = audit.public_key_b64(Ed25519PrivateKey.generate())
    assert cli(["audit", "verify", str(path), "--key", other]) == 1
    assert "UNKNOWN_KEY" in capsys.readouterr().out
    # A range: seqs 5..20 verify on their own, ending on the checkpoint signed for the export.
    part = admin.get("/admin/audit/export", params={"from": "5", "to": "20"}).json()
    assert (part["startSeq"], part["events"][0]["seq"], part["events"][-1]["seq"]) == (5, 5, 20)
    assert audit.verify_bundle(part, trusted).ok and part["checkpoints"][-1]["seq"] == 20
    timed = admin.get("/admin/audit/export", params={"to": bundle["events"][9]["occurredAt"]}).json()
    assert timed["events"][-1]["seq"] >= 10 and audit.verify_bundle(timed, trusted).ok


def test_eight_concurrent_replays_give_one_contiguous_chain(sb: SandboxHandle, user: Any, tools: Any) -> None:
    op = user("operator")
    picks = [h["exchangeId"] for h in sources(op, "staging", n=8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        posted = list(pool.map(lambda s: tools.post_replay(op, s), picks))
    assert all(r.status_code == 202 for r in posted)
    for r in posted:
        assert tools.wait_replay(op, r.json()["replayId"])["status"] == "COMPLETED"
    log = stored(sb)
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
    assert len({e["prevHash"] for e in log}) == len(log)  # no fork
    assert sb.state.audit.verify().ok


def test_the_document_describes_the_audit_endpoints(sb: SandboxHandle, user: Any) -> None:
    admin = user("admin")
    doc = admin.get("/api-docs").json()
    paths = doc["paths"]
    assert paths["/api/v1/admin/audit/verify"]["get"]["x-permission"] == "audit:read"
    assert paths["/api/v1/admin/audit/export"]["get"]["x-permission"] == "audit:read"
    assert "/api/v1/admin/audit" in paths

    def check(instance: Any, path: str) -> None:
        schema = paths["/api/v1" + path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        Draft202012Validator({**schema, "components": doc["components"]}).validate(instance)

    check(admin.get("/admin/audit", params={"limit": 50}).json(), "/admin/audit")
    check(admin.get("/admin/audit/verify").json(), "/admin/audit/verify")
    check(admin.get("/admin/audit/export", params={"from": "1", "to": "30"}).json(), "/admin/audit/export")


# --------------------------------------------------------------------------- last: every replay


def test_every_replay_of_this_module_has_its_request_and_exactly_one_terminal_event(
    sb: SandboxHandle, user: Any, tools: Any
) -> None:
    admin = user("admin")
    replays = [
        tools.wait_replay(admin, r["replayId"])
        for r in admin.get("/replays", params={"limit": 1000}).json()["data"]
    ]
    assert len(replays) >= 12
    log = stored(sb)
    for replay in replays:
        record = [e for e in log if e["target"]["replayId"] == replay["replayId"]]
        actions = [e["action"] for e in record]
        assert actions[0] == "REPLAY_REQUESTED" and actions.count("REPLAY_REQUESTED") == 1, actions
        terminal = [e for e in record if e["action"] in TERMINAL_ACTIONS]
        assert len(terminal) == 1, actions
        expected = {
            "COMPLETED": "REPLAY_FAILED"
            if (replay["result"] or {}).get("status") == "FAILED"
            else "REPLAY_COMPLETED",
            "ERROR": "REPLAY_ERROR",
            "TIMED_OUT": "REPLAY_ERROR",
            "ABORTED": "REPLAY_ABORTED",
        }[replay["status"]]
        assert terminal[0]["action"] == expected
        for e in record:
            assert all(e[f] is not None for f in (*audit.EVENT_FIELDS, "prevHash", "hash"))
            assert e["actor"]["username"] and e["occurredAt"].endswith("Z")
            if e["action"].startswith("REPLAY_"):  # reads of the receipt carry the replayId alone
                assert all(
                    e["target"][k] for k in ("replayId", "sourceExchangeId", "routeId", "environment")
                ), e
        for f in ("payloadDiff", "reason", "idempotencyKeySha256", "targetAgent"):
            assert record[0]["detail"][f] is not None, f
        for f in ("resultExecutionId", "resultStatus", "outputBodySha256", "durationMs", "processorCount"):
            assert f in terminal[0]["detail"], f
            if replay["status"] == "COMPLETED":
                assert terminal[0]["detail"][f] is not None, f
