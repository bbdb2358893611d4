"""Expectations: claims about a replay's result, checked (DESIGN.md section 9, issue 8). Pure.

The compliance proof (:mod:`moat_nb.report`) states what a replay must produce as a list of
expectations; :func:`evaluate` checks them against the replay's
:class:`~moat_nb.model.Execution`, :func:`evaluate_one` against any :class:`Subject` (the
``output`` an evidence file records, when a report is re-checked offline).

The language
    A JSON array of objects, each with a ``path`` and exactly one operator::

        [{"path": "status", "equals": "COMPLETED"},
         {"path": "body:$.total", "equals": 59.97},
         {"path": "body:$.lines[0].lineTotal", "approx": 59.97, "tolerance": 0.005},
         {"path": "headers:orderStatus", "in": ["ACCEPTED", "PARTIAL"]},
         {"path": "body:$.trackingId", "matches": "TRK-[0-9]{6}"},
         {"path": "error:type", "exists": false},
         {"path": "properties:tierDiscountPct", "equals": "10", "processor": "pricing-rules"}]

    ``path`` is a diff path (:mod:`moat_nb.noise`): ``status``, ``error:type``,
    ``error:message``, ``body`` (the whole body; compared as JSON when the expected value is not
    a string), ``body:$...`` (inside a JSON body), ``body:line N``, ``headers:Name...`` (case
    insensitive, as Camel's), ``properties:name...``. It is read from the replay's result (the
    execution's exit), or from one processor's output with ``"processor": "<processorId>"``
    (and ``"iteration": n`` inside a split or loop). Operators: ``equals`` / ``not_equals``
    (JSON equality: numbers by value, ``1`` is not ``true``, ``"1"`` is not ``1``), ``approx``
    (numbers, ``tolerance`` absolute, default 1e-9), ``lt`` ``le`` ``gt`` ``ge`` (numbers),
    ``matches`` (a regular expression the whole text must match), ``contains`` (substring, list
    member or object key), ``in`` (one of a list), ``exists`` (``true``/``false``). Every
    operator but ``exists`` fails on an absent value. ``name`` labels an expectation in the
    report. Expectations on ``status``, ``error:*`` and ``body*`` of the result are re-checked by
    :func:`moat_nb.report.verify_report` from the evidence, whose output body the audit chain vouches for
    (its SHA-256 is in the signed ``REPLAY_COMPLETED`` event).

JSON text is read strictly (:func:`strict_json`), with the server's input rules (section 4).
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .audit import _finite_float
from .errors import ValidationError
from .model import Execution, ProcessorRecord
from .noise import ParsedPath, parse_path

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "OPERATORS",
    "Expectation",
    "ExpectationResult",
    "Outcomes",
    "Subject",
    "evaluate",
    "evaluate_one",
    "json_equal",
    "parse_expectations",
    "strict_json",
]

OPERATORS = ("equals", "not_equals", "approx", "lt", "le", "gt", "ge", "matches", "contains", "in", "exists")

#: Ids on the wire (DESIGN.md section 3); a processor id in an expectation is one.
ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
_MAX_TEXT = 1 << 20  # the server's request limit (section 4): a payload above it could not run
_MAX_DEPTH = 64
_MAX_EXPECTATIONS = 200


# =========================================================================== strict JSON (pure)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any, level: int = 1) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def strict_json(text: Any, name: str) -> Any:
    """``text`` parsed as JSON with the server's input rules (section 4): no duplicate keys, no
    NaN/Infinity and no number beyond the doubles (``1e999``), depth at most 64, at most 1 MiB.
    Raises ValidationError naming ``name``."""
    if not isinstance(text, str):
        raise ValidationError(
            f"{name} must be JSON text (a string), not {type(text).__name__}",
            code="BAD_PARAMETER",
            hint=f"pass {name} as one JSON string",
            details={"parameter": name},
        )
    if len(text.encode("utf-8", "surrogatepass")) > _MAX_TEXT:
        raise ValidationError(
            f"{name} is larger than 1 MiB", code="BAD_PARAMETER", details={"parameter": name}
        )
    try:
        # parse_float: json.loads reads 1e999 as infinity, which would pass here and be written
        # into the notebook's parameters (and the evidence) as the bare token Infinity.
        value = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite_float
        )
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise ValidationError(
            f"{name} is not valid JSON: {exc}",
            code="BAD_JSON",
            hint=f"check {name} with a JSON linter (python -m json.tool FILE)",
            details={"parameter": name},
        ) from None
    if _depth(value) > _MAX_DEPTH:
        raise ValidationError(
            f"{name} is nested deeper than {_MAX_DEPTH}",
            code="BAD_JSON",
            hint=f"the platform reads JSON nested at most {_MAX_DEPTH} levels deep",
            details={"parameter": name},
        )
    return value


def _not_json(value: Any, depth: int = 1) -> str | None:
    """What in ``value`` is not a JSON value (a datetime, a set, NaN, a non-string key, nesting
    past the limit), in words; None when all of it is. ``json.dumps`` cannot write the rest, so
    an expectation holding it passed parse_expectations and crashed evaluate (its label)."""
    if depth > _MAX_DEPTH:
        return f"nesting deeper than {_MAX_DEPTH}"
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} (not a JSON number)"
    if isinstance(value, list | tuple):
        return next((why for v in value if (why := _not_json(v, depth + 1)) is not None), None)
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"the key {k!r} (a {type(k).__name__}; JSON keys are strings)"
            why = _not_json(v, depth + 1)
            if why is not None:
                return why
        return None
    return f"a {type(value).__name__}"


def _as_json(value: Any) -> Any:
    """``value`` with numpy scalars as Python values and tuples as lists, at any depth (what
    JSON would read back); anything else as it is, for the checks to judge."""
    if isinstance(value, tuple | list):
        return [_as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        try:
            return item()
        except (TypeError, ValueError):
            return value
    return value


# =========================================================================== expectations (pure)


@dataclass(frozen=True)
class Expectation:
    """One claim about the replay's result (module docstring: the expectation language)."""

    path: str
    operator: str
    expected: Any
    tolerance: float | None = None
    processor: str | None = None
    iteration: int = 0
    name: str | None = None

    @property
    def parsed(self) -> ParsedPath:
        return parse_path(self.path)

    @property
    def label(self) -> str:
        """``body:$.total equals 59.97`` (plus where, and the name when there is one)."""
        expected = json.dumps(self.expected, ensure_ascii=False)
        text = f"{self.path} {self.operator.replace('_', ' ')} {expected}"
        if self.tolerance is not None:
            text += f" ± {self.tolerance:g}"
        if self.processor is not None:
            it = f"[{self.iteration}]" if self.iteration else ""
            text += f" at {self.processor}{it}"
        return f"{self.name}: {text}" if self.name else text

    def __post_init__(self) -> None:
        """One built directly gets the checks :meth:`from_wire` makes: an unknown operator
        raised an AssertionError in evaluate, a datetime a TypeError (fuzzing finding 15)."""
        if self.operator not in OPERATORS:
            raise ValidationError(
                f"expectation: operator {self.operator!r} is not one of {', '.join(OPERATORS)}",
                code="BAD_EXPECTATION",
                hint='e.g. Expectation("status", "equals", "COMPLETED")',
            )
        # Values from code as their JSON reading: a numpy scalar its Python value, a tuple a
        # list (``in`` took one before these checks; found by review). Frozen: set directly.
        object.__setattr__(self, "expected", _as_json(self.expected))
        _check_fields(self.to_wire(), "expectation", None)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, self.operator: self.expected}
        if self.tolerance is not None:
            out["tolerance"] = self.tolerance
        if self.processor is not None:
            out["processor"] = self.processor
            if self.iteration:
                out["iteration"] = self.iteration
        if self.name is not None:
            out["name"] = self.name
        return out

    @classmethod
    def from_wire(cls, data: Any, index: int = 0) -> Expectation:
        """One expectation object; ValidationError says which one and why: its message counts from
        1, as a reader counts the entries of the file ("expectation 1" was the second, compliance
        walk); ``details["index"]`` stays 0-based, for programs."""
        return cls(*_check_fields(data, f"expectation {index + 1}", index))


def _check_fields(data: Any, where: str, index: int | None) -> tuple[Any, ...]:
    """The fields of the expectation object ``data`` (Expectation's, in order), checked; a
    ValidationError starting with ``where`` says why not."""

    def bad(why: str, hint: str | None = None) -> ValidationError:
        return ValidationError(
            f"{where}: {why}",
            code="BAD_EXPECTATION",
            hint=hint
            or 'write e.g. {"path": "body:$.total", "equals": 39.46}; operators: ' + ", ".join(OPERATORS),
            details={} if index is None else {"index": index},
        )

    if not isinstance(data, dict):
        raise bad(f"must be an object, not {type(data).__name__}")
    extra = set(data) - {"path", "name", "processor", "iteration", "tolerance", *OPERATORS}
    if extra:
        raise bad(f"unknown key(s) {', '.join(sorted(map(repr, extra)))}")
    path = data.get("path")
    if not isinstance(path, str):
        raise bad("needs a path (a string such as 'status' or 'body:$.total')")
    try:
        parsed = parse_path(path)
    except ValidationError as exc:
        raise bad(exc.message, exc.hint) from None
    if parsed.field == "route":
        raise bad("'route' is a diff path, not a value: check a processor's status instead")
    ops = [k for k in OPERATORS if k in data]
    if len(ops) != 1:
        raise bad(f"needs exactly one operator, found {len(ops)} ({', '.join(ops) or 'none'})")
    op = ops[0]
    expected = data[op]
    not_json = _not_json(expected)
    if not_json is not None:
        raise bad(
            f"{op}: the expected value holds {not_json}, which is not JSON",
            "expected values are JSON: text, numbers, true/false, null, lists and objects with "
            "text keys (a time as its ISO text, e.g. dt.isoformat(); a set as a list)",
        )
    number = isinstance(expected, int | float) and not isinstance(expected, bool)
    if op in ("approx", "lt", "le", "gt", "ge") and not number:
        raise bad(f"{op} compares numbers: give a number, not {json.dumps(expected)}")
    if op == "matches":
        if not isinstance(expected, str) or len(expected) > 1000:
            raise bad("matches takes a regular expression (a string of at most 1000 characters)")
        try:
            re.compile(expected)
        except re.error as exc:
            raise bad(f"matches: {expected!r} is not a regular expression: {exc}") from None
    if op == "in" and not isinstance(expected, list):
        raise bad("in takes a list of allowed values")
    if op == "exists" and not isinstance(expected, bool):
        raise bad("exists takes true or false")
    tolerance = data.get("tolerance")
    if tolerance is not None:
        if op != "approx":
            raise bad("tolerance goes with approx only")
        if (
            not isinstance(tolerance, int | float)
            or isinstance(tolerance, bool)
            or not math.isfinite(tolerance)
            or tolerance < 0
        ):
            # NaN passed the ">= 0" test (every comparison with NaN is false) and made every
            # approx fail with "tolerance nan"; infinity made every one pass.
            raise bad("tolerance must be a finite number >= 0")
        tolerance = float(tolerance)
    processor = data.get("processor")
    if processor is not None and (not isinstance(processor, str) or not ID.match(processor)):
        raise bad("processor must be a processor id such as 'compute-totals'")
    iteration = data.get("iteration", 0)
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        raise bad("iteration must be an integer >= 0")
    if iteration and processor is None:
        raise bad("iteration needs a processor")
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 200):
        raise bad("name must be a string of 1 to 200 characters")
    return (path, op, expected, tolerance, processor, iteration, name)


def parse_expectations(value: Any) -> tuple[Expectation, ...]:
    """The expectations of a JSON text (or an already parsed list); at least one: a proof that
    claims nothing proves nothing."""
    data = strict_json(value, "expectations") if isinstance(value, str) else value
    if not isinstance(data, list):
        raise ValidationError(
            "expectations must be a JSON array of objects",
            code="BAD_EXPECTATION",
            hint='e.g. [{"path": "status", "equals": "COMPLETED"}]',
        )
    if not data:
        raise ValidationError(
            "expectations is empty: a proof needs at least one claim about the output",
            code="BAD_EXPECTATION",
            hint='e.g. [{"path": "status", "equals": "COMPLETED"}]',
        )
    if len(data) > _MAX_EXPECTATIONS:
        raise ValidationError(
            f"more than {_MAX_EXPECTATIONS} expectations ({len(data)})",
            code="BAD_EXPECTATION",
            hint=f"a proof states at most {_MAX_EXPECTATIONS} claims: keep the ones that matter, "
            "or check a whole object at once (body:$.lines equals [...])",
        )
    return tuple(Expectation.from_wire(item, i) for i, item in enumerate(data))


@dataclass(frozen=True)
class Subject:
    """What expectations read: a status, an error, a body, headers and properties (the result of
    an execution, one processor's output, or the ``output`` of an evidence file)."""

    status: str | None
    error_type: str | None
    error_message: str | None
    body: str | None
    headers: Mapping[str, Any] | None
    properties: Mapping[str, Any] | None

    @classmethod
    def of_execution(cls, e: Execution) -> Subject:
        return cls(
            e.status, e.error_type, e.error_message, e.output_body, e.output_headers, e.output_properties
        )

    @classmethod
    def of_processor(cls, p: ProcessorRecord) -> Subject:
        return cls(p.status, p.error_type, p.error_message, p.output_body, p.output_headers, p.properties)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Subject:
        return cls(
            data.get("status"),
            data.get("errorType"),
            data.get("errorMessage"),
            data.get("body"),
            data.get("headers"),
            data.get("properties"),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "errorType": self.error_type,
            "errorMessage": self.error_message,
            "body": self.body,
            "headers": None if self.headers is None else dict(self.headers),
            "properties": None if self.properties is None else dict(self.properties),
        }


_ABSENT = object()


def _json_text(text: Any) -> Any:
    if not isinstance(text, str):
        return _ABSENT
    try:
        return json.loads(text)
    except ValueError:
        return _ABSENT


def _navigate(value: Any, segments: Sequence[str | int]) -> Any:
    for seg in segments:
        if isinstance(seg, int) and isinstance(value, list) and -len(value) <= seg < len(value):
            value = value[seg]
        elif isinstance(seg, str) and isinstance(value, dict) and seg in value:
            value = value[seg]
        else:
            return _ABSENT
    return value


def _lookup(subject: Subject, path: ParsedPath, expected: Any) -> Any:
    """The value at ``path`` in ``subject``, or ``_ABSENT``."""
    if path.field == "status":
        return _ABSENT if subject.status is None else subject.status
    if path.field == "error":
        value = subject.error_type if path.name == "type" else subject.error_message
        return _ABSENT if value is None else value
    if path.field == "body":
        body = subject.body
        if body is None:
            return _ABSENT
        if path.line is not None:
            lines = body.splitlines()
            return lines[path.line - 1] if path.line <= len(lines) else _ABSENT
        if path.json:
            return _navigate(_json_text(body), path.segments)
        if not isinstance(expected, str):  # ``body`` against a JSON value: compare as JSON
            parsed = _json_text(body)
            return body if parsed is _ABSENT else parsed
        return body
    mapping = subject.headers if path.field == "headers" else subject.properties
    if mapping is None:
        return _ABSENT
    if path.field == "headers":  # Camel's headers are a case-insensitive map (DefaultMessage)
        found = next((v for k, v in mapping.items() if k.lower() == (path.name or "").lower()), _ABSENT)
    else:
        found = mapping.get(path.name, _ABSENT) if path.name is not None else _ABSENT
    if found is _ABSENT or not path.segments:
        return found
    if isinstance(found, str):
        found = _json_text(found)
    return _navigate(found, path.segments)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_equal(a: Any, b: Any) -> bool:
    """Equal as JSON values: numbers by value (``1 == 1.0``, exactly, also beyond 2**53: a
    Java long id), but ``1`` is not ``true`` and ``"1"`` is not ``1`` (which Python's ``==``
    would blur); objects whatever their key order. NaN equals nothing. (Compared structurally:
    the canonical JSON used before refused integers beyond 2**53, and so called a genuine
    long id unequal to itself; review finding.)"""
    try:
        return _json_same(a, b)
    except RecursionError:  # nested past the interpreter's limit: not shown equal
        return False


def _json_same(a: Any, b: Any) -> bool:
    if _number(a) and _number(b):
        return bool(a == b)
    if isinstance(a, str) and isinstance(b, str):  # a StrEnum member or numpy.str_ is its text
        return str.__eq__(a, b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(map(_json_same, a, b))
    return type(a) is type(b) and isinstance(a, str | bool | type(None)) and a == b


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _check(exp: Expectation, actual: Any) -> tuple[bool, str]:
    op, want = exp.operator, exp.expected
    if op == "exists":
        present = actual is not _ABSENT
        if present == want:
            return True, "present" if present else "absent, as expected"
        return False, f"{'present' if present else 'absent'}, expected it {'present' if want else 'absent'}"
    if actual is _ABSENT:
        return False, f"{exp.path} is absent"
    got = _shown(actual)
    if op == "equals":
        ok = json_equal(actual, want)
        if ok:
            return True, f"= {got}"
        kind = ""
        if type(actual) is not type(want) and not (_number(actual) and _number(want)):
            kind = f" (a {type(actual).__name__}, expected a {type(want).__name__})"
        return False, f"found {got}{kind}, expected {_shown(want)}"
    if op == "not_equals":
        return (not json_equal(actual, want)), f"found {got}"
    if op in ("approx", "lt", "le", "gt", "ge"):
        if not _number(actual):
            return False, f"found {got}, not a number"
        if op == "approx":
            tol = 1e-9 if exp.tolerance is None else exp.tolerance
            ok = math.isclose(actual, want, rel_tol=0.0, abs_tol=tol)
            return ok, f"found {got} (difference {abs(actual - want):.6g}, tolerance {tol:g})"
        ok = {"lt": actual < want, "le": actual <= want, "gt": actual > want, "ge": actual >= want}[op]
        return ok, f"found {got}"
    if op == "matches":
        if not isinstance(actual, str):
            return False, f"found {got}, not a text"
        return re.fullmatch(want, actual) is not None, f"found {got}"
    if op == "contains":
        if isinstance(actual, str):
            return isinstance(want, str) and want in actual, f"found {got}"
        if isinstance(actual, list):
            return any(json_equal(x, want) for x in actual), f"found {got}"
        if isinstance(actual, dict):
            return isinstance(want, str) and want in actual, f"found keys {_shown(sorted(actual))}"
        return False, f"found {got}, which contains nothing"
    if op == "in":
        return any(json_equal(actual, x) for x in want), f"found {got}"
    raise AssertionError(op)  # Expectation.__post_init__ admits only OPERATORS


@dataclass(frozen=True)
class ExpectationResult:
    """An expectation checked: the value found (``None`` when ``present`` is false), pass/fail
    and a message in words."""

    expectation: Expectation
    passed: bool
    present: bool
    actual: Any
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "expectation": self.expectation.to_wire(),
            "label": self.expectation.label,
            "passed": self.passed,
            "present": self.present,
            "actual": self.actual,
            "message": self.message,
        }


def _subject_at(execution: Execution, exp: Expectation) -> Subject | str:
    if exp.processor is None:
        return Subject.of_execution(execution)
    for p in execution.processors or ():
        if p.processor_id == exp.processor and p.iteration == exp.iteration:
            return Subject.of_processor(p)
    it = f" iteration {exp.iteration}" if exp.iteration else ""
    return f"processor {exp.processor}{it} did not run in the replay"


def evaluate_one(exp: Expectation, subject: Subject | str) -> ExpectationResult:
    """Check one expectation against a subject (or the reason there is none)."""
    if isinstance(subject, str):
        return ExpectationResult(
            exp, exp.operator == "exists" and exp.expected is False, False, None, subject
        )
    actual = _lookup(subject, exp.parsed, exp.expected)
    passed, message = _check(exp, actual)
    present = actual is not _ABSENT
    return ExpectationResult(exp, passed, present, actual if present else None, message)


@dataclass(frozen=True)
class Outcomes:
    """The results of a list of expectations, in order; shows as a table in a notebook."""

    results: tuple[ExpectationResult, ...]

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def failed(self) -> tuple[ExpectationResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    def __iter__(self) -> Any:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def to_wire(self) -> list[dict[str, Any]]:
        return [r.to_wire() for r in self.results]

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "expectation": r.expectation.label,
                    "result": "PASS" if r.passed else "FAIL",
                    "found": r.message,
                }
                for r in self.results
            ]
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{i + 1}</td><td><code>{html.escape(r.expectation.label)}</code></td>"
            f"<td style='font-weight:bold;color:{'#0072B2' if r.passed else '#D62728'}'>"
            f"{'PASS' if r.passed else 'FAIL'}</td><td>{html.escape(r.message)}</td></tr>"
            for i, r in enumerate(self.results)
        )
        head = f"{sum(r.passed for r in self.results)} of {len(self.results)} expectations hold"
        return (
            f"<p><b>{html.escape(head)}</b></p><table><thead><tr><th>#</th><th>expectation</th>"
            f"<th>result</th><th>found</th></tr></thead><tbody>{rows}</tbody></table>"
        )

    def __repr__(self) -> str:
        return "\n".join(
            f"{'PASS' if r.passed else 'FAIL'}  {r.expectation.label}: {r.message}" for r in self.results
        )


def _evaluate_at(execution: Execution, exp: Expectation) -> ExpectationResult:
    if exp.processor is not None and execution.processors is None:
        # A search hit (or a summary) has no processor records: whether the processor ran is
        # unknown, so no expectation at one holds, not even exists: false ("did not run" made
        # it pass; fuzzing finding 15). A result, not an error: the others are still checked.
        return ExpectationResult(
            exp,
            False,
            False,
            None,
            f"execution {execution.execution_id} has no processor records (a search hit): "
            "fetch it with p.execution(id) to check an expectation at a processor",
        )
    return evaluate_one(exp, _subject_at(execution, exp))


def evaluate(expectations: Iterable[Expectation], execution: Execution) -> Outcomes:
    """Check each expectation against the replay's execution (its result, or a processor).

    An expectation at a processor of an execution without processor records (a search hit,
    ``processors is None``) fails, saying so: it cannot be told whether the processor ran."""
    if not isinstance(execution, Execution):
        # None or a wire dict raised AttributeError deep inside.
        raise ValidationError(
            f"expectations are checked against an Execution, not {type(execution).__name__}",
            code="BAD_SOURCE",
            hint="pass p.execution(id) (or run.wait() of a replay); a wire dict: Execution.from_wire(d)",
        )
    return Outcomes(tuple(_evaluate_at(execution, e) for e in expectations))
