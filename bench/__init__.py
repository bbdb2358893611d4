"""Benchmarks for DESIGN.md section 11 (run with ``make bench`` or ``python -m bench``).

Each benchmark module exposes ``run(quick: bool) -> list[dict]``; every row has ``id``,
``what``, ``value``, ``unit`` and, where the target is a ratio against a baseline measured in the
same run, ``baseline``, ``ratio`` and ``target``. Benchmarks are never timed assertions: the test
suite runs them once with ``--quick`` to prove they work.
"""
