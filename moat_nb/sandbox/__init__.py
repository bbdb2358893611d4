"""The embedded, Cameleer-compatible sandbox platform (DESIGN.md section 8).

Imports the pure core (``moat_nb.model``, ``moat_nb.errors``, ...) and never the client side.

``moat_nb.sandbox.start(...)`` starts the server and its agents and returns a handle with
``.url`` and ``.stop()`` (see :func:`moat_nb.sandbox.runner.start`). It is imported lazily, so
that ``import moat_nb.sandbox.camel`` (the route engine alone) does not pull in the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import start

__all__ = ["start"]


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attribute: the runner imports uvicorn, Starlette and httpx.
    if name == "start":
        from .runner import start

        return start
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
