"""moat_nb: replay recorded Apache Camel exchanges from a notebook (Cameleer Exchange Replay)."""

from __future__ import annotations

from . import errors
from .batch import (
    REMOVE,
    BatchCancelled,
    BatchInterrupted,
    BatchResult,
    aregression,
    asweep,
    grid,
    regression,
    sweep,
)
from .client import AsyncPlatform, AuditBundle, Platform, connect
from .diff import DiffResult, acalibrate_noise, calibrate_noise, diff
from .errors import MoatError
from .frames import executions_frame, processors_frame
from .history import AsyncHistory, History
from .lineage import lineage, replay_family
from .model import Chunk, Execution, ModifiedPayload, Payload, ProcessorRecord
from .noise import NoiseRule
from .stream import LiveTrace, ReplayRun, StreamPolicy, TraceEvent

__version__ = "0.1.0"

__all__ = [
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
]
