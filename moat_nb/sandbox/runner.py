"""Start and stop a whole sandbox: the server, one agent per environment, a recorded history.

``start(...)`` (re-exported as :func:`moat_nb.sandbox.start`) returns a :class:`SandboxHandle`;
``serve(...)`` is ``moat-nb sandbox``: it prints where to connect and runs until Ctrl-C
(DESIGN.md section 8, issue 3 item 8).

What runs where
    uvicorn serves the Starlette app (:func:`~moat_nb.sandbox.server.create_app`) in a background
    thread with its own event loop (:class:`~moat_nb.sandbox.server.ServerThread`); the agents
    (:class:`~moat_nb.sandbox.agent.Agent`, one per environment of the app: ``dev`` and ``staging``
    run v2 with ``PROCESSOR`` capture, ``prod`` v1 with ``ROUTE`` capture) run on that same loop
    and talk to the server over loopback HTTP and SSE like any Cameleer agent would.

History
    A fresh data folder gets its recorded traffic through the agents: the seeded generator
    (:func:`~moat_nb.sandbox.traffic.generate`) runs each environment's exchanges in the calling
    thread and that environment's agent posts them to ``POST /data/chunks``, so that history and
    replays are stored by one path. The history is the week before the folder is first filled
    (so ``since="24h"`` finds traffic, as on a live platform); the same seed gives the same
    exchanges and ids at times moved with that start. ``history.json`` in the folder records the
    app, seed, size and start (written before the first chunk, ``complete`` set after the last):
    a folder that has a complete history is reused as it is; an interrupted one is completed with
    the recorded seed and start (ingestion is idempotent, so nothing is duplicated), and so is
    one whose marker was deleted (the start is read back from the stored history); a folder of
    another app is refused.

Safety
    The server binds 127.0.0.1 by default and refuses any address beyond loopback while a user
    still has their default password (DESIGN.md section 6).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import inspect
import ipaddress
import json
import os
import re
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from types import ModuleType
from typing import IO, Any, TypeVar

from ..errors import MoatError, RouteLoadError, TransportError, ValidationError
from ..model import ID_PATTERN, Chunk, Payload
from .agent import Agent, AgentConfig
from .apps import App, EnvironmentSpec
from .security import UserTable, default_users, load_users
from .server import ServerThread, create_app
from .state import LOOPBACK_HOSTS, SandboxState, ServerConfig
from .traffic import DEFAULT_START, first_planned, generate, instance_id, load_routesets

__all__ = [
    "DEFAULT_PORT",
    "HISTORY_FILE",
    "SandboxHandle",
    "add_sandbox_parser",
    "default_data_dir",
    "load_app_dir",
    "run_sandbox",
    "serve",
    "start",
]

#: ``moat-nb sandbox`` listens here unless ``--port`` says otherwise (Cameleer's own port).
DEFAULT_PORT = 8081
HISTORY_FILE = "history.json"
#: How long the seeded history spans, ending when the data folder is first filled.
_HISTORY_SPAN = timedelta(days=7)
#: Chunks generated and posted per batch while building the history (bounds memory).
_HISTORY_BATCH = 250
_T = TypeVar("_T")


# --------------------------------------------------------------------------- the handle


@dataclass
class SandboxHandle:
    """A running sandbox.

    ``url`` is the server root (``http://127.0.0.1:PORT``), what ``moat_nb.connect(url)`` and
    ``MOAT_URL`` take; ``api`` is ``url + "/api/v1"``, the base of every endpoint.
    ``users`` maps each user name to its password while that is the default one (the user
    name), else to None. ``agents`` are the running agents by environment. ``history`` is the
    number of executions posted by this start (0 when an existing history was reused).
    Use as a context manager, or call :meth:`stop`.
    """

    url: str
    users: dict[str, str | None]
    data_dir: Path
    state: SandboxState = field(repr=False)
    agents: dict[str, Agent]
    history: int
    server: ServerThread = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def api(self) -> str:
        """The API base: ``url + "/api/v1"``."""
        return self.url + "/api/v1"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop of the server and the agents."""
        assert self.server.loop is not None
        return self.server.loop

    def call(self, fn: Callable[[], Any], timeout: float | None = 30.0) -> Any:
        """Run ``fn()`` on the sandbox's loop (awaiting it if it returns an awaitable) and return
        its result: how another thread reaches the agents or the agent registry."""
        return self.server.call(fn, timeout=timeout)  # type: ignore[arg-type]

    def stop(self, *, graceful: bool = True) -> None:
        """Stop the agents (they disconnect; running replays get ``stop_grace`` seconds, then a
        ``FAILURE`` ack), then the server (its shutdown hooks run: the replay service's
        ``shutdown``), then close the store. ``graceful=False`` kills the agents instead, as a
        crash would: no acks, replays left running (the next start marks them ``ABORTED``).
        Calling it again does nothing."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.server.thread.is_alive():

                async def stop_agents() -> None:
                    await asyncio.gather(
                        *(a.stop() if graceful else a.kill() for a in self.agents.values()),
                        return_exceptions=True,
                    )

                try:
                    self.call(stop_agents, timeout=30.0)
                except (RuntimeError, TimeoutError):
                    pass  # the loop is already gone: nothing left to disconnect
            self.server.stop()
        finally:
            self.state.close()

    def __enter__(self) -> SandboxHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- starting


def default_data_dir(app: App | None = None) -> Path:
    """Where the sandbox keeps its data unless told: ``$XDG_CACHE_HOME/moat-nb/sandbox`` (or
    ``~/.cache/...``; DESIGN.md section 8), ``sandbox-<app>`` for an app other than ``orders``."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moat-nb"
    name = "sandbox" if app is None or app.name == "orders" else f"sandbox-{app.name}"
    return base / name


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def _check_port(host: str, port: int) -> None:
    """Fail early, in words, when the port is taken (uvicorn would only log it in its thread)."""
    if port == 0:
        return
    try:
        with socket.create_server(
            (host.strip("[]"), port), family=socket.AF_INET6 if ":" in host else socket.AF_INET
        ):
            pass
    except OSError as exc:
        raise TransportError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            code="CANNOT_LISTEN",
            hint="is another sandbox running there? pick another --port (0: any free port)",
            details={"host": host, "port": port},
        ) from None


def _resolve_app(app: App | str | os.PathLike[str] | None) -> App:
    if app is None:
        from .apps.orders import APP

        return APP
    if isinstance(app, App):
        return app
    return load_app_dir(app)


def _resolve_users(users: UserTable | str | os.PathLike[str] | None) -> UserTable:
    if users is None:
        return default_users()
    if isinstance(users, UserTable):
        return users
    return load_users(users)


def _server_config(config: ServerConfig | None, overrides: Mapping[str, Any]) -> ServerConfig:
    known = {f.name for f in fields(ServerConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(
            f"start() got unknown option(s) {', '.join(unknown)}; "
            f"server options are: {', '.join(sorted(known))}"
        )
    return replace(config or ServerConfig(), **overrides)


def _hosts_answered(config: ServerConfig, host: str) -> ServerConfig:
    """``config`` with the Host names the server answers (``ServerConfig.allowed_hosts``):
    those given, the loopback names and the address it listens on; on another address than
    loopback with none given, any host (``("*",)``: a server on the network is reached by names
    this process cannot know)."""
    given = config.allowed_hosts
    if given is None and not _is_loopback(host):
        return replace(config, allowed_hosts=("*",))
    if given is not None and "*" in given:
        return config
    # ServerConfig normalises and de-duplicates them (state.host_names).
    return replace(config, allowed_hosts=(*(given or ()), *LOOPBACK_HOSTS, *([host] if host else [])))


def start(
    *,
    port: int = 0,
    data: str | os.PathLike[str] | None = None,
    seed: int = 0,
    users: UserTable | str | os.PathLike[str] | None = None,
    app: App | str | os.PathLike[str] | None = None,
    per_env: int = 500,
    host: str = "127.0.0.1",
    config: ServerConfig | None = None,
    agent_config: AgentConfig | None = None,
    **overrides: Any,
) -> SandboxHandle:
    """Start a sandbox and return its handle once every agent is connected and the history is in.

    ``port`` 0 picks a free port. ``data`` is the data folder (default :func:`default_data_dir`).
    ``users`` is a users file (TOML, DESIGN.md section 6) or a table; default: the four default
    users. ``app`` is an :class:`~moat_nb.sandbox.apps.App` or a folder for
    :func:`load_app_dir`; default: ``orders``. ``per_env`` and ``seed`` size and seed a fresh
    history. ``overrides`` are :class:`~moat_nb.sandbox.state.ServerConfig` fields
    (``replay_timeout=5``, ``ping_interval=1`` ...), applied over ``config``.

    Raises ``ValidationError`` (``UNSAFE_BIND``) for a non-loopback ``host`` while a user has
    the default password, ``RouteLoadError`` for a bad app, ``OSError`` when the port is taken.
    """
    host = host.strip("[]")  # "[::1]" as in a URL: the socket wants "::1"
    the_app = _resolve_app(app)
    table = _resolve_users(users)
    if not _is_loopback(host) and table.uses_default_passwords:
        raise ValidationError(
            f"refusing to listen on {host}: user(s) {', '.join(table.default_password_users)} still "
            "have their default password (the user name), and anyone on the network could log in",
            code="UNSAFE_BIND",
            hint="keep the default host 127.0.0.1, or pass --users with a users file whose "
            "passwords are not the user names (the README's sandbox section shows one)",
            details={"host": host, "users": list(table.default_password_users)},
        )
    if per_env < 0:
        raise ValidationError(f"per_env must be >= 0, not {per_env}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        # socket's OverflowError otherwise: a traceback from `moat-nb sandbox --port 99999`
        raise ValidationError(
            f"port must be a whole number from 0 to 65535, not {port!r}",
            hint="pick a free port such as 8081, or 0 for any free port",
        )
    server_config = _hosts_answered(_server_config(config, overrides), host)
    _check_port(host, port)
    data_dir = Path(data) if data is not None else default_data_dir(the_app)
    blocked = next((p for p in (data_dir, *data_dir.parents) if p.exists()), None)
    if blocked is not None and not blocked.is_dir():
        # mkdir's "[Errno 17] File exists" named neither the option nor what to do.
        raise ValidationError(
            f"the data folder {str(data_dir)!r} cannot be made: {str(blocked)!r} is a file",
            code="DATA_DIR_INVALID",
            hint="pass --data (data=) a folder, or a path where one can be made",
            details={"dataDir": str(data_dir)},
        )
    routesets = load_routesets(the_app)  # load (and validate) the routes before anything starts
    marker = _read_marker(data_dir, the_app)

    state = SandboxState.create(data_dir, users=table, app=the_app, seed=seed, config=server_config)
    server: ServerThread | None = None
    agents: dict[str, Agent] = {}
    try:
        server = ServerThread(
            create_app(state), host=host, port=port, trusted_proxies=server_config.trusted_proxies
        ).start()
        url = server.url if ":" not in host else f"http://[{host}]:{server.port}"

        async def start_agents() -> dict[str, Agent]:
            made = {
                name: Agent(
                    url,
                    state.bootstrap_token,
                    instance_id=instance_id(the_app, name),
                    environment=name,
                    app=the_app,
                    routes=routesets[spec.version],
                    capture=spec.capture,
                    route_version=spec.version,
                    config=agent_config,
                )
                for name, spec in the_app.environments.items()
            }
            started = await asyncio.gather(*(a.start() for a in made.values()), return_exceptions=True)
            agents.update(made)
            for outcome in started:
                if isinstance(outcome, BaseException):
                    raise outcome
            return made

        server.call(start_agents, timeout=60.0)
        posted = _build_history(server, state, agents, the_app, routesets, data_dir, marker, seed, per_env)
    except BaseException:
        if server is not None:
            handle = SandboxHandle("", {}, data_dir, state, agents, 0, server)
            handle.stop(graceful=False)
        else:
            state.close()
        raise
    return SandboxHandle(
        url=url,
        users={u.username: (u.username if u.default_password else None) for u in table},
        data_dir=data_dir,
        state=state,
        agents=agents,
        history=posted,
        server=server,
    )


# --------------------------------------------------------------------------- history


def _read_marker(data_dir: Path, app: App) -> dict[str, Any] | None:
    path = data_dir / HISTORY_FILE
    if not path.exists():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValidationError(
            f"{path}: unreadable ({exc})",
            code="DATA_DIR_INVALID",
            hint=f"delete {path} to have the history completed again (nothing is duplicated)",
        ) from None
    if not isinstance(marker, dict):
        raise ValidationError(
            f"{path}: not a JSON object",
            code="DATA_DIR_INVALID",
            hint=f"delete {path} to have the history completed again",
        )
    if marker.get("app") != app.name:
        raise ValidationError(
            f"{data_dir} holds the sandbox data of app {marker.get('app')!r}, not {app.name!r}",
            code="DATA_DIR_IN_USE",
            hint="pass another --data folder for this app",
            details={"dataDir": str(data_dir), "app": marker.get("app")},
        )
    return marker


def _stored_start(state: SandboxState, app: App, seed: int, per_env: int) -> datetime | None:
    """The start a stored history of this seed was made with, or None when none is stored.

    Exchange ids do not depend on the start and every recorded time moves with it, so the first
    planned exchange's recorded time at DEFAULT_START tells how far its stored copy was moved.
    Nothing is run to find it: a route run here (its beans called once more than a history
    calls them) made an interrupted history's completion differ from what was stored (found by
    review: a bean that counts gave CHUNK_CONFLICT)."""
    if not app.environments:
        return None
    first = first_planned(
        app, next(iter(app.environments)), per_env=per_env, seed=seed, start=DEFAULT_START, span=_HISTORY_SPAN
    )
    if first is None:
        return None
    exchange_id, recorded_at = first
    execution_id = state.store.execution_id_by_exchange(exchange_id)
    stored = None if execution_id is None else state.store.execution(execution_id)
    if stored is None or stored.start_time is None:
        return None
    return DEFAULT_START + (stored.start_time - recorded_at)


def _marker_start(data_dir: Path, marker: Mapping[str, Any]) -> datetime:
    text = marker.get("start")
    if text is None:
        return DEFAULT_START
    try:
        start = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        start = None
    if start is None or start.tzinfo is None:
        path = data_dir / HISTORY_FILE
        raise ValidationError(
            f"{path}: start {text!r} is not an RFC 3339 UTC time",
            code="DATA_DIR_INVALID",
            hint=f"delete {path} to have the history completed again (nothing is duplicated)",
        )
    return start


def _write_marker(data_dir: Path, marker: Mapping[str, Any]) -> None:
    path = data_dir / HISTORY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic on POSIX: a crash leaves the old marker or the new one


def _batches(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def _build_history(
    server: ServerThread,
    state: SandboxState,
    agents: Mapping[str, Agent],
    app: App,
    routesets: Mapping[str, Any],
    data_dir: Path,
    marker: Mapping[str, Any] | None,
    seed: int,
    per_env: int,
) -> int:
    """Post the app's recorded traffic through the agents unless the folder has it already."""
    if marker is not None and marker.get("complete"):
        return 0
    if app.sample_payload is None:
        return 0  # an app without sample inputs starts with an empty history
    if marker is not None:  # an interrupted history: complete it exactly as it was begun
        seed, per_env = marker.get("seed", seed), marker.get("perEnv", per_env)
        # A marker from before the history was dated by the folder began it at DEFAULT_START.
        start = _marker_start(data_dir, marker)
    else:
        # The week up to the moment the folder is filled, so that since="24h" or "7d" finds
        # recent traffic as it would on a live platform; the marker keeps the instant, and a
        # restart or an interrupted history's completion reuses it (same seed, same exchanges).
        # A folder whose marker was deleted keeps the start its stored history was made with.
        start = _stored_start(state, app, seed, per_env) or (
            datetime.now(UTC).replace(microsecond=0) - _HISTORY_SPAN
        )
    record = {
        "app": app.name,
        "seed": seed,
        "perEnv": per_env,
        "start": start.isoformat().replace("+00:00", "Z"),
        "complete": False,
    }
    _write_marker(data_dir, record)
    posted = 0
    for name, agent in agents.items():
        chunks: Iterator[Chunk] = generate(
            app, routesets, per_env=per_env, seed=seed, start=start, span=_HISTORY_SPAN, environments=[name]
        )
        for batch in _batches(chunks, _HISTORY_BATCH):  # generated here, posted on the loop
            posted += server.call(lambda b=batch, a=agent: a.post_history(b), timeout=None)  # type: ignore[misc]
    _write_marker(data_dir, {**record, "complete": True, "executions": posted})
    return posted


# --------------------------------------------------------------------------- a user's app


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _import_beans(path: Path) -> ModuleType:
    # A unique module name per folder, registered in sys.modules as importlib's recipe
    # ("Importing a source file directly") does, so that dataclasses and pickling inside the
    # user's module work.
    name = "moat_nb_app_" + re.sub(r"\W", "_", str(path.parent.resolve()))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RouteLoadError(
            f"cannot import {path}", file=str(path), construct="beans.py", code="APP_INVALID"
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        line = _user_code_line(exc, path) or getattr(exc, "lineno", None)
        raise RouteLoadError(
            f"importing beans.py failed: {type(exc).__name__}: {exc}",
            file=str(path),
            line=line,
            construct="beans.py",
            hint="fix the error there; beans.py must import on its own (python " + str(path) + ")",
            code="APP_INVALID",
        ) from exc
    return module


def _user_code_line(exc: BaseException, path: Path) -> int | None:
    """The line of ``path`` (the app's beans.py) where ``exc`` was raised, if it was there."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    return frames[-1].lineno if frames else None


def _sample_function(fn: Any, path: Path) -> Callable[[Any, int], Payload]:
    if not callable(fn):
        raise RouteLoadError(
            "sample_payload must be a function (rng, i) -> payload",
            file=str(path),
            construct="sample_payload",
            code="APP_INVALID",
        )
    # Checked now, so that a function that cannot take (rng, i) is refused before anything
    # starts, not with a TypeError traceback while the history is being recorded.
    try:
        inspect.signature(fn).bind(None, 0)
    except TypeError as err:
        raise RouteLoadError(
            f"sample_payload cannot be called as sample_payload(rng, i): {err}",
            file=str(path),
            construct="sample_payload",
            hint="define def sample_payload(rng, i): ... (a random.Random and the input's index)",
            code="APP_INVALID",
        ) from None
    except ValueError:  # no signature to read (a builtin): let the call tell
        pass

    def sample(rng: Any, i: int) -> Payload:
        try:
            value = fn(rng, i)
        except Exception as exc:  # the user's code: one line, where it failed, not a traceback
            raise RouteLoadError(
                f"sample_payload(rng, {i}) failed: {type(exc).__name__}: {exc}",
                file=str(path),
                line=_user_code_line(exc, path),
                construct="sample_payload",
                hint="fix it there; each i below the per-environment count must give an input",
                code="APP_INVALID",
            ) from exc
        if isinstance(value, Payload):
            return value
        if isinstance(value, str):
            return Payload(body=value)
        try:
            if isinstance(value, Mapping) and set(value) <= {"headers", "body", "properties"}:
                return Payload.from_wire(value)
            if isinstance(value, Mapping | list):
                return Payload(body=json.dumps(value))
        except (MoatError, TypeError, ValueError) as err:
            # A headers value that is no map, a body json.dumps cannot write (a datetime): the
            # error named a wire record's field, or was a TypeError traceback, not the app.
            raise RouteLoadError(
                f"sample_payload(rng, {i}) returned an input that is not a payload: "
                + (err.message if isinstance(err, MoatError) else str(err)),
                file=str(path),
                construct="sample_payload",
                hint="return a str body, a JSON-able dict/list body, or {'headers': {...}, "
                "'body': '...', 'properties': {...}} with JSON values",
                code="APP_INVALID",
            ) from None
        raise RouteLoadError(
            f"sample_payload returned {type(value).__name__}; return a Payload, a "
            "{headers, body, properties} dict, a str body, or a JSON-able dict/list body",
            file=str(path),
            construct="sample_payload",
            code="APP_INVALID",
        )

    return sample


def load_app_dir(path: str | os.PathLike[str]) -> App:
    """A user's app for ``moat-nb sandbox --app DIR`` (DESIGN.md section 8).

    The folder holds Camel YAML DSL routes — ``*.yaml``/``*.yml`` directly (one version, ``v1``,
    run by every environment) or in sub-folders, one per version (``v1/``, ``v2/``: ``prod``
    runs the oldest, ``dev`` and ``staging`` the newest, as with ``orders``) — and optionally
    ``beans.py`` exposing:

    * ``BEANS``: ``{name: object}`` the ``bean`` steps call (default: none);
    * ``ENDPOINTS``: ``{uri: fn(exchange) -> reply}`` simulators of request-reply endpoints;
    * ``ENTRY_ROUTE``: the route id traffic enters (default: the first route not fed by
      ``direct:``);
    * ``sample_payload(rng, i)``: the i-th recorded input — a Payload, a ``{headers, body,
      properties}`` dict, a str body or a JSON dict/list body. Without it the history is empty.

    The app's name is the folder's name. Raises ``RouteLoadError`` (file, line, construct) for a
    route or beans problem.
    """
    root = Path(path)
    if not root.is_dir():
        raise RouteLoadError(
            f"{root} is not a folder",
            file=str(root),
            construct="app",
            hint="pass the folder holding the app's *.yaml routes and beans.py",
            code="APP_INVALID",
        )
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", root.resolve().name).strip("-") or "app"
    if not ID_PATTERN.match(name):
        name = name[:128]
    beans_file = root / "beans.py"
    module = _import_beans(beans_file) if beans_file.exists() else None
    beans = getattr(module, "BEANS", {}) if module is not None else {}
    endpoints = getattr(module, "ENDPOINTS", {}) if module is not None else {}
    for what, value in (("BEANS", beans), ("ENDPOINTS", endpoints)):
        if not isinstance(value, Mapping):
            raise RouteLoadError(
                f"{what} must be a dict, not {type(value).__name__}",
                file=str(beans_file),
                construct=what,
                code="APP_INVALID",
            )
    from .camel.engine import check_simulators

    check_simulators(endpoints, str(beans_file), code="APP_INVALID")

    top = [p for p in root.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml")]
    if top:
        versions = {"v1": root}
    else:
        subs = sorted(
            (
                d
                for d in root.iterdir()
                if d.is_dir() and any(p.suffix in (".yaml", ".yml") for p in d.iterdir() if p.is_file())
            ),
            key=lambda d: _natural(d.name),
        )
        if not subs:
            raise RouteLoadError(
                f"{root} holds no route files",
                file=str(root),
                construct="routes",
                hint="put Camel YAML DSL routes in *.yaml files there (or in v1/, v2/ ... folders)",
                code="APP_INVALID",
            )
        versions = {d.name: d for d in subs}
    oldest, newest = next(iter(versions)), list(versions)[-1]

    from .camel import RouteSet

    # Every version is loaded now, so that a bad route file is reported before anything starts.
    try:
        loaded = {v: RouteSet.load(d, beans, endpoints=endpoints, version=v) for v, d in versions.items()}[
            newest
        ]
    except RouteLoadError as err:
        if module is not None and hasattr(module, "BEANS"):
            raise
        if err.construct not in ("bean", "process") or not err.message.startswith("no bean "):
            raise
        # BEANS is optional (an app may have no bean steps), so its absence is only an error
        # once a bean step names one: say so, rather than "registered beans: (none)".
        err.hint = (
            f"{beans_file} defines no BEANS dict: add BEANS = {{'name': object}} there"
            if module is not None
            else f"{root} has no beans.py: add one with BEANS = {{'name': object}}"
        ) + ", the ref of each bean step a key"
        raise
    entry = getattr(module, "ENTRY_ROUTE", None) if module is not None else None
    if entry is None:
        fed = [r for r in loaded.route_ids if not loaded.routes[r].from_uri.startswith(("direct:", "seda:"))]
        entry = (fed or loaded.route_ids)[0]
    elif entry not in loaded.route_ids:
        raise RouteLoadError(
            f"ENTRY_ROUTE {entry!r} is not a route of the app",
            file=str(beans_file),
            construct="ENTRY_ROUTE",
            hint="routes: " + ", ".join(loaded.route_ids),
            code="APP_INVALID",
        )
    sample = getattr(module, "sample_payload", None) if module is not None else None
    return App(
        name=name,
        application_id=name,
        entry_route=entry,
        versions=versions,
        beans=dict(beans),
        endpoints=dict(endpoints),
        sample_payload=_sample_function(sample, beans_file) if sample is not None else None,
        environments={
            "dev": EnvironmentSpec("dev", newest, "PROCESSOR"),
            "staging": EnvironmentSpec("staging", newest, "PROCESSOR"),
            "prod": EnvironmentSpec("prod", oldest, "ROUTE"),
        },
    )


# --------------------------------------------------------------------------- serving


def banner(handle: SandboxHandle) -> str:
    """What ``moat-nb sandbox`` prints: where to connect, who can log in, where data lives."""
    state = handle.state
    _, recorded = state.store.search(isReplay=False, limit=1)
    lines = [
        f"moat-nb sandbox ({state.app.name}) listening on {handle.url}",
        f"  API          {handle.api}   (OpenAPI: {handle.api}/api-docs)",
        f"  data         {handle.data_dir}   ({recorded} recorded executions"
        + (", just made)" if handle.history else ")"),
        "  agents       "
        + ", ".join(f"{a.instance_id} [{a.route_version}, {a.capture}]" for a in handle.agents.values()),
        "  users",
    ]
    if recorded == 0 and state.app.sample_payload is None:
        # Nothing to replay, and nothing said why (found by a walk through the README).
        lines.insert(
            3,
            "  (no history: the app's beans.py has no sample_payload(rng, i) to record traffic "
            "from; define one and start with a new --data folder)",
        )
    for user in state.users:
        password = handle.users.get(user.username)
        roles = ", ".join([*user.roles, *user.grants])
        lines.append(
            f"    {user.username:<15} {roles:<28} "
            + (f"password: {password}" if password else "password: (from the users file)")
        )
    some = next((u for u, p in handle.users.items() if p and u == "operator"), None) or next(
        (u for u, p in handle.users.items() if p), None
    )
    if some:
        lines.append(f"  notebooks    export MOAT_URL={handle.url} MOAT_USER={some} MOAT_PASSWORD={some}")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


#: The young-generation threshold of a process that is only a sandbox (CPython's default: 700).
SERVER_GC_THRESHOLD = 5000


def settle_gc() -> None:
    """Tune the garbage collector for a process that is only a sandbox, once it has started.

    Everything made at start (routes, the app, the users, caches) lives as long as the process:
    ``gc.freeze()`` takes it out of every later collection, and a young generation of 5,000
    objects instead of 700 lets a replay's short-lived records die by reference counting
    before a collection looks at them. Measured on the P2 benchmark's replays: the collector's
    time fell from 1.2 ms to 0.14 ms per replay. Process-wide, so never done by :func:`start`,
    which also runs inside a notebook's kernel: only by ``moat-nb sandbox``, ``make lab`` and
    the benchmarks' child sandboxes."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(SERVER_GC_THRESHOLD, middle, old)


def serve(
    *,
    port: int = DEFAULT_PORT,
    data: str | os.PathLike[str] | None = None,
    seed: int = 0,
    users: str | os.PathLike[str] | None = None,
    app: str | os.PathLike[str] | None = None,
    per_env: int = 500,
    host: str = "127.0.0.1",
    out: IO[str] | None = None,
    own_process: bool = False,
    **overrides: Any,
) -> int:
    """Start the sandbox, print :func:`banner`, run until Ctrl-C (or SIGTERM), stop cleanly.
    ``own_process``: the process is only this sandbox (``moat-nb sandbox``): :func:`settle_gc`."""
    out = out or sys.stdout
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (docker stop, kill) stops as cleanly as Ctrl-C does.
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        handle = start(
            port=port, data=data, seed=seed, users=users, app=app, per_env=per_env, host=host, **overrides
        )
        with handle:
            if own_process:
                settle_gc()
            print(banner(handle), file=out, flush=True)
            try:
                while not stop.wait(0.5):  # a timed wait, so that Ctrl-C is seen at once
                    if not handle.server.thread.is_alive():
                        print("the server stopped unexpectedly", file=sys.stderr)
                        return 1
            except KeyboardInterrupt:
                pass
            print("stopping ...", file=out, flush=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print("stopped.", file=out, flush=True)
    return 0


def add_sandbox_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``moat-nb sandbox`` to an argparse sub-parser set; it dispatches to :func:`run_sandbox`
    through ``args.func``."""
    parser = subparsers.add_parser(
        "sandbox",
        help="run the embedded Cameleer-compatible sandbox (server + agents + history)",
        description="Start the sandbox server and one agent per environment (dev, staging, prod), "
        "record a history on first start, print the URL and the users, and run until Ctrl-C.",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; others need non-default passwords)",
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="data folder (default ~/.cache/moat-nb/sandbox)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the recorded history (default 0)")
    parser.add_argument(
        "--users", type=Path, default=None, help="users file (TOML; default: the four default users)"
    )
    parser.add_argument(
        "--app",
        type=Path,
        default=None,
        help="folder of your own app: *.yaml routes and beans.py (default: orders)",
    )
    parser.add_argument(
        "--per-env",
        type=int,
        default=500,
        dest="per_env",
        help="recorded exchanges per environment on first start (default 500)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        dest="allowed_hosts",
        metavar="NAME",
        help="a host name the server also answers for (repeat; default: the loopback names and "
        "--host; other Host headers get 421, which keeps web pages out by DNS rebinding)",
    )
    parser.set_defaults(func=run_sandbox)
    return parser


def run_sandbox(args: argparse.Namespace) -> int:
    """``moat-nb sandbox``: exit 0 after a clean stop, 1 with a one-line error otherwise."""
    try:
        return serve(
            port=args.port,
            data=args.data,
            seed=args.seed,
            users=args.users,
            app=args.app,
            per_env=args.per_env,
            host=args.host,
            own_process=True,
            **({"allowed_hosts": tuple(args.allowed_hosts)} if args.allowed_hosts else {}),
        )
    except MoatError as exc:
        print(f"moat-nb sandbox: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:  # ValueError: ServerConfig's (an --allowed-host with a port)
        print(f"moat-nb sandbox: {exc}", file=sys.stderr)
        return 1
