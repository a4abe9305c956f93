"""Derivation: the Viterbi path over softmax(beta), then argmax ops (paper 3.3.1).

Pure NumPy: it reads the architecture parameters as arrays, so it runs on a
checkpoint, a live supernet or hand-set values alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from densenas_tf.core.errors import DenseNASError
from densenas_tf.space import ops
from densenas_tf.space.arch_spec import ArchSpec, BlockSpec
from densenas_tf.space.spaces import SearchSpace

# Log-odds below which a choice counts as a near-tie (about a 5 % probability ratio).
DEFAULT_TIE_THRESHOLD = 0.05


class NonFiniteArchError(DenseNASError, ValueError):
    """Architecture parameters holding NaN or infinity: nothing can be derived."""


def check_finite(name: str, values: np.ndarray) -> None:
    """Refuses NaN or infinite architecture parameters, naming where they are."""
    bad = np.argwhere(~np.isfinite(np.asarray(values, dtype=np.float64)))
    if bad.size:
        where = ", ".join(str(tuple(int(i) for i in idx)) for idx in bad[:5])
        raise NonFiniteArchError(
            f"{name} holds {len(bad)} non-finite value(s) (at {where}); the search diverged: "
            "derive from an earlier checkpoint (tools/derive.py --checkpoint=...) or search "
            "again with a lower alpha_lr/beta_lr"
        )


def path_probabilities(space: SearchSpace, beta: np.ndarray) -> np.ndarray:
    """p_{i->j} per edge: softmax of beta over each block's outgoing edges."""
    beta = np.asarray(beta, dtype=np.float64)
    if beta.shape != (len(space.edges),):
        raise ValueError(
            f"beta has shape {beta.shape}; space {space.name!r} needs ({len(space.edges)},)"
        )
    check_finite("beta", beta)
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


def best_paths(
    space: SearchSpace, probs: np.ndarray, k: int = 2
) -> list[tuple[tuple[int, ...], float]]:
    """The k most probable paths from block 0 to the final node, best first,
    each with its probability (k-best Viterbi: every node keeps its k best
    partial paths). Ties go to the partial path found first, as in
    ``viterbi_path``, so the first path returned is Viterbi's."""
    # node -> list of (probability, parent node, rank of the parent's partial path)
    best: dict[int, list[tuple[float, int, int]]] = {0: [(1.0, -1, -1)]}
    for edge in space.edges:
        for rank, (score, _, _) in enumerate(best[edge.src]):
            entry = (score * float(probs[edge.index]), edge.src, rank)
            kept = best.setdefault(edge.dst, [])
            position = len(kept)
            while position > 0 and entry[0] > kept[position - 1][0]:
                position -= 1
            if position < k:
                kept.insert(position, entry)
                del kept[k:]
    paths = []
    for rank, (score, _, _) in enumerate(best[space.final_node]):
        node, node_rank, path = space.final_node, rank, [space.final_node]
        while node != 0:
            _, parent, parent_rank = best[node][node_rank]
            path.append(parent)
            node, node_rank = parent, parent_rank
        paths.append((tuple(reversed(path)), score))
    return paths


def decision_margins(
    space: SearchSpace,
    probs: np.ndarray,
    alpha_head: np.ndarray,
    alpha_stack: np.ndarray,
    path: tuple[int, ...],
    tie_threshold: float,
) -> dict[str, Any]:
    """How firmly the derivation's choices are made, in log-odds.

    The path margin is log(P(path) / P(runner-up path)); an op's margin is the
    gap between its layer's two largest alphas (the log of their softmax
    ratio). A margin below ``tie_threshold`` is a near-tie: listed in
    ``near_ties``."""
    ranked = best_paths(space, probs, k=2)
    info: dict[str, Any] = {"tie_threshold": tie_threshold}
    near_ties = []
    if len(ranked) > 1:
        (_, p1), (runner_up, p2) = ranked[0], ranked[1]
        margin = float(np.log(p1) - np.log(p2)) if p2 > 0 else float("inf")
        info.update(
            runner_up_path=list(runner_up),
            runner_up_probability=p2,
            path_margin=margin,
        )
        if margin < tie_threshold:
            near_ties.append(f"path {list(path)} vs {list(runner_up)}: margin {margin:.4f}")
    else:
        info.update(runner_up_path=None, runner_up_probability=0.0, path_margin=float("inf"))

    def gap(row: np.ndarray) -> float:
        top = np.sort(np.asarray(row, dtype=np.float64))[::-1]
        return float(top[0] - top[1]) if len(top) > 1 else float("inf")

    op_margins = []
    for src, dst in itertools.pairwise(path):
        if dst == space.final_node:
            break
        edge = space.edge(src, dst)
        layers = [(f"{src}>{dst} head", alpha_head[space.head_row(edge)], space.head_ops)]
        layers += [
            (f"{src}>{dst} layer {k + 1}", alpha_stack[row], space.stacking_ops)
            for k, row in enumerate(space.stacking_rows(dst))
        ]
        for layer, row, names in layers:
            entry = {
                "layer": layer,
                "op": ops.parse_op(names[int(np.argmax(row))]).short_name,
                "margin": gap(row),
            }
            op_margins.append(entry)
            if entry["margin"] < tie_threshold:
                near_ties.append(f"{layer} {entry['op']}: margin {entry['margin']:.4f}")
    info["op_margins"] = op_margins
    info["min_op_margin"] = min((m["margin"] for m in op_margins), default=float("inf"))
    info["near_ties"] = near_ties
    return info


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


def checked_alphas(
    space: SearchSpace, alpha_head: np.ndarray, alpha_stack: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The alphas as arrays, refused when not finite or not shaped for the space."""
    alpha_head = np.asarray(alpha_head)
    alpha_stack = np.asarray(alpha_stack)
    check_finite("alpha_head", alpha_head)
    check_finite("alpha_stack", alpha_stack)
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
    return alpha_head, alpha_stack


def argmax_choices(
    alpha_head: np.ndarray, alpha_stack: np.ndarray
) -> tuple[dict[int, int], dict[int, int]]:
    """The paper's op choices: the argmax of each layer's alpha, by row."""
    return (
        {row: int(np.argmax(values)) for row, values in enumerate(alpha_head)},
        {row: int(np.argmax(values)) for row, values in enumerate(alpha_stack)},
    )


def derive_arch(
    space: SearchSpace,
    alpha_head: np.ndarray,
    alpha_stack: np.ndarray,
    beta: np.ndarray,
    name: str = "derived",
    provenance: Mapping[str, Any] | None = None,
    tie_threshold: float = DEFAULT_TIE_THRESHOLD,
) -> ArchSpec:
    """Viterbi path over softmax(beta), argmax alpha per layer, skips dropped.

    The provenance records the decision margins (``decision_margins``): the
    runner-up path and its probability, each chosen op's margin, and the
    near-ties below ``tie_threshold``."""
    alpha_head, alpha_stack = checked_alphas(space, alpha_head, alpha_stack)
    probs = path_probabilities(space, beta)
    path = viterbi_path(space, probs)
    head_choice, stack_choice = argmax_choices(alpha_head, alpha_stack)
    info = {
        "search_space": space.name,
        "space_fingerprint": space.fingerprint(),
        "path": list(path),
        "path_probability": path_probability(space, probs, path),
    }
    info.update(decision_margins(space, probs, alpha_head, alpha_stack, path, tie_threshold))
    info.update(provenance or {})
    return arch_from_path(space, path, head_choice, stack_choice, name=name, provenance=info)
