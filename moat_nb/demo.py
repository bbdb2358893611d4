"""``make demo`` / ``moat-nb demo`` and ``make lab``: the main job on the embedded sandbox.

``run_demo`` starts the sandbox on a fresh data folder (its agents post the recorded history
through ``POST /data/chunks``, the same path replays take) and then does what the four users of
DESIGN.md section 1 do, start to finish, writing everything under ``out``:

1. **History**: what the history holds (exchanges by environment, route and status) and one
   exchange's processor-level trace (``out/summary.txt``).
2. **Compliance proof**: a ``prod`` exchange replayed on ``staging`` (route version 2) with a
   modified payload, and the expectation that it totals what version 2's pricing rules give
   (:func:`moat_nb.report.compliance_proof`: executed notebook, HTML report with code hidden,
   ``evidence.json``, the verified audit bundle; ``out/compliance/``).
3. **What-if**: ``notebooks/explore_what_if.ipynb`` executed against the sandbox (notebook and
   HTML with code, ``out/what-if/``).

It prints the paths and the verdict, stops the sandbox, and returns the proof's exit code (0 when
every expectation holds and the audit verifies). Credentials reach the notebooks through
``MOAT_URL`` / ``MOAT_USER`` / ``MOAT_PASSWORD`` (section 6): the demo runs as the sandbox's
``admin`` (replay with ``replay:prod``, and ``audit:read`` to export the audit log), and trusts
the audit keys the sandbox published (``MOAT_AUDIT_KEYS``).

``run_lab`` (``make lab``, ``python -m moat_nb.demo lab``) starts the sandbox (reusing its data
folder when it exists) and JupyterLab from this environment on ``notebooks/`` with the same
variables set, and stops the sandbox when JupyterLab exits. Like :mod:`moat_nb.cli`, this module
may import both the client side and the sandbox.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["DEMO_USER", "demo_payload", "main", "run_demo", "run_lab", "summary_table"]

#: The sandbox user the demo and the lab run as (ADMIN + replay:prod: replays prod data and
#: exports the audit log).
DEMO_USER = "admin"

#: The what-if of the proof: three USB-C cables (SKU-100 at 19.99) for Cobalt Werkstatt (C-1003:
#: bronze tier, EU, so no discount and no surcharge). Version 2 prices in decimal: 59.97; version 1
#: (prod) truncates 3 * 19.99 = 59.96999... to 59.96.
DEMO_CUSTOMER = "C-1003"
DEMO_LINES = [{"sku": "SKU-100", "qty": 3, "unitPrice": 19.99}]
DEMO_TOTAL = 59.97


def summary_table(stats: list[dict]) -> str:
    """Counts by environment and route, one column per status, with totals and failure rates."""
    statuses = sorted({row["status"] for row in stats})
    grid: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for row in stats:
        grid[(row["environment"] or "-", row["route_id"])][row["status"]] = row["count"]
    header = ["environment", "route", *statuses, "total", "failed %"]
    lines = [header]
    for (env, route), counts in sorted(grid.items()):
        total = sum(counts.values())
        failed = counts.get("FAILED", 0)
        lines.append(
            [
                env,
                route,
                *(str(counts.get(s, 0)) for s in statuses),
                str(total),
                f"{100 * failed / total:.1f}",
            ]
        )
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in lines)


def demo_payload(source_body: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The demo's modified payload for a recorded order (its order id, channel and currency
    kept; customer and lines replaced) and the expectations the proof checks."""
    try:
        order = json.loads(source_body or "{}")
    except ValueError:
        order = {}
    order = order if isinstance(order, dict) else {}
    body = {
        "orderId": order.get("orderId", "ORD-DEMO"),
        "customerId": DEMO_CUSTOMER,
        "currency": order.get("currency", "EUR"),
        "channel": order.get("channel", "web"),
        "lines": DEMO_LINES,
    }
    expectations = [
        {"name": "the order goes through", "path": "status", "equals": "COMPLETED"},
        {"name": "v2 prices 3 x 19.99 exactly", "path": "body:$.total", "equals": DEMO_TOTAL},
        {"name": "the order keeps its id", "path": "body:$.orderId", "equals": body["orderId"]},
    ]
    return {"body": body}, expectations


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the notebooks this process starts, and restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _sandbox_env(sandbox: Any, user: str = DEMO_USER) -> dict[str, str]:
    password = sandbox.users.get(user)
    if not password:
        raise SystemExit(f"the sandbox user {user!r} has no default password: use the default users")
    env = {"MOAT_URL": sandbox.url, "MOAT_USER": user, "MOAT_PASSWORD": password}
    keys = Path(sandbox.data_dir) / "keys" / "audit-public-keys.txt"
    if keys.is_file():  # the audit keys the sandbox published: what the proof trusts
        env["MOAT_AUDIT_KEYS"] = " ".join(
            line.strip()
            for line in keys.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
    return env


def _history(sandbox: Any, out: Path, took: float) -> None:
    from .cli import trace_table

    store = sandbox.state.store
    table = summary_table(store.stats())
    print(f"\nsandbox at {sandbox.url} — recorded history ({sandbox.history} exchanges, {took:.1f} s):\n")
    print(table)
    # A staging exchange (v2, PROCESSOR capture) that completed: the full processor trace.
    hits, _ = store.search(environment="staging", status="COMPLETED", limit=1, sort="startTime:asc")
    sample = store.execution(hits[0].execution_id) if hits else None
    if sample is not None:
        print(
            f"\none exchange's processor trace: {sample.exchange_id} "
            f"({sample.environment}, {sample.route_id} {sample.route_version}, {sample.status}, "
            f"{len(sample.processors or ())} processors)\n"
        )
        print(trace_table(sample))
    (out / "summary.txt").write_text(table + "\n")


def _proof(out: Path) -> Any:
    from .client import connect
    from .report import compliance_proof

    with connect() as platform:
        hits = platform.executions(
            environment="prod", status="COMPLETED", is_replay=False, limit=1, sort="start_time:asc"
        ).to_pandas()
        if hits.empty:
            raise SystemExit("the sandbox has no completed prod exchange: run with a larger --per-env")
        source = platform.execution(hits.iloc[0]["execution_id"])
    payload, expectations = demo_payload(source.input_body)
    inputs = out / "compliance-input"
    inputs.mkdir(parents=True, exist_ok=True)
    (inputs / "payload.json").write_text(json.dumps(payload, indent=1) + "\n")
    (inputs / "expect.json").write_text(json.dumps(expectations, indent=1) + "\n")
    print(
        f"\ncompliance proof: prod exchange {source.exchange_id} ({source.route_id} {source.route_version}) "
        f"replayed on staging with {inputs / 'payload.json'}, expecting {inputs / 'expect.json'} ..."
    )
    return compliance_proof(
        source.exchange_id,
        payload,
        expectations,
        target_environment="staging",
        reason="demo: 3 x SKU-100 for a bronze EU customer on route v2 totals 59.97",
        out=out / "compliance",
    )


def _what_if(out: Path) -> tuple[Path, Path, str | None]:
    from .report import export_html, notebook_path, run_notebook

    folder = out / "what-if"
    folder.mkdir(parents=True, exist_ok=True)
    executed = folder / "explore_what_if.ipynb"
    print("\nwhat-if notebook: notebooks/explore_what_if.ipynb against the sandbox ...")
    error = None
    try:
        run_notebook(notebook_path("explore_what_if.ipynb"), executed, cwd=folder)
    except Exception as exc:  # noqa: BLE001 - papermill's error: the executed notebook shows the cell
        error = f"{type(exc).__name__}: {getattr(exc, 'ename', '')} {getattr(exc, 'evalue', exc)}".strip()
    html = export_html(executed, folder / "explore_what_if.html", hide_code=False, title="What if")
    return executed, html, error


def check_commands(out: Path, bundle: Path | None, data: Path) -> tuple[str, str]:
    """The shell commands that check the proof's audit bundle and its report folder offline,
    against the key the sandbox published in ``data``. Both pass ``--key``: without it a bundle
    re-signed with anyone's key verifies (the demo's hint had none; found by an audit walk)."""
    keys = Path(data) / "keys" / "audit-public-keys.txt"
    key = f"--key \"$(grep -v '#' {keys})\""
    return (
        f"moat-nb audit verify {bundle} {key}",
        f"moat-nb report verify {out} {key}",
    )


def run_demo(*, data: Path, per_env: int = 500, seed: int = 0, out: Path = Path("out")) -> int:
    """The demo (module docstring); the compliance proof's exit code."""
    from .sandbox.runner import start

    if data.exists():
        shutil.rmtree(data)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"starting the sandbox in {data} with {per_env} exchanges per environment ...", flush=True)
    with start(data=data, per_env=per_env, seed=seed) as sandbox:
        _history(sandbox, out, time.perf_counter() - started)
        with _environment(_sandbox_env(sandbox)):
            proof = _proof(out)
            executed, html, error = _what_if(out)
    print("\n" + "=" * 78)
    print(f"compliance proof: {proof.verdict} ({proof.seconds:.1f} s)")
    for failure in proof.failures:
        print(f"  {failure}")
    print(f"  report:       {proof.html}")
    print(f"  evidence:     {proof.evidence}")
    print(f"  notebook:     {proof.notebook}")
    audit_check, report_check = check_commands(proof.out, proof.bundle, data)
    if proof.bundle is not None:
        print(f"  audit bundle: {proof.bundle}  (check it: {audit_check})")
    print(f"  re-check it offline: {report_check}")
    print(f"what-if: {'done' if error is None else 'FAILED: ' + error}")
    print(f"  report:       {html}")
    print(f"  notebook:     {executed}")
    print(f"history summary: {out / 'summary.txt'}; sandbox data in {data}")
    print(f"verdict: {proof.verdict}")
    return proof.exit_code if error is None else 1


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_lab(
    *, data: Path, per_env: int = 500, seed: int = 0, notebooks: Path | None = None, port: int = 0
) -> int:
    """Sandbox + JupyterLab on ``notebooks`` (module docstring); JupyterLab's exit code."""
    from .report import ensure_kernel
    from .sandbox.runner import settle_gc, start

    folder = notebooks or Path(__file__).resolve().parents[1] / "notebooks"
    reuse = data.exists()
    print(
        f"starting the sandbox in {data} "
        + ("(reusing its history)" if reuse else f"with {per_env} exchanges per environment")
        + " ...",
        flush=True,
    )
    with start(data=data, per_env=per_env, seed=seed, port=port) as sandbox:
        settle_gc()  # this process is the sandbox's from here on (JupyterLab is another)
        env = _sandbox_env(sandbox)
        print(
            f"sandbox at {sandbox.url}; notebooks connect as {env['MOAT_USER']} (MOAT_* set for the kernels)"
        )
        ensure_kernel()  # the notebooks' kernels run this environment's python
        cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={folder}", "--ServerApp.ip=127.0.0.1"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # containers often run as root; JupyterLab refuses without it
        lab = subprocess.Popen(cmd, env={**os.environ, **env})
        previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops both, as Ctrl-C does
        try:
            # Wait in short slices: a signal may be delivered to one of the sandbox's threads, and
            # Python runs its handler only when the main thread runs again (a bare wait() blocks).
            while True:
                try:
                    return lab.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    continue
        except KeyboardInterrupt:
            # Ctrl-C or `kill` means "stop": JupyterLab would ask to confirm a Ctrl-C; SIGTERM
            # shuts it down with its kernels. Killed if it has not within 30 s.
            lab.terminate()
            try:
                return lab.wait(timeout=30)
            except subprocess.TimeoutExpired:
                lab.kill()
                return lab.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
            print("JupyterLab stopped; stopping the sandbox", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m moat_nb.demo {demo,lab} ...`` (what the Makefile's demo and lab targets run)."""
    parser = argparse.ArgumentParser(prog="python -m moat_nb.demo")
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("demo", "lab"):
        p = sub.add_parser(name)
        p.add_argument("--data", type=Path, default=Path("out/data" if name == "demo" else "out/lab-data"))
        p.add_argument("--per-env", type=int, default=500)
        p.add_argument("--seed", type=int, default=0)
        if name == "demo":
            p.add_argument("--out", type=Path, default=Path("out"))
        else:
            p.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.what == "demo":
        return run_demo(data=args.data, per_env=args.per_env, seed=args.seed, out=args.out)
    return run_lab(data=args.data, per_env=args.per_env, seed=args.seed, port=args.port)


if __name__ == "__main__":
    raise SystemExit(main())
