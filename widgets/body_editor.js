// moat_nb BodyEditor: the browser side of moat_nb.editor.BodyEditor (an anywidget ES module).
//
// A plain <textarea> over a "backdrop" that paints each line's state (changed from the
// original, holding the JSON error) and a gutter with line numbers and markers, all three
// scrolled together. Why not CodeMirror: JupyterLab ships it, but an anywidget module cannot
// import JupyterLab's copy, and bundling our own would need an npm build step (issue 7 asks
// for none); a textarea keeps native editing, undo, IME and screen-reader support.
//
// As you type: the text is parsed (mode "json") and the first error is shown with its line
// and column; lines that differ from the original are marked (a longest-common-subsequence
// diff over lines, the same walk as moat_nb.editor.changed_lines on the kernel side). The kernel gets the text after a short
// pause (and at once when the editor loses focus), and checks it again with Python's stricter
// rules (duplicate keys, NaN, numbers beyond the doubles such as 1e999, which JSON.parse reads
// as Infinity), so both sides agree on what is sent.

const SYNC_DELAY_MS = 150;
const MAX_DIFF_CELLS = 250_000; // beyond this the middle is marked changed whole (as the kernel does)

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// Lines of `b` that are not in a longest common subsequence with `a` (0-based), and the lines
// of `b` after which lines of `a` were removed.
export function changedLines(aText, bText) {
  const a = aText.split("\n");
  const b = bText.split("\n");
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB--; }
  const changed = new Set();
  const removedAfter = new Set();
  const n = endA - start;
  const m = endB - start;
  if (n === 0 && m === 0) return { changed, removedAfter };
  if (n * m > MAX_DIFF_CELLS || n === 0 || m === 0) {
    for (let j = start; j < endB; j++) changed.add(j);
    if (m === 0) removedAfter.add(start - 1);
    return { changed, removedAfter };
  }
  // Classic LCS table over the differing middle (Hunt–McIlroy's problem, dynamic programming).
  const w = m + 1;
  const table = new Uint32Array((n + 1) * w);
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      table[i * w + j] = a[start + i] === b[start + j]
        ? table[(i + 1) * w + j + 1] + 1
        : Math.max(table[(i + 1) * w + j], table[i * w + j + 1]);
    }
  }
  // Walk the common subsequence; between two kept lines, d original lines went and the new
  // lines came: the new lines are changed, and if more went than came, lines were removed after
  // the last new one, exactly as the kernel side (moat_nb.editor.changed_lines) reports them.
  let i = 0;
  let j = 0;
  let gone = 0;
  let runStart = start;
  const close = () => {
    const came = start + j - runStart;
    if (gone > came) removedAfter.add(runStart + came - 1);
    gone = 0;
  };
  while (i < n && j < m) {
    if (a[start + i] === b[start + j]) { close(); i++; j++; runStart = start + j; }
    else if (table[(i + 1) * w + j] >= table[i * w + j + 1]) { gone++; i++; }
    else { changed.add(start + j); j++; }
  }
  while (j < m) { changed.add(start + j); j++; }
  gone += n - i;
  close();
  return { changed, removedAfter };
}

// The first JSON error of `text`, with a 1-based line and column when the engine tells a
// position ("... at position 42" or "(line 3 column 5)"), or null when it parses.
export function jsonError(text) {
  if (!text.trim()) return { message: "the body is empty", line: 1, column: 1 };
  try {
    JSON.parse(text);
    return null;
  } catch (err) {
    const message = String(err.message || err);
    let line = null;
    let column = null;
    const lc = /line (\d+) column (\d+)/.exec(message);
    const pos = /position (\d+)/.exec(message);
    if (lc) {
      line = Number(lc[1]);
      column = Number(lc[2]);
    } else if (pos) {
      const upto = text.slice(0, Number(pos[1]));
      const lines = upto.split("\n");
      line = lines.length;
      column = lines[lines.length - 1].length + 1;
    } else if (/end of JSON input/i.test(message)) {
      const lines = text.split("\n");
      line = lines.length;
      column = lines[lines.length - 1].length + 1;
    }
    const clean = message.replace(/^JSON\.parse:\s*/, "").replace(/\s*\(line \d+ column \d+\)/, "")
      .replace(/ in JSON at position \d+/, "").replace(/ at position \d+/, "");
    return { message: clean, line, column };
  }
}

function render({ model, el }) {
  el.classList.add("moat-view", "moat-body-editor");
  // Keys typed in the body are text, not notebook shortcuts (Shift+Enter would run the cell):
  // Lumino's command registry matches no key binding inside data-lm-suppress-shortcuts.
  // Tab is not captured either: it moves the focus on, as keyboard users expect.
  el.setAttribute("data-lm-suppress-shortcuts", "true");
  const id = `moat-be-${Math.random().toString(36).slice(2)}`;
  const label = h("label", { class: "moat-be-label", for: `${id}-text` });
  const gutter = h("div", { class: "moat-be-gutter", "aria-hidden": "true" });
  const backdrop = h("div", { class: "moat-be-backdrop", "aria-hidden": "true" });
  const text = h("textarea", {
    id: `${id}-text`,
    class: "moat-be-text",
    spellcheck: "false",
    autocomplete: "off",
    autocapitalize: "off",
    wrap: "off",
    "aria-describedby": `${id}-status`,
  });
  const area = h("div", { class: "moat-be-area" }, backdrop, text);
  const frame = h("div", { class: "moat-be-frame" }, gutter, area);
  const status = h("div", { id: `${id}-status`, class: "moat-be-status", role: "status", "aria-live": "polite" });
  el.append(label, frame, status);

  let timer = null;
  function flush() {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    if (model.get("value") !== text.value) {
      model.set("value", text.value);
      model.save_changes();
    }
  }

  function paint() {
    const value = text.value;
    const original = model.get("original") || "";
    const lines = value.split("\n");
    const { changed, removedAfter } = changedLines(original, value);
    // The browser's own check answers as you type; the kernel's stricter verdict (duplicate
    // keys, 1e999) counts too, on the very text it judged: the editor is where an invalid body
    // is said in full, the payload status and the Replay gate only point here.
    const json = model.get("mode") === "json";
    const judged = model.get("problem");
    const kernel = json && judged && judged.text === value ? judged : null;
    const error = json ? jsonError(value) || kernel : null;
    const errorLine = error && error.line ? error.line - 1 : -1;

    const gutterLines = [];
    const backLines = [];
    lines.forEach((_, i) => {
      const classes = ["moat-be-line"];
      if (changed.has(i)) classes.push("moat-be-line-changed");
      if (removedAfter.has(i)) classes.push("moat-be-line-removed-after");
      if (i === errorLine) classes.push("moat-be-line-error");
      const cls = classes.join(" ");
      const mark = i === errorLine ? "!" : changed.has(i) ? "●" : "";
      gutterLines.push(h("div", { class: cls, "data-line": String(i + 1) },
        h("span", { class: "moat-be-num" }, String(i + 1)), h("span", { class: "moat-be-mark" }, mark)));
      backLines.push(h("div", { class: cls }, "\u200b"));
    });
    if (removedAfter.has(-1)) backLines[0]?.classList.add("moat-be-line-removed-before");
    gutter.replaceChildren(...gutterLines);
    backdrop.replaceChildren(...backLines);

    const rows = Math.min(Math.max(lines.length + 1, model.get("min_lines") || 6), model.get("max_lines") || 24);
    frame.style.setProperty("--moat-be-rows", String(rows));
    text.setAttribute("aria-invalid", error ? "true" : "false");
    text.readOnly = !!model.get("read_only");

    const nChanged = changed.size;
    const what = nChanged === 0 && removedAfter.size === 0
      ? "same as the original"
      : `${nChanged} line${nChanged === 1 ? "" : "s"} changed from the original` +
        (removedAfter.size ? `, ${removedAfter.size} place${removedAfter.size === 1 ? "" : "s"} with lines removed` : "");
    // Ticked "Send the body as typed": an invalid body is a warning, and the words say it is
    // sent as typed, not "fix it" (lab walk).
    const asTyped = !!model.get("as_typed");
    const state = error ? (asTyped ? "moat-be-status-warn" : "moat-be-status-error") : "moat-be-status-ok";
    status.className = `moat-be-status ${state}`;
    if (error) {
      const where = error.line ? `line ${error.line}, column ${error.column}: ` : "";
      status.replaceChildren(
        h("strong", {}, asTyped ? "⚠ Not valid JSON" : "✗ Not valid JSON"), ` — ${where}${error.message}. `,
        h("span", { class: "moat-be-todo" }, model.get("todo") || ""));
    } else if (model.get("mode") === "json") {
      status.replaceChildren(h("strong", {}, "✓ Valid JSON"), ` · ${what}`);
    } else {
      status.replaceChildren(`Text · ${what}`);
    }
    syncScroll();
  }

  function syncScroll() {
    backdrop.scrollTop = text.scrollTop;
    backdrop.scrollLeft = text.scrollLeft;
    gutter.scrollTop = text.scrollTop;
  }

  function fromModel() {
    label.textContent = model.get("label") || "Body";
    const value = model.get("value") || "";
    if (text.value !== value) {
      const { selectionStart, selectionEnd } = text;
      text.value = value;
      if (document.activeElement === text) text.setSelectionRange(selectionStart, selectionEnd);
    }
    paint();
  }

  // That attribute is not enough in JupyterLab 4: its application listens for keydown on the
  // document (bubbling) and, whether a shortcut matched or not, cancels the next `beforeinput`
  // of the key's target when it is a line break inside a notebook cell (`insertLineBreak`,
  // cancelled so that Shift+Enter can run the cell) or undo/redo inside the notebook
  // (`historyUndo`/`historyRedo` under `[data-jp-undoer]`): Enter, Shift+Enter and Ctrl+Z did
  // nothing here (lab walk). The keys typed in the textarea are the textarea's: they stop at
  // it and never reach that listener, as ipywidgets' own Textarea does (its TextareaView
  // handleKeyDown; jupyter-widgets/ipywidgets#3950, #3982). Default actions are untouched.
  // Every key, not only Enter and Ctrl+Z: the Shift of Shift+Enter, let through, arms the same
  // guard, which then cancels the line break of the Enter that follows.
  text.addEventListener("keydown", (ev) => ev.stopPropagation());
  text.addEventListener("input", () => {
    paint();
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(flush, SYNC_DELAY_MS);
  });
  text.addEventListener("blur", flush);
  text.addEventListener("scroll", syncScroll);

  const names = ["value", "original", "mode", "label", "read_only", "min_lines", "max_lines"];
  const handler = () => fromModel();
  names.forEach((n) => model.on(`change:${n}`, handler));
  // The kernel's verdict and words only repaint: through fromModel, a verdict arriving while
  // the user typed on would put back the text the kernel judged, losing the keys typed since.
  const verdicts = ["problem", "todo", "as_typed"];
  const repaint = () => paint();
  verdicts.forEach((n) => model.on(`change:${n}`, repaint));
  fromModel();
  return () => {
    flush();
    names.forEach((n) => model.off(`change:${n}`, handler));
    verdicts.forEach((n) => model.off(`change:${n}`, repaint));
  };
}

export default { render };
