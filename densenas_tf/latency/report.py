"""The additivity check: predicted (table sum) against measured latency of whole nets.

For the space's reference nets (shipped ArchSpecs that the space contains)
and random paths with random ops, it measures each built net on the table's
backend, threads and batch size, and reports the mean absolute percentage
error and Spearman's rank correlation.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from densenas_tf.core.errors import DenseNASError, describe_os_error
from densenas_tf.core.files import replace_atomic
from densenas_tf.latency.measure import measure_arch
from densenas_tf.latency.table import (
    LatencyTable,
    LatencyTableError,
    arch_keys,
    quantization_of,
    space_keys,
)
from densenas_tf.space.arch_spec import ArchSpec, list_reference_archs, load_arch
from densenas_tf.space.budget import BudgetError, Choice, LatencyCosts
from densenas_tf.space.derive import arch_from_path
from densenas_tf.space.spaces import SearchSpace

# Bytes written (and synced) to probe a plot's directory: more than a report's PNG takes.
PLOT_PROBE_BYTES = 256 * 1024


class ReportOutputError(DenseNASError):
    """An output file of the report that cannot be written; found before any timing."""


def random_path_and_ops(
    space: SearchSpace, rng: np.random.Generator
) -> tuple[tuple[int, ...], dict[int, int], dict[int, int]]:
    """A path drawn by a uniform walk over out-edges, and a uniform op per layer
    (head ops by head row, stacking ops by stacking row)."""
    path = [0]
    while path[-1] != space.final_node:
        edges = space.out_edges(path[-1])
        path.append(edges[rng.integers(len(edges))].dst)
    heads = {row: int(rng.integers(len(space.head_ops))) for row in range(len(space.head_edges))}
    stacks = {
        row: int(rng.integers(len(space.stacking_ops))) for row in range(len(space.stacking_layers))
    }
    return tuple(path), heads, stacks


def random_choice(space: SearchSpace, costs: LatencyCosts, rng) -> Choice:
    """A net drawn as the additivity report draws its random nets, with its latency."""
    path, heads, stacks = random_path_and_ops(space, rng)
    return Choice(path, heads, stacks, costs.arch_ms(space, path, heads, stacks), 0.0)


def sample_nets(
    space: SearchSpace,
    costs: LatencyCosts,
    count: int,
    low: float,
    high: float,
    seed: int,
    tries: int = 200_000,
) -> list[Choice]:
    """``count`` nets, one per equal slice of [low, high] ms (drawn until one
    falls in each slice)."""
    rng = np.random.default_rng(seed)
    edges = np.linspace(low, high, count + 1)
    found: list[Choice | None] = [None] * count
    for _ in range(tries):
        choice = random_choice(space, costs, rng)
        k = int(np.searchsorted(edges, choice.latency_ms, side="right")) - 1
        if 0 <= k < count and found[k] is None:
            found[k] = choice
            if all(f is not None for f in found):
                return found  # type: ignore[return-value]
    empty = [f"{edges[k]:.3f}-{edges[k + 1]:.3f}" for k, f in enumerate(found) if f is None]
    raise BudgetError(
        f"no net of space {space.name!r} was drawn in {len(empty)} latency slice(s) "
        f"({', '.join(empty[:4])} ms) after {tries} draws; give a latency range the space's "
        "random nets reach (tools/rank_check.py: --min_ms/--max_ms) or draw fewer nets "
        "(--num_nets)"
    )


def random_arch(space: SearchSpace, rng: np.random.Generator, name: str = "random") -> ArchSpec:
    """The ArchSpec of ``random_path_and_ops``."""
    return arch_from_path(
        space, *random_path_and_ops(space, rng), name=name, provenance={"source": "random path"}
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


def mape_percent(predicted, measured) -> float:
    """Mean absolute percentage error of predicted against measured, in percent."""
    predicted = np.asarray(predicted, dtype=float)
    measured = np.asarray(measured, dtype=float)
    return float(np.mean(np.abs(predicted - measured) / measured) * 100.0)


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
    space_source: str | os.PathLike | None = None,
) -> dict:
    """Measures the nets and compares them with the table's predictions;
    ``space_source`` (the space's file, if any) goes into the table's messages."""

    table.check_space(space, space_source)
    prov = table.provenance
    rng = np.random.default_rng(seed)
    nets = (reference_archs(space) if include_reference else []) + [
        random_arch(space, rng, f"random_{i}") for i in range(num_random)
    ]
    rows = []
    for i, spec in enumerate(nets, start=1):
        measured = measure_arch(
            spec, prov["backend"], prov["threads"], prov["batch_size"], warmup, runs,
            quantization_of(table),
        )  # fmt: skip
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
        "quantization": quantization_of(table),
        "threads": prov["threads"],
        "batch_size": prov["batch_size"],
        "n_paths": len(rows),
        "n_reference": len(rows) - num_random,
        "mape_percent": mape_percent(predicted, measured),
        "spearman": spearman(predicted, measured),
        "rows": [dataclasses.asdict(r) | {"error_percent": r.error_percent} for r in rows],
    }


def format_report(report: dict) -> str:
    lines = [
        f"additivity of {report['space']} ({report['backend']}, "
        f"{'float32' if report.get('quantization', 'none') == 'none' else report['quantization']}, "
        f"{report['threads']} thread(s), "
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


def check_writable(path: str | os.PathLike, what: str = "--plot") -> None:
    """Fails now, not after minutes of timing, when ``path`` cannot be written.

    Does what the atomic write will do beside ``path``: creates its directory
    (a missing one is made, as every writer of the package does), then writes,
    syncs and removes a probe file of a plot's size. A read-only or unmakeable
    directory, a full disk or a directory in the way raises ReportOutputError.
    """

    path = Path(path)
    probe = path.with_name(f".{path.name}.probe-{os.getpid()}")
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            data = memoryview(bytes(PLOT_PROBE_BYTES))
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        reason = describe_os_error(OSError(err.errno, err.strerror, str(path)))  # not the probe
        raise ReportOutputError(
            f"cannot write the {what} file (checked before timing): {reason}"
        ) from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def plot_report(report: dict, path: str | os.PathLike) -> None:
    """Predicted against measured latency, written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def compare_tables(table: LatencyTable, other: LatencyTable) -> dict:
    """Entry by entry, ``table`` against ``other`` (the same space's): the
    ratios' median and spread, the keys only one has, the farthest entries."""
    keys = sorted(set(table.entries) & set(other.entries))
    if not keys:
        raise LatencyTableError("the two tables share no entry: are they of the same space?")
    ratios = np.array([table.entries[k].median_ms / other.entries[k].median_ms for k in keys])
    order = np.argsort(np.abs(np.log(ratios)))[::-1]
    q = np.quantile(ratios, [0.05, 0.25, 0.5, 0.75, 0.95])
    kinds: dict[str, list[float]] = {}
    for k, r in zip(keys, ratios):
        kinds.setdefault(k.split("/")[0], []).append(float(r))
    return {
        "shared": len(keys),
        "by_kind": {
            kind: {"entries": len(v), "median": float(np.median(v)), "min": min(v), "max": max(v)}
            for kind, v in sorted(kinds.items())
        },
        "only_in_table": sorted(set(table.entries) - set(other.entries)),
        "only_in_other": sorted(set(other.entries) - set(table.entries)),
        "ratio_quantiles": dict(zip(("p5", "p25", "median", "p75", "p95"), map(float, q))),
        "overhead_ratio": table.overhead_ms / other.overhead_ms,
        "farthest": [(keys[i], float(ratios[i])) for i in order[:5]],
        "devices": [table.provenance.get("device"), other.provenance.get("device")],
    }


def format_comparison(c: dict) -> str:
    q = c["ratio_quantiles"]
    lines = [
        f"{c['devices'][0]} against {c['devices'][1]}: {c['shared']} shared entries",
        f"ratio of medians: median {q['median']:.3f}, quartiles {q['p25']:.3f}-{q['p75']:.3f}, "
        f"5-95 % {q['p5']:.3f}-{q['p95']:.3f}; overhead ratio {c['overhead_ratio']:.3f}",
        "farthest: " + ", ".join(f"{k} x{r:.2f}" for k, r in c["farthest"]),
        "by kind of piece (ratio median, range):",
    ]
    for kind, v in c["by_kind"].items():
        lines.append(
            f"  {kind:<14} {v['entries']:>4} entries  {v['median']:.2f}  "
            f"{v['min']:.2f}-{v['max']:.2f}"
        )
    for side in ("only_in_table", "only_in_other"):
        if c[side]:
            lines.append(f"{side.replace('_', ' ')}: {len(c[side])} entries, e.g. {c[side][0]}")
    return "\n".join(lines)
