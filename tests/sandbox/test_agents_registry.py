"""The server's agent registry: liveness, picking, signed command queues and redelivery rules
(DESIGN.md sections 4, 5 and 8; cameleer.md 2.4-2.6)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moat_nb.errors import AgentUnavailable, NotFound, ValidationError
from moat_nb.model import parse_time
from moat_nb.sandbox.agents import AgentEnvironmentChanged, AgentRegistry, event_name
from moat_nb.sandbox.security import CommandSigner, verify_command

SIGNER = CommandSigner.generate()
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock handed to the registry, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Reader:
    """Reads a channel without blocking the test: ``take()`` returns what is available now and
    leaves one pending ``__anext__`` behind (as an SSE response waiting for the next event)."""

    def __init__(self, gen: AsyncIterator[dict[str, Any]]) -> None:
        self.gen = gen
        self.task: asyncio.Future[dict[str, Any]] | None = None
        self.ended = False

    async def take(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while not self.ended:
            if self.task is None:
                self.task = asyncio.ensure_future(self.gen.__anext__())
            for _ in range(5):
                await asyncio.sleep(0)
            if not self.task.done():
                break
            task, self.task = self.task, None
            try:
                out.append(task.result())
            except StopAsyncIteration:
                self.ended = True
        return out

    async def close(self) -> None:
        """The client went away: the pending read is cancelled (as sse-starlette does)."""
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, StopAsyncIteration):
                pass
        await self.gen.aclose()  # type: ignore[attr-defined]
        self.ended = True


def registry(clock: Clock | None = None, **kw: Any) -> AgentRegistry:
    return AgentRegistry(SIGNER, clock=clock or Clock(), **kw)


def register(reg: AgentRegistry, instance_id: str = "agent-dev", env: str = "dev") -> None:
    reg.register(
        instance_id,
        environment_id=env,
        application_id="orders",
        display_name=f"Orders {env}",
        route_ids=["orders-intake"],
        route_version="v2",
        capabilities=["replay"],
    )


def ids(commands: list[dict[str, Any]]) -> list[str]:
    return [c["commandId"] for c in commands]


# --------------------------------------------------------------------------- liveness


def test_status_follows_heartbeats_and_the_channel() -> None:
    clock = Clock()
    reg = registry(clock, stale_after=90, dead_after=300)
    register(reg)
    assert reg.get("agent-dev").status == "STALE"  # registered, but no command channel yet

    async def run() -> None:
        reader = Reader(reg.channel("agent-dev"))
        await reader.take()
        assert reg.get("agent-dev").status == "LIVE"
        clock.advance(90)
        assert reg.get("agent-dev").status == "LIVE"
        clock.advance(1)
        assert reg.get("agent-dev").status == "STALE"
        reg.heartbeat("agent-dev", route_states={"orders-intake": "Suspended"})
        info = reg.get("agent-dev")
        assert info.status == "LIVE" and info.route_states == {"orders-intake": "Suspended"}
        clock.advance(391)
        assert reg.get("agent-dev").status == "DEAD"
        reg.heartbeat("agent-dev")
        assert reg.get("agent-dev").status == "LIVE"
        await reader.close()
        assert reg.get("agent-dev").status == "STALE"  # the channel dropped: not pickable

    asyncio.run(run())


def test_wire_form_has_the_section_4_fields() -> None:
    reg = registry()
    register(reg)
    wire = reg.get("agent-dev").to_wire()
    assert {
        "instanceId",
        "displayName",
        "applicationId",
        "environmentId",
        "status",
        "routeIds",
        "routeVersion",
        "capabilities",
        "lastHeartbeat",
    } <= set(wire)
    assert wire["lastHeartbeat"] == "2026-01-01T12:00:00.000Z"
    assert wire["environmentId"] == "dev" and wire["routeIds"] == ["orders-intake"]


def test_register_refuses_bad_ids_and_heartbeat_unknown_agents() -> None:
    reg = registry()
    with pytest.raises(Exception) as info:
        reg.register("../etc", environment_id="dev", application_id="orders")
    assert getattr(info.value, "code", None) == "BAD_ID"
    with pytest.raises(NotFound):
        reg.heartbeat("nobody")
    register(reg)
    with pytest.raises(ValidationError):
        reg.heartbeat("agent-dev", route_states={"orders-intake": "Exploded"})


def test_register_keeps_an_ids_environment() -> None:
    """An id keeps the environment it is registered with, or has history in (cameleer.md 2.1):
    its queued commands were authorised for that environment (review finding)."""
    reg = AgentRegistry(SIGNER, clock=Clock())
    reg.register("a1", environment_id="dev", application_id="orders")
    with pytest.raises(AgentEnvironmentChanged) as caught:
        reg.register("a1", environment_id="prod", application_id="orders")
    assert caught.value.status == 409 and caught.value.code == "AGENT_ENVIRONMENT_CHANGED"
    assert reg.get("a1").environment_id == "dev"
    reg.register("a1", environment_id="dev", application_id="orders", history={"dev"})
    with pytest.raises(AgentEnvironmentChanged):
        reg.register("a2", environment_id="prod", application_id="orders", history={"dev"})
    assert reg.get("a2") is None


def test_list_filters() -> None:
    reg = registry()
    register(reg, "a-dev", "dev")
    register(reg, "a-prod", "prod")
    assert [i.instance_id for i in reg.list()] == ["a-dev", "a-prod"]
    assert [i.instance_id for i in reg.list(environment="prod")] == ["a-prod"]
    assert reg.list(status="LIVE") == []
    with pytest.raises(ValidationError):
        reg.list(status="ASLEEP")


# --------------------------------------------------------------------------- picking


def test_pick_needs_a_live_agent_of_the_environment() -> None:
    clock = Clock()
    reg = registry(clock)
    register(reg, "a-dev", "dev")
    register(reg, "a-prod", "prod")

    async def run() -> None:
        with pytest.raises(AgentUnavailable) as info:
            reg.pick("dev")  # registered, channel not open
        assert info.value.status == 503 and info.value.code == "AGENT_UNAVAILABLE"
        dev = Reader(reg.channel("a-dev"))
        prod = Reader(reg.channel("a-prod"))
        await dev.take()
        await prod.take()
        assert reg.pick("dev").instance_id == "a-dev"
        assert reg.pick("prod").instance_id == "a-prod"
        assert reg.pick("prod", instance_id="a-prod").instance_id == "a-prod"
        with pytest.raises(AgentUnavailable):
            reg.pick("dev", instance_id="a-prod")  # that agent runs prod
        with pytest.raises(AgentUnavailable) as info:
            reg.pick("staging")
        # A mistyped environment is told which ones have a live agent (analyst walk).
        assert "environments with a LIVE agent: dev, prod" in (info.value.hint or "")
        assert info.value.details["liveEnvironments"] == ["dev", "prod"]
        with pytest.raises(AgentUnavailable):
            reg.pick(None, instance_id="ghost")
        clock.advance(200)
        with pytest.raises(AgentUnavailable):
            reg.pick("dev")  # stale by age
        reg.heartbeat("a-dev")
        assert reg.pick("dev").instance_id == "a-dev"
        await dev.close()
        with pytest.raises(AgentUnavailable):
            reg.pick("dev")  # killed: the channel dropped
        await prod.close()

    asyncio.run(run())


# --------------------------------------------------------------------------- commands


def test_send_completes_and_signs_the_command() -> None:
    clock = Clock()
    reg = registry(clock)
    register(reg)
    signed = asyncio.run(reg.send("agent-dev", {"type": "replay", "replayId": "r1"}))
    assert verify_command(signed, SIGNER.public_key_b64())
    assert signed["replayId"] == "r1"
    assert parse_time(signed["issuedAt"]) == T0
    assert parse_time(signed["expiresAt"]) == T0 + timedelta(seconds=60)
    assert len(signed["nonce"]) == 32 and int(signed["nonce"], 16) >= 0
    tampered = {**signed, "replayId": "r2"}
    assert not verify_command(tampered, SIGNER.public_key_b64())
    other = asyncio.run(reg.send("agent-dev", {"type": "replay"}))
    assert other["nonce"] != signed["nonce"] and other["commandId"] != signed["commandId"]
    # A given commandId is kept (the replay service may choose it); sending it twice is refused.
    kept = asyncio.run(reg.send("agent-dev", {"type": "replay", "commandId": "cmd-1"}))
    assert kept["commandId"] == "cmd-1"
    with pytest.raises(ValidationError):
        asyncio.run(reg.send("agent-dev", {"type": "replay", "commandId": "cmd-1"}))
    with pytest.raises(ValidationError):
        asyncio.run(reg.send("agent-dev", {"replayId": "no type"}))
    with pytest.raises(NotFound):
        asyncio.run(reg.send("ghost", {"type": "replay"}))


@pytest.mark.parametrize(
    "kind, name",
    [
        ("replay", "replay"),
        ("CONFIG_UPDATE", "config-update"),
        ("routeControl", "route-control"),
        ("DEEP_TRACE", "deep-trace"),
        ("test-expression", "test-expression"),
    ],
)
def test_event_names_are_kebab_case(kind: str, name: str) -> None:
    assert event_name(kind) == name


def test_channel_sends_backlog_then_live_commands_in_order() -> None:
    reg = registry()
    register(reg)

    async def run() -> None:
        first = await reg.send("agent-dev", {"type": "replay", "commandId": "c1"})
        reader = Reader(reg.channel("agent-dev"))
        assert ids(await reader.take()) == ["c1"]
        await reg.send("agent-dev", {"type": "replay", "commandId": "c2"})
        await reg.send("agent-dev", {"type": "config-update", "commandId": "c3"})
        got = await reader.take()
        assert ids(got) == ["c2", "c3"]
        assert got[0] is not first and all(verify_command(c, SIGNER.public_key_b64()) for c in got)
        assert await reader.take() == []  # nothing twice on one channel
        await reader.close()

    asyncio.run(run())


def test_reconnect_without_last_event_id_sends_only_undelivered_commands() -> None:
    reg = registry()
    register(reg)

    async def run() -> None:
        reader = Reader(reg.channel("agent-dev"))
        await reg.send("agent-dev", {"type": "replay", "commandId": "c1"})
        assert ids(await reader.take()) == ["c1"]
        await reader.close()
        await reg.send("agent-dev", {"type": "replay", "commandId": "c2"})  # while disconnected
        again = Reader(reg.channel("agent-dev"))
        # c1 was delivered and a fresh process says nothing about it: never delivered twice.
        assert ids(await again.take()) == ["c2"]
        await again.close()

    asyncio.run(run())


def test_reconnect_with_last_event_id_resends_unacked_commands_after_it() -> None:
    reg = registry()
    register(reg)

    async def run() -> None:
        reader = Reader(reg.channel("agent-dev"))
        for i in range(1, 5):
            await reg.send("agent-dev", {"type": "replay", "commandId": f"c{i}"})
        assert ids(await reader.take()) == ["c1", "c2", "c3", "c4"]
        reg.ack("agent-dev", "c3", {"status": "SUCCESS"})
        await reader.close()
        # The agent says it last received c1: c2 and c4 are resent, c3 (acked) is not.
        again = Reader(reg.channel("agent-dev", last_event_id="c1"))
        assert ids(await again.take()) == ["c2", "c4"]
        await again.close()
        # An id the server does not know: only never-delivered commands (none here).
        third = Reader(reg.channel("agent-dev", last_event_id="unknown"))
        assert await third.take() == []
        await third.close()

    asyncio.run(run())


def test_expired_commands_are_not_sent() -> None:
    clock = Clock()
    reg = registry(clock, command_ttl=60)
    register(reg)

    async def run() -> None:
        await reg.send("agent-dev", {"type": "replay", "commandId": "old"})
        clock.advance(61)
        await reg.send("agent-dev", {"type": "replay", "commandId": "new"})
        reader = Reader(reg.channel("agent-dev"))
        assert ids(await reader.take()) == ["new"]
        assert ids(reg.pending("agent-dev")) == ["new"]
        await reader.close()

    asyncio.run(run())


def test_the_newest_channel_wins() -> None:
    reg = registry()
    register(reg)

    async def run() -> None:
        old = Reader(reg.channel("agent-dev"))
        await old.take()
        new = Reader(reg.channel("agent-dev"))
        await new.take()
        await old.take()
        assert old.ended  # the old connection's stream ended
        await reg.send("agent-dev", {"type": "replay", "commandId": "c1"})
        assert ids(await new.take()) == ["c1"]
        assert reg.channel_open("agent-dev")
        await old.close()  # closing the old one must not mark the agent's channel closed
        assert reg.channel_open("agent-dev") and reg.get("agent-dev").status == "LIVE"
        await new.close()
        assert not reg.channel_open("agent-dev")

    asyncio.run(run())


def test_acks() -> None:
    reg = registry()
    register(reg)
    register(reg, "agent-prod", "prod")
    seen: list[tuple[str, str, dict[str, Any]]] = []
    reg.on_ack(lambda i, c, a: seen.append((i, c, a)))
    asyncio.run(reg.send("agent-dev", {"type": "replay", "commandId": "c1"}))
    with pytest.raises(NotFound):
        reg.ack("agent-prod", "c1", {"status": "SUCCESS"})  # not that agent's command
    with pytest.raises(NotFound):
        reg.ack("agent-dev", "c9", {"status": "SUCCESS"})
    with pytest.raises(ValidationError):
        reg.ack("agent-dev", "c1", {"status": "MAYBE"})
    ack = {"status": "FAILURE", "message": "bad signature", "data": None}
    command, first = reg.ack("agent-dev", "c1", ack)
    assert first and command["commandId"] == "c1"
    _, first = reg.ack("agent-dev", "c1", {"status": "SUCCESS"})
    assert not first
    assert seen == [("agent-dev", "c1", ack)]  # the callback ran once, with the first ack
    assert reg.pending("agent-dev") == []


def test_history_is_bounded_but_keeps_unfinished_commands() -> None:
    reg = registry(history=5)
    register(reg)

    async def run() -> None:
        for i in range(5):
            await reg.send("agent-dev", {"type": "replay", "commandId": f"a{i}"})
            reg.ack("agent-dev", f"a{i}", {"status": "SUCCESS"})
        for i in range(5):
            await reg.send("agent-dev", {"type": "replay", "commandId": f"p{i}"})
        assert ids(reg.pending("agent-dev")) == [f"p{i}" for i in range(5)]
        with pytest.raises(NotFound):
            reg.ack("agent-dev", "a0", {"status": "SUCCESS"})  # pruned

    asyncio.run(run())


# --------------------------------------------------------------------------- the redelivery rule


ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 0)),
        st.tuples(st.just("ack"), st.integers(0, 30)),
        st.tuples(st.just("drop"), st.integers(0, 0)),
        st.tuples(st.just("reconnect"), st.booleans().map(int)),
        st.tuples(st.just("restart"), st.integers(0, 0)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_redelivery_never_repeats_what_the_agent_has(script: list[tuple[str, int]]) -> None:
    """Over random sends, acks, dropped connections and agent restarts:

    * a command is never sent after the agent acknowledged it;
    * one agent process (reconnecting with Last-Event-ID) sees each command at most once;
    * once the agent holds an open channel, every unacknowledged command has reached it.
    """
    reg = registry()
    register(reg)

    async def run() -> None:
        sent: list[str] = []
        acked: set[str] = set()
        process_seen: list[str] = []  # what the current agent process received, in order
        ever_seen: set[str] = set()  # what any agent process received
        reader: Reader | None = Reader(reg.channel("agent-dev"))

        async def read() -> None:
            assert reader is not None
            for c in await reader.take():
                cid = c["commandId"]
                assert cid not in acked, f"{cid} sent after its ack"
                assert cid not in process_seen, f"{cid} sent twice to one process"
                process_seen.append(cid)
                ever_seen.add(cid)

        for op, arg in script:
            if op == "send":
                sent.append((await reg.send("agent-dev", {"type": "replay"}))["commandId"])
            elif op == "ack" and process_seen:
                cid = process_seen[arg % len(process_seen)]
                reg.ack("agent-dev", cid, {"status": "SUCCESS"})
                acked.add(cid)
            elif op == "drop" and reader is not None:
                await reader.close()
                reader = None
            elif op == "reconnect" and reader is None:
                last = process_seen[-1] if (arg and process_seen) else None
                reader = Reader(reg.channel("agent-dev", last_event_id=last))
            elif op == "restart":
                if reader is not None:
                    await reader.close()
                process_seen = []
                reader = Reader(reg.channel("agent-dev"))
            if reader is not None:
                await read()
        if reader is None:
            last = process_seen[-1] if process_seen else None
            reader = Reader(reg.channel("agent-dev", last_event_id=last))
        await read()
        # Every command not acknowledged reached an agent process (this one, or an earlier
        # one that was then restarted), and is still pending for the replay service's timeout.
        assert set(sent) <= ever_seen
        assert set(ids(reg.pending("agent-dev"))) == set(sent) - acked
        await reader.close()

    asyncio.run(run())
