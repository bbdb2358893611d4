"""P3 (DESIGN.md section 11): regression replay of 1,000 exchanges with diffs, concurrent vs
sequential, rows/s.

Target: the rate of :func:`moat_nb.batch.regression` at concurrency 8 >= 4 x its rate at
concurrency 1, both measured in this run against the same sandbox. Each row is a real replay of
a prod (v1, ROUTE-captured) exchange on staging (v2): ``POST /replays``, the trace stream to
``end``, the original's detail, the diff with noise rules, the verdict. The noise rules are
calibrated once beforehand (:func:`moat_nb.diff.calibrate_noise`) and handed to both runs as
``ignore=``, so that neither run's time includes calibration replays.

The sandbox runs in a child process (:mod:`bench.platform`): a platform is another process
(another machine, in production), and a sandbox in this process would share one GIL with the
client and measure the two together. The sequential rate is measured on the first
``min(N, 100)`` exchanges (a rate; 1,000 sequential replays would only take longer).
"""

from __future__ import annotations

import time
from typing import Any

from moat_nb.batch import regression
from moat_nb.client import connect
from moat_nb.diff import calibrate_noise

from .platform import child_sandbox


def run(quick: bool) -> list[dict]:
    n = 30 if quick else 1000
    n_seq = 10 if quick else 100
    with child_sandbox(per_env=n, seed=7) as sandbox:
        platform = connect(sandbox.url, username="admin", password="admin")
        sources = platform.executions(environment="prod", is_replay=False, limit=n).to_pandas()
        completed = sources[sources.status == "COMPLETED"]
        rules = calibrate_noise(platform, completed.exchange_id.iloc[0], target_environment="staging")

        def timed(rows: Any, concurrency: int) -> tuple[float, float, float, Any]:
            started, client0, server0 = time.perf_counter(), time.process_time(), sandbox.cpu_seconds()
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
            n_rows = len(result)
            return (
                n_rows / (time.perf_counter() - started),
                (time.process_time() - client0) * 1000 / n_rows,
                (sandbox.cpu_seconds() - server0) * 1000 / n_rows,
                result,
            )

        sequential, client_ms, server_ms, _ = timed(sources.head(n_seq), 1)
        concurrent, _, _, result = timed(sources, 8)
        platform.close()
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
        {
            # Where a sequential row's time goes. Both sides are busy nearly all the time, so on
            # this machine's cores concurrency can gain at most (client + sandbox) / the larger.
            "id": "P3",
            "what": "sequential row: notebook CPU (replay, fetch, diff)",
            "value": client_ms,
            "unit": "ms/row",
        },
        {
            "id": "P3",
            "what": "sequential row: sandbox CPU (server + agent)",
            "value": server_ms,
            "unit": "ms/row",
        },
    ]
