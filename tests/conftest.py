"""Fixtures of the client tests (tests/test_client.py, tests/test_stream.py): one real sandbox.

``client_sandbox`` is :func:`moat_nb.sandbox.start` on 127.0.0.1, port 0, in a temporary data
folder, with a history of 40 exchanges per environment (120 in all): a real uvicorn server and
three real agents. The client talks to it over loopback HTTP, as to any Cameleer server.
(tests/sandbox/conftest.py has the sandbox tests' own fixture; the names differ on purpose.)

``sandbox_processes`` starts ``moat-nb sandbox`` in processes of their own, for the tests that
kill a platform (SIGKILL) under a client and start it again on the same port and data.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
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


class SandboxProcesses:
    """``start(data, app=None, per_env=1)``: ``moat-nb sandbox`` as a user starts it, in a
    process of its own on :attr:`port` (the same for every start, so that a client follows it
    through a restart); returns the process once it has printed its banner (its history is in
    by then: the API answers before that)."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.started: list[subprocess.Popen[str]] = []

    def start(self, data: Path, app: Path | None = None, per_env: int = 1) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "moat_nb.cli", "sandbox", "--data", str(data), "--port", str(self.port)]
        argv += ["--per-env", str(per_env)] + (["--app", str(app)] if app is not None else [])
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.started.append(proc)
        assert proc.stdout is not None
        printed = []
        for line in proc.stdout:  # pytest's timeout bounds a sandbox that neither starts nor fails
            printed.append(line)
            if line.startswith("Press Ctrl-C to stop."):
                # Drained from here on, so that its logs can never fill the pipe and stop it.
                threading.Thread(target=proc.stdout.read, daemon=True).start()
                return proc
        raise AssertionError(f"the sandbox exited {proc.wait()}: {''.join(printed)[-2000:]}")

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.started:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:  # one that does not stop leaves none of the others
                proc.kill()
                proc.wait()


@pytest.fixture
def sandbox_processes() -> Iterator[SandboxProcesses]:
    processes = SandboxProcesses()
    try:
        yield processes
    finally:
        processes.close()


#: A route whose replays wait in a delay step (``{delay_ms}``): in flight long enough to lose
#: the platform, or to stop following them; recorded traffic does not wait.
PACED_ROUTE = """\
- route:
    id: paced-intake
    from:
      uri: "platform-http:/paced"
      steps:
        - choice:
            id: replayed
            when:
              - simple: "${{header.X-Cameleer-Replay}} != null"
                steps:
                  - delay:
                      id: wait
                      constant: "{delay_ms}"
        - setBody:
            id: answer
            simple: "done ${{body}}"
"""

PACED_BEANS = """\
def sample_payload(rng, i):
    return {"headers": {}, "body": f"order {i}", "properties": {}}
"""


@pytest.fixture
def paced_app(tmp_path: Path) -> Callable[[int], Path]:
    """``paced_app(delay_ms)``: the folder of an app (``moat-nb sandbox --app``) of
    :data:`PACED_ROUTE`, whose replays wait ``delay_ms`` in a delay step."""

    def make(delay_ms: int) -> Path:
        app = tmp_path / f"paced-app-{delay_ms}"
        app.mkdir(exist_ok=True)
        (app / "routes.yaml").write_text(PACED_ROUTE.format(delay_ms=delay_ms), encoding="utf-8")
        (app / "beans.py").write_text(PACED_BEANS, encoding="utf-8")
        return app

    return make


@pytest.fixture
def home_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """``(home, work)``: a fresh home folder (``HOME``) and another folder, the working one, so
    that a path given as ``~/...`` can be told from one made as a folder named ``~``."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return home, work
