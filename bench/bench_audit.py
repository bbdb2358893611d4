"""Issue 4 benchmark P5 (DESIGN.md section 11): audit verification, events verified per second.

Target: at least 100k events/s, and 1M events verified in at most 10 s. The log is realistic: the
event mix of real replays (requested with a payload diff, started, completed with a result,
queries), one signed checkpoint every 100 events, as ``moat_nb.sandbox.audit_log`` writes them.
Measured: :func:`moat_nb.audit.verify` on events in memory (what ``moat-nb audit verify`` does
after reading a bundle), with the canonical-JSON path in use (orjson when installed) and, when
orjson is installed, with the stdlib path for comparison; and the server's check
(:func:`moat_nb.sandbox.audit_log.verify_database`: read the SQLite tables, then verify).
The 1M figure is measured in the full run and extrapolated from the measured rate in the quick
one. Times are CPU time of this single-threaded process (the "one core" figure); wall time is
reported too, as it is what a user waits for on a loaded machine.
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from moat_nb import audit
from moat_nb.model import format_time
from moat_nb.sandbox import audit_log

TENANT = "bench"
_ACTOR = {
    "username": "operator",
    "roles": ["OPERATOR"],
    "permissions": ["audit:read-own", "executions:read", "replay:modify", "replay:run"],
}


def _event(rng: random.Random, seq: int, at: datetime) -> dict[str, Any]:
    replay = f"replay-{rng.getrandbits(128):032x}"
    kind = seq % 4
    if kind == 1:
        action, outcome = "REPLAY_REQUESTED", "ACCEPTED"
        detail: dict[str, Any] = {
            "payloadDiff": [
                {
                    "op": "replace",
                    "path": "/body",
                    "value": json.dumps({"orderId": f"O-{seq}", "qty": seq % 9}),
                },
                {"op": "add", "path": "/headers/Authorization", "value": "[REDACTED:0123456789abcdef]"},
            ],
            "reason": "what if the customer were gold?",
            "idempotencyKeySha256": f"{rng.getrandbits(256):064x}",
            "targetAgent": "orders-dev-1",
        }
    elif kind == 2:
        action, outcome = "REPLAY_STARTED", "STARTED"
        detail = {"agentId": "orders-dev-1", "via": "chunk"}
    elif kind == 3:
        action, outcome = "REPLAY_COMPLETED", "SUCCESS"
        detail = {
            "replayStatus": "COMPLETED",
            "resultExecutionId": f"exec-{rng.getrandbits(64):016x}",
            "resultStatus": "COMPLETED",
            "outputBodySha256": f"{rng.getrandbits(256):064x}",
            "durationMs": round(rng.uniform(0.5, 80), 3),
            "processorCount": rng.randint(5, 60),
            "errorType": None,
            "errorMessage": None,
        }
    else:
        action, outcome = "AUDIT_QUERIED", "SUCCESS"
        detail = {"query": "events", "filters": {"limit": 100}, "scope": "tenant", "returned": 3, "total": 3}
    return {
        "seq": seq,
        "eventId": uuid.UUID(int=rng.getrandbits(128)).hex,
        "tenantId": TENANT,
        "occurredAt": format_time(at),
        "action": action,
        "actor": _ACTOR,
        "source": {"ip": "127.0.0.1", "userAgent": "python-httpx/0.28.1", "requestId": None, "client": None},
        "target": {
            "replayId": replay,
            "sourceExchangeId": f"ex-dev-{seq % 500}",
            "routeId": "order-intake",
            "environment": "dev",
        },
        "detail": detail,
        "outcome": outcome,
    }


def build_log(n: int, seed: int = 5) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """``n`` chained events of one tenant, a checkpoint every 100 and at the head, the key."""
    rng = random.Random(seed)
    key = Ed25519PrivateKey.from_private_bytes(bytes(rng.getrandbits(8) for _ in range(32)))
    kid = audit.key_id_for(key)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []
    prev = audit.genesis_hash(TENANT)
    for seq in range(1, n + 1):
        event = _event(rng, seq, start + timedelta(milliseconds=37 * seq))
        event["prevHash"] = prev
        event["hash"] = prev = audit.event_hash(event, prev)
        events.append(event)
        if seq % audit_log.CHECKPOINT_INTERVAL == 0 or seq == n:
            checkpoints.append(audit.sign_checkpoint(key, kid, TENANT, seq, prev, event["occurredAt"]))
    return events, checkpoints, {kid: audit.public_key_b64(key)}


@contextlib.contextmanager
def _stdlib_json() -> Iterator[None]:
    """The canonical-JSON path without orjson, for comparison in the same run."""
    saved = audit.orjson
    audit.orjson = None
    try:
        yield
    finally:
        audit.orjson = saved


def _timed(fn: Any) -> tuple[float, float, Any]:
    started, cpu_started = time.perf_counter(), time.process_time()
    result = fn()
    return time.process_time() - cpu_started, time.perf_counter() - started, result


def _verify_rate(
    events: list[dict[str, Any]], cps: list[dict[str, Any]], keys: dict[str, str]
) -> tuple[float, float]:
    """(CPU, wall) seconds of one verify, best of two (the first warms caches)."""
    best: tuple[float, float] | None = None
    for _ in range(2):
        cpu, wall, result = _timed(lambda: audit.verify(events, cps, keys, tenant_id=TENANT))
        if not result.ok:
            raise AssertionError(f"the benchmark log does not verify: {result.message}")
        if best is None or cpu < best[0]:
            best = (cpu, wall)
    assert best is not None
    return best


def _database(path: Path, events: list[dict[str, Any]], cps: list[dict[str, Any]]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN")
        audit_log.create_tables(conn)
        conn.executemany(
            f"INSERT INTO audit_events ({audit_log.AUDIT_COLUMNS}) VALUES ({', '.join('?' * 13)})",
            (
                (
                    e["tenantId"],
                    e["seq"],
                    e["eventId"],
                    e["occurredAt"],
                    e["action"],
                    audit_log.dumps(e["actor"]),
                    audit_log.dumps(e["source"]),
                    audit_log.dumps(e["target"]),
                    audit_log.dumps(e["detail"]),
                    e["outcome"],
                    e["prevHash"],
                    e["hash"],
                    e["target"]["replayId"],
                )  # fmt: skip
                for e in events
            ),
        )
        conn.executemany(
            "INSERT INTO audit_checkpoints (tenant_id, seq, hash, at, key_id, signature) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            ((c["tenantId"], c["seq"], c["hash"], c["at"], c["keyId"], c["signature"]) for c in cps),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _row(what: str, n: int, cpu: float, wall: float, path: str) -> dict[str, Any]:
    return {
        "id": "P5",
        "what": f"audit verify, {what} ({n:,} events, {path})",
        "value": n / cpu,
        "unit": "events/s cpu",
        "wall": n / wall,
        "target": ">=100000",
    }


def run(quick: bool) -> list[dict[str, Any]]:
    n = 10_000 if quick else 100_000
    path = "orjson" if audit.orjson is not None else "stdlib json"
    events, cps, keys = build_log(n)
    rows: list[dict[str, Any]] = []

    cpu, wall = _verify_rate(events, cps, keys)
    rows.append(_row("in memory", n, cpu, wall, path))
    rate = n / cpu
    if audit.orjson is not None:
        with _stdlib_json():
            s_cpu, s_wall = _verify_rate(events, cps, keys)
        rows.append(_row("in memory", n, s_cpu, s_wall, "stdlib json, without orjson"))

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "audit.db"
        _database(db, events, cps)
        d_cpu, d_wall, result = _timed(lambda: audit_log.verify_database(db, TENANT, None, keys))
        if not result.ok:
            raise AssertionError(f"the benchmark database does not verify: {result.message}")
        rows.append(_row("server: SQLite read + verify", n, d_cpu, d_wall, path))

    if quick:
        rows.append(
            {
                "id": "P5",
                "what": f"audit verify of 1M events, extrapolated from {n:,} ({path})",
                "value": 1_000_000 / rate,
                "unit": "s cpu",
                "target": "<=10",
            }
        )
    else:
        del events, cps
        big, big_cps, big_keys = build_log(1_000_000, seed=6)
        cpu, wall, result = _timed(lambda: audit.verify(big, big_cps, big_keys, tenant_id=TENANT))
        if not result.ok:
            raise AssertionError(f"the 1M log does not verify: {result.message}")
        rows.append(
            {
                "id": "P5",
                "what": f"audit verify of 1M events, measured ({path})",
                "value": cpu,
                "unit": "s cpu",
                "wall": wall,
                "target": "<=10",
            }
        )
    return rows


if __name__ == "__main__":
    for r in run(quick=True):
        print(r)
