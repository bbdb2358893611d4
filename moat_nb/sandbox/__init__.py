"""The embedded, Cameleer-compatible sandbox platform (DESIGN.md section 8).

Imports the pure core (``moat_nb.model``, ``moat_nb.errors``, ...) and never the client side.
"""
