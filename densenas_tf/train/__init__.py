"""Retraining a derived architecture from scratch, and training recipes.

Layer 4: may import every layer below (``core`` to ``latency``); not ``search``.
"""
