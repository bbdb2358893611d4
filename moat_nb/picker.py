"""Finding the exchange to replay: :class:`ExchangePicker` (DESIGN.md section 9, issue 7).

Filters (environment, route, status, time range, free text, replays or not) over
``POST /search/executions``, a sortable, paged results table (status, route, environment,
time, duration, error, exchange), and a selection: choosing a row fetches the execution with
its payloads and processors and sets :attr:`ExchangePicker.value`, an observable trait::

    picker = ExchangePicker(platform)
    picker.observe(lambda change: print(change["new"].exchange_id), names="value")

The search runs on the server: the table shows one page, sorting and paging ask the server
again (``sort``, ``offset``, ``limit``). Filter changes refresh the results after a pause
(:class:`Debouncer`, on the kernel's event loop), so that typing a search term asks once, not
once per key; Enter in a text field or the Refresh button asks at once (Enter in Search runs the
search still pending, so the pause does not run it a second time).
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as widgets
import traitlets

from .errors import MoatError, ValidationError
from .messages import Message, describe_error
from .model import Execution
from .table import Column, DataTable, format_ms, format_time_cell

__all__ = ["EXECUTION_COLUMNS", "TIME_RANGES", "Debouncer", "ExchangePicker", "execution_record"]

#: The results table's columns; keys are the frame's snake_case names, which ``sort=`` takes.
EXECUTION_COLUMNS: tuple[Column, ...] = (
    Column("status", "Status", kind="status"),
    Column("route_id", "Route"),
    Column("environment", "Env"),
    Column("start_time", "Time (UTC)", desc_first=True, format=format_time_cell),
    Column("duration_ms", "Duration", kind="number", desc_first=True, format=format_ms),
    Column("error", "Error", sortable=False),
    Column("exchange_id", "Exchange", kind="code"),
)

#: Time range presets: label -> ``since`` (a duration before now, as ``executions(since=)``).
TIME_RANGES: tuple[tuple[str, str], ...] = (
    ("Any time", ""),
    ("Last hour", "1h"),
    ("Last 24 hours", "24h"),
    ("Last 7 days", "7d"),
    ("Last 30 days", "30d"),
    ("Last year", "365d"),
    ("Custom range…", "custom"),
)

_STATUSES = (("Any status", ""), ("Completed", "COMPLETED"), ("Failed", "FAILED"), ("Running", "RUNNING"))


def execution_record(execution: Execution) -> dict[str, Any]:
    """A search hit as a table record (raw values; the columns format them)."""
    error = ""
    if execution.error_type or execution.error_message:
        kind = (execution.error_type or "").rsplit(".", 1)[-1]
        error = f"{kind}: {execution.error_message}" if kind and execution.error_message else kind or ""
        error = error or (execution.error_message or "")
    return {
        "execution_id": execution.execution_id,
        "exchange_id": execution.exchange_id,
        "status": execution.status,
        "route_id": execution.route_id,
        "environment": execution.environment,
        "start_time": execution.start_time,
        "duration_ms": execution.duration_ms,
        "error": error,
        "is_replay": execution.is_replay,
    }


class Debouncer:
    """Run ``action`` once, ``delay`` seconds after the last call (a burst of filter changes
    becomes one search). On the running asyncio loop (a Jupyter kernel's); without one, at
    once. ``runs`` counts the actions run."""

    def __init__(self, delay: float, action: Callable[[], None]) -> None:
        self.delay = delay
        self.action = action
        self.runs = 0
        self._handle: asyncio.TimerHandle | None = None

    def __call__(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._fire()
            return
        self.cancel()
        self._handle = loop.call_later(self.delay, self._fire)

    @property
    def pending(self) -> bool:
        return self._handle is not None

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def flush(self) -> None:
        """Run now what is pending (Enter in a text field)."""
        if self._handle is not None:
            self.cancel()
            self._fire()

    def _fire(self) -> None:
        self._handle = None
        self.runs += 1
        self.action()


class ExchangePicker(widgets.VBox):
    """Filters, a sortable paged results table and a selection (see the module docstring).

    ``value`` (observable) is the selected :class:`~moat_nb.model.Execution` with its detail
    fields and processors, or None. ``refresh()`` searches now; ``select(execution_id)`` and
    ``select_row(i)`` select as a click does; ``filters()`` gives the current search filters.
    """

    value = traitlets.Any(None, allow_none=True)
    #: Bumped after every search that reached the server (observable; tests and dashboards).
    searches = traitlets.Int(0)

    def __init__(
        self,
        platform: Any,
        *,
        page_size: int = 10,
        debounce: float = 0.3,
        include_replays: bool = False,
        autoload: bool = True,
    ) -> None:
        self.platform = platform
        environments, routes = self._choices()
        wide = {"description_width": "initial"}
        self.environment = widgets.Dropdown(
            options=[("Any environment", "")] + [(e, e) for e in environments],
            description="Environment",
            style=wide,
            layout=widgets.Layout(width="auto"),
        )
        self.route = widgets.Dropdown(
            options=[("Any route", "")] + [(r, r) for r in routes],
            description="Route",
            style=wide,
            layout=widgets.Layout(width="auto"),
        )
        self.status = widgets.Dropdown(
            options=_STATUSES, description="Status", style=wide, layout=widgets.Layout(width="auto")
        )
        self.time_range = widgets.Dropdown(
            options=TIME_RANGES, description="Time", style=wide, layout=widgets.Layout(width="auto")
        )
        self.time_from = widgets.Text(
            description="From",
            placeholder="2026-01-01T00:00:00Z or 7d",
            tooltip="Start of the range: an RFC 3339 time, or how long ago (30m, 24h, 7d); Enter applies",
            continuous_update=False,
            style=wide,
        )
        self.time_to = widgets.Text(
            description="To",
            placeholder="2026-01-31T23:59:59Z or 1h",
            tooltip="End of the range: an RFC 3339 time, or how long ago; Enter applies",
            continuous_update=False,
            style=wide,
        )
        self.text = widgets.Text(
            description="Search",
            placeholder="order id, customer, SKU, error text…",
            tooltip="Text in bodies, headers or errors (case-insensitive); results follow as you type, "
            "Enter searches at once",
            continuous_update=True,
            style=wide,
            layout=widgets.Layout(width="24em"),
        )
        self.include_replays = widgets.Checkbox(
            value=include_replays,
            description="Include replays",
            indent=False,
            layout=widgets.Layout(width="auto"),
        )
        self.refresh_button = widgets.Button(
            description="Refresh",
            icon="refresh",
            tooltip="Search again now",
            layout=widgets.Layout(width="auto"),
        )
        self.custom_range = widgets.HBox([self.time_from, self.time_to])
        self.custom_range.layout.display = "none"
        self.message = widgets.HTML()
        self.table = DataTable(
            EXECUTION_COLUMNS,
            key="execution_id",
            remote=True,
            page_size=page_size,
            sort="start_time:desc",
            caption="Recorded executions (newest first). Click a row, or press Enter on it, to pick it.",
            empty_text="No execution matches these filters.",
            row_class=lambda r: "moat-row-failed" if r.get("status") == "FAILED" else "",
        )
        self.selection = widgets.HTML()
        self.total: int | None = None
        self.records: list[dict[str, Any]] = []
        #: The filters of the last search that reached the server (None: none yet, or it failed).
        self._searched: dict[str, Any] | None = None
        self._debounced = Debouncer(debounce, self._search_from_filters)
        filters_row = widgets.HBox(
            [self.environment, self.route, self.status, self.time_range],
            layout=widgets.Layout(flex_flow="row wrap"),
        )
        search_row = widgets.HBox(
            [self.text, self.include_replays, self.refresh_button],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
        )
        super().__init__(
            [filters_row, self.custom_range, search_row, self.message, self.table, self.selection],
            layout=widgets.Layout(width="100%"),
        )
        self.add_class("moat-view")
        self.add_class("moat-picker")
        for w in (self.environment, self.route, self.status, self.text, self.include_replays):
            w.observe(self._filters_changed, names="value")
        # Enter (or leaving the field) commits these: search at once, no pause.
        for w in (self.time_from, self.time_to):
            w.observe(self._filters_committed, names="value")
        # Enter in Search: its value follows every key (continuous_update, for results as you
        # type), so no value change marks Enter. ipywidgets 8's TextView sends the custom message
        # {"event": "submit"} on Enter; Text.on_submit, which reads it, is deprecated in favour of
        # continuous_update=False, which would lose the results as you type, so it is read here.
        self.text.on_msg(self._text_message)
        self.time_range.observe(self._range_changed, names="value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.table.observe(self._page_changed, names=["sort", "page"])
        self.table.observe(self._row_selected, names="selected")
        if autoload:
            self.refresh()

    # ---------------------------------------------------------------- choices

    def _choices(self) -> tuple[list[str], list[str]]:
        """Environments and routes to offer: those of the connected agents, else of recent history."""
        try:
            agents = self.platform.agents()
            envs = sorted({a.get("environmentId") for a in agents if a.get("environmentId")})
            routes = sorted({r for a in agents for r in (a.get("routeIds") or [])})
            if envs:
                return envs, routes
        except MoatError:
            pass
        try:
            hits = list(self.platform.executions(limit=200))
        except MoatError:
            return [], []
        return sorted({h.environment for h in hits if h.environment}), sorted({h.route_id for h in hits})

    # ---------------------------------------------------------------- filters

    def filters(self) -> dict[str, Any]:
        """The current filters as ``platform.executions(**filters)`` takes them."""
        out: dict[str, Any] = {}
        if self.environment.value:
            out["environment"] = self.environment.value
        if self.route.value:
            out["route_id"] = self.route.value
        if self.status.value:
            out["status"] = self.status.value
        if self.text.value.strip():
            out["text"] = self.text.value.strip()
        if not self.include_replays.value:
            out["is_replay"] = False
        if self.time_range.value == "custom":
            if self.time_from.value.strip():
                out["time_from"] = self.time_from.value.strip()
            if self.time_to.value.strip():
                out["time_to"] = self.time_to.value.strip()
        elif self.time_range.value:
            out["since"] = self.time_range.value
        return out

    def set_filters(self, **values: Any) -> None:
        """Set several filter widgets at once (``environment=``, ``route=``, ``status=``,
        ``text=``, ``time_range=``, ``time_from=``, ``time_to=``, ``include_replays=``);
        one search follows."""
        fields = {
            "environment": self.environment, "route": self.route, "status": self.status, "text": self.text,
            "time_range": self.time_range, "time_from": self.time_from, "time_to": self.time_to,
            "include_replays": self.include_replays,
        }  # fmt: skip
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValidationError(f"no filter {unknown[0]!r}", hint=f"filters: {', '.join(fields)}")
        self._debounced.cancel()
        self._bulk = True
        try:
            for name, value in values.items():
                fields[name].value = value
        finally:
            self._bulk = False
        self._search_from_filters()

    _bulk = False

    def _filters_changed(self, change: Any = None) -> None:
        if not self._bulk:
            self._debounced()

    def _filters_committed(self, change: Any = None) -> None:
        if not self._bulk:
            self._debounced.cancel()
            self._search_from_filters()

    def _text_message(self, widget: Any, content: Any, buffers: Any = None) -> None:
        if isinstance(content, Mapping) and content.get("event") == "submit":
            self.submit()

    def submit(self) -> None:
        """Enter in the Search field: search now. A search the pause still holds runs now, and
        only once; when the results already answer these filters, nothing is asked again."""
        if self._debounced.pending:
            self._debounced.flush()
        elif self.filters() != self._searched:
            self._search_from_filters()

    def _range_changed(self, change: Any) -> None:
        self.custom_range.layout.display = None if change["new"] == "custom" else "none"
        self._filters_changed()

    def _search_from_filters(self) -> None:
        # New filters: back to the first page (without a second search for the page change).
        self._paging = True
        try:
            self.table.page = 0
        finally:
            self._paging = False
        self.refresh()

    _paging = False

    def _page_changed(self, change: Any) -> None:
        if not self._paging:
            self.refresh()

    # ---------------------------------------------------------------- search

    def refresh(self) -> None:
        """Search now with the current filters, sort and page; show the page or the error."""
        self._debounced.cancel()
        try:
            filters = self.filters()
            size = self.table.page_size
            page = self.platform.executions(
                limit=size, offset=self.table.page * size, sort=self.table.sort or None, **filters
            )
            self.table.loading = True
            hits = list(page)
            total = len(self.platform.executions(**filters)) if (hits or self.table.page) else 0
        except MoatError as exc:
            self._searched = None
            # The rows go with the search that failed: left up, they looked like the answer to
            # the filters now shown (lab walk). The exchange already picked stays picked.
            self.records = []
            self.total = 0
            with self.table.hold_trait_notifications():
                self.table.show_page([], 0)
                self.table.loading = False
            self._show(describe_error(exc, "search the history"))
            return
        self.records = [execution_record(h) for h in hits]
        self.total = total
        self._searched = filters
        with self.table.hold_trait_notifications():
            self.table.show_page(self.records, total)
            self.table.loading = False
        self._show(None)
        self.searches += 1

    def _show(self, message: Message | None) -> None:
        self.message.value = message.html() if message is not None else ""

    # ---------------------------------------------------------------- selection

    def _row_selected(self, change: Any) -> None:
        if self._reverting:
            return
        key = change["new"]
        if not key:
            self.value = None
            self.selection.value = ""
            return
        self._load(key)

    def _load(self, execution_id: str) -> None:
        try:
            execution = self.platform.execution(execution_id)
        except MoatError as exc:
            self._show(describe_error(exc, "open the execution"))
            # The highlight goes back to the exchange still picked: the clicked row stayed
            # highlighted while the editor kept the previous exchange, which Replay would send.
            self._reverting = True
            try:
                self.table.selected = self.value.execution_id if self.value is not None else ""
            finally:
                self._reverting = False
            return
        self._show(None)
        self.value = execution
        self.selection.value = (
            "<div class='moat-msg moat-msg-info' role='status'><strong>Picked</strong> "
            f"<code>{html.escape(execution.exchange_id)}</code> · {html.escape(execution.route_id)} · "
            f"{html.escape(execution.environment or '')} · {html.escape(execution.status)} · "
            f"{html.escape(format_time_cell(execution.start_time))} · "
            f"{execution.processor_count} processors ({html.escape(execution.capture_mode)} capture)</div>"
        )

    _reverting = False

    def select(self, execution_id: str) -> None:
        """Select an execution by id (it need not be on the page shown)."""
        if self.table.selected == execution_id:
            self._load(execution_id)
        else:
            self.table.selected = execution_id

    def select_row(self, index: int) -> None:
        """Select the ``index``-th row of the page shown (as a click on it does)."""
        self.table.select_index(index)

    def to_pandas(self) -> Any:
        """The page shown, as a pandas frame of its records."""
        import pandas as pd

        return pd.DataFrame.from_records(
            self.records, columns=[c.key for c in EXECUTION_COLUMNS] + ["execution_id"]
        )

    @property
    def results(self) -> list[Mapping[str, Any]]:
        """The records of the page shown."""
        return list(self.records)
