"""Endpoint processors: ``to`` and ``toD``, and what the engine needs to know of a URI.

``direct:`` runs a sub-route in process; ``log:`` and ``mock:`` are local; every other scheme is
external and never really called (the engine's :meth:`~.trace.Run.send` records it, simulates a
request-reply endpoint's reply in live runs and stubs it in replays; DESIGN.md section 8).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .conversion import to_text
from .exchange import Exchange
from .language import Expression
from .processors import Processor

if TYPE_CHECKING:
    from .engine import Route
    from .trace import Run

__all__ = [
    "LOCAL_SCHEMES",
    "REQUEST_REPLY_SCHEMES",
    "To",
    "ToD",
    "direct_name",
    "uri_scheme",
    "uri_without_query",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")

#: Schemes that run inside the engine; every other scheme is external and never called.
LOCAL_SCHEMES = frozenset({"direct", "log", "mock"})
#: External schemes that are request-reply by nature (their reply becomes the body).
REQUEST_REPLY_SCHEMES = frozenset({"http", "https", "sql", "jdbc", "rest", "netty-http", "vertx-http"})


def uri_scheme(uri: str) -> str:
    """The scheme of an endpoint URI (``kafka`` for ``kafka:fulfilment``)."""
    m = _SCHEME.match(uri)
    return m.group(1).lower() if m else ""


def uri_without_query(uri: str) -> str:
    return uri.split("?", 1)[0]


def direct_name(uri: str) -> str:
    """``direct:x``, ``direct://x`` and ``direct:x?timeout=1`` all name the direct endpoint x."""
    rest = uri_without_query(uri).split(":", 1)[1]
    return rest[2:] if rest.startswith("//") else rest


class To(Processor):
    """``to``: send the exchange to an endpoint (a ``direct:`` sub-route runs in process)."""

    __slots__ = ("uri", "scheme", "request_reply", "target")
    processor_type = "to"
    ends_with_children = True

    def __init__(self, *args: Any, uri: str, request_reply: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.uri = uri
        self.scheme = uri_scheme(uri)
        self.request_reply = request_reply
        #: The route a ``direct:`` URI reaches (linked after all files are loaded).
        self.target: Route | None = None

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        run.send(self, exchange, self.uri, self.target, seq, depth, iteration)


class ToD(Processor):
    """``toD``: ``to`` with a Simple-templated URI, resolved per exchange."""

    __slots__ = ("uri", "expression", "request_reply")
    processor_type = "toD"
    ends_with_children = True

    def __init__(
        self, *args: Any, uri: str, expression: Expression, request_reply: bool, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.uri = uri
        self.expression = expression
        self.request_reply = request_reply

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        uri = str(to_text(self.expression.evaluate(exchange)) or "").strip()
        run.send(self, exchange, uri, None, seq, depth, iteration)
