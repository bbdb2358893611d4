"""Compliance proof reports: "payload P produces output O", proven and checkable offline
(DESIGN.md section 9, issue 8).

:func:`compliance_proof` (and ``moat-nb report compliance``) validates its parameters, runs
``notebooks/compliance_proof.ipynb`` with papermill, and writes to ``out``:

=========================  ==================================================================
``compliance_proof.ipynb``  the executed notebook (its SHA-256 is in the evidence)
``report.html``             self-contained HTML report, code hidden, plots drawn offline
``evidence.json``           the evidence (:mod:`moat_nb.evidence`)
``audit-bundle.json``       the audit export the notebook verified (``moat-nb audit verify``)
``report.pdf``              with ``pdf=True``: the HTML printed by Debian's Chromium
=========================  ==================================================================

The exit code is 0 only when every expectation holds and the audit verifies; a failed
expectation gives a report that names it, and exit 1. ``moat-nb report verify DIR`` re-checks a
report offline (:func:`verify_report`).

Parameters, the expectation language and the evidence format are described in
:mod:`moat_nb.evidence` and :mod:`moat_nb.expectations`; this module re-exports what the notebook
uses (``report.ProofParameters``, ``report.evaluate``, ``report.build_evidence`` ...), and adds
the notebook helpers (tables, the verdict) and the runner: the ``moat-nb`` kernelspec, papermill,
the HTML export, the PDF, and the offline re-check of a report folder (:func:`verify_report`).
"""

from __future__ import annotations

import copy
import hashlib
import html
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import audit as audit_core
from .errors import MoatError, RecordError, ValidationError
from .evidence import (
    EVIDENCE_FORMAT,
    PARAMETER_NAMES,
    Check,
    ProofParameters,
    build_evidence,
    check_parameter_cell,
    execution_facts,
    verify_evidence,
)
from .expectations import OPERATORS, Expectation, ExpectationResult, Outcomes, evaluate
from .model import Execution

if TYPE_CHECKING:
    import nbformat
    import pandas as pd

__all__ = [
    "EVIDENCE_FORMAT",
    "EVIDENCE_MIMETYPE",
    "KERNEL_NAME",
    "OPERATORS",
    "PARAMETER_NAMES",
    "TABLE_MIMETYPE",
    "Check",
    "Expectation",
    "ExpectationResult",
    "Outcomes",
    "ProofParameters",
    "ProofResult",
    "build_evidence",
    "check_keys",
    "check_parameter_cell",
    "checked_evidence",
    "checks_frame",
    "compliance_proof",
    "ensure_kernel",
    "evaluate",
    "export_html",
    "facts_frame",
    "notebook_path",
    "notebook_tables",
    "now_utc",
    "print_pdf",
    "receipt_frame",
    "run_notebook",
    "show_evidence",
    "show_frame",
    "show_summary",
    "trusted_keys_from_env",
    "verify_report",
]

#: The MIME type of the notebook output that carries the evidence (the runner reads it back).
EVIDENCE_MIMETYPE = "application/vnd.moat-nb.evidence+json"
#: The kernelspec the runner installs into the running Python's prefix (:func:`ensure_kernel`).
KERNEL_NAME = "moat-nb"
_ENV_HINT = "set MOAT_USER and MOAT_PASSWORD (or MOAT_TOKEN) in the environment"


# =========================================================================== notebook helpers


def trusted_keys_from_env() -> tuple[list[str] | None, str]:
    """The audit public keys to trust: ``MOAT_AUDIT_KEYS`` (base64 DER keys separated by commas
    or whitespace, as the sandbox's ``keys/audit-public-keys.txt`` lists them), else None (the
    bundle's own keys: proves the bundle consistent, not who signed it). Returns the keys and
    ``"environment"`` or ``"bundle"``."""
    keys = split_keys(os.environ.get("MOAT_AUDIT_KEYS", ""))
    if not keys:
        return None, "bundle"
    return keys, "environment"


def check_keys(keys: Sequence[str], origin: str) -> None:
    """Refuse a trusted key that is not one (BAD_KEY), naming it and where it came from
    (``--key``, ``MOAT_AUDIT_KEYS``): the key's holder is who a verified proof vouches for."""
    for key in keys:
        try:
            audit_core.load_public_key(key)
        except RecordError:
            shown = key if len(key) <= 80 else key[:77] + "..."
            raise ValidationError(
                f"{origin} holds {shown!r}, which is not an Ed25519 public key in base64 DER form",
                code="BAD_KEY",
                hint="pass the platform's published audit key, e.g. "
                "--key \"$(grep -v '#' DATA/keys/audit-public-keys.txt)\"",
            ) from None


def split_keys(text: str) -> list[str]:
    """The base64 DER keys in ``text``: separated by white space or commas, one a line as
    the sandbox's ``keys/audit-public-keys.txt`` lists them (after a rotation, several); a
    ``#`` starts a comment to the end of its line (base64 has no ``#``)."""
    return [key for line in text.splitlines() for key in re.split(r"[\s,]+", line.split("#", 1)[0]) if key]


def _evidence_json(evidence: Mapping[str, Any], **dumps: Any) -> str:
    """``evidence`` as JSON text; ``ValidationError`` (``BAD_EVIDENCE``) for NaN or an infinity
    in it, which JSON cannot carry (Python would write the bare tokens, and ``report verify``,
    reading strictly, could not read the file)."""
    try:
        return json.dumps(evidence, default=str, allow_nan=False, **dumps)
    except ValueError:
        raise ValidationError(
            "the evidence holds NaN or an infinity (a value the replay gave), which JSON cannot carry",
            code="BAD_EVIDENCE",
            hint="make the expectations read a finite value; the replay's output holds a non-finite number",
        ) from None


#: The display id of the summary under the notebook's title (:func:`show_summary`): the verdict
#: was only at the foot of an 8,000-pixel report, after every table and chart, and nothing at
#: its head said what was proven, by whom, when, or whether the audit verified (compliance walk).
SUMMARY_DISPLAY_ID = "moat-nb-proof-summary"
_NOT_REACHED = (
    "<h3 style='color:#D62728'>Verdict: not reached</h3>"
    "<p>The proof stopped before it recorded its evidence: the error is in the section where it "
    "stopped, below. Nothing on this page is a proof.</p>"
)


def show_summary() -> None:
    """Display the summary's place under the title: "not reached" until :func:`show_evidence`
    replaces it (``update_display``; papermill's client writes the update into the executed
    notebook), so a proof that stops midway says so at the top instead of showing nothing."""
    from IPython.display import display

    display(
        {"text/html": _NOT_REACHED, "text/plain": "Verdict: not reached"},
        raw=True,
        display_id=SUMMARY_DISPLAY_ID,
    )


def _summary_html(evidence: Mapping[str, Any]) -> str:
    """The verdict and what it is about, from the evidence: the claim (source, payload hash,
    target, expectations), who asked and when (the audited request), and what the audit check
    showed (with which keys)."""

    def e(value: Any) -> str:
        return html.escape(str(value))

    verdict = str(evidence.get("verdict"))
    colour = "#0072B2" if verdict == "PASS" else "#D62728"
    source = evidence.get("source") or {}
    replay = evidence.get("replay") or {}
    params = evidence.get("parameters") or {}
    hashes = evidence.get("hashes") or {}
    audit = evidence.get("audit") or {}
    results = [r for r in evidence.get("expectations") or () if isinstance(r, Mapping)]
    held = sum(1 for r in results if r.get("passed"))
    checkpoint = audit.get("checkpoint") or {}
    failed_checks = [c.get("name") for c in evidence.get("checks") or () if not c.get("ok")]
    if failed_checks:
        audited = f"<b>not verified</b>: {e(', '.join(map(str, failed_checks)))} failed"
    elif audit.get("trustedKeys") == "bundle":
        audited = (
            f"consistent with checkpoint {e(checkpoint.get('seq'))} signed by key "
            f"<code>{e(checkpoint.get('keyId'))}</code>, checked against the bundle's own keys only: "
            "who signed it is not shown here (<code>moat-nb report verify DIR --key KEY</code> checks it "
            "against the platform's published audit key)"
        )
    else:
        audited = (
            f"verified offline: under checkpoint {e(checkpoint.get('seq'))} signed by key "
            f"<code>{e(checkpoint.get('keyId'))}</code>, one of the keys in <code>MOAT_AUDIT_KEYS</code>"
        )
    payload = "unmodified" if not replay.get("payloadDiff") else "modified"
    rows = [
        (
            "claim",
            f"exchange <code>{e(source.get('exchangeId'))}</code> (route {e(source.get('routeId'))} "
            f"{e(source.get('routeVersion'))}, recorded in {e(source.get('environment'))}), "
            f"replayed in {e(replay.get('targetEnvironment'))} with the {payload} payload "
            f"(SHA-256 <code>{e(hashes.get('effectivePayloadSha256'))}</code>), "
            f"meets the {len(results)} expectation(s) of section 4",
        ),
        ("expectations", f"{held} of {len(results)} hold"),
        (
            "output",
            f"{e(replay.get('resultStatus'))}, body SHA-256 <code>{e(hashes.get('outputBodySha256'))}</code>",
        ),
        (
            "requested",
            f"by {e(replay.get('requestedBy'))} at {e(replay.get('requestedAt'))} "
            f"(replay <code>{e(replay.get('replayId'))}</code>), reason: {e(params.get('reason'))}",
        ),
        ("audit receipt", audited),
    ]
    lines = [
        f"<h3 style='color:{colour}'>Verdict: {e(verdict)}</h3>",
        "<table>"
        + "".join(
            f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>"
            for k, v in rows
        )
        + "</table>",
    ]
    if evidence.get("failures"):
        lines.append("<ul>" + "".join(f"<li>{e(f)}</li>" for f in evidence["failures"]) + "</ul>")
    lines.append(
        "<p>This page is a rendering: <code>moat-nb report verify DIR --key KEY</code> re-checks the "
        "evidence beside it offline and prints the facts it vouches for.</p>"
    )
    return "".join(lines)


def show_evidence(evidence: Mapping[str, Any]) -> None:
    """Display the verdict for a reader and the evidence for the runner (one output carrying
    :data:`EVIDENCE_MIMETYPE`, which HTML exports skip, and a Markdown verdict they show), and
    put the summary in its place under the title (:func:`show_summary`)."""
    from IPython.display import display, update_display

    # First: evidence JSON cannot carry (NaN) makes the proof ERROR, and the summary must not
    # have said PASS or FAIL by then.
    recorded = json.loads(_evidence_json(evidence))
    update_display(
        {"text/html": _summary_html(evidence), "text/plain": f"Verdict: {evidence['verdict']}"},
        raw=True,
        display_id=SUMMARY_DISPLAY_ID,
    )

    verdict = evidence["verdict"]
    colour = "#0072B2" if verdict == "PASS" else "#D62728"
    lines = [f"<h3 style='color:{colour}'>Verdict: {verdict}</h3>"]
    if evidence["failures"]:
        lines.append("<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in evidence["failures"]) + "</ul>")
    elif (evidence.get("audit") or {}).get("trustedKeys") == "bundle":
        # The bundle's own keys prove it consistent, not who signed it (moat-nb report verify
        # says NOT VERIFIED without a key): the reader must not take more from this page.
        lines.append(
            "<p>Every expectation holds, and the replay's audit record is consistent with a signed "
            "checkpoint, checked against the bundle's own keys only, which does not show who signed it: "
            "run <code>moat-nb report verify DIR --key KEY</code> with the platform's published audit key "
            "(or set <code>MOAT_AUDIT_KEYS</code> before the proof runs).</p>"
        )
    else:
        lines.append(
            "<p>Every expectation holds, and the replay's audit record verifies offline against a signed "
            "checkpoint.</p>"
        )
    lines.append(
        "<p>Replay <code>{}</code> of <code>{}</code>; output SHA-256 <code>{}</code>.</p>".format(
            html.escape(str(evidence["replay"]["replayId"])),
            html.escape(str(evidence["source"]["exchangeId"])),
            html.escape(str(evidence["hashes"]["outputBodySha256"])),
        )
    )
    display(
        {
            EVIDENCE_MIMETYPE: recorded,
            "text/html": "".join(lines),
            "text/plain": f"Verdict: {verdict}",
        },
        raw=True,
    )


#: The MIME type of a table a notebook publishes for programs (tests, the demo) besides its HTML.
TABLE_MIMETYPE = "application/vnd.moat-nb.table+json"


def show_frame(frame: Any, name: str, *, max_rows: int = 60) -> None:
    """Display a pandas frame as a table (its first ``max_rows`` rows) and publish all its rows
    as :data:`TABLE_MIMETYPE` under ``name``, which :func:`notebook_tables` reads back from an
    executed notebook (HTML exports skip it)."""
    import pandas as pd
    from IPython.display import display

    rows = json.loads(frame.to_json(orient="records", date_format="iso", default_handler=str))
    more = f"<p>{len(frame) - max_rows} more rows</p>" if len(frame) > max_rows else ""
    shown = frame.head(max_rows)
    # pandas writes a missing value of its NA dtypes (the string, Int64 and boolean columns of
    # moat_nb's frames) as "<NA>" whatever na_rep says: as objects, they take na_rep like NaN.
    # Only those columns: a float column as objects would lose its number formatting.
    nullable = [
        c
        for c, t in shown.dtypes.items()
        if isinstance(t, pd.StringDtype | pd.BooleanDtype)
        or (pd.api.types.is_extension_array_dtype(t) and pd.api.types.is_integer_dtype(t))
    ]
    if nullable:
        shown = shown.astype({c: object for c in nullable})
        shown[nullable] = shown[nullable].where(shown[nullable].notna(), "")
    display(
        {
            TABLE_MIMETYPE: {"name": name, "columns": [str(c) for c in frame.columns], "rows": rows},
            "text/html": shown.to_html(index=False, na_rep="", escape=True) + more,
            "text/plain": frame.head(max_rows).to_string(index=False),
        },
        raw=True,
    )


def notebook_tables(notebook: Any) -> dict[str, list[dict[str, Any]]]:
    """The tables an executed notebook published with :func:`show_frame`, by name."""
    import nbformat as nbf

    if not isinstance(notebook, nbf.NotebookNode):  # a path: "~/run.ipynb" is in the home folder
        notebook = nbf.read(str(Path(notebook).expanduser()), as_version=4)
    nb = notebook
    tables: dict[str, list[dict[str, Any]]] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", ()):
            value = (output.get("data") or {}).get(TABLE_MIMETYPE)
            if value is not None:
                value = json.loads(value) if isinstance(value, str) else value
                tables[value["name"]] = list(value["rows"])
    return tables


def facts_frame(execution: Execution) -> pd.DataFrame:
    """An execution's facts (ids, environment, route version, status ...) as a two-column table."""
    import pandas as pd

    facts = execution_facts(execution)
    return pd.DataFrame({"field": list(facts), "value": [str(v) for v in facts.values()]})


def receipt_frame(receipt: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The receipt events as a small table: seq, time, action, actor, outcome, hash."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "seq": e.get("seq"),
                "occurredAt": e.get("occurredAt"),
                "action": e.get("action"),
                "actor": (e.get("actor") or {}).get("username"),
                "outcome": e.get("outcome"),
                "hash": e.get("hash"),
            }
            for e in receipt
        ]
    )


def checks_frame(evidence: Mapping[str, Any]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        [
            {"check": c["name"], "result": "OK" if c["ok"] else "FAILED", "detail": c["detail"]}
            for c in evidence["checks"]
        ]
    )


# =========================================================================== running (I/O)


def notebook_path(name: str) -> Path:
    """A notebook of the project's ``notebooks/`` folder (a source checkout; ``make demo``)."""
    path = Path(__file__).resolve().parents[1] / "notebooks" / name
    if not path.is_file():
        raise MoatError(
            f"notebook {path} not found",
            code="NO_NOTEBOOK",
            hint="run from a source checkout of moat_nb (the notebooks are not in the wheel)",
        )
    return path


def ensure_kernel() -> str:
    """Install (or refresh) the ``moat-nb`` kernelspec that runs this very Python.

    The notebooks must run in the project's environment. ``python3`` is not safe to name:
    jupyter_client looks in the user's data folder (``~/.local/share/jupyter``) before the
    environment's, so a user-wide ``python3`` kernel could shadow the venv's. The spec is written
    into ``sys.prefix/share/jupyter/kernels`` (searched by every Jupyter started from this
    environment); where that is read-only, into a folder added to ``JUPYTER_PATH``."""
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (moat-nb)",
        "language": "python",
        "metadata": {"debugger": True},
    }
    text = json.dumps(spec, indent=1) + "\n"
    for base, via_env in (
        (Path(sys.prefix) / "share" / "jupyter", False),
        (
            Path(tempfile.gettempdir()) / f"moat-nb-jupyter-{os.getuid() if hasattr(os, 'getuid') else 0}",
            True,
        ),
    ):
        folder = base / "kernels" / KERNEL_NAME
        target = folder / "kernel.json"
        try:
            if not (target.is_file() and target.read_text() == text):
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f".kernel.{os.getpid()}.json"
                tmp.write_text(text)
                os.replace(tmp, target)  # atomic: concurrent runs never see half a file
        except OSError:
            continue
        if via_env:
            paths = os.environ.get("JUPYTER_PATH", "").split(os.pathsep)
            if str(base) not in paths:
                os.environ["JUPYTER_PATH"] = os.pathsep.join([str(base), *filter(None, paths)])
        return KERNEL_NAME
    raise MoatError("cannot write a kernelspec anywhere", code="NO_KERNEL", hint="check the disk and TMPDIR")


def _engine() -> str:
    """Register (once) a papermill engine that starts the kernel with an explicit environment
    and working folder, instead of papermill's ``cwd=``, which changes the whole process's
    folder (``os.chdir``), and instead of changing ``os.environ``."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.utils import merge_kwargs, remove_args

    name = "moat-nb"
    if name in papermill_engines._engines:
        return name

    class KernelEnvEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(  # type: ignore[override]
            cls,
            nb_man: Any,
            kernel_name: str,
            log_output: bool = False,
            stdout_file: Any = None,
            stderr_file: Any = None,
            start_timeout: int = 60,
            execution_timeout: int | None = None,
            kernel_env: dict[str, str] | None = None,
            kernel_cwd: str | None = None,
            **kwargs: Any,
        ) -> Any:
            kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
            final = merge_kwargs(
                kwargs,
                timeout=execution_timeout,
                startup_timeout=start_timeout,
                kernel_name=kernel_name,
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
            )
            start: dict[str, Any] = {}
            if kernel_env is not None:
                start["env"] = kernel_env  # jupyter_client's start_kernel(env=...)
            if kernel_cwd is not None:
                start["cwd"] = kernel_cwd
            return PapermillNotebookClient(nb_man, **final).execute(**start)

    papermill_engines.register(name, KernelEnvEngine)
    return name


def run_notebook(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    parameters: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: int = 600,
) -> nbformat.NotebookNode:
    """Execute a notebook with papermill in the ``moat-nb`` kernel (:func:`ensure_kernel`).

    ``env`` is added to this process's environment for the kernel only (``MOAT_URL`` ...);
    ``cwd`` is the kernel's working folder. The executed notebook is written to ``output`` even
    when a cell fails (papermill then raises ``PapermillExecutionError``)."""
    import papermill

    # "~/run.ipynb" is in the home folder: papermill opens paths as given, and the folder made
    # for the output was a "~" in the working directory.
    source, output = Path(source).expanduser(), Path(output).expanduser()
    cwd = Path(cwd).expanduser() if cwd is not None else None
    kernel = ensure_kernel()
    kernel_env = {**os.environ, **(env or {})}
    output.parent.mkdir(parents=True, exist_ok=True)  # papermill writes no folder
    with tempfile.TemporaryDirectory(prefix="moat-kernel-") as sockets:
        return papermill.execute_notebook(
            str(source),
            str(output),
            parameters=dict(parameters or {}),
            kernel_name=kernel,
            engine_name=_engine(),
            progress_bar=False,
            execution_timeout=timeout,
            kernel_env=kernel_env,
            kernel_cwd=str(cwd) if cwd is not None else None,
            config=_kernel_transport(Path(sockets)),
        )


#: Longest path a Unix socket takes (``sun_path`` is 108 bytes on Linux, with the NUL and the
#: ``-<port>`` zmq appends): beyond it the kernel talks over loopback TCP as before.
_MAX_SOCKET_PATH = 90


def _kernel_transport(folder: Path) -> Any:
    """The kernel's channels as Unix sockets in ``folder`` (a private temporary folder, mode
    0700), not loopback TCP ports: only this user can reach them, where any local user could
    connect to a port (the connection file's key still signs each message), and ipykernel no
    longer warns on every run that the channels are "running over TCP without encryption"."""
    from traitlets.config import Config

    base = str(folder.resolve() / "k")
    if os.name != "posix" or len(os.fsencode(base)) > _MAX_SOCKET_PATH:  # sun_path counts bytes
        return Config()
    if not _binds_unix_socket(folder):
        return Config()
    return Config({"KernelManager": {"transport": "ipc", "ip": base}})


def _binds_unix_socket(folder: Path) -> bool:
    """Whether a Unix socket can be made in ``folder``: some file systems (network and FUSE
    mounts, a TMPDIR on a shared folder) refuse them, and the kernel would then fail to start
    where loopback TCP works."""
    probe = folder / "probe"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(str(probe))
        except OSError:
            return False
    probe.unlink(missing_ok=True)
    return True


# A template over JupyterLab's: the same page without the require.js and MathJax scripts it
# loads from a CDN, so that the report is self-contained and opens offline. plotly's offline
# figures need neither (without require.js they use window.Plotly, which the notebook embeds).
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
"""


#: plotly's notebook renderer loads MathJax from a CDN in every figure (for LaTeX labels, which
#: these figures do not use); the report must open offline.
_CDN_MATHJAX = re.compile(r'<script src="https://cdn[^"]*/mathjax/[^"]*"></script>')
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _self_contained(nb: Any) -> Any:
    """A copy of ``nb`` that renders with no network: widget views (progress bars; their
    renderer would come from unpkg.com) and the saved widget state are dropped, and CDN MathJax
    script tags are removed from HTML outputs."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        kept = []
        for output in cell.get("outputs", ()):
            data = output.get("data")
            if data is not None and _WIDGET_VIEW in data:
                continue
            if data is not None and "text/html" in data:
                text = data["text/html"]
                text = "".join(text) if isinstance(text, list) else text
                data["text/html"] = _CDN_MATHJAX.sub("", text)
            kept.append(output)
        cell["outputs"] = kept
    return nb


def export_html(
    notebook: nbformat.NotebookNode | str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    hide_code: bool = True,
    title: str | None = None,
) -> Path:
    """Write an executed notebook as one self-contained HTML file (nbconvert's ``HTMLExporter``
    on the lab template; ``hide_code``: ``exclude_input``, prose and outputs only)."""
    import nbformat as nbf
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    if not isinstance(notebook, nbf.NotebookNode):  # a path: "~/run.ipynb" is in the home folder
        notebook = nbf.read(str(Path(notebook).expanduser()), as_version=4)
    nb = notebook
    nb = _self_contained(nb)
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({"moat_report.html.j2": _TEMPLATE})],
        template_file="moat_report.html.j2",
        exclude_input=hide_code,
        exclude_input_prompt=hide_code,
        exclude_output_prompt=hide_code,
        embed_images=True,
    )
    resources = {"metadata": {"name": title}} if title else None
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    path = Path(target).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path


CHROMIUM = Path("/usr/bin/chromium")


def _chromium() -> Path:
    if not CHROMIUM.exists():
        raise MoatError(
            f"--pdf needs Debian's chromium at {CHROMIUM}, which is not installed",
            code="NO_CHROMIUM",
            hint="apt-get install chromium (make browser-deps does it as root), or open report.html "
            "in a browser and print it",
        )
    return CHROMIUM


def print_pdf(
    html_file: str | os.PathLike[str], target: str | os.PathLike[str], *, timeout: float = 120.0
) -> Path:
    """Print an HTML file to PDF with Debian's Chromium, headless (its scripts, and so the
    plotly figures, run first: ``--virtual-time-budget``)."""
    exe = _chromium()
    out = Path(target).expanduser().resolve()  # resolve() keeps a "~" as a folder name
    html_file = Path(html_file).expanduser()
    with tempfile.TemporaryDirectory(prefix="moat-nb-chromium-") as profile:
        cmd = [
            str(exe),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--no-pdf-header-footer",
            f"--print-to-pdf={out}",
            Path(html_file).resolve().as_uri(),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise MoatError(
                f"chromium did not print {html_file} within {timeout:.0f} s", code="PDF_FAILED"
            ) from None
    if not out.is_file() or out.stat().st_size == 0:
        raise MoatError(
            f"chromium could not print the PDF (exit {proc.returncode}): {proc.stderr.strip()[-300:]}",
            code="PDF_FAILED",
        )
    return out


@dataclass(frozen=True)
class ProofResult:
    """What :func:`compliance_proof` produced. ``verdict`` is ``PASS``, ``FAIL`` (an expectation
    or a check failed: ``failures`` says which) or ``ERROR`` (the notebook could not finish:
    ``failures`` holds the error); ``exit_code`` is 0 only for ``PASS``."""

    verdict: str
    out: Path
    notebook: Path
    html: Path
    evidence: Path
    bundle: Path | None
    pdf: Path | None
    failures: tuple[str, ...]
    seconds: float
    data: dict[str, Any] = field(repr=False)

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def _credentials_from_env(url: str | None) -> str:
    """The platform URL; refuses a URL with a password in it and a missing login."""
    import urllib.parse

    url = url or os.environ.get("MOAT_URL")
    if not url:
        raise ValidationError("no platform URL", code="NO_URL", hint="pass --url or set MOAT_URL")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            f"{url!r} is not an http(s) URL", code="BAD_URL", hint="e.g. http://127.0.0.1:8081"
        )
    if parts.username or parts.password:
        raise ValidationError(
            "the URL carries a user or password: credentials are never parameters",
            code="CREDENTIAL_PARAMETER",
            hint=_ENV_HINT,
        )
    env = os.environ
    if not (env.get("MOAT_TOKEN") or (env.get("MOAT_USER") and env.get("MOAT_PASSWORD"))):
        raise ValidationError(
            "no credentials in the environment",
            code="NO_CREDENTIALS",
            hint=_ENV_HINT + " (the proof exports the audit log: the user needs audit:read)",
        )
    return url


def _check_platform(url: str, params: ProofParameters, *, audit: bool) -> None:
    """Log in, check the user's permissions and find the source exchange before a kernel starts:
    a wrong password, a dead URL, an unknown source or a user who may not run the proof took
    8-15 s of kernel start and notebook, then wrote a report folder saying ERROR (found by a
    walk through the README). Raises the client's error (one line, a code, a hint).

    ``audit``: the shipped notebook exports the audit bundle its receipt is verified against
    (``audit:read``); without one the proof cannot verify and ends FAIL, so that is refused up
    front too. A notebook of the caller's own is asked only for the replay's permissions."""
    from .client import connect, replay_permissions
    from .errors import AgentUnavailable, PermissionDenied

    with connect(url) as platform:  # credentials from the environment, as the notebook's
        source = next(iter(platform.executions(exchange_id=params.source_exchange_id, limit=1)), None)
        if source is None:
            raise ValidationError(
                f"no recorded exchange {params.source_exchange_id!r} on {url}",
                code="NO_SUCH_SOURCE",
                hint="pick one with moat_nb.connect().executions(...): its exchange_id column",
                details={"sourceExchangeId": params.source_exchange_id},
            )
        target = params.target_environment or source.environment
        if target != source.environment:
            # A mistyped environment ('qa') ran the kernel for ~8 s and wrote an ERROR report
            # (AGENT_UNAVAILABLE); the agents list says so at once (README walk-through finding).
            agents = platform.agents()
            if not any(a.get("environmentId") == target and a.get("status") == "LIVE" for a in agents):
                known = sorted({str(a.get("environmentId")) for a in agents if a.get("status") == "LIVE"})
                raise AgentUnavailable(
                    f"no live agent runs environment {target!r} on {url}",
                    hint=f"target one of {', '.join(known) or 'none: no agent is live'}"
                    + f", or leave the target out to replay in the source's ({source.environment})",
                    details={"targetEnvironment": target, "environments": known},
                )
        permissions = set((platform.user or {}).get("permissions") or ())
        if not permissions:
            return  # signed in with a token: the platform decides as the proof runs
        needed = replay_permissions(source.environment or "", target, bool(params.modified_payload))
        if audit:
            needed.insert(1, "audit:read")  # the proof exports the bundle its receipt is verified against
        missing = [n for n in needed if n not in permissions]
        if missing:
            who = (platform.user or {}).get("username")
            raise PermissionDenied(
                f"{who} may not run this proof: it needs {', '.join(missing)}",
                hint="run it as a user who has them (the sandbox's admin has all of them)",
                details={"missing": missing},
            )


def _embedded_evidence(nb: Any) -> dict[str, Any] | None:
    for cell in nb.cells:
        for output in cell.get("outputs", ()):
            data = output.get("data") or {}
            if EVIDENCE_MIMETYPE in data:
                value = data[EVIDENCE_MIMETYPE]
                return dict(json.loads(value) if isinstance(value, str) else value)
    return None


def _error_of(exc: BaseException) -> str:
    ename = getattr(exc, "ename", None)
    evalue = getattr(exc, "evalue", None)
    if ename:
        return f"the notebook stopped: {ename}: {evalue}"
    return f"the notebook could not run: {type(exc).__name__}: {exc}"


def _bad_out(folder: Path, why: str) -> ValidationError:
    return ValidationError(
        f"--out {folder}: {why}",
        code="BAD_OUT",
        hint="name a folder to write the report into (it is made if missing; its report files are replaced)",
        details={"out": str(folder)},
    )


def _check_out(out: str | os.PathLike[str]) -> Path:
    """``out`` as the report folder, refused (``BAD_OUT``) before anything runs when it cannot
    be one: a file is there or above it, or the folder cannot be made or written to. A folder
    that is missing is made and removed again to find out (access bits do not tell: root, or
    /proc), so that a proof refused later (credentials ...) leaves no empty folder behind."""
    # out="~/proof" is in the home folder (run_notebook and papermill are then given the
    # expanded folder): it was made as a folder named "~" in the working directory.
    folder = Path(out).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise _bad_out(folder, "a file is there, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise _bad_out(folder, "the folder cannot be written to")
        return folder
    missing = [folder]
    while not missing[-1].parent.exists() and missing[-1].parent != missing[-1]:
        missing.append(missing[-1].parent)
    if not missing[-1].parent.is_dir():
        raise _bad_out(folder, f"{missing[-1].parent} is a file, so the folder cannot be made")
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise _bad_out(folder, f"the folder cannot be made ({exc.strerror or exc})") from None
    for made in missing:  # deepest first
        made.rmdir()
    return folder


def _json_argument(value: Any, what: str) -> Any:
    """``value`` with a ``Path`` read as the JSON file it names, as the command's ``--payload`` and
    ``--expect`` read theirs (strictly, the error naming the file). Why: the README shows the
    command with files, and ``compliance_proof(src, Path("payload.json"), Path("expect.json"))``
    failed with ``TypeError: 'PosixPath' object is not iterable``; a ``str`` stays JSON text,
    and one that names a file is refused with the way to read it rather than parsed as JSON."""
    from .expectations import strict_json

    if isinstance(value, os.PathLike):
        path = Path(value).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ValidationError(
                f"cannot read the {what} from {path}: {getattr(err, 'strerror', None) or err}",
                code="BAD_PARAMETER",
                hint=f"pass the path of a readable JSON file, or the {what} itself",
                details={"parameter": what, "path": str(path)},
            ) from None
        strict_json(text, f"the {what} file {path}")
        return text
    if isinstance(value, str) and not value.lstrip().startswith(("{", "[")):
        try:
            is_file = Path(value).expanduser().is_file()
        except (OSError, ValueError):  # a text too long, or holding NUL, for a path
            is_file = False
        if is_file:
            raise ValidationError(
                f"{what}={value!r} names a file, but a str {what} is JSON text",
                code="BAD_JSON",
                hint=f"pass pathlib.Path({value!r}) to read the file",
                details={"parameter": what, "path": value},
            )
    return value


def compliance_proof(
    source: str,
    payload: str | os.PathLike[str] | Mapping[str, Any] | None,
    expectations: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    *,
    target_environment: str | None,
    reason: str,
    out: str | os.PathLike[str],
    url: str | None = None,
    pdf: bool = False,
    notebook: str | os.PathLike[str] | None = None,
    timeout: int = 300,
) -> ProofResult:
    """Run the compliance proof (module docstring) and write the report to ``out``.

    ``payload`` is the modified payload (JSON text, an object, or a ``pathlib.Path`` of a JSON
    file as ``--payload`` takes; ``None``: unmodified), ``expectations`` the expectation list
    (JSON text, a list, or a ``Path``). Everything is validated before
    anything runs (ValidationError); credentials come from the environment only. Returns a
    :class:`ProofResult`; ``exit_code`` is 0 only when every expectation holds and the audit
    verifies."""
    started = time.perf_counter()
    payload = _json_argument(payload, "payload")
    expectations = _json_argument(expectations, "expectations")
    params = ProofParameters.parse(
        {
            "source_exchange_id": source,
            "modified_payload": "{}" if payload is None else payload,
            "target_environment": target_environment or "",
            "expectations": expectations if isinstance(expectations, str) else list(expectations),
            "reason": reason,
        }
    )
    folder = _check_out(out)
    # A bad MOAT_AUDIT_KEYS made the proof replay, then fail with "public key None is not
    # Ed25519" (found by an audit walk): refused here, before anything runs.
    check_keys(trusted_keys_from_env()[0] or (), "MOAT_AUDIT_KEYS")
    url = _credentials_from_env(url)
    if pdf:
        _chromium()  # no chromium: say so before anything runs
    _check_platform(url, params, audit=notebook is None)
    papermill_params = params.to_papermill()
    from papermill.translators import PythonTranslator

    check_parameter_cell(PythonTranslator.codify(papermill_params), papermill_params)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # checked above, but the file system may change in between
        raise _bad_out(folder, f"the folder cannot be made ({exc.strerror or exc})") from None
    nb_path = folder / "compliance_proof.ipynb"
    html_path = folder / "report.html"
    evidence_path = folder / "evidence.json"
    bundle_path = folder / "audit-bundle.json"
    for stale in (nb_path, html_path, evidence_path, bundle_path, folder / "report.pdf"):
        stale.unlink(missing_ok=True)
    source_nb = (
        Path(notebook).expanduser() if notebook is not None else notebook_path("compliance_proof.ipynb")
    )
    error: str | None = None
    try:
        run_notebook(
            source_nb,
            nb_path,
            papermill_params,
            env={"MOAT_URL": url, "MOAT_EVIDENCE_DIR": str(folder.resolve())},
            cwd=folder,
            timeout=timeout,
        )
    except Exception as exc:  # noqa: BLE001 - papermill raises its own classes; the report says it
        error = _error_of(exc)
    import nbformat as nbf

    if not nb_path.is_file():
        raise MoatError(error or "the notebook was not written", code="PROOF_ERROR")
    nb_bytes = nb_path.read_bytes()
    nb = nbf.reads(nb_bytes.decode("utf-8"), as_version=4)
    embedded = _embedded_evidence(nb)
    if embedded is None:
        evidence: dict[str, Any] = {
            "format": EVIDENCE_FORMAT,
            "verdict": "ERROR",
            "failures": [error or "the notebook finished without recording its evidence"],
            "parameters": params.to_wire(),
        }
    else:
        evidence = dict(embedded)
        if error is not None:
            evidence["verdict"] = "ERROR"
            evidence["failures"] = [*evidence.get("failures", []), error]
    evidence["notebook"] = {"file": nb_path.name, "sha256": hashlib.sha256(nb_bytes).hexdigest()}
    export_html(nb, html_path, hide_code=True, title="Compliance proof")
    files = {"html": html_path.name}
    if bundle_path.is_file():
        files["auditBundle"] = bundle_path.name
    pdf_path: Path | None = None
    if pdf:
        pdf_path = print_pdf(html_path, folder / "report.pdf")
        files["pdf"] = pdf_path.name
    evidence["files"] = files
    evidence["runner"] = {"seconds": round(time.perf_counter() - started, 3), "url": url}
    try:
        text = _evidence_json(evidence, ensure_ascii=False, indent=1)
    except ValidationError as exc:  # written as an ERROR proof that says why, never as bad JSON
        evidence = {
            "format": EVIDENCE_FORMAT,
            "verdict": "ERROR",
            "failures": [*evidence.get("failures", []), exc.message],
            "parameters": params.to_wire(),
            **{k: evidence[k] for k in ("notebook", "files", "runner")},
        }
        text = _evidence_json(evidence, ensure_ascii=False, indent=1)
    evidence_path.write_text(text + "\n", encoding="utf-8")
    return ProofResult(
        verdict=str(evidence["verdict"]),
        out=folder,
        notebook=nb_path,
        html=html_path,
        evidence=evidence_path,
        bundle=bundle_path if bundle_path.is_file() else None,
        pdf=pdf_path,
        failures=tuple(evidence.get("failures") or ()),
        seconds=time.perf_counter() - started,
        data=evidence,
    )


def verify_report(
    folder: str | os.PathLike[str], *, public_keys: Any = None, legacy: bool = False
) -> list[Check]:
    """Re-check a report folder offline (:func:`verify_evidence` on its files): no platform,
    no network. ``public_keys``: the audit keys you trust (base64 DER or key objects);
    ``legacy``: accept a report made before its times, diff and checks were tied to the audit
    (those checks say SKIPPED instead of failing)."""
    return checked_evidence(folder, public_keys=public_keys, legacy=legacy)[0]


def checked_evidence(
    folder: str | os.PathLike[str], *, public_keys: Any = None, legacy: bool = False
) -> tuple[list[Check], dict[str, Any]]:
    """:func:`verify_report`'s checks and the evidence they checked, read once: what a caller
    shows as verified must be those bytes, not the file read again (``report verify`` printed
    its facts from a second read, which a folder changed meanwhile could feed; found by an
    audit walk)."""
    base = Path(folder).expanduser()  # "~/proof", as compliance_proof(out=) reads it
    evidence_file = base / "evidence.json"
    if not evidence_file.is_file():
        raise MoatError(f"{evidence_file} not found", code="NO_EVIDENCE", hint="pass a report folder")
    try:
        # Strict as a bundle is read (no NaN, no member twice), with no size limit: evidence
        # holds the payload and the output several times (parameters are limited to 1 MiB).
        evidence = audit_core.loads_strict(evidence_file.read_bytes(), unique_names=True)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise MoatError(
            f"{evidence_file} is not strict JSON: {str(exc)[:200]}",
            code="BAD_EVIDENCE",
            hint="verify the folder a `moat-nb report compliance` run wrote",
        ) from None
    try:
        return _verify_folder(base, evidence, public_keys, legacy), evidence
    except MoatError:
        raise
    except (AttributeError, TypeError, KeyError, IndexError, ValueError, RecursionError) as exc:
        # The file parsed, but not into the evidence's shape (an object of objects and lists):
        # a damaged or foreign file, said in one line rather than a traceback.
        raise MoatError(
            f"{evidence_file} is not compliance evidence of this format ({type(exc).__name__}: {exc})",
            code="BAD_EVIDENCE",
            hint="verify the folder a `moat-nb report compliance` run wrote",
        ) from None


def _verify_folder(base: Path, evidence: Any, public_keys: Any, legacy: bool = False) -> list[Check]:
    import nbformat as nbf

    if not isinstance(evidence, dict):
        raise TypeError(f"the file holds a JSON {type(evidence).__name__}, not an object")
    files = evidence.get("files") or {}
    bundle_file = base / str(files.get("auditBundle", "audit-bundle.json"))
    bundle = audit_core.load_bundle(bundle_file) if bundle_file.is_file() else None
    nb_file = base / str((evidence.get("notebook") or {}).get("file", "compliance_proof.ipynb"))
    nb_bytes = nb_file.read_bytes() if nb_file.is_file() else b""
    embedded = None
    if nb_bytes:
        try:
            embedded = _embedded_evidence(nbf.reads(nb_bytes.decode("utf-8"), as_version=4))
        except Exception:  # noqa: BLE001 - a damaged notebook: the hash check reports it
            embedded = None
    keys = (
        [audit_core.load_public_key(k) if isinstance(k, str) else k for k in public_keys]
        if public_keys
        else None
    )
    checks = verify_evidence(
        evidence, bundle, public_keys=keys, notebook_bytes=nb_bytes, embedded=embedded or {}, legacy=legacy
    )
    return checks


def now_utc() -> str:
    """The current time in the wire's form (RFC 3339 UTC, milliseconds, ``Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
