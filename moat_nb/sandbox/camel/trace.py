"""One exchange's run through the routes: the recorder of its trace (DESIGN.md section 3).

:class:`Run` executes processors (``pipeline``/``execute``), records one
:class:`~moat_nb.model.ProcessorRecord` per processor execution, dispatches endpoints
(``send``: ``direct:`` in process, external schemes simulated or stubbed) and answers replays
from the source execution's records. :class:`~.engine.RouteSet` makes one per ``run()``; the
behaviour it gives users is described in :mod:`.engine`.

Capturing payloads at every processor is most of the cost of a run, so captures are shared
where nothing can have changed in between (the output of one step is the input of the next; a
``when`` ends in the state its last step left), texts of unchanged dicts and lists are cached
until user code (a bean, an aggregation strategy, an endpoint simulator) has had the exchange,
and records are built without re-validating what the engine already normalised.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ...model import Execution, ProcessorRecord, parse_time
from .conversion import to_text
from .endpoints import (
    LOCAL_SCHEMES,
    REQUEST_REPLY_SCHEMES,
    To,
    ToD,
    direct_name,
    uri_scheme,
    uri_without_query,
)
from .error_handler import handle_failure
from .exchange import Exchange, Headers, RunContext
from .failure import ExchangeFailure, failure_from_python
from .processors import Processor

if TYPE_CHECKING:
    from .engine import Route, RouteSet

__all__ = ["Run", "Snapshot", "header_pairs", "stub_index"]

Snapshot = tuple[str | None, bool, dict[str, Any], dict[str, Any]]

_SCALARS = frozenset({str, int, float, bool, type(None)})
_NO_ENDPOINT: tuple[None, bool] = (None, False)

# ProcessorRecord's fields in declaration order, and a setter per slot. The engine makes tens of
# thousands of records a second (issue 2 sets >= 1,000 exchanges/s with ~50 records each); the
# dataclass __init__ and its __post_init__ time parsing cost ~14 us per record, half the budget
# of a whole processor. _record() builds the same frozen record field by field, with the times
# already normalised exactly as model._ms does (UTC, cut to the millisecond); a test pins
# _record(...) == ProcessorRecord(...) so that a change to the model cannot slip past.
_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(ProcessorRecord))
_EXPECTED_FIELDS = (
    "execution_id",
    "exchange_id",
    "seq",
    "processor_id",
    "processor_type",
    "route_id",
    "status",
    "start_time",
    "end_time",
    "duration_ms",
    "parent_seq",
    "iteration",
    "depth",
    "replay_id",
    "endpoint_uri",
    "stubbed",
    "error_type",
    "error_message",
    "input_body",
    "output_body",
    "input_headers",
    "output_headers",
    "input_properties",
    "properties",
    "body_truncated",
)
_FAST_RECORDS = _RECORD_FIELDS == _EXPECTED_FIELDS and hasattr(ProcessorRecord, "__slots__")
_SETTERS = tuple(getattr(ProcessorRecord, name).__set__ for name in _RECORD_FIELDS) if (_FAST_RECORDS) else ()
_new_object = object.__new__


def _record(values: tuple[Any, ...]) -> ProcessorRecord:
    if not _FAST_RECORDS:  # the model changed shape: take the slow, always-right road
        return ProcessorRecord(**dict(zip(_EXPECTED_FIELDS, values, strict=True)))
    record = _new_object(ProcessorRecord)
    for setter, value in zip(_SETTERS, values, strict=True):
        setter(record, value)
    return record


# Subtracting a ready-made timedelta is several times faster than datetime.replace().
_SUB_MILLI = tuple(timedelta(microseconds=n) for n in range(1000))


def _utc_ms(dt: datetime) -> datetime:
    """``model.parse_time`` for a datetime, fast when it is already UTC (the usual case)."""
    if dt.tzinfo is UTC:
        extra = dt.microsecond % 1000
        return dt - _SUB_MILLI[extra] if extra else dt
    normalised = parse_time(dt)
    assert normalised is not None
    return normalised


def duration_ms(seconds: float) -> float:
    """A duration in milliseconds rounded to the microsecond.

    The engine's clock (``RunContext.now``, a ``datetime``) has microsecond resolution and the
    trace table prints milliseconds with three decimals; an unrounded ``seconds * 1000.0`` leaks
    float noise into the wire's ``durationMs`` (``0.009000000000000001`` for 9 µs).
    """
    return round(seconds * 1000.0, 3)


class Run:
    """One exchange's run: records the trace and serves endpoints, beans and replay stubs.

    Processors call :meth:`pipeline` for their nested steps and :meth:`send` for endpoints;
    code that hands the exchange to user Python code (beans, aggregation strategies, endpoint
    simulators) calls :meth:`forget` afterwards.
    """

    __slots__ = (
        "routes",
        "records",
        "capture",
        "max_bytes",
        "now",
        "perf",
        "execution_id",
        "exchange_id",
        "replay_id",
        "stubs",
        "texts",
        "last_headers",
        "last_properties",
        "tail",
        "endpoints",
    )

    def __init__(
        self,
        routes: RouteSet,
        *,
        capture: bool,
        max_bytes: int,
        context: RunContext,
        execution_id: str,
        exchange_id: str,
        replay_id: str | None,
        stubs: dict[tuple[str, str, int], deque[ProcessorRecord]] | None,
    ) -> None:
        self.routes = routes
        self.records: list[ProcessorRecord | None] = []
        self.capture = capture
        self.max_bytes = max_bytes
        self.now = context.now
        self.perf = context.perf
        self.execution_id = execution_id
        self.exchange_id = exchange_id
        self.replay_id = replay_id
        self.stubs = stubs
        # id(dict or list) -> (the object, its JSON text). The engine's own processors never
        # change a dict or list in place (they assign new values), and neither does the Simple
        # language, so an object's text stays valid until user code runs: see forget().
        self.texts: dict[int, tuple[Any, str]] = {}
        # The last captured headers / properties: (a shallow copy of the source, the capture).
        # Most processors change neither, and comparing two dicts runs in C.
        self.last_headers: tuple[dict[Any, Any], dict[str, Any]] | None = None
        self.last_properties: tuple[dict[Any, Any], dict[str, Any]] | None = None
        # The exchange and snapshot taken when the last processor ended (see execute()).
        self.tail: tuple[Exchange, Snapshot] | None = None
        #: seq -> (endpoint URI, stubbed), set by send() for the record of that processor.
        self.endpoints: dict[int, tuple[str, bool]] = {}

    # -- capture

    def forget(self) -> None:
        """User code had the exchange and may have changed objects in place: re-serialize."""
        self.texts.clear()
        self.last_headers = self.last_properties = None
        self.tail = None

    def _text(self, value: Any) -> str | None:
        kind = type(value)
        if kind is str or value is None:
            return value
        if kind is dict or kind is list:
            hit = self.texts.get(id(value))
            if hit is not None and hit[0] is value:
                return hit[1]
            text = to_text(value)
            assert text is not None
            self.texts[id(value)] = (value, text)  # holding the object keeps its id unique
            return text
        return to_text(value)

    def _map(self, pairs: Any) -> dict[str, Any]:
        out: dict[str, Any] = dict(pairs)  # copied in C; most values are scalars already
        for key, value in out.items():
            if type(value) not in _SCALARS:
                out[key] = self._text(value)  # replacing a value while iterating is allowed
        return out

    def snapshot(self, exchange: Exchange) -> Snapshot:
        """The exchange's body text, its truncation flag, headers and properties, JSON-safe."""
        text = self._text(exchange.body)
        truncated = False
        # Four bytes per character at most: only long texts need encoding to be measured.
        if text is not None and len(text) * 4 > self.max_bytes:
            raw = text.encode("utf-8")
            if len(raw) > self.max_bytes:
                text = raw[: self.max_bytes].decode("utf-8", "ignore")
                truncated = True
        headers = exchange.headers
        # Headers keep (name as first set, value) per lower-cased name: compare that dict.
        source = headers.entries if isinstance(headers, Headers) else headers
        last = self.last_headers
        if last is not None and last[0] == source:
            header_map = last[1]
        else:
            header_map = self._map(header_pairs(headers))
            self.last_headers = (dict(source), header_map)
        properties = exchange.properties
        last = self.last_properties
        if last is not None and last[0] == properties:
            property_map = last[1]
        else:
            property_map = self._map(properties.items())
            self.last_properties = (dict(properties), property_map)
        return text, truncated, header_map, property_map

    # -- running

    def pipeline(
        self, steps: Sequence[Processor], exchange: Exchange, parent: int | None, depth: int, iteration: int
    ) -> None:
        """Run ``steps`` in order on ``exchange`` (Camel's pipeline), stopping after ``stop``."""
        previous: Snapshot | None = None
        for step in steps:
            # Nothing runs between one step's end and the next step's start, so the output
            # captured for one is the input of the next: capture once, use twice.
            previous = self.execute(step, exchange, parent, depth, iteration, previous)
            if exchange.route_stop:
                break

    def execute(
        self,
        node: Processor,
        exchange: Exchange,
        parent: int | None,
        depth: int,
        iteration: int,
        before: Snapshot | None = None,
    ) -> Snapshot | None:
        """Run one processor and record it; re-raise its failure after recording it."""
        records = self.records
        records.append(None)
        seq = len(records)
        capture = self.capture
        if capture and before is None:
            before = self.snapshot(exchange)
        now = self.now
        perf = self.perf
        start = now()
        p0 = perf() if perf is not None else 0.0
        failure: ExchangeFailure | None = None
        self.tail = None
        try:
            node.process(exchange, self, seq, depth, iteration)
        except ExchangeFailure as err:
            failure = err
        except Exception as err:  # an unexpected Python error still fails only this exchange
            failure = failure_from_python(err)
        end = now()
        duration = duration_ms(perf() - p0 if perf is not None else (end - start).total_seconds())
        if failure is not None:
            failure.frames.append(node.frame)
            status, error_type, error_message = "FAILED", failure.error_type, failure.message
        else:
            status = "COMPLETED"
            error_type = error_message = None
        uri, stubbed = self.endpoints.pop(seq, _NO_ENDPOINT) if self.endpoints else _NO_ENDPOINT
        if capture:
            # A processor that ends with its nested steps (a when, a filter, a to direct:) ends
            # in the state its last nested step left: that step's snapshot is this one's.
            tail = self.tail
            if tail is not None and tail[0] is exchange and node.ends_with_children:
                after = tail[1]
            else:
                after = self.snapshot(exchange)
            self.tail = (exchange, after)
            assert before is not None
            records[seq - 1] = _record(
                (
                    self.execution_id,
                    self.exchange_id,
                    seq,
                    node.processor_id,
                    node.processor_type,
                    node.route_id,
                    status,
                    _utc_ms(start),
                    _utc_ms(end),
                    duration,
                    parent,
                    iteration,
                    depth,
                    self.replay_id,
                    uri,
                    stubbed,
                    error_type,
                    error_message,
                    before[0],
                    after[0],
                    before[2],
                    after[2],
                    before[3],
                    after[3],
                    before[1] or after[1],
                )
            )
        else:
            after = None
            records[seq - 1] = _record(
                (
                    self.execution_id,
                    self.exchange_id,
                    seq,
                    node.processor_id,
                    node.processor_type,
                    node.route_id,
                    status,
                    _utc_ms(start),
                    _utc_ms(end),
                    duration,
                    parent,
                    iteration,
                    depth,
                    self.replay_id,
                    uri,
                    stubbed,
                    error_type,
                    error_message,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    False,
                )
            )
        if failure is not None:
            # The route's error handler wraps this processor (and the capture around it, as
            # Camel's channel runs interceptors inside the error handler): it acts on the
            # exchange after the processor's record is taken, so the failed step's output does
            # not show its properties and the enclosing steps' and the route's do.
            if not node.in_try and handle_failure(exchange, failure):
                self.tail = None
            raise failure
        return after

    def call_route(self, route: Route, exchange: Exchange, parent: int, depth: int, iteration: int) -> None:
        """Run a ``direct:`` sub-route in process; ``${routeId}`` is the sub-route's meanwhile."""
        saved = exchange.route_id
        exchange.route_id = route.route_id
        try:
            self.pipeline(route.steps, exchange, parent, depth, iteration)
        finally:
            exchange.route_id = saved

    # -- endpoints

    def send(
        self,
        node: To | ToD,
        exchange: Exchange,
        uri: str,
        target: Route | None,
        seq: int,
        depth: int,
        iteration: int,
    ) -> None:
        """Send ``exchange`` to ``uri``; the record of processor ``seq`` gets the endpoint URI
        and whether it was stubbed, also when the send fails."""
        scheme = node.scheme if isinstance(node, To) else uri_scheme(uri)
        stubbed = self.stubs is not None and scheme not in LOCAL_SCHEMES
        self.endpoints[seq] = (uri, stubbed)
        if scheme in LOCAL_SCHEMES:
            if scheme == "direct":
                route = target if target is not None else self.routes.direct_route(uri)
                if route is None:
                    raise ExchangeFailure(
                        "org.apache.camel.component.direct.DirectConsumerNotAvailableException",
                        f"No consumers available on endpoint: direct://{direct_name(uri)}. "
                        f"Exchange[{exchange.exchange_id}]",
                    )
                self.call_route(route, exchange, seq, depth + 1, iteration)
            elif scheme == "log" and exchange.context.log is not None:
                body = to_text(exchange.body)
                exchange.context.log(
                    uri_without_query(uri)[4:],
                    "INFO",
                    f"Exchange[BodyType: {type(exchange.body).__name__}, Body: {body}]",
                )
            return
        request_reply = node.request_reply or scheme in REQUEST_REPLY_SCHEMES
        if not stubbed:
            if request_reply:
                self._simulate(exchange, uri, scheme)
            return
        self._stubbed(node, exchange, uri, scheme, iteration, request_reply)

    def _simulate(self, exchange: Exchange, uri: str, scheme: str) -> None:
        simulator = self.routes.simulator(uri)
        if simulator is not None:
            try:
                reply = simulator(exchange)
            except ExchangeFailure:
                raise
            except Exception as err:
                raise failure_from_python(err) from err
            finally:
                self.forget()
            if reply is not None:
                exchange.body = to_text(reply)
        if scheme in ("http", "https"):
            # What camel-http sets on a successful reply.
            exchange.headers["CamelHttpResponseCode"] = 200
            exchange.headers["CamelHttpResponseText"] = "OK"

    def _stubbed(
        self, node: To | ToD, exchange: Exchange, uri: str, scheme: str, iteration: int, request_reply: bool
    ) -> None:
        assert self.stubs is not None
        queue = self.stubs.get((node.route_id, node.processor_id, iteration))
        recorded = queue.popleft() if queue else None
        if recorded is not None and recorded.status == "FAILED" and recorded.error_type:
            raise ExchangeFailure(recorded.error_type, recorded.error_message or "")
        if not request_reply:
            return
        if recorded is not None and recorded.output_body is not None and not recorded.body_truncated:
            exchange.body = recorded.output_body
            before, after = recorded.input_headers, recorded.output_headers
            if before is not None and after is not None:
                missing = object()
                for key, value in after.items():
                    if before.get(key, missing) != value:
                        exchange.headers[key] = value
                for key in before:
                    if key not in after:
                        exchange.headers.pop(key, None)
            return
        self._simulate(exchange, uri, scheme)

    # -- beans

    def lookup_bean(self, name: str) -> Any:
        beans = self.routes.beans
        return beans.get(name) if beans is not None else None


def header_pairs(headers: Any) -> Any:
    # A bean may have replaced the Headers with a plain dict; both capture alike.
    return headers.pairs() if isinstance(headers, Headers) else headers.items()


def stub_index(source: Execution) -> dict[tuple[str, str, int], deque[ProcessorRecord]]:
    index: dict[tuple[str, str, int], deque[ProcessorRecord]] = {}
    for record in sorted(source.processors or (), key=lambda r: r.seq):
        key = (record.route_id, record.processor_id, record.iteration)
        index.setdefault(key, deque()).append(record)
    return index
