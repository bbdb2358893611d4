"""The ``moat-nb`` command line: ``routes check`` and ``routes run``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from moat_nb.cli import main

ROUTES = Path(__file__).parent / "sandbox" / "camel" / "routes"
SHOP = ROUTES / "shop"

ECHO = """
- route:
    id: echo
    from:
      uri: direct:echo
      steps:
        - setHeader: {name: seen, simple: "${header.who}/${exchangeProperty.tenant}"}
        - bean: {ref: shout}
        - to: {id: call, uri: "http://svc/api"}
        - choice:
            when:
              - simple: "${body} == 'FAIL'"
                steps:
                  - throwException:
                      exceptionType: java.lang.IllegalStateException
                      message: "failed on purpose"
"""

BEANS = """
def shout(body):
    return body.upper()

def reply(exchange):
    return exchange.body + "!"

BEANS = {"shout": shout}
ENDPOINTS = {"http://svc/api": reply}
"""


@pytest.fixture
def echo(tmp_path: Path) -> tuple[Path, Path]:
    routes = tmp_path / "echo.yaml"
    routes.write_text(ECHO)
    beans = tmp_path / "beans.py"
    beans.write_text(BEANS)
    return routes, beans


def test_check_prints_one_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "check", str(SHOP)]) == 0
    out = capsys.readouterr().out
    assert out == "OK: 2 routes in 2 files: intake (10 processors), route1 (3 processors)\n"


def test_check_notes_unchecked_beans_and_checks_them_with_beans(
    echo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    routes, beans = echo
    assert main(["routes", "check", str(routes)]) == 0
    assert "bean references not checked" in capsys.readouterr().out
    assert main(["routes", "check", str(routes), "--beans", str(beans)]) == 0
    assert capsys.readouterr().out == "OK: 1 route in 1 file: echo (6 processors)\n"


def test_a_beans_file_whose_endpoint_simulator_is_not_a_function_is_refused(
    echo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # routes run --beans loaded it, then failed the exchange at the endpoint with a Python
    # "TypeError: 'str' object is not callable".
    routes, beans = echo
    beans.write_text(BEANS.replace('"http://svc/api": reply', '"http://svc/api": "static"'))
    assert main(["routes", "run", str(routes), "--route", "echo", "--beans", str(beans)]) == 1
    err = capsys.readouterr().err
    assert f"{beans}: ENDPOINTS['http://svc/api'] is a str, not a function" in err
    assert "Traceback" not in err


def test_a_beans_file_with_endpoints_and_no_beans_is_read_as_sandbox_app_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An app's beans.py with only ENDPOINTS works for sandbox --app; --beans refused it
    # ("has no BEANS dict"), so its simulated replies could not be tried from the command line.
    routes = tmp_path / "call.yaml"
    routes.write_text(
        "- from:\n    uri: direct:a\n    steps:\n      - to: {uri: 'http://svc/api', pattern: InOut}\n"
    )
    beans = tmp_path / "endpoints_only.py"
    beans.write_text('ENDPOINTS = {"http://svc/api": lambda exchange: exchange.body + "!"}\n')
    args = ["routes", "run", str(routes), "--route", "route1", "--beans", str(beans), "--body", "-"]
    monkeypatch.setattr("sys.stdin", io.StringIO("hi"))
    assert main([*args, "--trace"]) == 0
    assert "output body: hi!" in capsys.readouterr().out
    beans.write_text("X = 1\n")
    assert main(["routes", "check", str(routes), "--beans", str(beans)]) == 1
    assert "has no BEANS dict" in capsys.readouterr().err


def test_the_orders_sample_runs_from_the_command_line_with_its_beans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As the README shows it. A beans file defining a dataclass (the sample's do) failed to
    # import ("'NoneType' object has no attribute '__dict__'"): the module was not registered
    # while it ran; and the sample's beans.py imported relatively (found by review).
    orders = Path(__file__).parents[1] / "moat_nb" / "sandbox" / "apps" / "orders"
    beans = str(orders / "beans.py")
    assert main(["routes", "check", str(orders / "v2"), "--beans", beans]) == 0
    assert capsys.readouterr().out.startswith("OK: 2 routes in 2 files: enrich-customer")
    order = tmp_path / "order.json"
    lines = [{"sku": "SKU-100", "qty": 3, "unitPrice": 19.99}]
    order.write_text(
        json.dumps({"orderId": "ORD-1", "customerId": "C-1003", "currency": "EUR", "lines": lines})
    )
    args = [
        "routes",
        "run",
        str(orders / "v2"),
        "--route",
        "order-intake",
        "--body",
        str(order),
        "--beans",
        beans,
    ]
    assert main(args) == 0
    execution = json.loads(capsys.readouterr().out)
    assert execution["status"] == "COMPLETED" and json.loads(execution["outputBody"])["total"] == 59.97


@pytest.mark.parametrize("name", ["unknown-step.yaml", "bad-simple.yaml", "missing-direct.yaml"])
def test_check_fails_with_one_line_and_no_traceback(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = ROUTES / "bad" / name
    assert main(["routes", "check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"moat-nb: {path}:") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


def test_run_prints_the_execution_as_json(
    echo: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    routes, beans = echo
    monkeypatch.setattr("sys.stdin", io.StringIO("hello"))
    code = main(
        [
            "routes",
            "run",
            str(routes),
            "--route",
            "echo",
            "--body",
            "-",
            "--header",
            "who=ann",
            "--property",
            "tenant=t1",
            "--beans",
            str(beans),
            "--seed",
            "3",
        ]
    )
    assert code == 0
    wire = json.loads(capsys.readouterr().out)
    assert wire["status"] == "COMPLETED" and wire["routeId"] == "echo"
    assert wire["inputBody"] == "hello" and wire["outputBody"] == "HELLO!"
    assert wire["outputHeaders"]["seen"] == "ann/t1" and wire["inputProperties"] == {"tenant": "t1"}
    assert [n["processorId"] for n in wire["processors"]] == ["setHeader1", "bean1", "call", "choice1"]
    # Same seed, same ids.
    main(["routes", "run", str(routes), "--route", "echo", "--beans", str(beans), "--seed", "3"])
    again = json.loads(capsys.readouterr().out)
    assert again["exchangeId"] == wire["exchangeId"]


def test_run_trace_prints_a_processor_table_and_exit_1_on_failure(
    echo: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes, beans = echo
    body = tmp_path / "body.txt"
    body.write_text("fail")
    # shout() makes it FAIL, the endpoint simulator appends "!" — so the choice does not match...
    assert (
        main(
            [
                "routes",
                "run",
                str(routes),
                "--route",
                "echo",
                "--body",
                str(body),
                "--beans",
                str(beans),
                "--trace",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("echo  COMPLETED  exchange ")
    assert table[1].split() == ["seq", "processor", "type", "status", "ms", "body"]
    assert table[4].split()[:4] == ["3", "call", "to", "COMPLETED"] and "-> http://svc/api" in table[4]
    assert table[-1] == "output body: FAIL!"
    # ...but without the simulator the body stays FAIL and the exchange fails: exit code 1.
    beans.write_text(BEANS.replace('ENDPOINTS = {"http://svc/api": reply}', ""))
    assert (
        main(
            [
                "routes",
                "run",
                str(routes),
                "--route",
                "echo",
                "--body",
                str(body),
                "--beans",
                str(beans),
                "--trace",
            ]
        )
        == 1
    )
    table = capsys.readouterr().out.splitlines()
    assert (
        "  throwException1" in table[-3] and "java.lang.IllegalStateException: failed on purpose" in table[-3]
    )
    assert table[-2] == "FAILED: java.lang.IllegalStateException: failed on purpose"


def test_a_failure_without_a_message_prints_as_java_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # throwException with no message has a null message (ThrowExceptionProcessor): Java prints
    # the class alone, not "java.lang.IllegalStateException: None" nor a dangling colon.
    (tmp_path / "boom.yaml").write_text(
        '- route:\n    id: boom\n    from:\n      uri: "direct:boom"\n      steps:\n'
        "        - throwException:\n            exceptionType: java.lang.IllegalStateException\n"
    )
    body = tmp_path / "body.json"
    body.write_text("{}")
    assert main(["routes", "run", str(tmp_path), "--route", "boom", "--body", str(body), "--trace"]) == 1
    table = capsys.readouterr().out.splitlines()
    assert table[-3].endswith("  java.lang.IllegalStateException")  # the trace table's body cell
    assert table[-2] == "FAILED: java.lang.IllegalStateException"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--route", "nope"], "no route with id 'nope'"),
        (["--route", "echo", "--header", "novalue"], "is not K=V"),
        (["--route", "echo", "--body", "/does/not/exist"], "cannot read the body"),
        (["--route", "echo", "--beans", "/does/not/exist.py"], "does not exist"),
    ],
)
def test_run_reports_usage_mistakes_in_one_line(
    echo: tuple[Path, Path], args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    routes, _ = echo
    assert main(["routes", "run", str(routes), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "run", str(SHOP)]) == 2  # --route is required
    assert "--route" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["--help"]) == 0
    # --timeout 0 or -5 ran every cell without a limit (papermill reads them as none).
    proof = ["report", "compliance", "--source", "x", "--expect", "e.json", "--reason", "r", "--out", "o"]
    for bad in ("0", "-5", "ten"):
        assert main([*proof, "--timeout", bad]) == 2
        assert "not a whole number of seconds above 0" in capsys.readouterr().err


def test_a_file_error_from_any_command_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The safety net of main: an OSError no command turned into a MoatError is still one line.
    from moat_nb import report

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "out"))

    monkeypatch.setattr(report, "compliance_proof", denied)
    expect = tmp_path / "expect.json"
    expect.write_text('[{"path": "status", "equals": "COMPLETED"}]')
    argv = ["report", "compliance", "--source", "x", "--expect", str(expect), "--reason", "r"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err == f"moat-nb: [Errno 13] Permission denied: '{tmp_path / 'out'}'\n"


def test_a_reader_that_goes_away_gets_no_broken_pipe_message(tmp_path: Path) -> None:
    # `moat-nb routes run ... | head` ended with "moat-nb: [Errno 32] Broken pipe" (README walk):
    # the reader left on purpose, so nothing is said, on the way out either.
    import subprocess
    import sys

    orders = Path(__file__).parents[1] / "moat_nb" / "sandbox" / "apps" / "orders"
    order = tmp_path / "order.json"
    lines = [{"sku": f"SKU-{100 + i}", "qty": 1, "unitPrice": 1.5} for i in range(40)]
    order.write_text(
        json.dumps({"orderId": "ORD-1", "customerId": "C-1003", "currency": "EUR", "lines": lines})
    )
    args = ["routes", "run", str(orders / "v2"), "--route", "order-intake", "--body", str(order)]
    args += ["--beans", str(orders / "beans.py")]
    process = subprocess.Popen(
        [sys.executable, "-m", "moat_nb.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.read(1) == b"{"  # the JSON began: it writes more than a pipe holds
    process.stdout.close()  # as `head` does once it has its lines
    error = process.stderr.read().decode()
    assert process.wait(60) == 1
    assert error == "", error


def test_a_split_strategy_without_beans_is_noted_and_fails_as_camel_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Without --beans, `routes check` said a bare OK for a split whose aggregationStrategy is a
    # bean, and `routes run` failed it with "AttributeError: 'NoneType' object has no attribute
    # 'aggregate'" (left open by the Camel walk): noted, and NoSuchBeanException as for a bean.
    routes = tmp_path / "split.yaml"
    routes.write_text(
        """
- route:
    id: r
    from:
      uri: direct:r
      steps:
        - split:
            simple: "${body}"
            aggregationStrategy: myAgg
            steps:
              - log: "item"
"""
    )
    assert main(["routes", "check", str(routes)]) == 0
    assert "(bean references not checked: no --beans)" in capsys.readouterr().out
    body = tmp_path / "body.txt"
    body.write_text("a,b")
    assert main(["routes", "run", str(routes), "--route", "r", "--body", str(body)]) == 1
    execution = json.loads(capsys.readouterr().out)
    assert execution["errorType"] == "org.apache.camel.NoSuchBeanException"
    assert execution["errorMessage"] == "No bean could be found in the registry for: myAgg"
