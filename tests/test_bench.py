"""Benchmarks run once in their quick size so that they cannot rot (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(1200)  # every benchmark once, quick size (about 2-4 minutes on 2 cores)
def test_benchmarks_run_in_quick_mode(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True
    assert result["rows"], "no benchmark rows"
    for row in result["rows"]:
        assert row["value"] > 0, row
        assert {"id", "what", "unit"} <= set(row)
    assert {"E1", "P1", "P2", "P3", "P4", "P5", "P6", "P7"} <= {row["id"] for row in result["rows"]}
    # P2's floor replays an orders PROCESSOR trace as the sandbox's agent sends it (~140 KB).
    (floor,) = [row for row in result["rows"] if row["what"].startswith("protocol skeleton")]
    assert floor["trace_bytes"] > 50_000 and floor["cpu_ms"] > 0


def test_a_partial_run_keeps_the_other_benchmarks_rows(tmp_path: Path) -> None:
    from bench.__main__ import _merged

    out = tmp_path / "results.json"
    earlier = [
        {"id": "P2", "what": "round trip", "value": 30.0, "module": "bench_replay"},
        {"id": "P5", "what": "verify", "value": 1e5, "module": "bench_audit"},
    ]
    out.write_text(json.dumps({"quick": False, "rows": earlier}))
    now = [{"id": "P2", "what": "round trip", "value": 20.0, "module": "bench_replay"}]
    assert _merged(out, now, {"bench_replay"}, quick=False) == [earlier[1], now[0]]
    assert _merged(out, now, {"bench_replay"}, quick=True) == now  # another size: not mixed
    out.write_text("not json")
    assert _merged(out, now, {"bench_replay"}, quick=False) == now
    assert _merged(tmp_path / "absent.json", now, {"bench_replay"}, quick=False) == now
