"""The seeded traffic generator: a recorded history for the sandbox (DESIGN.md section 8).

For each environment of an app (``dev``, ``staging``, ``prod``: a route version and a capture
mode each) it runs ``per_env`` exchanges of the app's entry route through the route engine, each
at a recorded time spread over ``[start, start + span)``, and yields one final
:class:`~moat_nb.model.Chunk` per execution: the body of ``POST /data/chunks``.

Pure apart from what it is handed: every clock reading and every random draw comes from a
:class:`random.Random` derived from ``seed`` (string seeds are hashed with SHA-512 by
:mod:`random`, so they do not depend on ``PYTHONHASHSEED``), so one seed gives one history byte
for byte — exchange ids, execution ids, times, bodies.

Kept apart from storage on purpose: :func:`plan` says what each environment's agent must run,
:func:`run` runs one planned exchange, :func:`chunk` wraps the execution for ingestion. Today
:func:`build_history` feeds the chunks straight into a :class:`~moat_nb.sandbox.store.Store`;
when the agents exist, each agent runs its environment's plan and posts the same chunks over
HTTP, so history and replays are stored by one code path.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ..errors import RouteError, ValidationError
from ..model import Chunk, Execution, Payload
from .apps import App, EnvironmentSpec
from .camel.exchange import RunContext

if TYPE_CHECKING:
    from .camel import RouteSet
    from .store import Store

__all__ = [
    "DEFAULT_START",
    "PlannedExchange",
    "Clock",
    "plan",
    "first_planned",
    "run",
    "chunk",
    "generate",
    "build_history",
    "load_routesets",
    "instance_id",
]

#: Where history starts when no ``start`` is given: a fixed instant, so that the default history
#: does not depend on when it was made. The sandbox passes ``start=now - span`` (runner.py).
DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)

#: Mean time between two clock readings inside one exchange: the engine reads the clock around
#: every processor, so durations come out at a fraction of a millisecond per processor.
_MEAN_STEP_US = 120.0


def _rng(seed: int | str, *parts: object) -> random.Random:
    """An independent random source for one purpose, derived from the seed (stable across runs)."""
    return random.Random(":".join(str(p) for p in ("moat-traffic", seed, *parts)))


class Clock:
    """The clock one exchange reads: it starts at the recorded time and moves forward by a
    random step (exponential, mean ~0.12 ms) at each reading, so durations vary realistically
    and still follow from the seed."""

    def __init__(self, start: datetime, rng: random.Random, mean_step_us: float = _MEAN_STEP_US) -> None:
        self._now = start
        self._rng = rng
        self._mean = mean_step_us

    def __call__(self) -> datetime:
        now = self._now
        self._now = now + timedelta(microseconds=self._rng.expovariate(1.0 / self._mean))
        return now


@dataclass(frozen=True)
class PlannedExchange:
    """One exchange an environment's agent runs: its input, when, and with which sources."""

    environment: EnvironmentSpec
    index: int
    recorded_at: datetime
    payload: Payload
    context: RunContext


def instance_id(app: App, environment: str) -> str:
    """The agent (instance) id of an environment: one agent each (section 8), e.g. ``orders-prod-1``."""
    return f"{app.name}-{environment}-1"


def _recorded_times(rng: random.Random, n: int, start: datetime, span: timedelta) -> list[datetime]:
    """``n`` strictly increasing millisecond instants, uniformly spread over ``[start, start + span)``."""
    span_ms = span // timedelta(milliseconds=1)
    if n > span_ms:
        raise ValidationError(
            f"cannot place {n} exchanges at distinct milliseconds within {span}",
            hint="use a longer span or fewer exchanges",
        )
    # sample() over a range draws distinct offsets without building the range.
    return [start + timedelta(milliseconds=ms) for ms in sorted(rng.sample(range(span_ms), n))]


def _environments(app: App, environments: Sequence[str] | None) -> list[EnvironmentSpec]:
    names = list(app.environments) if environments is None else list(environments)
    unknown = [n for n in names if n not in app.environments]
    if unknown:
        raise ValidationError(
            f"unknown environment(s) {unknown} for app {app.name!r}",
            hint=f"choose among {sorted(app.environments)}",
        )
    return [app.environments[n] for n in names]


def plan(
    app: App,
    environment: str,
    *,
    per_env: int = 500,
    seed: int | str = 0,
    start: datetime | None = None,
    span: timedelta = timedelta(days=7),
) -> Iterator[PlannedExchange]:
    """The exchanges one environment runs, in recorded-time order (pure; arguments are checked
    at the call, the exchanges are made as they are iterated)."""
    if app.sample_payload is None:
        raise ValidationError(f"app {app.name!r} has no sample_payload: it cannot make traffic")
    if per_env < 0:
        raise ValidationError(f"per_env must be >= 0, not {per_env}")
    (spec,) = _environments(app, [environment])
    start = DEFAULT_START if start is None else start
    if start.tzinfo is None:
        raise ValidationError(
            f"start {start.isoformat()} has no time zone", hint="pass an aware UTC datetime"
        )
    times = _recorded_times(_rng(seed, app.name, spec.name, "times"), per_env, start.astimezone(UTC), span)
    return _planned(app, spec, seed, times)


def _planned(
    app: App, spec: EnvironmentSpec, seed: int | str, times: list[datetime]
) -> Iterator[PlannedExchange]:
    assert app.sample_payload is not None
    for i, at in enumerate(times):
        # Separate sources for the input, the clock and the run: what one exchange draws does not
        # shift any other exchange, and the input does not depend on how the route behaves.
        payload = app.sample_payload(_rng(seed, app.name, spec.name, "payload", i), i)
        context = RunContext(
            now=Clock(at, _rng(seed, app.name, spec.name, "clock", i)),
            rng=_rng(seed, app.name, spec.name, "run", i),
        )
        yield PlannedExchange(spec, i, at, payload, context)


def first_planned(
    app: App,
    environment: str,
    *,
    per_env: int,
    seed: int | str = 0,
    start: datetime | None = None,
    span: timedelta = timedelta(days=7),
) -> tuple[str, datetime] | None:
    """The exchange id and recorded time of the first exchange :func:`plan` gives, or None when
    it gives none. Neither its route nor ``sample_payload`` runs: user code (a bean that counts,
    say) sees exactly the calls a history makes, so that completing it makes the same chunks."""
    if per_env < 1:
        return None
    (spec,) = _environments(app, [environment])
    start = DEFAULT_START if start is None else start
    times = _recorded_times(_rng(seed, app.name, spec.name, "times"), per_env, start.astimezone(UTC), span)
    # The engine draws the exchange id first from the run's source (RouteSet.run: ctx.next_id()).
    return RunContext(rng=_rng(seed, app.name, spec.name, "run", 0)).next_id(), times[0]


def run(app: App, routesets: Mapping[str, RouteSet], planned: PlannedExchange) -> Execution:
    """Run one planned exchange through its environment's route version, labelled as recorded."""
    spec = planned.environment
    routes = routesets.get(spec.version)
    if routes is None:
        raise RouteError(
            f"no routes for version {spec.version!r} (environment {spec.name!r})",
            hint=f"pass routesets with the keys {sorted({e.version for e in app.environments.values()})}",
        )
    execution = routes.run(
        app.entry_route,
        planned.payload,
        capture=spec.capture,
        context=planned.context,
        environment=spec.name,
        application_id=app.application_id,
        instance_id=instance_id(app, spec.name),
    )
    if execution.route_version != spec.version:  # a RouteSet loaded without its version name
        execution = replace(execution, route_version=spec.version)
    return execution


def chunk(execution: Execution) -> Chunk:
    """A whole execution as one final chunk: the summary and its flat processor records."""
    return Chunk(
        execution_id=execution.execution_id,
        exchange_id=execution.exchange_id,
        chunk_seq=0,
        final=True,
        replay_id=execution.replay_id,
        execution=replace(execution, processors=None),
        processors=execution.processors or (),
    )


def generate(
    app: App,
    routesets: Mapping[str, RouteSet],
    *,
    per_env: int = 500,
    seed: int | str = 0,
    start: datetime | None = None,
    span: timedelta = timedelta(days=7),
    environments: Sequence[str] | None = None,
) -> Iterator[Chunk]:
    """One final chunk per execution: each environment's exchanges in recorded-time order,
    environment after environment (``app.environments`` order unless ``environments`` is given)."""
    for spec in _environments(app, environments):
        for planned in plan(app, spec.name, per_env=per_env, seed=seed, start=start, span=span):
            yield chunk(run(app, routesets, planned))


def build_history(
    store: Store,
    app: App,
    routesets: Mapping[str, RouteSet],
    *,
    transform: Callable[[Chunk], Chunk] | None = None,
    **kw: object,
) -> int:
    """Generate a history and ingest it; returns the number of executions stored.

    ``transform`` is applied to each chunk before it is stored (e.g. the server's redaction of
    secrets, section 4 "Input rules"); ``kw`` are :func:`generate`'s keyword arguments.
    """
    chunks = generate(app, routesets, **kw)  # type: ignore[arg-type]
    if transform is not None:
        chunks = (transform(c) for c in chunks)
    return store.ingest_many(chunks)


def load_routesets(app: App) -> dict[str, RouteSet]:
    """Every route version of the app, loaded with its beans: the ``routesets`` argument above."""
    from .camel import RouteSet

    return {
        name: RouteSet.load(path, app.beans, endpoints=app.endpoints, version=name)
        for name, path in app.versions.items()
    }
