"""The widgets in a real browser: JupyterLab on loopback, Debian's Chromium driven by Playwright.

One scenario, as an analyst would go through it with the keyboard and the mouse: open the
notebook (``notebooks/explore_what_if.ipynb`` once it shows the workbench, else
``tests/browser/workbench.ipynb``), run all cells, filter the exchanges (environment, status),
sort by duration, pick a row with the keyboard (arrow keys, Enter), break the body's JSON (the
editor says where), type new lines in it (Enter; Shift+Enter too, which must not run the cell;
Ctrl+Z), fix it with a changed value (the line is marked), write a reason, press
Replay, watch the trace table and the timeline fill, then read the diff tab's first divergence
and the audit receipt. Screenshots of the light and the dark theme go to
``out/screenshots/``. Everything asserted is on the page.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser


def _run_all(page: Any) -> None:
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()


def _theme(page: Any, name: str) -> None:
    page.locator(".lm-MenuBar-item", has_text="Settings").first.click()
    page.locator(".lm-Menu-item", has_text="Theme").first.hover()
    page.locator(".lm-Menu-item", has_text=name).first.click()


def _caret(text: Any, start: int, end: int | None = None) -> None:
    """Focus the editor's textarea with the caret at ``start`` (or ``start``..``end`` selected)."""
    text.focus()
    text.evaluate("(t, [a, b]) => t.setSelectionRange(a, b)", [start, start if end is None else end])


def _body_text(original: str, qty: int) -> str:
    data = json.loads(original)
    data["lines"][0]["qty"] = qty
    return json.dumps(data, indent=2, ensure_ascii=False)


def test_workbench_in_jupyterlab(lab: Any, browser: Any, screenshots: Path) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 3000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console", lambda msg: errors.append(msg.text) if msg.type == "error" and "moat" in msg.text else None
    )
    try:
        page.goto(lab.page_url(lab.notebook()), wait_until="domcontentloaded")
        page.on("dialog", lambda dialog: dialog.dismiss())
        page.wait_for_selector(".jp-Notebook", timeout=60_000)
        # The kernel is up when the status bar says so; then run every cell.
        page.locator(".jp-StatusBar-Item", has_text="Idle").first.wait_for(timeout=90_000)
        _theme(page, "JupyterLab Light")
        page.wait_for_selector("body[data-jp-theme-light='true']", state="attached", timeout=20_000)
        _run_all(page)

        # The picker: rows from the sandbox, newest first.
        workbench = page.locator(".moat-workbench")
        rows = workbench.locator(".moat-picker .moat-grid tbody tr")
        rows.first.wait_for(timeout=90_000)
        # The workbench is the what-if notebook's last cell: JupyterLab skips rendering cells
        # out of view (content-visibility), so their text reads empty until scrolled to.
        workbench.first.scroll_into_view_if_needed()
        assert rows.count() == 8
        # text_content, not inner_text: JupyterLab does not render cells out of view.
        info = workbench.locator(".moat-picker .moat-page-info").text_content() or ""
        assert re.search(r"Rows 1–8 of \d+", info), info

        # Filters: environment and status (dropdowns); the table follows (debounced search).
        selects = workbench.locator(".moat-picker select")
        selects.nth(0).select_option(label="dev")
        selects.nth(2).select_option(label="Completed")
        page.wait_for_function(
            """() => { const rows = [...document.querySelectorAll('.moat-picker .moat-grid tbody tr')];
                       return rows.length > 0 && rows.every(r => r.textContent.includes('dev')
                              && r.textContent.includes('COMPLETED')); }""",
            timeout=20_000,
        )
        # Sort by duration (a header button), then pick the first row with the keyboard.
        workbench.locator(".moat-picker .moat-sort", has_text="Duration").click()
        page.wait_for_function(
            """() => { const ms = [...document.querySelectorAll('.moat-picker .moat-grid tbody tr')]
                         .map(r => parseFloat(r.cells[4].textContent));
                       return document.querySelector('.moat-picker th[aria-sort="descending"]') !== null
                              && ms.length > 1 && ms.every((v, i) => i === 0 || ms[i - 1] >= v); }""",
            timeout=20_000,
        )
        first_row = workbench.locator(".moat-picker .moat-grid tbody tr").first
        first_row.focus()
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowUp")
        page.keyboard.press("Enter")
        page.wait_for_selector(".moat-picker .moat-row-selected", timeout=20_000)
        workbench.locator(".moat-payload-editor").get_by_text("Start payload of").wait_for(timeout=20_000)
        # Narrow (a side panel beside the notebook): the header and property rows wrap rather
        # than run out of their box (lab walk: they overflowed at about 390 px).
        rows_out = page.evaluate(
            """() => { const ed = document.querySelector('.moat-workbench .moat-payload-editor');
                       const old = ed.style.width; ed.style.width = '390px';
                       const rows = [...ed.querySelectorAll('.moat-kv-row')];
                       const out = rows.filter(r => { const right = r.getBoundingClientRect().right;
                           return [...r.children].some(c => c.getBoundingClientRect().right > right + 1); });
                       ed.style.width = old; return [rows.length, out.length]; }"""
        )
        assert rows_out[0] > 0 and rows_out[1] == 0, rows_out
        # ... and a hint that wraps there keeps its own line height: it inherited the 28 px of
        # ipywidgets' HTML widget and read double-spaced (lab walk, in a 700 px window).
        spacing = page.evaluate(
            """() => { const ed = document.querySelector('.moat-workbench .moat-payload-editor');
                       const old = ed.style.width; ed.style.width = '390px';
                       const hint = ed.querySelector('.widget-html-content > .moat-hint');
                       const box = hint.getBoundingClientRect(), css = getComputedStyle(hint);
                       const out = [box.height, parseFloat(css.lineHeight), parseFloat(css.fontSize)];
                       ed.style.width = old; return out; }"""
        )
        assert spacing[0] > 1.5 * spacing[1] and spacing[1] < 1.8 * spacing[2], (
            spacing
        )  # wrapped, not double-spaced

        # The body editor: invalid JSON is reported with its line; a changed value marks its line.
        text = workbench.locator(".moat-be-text")
        page.wait_for_function(
            "() => document.querySelector('.moat-be-text').value.length > 10", timeout=20_000
        )
        original = text.input_value()
        # Real key presses: put the caret after the comma of the currency line, press Backspace.
        _caret(text, original.index('"currency": "EUR",') + len('"currency": "EUR",'))
        page.keyboard.press("Backspace")
        status = workbench.locator(".moat-be-status")
        status.get_by_text("Not valid JSON").wait_for(timeout=5_000)
        assert re.search(r"line \d+, column \d+", status.text_content() or "")
        assert workbench.locator(".moat-be-backdrop .moat-be-line-error").count() == 1
        assert "Fix it before replaying" in (status.text_content() or "")
        # The kernel agrees (it checks the same text): the Replay button explains why it is off,
        # in short; the error is said in full once, in the editor (lab walk: three times).
        gate = workbench.locator(".moat-msg", has_text="The payload cannot be replayed yet:").first
        gate.wait_for(timeout=10_000)
        gate.get_by_text("see the body editor").wait_for(timeout=5_000)
        for box in workbench.locator(".moat-msg", has_text="cannot be replayed yet").all():
            assert "delimiter" not in (box.text_content() or ""), box.text_content()
        _shoot(workbench, screenshots, "light-invalid", "editor")
        _shoot(workbench, screenshots, "light-invalid-gate", "gate", height=300)

        # Ticked 'Send the body as typed': the editor says it is sent as typed, not "fix it".
        as_typed = workbench.locator(".moat-payload-editor label", has_text="Send the body as typed")
        as_typed.locator("input").click()
        status.get_by_text("It is sent as typed").wait_for(timeout=5_000)
        assert "Fix it" not in (status.text_content() or "")
        assert "moat-be-status-warn" in (status.get_attribute("class") or "")
        _shoot(workbench, screenshots, "light-as-typed", "editor")
        as_typed.locator("input").click()
        status.get_by_text("Fix it before replaying").wait_for(timeout=5_000)

        text.focus()
        _caret(text, original.index('"currency": "EUR"') + len('"currency": "EUR"'))
        page.keyboard.type(",")  # fixed again
        status.get_by_text("same as the original").wait_for(timeout=5_000)
        # A duplicate key: JSON.parse takes it, the kernel refuses it (as the server does); the
        # editor says so, where it can be fixed.
        at = original.index('"currency": "EUR",') + len('"currency": "EUR",')
        _caret(text, at)
        # Real key presses: Enter starts a new line. JupyterLab cancels a line break typed in a
        # notebook cell (its Shift+Enter runs the cell) unless the key stops at the textarea.
        page.keyboard.press("Enter")
        page.keyboard.type('  "currency": "USD",')
        duplicated = original[:at] + '\n  "currency": "USD",' + original[at:]
        assert text.input_value() == duplicated, "Enter inserted no line in the body editor"
        status.get_by_text("appears twice").wait_for(timeout=10_000)
        assert workbench.locator(".moat-be-backdrop .moat-be-line-error").count() == 1
        _caret(text, at, at + len('\n  "currency": "USD",'))
        page.keyboard.press("Backspace")
        status.get_by_text("same as the original").wait_for(timeout=5_000)
        # Shift+Enter in the body is a line break too, as in any textarea (and ipywidgets'
        # Textarea): the notebook's "run the cell" would build a new workbench and lose the
        # edits, so the cell does not run and the focus stays in the editor. Ctrl+Z undoes it
        # (the browser's own undo, which JupyterLab also cancels in a notebook otherwise).
        prompts = (
            "() => [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')].map(p => p.textContent)"
        )
        before = page.evaluate(prompts)
        _caret(text, at)
        page.keyboard.press("Shift+Enter")
        assert text.input_value() == original[:at] + "\n" + original[at:], "Shift+Enter inserted no line"
        status.get_by_text("1 line changed from the original").wait_for(timeout=5_000)
        assert page.evaluate("() => document.activeElement.classList.contains('moat-be-text')")
        page.keyboard.press("Control+z")
        assert text.input_value() == original, "Ctrl+Z did not undo the line break"
        status.get_by_text("same as the original").wait_for(timeout=5_000)
        assert page.evaluate(prompts) == before  # no cell ran (a run renumbers its prompt)
        # Change the first line's quantity: select its digits and type 30.
        now = text.input_value()
        digits = re.search(r'"qty": (\d+)', now)
        assert digits is not None
        _caret(text, digits.start(1), digits.end(1))
        page.keyboard.type("30")
        assert text.input_value() == _body_text(original, 30)
        status.get_by_text("Valid JSON").wait_for(timeout=5_000)
        changed = workbench.locator(".moat-be-backdrop .moat-be-line-changed")
        assert changed.count() == 1
        assert "1 line changed from the original" in (status.text_content() or "")
        text.press("End")  # a real key press in the editor keeps the marks
        assert workbench.locator(".moat-be-gutter .moat-be-line-changed").count() == 1

        # Reason, then Replay (enabled once the kernel has the reason).
        reason = workbench.locator("input[placeholder^='why you replay']")
        reason.fill("what if the first line had 30 items")
        page.wait_for_function(
            """() => { const b = [...document.querySelectorAll('.moat-workbench button')]
                         .filter(b => b.textContent.trim() === 'Replay').pop();
                       return b && !b.disabled; }""",
            timeout=20_000,
        )
        _shoot(workbench, screenshots, "light", "picker", "editor")
        # From the reason field, Tab reaches the calibration checkbox, then the Replay button.
        reason.focus()
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.textContent.trim()") == "Replay"
        started = time.monotonic()
        page.keyboard.press("Enter")

        # The trace table fills while it runs, then the diff tab shows the divergence.
        trace_rows = workbench.locator(".moat-trace tbody tr")
        page.wait_for_function(
            "() => document.querySelectorAll('.moat-trace tbody tr').length >= 20", timeout=60_000
        )
        # The timeline gets the same records in the same flush, as another widget: its view may
        # render a frame after the table's, so it is waited for too, not counted at once.
        page.wait_for_function(
            "() => document.querySelectorAll('.moat-timeline .moat-tl-row').length >= 20", timeout=10_000
        )
        diff = workbench.locator(".moat-results").get_by_text("First divergence at").first
        diff.wait_for(timeout=90_000)
        elapsed = time.monotonic() - started
        words = workbench.locator(".moat-results").text_content() or ""
        assert "totalQuantity" in words or "total" in words, words[:2000]
        assert "Noise calibrated" in words
        # Ids and class names in messages wrap rather than run out of a narrow box (lab walk).
        assert (
            page.evaluate(
                "() => getComputedStyle(document.querySelector('.moat-results .moat-msg')).overflowWrap"
            )
            == "anywhere"
        )
        assert trace_rows.count() >= 40
        assert workbench.get_by_text("Replay completed").count() == 1
        assert elapsed < 90
        _shoot(workbench, screenshots, "light", "results")

        # The receipt tab, with the keyboard-reachable tab bar.
        page.locator(".moat-results .lm-TabBar-tab", has_text="Audit receipt").click()
        page.get_by_text("REPLAY_COMPLETED").first.wait_for(timeout=20_000)
        assert "recomputes" in (workbench.locator(".moat-results").text_content() or "")
        _shoot(workbench, screenshots, "light-receipt", "results", height=700)
        page.locator(".moat-results .lm-TabBar-tab", has_text="Lineage").click()
        workbench.get_by_text("Which processor set, changed or removed which field").wait_for(timeout=20_000)
        _shoot(workbench, screenshots, "light-lineage", "results", height=1500)

        # Dark theme: the same view, readable.
        page.locator(".moat-results .lm-TabBar-tab", has_text="Diff").click()
        _theme(page, "JupyterLab Dark")
        page.wait_for_selector("body[data-jp-theme-light='false']", state="attached", timeout=20_000)
        time.sleep(1.0)  # the theme's stylesheet swap
        background = page.evaluate(
            "() => getComputedStyle(document.querySelector('.moat-workbench .moat-grid th')).backgroundColor"
        )
        assert background not in ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)"), background
        colour = page.evaluate(
            "() => getComputedStyle(document.querySelector('.moat-workbench .moat-grid td')).color"
        )
        assert _luminance(colour) > 0.5, colour  # light text on the dark theme
        _shoot(workbench, screenshots, "dark", "picker", "editor", "results")
        page.locator(".moat-results .lm-TabBar-tab", has_text="Trace").click()
        _shoot(workbench, screenshots, "dark-trace", "results", height=900)
        _theme(page, "JupyterLab Light")

        # Another exchange picked: the reason written for the first is cleared (lab walk: it
        # stayed and went into the audit log with the other's replay).
        workbench.locator(".moat-picker .moat-grid tbody tr").nth(1).click()
        page.wait_for_function(
            "() => document.querySelector(\"input[placeholder^='why you replay']\").value === ''",
            timeout=20_000,
        )
        workbench.locator(".moat-gate").get_by_text("was cleared when you picked this one").wait_for(
            timeout=10_000
        )
        _shoot(workbench, screenshots, "light-new-pick", "gate", height=300)
        assert not errors, errors
    except Exception:
        page.screenshot(path=str(screenshots / "failure.png"), full_page=True)
        raise
    finally:
        context.close()


_PARTS = {
    "picker": ".moat-picker",
    "editor": ".moat-payload-editor",
    "results": ".moat-results",
    "gate": ".moat-gate",
}


def _shoot(workbench: Any, folder: Path, theme: str, *parts: str, height: int = 1500) -> None:
    """Screenshots of parts of the workbench, ``out/screenshots/<theme>-<part>.png``: the top
    ``height`` pixels of each (the results tab is taller than any screen)."""
    for part in parts:
        element = workbench.locator(_PARTS[part]).first
        element.scroll_into_view_if_needed()
        box = element.bounding_box()
        assert box is not None, part
        clip = {"x": box["x"], "y": box["y"], "width": box["width"], "height": min(box["height"], height)}
        workbench.page.screenshot(path=str(folder / f"{theme}-{part}.png"), clip=clip)


def _luminance(css: str) -> float:
    r, g, b = (int(x) for x in re.findall(r"\d+", css)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255
