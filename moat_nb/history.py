"""Trace history: search filters and the lazily paged result of ``Platform.executions()``.

Two parts:

* pure: :func:`search_filters` turns a notebook user's keyword filters (snake_case, lists,
  ``since="24h"``, datetimes, timedeltas) into the body of ``POST /search/executions``
  (DESIGN.md section 4), failing before any request on a filter the API does not have;
  :class:`Paging` decides which page to ask for next and when to stop.
* :class:`History` / :class:`AsyncHistory`: the result, iterated (``for execution in h``),
  turned into a frame (``h.to_pandas()``, ``h.to_polars()``) or paged (``h.pages()``); nothing is
  fetched until it is used, and never more rows than asked for.

Paging is by ``offset`` because that is what the API offers. The default order (newest first)
puts executions recorded while a result is being read at its top, which shifts later pages by
as many rows: :class:`Paging` drops an execution it has already given out, so a shifted page
repeats nothing; executions are never deleted, so a shift never skips one.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa

from .errors import RecordError, ValidationError
from .frames import EXECUTION_SCHEMA, Backend, executions_table, to_frame
from .model import EXECUTION_STATUSES, Execution, format_time, parse_time

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "AsyncHistory",
    "History",
    "Paging",
    "count_argument",
    "instant",
    "parse_duration",
    "search_filters",
]

#: Rows per request unless told (section 4: the server gives at most 1000).
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 1000
#: ``to_pandas()`` / ``to_polars()`` refuse a result larger than this unless told otherwise.
DEFAULT_MAX_ROWS = 1_000_000

# snake_case keyword -> camelCase filter of POST /search/executions (section 4; the three
# text-in-X filters are Cameleer's, which the sandbox also has).
_FILTERS = {
    "environment": "environment",
    "application": "application",
    "application_id": "application",
    "route_id": "routeId",
    "status": "status",
    "time_from": "timeFrom",
    "time_to": "timeTo",
    "correlation_id": "correlationId",
    "exchange_id": "exchangeId",
    "text": "text",
    "text_in_body": "textInBody",
    "text_in_headers": "textInHeaders",
    "text_in_errors": "textInErrors",
    "duration_min": "durationMin",
    "duration_max": "durationMax",
    "is_replay": "isReplay",
    "replay_id": "replayId",
    "source_exchange_id": "sourceExchangeId",
    "offset": "offset",
    "sort": "sort",
}
# Filters that take one value or a list of values ("any of").
_LISTS = frozenset(
    {
        "environment",
        "application",
        "routeId",
        "status",
        "correlationId",
        "exchangeId",
        "replayId",
        "sourceExchangeId",
    }
)
_CONVENIENCE = ("since", "until")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
#: A calendar date without a time ("2026-11-20"): a day, as a ``date`` is (midnight UTC).
_DATE = re.compile(r"\s*\d{4}-\d{2}-\d{2}\s*")
_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"15m"``, ``"24h"``, ``"7d"``, ``"2w"``, ``"250ms"`` as a timedelta."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValidationError(
            f"{text!r} is not a duration",
            code="BAD_DURATION",
            hint='write a number and a unit: "30s", "15m", "24h", "7d", "2w"',
        )
    try:
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])
    except OverflowError:  # timedelta holds under a billion days; "99999999999w" is more
        raise ValidationError(
            f"{text!r} is longer than a duration can be",
            code="BAD_DURATION",
            hint='write a shorter one ("52w" is a year), or pass a datetime for a fixed point in time',
        ) from None


def instant(name: str, value: Any, now: datetime) -> str:
    """A point in time for ``timeFrom``/``timeTo``: a datetime, a date or ``"2026-11-20"``
    (midnight UTC), an RFC 3339 string, or how long ago (a timedelta or a duration string like
    ``"24h"``)."""
    if isinstance(value, timedelta):
        return _ago(name, value, now, value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationError(
                f"{name}={value.isoformat()} has no time zone",
                code="BAD_TIME",
                hint="pass an aware datetime, e.g. datetime(2026, 1, 1, tzinfo=UTC)",
            )
        return format_time(value)  # type: ignore[return-value]
    if isinstance(value, date):
        return format_time(datetime(value.year, value.month, value.day, tzinfo=UTC))  # type: ignore[return-value]
    if isinstance(value, str):
        if _DURATION.match(value):
            return _ago(name, parse_duration(value), now, value)
        if _DATE.fullmatch(value):
            # A day as text is the day a date object is (midnight UTC): it was refused as "has no
            # offset" while date(2026, 11, 20) was taken. A time of day without an offset stays
            # refused, as a naive datetime is: local or UTC cannot be told.
            try:
                day = date.fromisoformat(value.strip())
            except ValueError:
                raise ValidationError(
                    f"{name}={value!r} is not a date",
                    code="BAD_TIME",
                    hint="write a date as YYYY-MM-DD (2026-11-20), or an RFC 3339 time",
                ) from None
            return instant(name, day, now)
        try:
            return format_time(parse_time(value))  # type: ignore[return-value]
        except RecordError as exc:
            raise ValidationError(
                f"{name}={value!r}: {exc.message}",
                code="BAD_TIME",
                hint='pass an RFC 3339 time (2026-11-26T13:09:44Z), a datetime, or a duration like "24h"',
            ) from None
    raise ValidationError(
        f"{name}={value!r} is not a time",
        code="BAD_TIME",
        hint='pass a datetime, an RFC 3339 string, a timedelta or a duration like "24h"',
    )


def _ago(name: str, span: timedelta, now: datetime, given: Any) -> str:
    """``now - span`` as RFC 3339 text; a span reaching past year 1 (or 9999) is refused in
    words: datetime raised a bare OverflowError for ``since="99999999w"``."""
    try:
        return format_time(now - span)  # type: ignore[return-value]
    except OverflowError:
        raise ValidationError(
            f"{name}={given!r} reaches outside the years 1 to 9999",
            code="BAD_TIME",
            hint='give a shorter span ("30d", "52w") or a datetime; to search all history leave it out',
        ) from None


def _milliseconds(name: str, value: Any) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds() * 1000
    if isinstance(value, str):
        return parse_duration(value).total_seconds() * 1000
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            # JSON has no NaN or infinity: httpx refused the body with a bare ValueError.
            raise ValidationError(
                f"{name}={value!r} is not a number of milliseconds",
                code="BAD_DURATION",
                hint=f"pass a finite number, or leave {name} out (None) for no bound",
            )
        return value
    raise ValidationError(
        f"{name}={value!r} is not a duration",
        code="BAD_DURATION",
        hint="pass milliseconds, a timedelta or a string like '250ms'",
    )


def search_filters(filters: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The ``POST /search/executions`` body (camelCase) for keyword filters.

    Every section 4 filter in snake_case (``route_id``, ``time_from``, ``is_replay`` ...) plus:
    ``since`` / ``until`` (a datetime, RFC 3339 text, a timedelta or ``"24h"``: that long before
    ``now``), lists for the equality filters (``status=["FAILED", "RUNNING"]``: any of),
    lower-case statuses, timedeltas for ``duration_min`` / ``duration_max``, and ``sort`` in
    snake_case (``"duration_ms:desc"``). ``None`` means "no filter". Raises ValidationError
    for a name the API does not have. ``limit`` is not a filter here: :class:`Paging` owns it.
    """
    body: dict[str, Any] = {}
    for key, value in filters.items():
        if value is None:
            continue
        if (
            type(value).__module__ == "numpy"
            and getattr(getattr(value, "dtype", None), "kind", "-") in "biuf"
        ):
            # A number read from a frame (df.is_replay.iloc[0] is a numpy bool, an Int64 cell a
            # numpy int): the Python value it holds. A numpy bool reached the request as it was
            # and failed there with "TypeError: Object of type bool is not JSON serializable";
            # a numpy int of milliseconds was "not a duration". Only numbers: a datetime64 or
            # timedelta64 in nanoseconds would become an int, read as milliseconds.
            value = value.tolist()
        if key in _CONVENIENCE:
            target = "timeFrom" if key == "since" else "timeTo"
            other = "time_from" if key == "since" else "time_to"
            if filters.get(other) is not None:
                raise ValidationError(
                    f"{key}= and {other}= both given", code="VALIDATION", hint=f"pass one of {key}=, {other}="
                )
            body[target] = instant(key, value, now)
            continue
        name = _FILTERS.get(key)
        if name is None:
            raise ValidationError(
                f"executions() has no filter {key!r}",
                code="UNKNOWN_FILTER",
                hint="filters: "
                + ", ".join(sorted({*_FILTERS, *_CONVENIENCE}))
                + "; and limit=, max_rows=, page_size=",
                details={"filter": key},
            )
        if name in body:
            raise ValidationError(f"filter {name!r} given twice", code="VALIDATION", hint=f"drop {key}=")
        if name in ("timeFrom", "timeTo"):
            value = instant(key, value, now)
        elif name in ("durationMin", "durationMax"):
            value = _milliseconds(key, value)
        elif name == "isReplay" and not isinstance(value, bool | str):
            # pandas' missing value (pd.NA) failed in the request's JSON encoder, a bare TypeError.
            raise ValidationError(
                f"{key}={value!r} is not True or False",
                code="VALIDATION",
                hint=f"pass {key}=True (replays only), False (recorded exchanges only) or None (both)",
            )
        elif name == "sort":
            field_name, _, direction = str(value).partition(":")
            head, *rest = field_name.strip().split("_")
            value = (
                head + "".join(p[:1].upper() + p[1:] for p in rest) + (f":{direction}" if direction else "")
            )
        elif name in _LISTS:
            if not isinstance(value, str) and (not isinstance(value, Iterable) or isinstance(value, Mapping)):
                raise ValidationError(
                    f"{key}={value!r}: give a string or a list of strings, not {type(value).__name__}",
                    code="VALIDATION",
                    hint=f'e.g. {key}="staging" or {key}=["dev", "staging"]',
                )
            values = [value] if isinstance(value, str) else list(value)
            if not values or not all(isinstance(v, str) for v in values):
                raise ValidationError(
                    f"{key}={value!r}: give a string or a list of strings",
                    code="VALIDATION",
                    hint=f"give at least one value, or leave {key} out (None) for no filter on it"
                    if not values
                    else f'e.g. {key}="staging" or {key}=["dev", "staging"]',
                )
            if name == "status":
                values = [v.upper() for v in values]
                bad = [v for v in values if v not in EXECUTION_STATUSES]
                if bad:
                    raise ValidationError(
                        f"status {bad[0]!r} is not an execution status",
                        code="VALIDATION",
                        hint=f"statuses: {', '.join(EXECUTION_STATUSES)}",
                    )
            value = values[0] if len(values) == 1 else values
        body[name] = value
    return body


# --------------------------------------------------------------------------- paging (pure)


def count_argument(name: str, value: Any, *, optional: bool = True) -> int | None:
    """``value`` of a count argument (``limit``, ``page_size``, ``max_rows``, ``offset``) as an
    int, None as None when ``optional``; ``ValidationError`` (``VALIDATION``) for anything else.
    A numpy integer is one; a bool, a float or a string ("5", as a papermill parameter or a
    text field gives it) is refused here rather than failing in a comparison further on."""
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise ValidationError(
        f"{name}={value!r} is not a whole number ({type(value).__name__})",
        code="VALIDATION",
        hint=f"pass {name} as an int, e.g. {name}=100"
        + (f" (int({value!r}))" if isinstance(value, str) else ""),
        details={"argument": name},
    )


@dataclass
class Paging:
    """Which page to ask for next, and when a result is complete.

    ``limit``: rows to give out at most (None: all that match); ``page_size``: rows per
    request; ``offset``: the first row. Feed every page to :meth:`take`; it returns the rows to
    give out (already given ones dropped, the rest cut at ``limit``).
    """

    filters: dict[str, Any]
    limit: int | None = None
    page_size: int = DEFAULT_PAGE_SIZE
    offset: int = 0
    total: int | None = None
    given: int = 0
    done: bool = False
    _seen: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.limit = count_argument("limit", self.limit)
        self.page_size = count_argument("page_size", self.page_size, optional=False)  # type: ignore[assignment]
        self.offset = count_argument("offset", self.offset) or 0
        self.start = self.offset
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValidationError(
                f"page_size={self.page_size} is not between 1 and {MAX_PAGE_SIZE}",
                code="VALIDATION",
                hint="the server answers at most 1000 rows per request",
            )
        if self.limit is not None and self.limit < 0:
            raise ValidationError(
                f"limit={self.limit} is negative",
                code="VALIDATION",
                hint="pass limit=None for every matching row, or a count of 0 or more",
            )
        if self.limit == 0:
            self.done = True

    def next_body(self) -> dict[str, Any]:
        """The body of the next ``POST /search/executions``."""
        size = self.page_size
        if self.limit is not None:
            # Ask for what is still missing only: never fetch more than asked (issue 5).
            size = max(1, min(size, self.limit - self.given))
        return {**self.filters, "offset": self.offset, "limit": size}

    def take(self, page: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Account for one answer ``{data, total, offset, limit}``; the rows to give out."""
        rows = page.get("data") or []
        asked = self.next_body()["limit"]
        self.total = page.get("total", self.total)
        self.offset += len(rows)
        fresh = []
        for row in rows:
            key = row.get("executionId")
            if key in self._seen:
                continue
            self._seen.add(key)
            fresh.append(row)
        if self.limit is not None:
            fresh = fresh[: self.limit - self.given]
        self.given += len(fresh)
        if len(rows) < asked or (self.limit is not None and self.given >= self.limit):
            self.done = True
        return fresh

    def expected(self) -> int | None:
        """How many rows the whole result will have, once the first page told the total."""
        if self.total is None:
            return None
        rest = max(0, self.total - self.start)
        return rest if self.limit is None else min(rest, self.limit)


# --------------------------------------------------------------------------- results

#: Makes the request operation (a generator of the client's sans-I/O core) for one page body.
PageFetch = Callable[[dict[str, Any]], Generator[Any, Any, dict[str, Any]]]


class _Result:
    """What :class:`History` and :class:`AsyncHistory` share: the query, and the size check."""

    def __init__(
        self,
        fetch: PageFetch,
        filters: dict[str, Any],
        *,
        limit: int | None,
        max_rows: int | None,
        page_size: int,
    ) -> None:
        self._fetch = fetch
        self.filters = filters
        self.limit = count_argument("limit", limit)
        self.max_rows = count_argument("max_rows", max_rows)
        self.page_size = count_argument("page_size", page_size, optional=False)
        self._paging()  # check limit and page_size now, not at first use

    def _paging(self) -> Paging:
        return Paging(
            {k: v for k, v in self.filters.items() if k != "offset"},
            limit=self.limit,
            page_size=self.page_size,
            offset=self.filters.get("offset", 0),
        )

    def _count_body(self) -> dict[str, Any]:
        return {**self.filters, "limit": 1}

    def _count(self, page: Mapping[str, Any]) -> int:
        paging = self._paging()
        paging.total = page.get("total", 0)
        return paging.expected() or 0

    def _check_size(self, paging: Paging) -> None:
        expected = paging.expected()
        if self.max_rows is not None and expected is not None and expected > self.max_rows:
            raise ValidationError(
                f"{expected} executions match, more than max_rows={self.max_rows}",
                code="TOO_MANY_ROWS",
                hint="narrow the filters (since=, status=, ...), pass limit=, raise max_rows=, "
                "or write them to Parquet with platform.export(filters, path)",
                details={"total": paging.total, "maxRows": self.max_rows},
            )

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.filters.items())
        return f"<{type(self).__name__} ({shown}) limit={self.limit} page_size={self.page_size}>"


class History(_Result):
    """The executions matching some filters, fetched page by page as they are used.

    ``for x in history`` yields :class:`~moat_nb.model.Execution` (search hits: no bodies, no
    processors; ``platform.execution(x.execution_id)`` has them). ``to_pandas()`` /
    ``to_polars()`` give a frame of :data:`~moat_nb.frames.EXECUTION_SCHEMA`; ``pages()``
    yields one Arrow table per page; ``len()`` asks the server how many rows the result has.
    Each use runs the query again (it is a view of the history, which grows).
    """

    def __init__(
        self,
        run: Callable[[Generator[Any, Any, Any]], Any],
        fetch: PageFetch,
        filters: dict[str, Any],
        *,
        limit: int | None = None,
        max_rows: int | None = DEFAULT_MAX_ROWS,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        super().__init__(fetch, filters, limit=limit, max_rows=max_rows, page_size=page_size)
        self._run = run

    def _pages(self, *, check: bool = False) -> Iterator[list[dict[str, Any]]]:
        paging = self._paging()
        first = True
        while not paging.done:
            rows = paging.take(self._run(self._fetch(paging.next_body())))
            if first and check:
                self._check_size(paging)
            first = False
            yield rows

    def __len__(self) -> int:
        return self._count(self._run(self._fetch(self._count_body())))

    def __iter__(self) -> Iterator[Execution]:
        for rows in self._pages():
            yield from (Execution.from_wire(r) for r in rows)

    def pages(self) -> Iterator[pa.Table]:
        """One Arrow table per page (what :meth:`~moat_nb.client.Platform.export` writes)."""
        for rows in self._pages(check=False):
            if rows:
                yield executions_table(rows)

    def to_arrow(self) -> pa.Table:
        """All rows as one Arrow table (refused beyond ``max_rows``)."""
        tables = [executions_table(rows) for rows in self._pages(check=True)]
        return pa.concat_tables(tables) if tables else EXECUTION_SCHEMA.empty_table()

    def to_frame(self, backend: Backend = "pandas") -> Any:
        return to_frame(self.to_arrow(), backend)

    def to_pandas(self) -> Any:
        """A pandas frame of :data:`~moat_nb.frames.EXECUTION_SCHEMA`."""
        return self.to_frame("pandas")

    def to_polars(self) -> Any:
        """A polars frame of :data:`~moat_nb.frames.EXECUTION_SCHEMA`."""
        return self.to_frame("polars")


class AsyncHistory(_Result):
    """:class:`History` for :class:`~moat_nb.client.AsyncPlatform`: ``async for x in h``,
    ``await h.to_pandas()``, ``await h.count()``, ``async for table in h.pages()``."""

    def __init__(
        self,
        run: Callable[[Generator[Any, Any, Any]], Awaitable[Any]],
        fetch: PageFetch,
        filters: dict[str, Any],
        *,
        limit: int | None = None,
        max_rows: int | None = DEFAULT_MAX_ROWS,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        super().__init__(fetch, filters, limit=limit, max_rows=max_rows, page_size=page_size)
        self._run = run

    async def _pages(self, *, check: bool = False) -> AsyncIterator[list[dict[str, Any]]]:
        paging = self._paging()
        first = True
        while not paging.done:
            rows = paging.take(await self._run(self._fetch(paging.next_body())))
            if first and check:
                self._check_size(paging)
            first = False
            yield rows

    async def count(self) -> int:
        """How many rows the result has (one request)."""
        return self._count(await self._run(self._fetch(self._count_body())))

    async def __aiter__(self) -> AsyncIterator[Execution]:
        async for rows in self._pages():
            for r in rows:
                yield Execution.from_wire(r)

    async def pages(self) -> AsyncIterator[pa.Table]:
        async for rows in self._pages():
            if rows:
                yield executions_table(rows)

    async def to_arrow(self) -> pa.Table:
        tables = [executions_table(rows) async for rows in self._pages(check=True)]
        return pa.concat_tables(tables) if tables else EXECUTION_SCHEMA.empty_table()

    async def to_frame(self, backend: Backend = "pandas") -> Any:
        return to_frame(await self.to_arrow(), backend)

    async def to_pandas(self) -> Any:
        return await self.to_frame("pandas")

    async def to_polars(self) -> Any:
        return await self.to_frame("polars")
