"""Fixtures of the client tests (tests/test_client.py, tests/test_stream.py): one real sandbox.

``client_sandbox`` is :func:`moat_nb.sandbox.start` on 127.0.0.1, port 0, in a temporary data
folder, with a history of 40 exchanges per environment (120 in all): a real uvicorn server and
three real agents. The client talks to it over loopback HTTP, as to any Cameleer server.
(tests/sandbox/conftest.py has the sandbox tests' own fixture; the names differ on purpose.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

CLIENT_SANDBOX_PER_ENV = 40
CLIENT_SANDBOX_SEED = 11


@pytest.fixture(scope="session")
def client_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from moat_nb.sandbox import start

    handle = start(
        data=tmp_path_factory.mktemp("client-sandbox"),
        per_env=CLIENT_SANDBOX_PER_ENV,
        seed=CLIENT_SANDBOX_SEED,
    )
    try:
        yield handle
    finally:
        handle.stop()


def _platform(handle: Any, user: str) -> Any:
    from moat_nb.client import connect

    return connect(handle.url, username=user, password=user)


@pytest.fixture(scope="session")
def op_platform(client_sandbox: Any) -> Iterator[Any]:
    """A logged-in Platform for the default user ``operator`` (OPERATOR: replay, no prod)."""
    p = _platform(client_sandbox, "operator")
    yield p
    p.close()


@pytest.fixture(scope="session")
def admin_platform(client_sandbox: Any) -> Iterator[Any]:
    """``admin``: ADMIN + replay:prod."""
    p = _platform(client_sandbox, "admin")
    yield p
    p.close()


@pytest.fixture(scope="session")
def analyst_platform(client_sandbox: Any) -> Iterator[Any]:
    """``analyst``: VIEWER (reads history, cannot replay)."""
    p = _platform(client_sandbox, "analyst")
    yield p
    p.close()
