"""Replay preflight and the recorded replies a replay's stubs answer with (DESIGN.md sections 4
and 8: "a replay marks external endpoints ``stubbed: true`` and answers with the reply recorded
in the source exchange ... Preflight lists them").

``GET /replays/preflight?sourceExchangeId=&targetEnvironment=&targetAgent=&modified=`` answers,
without running anything: the agent the replay would go to (or why none can take it), the route
version it runs, every external endpoint the route can reach (``RouteSet.endpoints``, following
``direct:`` calls; all of them are stubbed in a replay), the permissions the replay needs — from
the *stored* source environment and the chosen agent's registered one (section 6) — and which of
them the caller lacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import AgentUnavailable, NotFound, ValidationError
from ..model import Execution
from ..payload import redact_uri
from .camel.endpoints import LOCAL_SCHEMES, uri_scheme
from .replay_api import valid_id
from .security import Principal, replay_permissions

if TYPE_CHECKING:
    from .state import SandboxState
    from .store import Store

__all__ = ["no_source", "preflight", "stub_replies", "PREFLIGHT_PARAMS"]

PREFLIGHT_PARAMS = frozenset({"sourceExchangeId", "targetEnvironment", "targetAgent", "modified"})


def _is_external(uri: str | None) -> bool:
    return bool(uri) and uri_scheme(uri or "") not in LOCAL_SCHEMES


def stub_replies(source: Execution) -> list[dict[str, Any]]:
    """The recorded replies of the source's external endpoints, for the agent's stubs
    (``stubReplies`` of the replay command): one per processor that called an external endpoint,
    ``[]`` for a ROUTE-captured source (the agent then simulates, section 8)."""
    return [
        {
            "routeId": p.route_id,
            "processorId": p.processor_id,
            "iteration": p.iteration,
            "body": p.output_body,
        }
        for p in source.processors or ()
        if p.processor_type != "from" and _is_external(p.endpoint_uri)
    ]


def _endpoints(routes: Any, source: Execution, mask: Any) -> list[dict[str, Any]]:
    """The endpoints the replay would reach, their URIs redacted as a trace's are (a route file
    may spell a key in a URI, ``?apiKey=...``: preflight showed it in clear; found by review)."""
    return [
        {**ep, "uri": redact_uri(ep["uri"], mask)} if isinstance(ep.get("uri"), str) else ep
        for ep in _reached(routes, source)
    ]


def _reached(routes: Any, source: Execution) -> list[dict[str, Any]]:
    if routes is not None:
        found = [ep.to_wire() for ep in routes.endpoints(source.route_id)]
    else:  # no route set for that version: what the recorded trace reached
        seen: set[tuple[str, str]] = set()
        found = []
        for p in source.processors or ():
            if p.processor_type == "from" or not _is_external(p.endpoint_uri) or p.endpoint_uri is None:
                continue
            if (p.route_id, p.processor_id) in seen:
                continue
            seen.add((p.route_id, p.processor_id))
            found.append(
                {
                    "uri": p.endpoint_uri,
                    "scheme": uri_scheme(p.endpoint_uri),
                    "processorId": p.processor_id,
                    "routeId": p.route_id,
                }
            )
    # Section 8: a replay never calls an external endpoint; every one listed here is stubbed.
    return [{**ep, "stubbed": True} for ep in found]


def no_source(store: Store, exchange_id: str) -> NotFound:
    """The 404 for a source exchange that is not recorded; an execution id given in its place
    (the usual slip: a frame has both columns) is named with its exchange id."""
    execution = store.execution(exchange_id)
    if execution is not None:
        return NotFound(
            f"no recorded exchange {exchange_id!r}: that is the id of an execution, of exchange "
            f"{execution.exchange_id!r}",
            hint=f"replay the exchange: sourceExchangeId {execution.exchange_id!r} "
            "(in Python, the exchange_id column, or the Execution itself)",
            details={"sourceExchangeId": exchange_id, "exchangeId": execution.exchange_id},
        )
    return NotFound(
        f"no recorded exchange {exchange_id!r}",
        hint="find exchanges by searching the history (POST /search/executions; p.executions(...) in Python)",
        details={"sourceExchangeId": exchange_id},
    )


def preflight(
    state: SandboxState, principal: Principal, params: Mapping[str, str], routesets: Mapping[str, Any]
) -> dict[str, Any]:
    """The preflight answer (see the module docstring); 400 for bad parameters, 404 for an
    unknown exchange. An unavailable agent is reported in ``agentError``, not raised."""
    unknown = sorted(set(params) - PREFLIGHT_PARAMS)
    if unknown:
        raise ValidationError(f"unknown query parameters {unknown}", details={"unknown": unknown})
    exchange_id = params.get("sourceExchangeId")
    if exchange_id is None:
        raise ValidationError("sourceExchangeId is required", details={"field": "sourceExchangeId"})
    valid_id(exchange_id, "sourceExchangeId")
    target_env = params.get("targetEnvironment")
    target_agent = params.get("targetAgent")
    if target_env is not None:
        valid_id(target_env, "targetEnvironment")
    if target_agent is not None:
        valid_id(target_agent, "targetAgent")
    modified = params.get("modified", "false").lower() in ("1", "true", "yes")
    source_id = state.store.replay_source_id(exchange_id)
    source = None if source_id is None else state.store.execution(source_id)
    if source is None:
        raise no_source(state.store, exchange_id)
    wanted = target_env if target_env is not None or target_agent else source.environment
    agent_wire: dict[str, Any] | None = None
    agent_error: str | None = None
    env, version = wanted, None
    try:
        agent = state.agents.pick(wanted, instance_id=target_agent)
        agent_wire = agent.to_wire()
        env, version = agent.environment_id, agent.route_version
    except AgentUnavailable as exc:
        agent_error = exc.message
    spec = state.app.environments.get(env or "")
    if version is None and spec is not None:
        version = spec.version
    needed = replay_permissions(source.environment, env, modified=modified)
    return {
        "sourceExchangeId": source.exchange_id,
        "sourceExecutionId": source.execution_id,
        "routeId": source.route_id,
        "sourceEnvironment": source.environment,
        "targetEnvironment": env,
        "routeVersion": version,
        "agent": agent_wire,
        "agentError": agent_error,
        "endpoints": _endpoints(routesets.get(version) if version else None, source, state.redactor.value),
        "requiredPermissions": needed,
        "missingPermissions": [p for p in needed if not principal.has(p)],
        "captureMode": "PROCESSOR",
        "stubReplies": len(stub_replies(source)),
    }
