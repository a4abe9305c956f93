"""The paper's section 4.3 / Fig. 5 experiment on Fashion-MNIST (``tools/compare.py``).

Nets compared, each retrained with the same recipe and seed, then tested and
timed as float TFLite (1 thread, batch 1, this machine):

- DenseNAS: the search on the dense ``fashion_mnist`` space at several
  latency weights;
- fixed-block: the same search on ``fixed_block_fashion`` (one block per
  width, chained: only ops and depth are searched);
- MobileNetV2-style nets at several width multipliers;
- random search with keras-tuner over the dense space: paths and ops drawn
  uniformly, kept only inside the DenseNAS nets' predicted latency range,
  each trial a short training scored on the architecture split, with as many
  trials as one DenseNAS search's multiply-adds pay for; the best is retrained.

Every stage is cached in its own directory (searches and trainings resume),
so re-running the command continues where it stopped. Results: ``results.json``,
``compare.md`` and ``compare.png`` (accuracy against measured latency).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.arch_spec import ArchSpec, count_costs
from densenas_tf.io_utils import cached_json, write_bytes_atomic, write_text_atomic

# A MobileNetV2-like net at Fashion-MNIST's resolutions (the fashion_mnist
# space's stem, 14x14 then 7x7 stages, k3 e6 everywhere, final 192).
MBV2_FASHION = [
    # (width, stride, stacking layers)
    (16, 2, 1),
    (24, 1, 2),
    (32, 2, 2),
    (48, 1, 1),
    (72, 1, 0),
]


@dataclasses.dataclass(frozen=True)
class ComparePlan:
    search_config: str = "fashion_mnist_quick"
    search_overrides: tuple[str, ...] = ()
    lams: tuple[float, ...] = (0.05, 0.15, 0.6)
    fixed_block_lam: float = 0.15
    mbv2_widths: tuple[float, ...] = (0.5, 0.75, 1.0)
    train_epochs: int = 3
    train_limit: int | None = None
    test_limit: int | None = None
    random_trial_images: int = 7680
    random_max_trials: int = 40
    latency_runs: int = 100
    seed: int = 0


REDUCED = ComparePlan(
    search_overrides=("data.train_limit=640", "batch_size=64", "epochs=2", "warmup_epochs=1"),
    lams=(0.1, 1.0),
    mbv2_widths=(0.5, 1.0),
    train_epochs=1,
    train_limit=2000,
    test_limit=500,
    random_trial_images=256,
    random_max_trials=3,
    latency_runs=5,
)


def mobilenet_v2_fashion(width: float, num_classes: int = 10) -> ArchSpec:
    """The MobileNetV2-style Fashion-MNIST net with its widths scaled (multiples of 4)."""
    from densenas_tf.search_space import load_space

    stem = load_space("fashion_mnist").stem
    parts = [f"28x28x1 | stem:c{stem.conv_width}s{stem.stride}+k3e1>{stem.width}"]
    previous = stem.width
    for base, stride, layers in MBV2_FASHION:
        out = max(8, round(base * width / 4.0) * 4)
        stacking = f"[{','.join(['k3e6'] * layers)}]" if layers else ""
        parts.append(f"{previous}>{out}:k3e6s{stride}{stacking}")
        previous = out
    parts += ["final:192", f"classes:{num_classes}"]
    return ArchSpec.from_block_string(" | ".join(parts), name=f"mobilenet_v2_x{width:g}")


# ----- random search with keras-tuner -----------------------------------------------------
def _search_mult_adds(config) -> float:
    """Multiply-adds one search spends: forward + backward (3x a forward) of a
    sampled supernet per weight image; two ops forward and an input-only
    backward (about 4x a one-op forward) per architecture image."""
    from densenas_tf.describe import uniform_sampled_mult_adds
    from densenas_tf.search_space import load_space

    per_image = uniform_sampled_mult_adds(load_space(config.space))
    limit = config.data.train_limit or 60000
    arch_images = round(limit * config.data.arch_fraction)
    weight_images = limit - arch_images
    arch_epochs = config.epochs - config.warmup_epochs
    return per_image * (3.0 * weight_images * config.epochs + 4.0 * arch_images * arch_epochs)


def random_search(
    run_dir: Path,
    space_name: str,
    latency_range: tuple[float, float],
    budget_mult_adds: float,
    data,
    weight_ids: np.ndarray,
    arch_ids: np.ndarray,
    plan: ComparePlan,
    log: Callable[[str], None],
) -> tuple[ArchSpec, dict[str, Any]]:
    """keras-tuner random search over the dense space within the latency range."""
    import keras
    import keras_tuner as kt

    from densenas_tf.data import channel_stats, eval_pipeline, train_pipeline
    from densenas_tf.derive import arch_from_path
    from densenas_tf.latency import LatencyTable, default_table_path
    from densenas_tf.search_space import load_space
    from densenas_tf.train import build_trainable_model

    space = load_space(space_name)
    table = LatencyTable.load(default_table_path(space.name))
    paths = space.enumerate_paths()
    hp = kt.HyperParameters()
    hp.Int("path", 0, len(paths) - 1)
    for row in range(len(space.head_edges)):
        hp.Int(f"head_{row}", 0, len(space.head_ops) - 1)
    for row in range(len(space.stacking_layers)):
        hp.Int(f"stack_{row}", 0, len(space.stacking_ops) - 1)

    def decode(values: dict[str, int]) -> ArchSpec:
        heads = {r: values[f"head_{r}"] for r in range(len(space.head_edges))}
        stacks = {r: values[f"stack_{r}"] for r in range(len(space.stacking_layers))}
        return arch_from_path(space, paths[values["path"]], heads, stacks, name="random_best")

    def trial_cost(spec: ArchSpec) -> float:
        return 3.0 * count_costs(spec).mult_adds * plan.random_trial_images

    low, high = latency_range

    class BudgetedRandomOracle(kt.oracles.RandomSearchOracle):
        """Random draws kept inside the latency range, until the budget is spent."""

        spent = 0.0

        def populate_space(self, trial_id):
            if self.spent >= budget_mult_adds:
                return {"status": "STOPPED", "values": None}
            for _ in range(10_000):
                values = self._random_values()
                if values is None:
                    break
                spec = decode(values)
                if low <= table.predicted_ms(spec) <= high:
                    self.spent += trial_cost(spec)
                    return {"status": "RUNNING", "values": values}
            return {"status": "STOPPED", "values": None}

        def get_state(self):
            return {**super().get_state(), "spent": self.spent}

        def set_state(self, state):
            super().set_state(state)
            self.spent = state.get("spent", 0.0)

    mean, std = channel_stats(data.train_images[weight_ids])
    train_x, train_y = data.train_images[weight_ids], data.train_labels[weight_ids]
    val_x, val_y = data.train_images[arch_ids], data.train_labels[arch_ids]
    batch = 64

    class ArchTuner(kt.Tuner):
        def run_trial(self, trial, *args, **kwargs):
            spec = decode(trial.hyperparameters.values)
            keras.utils.set_random_seed(plan.seed)
            model = build_trainable_model(spec, mean, std)
            steps = max(1, plan.random_trial_images // batch)
            schedule = keras.optimizers.schedules.CosineDecay(0.1, steps, alpha=1e-3)
            model.compile(
                optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            dataset = train_pipeline(train_x, train_y, batch, seed=plan.seed, epoch=0)
            model.fit(dataset.take(steps), epochs=1, verbose=0)
            _, accuracy = model.evaluate(eval_pipeline(val_x, val_y, 256), verbose=0)
            log(
                f"random trial {trial.trial_id}: {spec.to_block_string()} "
                f"predicted {table.predicted_ms(spec):.3f} ms, val acc {accuracy:.4f}"
            )
            return {"val_acc": accuracy}

    oracle = BudgetedRandomOracle(
        objective=kt.Objective("val_acc", "max"),
        max_trials=plan.random_max_trials,
        seed=plan.seed,
        hyperparameters=hp,
        tune_new_entries=False,
        allow_new_entries=False,
    )
    tuner = ArchTuner(oracle=oracle, directory=str(run_dir), project_name="tuner", overwrite=False)
    tuner.search()
    trials = [t for t in oracle.trials.values() if t.score is not None]
    if not trials:
        raise RuntimeError(
            f"random search found no net with predicted latency in [{low:.3f}, {high:.3f}] ms"
        )
    best = max(trials, key=lambda t: t.score)
    spec = decode(best.hyperparameters.values)
    info = {
        "trials": len(trials),
        "best_val_acc": float(best.score),
        "budget_mult_adds": budget_mult_adds,
        "spent_mult_adds": oracle.spent,
        "latency_range_ms": [low, high],
    }
    return spec, info


# ----- the whole comparison ----------------------------------------------------------------
def _measure_tflite(model, runs: int) -> float:
    from densenas_tf.exporting import convert_tflite
    from densenas_tf.latency_measure import time_tflite

    content = convert_tflite(model, "none")
    return time_tflite(content, threads=1, warmup=max(2, runs // 10), runs=runs).median_ms


def run_compare(
    run_dir: str | Path,
    plan: ComparePlan = ComparePlan(),
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    from densenas_tf.data import load_image_data, split_indices
    from densenas_tf.exporting import load_trained_model
    from densenas_tf.latency import LatencyTable, LatencyTableError, default_table_path
    from densenas_tf.search_config import load_search_config
    from densenas_tf.search_run import run_search
    from densenas_tf.train import TrainConfig, train

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    wall: dict[str, float] = {}
    nets: list[tuple[str, str, ArchSpec, dict[str, Any]]] = []  # (label, family, spec, info)

    def search(label: str, family: str, overrides: tuple[str, ...]) -> None:
        start = time.time()
        config = load_search_config(plan.search_config, plan.search_overrides + overrides)
        log(f"== search {label}: {config.space}, {overrides}")
        summary = run_search(config, run_dir / label, log=log)
        spec = ArchSpec.from_json((run_dir / label / "arch.json").read_text())
        nets.append(
            (label, family, spec, {"search_wall_time_s": summary["wall_time_s"], "config": label})
        )
        wall[label] = time.time() - start

    for lam in plan.lams:
        search(f"densenas_lam{lam:g}", "DenseNAS", (f"objective.lam={lam}",))
    search(
        "fixed_block",
        "fixed-block",
        ("space=fixed_block_fashion", f"objective.lam={plan.fixed_block_lam}"),
    )
    for width in plan.mbv2_widths:
        nets.append((f"mobilenet_v2_x{width:g}", "MobileNetV2", mobilenet_v2_fashion(width), {}))

    # Random search: the dense space, within the DenseNAS nets' predicted latency range.
    fashion_table = LatencyTable.load(default_table_path("fashion_mnist"))
    dense = [spec for _, family, spec, _ in nets if family == "DenseNAS"]
    predicted = [fashion_table.predicted_ms(s) for s in dense]
    config = load_search_config(plan.search_config, plan.search_overrides)
    data = load_image_data(
        "fashion_mnist", train_limit=plan.train_limit, test_limit=plan.test_limit, seed=plan.seed
    )
    weight_ids, arch_ids = split_indices(len(data.train_labels), 0.2, plan.seed)
    start = time.time()
    random_spec, random_info = random_search(
        run_dir / "random_search",
        "fashion_mnist",
        (min(predicted), max(predicted)),
        _search_mult_adds(config),
        data,
        weight_ids,
        arch_ids,
        plan,
        log,
    )
    wall["random_search"] = time.time() - start
    nets.append(("random_best", "random search", random_spec, random_info))

    source = {
        "dataset": "fashion_mnist",
        "train_limit": plan.train_limit,
        "test_limit": plan.test_limit,
        "data_seed": plan.seed,
    }
    train_config = TrainConfig(epochs=plan.train_epochs, seed=plan.seed)
    rows = []
    for label, family, spec, info in nets:
        log(f"== retrain {label}: {spec.to_block_string()}")
        spec.save(run_dir / "archs" / f"{label}.json")
        start = time.time()
        metrics = train(
            spec, data, run_dir / "train" / label, train_config, data_source=source, log=log
        )
        measured = cached_json(
            run_dir / "train" / label / "latency.json",
            lambda label=label: {
                "tflite_ms": _measure_tflite(
                    load_trained_model(run_dir / "train" / label / "model.keras"),
                    plan.latency_runs,
                )
            },
        )
        wall[f"train_{label}"] = time.time() - start
        cost = count_costs(spec)
        try:
            space_name = spec.provenance.get("search_space", "fashion_mnist")
            predicted_ms = LatencyTable.load(default_table_path(space_name)).predicted_ms(spec)
        except LatencyTableError:  # a net outside the shipped tables (MobileNetV2-style)
            predicted_ms = None
        rows.append(
            {
                "net": label,
                "family": family,
                "arch": spec.to_block_string(),
                "arch_file": str(run_dir / "archs" / f"{label}.json"),
                "test_accuracy": metrics["test_accuracy"],
                "tflite_ms": measured["tflite_ms"],
                "predicted_ms": predicted_ms,
                "params": cost.params,
                "mult_adds": cost.mult_adds,
                **{k: v for k, v in info.items() if k != "config"},
            }
        )
    results = {
        "plan": dataclasses.asdict(plan),
        "rows": rows,
        "test_images": len(data.test_labels),
        "wall_times_s": wall,
        "this_run_wall_time_s": time.time() - started,
    }
    write_text_atomic(run_dir / "results.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(run_dir / "compare.md", format_results(results) + "\n")
    write_bytes_atomic(run_dir / "compare.png", plot_results(results))
    return results


def format_results(results: dict[str, Any]) -> str:
    lines = [
        "| net | family | test accuracy | TFLite ms (measured) | predicted ms | params | multiply-adds | architecture |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results["rows"], key=lambda r: r["tflite_ms"]):
        predicted = "" if r["predicted_ms"] is None else f"{r['predicted_ms']:.3f}"
        lines.append(
            f"| {r['net']} | {r['family']} | {r['test_accuracy']:.2%} | {r['tflite_ms']:.3f} | "
            f"{predicted} | {r['params']:,} | {r['mult_adds'] / 1e6:.2f} M | `{r['arch']}` |"
        )
    return "\n".join(lines)


def plot_results(results: dict[str, Any]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"DenseNAS": "o", "fixed-block": "s", "MobileNetV2": "^", "random search": "x"}
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for family, marker in markers.items():
        rows = sorted(
            (r for r in results["rows"] if r["family"] == family), key=lambda r: r["tflite_ms"]
        )
        if rows:
            ax.plot(
                [r["tflite_ms"] for r in rows],
                [100 * r["test_accuracy"] for r in rows],
                marker=marker,
                linestyle="-" if len(rows) > 1 else "none",
                label=family,
            )
    ax.set_xlabel("TFLite latency, 1 thread, batch 1 (ms, measured)")
    ax.set_ylabel(f"test accuracy (%, {results['test_images']} images)")
    ax.set_title("Fashion-MNIST: accuracy against latency")
    ax.grid(alpha=0.3)
    ax.legend()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
