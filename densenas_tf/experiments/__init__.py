"""Experiments on the library, run by the ``tools/bench_*.py`` and
``tools/compare.py`` binaries: step, input and kernel benchmarks, the warm-up
ablation and the paper's Fig. 5 comparison. Nothing in the library imports
them.

Layer 5: may import every library layer; not ``main_job`` or ``cli``.
"""
