"""The server's registry of agents and their command queues (DESIGN.md sections 4, 5 and 8).

One :class:`AgentRegistry` per server. It knows every agent that registered (by
``instanceId``), when each last sent a heartbeat, whether its SSE command channel
(``GET /agents/{id}/events``) is open, and the commands queued for it.

Status (cameleer.md 2.4, with the sandbox's extra condition on the channel):

* ``LIVE``  — a heartbeat within ``stale_after`` seconds *and* an open command channel;
* ``STALE`` — otherwise, until ``dead_after`` seconds past the point it went stale by age;
* ``DEAD``  — no heartbeat for ``stale_after + dead_after`` seconds (kept, as Cameleer keeps it).

Only a ``LIVE`` agent is picked for a replay (:meth:`AgentRegistry.pick`), so a killed agent
— whose channel the server sees drop — is refused at once with 503 ``AGENT_UNAVAILABLE``,
before anything runs.

Commands. :meth:`AgentRegistry.send` completes a command (``commandId``, ``issuedAt``,
``expiresAt`` = issuedAt + ``command_ttl`` (Cameleer: unacknowledged commands expire after
60 s), ``nonce``), signs it with the server's Ed25519 key (section 5) and queues it. The open
channel (:meth:`AgentRegistry.channel`) yields it; the SSE layer names the event after the
command type in kebab case and uses the ``commandId`` as the event ``id``.

Delivery on reconnect. Cameleer does not replay missed commands [cameleer.md 2.5]; the
sandbox does, but never twice what the agent has said it has:

* with ``Last-Event-ID: <commandId>`` the agent states what it received last: the commands
  after that one that are not acknowledged and not expired are sent (again, if need be);
* without it (or with an id the server no longer knows), only commands never yet written to a
  channel are sent — a restarted agent process does not get a replay command re-delivered
  (a replay is never silently run twice, section 4).

The registry lives on the server's event loop; its state is also guarded by a lock so that
reads from other threads (the store's threadpool, tests) see a consistent picture.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import secrets
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import AgentUnavailable, ApiError, NotFound, PermissionDenied, ValidationError
from ..model import check_id, format_time, parse_time
from .security import CommandSigner

__all__ = [
    "AGENT_STATUSES",
    "ACK_STATUSES",
    "AgentEnvironmentChanged",
    "AgentInfo",
    "AgentTokenStale",
    "AgentRegistry",
    "CommandChannel",
    "event_name",
]

log = logging.getLogger(__name__)

AGENT_STATUSES = ("LIVE", "STALE", "DEAD")
#: Ack statuses (cameleer.md 2.6: SUCCESS is confirmed; FAILURE is the sandbox's other literal).
ACK_STATUSES = ("SUCCESS", "FAILURE")
ROUTE_STATES = ("Started", "Stopped", "Suspended")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _settle(result: Any) -> None:
    """Let an awaitable a callback returned run to its end, logging a failure, so that it is
    neither dropped unawaited nor left holding an exception nobody retrieves."""
    if not inspect.isawaitable(result):
        return
    future = asyncio.ensure_future(result)

    def report(done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.error("ack callback failed", exc_info=done.exception())

    future.add_done_callback(report)


def event_name(command_type: str) -> str:
    """The SSE event name of a command type, as Cameleer writes it:
    ``type.name().toLowerCase().replace('_', '-')`` (cameleer.md 2.5) — ``CONFIG_UPDATE`` →
    ``config-update``; a camelCase ``configUpdate`` gives the same."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", command_type)
    return spaced.lower().replace("_", "-")


class AgentEnvironmentChanged(ApiError):
    """409: an instance id registers with another environment than the one it has (cameleer.md
    2.1: each agent belongs to one environment, and a heartbeat naming another is refused).

    The environment of an agent decides whether a replay sent to it needs ``replay:prod``
    (section 6), and its queued commands were authorised for it: an id registered as ``dev``
    re-registering as ``prod`` would have been sent replays checked as ``dev`` and made
    the executions it recorded, and the replays that went to it, name two environments."""

    code = "AGENT_ENVIRONMENT_CHANGED"
    status = 409


class AgentTokenStale(PermissionDenied):
    """403: an agent token names another environment than the one its instance id is
    registered with now. Tokens outlive the in-memory registry (the JWT key is kept in the data
    folder, so they survive a restart): a token issued to ``dev`` before a restart would go on
    posting ``dev`` executions, beating and taking commands for an id that has since been
    registered (with no recorded history to refuse it) in ``prod``. The agent that holds it
    registers again: the same environment gets a fresh token, another one 409
    ``AGENT_ENVIRONMENT_CHANGED``."""

    code = "AGENT_TOKEN_STALE"


@dataclass(frozen=True)
class AgentInfo:
    """One agent as ``GET /agents`` shows it (a snapshot; :attr:`status` as of its making)."""

    instance_id: str
    display_name: str
    application_id: str
    environment_id: str
    status: str
    route_ids: tuple[str, ...] = ()
    route_version: str | None = None
    capabilities: Any = field(default_factory=list)
    last_heartbeat: datetime | None = None
    registered_at: datetime | None = None
    route_states: Mapping[str, str] = field(default_factory=dict)
    channel_open: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "instanceId": self.instance_id,
            "displayName": self.display_name,
            "applicationId": self.application_id,
            "environmentId": self.environment_id,
            "status": self.status,
            "routeIds": list(self.route_ids),
            "routeVersion": self.route_version,
            "capabilities": self.capabilities,
            "lastHeartbeat": format_time(self.last_heartbeat),
            "routeStates": dict(self.route_states),
        }


@dataclass
class _Command:
    seq: int
    command: dict[str, Any]  # signed
    expires_at: datetime
    delivered: bool = False
    ack: dict[str, Any] | None = None


class CommandChannel:
    """One open command channel of one agent (see :meth:`AgentRegistry.open_channel`).

    Iterating it yields signed commands as they are to be sent: first the backlog the
    redelivery rule allows (module docstring), then each new command. A command counts as
    delivered once the consumer asks for the next one — for an SSE response, once its bytes
    were handed to the server.
    """

    def __init__(self, registry: AgentRegistry, instance_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.registry = registry
        self.instance_id = instance_id
        self.loop = loop
        self.wake = asyncio.Event()
        self.closed = False
        #: With a known Last-Event-ID: the seq after which unacknowledged commands are resent.
        self.resend_after: int | None = None

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._commands()

    async def _commands(self) -> AsyncIterator[dict[str, Any]]:
        registry = self.registry
        cursor = 0
        while not self.closed:
            self.wake.clear()
            entry = registry._next(self.instance_id, cursor, self.resend_after)
            if entry is None:
                await self.wake.wait()
                continue
            cursor = entry.seq
            yield entry.command
            with registry._lock:
                entry.delivered = True

    def close(self) -> None:
        """The connection ended: the agent's channel is closed (unless a newer one replaced it)."""
        registry = self.registry
        with registry._lock:
            agent = registry._agents.get(self.instance_id)
            if agent is not None and agent.channel is self:
                agent.channel = None
        self.closed = True
        registry._wake(self)


@dataclass
class _Agent:
    info: AgentInfo
    commands: OrderedDict[str, _Command] = field(default_factory=OrderedDict)
    next_seq: int = 1
    channel: CommandChannel | None = None


AckCallback = Callable[[str, str, dict[str, Any]], Any]


class AgentRegistry:
    """Agents by instanceId, their liveness and their signed command queues."""

    def __init__(
        self,
        signer: CommandSigner,
        *,
        clock: Callable[[], datetime] = _utcnow,
        stale_after: float = 90.0,
        dead_after: float = 300.0,
        command_ttl: float = 60.0,
        history: int = 256,
    ) -> None:
        self.signer = signer
        self.clock = clock
        self.stale_after = timedelta(seconds=stale_after)
        self.dead_after = timedelta(seconds=dead_after)
        self.command_ttl = timedelta(seconds=command_ttl)
        self.history = history
        self._agents: dict[str, _Agent] = {}
        self._lock = threading.RLock()
        self._ack_callbacks: list[AckCallback] = []

    # ---------------------------------------------------------------- registration, heartbeat

    def register(
        self,
        instance_id: str,
        *,
        environment_id: str,
        application_id: str,
        display_name: str | None = None,
        route_ids: Sequence[str] = (),
        route_version: str | None = None,
        capabilities: Any = None,
        history: Collection[str] = (),
    ) -> AgentInfo:
        """Add or re-register an agent (re-registering the same id resumes its identity and
        keeps its queued commands, cameleer.md 2.2). Counts as a heartbeat.

        ``history``: the environments the id has recorded executions or received replays in
        (the store's). Registering in another environment than those, or than the one it is
        registered with now, is refused (:class:`AgentEnvironmentChanged`): an id keeps its
        environment; another environment takes another instance id."""
        check_id(instance_id, "instanceId")
        check_id(environment_id, "environmentId")
        check_id(application_id, "applicationId")
        now = self.clock()
        with self._lock:
            agent = self._agents.get(instance_id)
            had = set(history) | ({agent.info.environment_id} if agent else set())
            other = sorted(had - {environment_id})
            if other:
                raise AgentEnvironmentChanged(
                    f"agent {instance_id!r} belongs to environment {other[0]!r}; it cannot "
                    f"register as {environment_id!r}",
                    hint=f"give the agent of {environment_id!r} an instance id of its own",
                    details={"instanceId": instance_id, "environment": other[0], "requested": environment_id},
                )
            info = AgentInfo(
                instance_id=instance_id,
                display_name=display_name or instance_id,
                application_id=application_id,
                environment_id=environment_id,
                status="STALE",
                route_ids=tuple(route_ids),
                route_version=route_version,
                capabilities=[] if capabilities is None else capabilities,
                last_heartbeat=now,
                registered_at=agent.info.registered_at if agent else now,
                route_states=dict(agent.info.route_states) if agent else {},
            )
            if agent is None:
                self._agents[instance_id] = _Agent(info)
            else:
                agent.info = info
            return self._snapshot(self._agents[instance_id], now)

    def heartbeat(
        self,
        instance_id: str,
        *,
        route_states: Mapping[str, str] | None = None,
        capabilities: Any = None,
    ) -> AgentInfo:
        """Record a heartbeat (and the route states it carries). ``NotFound`` for an agent
        that never registered with this server: it must register again."""
        if route_states is not None:
            for route_id, state in route_states.items():
                if state not in ROUTE_STATES:
                    raise ValidationError(
                        f"route state {state!r} of route {route_id!r} is not one of "
                        + ", ".join(ROUTE_STATES),
                        details={"routeId": route_id, "state": repr(state)[:80]},
                    )
        now = self.clock()
        with self._lock:
            agent = self._require(instance_id)
            changes: dict[str, Any] = {"last_heartbeat": now}
            if route_states is not None:
                changes["route_states"] = {**agent.info.route_states, **route_states}
            if capabilities is not None:
                changes["capabilities"] = capabilities
            agent.info = replace(agent.info, **changes)
            return self._snapshot(agent, now)

    def check_token(self, instance_id: str, environment: str | None) -> None:
        """Whether an agent token (``sub`` = ``instance_id``, ``env`` = ``environment``) still
        speaks for the registration: ``NotFound`` (``AGENT_NOT_FOUND``, 404) when the id is not
        registered now (the server restarted and forgot it: register again), ``AgentTokenStale``
        (403) when it is registered with another environment than the token's (see there).
        Run before every agent endpoint (heartbeat, command channel, acks, chunks)."""
        with self._lock:
            agent = self._require(instance_id)
            registered = agent.info.environment_id
        if environment != registered:
            raise AgentTokenStale(
                f"this token of agent {instance_id!r} was issued for environment {environment!r}; "
                f"the id is now registered in {registered!r}",
                hint="register again with POST /api/v1/agents/register for a fresh token "
                "(an agent of another environment needs an instance id of its own)",
                details={
                    "instanceId": instance_id,
                    "tokenEnvironment": environment,
                    "environment": registered,
                },
            )

    # ---------------------------------------------------------------- queries

    def get(self, instance_id: str) -> AgentInfo | None:
        with self._lock:
            agent = self._agents.get(instance_id)
            return None if agent is None else self._snapshot(agent, self.clock())

    def list(self, *, environment: str | None = None, status: str | None = None) -> list[AgentInfo]:
        """Agents sorted by instanceId, optionally of one environment and/or status."""
        if status is not None and status not in AGENT_STATUSES:
            raise ValidationError(
                f"status {status!r} is not one of {', '.join(AGENT_STATUSES)}",
                details={"field": "status"},
            )
        now = self.clock()
        with self._lock:
            infos = [self._snapshot(a, now) for _, a in sorted(self._agents.items())]
        return [
            i
            for i in infos
            if (environment is None or i.environment_id == environment)
            and (status is None or i.status == status)
        ]

    def pick(self, environment: str | None, *, instance_id: str | None = None) -> AgentInfo:
        """The agent a replay in ``environment`` goes to: ``instance_id`` if given (it must be
        LIVE, and in ``environment`` when that is given too), else the LIVE agent of the
        environment with the newest heartbeat. ``AgentUnavailable`` (503) when there is none."""
        now = self.clock()
        with self._lock:
            if instance_id is not None:
                agent = self._agents.get(instance_id)
                info = None if agent is None else self._snapshot(agent, now)
                if info is None or info.status != "LIVE":
                    raise AgentUnavailable(
                        f"agent {instance_id!r} is "
                        + ("not registered" if info is None else f"{info.status}, not LIVE"),
                        hint="pick a LIVE agent from GET /api/v1/agents, or leave targetAgent out",
                        details={"instanceId": instance_id, "status": None if info is None else info.status},
                    )
                if environment is not None and info.environment_id != environment:
                    raise AgentUnavailable(
                        f"agent {instance_id!r} runs environment {info.environment_id!r}, "
                        f"not {environment!r}",
                        hint="leave targetEnvironment out or name an agent of that environment",
                        details={"instanceId": instance_id, "environment": environment},
                    )
                return info
            every_live = [
                i for i in (self._snapshot(a, now) for a in self._agents.values()) if i.status == "LIVE"
            ]
            live = [i for i in every_live if environment is None or i.environment_id == environment]
        if not live:
            # Name the environments that have one: a mistyped target ('stagin', 'qa') was told
            # to start an agent, in a sweep on every row (analyst walk). Names only, which
            # GET /agents shows any user anyway.
            known = sorted({i.environment_id for i in every_live})
            raise AgentUnavailable(
                f"no LIVE agent for environment {environment!r}",
                hint=f"environments with a LIVE agent: {', '.join(known) or 'none'} — target one of them, or "
                "start the environment's agent (moat-nb sandbox starts one per environment) and retry",
                details={"environment": environment, "liveEnvironments": known},
            )
        live.sort(key=lambda i: (-(i.last_heartbeat or now).timestamp(), i.instance_id))
        return live[0]

    # ---------------------------------------------------------------- commands

    async def send(
        self, instance_id: str, command: Mapping[str, Any], *, ttl: float | None = None
    ) -> dict[str, Any]:
        """Complete, sign and queue ``command`` for ``instance_id``; return the signed command.

        ``command`` needs a ``type``; ``commandId`` (a fresh UUID), ``issuedAt``, ``expiresAt``
        (issuedAt + ``ttl`` seconds, at most ``command_ttl``) and ``nonce`` (128 random bits,
        hex) are added when absent.
        An existing ``signature`` is replaced. ``NotFound`` for an unknown agent; a queued
        command waits for the agent's channel if it is closed (until it expires).
        """
        kind = command.get("type") if isinstance(command, Mapping) else None
        if not isinstance(kind, str) or not kind:
            raise ValidationError("a command needs a non-empty string 'type'", details={"field": "type"})
        now = self.clock()
        full = dict(command)
        full.setdefault("commandId", uuid.uuid4().hex)
        check_id(full["commandId"], "commandId")
        full.setdefault("issuedAt", format_time(now))
        lifetime = self.command_ttl if ttl is None else min(self.command_ttl, timedelta(seconds=ttl))
        full.setdefault("expiresAt", format_time(now + lifetime))
        full.setdefault("nonce", secrets.token_hex(16))
        signed = self.signer.sign(full)
        expires_at = parse_time(signed["expiresAt"]) or now + self.command_ttl
        with self._lock:
            agent = self._require(instance_id)
            if signed["commandId"] in agent.commands:
                raise ValidationError(
                    f"command {signed['commandId']!r} was already sent to {instance_id!r}",
                    code="DUPLICATE_COMMAND",
                )
            agent.commands[signed["commandId"]] = _Command(agent.next_seq, signed, expires_at)
            agent.next_seq += 1
            self._prune(agent, now)
            channel = agent.channel
        if channel is not None:
            self._wake(channel)
        return signed

    def ack(self, instance_id: str, command_id: str, ack: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Record the agent's acknowledgement of a command; return the command and whether this
        is the first ack (a repeated ack changes nothing). Calls the :meth:`on_ack` callbacks on
        the first ack. ``NotFound`` when the agent never got such a command."""
        status = ack.get("status")
        if status not in ACK_STATUSES:
            raise ValidationError(
                f"ack status {status!r} is not one of {', '.join(ACK_STATUSES)}", details={"field": "status"}
            )
        with self._lock:
            agent = self._require(instance_id)
            entry = agent.commands.get(command_id)
            if entry is None:
                raise NotFound(
                    f"agent {instance_id!r} has no command {command_id!r}",
                    hint="ack the commandId of an event received on this agent's channel",
                    details={"instanceId": instance_id, "commandId": command_id},
                )
            first = entry.ack is None
            if first:
                entry.ack = dict(ack)
                entry.delivered = True
            command = entry.command
        if first:
            for callback in list(self._ack_callbacks):
                _settle(callback(instance_id, command_id, dict(ack)))
        return command, first

    def withdraw(self, instance_id: str, command_id: str) -> None:
        """Expire a queued command now: it is no longer delivered, nor sent again to a channel
        that reconnects (its ack is still taken). For a replay that ended before its agent ran
        it: a timed-out replay must not run later (section 4: never silently run twice)."""
        now = self.clock()
        with self._lock:
            agent = self._agents.get(instance_id)
            entry = None if agent is None else agent.commands.get(command_id)
            if entry is not None and entry.expires_at > now:
                entry.expires_at = now

    def on_ack(self, callback: AckCallback) -> None:
        """Call ``callback(instance_id, command_id, ack)`` on each command's first ack."""
        self._ack_callbacks.append(callback)

    def pending(self, instance_id: str) -> list[dict[str, Any]]:
        """Signed commands queued for the agent, not acknowledged and not expired (in order)."""
        now = self.clock()
        with self._lock:
            agent = self._require(instance_id)
            return [c.command for c in agent.commands.values() if c.ack is None and c.expires_at > now]

    # ---------------------------------------------------------------- the command channel

    def open_channel(self, instance_id: str, *, last_event_id: str | None = None) -> CommandChannel:
        """Open the agent's command channel now (the agent counts as connected from here on) and
        return it; iterate it for the signed commands to send, and :meth:`CommandChannel.close`
        it when the connection ends. A previous channel of the same agent is ended: the newest
        connection wins. ``NotFound`` for an unknown agent. Call on the server's event loop."""
        mine = CommandChannel(self, instance_id, asyncio.get_running_loop())
        with self._lock:
            agent = self._require(instance_id)
            previous, agent.channel = agent.channel, mine
            if last_event_id is not None and last_event_id in agent.commands:
                mine.resend_after = agent.commands[last_event_id].seq
        if previous is not None:
            previous.closed = True
            self._wake(previous)
        return mine

    async def channel(
        self, instance_id: str, *, last_event_id: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """:meth:`open_channel` as an async generator that closes the channel when it ends."""
        mine = self.open_channel(instance_id, last_event_id=last_event_id)
        try:
            async for command in mine:
                yield command
        finally:
            mine.close()

    def channel_open(self, instance_id: str) -> bool:
        with self._lock:
            agent = self._agents.get(instance_id)
            return agent is not None and agent.channel is not None

    def close_channels(self) -> None:
        """End every open channel (server shutdown)."""
        with self._lock:
            channels = [a.channel for a in self._agents.values() if a.channel is not None]
        for channel in channels:
            channel.close()

    # ---------------------------------------------------------------- internals

    def _require(self, instance_id: str) -> _Agent:
        agent = self._agents.get(instance_id)
        if agent is None:
            raise NotFound(
                f"agent {instance_id!r} is not registered",
                code="AGENT_NOT_FOUND",
                hint="register with POST /api/v1/agents/register first",
                details={"instanceId": instance_id},
            )
        return agent

    def _next(self, instance_id: str, cursor: int, resend_after: int | None) -> _Command | None:
        now = self.clock()
        with self._lock:
            agent = self._agents.get(instance_id)
            if agent is None:
                return None
            for entry in agent.commands.values():
                if entry.seq <= cursor or entry.ack is not None or entry.expires_at <= now:
                    continue
                if not entry.delivered or (resend_after is not None and entry.seq > resend_after):
                    return entry
        return None

    def _prune(self, agent: _Agent, now: datetime) -> None:
        # Keep at most `history` commands; drop finished (acked or expired) ones first.
        while len(agent.commands) > self.history:
            victim = next(
                (k for k, c in agent.commands.items() if c.ack is not None or c.expires_at <= now),
                None,
            )
            if victim is None:
                break
            del agent.commands[victim]

    def _snapshot(self, agent: _Agent, now: datetime) -> AgentInfo:
        info = agent.info
        age = now - (info.last_heartbeat or now)
        if age > self.stale_after + self.dead_after:
            status = "DEAD"
        elif age > self.stale_after or agent.channel is None:
            status = "STALE"
        else:
            status = "LIVE"
        return replace(info, status=status, channel_open=agent.channel is not None)

    @staticmethod
    def _wake(channel: CommandChannel) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is channel.loop:
            channel.wake.set()
        elif not channel.loop.is_closed():
            channel.loop.call_soon_threadsafe(channel.wake.set)
