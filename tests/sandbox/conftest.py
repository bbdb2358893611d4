"""Shared fixtures of the sandbox tests: one real sandbox per session, and logged-in users.

``sandbox`` is :func:`moat_nb.sandbox.start` on 127.0.0.1, port 0, in a temporary data folder,
with a small history (``per_env`` 30, seed 7): a real uvicorn server in a background thread and
three real agents (dev, staging, prod) talking to it over HTTP and SSE. Replay traces are cut
into several chunks (``chunk_processors`` 16), so the multi-chunk path runs in every replay.

``login(name)`` (and the ``admin``, ``operator``, ``prod_operator``, ``analyst`` fixtures) give an
``httpx.Client`` whose ``base_url`` is the API base (``/api/v1``) and that sends the user's access
token; ``user(name)`` does the same for a module that starts its own sandbox as ``sb``.
The ``tools`` fixture holds the helpers below (``wait_for`` polls, ``post_replay`` and
``wait_replay`` drive a replay over HTTP, ``user_client`` logs in to any sandbox, ...): test
modules get them from the fixture rather than by importing this file, which pytest does not
support across folders.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from moat_nb.sandbox import start
from moat_nb.sandbox.agent import AgentConfig
from moat_nb.sandbox.runner import SandboxHandle

SANDBOX_PER_ENV = 30
SANDBOX_SEED = 7
TERMINAL = frozenset({"COMPLETED", "ERROR", "TIMED_OUT", "ABORTED"})


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; return it. AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def user_client(handle: SandboxHandle, username: str, password: str | None = None) -> httpx.Client:
    """An ``httpx.Client`` on ``handle.api`` logged in as ``username`` (default password: the name)."""
    client = httpx.Client(base_url=handle.api, timeout=15.0)
    response = client.post("/auth/login", json={"username": username, "password": password or username})
    assert response.status_code == 200, response.text
    client.headers["Authorization"] = f"Bearer {response.json()['accessToken']}"
    return client


def post_replay(
    client: httpx.Client,
    source_exchange_id: str,
    *,
    reason: str = "test",
    key: str | None = None,
    **body: Any,
) -> httpx.Response:
    """``POST /replays`` with a fresh ``Idempotency-Key`` (or ``key``)."""
    return client.post(
        "/replays",
        json={"sourceExchangeId": source_exchange_id, "reason": reason, **body},
        headers={"Idempotency-Key": key or uuid.uuid4().hex},
    )


def wait_replay(
    client: httpx.Client, replay_id: str, timeout: float = 15.0, statuses: frozenset[str] = TERMINAL
) -> dict[str, Any]:
    """The replay once its status is one of ``statuses`` (default: any final status)."""

    def done() -> dict[str, Any] | None:
        response = client.get(f"/replays/{replay_id}")
        assert response.status_code == 200, response.text
        replay = response.json()
        return replay if replay["status"] in statuses else None

    return wait_for(done, timeout)


def source_exchange(client: httpx.Client, environment: str, status: str = "COMPLETED") -> dict[str, Any]:
    """One recorded (non-replay) execution of ``environment`` with ``status``."""
    response = client.post(
        "/search/executions",
        json={"environment": environment, "status": status, "isReplay": False, "limit": 1},
    )
    assert response.status_code == 200, response.text
    hits = response.json()["data"]
    assert hits, f"no {status} execution in {environment}"
    return hits[0]


class Tools:
    """The helpers above, for test modules (``def test_x(tools): tools.wait_for(...)``)."""

    wait_for = staticmethod(wait_for)
    user_client = staticmethod(user_client)
    post_replay = staticmethod(post_replay)
    wait_replay = staticmethod(wait_replay)
    source_exchange = staticmethod(source_exchange)
    TERMINAL = TERMINAL


@pytest.fixture(scope="session")
def tools() -> type[Tools]:
    return Tools


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    handle = start(
        data=tmp_path_factory.mktemp("sandbox"),
        per_env=SANDBOX_PER_ENV,
        seed=SANDBOX_SEED,
        agent_config=AgentConfig(chunk_processors=16),
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def login(sandbox: SandboxHandle) -> Iterator[Callable[[str], httpx.Client]]:
    """``login(name)``: a cached client logged in as that default user."""
    yield from _clients(sandbox)


@pytest.fixture
def admin(login: Callable[[str], httpx.Client]) -> httpx.Client:
    return login("admin")


@pytest.fixture
def operator(login: Callable[[str], httpx.Client]) -> httpx.Client:
    return login("operator")


@pytest.fixture
def prod_operator(login: Callable[[str], httpx.Client]) -> httpx.Client:
    return login("prod-operator")


@pytest.fixture
def analyst(login: Callable[[str], httpx.Client]) -> httpx.Client:
    return login("analyst")


@pytest.fixture(scope="module")
def user(sb: SandboxHandle) -> Iterator[Callable[[str], httpx.Client]]:
    """``user(name)``: a logged-in client of the module's own sandbox ``sb`` (modules that need
    their own users or timeouts define ``sb``), one per user name, closed with the module."""
    yield from _clients(sb)


def _clients(handle: SandboxHandle) -> Iterator[Callable[[str], httpx.Client]]:
    """A fixture's body: one logged-in client of ``handle`` per user name, closed at teardown."""
    clients: dict[str, httpx.Client] = {}

    def get(name: str) -> httpx.Client:
        if name not in clients:
            clients[name] = user_client(handle, name)
        return clients[name]

    yield get
    for client in clients.values():
        client.close()
