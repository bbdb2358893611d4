"""The body of a message, edited in a notebook: :class:`BodyEditor` and its pure checks.

:class:`BodyEditor` is an anywidget whose browser side is ``widgets/body_editor.js``: a text
editor that checks JSON as you type (:func:`check_json`, with the server's strictness: no
duplicate keys, no NaN) and marks the lines that differ from the original
(:func:`changed_lines`, the same longest-common-subsequence walk as the browser's, so both mark
the same lines). :func:`editable_body` turns a recorded body into text a person can edit line
by line. :class:`~moat_nb.editor.PayloadEditor` uses it for the body of a start payload.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import anywidget
import traitlets

from .assets import asset
from .audit import NonFiniteNumber, _finite_float

__all__ = ["MAX_DIFF_CELLS", "BodyEditor", "BodyError", "changed_lines", "check_json", "editable_body"]

# --------------------------------------------------------------------------- pure checks


@dataclass(frozen=True)
class BodyError:
    """Why a body is not valid JSON: ``message`` and where (1-based ``line`` and ``column``)."""

    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line is not None else ""
        return f"{where}{self.message}"


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise ValueError(name)


class _Overflow(ValueError):
    pass


def _finite(text: str) -> float:
    # json.loads reads 1e999 as infinity: the platform refuses it (loads_strict), and a body
    # sent with it would be written back as Infinity, which is not JSON.
    try:
        return _finite_float(text)
    except NonFiniteNumber:
        raise _Overflow(text) from None


def check_json(text: str) -> BodyError | None:
    """None when ``text`` is one JSON document the platform accepts, else where it is not.

    Stricter than :func:`json.loads`, as the server is (section 4 input rules): a duplicate key,
    ``NaN``/``Infinity`` and a number beyond the doubles (``1e999``) are errors. The position of
    a duplicate is the key's first repeat.
    """
    if not text.strip():
        return BodyError("the body is empty", 1, 1)
    try:
        json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        return BodyError(exc.msg, exc.lineno, exc.colno)
    except _Overflow as exc:
        at = text.find(str(exc))
        line, column = _line_column(text, at) if at >= 0 else (None, None)
        return BodyError(
            f"{str(exc)[:40]} is beyond the largest number JSON carries (the platform refuses it, as it "
            "refuses NaN and Infinity)",
            line,
            column,
        )
    except _Duplicate as exc:
        key = str(exc)
        token = json.dumps(key, ensure_ascii=False)
        first = text.find(token)
        again = text.find(token, first + 1) if first >= 0 else -1
        line, column = _line_column(text, again) if again >= 0 else (None, None)
        return BodyError(f"the key {token} appears twice in one object", line, column)
    except ValueError as exc:
        at = text.find(str(exc))
        line, column = _line_column(text, at) if at >= 0 else (None, None)
        return BodyError(f"{exc} is not JSON (the platform refuses NaN and Infinity)", line, column)
    return None


def _line_column(text: str, index: int) -> tuple[int, int]:
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


#: Beyond this many cells of the longest-common-subsequence table (the differing middle of both
#: texts, lines x lines), the whole middle is marked changed: the same bound as the browser's.
MAX_DIFF_CELLS = 250_000


def changed_lines(original: str, text: str) -> tuple[list[int], list[int]]:
    """(lines of ``text`` that differ from ``original``, lines of ``text`` after which original
    lines were removed), 1-based (0 in the second list: removed before the first line).

    A longest common subsequence of lines (dynamic programming over what is left once the common
    head and tail are cut), walked as ``widgets/body_editor.js`` walks it: the kernel and the
    browser must mark the same lines, and :mod:`difflib`'s matcher, which is not a minimal diff,
    would sometimes mark others. Between two kept lines, the new lines are "changed", and lines
    were "removed" after the last new one when more went than came.
    """
    a, b = original.split("\n"), text.split("\n")
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a, end_b = end_a - 1, end_b - 1
    n, m = end_a - start, end_b - start
    changed: list[int] = []
    removed: set[int] = set()
    if n == 0 and m == 0:
        return [], []
    if n * m > MAX_DIFF_CELLS or n == 0 or m == 0:
        if m == 0:
            removed.add(start - 1)
        return [j + 1 for j in range(start, end_b)], sorted(r + 1 for r in removed)
    w = m + 1
    table = [0] * ((n + 1) * w)
    for i in range(n - 1, -1, -1):
        line, row, below = a[start + i], i * w, (i + 1) * w
        for j in range(m - 1, -1, -1):
            if line == b[start + j]:
                table[row + j] = table[below + j + 1] + 1
            else:
                table[row + j] = max(table[below + j], table[row + j + 1])
    i = j = gone = 0
    run_start = start
    while i < n and j < m:
        if a[start + i] == b[start + j]:
            came = start + j - run_start
            if gone > came:
                removed.add(run_start + came - 1)
            gone = 0
            i, j = i + 1, j + 1
            run_start = start + j
        elif table[(i + 1) * w + j] >= table[i * w + j + 1]:
            gone, i = gone + 1, i + 1
        else:
            changed.append(start + j)
            j += 1
    changed.extend(range(start + j, start + m))
    gone += n - i
    came = start + m - run_start
    if gone > came:
        removed.add(run_start + came - 1)
    return [c + 1 for c in changed], sorted(r + 1 for r in removed)


def editable_body(body: str | None) -> tuple[str, str]:
    """(text to edit, mode): a JSON object or array indented by two spaces in ``"json"`` mode
    (lines a person can change one at a time), anything else as it is in ``"text"`` mode."""
    if body is None:
        return "", "text"
    stripped = body.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            parsed = json.loads(body)
        except ValueError:
            return body, "text"
        return json.dumps(parsed, indent=2, ensure_ascii=False), "json"
    return body, "text"


# --------------------------------------------------------------------------- the body editor


class BodyEditor(anywidget.AnyWidget):
    """A text editor for a message body that checks JSON as you type and marks changed lines.

    ``value`` is the text (synced both ways), ``original`` what it is compared with, ``mode``
    ``"json"`` or ``"text"``. On the kernel side ``error`` (:class:`BodyError` or None) and
    ``changed`` (1-based line numbers) follow ``value``, computed as the browser does.

    The editor is where an invalid body is said, in full: the browser shows ``problem`` (the
    kernel's error) when its own ``JSON.parse`` accepts what the kernel refuses (a duplicate
    key, ``1e999``), and ``todo`` after the error, which the owner sets to what will happen
    (``as_typed``: the body is sent as typed all the same, shown as a warning).
    """

    #: What the editor says to do about an invalid body, by default.
    FIX = "Fix it before replaying (the route parses the body as JSON)."

    _esm = asset("body_editor.js")
    _css = asset("moat.css") + asset("body_editor.css")

    value = traitlets.Unicode("").tag(sync=True)
    original = traitlets.Unicode("").tag(sync=True)
    mode = traitlets.Unicode("json").tag(sync=True)
    label = traitlets.Unicode("Body").tag(sync=True)
    read_only = traitlets.Bool(False).tag(sync=True)
    min_lines = traitlets.Int(6).tag(sync=True)
    max_lines = traitlets.Int(24).tag(sync=True)

    #: The kernel's verdict, for the browser: {message, line, column, text} or None (section
    #: 4's strictness, which JSON.parse lacks: it takes duplicate keys and reads 1e999 as
    #: Infinity). ``text`` is the text judged: the browser shows the verdict only on that text,
    #: not on one typed since, which the kernel has not judged yet.
    problem = traitlets.Any(None, allow_none=True).tag(sync=True)
    todo = traitlets.Unicode(FIX).tag(sync=True)
    as_typed = traitlets.Bool(False).tag(sync=True)

    error = traitlets.Any(None)
    changed = traitlets.List(traitlets.Int())
    removed = traitlets.List(traitlets.Int())

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._check()

    @traitlets.observe("value", "original", "mode")
    def _check(self, change: Any = None) -> None:
        self.error = error = check_json(self.value) if self.mode == "json" else None
        self.problem = (
            None
            if error is None
            else {"message": error.message, "line": error.line, "column": error.column, "text": self.value}
        )
        self.changed, self.removed = changed_lines(self.original, self.value)

    def reset(self) -> None:
        """Back to the original text."""
        self.value = self.original
