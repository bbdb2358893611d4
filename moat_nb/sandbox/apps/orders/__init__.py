"""The ``orders`` sample app (DESIGN.md section 8): order intake in Camel YAML DSL, v1 and v2.

``order-intake`` takes a JSON order, validates it, enriches the customer through the
``direct:enrich-customer`` sub-route (a directory bean and the CRM's HTTP API), applies pricing
rules in a ``choice``, splits the lines to reserve stock (``doTry``/``doCatch``: backorder),
prices the order, packs parcels in a ``loop``, publishes to ``kafka:fulfilment`` and answers with
a JSON response. v2 lowers the bulk-discount threshold from 20 to 10 items and fixes v1's
rounding bug (see ``beans.Pricing``).
"""

from __future__ import annotations

from pathlib import Path

from .. import App
from .beans import BEANS, ENDPOINTS
from .inputs import sample_payload

__all__ = ["APP"]

_HERE = Path(__file__).resolve().parent

APP = App(
    name="orders",
    application_id="orders",
    entry_route="order-intake",
    versions={"v1": _HERE / "v1", "v2": _HERE / "v2"},
    beans=BEANS,
    endpoints=ENDPOINTS,
    sample_payload=sample_payload,
)
