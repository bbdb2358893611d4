"""The sandbox agents against the real server on 127.0.0.1 (moat_nb/sandbox/agent.py).

Registration, heartbeat and route states; the command channel's checks (tampered signature,
expired command, reused nonce) seen through the acks the *server* records; a replay end to end;
the channel reconnecting after the server drops it; token recovery. The pure helpers
(``chunks_of``, ``retry_after_seconds``, ``stub_source``) are checked with Hypothesis.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moat_nb.errors import RecordError
from moat_nb.model import Chunk, Execution, ProcessorRecord
from moat_nb.sandbox.agent import (
    REPLAY_HEADER,
    Agent,
    AgentConfig,
    chunks_of,
    retry_after_seconds,
    stub_source,
)
from moat_nb.sandbox.apps.orders import APP
from moat_nb.sandbox.runner import SandboxHandle
from moat_nb.sandbox.security import CommandSigner
from moat_nb.sandbox.server import ServerThread, create_app
from moat_nb.sandbox.state import SandboxState, ServerConfig
from moat_nb.sandbox.traffic import load_routesets

# --------------------------------------------------------------------------- acks seen by the server


class AckLog:
    """Every first ack the server's AgentRegistry records, by command id."""

    def __init__(self) -> None:
        self._acks: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()

    def __call__(self, instance_id: str, command_id: str, ack: dict[str, Any]) -> None:
        with self._cond:
            self._acks[command_id] = {"instanceId": instance_id, **ack}
            self._cond.notify_all()

    def wait(self, command_id: str, timeout: float = 10.0) -> dict[str, Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: command_id in self._acks, timeout):
                raise AssertionError(f"no ack for command {command_id} within {timeout} s")
            return self._acks[command_id]


@pytest.fixture(scope="module")
def acks(sandbox: SandboxHandle) -> AckLog:
    log = AckLog()
    sandbox.state.agents.on_ack(log)
    return log


def send(
    sandbox: SandboxHandle, environment: str, command: Mapping[str, Any], signer: Any = None
) -> dict[str, Any]:
    """Queue ``command`` for the environment's agent through the server's registry (signed by
    the server's key, or by ``signer`` for this one command); returns the command as sent."""
    registry = sandbox.state.agents
    instance_id = sandbox.agents[environment].instance_id

    async def go() -> dict[str, Any]:
        real = registry.signer
        if signer is not None:
            registry.signer = signer  # no await until restored: no other send sees it
        try:
            return await registry.send(instance_id, dict(command))
        finally:
            registry.signer = real

    return sandbox.call(go)


class TamperingSigner:
    """Signs like the server, then changes a field: what a man in the middle would send."""

    def __init__(self, real: CommandSigner, **changes: Any) -> None:
        self.real, self.changes = real, changes

    def sign(self, command: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.real.sign(command), **self.changes}


# --------------------------------------------------------------------------- registration, heartbeat


def test_agents_register_and_are_live_with_route_states(
    sandbox: SandboxHandle, analyst: Any, tools: Any
) -> None:
    def listed() -> list[dict[str, Any]] | None:
        agents = analyst.get("/agents").json()
        ready = [a for a in agents if a["routeStates"] and a["status"] == "LIVE"]
        return agents if len(ready) == 3 else None

    agents = {a["environmentId"]: a for a in tools.wait_for(listed)}
    assert set(agents) == {"dev", "staging", "prod"}
    for env, version in (("dev", "v2"), ("staging", "v2"), ("prod", "v1")):
        a = agents[env]
        assert a["instanceId"] == f"orders-{env}-1"
        assert a["applicationId"] == "orders"
        assert a["routeVersion"] == version
        assert a["capabilities"] == ["replay"]
        assert a["routeStates"] == {"order-intake": "Started", "enrich-customer": "Started"}
        assert sorted(a["routeIds"]) == ["enrich-customer", "order-intake"]
    assert {a.capture for a in sandbox.agents.values()} == {"PROCESSOR", "ROUTE"}
    assert sandbox.agents["prod"].capture == "ROUTE"
    # The heartbeat keeps lastHeartbeat moving.
    first = agents["dev"]["lastHeartbeat"]
    sandbox.call(sandbox.agents["dev"].heartbeat)
    again = {a["environmentId"]: a for a in analyst.get("/agents").json()}
    assert again["dev"]["lastHeartbeat"] >= first


def test_history_went_through_the_agents(analyst: Any) -> None:
    for env, capture in (("dev", "PROCESSOR"), ("staging", "PROCESSOR"), ("prod", "ROUTE")):
        page = analyst.post("/search/executions", json={"environment": env, "limit": 5}).json()
        assert page["total"] == 30
        for hit in page["data"]:
            assert hit["instanceId"] == f"orders-{env}-1"
            assert hit["captureMode"] == capture
            assert hit["isReplay"] is False


# --------------------------------------------------------------------------- refusing commands


def test_refuses_a_tampered_signature(sandbox: SandboxHandle, acks: AckLog) -> None:
    tampered = TamperingSigner(sandbox.state.signer, routeId="evil-route")
    sent = send(
        sandbox,
        "dev",
        {"type": "replay", "replayId": "r-tampered", "routeId": "order-intake"},
        signer=tampered,
    )
    ack = acks.wait(sent["commandId"])
    assert ack["status"] == "FAILURE"
    assert ack["instanceId"] == "orders-dev-1"
    assert "bad signature" in ack["message"]


def test_refuses_a_command_signed_by_another_key(sandbox: SandboxHandle, acks: AckLog) -> None:
    forger = CommandSigner.generate()
    sent = send(sandbox, "staging", {"type": "replay", "replayId": "r-forged"}, signer=forger)
    ack = acks.wait(sent["commandId"])
    assert ack["status"] == "FAILURE" and "bad signature" in ack["message"]


def test_refuses_an_expired_command(sandbox: SandboxHandle, acks: AckLog) -> None:
    agent = sandbox.agents["dev"]
    real = agent.clock
    # The command arrives after its expiresAt (issuedAt + 60 s) by the agent's clock.
    agent.clock = lambda: real() + timedelta(minutes=2)
    try:
        sent = send(sandbox, "dev", {"type": "replay", "replayId": "r-expired"})
        ack = acks.wait(sent["commandId"])
    finally:
        agent.clock = real
    assert ack["status"] == "FAILURE"
    assert f"expired at {sent['expiresAt']}" in ack["message"]


def test_refuses_a_reused_nonce(sandbox: SandboxHandle, acks: AckLog) -> None:
    nonce = "5e1f" * 8
    first = send(sandbox, "prod", {"type": "ping-test", "nonce": nonce})
    ack1 = acks.wait(first["commandId"])
    # The first passed every check and was refused only as a type this agent does not run.
    assert ack1["status"] == "FAILURE" and "unsupported command type 'ping-test'" in ack1["message"]
    second = send(sandbox, "prod", {"type": "ping-test", "nonce": nonce})
    assert second["commandId"] != first["commandId"]
    ack2 = acks.wait(second["commandId"])
    assert ack2["status"] == "FAILURE"
    assert f"nonce {nonce!r} was already used" in ack2["message"]


def test_a_replay_for_an_unknown_route_is_refused_in_words(sandbox: SandboxHandle, acks: AckLog) -> None:
    sent = send(
        sandbox,
        "dev",
        {
            "type": "replay",
            "replayId": "r-unknown-route",
            "sourceExchangeId": "ID-x",
            "routeId": "nope",
            "environment": "dev",
            "modifiedPayload": {"headers": {}, "body": "{}", "properties": {}},
            "stubReplies": [],
        },
    )
    ack = acks.wait(sent["commandId"])
    assert ack["status"] == "FAILURE"
    assert "route 'nope' is not deployed on orders-dev-1" in ack["message"]


# --------------------------------------------------------------------------- replay end to end


def test_replay_end_to_end(sandbox: SandboxHandle, operator: Any, tools: Any, acks: AckLog) -> None:
    source = tools.source_exchange(operator, "dev")
    detail = operator.get(f"/executions/{source['executionId']}").json()
    body = json.loads(detail["inputBody"])
    body["channel"] = "replay-test"
    response = tools.post_replay(
        operator, source["exchangeId"], reason="agent e2e", modifiedPayload={"body": json.dumps(body)}
    )
    assert response.status_code == 202, response.text
    replay = tools.wait_replay(operator, response.json()["replayId"])
    assert replay["status"] == "COMPLETED", replay
    assert replay["agentId"] == "orders-dev-1"

    result = operator.get(f"/executions/{replay['resultExecutionId']}").json()
    assert result["isReplay"] is True
    assert result["replayId"] == replay["replayId"]
    assert result["sourceExchangeId"] == source["exchangeId"]
    assert result["exchangeId"] != source["exchangeId"]  # a replay is a new exchange
    assert result["captureMode"] == "PROCESSOR"
    assert result["environment"] == "dev" and result["instanceId"] == "orders-dev-1"
    assert result["inputHeaders"][REPLAY_HEADER] == replay["replayId"]
    assert json.loads(result["inputBody"])["channel"] == "replay-test"

    def flat(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for node in nodes:
            yield node
            yield from flat(node.get("children") or [])

    processors = list(flat(result["processors"]))
    # The trace went as several chunks (16 records each) and arrived whole.
    assert len(processors) > 16
    assert sorted(p["seq"] for p in processors) == list(range(1, len(processors) + 1))
    assert result["processorCount"] == len(processors)
    assert all(p["replayId"] == replay["replayId"] for p in processors)
    external = [p for p in processors if (p["endpointUri"] or "").startswith(("http", "kafka"))]
    assert external and all(p["stubbed"] for p in external)
    # The CRM reply was answered from the source's recorded reply.
    source_detail = list(flat(detail["processors"]))
    crm = next(p for p in source_detail if (p["endpointUri"] or "").startswith("http"))
    crm_replayed = next(p for p in processors if p["processorId"] == crm["processorId"])
    assert crm_replayed["outputBody"] == crm["outputBody"]

    command_id, ack = next(
        (cid, a)
        for cid, a in sandbox.agents["dev"].acks
        if (a.get("data") or {}).get("executionId") == replay["resultExecutionId"]
    )
    assert ack["status"] == "SUCCESS"
    assert replay["replayId"] in ack["message"] and "COMPLETED" in ack["message"]
    assert acks.wait(command_id)["status"] == "SUCCESS"


# --------------------------------------------------------------------------- channel, tokens


def test_command_channel_reconnects_after_the_server_drops_it(
    sandbox: SandboxHandle, acks: AckLog, tools: Any
) -> None:
    agent = sandbox.agents["staging"]
    registry = sandbox.state.agents
    before = agent.connections
    sandbox.call(registry.close_channels)
    tools.wait_for(lambda: agent.connections > before and registry.channel_open(agent.instance_id))
    assert registry.get(agent.instance_id).status == "LIVE"
    # The new channel carries commands, and the agent remembers the last id it got.
    sent = send(sandbox, "staging", {"type": "ping-test"})
    assert acks.wait(sent["commandId"])["status"] == "FAILURE"
    assert agent.last_event_id == sent["commandId"]


def test_a_command_sent_while_the_channel_is_down_arrives_after_reconnect(
    sandbox: SandboxHandle, acks: AckLog
) -> None:
    q: queue.Queue[dict[str, Any]] = queue.Queue()

    async def drop_and_send() -> None:
        sandbox.state.agents.close_channels()
        q.put(await sandbox.state.agents.send("orders-prod-1", {"type": "ping-test"}))

    sandbox.call(drop_and_send)
    sent = q.get(timeout=1)
    assert "unsupported command type" in acks.wait(sent["commandId"])["message"]


def test_agent_recovers_from_a_rejected_token(sandbox: SandboxHandle, analyst: Any, tools: Any) -> None:
    agent = sandbox.agents["dev"]

    async def spoil_and_beat() -> None:
        agent._access = "not-a-token"  # as if the token had expired or the server's key changed
        await agent.heartbeat()

    sandbox.call(spoil_and_beat)
    assert agent._access != "not-a-token"
    sandbox.call(agent.refresh_token)
    sandbox.call(agent.heartbeat)
    tools.wait_for(lambda: analyst.get("/agents", params={"environment": "dev", "status": "LIVE"}).json())


# --------------------------------------------------------------------------- the server forgot the agent


@contextlib.contextmanager
def _lone(tmp_path: Path, heartbeat: float) -> Iterator[tuple[SandboxState, ServerThread, Agent]]:
    """A server of its own with one real ``dev`` agent (on the server's loop, as the sandbox
    runs them): what happens after a restart must not touch the session's sandbox."""
    state = SandboxState.create(tmp_path / "data", app=APP, config=ServerConfig(bootstrap_token="b" * 32))
    server = ServerThread(create_app(state)).start()
    agent = Agent(
        server.url,
        state.bootstrap_token,
        instance_id="lone-1",
        environment="dev",
        app=APP,
        routes=load_routesets(APP)["v2"],
        capture="PROCESSOR",
        config=AgentConfig(heartbeat_interval=heartbeat, reconnect_min=0.05, reconnect_max=0.2),
    )
    server.call(agent.start)
    try:
        yield state, server, agent
    finally:
        server.call(agent.stop)
        server.stop()
        state.close()


def _drop(state: SandboxState, instance_id: str) -> None:
    """What a restart does to the registry (it is in memory; tokens survive: the JWT key is
    kept): the agent is forgotten and its channel is gone. Run on the server's loop."""
    with state.agents._lock:
        agent = state.agents._agents.pop(instance_id)
    if agent.channel is not None:
        agent.channel.close()


def test_an_agent_the_server_forgot_registers_again_before_posting(tmp_path: Path) -> None:
    """Review finding: a chunk of an agent the server had forgotten (restarted) was taken on
    the strength of its old token alone. It is 404 AGENT_NOT_FOUND now, on which the agent
    registers again and sends it once more. (Heartbeats far apart: the chunk comes first.)"""
    with _lone(tmp_path, heartbeat=60.0) as (state, server, agent):
        server.call(lambda: _drop(state, "lone-1"))
        execution = Execution(
            execution_id="e-lone",
            exchange_id="x-lone",
            route_id="order-intake",
            status="COMPLETED",
            application_id="orders",
            start_time=datetime(2026, 1, 5, tzinfo=UTC),
        )
        server.call(lambda: agent.post_chunk(Chunk("e-lone", "x-lone", 0, final=True, execution=execution)))
        assert state.agents.get("lone-1") is not None and state.agents.get("lone-1").environment_id == "dev"
        assert state.store.instance_environments("lone-1") == {"dev"}


def test_an_agent_whose_id_went_to_another_environment_stops(tmp_path: Path, tools: Any) -> None:
    """After a restart the id of a dev agent that had recorded nothing was registered in prod
    by another process. The dev agent's token is refused (403 AGENT_TOKEN_STALE); it registers
    again, which is refused (409 AGENT_ENVIRONMENT_CHANGED), and then it stops — once — rather
    than beat, reconnect and be refused (and audited) again without end."""
    with _lone(tmp_path, heartbeat=0.1) as (state, server, agent):

        def restart_and_take() -> None:
            # Forgotten and registered in prod in one step on the server's loop (as the register
            # endpoint does for an id without history), so that the dev agent's next beat cannot
            # register it back in between.
            _drop(state, "lone-1")
            state.agents.register("lone-1", environment_id="prod", application_id="orders")

        server.call(restart_and_take)

        def refusals() -> list[str]:
            return [e["detail"]["code"] for e in state.audit.events() if e["action"] == "ACCESS_DENIED"]

        tools.wait_for(lambda: "AGENT_ENVIRONMENT_CHANGED" in refusals(), timeout=5)
        time.sleep(1.5)  # fifteen heartbeat intervals, several reconnect pauses
        assert refusals().count("AGENT_ENVIRONMENT_CHANGED") == 1
        assert 1 <= refusals().count("AGENT_TOKEN_STALE") <= 2  # the heartbeat's and the channel's
        assert agent.refused is not None and agent.refused.code == "AGENT_ENVIRONMENT_CHANGED"
        assert not agent.connected
        assert state.agents.get("lone-1").environment_id == "prod"


# --------------------------------------------------------------------------- pure helpers


def _record(seq: int, body_size: int) -> ProcessorRecord:
    return ProcessorRecord(
        execution_id="e-1",
        exchange_id="x-1",
        seq=seq,
        processor_id=f"p{seq}",
        processor_type="log",
        route_id="r",
        status="COMPLETED",
        input_body="x" * body_size,
        replay_id="rp-1",
    )


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000), max_size=60),
    max_processors=st.integers(1, 20),
    max_bytes=st.integers(200, 20_000),
)
def test_chunks_of_cuts_a_trace_into_ordered_bounded_chunks(
    sizes: list[int], max_processors: int, max_bytes: int
) -> None:
    records = tuple(_record(i + 1, n) for i, n in enumerate(sizes))
    execution = Execution(
        execution_id="e-1",
        exchange_id="x-1",
        route_id="r",
        status="COMPLETED",
        replay_id="rp-1",
        processors=tuple(reversed(records)),
        processor_count=len(records),
    )
    chunks = chunks_of(execution, max_processors=max_processors, max_bytes=max_bytes)
    assert [c.chunk_seq for c in chunks] == list(range(len(chunks)))
    assert [c.final for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(c.execution is None for c in chunks[:-1])
    assert chunks[-1].execution == replace(execution, processors=None)
    assert [p for c in chunks for p in c.processors] == list(records)  # all, once, in seq order
    for c in chunks:
        assert c.replay_id == "rp-1" and c.execution_id == "e-1" and c.exchange_id == "x-1"
        assert len(c.processors) <= max_processors
        size = sum(len(json.dumps(p.to_wire(), separators=(",", ":"))) for p in c.processors)
        assert size <= max_bytes or len(c.processors) == 1  # only a record too big alone exceeds it
    assert all(c.processors for c in chunks[:-1])  # no empty chunk but maybe the final one


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("3", now) == 3.0
    assert retry_after_seconds(" 0 ", now) == 0.0
    assert retry_after_seconds("Mon, 05 Jan 2026 12:00:07 GMT", now) == 7.0
    assert retry_after_seconds("Mon, 05 Jan 2026 11:00:00 GMT", now) == 0.0  # in the past
    assert retry_after_seconds(None, now) is None
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds("-1", now) is None


def test_stub_source_turns_stub_replies_into_a_replay_of_execution() -> None:
    command = {
        "sourceExchangeId": "ID-src",
        "sourceExecutionId": "e-src",
        "routeId": "order-intake",
        "stubReplies": [
            {"routeId": "enrich-customer", "processorId": "crm", "iteration": 0, "body": '{"a":1}'},
            {
                "routeId": "order-intake",
                "processorId": "pay",
                "iteration": 2,
                "body": None,
                "status": "FAILED",
                "errorType": "java.net.ConnectException",
                "errorMessage": "refused",
            },
        ],
    }
    source = stub_source(command)
    assert source.exchange_id == "ID-src" and source.execution_id == "e-src"
    first, second = source.processors
    assert (first.route_id, first.processor_id, first.iteration, first.output_body) == (
        "enrich-customer",
        "crm",
        0,
        '{"a":1}',
    )
    assert (second.status, second.error_type, second.iteration) == ("FAILED", "java.net.ConnectException", 2)
    assert stub_source({"stubReplies": []}).processors == ()  # still stubs: nothing real is called
    for bad in (
        {"stubReplies": {}},
        {"stubReplies": [{"routeId": "r"}]},
        {"stubReplies": [{"routeId": "r", "processorId": "p", "iteration": -1}]},
        {"stubReplies": [{"routeId": "r", "processorId": "p", "body": 3}]},
    ):
        with pytest.raises(RecordError):
            stub_source(bad)


def test_encoded_chunks_are_the_chunks_json() -> None:
    """The bytes built around the records' own encodings parse to Chunk.to_wire of the chunk."""
    import json as _json

    from moat_nb.sandbox.agent import encoded_chunks

    records = tuple(_record(seq, 300 * seq) for seq in range(1, 9))
    execution = Execution(
        execution_id="e-1", exchange_id="x-1", route_id="r", status="COMPLETED", replay_id="rp-1",
        processors=records, processor_count=len(records),
    )  # fmt: skip
    cut = encoded_chunks(execution, max_processors=3, max_bytes=2000)
    assert len(cut) > 2
    for chunk, body in cut:
        assert _json.loads(body) == chunk.to_wire()


def test_a_nan_in_a_record_is_posted_as_java_writes_it_not_as_null() -> None:
    """JSON has no NaN: orjson writes null (a value that was not null), the stdlib refuses it.
    The agent refused the record, so a route whose bean returned NaN into a header or property
    ran and its replay ended ERROR (and `sandbox --app` could not record its history). A Camel
    agent's Jackson writes such a Double quoted, as Java's Double.toString: "NaN", "Infinity"."""
    from dataclasses import replace as _replace

    from moat_nb.model import Chunk
    from moat_nb.sandbox.agent import _encode, encoded_chunks

    record = _replace(_record(1, 10), properties={"ratio": [1.0, float("nan")], "top": {"x": float("-inf")}})
    execution = Execution(
        execution_id="e-1", exchange_id="x-1", route_id="r", status="COMPLETED", replay_id="rp-1",
        processors=(record,), processor_count=1, output_headers={"limit": float("inf"), "n": 2.5},
    )  # fmt: skip

    def strict(text: bytes) -> Any:  # the JSON must hold no NaN or Infinity token either
        return json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} in the JSON"))

    ((chunk, body),) = encoded_chunks(execution)
    wire = strict(body)
    assert wire["processors"][0]["properties"] == {"ratio": [1.0, "NaN"], "top": {"x": "-Infinity"}}
    assert wire["execution"]["outputHeaders"] == {"limit": "Infinity", "n": 2.5}
    assert wire == chunk.to_wire()
    # The history path encodes a Chunk made elsewhere: the same rule.
    plain = Chunk(
        "e-1",
        "x-1",
        0,
        final=True,
        replay_id="rp-1",
        execution=_replace(execution, processors=None),
        processors=(record,),
    )
    assert strict(_encode(plain)) == wire


def test_a_record_too_large_to_post_is_cut_to_fit_and_says_so() -> None:
    """A route that copies a large body into properties made one record of ~1.1 MB: its chunk
    was refused (DESIGN section 4: bodies over 1 MiB) and the replay ended ERROR. The agent
    cuts the record's longest texts until it fits, flagged, and leaves a record that fits be."""
    from moat_nb.sandbox.agent import RECORD_MAX_BYTES, encoded_chunks, fit_record

    big = "o" * 300_000
    record = replace(
        _record(1, 256 * 1024),
        output_body="b" * 256 * 1024,
        input_properties={"order": big, "n": 1},
        properties={"order": big, "n": 1, "short": "kept"},
    )
    summary = dict(execution_id="e-1", exchange_id="x-1", route_id="r", status="COMPLETED", replay_id="rp-1")
    execution = Execution(
        **summary,
        input_body="i" * 600_000,
        output_properties={"order": big, "copy": big},
        processors=(_record(2, 10), record),
        processor_count=2,
    )
    cut = encoded_chunks(execution)
    assert all(len(body) <= 1024 * 1024 for _, body in cut)
    assert [json.loads(body) for _, body in cut] == [c.to_wire() for c, _ in cut]
    (fitted,) = [p for c, _ in cut for p in c.processors if p.seq == 1]
    assert len(json.dumps(fitted.to_wire(), separators=(",", ":"))) <= RECORD_MAX_BYTES
    cut_values = [
        v for m in (fitted.input_properties, fitted.properties) for v in m.values() if isinstance(v, str)
    ]
    assert any(v.endswith("characters cut: the record was too large to post]") for v in cut_values)
    assert fitted.properties["short"] == "kept" and fitted.properties["n"] == 1
    for value in cut_values:  # the note counts what is gone of the value as it was
        kept, _, note = value.partition("... [")
        if note:
            assert big.startswith(kept) and note.startswith(f"{len(big) - len(kept)} characters cut")
    final = cut[-1][0].execution
    assert final is not None and len(json.dumps(final.to_wire(), separators=(",", ":"))) <= RECORD_MAX_BYTES
    assert final.input_body == "i" * 600_000  # an execution's body has no flag: its maps are cut
    # What fits is left as it is.
    small = _record(3, 1000)
    assert fit_record(small) is small
    assert [p for c, _ in cut for p in c.processors if p.seq == 2] == [_record(2, 10)]


def test_fit_record_flags_a_cut_body_and_keeps_its_start() -> None:
    from moat_nb.sandbox.agent import fit_record

    record = replace(_record(1, 0), input_body="a" * 5000 + "z" * 5000)
    fitted = fit_record(record, limit=4000)
    assert fitted.body_truncated and fitted.input_body is not None
    assert record.input_body.startswith(fitted.input_body)
    assert len(json.dumps(fitted.to_wire(), separators=(",", ":"))) <= 4000
