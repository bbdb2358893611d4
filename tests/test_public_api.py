"""The public API is ``moat_nb.__all__``; this test pins it so that a change is deliberate."""

from __future__ import annotations

import moat_nb

PUBLIC = {
    "BatchCancelled",
    "BatchInterrupted",
    "BatchResult",
    "REMOVE",
    "aregression",
    "asweep",
    "grid",
    "regression",
    "sweep",
    "AsyncHistory",
    "AsyncPlatform",
    "AuditBundle",
    "History",
    "LiveTrace",
    "Platform",
    "ReplayRun",
    "StreamPolicy",
    "TraceEvent",
    "connect",
    "executions_frame",
    "processors_frame",
    "Chunk",
    "DiffResult",
    "NoiseRule",
    "acalibrate_noise",
    "calibrate_noise",
    "diff",
    "lineage",
    "replay_family",
    "Execution",
    "ModifiedPayload",
    "MoatError",
    "Payload",
    "ProcessorRecord",
    "__version__",
    "errors",
}


def test_all_is_pinned() -> None:
    assert set(moat_nb.__all__) == PUBLIC
    assert len(moat_nb.__all__) == len(PUBLIC), "duplicates in __all__"


def test_every_public_name_exists() -> None:
    for name in moat_nb.__all__:
        assert getattr(moat_nb, name) is not None


def test_client_side_never_imports_the_sandbox() -> None:
    # DESIGN.md section 2: the client side speaks HTTP to the sandbox, never imports it.
    import subprocess
    import sys

    code = "import sys, moat_nb; print(any(m.startswith('moat_nb.sandbox') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_keyword_apis_beside_the_names_are_pinned() -> None:
    """Not names of ``__all__``, but public all the same: lineage(original=), ReplayRun.await_
    (wait's async twin, with its timeout) and BatchResult.output_types (outputs= types)."""
    import dataclasses
    import inspect

    original = inspect.signature(moat_nb.lineage).parameters["original"]
    assert original.kind is inspect.Parameter.KEYWORD_ONLY and original.default is None
    assert inspect.iscoroutinefunction(moat_nb.ReplayRun.await_)
    assert list(inspect.signature(moat_nb.ReplayRun.await_).parameters) == ["self", "timeout"]
    assert "output_types" in {f.name for f in dataclasses.fields(moat_nb.BatchResult)}
