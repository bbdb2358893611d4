// moat_nb TraceTimeline: the browser side of moat_nb.replay_views.TraceTimeline (anywidget).
//
// A live Gantt-like view of a replay: one row per processor, a bar from its start to its end
// (milliseconds since the replay started), coloured by status. Drawn with plain elements and
// JupyterLab's theme variables instead of a plotting library, so it is cheap to redraw at every
// batch of trace events and reads the same in the light and the dark theme. Each row carries
// its numbers in words (aria-label, title) for screen readers and for hovering.

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function ms(v) {
  if (v >= 1000) return `${(v / 1000).toFixed(2)} s`;
  return v >= 1 ? `${v.toFixed(1)} ms` : `${v.toFixed(2)} ms`;
}

function render({ model, el }) {
  el.classList.add("moat-view", "moat-timeline");
  const title = h("div", { class: "moat-tl-title" });
  const rows = h("div", { class: "moat-tl-rows", role: "list" });
  const axis = h("div", { class: "moat-tl-axis", "aria-hidden": "true" });
  const empty = h("div", { class: "moat-tl-empty" });
  el.append(title, rows, axis, empty);

  function draw() {
    const bars = model.get("bars") || [];
    title.textContent = model.get("title") || "";
    rows.style.maxHeight = `${model.get("max_height") || 320}px`;
    const end = Math.max(1e-6, ...bars.map((b) => (b.start || 0) + (b.duration || 0)));
    const atBottom = rows.scrollTop + rows.clientHeight >= rows.scrollHeight - 4;
    rows.replaceChildren(...bars.map((b) => {
      const left = ((b.start || 0) / end) * 100;
      const width = Math.max(((b.duration || 0) / end) * 100, 0.4);
      const words = `${b.label}: starts at ${ms(b.start || 0)}, takes ${ms(b.duration || 0)}, ${b.status}` +
        (b.note ? `, ${b.note}` : "");
      const bar = h("div", {
        class: `moat-tl-bar moat-tl-${String(b.status || "").replace(/[^A-Z_]/g, "")}`,
        style: `left:${left}%;width:${Math.min(width, 100 - left)}%`,
        title: words,
      });
      return h("div", { class: "moat-tl-row", role: "listitem", "aria-label": words },
        h("span", { class: "moat-tl-label", title: b.label }, b.label),
        h("div", { class: "moat-tl-track" }, bar));
    }));
    if (atBottom || model.get("follow")) rows.scrollTop = rows.scrollHeight;
    const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) =>
      h("span", { class: "moat-tl-tick", style: `left:${f * 100}%` }, ms(f * end)));
    axis.replaceChildren(h("span", { class: "moat-tl-axis-label" }, model.get("axis_label") || ""),
      h("div", { class: "moat-tl-scale" }, ...ticks));
    empty.textContent = bars.length ? "" : (model.get("empty_text") || "");
    axis.style.display = bars.length ? "" : "none";
    rows.style.display = bars.length ? "" : "none";
  }

  const names = ["bars", "title", "max_height", "axis_label", "empty_text", "follow"];
  const handler = () => draw();
  names.forEach((n) => model.on(`change:${n}`, handler));
  draw();
  return () => names.forEach((n) => model.off(`change:${n}`, handler));
}

export default { render };
