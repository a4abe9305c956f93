"""Latency: the lookup-table format, measuring tables and whole nets on a device,
the supernet's differentiable expected latency (eqs. 5-7), the additivity
report of predicted against measured nets and the check that a table is this
machine's.

Layer 3: may import ``core``, ``space``, ``data``, ``nn`` and ``exporting``.
"""
