"""Derivation under a latency budget: the most probable architecture whose
predicted latency is at most T.

An architecture is a path with one op per layer on it: each head layer of
the path's edges and each stacking layer of the blocks it enters. Its
log-probability is the path's (log of the product of softmax(beta) along it)
plus each chosen op's log-softmax(alpha). Its predicted latency is the sum of
the table's entries along it (``LatencyCosts``), as ``LatencyTable.predicted_ms``
adds them for the ArchSpec.

The search is exact over the table's figures, with no latency grid: a
dynamic programme over the blocks in order, where each block keeps the Pareto
front of its partial architectures (no kept one is both slower and less
probable than another), each block's own stacking layers are reduced to
their front first, and a partial architecture that cannot reach the end
within the budget is dropped. Pure NumPy, like ``derive``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from densenas_tf.core.errors import DenseNASError
from densenas_tf.space import derive, ops
from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.space.spaces import SearchSpace

# Latencies within this many ms of the budget count as meeting it (float sums
# of the same entries in another order differ by far less).
TOLERANCE_MS = 1e-9
# Latency bins of a band's derivation (most_probable_in_band): each of its
# prunes moves a kept latency by under high_ms / BAND_BINS; a path meets one
# per stacking layer, two per block and one at the end (36 on fashion_mnist:
# 3.6 % of the budget at worst, at the band's edges).
BAND_BINS = 1000


class BudgetError(DenseNASError, ValueError):
    """No architecture of the space fits the budget (or the budget is no number > 0)."""


@dataclasses.dataclass(frozen=True)
class LatencyCosts:
    """One device's latency of every choice in a space, laid out like the
    architecture parameters, in ms: ``head_ms[head row, head op]``,
    ``stack_ms[stacking row, stacking op]`` (0 for skip), ``final_ms[k]`` for the
    final 1x1 conv on the k-th edge into the final node, and ``fixed_ms`` for what
    every architecture has (the per-call overhead, the stem and the classifier)."""

    head_ms: np.ndarray
    stack_ms: np.ndarray
    final_ms: np.ndarray
    fixed_ms: float
    source: str = ""

    def check(self, space: SearchSpace) -> None:
        shapes = {
            "head_ms": (len(space.head_edges), len(space.head_ops)),
            "stack_ms": (len(space.stacking_layers), len(space.stacking_ops)),
            "final_ms": (len(space.final_edges),),
        }
        for name, shape in shapes.items():
            value = np.asarray(getattr(self, name))
            if value.shape != shape:
                raise ValueError(
                    f"latency costs: {name} has shape {value.shape}; space {space.name!r} "
                    f"needs {shape}"
                )

    def arch_ms(
        self,
        space: SearchSpace,
        path: tuple[int, ...],
        head_choice: Mapping[int, int],
        stack_choice: Mapping[int, int],
    ) -> float:
        """The predicted latency of one path with its op choices (by alpha row)."""
        total = float(self.fixed_ms)
        final_pos = {e.index: k for k, e in enumerate(space.final_edges)}
        for src, dst in itertools.pairwise(path):
            edge = space.edge(src, dst)
            if dst == space.final_node:
                total += float(self.final_ms[final_pos[edge.index]])
                continue
            row = space.head_row(edge)
            total += float(self.head_ms[row, head_choice[row]])
            for srow in space.stacking_rows(dst):
                total += float(self.stack_ms[srow, stack_choice[srow]])
        return total


def log_softmax(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    shifted = rows - rows.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def pareto(lat: np.ndarray, logp: np.ndarray) -> np.ndarray:
    """Indices of the Pareto front, fastest first: each kept entry is more
    probable than every faster one (of equal entries, the first is kept)."""
    order = np.lexsort((np.arange(len(lat)), -logp, lat))
    best = np.maximum.accumulate(logp[order])
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = logp[order][1:] > best[:-1]
    return order[keep]


@dataclasses.dataclass
class _Front:
    """Partial architectures ending at one node: latency so far, log-probability
    so far, and how each was made (for backtracking)."""

    lat: np.ndarray
    logp: np.ndarray
    parent: np.ndarray  # index into the parent's front, per entry
    src: np.ndarray  # the node it came from
    head: np.ndarray  # head op index (-1 on final edges)
    combo: np.ndarray  # index into the block's stacking front (-1: none)

    def take(self, keep: np.ndarray) -> _Front:
        return _Front(*(getattr(self, f.name)[keep] for f in dataclasses.fields(self)))


def binned(width_ms: float):
    """A pruning like ``pareto`` for a latency band: of the entries in each
    latency bin of ``width_ms`` (bin k holds [k, k+1) x width_ms), the most
    probable (the first of equals), fastest bin first."""

    def prune(lat: np.ndarray, logp: np.ndarray) -> np.ndarray:
        bins = np.floor(lat / width_ms).astype(np.int64)
        order = np.lexsort((np.arange(len(lat)), -logp, bins))
        first = np.ones(len(order), dtype=bool)
        first[1:] = bins[order][1:] != bins[order][:-1]
        return order[first]

    return prune


def _stacking_front(
    space: SearchSpace, block: int, costs: LatencyCosts, logp_stack: np.ndarray, prune=pareto
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latency, log-probability, op per row) of a block's stacking layers
    together, reduced by ``prune`` (the Pareto front) layer by layer."""
    rows = space.stacking_rows(block)
    lat, logp = np.zeros(1), np.zeros(1)
    choices = np.zeros((1, 0), dtype=np.int64)
    for row in rows:
        num_ops = costs.stack_ms.shape[1]
        lat = (lat[:, None] + np.asarray(costs.stack_ms[row])[None, :]).reshape(-1)
        logp = (logp[:, None] + logp_stack[row][None, :]).reshape(-1)
        choices = np.concatenate(
            [
                np.repeat(choices, num_ops, axis=0),
                np.tile(np.arange(num_ops), len(choices))[:, None],
            ],
            axis=1,
        )
        keep = prune(lat, logp)
        lat, logp, choices = lat[keep], logp[keep], choices[keep]
    return lat, logp, choices


def _fastest_rest(space: SearchSpace, costs: LatencyCosts, pick=np.min) -> dict[int, float]:
    """Per node, the least latency from it (the stacking layers of the blocks
    after it counted) to the end; with ``pick=np.max``, the greatest."""
    final_pos = {e.index: k for k, e in enumerate(space.final_edges)}
    rest = {space.final_node: 0.0}
    for block in reversed(space.blocks):
        totals = []
        for edge in space.out_edges(block.index):
            if edge.dst == space.final_node:
                step = float(costs.final_ms[final_pos[edge.index]])
            else:
                step = float(pick(costs.head_ms[space.head_row(edge)]))
                step += sum(float(pick(costs.stack_ms[r])) for r in space.stacking_rows(edge.dst))
            totals.append(step + rest[edge.dst])
        rest[block.index] = (
            float(pick(totals)) if totals else (np.inf if pick is np.min else -np.inf)
        )
    return rest


def slowest_ms(space: SearchSpace, costs: LatencyCosts) -> float:
    """The greatest predicted latency of any architecture of the space."""
    own = sum(float(np.max(costs.stack_ms[r])) for r in space.stacking_rows(0))
    return float(costs.fixed_ms) + own + _fastest_rest(space, costs, pick=np.max)[0]


@dataclasses.dataclass(frozen=True)
class Choice:
    """One architecture: its path, ops by alpha row, latency and log-probability."""

    path: tuple[int, ...]
    head_choice: dict[int, int]
    stack_choice: dict[int, int]
    latency_ms: float
    log_probability: float


def pareto_architectures(
    space: SearchSpace,
    costs: LatencyCosts,
    alpha_head: np.ndarray,
    alpha_stack: np.ndarray,
    beta: np.ndarray,
    budget_ms: float = np.inf,
) -> list[Choice]:
    """Every architecture on the front of latency against log-probability
    whose latency is at most ``budget_ms``, fastest first (so the last one is
    the most probable within the budget, the first the fastest of all)."""
    fronts, block_fronts = _fronts(space, costs, alpha_head, alpha_stack, beta, budget_ms, pareto)
    final = fronts[space.final_node]
    return [_backtrack(space, fronts, block_fronts, k) for k in range(len(final.lat))]


def most_probable_in_band(
    space: SearchSpace,
    costs: LatencyCosts,
    alpha_head: np.ndarray,
    alpha_stack: np.ndarray,
    beta: np.ndarray,
    low_ms: float,
    high_ms: float,
    bins: int = BAND_BINS,
) -> Choice | None:
    """The most probable architecture whose predicted latency is within
    [low_ms, high_ms]; None when none is.

    A lower bound breaks the Pareto front's pruning (a slower, less probable
    partial architecture may be the one that reaches low_ms), so here each
    node keeps the most probable partial architecture per latency bin of
    high_ms / bins instead. Latencies stay exact; only the pruning is coarse:
    the answer is at least as probable as every architecture whose latency is
    within the band shrunk by (bins merged along a path) x the bin width at
    each edge, and it is always within the band itself."""
    width = float(high_ms) / bins
    fronts, block_fronts = _fronts(
        space, costs, alpha_head, alpha_stack, beta, high_ms, binned(width)
    )
    final = fronts[space.final_node]
    inside = np.flatnonzero(final.lat >= low_ms - TOLERANCE_MS)
    if not len(inside):
        return None
    best = inside[np.lexsort((inside, -final.logp[inside]))[0]]
    return _backtrack(space, fronts, block_fronts, int(best))


def _fronts(space, costs, alpha_head, alpha_stack, beta, budget_ms, prune):
    """The dynamic programme: per node, the partial architectures kept by
    ``prune`` among those that can still end within ``budget_ms``; and per
    block, its stacking layers' kept combinations."""
    costs.check(space)
    alpha_head, alpha_stack = derive.checked_alphas(space, alpha_head, alpha_stack)
    probs = derive.path_probabilities(space, beta)
    with np.errstate(divide="ignore"):
        log_edge = np.log(probs)
    logp_head, logp_stack = log_softmax(alpha_head), log_softmax(alpha_stack)
    rest = _fastest_rest(space, costs)
    limit = budget_ms + TOLERANCE_MS
    final_pos = {e.index: k for k, e in enumerate(space.final_edges)}
    block_fronts = {
        b.index: _stacking_front(space, b.index, costs, logp_stack, prune) for b in space.blocks
    }

    lat0, logp0, _ = block_fronts[0]
    fronts: dict[int, _Front] = {}
    start = _Front(
        lat=lat0 + float(costs.fixed_ms),
        logp=logp0,
        parent=np.full(len(lat0), -1),
        src=np.full(len(lat0), -1),
        head=np.full(len(lat0), -1),
        combo=np.arange(len(lat0)),
    )
    keep = prune(start.lat, start.logp)
    fronts[0] = start.take(keep[start.lat[keep] + rest[0] <= limit])
    for node in range(1, space.final_node + 1):
        parts = []
        for edge in space.in_edges(node):
            front = fronts.get(edge.src)
            if front is None or not len(front.lat):
                continue
            n = len(front.lat)
            if node == space.final_node:
                step_lat = np.array([float(costs.final_ms[final_pos[edge.index]])])
                step_logp, heads, combos = np.zeros(1), np.array([-1]), np.array([-1])
            else:
                row = space.head_row(edge)
                blat, blogp, _ = block_fronts[node]
                step_lat = (np.asarray(costs.head_ms[row])[:, None] + blat[None, :]).reshape(-1)
                step_logp = (logp_head[row][:, None] + blogp[None, :]).reshape(-1)
                heads = np.repeat(np.arange(costs.head_ms.shape[1]), len(blat))
                combos = np.tile(np.arange(len(blat)), costs.head_ms.shape[1])
                # The edge's step (head op and stacking layers) is added whole to every
                # partial architecture: what the Pareto prune drops from it is dominated
                # by a kept step in every sum (exact); the binned prune is coarse here
                # as at the nodes.
                kept = prune(step_lat, step_logp)
                step_lat, step_logp, heads, combos = (
                    step_lat[kept],
                    step_logp[kept],
                    heads[kept],
                    combos[kept],
                )
            m = len(step_lat)
            parts.append(
                _Front(
                    lat=(front.lat[:, None] + step_lat[None, :]).reshape(-1),
                    logp=(front.logp[:, None] + log_edge[edge.index] + step_logp[None, :]).reshape(
                        -1
                    ),
                    parent=np.repeat(np.arange(n), m),
                    src=np.full(n * m, edge.src),
                    head=np.tile(heads, n),
                    combo=np.tile(combos, n),
                )
            )
        if not parts:
            fronts[node] = _Front(
                *(np.zeros(0, dtype=t) for t in (float, float, int, int, int, int))
            )
            continue
        merged = _Front(
            *(
                np.concatenate([getattr(p, f.name) for p in parts])
                for f in dataclasses.fields(_Front)
            )
        )
        merged = merged.take(merged.lat + rest[node] <= limit)
        merged = merged.take(np.isfinite(merged.logp))
        fronts[node] = merged.take(prune(merged.lat, merged.logp))
    return fronts, block_fronts


def _backtrack(space, fronts, block_fronts, index: int) -> Choice:
    node, k = space.final_node, index
    final = fronts[node]
    path, head_choice, stack_choice = [node], {}, {}
    while node != 0:
        front = fronts[node]
        src, parent = int(front.src[k]), int(front.parent[k])
        if node != space.final_node:
            head_choice[space.head_row(space.edge(src, node))] = int(front.head[k])
            rows = space.stacking_rows(node)
            picks = block_fronts[node][2][int(front.combo[k])]
            stack_choice.update(zip(rows, (int(p) for p in picks)))
        path.append(src)
        node, k = src, parent
    rows0 = space.stacking_rows(0)
    stack_choice.update(zip(rows0, (int(p) for p in block_fronts[0][2][int(fronts[0].combo[k])])))
    return Choice(
        path=tuple(reversed(path)),
        head_choice=head_choice,
        stack_choice=stack_choice,
        latency_ms=float(final.lat[index]),
        log_probability=float(final.logp[index]),
    )


def fastest_architecture(
    space: SearchSpace, costs: LatencyCosts, alpha_head, alpha_stack, beta
) -> Choice:
    """The architecture of least predicted latency (the most probable of those tied)."""
    return pareto_architectures(space, costs, alpha_head, alpha_stack, beta)[0]


def _use_the_budget(space, costs, alpha_head, alpha_stack, beta, within, budget_ms, min_fraction):
    """(the net derived, what the band did or None): ``within``, the most
    probable net within the budget, unless it predicts under the band's low
    edge and a net of the band exists. The band is [min_fraction, 1] x
    budget_ms, its low edge min_fraction x the space's slowest net when the
    budget is above that (so a greater budget never derives a faster net)."""
    if min_fraction <= 0:
        return within, None
    high = min(budget_ms, slowest_ms(space, costs))  # bins over what nets can take
    low = min_fraction * high
    if within.latency_ms >= low - TOLERANCE_MS:
        return within, None
    banded = most_probable_in_band(space, costs, alpha_head, alpha_stack, beta, low, high)
    band = {
        "low_ms": low,
        "met": banded is not None,
        "most_probable_within_budget_ms": within.latency_ms,
        "most_probable_within_budget_log_probability": within.log_probability,
    }
    return banded or within, band


def budget_choice(
    space: SearchSpace,
    costs: LatencyCosts,
    alpha_head: np.ndarray,
    alpha_stack: np.ndarray,
    beta: np.ndarray,
    budget_ms: float,
    min_fraction: float = 0.0,
) -> Choice | None:
    """The architecture ``derive_within_budget`` derives, as a Choice (None
    when no architecture fits the budget)."""
    front = pareto_architectures(space, costs, alpha_head, alpha_stack, beta, budget_ms)
    if not front:
        return None
    return _use_the_budget(
        space, costs, alpha_head, alpha_stack, beta, front[-1], budget_ms, min_fraction
    )[0]


def derive_within_budget(
    space: SearchSpace,
    costs: LatencyCosts,
    alpha_head: np.ndarray,
    alpha_stack: np.ndarray,
    beta: np.ndarray,
    budget_ms: float,
    name: str = "derived",
    provenance: Mapping[str, Any] | None = None,
    tie_threshold: float = derive.DEFAULT_TIE_THRESHOLD,
    min_fraction: float = 0.0,
) -> ArchSpec:
    """The most probable architecture (path and ops together) whose predicted
    latency is at most ``budget_ms``; ``BudgetError`` naming the fastest one
    when none fits. The provenance records the budget, the architecture's
    predicted latency and log-probability, what the paper's derivation (Viterbi
    path, then argmax ops) would predict, and how many ops differ from argmax.

    ``min_fraction`` > 0 asks for the budget to be used: when the most probable
    net within the budget predicts under ``min_fraction x budget_ms``, the most
    probable one within [min_fraction, 1] x budget_ms is taken instead
    (``most_probable_in_band``), and the provenance keeps the other's latency
    and log-probability. A budget above the space's slowest net asks for at
    least min_fraction of that net's latency. When no net falls in the band,
    the most probable within the budget stays, and the provenance says so."""
    if not isinstance(budget_ms, (int, float)) or not np.isfinite(budget_ms) or budget_ms <= 0:
        raise BudgetError(f"a latency budget must be a number of ms > 0, got {budget_ms!r}")
    if (
        isinstance(min_fraction, bool)
        or not isinstance(min_fraction, (int, float))
        or not 0 <= min_fraction <= 1  # NaN fails this too
    ):
        raise BudgetError(f"min_fraction must be a number in [0, 1], got {min_fraction!r}")
    alpha_head, alpha_stack = derive.checked_alphas(space, alpha_head, alpha_stack)
    front = pareto_architectures(space, costs, alpha_head, alpha_stack, beta, budget_ms)
    if not front:
        fastest = fastest_architecture(space, costs, alpha_head, alpha_stack, beta)
        spec = derive.arch_from_path(
            space, fastest.path, fastest.head_choice, fastest.stack_choice, name="fastest"
        )
        where = f" ({costs.source})" if costs.source else ""
        raise BudgetError(
            f"no architecture of space {space.name!r} fits a budget of {budget_ms:.4g} ms on "
            f"the latency table{where}: the fastest predicts {fastest.latency_ms:.4f} ms "
            f"({spec.to_block_string()}); give a budget of at least {fastest.latency_ms:.4f} ms "
            "(--target_ms) or a space of smaller nets"
        )
    best, band = _use_the_budget(
        space, costs, alpha_head, alpha_stack, beta, front[-1], budget_ms, min_fraction
    )
    paper = derive.derive_arch(space, alpha_head, alpha_stack, beta)
    paper_choice = derive.argmax_choices(alpha_head, alpha_stack)
    paper_ms = costs.arch_ms(space, tuple(paper.provenance["path"]), *paper_choice)
    probs = derive.path_probabilities(space, beta)
    info: dict[str, Any] = {
        "search_space": space.name,
        "space_fingerprint": space.fingerprint(),
        "path": list(best.path),
        "path_probability": derive.path_probability(space, probs, best.path),
    }
    info.update(
        derive.decision_margins(space, probs, alpha_head, alpha_stack, best.path, tie_threshold)
    )
    changed = _mark_chosen_ops(space, info, alpha_head, alpha_stack, best)
    info["budget"] = {
        "target_ms": float(budget_ms),
        "predicted_ms": best.latency_ms,
        "log_probability": best.log_probability,
        "ops_not_argmax": changed,
        "paper_derivation_ms": paper_ms,
        "paper_derivation_fits": paper_ms <= budget_ms + TOLERANCE_MS,
        "front_size": len(front),
        "costs": costs.source,
        "min_fraction": float(min_fraction),
    }
    if band is not None:
        info["budget"]["band"] = band
    info.update(provenance or {})
    return derive.arch_from_path(
        space, best.path, best.head_choice, best.stack_choice, name=name, provenance=info
    )


def _mark_chosen_ops(space, info, alpha_head, alpha_stack, best: Choice) -> int:
    """Rewrites the op margins for the ops chosen under the budget: the margin
    of a chosen op is its logit minus the best other one (negative where the
    budget took a less probable op). Returns how many chosen ops are not argmax."""
    rows = []
    for src, dst in itertools.pairwise(best.path):
        if dst == space.final_node:
            break
        head_row = space.head_row(space.edge(src, dst))
        rows.append((alpha_head[head_row], space.head_ops, best.head_choice[head_row]))
        rows += [
            (alpha_stack[r], space.stacking_ops, best.stack_choice[r])
            for r in space.stacking_rows(dst)
        ]
    changed, near_ties = 0, [t for t in info["near_ties"] if t.startswith("path ")]
    for entry, (row, names, pick) in zip(info["op_margins"], rows):
        others = np.delete(np.asarray(row, dtype=np.float64), pick)
        margin = float(row[pick] - others.max()) if len(others) else float("inf")
        changed += margin < 0
        entry.update(op=ops.parse_op(names[pick]).short_name, margin=margin)
        if abs(margin) < info["tie_threshold"]:
            near_ties.append(f"{entry['layer']} {entry['op']}: margin {margin:.4f}")
    info["min_op_margin"] = min((m["margin"] for m in info["op_margins"]), default=float("inf"))
    info["near_ties"] = near_ties
    return int(changed)
