"""The audit log on its tables (moat_nb/sandbox/audit_log.py; DESIGN.md section 7; security.md
AUD-1, AUD-2, AUD-3, AUD-5, AUD-6, AUD-9): no server here, a store file with three tenants' chains.

The tampering test works on the DATABASE (the bundle-level mutations are tests/test_audit.py's):
each of at least 1,000 mutations is made on a copy of the file, through a raw connection, after
dropping the triggers — as someone who can write the file would — and the DB-level verify must
report a failure every time, naming the first affected seq where one is defined.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moat_nb import audit
from moat_nb.audit_browser import AUDIT_ACTIONS
from moat_nb.errors import AuditUnavailable, RecordError, ValidationError
from moat_nb.sandbox import audit_log, audit_tables
from moat_nb.sandbox.audit_log import AnchorFile, AuditKey, AuditLog, AuditQuery, verify_database
from moat_nb.sandbox.store import Store

TENANTS = ("acme", "globex", "initech")
EVENTS_PER_TENANT = 120  # a checkpoint at 100, and the shutdown one at 120
ACTOR = {"username": "alice", "roles": ["OPERATOR"], "permissions": ["replay:run"]}
SOURCE = {"ip": "127.0.0.1", "userAgent": "pytest", "requestId": "r-1", "client": None}


class Clock:
    """A clock handed to the log: every reading is 7 ms after the last."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
        self.lock = threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            self.now += timedelta(milliseconds=7)
            return self.now


def detail_for(rnd: random.Random, i: int) -> dict[str, Any]:
    """Varied details; one in ten takes the pure-Python rfc8785 path (astral text, integral floats)."""
    return rnd.choices(
        [
            {"payloadDiff": [{"op": "replace", "path": "/body", "value": f'{{"qty":{i}}}'}], "reason": "why"},
            {"resultStatus": "COMPLETED", "durationMs": round(rnd.uniform(0.1, 90), 3), "processorCount": i},
            {"reason": "prüfen – café 😀", "n": None, "ok": True},
            {"durationMs": float(i % 5)},
        ],
        weights=[9, 9, 1, 1],
    )[0]


def record(log: AuditLog, rnd: random.Random, i: int, action: str = "REPLAY_STARTED") -> dict[str, Any]:
    return log.record(
        action,
        actor=ACTOR,
        source=SOURCE,
        target={
            "replayId": f"replay-{i // 3}",
            "sourceExchangeId": f"ex-{i}",
            "routeId": "r",
            "environment": "dev",
        },
        detail=detail_for(rnd, i),
        outcome="SUCCESS",
    )


def open_logs(data: Path, store: Store, clock: Clock) -> dict[str, AuditLog]:
    return {t: AuditLog.open(store, data, t, clock=clock) for t in TENANTS}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three tenants' logs of 120 events each, interleaved, closed (shutdown checkpoints)."""
    data = tmp_path_factory.mktemp("audit-log")
    store = Store(data / "sandbox.db")
    logs = open_logs(data, store, Clock())
    rnd = random.Random(4)
    for i in range(EVENTS_PER_TENANT):
        for t in TENANTS:
            record(logs[t], rnd, i)
    for log in logs.values():
        log.close()
    store.close()
    key = logs[TENANTS[0]].key
    yield {
        "data": data,
        "db": data / "sandbox.db",
        "anchor": AnchorFile(data / audit_log.ANCHOR_FILE),
        "keys": key.trusted,
    }


def raw(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.text_factory = audit_log.tolerant_text
    return conn


def copy_of(path: Path) -> sqlite3.Connection:
    """The database in memory, to mutate (the file stays as built)."""
    source = sqlite3.connect(path)
    mem = sqlite3.connect(":memory:", isolation_level=None)
    source.backup(mem)
    source.close()
    mem.text_factory = audit_log.tolerant_text
    return mem


def verify_all(conn: sqlite3.Connection | Path, built: dict[str, Any]) -> dict[str, audit.VerifyResult]:
    return {t: verify_database(conn, t, built["anchor"], built["keys"]) for t in TENANTS}


# --------------------------------------------------------------------------- honest logs


def test_an_untouched_log_verifies_with_checkpoints_in_both_places(built: dict[str, Any]) -> None:
    results = verify_all(built["db"], built)
    for tenant, result in results.items():
        assert result.ok, (tenant, result)
        assert result.checked == EVENTS_PER_TENANT and result.head_seq == EVENTS_PER_TENANT
        assert result.anchored_seq == EVENTS_PER_TENANT  # the shutdown checkpoint covers the head
    in_file, problems = built["anchor"].read()
    assert problems == []
    assert sorted((c["tenantId"], c["seq"]) for c in in_file) == sorted(
        (t, s) for t in TENANTS for s in (100, EVENTS_PER_TENANT)
    )
    conn = raw(built["db"])
    try:
        in_db = conn.execute("SELECT tenant_id, seq, key_id, signature FROM audit_checkpoints").fetchall()
    finally:
        conn.close()
    assert sorted(in_db) == sorted((c["tenantId"], c["seq"], c["keyId"], c["signature"]) for c in in_file)
    # The key lives outside the database: neither its PEM nor its raw bytes are in the file.
    assert (built["data"] / audit_log.KEY_FILE).stat().st_mode & 0o077 == 0
    assert b"PRIVATE KEY" not in built["db"].read_bytes()


def test_events_read_back_are_what_was_hashed(built: dict[str, Any]) -> None:
    conn = raw(built["db"])
    try:
        events, cps = audit_log.read_chain(conn, "acme")
    finally:
        conn.close()
    assert [e["seq"] for e in events] == list(range(1, EVENTS_PER_TENANT + 1))
    assert audit.verify(events, cps, built["keys"]).ok
    assert all(e["occurredAt"].endswith("Z") and e["tenantId"] == "acme" for e in events)
    assert [c["seq"] for c in cps] == [100, EVENTS_PER_TENANT]


# --------------------------------------------------------------------------- guardrails


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_events SET outcome = 'X' WHERE seq = 3",
        "UPDATE audit_events SET hash = hash",
        "DELETE FROM audit_events WHERE seq = 120",
        "DELETE FROM audit_events",
        "UPDATE audit_checkpoints SET at = at",
        "DELETE FROM audit_checkpoints",
    ],
)
def test_triggers_refuse_update_and_delete(built: dict[str, Any], sql: str) -> None:
    conn = raw(built["db"])
    try:
        before = conn.execute("SELECT count(*), sum(seq) FROM audit_events").fetchone()
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
        assert conn.execute("SELECT count(*), sum(seq) FROM audit_events").fetchone() == before
    finally:
        conn.close()
    assert all(r.ok for r in verify_all(built["db"], built).values())


def test_unique_constraints_make_a_fork_impossible(built: dict[str, Any]) -> None:
    conn = copy_of(built["db"])
    row = conn.execute(
        f"SELECT {audit_log.AUDIT_COLUMNS} FROM audit_events WHERE tenant_id = 'acme' AND seq = 50"
    ).fetchone()
    insert = f"INSERT INTO audit_events ({audit_log.AUDIT_COLUMNS}) VALUES ({', '.join('?' * 13)})"
    fork = list(row)
    fork[2], fork[10] = "another-event-id", "f" * 64  # a second event 50
    second_50 = list(fork)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):  # the BEFORE INSERT trigger
        conn.execute(insert, fork)
    fork[1], fork[10] = 10_000, row[10]  # a new seq chained after event 49 as well: a fork
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(insert, fork)
    # Without the trigger, the UNIQUE constraints still refuse both.
    conn.execute("DROP TRIGGER audit_events_no_replace")
    with pytest.raises(sqlite3.IntegrityError, match="audit_events.seq"):
        conn.execute(insert, second_50)
    with pytest.raises(sqlite3.IntegrityError, match="prev_hash"):
        conn.execute(insert, fork)


def test_appends_from_8_concurrent_writers_form_one_contiguous_chain(tmp_path: Path) -> None:
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    writers, each = 8, 500
    errors: list[BaseException] = []

    def write(w: int) -> None:
        rnd = random.Random(w)
        try:
            for i in range(each):
                record(log, rnd, w * each + i)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    events = log.events()
    assert [e["seq"] for e in events] == list(range(1, writers * each + 1))
    prevs = [e["prevHash"] for e in events]
    assert len(set(prevs)) == len(prevs)  # every hash is followed once: no fork
    result = log.verify()
    assert result.ok and result.checked == writers * each
    assert [c["seq"] for c in log.checkpoints()] == list(range(100, writers * each + 1, 100))
    store.close()


def test_a_failed_append_rolls_back_the_change_it_records(tmp_path: Path) -> None:
    """Fail closed (AUD-9) at the table level: when the insert fails, the caller's change goes too."""
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    with log.transaction() as conn:
        conn.execute("CREATE TABLE things (x INTEGER)")
    record(log, random.Random(1), 1)
    conn = raw(tmp_path / "sandbox.db")
    conn.execute(
        "CREATE TRIGGER full BEFORE INSERT ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    try:
        with pytest.raises(sqlite3.IntegrityError, match="full"), log.transaction() as tx:
            tx.execute("INSERT INTO things VALUES (1)")
            log.append(tx, "REPLAY_STARTED", actor=ACTOR, source=SOURCE, target={}, detail={}, outcome="X")
        assert store._conn().execute("SELECT count(*) FROM things").fetchone() == (0,)
        with pytest.raises(AuditUnavailable) as info:
            record(log, random.Random(2), 2)
        assert info.value.status == 503 and info.value.code == "AUDIT_UNAVAILABLE"
    finally:
        conn.execute("DROP TRIGGER full")
        conn.close()
    assert [e["seq"] for e in log.events()] == [1]
    with pytest.raises(RecordError, match="inside the transaction"):
        log.append(
            store._conn(), "REPLAY_STARTED", actor=ACTOR, source=SOURCE, target={}, detail={}, outcome="X"
        )
    with pytest.raises(RecordError, match="unknown audit action"), log.transaction() as tx:
        log.append(tx, "REPLAY_TELEPORTED", actor=ACTOR, source=SOURCE, target={}, detail={}, outcome="X")
    with pytest.raises(AuditUnavailable):  # NaN is not JSON: refused at write time (AUD-4)
        log.record(
            "REPLAY_STARTED", actor=ACTOR, source=SOURCE, target={}, detail={"x": float("nan")}, outcome="X"
        )
    assert log.verify().ok
    store.close()


def test_an_added_trigger_that_skips_audit_rows_fails_closed_and_verify_names_it(tmp_path: Path) -> None:
    """Review 2 finding 3: a ``BEFORE INSERT ... RAISE(IGNORE)`` added to the file skips an
    event (or a checkpoint) without an error and without a break in the chain. The append must
    raise so that the change it records rolls back, and verify must report the extra trigger."""
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock(), interval=5)
    with log.transaction() as conn:
        conn.execute("CREATE TABLE things (x INTEGER)")
    rnd = random.Random(16)
    record(log, rnd, 1)
    conn = raw(tmp_path / "sandbox.db")
    conn.execute(
        "CREATE TRIGGER audit_events_zz BEFORE INSERT ON audit_events "
        "WHEN NEW.action = 'REPLAY_REQUESTED' BEGIN SELECT RAISE(IGNORE); END"
    )
    result = log.verify()
    assert (result.ok, result.reason) == (
        False,
        "SCHEMA_EDITED",
    ) and "extra: audit_events_zz" in result.message
    with pytest.raises(RecordError, match="not stored") as info, log.transaction() as tx:
        tx.execute("INSERT INTO things VALUES (1)")  # the replay this event would record
        log.append(tx, "REPLAY_REQUESTED", actor=ACTOR, source=SOURCE, target={}, detail={}, outcome="X")
    assert info.value.code == "BAD_AUDIT_EVENT"
    assert store._conn().execute("SELECT count(*) FROM things").fetchone() == (0,)
    with pytest.raises(AuditUnavailable):
        record(log, rnd, 2, action="REPLAY_REQUESTED")
    conn.execute("DROP TRIGGER audit_events_zz")
    # The same for a checkpoint: the 5th event's checkpoint is swallowed, so the event goes too.
    conn.execute(
        "CREATE TRIGGER audit_checkpoints_zz BEFORE INSERT ON audit_checkpoints "
        "BEGIN SELECT RAISE(IGNORE); END"
    )
    for i in range(3):
        record(log, rnd, 3 + i)
    with pytest.raises(AuditUnavailable):
        record(log, rnd, 6)
    with pytest.raises(RecordError, match="checkpoint at seq 4 was not stored"):
        log.checkpoint()  # on demand too: never returned as signed when it is not stored
    assert [e["seq"] for e in log.events()] == [1, 2, 3, 4]
    assert "extra: audit_checkpoints_zz" in (log.verify().message or "")
    conn.execute("DROP TRIGGER audit_checkpoints_zz")
    conn.close()
    record(log, rnd, 7)
    assert [c["seq"] for c in log.checkpoints()] == [5] and log.verify().ok
    store.close()


# --------------------------------------------------------------------------- checkpoints and the anchor


def test_checkpoints_every_100_on_demand_and_at_close(tmp_path: Path) -> None:
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    assert log.checkpoint() is None  # an empty log has nothing to sign
    rnd = random.Random(3)
    for i in range(250):
        record(log, rnd, i)
    assert [c["seq"] for c in log.checkpoints()] == [100, 200]
    on_demand = log.checkpoint()
    assert on_demand is not None and on_demand["seq"] == 250
    assert log.checkpoint() == on_demand  # the head is signed already: not again
    record(log, rnd, 251)
    log.close()
    cps = log.checkpoints()
    assert [c["seq"] for c in cps] == [100, 200, 250, 251]
    assert all(audit.verify([], [c], log.public_keys, start_seq=c["seq"] + 1).ok for c in cps)
    anchored, problems = log.anchor.read()
    assert anchored == cps and problems == []
    store.close()


def test_a_checkpoint_reaches_its_anchor_file_only_after_the_events_it_signs_are_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # WAL with synchronous=NORMAL leaves a commit in the page cache until SQLite's next
    # checkpoint: the anchor file (fsynced) could then outlive the events it anchors in a power
    # cut, and the restarted log would look cut short. The log's file is synced first.
    import os

    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    rnd = random.Random(5)
    for i in range(99):
        record(log, rnd, i)
    assert synced == []  # an ordinary commit costs no fsync
    record(log, rnd, 99)  # the 100th event: a checkpoint, anchored
    # The log, its directory (once: the log's entry), then the anchor file.
    assert synced == ["sandbox.db-wal", tmp_path.name, log.anchor.path.name]
    store.close()


def test_the_log_synced_is_the_one_sqlite_writes_behind_a_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite names the log after the database's real path; a store opened through a symlink
    # synced a file that did not exist, silently (found by review).
    import os

    real = tmp_path / "real"
    real.mkdir()
    Store(real / "sandbox.db").close()
    (tmp_path / "link.db").symlink_to(real / "sandbox.db")
    store = Store(tmp_path / "link.db")
    with store.transaction() as conn:
        conn.execute("CREATE TABLE t (x)")
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store.sync()
    store.sync()
    assert synced == [str(real / "sandbox.db-wal"), str(real), str(real / "sandbox.db-wal")]
    store.close()


def test_a_checkpoint_is_never_signed_over_a_rewritten_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    rnd = random.Random(5)
    for i in range(150):
        record(log, rnd, i)
    conn = raw(tmp_path / "sandbox.db")
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("UPDATE audit_events SET detail = '{\"rewritten\":true}' WHERE seq = 120")
    conn.close()
    for i in range(150, 210):
        record(log, rnd, i)  # appends go on (the chain links up from the stored head) ...
    assert [c["seq"] for c in log.checkpoints()] == [100]  # ... but nothing signs seq 200
    assert log.checkpoint() is None
    assert "no checkpoint is signed" in caplog.text
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 120 and result.reason == "HASH_MISMATCH"
    store.close()


def _lose_last_commits(db: Path, tenant: str, events_after: int, checkpoints_after: int) -> None:
    """What a power cut under ``synchronous=NORMAL`` can leave: the last commits gone from the
    database, while the anchor file (fsynced after each commit) keeps their checkpoints."""
    conn = raw(db)
    triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    for name, _ in triggers:
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DELETE FROM audit_events WHERE tenant_id = ? AND seq > ?", (tenant, events_after))
    conn.execute("DELETE FROM audit_checkpoints WHERE tenant_id = ? AND seq > ?", (tenant, checkpoints_after))
    for _, sql in triggers:
        conn.execute(sql)
    conn.close()


def test_a_refused_checkpoint_is_retried_rarely_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 2 finding 4: after a refusal, appends must not re-verify the growing unsigned
    segment each time (throughput fell 2548 -> 13 events/s) nor log an error each time; the
    checkpoint is still never signed over the break, and on demand still re-checks."""
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    rnd = random.Random(17)
    for i in range(250):
        record(log, rnd, i)
    log.checkpoint()  # seq 250, in the database and the anchor file
    _lose_last_commits(tmp_path / "sandbox.db", "acme", 240, 200)
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    checks: list[int] = []
    real = log._check_before_signing

    def counted(conn: sqlite3.Connection, seq: int, hash_: str) -> audit.VerifyResult:
        checks.append(seq)
        return real(conn, seq, hash_)

    monkeypatch.setattr(log, "_check_before_signing", counted)
    caplog.clear()
    for i in range(1000):  # seqs 241..1240
        record(log, rnd, i)
    assert log.refusal is not None and log.refusal.reason == "BROKEN_LINK"
    assert [c["seq"] for c in log.checkpoints()] == [100, 200]  # nothing signed over the break
    assert checks == [300, 400, 600, 1000]  # every 100 events, then backing off while it repeats
    refusals = [r for r in caplog.records if "no checkpoint is signed" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelname == "ERROR"
    assert log.checkpoint() is None and checks[-1] == 1240  # on demand: checked again, still refused
    with pytest.raises(AuditUnavailable):
        log.export({}, actor=ACTOR, source=SOURCE)
    assert len([r for r in caplog.records if "no checkpoint is signed" in r.getMessage()]) == 1
    store.close()


def test_moving_the_anchor_file_aside_after_review_re_anchors_the_log(tmp_path: Path) -> None:
    """The recovery the README documents for a refusal after lost commits: review with /verify,
    move audit-checkpoints.jsonl aside (kept as evidence), restart. The database's checkpoints
    are copied to a new anchor file, and signing resumes from the newest of them."""
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    rnd = random.Random(18)
    for i in range(250):
        record(log, rnd, i)
    log.checkpoint()
    _lose_last_commits(tmp_path / "sandbox.db", "acme", 240, 200)
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    for i in range(100):
        record(log, rnd, i)
    result = log.verify()
    assert log.checkpoint() is None and not result.ok  # names the lost checkpoint at seq 250
    anchor = tmp_path / audit_log.ANCHOR_FILE
    anchor.rename(tmp_path / "audit-checkpoints.reviewed.jsonl")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())  # the restart
    assert [c["seq"] for c in log.anchor.read()[0]] == [100, 200]
    signed = log.checkpoint()
    assert signed is not None and signed["seq"] == 340 and log.refusal is None
    assert log.verify().ok
    bundle = log.export({}, actor=ACTOR, source=SOURCE)
    assert audit.verify_bundle(bundle, log.public_keys).ok
    store.close()


def test_an_export_is_verified_after_its_transaction_and_a_refusal_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 2 finding 6: the whole-range check of an export runs after the write transaction
    commits, not under the lock every audited write waits for. A bundle that fails it is still
    refused (503), and a FAILED ``AUDIT_EXPORTED`` event records the refusal."""
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    rnd = random.Random(19)
    for i in range(150):
        record(log, rnd, i)
    under_lock: list[bool] = []
    real = audit.verify_bundle

    def spy(bundle: dict[str, Any], keys: Any) -> audit.VerifyResult:
        under_lock.append(store._conn().in_transaction)
        return real(bundle, keys)

    monkeypatch.setattr(audit, "verify_bundle", spy)
    assert log.export({}, actor=ACTOR, source=SOURCE)["events"][-1]["seq"] == 151
    assert under_lock == [False]
    # An edit before the newest signed point (100): the check before signing reads 101.. only,
    # so the export's checkpoint is signed; the whole-range check refuses the bundle.
    conn = raw(tmp_path / "sandbox.db")
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("UPDATE audit_events SET detail = '{\"rewritten\":true}' WHERE seq = 50")
    audit_log.create_tables(conn)
    conn.close()
    with pytest.raises(AuditUnavailable) as refused:
        log.export({"from": "1"}, actor=ACTOR, source=SOURCE)
    assert refused.value.details == {"reason": "HASH_MISMATCH", "firstBadSeq": 50}
    assert under_lock == [False, False]
    *_, attempt, failed = log.events()
    assert (attempt["action"], attempt["outcome"], attempt["seq"]) == ("AUDIT_EXPORTED", "SUCCESS", 152)
    assert (failed["action"], failed["outcome"]) == ("AUDIT_EXPORTED", "FAILED")
    assert failed["detail"]["refusedExportSeq"] == 152 and failed["detail"]["firstBadSeq"] == 50
    assert failed["detail"]["reason"] == "HASH_MISMATCH" and failed["detail"]["lastSeq"] == 152
    store.close()


def test_a_crash_between_commit_and_anchor_is_caught_up_at_open(tmp_path: Path) -> None:
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    rnd = random.Random(6)
    for i in range(100):
        record(log, rnd, i)
    anchor = tmp_path / audit_log.ANCHOR_FILE
    assert len(anchor.read_text().splitlines()) == 1
    anchor.write_text("")  # the process died after the commit, before the file write
    forged = audit.sign_checkpoint(
        Ed25519PrivateKey.generate(), None, "acme", 50, "0" * 64, "2026-01-01T00:00:00.000Z"
    )
    conn = raw(tmp_path / "sandbox.db")
    conn.execute(
        "INSERT INTO audit_checkpoints (tenant_id, seq, hash, at, key_id, signature) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [forged[k] for k in ("tenantId", "seq", "hash", "at", "keyId", "signature")],
    )
    conn.close()
    again = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    anchored, _ = again.anchor.read()
    assert [c["seq"] for c in anchored] == [100]  # the genuine one is copied, the forged one is not
    result = again.verify()
    assert not result.ok and result.reason == "UNKNOWN_KEY" and result.first_bad_seq == 50
    store.close()


def test_the_anchor_file_catches_a_cut_tail_and_tells_its_limits(tmp_path: Path) -> None:
    """AUD-2: with an anchored checkpoint past the cut, deleting the tail is detected; events after
    the newest checkpoint are not vouched for, so cutting only those goes unseen (documented)."""
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    rnd = random.Random(7)
    for i in range(130):
        record(log, rnd, i)
    conn = raw(tmp_path / "sandbox.db")
    conn.execute("DROP TRIGGER audit_events_no_delete")
    conn.execute("DELETE FROM audit_events WHERE seq > 120")  # after the last checkpoint (100)
    result = log.verify()
    assert (result.reason, result.first_bad_seq) == ("SCHEMA_EDITED", None)  # the dropped trigger
    audit_log.create_tables(conn)  # ... which an attacker puts back
    result = log.verify()
    assert result.ok and result.head_seq == 120  # the limitation: nothing vouched for 121..130
    conn.execute("DROP TRIGGER audit_events_no_delete")
    conn.execute("DROP TRIGGER audit_checkpoints_no_delete")
    conn.execute("DELETE FROM audit_events WHERE seq > 90")
    conn.execute("DELETE FROM audit_checkpoints")  # the database copy of the evidence, too
    conn.close()
    result = log.verify()
    assert not result.ok and result.reason == "TRUNCATED" and result.first_bad_seq == 91
    store.close()


def test_the_anchor_file_is_read_strictly(tmp_path: Path) -> None:
    path = tmp_path / "anchor.jsonl"
    anchor = AnchorFile(path)
    assert anchor.read() == ([], [])
    anchor.append([{"seq": 1}, {"seq": 2}])
    with open(path, "ab") as fh:
        fh.write(b'{"seq": 3')  # a write cut short by a crash: skipped
    assert anchor.read() == ([{"seq": 1}, {"seq": 2}], [])
    path.write_bytes(b'{"seq": 1}\nnot json\n[1]\n')
    values, problems = anchor.read()
    assert values == [{"seq": 1}] and len(problems) == 2 and "line 2" in problems[0]


def test_key_rotation_keeps_old_checkpoints_verifiable(tmp_path: Path) -> None:
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    rnd = random.Random(8)
    for i in range(100):
        record(log, rnd, i)
    old = log.key.key_id
    (tmp_path / audit_log.KEY_FILE).unlink()  # rotate: a new key is made at the next open
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    assert log.key.key_id != old and set(log.public_keys) == {old, log.key.key_id}
    for i in range(100, 200):
        record(log, rnd, i)
    assert [c["keyId"] for c in log.checkpoints()] == [old, log.key.key_id]
    assert log.verify().ok
    listed = (tmp_path / audit_log.PUBLIC_KEYS_FILE).read_text()
    assert all(audit.public_key_b64(k) in listed for k in log.public_keys.values())
    store.close()


def test_a_bad_key_file_is_refused_in_words(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / audit_log.KEY_FILE).write_text("not a key")
    with pytest.raises(Exception, match="not an unencrypted PEM"):
        AuditKey.load_or_create(tmp_path / audit_log.KEY_FILE)


# --------------------------------------------------------------------------- tampering


def _flip(value: Any, rnd: random.Random) -> Any:
    if isinstance(value, int):
        return value ^ (1 << rnd.randrange(0, 12))
    data = bytearray(value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value)
    i = rnd.randrange(len(data))
    data[i] ^= 1 << rnd.randrange(8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(data)  # stored as a BLOB: what a byte editor leaves behind


def _rows(conn: sqlite3.Connection, table: str) -> list[tuple[int, str, int]]:
    return conn.execute(f"SELECT rowid, tenant_id, seq FROM {table}").fetchall()


def _rechain(conn: sqlite3.Connection, tenant: str, start: int, key: Any) -> None:
    """Rewrite events from ``start`` on with consistent hashes; the attacker also re-signs (with
    their own key) or deletes the database checkpoints that would give them away."""
    events, _ = audit_log.read_chain(conn, tenant)
    prev = audit.genesis_hash(tenant) if start == 1 else events[start - 2]["hash"]
    for e in events[start - 1 :]:
        body = {k: v for k, v in e.items() if k not in ("prevHash", "hash")}
        h = audit.event_hash(body, prev)
        conn.execute(
            "UPDATE audit_events SET prev_hash = ?, hash = ? WHERE tenant_id = ? AND seq = ?",
            (prev, h, tenant, e["seq"]),
        )
        if key is not None:
            conn.execute(
                "UPDATE audit_checkpoints SET hash = ?, key_id = ?, signature = ? "
                "WHERE tenant_id = ? AND seq = ?",
                (
                    h,
                    audit.key_id_for(key),
                    audit.sign_checkpoint(key, None, tenant, e["seq"], h, "2026-01-01T00:00:00.000Z")[
                        "signature"
                    ],
                    tenant,
                    e["seq"],
                ),
            )
        prev = h
    if key is None:
        conn.execute("DELETE FROM audit_checkpoints WHERE tenant_id = ? AND seq >= ?", (tenant, start))


def mutate(conn: sqlite3.Connection, rnd: random.Random, kind: str) -> tuple[str, int | None]:
    """Apply one mutation; returns the tenant it hit and the first seq it affects (None when
    the first bad seq is not pinned down by the mutation alone)."""
    for trigger in (
        "audit_events_no_update",
        "audit_events_no_delete",
        "audit_checkpoints_no_update",
        "audit_checkpoints_no_delete",
    ):
        conn.execute(f"DROP TRIGGER {trigger}")
    tenant = rnd.choice(TENANTS)
    head = EVENTS_PER_TENANT
    if kind == "flip_event":
        columns = [
            "tenant_id",
            "seq",
            "event_id",
            "occurred_at",
            "action",
            "actor",
            "source",
            "target",
            "detail",
            "outcome",
            "prev_hash",
            "hash",
            "replay_id",
        ]
        seq = rnd.randint(1, head)
        column = rnd.choice(columns)
        (value,) = (
            conn.execute(
                f"SELECT CAST({column} AS BLOB) FROM audit_events WHERE tenant_id = ? AND seq = ?",
                (tenant, seq),
            ).fetchone()
            if column != "seq"
            else (seq,)
        )
        if value is None:  # a null replay_id: give it one
            new: Any = "replay-x"
        else:
            new = _flip(value, rnd)
        conn.execute(
            f"UPDATE audit_events SET {column} = ? WHERE tenant_id = ? AND seq = ?", (new, tenant, seq)
        )
        return tenant, seq
    if kind == "flip_checkpoint":
        column = rnd.choice(["tenant_id", "seq", "hash", "at", "key_id", "signature"])
        rowid = rnd.choice([r for r, t, _ in _rows(conn, "audit_checkpoints") if t == tenant])
        (value,) = conn.execute(
            f"SELECT {'seq' if column == 'seq' else f'CAST({column} AS BLOB)'} "
            "FROM audit_checkpoints WHERE rowid = ?",
            (rowid,),
        ).fetchone()
        conn.execute(f"UPDATE audit_checkpoints SET {column} = ? WHERE rowid = ?", (_flip(value, rnd), rowid))
        return tenant, None
    if kind == "delete_event":
        seq = rnd.randint(1, head)
        conn.execute("DELETE FROM audit_events WHERE tenant_id = ? AND seq = ?", (tenant, seq))
        return tenant, seq
    if kind == "swap_events":
        a, b = sorted(rnd.sample(range(1, head + 1), 2))
        conn.execute("UPDATE audit_events SET seq = -1 WHERE tenant_id = ? AND seq = ?", (tenant, a))
        conn.execute("UPDATE audit_events SET seq = ? WHERE tenant_id = ? AND seq = ?", (a, tenant, b))
        conn.execute("UPDATE audit_events SET seq = ? WHERE tenant_id = ? AND seq = -1", (b, tenant))
        return tenant, a
    if kind == "truncate_tail":
        cut = rnd.randint(1, 40)
        conn.execute("DELETE FROM audit_events WHERE tenant_id = ? AND seq > ?", (tenant, head - cut))
        if rnd.random() < 0.5:
            conn.execute(
                "DELETE FROM audit_checkpoints WHERE tenant_id = ? AND seq > ?", (tenant, head - cut)
            )
        return tenant, head - cut + 1
    if kind == "rewrite_tail":
        start = rnd.randint(1, head)
        conn.execute(
            "UPDATE audit_events SET detail = ? WHERE tenant_id = ? AND seq = ?",
            (json.dumps({"reason": "nothing to see here"}), tenant, start),
        )
        _rechain(conn, tenant, start, Ed25519PrivateKey.generate() if rnd.random() < 0.5 else None)
        return tenant, None
    if kind == "swap_key":
        rowid = rnd.choice([r for r, t, _ in _rows(conn, "audit_checkpoints") if t == tenant])
        row = conn.execute("SELECT seq, hash, at FROM audit_checkpoints WHERE rowid = ?", (rowid,)).fetchone()
        other = Ed25519PrivateKey.generate()
        cp = audit.sign_checkpoint(other, None, tenant, row[0], row[1], row[2])
        conn.execute(
            "UPDATE audit_checkpoints SET key_id = ?, signature = ? WHERE rowid = ?",
            (cp["keyId"], cp["signature"], rowid),
        )
        return tenant, row[0]
    if kind == "delete_checkpoint":
        rowid = rnd.choice([r for r, t, _ in _rows(conn, "audit_checkpoints") if t == tenant])
        (seq,) = conn.execute("SELECT seq FROM audit_checkpoints WHERE rowid = ?", (rowid,)).fetchone()
        conn.execute("DELETE FROM audit_checkpoints WHERE rowid = ?", (rowid,))
        return tenant, seq
    if kind == "forged_row":
        seq = rnd.randint(2, head)
        (row,) = [
            r
            for r in conn.execute(
                f"SELECT {audit_log.AUDIT_COLUMNS} FROM audit_events WHERE tenant_id = ? AND seq = ?",
                (tenant, seq),
            )
        ]
        forged = list(row)
        forged[2] = "forged-" + str(rnd.getrandbits(64))
        forged[8] = json.dumps({"reason": "forged"})
        conn.execute("DELETE FROM audit_events WHERE tenant_id = ? AND seq = ?", (tenant, seq))
        conn.execute(
            f"INSERT INTO audit_events ({audit_log.AUDIT_COLUMNS}) VALUES ({', '.join('?' * 13)})", forged
        )
        return tenant, seq
    raise AssertionError(kind)


KINDS = (
    "flip_event", "flip_event", "flip_event", "flip_checkpoint", "delete_event", "swap_events",
    "truncate_tail", "rewrite_tail", "swap_key", "delete_checkpoint", "forged_row",
)  # fmt: skip


def test_a_thousand_mutations_of_the_database_are_all_detected(built: dict[str, Any]) -> None:
    rnd = random.Random(20261126)
    base = copy_of(built["db"])
    untouched = {t: audit_log.read_chain(base, t) for t in TENANTS}
    assert all(r.ok for r in verify_all(base, built).values())
    detected: dict[str, int] = {}
    attempts = 0
    while sum(detected.values()) < 1000:
        attempts += 1
        assert attempts < 1500, "too many mutations could not be applied"
        conn = copy_of(built["db"])
        kind = KINDS[attempts % len(KINDS)]
        try:
            tenant, first_bad = mutate(conn, rnd, kind)
        except sqlite3.IntegrityError:
            continue  # e.g. a flipped seq that another row already has: the database refused it
        audit_log.create_tables(conn)  # the triggers back: the chain alone must tell
        if kind.startswith("flip") and audit_log.read_chain(conn, tenant) == untouched[tenant]:
            continue  # a flip that changed nothing a reader can see
        result = verify_database(conn, tenant, built["anchor"], built["keys"])
        assert not result.ok, (kind, tenant, first_bad, result)
        assert result.reason in audit.REASONS
        if first_bad is not None:
            assert result.first_bad_seq == first_bad, (kind, result)
        detected[kind] = detected.get(kind, 0) + 1
        conn.close()
    assert set(detected) == set(KINDS), detected
    # ... and never on the untouched log.
    assert all(r.ok for r in verify_all(built["db"], built).values())


def test_a_file_with_bytes_that_are_not_utf8_is_read_and_fails(built: dict[str, Any], tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    conn = copy_of(built["db"])
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute(
        "UPDATE audit_events SET outcome = CAST(x'ff41' AS TEXT) WHERE tenant_id = 'globex' AND seq = 7"
    )
    audit_log.create_tables(conn)  # the trigger back: only the bytes are wrong
    target = sqlite3.connect(copy)
    conn.backup(target)
    target.close()
    result = verify_database(copy, "globex", built["anchor"], built["keys"])
    assert not result.ok and result.first_bad_seq == 7
    assert verify_database(copy, "acme", built["anchor"], built["keys"]).ok


# --------------------------------------------------------------------------- queries


def test_audit_query_parameters_are_checked() -> None:
    q = AuditQuery.parse(
        {
            "action": "REPLAY_DENIED",
            "actor": "bob",
            "replayId": "replay-1",
            "from": "5",
            "to": "2026-01-01T10:00:00+01:00",
            "limit": "7",
        }
    )
    assert (q.action, q.actor, q.replay_id, q.from_seq, q.to_time, q.limit) == (
        "REPLAY_DENIED", "bob", "replay-1", 5, "2026-01-01T09:00:00.000Z", 7,
    )  # fmt: skip
    assert q.to_wire() == {
        "action": "REPLAY_DENIED",
        "actor": "bob",
        "replayId": "replay-1",
        "from": 5,
        "to": "2026-01-01T09:00:00.000Z",
        "offset": 0,
        "limit": 7,
    }
    for bad in (
        {"action": "DROP_TABLE"},
        {"replayId": "../etc/passwd"},
        {"from": "yesterday"},
        {"to": "9" * 20},
        {"limit": "0"},
        {"limit": "1001"},
        {"offset": "-1"},
        {"actor": "x\x00"},
        {"sort": "seq"},
    ):
        with pytest.raises(ValidationError):
            AuditQuery.parse(bad)
    assert AuditQuery.parse({}).limit == 100


def test_actions_inventory_is_the_design_list() -> None:
    design = {
        "REPLAY_REQUESTED", "REPLAY_STARTED", "REPLAY_COMPLETED", "REPLAY_FAILED", "REPLAY_ERROR",
        "REPLAY_ABORTED", "REPLAY_DENIED", "CONTROL_HEADER_REJECTED", "AUDIT_QUERIED", "AUDIT_EXPORTED",
    }  # fmt: skip
    assert set(audit_log.ACTIONS) - design == {
        "AUDIT_DENIED",
        "ACCESS_DENIED",
        "LOGIN_FAILED",
        "AUDIT_GUARD_RESTORED",
    } and design <= set(audit_log.ACTIONS)
    assert AUDIT_ACTIONS == audit_log.ACTIONS  # the browser offers every action the log records


# --------------------------------------------------------------------------- review s8 findings 1, 2, 5


def _rewrite_from_genesis(db: Path, tenant: str, seq: int, *, drop_checkpoints: bool) -> None:
    """A database-only attacker: triggers dropped, event ``seq`` rewritten and every hash of the
    tenant recomputed from genesis, optionally the checkpoint rows deleted (no key, no anchor)."""
    conn = raw(db)
    conn.execute("BEGIN IMMEDIATE")
    for name in ("audit_events_no_update", "audit_checkpoints_no_delete"):
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute(
        "UPDATE audit_events SET detail = ?, outcome = 'FAILED' WHERE tenant_id = ? AND seq = ?",
        (json.dumps({"reason": "forged"}), tenant, seq),
    )
    _rechain(conn, tenant, 1, None) if drop_checkpoints else _rechain_keep(conn, tenant)
    audit_log.create_tables(conn)  # the triggers back, to cover the tracks
    conn.execute("COMMIT")
    conn.close()


def _rechain_keep(conn: sqlite3.Connection, tenant: str) -> None:
    prev = audit.genesis_hash(tenant)
    for row in conn.execute(
        f"SELECT {audit_log.AUDIT_COLUMNS} FROM audit_events WHERE tenant_id = ? ORDER BY seq", (tenant,)
    ).fetchall():
        e = audit_log.event_from_row(row)
        h = audit.event_hash(e, prev)
        conn.execute(
            "UPDATE audit_events SET prev_hash = ?, hash = ? WHERE tenant_id = ? AND seq = ?",
            (prev, h, tenant, e["seq"]),
        )
        prev = h


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=st.integers(1, 130), drop=st.booleans(), reopen=st.booleans())
def test_the_server_never_signs_or_exports_a_history_rewritten_in_the_database(
    tmp_path_factory: pytest.TempPathFactory, edit: int, drop: bool, reopen: bool
) -> None:
    """Finding 1: with write access to the database only, rewrite any event (hashes recomputed
    from genesis), with or without deleting the checkpoint rows, and with the server restarted
    or not: no checkpoint is signed over the forgery, at the 100th event, on demand, at shutdown
    or for an export (503), and /verify still names it."""
    data = tmp_path_factory.mktemp("forged")
    store = Store(data / "sandbox.db")
    log = AuditLog.open(store, data, "acme", clock=Clock())
    rnd = random.Random(edit)
    for i in range(130):
        record(log, rnd, i)
    log.close()  # signs seq 130: checkpoints at 100 and 130, both in the anchor file
    signed = [c["seq"] for c in log.checkpoints()]
    assert signed == [100, 130]
    _rewrite_from_genesis(data / "sandbox.db", "acme", edit, drop_checkpoints=drop)
    if reopen:
        log = AuditLog.open(store, data, "acme", clock=Clock())
    for i in range(130, 235):
        record(log, rnd, i)  # appends go on, but the 100th after 130 is not signed
    assert log.checkpoint() is None and log.refusal is not None and not log.refusal.ok
    log.close()
    with pytest.raises(AuditUnavailable) as refused:
        log.export({}, actor=ACTOR, source=SOURCE)
    assert refused.value.code == "AUDIT_UNAVAILABLE" and "does not verify" in refused.value.message
    assert [c["seq"] for c in log.checkpoints()] == ([] if drop else signed)
    assert [c["seq"] for c in log.anchor.read()[0]] == signed
    assert not log.verify().ok
    store.close()


def test_an_honest_log_still_signs_incrementally_after_a_restart(tmp_path: Path) -> None:
    """The check before signing starts at the newest signed point (P5): a restart, a key
    rotation and an export of a range before the head all still sign."""
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    rnd = random.Random(12)
    for i in range(150):
        record(log, rnd, i)
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    for i in range(150, 230):
        record(log, rnd, i)
    assert [c["seq"] for c in log.checkpoints()] == [100, 200]
    part = log.export({"from": "20", "to": "150"}, actor=ACTOR, source=SOURCE)
    assert audit.verify_bundle(part, log.public_keys).ok and part["checkpoints"][-1]["seq"] == 150
    whole = log.export({}, actor=ACTOR, source=SOURCE)
    assert audit.verify_bundle(whole, log.public_keys).ok
    assert log.verify().ok
    store.close()


def test_an_export_carries_the_anchored_checkpoints_the_database_lost(tmp_path: Path) -> None:
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    rnd = random.Random(13)
    for i in range(120):
        record(log, rnd, i)
    conn = raw(tmp_path / "sandbox.db")
    conn.execute("DROP TRIGGER audit_checkpoints_no_delete")
    conn.execute("DELETE FROM audit_checkpoints")
    audit_log.create_tables(conn)
    conn.close()
    bundle = log.export({}, actor=ACTOR, source=SOURCE)
    assert [c["seq"] for c in bundle["checkpoints"]] == [100, 121]  # 100 from the anchor file
    assert audit.verify_bundle(bundle, log.public_keys).ok
    store.close()


REPLACING = (
    "INSERT OR REPLACE INTO {table} ({columns}) VALUES ({marks})",
    "REPLACE INTO {table} ({columns}) VALUES ({marks})",
    "INSERT OR IGNORE INTO {table} ({columns}) VALUES ({marks})",
    "INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING",
)


@pytest.mark.parametrize("sql", REPLACING)
def test_conflict_clauses_cannot_rewrite_or_delete_audit_rows(tmp_path: Path, sql: str) -> None:
    """Finding 2: through the store's own connection, with the triggers in place, no conflict
    clause rewrites or deletes a row (REPLACE used to delete the old row without firing the
    DELETE trigger): every collision on event id, seq, prevHash or a checkpoint's key is refused."""
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    rnd = random.Random(14)
    for i in range(101):
        record(log, rnd, i)
    before = log.events(), log.checkpoints()
    conn = store._conn()
    rows = conn.execute(f"SELECT {audit_log.AUDIT_COLUMNS} FROM audit_events ORDER BY seq").fetchall()
    cols = audit_log.AUDIT_COLUMNS
    collisions = []
    for index, value in ((2, rows[0][2]), (1, 101), (10, rows[5][10])):  # event id, seq, prevHash
        row = list(rows[100])
        row[2] = f"new-{index}" if index != 2 else value
        row[1] = 500 + index if index != 1 else value
        row[10] = "e" * 64 if index != 10 else value
        row[8] = json.dumps({"reason": "rewritten"})
        collisions.append(("audit_events", cols, row))
    cp = before[1][0]
    collisions.append(
        (
            "audit_checkpoints",
            audit_log.CHECKPOINT_COLUMNS,
            [cp["tenantId"], cp["seq"], "0" * 64, cp["at"], cp["keyId"], cp["signature"]],
        )
    )
    for table, columns, values in collisions:
        statement = sql.format(table=table, columns=columns, marks=", ".join("?" * len(values)))
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            with log.transaction() as c:
                c.execute(statement, values)
    assert (log.events(), log.checkpoints()) == before
    assert conn.execute("PRAGMA recursive_triggers").fetchone() == (1,)  # on for every store connection
    assert log.verify().ok
    store.close()


def test_verify_reports_append_only_triggers_dropped_or_changed(tmp_path: Path) -> None:
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    record(log, random.Random(15), 1)
    conn = raw(tmp_path / "sandbox.db")
    conn.execute("DROP TRIGGER audit_events_no_replace")
    result = log.verify()
    assert (result.ok, result.reason) == (
        False,
        "SCHEMA_EDITED",
    ) and "audit_events_no_replace" in result.message
    conn.execute("CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events BEGIN SELECT 1; END")
    result = log.verify()
    assert result.reason == "SCHEMA_EDITED" and "changed: audit_events_no_replace" in result.message
    conn.execute("DROP TRIGGER audit_events_no_replace")
    audit_log.create_tables(conn)
    assert log.verify().ok
    conn.close()
    store.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(1, 200), lines=st.integers(1, 3))
def test_appending_after_a_torn_anchor_line_cuts_the_fragment(
    tmp_path_factory: pytest.TempPathFactory, cut: int, lines: int
) -> None:
    """Finding 5: a crash tears the file's last line; the next append must not glue its line to
    the fragment (which made the file read as edited forever after)."""
    path = tmp_path_factory.mktemp("anchor") / "anchor.jsonl"
    anchor = AnchorFile(path)
    cps = [{"tenantId": "acme", "seq": s, "hash": "a" * 64} for s in range(1, lines + 1)]
    anchor.append(cps)
    raw_bytes = path.read_bytes()
    last = raw_bytes.rstrip(b"\n").rfind(b"\n") + 1
    torn = raw_bytes[: last + min(cut, len(raw_bytes) - last - 1)]  # without its newline
    path.write_bytes(torn)
    anchor.append([cps[-1]])  # what AuditLog.open's catch-up does after such a crash
    values, problems = anchor.read()
    assert problems == [] and values == cps
    assert path.read_bytes().endswith(b"\n")


def test_a_restart_after_a_torn_anchor_write_verifies(tmp_path: Path) -> None:
    store = Store(tmp_path / "sandbox.db")
    log = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    rnd = random.Random(16)
    for i in range(100):
        record(log, rnd, i)
    log.close()
    path = tmp_path / audit_log.ANCHOR_FILE
    path.write_bytes(path.read_bytes()[:40])  # the only line, torn
    again = AuditLog.open(store, tmp_path, "acme", clock=Clock())
    assert again.verify().ok and len(path.read_text().splitlines()) == 1
    store.close()


# --------------------------------------------------------------------------- auditor walk: guards


def test_a_dropped_trigger_is_put_back_at_restart_and_recorded(tmp_path: Path) -> None:
    """The server re-created a dropped append-only trigger at start-up (IF NOT EXISTS) without a
    word: after a restart nothing showed that the guard had been down (auditor walk). Now the
    restart records AUDIT_GUARD_RESTORED, naming it, and the log verifies with it back."""
    import httpx

    from moat_nb.sandbox import start

    data = tmp_path / "sb"

    def restarted() -> tuple[list[dict[str, Any]], bool]:
        """Start the sandbox on ``data`` (the first time: an event or two in the chain before
        the edit); its AUDIT_GUARD_RESTORED events and whether its own audit check holds."""
        handle = start(data=data, per_env=2, seed=3)
        try:
            with httpx.Client(base_url=handle.api, timeout=15.0) as client:
                login = {"username": "admin", "password": "admin"}
                token = client.post("/auth/login", json=login).json()["accessToken"]
                client.headers["Authorization"] = f"Bearer {token}"
                found = client.get("/admin/audit", params={"action": "AUDIT_GUARD_RESTORED"}).json()["data"]
                return found, client.get("/admin/audit/verify").json()["ok"] is True
        finally:
            handle.stop()

    assert restarted()[1]
    conn = raw(data / "sandbox.db")
    conn.execute("DROP TRIGGER audit_events_no_delete")
    conn.close()
    found, verified = restarted()
    assert len(found) == 1 and verified
    event = found[0]
    assert event["detail"]["missing"] == ["audit_events_no_delete"]
    assert event["detail"]["schemaProblem"] is None  # nothing else differs from ours
    assert event["actor"]["username"] == "moat-nb-sandbox" and event["outcome"] == "SUCCESS"
    conn = raw(data / "sandbox.db")
    assert audit_tables.missing_triggers(conn) == []
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_events")
    conn.close()
    # A restart with every guard in place records nothing more.
    assert len(restarted()[0]) == 1
