"""Benchmarks of the curvature routes, the precision controller and sharded sweeps: ``python -m benchmarks [--quick]``.

See :mod:`benchmarks.run` for what is measured and how; results go to
``benchmarks/results.json`` and ``benchmarks/cost_vs_size.png``.
"""
