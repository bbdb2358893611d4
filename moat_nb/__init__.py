"""moat_nb: replay recorded Apache Camel exchanges from a notebook (Cameleer Exchange Replay)."""

from __future__ import annotations

from . import errors
from .errors import MoatError
from .model import Chunk, Execution, ModifiedPayload, Payload, ProcessorRecord

__version__ = "0.1.0"

__all__ = [
    "Chunk",
    "Execution",
    "ModifiedPayload",
    "MoatError",
    "Payload",
    "ProcessorRecord",
    "__version__",
    "errors",
]
