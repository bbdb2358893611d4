"""P3 (DESIGN.md section 11): regression replay of 1,000 exchanges with diffs, concurrent vs
sequential, rows/s.

Target: the rate of :func:`moat_nb.batch.regression` at concurrency 8 >= 4 x its rate at
concurrency 1, both measured in this run against the same sandbox. Each row is a real replay of
a prod (v1, ROUTE-captured) exchange on staging (v2): ``POST /replays``, the trace stream to
``end``, the original's detail, the diff with noise rules, the verdict. The noise rules are
calibrated once beforehand (:func:`moat_nb.diff.calibrate_noise`) and handed to both runs as
``ignore=``, so that neither run's time includes calibration replays.

The sandbox runs in a child process (``multiprocessing``, spawn): a platform is another process
(another machine, in production), and a sandbox in this process would share one GIL with the
client and measure the two together. The sequential rate is measured on the first
``min(N, 100)`` exchanges (a rate; 1,000 sequential replays would only take longer).
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

from moat_nb.batch import regression
from moat_nb.client import connect
from moat_nb.diff import calibrate_noise


def _serve(data: str, per_env: int, seed: int, conn: Any) -> None:
    """The child process: a sandbox until the parent says stop."""
    from moat_nb.sandbox import start

    handle = start(data=Path(data), per_env=per_env, seed=seed)
    try:
        conn.send(handle.url)
        conn.recv()  # anything (or EOF) means stop
    except EOFError:
        pass
    finally:
        handle.stop()


def run(quick: bool) -> list[dict]:
    n = 30 if quick else 1000
    n_seq = 10 if quick else 100
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        parent, child = context.Pipe()
        server = context.Process(target=_serve, args=(tmp, n, 7, child), daemon=True)
        server.start()
        try:
            if not parent.poll(600):
                raise RuntimeError("the sandbox did not start within 600 s")
            url = parent.recv()
            platform = connect(url, username="admin", password="admin")
            sources = platform.executions(environment="prod", is_replay=False, limit=n).to_pandas()
            completed = sources[sources.status == "COMPLETED"]
            rules = calibrate_noise(platform, completed.exchange_id.iloc[0], target_environment="staging")

            def timed(rows: Any, concurrency: int) -> tuple[float, Any]:
                started = time.perf_counter()
                result = regression(
                    platform,
                    rows,
                    "staging",
                    rules,
                    reason=f"P3 benchmark, concurrency {concurrency}",
                    calibrate=False,
                    concurrency=concurrency,
                    progress=False,
                )
                return len(result) / (time.perf_counter() - started), result

            sequential, _ = timed(sources.head(n_seq), 1)
            concurrent, result = timed(sources, 8)
            platform.close()
        finally:
            parent.send("stop")
            server.join(60)
            if server.is_alive():
                server.kill()
    verdicts = result.verdicts
    return [
        {
            "id": "P3",
            "what": f"regression, sequential (concurrency 1, {n_seq} exchanges)",
            "value": sequential,
            "unit": "rows/s",
        },
        {
            "id": "P3",
            "what": f"regression, concurrency 8 ({len(result)} exchanges, with diffs)",
            "value": concurrent,
            "unit": "rows/s",
            "baseline": sequential,
            "ratio": concurrent / sequential,
            "target": ">= 4x",
            "verdicts": dict(verdicts),
        },
    ]
