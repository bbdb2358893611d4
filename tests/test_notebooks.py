"""The four notebooks of ``notebooks/`` run top to bottom with their default parameters against a
real sandbox, through papermill in the ``moat-nb`` kernel (DESIGN.md section 9, issue 8), and their
HTML exports draw their plots offline.

Each test checks what the notebook found, not only that it ran: the what-if diff names the pricing
step and the sweep's totals follow the quantity; the bug is reproduced and the fix goes through;
the regression's verdicts are the ones route versions 1 and 2 give when run in-process on the same
recorded inputs; the compliance proof's evidence passes. Credentials reach the kernels through
``MOAT_*`` environment variables only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

from moat_nb import report

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(
    name: str, sandbox: Any, user: str, tmp_path: Path, parameters: dict[str, Any] | None = None
) -> nbformat.NotebookNode:
    """The shipped notebook ``name`` run by papermill as ``user`` (its password is its name)."""
    return report.run_notebook(
        NOTEBOOKS / name,
        tmp_path / name,
        parameters,
        env={"MOAT_URL": sandbox.url, "MOAT_USER": user, "MOAT_PASSWORD": user},
        cwd=tmp_path,
        timeout=240,
    )


def _run(
    name: str, sandbox: Any, user: str, tmp_path: Path, parameters: dict[str, Any] | None = None
) -> tuple[nbformat.NotebookNode, str]:
    nb = _execute(name, sandbox, user, tmp_path, parameters)
    errors = [o for c in nb.cells for o in c.get("outputs", ()) if o.get("output_type") == "error"]
    assert not errors, errors
    html = report.export_html(nb, tmp_path / (name + ".html"), hide_code=False).read_text()
    return nb, html


def _assert_plots_offline(html: str, at_least: int) -> None:
    # Every figure is a plotly div drawn by Plotly.newPlot; plotly.js itself is in the page
    # (its version banner), and no script is loaded from the network.
    assert html.count('class="plotly-graph-div"') >= at_least
    assert html.count("Plotly.newPlot(") >= at_least
    assert re.search(r"plotly\.js v\d+\.\d+\.\d+", html), "plotly.js is not embedded"
    assert not re.findall(r"<script[^>]+src=\"https?://", html), "the page loads a script from the network"


def _figure_titles(nb: nbformat.NotebookNode) -> list[str]:
    return [
        o["data"]["application/vnd.plotly.v1+json"]["layout"]["title"]["text"]
        for c in nb.cells
        for o in c.get("outputs", ())
        if "application/vnd.plotly.v1+json" in o.get("data", {})
    ]


def _stream(nb: nbformat.NotebookNode) -> str:
    return "".join(
        o.get("text", "") for c in nb.cells for o in c.get("outputs", ()) if o.get("output_type") == "stream"
    )


def test_parameters_cell_is_tagged_and_comes_before_any_use_of_a_parameter() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        tagged = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        parameters = code[tagged[0]]
        # What runs before papermill's injected values may not read a parameter: only a cell
        # that shows something at the top of the report (compliance_proof's summary, filled in
        # by its last cell) comes first.
        names = re.findall(r"^(\w+)\s*=", parameters.source, re.M)
        assert names, path.name
        for cell in code[: tagged[0]]:
            assert not any(re.search(rf"\b{n}\b", cell.source) for n in names), (path.name, cell.source)
        assert not any(c.get("outputs") for c in code), f"{path.name} is saved with outputs"
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), path.name
        # Credentials are never parameters (section 6): the notebooks read MOAT_* themselves.
        assert not re.search(r"password|token", parameters.source, re.I), path.name


def test_explore_what_if(client_sandbox: Any, tmp_path: Path) -> None:
    nb, html = _run("explore_what_if.ipynb", client_sandbox, "operator", tmp_path)
    tables = report.notebook_tables(nb)
    # The route-made differences name the pricing step and the bulk-discount rule.
    processors = {row["processor_id"] for row in tables["first-seen"]}
    assert "compute-totals" in processors
    paths = {row["path"] for row in tables["first-seen"]}
    assert "body:$.total" in paths
    sweep = tables["sweep"]
    assert len(sweep) == 4 * 2  # the default grid: 4 quantities x 2 customers
    assert all(row["result_status"] == "COMPLETED" for row in sweep)
    for customer in ("C-1003", "C-1001"):
        totals = [
            row["total"] for row in sorted(sweep, key=lambda r: r["quantity"]) if row["customer"] == customer
        ]
        assert totals == sorted(totals) and totals[0] < totals[-1], (customer, totals)
    # Gold (C-1001) pays less than bronze (C-1003) for the same quantity: the tier discount.
    by = {(r["customer"], r["quantity"]): r["total"] for r in sweep}
    assert all(by[("C-1001", q)] < by[("C-1003", q)] for q in (1, 5, 10, 20))
    _assert_plots_offline(html, at_least=4)


def test_reproduce_bug(client_sandbox: Any, tmp_path: Path) -> None:
    nb, html = _run("reproduce_bug.ipynb", client_sandbox, "operator", tmp_path)
    tables = report.notebook_tables(nb)
    assert tables["failures"], "the history has failed exchanges"
    outcomes = {row["run"]: row for row in tables["outcomes"]}
    reproduction, fixed = outcomes["reproduction"], outcomes["with the fix"]
    assert reproduction["status"] == "FAILED" and reproduction["same as the original"] is True
    assert reproduction["error"] in {row["error_type"] for row in tables["failures"]}
    assert fixed["status"] == "COMPLETED" and fixed["same as the original"] is False
    assert json.loads(fixed["result"])["status"] in ("ACCEPTED", "PARTIALLY_BACKORDERED", "BACKORDERED")
    assert "fix: line" in _stream(nb)
    _assert_plots_offline(html, at_least=3)


def test_reproduce_bug_with_no_payload_fix_replays_the_failure_once(tmp_path: Path) -> None:
    # An unknown customer has no payload fix: the notebook replayed the same payload a second
    # time anyway, audited as "replay with the corrected payload: " (notebook walk-through).
    # A sandbox of its own: seed 7 records unknown customers in staging and dev.
    from moat_nb.client import connect
    from moat_nb.sandbox import start

    sandbox = start(data=tmp_path / "sandbox", per_env=60, seed=7)
    platform = connect(sandbox.url, username="operator", password="operator")
    try:
        failed = platform.executions(
            environment=["staging", "dev"], status="FAILED", is_replay=False
        ).to_pandas()
        unknown = failed[failed["error_type"].str.endswith("UnknownCustomerException")]
        assert not unknown.empty, "the history has an unknown customer's failure"
        exchange = unknown["exchange_id"].iloc[0]
        nb, _ = _run("reproduce_bug.ipynb", sandbox, "operator", tmp_path, {"exchange_id": exchange})
        reasons = [r["reason"] for r in platform.replays(limit=None, source_exchange_id=exchange)]
    finally:
        platform.close()
        sandbox.stop()
    outcomes = {row["run"]: row for row in report.notebook_tables(nb)["outcomes"]}
    assert set(outcomes) == {"reproduction", "no fix (the reproduction)"}
    assert "nothing to replay" in _stream(nb)
    # Support walk: it went on to print "with the fix: FAILED; result <the order>" and drew the
    # reproduction under "The original and the replay with the fix", with no fix anywhere.
    assert "with the fix" not in _stream(nb)
    assert not any("with the fix" in title for title in _figure_titles(nb)), _figure_titles(nb)
    assert "No payload fix: the original and its reproduction" in _figure_titles(nb)
    assert sum(r.startswith("reproduce") for r in reasons) == 1, reasons
    assert not any("corrected payload" in r for r in reasons), reasons


def _notebook_function(name: str, function: str) -> Any:
    """A function a shipped notebook defines, run as the notebook runs it (its cell's imports)."""
    import ast

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]
        if defs:
            namespace: dict[str, Any] = {}
            exec("import copy\nimport json", namespace)
            exec(compile(ast.Module(body=defs, type_ignores=[]), name, "exec"), namespace)
            return namespace[function]
    raise AssertionError(f"{name} defines no {function}()")


def test_reproduce_bug_says_where_it_looked_for_failures() -> None:
    # Support walk: "Every failed exchange in the recorded history" headed a list of staging and
    # dev only (the default environments); prod's failures were not in it.
    nb = nbformat.read(NOTEBOOKS / "reproduce_bug.ipynb", as_version=4)
    prose = next(
        c.source for c in nb.cells if c.cell_type == "markdown" and "## 1. Find the failures" in c.source
    )
    assert "recorded history" not in prose and "`environments`" in prose


def test_reproduce_bug_names_the_quantity_it_corrected() -> None:
    # Support walk: a zero quantity (also "not positive") was reported as "quantity -1
    # corrected to 1": the note negated the corrected value instead of naming the original.
    fix_order = _notebook_function("reproduce_bug.ipynb", "fix_order")
    order = {"lines": [{"sku": "A", "qty": 0, "unitPrice": 1.0}, {"sku": "B", "qty": -4, "unitPrice": 2.0}]}
    fixed, notes = fix_order(order)
    assert [line["qty"] for line in fixed["lines"]] == [1, 4]
    assert notes == ["line 1: quantity 0 corrected to 1", "line 2: quantity -4 corrected to 4"]
    assert order["lines"][0]["qty"] == 0  # the recorded order is left as it was


def _expected_verdicts(sandbox: Any, rows: list[dict[str, Any]]) -> dict[str, str]:
    """The oracle: route versions 1 and 2 run in-process on each recorded input (no server, no
    agent, no replay path); the replay must be SAME exactly when both give the same result."""
    from moat_nb.model import Payload
    from moat_nb.sandbox.apps.orders import APP
    from moat_nb.sandbox.camel import RouteSet

    v1, v2 = (RouteSet.load(APP.versions[v], APP.beans, endpoints=APP.endpoints) for v in ("v1", "v2"))
    expected = {}
    for row in rows:
        original = sandbox.state.store.execution(row["source_execution_id"])
        payload = Payload(
            headers=dict(original.input_headers or {}),
            body=original.input_body,
            properties=dict(original.input_properties or {}),
        )
        a, b = (routes.run(APP.entry_route, payload) for routes in (v1, v2))
        same = (a.status, json.loads(a.output_body)["total"]) == (
            b.status,
            json.loads(b.output_body)["total"],
        )
        expected[row["source_exchange_id"]] = "SAME" if same else "CHANGED"
    return expected


def test_regression_replay(client_sandbox: Any, tmp_path: Path) -> None:
    nb, html = _run("regression_replay.ipynb", client_sandbox, "prod-operator", tmp_path)
    rows = report.notebook_tables(nb)["verdicts"]
    assert len(rows) >= 20
    expected = _expected_verdicts(client_sandbox, rows)
    got = {row["source_exchange_id"]: row["verdict"] for row in rows}
    assert got == expected
    assert {"SAME", "CHANGED"} <= set(got.values())  # the history exercises both
    for row in rows:  # CHANGED rows changed the total; SAME rows did not
        assert (row["verdict"] == "CHANGED") == (row["total"] != row["original_total"]), row
    _assert_plots_offline(html, at_least=2)


def test_compliance_proof_defaults(client_sandbox: Any, tmp_path: Path) -> None:
    nb, html = _run("compliance_proof.ipynb", client_sandbox, "admin", tmp_path)
    evidence = next(
        o["data"][report.EVIDENCE_MIMETYPE]
        for c in nb.cells
        for o in c.get("outputs", ())
        if report.EVIDENCE_MIMETYPE in o.get("data", {})
    )
    assert evidence["verdict"] == "PASS", evidence["failures"]
    assert evidence["source"]["environment"] == "prod" and evidence["replay"]["environment"] == "staging"
    assert [e["actual"] for e in evidence["expectations"]] == ["COMPLETED", 59.97]
    # No MOAT_AUDIT_KEYS: the bundle's own keys prove it consistent, not who signed it, and the
    # page said "VERIFIED" and "verifies offline against a signed checkpoint" all the same.
    assert evidence["audit"]["trustedKeys"] == "bundle"
    assert "CONSISTENT, SIGNER NOT CHECKED" in _stream(nb) and "VERIFIED:" not in _stream(nb)
    assert "bundle's own keys only" in html and "verifies offline against a signed" not in html
    _assert_plots_offline(html, at_least=3)


def _failure(name: str, sandbox: Any, user: str, tmp_path: Path, parameters: dict[str, Any]) -> str:
    """The one error a notebook stops with: ``ename: evalue`` of its first error output."""
    with pytest.raises(Exception, match="PapermillExecutionError|Exception encountered"):
        _execute(name, sandbox, user, tmp_path, parameters)
    nb = nbformat.read(tmp_path / name, as_version=4)
    error = next(o for c in nb.cells for o in c.get("outputs", ()) if o.get("output_type") == "error")
    return f"{error['ename']}: {error['evalue']}"


def test_regression_replay_stops_in_words_where_nothing_can_be_replayed(
    client_sandbox: Any, tmp_path: Path
) -> None:
    # A user without replay:prod: every row was ERROR [FORBIDDEN]. The notebook went on and died
    # of "KeyError: 'total'" three cells later (and would have said "no exchange changed"). The
    # batch now refuses before any row: none may run.
    text = _failure("regression_replay.ipynb", client_sandbox, "operator", tmp_path / "a", {})
    assert text.startswith("PermissionDenied: [FORBIDDEN] operator may run none of the"), text
    assert "replay:prod" in text, text
    # An environment with no history: it said "0 completed exchanges" and died the same way.
    text = _failure(
        "regression_replay.ipynb",
        client_sandbox,
        "prod-operator",
        tmp_path / "b",
        {"source_environment": "qa"},
    )
    assert text.startswith("LookupError: no completed exchange recorded in 'qa'") and "prod" in text, text


def test_regression_replay_refuses_a_limit_of_nothing_in_words(client_sandbox: Any, tmp_path: Path) -> None:
    # limit=0 asked for no exchange, found none, and stopped with "no completed exchange recorded
    # in 'prod'", which is not true: prod has history.
    text = _failure("regression_replay.ipynb", client_sandbox, "prod-operator", tmp_path, {"limit": 0})
    assert text.startswith("ValueError: limit=0: give the number of exchanges to replay"), text


def test_regression_replay_of_an_environment_onto_itself_names_no_new_version(
    client_sandbox: Any, tmp_path: Path
) -> None:
    # Staging replayed on staging (v2 on v2) said "the new version gives the same results":
    # there is no new version; it names the two environments it compared.
    nb, _ = _run(
        "regression_replay.ipynb", client_sandbox, "operator", tmp_path,
        {"source_environment": "staging", "target_environment": "staging", "limit": 2},
    )  # fmt: skip
    text = _stream(nb)
    assert "no exchange changed: staging gives the same results as staging on this history" in text, text
    assert "new version" not in text


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        # Parameters that stop each notebook right after it says who it is connected as.
        ("regression_replay.ipynb", {"limit": 0}),
        ("explore_what_if.ipynb", {"exchange_id": "ID-no-such-exchange"}),
        ("reproduce_bug.ipynb", {"exchange_id": "ID-no-such-exchange"}),
        ("compliance_proof.ipynb", {"source_exchange_id": "ID-no-such-exchange"}),
    ],
)
def test_a_token_login_is_not_said_to_be_user_none(
    client_sandbox: Any, tmp_path: Path, name: str, parameters: dict[str, Any]
) -> None:
    # With MOAT_TOKEN (README: credentials from MOAT_TOKEN work as well) the first output said
    # "http://... as None": the client knows no user name for a token.
    from moat_nb.client import connect

    platform = connect(client_sandbox.url, username="operator", password="operator")
    token = platform.session.access_token
    platform.close()
    with pytest.raises(Exception, match="PapermillExecutionError|Exception encountered"):
        report.run_notebook(
            NOTEBOOKS / name,
            tmp_path / name,
            parameters,
            env={"MOAT_URL": client_sandbox.url, "MOAT_TOKEN": token},
            cwd=tmp_path,
            timeout=240,
        )
    first = _stream(nbformat.read(tmp_path / name, as_version=4)).splitlines()[0]
    assert first in (
        f"{client_sandbox.url} with the token in MOAT_TOKEN",
        f"platform {client_sandbox.url}, the token in MOAT_TOKEN",  # compliance_proof's wording
    ), first


def test_an_exchange_id_that_does_not_fit_is_named_in_words(client_sandbox: Any, tmp_path: Path) -> None:
    # A mistyped id said "no completed order in staging: start the sandbox with more history" and
    # "no failed exchange ... about 5 % of recorded exchanges fail"; a completed exchange given to
    # reproduce_bug went through as a "failure" ("None: None", "no payload fix for this failure").
    missing = {"exchange_id": "ID-no-such-exchange"}
    for name in ("explore_what_if.ipynb", "reproduce_bug.ipynb"):
        text = _failure(name, client_sandbox, "operator", tmp_path / name, missing)
        assert text.startswith("LookupError: no recorded exchange 'ID-no-such-exchange'"), text
    from moat_nb.client import connect

    platform = connect(client_sandbox.url, username="operator", password="operator")
    try:
        hits = platform.executions(environment="dev", status="COMPLETED", is_replay=False, limit=1)
        exchange = hits.to_pandas()["exchange_id"].iloc[0]
    finally:
        platform.close()
    text = _failure(
        "reproduce_bug.ipynb", client_sandbox, "operator", tmp_path / "c", {"exchange_id": exchange}
    )
    assert text == (
        f"ValueError: exchange {exchange} is COMPLETED, not FAILED: there is no failure to reproduce; "
        "leave exchange_id empty to list the failed exchanges"
    )
