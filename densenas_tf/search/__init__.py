"""The architecture search: its config and objectives, the Searcher loop with its
weight and architecture steps, one run in one directory, and what a search
reports (epoch reports, TensorBoard, pictures, summary).

Layer 4: may import every layer below (``core`` to ``latency``); not ``train``.
"""
