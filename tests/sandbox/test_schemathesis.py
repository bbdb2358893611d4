"""Schemathesis against the sandbox's own OpenAPI document (issue 4, "Tests that must exist").

A real sandbox (uvicorn in a thread, three real agents) serves ``GET /api/v1/api-docs``; the
document is loaded with ``schemathesis.openapi.from_dict`` and every operation is fuzzed with
Hypothesis: valid (``POSITIVE``) and invalid (``NEGATIVE``) requests, and valid ones about a
stored execution / replay (generated ids would only ever meet 404). Every response must

* not be a server error (``not_a_server_error``: no 5xx),
* have a status code the document declares for the operation (``status_code_conformance``),
* have a declared content type (``content_type_conformance``),
* match the declared response schema (``response_schema_conformance``).

Two exceptions, both narrow: a 503 ``AGENT_UNAVAILABLE`` on ``POST /replays`` that is true (see
``_no_live_agent_matches``), and a 500 that matches a known finding (``_known_finding``; each
has a strict-xfail reproduction below, to be removed with the fix).

The size is set for CI (``MAX_EXAMPLES`` per operation and mode, no shrinking, no deadline):
about 2,500 requests in under a minute on two cores. ``MOAT_NB_FUZZ_EXAMPLES`` changes it
(``MOAT_NB_FUZZ_EXAMPLES=25`` for a quick look, ``=1000`` for a long local run).

The sandbox is this module's own (not the session ``sandbox`` fixture of ``conftest.py``):
fuzzing registers agents, creates users' replays and revokes tokens, which must not leak into
the other sandbox tests.

Authentication, per operation (the ``x-access`` of the document):

* user operations run as ``admin`` (Bearer token from ``POST /auth/login``), who holds every
  permission, so the requests reach the handlers instead of stopping at 403;
* ``POST /agents/register`` runs with the agent bootstrap token (its only credential);
* the agent-only operations (heartbeat, command ack, ``POST /data/chunks``) run as an agent
  this module registers itself (``fuzz-agent``), with ``instanceId`` pinned to that agent in
  the path so the handlers run rather than the "not your instance" 403;
* ``POST /auth/refresh`` sends the refresh token of a second admin login (its credential);
* the other public ones (health, login, api-docs) are sent as generated, with no token.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from moat_nb.sandbox import start
from moat_nb.sandbox.runner import SandboxHandle

MAX_EXAMPLES = int(os.environ.get("MOAT_NB_FUZZ_EXAMPLES", "150"))
"""Hypothesis examples per operation (half valid, half invalid requests on average)."""

MIN_REQUESTS = 15 * MAX_EXAMPLES
"""The file fails below this many requests in total (17 operations take parameters, each
gets ``MAX_EXAMPLES``), so it cannot pass by sending nothing."""

FUZZ_AGENT = "fuzz-agent"
RECORD = {"seq": 0, "processorId": "p", "processorType": "log", "routeId": "r", "status": "COMPLETED"}
"""A minimal processor record of a chunk (the reproductions of the findings below)."""

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# Operations fuzzed, by operationId, and the credential they are sent with. Every operation
# of the document must be here or in EXCLUDED (test_every_operation_is_covered), so a new
# endpoint cannot escape the fuzzing unnoticed.
FUZZED: dict[str, str] = {
    "listAuditEvents": "admin",
    "exportAuditLog": "admin",
    "verifyAuditLog": "admin",
    "listAgents": "admin",
    "registerAgent": "bootstrap",
    "ackCommand": "agent",
    "agentHeartbeat": "agent",
    "postChunk": "agent",
    "apiDocs": "none",
    "login": "none",
    "refresh": "refresh",
    "health": "none",
    "getExecution": "admin",
    "getProcessorSnapshot": "admin",
    "createReplay": "admin",
    "listReplays": "admin",
    "replayPreflight": "admin",
    "getReplay": "admin",
    "replayStreamTicket": "admin",
    "searchExecutions": "admin",
}

EXCLUDED: dict[str, str] = {
    # Server-sent event streams stay open until the client leaves (DESIGN.md section 5): a
    # request whose parameters are accepted never completes, so Schemathesis (which reads the
    # whole body) would hang. Their refusals (bad ticket, bad Last-Event-ID, foreign replay)
    # are tested in test_replays.py / test_agent.py / test_hardening.py.
    "replayEvents": "SSE stream of a replay's trace: an accepted request never ends",
    "agentEvents": "SSE command stream of an agent: an accepted request never ends",
}

# Findings of this fuzzing that are server bugs. Each has a deterministic reproduction below,
# marked xfail (strict: once the bug is fixed the test passes, fails as XPASS, and the mark and
# the matching predicate in _known_finding are to be removed). The fuzz tests count a response
# that matches a finding instead of failing on it, so they stay green and keep fuzzing the rest.
CHUNK_BODY_TYPE = (
    "POST /data/chunks answers 500 (TypeError / AttributeError in server.redact_chunk) when a "
    "processor's or the execution's inputBody/outputBody is not a string or null and the chunk "
    "holds a secret-looking name (e.g. an Authorization header): redaction runs before the "
    "store's field check (store.py BAD_FIELD), so the bad type reaches may_hold_secret_names / "
    "redact_body. Expected 400 BAD_FIELD, as without the secret-looking name"
)
TIME_OVERFLOW = (
    "a date-time at the edge of the datetime range whose offset moves it past that range in UTC "
    "(0001-01-01T00:00:01+02:00, 9999-12-31T23:59:59-02:00) answers 500: OverflowError 'date "
    "value out of range' in moat_nb.model.parse_time -> _ms (dt.astimezone(UTC)). Seen on POST "
    "/search/executions timeFrom/timeTo, GET /admin/audit from/to, POST /data/chunks startTime. "
    "Expected 400 VALIDATION (a time the server cannot represent)"
)


@dataclass
class Fuzz:
    """What the tests share: the sandbox, the loaded schema, the credentials, the count."""

    handle: SandboxHandle
    schema: Any
    tokens: dict[str, str]
    session: requests.Session
    known: dict[str, str]
    requests_sent: dict[str, int] = field(default_factory=dict)
    agent_unavailable: int = 0
    findings: dict[str, int] = field(default_factory=dict)
    """Responses that matched a known finding (``_known_finding``), by finding."""
    """Designed 503 ``AGENT_UNAVAILABLE`` answers seen (see :func:`_no_live_agent_matches`)."""


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    handle = start(port=0, data=tmp_path_factory.mktemp("schemathesis"), per_env=10)
    try:
        with httpx.Client(base_url=handle.api, timeout=15.0) as client:
            document = client.get("/api-docs")
            assert document.status_code == 200, document.text
            login = client.post("/auth/login", json={"username": "admin", "password": "admin"})
            assert login.status_code == 200, login.text
            registered = client.post(
                "/agents/register",
                json={"instanceId": FUZZ_AGENT, "applicationId": "orders", "environmentId": "dev"},
                headers={"Authorization": f"Bearer {handle.state.bootstrap_token}"},
            )
            assert registered.status_code == 200, registered.text
            admin = {"Authorization": f"Bearer {login.json()['accessToken']}"}
            found = client.post(
                "/search/executions",
                json={"environment": "dev", "status": "COMPLETED", "isReplay": False, "limit": 1},
                headers=admin,
            )
            assert found.status_code == 200 and found.json()["data"], found.text
            execution_id = found.json()["data"][0]["executionId"]
            exchange_id = found.json()["data"][0]["exchangeId"]
            replay = client.post(
                "/replays",
                json={"sourceExchangeId": exchange_id, "reason": "schemathesis fixture"},
                headers={**admin, "Idempotency-Key": "schemathesis-fixture"},
            )
            assert replay.status_code == 202, replay.text
            # A second login gives refresh a token of its own: rotating it leaves admin's alone.
            second = client.post("/auth/login", json={"username": "admin", "password": "admin"})
            assert second.status_code == 200, second.text
        schema = schemathesis.openapi.from_dict(document.json())
        tokens = {
            "admin": login.json()["accessToken"],
            "bootstrap": handle.state.bootstrap_token,
            "agent": registered.json()["accessToken"],
            "refresh": second.json()["refreshToken"],
        }
        known = {
            "executionId": execution_id,
            "exchangeId": exchange_id,
            "replayId": replay.json()["replayId"],
        }
        with requests.Session() as session:
            yield Fuzz(handle, schema, tokens, session, known)
    finally:
        handle.stop()


def test_every_operation_is_covered(fuzz: Fuzz) -> None:
    """Each operation of the document is fuzzed or excluded with a reason; none is unknown."""
    declared = {op.ok().definition.raw["operationId"] for op in fuzz.schema.get_all_operations()}
    assert declared == set(FUZZED) | set(EXCLUDED)
    assert not set(FUZZED) & set(EXCLUDED)


def test_the_checks_catch_a_server_error_and_a_schema_violation(fuzz: Fuzz) -> None:
    """The checks used below fail on a 5xx and on a body off its schema (no vacuous pass)."""
    case = fuzz.schema.find_operation_by_id("health").Case()
    response = case.call(base_url=fuzz.handle.url, session=fuzz.session, timeout=15)
    case.validate_response(response, checks=CHECKS)  # the real answer conforms

    def forged(status: int, body: Any) -> Response:
        return Response(status, response.headers, json.dumps(body).encode(), response.request, 0.0, True)

    # 500 is a declared status of health (every operation declares the SERVER_ERROR envelope),
    # so only not_a_server_error can catch the first; the second is off the Health schema.
    for bad in (forged(500, {"status": "UP"}), forged(200, {"status": "DOWN-ish"})):
        with pytest.raises(FailureGroup):
            case.validate_response(bad, checks=CHECKS)


def _known_finding(operation_id: str, case: Any, response: Response) -> str | None:
    """The open finding ``response`` shows, if any. None are open: the two this fuzzing found
    (CHUNK_BODY_TYPE, TIME_OVERFLOW) are fixed and kept as regression tests below."""
    return None


def test_finding_chunk_with_a_non_string_body_and_a_secret_name(fuzz: Fuzz) -> None:
    """Regression test of a fuzzing finding (CHUNK_BODY_TYPE, fixed in server.redact_chunk)."""
    chunk = {
        "executionId": "fuzz-finding-1",
        "exchangeId": "fuzz-finding-1",
        "chunkSeq": 0,
        "final": False,
        "processors": [{**RECORD, "outputBody": 1.5, "inputHeaders": {"Authorization": "x"}}],
    }
    answer = httpx.post(
        f"{fuzz.handle.api}/data/chunks",
        json=chunk,
        headers={"Authorization": f"Bearer {fuzz.tokens['agent']}", "X-Cameleer-Protocol-Version": "1"},
        timeout=15,
    )
    assert answer.status_code == 400, answer.text


@pytest.mark.parametrize("where", ["search timeTo", "audit from", "chunk startTime"])
def test_finding_edge_time_overflows(fuzz: Fuzz, where: str) -> None:
    """Regression test of a fuzzing finding (TIME_OVERFLOW, fixed in model.parse_time): 400."""
    edge = "0001-01-01T00:00:01+02:00"
    admin = {"Authorization": f"Bearer {fuzz.tokens['admin']}"}
    with httpx.Client(base_url=fuzz.handle.api, timeout=15) as client:
        if where == "search timeTo":
            answer = client.post("/search/executions", json={"timeTo": edge}, headers=admin)
        elif where == "audit from":
            answer = client.get("/admin/audit", params={"from": edge}, headers=admin)
        else:
            chunk = {
                "executionId": "fuzz-finding-2",
                "exchangeId": "fuzz-finding-2",
                "chunkSeq": 0,
                "final": False,
                "processors": [{**RECORD, "startTime": edge}],
            }
            agent = {"Authorization": f"Bearer {fuzz.tokens['agent']}", "X-Cameleer-Protocol-Version": "1"}
            answer = client.post("/data/chunks", json=chunk, headers=agent)
    assert answer.status_code == 400, answer.text


def _no_live_agent_matches(fuzz: Fuzz, case: Any, response: Response) -> bool:
    """Whether ``response`` is the designed 503 ``AGENT_UNAVAILABLE`` of ``POST /replays``.

    DESIGN.md (errors table) and the document declare 503 ``AGENT_UNAVAILABLE`` when no LIVE
    agent can take the replay: it is "try again later", not a server fault. It is accepted only
    when it is *true*: the body names a ``targetEnvironment`` / ``targetAgent`` and no agent that
    ``GET /agents`` lists as LIVE matches both. A 503 for a request with no target (the source's
    environment, whose agent is live) or for a target that has a LIVE agent still fails.
    """
    if response.status_code != 503 or not isinstance(case.body, dict):
        return False
    if json.loads(response.content).get("error") != "AGENT_UNAVAILABLE":
        return False
    environment, instance = case.body.get("targetEnvironment"), case.body.get("targetAgent")
    if environment is None and instance is None:
        return False
    listed = httpx.get(
        f"{fuzz.handle.api}/agents", headers={"Authorization": f"Bearer {fuzz.tokens['admin']}"}, timeout=15
    )
    assert listed.status_code == 200, listed.text
    return not [
        agent
        for agent in listed.json()
        if agent["status"] == "LIVE"
        and instance in (None, agent["instanceId"])
        and environment in (None, agent["environmentId"])
    ]


def _on_known_records(operation: Any, known: dict[str, str]) -> st.SearchStrategy[Any]:
    """Valid requests about records that exist, so the handlers' success paths run too.

    Generated ids almost never name a stored execution or replay (every such request would
    end in 404); here the id parameters are pinned to ones the fixture made, the rest generated.
    """
    path = {name: known[name] for name in ("executionId", "replayId") if "{" + name + "}" in operation.path}
    query = {"sourceExchangeId": known["exchangeId"]} if operation.path.endswith("/preflight") else None
    strategy = operation.as_strategy(GenerationMode.POSITIVE, path_parameters=path or None, query=query)
    if operation.path.endswith("/replays") and operation.method.upper() == "POST":

        def on_source(case: Any) -> Any:
            if isinstance(case.body, dict):
                case.body["sourceExchangeId"] = known["exchangeId"]
            return case

        strategy = strategy.map(on_source)
    return strategy


@pytest.mark.parametrize("operation_id", list(FUZZED))
def test_operation_conforms(fuzz: Fuzz, operation_id: str) -> None:
    """Generated requests (valid and invalid) get no 5xx and answers the document declares."""
    operation = fuzz.schema.find_operation_by_id(operation_id)
    credential = FUZZED[operation_id]
    pinned: dict[str, Any] = {}
    if credential == "agent" and "instanceId" in operation.path:
        pinned["path_parameters"] = {"instanceId": FUZZ_AGENT}
    headers = {"Authorization": f"Bearer {fuzz.tokens[credential]}"} if credential != "none" else {}
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE, **pinned),
        operation.as_strategy(GenerationMode.NEGATIVE, **pinned),
        _on_known_records(operation, fuzz.known),
    )

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        # No shrinking: a failure is reported with the request that showed it, and CI stays short.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(base_url=fuzz.handle.url, session=fuzz.session, headers=headers, timeout=15)
        fuzz.requests_sent[operation_id] = fuzz.requests_sent.get(operation_id, 0) + 1
        checks = CHECKS
        finding = _known_finding(operation_id, case, response)
        if finding is not None:
            fuzz.findings[finding] = fuzz.findings.get(finding, 0) + 1
            return
        if operation_id == "createReplay" and _no_live_agent_matches(fuzz, case, response):
            fuzz.agent_unavailable += 1
            checks = [c for c in CHECKS if c is not not_a_server_error]
        case.validate_response(response, checks=checks, headers=headers)

    run()
    assert fuzz.requests_sent.get(operation_id, 0) >= 1


def test_enough_requests_were_sent(fuzz: Fuzz) -> None:
    """The fuzzing above sent ``MIN_REQUESTS`` or more (runs last: pytest keeps file order).

    Each fuzz test already fails if it sent nothing; this checks the total when all ran."""
    if len(fuzz.requests_sent) < len(FUZZED):
        pytest.skip(f"only {sorted(fuzz.requests_sent)} were fuzzed in this run (-k?): no total to check")
    total = sum(fuzz.requests_sent.values())
    assert total >= MIN_REQUESTS, fuzz.requests_sent
