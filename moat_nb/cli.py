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
    ``--beans beans.py`` loads a Python file whose ``BEANS`` dict (and optional ``ENDPOINTS``
    dict of endpoint simulators) the routes use.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .errors import MoatError, RouteError

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
    _add_sandbox_parser(commands)
    _add_demo_parser(commands)
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
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's code: report it in one line
        raise RouteError(
            f"importing {path} failed: {type(err).__name__}: {err}",
            code="BEANS_INVALID",
            hint="fix the beans file",
        ) from None
    beans = getattr(module, "BEANS", None)
    if not isinstance(beans, dict):
        raise RouteError(
            f"{path} has no BEANS dict",
            code="BEANS_INVALID",
            hint="define BEANS = {'name': callable_or_object, ...}",
        )
    endpoints = getattr(module, "ENDPOINTS", None)
    if endpoints is not None and not isinstance(endpoints, dict):
        raise RouteError(
            f"ENDPOINTS in {path} is not a dict",
            code="BEANS_INVALID",
            hint="define ENDPOINTS = {'http://host/path': fn(exchange) -> reply}",
        )
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
        p.processor_type in ("bean", "process") for rid in routes.route_ids for p in routes.processors(rid)
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
            body = f"{p.error_type}: {p.error_message or ''}"
        rows.append((str(p.seq), label, p.processor_type, p.status, f"{p.duration_ms or 0:.3f}", body))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        f"{execution.route_id}  {execution.status}  exchange {execution.exchange_id}  "
        f"{execution.duration_ms or 0:.3f} ms  {execution.processor_count} processors"
    ]
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5])
    if execution.status == "FAILED":
        lines.append(f"FAILED: {execution.error_type}: {execution.error_message}")
    lines.append(f"output body: {_preview(execution.output_body, 200)}")
    return "\n".join(line.rstrip() for line in lines)


if __name__ == "__main__":
    sys.exit(main())


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
