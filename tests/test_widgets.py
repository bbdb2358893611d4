"""The widgets (moat_nb/widgets.py and the modules it gathers) against a real sandbox, no browser.

Each widget is built against a sandbox started here (its own history, so replays made here do
not disturb other test modules), then driven as a user would: filter values set, rows
selected, payload rows and body edited, buttons clicked (``button.click()``). The replay's
trace is followed by an asyncio task, as in a kernel, so those tests run inside
``asyncio.run``. What is asserted is what the user reads: the results, the diff, the receipt,
and the messages in words.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import random
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moat_nb.body_editor import changed_lines, check_json, editable_body
from moat_nb.client import Platform, connect
from moat_nb.editor import check_rows
from moat_nb.errors import ControlHeaderRejected, PermissionDenied, ValidationError
from moat_nb.model import Execution
from moat_nb.replay_views import receipt_records
from moat_nb.table import Column, DataTable, sort_records
from moat_nb.widgets import AuditBrowser, ExchangePicker, PayloadEditor, ReplayWorkbench
from moat_nb.workbench import _divergence_text

SEED = 7
PER_ENV = 12


def _text(html_value: str) -> str:
    """The words of an HTML message, as a reader sees them."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html_value)).replace("&#x27;", "'").strip()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from moat_nb.sandbox import start

    handle = start(data=tmp_path_factory.mktemp("widgets-sandbox"), per_env=PER_ENV, seed=SEED)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def users(sandbox: Any) -> Iterator[dict[str, Platform]]:
    platforms = {name: connect(sandbox.url, username=name, password=name) for name in
                 ("operator", "analyst", "admin", "prod-operator")}  # fmt: skip
    yield platforms
    for p in platforms.values():
        p.close()


def _first(platform: Platform, **filters: Any) -> Execution:
    hit = next(iter(platform.executions(limit=1, is_replay=False, **filters)))
    return platform.execution(hit.execution_id)


# --------------------------------------------------------------------------- the table


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "n": st.one_of(st.none(), st.integers(-50, 50), st.floats(-5, 5, allow_nan=False)),
                "s": st.one_of(st.none(), st.text(max_size=4)),
            }  # fmt: skip
        ),
        max_size=40,
    ),
    st.sampled_from(["n:asc", "n:desc", "s:asc", "s:desc"]),
    st.integers(1, 7),
)
def test_local_table_pages_are_the_sorted_records_cut_in_pages(
    records: list[dict[str, Any]], sort: str, size: int
) -> None:
    key, _, direction = sort.partition(":")
    ordered = sort_records(records, sort)
    present = [r[key] for r in ordered if r[key] is not None]
    # Missing values last, whatever the direction; the rest in order.
    assert all(r[key] is None for r in ordered[len(present) :])
    assert present == sorted(present, key=lambda v: v if key == "n" else str(v), reverse=direction == "desc")
    table = DataTable([Column("n", "N", kind="number"), Column("s", "S")], page_size=size)
    table.sort = sort
    table.set_records([{**r, "i": i} for i, r in enumerate(records)])
    shown = []
    for page in range(max(1, -(-len(records) // size))):
        table.page = page
        shown.extend(table.page_records.values())
    assert [r["i"] for r in shown] == [
        r["i"] for r in sort_records([{**r, "i": i} for i, r in enumerate(records)], sort)
    ]
    assert table.total == len(records)


# --------------------------------------------------------------------------- pure editor checks


def test_check_json_names_the_line_and_column_and_refuses_what_the_server_refuses() -> None:
    assert check_json('{"a": 1,\n "b": [1, 2]}') is None
    error = check_json('{\n  "a": 1\n  "b": 2\n}')
    assert error is not None and (error.line, error.column) == (3, 3) and "delimiter" in error.message
    dup = check_json('{\n "qty": 1,\n "qty": 2\n}')
    assert dup is not None and '"qty" appears twice' in dup.message and dup.line == 3
    nan = check_json('{"total": NaN}')
    assert nan is not None and "NaN" in nan.message and nan.column == 11
    assert check_json("   ") is not None


@settings(max_examples=200, deadline=None)
@given(
    mantissa=st.integers(1, 9),
    exponent=st.integers(309, 99_999),
    sign=st.sampled_from(["", "-"]),
    big=st.integers(2**53, 2**70),
)
def test_check_json_refuses_numbers_beyond_the_doubles_and_keeps_long_ints(
    mantissa: int, exponent: int, sign: str, big: int
) -> None:
    # json.loads reads 1e999 as infinity, which the platform refuses (review finding); a long
    # integer (a Java long id) is exact JSON and stays valid.
    literal = f"{sign}{mantissa}e{exponent}"
    error = check_json(f'{{\n  "id": {big},\n  "qty": {literal}\n}}')
    assert error is not None and (error.line, error.column) == (3, 10)
    assert literal in error.message and "beyond the largest number" in error.message
    assert check_json(f'{{"id": {big}, "qty": {sign}{mantissa}e307}}') is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "{", "}", '"x": 1,']), max_size=12), st.data())
def test_changed_lines_marks_exactly_what_is_not_kept(original: list[str], data: st.DataObject) -> None:
    text = data.draw(st.lists(st.sampled_from(["a", "b", "c", "{", "}", '"x": 2,', "new"]), max_size=12))
    changed, removed = changed_lines("\n".join(original), "\n".join(text))
    kept = [line for i, line in enumerate(text, 1) if i not in changed]
    # The unmarked lines are the original's, in order (a common subsequence) ...
    it = iter(original)
    assert all(line in it for line in kept)
    # ... and a longest one: no more lines are marked than must be.
    assert len(kept) == _lcs(tuple(original), tuple(text))
    # ... and no line is marked when nothing changed.
    if text == original:
        assert changed == [] and removed == []
    assert all(1 <= n <= max(1, len(text)) for n in changed)


def _lcs(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    @functools.cache
    def go(i: int, j: int) -> int:
        if i == len(a) or j == len(b):
            return 0
        return go(i + 1, j + 1) + 1 if a[i] == b[j] else max(go(i + 1, j), go(i, j + 1))

    return go(0, 0)


def test_editable_body_indents_json_and_keeps_text() -> None:
    text, mode = editable_body('{"orderId": "O-1", "lines": [{"qty": 2}]}')
    assert mode == "json" and text.splitlines()[1] == '  "orderId": "O-1",'
    assert editable_body("<order id='1'/>") == ("<order id='1'/>", "text")
    assert editable_body(None) == ("", "text")


def test_check_rows_refuses_control_headers_in_any_case_and_warns_about_redacted_secrets() -> None:
    problems = check_rows(
        "header",
        [("cAmelHttpUri", "http://elsewhere"), ("X-Ok", "1"), ("x-ok", "2"), ("", "v"),
         ("Authorization", "[REDACTED:0123456789abcdef]"), ("X-Bad", "a\r\nb")],
    )  # fmt: skip
    by_name = {(p.name, p.blocking): p.message for p in problems}
    assert "Camel control header" in by_name[("cAmelHttpUri", True)]
    assert "CVE-2025-27636" in by_name[("cAmelHttpUri", True)]
    assert "appears twice" in by_name[("x-ok", True)]
    assert "no name" in by_name[("", True)]
    assert "redaction marker" in by_name[("Authorization", False)]
    assert "CR, LF or NUL" in by_name[("X-Bad", True)]
    # Properties are not headers: no control-header rule there, names are case-sensitive.
    assert check_rows("property", [("CamelFoo", "1"), ("a", 1), ("A", 2)]) == []


# --------------------------------------------------------------------------- ExchangePicker


def test_picker_filters_sorts_pages_and_selects(users: dict[str, Platform]) -> None:
    platform = users["analyst"]
    picker = ExchangePicker(platform, page_size=5)
    assert picker.total == len(platform.executions(is_replay=False)) == 3 * PER_ENV
    assert len(picker.table.rows) == 5
    assert picker.table.rows[0]["start_time"] >= picker.table.rows[1]["start_time"]  # newest first

    env = next(iter(platform.executions(status="FAILED", is_replay=False, limit=1))).environment
    picker.set_filters(environment=env, status="FAILED")
    expected = len(platform.executions(environment=env, status="FAILED", is_replay=False))
    assert picker.total == expected and expected > 0
    assert {(r["environment"], r["status"]) for r in picker.records} == {(env, "FAILED")}
    assert all(r["error"] for r in picker.records)  # failed rows say why

    picker.set_filters(environment="", status="")
    picker.table.sort = "duration_ms:desc"
    durations = [r["duration_ms"] for r in picker.records]
    assert durations == sorted(durations, reverse=True)
    first_page = [r["execution_id"] for r in picker.records]
    picker.table.page = 1
    assert len(picker.records) == 5 and not set(first_page) & {r["execution_id"] for r in picker.records}
    assert max(r["duration_ms"] for r in picker.records) <= min(durations)

    seen: list[Any] = []
    picker.observe(lambda change: seen.append(change["new"]), names="value")
    picker.select_row(2)
    chosen = picker.value
    assert isinstance(chosen, Execution) and chosen.execution_id == picker.records[2]["execution_id"]
    assert chosen.processors and chosen.input_body  # the detail, not the search hit
    assert seen == [chosen]
    assert chosen.exchange_id in _text(picker.selection.value)


def test_picker_text_search_and_bad_time_are_shown_in_words(users: dict[str, Platform]) -> None:
    platform = users["analyst"]
    picker = ExchangePicker(platform, page_size=50)
    failed = next(r for r in picker.records if r["status"] == "FAILED")
    word = failed["error"].split(": ")[-1].split()[0]
    picker.set_filters(text=word)
    assert picker.records
    for r in picker.records:
        assert word.lower() in json.dumps(platform.execution(r["execution_id"]).to_wire()).lower()
    picker.select_row(0)
    picked = picker.value
    picker.set_filters(text="", time_range="custom", time_from="the day before yesterday")
    message = _text(picker.message.value)
    assert "Could not search the history" in message and "What to do:" in message and "RFC 3339" in message
    # The last answer's rows are not left under filters they do not match (lab walk); what
    # was picked stays picked.
    assert picker.records == [] and picker.table.rows == [] and picker.total == 0
    assert picker.value is picked is not None
    picker.set_filters(time_from="2000-01-01T00:00:00Z", time_to="2000-01-02T00:00:00Z")
    assert picker.message.value == "" and picker.records == [] and picker.total == 0


def test_picker_keeps_the_highlight_on_the_picked_exchange_when_opening_another_fails(
    users: dict[str, Platform],
) -> None:
    """Walk-through finding: a row that could not be opened (the platform gone, the execution
    deleted) stayed highlighted while the previous exchange stayed picked, in the editor and
    for Replay."""
    wb = ReplayWorkbench(users["operator"])
    wb.picker.set_filters(environment="dev")
    wb.picker.select_row(0)
    picked = wb.picker.value
    assert picked is not None
    wb.picker.select("no-such-execution")
    assert "Could not open the execution" in _text(wb.picker.message.value)
    assert wb.picker.value is picked and wb.editor.execution is picked
    assert wb.picker.table.selected == picked.execution_id
    fresh = ExchangePicker(users["operator"])
    fresh.select("no-such-execution")
    assert fresh.value is None and fresh.table.selected == ""


def test_picker_debounces_a_burst_of_filter_changes_into_one_search(users: dict[str, Platform]) -> None:
    async def scenario() -> None:
        picker = ExchangePicker(users["analyst"], page_size=50, debounce=0.15)
        before = picker.searches
        picker.environment.value = "staging"
        picker.status.value = "COMPLETED"
        for partial in ("O", "OR", "ORD"):
            picker.text.value = partial
        assert picker.searches == before  # nothing yet: the user is still typing
        await asyncio.sleep(0.4)
        assert picker.searches == before + 1
        assert picker.records and {(r["environment"], r["status"]) for r in picker.records} == {
            ("staging", "COMPLETED")
        }
        # Enter in a committed field (time range) searches at once.
        picker.time_range.value = "custom"
        await asyncio.sleep(0.3)
        n = picker.searches
        picker.time_from.value = "3650d"
        assert picker.searches == n + 1

    asyncio.run(scenario())


def _press_enter(field: widgets.Text) -> None:
    """What JupyterLab sends when Enter is pressed in a Text (ipywidgets 8's TextView: a custom
    message ``{"event": "submit"}`` on the widget's comm), through the widget's own handler."""
    message = {"content": {"data": {"method": "custom", "content": {"event": "submit"}}}, "buffers": []}
    field._handle_msg(message)


def test_enter_in_the_search_field_searches_at_once_and_only_once(users: dict[str, Platform]) -> None:
    """Lab walk: Enter in Search did nothing (the docstring said it searched at once); the
    0.3 s pause ran the search in its own time."""

    async def scenario() -> None:
        picker = ExchangePicker(users["analyst"], page_size=50, debounce=0.3)
        before = picker.searches
        picker.text.value = "ORD"  # typed: the search waits for the pause
        assert picker.searches == before
        _press_enter(picker.text)
        assert picker.searches == before + 1  # at once
        assert picker.filters()["text"] == "ORD" and not picker._debounced.pending
        await asyncio.sleep(0.5)
        assert picker.searches == before + 1  # the pause does not search a second time
        _press_enter(picker.text)  # the results already answer it: not asked again
        assert picker.searches == before + 1
        picker.text.value = ""
        await asyncio.sleep(0.5)  # the pause ran it first; Enter then asks nothing more
        assert picker.searches == before + 2
        _press_enter(picker.text)
        assert picker.searches == before + 2

    asyncio.run(scenario())


# --------------------------------------------------------------------------- PayloadEditor


def test_payload_editor_gives_only_the_changed_parts(users: dict[str, Platform]) -> None:
    original = _first(users["operator"], environment="dev", status="COMPLETED")
    editor = PayloadEditor(original)
    assert editor.modified_payload == {} and not editor.changed and editor.valid
    assert "Unmodified" in _text(editor.status.value)

    lines = editor.body.splitlines()
    qty = next(i for i, line in enumerate(lines) if '"qty"' in line)
    lines[qty] = re.sub(r'"qty": \d+', '"qty": 42', lines[qty])
    editor.body = "\n".join(lines)
    assert editor.body_editor.changed == [qty + 1]  # the line is marked, 1-based
    body = editor.modified_payload["body"]
    assert set(editor.modified_payload) == {"body"}
    assert json.loads(body)["lines"][0]["qty"] == 42 and "\n" not in body  # sent compact

    editor.rename_header("channel", "X-Channel")
    editor.properties.add_button.click()
    new = editor.properties.rows[-1]
    new.name_field.value, new.value_field.value = "promo", "SPRING"
    tenant = editor.properties.find("tenant")
    assert tenant is not None and "renamed" not in tenant.describe()
    payload = editor.modified_payload
    assert set(payload) == {"headers", "body", "properties"}
    assert "X-Channel" in payload["headers"] and "channel" not in payload["headers"]
    assert payload["properties"] == {**original.input_properties, "promo": "SPRING"}
    row = editor.headers.find("X-Channel")
    assert row is not None and "renamed from channel" in _text(row.state.value)
    assert "Modified: headers, properties, body" in _text(editor.status.value)

    editor.remove_header("X-Channel")
    assert "X-Channel" not in editor.modified_payload["headers"]
    editor.reset_button.click()
    assert editor.modified_payload == {} and editor.body_editor.changed == []


def test_a_removed_header_is_listed_and_can_be_restored(users: dict[str, Platform]) -> None:
    """Lab walk: a removed header vanished without a trace; the editor said "Modified: headers"
    and nothing showed which header the replay would lack, nor how to get it back short of
    Reset (which drops every other edit too)."""
    editor = PayloadEditor(_first(users["operator"], environment="dev", status="COMPLETED"))
    editor.body = re.sub(r'"qty": \d+', '"qty": 7', editor.body, count=1)
    editor.remove_header("channel")
    editor.remove_header("Authorization")
    assert editor.headers.removed == ["channel", "Authorization"]
    words = " ".join(
        _text(w.value) if isinstance(w, widgets.HTML) else w.description
        for w in editor.headers.removed_box.children
    )
    assert "Removed, not sent with the replay (2)" in words
    assert "Restore channel" in words and "Restore Authorization" in words
    restore = next(
        w for w in editor.headers.removed_box.children if getattr(w, "description", "") == "Restore channel"
    )
    assert "web" in restore.tooltip
    secret = editor.headers.removed_box.children[-1]
    assert "a secret" in secret.tooltip and "REDACTED" not in secret.tooltip.upper()
    # A header typed in again under the same name is no longer "removed".
    editor.set_header("Authorization", "Bearer typed-again")
    assert editor.headers.removed == ["channel"]
    restore.click()
    assert editor.headers.removed == [] and editor.headers.removed_box.children == ()
    assert editor.headers.find("channel").value == "web"
    # The body edit survived; the headers differ only by the retyped Authorization.
    assert editor.modified_payload["body"] and editor.modified_payload["headers"]["channel"] == "web"
    with pytest.raises(ValidationError, match="not a removed header"):
        editor.headers.restore("channel")


def test_payload_editor_refuses_control_headers_and_bad_json_inline(users: dict[str, Platform]) -> None:
    editor = PayloadEditor(_first(users["operator"], environment="dev", status="COMPLETED"))
    editor.headers.add_button.click()
    row = editor.headers.rows[-1]
    row.name_field.value, row.value_field.value = "cAmelHttpUri", "http://attacker.example"
    assert not editor.valid
    words = _text(row.message.value)
    assert "Refused:" in words and "Camel control header" in words and "Remove or rename it" in words
    assert "moat-kv-invalid" in row.line._dom_classes
    with pytest.raises(ControlHeaderRejected, match="cAmelHttpUri"):
        _ = editor.modified_payload
    row.name_field.value = "X-Target"  # renamed: accepted
    assert editor.valid and editor.modified_payload["headers"]["X-Target"] == "http://attacker.example"

    editor.reset()
    editor.body = editor.body.replace('"currency": "EUR",', '"currency": "EUR"')
    assert editor.body_editor.error is not None
    assert any("not valid JSON (line" in e for e in editor.errors)
    with pytest.raises(ValidationError, match="not valid JSON"):
        _ = editor.modified_payload
    editor.send_raw.value = True  # a malformed body on purpose
    assert editor.valid and '"currency": "EUR"\n' in editor.modified_payload["body"]


def test_the_body_editor_says_an_invalid_body_is_sent_as_typed_when_the_box_is_ticked(
    users: dict[str, Platform],
) -> None:
    """Lab walk: with 'Send the body as typed' ticked, the body editor still said "Fix it before
    replaying" under an invalid JSON body, which Replay then sent as typed."""
    editor = PayloadEditor(_first(users["operator"], environment="dev", status="COMPLETED"))
    body = editor.body_editor
    editor.body = editor.body.replace('"currency": "EUR",', '"currency": "EUR"')
    assert body.problem is not None and not body.as_typed
    assert body.todo.startswith("Fix it before replaying") and "Send the body as typed" in body.todo
    editor.send_raw.value = True
    assert body.as_typed and editor.valid
    assert "Fix it" not in body.todo and body.todo.startswith("It is sent as typed")
    assert "Modified: body (as typed: not valid JSON)." in _text(editor.status.value)
    editor.send_raw.value = False
    assert not body.as_typed and body.todo.startswith("Fix it before replaying")
    editor.send_raw.value = True
    editor.reset()  # the box is unticked with every load: the words follow
    assert not editor.send_raw.value and not body.as_typed and body.todo.startswith("Fix it")


def test_an_invalid_body_is_said_in_full_once_where_it_is_fixed(users: dict[str, Platform]) -> None:
    """Lab walk: an invalid JSON body's error read three times (the body editor, the payload
    status, the Replay gate). The body editor says it in full; the others point there."""
    wb = ReplayWorkbench(users["operator"])
    wb.picker.set_filters(environment="dev", status="COMPLETED")
    wb.picker.select_row(0)
    wb.reason.value = "a broken body"
    editor = wb.editor
    editor.body = editor.body.replace('"currency": "EUR",', '"currency": "EUR"')
    detail = str(editor.body_editor.error)  # "line 4, column 3: Expecting ',' delimiter"
    assert detail.startswith("line ")
    status, gate = _text(editor.status.value), _text(wb.gate.value)
    assert status == "This payload cannot be replayed yet: the body is not valid JSON (see the body editor)"
    assert gate.startswith(
        "The payload cannot be replayed yet: The body is not valid JSON (see the body editor). What to do:"
    )
    for words in (status, gate):
        assert detail not in words and "Expecting" not in words and "tick" not in words
    assert wb.replay_button.disabled
    # From code, without the editor on screen, the error still says all of it.
    with pytest.raises(ValidationError, match="Expecting ',' delimiter"):
        _ = editor.modified_payload

    # What only the kernel refuses (JSON.parse takes a duplicate key) reaches the browser, with
    # the text it is about, so the editor can say it: the other two only point there.
    editor.body = '{"sku": "A-1",\n "sku": "B-2"}'
    assert editor.body_editor.problem == {
        "message": 'the key "sku" appears twice in one object',
        "line": 2,
        "column": 2,
        "text": editor.body,
    }
    assert "appears twice" not in _text(editor.status.value) + _text(wb.gate.value)
    assert "see the body editor" in _text(wb.gate.value)
    # A refused header row: said under its row, named short in the status and the gate.
    editor.reset()
    editor.set_header("CamelHttpUri", "http://elsewhere.example")
    gate = _text(wb.gate.value)
    assert "The header 'CamelHttpUri' is refused (see its row)." in gate and "CVE" not in gate
    assert "CVE" not in _text(editor.status.value)
    assert "CVE" in _text(editor.headers.find("CamelHttpUri").message.value)


def test_payload_editor_masks_secrets_and_keeps_value_types(users: dict[str, Platform]) -> None:
    import ipywidgets

    original = _first(users["operator"], environment="dev", status="COMPLETED")
    editor = PayloadEditor(original)
    auth = editor.headers.find("authorization")
    assert auth is not None and isinstance(auth.value_field, ipywidgets.Password)
    assert auth.value_field.value.startswith("[REDACTED:")  # the platform never sends the secret
    plain = editor.headers.find("channel")
    assert plain is not None and isinstance(plain.value_field, ipywidgets.Text)
    plain.name_field.value = "X-Api-Token"  # renamed to a secret name: masked from now on
    assert isinstance(plain.value_field, ipywidgets.Password)
    assert any("redaction marker" in w for w in editor.warnings)  # modified headers carry the marker
    editor.reset()
    editor.set_property("limits", {"max": 3})
    editor.set_property("limits", '{"max": 4}')
    assert editor.modified_payload["properties"]["limits"] == '{"max": 4}'  # a new row holds text
    with pytest.raises(ValidationError, match="no header"):
        editor.remove_header("nope")
    with pytest.raises(ValidationError, match="search hit"):
        PayloadEditor(original.summary())


def test_payload_editor_takes_long_ints_and_refuses_non_finite_numbers_inline() -> None:
    # Compared through canonical JSON (RFC 8785), a long id or a NaN raised rfc8785's own errors
    # out of the widget (review finding); compared structurally, a long id is itself.
    long_id = 2**53 + 1
    original = Execution.from_wire(
        {
            "executionId": "e-1",
            "exchangeId": "x-1",
            "routeId": "order-intake",
            "environment": "dev",
            "status": "COMPLETED",
            "startTime": "2026-01-01T00:00:00.000Z",
            "inputBody": json.dumps({"orderId": long_id, "qty": 1}),
            "inputHeaders": {"Content-Type": "application/json"},
            "inputProperties": {"count": 3, "ref": long_id},
            "processors": [],
        }
    )
    editor = PayloadEditor(original)
    assert editor.valid and not editor.changed and editor.modified_payload == {}
    editor.set_property("ref", long_id + 1)  # one more than the original: a change, exactly
    assert editor.modified_payload["properties"]["ref"] == long_id + 1
    editor.reset()
    editor.body = editor.body.replace('"qty": 1', '"qty": 1e999')
    assert any("1e999 is beyond the largest number JSON carries" in e for e in editor.errors)
    with pytest.raises(ValidationError, match="not valid JSON"):
        _ = editor.modified_payload
    for typed in (math.nan, "NaN", "-Infinity", "1E400"):
        editor.reset()
        editor.set_property("count", typed)
        row = editor.properties.find("count")
        assert row is not None and "moat-kv-invalid" in row.line._dom_classes
        assert "is not a JSON number" in _text(row.message.value) and "Type a finite number" in (
            " ".join(editor.errors)
        )
        with pytest.raises(ValidationError):
            _ = editor.modified_payload


# --------------------------------------------------------------------------- ReplayWorkbench


def test_workbench_opens_an_exchange_whose_body_holds_a_long_id(users: dict[str, Platform]) -> None:
    # The platform takes a Java long id in a body; its replay is an exchange one can pick.
    source = _first(users["operator"], environment="dev", status="COMPLETED")
    body = json.loads(source.input_body or "{}")
    body["customerRef"] = 2**53 + 1
    replayed = users["operator"].replay(source, body=body, reason="widget test: long id").wait()
    execution = users["operator"].execution(replayed.execution_id)
    wb = ReplayWorkbench(users["operator"])
    wb.picker.value = execution
    assert wb.editor.execution is execution and not wb.editor.changed and wb.editor.valid
    assert str(2**53 + 1) in wb.editor.body and wb.message.value == ""


def test_workbench_replays_a_what_if_and_shows_trace_diff_lineage_and_receipt(
    users: dict[str, Platform],
) -> None:
    async def scenario() -> ReplayWorkbench:
        wb = ReplayWorkbench(users["operator"])
        assert wb.replay_button.disabled and "Pick an exchange first" in _text(wb.gate.value)
        wb.picker.set_filters(environment="dev", status="COMPLETED")
        wb.picker.select_row(0)
        assert wb.editor.execution is wb.picker.value
        assert "Write a reason" in _text(wb.gate.value) and wb.replay_button.disabled
        wb.editor.body = re.sub(r'"qty": \d+', '"qty": 30', wb.editor.body, count=1)
        wb.reason.value = "what if the first line had 30 items"
        assert not wb.replay_button.disabled and wb.gate.value == ""

        wb.refresh = 0.0  # draw at every event, to see the table fill while it runs
        fills: list[tuple[int, bool]] = []
        wb.trace_table.observe(lambda c: fills.append((len(c["new"]), wb.running)), names="rows")
        wb.replay_button.click()
        assert wb.running and wb.replay_button.disabled and "A replay is running" in _text(wb.gate.value)
        await wb.wait()
        assert not wb.running and not wb.replay_button.disabled
        return wb, fills

    wb, fills = asyncio.run(scenario())
    result = wb.result
    assert result is not None and result.status == "COMPLETED" and result.is_replay
    assert json.loads(result.input_body)["lines"][0]["qty"] == 30  # the edited body ran
    # The table filled step by step while the replay ran, then holds the whole trace.
    growing = [n for n, running in fills if running and n]
    assert len(growing) > 3 and growing == sorted(growing)
    assert len(wb.trace_table.rows) == result.processor_count == len(wb.timeline.bars)
    assert "Replay completed" in _text(wb.message.value)
    # Diff: calibrated noise, the divergence the edit caused, in the table and the figures.
    assert wb.diff is not None and wb.tabs.selected_index == 1
    first = wb.diff.first_divergence
    assert first is not None and first.processor_id not in ("set-processed-at", "set-tracking-id")
    diff_words = _text(wb.diff_box.children[0].value)
    assert f"First divergence at {first.label}" in diff_words and "Noise calibrated" in diff_words
    assert {"timeline", "heatmap", "route graph", "field lineage"} <= set(wb.figures)
    assert all(f.data for f in wb.figures.values())
    bundle = wb.diff_box.children[1].outputs[0]["data"]["application/vnd.plotly.v1+json"]
    assert (
        bundle["data"]
        and bundle["layout"]["title"]["text"]
        and bundle["layout"]["paper_bgcolor"] == "rgba(0,0,0,0)"
    )
    table = wb.diff_box.children[-1]
    assert table.rows and not any("noise" in r.get("_class", "") for r in table.rows)
    assert any("moat-row-divergent" in r.get("_class", "") for r in table.rows)
    # Lineage of the replay and the audit receipt of this replay.
    assert wb.lineage is not None and len(wb.lineage) > 0
    # The edit itself is a change: the start payload set the quantity, not a processor.
    started = wb.lineage.who_changed("body:$.lines[0].qty")
    assert [(r.processor_id, r.after) for r in started][:1] == [("(start)", 30)]
    assert [e["action"] for e in wb.receipt] == ["REPLAY_REQUESTED", "REPLAY_STARTED", "REPLAY_COMPLETED"]
    assert all(e["target"]["replayId"] == wb.replay_id for e in wb.receipt)
    assert "recomputes" in _text(wb.receipt_box.children[0].value)


def test_workbench_runs_without_an_event_loop_too(users: dict[str, Platform]) -> None:
    wb = ReplayWorkbench(users["operator"])
    wb.calibrate.value = False
    wb.picker.set_filters(environment="staging")
    wb.picker.select_row(0)
    wb.editor.body = re.sub(r'"qty": \d+', '"qty": -3', wb.editor.body, count=1)  # a negative quantity
    wb.reason.value = "what does a negative quantity do?"
    wb.replay_button.click()  # no running loop: followed right here, to the end
    assert not wb.running and wb.result is not None and wb.result.status == "FAILED"
    assert "InvalidQuantity" in (wb.result.error_type or "")
    assert "the route ended FAILED" in _text(wb.message.value)
    assert len(wb.trace_table.rows) == wb.result.processor_count
    assert wb.diff is not None and "Noise calibrated" not in _text(wb.diff_box.children[0].value)


def test_a_route_that_failed_says_its_error_and_where_the_replay_diverged(users: dict[str, Platform]) -> None:
    """Lab walk: the headline of a replay whose route failed said only "the route ended FAILED"
    (the exception was in the Diff tab's fine print), and the divergence line read
    "error:type:  → com.acme..." for a field the original did not have."""
    wb = ReplayWorkbench(users["operator"])
    wb.calibrate.value = False
    wb.picker.set_filters(environment="staging", status="COMPLETED")
    wb.picker.select_row(0)
    wb.editor.body = re.sub(r'"qty": \d+', '"qty": -3', wb.editor.body, count=1)
    wb.reason.value = "what does a negative quantity do?"
    wb.replay_button.click()
    assert wb.result is not None and wb.result.status == "FAILED"
    words = _text(wb.message.value)
    assert "the route ended FAILED with InvalidQuantityException:" in words, words
    assert wb.result.error_message.rstrip(".")[:40] in words
    assert "read the Trace tab (the processors that failed are marked)" in words
    # The divergence line of the Diff tab, for the fields only the replay has.
    added = [r for r in wb.diff.rows if r.kind == "added" and r.field != "route"]
    assert added and all(" (absent) → " in _divergence_text(r) for r in added)
    error_type = next(r for r in added if r.path == "error:type")
    assert _divergence_text(error_type).startswith("error:type: (absent) → com.acme.orders.InvalidQuantity")


def test_picking_another_exchange_labels_the_last_results_as_not_its_own(users: dict[str, Platform]) -> None:
    """Lab walk: after a replay, picking another exchange left "Replay completed: the route
    ended FAILED" and the Diff tab's "First divergence" under the new pick, as if they were its
    results. They stay, labelled with the exchange they are of; picking it again drops the
    label."""
    wb = ReplayWorkbench(users["operator"])
    wb.calibrate.value = False
    wb.picker.set_filters(environment="dev", status="COMPLETED")
    wb.picker.select_row(0)
    source = wb.picker.value
    wb.reason.value = "as recorded"
    wb.replay_button.click()
    assert wb.result is not None
    done = _text(wb.message.value)
    assert "Replay completed" in done and "not of" not in done
    wb.picker.select_row(1)
    other = wb.picker.value
    assert other.exchange_id != source.exchange_id
    words = _text(wb.message.value)
    assert f"The results below are of replay {wb.replay_id}, of exchange {source.exchange_id}." in words
    assert f"They are not of the exchange now picked ({other.exchange_id})." in words
    assert "Replay completed" in words  # the outcome is kept, under the label
    assert wb.diff is not None and wb.diff_box.children  # nothing is lost
    wb.picker.select(source.execution_id)
    assert _text(wb.message.value) == done
    # A replay of the exchange now picked: its own results, no label.
    wb.picker.select_row(1)
    wb.reason.value = "as recorded, the other one"  # the first pick's reason is not carried over
    wb.replay_button.click()
    assert "not of" not in _text(wb.message.value) and wb.result.input_body == other.input_body


def test_a_new_pick_clears_the_reason_written_for_another_exchange(users: dict[str, Platform]) -> None:
    """Lab walk: the Reason kept the previous what-if's text after another exchange was picked,
    so a reason written for one replay could go into the audit log of another's."""
    wb = ReplayWorkbench(users["operator"])
    wb.calibrate.value = False
    wb.reason.value = "written before any pick"
    wb.picker.set_filters(environment="dev", status="COMPLETED")
    wb.picker.select_row(0)
    first = wb.picker.value
    assert wb.reason.value == "written before any pick"  # kept for the first pick
    assert not wb.replay_button.disabled
    wb.reason.value = "what if the first one had 30 items"
    wb.picker.select(first.execution_id)  # the same exchange again: kept
    assert wb.reason.value == "what if the first one had 30 items"

    wb.picker.select_row(1)
    second = wb.picker.value
    assert second.exchange_id != first.exchange_id
    assert wb.reason.value == "" and wb.replay_button.disabled
    gate = _text(wb.gate.value)
    assert "Write a reason." in gate
    assert f"The reason written for exchange {first.exchange_id} was cleared when you picked this one" in gate

    wb.picker.select(first.execution_id)  # a mis-click undone: its reason comes back
    assert wb.reason.value == "what if the first one had 30 items" and not wb.replay_button.disabled
    wb.picker.select_row(1)
    wb.reason.value = "the second one, as recorded"
    assert "was cleared" not in _text(wb.gate.value) and not wb.replay_button.disabled
    wb.replay_button.click()
    assert wb.result is not None
    requested = [e for e in wb.receipt if e.get("action") == "REPLAY_REQUESTED"]
    assert [e["detail"]["reason"] for e in requested] == ["the second one, as recorded"]


def test_a_second_replay_does_not_show_the_first_ones_results(users: dict[str, Platform]) -> None:
    """Walk-through finding: the progress line said "52 processors so far" after the replay had
    ended, and a second replay's Diff, Lineage and Audit receipt tabs showed the first one's
    results while it ran (and for good, had it ended without a result)."""

    async def scenario() -> None:
        wb = ReplayWorkbench(users["operator"])
        wb.calibrate.value = False
        wb.picker.set_filters(environment="dev", status="COMPLETED")
        wb.picker.select_row(0)
        wb.reason.value = "first"
        wb.replay_button.click()
        await wb.wait()
        first = wb.replay_id
        assert first in _text(wb.receipt_box.children[0].value)
        assert "so far" not in _text(wb.progress.value) and "status COMPLETED" in _text(wb.progress.value)
        wb.reason.value = "second"
        wb.replay_button.click()
        assert wb.running and wb.replay_id != first
        for box in (wb.diff_box, wb.lineage_box, wb.receipt_box):
            words = " ".join(
                _text(c.value) for c in box.children if isinstance(getattr(c, "value", None), str)
            )
            assert "shows when a replay ends" in words and first not in words, words
        assert wb.figures == {}
        await wb.wait()
        assert wb.replay_id in _text(wb.receipt_box.children[0].value)

    asyncio.run(scenario())


def test_stop_following_leaves_the_running_state(users: dict[str, Platform]) -> None:
    """Walk-through finding: a cancelled follow task (wb.task.cancel()) left the workbench
    "running" for good, its Replay button disabled; there was no way to stop following."""

    async def scenario() -> None:
        wb = ReplayWorkbench(users["operator"])
        wb.calibrate.value = False
        wb.picker.set_filters(environment="dev", status="COMPLETED")
        wb.picker.select_row(0)
        wb.reason.value = "stop following"
        assert wb.stop_button.layout.display == "none"
        wb.replay_button.click()
        assert wb.running and wb.stop_button.layout.display != "none"
        wb.stop_button.click()
        await wb.wait()  # the task's cancellation is not raised into the caller's cell
        assert not wb.running and not wb.replay_button.disabled and wb.gate.value == ""
        assert wb.stop_button.layout.display == "none"
        words = _text(wb.message.value)
        assert f"Stopped following replay {wb.replay_id}" in words and "not cancelled" in words
        assert "so far" not in _text(wb.progress.value)
        wb.replay_button.click()  # and Replay works again
        await wb.wait()
        assert wb.result is not None and "Replay completed" in _text(wb.message.value)

    asyncio.run(scenario())


def test_a_lost_platform_is_said_while_the_trace_reader_waits(
    tmp_path: Path, sandbox_processes: Any, paced_app: Any
) -> None:
    """Walk-through finding: the sandbox stopped mid-replay, the workbench said "A replay is
    running" and nothing else for the reader's ~165 s of reconnects, with no way out."""
    process = sandbox_processes.start(tmp_path / "data", paced_app(4000), per_env=2)

    async def scenario() -> None:
        with connect(sandbox_processes.url, username="operator", password="operator") as platform:
            wb = ReplayWorkbench(platform)
            wb.calibrate.value = False
            wb.picker.set_filters(environment="dev")
            wb.picker.select_row(0)
            wb.reason.value = "lose the platform"
            wb.replay_button.click()
            await asyncio.sleep(1.0)  # inside the route's delay step
            process.kill()
            for _ in range(100):
                await asyncio.sleep(0.1)
                if "does not answer" in _text(wb.progress.value):
                    break
            words = _text(wb.progress.value)
            assert "the platform does not answer: reconnecting (1 of 8)" in words, words
            assert "Stop following" in words and wb.running
            # The click comes as a kernel message, from outside the loop's own callbacks: the
            # reader sleeps in its back-off (3 s, 6 s, ...) and must stop now, not when it wakes.
            clicked = threading.Timer(0.2, wb.stop_button.click)
            started = time.monotonic()
            clicked.start()
            assert wb.task is not None
            await asyncio.wait({wb.task}, timeout=10)
            assert time.monotonic() - started < 1.5, time.monotonic() - started
            assert not wb.running and "does not answer" not in _text(wb.progress.value)
            assert "Stopped following" in _text(wb.message.value)

    asyncio.run(scenario())


def test_workbench_words_before_a_pick_have_no_typos(users: dict[str, Platform]) -> None:
    """Walk-through findings: an empty editor said "No propertys.", and the Replay button's
    tooltip doubled a title's full stop ("Pick an exchange first.. Click a row ...")."""
    wb = ReplayWorkbench(users["operator"])
    assert _text(wb.editor.properties.empty.value) == "No properties."
    assert _text(wb.editor.headers.empty.value) == "No headers."
    assert wb.replay_button.tooltip.startswith("Pick an exchange first. Click a row")
    wb.picker.set_filters(environment="prod")
    wb.picker.select_row(0)
    wb.reason.value = "check prod"
    assert wb.replay_button.tooltip.startswith("You lack replay:prod. Replaying in prod")
    assert ".." not in wb.replay_button.tooltip
    row = wb.editor.properties.add("apiToken", "[REDACTED:0123456789abcdef]")
    assert "as the properties are modified" in _text(row.message.value)


def test_a_calibration_that_finds_no_noise_says_so(tmp_path: Path, paced_app: Any) -> None:
    """Walk-through findings: an exchange without noise (no timestamps, no random ids) showed
    "Noise calibrated: 0 rule(s) ... marked noise (paths: )."; a first divergence where a
    processor ran on one side only showed its record as JSON."""
    from moat_nb.sandbox import start

    handle = start(data=tmp_path / "data", per_env=2, seed=SEED, app=paced_app(1))
    try:
        with connect(handle.url, username="operator", password="operator") as platform:
            wb = ReplayWorkbench(platform)
            wb.picker.set_filters(environment="dev")
            wb.picker.select_row(0)
            wb.reason.value = "no noise here"
            wb.replay_button.click()  # no running loop: followed here, calibration included
            assert wb.result is not None and wb.noise_rules == {wb._calibration_key(): []}
            words = _text(wb.diff_box.children[0].value)
            assert "Noise calibrated: none found." in words and "paths: )" not in words, words
            # The replay took the route's replay-only branch: said in words, not as its record.
            assert "when1 ran only in the replay" in words and "processorType" not in words, words
    finally:
        handle.stop()


def test_analyst_sees_the_button_disabled_with_the_reason(users: dict[str, Platform]) -> None:
    wb = ReplayWorkbench(users["analyst"])
    wb.picker.select_row(0)
    wb.reason.value = "curious"
    assert wb.replay_button.disabled
    words = _text(wb.gate.value)
    assert "You lack replay:run" in words and "OPERATOR" in words and "What to do:" in words
    # What it says an analyst can still do is there (it said "read their traces": the
    # workbench shows a replay's trace, not a picked exchange's recorded one).
    assert "can still search and pick exchanges and read their start payloads" in words
    assert "trace" not in words
    assert "replay:run" in wb.replay_button.tooltip
    wb.replay_button.click()
    assert wb.run is None


def test_operator_on_a_prod_exchange_sees_the_replay_prod_message(users: dict[str, Platform]) -> None:
    wb = ReplayWorkbench(users["operator"])
    wb.picker.set_filters(environment="prod")
    wb.picker.select_row(0)
    wb.reason.value = "check prod"
    assert wb.replay_button.disabled
    words = _text(wb.gate.value)
    assert "You lack replay:prod" in words and "no role implies" in words
    # The server says the same when asked anyway (and audits the denial).
    assert wb.replay() is None
    server = _text(wb.message.value)
    assert "You lack replay:prod" in server and "What to do:" in server and "grant" in server
    # A dev exchange sent to a prod target needs it too.
    wb.picker.set_filters(environment="dev")
    wb.picker.select_row(0)
    wb.reason.value = "check a dev exchange in prod"  # the prod one's reason is not carried over
    wb.target.value = "prod"
    assert wb.replay_button.disabled and "replay:prod" in _text(wb.gate.value)
    wb.target.value = ""
    assert not wb.replay_button.disabled
    # prod-operator has the grant.
    assert not ReplayWorkbench(users["prod-operator"]).blocked().title.startswith("You lack")


def test_validation_errors_are_shown_in_words(users: dict[str, Platform]) -> None:
    wb = ReplayWorkbench(users["operator"])
    wb.picker.set_filters(environment="dev")
    wb.picker.select_row(0)
    wb.reason.value = "x" * 501
    assert wb.replay_button.disabled and "The reason is too long" in _text(wb.gate.value)
    assert wb.replay() is None  # the server refuses it too, and says why
    words = _text(wb.message.value)
    assert "the request is not valid" in words and "1-500 characters" in words and "What to do:" in words


def test_workbench_shows_tier_refusals_in_words(tmp_path: Path) -> None:
    from moat_nb.sandbox import start

    users_file = tmp_path / "users.toml"
    users_file.write_text(
        'tenant = { id = "small", tier = "LOW" }\n'
        '[users.operator]\npassword = "operator"\nroles = ["OPERATOR"]\ngrants = []\n',
        encoding="utf-8",
    )
    handle = start(data=tmp_path / "data", per_env=2, seed=SEED, users=users_file)
    try:
        with connect(handle.url, username="operator", password="operator") as platform:
            wb = ReplayWorkbench(platform)
            wb.calibrate.value = False
            wb.picker.set_filters(environment="dev")
            wb.picker.select_row(0)
            wb.reason.value = "tier check"
            wb.replay_button.click()
            words = _text(wb.message.value)
            assert "Replay is not part of your plan" in words and "HIGH or BUSINESS" in words
            assert wb.run is None and not wb.running
    finally:
        handle.stop()


# --------------------------------------------------------------------------- AuditBrowser


def test_audit_browser_filters_and_verifies(users: dict[str, Platform], sandbox: Any) -> None:
    admin = users["admin"]
    run = users["operator"].replay(_first(admin, environment="dev"), reason="for the audit browser")
    run.wait()
    browser = AuditBrowser(admin, page_size=10, public_keys=list(sandbox.state.audit.public_keys.values()))
    seqs = [int(r["seq"]) for r in browser.table.rows]
    assert browser.records and seqs == sorted(seqs, reverse=True)  # newest first
    browser.replay_id.value = run.replay_id  # Enter in the field
    assert [r["action"] for r in sorted(browser.records, key=lambda r: r["seq"])] == [
        "REPLAY_REQUESTED", "REPLAY_STARTED", "REPLAY_COMPLETED"]  # fmt: skip
    browser.replay_id.value = ""
    browser.action.value = "REPLAY_DENIED"
    browser.refresh()  # (a dropdown change is debounced; this searches now)
    assert all(r["action"] == "REPLAY_DENIED" for r in browser.records)
    browser.action.value = ""
    browser.since.value = "last tuesday"  # a read that fails: its message, and no rows
    browser.refresh()
    assert "Could not read the audit log" in _text(browser.message.value)
    assert browser.records == [] and browser.table.rows == []
    browser.since.value = ""
    browser.refresh()
    assert browser.records

    result = browser.verify()
    assert result["server"]["ok"] and result["offline"]["ok"]
    words = _text(browser.verdict.value)
    assert words.count("✔ PASS") == 2 and "FAIL" not in words

    bundle = admin.audit_bundle().data
    bad_seq = bundle["events"][1]["seq"]
    bundle["events"][1]["detail"] = {"reason": "rewritten after the fact"}
    verdict = browser.verify_bundle(bundle)
    assert not verdict["ok"] and verdict["first_bad_seq"] == bad_seq
    words = _text(browser.verdict.value)
    assert "✘ FAIL" in words and f"first bad seq {bad_seq}" in words and "HASH_MISMATCH" in words


def test_audit_browser_marks_only_failures_as_failed(users: dict[str, Platform]) -> None:
    """Walk-through finding: every row whose outcome was not SUCCESS had the red failure mark,
    so a replay's REPLAY_REQUESTED (ACCEPTED) and REPLAY_STARTED (STARTED) looked failed."""
    admin, operator = users["admin"], users["operator"]
    run = operator.replay(_first(admin, environment="dev"), reason="audit row marks")
    run.wait()
    with pytest.raises(PermissionDenied):
        operator.replay(_first(admin, environment="prod"), reason="audit row marks: denied")
    browser = AuditBrowser(admin, page_size=50)
    browser.replay_id.value = run.replay_id
    marks = {r["action"]: r.get("_class", "") for r in browser.table.rows}
    assert marks == {"REPLAY_REQUESTED": "", "REPLAY_STARTED": "", "REPLAY_COMPLETED": ""}, marks
    browser.replay_id.value = ""
    browser.action.value = "REPLAY_DENIED"
    browser.refresh()
    assert browser.table.rows and all(r["_class"] == "moat-row-failed" for r in browser.table.rows)


def test_audit_browser_reads_bundles_strictly_and_names_the_keys_it_trusted(
    users: dict[str, Platform], sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding 4: a bundle file is read as ``moat-nb audit verify`` reads it (no NaN,
    Infinity or 1e999 where a signed null was), and without trusted keys no PASS is shown."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from moat_nb import audit

    monkeypatch.delenv("MOAT_AUDIT_KEYS", raising=False)
    admin = users["admin"]
    platform_keys = list(sandbox.state.audit.public_keys.values())
    bundle = admin.audit_bundle().data
    text = json.dumps(bundle)
    assert '"client": null' in text
    browser = AuditBrowser(admin, autoload=False)
    assert browser.keys_from == "bundle"
    for token in ("NaN", "1e999", "-Infinity"):
        path = tmp_path / f"{token}.json"
        path.write_text(text.replace('"client": null', f'"client": {token}', 1))
        assert browser.verify_bundle(path, public_keys=platform_keys) == {}
        words = _text(browser.verdict.value)
        assert "Could not read the bundle" in words and "PASS" not in words
    genuine = tmp_path / "genuine.json"
    genuine.write_text(text)
    own = browser.verify_bundle(genuine)  # no keys: consistent, signer not checked
    words = _text(browser.verdict.value)
    assert own["ok"] and not own["signer_checked"] and "PASS" not in words and "SIGNER NOT CHECKED" in words
    pinned = browser.verify_bundle(genuine, public_keys=platform_keys)
    assert pinned["ok"] and pinned["keys_from"] == "argument" and "✔ PASS" in _text(browser.verdict.value)
    # Re-signed by someone else: consistent with its own key, refused with the platform's.
    evil = Ed25519PrivateKey.generate()
    forged = audit.make_bundle(
        bundle["events"],
        [
            audit.sign_checkpoint(evil, None, c["tenantId"], c["seq"], c["hash"], c["at"])
            for c in bundle["checkpoints"]
        ],
        [evil],
        tenant_id=bundle["tenantId"],
    )
    assert "PASS" not in _text((browser.verify_bundle(forged), browser.verdict.value)[1])
    monkeypatch.setenv("MOAT_AUDIT_KEYS", "\n".join(platform_keys))
    from_env = AuditBrowser(admin, autoload=False)
    result = from_env.verify_bundle(forged)
    assert (result["ok"], result["reason"], result["keys_from"]) == (False, "UNKNOWN_KEY", "environment")
    with pytest.raises(ValidationError):
        AuditBrowser(admin, autoload=False, public_keys="  # no key here")


def test_audit_browser_for_users_without_audit_read(users: dict[str, Platform]) -> None:
    operator = users["operator"]
    browser = AuditBrowser(operator)
    own = {r["replayId"] for r in operator.replays(requested_by="operator", limit=None)}
    assert browser.records and {r["replay_id"] for r in browser.records} <= own  # own replays only
    browser.verify()
    words = _text(browser.verdict.value)
    assert "You lack audit:read" in words and "What to do:" in words and "PASS" not in words


def test_receipt_records_flag_an_event_whose_hash_does_not_match(users: dict[str, Platform]) -> None:
    run = users["operator"].replay(_first(users["operator"], environment="dev"), reason="receipt")
    run.wait()
    events = users["operator"].replay_receipt(run.replay_id)
    assert all(r["_ok"] for r in receipt_records(events))
    events[0] = {**events[0], "reason": "edited"}
    assert [r["_ok"] for r in receipt_records(events)] == [False, True, True]


def test_agent_errors_are_shown_inline(sandbox: Any, users: dict[str, Platform]) -> None:
    # Last in this module: it stops the staging agent.
    sandbox.call(sandbox.agents["staging"].stop)
    wb = ReplayWorkbench(users["operator"])
    wb.calibrate.value = False
    wb.picker.set_filters(environment="staging")
    wb.picker.select_row(0)
    wb.reason.value = "agent gone"
    wb.replay_button.click()
    words = _text(wb.message.value)
    assert ("No agent can run this replay" in words) or ("The replay ended ERROR" in words), words
    assert "What to do:" in words and not wb.running and wb.result is None


# --------------------------------------------------------------------------- browser side vs kernel side

NODE = shutil.which("node")
_NODE_SCRIPT = """
import { readFileSync } from "node:fs";
const src = readFileSync(process.argv[2], "utf8");
const mod = await import("data:text/javascript," + encodeURIComponent(src));
const cases = JSON.parse(readFileSync(0, "utf8"));
const out = {
  lines: cases.lines.map(([a, b]) => {
    const r = mod.changedLines(a, b);
    return [[...r.changed].sort((x, y) => x - y), [...r.removedAfter].sort((x, y) => x - y)];
  }),
  json: cases.json.map((t) => mod.jsonError(t)),
};
process.stdout.write(JSON.stringify(out));
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed: the browser-side check needs it")
def test_the_browser_editor_marks_and_validates_as_the_kernel_does(tmp_path: Path) -> None:
    """widgets/body_editor.js (run by node) and moat_nb.editor agree on changed lines and on
    where the first JSON error is, so the marks a user sees are the ones the kernel acts on."""
    rng = random.Random(SEED)
    pool = ["{", "}", '"a": 1,', '"b": [1, 2],', '"c": "x"', "[", "]", "  ", '"qty": 3,']
    pairs = []
    for _ in range(300):
        a = [rng.choice(pool) for _ in range(rng.randint(0, 10))]
        b = list(a)
        for _ in range(rng.randint(0, 4)):
            op = rng.choice(("insert", "delete", "replace"))
            i = rng.randint(0, len(b))
            if op == "insert":
                b.insert(i, rng.choice(pool))
            elif b and i < len(b):
                if op == "delete":
                    del b[i]
                else:
                    b[i] = rng.choice(pool)
        pairs.append(("\n".join(a), "\n".join(b)))
    valid = json.dumps({"orderId": "O-1", "lines": [{"sku": "S", "qty": 2}], "note": None}, indent=2)
    broken = [
        valid,
        valid.replace('"O-1",', '"O-1"'),
        valid.replace('"qty": 2', '"qty": '),
        valid.replace("}\n  ]", "},\n  ]"),
        valid[:-1],
        valid.replace('"sku"', "sku"),
        valid + "\n{}",
        "",
    ]
    script = tmp_path / "check.mjs"
    script.write_text(_NODE_SCRIPT, encoding="utf-8")
    done = subprocess.run(
        [NODE, str(script), str(Path(__file__).parent.parent / "widgets" / "body_editor.js")],
        input=json.dumps({"lines": pairs, "json": broken}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    for (a, b), (js_changed, js_removed) in zip(pairs, out["lines"], strict=True):
        assert ([n + 1 for n in js_changed], [n + 1 for n in js_removed]) == changed_lines(a, b), (a, b)
    for text, js in zip(broken, out["json"], strict=True):
        py = check_json(text)
        assert (js is None) == (py is None), (text, js, py)
        if py is not None and js["line"] is not None:
            assert js["line"] == py.line, (text, js, py)
