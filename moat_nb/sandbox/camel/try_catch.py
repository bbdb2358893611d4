"""Failing and handling failures: ``throwException`` and ``doTry``/``doCatch``/``doFinally``.

They behave as Camel's ``ThrowExceptionProcessor``, ``TryProcessor``, ``CatchProcessor`` and
``FinallyProcessor`` do: a ``doCatch`` matches the exception or any exception in its cause
chain by class or superclass name (see :mod:`.failure`), then its ``onWhen``; the exchange's
exception (the outermost one, even when a cause matched) is in the ``CamelExceptionCaught``
property while the catch runs; ``doFinally`` always runs. While a ``doTry`` runs, the exchange
carries ``TryRouteBlock: true`` (into the ``direct:`` sub-routes it calls), and from the
``doCatch`` that handles a failure on ``CamelExceptionHandled: true``; the ``doTry`` removes the
first and puts back the second as it found it when it ends.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .conversion import to_text
from .error_handler import (
    EXCEPTION_CAUGHT,
    EXCEPTION_HANDLED,
    FAILURE_ROUTE_ID,
    TRY_ROUTE_BLOCK,
    mark_failure_route,
)
from .exchange import Exchange
from .failure import ExchangeFailure
from .language import Expression
from .processors import Processor, WithSteps

if TYPE_CHECKING:
    from .trace import Run

__all__ = ["DoCatch", "DoFinally", "DoTry", "ThrowException"]


class ThrowException(Processor):
    """``throwException``: fail the exchange with the given type and (Simple) message."""

    __slots__ = ("exception_type", "message")
    processor_type = "throwException"

    def __init__(self, *args: Any, exception_type: str, message: Expression | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exception_type = exception_type
        self.message = message

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        # ThrowExceptionProcessor.process: with a message, new Type(simple.evaluate(String));
        # without one, the default constructor, so getMessage() is null (not "").
        text = to_text(self.message.evaluate(exchange)) if self.message is not None else None
        raise ExchangeFailure(self.exception_type, text)


class DoCatch(WithSteps):
    """A ``doCatch`` clause: the exception classes it catches (and supertypes by name), an
    optional ``onWhen`` predicate, and its steps."""

    __slots__ = ("exceptions", "on_when")
    processor_type = "doCatch"

    def __init__(
        self, *args: Any, exceptions: frozenset[str], on_when: Expression | None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.exceptions = exceptions
        self.on_when = on_when

    def catches(self, exchange: Exchange, failure: ExchangeFailure) -> ExchangeFailure | None:
        """Camel's ``CatchProcessor.catches``: walk the cause chain for an instance of one of
        the classes, then check ``onWhen`` (with the exception set on the exchange)."""
        caught = failure.find(self.exceptions)
        if caught is None:
            return None
        if self.on_when is not None:
            exchange.exception = failure
            try:
                if not self.on_when.matches(exchange):
                    return None
            finally:
                exchange.exception = None
        return caught

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        # Camel's CatchProcessor.process is what moves the exception into the property: it sets
        # EXCEPTION_CAUGHT to exchange.getException() and then clears the exception. So the
        # doCatch's input snapshot does not hold CamelExceptionCaught yet and its output does:
        # lineage credits the property to the doCatch, not to the doTry before it. It also
        # stores the route the exchange is in as CamelFailureRouteId (getAtRouteId), replacing
        # what an error handler in a sub-route left (its CamelFailureEndpoint, set only when
        # absent, is not modelled: the engine has no CamelToEndpoint).
        # It also sets EXCEPTION_HANDLED to true ("give the rest of the pipeline another
        # chance"), which later clauses of the doTry check to leave the failure alone and which
        # stays until the doTry ends (TryProcessor.TryState puts back the value it found).
        exchange.properties[EXCEPTION_HANDLED] = True
        exchange.properties[EXCEPTION_CAUGHT] = exchange.exception
        mark_failure_route(exchange)
        exchange.exception = None
        super().process(exchange, run, seq, depth, iteration)


class DoFinally(WithSteps):
    """The ``doFinally`` block: always runs, with the pending exception set aside.

    As Camel's ``FinallyProcessor``: a pending exception (``DoTry`` hands it over as the
    exchange's exception) is moved to ``CamelExceptionCaught`` with ``CamelFailureRouteId`` set
    while the steps run (so ``${exception}`` reads it), and put back after them; without one,
    ``CamelFailureRouteId`` is removed after the steps (``FinallyAsyncCallback``), so a failure
    a ``doCatch`` handled leaves only ``CamelExceptionCaught`` behind. A step that fails while an
    exception is pending loses its failure to the pending one, which the callback puts back.
    """

    __slots__ = ()
    processor_type = "doFinally"

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        pending = exchange.exception
        if pending is not None:
            exchange.exception = None
            exchange.properties[EXCEPTION_CAUGHT] = pending
            mark_failure_route(exchange)
        try:
            super().process(exchange, run, seq, depth, iteration)
        except ExchangeFailure:
            # FinallyAsyncCallback.done: exchange.setException(exception) puts the pending
            # exception back over whatever a step threw, so with one pending the new failure is
            # dropped (and the doFinally ends as it does when its steps complete); without one,
            # the step's failure is the exchange's.
            if pending is None:
                raise
        finally:
            # FinallyAsyncCallback.done runs whether or not the steps failed.
            if pending is None:
                exchange.properties.pop(FAILURE_ROUTE_ID, None)
            else:
                exchange.exception = pending
                exchange.properties[EXCEPTION_CAUGHT] = pending
            run.tail = None  # so the doFinally's output is taken after this, not its last step's


class DoTry(WithSteps):
    """``doTry``/``doCatch``/``doFinally`` as Camel's ``TryProcessor`` runs them.

    The first ``doCatch`` (in order) that catches the failure handles it: the clause itself
    clears the exception and puts it in the ``CamelExceptionCaught`` property (so its input
    record does not have the property and its output does), and its steps run. The property
    holds the exchange's exception itself, not the cause the clause matched: Camel's
    ``CatchProcessor.process`` sets ``EXCEPTION_CAUGHT`` to ``exchange.getException()`` (its
    ``catches`` result only decides whether the clause applies), so ``${exception.message}``
    in a ``doCatch`` of an inner type reads the wrapper's message. ``doFinally``
    runs in every case; an unhandled failure (or one raised by a ``doCatch``) propagates after
    it, also when a ``doFinally`` step fails (``FinallyAsyncCallback`` restores it); a
    ``doFinally`` failure propagates only when nothing was pending.
    """

    __slots__ = ("catches", "finally_")
    processor_type = "doTry"

    def __init__(
        self, *args: Any, catches: Sequence[DoCatch], finally_: DoFinally | None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.catches = tuple(catches)
        self.finally_ = finally_

    def children(self) -> Iterator[Processor]:
        yield from self.steps
        yield from self.catches
        if self.finally_ is not None:
            yield self.finally_

    def process(self, exchange: Exchange, run: Run, seq: int, depth: int, iteration: int) -> None:
        # TryProcessor.TryState: its constructor saves EXCEPTION_HANDLED and removes it (so the
        # clauses of a doTry inside a doCatch can handle again); run() sets TRY_ROUTE_BLOCK to
        # true before each of its processors (the steps, every doCatch clause, the doFinally)
        # and, once they are done, removes TRY_ROUTE_BLOCK and puts EXCEPTION_HANDLED back. So
        # both show inside the doTry and neither after it (a nested doTry's end removes
        # TRY_ROUTE_BLOCK from the steps after it until the outer doTry's next clause).
        last_handled = exchange.properties.pop(EXCEPTION_HANDLED, None)
        pending: ExchangeFailure | None = None
        try:
            exchange.properties[TRY_ROUTE_BLOCK] = True
            try:
                run.pipeline(self.steps, exchange, seq, depth + 1, iteration)
            except ExchangeFailure as failure:
                pending = failure
            # Every clause follows the steps (a doTry always has one), failed or not.
            exchange.properties[TRY_ROUTE_BLOCK] = True
            if pending is not None:
                failure = pending
                for clause in self.catches:
                    if clause.catches(exchange, failure) is None:
                        continue
                    pending = None
                    exchange.exception = failure  # the clause moves it to CamelExceptionCaught
                    try:
                        run.execute(clause, exchange, seq, depth + 1, iteration)
                    except ExchangeFailure as again:
                        pending = again
                    break
            if self.finally_ is not None:
                # Camel's FinallyProcessor runs with the exception set aside and restores it
                # after (DoFinally.process moves it to CamelExceptionCaught meanwhile).
                exchange.properties[TRY_ROUTE_BLOCK] = True
                saved_stop = exchange.route_stop
                exchange.route_stop = False
                exchange.exception = pending
                try:
                    run.execute(self.finally_, exchange, seq, depth + 1, iteration)
                finally:
                    exchange.exception = None
                exchange.route_stop = exchange.route_stop or saved_stop
        finally:
            properties = exchange.properties
            properties.pop(TRY_ROUTE_BLOCK, None)
            if last_handled is None:  # setProperty(EXCEPTION_HANDLED, null) removes it
                properties.pop(EXCEPTION_HANDLED, None)
            else:
                properties[EXCEPTION_HANDLED] = last_handled
            run.tail = None  # the doTry's output is taken after this, not its last step's
        if pending is not None:
            raise pending
        return None
