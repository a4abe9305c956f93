"""The networks as Keras layers: the registry's ops as layers, mixed ops and
dense blocks, the supernet with its switched traced ops, the architecture
parameters' maths, the derived model built from an ArchSpec, and the
supernet's weight optimizer.

Layer 2: may import ``core`` and ``space``.
"""
