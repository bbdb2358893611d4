"""Traffic inputs for the ``orders`` app: realistic orders, about 5 % of them bad by construction.

:func:`sample_payload` is the app's ``sample_payload(rng, i)``: the i-th order the traffic
generator sends. It draws everything from the ``rng`` it is handed, so one seed gives one history.

Failures are never a "fail now" flag: a few orders simply carry data the route rejects, as real
traffic does — a customer id the directory does not know yet (about 2 %), a line without its
``sku`` or with the legacy ``price`` field instead of ``unitPrice`` (about 1.5 %), a negative
quantity (about 1.5 %). The beans find them (see ``beans.py``).
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Mapping
from typing import Any

from ....model import Payload
from .beans import CUSTOMERS

__all__ = ["CATALOG", "sample_payload", "sample_order"]

#: The storefront's price list (EUR). Prices such as 19.99 or 4.35 are not exact in binary
#: floating point, which is where v1's rounding bug bites; 24.50 or 59.00 are exact.
CATALOG: Mapping[str, float] = {
    "SKU-100": 19.99,  # USB-C cable 2 m
    "SKU-101": 49.90,  # laptop stand
    "SKU-102": 4.35,  # screen wipes
    "SKU-103": 24.50,  # wireless mouse
    "SKU-104": 59.00,  # keyboard
    "SKU-105": 12.99,  # HDMI adapter
    "SKU-106": 289.00,  # 27" monitor (low stock)
    "SKU-107": 34.95,  # desk lamp
    "SKU-108": 3.20,  # A5 notebook
    "SKU-109": 79.99,  # headset
    "SKU-110": 64.90,  # webcam
    "SKU-111": 2.75,  # cable ties, 100
    "SKU-900": 189.00,  # limited-edition dock (2 in stock)
}

_EVERYDAY = [sku for sku in CATALOG if sku != "SKU-900"]
_CHANNELS = ("web", "mobile", "partner-api")
_CHANNEL_WEIGHTS = (55, 30, 15)

# Cumulative thresholds of the three failure kinds (about 5 % in all).
_UNKNOWN_CUSTOMER = 0.020
_MALFORMED_LINE = 0.035
_NEGATIVE_QTY = 0.050


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _bearer(rng: random.Random, customer_id: str, i: int) -> str:
    """A JWT-shaped bearer token: a secret the platform must redact, never a real credential."""
    header = _b64url(b'{"alg":"HS256","typ":"JWT"}')
    claims = {"sub": customer_id, "scope": "orders:write", "iat": 1764000000 + i}
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = _b64url(rng.getrandbits(256).to_bytes(32, "big"))
    return f"Bearer {header}.{payload}.{signature}"


def _quantity(rng: random.Random, sku: str) -> int:
    if sku == "SKU-900":
        return rng.randint(1, 4)  # 3 or 4 exceed the stock of 2: a backorder
    if rng.random() < 0.18:
        return rng.randint(6, 15)  # a bulk line: pushes orders over the 10 / 20 item thresholds
    return rng.randint(1, 5)


def sample_order(rng: random.Random, i: int) -> dict[str, Any]:
    """The i-th order as a JSON-ready dict (possibly one of the deliberately bad ones)."""
    fault = rng.random()
    if fault < _UNKNOWN_CUSTOMER:
        # A customer who signed up minutes ago and is not in the directory yet.
        customer_id = f"C-{rng.randint(9000, 9999)}"
    else:
        customer_id = rng.choice(list(CUSTOMERS))
    skus = rng.sample(_EVERYDAY, k=rng.choices((1, 2, 3, 4), weights=(40, 30, 20, 10))[0])
    if rng.random() < 0.04:
        skus.append("SKU-900")
    lines: list[dict[str, Any]] = [
        {"sku": sku, "qty": _quantity(rng, sku), "unitPrice": CATALOG[sku]} for sku in skus
    ]
    if _UNKNOWN_CUSTOMER <= fault < _MALFORMED_LINE:
        bad = rng.choice(lines)
        if rng.random() < 0.5:
            del bad["sku"]  # the sku field got lost on the way
        else:
            bad["price"] = bad.pop("unitPrice")  # a partner still sending the legacy field name
    elif _MALFORMED_LINE <= fault < _NEGATIVE_QTY:
        bad = rng.choice(lines)
        bad["qty"] = -bad["qty"]  # a return entered as a negative order line
    return {
        "orderId": f"ORD-{i + 1:06d}",
        "customerId": customer_id,
        "currency": "EUR",
        "channel": rng.choices(_CHANNELS, weights=_CHANNEL_WEIGHTS)[0],
        "lines": lines,
    }


def sample_payload(rng: random.Random, i: int) -> Payload:
    """The i-th traffic input: the order as JSON text with the headers a storefront sends."""
    order = sample_order(rng, i)
    headers = {
        "Content-Type": "application/json",
        "channel": order["channel"],
        "Authorization": _bearer(rng, order["customerId"], i),
    }
    return Payload(headers=headers, body=json.dumps(order), properties={"tenant": "acme-eu"})
