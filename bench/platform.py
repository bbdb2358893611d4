"""A sandbox in a child process, for the benchmarks that measure the platform from outside.

A platform is another process (another machine, in production). A sandbox started in the
benchmark's own process shares one interpreter lock with the client, so the client's work and
the platform's would be measured together and neither could use the second core; P2 and P3
(DESIGN.md section 11) therefore talk to a sandbox started here, over loopback, like a notebook.
The child reports its CPU time so that a benchmark can say where a replay's time goes.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _serve(data: str, per_env: int, seed: int, conn: Any) -> None:
    """The child process: a sandbox until the parent says stop."""
    from moat_nb.sandbox import start
    from moat_nb.sandbox.runner import settle_gc

    handle = start(data=Path(data), per_env=per_env, seed=seed)
    settle_gc()  # as `moat-nb sandbox` does in its own process
    try:
        conn.send(handle.url)
        conn.recv()  # anything (or EOF) means stop
    except EOFError:
        pass
    finally:
        handle.stop()


@dataclass
class ChildSandbox:
    url: str
    pid: int

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the sandbox process so far (Linux ``/proc``)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def child_sandbox(per_env: int, seed: int) -> Iterator[ChildSandbox]:
    """Start ``moat_nb.sandbox.start(per_env=, seed=)`` in a spawned process; stop it after."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        parent, child = context.Pipe()
        server = context.Process(target=_serve, args=(tmp, per_env, seed, child), daemon=True)
        server.start()
        try:
            if not parent.poll(600):
                raise RuntimeError("the sandbox did not start within 600 s")
            assert server.pid is not None
            yield ChildSandbox(parent.recv(), server.pid)
        finally:
            parent.send("stop")
            server.join(60)
            if server.is_alive():
                server.kill()
