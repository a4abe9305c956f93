"""Retrains a derived architecture from scratch and saves it for export.

  densenas-train --arch=runs/search/arch.json --run_dir=runs/train [--epochs=10]
      [--overwrite] [--recipe=imagenet] [--override=train.epochs=3 ...] [--num_classes=N]
      [--strategy=default|mirrored|multi_worker]
      [--dataset=fashion_mnist | --tfds_name=NAME --tfds_data_dir=DIR | --image_folder=DIR
       | --tfrecord_dir=DIR] [--class_list=FILE] [--image_size=224] [--stream=true|false]

(In a checkout: python tools/train.py with the same flags.)

--recipe reads a training recipe (configs/train/NAME.yaml or a file: TrainConfig
values under train:, a data source under data:); --override=SECTION.KEY=VALUE
changes one of its values (train.epochs=3, data.train_limit=640), and flags
given on the command line override the recipe; a flag given with an --override
of the same key is refused. --num_classes replaces the architecture's
classifier head (a net searched on 100 classes retrains on 1,000), recorded in
the trained model's ArchSpec.
Fashion-MNIST is held in memory; TFRecords stream from disk, and so do tfds
datasets and image folders too large for memory (or with --stream=true).

Writes model.keras (pixels 0-255 -> logits, normalisation included) and
metrics.json (test accuracy, history, cost) to the run directory; re-running
the same command resumes after the last finished epoch. One process at a time
uses a run directory; one holding another architecture, config or data is
refused unless --overwrite is given (or it finished no epoch and wrote no
model). --overwrite deletes only the files a training run writes: a run
directory holding anything else, or a search's, is refused and left as it is.
"""

import dataclasses

from absl import app, flags

from densenas_tf import cli
from densenas_tf.core.runtime import make_strategy
from densenas_tf.data.sources import SOURCE_KEYS, DataError
from densenas_tf.search.config import apply_overrides
from densenas_tf.space.arch_spec import load_arch
from densenas_tf.train.recipe import load_train_recipe
from densenas_tf.train.trainer import TrainConfig, train

RECIPE = flags.DEFINE_string(
    "recipe", None, "Training recipe: a preset of configs/train/ or a YAML/JSON file."
)
OVERRIDE = flags.DEFINE_multi_string(
    "override", [], "Recipe overrides, SECTION.KEY=VALUE (e.g. train.epochs=3)."
)
ARCH = flags.DEFINE_string("arch", None, "ArchSpec JSON file or shipped net name.", required=True)
RUN_DIR = flags.DEFINE_string("run_dir", None, "Run directory.", required=True)
NUM_CLASSES = flags.DEFINE_integer(
    "num_classes",
    None,
    "Replace the architecture's classifier head with one of N classes (default: keep it).",
    lower_bound=2,
)
EPOCHS = flags.DEFINE_integer("epochs", 10, "Training epochs.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Global batch size.")
LR = flags.DEFINE_float("lr", 0.1, "Initial learning rate (cosine per step to --lr_min).")
LR_MIN = flags.DEFINE_float("lr_min", 1e-4, "Final learning rate.")
MOMENTUM = flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 4e-5, "Weight decay.")
LABEL_SMOOTHING = flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing.")
DROPOUT = flags.DEFINE_float("dropout", 0.0, "Dropout before the classifier.")
AUGMENT = flags.DEFINE_bool("augment", True, "Pad-and-crop (or resized crop) and flips.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights and the data order.")
OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    False,
    "Delete the training run in --run_dir when it has another architecture, config or data "
    "(one that finished no epoch and wrote no model is replaced without it); only the files "
    "a training run writes are deleted, and a directory holding others is refused.",
)
STRATEGY = flags.DEFINE_enum(
    "strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy."
)
cli.define_data_flags()
cli.deprecated_alias("config", RECIPE)

TRAIN_FLAGS = {
    "epochs": EPOCHS,
    "batch_size": BATCH_SIZE,
    "lr": LR,
    "lr_min": LR_MIN,
    "momentum": MOMENTUM,
    "weight_decay": WEIGHT_DECAY,
    "label_smoothing": LABEL_SMOOTHING,
    "dropout": DROPOUT,
    "augment": AUGMENT,
    "seed": SEED,
}
SOURCES = ("tfds_name", "image_folder", "tfrecord_dir")


def recipe_values() -> tuple[dict, dict]:
    """(train values, data values) of --recipe with --override applied."""
    train_values, data_values = load_train_recipe(RECIPE.value) if RECIPE.value else ({}, {})
    if not OVERRIDE.value:
        return train_values, data_values
    cli.refuse_override_conflicts(
        {**{k: f"train.{k}" for k in TRAIN_FLAGS}, **{k: f"data.{k}" for k in SOURCE_KEYS}},
        OVERRIDE.value,
    )
    merged = apply_overrides({"train": train_values, "data": data_values}, OVERRIDE.value)
    fields = sorted(f.name for f in dataclasses.fields(TrainConfig))
    for key in merged:
        if key not in ("train", "data") or not isinstance(merged[key], dict):
            raise DataError(
                f"--override {key}: the recipe's sections are train and data "
                "(e.g. --override=train.epochs=3)"
            )
    for key in merged["train"]:
        if key not in fields:
            raise DataError(f"--override train.{key}: no such field; the fields are {fields}")
    for key in merged["data"]:
        if key not in SOURCE_KEYS:
            raise DataError(
                f"--override data.{key}: no such field; the fields are {list(SOURCE_KEYS)}"
            )
    return merged["train"], merged["data"]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    spec = load_arch(ARCH.value)
    values = {name: flag.value for name, flag in TRAIN_FLAGS.items()}
    source = cli.data_source_from_flags()
    recipe_train, recipe_data = recipe_values()
    values.update({k: v for k, v in recipe_train.items() if not TRAIN_FLAGS[k].present})
    if any(flags.FLAGS[k].present for k in SOURCES):  # a source flag replaces the recipe's
        recipe_data = {k: v for k, v in recipe_data.items() if k not in SOURCES}
    source.update({k: v for k, v in recipe_data.items() if not flags.FLAGS[k].present})
    config = TrainConfig(**values)
    # Before the data: MultiWorkerMirroredStrategy must exist before other TensorFlow ops.
    strategy = make_strategy(STRATEGY.value)
    data = cli.open_data(source)
    metrics = train(
        spec,
        data,
        RUN_DIR.value,
        config,
        strategy,
        source,
        overwrite=OVERWRITE.value,
        num_classes=NUM_CLASSES.value,
    )
    print(
        f"{metrics['arch']}: test accuracy {metrics['test_accuracy']:.4f} "
        f"({metrics['test_images']} images), {metrics['params']:,} params, "
        f"{metrics['mult_adds'] / 1e6:.1f}M multiply-adds; model {metrics['model']}"
    )
    return 0


def run() -> None:
    cli.run(__name__, main)


if __name__ == "__main__":
    run()
