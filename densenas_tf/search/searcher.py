"""The search loop (paper 3.3), strategy-agnostic.

Warm-up epochs run weight steps only (one op per layer, drawn uniformly);
after each epoch the supernet is evaluated on the architecture split, and the
architecture stage begins when its accuracy reaches the target or the warm-up
its maximum. Each later epoch runs an architecture pass over the architecture
split, then a weight pass (ops drawn by softmax(alpha)) over the weight split.
The steps live in ``search.steps``, the state and checkpoints in
``search.state``, what is reported in ``search.report``.

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

import numpy as np
import tensorflow as tf

from densenas_tf.core import summaries
from densenas_tf.core.checkpoints import remove_partial_tf_checkpoints
from densenas_tf.core.errors import DenseNASError, tf_os_error
from densenas_tf.core.runtime import Progress
from densenas_tf.data.pipelines import distributed_batches, steps_per_pass
from densenas_tf.latency.expected import ExpectedLatency
from densenas_tf.latency.table import LatencyTable
from densenas_tf.nn.supernet import SuperNet
from densenas_tf.search import report as search_report
from densenas_tf.search.config import SearchConfig
from densenas_tf.search.state import (
    PassStats,
    loop_counters,
    replica_spread,
    restore_newest,
    search_checkpoint,
    warmup_decision,
)
from densenas_tf.search.steps import SearchSteps
from densenas_tf.space import budget, derive
from densenas_tf.space.arch_spec import ArchSpec

# Evaluation draws use seeds [seed, EVAL_SEED_OFFSET + epoch * EVAL_SEED_STRIDE + batch],
# apart from the training steps' [seed, global step].
EVAL_SEED_OFFSET = 1 << 40
EVAL_SEED_STRIDE = 1 << 20


class SearchDivergedError(DenseNASError, RuntimeError):
    """A non-finite loss: the run stops and the last good checkpoint stays."""

    exit_code = 3


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
        self.strategy = strategy or tf.distribute.get_strategy()
        self.weight_data, self.arch_data = weight_data, arch_data
        self.run_dir = Path(run_dir)
        self.log = log
        self.weight_steps_per_epoch, self.arch_steps_per_epoch = steps_per_pass(
            config.batch_size, weight_data, arch_data
        )
        total = self.weight_steps_per_epoch * config.epochs
        self.steps = SearchSteps(config, supernet, self.expected_latency, self.strategy, total)
        counters = loop_counters(config)
        (
            self.epoch,
            self.phase,
            self.batch_in_phase,
            self.global_step,
            self.seed,
            self.arch_start_epoch,
            self.elapsed_s,
            self.open_stats,
        ) = counters.values()
        self.checkpoint = search_checkpoint(supernet, self.steps, counters)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.run_dir / "ckpt", 2)
        remove_partial_tf_checkpoints(self.run_dir / "ckpt")  # an earlier run's, stopped mid-write
        self.writer = tf.summary.create_file_writer(str(self.run_dir / "tensorboard"))
        summaries.write_layout(self.writer, summaries.SEARCH_LAYOUT)
        self._stats: dict[str, PassStats] = {}
        self._mark = time.time()

    def _sample(self, policy: str):
        seed = tf.stack([self.seed, self.global_step])
        return self.net.sample_ops(seed, policy)

    def shuffle_seed(self, epoch: int, phase: int) -> int:
        """The data order of one pass: fixed by the run's seed, the epoch and the phase."""
        return int(self.config.seed * 1_000_003 + epoch * 2 + phase)

    def _batches(self, split, epoch: int | None, phase: int, skip: int):
        """The (distributed) batches of one pass over a split (unshuffled when epoch is None)."""
        seed = None if epoch is None else self.shuffle_seed(epoch, phase)
        return distributed_batches(split, self.strategy, self.config.batch_size, seed, skip)

    def searching(self, epoch: int) -> bool:
        """Whether epoch (0-based) belongs to the architecture stage."""
        start = int(self.arch_start_epoch)
        return 0 <= start <= epoch

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
        ckpt_dir = self.run_dir / "ckpt"
        try:
            self.manager.save(checkpoint_number=int(self.global_step))
        except BaseException as err:
            # A full disk, forbidden storage or Ctrl-C mid-write: the last
            # finished checkpoint stays, the half-written one goes.
            remove_partial_tf_checkpoints(ckpt_dir)
            fault = tf_os_error(err) if isinstance(err, Exception) else None
            if fault is None:
                raise
            raise OSError(
                fault.errno,
                f"{fault.strerror} while writing the checkpoint of global step "
                f"{int(self.global_step)} (the last finished one was kept)",
                str(ckpt_dir),
            ) from err

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
        step = self.steps.arch_step if arch else self.steps.weight_step
        loss_scale = self.steps.loss_scale
        for batch in self._batches(split, epoch, phase, start):
            values = {k: float(v) for k, v in step(batch, self._sample(policy)).items()}
            self._check_finite(values, "architecture loss" if arch else "weight loss")
            if arch and self.steps.objective.controlled and self.steps.objective.steer == "derived":
                values["derived_ms"] = self._steer_by_derived_net()
            if loss_scale is not None:
                loss_scale.update(values.pop("skipped") == 0.0)
                values["loss_scale"] = float(loss_scale.scale)
            stats.add(values)
            self.global_step.assign_add(1)
            self.batch_in_phase.assign_add(1)
            progress.update(stats.means())
            # Architecture steps are few (a fifth of the images): every one is logged;
            # weight steps every summary_every_steps of them.
            # (The weight steps' own count: epochs before this one, then this pass.)
            done = epoch * self.weight_steps_per_epoch + int(self.batch_in_phase)
            if arch or done % self.config.summary_every_steps == 0:
                search_report.write_step_summaries(
                    self.writer,
                    key,
                    int(self.global_step),
                    values,
                    self.steps.learning_rates(arch, done),
                )
            if int(self.global_step) % self.config.checkpoint_every_steps == 0:
                self._save()
        return stats.means()

    def _steer_by_derived_net(self) -> float:
        """The budget controller's ``derived`` update after an architecture
        step: the latency weight plus gain * (d / T - 1), d the predicted
        latency of the net the paper's derivation gives now; returns d."""
        arrays = self.net.arch_numpy()
        path = derive.viterbi_path(
            self.space, derive.path_probabilities(self.space, arrays["beta"])
        )
        choices = derive.argmax_choices(arrays["alpha_head"], arrays["alpha_stack"])
        derived_ms = self.expected_latency.costs.arch_ms(self.space, path, *choices)
        weight = self.steps.latency_weight
        weight.assign(self.steps.objective.next_weight(weight, derived_ms))
        return derived_ms

    def evaluate(self, epoch: int) -> dict[str, float]:
        """The supernet's accuracy and cross-entropy on the architecture split:
        one path per batch drawn as in that epoch's weight step (uniform in
        warm-up, softmax(alpha) after), BN in training mode; weights untouched."""
        policy = "softmax" if self.searching(epoch) else "uniform"
        progress = Progress(
            f"epoch {epoch + 1}/{self.config.epochs} eval", self.arch_steps_per_epoch
        )
        stats, first = PassStats(), EVAL_SEED_OFFSET + epoch * EVAL_SEED_STRIDE
        for b, batch in enumerate(self._batches(self.arch_data, None, 0, 0)):
            sample = self.net.sample_ops(
                tf.constant([self.config.seed, first + b], tf.int64), policy
            )
            stats.add({k: float(v) for k, v in self.steps.eval_step(batch, sample).items()})
            progress.update(stats.means())
        return stats.means()

    def derive(self, name: str = "derived", epoch: int | None = None) -> ArchSpec:
        """The current ArchSpec; its provenance's ``epoch`` is 1-based (default:
        the number of finished epochs)."""
        epoch = int(self.epoch) if epoch is None else epoch
        provenance = {"epoch": epoch, "global_step": int(self.global_step)}
        budget_ms = self.steps.objective.budget_ms
        if budget_ms is not None:  # the most probable net within the budget
            return budget.derive_within_budget(
                self.space, self.expected_latency.costs, **self.net.arch_numpy(),
                budget_ms=budget_ms, name=name, provenance=provenance,
                tie_threshold=self.config.tie_threshold,
                min_fraction=self.steps.objective.min_fraction,
            )  # fmt: skip
        return derive.derive_arch(
            self.space, **self.net.arch_numpy(), name=name, provenance=provenance,
            tie_threshold=self.config.tie_threshold,
        )  # fmt: skip

    def restore(self) -> bool:
        """Restores the newest readable checkpoint, if any (``state.restore_newest``);
        True when one was restored. The run never starts over unasked."""
        manager = restore_newest(self.run_dir / "ckpt", self.checkpoint, self.manager, self.log)
        if manager is None:
            return False
        self.manager = manager
        self._stats = {
            k: PassStats(**v) for k, v in json.loads(self.open_stats.numpy().decode()).items()
        }
        phase = "arch" if int(self.phase) == 0 else "weight"
        self.log(
            f"resuming from {manager.latest_checkpoint}: epoch {int(self.epoch) + 1}, "
            f"{phase} pass, batch {int(self.batch_in_phase)}"
        )
        return True

    def _finish_epoch(self, epoch: int, reports: list[dict[str, Any]]) -> dict[str, Any]:
        config = self.config
        searching = self.searching(epoch)
        evaluation = self.evaluate(epoch)
        self._check_finite(evaluation, "evaluation")
        warmup_end = None if searching else warmup_decision(config, epoch, evaluation["acc"])
        if warmup_end:
            self.arch_start_epoch.assign(epoch + 1)
            self.log(f"architecture stage begins at epoch {epoch + 2}: {warmup_end['reason']}")
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
            steering={
                "budget_ms": self.steps.objective.budget_ms,
                "latency_weight": float(self.steps.latency_weight.numpy()),
            },
        )
        reports.append(report)
        first = config.select_from_epoch or int(self.arch_start_epoch) + 1
        search_report.publish_epoch(
            self.writer, self.run_dir, self.space, self.net.arch_numpy(), int(self.global_step),
            reports, spec, best=(config.keep_best, first) if searching else None,
            tie_threshold=config.tie_threshold, log=self.log,
        )  # fmt: skip
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
        config, start = self.config, int(self.arch_start_epoch)
        final = search_report.with_costs(
            self.derive(name="searched"), self.table, search_config=config.to_dict()
        )
        summary = search_report.finish_run(
            self.run_dir, final, reports, self.net.arch_numpy(), config,
            arch_start_epoch=start,
            replicas=self.strategy.num_replicas_in_sync,
            replica_spread=replica_spread(self.strategy, self.net.arch_variables),
            global_steps=int(self.global_step),
            wall_time_s=float(self.elapsed_s),
        )  # fmt: skip
        return final, summary
