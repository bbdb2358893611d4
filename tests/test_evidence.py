"""The pure checks of :mod:`moat_nb.evidence` on hand-made evidence (no platform): what
``report verify`` concludes when the audit has no hash of what a claim rests on. The whole
proof, from a real sandbox through papermill to ``report verify``, is tested in test_report.py."""

from __future__ import annotations

import copy
import functools
import json
import random
from datetime import UTC, datetime
from typing import Any

from moat_nb.diff import diff
from moat_nb.evidence import EVIDENCE_FORMAT, diff_evidence, execution_facts, verify_evidence
from moat_nb.expectations import Expectation, Subject, evaluate_one
from moat_nb.model import Payload, ProcessorRecord
from moat_nb.payload import trace_digest, trace_sha256

LONG_ID = 2**60 + 7  # a Java long id: beyond what RFC 8785 (JCS) can write
#: The order the diff tests replay through the sample app's routes (a bronze EU customer).
ORDER = {"orderId": "ORD-1", "customerId": "C-1003", "currency": "EUR", "channel": "web",
         "lines": [{"sku": "SKU-100", "qty": 1, "unitPrice": 19.99}]}  # fmt: skip


@functools.cache
def _orders_routes(version: str) -> Any:
    from moat_nb.sandbox.apps.orders import APP
    from moat_nb.sandbox.camel import RouteSet

    return RouteSet.load(APP.versions[version], APP.beans, endpoints=APP.endpoints, version=version)


def run_orders(version: str, order: Any = ORDER, *, seed: int = 1, **kw: Any) -> Any:
    """One exchange through the orders app's ``version`` in this process, at a fixed clock
    (2026-01-``seed``) and random seed: real engine executions for the diffs verify re-checks."""
    from moat_nb.sandbox.apps.orders import APP
    from moat_nb.sandbox.camel import FixedClock, RunContext

    body = order if isinstance(order, str) else json.dumps(order)
    payload = Payload(headers={"channel": "web"}, body=body, properties={})
    context = RunContext(rng=random.Random(seed), now=FixedClock(datetime(2026, 1, seed, tzinfo=UTC)))
    return _orders_routes(version).run(APP.entry_route, payload, context=context, **kw)


def _evidence(
    output: dict[str, Any], detail: dict[str, Any], expectation: dict[str, Any], **extra: Any
) -> dict:
    exp = Expectation.from_wire(expectation)
    subject = extra.pop("subject", None) or Subject.from_wire(output)
    recorded = evaluate_one(exp, subject).to_wire()
    final = {
        "seq": 3,
        "action": "REPLAY_COMPLETED",
        "target": {"replayId": "r-1"},
        "detail": detail,
        "prevHash": "0" * 64,
        "hash": "1" * 64,
    }
    return {
        "format": EVIDENCE_FORMAT,
        "audit": {"events": [final]},
        "replay": {"replayId": "r-1"},
        "output": output,
        "parameters": {"expectations": [expectation]},
        "expectations": [recorded],
        **extra,
    }


def _check(checks: list[Any], name: str) -> Any:
    return next((c for c in checks if c.name == name), None)


def test_an_output_map_the_audit_has_no_hash_of_is_not_vouched_for() -> None:
    # An older sandbox audited no hash (null) of a map holding a long id; the check compared the
    # claimed map's missing hash with it and passed whatever the map held (found by review).
    output = {"status": "COMPLETED", "body": None, "headers": {"orderId": LONG_ID, "route": "FORGED"}}
    evidence = _evidence(output, {"outputHeadersSha256": None}, {"path": "headers:route", "equals": "FORGED"})
    checks = verify_evidence(evidence, None)
    assert _check(checks, "audited output headers hash") is None
    reevaluated = _check(checks, "expectations re-evaluate")
    assert "rest on the report's own data" in reevaluated.detail
    # Nor when the forger claims the map away, so that "exists: false" holds (a null claimed
    # hashed like the audited null).
    gone = {**output, "headers": None}
    evidence = _evidence(gone, {"outputHeadersSha256": None}, {"path": "headers:X-Error", "exists": False})
    checks = verify_evidence(evidence, None)
    assert _check(checks, "audited output headers hash") is None
    assert "rest on the report's own data" in _check(checks, "expectations re-evaluate").detail


def test_a_processor_output_with_a_long_id_must_be_the_audited_one() -> None:
    # The trace's maps are vouched for by traceSha256; a recorded output that holds a long id
    # had no map hash, and neither had the audited map, so any such output passed as its entry.
    audited = ProcessorRecord(
        execution_id="e-1",
        exchange_id="x-1",
        seq=4,
        processor_id="pricing",
        processor_type="setProperty",
        route_id="orders",
        status="COMPLETED",
        properties={"orderId": LONG_ID, "tier": "GOLD"},
    )
    trace = trace_digest([audited])
    forged = {
        **Subject.of_processor(audited).to_wire(),
        "properties": {"orderId": LONG_ID, "tier": "PLATINUM"},
    }
    expectation = {"path": "properties:tier", "equals": "PLATINUM", "processor": "pricing"}
    outputs = [{"seq": 4, "processorId": "pricing", "iteration": 0, "output": forged}]
    evidence = _evidence(
        {"status": "COMPLETED", "body": None},
        {"traceSha256": trace_sha256(trace)},
        expectation,
        subject=Subject.from_wire(forged),
        trace=trace,
        processorOutputs=outputs,
    )
    reevaluated = _check(verify_evidence(evidence, None), "expectations re-evaluate")
    assert not reevaluated.ok and "not the audited one" in reevaluated.detail
    # The genuine output, long id and all, is its entry's.
    outputs[0]["output"] = Subject.of_processor(audited).to_wire()
    evidence = _evidence(
        {"status": "COMPLETED", "body": None},
        {"traceSha256": trace_sha256(trace)},
        {**expectation, "equals": "GOLD"},
        subject=Subject.of_processor(audited),
        trace=trace,
        processorOutputs=outputs,
    )
    assert _check(verify_evidence(evidence, None), "expectations re-evaluate").ok


def test_the_parameters_show_a_json_body_as_json_not_as_one_escaped_string() -> None:
    # The proof's parameter table showed the body as "{\"orderId\": ..." (notebook walk-through).
    from moat_nb.evidence import ProofParameters

    params = ProofParameters.parse(
        {**_PARAMS_TEXT, "modified_payload": '{"body": {"orderId": "O-1"}, "headers": {"a": "b"}}'}
    )
    shown = params._repr_html_()
    assert "body (JSON text):\n{\n &quot;orderId&quot;: &quot;O-1&quot;\n}" in shown
    assert "\\&quot;" not in shown and "&quot;a&quot;: &quot;b&quot;" in shown
    text = ProofParameters.parse({**_PARAMS_TEXT, "modified_payload": '{"body": "plain text"}'})._repr_html_()
    assert "&quot;body&quot;: &quot;plain text&quot;" in text  # a text that is not JSON stays as it is


_PARAMS_TEXT = {
    "source_exchange_id": "ID-x",
    "target_environment": "staging",
    "expectations": '[{"path": "status", "equals": "COMPLETED"}]',
    "reason": "r",
}


def test_the_environments_report_verify_prints_are_the_audited_ones() -> None:
    # `report verify` prints "replay ... on ENV" from the evidence's replay; a staging replay
    # re-labelled prod there (notebook and hashes redone) verified (found by an audit walk).
    output = {"status": "COMPLETED", "body": None}
    requested = {
        "seq": 1,
        "action": "REPLAY_REQUESTED",
        "target": {"replayId": "r-1"},
        "detail": {"sourceEnvironment": "prod", "targetEnvironment": "staging"},
        "prevHash": "0" * 64,
        "hash": "2" * 64,
    }
    honest = {
        "replayId": "r-1",
        "environment": "staging",
        "sourceEnvironment": "prod",
        "targetEnvironment": "staging",
    }
    evidence = _evidence(
        output, {}, {"path": "status", "equals": "COMPLETED"}, source={"environment": "prod"}
    )
    evidence["audit"]["events"].insert(0, requested)
    evidence["replay"] = honest
    check = _check(verify_evidence(evidence, None), "audited environments")
    assert check.ok, check.detail
    for part, member, forged in (
        ("replay", "targetEnvironment", "prod"),
        ("replay", "environment", "prod"),
        ("replay", "sourceEnvironment", "dev"),
        ("source", "environment", "dev"),
    ):
        claimed = {**evidence, part: {**evidence[part], member: forged}}
        check = _check(verify_evidence(claimed, None), "audited environments")
        assert not check.ok and f"{part}.{member} is {forged!r}" in check.detail


def test_the_request_the_evidence_records_is_the_audited_one() -> None:
    # replay.payloadDiff, replay.agentId, source.executionId and replay.routeId were checked
    # against nothing: a consistent forgery of them verified (audit walk, left open; closed here).
    diff = [{"op": "replace", "path": "/body", "value": '{"qty": 3}'}]
    requested = {
        "seq": 1,
        "action": "REPLAY_REQUESTED",
        "target": {"replayId": "r-1", "routeId": "order-intake"},
        "detail": {"payloadDiff": diff, "targetAgent": "orders-staging-1", "sourceExecutionId": "x-9"},
        "prevHash": "0" * 64,
        "hash": "2" * 64,
    }
    evidence = _evidence(
        {"status": "COMPLETED", "body": None},
        {},
        {"path": "status", "equals": "COMPLETED"},
        source={"executionId": "x-9", "routeId": "order-intake"},  # a replay runs its source's route
    )
    evidence["audit"]["events"].insert(0, requested)
    evidence["replay"] = {
        "replayId": "r-1",
        "payloadDiff": diff,
        "agentId": "orders-staging-1",
        "routeId": "order-intake",
    }
    check = _check(verify_evidence(evidence, None), "audited request")
    assert check.ok, check.detail
    for part, member, forged in (
        ("replay", "payloadDiff", [{"op": "replace", "path": "/body", "value": '{"qty": 30}'}]),
        ("replay", "agentId", "orders-prod-1"),
        ("source", "executionId", "x-1"),
        ("replay", "routeId", "refund"),
    ):
        claimed = {**evidence, part: {**evidence[part], member: forged}}
        check = _check(verify_evidence(claimed, None), "audited request")
        assert not check.ok and f"{part}.{member} is" in check.detail, (member, check)


def test_what_a_failing_receipt_check_says_is_what_failed() -> None:
    # Found by an audit walk: checks printed under FAILED said "all recompute", "seq  found with
    # the same hashes" (no event of the replay), "bundle None" / "exporting needs audit:read"
    # (the bundle file gone from the folder), and named no reason code for a bundle that fails.
    evidence = _evidence({"status": "COMPLETED", "body": None}, {}, {"path": "status", "equals": "COMPLETED"})
    evidence["replay"] = {"replayId": "r-other"}
    checks = verify_evidence(evidence, None)
    for name in ("receipt hashes recompute",):
        check = _check(checks, name)
        assert not check.ok and check.detail == "no audit event names replay r-other"
    evidence["audit"]["bundleSha256"] = "ab" * 32
    evidence["files"] = {"auditBundle": "audit-bundle.json"}
    for name in ("bundle is the one recorded", "bundle verifies"):
        check = _check(verify_evidence(evidence, None), name)
        assert not check.ok and "audit-bundle.json is not in the folder" in check.detail, check.detail
    bundle = {"format": "moat-audit-bundle/v1", "events": [], "checkpoints": [], "publicKeys": {}, "x": 1}
    checks = verify_evidence(evidence, bundle)
    assert _check(checks, "bundle verifies").detail.startswith("MALFORMED: bundle has unknown")
    check = _check(checks, "receipt in bundle")
    assert not check.ok and check.detail == "no audit event names replay r-other"
    assert _check(checks, "receipt under a signed checkpoint").detail.endswith(
        "no signed checkpoint verifies"
    )


def _requested_by(actor: Any) -> dict[str, Any]:
    """Evidence of a passing proof whose audit record starts with a REPLAY_REQUESTED by ``actor``."""
    evidence = _evidence({"status": "COMPLETED", "body": None}, {}, {"path": "status", "equals": "COMPLETED"})
    evidence["audit"]["events"].insert(
        0,
        {
            "seq": 1,
            "action": "REPLAY_REQUESTED",
            "actor": actor,
            "target": {"replayId": "r-1"},
            "detail": {},
            "prevHash": "0" * 64,
            "hash": "2" * 64,
        },
    )
    return evidence


def test_who_asked_for_the_replay_is_the_audited_actor() -> None:
    # replay.requestedBy and platform.user were not checked: a proof could be re-attributed to
    # another user (found by an audit walk).
    evidence = _requested_by({"username": "admin", "roles": ["ADMIN"], "permissions": []})
    evidence["replay"] = {"replayId": "r-1", "requestedBy": "admin"}
    evidence["platform"] = {"user": "admin"}
    assert _check(verify_evidence(evidence, None), "audited requester").ok
    # A proof run with a token may name no user: only the replay's requester is compared.
    check = _check(verify_evidence({**evidence, "platform": {"user": None}}, None), "audited requester")
    assert check.ok
    for claimed in (
        {**evidence, "replay": {"replayId": "r-1", "requestedBy": "alice"}},
        {**evidence, "platform": {"user": "alice"}},
    ):
        check = _check(verify_evidence(claimed, None), "audited requester")
        assert not check.ok and "'alice', the audit 'admin'" in check.detail


def test_a_malformed_actor_or_bundle_target_fails_a_check_not_the_parse() -> None:
    evidence = _requested_by("username")
    bundle = {"format": "moat-audit-bundle/v1", "events": [{"seq": 1, "target": "x"}], "checkpoints": []}
    checks = verify_evidence(evidence, {**bundle, "publicKeys": {}})
    assert _check(checks, "audited requester") is None
    assert not _check(checks, "receipt is the replay's whole audit record").ok


def test_the_failures_a_report_lists_are_those_of_its_expectations() -> None:
    """Auditor walk: evidence.json's `failures` and `expectationsHold` were tied to nothing, so a
    report could list no failure beside a failing expectation (or one that held) and verify."""
    output = {"status": "COMPLETED", "errorType": None, "errorMessage": None, "body": '{"total": 5}',
              "headers": None, "properties": None}  # fmt: skip
    detail = {"resultStatus": "COMPLETED", "errorType": None, "errorMessage": None}
    failing = _evidence(output, detail, {"path": "body:$.total", "equals": 6})
    (item,) = failing["expectations"]
    assert not item["passed"]
    genuine = {
        **failing,
        "verdict": "FAIL",
        "expectationsHold": False,
        "failures": [f"expectation 1 failed: {item['label']}: {item['message']}", "check failed: x: y"],
    }
    assert _check(verify_evidence(genuine, None), "recorded failures").ok
    # A report made before failures were counted from 1 numbered them from 0: still its own.
    older = {**genuine, "failures": [f"expectation 0 failed: {item['label']}: {item['message']}"]}
    assert _check(verify_evidence(older, None), "recorded failures").ok
    for forged, words in (
        ({"failures": []}, "lists 0 failed expectation(s)"),
        ({"expectationsHold": True}, "expectationsHold is True"),
        ({"failures": ["expectation 1 failed: something else: x"]}, "expectation 1 failed: body"),
        ({"failures": [f"expectation 2 failed: {item['label']}: {item['message']}"]}, "lists 1 failed"),
    ):
        check = _check(verify_evidence({**genuine, **forged}, None), "recorded failures")
        assert not check.ok and words in check.detail, (forged, check.detail)
    holding = _evidence(output, detail, {"path": "body:$.total", "equals": 5})
    passing = {**holding, "verdict": "PASS", "expectationsHold": True, "failures": []}
    assert _check(verify_evidence(passing, None), "recorded failures").ok
    listed = {**passing, "failures": ["check failed: x: y"]}
    assert "PASS verdict with failures" in _check(verify_evidence(listed, None), "recorded failures").detail
    # Evidence written before these fields were checked, without them, is not refused for it.
    assert _check(verify_evidence(holding, None), "recorded failures") is None


def _route_captured_diff_evidence(original: Any, replay: Any) -> dict[str, Any]:
    """Evidence whose ``diff`` is build_evidence's part of ``diff(original, replay)``."""
    requested = {
        "seq": 1,
        "action": "REPLAY_REQUESTED",
        "target": {"replayId": "r-1"},
        "detail": {"sourceExecutionId": original.execution_id},
        "prevHash": "0" * 64,
        "hash": "2" * 64,
    }
    evidence = _evidence(
        Subject.of_execution(replay).to_wire(),
        {"resultExecutionId": replay.execution_id},
        {"path": "status", "equals": "COMPLETED"},
        source=execution_facts(original),
        replay={"replayId": "r-1", **execution_facts(replay), "status": "COMPLETED"},
        ties=["diff"],
        diff=diff_evidence(diff(original, replay)),
    )
    evidence["audit"]["events"].insert(0, requested)
    return evidence


def test_a_route_captured_originals_count_line_verifies_in_its_new_and_its_old_wording() -> None:
    # The diff's count line said "at 0 processors" for a ROUTE-captured (prod) original; it now
    # says what was compared, and report verify re-derives that line word for word. A report
    # written with the old line must still verify; a line that does not fit the rows must not.
    run = run_orders

    name = "diff is of the audited executions"
    for capture in ("ROUTE", "PROCESSOR"):
        original = run("v1", capture=capture, environment="prod")
        evidence = _route_captured_diff_evidence(original, run("v2", replay_of=original))
        line = next(x for x in evidence["diff"]["summary"].splitlines() if " differences (" in x)
        assert ("captured at ROUTE level" in line) == (capture == "ROUTE") and "at 0 processors" not in line
        check = _check(verify_evidence(evidence, None), name)
        assert check.ok, check.detail
        if capture == "PROCESSOR":
            assert line.endswith("at 13 processors; 0 noise")  # the line it always had
            continue
        old = line.split(" at ", 1)[0] + " at 0 processors; 0 noise"  # as written before
        before = copy.deepcopy(evidence)
        before["diff"]["summary"] = evidence["diff"]["summary"].replace(line, old)
        assert old in before["diff"]["summary"].splitlines()
        check = _check(verify_evidence(before, None), name)
        assert check.ok, check.detail
    # The ROUTE wording beside a PROCESSOR-captured original, or a noise count the line lacks.
    route = run("v1", capture="ROUTE", environment="prod")
    genuine = _route_captured_diff_evidence(route, run("v2", replay_of=route))
    for part, member, value in (("source", "captureMode", "PROCESSOR"), ("diff", "counts", {"noise": 3})):
        forged = copy.deepcopy(genuine)
        forged[part][member] = value if part == "source" else {**genuine["diff"]["counts"], **value}
        check = _check(verify_evidence(forged, None), name)
        assert not check.ok and "the summary does not say" in check.detail, (member, check.detail)


def test_a_summary_with_a_second_count_line_does_not_verify() -> None:
    # The count line was looked for among the summary's lines: "no differences" put beside the
    # true line verified, and the report shows the summary whole.
    run = run_orders

    name = "diff is of the audited executions"
    for capture in ("ROUTE", "PROCESSOR"):
        original = run("v1", capture=capture, environment="prod")
        genuine = _route_captured_diff_evidence(original, run("v2", replay_of=original))
        assert _check(verify_evidence(genuine, None), name).ok
        for extra in (
            "no differences",
            "no differences (apart from 2 noise)",
            "1 differences (1 from the route",
        ):
            forged = copy.deepcopy(genuine)
            lines = forged["diff"]["summary"].splitlines()
            forged["diff"]["summary"] = "\n".join([*lines[:2], extra, *lines[2:]])
            check = _check(verify_evidence(forged, None), name)
            assert not check.ok and "the summary also says" in check.detail, (capture, extra, check.detail)


def test_the_result_record_the_evidence_keeps_is_the_audited_one() -> None:
    # Found by an audit walk (session 15): replay.status and replay.resultStatus (what report.html
    # shows as the output), replay.processorCount, source.routeId (the claim's route) and
    # hashes.traceSha256 (printed by `report verify` as a verified fact) were checked against
    # nothing, so a forged value of each verified.
    from moat_nb.payload import trace_sha256 as hash_of

    trace = {"entries": [{"seq": 1, "processorId": "p", "status": "COMPLETED"}], "maps": []}
    detail = {
        "replayStatus": "COMPLETED",
        "resultStatus": "COMPLETED",
        "processorCount": 1,
        "traceSha256": hash_of(trace),
    }
    requested = {
        "seq": 1,
        "action": "REPLAY_REQUESTED",
        "target": {"replayId": "r-1", "routeId": "order-intake"},
        "detail": {},
        "prevHash": "0" * 64,
        "hash": "2" * 64,
    }
    evidence = _evidence(
        {"status": "COMPLETED", "body": None},
        detail,
        {"path": "status", "equals": "COMPLETED"},
        source={"routeId": "order-intake"},
        trace=trace,
        hashes={"traceSha256": hash_of(trace)},
    )
    evidence["audit"]["events"].insert(0, requested)
    evidence["replay"] = {
        "replayId": "r-1",
        "routeId": "order-intake",
        "status": "COMPLETED",
        "resultStatus": "COMPLETED",
        "processorCount": 1,
    }
    checks = verify_evidence(evidence, None)
    assert _check(checks, "audited result record").ok, _check(checks, "audited result record")
    assert _check(checks, "audited request").ok, _check(checks, "audited request")
    for part, member, forged, name in (
        ("replay", "status", "FAILED", "audited result record"),
        ("replay", "resultStatus", "FAILED", "audited result record"),
        ("replay", "processorCount", 3, "audited result record"),
        ("hashes", "traceSha256", "0" * 64, "audited result record"),
        ("source", "routeId", "refund", "audited request"),
    ):
        claimed = {**evidence, part: {**evidence[part], member: forged}}
        check = _check(verify_evidence(claimed, None), name)
        assert not check.ok and f"{part}.{member} is" in check.detail, (member, check)
    # A report made before traces were recorded has neither a trace nor its hash: that holds.
    old = {k: v for k, v in evidence.items() if k not in ("trace", "hashes")}
    old["audit"] = {"events": [requested, {**evidence["audit"]["events"][1], "detail": {}}]}
    assert _check(verify_evidence(old, None), "audited result record").ok


def test_a_diff_rows_value_at_the_result_is_the_audited_outputs() -> None:
    # Found by an audit walk (session 15): the replay's side of a diff row at the result, e.g.
    # body:$.total, was taken on the report's word, though the output it reads is tied to the
    # audit by its hash: a forged total in the diff verified beside the true output.
    order = {"orderId": "ORD-1", "customerId": "C-1010", "currency": "EUR", "channel": "web",
             "lines": [{"sku": "SKU-107", "qty": 2, "unitPrice": 34.95}]}  # fmt: skip

    def run(version: str, **kw: Any) -> Any:
        return run_orders(version, order, **kw)

    name = "diff is of the audited executions"
    for capture in ("ROUTE", "PROCESSOR"):
        original = run("v1", capture=capture, environment="prod")
        genuine = _route_captured_diff_evidence(original, run("v2", replay_of=original))
        assert _check(verify_evidence(genuine, None), name).ok, _check(verify_evidence(genuine, None), name)
        rows = genuine["diff"]["differences"]
        at = next(i for i, r in enumerate(rows) if r["processorId"] == "(end)" and r["field"] == "body")
        for change in ({"replay": 12345}, {"kind": "removed"}):
            forged = copy.deepcopy(genuine)
            forged["diff"]["differences"][at].update(change)
            check = _check(verify_evidence(forged, None), name)
            assert not check.ok and "the audited output" in check.detail, (capture, change, check.detail)


def test_the_summarys_other_lines_are_made_again_from_what_verify_trusts() -> None:
    # Red-team walk: with the count line tied, an edited result, route, first divergence or
    # "could not compare" line still verified, and so did a line added to the summary. Each is
    # now made again from the rows, the audited result and the evidence's limitations (the
    # wording of moat_nb.diff's summary_* functions); genuine reports, also in the wording
    # written before (no "with the same error"), verify.
    run = run_orders
    order = json.dumps(ORDER)
    name = "diff is of the audited executions"

    def forged(genuine: dict[str, Any], old: str, new: str, limitations: Any = None) -> Any:
        evidence = copy.deepcopy(genuine)
        assert old in evidence["diff"]["summary"], old
        evidence["diff"]["summary"] = evidence["diff"]["summary"].replace(old, new, 1)
        if limitations is not None:
            evidence["diff"]["limitations"] = limitations
        return _check(verify_evidence(evidence, None), name)

    # A route that diverges (PROCESSOR capture): result, first divergence, first seen.
    original = run("v1", order, capture="PROCESSOR", environment="prod")
    genuine = _route_captured_diff_evidence(original, run("v2", order, replay_of=original))
    assert _check(verify_evidence(genuine, None), name).ok
    lines = genuine["diff"]["summary"].splitlines()
    result = next(x for x in lines if x.startswith("result: "))
    first = next(x for x in lines if x.startswith("first divergence: "))
    seen = next(x for x in lines if x.startswith("  body:$.total at "))
    count = next(x for x in lines if " differences (" in x)
    for old, new, words in (
        (result, "result: COMPLETED on both; the result is the same", "result line"),
        (result, result.replace("COMPLETED on both", "FAILED -> COMPLETED"), "result line"),
        (first, first.replace("compute-totals", "validate-order"), "first divergence line"),
        (first, first.replace("19.98 -> 19.99", "19.99 -> 19.99", 1), "first divergence line"),
        (seen, seen.replace("19.98", "19.97"), "first seen line"),
        (count, f"{count}\nroute: 1 only in the replay (audit-log)", "route line"),
        (count, f"{count}\nall checks passed", "which is no line a diff summary has"),
        (count, f"{count}\ncould not compare: the result body", "could not compare line"),
    ):
        check = forged(genuine, old, new)
        assert not check.ok and words in check.detail, (new, check.detail)
    # The routes' differing is tied (both routeIds are the audited request's): a limitation
    # saying they differ does not verify, even written into the evidence's limitations too.
    text = "the executions ran different routes (order-intake vs order-intake-v2)"
    check = forged(genuine, count, f"{count}\ncould not compare: {text}", limitations=[text])
    assert not check.ok and "ran different routes" in check.detail, check.detail

    # Two failures (ROUTE capture): the result line says how they compare, and a limitation.
    failing = run("v1", json.dumps({"orderId": "ORD-1"}), capture="ROUTE", environment="prod")
    genuine = _route_captured_diff_evidence(
        failing, run("v2", json.dumps({"orderId": "ORD-1"}), replay_of=failing)
    )
    check = _check(verify_evidence(genuine, None), name)
    assert check.ok and "the original's capture and detail" in check.detail, check.detail
    lines = genuine["diff"]["summary"].splitlines()
    result = next(x for x in lines if x.startswith("result: "))
    limitation = next(x for x in lines if x.startswith("could not compare: "))
    assert ", with the same error: com.acme.orders.InvalidOrderException" in result
    # Written before the line said how two failures compare (a5c60c7): still verifies.
    before = result.split(", with the same error")[0] + "; the result is the same"
    assert _check(verify_evidence({**genuine, "diff": {**genuine["diff"],
        "summary": genuine["diff"]["summary"].replace(result, before)}}, None), name).ok  # fmt: skip
    for old, new, words in (
        (result, result.replace("with the same error", "with another error"), "result line"),
        (result, "result: FAILED -> COMPLETED; the result is the same", "result line"),
        (limitation, limitation.replace("ROUTE mode", "PROCESSOR mode"), "could not compare line"),
        (limitation, limitation.replace("6 aligned", "60 aligned"), "could not compare line"),
        ("\n" + limitation, "", "could not compare line"),
    ):
        check = forged(genuine, old, new)
        assert not check.ok and words in check.detail, (new, check.detail)


def _noisy_runs(capture: str) -> tuple[Any, Any, Any]:
    """A prod original (v1), its replay on v2 and the diff between them with noise calibrated as
    the proof notebook does (two unmodified replays; each run has its own clock and random
    numbers, so processedAt and trackingId differ): real engine runs, with noise rows."""
    from moat_nb.diff import noise_rules_from

    def run(version: str, seed: int, **kw: Any) -> Any:
        return run_orders(version, seed=seed, **kw)

    original = run("v1", 1, capture=capture, environment="prod")
    rules = noise_rules_from(run("v1", 2, replay_of=original), run("v1", 3, replay_of=original))
    replay = run("v2", 4, replay_of=original)
    return original, replay, diff(original, replay, ignore=rules)


def _noisy_evidence(result: Any, ties: tuple[str, ...] = ("diff", "diff.noise")) -> dict[str, Any]:
    """Evidence whose ``diff`` is what build_evidence writes of ``result`` (noise rows and rules
    kept), with the replay's trace and output maps audited as the sandbox audits them."""
    from moat_nb.evidence import diff_evidence
    from moat_nb.payload import map_sha256

    original, replay = result.original, result.replay
    output = Subject.of_execution(replay).to_wire()
    trace = trace_digest(replay.processors or ())
    evidence = _route_captured_diff_evidence(original, replay)
    final = evidence["audit"]["events"][1]
    final["detail"].update(
        traceSha256=trace_sha256(trace),
        outputHeadersSha256=map_sha256(output["headers"]),
        outputPropertiesSha256=map_sha256(output["properties"]),
    )
    evidence.update(diff=diff_evidence(result), ties=list(ties), trace=trace)
    return evidence


_DIFF, _NOISE = "diff is of the audited executions", "diff noise rows"


def test_a_genuine_diffs_noise_rows_verify_and_what_rests_on_calibration_is_said() -> None:
    for capture, noise in (("ROUTE", 6), ("PROCESSOR", 187)):
        _, _, result = _noisy_runs(capture)
        evidence = _noisy_evidence(result)
        assert len(evidence["diff"]["noiseRows"]) == evidence["diff"]["counts"]["noise"] == noise
        checks = verify_evidence(evidence, None)
        for name in (_DIFF, _NOISE):
            assert _check(checks, name).ok, _check(checks, name)
        assert "noise rows are not kept" not in _check(checks, _DIFF).detail
        assert "calibration replays' data is not in the evidence" in _check(checks, _NOISE).detail


def test_a_forged_noise_count_does_not_verify() -> None:
    # Red-team walk: noise rows were not kept, so counts.noise and the count line's "N noise"
    # were taken as written: both raised together verified.
    _, _, result = _noisy_runs("ROUTE")
    forged = _noisy_evidence(result)
    assert "; 6 noise" in forged["diff"]["summary"]
    forged["diff"]["summary"] = forged["diff"]["summary"].replace("; 6 noise", "; 9 noise")
    forged["diff"]["counts"]["noise"] = 9
    check = _check(verify_evidence(forged, None), _DIFF)
    assert not check.ok and "counts.noise is 9, the noise rows are 6" in check.detail, check.detail


def test_a_real_difference_moved_into_noise_does_not_verify() -> None:
    # Red-team walk: a forger re-labels the result's real differences as noise and writes the
    # diff again (summary, counts, rows all consistent): "no differences (apart from 8 noise)".
    import dataclasses

    from moat_nb.diff import DiffResult

    _, _, result = _noisy_runs("ROUTE")
    label = next(r.noise_rule for r in result.rows if r.noise and r.noise_rule.startswith("calibration"))
    rows = tuple(r if r.noise else dataclasses.replace(r, noise=True, noise_rule=label) for r in result.rows)
    hidden = DiffResult(
        result.original, result.replay, rows, result.limitations, result.aligned, result.rules
    )
    forged = _noisy_evidence(hidden)
    assert "no differences (apart from 8 noise)" in forged["diff"]["summary"]
    checks = verify_evidence(forged, None)
    assert _check(checks, _DIFF).ok  # consistent in itself ...
    check = _check(checks, _NOISE)  # ... but no rule classes body:$.total as noise
    assert not check.ok and "(end) body:$.total) is marked noise" in check.detail, check.detail
    assert "no rule the diff used classes it so" in check.detail
    # Named by a built-in rule instead, it is no Camel exchange id either.
    rows = tuple(
        r if r.noise else dataclasses.replace(r, noise=True, noise_rule="Camel exchange id")
        for r in result.rows
    )
    hidden = DiffResult(
        result.original, result.replay, rows, result.limitations, result.aligned, result.rules
    )
    check = _check(verify_evidence(_noisy_evidence(hidden), None), _NOISE)
    assert not check.ok and "no rule the diff used classes it so" in check.detail, check.detail
    # A rule written in for it classes it so; what calibration found is not in the evidence, so
    # that rests on the report's word, and the check says so rather than pretend.
    from moat_nb.noise import NoiseRule

    extra = NoiseRule(path="body:$.total", reason=label)
    hidden = dataclasses.replace(hidden, rules=(*result.rules, extra))
    rows = tuple(r if r.noise else dataclasses.replace(r, noise=True, noise_rule=label) for r in result.rows)
    hidden = dataclasses.replace(hidden, rows=rows)
    check = _check(verify_evidence(_noisy_evidence(hidden), None), _NOISE)
    assert "headers:orderTotal) is marked noise" in check.detail  # its own rule is still missing
    hidden = dataclasses.replace(
        hidden, rules=(*hidden.rules, NoiseRule(path="headers:orderTotal", reason=label))
    )
    check = _check(verify_evidence(_noisy_evidence(hidden), None), _NOISE)
    assert check.ok and "rests on the report's word" in check.detail, check.detail


def test_a_noise_rows_edited_value_does_not_verify() -> None:
    _, _, result = _noisy_runs("ROUTE")
    genuine = _noisy_evidence(result)
    rows = genuine["diff"]["noiseRows"]
    at = {r["path"]: i for i, r in enumerate(rows)}
    for path, change, name, words in (
        # The replay's side is the audited output's, as any row's.
        ("body:$.processedAt", {"replay": "2026-01-01T00:00:00.000+0000"}, _DIFF, "the audited output"),
        ("properties:intakeRef", {"replay": "order-intake/ORD-1"}, _DIFF, "the audited output"),
        # The original's side is not audited, but the row must still be one its rule classes
        # as noise: no exchange id, no noise.
        ("properties:CamelCorrelationId", {"original": "ORD-1"}, _NOISE, "no rule the diff used"),
        ("body:$.processedAt", {"kind": "removed", "replay": None}, _NOISE, "no rule the diff used"),
    ):
        forged = copy.deepcopy(genuine)
        forged["diff"]["noiseRows"][at[path]].update(change)
        check = _check(verify_evidence(forged, None), name)
        assert not check.ok and words in check.detail, (path, change, check.detail)


def test_a_report_made_before_noise_rows_were_kept_verifies_only_with_legacy() -> None:
    _, _, result = _noisy_runs("ROUTE")
    old = _noisy_evidence(result, ties=("diff",))
    for key in ("noiseRows", "noiseRules"):
        del old["diff"][key]
    check = _check(verify_evidence(old, None), _NOISE)
    assert not check.ok and "'ties' does not list diff.noise" in check.detail
    checks = verify_evidence(old, None, legacy=True)
    assert _check(checks, _NOISE).ok and _check(checks, _NOISE).skipped
    assert "noise rows are not kept" in _check(checks, _DIFF).detail and _check(checks, _DIFF).ok
    # A report that lists the tie must keep its rows: dropping them does not verify.
    dropped = _noisy_evidence(result)
    del dropped["diff"]["noiseRows"]
    checks = verify_evidence(dropped, None, legacy=True)
    assert not _check(checks, _DIFF).ok and not _check(checks, _NOISE).ok


def test_a_count_of_one_is_verified_in_the_singular_and_as_reports_wrote_it_before() -> None:
    # The count line said "1 differences ... at 1 processors"; it now takes the singular, and a
    # report written before must still verify (the line is made again word for word).
    from moat_nb.evidence import _COUNT_LINE, _count_lines

    row = {"processorId": "compute-totals", "path": "body:$.total", "kind": "changed", "cause": "route"}
    lines = _count_lines([row], {"route": 1, "input": 0}, 1, 0, {"captureMode": "PROCESSOR"})
    assert lines == [
        "1 difference (1 from the route, 0 carried from the start payload) at 1 processor; 0 noise",
        "1 differences (1 from the route, 0 carried from the start payload) at 1 processors; 0 noise",
    ]
    assert all(_COUNT_LINE.match(x) for x in lines)  # both are count lines, so neither can be added beside
    route = _count_lines([row], {"route": 1, "input": 0}, 1, 0, {"captureMode": "ROUTE", "processorCount": 5})
    assert route[0].startswith("1 difference (1 from the route") and " at 1 processor (status" in route[0]
    assert (
        "1 differences (1 from the route, 0 carried from the start payload) at 1 processors; 0 noise" in route
    )


def test_a_genuine_diff_cut_at_the_row_cap_with_noise_rows_after_the_cut_verifies(
    monkeypatch: Any,
) -> None:
    # Review: with the differences cut at their cap, a kept noise row after the last kept
    # difference has its place among ALL the diff's rows, past the rows kept: its index was
    # refused as "not a place among the diff's rows", and a genuine report failed.
    from moat_nb import evidence as ev

    _, _, result = _noisy_runs("PROCESSOR")
    differences = sum(1 for r in result.rows if not r.noise)
    assert differences >= 2
    monkeypatch.setattr(ev, "_DIFF_ROWS", differences - 1)  # the last difference is cut
    evidence = _noisy_evidence(result)
    n = len(evidence["diff"]["differences"]) + len(evidence["diff"]["noiseRows"])
    assert max(r["index"] for r in evidence["diff"]["noiseRows"]) >= n  # a place past the kept rows
    checks = verify_evidence(evidence, None)
    for name in (_DIFF, _NOISE):
        assert _check(checks, name).ok, _check(checks, name)
