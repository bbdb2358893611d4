"""The route engine: a loaded set of routes, and running one exchange through them with a trace.

``RouteSet.load(path_or_dir, beans)`` loads Camel YAML DSL files (see :mod:`.loader`);
``routes.run(route_id, payload)`` runs one exchange and returns its
:class:`~moat_nb.model.Execution` with the processor trace (DESIGN.md sections 3 and 8).

The trace
    One :class:`~moat_nb.model.ProcessorRecord` per processor execution, ``seq`` from 1 in the
    order processors start, ``parentSeq`` the enclosing processor (a ``choice``'s taken
    ``when``/``otherwise``, a ``split``, ``loop``, ``filter``, ``doTry`` and its ``doCatch`` /
    ``doFinally``, and the ``to`` that called a ``direct:`` sub-route, whose processors carry
    the sub-route's ``routeId``), ``depth`` 0 for the entry route's own steps, ``iteration`` the
    innermost split/loop index (inherited by everything nested in that turn).
    The ``from`` endpoint has no record: the execution itself is the route's entry and exit.

Capture modes
    ``PROCESSOR``: every record has the body, headers and properties before and after the
    processor. ``ROUTE``: the execution keeps the payload at route entry and exit only; the
    records are still there — ids, types, status, times, endpoints, errors, the shape of the
    run — but without payloads. That is what a Cameleer user expects of a lighter capture level:
    the processor tree (which branch ran, where it failed, how long each step took) is cheap
    and is what a diff aligns on; bodies and headers at every step are what costs. So a replay
    of a ``ROUTE``-captured exchange can still be compared step by step on status and path.

Bodies are captured as text (:func:`~.conversion.to_text`), cut at ``capture_max_bytes``
(UTF-8) with ``bodyTruncated``; the execution's own entry and exit bodies are never cut, since
the entry payload is what a replay starts from.

Endpoints
    ``direct:`` runs the sub-route; ``log:`` and ``mock:`` are local. Every other scheme is
    never called: a live run records it as sent, and for a request-reply endpoint
    (``http``/``https``/``sql``... or ``exchangePattern: InOut``) takes the reply from the app's
    simulator for the URI without its query (``fn(exchange) -> body``; dict/list replies become
    JSON text, as a wire reply is text; ``None`` leaves the body alone), else leaves the body
    alone. With ``replay_of``, those processors are ``stubbed`` and answer with the reply the
    source execution recorded for the same ``(routeId, processorId, iteration)`` — its output
    body and the headers it changed, or its failure — and, where the source has none (``ROUTE``
    capture, a truncated body, a step the source did not run), with the simulated reply.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import RouteError, RouteLoadError
from ...model import CAPTURE_MODES, Execution, Payload
from .conversion import capture_map, to_text
from .endpoints import (
    LOCAL_SCHEMES,
    REQUEST_REPLY_SCHEMES,
    To,
    ToD,
    direct_name,
    uri_scheme,
    uri_without_query,
)
from .exchange import Exchange, Headers, RunContext
from .failure import ExchangeFailure
from .processors import Processor
from .trace import Run, duration_ms, header_pairs, stub_index

__all__ = ["DEFAULT_CAPTURE_MAX_BYTES", "EndpointInfo", "Route", "RouteSet", "Run", "check_simulators"]

#: DESIGN.md section 3: bodies above 256 KiB are cut and flagged.
DEFAULT_CAPTURE_MAX_BYTES = 256 * 1024

Simulator = Callable[[Exchange], Any]


def check_simulators(
    endpoints: Mapping[str, Any] | None, file: str | None = None, code: str | None = None
) -> None:
    """Refuse, at load time, an ``ENDPOINTS`` entry that cannot simulate a reply: a URI that is
    not text, or a value that cannot be called as ``fn(exchange)``. Such an entry used to be
    found only when an exchange reached the endpoint, failing it with a Python ``TypeError``."""
    for uri, fn in (endpoints or {}).items():
        where = f"ENDPOINTS[{uri!r}]"
        problem = None
        if not isinstance(uri, str) or not uri_scheme(uri):
            problem = f"ENDPOINTS key {uri!r} is not an endpoint URI"
        elif not callable(fn):
            problem = f"{where} is a {type(fn).__name__}, not a function"
        else:
            try:
                inspect.signature(fn).bind(None)
            except TypeError as err:
                problem = f"{where} cannot be called as fn(exchange): {err}"
            except ValueError:  # no signature to read (a builtin): the call will tell
                pass
        if problem is not None:
            raise RouteLoadError(
                problem,
                file=file,
                construct="ENDPOINTS",
                hint="map each URI (without its query) to fn(exchange) -> reply, e.g. "
                "ENDPOINTS = {'http://crm/api': lambda exchange: {'ok': True}}",
                code=code,
            )


@dataclass(frozen=True)
class Route:
    """One route: its id, the ``from`` URI and the steps, with where it was written."""

    route_id: str
    from_uri: str
    steps: tuple[Processor, ...]
    file: str
    line: int
    description: str | None = None
    group: str | None = None

    def walk(self) -> Iterator[tuple[Processor, int, Processor | None]]:
        """Every processor of this route (not of sub-routes), pre-order: ``(node, depth, parent)``."""
        stack: list[tuple[Processor, int, Processor | None]] = [
            (step, 0, None) for step in reversed(self.steps)
        ]
        while stack:
            node, depth, parent = stack.pop()
            yield node, depth, parent
            stack.extend((child, depth + 1, node) for child in reversed(list(node.children())))


@dataclass(frozen=True)
class EndpointInfo:
    """An external endpoint a route can reach (what a replay preflight lists as stubbed)."""

    uri: str
    scheme: str
    processor_id: str
    route_id: str
    request_reply: bool
    #: ``toD``: the URI is a Simple template, resolved per exchange.
    dynamic: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "scheme": self.scheme,
            "processorId": self.processor_id,
            "routeId": self.route_id,
            "requestReply": self.request_reply,
            "dynamic": self.dynamic,
        }


def _new_execution_id(context: RunContext) -> str:
    return str(uuid.UUID(int=context.rng.getrandbits(128), version=4))


class RouteSet:
    """Routes loaded from Camel YAML DSL files, ready to run exchanges.

    ``beans`` are the callables ``bean`` steps call (``None``: no registry — bean references
    are then resolved when a step runs, and a missing one fails that exchange with
    ``org.apache.camel.NoSuchBeanException``; with a mapping, they are checked at load time).
    ``endpoints`` simulate request-reply external endpoints for live runs, keyed by the URI
    without its query. ``version`` is the route version recorded on every execution.
    """

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        beans: Mapping[str, Any] | None,
        endpoints: Mapping[str, Simulator] | None,
        version: str | None,
        files: Sequence[Path] = (),
    ) -> None:
        self.routes: dict[str, Route] = {r.route_id: r for r in routes}
        self.route_ids: list[str] = [r.route_id for r in routes]
        self.version = version
        self.beans = beans
        self.files: list[Path] = list(files)
        check_simulators(endpoints)
        self._endpoints: dict[str, Simulator] = {
            uri_without_query(k): v for k, v in (endpoints or {}).items()
        }
        self._direct: dict[str, Route] = {
            direct_name(r.from_uri): r for r in routes if uri_scheme(r.from_uri) == "direct"
        }

    # -- loading

    @classmethod
    def load(
        cls,
        path_or_dir: str | Path | Sequence[str | Path],
        beans: Mapping[str, Any] | None = None,
        *,
        endpoints: Mapping[str, Simulator] | None = None,
        version: str | None = None,
    ) -> RouteSet:
        """Load route files: a file, a folder of ``*.yaml``/``*.yml`` (sorted by name), or a
        list of either. Raises :class:`~moat_nb.errors.RouteLoadError` naming the file, the
        line and the construct for anything malformed or unsupported."""
        from .loader import load_files, route_files

        files = route_files(path_or_dir)
        routes = load_files(files, beans)
        return cls(routes, beans=beans, endpoints=endpoints, version=version, files=files)

    @classmethod
    def loads(
        cls,
        text: str,
        beans: Mapping[str, Any] | None = None,
        *,
        endpoints: Mapping[str, Simulator] | None = None,
        version: str | None = None,
        file: str = "<string>",
    ) -> RouteSet:
        """Load routes from YAML text (``file`` names it in errors and stack traces)."""
        from .loader import load_texts

        routes = load_texts([(file, text)], beans)
        return cls(routes, beans=beans, endpoints=endpoints, version=version)

    # -- looking

    def route(self, route_id: str) -> Route:
        try:
            return self.routes[route_id]
        except KeyError:
            raise RouteError(
                f"no route with id {route_id!r}",
                code="UNKNOWN_ROUTE",
                hint="known routes: " + (", ".join(self.route_ids) or "(none)"),
                details={"routeId": route_id, "known": list(self.route_ids)},
            ) from None

    def direct_route(self, uri: str) -> Route | None:
        """The route consuming a ``direct:`` URI, if any."""
        return self._direct.get(direct_name(uri))

    def simulator(self, uri: str) -> Simulator | None:
        """The app's simulator for an external endpoint URI (matched without its query)."""
        base = uri_without_query(uri)
        found = self._endpoints.get(base)
        if found is None and ":" in base:
            # camel accepts both http:host/path and http://host/path.
            scheme, rest = base.split(":", 1)
            alt = f"{scheme}:{rest[2:]}" if rest.startswith("//") else f"{scheme}://{rest}"
            found = self._endpoints.get(alt)
        return found

    def processors(self, route_id: str) -> list[Processor]:
        """The route's own processors (not its sub-routes'), pre-order."""
        return [node for node, _, _ in self.route(route_id).walk()]

    def endpoints(self, route_id: str) -> list[EndpointInfo]:
        """External endpoints reachable from the route, following static ``direct:`` calls, in
        route order, each once: what a replay would stub (the replay preflight lists them)."""
        out: list[EndpointInfo] = []
        seen_routes: set[str] = set()

        def visit(route: Route) -> None:
            if route.route_id in seen_routes:
                return
            seen_routes.add(route.route_id)
            for node, _, _ in route.walk():
                if isinstance(node, To):
                    if node.scheme == "direct":
                        if node.target is not None:
                            visit(node.target)
                        continue
                    if node.scheme in LOCAL_SCHEMES:
                        continue
                    out.append(
                        EndpointInfo(
                            node.uri,
                            node.scheme,
                            node.processor_id,
                            node.route_id,
                            node.request_reply or node.scheme in REQUEST_REPLY_SCHEMES,
                        )
                    )
                elif isinstance(node, ToD):
                    scheme = uri_scheme(node.uri)
                    if scheme in LOCAL_SCHEMES:
                        continue
                    out.append(
                        EndpointInfo(
                            node.uri,
                            scheme,
                            node.processor_id,
                            node.route_id,
                            node.request_reply or scheme in REQUEST_REPLY_SCHEMES,
                            dynamic=True,
                        )
                    )

        visit(self.route(route_id))
        return out

    # -- running

    def run(
        self,
        route_id: str,
        payload: Payload | Mapping[str, Any],
        *,
        capture: str = "PROCESSOR",
        replay_of: Execution | None = None,
        context: RunContext | None = None,
        exchange_id: str | None = None,
        execution_id: str | None = None,
        replay_id: str | None = None,
        source_exchange_id: str | None = None,
        environment: str | None = None,
        application_id: str | None = None,
        instance_id: str | None = None,
        capture_max_bytes: int = DEFAULT_CAPTURE_MAX_BYTES,
        correlation_id: str | None = None,
    ) -> Execution:
        """Run one exchange through ``route_id`` and return its Execution.

        A failing exchange is not an error here: it comes back with ``status == "FAILED"``,
        the Camel error type, message and stack trace. Raises :class:`RouteError` only for
        the caller's mistakes (an unknown route id, an unknown capture mode).
        """
        route = self.route(route_id)
        if capture not in CAPTURE_MODES:
            raise RouteError(
                f"capture mode {capture!r} is not one of {', '.join(CAPTURE_MODES)}",
                code="BAD_CAPTURE_MODE",
                hint="PROCESSOR captures payloads at every processor, ROUTE at entry and exit",
            )
        if capture_max_bytes < 0:
            raise RouteError(f"capture_max_bytes must be >= 0, not {capture_max_bytes}")
        if not isinstance(payload, Payload):
            payload = Payload.from_wire(payload)
        ctx = context if context is not None else RunContext()
        exchange_id = exchange_id or ctx.next_id()
        execution_id = execution_id or _new_execution_id(ctx)
        body = (
            payload.body if payload.body is None or isinstance(payload.body, str) else to_text(payload.body)
        )
        start = ctx.now()  # also the exchange's creation time (${date:exchangeCreated})
        exchange = Exchange(
            exchange_id=exchange_id,
            body=body,
            headers=Headers(payload.headers),
            properties=dict(payload.properties),
            route_id=route.route_id,
            from_route_id=route.route_id,
            context=ctx,
            created=start,
        )
        input_headers = capture_map(exchange.headers.pairs())
        input_properties = capture_map(exchange.properties.items())
        run = Run(
            self,
            capture=capture == "PROCESSOR",
            max_bytes=capture_max_bytes,
            context=ctx,
            execution_id=execution_id,
            exchange_id=exchange_id,
            replay_id=replay_id,
            stubs=stub_index(replay_of) if replay_of is not None else None,
        )
        p0 = ctx.perf() if ctx.perf is not None else 0.0
        failure: ExchangeFailure | None = None
        try:
            run.pipeline(route.steps, exchange, None, 0, 0)
        except ExchangeFailure as err:
            failure = err
            exchange.exception = err
        end = ctx.now()
        duration = duration_ms(ctx.perf() - p0 if ctx.perf is not None else (end - start).total_seconds())
        records = tuple(r for r in run.records if r is not None)
        if source_exchange_id is None and replay_of is not None:
            source_exchange_id = replay_of.exchange_id
        return Execution(
            execution_id=execution_id,
            exchange_id=exchange_id,
            route_id=route.route_id,
            status="FAILED" if failure is not None else "COMPLETED",
            correlation_id=correlation_id or exchange_id,
            route_version=self.version,
            application_id=application_id,
            instance_id=instance_id,
            environment=environment,
            start_time=start,
            end_time=end,
            duration_ms=duration,
            error_type=failure.error_type if failure is not None else None,
            error_message=failure.message if failure is not None else None,
            processor_count=len(records),
            capture_mode=capture,
            is_replay=replay_of is not None or replay_id is not None,
            replay_id=replay_id,
            source_exchange_id=source_exchange_id,
            input_body=body,
            output_body=to_text(exchange.body),
            input_headers=input_headers,
            output_headers=capture_map(header_pairs(exchange.headers)),
            input_properties=input_properties,
            output_properties=capture_map(exchange.properties.items()),
            error_stack_trace=failure.stack_trace() if failure is not None else None,
            processors=records,
        )

    def __repr__(self) -> str:
        return f"<RouteSet {self.version or ''} routes={self.route_ids}>"
