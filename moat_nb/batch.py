"""Replays in bulk: what-if sweeps and regression runs (DESIGN.md section 9 "Batch", issue 8).

:func:`sweep` replays one exchange once per *variant* of its start payload and tabulates what
came out; :func:`regression` replays known-good exchanges on another environment (prod history
on staging's new route version) and gives each a verdict. Both return a :class:`BatchResult`
(one row per replay; ``.to_pandas()``, ``.to_polars()``, ``.summary()``).

Variants (:func:`sweep`)
    A variant is a dict of *input paths* to values; it is applied to the recorded start payload
    (section 3: headers, body, properties) and only the parts it touches are sent (a present
    part replaces the original's whole, an absent part keeps it)::

        "body"                       the whole body (a str as it is; a dict/list is written as
                                     the original's content type, JSON for JSON)
        "body.lines[0].qty"          inside the parsed JSON body; also "body:$.lines[0].qty",
                                     the path syntax of a diff row (:mod:`moat_nb.noise`)
        "body['odd key']"            a key that is not a plain name
        "headers"                    the whole header map;   "headers.channel", "headers['X-A.b']"
        "properties"                 the whole property map; "properties.tenant"
        "properties.order.total"     inside a property (or header) whose value is JSON

    A missing key is created, an index must exist (or be the list's length: append); the value
    :data:`REMOVE` deletes a header, property or key. ``variants`` is a list of such dicts, or a
    *grid* ``{path: [values, ...], ...}`` whose cartesian product is the list (:func:`grid`):
    ``{"body.lines[0].qty": [1, 5, 50], "headers.channel": ["web", "store"]}`` is six variants.
    Every variant is applied before the first replay runs, so a bad path fails the sweep at once.

Rows and columns
    One row per variant (sweep) or source exchange (regression: one given twice is replayed
    once, with a warning), in input order; :data:`COLUMNS` lists
    the fixed columns with their types and meaning. A sweep's frame adds one column per input
    path (named as written: ``body.lines[0].qty``) and one per output (``outputs=`` names;
    by default the top-level scalar fields of a JSON result body: ``total``, ``status`` ...);
    a regression adds its outputs too. An output column takes the type its values share; one
    that no row has is Arrow ``null`` (polars ``Null``, which ``pl.concat(how="vertical_relaxed")``
    gives another run's type; float64 NaN in pandas). Declared beside its path,
    ``outputs={"total": ("body:$.total", pl.Float64)}`` (a polars dtype or a pyarrow type), an
    output column has that type in every run, values or none, so that a plain ``pl.concat``
    of runs takes them in any order.

Verdicts (column ``verdict``)
    ``SAME``     the replay ran and differs from the original only by noise;
    ``CHANGED``  it ran and something else differs (``differences`` counts it, and for a sweep
                 that includes the modified input itself);
    ``FAILED``   the replay's route failed while the original's did not;
    ``ERROR``    the platform could not run it: the replay ended ``ERROR``/``TIMED_OUT``/
                 ``ABORTED``, or the request was refused (permission, validation, no agent) or
                 failed (network); ``error`` holds the message.

Noise
    With ``calibrate=True`` (default) the batch replays one unmodified exchange twice on the
    target environment, once per route (the first source of that route the user may replay,
    ``COMPLETED`` ones first, in input order; another, up to 3, when the platform refuses it), and turns
    what differed between the two runs into ignore rules (:func:`moat_nb.diff.noise_rules_from`):
    the timestamps and random ids a route makes itself.
    Calibration replays are not rows; a calibration that cannot run leaves the route without
    calibrated rules (``BatchResult.calibration`` says why) and the rows run anyway.

Concurrency
    Rows run on asyncio with an :class:`~moat_nb.client.AsyncPlatform`, at most ``concurrency``
    replays in flight (default 8, at most :data:`MAX_CONCURRENCY`, 64): the bound protects the
    platform (section 12), whose agents run a limited number of replays at once anyway.
    ``asweep``/``aregression`` are the coroutines. The sync functions run them with
    :func:`asyncio.run`; when the calling thread already runs an event loop (a Jupyter kernel
    does) ``asyncio.run`` is not allowed there and ``nest_asyncio`` would re-enter the kernel's
    loop, so they run the coroutine on a loop of its
    own in a worker thread and wait for it, interruptibly.

Interrupting and resuming
    Ctrl-C (a kernel interrupt) or cancelling the task stops the batch: finished rows stay,
    rows in flight are not recorded as rows (their replays go on, on the platform). The sync
    functions then raise :class:`BatchInterrupted` (a ``KeyboardInterrupt``), the coroutines
    :class:`BatchCancelled` (a ``CancelledError``); both carry the partial
    :class:`BatchResult` as ``.result``. With ``results="runs.jsonl"`` every
    finished row is appended to that file as one JSON line the moment it is finished, and a
    re-run with the same file skips the rows already there (by a stable key: kind, source
    exchange, target environment and, for a sweep, the variant), re-running ``ERROR`` rows
    unless ``retry_errors=False``. The file also records each replay's id as soon as it was
    requested: a replay that was in flight when the batch stopped, or whose trace was lost when
    the platform went away, is *followed* on resume, not requested again, so that no exchange is
    replayed twice (section 4: "a replay is never silently run twice"; only a process killed
    while a request is on its way can leave one unrecorded). Only a followed replay that ended
    with no result (``ABORTED`` by a platform restart, ``ERROR``, ``TIMED_OUT``: the platform
    says it did not run, or gave up on it) is replayed anew, and only with ``retry_errors``. A
    batch that loses its platform stops (:class:`~moat_nb.errors.BatchStopped`). The calibrated
    noise rules of each route are kept there too, so a resumed run
    diffs against the same rules and replays nothing to calibrate again. A resume under another
    ``reason=`` keeps the rows (and followed replays) requested under the earlier one, audited
    under it, and warns naming that reason and how many rows it holds. Each row records what
    its outputs were defined as: an output asked for on resume that a loaded row lacks, or holds
    as defined differently, is read from that row's replay execution; one not asked for on
    resume is left out of the rows and the frame (asked for again, it is read back from the
    file, or else from the replay). A torn last line (the
    process died mid-write) is ignored, and cut off before the resumed run appends, so that the
    next record starts on a line of its own. A file holding anything else (``results=`` pointed
    at the wrong file) is refused before anything runs (``BAD_RESULTS_FILE``) and left as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import decimal
import difflib
import hashlib
import itertools
import json
import math
import operator
import os
import sys
import threading
import time
import types
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import rfc8785

from .client import SOURCE_SEARCHES, AsyncPlatform, Platform, replay_permissions, serialise_body
from .diff import DiffResult, diff, noise_rules_from
from .errors import (
    AgentUnavailable,
    BatchStopped,
    MoatError,
    NotFound,
    PermissionDenied,
    ReplayFailed,
    ValidationError,
)
from .frames import Backend, to_frame
from .model import Execution
from .noise import (
    KINDS,
    IgnoreSpec,
    NoiseRule,
    ParsedPath,
    as_rules,
    format_name,
    format_segments,
    parse_path,
)
from .payload import canonical_json, is_redacted, is_secret_name

__all__ = [
    "COLUMNS",
    "MAX_CONCURRENCY",
    "REMOVE",
    "VERDICTS",
    "BatchCancelled",
    "BatchInterrupted",
    "BatchResult",
    "aregression",
    "asweep",
    "grid",
    "regression",
    "row_key",
    "sweep",
    "variant_payload",
    "verdict",
]

#: The most replays a batch runs at once. Each row in flight reads its replay's trace stream,
#: and the sandbox allows a user ``ServerConfig.max_streams`` (256) open streams: this stays
#: well under it (two batches at once, with reconnects overlapping, still fit). More would not
#: go faster anyway: the platform's agents run a limited number of replays at once.
MAX_CONCURRENCY = 64

VERDICTS = ("SAME", "CHANGED", "FAILED", "ERROR")
_UNRUN = frozenset({"ERROR", "TIMED_OUT", "ABORTED"})

#: The fixed columns of :meth:`BatchResult.to_pandas` / ``to_polars``, in order (Arrow types;
#: the dtype conventions of :mod:`moat_nb.frames`). A sweep adds one column per input path (named
#: as written) and one per output (named as in ``outputs=``) after them.
COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("key", pa.string(), "stable row key (what a resumed run skips by)"),
    ("kind", pa.string(), "sweep | regression"),
    ("index", pa.int64(), "position of the variant / source in the input"),
    ("source_exchange_id", pa.string(), "the replayed exchange"),
    ("source_execution_id", pa.string(), "its recorded execution (the diff's original)"),
    ("route_id", pa.string(), "its route"),
    ("source_environment", pa.string(), "where it was recorded"),
    ("target_environment", pa.string(), "where it was replayed"),
    ("inputs", pa.string(), "the variant as JSON text (sweep; null for a regression)"),
    ("replay_id", pa.string(), "the replay (null when the request was refused)"),
    ("replay_status", pa.string(), "COMPLETED | ERROR | TIMED_OUT | ABORTED (the platform's)"),
    ("original_status", pa.string(), "COMPLETED | FAILED: the original's route result"),
    ("result_status", pa.string(), "COMPLETED | FAILED: the replay's route result"),
    ("verdict", pa.string(), "SAME | CHANGED | FAILED | ERROR"),
    ("differences", pa.int64(), "differences that are not noise (inputs included)"),
    ("route_differences", pa.int64(), "of those, the ones the route produced (cause=route)"),
    ("noise", pa.int64(), "differences filtered as noise"),
    ("first_divergence", pa.string(), "routeId/processorId[iteration] of the first divergence"),
    ("summary", pa.string(), "DiffResult.summary() (or the error)"),
    ("error_code", pa.string(), "ERROR rows: the error's code (FORBIDDEN, REPLAY_TIMED_OUT ...)"),
    ("error", pa.string(), "ERROR rows: the message"),
    ("result_execution_id", pa.string(), "the replay's execution"),
    ("duration_ms", pa.float64(), "the replay's route time"),
    ("elapsed_ms", pa.float64(), "wall time of the row: request to diff"),
)
_SCHEMA = pa.schema([pa.field(name, t) for name, t, _ in COLUMNS])
_NAMES = frozenset(name for name, _, _ in COLUMNS)


class _Remove:
    """The value that deletes a header, property or JSON key (:data:`REMOVE`)."""

    _instance: _Remove | None = None

    def __new__(cls) -> _Remove:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REMOVE"

    def __deepcopy__(self, memo: Any) -> _Remove:
        return self


#: Put as a variant's value to delete that header, property or key.
REMOVE = _Remove()
_REMOVE_JSON = {"$moat": "remove"}


# --------------------------------------------------------------------------- variants (pure)


def grid(axes: Mapping[str, Iterable[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of ``{path: [values]}``, in order (the last path varies fastest):
    ``grid({"a": [1, 2], "b": ["x", "y"]})`` → ``[{a:1,b:x}, {a:1,b:y}, {a:2,b:x}, {a:2,b:y}]``.

    An axis is a list, a tuple, a range, or any ordered collection of values: a numpy array
    (``np.arange(1, 4)``) or a pandas or polars Series (a frame's column) gives the Python
    values it holds. (No axes give one empty variant: :func:`sweep` refuses a grid without any.)"""
    if not isinstance(axes, Mapping):
        raise ValidationError(
            f"a grid is a dict of input paths to lists of values, not {type(axes).__name__}",
            code="BAD_VARIANT",
            hint='e.g. grid({"body.lines[0].qty": [1, 5, 50], "headers.channel": ["web", "store"]}); '
            "a list of variants goes to sweep() as it is",
        )
    values_of: dict[str, list[Any]] = {}
    for path, values in axes.items():
        _input_path(path)
        values_of[path] = _axis(path, values)
    names = list(values_of)
    return [
        dict(zip(names, combo, strict=True)) for combo in itertools.product(*(values_of[n] for n in names))
    ]


def _axis(path: str, values: Any) -> list[Any]:
    """A grid axis as a list of its values; ValidationError for what is not one."""
    unordered = isinstance(values, Set) and not isinstance(values, Sequence)
    if isinstance(values, str | bytes | Mapping) or unordered or hasattr(values, "columns"):
        # A string would be swept letter by letter, a dict or a frame by its keys, a set in an
        # order that changes between runs.
        raise ValidationError(
            f"grid axis {path!r} must be a list of values, not {type(values).__name__}",
            code="BAD_VARIANT",
            hint=f'e.g. {{"{path}": [1, 5, 50]}}; for one fixed value write [value]'
            + ("; for a set, sorted(values)" if unordered else ""),
        )
    if getattr(getattr(values, "dtype", None), "kind", "") in ("M", "m") and isinstance(values, Iterable):
        # A numpy datetime64 / timedelta64 array: its tolist() gives ints of nanoseconds, which
        # were sent as the values. Its elements are refused by _plain (not JSON), as dates are.
        return list(values)
    for method in ("tolist", "to_list"):  # numpy arrays, pandas Series / polars Series
        convert = getattr(values, method, None)
        if callable(convert):
            converted = convert()
            if isinstance(converted, list):
                return converted
    if isinstance(values, Iterable):
        return list(values)
    raise ValidationError(
        f"grid axis {path!r} must be a list of values, not {type(values).__name__}",
        code="BAD_VARIANT",
        hint=f'e.g. {{"{path}": [1, 5, 50]}}; for one fixed value write [value]',
    )


@dataclass(frozen=True, slots=True)
class _InputPath:
    part: str  # headers | body | properties
    name: str | None  # a header or property name
    segments: tuple[str | int, ...]  # inside the JSON body or the name's JSON value
    whole: bool  # the whole part ("body", "headers", "properties")


def _input_path(path: str) -> _InputPath:
    """An input path (module docstring) taken apart; ValidationError for anything else."""
    if not isinstance(path, str):
        raise ValidationError(
            f"an input path must be a string, not {type(path).__name__}", code="BAD_VARIANT"
        )
    for part in ("body", "headers", "properties"):
        if path == part:
            return _InputPath(part, None, (), True)
        rest = path[len(part) :] if path.startswith(part) else None
        if rest is None or rest[:1] not in (":", ".", "["):
            continue
        if rest[0] == ":":
            text = path
        elif part == "body":
            text = "body:$" + rest
        else:
            text = part + ":" + (rest[1:] if rest[0] == "." else rest)
        parsed: ParsedPath = parse_path(text)
        if part == "body" and not parsed.json:
            raise ValidationError(
                f"input path {path!r}: only JSON bodies can be edited by path",
                code="BAD_VARIANT",
                hint='use "body.a.b[0]" (or "body:$.a.b[0]"), or give the whole body as "body"',
            )
        return _InputPath(part, parsed.name, tuple(parsed.segments), False)
    raise ValidationError(
        f"input path {path!r} must start with body, headers or properties",
        code="BAD_VARIANT",
        hint='e.g. "body.lines[0].qty", "headers.channel", "properties.tenant", or "body" for the whole body',
    )


def _set(doc: Any, segments: Sequence[str | int], value: Any, path: str) -> Any:
    """``doc`` with ``value`` at ``segments`` (a copy is made by the caller)."""
    if not segments:
        return value
    *head, last = segments
    node = doc
    for i, seg in enumerate(head):
        nxt = segments[i + 1]
        if isinstance(seg, int) and isinstance(node, list):
            if seg == len(node) and value is not REMOVE:  # the list's length appends, here too
                node.append([] if isinstance(nxt, int) else {})
            elif not -len(node) <= seg < len(node):
                raise _bad_index(path, seg, len(node), append=value is not REMOVE)
            node = node[seg]
        elif isinstance(seg, str) and isinstance(node, dict):
            if seg not in node or node[seg] is None:
                node[seg] = [] if isinstance(nxt, int) else {}
            node = node[seg]
        else:
            raise _bad_step(path, seg, node)
    if isinstance(last, int) and isinstance(node, list):
        if value is REMOVE:
            if -len(node) <= last < len(node):
                node.pop(last)
        elif last == len(node):
            node.append(value)
        elif -len(node) <= last < len(node):
            node[last] = value
        else:
            raise _bad_index(path, last, len(node))
    elif isinstance(last, str) and isinstance(node, dict):
        if value is REMOVE:
            node.pop(last, None)
        else:
            node[last] = value
    else:
        raise _bad_step(path, last, node)
    return doc


def _bad_index(path: str, index: int, size: int, *, append: bool = True) -> ValidationError:
    return ValidationError(
        f"input path {path!r}: index {index} is outside a list of {size}",
        code="BAD_VARIANT",
        hint=f"use an index below {size}" + (f", or {size} to append" if append else ""),
    )


def _bad_step(path: str, seg: str | int, node: Any) -> ValidationError:
    what = "an index" if isinstance(seg, int) else f"key {seg!r}"
    return ValidationError(
        f"input path {path!r}: cannot take {what} of a {type(node).__name__}",
        code="BAD_VARIANT",
        hint="check the path against the original body (platform.execution(id).input_body)",
    )


def _json_value(value: Any, path: str) -> tuple[Any, bool]:
    """A header/property value as a JSON structure to edit: (structure, was JSON text)."""
    if isinstance(value, dict | list):
        return copy.deepcopy(value), False
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict | list):
            return parsed, True
    raise ValidationError(
        f"input path {path!r}: the value there is not a JSON object or array",
        code="BAD_VARIANT",
        hint="set the whole value instead (drop the part after the name)",
    )


def variant_payload(original: Execution, variant: Mapping[str, Any]) -> dict[str, Any]:
    """The ``headers=``/``body=``/``properties=`` arguments of ``platform.replay`` for one
    variant of ``original``'s start payload: only the parts the variant touches, each whole
    (section 3). Whole-part paths apply before the paths inside them. Pure."""
    if not isinstance(variant, Mapping):
        raise ValidationError(
            f"a variant must be a dict of input paths to values, not {type(variant).__name__}",
            code="BAD_VARIANT",
            hint='e.g. {"body.lines[0].qty": 5, "headers.channel": "store"}',
        )
    start = original.start_payload
    parts: dict[str, Any] = {}
    edits = sorted(
        ((_input_path(p), p, _plain(v, p)) for p, v in variant.items()), key=lambda e: not e[0].whole
    )
    for ip, path, value in edits:
        if ip.whole:
            if value is REMOVE:
                value = None if ip.part == "body" else {}
            if ip.part != "body" and not isinstance(value, Mapping):
                raise ValidationError(
                    f"{path!r} replaces the whole {ip.part} map: give a dict, not {type(value).__name__}",
                    code="BAD_VARIANT",
                )
            parts[ip.part] = dict(value) if ip.part != "body" else value
            continue
        if ip.part == "body":
            body = parts.get("body", start.body)
            if isinstance(body, str | None):
                try:
                    body = json.loads(body) if body is not None else None
                except ValueError:
                    body = None
                if body is None:
                    raise ValidationError(
                        f"input path {path!r}: the original body is not JSON",
                        code="BAD_VARIANT",
                        hint='give the whole body as a string: {"body": "..."}',
                    )
            else:
                body = copy.deepcopy(body)
            parts["body"] = _set(body, ip.segments, value, path)
            continue
        mapping = dict(parts.get(ip.part, getattr(start, ip.part)))
        assert ip.name is not None
        if ip.part == "headers":
            # Camel header names compare case-insensitively: edit the existing spelling.
            name = next((k for k in mapping if k.lower() == ip.name.lower()), ip.name)
        else:
            name = ip.name
        if not ip.segments:
            if value is REMOVE:
                mapping.pop(name, None)
            else:
                mapping[name] = value
        else:
            inner, as_text = _json_value(mapping.get(name), path)
            inner = _set(inner, ip.segments, value, path)
            mapping[name] = json.dumps(inner, ensure_ascii=False) if as_text else inner
        parts[ip.part] = mapping
    if "body" in parts and parts["body"] is not None and not isinstance(parts["body"], str):
        parts["body"] = serialise_body(parts["body"], parts.get("headers", start.headers), start.body)
    return parts


def _plain(value: Any, path: str) -> Any:
    """A variant's value as plain JSON data: numpy scalars (what ``np.arange`` or a DataFrame
    column gives a grid) become the Python values they hold; anything else that is not JSON
    is refused naming its path, before any replay runs."""
    if value is REMOVE:
        return value
    kind = getattr(getattr(value, "dtype", None), "kind", "")
    if type(value).__module__ == "numpy" and hasattr(value, "tolist") and kind not in ("M", "m"):
        # np.int64(5) -> 5, np.float64 -> float, np.bool_ -> bool, an array -> a list. Not a
        # datetime64 / timedelta64: in nanoseconds tolist() gives an int, which was sent as
        # the value; refused below as not JSON, as a datetime is.
        value = value.tolist()
    if isinstance(value, Mapping):
        return {k: _plain(v, path) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, path) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        # pandas' missing value is NaN; JSON has no NaN or infinity, and the platform refuses them.
        raise ValidationError(
            f"input path {path!r}: {value!r} is not a JSON number",
            code="BAD_VARIANT",
            hint="use None for a missing value (pandas gives NaN for one), or a finite number",
        )
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValidationError(
        f"input path {path!r}: a {type(value).__name__} is not a JSON value",
        code="BAD_VARIANT",
        hint="give strings, numbers, booleans, None, lists and dicts (convert dates to text)",
    )


def _jsonable(value: Any) -> Any:
    """``value`` as JSON data (REMOVE as a marker object; anything else through str)."""
    if value is REMOVE:
        return dict(_REMOVE_JSON)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def row_key(kind: str, source_exchange_id: str, target_environment: str | None, variant: Any = None) -> str:
    """The stable key of a row: SHA-256 (first 24 hex) over the RFC 8785 canonical JSON of the
    kind, the source exchange, the target environment and the variant. Key order in the
    variant does not matter; nothing else (time, order, ignore rules) enters it.

    A variant JCS cannot hold (an integer beyond 2**53, a Java long id) is keyed over JSON with
    sorted keys and no spaces instead: every other key stays what it was, so results files
    written before still resume. NaN and infinities are refused (``BAD_VARIANT``)."""
    data = {
        "kind": kind,
        "source": source_exchange_id,
        "target": target_environment,
        "variant": _jsonable(variant),
    }
    try:
        text = canonical_json(data)
    except rfc8785.FloatDomainError:
        raise ValidationError(
            "a variant holds NaN or an infinity, which is not JSON",
            code="BAD_VARIANT",
            hint="use None for a missing value (pandas gives NaN for one), or a finite number",
        ) from None
    except rfc8785.IntegerDomainError:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(text).hexdigest()[:24]


# --------------------------------------------------------------------------- verdicts (pure)


def verdict(
    original_status: str | None, replay_status: str | None, result_status: str | None, same: bool | None
) -> str:
    """The row's verdict (module docstring) from the statuses and whether the diff is noise only."""
    if replay_status in _UNRUN or result_status is None or same is None:
        return "ERROR"
    if result_status == "FAILED" and original_status != "FAILED":
        return "FAILED"
    return "SAME" if same else "CHANGED"


def _label(result: DiffResult) -> str | None:
    first = result.first_divergence
    if first is None:
        return None
    return f"{first.route_id}/{first.processor_id}" + (f"[{first.iteration}]" if first.iteration else "")


def _get_path(execution: Execution, spec: str) -> Any:
    """An output value of ``execution``: ``body:$.total`` (or ``body.total``), ``body``,
    ``headers:orderTotal`` (or ``headers.orderTotal``), ``properties:x``, ``status``,
    ``error:type``, ``error:message``; None where there is none."""
    return _lookup(execution, spec)[0]


#: Where an output path found nothing (:func:`_lookup`): the path up to the step that failed
#: (diff syntax), that step (a key, a header/property name, or an index), and the keys or names
#: there were at that place (none when it was not an object, or the body not JSON).
_Miss = tuple[str, str | int | None, frozenset[str]]


def _lookup(execution: Execution, spec: str) -> tuple[Any, _Miss | None]:
    """:func:`_get_path`'s value, and where the path left the result when nothing is there
    (None when the path is there, even holding null): what the warning about an output that
    matches nothing in any row names, with a key seen there to suggest."""
    parsed = parse_path(_output_text(spec))
    if parsed.field == "status":
        return execution.status, None
    if parsed.field == "error":
        return (execution.error_type if parsed.name == "type" else execution.error_message), None
    if parsed.field == "body":
        if not parsed.json:
            return execution.output_body, None
        try:
            node: Any = json.loads(execution.output_body or "")
        except ValueError:
            return None, ("body:$", parsed.segments[0] if parsed.segments else None, frozenset())
        at = "body:$"
    elif parsed.field in ("headers", "properties"):
        mapping = (
            execution.output_headers if parsed.field == "headers" else execution.output_properties
        ) or {}
        fold = parsed.field == "headers"
        assert parsed.name is not None
        key = next(
            (k for k in mapping if (k.lower() == parsed.name.lower() if fold else k == parsed.name)), None
        )
        if key is None:
            return None, (f"{parsed.field}:", parsed.name, frozenset(map(str, mapping)))
        node = mapping[key]
        at = f"{parsed.field}:{format_name(key)}"
        if parsed.segments and isinstance(node, str):
            try:
                node = json.loads(node)
            except ValueError:
                return None, (at, parsed.segments[0], frozenset())
    else:
        return None, None
    for seg in parsed.segments:
        if isinstance(seg, int) and isinstance(node, list) and -len(node) <= seg < len(node):
            node = node[seg]
        elif isinstance(seg, str) and isinstance(node, dict) and seg in node:
            node = node[seg]
        else:
            return None, (at, seg, frozenset(map(str, node)) if isinstance(node, dict) else frozenset())
        at += format_segments([seg])
    return node, None


def _near_path(miss: _Miss) -> str | None:
    """A path that exists, one step from ``miss``'s, whose last step is spelled like the one
    that found nothing (``body:$.total`` for ``body:$.totl``); only from keys seen in results."""
    at, step, keys = miss
    if not isinstance(step, str) or not keys:
        return None
    folded = {k.lower(): k for k in keys}
    close = difflib.get_close_matches(step.lower(), list(folded), n=1, cutoff=0.6)
    if not close:
        return None
    key = folded[close[0]]
    return at + format_name(key) if at.endswith(":") else at + format_segments([key])


Output = str | Callable[[Execution], Any]
#: An output as ``outputs=`` takes it: a path or a function, or ``(path or function, type)``
#: with the column's type declared (a polars dtype such as ``pl.Float64``, or a pyarrow type).
OutputSpec = Output | tuple[Output, Any]


def _column_type(name: str, dtype: Any) -> pa.DataType:
    """The Arrow type of a declared output type (a polars dtype, its class or an instance, or a
    pyarrow DataType). polars' String is Arrow ``large_string`` and its lists ``large_list``:
    taken as ``string`` and ``list``, the types an undeclared column of the same values gets,
    so that frames of runs with and without the declaration concatenate."""
    arrow: pa.DataType | None = dtype if isinstance(dtype, pa.DataType) else None
    if arrow is None and type(dtype).__module__.split(".")[0] == "polars":
        import polars as pl

        try:
            if dtype not in (pl.Object, pl.Null):
                arrow = pl.Series(name, [], dtype=dtype).to_arrow().type
        except (TypeError, ValueError, pl.exceptions.PolarsError):
            arrow = None
    if arrow is None or pa.types.is_null(arrow):
        raise ValidationError(
            f"output {name!r}: {dtype!r} is not a column type",
            code="BAD_OUTPUT_TYPE",
            hint="declare a polars dtype or a pyarrow type beside the path: "
            '{"total": ("body:$.total", pl.Float64)}',
            details={"output": name},
        )
    if pa.types.is_large_string(arrow):
        return pa.string()
    if pa.types.is_large_list(arrow):
        return pa.list_(arrow.value_type)
    return arrow


def _split_outputs(
    outputs: Mapping[str, OutputSpec] | None,
) -> tuple[dict[str, Output] | None, dict[str, pa.DataType]]:
    """``outputs=`` as the paths/functions read from each replay and the declared column types."""
    if outputs is None:
        return None, {}
    specs: dict[str, Output] = {}
    types: dict[str, pa.DataType] = {}
    for name, spec in outputs.items():
        if isinstance(spec, tuple):
            if len(spec) != 2:
                raise ValidationError(
                    f"output {name!r}: {spec!r} is not (path or function, type)",
                    code="BAD_OUTPUT_TYPE",
                    hint='e.g. {"total": ("body:$.total", pl.Float64)}',
                    details={"output": name},
                )
            spec, dtype = spec
            types[name] = _column_type(str(name), dtype)
        specs[name] = spec
    return specs, types


def _outputs(execution: Execution | None, outputs: Mapping[str, Output] | None) -> dict[str, Any]:
    if execution is None:
        return {}
    if outputs is None:  # a few fields by default: the top-level scalars of a JSON object body
        try:
            body = json.loads(execution.output_body or "")
        except ValueError:
            return {}
        if not isinstance(body, dict):
            return {}
        found = {k: v for k, v in body.items() if v is None or isinstance(v, bool | int | float | str)}
        return {(f"out.{k}" if k in _NAMES else k): v for k, v in list(found.items())[:12]}
    return {
        name: _native(spec(execution) if callable(spec) else _get_path(execution, spec))
        for name, spec in outputs.items()
    }


def _definitions(outputs: Mapping[str, Output] | None) -> dict[str, str | None]:
    """What each output was defined as, recorded with a row's values in the results file so
    that a resume can tell a redefined output (same name, new path or function) from the one
    the stored value was read with: ``"body:$.total"`` for a path (as written), ``"function
    module.name <digest of its code>"`` for a function, None for a callable whose code cannot
    be read (a ``functools.partial``, an object with ``__call__``): never taken as unchanged."""
    if not isinstance(outputs, Mapping):
        return {}
    return {name: _definition(spec) for name, spec in outputs.items()}


def _definition(spec: Output) -> str | None:
    if isinstance(spec, str):
        return spec
    code = getattr(spec, "__code__", None)
    if not isinstance(code, types.CodeType):
        return None
    digest = hashlib.sha256()
    _code_digest(code, digest)
    name = f"{getattr(spec, '__module__', None)}.{getattr(spec, '__qualname__', '?')}"
    return f"function {name} {digest.hexdigest()[:16]}"


def _code_digest(code: types.CodeType, digest: Any) -> None:
    # The function's bytecode, the names it reads and its constants (nested functions' code
    # too): editing a lambda in the notebook changes one of them. A variable it reads that
    # changed since is not seen (renaming the output has it read again).
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_digest(const, digest)
        elif isinstance(const, frozenset):  # `x in {"a", "b"}`: its order changes between runs
            digest.update(repr(sorted(map(repr, const))).encode())
        else:
            digest.update(repr(const).encode())


def _same_definition(stored: Any, asked: str | None) -> bool:
    """Whether a stored value was read with the output as it is defined now. A value whose
    definition was not recorded (a file written before they were, a default output) is not."""
    if not isinstance(stored, str) or asked is None:
        return False
    if asked.startswith("function ") or stored.startswith("function "):
        return stored == asked
    return _output_text(stored) == _output_text(asked)  # "body.total" is "body:$.total"


def _native(value: Any) -> Any:
    """A function output's numpy scalar (``np.int64``, ``np.bool_``: what a computation with
    numpy or pandas returns) as the Python value it holds. Kept as it was, it was neither an
    int nor a bool to the frame's column typing, so the column became JSON text of its str()
    (``'"5"'``, ``'"True"'``), and the results file held it as a string."""
    if type(value).__module__ == "numpy" and getattr(getattr(value, "dtype", None), "kind", "-") in "biuf":
        return value.tolist()  # numbers only: a datetime64 in nanoseconds would become an int
    return value


# --------------------------------------------------------------------------- results


@dataclass
class BatchResult:
    """The rows of a sweep or a regression, in input order (one per variant / source).

    ``rows`` are dicts with the :data:`COLUMNS` keys plus ``inputs_values`` (path → value),
    ``outputs`` (name → value) and ``reason`` (what the replay was audited under; absent in rows
    of a results file written before it was recorded); ``complete`` is False when the batch was interrupted;
    ``loaded`` counts the rows taken from the results file instead of run;
    ``calibration`` maps ``routeId@environment`` to the calibrated noise rules (their paths) or
    to the reason calibration could not run; ``output_names`` are the ``outputs=`` names asked
    for, a column each in the frames even when no row has a value (every row ``ERROR``, or no
    rows at all).
    """

    kind: str
    rows: list[dict[str, Any]]
    complete: bool = True
    total: int = 0
    loaded: int = 0
    calibration: dict[str, Any] = field(default_factory=dict)
    results_path: Path | None = None
    output_names: tuple[str, ...] = ()
    #: Declared output column types (``outputs={"total": ("body:$.total", pl.Float64)}``).
    output_types: dict[str, pa.DataType] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    @property
    def verdicts(self) -> Counter[str]:
        """How many rows have each verdict."""
        return Counter(r["verdict"] for r in self.rows)

    def _extra(self) -> tuple[list[str], list[str]]:
        ins: dict[str, None] = {}
        outs: dict[str, None] = dict.fromkeys(self.output_names)
        for r in self.rows:
            ins.update(dict.fromkeys(r.get("inputs_values") or {}))
            outs.update(dict.fromkeys(r.get("outputs") or {}))
        return list(ins), [o for o in outs if o not in ins]

    def to_arrow(self) -> pa.Table:
        """The rows as a :class:`pyarrow.Table`: :data:`COLUMNS`, then the input columns (one
        per path, as written), then the output columns (one per name). Extra columns take the
        type their values share (int, float, str, bool), else JSON text; null when no row has
        a value. An output whose type was declared (``outputs={"total": ("body:$.total",
        pl.Float64)}``) is cast to it, so that a run where no row has it (a Null column) and one
        where its values are whole numbers concatenate in any order; a value that does not cast
        is a ValidationError ``BAD_OUTPUT_TYPE`` naming the output."""
        table = pa.Table.from_pylist([{n: r.get(n) for n in _NAMES} for r in self.rows], schema=_SCHEMA)
        ins, outs = self._extra()
        for names, source in ((ins, "inputs_values"), (outs, "outputs")):
            for name in names:
                if name in table.column_names:
                    continue
                values = [(r.get(source) or {}).get(name) for r in self.rows]
                column = _extra_column(values)
                declared = self.output_types.get(name) if source == "outputs" else None
                if declared is not None:
                    column = _cast_output(name, column, declared, values)
                table = table.append_column(name, column)
        return table

    def to_frame(self, backend: Backend = "pandas") -> Any:
        table = self.to_arrow()
        if backend == "pandas":
            # pandas has no null dtype (Arrow's null becomes object None, which pd.concat with a
            # number column makes object too): an output no row has is float64 NaN, which
            # arithmetic takes (total - original_total) and pd.concat turns into the other
            # frame's numbers (float64, Int64 as Float64), or object beside text, as it does
            # anything else.
            for i, f in enumerate(table.schema):
                if pa.types.is_null(f.type):
                    table = table.set_column(i, f.name, table.column(i).cast(pa.float64()))
        return to_frame(table, backend)

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (string, Int64, float64 columns; module docstring)."""
        return self.to_frame("pandas")

    def to_polars(self) -> Any:
        """The rows as a polars DataFrame."""
        return self.to_frame("polars")

    def summary(self) -> str:
        """A few lines: counts by verdict, where the changes start, errors, noise calibration."""
        n = len(self.rows)
        head = f"{self.kind}: {n} of {self.total} rows"
        if not self.complete:
            head += " (interrupted: run again with the same results= file for the rest)"
        if self.loaded:
            head += (
                f"; {self.loaded} from {self.results_path.name if self.results_path else 'the results file'}"
            )
        lines = [head]
        counts = self.verdicts
        lines.append("verdicts: " + (", ".join(f"{v} {counts[v]}" for v in VERDICTS if counts[v]) or "none"))
        firsts = Counter(r["first_divergence"] for r in self.rows if r["verdict"] in ("CHANGED", "FAILED"))
        if firsts:
            lines.append(
                "first divergence: "
                + ", ".join(f"{k or '(start payload only)'} ×{c}" for k, c in firsts.most_common(5))
            )
        errors = Counter(f"[{r['error_code']}] {r['error']}" for r in self.rows if r["verdict"] == "ERROR")
        for text, count in errors.most_common(3):
            lines.append(f"error ×{count}: {text}")
        for route, rules in self.calibration.items():
            if isinstance(rules, list):
                shown = ", ".join(rules[:6]) + (f" (+{len(rules) - 6})" if len(rules) > 6 else "")
                lines.append(
                    f"noise calibrated on {route}: {len(rules)} rules" + (f" ({shown})" if rules else "")
                )
            else:
                lines.append(f"noise not calibrated on {route}: {rules}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<BatchResult {self.kind} rows={len(self.rows)}/{self.total}>\n{self.summary()}"

    def _repr_html_(self) -> str:
        import html

        frame = self.to_pandas()
        return f"<pre>{html.escape(self.summary())}</pre>" + frame._repr_html_()


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _cast_output(name: str, column: pa.Array, declared: pa.DataType, values: list[Any]) -> pa.Array:
    """An output column cast to its declared type (safe: 2.5 is no Int64, "9.50 EUR" no Float64).

    A nested type (``pl.List(pl.Int64)``, ``pl.Struct``) is cast from the values themselves:
    an undeclared column of lists or objects is JSON text, and Arrow casts no text to a list
    or a struct, so every such declaration was refused whatever its values. (Cast, not built
    with ``type=``: building truncates 1.5 to an int64 1 without a word.) A number is kept only
    as the same number: the safe cast lets by what rounds it (below)."""

    def refused(why: str) -> ValidationError:
        return ValidationError(
            f"output {name!r} holds values that are not {declared}: {why}",
            code="BAD_OUTPUT_TYPE",
            hint="declare the type its values have, or read a value of that type (a path to the number)",
            details={"output": name, "type": str(declared)},
        )

    try:
        if pa.types.is_nested(declared):
            column = pa.array([_jsonable(v) for v in values])
        elif (pa.types.is_string(declared) or pa.types.is_large_string(declared)) and pa.types.is_string(
            column.type
        ):
            # A column of text and other values is JSON text ('"a"'): as the declared String,
            # text is itself, as in a column of text alone.
            column = pa.array(
                [
                    v if v is None or isinstance(v, str) else s
                    for v, s in zip(values, column.to_pylist(), strict=True)
                ]
            )
        cast = column.cast(declared)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise refused(str(exc).splitlines()[0]) from None
    # Arrow's safe cast still rounds a number to the declared Decimal's scale (1.234 -> 1.23),
    # makes any non-zero number True, a float beyond Float32 inf, and parses a 20-digit id
    # (kept as JSON text) to the nearest float: a number (or bool) is kept only as the same
    # number (Float32: as near as its precision).
    single = pa.types.is_float32(declared) or pa.types.is_float16(declared)
    for value, out in zip(values, cast.to_pylist(), strict=True):
        if not isinstance(value, int | float) or not isinstance(out, int | float | decimal.Decimal):
            continue
        same = (
            (isinstance(value, float) and math.isnan(value) and math.isnan(out))
            or out == value
            # A float as the decimal it is written as (0.1 is Decimal("0.10"), not its binary value).
            or (
                isinstance(out, decimal.Decimal)
                and isinstance(value, float)
                and out == decimal.Decimal(repr(value))
            )
            or (single and isinstance(out, float) and math.isclose(out, value, rel_tol=1e-3))
        )
        if not same:
            raise refused(f"{value!r} would be {out!r}")
    return cast


def _extra_column(values: list[Any]) -> pa.Array:
    plain = [v for v in values if v is not None]
    if not plain:
        # No row has a value (they all failed, or there are no rows): the type of nothing, not
        # a guess. float64 was a guess: pl.concat of this frame and a run whose output is text
        # failed (SchemaError: String is incompatible with Float64), either way round and even
        # with how="vertical_relaxed" for a bool (True became 1.0). Null takes the other frame's
        # type in polars' relaxed concat and in pa.concat_tables; pandas gets float64 NaN
        # (BatchResult.to_frame).
        return pa.nulls(len(values))
    if all(isinstance(v, bool) for v in plain):
        return pa.array(values, pa.bool_())
    # An int beyond 64 bits (an unsigned 64-bit id; JSON and the platform take it) fits neither
    # int64 (OverflowError: the whole frame failed, and the result's display with it) nor a
    # float exactly: such a column is JSON text, which keeps every digit.
    wide = any(
        isinstance(v, int) and not isinstance(v, bool) and not _INT64_MIN <= v <= _INT64_MAX for v in plain
    )
    if not wide and all(isinstance(v, int) and not isinstance(v, bool) for v in plain):
        return pa.array(values, pa.int64())
    if not wide and all(isinstance(v, int | float) and not isinstance(v, bool) for v in plain):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if all(isinstance(v, str) for v in plain):
        return pa.array(values, pa.string())
    return pa.array(
        [None if v is None else json.dumps(_jsonable(v), ensure_ascii=False) for v in values], pa.string()
    )


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C / a kernel interrupt stopped :func:`sweep` or :func:`regression`; ``.result`` is
    the partial :class:`BatchResult` (the finished rows)."""

    def __init__(self, result: BatchResult) -> None:
        super().__init__(_stopped_text(result))
        self.result = result


class BatchCancelled(asyncio.CancelledError):
    """The task running :func:`asweep` or :func:`aregression` was cancelled; ``.result`` is the
    partial :class:`BatchResult` (the finished rows)."""

    def __init__(self, result: BatchResult) -> None:
        super().__init__(_stopped_text(result))
        self.result = result


def _stopped_text(result: BatchResult) -> str:
    text = f"{result.kind} stopped after {len(result.rows)} of {result.total} rows"
    if result.results_path is not None:
        return text + f"; they are in {result.results_path}: run again with results= that file for the rest"
    return text + "; pass results='runs.jsonl' to be able to resume"


#: Error codes of a row that never reached the platform: the client's retries were spent on
#: connecting (``TRANSPORT``) or on resuming the trace stream (``STREAM_RESUME_FAILED``), or a
#: proxy answered 502/503/504 for it without the platform's envelope (``GATEWAY``).
_UNREACHABLE = frozenset({"TRANSPORT", "STREAM_RESUME_FAILED", "GATEWAY"})
#: How long the trace readers of a batch may fail to reach the platform before it stops
#: (:class:`_Reach`): longer than a sandbox or a platform node takes to restart.
_READER_PATIENCE = 15.0


class _Reach:
    """Whether the platform can be reached, from what the batch sees of it.

    Rows: failures in a row that never reached the platform (:data:`_UNREACHABLE`); a batch stops
    once there are as many as run side by side (3 at least), since every row or look-up left
    would spend the client's retries too. Readers: while every worker follows a replay's trace,
    no row ends to count, and each reader would try to reconnect for minutes (its back-off,
    ~165 s by default); so reconnects that failed count as well, and the batch stops once 3 or
    more in a row failed over at least ``patience`` seconds (a restart of a few seconds is
    waited out). Any answer from the platform, even a refusal, or a reader that reached its
    stream, resets both."""

    def __init__(self, concurrency: int, patience: float | None = None) -> None:
        self.limit = max(3, concurrency)
        self.patience = _READER_PATIENCE if patience is None else patience
        self.count = 0
        self.drops = 0
        self.since: float | None = None  # when the readers' failed reconnects began

    def lost(self, code: str | None) -> bool:
        """Count one outcome (its error code, None for a success); True once the limit is reached."""
        self.count = self.count + 1 if code in _UNREACHABLE else 0
        if code not in _UNREACHABLE:  # an answer, even a refusal: the platform is there
            self.drops, self.since = 0, None
        return self.count >= self.limit

    def dropped(self, cause: BaseException | str | None, now: float) -> bool:
        """Count one reader's connection (cause None) or drop; True once readers have failed 3
        reconnects in a row or more, the first ``patience`` seconds or more before ``now``."""
        if cause is None:
            self.drops, self.since, self.count = 0, None, 0
            return False
        if self.since is None:
            self.since = now
        self.drops += 1
        return self.drops >= 3 and now - self.since >= self.patience


#: Where each record of a results file starts. Inside a record a quote is always escaped, so
#: this text starts a record and nothing else.
_RECORD_START = b'{"type": "'
#: The records :class:`_ResultsFile` writes, and how each one's line starts (``_append``).
_RECORD_TYPES = ("row", "started", "calibration")
_RECORD_HEADS = tuple(_RECORD_START + t.encode() + b'", "' for t in _RECORD_TYPES)


def _record(raw: bytes) -> dict[str, Any] | None:
    """The record on one line of a results file, or None for a torn line.

    A line that does not parse may be a torn fragment with a whole record glued on after it
    (what resuming wrote before a torn tail was cut off, :func:`_cut_torn_tail`): the last
    record start from which the rest of the line parses is that record. (A nested object may
    start the same way, but the rest of the line from there never parses: the outer record
    closes after it.)"""
    starts = []
    at = raw.find(_RECORD_START, 1)
    while at != -1:
        starts.append(at)
        at = raw.find(_RECORD_START, at + 1)
    for start in [0, *reversed(starts)]:
        try:
            data = json.loads(raw[start:].decode("utf-8"))
        except ValueError:  # UnicodeDecodeError is one
            continue
        if isinstance(data, dict) and data.get("type") in _RECORD_TYPES and isinstance(data.get("key"), str):
            return data
    return None


def _torn_record(raw: bytes) -> bool:
    """Whether an unfinished last line is the start of a record of ours (a write cut short):
    only such a line may be cut off. Cut anywhere, even inside ``{"type": "``."""
    return any(raw.startswith(head) or head.startswith(raw) for head in _RECORD_HEADS)


def _cut_torn_tail(path: Path) -> None:
    """Truncate ``path`` after its last newline when its last line is unfinished."""
    try:
        fh = path.open("r+b")
    except FileNotFoundError:
        return
    with fh:
        end = fh.seek(0, os.SEEK_END)
        if end == 0:
            return
        fh.seek(end - 1)
        if fh.read(1) == b"\n":
            return
        pos = end
        while pos > 0:  # back to the newline before the fragment, a block at a time
            step = min(pos, 1 << 16)
            fh.seek(pos - step)
            block = fh.read(step)
            cut = block.rfind(b"\n")
            if cut != -1:
                fh.truncate(pos - step + cut + 1)
                return
            pos -= step
        fh.truncate(0)


def _storable(rule: NoiseRule) -> bool:
    # What calibration makes: a glob path, a processor glob, a reason (noise_rules_from).
    return isinstance(rule.path, str) and rule.value is None and rule.predicate is None


def _stored_rules(rules: Any) -> bool:
    # A calibration record as add_calibration writes it; anything else is calibrated again.
    # "kinds" is newer: a file written before it has none (its rules covered every kind).
    return isinstance(rules, list) and all(
        isinstance(r, dict)
        and set(r) in ({"path", "processor", "reason"}, {"path", "processor", "reason", "kinds"})
        and isinstance(r["path"], str)
        and isinstance(r["processor"], str | None)
        and isinstance(r["reason"], str)
        and (
            r.get("kinds") is None
            or (isinstance(r["kinds"], list) and r["kinds"] and all(k in KINDS for k in r["kinds"]))
        )
        for r in rules
    )


class _ResultsFile:
    """The JSON-lines results file: ``{"type": "row", ...}`` per finished row and
    ``{"type": "started", "key", "replayId"}`` per replay requested (module docstring)."""

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        # "~/runs.jsonl" is in the home folder: taken as it was, the rows went to a folder
        # named "~" made in the working directory, and the next run from elsewhere found none.
        self.path = Path(path).expanduser()
        self.kind = kind
        self.rows: dict[str, dict[str, Any]] = {}
        self.started: dict[str, str] = {}
        self.started_reasons: dict[str, str] = {}  # key: the reason its replay was requested under
        self.calibrations: dict[str, list[dict[str, Any]]] = {}  # routeId@environment: rules
        self.torn = 0
        # The last line has no newline: "torn" (a record cut short: cut it off before appending)
        # or "record" (a whole record whose newline was not written: end the line).
        self._tail: str | None = None
        self._fh: Any = None
        if self.path.is_dir() or (self.path.exists() and not self.path.is_file()):
            # results="out/" raised a bare IsADirectoryError when the batch began writing.
            raise ValidationError(
                f"results={str(self.path)!r} is a folder, not a file",
                code="BAD_RESULTS_FILE",
                hint=f"name a file in it, e.g. results={str(self.path / 'results.jsonl')!r}",
                details={"path": str(self.path)},
            )
        if self.path.exists():
            self._load()

    def open(self) -> None:
        """Open for appending (the batch does, when it starts running).

        A torn last line (the process died mid-write) is cut off first: appended to, it would
        glue the next record onto the fragment, and that record (a finished row, or the id of a
        replay just requested) would be lost for good. Only a fragment of a record of ours is
        cut: a file holding anything else was refused when it was loaded."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._tail == "torn":
            _cut_torn_tail(self.path)
        self._fh = self.path.open("a", encoding="utf-8")
        if self._tail == "record":
            self._fh.write("\n")
            self._fh.flush()
        self._tail = None

    def _load(self) -> None:
        # Bytes, line by line: a line cut mid-character is torn, not a UnicodeDecodeError.
        # Every line this class writes is a record (an older resume may have glued one onto a
        # torn fragment: _record finds it); only the last line can be unfinished. A line that is
        # neither is not ours: the file is refused untouched rather than cut and appended to
        # (results="notes.txt" lost the note's last line: fuzzing finding).
        with self.path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                finished = raw.endswith(b"\n")
                if not raw.strip():
                    continue  # an empty line: nothing lost by skipping it
                data = _record(raw)
                if data is None and not finished and _torn_record(raw):
                    self.torn += 1  # a line cut by a crash mid-write: that row is run again
                    self._tail = "torn"
                    continue
                if data is None:
                    raise ValidationError(
                        f"{self.path} is not a results file of moat_nb: line {number} is not one of "
                        "its records",
                        code="BAD_RESULTS_FILE",
                        hint="choose another results= path (a new .jsonl file), or delete this file "
                        "if it is an old results file you no longer need",
                        details={"path": str(self.path), "line": number},
                    )
                if not finished:
                    self._tail = "record"
                if data.get("kind") != self.kind:
                    raise ValidationError(
                        f"{self.path} holds {data.get('kind')} rows, not {self.kind} rows",
                        code="RESULTS_FILE_MISMATCH",
                        hint="use another results= file for this batch",
                    )
                if data.get("type") == "started" and isinstance(data.get("replayId"), str):
                    self.started[data["key"]] = data["replayId"]
                    if isinstance(data.get("reason"), str):
                        self.started_reasons[data["key"]] = data["reason"]
                elif data.get("type") == "row":
                    data.pop("type")
                    self.rows[data["key"]] = data
                    if not (data.get("verdict") == "ERROR" and data.get("error_code") in _UNREACHABLE):
                        self.started.pop(data["key"], None)
                    # else its replay was requested and then lost from sight (the platform went
                    # away): a resumed row follows it, or it ran twice (review finding).
                elif data.get("type") == "calibration" and _stored_rules(data.get("rules")):
                    self.calibrations[data["key"]] = data["rules"]

    def _append(self, data: dict[str, Any]) -> None:
        # One write per line, flushed at once: an interrupt leaves whole lines (or a torn last
        # one, which _load skips), never a row that was not finished.
        self._fh.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
        self._fh.flush()

    def add_started(self, key: str, replay_id: str, reason: str | None = None) -> None:
        self._append(
            {"type": "started", "kind": self.kind, "key": key, "replayId": replay_id, "reason": reason}
        )

    def add_row(self, row: dict[str, Any]) -> None:
        self._append({"type": "row", **row})

    def add_calibration(self, where: str, rules: Sequence[NoiseRule]) -> None:
        """The calibrated noise rules of ``where`` (routeId@environment), so that a resumed run
        diffs against the same rules and replays nothing to calibrate again."""
        plain = [
            {
                "path": r.path,
                "processor": r.processor,
                "reason": r.reason,
                "kinds": None if r.kinds is None else list(r.kinds),
            }
            for r in rules
        ]
        self._append({"type": "calibration", "kind": self.kind, "key": where, "rules": plain})

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


# --------------------------------------------------------------------------- the runner


@dataclass
class _Source:
    """A source exchange as far as it is known before its detail is fetched."""

    exchange_id: str
    execution_id: str | None = None
    route_id: str | None = None
    status: str | None = None
    environment: str | None = None
    full: Execution | None = None


@dataclass
class _Job:
    index: int
    key: str
    source: _Source
    variant: dict[str, Any] | None = None
    replay_args: dict[str, Any] = field(default_factory=dict)
    error: MoatError | None = None


def _source_of(item: Any) -> _Source:
    if isinstance(item, str):
        return _Source(item)
    if isinstance(item, Execution):
        full = item if item.input_headers is not None and item.processors is not None else None
        return _Source(
            item.exchange_id, item.execution_id, item.route_id, item.status, item.environment, full
        )
    row: Mapping[str, Any] | None = item if isinstance(item, Mapping) else None
    if row is None and hasattr(item, "to_dict") and callable(item.to_dict):
        row = item.to_dict()  # a pandas Series: a row of an executions frame
    if row is not None:

        def get(snake: str, camel: str) -> Any:
            value = row.get(snake, row.get(camel))
            return value if isinstance(value, str) else None

        exchange = get("exchange_id", "exchangeId")
        if exchange is not None:
            return _Source(
                exchange,
                get("execution_id", "executionId"),
                get("route_id", "routeId"),
                get("status", "status"),
                get("environment", "environment"),
            )
    raise ValidationError(
        f"cannot replay a {type(item).__name__}",
        code="BAD_SOURCE",
        hint="pass exchange ids, Executions, rows of an executions frame, or the frame itself",
    )


#: The columns a source is read from (:func:`_source_of`), snake_case and camelCase.
_SOURCE_COLUMNS = (
    "exchange_id",
    "exchangeId",
    "execution_id",
    "executionId",
    "route_id",
    "routeId",
    "status",
    "environment",
)


def _collected(lazy: Any) -> Any:
    """A polars LazyFrame (``pl.scan_parquet(export).filter(...)``) as a DataFrame of the
    columns a source is read from. Each of its rows is a replay, so it is collected whole in any
    case; selecting first keeps an export's bodies and processors out of memory. It was refused
    as BAD_SOURCE (``cannot replay <LazyFrame ...>``)."""
    names = lazy.collect_schema().names()
    if "exchange_id" not in names and "exchangeId" not in names:
        raise ValidationError(
            f"the sources frame has no exchange_id column (its columns: {', '.join(names[:12])})",
            code="BAD_SOURCE",
            hint="pass a frame of executions (platform.export(...) then pl.scan_parquet(path)), "
            "or a list of exchange ids",
        )
    return lazy.select([n for n in _SOURCE_COLUMNS if n in names]).collect()


def _sources(sources: Any) -> list[_Source]:
    if isinstance(sources, str | Execution | Mapping):
        return [_source_of(sources)]
    if callable(getattr(sources, "collect", None)) and callable(getattr(sources, "collect_schema", None)):
        sources = _collected(sources)  # a polars LazyFrame
    if hasattr(sources, "to_dicts") and callable(sources.to_dicts):  # polars DataFrame
        return [_source_of(r) for r in sources.to_dicts()]
    if hasattr(sources, "to_dict") and hasattr(sources, "columns"):  # pandas DataFrame
        return [_source_of(r) for r in sources.to_dict("records")]
    if hasattr(sources, "to_dict") and callable(sources.to_dict):
        # A pandas Series: one row of an executions frame (frame.iloc[0]) is one source, not a
        # source per cell; a column of exchange ids (frame["exchange_id"]) is a list of them.
        row = sources.to_dict()
        if isinstance(row, Mapping) and ("exchange_id" in row or "exchangeId" in row):
            return [_source_of(row)]
    if hasattr(sources, "__aiter__") and not hasattr(sources, "__iter__"):
        raise ValidationError(
            "the sources are an async result (AsyncPlatform.executions)",
            code="BAD_SOURCE",
            hint="pass await history.to_pandas() (or a list of exchange ids) instead",
        )
    if not isinstance(sources, Iterable):
        # None, a number: ``for r in None`` was a bare TypeError.
        raise ValidationError(
            f"cannot replay {sources!r}: sources are a list or a frame",
            code="BAD_SOURCE",
            hint="pass exchange ids, Executions, rows of an executions frame, or the frame itself "
            '(platform.executions(environment="prod").to_pandas())',
        )
    return [_source_of(r) for r in sources]


def _unique_keys(keys: Iterable[str]) -> list[str]:
    """A key seen before gets ``#2``, ``#3``: the same variant twice runs twice."""
    seen: Counter[str] = Counter()
    out = []
    for key in keys:
        seen[key] += 1
        out.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return out


@dataclass(frozen=True)
class _CallSite:
    """Where the user called sweep()/regression(): warnings raised while the batch runs are
    shown there (:meth:`_Batch._warn`). The frame itself is not kept (it holds the caller's
    locals alive), only what ``warnings.warn`` would take from it."""

    filename: str
    lineno: int
    module: str
    globals: dict[str, Any]

    @classmethod
    def of(cls, frame: types.FrameType) -> _CallSite:
        # A coroutine run as a task (asyncio.run(asweep(...)), gather, create_task) has the
        # event loop's frames above it, not its caller's: the warning pointed at asyncio's
        # events.py. The first frame outside asyncio is the line that ran the loop.
        while (
            frame.f_back is not None and str(frame.f_globals.get("__name__", "")).split(".")[0] == "asyncio"
        ):
            frame = frame.f_back
        module = frame.f_globals.get("__name__", "<string>")
        return cls(frame.f_code.co_filename, frame.f_lineno, module, frame.f_globals)


class _Batch:
    """One sweep or regression: its jobs, the rows so far, and the coroutine that runs it."""

    def __init__(
        self,
        kind: str,
        platform: Any,
        *,
        reason: str,
        target_environment: str | None,
        concurrency: int,
        ignore: IgnoreSpec,
        calibrate: bool,
        results: str | os.PathLike[str] | None,
        progress: bool,
        outputs: Mapping[str, OutputSpec] | None,
        retry_errors: bool,
        caller: _CallSite | None = None,
    ) -> None:
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationError(
                "a batch needs a reason", code="VALIDATION", hint="pass reason='why you replay them'"
            )
        if not isinstance(concurrency, bool):
            # A whole number of another type (np.int64(4), counted with numpy) is that number:
            # it was refused as "concurrency must be an integer >= 1, not np.int64(4)".
            with contextlib.suppress(TypeError):
                concurrency = operator.index(concurrency)
        if (
            not isinstance(concurrency, int)
            or isinstance(concurrency, bool)
            or not 1 <= concurrency <= MAX_CONCURRENCY
        ):
            raise ValidationError(
                f"concurrency must be an integer from 1 to {MAX_CONCURRENCY}, not {concurrency!r}",
                code="VALIDATION",
                hint="the replays in flight at once: e.g. concurrency=8 (the default), 1 for one at a time",
            )
        if outputs is not None and not isinstance(outputs, Mapping):
            raise ValidationError(
                f"outputs must be a dict of names to paths, not {type(outputs).__name__}",
                code="VALIDATION",
                hint='e.g. outputs={"total": "body:$.total", "status": "headers:orderStatus"}',
            )
        outputs, output_types = _split_outputs(outputs)
        if outputs is not None:
            for name, spec in outputs.items():
                if not isinstance(name, str):
                    raise ValidationError(
                        f"output name {name!r} is not a string",
                        code="VALIDATION",
                        hint='name each output as its column: e.g. {"total": "body:$.total"}',
                    )
                if name in _NAMES:
                    raise ValidationError(
                        f"output name {name!r} is a fixed column", code="VALIDATION", hint="rename it"
                    )
                if not callable(spec) and not isinstance(spec, str):
                    raise ValidationError(
                        f"output {name!r}: {spec!r} is neither a path nor a function",
                        code="VALIDATION",
                        hint='give a path ("body:$.total", "headers:orderStatus", "status") or a '
                        "function of the replay's Execution",
                    )
                if not callable(spec):
                    parse_path(_output_text(spec))
        self.kind = kind
        self.platform = platform
        self.reason = reason
        self.target = target_environment
        self.concurrency = concurrency
        self.ignore = as_rules(ignore)
        self.calibrate = calibrate
        self.progress = progress
        self.outputs = outputs
        self.output_types = output_types
        self.retry_errors = retry_errors
        self.caller = caller
        self.file = _ResultsFile(results, kind) if results is not None else None
        self.jobs: list[_Job] = []
        self.done: dict[str, dict[str, Any]] = {}
        self.loaded = 0
        self.complete = False
        self.calibration: dict[str, Any] = {}
        self._rules: dict[str, list[NoiseRule]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._bar: Any = None
        self._bar_view: Any = None  # the bar widget's IPython DisplayHandle (make_bar)
        self._bar_thread: int | None = None
        self._requests: set[asyncio.Future[Any]] = set()
        self._counts: Counter[str] = Counter()
        self._pending: list[_Job] | None = None
        self._reach = _Reach(concurrency)  # rows in a row that could not reach the platform
        self._gone: dict[str, Any] | None = None  # the row that made the batch stop, if one did
        self._workers: list[asyncio.Task[None]] = []
        # Output paths found in some replay result, and where each other one found nothing
        # (_note_outputs): an output that matches nothing in any row is said once (_unmatched).
        self._outputs_found: set[str] = set()
        self._output_misses: dict[str, _Miss] = {}

    def _warn(self, message: str) -> None:
        """A UserWarning shown at the user's sweep()/regression() call. Raised while the batch
        runs, no stacklevel reaches it: the batch is a coroutine on an event loop, and inside a
        running loop (a Jupyter kernel) on a worker thread of its own, whose stack holds no
        frame of the caller's, so the warning pointed at a line of batch.py."""
        site = self.caller
        if site is None:
            warnings.warn(message, UserWarning, stacklevel=2)
            return
        warnings.warn_explicit(
            message,
            UserWarning,
            site.filename,
            site.lineno,
            module=site.module,
            registry=site.globals.setdefault("__warningregistry__", {}),
            module_globals=site.globals,
        )

    # ---------------------------------------------------------------- result

    def result(self) -> BatchResult:
        rows = [self.done[j.key] for j in self.jobs if j.key in self.done]
        return BatchResult(
            self.kind,
            rows,
            complete=self.complete,
            total=len(self.jobs),
            loaded=self.loaded,
            calibration=dict(self.calibration),
            results_path=self.file.path if self.file else None,
            output_names=tuple(self.outputs) if isinstance(self.outputs, Mapping) else (),
            output_types=dict(self.output_types),
        )

    def _take_loaded(self) -> list[_Job]:
        """Rows the results file has already: kept; the jobs left to run (worked out once)."""
        if self._pending is not None:
            return self._pending
        self._pending = pending = []
        for job in self.jobs:
            row = self.file.rows.get(job.key) if self.file else None
            if row is not None and not (self.retry_errors and row.get("verdict") == "ERROR"):
                self.done[job.key] = self._asked_outputs({**row, "index": job.index})
                self.loaded += 1
                self._counts[row.get("verdict")] += 1
            else:
                pending.append(job)
        self._earlier_reasons(pending)
        return pending

    def _earlier_reasons(self, pending: list[_Job]) -> None:
        """Warn when rows taken from the results file, or replays followed on resume, were
        requested under another ``reason=`` than this call's. They are kept (replaying them again
        would run each exchange twice, which a resume never does: section 4), so the audit log
        records them under the earlier reason; the rows run now are audited under the new one.
        A resume under a new reason reused them without a word (analyst walk), and a reader of
        the audit log found the old reason where the user expected the new one."""
        if self.file is None:
            return
        earlier: Counter[str] = Counter()
        for job in self.jobs:
            if job.key in self.done:
                reason = self.done[job.key].get("reason")
            elif job in pending and job.key in self.file.started:
                reason = self.file.started_reasons.get(job.key)  # followed, not requested again
            else:
                continue
            if isinstance(reason, str) and reason != self.reason:
                earlier[reason] += 1
        if not earlier:
            return
        (first, count), *others = earlier.most_common()
        more = sum(c for _, c in others)
        self._warn(
            f"{sum(earlier.values())} of the {len(self.jobs)} rows of {self.file.path.name} were replayed "
            f"under an earlier reason: {count} under {first!r}"
            + (
                f", {more} under {len(others)} other reason" + ("s" if len(others) > 1 else "")
                if others
                else ""
            )
            + f". They are kept, not replayed again, so the audit log has them under that reason, "
            f"not {self.reason!r} (the rows run now are audited under it). For every row under the "
            "new reason, run the batch with a new results= file."
        )

    def _asked_outputs(self, row: dict[str, Any]) -> dict[str, Any]:
        """A row from the results file with only the outputs this call asks for (``outputs=``).
        An output dropped on resume stayed a column of the frame, its values from the loaded
        rows and missing in the rows run now (release walk): the frame's outputs are the ones
        asked for, as for a batch run in one go. The file keeps the values until the row is
        written again (a later resume that asks for the output reads them back, if defined the
        same way, or else from the replay). With the default outputs (``outputs=None``), rows
        read with explicit ones are read again (:meth:`_complete_outputs`)."""
        if not isinstance(self.outputs, Mapping):
            return row
        for name in ("outputs", "output_definitions"):
            held = row.get(name)
            row[name] = {
                k: v for k, v in (held if isinstance(held, Mapping) else {}).items() if k in self.outputs
            }
        return row

    def _finish(self, row: dict[str, Any]) -> None:
        self.done[row["key"]] = row
        if self.file is not None:
            self.file.add_row(row)
        self._counts[row["verdict"]] += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({v: self._counts[v] for v in VERDICTS if self._counts[v]}, refresh=False)

    def make_bar(self) -> None:
        """The ``tqdm.auto`` progress bar (a widget in Jupyter). Made by the thread that calls
        the batch, so that a notebook shows it in the calling cell; updated from the loop."""
        from tqdm.auto import tqdm

        pending = self._take_loaded()
        widget = self.progress and _widget_bar(tqdm)
        # A text bar with nothing to run (a finished batch resumed) is shown once, when it
        # closes: shown as it was made too, it printed the same 100% line twice (analyst walk;
        # both lines stay in a log or a saved notebook's stream). run() lifts the delay to close.
        idle = {} if widget or pending else {"delay": math.inf}
        self._bar = tqdm(
            total=len(self.jobs),
            initial=self.loaded,
            desc=self.kind,
            unit="replay",
            disable=not self.progress,
            **({"display": False} if widget else {}),
            **idle,
        )
        if widget:
            # Shown here with a display id, so that the bar's text can be shown again when it
            # closes (_show_final_bar).
            from IPython.display import display

            self._bar_view = display(self._bar.container, display_id=True)
            self._bar.displayed = True
            self._bar_thread = threading.get_ident()

    def _show_final_bar(self) -> None:
        """Show the closed bar's final state in place of the bar's first one, as its text.

        A widget's state lives in the front end: a notebook run by papermill or nbconvert, or a
        live one read later as a file, on GitHub or exported to HTML, keeps the text the widget
        was first displayed with: ``0%|  | 0/40`` above a finished batch (release walk). An
        ``update_display_data`` of the same display id replaces that text in the saved output
        (nbclient applies it to the output in place) and shows the same widget again in a live
        front end. Sent from the thread that displayed the bar, whose cell it belongs to: the
        batch's worker thread (sync calls in a kernel) is not that thread, so _run_sync calls
        this again once the batch is over."""
        view = self._bar_view
        if view is None or self._bar_thread != threading.get_ident():
            return
        self._bar_view = None
        with contextlib.suppress(Exception):  # the bar is a nicety: it must not fail the batch
            view.update(self._bar.container)

    # ---------------------------------------------------------------- platform

    async def _resolve(self, ap: Any, source: _Source) -> None:
        """Fill in a source known only by its exchange id (a search: section 4), by the
        client's rule (:data:`~moat_nb.client.SOURCE_SEARCHES`): the recorded exchange, else
        the newest replay execution with that id. Searching recorded exchanges only made a
        replay's exchange id a NotFound row (fuzzing finding)."""
        if source.execution_id and source.route_id and source.status:
            return
        for where in SOURCE_SEARCHES:
            async for hit in ap.executions(exchange_id=source.exchange_id, limit=1, **where):
                source.execution_id = hit.execution_id
                source.route_id = hit.route_id
                source.status = hit.status
                source.environment = hit.environment
                return
        raise NotFound(
            f"no recorded exchange {source.exchange_id!r}",
            hint="check the id; platform.executions(...) searches the history",
        )

    async def _original(self, ap: Any, source: _Source) -> Execution:
        if source.full is not None:
            return source.full
        await self._resolve(ap, source)
        assert source.execution_id is not None
        return await ap.execution(source.execution_id)

    async def _execution(self, run: Any) -> Execution:
        """The replay's Execution once its trace has ended (``await run``: built from the trace
        events, ReplayRun._from_trace); raises the ``REPLAY_<STATUS>`` error when it ended
        without one."""
        run.cursor.watch = self._reader
        async for _ in run.aevents():
            pass
        return await run  # raises MoatError REPLAY_ERROR / _TIMED_OUT / _ABORTED

    async def _noise(self, ap: Any, job: _Job) -> list[NoiseRule]:
        """The calibrated rules of the job's route on its target (once per route)."""
        if not self.calibrate:
            return []
        source = job.source
        where = f"{source.route_id}@{self.target or source.environment}"
        if where in self._rules:
            return self._rules[where]
        lock = self._locks.setdefault(where, asyncio.Lock())
        async with lock:
            if where in self._rules:
                return self._rules[where]
            rules: list[NoiseRule] = []
            for pick in self._calibration_picks(ap, job):
                try:
                    runs = []
                    for _ in range(2):
                        run = await ap.replay(
                            pick.exchange_id,
                            reason=f"{self.reason} (noise calibration)",
                            target_environment=self.target,
                        )
                        runs.append(await self._execution(run))
                    rules = noise_rules_from(runs[0], runs[1])
                    self.calibration[where] = [str(r.path) for r in rules]
                    if self.file is not None and all(_storable(r) for r in rules):
                        self.file.add_calibration(where, rules)
                    break
                except (PermissionDenied, NotFound) as exc:
                    # That exchange may not be replayed by this user (or is gone): another row
                    # of the route may be. Without calibration every row of the route that
                    # differs only by timestamps comes out CHANGED.
                    self.calibration[where] = f"calibrating on {pick.exchange_id} failed: {exc}"
                except MoatError as exc:
                    self.calibration[where] = f"calibrating on {pick.exchange_id} failed: {exc}"
                    break
            self._rules[where] = rules
            return rules

    def _calibration_picks(self, ap: Any, job: _Job) -> list[_Source]:
        """The exchanges to calibrate ``job``'s route on, best first (at most 3 tried): the
        sources of that route and target in input order, ``COMPLETED`` ones first, leaving out
        those the user's permissions do not cover, which the platform would refuse (and audit);
        only when every one is such, the first, as before, so that the calibration says why it
        failed. A regression of prod and staging rows by an operator calibrated on the first
        prod row, was refused, and left every staging row without noise rules, hence CHANGED
        where it was the SAME (found by the release walk)."""
        source = job.source
        same_route = [
            j.source
            for j in self.jobs
            if j.error is None
            and j.source.route_id == source.route_id
            and (self.target or j.source.environment) == (self.target or source.environment)
        ]
        same_route.sort(key=lambda s: s.status != "COMPLETED")  # stable: input order kept
        candidates: list[_Source] = []
        for candidate in [*same_route, source]:
            if all(candidate.exchange_id != c.exchange_id for c in candidates):
                candidates.append(candidate)
        allowed = [c for c in candidates if self._may_run(ap, c) is not False]
        return allowed[:3] or candidates[:1]

    def _may_run(self, ap: Any, source: _Source) -> bool | None:
        """Whether the logged-in user's permissions cover an unmodified replay of ``source``
        (section 6); None when that cannot be told here (a token login, an unknown
        environment): the platform decides."""
        user = getattr(ap.session, "user", None) or {}
        permissions = set(user.get("permissions") or ())
        environment = source.environment or (source.full.environment if source.full else None)
        if not permissions or environment is None:
            return None
        return set(replay_permissions(environment, self.target, False)) <= permissions

    # ---------------------------------------------------------------- rows

    def _row(self, job: _Job) -> dict[str, Any]:
        s = job.source
        row: dict[str, Any] = {name: None for name in _NAMES}
        row.update(
            key=job.key,
            kind=self.kind,
            index=job.index,
            source_exchange_id=s.exchange_id,
            source_execution_id=s.execution_id,
            route_id=s.route_id,
            source_environment=s.environment,
            target_environment=self.target or s.environment,
            original_status=s.status,
            inputs=None if job.variant is None else json.dumps(_jsonable(job.variant), ensure_ascii=False),
            inputs_values=None if job.variant is None else {k: _jsonable(v) for k, v in job.variant.items()},
            outputs={},
            output_definitions={},
            # The reason the replay is audited under: a resume under another reason keeps this
            # row (and its audit events) as it is, and says so (_take_loaded).
            reason=self.reason,
        )
        return row

    async def _run_job(self, ap: Any, job: _Job) -> dict[str, Any]:
        started = time.perf_counter()
        row = self._row(job)
        run: Any = None
        try:
            if job.error is not None:
                raise job.error
            original = await self._original(ap, job.source)
            s = job.source
            s.execution_id, s.route_id, s.status = original.execution_id, original.route_id, original.status
            s.environment = original.environment
            row.update(self._row(job))
            rules = await self._noise(ap, job)
            resume = self.file.started.get(job.key) if self.file else None
            execution = None
            if resume is not None:  # requested before an interrupt: follow it, never request twice
                run = await ap.replay_run(resume)
                row["replay_id"] = run.replay_id
                try:
                    execution = await self._execution(run)
                except ReplayFailed:
                    # It ended without a result (ABORTED by a platform restart, ERROR, TIMED_OUT):
                    # nothing ran to follow, and retry_errors asks for rows with no result to
                    # run again (a row cut off by a lost platform came back as ABORTED forever).
                    if not self.retry_errors:
                        raise
            if execution is None:
                run = None  # a failed request below is this row's, not the followed replay's
                row["replay_id"] = None
                run = await self._request(ap, job, original)
                row["replay_id"] = run.replay_id
                execution = await self._execution(run)
            result = diff(original, execution, ignore=[*self.ignore, *rules])
            real = result.differences
            row.update(
                replay_status=run.status,
                result_status=execution.status,
                target_environment=execution.environment or row["target_environment"],
                differences=len(real),
                route_differences=sum(1 for r in real if r.cause == "route"),
                noise=len(result.rows) - len(real),
                first_divergence=_label(result),
                summary=result.summary(),
                result_execution_id=execution.execution_id,
                duration_ms=execution.duration_ms,
                outputs=_outputs(execution, self.outputs),
                output_definitions=_definitions(self.outputs),
            )
            self._note_outputs(execution)
            row["verdict"] = verdict(original.status, run.status, execution.status, result.same)
        except MoatError as exc:
            self._error(row, run, exc.code, exc.message + (f" — {exc.hint}" if exc.hint else ""))
        except Exception as exc:  # a batch of 1,000 rows must not die of one row: the row says why
            self._error(row, run, type(exc).__name__, f"{type(exc).__name__}: {exc}")
        row["elapsed_ms"] = (time.perf_counter() - started) * 1000
        return row

    async def _request(self, ap: Any, job: _Job, original: Execution) -> Any:
        """``POST /replays`` for the job. The request is shielded from cancellation and its
        replay id recorded when it answers, even if the batch was cancelled meanwhile: the
        platform runs a replay it accepted whatever the client does next (section 5), so a
        resumed batch must follow that replay instead of requesting another."""
        request = asyncio.ensure_future(
            ap.replay(original, reason=self.reason, target_environment=self.target, **job.replay_args)
        )
        self._requests.add(request)

        def record(done: asyncio.Future[Any]) -> None:
            self._requests.discard(done)
            if self.file is not None and not done.cancelled() and done.exception() is None:
                self.file.add_started(job.key, done.result().replay_id, self.reason)

        request.add_done_callback(record)
        return await asyncio.shield(request)

    @staticmethod
    def _error(row: dict[str, Any], run: Any, code: str, message: str) -> None:
        if run is not None:
            row["replay_status"] = run.status
            result = (run.replay or {}).get("result") or {}
            if result.get("errorMessage") and result["errorMessage"] not in message:
                message += f" ({result['errorMessage']})"
        row.update(verdict="ERROR", error_code=code, error=message, summary=f"ERROR [{code}] {message}")

    # ---------------------------------------------------------------- the run

    async def run(self) -> BatchResult:
        owned = None
        ap = self.platform
        if isinstance(ap, Platform | AsyncPlatform):
            # An AsyncClient of our own on this loop (one is bound to the loop that made it),
            # on the caller's session: the same user and tokens.
            ap = owned = AsyncPlatform(session=ap.session, retry=ap.retry, stream_policy=ap.stream_policy)
        pending = self._take_loaded()
        if self.file is not None and self.calibrate:
            # Calibrated before (and kept in the results file): the same rules, no new replays.
            # (With calibrate=False none apply, and none are reported: found by review.)
            for where, stored in self.file.calibrations.items():
                if where not in self._rules:
                    self._rules[where] = rules = [NoiseRule(**r) for r in stored]
                    self.calibration[where] = [str(r.path) for r in rules]
        try:
            if self._bar is None:
                self.make_bar()
            await self._prepare(ap, pending)
            await self._check_agents(ap, pending)
            # Opened once the batch is known to run: a batch refused above leaves the results
            # file as it was (not even made), with no record of rows that never ran.
            if self.file is not None:
                self.file.open()
            await self._complete_outputs(ap)
            queue = iter(pending)
            workers = self._workers

            async def worker() -> None:
                # A shared iterator: each job is taken once; none is taken once the batch stops.
                while self._gone is None and (job := next(queue, None)) is not None:
                    row = await self._run_job(ap, job)
                    self._finish(row)
                    if self._lost_platform(row):
                        for task in workers:  # rows still in flight: their replays go on (section 5)
                            if task is not asyncio.current_task():
                                task.cancel()

            async with asyncio.TaskGroup() as group:
                # A worker cancelled here is not an error of the group (TaskGroup ignores it).
                workers.extend(
                    group.create_task(worker()) for _ in range(min(self.concurrency, len(pending)))
                )
            if self._gone is not None:
                raise self._stopped(self._gone)
            self._unmatched()
            self.complete = True
        except asyncio.CancelledError:
            raise BatchCancelled(self.result()) from None
        finally:
            cancelled = False
            try:
                cancelled = await self._settle_requests()
            finally:
                if self._bar is not None:
                    if getattr(self._bar, "delay", 0) == math.inf:  # nothing ran (make_bar): shown once, here
                        self._bar.delay = 0
                    self._bar.close()
                    self._show_final_bar()
                if owned is not None:
                    await owned.aclose()
                if self.file is not None:
                    self.file.close()
            if cancelled:  # Ctrl-C while a stop (or the end) waited: as any other cancel
                raise BatchCancelled(self.result())
        return self.result()

    async def _complete_outputs(self, ap: Any) -> None:
        """Rows taken from the results file that lack an output this call asks for (``outputs=``
        added or renamed on resume), or hold it as defined differently (the same name, another
        path or function): read it from the row's replay execution, and append the completed row
        to the file so that the next resume has it. Without this the column was NaN for every
        such row, as if its replay had no value, and a redefined output kept the value read with
        its old definition, with no word (both found by the release walk). With the default
        outputs (``outputs=None``), a row read with explicit ones is read again with the
        defaults: its explicit outputs were columns no row run now has (release walk)."""
        if self.outputs is None:
            wanted: dict[str, Output] | None = None
            asked: dict[str, str | None] = {}
            # The defaults record no definitions: a row with some was read with explicit outputs.
            stale: list[tuple[dict[str, Any], set[str] | None]] = [
                (row, None) for row in self.done.values() if row.get("output_definitions")
            ]
        elif self.outputs:
            wanted = dict(self.outputs)
            asked = _definitions(wanted)

            def stale_names(row: dict[str, Any]) -> set[str]:
                have = row.get("outputs") or {}
                defined = row.get("output_definitions")
                defined = defined if isinstance(defined, Mapping) else {}
                return {
                    name
                    for name in asked
                    if name not in have or not _same_definition(defined.get(name), asked[name])
                }

            stale = [(row, names) for row in self.done.values() if (names := stale_names(row))]
        else:
            return
        slots = asyncio.Semaphore(self.concurrency)
        unread: list[str] = []

        async def fill(row: dict[str, Any], names: set[str] | None) -> None:
            # A value read with another definition goes first: if the replay cannot be read now,
            # the output is missing (and said so), never the old definition's value under the new.
            # (names None: every output goes, to be read with the defaults.)
            row["outputs"] = {
                k: v for k, v in (row.get("outputs") or {}).items() if names is not None and k not in names
            }
            defined = row.get("output_definitions")
            row["output_definitions"] = {
                k: v
                for k, v in (defined if isinstance(defined, Mapping) else {}).items()
                if names is not None and k not in names
            }
            if not row.get("result_execution_id"):
                return  # no replay result (an ERROR row): nothing to read, as when it ran
            try:
                async with slots:
                    execution = await ap.execution(row["result_execution_id"])
                values = _outputs(execution, None if wanted is None else {k: wanted[k] for k in names or ()})
            except Exception as exc:  # one row's output must not stop the batch: it stays missing
                unread.append(f"{row['source_exchange_id']}: {exc}")
                return
            self._note_outputs(execution, names)
            row["outputs"] = {**row["outputs"], **values}
            row["output_definitions"] = {**row["output_definitions"], **{k: asked[k] for k in names or ()}}
            if self.file is not None:
                self.file.add_row(row)

        await asyncio.gather(*(fill(row, names) for row, names in stale))
        if unread:
            self._warn(
                f"{len(unread)} rows from the results file lack outputs asked for now (or hold them "
                "as defined before), and they could not be read from their replays (the first: "
                f"{unread[0]}); they are missing in the frame",
            )

    def _note_outputs(self, execution: Execution, names: Set[str] | None = None) -> None:
        """Note which output paths (``outputs=``, all or ``names``) ``execution``'s result has,
        and where the others found nothing (the keys there, for :meth:`_unmatched`)."""
        if not isinstance(self.outputs, Mapping):
            return
        for name, spec in self.outputs.items():
            if (
                not isinstance(spec, str)
                or name in self._outputs_found
                or (names is not None and name not in names)
            ):
                continue
            miss = _lookup(execution, spec)[1]
            if miss is None:
                self._outputs_found.add(name)
                self._output_misses.pop(name, None)
            elif name not in self._output_misses:
                self._output_misses[name] = miss
            elif self._output_misses[name][:2] == miss[:2]:  # the same place: the keys seen there
                at, step, keys = miss
                self._output_misses[name] = (at, step, self._output_misses[name][2] | keys)

    def _unmatched(self) -> None:
        """Warn once per output path that matched nothing in any replay read: ``body:$.totl``
        gave an all-null column without a word (analyst walk), as if every replay had no total.
        Names a path one step away whose key is spelled alike, from the keys the results had."""
        assert isinstance(self.outputs, Mapping) or not self._output_misses
        for name, miss in self._output_misses.items():
            if name in self._outputs_found or any(
                (r.get("outputs") or {}).get(name) is not None for r in self.done.values()
            ):
                continue  # a row from the results file had a value: the path matches there
            spec = self.outputs[name] if isinstance(self.outputs, Mapping) else name
            path = _output_text(str(spec))
            near = _near_path(miss)
            self._warn(
                f"output {name!r}: {path!r} matches nothing in any replay's result, so its column is "
                "empty (null)"
                + (f"; did you mean {near!r}?" if near else "")
                + (f" (the path {spec!r} is {path!r} in diff syntax)" if spec != path else "")
            )

    async def _settle_requests(self) -> bool:
        """Wait for the ``POST /replays`` still on their way, so that each accepted replay's id
        reaches the results file (the platform runs it whatever the client does next), even when
        the wait is cancelled (a Ctrl-C during a stop): shielded, and waited for again. Returns
        whether it was cancelled meanwhile."""
        cancelled = False
        while self._requests:
            try:
                await asyncio.shield(asyncio.gather(*self._requests, return_exceptions=True))
            except asyncio.CancelledError:
                cancelled = True
        return cancelled

    def _lost_platform(self, row: dict[str, Any]) -> bool:
        """True once as many rows in a row as run side by side (3 at least) could not reach the
        platform with the client's retries spent: it is down, and every row left would spend
        those retries too (1.4 s each to fail, a stream reader up to minutes)."""
        lost = self._reach.lost(row.get("error_code") if row["verdict"] == "ERROR" else None)
        if lost and self._gone is None:
            self._gone = row
            return True
        return False

    def _reader(self, cause: BaseException | str | None) -> None:
        """A trace reader connected (None) or dropped (:attr:`TraceCursor.watch`): once readers
        have not reached the platform for long enough (:class:`_Reach`), the batch stops as it
        does for rows, cutting off the rows in flight (their replays go on, section 5)."""
        if not self._reach.dropped(cause, time.monotonic()) or self._gone is not None:
            return
        reach = self._reach
        waited = time.monotonic() - (reach.since or 0.0)
        self._gone = {
            "error": f"{cause}" or type(cause).__name__,
            "error_code": "TRANSPORT",
            "why": f"the trace readers of the rows in flight could not reach the platform for {waited:.0f} s "
            f"({reach.drops} reconnects in a row failed)",
        }
        for task in self._workers:  # this reader's task too: it stops at its next await
            task.cancel()

    def _stopped(self, row: dict[str, Any]) -> BatchStopped:
        result = self.result()
        why = row.get("why") or f"{self._reach.count} rows in a row could not reach the platform"
        text = (
            f"{self.kind} stopped after {len(result.rows)} of {result.total} rows: {why} "
            f"(the last: {row['error']})"
        )
        if result.results_path is not None:
            hint = (
                f"the rows are in {result.results_path}: when the platform answers again, run the same "
                "call with results= that file; it runs the rest"
                + (
                    " and the rows that ended ERROR"
                    if self.retry_errors
                    else " (with retry_errors=True also the rows that could not reach it)"
                )
            )
        else:
            hint = (
                "when the platform answers again, run it again; pass results='runs.jsonl' to resume instead"
            )
        return BatchStopped(
            text,
            result=result,
            hint=hint,
            details={"rows": len(result.rows), "total": result.total, "errorCode": row.get("error_code")},
        )

    async def _prepare(self, ap: Any, pending: list[_Job]) -> None:
        """Before any replay: look up the sources known only by id (bounded), and for a sweep
        fetch the original once and apply every variant to it (a bad one fails the sweep)."""
        slots = asyncio.Semaphore(self.concurrency)
        reach = _Reach(self.concurrency)
        lost: MoatError | None = None

        async def resolve(job: _Job) -> None:
            nonlocal lost
            async with slots:
                if lost is not None:  # the platform is gone: each row fails at once, and stops the batch
                    job.error = lost
                    return
                try:
                    await self._resolve(ap, job.source)
                    reach.lost(None)
                except MoatError as exc:
                    job.error = exc
                    # The rows' rule (_Reach): without it, 1,000 ids each spent the client's
                    # retries here (~175 s at concurrency 8) before the first row (review finding).
                    if reach.lost(exc.code):
                        lost = exc

        unique = {id(j.source): j for j in pending if j.source.full is None}
        await asyncio.gather(*(resolve(j) for j in unique.values()))
        for job in pending:  # a source shared by several jobs (a sweep) shares its outcome
            job.error = job.error or unique.get(id(job.source), job).error
        if self.kind == "sweep" and pending:
            source = pending[0].source
            if pending[0].error is not None:
                raise pending[0].error
            original = await self._original(ap, source)
            for job in self.jobs:
                job.source.full = original
            redacted = [
                k for k, v in original.start_payload.headers.items() if is_secret_name(k) and is_redacted(v)
            ]
            for job in pending:
                assert job.variant is not None
                job.replay_args = variant_payload(original, job.variant)
                if "headers" in job.replay_args and redacted:
                    self._warn(
                        f"variants edit the headers, which are sent whole (section 3), and "
                        f"{', '.join(redacted)} holds the platform's redaction marker: the replay runs "
                        "with the marker, not the secret. Set the real value in the variant if the route "
                        "needs it.",
                    )
                    redacted = []
        refused = self._none_may_run(ap, pending)
        if refused is not None:
            raise refused

    async def _check_agents(self, ap: Any, pending: list[_Job]) -> None:
        """Refuse the batch before its first row when no agent is LIVE in the environment its
        rows replay on (``GET /agents``, as the compliance command checks before a kernel starts):
        a mistyped ``target_environment='stagin'``, or one whose agent is down, sent every row
        (and the calibration) to be refused, and ended with every row ERROR (analyst walk).
        Raises :class:`~moat_nb.errors.AgentUnavailable` (``AGENT_UNAVAILABLE``, the platform's
        own code for it) with ``details.liveEnvironments``, as the platform names them. When the
        agents cannot be listed (an older platform, a network failure: the rows find out), the
        platform decides row by row, as before."""

        def target(job: _Job) -> str | None:
            full = job.source.full
            return self.target or job.source.environment or (full.environment if full else None)

        wanted = {env for job in pending if job.error is None and (env := target(job))}
        agents = getattr(ap, "agents", None)
        if not wanted or not callable(agents):
            return
        try:
            listed = await agents()
        except MoatError:
            return
        if not isinstance(listed, list):
            return
        live = sorted(
            {
                str(a.get("environmentId"))
                for a in listed
                if isinstance(a, Mapping) and a.get("status") == "LIVE" and a.get("environmentId")
            }
        )
        missing = sorted(wanted - set(live))
        if not missing:
            return
        rows = sum(1 for j in pending if target(j) in missing)
        where = ", ".join(repr(m) for m in missing)
        raise AgentUnavailable(
            f"no LIVE agent runs environment {where}: none of the {rows} rows of this {self.kind} "
            "could run there, so none was sent",
            hint=(
                f"environments with a LIVE agent: {', '.join(live) or 'none'} — "
                + ("check target_environment=, or " if self.target else "")
                + "start the environment's agent and run the same call again"
            ),
            details={"environments": missing, "liveEnvironments": live, "rows": rows},
        )

    def _none_may_run(self, ap: Any, pending: list[_Job]) -> PermissionDenied | None:
        """A refusal when the user may run none of the rows (their permissions, known from a
        password login, lack what each row needs: section 6): a regression of prod history
        by an OPERATOR sent every row to be refused, each refusal an audit event, and ended
        with every row ERROR. None when any row may run, or whatever cannot be told here."""
        user = getattr(ap.session, "user", None) or {}
        permissions = set(user.get("permissions") or ())
        if not permissions or not pending:
            return None  # a token: the platform decides row by row
        lacking: set[str] = set()
        for job in pending:
            environment = job.source.environment or (job.source.full.environment if job.source.full else None)
            if job.error is not None or environment is None:
                return None
            missing = set(replay_permissions(environment, self.target, bool(job.replay_args))) - permissions
            if not missing:
                return None
            lacking |= missing
        names = ", ".join(sorted(lacking))
        return PermissionDenied(
            f"{user.get('username')} may run none of the {len(pending)} rows of this {self.kind}: "
            f"each needs {names}, which the user lacks",
            hint="run it as a user who has "
            + names
            + (
                " (replay:prod is granted to a user explicitly: prod-operator on the sandbox)"
                if "replay:prod" in lacking
                else ""
            ),
            details={"missing": sorted(lacking), "rows": len(pending)},
        )


def _widget_bar(bar: type) -> bool:
    """Whether ``tqdm.auto`` chose the Jupyter widget bar (any IPython kernel with ipywidgets:
    a live JupyterLab, papermill and nbconvert alike; tqdm.autonotebook cannot tell them
    apart, and neither can the kernel)."""
    try:
        from tqdm.notebook import tqdm_notebook
    except ImportError:  # no IPython: never the widget
        return False
    return issubclass(bar, tqdm_notebook)


def _output_text(spec: str) -> str:
    for part in ("body", "headers", "properties"):
        if spec.startswith(part + ".") or spec.startswith(part + "["):
            rest = spec[len(part) :]
            return "body:$" + rest if part == "body" else part + ":" + (rest[1:] if rest[0] == "." else rest)
    return spec


def _run_sync(batch: _Batch) -> BatchResult:
    """Run the batch's coroutine from sync code, here or, inside a running loop, on a worker
    thread with its own loop (module docstring); Ctrl-C becomes :class:`BatchInterrupted`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            # asyncio.run turns Ctrl-C into cancelling the task (Python 3.11 asyncio.Runner), so
            # the batch stops between awaits and re-raises KeyboardInterrupt when it has.
            return asyncio.run(batch.run())
        except (KeyboardInterrupt, BatchCancelled):
            raise BatchInterrupted(batch.result()) from None
    box: dict[str, Any] = {}
    ready = threading.Event()
    # Set by the worker as its last act. Waited for instead of Thread.join: on CPython 3.11 a
    # KeyboardInterrupt that lands in join() marks a thread that is still running as stopped
    # (Thread._wait_for_tstate_lock releases the live thread's lock, bpo-45274's handler), so
    # the next join() returned at once and the partial result missed rows still finishing.
    finished = threading.Event()

    def target() -> None:
        loop = asyncio.new_event_loop()
        try:
            box["task"] = task = loop.create_task(batch.run())
            box["loop"] = loop
            ready.set()
            box["result"] = loop.run_until_complete(task)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc
        finally:
            ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            finished.set()

    batch.make_bar()
    thread = threading.Thread(target=target, name=f"moat-{batch.kind}", daemon=True)
    thread.start()
    try:
        while not finished.wait(0.1):  # short waits: a KeyboardInterrupt reaches this thread between them
            pass
    except KeyboardInterrupt:
        ready.wait()
        if "loop" in box and not box["loop"].is_closed():
            box["loop"].call_soon_threadsafe(box["task"].cancel)
        finished.wait()
        batch._show_final_bar()
        raise BatchInterrupted(batch.result()) from None
    batch._show_final_bar()  # the bar closed on the worker thread: shown from the caller's
    if "error" in box:
        if isinstance(box["error"], asyncio.CancelledError):
            raise BatchInterrupted(batch.result()) from None
        raise box["error"]
    return box["result"]


# --------------------------------------------------------------------------- public API


def _sweep_batch(
    platform: Any,
    source: Any,
    variants: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
    kw: dict[str, Any],
) -> _Batch:
    if isinstance(variants, Mapping) and not variants:
        # grid({}) would be one empty variant: a replay of the original, not a sweep.
        raise ValidationError(
            "no variants to sweep: the grid has no axes",
            code="BAD_VARIANT",
            hint='give at least one axis, e.g. {"body.lines[0].qty": [1, 5]}; [{}] replays the original once',
        )
    if not isinstance(variants, Iterable) or isinstance(variants, str | bytes):
        raise ValidationError(
            f"variants must be a list of dicts or a grid, not {type(variants).__name__}",
            code="BAD_VARIANT",
            hint='e.g. [{"body.lines[0].qty": 5}] or {"body.lines[0].qty": [1, 5, 50]}',
        )
    items = grid(variants) if isinstance(variants, Mapping) else list(variants)
    if not items:
        raise ValidationError(
            "no variants to sweep", code="BAD_VARIANT", hint="pass a list of variants or a grid"
        )
    for item in items:
        if not isinstance(item, Mapping):
            raise ValidationError(
                f"a variant must be a dict of input paths to values, not {type(item).__name__}",
                code="BAD_VARIANT",
                hint='e.g. [{"body.lines[0].qty": 5}, {"headers.channel": "store"}]',
            )
        for path, value in item.items():
            _input_path(path)
            _plain(value, path)  # NaN, a date ...: refused here, before a key or a replay
    # The variants as the plain values the replays send: a numpy scalar kept as it was keyed
    # the row over its str() (np.int64(5) and 5 were two rows, and a resume missed one) and
    # showed as text in the frame's input column and in ``inputs``.
    items = [{path: _plain(value, path) for path, value in item.items()} for item in items]
    batch = _Batch("sweep", platform, **kw)
    if hasattr(source, "columns") and hasattr(source, "shape"):
        # _source_of's hint offers "the frame itself", which regression takes and sweep does not
        # (analyst walk: a polars `df.filter(...)` of one row, or `df.head(1)`).
        raise ValidationError(
            f"sweep replays one source, not a {type(source).__name__} of {source.shape[0]} "
            + ("row" if source.shape[0] == 1 else "rows"),
            code="BAD_SOURCE",
            hint="pass one row of the frame: frame.iloc[0] (pandas) or frame.row(0, named=True) "
            "(polars); to replay every row of a frame as it is, use regression(p, frame, ...)",
        )
    src = _source_of(source)
    keys = _unique_keys(row_key("sweep", src.exchange_id, batch.target, dict(v)) for v in items)
    batch.jobs = [_Job(i, k, src, dict(v)) for i, (k, v) in enumerate(zip(keys, items, strict=True))]
    return batch


def _regression_batch(platform: Any, sources: Any, target_environment: str, kw: dict[str, Any]) -> _Batch:
    if not isinstance(target_environment, str) or not target_environment:
        raise ValidationError(
            "regression needs a target_environment",
            code="VALIDATION",
            hint="e.g. target_environment='staging'",
        )
    batch = _Batch("regression", platform, target_environment=target_environment, **kw)
    refs = _sources(sources)
    # Each exchange once: a source given twice (two searches concatenated, an id pasted twice)
    # was replayed twice, audited twice, and counted twice in the verdicts, which then
    # overstated what changed (release walk). A sweep repeats a variant given twice on purpose;
    # the same exchange on the same target has nothing new to say here.
    first: dict[str, int] = {}
    for i, s in enumerate(refs):
        first.setdefault(s.exchange_id, i)
    kept = [(i, s) for i, s in enumerate(refs) if first[s.exchange_id] == i]
    if len(kept) < len(refs):
        repeated = next(s.exchange_id for i, s in enumerate(refs) if first[s.exchange_id] != i)
        warnings.warn(
            f"{len(refs) - len(kept)} of the {len(refs)} sources repeat an exchange given before "
            f"(the first: {repeated}): each exchange is replayed once, as the row of its first "
            "place in the input (index)",
            stacklevel=3,
        )
    keys = [row_key("regression", s.exchange_id, target_environment) for _, s in kept]
    batch.jobs = [_Job(i, k, s) for (i, s), k in zip(kept, keys, strict=True)]
    return batch


def sweep(
    platform: Platform | AsyncPlatform,
    source: Any,
    variants: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
    *,
    reason: str,
    target_environment: str | None = None,
    concurrency: int = 8,
    ignore: IgnoreSpec = None,
    results: str | os.PathLike[str] | None = None,
    progress: bool = True,
    outputs: Mapping[str, OutputSpec] | None = None,
    calibrate: bool = True,
    retry_errors: bool = True,
) -> BatchResult:
    """Replay ``source`` (an exchange id, an Execution or a frame row) once per variant and
    return one row per variant (module docstring: variants, verdicts, columns).

    ``variants``: a list of ``{input path: value}`` dicts, or a grid ``{path: [values]}``.
    ``outputs``: ``{name: path or callable(Execution)}`` read from each replay's result, e.g.
    ``{"total": "body:$.total", "status": "headers:orderStatus"}`` (a path in diff syntax, as
    ``ignore=`` takes it; the input paths' dotted spelling, ``body.total``, is the same path; one
    that matches nothing in any replay's result is warned about), or ``{name: (path or
    callable, type)}`` to declare the column's type (``("body:$.total", pl.Float64)``, a polars
    dtype or a pyarrow type; ``BAD_OUTPUT_TYPE`` for another, or for a value that does not cast
    to it when the frame is made); default: the top-level scalar fields of a JSON object result
    body (README "Batch replays": ``status`` there is the body's, not ``result_status``).
    ``ignore``: extra noise rules (as :func:`moat_nb.diff.diff` takes). ``results``: a JSON-lines
    file to append rows to and resume from.
    Raises :class:`BatchInterrupted` on Ctrl-C, with the finished rows.
    """
    kw = _common(
        reason, target_environment, concurrency, ignore, calibrate, results, progress, outputs, retry_errors
    )
    return _run_sync(_sweep_batch(platform, source, variants, kw))


async def asweep(
    platform: Any,
    source: Any,
    variants: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
    *,
    reason: str,
    target_environment: str | None = None,
    concurrency: int = 8,
    ignore: IgnoreSpec = None,
    results: str | os.PathLike[str] | None = None,
    progress: bool = True,
    outputs: Mapping[str, OutputSpec] | None = None,
    calibrate: bool = True,
    retry_errors: bool = True,
) -> BatchResult:
    """:func:`sweep` as a coroutine (``await asweep(...)`` in a notebook cell). ``platform``:
    a Platform or AsyncPlatform (the batch opens its own AsyncClient on their session), or an
    object with AsyncPlatform's methods, used as it is. Cancelling it raises
    :class:`BatchCancelled` with the finished rows."""
    kw = _common(
        reason, target_environment, concurrency, ignore, calibrate, results, progress, outputs, retry_errors
    )
    return await _sweep_batch(platform, source, variants, kw).run()


def regression(
    platform: Platform | AsyncPlatform,
    sources: Any,
    target_environment: str,
    ignore: IgnoreSpec = None,
    *,
    reason: str,
    calibrate: bool = True,
    concurrency: int = 8,
    results: str | os.PathLike[str] | None = None,
    progress: bool = True,
    outputs: Mapping[str, OutputSpec] | None = None,
    retry_errors: bool = True,
) -> BatchResult:
    """Replay known-good exchanges on ``target_environment`` and give each a verdict (``SAME``,
    ``CHANGED``, ``FAILED``, ``ERROR``) with the diff summary, noise calibrated once per route.

    ``sources``: exchange ids, Executions, rows of an executions frame, or the frame itself
    (pandas or polars, e.g. ``platform.executions(environment="prod", since="7d")``; a polars
    LazyFrame, ``pl.scan_parquet(export).filter(...)``, is collected). Replaying prod data
    needs ``replay:prod`` (section 6); a refused row is an ``ERROR`` with the message.
    ``outputs``: as for :func:`sweep` (default: none). Raises :class:`BatchInterrupted` on Ctrl-C.
    """
    kw = _common(reason, None, concurrency, ignore, calibrate, results, progress, outputs or {}, retry_errors)
    del kw["target_environment"]
    return _run_sync(_regression_batch(platform, sources, target_environment, kw))


async def aregression(
    platform: Any,
    sources: Any,
    target_environment: str,
    ignore: IgnoreSpec = None,
    *,
    reason: str,
    calibrate: bool = True,
    concurrency: int = 8,
    results: str | os.PathLike[str] | None = None,
    progress: bool = True,
    outputs: Mapping[str, OutputSpec] | None = None,
    retry_errors: bool = True,
) -> BatchResult:
    """:func:`regression` as a coroutine; cancelling it raises :class:`BatchCancelled`."""
    kw = _common(reason, None, concurrency, ignore, calibrate, results, progress, outputs or {}, retry_errors)
    del kw["target_environment"]
    return await _regression_batch(platform, sources, target_environment, kw).run()


def _common(
    reason: str,
    target_environment: str | None,
    concurrency: int,
    ignore: IgnoreSpec,
    calibrate: bool,
    results: str | os.PathLike[str] | None,
    progress: bool,
    outputs: Mapping[str, OutputSpec] | None,
    retry_errors: bool,
) -> dict[str, Any]:
    """The batch's arguments, with the user's call site: _common is called by sweep, asweep,
    regression and aregression themselves, so the frame two up is their caller's (for an
    ``await asweep(...)``, the awaiting coroutine's)."""
    return {
        "caller": _CallSite.of(sys._getframe(2)),
        "reason": reason,
        "target_environment": target_environment,
        "concurrency": concurrency,
        "ignore": ignore,
        "calibrate": calibrate,
        "results": results,
        "progress": progress,
        "outputs": outputs,
        "retry_errors": retry_errors,
    }
