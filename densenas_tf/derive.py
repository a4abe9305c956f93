"""Derivation: the Viterbi path over softmax(beta), then argmax ops (paper 3.3.1).

Pure NumPy: it reads the architecture parameters as arrays, so it runs on a
checkpoint, a live supernet or hand-set values alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from densenas_tf import ops
from densenas_tf.arch_spec import ArchSpec, BlockSpec
from densenas_tf.search_space import SearchSpace


def path_probabilities(space: SearchSpace, beta: np.ndarray) -> np.ndarray:
    """p_{i->j} per edge: softmax of beta over each block's outgoing edges."""
    beta = np.asarray(beta, dtype=np.float64)
    if beta.shape != (len(space.edges),):
        raise ValueError(
            f"beta has shape {beta.shape}; space {space.name!r} needs ({len(space.edges)},)"
        )
    probs = np.empty_like(beta)
    for block in space.blocks:
        ids = [e.index for e in space.out_edges(block.index)]
        logits = beta[ids] - beta[ids].max()
        probs[ids] = np.exp(logits) / np.exp(logits).sum()
    return probs


def viterbi_path(space: SearchSpace, probs: np.ndarray) -> tuple[int, ...]:
    """The most probable path from block 0 to the final node.

    P(0) = 1; P(j) = max_i P(i) * p_{i->j}, remembering the argmax (the first
    one on ties); then backtrack from the final node. Edges are sorted by
    source, so one forward pass visits every predecessor before its successor.
    """
    best = {0: 1.0}
    parent: dict[int, int] = {}
    for edge in space.edges:
        score = best[edge.src] * probs[edge.index]
        if edge.dst not in best or score > best[edge.dst]:
            best[edge.dst] = score
            parent[edge.dst] = edge.src
    path = [space.final_node]
    while path[-1] != 0:
        path.append(parent[path[-1]])
    return tuple(reversed(path))


def path_probability(space: SearchSpace, probs: np.ndarray, path: tuple[int, ...]) -> float:
    return float(np.prod([probs[space.edge(a, b).index] for a, b in itertools.pairwise(path)]))


def arch_from_path(
    space: SearchSpace,
    path: tuple[int, ...],
    head_op_indices: Mapping[int, int],
    stacking_op_indices: Mapping[int, int],
    name: str = "",
    provenance: Mapping[str, Any] | None = None,
) -> ArchSpec:
    """Builds the ArchSpec of a path, given op choices by alpha row.

    head_op_indices maps a head row to an index into space.head_ops;
    stacking_op_indices maps a stacking row to an index into
    space.stacking_ops. Stacking layers whose op is skip are dropped.
    """
    blocks = []
    for src, dst in itertools.pairwise(path):
        if dst == space.final_node:
            break
        edge = space.edge(src, dst)
        stacking = []
        for row in space.stacking_rows(dst):
            op = space.stacking_ops[stacking_op_indices[row]]
            if op != ops.SKIP:
                stacking.append(op)
        blocks.append(
            BlockSpec(
                in_width=space.blocks[src].width,
                width=space.blocks[dst].width,
                head_op=space.head_ops[head_op_indices[space.head_row(edge)]],
                stride=edge.stride,
                stacking_ops=tuple(stacking),
            )
        )
    return ArchSpec(
        name=name,
        input_shape=space.input_shape,
        num_classes=space.num_classes,
        stem=space.stem,
        blocks=tuple(blocks),
        final_conv_width=space.final_conv_width,
        provenance=dict(provenance or {}),
    )


def derive_arch(
    space: SearchSpace,
    alpha_head: np.ndarray,
    alpha_stack: np.ndarray,
    beta: np.ndarray,
    name: str = "derived",
    provenance: Mapping[str, Any] | None = None,
) -> ArchSpec:
    """Viterbi path over softmax(beta), argmax alpha per layer, skips dropped."""
    alpha_head = np.asarray(alpha_head)
    alpha_stack = np.asarray(alpha_stack)
    expected_head = (len(space.head_edges), len(space.head_ops))
    expected_stack = (len(space.stacking_layers), len(space.stacking_ops))
    if alpha_head.shape != expected_head:
        raise ValueError(
            f"alpha_head has shape {alpha_head.shape}; space {space.name!r} needs {expected_head}"
        )
    if alpha_stack.shape != expected_stack:
        raise ValueError(
            f"alpha_stack has shape {alpha_stack.shape}; space {space.name!r} needs {expected_stack}"
        )
    probs = path_probabilities(space, beta)
    path = viterbi_path(space, probs)
    head_choice = {row: int(np.argmax(alpha_head[row])) for row in range(expected_head[0])}
    stack_choice = {row: int(np.argmax(alpha_stack[row])) for row in range(expected_stack[0])}
    info = {
        "search_space": space.name,
        "space_fingerprint": space.fingerprint(),
        "path": list(path),
        "path_probability": path_probability(space, probs, path),
    }
    info.update(provenance or {})
    return arch_from_path(space, path, head_choice, stack_choice, name=name, provenance=info)
