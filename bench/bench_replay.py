"""P2 (DESIGN.md section 11): replay round trip, request -> `end` event, against the engine time.

Target: p50 round trip <= in-process engine time for the same exchange + 15 ms on loopback.
The round trip is what a notebook waits for: ``POST /replays`` (authorisation, audit event,
signed command over the agent's SSE channel), the agent's run (the same engine), its chunks to
``POST /data/chunks`` (redaction, storage), and the trace stream until ``end``. The baseline is
``RouteSet.run`` of the same effective payload in this process, PROCESSOR capture, measured in
the same run. Bare httpx + httpx-sse, so that the figure is the platform's, not the client's.

The sandbox runs in a child process (:mod:`bench.platform`): a notebook and its platform are two
processes, and one process would make the client and the platform take turns on one lock.

Also measured in the same run: the protocol's floor on this stack (:mod:`bench.skeleton`), the
same five exchanges with the same sizes and no replay work, so that the table says how much of
the round trip is the sandbox's own work.
"""

from __future__ import annotations

import statistics
import time
import uuid

import httpx
from httpx_sse import connect_sse

from moat_nb.model import Execution, Payload
from moat_nb.sandbox.apps.orders import APP
from moat_nb.sandbox.camel import RouteSet
from moat_nb.sandbox.camel.exchange import RunContext

from . import skeleton
from .platform import child_sandbox


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(quick: bool) -> list[dict]:
    n = 10 if quick else 100
    with child_sandbox(per_env=10, seed=3) as sandbox:
        client = httpx.Client(base_url=sandbox.api, timeout=30)
        token = client.post("/auth/login", json={"username": "operator", "password": "operator"}).json()
        client.headers["Authorization"] = f"Bearer {token['accessToken']}"
        hits = client.post(
            "/search/executions",
            json={"environment": "staging", "status": "COMPLETED", "isReplay": False, "limit": 1},
        ).json()["data"]
        source = Execution.from_wire(client.get(f"/executions/{hits[0]['executionId']}").json())

        # Baseline: the same exchange through the same engine, in this process.
        routes = RouteSet.load(APP.versions["v2"], APP.beans, endpoints=APP.endpoints, version="v2")
        payload = Payload(source.input_headers or {}, source.input_body, source.input_properties or {})
        engine_ms = []
        for _ in range(max(n, 20)):
            t0 = time.perf_counter()
            routes.run(APP.entry_route, payload, capture="PROCESSOR", replay_of=source, context=RunContext())
            engine_ms.append((time.perf_counter() - t0) * 1000)

        round_trip_ms = []
        cpu_ms = []
        client_ms = []
        for _ in range(n + 2):
            t0, c0, s0 = time.perf_counter(), time.process_time(), sandbox.cpu_seconds()
            replay = client.post(
                "/replays",
                json={"sourceExchangeId": source.exchange_id, "reason": "P2 benchmark"},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            ).json()
            with connect_sse(client, "GET", f"/replays/{replay['replayId']}/events") as events:
                for event in events.iter_sse():
                    if event.event == "end":
                        break
            round_trip_ms.append((time.perf_counter() - t0) * 1000)
            cpu_ms.append((sandbox.cpu_seconds() - s0) * 1000)
            client_ms.append((time.process_time() - c0) * 1000)
        round_trip_ms = round_trip_ms[2:]  # the first two warm up connections and caches
        cpu_ms = cpu_ms[2:]
        client_ms = client_ms[2:]
        client.close()

    engine_p50 = statistics.median(engine_ms)
    p50 = statistics.median(round_trip_ms)
    floor = skeleton.run(quick)
    return [
        {
            "id": "P2",
            "what": "in-process engine time, same exchange (p50)",
            "value": engine_p50,
            "unit": "ms",
        },
        {
            "id": "P2",
            "what": "replay round trip request -> end (p50)",
            "value": p50,
            "unit": "ms",
            "baseline": engine_p50,
            "overhead_ms": p50 - engine_p50,
            "target": "<= engine + 15 ms",
        },
        {
            "id": "P2",
            "what": "replay round trip request -> end (p99)",
            "value": _percentile(round_trip_ms, 0.99),
            "unit": "ms",
        },
        {
            # The floor under any implementation on this stack (bench/skeleton.py): the same five
            # exchanges and sizes, no replay work. What P2's round trip spends above it is ours.
            "id": "P2",
            "what": "protocol skeleton round trip, same exchanges, no work (p50)",
            "value": floor["p50_ms"],
            "unit": "ms",
            "cpu_ms": floor["cpu_ms"],
            "trace_bytes": floor["trace_bytes"],
        },
        {
            # The sandbox's CPU per replay (server and agents; /proc ticks are 10 ms, so this is
            # a mean, not a p50): what bounds P3's concurrency gain.
            "id": "P2",
            "what": "sandbox CPU per replay (server + agent, mean)",
            "value": statistics.fmean(cpu_ms),
            "unit": "ms",
        },
        {
            "id": "P2",
            "what": "client CPU per replay (httpx + httpx-sse, mean)",
            "value": statistics.fmean(client_ms),
            "unit": "ms",
        },
    ]
