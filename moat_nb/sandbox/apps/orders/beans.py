"""Beans of the ``orders`` sample app: the business logic its routes call.

Camel routes call Java beans for what the Simple language cannot say (summing lines, money
arithmetic, directory look-ups); these Python objects play that part. A ``bean`` step
``{ref: name, method: m}`` looks up ``BEANS[name]``, takes its attribute ``m`` and calls it with
the :class:`~moat_nb.sandbox.camel.exchange.Exchange`; a non-``None`` return value becomes the new
body, and a raised exception fails the exchange with the exception's ``camel_type`` as its
``errorType`` (what a Java bean's exception class name would be).

Every bean is pure and deterministic: no clock, no randomness, no I/O. The customer directory,
the stock levels and the CRM's loyalty data are fixed tables, so one input always gives one
output, which is what lets a replay of a prod (v1) exchange on staging (v2) show only the
differences the route versions make.

The two route versions call different pricing methods: v1 calls :meth:`Pricing.price_per_line`,
which carries the rounding bug v1 shipped with (per-line binary-float arithmetic truncated to
cents); v2 calls :meth:`Pricing.price_order`, which computes in :class:`decimal.Decimal` and
rounds the order total once, half-up.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar

# Absolute, so that the file also loads on its own, as a user's beans.py does (`moat-nb routes run
# ... --beans moat_nb/sandbox/apps/orders/beans.py`).
from moat_nb.sandbox.camel.exchange import Exchange

__all__ = [
    "BEANS",
    "CUSTOMERS",
    "CRM_URI",
    "ENDPOINTS",
    "STOCK",
    "Customer",
    "CustomerDirectory",
    "Fulfilment",
    "Inventory",
    "InvalidOrderException",
    "InvalidQuantityException",
    "MalformedOrderLineException",
    "OrderException",
    "OrderValidator",
    "OutOfStockException",
    "Pricing",
    "Shipping",
    "UnknownCustomerException",
    "crm_reply",
    "line_aggregator",
]

CENT = Decimal("0.01")
#: Items per parcel: the warehouse's carton size.
PARCEL_SIZE = 10


# --------------------------------------------------------------------------- business exceptions
#
# These are the app's own exceptions, the ones a Java bean of an orders service would throw; they
# are what the route fails with, not errors of moat_nb itself, so they do not derive from
# moat_nb.errors.MoatError. ``camel_type`` is the Java class name the execution reports.


class OrderException(ValueError):
    """Base of the orders app's business exceptions."""

    camel_type: ClassVar[str] = "com.acme.orders.OrderException"


class InvalidOrderException(OrderException):
    """The order as a whole is unusable (not an object, no id, no lines)."""

    camel_type = "com.acme.orders.InvalidOrderException"


class MalformedOrderLineException(OrderException):
    """An order line lacks a field or has one of the wrong type (e.g. no ``unitPrice``)."""

    camel_type = "com.acme.orders.MalformedOrderLineException"


class InvalidQuantityException(OrderException):
    """An order line's quantity is zero or negative."""

    camel_type = "com.acme.orders.InvalidQuantityException"


class UnknownCustomerException(OrderException):
    """The customer id is not in the customer directory."""

    camel_type = "com.acme.customers.UnknownCustomerException"


class OutOfStockException(OrderException):
    """Not enough stock to reserve an order line (the route catches it: backorder)."""

    camel_type = "com.acme.inventory.OutOfStockException"


# --------------------------------------------------------------------------- reference data


@dataclass(frozen=True)
class Customer:
    """A customer directory entry."""

    customer_id: str
    name: str
    tier: str  # gold | silver | bronze
    region: str  # EU | UK | CH | NO | US | APAC
    loyalty_points: int
    member_since: int


def _customers(rows: list[tuple[str, str, str, str, int, int]]) -> dict[str, Customer]:
    return {r[0]: Customer(*r) for r in rows}


#: The customer directory. Regions decide the shipping surcharge (route choice
#: ``region-surcharge``): EU none, UK/CH/NO 4.90, anything else 12.50.
CUSTOMERS: Mapping[str, Customer] = _customers(
    [
        ("C-1001", "Alder & Finch GmbH", "gold", "EU", 12840, 2015),
        ("C-1002", "Brightwater Ltd", "silver", "UK", 4310, 2018),
        ("C-1003", "Cobalt Werkstatt", "bronze", "EU", 220, 2023),
        ("C-1004", "Dunmore Outfitters Inc", "gold", "US", 20115, 2012),
        ("C-1005", "Elbe Kontor AG", "silver", "EU", 3175, 2019),
        ("C-1006", "Fjordline AS", "bronze", "NO", 95, 2024),
        ("C-1007", "Granite Peak Co", "silver", "US", 2760, 2020),
        ("C-1008", "Helvetia Druck SA", "gold", "CH", 9870, 2016),
        ("C-1009", "Iris & Oak Studio", "bronze", "EU", 410, 2022),
        ("C-1010", "Juniper Labs Pte", "silver", "APAC", 1980, 2021),
        ("C-1011", "Kestrel Supplies", "bronze", "UK", 130, 2024),
        ("C-1012", "Lumen Bureau BV", "gold", "EU", 15402, 2014),
        ("C-1013", "Marlow Print House", "bronze", "UK", 75, 2025),
        ("C-1014", "Nordlicht Handel", "silver", "EU", 2245, 2020),
        ("C-1015", "Orchard Street Cafe", "bronze", "EU", 310, 2023),
        ("C-1016", "Pacific Rim Trading", "gold", "APAC", 11890, 2013),
        ("C-1017", "Quarry Lane Books", "bronze", "US", 45, 2025),
        ("C-1018", "Rhein Logistik GmbH", "silver", "EU", 5120, 2017),
        ("C-1019", "Solberg Arkitekter", "bronze", "NO", 160, 2022),
        ("C-1020", "Tamarind Kitchens", "silver", "UK", 1430, 2021),
        ("C-1021", "Umber & Co", "bronze", "EU", 12, 2025),
        ("C-1022", "Vaud Horlogerie", "gold", "CH", 8840, 2016),
        ("C-1023", "Westgate Dental", "bronze", "EU", 540, 2022),
        ("C-1024", "Yellowpine Camping", "silver", "US", 1990, 2020),
    ]
)


@dataclass(frozen=True)
class StockItem:
    """What the warehouse holds of one SKU."""

    available: int
    warehouse: str


#: Stock levels. A line asking for more than ``available`` cannot be reserved; the route's
#: doTry/doCatch turns that into a backorder. SKU-106 and SKU-900 run short on purpose.
STOCK: Mapping[str, StockItem] = {
    "SKU-100": StockItem(5000, "DUS-1"),
    "SKU-101": StockItem(400, "DUS-1"),
    "SKU-102": StockItem(9000, "DUS-2"),
    "SKU-103": StockItem(800, "DUS-1"),
    "SKU-104": StockItem(350, "DUS-2"),
    "SKU-105": StockItem(1200, "DUS-2"),
    "SKU-106": StockItem(6, "DUS-1"),
    "SKU-107": StockItem(240, "DUS-1"),
    "SKU-108": StockItem(7000, "DUS-2"),
    "SKU-109": StockItem(150, "DUS-1"),
    "SKU-110": StockItem(90, "DUS-1"),
    "SKU-111": StockItem(9999, "DUS-2"),
    "SKU-900": StockItem(2, "DUS-1"),
}


# --------------------------------------------------------------------------- helpers


def _order(exchange: Exchange) -> dict[str, Any]:
    body = exchange.body
    if not isinstance(body, dict):
        raise InvalidOrderException(
            f"expected a JSON object as the order, got {type(body).__name__}; "
            "unmarshal the body with the json data format first"
        )
    return body


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _percent(exchange: Exchange, name: str) -> int:
    """An integer percentage from an exchange property (the route sets them as constants)."""
    return int(str(exchange.properties.get(name, "0")))


def _decimal(value: Any) -> Decimal:
    # str() of a Python float is its shortest round-trip form, so 19.99 -> Decimal("19.99"):
    # the amount exactly as it was written in the JSON order.
    return Decimal(str(value))


def _money(value: Decimal) -> float:
    return float(value.quantize(CENT, rounding=ROUND_HALF_UP))


# --------------------------------------------------------------------------- beans


class OrderValidator:
    """Validates an unmarshalled order and returns it normalised."""

    def validate(self, exchange: Exchange) -> dict[str, Any]:
        """Check the order and return it with ``lineNo`` on each line and ``totalQuantity``.

        Raises :class:`InvalidOrderException`, :class:`MalformedOrderLineException` (a line
        without ``sku``/``unitPrice``/``qty`` or with a wrong type) or
        :class:`InvalidQuantityException` (a quantity below 1).
        """
        order = _order(exchange)
        order_id = order.get("orderId")
        for key in ("orderId", "customerId"):
            if not isinstance(order.get(key), str) or not order[key]:
                raise InvalidOrderException(f"order {order_id!r}: missing or empty {key}")
        lines = order.get("lines")
        if not isinstance(lines, list) or not lines:
            raise InvalidOrderException(f"order {order_id}: 'lines' must be a non-empty list")
        normalised = []
        for no, line in enumerate(lines, start=1):
            if not isinstance(line, dict):
                raise MalformedOrderLineException(f"order {order_id} line {no}: not an object")
            sku = line.get("sku")
            if not isinstance(sku, str) or not sku:
                raise MalformedOrderLineException(f"order {order_id} line {no}: missing sku")
            if "unitPrice" not in line:
                raise MalformedOrderLineException(f"order {order_id} line {no} ({sku}): missing unitPrice")
            price = line["unitPrice"]
            if not _is_number(price) or price < 0:
                raise MalformedOrderLineException(
                    f"order {order_id} line {no} ({sku}): unitPrice {price!r} is not an amount"
                )
            qty = line.get("qty")
            if not isinstance(qty, int) or isinstance(qty, bool):
                raise MalformedOrderLineException(
                    f"order {order_id} line {no} ({sku}): qty {qty!r} is not an integer"
                )
            if qty < 1:
                raise InvalidQuantityException(
                    f"order {order_id} line {no} ({sku}): quantity {qty} is not positive"
                )
            normalised.append({"lineNo": no, "sku": sku, "qty": qty, "unitPrice": price})
        return {
            **order,
            "lines": normalised,
            "totalQuantity": sum(line["qty"] for line in normalised),
        }


class CustomerDirectory:
    """The customer directory (tier and region), and the merge of the CRM's loyalty reply."""

    def __init__(self, customers: Mapping[str, Customer] = CUSTOMERS) -> None:
        self._customers = customers

    def get(self, customer_id: str) -> Customer:
        try:
            return self._customers[customer_id]
        except KeyError:
            raise UnknownCustomerException(
                f"customer {customer_id} is not in the customer directory"
            ) from None

    def lookup(self, exchange: Exchange) -> None:
        """Set ``customerTier``, ``customerRegion`` and ``customerName`` exchange properties.

        The body is left as it is (returns ``None``); raises :class:`UnknownCustomerException`.
        """
        customer = self.get(str(_order(exchange).get("customerId")))
        exchange.properties["customerTier"] = customer.tier
        exchange.properties["customerRegion"] = customer.region
        exchange.properties["customerName"] = customer.name

    def attach(self, exchange: Exchange) -> dict[str, Any]:
        """Return the order with a ``customer`` block: directory data plus CRM loyalty points."""
        order = _order(exchange)
        props = exchange.properties
        return {
            **order,
            "customer": {
                "id": order.get("customerId"),
                "name": props.get("customerName"),
                "tier": props.get("customerTier"),
                "region": props.get("customerRegion"),
                "loyaltyPoints": props.get("loyaltyPoints"),
            },
        }


class Inventory:
    """Stock reservation, one order line at a time (called inside the split)."""

    def __init__(self, stock: Mapping[str, StockItem] = STOCK) -> None:
        self._stock = stock

    def reserve(self, exchange: Exchange) -> dict[str, Any]:
        """Reserve one line; raises :class:`OutOfStockException` when stock is short."""
        line = exchange.body
        item = self._stock.get(line["sku"])
        available = item.available if item else 0
        if line["qty"] > available:
            raise OutOfStockException(f"{line['sku']}: {line['qty']} requested, {available} available")
        return {**line, "status": "RESERVED", "warehouse": item.warehouse if item else None}

    def backorder(self, exchange: Exchange) -> dict[str, Any]:
        """Mark the line as backordered (the doCatch of an :class:`OutOfStockException`)."""
        return {**exchange.body, "status": "BACKORDER", "warehouse": None}

    def merge(self, exchange: Exchange) -> dict[str, Any]:
        """After the split: the order stashed in the ``order`` property, with the lines the
        split's aggregation collected (each now carrying its reservation ``status``)."""
        order = exchange.properties.get("order")
        if not isinstance(order, dict):
            raise InvalidOrderException("no order stashed in the 'order' exchange property before the split")
        lines = exchange.body
        if not isinstance(lines, list):
            raise InvalidOrderException(
                f"expected the split's aggregated list of lines, got {type(lines).__name__}"
            )
        return {**order, "lines": lines}


def line_aggregator(old: Any, new: Any) -> list[Any]:
    """Split aggregation: collect each line's result body into a list, in line order.

    A POJO strategy (Camel's ``AggregationStrategyBeanAdapter``) called with ``old`` None for the
    first line: the split sets ``aggregationStrategyMethodAllowNull: true`` for that, without
    which Camel does not call it for the first line and the list would start from its body.
    """
    gathered = list(old) if isinstance(old, list) else []
    gathered.append(new)
    return gathered


class Pricing:
    """Order totals. v1 and v2 of the route call different methods (see the module doc)."""

    @staticmethod
    def _rates(exchange: Exchange) -> tuple[int, int]:
        return _percent(exchange, "tierDiscountPct"), _percent(exchange, "bulkDiscountPct")

    def price_per_line(self, exchange: Exchange) -> dict[str, Any]:
        """v1 pricing, with v1's rounding bug kept on purpose.

        Each line is priced in binary floating point and *truncated* to cents
        (``int(x * 100) / 100``): sub-cent remainders are dropped line by line, and a product
        such as ``3 * 19.99 == 59.96999999999999`` loses a whole cent. The order total is the
        sum of the truncated lines plus the region surcharge.
        """
        order = _order(exchange)
        tier_pct, bulk_pct = self._rates(exchange)
        factor = 1 - (tier_pct + bulk_pct) / 100
        surcharge = float(str(exchange.properties.get("regionSurcharge", "0")))
        lines = []
        subtotal = 0.0
        for line in order["lines"]:
            net = line["qty"] * line["unitPrice"] * factor
            line_total = int(net * 100) / 100  # the v1 bug: truncation after float arithmetic
            subtotal += line_total
            lines.append({**line, "lineTotal": line_total})
        return self._priced(
            order,
            lines,
            tier_pct,
            bulk_pct,
            surcharge,
            round(subtotal, 2),
            round(subtotal + surcharge, 2),
        )

    def price_order(self, exchange: Exchange) -> dict[str, Any]:
        """v2 pricing: exact decimal arithmetic, one half-up rounding of the order total.

        Line totals are shown rounded half-up to cents; the subtotal and the total are
        rounded from the exact (unrounded) sum of the lines, so no remainder is lost.
        """
        order = _order(exchange)
        tier_pct, bulk_pct = self._rates(exchange)
        factor = (100 - tier_pct - bulk_pct) / Decimal(100)
        surcharge = _decimal(exchange.properties.get("regionSurcharge", "0"))
        lines = []
        exact_sum = Decimal(0)
        for line in order["lines"]:
            exact = line["qty"] * _decimal(line["unitPrice"]) * factor
            exact_sum += exact
            lines.append({**line, "lineTotal": _money(exact)})
        return self._priced(
            order,
            lines,
            tier_pct,
            bulk_pct,
            float(surcharge),
            _money(exact_sum),
            _money(exact_sum + surcharge),
        )

    @staticmethod
    def _priced(
        order: dict[str, Any],
        lines: list[dict[str, Any]],
        tier_pct: int,
        bulk_pct: int,
        surcharge: float,
        subtotal: float,
        total: float,
    ) -> dict[str, Any]:
        return {
            **order,
            "lines": lines,
            "pricing": {
                "tierDiscountPct": tier_pct,
                "bulkDiscountPct": bulk_pct,
                "regionSurcharge": surcharge,
                "subtotal": subtotal,
                "total": total,
            },
            "total": total,
        }


class Shipping:
    """Packs reserved items into parcels of :data:`PARCEL_SIZE`, one parcel per loop turn."""

    @staticmethod
    def _reserved_items(order: Mapping[str, Any]) -> list[str]:
        items: list[str] = []
        for line in order["lines"]:
            if line.get("status") == "RESERVED":
                items.extend([line["sku"]] * line["qty"])
        return items

    def plan(self, exchange: Exchange) -> dict[str, Any]:
        """Set the ``parcelCount`` property (the loop's count) and start an empty parcel list."""
        order = _order(exchange)
        count = -(-len(self._reserved_items(order)) // PARCEL_SIZE)  # ceiling division
        exchange.properties["parcelCount"] = count
        return {**order, "parcels": []}

    def pack(self, exchange: Exchange) -> dict[str, Any]:
        """Append the next parcel: the next :data:`PARCEL_SIZE` reserved items, counted by SKU."""
        order = _order(exchange)
        parcels = list(order.get("parcels") or [])
        start = len(parcels) * PARCEL_SIZE
        contents: dict[str, int] = {}
        for sku in self._reserved_items(order)[start : start + PARCEL_SIZE]:
            contents[sku] = contents.get(sku, 0) + 1
        parcels.append({"parcelNo": len(parcels) + 1, "items": contents})
        return {**order, "parcels": parcels}


class Fulfilment:
    """Builds the message published to ``kafka:fulfilment``."""

    def message(self, exchange: Exchange) -> dict[str, Any]:
        order = _order(exchange)
        backordered = sum(1 for line in order["lines"] if line.get("status") == "BACKORDER")
        return {
            "orderId": order["orderId"],
            "customerId": order["customerId"],
            "trackingId": exchange.headers.get("trackingId"),
            "processedAt": exchange.headers.get("processedAt"),
            "status": "PARTIALLY_BACKORDERED" if backordered else "ACCEPTED",
            "currency": order.get("currency"),
            "customer": order.get("customer"),
            "lines": [
                {k: line.get(k) for k in ("lineNo", "sku", "qty", "status", "warehouse", "lineTotal")}
                for line in order["lines"]
            ],
            "parcels": order.get("parcels", []),
            "pricing": order.get("pricing"),
            "total": order.get("total"),
        }


# --------------------------------------------------------------------------- external endpoints

#: The CRM's customer API (request-reply); the route calls it with ``toD`` and an ``id`` query.
CRM_URI = "http://customers.internal/api/customers"


def crm_reply(exchange: Exchange) -> str:
    """The simulated CRM reply for live traffic: the customer's loyalty record as JSON text."""
    customer_id = str(exchange.headers.get("customerId", ""))
    customer = CUSTOMERS.get(customer_id)
    record: dict[str, Any] = {
        "customerId": customer_id,
        "loyaltyPoints": customer.loyalty_points if customer else 0,
        "memberSince": customer.member_since if customer else None,
    }
    return json.dumps(record)


BEANS: Mapping[str, Any] = {
    "orderValidator": OrderValidator(),
    "customerDirectory": CustomerDirectory(),
    "inventory": Inventory(),
    "lineAggregator": line_aggregator,
    "pricing": Pricing(),
    "shipping": Shipping(),
    "fulfilment": Fulfilment(),
}

ENDPOINTS: Mapping[str, Any] = {CRM_URI: crm_reply}
