"""Compliance proof parameters and evidence (DESIGN.md section 9, issue 8). Pure: no I/O.

:class:`ProofParameters` validates what a proof is asked to prove before anything runs;
:func:`build_evidence` assembles what the proof notebook found into the evidence record, and
:func:`verify_evidence` re-checks such a record offline against its audit bundle (the runner and
the notebook itself are in :mod:`moat_nb.report`).

Parameters (papermill; all strings, DESIGN.md section 9)
    ``source_exchange_id`` the recorded exchange (an id, ``^[A-Za-z0-9._:-]{1,128}$``);
    ``modified_payload`` one JSON object ``{"headers": {...}, "body": ..., "properties": {...}}``,
    each key optional (a present key replaces that part of the original, section 3), ``body`` a
    string or a JSON object/array (written as JSON text); ``target_environment`` where to replay
    (empty: the source's own); ``expectations`` a JSON array (:mod:`moat_nb.expectations`);
    ``reason`` why (audited).
    Credentials are never parameters: papermill writes parameters into the executed notebook,
    which is evidence that gets shared (section 6). They come from ``MOAT_URL``, ``MOAT_USER``,
    ``MOAT_PASSWORD`` or ``MOAT_TOKEN``; a parameter named like a credential, or a secret header
    or property (``Authorization``, ``*password*``, ``*token*`` ...) anywhere in the modified
    payload (at any depth, in the body, inside JSON text: wherever the platform redacts,
    :func:`moat_nb.payload.secret_names`), is refused before anything runs. Names are checked
    against the list above, values by type and syntax, and the parameter cell papermill will
    inject is parsed back to prove that it is five plain string assignments and nothing else (no
    code reaches the kernel through a value).

Evidence (``evidence.json``, :data:`EVIDENCE_FORMAT`)
    ``parameters``; ``source`` and ``replay`` (ids, environments, versions, statuses);
    ``hashes`` (``effectivePayloadSha256`` as the server computed it over the effective
    payload with its secrets as their keyed fingerprints,
    ``outputBodySha256`` computed here from the stored output and the server's, and whether
    they agree with the audited events); ``output`` (the replay's result: status, error, body,
    headers, properties); ``trace`` (every processor's entry and the maps they put out,
    :func:`moat_nb.payload.trace_digest`, whose hash the platform audits as ``traceSha256``)
    and ``processorOutputs`` (the output each expectation on a processor read);
    ``expectations`` (each with the value found and pass/fail);
    ``diff`` (summary, counts, first divergence, the non-noise rows, the noise rows with
    their place among all the rows and the rule that classed them, and the noise rules the
    diff used, :func:`diff_evidence`); ``audit`` (the replay's
    audit events with their hashes, the newest checkpoint, the offline verification result,
    which keys were trusted, the checks tying the receipt to the bundle); ``checks``;
    ``verdict`` (``PASS`` / ``FAIL``) and ``failures`` (in words); and, added by the runner,
    ``notebook`` (file and SHA-256 of the executed notebook, which embeds the same evidence).
"""

from __future__ import annotations

import ast
import hashlib
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import audit as audit_core
from .errors import ValidationError
from .expectations import (
    ID,
    Expectation,
    Outcomes,
    Subject,
    evaluate_one,
    json_equal,
    parse_expectations,
    strict_json,
)
from .model import Execution
from .payload import (
    canonical_json,
    check_header_field,
    is_control_header,
    is_secret_name,
    map_sha256,
    request_sha256,
    secret_names,
    text_sha256,
    trace_digest,
    trace_sha256,
)

if TYPE_CHECKING:
    from .diff import DiffResult

__all__ = [
    "CLAIM_TAG",
    "EVIDENCE_FORMAT",
    "NOT_VOUCHED",
    "PARAMETER_NAMES",
    "RUNNER_KEYS",
    "TIES",
    "Check",
    "ProofParameters",
    "build_evidence",
    "check_parameter_cell",
    "claim_sha256",
    "execution_facts",
    "parse_modified_payload",
    "receipt_checks",
    "sha256_text",
    "verify_evidence",
]

#: ``format`` of evidence.json.
EVIDENCE_FORMAT = "moat-nb/compliance-evidence/v1"
#: The papermill parameters of compliance_proof.ipynb, in order (DESIGN.md section 9).
PARAMETER_NAMES = ("source_exchange_id", "modified_payload", "target_environment", "expectations", "reason")
#: Keys of evidence.json that the runner adds after the notebook ran (not in the notebook).
RUNNER_KEYS = frozenset({"notebook", "files", "runner"})
#: The fields :func:`verify_evidence` ties to the audit record since evidence lists them in its
#: ``ties`` member. Evidence made before (no ``ties``) recorded ``replay.requestedAt`` and
#: ``finishedAt`` from the Replay resource, whose clock reading is not the audited one, and its
#: ``diff`` without the ids of the executions compared: checking those would fail genuine old
#: reports, so their checks say SKIPPED instead (and why) and hold.
TIES = ("replay.requestedAt", "replay.finishedAt", "diff", "checks", "parameters.expectations", "diff.noise")
#: How a proof names its claim in its replay's ``client`` field, which the platform audits in
#: the REPLAY_REQUESTED event (section 7: ``source.client``): ``claim-sha256=<hex>``, the
#: SHA-256 of the RFC 8785 JSON of the expectations asked (:func:`claim_sha256`). The platform
#: records no expectations of its own, so without it a report could leave out a failing one and
#: verify (red-team walk); with it, the audit vouches for which expectations were asked.
CLAIM_TAG = "claim-sha256="
_CLAIM = re.compile(re.escape(CLAIM_TAG) + r"([0-9a-f]{64})")

#: What a verified report still says on its own word: the platform audits no hash of it, so
#: ``report verify`` cannot tell a genuine value from an edited one, and says so (an audit walk
#: found each of these edited in a report that verified with nothing said). Printed by
#: ``moat-nb report verify`` under "not vouched for"; (what, why) pairs.
NOT_VOUCHED = (
    (
        "the routes' versions; the source's status, start time, instance and capture mode; the "
        "replay's exchange id, instance and start time; generatedAt, platform.url, runner",
        "the audit names the route, the source execution and the environments, not these",
    ),
    (
        "the diff's original side, the values inside its rows (but the replay's at the result); in "
        "its summary, the first line and which limitations apply (the original's capture and "
        "detail); in a report made before noise rows were kept (--legacy), also the noise count, "
        "and the original's status and error and the processors one side ran where noise rows "
        "could show them",
        "the platform audits no hash of the recorded exchange",
    ),
    (
        "that a calibrated noise rule is what the two calibration replays found (each noise row "
        "is re-checked against the rule it names, recorded in the evidence)",
        "the calibration replays are audited, but their data is not in the evidence",
    ),
    ("report.html and the notebook's displayed outputs", "renderings: the audit signs no hash of them"),
)

_CREDENTIAL_NAMES = frozenset(
    {"user", "username", "login", "url", "moaturl", "moatuser", "credential", "credentials", "auth", "key"}
)
_ENV_HINT = "set MOAT_USER and MOAT_PASSWORD (or MOAT_TOKEN) in the environment"


# =========================================================================== parameters (pure)


def _credential_name(name: str) -> bool:
    norm = re.sub(r"[-_.\s]", "", name.lower())
    return is_secret_name(name) or norm in _CREDENTIAL_NAMES or norm.startswith("moat")


def _check_mapping(part: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(
            f"modified_payload.{part} must be an object, not {type(value).__name__}",
            code="BAD_PARAMETER",
            details={"parameter": "modified_payload"},
        )
    # Wherever the platform would redact (nested in a value, inside a value that is JSON text),
    # not only at the top: the parameter is written into the executed notebook in clear.
    secrets = secret_names(value)
    if secrets:
        raise ValidationError(
            f"modified_payload.{part} holds a secret ({', '.join(map(repr, secrets))}): parameters are "
            "written into the executed notebook and the report in clear",
            code="CREDENTIAL_PARAMETER",
            hint=f"leave {part} out to keep the original's (the platform holds its real values), "
            "or change only other keys",
            details={"parameter": "modified_payload", "names": secrets},
        )
    if part == "headers":
        for name, v in value.items():
            check_header_field(name, v)
        control = [k for k in value if is_control_header(k)]
        if control:
            raise ValidationError(
                f"modified_payload.headers sets Camel control header(s) {', '.join(map(repr, control))}, "
                "which the platform refuses (CONTROL_HEADER, CVE-2025-27636)",
                code="CONTROL_HEADER",
                hint="remove headers whose name starts with Camel or org.apache.camel",
                details={"parameter": "modified_payload", "headers": control},
            )
    return dict(value)


def claim_sha256(expectations: Any) -> str:
    """The SHA-256 (hex) of a proof's claim: the RFC 8785 JSON of its expectations' wire form,
    as ``parameters.expectations`` of the evidence holds them (see :data:`CLAIM_TAG`)."""
    return hashlib.sha256(canonical_json({"expectations": expectations})).hexdigest()


def parse_modified_payload(value: Any) -> dict[str, Any]:
    """The modified payload parameter as ``{"headers"?, "body"?, "properties"?}``, body as text.

    A ``body`` that is a JSON object or array is written as JSON text (Python's default
    separators, as :func:`moat_nb.client.serialise_body` writes it), so that the payload the
    parameters name is exactly the one that runs."""
    data = strict_json(value, "modified_payload") if isinstance(value, str) else value
    if not isinstance(data, dict):
        raise ValidationError(
            "modified_payload must be a JSON object",
            code="BAD_PARAMETER",
            hint='e.g. {"body": {...}} or {"headers": {...}, "properties": {...}}; {} replays unmodified',
            details={"parameter": "modified_payload"},
        )
    unknown = sorted(set(data) - {"headers", "body", "properties"})
    if unknown:
        raise ValidationError(
            f"modified_payload has unknown key(s) {', '.join(map(repr, unknown))}",
            code="BAD_PARAMETER",
            hint="its keys are headers, body and properties (each optional)",
            details={"parameter": "modified_payload"},
        )
    out: dict[str, Any] = {}
    for part in ("headers", "properties"):
        if data.get(part) is not None:
            out[part] = _check_mapping(part, data[part])
    body = data.get("body")
    if body is not None:
        if not isinstance(body, dict | list | str):
            raise ValidationError(
                f"modified_payload.body must be a string or a JSON object/array, not {json.dumps(body)}",
                code="BAD_PARAMETER",
                details={"parameter": "modified_payload"},
            )
        # A body given as JSON text is checked as the platform reads it (redact_body), like one
        # given as an object: both are written into the executed notebook.
        secrets = secret_names(body)
        if secrets:
            raise ValidationError(
                f"modified_payload.body holds secret field(s) {', '.join(map(repr, secrets))}",
                code="CREDENTIAL_PARAMETER",
                hint="parameters are written into the executed notebook: leave secrets out",
                details={"parameter": "modified_payload", "names": secrets},
            )
        out["body"] = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return out


def _text(name: str, value: Any, *, required: bool) -> str:
    if not isinstance(value, str):
        raise ValidationError(
            f"{name} must be a string, not {type(value).__name__}",
            code="BAD_PARAMETER",
            details={"parameter": name},
        )
    if required and not value.strip():
        raise ValidationError(f"{name} is empty", code="BAD_PARAMETER", details={"parameter": name})
    return value


def _refuse_secret_expectation(i: int, exp: Expectation) -> None:
    """An expectation on a secret (``headers:Authorization``, ``body:$.card.password`` ...) other
    than ``exists``: refused (``CREDENTIAL_PARAMETER``). Its expected value would be written in
    clear into the executed notebook, the evidence and the report, as a secret in the payload
    would; and the platform keeps only a fingerprint of such a value, so it could never hold
    (found by review)."""
    if exp.operator == "exists":
        return
    names = [exp.parsed.name, *(seg for seg in exp.parsed.segments if isinstance(seg, str))]
    secret = next((n for n in names if isinstance(n, str) and is_secret_name(n)), None)
    if secret is not None:
        raise ValidationError(
            f"expectation {i + 1} ({exp.label}) compares the secret {secret!r}: its value would be "
            "written into the executed notebook and the report, and the platform keeps only a "
            "fingerprint of it",
            code="CREDENTIAL_PARAMETER",
            hint='check that it is there with {"path": ..., "exists": true}',
            details={"expectation": i},
        )


@dataclass(frozen=True)
class ProofParameters:
    """The validated parameters of a compliance proof (module docstring)."""

    source_exchange_id: str | None
    modified_payload: dict[str, Any]
    target_environment: str | None
    expectations: tuple[Expectation, ...]
    reason: str

    @classmethod
    def parse(cls, params: Mapping[str, Any], *, require_source: bool = True) -> ProofParameters:
        """Check names and values; raise ValidationError (``BAD_PARAMETER``, ``BAD_JSON``,
        ``BAD_EXPECTATION``, ``CREDENTIAL_PARAMETER`` ...) saying which and why.

        ``require_source=False`` lets an empty ``source_exchange_id`` through (the notebook run
        by hand picks an exchange); a report always names its source."""
        for name in params:
            if not isinstance(name, str) or name not in PARAMETER_NAMES:
                if isinstance(name, str) and _credential_name(name):
                    raise ValidationError(
                        f"parameter {name!r} looks like a credential: credentials are never papermill "
                        "parameters (they would be written into the executed notebook)",
                        code="CREDENTIAL_PARAMETER",
                        hint=_ENV_HINT + "; MOAT_URL names the platform",
                        details={"parameter": name},
                    )
                raise ValidationError(
                    f"unknown parameter {str(name)[:80]!r}",
                    code="BAD_PARAMETER",
                    hint=f"the parameters are {', '.join(PARAMETER_NAMES)}",
                    details={"parameter": str(name)[:80]},
                )
        for name in ("expectations", "reason") + (("source_exchange_id",) if require_source else ()):
            if name not in params:
                raise ValidationError(f"parameter {name} is missing", code="BAD_PARAMETER")
        source = _text("source_exchange_id", params.get("source_exchange_id", ""), required=False).strip()
        if source and not ID.match(source):
            raise ValidationError(
                f"source_exchange_id {source[:80]!r} is not an exchange id",
                code="BAD_PARAMETER",
                hint="ids match ^[A-Za-z0-9._:-]{1,128}$; copy one from platform.executions(...)",
                details={"parameter": "source_exchange_id"},
            )
        if require_source and not source:
            raise ValidationError(
                "source_exchange_id is empty: a proof names the exchange it replays",
                code="BAD_PARAMETER",
                details={"parameter": "source_exchange_id"},
            )
        target = _text("target_environment", params.get("target_environment") or "", required=False).strip()
        if target and not ID.match(target):
            raise ValidationError(
                f"target_environment {target[:80]!r} is not an environment name",
                code="BAD_PARAMETER",
                hint="e.g. staging; empty replays in the source's own environment",
                details={"parameter": "target_environment"},
            )
        reason = _text("reason", params["reason"], required=True)
        if len(reason) > 500 or re.search(r"[\x00-\x08\x0b-\x1f\x7f]", reason):
            raise ValidationError(
                "reason must be 1 to 500 characters without control characters",
                code="BAD_PARAMETER",
                details={"parameter": "reason"},
            )
        payload = parse_modified_payload(params.get("modified_payload", "{}"))
        expectations = parse_expectations(params["expectations"])
        for i, exp in enumerate(expectations):
            _refuse_secret_expectation(i, exp)
        return cls(source or None, payload, target or None, expectations, reason)

    def to_papermill(self) -> dict[str, str]:
        """The five parameters as papermill gets them: strings, JSON for the structured two."""
        return {
            "source_exchange_id": self.source_exchange_id or "",
            "modified_payload": json.dumps(self.modified_payload, ensure_ascii=False),
            "target_environment": self.target_environment or "",
            "expectations": json.dumps([e.to_wire() for e in self.expectations], ensure_ascii=False),
            "reason": self.reason,
        }

    def to_wire(self) -> dict[str, Any]:
        return {
            "sourceExchangeId": self.source_exchange_id,
            "modifiedPayload": self.modified_payload,
            "targetEnvironment": self.target_environment,
            "expectations": [e.to_wire() for e in self.expectations],
            "reason": self.reason,
        }

    def replay_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``Platform.replay`` for these parameters; ``client`` names the
        claim (:data:`CLAIM_TAG`), so that the audit vouches for which expectations were asked."""
        from . import __version__  # here: the package's __init__ imports this module first

        claim = claim_sha256([e.to_wire() for e in self.expectations])
        return {
            "client": f"moat_nb/{__version__} compliance proof; {CLAIM_TAG}{claim}",
            "headers": self.modified_payload.get("headers"),
            "body": self.modified_payload.get("body"),
            "properties": self.modified_payload.get("properties"),
            "target_environment": self.target_environment,
            "reason": self.reason,
        }

    def _repr_html_(self) -> str:
        rows = [
            ("source exchange", self.source_exchange_id or "(picked by the notebook)"),
            ("target environment", self.target_environment or "(the source's own)"),
            ("modified payload", _payload_text(self.modified_payload)),
            ("expectations", "\n".join(e.label for e in self.expectations)),
            ("reason", self.reason),
        ]
        body = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td><pre style='margin:0;white-space:pre-wrap'>"
            f"{html.escape(v)}</pre></td></tr>"
            for k, v in rows
        )
        return f"<table>{body}</table>"


def _payload_text(payload: Mapping[str, Any]) -> str:
    """The payload as a reader wants it: a body that is JSON text indented as JSON, where
    ``json.dumps`` of the whole showed it as one escaped string ("{\\"orderId\\": ...")."""
    body = payload.get("body")
    if isinstance(body, str):
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict | list):
            rest = {k: v for k, v in payload.items() if k != "body"}
            head = json.dumps(rest, ensure_ascii=False, indent=1) + "\n" if rest else ""
            return head + "body (JSON text):\n" + json.dumps(parsed, ensure_ascii=False, indent=1)
    return json.dumps(dict(payload), ensure_ascii=False, indent=1)


def check_parameter_cell(code: str, params: Mapping[str, str]) -> None:
    """Prove that the parameter cell papermill will inject is only ``name = "<the value>"`` for
    the known names: parsed back with :mod:`ast`, every statement must be a plain assignment of
    one known name to a string constant equal to the value given. Defends the kernel against a
    value that would break out of its string (papermill's escaping is the first defence)."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise ValidationError(
            f"the parameter cell does not parse: {exc}", code="PARAMETER_INJECTION"
        ) from None
    seen: set[str] = set()
    for node in tree.body:
        ok = (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in params
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            and node.value.value == params[node.targets[0].id]
        )
        if not ok:
            raise ValidationError(
                f"the parameter cell holds more than the parameters: {ast.unparse(node)[:120]!r}",
                code="PARAMETER_INJECTION",
                hint="a parameter value must stay data; nothing was run",
            )
        seen.add(node.targets[0].id)  # type: ignore[union-attr]
    if seen != set(params):
        raise ValidationError(
            "the parameter cell does not assign every parameter", code="PARAMETER_INJECTION"
        )


# =========================================================================== evidence (pure)


@dataclass(frozen=True)
class Check:
    """One thing the evidence checks: a name, whether it holds, and what was found."""

    name: str
    ok: bool
    detail: str
    #: Not checked because the evidence predates the check (:data:`TIES`): holds, and says so.
    skipped: bool = False

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "ok": self.ok, "detail": self.detail}
        if self.skipped:
            out["skipped"] = True
        return out


def sha256_text(text: str | None) -> str | None:
    """SHA-256 of a body as the platform hashes it (its UTF-8 bytes; section 4 ``outputBodySha256``)."""
    return text_sha256(text)


def _processor_outputs(replay: Execution, expectations: Sequence[Expectation]) -> list[dict[str, Any]]:
    """What each expectation on a processor read: the processor's seq, id, iteration and output
    (:class:`~moat_nb.expectations.Subject` on the wire), once per processor, for the ones that
    ran. With ``trace`` (:func:`~moat_nb.payload.trace_entries`) in the evidence, an offline
    check ties each output to the audited ``traceSha256``."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    for exp in expectations:
        if exp.processor is None or (exp.processor, exp.iteration) in seen:
            continue
        seen.add((exp.processor, exp.iteration))
        for p in replay.processors or ():  # the first that matches, as evaluation takes it
            if p.processor_id == exp.processor and p.iteration == exp.iteration:
                out.append(
                    {
                        "seq": p.seq,
                        "processorId": p.processor_id,
                        "iteration": p.iteration,
                        "output": Subject.of_processor(p).to_wire(),
                    }
                )
                break
    return out


def _map_at(maps: Sequence[Any], at: Any) -> tuple[bool, Any]:
    """``(True, map)`` for an entry's map index (or null); ``(False, None)`` for a bad index."""
    if at is None:
        return True, None
    if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < len(maps):
        return False, None
    return True, maps[at]


def _same_map(claimed: Any, audited: Any) -> bool:
    """Whether a recorded output map is the audited one, by :func:`map_sha256`. No map equals
    only no map; a map that has no hash (not JSON data) equals nothing, so that two such maps
    are never taken for the same by their missing hashes."""
    if claimed is None or audited is None:
        return claimed is None and audited is None
    if not isinstance(claimed, Mapping) or not isinstance(audited, Mapping):
        return False
    digest = map_sha256(claimed)
    return digest is not None and digest == map_sha256(audited)


def _first_at(items: Sequence[Any], exp: Expectation) -> Mapping[str, Any] | None:
    """The first item naming the expectation's processor id and iteration (as evaluation takes
    the first processor that matches)."""
    return next(
        (
            item
            for item in items
            if isinstance(item, Mapping)
            and item.get("processorId") == exp.processor
            and item.get("iteration") == exp.iteration
        ),
        None,
    )


def _processor_subject(
    exp: Expectation, trace: Mapping[str, Any], outputs: Sequence[Any]
) -> tuple[Subject | str | None, str | None]:
    """The subject an expectation on a processor read, as the evidence vouches for it: the
    recorded output of the first trace entry with its processor id and iteration, provided the
    output is that entry's (status, error, body hash, maps); the evaluator's "did not run" text
    when no entry has them. ``(None, why)`` when the evidence does not hold together."""
    entry = _first_at(trace.get("entries") or [], exp)
    if entry is None:
        it = f" iteration {exp.iteration}" if exp.iteration else ""
        return f"processor {exp.processor}{it} did not run in the replay", None
    recorded = _first_at(outputs, exp)
    where = f"{exp.processor} (seq {entry.get('seq')})"
    if (
        recorded is None
        or recorded.get("seq") != entry.get("seq")
        or not isinstance(recorded.get("output"), Mapping)
    ):
        return None, f"no recorded output of {where}"
    output = recorded["output"]
    maps = trace.get("maps") or []
    same = all(output.get(k) == entry.get(k) for k in ("status", "errorType", "errorMessage"))
    same = same and text_sha256(output.get("body")) == entry.get("outputBodySha256")
    for part, key in (("headers", "outputHeaders"), ("properties", "properties")):
        ok, audited = _map_at(maps, entry.get(key))
        same = same and ok and _same_map(output.get(part), audited)
    if not same:
        return None, f"the output recorded for {where} is not the audited one"
    return Subject.from_wire(output), None


_TERMINAL_ACTIONS = ("REPLAY_COMPLETED", "REPLAY_FAILED", "REPLAY_ERROR", "REPLAY_ABORTED")


def receipt_checks(
    receipt: Sequence[Mapping[str, Any]],
    bundle: Mapping[str, Any] | None,
    verification: audit_core.VerifyResult | None,
    *,
    replay_id: str,
    source_exchange_id: str | None,
    reason: str | None,
    effective_payload_sha256: str | None,
    output_body_sha256: str | None,
    result_execution_id: str | None,
    trace_hash: str | None = None,
    no_bundle: str = "no audit bundle (exporting needs audit:read)",
) -> list[Check]:
    """What ties a replay's audit events (its receipt) to a verified bundle and to the evidence:
    every receipt event's hash recomputes and equals the bundle's event at its seq; a signed
    checkpoint covers them; the requested event names the source, the reason and the payload
    hash; the final event names the result execution and the output hash, and, where the
    platform audits one (``traceSha256``), the trace hash ``trace_hash`` (None: the evidence has
    no trace, which then fails). ``no_bundle``: why there is no bundle, when there is none."""
    checks: list[Check] = []
    events = [e for e in receipt if (e.get("target") or {}).get("replayId") == replay_id]
    actions = [e.get("action") for e in events]
    checks.append(
        Check(
            "receipt complete",
            "REPLAY_REQUESTED" in actions and any(a in _TERMINAL_ACTIONS for a in actions),
            f"{len(events)} events: {', '.join(map(str, actions)) or 'none'}",
        )
    )
    bad = [e.get("seq") for e in events if audit_core.event_hash(e, str(e.get("prevHash"))) != e.get("hash")]
    # With no event of this replay, "all recompute" and "found with the same hashes" were
    # printed under FAILED (found by an audit walk): say that there is nothing to check.
    none = f"no audit event names replay {replay_id}"
    checks.append(
        Check(
            "receipt hashes recompute",
            not bad and bool(events),
            f"bad seq {bad}" if bad else "all recompute" if events else none,
        )
    )
    if bundle is None or verification is None:
        checks.append(Check("bundle verifies", False, no_bundle))
    else:
        # The reason's code first: a stable name for what failed (audit.REASONS), as
        # `moat-nb audit verify` prints it.
        checks.append(
            Check(
                "bundle verifies",
                verification.ok,
                verification.message
                if verification.ok
                else f"{verification.reason}"
                + ("" if verification.first_bad_seq is None else f" at seq {verification.first_bad_seq}")
                + f": {verification.message}",
            )
        )
        by_seq = {e.get("seq"): e for e in bundle.get("events") or () if isinstance(e, Mapping)}
        missing = [
            e.get("seq") for e in events if (by_seq.get(e.get("seq")) or {}).get("hash") != e.get("hash")
        ]
        checks.append(
            Check(
                "receipt in bundle",
                not missing and bool(events),
                f"seq {missing} differ from or are missing in the bundle"
                if missing
                else f"seq {', '.join(str(e.get('seq')) for e in events)} found with the same hashes"
                if events
                else none,
            )
        )
        top = max((int(e.get("seq") or 0) for e in events), default=0)
        anchored = verification.anchored_seq
        checks.append(
            Check(
                "receipt under a signed checkpoint",
                anchored is not None and top <= anchored,
                f"newest receipt seq {top}, "
                + (f"signed checkpoint at seq {anchored}" if anchored else "no signed checkpoint verifies"),
            )
        )
    requested = next((e for e in events if e.get("action") == "REPLAY_REQUESTED"), {})
    detail = requested.get("detail") or {}
    target = requested.get("target") or {}
    if source_exchange_id is not None:
        checks.append(
            Check(
                "audited source",
                target.get("sourceExchangeId") == source_exchange_id,
                f"audit names {target.get('sourceExchangeId')}",
            )
        )
    if reason is not None:
        checks.append(
            Check("audited reason", detail.get("reason") == reason, f"audit says {detail.get('reason')!r}")
        )
    checks.append(
        Check(
            "audited payload hash",
            effective_payload_sha256 is not None
            and detail.get("effectivePayloadSha256") == effective_payload_sha256,
            f"audit {detail.get('effectivePayloadSha256')}",
        )
    )
    final = next((e for e in events if e.get("action") in _TERMINAL_ACTIONS), {})
    fdetail = final.get("detail") or {}
    checks.append(
        Check(
            "audited output hash",
            output_body_sha256 is not None and fdetail.get("outputBodySha256") == output_body_sha256,
            f"audit {fdetail.get('outputBodySha256')}, computed {output_body_sha256}",
        )
    )
    checks.append(
        Check(
            "audited result execution",
            result_execution_id is not None and fdetail.get("resultExecutionId") == result_execution_id,
            f"audit {fdetail.get('resultExecutionId')}",
        )
    )
    if fdetail.get("traceSha256") is not None:
        # Where the platform audited the trace, the evidence must carry it: without it, a
        # processor expectation would rest on the report's data again, and a forger would
        # only have to drop `trace` (found by review).
        checks.append(
            Check(
                "audited trace hash",
                trace_hash is not None and fdetail.get("traceSha256") == trace_hash,
                f"audit {fdetail.get('traceSha256')}, computed {trace_hash}"
                if trace_hash is not None
                else f"audit {fdetail.get('traceSha256')}, and the evidence has no trace",
            )
        )
    return checks


def payload_claim_checks(parameters: Mapping[str, Any], requested: Mapping[str, Any]) -> list[Check]:
    """What ties the payload and environment a proof claims (its parameters) to the ones the
    platform audited when the replay was requested (``REPLAY_REQUESTED``): the request's
    ``modifiedPayloadSha256`` (:func:`~moat_nb.payload.request_sha256`: the modified payload,
    secrets hidden) recomputes from the claimed ``modifiedPayload``, and the audited target
    environment is the claimed one. A platform that audits no such hash cannot have the claim
    checked, and the check says so (it fails: nothing vouches for P)."""
    detail = requested.get("detail") or {}
    if "modifiedPayloadSha256" in detail:
        try:
            # As the claim runs (a body object becomes its JSON text), not as it is spelt.
            # With the platform's version of the hash (records made before it had one: 1).
            version = detail.get("modifiedPayloadHashVersion", 1)
            claimed = request_sha256(
                parse_modified_payload(parameters.get("modifiedPayload") or {}),
                version=version if type(version) is int else -1,
            )
        except ValidationError as exc:
            claimed, why = None, f": {exc.message}"
        else:
            why = ""
        payload_ok = claimed is not None and claimed == detail["modifiedPayloadSha256"]
        note = f"audit {detail['modifiedPayloadSha256']}, claimed {claimed}{why}"
    else:
        payload_ok, note = (
            False,
            "the audited request has no modifiedPayloadSha256: the claim cannot be checked",
        )
    claimed_target = parameters.get("targetEnvironment") or detail.get("sourceEnvironment")
    return [
        Check("audited payload is the claimed one", payload_ok, note),
        Check(
            "audited target environment",
            claimed_target == detail.get("targetEnvironment"),
            f"audit says {detail.get('targetEnvironment')!r}, the parameters {claimed_target!r}",
        ),
    ]


def _environment_checks(evidence: Mapping[str, Any], requested: Mapping[str, Any]) -> list[Check]:
    """The environments the evidence records for the source and the replay, against those the
    audited request names: ``report verify`` prints "replay ... on ENV" from the evidence, and
    an audit walk found that a staging replay re-labelled ``prod`` there verified. Only what the
    audit records is compared (section 7 does not ask for these members)."""
    detail = requested.get("detail") or {}
    source = evidence.get("source") or {}
    replay = evidence.get("replay") or {}
    pairs = []
    if "targetEnvironment" in detail:
        pairs += [
            ("replay.targetEnvironment", replay.get("targetEnvironment"), detail["targetEnvironment"]),
            ("replay.environment", replay.get("environment"), detail["targetEnvironment"]),
        ]
    if "sourceEnvironment" in detail:
        pairs += [
            ("replay.sourceEnvironment", replay.get("sourceEnvironment"), detail["sourceEnvironment"]),
            ("source.environment", source.get("environment"), detail["sourceEnvironment"]),
        ]
    if not pairs:
        return []
    wrong = [
        f"{name} is {claimed!r}, the audit {audited!r}"
        for name, claimed, audited in pairs
        if claimed != audited
    ]
    return [
        Check(
            "audited environments",
            not wrong,
            "; ".join(wrong)
            if wrong
            else f"source on {detail.get('sourceEnvironment')!r}, "
            f"replay on {detail.get('targetEnvironment')!r}",
        )
    ]


def _request_checks(evidence: Mapping[str, Any], requested: Mapping[str, Any]) -> list[Check]:
    """What else the evidence records of the request against the audited request: the payload
    diff, the agent that ran it, the source execution and the route. A consistent forgery of
    these verified (``report verify`` does not print them, but evidence.json is what an auditor
    keeps; an audit walk's finding). Only what the audit records is compared."""
    detail = requested.get("detail") or {}
    target = requested.get("target") or {}
    source = evidence.get("source") or {}
    replay = evidence.get("replay") or {}
    pairs = [
        (name, claimed, audited)
        for name, claimed, audited, present in (
            (
                "replay.payloadDiff",
                replay.get("payloadDiff"),
                detail.get("payloadDiff"),
                "payloadDiff" in detail,
            ),
            ("replay.agentId", replay.get("agentId"), detail.get("targetAgent"), "targetAgent" in detail),
            (
                "source.executionId",
                source.get("executionId"),
                detail.get("sourceExecutionId"),
                "sourceExecutionId" in detail,
            ),
            ("replay.routeId", replay.get("routeId"), target.get("routeId"), "routeId" in target),
            # The report's claim names the source's route ("exchange X (route R v1 ...)"): a
            # replay runs its source's route, which the platform audits as the target's.
            ("source.routeId", source.get("routeId"), target.get("routeId"), "routeId" in target),
        )
        if present
    ]
    return [_agreement("audited request", [(*p, "the audit") for p in pairs])] if pairs else []


def _agreement(name: str, pairs: Sequence[tuple[str, Any, Any, str]]) -> Check:
    """One check that each value the evidence claims is the vouched one: ``pairs`` of (field,
    claimed, vouched, what the vouched value is, e.g. "the audit")."""
    wrong = [
        f"{field} is {_short(claimed)}, {source} {_short(vouched)}"
        for field, claimed, vouched, source in pairs
        if not json_equal(claimed, vouched)
    ]
    return Check(
        name, not wrong, "; ".join(wrong) if wrong else ", ".join(p[0] for p in pairs) + " as audited"
    )


def _result_record_checks(evidence: Mapping[str, Any], final: Mapping[str, Any]) -> list[Check]:
    """What else the evidence records of the result against the audited terminal event: the
    replay's status and its result's status (the report's summary shows ``replay.resultStatus``
    as the output), its processor count, and ``hashes.traceSha256``, which ``report verify``
    printed among the verified facts while the check hashed ``trace`` itself (a forged value
    verified; found by an audit walk). Only what the audit records is compared."""
    fdetail = final.get("detail") or {}
    replay = evidence.get("replay") or {}
    hashes = evidence.get("hashes") or {}
    pairs = [
        (name, claimed, fdetail[key], "the audit")
        for name, claimed, key in (
            ("replay.status", replay.get("status"), "replayStatus"),
            ("replay.resultStatus", replay.get("resultStatus"), "resultStatus"),
            ("replay.processorCount", replay.get("processorCount"), "processorCount"),
        )
        if final and fdetail.get(key) is not None
    ]
    # The recorded trace hash is the trace's own (the trace is tied to the audit, where it has
    # one, by "audited trace hash"); with no trace, or one that has no hash, none
    # (build_evidence wrote trace_sha256's None there).
    computed = _trace_hash(evidence.get("trace"))
    computed = None if computed is None or computed.startswith("(") else computed
    pairs.append(("hashes.traceSha256", hashes.get("traceSha256"), computed, "the trace hashes to"))
    return [_agreement("audited result record", pairs)]


def _requester_checks(evidence: Mapping[str, Any], requested: Mapping[str, Any]) -> list[Check]:
    """Who the evidence says asked for the replay (``replay.requestedBy``, and ``platform.user``
    who ran the proof) against the audited request's actor: neither was checked, so a proof
    could be re-attributed to another user (found by an audit walk)."""
    actor = requested.get("actor")
    if not isinstance(actor, Mapping) or "username" not in actor:
        return []  # a malformed event fails its hash check; a platform may audit no actor
    audited = actor["username"]
    claims = [("replay.requestedBy", (evidence.get("replay") or {}).get("requestedBy"))]
    user = (evidence.get("platform") or {}).get("user")
    if user is not None:  # None: a proof run with a token names no user
        claims.append(("platform.user", user))
    wrong = [f"{name} is {claimed!r}" for name, claimed in claims if claimed != audited]
    return [
        Check(
            "audited requester",
            not wrong,
            f"{'; '.join(wrong)}, the audit {audited!r}" if wrong else f"audit says {audited!r}",
        )
    ]


def execution_facts(e: Execution) -> dict[str, Any]:
    return {
        "exchangeId": e.exchange_id,
        "executionId": e.execution_id,
        "environment": e.environment,
        "routeId": e.route_id,
        "routeVersion": e.route_version,
        "instanceId": e.instance_id,
        "status": e.status,
        "captureMode": e.capture_mode,
        "startTime": None if e.start_time is None else e.start_time.isoformat().replace("+00:00", "Z"),
        "processorCount": e.processor_count,
    }


def diff_evidence(diff_result: DiffResult) -> dict[str, Any]:
    """The evidence's ``diff`` (module docstring) of a diff's result: what report verify
    re-checks as "diff is of the audited executions" and "diff noise rows"."""
    d = diff_result.to_dict()
    return {
        # Which two executions were compared: report verify ties both to the audit.
        "originalExecutionId": d["originalExecutionId"],
        "replayExecutionId": d["replayExecutionId"],
        "same": d["same"],
        "summary": d["summary"],
        "counts": d["counts"],
        "firstDivergence": d["firstDivergence"],
        "limitations": d["limitations"],
        "differences": [r for r in d["rows"] if not r["noise"]][:_DIFF_ROWS],
        # The rows the diff classed as noise, each with its place among all the rows (for
        # the route line's order) and the rule that classed it, with the rules themselves:
        # without them report verify took the noise count, the original's status and error
        # and the route line on the report's word, and a real difference could be hidden as
        # "noise" (red-team walk). Capped apart from the differences, so that many noise
        # rows cannot push a real difference out of the evidence.
        "noiseRows": [{**r, "index": i} for i, r in enumerate(d["rows"]) if r["noise"]][:_NOISE_ROWS],
        "noiseRules": _rules_wire(diff_result.rules),
    }


def build_evidence(
    *,
    parameters: ProofParameters,
    source: Execution,
    replay_resource: Mapping[str, Any],
    replay: Execution,
    diff_result: DiffResult | None,
    outcomes: Outcomes,
    receipt: Sequence[Mapping[str, Any]],
    bundle: Mapping[str, Any] | None,
    verification: audit_core.VerifyResult | None,
    trusted_keys: str,
    platform: Mapping[str, Any],
    generated_at: str,
) -> dict[str, Any]:
    """The evidence of one proof (module docstring), from what the notebook gathered.

    ``replay_resource`` is the Replay as read after it ended (section 4); ``trusted_keys`` says
    whose keys verified the bundle (``"environment"``: MOAT_AUDIT_KEYS, ``"bundle"``: its own)."""
    replay_id = str(replay_resource.get("replayId"))
    result = replay_resource.get("result") or {}
    output_sha = sha256_text(replay.output_body)
    effective_sha = replay_resource.get("effectivePayloadSha256")
    trace = trace_digest(replay.processors or ())
    checks = receipt_checks(
        receipt,
        bundle,
        verification,
        replay_id=replay_id,
        source_exchange_id=source.exchange_id,
        reason=parameters.reason,
        effective_payload_sha256=effective_sha,
        output_body_sha256=output_sha,
        result_execution_id=replay.execution_id,
        trace_hash=trace_sha256(trace),
    )
    checks.insert(
        0,
        Check(
            "output hash matches the platform's",
            output_sha is not None and output_sha == result.get("outputBodySha256"),
            f"computed {output_sha}, platform {result.get('outputBodySha256')}",
        ),
    )
    checks.append(
        Check(
            "replay is of the source",
            replay.is_replay
            and replay.replay_id == replay_id
            and replay.source_exchange_id == source.exchange_id,
            f"execution {replay.execution_id} replays {replay.source_exchange_id}",
        )
    )
    audit_ok = all(c.ok for c in checks)
    failures = [  # counted from 1, as the reader counts the file's entries (compliance walk)
        f"expectation {i} failed: {r.expectation.label}: {r.message}"
        for i, r in enumerate(outcomes, start=1)
        if not r.passed
    ]
    failures += [f"check failed: {c.name}: {c.detail}" for c in checks if not c.ok]
    checkpoint = (bundle.get("checkpoints") or [None])[-1] if bundle else None
    # The replay's audit record is every event that names it (section 7): from the verified
    # bundle when there is one, which also holds the query that fetched the receipt.
    events = [
        dict(e)
        for e in ((bundle or {}).get("events") or receipt)
        if isinstance(e, Mapping) and (e.get("target") or {}).get("replayId") == replay_id
    ]
    keys = sorted((bundle or {}).get("publicKeys") or {})
    # When the replay was asked for and when it ended, as the signed record has them (the
    # Replay resource's times are read from the clock apart from its events', so they may
    # differ by a few ms): report verify then compares them exactly (auditor walk).
    requested_at = next(
        (e.get("occurredAt") for e in events if e.get("action") == "REPLAY_REQUESTED"),
        replay_resource.get("requestedAt"),
    )
    finished_at = next(
        (e.get("occurredAt") for e in events if e.get("action") in _TERMINAL_ACTIONS),
        replay_resource.get("finishedAt"),
    )
    diff_part = None if diff_result is None else diff_evidence(diff_result)
    return {
        "format": EVIDENCE_FORMAT,
        "generatedAt": generated_at,
        "verdict": "PASS" if outcomes.passed and audit_ok else "FAIL",
        "expectationsHold": outcomes.passed,
        "auditVerified": audit_ok,
        "failures": failures,
        "parameters": parameters.to_wire(),
        "platform": dict(platform),
        "source": execution_facts(source),
        "replay": {
            **execution_facts(replay),
            "replayId": replay_id,
            "status": replay_resource.get("status"),
            "resultStatus": result.get("status"),
            "sourceEnvironment": replay_resource.get("sourceEnvironment"),
            "targetEnvironment": replay_resource.get("targetEnvironment"),
            "agentId": replay_resource.get("agentId"),
            "requestedBy": replay_resource.get("requestedBy"),
            "requestedAt": requested_at,
            "finishedAt": finished_at,
            "payloadDiff": replay_resource.get("payloadDiff"),
            "resultExecutionId": replay.execution_id,
        },
        "hashes": {
            "effectivePayloadSha256": effective_sha,
            "outputBodySha256": output_sha,
            "platformOutputBodySha256": result.get("outputBodySha256"),
            "traceSha256": trace_sha256(trace),
            "algorithm": "SHA-256; trace: of the RFC 8785 JSON of `trace`; "
            "payload: of the RFC 8785 JSON of the effective payload with its secrets as "
            "their [REDACTED:...] fingerprints, as stored (computed by the platform; a "
            "REPLAY_REQUESTED event without effectivePayloadHashVersion 2 was over the real "
            "values); output: of the output body's UTF-8 bytes",
        },
        "output": Subject.of_execution(replay).to_wire(),
        # Every processor's place, status and output hashes; with the outputs the expectations
        # on processors read, tied to the audited traceSha256 (verify_evidence).
        "trace": trace,
        "processorOutputs": _processor_outputs(replay, [r.expectation for r in outcomes]),
        "expectations": outcomes.to_wire(),
        "diff": diff_part,
        "audit": {
            "events": events,
            "checkpoint": checkpoint,
            "verification": None
            if verification is None
            else {
                **verification.to_wire(),
                "message": verification.message,
                "anchoredSeq": verification.anchored_seq,
                "tenantId": verification.tenant_id,
            },
            "trustedKeys": trusted_keys,
            "keyIds": keys,
            "bundleSha256": None if bundle is None else hashlib.sha256(canonical_json(bundle)).hexdigest(),
        },
        "checks": [c.to_wire() for c in checks],
        "ties": list(TIES),
    }


def _rules_wire(rules: Sequence[Any]) -> list[dict[str, Any]]:
    """The diff's noise rules as the evidence records them, in the order the diff tried them:
    ``{"builtIn": label}`` for one of :data:`moat_nb.noise.DEFAULT_RULES` (verify re-runs its
    own copy: they hold code), a glob rule as :meth:`~moat_nb.noise.NoiseRule.to_wire` writes
    it, ``{"unrecorded": label}`` for one that cannot be written down (a regex or a predicate;
    the proof notebook makes none)."""
    from .noise import DEFAULT_RULES

    out: list[dict[str, Any]] = []
    for rule in rules:
        if any(rule is d for d in DEFAULT_RULES):
            out.append({"builtIn": rule.label})
            continue
        wire = rule.to_wire()
        out.append(wire if wire is not None else {"unrecorded": rule.label})
    return out


def verify_evidence(
    evidence: Mapping[str, Any],
    bundle: Mapping[str, Any] | None,
    *,
    public_keys: Any = None,
    notebook_bytes: bytes | None = None,
    embedded: Mapping[str, Any] | None = None,
    legacy: bool = False,
) -> list[Check]:
    """Re-check an evidence file offline (pure): the bundle verifies (with ``public_keys`` when
    given), the receipt events are in it under a signed checkpoint and name the same source,
    reason and hashes; the output recorded hashes to the audited output hash, and the
    expectations on the result re-evaluate to the recorded results; the notebook bytes hash to
    ``notebook.sha256`` and the evidence it embeds (``embedded``) is this one.

    ``legacy``: accept evidence made before :data:`TIES` existed, whose times, diff and checks
    nothing ties; their checks are then SKIPPED (and say so) instead of failing. Off by default:
    whoever forges a report can also delete its ``ties``, so a missing list must not by itself
    switch checks off; the reader of an old report opts in knowingly."""
    checks: list[Check] = []
    if evidence.get("format") != EVIDENCE_FORMAT:
        return [Check("format", False, f"format is {evidence.get('format')!r}, expected {EVIDENCE_FORMAT!r}")]
    audit_part = evidence.get("audit") or {}
    bundle_sha = None if bundle is None else hashlib.sha256(canonical_json(bundle)).hexdigest()
    recorded_sha = audit_part.get("bundleSha256")
    # A report folder whose bundle file is gone said "no audit bundle (exporting needs
    # audit:read)", a cause of the proof's run, not of the folder (found by an audit walk).
    bundle_file = (evidence.get("files") or {}).get("auditBundle", "audit-bundle.json")
    no_bundle = (
        f"no audit bundle: the evidence records one ({recorded_sha}), but {bundle_file} is not in the folder"
        if bundle is None and recorded_sha is not None
        else "no audit bundle (exporting needs audit:read)"
    )
    checks.append(
        Check(
            "bundle is the one recorded",
            bundle_sha == recorded_sha,
            f"bundle {bundle_sha}" if bundle is not None else no_bundle,
        )
    )
    verification = None if bundle is None else audit_core.verify_bundle(dict(bundle), public_keys)
    replay = evidence.get("replay") or {}
    hashes = evidence.get("hashes") or {}
    output = evidence.get("output") or {}
    body_sha = sha256_text(output.get("body"))
    checks.append(
        Check(
            "output body hash",
            body_sha == hashes.get("outputBodySha256"),
            f"recorded output hashes to {body_sha}",
        )
    )
    checks += receipt_checks(
        audit_part.get("events") or [],
        bundle,
        verification,
        replay_id=str(replay.get("replayId")),
        source_exchange_id=(evidence.get("source") or {}).get("exchangeId"),
        reason=(evidence.get("parameters") or {}).get("reason"),
        effective_payload_sha256=hashes.get("effectivePayloadSha256"),
        output_body_sha256=body_sha,
        result_execution_id=replay.get("resultExecutionId"),
        trace_hash=_trace_hash(evidence.get("trace")),
        no_bundle=no_bundle,
    )
    if bundle is not None:
        # The evidence's record is every bundle event naming the replay (build_evidence takes
        # them from the bundle); a record with some left out, e.g. REPLAY_STARTED, verified
        # (found by an audit walk): what it shows as the replay's audit record must be whole.
        replay_id = str(replay.get("replayId"))
        recorded = [e.get("seq") for e in audit_part.get("events") or [] if isinstance(e, Mapping)]
        whole = [
            e.get("seq")
            for e in bundle.get("events") or ()
            if isinstance(e, Mapping)
            and isinstance(e.get("target"), Mapping)
            and e["target"].get("replayId") == replay_id
        ]
        checks.append(
            Check(
                "receipt is the replay's whole audit record",
                recorded == whole,
                f"seq {', '.join(map(str, whole))}"
                if recorded == whole
                else f"the evidence records seq {recorded}, the bundle's events of the replay are "
                f"seq {whole}",
            )
        )
        # "The signed checkpoint" the evidence shows is the bundle's newest (build_evidence); an
        # edited copy (seq, signature) verified, the bundle's being the one checked (audit walk).
        checkpoints = bundle.get("checkpoints")
        newest = checkpoints[-1] if isinstance(checkpoints, list) and checkpoints else None
        checks.append(
            Check(
                "recorded checkpoint is the bundle's",
                json_equal(audit_part.get("checkpoint"), newest),
                "the bundle's newest, compared as JSON"
                if json_equal(audit_part.get("checkpoint"), newest)
                else f"the evidence records {_short(audit_part.get('checkpoint'))}, the bundle's newest is "
                f"{_short(newest)}",
            )
        )
    parameters = evidence.get("parameters") or {}
    claimed_source = parameters.get("sourceExchangeId")
    recorded_source = (evidence.get("source") or {}).get("exchangeId")
    # (No source in the parameters: the notebook, run by hand, picked one, and the evidence's
    # source is the claim; the receipt checks tie that one to the audit.)
    checks.append(
        Check(
            "claimed source is the audited one",
            claimed_source is None or claimed_source == recorded_source,
            f"the parameters name {claimed_source!r}, the evidence and its audit {recorded_source!r}",
        )
    )
    receipt = [e for e in audit_part.get("events") or [] if isinstance(e, Mapping)]
    mine = [e for e in receipt if (e.get("target") or {}).get("replayId") == str(replay.get("replayId"))]
    requested = next((e for e in mine if e.get("action") == "REPLAY_REQUESTED"), {})
    final = next((e for e in mine if e.get("action") in _TERMINAL_ACTIONS), {})
    checks += payload_claim_checks(parameters, requested)
    checks += _environment_checks(evidence, requested)
    checks += _requester_checks(evidence, requested)
    checks += _request_checks(evidence, requested)
    checks += _result_record_checks(evidence, final)
    # The result's status and error, as the signed terminal event has them (the body is tied by
    # its hash above): an edited output cannot turn a failed replay into a passing proof.
    fdetail = final.get("detail") or {}
    audited = (fdetail.get("resultStatus"), fdetail.get("errorType"), fdetail.get("errorMessage"))
    claimed = (output.get("status"), output.get("errorType"), output.get("errorMessage"))
    checks.append(
        Check("audited result status and error", bool(final) and audited == claimed, f"audit says {audited}")
    )
    # The output's maps, where the platform audits their hashes (the sandbox does; section 7
    # does not ask for them): then expectations on headers and properties are vouched for too.
    vouched = {"status", "error", "body"}
    for part, key in (("headers", "outputHeadersSha256"), ("properties", "outputPropertiesSha256")):
        if key in fdetail and fdetail[key] is None:
            # The platform hashed no map (an older sandbox had no hash of a map with a Java long
            # id, nor of an output without one): nothing vouches for the claim, whatever it is,
            # and expectations on it rest on the report's data. Compared, two missing hashes
            # passed a forged map, or a map claimed away (null) to pass "exists: false"
            # (found by review, twice).
            continue
        if key in fdetail:
            computed = map_sha256(output.get(part))
            checks.append(
                Check(
                    f"audited output {part} hash",
                    computed == fdetail[key],
                    f"audit {fdetail[key]}, computed {computed}",
                )
            )
            vouched.add(part)
    # Expectations on the result re-evaluate from the audited output; those on a processor from
    # the recorded output of that processor, where the audit vouches for the trace
    # (traceSha256, checked in receipt_checks) and the output hashes to its entry.
    subject = Subject.from_wire(output)
    trace = evidence.get("trace")
    audited_trace = fdetail.get("traceSha256")
    trace_vouched = (
        audited_trace is not None and isinstance(trace, Mapping) and _trace_hash(trace) == audited_trace
    )
    outputs = evidence.get("processorOutputs")
    outputs = outputs if isinstance(outputs, list) else []
    recorded = evidence.get("expectations") or []
    mismatch = []
    unvouched = 0
    for i, item in enumerate(recorded):
        try:
            exp = Expectation.from_wire(item.get("expectation"), i)
        except ValidationError as exc:
            mismatch.append(f"{i + 1} ({exc.message})")
            continue
        if exp.processor is not None and trace_vouched:
            found, why = _processor_subject(exp, trace, outputs)
            if found is None:
                mismatch.append(f"{i + 1} ({why})")
            elif not json_equal(fresh := evaluate_one(exp, found).to_wire(), item):
                mismatch.append(_difference(i, item, fresh))
            continue
        if exp.processor is not None or exp.path.split(":", 1)[0] in {"headers", "properties"} - vouched:
            unvouched += 1  # the audit chain holds no hash of this processor's data (or of these maps)
        if exp.processor is None:
            # The whole recorded result, not only `passed`: its label, the value found and the
            # message are what a reader of the report sees.
            if not json_equal(fresh := evaluate_one(exp, subject).to_wire(), item):
                mismatch.append(_difference(i, item, fresh))
        elif item.get("label") != exp.label or not json_equal(item.get("expectation"), exp.to_wire()):
            mismatch.append(f"{i + 1} (its label is not its expectation's)")
    claimed_exps = [item.get("expectation") for item in recorded]
    checks.append(
        Check(
            "expectations are the parameters'",
            bool(recorded) and json_equal(claimed_exps, parameters.get("expectations")),
            f"{len(recorded)} recorded, {len(parameters.get('expectations') or [])} in the parameters",
        )
    )
    checks.append(
        Check(
            "expectations re-evaluate",
            not mismatch and bool(recorded),
            f"expectation(s) {', '.join(mismatch)} differ"
            if mismatch
            else f"{len(recorded)} recorded, all agree"
            + (
                f"; {unvouched} on a processor (or on output maps the audit has no hash of) rest on "
                "the report's own data (the audit chain does not vouch for them)"
                if unvouched
                else ""
            ),
        )
    )
    verdict_ok = all(item.get("passed") for item in recorded) and bool(recorded)
    holds = verdict_ok and all(c.ok for c in checks)
    # "FAILED verdict: recorded FAIL" read as the proof failing; say what the verdict should be.
    checks.append(
        Check(
            "verdict",
            (evidence.get("verdict") == "PASS") == holds,
            f"recorded {evidence.get('verdict')}"
            + (
                ""
                if (evidence.get("verdict") == "PASS") == holds
                else ", but every expectation holds and every check above passes: PASS"
                if holds
                else ", but "
                + ("a recorded expectation fails" if not verdict_ok else "a check above fails")
                + ": not PASS"
            ),
        )
    )
    if "failures" in evidence or "expectationsHold" in evidence:
        checks.append(_failures_check(evidence, recorded, verdict_ok))
    ties = evidence.get("ties")
    ties = set(ties) if isinstance(ties, list) and all(isinstance(t, str) for t in ties) else set()
    for fields, name, make in (
        (("replay.requestedAt", "replay.finishedAt"), "audited request and finish times",
         lambda: _time_check(evidence, requested, final)),
        (("diff",), "diff is of the audited executions",
         lambda: _diff_check(evidence, requested, final, noise_kept="diff.noise" in ties)),
        (("diff.noise",), "diff noise rows", lambda: _noise_check(evidence)),
        (("checks",), "recorded checks", lambda: _recorded_checks(evidence, bundle, verification)),
        (("parameters.expectations",), "audited claim", lambda: _claim_check(parameters, requested)),
    ):  # fmt: skip
        what = " and ".join(fields)
        if ties.issuperset(fields):
            checks.append(make())
        elif legacy:
            # Evidence made before these were tied, accepted as such by the reader: failing it
            # would fail a genuine old report for a field its maker never tied. It holds, and
            # says that nothing vouches for the field.
            checks.append(
                Check(
                    name,
                    True,
                    f"not checked: the evidence predates this check (its 'ties' does not list {what}), "
                    f"so nothing vouches for {what}",
                    skipped=True,
                )
            )
        else:
            # Not skipped on the evidence's own word: a forger deletes `ties` as easily as he
            # edits the fields it names (review of the auditor walk's fix).
            checks.append(
                Check(
                    name,
                    False,
                    f"the evidence's 'ties' does not list {what}: it was made before moat_nb tied them "
                    f"to the audit, or the list was removed, and nothing vouches for {what}; to accept "
                    "a report made by an older moat_nb knowing that, verify with legacy=True "
                    "(`moat-nb report verify --legacy`)",
                )
            )
    nb = evidence.get("notebook") or {}
    if notebook_bytes is not None:
        sha = hashlib.sha256(notebook_bytes).hexdigest()
        checks.append(Check("notebook hash", sha == nb.get("sha256"), f"file hashes to {sha}"))
    if embedded is not None:
        own = {k: v for k, v in evidence.items() if k not in RUNNER_KEYS}
        checks.append(
            Check("notebook embeds this evidence", json_equal(own, dict(embedded)), "compared as JSON")
        )
    return checks


def _claim_check(parameters: Mapping[str, Any], requested: Mapping[str, Any]) -> Check:
    """The expectations the report lists against the claim its replay's audited request named
    (:data:`CLAIM_TAG`): a report that left out a failing expectation, or listed another one,
    verified, as the platform records no expectations (red-team walk)."""
    client = (requested.get("source") or {}).get("client")
    found = _CLAIM.search(client) if isinstance(client, str) else None
    listed = parameters.get("expectations")
    want = claim_sha256(listed)
    if found is None:
        return Check(
            "audited claim",
            False,
            f"the audited request names no claim (its client is {client!r}): nothing vouches for "
            "which expectations were asked",
        )
    ok = found.group(1) == want
    n = len(listed) if isinstance(listed, list) else 0
    return Check(
        "audited claim",
        ok,
        f"the {n} expectation(s) listed are the ones the audited request named ({CLAIM_TAG}{want})"
        if ok
        else f"the audited request named {CLAIM_TAG}{found.group(1)}, the {n} expectation(s) listed "
        f"hash to {want}: expectations were left out, added or changed",
    )


def _time_check(evidence: Mapping[str, Any], requested: Mapping[str, Any], final: Mapping[str, Any]) -> Check:
    """``replay.requestedAt`` and ``finishedAt`` against the ``occurredAt`` of the audited
    REPLAY_REQUESTED and terminal events, which build_evidence copies them from: a report could
    move its replay in time and verify (auditor walk)."""
    replay = evidence.get("replay") or {}
    pairs = (
        ("replay.requestedAt", replay.get("requestedAt"), requested.get("occurredAt")),
        ("replay.finishedAt", replay.get("finishedAt"), final.get("occurredAt")),
    )
    wrong = [
        f"{name} is {claimed!r}, the audit {audited!r}"
        for name, claimed, audited in pairs
        if claimed != audited
    ]
    return Check(
        "audited request and finish times",
        not wrong and all(audited is not None for _, _, audited in pairs),
        "; ".join(wrong) if wrong else f"requested {pairs[0][2]}, finished {pairs[1][2]}, as audited",
    )


#: The diff's rows for the execution's entry and exit (moat_nb.diff.START / END; not imported:
#: the diff module pulls in DeepDiff, and verification is pure and light).
_START, _END = "(start)", "(end)"
#: build_evidence keeps at most this many of the diff's rows that are not noise.
_DIFF_ROWS = 200
#: ... and at most this many of its noise rows, apart: many noise rows (a calibrated timestamp
#: at every processor) must not push a real difference out of the evidence.
_NOISE_ROWS = 500
#: A line of a diff summary that states the count (moat_nb.diff.DiffResult.summary writes one).
_COUNT_LINE = re.compile(r"no differences\b|\d+ differences? \(")


def _noise_rows(diff: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], list[str]]:
    """The diff's kept noise rows (``noiseRows``), and what is wrong with their form."""
    noise = diff.get("noiseRows")
    if not isinstance(noise, list) or not all(isinstance(r, Mapping) for r in noise):
        return [], [f"diff.noiseRows is {_short(noise)}, not a list of rows"]
    wrong = [i for i, r in enumerate(noise) if r.get("noise") is not True]
    return noise, [f"noise row {wrong[0]} is not marked noise"] if wrong else []


def _all_rows(
    rows: Sequence[Mapping[str, Any]], noise: Sequence[Mapping[str, Any]], whole: bool = True
) -> tuple[list[Mapping[str, Any]], list[str]]:
    """The diff's rows in its order (what the route line's names follow): each noise row at its
    ``index``, the differences in the places left. With indexes that cannot be those places,
    the differences and then the noise rows, and why. Where the rows were cut at a cap (not
    ``whole``), an index is a place among all the diff's rows, also past the rows kept (a noise
    row after a cut-off difference): the kept rows are then put in that order, the differences
    after the last noise row last."""
    n = len(rows) + len(noise)
    at = [r.get("index") for r in noise]
    if any(type(i) is not int or not 0 <= i < (n if whole else math.inf) for i in at) or at != sorted(
        set(at)
    ):
        return [*rows, *noise], ["the noise rows' indexes are not places among the diff's rows"]
    by_index = dict(zip(at, noise, strict=True))
    out: list[Mapping[str, Any]] = []
    rest = iter(rows)
    for i in range(max(at, default=-1) + 1):
        if i in by_index:
            out.append(by_index[i])
        elif (row := next(rest, None)) is not None:
            out.append(row)
    return [*out, *rest], []


def _diff_check(
    evidence: Mapping[str, Any],
    requested: Mapping[str, Any],
    final: Mapping[str, Any],
    *,
    noise_kept: bool = False,
) -> Check:
    """The original-vs-replay diff the report shows (``diff``), against what the evidence
    proves: the two executions it compares are the audited source execution and result; its
    ``same``, ``counts``, ``firstDivergence`` and the summary's count line agree with its rows;
    and the replay's side of every row (which processor, its status and error, the route taken,
    the result's status and error) is the audited trace's and output's. Nothing tied it, so a
    report could say "no differences" beside a replay that diverged (auditor walk).

    The original's side is not vouched for: the platform audits no hash of the recorded
    exchange (DESIGN.md section 7 does not ask for one); nor are the values inside bodies,
    headers and properties (the trace holds bodies by hash). The detail says so.

    ``noise_kept`` (the evidence's ties list ``diff.noise``): the evidence keeps the noise rows
    too (``noiseRows``), so ``counts.noise``, the count line's noise, the original's status and
    error in the result line and the route line are made again from all the rows, and the
    replay's side of a noise row is checked as any row's (whether each is noise by its rule is
    :func:`_noise_check`'s). Without it (a report made before), those rest on the report's word
    and the detail says so."""
    diff = evidence.get("diff")
    if diff is None:
        return Check("diff is of the audited executions", True, "the evidence records no diff")
    if not isinstance(diff, Mapping):
        return Check("diff is of the audited executions", False, f"diff is {_short(diff)}, not an object")
    rdetail = requested.get("detail") or {}
    fdetail = final.get("detail") or {}
    problems: list[str] = []
    source_execution = rdetail.get("sourceExecutionId", (evidence.get("source") or {}).get("executionId"))
    for name, claimed, audited in (
        ("diff.originalExecutionId", diff.get("originalExecutionId"), source_execution),
        ("diff.replayExecutionId", diff.get("replayExecutionId"), fdetail.get("resultExecutionId")),
    ):
        if claimed is None or claimed != audited:
            problems.append(f"{name} is {claimed!r}, the audit {audited!r}")
    rows = diff.get("differences")
    rows = [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []
    whole = len(rows) < _DIFF_ROWS  # build_evidence kept every row that is not noise
    marked = [i for i, r in enumerate(rows) if r.get("noise")]
    if marked:  # build_evidence never put a noise row among the differences
        problems.append(f"difference {marked[0]} is marked noise")
    all_rows: list[Mapping[str, Any]] = rows
    noise_rows: list[Mapping[str, Any]] = []
    if noise_kept:
        noise_rows, wrong = _noise_rows(diff)
        problems += wrong
        whole = whole and len(noise_rows) < _NOISE_ROWS
        all_rows, wrong = _all_rows(rows, noise_rows, whole)
        problems += wrong
    if diff.get("same") is not (not rows):
        problems.append(f"same is {diff.get('same')!r} beside {len(rows)} difference(s)")
    counts = diff.get("counts") if isinstance(diff.get("counts"), Mapping) else {}
    by_cause = {c: sum(1 for r in rows if r.get("cause") == c) for c in ("route", "input")}
    for cause, n in by_cause.items():
        if (counts.get(cause, 0) != n) if whole else (counts.get(cause, 0) < n):
            problems.append(f"counts.{cause} is {counts.get(cause, 0)!r}, the rows have {n}")
    if noise_kept:
        # The noise count the count line says, from the rows now kept: a raised count verified,
        # with the count line edited to match (red-team walk).
        n = len(noise_rows)
        if (counts.get("noise", 0) != n) if whole else (counts.get("noise", 0) < n):
            problems.append(f"counts.noise is {counts.get('noise', 0)!r}, the noise rows are {n}")
    first = next((r for r in rows if r.get("cause") == "route"), None)
    keys = ("routeId", "processorId", "iteration", "seqOriginal", "seqReplay")
    expected = None if first is None else {k: first.get(k) for k in keys}
    if (whole or first is not None) and not json_equal(diff.get("firstDivergence"), expected):
        problems.append(
            f"firstDivergence is {_short(diff.get('firstDivergence'))}, the rows say {_short(expected)}"
        )
    summary = diff.get("summary") if isinstance(diff.get("summary"), str) else ""
    if whole:
        # The summary's count line, as moat_nb.diff.DiffResult.summary writes it.
        noise = len(noise_rows) if noise_kept else counts.get("noise", 0)
        procs = {tuple(r.get(k) for k in keys) for r in rows if r.get("processorId") not in (_START, _END)}
        lines = _count_lines(rows, by_cause, len(procs), noise, evidence.get("source") or {})
        # Every count line, not one of them: a summary that said "no differences" beside the
        # true line verified, and a reader reads the first.
        said = [x for x in summary.splitlines() if _COUNT_LINE.match(x)]
        wrong = [x for x in said if x not in lines]
        if not said or (wrong and not set(said) & set(lines)):
            problems.append(f"the summary does not say {lines[0]!r}")
        elif wrong:
            problems.append(f"the summary also says {wrong[0]!r}, which the rows do not")
    wrong_lines, unvouched = _summary_problems(
        evidence, diff, all_rows, whole, len(noise_rows) if noise_kept else counts.get("noise", 0), noise_kept
    )
    problems += wrong_lines
    # Every row's replay side, the noise rows' too: a noise row's value is the audited one.
    problems += _diff_replay_side(evidence, all_rows, fdetail)
    return Check(
        "diff is of the audited executions",
        not problems,
        "; ".join(problems[:4]) + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else "")
        if problems
        else f"{diff.get('originalExecutionId')} vs {diff.get('replayExecutionId')} as audited; "
        f"{len(rows)} difference(s)"
        + (f" and {len(noise_rows)} noise row(s)" if noise_kept else "")
        + " agree with same, counts, firstDivergence and the summary's lines, "
        "their replay side with the audited trace and output; the original's values (and the "
        "replay's values inside bodies, headers and properties before the result), "
        + "; ".join(unvouched)
        + " rest on the report's own data: the platform audits no hash of the recorded exchange",
    )


def _recorded_rules(recorded: Any) -> tuple[list[tuple[str, Any]], list[str]]:
    """The noise rules the evidence records (:func:`_rules_wire`) as ``(label, rule)`` in the
    diff's order, ``rule`` None where verify cannot re-run it (one not written down, or a
    built-in this moat_nb does not have); and what is wrong with the record."""
    from .noise import DEFAULT_RULES, NoiseRule

    if not isinstance(recorded, list):
        return [], [f"diff.noiseRules is {_short(recorded)}, not a list of rules"]
    built_in = {rule.label: rule for rule in DEFAULT_RULES}
    out: list[tuple[str, Any]] = []
    problems = []
    for i, item in enumerate(recorded):
        if isinstance(item, Mapping) and set(item) == {"builtIn"} and isinstance(item["builtIn"], str):
            # This moat_nb's own copy: built-in rules hold code, which a report cannot carry.
            out.append((item["builtIn"], built_in.get(item["builtIn"])))
        elif (
            isinstance(item, Mapping) and set(item) == {"unrecorded"} and isinstance(item["unrecorded"], str)
        ):
            out.append((item["unrecorded"], None))
        else:
            try:
                rule = NoiseRule.from_wire(dict(item) if isinstance(item, Mapping) else item)
            except ValidationError as exc:
                problems.append(f"noise rule {i}: {exc.message}")
                continue
            out.append((rule.label, rule))
    return out, problems


def _noise_check(evidence: Mapping[str, Any]) -> Check:
    """Whether each row the diff kept is noise exactly when the noise rules it recorded say so,
    by the rule they name: the rules are re-run here on the rows, as :func:`moat_nb.diff.diff`
    ran them (the first that matches names the row), with the two executions' ids the evidence
    records. A report could hide a real difference as "noise" (red-team walk); the count and
    the summary's lines drawn from the rows are :func:`_diff_check`'s.

    What this cannot vouch for, and says: a calibrated rule is recorded as the diff used it,
    but what the two calibration replays found (their data) is not in the evidence, so that
    the rule is theirs rests on the report's word; a rule not written down (a regex or a
    predicate; the proof makes none) or a built-in this moat_nb lacks is not re-run."""
    from .diff import DiffRow
    from .noise import IdContext

    name = "diff noise rows"
    diff = evidence.get("diff")
    if diff is None:
        return Check(name, True, "the evidence records no diff")
    if not isinstance(diff, Mapping):
        return Check(name, False, f"diff is {_short(diff)}, not an object")
    rows = diff.get("differences")
    rows = [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []
    noise, problems = _noise_rows(diff)
    rules, wrong = _recorded_rules(diff.get("noiseRules"))
    problems += wrong
    source, replay = evidence.get("source") or {}, evidence.get("replay") or {}
    ids = IdContext(
        original_ids=tuple(i for i in (source.get("exchangeId"), source.get("executionId")) if i),
        replay_ids=tuple(i for i in (replay.get("exchangeId"), replay.get("executionId")) if i),
    )
    unsure = calibrated = by_ids = 0
    for what, row in [*((f"difference {i}", r) for i, r in enumerate(rows)),
                      *((f"noise row {i}", r) for i, r in enumerate(noise))]:  # fmt: skip
        where = f"{what} ({row.get('processorId')} {row.get('path')})"
        r = DiffRow.from_dict(row)
        said = row.get("noiseRule") if row.get("noise") else None
        found, rule_of = None, None
        for label, rule in rules:
            if rule is None:
                if said == label:  # cannot be re-run: taken as written, and counted
                    found, rule_of = label, None
                    break
                continue
            if rule.matches(r, ids):
                found, rule_of = label, rule
                break
        if row.get("noise"):
            if found is None:
                problems.append(
                    f"{where} is marked noise ({said!r}), and no rule the diff used classes it so"
                )
            elif found != said:
                problems.append(f"{where} is marked noise by {said!r}, the rules name {found!r}")
            elif rule_of is None:
                unsure += 1
            elif not any(rule_of is d for d in _default_rules()):
                calibrated += 1
            elif rule_of.predicate is not None:
                by_ids += 1
        elif found is not None and rule_of is not None:
            problems.append(f"{where} is not marked noise, and the rule {found!r} classes it so")
    if problems:
        return Check(
            name,
            False,
            "; ".join(problems[:4]) + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else ""),
        )
    notes = []
    if calibrated:
        notes.append(
            f"{calibrated} by rules not built in (calibration's): they are recorded as the diff used "
            "them, but the two calibration replays' data is not in the evidence, so that they are "
            "what calibration found rests on the report's word"
        )
    if by_ids:
        notes.append(
            f"{by_ids} by the executions' own ids, the replay's exchange id as the evidence records it "
            "(the audit does not name it)"
        )
    if unsure:
        notes.append(f"{unsure} by rules not written down or not in this moat_nb, taken as written")
    return Check(
        name,
        True,
        f"{len(noise)} noise row(s) classed so by the rules the diff recorded (re-run here), "
        f"and no difference that they class as noise" + ("; " + "; ".join(notes) if notes else ""),
    )


def _default_rules() -> tuple[Any, ...]:
    from .noise import DEFAULT_RULES

    return DEFAULT_RULES


#: The summary's lines by what starts them (moat_nb.diff.DiffResult.summary's order); the head
#: line is the first, and the count line is matched by _COUNT_LINE.
_SUMMARY_KINDS = (
    ("result", "result: "),
    ("route", "route: "),
    ("first divergence", "first divergence: "),
    ("first seen", "first seen:"),
    ("first seen", "  "),
    ("could not compare", "could not compare: "),
)


def _summary_problems(
    evidence: Mapping[str, Any],
    diff: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    whole: bool,
    noise: Any,
    noise_kept: bool = False,
) -> tuple[list[str], list[str]]:
    """The summary's lines other than the count line, made again with the functions that wrote
    them (moat_nb.diff.summary_*) from what verify trusts: the rows (tied above), the audited
    output's status and error (the result checks), the evidence's limitations; and what of
    them rests on the report's own word. An edited result, route, first divergence or "could
    not compare" line verified (red-team walk), and so did a line added to the summary.

    Returns (problems, what is not vouched). ``rows`` are all the rows the evidence keeps, in
    the diff's order (the noise rows too where ``noise_kept``). The original's side comes from
    the rows where they show it (an ``(end)`` status or error row holds the original's, noise or
    not), else it is the replay's. Evidence made before the noise rows were kept
    (``noise_kept`` False) has none, so where ``counts.noise`` is not 0 the original's status
    and error may differ unseen, and the processors only one side ran may be more: those parts
    are taken as written, and the detail says so. The limitations are the evidence's own list
    (the original's capture and detail are not audited), but the summary must say exactly
    them, and say that the routes differ exactly when they do (both are tied to the audited
    request)."""
    from types import SimpleNamespace

    from .diff import (
        DiffRow,
        _same_failure,
        summary_first_divergence,
        summary_first_seen,
        summary_head,
        summary_limitations,
        summary_result,
        summary_route,
    )

    summary = diff.get("summary") if isinstance(diff.get("summary"), str) else ""
    said: dict[str, list[str]] = {}
    problems: list[str] = []
    unvouched = ["the summary's first line (the routes' versions, the source's status)"]
    lines = summary.splitlines()
    source = evidence.get("source") or {}
    replay = evidence.get("replay") or {}
    output = evidence.get("output") or {}
    for i, line in enumerate(lines):
        if _COUNT_LINE.match(line):
            continue  # the count line is _diff_check's
        kind = "head" if i == 0 else next((k for k, start in _SUMMARY_KINDS if line.startswith(start)), None)
        if kind is None:
            problems.append(f"the summary says {line!r}, which is no line a diff summary has")
            continue
        said.setdefault(kind, []).append(line)
    limitations = diff.get("limitations")
    limitations = [str(x) for x in limitations] if isinstance(limitations, list) else None
    # The replay's side as audited: the result's status and error are the output's (tied by
    # the result checks); _side reads the execution's status, which is the output's.
    r = SimpleNamespace(
        route_id=replay.get("routeId"),
        exchange_id=replay.get("exchangeId"),
        route_version=replay.get("routeVersion"),
        environment=replay.get("environment"),
        capture_mode=replay.get("captureMode"),
        status=output.get("status"),
        error_type=output.get("errorType"),
        error_message=output.get("errorMessage"),
        output_headers=output.get("headers"),
    )
    end = {row.get("path"): row for row in rows if row.get("processorId") == _END}

    def original(path: str, replays: Any) -> Any:
        row = end.get(path)
        return replays if row is None else None if row.get("kind") == "added" else row.get("original")

    o = SimpleNamespace(
        route_id=source.get("routeId"),
        exchange_id=source.get("exchangeId"),
        route_version=source.get("routeVersion"),
        environment=source.get("environment"),
        capture_mode=source.get("captureMode"),
        status=original("status", r.status),
        error_type=original("error:type", r.error_type),
        error_message=original("error:message", r.error_message),
        output_headers={},
    )
    expected: dict[str, list[list[str]]] = {}  # kind -> the line lists that agree
    head = summary_head(SimpleNamespace(**{**vars(o), "status": source.get("status")}), r)
    expected["head"] = [[head]]
    if limitations is None:
        unvouched.append("what could not be compared (the evidence lists no limitations)")
        expected["could not compare"] = [said.get("could not compare", [])]
    else:
        expected["could not compare"] = [summary_limitations(limitations)]
        # Whether the routes differ is in what the audit ties (both routeIds are the audited
        # request's, "audited request"): the line must be there exactly when they do.
        routes = (source.get("routeId"), replay.get("routeId"))
        differ = any(x.startswith("the executions ran different routes") for x in limitations)
        if None not in routes and differ != (routes[0] != routes[1]):
            problems.append(
                f"the summary {'says' if differ else 'does not say'} that the executions ran different "
                f"routes, and they ran {routes[0]} and {routes[1]}"
            )
        unvouched.append("which other limitations apply (the original's capture and detail)")
    if whole:
        diff_rows = [DiffRow.from_dict(row) for row in rows]
        # Whether the original had an output: the diff says so among its limitations.
        outputs = [{}]
        if limitations is not None and any("no output payload" in x for x in limitations):
            outputs = [None]
        elif limitations is None or any("no detail" in x for x in limitations):
            outputs = [{}, None]
        sides = [SimpleNamespace(**{**vars(o), "output_headers": h}) for h in outputs]
        results = [summary_result(side, r, diff_rows) for side in sides]
        # Written before the result line said how two failures compare (a5c60c7): the same
        # line without those words.
        results += [
            x.replace(words, "", 1)
            for x, side in zip(results, sides, strict=True)
            if (words := _same_failure(side, r))
        ]
        expected["result"] = [[x] for x in dict.fromkeys(results)]
        expected["route"] = [[x] for x in (summary_route(diff_rows),) if x] or [[]]
        first = summary_first_divergence(diff_rows)
        expected["first divergence"] = [[first] if first else []]
        expected["first seen"] = [summary_first_seen(diff_rows)]
        if noise and not noise_kept:
            # Noise rows were not kept (evidence made before): an (end) status or error, or a
            # route row, that was noise is not in the rows. What rests on them is taken as written.
            unvouched.append(
                "the original's status and error and the processors one side ran (noise rows are not kept)"
            )
            result = said.get("result", [])
            bare = summary_result(SimpleNamespace(**{**vars(o), "output_headers": None}), r, [])
            tail = results[0][len(bare) :] if results[0].startswith(bare) else ""
            if len(result) == 1 and f" {r.status}" in result[0] and result[0].endswith(tail):
                expected["result"].append(result)
            if said.get("route") and len(said["route"]) == 1:
                expected["route"].append(said["route"])
    else:
        unvouched.append(
            "the summary's lines drawn from the rows (the evidence keeps at most "
            f"{_DIFF_ROWS} differences and {_NOISE_ROWS} noise rows, not all)"
        )
        for kind in ("result", "route", "first divergence", "first seen"):
            expected[kind] = [said.get(kind, [])]
    for kind, agree in expected.items():
        mine = said.get(kind, [])
        if mine not in agree:
            want = agree[0]
            problems.append(
                f"the summary's {kind} line(s) {_short(mine)}, the "
                + ("evidence's own facts" if kind == "head" else "rows and the audited result")
                + f" say {_short(want)}"
            )
    return problems, unvouched


def _count_lines(
    rows: Sequence[Mapping[str, Any]],
    by_cause: Mapping[str, int],
    processors: int,
    noise: Any,
    source: Mapping[str, Any],
) -> list[str]:
    """The summary's count lines that agree with the rows, the one moat_nb.diff writes now
    first, made by the function that writes it (moat_nb.diff.summary_count). Reports written
    before say it as they did then, and must still verify with the same rows: "at N processors"
    for a ROUTE-captured original too (before the summary said it was captured at ROUTE level),
    and the plural for a count of one ("1 differences ... at 1 processors"). Whether the
    original's processors were recorded, which decides between two ROUTE phrasings, is not in
    the evidence (only ``processorCount``): either is taken, as the original's side rests on the
    report's own data anyway (the platform audits no hash of it)."""
    from .diff import summary_count

    if not rows:
        return [f"no differences (apart from {noise} noise)" if noise else "no differences"]
    mode = source.get("captureMode")
    recorded = [bool(source.get("processorCount")), not source.get("processorCount")]
    ways = [(mode, r) for r in recorded] if mode == "ROUTE" else [(mode, True)]
    ways.append((None, True))  # the wording before ROUTE was said
    return list(
        dict.fromkeys(
            summary_count(len(rows), by_cause, processors, noise, m, r, plural_always=plural)
            for plural in (False, True)
            for m, r in ways
        )
    )


def _end_value_problem(row: Mapping[str, Any], output: Mapping[str, Any]) -> str | None:
    """What is wrong with the replay's value a diff row shows at the result, against the
    recorded output (tied to the audit by its hashes); None when it agrees, or when the row's
    path is not one the expectations can read (then nothing is claimed here)."""
    from .expectations import _ABSENT, _lookup
    from .noise import parse_path

    try:
        parsed = parse_path(str(row.get("path")))
    except ValidationError:
        return None
    value = row.get("replay")
    found = _lookup(Subject.from_wire(output), parsed, value)
    if row.get("kind") == "removed":
        return (
            None
            if found is _ABSENT
            else f"the row says removed, the audited output has {_short(found)} there"
        )
    if found is _ABSENT:
        return f"the replay's value is {_short(value)}, the audited output has nothing there"
    if not json_equal(value, found):
        return f"the replay's value is {_short(value)}, the audited output's {_short(found)}"
    return None


def _diff_replay_side(
    evidence: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], fdetail: Mapping[str, Any]
) -> list[str]:
    """What is wrong with the replay's side of the diff's rows, against the trace (when the
    audit vouches for it: its traceSha256) and the output (vouched for by the result checks)."""
    trace = evidence.get("trace")
    audited = fdetail.get("traceSha256")
    vouched = audited is not None and isinstance(trace, Mapping) and _trace_hash(trace) == audited
    entries = (
        {e.get("seq"): e for e in (trace.get("entries") or []) if isinstance(e, Mapping)}
        if vouched and isinstance(trace, Mapping)
        else {}
    )
    output = evidence.get("output") or {}
    # The parts of the output the audit vouches for: the body always (outputBodySha256), a map
    # where the terminal event holds its hash (checked by "audited output ... hash").
    vouched_parts = {"body"} | {
        part
        for part, key in (("headers", "outputHeadersSha256"), ("properties", "outputPropertiesSha256"))
        if fdetail.get(key) is not None
    }
    problems = []
    for i, row in enumerate(rows):
        where = f"row {i} ({row.get('processorId')} {row.get('path')})"
        fld, kind, value = row.get("field"), row.get("kind"), row.get("replay")
        if row.get("processorId") == _END:
            found = {"status": output.get("status"), "error:type": output.get("errorType"),
                     "error:message": output.get("errorMessage")}  # fmt: skip
            if row.get("path") in found and value != found[row.get("path")]:
                problems.append(
                    f"{where}: the replay's value is {_short(value)}, "
                    f"the audited output's {_short(found[row.get('path')])}"
                )
            elif fld in vouched_parts and row.get("path") not in found:
                # The result's body (and maps, where audited) is the audited one: the value the
                # row shows on the replay's side must be what is there. A row's value at the
                # result was taken on the report's word, and a forged total verified (audit walk).
                why = _end_value_problem(row, output)
                if why:
                    problems.append(f"{where}: {why}")
            continue
        if row.get("processorId") == _START or not vouched:
            continue
        seq = row.get("seqReplay")
        if seq is None:
            if not (fld == "route" and kind == "removed"):
                problems.append(f"{where}: names no processor of the replay")
            continue
        entry = entries.get(seq)
        if entry is None or (entry.get("processorId"), entry.get("iteration")) != (
            row.get("processorId"),
            row.get("iteration"),
        ):
            problems.append(f"{where}: the audited trace has no {row.get('processorId')} at seq {seq}")
            continue
        found = {"status": entry.get("status"), "error:type": entry.get("errorType"),
                 "error:message": entry.get("errorMessage")}  # fmt: skip
        if fld == "route":
            ok = (
                kind == "added"
                and row.get("seqOriginal") is None
                and isinstance(value, Mapping)
                and value.get("status") == entry.get("status")
            )
        else:
            ok = row.get("path") not in found or value == found[row.get("path")]
        if not ok:
            problems.append(f"{where}: the replay's value is {_short(value)}, not the audited trace's")
    return problems


def _recorded_checks(
    evidence: Mapping[str, Any],
    bundle: Mapping[str, Any] | None,
    verification: audit_core.VerifyResult | None,
) -> Check:
    """The checks the proof recorded (``checks``, shown in the report) and ``auditVerified``,
    against the same checks made again here from the evidence and the bundle: a report could
    show every check OK, or a detail of its own, and verify (auditor walk).

    Made again as build_evidence made them, with two differences it cannot avoid: the receipt
    the proof checked was the platform's answer, not kept, so those checks' details (event
    counts) are not compared, only whether they held; and a check that depends on the keys
    trusted (the bundle verifying, a signed checkpoint) may have failed for the proof (it
    trusted other keys: MOAT_AUDIT_KEYS) and hold here, not the other way round."""
    recorded = evidence.get("checks")
    if not isinstance(recorded, list) or not all(isinstance(c, Mapping) for c in recorded):
        return Check("recorded checks", False, f"checks is {_short(recorded)}, not a list of checks")
    replay = evidence.get("replay") or {}
    hashes = evidence.get("hashes") or {}
    output_sha = sha256_text((evidence.get("output") or {}).get("body"))
    events = [e for e in (evidence.get("audit") or {}).get("events") or [] if isinstance(e, Mapping)]
    replay_id = str(replay.get("replayId"))
    mine = [e for e in events if (e.get("target") or {}).get("replayId") == replay_id]
    requested = next((e for e in mine if e.get("action") == "REPLAY_REQUESTED"), {})
    final = next((e for e in mine if e.get("action") in _TERMINAL_ACTIONS), {})
    platform_sha = hashes.get("platformOutputBodySha256")
    audited_source = (requested.get("target") or {}).get("sourceExchangeId")
    result_id = (final.get("detail") or {}).get("resultExecutionId")
    source_id = (evidence.get("source") or {}).get("exchangeId")
    again = [
        Check(
            "output hash matches the platform's",
            output_sha is not None and output_sha == platform_sha,
            f"computed {output_sha}, platform {platform_sha}",
        ),
        *receipt_checks(
            events,
            bundle,
            verification,
            replay_id=replay_id,
            source_exchange_id=source_id,
            reason=(evidence.get("parameters") or {}).get("reason"),
            effective_payload_sha256=hashes.get("effectivePayloadSha256"),
            output_body_sha256=output_sha,
            result_execution_id=replay.get("resultExecutionId"),
            trace_hash=_trace_hash(evidence.get("trace")),
        ),
        # build_evidence asked the replay execution itself; offline, the audit says the same.
        Check(
            "replay is of the source",
            result_id is not None
            and result_id == replay.get("resultExecutionId")
            and audited_source == source_id,
            f"execution {result_id} replays {audited_source}",
        ),
    ]
    key_bound = {"bundle verifies", "receipt under a signed checkpoint"}
    counted = {"receipt complete", "receipt hashes recompute", "receipt in bundle"} | key_bound
    problems = []
    names = [c.get("name") for c in recorded]
    if names != [c.name for c in again]:
        problems.append(f"it lists {_short(names)}, the proof makes {_short([c.name for c in again])}")
    else:
        for claim, fresh in zip(recorded, again, strict=True):
            ok = claim.get("ok")
            if ok is not fresh.ok and not (ok is False and fresh.name in key_bound):
                problems.append(
                    f"{fresh.name} is recorded {'OK' if ok else 'FAILED'}, "
                    f"it {'holds' if fresh.ok else 'fails'}"
                )
            elif fresh.name not in counted and ok is fresh.ok and claim.get("detail") != fresh.detail:
                problems.append(
                    f"{fresh.name}: recorded {_short(claim.get('detail'))}, found {_short(fresh.detail)}"
                )
    held = all(c.get("ok") is True for c in recorded)
    if evidence.get("auditVerified") is not held:
        problems.append(f"auditVerified is {evidence.get('auditVerified')!r}, the recorded checks say {held}")
    failed = [
        f"check failed: {c.get('name')}: {c.get('detail')}" for c in recorded if c.get("ok") is not True
    ]
    listed = evidence.get("failures")
    listed = (
        [f for f in listed if isinstance(f, str) and f.startswith("check failed: ")]
        if isinstance(listed, list)
        else []
    )
    if listed != failed:
        problems.append(
            f"failures lists {len(listed)} failed check(s), the recorded checks have {len(failed)}"
        )
    return Check(
        "recorded checks",
        not problems,
        "; ".join(problems) if problems else f"{len(recorded)} recorded, each as made again here",
    )


def _failures_check(evidence: Mapping[str, Any], recorded: Sequence[Any], holds: bool) -> Check:
    """The report's list of what failed (``failures``) and its ``expectationsHold``, against the
    recorded expectations (re-evaluated by the check before): nothing tied them, so a report
    could list no failure beside a failing expectation, or one that did not fail (auditor
    walk). Failed build-time checks, also listed there, are the verdict check's business."""
    expected, counted_from_0 = (
        [
            f"expectation {i} failed: {item.get('label')}: {item.get('message')}"
            for i, item in enumerate(recorded, start=start)
            if isinstance(item, Mapping) and not item.get("passed")
        ]
        for start in (1, 0)
    )
    listed = evidence.get("failures")
    listed_expectations = (
        [f for f in listed if isinstance(f, str) and f.startswith("expectation ")]
        if isinstance(listed, list)
        else None
    )
    problems = []
    # Reports made before the failures were counted from 1 count them from 0: the same list,
    # numbered otherwise, says the same thing (each line carries its label and message).
    if listed_expectations != expected and listed_expectations != counted_from_0:
        problems.append(
            f"failures lists {len(listed_expectations or [])} failed expectation(s), the recorded "
            f"expectations have {len(expected)} failing"
            + (f": {expected[0]}" if expected and expected[0] not in (listed_expectations or []) else "")
        )
    if evidence.get("expectationsHold") is not holds:
        problems.append(
            f"expectationsHold is {evidence.get('expectationsHold')!r}, the expectations say {holds}"
        )
    if evidence.get("verdict") == "PASS" and listed:
        problems.append("a PASS verdict with failures listed")
    return Check(
        "recorded failures",
        not problems,
        "; ".join(problems) if problems else f"{len(expected)} failed expectation(s), as recorded",
    )


def _difference(i: int, recorded: Any, fresh: Mapping[str, Any]) -> str:
    """Which members of recorded expectation ``i`` differ from its re-evaluation: "expectation(s)
    1 differ" left an auditor to find out what was changed (found by an audit walk)."""
    if not isinstance(recorded, Mapping):
        return f"{i + 1} (not an object)"
    names = sorted(k for k in set(recorded) | set(fresh) if not json_equal(recorded.get(k), fresh.get(k)))
    parts = [f"{k}: recorded {_short(recorded.get(k))}, re-evaluated {_short(fresh.get(k))}" for k in names]
    return f"{i + 1} ({'; '.join(parts)})"


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _trace_hash(trace: Any) -> str | None:
    """:func:`~moat_nb.payload.trace_sha256` of an evidence file's ``trace``; None when it has
    none (a proof written before traces were recorded); a text no hash equals when it is not a
    trace digest or JCS cannot hold it."""
    if trace is None:
        return None
    if not (
        isinstance(trace, Mapping)
        and isinstance(trace.get("entries"), list)
        and isinstance(trace.get("maps"), list)
        and all(isinstance(e, Mapping) for e in trace["entries"])
    ):
        return "(not a trace digest)"
    return trace_sha256(trace) or "(not canonical JSON)"
