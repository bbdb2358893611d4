"""Issue 2 benchmark: route engine throughput for the orders intake route, per capture mode.

Target (issue 2): at least 1,000 exchanges/s in PROCESSOR mode on one core. The engine is pure
Python and single-threaded, so one process measures one core. Inputs are made before timing.
"""

from __future__ import annotations

import random
import time

from moat_nb.sandbox.apps.orders import APP
from moat_nb.sandbox.camel import RouteSet
from moat_nb.sandbox.camel.exchange import RunContext


def run(quick: bool) -> list[dict]:
    n = 200 if quick else 5000
    rows = []
    for version in ("v1", "v2"):
        routes = RouteSet.load(APP.versions[version], APP.beans, endpoints=APP.endpoints, version=version)
        rng = random.Random(7)
        payloads = [APP.sample_payload(rng, i) for i in range(n)]  # type: ignore[misc]
        for capture in ("PROCESSOR", "ROUTE"):
            context = RunContext(rng=random.Random(1))
            for p in payloads[:20]:  # warm up caches, first-call paths
                routes.run(APP.entry_route, p, capture=capture, context=context)
            processors = 0
            started, cpu_started = time.perf_counter(), time.process_time()
            for p in payloads:
                ex = routes.run(APP.entry_route, p, capture=capture, context=context)
                processors += len(ex.processors or ())
            elapsed = time.perf_counter() - started
            # CPU time of this (single-threaded) process is the "one core" figure; wall time is
            # also reported because it is what a user waits for on a loaded machine.
            cpu = time.process_time() - cpu_started
            rows.append(
                {
                    "id": "E1",
                    "what": f"engine {version} {capture}: exchanges/s ({processors / n:.0f} proc/exch)",
                    "value": n / cpu,
                    "unit": "exch/s cpu",
                    "wall": n / elapsed,
                    "target": ">=1000" if capture == "PROCESSOR" else "",
                }
            )
    return rows
