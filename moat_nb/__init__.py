"""moat_nb: replay recorded Apache Camel exchanges from a notebook (Cameleer Exchange Replay)."""

from __future__ import annotations

from . import errors
from .diff import DiffResult, calibrate_noise, diff
from .errors import MoatError
from .lineage import lineage, replay_family
from .model import Chunk, Execution, ModifiedPayload, Payload, ProcessorRecord
from .noise import NoiseRule

__version__ = "0.1.0"

__all__ = [
    "Chunk",
    "DiffResult",
    "NoiseRule",
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
