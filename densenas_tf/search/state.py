"""The search's resumable state: its loop counters and the checkpoint that
holds them with every supernet variable, the architecture parameters and the
optimizers' slots.

A checkpoint in ``run_dir/ckpt`` is ``ckpt-N``, N the global step it was saved
at; the architecture parameters sit under plain names (``arch/<name>``) so
that ``tools/derive.py`` can read them without building a supernet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from densenas_tf.core import checkpoints
from densenas_tf.nn.supernet import SuperNet
from densenas_tf.search.config import SearchConfig
from densenas_tf.search.steps import SearchSteps

# The architecture parameters' names in a checkpoint: arch/<name>.
ARCH_NAMES = ("alpha_head", "alpha_stack", "beta")
# The loop counters, in the order loop_counters returns them.
COUNTERS = (
    "epoch",
    "phase",  # 0: the architecture pass, 1: the weight pass
    "batch_in_phase",
    "global_step",
    "seed",
    "arch_start_epoch",  # the first architecture epoch (0-based); -1 while warming up
    "elapsed_s",  # wall time of every process of the run so far
    "open_stats",  # the open epoch's pass statistics (JSON), so a resumed run reports it all
)


def loop_counters(config: SearchConfig) -> dict[str, tf.Variable]:
    """The loop's counters at the start of a run (host variables, outside any strategy)."""

    def counter(name, value, dtype=tf.int64):
        return tf.Variable(value, dtype=dtype, trainable=False, name=name)

    values = {
        "epoch": counter("epoch", 0),
        "phase": counter("phase", 0),
        "batch_in_phase": counter("batch_in_phase", 0),
        "global_step": counter("global_step", 0),
        "seed": counter("seed", config.seed),
        "arch_start_epoch": counter("arch_start_epoch", 0 if config.warmup_epochs == 0 else -1),
        "elapsed_s": counter("elapsed_s", 0.0, tf.float64),
        "open_stats": counter("open_stats", "{}", tf.string),
    }
    return {name: values[name] for name in COUNTERS}


def search_checkpoint(
    net: SuperNet, steps: SearchSteps, counters: dict[str, tf.Variable]
) -> tf.train.Checkpoint:
    """Every supernet variable (batch-norm statistics included) by its path, the
    architecture parameters by name, the optimizers and the counters."""
    arch_ids = {id(v) for v in net.arch_variables}
    loss_scale = {"loss_scale": steps.loss_scale} if steps.loss_scale else {}
    # Only where it moves: checkpoints written before it existed still restore.
    controller = {"latency_weight": steps.latency_weight} if steps.objective.controlled else {}
    return tf.train.Checkpoint(
        arch={name: getattr(net, name).value for name in ARCH_NAMES},
        supernet_weights={
            # The path below the model's own (possibly auto-numbered) name.
            v.path.split("/", 1)[-1].replace("/", "."): v.value
            for v in net.variables
            if id(v) not in arch_ids
        },
        weight_optimizer=steps.weight_optimizer,
        alpha_optimizer=steps.alpha_optimizer,
        beta_optimizer=steps.beta_optimizer,
        **counters,
        **loss_scale,
        **controller,
    )


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


def warmup_decision(config: SearchConfig, epoch: int, accuracy: float) -> dict[str, Any] | None:
    """After warm-up epoch ``epoch`` (0-based) with the supernet at ``accuracy``:
    None while the warm-up goes on; else why the architecture stage begins
    (the accuracy reached the target, or the warm-up its maximum)."""
    target = config.warmup_target_accuracy
    reached = target is not None and accuracy >= target
    if not reached and epoch + 1 < config.warmup_epochs:
        return None
    if reached:
        reason = f"supernet accuracy {accuracy:.4f} reached the target {target}"
    elif target is not None:
        reason = (
            f"the maximum of {config.warmup_epochs} warm-up epochs was reached "
            f"(supernet accuracy {accuracy:.4f}, below the target {target})"
        )
    else:
        reason = f"the {config.warmup_epochs} warm-up epochs are done"
    return {"warmup_epochs": epoch + 1, "supernet_accuracy": accuracy, "reason": reason}


def restore_newest(
    directory: Path,
    checkpoint: tf.train.Checkpoint,
    manager: tf.train.CheckpointManager,
    log: Callable[[str], None],
) -> tf.train.CheckpointManager | None:
    """Restores the newest readable checkpoint in ``directory`` into
    ``checkpoint``; None when there is none. The checkpoints are found by the
    index file (``checkpoint``) and by their files, so a lost index still
    resumes; they are tried newest first, and an unreadable one is moved to
    ``unreadable/`` (the run says which and why) in favour of the one before
    it. Checkpoint files of which none is readable raise RunDirError. Returns
    the manager to save with from then on (a new one when the index was
    rewritten to name the restored checkpoint as the latest)."""
    found = checkpoints.tf_checkpoints(directory, indexed=manager.checkpoints)
    if not found:
        return None
    if manager.latest_checkpoint is None:
        log(
            f"{directory} has no index file (checkpoint) but holds checkpoint files: looking at those"
        )
    restored = checkpoints.restore_newest(
        directory,
        found,
        lambda c: checkpoint.restore(str(c.path)).assert_existing_objects_matched(),
        job="search",
        log=log,
    )
    path = str(restored.checkpoint.path)
    if restored.unreadable or path != manager.latest_checkpoint:
        # The index names the restored checkpoint as the latest; the new manager
        # keeps (and in time deletes) the readable older ones.
        checkpoints.write_tf_index(directory, restored.checkpoint.number)
        manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=2)
    if restored.unreadable:
        log(
            f"restored {path}, the newest readable checkpoint (global step "
            f"{restored.checkpoint.number}); the unreadable newer ones were moved to "
            f"{restored.aside}"
        )
    return manager


def replica_spread(strategy: tf.distribute.Strategy, variables) -> float:
    """The largest difference between any replica's copy of ``variables`` and
    the first replica's (0 on one device)."""
    spread = 0.0
    for variable in variables:
        # The distributed variable behind the Keras one: given the Keras
        # variable itself, experimental_local_results returns that one object.
        copies = [np.asarray(v) for v in strategy.experimental_local_results(variable.value)]
        spread = max([spread] + [float(np.abs(v - copies[0]).max()) for v in copies])
    return spread
