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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from datetime import UTC, datetime
from types import MemberDescriptorType
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

# \Z, not $: "$" also matches before a final newline, so "orders-dev-1\n" passed as an id and
# registered a second agent listed and audited exactly as "orders-dev-1" (found probing).
#: Ids on the wire (section 3).
ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
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


#: The canonical wire form of a time, as :func:`format_time` writes it (ASCII digits only).
_CANONICAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
# Zero-padded numbers for format_time's fast path: looking them up is ~4x faster than the
# format specs (":02d") of an f-string or %-formatting.
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(60))
_THREE_DIGITS = tuple(f"{n:03d}" for n in range(1000))


def format_time(dt: datetime | None) -> str | None:
    """RFC 3339 UTC with milliseconds and ``Z``: ``2026-11-26T13:09:44.123Z``."""
    if dt is None:
        return None
    if type(dt) is datetime and dt.tzinfo is UTC and dt.year >= 1000:
        # Fast path for what records hold (parse_time made them UTC): astimezone would be a
        # no-op and the millisecond cut is the // 1000; a 4-digit year needs no padding.
        two = _TWO_DIGITS
        return (
            f"{dt.year}-{two[dt.month]}-{two[dt.day]}T{two[dt.hour]}:{two[dt.minute]}:"
            f"{two[dt.second]}.{_THREE_DIGITS[dt.microsecond // 1000]}Z"
        )
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
    if type(text) is str and len(text) == 24 and _CANONICAL_TIME.fullmatch(text) is not None:
        # Fast path for the canonical form (what format_time writes): fromisoformat reads the
        # Z itself (Python 3.11+) into timezone.utc, and three fraction digits are whole
        # milliseconds, so the general path below would give the same value.
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass  # the right shape but no such time (month 13): the general path says so
    if isinstance(text, datetime):
        if type(text) is datetime and text.tzinfo is UTC and not text.microsecond % 1000:
            return text  # already UTC milliseconds: _ms would return an equal copy
        return _ms(text)
    if not isinstance(text, str):
        raise RecordError(
            f"time {text!r} is not a string",
            code="BAD_TIME",
            hint="write times like 2026-11-26T13:09:44.123Z, or pass an aware datetime",
        )
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
        raise RecordError(f"time {text!r} has no offset", code="BAD_TIME", hint="append Z for UTC")
    return _ms(dt)


# --------------------------------------------------------------------------- generic wire mapping
#
# A replay converts ~50 processor records of ~2.5 KB several times over (ingest, store, detail,
# diff), so the conversion is hot. A generic loop over dataclasses.fields() with getattr and an
# isinstance(Mapping) per value cost ~20 us a record; like dataclasses and attrs themselves, each
# class instead gets straight-line functions generated from its fields, the first time it
# converts (lazily: @dataclass adds the fields only after __init_subclass__ has run). What they
# compute is spelled out in _Wire's docstring; tests/test_model.py keeps the generic loop as a
# reference and checks the generated functions against it with Hypothesis.


@functools.cache
def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@functools.cache
def _field_names(cls: type) -> tuple[tuple[str, str], ...]:
    return tuple(
        (f.name, cls._wire_name(f.name))  # type: ignore[attr-defined]
        for f in fields(cls)
        if not f.name.startswith("_")
    )


#: Exact types whose values go on the wire as they are, without the isinstance(value, Mapping)
#: check (an ABC check, the slowest step of a generic conversion). For these builtins it is
#: False, unless a program registers one of them as a Mapping, which nothing sane does.
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None), list, tuple})


def _wire_value(value: Any) -> Any:
    """A non-time field's wire value: any Mapping as a plain dict (a shallow copy)."""
    if type(value) is dict or isinstance(value, Mapping):
        return dict(value)
    return value


def _required_keys(cls: type) -> str:
    """The wire keys a record of ``cls`` cannot do without, for a hint."""
    required: frozenset[str] = cls._required  # type: ignore[attr-defined]
    return ", ".join(key for name, key in _field_names(cls) if name in required)


def _not_an_object(cls: type, data: Any) -> RecordError:
    return RecordError(
        f"{cls.__name__} must be a JSON object, not {type(data).__name__}",
        hint=_record_hint(cls),
    )


def _record_hint(cls: type) -> str:
    keys = _required_keys(cls)
    article = "an" if cls.__name__[:1] in "AEIOU" else "a"
    hint = f"{article} {cls.__name__} is the JSON object of the platform's API (GET /api/v1/api-docs)"
    if keys:
        hint += f" with at least {keys}"
    if issubclass(cls, Execution):
        hint += "; fetch an execution with p.execution(id) rather than building its dict by hand"
    return hint


def _missing_field(cls: type, key: str) -> RecordError:
    return RecordError(
        f"{cls.__name__} is missing the field {key!r}",
        code="MISSING_FIELD",
        hint=_record_hint(cls),
        details={"record": cls.__name__, "field": key},
    )


#: Fields holding the ids :func:`check_id` checks (the store does): a value of another type is
#: a BAD_ID, as an id of the wrong shape is.
_ID_FIELDS = frozenset({"execution_id", "exchange_id", "replay_id", "source_exchange_id"})


def _bad_field(cls: type, key: str, value: Any, what: str, code: str = "BAD_FIELD") -> RecordError:
    return RecordError(
        f"{cls.__name__} field {key!r} must be {what}, not {type(value).__name__}",
        code=code,
        hint="ids are 1-128 characters of letters, digits and . _ : -"
        if code == "BAD_ID"
        else "wire records hold JSON: maps are objects, bodies and ids strings, seq an integer "
        "(GET /api/v1/api-docs has the schema)",
        details={"record": cls.__name__, "field": key},
    )


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_map(value: Any) -> bool:
    return isinstance(value, Mapping)


#: A field's annotation -> the exact type its wire value usually has, whether null is allowed,
#: the precise test (run only when the exact type is not there) and what the value must be.
#: A ``str`` field takes a null too unless it is ``_required`` (a ProcessorRecord's executionId
#: may be null, as it always could; a null processorId broke diff's alignment sort);
#: times are checked by parse_time, fields with a decoder by the decoder. Only the types are
#: tested, not map keys or number ranges (the sandbox store checks those): one identity test
#: a field keeps the hot path cheap (a replay's chunk decodes ~55 records, section 11).
_FIELD_CHECKS: dict[str, tuple[type, bool, Callable[[Any], bool], str]] = {
    "str": (str, True, _is_str, "a string"),
    "str | None": (str, True, _is_str, "a string or null"),
    "int": (int, False, _is_int, "an integer"),
    "int | None": (int, True, _is_int, "an integer or null"),
    "float | None": (float, True, _is_number, "a number or null"),
    "bool": (bool, False, lambda value: False, "true or false"),
    "dict[str, Any]": (dict, False, _is_map, "a JSON object"),
    "dict[str, Any] | None": (dict, True, _is_map, "a JSON object or null"),
}


def _generate(name: str, lines: list[str], namespace: dict[str, Any]) -> Any:
    """Define the function ``name`` from generated source lines.

    The source is made from a class's field names and wire keys (as ``repr`` literals), never
    from data; values it needs (defaults, decoders, slot setters) come in through ``namespace``.
    """
    exec("\n".join(lines), namespace)
    return namespace[name]


def _compile_encoder(cls: type) -> Callable[[Any], dict[str, Any]]:
    """``record -> wire dict`` for ``cls``: one local and one dict slot per field."""
    times: frozenset[str] = cls._times  # type: ignore[attr-defined]
    optional: frozenset[str] = cls._optional_on_wire  # type: ignore[attr-defined]
    head: list[str] = []  # fields before the first optional one: one dict display
    items: list[str] = []
    tail: list[str] = []  # from the first optional field on: key by key, keeping field order
    for i, (name, key) in enumerate(_field_names(cls)):
        v = f"v{i}"
        if name in times:
            convert = f"{v} = _format_time({v})"
        else:
            convert = f"if type({v}) not in _PLAIN_TYPES: {v} = _wire_value({v})"
        if name in optional:
            tail += [
                f"    {v} = self.{name}",
                f"    if {v} is not None:",
                f"        {convert}",
                f"        out[{key!r}] = {v}",
            ]
        elif tail:
            tail += [f"    {v} = self.{name}", f"    {convert}", f"    out[{key!r}] = {v}"]
        else:
            head += [f"    {v} = self.{name}", f"    {convert}"]
            items.append(f"{key!r}: {v}")
    lines = ["def encode(self):", *head, f"    out = {{{', '.join(items)}}}", *tail, "    return out"]
    namespace = {
        "_format_time": format_time,
        "_wire_value": _wire_value,
        "_PLAIN_TYPES": _PLAIN_TYPES,
    }
    encode = _generate("encode", lines, namespace)
    encode.__qualname__ = f"{cls.__qualname__}._wire_dict"
    return encode  # type: ignore[no-any-return]


#: Marks an absent key in generated decoders (None is a value: JSON null).
_ABSENT: Any = object()


def _compile_decoder(cls: type) -> Callable[[Any], Any]:
    """``wire mapping -> record`` for ``cls``, equal to ``cls(**kwargs)`` with the kwargs the
    class's wire attributes describe (see :class:`_Wire`), in five steps, each in field order:

    1. read each field's key (the first missing ``_required`` key is the error);
    2. check the type of each value (:data:`_FIELD_CHECKS`: the first wrong one is the error);
    3. run the ``_wire_decoders`` on present values (nested records);
    4. parse the times, in field order (what ``_Wire.__post_init__`` does);
    5. set the fields through their slot descriptors (what the frozen dataclass ``__init__``
       does with ``object.__setattr__``, without its argument binding) and run a
       ``__post_init__`` of the class's own, as ``__init__`` would.
    """
    required: frozenset[str] = cls._required  # type: ignore[attr-defined]
    absent: Mapping[str, Any] = cls._wire_absent  # type: ignore[attr-defined]
    null_is_default: frozenset[str] = cls._null_is_default  # type: ignore[attr-defined]
    decoders: Mapping[str, Callable[[Any], Any]] = cls._wire_decoders  # type: ignore[attr-defined]
    namespace: dict[str, Any] = {
        "_cls": cls,
        "_new": object.__new__,
        "_Mapping": Mapping,
        "_ABSENT": _ABSENT,
        "_not_an_object": _not_an_object,
        "_missing_field": _missing_field,
        "_bad_field": _bad_field,
        "_parse_time": parse_time,
    }
    keys: list[str] = []
    reads: list[str] = []
    checks: list[str] = []
    times: list[str] = []
    decodes: list[str] = []
    sets: list[str] = []
    for i, f in enumerate(fields(cls)):  # type: ignore[arg-type]
        name, key, v = f.name, cls._wire_name(f.name), f"v{i}"  # type: ignore[attr-defined]
        keys.append(key)
        namespace[f"_set{i}"] = _slot_setter(cls, f)
        if f.default is not MISSING:
            namespace[f"_default{i}"] = f.default
            fallback = f"_default{i}"
        elif f.default_factory is not MISSING:
            namespace[f"_factory{i}"] = f.default_factory
            fallback = f"_factory{i}()"
        elif name in required or name in absent:
            fallback = ""
        else:
            raise TypeError(f"{cls.__name__}.{name} has no default: list it in _required")
        if name in decoders and (name in required or name in absent or name in null_is_default):
            raise TypeError(f"{cls.__name__}.{name}: a decoder is for an optional field only")
        if name in required:
            reads += [
                f"    {v} = get({key!r}, _ABSENT)",
                f"    if {v} is _ABSENT:",
                f"        raise _missing_field(_cls, {key!r})",
            ]
        elif name in absent:
            namespace[f"_absent{i}"] = absent[name]
            reads.append(f"    {v} = get({key!r}, _absent{i})")
        elif name in null_is_default:
            if f.default is MISSING:
                raise TypeError(f"{cls.__name__}.{name} is in _null_is_default without a default")
            reads += [f"    {v} = get({key!r})", f"    if {v} is None:", f"        {v} = {fallback}"]
        elif name in decoders or f.default is MISSING:  # a default_factory field
            reads.append(f"    {v} = get({key!r}, _ABSENT)")
            # the decoder runs on a present value only; the default (a default_factory runs
            # in __init__, after the decoders have run) when the key is absent
            sets += [f"    if {v} is _ABSENT:", f"        {v} = {fallback}"]
        else:
            reads.append(f"    {v} = get({key!r}, {fallback})")
        if name in decoders:
            namespace[f"_decode{i}"] = decoders[name]
            decodes += [f"    if {v} is not _ABSENT:", f"        {v} = _decode{i}({v})"]
        elif name in cls._times:  # type: ignore[attr-defined]
            times += [f"    if {v} is not None:", f"        {v} = _parse_time({v})"]
        elif name not in cls._unchecked and isinstance(f.type, str) and f.type in _FIELD_CHECKS:  # type: ignore[attr-defined]
            exact, nullable, precise, what = _FIELD_CHECKS[f.type]
            nullable = nullable and name not in required
            namespace[f"_exact{i}"], namespace[f"_ok{i}"] = exact, precise
            null = f" and {v} is not None" if nullable else ""
            code = "BAD_ID" if name in _ID_FIELDS else "BAD_FIELD"
            checks += [
                f"    if type({v}) is not _exact{i}{null} and not _ok{i}({v}):",
                f"        raise _bad_field(_cls, {key!r}, {v}, {what!r}, {code!r})",
            ]
        sets.append(f"    _set{i}(self, {v})")
    namespace["_KEYS"] = tuple(keys)
    lines = [
        "def decode(data):",
        "    if type(data) is not dict:",
        "        if not isinstance(data, _Mapping):",
        "            raise _not_an_object(_cls, data)",
        # any other Mapping is read as before, key in data then data[key]
        "        data = {key: data[key] for key in _KEYS if key in data}",
        "    get = data.get",
        *reads,
        *checks,
        *decodes,
        *times,
        "    self = _new(_cls)",
        *sets,
    ]
    # The times are parsed above, in field order; _Wire.__post_init__ would only parse them
    # again (a no-op on a UTC-millisecond datetime), so it is called only when a class adds
    # something of its own. Inlined, it pays for the type checks (each ~0.3 us a record).
    if getattr(cls, "__post_init__", _Wire.__post_init__) is not _Wire.__post_init__:
        lines.append("    self.__post_init__()")
    lines.append("    return self")
    decode = _generate("decode", lines, namespace)
    decode.__qualname__ = f"{cls.__qualname__}._decode"
    return decode  # type: ignore[no-any-return]


class _Wire:
    """Mixin: snake_case dataclass fields <-> camelCase wire keys.

    Subclasses list their datetime fields in ``_times``; fields in ``_optional_on_wire`` are
    left out of the wire form when they are ``None`` (the starred detail fields of section 3).

    The wire form has, in field order, one key per field not starting with ``_``: a time field
    through :func:`format_time`, any Mapping as a plain ``dict`` copy, anything else as it is.

    From the wire, each field whose key is present takes its value, run through the field's
    ``_wire_decoders`` function if it has one; other keys are ignored. An absent key is a
    MISSING_FIELD error for ``_required`` fields, the ``_wire_absent`` value if the field has
    one, else the field's default; a null reads as the default for ``_null_is_default``
    fields. A value of the wrong type for its field's annotation is a BAD_FIELD error
    (:data:`_FIELD_CHECKS`), except in the ``_unchecked`` fields. The times are parsed.

    The per-class functions doing this are generated on first use from the class attributes
    as they are then (see the comment above :func:`_camel`).
    """

    _times: ClassVar[frozenset[str]] = frozenset()
    _optional_on_wire: ClassVar[frozenset[str]] = frozenset()
    _required: ClassVar[frozenset[str]] = frozenset()
    _wire_absent: ClassVar[Mapping[str, Any]] = {}
    _null_is_default: ClassVar[frozenset[str]] = frozenset()
    _wire_decoders: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}
    _wire_names: ClassVar[dict[str, str]] = {}
    _unchecked: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A class's generated functions know only its own fields: every class, subclasses of
        # an already compiled one included, starts from the compiling stubs below.
        for name in ("_wire_dict", "_decode"):
            setattr(cls, name, _Wire.__dict__[name])

    def __post_init__(self) -> None:
        for name in self._times:
            value = getattr(self, name)
            if value is not None:
                parsed = parse_time(value)
                if parsed is not value:  # an already UTC-millisecond datetime stays as it is
                    object.__setattr__(self, name, parsed)

    @classmethod
    def _wire_name(cls, name: str) -> str:
        return cls._wire_names.get(name) or _camel(name)

    def _wire_dict(self) -> dict[str, Any]:
        """The wire form; compiles and installs ``type(self)``'s encoder on first use."""
        cls = type(self)
        encode = _compile_encoder(cls)
        cls._wire_dict = encode  # type: ignore[method-assign]
        return encode(self)

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> Any:
        """A record from the wire; compiles and installs ``cls``'s decoder on first use."""
        decode = _compile_decoder(cls)
        cls._decode = staticmethod(decode)  # type: ignore[method-assign, assignment]
        return decode(data)

    def to_wire(self) -> dict[str, Any]:
        return self._wire_dict()

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Any:
        return cls._decode(data)

    def _evolve(self, **changes: Any) -> Any:
        """``dataclasses.replace(self, **changes)`` without running ``__init__`` and
        ``__post_init__`` again: the record's values are checked and parsed already, so for
        changes to fields that are not times the two give equal records (tests/test_model.py).
        The server copies each of a trace's ~50 records while redacting it, and ``replace``
        costs ~10 µs a record, this ~3. A change to a time field takes ``replace`` (it parses)."""
        cls = type(self)
        setters = _SLOT_SETTERS.get(cls)
        if setters is None:
            setters = _SLOT_SETTERS[cls] = _slot_setters(cls)
        if not self._times.isdisjoint(changes) or not changes.keys() <= setters.keys():
            return replace(self, **changes)  # parses the times; names an unknown field
        new = object.__new__(cls)
        for name, set_value in setters.items():
            set_value(new, changes[name] if name in changes else getattr(self, name))
        return new


#: Per record class: field name -> its slot's ``__set__`` (sets a frozen instance's field).
_SLOT_SETTERS: dict[type, dict[str, Callable[[Any, Any], None]]] = {}


def _slot_setter(cls: type, f: Field[Any]) -> Callable[[Any, Any], None]:
    """The ``__set__`` of field ``f``'s slot: sets it on a frozen instance, as the dataclass
    ``__init__`` does with ``object.__setattr__``, without the argument binding."""
    # the slot may be a base class's (a subclass's slots are only its new fields)
    slot = next((k.__dict__[f.name] for k in cls.__mro__ if f.name in k.__dict__), None)
    if not f.init or type(slot) is not MemberDescriptorType:
        raise TypeError(f"{cls.__name__}.{f.name} is not an init field of a slotted dataclass")
    return slot.__set__  # type: ignore[no-any-return]


def _slot_setters(cls: type) -> dict[str, Callable[[Any, Any], None]]:
    return {f.name: _slot_setter(cls, f) for f in fields(cls)}  # type: ignore[arg-type]


# --------------------------------------------------------------------------- payloads


def _map_copy(value: Any, key: str) -> dict[str, Any]:
    """A Payload's headers or properties from the wire: a plain dict copy, ``{}`` for a null;
    what ``dict()`` cannot read (a number, a list of numbers) is a BAD_FIELD error."""
    try:
        return dict(value or {})
    except (TypeError, ValueError):
        raise _bad_field(Payload, key, value, "a JSON object or null") from None


@dataclass(frozen=True, slots=True)
class Payload(_Wire):
    """A start payload: the exchange as it entered the route."""

    # From the wire, headers and properties are plain dict copies, {} for a null.
    # The body is taken as it is: the sandbox engine runs a payload given as a mapping whose
    # JSON body is an object (engine.run makes it text), e.g. from an app's sample_payload.
    _unchecked: ClassVar[frozenset[str]] = frozenset({"body"})
    _wire_decoders: ClassVar[Mapping[str, Callable[[Any], Any]]] = {
        "headers": lambda value: _map_copy(value, "headers"),
        "properties": lambda value: _map_copy(value, "properties"),
    }

    headers: dict[str, Any] = field(default_factory=dict)
    body: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Payload:
        return cls._decode(data)  # type: ignore[no-any-return]


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
        return cls._decode(data)  # type: ignore[no-any-return]

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
    # From the wire, an absent executionId / exchangeId reads as "", a null iteration, depth
    # or flag as its default.
    _wire_absent: ClassVar[Mapping[str, Any]] = {"execution_id": "", "exchange_id": ""}
    _null_is_default: ClassVar[frozenset[str]] = frozenset(
        {"iteration", "depth", "stubbed", "body_truncated"}
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
        return cls._decode(data)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- executions


def _processors_from_wire(
    nodes: Sequence[Mapping[str, Any]] | None,
) -> tuple[ProcessorRecord, ...] | None:
    """An execution's ``processors``: a ProcessorNode tree (or flat list), in ``seq`` order."""
    if nodes is None:
        return None
    if type(nodes) is not list and not isinstance(nodes, list | tuple):
        raise _bad_field(Execution, "processors", nodes, "a list of processor records or null")
    flat = [ProcessorRecord.from_wire(p) for p in _flatten(nodes)]
    flat.sort(key=lambda p: p.seq)
    return tuple(flat)


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
    _required: ClassVar[frozenset[str]] = frozenset({"execution_id", "exchange_id", "route_id", "status"})
    # From the wire, a null count, mode or flag reads as its default; processors as a tree.
    _null_is_default: ClassVar[frozenset[str]] = frozenset({"processor_count", "capture_mode", "is_replay"})
    _wire_decoders: ClassVar[Mapping[str, Callable[[Any], Any]]] = {"processors": _processors_from_wire}

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
        out = self._wire_dict()
        if self.processors is not None:
            out["processors"] = self.tree() if tree else [p.to_wire() for p in self.processors]
        return out

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Execution:
        return cls._decode(data)  # type: ignore[no-any-return]


def _flatten(nodes: Sequence[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    """The nodes of a ProcessorNode tree in pre-order, for ProcessorRecord.from_wire."""
    for node in nodes:
        if type(node) is not dict and not isinstance(node, Mapping):
            raise _not_an_object(ProcessorRecord, node)
        children = node.get("children") or ()
        if type(children) is not list and not isinstance(children, list | tuple):
            raise _bad_field(ProcessorRecord, "children", children, "a list of processor records")
        # A plain dict goes as it is: from_wire reads only the record's keys, so its "children"
        # does not matter and copying ~25 keys a node would be wasted.
        yield node if type(node) is dict else {k: v for k, v in node.items() if k != "children"}
        yield from _flatten(children)


def _nest(flat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nest wire records as a ProcessorNode tree, in place (``flat`` are fresh dicts)."""
    by_seq: dict[int, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for node in flat:
        node["children"] = []
        by_seq[node["seq"]] = node
        parent = by_seq.get(node.get("parentSeq")) if node.get("parentSeq") is not None else None
        (parent["children"] if parent is not None else roots).append(node)
    return roots


# --------------------------------------------------------------------------- ingestion chunks


def _execution_from_wire(data: Mapping[str, Any] | None) -> Execution | None:
    return None if data is None else Execution.from_wire(data)


def _records_from_wire(records: Sequence[Mapping[str, Any]] | None) -> tuple[ProcessorRecord, ...]:
    if records is not None and type(records) is not list and not isinstance(records, list | tuple):
        raise _bad_field(Chunk, "processors", records, "a list of processor records or null")
    return tuple(ProcessorRecord.from_wire(p) for p in records or ())


@dataclass(frozen=True, slots=True)
class Chunk(_Wire):
    """The body of ``POST /data/chunks``: part (or all) of one execution's trace.

    ``execution`` is the execution summary (sent with the ``final`` chunk, optional before);
    ``processors`` are flat ProcessorRecords.
    """

    _required: ClassVar[frozenset[str]] = frozenset({"execution_id", "exchange_id", "chunk_seq"})
    # From the wire, a null final reads as True; the execution and processors are records.
    _null_is_default: ClassVar[frozenset[str]] = frozenset({"final"})
    _wire_decoders: ClassVar[Mapping[str, Callable[[Any], Any]]] = {
        "execution": _execution_from_wire,
        "processors": _records_from_wire,
    }

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
        return cls._decode(data)  # type: ignore[no-any-return]
