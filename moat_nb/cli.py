"""The ``moat-nb`` command.

One sub-command group per ``_add_<name>_parser(subparsers)`` function, each setting its
handler with ``set_defaults(handler=...)``; a handler takes the parsed arguments and returns
the exit code. Handlers import what they need when they run, so that ``moat-nb --help`` stays
fast and a group's dependencies load only for that group. This is the one module that may
import both the client side and the sandbox (DESIGN.md section 2).

Exit codes: 0 success; 1 an error, reported on stderr in one line (never a traceback) — and, for
``routes run``, an exchange that FAILED (its Execution is still printed); 2 a usage error.

``moat-nb routes check FILE...``
    Load Camel YAML DSL route files (load-time validation, DESIGN.md section 8) and print one
    line: the routes and their processor counts.
``moat-nb routes run FILE... --route ID [--body FILE|-] [--header K=V] [--property K=V]``
    Run one exchange and print its Execution as JSON (``--trace``: a processor table).
    ``--beans beans.py`` loads a Python file whose ``BEANS`` dict and ``ENDPOINTS`` dict of
    endpoint simulators (either may be left out, as in an app's beans.py) the routes use.
``moat-nb report compliance --source ID [--payload FILE] --expect FILE [--target-environment ENV]``
``--reason TEXT --out DIR [--pdf]``
    Run the compliance proof notebook with papermill (DESIGN.md section 9) and write the executed
    notebook, an HTML report (code hidden), ``evidence.json`` and the verified audit bundle to
    DIR; exit 0 only when every expectation holds and the audit verifies, 1 naming what failed.
    Credentials only from ``MOAT_URL``, ``MOAT_USER``/``MOAT_PASSWORD`` or ``MOAT_TOKEN``.
``moat-nb report verify DIR [--key PUBKEY_B64 ...]``
    Re-check a report folder offline (evidence, notebook hash, audit bundle) against the audit
    keys you trust (``--key``, else ``MOAT_AUDIT_KEYS``): exit 0 for a genuine report whose
    verdict is PASS; 3 for a genuine one whose verdict is FAIL; 1 for anything not verified,
    including every check holding against only the bundle's own keys (anyone can sign those).
``moat-nb audit verify BUNDLE.json [--key PUBKEY_B64 ...] [--json]``
    Verify an audit export (``GET /admin/audit/export``) offline, with no database: exit 0 when
    it verifies, 1 naming the first bad seq and the reason (DESIGN.md section 7). ``--key``
    gives the public keys you trust (base64 DER, as the sandbox's ``keys/audit-public-keys.txt``
    lists them); without, the bundle's own keys are used, which proves it consistent but not
    who signed it. Events after the bundle's newest signed checkpoint fail (``UNSIGNED_TAIL``,
    exit 1): an export always ends on a checkpoint, so such a tail was not made by the server.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .errors import MoatError, RecordError, RouteError, ValidationError

__all__ = ["main", "build_parser", "trace_table"]

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The ``moat-nb`` argument parser with every sub-command group."""
    parser = argparse.ArgumentParser(
        prog="moat-nb",
        description="Notebook toolkit for Cameleer Exchange Replay, with an embedded sandbox.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_routes_parser(commands)
    _add_audit_parser(commands)
    _add_sandbox_parser(commands)
    _add_demo_parser(commands)
    _add_report_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``moat-nb`` with ``argv`` (default: the process arguments); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exit_:  # --help and usage errors: argparse has printed what to say
        return exit_.code if isinstance(exit_.code, int) else 2
    handler: Handler = getattr(args, "handler", None) or args.func
    try:
        return handler(args)
    except MoatError as err:
        print(f"moat-nb: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`moat-nb routes run ... | head`): nothing to say to it. Python's
        # documented recipe (library/signal.html, "Note on SIGPIPE"): point stdout at devnull so
        # that the flush at exit does not raise again, and exit 1.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as err:  # a file that cannot be read or written: one line, as promised above
        print(f"moat-nb: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("moat-nb: interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- routes


def _add_routes_parser(commands: Any) -> None:
    routes = commands.add_parser(
        "routes",
        help="check or run Camel YAML DSL route files with the sandbox route engine",
        description="Check or run Camel YAML DSL route files with the sandbox route engine.",
    )
    sub = routes.add_subparsers(dest="routes_command", metavar="ACTION", required=True)

    check = sub.add_parser(
        "check",
        help="validate route files (exit 1 with the error)",
        description="Load route files and report what is malformed or unsupported.",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="route file(s) or folder(s)")
    check.add_argument(
        "--beans",
        metavar="BEANS.py",
        help="a Python file with a BEANS dict; without it bean references are not checked",
    )
    check.set_defaults(handler=_routes_check)

    run = sub.add_parser(
        "run",
        help="run one exchange through a route and print its Execution",
        description="Run one exchange through a route and print its Execution as JSON.",
    )
    run.add_argument("files", nargs="+", metavar="FILE", help="route file(s) or folder(s)")
    run.add_argument("--route", required=True, metavar="ID", help="the route to run")
    run.add_argument("--body", metavar="FILE", help="the body: a file, or - for standard input")
    run.add_argument("--header", action="append", default=[], metavar="K=V", help="a header (repeat)")
    run.add_argument(
        "--property", action="append", default=[], metavar="K=V", help="an exchange property (repeat)"
    )
    run.add_argument(
        "--beans",
        metavar="BEANS.py",
        help="a Python file with a BEANS dict (and optionally an ENDPOINTS dict of endpoint simulators)",
    )
    run.add_argument(
        "--capture",
        choices=("PROCESSOR", "ROUTE"),
        default="PROCESSOR",
        help="capture mode (default PROCESSOR)",
    )
    run.add_argument(
        "--seed", type=int, metavar="N", help="seed the random source (ids, ${random}) for a repeatable run"
    )
    run.add_argument("--trace", action="store_true", help="print a processor table, not JSON")
    run.set_defaults(handler=_routes_run)


def _load_beans(path: str | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``BEANS`` and ``ENDPOINTS`` from a Python file (``--beans``)."""
    if path is None:
        return None, None
    file = Path(path)
    if not file.is_file():
        raise RouteError(
            f"beans file {path} does not exist",
            code="BEANS_NOT_FOUND",
            hint="name a Python file that defines BEANS = {...}",
        )
    spec = importlib.util.spec_from_file_location(f"moat_nb_user_beans_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise RouteError(f"cannot import {path}", code="BEANS_INVALID")
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs, as an import would: a dataclass in the file looks its module up
    # in sys.modules (the orders sample's beans.py failed with "'NoneType' object has no
    # attribute '__dict__'"; found by review).
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's code: report it in one line
        del sys.modules[spec.name]
        raise RouteError(
            f"importing {path} failed: {type(err).__name__}: {err}",
            code="BEANS_INVALID",
            hint="fix the beans file",
        ) from None
    beans = getattr(module, "BEANS", None)
    endpoints = getattr(module, "ENDPOINTS", None)
    # BEANS is optional in an app's beans.py (moat-nb sandbox --app reads it as {}), so a file
    # with only ENDPOINTS is the same file here: its bean steps, if any, are checked against none.
    if beans is None and endpoints is not None:
        beans = {}
    if not isinstance(beans, dict):
        raise RouteError(
            f"{path} has no BEANS dict" if beans is None else f"BEANS in {path} is not a dict",
            code="BEANS_INVALID",
            hint="define BEANS = {'name': callable_or_object, ...} (or ENDPOINTS = {...})",
        )
    if endpoints is not None and not isinstance(endpoints, dict):
        raise RouteError(
            f"ENDPOINTS in {path} is not a dict",
            code="BEANS_INVALID",
            hint="define ENDPOINTS = {'http://host/path': fn(exchange) -> reply}",
        )
    from .sandbox.camel.engine import check_simulators

    check_simulators(endpoints, str(file))
    return beans, endpoints


def _routes_check(args: argparse.Namespace) -> int:
    from .sandbox.camel import RouteSet

    beans, endpoints = _load_beans(args.beans)
    routes = RouteSet.load([Path(f) for f in args.files], beans, endpoints=endpoints)
    parts = [f"{rid} ({len(routes.processors(rid))} processors)" for rid in routes.route_ids]
    files = len(routes.files)
    summary = (
        f"OK: {len(routes.route_ids)} route{'s' if len(routes.route_ids) != 1 else ''} in "
        f"{files} file{'s' if files != 1 else ''}: " + ", ".join(parts)
    )
    if beans is None and any(
        p.processor_type in ("bean", "process")
        # A split's aggregationStrategy bean is looked up when it runs, too.
        or getattr(getattr(p, "aggregation", None), "kind", None) == "lookup"
        for rid in routes.route_ids
        for p in routes.processors(rid)
    ):
        summary += " (bean references not checked: no --beans)"
    print(summary)
    return 0


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RouteError(f"--{what} {item!r} is not K=V", code="USAGE", hint=f"write --{what} name=value")
        out[key] = value
    return out


def _read_body(source: str | None, stdin: TextIO) -> str | None:
    if source is None:
        return None
    if source == "-":
        return stdin.read()
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RouteError(f"cannot read the body from {source}: {err}", code="USAGE") from None


def _routes_run(args: argparse.Namespace) -> int:
    from .model import Payload
    from .sandbox.camel import RouteSet, RunContext

    beans, endpoints = _load_beans(args.beans)
    routes = RouteSet.load([Path(f) for f in args.files], beans, endpoints=endpoints)
    payload = Payload(
        headers=_pairs(args.header, "header"),
        body=_read_body(args.body, sys.stdin),
        properties=_pairs(args.property, "property"),
    )
    context = RunContext(rng=random.Random(args.seed)) if args.seed is not None else RunContext()
    execution = routes.run(args.route, payload, capture=args.capture, context=context)
    if args.trace:
        print(trace_table(execution))
    else:
        print(json.dumps(execution.to_wire(), indent=2, ensure_ascii=False))
    return 0 if execution.status == "COMPLETED" else 1


def _preview(text: str | None, width: int = 60) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _error_text(error_type: str | None, message: str | None) -> str:
    """As Java's ``Throwable.toString()`` prints it: the class, then ``: message`` if it has one
    (a ``throwException`` with no message has none)."""
    return f"{error_type}: {message}" if message is not None else str(error_type)


def trace_table(execution: Any) -> str:
    """A readable processor table: seq, processor id indented by depth, type, status, ms,
    the output body's start (the input body in ``ROUTE`` capture is not there: ``-``)."""
    rows = [("seq", "processor", "type", "status", "ms", "body")]
    for p in execution.processors or ():
        label = "  " * p.depth + p.processor_id
        if p.iteration:
            label += f" [{p.iteration}]"
        if p.stubbed:
            label += " (stubbed)"
        body = _preview(p.output_body)
        if p.endpoint_uri:
            body = f"-> {p.endpoint_uri}  {body}" if p.output_body is not None else f"-> {p.endpoint_uri}"
        if p.status == "FAILED" and p.error_type:
            body = _error_text(p.error_type, p.error_message)
        rows.append((str(p.seq), label, p.processor_type, p.status, f"{p.duration_ms or 0:.3f}", body))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        f"{execution.route_id}  {execution.status}  exchange {execution.exchange_id}  "
        f"{execution.duration_ms or 0:.3f} ms  {execution.processor_count} processors"
    ]
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5])
    if execution.status == "FAILED":
        lines.append(f"FAILED: {_error_text(execution.error_type, execution.error_message)}")
    lines.append(f"output body: {_preview(execution.output_body, 200)}")
    return "\n".join(line.rstrip() for line in lines)


# --------------------------------------------------------------------------- audit


def _add_audit_parser(commands: Any) -> None:
    group = commands.add_parser(
        "audit",
        help="verify an exported audit log offline",
        description="Work with exported audit logs (GET /admin/audit/export bundles).",
    )
    sub = group.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = sub.add_parser(
        "verify",
        help="verify a bundle with no database (exit 1 names the first bad seq)",
        description="Verify an audit bundle offline: contiguity, every link and hash, every "
        "checkpoint signature, and that the chain reaches its newest checkpoint.",
    )
    verify.add_argument("bundle", metavar="BUNDLE.json", help="the bundle file")
    verify.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="PUBKEY_B64",
        help="a trusted Ed25519 public key, base64 DER (repeat); default: the bundle's own keys",
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(handler=_audit_verify)


def _key_args(values: Sequence[str]) -> list[str]:
    """The keys of ``--key`` options, each of which may hold several (white space, commas, one a
    line): ``--key "$(grep -v '#' keys/audit-public-keys.txt)"`` passes every key the platform
    published, several after a rotation (read as MOAT_AUDIT_KEYS is: report.split_keys)."""
    from .report import split_keys

    keys = [key for value in values for key in split_keys(value)]
    if values and not keys:
        # An empty --key (a keys file not found by the shell's $(...)) must not fall back to
        # the bundle's own keys, which anyone can make.
        raise ValidationError(
            "--key holds no key",
            code="BAD_KEY",
            hint="pass the platform's published audit key (base64 DER), e.g. "
            "--key \"$(grep -v '#' DATA/keys/audit-public-keys.txt)\"; check that file exists",
        )
    _check_keys(keys, "--key")
    return keys


def _check_keys(keys: Sequence[str], origin: str) -> None:
    """:func:`moat_nb.report.check_keys`: BAD_KEY said neither the key nor its origin, which left
    an auditor with several keys, or none typed (MOAT_AUDIT_KEYS), guessing (audit walk)."""
    from .report import check_keys

    check_keys(keys, origin)


def _audit_verify(args: argparse.Namespace) -> int:
    from . import audit

    keys = [audit.load_public_key(k) for k in _key_args(args.key)] or None
    try:
        bundle = audit.load_bundle(args.bundle)
    except OSError as err:
        # With a code, as every other refusal here has (report verify's is NO_EVIDENCE).
        raise RecordError(
            f"cannot read {args.bundle}: {err.strerror or err}",
            code="NO_BUNDLE",
            hint="pass the bundle file GET /admin/audit/export wrote (a report folder's audit-bundle.json)",
        ) from None
    result = audit.verify_bundle(bundle, keys)
    events = bundle.get("events")
    if args.json:
        # What the text output says too: where the bundle starts and how far checkpoints vouch.
        extra = {"startSeq": result.start_seq, "anchoredSeq": result.anchored_seq}
        print(
            json.dumps({**result.to_wire(), **extra, "message": result.message, "tenantId": result.tenant_id})
        )
    elif result.ok:
        cps = result.checkpoints_checked
        print(
            f"OK: {args.bundle}: {result.checked} events (seq {result.start_seq}..{result.head_seq}) "
            f"and {cps} checkpoint{'s' if cps != 1 else ''} verify; signed up to seq "
            f"{result.anchored_seq}; head {result.head_hash}"
        )
        if keys is None:
            print("note: checked with the bundle's own public keys; pass --key to check who signed it")
    else:
        count = len(events) if isinstance(events, list) else 0
        if result.reason in ("UNSIGNED_TAIL", "UNANCHORED"):
            # Every event chains; only those up to the newest checkpoint are vouched for (for
            # UNANCHORED none: "11 of 11 events verified before" seq 1 contradicted itself).
            signed = max((result.anchored_seq or 0) - result.start_seq + 1, 0)
            done = f"{signed} of {count} events are under a signed checkpoint"
        else:
            done = f"{result.checked} of {count} events verified before it"
        # A malformed bundle has no bad seq: "seq None" was printed (found by an audit walk).
        where = "" if result.first_bad_seq is None else f"seq {result.first_bad_seq}: "
        print(f"FAILED: {args.bundle}: {where}{result.reason}: {result.message} ({done})")
    if not result.ok and result.reason is not None and not args.json:
        print(f"moat-nb: {result.reason}: {audit.REASONS.get(result.reason, '')}", file=sys.stderr)
    return 0 if result.ok else 1


# --------------------------------------------------------------------------- sandbox


def _add_sandbox_parser(commands: Any) -> None:
    # The sandbox owns its options (runner.add_sandbox_parser); importing the runner is cheap
    # (its heavy imports happen when the command runs).
    from .sandbox.runner import add_sandbox_parser

    add_sandbox_parser(commands)


# --------------------------------------------------------------------------- demo


def _add_demo_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the main job on the embedded sandbox and print where the results are",
        description="Start the sandbox on a fresh data folder, build its recorded history, "
        "print a summary and one exchange's processor trace.",
    )
    demo.add_argument("--data", type=Path, default=Path("out/data"), help="data folder (made anew)")
    demo.add_argument("--per-env", type=int, default=500, help="exchanges per environment")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, default=Path("out"), help="where reports are written")
    demo.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(data=args.data, per_env=args.per_env, seed=args.seed, out=args.out)


# --------------------------------------------------------------------------- report


def _add_report_parser(commands: Any) -> None:
    group = commands.add_parser(
        "report",
        help="compliance proof reports: run one (papermill), or re-check one offline",
        description='Compliance proof reports (the README\'s "Compliance proof" section).',
    )
    sub = group.add_subparsers(dest="report_command", metavar="ACTION", required=True)
    proof = sub.add_parser(
        "compliance",
        help="prove that a payload produces an output: replay, check, verify the audit, write a report",
        description="Replay a recorded exchange with a modified payload through compliance_proof.ipynb "
        "(papermill), check the expectations, verify the replay's audit record offline, and write the "
        "executed notebook, report.html (code hidden), evidence.json and audit-bundle.json to --out. "
        "Credentials come from MOAT_URL, MOAT_USER and MOAT_PASSWORD (or MOAT_TOKEN) only. "
        "Exit 0 only when every expectation holds and the audit verifies.",
    )
    proof.add_argument("--source", required=True, metavar="EXCHANGE_ID", help="the recorded exchange")
    proof.add_argument(
        "--payload",
        metavar="FILE",
        help='the modified payload: a JSON file {"headers", "body", "properties"} (each optional), '
        "or - for standard input; default: replay unmodified",
    )
    proof.add_argument(
        "--expect",
        required=True,
        metavar="FILE",
        help='the expectations: a JSON file, e.g. [{"path": "body:$.total", "equals": 39.46}]',
    )
    proof.add_argument(
        "--target-environment", metavar="ENV", help="where to replay (default: the source's environment)"
    )
    proof.add_argument("--reason", required=True, help="why (kept in the audit record)")
    proof.add_argument("--out", required=True, type=Path, metavar="DIR", help="the report folder")
    proof.add_argument("--url", help="the platform (default: MOAT_URL); never with credentials in it")
    proof.add_argument("--pdf", action="store_true", help="also print report.pdf with Debian's chromium")
    proof.add_argument(
        "--timeout", type=_seconds, default=300, help="seconds per notebook cell (default 300)"
    )
    proof.set_defaults(handler=_report_compliance)

    verify = sub.add_parser(
        "verify",
        help="re-check a report folder offline (0 genuine PASS, 3 genuine FAIL, 1 not verified)",
        description="Re-check a compliance report offline: the notebook hash, the audit bundle "
        "(every hash, link and checkpoint), the receipt in it, the audited payload and output "
        "hashes, and the expectations re-evaluated on the recorded output.",
    )
    verify.add_argument("folder", type=Path, metavar="DIR", help="a folder written by report compliance")
    verify.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="PUBKEY_B64",
        help="a trusted audit public key, base64 DER (repeat); default: MOAT_AUDIT_KEYS. Without "
        "either the bundle's own keys are checked and the report is not called verified",
    )
    verify.add_argument(
        "--legacy",
        action="store_true",
        help="accept a report made by a moat_nb that did not yet tie the replay's times, the diff "
        "and the recorded checks to the audit: those checks say SKIPPED instead of failing",
    )
    verify.set_defaults(handler=_report_verify)


def _seconds(text: str) -> int:
    """A whole number of seconds above 0 (``--timeout``): papermill reads 0 or less as no limit."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds above 0, e.g. 300")
    return value


def _read_json_file(source: str, what: str, option: str) -> str:
    """The text of a JSON file option, checked here so that an error names the file and the
    option (the proof's own check names its notebook parameter, ``modified_payload``)."""
    from .expectations import strict_json

    if source == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise MoatError(f"cannot read the {what} from {source}: {err}", code="USAGE") from None
    strict_json(text, f"{option} {'(standard input)' if source == '-' else source}")
    return text


def _report_compliance(args: argparse.Namespace) -> int:
    from .report import compliance_proof

    result = compliance_proof(
        args.source,
        None if args.payload is None else _read_json_file(args.payload, "payload", "--payload"),
        _read_json_file(args.expect, "expectations", "--expect"),
        target_environment=args.target_environment,
        reason=args.reason,
        out=args.out,
        url=args.url,
        pdf=args.pdf,
        timeout=args.timeout,
    )
    print(f"verdict: {result.verdict} ({result.seconds:.1f} s)")
    for failure in result.failures:
        print(f"  {failure}")
    for label, path in (
        ("report", result.html),
        ("evidence", result.evidence),
        ("notebook", result.notebook),
        ("audit bundle", result.bundle),
        ("pdf", result.pdf),
    ):
        if path is not None:
            print(f"{label + ':':<14}{path}")
    return result.exit_code


#: ``report verify``'s exit code for a genuine report whose verdict is FAIL (0 is a genuine PASS,
#: 1 anything not verified): a pipeline gating on the exit code must not take it for a proof.
EXIT_GENUINE_FAIL = 3


def _print_verified_facts(evidence: dict[str, Any], skipped: Sequence[str] = ()) -> None:
    """What the checks vouched for, from evidence.json, for the auditor to read here: the report's
    HTML and the notebook's displayed outputs are renderings that no check covers. They include
    when the replay ran and which key signed its audit: both were checked but not printed, and
    the auditor had to read them from the report (compliance walk). A legacy report's times,
    whose check was skipped, are not printed as verified."""
    params = evidence.get("parameters") or {}
    replay = evidence.get("replay") or {}
    output = evidence.get("output") or {}
    hashes = evidence.get("hashes") or {}
    checkpoint = (evidence.get("audit") or {}).get("checkpoint") or {}
    print("verified facts (report.html and the notebook's displayed outputs are not covered: compare them):")
    print(f"  source exchange:  {(evidence.get('source') or {}).get('exchangeId')}")
    print(f"  replay:           {replay.get('replayId')} on {replay.get('targetEnvironment')}")
    print(f"  requested by:     {replay.get('requestedBy')}")
    if "audited request and finish times" not in skipped:
        print(f"  requested at:     {replay.get('requestedAt')}, finished {replay.get('finishedAt')}")
    print(
        f"  audit signed by:  key {checkpoint.get('keyId')} (a trusted key), "
        f"checkpoint seq {checkpoint.get('seq')} at {checkpoint.get('at')}"
    )
    print(f"  payload sha-256:  {hashes.get('effectivePayloadSha256')}")
    print(f"  output:           {output.get('status')}, body sha-256 {hashes.get('outputBodySha256')}")
    print(f"  reason:           {params.get('reason')}")
    # A processor's output is vouched for where the audit hashed the trace and the evidence
    # carries it (verify_evidence then checked both); else it is the report's own data.
    audited_trace = next(
        (
            ((e or {}).get("detail") or {}).get("traceSha256")
            for e in (evidence.get("audit") or {}).get("events") or ()
            if ((e or {}).get("detail") or {}).get("traceSha256") is not None
        ),
        None,
    )
    traced = audited_trace is not None and isinstance(evidence.get("trace"), dict)
    if traced:
        # The audited hash, which the checks compared with the trace (and hashes.traceSha256).
        entries = evidence["trace"].get("entries") or []
        print(f"  trace sha-256:    {audited_trace} ({len(entries)} processors)")
    if "audited claim" not in skipped:
        # Which expectations were asked: the claim the audited request named (evidence.CLAIM_TAG),
        # so that the list below is the whole one, not the report's choice.
        from .evidence import claim_sha256

        asked = params.get("expectations")
        count = len(asked) if isinstance(asked, list) else 0
        print(f"  claim sha-256:    {claim_sha256(asked)} (the {count} expectation(s) asked, as audited)")
    for item in evidence.get("expectations") or ():
        mark = "PASS" if item.get("passed") else "FAIL"
        on_processor = (item.get("expectation") or {}).get("processor")
        note = " (from the report's data)" if on_processor and not traced else ""
        # An absent path has no value (actual is None there): "found None" read as a null in the
        # body, and hid a typo in the path (compliance walk).
        found = "nothing: the path is absent" if item.get("present") is False else repr(item.get("actual"))
        print(f"  {mark}  {item.get('label')}: found {found}{note}")
    # What the report says on its own word, said here rather than passed over in silence: the
    # VERIFIED line below vouches for the facts above, not for these.
    from .evidence import NOT_VOUCHED

    print("not vouched for (the report's own word: nothing the platform signed ties them):")
    for what, why in NOT_VOUCHED:
        print(f"  {what}: {why}")


def _recorded_error(folder: Path) -> str | None:
    """The failures an ERROR proof's evidence.json records, in one line; None otherwise."""
    try:
        evidence = json.loads((folder / "evidence.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(evidence, dict) or evidence.get("verdict") != "ERROR":
        return None
    failures = evidence.get("failures") if isinstance(evidence.get("failures"), list) else []
    return "; ".join(str(f)[:200] for f in failures[:2]) or "no reason recorded"


def _report_verify(args: argparse.Namespace) -> int:
    from .report import checked_evidence, trusted_keys_from_env

    keys = _key_args(args.key) or trusted_keys_from_env()[0]
    _check_keys(keys or (), "--key" if args.key else "MOAT_AUDIT_KEYS")
    checks, evidence = checked_evidence(args.folder, public_keys=keys or None, legacy=args.legacy)
    for check in checks:
        shown = "SKIPPED" if check.skipped else "OK     " if check.ok else "FAILED "
        print(f"{shown} {check.name}: {check.detail}")
    if not checks or not all(c.ok for c in checks):
        failed = [c.name for c in checks if not c.ok]
        why = f"{len(failed)} check(s) failed, first: {failed[0]}" if failed else "no checks"
        recorded = _recorded_error(Path(args.folder))
        if recorded:
            # A proof that could not run has no receipt to check: say that first, not only the
            # dozen checks that fail for want of one (found by a walk through the README).
            why = f"the report records verdict ERROR ({recorded}); {why}"
        elif failed == ["verdict"] and evidence.get("verdict") == "FAIL":
            # Everything holds now but the proof recorded FAIL: e.g. it trusted another key
            # (MOAT_AUDIT_KEYS) than --key. Say why it failed, not only "first: verdict".
            said = evidence.get("failures") if isinstance(evidence.get("failures"), list) else []
            told = "; ".join(str(f)[:200] for f in said[:2]) or "nothing"
            why += f"; the report records why it failed: {told}"
        print(f"NOT VERIFIED: {args.folder}: {why}")
        return 1
    if not keys:
        # Anyone can chain events and sign a checkpoint with a key of their own: only the
        # platform's published key says who vouches for the audit.
        print(
            f"NOT VERIFIED: {args.folder}: every check holds, but against the bundle's own public keys, "
            "which prove it consistent, not who signed it; pass --key with the platform's published "
            "audit key (or set MOAT_AUDIT_KEYS)"
        )
        return 1
    skipped = [c.name for c in checks if c.skipped]
    _print_verified_facts(evidence, skipped)
    verdict = evidence.get("verdict")
    if verdict != "PASS":
        print(f"VERIFIED as genuine: {args.folder}; its verdict is {verdict}: the proof does not hold")
        return EXIT_GENUINE_FAIL
    unvouched = f" (legacy report: not checked: {', '.join(skipped)})" if skipped else ""
    print(f"VERIFIED: {args.folder}: genuine, signed by a trusted key, verdict PASS{unvouched}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
