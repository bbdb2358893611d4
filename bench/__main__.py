"""``python -m bench [--quick] [--only NAME]``: run the benchmarks, print a table, write results."""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

MODULES = [
    "bench_engine",
    "bench_replay",
    "bench_diff",
    "bench_client",
    "bench_batch",
    "bench_report",
    "bench_audit",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small sizes: proves they run")
    parser.add_argument("--only", action="append", help="run only these modules")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args(argv)
    rows: list[dict] = []
    for name in args.only or MODULES:
        module = importlib.import_module(f"bench.{name}")
        started = time.perf_counter()
        rows.extend({**row, "module": name} for row in module.run(quick=args.quick))
        print(f"# {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    print(f"{'id':<5} {'what':<58} {'value':>12} {'unit':<12} {'ratio':>7} {'target':<10}")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else ""
        print(
            f"{r['id']:<5} {r['what'][:58]:<58} {r['value']:>12.1f} {r['unit']:<12} "
            f"{ratio:>7} {r.get('target', ''):<10}"
        )
    if args.only:
        # A partial run replaces its own modules' rows and keeps the others' (the README's
        # figures come from this file; a partial run must not drop the rest).
        rows = _merged(Path(args.out), rows, {r.get("module") for r in rows}, args.quick)
    result = {
        "quick": args.quick,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _merged(out: Path, rows: list[dict], modules: set[str | None], quick: bool) -> list[dict]:
    """The rows of an earlier run in ``out`` (same size) of the modules not run now, then ``rows``."""
    try:
        earlier = json.loads(out.read_text())
    except (OSError, ValueError):
        return rows
    if not isinstance(earlier, dict) or earlier.get("quick") != quick:
        return rows
    kept = [r for r in earlier.get("rows", []) if isinstance(r, dict) and r.get("module") not in modules]
    return kept + rows


if __name__ == "__main__":
    raise SystemExit(main())
