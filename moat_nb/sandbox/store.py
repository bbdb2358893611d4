"""SQLite storage of executions and processor records (DESIGN.md sections 3, 4 and 8).

One file, WAL mode, one ingest path: :meth:`Store.ingest` takes the body of ``POST /data/chunks``
(a :class:`~moat_nb.model.Chunk` or its wire dict), so recorded traffic and replays are stored by
the same code. :meth:`Store.search` answers every filter of ``POST /search/executions``.

Schema (version :data:`SCHEMA_VERSION`, created or upgraded when a file is opened; the whole
schema lives in :data:`MIGRATIONS`, later issues append to it)::

    schema_version     (version)                                     one row
    executions         (id INTEGER PK, execution_id UNIQUE, summary columns, complete)
    execution_details  (id PK = executions.id, bodies, headers/properties JSON, stack trace)
    processors         ((execution_id, seq) PK, scalar fields, *_h = texts.hash of each payload)
    texts              (hash UNIQUE, text): processor bodies/headers/properties, stored once
    chunks             ((execution_id, chunk_seq) PK, sha256): idempotent re-ingest
    execution_text     FTS5 (trigram) over bodies / headers / errors, rowid = executions.id
    text_pending       (id = executions.id): rows of execution_text written after their commit (v2)

Choices, and why:

* Times are INTEGER epoch milliseconds (``start_ms``, ``end_ms``): the wire carries milliseconds,
  so they round-trip exactly, and range filters are plain integer index ranges.
* Bodies are TEXT as received (section 3: bodies travel as strings); headers and properties are
  JSON text. The summary table is kept narrow (bodies live in ``execution_details``) so that
  searches and counts over many rows read few pages.
* Processor payloads are content-addressed (``texts``, BLAKE2b-128 keys): in ``PROCESSOR``
  capture most processors pass the body and headers on unchanged, so a 50-processor execution
  repeats the same few texts ~100 times. Stored once, the file is ~10x smaller and ingest writes
  ~10x less.
* ``text`` search is a case-insensitive substring match, as Cameleer's (``LIKE '%term%'``,
  reference/cameleer.md section 4.3), over the execution's and its processors' bodies, headers
  (as JSON text) and error types/messages/stack trace. It uses an FTS5 ``trigram`` index
  (SQLite >= 3.34), which answers substring queries from the index; terms shorter than 3
  characters, which a trigram index cannot answer, and SQLite builds without FTS5 fall back to a
  scan with ``instr(lower())`` (ASCII-only case folding there, Unicode folding in the index).
* Threads: every thread gets its own connection (``threading.local``), so readers run in
  parallel under WAL; writes take a process-wide lock before ``BEGIN IMMEDIATE`` so that
  writers queue on the lock instead of spinning in SQLite's busy handler. The Starlette server
  calls the store from its threadpool; :meth:`Store.close` closes every thread's connection.
"""

from __future__ import annotations

import hashlib
import json
import logging
import marshal
import math
import os
import re
import sqlite3
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from pathlib import Path
from typing import Any

import orjson

from ..errors import MoatError, RecordError, ValidationError
from ..model import (
    CAPTURE_MODES,
    EXECUTION_STATUSES,
    Chunk,
    Execution,
    ProcessorRecord,
    check_id,
    parse_time,
)
from .encoder import dumps_text, finite

__all__ = [
    "Store",
    "SCHEMA_VERSION",
    "MIGRATIONS",
    "SEARCH_FILTERS",
    "SORT_FIELDS",
    "MAX_LIMIT",
    "MAX_TEXT_CHARS",
    "DEFAULT_LIMIT",
]

MAX_LIMIT = 1000  # section 4: limit <= 1000
DEFAULT_LIMIT = 50  # Cameleer's default page (reference/cameleer.md section 4.3)
#: The longest ``text`` (``textInBody`` ...) a search takes. FTS5 matches a phrase of n trigrams
#: at every position of each of them: a long text of a repeated character against a stored body
#: that repeats it cost time and memory in n times those positions, and one request as a VIEWER
#: could exhaust the server (security walk: ~500 kB of "[" had the sandbox OOM-killed at 21 GB).
#: An order id, a customer, a fragment of an error message are far shorter.
MAX_TEXT_CHARS = 256
DEFAULT_SORT = "startTime:desc"  # newest first

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
log = logging.getLogger(__name__)
#: A deferred write of one execution's row of the text index (:meth:`Store.write_checked`).
IndexJob = Callable[[sqlite3.Connection], None]

# --------------------------------------------------------------------------- schema


def _schema_v1(fts5: bool) -> str:
    text_table = (
        # Trigram tokenizer: substring matching from the index (sqlite.org/fts5.html, section 4.3.4)
        "CREATE VIRTUAL TABLE execution_text USING fts5(body, headers, errors, tokenize='trigram');"
        if fts5
        else "CREATE TABLE execution_text (rowid INTEGER PRIMARY KEY, body TEXT, headers TEXT, errors TEXT);"
    )
    return f"""
CREATE TABLE executions (
    id                 INTEGER PRIMARY KEY,
    execution_id       TEXT NOT NULL UNIQUE,
    exchange_id        TEXT NOT NULL,
    correlation_id     TEXT,
    route_id           TEXT NOT NULL,
    route_version      TEXT,
    application_id     TEXT,
    instance_id        TEXT,
    environment        TEXT,
    status             TEXT NOT NULL,
    start_ms           INTEGER,
    end_ms             INTEGER,
    duration_ms        REAL,
    error_type         TEXT,
    error_message      TEXT,
    processor_count    INTEGER NOT NULL DEFAULT 0,
    capture_mode       TEXT NOT NULL,
    is_replay          INTEGER NOT NULL DEFAULT 0,
    replay_id          TEXT,
    source_exchange_id TEXT,
    complete           INTEGER NOT NULL DEFAULT 0   -- the final chunk has been stored
);
CREATE INDEX executions_start ON executions (start_ms, execution_id);
CREATE INDEX executions_env_start ON executions (environment, start_ms);
CREATE INDEX executions_app_start ON executions (application_id, start_ms);
CREATE INDEX executions_route_start ON executions (route_id, start_ms);
CREATE INDEX executions_status_start ON executions (status, start_ms);
CREATE INDEX executions_duration ON executions (duration_ms);
CREATE INDEX executions_exchange ON executions (exchange_id, is_replay);
CREATE INDEX executions_correlation ON executions (correlation_id);
CREATE INDEX executions_replay ON executions (replay_id);
CREATE INDEX executions_source ON executions (source_exchange_id);

CREATE TABLE execution_details (
    id                 INTEGER PRIMARY KEY,            -- = executions.id (no FK: it costs a
                                                       -- third of ingest; written together)
    input_body         TEXT,
    output_body        TEXT,
    input_headers      TEXT,
    output_headers     TEXT,
    input_properties   TEXT,
    output_properties  TEXT,
    error_stack_trace  TEXT
);

CREATE TABLE texts (
    id                 INTEGER PRIMARY KEY,
    hash               BLOB NOT NULL UNIQUE,        -- BLAKE2b-128 of the UTF-8 text
    text               TEXT NOT NULL
);

CREATE TABLE processors (
    execution_id       TEXT NOT NULL,
    seq                INTEGER NOT NULL,
    exchange_id        TEXT NOT NULL,
    replay_id          TEXT,
    parent_seq         INTEGER,
    iteration          INTEGER NOT NULL,
    depth              INTEGER NOT NULL,
    processor_id       TEXT NOT NULL,
    processor_type     TEXT NOT NULL,
    route_id           TEXT NOT NULL,
    status             TEXT NOT NULL,
    start_ms           INTEGER,
    end_ms             INTEGER,
    duration_ms        REAL,
    endpoint_uri       TEXT,
    stubbed            INTEGER NOT NULL,
    error_type         TEXT,
    error_message      TEXT,
    body_truncated     INTEGER NOT NULL,
    input_body_h       BLOB,                        -- texts.hash, NULL for a null field
    output_body_h      BLOB,
    input_headers_h    BLOB,
    output_headers_h   BLOB,
    input_properties_h BLOB,
    properties_h       BLOB,
    PRIMARY KEY (execution_id, seq)
) WITHOUT ROWID;                                    -- small rows: the payloads live in texts

CREATE TABLE chunks (
    execution_id       TEXT NOT NULL,
    chunk_seq          INTEGER NOT NULL,
    exchange_id        TEXT NOT NULL,
    replay_id          TEXT,
    final              INTEGER NOT NULL,
    sha256             TEXT NOT NULL,
    PRIMARY KEY (execution_id, chunk_seq)
);

{text_table}
"""


def _schema_v2(fts5: bool) -> str:
    # A replay's text index is written after its end (Store.write_checked(defer_index=True)):
    # the execution's id waits here, in the transaction that stores it, until its row of the
    # index is in, so that an index lost with the process is made at the next open.
    return "CREATE TABLE text_pending (id INTEGER PRIMARY KEY);"


def _schema_v3(fts5: bool) -> str:
    # The agent that posted each chunk (its instance id): an execution belongs to the agent
    # that recorded it, and another agent's chunk for it is refused (Store.write_checked).
    return "ALTER TABLE chunks ADD COLUMN instance_id TEXT;"


#: Version n of the schema is ``MIGRATIONS[n - 1]``: a function of "is FTS5 available" giving
#: SQL statements. Later issues append (replays, replay_events, audit_events, idempotency);
#: a file is upgraded by running the missing steps in one transaction.
def _schema_v4(fts5: bool) -> str:
    # Nothing to change in the tables: from version 4 a replay's ``processor`` trace events in
    # replay_events refer to the stored records ("@seq executionId", replay_tables.py) instead
    # of repeating them, which a version that does not know it would stream as they are. The
    # version number is what makes an older moat_nb refuse the file (SCHEMA_TOO_NEW).
    return ""


MIGRATIONS: tuple[Callable[[bool], str], ...] = (_schema_v1, _schema_v2, _schema_v3, _schema_v4)
SCHEMA_VERSION = len(MIGRATIONS)
#: How many whole executions :meth:`Store.execution` keeps (a trace is ~100 KB in memory).
_CACHED_EXECUTIONS = 64


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (``executescript`` would commit the open transaction).

    ``sqlite3.complete_statement`` knows about ``BEGIN ... END`` in triggers, which a split on
    ``;`` would cut.
    """
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                yield buf
            buf = ""
    if buf.strip():
        yield buf


def _fts5_available(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("CREATE VIRTUAL TABLE temp._fts5_probe USING fts5(x, tokenize='trigram')")
    except sqlite3.OperationalError:
        return False
    conn.execute("DROP TABLE temp._fts5_probe")
    return True


# --------------------------------------------------------------------------- value conversion


def _to_ms(dt: datetime | None) -> int | None:
    return None if dt is None else (dt - _EPOCH) // _MS


def _from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else _EPOCH + ms * _MS


def _json(value: Mapping[str, Any] | None) -> str | None:
    """Every JSON column's text: compact, characters as they are (so that text search sees
    them), NaN/Infinity refused (RFC 8259 section 6) -- the stdlib's JSON at orjson's speed
    (:func:`~moat_nb.sandbox.encoder.dumps`; ~30 maps a replay chunk, 0.3 -> 0.1 ms)."""
    if value is None:
        return None
    try:
        if not finite(value):
            raise ValueError("Out of range float values are not JSON compliant")  # the stdlib's words
        return dumps_text(value)
    except (TypeError, ValueError) as exc:
        raise RecordError(
            f"not representable as JSON: {exc}",
            code="BAD_JSON",
            hint="headers and properties must be JSON objects (no NaN/Infinity, string keys)",
        ) from None


#: A run of 19 digits: the only place an integer literal outside [-2**63, 2**64) can be.
_LONG_DIGITS = re.compile(r"[0-9]{19}")


def _unjson(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    # orjson reads what _json wrote at ~4x the speed (a trace has hundreds of maps), except an
    # integer beyond 64 bits, which it reads as a float without a word (2**64 comes back as
    # 1.8446744073709552e+19): a text with 19 digits in a row, maybe such an integer, is read
    # by the stdlib, which keeps it exact.
    if _LONG_DIGITS.search(text):
        return json.loads(text)  # type: ignore[no-any-return]
    try:
        return orjson.loads(text)  # type: ignore[no-any-return]
    except orjson.JSONDecodeError:
        return json.loads(text)  # type: ignore[no-any-return]


def _text_hash(text: str) -> bytes:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RecordError(
            f"text is not valid Unicode: {exc.reason} at position {exc.start}",
            code="BAD_TEXT",
            hint="bodies and headers travel as UTF-8 (no lone surrogates)",
        ) from None
    return hashlib.blake2b(data, digest_size=16).digest()


# --------------------------------------------------------------------------- chunk validation


def _fail(message: str, *, code: str = "BAD_CHUNK", **details: Any) -> RecordError:
    return RecordError(
        message,
        code=code,
        hint="send the chunk shape of POST /data/chunks (GET /api/v1/api-docs has its schema)",
        details=details,
    )


_NONE = type(None)
#: SQLite's INTEGER is 64 bits: a bigger Python int cannot be bound (OverflowError), and one
#: too big for a float cannot be tested for finiteness either. Refused as bad fields instead.
_I64 = 2**63


def _int64(v: int) -> bool:
    return -_I64 <= v < _I64


def _finite(v: int | float) -> bool:
    return math.isfinite(v) if isinstance(v, float) else _int64(v)


# kind -> (exact types the fast path accepts, the precise check, what the field must be)
_KINDS: dict[str, tuple[frozenset[type], Callable[[Any], bool], str]] = {
    "text": (frozenset({str}), lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "opt_str": (frozenset({str, _NONE}), lambda v: v is None or isinstance(v, str), "a string or null"),
    "time": (
        frozenset({datetime, _NONE}),
        lambda v: v is None or isinstance(v, datetime),
        "an RFC 3339 time or null",
    ),
    "opt_num": (
        frozenset({int, float, _NONE}),
        lambda v: v is None or (isinstance(v, int | float) and not isinstance(v, bool) and _finite(v)),
        "a finite number (an integer within 64 bits) or null",
    ),
    "count": (
        frozenset({int}),
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < _I64,
        "an integer from 0 to 2**63 - 1",
    ),
    "opt_int": (
        frozenset({int, _NONE}),
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and _int64(v)),
        "a 64-bit integer or null",
    ),
    "flag": (frozenset({bool}), lambda v: isinstance(v, bool), "true or false"),
    "opt_dict": (
        frozenset({dict, _NONE}),
        lambda v: v is None or (isinstance(v, Mapping) and all(isinstance(k, str) for k in v)),
        "a JSON object with string keys, or null",
    ),
}


_STR_ONLY = frozenset({str})


class _Fields:
    """A record's fields grouped by the check they need (dataclasses do not check types).

    A chunk has thousands of fields, so the common case runs at C speed: the tuple of the
    fields' types is looked up among the type signatures already found right, then the few
    value conditions (non-empty, >= 0, finite, string keys) are checked. Anything else takes the
    field-by-field road, which names the bad field.
    """

    def __init__(self, **groups: str) -> None:
        self.names = tuple(name for names in groups.values() for name in names.split())
        self.kinds = tuple(kind for kind, names in groups.items() for _ in names.split())
        self._get = attrgetter(*self.names)
        self._good: set[tuple[type, ...]] = set()
        self._index = {kind: [i for i, k in enumerate(self.kinds) if k == kind] for kind in _KINDS}

    def _bad(self, i: int, value: Any, where: str) -> RecordError:
        return _fail(
            f"{where}: {self.names[i]} must be {_KINDS[self.kinds[i]][2]}, not {value!r:.80}",
            code="BAD_FIELD",
            field=self.names[i],
        )

    def check(self, record: Any, where: str, dicts_seen: set[int]) -> None:
        """Raise :class:`RecordError` naming the first bad field. ``dicts_seen`` holds the ids
        of dicts already checked in this chunk (the engine shares unchanged captures)."""
        values = self._get(record)
        signature = tuple(map(type, values))
        if signature not in self._good:
            for i, (kind, value) in enumerate(zip(self.kinds, values, strict=True)):
                if not _KINDS[kind][1](value):
                    raise self._bad(i, value, where)
            if len(self._good) < 1024:
                self._good.add(signature)
            return
        index = self._index
        for i in index["text"]:
            if not values[i]:
                raise self._bad(i, values[i], where)
        for i in index["count"]:
            if not 0 <= values[i] < _I64:
                raise self._bad(i, values[i], where)
        for i in index["opt_int"]:
            if values[i] is not None and not -_I64 <= values[i] < _I64:
                raise self._bad(i, values[i], where)
        for i in index["opt_num"]:
            if values[i] is not None and not _finite(values[i]):
                raise self._bad(i, values[i], where)
        for i in index["opt_dict"]:
            d = values[i]
            if d is not None and id(d) not in dicts_seen:
                # The usual case (all keys exactly str) at C speed; subclasses the long way.
                if not _STR_ONLY.issuperset(map(type, d)) and not all(isinstance(k, str) for k in d):
                    raise self._bad(i, d, where)
                dicts_seen.add(id(d))


_EXEC_FIELDS = _Fields(
    text="route_id status capture_mode",
    opt_str="correlation_id route_version application_id instance_id environment error_type "
    "error_message input_body output_body error_stack_trace",
    time="start_time end_time",
    opt_num="duration_ms",
    count="processor_count",
    flag="is_replay",
    opt_dict="input_headers output_headers input_properties output_properties",
)
_PROC_FIELDS = _Fields(
    text="processor_id processor_type route_id status",
    opt_str="endpoint_uri error_type error_message input_body output_body",
    time="start_time end_time",
    opt_num="duration_ms",
    count="seq iteration depth",
    opt_int="parent_seq",
    flag="stubbed body_truncated",
    opt_dict="input_headers output_headers input_properties properties",
)


@dataclass(frozen=True, slots=True)
class _Checked:
    """A chunk that passed validation, as the rows it writes (ids filled in from the chunk)."""

    execution_id: str
    exchange_id: str
    chunk_seq: int
    final: bool
    replay_id: str | None
    summary: tuple[Any, ...] | None  # values of _SUMMARY_COLUMNS
    detail: tuple[Any, ...] | None  # values of _DETAIL_COLUMNS
    processors: list[tuple[Any, ...]]  # values of _PROC_COLUMNS
    texts: dict[bytes, str]  # the processors' payload texts by hash
    sha256: str
    instance_id: str | None = None  # the agent that posted the chunk (None: not known)


def _as_chunk(chunk: Chunk | Mapping[str, Any]) -> Chunk:
    if isinstance(chunk, Chunk):
        return chunk
    if not isinstance(chunk, Mapping):
        raise _fail(f"a chunk must be a JSON object, not {type(chunk).__name__}")
    try:
        return Chunk.from_wire(chunk)
    except RecordError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise _fail(f"malformed chunk: {exc}") from None


def _stored_as(conn: sqlite3.Connection, c: _Checked) -> bool | None:
    """Whether the chunk's ``(executionId, chunkSeq)`` is stored with this content (True), with
    other content (False), or not at all (None)."""
    row = conn.execute(
        "SELECT sha256 FROM chunks WHERE execution_id = ? AND chunk_seq = ?", (c.execution_id, c.chunk_seq)
    ).fetchone()
    return None if row is None else row[0] == c.sha256 or row[0] == _legacy_digest(c)


def _content_digest(written: tuple[Any, ...]) -> str:
    """SHA-256 of what a chunk writes (payload texts enter through their hashes): the
    idempotency key of a re-sent chunk, so equal values must give equal bytes.

    marshal format 0 is exact and deterministic for the str/int/float/bool/bytes/None tuples
    and lists of a chunk's rows: it writes floats as their repr, and has neither the object
    references (format 3+) nor the interned-string marker (1+) that would make the bytes depend
    on which objects are shared. 0.1 ms a replay chunk where ``repr()`` took 0.32. (A chunk
    stored by an earlier version and re-sent after an upgrade of this code or of Python may
    differ and get 409 CHUNK_CONFLICT; a new chunk is not affected.)"""
    return hashlib.sha256(marshal.dumps(written, 0)).hexdigest()


def _legacy_digest(c: _Checked) -> str:
    """The content digest versions before schema 3 stored (``repr()`` of the same rows): a chunk
    they stored and an agent re-sends after an upgrade is the same chunk, not a conflict."""
    head = (c.execution_id, c.exchange_id, c.chunk_seq, c.final, c.replay_id)
    return hashlib.sha256(repr((head, c.summary, c.detail, c.processors)).encode("utf-8")).hexdigest()


def _validate(chunk: Chunk | Mapping[str, Any]) -> _Checked:
    """Check one chunk completely and turn it into rows, before anything is written (pure)."""
    c = _as_chunk(chunk)
    check_id(c.execution_id, "executionId")
    check_id(c.exchange_id, "exchangeId")
    if c.replay_id is not None:
        check_id(c.replay_id, "replayId")
    if not _KINDS["count"][1](c.chunk_seq):
        raise _fail(f"chunkSeq must be an integer >= 0, not {c.chunk_seq!r}", field="chunkSeq")
    if not isinstance(c.final, bool):
        raise _fail(f"final must be true or false, not {c.final!r}", field="final")
    if not isinstance(c.processors, tuple | list):
        raise _fail("processors must be a list of processor records", field="processors")

    x = c.execution
    processors: Sequence[ProcessorRecord] = c.processors
    summary = detail = None
    if x is not None:
        if not isinstance(x, Execution):
            raise _fail("execution must be an Execution record", field="execution")
        if x.execution_id != c.execution_id or x.exchange_id != c.exchange_id:
            raise _fail(
                "the execution's executionId/exchangeId differ from the chunk's",
                execution=[x.execution_id, x.exchange_id],
                chunk=[c.execution_id, c.exchange_id],
            )
        _EXEC_FIELDS.check(x, "execution", set())
        if x.status not in EXECUTION_STATUSES:
            raise _fail(f"execution status {x.status!r} is not one of {EXECUTION_STATUSES}")
        if x.capture_mode not in CAPTURE_MODES:
            raise _fail(f"captureMode {x.capture_mode!r} is not one of {CAPTURE_MODES}")
        if x.source_exchange_id is not None:
            check_id(x.source_exchange_id, "sourceExchangeId")
        if x.replay_id is not None:
            check_id(x.replay_id, "replayId")
        if x.replay_id not in (None, c.replay_id):
            raise _fail(f"execution replayId {x.replay_id!r} differs from the chunk's {c.replay_id!r}")
        if c.replay_id is None and (x.is_replay or x.source_exchange_id is not None):
            # Section 3: isReplay and sourceExchangeId are a replay's only, and a replay's trace
            # comes tagged with the replayId of a command the platform sent (and audited). Kept,
            # this would be a "replay" no Replay resource or audit record vouches for, and an
            # exchange hidden from a notebook's isReplay=false history (security walk).
            raise _fail(
                "isReplay/sourceExchangeId are set on an execution whose chunk carries no "
                "replayId: only a replay's trace, tagged with its replayId, is a replay",
                field="execution.isReplay" if x.is_replay else "execution.sourceExchangeId",
            )
        if x.processors:
            if processors:
                raise _fail("send processors either in the chunk or in its execution, not both")
            processors = x.processors
        summary = (
            c.execution_id, c.exchange_id, x.correlation_id, x.route_id, x.route_version,
            x.application_id, x.instance_id, x.environment, x.status, _to_ms(x.start_time),
            _to_ms(x.end_time), x.duration_ms, x.error_type, x.error_message, x.processor_count,
            x.capture_mode,
            int(x.is_replay or c.replay_id is not None),  # a chunk tagged with a replayId is a replay's
            c.replay_id, x.source_exchange_id,
        )  # fmt: skip
        detail = (
            x.input_body, x.output_body, _json(x.input_headers), _json(x.output_headers),
            _json(x.input_properties), _json(x.output_properties), x.error_stack_trace,
        )  # fmt: skip
        for value in (*summary, *detail):
            if isinstance(value, str):
                _text_hash(value)  # rejects what UTF-8 cannot carry (lone surrogates)
    elif c.final:
        raise _fail("the final chunk must carry the execution summary", field="execution")

    seen: set[int] = set()
    rows: list[tuple[Any, ...]] = []
    texts: dict[bytes, str] = {}
    hashes: dict[str, bytes] = {}
    # The engine hands unchanged headers/properties on as the same dict object: check and
    # encode each object once. Ids are stable: the chunk holds every object until we return.
    dicts_seen: set[int] = set()
    encoded: dict[int, str | None] = {}

    def ref(text: str | None) -> bytes | None:
        if text is None:
            return None
        h = hashes.get(text)
        if h is None:
            h = hashes[text] = _text_hash(text)
            texts[h] = text
        return h

    def json_ref(value: Mapping[str, Any] | None) -> bytes | None:
        if value is None:
            return None
        text = encoded.get(id(value))
        if text is None:
            text = encoded[id(value)] = _json(value)
        return ref(text)

    for p in processors:
        if not isinstance(p, ProcessorRecord):
            raise _fail("processors must be processor records", field="processors")
        _PROC_FIELDS.check(p, f"processor seq {p.seq!r}", dicts_seen)
        if p.seq in seen:
            raise _fail(f"processor seq {p.seq} appears twice in the chunk", field="seq")
        seen.add(p.seq)
        if p.execution_id not in ("", None, c.execution_id):
            raise _fail(f"processor seq {p.seq}: executionId {p.execution_id!r} is not the chunk's")
        if p.exchange_id not in ("", None, c.exchange_id):
            raise _fail(f"processor seq {p.seq}: exchangeId {p.exchange_id!r} is not the chunk's")
        if p.replay_id not in (None, c.replay_id):
            raise _fail(f"processor seq {p.seq}: replayId {p.replay_id!r} is not the chunk's")
        rows.append(
            (
                c.execution_id,
                p.seq,
                c.exchange_id,
                c.replay_id,
                p.parent_seq,
                p.iteration,
                p.depth,
                p.processor_id,
                p.processor_type,
                p.route_id,
                p.status,
                _to_ms(p.start_time),
                _to_ms(p.end_time),
                p.duration_ms,
                p.endpoint_uri,
                int(p.stubbed),
                p.error_type,
                p.error_message,
                int(p.body_truncated),
                ref(p.input_body),
                ref(p.output_body),
                json_ref(p.input_headers),
                json_ref(p.output_headers),
                json_ref(p.input_properties),
                json_ref(p.properties),
            )
        )

    head = (c.execution_id, c.exchange_id, c.chunk_seq, c.final, c.replay_id)
    digest = _content_digest((head, summary, detail, rows))
    return _Checked(*head, summary=summary, detail=detail, processors=rows, texts=texts, sha256=digest)


# --------------------------------------------------------------------------- search filters

#: Filter names of section 4 (camelCase, as the HTTP body has them), plus Cameleer's
#: ``textInBody`` / ``textInHeaders`` / ``textInErrors``.
SEARCH_FILTERS = (
    "environment",
    "application",
    "routeId",
    "status",
    "timeFrom",
    "timeTo",
    "correlationId",
    "exchangeId",
    "text",
    "textInBody",
    "textInHeaders",
    "textInErrors",
    "durationMin",
    "durationMax",
    "isReplay",
    "replayId",
    "sourceExchangeId",
    "offset",
    "limit",
    "sort",
)
# Cameleer names this filter ``application`` (once ``group``); its records say ``applicationId``.
_ALIASES = {"applicationId": "application"}
# Equality filters: name -> column. A list value means "any of".
_EQUALS = {
    "environment": "environment",
    "application": "application_id",
    "routeId": "route_id",
    "status": "status",
    "correlationId": "correlation_id",
    "exchangeId": "exchange_id",
    "replayId": "replay_id",
    "sourceExchangeId": "source_exchange_id",
}
_TEXT = {"text": None, "textInBody": "body", "textInHeaders": "headers", "textInErrors": "errors"}

#: Sort fields (camelCase; snake_case accepted) -> column. Ties are broken by executionId.
SORT_FIELDS = {
    "startTime": "start_ms",
    "endTime": "end_ms",
    "durationMs": "duration_ms",
    "status": "status",
    "routeId": "route_id",
    "environment": "environment",
    "applicationId": "application_id",
    "instanceId": "instance_id",
    "correlationId": "correlation_id",
    "exchangeId": "exchange_id",
    "executionId": "execution_id",
    "processorCount": "processor_count",
}


def _bad(message: str, **details: Any) -> ValidationError:
    return ValidationError(
        message,
        hint="see the filters of POST /search/executions in GET /api/v1/api-docs "
        "(p.executions() takes them in snake_case)",
        details=details,
    )


def _snake_to_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise _bad(f"{name} must be an integer {bound}, not {value!r}", field=name)
    return value


def _number(name: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
        raise _bad(f"{name} must be a number, not {value!r}", field=name)
    return float(value)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise _bad(f"{name} must be true or false, not {value!r}", field=name)
    return value


def _strings(name: str, value: Any) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list | tuple) or not values or not all(isinstance(v, str) for v in values):
        raise _bad(f"{name} must be a string or a non-empty list of strings, not {value!r}", field=name)
    return list(values)


def _time_ms(name: str, value: Any) -> int:
    try:
        dt = parse_time(value)
    except RecordError as exc:
        raise _bad(f"{name}: {exc.message}", field=name) from None
    assert dt is not None
    return _to_ms(dt)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class _Query:
    where: str
    params: tuple[Any, ...]
    order: str
    offset: int
    limit: int
    text: bool = False  # a text filter is among the conditions


def _query(filters: Mapping[str, Any], fts5: bool) -> _Query:
    """Turn search filters into SQL (pure); raises ValidationError naming the bad filter."""
    f: dict[str, Any] = {}
    for key, value in filters.items():
        camel = _snake_to_camel(key) if isinstance(key, str) else repr(key)
        name = _ALIASES.get(camel, camel)
        if name not in SEARCH_FILTERS:
            raise _bad(f"unknown search filter {key!r}", field=key, allowed=list(SEARCH_FILTERS))
        if name in f:
            raise _bad(f"search filter {name!r} given twice (as {key!r})", field=key)
        if value is not None:  # null in the HTTP body means "no filter"
            f[name] = value

    where: list[str] = []
    params: list[Any] = []
    for name, column in _EQUALS.items():
        if name in f:
            values = _strings(name, f[name])
            if name == "status":
                for v in values:
                    if v not in EXECUTION_STATUSES:
                        raise _bad(f"status {v!r} is not one of {EXECUTION_STATUSES}", field="status")
            where.append(f"e.{column} IN ({','.join('?' * len(values))})")
            params.extend(values)
    if "timeFrom" in f:  # inclusive
        where.append("e.start_ms >= ?")
        params.append(_time_ms("timeFrom", f["timeFrom"]))
    if "timeTo" in f:  # exclusive: adjacent windows do not count an execution twice
        where.append("e.start_ms < ?")
        params.append(_time_ms("timeTo", f["timeTo"]))
    if "durationMin" in f:
        where.append("e.duration_ms >= ?")
        params.append(_number("durationMin", f["durationMin"]))
    if "durationMax" in f:
        where.append("e.duration_ms <= ?")
        params.append(_number("durationMax", f["durationMax"]))
    if "isReplay" in f:
        where.append("e.is_replay = ?")
        params.append(int(_bool("isReplay", f["isReplay"])))
    for name, column in _TEXT.items():
        if name not in f or f[name] == "":
            continue
        term = f[name]
        if not isinstance(term, str):
            raise _bad(f"{name} must be a string, not {term!r}", field=name)
        # Both would reach SQLite and fail there (a 500; found by Schemathesis): FTS5 reads its
        # query as a C string, so a NUL ends the phrase ("unterminated string"), and a lone
        # surrogate cannot be encoded as UTF-8 to be bound at all. Refused here, with what to fix.
        if "\x00" in term:
            raise _bad(f"{name} must not contain NUL (U+0000)", field=name)
        if len(term) > MAX_TEXT_CHARS:
            raise _bad(
                f"{name} is {len(term)} characters long; a search text has at most {MAX_TEXT_CHARS}",
                field=name,
                max=MAX_TEXT_CHARS,
            )
        try:
            term.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _bad(
                f"{name} is not valid Unicode: {exc.reason} at position {exc.start}", field=name
            ) from None
        columns = [column] if column else ["body", "headers", "errors"]
        if fts5 and len(term) >= 3:
            phrase = '"' + term.replace('"', '""') + '"'
            match = phrase if column is None else f"{column} : {phrase}"
            where.append("e.id IN (SELECT rowid FROM execution_text WHERE execution_text MATCH ?)")
            params.append(match)
        else:
            # A trigram index cannot answer terms under 3 characters: scan the text instead.
            scan = " OR ".join(f"instr(lower({c}), lower(?)) > 0" for c in columns)
            where.append(f"e.id IN (SELECT rowid FROM execution_text WHERE {scan})")
            params.extend([term] * len(columns))

    sort = f.get("sort", DEFAULT_SORT)
    if not isinstance(sort, str):
        raise _bad(f"sort must be a string like 'startTime:desc', not {sort!r}", field="sort")
    field_name, _, direction = sort.partition(":")
    field_name = field_name.strip()
    column = SORT_FIELDS.get(field_name) or SORT_FIELDS.get(_snake_to_camel(field_name))
    direction = (direction.strip() or "asc").lower()
    if column is None or direction not in ("asc", "desc"):
        raise _bad(
            f"sort {sort!r} is not FIELD[:asc|desc] with FIELD one of {sorted(SORT_FIELDS)}",
            field="sort",
        )
    # NULLs sort as the smallest value (SQLite's rule): first ascending, last descending.
    order = f"e.{column} {direction.upper()}, e.execution_id {direction.upper()}"

    return _Query(
        where=" AND ".join(where) or "1",
        params=tuple(params),
        order=order,
        offset=_int("offset", f.get("offset", 0), 0, 2**62),
        limit=_int("limit", f.get("limit", DEFAULT_LIMIT), 0, MAX_LIMIT),
        text=any(f.get(name) for name in _TEXT),
    )


# --------------------------------------------------------------------------- rows <-> records

_SUMMARY_COLUMNS = (
    "execution_id exchange_id correlation_id route_id route_version application_id instance_id "
    "environment status start_ms end_ms duration_ms error_type error_message processor_count "
    "capture_mode is_replay replay_id source_exchange_id"
).split()
_SUMMARY_ENVIRONMENT = _SUMMARY_COLUMNS.index("environment")
_DETAIL_COLUMNS = (
    "input_body output_body input_headers output_headers input_properties output_properties error_stack_trace"
).split()
_PROC_SCALARS = (
    "execution_id seq exchange_id replay_id parent_seq iteration depth processor_id processor_type "
    "route_id status start_ms end_ms duration_ms endpoint_uri stubbed error_type error_message "
    "body_truncated"
).split()
_PROC_TEXTS = "input_body output_body input_headers output_headers input_properties properties".split()
_PROC_COLUMNS = [*_PROC_SCALARS, *(f"{t}_h" for t in _PROC_TEXTS)]
_JSON_FIELDS = frozenset(
    {"input_headers", "output_headers", "input_properties", "output_properties", "properties"}
)

_SUMMARY_SQL = ", ".join(f"e.{c}" for c in _SUMMARY_COLUMNS)
# A processor with its payload texts: one LEFT JOIN on texts per payload field.
_PROC_SELECT = (
    "SELECT "
    + ", ".join([*(f"p.{c}" for c in _PROC_SCALARS), *(f"t{i}.text" for i in range(len(_PROC_TEXTS)))])
    + " FROM processors p "
    + " ".join(f"LEFT JOIN texts t{i} ON t{i}.hash = p.{t}_h" for i, t in enumerate(_PROC_TEXTS))
)
_INSERT_PROCESSOR = (
    f"INSERT OR REPLACE INTO processors ({', '.join(_PROC_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_PROC_COLUMNS))})"
)
_UPSERT_EXECUTION = (
    f"INSERT INTO executions ({', '.join(_SUMMARY_COLUMNS)}, complete) "
    f"VALUES ({', '.join('?' * (len(_SUMMARY_COLUMNS) + 1))}) ON CONFLICT (execution_id) DO UPDATE SET "
    + ", ".join(f"{col} = excluded.{col}" for col in [*_SUMMARY_COLUMNS[1:], "complete"])
)
_UPSERT_DETAIL = (
    f"INSERT OR REPLACE INTO execution_details (id, {', '.join(_DETAIL_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(_DETAIL_COLUMNS) + 1))})"
)


def _execution_from_row(row: Sequence[Any], detail: Sequence[Any] | None = None) -> Execution:
    kw = dict(zip(_SUMMARY_COLUMNS, row, strict=True))
    kw["start_time"] = _from_ms(kw.pop("start_ms"))
    kw["end_time"] = _from_ms(kw.pop("end_ms"))
    kw["is_replay"] = bool(kw["is_replay"])
    if detail is not None:
        for name, value in zip(_DETAIL_COLUMNS, detail, strict=True):
            kw[name] = _unjson(value) if name in _JSON_FIELDS else value
    return Execution(**kw)


def _processor_from_row(row: Sequence[Any]) -> ProcessorRecord:
    kw = dict(zip([*_PROC_SCALARS, *_PROC_TEXTS], row, strict=True))
    kw["start_time"] = _from_ms(kw.pop("start_ms"))
    kw["end_time"] = _from_ms(kw.pop("end_ms"))
    kw["stubbed"] = bool(kw["stubbed"])
    kw["body_truncated"] = bool(kw["body_truncated"])
    for name in _JSON_FIELDS & kw.keys():
        kw[name] = _unjson(kw[name])
    return ProcessorRecord(**kw)


# --------------------------------------------------------------------------- the text index

_S_ERR = [_SUMMARY_COLUMNS.index(c) for c in ("error_type", "error_message")]
_D_BODY = [_DETAIL_COLUMNS.index(c) for c in ("input_body", "output_body")]
_D_HEAD = [_DETAIL_COLUMNS.index(c) for c in ("input_headers", "output_headers")]
_D_ERR = [_DETAIL_COLUMNS.index("error_stack_trace")]
# Per processor: (input body, output body, input headers, output headers, error type, message).
_P_INDEXED = [
    *(
        _PROC_COLUMNS.index(f"{t}_h")
        for t in ("input_body", "output_body", "input_headers", "output_headers")
    ),
    _PROC_COLUMNS.index("error_type"),
    _PROC_COLUMNS.index("error_message"),
]


def _distinct(values: Iterable[str | None]) -> str:
    # "\n" between parts: a term could only match across two parts by containing a newline.
    return "\n".join(dict.fromkeys(v for v in values if v))


def _index_text(
    conn: sqlite3.Connection,
    exec_pk: int,
    summary: Sequence[Any],
    detail: Sequence[Any],
    processors: Sequence[Sequence[str | None]],
) -> None:
    """(Re)write the execution's row of the text index: bodies, headers, errors.

    ``processors`` are (input body, output body, input headers, output headers, error type,
    error message) per processor record.
    """
    body = _distinct([*(detail[i] for i in _D_BODY), *(v for p in processors for v in p[0:2])])
    headers = _distinct([*(detail[i] for i in _D_HEAD), *(v for p in processors for v in p[2:4])])
    errors = _distinct(
        [
            *(summary[i] for i in _S_ERR),
            *(detail[i] for i in _D_ERR),
            *(v for p in processors for v in p[4:6]),
        ]
    )
    conn.execute("DELETE FROM execution_text WHERE rowid = ?", (exec_pk,))
    conn.execute(
        "INSERT INTO execution_text (rowid, body, headers, errors) VALUES (?, ?, ?, ?)",
        (exec_pk, body, headers, errors),
    )


def _index_text_from_rows(conn: sqlite3.Connection, exec_pk: int, execution_id: str) -> None:
    """The same, from what is stored (an execution that came in several chunks)."""
    summary = conn.execute(
        f"SELECT {', '.join(_SUMMARY_COLUMNS)} FROM executions WHERE id = ?", (exec_pk,)
    ).fetchone()
    detail = conn.execute(
        f"SELECT {', '.join(_DETAIL_COLUMNS)} FROM execution_details WHERE id = ?", (exec_pk,)
    ).fetchone()
    processors = conn.execute(
        "SELECT ib.text, ob.text, ih.text, oh.text, p.error_type, p.error_message FROM processors p "
        "LEFT JOIN texts ib ON ib.hash = p.input_body_h LEFT JOIN texts ob ON ob.hash = p.output_body_h "
        "LEFT JOIN texts ih ON ih.hash = p.input_headers_h "
        "LEFT JOIN texts oh ON oh.hash = p.output_headers_h WHERE p.execution_id = ?",
        (execution_id,),
    ).fetchall()
    _index_text(conn, exec_pk, summary, detail, processors)


# --------------------------------------------------------------------------- the store


@contextmanager
def _unicode_errors() -> Iterator[None]:
    """Text that UTF-8 cannot carry reaches SQLite as an encoding error: report it as the
    malformed record it is (raised inside the write transaction, which then rolls back)."""
    try:
        yield
    except UnicodeEncodeError as exc:
        raise RecordError(
            f"text is not valid Unicode: {exc.reason} at position {exc.start}",
            code="BAD_TEXT",
            hint="ids, names and bodies travel as UTF-8 (no lone surrogates)",
        ) from None


#: Pages in the write-ahead log at which a committing writer copies it into the database file
#: itself (SQLite's default is 1,000): here only a backstop, for when the checkpointer below
#: cannot keep up.
WAL_BACKSTOP_PAGES = 10_000


class _Checkpointer:
    """Copies the write-ahead log into the database file (a ``PASSIVE`` checkpoint,
    sqlite.org/pragma.html#pragma_wal_checkpoint) from a thread of its own, a moment after
    commits.

    Why: with SQLite's automatic checkpoints the commit that takes the log past 1,000 pages
    copies all of them and syncs both files, inside the request that committed: with ~130 pages
    a replay, one replay in eight paid 4-12 ms of CPU and up to 30 ms of fsync for the others
    (0.35 ms of CPU a replay on average, and most of P2's p99; DESIGN.md section 11). SQLite
    releases the interpreter lock while it checkpoints, so here the copy runs beside the
    server's Python on another core. A ``PASSIVE`` checkpoint neither waits for nor blocks
    readers and writers; what it cannot copy yet is copied the next time. The thread starts at
    the first commit (a store that only reads has none) and stops in :meth:`Store.close`."""

    def __init__(self, path: Path, delay: float) -> None:
        self.path = path
        self.delay = delay
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: Checkpoints run so far (for tests and diagnostics).
        self.runs = 0

    def poke(self) -> None:
        """A transaction has committed: checkpoint after :attr:`delay` seconds."""
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(
                        target=self._run, name="moat-store-checkpoint", daemon=True
                    )
                    self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            while True:
                self._wake.wait()
                # A burst of commits is copied once; a stop does not wait for the delay.
                if self._stop.wait(self.delay):
                    return
                self._wake.clear()  # commits from here on wake the next round
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.runs += 1
                except sqlite3.Error as exc:  # a full disk, say: the writers' backstop remains
                    log.warning("checkpoint of %s failed: %s", self.path, exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)


class Store:
    """The sandbox's storage: executions, processor records, and (later) replays and audit.

    ``Store(path)`` opens or creates the file; ``":memory:"`` is not supported (every thread
    needs its own connection to the same database), use a temporary file instead.
    """

    def __init__(self, path: str | Path, *, batch_size: int = 200, checkpoint_delay: float = 0.1) -> None:
        self.path = Path(path)
        if str(path) == ":memory:":
            raise MoatError(
                "the store needs a file: each thread opens its own connection to it",
                code="STORE_PATH",
                hint="pass a file path, e.g. in a temporary folder",
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._closed = False
        self._checkpointer = _Checkpointer(self.path, checkpoint_delay)
        # Executions read whole (POST /replays reads its source, GET /executions/{id} the same
        # trace again), by id. A stored execution changes only through ingest, which forgets
        # it after committing; a read that overlapped an ingest of the same id is not kept.
        self._cache: OrderedDict[str, Execution] = OrderedDict()
        self._cache_lock = threading.Lock()
        # Deferred text-index jobs not yet run (write_checked(defer_index=True)).
        self._index_cond = threading.Condition()
        self._index_pending = 0
        #: Deferred jobs not yet run, each with its number (1, 2, ... in the order issued), so
        #: that a search waits for those issued before it only; searches waiting now.
        self._index_open: dict[IndexJob, int] = {}
        self._index_issued = 0
        self._index_waiters = 0
        #: Called (from the searching thread) before a text search waits for deferred index
        #: jobs: their owner (:class:`~moat_nb.sandbox.replays.ReplayService`) holds them back
        #: for a quiet moment, and runs them now instead.
        self.index_wanted: Callable[[], None] | None = None
        self._ingests = 0  # committed ingests so far
        self._recent: deque[tuple[int, str]] = deque(maxlen=1024)  # (ingest number, executionId)
        self._synced_dir: str | None = None  # the log whose directory entry sync() made durable
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file
        self._migrate(conn)
        row = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'execution_text'").fetchone()
        self.fts5 = bool(row and "fts5" in row[0].lower())
        self._index_missing(conn)

    # -- connections and transactions

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise MoatError(f"the store {self.path} is closed", code="STORE_CLOSED", hint="open a new Store")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False only
            # so that close() can close other threads' connections; each is used by one thread.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA synchronous=NORMAL")  # safe with WAL (sqlite.org/wal.html)
            conn.execute("PRAGMA foreign_keys=ON")
            # For the audit log's tables (audit_log.py): belt to their BEFORE INSERT triggers'
            # braces, with recursive triggers on, a row that a REPLACE conflict deletes fires the
            # DELETE triggers (sqlite.org/lang_conflict.html). Set once a connection, not before
            # each of its transactions as it was (two statements of every replay's CPU).
            conn.execute("PRAGMA recursive_triggers=ON")
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")  # see _Checkpointer
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def sync(self) -> None:
        """Make every committed transaction survive a power cut now: fsync the write-ahead log.

        Why: with WAL and ``synchronous=NORMAL`` a commit is safe from a crash of the process
        but not of the machine until SQLite's next checkpoint syncs the log
        (sqlite.org/pragma.html#pragma_synchronous); the audit log calls this before it copies
        a checkpoint to its anchor file, which it fsyncs, so that a power cut cannot leave the
        file anchoring events the database lost (a false alarm of a truncated log). The
        setting itself cannot change inside the transaction that signs a checkpoint
        ("Safety level may not be changed inside a transaction"), and FULL for every commit
        would cost each replay an fsync. Without a log file everything is in the database
        file, which SQLite synced when it checkpointed. The log is named after the database's
        real path (SQLite resolves a symlink); its directory is synced once too, so that a log
        created since the last sync is found after a power cut."""
        wal = f"{os.path.realpath(self.path)}-wal"
        try:
            fd = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if self._synced_dir != wal:
            fd = os.open(os.path.dirname(wal), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._synced_dir = wal

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, for reads of the tables other modules keep in this file
        (writes go through :meth:`transaction`)."""
        return self._conn()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``) on this thread's connection.

        For modules that keep their own tables in this file (replays, audit): what they write
        inside commits or rolls back together.
        """
        conn = self._conn()
        with self._write_lock:
            if conn.in_transaction:  # nested: join the outer transaction
                yield conn
                return
            changes = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        self.committed(conn, changes)

    def committed(self, conn: sqlite3.Connection, changes: int) -> None:
        """A write transaction on ``conn`` has committed (every writer calls this after its
        ``COMMIT``, with ``conn.total_changes`` from before its ``BEGIN``): if it changed rows,
        the checkpointer copies the log a moment later."""
        if conn.total_changes != changes:
            self._checkpointer.poke()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self.transaction():
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current > SCHEMA_VERSION:
                raise MoatError(
                    f"{self.path} has schema version {current}, newer than this moat_nb's {SCHEMA_VERSION}",
                    code="SCHEMA_TOO_NEW",
                    hint="upgrade moat_nb, or use another --data folder",
                )
            if current < SCHEMA_VERSION:
                fts5 = _fts5_available(conn)
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    for statement in _statements(MIGRATIONS[version - 1](fts5)):
                        conn.execute(statement)
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))

    def close(self) -> None:
        """Stop the checkpointer, then close every thread's connection (the last one to close
        checkpoints the WAL)."""
        self._checkpointer.stop()
        with self._connections_lock:
            connections, self._connections = self._connections, []
            self._closed = True
        for conn in connections:
            conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ingest

    def ingest(self, chunk: Chunk | Mapping[str, Any], instance_id: str | None = None) -> None:
        """Store one chunk of ``POST /data/chunks`` in one transaction.

        Chunks of one execution may come in several parts (``chunkSeq`` 0..n, the last with
        ``final: true`` and the ``execution`` summary), in any order. A chunk sent again with the
        same content is ignored; the same ``chunkSeq`` with other content raises
        :class:`RecordError` (``CHUNK_CONFLICT``). A malformed chunk raises :class:`RecordError`
        and nothing of it is written. ``instance_id``: the agent posting it; a chunk for an
        execution that another agent records is refused (``CHUNK_CONFLICT``), so that no agent
        can add to, or relabel, another's trace (its environment decides ``replay:prod``).
        """
        checked = self.check(chunk, instance_id)
        try:
            with self.transaction() as conn:
                self.write_checked(conn, checked)
        finally:
            self._forget([checked.execution_id])

    def check(self, chunk: Chunk | Mapping[str, Any], instance_id: str | None = None) -> _Checked:
        """The first half of :meth:`ingest`: check ``chunk`` completely and turn it into the
        rows it writes, writing nothing (raises :class:`RecordError`). For a caller that stores
        a chunk inside a transaction of its own (:mod:`moat_nb.sandbox.replays` writes a replay's
        chunk and the replay's end together) with :meth:`write_checked`."""
        checked = _validate(chunk)
        return checked if instance_id is None else replace(checked, instance_id=instance_id)

    def write_checked(
        self, conn: sqlite3.Connection, checked: _Checked, *, defer_index: bool = False
    ) -> IndexJob | None:
        """The second half of :meth:`ingest`, inside the caller's write transaction on ``conn``
        (from :meth:`transaction`, or one that joins it). The caller calls :meth:`forget` with
        the execution id once that transaction has ended, committed or not.

        ``defer_index``: the execution's row of the text index is not written here but returned
        as a job, for the caller to run with :meth:`index` once its transaction has committed
        (or to give back with :meth:`drop_index` if it rolled back). A replay's ``end`` then
        need not wait for the text index (~2 ms of SQLite work for an orders trace, which
        releases the interpreter lock, so it runs beside the stream). Until the job has run, a
        search with a text filter waits for it: what a replay's end says is stored, a text
        search finds."""
        with _unicode_errors():
            job = self._write(conn, checked, defer_index)
        if job is not None:
            with self._index_cond:
                self._index_pending += 1
                self._index_issued += 1
                self._index_open[job] = self._index_issued
        return job

    def index(self, *jobs: IndexJob) -> None:
        """Run deferred text-index jobs (:meth:`write_checked`) in one transaction of their own
        (FTS5 writes a segment per transaction: several jobs together cost one commit and one
        segment). If that fails, each job is tried in a transaction of its own, so that one bad
        job (or a busy moment) costs only its own row. A job that cannot be written leaves its
        execution stored, unindexed, and the next open of the store indexes it
        (:meth:`_index_missing`); the failure is logged, never raised (a background job, or a
        search that ran it on its way)."""
        try:
            if self._run_jobs(jobs):
                return
            failed = [job for job in jobs if len(jobs) == 1 or not self._run_jobs((job,))]
            # Two jobs of one execution (its chunks came out of order) share its text_pending
            # row: one that succeeded has removed it. Put it back for each job that failed, so
            # that the next open writes the row from what is stored (found by review).
            pks = [pk for pk in (getattr(job, "execution_pk", None) for job in failed) if pk is not None]
            if pks:
                try:
                    with self.transaction() as conn:
                        conn.executemany(
                            "INSERT OR IGNORE INTO text_pending (id) VALUES (?)", [(pk,) for pk in pks]
                        )
                except Exception as exc:
                    log.error("could not mark %d execution(s) for indexing at next start: %s", len(pks), exc)
        finally:
            for job in jobs:
                self.drop_index(job)

    def _run_jobs(self, jobs: Sequence[IndexJob]) -> bool:
        """Run ``jobs`` in one transaction; False (logged) if it failed and rolled back."""
        try:
            with self.transaction() as conn:
                for job in jobs:
                    job(conn)
            return True
        except Exception as exc:
            what = "an execution" if len(jobs) == 1 else f"{len(jobs)} index jobs (retried one by one)"
            log.error("the text index of %s could not be written (done at next start): %s", what, exc)
            return False

    def drop_index(self, job: IndexJob) -> None:
        """A deferred job that has run, or will not (its write rolled back)."""
        with self._index_cond:
            self._index_pending -= 1
            self._index_open.pop(job, None)
            self._index_cond.notify_all()

    @property
    def index_awaited(self) -> bool:
        """A text search is waiting for deferred index jobs (their owner should run them now)."""
        return self._index_waiters > 0

    def _await_index(self, timeout: float = 10.0) -> None:
        """Wait until the deferred text-index jobs pending now have run (a text search must find
        what a replay's ``end`` said is stored; jobs of later chunks are not waited for, or a
        search would wait as long as replays keep coming). :attr:`index_wanted`, if set, is
        asked first to run the jobs it holds back at once."""
        with self._index_cond:
            if not self._index_open:
                return
            target = self._index_issued
            self._index_waiters += 1
        try:
            if self.index_wanted is not None:
                self.index_wanted()
            with self._index_cond:
                if not self._index_cond.wait_for(
                    lambda: all(n > target for n in self._index_open.values()), timeout
                ):
                    late = sum(1 for n in self._index_open.values() if n <= target)
                    log.warning("text search went ahead with %d index jobs it waited for pending", late)
        finally:
            with self._index_cond:
                self._index_waiters -= 1

    def _index_missing(self, conn: sqlite3.Connection) -> int:
        """Write the rows of the text index that deferred jobs did not (one failed, or the
        process stopped before it ran): those ``text_pending`` lists; how many."""
        # text_pending drives the loop (a join may scan executions instead: 10 ms at 100k rows).
        missing = conn.execute(
            "SELECT p.id, (SELECT execution_id FROM executions WHERE id = p.id) FROM text_pending p"
        ).fetchall()
        if missing:
            with self.transaction() as tx:
                for exec_pk, execution_id in missing:
                    if execution_id is not None:
                        _index_text_from_rows(tx, exec_pk, execution_id)
                tx.execute("DELETE FROM text_pending")
        return len(missing)

    def has_chunk(self, checked: _Checked) -> bool:
        """Whether this very chunk (same execution, ``chunkSeq`` and content) is stored: a
        retry, which :meth:`write_checked` would ignore."""
        return _stored_as(self._conn(), checked) is True

    def forget(self, execution_id: str) -> None:
        """After a :meth:`write_checked` transaction ended: drop the execution from the read
        cache (a read that overlapped the write is not kept either)."""
        self._forget([execution_id])

    def ingest_many(self, chunks: Iterable[Chunk | Mapping[str, Any]]) -> int:
        """Ingest many chunks, one transaction per ``batch_size`` chunks; returns how many.

        A malformed chunk raises :class:`RecordError`; its batch is rolled back, earlier batches
        stay stored (re-ingesting them later is harmless: ingest is idempotent).
        """
        count = 0
        batch: list[_Checked] = []

        def flush() -> None:
            try:
                with _unicode_errors():
                    with self.transaction() as conn:
                        for checked in batch:
                            self._write(conn, checked)
            finally:
                self._forget([checked.execution_id for checked in batch])
            batch.clear()

        for chunk in chunks:
            batch.append(_validate(chunk))
            count += 1
            if len(batch) >= self.batch_size:
                flush()
        if batch:
            flush()
        return count

    def _write(self, conn: sqlite3.Connection, c: _Checked, defer_index: bool = False) -> IndexJob | None:
        same = _stored_as(conn, c)
        if same is not None:
            if same:
                return None  # the same chunk again: a retry (also of a chunk an older version stored)
            raise _fail(
                f"chunk {c.chunk_seq} of execution {c.execution_id} was already stored with other content",
                code="CHUNK_CONFLICT",
                executionId=c.execution_id,
                chunkSeq=c.chunk_seq,
            )
        other = conn.execute(
            # A chunk that names its agent first (files older than schema 3 have none).
            "SELECT exchange_id, replay_id, instance_id FROM chunks WHERE execution_id = ? "
            "ORDER BY instance_id IS NULL LIMIT 1",
            (c.execution_id,),
        ).fetchone()
        if other is not None and tuple(other[:2]) != (c.exchange_id, c.replay_id):
            raise _fail(
                f"execution {c.execution_id} was stored with exchangeId/replayId {tuple(other[:2])}, "
                f"this chunk says {(c.exchange_id, c.replay_id)}",
                code="CHUNK_CONFLICT",
            )
        if c.instance_id is not None:
            owner = other[2] if other is not None else None
            if owner is None:
                row = conn.execute(
                    "SELECT instance_id FROM executions WHERE execution_id = ?", (c.execution_id,)
                ).fetchone()
                owner = row[0] if row is not None else None
            if owner is not None and owner != c.instance_id:
                raise _fail(
                    f"execution {c.execution_id} is recorded by agent {owner!r}; agent "
                    f"{c.instance_id!r} cannot add to it",
                    code="CHUNK_CONFLICT",
                    executionId=c.execution_id,
                )
        environment = c.summary[_SUMMARY_ENVIRONMENT] if c.summary is not None else None
        if (
            environment is not None
            and conn.execute(
                # A replay names its source by exchangeId and takes the environment, and so the
                # permissions (section 6), of the execution that id finds (replay_source_id, the
                # earliest). Camel's exchange ids are unique per host, and a replay's execution gets
                # a new one, so an id recorded in two environments is made up: an agent of dev that
                # recorded a prod exchange's id with an earlier start had every replay of that prod
                # exchange run its own payload in dev (security walk). Same environment: allowed
                # (one exchange may pass several routes). The other environment is not named.
                "SELECT 1 FROM executions WHERE exchange_id = ? AND environment IS NOT NULL "
                "AND environment != ? AND execution_id != ? LIMIT 1",
                (c.exchange_id, environment, c.execution_id),
            ).fetchone()
        ):
            raise _fail(
                f"exchange {c.exchange_id} is recorded in another environment; an agent of "
                f"{environment!r} cannot record it too",
                code="CHUNK_CONFLICT",
                executionId=c.execution_id,
                exchangeId=c.exchange_id,
            )
        if other is not None and c.processors:
            # A stored processor record is never replaced: a replay's trace events refer to
            # them (replay_tables.PROCESSOR_REF), and what was sent must be what is read back.
            # (Each chunk's seqs are distinct already; checked only when others are stored.)
            seqs = [r[1] for r in c.processors]
            taken = []
            for i in range(0, len(seqs), 500):  # SQLite binds at most 999 values (before 3.32)
                part = seqs[i : i + 500]
                marks = ", ".join("?" * len(part))
                taken += conn.execute(
                    f"SELECT seq FROM processors WHERE execution_id = ? AND seq IN ({marks})",
                    (c.execution_id, *part),
                ).fetchall()
            if taken:
                raise _fail(
                    f"chunk {c.chunk_seq} of execution {c.execution_id} repeats processor seq "
                    f"{sorted(seq for (seq,) in taken)[:5]} of another chunk",
                    code="CHUNK_CONFLICT",
                    executionId=c.execution_id,
                    chunkSeq=c.chunk_seq,
                )
        conn.execute(
            "INSERT INTO chunks (execution_id, chunk_seq, exchange_id, replay_id, final, sha256, "
            "instance_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (c.execution_id, c.chunk_seq, c.exchange_id, c.replay_id, int(c.final), c.sha256, c.instance_id),
        )
        if c.texts:
            conn.executemany("INSERT OR IGNORE INTO texts (hash, text) VALUES (?, ?)", c.texts.items())
        if c.processors:
            conn.executemany(_INSERT_PROCESSOR, c.processors)
        existing = conn.execute(
            "SELECT id, complete FROM executions WHERE execution_id = ?", (c.execution_id,)
        ).fetchone()
        # A late non-final chunk must not overwrite the summary the final chunk stored.
        if c.summary is not None and (existing is None or c.final or not existing[1]):
            complete = int(c.final or bool(existing and existing[1]))
            conn.execute(_UPSERT_EXECUTION, (*c.summary, complete))
            if existing is None:
                (exec_pk,) = conn.execute(
                    "SELECT id FROM executions WHERE execution_id = ?", (c.execution_id,)
                ).fetchone()
            else:
                exec_pk = existing[0]
            conn.execute(_UPSERT_DETAIL, (exec_pk, *c.detail))  # type: ignore[misc]
        elif existing is not None:
            exec_pk = existing[0]
        else:
            return None  # processors before their execution: indexed when the summary comes
        job: IndexJob
        if other is None and c.summary is not None:
            # The usual case, one chunk per execution: everything to index is at hand.
            texts = c.texts
            indexed = [
                (*(texts.get(r[i]) for i in _P_INDEXED[:4]), r[_P_INDEXED[4]], r[_P_INDEXED[5]])
                for r in c.processors
            ]
            summary, detail = c.summary, c.detail

            def job(tx: sqlite3.Connection) -> None:
                _index_text(tx, exec_pk, summary, detail, indexed)  # type: ignore[arg-type]
        else:

            def job(tx: sqlite3.Connection) -> None:
                _index_text_from_rows(tx, exec_pk, c.execution_id)

        if defer_index:
            conn.execute("INSERT OR IGNORE INTO text_pending (id) VALUES (?)", (exec_pk,))

            def deferred(tx: sqlite3.Connection, index: IndexJob = job) -> None:
                index(tx)
                tx.execute("DELETE FROM text_pending WHERE id = ?", (exec_pk,))

            deferred.execution_pk = exec_pk  # type: ignore[attr-defined]  # (see index())
            return deferred
        job(conn)
        return None

    # -- queries

    def search(self, **filters: Any) -> tuple[list[Execution], int]:
        """Executions matching the filters of ``POST /search/executions``, and their total.

        Filters (camelCase as in the HTTP body, or snake_case; ``None`` means "not given"):
        ``environment application routeId status`` (a string or a list: any of),
        ``timeFrom`` (inclusive) ``timeTo`` (exclusive) on ``startTime`` (RFC 3339 or datetime),
        ``correlationId exchangeId replayId sourceExchangeId`` (exact), ``isReplay``,
        ``durationMin durationMax`` (inclusive, ms), ``text`` (case-insensitive substring of
        bodies, headers and errors; ``textInBody``/``textInHeaders``/``textInErrors`` for one of
        them), ``offset`` (default 0), ``limit`` (default 50, at most 1000),
        ``sort`` ``FIELD[:asc|desc]`` with FIELD in :data:`SORT_FIELDS` (default
        ``startTime:desc``; ties by executionId). Bad filters raise :class:`ValidationError`.
        Hits are summaries (no bodies, no processors).
        """
        q = _query(filters, self.fts5)
        if q.text and self._index_pending:
            self._await_index()
        conn = self._conn()
        (total,) = conn.execute(f"SELECT count(*) FROM executions e WHERE {q.where}", q.params).fetchone()
        rows = conn.execute(
            f"SELECT {_SUMMARY_SQL} FROM executions e WHERE {q.where} ORDER BY {q.order} LIMIT ? OFFSET ?",
            (*q.params, q.limit, q.offset),
        ).fetchall()
        return [_execution_from_row(r) for r in rows], total

    def _forget(self, execution_ids: Iterable[str]) -> None:
        """After an ingest (committed or not): drop these executions from the read cache."""
        with self._cache_lock:
            for execution_id in execution_ids:
                self._ingests += 1
                self._recent.append((self._ingests, execution_id))
                self._cache.pop(execution_id, None)

    def execution(self, execution_id: str) -> Execution | None:
        """One execution with its detail fields and processors (flat, in ``seq`` order).

        Served from a small cache of recent reads when it has not been ingested since."""
        with self._cache_lock:
            cached = self._cache.get(execution_id)
            if cached is not None:
                self._cache.move_to_end(execution_id)
                return cached
            seen = self._ingests
        execution = self._read_execution(execution_id)
        if execution is not None:
            with self._cache_lock:
                overlapped = self._ingests - seen > len(self._recent)
                for n, eid in reversed(self._recent):
                    if overlapped or n <= seen:
                        break
                    overlapped = eid == execution_id
                if not overlapped:
                    self._cache[execution_id] = execution
                    while len(self._cache) > _CACHED_EXECUTIONS:
                        self._cache.popitem(last=False)
        return execution

    def _read_execution(self, execution_id: str) -> Execution | None:
        conn = self._conn()
        row = conn.execute(
            f"SELECT {_SUMMARY_SQL}, {', '.join('d.' + c for c in _DETAIL_COLUMNS)} "
            "FROM executions e LEFT JOIN execution_details d USING (id) WHERE e.execution_id = ?",
            (execution_id,),
        ).fetchone()
        if row is None:
            return None
        n = len(_SUMMARY_COLUMNS)
        procs = conn.execute(
            f"{_PROC_SELECT} WHERE p.execution_id = ? ORDER BY p.seq", (execution_id,)
        ).fetchall()
        return replace(
            _execution_from_row(row[:n], row[n:]),
            processors=tuple(_processor_from_row(p) for p in procs),
        )

    def execution_by_exchange(self, exchange_id: str, *, replay: bool = False) -> Execution | None:
        """The execution of an exchange id: the original one by default (the first, should there
        be several); with ``replay=True`` the newest replay execution carrying that exchange id."""
        execution_id = self.execution_id_by_exchange(exchange_id, replay=replay)
        return None if execution_id is None else self.execution(execution_id)

    def replay_source_id(self, exchange_id: str) -> str | None:
        """The execution a replay of ``exchange_id`` starts from: the recorded exchange, else
        the newest replay execution with that id (a replay's own exchange replayed again:
        section 9's family graph has replays of replays)."""
        return self.execution_id_by_exchange(exchange_id) or self.execution_id_by_exchange(
            exchange_id, replay=True
        )

    def execution_id_by_exchange(self, exchange_id: str, *, replay: bool = False) -> str | None:
        """The id of :meth:`execution_by_exchange`'s execution: one lookup in an index."""
        order = "e.start_ms DESC, e.id DESC" if replay else "e.start_ms ASC, e.id ASC"
        row = (
            self._conn()
            .execute(
                f"SELECT e.execution_id FROM executions e WHERE e.exchange_id = ? AND e.is_replay = ? "
                f"ORDER BY {order} LIMIT 1",
                (exchange_id, int(replay)),
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    def cached_execution(self, execution_id: str) -> Execution | None:
        """:meth:`execution` if it is in the cache of recent reads, else None (no reading)."""
        with self._cache_lock:
            cached = self._cache.get(execution_id)
            if cached is not None:
                self._cache.move_to_end(execution_id)
            return cached

    def processor(self, execution_id: str, seq: int) -> ProcessorRecord | None:
        """One processor record (the snapshot of ``GET /executions/{id}/processors/{seq}/snapshot``)."""
        row = (
            self._conn()
            .execute(
                f"{_PROC_SELECT} WHERE p.execution_id = ? AND p.seq = ?",
                (execution_id, seq),
            )
            .fetchone()
        )
        return None if row is None else _processor_from_row(row)

    def processors(self, execution_id: str, seqs: Iterable[int]) -> dict[int, ProcessorRecord]:
        """Processor records of an execution by seq (those stored; at most 999 seqs a call)."""
        wanted = sorted(set(seqs))
        if not wanted:
            return {}
        rows = self._conn().execute(
            f"{_PROC_SELECT} WHERE p.execution_id = ? AND p.seq IN ({', '.join('?' * len(wanted))})",
            (execution_id, *wanted),
        )
        return {p.seq: p for p in map(_processor_from_row, rows)}

    def instance_environments(self, instance_id: str) -> set[str]:
        """The environments of the executions the agent ``instance_id`` recorded (chunks take
        theirs from the agent's token), for :meth:`AgentRegistry.register`'s check that an id
        keeps its environment. A scan of the executions table: no index has instance_id, and
        one would cost every chunk's write for a check made when an agent registers (at start
        and after a reconnect)."""
        rows = (
            self._conn()
            .execute(
                "SELECT DISTINCT environment FROM executions "
                "WHERE instance_id = ? AND environment IS NOT NULL",
                (instance_id,),
            )
            .fetchall()
        )
        return {str(r[0]) for r in rows}

    def stats(self) -> list[dict[str, Any]]:
        """Execution counts by environment, routeId and status (replays included), sorted."""
        rows = self._conn().execute(
            "SELECT environment, route_id, status, count(*) FROM executions "
            "GROUP BY environment, route_id, status ORDER BY environment, route_id, status"
        )
        return [
            {"environment": env, "route_id": route, "status": status, "count": n}
            for env, route, status, n in rows
        ]
