"""moat_nb.errors: the hierarchy its docstring draws, and what ``str()`` tells a person."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from moat_nb import errors
from moat_nb.client import error_from_response
from moat_nb.errors import ApiError, MoatError, NotFound, PermissionDenied, ValidationError


def _drawn_tree() -> dict[str, str]:
    """{class name: parent name} as the module docstring draws it."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^(\s*)(?:[│ ]*[├└]── )?([A-Z][A-Za-z]+)\s", line)
        if not match or not hasattr(errors, match.group(2)):
            continue
        depth = len(line) - len(line.lstrip(" │├└─")) if "──" in line else 0
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[match.group(2)] = stack[-1][1]
        stack.append((depth, match.group(2)))
    return parents


def test_the_docstring_draws_every_error_class_under_its_real_parent() -> None:
    drawn = _drawn_tree()
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, MoatError) and cls is not MoatError
    }
    assert set(drawn) == set(classes), "a class is missing from the drawing, or drawn but gone"
    for name, cls in classes.items():
        moat_bases = [b.__name__ for b in cls.__bases__ if issubclass(b, MoatError)]
        assert moat_bases == [drawn[name]], f"{name} is drawn under {drawn[name]}, derives from {moat_bases}"


def test_an_error_refused_before_sending_does_not_claim_an_http_status() -> None:
    # A check on this side (a bad filter, a bad timeout, the sandbox's bind check) never reached
    # the platform: "HTTP 400" would say the platform refused it.
    local = ValidationError("limit must be an int, not '5'", code="VALIDATION", hint="pass limit=5")
    assert str(local) == "[VALIDATION] limit must be an int, not '5' — pass limit=5"
    assert local.status == 400 and not local.answered  # the class's status stays for callers


def test_an_answered_error_names_the_status_the_platform_gave() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:1/api/v1/replays")
    response = httpx.Response(
        403,
        json={"error": "FORBIDDEN", "message": "needs replay:prod", "details": {"missing": ["replay:prod"]}},
        request=request,
    )
    err = error_from_response(response)
    assert isinstance(err, PermissionDenied) and err.answered
    assert str(err).startswith(
        "HTTP 403 [FORBIDDEN] needs replay:prod — ask an administrator to grant replay:prod"
    )


@pytest.mark.parametrize("cls", [ApiError, NotFound, ValidationError, PermissionDenied])
def test_an_explicit_status_is_an_answer_and_overrides_the_class_default(cls: type[ApiError]) -> None:
    err = cls("gone", status=410)
    assert err.answered and err.status == 410
    assert str(err).startswith("HTTP 410 [")


def _texts_outside_docstrings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_message_or_hint_sends_a_user_to_the_design_document() -> None:
    # DESIGN.md lives in the developers' shared folder, not in the package or the repository: a
    # hint naming "DESIGN.md section 6" pointed users at a text they cannot read (README
    # walk-through finding). Docstrings and comments may cite it; what users read may not.
    root = Path(errors.__file__).parent
    found = [
        f"{path.relative_to(root.parent)}:{line}"
        for path in sorted(root.rglob("*.py"))
        for line, text in _texts_outside_docstrings(ast.parse(path.read_text(encoding="utf-8")))
        if "DESIGN.md" in text
    ]
    assert found == []


def test_ipython_shows_a_moat_error_as_its_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    err = ValidationError("limit must be an int, not '5'", code="VALIDATION", hint="pass limit=5")
    assert err._render_traceback_() == [
        "ValidationError: [VALIDATION] limit must be an int, not '5' — pass limit=5"
    ]
    monkeypatch.setenv("MOAT_DEBUG", "1")
    try:
        raise err
    except ValidationError as raised:
        lines = raised._render_traceback_()
    assert lines[0].startswith("Traceback") and any("test_errors.py" in line for line in lines)


@pytest.mark.slow
def test_a_notebook_cell_that_is_refused_shows_one_line_not_the_clients_frames(tmp_path: Path) -> None:
    # A refusal in a notebook (BAD_JSON, FORBIDDEN, AGENT_UNAVAILABLE ...) printed 20-40 lines of
    # frames through client.py above the message (notebook walk-through finding); a bug that is
    # not a MoatError keeps its traceback.
    import nbformat
    from papermill.exceptions import PapermillExecutionError

    from moat_nb import report

    nb = nbformat.v4.new_notebook()
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "from moat_nb import connect\n"
            "connect('http://127.0.0.1:9', username='u', password='p', timeout=0)"
        )
    )
    source = tmp_path / "refused.ipynb"
    nbformat.write(nb, source)
    with pytest.raises(PapermillExecutionError):
        report.run_notebook(source, tmp_path / "out.ipynb", cwd=tmp_path, timeout=60)
    (cell,) = [c for c in nbformat.read(tmp_path / "out.ipynb", as_version=4).cells if c.cell_type == "code"]
    (output,) = cell.outputs
    assert output["output_type"] == "error" and output["ename"] == "ValidationError"
    assert len(output["traceback"]) == 1 and "timeout" in output["traceback"][0]
