"""The audit tables in the store's SQLite file and how they are read back (DESIGN.md section 7;
reference/security.md sections 1.3 and 1.5): the schema with its append-only triggers, rows to
events, the filters of ``GET /admin/audit``, and :func:`verify_database`, the server's check of a
tenant's chain against the checkpoints of the database and of the anchor file.

Writing is :class:`moat_nb.sandbox.audit_log.AuditLog`'s; the layout and the guarantees are
described there.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import audit
from ..errors import RecordError, ValidationError
from ..model import check_id, format_time, parse_time
from .audit_anchor import AnchorFile

try:  # as in moat_nb.audit: reading 1M rows back is mostly JSON parsing
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads

__all__ = [
    "ACTIONS",
    "AUDIT_COLUMNS",
    "CHECKPOINT_COLUMNS",
    "SCHEMA",
    "AuditQuery",
    "checkpoint_from_row",
    "create_tables",
    "dumps",
    "event_from_row",
    "identity",
    "missing_triggers",
    "read_chain",
    "schema_problem",
    "tolerant_text",
    "verify_database",
]

#: Every action the log records (the log inventory of ASVS 16.1.1 / security.md SOC-5): the
#: actions of DESIGN.md section 7, ``AUDIT_DENIED`` for a refused read of the log itself and
#: ``ACCESS_DENIED`` for a refusal on any other endpoint (section 6: every denied attempt is
#: audited; section 7's ``REPLAY_DENIED`` names replays), ``LOGIN_FAILED`` for a wrong user
#: name or password (ASVS 4.0.3 V7.2.1), ``AUDIT_GUARD_RESTORED`` for append-only triggers found
#: missing and re-created at start-up (:func:`missing_triggers`).
ACTIONS: tuple[str, ...] = (
    "REPLAY_REQUESTED",
    "REPLAY_STARTED",
    "REPLAY_COMPLETED",
    "REPLAY_FAILED",
    "REPLAY_ERROR",
    "REPLAY_ABORTED",
    "REPLAY_DENIED",
    "CONTROL_HEADER_REJECTED",
    "AUDIT_QUERIED",
    "AUDIT_EXPORTED",
    "AUDIT_DENIED",
    "ACCESS_DENIED",
    "LOGIN_FAILED",
    "AUDIT_GUARD_RESTORED",
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_events (
    tenant_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    event_id     TEXT NOT NULL UNIQUE,
    occurred_at  TEXT NOT NULL,
    action       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    source       TEXT NOT NULL,
    target       TEXT NOT NULL,
    detail       TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL,
    replay_id    TEXT,
    UNIQUE (tenant_id, seq),
    UNIQUE (tenant_id, prev_hash)
);
CREATE INDEX IF NOT EXISTS audit_events_replay ON audit_events (replay_id, seq);
CREATE INDEX IF NOT EXISTS audit_events_time ON audit_events (tenant_id, occurred_at);
CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_events_no_replace BEFORE INSERT ON audit_events
WHEN EXISTS (SELECT 1 FROM audit_events WHERE event_id = NEW.event_id)
  OR EXISTS (SELECT 1 FROM audit_events WHERE tenant_id = NEW.tenant_id AND seq = NEW.seq)
  OR EXISTS (SELECT 1 FROM audit_events WHERE tenant_id = NEW.tenant_id AND prev_hash = NEW.prev_hash)
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    tenant_id  TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    hash       TEXT NOT NULL,
    at         TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    signature  TEXT NOT NULL,
    UNIQUE (tenant_id, seq, key_id)
);
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_replace BEFORE INSERT ON audit_checkpoints
WHEN EXISTS (SELECT 1 FROM audit_checkpoints
             WHERE tenant_id = NEW.tenant_id AND seq = NEW.seq AND key_id = NEW.key_id)
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
"""
# Why the BEFORE INSERT triggers: a conflict resolved by REPLACE (INSERT OR REPLACE, REPLACE
# INTO, ... OR REPLACE) deletes the row in the way without firing DELETE triggers unless
# recursive_triggers is on (sqlite.org/lang_conflict.html, "REPLACE"), so the UPDATE/DELETE
# triggers alone left rows rewritable. A BEFORE INSERT trigger runs before any conflict is
# resolved and refuses a row whose event id, seq or prevHash is taken, whatever the OR clause
# (an upsert's DO UPDATE and OR IGNORE included): the table only ever gains rows.


def _normal_sql(text: str) -> str:
    return " ".join(text.replace("IF NOT EXISTS ", "").rstrip().rstrip(";").split())


#: Each append-only trigger's name and its SQL as sqlite_master keeps it (whitespace folded):
#: :func:`verify_database` reports a trigger that is gone or was changed, and one not listed here.
TRIGGERS: dict[str, str] = {}

#: The audit columns that make up an event, in the order :func:`event_from_row` reads.
AUDIT_COLUMNS = (
    "tenant_id, seq, event_id, occurred_at, action, actor, source, target, detail, outcome, "
    "prev_hash, hash, replay_id"
)
CHECKPOINT_COLUMNS = "tenant_id, seq, hash, at, key_id, signature"
_EVENTS = f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE tenant_id = ?"
_CHECKPOINTS = f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE tenant_id = ?"


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements; ``sqlite3.complete_statement`` keeps a trigger's
    ``BEGIN ... END`` whole (``executescript`` would commit the caller's open transaction)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                yield buf
            buf = ""


for _statement in _statements(SCHEMA):
    if _statement.lstrip().startswith("CREATE TRIGGER"):
        TRIGGERS[_statement.split()[5]] = _normal_sql(_statement)


def schema_problem(conn: sqlite3.Connection) -> str | None:
    """Why the audit tables are not append-only any more (a trigger of ours dropped or changed,
    or one that is not ours added), or None. Whoever can write the file can do that, and then
    rewrite rows at will; the chain catches most rewrites, this catches the means (DESIGN.md
    section 7, security.md AUD/SOC-4)."""
    found = {
        name: _normal_sql(sql or "")
        for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN "
            "('audit_events', 'audit_checkpoints')"
        )
    }
    missing = sorted(name for name in TRIGGERS if name not in found)
    changed = sorted(name for name, sql in TRIGGERS.items() if name in found and found[name] != sql)
    # A trigger added beside ours is as much an edit: a BEFORE INSERT ... RAISE(IGNORE) drops
    # events without an error and without a break in the chain (review 2 finding 3).
    extra = sorted(name for name in found if name not in TRIGGERS)
    parts = [
        f"{kind}: {', '.join(names)}"
        for kind, names in (("missing", missing), ("changed", changed), ("extra", extra))
        if names
    ]
    if not parts:
        return None
    return f"the append-only triggers of the audit tables were edited ({'; '.join(parts)})"


def missing_triggers(conn: sqlite3.Connection) -> list[str]:
    """The append-only triggers of :data:`TRIGGERS` that are not in an existing file's audit
    tables (none for a file without them yet, which :func:`create_tables` starts). The server
    re-creates them at start-up with ``IF NOT EXISTS``: it did so silently, so a dropped guard
    left no trace once the server restarted (auditor walk); the caller records it."""
    tables = {
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name IN ('audit_events', 'audit_checkpoints')"
        )
    }
    present = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    return sorted(
        name
        for name, sql in TRIGGERS.items()
        if sql.split(" ON ", 1)[1].split()[0] in tables and name not in present
    )


def create_tables(conn: sqlite3.Connection) -> None:
    """Create the audit tables, indexes and triggers if absent (inside the caller's transaction)."""
    for statement in _statements(SCHEMA):
        conn.execute(statement)


def dumps(value: Any) -> str:
    """Compact one-line JSON, refusing NaN/Infinity (they are not JSON, and JCS refuses them)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# --------------------------------------------------------------------------- rows <-> events


def _text(value: Any) -> Any:
    # A TEXT column holds str; a tampered one may hold a BLOB. Keep its bytes visible (as lone
    # surrogates) so that verification sees a changed value instead of crashing on it.
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def _json_column(value: Any) -> Any:
    """A JSON column's value; text that is not JSON stays as it is, so a hash mismatch names it."""
    try:
        return _loads(value)
    except (ValueError, TypeError, RecursionError):  # orjson.JSONDecodeError is a ValueError
        return value


def event_from_row(row: Sequence[Any]) -> dict[str, Any]:
    """An audit event (wire form) from a row of :data:`AUDIT_COLUMNS`.

    The ``replay_id`` column is a copy of ``target.replayId`` kept for lookups; the event is built
    with the column's value, so an edit of the copy alone shows up as a hash mismatch too.
    """
    if bytes in map(type, row):  # only a tampered row holds a BLOB: decode it once, tolerantly
        row = tuple(map(_text, row))
    (tenant, seq, event_id, occurred_at, action, actor, source, target, detail, outcome,
     prev_hash, hash_, replay_id) = row  # fmt: skip
    target_value = _json_column(target)
    if type(target_value) is dict:
        target_value["replayId"] = replay_id
    return {
        "seq": seq,
        "eventId": event_id,
        "tenantId": tenant,
        "occurredAt": occurred_at,
        "action": action,
        "actor": _json_column(actor),
        "source": _json_column(source),
        "target": target_value,
        "detail": _json_column(detail),
        "outcome": outcome,
        "prevHash": prev_hash,
        "hash": hash_,
    }


def checkpoint_from_row(row: Sequence[Any]) -> dict[str, Any]:
    tenant, seq, hash_, at, key_id, signature = row
    return {
        "tenantId": _text(tenant),
        "seq": seq,
        "hash": _text(hash_),
        "at": _text(at),
        "keyId": _text(key_id),
        "signature": _text(signature),
    }


def identity(cp: Mapping[str, Any]) -> tuple[Any, ...]:
    return (cp.get("tenantId"), cp.get("seq"), cp.get("hash"), cp.get("keyId"), cp.get("signature"))


def read_chain(conn: sqlite3.Connection, tenant_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The tenant's events (seq order) and database checkpoints, read in one snapshot."""
    began = not conn.in_transaction
    if began:
        conn.execute("BEGIN")  # a read transaction: both tables from one WAL snapshot
    try:
        events = [event_from_row(r) for r in conn.execute(_EVENTS + " ORDER BY seq", (tenant_id,))]
        cps = [
            checkpoint_from_row(r)
            for r in conn.execute(
                _CHECKPOINTS + " ORDER BY seq, rowid",
                (tenant_id,),
            )
        ]
    finally:
        if began:
            conn.execute("COMMIT")
    return events, cps


def tolerant_text(raw: bytes) -> str:
    """A ``text_factory`` for reading possibly tampered TEXT: invalid UTF-8 stays visible as
    lone surrogates (which no hash matches) instead of failing the read."""
    return raw.decode("utf-8", "surrogateescape")


def _read_file(path: Path, tenant_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str | None]:
    """:func:`read_chain` over a read-only connection to the file. SQLite's own UTF-8 decoding
    is tried first (a Python ``text_factory`` costs a call per column of every row); only a
    database with invalid UTF-8 in it, which means tampering, is read again tolerantly."""
    for tolerant in (False, True):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=30)
        if tolerant:
            conn.text_factory = tolerant_text
        try:
            return (*read_chain(conn, tenant_id), schema_problem(conn))
        except sqlite3.OperationalError as exc:
            if tolerant or "decode" not in str(exc):
                raise
        finally:
            conn.close()
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class AuditQuery:
    """The filters of ``GET /admin/audit`` (section 4), checked."""

    action: str | None = None
    actor: str | None = None
    replay_id: str | None = None
    from_seq: int | None = None
    to_seq: int | None = None
    from_time: str | None = None
    to_time: str | None = None
    offset: int = 0
    limit: int = 100

    PARAMS = frozenset({"action", "actor", "replayId", "from", "to", "offset", "limit"})

    @classmethod
    def parse(cls, params: Mapping[str, str], *, allowed: frozenset[str] | None = None) -> AuditQuery:
        """From query parameters; 400 for unknown or malformed ones. ``from``/``to`` are a seq
        (digits) or an RFC 3339 time, both inclusive."""
        allowed = cls.PARAMS if allowed is None else allowed
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValidationError(
                f"unknown query parameters {unknown}",
                hint="known: " + ", ".join(sorted(allowed)),
                details={"unknown": unknown},
            )
        action = params.get("action") or None
        if action is not None and action not in ACTIONS:
            raise ValidationError(
                f"action {action[:60]!r} is not one of {', '.join(ACTIONS)}", details={"field": "action"}
            )
        actor = params.get("actor") or None
        if actor is not None and (len(actor) > 128 or not actor.isprintable()):
            raise ValidationError("actor must be a user name (printable, at most 128 characters)")
        replay_id = params.get("replayId") or None
        if replay_id is not None:
            try:
                check_id(replay_id, "replayId")
            except RecordError as exc:
                raise ValidationError(exc.message, code="BAD_ID", details={"field": "replayId"}) from None
        bounds: dict[str, Any] = {}
        for name in ("from", "to"):
            raw = params.get(name) or None
            if raw is None:
                continue
            if raw.isascii() and raw.isdigit():
                if len(raw) > 15:
                    raise ValidationError(f"{name} seq is too large", details={"field": name})
                bounds[f"{name}_seq"] = int(raw)
                continue
            try:
                bounds[f"{name}_time"] = format_time(parse_time(raw))
            except RecordError:
                raise ValidationError(
                    f"{name} must be a seq (digits) or an RFC 3339 time, not {raw[:40]!r}",
                    hint="e.g. 2026-11-26T13:09:44.123Z",
                    details={"field": name},
                ) from None
        return cls(
            action=action,
            actor=actor,
            replay_id=replay_id,
            offset=_int_param(params, "offset", 0, 0, 10**9),
            limit=_int_param(params, "limit", 100, 1, 1000),
            **bounds,
        )

    def where(self, tenant_id: str, only_requested_by: str | None) -> tuple[str, list[Any]]:
        clauses, args = ["tenant_id = ?"], [tenant_id]
        if self.action is not None:
            clauses.append("action = ?")
            args.append(self.action)
        if self.actor is not None:
            clauses.append("json_extract(actor, '$.username') = ?")
            args.append(self.actor)
        if self.replay_id is not None:
            clauses.append("replay_id = ?")
            args.append(self.replay_id)
        for column, op, value in (
            ("seq", ">=", self.from_seq),
            ("seq", "<=", self.to_seq),
            ("occurred_at", ">=", self.from_time),
            ("occurred_at", "<=", self.to_time),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                args.append(value)
        if only_requested_by is not None:
            # audit:read-own (section 6): the receipts of one's own replays, that is the events
            # whose replay this user requested (the replays table lives in the same file).
            clauses.append(
                "replay_id IN (SELECT replay_id FROM replays WHERE tenant_id = ? AND requested_by = ?)"
            )
            args.extend([tenant_id, only_requested_by])
            # ... and of those, not others' reads of the log: an administrator's AUDIT_QUERIED
            # naming the replay is a record of the review, not a receipt of the replay, and the
            # person under review must not learn who looked, from where (section 6; security.md
            # AU-9, AC-5). One's own reads stay visible.
            clauses.append(
                "(action NOT IN ('AUDIT_QUERIED', 'AUDIT_EXPORTED', 'AUDIT_DENIED') "
                "OR json_extract(actor, '$.username') = ?)"
            )
            args.append(only_requested_by)
        return " AND ".join(clauses), args

    def to_wire(self) -> dict[str, Any]:
        """The filters as given (for the ``AUDIT_QUERIED`` event's detail)."""
        out = {
            "action": self.action,
            "actor": self.actor,
            "replayId": self.replay_id,
            "from": self.from_seq if self.from_seq is not None else self.from_time,
            "to": self.to_seq if self.to_seq is not None else self.to_time,
            "offset": self.offset,
            "limit": self.limit,
        }
        return {k: v for k, v in out.items() if v is not None}


def _int_param(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or not lo <= int(raw) <= hi:
        raise ValidationError(f"{name} must be an integer from {lo} to {hi}", details={"field": name})
    return int(raw)


def verify_database(
    db: Path | str | sqlite3.Connection,
    tenant_id: str,
    anchor: AnchorFile | Path | str | None,
    public_keys: Mapping[str, str],
) -> audit.VerifyResult:
    """Verify ``tenant_id``'s chain in a database (a file path, opened read-only, or an open
    connection) against its checkpoints and those of the anchor file, trusting ``public_keys``
    (key id -> base64 DER); never raises on bad data.

    The anchor file is read first, then the database in one snapshot (see the module
    docstring). A line of the file that is not JSON, and a checkpoint the file has that the
    database lacks, are failures too: both mean that something outside the chain was edited.
    """
    anchor_file = anchor if isinstance(anchor, AnchorFile) or anchor is None else AnchorFile(Path(anchor))
    anchored, problems = ([], []) if anchor_file is None else anchor_file.read()
    anchored = [cp for cp in anchored if cp.get("tenantId") == tenant_id]
    try:
        if isinstance(db, sqlite3.Connection):
            events, in_db = read_chain(db, tenant_id)
            schema = schema_problem(db)
        else:
            events, in_db, schema = _read_file(Path(db), tenant_id)
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        return _failure("MALFORMED", None, f"the audit tables cannot be read: {exc}")
    db_ids = {identity(cp) for cp in in_db}
    merged = list(in_db) + [cp for cp in anchored if identity(cp) not in db_ids]
    result = audit.verify(events, merged, public_keys, tenant_id=tenant_id)
    if not result.ok:
        return result
    if problems:
        return _failure("MALFORMED", None, f"the checkpoint anchor file was edited: {problems[0]}", result)
    gone = sorted((cp for cp in anchored if identity(cp) not in db_ids), key=lambda c: c["seq"])
    if gone:
        seq = gone[0]["seq"]
        return _failure(
            "CHECKPOINT_MISMATCH",
            seq,
            f"the checkpoint at seq {seq} is in the anchor file but not in the database: "
            "the checkpoint table was edited",
            result,
        )
    if schema is not None:
        # The chain verifies, but the guard rails are down: rows after the newest checkpoint
        # may have been rewritten without a trace (AUD-2's window), so this is a failure too.
        return _failure("SCHEMA_EDITED", None, schema, result)
    return result


def _failure(
    reason: str, seq: int | None, message: str, base: audit.VerifyResult | None = None
) -> audit.VerifyResult:
    return audit.VerifyResult(
        ok=False,
        checked=base.checked if base else 0,
        head_seq=base.head_seq if base else None,
        head_hash=base.head_hash if base else None,
        first_bad_seq=seq,
        reason=reason,
        checkpoints_checked=base.checkpoints_checked if base else 0,
        message=message,
        tenant_id=base.tenant_id if base else None,
        start_seq=1,
        anchored_seq=base.anchored_seq if base else None,
    )
