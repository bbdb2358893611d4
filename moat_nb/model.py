"""Records on the wire (DESIGN.md section 3), as immutable Python values.

JSON on the wire is camelCase (as Cameleer's is); attributes here are snake_case. Each record
converts losslessly: ``Record.from_wire(r.to_wire()) == r`` and, for a wire dict in canonical
form (times with milliseconds and ``Z``), ``Record.from_wire(d).to_wire() == d``.

Times are timezone-aware UTC ``datetime`` values with millisecond precision (the wire format
carries milliseconds, so anything finer would not survive a round trip and is cut on the way in).
``duration_ms`` is a float of milliseconds: the sandbox engine runs processors in microseconds,
and a timeline of zeros would tell nobody anything.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, ClassVar

from .errors import RecordError

__all__ = [
    "ID_PATTERN",
    "EXECUTION_STATUSES",
    "REPLAY_STATUSES",
    "CAPTURE_MODES",
    "check_id",
    "format_time",
    "parse_time",
    "Payload",
    "ModifiedPayload",
    "ProcessorRecord",
    "Execution",
    "Chunk",
]

#: Ids on the wire (section 3).
ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
EXECUTION_STATUSES = ("COMPLETED", "FAILED", "RUNNING")
REPLAY_STATUSES = ("PENDING", "RUNNING", "COMPLETED", "ERROR", "TIMED_OUT", "ABORTED")
CAPTURE_MODES = ("PROCESSOR", "ROUTE")


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid id, else raise :class:`RecordError`."""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise RecordError(
            f"{what} {value!r} is not a valid id",
            code="BAD_ID",
            hint="ids are 1-128 characters of letters, digits and . _ : -",
            details={"field": what, "value": repr(value)[:200]},
        )
    return value


# --------------------------------------------------------------------------- times


def _ms(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise RecordError(
            f"naive datetime {dt.isoformat()} has no time zone",
            code="BAD_TIME",
            hint="use an aware datetime, e.g. datetime.now(UTC)",
        )
    try:
        dt = dt.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:01+02:00 is before year 1 in UTC
        raise RecordError(
            f"time {dt.isoformat()} is outside the years 1-9999 once converted to UTC",
            code="BAD_TIME",
            hint="use a time between 0001-01-01 and 9999-12-31 UTC",
        ) from None
    return dt.replace(microsecond=dt.microsecond - dt.microsecond % 1000)


def format_time(dt: datetime | None) -> str | None:
    """RFC 3339 UTC with milliseconds and ``Z``: ``2026-11-26T13:09:44.123Z``."""
    if dt is None:
        return None
    dt = _ms(dt)
    # Not strftime("%Y"): it does not pad years before 1000, which RFC 3339 requires.
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


def parse_time(text: str | datetime | None) -> datetime | None:
    """Parse an RFC 3339 time (any offset, any fraction) into UTC, cut to milliseconds."""
    if text is None:
        return None
    if isinstance(text, datetime):
        return _ms(text)
    if not isinstance(text, str):
        raise RecordError(f"time {text!r} is not a string", code="BAD_TIME")
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise RecordError(
            f"time {text!r} is not RFC 3339",
            code="BAD_TIME",
            hint="write times like 2026-11-26T13:09:44.123Z",
        ) from None
    if dt.tzinfo is None:
        raise RecordError(
            f"time {text!r} has no offset", code="BAD_TIME", hint="append Z for UTC"
        )
    return _ms(dt)


# --------------------------------------------------------------------------- generic wire mapping


@functools.cache
def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@functools.cache
def _field_names(cls: type) -> tuple[tuple[str, str], ...]:
    # Serialising a history converts the same names millions of times: compute them per class.
    return tuple(
        (f.name, cls._wire_name(f.name))  # type: ignore[attr-defined]
        for f in fields(cls)
        if not f.name.startswith("_")
    )


class _Wire:
    """Mixin: snake_case dataclass fields <-> camelCase wire keys.

    Subclasses list their datetime fields in ``_times``; fields in ``_optional_on_wire`` are
    left out of the wire form when they are ``None`` (the starred detail fields of section 3).
    """

    _times: ClassVar[frozenset[str]] = frozenset()
    _optional_on_wire: ClassVar[frozenset[str]] = frozenset()
    _required: ClassVar[frozenset[str]] = frozenset()
    _wire_names: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        for name in self._times:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_time(value))

    @classmethod
    def _wire_name(cls, name: str) -> str:
        return cls._wire_names.get(name) or _camel(name)

    def _wire_items(self) -> Iterable[tuple[str, Any]]:
        times, optional = self._times, self._optional_on_wire
        for name, wire_name in _field_names(type(self)):
            value = getattr(self, name)
            if value is None and name in optional:
                continue
            if name in times:
                value = format_time(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            yield wire_name, value

    def to_wire(self) -> dict[str, Any]:
        return dict(self._wire_items())

    @classmethod
    def _kwargs_from_wire(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise RecordError(
                f"{cls.__name__} must be a JSON object, not {type(data).__name__}"
            )
        kwargs: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            key = cls._wire_name(f.name)
            if key in data:
                kwargs[f.name] = data[key]
            elif f.name in cls._required:
                raise RecordError(
                    f"{cls.__name__} is missing the field {key!r}",
                    code="MISSING_FIELD",
                    details={"record": cls.__name__, "field": key},
                )
        return kwargs


# --------------------------------------------------------------------------- payloads


@dataclass(frozen=True, slots=True)
class Payload(_Wire):
    """A start payload: the exchange as it entered the route."""

    headers: dict[str, Any] = field(default_factory=dict)
    body: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Payload:
        kw = cls._kwargs_from_wire(data)
        return cls(
            headers=dict(kw.get("headers") or {}),
            body=kw.get("body"),
            properties=dict(kw.get("properties") or {}),
        )


@dataclass(frozen=True, slots=True)
class ModifiedPayload(_Wire):
    """``modifiedPayload`` of a replay request: a present key replaces that part whole."""

    _optional_on_wire: ClassVar[frozenset[str]] = frozenset({"headers", "body", "properties"})

    headers: dict[str, Any] | None = None
    body: str | None = None
    properties: dict[str, Any] | None = None

    @classmethod
    def from_wire(cls, data: Mapping[str, Any] | None) -> ModifiedPayload:
        if data is None:
            return cls()
        kw = cls._kwargs_from_wire(data)
        return cls(**kw)

    def is_empty(self) -> bool:
        return self.headers is None and self.body is None and self.properties is None

    def apply(self, original: Payload) -> Payload:
        """The effective payload: each present part replaces the original's whole."""
        return Payload(
            headers=dict(original.headers if self.headers is None else self.headers),
            body=original.body if self.body is None else self.body,
            properties=dict(original.properties if self.properties is None else self.properties),
        )


# --------------------------------------------------------------------------- processor records


@dataclass(frozen=True, slots=True)
class ProcessorRecord(_Wire):
    """One processor's run inside one execution (Cameleer's flat record).

    ``seq`` / ``parent_seq`` / ``iteration`` build the tree. ``properties`` holds the exchange
    properties after the processor; ``input_properties`` (a moat_nb addition) those before it,
    so that lineage can say which processor set which property.
    """

    _times: ClassVar[frozenset[str]] = frozenset({"start_time", "end_time"})
    _required: ClassVar[frozenset[str]] = frozenset(
        {"seq", "processor_id", "processor_type", "route_id", "status"}
    )

    execution_id: str
    exchange_id: str
    seq: int
    processor_id: str
    processor_type: str
    route_id: str
    status: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_ms: float | None = None
    parent_seq: int | None = None
    iteration: int = 0
    depth: int = 0
    replay_id: str | None = None
    endpoint_uri: str | None = None
    stubbed: bool = False
    error_type: str | None = None
    error_message: str | None = None
    input_body: str | None = None
    output_body: str | None = None
    input_headers: dict[str, Any] | None = None
    output_headers: dict[str, Any] | None = None
    input_properties: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    body_truncated: bool = False

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ProcessorRecord:
        kw = cls._kwargs_from_wire(data)
        kw.setdefault("execution_id", data.get("executionId", ""))
        kw.setdefault("exchange_id", data.get("exchangeId", ""))
        for key in ("iteration", "depth"):
            if kw.get(key) is None:
                kw[key] = 0
        for key in ("stubbed", "body_truncated"):
            if kw.get(key) is None:
                kw[key] = False
        return cls(**kw)


# --------------------------------------------------------------------------- executions


@dataclass(frozen=True, slots=True)
class Execution(_Wire):
    """One exchange's run through a route.

    A search hit has ``processors is None`` and no detail fields; ``GET /executions/{id}``
    fills the detail fields and ``processors`` (flat, in ``seq`` order; :meth:`tree` and the
    wire form nest them as Cameleer's ProcessorNode tree).
    """

    _times: ClassVar[frozenset[str]] = frozenset({"start_time", "end_time"})
    _optional_on_wire: ClassVar[frozenset[str]] = frozenset(
        {
            "input_body",
            "output_body",
            "input_headers",
            "output_headers",
            "input_properties",
            "output_properties",
            "error_stack_trace",
            "processors",
        }
    )
    _required: ClassVar[frozenset[str]] = frozenset(
        {"execution_id", "exchange_id", "route_id", "status"}
    )

    execution_id: str
    exchange_id: str
    route_id: str
    status: str
    correlation_id: str | None = None
    route_version: str | None = None
    application_id: str | None = None
    instance_id: str | None = None
    environment: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_ms: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    processor_count: int = 0
    capture_mode: str = "PROCESSOR"
    is_replay: bool = False
    replay_id: str | None = None
    source_exchange_id: str | None = None
    input_body: str | None = None
    output_body: str | None = None
    input_headers: dict[str, Any] | None = None
    output_headers: dict[str, Any] | None = None
    input_properties: dict[str, Any] | None = None
    output_properties: dict[str, Any] | None = None
    error_stack_trace: str | None = None
    processors: tuple[ProcessorRecord, ...] | None = None

    def __post_init__(self) -> None:
        _Wire.__post_init__(self)
        if self.processors is not None and not isinstance(self.processors, tuple):
            object.__setattr__(self, "processors", tuple(self.processors))

    # -- payloads

    @property
    def start_payload(self) -> Payload:
        """The exchange as it entered the route (what a replay starts from)."""
        return Payload(
            headers=dict(self.input_headers or {}),
            body=self.input_body,
            properties=dict(self.input_properties or {}),
        )

    def summary(self) -> Execution:
        """The search-hit form: the same execution without detail fields."""
        return replace(self, **{name: None for name in self._optional_on_wire})

    # -- processor tree

    def tree(self) -> list[dict[str, Any]]:
        """Processors as Cameleer's ProcessorNode tree (wire form, ``children`` lists)."""
        return _nest([p.to_wire() for p in (self.processors or ())])

    def to_wire(self, *, tree: bool = True) -> dict[str, Any]:
        out = dict(self._wire_items())
        if self.processors is not None:
            out["processors"] = (
                self.tree() if tree else [p.to_wire() for p in self.processors]
            )
        return out

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Execution:
        kw = cls._kwargs_from_wire(data)
        procs = kw.pop("processors", None)
        if procs is not None:
            flat = [ProcessorRecord.from_wire(p) for p in _flatten(procs)]
            flat.sort(key=lambda p: p.seq)
            kw["processors"] = tuple(flat)
        for key in ("is_replay",):
            if kw.get(key) is None:
                kw[key] = False
        if kw.get("processor_count") is None:
            kw["processor_count"] = 0
        if kw.get("capture_mode") is None:
            kw["capture_mode"] = "PROCESSOR"
        return cls(**kw)


def _flatten(nodes: Sequence[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for node in nodes:
        children = node.get("children") or ()
        yield {k: v for k, v in node.items() if k != "children"}
        yield from _flatten(children)


def _nest(flat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_seq: dict[int, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for rec in flat:
        node = dict(rec)
        node["children"] = []
        by_seq[node["seq"]] = node
        parent = by_seq.get(node.get("parentSeq")) if node.get("parentSeq") is not None else None
        (parent["children"] if parent is not None else roots).append(node)
    return roots


# --------------------------------------------------------------------------- ingestion chunks


@dataclass(frozen=True, slots=True)
class Chunk(_Wire):
    """The body of ``POST /data/chunks``: part (or all) of one execution's trace.

    ``execution`` is the execution summary (sent with the ``final`` chunk, optional before);
    ``processors`` are flat ProcessorRecords.
    """

    _required: ClassVar[frozenset[str]] = frozenset({"execution_id", "exchange_id", "chunk_seq"})

    execution_id: str
    exchange_id: str
    chunk_seq: int
    final: bool = True
    replay_id: str | None = None
    execution: Execution | None = None
    processors: tuple[ProcessorRecord, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {
            "executionId": self.execution_id,
            "exchangeId": self.exchange_id,
            "replayId": self.replay_id,
            "chunkSeq": self.chunk_seq,
            "final": self.final,
            "execution": None if self.execution is None else self.execution.to_wire(),
            "processors": [p.to_wire() for p in self.processors],
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Chunk:
        kw = cls._kwargs_from_wire(data)
        execution = kw.get("execution")
        kw["execution"] = None if execution is None else Execution.from_wire(execution)
        kw["processors"] = tuple(ProcessorRecord.from_wire(p) for p in kw.get("processors") or ())
        if kw.get("final") is None:
            kw["final"] = True
        return cls(**kw)
