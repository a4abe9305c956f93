"""The search loop (paper 3.3, SPEC sections 2, 4, 5), strategy-agnostic.

The Searcher is handed its data, supernet, expected-latency model, objective
and strategy. Warm-up epochs train weights only (one op per layer, drawn
uniformly). Each later epoch runs an architecture pass over the architecture
split (two ops per layer drawn by softmax(alpha); cross-entropy plus the
latency objective; Adam on alpha and beta; eq. 9 rebalancing of alpha), then a
weight pass over the weight split (one op per layer by softmax(alpha); SGD
with momentum and weight decay, cosine per step).

Op draws are made from stateless seeds ``[seed, global step]`` outside
``strategy.run`` and handed to every replica, so all replicas run the same ops
and a resumed run draws what the uninterrupted one drew.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from densenas_tf import derive
from densenas_tf.arch_spec import ArchSpec, count_costs
from densenas_tf.expected_latency import ExpectedLatency
from densenas_tf.io_utils import write_bytes_atomic, write_text_atomic
from densenas_tf.latency import LatencyTable
from densenas_tf.objectives import Objective
from densenas_tf.optimizers import DynamicLossScale, MomentumSGD
from densenas_tf.pictures import supernet_png
from densenas_tf.search_config import SearchConfig
from densenas_tf.supernet import SuperNet, rebalance_alpha


class SearchDivergedError(RuntimeError):
    """A non-finite loss: the run stops and the last good checkpoint stays."""


class RunDirError(ValueError):
    """A run directory that holds another run."""


@dataclasses.dataclass
class PassStats:
    """Running means over one pass (weight or architecture)."""

    totals: dict[str, float] = dataclasses.field(default_factory=dict)
    steps: int = 0

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.totals[k] = self.totals.get(k, 0.0) + v
        self.steps += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(self.steps, 1) for k, v in self.totals.items()}


class Progress:
    """A one-line progress bar with ETA on stderr."""

    def __init__(self, label: str, total: int, start_at: int = 0, stream=sys.stderr):
        self.label, self.total, self.done = label, total, start_at
        self.first, self.start, self.stream = start_at, time.time(), stream

    def update(self, metrics: dict[str, float]) -> None:
        self.done += 1
        elapsed = time.time() - self.start
        per_step = elapsed / max(self.done - self.first, 1)
        eta = per_step * (self.total - self.done)
        width = 20
        filled = int(width * self.done / max(self.total, 1))
        shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        line = (
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{per_step:.2f} s/step ETA {eta:.0f} s {shown}"
        )
        self.stream.write(line[:200])
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def _entropy(probs: np.ndarray) -> float:
    p = np.clip(probs, 1e-12, 1.0)
    return float(-(p * np.log(p)).sum(axis=-1).mean())


class Searcher:
    """Owns the loop; data, model, latency, objective and strategy are handed in."""

    def __init__(
        self,
        config: SearchConfig,
        supernet: SuperNet,
        table: LatencyTable,
        weight_data: tuple[np.ndarray, np.ndarray],
        arch_data: tuple[np.ndarray, np.ndarray],
        run_dir: str | Path,
        strategy: tf.distribute.Strategy | None = None,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    ):
        self.config = config
        self.net = supernet
        self.space = supernet.space
        self.table = table
        self.expected_latency = ExpectedLatency(self.space, table)
        self.objective = Objective.from_config(config.objective)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.weight_data, self.arch_data = weight_data, arch_data
        self.run_dir = Path(run_dir)
        self.log = log
        bs = config.batch_size
        self.weight_steps_per_epoch = len(weight_data[0]) // bs
        self.arch_steps_per_epoch = len(arch_data[0]) // bs
        if self.weight_steps_per_epoch < 1 or self.arch_steps_per_epoch < 1:
            raise ValueError(
                f"batch_size {bs} is larger than a data split ({len(weight_data[0])} weight, "
                f"{len(arch_data[0])} architecture images); lower batch_size or use more data"
            )
        total_weight_steps = self.weight_steps_per_epoch * config.epochs
        with self.strategy.scope():
            schedule = keras.optimizers.schedules.CosineDecay(
                config.weight_lr, total_weight_steps, alpha=config.weight_lr_min / config.weight_lr
            )
            self.weight_optimizer = MomentumSGD(
                supernet.weight_variables,
                schedule,
                momentum=config.weight_momentum,
                weight_decay=config.weight_decay,
            )
            self.arch_optimizer = keras.optimizers.Adam(
                config.arch_lr,
                beta_1=config.arch_beta1,
                beta_2=config.arch_beta2,
                weight_decay=config.arch_weight_decay,
            )
            self.arch_optimizer.build(supernet.arch_variables)
        # float16 compute needs loss scaling; alpha, beta, softmaxes, latency stay float32.
        self.loss_scale = DynamicLossScale() if config.mixed_precision else None
        # Every supernet variable (BN statistics included) by its path, and the
        # architecture parameters under plain names for tools/derive.py.
        arch_ids = {id(v) for v in supernet.arch_variables}
        # Loop counters live on the host, outside the strategy.
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.phase = tf.Variable(
            0, dtype=tf.int64, trainable=False, name="phase"
        )  # 0: arch pass, 1: weight pass
        self.batch_in_phase = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_phase")
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.seed = tf.Variable(config.seed, dtype=tf.int64, trainable=False, name="seed")
        self.checkpoint = tf.train.Checkpoint(
            arch={
                "alpha_head": supernet.alpha_head.value,
                "alpha_stack": supernet.alpha_stack.value,
                "beta": supernet.beta.value,
            },
            supernet_weights={
                # The path below the model's own (possibly auto-numbered) name.
                v.path.split("/", 1)[-1].replace("/", "."): v.value
                for v in supernet.variables
                if id(v) not in arch_ids
            },
            weight_optimizer=self.weight_optimizer,
            arch_optimizer=self.arch_optimizer,
            epoch=self.epoch,
            phase=self.phase,
            batch_in_phase=self.batch_in_phase,
            global_step=self.global_step,
            seed=self.seed,
            **({"loss_scale": self.loss_scale} if self.loss_scale else {}),
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.run_dir / "ckpt", max_to_keep=2
        )
        self.writer = tf.summary.create_file_writer(str(self.run_dir / "tensorboard"))
        # The architecture step differentiates alpha and beta only (no kernel
        # gradients); False restores the plain tape, for benchmarks.
        self.lean_arch_step = True
        # They never change: not worth walking the layer tree for them every step.
        self._weight_variables = supernet.weight_variables
        self._weight_step = self._wrap(self._weight_replica_step)
        self._arch_step = self._wrap(self._arch_replica_step)

    # ----- steps ---------------------------------------------------------------------
    def _wrap(self, replica_fn):
        def step(batch, sample):
            per_replica = self.strategy.run(replica_fn, args=(*batch, sample))
            return {
                k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()
            }

        return step

    def _cross_entropy(self, labels, logits):
        num_classes = self.space.num_classes
        targets = tf.one_hot(labels, num_classes)
        smoothing = self.config.label_smoothing
        targets = targets * (1.0 - smoothing) + smoothing / num_classes
        per_example = tf.nn.softmax_cross_entropy_with_logits(targets, logits)
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.config.batch_size)

    def _accuracy_sum(self, labels, logits):
        hits = tf.cast(
            tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(labels, tf.int32)),
            tf.float32,
        )
        return tf.reduce_sum(hits) / self.config.batch_size

    def _weight_replica_step(self, images, labels, sample):
        variables = self._weight_variables
        with tf.GradientTape() as tape:
            logits = self.net(images, mode="one", sample=sample, training=True)
            loss = self._cross_entropy(labels, logits)
            scaled = self._scaled(loss)
        grads, finite = self._gradients(tape, scaled, variables)
        if finite:
            # Ops that were not drawn get no gradient and no update (as in the reference).
            self.weight_optimizer.apply_gradients(
                [(g, v) for g, v in zip(grads, variables) if g is not None]
            )
        return {"ce": loss, "acc": self._accuracy_sum(labels, logits), **self._skipped(finite)}

    def _scaled(self, loss):
        """The loss to differentiate: multiplied by the loss scale under mixed precision."""
        return loss if self.loss_scale is None else self.loss_scale.scale_loss(loss)

    def _gradients(self, tape, scaled_loss, variables):
        """Gradients (unscaled) and whether the step may be applied: always in
        float32; under mixed precision only when they are finite everywhere."""
        grads = tape.gradient(scaled_loss, variables)
        if self.loss_scale is None:
            return grads, True
        grads = self.loss_scale.unscale(grads)
        return grads, self.loss_scale.all_finite(grads)

    def _skipped(self, finite: bool) -> dict[str, tf.Tensor]:
        if self.loss_scale is None:
            return {}
        # Summed over replicas by _wrap: 1.0 when the step was skipped.
        return {"skipped": tf.constant(0.0 if finite else 1.0 / self.strategy.num_replicas_in_sync)}

    def _arch_replica_step(self, images, labels, sample):
        variables = self.net.arch_variables
        replicas = self.strategy.num_replicas_in_sync
        lean = self.lean_arch_step
        with tf.GradientTape(watch_accessed_variables=not lean) as tape:
            tape.watch([v.value for v in variables])
            # Only alpha and beta are differentiated: no kernel gradients computed.
            logits = self.net(
                images, mode="two", sample=sample, training=True, weight_gradients=not lean
            )
            ce = self._cross_entropy(labels, logits)
            latency = self.expected_latency.of_supernet(self.net, "two", sample)
            loss = self.objective.replica_loss(ce, latency, replicas)
            scaled = self._scaled(loss)
        grads, finite = self._gradients(tape, scaled, variables)
        if finite:
            self.arch_optimizer.apply_gradients(
                zip([tf.convert_to_tensor(g) for g in grads], variables)
            )
        return {
            "ce": ce,
            "loss": loss,
            "acc": self._accuracy_sum(labels, logits),
            "latency_ms": latency / replicas,
            **self._skipped(finite),
        }

    def _sample(self, policy: str):
        seed = tf.stack([self.seed, self.global_step])
        return self.net.sample_ops(seed, policy)

    # ----- data ----------------------------------------------------------------------
    def shuffle_seed(self, epoch: int, phase: int) -> int:
        """The data order of one pass: fixed by the run's seed, the epoch and the phase."""
        return int(self.config.seed * 1_000_003 + epoch * 2 + phase)

    def _batches(self, split: tuple[np.ndarray, np.ndarray], epoch: int, phase: int, skip: int):
        from densenas_tf.data import make_dataset

        dataset = make_dataset(
            *split, self.config.batch_size, shuffle_seed=self.shuffle_seed(epoch, phase)
        )
        if skip:
            dataset = dataset.skip(skip)
        return iter(self.strategy.experimental_distribute_dataset(dataset))

    # ----- passes --------------------------------------------------------------------
    def _check_finite(self, values: dict[str, float], kind: str) -> None:
        for k, v in values.items():
            if not math.isfinite(v):
                raise SearchDivergedError(
                    f"non-finite {kind} {k} ({v}) at epoch {int(self.epoch)}, global step "
                    f"{int(self.global_step)}; the run stopped and the last good checkpoint "
                    f"in {self.run_dir / 'ckpt'} was kept"
                )

    def _run_pass(self, phase: int, epoch: int) -> dict[str, float]:
        arch = phase == 0
        split = self.arch_data if arch else self.weight_data
        total = self.arch_steps_per_epoch if arch else self.weight_steps_per_epoch
        start = int(self.batch_in_phase) if int(self.phase) == phase else 0
        self.phase.assign(phase)
        self.batch_in_phase.assign(start)
        policy = "two" if arch else ("uniform" if epoch < self.config.warmup_epochs else "softmax")
        label = f"epoch {epoch + 1}/{self.config.epochs} {'arch' if arch else 'weight'}"
        progress = Progress(label, total, start)
        stats = PassStats()
        for batch in self._batches(split, epoch, phase, start):
            sample = self._sample(policy)
            if arch:
                before = (tf.identity(self.net.alpha_head), tf.identity(self.net.alpha_stack))
                values = self._arch_step(batch, sample)
                values = {k: float(v) for k, v in values.items()}
                self._check_finite(values, "architecture loss")
                rebalance_alpha(self.net.alpha_head, before[0], sample.head)
                rebalance_alpha(self.net.alpha_stack, before[1], sample.stack)
            else:
                values = {k: float(v) for k, v in self._weight_step(batch, sample).items()}
                self._check_finite(values, "weight loss")
            if self.loss_scale is not None:
                self.loss_scale.update(values.pop("skipped") == 0.0)
                values["loss_scale"] = float(self.loss_scale.scale)
            stats.add(values)
            self.global_step.assign_add(1)
            self.batch_in_phase.assign_add(1)
            progress.update(stats.means())
            if int(self.global_step) % self.config.checkpoint_every_steps == 0:
                self.manager.save(checkpoint_number=int(self.global_step))
        return stats.means()

    # ----- derivation and summaries --------------------------------------------------------
    def derive(self, name: str = "derived") -> ArchSpec:
        return derive.derive_arch(
            self.space,
            **self.net.arch_numpy(),
            name=name,
            provenance={"epoch": int(self.epoch), "global_step": int(self.global_step)},
        )

    def _epoch_report(self, epoch: int, weight: dict, arch: dict | None) -> dict[str, Any]:
        spec = self.derive(name=f"epoch_{epoch + 1:03d}")
        cost = count_costs(spec)
        predicted = self.table.predicted_ms(spec)
        report = {
            "epoch": epoch + 1,
            "block_string": spec.to_block_string(),
            "predicted_latency_ms": predicted,
            "params": cost.params,
            "mult_adds": cost.mult_adds,
            "weight_pass": weight,
            "arch_pass": arch,
            "expected_latency_ms": float(self.expected_latency.of_supernet(self.net, "all")),
        }
        spec = dataclasses.replace(
            spec,
            provenance={
                **spec.provenance,
                **{k: report[k] for k in ("predicted_latency_ms", "params", "mult_adds")},
            },
        )
        spec.save(self.run_dir / "archs" / f"epoch_{epoch + 1:03d}.json")
        self._summaries(epoch + 1, report, spec)
        return report

    def _summaries(self, step: int, report: dict, spec: ArchSpec) -> None:
        arrays = self.net.arch_numpy()
        head_p = tf.nn.softmax(arrays["alpha_head"]).numpy()
        stack_p = tf.nn.softmax(arrays["alpha_stack"]).numpy()
        path_p = self.net.path_probabilities().numpy()
        with self.writer.as_default(step=step):
            for k, v in report["weight_pass"].items():
                tf.summary.scalar(f"weight/{k}", v)
            for k, v in (report["arch_pass"] or {}).items():
                tf.summary.scalar(f"arch/{k}", v)
            if report["arch_pass"]:
                tf.summary.scalar(
                    "arch/latency_term", report["arch_pass"]["loss"] - report["arch_pass"]["ce"]
                )
            tf.summary.scalar("latency/expected_ms", report["expected_latency_ms"])
            tf.summary.scalar("derived/predicted_latency_ms", report["predicted_latency_ms"])
            tf.summary.scalar("derived/params", report["params"])
            tf.summary.scalar("derived/mult_adds", report["mult_adds"])
            tf.summary.scalar("lr/weight", float(self.weight_optimizer.current_learning_rate()))
            tf.summary.scalar(
                "lr/arch", float(tf.convert_to_tensor(self.arch_optimizer.learning_rate))
            )
            for name, values in arrays.items():
                tf.summary.histogram(f"arch_params/{name}", values)
            tf.summary.scalar("entropy/head_ops", _entropy(head_p))
            tf.summary.scalar("entropy/stacking_ops", _entropy(stack_p))
            block_entropies = []
            for block in self.space.blocks:
                ids = [e.index for e in self.space.out_edges(block.index)]
                block_entropies.append(_entropy(path_p[ids][None]))
            tf.summary.scalar("entropy/paths", float(np.mean(block_entropies)))
            tf.summary.image("alpha/head_ops", _heatmap(head_p))
            if stack_p.size:
                tf.summary.image("alpha/stacking_ops", _heatmap(stack_p))
            tf.summary.image("beta/path_probabilities", _heatmap(_beta_matrix(self.space, path_p)))
            tf.summary.text("derived/architecture", spec.to_block_string())
            picture = supernet_png(self.space, path_p, spec, f"{self.space.name}, epoch {step}")
            tf.summary.image("supernet/paths", tf.io.decode_png(picture, channels=3)[None])
        self.writer.flush()
        write_bytes_atomic(self.run_dir / "pictures" / f"epoch_{step:03d}.png", picture)

    # ----- the loop --------------------------------------------------------------------
    def restore(self) -> bool:
        """Restores the latest checkpoint, if any; True when one was found."""
        latest = self.manager.latest_checkpoint
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            self.log(
                f"resuming from {latest}: epoch {int(self.epoch) + 1}, "
                f"{'arch' if int(self.phase) == 0 else 'weight'} pass, batch {int(self.batch_in_phase)}"
            )
        return bool(latest)

    def run(self) -> dict[str, Any]:
        config = self.config
        start_time = time.time()
        reports = []
        while int(self.epoch) < config.epochs:
            epoch = int(self.epoch)
            arch_stats = None
            if epoch >= config.warmup_epochs and int(self.phase) == 0:
                arch_stats = self._run_pass(0, epoch)
                self.phase.assign(1)
                self.batch_in_phase.assign(0)
            elif int(self.phase) == 0:
                self.phase.assign(1)
                self.batch_in_phase.assign(0)
            weight_stats = self._run_pass(1, epoch)
            reports.append(self._epoch_report(epoch, weight_stats, arch_stats))
            self.epoch.assign_add(1)
            self.phase.assign(0)
            self.batch_in_phase.assign(0)
            self.manager.save(checkpoint_number=int(self.global_step))
            self.log(
                f"epoch {epoch + 1}: {reports[-1]['block_string']} "
                f"(predicted {reports[-1]['predicted_latency_ms']:.3f} ms)"
            )
        final = self.derive(name="searched")
        cost = count_costs(final)
        final = dataclasses.replace(
            final,
            provenance={
                **final.provenance,
                "predicted_latency_ms": self.table.predicted_ms(final),
                "params": cost.params,
                "mult_adds": cost.mult_adds,
                "search_config": config.to_dict(),
            },
        )
        final.save(self.run_dir / "arch.json")
        spread = 0.0
        for variable in self.net.arch_variables:
            values = [np.asarray(v) for v in self.strategy.experimental_local_results(variable)]
            spread = max([spread] + [float(np.abs(v - values[0]).max()) for v in values])
        summary = {
            "replicas": self.strategy.num_replicas_in_sync,
            "arch_replica_max_abs_diff": spread,
            "arch_params": {k: v.tolist() for k, v in self.net.arch_numpy().items()},
            "epochs": config.epochs,
            "global_steps": int(self.global_step),
            "wall_time_s": time.time() - start_time,
            "block_string": final.to_block_string(),
            "predicted_latency_ms": final.provenance["predicted_latency_ms"],
            "params": cost.params,
            "mult_adds": cost.mult_adds,
            "path": final.provenance["path"],
            "epoch_reports": reports,
        }
        write_text_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary


def _heatmap(matrix: np.ndarray, scale: int = 12) -> np.ndarray:
    """A (1, H, W, 3) uint8 image of a probability matrix, one row per layer or block."""
    values = np.clip(matrix, 0.0, 1.0)
    image = np.repeat(np.repeat(values, scale, axis=0), scale, axis=1)
    rgb = np.stack([image, image * 0.6, 1.0 - image], axis=-1)
    return (rgb[None] * 255).astype(np.uint8)


def _beta_matrix(space, path_probs: np.ndarray) -> np.ndarray:
    """Blocks x nodes matrix of path probabilities (zero where there is no edge)."""
    matrix = np.zeros((space.num_blocks, space.final_node + 1))
    for edge in space.edges:
        matrix[edge.src, edge.dst] = path_probs[edge.index]
    return matrix
