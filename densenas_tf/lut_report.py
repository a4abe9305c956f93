"""The additivity check: predicted (table sum) against measured latency of whole nets.

For the space's reference nets (shipped ArchSpecs that the space contains)
and random paths with random ops, it measures each built net on the table's
backend, threads and batch size, and reports the mean absolute percentage
error and Spearman's rank correlation.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable

import numpy as np

from densenas_tf.arch_spec import ArchSpec, list_reference_archs, load_arch
from densenas_tf.derive import arch_from_path
from densenas_tf.latency import LatencyTable, arch_keys, space_keys
from densenas_tf.search_space import SearchSpace


def random_arch(space: SearchSpace, rng: np.random.Generator, name: str = "random") -> ArchSpec:
    """A path drawn by a uniform walk over out-edges, and uniform ops per layer."""
    path = [0]
    while path[-1] != space.final_node:
        edges = space.out_edges(path[-1])
        path.append(edges[rng.integers(len(edges))].dst)
    heads = {row: int(rng.integers(len(space.head_ops))) for row in range(len(space.head_edges))}
    stacks = {
        row: int(rng.integers(len(space.stacking_ops))) for row in range(len(space.stacking_layers))
    }
    return arch_from_path(
        space, tuple(path), heads, stacks, name=name, provenance={"source": "random path"}
    )


def reference_archs(space: SearchSpace) -> list[ArchSpec]:
    """Shipped nets whose every latency key belongs to the space."""
    keys = set(space_keys(space).all_keys())
    found = []
    for name in list_reference_archs():
        spec = load_arch(name)
        if spec.input_shape == space.input_shape and {k.key for k in arch_keys(spec)} <= keys:
            found.append(spec)
    return found


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks on ties)."""

    def ranks(x):
        x = np.asarray(x, dtype=float)
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for value in np.unique(x):
            tied = x == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom else 0.0


@dataclasses.dataclass
class ReportRow:
    name: str
    block_string: str
    predicted_ms: float
    measured_ms: float

    @property
    def error_percent(self) -> float:
        return 100.0 * (self.predicted_ms - self.measured_ms) / self.measured_ms


def additivity_report(
    space: SearchSpace,
    table: LatencyTable,
    num_random: int = 20,
    seed: int = 0,
    warmup: int = 20,
    runs: int = 100,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    include_reference: bool = True,
) -> dict:
    from densenas_tf.latency_measure import measure_arch

    table.check_space(space)
    prov = table.provenance
    rng = np.random.default_rng(seed)
    nets = (reference_archs(space) if include_reference else []) + [
        random_arch(space, rng, f"random_{i}") for i in range(num_random)
    ]
    rows = []
    for i, spec in enumerate(nets, start=1):
        measured = measure_arch(
            spec, prov["backend"], prov["threads"], prov["batch_size"], warmup, runs
        )
        rows.append(
            ReportRow(
                spec.name, spec.to_block_string(), table.predicted_ms(spec), measured.median_ms
            )
        )
        log(
            f"[{i}/{len(nets)}] {spec.name}: predicted {rows[-1].predicted_ms:.3f} ms, measured {measured.median_ms:.3f} ms"
        )
    predicted = np.array([r.predicted_ms for r in rows])
    measured = np.array([r.measured_ms for r in rows])
    return {
        "space": space.name,
        "backend": prov["backend"],
        "threads": prov["threads"],
        "batch_size": prov["batch_size"],
        "n_paths": len(rows),
        "n_reference": len(rows) - num_random,
        "mape_percent": float(np.mean(np.abs(predicted - measured) / measured) * 100.0),
        "spearman": spearman(predicted, measured),
        "rows": [dataclasses.asdict(r) | {"error_percent": r.error_percent} for r in rows],
    }


def format_report(report: dict) -> str:
    lines = [
        f"additivity of {report['space']} ({report['backend']}, {report['threads']} thread(s), "
        f"batch {report['batch_size']})",
        f"{'net':<14} {'predicted ms':>12} {'measured ms':>12} {'error %':>8}",
    ]
    for row in report["rows"]:
        lines.append(
            f"{row['name']:<14} {row['predicted_ms']:>12.3f} {row['measured_ms']:>12.3f} {row['error_percent']:>+8.1f}"
        )
    lines.append(
        f"{report['n_paths']} nets: MAPE {report['mape_percent']:.2f} %, Spearman {report['spearman']:.3f}"
    )
    return "\n".join(lines)


def plot_report(report: dict, path: str | os.PathLike) -> None:
    """Predicted against measured latency, written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from densenas_tf.io_utils import replace_atomic

    predicted = [r["predicted_ms"] for r in report["rows"]]
    measured = [r["measured_ms"] for r in report["rows"]]
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.scatter(measured, predicted, s=18)
    low, high = min(predicted + measured) * 0.95, max(predicted + measured) * 1.05
    ax.plot([low, high], [low, high], color="gray", linewidth=1, linestyle="--")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency, table sum (ms)")
    ax.set_title(
        f"{report['space']}: MAPE {report['mape_percent']:.1f} %, Spearman {report['spearman']:.2f}"
    )
    fig.tight_layout()
    with replace_atomic(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
