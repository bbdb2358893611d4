"""A sortable, paged, keyboard-friendly table widget (anywidget; browser side ``widgets/data_table.js``).

The kernel owns the data and the browser draws one page of it. Two ways to feed it:

* **local**: :meth:`DataTable.set_records` hands over every record; sorting and paging happen
  here, in Python, on the raw values (numbers sort as numbers, missing values last);
* **remote**: the owner (the exchange picker, whose rows live on the server) observes ``sort``
  and ``page``, fetches that page and calls :meth:`DataTable.show_page`.

Cells are formatted in Python by each :class:`Column`'s ``format``, so the browser only prints
text; ``_key`` identifies a row (``selected`` holds the selected row's key) and ``_class`` adds
CSS classes to it (``moat-row-noise``, ``moat-row-divergent``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anywidget
import pandas as pd
import traitlets

from .assets import asset

__all__ = ["Column", "DataTable", "format_cell", "format_ms", "format_time_cell", "sort_records"]


def format_ms(value: Any) -> str:
    """Milliseconds as a person reads them: ``0.40 ms``, ``12.5 ms``, ``1.25 s``."""
    if _missing(value):
        return ""
    ms = float(value)
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.1f} ms" if ms >= 1 else f"{ms:.2f} ms"


def format_time_cell(value: Any) -> str:
    """A time as ``2026-01-11 23:37:30.256Z`` (UTC, milliseconds: section 3's precision)."""
    if _missing(value):
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    text = str(value)
    return text.replace("T", " ")


def format_cell(value: Any) -> str:
    """Any value as one line of text (None, NaN, NA as empty)."""
    if _missing(value):
        return ""
    if isinstance(value, datetime):
        return format_time_cell(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return text if len(text) <= 300 else text[:299] + "…"


@dataclass(frozen=True)
class Column:
    """One column: ``key`` in the records, ``label`` shown, ``kind`` (``text``, ``number``,
    ``status``, ``code``, ``wrap``) for alignment and look, ``desc_first`` when the first click
    should sort descending (times, durations), ``format`` to turn a value into text."""

    key: str
    label: str
    sortable: bool = True
    kind: str = "text"
    desc_first: bool = False
    format: Callable[[Any], str] | None = None

    def spec(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "sortable": self.sortable,
            "kind": self.kind,
            "desc_first": self.desc_first,
        }

    def text(self, value: Any) -> str:
        return (self.format or format_cell)(value)


def _missing(value: Any) -> bool:
    # None, NaN, and pandas' NA / NaT (records taken from a frame carry those).
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def sort_records(records: Sequence[Mapping[str, Any]], sort: str) -> list[Mapping[str, Any]]:
    """``records`` sorted by ``"key:asc"`` / ``"key:desc"``; missing values last either way;
    values of mixed types compare as text. Stable, so equal keys keep their order."""
    key, _, direction = sort.partition(":")
    if not key:
        return list(records)
    present = [r for r in records if not _missing(r.get(key))]
    absent = [r for r in records if _missing(r.get(key))]
    values = [r.get(key) for r in present]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    timed = all(isinstance(v, datetime) for v in values)
    if numeric or timed:
        ordered = sorted(present, key=lambda r: r.get(key), reverse=direction == "desc")  # type: ignore[arg-type, return-value]
    else:
        ordered = sorted(present, key=lambda r: str(r.get(key)), reverse=direction == "desc")
    return ordered + absent


class DataTable(anywidget.AnyWidget):
    """A table of records, one page at a time. See the module docstring.

    Traits (synced with the browser): ``columns``, ``rows`` (the page, formatted), ``sort``,
    ``page``, ``page_size``, ``total``, ``selected`` (a row key, ``""`` for none),
    ``loading``, ``caption``, ``empty_text``, ``max_height`` (px; 0: no limit), ``follow``
    (keep the view scrolled to the last row, for tables that fill while you watch).
    """

    _esm = asset("data_table.js")
    _css = asset("moat.css") + asset("data_table.css")

    columns = traitlets.List(traitlets.Dict()).tag(sync=True)
    rows = traitlets.List(traitlets.Dict()).tag(sync=True)
    sort = traitlets.Unicode("").tag(sync=True)
    page = traitlets.Int(0).tag(sync=True)
    page_size = traitlets.Int(10).tag(sync=True)
    total = traitlets.Int(None, allow_none=True).tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    loading = traitlets.Bool(False).tag(sync=True)
    caption = traitlets.Unicode("").tag(sync=True)
    empty_text = traitlets.Unicode("No rows").tag(sync=True)
    max_height = traitlets.Int(0).tag(sync=True)
    follow = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        key: str | Callable[[Mapping[str, Any]], str] | None = None,
        remote: bool = False,
        row_class: Callable[[Mapping[str, Any]], str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(columns=[c.spec() for c in columns], **kwargs)
        self._columns = list(columns)
        self._key = key
        self.remote = remote
        self._row_class = row_class
        self._records: list[Mapping[str, Any]] = []
        #: The records of the page shown, raw (``rows`` holds them formatted), by key.
        self.page_records: dict[str, Mapping[str, Any]] = {}
        if not remote:
            self.observe(self._local_view, names=["sort", "page", "page_size"])

    # ------------------------------------------------------------------ feeding

    def _key_of(self, record: Mapping[str, Any], index: int) -> str:
        if callable(self._key):
            return str(self._key(record))
        if isinstance(self._key, str):
            return str(record.get(self._key))
        return str(index)

    def _format(self, records: Iterable[Mapping[str, Any]], start: int) -> list[dict[str, Any]]:
        out = []
        self.page_records = {}
        for i, record in enumerate(records):
            key = self._key_of(record, start + i)
            row = {c.key: c.text(record.get(c.key)) for c in self._columns}
            row["_key"] = key
            if self._row_class is not None:
                row["_class"] = self._row_class(record)
            self.page_records[key] = record
            out.append(row)
        return out

    @property
    def records(self) -> list[Mapping[str, Any]]:
        """All records (local mode), in the current sort order."""
        return sort_records(self._records, self.sort)

    def set_records(self, records: Iterable[Mapping[str, Any]], *, keep_page: bool = False) -> None:
        """Local mode: show these records (sorted by ``sort``, from page 0 unless ``keep_page``)."""
        self._records = list(records)
        pages = max(1, math.ceil(len(self._records) / max(1, self.page_size)))
        with self.hold_trait_notifications():
            if not keep_page:
                self.page = 0
            elif self.page >= pages:
                self.page = pages - 1
            self.total = len(self._records)
        self._local_view()

    def append_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Local mode: add records at the end (a trace filling while it runs)."""
        self._records.extend(records)
        self.total = len(self._records)
        self._local_view()

    def _local_view(self, change: Any = None) -> None:
        ordered = sort_records(self._records, self.sort)
        start = self.page * self.page_size
        self.rows = self._format(ordered[start : start + self.page_size], start)

    def show_page(self, records: Iterable[Mapping[str, Any]], total: int | None) -> None:
        """Remote mode: the page the owner fetched for the current ``sort`` and ``page``."""
        with self.hold_trait_notifications():
            self.rows = self._format(records, self.page * self.page_size)
            self.total = total

    def clear(self) -> None:
        self._records = []
        with self.hold_trait_notifications():
            self.rows = []
            self.total = 0 if not self.remote else None
            self.selected = ""
            self.page = 0

    # ------------------------------------------------------------------ reading

    def select(self, key: str) -> None:
        """Select the row with this key (as a click on it does)."""
        self.selected = key

    def select_index(self, index: int) -> None:
        """Select the ``index``-th row of the page shown."""
        self.selected = self.rows[index]["_key"]

    @property
    def selected_record(self) -> Mapping[str, Any] | None:
        """The raw record of the selected row, when it is on the page shown."""
        return self.page_records.get(self.selected) if self.selected else None
