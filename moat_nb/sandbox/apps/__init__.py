"""Sample applications the sandbox runs, and the shape every app has.

An app is a set of route versions (folders of Camel YAML DSL files), the beans its routes call,
simulators for the external endpoints it reaches, and a generator of realistic inputs for the
traffic generator. ``orders`` ships with moat_nb; ``moat-nb sandbox --app DIR`` loads a user's.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...model import Payload

__all__ = ["App", "ENVIRONMENTS", "EnvironmentSpec"]


@dataclass(frozen=True)
class EnvironmentSpec:
    """How one environment runs an app: which route version, which capture mode."""

    name: str
    version: str
    capture: str


#: DESIGN.md section 8: prod runs v1 and records with ROUTE capture; staging and dev run v2.
ENVIRONMENTS: Mapping[str, EnvironmentSpec] = {
    "dev": EnvironmentSpec("dev", "v2", "PROCESSOR"),
    "staging": EnvironmentSpec("staging", "v2", "PROCESSOR"),
    "prod": EnvironmentSpec("prod", "v1", "ROUTE"),
}


@dataclass(frozen=True)
class App:
    """A sandbox application.

    ``versions`` maps a route version name ("v1") to a folder of ``*.yaml`` route files.
    ``beans`` are the Python callables ``bean`` steps call (``bean: {ref: name, method: m}``
    looks up ``name`` and, when a method is given, that attribute of it).
    ``endpoints`` simulate request-reply external endpoints for live traffic, keyed by the URI
    without its query (``"http://customers/api/lookup"``): ``fn(exchange) -> reply body``.
    ``sample_payload(rng, i)`` makes the i-th traffic input.
    """

    name: str
    application_id: str
    entry_route: str
    versions: Mapping[str, Path]
    beans: Mapping[str, Any] = field(default_factory=dict)
    endpoints: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    sample_payload: Callable[[random.Random, int], Payload] | None = None
    environments: Mapping[str, EnvironmentSpec] = field(default_factory=lambda: dict(ENVIRONMENTS))
