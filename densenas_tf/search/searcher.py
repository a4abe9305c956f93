"""The search loop (paper 3.3, SPEC sections 2, 4, 5), strategy-agnostic.

The Searcher is handed its data, supernet, expected-latency model, objective
and strategy. Warm-up epochs train weights only (one op per layer, drawn
uniformly); after each epoch the supernet's accuracy on the architecture split
is measured (single paths drawn as in the weight step, batch norm in training
mode), and the architecture stage begins when it reaches the configured
target or after the configured maximum of warm-up epochs. Each later epoch
runs an architecture pass over the architecture split (two ops per layer drawn
by softmax(alpha); cross-entropy plus the latency objective; Adam on alpha and
on beta, each with its own learning rate; eq. 9 rebalancing of alpha), then a
weight pass over the weight split (one op per layer by softmax(alpha); SGD
with momentum and weight decay, cosine per step).

Op draws are made from stateless seeds ``[seed, global step]`` outside
``strategy.run`` and handed to every replica, so all replicas run the same ops
and a resumed run draws what the uninterrupted one drew. Reporting lives in
``search_report``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from densenas_tf.core import summaries
from densenas_tf.core.errors import DenseNASError
from densenas_tf.core.files import write_text_atomic
from densenas_tf.core.run_lock import RunDirError
from densenas_tf.core.runtime import Progress
from densenas_tf.data.pipelines import make_dataset
from densenas_tf.latency.expected import ExpectedLatency
from densenas_tf.latency.table import LatencyTable
from densenas_tf.nn import switched_ops
from densenas_tf.nn.arch_params import rebalance_alpha
from densenas_tf.nn.optimizers import DynamicLossScale, MomentumSGD
from densenas_tf.nn.supernet import SuperNet
from densenas_tf.search import report as search_report
from densenas_tf.search.config import SearchConfig
from densenas_tf.search.objectives import Objective
from densenas_tf.space import derive
from densenas_tf.space.arch_spec import ArchSpec

# The architecture parameters' names in a checkpoint: arch/<name>.
ARCH_NAMES = ("alpha_head", "alpha_stack", "beta")
# Evaluation draws use seeds [seed, EVAL_SEED_OFFSET + epoch * EVAL_SEED_STRIDE + batch],
# apart from the training steps' [seed, global step].
EVAL_SEED_OFFSET = 1 << 40
EVAL_SEED_STRIDE = 1 << 20
# The files of checkpoint N in run_dir/ckpt (N is the global step it was saved at).
CHECKPOINT_FILE = re.compile(r"ckpt-(\d+)\.(?:index|data-\d+-of-\d+)")


def checkpoint_key(name: str) -> str:
    """The key of a checkpointed architecture parameter (for tf.train.load_checkpoint)."""
    return f"arch/{name}/.ATTRIBUTES/VARIABLE_VALUE"


def _split_size(split) -> int:
    """The images of a search split: (images, labels) arrays or a streamed SearchSplit."""
    return split.num_examples if hasattr(split, "num_examples") else len(split[0])


def _int32(sample):
    """A draw in fixed dtypes: one trace whatever produced it."""
    return type(sample)(*(tf.cast(part, tf.int32) for part in sample))


class SearchDivergedError(DenseNASError, RuntimeError):
    """A non-finite loss: the run stops and the last good checkpoint stays."""

    exit_code = 3


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


class Searcher:
    """Owns the loop; data, model, latency, objective and strategy are handed in."""

    def __init__(
        self,
        config: SearchConfig,
        supernet: SuperNet,
        table: LatencyTable,
        weight_data: tuple[np.ndarray, np.ndarray] | Any,
        arch_data: tuple[np.ndarray, np.ndarray] | Any,
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
        weight_count, arch_count = _split_size(weight_data), _split_size(arch_data)
        self.weight_steps_per_epoch = weight_count // bs
        self.arch_steps_per_epoch = arch_count // bs
        if self.weight_steps_per_epoch < 1 or self.arch_steps_per_epoch < 1:
            raise ValueError(
                f"batch_size {bs} is larger than a data split ({weight_count} weight, "
                f"{arch_count} architecture images); lower batch_size or use more data"
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
            # One Adam per variable group: alpha (ops) and beta (paths) learn at
            # their own rates, as in the reference.
            self.alpha_optimizer, self.beta_optimizer = (
                keras.optimizers.Adam(
                    lr,
                    beta_1=config.arch_beta1,
                    beta_2=config.arch_beta2,
                    weight_decay=config.arch_weight_decay,
                )
                for lr in (config.alpha_lr, config.beta_lr)
            )
            self.alpha_optimizer.build(self._alpha_variables)
            self.beta_optimizer.build([supernet.beta])
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
        # The first architecture epoch (0-based); -1 while the warm-up goes on.
        self.arch_start_epoch = tf.Variable(
            0 if config.warmup_epochs == 0 else -1, dtype=tf.int64, trainable=False
        )
        # Wall time of all processes so far, and the open epoch's pass statistics
        # (JSON), so a resumed run reports the whole run.
        self.elapsed_s = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.open_stats = tf.Variable("{}", dtype=tf.string, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            arch={name: getattr(supernet, name).value for name in ARCH_NAMES},
            supernet_weights={
                # The path below the model's own (possibly auto-numbered) name.
                v.path.split("/", 1)[-1].replace("/", "."): v.value
                for v in supernet.variables
                if id(v) not in arch_ids
            },
            weight_optimizer=self.weight_optimizer,
            alpha_optimizer=self.alpha_optimizer,
            beta_optimizer=self.beta_optimizer,
            epoch=self.epoch,
            phase=self.phase,
            batch_in_phase=self.batch_in_phase,
            global_step=self.global_step,
            seed=self.seed,
            arch_start_epoch=self.arch_start_epoch,
            elapsed_s=self.elapsed_s,
            open_stats=self.open_stats,
            **({"loss_scale": self.loss_scale} if self.loss_scale else {}),
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.run_dir / "ckpt", max_to_keep=2
        )
        self.writer = tf.summary.create_file_writer(str(self.run_dir / "tensorboard"))
        summaries.write_layout(self.writer, summaries.SEARCH_LAYOUT)
        # The architecture step differentiates alpha and beta only (no kernel
        # gradients); False restores the plain tape, for benchmarks.
        self.lean_arch_step = True
        # They never change: not worth walking the layer tree for them every step.
        self._weight_variables = supernet.weight_variables
        self._draw_keys = supernet.weight_draw_keys()
        # One traced graph per kind of step (config.graph_steps) on one device.
        # Eager otherwise: mixed precision's skipped steps are Python decisions,
        # and across replicas the synchronised batch norms' all-reduces cannot
        # sit inside the switch that picks the drawn op.
        self.graph_steps = (
            bool(config.graph_steps)
            and self.loss_scale is None
            and self.strategy.num_replicas_in_sync == 1
        )
        self._build_steps()
        self._stats: dict[str, PassStats] = {}
        self._mark = time.time()

    @property
    def _alpha_variables(self) -> list:
        return [self.net.alpha_head, self.net.alpha_stack]

    # ----- steps ---------------------------------------------------------------------
    def _build_steps(self) -> None:
        self.traced_steps: list = []  # the tf.functions of the traced steps: weight, arch, eval
        self._weight_step = self._wrap(self._weight_replica_step)
        self._arch_step = self._wrap(self._arch_replica_step)
        self._eval_step = self._wrap(self._eval_replica_step)

    @property
    def objective(self) -> Objective:
        return self._objective

    @objective.setter
    def objective(self, value: Objective) -> None:
        # A traced step holds the objective it was traced with: trace anew.
        self._objective = value
        if "_weight_step" in self.__dict__:
            self._build_steps()

    def _wrap(self, replica_fn):
        def step(batch, sample):
            per_replica = self.strategy.run(replica_fn, args=(*batch, sample))
            return {
                k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()
            }

        if not self.graph_steps:
            return step
        traced = tf.function(step, autograph=False)
        self.traced_steps.append(traced)

        def graph_step(batch, sample):
            return traced(batch, _int32(sample))

        return graph_step

    def step_graph(self, kind: str, batch, sample) -> tf.Graph:
        """The traced graph of one kind of step ("weight", "arch" or "eval") for
        inputs like ``batch`` and ``sample`` (traced now if it was not yet)."""
        kinds = ("weight", "arch", "eval")
        if kind not in kinds:
            raise ValueError(f"unknown kind of step {kind!r}; kinds are {list(kinds)}")
        if not self.graph_steps:
            raise ValueError("the steps run eagerly (graph_steps is off): there is no graph")
        traced = self.traced_steps[kinds.index(kind)]
        return traced.get_concrete_function(batch, _int32(sample)).graph

    def _applied(self, sample) -> list | None:
        """Per weight variable: None (updated every step) or whether the step's
        draw used it (a boolean tensor). Needed in a traced step, where the
        gradients of the ops a switch did not take are zeros instead of None;
        None when undrawn ops step anyway (``undrawn_ops_step``) or eagerly."""
        if tf.executing_eagerly() or self.config.undrawn_ops_step:
            return None
        by_key: dict = {}  # one flag per op (or shared kernel), not per variable
        for key in set(self._draw_keys) - {None}:
            kind, row, ops_used = key
            drawn = (sample.head if kind == "head" else sample.stack)[row]
            by_key[key] = tf.reduce_any(tf.equal(drawn, list(ops_used)))
        return [None if key is None else by_key[key] for key in self._draw_keys]

    def weight_step(self, batch, sample) -> dict[str, tf.Tensor]:
        """One weight step on a (distributed) batch with drawn ops (one per layer):
        SGD on the drawn ops' weights; alpha and beta untouched."""
        return self._weight_step(batch, sample)

    def arch_step(self, batch, sample) -> dict[str, tf.Tensor]:
        """One architecture step with two drawn ops per layer: Adam on alpha and
        beta, then eq. 9's rebalancing of the drawn alphas; weights untouched."""
        return self.rebalanced(functools.partial(self._arch_step, batch, sample), sample)

    def rebalanced(self, update, sample) -> dict[str, tf.Tensor]:
        """Runs ``update`` (an architecture step's Adam update of alpha and beta
        for the draw ``sample``; returns its figures), then, when its loss was
        finite, eq. 9's rebalancing of the alphas drawn."""
        before = [tf.identity(v) for v in self._alpha_variables]
        values = update()
        finite = all(math.isfinite(float(v)) for k, v in values.items() if k in ("ce", "loss"))
        if finite:
            rebalance_alpha(self.net.alpha_head, before[0], sample.head)
            rebalance_alpha(self.net.alpha_stack, before[1], sample.stack)
        return values

    def _cross_entropy(self, labels, logits):
        num_classes = self.space.num_classes
        targets = tf.one_hot(labels, num_classes)
        smoothing = self.config.label_smoothing
        if smoothing:
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
        # A traced step records the switched layers' drawn weights and
        # differentiates by those (switched_ops.Recording): the candidates that
        # were not drawn get no gradient computed and no update.
        record = not tf.executing_eagerly() and not self.config.undrawn_ops_step
        with tf.GradientTape() as tape:
            with switched_ops.recording(tape) if record else contextlib.nullcontext() as recording:
                logits = self.net(images, mode="one", sample=sample, training=True)
            loss = self._cross_entropy(labels, logits)
            scaled = self._scaled(loss)
        applied = self._applied(sample)
        sources = recording.sources if recording is not None else []
        if sources:
            # The recorded layers' variables are updated through their sources.
            owned = recording.variable_ids()
            keep = [k for k, v in enumerate(variables) if id(v) not in owned]
            variables = [variables[k] for k in keep]
            applied = None if applied is None else [applied[k] for k in keep]
        grads, finite = self._gradients(tape, scaled, [*variables, *sources])
        grads, source_grads = grads[: len(variables)], grads[len(variables) :]
        if finite:
            if self.config.undrawn_ops_step:
                # PyTorch 1.0-1.2 (the reference's): undrawn ops' weights get a zero
                # gradient, so momentum and weight decay still move them.
                grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
            # Otherwise ops that were not drawn get no gradient and no update.
            switched = [
                (position, source_grads[part], per, can_skip)
                for position, part, per, can_skip in (recording.updates if sources else [])
            ]
            pairs = list(zip(grads, variables))
            if applied is None:
                self.weight_optimizer.apply_gradients(
                    [(g, v) for g, v in pairs if g is not None], switched=switched
                )
            else:
                kept = [(p, a) for p, a in zip(pairs, applied) if p[0] is not None]
                self.weight_optimizer.apply_gradients(
                    [p for p, _ in kept], applied=[a for _, a in kept], switched=switched
                )
        return {"ce": loss, "acc": self._accuracy_sum(labels, logits), **self._skipped(finite)}

    def _eval_replica_step(self, images, labels, sample):
        # Batch norm in training mode (batch statistics), as the reference evaluates.
        # No gradients: a traced step copies out the drawn ops' weights only.
        logits = self.net(images, mode="one", sample=sample, training=True, weight_gradients=False)
        return {
            "ce": self._cross_entropy(labels, logits),
            "acc": self._accuracy_sum(labels, logits),
        }

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
            latency = self.expected_latency(*self.net.latency_weights("two", sample))
            # This replica's share of the latency term: the objective's one formula.
            loss = ce + self.objective.latency_term(ce, latency, replicas)
            scaled = self._scaled(loss)
        grads, finite = self._gradients(tape, scaled, variables)
        if finite:
            grads = [tf.convert_to_tensor(g) for g in grads]
            self.alpha_optimizer.apply_gradients(zip(grads[:2], variables[:2]))
            self.beta_optimizer.apply_gradients(zip(grads[2:], variables[2:]))
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

    def _batches(self, split, epoch: int | None, phase: int, skip: int):
        """The (distributed) batches of one pass over a split: arrays through
        ``data.make_dataset``; a streamed ``data_sources.SearchSplit`` read by each
        input pipeline for its own replicas (``distribute_datasets_from_function``)."""

        seed = None if epoch is None else self.shuffle_seed(epoch, phase)
        if hasattr(split, "distribute"):
            return iter(split.distribute(self.strategy, self.config.batch_size, seed, skip))
        dataset = make_dataset(*split, self.config.batch_size, shuffle_seed=seed)
        if skip:
            dataset = dataset.skip(skip)
        return iter(self.strategy.experimental_distribute_dataset(dataset))

    # ----- stages --------------------------------------------------------------------
    def searching(self, epoch: int) -> bool:
        """Whether epoch (0-based) belongs to the architecture stage."""
        start = int(self.arch_start_epoch)
        return 0 <= start <= epoch

    def _end_warmup(self, epoch: int, accuracy: float) -> dict[str, Any] | None:
        """After warm-up epoch ``epoch`` (0-based): starts the architecture stage
        when the accuracy reached the target or the warm-up its maximum; says why."""
        target = self.config.warmup_target_accuracy
        reached = target is not None and accuracy >= target
        if not reached and epoch + 1 < self.config.warmup_epochs:
            return None
        self.arch_start_epoch.assign(epoch + 1)
        if reached:
            reason = f"supernet accuracy {accuracy:.4f} reached the target {target}"
        elif target is not None:
            reason = (
                f"the maximum of {self.config.warmup_epochs} warm-up epochs was reached "
                f"(supernet accuracy {accuracy:.4f}, below the target {target})"
            )
        else:
            reason = f"the {self.config.warmup_epochs} warm-up epochs are done"
        info = {"warmup_epochs": epoch + 1, "supernet_accuracy": accuracy, "reason": reason}
        self.log(f"architecture stage begins at epoch {epoch + 2}: {reason}")
        return info

    # ----- passes --------------------------------------------------------------------
    def _check_finite(self, values: dict[str, float], kind: str) -> None:
        for k, v in values.items():
            if not math.isfinite(v):
                raise SearchDivergedError(
                    f"non-finite {kind} {k} ({v}) at epoch {int(self.epoch)}, global step "
                    f"{int(self.global_step)}; the run stopped and the last good checkpoint "
                    f"in {self.run_dir / 'ckpt'} was kept"
                )

    def _save(self) -> None:
        """Checkpoints the whole state (open pass statistics and wall time included)."""
        now = time.time()
        self.elapsed_s.assign_add(now - self._mark)
        self._mark = now
        self.open_stats.assign(
            json.dumps({k: dataclasses.asdict(v) for k, v in self._stats.items()})
        )
        self.manager.save(checkpoint_number=int(self.global_step))

    def _run_pass(self, phase: int, epoch: int) -> dict[str, float]:
        arch = phase == 0
        split = self.arch_data if arch else self.weight_data
        total = self.arch_steps_per_epoch if arch else self.weight_steps_per_epoch
        start = int(self.batch_in_phase) if int(self.phase) == phase else 0
        self.phase.assign(phase)
        self.batch_in_phase.assign(start)
        policy = "two" if arch else ("softmax" if self.searching(epoch) else "uniform")
        label = f"epoch {epoch + 1}/{self.config.epochs} {'arch' if arch else 'weight'}"
        progress = Progress(label, total, start)
        key = "arch" if arch else "weight"
        stats = self._stats.get(key) if start else None
        stats = self._stats[key] = stats or PassStats()
        for batch in self._batches(split, epoch, phase, start):
            sample = self._sample(policy)
            step = self.arch_step if arch else self.weight_step
            values = {k: float(v) for k, v in step(batch, sample).items()}
            self._check_finite(values, "architecture loss" if arch else "weight loss")
            if self.loss_scale is not None:
                self.loss_scale.update(values.pop("skipped") == 0.0)
                values["loss_scale"] = float(self.loss_scale.scale)
            stats.add(values)
            self.global_step.assign_add(1)
            self.batch_in_phase.assign_add(1)
            progress.update(stats.means())
            # Architecture steps are few (a fifth of the images): every one is logged;
            # weight steps every summary_every_steps of them.
            # (The weight steps' own count: epochs before this one, then this pass.)
            done = epoch * self.weight_steps_per_epoch + int(self.batch_in_phase)
            if arch or done % self.config.summary_every_steps == 0:
                step_number = int(self.global_step)
                search_report.write_step_summaries(
                    self.writer, self, key, step_number, values, weight_steps_done=done
                )
            if int(self.global_step) % self.config.checkpoint_every_steps == 0:
                self._save()
        return stats.means()

    def evaluate(self, epoch: int) -> dict[str, float]:
        """The supernet's accuracy and cross-entropy on the architecture split:
        one path per batch drawn as in that epoch's weight step (uniform in
        warm-up, softmax(alpha) after), BN in training mode; weights untouched."""
        policy = "softmax" if self.searching(epoch) else "uniform"
        progress = Progress(
            f"epoch {epoch + 1}/{self.config.epochs} eval", self.arch_steps_per_epoch
        )
        stats = PassStats()
        for b, batch in enumerate(self._batches(self.arch_data, None, 0, 0)):
            seed = tf.constant(
                [self.config.seed, EVAL_SEED_OFFSET + epoch * EVAL_SEED_STRIDE + b], tf.int64
            )
            sample = self.net.sample_ops(seed, policy)
            stats.add({k: float(v) for k, v in self._eval_step(batch, sample).items()})
            progress.update(stats.means())
        return stats.means()

    # ----- derivation ----------------------------------------------------------------
    def derive(self, name: str = "derived", epoch: int | None = None) -> ArchSpec:
        """The current ArchSpec; its provenance's ``epoch`` is 1-based (default:
        the number of finished epochs)."""
        return derive.derive_arch(
            self.space,
            **self.net.arch_numpy(),
            name=name,
            provenance={
                "epoch": int(self.epoch) if epoch is None else epoch,
                "global_step": int(self.global_step),
            },
            tie_threshold=self.config.tie_threshold,
        )

    # ----- the loop --------------------------------------------------------------------
    def restore(self) -> bool:
        """Restores the newest readable checkpoint, if any; True when one was restored.

        The checkpoints are found by the index file (``ckpt/checkpoint``) and by
        their files, so a lost index still resumes; they are tried newest first,
        and an unreadable one is moved to ``ckpt/unreadable`` (the run says which
        and why) in favour of the one before it. Checkpoint files of which none
        is readable raise RunDirError: the run never starts over unasked."""
        directory = self.run_dir / "ckpt"
        steps = set()
        for path in self.manager.checkpoints:
            match = re.fullmatch(r"ckpt-(\d+)", Path(path).name)
            if match:
                steps.add(int(match.group(1)))
        files = [p for p in directory.glob("ckpt-*") if CHECKPOINT_FILE.fullmatch(p.name)]
        steps.update(int(CHECKPOINT_FILE.fullmatch(p.name).group(1)) for p in files)
        if not steps:
            return False
        if self.manager.latest_checkpoint is None:
            self.log(
                f"{directory} has no index file (checkpoint) but holds checkpoint files: "
                "looking at those"
            )
        failed = []
        for step in sorted(steps, reverse=True):
            path = str(directory / f"ckpt-{step}")
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except Exception as err:  # a corrupt file fails in any of several ways
                reason = " ".join(str(err).split())[:300] or type(err).__name__
                self.log(f"cannot restore {path}: {reason}; trying the checkpoint before it")
                failed.append((step, reason))
                continue
            self._stats = {
                k: PassStats(**v) for k, v in json.loads(self.open_stats.numpy().decode()).items()
            }
            if failed or path != self.manager.latest_checkpoint:
                self._reindex(directory, step, [s for s, _ in failed])
            if failed:
                self.log(
                    f"restored {path}, the newest readable checkpoint (global step {step}); "
                    f"the unreadable newer ones were moved to {directory / 'unreadable'}"
                )
            self.log(
                f"resuming from {path}: epoch {int(self.epoch) + 1}, "
                f"{'arch' if int(self.phase) == 0 else 'weight'} pass, batch {int(self.batch_in_phase)}"
            )
            return True
        reasons = "; ".join(f"ckpt-{s}: {r}" for s, r in failed)
        raise RunDirError(
            f"{directory} holds checkpoint files but none is readable ({reasons}); delete "
            f"{self.run_dir} (or move it away) to start this search over"
        )

    def _reindex(self, directory: Path, restored: int, unreadable: list[int]) -> None:
        """Moves the unreadable checkpoints aside and rewrites the index file, so
        that it names the restored checkpoint as the latest and the manager keeps
        (and in time deletes) the readable older ones."""
        aside = directory / "unreadable"
        for path in directory.glob("ckpt-*"):
            match = CHECKPOINT_FILE.fullmatch(path.name)
            if match and int(match.group(1)) in unreadable:
                aside.mkdir(exist_ok=True)
                shutil.move(path, aside / path.name)
        kept = {}  # step -> the time its files were written
        for path in directory.glob("ckpt-*"):
            match = CHECKPOINT_FILE.fullmatch(path.name)
            if match and int(match.group(1)) <= restored:
                step = int(match.group(1))
                kept[step] = max(kept.get(step, 0.0), path.stat().st_mtime)
        steps = sorted(kept)
        lines = [f'model_checkpoint_path: "ckpt-{restored}"']
        lines += [f'all_model_checkpoint_paths: "ckpt-{step}"' for step in steps]
        # The manager tracks (and in time deletes) checkpoints written after
        # last_preserved_timestamp only.
        lines += [f"all_model_checkpoint_timestamps: {kept[step]!r}" for step in steps]
        lines.append(f"last_preserved_timestamp: {min(kept.values()) - 1.0!r}")
        write_text_atomic(directory / "checkpoint", "\n".join(lines) + "\n")
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=2)

    def _finish_epoch(self, epoch: int, reports: list[dict[str, Any]]) -> dict[str, Any]:
        config = self.config
        searching = self.searching(epoch)
        evaluation = self.evaluate(epoch)
        self._check_finite(evaluation, "evaluation")
        warmup_end = None if searching else self._end_warmup(epoch, evaluation["acc"])
        name = f"epoch_{epoch + 1:03d}"
        spec = search_report.with_costs(self.derive(name=name, epoch=epoch + 1), self.table)
        spec = dataclasses.replace(
            spec, provenance={**spec.provenance, "supernet_accuracy": evaluation["acc"]}
        )
        spec.save(self.run_dir / "archs" / f"{name}.json")
        stats = {k: v.means() for k, v in self._stats.items()}
        report = search_report.epoch_report(
            epoch + 1,
            spec,
            stats.get("weight", {}),
            stats.get("arch") if searching else None,
            evaluation,
            float(self.expected_latency(*self.net.latency_weights("all"))),
            warmup_end,
        )
        search_report.write_report(self.run_dir, report)
        search_report.write_summaries(self.writer, self, int(self.global_step), report, spec)
        reports.append(report)
        if searching:
            first = config.select_from_epoch or int(self.arch_start_epoch) + 1
            search_report.keep_best(self.run_dir, reports, config.keep_best, first)
        self.log(search_report.log_line(report))
        for tie in report["near_ties"]:
            self.log(f"  near-tie (margin below {config.tie_threshold}): {tie}")
        return report

    def run(self) -> tuple[ArchSpec, dict[str, Any]]:
        """Runs the remaining epochs; returns the derived net and the run's summary."""
        config = self.config
        self._mark = time.time()
        reports = search_report.load_reports(self.run_dir, int(self.epoch))
        while int(self.epoch) < config.epochs:
            epoch = int(self.epoch)
            if int(self.phase) == 0:
                if self.searching(epoch):
                    self._run_pass(0, epoch)
                self.phase.assign(1)
                self.batch_in_phase.assign(0)
            self._run_pass(1, epoch)
            self._finish_epoch(epoch, reports)
            self._stats = {}
            self.epoch.assign_add(1)
            self.phase.assign(0)
            self.batch_in_phase.assign(0)
            self._save()
        return self._finish_run(reports)

    def _finish_run(self, reports: list[dict[str, Any]]) -> tuple[ArchSpec, dict[str, Any]]:
        config = self.config
        final = search_report.with_costs(
            self.derive(name="searched"), self.table, search_config=config.to_dict()
        )
        final.save(self.run_dir / "arch.json")
        spread = 0.0
        for variable in self.net.arch_variables:
            # The distributed variable behind the Keras one: given the Keras
            # variable itself, experimental_local_results returns that one object.
            copies = self.strategy.experimental_local_results(variable.value)
            values = [np.asarray(v) for v in copies]
            spread = max([spread] + [float(np.abs(v - values[0]).max()) for v in values])
        start = int(self.arch_start_epoch)
        warmup = next((r["warmup_end"] for r in reports if "warmup_end" in r), None)
        info = final.provenance
        first = config.select_from_epoch or (start + 1 if start >= 0 else config.epochs + 1)
        summary = {
            "replicas": self.strategy.num_replicas_in_sync,
            "arch_replica_max_abs_diff": spread,
            "arch_params": {k: v.tolist() for k, v in self.net.arch_numpy().items()},
            "epochs": config.epochs,
            "arch_stage_start_epoch": start + 1 if start >= 0 else None,
            "warmup_end": warmup,
            "global_steps": int(self.global_step),
            "wall_time_s": float(self.elapsed_s),
            "block_string": final.to_block_string(),
            "predicted_latency_ms": info["predicted_latency_ms"],
            "params": info["params"],
            "mult_adds": info["mult_adds"],
            **{k: info.get(k) for k in search_report.MARGIN_KEYS},
            "op_margins": info.get("op_margins"),
            "best": search_report.keep_best(self.run_dir, reports, config.keep_best, first),
            "epoch_reports": reports,
        }
        write_text_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return final, summary
