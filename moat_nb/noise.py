"""Difference paths and noise rules for :mod:`moat_nb.diff` and :mod:`moat_nb.lineage` (pure).

Paths
    Every difference a diff reports carries a *path* that says where it is, in a form a person can
    read and paste straight into ``ignore=[...]``. The part before the first ``:`` names the
    field:

    ========================  ===================================================================
    ``status``                the processor's (or the whole execution's) status
    ``error:type``            the Camel exception type; ``error:message`` its message
    ``route``                 the processor ran on one side only (the route took another path)
    ``body``                  the whole body (one side has none, or it is not split further)
    ``body:$``                the root of a JSON body (object or array)
    ``body:$.lines[0].total`` inside a JSON body: ``.name`` for a key, ``[3]`` for an index,
                              ``['odd key']`` for a key that is not a plain name
    ``body:line 12``          line 12 of a text body (1-based; the original's line number for
                              changed and removed lines, the replay's for added ones)
    ``headers:processedAt``   a header; names compare case-insensitively, as Camel's do
    ``properties:order``      an exchange property
    ``properties:order.total``  inside a property (or header) whose value is JSON object/array text
    ``headers:['a.b']``       a header or property name that is not plain, bracketed and quoted
    ========================  ===================================================================

    A *plain* name is ``[A-Za-z_][A-Za-z0-9_-]*`` (so ``Content-Type`` and ``X-Cameleer-Replay``
    stay plain); anything else is written ``['...']`` with ``\\`` and ``'`` escaped by ``\\``.

Ignore rules (``ignore=`` of :func:`moat_nb.diff.diff`)
    * a **string** is a glob over the path: ``*`` matches within one segment (not across ``.``,
      ``[`` or ``]``), ``**`` matches anything, ``?`` one character, ``\\`` escapes the next
      character; every other character is literal (so ``[0]`` is an index, not a character class
      as in :mod:`fnmatch`). A glob matches a path when it matches all of it *or a leading part
      of it that ends at a segment boundary* (and a glob that is literally the path, or a leading
      part of it, always matches, whatever characters the path holds): ``properties:order`` also covers
      ``properties:order.lines[0].qty``, ``headers`` covers every header. Globs over
      ``headers:`` compare case-insensitively. A path copied from a diff row is a glob that
      matches exactly that difference (and what lies under it).
    * a string starting with ``re:`` is a regular expression searched in the path
      (``"re:^headers:X-B3-"``); so is a compiled :class:`re.Pattern`.
    * a :class:`NoiseRule` for anything finer: only at some processors, only when both values
      match a pattern, with a reason that the diff keeps.

    A glob that can match no path is refused (``BAD_PATH``, :func:`check_glob`): a literal one
    that is neither a path nor a field alone, or one whose literal start names no field. Sweep
    writes its payload paths dotted (``headers.processedAt``, ``body.total``); here they would
    match nothing, silently, so the hint gives the spelling above (``headers:processedAt``,
    ``body:$.total``).

    Matching differences are *kept* and flagged ``noise=True``: a reader can always see what was
    filtered, and why (``DiffRow.noise_rule``).

Built-in rules (:data:`DEFAULT_RULES`, on unless ``defaults=False``)
    Camel's own ids and timestamps, which differ between any two runs: the ``breadcrumbId``
    header, ``CamelMessageTimestamp`` / ``CamelCreatedTimestamp`` / ``CamelTimerFiredTime``,
    the ``X-Cameleer-Replay`` header a replay carries (DESIGN.md section 5), values that are
    Camel exchange ids (the classic ``ID-host-...`` form and Camel 4's default 32-character
    ``<15 hex>-<16 hex>`` form, see Camel's UuidGenerator documentation), and values that differ
    only by the two executions' own exchange/execution ids (``order-intake/ID-...`` in a
    property that records the exchange id). Timestamps and random ids that an application makes
    itself (the orders app's ``processedAt`` and ``trackingId``) are not guessed: calibration
    (:func:`moat_nb.diff.calibrate_noise`) finds them by replaying twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ValidationError

if TYPE_CHECKING:
    from .diff import DiffRow

__all__ = [
    "DEFAULT_RULES",
    "FIELDS",
    "KINDS",
    "IdContext",
    "IgnoreSpec",
    "NoiseRule",
    "ParsedPath",
    "as_rules",
    "check_glob",
    "check_prefix",
    "escape_glob",
    "format_name",
    "format_segments",
    "glob_regex",
    "parse_path",
]

#: The fields a difference can be in (the part of a path before ``:``).
FIELDS = ("status", "error", "route", "body", "headers", "properties")

#: The kinds of difference a diff row can be (``DiffRow.kind``).
KINDS = ("changed", "type_changed", "added", "removed")

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


# --------------------------------------------------------------------------- formatting paths


def format_name(name: str) -> str:
    """A header/property name or JSON key as a path segment: plain, or ``['quoted']``."""
    if _PLAIN.match(name):
        return name
    return "['" + name.replace("\\", "\\\\").replace("'", "\\'") + "']"


def format_segments(segments: Sequence[str | int]) -> str:
    """JSON segments (keys and indexes) after a root: ``.lines[0].total``."""
    out: list[str] = []
    for seg in segments:
        if isinstance(seg, int) and not isinstance(seg, bool):
            out.append(f"[{seg}]")
        else:
            text = str(seg)
            out.append("." + text if _PLAIN.match(text) else format_name(text))
    return "".join(out)


# --------------------------------------------------------------------------- parsing paths


@dataclass(frozen=True, slots=True)
class ParsedPath:
    """A path taken apart: ``field``, the header/property ``name`` (if any), JSON ``segments``
    below the body root or the name's value, or a text ``line``; ``json`` says whether a body
    path went into JSON (``body:$...``)."""

    field: str
    name: str | None = None
    segments: tuple[str | int, ...] = ()
    line: int | None = None
    json: bool = False


#: Sweep's payload paths (``body.lines[0].qty``, ``headers.channel``): a field, then ``.`` or ``[``.
_DOTTED = re.compile(r"(body|headers|properties)([.\[])(.*)\Z", re.IGNORECASE | re.DOTALL)


def _diff_spelling(path: str) -> str | None:
    """The diff path for a path written in sweep's dotted syntax (``body.total`` ->
    ``body:$.total``, ``headers.processedAt`` -> ``headers:processedAt``), else None."""
    m = _DOTTED.match(path)
    if m is None:
        return None
    fld, sep, rest = m.group(1).lower(), m.group(2), m.group(3)
    if fld == "body":
        return "body:$" + sep + rest
    return f"{fld}:{rest}" if sep == "." else f"{fld}:{sep}{rest}"


def _bad_path(path: str, why: str) -> ValidationError:
    spelled = _diff_spelling(path)
    if spelled is not None:
        hint = (
            f"diff paths put a ':' after the field: write {spelled!r} (dotted paths such as "
            f"{path!r} are sweep's, for the payload it changes and its outputs=)"
        )
    else:
        hint = (
            "write paths as printed in a diff row, e.g. body:$.lines[0].total, "
            "headers:processedAt, properties:order.total"
        )
    return ValidationError(f"path {path!r} is not a diff path: {why}", code="BAD_PATH", hint=hint)


def _parse_segments(path: str, text: str, pos: int) -> tuple[list[str | int], int]:
    """Parse ``.name``, ``[3]``, ``['key']`` segments from ``text[pos:]`` to the end."""
    segments: list[str | int] = []
    n = len(text)
    while pos < n:
        ch = text[pos]
        if ch == ".":
            end = pos + 1
            while end < n and text[end] not in ".[":
                end += 1
            name = text[pos + 1 : end]
            if not name:
                raise _bad_path(path, f"expected a name after '.' at position {pos}")
            segments.append(name)
            pos = end
        elif ch == "[":
            if text.startswith("['", pos):
                name, pos = _quoted(path, text, pos + 2)
                segments.append(name)
            else:
                end = text.find("]", pos)
                digits = text[pos + 1 : end] if end > 0 else ""
                if not digits.isdigit():
                    raise _bad_path(path, f"expected [index] or ['name'] at position {pos}")
                segments.append(int(digits))
                pos = end + 1
        else:
            raise _bad_path(path, f"unexpected {ch!r} at position {pos}")
    return segments, pos


def _quoted(path: str, text: str, pos: int) -> tuple[str, int]:
    """Read a quoted name starting after ``['``; return it and the position after ``']``."""
    out: list[str] = []
    n = len(text)
    while pos < n:
        ch = text[pos]
        if ch == "\\" and pos + 1 < n:
            out.append(text[pos + 1])
            pos += 2
        elif ch == "'":
            if not text.startswith("']", pos):
                raise _bad_path(path, f"expected '] at position {pos}")
            return "".join(out), pos + 2
        else:
            out.append(ch)
            pos += 1
    raise _bad_path(path, "unterminated ['...']")


def parse_path(path: str) -> ParsedPath:
    """Take a path apart (the inverse of how a diff formats it); raises
    :class:`~moat_nb.errors.ValidationError` for anything that is not a diff path."""
    fld, sep, rest = path.partition(":")
    if fld not in FIELDS:
        raise _bad_path(path, f"it must start with one of {', '.join(FIELDS)}")
    if fld in ("status", "route"):
        if sep:
            raise _bad_path(path, f"{fld} has no sub-path")
        return ParsedPath(fld)
    if fld == "error":
        if rest not in ("type", "message"):
            raise _bad_path(path, "use error:type or error:message")
        return ParsedPath(fld, name=rest)
    if fld == "body":
        if not sep:
            return ParsedPath("body")
        if rest.startswith("line "):
            number = rest[5:]
            if not number.isdigit() or int(number) < 1:
                raise _bad_path(path, "a text line is written body:line N with N >= 1")
            return ParsedPath("body", line=int(number))
        if not rest.startswith("$"):
            raise _bad_path(path, "a body path is body:$... (JSON) or body:line N (text)")
        segments, _ = _parse_segments(path, rest, 1)
        return ParsedPath("body", segments=tuple(segments), json=True)
    # headers / properties
    if not rest:
        raise _bad_path(path, f"{fld}: needs a name")
    if rest.startswith("['"):
        name, pos = _quoted(path, rest, 2)
    else:
        pos = 0
        while pos < len(rest) and rest[pos] not in ".[":
            pos += 1
        name = rest[:pos]
        if not _PLAIN.match(name):
            raise _bad_path(path, f"{name!r} is not a plain name; write ['{name}']")
    segments, _ = _parse_segments(path, rest, pos)
    return ParsedPath(fld, name=name, segments=tuple(segments))


def check_prefix(path: str) -> None:
    """Raise :class:`~moat_nb.errors.ValidationError` (``BAD_PATH``) unless ``path`` is a diff
    path or a field alone (``body``, ``headers``, ...): what covers a path and all below it, in
    ``ignore=`` and :meth:`moat_nb.lineage.Lineage.who_changed`. Anything else matches no
    difference, silently (``headers.processedAt``, sweep's spelling: fuzzing finding)."""
    fld, sep, rest = path.partition(":")
    if fld.lower() == "headers":  # header paths compare case-insensitively, the field too
        fld = "headers"
    if fld in FIELDS and (not rest or "'" in rest):
        # "headers" or "headers:" (which covers the ['quoted'] names), or a leading part of a
        # quoted name: matching is by text there, and ['a[b'] starts with ['a, a part that
        # does not parse (found by the Hypothesis test)
        return
    parse_path(fld + sep + rest)


# --------------------------------------------------------------------------- globs


def check_glob(glob: str) -> None:
    """Raise :class:`~moat_nb.errors.ValidationError` (``BAD_PATH``) for a glob that can match
    no diff path: a literal one that is not a diff path or a field (:func:`check_prefix`), or
    one whose literal start names no field (``headers.*``). A glob with wildcards in its field
    part (``*Timestamp``) is left alone: it may match any field."""
    if not isinstance(glob, str):
        raise ValidationError(
            f"a noise rule's path must be a glob (a string) or a compiled regex, not {type(glob).__name__}",
            code="BAD_IGNORE",
            hint='e.g. NoiseRule(path="headers:processedAt") or NoiseRule(path=re.compile("^headers:X-"))',
        )
    if glob.startswith("re:"):
        raise ValidationError(
            f"path {glob!r} of a NoiseRule is a glob, where re: means nothing",
            code="BAD_PATH",
            hint=f"re: works in ignore=; in a NoiseRule pass re.compile({glob[3:]!r})",
        )
    wild = min((i for i in (glob.find(c) for c in "*?\\") if i >= 0), default=-1)
    if wild < 0:
        check_prefix(glob)
        return
    literal = glob[:wild]
    fld, sep, _ = literal.partition(":")
    if sep and fld not in FIELDS and fld.lower() != "headers":
        raise _bad_path(glob, f"it must start with one of {', '.join(FIELDS)}")
    if not sep and _DOTTED.match(literal):
        raise _bad_path(glob, "the field is followed by '.' or '[' instead of ':'")


def escape_glob(path: str) -> str:
    """A glob that matches ``path`` literally (``*``, ``?`` and ``\\`` escaped)."""
    return re.sub(r"([*?\\])", r"\\\1", path)


def glob_regex(glob: str) -> re.Pattern[str]:
    """Compile a path glob (module docstring) into a regular expression.

    Hand-written rather than :func:`fnmatch.translate`: fnmatch reads ``[0]`` as a character
    class, and a path pasted from a row must match itself literally.
    """
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        ch = glob[i]
        if ch == "\\" and i + 1 < n:
            out.append(re.escape(glob[i + 1]))
            i += 2
            continue
        if ch == "*":
            if glob.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append(r"[^.\[\]]*")
        elif ch == "?":
            out.append(".")
        else:
            out.append(re.escape(ch))
        i += 1
    # A glob also covers what lies below the path it names: the next character after the
    # matched part must start a new segment (".", "[" or the field's ":").
    pattern = "".join(out) + r"(?:[.:\[].*)?\Z"
    flags = re.DOTALL
    if glob[:8].lower() == "headers:" or glob.lower() == "headers":
        flags |= re.IGNORECASE  # Camel header names are case-insensitive (DefaultMessage)
    return re.compile(pattern, flags)


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class IdContext:
    """What some rules need to know about the two executions: their own ids."""

    original_ids: tuple[str, ...] = ()
    replay_ids: tuple[str, ...] = ()


def _as_pattern(value: str | re.Pattern[str] | None) -> re.Pattern[str] | None:
    if value is None or isinstance(value, re.Pattern):
        return value
    return re.compile(value)


@dataclass(frozen=True)
class NoiseRule:
    """One noise rule; a difference is noise when every part the rule sets matches it.

    ``path``: a glob over the path (module docstring) or a compiled regex searched in it.
    ``processor``: a glob over ``"<routeId>/<processorId>"`` (``"order-intake/log*"``).
    ``value``: a regex both present values must match in full (the JSON text of a non-string).
    ``predicate``: any further test ``(row, ids) -> bool``. ``reason``: shown with the row.
    ``kinds``: the kinds of difference it covers (``changed``, ``type_changed``, ``added``,
    ``removed``); None covers all. Calibration sets it: a value seen to *change* between two
    runs is noise when it changes again, not when it appears or goes away.
    """

    path: str | re.Pattern[str] | None = None
    processor: str | None = None
    value: str | re.Pattern[str] | None = None
    reason: str = ""
    predicate: Callable[[DiffRow, IdContext], bool] | None = field(default=None, compare=False)
    kinds: tuple[str, ...] | None = None
    _path_re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _proc_re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _value_re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _path_search: bool = field(default=False, init=False, repr=False, compare=False)
    _path_text: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kinds is not None:
            kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
            unknown = [k for k in kinds if k not in KINDS]
            if unknown or not kinds:
                raise ValidationError(
                    f"a noise rule's kinds must be some of {', '.join(KINDS)}, not {list(kinds)!r}",
                    code="BAD_IGNORE",
                    hint='e.g. NoiseRule(path="headers:processedAt", kinds=("changed",)); None: every kind',
                )
            object.__setattr__(self, "kinds", kinds)  # a list from a results file: hashable
        if self.path is not None:
            if isinstance(self.path, re.Pattern):
                object.__setattr__(self, "_path_re", self.path)
                object.__setattr__(self, "_path_search", True)
            else:
                check_glob(self.path)
                object.__setattr__(self, "_path_re", glob_regex(self.path))
                object.__setattr__(self, "_path_text", self.path)
        if self.processor is not None:
            object.__setattr__(self, "_proc_re", glob_regex(self.processor))
        object.__setattr__(self, "_value_re", _as_pattern(self.value))

    @property
    def label(self) -> str:
        """What the rule is, for a row's ``noise_rule``."""
        if self.reason:
            return self.reason
        parts = []
        if self.path is not None:
            parts.append(self.path.pattern if isinstance(self.path, re.Pattern) else self.path)
        if self.processor is not None:
            parts.append(f"at {self.processor}")
        if self.value is not None:
            parts.append(f"value ~ {self._value_re.pattern if self._value_re else self.value}")
        return "ignore " + " ".join(parts) if parts else "ignore"

    def to_wire(self) -> dict[str, Any] | None:
        """The rule as JSON (``path``, ``processor``, ``kinds``, ``reason``), for the compliance
        evidence, which re-runs the rules it records offline (moat_nb.evidence); None for a rule
        that cannot be written down and re-run as it is: a regex path or value, or a predicate
        (code). Calibration makes only globs (:func:`moat_nb.diff.noise_rules_from`)."""
        if isinstance(self.path, re.Pattern) or self.value is not None or self.predicate is not None:
            return None
        return {
            "path": self.path,
            "processor": self.processor,
            "kinds": None if self.kinds is None else list(self.kinds),
            "reason": self.reason,
        }

    @classmethod
    def from_wire(cls, d: Any) -> NoiseRule:
        """A rule back from :meth:`to_wire`; ValidationError (``BAD_IGNORE``, ``BAD_PATH``) for
        anything else (it is read from a report, which may be forged)."""
        ok = (
            isinstance(d, dict)
            and set(d) <= {"path", "processor", "kinds", "reason"}
            and all(d.get(k) is None or isinstance(d[k], str) for k in ("path", "processor", "reason"))
            and (d.get("kinds") is None or isinstance(d["kinds"], list))
        )
        if not ok:
            raise ValidationError(f"not a recorded noise rule: {str(d)[:80]}", code="BAD_IGNORE")
        kinds = d.get("kinds")
        return cls(
            path=d.get("path"),
            processor=d.get("processor"),
            reason=d.get("reason") or "",
            kinds=None if kinds is None else tuple(kinds),
        )

    def matches(self, row: DiffRow, ids: IdContext = IdContext()) -> bool:
        if self.kinds is not None and row.kind not in self.kinds:
            return False
        if self._path_re is not None:
            if self._path_search:
                if self._path_re.search(row.path) is None:
                    return False
            elif not _literally_under(self._path_text, row.path) and self._path_re.match(row.path) is None:
                return False
        if self._proc_re is not None:
            where = f"{row.processor.route_id}/{row.processor.processor_id}"
            if self._proc_re.match(where) is None:
                return False
        if self._value_re is not None:
            present = [v for v, k in ((row.original, "added"), (row.replay, "removed")) if row.kind != k]
            if not present or not all(self._value_re.fullmatch(_text(v)) for v in present):
                return False
        if self.predicate is not None and not self.predicate(row, ids):
            return False
        return True


def _literally_under(prefix: str | None, path: str) -> bool:
    """``path`` is ``prefix`` or lies below it: a path pasted from a row always matches itself,
    even when its quoted names hold characters the glob syntax gives a meaning (``*``, ``\\``)."""
    if prefix is None or not path.startswith(prefix):
        return False
    return len(path) == len(prefix) or path[len(prefix)] in ".:["


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _differs_only_by_ids(row: DiffRow, ids: IdContext) -> bool:
    """Both values become equal once each side's own exchange/execution ids are blanked out."""
    if row.kind not in ("changed", "type_changed"):
        return False
    a, b = _text(row.original), _text(row.replay)
    hit = False
    for own, text in ((ids.original_ids, a), (ids.replay_ids, b)):
        for ident in own:
            if ident and ident in text:
                hit = True
    if not hit:
        return False
    for ident in sorted((i for i in ids.original_ids if i), key=len, reverse=True):
        a = a.replace(ident, "\x00id\x00")
    for ident in sorted((i for i in ids.replay_ids if i), key=len, reverse=True):
        b = b.replace(ident, "\x00id\x00")
    return a == b


#: Camel's exchange id shapes: the classic generator's "ID-<host>[-<port>]-<millis>-<n>-<n>"
#: (host names may hold dashes; the time is 10 to 13 digits), the sandbox's
#: "ID-sandbox-<12 hex>-<4 hex>", and Camel 4's DefaultUuidGenerator, 32 characters: a
#: 15-hex-digit seed, "-", a 16-hex-digit counter (Camel manual, "UUID Generator"). Not any
#: "ID-..." with three parts: a business reference such as "ID-2024-05-000123" is no noise.
EXCHANGE_ID_PATTERN = re.compile(
    r"ID-[A-Za-z0-9._:-]+-\d{10,13}-\d+-\d+"
    r"|ID-sandbox-[0-9a-f]{12}-[0-9a-f]{4}"
    r"|[0-9A-Fa-f]{15}-[0-9A-Fa-f]{16}"
)

#: Headers and properties Camel itself sets to a per-run id or time (Camel's ``Exchange``
#: constants), and the replay marker header of DESIGN.md section 5.
CAMEL_NOISE_NAMES = (
    "breadcrumbId",
    "CamelMessageTimestamp",
    "CamelCreatedTimestamp",
    "CamelTimerFiredTime",
    "CamelExchangeId",
    "X-Cameleer-Replay",
)

_NAMES = "|".join(re.escape(n) for n in CAMEL_NOISE_NAMES)

DEFAULT_RULES: tuple[NoiseRule, ...] = (
    # One rule for all the names (each rule costs a call per row): header names compare
    # case-insensitively, as Camel's do; property names as they are.
    NoiseRule(
        path=re.compile(
            rf"\A(?:(?i:headers):(?i:{_NAMES})|properties:(?:{_NAMES}))(?:[.\[].*)?\Z", re.DOTALL
        ),
        reason="Camel per-run id or timestamp",
    ),
    NoiseRule(value=EXCHANGE_ID_PATTERN, reason="Camel exchange id"),
    NoiseRule(predicate=_differs_only_by_ids, reason="differs only by the exchange's own id"),
)

IgnoreSpec = str | re.Pattern[str] | NoiseRule | Iterable["IgnoreSpec"] | None


def as_rules(ignore: IgnoreSpec) -> list[NoiseRule]:
    """Turn what ``ignore=`` accepts into rules (module docstring); raises
    :class:`~moat_nb.errors.ValidationError` for anything else."""
    out: list[NoiseRule] = []
    if ignore is None:
        return out
    if isinstance(ignore, NoiseRule):
        return [ignore]
    if isinstance(ignore, re.Pattern):
        return [NoiseRule(path=ignore, reason=f"ignore re:{ignore.pattern}")]
    if isinstance(ignore, str):
        if ignore.startswith("re:"):
            try:
                pattern = re.compile(ignore[3:])
            except re.error as err:
                raise ValidationError(
                    f"ignore rule {ignore!r} is not a valid regular expression: {err}",
                    code="BAD_IGNORE",
                    hint="after re: write a Python regular expression searched in the path",
                ) from None
            return [NoiseRule(path=pattern, reason=f"ignore {ignore}")]
        return [NoiseRule(path=ignore, reason=f"ignore {ignore}")]
    if isinstance(ignore, Iterable) and not isinstance(ignore, bytes | dict):
        for item in ignore:
            out.extend(as_rules(item))
        return out
    raise ValidationError(
        f"ignore must be a path glob, a regex, a NoiseRule or a list of them, not {type(ignore).__name__}",
        code="BAD_IGNORE",
        hint='e.g. ignore=["headers:processedAt", "body:$.trackingId", "re:^properties:tmp"]',
    )
