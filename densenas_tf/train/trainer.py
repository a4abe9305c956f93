"""Retraining a derived architecture from scratch (paper 4.1's recipe, scaled).

SGD with momentum 0.9, weight decay 4e-5 and label smoothing 0.1 as in the
paper, a cosine learning rate per step, standard augmentation; any
``tf.distribute`` strategy. One epoch at a time through ``model.fit``, the
whole training state (weights, BN statistics, optimizer with its step) saved
atomically as a ``.keras`` file after each epoch, so re-running the same
command resumes from the last finished epoch. The trained model carries its
own input normalisation: it maps pixel values (0-255) to logits.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from densenas_tf.core import checkpoints, summaries
from densenas_tf.core import run_dir as run_dirs
from densenas_tf.core.errors import DenseNASError
from densenas_tf.core.files import replace_atomic, write_text_atomic
from densenas_tf.core.runtime import Progress
from densenas_tf.data.pipelines import channel_stats, eval_pipeline, train_pipeline
from densenas_tf.nn.models import build_model
from densenas_tf.space import describe
from densenas_tf.space.arch_spec import ArchSpec, count_costs, with_num_classes


class TrainError(DenseNASError, ValueError):
    """A training request that cannot run; the message says what and how to fix it."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    # The paper: 0.5 at batch 1024, cosine to 1e-4; here a batch of 128.
    lr: float = 0.1
    lr_min: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    dropout: float = 0.0
    augment: bool = True
    seed: int = 0

    def __post_init__(self):
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch_size must be positive"),
            (self.lr > 0, "lr must be positive"),
            (0 <= self.lr_min <= self.lr, "lr_min must be in [0, lr]"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be non-negative"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainError(f"{message} (train config {dataclasses.asdict(self)})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_data_matches(spec: ArchSpec, input_shape, num_classes: int) -> None:
    """Refuses an ArchSpec whose input or class count differs from the data's."""
    if tuple(spec.input_shape) != tuple(input_shape):
        raise TrainError(
            f"the ArchSpec {spec.name!r} takes {'x'.join(map(str, spec.input_shape))} images but "
            f"the data's are {'x'.join(map(str, input_shape))}; derive an architecture on a space "
            "with this input_shape, or pass data of the ArchSpec's size (--image_size)"
        )
    if spec.num_classes != num_classes:
        raise TrainError(
            f"the ArchSpec {spec.name!r} has {spec.num_classes} classes but the data has "
            f"{num_classes}; retrain it with a new head of {num_classes} classes: "
            f"tools/train.py --num_classes={num_classes} (library: train(..., "
            f"num_classes={num_classes}) or arch_spec.with_num_classes)"
        )


def build_trainable_model(spec: ArchSpec, mean, std, dropout: float = 0.0):
    """The derived net behind a per-channel normalisation layer: pixels -> logits."""

    body = build_model(spec, dropout_rate=dropout)
    image = keras.Input(shape=tuple(spec.input_shape), name="image")
    normalize = keras.layers.Normalization(
        axis=-1,
        mean=np.asarray(mean, np.float32),
        variance=np.square(np.asarray(std, np.float32)),
        name="normalize",
    )
    return keras.Model(image, body(normalize(image)), name=spec.name or "derived")


def _compile(model, config: TrainConfig, steps_per_epoch: int) -> None:

    schedule = keras.optimizers.schedules.CosineDecay(
        config.lr, steps_per_epoch * config.epochs, alpha=config.lr_min / config.lr
    )
    # Keras applies weight decay decoupled (w -= lr * wd * w); PyTorch's SGD adds
    # it to the gradient, which momentum then amplifies.
    optimizer = keras.optimizers.SGD(
        schedule, momentum=config.momentum, weight_decay=config.weight_decay or None
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=config.label_smoothing
        ),
        metrics=[keras.metrics.CategoricalAccuracy(name="acc")],
    )


def _one_hot(num_classes: int):
    import tensorflow as tf

    return lambda x, y: (x, tf.one_hot(y, num_classes))


def data_sizes(data) -> tuple[int, int]:
    """(training, test) image counts of a data.ImageData or a streamed
    data_sources.StreamingData (known without reading pixels)."""
    if hasattr(data, "num_train"):
        return data.num_train, data.num_test
    return len(data.train_labels), len(data.test_labels)


def evaluate(model, images, labels: np.ndarray | None = None, batch_size: int = 256) -> float:
    """Top-1 accuracy of a pixels -> logits model on uint8 images, or on the test
    split of a streamed data_sources.StreamingData passed as ``images``."""

    if hasattr(images, "eval_dataset"):
        batches, count = images.eval_dataset(batch_size), images.num_test
    else:
        batches, count = eval_pipeline(images, labels, batch_size), len(labels)
    hits = 0
    for x, y in batches:
        predicted = np.argmax(model(x, training=False).numpy(), axis=-1)
        hits += int(np.sum(predicted == y.numpy()))
    return hits / count


def train(
    spec: ArchSpec,
    data,
    run_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    strategy=None,
    data_source: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    overwrite: bool = False,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Trains ``spec`` on ``data`` (a data.ImageData, or a streamed
    data_sources.StreamingData) in run_dir; resumes; returns metrics.

    Writes ``train_config.json``, ``ckpt/epoch_NNN.keras`` with
    ``ckpt/epoch_NNN.json`` after every epoch (the last two kept),
    ``tensorboard/``, and at the end ``model.keras`` and ``metrics.json``,
    holding the run directory's lock (``core.run_dir``) throughout. A run
    directory holding another architecture, config or data is replaced when
    it finished no epoch and wrote no model (or with ``overwrite``), else
    refused; files no training run writes are never deleted (``core.run_dir``).

    ``num_classes`` replaces the ArchSpec's classifier head first
    (``arch_spec.with_num_classes``): a net searched on 100 classes retrains
    on 1,000, and the run's ArchSpec (``train_config.json``, ``metrics.json``)
    records the new count.
    """
    run_dir = Path(run_dir)
    if num_classes is not None:
        spec = with_num_classes(spec, num_classes)
    check_data_matches(spec, data.input_shape, data.num_classes)
    train_count, test_count = data_sizes(data)
    if test_count == 0:
        raise TrainError(
            f"the data ({data.name}) hold no test images, so the trained net could not be "
            "tested; pass a source with a test split, or a --test_fraction or --test_limit "
            "that leaves some test images"
        )
    steps_per_epoch = train_count // config.batch_size
    if steps_per_epoch < 1:
        raise TrainError(
            f"batch_size {config.batch_size} exceeds the {train_count} training "
            "images; lower --batch_size or use more training images"
        )
    record = {
        "arch": spec.to_dict(),
        "train": config.to_dict(),
        "data": dict(data_source or {"name": data.name}),
    }
    with run_dirs.locked_run_dir(run_dir):  # one process per run directory, from here on
        run_dirs.check_kind(run_dir, run_dirs.TRAIN)
        saved = run_dir / run_dirs.CONFIG_FILES[run_dirs.TRAIN]
        if saved.exists():
            if _saved_record(saved) != json.loads(json.dumps(record)):
                _replace_other_run(run_dir, saved, overwrite, log)
            elif (run_dir / "metrics.json").exists():
                run_dirs.claim(run_dir, run_dirs.TRAIN)
                log(f"{run_dir} holds a finished training run; its metrics follow")
                return json.loads((run_dir / "metrics.json").read_text())
        run_dirs.claim(run_dir, run_dirs.TRAIN)
        write_text_atomic(saved, json.dumps(record, indent=2) + "\n")
        return _train_in(run_dir, spec, data, config, strategy, steps_per_epoch, log)


def _saved_record(saved: Path) -> Any:
    """The record in a run's train_config.json (None when it is no JSON)."""
    try:
        return json.loads(saved.read_text())
    except ValueError:
        return None


def _replace_other_run(run_dir: Path, saved: Path, overwrite: bool, log) -> None:
    """Deletes the training run with another architecture, config or data in
    run_dir (its lock held): with overwrite, or when it finished no epoch and
    wrote no model; else refuses. Only files a training run writes are deleted
    (``run_dir.delete_run``); a directory that is no training run is refused."""
    run_dirs.check_replaceable(run_dir, run_dirs.TRAIN)
    finished = any((run_dir / name).exists() for name in run_dirs.TRAIN_FINISHED)
    if overwrite:
        log(f"--overwrite: deleting the training run with another config in {run_dir}")
    elif not finished and not checkpoints.keras_checkpoints(run_dir / run_dirs.CHECKPOINT_DIR):
        log(
            f"{run_dir} holds a training run with another architecture, config or data that "
            "finished no epoch; replacing it"
        )
    else:
        raise TrainError(
            f"{run_dir} holds a training run with another architecture, config or data "
            f"(see {saved}); use another --run_dir, or "
            f"{run_dirs.overwrite_hint(run_dir, run_dirs.TRAIN)}"
        )
    run_dirs.delete_run(run_dir, run_dirs.TRAIN)


# TensorBoard: each batch's loss, accuracy and learning rate every N steps.
SUMMARY_EVERY_STEPS = 10


def _restore(directory: Path, steps_per_epoch: int, log) -> tuple[Any, dict[str, Any]] | None:
    """(model, progress) of the newest readable checkpoint in directory, None
    when it holds none (``core.checkpoints``). Unreadable newer ones (a corrupt
    or half-written file, a model whose optimizer step is not its epoch's) are
    logged and moved to ``unreadable/``; files of which none is readable raise
    RunDirError."""

    def load(checkpoint: checkpoints.Checkpoint) -> tuple[Any, dict[str, Any]]:
        epochs, progress_file = checkpoint.number, checkpoint.files[1]
        progress = json.loads(progress_file.read_text())
        if progress["epochs_done"] != epochs:
            raise ValueError(f"{progress_file.name} says {progress['epochs_done']} epochs done")
        model = keras.models.load_model(checkpoint.path)
        step = int(model.optimizer.iterations)
        if step != epochs * steps_per_epoch:
            raise ValueError(
                f"its optimizer is at step {step}, not at the end of epoch {epochs} "
                f"(step {epochs * steps_per_epoch})"
            )
        return model, progress

    found = checkpoints.keras_checkpoints(directory)
    restored = checkpoints.restore_newest(
        directory, found, load, job="training", log=log, verb="resume from"
    )
    if restored is None:
        return None
    if restored.unreadable:
        log(
            f"resuming from {restored.checkpoint.path}, the newest readable checkpoint; the "
            f"unreadable newer ones were moved to {restored.aside}"
        )
    return restored.value


def _train_in(
    run_dir: Path, spec: ArchSpec, data, config: TrainConfig, strategy, steps_per_epoch: int, log
) -> dict[str, Any]:
    """The training itself, in a prepared run directory whose lock is held."""
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    ckpt = run_dir / run_dirs.CHECKPOINT_DIR
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        restored = _restore(ckpt, steps_per_epoch, log)
        if restored:
            model, progress = restored
            log(f"resuming {run_dir} after epoch {progress['epochs_done']}")
        else:
            streamed = hasattr(data, "channel_stats")
            mean, std = (
                data.channel_stats(log=log) if streamed else channel_stats(data.train_images)
            )
            model = build_trainable_model(spec, mean, std, config.dropout)
            _compile(model, config, steps_per_epoch)
            progress = {"epochs_done": 0, "history": [], "wall_time_s": 0.0}
    writer = tf.summary.create_file_writer(str(run_dir / "tensorboard"))
    if progress["epochs_done"] == 0:
        with writer.as_default():
            summaries.text("train/architecture", describe.architecture_markdown(spec), 0)
            summaries.text("train/config", summaries.config_markdown(config.to_dict()), 0)
    to_one_hot = _one_hot(data.num_classes)
    for epoch in range(progress["epochs_done"], config.epochs):
        start = time.time()
        if hasattr(data, "train_dataset"):  # streamed: each input pipeline reads its share

            def per_pipeline(context, epoch=epoch):
                return data.train_dataset(
                    config.batch_size, config.seed, config.augment, epoch, context
                ).map(to_one_hot)

            dataset = strategy.distribute_datasets_from_function(per_pipeline)
        else:
            dataset = train_pipeline(
                data.train_images,
                data.train_labels,
                config.batch_size,
                seed=config.seed,
                augment=config.augment,
                epoch=epoch,
            ).map(to_one_hot)
            dataset = strategy.experimental_distribute_dataset(dataset)
        history = model.fit(
            dataset,
            epochs=epoch + 1,
            initial_epoch=epoch,
            steps_per_epoch=steps_per_epoch,
            verbose=0,
            shuffle=False,  # the pipeline shuffles, by seed and epoch
            callbacks=[
                ProgressCallback(f"epoch {epoch + 1}/{config.epochs}", steps_per_epoch),
                StepSummaries(writer, epoch * steps_per_epoch, SUMMARY_EVERY_STEPS),
            ],
        ).history
        entry = {
            "epoch": epoch + 1,
            "loss": float(history["loss"][-1]),
            "train_acc": float(history["acc"][-1]),
            "lr": float(model.optimizer.learning_rate),
            "time_s": time.time() - start,
        }
        if not np.isfinite(entry["loss"]):
            raise TrainError(
                f"non-finite training loss at epoch {epoch + 1}; lower --lr. The checkpoint "
                f"of the last good epoch stays in {ckpt}"
            )
        progress["history"].append(entry)
        progress["epochs_done"] = epoch + 1
        progress["wall_time_s"] += entry["time_s"]
        with writer.as_default():
            step = (epoch + 1) * steps_per_epoch
            summaries.scalar("train/epoch_loss", entry["loss"], step)
            summaries.scalar("train/epoch_accuracy", entry["train_acc"], step)
        writer.flush()
        _save_checkpoint(model, progress, ckpt)
        log(
            f"epoch {epoch + 1}/{config.epochs}: loss {entry['loss']:.4f} "
            f"train acc {entry['train_acc']:.4f} ({entry['time_s']:.0f} s)"
        )

    if hasattr(data, "eval_dataset"):
        test_acc = evaluate(model, data)
    else:
        test_acc = evaluate(model, data.test_images, data.test_labels)
    with writer.as_default():
        summaries.scalar("test/accuracy", test_acc, config.epochs * steps_per_epoch)
    writer.flush()
    _save_model(model, run_dir / "model.keras")
    cost = count_costs(spec)
    metrics = {
        "arch": spec.name,
        "block_string": spec.to_block_string(),
        "test_accuracy": test_acc,
        "test_images": data_sizes(data)[1],
        "train_images": data_sizes(data)[0],
        "epochs": config.epochs,
        "params": cost.params,
        "mult_adds": cost.mult_adds,
        "wall_time_s": progress["wall_time_s"],
        "history": progress["history"],
        "model": str(run_dir / "model.keras"),
    }
    write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    log(f"test accuracy {test_acc:.4f} on {data_sizes(data)[1]} images")
    return metrics


class StepSummaries(keras.callbacks.Callback):
    """TensorBoard scalars every ``every`` steps at the global step: each batch's
    own loss and accuracy (recovered from Keras's running means over the epoch,
    exact for equal batches) and the learning rate the step used."""

    def __init__(self, writer, first_step: int, every: int):
        super().__init__()
        self.writer, self.first_step, self.every = writer, first_step, every
        self.means: dict[str, float] = {}

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        values = {}
        for key in ("loss", "acc"):
            if key in logs:
                mean = float(logs[key])
                values[key] = (batch + 1) * mean - batch * self.means.get(key, 0.0)
                self.means[key] = mean
        step = self.first_step + batch + 1
        if step % self.every:
            return
        with self.writer.as_default():
            if "loss" in values:
                summaries.scalar("train/loss", values["loss"], step)
            if "acc" in values:
                summaries.scalar("train/accuracy", values["acc"], step)
            summaries.scalar("train/learning_rate", self.rate, step)

    def on_train_batch_begin(self, batch, logs=None):
        # Before the update: the schedule at this step's iteration, the rate it uses.
        if (self.first_step + batch + 1) % self.every == 0:
            self.rate = float(self.model.optimizer.learning_rate)


class ProgressCallback(keras.callbacks.Callback):
    """The search's one-line progress bar with ETA, per training epoch."""

    def __init__(self, label: str, steps: int):
        super().__init__()

        self.progress = Progress(label, steps)

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self.progress.update({k: float(logs[k]) for k in ("loss", "acc") if k in logs})


def _save_checkpoint(model, progress: dict[str, Any], directory: Path) -> None:
    """The checkpoint after progress["epochs_done"] epochs: the model, then its
    progress (a model without its progress file is not a checkpoint); then all
    but the last two checkpoints are deleted."""
    epochs = progress["epochs_done"]
    model_file, progress_file = checkpoints.epoch_files(directory, epochs)
    _save_model(model, model_file)
    write_text_atomic(progress_file, json.dumps(progress, indent=2) + "\n")
    for old in checkpoints.keras_checkpoints(directory):
        if old.rank == 0 or old.number < epochs - 1:  # the legacy one, or an older epoch's
            for path in old.files:
                path.unlink(missing_ok=True)


def _save_model(model, path: Path) -> None:
    """model.save to a temporary file, then renamed into place."""
    with replace_atomic(path, keep_suffix=True) as temporary:  # Keras wants .keras
        model.save(temporary)
