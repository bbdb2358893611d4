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
