"""The browser side of the custom widgets: ES modules and CSS from the top-level ``widgets/``.

DESIGN.md section 2 puts the kernel side in ``moat_nb/widgets.py`` (and :mod:`moat_nb.editor`,
:mod:`moat_nb.table`) and the browser side in ``widgets/``. The wheel carries that folder as
``moat_nb/_widgets`` (pyproject's ``force-include``); a source checkout or an editable install
(whose ``import moat_nb`` is the repository's own ``moat_nb/``, next to ``widgets/``) reads
the repository folder. anywidget takes the text of the module and of the CSS (``_esm``,
``_css``), so no npm build step and no JupyterLab extension of our own is needed.
"""

from __future__ import annotations

import importlib.resources
from functools import cache
from pathlib import Path

from .errors import MoatError

__all__ = ["asset", "asset_dirs"]


def asset_dirs() -> list[Path]:
    """Where the assets are looked for, in order: the installed package's ``_widgets``, then the
    source tree's ``widgets/`` (editable installs and checkouts)."""
    package = Path(str(importlib.resources.files("moat_nb")))
    return [package / "_widgets", package.parent / "widgets"]


@cache
def asset(name: str) -> str:
    """The text of ``widgets/<name>`` (e.g. ``"body_editor.js"``)."""
    for folder in asset_dirs():
        path = folder / name
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise MoatError(
        f"widget asset {name!r} not found in {', '.join(str(d) for d in asset_dirs())}",
        code="ASSET_MISSING",
        hint="reinstall moat-nb (the wheel ships widgets/ as moat_nb/_widgets)",
    )
