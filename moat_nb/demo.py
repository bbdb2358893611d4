"""``make demo`` / ``moat-nb demo``: the main job on the embedded sandbox, start to finish.

Starts the sandbox on a fresh data folder (its agents post the recorded history through
``POST /data/chunks``, the same path replays take), prints what the history holds (exchanges by
environment, route and status) and one exchange's processor-level trace, and stops the sandbox.
Like :mod:`moat_nb.cli`, this module may import both the client side and the sandbox.
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from pathlib import Path

__all__ = ["run_demo", "summary_table"]


def summary_table(stats: list[dict]) -> str:
    """Counts by environment and route, one column per status, with totals and failure rates."""
    statuses = sorted({row["status"] for row in stats})
    grid: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for row in stats:
        grid[(row["environment"] or "-", row["route_id"])][row["status"]] = row["count"]
    header = ["environment", "route", *statuses, "total", "failed %"]
    lines = [header]
    for (env, route), counts in sorted(grid.items()):
        total = sum(counts.values())
        failed = counts.get("FAILED", 0)
        lines.append(
            [env, route, *(str(counts.get(s, 0)) for s in statuses), str(total), f"{100 * failed / total:.1f}"]
        )
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in lines)


def run_demo(*, data: Path, per_env: int = 500, seed: int = 0, out: Path = Path("out")) -> int:
    from .cli import trace_table
    from .sandbox.runner import start

    if data.exists():
        shutil.rmtree(data)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"starting the sandbox in {data} with {per_env} exchanges per environment ...", flush=True)
    with start(data=data, per_env=per_env, seed=seed) as sandbox:
        took = time.perf_counter() - started
        store = sandbox.state.store
        table = summary_table(store.stats())
        print(f"\nsandbox at {sandbox.url} — recorded history ({sandbox.history} exchanges, {took:.1f} s):\n")
        print(table)
        # A staging exchange (v2, PROCESSOR capture) that completed: the full processor trace.
        hits, _ = store.search(environment="staging", status="COMPLETED", limit=1, sort="startTime:asc")
        sample = store.execution(hits[0].execution_id) if hits else None
        if sample is not None:
            print(
                f"\none exchange's processor trace: {sample.exchange_id} "
                f"({sample.environment}, {sample.route_id} {sample.route_version}, {sample.status}, "
                f"{len(sample.processors or ())} processors)\n"
            )
            print(trace_table(sample))
        (out / "summary.txt").write_text(table + "\n")
    print(f"\nwrote {out / 'summary.txt'}; data in {data}")
    return 0
