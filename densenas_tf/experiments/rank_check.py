"""Does the supernet rank nets as training them alone does? (tools/rank_check.py)

For a finished search: nets of the space are drawn spread evenly over a
latency range (each a path with one op per layer, predicted by the search's
own table), the searched net among them. Each is

- scored on the supernet's shared weights: its path and ops run alone
  (``SuperNet.path_call``) on the search's architecture split, which the
  weights never trained on, with batch norm on each batch's statistics (so
  every net's statistics are its own, not the mixture's the search kept);
- trained alone with the retraining recipe for a few epochs, with several
  seeds, and tested on the test images.

The report gives Kendall's tau and Spearman's rho between the two rankings
with bootstrap 95 % intervals over the nets, the stand-alone ranking's own
seed-to-seed tau (how much a ranking by short training can be trusted), and
the tau of the predicted latency alone against the stand-alone accuracy (what
any ranking has to beat on nets that differ mostly in size). Each stage
resumes: the drawn nets, the scores and every training run are kept.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.core.checkpoints import variable_key, variables_in
from densenas_tf.core.errors import DenseNASError
from densenas_tf.core.files import cached_json, write_bytes_atomic, write_text_atomic
from densenas_tf.data.pipelines import distributed_batches
from densenas_tf.data.sources import load_image_data
from densenas_tf.latency.expected import latency_costs
from densenas_tf.latency.report import sample_nets, spearman
from densenas_tf.latency.table import LatencyTable
from densenas_tf.nn.supernet import SuperNet
from densenas_tf.search.config import SearchConfig
from densenas_tf.search.objectives import Objective
from densenas_tf.search.run import load_search_data, run_min_fraction
from densenas_tf.space import budget, derive
from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.space.spaces import SearchSpace
from densenas_tf.train.trainer import TrainConfig, train


class RankCheckError(DenseNASError, ValueError):
    """A search directory the rank check cannot use, or a latency range with no nets."""


@dataclasses.dataclass(frozen=True)
class RankPlan:
    num_nets: int = 12  # drawn nets; the searched net comes on top
    min_ms: float | None = None  # default: 0.6 x the searched net's predicted latency
    max_ms: float | None = None  # default: 1.4 x it (both within what the space can reach)
    train_epochs: int = 3
    train_limit: int | None = 20000
    test_limit: int | None = None  # default: all 10,000 test images
    train_seeds: tuple[int, ...] = (0, 1)
    score_batch: int = 480
    bootstrap: int = 2000
    seed: int = 0
    checkpoint: str | None = None  # default: the search's latest
    # A second supernet score: each net's path trained alone from the shared
    # weights for this many steps (SGD, momentum 0.9, on the weight split), then
    # scored as above; the shared weights are restored after each net. 0: off.
    finetune_steps: int = 100
    finetune_lr: float = 0.01
    finetune_batch: int = 128


# ----- statistics -----------------------------------------------------------------------
def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (ties counted as neither concordant nor discordant)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    i, j = np.triu_indices(len(a), k=1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    denominator = np.sqrt(np.sum(da != 0) * np.sum(db != 0))
    return float(np.sum(da * db) / denominator) if denominator else float("nan")


def bootstrap_interval(
    a: Sequence[float], b: Sequence[float], statistic, reps: int, seed: int = 0
) -> tuple[float, float]:
    """The 2.5 and 97.5 percentiles of ``statistic`` over resamples of the pairs."""
    a, b = np.asarray(a), np.asarray(b)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        pick = rng.integers(len(a), size=len(a))
        value = statistic(a[pick], b[pick])
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def correlation(a, b, reps: int, seed: int) -> dict[str, Any]:
    tau_low, tau_high = bootstrap_interval(a, b, kendall_tau, reps, seed)
    rho_low, rho_high = bootstrap_interval(a, b, spearman, reps, seed)
    return {
        "kendall_tau": kendall_tau(a, b),
        "kendall_tau_95": [tau_low, tau_high],
        "spearman_rho": float(spearman(a, b)),
        "spearman_rho_95": [rho_low, rho_high],
    }


# ----- the nets -------------------------------------------------------------------------
def searched_choice(
    space, costs, arrays, config: SearchConfig, min_fraction: float | None = None
) -> budget.Choice:
    """The searched net with its ops by row: under a budget the most probable
    net within it (and within [min_fraction, 1] x it where a net is; default
    the objective's), else the Viterbi path with each layer's argmax op."""
    objective = config.objective
    if objective.get("kind") == "budget":
        if min_fraction is None:
            min_fraction = objective.get("min_fraction", Objective.min_fraction)
        choice = budget.budget_choice(
            space, costs, **arrays, budget_ms=float(objective["target_ms"]),
            min_fraction=min_fraction,
        )  # fmt: skip
        if choice is None:
            raise RankCheckError(
                f"no net of space {space.name!r} fits the search's budget of "
                f"{float(objective['target_ms']):.4g} ms on its table: not a finished budget search"
            )
        return choice
    path = derive.viterbi_path(space, derive.path_probabilities(space, arrays["beta"]))
    heads, stacks = derive.argmax_choices(arrays["alpha_head"], arrays["alpha_stack"])
    return budget.Choice(path, heads, stacks, costs.arch_ms(space, path, heads, stacks), 0.0)


def _choice_json(choice: budget.Choice) -> dict[str, Any]:
    return {
        "path": list(choice.path),
        "head_choice": {str(k): v for k, v in choice.head_choice.items()},
        "stack_choice": {str(k): v for k, v in choice.stack_choice.items()},
        "predicted_ms": choice.latency_ms,
    }


def _choice_from_json(data: dict[str, Any]) -> budget.Choice:
    return budget.Choice(
        tuple(data["path"]),
        {int(k): v for k, v in data["head_choice"].items()},
        {int(k): v for k, v in data["stack_choice"].items()},
        data["predicted_ms"],
        0.0,
    )


# ----- the supernet ---------------------------------------------------------------------
def load_search(search_dir: Path, checkpoint: str | None):
    """(config, space, table, supernet with the checkpoint's weights, arch arrays)."""
    import tensorflow as tf

    files = {
        "config": search_dir / "config.json",
        "space": search_dir / "space.json",
        "table": search_dir / "latency_table.json",
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise RankCheckError(
            f"{search_dir} is no search run directory ({', '.join(missing)} missing)"
        )
    config = SearchConfig.from_dict(json.loads(files["config"].read_text()))
    if config.data.streamed:
        raise RankCheckError(
            "the rank check trains and tests on Fashion-MNIST held in memory; this search "
            f"streamed its data ({search_dir})"
        )
    space = SearchSpace.from_config(json.loads(files["space"].read_text()))
    table = LatencyTable.load(files["table"])
    path = checkpoint or tf.train.latest_checkpoint(str(search_dir / "ckpt"))
    if not path:
        raise RankCheckError(f"{search_dir / 'ckpt'}: no checkpoint to score nets with")
    net = SuperNet.from_space(
        space, arch_init_seed=config.seed, weight_sharing=config.weight_sharing
    )
    net(tf.zeros((1, *space.input_shape)), mode="all", training=False)
    arch_ids = {id(v) for v in net.arch_variables}
    weights = {
        v.path.split("/", 1)[-1].replace("/", "."): v.value
        for v in net.variables
        if id(v) not in arch_ids
    }
    reader = tf.train.load_checkpoint(path)
    arrays = {
        name: reader.get_tensor(variable_key("arch", name))
        for name in variables_in(reader.get_variable_to_shape_map(), "arch")
    }
    status = tf.train.Checkpoint(supernet_weights=weights).restore(path).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as err:
        raise RankCheckError(
            f"{path} does not hold this supernet's weights ({str(err)[:200]}); was the search "
            "run with another version of the package?"
        ) from None
    return config, space, table, net, arrays, path


def score_nets(net, choices, arch_split, batch_size: int, log) -> list[dict[str, float]]:
    """Each net's accuracy and cross-entropy on the shared weights, run alone
    over the architecture split, BN on batch statistics."""

    scores = []
    for k, choice in enumerate(choices):
        scores.append(_accuracy_alone(net, choice, arch_split, batch_size))
        log(f"supernet score {k + 1}/{len(choices)}: accuracy {scores[-1]['accuracy']:.4f}")
    return scores


def _accuracy_alone(net, choice, arch_split, batch_size: int) -> dict[str, float]:
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    hits = total = loss = 0.0
    for images, labels in distributed_batches(arch_split, strategy, batch_size, None, 0):
        logits = net.path_call(
            images, choice.path, choice.head_choice, choice.stack_choice, training=True
        )
        labels = tf.cast(labels, tf.int32)
        hits += float(tf.reduce_sum(tf.cast(tf.argmax(logits, -1, tf.int32) == labels, tf.float32)))
        loss += float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)))
        total += int(labels.shape[0])
    return {"accuracy": hits / total, "cross_entropy": loss / total, "images": total}


def finetune_scores(
    net, choices, weight_split, arch_split, plan: RankPlan, log
) -> list[dict[str, float]]:
    """Each net's path trained alone from the shared weights for
    ``plan.finetune_steps`` steps of ``plan.finetune_batch`` images of the weight split (plain
    cross-entropy, SGD with momentum 0.9 at ``plan.finetune_lr``), then scored
    as ``score_nets`` does. Every net starts from the search's weights: all of
    the supernet's weights and batch-norm statistics are put back after each."""
    import keras
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    arch_ids = {id(v) for v in net.arch_variables}
    state = [v for v in net.variables if id(v) not in arch_ids]
    saved = [v.numpy() for v in state]
    trainable = [v for v in net.trainable_variables if id(v) not in arch_ids]
    scores = []
    for k, choice in enumerate(choices):
        optimizer = keras.optimizers.SGD(plan.finetune_lr, momentum=0.9)
        steps = 0
        while steps < plan.finetune_steps:  # passes over the weight split, each shuffled anew
            batches = distributed_batches(
                weight_split, strategy, plan.finetune_batch, plan.seed + steps, 0
            )
            before = steps
            for images, labels in batches:
                with tf.GradientTape() as tape:
                    logits = net.path_call(
                        images, choice.path, choice.head_choice, choice.stack_choice,
                        training=True, weight_gradients=True,
                    )  # fmt: skip
                    loss = tf.reduce_mean(
                        tf.nn.sparse_softmax_cross_entropy_with_logits(
                            tf.cast(labels, tf.int32), logits
                        )
                    )
                grads = tape.gradient(loss, trainable)
                optimizer.apply_gradients(
                    [(g, v) for g, v in zip(grads, trainable) if g is not None]
                )
                steps += 1
                if steps == plan.finetune_steps:
                    break
            if steps == before:
                raise RankCheckError(
                    f"the weight split holds less than one batch of {plan.finetune_batch} "
                    "images to fine-tune on; lower the fine-tuning batch"
                )
        scores.append(
            {**_accuracy_alone(net, choice, arch_split, plan.score_batch), "steps": steps}
        )
        for v, value in zip(state, saved):
            v.assign(value)
        log(
            f"fine-tuned score {k + 1}/{len(choices)} ({steps} steps): "
            f"accuracy {scores[-1]['accuracy']:.4f}"
        )
    return scores


# ----- the run --------------------------------------------------------------------------
def run_rank_check(
    search_dir: str | Path,
    out_dir: str | Path,
    plan: RankPlan = RankPlan(),
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    search_dir, out_dir = Path(search_dir), Path(out_dir)
    if plan.num_nets < 3 or not plan.train_seeds:
        raise RankCheckError("the rank check needs at least 3 nets and one training seed")
    config, space, table, net, arrays, checkpoint = load_search(search_dir, plan.checkpoint)
    costs = latency_costs(space, table)
    searched = searched_choice(
        space, costs, arrays, config, run_min_fraction(search_dir, config.objective)
    )
    front = budget.pareto_architectures(space, costs, **arrays)
    low = (
        plan.min_ms
        if plan.min_ms is not None
        else max(0.6 * searched.latency_ms, front[0].latency_ms)
    )
    high = plan.max_ms if plan.max_ms is not None else 1.4 * searched.latency_ms
    if not 0 < low < high:
        raise RankCheckError(f"the latency range must have 0 < min < max, got {low}-{high} ms")

    def draw():
        log(f"drawing {plan.num_nets} nets over {low:.3f}-{high:.3f} ms")
        nets = sample_nets(space, costs, plan.num_nets, low, high, plan.seed)
        return {
            "range_ms": [low, high],
            "checkpoint": str(checkpoint),
            "nets": [_choice_json(searched)] + [_choice_json(c) for c in nets],
        }

    drawn = cached_json(out_dir / "nets.json", draw)
    choices = [_choice_from_json(n) for n in drawn["nets"]]
    specs = [
        derive.arch_from_path(
            space,
            c.path,
            c.head_choice,
            c.stack_choice,
            name="searched" if k == 0 else f"net{k:02d}",
        )
        for k, c in enumerate(choices)
    ]

    def score():
        _, arch_split = load_search_data(config)
        return score_nets(net, choices, arch_split, plan.score_batch, log)

    scores = cached_json(out_dir / "scores.json", score)
    finetuned = None
    if plan.finetune_steps:
        # Cached by its settings: other steps or rates score again, beside.
        name = f"scores_finetuned_{plan.finetune_steps}_lr{plan.finetune_lr:g}.json"

        def score_finetuned():
            weight_split, arch_split = load_search_data(config)
            return finetune_scores(net, choices, weight_split, arch_split, plan, log)

        finetuned = cached_json(out_dir / name, score_finetuned)
    arch_file = search_dir / "arch.json"
    if arch_file.is_file() and not specs[0].same_architecture(
        ArchSpec.from_json(arch_file.read_text())
    ):
        log(
            f"note: the searched net re-derived here differs from {arch_file} (another checkpoint?)"
        )

    data = load_image_data(
        config.data.dataset,
        config.data.data_dir,
        train_limit=plan.train_limit,
        test_limit=plan.test_limit,
    )
    standalone = np.zeros((len(specs), len(plan.train_seeds)))
    for k, spec in enumerate(specs):
        for s, seed in enumerate(plan.train_seeds):
            run_dir = out_dir / f"{spec.name}" / f"seed_{seed}"
            log(f"== training {spec.name} ({k + 1}/{len(specs)}), seed {seed}")
            metrics = train(
                spec,
                data,
                run_dir,
                TrainConfig(epochs=plan.train_epochs, seed=seed),
                data_source={
                    "dataset": config.data.dataset,
                    "train_limit": plan.train_limit,
                    "test_limit": plan.test_limit,
                },
                log=log,
            )
            standalone[k, s] = metrics["test_accuracy"]
    result = summarise(plan, drawn, specs, scores, standalone, search_dir, finetuned)
    write_text_atomic(out_dir / "rank_check.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(out_dir / "rank_check.md", format_rank_check(result) + "\n")
    write_bytes_atomic(out_dir / "rank_check.png", scatter_png(result))
    return result


def summarise(plan, drawn, specs, scores, standalone, search_dir, finetuned=None) -> dict[str, Any]:
    mean = standalone.mean(axis=1)
    supernet = np.array([s["accuracy"] for s in scores])
    latency = np.array([n["predicted_ms"] for n in drawn["nets"]])
    seeds = {}
    if standalone.shape[1] > 1:
        seeds = correlation(standalone[:, 0], standalone[:, 1], plan.bootstrap, plan.seed)
    result = {
        "search_dir": str(search_dir),
        "checkpoint": drawn["checkpoint"],
        "range_ms": drawn["range_ms"],
        "train": {
            "epochs": plan.train_epochs,
            "train_limit": plan.train_limit,
            "test_images": plan.test_limit,
            "seeds": list(plan.train_seeds),
        },
        "nets": [
            {
                "name": spec.name,
                "arch": spec.to_block_string(),
                "path": drawn["nets"][k]["path"],
                "predicted_ms": float(latency[k]),
                "supernet_accuracy": float(supernet[k]),
                "standalone_accuracy": standalone[k].tolist(),
                "standalone_mean": float(mean[k]),
            }
            for k, spec in enumerate(specs)
        ],
        "supernet_vs_standalone": correlation(supernet, mean, plan.bootstrap, plan.seed),
        "standalone_seed_to_seed": seeds,
        "latency_vs_standalone": correlation(latency, mean, plan.bootstrap, plan.seed),
    }
    if finetuned is not None:
        tuned = np.array([s["accuracy"] for s in finetuned])
        for k, n in enumerate(result["nets"]):
            n["finetuned_accuracy"] = float(tuned[k])
        result["finetune"] = {"steps": plan.finetune_steps, "lr": plan.finetune_lr}
        result["finetuned_vs_standalone"] = correlation(tuned, mean, plan.bootstrap, plan.seed)
    return result


def _interval(c: dict[str, Any], key: str) -> str:
    low, high = c[f"{key}_95"]
    return f"{c[key]:+.2f} [{low:+.2f}, {high:+.2f}]"


def format_rank_check(r: dict[str, Any]) -> str:
    t = r["train"]
    lines = [
        f"rank check of {r['search_dir']} ({r['checkpoint']}): {len(r['nets'])} nets over "
        f"{r['range_ms'][0]:.3f}-{r['range_ms'][1]:.3f} ms predicted; stand-alone: "
        f"{t['epochs']} epochs on {t['train_limit'] or 'all'} training images, seeds "
        f"{t['seeds']}, tested on the test images",
        "",
    ]
    tuned = "finetuned_vs_standalone" in r
    if tuned:
        f = r["finetune"]
        lines += [
            f"Fine-tuned: each path trained alone from the shared weights for {f['steps']} "
            f"steps at lr {f['lr']:g}, then scored the same way.",
            "",
        ]
    lines += [
        "| net | predicted ms | supernet accuracy (path alone) | "
        + ("fine-tuned | " if tuned else "")
        + "stand-alone accuracy (mean) |",
        "|---|---|---|" + ("---|" if tuned else "") + "---|",
    ]
    for n in r["nets"]:
        runs = " / ".join(f"{a:.4f}" for a in n["standalone_accuracy"])
        lines.append(
            f"| {n['name']} | {n['predicted_ms']:.3f} | {n['supernet_accuracy']:.4f} | "
            + (f"{n['finetuned_accuracy']:.4f} | " if tuned else "")
            + f"{runs} ({n['standalone_mean']:.4f}) |"
        )
    lines += [
        "",
        "Kendall's tau and Spearman's rho with bootstrap 95 % intervals:",
        "",
        "| pair | Kendall tau | Spearman rho |",
        "|---|---|---|",
    ]
    pairs = [
        ("supernet vs stand-alone", r["supernet_vs_standalone"]),
        ("supernet fine-tuned vs stand-alone", r.get("finetuned_vs_standalone")),
        ("stand-alone seed vs seed", r["standalone_seed_to_seed"]),
        ("predicted latency vs stand-alone", r["latency_vs_standalone"]),
    ]
    for name, c in pairs:
        if c:
            lines.append(
                f"| {name} | {_interval(c, 'kendall_tau')} | {_interval(c, 'spearman_rho')} |"
            )
    lines.append("")
    for key, what in (
        ("supernet_vs_standalone", "The supernet's ranking (paths alone)"),
        ("finetuned_vs_standalone", "The fine-tuned ranking"),
    ):
        if key not in r:
            continue
        low, high = r[key]["kendall_tau_95"]
        if low > 0:
            lines.append(
                f"{what} agrees with training alone beyond chance (its tau interval excludes 0)."
            )
        elif high < 0:
            lines.append(
                f"{what} runs against training alone beyond chance (its tau interval is below 0)."
            )
        else:
            lines.append(
                f"{what}: the tau interval includes 0, so this check cannot tell it from chance."
            )
    return "\n".join(lines)


def scatter_png(r: dict[str, Any]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = r["nets"]
    panels = [("supernet_accuracy", "supernet_vs_standalone", "path alone")]
    if "finetuned_vs_standalone" in r:
        panels.append(
            (
                "finetuned_accuracy",
                "finetuned_vs_standalone",
                f"fine-tuned {r['finetune']['steps']} steps",
            )
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), dpi=110, squeeze=False)
    for ax, (score, pair, what) in zip(axes[0], panels):
        for n in nets:
            runs = n["standalone_accuracy"]
            ax.errorbar(
                n[score],
                n["standalone_mean"],
                yerr=[[n["standalone_mean"] - min(runs)], [max(runs) - n["standalone_mean"]]],
                fmt="*" if n["name"] == "searched" else "o",
                color="tab:red" if n["name"] == "searched" else "tab:blue",
                markersize=11 if n["name"] == "searched" else 5,
                capsize=2,
            )
        c = r[pair]
        ax.set_xlabel(f"supernet accuracy, {what} (architecture split)")
        ax.set_ylabel("stand-alone test accuracy (range over seeds)")
        ax.set_title(
            f"tau {c['kendall_tau']:+.2f} [{c['kendall_tau_95'][0]:+.2f}, "
            f"{c['kendall_tau_95'][1]:+.2f}], {len(nets)} nets (star: searched)"
        )
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
