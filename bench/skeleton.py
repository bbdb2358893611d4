"""P2's floor: the replay protocol's HTTP exchanges on this machine's stack, with no replay work.

A replay round trip (DESIGN.md section 11, P2) is five exchanges over loopback, whatever the
platform does inside them: the notebook's ``POST /replays``; the signed command down the
agent's SSE channel; the agent's ``POST /data/chunks`` with the trace (an orders replay: 55
processor records, ~140 KB of JSON); its ack; the notebook's ``GET /replays/{id}/events``
until ``end``. This skeleton makes those exchanges with the sandbox's stack and the same
sizes — uvicorn + Starlette + sse-starlette serving, an httpx + httpx-sse agent in the server's
process, as the sandbox's agents are — and does nothing else: no checks, no signatures, no
engine, no redaction, no SQLite, no audit. The trace is encoded once, parsed once with orjson,
and its events are orjson-encoded once.

Its round trip is therefore a floor under any implementation of the protocol on this stack and
machine: what the "+ 15 ms" of P2 must also pay for, measured in the same run as P2.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from httpx_sse import connect_sse


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(trace: bytes, command: bytes, conn: Any) -> None:
    """The child: a skeleton server and its agent on one event loop, until the parent says stop."""
    import uvicorn
    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    commands: asyncio.Queue[bytes] = asyncio.Queue()
    events: dict[str, list[tuple[str, bytes]]] = {}
    arrived: dict[str, asyncio.Event] = {}

    def json_response(value: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(value), status, media_type="application/json")

    async def post_replay(request: Request) -> Response:
        body = orjson.loads(await request.body())
        replay_id = f"replay-{uuid.uuid4().hex}"
        events[replay_id] = []
        arrived[replay_id] = asyncio.Event()
        await commands.put(command.replace(b"REPLAY_ID", replay_id.encode()))
        return json_response({"replayId": replay_id, "status": "PENDING", "source": body}, 201)

    async def channel(request: Request) -> EventSourceResponse:
        async def stream() -> AsyncIterator[dict[str, Any]]:
            while True:
                yield {"event": "replay", "data": (await commands.get()).decode()}

        return EventSourceResponse(stream())

    async def post_chunk(request: Request) -> Response:
        chunk = orjson.loads(await request.body())
        replay_id = chunk["replayId"]
        stored = events[replay_id]
        stored.extend(("processor", orjson.dumps(p)) for p in chunk["processors"])
        stored.append(("end", orjson.dumps({"replayId": replay_id, "status": "COMPLETED"})))
        arrived[replay_id].set()
        return json_response({"executionId": chunk["executionId"]}, 202)

    async def ack(request: Request) -> Response:
        orjson.loads(await request.body())
        return json_response({"ok": True})

    async def replay_events(request: Request) -> EventSourceResponse:
        replay_id = request.path_params["replay_id"]

        async def stream() -> AsyncIterator[bytes]:
            await arrived[replay_id].wait()
            for i, (name, data) in enumerate(events.pop(replay_id), start=1):
                # Framed here, as the sandbox's trace stream frames them (one data line: JSON
                # from orjson has no newline), rather than by sse-starlette's slower encoder.
                yield b"id: %d\r\nevent: %s\r\ndata: %s\r\n\r\n" % (i, name.encode(), data)
            del arrived[replay_id]

        return EventSourceResponse(stream())

    app = Starlette(
        routes=[
            Route("/replays", post_replay, methods=["POST"]),
            Route("/channel", channel),
            Route("/chunks", post_chunk, methods=["POST"]),
            Route("/ack", ack, methods=["POST"]),
            Route("/replays/{replay_id}/events", replay_events),
        ]
    )
    # Bound as the sandbox's ServerThread binds (uvicorn's own socket, which asyncio sets
    # TCP_NODELAY on; a socket made by hand with proto 0 is left to Nagle and delayed ACKs).
    # The sandbox's loop and HTTP parser (uvloop and httptools where installed).
    from moat_nb.sandbox.server import _fast_stack

    new_loop, http = _fast_stack()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", http=http)
    )
    url = ""

    async def agent() -> None:
        # The sandbox agent's path without its work: read a command, post the trace, ack.
        from httpx_sse import aconnect_sse

        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            async with aconnect_sse(client, "GET", "/channel") as source:
                async for event in source.aiter_sse():
                    replay_id = orjson.loads(event.data)["replayId"]
                    body = trace.replace(b"REPLAY_ID", replay_id.encode())
                    await client.post("/chunks", content=body, headers={"Content-Type": "application/json"})
                    await client.post("/ack", json={"status": "SUCCESS", "message": "ran", "data": None})

    async def main() -> None:
        nonlocal url
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        running = asyncio.create_task(agent())
        conn.send(url)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        running.cancel()
        server.should_exit = True
        await serving

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(main())


def _orders_trace() -> tuple[bytes, bytes]:
    """An orders replay's chunk as the sandbox agent sends it, and a replay command of the size
    the sandbox signs (``REPLAY_ID`` stands for the replay's id in both)."""
    from moat_nb.model import Payload
    from moat_nb.sandbox.agent import encoded_chunks
    from moat_nb.sandbox.apps.orders import APP
    from moat_nb.sandbox.camel import RouteSet
    from moat_nb.sandbox.camel.exchange import RunContext
    from moat_nb.sandbox.replays import recorded_replies
    from moat_nb.sandbox.traffic import generate, load_routesets

    source = next(
        iter(generate(APP, load_routesets(APP), per_env=1, seed=3, environments=["staging"]))
    ).execution
    assert source is not None
    routes = RouteSet.load(APP.versions["v2"], APP.beans, endpoints=APP.endpoints, version="v2")
    payload = Payload(source.input_headers or {}, source.input_body, source.input_properties or {})
    run = routes.run(
        APP.entry_route, payload, capture="PROCESSOR", context=RunContext(), replay_id="REPLAY_ID"
    )
    ((_, trace),) = encoded_chunks(run)
    command = orjson.dumps(
        {
            "type": "replay",
            "commandId": uuid.uuid4().hex,
            "replayId": "REPLAY_ID",
            "sourceExchangeId": source.exchange_id,
            "routeId": source.route_id,
            "modifiedPayload": payload.to_wire(),
            "stubReplies": recorded_replies(source),
            "signature": "x" * 88,  # an Ed25519 signature's size in base64
        }
    )
    return trace, command


def run(quick: bool) -> dict[str, Any]:
    """Round trips through the skeleton: p50 wall (ms), its server process's CPU per round trip,
    and the trace's size."""
    n = 20 if quick else 200
    trace, command = _orders_trace()
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(trace, command, child), daemon=True)
    process.start()
    try:
        if not parent.poll(120):
            raise RuntimeError("the skeleton server did not start within 120 s")
        url = parent.recv()
        assert process.pid is not None
        walls, cpus = [], []
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(n + 5):
                t0, c0 = time.perf_counter(), _proc_cpu(process.pid)
                replay = client.post("/replays", json={"sourceExchangeId": "ex-1", "reason": "floor"}).json()
                with connect_sse(client, "GET", f"/replays/{replay['replayId']}/events") as source:
                    for event in source.iter_sse():
                        if event.event == "end":
                            break
                if i >= 5:  # the first ones open connections
                    walls.append((time.perf_counter() - t0) * 1000)
                    cpus.append((_proc_cpu(process.pid) - c0) * 1000)
    finally:
        parent.send("stop")
        process.join(30)
        if process.is_alive():
            process.kill()
    return {
        "p50_ms": statistics.median(walls),
        "cpu_ms": statistics.fmean(cpus),
        "trace_bytes": len(trace),
    }


if __name__ == "__main__":
    print(run(quick=False))
