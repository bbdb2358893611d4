"""The route's error handler: what Camel 4's ``DefaultErrorHandler`` leaves on a failed exchange.

With no ``onException`` and no redelivery (all a sandbox route can declare), Camel's
``RedeliveryErrorHandler`` runs its ``SimpleTask``: when the processor it wraps fails,
``handleException`` stores the exception in ``CamelExceptionCaught`` and
``prepareExchangeAfterFailureNotHandled`` puts the exception back on the exchange, marks it
failure-handled and stores the id of the route it failed in (``ExchangeHelper.getAtRouteId``:
a ``direct:`` sub-route's own id) in ``CamelFailureRouteId``. It also copies ``CamelToEndpoint``
(the last ``to``'s endpoint) into ``CamelFailureEndpoint``; the engine does not model
``CamelToEndpoint``, so it sets no ``CamelFailureEndpoint`` either.

Every processor of a route is wrapped in that error handler except inside a
``doTry``/``doCatch``/``doFinally`` (``ProcessorReifier``: "is part of doTry .. doCatch ..
doFinally so no error handler is applied", the ``doTry`` itself included), so the innermost
wrapped processor a failure leaves handles it. The failure-handled mark is Camel's
``ExchangeExtension.isFailureHandled``: while it is set, no other error handler touches the
exchange (``SimpleTask.isFailedOrBridged``), so a failure that leaves a sub-route keeps the
sub-route's id, and nothing in the modelled EIPs clears the mark again.

``doCatch`` and ``doFinally`` set the same properties themselves (``CatchProcessor``,
``FinallyProcessor``), through :func:`mark_failure_route`.
"""

from __future__ import annotations

from .exchange import Exchange

__all__ = [
    "EXCEPTION_CAUGHT",
    "EXCEPTION_HANDLED",
    "FAILURE_ROUTE_ID",
    "TRY_ROUTE_BLOCK",
    "handle_failure",
    "mark_failure_route",
]

#: ``ExchangePropertyKey.EXCEPTION_CAUGHT``.
EXCEPTION_CAUGHT = "CamelExceptionCaught"
#: ``ExchangePropertyKey.FAILURE_ROUTE_ID``.
FAILURE_ROUTE_ID = "CamelFailureRouteId"
#: ``ExchangePropertyKey.EXCEPTION_HANDLED``: ``true`` once a ``doCatch`` handled the failure,
#: until its ``doTry`` ends (``CatchProcessor``, ``TryProcessor.TryState``).
EXCEPTION_HANDLED = "CamelExceptionHandled"
#: ``ExchangePropertyKey.TRY_ROUTE_BLOCK`` (``Exchange.TRY_ROUTE_BLOCK``, named without the
#: ``Camel`` prefix): ``true`` while a ``doTry``'s steps and clauses run (``TryProcessor``).
TRY_ROUTE_BLOCK = "TryRouteBlock"


def mark_failure_route(exchange: Exchange) -> None:
    """``exchange.setProperty(FAILURE_ROUTE_ID, ExchangeHelper.getAtRouteId(exchange))``: the
    route the exchange is in now (a sub-route's id while it runs one)."""
    if exchange.route_id:
        exchange.properties[FAILURE_ROUTE_ID] = exchange.route_id


def handle_failure(exchange: Exchange, failure: BaseException) -> bool:
    """The default error handler wrapping a processor that just failed with ``failure``;
    ``False`` when an inner one already handled the exchange and this one leaves it alone."""
    if exchange.failure_handled:
        return False
    exchange.properties[EXCEPTION_CAUGHT] = failure
    exchange.failure_handled = True
    mark_failure_route(exchange)
    return True
