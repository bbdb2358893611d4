"""The sandbox's Camel route engine: Camel YAML DSL routes run in Python with a full trace.

``RouteSet.load(path_or_dir, beans)`` loads route files (validated at load time);
``routes.run(route_id, payload, capture=..., replay_of=...)`` runs one exchange and returns its
:class:`~moat_nb.model.Execution` with the processor records (DESIGN.md section 8).
"""

from __future__ import annotations

from .engine import DEFAULT_CAPTURE_MAX_BYTES, EndpointInfo, Route, RouteSet
from .exchange import Exchange, FixedClock, Headers, RunContext
from .failure import ExchangeFailure

__all__ = [
    "DEFAULT_CAPTURE_MAX_BYTES",
    "EndpointInfo",
    "Exchange",
    "ExchangeFailure",
    "FixedClock",
    "Headers",
    "Route",
    "RouteSet",
    "RunContext",
]
