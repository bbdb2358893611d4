"""P4 (DESIGN.md section 11): diff of two 200-processor executions with 50 KB JSON bodies.

Baseline: one :class:`deepdiff.DeepDiff` over the two whole documents — each execution written
as one JSON document ``{"<routeId>/<processorId>/<iteration>": {status, body (parsed), headers,
properties}}`` with its ``(start)`` and ``(end)`` — including the ``json.loads`` of every body.
Measured: :func:`moat_nb.diff.diff` over the two :class:`~moat_nb.model.Execution` objects. The
row reports the ratio (target >= 10) and whether both found the same differences
(:func:`deepdiff_findings` vs :func:`diff_findings`: same processor, field, path and kind).

The scenario is a realistic regression replay: every processor changes the order a little (so
no two bodies along a trace are the same text), the replay matches the original up to the
pricing step at 60 % of the route, where one line total differs; from there on every body
differs in that one place. A timestamp header differs at every processor (noise).
Inputs are made before timing.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterable
from typing import Any

from deepdiff import DeepDiff

from moat_nb.diff import END, START, DiffResult, DiffRow, diff
from moat_nb.model import Execution, ProcessorRecord
from moat_nb.noise import format_name, format_segments

_KIND = {
    "values_changed": "changed",
    "type_changes": "type_changed",
    "dictionary_item_added": "added",
    "iterable_item_added": "added",
    "dictionary_item_removed": "removed",
    "iterable_item_removed": "removed",
}

Finding = tuple[str, str, str, str]  # processor key, field, path, kind


# --------------------------------------------------------------------------- the baseline


def whole_document(execution: Execution) -> dict[str, Any]:
    """An execution as one JSON document, keyed by the alignment key of each processor."""

    def body(text: str | None) -> Any:
        if text is not None and text.lstrip()[:1] in ("{", "["):
            return json.loads(text)
        return text

    doc: dict[str, Any] = {
        f"{execution.route_id}/{START}/0": {
            "body": body(execution.input_body),
            "headers": dict(execution.input_headers or {}),
            "properties": dict(execution.input_properties or {}),
        }
    }
    for p in execution.processors or ():
        doc[f"{p.route_id}/{p.processor_id}/{p.iteration}"] = {
            "status": p.status,
            "body": body(p.output_body),
            "headers": dict(p.output_headers or {}),
            "properties": dict(p.properties or {}),
        }
    doc[f"{execution.route_id}/{END}/0"] = {
        "status": execution.status,
        "body": body(execution.output_body),
        "headers": dict(execution.output_headers or {}),
        "properties": dict(execution.output_properties or {}),
    }
    return doc


def deepdiff_findings(a: dict[str, Any], b: dict[str, Any]) -> set[Finding]:
    """What one DeepDiff over two :func:`whole_document` results finds, in diff-path syntax."""
    out: set[Finding] = set()
    for report, levels in DeepDiff(a, b, view="tree").items():
        kind = _KIND.get(report)
        assert kind is not None, f"unexpected DeepDiff report {report}"
        for level in levels:
            key, fld, *rest = level.path(output_format="list")
            if fld == "body":
                path = "body:$" + format_segments(rest)
            elif fld in ("headers", "properties"):
                path = f"{fld}:{format_name(rest[0])}" + format_segments(rest[1:])
            else:
                path = fld
            out.add((key, fld, path, kind))
    return out


def diff_findings(result: DiffResult) -> set[Finding]:
    """The same view of a :class:`~moat_nb.diff.DiffResult` (noise included: it is a finding)."""
    return {_finding(r) for r in result.rows}


def _finding(r: DiffRow) -> Finding:
    return (
        f"{r.processor.route_id}/{r.processor.processor_id}/{r.processor.iteration}",
        r.field,
        r.path,
        r.kind,
    )


def deepdiff_blind_spots(result: DiffResult) -> set[Finding]:
    """Findings one DeepDiff may not make: list items equal in Python but not in JSON (1, 1.0,
    true). DeepDiff takes two lists that are equal in Python (``[1] == [1.0]``) as the same and
    looks no further; the diff reports the item as ``type_changed`` (tests/test_diff.py). "Same
    findings" (P4): every DeepDiff finding is the diff's, and the diff adds only such rows."""
    return {
        _finding(r)
        for r in result.rows
        if r.kind == "type_changed" and _LIST_ITEM.search(r.path) and r.original == r.replay
    }


_LIST_ITEM = re.compile(r"\[\d+\]$")  # a path ending at a list index (a key would be quoted)


# --------------------------------------------------------------------------- the scenario


def _order(rng: random.Random, target_bytes: int) -> dict[str, Any]:
    lines = []
    order: dict[str, Any] = {
        "orderId": "ORD-000042",
        "customer": {"id": "C-1005", "name": "Elbe Kontor AG", "tier": "silver", "region": "EU"},
        "currency": "EUR",
        "lines": lines,
        "audit": {},
    }
    while len(json.dumps(order)) < target_bytes:
        n = len(lines)
        lines.append(
            {
                "lineNo": n + 1,
                "sku": f"SKU-{100 + n % 900:03d}",
                "qty": rng.randint(1, 9),
                "unitPrice": round(rng.uniform(1, 300), 2),
                "lineTotal": 0.0,
                "attributes": {"colour": rng.choice(["red", "blue", "black"]), "size": rng.choice("SML")},
                "tags": ["stock", "eu"],
            }
        )
    return order


def executions(processors: int = 200, body_bytes: int = 50_000, seed: int = 4) -> tuple[Execution, Execution]:
    """The original and the replay of the scenario in the module docstring."""
    rng = random.Random(seed)
    base = _order(rng, body_bytes)
    diverge_at = int(processors * 0.6)
    target_line = len(base["lines"]) // 2
    sides = []
    for side in ("original", "replay"):
        order = json.loads(json.dumps(base))
        records = []
        headers = {"Content-Type": "application/json", "orderId": "ORD-000042", "channel": "web"}
        properties = {"tenant": "acme-eu", "customerTier": "silver"}
        input_body = json.dumps(order)
        for i in range(1, processors + 1):
            before_body = json.dumps(order)
            before_headers, before_props = dict(headers), dict(properties)
            order["audit"][f"step{i}"] = i  # every processor leaves a mark: bodies never repeat
            if i == diverge_at:
                total = 19.98 if side == "original" else 19.99  # v1's truncation vs v2's rounding
                order["lines"][target_line]["lineTotal"] = total
            headers["processedAt"] = f"2026-01-01T00:00:{i % 60:02d}.{(1 if side == 'original' else 2):03d}Z"
            properties["step"] = i
            records.append(
                ProcessorRecord(
                    execution_id=f"E-{side}",
                    exchange_id=f"ID-bench-{side}-1-1",
                    seq=i,
                    processor_id=f"step-{i}",
                    processor_type="bean",
                    route_id="order-intake",
                    status="COMPLETED",
                    input_body=before_body,
                    output_body=json.dumps(order),
                    input_headers=before_headers,
                    output_headers=dict(headers),
                    input_properties=before_props,
                    properties=dict(properties),
                )
            )
        sides.append(
            Execution(
                execution_id=f"E-{side}",
                exchange_id=f"ID-bench-{side}-1-1",
                route_id="order-intake",
                status="COMPLETED",
                input_body=input_body,
                output_body=records[-1].output_body,
                input_headers={"Content-Type": "application/json", "orderId": "ORD-000042", "channel": "web"},
                output_headers=dict(headers),
                input_properties={"tenant": "acme-eu", "customerTier": "silver"},
                output_properties=dict(properties),
                processors=tuple(records),
                processor_count=len(records),
            )
        )
    return sides[0], sides[1]


def _best(fn: Any, repeat: int) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - started)
    return best, value


def run(quick: bool) -> list[dict]:
    processors, body_bytes = (20, 5_000) if quick else (200, 50_000)
    original, replay = executions(processors, body_bytes)

    def baseline() -> set[Finding]:
        return deepdiff_findings(whole_document(original), whole_document(replay))

    ours_s, result = _best(lambda: diff(original, replay), 3)
    base_s, expected = _best(baseline, 1)
    found = diff_findings(result)
    beyond = (found - expected) & deepdiff_blind_spots(result)
    same = expected <= found and found - expected == beyond
    return [
        {
            "id": "P4",
            "what": f"diff {processors} processors x {body_bytes // 1000} KB JSON vs one DeepDiff",
            "value": ours_s * 1000.0,
            "unit": "ms",
            "baseline": base_s * 1000.0,
            "ratio": base_s / ours_s,
            "target": ">=10",
            "same_findings": same,
            "findings": len(found),
            "beyond_deepdiff": len(beyond),
            "missing": sorted(map(str, expected - found))[:5],
            "extra": sorted(map(str, found - expected - beyond))[:5],
        }
    ]


def _main(argv: Iterable[str] | None = None) -> None:  # pragma: no cover - manual use
    for row in run(quick=False):
        print(json.dumps(row, indent=2))


if __name__ == "__main__":  # pragma: no cover
    _main()
