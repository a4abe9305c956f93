"""What the search reports: per-epoch reports, TensorBoard summaries, pictures,
the kept best architectures and the run's summary.

The Searcher calls these at the end of each epoch and of the run; nothing
here changes the search's state.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from densenas_tf.arch_spec import ArchSpec, count_costs
from densenas_tf.io_utils import write_bytes_atomic, write_text_atomic
from densenas_tf.pictures import supernet_png

# Provenance keys copied from a derived ArchSpec into its epoch report.
MARGIN_KEYS = (
    "path",
    "path_probability",
    "runner_up_path",
    "runner_up_probability",
    "path_margin",
    "min_op_margin",
    "near_ties",
)


def with_costs(spec: ArchSpec, table, **extra) -> ArchSpec:
    """The spec with its predicted latency, params and multiply-adds (and
    ``extra``) added to its provenance."""
    cost = count_costs(spec)
    return dataclasses.replace(
        spec,
        provenance={
            **spec.provenance,
            "predicted_latency_ms": table.predicted_ms(spec),
            "params": cost.params,
            "mult_adds": cost.mult_adds,
            **extra,
        },
    )


def epoch_report(
    epoch: int,
    spec: ArchSpec,
    weight: dict[str, float],
    arch: dict[str, float] | None,
    evaluation: dict[str, float],
    expected_latency_ms: float,
    warmup_end: dict[str, Any] | None,
) -> dict[str, Any]:
    """One epoch's figures (``epoch`` is 1-based); ``spec`` has its costs."""
    info = spec.provenance
    return {
        "epoch": epoch,
        "stage": "warm-up" if arch is None else "search",
        "block_string": spec.to_block_string(),
        "predicted_latency_ms": info["predicted_latency_ms"],
        "params": info["params"],
        "mult_adds": info["mult_adds"],
        "weight_pass": weight,
        "arch_pass": arch,
        "supernet_eval": evaluation,
        "expected_latency_ms": expected_latency_ms,
        **{k: info.get(k) for k in MARGIN_KEYS},
        "op_margins": info.get("op_margins"),
        **({"warmup_end": warmup_end} if warmup_end else {}),
    }


def log_line(report: dict[str, Any]) -> str:
    margin = report.get("path_margin")
    ties = report.get("near_ties") or []
    return (
        f"epoch {report['epoch']} ({report['stage']}): supernet accuracy "
        f"{report['supernet_eval']['acc']:.4f} on the architecture split; "
        f"{report['block_string']} (predicted {report['predicted_latency_ms']:.3f} ms); "
        f"path margin {margin:.4f}, smallest op margin {report['min_op_margin']:.4f}"
        + (f"; {len(ties)} near-tie(s)" if ties else "")
    )


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    path = run_dir / "reports" / f"epoch_{report['epoch']:03d}.json"
    write_text_atomic(path, json.dumps(report, indent=2) + "\n")


def load_reports(run_dir: Path, epochs_done: int) -> list[dict[str, Any]]:
    """The reports of the epochs a checkpoint says are done (a resumed run's history)."""
    reports = []
    for epoch in range(1, epochs_done + 1):
        path = run_dir / "reports" / f"epoch_{epoch:03d}.json"
        if path.is_file():
            reports.append(json.loads(path.read_text()))
    return reports


def keep_best(
    run_dir: Path, reports: list[dict[str, Any]], count: int, from_epoch: int
) -> list[dict[str, Any]]:
    """Writes ``arch_best{k}.json`` for the ``count`` epochs from ``from_epoch``
    (1-based) whose supernet accuracy on the architecture split is highest
    (the later epoch first on equal accuracy); returns what was kept."""
    eligible = [r for r in reports if r["stage"] == "search" and r["epoch"] >= from_epoch]
    ranked = sorted(eligible, key=lambda r: (-r["supernet_eval"]["acc"], -r["epoch"]))[:count]
    kept = []
    for rank, report in enumerate(ranked, start=1):
        source = run_dir / "archs" / f"epoch_{report['epoch']:03d}.json"
        spec = ArchSpec.from_json(source.read_text())
        spec = dataclasses.replace(
            spec,
            name=f"best{rank}",
            provenance={
                **spec.provenance,
                "selected_by": "supernet accuracy on the architecture split",
                "supernet_accuracy": report["supernet_eval"]["acc"],
                "rank": rank,
            },
        )
        spec.save(run_dir / f"arch_best{rank}.json")
        kept.append(
            {
                "rank": rank,
                "epoch": report["epoch"],
                "acc": report["supernet_eval"]["acc"],
                "block_string": report["block_string"],
            }
        )
    return kept


def entropy(probs: np.ndarray) -> float:
    p = np.clip(probs, 1e-12, 1.0)
    return float(-(p * np.log(p)).sum(axis=-1).mean())


def write_summaries(writer, searcher, step: int, report: dict, spec: ArchSpec) -> None:
    """TensorBoard summaries and the supernet picture of one epoch."""
    net, space = searcher.net, searcher.space
    arrays = net.arch_numpy()
    head_p = tf.nn.softmax(arrays["alpha_head"]).numpy()
    stack_p = tf.nn.softmax(arrays["alpha_stack"]).numpy()
    path_p = net.path_probabilities().numpy()
    with writer.as_default(step=step):
        for k, v in report["weight_pass"].items():
            tf.summary.scalar(f"weight/{k}", v)
        for k, v in (report["arch_pass"] or {}).items():
            tf.summary.scalar(f"arch/{k}", v)
        if report["arch_pass"]:
            tf.summary.scalar(
                "arch/latency_term", report["arch_pass"]["loss"] - report["arch_pass"]["ce"]
            )
        for k, v in report["supernet_eval"].items():
            tf.summary.scalar(f"supernet/arch_split_{k}", v)
        tf.summary.scalar("latency/expected_ms", report["expected_latency_ms"])
        tf.summary.scalar("derived/predicted_latency_ms", report["predicted_latency_ms"])
        tf.summary.scalar("derived/params", report["params"])
        tf.summary.scalar("derived/mult_adds", report["mult_adds"])
        if np.isfinite(report["path_margin"]):
            tf.summary.scalar("derived/path_margin", report["path_margin"])
        tf.summary.scalar("derived/min_op_margin", report["min_op_margin"])
        tf.summary.scalar("lr/weight", float(searcher.weight_optimizer.current_learning_rate()))
        for name, optimizer in (
            ("alpha", searcher.alpha_optimizer),
            ("beta", searcher.beta_optimizer),
        ):
            tf.summary.scalar(f"lr/{name}", float(tf.convert_to_tensor(optimizer.learning_rate)))
        for name, values in arrays.items():
            tf.summary.histogram(f"arch_params/{name}", values)
        tf.summary.scalar("entropy/head_ops", entropy(head_p))
        tf.summary.scalar("entropy/stacking_ops", entropy(stack_p))
        block_entropies = []
        for block in space.blocks:
            ids = [e.index for e in space.out_edges(block.index)]
            block_entropies.append(entropy(path_p[ids][None]))
        tf.summary.scalar("entropy/paths", float(np.mean(block_entropies)))
        tf.summary.image("alpha/head_ops", heatmap(head_p))
        if stack_p.size:
            tf.summary.image("alpha/stacking_ops", heatmap(stack_p))
        tf.summary.image("beta/path_probabilities", heatmap(beta_matrix(space, path_p)))
        tf.summary.text("derived/architecture", spec.to_block_string())
        picture = supernet_png(space, path_p, spec, f"{space.name}, epoch {step}")
        tf.summary.image("supernet/paths", tf.io.decode_png(picture, channels=3)[None])
    writer.flush()
    write_bytes_atomic(searcher.run_dir / "pictures" / f"epoch_{step:03d}.png", picture)


def heatmap(matrix: np.ndarray, scale: int = 12) -> np.ndarray:
    """A (1, H, W, 3) uint8 image of a probability matrix, one row per layer or block."""
    values = np.clip(matrix, 0.0, 1.0)
    image = np.repeat(np.repeat(values, scale, axis=0), scale, axis=1)
    rgb = np.stack([image, image * 0.6, 1.0 - image], axis=-1)
    return (rgb[None] * 255).astype(np.uint8)


def beta_matrix(space, path_probs: np.ndarray) -> np.ndarray:
    """Blocks x nodes matrix of path probabilities (zero where there is no edge)."""
    matrix = np.zeros((space.num_blocks, space.final_node + 1))
    for edge in space.edges:
        matrix[edge.src, edge.dst] = path_probs[edge.index]
    return matrix
