"""The Camel exchange as the route engine sees it while running.

Pure: the clock and the random source are handed in through :class:`RunContext`, so that one
seed gives one history (DESIGN.md section 2, "no clock reads it was not handed").
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Headers", "RunContext", "Exchange", "FixedClock"]


class Headers(MutableMapping[str, Any]):
    """Camel message headers: keys compare case-insensitively and keep the case first set.

    Camel's ``DefaultMessage`` uses a case-insensitive map, so ``${header.orderid}`` finds
    ``OrderId``; removing or replacing keeps the original spelling of the key.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, tuple[str, Any]] = {}
        if data:
            for k, v in data.items():
                self[k] = v

    def __getitem__(self, key: str) -> Any:
        return self._data[key.lower()][1]

    def __setitem__(self, key: str, value: Any) -> None:
        low = key.lower()
        old = self._data.get(low)
        self._data[low] = (old[0] if old else key, value)

    def __delitem__(self, key: str) -> None:
        del self._data[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._data.values())

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._data

    @property
    def entries(self) -> dict[str, tuple[str, Any]]:
        """The live ``{lower-cased name: (name, value)}`` table, for read-only use: comparing two
        copies of it tells whether any header changed, in C, without copying the values out."""
        return self._data

    def pairs(self) -> Iterable[tuple[str, Any]]:
        """``(name, value)`` pairs with each name as first set: the fast way to copy them out."""
        return self._data.values()

    def copy(self) -> Headers:
        h = Headers()
        h._data = dict(self._data)
        return h

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.values()}

    def __repr__(self) -> str:
        return f"Headers({self.to_dict()!r})"


class FixedClock:
    """A clock that advances by a fixed step each time it is read (deterministic tests)."""

    def __init__(self, start: datetime, step: timedelta = timedelta(microseconds=50)) -> None:
        self._now = start
        self._step = step

    def __call__(self) -> datetime:
        now = self._now
        self._now = now + self._step
        return now


@dataclass
class RunContext:
    """What one run may read from the outside world: a clock, a random source, an id source.

    ``now`` returns aware UTC datetimes. ``perf`` returns a monotonic float in seconds, used for
    durations; by default it is derived from ``now`` so that a fixed clock gives fixed durations.
    """

    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    rng: random.Random = field(default_factory=random.Random)
    new_id: Callable[[], str] | None = None
    #: Monotonic seconds for ``durationMs``; ``None`` derives durations from ``now``.
    perf: Callable[[], float] | None = None
    #: ``delay`` calls ``sleep(seconds)``; ``None`` (the default) never waits, so that traffic
    #: generation and tests run at full speed. Pass ``time.sleep`` to wait for real.
    sleep: Callable[[float], None] | None = None
    #: ``log`` steps and ``log:`` endpoints call ``log(logger_name, level, message)``; ``None``
    #: drops log lines (the pure core does no I/O).
    log: Callable[[str, str, str], None] | None = None

    def next_id(self) -> str:
        if self.new_id is not None:
            return self.new_id()
        # Camel exchange ids look like "ID-host-1700000000000-0-1"; we keep the shape.
        return f"ID-sandbox-{self.rng.getrandbits(48):012x}-{self.rng.getrandbits(16):04x}"


@dataclass
class Exchange:
    """One message travelling through routes.

    ``body`` is any Python value (a string as received; a dict/list after ``unmarshal: json``),
    as a Camel body is any Java object. ``exception`` is set while the exchange is failed
    (Camel's ``exchange.getException()``); ``properties`` also holds Camel's own
    ``CamelExceptionCaught`` inside a ``doCatch``.
    """

    exchange_id: str
    body: Any = None
    headers: Headers = field(default_factory=Headers)
    properties: dict[str, Any] = field(default_factory=dict)
    route_id: str = ""
    from_route_id: str = ""
    exception: BaseException | None = None
    context: RunContext = field(default_factory=RunContext)
    #: Set by the ``stop`` EIP: no further processor runs for this exchange (Camel's
    #: ``Exchange.isRouteStop()``).
    route_stop: bool = False
    #: When the exchange was created (Camel's ``Exchange.getCreated()``, read by Simple's
    #: ``${date:exchangeCreated}``): the run's start on the context clock. ``None`` reads the
    #: clock at evaluation time (an exchange built by hand).
    created: datetime | None = None
    #: Camel's ``ExchangeExtension.isFailureHandled``: a route's error handler has handled a
    #: failure of this exchange, so no other one handles it again (see :mod:`.error_handler`).
    #: A copy starts without it, as Camel's copy gets a fresh extension.
    failure_handled: bool = False

    def copy(self, exchange_id: str) -> Exchange:
        """A correlated copy (Camel's ``ExchangeHelper.createCorrelatedCopy``): a new id, the same
        body object, and shallow copies of the headers and properties, as the splitter and
        ``loop copy=true`` make one per item or turn."""
        return Exchange(
            exchange_id=exchange_id,
            body=self.body,
            headers=self.headers.copy(),
            properties=dict(self.properties),
            route_id=self.route_id,
            from_route_id=self.from_route_id,
            context=self.context,
            # As Camel's: Exchange.copy() builds the copy with AbstractExchange(Exchange parent),
            # which takes parent.getCreated(), so a split or loop copy keeps the creation time
            # (Camel 3 and 4 alike, with the default prototype exchange factory).
            created=self.created,
        )
