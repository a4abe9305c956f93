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
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.core.files import (
    replace_atomic,
    write_bytes_atomic,
    write_text_atomic,
)
from densenas_tf.data.pipelines import channel_stats, eval_pipeline, train_pipeline
from densenas_tf.data.sources import load_image_data, split_indices
from densenas_tf.exporting.export import convert_tflite, load_trained_model
from densenas_tf.latency.expected import latency_costs
from densenas_tf.latency.measure import build_table, time_tflite
from densenas_tf.latency.table import LatencyTable, default_table_path
from densenas_tf.search.config import load_search_config
from densenas_tf.search.run import run_search
from densenas_tf.space.arch_spec import ArchSpec, count_costs
from densenas_tf.space.baselines import mobilenet_v2_fashion
from densenas_tf.space.derive import arch_from_path
from densenas_tf.space.describe import uniform_sampled_mult_adds
from densenas_tf.space.spaces import SearchSpace, load_space
from densenas_tf.train.trainer import TrainConfig, build_trainable_model, train


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
    latency_rounds: int = 5  # see measure_latencies
    seed: int = 0  # the data's subset and split
    # Each seed runs every search and retraining again (seeded together); the
    # table then gives the mean and standard error over seeds.
    seeds: tuple[int, ...] = (0,)
    # "measure": the searches and the random search use latency tables measured
    # on this machine first (cached in the run directory); "shipped": the
    # shipped tables, unchecked (for quick checks of the pipeline).
    latency_tables: str = "measure"


REDUCED = ComparePlan(
    search_overrides=(
        "data.train_limit=640",
        "batch_size=64",
        "epochs=2",
        "warmup_epochs=1",
        "deterministic=false",  # a check of the pipeline, not of its results
        "graph_steps=false",  # a few dozen steps: eager steps trace in a fraction of the time
    ),
    lams=(0.1,),
    mbv2_widths=(0.5,),
    train_epochs=1,
    train_limit=1000,
    test_limit=300,
    random_trial_images=256,
    random_max_trials=2,
    latency_runs=5,
    latency_rounds=2,
    latency_tables="shipped",
)


# ----- random search with keras-tuner -----------------------------------------------------
class BandSampler:
    """Uniform draws over the space's architectures (a path out of all paths,
    one op per head row and per stacking row, as keras-tuner's random values
    draw them) kept only when their predicted latency lies in [low, high].

    Narrow bands near the fast end are rare under uniform draws (1 in 25,000
    for MobileNetV2 x0.5's band on Fashion-MNIST), so draws are made and
    priced in batches with the costs' arrays; a kept draw is returned as
    keras-tuner values."""

    def __init__(self, space: SearchSpace, costs, paths, low: float, high: float):
        self.space, self.costs, self.low, self.high = space, costs, low, high
        n_head, n_stack = len(space.head_edges), len(space.stacking_layers)
        self.head_on = np.zeros((len(paths), n_head), bool)
        self.stack_on = np.zeros((len(paths), n_stack), bool)
        self.final = np.zeros(len(paths))
        final_pos = {e.index: k for k, e in enumerate(space.final_edges)}
        for i, path in enumerate(paths):
            for src, dst in zip(path, path[1:]):
                edge = space.edge(src, dst)
                if dst == space.final_node:
                    self.final[i] = costs.final_ms[final_pos[edge.index]]
                else:
                    self.head_on[i, space.head_row(edge)] = True
                    self.stack_on[i, list(space.stacking_rows(dst))] = True

    def latencies(self, path_ids, heads, stacks) -> np.ndarray:
        rows_h, rows_s = np.arange(heads.shape[1]), np.arange(stacks.shape[1])
        head_ms = np.where(self.head_on[path_ids], self.costs.head_ms[rows_h, heads], 0.0)
        stack_ms = np.where(self.stack_on[path_ids], self.costs.stack_ms[rows_s, stacks], 0.0)
        return self.costs.fixed_ms + self.final[path_ids] + head_ms.sum(1) + stack_ms.sum(1)

    def draw(self, rng: np.random.Generator, batch: int = 20_000, max_draws: int = 20_000_000):
        """keras-tuner values of one kept draw, or None after max_draws."""
        n_paths = len(self.final)
        n_head, n_stack = self.head_on.shape[1], self.stack_on.shape[1]
        for _ in range(max(1, max_draws // batch)):
            path_ids = rng.integers(n_paths, size=batch)
            heads = rng.integers(len(self.space.head_ops), size=(batch, n_head))
            stacks = rng.integers(len(self.space.stacking_ops), size=(batch, n_stack))
            lat = self.latencies(path_ids, heads, stacks)
            kept = np.flatnonzero((lat >= self.low) & (lat <= self.high))
            if len(kept):
                k = kept[0]
                return {
                    "path": int(path_ids[k]),
                    **{f"head_{r}": int(heads[k, r]) for r in range(n_head)},
                    **{f"stack_{r}": int(stacks[k, r]) for r in range(n_stack)},
                }
        return None


def _search_mult_adds(config) -> float:
    """Multiply-adds one search spends: forward + backward (3x a forward) of a
    sampled supernet per weight image; two ops forward and an input-only
    backward (about 4x a one-op forward) per architecture image."""

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
    table=None,
    seed: int = 0,
) -> tuple[ArchSpec, dict[str, Any]]:
    """keras-tuner random search over the dense space within the latency range
    (predicted by ``table``, default the shipped one). The best net and its
    figures are recorded in ``run_dir/result.json`` when the search ends; a
    resumed comparison reads them from there (keras-tuner's reloaded trials
    need not come back in the order they ran). Equal scores go to the
    earliest trial."""
    import keras
    import keras_tuner as kt

    space = load_space(space_name)
    table = table or LatencyTable.load(default_table_path(space.name))
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
    record = Path(run_dir) / "result.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        return ArchSpec.from_dict(saved["arch"], source=str(record)), saved["info"]

    sampler = BandSampler(space, latency_costs(space, table), paths, low, high)

    class BudgetedRandomOracle(kt.oracles.RandomSearchOracle):
        """Random draws kept inside the latency range, until the budget is spent."""

        spent = 0.0

        def populate_space(self, trial_id):
            if self.spent >= budget_mult_adds:
                return {"status": "STOPPED", "values": None}
            # Seeded by the search's seed and the trial: a resumed search draws alike.
            rng = np.random.default_rng([seed, int(trial_id)])
            while (values := sampler.draw(rng)) is not None:
                spec = decode(values)
                # The table's own sum decides (the batch's differs in the last bits).
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
            keras.utils.set_random_seed(seed)
            model = build_trainable_model(spec, mean, std)
            steps = max(1, plan.random_trial_images // batch)
            schedule = keras.optimizers.schedules.CosineDecay(0.1, steps, alpha=1e-3)
            model.compile(
                optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            dataset = train_pipeline(train_x, train_y, batch, seed=seed, epoch=0)
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
        seed=seed,
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
    best = max(trials, key=lambda t: (t.score, -int(t.trial_id)))
    spec = decode(best.hyperparameters.values)
    info = {
        "trials": len(trials),
        "best_val_acc": float(best.score),
        "budget_mult_adds": budget_mult_adds,
        "spent_mult_adds": oracle.spent,
        "latency_range_ms": [low, high],
    }
    write_text_atomic(record, json.dumps({"arch": spec.to_dict(), "info": info}, indent=2) + "\n")
    return spec, info


# ----- the whole comparison ----------------------------------------------------------------
def _tflite_timer(model_dir: Path) -> Callable[[int], float]:
    """A function timing the trained model in ``model_dir`` as float TFLite
    (1 thread, batch 1): runs -> median ms."""

    content = convert_tflite(load_trained_model(model_dir / "model.keras"), "none")
    return lambda runs: (
        time_tflite(content, threads=1, warmup=max(2, runs // 10), runs=runs).median_ms
    )


def measure_latencies(
    model_dirs: list[Path],
    plan: ComparePlan,
    log: Callable[[str], None] = lambda line: None,
    make_timer: Callable[[Path], Callable[[int], float]] = _tflite_timer,
    record: dict[str, Any] | None = None,
) -> dict[Path, float]:
    """Each trained model's measured latency (ms), cached in its ``latency.json``.

    The models without one are measured together, after every training, in
    ``plan.latency_rounds`` rounds that each time every model once
    (``plan.latency_runs`` runs): a model's latency is the median of its
    rounds' medians. Whatever else the machine does while they are measured
    falls on all of them alike, not on the few trained last. ``record``: more
    fields for each ``latency.json``. Delete the ``latency.json`` files to
    measure every model again."""
    latencies, missing = {}, []
    for model_dir in dict.fromkeys(model_dirs):
        path = model_dir / "latency.json"
        if path.is_file():
            latencies[model_dir] = float(json.loads(path.read_text())["tflite_ms"])
        else:
            missing.append(model_dir)
    if not missing:
        return latencies
    log(
        f"== measuring the latency of {len(missing)} net(s): {plan.latency_rounds} round(s) "
        f"of {plan.latency_runs} runs each"
    )
    timers = {model_dir: make_timer(model_dir) for model_dir in missing}
    rounds: dict[Path, list[float]] = {model_dir: [] for model_dir in missing}
    for _ in range(plan.latency_rounds):
        for model_dir in missing:
            rounds[model_dir].append(float(timers[model_dir](plan.latency_runs)))
    for model_dir in missing:
        latencies[model_dir] = float(np.median(rounds[model_dir]))
        entry = {
            "tflite_ms": latencies[model_dir],
            "round_medians_ms": rounds[model_dir],
            **(record or {}),
        }
        write_text_atomic(model_dir / "latency.json", json.dumps(entry, indent=2) + "\n")
    return latencies


def _tables(run_dir: Path, plan: ComparePlan, log) -> dict[str, Path]:
    """Latency tables by space name: measured here (cached) or the shipped ones."""

    if plan.latency_tables not in ("measure", "shipped"):
        raise ValueError(
            f"latency_tables must be 'measure' or 'shipped', got {plan.latency_tables!r}"
        )
    tables = {}
    for name in ("fashion_mnist", "fixed_block_fashion"):
        if plan.latency_tables == "shipped":
            tables[name] = default_table_path(name)
            continue
        path = run_dir / "latency" / default_table_path(name).name
        log(f"== latency table of {name} on this machine: {path}")
        build_table(load_space(name), path, log=log)
        tables[name] = path
    return tables


def run_compare(
    run_dir: str | Path,
    plan: ComparePlan = ComparePlan(),
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Every seed's nets searched, retrained, tested and timed; then the table
    over seeds. Each seed's stages live in ``run_dir/seed{N}``."""

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    tables = _tables(run_dir, plan, log)
    data = load_image_data(
        "fashion_mnist", train_limit=plan.train_limit, test_limit=plan.test_limit, seed=plan.seed
    )
    rows, wall = [], {}
    for seed in plan.seeds:
        seed_rows, seed_wall = _run_seed(run_dir / f"seed{seed}", plan, seed, tables, data, log)
        rows += seed_rows
        wall.update({f"seed{seed}/{k}": v for k, v in seed_wall.items()})
    start = time.time()
    latencies = measure_latencies([Path(r["model_dir"]) for r in rows], plan, log)
    wall["latency"] = time.time() - start
    for row in rows:
        row["tflite_ms"] = latencies[Path(row.pop("model_dir"))]
    results = {
        "plan": dataclasses.asdict(plan),
        "rows": rows,
        "summary": summarise(rows),
        "test_images": len(data.test_labels),
        "latency_tables": {k: str(v) for k, v in tables.items()},
        "wall_times_s": wall,
        "this_run_wall_time_s": time.time() - started,
    }
    results["outcome"] = outcome(results["summary"])
    write_text_atomic(run_dir / "results.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(run_dir / "compare.md", format_results(results) + "\n")
    write_bytes_atomic(run_dir / "compare.png", plot_results(results))
    write_hparams(run_dir / "tensorboard", rows)
    return results


# HParams dashboard: metric tag -> (display name, description).
HPARAM_METRICS = {
    "test_accuracy": ("test accuracy", "Top-1 accuracy on the test images, fraction."),
    "tflite_ms": ("measured latency (ms)", "Float TFLite, 1 thread, batch 1, measured here."),
    "predicted_ms": ("predicted latency (ms)", "Predicted by the latency table."),
    "params": ("parameters", "Parameters of the net, count."),
    "mult_adds": ("multiply-adds", "Multiply-adds per image, count."),
}


def hparams_of(row: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters shown for one net: its name, method and seed, and its
    lambda (searched nets) or width multiplier (MobileNetV2) where it has one."""
    values = {"net": row["net"], "method": row["family"], "seed": int(row["seed"])}
    for key in ("lam", "width"):
        if row.get(key) is not None:
            values[key] = float(row[key])
    return values


def write_hparams(directory: Path, rows: list[dict[str, Any]]) -> None:
    """An HParams dashboard of the comparison: one session per net and seed with
    its hyperparameters and its metrics, so the table can be sorted, filtered and
    plotted in TensorBoard (``tensorboard --logdir RUN_DIR/tensorboard``). The
    directory is written anew (atomically) each time."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    def discrete(key):
        return sorted({hparams_of(row)[key] for row in rows if key in hparams_of(row)})

    hparams = [
        hp.HParam("net", hp.Discrete(discrete("net")), description="The net's label."),
        hp.HParam("method", hp.Discrete(discrete("method")), description="How it was found."),
        hp.HParam("seed", hp.Discrete(discrete("seed")), description="Search and training seed."),
    ]
    for key, text in (("lam", "Latency weight lambda."), ("width", "Width multiplier.")):
        values = discrete(key)
        if values:
            hparams.append(hp.HParam(key, hp.Discrete(values), description=text))
    metrics = [
        hp.Metric(tag, display_name=name, description=text)
        for tag, (name, text) in HPARAM_METRICS.items()
    ]
    with replace_atomic(directory) as staging:
        with tf.summary.create_file_writer(str(staging)).as_default():
            hp.hparams_config(hparams=hparams, metrics=metrics)
        for row in rows:
            run = f"{row['net']}_seed{row['seed']}"
            writer = tf.summary.create_file_writer(str(staging / run))
            with writer.as_default():
                hp.hparams(hparams_of(row), trial_id=run)
                for tag, (_, text) in HPARAM_METRICS.items():
                    if row.get(tag) is not None:
                        tf.summary.scalar(tag, float(row[tag]), step=0, description=text)
            writer.close()


def _run_seed(
    run_dir: Path, plan: ComparePlan, seed: int, tables: dict[str, Path], data, log
) -> tuple[list[dict[str, Any]], dict[str, float]]:

    run_dir.mkdir(parents=True, exist_ok=True)
    wall: dict[str, float] = {}
    nets: list[tuple[str, str, ArchSpec, dict[str, Any]]] = []  # (label, family, spec, info)
    loaded = {name: LatencyTable.load(path) for name, path in tables.items()}

    def search(label: str, family: str, space: str, overrides: tuple[str, ...]) -> None:
        start = time.time()
        overrides = (
            f"space={space}",
            f"seed={seed}",
            f"latency_table={tables[space]}",
            "latency_check=false",  # measured here moments ago, or shipped on purpose
            *overrides,
        )
        config = load_search_config(plan.search_config, plan.search_overrides + overrides)
        log(f"== seed {seed}: search {label}: {config.space}, {overrides}")
        searched = run_search(config, run_dir / label, log=log)
        spec, summary = searched.arch, searched.summary
        info = {"search_wall_time_s": summary["wall_time_s"], "config": label}
        info["lam"] = float(config.objective["lam"])
        if summary.get("path_margin") is not None:
            info["path_margin"] = summary["path_margin"]
        nets.append((label, family, spec, info))
        wall[label] = time.time() - start

    for lam in plan.lams:
        search(f"densenas_lam{lam:g}", "DenseNAS", "fashion_mnist", (f"objective.lam={lam}",))
    search(
        "fixed_block",
        "fixed-block",
        "fixed_block_fashion",
        (f"objective.lam={plan.fixed_block_lam}",),
    )
    for width in plan.mbv2_widths:
        spec = mobilenet_v2_fashion(width)
        nets.append((f"mobilenet_v2_x{width:g}", "MobileNetV2", spec, {"width": width}))

    # Random search: the dense space, within 10 % of the DenseNAS nets' predicted latencies.
    fashion_table = loaded["fashion_mnist"]
    dense = [spec for _, family, spec, _ in nets if family == "DenseNAS"]
    predicted = [fashion_table.predicted_ms(s) for s in dense]
    config = load_search_config(plan.search_config, plan.search_overrides)
    weight_ids, arch_ids = split_indices(len(data.train_labels), 0.2, seed)
    start = time.time()
    random_spec, random_info = random_search(
        run_dir / "random_search",
        "fashion_mnist",
        (0.9 * min(predicted), 1.1 * max(predicted)),
        _search_mult_adds(config),
        data,
        weight_ids,
        arch_ids,
        plan,
        log,
        table=fashion_table,
        seed=seed,
    )
    wall["random_search"] = time.time() - start
    nets.append(("random_best", "random search", random_spec, random_info))

    source = {
        "dataset": "fashion_mnist",
        "train_limit": plan.train_limit,
        "test_limit": plan.test_limit,
        "data_seed": plan.seed,
    }
    train_config = TrainConfig(epochs=plan.train_epochs, seed=seed)
    rows = []
    for label, family, spec, info in nets:
        log(f"== seed {seed}: retrain {label}: {spec.to_block_string()}")
        spec.save(run_dir / "archs" / f"{label}.json")
        start = time.time()
        metrics = train(
            spec, data, run_dir / "train" / label, train_config, data_source=source, log=log
        )
        wall[f"train_{label}"] = time.time() - start
        cost = count_costs(spec)
        space_name = spec.provenance.get("search_space", "fashion_mnist")
        table = loaded.get(space_name)
        predicted_ms = None
        if table is not None and family != "MobileNetV2":
            predicted_ms = table.predicted_ms(spec)
        rows.append(
            {
                "net": label,
                "family": family,
                "seed": seed,
                "arch": spec.to_block_string(),
                "arch_file": str(run_dir / "archs" / f"{label}.json"),
                "test_accuracy": metrics["test_accuracy"],
                "model_dir": str(run_dir / "train" / label),  # its latency is measured later
                "predicted_ms": predicted_ms,
                "params": cost.params,
                "mult_adds": cost.mult_adds,
                **{k: v for k, v in info.items() if k != "config"},
            }
        )
    return rows, wall


def _mean_se(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per net (label): mean and standard error over seeds of test accuracy and
    measured latency."""
    by_net: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_net.setdefault(row["net"], []).append(row)
    summary = []
    for net, group in by_net.items():
        acc, acc_se = _mean_se([r["test_accuracy"] for r in group])
        ms, ms_se = _mean_se([r["tflite_ms"] for r in group])
        summary.append(
            {
                "net": net,
                "family": group[0]["family"],
                "seeds": [r["seed"] for r in group],
                "test_accuracy_mean": acc,
                "test_accuracy_se": acc_se,
                "tflite_ms_mean": ms,
                "tflite_ms_se": ms_se,
            }
        )
    return summary


def outcome(summary: list[dict[str, Any]]) -> list[str]:
    """Whether each DenseNAS net beats random search and the MobileNetV2 width
    nearest in latency by more than two standard errors of the difference."""
    lines = []
    others = [s for s in summary if s["family"] in ("random search", "MobileNetV2", "fixed-block")]
    for dense in (s for s in summary if s["family"] == "DenseNAS"):
        for family in ("random search", "MobileNetV2", "fixed-block"):
            pool = [s for s in others if s["family"] == family]
            if not pool:
                continue
            other = min(pool, key=lambda s: abs(s["tflite_ms_mean"] - dense["tflite_ms_mean"]))
            diff = dense["test_accuracy_mean"] - other["test_accuracy_mean"]
            se = float(np.hypot(dense["test_accuracy_se"], other["test_accuracy_se"]))
            n = min(len(dense["seeds"]), len(other["seeds"]))
            if n < 2 or not np.isfinite(se):
                verdict = "one seed: no standard error, no verdict"
            elif abs(diff) > 2 * se:
                verdict = (
                    f"{'beats' if diff > 0 else 'loses to'} it by more than two standard errors"
                )
            else:
                verdict = "within two standard errors: no difference shown"
            lines.append(
                f"{dense['net']} ({dense['tflite_ms_mean']:.3f} ms) vs {other['net']} "
                f"({other['tflite_ms_mean']:.3f} ms): accuracy {100 * diff:+.2f} points "
                f"(standard error {100 * se:.2f}); {verdict}"
            )
    return lines


def format_results(results: dict[str, Any]) -> str:
    seeds = results["plan"]["seeds"]
    lines = [
        f"Over {len(seeds)} seed(s) {list(seeds)}: mean ± standard error.",
        "",
        "| net | family | seeds | test accuracy | TFLite ms (measured) |",
        "|---|---|---|---|---|",
    ]

    def pm(mean, se, scale=1.0, digits=2, unit=""):
        if not np.isfinite(se):
            return f"{scale * mean:.{digits}f}{unit}"
        return f"{scale * mean:.{digits}f} ± {scale * se:.{digits}f}{unit}"

    for s in sorted(results["summary"], key=lambda s: s["tflite_ms_mean"]):
        lines.append(
            f"| {s['net']} | {s['family']} | {len(s['seeds'])} | "
            f"{pm(s['test_accuracy_mean'], s['test_accuracy_se'], 100, 2, ' %')} | "
            f"{pm(s['tflite_ms_mean'], s['tflite_ms_se'], 1, 3)} |"
        )
    lines += [
        "",
        "Each run:",
        "",
        "| net | seed | family | test accuracy | TFLite ms (measured) | predicted ms | params | multiply-adds | architecture |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results["rows"], key=lambda r: (r["seed"], r["tflite_ms"])):
        predicted = "" if r["predicted_ms"] is None else f"{r['predicted_ms']:.3f}"
        lines.append(
            f"| {r['net']} | {r['seed']} | {r['family']} | {r['test_accuracy']:.2%} | "
            f"{r['tflite_ms']:.3f} | {predicted} | {r['params']:,} | {r['mult_adds'] / 1e6:.2f} M | "
            f"`{r['arch']}` |"
        )
    if results.get("outcome"):
        lines += ["", "Outcome:", ""] + [f"- {line}" for line in results["outcome"]]
    return "\n".join(lines)


def plot_results(results: dict[str, Any]) -> bytes:
    seeds = len(results["plan"]["seeds"])
    title = "Fashion-MNIST: accuracy against latency"
    return plot_families(
        results["summary"],
        results["test_images"],
        title + (f" (mean ± s.e., {seeds} seeds)" if seeds > 1 else ""),
    )


def plot_families(
    summary: list[dict[str, Any]],
    test_images: int,
    title: str,
    lines_ms: tuple[float, ...] = (),
    xlabel: str = "TFLite latency, 1 thread, batch 1 (ms, measured)",
) -> bytes:
    """Accuracy against measured latency, one line per family (mean ± standard
    error where there are several seeds), with grey vertical lines at
    ``lines_ms``; a PNG."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"DenseNAS": "o", "fixed-block": "s", "MobileNetV2": "^", "random search": "x"}
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for ms in lines_ms:
        ax.axvline(ms, color="0.8", linewidth=1, zorder=0)
    for family, marker in markers.items():
        points = sorted(
            (s for s in summary if s["family"] == family), key=lambda s: s["tflite_ms_mean"]
        )
        if not points:
            continue

        def err(key, scale=1.0, points=points):
            values = [scale * s[key] for s in points]
            return values if all(np.isfinite(values)) else None

        ax.errorbar(
            [s["tflite_ms_mean"] for s in points],
            [100 * s["test_accuracy_mean"] for s in points],
            xerr=err("tflite_ms_se"),
            yerr=err("test_accuracy_se", 100.0),
            marker=marker,
            linestyle="-" if len(points) > 1 else "none",
            capsize=3,
            label=family,
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"test accuracy (%, {test_images} images)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
