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

from densenas_tf.core import summaries
from densenas_tf.core.files import write_bytes_atomic, write_text_atomic
from densenas_tf.search.pictures import heatmap_png, supernet_png
from densenas_tf.space import derive, describe, ops
from densenas_tf.space.arch_spec import ArchSpec, count_costs
from densenas_tf.space.spaces import SearchSpace

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
    steering: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """One epoch's figures (``epoch`` is 1-based); ``spec`` has its costs;
    ``steering`` holds the budget (``budget_ms``, None without one) and the
    latency weight in force at the epoch's end (``latency_weight``)."""
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
        "budget_ms": (steering or {}).get("budget_ms"),
        "latency_weight": (steering or {}).get("latency_weight"),
        **{k: info.get(k) for k in MARGIN_KEYS},
        "op_margins": info.get("op_margins"),
        **({"warmup_end": warmup_end} if warmup_end else {}),
    }


def log_line(report: dict[str, Any]) -> str:
    margin = report.get("path_margin")
    ties = report.get("near_ties") or []
    budget = report.get("budget_ms")
    latency = f"predicted {report['predicted_latency_ms']:.3f} ms"
    if budget is not None:
        latency += (
            f", budget {budget:.3f} ms; supernet's expected latency "
            f"{report['expected_latency_ms']:.3f} ms, latency weight {report['latency_weight']:.4g}"
        )
    return (
        f"epoch {report['epoch']} ({report['stage']}): supernet accuracy "
        f"{report['supernet_eval']['acc']:.4f} on the architecture split; "
        f"{report['block_string']} ({latency}); "
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


# Keys of a step's values -> their per-step tags.
STEP_TAGS = {
    "weight": {"ce": "weight_step/cross_entropy", "acc": "weight_step/accuracy",
               "loss_scale": "weight_step/loss_scale"},
    "arch": {"ce": "arch_step/cross_entropy", "loss": "arch_step/loss",
             "acc": "arch_step/accuracy", "latency_ms": "latency/step_expected_ms",
             "latency_weight": "latency/weight", "derived_ms": "latency/step_derived_ms",
             "loss_scale": "arch_step/loss_scale"},
}  # fmt: skip


def finish_run(
    run_dir: Path,
    final: ArchSpec,
    reports: list[dict[str, Any]],
    arch_params: dict[str, np.ndarray],
    config,
    *,
    arch_start_epoch: int,
    replicas: int,
    replica_spread: float,
    global_steps: int,
    wall_time_s: float,
) -> dict[str, Any]:
    """Writes what a finished search leaves: ``arch.json`` (the final derived
    net), the kept best nets and ``summary.json`` (the final net and its costs,
    how the run went, every epoch's report), which it returns.
    ``arch_start_epoch`` is 0-based, -1 when the architecture stage never began."""
    final.save(run_dir / "arch.json")
    start = arch_start_epoch
    first = config.select_from_epoch or (start + 1 if start >= 0 else config.epochs + 1)
    info = final.provenance
    summary = {
        "replicas": replicas,
        "arch_replica_max_abs_diff": replica_spread,
        "arch_params": {k: np.asarray(v).tolist() for k, v in arch_params.items()},
        "epochs": config.epochs,
        "arch_stage_start_epoch": start + 1 if start >= 0 else None,
        "warmup_end": next((r["warmup_end"] for r in reports if "warmup_end" in r), None),
        "global_steps": global_steps,
        "wall_time_s": wall_time_s,
        "block_string": final.to_block_string(),
        "predicted_latency_ms": info["predicted_latency_ms"],
        "budget": info.get("budget"),
        "params": info["params"],
        "mult_adds": info["mult_adds"],
        **{k: info.get(k) for k in MARGIN_KEYS},
        "op_margins": info.get("op_margins"),
        "best": keep_best(run_dir, reports, config.keep_best, first),
        "epoch_reports": reports,
    }
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def publish_epoch(
    writer,
    run_dir: Path,
    space: SearchSpace,
    arrays: dict[str, np.ndarray],
    step: int,
    reports: list[dict[str, Any]],
    spec: ArchSpec,
    *,
    best: tuple[int, int] | None,
    tie_threshold: float,
    log,
) -> None:
    """Everything an epoch's end reports, the last of ``reports`` being its
    report: the report file, the TensorBoard summaries, the kept best nets
    (``best``: how many, of the epochs from which one on; None in warm-up)
    and the log lines, near-ties included."""
    report = reports[-1]
    write_report(run_dir, report)
    write_summaries(writer, run_dir, space, arrays, step, report, spec)
    if best is not None:
        keep_best(run_dir, reports, *best)
    log(log_line(report))
    for tie in report["near_ties"]:
        log(f"  near-tie (margin below {tie_threshold}): {tie}")


def write_step_summaries(
    writer, kind: str, step: int, values: dict, learning_rates: dict[str, float]
) -> None:
    """One step's scalars (``kind`` "weight" or "arch"): the batch's own values,
    not running means, and the learning rates in force (by name: ``alpha`` and
    ``beta``, or ``weight``), at global step ``step``."""
    with writer.as_default():
        for key, tag in STEP_TAGS[kind].items():
            if key in values:
                summaries.scalar(tag, values[key], step)
        if kind == "arch":
            summaries.scalar("arch_step/latency_term", values["loss"] - values["ce"], step)
            for name in ("alpha", "beta"):
                summaries.scalar(f"arch_step/{name}_learning_rate", learning_rates[name], step)
        else:
            summaries.scalar("weight_step/learning_rate", learning_rates["weight"], step)


def write_summaries(
    writer,
    run_dir: Path,
    space: SearchSpace,
    arrays: dict[str, np.ndarray],
    step: int,
    report: dict,
    spec: ArchSpec,
) -> None:
    """The end of an epoch, at global step ``step``: the supernet's evaluation, the
    derived net, the latencies, alpha and beta (``arrays``: histograms,
    entropies, labelled heatmaps) and the supernet picture (also written to
    ``run_dir/pictures/``)."""
    head_p = tf.nn.softmax(arrays["alpha_head"]).numpy()
    stack_p = tf.nn.softmax(arrays["alpha_stack"]).numpy()
    path_p = derive.path_probabilities(space, arrays["beta"])
    epoch = report["epoch"]
    scalars = {
        "eval/supernet_accuracy": report["supernet_eval"]["acc"],
        "eval/supernet_cross_entropy": report["supernet_eval"]["ce"],
        "latency/expected_ms": report["expected_latency_ms"],
        "latency/derived_predicted_ms": report["predicted_latency_ms"],
        **({"latency/budget_ms": report["budget_ms"]} if report.get("budget_ms") else {}),
        **(
            {"latency/weight": report["latency_weight"]}
            if report.get("latency_weight") is not None
            else {}
        ),
        "derived/params": report["params"],
        "derived/mult_adds": report["mult_adds"],
        "derived/min_op_margin": report["min_op_margin"],
        "derived/near_ties": len(report["near_ties"] or []),
        "arch_params/entropy_head_ops": summaries.normalised_entropy(head_p),
        "arch_params/entropy_paths": float(
            np.mean(
                [
                    summaries.normalised_entropy(path_p[[e.index for e in edges]])
                    for edges in (space.out_edges(b.index) for b in space.blocks)
                    if len(edges) > 1  # a block with one way out decides nothing
                ]
                or [0.0]
            )
        ),
    }
    if stack_p.size:
        scalars["arch_params/entropy_stacking_ops"] = summaries.normalised_entropy(stack_p)
    if np.isfinite(report["path_margin"]):
        scalars["derived/path_margin"] = report["path_margin"]
    picture = supernet_png(space, path_p, spec, f"{space.name}: epoch {epoch}, step {step}")
    with writer.as_default():
        for tag, value in scalars.items():
            summaries.scalar(tag, value, step)
        for name, values in arrays.items():
            tf.summary.histogram(
                f"arch_params/{name}", values, step=step,
                description=summaries.description(f"arch_params/{name}"),
            )  # fmt: skip
        for tag, png in op_heatmaps(space, head_p, stack_p, path_p, epoch).items():
            summaries.image_png(tag, png, step)
        summaries.text(
            "derived/architecture",
            describe.architecture_markdown(spec, f"derived after epoch {epoch}"),
            step,
        )
        summaries.image_png("derived/supernet", picture, step)
    writer.flush()
    write_bytes_atomic(Path(run_dir) / "pictures" / f"epoch_{epoch:03d}.png", picture)


def op_heatmaps(space, head_p, stack_p, path_p, epoch: int) -> dict[str, bytes]:
    """Labelled heatmaps (PNG) of the op probabilities of every mixed layer and of
    the path probabilities (missing edges blank)."""
    head_names = [ops.parse_op(op).short_name for op in space.head_ops]
    maps = {
        "arch_params/head_ops": heatmap_png(
            head_p,
            [f"{e.src}->{e.dst}" for e in space.head_edges],
            head_names,
            f"head layers' op probabilities, epoch {epoch}",
            row_axis="edge (source -> target block)",
            col_axis="op",
        )
    }
    if stack_p.size:
        maps["arch_params/stacking_ops"] = heatmap_png(
            stack_p,
            [f"block {layer.block} layer {layer.position + 1}" for layer in space.stacking_layers],
            [ops.parse_op(op).short_name for op in space.stacking_ops],
            f"stacking layers' op probabilities, epoch {epoch}",
            col_axis="op",
        )
    matrix = beta_matrix(space, path_p)
    targets = [str(i) for i in range(1, space.final_node)] + ["final"]
    maps["arch_params/paths"] = heatmap_png(
        matrix[:, 1:],
        [str(b.index) for b in space.blocks],
        targets,
        f"path probabilities, epoch {epoch}",
        row_axis="source block",
        col_axis="target block",
    )
    return maps


def beta_matrix(space, path_probs: np.ndarray) -> np.ndarray:
    """Blocks x nodes matrix of path probabilities (NaN where there is no edge)."""
    matrix = np.full((space.num_blocks, space.final_node + 1), np.nan)
    for edge in space.edges:
        matrix[edge.src, edge.dst] = path_probs[edge.index]
    return matrix
