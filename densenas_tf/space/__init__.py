"""The search space as data: the op registry and its analytic costs, space
configs and their dense graph, the ArchSpec document of a derived net, the
Viterbi derivation of a path, and costs of spaces and nets. Pure Python and
NumPy: nothing here imports TensorFlow.

Layer 1: may import ``core``.
"""
