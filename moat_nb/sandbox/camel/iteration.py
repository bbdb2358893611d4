"""``split`` and ``loop``: the EIPs that run their steps once per item or turn.

The nested records carry the item's or turn's index as their ``iteration`` (Cameleer's flat
record), and the exchange carries Camel's properties: ``CamelSplitIndex``, ``CamelSplitSize``,
``CamelSplitComplete`` on each split copy, ``CamelLoopIndex`` and ``CamelLoopSize`` in a loop.

* ``split`` without ``aggregationStrategy`` leaves the original body (Camel's
  ``UseOriginalAggregationStrategy``); a failed item fails the split after the remaining items
  ran, with the last failed item's exception (that strategy propagates the newest one), unless
  ``stopOnException: true`` stops at once with a ``org.apache.camel.CamelExchangeException``
  ("Multicast processing failed for number N") caused by the item's exception.
  An ``aggregationStrategy`` is a registered bean: an object
  with ``aggregate(old_exchange, new_exchange) -> Exchange`` (Camel's ``AggregationStrategy``)
  or a plain callable ``(old_body, new_body) -> body`` called with ``old_body=None`` first (a
  POJO strategy with ``aggregationStrategyMethodAllowNull: true``); or one of Camel's own:
  ``GroupedBodyAggregationStrategy``, ``UseLatestAggregationStrategy``,
  ``UseOriginalAggregationStrategy``.
* ``loop`` with ``doWhile`` stops after :data:`MAX_LOOP_ITERATIONS` turns with a
  ``java.lang.IllegalStateException``: a sandbox must not spin for ever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .conversion import convert_to, to_text
from .exchange import Exchange
from .failure import ExchangeFailure, failure_from_python
from .language import Expression
from .processors import WithSteps

if TYPE_CHECKING:
    from .trace import Run

__all__ = [
    "MAX_LOOP_ITERATIONS",
    "BUILTIN_AGGREGATIONS",
    "Aggregation",
    "Loop",
    "Split",
    "aggregation_for",
    "split_items",
]

#: ``loop: {doWhile: true}`` gives up after this many turns.
MAX_LOOP_ITERATIONS = 10_000


def _split_text(text: str, delimiter: str | None) -> list[str]:
    # support.ObjectHelper.createStringIterator: a text holding the delimiter splits on it, one
    # leading and one trailing delimiter skipped (StringHelper.splitOnCharacterAsIterator for the
    # default comma, StringIterator for any other); otherwise the text is one item unless it is
    # blank (ObjectHelper.isNotEmpty). ``delimiter: false`` (None here) never splits text.
    if delimiter is None or delimiter not in text:
        return [text] if text.strip() else []
    if text.startswith(delimiter):
        text = text[len(delimiter) :]
    if text.endswith(delimiter):
        text = text[: -len(delimiter)]
    return text.split(delimiter)


def split_items(value: Any, delimiter: str | None = ",") -> list[Any]:
    """What a split iterates over: Camel's ``ObjectHelper.createIterator(value, delimiter)``,
    less the ``null`` items the ``Splitter`` drops (``if (part != null)``: no sub-exchange,
    not counted in ``CamelSplitSize``)."""
    if value is None:
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return [item for item in value if item is not None]
    if isinstance(value, dict):
        return [{k: v} for k, v in value.items()]  # a Map splits into its entries
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return _split_text(value, delimiter)  # type: ignore[return-value]
    return [value]


class Aggregation:
    """How a split gathers its items' results (see the module doc for the bean conventions)."""

    __slots__ = ("name", "kind", "target")

    def __init__(self, name: str, kind: str, target: Any = None) -> None:
        self.name = name
        self.kind = kind  # "exchange" | "body" | "groupedBody" | "useLatest" | "useOriginal" | "lookup"
        self.target = target


#: Camel's own aggregation strategies, by class and short name.
BUILTIN_AGGREGATIONS: dict[str, str] = {
    "org.apache.camel.processor.aggregate.GroupedBodyAggregationStrategy": "groupedBody",
    "GroupedBodyAggregationStrategy": "groupedBody",
    "org.apache.camel.processor.aggregate.UseLatestAggregationStrategy": "useLatest",
    "UseLatestAggregationStrategy": "useLatest",
    "org.apache.camel.processor.aggregate.UseOriginalAggregationStrategy": "useOriginal",
    "UseOriginalAggregationStrategy": "useOriginal",
}


def aggregation_for(name: str, bean: Any) -> Aggregation:
    """The :class:`Aggregation` for a registered bean or a built-in strategy name."""
    builtin = BUILTIN_AGGREGATIONS.get(name)
    if builtin is not None:
        return Aggregation(name, builtin)
    if bean is None:
        return Aggregation(name, "lookup")
    if callable(getattr(bean, "aggregate", None)):
        return Aggregation(name, "exchange", bean)
    return Aggregation(name, "body", bean)


class Split(WithSteps):
    """``split``: run the steps once per item of the expression's value, each on a copy."""

    __slots__ = ("expression", "aggregation", "stop_on_exception", "delimiter")
    processor_type = "split"
    ends_with_children = False

    def __init__(
        self,
        *args: Any,
        expression: Expression,
        aggregation: Aggregation | None,
        stop_on_exception: bool = False,
        delimiter: str | None = ",",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.expression = expression
        self.aggregation = aggregation
        self.stop_on_exception = stop_on_exception
        #: How a text value splits: Camel's ``delimiter`` option (a comma by default; ``None``
        #: for ``delimiter: false``, which keeps a text whole).
        self.delimiter = delimiter

    def _strategy(self, run: Run) -> Aggregation | None:
        agg = self.aggregation
        if agg is not None and agg.kind == "lookup":
            bean = run.lookup_bean(agg.name)
            return aggregation_for(agg.name, bean)
        return agg

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        items = split_items(self.expression.evaluate(exchange), self.delimiter)
        strategy = self._strategy(run)
        kind = strategy.kind if strategy is not None else None
        size = len(items)
        context = exchange.context
        first_failure: ExchangeFailure | None = None
        aggregated: Any = None  # the running body, or the running Exchange for "exchange"
        have_result = False
        for index, item in enumerate(items):
            sub = exchange.copy(context.next_id())
            sub.body = item
            props = sub.properties
            props["CamelSplitIndex"] = index
            props["CamelSplitSize"] = size
            props["CamelSplitComplete"] = index == size - 1
            try:
                run.pipeline(self.steps, sub, seq, depth + 1, index)
            except ExchangeFailure as failure:
                sub.exception = failure
                if self.stop_on_exception:
                    raise ExchangeFailure(
                        "org.apache.camel.CamelExchangeException",
                        f"Multicast processing failed for number {index}. "
                        f"Exchange[{sub.exchange_id}]. Caused by: "
                        f"[{failure.error_type} - {failure.message_text}]",
                        cause=failure,
                    ) from None
                # Camel's default (no aggregationStrategy) is UseOriginalAggregationStrategy with
                # propagateException=true, whose checkException prefers the newest sub-exchange's
                # exception: the split ends with the LAST failed item's exception (Split EIP page,
                # "Stop processing in case of exception": the remaining items still run).
                if first_failure is None or kind is None or kind == "useOriginal":
                    first_failure = failure
                if kind != "exchange":
                    continue
            if kind is None or kind == "useOriginal":
                continue
            try:
                if kind == "exchange":
                    result = strategy.target.aggregate(aggregated if have_result else None, sub)  # type: ignore[union-attr]
                    aggregated = result if result is not None else sub
                elif kind == "body":
                    aggregated = strategy.target(aggregated if have_result else None, sub.body)  # type: ignore[union-attr]
                elif kind == "groupedBody":
                    if not have_result:
                        aggregated = []
                    aggregated.append(sub.body)
                else:  # useLatest
                    aggregated = sub
            except ExchangeFailure:
                raise
            except Exception as err:
                raise failure_from_python(err) from err
            finally:
                if kind in ("exchange", "body"):
                    run.forget()
            have_result = True
        if have_result:
            if isinstance(aggregated, Exchange):
                exchange.body = aggregated.body
                exchange.headers = aggregated.headers.copy()
                exchange.properties.update(aggregated.properties)
                if kind == "exchange":
                    failure = aggregated.exception
                    first_failure = failure if isinstance(failure, ExchangeFailure) else None
            else:
                exchange.body = aggregated
        if first_failure is not None:
            raise first_failure
        return None


class Loop(WithSteps):
    """``loop``: run the steps N times (or while ``doWhile``'s predicate holds).

    The index is the ``CamelLoopIndex`` property (and the ``iteration`` of the nested records),
    the count ``CamelLoopSize``. Without ``copy`` each turn sees the previous turn's result;
    with ``copy: true`` each turn starts from a copy of the input and the last turn's result
    is the loop's.
    """

    __slots__ = ("expression", "do_while", "copy")
    processor_type = "loop"
    ends_with_children = False

    def __init__(
        self, *args: Any, expression: Expression, do_while: bool = False, copy: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.expression = expression
        self.do_while = do_while
        self.copy = copy

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        # Camel's LoopProcessor.LoopState: the count is the expression's value as a String,
        # converted to a mandatory Integer (a null count is a NoTypeConversionAvailableException,
        # "3.5" a TypeConversionException), and CamelLoopSize goes on the exchange before the
        # first turn (so also when the count is 0). Each turn runs while
        # PipelineHelper.continueProcessing holds (no exception, no route stop), the doWhile
        # predicate (tested on the last turn's exchange) matches and index < count. A copy
        # turn is ExchangeHelper.createCopy(exchange, true): the original's copy, same id.
        count = 0
        if not self.do_while:
            value = self.expression.evaluate(exchange)
            if value is None:
                raise ExchangeFailure(
                    "org.apache.camel.NoTypeConversionAvailableException",
                    "No type converter available to convert from type: null to the required type: "
                    "java.lang.Integer",
                )
            count = convert_to(value if type(value) is int else to_text(value), "java.lang.Integer")
            exchange.properties["CamelLoopSize"] = count
        current = exchange
        index = 0
        while not current.route_stop:
            if self.do_while:
                if not self.expression.matches(current):
                    break
                if index >= MAX_LOOP_ITERATIONS:
                    raise ExchangeFailure(
                        "java.lang.IllegalStateException",
                        f"loop {self.processor_id} ran {MAX_LOOP_ITERATIONS} times and its doWhile "
                        "predicate still holds; the sandbox stops it",
                    )
            elif index >= count:
                break
            current = exchange.copy(exchange.exchange_id) if self.copy else exchange
            current.properties["CamelLoopIndex"] = index
            run.pipeline(self.steps, current, seq, depth + 1, index)
            index += 1
        if current is not exchange:  # ExchangeHelper.copyResults(exchange, current)
            exchange.body = current.body
            exchange.headers = current.headers
            exchange.properties = current.properties
            exchange.route_stop = current.route_stop
        return None
