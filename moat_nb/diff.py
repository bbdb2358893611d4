"""Original-vs-replay diff (DESIGN.md section 9, issue 6): pure, no I/O.

:func:`diff` compares two executions of one route — typically a recorded exchange and its
replay — and answers *where* the replay diverged and *why*:

Alignment
    The processor records of both sides are lined up by ``(routeId, processorId, iteration)``
    in execution (``seq``) order with :class:`difflib.SequenceMatcher` (``autojunk=False``):
    it matches the longest common run first, so a long common prefix and suffix around another
    ``choice`` branch, or around extra ``split`` iterations, stay matched and the branch shows as
    processors *removed* and *added* instead of "everything changed". Ties between equally long
    alignments are broken the same way whichever side is passed first, so ``diff(b, a)`` is
    the mirror of ``diff(a, b)`` (added <-> removed) — exactly, except inside a JSON list of
    scalars, where DeepDiff's own matching depends on the order of its arguments and is kept
    as it is, for the sake of the same findings as DeepDiff, and in the number of a changed
    text line, which is the original's (``body:line N``, :mod:`moat_nb.noise`): after lines
    added above it, the same pair of lines is line 2 one way and line 3 the other.

Comparison, per aligned processor (and for the execution's entry and exit)
    status, error type and message, the route taken (a processor on one side only), the output
    body, the output headers and the exchange properties after the processor. JSON bodies (and
    header or property values holding JSON object/array text) are compared structurally with the
    semantics of :class:`deepdiff.DeepDiff` (``values_changed`` -> ``changed``, ``type_changes``
    -> ``type_changed``, ``*_added``/``*_removed``); text bodies line by line (:mod:`difflib`).
    Paths are printed in the syntax of :mod:`moat_nb.noise`, pasteable into ``ignore=``.

Why it is fast (DESIGN.md section 11, P4)
    Bodies that are the same text are skipped by string equality (CPython compares the hash
    first); a pair of texts already compared is answered from a per-diff cache (most processors
    do not touch the body, so the same pair recurs); inside a JSON document the walk descends
    only into subtrees that differ (a C-speed ``==`` plus a canonical ``json.dumps`` to tell
    ``1`` from ``1.0`` and ``true``, which ``==`` confuses) and hands DeepDiff only the
    smallest differing lists of scalars, where DeepDiff's own difflib matching applies. Dicts
    and lists of containers are walked exactly as DeepDiff walks them (key sets with its
    ``threshold_to_diff_deeper`` rule; index pairs by ``zip_longest``), so the findings are the
    same as one DeepDiff over both whole documents.

Cause (``DiffRow.cause``)
    The start payloads of both executions (the root's input body, headers, properties) are
    compared first; those differences are the ``(start)`` rows. A later difference is
    ``"input"`` when the start payload already had the same path with the same pair of values:
    the modified input was carried through unchanged. Every other difference is ``"route"``:
    the route produced a different value there. With identical start payloads everything is
    ``"route"`` (version change, stubbed reply, non-determinism); with a modified payload a
    ``"route"`` difference may still be a *consequence* of the input (a total computed from a
    changed quantity) — telling those apart would take a third run, so the rule does not guess.

First divergence
    The first processor, in execution order, with a difference that is neither noise nor
    ``cause="input"``; a processor present on one side only counts. The execution's exit
    ``(end)`` is a candidate last, so a ``ROUTE``-captured original with an equal path but a
    different result still names where it shows.

``ROUTE``-captured originals (DESIGN.md section 3) carry no payloads at processors (or no
processor records at all): the diff compares what both sides have and lists what it could not
in :attr:`DiffResult.limitations` and the summary.
"""

from __future__ import annotations

import difflib
import html
import inspect
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from typing import TYPE_CHECKING, Any, Protocol

from deepdiff import DeepDiff

from .errors import ValidationError
from .model import Execution, ProcessorRecord
from .noise import (
    DEFAULT_RULES,
    IdContext,
    IgnoreSpec,
    NoiseRule,
    as_rules,
    escape_glob,
    format_name,
    format_segments,
)

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

__all__ = [
    "COLUMNS",
    "END",
    "START",
    "AlignedProcessor",
    "DiffResult",
    "DiffRow",
    "ProcessorRef",
    "acalibrate_noise",
    "calibrate_noise",
    "diff",
    "json_changes",
    "noise_rules_from",
    "payload_changes",
]

#: Pseudo processor ids of the execution's entry (start payload) and exit (result).
START = "(start)"
END = "(end)"

#: Columns of :meth:`DiffResult.to_pandas` / :meth:`DiffResult.to_polars`, in order, with their
#: Arrow types (the conventions of :mod:`moat_nb.frames`: nullable Int64, pyarrow strings).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("processor_id", "string"),
    ("route_id", "string"),
    ("iteration", "int64"),
    ("seq_original", "int64"),
    ("seq_replay", "int64"),
    ("field", "string"),
    ("path", "string"),
    ("original", "string"),
    ("replay", "string"),
    ("kind", "string"),
    ("noise", "bool"),
    ("cause", "string"),
)

#: DeepDiff reports the whole dict as changed when fewer than this share of keys is common; the
#: walk mirrors the installed DeepDiff's default so that findings stay the same.
_DEEPER: float = inspect.signature(DeepDiff.__init__).parameters["threshold_to_diff_deeper"].default
_BASIC = (str, int, float, bool, type(None), bytes)
_KIND = {
    "values_changed": "changed",
    "type_changes": "type_changed",
    "dictionary_item_added": "added",
    "iterable_item_added": "added",
    "set_item_added": "added",
    "dictionary_item_removed": "removed",
    "iterable_item_removed": "removed",
    "set_item_removed": "removed",
}

Change = tuple[str, str, Any, Any]  # path, kind, original value, replay value


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ProcessorRef:
    """Where a difference is: the aligned processor (``seq`` of each side; ``None`` on the side
    that did not run it), or the execution's ``(start)`` / ``(end)``."""

    route_id: str
    processor_id: str
    iteration: int = 0
    seq_original: int | None = None
    seq_replay: int | None = None

    @property
    def label(self) -> str:
        it = f"[{self.iteration}]" if self.iteration else ""
        if self.processor_id in (START, END):
            return f"{self.processor_id} {self.route_id}"
        seqs = f"{_s(self.seq_original)}/{_s(self.seq_replay)}"
        return f"{self.route_id}/{self.processor_id}{it} (seq {seqs})"


def _s(seq: int | None) -> str:
    return "-" if seq is None else str(seq)


@dataclass(frozen=True, slots=True)
class DiffRow:
    """One difference. ``original`` / ``replay`` are the values (``None`` on the side where the
    thing is absent: ``kind`` says which); ``noise_rule`` names the rule that flagged it."""

    processor: ProcessorRef
    field: str  # status | error | route | body | headers | properties
    path: str
    original: Any
    replay: Any
    kind: str  # changed | added | removed | type_changed
    noise: bool = False
    cause: str = "route"  # input | route
    noise_rule: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiffRow:
        """A row back from :meth:`to_dict` (as evidence.json keeps it), for report verify."""
        ref = ProcessorRef(
            str(d.get("routeId")),
            str(d.get("processorId")),
            d.get("iteration") or 0,
            d.get("seqOriginal"),
            d.get("seqReplay"),
        )
        return cls(
            ref,
            str(d.get("field")),
            str(d.get("path")),
            d.get("original"),
            d.get("replay"),
            str(d.get("kind")),
            bool(d.get("noise")),
            str(d.get("cause")),
            d.get("noiseRule"),
        )

    def to_dict(self) -> dict[str, Any]:
        p = self.processor
        return {
            "processorId": p.processor_id,
            "routeId": p.route_id,
            "iteration": p.iteration,
            "seqOriginal": p.seq_original,
            "seqReplay": p.seq_replay,
            "field": self.field,
            "path": self.path,
            "original": self.original,
            "replay": self.replay,
            "kind": self.kind,
            "noise": self.noise,
            "noiseRule": self.noise_rule,
            "cause": self.cause,
        }


@dataclass(frozen=True, slots=True)
class AlignedProcessor:
    """One step of the alignment: the records of both sides (one may be ``None``) and what the
    diff found there: ``state`` is ``same``, ``noise`` (only noise), ``input`` (only carried
    input differences), ``changed``, ``removed`` or ``added``."""

    ref: ProcessorRef
    original: ProcessorRecord | None
    replay: ProcessorRecord | None
    state: str


# --------------------------------------------------------------------------- structural compare


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _same(a: Any, b: Any) -> bool:
    """Equal as DeepDiff sees it: same types all the way down (``==`` alone says 1 == 1.0 == True)."""
    if a is b:
        return True
    ta = type(a)
    if ta is not type(b):
        return False
    if ta is dict or ta is list:
        return a == b and _dumps(a) == _dumps(b)
    return a == b


def _walk(
    a: Any, b: Any, segs: list[str | int], prefix: str, out: list[Change], *, collapse: bool = True
) -> None:
    """Append the differences between JSON values ``a`` and ``b`` (known to differ or not).
    ``collapse``: an object whose keys mostly changed is one row, as DeepDiff reports it
    (``threshold_to_diff_deeper``); False walks every key (lineage, to credit each change)."""
    if a is b:
        return
    ta = type(a)
    if ta is not type(b):
        out.append((prefix + format_segments(segs), "type_changed", a, b))
        return
    if ta is dict:
        keys_a, keys_b = a.keys(), b.keys()
        common = keys_a & keys_b
        union = len(keys_a | keys_b)
        if collapse and _DEEPER and union > 1 and len(common) / union < _DEEPER:
            out.append((prefix + format_segments(segs), "changed", a, b))
            return
        for k in b:
            if k not in a:
                out.append((prefix + format_segments([*segs, k]), "added", None, b[k]))
        for k in a:
            if k not in b:
                out.append((prefix + format_segments([*segs, k]), "removed", a[k], None))
        for k in a:
            if k in b:
                va, vb = a[k], b[k]
                if not _same(va, vb):
                    _walk(va, vb, [*segs, k], prefix, out, collapse=collapse)
        return
    if ta is list:
        if all(isinstance(x, _BASIC) for x in a) and all(isinstance(x, _BASIC) for x in b):
            # Lists of scalars: DeepDiff matches them with difflib (and falls back to index
            # pairs when that reports more); let DeepDiff itself decide.
            if not _same(a, b):
                _deepdiff(a, b, segs, prefix, out, typed=True)
            return
        for i, (x, y) in enumerate(zip_longest(a, b, fillvalue=_MISSING)):
            if y is _MISSING:
                out.append((prefix + format_segments([*segs, i]), "removed", x, None))
            elif x is _MISSING:
                out.append((prefix + format_segments([*segs, i]), "added", None, y))
            elif not _same(x, y):
                _walk(x, y, [*segs, i], prefix, out, collapse=collapse)
        return
    if a != b:
        out.append((prefix + format_segments(segs), "changed", a, b))


def json_changes(a: Any, b: Any, prefix: str, *, collapse: bool = True) -> list[Change]:
    """The differences between two parsed JSON values as ``(path, kind, a, b)``, paths under
    ``prefix`` (``"body:$"``). ``collapse=False``: every key of an object, even one whose keys
    mostly changed (which is otherwise one row, as DeepDiff reports it)."""
    out: list[Change] = []
    _walk(a, b, [], prefix, out, collapse=collapse)
    return out


_MISSING = object()


#: The types whose values Python holds equal across types (1 == 1.0 == True).
_NUMERIC = frozenset({bool, int, float})


def _deepdiff(
    a: Any, b: Any, segs: list[str | int], prefix: str, out: list[Change], *, typed: bool = False
) -> None:
    """DeepDiff's findings between ``a`` and ``b``, in path order. ``typed`` (two lists of
    scalars): also, for lists of one length, the items equal in value but not in JSON type at
    the same index, which DeepDiff matches as the same (1 == 1.0 == True in Python)."""
    tree = DeepDiff(a, b, view="tree")
    found: list[tuple[list[Any], Change]] = []
    for report, levels in tree.items():
        kind = _KIND.get(report)
        if kind is None:  # moved items, repetitions: not produced for JSON with default options
            continue
        for level in levels:
            rel = level.path(output_format="list")
            t1 = None if kind == "added" else level.t1
            t2 = None if kind == "removed" else level.t2
            found.append((rel, (prefix + format_segments([*segs, *rel]), kind, t1, t2)))
    if typed and len(a) == len(b) and len(_NUMERIC.intersection(map(type, (*a, *b)))) > 1:
        # Item by item: DeepDiff does not even look into two lists equal in Python. (Lists of
        # other lengths are left to DeepDiff's alignment: where an item went is ambiguous.)
        reported = {tuple(rel) for rel, _ in found}
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if type(x) is not type(y) and x == y and (i,) not in reported:
                found.append(([i], (prefix + format_segments([*segs, i]), "type_changed", x, y)))
    found.sort(key=lambda item: [(0, x) if isinstance(x, int) else (1, str(x)) for x in item[0]])
    out.extend(change for _, change in found)


class JsonCache:
    """Parses texts as JSON once per diff (the same body text recurs across processors)."""

    NOT_JSON = object()

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def parse(self, text: Any) -> Any:
        """The parsed value of a JSON object/array text, else :attr:`NOT_JSON`."""
        if not isinstance(text, str):
            return self.NOT_JSON
        try:
            return self._cache[text]
        except KeyError:
            pass
        value: Any = self.NOT_JSON
        head = text.lstrip()[:1]
        if head in ("{", "["):
            try:
                value = json.loads(text)
            except (ValueError, RecursionError):  # nested too deep to read: compared as text
                value = self.NOT_JSON
        self._cache[text] = value
        return value


def _text_lines(a: str, b: str) -> list[Change]:
    """Line differences between two texts (difflib opcodes; 1-based line numbers)."""
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    out: list[Change] = []

    def shown(x: str, y: str | None = None) -> str:
        sx = x.rstrip("\r\n")
        if y is not None and sx == y.rstrip("\r\n"):
            return x  # only the line ending differs: show it
        return sx

    # difflib breaks ties by position in its first argument; run it on a canonical orientation
    # so that swapping the two texts mirrors the result exactly.
    swap = lb < la
    x, y = (lb, la) if swap else (la, lb)
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, x, y, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        if swap:
            i1, i2, j1, j2 = j1, j2, i1, i2
        pairs = min(i2 - i1, j2 - j1) if op == "replace" else 0
        for k in range(pairs):
            x, y = la[i1 + k], lb[j1 + k]
            out.append((f"body:line {i1 + k + 1}", "changed", shown(x, y), shown(y, x)))
        for i in range(i1 + pairs, i2):
            out.append((f"body:line {i + 1}", "removed", shown(la[i]), None))
        for j in range(j1 + pairs, j2):
            out.append((f"body:line {j + 1}", "added", None, shown(lb[j])))
    if not out and a != b:  # e.g. only a final newline differs
        out.append(("body", "changed", a, b))
    return out


class PayloadComparer:
    """Payload comparisons within one diff, with the parse cache and the pair cache."""

    def __init__(self) -> None:
        self.json = JsonCache()
        self._bodies: dict[tuple[str, str], list[Change]] = {}

    def body(self, a: str | None, b: str | None) -> list[Change]:
        if a == b:
            return []
        if a is None:
            return [("body", "added", None, b)]
        if b is None:
            return [("body", "removed", a, None)]
        key = (a, b)
        cached = self._bodies.get(key)
        if cached is not None:
            return cached
        ja, jb = self.json.parse(a), self.json.parse(b)
        out: list[Change] | None = None
        if ja is not JsonCache.NOT_JSON and jb is not JsonCache.NOT_JSON:
            out = []
            try:
                _walk(ja, jb, [], "body:$", out)
            except RecursionError:  # nested past the interpreter's limit: compared as text
                out = None
        if out is None:
            out = _text_lines(a, b)
        self._bodies[key] = out
        return out

    def mapping(
        self, fld: str, a: Mapping[str, Any], b: Mapping[str, Any], *, fold_case: bool
    ) -> list[Change]:
        if a == b and _same(dict(a), dict(b)):
            return []
        if fold_case:
            # Camel's message headers are a case-insensitive map (DefaultMessage): Content-Type
            # and content-type are one header.
            ia = {k.lower(): (k, v) for k, v in a.items()}
            ib = {k.lower(): (k, v) for k, v in b.items()}
        else:
            ia = {k: (k, v) for k, v in a.items()}
            ib = {k: (k, v) for k, v in b.items()}
        out: list[Change] = []
        for low, (name, va) in ia.items():
            if low not in ib:
                out.append((f"{fld}:{format_name(name)}", "removed", va, None))
                continue
            vb = ib[low][1]
            if _same(va, vb):
                continue
            prefix = f"{fld}:{format_name(name)}"
            ja, jb = self.json.parse(va), self.json.parse(vb)
            found: list[Change] = []
            try:
                if ja is not JsonCache.NOT_JSON and jb is not JsonCache.NOT_JSON:
                    _walk(ja, jb, [], prefix, found)
                elif isinstance(va, dict | list) and isinstance(vb, dict | list):
                    _walk(va, vb, [], prefix, found)
                else:
                    found.append((prefix, "changed" if type(va) is type(vb) else "type_changed", va, vb))
            except RecursionError:  # nested past the interpreter's limit: one row for the value
                found = [(prefix, "changed" if type(va) is type(vb) else "type_changed", va, vb)]
            out.extend(found)
        for low, (name, vb) in ib.items():
            if low not in ia:
                out.append((f"{fld}:{format_name(name)}", "added", None, vb))
        return out


def payload_changes(
    before: tuple[str | None, Mapping[str, Any] | None, Mapping[str, Any] | None],
    after: tuple[str | None, Mapping[str, Any] | None, Mapping[str, Any] | None],
    *,
    comparer: PayloadComparer | None = None,
) -> list[Change]:
    """Differences between two ``(body, headers, properties)`` triples as
    ``(path, kind, before, after)``; a ``None`` map is "not captured" and is skipped. Used by
    :mod:`moat_nb.lineage` for a processor's input vs output."""
    c = comparer or PayloadComparer()
    out = c.body(before[0], after[0])
    if before[1] is not None and after[1] is not None:
        out = [*out, *c.mapping("headers", before[1], after[1], fold_case=True)]
    if before[2] is not None and after[2] is not None:
        out = [*out, *c.mapping("properties", before[2], after[2], fold_case=False)]
    return out


# --------------------------------------------------------------------------- alignment


def _key(p: ProcessorRecord) -> tuple[str, str, int]:
    return (p.route_id, p.processor_id, p.iteration)


def _align(
    a: Sequence[ProcessorRecord], b: Sequence[ProcessorRecord]
) -> list[tuple[ProcessorRecord | None, ProcessorRecord | None]]:
    """LCS-style alignment of two processor sequences (module docstring)."""
    ka, kb = [_key(p) for p in a], [_key(p) for p in b]
    swap = kb < ka  # compute on a canonical orientation, so that diff(b, a) mirrors diff(a, b)
    x, y = (kb, ka) if swap else (ka, kb)
    opcodes = difflib.SequenceMatcher(None, x, y, autojunk=False).get_opcodes()
    out: list[tuple[ProcessorRecord | None, ProcessorRecord | None]] = []
    for op, i1, i2, j1, j2 in opcodes:
        if swap:
            i1, i2, j1, j2 = j1, j2, i1, i2
        if op == "equal":
            out.extend(zip(a[i1:i2], b[j1:j2], strict=True))
        else:
            out.extend((p, None) for p in a[i1:i2])
            out.extend((None, q) for q in b[j1:j2])
    return out


# --------------------------------------------------------------------------- the diff


def _route_value(p: ProcessorRecord) -> dict[str, Any]:
    return {"processorType": p.processor_type, "status": p.status}


def _error_changes(
    a_type: str | None, a_msg: str | None, b_type: str | None, b_msg: str | None
) -> list[tuple[str, str, str, Any, Any]]:
    out = []
    for path, x, y in (("error:type", a_type, b_type), ("error:message", a_msg, b_msg)):
        if x != y:
            kind = "added" if x is None else "removed" if y is None else "changed"
            out.append(("error", path, kind, x, y))
    return out


class _Builder:
    """Collects rows with their cause and noise flag."""

    def __init__(self, rules: list[NoiseRule], ids: IdContext) -> None:
        self.rules = rules
        self.ids = ids
        self.rows: list[DiffRow] = []
        self.inputs: dict[str, tuple[str, str]] = {}

    def add(
        self, ref: ProcessorRef, fld: str, path: str, kind: str, a: Any, b: Any, cause: str | None = None
    ) -> None:
        if cause is None:
            seen = self.inputs.get(path)
            cause = "input" if seen is not None and seen == (_canon(kind, a), _canon(kind, b)) else "route"
        row = DiffRow(ref, fld, path, a, b, kind, False, cause)
        for rule in self.rules:
            if rule.matches(row, self.ids):
                row = DiffRow(ref, fld, path, a, b, kind, True, cause, rule.label)
                break
        self.rows.append(row)

    def changes(self, ref: ProcessorRef, changes: Iterable[Change], cause: str | None = None) -> None:
        for path, kind, a, b in changes:
            self.add(ref, path.partition(":")[0], path, kind, a, b, cause)


def _canon(kind: str, value: Any) -> str:
    return kind + "\x00" + _dumps(value)


def require_execution(value: Any, call: str, what: str = "execution") -> Execution:
    """``value`` if it is an :class:`Execution`, else a ValidationError (``BAD_SOURCE``, the code
    ``replay()`` uses for a source it cannot take) naming what was passed and how to get an
    Execution: an id, a frame row or a wire dict failed deep inside with an AttributeError
    (fuzzing finding). The pure functions do no I/O, so an id is not fetched here."""
    if isinstance(value, Execution):
        return value
    kind = type(value).__name__
    if isinstance(value, str):
        hint = f"{value[:60]!r} is an id: fetch the execution first, with p.execution(id)"
    elif isinstance(value, Mapping):
        hint = "fetch the execution with p.execution(id), or read a wire dict with Execution.from_wire(d)"
    elif hasattr(value, "to_dict") and callable(value.to_dict):  # a pandas Series: a frame row
        hint = "a frame row holds no processors: fetch its execution with p.execution(row.execution_id)"
    elif hasattr(value, "replay_id") and callable(getattr(value, "wait", None)):  # a ReplayRun
        hint = "a ReplayRun is the replay as requested: its Execution is run.wait() (await run in async code)"
    else:
        hint = "fetch the execution with p.execution(id)"
    raise ValidationError(
        f"{call} takes an Execution as {what}, not {'None' if value is None else 'a ' + kind}",
        code="BAD_SOURCE",
        hint=hint,
        details={"argument": what, "type": kind},
    )


def diff(
    original: Execution,
    replay: Execution,
    ignore: IgnoreSpec = None,
    *,
    defaults: bool = True,
) -> DiffResult:
    """Compare ``original`` with ``replay`` (module docstring); ``ignore`` takes path globs,
    ``re:`` regexes, compiled patterns or :class:`~moat_nb.noise.NoiseRule` objects (for
    instance the rules :func:`calibrate_noise` returns); ``defaults=False`` turns the built-in
    Camel noise rules off. Differences matching a rule are kept with ``noise=True``.

    Both sides are :class:`~moat_nb.model.Execution` objects (``p.execution(id)``); anything
    else is a :class:`~moat_nb.errors.ValidationError` (``BAD_SOURCE``)."""
    require_execution(original, "diff()", "original")
    require_execution(replay, "diff()", "replay")
    rules = [*(DEFAULT_RULES if defaults else ()), *as_rules(ignore)]
    ids = IdContext(
        original_ids=tuple(i for i in (original.exchange_id, original.execution_id) if i),
        replay_ids=tuple(i for i in (replay.exchange_id, replay.execution_id) if i),
    )
    b = _Builder(rules, ids)
    c = PayloadComparer()
    limitations: list[str] = []
    route_mode = [e.capture_mode == "ROUTE" for e in (original, replay)]

    # -- the start payloads: what the replay was asked to change
    start = ProcessorRef(original.route_id, START, 0, None, None)
    start_changes: list[Change] = []
    if original.input_headers is None or replay.input_headers is None:
        # Both named when both lack it: diff(hit, hit) of two search hits named the original only.
        side = (
            "the original and the replay have"
            if original.input_headers is None and replay.input_headers is None
            else "the original has"
            if original.input_headers is None
            else "the replay has"
        )
        limitations.append(f"{side} no detail (start payload): fetch it with Platform.execution(id)")
    else:
        start_changes = payload_changes(
            (original.input_body, original.input_headers, original.input_properties or {}),
            (replay.input_body, replay.input_headers, replay.input_properties or {}),
            comparer=c,
        )
    b.changes(start, start_changes, cause="input")
    b.inputs = {path: (_canon(kind, x), _canon(kind, y)) for path, kind, x, y in start_changes}

    # -- processors
    procs_a, procs_b = original.processors or (), replay.processors or ()
    aligned: list[tuple[ProcessorRef, ProcessorRecord | None, ProcessorRecord | None]] = []
    if not procs_a or not procs_b:

        def lacks(e: Execution, procs: Sequence[ProcessorRecord]) -> bool:
            # A search hit (processors None) or a detail that lost the records it counted. With
            # neither side's records, diff(hit, hit) said "no differences" and nothing more
            # about the route it had not compared.
            return not procs and (e.processors is None or (e.processor_count or 0) > 0)

        missing = [
            side
            for side, e, procs in (("original", original, procs_a), ("replay", replay, procs_b))
            if (procs_a or procs_b) and not procs or lacks(e, procs)
        ]
        if missing:
            who = "the original and the replay have" if len(missing) == 2 else f"the {missing[0]} has"
            limitations.append(
                f"{who} no processor records (captured in ROUTE mode, or a search hit):"
                " the route taken and each processor's output could not be compared, only the"
                " route's entry and exit"
            )
    else:
        pairs = _align(procs_a, procs_b)
        no_payload = 0
        truncated = 0
        for pa, pb in pairs:
            if pa is None or pb is None:
                one = pa if pa is not None else pb
                assert one is not None
                ref = ProcessorRef(
                    one.route_id,
                    one.processor_id,
                    one.iteration,
                    pa.seq if pa else None,
                    pb.seq if pb else None,
                )
                kind = "removed" if pb is None else "added"
                b.add(
                    ref,
                    "route",
                    "route",
                    kind,
                    _route_value(pa) if pa else None,
                    _route_value(pb) if pb else None,
                    "route",
                )
                aligned.append((ref, pa, pb))
                continue
            ref = ProcessorRef(pa.route_id, pa.processor_id, pa.iteration, pa.seq, pb.seq)
            if pa.status != pb.status:
                b.add(ref, "status", "status", "changed", pa.status, pb.status)
            for fld, path, kind, x, y in _error_changes(
                pa.error_type, pa.error_message, pb.error_type, pb.error_message
            ):
                b.add(ref, fld, path, kind, x, y)
            if route_mode[0] or route_mode[1]:
                no_payload += 1
            else:
                if pa.body_truncated or pb.body_truncated:
                    truncated += 1
                else:
                    b.changes(ref, c.body(pa.output_body, pb.output_body))
                if pa.output_headers is not None and pb.output_headers is not None:
                    b.changes(ref, c.mapping("headers", pa.output_headers, pb.output_headers, fold_case=True))
                if pa.properties is not None and pb.properties is not None:
                    b.changes(ref, c.mapping("properties", pa.properties, pb.properties, fold_case=False))
            aligned.append((ref, pa, pb))
        if no_payload:
            side = "original" if route_mode[0] else "replay"
            limitations.append(
                f"the {side} was captured in ROUTE mode: bodies, headers and properties at the "
                f"{no_payload} aligned processors could not be compared (status, errors and the "
                "route taken were; payloads only at the route's entry and exit)"
            )
        if truncated:
            limitations.append(
                f"bodies were truncated at capture (captureMaxBytes) at {truncated} processors: "
                "those bodies were not compared"
            )

    # -- the execution's exit: the result
    end = ProcessorRef(original.route_id, END, 0, None, None)
    if original.status != replay.status:
        b.add(end, "status", "status", "changed", original.status, replay.status)
    for fld, path, kind, x, y in _error_changes(
        original.error_type, original.error_message, replay.error_type, replay.error_message
    ):
        b.add(end, fld, path, kind, x, y)
    if original.output_headers is not None and replay.output_headers is not None:
        b.changes(
            end,
            payload_changes(
                (original.output_body, original.output_headers, original.output_properties or {}),
                (replay.output_body, replay.output_headers, replay.output_properties or {}),
                comparer=c,
            ),
        )
    elif original.input_headers is not None and replay.input_headers is not None:
        limitations.append("an execution has no output payload: the result body could not be compared")
    if original.route_id != replay.route_id:
        limitations.append(f"the executions ran different routes ({original.route_id} vs {replay.route_id})")
    return DiffResult(
        original, replay, tuple(b.rows), tuple(limitations), _steps(aligned, b.rows), tuple(rules)
    )


def _steps(
    aligned: list[tuple[ProcessorRef, ProcessorRecord | None, ProcessorRecord | None]],
    rows: list[DiffRow],
) -> tuple[AlignedProcessor, ...]:
    by_ref: dict[ProcessorRef, list[DiffRow]] = {}
    for r in rows:
        by_ref.setdefault(r.processor, []).append(r)
    out = []
    for ref, pa, pb in aligned:
        found = by_ref.get(ref, [])
        if pa is None:
            state = "added"
        elif pb is None:
            state = "removed"
        elif not found:
            state = "same"
        elif all(r.noise for r in found):
            state = "noise"
        elif all(r.noise or r.cause == "input" for r in found):
            state = "input"
        else:
            state = "changed"
        out.append(AlignedProcessor(ref, pa, pb, state))
    return tuple(out)


# --------------------------------------------------------------------------- the result


def frame(columns: Sequence[tuple[str, str]], data: Mapping[str, list[Any]], backend: str) -> Any:
    """``data`` as a pyarrow table (``"arrow"``), pandas or polars frame with the Arrow types of
    ``columns``, in the dtype conventions of :mod:`moat_nb.frames` (pyarrow-backed strings,
    nullable ``Int64`` and ``boolean``), so that a missing seq stays an int. Imports lazily: the
    pure core does not need pyarrow, pandas or polars until a frame is asked for."""
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_(), "float64": pa.float64()}
    schema = pa.schema([pa.field(name, types[t]) for name, t in columns])
    table = pa.Table.from_pydict(dict(data), schema=schema)
    if backend == "arrow":
        return table
    if backend == "polars":
        import polars as pl

        return pl.from_arrow(table, rechunk=True)
    import pandas as pd

    mapping = {
        pa.string(): pd.StringDtype(storage="pyarrow"),
        pa.int64(): pd.Int64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
    }
    return table.to_pandas(types_mapper=mapping.get)


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class DiffResult:
    """What :func:`diff` found. ``rows`` are in execution order: ``(start)`` rows, then each
    aligned processor, then ``(end)``; ``aligned`` is the processor alignment (for timelines)."""

    original: Execution
    replay: Execution
    rows: tuple[DiffRow, ...]
    limitations: tuple[str, ...] = ()
    aligned: tuple[AlignedProcessor, ...] = ()
    #: The noise rules the diff applied, in the order it tried them (the first that matches
    #: names a row's ``noise_rule``): the compliance evidence records them, so that report
    #: verify can re-run them on the rows it keeps (moat_nb.evidence).
    rules: tuple[NoiseRule, ...] = ()

    # -- verdicts

    @property
    def same(self) -> bool:
        """No difference other than noise."""
        return not any(not r.noise for r in self.rows)

    @property
    def differences(self) -> tuple[DiffRow, ...]:
        """The rows that are not noise."""
        return tuple(r for r in self.rows if not r.noise)

    @property
    def first_divergence(self) -> ProcessorRef | None:
        """The first processor (execution order) with a difference that is neither noise nor
        carried from the start payload; ``(end)`` when only the result differs; else ``None``."""
        return _first_divergence(self.rows)

    def rows_at(self, ref: ProcessorRef) -> tuple[DiffRow, ...]:
        """The rows of one processor (e.g. ``result.rows_at(result.first_divergence)``)."""
        return tuple(r for r in self.rows if r.processor == ref)

    @property
    def removed(self) -> tuple[ProcessorRef, ...]:
        """Processors only the original ran."""
        return _route_only(self.rows, "removed")

    @property
    def added(self) -> tuple[ProcessorRef, ...]:
        """Processors only the replay ran."""
        return _route_only(self.rows, "added")

    # -- text

    def summary(self) -> str:
        """A few lines a person reads first: both sides, the result, counts, the first divergence,
        where each differing field first shows, and what could not be compared. Each line is
        made by a function of its own (the ``summary_*`` helpers below), which the compliance
        report's verification calls again on the evidence's rows (moat_nb.evidence)."""
        o, r = self.original, self.replay
        lines = [summary_head(o, r), summary_result(o, r, self.rows)]
        real = [x for x in self.rows if not x.noise]
        noise = len(self.rows) - len(real)
        if not real:
            lines.append(f"no differences (apart from {noise} noise)" if noise else "no differences")
        else:
            by_cause = Counter(x.cause for x in real)
            procs = {x.processor for x in real if x.processor.processor_id not in (START, END)}
            lines.append(
                summary_count(len(real), by_cause, len(procs), noise, o.capture_mode, bool(o.processors))
            )
        lines += [x for x in (summary_route(self.rows), summary_first_divergence(self.rows)) if x]
        lines += summary_first_seen(self.rows)
        lines += summary_limitations(self.limitations)
        return "\n".join(lines)

    def __repr__(self) -> str:
        head = "\n".join(
            f"  {x.processor.label:<48} {x.path:<32} {_pair(x):<40}{' noise' if x.noise else ''}"
            for x in self.rows[:10]
        )
        more = f"\n  ... {len(self.rows) - 10} more rows" if len(self.rows) > 10 else ""
        return f"<DiffResult same={self.same} rows={len(self.rows)}>\n{self.summary()}\n{head}{more}"

    def _repr_html_(self) -> str:
        cells = ("processor", "field", "path", "original", "replay", "kind", "cause", "noise")
        body = []
        for x in self.rows[:50]:
            style = ' style="color:#888"' if x.noise else ""
            values = (
                x.processor.label,
                x.field,
                x.path,
                _short(x.original, x.kind == "added"),
                _short(x.replay, x.kind == "removed"),
                x.kind,
                x.cause,
                x.noise_rule or "",
            )
            body.append(f"<tr{style}>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in values) + "</tr>")
        more = f"<p>{len(self.rows) - 50} more rows: use .to_pandas()</p>" if len(self.rows) > 50 else ""
        return (
            f"<div><pre>{html.escape(self.summary())}</pre>"
            "<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in cells) + "</tr></thead>"
            "<tbody>" + "".join(body) + f"</tbody></table>{more}</div>"
        )

    # -- data

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergence
        return {
            "originalExecutionId": self.original.execution_id,
            "replayExecutionId": self.replay.execution_id,
            "same": self.same,
            "firstDivergence": None
            if first is None
            else {
                "routeId": first.route_id,
                "processorId": first.processor_id,
                "iteration": first.iteration,
                "seqOriginal": first.seq_original,
                "seqReplay": first.seq_replay,
            },
            "counts": dict(Counter(("noise" if x.noise else x.cause) for x in self.rows)),
            "limitations": list(self.limitations),
            "summary": self.summary(),
            "rows": [x.to_dict() for x in self.rows],
        }

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as JSON text (camelCase keys, as on the wire)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, default=str, **kwargs)

    def _columns(self) -> dict[str, list[Any]]:
        cols: dict[str, list[Any]] = {name: [] for name, _ in COLUMNS}
        for x in self.rows:
            p = x.processor
            cols["processor_id"].append(p.processor_id)
            cols["route_id"].append(p.route_id)
            cols["iteration"].append(p.iteration)
            cols["seq_original"].append(p.seq_original)
            cols["seq_replay"].append(p.seq_replay)
            cols["field"].append(x.field)
            cols["path"].append(x.path)
            cols["original"].append(None if x.kind == "added" else _json_text(x.original))
            cols["replay"].append(None if x.kind == "removed" else _json_text(x.replay))
            cols["kind"].append(x.kind)
            cols["noise"].append(x.noise)
            cols["cause"].append(x.cause)
        return cols

    def to_arrow(self) -> Any:
        """One row per difference as a :class:`pyarrow.Table` of :data:`COLUMNS`."""
        return frame(COLUMNS, self._columns(), "arrow")

    def to_pandas(self) -> pd.DataFrame:
        """One row per difference (:data:`COLUMNS`; ``original``/``replay`` are JSON text,
        ``<NA>`` on the side where the thing is absent)."""
        return frame(COLUMNS, self._columns(), "pandas")

    def to_polars(self) -> pl.DataFrame:
        """One row per difference (:data:`COLUMNS`)."""
        return frame(COLUMNS, self._columns(), "polars")

    def __iter__(self) -> Iterator[DiffRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


# The summary's lines, one function each: DiffResult.summary writes them, and report verify
# (moat_nb.evidence._summary_problems) calls the same functions on the evidence's rows, so the
# wording has one source. Each takes what it reads: rows (DiffRow, or rebuilt with
# DiffRow.from_dict) and sides with the Execution attributes named (duck-typed).


def _first_divergence(rows: Sequence[DiffRow]) -> ProcessorRef | None:
    for r in rows:
        if not r.noise and r.cause == "route":
            return r.processor
    return None


def _route_only(rows: Sequence[DiffRow], kind: str) -> tuple[ProcessorRef, ...]:
    return tuple(r.processor for r in rows if r.field == "route" and r.kind == kind)


def summary_head(o: Any, r: Any) -> str:
    """The first line: both sides (``route_id``, ``exchange_id``, and what :func:`_side` reads)."""
    return f"{o.route_id}: original {o.exchange_id} ({_side(o)}) vs replay {r.exchange_id} ({_side(r)})"


def summary_result(o: Any, r: Any, rows: Sequence[DiffRow]) -> str:
    """The ``result:`` line: both statuses, how two failures compare (``error_type``,
    ``error_message``), and where the result differs (its rows at ``(end)``, not noise), or that
    it is the same where both sides have an output (``output_headers`` not None)."""
    result = (
        f"result: {o.status} -> {r.status}"
        if o.status != r.status
        else f"result: {o.status} on both{_same_failure(o, r)}"
    )
    out_diff = [x.path for x in rows if x.processor.processor_id == END and not x.noise]
    if out_diff:
        shown = ", ".join(dict.fromkeys(out_diff[:6]))
        more = f" (+{len(out_diff) - 6})" if len(out_diff) > 6 else ""
        result += f"; the result differs in {shown}{more}"
    elif o.output_headers is not None and r.output_headers is not None:
        result += "; the result is the same"
    return result


def summary_route(rows: Sequence[DiffRow]) -> str | None:
    """The ``route:`` line (processors only one side ran), or None when both ran the same."""
    removed, added = _route_only(rows, "removed"), _route_only(rows, "added")
    route = []
    if removed:
        route.append(f"{len(removed)} processors ran only in the original ({_names(removed)})")
    if added:
        route.append(f"{len(added)} only in the replay ({_names(added)})")
    return "route: " + "; ".join(route) if route else None


def summary_first_divergence(rows: Sequence[DiffRow]) -> str | None:
    """The ``first divergence:`` line, or None when nothing but noise or input differs."""
    first = _first_divergence(rows)
    if first is None:
        return None
    at = [x for x in rows if x.processor == first and not x.noise and x.cause == "route"]
    return f"first divergence: {first.label}: " + "; ".join(_row_text(x) for x in at[:3])


def summary_first_seen(rows: Sequence[DiffRow]) -> list[str]:
    """The ``first seen:`` block: where each differing path first shows before the result."""
    seen: dict[str, DiffRow] = {}
    for x in rows:
        if not x.noise and x.cause == "route" and x.field != "route" and x.processor.processor_id != END:
            seen.setdefault(x.path, x)
    if not seen:
        return []
    lines = ["first seen:"] + [
        f"  {x.path} at {x.processor.label}: {_pair(x)}" for x in list(seen.values())[:8]
    ]
    if len(seen) > 8:
        lines.append(f"  ... {len(seen) - 8} more paths")
    return lines


def summary_limitations(limitations: Sequence[str]) -> list[str]:
    """The ``could not compare:`` lines, one per limitation."""
    return [f"could not compare: {text}" for text in limitations]


def _side(e: Execution) -> str:
    parts = [
        p
        for p in (e.route_version, e.environment, e.capture_mode if e.capture_mode == "ROUTE" else None)
        if p
    ]
    return ", ".join(parts) or e.status


def _same_failure(o: Execution, r: Execution) -> str:
    """Whether two failed executions failed the same way, in words: "FAILED on both" alone left a
    support engineer reproducing a failure to look for error rows to learn whether the replay
    raised the same exception (feature-request.md: reproduce a failure, then show the fix)."""
    if o.status != "FAILED" or not (o.error_type or r.error_type):
        return ""
    if (o.error_type, o.error_message) == (r.error_type, r.error_message):
        return f", with the same error: {o.error_type}: {_short(o.error_message or '', False, 80)}"
    if o.error_type == r.error_type:
        return f", with the same exception ({o.error_type}) and another message"
    return f", with another error: {o.error_type or '(none)'} -> {r.error_type or '(none)'}"


def summary_count(
    differences: int,
    by_cause: Mapping[str, int],
    processors: int,
    noise: int,
    capture_mode: str | None,
    processors_recorded: bool,
    *,
    plural_always: bool = False,
) -> str:
    """The summary's count line for ``differences`` (> 0) rows that are not noise, at
    ``processors`` processors of the original, captured with ``capture_mode``. The compliance
    report's verification makes it again from the evidence's rows (moat_nb.evidence), as the
    other ``summary_*`` lines. ``plural_always``: the wording written before the count took the
    singular ("1 differences ... at 1 processors"), which a report made then still says."""

    def n(count: int, word: str) -> str:
        return f"{count} {word}" + ("" if count == 1 and not plural_always else "s")

    return (
        f"{n(differences, 'difference')} ({by_cause.get('route', 0)} from the route, "
        f"{by_cause.get('input', 0)} carried from the start payload)"
        f"{_where(capture_mode, processors_recorded, n(processors, 'processor'))}; {noise} noise"
    )


def _where(capture_mode: str | None, processors_recorded: bool, processors: str) -> str:
    """Where the summary's count line says the differences are (``processors``: "N processors").
    A ``ROUTE``-captured original (DESIGN.md section 3) carries payloads only at the route's
    entry and exit: "at 0 processors" read as "no processor differs" where no processor's
    payload had been compared (and, with no processor records, no processor at all)."""
    if capture_mode != "ROUTE":
        return f" at {processors}"
    if not processors_recorded:
        return (
            " at the route's input and output: the original was captured at ROUTE level with no"
            " processors recorded, so only the route's input and output compare"
        )
    if processors.startswith("0 "):
        return (
            " at the route's input and output: the original was captured at ROUTE level, so payloads"
            " compare only there (no processor differs in status, error or route taken)"
        )
    return (
        f" at {processors} (status, error or route taken) and the route's input and output:"
        " the original was captured at ROUTE level, so payloads compare only there"
    )


def _names(refs: Sequence[ProcessorRef]) -> str:
    names = list(dict.fromkeys(r.processor_id + (f"[{r.iteration}]" if r.iteration else "") for r in refs))
    return ", ".join(names[:5]) + (f", +{len(names) - 5}" if len(names) > 5 else "")


def _short(value: Any, absent: bool, limit: int = 60) -> str:
    if absent:
        return "(absent)"
    text = value if isinstance(value, str) else _json_text(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pair(x: DiffRow) -> str:
    return f"{_short(x.original, x.kind == 'added', 30)} -> {_short(x.replay, x.kind == 'removed', 30)}"


def _row_text(x: DiffRow) -> str:
    if x.field == "route":
        return "ran only in the original" if x.kind == "removed" else "ran only in the replay"
    return f"{x.path} {_pair(x)}"


# --------------------------------------------------------------------------- calibration


def noise_rules_from(first: Execution, second: Execution) -> list[NoiseRule]:
    """Rules for what differs between two runs of the same unmodified exchange: every non-noise
    difference of ``diff(first, second)`` becomes a rule for its path. A path to a single value
    inside JSON, a header or a property holds at every processor (a timestamp a step sets flows
    on through the steps after it). Everything else is tied to the processor where it showed,
    ``(start)`` and ``(end)`` included: text-line, whole-body, status, error and route
    differences (a line number or a message means nothing elsewhere), and a whole object or
    list that changed (``body:$`` of a map keyed by a per-run id): a rule covers every path
    under its own, so unscoped it would hide every difference under that path at every
    processor."""
    seen: dict[tuple[str, str | None], set[str]] = {}
    reason = f"calibration: differs between two unmodified runs ({first.exchange_id}, {second.exchange_id})"
    for x in diff(first, second):
        if x.noise:
            continue
        scoped = (
            x.field in ("status", "error", "route")
            or x.path == "body"
            or x.path.startswith("body:line")
            or isinstance(x.original, dict | list)
            or isinstance(x.replay, dict | list)
        )
        processor = escape_glob(f"{x.processor.route_id}/{x.processor.processor_id}") if scoped else None
        seen.setdefault((x.path, processor), set()).add(x.kind)
    # A value seen to change is noise where it changes again, not where it is there on one side
    # only: the error:message a per-run reference made noisy would otherwise hide, as noise,
    # the message going away in a replay that fixed the failure. A thing seen to come and go
    # between two runs is noise whatever its difference.
    return [
        NoiseRule(
            path=escape_glob(path),
            processor=processor,
            reason=reason,
            kinds=None if kinds & {"added", "removed"} else ("changed", "type_changed"),
        )
        for (path, processor), kinds in seen.items()
    ]


class _Run(Protocol):
    def wait(self) -> Execution: ...


class _Replayer(Protocol):
    def replay(self, source: Any, *, reason: str, **kwargs: Any) -> _Run: ...


class _AsyncReplayer(Protocol):
    async def replay(self, source: Any, *, reason: str, **kwargs: Any) -> Any: ...


def _sync_run(started: Any) -> _Run:
    """What ``platform.replay`` returned, when it is a run to wait for. An AsyncPlatform's
    replay is a coroutine: calibrate_noise(AsyncPlatform) failed with "'coroutine' object has
    no attribute 'wait'" (and left a never-awaited warning); say what to call instead."""
    # A coroutine, not any awaitable: a ReplayRun is awaitable too (``await run`` in async
    # code) and is exactly what a Platform gives.
    if inspect.iscoroutine(started):
        started.close()  # never awaited: nothing was requested, and no warning is left behind
        raise ValidationError(
            "calibrate_noise() takes a Platform; with an AsyncPlatform its replays are coroutines",
            code="BAD_PLATFORM",
            hint="in async code: rules = await moat_nb.acalibrate_noise(platform, source)",
        )
    return started


def calibrate_noise(
    platform: _Replayer,
    source: Any,
    *,
    reason: str = "noise calibration: replay the unmodified exchange twice",
    **replay_options: Any,
) -> list[NoiseRule]:
    """Replay ``source`` twice without modification and return the rules for what differed
    between the two runs (:func:`noise_rules_from`): the timestamps and random ids the route makes
    itself. Pass them to :func:`diff` as ``ignore=``. ``replay_options`` go to
    ``platform.replay`` (e.g. ``target_environment``). Runs two real replays: both are audited.
    With an :class:`~moat_nb.client.AsyncPlatform`, ``await`` :func:`acalibrate_noise`."""
    first = _sync_run(platform.replay(source, reason=reason, **replay_options)).wait()
    second = _sync_run(platform.replay(source, reason=reason, **replay_options)).wait()
    return noise_rules_from(first, second)


async def acalibrate_noise(
    platform: _AsyncReplayer,
    source: Any,
    *,
    reason: str = "noise calibration: replay the unmodified exchange twice",
    **replay_options: Any,
) -> list[NoiseRule]:
    """:func:`calibrate_noise` for an :class:`~moat_nb.client.AsyncPlatform` (``AsyncPlatform``
    mirrors ``Platform`` with ``await``): ``rules = await acalibrate_noise(platform, source)``.
    The two replays run one after the other, as in :func:`calibrate_noise`."""
    runs = []
    for _ in range(2):
        run = await platform.replay(source, reason=reason, **replay_options)
        runs.append(await run)  # ReplayRun: ``await run`` is its wait()
    return noise_rules_from(runs[0], runs[1])
