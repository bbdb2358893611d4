// moat_nb DataTable: the browser side of moat_nb.table.DataTable (an anywidget ES module).
//
// The kernel owns the data: it sends one page of already formatted rows (`rows`), the column
// specs (`columns`), the sort key (`sort`, "key:asc|desc"), the page (`page`, `page_size`,
// `total`) and the selection (`selected`, a row's `_key`). The browser only draws them and
// writes back what the user asked for: another sort, another page, a selected row. Sorting and
// paging therefore behave the same over a server search (ExchangePicker) and a local frame.
//
// Keyboard (WAI-ARIA Authoring Practices, "Grid" and "Sortable Table" patterns): column headers
// are buttons (Enter/Space sorts, aria-sort tells the order); rows are one tab stop (roving
// tabindex): ArrowUp/ArrowDown/Home/End move, Enter/Space selects, PageUp/PageDown change page.
// Tab and Shift+Tab are never captured: they leave the table as everywhere else.

const WATCHED = ["rows", "columns", "sort", "selected", "page", "page_size", "total", "loading",
  "caption", "empty_text", "max_height", "follow"];

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function parseSort(sort) {
  const [key, dir] = String(sort || "").split(":");
  return { key: key || "", dir: dir === "desc" ? "desc" : "asc" };
}

function render({ model, el }) {
  el.classList.add("moat-view", "moat-table");
  // JupyterLab's command-mode shortcuts (Enter, arrows, A, B, D D ...) must not act while the
  // table has the focus: Lumino skips elements inside data-lm-suppress-shortcuts.
  el.setAttribute("data-lm-suppress-shortcuts", "true");
  const root = h("div", { class: "moat-table-root" });
  el.append(root);

  function send(changes) {
    for (const [k, v] of Object.entries(changes)) model.set(k, v);
    model.save_changes();
  }

  function focusId() {
    const a = document.activeElement;
    return a && root.contains(a) ? a.getAttribute("data-focus") : null;
  }

  function cell(column, value) {
    const text = value === null || value === undefined ? "" : String(value);
    if (column.kind === "status" && text) {
      return h("span", { class: `moat-pill moat-pill-${text.replace(/[^A-Z_]/g, "")}`, text });
    }
    return document.createTextNode(text);
  }

  function draw() {
    const keep = focusId();
    const columns = model.get("columns") || [];
    const rows = model.get("rows") || [];
    const selected = model.get("selected") || "";
    const page = model.get("page") || 0;
    const size = model.get("page_size") || rows.length || 1;
    const total = model.get("total");
    const sort = parseSort(model.get("sort"));
    const caption = model.get("caption") || "";
    const maxHeight = model.get("max_height") || 0;

    const head = h("tr", {}, ...columns.map((c) => {
      const sorted = sort.key === c.key;
      const aria = sorted ? (sort.dir === "desc" ? "descending" : "ascending") : (c.sortable ? "none" : null);
      let label = c.label;
      if (!c.sortable) return h("th", { scope: "col", class: `moat-col-${c.kind || "text"}` }, label);
      const arrow = sorted ? (sort.dir === "desc" ? " ▼" : " ▲") : "";
      const next = sorted ? (sort.dir === "desc" ? "asc" : "desc") : (c.desc_first ? "desc" : "asc");
      const button = h("button", {
        type: "button",
        class: "moat-sort",
        "data-focus": `sort:${c.key}`,
        title: `Sort by ${c.label} (${next === "asc" ? "ascending" : "descending"})`,
        onclick: () => send({ sort: `${c.key}:${next}`, page: 0 }),
      }, label + arrow);
      return h("th", { scope: "col", "aria-sort": aria, class: `moat-col-${c.kind || "text"}` }, button);
    }));

    const focusable = rows.some((r) => r._key === selected) ? selected : (rows[0] || {})._key;
    const body = h("tbody", {}, ...rows.map((r, i) => {
      const isSel = r._key === selected;
      const tr = h("tr", {
        class: ["moat-row", isSel ? "moat-row-selected" : "", r._class || ""].join(" ").trim(),
        tabindex: r._key === focusable ? "0" : "-1",
        "aria-selected": isSel ? "true" : "false",
        "data-focus": `row:${r._key}`,
        "data-key": r._key,
        "data-index": String(i),
      }, ...columns.map((c) => h("td", { class: `moat-col-${c.kind || "text"}`, title: c.kind === "text" && r[c.key] && String(r[c.key]).length > 40 ? String(r[c.key]) : null }, cell(c, r[c.key]))));
      tr.addEventListener("click", () => send({ selected: r._key }));
      tr.addEventListener("keydown", (ev) => onRowKey(ev, i, rows));
      return tr;
    }));

    const table = h("table", { class: "moat-grid", role: "grid", "aria-rowcount": total ?? rows.length },
      caption ? h("caption", { class: "moat-table-caption" }, caption) : null,
      h("thead", {}, head), body);
    const scroller = h("div", { class: "moat-table-scroll" }, table);
    if (maxHeight) scroller.style.maxHeight = `${maxHeight}px`;

    const parts = [scroller];
    if (!rows.length) {
      parts.push(h("div", { class: "moat-table-empty", role: "status" }, model.get("loading") ? "Loading…" : (model.get("empty_text") || "No rows")));
    }
    const first = page * size + (rows.length ? 1 : 0);
    const last = page * size + rows.length;
    const hasNext = total === null || total === undefined ? rows.length >= size : last < total;
    if (page > 0 || hasNext) {
      const pages = total ? Math.max(1, Math.ceil(total / size)) : null;
      parts.push(h("div", { class: "moat-pager" },
        h("button", { type: "button", class: "moat-page-prev", "data-focus": "prev", disabled: page <= 0,
          title: "Previous page", onclick: () => send({ page: page - 1 }) }, "‹ Previous"),
        h("span", { class: "moat-page-info", role: "status", "aria-live": "polite" },
          `Rows ${first}–${last}` + (total !== null && total !== undefined ? ` of ${total}` : "") +
          (pages ? ` · page ${page + 1} of ${pages}` : "")),
        h("button", { type: "button", class: "moat-page-next", "data-focus": "next", disabled: !hasNext,
          title: "Next page", onclick: () => send({ page: page + 1 }) }, "Next ›")));
    } else if (rows.length) {
      parts.push(h("div", { class: "moat-pager moat-pager-quiet" },
        h("span", { class: "moat-page-info" }, `${rows.length} row${rows.length === 1 ? "" : "s"}`)));
    }
    root.setAttribute("aria-busy", model.get("loading") ? "true" : "false");
    root.replaceChildren(...parts);
    if (model.get("follow")) scroller.scrollTop = scroller.scrollHeight;
    if (keep) {
      const again = root.querySelector(`[data-focus="${CSS.escape(keep)}"]`);
      if (again) again.focus();
    }
  }

  function onRowKey(ev, i, rows) {
    const trs = root.querySelectorAll("tbody tr");
    const move = (j) => {
      if (j < 0 || j >= trs.length) return;
      trs.forEach((t) => t.setAttribute("tabindex", "-1"));
      trs[j].setAttribute("tabindex", "0");
      trs[j].focus();
    };
    switch (ev.key) {
      case "ArrowDown": move(i + 1); break;
      case "ArrowUp": move(i - 1); break;
      case "Home": move(0); break;
      case "End": move(trs.length - 1); break;
      case "Enter":
      case " ":
        send({ selected: rows[i]._key });
        break;
      case "PageDown": {
        const next = root.querySelector(".moat-page-next");
        if (next && !next.disabled) next.click();
        break;
      }
      case "PageUp": {
        const prev = root.querySelector(".moat-page-prev");
        if (prev && !prev.disabled) prev.click();
        break;
      }
      default:
        return;
    }
    ev.preventDefault();
  }

  const handlers = WATCHED.map((name) => {
    const fn = () => draw();
    model.on(`change:${name}`, fn);
    return [name, fn];
  });
  draw();
  return () => handlers.forEach(([name, fn]) => model.off(`change:${name}`, fn));
}

export default { render };
