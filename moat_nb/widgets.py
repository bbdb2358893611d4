"""The notebook widgets (DESIGN.md section 9): kernel side here, browser side in ``widgets/``.

* :class:`ExchangePicker` — filters → a sortable, paged results table → ``.value``, the picked
  execution (:mod:`moat_nb.picker`);
* :class:`PayloadEditor` — headers and properties as key/value rows, the body in
  :class:`BodyEditor` (checks JSON as you type, marks changed lines), ``.modified_payload``
  (:mod:`moat_nb.editor`, :mod:`moat_nb.body_editor`);
* :class:`ReplayWorkbench` — picker + editor + target + reason + Replay, the live trace, then
  the diff, the lineage and the audit receipt (:mod:`moat_nb.workbench`);
* :class:`AuditBrowser` — audit events with filters, verification as pass/fail
  (:mod:`moat_nb.audit_browser`);
* :class:`DataTable` — the sortable, paged, keyboard-friendly table they share
  (:mod:`moat_nb.table`).

Custom views are anywidgets whose ES modules and CSS live in the repository's ``widgets/``
folder and ship in the wheel as ``moat_nb/_widgets`` (:mod:`moat_nb.assets`): no npm build and
no JupyterLab extension of our own. They use JupyterLab's theme variables, so they read in the
light and the dark theme, and every control is reachable and usable from the keyboard.
"""

from __future__ import annotations

from .audit_browser import AuditBrowser
from .body_editor import BodyEditor
from .editor import KeyValueEditor, PayloadEditor
from .picker import ExchangePicker
from .table import Column, DataTable
from .workbench import ReplayWorkbench, permissions_of

__all__ = [
    "AuditBrowser",
    "BodyEditor",
    "Column",
    "DataTable",
    "ExchangePicker",
    "KeyValueEditor",
    "PayloadEditor",
    "ReplayWorkbench",
    "permissions_of",
]
