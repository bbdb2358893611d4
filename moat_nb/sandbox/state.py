"""Everything one sandbox server holds: store, users and tokens, keys, agents, replays, config.

:meth:`SandboxState.create` opens (or makes) a data folder::

    <data>/sandbox.db        the SQLite store (executions, processors; replays and audit tables)
    <data>/keys/jwt.key      HS256 secret for access/refresh tokens (so tokens survive a restart)
    <data>/keys/commands.pem Ed25519 key that signs agent commands (section 5)
    <data>/keys/redaction.key HMAC key of secret fingerprints (section 4 "Secrets")
    <data>/keys/audit.pem    Ed25519 key that signs audit checkpoints (section 7)
    <data>/audit-checkpoints.jsonl  every audit checkpoint again, outside the database

The keys live outside the database on purpose (security.md 1.2 item 3: whoever can rewrite the
database must not thereby hold the keys), each file readable by its owner only.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .agents import AgentRegistry
from .apps import App
from .audit_log import AuditLog
from .bodies import DEFAULT_LIMIT, MAX_HEADER_BYTES, MAX_HEADERS
from .security import (
    Authority,
    CommandSigner,
    LoginGuard,
    Redactor,
    TraceSecrets,
    UserTable,
    default_users,
    load_users,
    new_bootstrap_token,
)
from .store import Store

if TYPE_CHECKING:
    from .replays import ReplayService

__all__ = ["ServerConfig", "SandboxState", "DB_FILE", "LOOPBACK_HOSTS", "host_names"]

DB_FILE = "sandbox.db"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ServerConfig:
    """Tunables of one server. Times in seconds."""

    #: SSE comment ping interval on both streams (section 5: every 15 s, configurable).
    ping_interval: float = 15.0
    #: A client that does not take an SSE event within this long is dropped (security.md SSE-5).
    send_timeout: float = 10.0
    #: A replay whose agent sends no final chunk within this long is TIMED_OUT (issue 3).
    replay_timeout: float = 30.0
    #: Agent liveness (cameleer.md 2.4): STALE after this long without a heartbeat ...
    agent_stale_after: float = 90.0
    #: ... and DEAD this long after that.
    agent_dead_after: float = 300.0
    #: Unacknowledged commands expire after this long (cameleer.md 2.5: 60 s).
    command_ttl: float = 60.0
    #: Chunks in flight (being read, redacted, stored) before POST /data/chunks answers 503.
    chunk_buffer: int = 64
    #: The Retry-After of that 503, in whole seconds (RFC 9110 10.2.3).
    retry_after: int = 1
    #: Request body limit (section 4: 1 MiB).
    max_body: int = DEFAULT_LIMIT
    #: The agents' bootstrap token; None makes a random one per start.
    bootstrap_token: str | None = None
    #: Addresses of reverse proxies whose ``X-Forwarded-For``/``-Proto`` are believed (uvicorn's
    #: ``forwarded_allow_ips``). None by default: the audit's ``source.ip`` (section 7) is then
    #: the connecting peer, which a client cannot write. (uvicorn's own default trusts 127.0.0.1,
    #: where every client of a loopback sandbox comes from: any of them could have put any
    #: address in the audit record.)
    trusted_proxies: tuple[str, ...] = ()
    #: Failed logins a user name may have within ``login_window`` before its logins are refused
    #: (429 ``TOO_MANY_ATTEMPTS``) until the oldest leaves the window; an address may have four
    #: times as many (:class:`~moat_nb.sandbox.security.LoginGuard`).
    login_attempts: int = 5
    login_window: float = 300.0
    #: Trace streams (``GET /replays/{id}/events``) one user may have open at once, and unused
    #: stream tickets one user may hold; beyond, 429 ``TOO_MANY_STREAMS`` / ``TOO_MANY_TICKETS``
    #: (one user could open them without end and exhaust the sandbox). Generous on purpose:
    #: four times :data:`moat_nb.batch.MAX_CONCURRENCY` (64), whose rows read one stream each,
    #: so that two batches of one user at their maximum, each stream overlapping its own
    #: reconnect for a moment (a dropped client is noticed by the next ping), still fit.
    max_streams: int = 256
    #: Request header fields per request, and bytes of one field's name or value; beyond, 431
    #: ``HEADERS_TOO_LARGE`` (security.md section 8 "Limits"; the measured needs of the
    #: sandbox's clients are in :mod:`.bodies`). The server also stops reading a request head
    #: longer than ``max_headers * max_header_bytes`` + 64 KiB (:attr:`max_head_bytes`).
    max_headers: int = MAX_HEADERS
    max_header_bytes: int = MAX_HEADER_BYTES
    #: Host names (or IP literals; no port) the server answers requests for; any other
    #: ``Host`` gets 421 ``HOST_NOT_ALLOWED``. None: the loopback names (:data:`LOOPBACK_HOSTS`);
    #: ``("*",)``: any host. :func:`~.runner.start` adds the loopback names and the address it
    #: listens on to those given, and on another address than loopback with none given answers
    #: any host (as Jupyter does once it listens on the network). On loopback it always checks:
    #: a web page whose DNS name rebinds to 127.0.0.1 would otherwise reach the sandbox, whose
    #: default users' passwords are their names, from the user's own browser (DNS rebinding).
    allowed_hosts: tuple[str, ...] | None = None

    @property
    def max_head_bytes(self) -> int:
        """Bytes of request line and header fields the server reads before it answers 431:
        every field at its longest value, plus 64 KiB for the request line and the names."""
        return self.max_headers * self.max_header_bytes + 64 * 1024

    def __post_init__(self) -> None:
        for name in (
            "ping_interval",
            "send_timeout",
            "replay_timeout",
            "agent_stale_after",
            "agent_dead_after",
            "command_ttl",
            "login_window",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"ServerConfig.{name} must be positive")
        if (
            self.chunk_buffer < 1
            or self.retry_after < 0
            or self.max_body < 1
            or self.login_attempts < 1
            or self.max_streams < 1
            or self.max_headers < 1
            or self.max_header_bytes < 1
        ):
            raise ValueError(
                "ServerConfig: chunk_buffer, max_body, login_attempts, max_streams, max_headers and "
                "max_header_bytes must be >= 1, retry_after >= 0"
            )
        if self.allowed_hosts is not None:
            # Frozen: the normalised names replace those given (dataclasses' documented way).
            object.__setattr__(self, "allowed_hosts", host_names(self.allowed_hosts))


def host_names(given: str | Iterable[str]) -> tuple[str, ...]:
    """``ServerConfig.allowed_hosts`` as :class:`~.server.TrustedHosts` compares them: lower
    case, without an IPv6 literal's brackets or a final dot, as it reads a ``Host`` header's
    name (RFC 9110 section 7.2; DNS names are case-insensitive, RFC 4343). Compared as given,
    ``"Lab.Example"`` or ``"[::1]"`` never matched and the sandbox answered 421 for the name it
    was given; a bare str was read one name per character (review finding), so a str is one
    name. ``ValueError`` for a name with a port (the Host's port is not compared), an empty one,
    or a wildcard other than ``"*"`` alone (every host)."""
    names = (given,) if isinstance(given, str) else tuple(given)
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower() if isinstance(raw, str) else ""
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        name = name.rstrip(".") if name != "*" else name
        problem = None
        if not name:
            problem = "is empty" if isinstance(raw, str) else "is not a str"
        elif "*" in name and name != "*":
            problem = "is a pattern: only '*' alone (every host) is understood"
        elif ":" in name:
            try:
                ipaddress.IPv6Address(name)
            except ValueError:
                problem = "has a port: give the name alone (any port is answered)"
        if problem is not None:
            raise ValueError(f"ServerConfig.allowed_hosts: {raw!r} {problem}")
        out.append(name)
    return tuple(dict.fromkeys(out))


#: The names a client on this machine reaches a loopback sandbox by.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def _secret_file(path: Path, size: int = 32) -> bytes:
    """The key in ``path``, made (random, owner-only) if absent."""
    if path.exists():
        data = path.read_bytes()
        if len(data) < 32:
            raise ValueError(f"{path}: key file is shorter than 32 bytes; delete it to have one made")
        return data
    path.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_bytes(size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return data


@dataclass
class SandboxState:
    """The state one server runs on. Make it with :meth:`create`."""

    data_dir: Path
    app: App
    seed: int
    config: ServerConfig
    store: Store
    authority: Authority
    signer: CommandSigner
    redactor: Redactor
    agents: AgentRegistry
    clock: Callable[[], datetime] = _utcnow
    #: The tenant's audit log (:mod:`moat_nb.sandbox.audit_log`), set by :meth:`create`.
    audit: AuditLog | Any = None
    #: Set by :meth:`create` from :mod:`moat_nb.sandbox.replays` (None until that module exists).
    replays: ReplayService | Any = None
    #: Secret values shown by the earlier chunks of unfinished traces (redaction of the next).
    trace_secrets: TraceSecrets = field(default_factory=TraceSecrets)
    #: Failed logins by user name and address (set by :meth:`create` from the config).
    login_guard: LoginGuard = field(default_factory=LoginGuard)
    #: Free slots for extension modules (e.g. the audit log) keyed by name.
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        data_dir: Path | str,
        *,
        users_file: Path | str | None = None,
        app: App,
        seed: int = 0,
        config: ServerConfig | None = None,
        users: UserTable | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> SandboxState:
        """Open ``data_dir`` (made if absent): store, keys, users (``users_file``, or ``users``,
        or the four defaults of section 6), agent registry and replay service."""
        data = Path(data_dir)
        data.mkdir(parents=True, exist_ok=True)
        config = config or ServerConfig()
        if config.bootstrap_token is None:
            config = replace(config, bootstrap_token=new_bootstrap_token())
        if users is None:
            users = load_users(users_file) if users_file is not None else default_users()
        keys = data / "keys"
        signer = CommandSigner.load_or_create(keys / "commands.pem")
        state = cls(
            data_dir=data,
            app=app,
            seed=seed,
            config=config,
            store=Store(data / DB_FILE),
            authority=Authority(
                users,
                jwt_secret=_secret_file(keys / "jwt.key"),
                bootstrap_token=config.bootstrap_token or "",
            ),
            signer=signer,
            redactor=Redactor(_secret_file(keys / "redaction.key")),
            agents=AgentRegistry(
                signer,
                clock=clock,
                stale_after=config.agent_stale_after,
                dead_after=config.agent_dead_after,
                command_ttl=config.command_ttl,
            ),
            clock=clock,
            login_guard=LoginGuard(attempts=config.login_attempts, window=config.login_window),
        )
        state.audit = AuditLog.open(state.store, data, users.tenant.id, clock=clock)
        state.replays = _replay_service(state)
        return state

    @property
    def users(self) -> UserTable:
        return self.authority.users

    @property
    def bootstrap_token(self) -> str:
        return self.config.bootstrap_token or ""

    def close(self) -> None:
        """Sign the audit log's shutdown checkpoint (if the replay service's shutdown has not
        already), then close the store (after the server stopped)."""
        if self.audit is not None:
            self.audit.close()
        self.store.close()


def _replay_service(state: SandboxState) -> Any:
    """The replay service of :mod:`moat_nb.sandbox.replays`, or None while it does not exist."""
    try:
        from .replays import ReplayService
    except ModuleNotFoundError as exc:  # the module is written by another part of issue 3
        if exc.name != f"{__package__}.replays":
            raise
        return None
    return ReplayService(state)
