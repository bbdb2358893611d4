"""The replay tables in the store's SQLite file (DESIGN.md sections 4, 5 and 7;
reference/security.md sections 1.3, 4.3 and 5).

Tables (created with ``IF NOT EXISTS`` by :func:`create_tables`, in the store's file so that a
replay's row, its events, its idempotency claim and its audit events commit together)::

    replays           one row per replay: the Replay resource's fields, commandId, result JSON
    replay_events     (replayId, id 1..n, event, data JSON): the stored SSE trace events
                      (a ``processor`` event's data: a reference to its record, PROCESSOR_REF)
    idempotency_keys  (tenantId, principal, key) -> fingerprint, replayId, expiry (24 h)

The audit tables (``audit_events``, ``audit_checkpoints``) are :mod:`.audit_log`'s; they live in
the same file so that a replay's state change and its audit event commit together, and
:func:`create_tables` creates them too (a Replay lists its ``auditSeqs``).

Queries: :func:`select_replay`, :func:`list_replays`, :func:`emit_events`, :func:`events_after`,
:func:`last_event`.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..errors import ValidationError
from ..model import REPLAY_STATUSES
from . import audit_log
from .encoder import dumps_text

__all__ = [
    "REPLAY_COLUMNS",
    "SCHEMA",
    "create_tables",
    "dumps",
    "replay_from_row",
    "replay_resource",
    "select_replay",
    "list_replays",
    "emit_events",
    "events_after",
    "parse_processor_ref",
    "processor_ref",
    "processor_refs",
    "last_event",
    "find_key",
    "claim_key",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS replays (
    replay_id                 TEXT PRIMARY KEY,
    tenant_id                 TEXT NOT NULL,
    command_id                TEXT NOT NULL UNIQUE,
    source_exchange_id        TEXT NOT NULL,
    source_execution_id       TEXT NOT NULL,
    source_environment        TEXT,
    target_environment        TEXT NOT NULL,
    agent_id                  TEXT NOT NULL,
    route_id                  TEXT NOT NULL,
    status                    TEXT NOT NULL,
    requested_by              TEXT NOT NULL,
    requested_at              TEXT NOT NULL,
    requested_ms              INTEGER NOT NULL,
    started_at                TEXT,
    finished_at               TEXT,
    reason                    TEXT NOT NULL,
    idempotency_key           TEXT NOT NULL,
    client                    TEXT,
    payload_diff              TEXT NOT NULL,
    effective_payload_sha256  TEXT NOT NULL,
    result_execution_id       TEXT,
    result                    TEXT
);
CREATE INDEX IF NOT EXISTS replays_source ON replays (source_exchange_id, requested_ms);
CREATE INDEX IF NOT EXISTS replays_requester ON replays (requested_by, requested_ms);
CREATE INDEX IF NOT EXISTS replays_status ON replays (status);
CREATE TABLE IF NOT EXISTS replay_events (
    replay_id  TEXT NOT NULL,
    id         INTEGER NOT NULL,
    event      TEXT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (replay_id, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id    TEXT NOT NULL,
    principal    TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    replay_id    TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, principal, key)
);
"""

REPLAY_COLUMNS = (
    "replay_id", "command_id", "source_exchange_id", "source_execution_id", "source_environment",
    "target_environment", "agent_id", "route_id", "status", "requested_by", "requested_at",
    "started_at", "finished_at", "reason", "idempotency_key", "client", "payload_diff",
    "effective_payload_sha256", "result_execution_id", "result",
)  # fmt: skip


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements; ``sqlite3.complete_statement`` keeps a trigger's
    ``BEGIN ... END`` whole (``executescript`` would commit the open transaction)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                yield buf
            buf = ""


#: Compact one-line JSON: SSE data must not contain raw line breaks (json escapes them).
dumps = audit_log.dumps


def create_tables(conn: sqlite3.Connection) -> None:
    """Create the replay tables, and the audit tables they refer to, if absent (inside the
    caller's transaction)."""
    for statement in _statements(SCHEMA):
        conn.execute(statement)
    audit_log.create_tables(conn)


def replay_from_row(conn: sqlite3.Connection, tenant: str, row: Sequence[Any]) -> dict[str, Any]:
    """The Replay resource (section 4) from a row of :data:`REPLAY_COLUMNS`, with its audit seqs."""
    seqs = [
        s
        for (s,) in conn.execute(
            "SELECT seq FROM audit_events WHERE replay_id = ? AND tenant_id = ? ORDER BY seq",
            (row[0], tenant),
        )
    ]
    return replay_resource(row, seqs)


def replay_resource(row: Sequence[Any], seqs: list[int]) -> dict[str, Any]:
    """The Replay resource from a row of :data:`REPLAY_COLUMNS` and its audit seqs (pure)."""
    r = dict(zip(REPLAY_COLUMNS, row, strict=True))
    client = r["client"]
    return {
        "replayId": r["replay_id"],
        "sourceExchangeId": r["source_exchange_id"],
        "sourceExecutionId": r["source_execution_id"],
        "sourceEnvironment": r["source_environment"],
        "targetEnvironment": r["target_environment"],
        "agentId": r["agent_id"],
        "routeId": r["route_id"],
        "status": r["status"],
        "requestedBy": r["requested_by"],
        "requestedAt": r["requested_at"],
        "startedAt": r["started_at"],
        "finishedAt": r["finished_at"],
        "reason": r["reason"],
        "idempotencyKey": r["idempotency_key"],
        "client": None if client is None else json.loads(client),
        "payloadDiff": json.loads(r["payload_diff"]),
        "effectivePayloadSha256": r["effective_payload_sha256"],
        "resultExecutionId": r["result_execution_id"],
        "result": None if r["result"] is None else json.loads(r["result"]),
        "auditSeqs": seqs,
    }


def select_replay(conn: sqlite3.Connection, tenant: str, replay_id: str) -> dict[str, Any] | None:
    """The Replay resource of ``replay_id``, or None."""
    row = conn.execute(
        f"SELECT {', '.join(REPLAY_COLUMNS)} FROM replays WHERE replay_id = ? AND tenant_id = ?",
        (replay_id, tenant),
    ).fetchone()
    return None if row is None else replay_from_row(conn, tenant, row)


LIST_PARAMS = frozenset({"sourceExchangeId", "requestedBy", "status", "offset", "limit"})


def list_replays(
    conn: sqlite3.Connection, tenant: str, params: Mapping[str, str], *, only: str | None
) -> dict[str, Any]:
    """``GET /replays``: ``{data, total, offset, limit}``, newest first; ``only`` restricts the
    answer to one requester's replays. 400 for unknown or malformed parameters."""
    unknown = sorted(set(params) - LIST_PARAMS)
    if unknown:
        raise ValidationError(f"unknown query parameters {unknown}", details={"unknown": unknown})
    where, args = ["tenant_id = ?"], [tenant]
    if params.get("sourceExchangeId") is not None:
        where.append("source_exchange_id = ?")
        args.append(params["sourceExchangeId"])
    for requester in (params.get("requestedBy"), only):
        if requester is not None:
            where.append("requested_by = ?")
            args.append(requester)
    if params.get("status") is not None:
        statuses = [s.strip() for s in params["status"].split(",")]
        bad = [s for s in statuses if s not in REPLAY_STATUSES]
        if bad:
            raise ValidationError(
                f"status {bad} is not one of {', '.join(REPLAY_STATUSES)}", details={"field": "status"}
            )
        where.append(f"status IN ({', '.join('?' * len(statuses))})")
        args.extend(statuses)
    offset = _int_param(params, "offset", 0, 0, None)
    limit = _int_param(params, "limit", 50, 1, 1000)
    sql_where = " AND ".join(where)
    (total,) = conn.execute(f"SELECT count(*) FROM replays WHERE {sql_where}", args).fetchone()
    rows = conn.execute(
        f"SELECT {', '.join(REPLAY_COLUMNS)} FROM replays WHERE {sql_where} "
        "ORDER BY requested_ms DESC, replay_id DESC LIMIT ? OFFSET ?",
        (*args, limit, offset),
    ).fetchall()
    return {
        "data": [replay_from_row(conn, tenant, r) for r in rows],
        "total": total,
        "offset": offset,
        "limit": limit,
    }


def _int_param(params: Mapping[str, str], name: str, default: int, lo: int, hi: int | None) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,9}", raw) or int(raw) < lo or (hi is not None and int(raw) > hi):
        raise ValidationError(
            f"{name} must be an integer from {lo}" + (f" to {hi}" if hi is not None else ""),
            details={"field": name},
        )
    return int(raw)


#: A ``processor`` event's stored data is a reference to the processor record it carries,
#: ``"@<seq> <executionId>"`` (the record is stored in the same transaction, and a stored
#: record is never replaced: the store refuses a chunk that reuses a seq, 409). Why: the
#: events repeated the whole trace (~110 KB of JSON for an orders replay) next to its records,
#: and writing it twice cost 1.6 ms of a replay's round trip (P2; blocks A/B). Readers expand
#: it (:func:`processor_refs`); JSON data never starts with ``@``, and files written before
#: hold the JSON itself, read as it is.
PROCESSOR_REF = "@"


def processor_ref(seq: int, execution_id: str) -> str:
    """The stored data of the ``processor`` event of record ``seq`` of ``execution_id``."""
    return f"{PROCESSOR_REF}{seq} {execution_id}"


def parse_processor_ref(event: str, data: str) -> tuple[int, str] | None:
    """``(seq, executionId)`` of a stored event that is a :func:`processor_ref`, else None."""
    if event != "processor" or not data.startswith(PROCESSOR_REF):
        return None
    seq, _, execution_id = data[1:].partition(" ")
    return int(seq), execution_id


def processor_refs(rows: Sequence[tuple[int, str, str]]) -> dict[str, set[int]]:
    """The records the rows refer to: executionId -> seqs."""
    wanted: dict[str, set[int]] = {}
    for _, event, data in rows:
        ref = parse_processor_ref(event, data)
        if ref is not None:
            wanted.setdefault(ref[1], set()).add(ref[0])
    return wanted


def emit_events(
    conn: sqlite3.Connection,
    replay_id: str,
    events: Sequence[tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], str]],
    written: list[tuple[str, int, str, str]] | None = None,
) -> int:
    """Store the replay's next trace events (ids previous + 1, + 2, ...) inside the caller's
    write transaction with at most one lookup of the last id (none when ``written`` has one of
    the replay's rows: the transaction's own) and one ``executemany``; returns the last
    id (the previous one when ``events`` is empty). An event is ``(event, data)``, or
    ``(event, data, stored)`` to store the text ``stored`` (a :func:`processor_ref`) in place
    of the data's JSON. ``written``, if given, gets the rows as sent ``(replayId, id, event,
    data JSON)`` appended (for the caller to hand to live readers once its transaction has
    committed)."""
    # The transaction's own rows first: a replay's chunk emits three to four times in one
    # transaction, and each lookup cost as much as the emit (~30 µs; P2, section 11).
    last = next((r[1] for r in reversed(written) if r[0] == replay_id), None) if written else None
    if last is None:
        # ORDER BY id DESC LIMIT 1 walks the primary key from its end; ``coalesce(max(id), 0)``
        # would not (SQLite's min/max optimisation applies to a bare ``max()`` only).
        row = conn.execute(
            "SELECT id FROM replay_events WHERE replay_id = ? ORDER BY id DESC LIMIT 1", (replay_id,)
        ).fetchone()
        last = 0 if row is None else int(row[0])
    if events:
        # encoder.dumps_text: a replay's processor events are ~100 KB of JSON (orjson's speed).
        sent = [(replay_id, last + i, e[0], dumps_text(e[1])) for i, e in enumerate(events, start=1)]
        stored = [
            (r[0], r[1], r[2], e[2] if len(e) == 3 else r[3])  # type: ignore[misc]
            for r, e in zip(sent, events, strict=True)
        ]
        conn.executemany("INSERT INTO replay_events (replay_id, id, event, data) VALUES (?, ?, ?, ?)", stored)
        if written is not None:
            written.extend(sent)
    return last + len(events)


def events_after(
    conn: sqlite3.Connection, replay_id: str, after: int, limit: int = 500
) -> list[tuple[int, str, str]]:
    """Stored events of a replay with ``id > after``, in id order: ``(id, event, data)`` as
    stored (a ``processor`` event's data may be a :func:`processor_ref`)."""
    return [
        (r[0], r[1], r[2])
        for r in conn.execute(
            "SELECT id, event, data FROM replay_events WHERE replay_id = ? AND id > ? ORDER BY id LIMIT ?",
            (replay_id, after, limit),
        )
    ]


def last_event(conn: sqlite3.Connection, replay_id: str) -> tuple[int, str | None]:
    """The newest event id of a replay (0 if none) and its event name."""
    row = conn.execute(
        "SELECT id, event FROM replay_events WHERE replay_id = ? ORDER BY id DESC LIMIT 1", (replay_id,)
    ).fetchone()
    return (0, None) if row is None else (row[0], row[1])


def find_key(
    conn: sqlite3.Connection, tenant: str, principal: str, key: str, now_ms: int
) -> tuple[str, str] | None:
    """``(fingerprint, replayId)`` of an unexpired idempotency key of ``principal``, or None."""
    row = conn.execute(
        "SELECT fingerprint, replay_id, expires_ms FROM idempotency_keys "
        "WHERE tenant_id = ? AND principal = ? AND key = ?",
        (tenant, principal, key),
    ).fetchone()
    return None if row is None or row[2] <= now_ms else (row[0], row[1])


def claim_key(
    conn: sqlite3.Connection,
    tenant: str,
    principal: str,
    key: str,
    fingerprint: str,
    replay_id: str,
    now_ms: int,
    ttl_ms: int,
) -> bool:
    """Claim ``key`` for ``replay_id`` inside the caller's transaction: True if this call got
    it (new, or the old claim had expired), False if an unexpired claim holds it. One
    ``INSERT ... ON CONFLICT`` statement, so two writers cannot both win (security.md 5)."""
    return (
        conn.execute(
            "INSERT INTO idempotency_keys (tenant_id, principal, key, fingerprint, replay_id, "
            "created_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (tenant_id, principal, key) DO UPDATE SET "
            "fingerprint = excluded.fingerprint, replay_id = excluded.replay_id, "
            "created_ms = excluded.created_ms, expires_ms = excluded.expires_ms "
            "WHERE idempotency_keys.expires_ms <= excluded.created_ms",
            (tenant, principal, key, fingerprint, replay_id, now_ms, now_ms + ttl_ms),
        ).rowcount
        == 1
    )
