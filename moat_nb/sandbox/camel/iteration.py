"""``split`` and ``loop``: the EIPs that run their steps once per item or turn.

The nested records carry the item's or turn's index as their ``iteration`` (Cameleer's flat
record), and the exchange carries Camel's properties: ``CamelSplitIndex``, ``CamelSplitSize``,
``CamelSplitComplete`` on each split copy, ``CamelLoopIndex`` and ``CamelLoopSize`` in a loop.

* ``split`` without ``aggregationStrategy`` leaves the original body (Camel's
  ``UseOriginalAggregationStrategy``). A failed item does not stop the split unless
  ``stopOnException: true``, which stops at once with a ``org.apache.camel.CamelExchangeException``
  ("Multicast processing failed for number N") caused by the item's exception. Otherwise the
  failed copy is aggregated like any other and the split ends with the failure the strategy's
  result keeps (``Split._aggregate``): the last failed item's without a strategy, with
  ``UseLatestAggregationStrategy`` or with ``shareUnitOfWork: true``; only the first item's with
  ``GroupedBodyAggregationStrategy`` or a callable (their result is the first copy); whatever
  an ``aggregate(old, new)`` object returns. Whatever the strategy's result is (not the
  original), its body, headers and properties are copied back onto the original exchange,
  ``CamelSplitIndex``/``Size``/``Complete`` included (``ExchangeHelper.copyResults``).
  An ``aggregationStrategy`` is a registered bean: an object
  with ``aggregate(old_exchange, new_exchange) -> Exchange`` (Camel's ``AggregationStrategy``)
  or a plain callable ``(old_body, new_body) -> body`` (a POJO strategy, Camel's
  ``AggregationStrategyBeanAdapter``): not called for the first item, whose copy starts the
  result as it is, unless ``aggregationStrategyMethodAllowNull: true``, which calls it with
  ``old_body=None`` first; or one of Camel's own:
  ``GroupedBodyAggregationStrategy``, ``UseLatestAggregationStrategy``,
  ``UseOriginalAggregationStrategy``.
* Each copy carries ``CamelCorrelationId``, the original's exchange id; a failed copy carries
  its exception in ``CamelExceptionCaught`` and ``CamelFailureRouteId`` (the route's error
  handler puts them there, :mod:`.error_handler`) unless the split runs inside a ``doTry``
  (its exchange carries ``TryRouteBlock``, also in a ``direct:`` sub-route called from one),
  where Camel runs no error handler for the items.
* ``loop`` with ``doWhile`` stops after :data:`MAX_LOOP_ITERATIONS` turns with a
  ``java.lang.IllegalStateException``: a sandbox must not spin for ever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .conversion import convert_to, to_text
from .error_handler import EXCEPTION_CAUGHT, FAILURE_ROUTE_ID, TRY_ROUTE_BLOCK, handle_failure
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

    __slots__ = ("name", "kind", "target", "allow_null")

    def __init__(self, name: str, kind: str, target: Any = None, allow_null: bool = False) -> None:
        self.name = name
        self.kind = kind  # "exchange" | "body" | "groupedBody" | "useLatest" | "useOriginal" | "lookup"
        self.target = target
        #: ``aggregationStrategyMethodAllowNull``: whether a callable ("body") strategy is called
        #: for the first item, with ``old_body=None`` (AggregationStrategyBeanAdapter's
        #: allowNullOldExchange). Camel's SplitReifier applies it to POJO and BiFunction
        #: adapters only; an AggregationStrategy object or a built-in ignores it, as here.
        self.allow_null = allow_null


#: Camel's own aggregation strategies, by class and short name.
BUILTIN_AGGREGATIONS: dict[str, str] = {
    "org.apache.camel.processor.aggregate.GroupedBodyAggregationStrategy": "groupedBody",
    "GroupedBodyAggregationStrategy": "groupedBody",
    "org.apache.camel.processor.aggregate.UseLatestAggregationStrategy": "useLatest",
    "UseLatestAggregationStrategy": "useLatest",
    "org.apache.camel.processor.aggregate.UseOriginalAggregationStrategy": "useOriginal",
    "UseOriginalAggregationStrategy": "useOriginal",
}


def aggregation_for(name: str, bean: Any, allow_null: bool = False) -> Aggregation:
    """The :class:`Aggregation` for a registered bean or a built-in strategy name."""
    builtin = BUILTIN_AGGREGATIONS.get(name)
    if builtin is not None:
        return Aggregation(name, builtin, allow_null=allow_null)
    if bean is None:
        return Aggregation(name, "lookup", allow_null=allow_null)
    if callable(getattr(bean, "aggregate", None)):
        return Aggregation(name, "exchange", bean, allow_null=allow_null)
    return Aggregation(name, "body", bean, allow_null=allow_null)


class Split(WithSteps):
    """``split``: run the steps once per item of the expression's value, each on a copy."""

    __slots__ = (
        "expression",
        "aggregation",
        "stop_on_exception",
        "delimiter",
        "share_unit_of_work",
    )
    processor_type = "split"
    ends_with_children = False

    def __init__(
        self,
        *args: Any,
        expression: Expression,
        aggregation: Aggregation | None,
        stop_on_exception: bool = False,
        delimiter: str | None = ",",
        share_unit_of_work: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.expression = expression
        self.aggregation = aggregation
        self.stop_on_exception = stop_on_exception
        #: Camel's ``shareUnitOfWork``: only its aggregation side is modelled (a failed copy's
        #: exception and error properties are copied onto the result,
        #: ShareUnitOfWorkAggregationStrategy).
        self.share_unit_of_work = share_unit_of_work
        #: How a text value splits: Camel's ``delimiter`` option (a comma by default; ``None``
        #: for ``delimiter: false``, which keeps a text whole).
        self.delimiter = delimiter

    def _strategy(self, run: Run) -> Aggregation | None:
        agg = self.aggregation
        if agg is not None and agg.kind == "lookup":
            bean = run.lookup_bean(agg.name)
            if bean is None:
                # Routes loaded without a registry (`moat-nb routes run` without --beans) look
                # the strategy up now; a missing one failed with Python's AttributeError on
                # None. Camel's registry lookup fails so (as a bean: step's does, bean.py).
                raise ExchangeFailure(
                    "org.apache.camel.NoSuchBeanException",
                    f"No bean could be found in the registry for: {agg.name}",
                )
            return aggregation_for(agg.name, bean, agg.allow_null)
        return agg

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        # Camel's MulticastProcessor (which Splitter extends): each item runs on its own copy;
        # a failed copy stops the split only with stopOnException, and is otherwise handed to
        # the aggregation strategy like any other. The split's outcome is then the result
        # exchange's (doDone: ExchangeHelper.copyResults copies body, headers, properties,
        # routeStop and the exception), so which failure, if any, the split ends with is the
        # strategy's doing (see _aggregate).
        items = split_items(self.expression.evaluate(exchange), self.delimiter)
        strategy = self._strategy(run)
        size = len(items)
        context = exchange.context
        state = _Aggregated()
        parent_id = exchange.exchange_id
        for index, item in enumerate(items):
            sub = exchange.copy(context.next_id())
            sub.body = item
            props = sub.properties
            # Splitter makes each item with processorExchangeFactory.createCorrelatedCopy, which
            # (ExchangeHelper.createCorrelatedCopy) sets CamelCorrelationId to the id of the
            # exchange copied: Splitter's working copy, which keeps the original's id.
            props["CamelCorrelationId"] = parent_id
            props["CamelSplitIndex"] = index
            props["CamelSplitSize"] = size
            props["CamelSplitComplete"] = index == size - 1
            # MulticastProcessor.wrapInErrorHandler wraps the item in the route's error handler
            # unless the copy carries TRY_ROUTE_BLOCK (`(Boolean) getProperty(...)` true): a
            # property a doTry sets at run time, so also a split in a direct: sub-route called
            # from a doTry runs its items without one, and a split after a nested doTry (whose
            # end removed it) with one.
            item_error_handler = props.get(TRY_ROUTE_BLOCK) is not True
            try:
                run.pipeline(self.steps, sub, seq, depth + 1, index)
            except ExchangeFailure as failure:
                sub.exception = failure
                if item_error_handler:
                    # MulticastProcessor runs each item through the route's error handler
                    # (wrapInErrorHandler): a failure its steps' own error handlers did not
                    # handle (one that left a doTry) gets CamelExceptionCaught, replacing one an
                    # earlier doCatch left, and CamelFailureRouteId there, and they stay on the
                    # failed copy that is aggregated.
                    handle_failure(sub, failure)
                if self.stop_on_exception:
                    # The failed copy is not aggregated: only its exception, wrapped, is the
                    # split's (MulticastTask: "Multicast processing failed for number N").
                    raise ExchangeFailure(
                        "org.apache.camel.CamelExchangeException",
                        f"Multicast processing failed for number {index}. "
                        f"Exchange[{sub.exchange_id}]. Caused by: "
                        f"[{failure.error_type} - {failure.message_text}]",
                        cause=failure,
                    ) from None
            self._aggregate(strategy, state, sub, run)
        result = state.result
        if result is not None:
            if state.grouped is not None:  # AbstractListAggregationStrategy.onCompletion
                result.body = state.grouped
            # MulticastProcessor.doDone -> ExchangeHelper.copyResults(original, result), the same
            # for every strategy whose result is not the original: the message (body, and the
            # headers replaced: Message.copyFrom), the properties put over the original's (so
            # the first item's CamelSplitIndex/Size/Complete with GroupedBody or a callable,
            # whose result is the first copy; the last's with UseLatest), routeStop and the
            # exception.
            exchange.body = result.body
            exchange.headers = result.headers.copy()
            # doDone keeps the original's own CamelCorrelationId around copyResults; an original
            # without one takes the result's (a copy's: the original's own id), as in Camel.
            correlation_id = exchange.properties.get("CamelCorrelationId")
            exchange.properties.update(result.properties)
            if correlation_id is not None:
                exchange.properties["CamelCorrelationId"] = correlation_id
            exchange.route_stop = result.route_stop
            # doCopyResults also copies the failure-handled mark: a failed result's error handler
            # has handled it, so the split's own leaves the exchange as copied.
            exchange.failure_handled = result.failure_handled
            failure = result.exception
        else:
            # The original is the result (no strategy, UseOriginal: it carries the newest
            # failure and CamelExceptionCaught), or an aggregate(old, new) object ended with
            # null: doDone(null) copies nothing, so the original goes on as it came, unfailed.
            failure = state.failure
            if state.caught is not None:
                exchange.properties["CamelExceptionCaught"] = state.caught
        if isinstance(failure, ExchangeFailure):
            raise failure
        return None

    def _aggregate(self, strategy: Aggregation | None, state: _Aggregated, sub: Exchange, run: Run) -> None:
        """Hand one finished copy (failed or not) to the strategy, as Camel's doAggregate does.

        * none, ``UseOriginalAggregationStrategy``: the original stays the result; with
          propagateException (the default) the newest failed copy's exception is the split's,
          and the newest ``CamelExceptionCaught`` is set on the original (checkCaughtException).
        * ``UseLatestAggregationStrategy``: the latest copy is the result, carrying the newest
          exception so far (propagateException).
        * ``GroupedBodyAggregationStrategy``: every copy's body (a failed one's too) in a list on
          the FIRST copy, which is the result: only the first item's failure fails the split.
        * a callable (Camel's ``AggregationStrategyBeanAdapter``): the result is the first copy,
          its body the callable's non-null value; an exception from the callable is set on the
          result and aggregation goes on. Only the first item's failure fails the split.
        * an ``aggregate(old, new)`` object: its return value is the result, and the split ends
          with whatever exception that exchange carries: a strategy that returns the old
          exchange, or clears ``new.exception``, handles the failure. ``None`` is kept as
          Camel keeps a null: the next call gets ``old=None``, and a ``None`` at the end leaves
          the original exchange as it came (any failed item handled).

        ``shareUnitOfWork: true`` wraps any of them in Camel's ``ShareUnitOfWorkAggregationStrategy``,
        which copies a failed copy's exception onto the result.
        """
        kind = strategy.kind if strategy is not None else None
        failed = sub.exception
        if kind is None or kind == "useOriginal":
            if failed is not None:
                state.failure = failed
            caught = sub.properties.get("CamelExceptionCaught")
            if caught is not None:
                state.caught = caught
            return  # shareUnitOfWork propagates the same newest failure
        old = state.result
        try:
            if kind == "useLatest":
                if old is not None and sub.exception is None:
                    sub.exception = old.exception
                state.result = sub
            elif kind == "groupedBody":
                if old is None:
                    state.result, state.grouped = sub, []
                if sub.body is not None:
                    state.grouped.append(sub.body)  # type: ignore[union-attr]
            elif kind == "body":
                # AggregationStrategyBeanAdapter.aggregate: without allowNullOldExchange
                # (aggregationStrategyMethodAllowNull, false by default) the first item's copy
                # is the result as it is and the method is not called for it.
                target = old if old is not None else sub
                if old is not None or strategy.allow_null:  # type: ignore[union-attr]
                    try:
                        out = strategy.target(old.body if old is not None else None, sub.body)  # type: ignore[union-attr]
                    except ExchangeFailure as err:
                        out, target.exception = None, err
                    except Exception as err:
                        out, target.exception = None, failure_from_python(err)
                    if out is not None:
                        target.body = out
                state.result = target
            else:  # "exchange": the strategy's own aggregate(old, new)
                try:
                    answer = strategy.target.aggregate(old, sub)  # type: ignore[union-attr]
                except ExchangeFailure:
                    raise
                except Exception as err:
                    # MulticastTask.aggregate: the exception is the original's, and the split is done.
                    raise failure_from_python(err) from err
                # doAggregateInternal: result.set(strategy.aggregate(...)), a null kept as null,
                # so the next call gets old=None and a null at the end leaves the original alone.
                state.result = answer
        finally:
            if kind in ("exchange", "body"):
                run.forget()
        # ShareUnitOfWorkAggregationStrategy.propagateFailure asks the new copy whether it failed
        # after the wrapped strategy ran (a strategy that cleared its exception handled it), and
        # copies its exception and its CamelExceptionCaught and CamelFailureRouteId (the error
        # handler's, or an earlier doCatch's in a try block) onto the answer (so is
        # CamelFailureEndpoint, which the engine does not model).
        failed = sub.exception
        if self.share_unit_of_work and failed is not None:
            if state.result is None:
                # ShareUnitOfWorkAggregationStrategy.propagateFailure calls answer.setException
                # on the null answer; MulticastTask.aggregate makes that NullPointerException
                # the split's, and no further item runs.
                raise ExchangeFailure(
                    "java.lang.NullPointerException",
                    'Cannot invoke "org.apache.camel.Exchange.setException(java.lang.Throwable)" '
                    'because "answer" is null',
                )
            state.result.exception = failed
            for key in (EXCEPTION_CAUGHT, FAILURE_ROUTE_ID):
                value = sub.properties.get(key)
                if value is not None:
                    state.result.properties[key] = value


class _Aggregated:
    """The running aggregation of one split: Camel's ``result`` exchange (``None`` while the
    original is the result), the grouped bodies, and for the original the failure and
    ``CamelExceptionCaught`` it is to carry."""

    __slots__ = ("result", "grouped", "failure", "caught")

    def __init__(self) -> None:
        self.result: Exchange | None = None
        self.grouped: list[Any] | None = None
        self.failure: BaseException | None = None
        self.caught: Any = None


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
            exchange.failure_handled = current.failure_handled
        return None
