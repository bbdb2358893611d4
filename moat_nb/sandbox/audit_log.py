"""The sandbox's audit log: the append-only tables, signed checkpoints and their anchor file
(DESIGN.md section 7; reference/security.md sections 1.2-1.5). The hashing, signing and checking
are :mod:`moat_nb.audit`'s; this module stores what it computes and reads it back.

Where things live (``<data>`` is the sandbox's data folder)::

    <data>/sandbox.db                 audit_events, audit_checkpoints (with the replay tables)
    <data>/keys/audit.pem             Ed25519 key that signs checkpoints (owner-only; not the
                                      command key, so neither can stand in for the other)
    <data>/keys/audit-public-keys.txt every public key that ever signed (base64 DER, one a
                                      line): a rotated key keeps verifying old checkpoints
    <data>/audit-checkpoints.jsonl    each checkpoint again, one JSON line, appended after the
                                      transaction that made it commits (the anchor)

Guarantees and why:

* **One chain per tenant**, appended under the store's ``BEGIN IMMEDIATE`` in the transaction
  that changes the state the event records (:meth:`AuditLog.append` takes the caller's
  connection), so a failed append rolls the change back: nothing happens unrecorded (fail
  closed, ASVS 16.5.3). ``UNIQUE(tenant_id, seq)`` and ``UNIQUE(tenant_id, prev_hash)`` make a
  fork impossible in the database; triggers ``RAISE(ABORT)`` on UPDATE and DELETE of events and
  checkpoints (SQLite's CREATE TRIGGER docs). Whoever can write the file can drop the triggers:
  they are guardrails, the hashes and signatures are the evidence (security.md 1.2 lesson 1).
* **Checkpoints** ``{tenantId, seq, hash, at, keyId, signature}``: when 100 events have been
  appended since the last one (in the same transaction as the 100th), on demand
  (:meth:`AuditLog.checkpoint`, which every export calls) and at shutdown. Before signing, the
  events from the newest checkpoint known to be signed (the anchor file's and those this process
  committed, signatures checked; not the database rows alone, which whoever writes the file can
  delete) up to the new one are verified: a signature must never bless a history rewritten in
  the database (the checkpoint is then not signed, :attr:`AuditLog.refusal` says why, the
  reason is logged once per break, and appends retry after ``interval`` events, then less and
  less often; on demand always retries). An export is verified as its recipient will verify
  it, and refused (503) when it does not. README.md says how an operator recovers.
* **The anchor file** outside the database holds every checkpoint again. :meth:`AuditLog.verify`
  reads the file first and the database second (a checkpoint reaches the file only after its
  transaction committed, so the database snapshot includes all the file has) and checks the
  chain against the union: cutting the tail or rewriting it in the database is detected as long
  as the file keeps a checkpoint past the cut (AUD-2). A checkpoint the file has and the
  database lacks means the checkpoint table was edited. After a crash between commit and file
  write, :meth:`AuditLog.open` copies the missing (validly signed) checkpoints to the file.

Modules: this one writes (:class:`AuditLog`); :mod:`.audit_tables` holds the schema, reads rows
back and verifies a database; :mod:`.audit_anchor` the key and the anchor file. The names most
callers need are re-exported here.

Events after the newest checkpoint are linked but not yet vouched for (security.md AUD-2's
documented limitation); the shutdown checkpoint and the export checkpoint keep that window short.
"""

from __future__ import annotations

import bisect
import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import audit
from ..errors import AuditUnavailable, MoatError, RecordError, ValidationError
from ..model import format_time
from .audit_anchor import ANCHOR_FILE, KEY_FILE, PUBLIC_KEYS_FILE, AnchorFile, AuditKey, signature_problem
from .audit_tables import (
    ACTIONS,
    AUDIT_COLUMNS,
    CHECKPOINT_COLUMNS,
    SCHEMA,
    AuditQuery,
    checkpoint_from_row,
    create_tables,
    dumps,
    event_from_row,
    identity,
    missing_triggers,
    read_chain,
    schema_problem,
    tolerant_text,
    verify_database,
)

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "ACTIONS",
    "ANCHOR_FILE",
    "AUDIT_COLUMNS",
    "CHECKPOINT_INTERVAL",
    "KEY_FILE",
    "NO_SOURCE",
    "PUBLIC_KEYS_FILE",
    "SCHEMA",
    "AnchorFile",
    "AuditKey",
    "AuditLog",
    "AuditQuery",
    "create_tables",
    "dumps",
    "event_from_row",
    "read_chain",
    "tolerant_text",
    "unavailable",
    "verify_database",
]

log = logging.getLogger(__name__)

#: Section 7: a checkpoint every 100 events.
CHECKPOINT_INTERVAL = 100
#: ``actor`` of events the server makes on its own (as the replay service's timeouts).
SYSTEM_ACTOR: Mapping[str, Any] = {"username": "moat-nb-sandbox", "roles": ["SYSTEM"], "permissions": []}
#: ``source`` of events the server makes on its own (timeouts, start-up) or on an agent's word.
NO_SOURCE: Mapping[str, Any] = {"ip": None, "userAgent": None, "requestId": None, "client": None}
_EVENTS = f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE tenant_id = ?"
_CHECKPOINTS = f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE tenant_id = ?"
_ALL_CHECKPOINTS = f"SELECT rowid, {CHECKPOINT_COLUMNS} FROM audit_checkpoints"


# --------------------------------------------------------------------------- the log


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _SignedPoints:
    """Where the chain is known to have been, per checkpoints validly signed by a trusted key:
    those of the anchor file and of the database at open, and every one committed since.

    The database alone cannot say that: whoever can write it deletes checkpoint rows and
    re-chains the events (review finding 1). A signature cannot be forged without the key,
    and the anchor file keeps the ones the database lost (DESIGN.md section 7), so a new
    checkpoint is signed only over a chain that passes through these points. Signatures are
    checked when a point is first used, not at open (thousands of them in a large log)."""

    def __init__(self, tenant_id: str, keys: Mapping[str, str]) -> None:
        self.tenant_id = tenant_id
        self.keys = keys
        self._seqs: list[int] = []  # sorted
        self._candidates: dict[int, list[dict[str, Any]]] = {}
        self._valid: dict[int, dict[str, Any]] = {}

    def add(self, cp: Mapping[str, Any]) -> None:
        seq = cp.get("seq")
        if type(seq) is not int or seq < 1 or cp.get("tenantId") != self.tenant_id:
            return
        if seq not in self._candidates:
            bisect.insort(self._seqs, seq)
            self._candidates[seq] = []
        self._candidates[seq].append(dict(cp))

    def _at(self, seq: int) -> dict[str, Any] | None:
        """The validly signed checkpoint at ``seq`` (None, and forgotten, if none is)."""
        if seq in self._valid:
            return self._valid[seq]
        for cp in self._candidates.get(seq, ()):
            if signature_problem(cp, self.keys) is None:
                self._valid[seq] = cp
                self._candidates[seq] = [cp]
                return cp
        self._candidates.pop(seq, None)
        self._seqs.remove(seq)
        return None

    def floor(self, seq: int) -> dict[str, Any] | None:
        """The newest valid point at or before ``seq``."""
        for candidate in reversed(self._seqs[: bisect.bisect_right(self._seqs, seq)]):
            cp = self._at(candidate)
            if cp is not None:
                return cp
        return None

    def ceiling(self, seq: int) -> dict[str, Any] | None:
        """The oldest valid point after ``seq``."""
        for candidate in self._seqs[bisect.bisect_right(self._seqs, seq) :]:
            cp = self._at(candidate)
            if cp is not None:
                return cp
        return None

    def between(self, first: int, last: int) -> list[dict[str, Any]]:
        """The valid points from ``first`` to ``last`` (inclusive), in seq order."""
        lo, hi = bisect.bisect_left(self._seqs, first), bisect.bisect_right(self._seqs, last)
        found = (self._at(seq) for seq in self._seqs[lo:hi])
        return [cp for cp in found if cp is not None]


class AuditLog:
    """One tenant's audit log in a :class:`~moat_nb.sandbox.store.Store`'s file.

    Make it with :meth:`open`. Writers: :meth:`append` (inside the caller's transaction, opened
    with :meth:`transaction`) and :meth:`record` (its own transaction). Readers: :meth:`events`,
    :meth:`query`, :meth:`verify`, :meth:`export`. :meth:`checkpoint` signs one on demand;
    :meth:`close` signs the shutdown checkpoint.
    """

    def __init__(
        self,
        store: Store,
        tenant_id: str,
        key: AuditKey,
        anchor: AnchorFile,
        *,
        clock: Callable[[], datetime] = _utcnow,
        interval: int = CHECKPOINT_INTERVAL,
    ) -> None:
        audit.genesis_hash(tenant_id)  # refuses an empty tenant id
        if interval < 1:
            raise ValueError("the checkpoint interval must be >= 1")
        self.store = store
        self.tenant_id = tenant_id
        self.key = key
        self.anchor = anchor
        self.clock = clock
        self.interval = interval
        self._anchor_lock = threading.Lock()
        self._anchored_rowid = 0
        self._signed = _SignedPoints(tenant_id, key.trusted)
        #: Why the last checkpoint was not signed (None after one was): export reports it.
        self.refusal: audit.VerifyResult | None = None
        # After a refusal, append retries only from this seq on (review 2 finding 4): the check
        # reads every event since the last signed point, and a break in history does not heal
        # by appending, so retrying at every append made each write linear in the log. The gap
        # doubles while the same refusal repeats (interval, 2x, 4x...): retries then cost O(1)
        # per append however long the unsigned segment grows. On demand (export, shutdown)
        # always retries.
        self._retry_seq: int | None = None
        self._retry_gap = interval
        # What the last refusal was computed for (reason, first bad seq): logged once per state.
        self._refused_state: tuple[Any, ...] | None = None
        with store.transaction() as conn:
            missing = missing_triggers(conn)
            if not missing:
                create_tables(conn)
        self._catch_up_anchor()
        if missing:
            self._restore_guards(missing)

    def _restore_guards(self, missing: list[str]) -> None:
        """Re-create the append-only triggers found missing at start-up, and record that as an
        ``AUDIT_GUARD_RESTORED`` event in the same transaction: whoever could drop them could
        rewrite rows meanwhile, and a silent repair hid that it had happened (auditor walk;
        DESIGN.md section 7, security.md SOC-4). Triggers changed or added beside ours are not
        touched here: ``GET /admin/audit/verify`` keeps reporting them (SCHEMA_EDITED)."""
        log.error(
            "audit tables of %s lacked their append-only trigger(s) %s: re-created and recorded",
            self.store.path,
            ", ".join(missing),
        )
        try:
            with self.transaction() as conn:
                create_tables(conn)
                self.append(
                    conn,
                    "AUDIT_GUARD_RESTORED",
                    actor=SYSTEM_ACTOR,
                    source=NO_SOURCE,
                    target={},
                    detail={
                        "missing": missing,
                        "restored": missing,
                        # What still differs from ours (changed or added triggers), if anything.
                        "schemaProblem": schema_problem(conn),
                    },
                    outcome="SUCCESS",
                )
        except (sqlite3.Error, RecordError) as exc:
            # The guards matter more than their record: put them back, and say loudly that the
            # event could not be written (a later verify still names what is wrong).
            log.error("the restoration of the audit triggers could not be recorded: %s", exc)
            with self.store.transaction() as conn:
                create_tables(conn)

    @classmethod
    def open(
        cls,
        store: Store,
        data_dir: Path | str,
        tenant_id: str,
        *,
        clock: Callable[[], datetime] = _utcnow,
        interval: int = CHECKPOINT_INTERVAL,
    ) -> AuditLog:
        """The log of ``tenant_id`` with its key and anchor file in ``data_dir`` (see the module
        docstring for the layout)."""
        data = Path(data_dir)
        key = AuditKey.load_or_create(data / KEY_FILE, data / PUBLIC_KEYS_FILE)
        return cls(store, tenant_id, key, AnchorFile(data / ANCHOR_FILE), clock=clock, interval=interval)

    @property
    def public_keys(self) -> dict[str, str]:
        """Every trusted public key by key id (base64 DER): what exports carry."""
        return dict(self.key.trusted)

    # ---------------------------------------------------------------- writing

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``) on this thread's store connection, for
        changes and their audit events; joins the caller's if one is open. After it commits, new
        checkpoints are copied to the anchor file.

        The store's own ``transaction()`` with one difference: SQLite rolls a transaction back
        by itself after ``SQLITE_FULL`` and some I/O errors (sqlite.org/lang_transaction.html,
        "Response To Errors Within A Transaction"), and a second ROLLBACK would then raise and
        hide the cause, so it is issued only while a transaction is still open."""
        store = self.store
        conn = store._conn()
        with store._write_lock:  # writers queue here, not in SQLite's busy handler
            if conn.in_transaction:
                yield conn
                return
            changes = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        store.committed(conn, changes)
        self.anchor_pending()

    def append(
        self,
        conn: sqlite3.Connection,
        action: str,
        *,
        actor: Mapping[str, Any],
        source: Mapping[str, Any] | None,
        target: Mapping[str, Any],
        detail: Mapping[str, Any],
        outcome: str,
    ) -> dict[str, Any]:
        """Append one event, chained after the tenant's newest one, inside ``conn``'s write
        transaction; returns the stored event. Signs a checkpoint in the same transaction when
        :attr:`interval` events have been appended since the last one. Raises ``sqlite3.Error``
        or :class:`RecordError` when it cannot write: the caller's transaction then rolls back."""
        if action not in ACTIONS:
            raise RecordError(f"unknown audit action {action!r}", code="BAD_AUDIT_EVENT")
        if not conn.in_transaction:
            raise RecordError(
                "an audit event is appended inside the transaction of the change it records",
                code="BAD_AUDIT_EVENT",
                hint="open one with AuditLog.transaction()",
            )
        head = conn.execute(
            "SELECT seq, hash FROM audit_events WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1",
            (self.tenant_id,),
        ).fetchone()
        seq, prev = (1, audit.genesis_hash(self.tenant_id)) if head is None else (head[0] + 1, head[1])
        event: dict[str, Any] = {
            "seq": seq,
            "eventId": uuid.uuid4().hex,
            "tenantId": self.tenant_id,
            "occurredAt": format_time(self.clock()),
            "action": action,
            "actor": dict(actor),
            "source": dict(source or NO_SOURCE),
            "target": {
                "replayId": target.get("replayId"),
                "sourceExchangeId": target.get("sourceExchangeId"),
                "routeId": target.get("routeId"),
                "environment": target.get("environment"),
            },
            "detail": dict(detail),
            "outcome": outcome,
        }
        # Hash what is stored and read back, exactly: the JSON round trip turns tuples into
        # lists and refuses NaN, so a reader recomputes the same JCS bytes.
        try:
            columns = {k: dumps(event[k]) for k in ("actor", "source", "target", "detail")}
        except (TypeError, ValueError) as exc:
            raise RecordError(f"audit event is not JSON: {exc}", code="NOT_CANONICAL") from None
        event.update({k: json.loads(v) for k, v in columns.items()})
        event["prevHash"] = prev
        event["hash"] = audit.event_hash(event, prev)
        stored = conn.execute(
            f"INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.tenant_id, seq, event["eventId"], event["occurredAt"], action, columns["actor"],
                columns["source"], columns["target"], columns["detail"], outcome, prev, event["hash"],
                event["target"]["replayId"],
            ),
        )  # fmt: skip
        _stored_one(stored, f"audit event {action} at seq {seq}")
        last_cp = self._last_checkpoint(conn)
        due = seq - (0 if last_cp is None else last_cp["seq"]) >= self.interval
        if due and (self._retry_seq is None or seq >= self._retry_seq):
            self._sign(conn, seq, event["hash"])  # refused: logged, and the event stands unsigned
        return event

    def record(
        self,
        action: str,
        *,
        actor: Mapping[str, Any],
        source: Mapping[str, Any] | None,
        target: Mapping[str, Any],
        detail: Mapping[str, Any],
        outcome: str,
    ) -> dict[str, Any]:
        """:meth:`append` in a transaction of its own; 503 ``AUDIT_UNAVAILABLE`` when the write
        fails (what the caller then does must not happen: fail closed)."""
        try:
            with self.transaction() as conn:
                return self.append(
                    conn, action, actor=actor, source=source, target=target, detail=detail, outcome=outcome
                )
        except (sqlite3.Error, RecordError) as exc:
            raise unavailable(exc) from None

    # ---------------------------------------------------------------- checkpoints

    def _last_checkpoint(self, conn: sqlite3.Connection) -> dict[str, Any] | None:
        row = conn.execute(
            _CHECKPOINTS + " ORDER BY seq DESC, rowid DESC LIMIT 1",
            (self.tenant_id,),
        ).fetchone()
        return None if row is None else checkpoint_from_row(row)

    def _sign(self, conn: sqlite3.Connection, seq: int, hash_: str) -> dict[str, Any] | None:
        """Sign and insert a checkpoint at ``seq`` once the chain is shown to pass through every
        signed point around it (:meth:`_check_before_signing`); None, with :attr:`refusal` set
        and an error in the log, when it does not: a signature would bless a forgery."""
        result = self._check_before_signing(conn, seq, hash_)
        if not result.ok:
            self.refusal = result
            state = (result.reason, result.first_bad_seq)
            if state != self._refused_state:
                self._refused_state, self._retry_gap = state, self.interval
                log.error(
                    "audit log of tenant %s does not verify (%s at seq %s: %s); no checkpoint is "
                    "signed over it until it does (retried every %s events or more, and at each "
                    "export): check GET /api/v1/admin/audit/verify",
                    self.tenant_id, result.reason, result.first_bad_seq, result.message, self.interval,
                )  # fmt: skip
            else:  # the same break again: said once already, and retried less often
                self._retry_gap *= 2
            self._retry_seq = seq + self._retry_gap
            return None
        if self._refused_state is not None:
            log.warning(
                "audit log of tenant %s verifies again: checkpoints are signed from seq %s",
                self.tenant_id,
                seq,
            )
        self.refusal, self._refused_state, self._retry_seq, self._retry_gap = None, None, None, self.interval
        cp = self.key.sign(self.tenant_id, seq, hash_, self.clock())
        stored = conn.execute(
            f"INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS "
            "(SELECT 1 FROM audit_checkpoints WHERE tenant_id = ? AND seq = ? AND key_id = ?)",
            (cp["tenantId"], cp["seq"], cp["hash"], cp["at"], cp["keyId"], cp["signature"],
             cp["tenantId"], cp["seq"], cp["keyId"]),
        )  # fmt: skip
        # Both callers looked first (no checkpoint by this key at seq), so 0 rows here means a
        # trigger swallowed it: returning cp would vouch for a checkpoint that is not stored.
        _stored_one(stored, f"audit checkpoint at seq {seq}")
        return cp

    def _check_before_signing(self, conn: sqlite3.Connection, seq: int, hash_: str) -> audit.VerifyResult:
        """Verify the events from the newest signed point at or before ``seq`` (genesis if none)
        up to ``seq``, and on to the oldest signed point after it if there is one, so that the
        chain at ``seq`` is the one those signatures vouch for.

        Incremental (P5, DESIGN.md section 11): the points include every checkpoint this process
        signed and committed, so an append-time checkpoint reads the last ``interval`` events,
        not the log. The points come from the anchor file and signatures, not from the rows
        alone: deleting checkpoint rows and re-chaining the events does not move them."""
        below = self._signed.floor(seq)
        above = self._signed.ceiling(seq)
        start = 1 if below is None else int(below["seq"]) + 1
        prev = audit.genesis_hash(self.tenant_id) if below is None else below["hash"]
        end = seq if above is None else int(above["seq"])
        segment = [
            event_from_row(r)
            for r in conn.execute(
                _EVENTS + " AND seq >= ? AND seq <= ? ORDER BY seq",
                (self.tenant_id, start, end),
            )
        ]
        result = audit.verify(
            segment,
            [] if above is None else [above],
            self.key.trusted,
            tenant_id=self.tenant_id,
            start_seq=start,
            start_prev_hash=prev,
        )
        if not result.ok:
            return result
        at = (
            prev
            if seq == start - 1
            else (segment[seq - start]["hash"] if seq - start < len(segment) else None)
        )
        if at != hash_ or (result.head_seq or 0) < seq:
            return replace(
                result,
                ok=False,
                reason="CHECKPOINT_MISMATCH",
                first_bad_seq=seq,
                message=f"seq {seq} to be signed has hash {hash_[:12]}..., the signed chain has "
                f"{str(at)[:12]}...",
            )
        return result

    def checkpoint(
        self, conn: sqlite3.Connection | None = None, *, at_seq: int | None = None
    ) -> dict[str, Any] | None:
        """A signed checkpoint at the head (or at ``at_seq``), made now unless one by the current
        key is already there; None for an empty log or one that does not verify since the last
        checkpoint. Inside ``conn``'s transaction, or in one of its own."""
        if conn is None:
            with self.transaction() as own:
                return self.checkpoint(own, at_seq=at_seq)
        if at_seq is None:
            row = conn.execute(
                "SELECT seq, hash FROM audit_events WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1",
                (self.tenant_id,),
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT seq, hash FROM audit_events WHERE tenant_id = ? AND seq = ?", (self.tenant_id, at_seq)
            ).fetchone()
        if row is None:
            return None
        seq, hash_ = row
        existing = conn.execute(
            _CHECKPOINTS + " AND seq = ? AND key_id = ?",
            (self.tenant_id, seq, self.key.key_id),
        ).fetchone()
        if existing is not None:
            return checkpoint_from_row(existing)
        return self._sign(conn, seq, hash_)

    def anchor_pending(self) -> None:
        """Copy the tenant's committed checkpoints not yet in the anchor file to it (one
        :class:`AuditLog` per tenant and process writes them). A failure is logged and
        retried at the next commit: the events are committed already, and the database copy
        of the checkpoint stands."""
        with self._anchor_lock:
            try:
                rows = (
                    self.store._conn()
                    .execute(
                        _ALL_CHECKPOINTS + " WHERE tenant_id = ? AND rowid > ? ORDER BY rowid",
                        (self.tenant_id, self._anchored_rowid),
                    )
                    .fetchall()
                )
                if not rows:
                    return
                committed = [checkpoint_from_row(r[1:]) for r in rows]
                for cp in committed:  # the next checkpoint is verified from these on
                    self._signed.add(cp)
                self.store.sync()  # the events anchored are on disk before their anchor is
                self.anchor.append(committed)
                self._anchored_rowid = rows[-1][0]
            except (OSError, sqlite3.Error, MoatError) as exc:
                log.error("audit checkpoints could not be appended to %s: %s", self.anchor.path, exc)

    def _catch_up_anchor(self) -> None:
        """At start: copy the tenant's validly signed database checkpoints that the file lacks (a
        crash between a commit and its file write) to the file."""
        with self._anchor_lock:
            in_file, _ = self.anchor.read()
            have = {identity(cp) for cp in in_file}
            for cp in in_file:
                if isinstance(cp, dict):
                    self._signed.add(cp)
            conn = self.store._conn()
            rows = conn.execute(
                _ALL_CHECKPOINTS + " WHERE tenant_id = ? ORDER BY rowid", (self.tenant_id,)
            ).fetchall()
            missing = []
            for row in rows:
                cp = checkpoint_from_row(row[1:])
                self._signed.add(cp)  # used only if validly signed
                if identity(cp) in have:
                    continue
                problem = signature_problem(cp, self.key.trusted)
                if problem is None:
                    missing.append(cp)
                else:
                    log.error("audit checkpoint at seq %r is not anchored: %s", cp["seq"], problem)
            if missing:
                self.store.sync()  # as in anchor_pending: the events before their anchor
            self.anchor.append(missing)
            self._anchored_rowid = rows[-1][0] if rows else 0

    def close(self) -> None:
        """The shutdown checkpoint (section 7): sign the head if no checkpoint covers it yet."""
        try:
            self.checkpoint()
        except (sqlite3.Error, MoatError) as exc:
            log.error("no shutdown checkpoint of the audit log: %s", exc)

    # ---------------------------------------------------------------- reading

    def events(self, replay_id: str | None = None) -> list[dict[str, Any]]:
        """The tenant's stored events in seq order (all, or those of one replay)."""
        sql = _EVENTS
        args: list[Any] = [self.tenant_id]
        if replay_id is not None:
            sql += " AND replay_id = ?"
            args.append(replay_id)
        return [event_from_row(r) for r in self.store._conn().execute(sql + " ORDER BY seq", args)]

    def checkpoints(self) -> list[dict[str, Any]]:
        """The tenant's checkpoints in the database, in seq order."""
        return [
            checkpoint_from_row(r)
            for r in self.store._conn().execute(
                _CHECKPOINTS + " ORDER BY seq, rowid",
                (self.tenant_id,),
            )
        ]

    def query(
        self,
        query: AuditQuery,
        *,
        actor: Mapping[str, Any],
        source: Mapping[str, Any] | None,
        only_requested_by: str | None = None,
    ) -> dict[str, Any]:
        """``GET /admin/audit``: ``{data, total, offset, limit}`` in seq order, and an
        ``AUDIT_QUERIED`` event recording who asked what and how many rows they got, in one
        transaction (a read that cannot be recorded is not answered: 503)."""
        where, args = query.where(self.tenant_id, only_requested_by)
        try:
            with self.transaction() as conn:
                (total,) = conn.execute(f"SELECT count(*) FROM audit_events WHERE {where}", args).fetchone()
                rows = conn.execute(
                    f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE {where} ORDER BY seq LIMIT ? OFFSET ?",
                    (*args, query.limit, query.offset),
                ).fetchall()
                data = [event_from_row(r) for r in rows]
                self.append(
                    conn,
                    "AUDIT_QUERIED",
                    actor=actor,
                    source=source,
                    # Part of the replay's audit record only when the caller may read it: an
                    # own-scope caller naming another's replay gets nothing and adds nothing.
                    target={"replayId": query.replay_id if only_requested_by is None or total else None},
                    detail={
                        "query": "events",
                        "filters": query.to_wire(),
                        "scope": "own" if only_requested_by is not None else "tenant",
                        "returned": len(data),
                        "total": total,
                    },
                    outcome="SUCCESS",
                )
        except (sqlite3.Error, RecordError) as exc:
            raise unavailable(exc) from None
        return {"data": data, "total": total, "offset": query.offset, "limit": query.limit}

    def verify(self) -> audit.VerifyResult:
        """Check the whole chain against the checkpoints of the database and of the anchor file
        (see the module docstring); never raises on bad data."""
        return verify_database(self.store.path, self.tenant_id, self.anchor, self.key.trusted)

    def export(
        self,
        params: Mapping[str, str],
        *,
        actor: Mapping[str, Any],
        source: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """``GET /admin/audit/export?from=&to=``: an offline bundle (:func:`moat_nb.audit.make_bundle`)
        of the events from..to (seqs or RFC 3339 times, inclusive; default the whole log).

        In one transaction: an ``AUDIT_EXPORTED`` event (inside the bundle when ``to`` is open),
        a checkpoint at the head and one at the bundle's last event, then the read — so the
        bundle ends on a signed checkpoint and a cut tail cannot pass (AUD-10). The bundle is
        verified after that transaction commits; one that does not verify is answered 503 and
        recorded by a second ``AUDIT_EXPORTED`` event with outcome ``FAILED``."""
        query = AuditQuery.parse(params, allowed=frozenset({"from", "to"}))
        try:
            with self.transaction() as conn:
                head = conn.execute(
                    "SELECT coalesce(max(seq), 0) FROM audit_events WHERE tenant_id = ?", (self.tenant_id,)
                ).fetchone()[0]
                first, last = self._range(conn, query, head)
                if first is None or last is None or first > last:
                    raise ValidationError(
                        "no audit events in the range asked for",
                        hint="widen from/to, or leave them out to export the whole log",
                        details={"from": params.get("from"), "to": params.get("to"), "headSeq": head},
                    )
                exported = self.append(
                    conn,
                    "AUDIT_EXPORTED",
                    actor=actor,
                    source=source,
                    target={},
                    detail={
                        "filters": query.to_wire(),
                        "firstSeq": first,
                        "lastSeq": last,
                        "events": last - first + 1,
                    },
                    outcome="SUCCESS",
                )
                signed = self.checkpoint(conn)
                if signed is not None and last <= head:
                    signed = self.checkpoint(conn, at_seq=last)
                if signed is None:
                    raise self._tampered("sign the export's checkpoint", self.refusal)
                events = [
                    event_from_row(r)
                    for r in conn.execute(
                        _EVENTS + " AND seq >= ? AND seq <= ? ORDER BY seq",
                        (self.tenant_id, first, last),
                    )
                ]
                cps = [
                    checkpoint_from_row(r)
                    for r in conn.execute(
                        _CHECKPOINTS + " AND seq >= ? AND seq <= ? ORDER BY seq, rowid",
                        (self.tenant_id, first - 1, last),
                    )
                ]
                # The anchor file's checkpoints of the range too: a row deleted from the
                # database must not take its evidence out of the bundle (review finding 1).
                have = {identity(cp) for cp in cps}
                cps += [cp for cp in self._signed.between(first - 1, last) if identity(cp) not in have]
                cps.sort(key=lambda cp: cp["seq"])
                bundle = audit.make_bundle(
                    events, cps, self.public_keys, tenant_id=self.tenant_id, start_seq=first
                )
        except (sqlite3.Error, RecordError) as exc:
            raise unavailable(exc) from None
        # What leaves the platform is checked as its recipient will check it (AUD-10), against
        # the platform's keys. After the commit, not under the write lock: the check is linear
        # in the range, and every replay and audit write of the tenant would wait behind it
        # (review 2 finding 6). What committed is true either way: the AUDIT_EXPORTED event
        # records what was read, and the checkpoint was verified before it was signed. A bundle
        # that does not verify is kept out of the answer (503), and the refusal is recorded.
        result = audit.verify_bundle(bundle, self.key.trusted)
        if not result.ok:
            self._record_refused_export(result, exported, actor=actor, source=source)
            raise self._tampered("export", result)
        return bundle

    def _record_refused_export(
        self,
        result: audit.VerifyResult,
        exported: Mapping[str, Any],
        *,
        actor: Mapping[str, Any],
        source: Mapping[str, Any] | None,
    ) -> None:
        """Record that the bundle described by the committed ``exported`` event was not handed
        out: that event says SUCCESS (it is inside the bundle, so it was written before the
        check), and this one, outcome ``FAILED``, names it and why. Best effort: the 503 is
        answered whether or not this write succeeds (nothing left the platform)."""
        try:
            self.record(
                "AUDIT_EXPORTED",
                actor=actor,
                source=source,
                target={},
                detail={
                    **exported["detail"],
                    "refusedExportSeq": exported["seq"],
                    "reason": result.reason,
                    "firstBadSeq": result.first_bad_seq,
                },
                outcome="FAILED",
            )
        except AuditUnavailable:
            pass  # logged by unavailable()

    def _tampered(self, what: str, result: audit.VerifyResult | None) -> AuditUnavailable:
        """The 503 for a log that does not verify where the server was about to vouch for it:
        fail closed rather than sign or export a forgery (DESIGN.md section 7)."""
        reason = None if result is None else result.reason
        seq = None if result is None else result.first_bad_seq
        text = "" if result is None else result.message
        log.error(
            "audit log of tenant %s: refused to %s: %s at seq %s: %s", self.tenant_id, what, reason, seq, text
        )
        return AuditUnavailable(
            f"the audit log does not verify ({reason} at seq {seq}), so the server did not {what}",
            hint="check GET /api/v1/admin/audit/verify and the server log; the database may have been "
            "edited outside the server",
            details={"reason": reason, "firstBadSeq": seq},
        )

    def _range(self, conn: sqlite3.Connection, query: AuditQuery, head: int) -> tuple[int | None, int | None]:
        """The first and last seq of an export: ``to`` open means up to the export's own event."""
        first: int | None = 1
        if query.from_seq is not None:
            first = max(query.from_seq, 1)
        elif query.from_time is not None:
            first = conn.execute(
                "SELECT min(seq) FROM audit_events WHERE tenant_id = ? AND occurred_at >= ?",
                (self.tenant_id, query.from_time),
            ).fetchone()[0]
        last: int | None = head + 1
        if query.to_seq is not None:
            last = min(query.to_seq, head + 1)
        elif query.to_time is not None:
            last = conn.execute(
                "SELECT max(seq) FROM audit_events WHERE tenant_id = ? AND occurred_at <= ?",
                (self.tenant_id, query.to_time),
            ).fetchone()[0]
        return first, last


def _stored_one(cursor: sqlite3.Cursor, what: str) -> None:
    """Raise unless the INSERT just run stored exactly one row. A trigger added to the file
    (``BEFORE INSERT ... RAISE(IGNORE)``) skips a row without an error and without breaking the
    chain, so the change it records would happen unrecorded; raising rolls the caller's
    transaction back instead (fail closed, DESIGN.md section 7; review 2 finding 3)."""
    if cursor.rowcount != 1:
        raise RecordError(
            f"{what} was not stored ({cursor.rowcount} rows written): the audit tables' triggers were edited",
            code="BAD_AUDIT_EVENT",
            hint="check GET /api/v1/admin/audit/verify (SCHEMA_EDITED names the trigger)",
        )


def unavailable(exc: BaseException) -> AuditUnavailable:
    """The 503 for an audit write that failed (logged with its cause; the answer names its kind)."""
    log.error("audit log write failed: %s: %s", type(exc).__name__, exc)
    return AuditUnavailable(
        f"the audit log could not be written ({type(exc).__name__}), so nothing was done",
        hint="retry later; if it persists, check the sandbox's disk and database",
    )
